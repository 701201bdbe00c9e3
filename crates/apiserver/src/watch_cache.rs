//! The watch cache: one store watch on `/registry/` feeds every API watcher, so a thousand
//! `kubectl get -w` cost one store stream. It keeps the last [`HISTORY`] events so watchers
//! can resume from a resourceVersion; older positions get 410 Gone, as kube-apiserver.
//!
//! Contract: a [`Subscription`] yields every event after its start revision, in order,
//! without a gap — or it ends. It ends with [`Ended::Gap`] when the cache lost events it
//! owed (the feeder met a compacted revision) and with [`Ended::Lagged`] when the watcher
//! fell more than [`CHANNEL`] events behind; the watch handler turns both into an ERROR
//! event with 410 Gone, so clients relist instead of silently missing changes.
//!
//! Lifecycle: [`WatchCache::start`] spawns the feeder task; it runs until the cache is
//! dropped. If the store watch fails or ends it resumes from the last revision it saw; if
//! that was compacted away, history restarts at the store's current revision: resumes from
//! before then get 410, and every live subscription ends with [`Ended::Gap`].

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
pub const CHANNEL: usize = 65_536;

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
            Some(k) => skiff_api::fields::field_values(k, obj),
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
    /// Revision of the newest event seen (or of the store when history restarted).
    latest: Revision,
}

/// What subscribers receive: events, and the news that the cache lost some.
#[derive(Debug, Clone)]
enum Message {
    Event(Arc<CacheEvent>),
    /// History restarted after `revision`: events between the last one sent and it were
    /// compacted away before the cache saw them.
    Gap {
        revision: Revision,
    },
}

pub struct WatchCache {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Message>,
    history: usize,
}

/// A subscription: the buffered events after the requested revision, then live ones
/// through [`Subscription::recv`].
pub struct Subscription {
    pub backlog: Vec<Arc<CacheEvent>>,
    rx: broadcast::Receiver<Message>,
}

/// Why a subscription ended. Only [`Ended::Closed`] is not the watcher's loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The cache lost events after this subscriber's position (compaction while the feeder
    /// was behind): the subscriber must relist.
    Gap { revision: Revision },
    /// The subscriber fell more than [`CHANNEL`] events behind.
    Lagged { missed: u64 },
    /// The cache is gone (server shutting down).
    Closed,
}

impl Ended {
    /// The message of the 410 Gone sent to the watcher, or `None` to just close the stream.
    pub fn gone_message(&self) -> Option<String> {
        match self {
            Ended::Gap { revision } => Some(format!(
                "too old resource version: the watch cache lost events before revision {revision} (compacted before it saw them); list and watch again"
            )),
            Ended::Lagged { missed } => Some(format!(
                "the watch fell too far behind ({missed} events not delivered); list and watch again"
            )),
            Ended::Closed => None,
        }
    }
}

impl Subscription {
    /// The next live event, in revision order, or why there are no more.
    pub async fn recv(&mut self) -> Result<Arc<CacheEvent>, Ended> {
        match self.rx.recv().await {
            Ok(Message::Event(ev)) => Ok(ev),
            Ok(Message::Gap { revision }) => Err(Ended::Gap { revision }),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(Ended::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => Err(Ended::Closed),
        }
    }
}

/// The requested revision is older than the cache's history.
#[derive(Debug)]
pub struct TooOld {
    pub oldest: Revision,
}

impl WatchCache {
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<WatchCache>, StoreError> {
        let rev = store.current_revision().await?;
        let cache = Arc::new(WatchCache::new(rev, HISTORY, CHANNEL));
        tokio::spawn(feed(Arc::downgrade(&cache), store, rev));
        Ok(cache)
    }

    /// A cache at `rev` with no feeder, for other modules' tests.
    #[cfg(test)]
    pub(crate) fn at(rev: Revision) -> WatchCache {
        WatchCache::new(rev, HISTORY, CHANNEL)
    }

    /// A cache at `rev` with no feeder (tests push and reset it by hand).
    fn new(rev: Revision, history: usize, channel: usize) -> WatchCache {
        let (tx, _) = broadcast::channel(channel);
        WatchCache {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                covered_after: rev,
                latest: rev,
            }),
            tx,
            history,
        }
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

    /// The revision of the newest event the cache has (or of the store when history
    /// restarted): whoever applies every event up to it has seen all the cache has.
    pub fn latest(&self) -> Revision {
        self.lock().latest
    }

    /// The revision `sub` has seen everything up to, if it has received every event sent
    /// so far (for bookmarks: a bookmark ahead of an undelivered event would let a client
    /// resume past it).
    pub fn progress(&self, sub: &Subscription) -> Option<Revision> {
        let inner = self.lock();
        sub.rx.is_empty().then_some(inner.latest)
    }

    fn push(&self, ev: CacheEvent) {
        let mut inner = self.lock();
        inner.latest = inner.latest.max(ev.revision);
        let ev = Arc::new(ev);
        if inner.events.len() >= self.history {
            if let Some(old) = inner.events.pop_front() {
                inner.covered_after = old.revision;
            }
        }
        inner.events.push_back(ev.clone());
        let _ = self.tx.send(Message::Event(ev));
    }

    /// History restarts after `rev`: the events before it were lost, so every live
    /// subscription ends (after the events it was already sent) and resumes from before
    /// `rev` get [`TooOld`].
    fn reset(&self, rev: Revision) {
        let mut inner = self.lock();
        inner.events.clear();
        inner.covered_after = rev;
        inner.latest = inner.latest.max(rev);
        let _ = self.tx.send(Message::Gap { revision: rev });
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
                if !recover(&cache, &store, Some(&e), &mut last).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let ev = match w.next().await {
                // The store ended the watch (it is closing, or a backend gave up): resume
                // like after an error, so watchers are never left waiting on a dead feed.
                None => {
                    if !recover(&cache, &store, None, &mut last).await {
                        return;
                    }
                    break;
                }
                Some(Err(e)) => {
                    if !recover(&cache, &store, Some(&e), &mut last).await {
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

/// Decides how to go on after a store watch failed with `e` (or ended: `None`); false
/// ends the feeder.
async fn recover(
    cache: &Weak<WatchCache>,
    store: &Arc<dyn Store>,
    e: Option<&StoreError>,
    last: &mut Revision,
) -> bool {
    let Some(c) = cache.upgrade() else {
        return false;
    };
    match e {
        Some(e) => tracing::warn!(error = %e, "watch cache: store watch failed; resuming"),
        None => tracing::warn!("watch cache: store watch ended; resuming"),
    }
    if let Some(StoreError::Compacted { .. }) = e {
        if let Ok(rev) = store.current_revision().await {
            tracing::warn!(
                from = *last + 1,
                to = rev,
                "watch cache: events were compacted before the cache saw them; ending every watch (410) so clients relist"
            );
            c.reset(rev);
            *last = rev;
        }
    }
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event(rev: Revision, name: &str) -> CacheEvent {
        let obj = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rev.to_string()},
        });
        CacheEvent::new(
            rev,
            format!("/registry/core/configmaps/default/{name}"),
            EventType::Added,
            obj.to_string().as_bytes(),
            ObjectView::of(&obj),
            None,
        )
    }

    #[tokio::test]
    async fn reset_ends_live_subscriptions_after_what_they_were_sent() {
        let cache = WatchCache::new(10, HISTORY, CHANNEL);
        let mut sub = cache.subscribe(10).unwrap();
        cache.push(event(11, "a"));
        cache.reset(20);
        assert_eq!(sub.recv().await.unwrap().revision, 11);
        assert_eq!(sub.recv().await.unwrap_err(), Ended::Gap { revision: 20 });
        assert!(Ended::Gap { revision: 20 }
            .gone_message()
            .unwrap()
            .contains("too old resource version"));
        // Resuming from inside the gap is refused; from its end it works.
        assert_eq!(cache.subscribe(15).err().unwrap().oldest, 20);
        let mut after = cache.subscribe(20).unwrap();
        cache.push(event(21, "b"));
        assert_eq!(after.recv().await.unwrap().revision, 21);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_ended_never_skipped_ahead() {
        let cache = WatchCache::new(0, HISTORY, 4);
        let mut slow = cache.subscribe(0).unwrap();
        let mut fast = cache.subscribe(0).unwrap();
        for r in 1..=3 {
            cache.push(event(r, "x"));
            assert_eq!(fast.recv().await.unwrap().revision, r);
        }
        for r in 4..=6 {
            cache.push(event(r, "x"));
            assert_eq!(fast.recv().await.unwrap().revision, r);
        }
        // Six events through a channel of four: the slow one lost two and must end.
        assert_eq!(slow.recv().await.unwrap_err(), Ended::Lagged { missed: 2 });
        assert!(Ended::Lagged { missed: 2 }.gone_message().is_some());
    }

    #[tokio::test]
    async fn progress_is_reported_only_when_caught_up() {
        let cache = WatchCache::new(10, HISTORY, CHANNEL);
        let mut sub = cache.subscribe(10).unwrap();
        assert_eq!(cache.progress(&sub), Some(10));
        cache.push(event(11, "a"));
        assert_eq!(cache.progress(&sub), None);
        sub.recv().await.unwrap();
        assert_eq!(cache.progress(&sub), Some(11));
    }

    #[test]
    fn history_keeps_the_newest_events() {
        let cache = WatchCache::new(0, 2, CHANNEL);
        for r in 1..=3 {
            cache.push(event(r, "x"));
        }
        assert_eq!(cache.subscribe(0).err().unwrap().oldest, 1);
        let sub = cache.subscribe(1).unwrap();
        let revs: Vec<Revision> = sub.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(revs, [2, 3]);
    }

    #[tokio::test]
    async fn a_dropped_cache_closes_subscriptions() {
        let cache = WatchCache::new(0, HISTORY, CHANNEL);
        let mut sub = cache.subscribe(0).unwrap();
        drop(cache);
        assert_eq!(sub.recv().await.unwrap_err(), Ended::Closed);
        assert_eq!(Ended::Closed.gone_message(), None);
    }
}
