//! The scheduling queue (kube-scheduler's `backend/queue`): pending pods of this scheduler
//! in four places.
//!
//! - **active**: ready to be tried, highest priority first, then oldest;
//! - **backoff**: tried and failed recently; they wait 1 s, doubling per attempt up to
//!   10 s, before returning to active;
//! - **unschedulable**: rejected by some plugins; they wait for a cluster event one of those
//!   plugins registered ([`crate::framework::Plugin::events_to_register`]), or at most
//!   [`UNSCHEDULABLE_FLUSH`], never polling;
//! - **gated**: pods with `spec.schedulingGates`, not tried until the gates are removed.
//!
//! A popped pod is *in flight* until the cycle reports back; an event that happens in the
//! meantime sends it to backoff instead of unschedulable, so it is not lost. Updates replace
//! the queued pod wherever it is; deletes remove it. Time comes in as arguments (`now`), so
//! tests drive the clock.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::framework::ClusterEvent;
use crate::nodeinfo::PodInfo;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even without a matching event.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(300);

/// A pod taken from the queue for one cycle.
#[derive(Clone)]
pub struct QueuedPod {
    pub info: Arc<PodInfo>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the pod first entered the queue (for the e2e latency metric).
    pub initial: Instant,
    /// When it last failed (backoff runs from here).
    pub last_failure: Option<Instant>,
    pub unschedulable_plugins: Vec<&'static str>,
}

impl QueuedPod {
    pub fn backoff(&self) -> Duration {
        if self.attempts == 0 {
            return Duration::ZERO;
        }
        let shift = (self.attempts - 1).min(16);
        (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
    }

    fn backoff_expiry(&self) -> Option<Instant> {
        self.last_failure.map(|t| t + self.backoff())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable(Instant),
    Gated,
    InFlight,
}

struct Entry {
    pod: QueuedPod,
    place: Place,
    /// Bumped whenever the entry moves, so stale heap items are skipped.
    seq: u64,
    /// An event happened while the pod was in flight.
    moved_while_in_flight: bool,
}

#[derive(PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    created: Reverse<(i64, u64)>,
    key: String,
    seq: u64,
}

impl Ord for ActiveItem {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| self.created.cmp(&o.created))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Queue lengths by place, for `scheduler_pending_pods`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub gated: usize,
}

pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Unschedulable pods by the time they were parked (stale items skipped by `seq`), so
    /// the periodic flush pops only the pods whose time has come instead of walking all.
    parked: BinaryHeap<Reverse<(Instant, u64, String)>>,
    plugin_events: HashMap<&'static str, Vec<ClusterEvent>>,
    seq: u64,
    /// Keys by place (besides active), so events and metrics never walk the whole queue.
    unschedulable: HashSet<String>,
    in_flight: HashSet<String>,
    gated: HashSet<String>,
    backing_off: HashSet<String>,
}

fn is_gated(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// Whether an update touches what scheduling reads (spec, labels, annotations).
fn relevant_change(
    old: &k8s_openapi::api::core::v1::Pod,
    new: &k8s_openapi::api::core::v1::Pod,
) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

fn creation_key(pod: &PodInfo, seq: u64) -> (i64, u64) {
    let ts = pod
        .pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(i64::MAX);
    (ts, seq)
}

impl SchedulingQueue {
    /// `plugin_events` maps each plugin to the events that may make pods it rejected fit
    /// ([`crate::Framework::plugin_events`]).
    pub fn new(plugin_events: HashMap<&'static str, Vec<ClusterEvent>>) -> SchedulingQueue {
        SchedulingQueue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            parked: BinaryHeap::new(),
            plugin_events,
            seq: 0,
            unschedulable: HashSet::new(),
            in_flight: HashSet::new(),
            gated: HashSet::new(),
            backing_off: HashSet::new(),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn unindex(&mut self, key: &str) {
        self.unschedulable.remove(key);
        self.in_flight.remove(key);
        self.gated.remove(key);
        self.backing_off.remove(key);
    }

    fn put(&mut self, key: String, pod: QueuedPod, place: Place) {
        let seq = self.next_seq();
        self.unindex(&key);
        match place {
            Place::Unschedulable(_) => self.unschedulable.insert(key.clone()),
            Place::Gated => self.gated.insert(key.clone()),
            Place::Backoff => self.backing_off.insert(key.clone()),
            Place::InFlight => self.in_flight.insert(key.clone()),
            Place::Active => true,
        };
        match place {
            Place::Active => self.active.push(ActiveItem {
                priority: pod.info.priority,
                created: Reverse(creation_key(&pod.info, seq)),
                key: key.clone(),
                seq,
            }),
            Place::Backoff => {
                let at = pod.backoff_expiry().unwrap_or_else(Instant::now);
                self.backoff.push(Reverse((at, seq, key.clone())));
            }
            Place::Unschedulable(t) => {
                self.parked.push(Reverse((t, seq, key.clone())));
                if self.parked.len() > 2 * self.unschedulable.len() + 1024 {
                    // Pods that left unschedulable leave stale items: rebuild from the
                    // live ones so the heap stays bounded by the queue.
                    let entries = &self.entries;
                    self.parked.retain(|Reverse((_, s, k))| {
                        k == &key || entries.get(k).is_some_and(|e| e.seq == *s)
                    });
                }
            }
            _ => {}
        }
        self.entries.insert(
            key,
            Entry {
                pod,
                place,
                seq,
                moved_while_in_flight: false,
            },
        );
    }

    /// Where a pod leaving unschedulable/gated goes: backoff while its backoff runs.
    fn ready_place(pod: &QueuedPod, now: Instant) -> Place {
        match pod.backoff_expiry() {
            Some(t) if t > now => Place::Backoff,
            _ => Place::Active,
        }
    }

    /// A new pending pod (or one seen again): queued, or held when gated. An existing
    /// entry is updated instead.
    pub fn add(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key();
        if self.entries.contains_key(&key) {
            self.update(info, now);
            return;
        }
        let place = if is_gated(&info) {
            Place::Gated
        } else {
            Place::Active
        };
        let pod = QueuedPod {
            info,
            attempts: 0,
            initial: now,
            last_failure: None,
            unschedulable_plugins: Vec::new(),
        };
        self.put(key, pod, place);
    }

    /// A newer version of a queued pod replaces it; a pod whose gates were removed, or an
    /// unschedulable one that changed, is tried again.
    pub fn update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key();
        let Some(e) = self.entries.get_mut(&key) else {
            self.add(info, now);
            return;
        };
        let gated = is_gated(&info);
        // Status-only updates (our own condition patches among them) change nothing a
        // plugin reads: the pod keeps its place.
        let relevant = relevant_change(&e.pod.info.pod, &info.pod);
        e.pod.info = info;
        if !relevant {
            return;
        }
        match e.place {
            Place::InFlight => e.moved_while_in_flight = true,
            Place::Gated if !gated => {
                let pod = e.pod.clone();
                let place = Self::ready_place(&pod, now);
                self.put(key, pod, place);
            }
            Place::Unschedulable(_) => {
                let pod = e.pod.clone();
                let place = if gated {
                    Place::Gated
                } else {
                    Self::ready_place(&pod, now)
                };
                self.put(key, pod, place);
            }
            Place::Active => {
                // Re-push so a changed priority takes effect; the old item goes stale.
                let pod = e.pod.clone();
                self.put(key, pod, if gated { Place::Gated } else { Place::Active });
            }
            _ => {}
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
        self.unindex(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Moves backoff pods whose time has come to active, and unschedulable pods parked
    /// longer than [`UNSCHEDULABLE_FLUSH`].
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((at, seq, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let (seq, key) = (*seq, self.backoff.pop().expect("peeked").0 .2);
            if let Some(e) = self.entries.get(&key) {
                if e.seq == seq && e.place == Place::Backoff {
                    let pod = e.pod.clone();
                    self.put(key, pod, Place::Active);
                }
            }
        }
        while let Some(Reverse((at, seq, _))) = self.parked.peek() {
            if now.saturating_duration_since(*at) < UNSCHEDULABLE_FLUSH {
                break;
            }
            let (seq, key) = (*seq, self.parked.pop().expect("peeked").0 .2);
            if let Some(e) = self.entries.get(&key) {
                if e.seq == seq && matches!(e.place, Place::Unschedulable(_)) {
                    let pod = e.pod.clone();
                    let place = Self::ready_place(&pod, now);
                    self.put(key, pod, place);
                }
            }
        }
    }

    /// The next pod to try, marked in flight until [`Self::done`] or a requeue.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        self.flush(now);
        while let Some(item) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&item.key) {
                if e.seq == item.seq && e.place == Place::Active {
                    e.place = Place::InFlight;
                    e.moved_while_in_flight = false;
                    let pod = e.pod.clone();
                    self.in_flight.insert(item.key);
                    return Some(pod);
                }
            }
        }
        None
    }

    /// The pod was placed: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.place == Place::InFlight)
        {
            self.delete(key);
        }
    }

    /// The cycle found no node: park the pod until an event one of `plugins` registered
    /// (or back off, if such an event already happened during the cycle).
    pub fn requeue_unschedulable(
        &mut self,
        pod: QueuedPod,
        plugins: Vec<&'static str>,
        now: Instant,
    ) {
        self.requeue(pod, Some(plugins), now);
    }

    /// The cycle or the binding failed for a reason not the pod's: back off and retry.
    pub fn requeue_backoff(&mut self, pod: QueuedPod, now: Instant) {
        self.requeue(pod, None, now);
    }

    fn requeue(&mut self, mut pod: QueuedPod, plugins: Option<Vec<&'static str>>, now: Instant) {
        let key = pod.info.key();
        let moved = match self.entries.get(&key) {
            // Deleted while in flight: forget it.
            None => return,
            Some(e) => {
                // Keep the newest version seen while in flight.
                pod.info = e.pod.info.clone();
                e.moved_while_in_flight
            }
        };
        pod.attempts += 1;
        pod.last_failure = Some(now);
        let place = match plugins {
            _ if is_gated(&pod.info) => Place::Gated,
            Some(p) if !moved => {
                pod.unschedulable_plugins = p;
                Place::Unschedulable(now)
            }
            _ => Place::Backoff,
        };
        self.put(key, pod, place);
    }

    /// A cluster change: unschedulable pods rejected by a plugin that registered it become
    /// ready again (to backoff while their backoff runs, else active).
    pub fn on_event(&mut self, event: ClusterEvent, now: Instant) {
        for key in &self.in_flight {
            if let Some(e) = self.entries.get_mut(key) {
                e.moved_while_in_flight = true;
            }
        }
        let ready: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|key| {
                let plugins = &self.entries[*key].pod.unschedulable_plugins;
                plugins.is_empty()
                    || plugins.iter().any(|p| {
                        self.plugin_events
                            .get(p)
                            .is_none_or(|evs| evs.iter().any(|r| r.covers(&event)))
                    })
            })
            .cloned()
            .collect();
        for key in ready {
            let pod = self.entries[&key].pod.clone();
            let place = Self::ready_place(&pod, now);
            self.put(key, pod, place);
        }
    }

    /// When the earliest backoff ends (the loop sleeps until then when nothing is active).
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    pub fn lengths(&self) -> Lengths {
        let parked = self.unschedulable.len() + self.gated.len() + self.backing_off.len();
        Lengths {
            active: self.entries.len() - parked,
            backoff: self.backing_off.len(),
            unschedulable: self.unschedulable.len(),
            gated: self.gated.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{action, EventResource};
    use crate::plugins::testutil::*;
    use k8s_openapi::api::core::v1::PodSchedulingGate;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn p(name: &str, priority: i32, created_s: i64) -> Arc<PodInfo> {
        let mut pod = pod(name, &[]);
        pod.spec.as_mut().unwrap().priority = Some(priority);
        pod.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created_s).unwrap(),
        ));
        info(pod)
    }

    fn queue() -> SchedulingQueue {
        let mut events = HashMap::new();
        events.insert(
            "NodeResourcesFit",
            vec![ClusterEvent::new(EventResource::Node, action::ADD)],
        );
        events.insert(
            "TaintToleration",
            vec![ClusterEvent::new(
                EventResource::Node,
                action::UPDATE_NODE_TAINT,
            )],
        );
        SchedulingQueue::new(events)
    }

    #[test]
    fn priority_then_age() {
        let mut q = queue();
        let now = Instant::now();
        q.add(p("old-low", 0, 0), now);
        q.add(p("new-high", 10, 5), now);
        q.add(p("old-high", 10, 1), now);
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(now).map(|p| p.info.name.clone())).collect();
        assert_eq!(order, vec!["old-high", "new-high", "old-low"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let now = Instant::now();
        let mut qp = QueuedPod {
            info: p("a", 0, 0),
            attempts: 1,
            initial: now,
            last_failure: None,
            unschedulable_plugins: vec![],
        };
        let mut seen = vec![];
        for a in 1..=6 {
            qp.attempts = a;
            seen.push(qp.backoff().as_secs());
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 10, 10]);

        let mut q = queue();
        q.add(p("a", 0, 0), now);
        let pod = q.pop(now).unwrap();
        q.requeue_backoff(pod, now);
        assert!(q.pop(now).is_none());
        assert_eq!(q.lengths().backoff, 1);
        assert!(q.pop(now + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn unschedulable_waits_for_a_registered_event() {
        let mut q = queue();
        let now = Instant::now();
        q.add(p("a", 0, 0), now);
        let pod = q.pop(now).unwrap();
        q.requeue_unschedulable(pod, vec!["NodeResourcesFit"], now);
        let later = now + Duration::from_secs(20);
        assert!(q.pop(later).is_none());
        // An event the rejecting plugin did not register changes nothing.
        q.on_event(
            ClusterEvent::new(EventResource::Node, action::UPDATE_NODE_TAINT),
            later,
        );
        assert!(q.pop(later).is_none());
        assert_eq!(q.lengths().unschedulable, 1);
        q.on_event(ClusterEvent::new(EventResource::Node, action::ADD), later);
        assert_eq!(q.pop(later).unwrap().info.name, "a");
    }

    #[test]
    fn event_during_cycle_means_backoff_and_flush_after_five_minutes() {
        let mut q = queue();
        let now = Instant::now();
        q.add(p("a", 0, 0), now);
        let pod = q.pop(now).unwrap();
        q.on_event(ClusterEvent::new(EventResource::Node, action::ADD), now);
        q.requeue_unschedulable(pod, vec!["NodeResourcesFit"], now);
        assert_eq!(q.lengths().backoff, 1);
        let pod = q.pop(now + Duration::from_secs(1)).unwrap();
        q.requeue_unschedulable(pod, vec!["NodeResourcesFit"], now);
        assert!(q.pop(now + Duration::from_secs(299)).is_none());
        assert!(q.pop(now + UNSCHEDULABLE_FLUSH).is_some());
    }

    #[test]
    fn parked_pods_flush_in_order_and_stale_items_are_dropped() {
        let mut q = queue();
        let now = Instant::now();
        // 3,000 pods parked, moved out by an event and parked again, three times: stale
        // heap items must not pile up beyond the bound, and every live one still flushes.
        for i in 0..3000 {
            q.add(p(&format!("p{i}"), 0, i), now);
        }
        for round in 0..3u64 {
            // 20 s apart: every backoff (at most 10 s) has run out.
            let t = now + Duration::from_secs(20 * round);
            while let Some(pod) = q.pop(t) {
                q.requeue_unschedulable(pod, vec!["NodeResourcesFit"], t);
            }
            assert!(q.parked.len() <= 2 * q.unschedulable.len() + 1025);
            if round < 2 {
                q.on_event(ClusterEvent::new(EventResource::Node, action::ADD), t);
            }
        }
        assert_eq!(q.lengths().unschedulable, 3000);
        let t = now + Duration::from_secs(40);
        assert!(q
            .pop(t + UNSCHEDULABLE_FLUSH - Duration::from_secs(1))
            .is_none());
        let mut flushed = 0;
        while q.pop(t + UNSCHEDULABLE_FLUSH).is_some() {
            flushed += 1;
        }
        assert_eq!(flushed, 3000);
    }

    #[test]
    fn gates_hold_until_removed_and_deletes_remove() {
        let mut q = queue();
        let now = Instant::now();
        let mut gated = pod("g", &[]);
        gated.spec.as_mut().unwrap().scheduling_gates = Some(vec![PodSchedulingGate {
            name: "example.com/wait".into(),
        }]);
        q.add(info(gated.clone()), now);
        assert!(q.pop(now).is_none());
        assert_eq!(q.lengths().gated, 1);
        gated.spec.as_mut().unwrap().scheduling_gates = None;
        q.update(info(gated), now);
        assert_eq!(q.pop(now).unwrap().info.name, "g");

        q.add(p("d", 0, 0), now);
        q.delete("default/d");
        assert!(q.pop(now).is_none());
    }

    #[test]
    fn updates_replace_the_queued_pod() {
        let mut q = queue();
        let now = Instant::now();
        q.add(p("a", 0, 0), now);
        q.add(p("b", 5, 0), now);
        q.update(p("a", 9, 0), now);
        let first = q.pop(now).unwrap();
        assert_eq!((first.info.name.as_str(), first.info.priority), ("a", 9));
        assert_eq!(q.pop(now).unwrap().info.name, "b");
        assert!(q.pop(now).is_none());
    }
}
