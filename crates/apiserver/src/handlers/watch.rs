//! Watch requests: a chunked stream of `{"type": …, "object": …}` lines fed by the watch
//! cache, filtered per request (kind, namespace, name, selectors), with initial events
//! (legacy, and streaming lists: `sendInitialEvents=true` ending with the
//! `k8s.io/initial-events-end` bookmark), bookmarks (every minute and just before the
//! timeout, only when the watcher is caught up), resume from a resourceVersion and
//! timeoutSeconds. Options are validated as kube-apiserver does (422 ListOptions).
//!
//! A watch never skips: when its position is too old, or the cache lost events it owed,
//! or it fell too far behind, it gets one ERROR event with a 410 Gone Status and ends, so
//! the client relists. The HTTP answer itself is 200 then, as kube-apiserver's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::kinds::Kind;
use skiff_store::Revision;
use tokio::sync::mpsc;

use super::list::{self, Item};
use super::{list_items, partial, render_kind, Filter, Render, Target};
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::{CacheEvent, EventType, Subscription, WatchCache};
use crate::AppState;

const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
const BOOKMARK_BEFORE_TIMEOUT: Duration = Duration::from_secs(2);

struct Watch {
    kind: &'static Kind,
    /// `kind.api_version()`, computed once rather than per event.
    api_version: String,
    prefix: String,
    name: Option<String>,
    filter: Filter,
    render: Render,
    bookmarks: bool,
    /// The custom kind's printer columns (Table watches).
    crds: std::sync::Arc<crate::crds::Crds>,
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
        skiff_api::convert::to_version(&mut obj, &self.api_version);
        let object = match self.render {
            Render::Object => obj,
            Render::Metadata => partial(&obj),
            Render::Table => {
                let rv = obj.pointer("/metadata/resourceVersion").cloned();
                let mut tbl = crate::crds::table(
                    &self.crds,
                    self.kind,
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
        // An object of the kind served, carrying only its resourceVersion (and the marker).
        let obj = match self.render {
            Render::Metadata => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": md})
            }
            Render::Object | Render::Table => {
                json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version(), "metadata": md})
            }
        };
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

/// Where a watch starts, from its (validated) list options, as kube-apiserver reads them:
/// `sendInitialEvents=true` (a streaming list) and the legacy watch without a
/// resourceVersion (or with "0") begin with the current objects as ADDED events; otherwise
/// the watch starts after `resourceVersion`, or now.
enum Start {
    /// List now, send the objects, then follow from the list's revision.
    Initial,
    After(Revision),
    Now,
}

fn start_of(q: &Query, send_initial: Option<bool>) -> ApiResult<Start> {
    let rv = match q.value("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<Revision>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a number"))
        })?),
    };
    Ok(match (send_initial, rv) {
        (Some(true), _) | (None, None) => Start::Initial,
        (_, Some(rv)) => Start::After(rv),
        (Some(false), None) => Start::Now,
    })
}

pub async fn serve(st: &Arc<AppState>, t: &Target, q: &Query, accept: &str) -> ApiResult<Response> {
    let opts = list::VersionOptions::parse(q, true)?;
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
        bookmarks: opts.allow_watch_bookmarks,
        crds: st.objects.crds.clone(),
    };
    let timeout = q
        .int("timeoutSeconds")
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(Duration::from_secs(1800));

    let mut initial = Vec::new();
    let start: Revision = match start_of(q, opts.send_initial_events)? {
        Start::Initial => {
            let lq = selectors_only(q);
            let listed = list_items(st, t.kind, t.namespace.as_deref(), &lq).await?;
            // NotOlderThan: the list must be at least as new as the resourceVersion asked.
            if let Some(rv) = q.value("resourceVersion").and_then(|v| v.parse().ok()) {
                if rv > listed.revision {
                    return Err(too_large(rv, listed.revision));
                }
            }
            initial = listed.items;
            listed.revision
        }
        Start::After(rv) => rv,
        Start::Now => st.objects.store.current_revision().await?,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    match st.cache.subscribe(start) {
        Ok(sub) => {
            let stream = Stream {
                w,
                tx,
                deadline: tokio::time::Instant::now() + timeout,
                start,
                initial_end_bookmark: opts.send_initial_events == Some(true),
            };
            tokio::spawn(stream.run(st.cache.clone(), initial, sub));
        }
        // As kube-apiserver: the watch is answered, with one ERROR event (410 Gone), so
        // clients relist (an HTTP error here would make kube-rs retry the same position).
        Err(e) => {
            let msg = format!("too old resource version: {start} ({})", e.oldest);
            let _ = tx.try_send(Ok(expired_line(&msg)));
        }
    }
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

/// kube-apiserver's answer to a resourceVersion newer than the store's.
fn too_large(rv: Revision, current: Revision) -> ApiError {
    ApiError {
        details: Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        })),
        ..ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {rv}, current: {current}"),
        )
    }
}

/// One watch's task: initial events, the cache's backlog, then live events until the
/// timeout, the client leaving, or the subscription ending (410 unless the server stops).
struct Stream {
    w: Watch,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    deadline: tokio::time::Instant,
    /// Events up to this revision are in the initial list or before the watch.
    start: Revision,
    initial_end_bookmark: bool,
}

impl Stream {
    /// Sends a line; false when the client is gone or the deadline passed while a slow
    /// client was not reading.
    async fn send(&self, line: Bytes) -> bool {
        matches!(
            tokio::time::timeout_at(self.deadline, self.tx.send(Ok(line))).await,
            Ok(Ok(()))
        )
    }

    /// When to send the next bookmark, after the one due at `last` (None: none yet). As
    /// kube-apiserver: every [`BOOKMARK_EVERY`], and once [`BOOKMARK_BEFORE_TIMEOUT`]
    /// before the watch times out, so a client resumes from a fresh revision.
    fn next_bookmark(&self, last: Option<tokio::time::Instant>) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let periodic = now + BOOKMARK_EVERY;
        let pre_timeout = self
            .deadline
            .checked_sub(BOOKMARK_BEFORE_TIMEOUT)
            .unwrap_or(now);
        if last.is_none_or(|l| l < pre_timeout) {
            periodic.min(pre_timeout)
        } else {
            periodic
        }
    }

    /// The line for a cache event, if this watcher sees it.
    fn line(&self, ev: &CacheEvent) -> Option<Bytes> {
        if ev.revision <= self.start {
            return None;
        }
        self.w.classify(ev).and_then(|ty| self.w.event_line(ty, ev))
    }

    async fn run(self, cache: Arc<WatchCache>, initial: Vec<Item>, mut sub: Subscription) {
        let w = &self.w;
        for item in initial {
            if w.name.as_deref().is_some_and(|n| n != item.name()) {
                continue;
            }
            let Some(line) = w.item_line(item) else {
                continue;
            };
            if !self.send(line).await {
                return;
            }
        }
        if self.initial_end_bookmark && !self.send(w.bookmark(self.start, true)).await {
            return;
        }
        // Every event of a revision is delivered: several keys can change in one
        // transaction, so events are never skipped by comparing with the last one sent.
        let mut seen = self.start;
        for ev in std::mem::take(&mut sub.backlog) {
            seen = seen.max(ev.revision);
            if let Some(line) = self.line(&ev) {
                if !self.send(line).await {
                    return;
                }
            }
        }
        let mut next_bookmark = self.next_bookmark(None);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep_until(next_bookmark), if w.bookmarks => {
                    next_bookmark = self.next_bookmark(Some(next_bookmark));
                    // Only when caught up: a bookmark ahead of an undelivered event would
                    // let the client resume past it.
                    if let Some(rev) = cache.progress(&sub) {
                        if !self.send(w.bookmark(rev.max(seen), false)).await {
                            return;
                        }
                    }
                }
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        seen = seen.max(ev.revision);
                        if let Some(line) = self.line(&ev) {
                            if !self.send(line).await {
                                return;
                            }
                        }
                    }
                    Err(end) => {
                        if let Some(msg) = end.gone_message() {
                            self.send(expired_line(&msg)).await;
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// The watch's selectors, for the initial list.
fn selectors_only(q: &Query) -> Query {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for k in ["labelSelector", "fieldSelector"] {
        if let Some(v) = q.value(k) {
            s.append_pair(k, v);
        }
    }
    Query::parse(Some(&s.finish()))
}
