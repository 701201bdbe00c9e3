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
        let positive = |k: &str| labels.get(k).is_some_and(|v| self.get(k, v) > 0);
        self.base.keys().any(positive) || self.delta.keys().any(positive)
    }
}

/// One node's part of the counts: `(a, b, n)` triples whose meaning the caller's
/// `apply` knows (a term or constraint index, a pod index, the number of pods).
pub(crate) type Contribution = Vec<(u32, u32, i64)>;

struct Entry<A> {
    signature: String,
    nodes: Vec<(Arc<NodeInfo>, Contribution)>,
    counts: Arc<A>,
}

/// Counts per question (`signature`), kept across cycles; see the module doc.
pub(crate) struct NodeCache<A> {
    entries: Mutex<VecDeque<Entry<A>>>,
}

/// Questions remembered at once: a few pod templates are scheduled in turn.
const CACHED_QUESTIONS: usize = 4;

impl<A> Default for NodeCache<A> {
    fn default() -> Self {
        NodeCache {
            entries: Mutex::new(VecDeque::new()),
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
        apply: impl Fn(&mut A, &NodeInfo, u32, u32, i64, i64),
    ) -> Arc<A> {
        // A poisoned lock only means a panic mid-update elsewhere: start afresh.
        let mut entries = self.entries.lock().unwrap_or_else(|e| {
            let mut g = e.into_inner();
            g.clear();
            g
        });
        let mut entry = match entries.iter().position(|e| e.signature == signature) {
            Some(i) => entries
                .remove(i)
                .unwrap_or_else(|| unreachable!("index found above")),
            None => Entry {
                signature,
                nodes: Vec::new(),
                counts: Arc::new(A::default()),
            },
        };
        let take_back = |counts: &mut A, node: &NodeInfo, c: &Contribution| {
            for &(a, b, n) in c {
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
            let mut c = Contribution::new();
            contribute(node, &mut c);
            for &(a, b, n) in &c {
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
        entries.push_front(entry);
        entries.truncate(CACHED_QUESTIONS);
        counts
    }
}
