//! The watch cache: one store watch on `/registry/` feeds every API watcher, so a thousand
//! `kubectl get -w` cost one store stream. It keeps the last [`HISTORY`] events so watchers
//! can resume from a resourceVersion; older positions get 410 Gone, as kube-apiserver.
//!
//! Lifecycle: [`WatchCache::start`] spawns the feeder task; it runs until the cache is
//! dropped. If the store watch fails it resumes from the last revision it saw; if that was
//! compacted away, history restarts at the store's current revision (resumes from before
//! then get 410).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use serde_json::Value;
use skiff_api::kinds;
use skiff_store::{EventKind, KeyRange, Revision, Store, StoreError, WatchOptions};
use tokio::sync::broadcast;

use crate::meta;
use crate::raw;

/// Events kept for resuming watchers.
pub const HISTORY: usize = 16_384;
/// Events a slow watcher may fall behind before it is ended with 410.
const CHANNEL: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, shared by every watcher. It holds the object as bytes plus the few fields
/// selectors look at, never a decoded object: 16k buffered events of decoded pods cost
/// hundreds of megabytes, their JSON a tenth of that.
#[derive(Debug)]
pub struct CacheEvent {
    pub revision: Revision,
    pub key: String,
    pub kind: EventType,
    /// What selectors see of the object (for a delete, of its last state).
    pub object: ObjectView,
    /// The same of the object before the change (modifications), for selector transitions.
    pub prev: Option<ObjectView>,
    /// `{"type":"<kind>","object":<object>}` and a newline: what most watchers send as is.
    line: Bytes,
}

impl CacheEvent {
    fn new(
        revision: Revision,
        key: String,
        kind: EventType,
        json: &[u8],
        object: ObjectView,
        prev: Option<ObjectView>,
    ) -> CacheEvent {
        CacheEvent {
            revision,
            key,
            kind,
            object,
            prev,
            line: event_line(kind.as_str(), json),
        }
    }

    /// The object's JSON, with `metadata.resourceVersion`.
    pub fn json(&self) -> &[u8] {
        let start = LINE_HEAD.len() + self.kind.as_str().len() + LINE_MID.len();
        self.line
            .get(start..self.line.len().saturating_sub(LINE_TAIL.len()))
            .unwrap_or_default()
    }

    /// The watch line for this event reported as `t` (selector transitions change it);
    /// shared, not copied, when `t` is the event's own type.
    pub fn line(&self, t: EventType) -> Bytes {
        if t == self.kind {
            self.line.clone()
        } else {
            event_line(t.as_str(), self.json())
        }
    }

    /// The object decoded, for watchers that convert or render it.
    pub fn decode(&self) -> Option<Value> {
        serde_json::from_slice(self.json()).ok()
    }
}

const LINE_HEAD: &str = "{\"type\":\"";
const LINE_MID: &str = "\",\"object\":";
const LINE_TAIL: &str = "}\n";

fn event_line(t: &str, json: &[u8]) -> Bytes {
    let mut s = Vec::with_capacity(json.len() + 32);
    s.extend_from_slice(LINE_HEAD.as_bytes());
    s.extend_from_slice(t.as_bytes());
    s.extend_from_slice(LINE_MID.as_bytes());
    s.extend_from_slice(json);
    s.extend_from_slice(LINE_TAIL.as_bytes());
    Bytes::from(s)
}

/// The parts of an object that label and field selectors and name filters read.
#[derive(Debug, Clone, Default)]
pub struct ObjectView {
    pub name: String,
    pub api_version: String,
    pub labels: BTreeMap<String, String>,
    /// Values of the field labels the object's kind can be selected by.
    pub fields: Vec<(&'static str, String)>,
}

impl ObjectView {
    pub fn of(obj: &Value) -> ObjectView {
        let api_version = meta::str_at(obj, "/apiVersion").unwrap_or_default();
        let kind = meta::str_at(obj, "/kind").unwrap_or_default();
        let fields = match kinds::by_kind(api_version, kind) {
            Some(k) => skiff_api::fields::selectable_fields(k)
                .into_iter()
                .filter_map(|f| Some((f, skiff_api::fields::field_value(k, obj, f)?)))
                .collect(),
            None => Vec::new(),
        };
        ObjectView {
            name: meta::name(obj).to_string(),
            api_version: api_version.to_string(),
            labels: meta::labels(obj),
            fields,
        }
    }

    pub fn field(&self, f: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| *k == f)
            .map(|(_, v)| v.clone())
    }
}

struct Inner {
    events: VecDeque<Arc<CacheEvent>>,
    /// Events after this revision are all in `events` or still to come.
    covered_after: Revision,
    /// Revision of the newest event seen.
    latest: Revision,
}

pub struct WatchCache {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<CacheEvent>>,
}

/// A subscription: the buffered events after the requested revision, then live ones.
pub struct Subscription {
    pub backlog: Vec<Arc<CacheEvent>>,
    pub rx: broadcast::Receiver<Arc<CacheEvent>>,
}

/// The requested revision is older than the cache's history.
#[derive(Debug)]
pub struct TooOld {
    pub oldest: Revision,
}

impl WatchCache {
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<WatchCache>, StoreError> {
        let rev = store.current_revision().await?;
        let (tx, _) = broadcast::channel(CHANNEL);
        let cache = Arc::new(WatchCache {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                covered_after: rev,
                latest: rev,
            }),
            tx,
        });
        tokio::spawn(feed(Arc::downgrade(&cache), store, rev));
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (pushes are atomic).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribe to events after `after`.
    pub fn subscribe(&self, after: Revision) -> Result<Subscription, TooOld> {
        let inner = self.lock();
        if after < inner.covered_after {
            return Err(TooOld {
                oldest: inner.covered_after,
            });
        }
        let start = inner.events.partition_point(|e| e.revision <= after);
        let backlog = inner.events.range(start..).cloned().collect();
        // Subscribing under the lock: the feeder sends under it too, so nothing falls
        // between the backlog and the live stream.
        let rx = self.tx.subscribe();
        Ok(Subscription { backlog, rx })
    }

    /// The newest revision the cache has seen (for bookmarks).
    pub fn latest(&self) -> Revision {
        self.lock().latest
    }

    fn push(&self, ev: CacheEvent) {
        let mut inner = self.lock();
        inner.latest = inner.latest.max(ev.revision);
        let ev = Arc::new(ev);
        if inner.events.len() >= HISTORY {
            if let Some(old) = inner.events.pop_front() {
                inner.covered_after = old.revision;
            }
        }
        inner.events.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    fn reset(&self, rev: Revision) {
        let mut inner = self.lock();
        inner.events.clear();
        inner.covered_after = rev;
        inner.latest = inner.latest.max(rev);
    }
}

async fn feed(cache: Weak<WatchCache>, store: Arc<dyn Store>, mut last: Revision) {
    loop {
        let w = store
            .watch(
                KeyRange::Prefix("/registry/".into()),
                WatchOptions {
                    start_revision: Some(last + 1),
                    prev_kv: true,
                },
            )
            .await;
        let mut w = match w {
            Ok(w) => w,
            Err(e) => {
                if !recover(&cache, &store, &e, &mut last).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let ev = match w.next().await {
                None => return,
                Some(Err(e)) => {
                    if !recover(&cache, &store, &e, &mut last).await {
                        return;
                    }
                    break;
                }
                Some(Ok(ev)) => ev,
            };
            let Some(cache) = cache.upgrade() else { return };
            let rev = ev.kv.mod_revision;
            last = rev;
            let prev_view = match (ev.kind, &ev.prev_kv) {
                (EventKind::Put, Some(p)) if ev.kv.version > 1 => serde_json::from_slice(&p.value)
                    .ok()
                    .map(|v: Value| ObjectView::of(&v)),
                _ => None,
            };
            let (kind, stored) = match ev.kind {
                EventKind::Put => {
                    let t = if ev.kv.version == 1 {
                        EventType::Added
                    } else {
                        EventType::Modified
                    };
                    (t, Some(&ev.kv.value))
                }
                EventKind::Delete => (EventType::Deleted, ev.prev_kv.as_ref().map(|p| &p.value)),
            };
            // One decode for the selector view; the bytes sent are the stored ones with the
            // revision spliced in.
            let decoded = stored.and_then(|b| Some((raw::with_rv(b, rev)?, raw::decode(b, rev)?)));
            let Some((json, object)) = decoded else {
                tracing::warn!(key = %ev.kv.key, revision = rev, "undecodable object in the store; not delivered to watchers");
                continue;
            };
            cache.push(CacheEvent::new(
                rev,
                ev.kv.key,
                kind,
                &json,
                ObjectView::of(&object),
                if kind == EventType::Modified {
                    prev_view
                } else {
                    None
                },
            ));
        }
    }
}

/// Decides how to go on after a store watch error; false ends the feeder.
async fn recover(
    cache: &Weak<WatchCache>,
    store: &Arc<dyn Store>,
    e: &StoreError,
    last: &mut Revision,
) -> bool {
    let Some(c) = cache.upgrade() else {
        return false;
    };
    tracing::warn!(error = %e, "watch cache: store watch failed; resuming");
    if let StoreError::Compacted { .. } = e {
        if let Ok(rev) = store.current_revision().await {
            c.reset(rev);
            *last = rev;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    true
}
