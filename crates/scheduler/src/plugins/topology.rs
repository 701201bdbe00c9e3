//! Counting per topology domain, shared by InterPodAffinity and PodTopologySpread, built to
//! keep a pod's PreFilter cheap at 5,000 nodes:
//! - [`TopologyCounts`]: `key → value → n` maps with a fast (non-cryptographic) hash,
//!   looked up with the node's own label strings;
//! - [`Overlay`]: a shared base of counts plus a small private delta, so that
//!   preemption's per-node copies of the cycle state cost nothing to clone;
//! - [`NodeCache`]: per-node contributions kept across cycles and recomputed only for
//!   nodes whose `Arc<NodeInfo>` changed since the last cycle with the same question
//!   (signature). The cache holds a clone of each node's `Arc`, so an unchanged pointer
//!   means unchanged contents (a snapshot never mutates a shared node).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use crate::nodeinfo::{NodeInfo, Snapshot};

/// A multiply-rotate hash (as rustc's FxHash): the keys are label values, hashed on
/// every node of every cycle, where SipHash dominated the cost.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FxHasher>>;

/// Numbers per topology pair, as `key → value → n`. Entries that drop to zero are
/// removed, so an empty map means no pair counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopologyCounts {
    by_key: Vec<(String, FastMap<String, i64>)>,
    pairs: usize,
}

impl TopologyCounts {
    fn values_mut(&mut self, key: &str) -> &mut FastMap<String, i64> {
        // Few distinct topology keys per question: a scan beats hashing the key.
        let i = match self.by_key.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                self.by_key.push((key.to_string(), FastMap::default()));
                self.by_key.len() - 1
            }
        };
        &mut self.by_key[i].1
    }

    pub(crate) fn add(&mut self, key: &str, value: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        let values = self.values_mut(key);
        let change = match values.get_mut(value) {
            Some(n) => {
                *n += delta;
                if *n == 0 {
                    values.remove(value);
                    -1
                } else {
                    0
                }
            }
            None => {
                values.insert(value.to_string(), delta);
                1
            }
        };
        self.pairs = self.pairs.wrapping_add_signed(change);
    }

    /// Adds `delta` to the node's domain for `key`; nodes without the label count nowhere.
    pub(crate) fn add_on_node(&mut self, key: &str, labels: &BTreeMap<String, String>, delta: i64) {
        if let Some(value) = labels.get(key) {
            self.add(key, value, delta);
        }
    }

    pub(crate) fn get(&self, key: &str, value: &str) -> i64 {
        self.by_key
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.get(value))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_key.iter().map(|(k, _)| k.as_str())
    }

    /// Sum over the keys of the node's domain values.
    pub(crate) fn sum_for_node(&self, labels: &BTreeMap<String, String>) -> i64 {
        self.by_key
            .iter()
            .filter_map(|(k, values)| values.get(labels.get(k)?))
            .sum()
    }
}

/// Counts shared with the cache (and with every copy of the cycle state) plus this copy's
/// own changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overlay {
    base: Arc<TopologyCounts>,
    delta: TopologyCounts,
    /// Pairs whose total is not zero.
    nonzero: usize,
}

impl Overlay {
    pub(crate) fn new(base: Arc<TopologyCounts>) -> Overlay {
        let nonzero = base.pairs;
        Overlay {
            base,
            delta: TopologyCounts::default(),
            nonzero,
        }
    }

    pub(crate) fn get(&self, key: &str, value: &str) -> i64 {
        let base = self.base.get(key, value);
        if self.delta.is_empty() {
            base
        } else {
            base + self.delta.get(key, value)
        }
    }

    pub(crate) fn add(&mut self, key: &str, value: &str, delta: i64) {
        let before = self.get(key, value) != 0;
        self.delta.add(key, value, delta);
        let after = self.get(key, value) != 0;
        match (before, after) {
            (false, true) => self.nonzero += 1,
            (true, false) => self.nonzero -= 1,
            _ => {}
        }
    }

    pub(crate) fn add_on_node(&mut self, key: &str, labels: &BTreeMap<String, String>, delta: i64) {
        if let Some(value) = labels.get(key) {
            self.add(key, value, delta);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nonzero == 0
    }

    /// Whether any of the node's domains (for the keys counted) holds a positive count.
    pub(crate) fn any_positive_on_node(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.delta.is_empty() {
            // The common case (no preemption simulation): one lookup per key.
            return self.base.by_key.iter().any(|(k, values)| {
                labels
                    .get(k)
                    .and_then(|v| values.get(v))
                    .is_some_and(|n| *n > 0)
            });
        }
        let positive = |k: &str| labels.get(k).is_some_and(|v| self.get(k, v) > 0);
        self.base.keys().any(positive) || self.delta.keys().any(positive)
    }
}

/// One node's part of the counts: `(a, b, n)` triples whose meaning the caller's
/// `apply` knows (a term or constraint index, a pod index, the number of pods). Most
/// nodes give none or one, kept inline: a cold cycle at 5,000 nodes allocates nothing
/// per node.
#[derive(Debug, Clone, Default)]
pub(crate) enum Contribution {
    #[default]
    None,
    One((u32, u32, i64)),
    Many(Vec<(u32, u32, i64)>),
}

impl Contribution {
    pub(crate) fn push(&mut self, t: (u32, u32, i64)) {
        *self = match std::mem::take(self) {
            Contribution::None => Contribution::One(t),
            Contribution::One(first) => Contribution::Many(vec![first, t]),
            Contribution::Many(mut v) => {
                v.push(t);
                Contribution::Many(v)
            }
        };
    }

    fn as_slice(&self) -> &[(u32, u32, i64)] {
        match self {
            Contribution::None => &[],
            Contribution::One(t) => std::slice::from_ref(t),
            Contribution::Many(v) => v,
        }
    }
}

struct Entry<A> {
    signature: String,
    nodes: Vec<(Arc<NodeInfo>, Contribution)>,
    counts: Arc<A>,
    /// The cache's call count when this entry last answered.
    used: u64,
}

struct Entries<A> {
    list: VecDeque<Entry<A>>,
    calls: u64,
}

/// Counts per question (`signature`), kept across cycles; see the module doc.
pub(crate) struct NodeCache<A> {
    entries: Mutex<Entries<A>>,
}

/// Entries remembered at once (up to two per question): a few pod templates are
/// scheduled in turn.
const CACHED_QUESTIONS: usize = 8;

/// Calls after which an unused entry is dropped: an entry keeps the old version of
/// every node that changed since it last answered, so idle ones must not linger.
const IDLE_CALLS: u64 = 64;

impl<A> Default for NodeCache<A> {
    fn default() -> Self {
        NodeCache {
            entries: Mutex::new(Entries {
                list: VecDeque::new(),
                calls: 0,
            }),
        }
    }
}

impl<A> std::fmt::Debug for NodeCache<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCache")
    }
}

impl<A: Clone + Default> NodeCache<A> {
    /// The counts for `signature` over `snapshot`: `contribute` computes a node's part,
    /// `apply(counts, node, a, b, n, sign)` adds (`sign` 1) or takes back (-1) one triple.
    pub(crate) fn counts(
        &self,
        signature: String,
        snapshot: &Snapshot,
        contribute: impl Fn(&NodeInfo, &mut Contribution),
        apply: impl Fn(&mut A, &Arc<NodeInfo>, u32, u32, i64, i64),
    ) -> Arc<A> {
        // A poisoned lock only means a panic mid-update elsewhere: start afresh.
        let mut guard = self.entries.lock().unwrap_or_else(|e| {
            let mut g = e.into_inner();
            g.list.clear();
            g
        });
        guard.calls += 1;
        let calls = guard.calls;
        let entries = &mut guard.list;
        entries.retain(|e| calls - e.used <= IDLE_CALLS);
        // The counts handed out last cycle may still be held (a cycle state kept for
        // binding): then updating them in place would copy them whole. Two entries per
        // question take turns instead; the one nobody holds is brought up to date.
        let same = |e: &Entry<A>| e.signature == signature;
        let free = entries
            .iter()
            .position(|e| same(e) && Arc::strong_count(&e.counts) == 1);
        let held = entries.iter().position(same);
        let twins = entries.iter().filter(|e| same(e)).count();
        let mut entry = match (free.or(if twins < 2 { None } else { held }), held) {
            (Some(i), _) => entries
                .remove(i)
                .unwrap_or_else(|| unreachable!("index found above")),
            (None, Some(i)) => {
                let e = &entries[i];
                Entry {
                    signature,
                    nodes: e.nodes.clone(),
                    counts: Arc::new(A::clone(&e.counts)),
                    used: calls,
                }
            }
            (None, None) => Entry {
                signature,
                nodes: Vec::with_capacity(snapshot.nodes.len()),
                counts: Arc::new(A::default()),
                used: calls,
            },
        };
        let take_back = |counts: &mut A, node: &Arc<NodeInfo>, c: &Contribution| {
            for &(a, b, n) in c.as_slice() {
                apply(counts, node, a, b, n, -1);
            }
        };
        for (i, node) in snapshot.nodes.iter().enumerate() {
            if let Some((old, _)) = entry.nodes.get(i) {
                if Arc::ptr_eq(old, node) {
                    continue;
                }
            }
            let counts = Arc::make_mut(&mut entry.counts);
            let mut c = Contribution::None;
            contribute(node, &mut c);
            for &(a, b, n) in c.as_slice() {
                apply(counts, node, a, b, n, 1);
            }
            if let Some(slot) = entry.nodes.get_mut(i) {
                take_back(counts, &slot.0, &slot.1);
                *slot = (node.clone(), c);
            } else {
                entry.nodes.push((node.clone(), c));
            }
        }
        if entry.nodes.len() > snapshot.nodes.len() {
            let counts = Arc::make_mut(&mut entry.counts);
            for (old, c) in entry.nodes.drain(snapshot.nodes.len()..) {
                take_back(counts, &old, &c);
            }
        }
        let counts = entry.counts.clone();
        entry.used = calls;
        entries.push_front(entry);
        entries.truncate(CACHED_QUESTIONS);
        counts
    }
}

/// A PreFilter state that preemption's simulation keeps right as pods are added to or
/// removed from a node (`delta` is +1 or −1).
pub(crate) trait PodDelta: 'static {
    fn update(
        &mut self,
        pod: &crate::nodeinfo::PodInfo,
        other: &crate::nodeinfo::PodInfo,
        node: &NodeInfo,
        delta: i64,
    );
}

/// The body of a counting plugin's `add_pod` / `remove_pod`: apply the delta to its state
/// under `key`, if PreFilter wrote one.
pub(crate) fn apply_pod_delta<T: PodDelta>(
    state: &mut crate::framework::CycleState,
    key: &'static str,
    pod: &crate::nodeinfo::PodInfo,
    other: &crate::nodeinfo::PodInfo,
    node: &NodeInfo,
    delta: i64,
) -> crate::framework::Status {
    if let Some(s) = state.read_mut::<T>(key) {
        s.update(pod, other, node, delta);
    }
    crate::framework::Status::success()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod, snapshot};

    /// Pods per zone.
    fn per_zone(
        cache: &NodeCache<TopologyCounts>,
        sig: &str,
        snap: &Snapshot,
    ) -> Arc<TopologyCounts> {
        cache.counts(
            sig.to_string(),
            snap,
            |node, out| {
                if !node.pods.is_empty() {
                    out.push((0, 0, node.pods.len() as i64));
                }
            },
            |counts, node, _, _, n, sign| counts.add_on_node("zone", &node.labels, n * sign),
        )
    }

    fn add_pod(snap: &mut Snapshot, at: usize, name: &str) {
        let mut n = NodeInfo::clone(&snap.nodes[at]);
        let node_name = n.name.clone();
        n.add_pod(Arc::new(pod(name).node(&node_name).info()));
        snap.nodes[at] = Arc::new(n);
    }

    #[test]
    fn held_counts_are_never_changed_and_idle_entries_go() {
        let cache = NodeCache::default();
        let mut snap = snapshot(vec![
            node("n1", &[("zone", "a")]),
            node("n2", &[("zone", "b")]),
        ]);
        add_pod(&mut snap, 0, "p1");
        let first = per_zone(&cache, "q", &snap);
        assert_eq!((first.get("zone", "a"), first.get("zone", "b")), (1, 0));
        // `first` is still held: the next answer comes from a twin.
        add_pod(&mut snap, 1, "p2");
        let second = per_zone(&cache, "q", &snap);
        assert_eq!((first.get("zone", "a"), first.get("zone", "b")), (1, 0));
        assert_eq!((second.get("zone", "a"), second.get("zone", "b")), (1, 1));
        drop(first);
        add_pod(&mut snap, 0, "p3");
        let third = per_zone(&cache, "q", &snap);
        assert_eq!((third.get("zone", "a"), third.get("zone", "b")), (2, 1));
        assert_eq!(second.get("zone", "b"), 1);
        let lock =
            |c: &NodeCache<TopologyCounts>| c.entries.lock().map(|e| e.list.len()).unwrap_or(0);
        assert_eq!(lock(&cache), 2);
        // Other questions for a while: "q" is forgotten.
        for i in 0..=IDLE_CALLS {
            per_zone(&cache, &format!("other-{}", i % 2), &snap);
        }
        let left = cache
            .entries
            .lock()
            .map(|e| e.list.iter().filter(|e| e.signature == "q").count())
            .unwrap_or(1);
        assert_eq!(left, 0);
    }
}
