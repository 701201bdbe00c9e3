//! InterPodAffinity: the pod's required and preferred (anti-)affinity to other pods, and
//! the required anti-affinity of the pods already placed, over any topology key.
//!
//! Contract, as kube-scheduler's plugin of the same name:
//! - PreFilter counts, per topology pair (`key=value` of a node label), the existing pods
//!   whose required anti-affinity selects the incoming pod, and the existing pods that
//!   match the incoming pod's required affinity (all terms) and each anti-affinity term.
//!   Nothing to check (no required terms, no placed pod with required anti-affinity that
//!   selects it) is a Skip. `add_pod`/`remove_pod` keep the counts right for preemption.
//! - Filter: a node lacking an affinity term's topology key, or whose domain holds no
//!   matching pod, fails with `node(s) didn't match pod affinity rules` (unresolvable),
//!   unless no pod anywhere matches and the pod matches its own terms (the first of a
//!   group that wants to run together). A domain holding a pod the anti-affinity selects
//!   fails with `node(s) didn't match pod anti-affinity rules`; a domain where a placed
//!   pod's anti-affinity selects the incoming pod fails with `node(s) didn't satisfy
//!   existing pods anti-affinity rules` (both Unschedulable: preemption may help).
//! - Score: the incoming pod's preferred terms (+weight for affinity, -weight for
//!   anti-affinity) against the placed pods, and symmetrically the placed pods' preferred
//!   terms and required affinity (weight `hard_pod_affinity_weight`) against the incoming
//!   pod, summed per topology domain; normalized by min/max scaling to 0..=100.
//!
//! Namespace selectors of the incoming pod's terms are resolved to namespace names once
//! per cycle through [`Snapshot::namespace_labels`]. The score data is computed during
//! PreFilter, the last point where the whole snapshot is in hand (PreScore sees only the
//! feasible nodes); it depends only on the snapshot, so the result is the same.
//!
//! Cost: every count above is kept across cycles per question (the pod's namespace and
//! labels, or its resolved terms) in a `topology::NodeCache`, recomputed only for the nodes
//! whose `Arc<NodeInfo>` changed since; a cycle for a pod like the last one costs a
//! pointer comparison per node. Plain pods in a cluster without affinity pods return
//! Skip after two length checks.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::framework::{
    action, ClusterEvent, CycleState, EventResource, Filter, NodeScore, Plugin, PreFilter,
    PreScore, Score, Status, MAX_NODE_SCORE,
};
use crate::nodeinfo::{AffinityTerm, NodeInfo, PodInfo, Snapshot};
use crate::plugins::topology::{apply_pod_delta, NodeCache, Overlay, PodDelta, TopologyCounts};

pub const NAME: &str = "InterPodAffinity";
const FILTER_KEY: &str = "PreFilterInterPodAffinity";
const SCORE_KEY: &str = "PreScoreInterPodAffinity";

pub const ERR_AFFINITY_RULES: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY_RULES: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// The plugin; `hard_pod_affinity_weight` is kube's `hardPodAffinityWeight` (default 1,
/// 0 turns that part of scoring off).
#[derive(Debug)]
pub struct InterPodAffinity {
    pub hard_pod_affinity_weight: i32,
    /// Placed pods' required anti-affinity against a pod of this namespace and labels.
    existing_anti: NodeCache<TopologyCounts>,
    /// Placed pods matching the incoming pod's required affinity / anti-affinity terms.
    affinity: NodeCache<TopologyCounts>,
    anti_affinity: NodeCache<TopologyCounts>,
    /// Preferred-term weights per domain for a pod of this namespace, labels and terms.
    scores: NodeCache<TopologyCounts>,
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        InterPodAffinity::new(1)
    }
}

impl InterPodAffinity {
    pub fn new(hard_pod_affinity_weight: i32) -> Self {
        InterPodAffinity {
            hard_pod_affinity_weight,
            existing_anti: NodeCache::default(),
            affinity: NodeCache::default(),
            anti_affinity: NodeCache::default(),
            scores: NodeCache::default(),
        }
    }
}

/// What the counts of a list of the incoming pod's terms depend on.
fn terms_signature(terms: &[AffinityTerm]) -> String {
    let mut sig = String::new();
    for t in terms {
        let mut ns: Vec<&String> = t.namespaces.iter().collect();
        ns.sort();
        sig.push_str(&format!(
            "{}|{}|{}|{:?}|{};",
            t.topology_key,
            t.selector,
            t.selector.matches_nothing(),
            ns,
            t.namespace_selector.is_some()
        ));
    }
    sig
}

/// The incoming pod's term with a namespace selector turned into namespace names (an
/// empty selector, which selects every namespace, is kept: [`AffinityTerm::matches`]
/// accepts any namespace for it).
fn resolve_namespaces(term: &AffinityTerm, snapshot: &Snapshot) -> AffinityTerm {
    let mut t = term.clone();
    if let Some(sel) = &term.namespace_selector {
        if !sel.is_everything() {
            for (ns, labels) in &snapshot.namespace_labels {
                if sel.matches(labels) {
                    t.namespaces.insert(ns.clone());
                }
            }
            t.namespace_selector = None;
        }
    }
    t
}

/// For each anti-affinity term of `terms` that selects `target`, counts on the node's
/// domain.
fn count_anti_affinity(
    counts: &mut Overlay,
    terms: &[AffinityTerm],
    target: &PodInfo,
    target_ns_labels: Option<&BTreeMap<String, String>>,
    node_labels: &BTreeMap<String, String>,
    delta: i64,
) {
    for t in terms {
        if t.matches(target, target_ns_labels) {
            counts.add_on_node(&t.topology_key, node_labels, delta);
        }
    }
}

/// When `target` matches every affinity term, counts it on the node's domain of each.
fn count_affinity(
    counts: &mut Overlay,
    terms: &[AffinityTerm],
    target: &PodInfo,
    node_labels: &BTreeMap<String, String>,
    delta: i64,
) {
    if matches_all(terms, target) {
        for t in terms {
            counts.add_on_node(&t.topology_key, node_labels, delta);
        }
    }
}

/// Applies a contribution `(term, _, n)` to the node's domain of that term's key.
fn on_term_keys(
    terms: &[AffinityTerm],
) -> impl Fn(&mut TopologyCounts, &Arc<NodeInfo>, u32, u32, i64, i64) + '_ {
    move |counts, node, t, _, n, sign| {
        if let Some(t) = terms.get(t as usize) {
            counts.add_on_node(&t.topology_key, &node.labels, n * sign);
        }
    }
}

/// Resolved terms carry their namespaces, so no namespace labels are needed.
fn matches_all(terms: &[AffinityTerm], pod: &PodInfo) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, None))
}

#[derive(Debug, Clone)]
struct FilterState {
    affinity: Vec<AffinityTerm>,
    anti_affinity: Vec<AffinityTerm>,
    /// The incoming pod's namespace labels, for placed pods' namespace selectors.
    ns_labels: Option<BTreeMap<String, String>>,
    /// Placed pods whose required anti-affinity selects the incoming pod.
    existing_anti: Overlay,
    /// Placed pods matching all of the incoming pod's required affinity terms.
    affinity_counts: Overlay,
    /// Placed pods matching one of the incoming pod's required anti-affinity terms.
    anti_counts: Overlay,
}

impl PodDelta for FilterState {
    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        count_anti_affinity(
            &mut self.existing_anti,
            &other.required_anti_affinity,
            pod,
            self.ns_labels.as_ref(),
            &node.labels,
            delta,
        );
        count_affinity(
            &mut self.affinity_counts,
            &self.affinity,
            other,
            &node.labels,
            delta,
        );
        count_anti_affinity(
            &mut self.anti_counts,
            &self.anti_affinity,
            other,
            None,
            &node.labels,
            delta,
        );
    }
}

impl FilterState {
    fn satisfies_affinity(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        let mut pods_exist = true;
        for t in &self.affinity {
            let Some(value) = node.labels.get(&t.topology_key) else {
                // Every topology key must be on the node, even for the first pod.
                return false;
            };
            if self.affinity_counts.get(&t.topology_key, value) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself would wait forever otherwise.
        pods_exist || (self.affinity_counts.is_empty() && matches_all(&self.affinity, pod))
    }

    fn satisfies_anti_affinity(&self, node: &NodeInfo) -> bool {
        self.anti_counts.is_empty()
            || !self.anti_affinity.iter().any(|t| {
                node.labels
                    .get(&t.topology_key)
                    .is_some_and(|v| self.anti_counts.get(&t.topology_key, v) > 0)
            })
    }

    fn satisfies_existing_anti_affinity(&self, node: &NodeInfo) -> bool {
        !self.existing_anti.any_positive_on_node(&node.labels)
    }
}

/// Shared, so that preemption's copies of the cycle state do not copy the scores.
#[derive(Debug, Clone)]
struct ScoreState {
    scores: Arc<TopologyCounts>,
}

impl InterPodAffinity {
    /// Sums the preferred-term weights per topology domain over the whole snapshot.
    fn prepare_score(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) {
        let has_preferred =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferred && snapshot.have_pods_with_affinity.is_empty() {
            return;
        }
        let preferred: Vec<(AffinityTerm, i64)> = pod
            .preferred_affinity
            .iter()
            .map(|w| (resolve_namespaces(&w.term, snapshot), i64::from(w.weight)))
            .chain(
                pod.preferred_anti_affinity
                    .iter()
                    .map(|w| (resolve_namespaces(&w.term, snapshot), -i64::from(w.weight))),
            )
            .collect();
        let ns_labels = snapshot.namespace_labels.get(&pod.namespace);
        let hard_weight = i64::from(self.hard_pod_affinity_weight);
        // Which placed pods to look at: all when the incoming pod has preferred terms,
        // else only those with terms of their own.
        fn pods_of(node: &NodeInfo, all: bool) -> &[Arc<PodInfo>] {
            if all {
                &node.pods
            } else {
                &node.pods_with_affinity
            }
        }
        let weighted = |signed: &[(AffinityTerm, i64)]| {
            signed
                .iter()
                .map(|(t, w)| format!("{}{w};", terms_signature(std::slice::from_ref(t))))
                .collect::<String>()
        };
        let signature = format!(
            "{}\0{:?}\0{:?}\0{hard_weight}\0{}",
            pod.namespace,
            pod.labels,
            ns_labels,
            weighted(&preferred)
        );
        // A contribution is (pod index, kind << 16 | term index, signed weight).
        const INCOMING: u32 = 0;
        const REQUIRED: u32 = 1;
        const PREFERRED: u32 = 2;
        const PREFERRED_ANTI: u32 = 3;
        let scores = self.scores.counts(
            signature,
            snapshot,
            |node, out| {
                if node.labels.is_empty() {
                    return;
                }
                for (i, existing) in pods_of(node, has_preferred).iter().enumerate() {
                    let mut add = |kind: u32, t: usize, w: i64| {
                        out.push((i as u32, kind << 16 | t as u32, w));
                    };
                    for (t, (term, w)) in preferred.iter().enumerate() {
                        if term.matches(existing, None) {
                            add(INCOMING, t, *w);
                        }
                    }
                    if hard_weight > 0 {
                        for (t, term) in existing.required_affinity.iter().enumerate() {
                            if term.matches(pod, ns_labels) {
                                add(REQUIRED, t, hard_weight);
                            }
                        }
                    }
                    for (t, w) in existing.preferred_affinity.iter().enumerate() {
                        if w.term.matches(pod, ns_labels) {
                            add(PREFERRED, t, i64::from(w.weight));
                        }
                    }
                    for (t, w) in existing.preferred_anti_affinity.iter().enumerate() {
                        if w.term.matches(pod, ns_labels) {
                            add(PREFERRED_ANTI, t, -i64::from(w.weight));
                        }
                    }
                }
            },
            |scores, node, i, kt, w, sign| {
                let Some(existing) = pods_of(node, has_preferred).get(i as usize) else {
                    return;
                };
                let t = (kt & 0xffff) as usize;
                let key = match kt >> 16 {
                    INCOMING => preferred.get(t).map(|(term, _)| term),
                    REQUIRED => existing.required_affinity.get(t),
                    PREFERRED => existing.preferred_affinity.get(t).map(|w| &w.term),
                    _ => existing.preferred_anti_affinity.get(t).map(|w| &w.term),
                };
                if let Some(term) = key {
                    scores.add_on_node(&term.topology_key, &node.labels, w * sign);
                }
            },
        );
        if !scores.is_empty() {
            state.write(SCORE_KEY, ScoreState { scores });
        }
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(
                EventResource::AssignedPod,
                action::ADD | action::UPDATE_POD_LABEL | action::DELETE,
            ),
            ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_LABEL),
        ]
    }
}

impl PreFilter for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, Option<Vec<String>>) {
        self.prepare_score(state, pod, snapshot);
        let has_required =
            !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        // Plain pods in a cluster without required anti-affinity cost two length checks.
        if !has_required && snapshot.have_pods_with_required_anti_affinity.is_empty() {
            return (Status::skip(), None);
        }
        let ns_labels = snapshot.namespace_labels.get(&pod.namespace);
        let existing_anti = self.existing_anti.counts(
            format!("{}\0{:?}\0{:?}", pod.namespace, pod.labels, ns_labels),
            snapshot,
            |node, out| {
                for (i, existing) in node.pods_with_required_anti_affinity.iter().enumerate() {
                    for (j, t) in existing.required_anti_affinity.iter().enumerate() {
                        if node.labels.contains_key(&t.topology_key) && t.matches(pod, ns_labels) {
                            out.push((i as u32, j as u32, 1));
                        }
                    }
                }
            },
            |counts, node, i, j, n, sign| {
                let term = node
                    .pods_with_required_anti_affinity
                    .get(i as usize)
                    .and_then(|p| p.required_anti_affinity.get(j as usize));
                if let Some(t) = term {
                    counts.add_on_node(&t.topology_key, &node.labels, n * sign);
                }
            },
        );
        if !has_required && existing_anti.is_empty() {
            return (Status::skip(), None);
        }
        let affinity: Vec<AffinityTerm> = pod
            .required_affinity
            .iter()
            .map(|t| resolve_namespaces(t, snapshot))
            .collect();
        let anti_affinity: Vec<AffinityTerm> = pod
            .required_anti_affinity
            .iter()
            .map(|t| resolve_namespaces(t, snapshot))
            .collect();
        let affinity_counts = if affinity.is_empty() {
            Arc::default()
        } else {
            self.affinity.counts(
                terms_signature(&affinity),
                snapshot,
                |node, out| {
                    // Every term's domain gets each pod that matches all terms.
                    let n = node
                        .pods
                        .iter()
                        .filter(|p| matches_all(&affinity, p))
                        .count();
                    if n > 0 {
                        for (t, term) in affinity.iter().enumerate() {
                            if node.labels.contains_key(&term.topology_key) {
                                out.push((t as u32, 0, n as i64));
                            }
                        }
                    }
                },
                on_term_keys(&affinity),
            )
        };
        let anti_counts = if anti_affinity.is_empty() {
            Arc::default()
        } else {
            self.anti_affinity.counts(
                terms_signature(&anti_affinity),
                snapshot,
                |node, out| {
                    for (t, term) in anti_affinity.iter().enumerate() {
                        if !node.labels.contains_key(&term.topology_key) {
                            continue;
                        }
                        let n = node.pods.iter().filter(|p| term.matches(p, None)).count();
                        if n > 0 {
                            out.push((t as u32, 0, n as i64));
                        }
                    }
                },
                on_term_keys(&anti_affinity),
            )
        };
        state.write(
            FILTER_KEY,
            FilterState {
                affinity,
                anti_affinity,
                ns_labels: ns_labels.cloned(),
                existing_anti: Overlay::new(existing_anti),
                affinity_counts: Overlay::new(affinity_counts),
                anti_counts: Overlay::new(anti_counts),
            },
        );
        (Status::success(), None)
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        apply_pod_delta::<FilterState>(state, FILTER_KEY, pod, added, node, 1)
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        apply_pod_delta::<FilterState>(state, FILTER_KEY, pod, removed, node, -1)
    }
}

impl Filter for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        // No state: PreFilter skipped, there is nothing to check.
        let Some(s) = state.read::<FilterState>(FILTER_KEY) else {
            return Status::success();
        };
        let status = if !s.satisfies_affinity(pod, node) {
            Status::unresolvable(ERR_AFFINITY_RULES)
        } else if !s.satisfies_anti_affinity(node) {
            Status::unschedulable(ERR_ANTI_AFFINITY_RULES)
        } else if !s.satisfies_existing_anti_affinity(node) {
            Status::unschedulable(ERR_EXISTING_ANTI_AFFINITY)
        } else {
            return Status::success();
        };
        status.with_plugin(NAME)
    }
}

impl PreScore for InterPodAffinity {
    fn pre_score(&self, state: &mut CycleState, _pod: &PodInfo, nodes: &[&NodeInfo]) -> Status {
        if nodes.is_empty() || state.read::<ScoreState>(SCORE_KEY).is_none() {
            return Status::skip();
        }
        Status::success()
    }
}

impl Score for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(state
            .read::<ScoreState>(SCORE_KEY)
            .map_or(0, |s| s.scores.sum_for_node(&node.labels)))
    }

    fn normalize(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        if state.read::<ScoreState>(SCORE_KEY).is_none() {
            return Status::success();
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let spread = max - min;
        for s in scores.iter_mut() {
            s.score = if spread > 0 {
                // Through f64 as kube, so the rounding (down) is the same.
                (MAX_NODE_SCORE as f64 * ((s.score - min) as f64 / spread as f64)) as i64
            } else {
                0
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::framework::Code;
    use crate::testutil::{feasible, filter_all, node, place, pod, snapshot, term, PodBuilder};

    fn anti(key: &str, value: &str, topology: &str) -> serde_json::Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(key, value, topology)]}})
    }

    fn affinity(key: &str, value: &str, topology: &str) -> serde_json::Value {
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(key, value, topology)]}})
    }

    fn three_nodes() -> Vec<NodeInfo> {
        vec![
            node("node-1", &[("zone", "a")]),
            node("node-2", &[("zone", "a")]),
            node("node-3", &[("zone", "b")]),
        ]
    }

    #[test]
    fn replicas_with_required_anti_affinity_land_one_per_node_and_the_fourth_waits() {
        let plugin = InterPodAffinity::default();
        let mut nodes = three_nodes();
        for i in 0..3 {
            let p = pod(&format!("web-{i}"))
                .labels(&[("app", "web")])
                .affinity(anti("app", "web", "kubernetes.io/hostname"));
            let snap = snapshot(nodes.clone());
            let (_, statuses) = filter_all(&plugin, &p.info(), &snap);
            let fits = feasible(&snap, &statuses);
            assert_eq!(fits.len(), 3 - i, "{fits:?}");
            place(&mut nodes, &fits[0], p);
        }
        let snap = snapshot(nodes);
        let p = pod("web-3").labels(&[("app", "web")]).affinity(anti(
            "app",
            "web",
            "kubernetes.io/hostname",
        ));
        let (_, statuses) = filter_all(&plugin, &p.info(), &snap);
        for s in &statuses {
            assert_eq!(s.code, Code::Unschedulable);
            assert_eq!(s.reasons, vec![ERR_ANTI_AFFINITY_RULES.to_string()]);
        }
        // A plain pod the placed pods' anti-affinity selects is kept off their nodes.
        let plain = pod("intruder").labels(&[("app", "web")]).info();
        let (_, statuses) = filter_all(&plugin, &plain, &snap);
        for s in &statuses {
            assert_eq!(s.code, Code::Unschedulable);
            assert_eq!(s.reasons, vec![ERR_EXISTING_ANTI_AFFINITY.to_string()]);
        }
        // One in another namespace is not selected (the terms name the pod's own).
        let other_ns = pod("x").namespace("dev").labels(&[("app", "web")]).info();
        let (_, statuses) = filter_all(&plugin, &other_ns, &snap);
        assert!(statuses.iter().all(Status::is_success));
    }

    #[test]
    fn required_affinity_lands_on_the_apps_node() {
        let plugin = InterPodAffinity::default();
        let mut nodes = three_nodes();
        place(&mut nodes, "node-2", pod("db").labels(&[("app", "db")]));
        let snap = snapshot(nodes);
        let p = pod("cache").affinity(affinity("app", "db", "kubernetes.io/hostname"));
        let (_, statuses) = filter_all(&plugin, &p.info(), &snap);
        assert_eq!(feasible(&snap, &statuses), ["node-2"]);
        assert_eq!(statuses[0].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(statuses[0].reasons, vec![ERR_AFFINITY_RULES.to_string()]);
        // Over zones, every node of the db's zone qualifies.
        let p = pod("cache").affinity(affinity("app", "db", "zone"));
        let (_, statuses) = filter_all(&plugin, &p.info(), &snap);
        assert_eq!(feasible(&snap, &statuses), ["node-1", "node-2"]);
    }

    #[test]
    fn first_pod_of_a_self_affine_group_may_go_anywhere_with_the_key() {
        let plugin = InterPodAffinity::default();
        let mut nodes = three_nodes();
        nodes.push(node("bare", &[]));
        let snap = snapshot(nodes);
        let own = pod("a")
            .labels(&[("app", "grp")])
            .affinity(affinity("app", "grp", "zone"));
        let (_, statuses) = filter_all(&plugin, &own.info(), &snap);
        assert_eq!(feasible(&snap, &statuses), ["node-1", "node-2", "node-3"]);
        // Not matching its own terms: nothing to join, nowhere to go.
        let other = pod("b").affinity(affinity("app", "grp", "zone"));
        let (_, statuses) = filter_all(&plugin, &other.info(), &snap);
        assert!(feasible(&snap, &statuses).is_empty());
    }

    #[test]
    fn namespace_selector_picks_namespaces_by_label() {
        let plugin = InterPodAffinity::default();
        let mut nodes = three_nodes();
        place(
            &mut nodes,
            "node-1",
            pod("db").namespace("prod").labels(&[("app", "db")]),
        );
        place(
            &mut nodes,
            "node-3",
            pod("db").namespace("dev").labels(&[("app", "db")]),
        );
        let mut snap = snapshot(nodes);
        snap.namespace_labels.insert(
            "prod".into(),
            [("env".to_string(), "prod".to_string())].into(),
        );
        snap.namespace_labels.insert(
            "dev".into(),
            [("env".to_string(), "dev".to_string())].into(),
        );
        let mut t = term("app", "db", "kubernetes.io/hostname");
        t["namespaceSelector"] = json!({"matchLabels": {"env": "prod"}});
        let p = pod("x").affinity(
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}),
        );
        let (_, statuses) = filter_all(&plugin, &p.info(), &snap);
        assert_eq!(feasible(&snap, &statuses), ["node-1"]);
        // An empty namespace selector selects every namespace.
        let mut t = term("app", "db", "kubernetes.io/hostname");
        t["namespaceSelector"] = json!({});
        let p = pod("x").affinity(
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}),
        );
        let (_, statuses) = filter_all(&plugin, &p.info(), &snap);
        assert_eq!(feasible(&snap, &statuses), ["node-1", "node-3"]);
    }

    #[test]
    fn remove_and_add_pod_keep_the_counts() {
        let plugin = InterPodAffinity::default();
        let mut nodes = three_nodes();
        let guard = pod("guard")
            .labels(&[("app", "web")])
            .affinity(anti("app", "web", "zone"));
        place(&mut nodes, "node-3", guard.clone());
        place(&mut nodes, "node-1", pod("web").labels(&[("app", "web")]));
        let snap = snapshot(nodes);
        let p = pod("new")
            .labels(&[("app", "web")])
            .affinity(anti("app", "web", "zone"))
            .info();
        let (mut state, statuses) = filter_all(&plugin, &p, &snap);
        assert!(feasible(&snap, &statuses).is_empty());
        let node1 = &snap.nodes[0];
        let web = node1.pods[0].clone();
        assert_eq!(
            plugin.remove_pod(&mut state, &p, &web, node1),
            Status::success()
        );
        assert!(plugin.filter(&state, &p, &snap.nodes[1]).is_success());
        // node-3's guard still selects the pod, and the pod selects the guard.
        assert!(!plugin.filter(&state, &p, &snap.nodes[2]).is_success());
        let node3 = &snap.nodes[2];
        let g = node3.pods[0].clone();
        plugin.remove_pod(&mut state, &p, &g, node3);
        assert!(plugin.filter(&state, &p, node3).is_success());
        plugin.add_pod(&mut state, &p, &web, node1);
        assert!(!plugin.filter(&state, &p, &snap.nodes[1]).is_success());
    }

    #[test]
    fn plain_pods_skip_without_affinity_in_the_cluster() {
        let plugin = InterPodAffinity::default();
        let mut nodes = three_nodes();
        place(&mut nodes, "node-1", pod("web").labels(&[("app", "web")]));
        let snap = snapshot(nodes);
        let mut state = CycleState::default();
        let (s, _) = plugin.pre_filter(&mut state, &pod("p").info(), &snap);
        assert_eq!(s.code, Code::Skip);
        assert_eq!(
            plugin
                .pre_score(&mut state, &pod("p").info(), &[&snap.nodes[0]])
                .code,
            Code::Skip
        );
    }

    fn scores(plugin: &InterPodAffinity, p: &PodInfo, snap: &Snapshot) -> Vec<i64> {
        let mut state = CycleState::default();
        plugin.pre_filter(&mut state, p, snap);
        let nodes: Vec<&NodeInfo> = snap.nodes.iter().map(|n| &**n).collect();
        if plugin.pre_score(&mut state, p, &nodes).code == Code::Skip {
            return vec![0; nodes.len()];
        }
        let mut out: Vec<NodeScore> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeScore {
                node: i,
                score: plugin.score(&state, p, n).unwrap_or(0),
            })
            .collect();
        plugin.normalize(&state, p, &mut out);
        out.into_iter().map(|s| s.score).collect()
    }

    #[test]
    fn preferred_terms_score_both_ways() {
        let plugin = InterPodAffinity::default();
        let mut nodes = three_nodes();
        place(&mut nodes, "node-1", pod("db").labels(&[("app", "db")]));
        place(
            &mut nodes,
            "node-3",
            pod("fan").affinity(
                json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": term("app", "web", "kubernetes.io/hostname")}]}}),
            ),
        );
        let snap = snapshot(nodes);
        let weighted = |kind: &str, w: i32| {
            json!({kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": w, "podAffinityTerm": term("app", "db", "zone")}]}})
        };
        // Towards the db's zone (a): node-1 and node-2.
        let p = pod("x").affinity(weighted("podAffinity", 10)).info();
        assert_eq!(scores(&plugin, &p, &snap), [100, 100, 0]);
        let p = pod("x").affinity(weighted("podAntiAffinity", 10)).info();
        assert_eq!(scores(&plugin, &p, &snap), [0, 0, 100]);
        // The placed "fan" prefers pods labelled app=web next to it.
        let web = pod("w").labels(&[("app", "web")]).info();
        assert_eq!(scores(&plugin, &web, &snap), [0, 0, 100]);
        // Existing required affinity counts with hardPodAffinityWeight.
        let mut nodes = three_nodes();
        place(
            &mut nodes,
            "node-2",
            pod("needy").affinity(affinity("app", "web", "kubernetes.io/hostname")),
        );
        let snap = snapshot(nodes);
        assert_eq!(scores(&plugin, &web, &snap), [0, 100, 0]);
        let off = InterPodAffinity::new(0);
        assert_eq!(scores(&off, &web, &snap), [0, 0, 0]);
    }

    #[test]
    fn counts_kept_across_cycles_follow_changed_nodes() {
        let plugin = InterPodAffinity::default();
        let web = || {
            pod("w")
                .labels(&[("app", "web")])
                .affinity(anti("app", "web", "zone"))
        };
        let mut snap = snapshot(three_nodes());
        let p = web().info();
        // Every cycle's state stays alive, as if held by binding: the cache must not
        // change the counts those states read.
        let held: std::cell::RefCell<Vec<(CycleState, Snapshot, Vec<String>)>> =
            std::cell::RefCell::new(Vec::new());
        let verdicts = |plugin: &InterPodAffinity, snap: &Snapshot| {
            let (state, statuses) = filter_all(plugin, &p, snap);
            for (old_state, old_snap, old_verdict) in held.borrow().iter() {
                let again: Vec<Status> = old_snap
                    .nodes
                    .iter()
                    .map(|n| plugin.filter(old_state, &p, n))
                    .collect();
                assert_eq!(&feasible(old_snap, &again), old_verdict);
            }
            let verdict = feasible(snap, &statuses);
            held.borrow_mut()
                .push((state, snap.clone(), verdict.clone()));
            verdict
        };
        assert_eq!(verdicts(&plugin, &snap), ["node-1", "node-2", "node-3"]);
        // Only node-3 changes (a new Arc); the others are shared with the last cycle.
        let mut n3 = NodeInfo::clone(&snap.nodes[2]);
        n3.add_pod(std::sync::Arc::new(web().node("node-3").info()));
        snap.nodes[2] = std::sync::Arc::new(n3);
        snap.refresh_lists();
        assert_eq!(verdicts(&plugin, &snap), ["node-1", "node-2"]);
        assert_eq!(
            verdicts(&InterPodAffinity::default(), &snap),
            ["node-1", "node-2"]
        );
        // node-3 leaves the cluster.
        snap.nodes.truncate(2);
        snap.index.remove("node-3");
        snap.refresh_lists();
        assert_eq!(verdicts(&plugin, &snap), ["node-1", "node-2"]);
        // A pod in zone a, then a relabelled node-1 (zone b): zone a holds nothing.
        let mut n2 = NodeInfo::clone(&snap.nodes[1]);
        n2.add_pod(std::sync::Arc::new(
            pod("x").labels(&[("app", "web")]).node("node-2").info(),
        ));
        snap.nodes[1] = std::sync::Arc::new(n2);
        snap.refresh_lists();
        assert!(verdicts(&plugin, &snap).is_empty());
        let mut n2 = NodeInfo::clone(&snap.nodes[1]);
        n2.labels.insert("zone".into(), "b".into());
        snap.nodes[1] = std::sync::Arc::new(n2);
        assert_eq!(verdicts(&plugin, &snap), ["node-1"]);
        assert_eq!(verdicts(&InterPodAffinity::default(), &snap), ["node-1"]);
    }

    #[test]
    fn scores_kept_across_cycles_follow_changed_nodes() {
        let plugin = InterPodAffinity::default();
        let p = pod("x")
            .labels(&[("app", "web")])
            .affinity(
                json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": term("app", "db", "zone")}]}}),
            )
            .info();
        let mut snap = snapshot(three_nodes());
        let fan = pod("fan").affinity(
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 30, "podAffinityTerm": term("app", "web", "kubernetes.io/hostname")}]}}),
        );
        let changes: [(usize, PodBuilder); 3] = [
            (0, pod("db").labels(&[("app", "db")])),
            (2, fan),
            (1, pod("db2").labels(&[("app", "db")])),
        ];
        for (at, added) in changes {
            let mut n = NodeInfo::clone(&snap.nodes[at]);
            let name = n.name.clone();
            n.add_pod(std::sync::Arc::new(added.node(&name).info()));
            snap.nodes[at] = std::sync::Arc::new(n);
            snap.refresh_lists();
            assert_eq!(
                scores(&plugin, &p, &snap),
                scores(&InterPodAffinity::default(), &p, &snap)
            );
        }
        // Zone a (node-1, node-2) holds the dbs; node-3 has the fan that avoids web pods.
        assert_eq!(scores(&plugin, &p, &snap), [100, 100, 0]);
    }

    /// Not a timing assertion: shows the PreFilter+Filter cost at 5,000 nodes with 5,000
    /// anti-affinity pods (`cargo test --release -- --nocapture anti_affinity_at_scale`).
    #[test]
    fn anti_affinity_at_scale() {
        let plugin = InterPodAffinity::default();
        let mut nodes: Vec<NodeInfo> = (0..5000)
            .map(|i| {
                let zone = format!("zone-{}", i % 10);
                node(&format!("n{i}"), &[("topology.kubernetes.io/zone", &zone)])
            })
            .collect();
        for (i, n) in nodes.iter_mut().enumerate().take(4999) {
            let p = pod(&format!("a{i}"))
                .labels(&[("app", "anti")])
                .affinity(anti("app", "anti", "kubernetes.io/hostname"))
                .node(&n.name.clone())
                .info();
            n.add_pod(std::sync::Arc::new(p));
        }
        let snap = snapshot(nodes);
        let p = pod("last")
            .labels(&[("app", "anti")])
            .affinity(anti("app", "anti", "kubernetes.io/hostname"))
            .info();
        let (state, statuses) = filter_all(&plugin, &p, &snap);
        assert_eq!(feasible(&snap, &statuses), ["n4999"]);
        let rounds = 50;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            InterPodAffinity::default().pre_filter(&mut CycleState::default(), &p, &snap);
        }
        let cold = start.elapsed() / rounds;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            plugin.pre_filter(&mut CycleState::default(), &p, &snap);
        }
        let pre = start.elapsed() / rounds;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for n in &snap.nodes {
                std::hint::black_box(plugin.filter(&state, &p, n));
            }
        }
        eprintln!(
            "anti-affinity over 5000 nodes: PreFilter cold {cold:?}, cached {pre:?}; Filter on every node {:?} per pod",
            start.elapsed() / rounds
        );
    }
}
