//! The watch cache: one store watch on `/registry/` feeds every API watcher, so a thousand
//! `kubectl get -w` cost one store stream. It keeps the last [`HISTORY`] events so watchers
//! can resume from a resourceVersion; older positions get 410 Gone, as kube-apiserver.
//!
//! Lifecycle: [`WatchCache::start`] spawns the feeder task; it runs until the cache is
//! dropped. If the store watch fails it resumes from the last revision it saw; if that was
//! compacted away, history restarts at the store's current revision (resumes from before
//! then get 410).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;
use skiff_store::{EventKind, KeyRange, Revision, Store, StoreError, WatchOptions};
use tokio::sync::broadcast;

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

/// One change, decoded once and shared by every watcher.
#[derive(Debug)]
pub struct CacheEvent {
    pub revision: Revision,
    pub key: String,
    pub kind: EventType,
    /// The object with `metadata.resourceVersion` set; for a delete, the last state.
    pub object: Value,
    /// The object before the change (modifications), for selector transitions.
    pub prev: Option<Value>,
    /// `object` encoded once, shared by every watcher that sends it as is.
    pub encoded: String,
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

pub fn decode(value: &[u8], rv: Revision) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(value).ok()?;
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    Some(v)
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
            let prev = ev
                .prev_kv
                .as_ref()
                .and_then(|p| decode(&p.value, p.mod_revision));
            let (kind, object) = match ev.kind {
                EventKind::Put => {
                    let t = if ev.kv.version == 1 {
                        EventType::Added
                    } else {
                        EventType::Modified
                    };
                    (t, decode(&ev.kv.value, rev))
                }
                EventKind::Delete => {
                    let obj = ev.prev_kv.as_ref().and_then(|p| decode(&p.value, rev));
                    (EventType::Deleted, obj)
                }
            };
            let Some(object) = object else {
                tracing::warn!(key = %ev.kv.key, revision = rev, "undecodable object in the store; not delivered to watchers");
                continue;
            };
            let encoded = object.to_string();
            cache.push(CacheEvent {
                encoded,
                revision: rev,
                key: ev.kv.key,
                kind,
                object,
                prev: if kind == EventType::Modified {
                    prev
                } else {
                    None
                },
            });
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
