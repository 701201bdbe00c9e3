//! Watch requests: a chunked stream of `{"type": …, "object": …}` lines fed by the watch
//! cache, filtered per request (kind, namespace, name, selectors), with initial events,
//! bookmarks, resume from a resourceVersion (410 when too old) and timeoutSeconds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::kinds::Kind;
use skiff_store::Revision;
use tokio::sync::{broadcast, mpsc};

use super::{list_items, partial, render_kind, Filter, Item, Render, Target};
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::{CacheEvent, EventType};
use crate::AppState;

const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

struct Watch {
    kind: &'static Kind,
    /// `kind.api_version()`, computed once rather than per event.
    api_version: String,
    prefix: String,
    name: Option<String>,
    filter: Filter,
    render: Render,
    bookmarks: bool,
}

impl Watch {
    /// The event type this watcher sees for a cache event, if any: selector transitions
    /// turn modifications into ADDED/DELETED, as kube-apiserver does.
    fn classify(&self, ev: &CacheEvent) -> Option<EventType> {
        if !ev.key.starts_with(&self.prefix) {
            return None;
        }
        if let Some(n) = &self.name {
            if ev.object.name != *n {
                return None;
            }
        }
        let now = self.filter.matches_view(&ev.object);
        match ev.kind {
            EventType::Modified => {
                let before = ev
                    .prev
                    .as_ref()
                    .is_some_and(|p| self.filter.matches_view(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
            t => now.then_some(t),
        }
    }

    /// A cache event's line: the cache's own when no conversion is needed, so a thousand
    /// watchers share one buffer.
    fn event_line(&self, t: EventType, ev: &CacheEvent) -> Option<Bytes> {
        if self.render == Render::Object && ev.object.api_version == self.api_version {
            return Some(ev.line(t));
        }
        ev.decode().map(|obj| self.line(t.as_str(), &obj))
    }

    /// An ADDED line for an object of the initial list.
    fn item_line(&self, item: Item) -> Option<Bytes> {
        if self.render == Render::Object {
            let mut s = b"{\"type\":\"ADDED\",\"object\":".to_vec();
            item.write_json(&mut s);
            s.extend_from_slice(b"}\n");
            return Some(Bytes::from(s));
        }
        item.into_value().map(|obj| self.line("ADDED", &obj))
    }

    fn line(&self, t: &str, obj: &Value) -> Bytes {
        let mut obj = obj.clone();
        obj["apiVersion"] = json!(self.kind.api_version());
        let object = match self.render {
            Render::Object => obj,
            Render::Metadata => partial(&obj),
            Render::Table => {
                let rv = obj.pointer("/metadata/resourceVersion").cloned();
                let mut tbl = skiff_api::table::to_table(
                    self.kind.kind,
                    std::slice::from_ref(&obj),
                    skiff_api::table::IncludeObject::Metadata,
                    SystemTime::now(),
                );
                if let Some(rv) = rv {
                    tbl["metadata"]["resourceVersion"] = rv;
                }
                tbl
            }
        };
        let mut s = json!({"type": t, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rev: Revision, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version(), "metadata": md});
        let mut s = json!({"type": "BOOKMARK", "object": obj}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

fn expired_line(msg: &str) -> Bytes {
    let st = ApiError::gone(msg.to_string()).status_json();
    let mut s = json!({"type": "ERROR", "object": st}).to_string();
    s.push('\n');
    Bytes::from(s)
}

pub async fn serve(st: &Arc<AppState>, t: &Target, q: &Query, accept: &str) -> ApiResult<Response> {
    let filter = Filter::parse(t.kind, q)?;
    let mut name = t.name.clone();
    // `fieldSelector=metadata.name=x` is how clients watch one object.
    if name.is_none() {
        if let Some(fs) = q.get("fieldSelector") {
            if let Some(n) = fs
                .strip_prefix("metadata.name=")
                .filter(|n| !n.contains(','))
            {
                name = Some(n.to_string());
            }
        }
    }
    let w = Watch {
        kind: t.kind,
        api_version: t.kind.api_version(),
        prefix: meta::list_prefix(t.kind, t.namespace.as_deref()),
        name,
        filter,
        render: render_kind(accept),
        bookmarks: q.flag("allowWatchBookmarks") && q.get("allowWatchBookmarks").is_some(),
    };
    let rv = q.value("resourceVersion");
    let send_initial = match q.get("sendInitialEvents") {
        Some("true") => true,
        Some(_) => false,
        None => matches!(rv, None | Some("0")),
    };
    let timeout = q
        .int("timeoutSeconds")
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(Duration::from_secs(1800));

    let mut initial = Vec::new();
    let start: Revision = if send_initial || rv.is_none() || rv == Some("0") {
        let mut lq = Query::parse(None);
        lq = merge_query(lq, q);
        let listed = list_items(st, t.kind, t.namespace.as_deref(), &lq).await?;
        if send_initial {
            initial = listed.items;
        }
        listed.revision
    } else {
        let rv = rv.unwrap_or_default();
        rv.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a number"))
        })?
    };
    let sub = st
        .cache
        .subscribe(start)
        .map_err(|e| ApiError::gone(format!("too old resource version: {start} ({})", e.oldest)))?;
    let bookmark_initial_end =
        send_initial && q.get("sendInitialEvents") == Some("true") && w.bookmarks;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let cache = st.cache.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = start;
        for item in initial {
            if w.name.as_deref().is_some_and(|n| n != item.name()) {
                continue;
            }
            let Some(line) = w.item_line(item) else {
                continue;
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if bookmark_initial_end && tx.send(Ok(w.bookmark(start, true))).await.is_err() {
            return;
        }
        let mut rx_live = sub.rx;
        for ev in sub.backlog {
            if ev.revision <= last {
                continue;
            }
            last = ev.revision;
            if let Some(line) = w.classify(&ev).and_then(|ty| w.event_line(ty, &ev)) {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tick.tick() => {
                    if w.bookmarks {
                        let rev = cache.latest().max(last);
                        if tx.send(Ok(w.bookmark(rev, false))).await.is_err() {
                            return;
                        }
                    }
                }
                ev = rx_live.recv() => match ev {
                    Ok(ev) => {
                        if ev.revision <= last {
                            continue;
                        }
                        last = ev.revision;
                        if let Some(line) = w.classify(&ev).and_then(|ty| w.event_line(ty, &ev)) {
                            if tx.send(Ok(line)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(expired_line("the watch fell too far behind; list and watch again"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    resp.extensions_mut().insert(super::Streaming);
    Ok(resp)
}

/// The watch's selectors, for the initial list.
fn merge_query(_base: Query, q: &Query) -> Query {
    let mut s = Vec::new();
    for k in ["labelSelector", "fieldSelector"] {
        if let Some(v) = q.value(k) {
            s.push(format!("{k}={}", urlencode(v)));
        }
    }
    Query::parse(Some(&s.join("&")))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
