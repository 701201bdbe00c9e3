//! One scheduling cycle (kube-scheduler's `schedulePod`): PreFilter, Filter over the
//! candidate nodes from a rotating offset until enough feasible ones are found, PostFilter
//! when none is, PreScore, Score (normalized and weighted), and the pick of the best node
//! with a random tie-break.
//!
//! Contract: [`Algorithm::schedule`] is pure over the [`Snapshot`] it is given (plugins
//! never call the API); the caller assumes the pod into its cache and runs Reserve and the
//! binding. The only state an [`Algorithm`] keeps between cycles is the rotating start
//! offset and the tie-break generator, so scoring a fraction of a large cluster still
//! visits every node over successive pods.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::framework::{Code, CycleState, NodeScore, NodeStatuses, PostFilterResult, Status};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};
use crate::{Config, Framework};

/// kube-scheduler never scores fewer feasible nodes than this (unless there are fewer).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// How many feasible nodes a cycle looks for among `num_all_nodes` (kube-scheduler's
/// `numFeasibleNodesToFind`).
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let percentage = match percentage {
        Some(p) if p > 0 => p as usize,
        _ => {
            (50usize.saturating_sub(num_all_nodes / 125)).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
        }
    };
    if percentage >= 100 {
        return num_all_nodes;
    }
    (num_all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Pods nominated to nodes by preemption that have not been bound yet; a cycle treats
/// their requests as taken for pods of lower or equal priority (kube's `addNominatedPods`).
#[derive(Default, Debug, Clone)]
pub struct Nominated {
    by_node: HashMap<String, Vec<Arc<PodInfo>>>,
    node_of: HashMap<String, String>,
}

impl Nominated {
    pub fn add(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove(&pod.uid);
        self.node_of.insert(pod.uid.clone(), node.to_string());
        self.by_node.entry(node.to_string()).or_default().push(pod);
    }

    pub fn remove(&mut self, uid: &str) {
        let Some(node) = self.node_of.remove(uid) else {
            return;
        };
        if let Some(v) = self.by_node.get_mut(&node) {
            v.retain(|p| p.uid != uid);
            if v.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.node_of.get(uid).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    pub fn len(&self) -> usize {
        self.node_of.len()
    }

    /// The pods nominated to `node` that count against `pod`.
    fn counting_against<'a>(
        &'a self,
        node: &str,
        pod: &'a PodInfo,
    ) -> impl Iterator<Item = &'a Arc<PodInfo>> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(move |p| p.uid != pod.uid && p.priority >= pod.priority)
    }
}

/// Why no node was chosen; its `Display` is kube-scheduler's message
/// (`0/3 nodes are available: 2 Insufficient cpu. preemption: …`).
#[derive(Debug, Clone)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Set when a PreFilter rejected the pod for every node.
    pub pre_filter_msg: Option<String>,
    pub statuses: NodeStatuses,
    /// The plugins that rejected the pod: the queue retries it on their events.
    pub rejecting_plugins: Vec<&'static str>,
    pub post_filter: Option<PostFilterResult>,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_all_nodes == 0 {
            // kube's ErrNoNodesAvailable.
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(msg) = &self.pre_filter_msg {
            write!(f, " {msg}.")?;
        } else {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for s in self.statuses.values() {
                for r in &s.reasons {
                    *counts.entry(r.as_ref()).or_default() += 1;
                }
            }
            // kube sorts the "count reason" strings as strings, so "10 x" sorts before "2 y".
            let mut lines: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
            lines.sort();
            if !lines.is_empty() {
                write!(f, " {}.", lines.join(", "))?;
            }
        }
        if let Some(msg) = self
            .post_filter
            .as_ref()
            .and_then(|p| p.status.reasons.first())
            .filter(|m| !m.is_empty())
        {
            let dot = if msg.ends_with('.') { "" } else { "." };
            write!(f, " {msg}{dot}")?;
        }
        Ok(())
    }
}

/// A successful cycle.
pub struct ScheduleResult {
    /// Index of the chosen node in the snapshot.
    pub node: usize,
    pub node_name: String,
    pub state: CycleState,
    pub evaluated_nodes: usize,
    pub feasible_nodes: usize,
}

/// The outcome of one cycle.
pub enum Outcome {
    Scheduled(ScheduleResult),
    Unschedulable(Box<FitError>),
    /// A plugin failed (not the pod's fault): retried with backoff.
    Error(Status),
}

/// The state kept between cycles: the rotating offset and the tie-break generator.
pub struct Algorithm {
    next_start: usize,
    rng: u64,
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::new(0x9e37_79b9_7f4a_7c15)
    }
}

impl Algorithm {
    pub fn new(seed: u64) -> Algorithm {
        Algorithm {
            next_start: 0,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: a few cycles, good enough to break ties fairly.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Runs one cycle for `pod` against `snapshot`.
    pub fn schedule(
        &mut self,
        fw: &Framework,
        config: &Config,
        snapshot: &Snapshot,
        nominated: &Nominated,
        pod: &PodInfo,
    ) -> Outcome {
        let num_all = snapshot.nodes.len();
        let mut state = CycleState::default();
        state.num_all_nodes = num_all;
        if num_all == 0 {
            return Outcome::Unschedulable(Box::new(FitError {
                num_all_nodes: 0,
                pre_filter_msg: None,
                statuses: NodeStatuses::new(),
                rejecting_plugins: Vec::new(),
                post_filter: None,
            }));
        }
        // PreFilter: any rejection rejects the pod on every node.
        let mut narrowed: Option<Vec<String>> = None;
        let mut narrowing: Vec<&'static str> = Vec::new();
        for p in &fw.pre_filter {
            let (status, nodes) = p.pre_filter(&mut state, pod, snapshot);
            match status.code {
                Code::Success => {}
                Code::Skip => state.skip_filter.push(p.name()),
                Code::Error => return Outcome::Error(status.with_plugin(p.name())),
                _ => {
                    let msg = status.reasons.join(", ");
                    let (statuses, rejecting) = (NodeStatuses::new(), vec![p.name()]);
                    return self.post_filter(
                        fw,
                        &state,
                        snapshot,
                        pod,
                        Some(msg),
                        statuses,
                        rejecting,
                    );
                }
            }
            if let Some(nodes) = nodes {
                narrowing.push(p.name());
                narrowed = Some(match narrowed {
                    None => nodes,
                    Some(prev) => prev.into_iter().filter(|n| nodes.contains(n)).collect(),
                });
            }
        }
        let filters: Vec<_> = fw
            .filter
            .iter()
            .filter(|f| !state.skip_filter.contains(&f.name()))
            .collect();
        // Rejections by node index: turned into a map by name only when nothing fits
        // (most cycles find enough nodes and never need it).
        let mut rejected: Vec<(usize, Status)> = Vec::new();
        let mut rejecting: Vec<&'static str> = Vec::new();

        // A pod nominated by an earlier preemption tries its nominated node first.
        let nominated_node = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(i) = nominated_node.and_then(|n| snapshot.index.get(n)).copied() {
            let node = &snapshot.nodes[i];
            let st = self.run_filters(&filters, fw, &state, nominated, pod, node);
            if st.is_success() {
                self.next_start = (self.next_start + 1) % num_all;
                return Outcome::Scheduled(ScheduleResult {
                    node: i,
                    node_name: node.name.clone(),
                    state,
                    evaluated_nodes: 1,
                    feasible_nodes: 1,
                });
            }
        }

        let candidates: Vec<usize>;
        let (count, pick): (usize, &dyn Fn(usize) -> usize) = match &narrowed {
            None => (num_all, &|i| i),
            Some(names) => {
                candidates = names
                    .iter()
                    .filter_map(|n| snapshot.index.get(n).copied())
                    .collect();
                (candidates.len(), &|i| candidates[i])
            }
        };
        let want = num_feasible_nodes_to_find(config.percentage_of_nodes_to_score, count);
        let mut feasible: Vec<usize> = Vec::with_capacity(want.min(count));
        let mut processed = 0;
        if count > 0 {
            let start = self.next_start % count;
            for k in 0..count {
                if feasible.len() >= want {
                    break;
                }
                let i = pick((start + k) % count);
                processed += 1;
                let node = &snapshot.nodes[i];
                let st = self.run_filters(&filters, fw, &state, nominated, pod, node);
                match st.code {
                    Code::Success => feasible.push(i),
                    Code::Error => return Outcome::Error(st),
                    _ => {
                        if !rejecting.contains(&st.plugin) {
                            rejecting.push(st.plugin);
                        }
                        rejected.push((i, st));
                    }
                }
            }
        }
        self.next_start = (self.next_start + processed) % num_all;
        if feasible.is_empty() {
            let mut statuses: NodeStatuses = rejected
                .into_iter()
                .map(|(i, st)| (snapshot.nodes[i].name.clone(), st))
                .collect();
            if narrowed.is_some() {
                // Nodes a PreFilter ruled out count as rejected by it, as kube records them.
                let reason = format!("node(s) didn't satisfy plugin(s) [{}]", narrowing.join(" "));
                rejecting.extend(narrowing.iter().copied());
                for n in &snapshot.nodes {
                    if !statuses.contains_key(&n.name)
                        && !narrowed.as_ref().is_some_and(|v| v.contains(&n.name))
                    {
                        statuses.insert(n.name.clone(), Status::unresolvable(reason.clone()));
                    }
                }
            }
            return self.post_filter(fw, &state, snapshot, pod, None, statuses, rejecting);
        }
        let evaluated = processed;
        if feasible.len() == 1 {
            let i = feasible[0];
            return Outcome::Scheduled(ScheduleResult {
                node: i,
                node_name: snapshot.nodes[i].name.clone(),
                state,
                evaluated_nodes: evaluated,
                feasible_nodes: 1,
            });
        }
        let totals = match self.score(fw, &mut state, snapshot, pod, &feasible) {
            Ok(t) => t,
            Err(st) => return Outcome::Error(st),
        };
        let best = self.select_host(&totals);
        let i = feasible[best];
        Outcome::Scheduled(ScheduleResult {
            node: i,
            node_name: snapshot.nodes[i].name.clone(),
            state,
            evaluated_nodes: evaluated,
            feasible_nodes: feasible.len(),
        })
    }

    fn run_filters(
        &self,
        filters: &[&Arc<dyn crate::framework::Filter>],
        fw: &Framework,
        state: &CycleState,
        nominated: &Nominated,
        pod: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if !nominated.is_empty() {
            let mut others = nominated.counting_against(&node.name, pod).peekable();
            if others.peek().is_some() {
                // Run once as if the nominated pods already ran here (their requests are
                // promised), then once without them, as kube does: both must pass.
                let mut with = node.clone();
                let mut st = state.clone();
                for o in others {
                    with.add_pod(o.clone());
                    for p in &fw.pre_filter {
                        let s = p.add_pod(&mut st, pod, o, &with);
                        if !s.is_success() {
                            return s.with_plugin(p.name());
                        }
                    }
                }
                let s = filter_node(filters, &st, pod, &with);
                if !s.is_success() {
                    return s;
                }
            }
        }
        filter_node(filters, state, pod, node)
    }

    fn score(
        &mut self,
        fw: &Framework,
        state: &mut CycleState,
        snapshot: &Snapshot,
        pod: &PodInfo,
        feasible: &[usize],
    ) -> Result<Vec<i64>, Status> {
        let nodes: Vec<&NodeInfo> = feasible.iter().map(|&i| &*snapshot.nodes[i]).collect();
        for p in &fw.pre_score {
            let st = p.pre_score(state, pod, &nodes);
            match st.code {
                Code::Success => {}
                Code::Skip => state.skip_score.push(p.name()),
                _ => return Err(st.with_plugin(p.name())),
            }
        }
        let mut totals = vec![0i64; nodes.len()];
        let mut scores: Vec<NodeScore> = Vec::with_capacity(nodes.len());
        for (p, weight) in &fw.score {
            if state.skip_score.contains(&p.name()) {
                continue;
            }
            scores.clear();
            for (k, n) in nodes.iter().enumerate() {
                let s = p
                    .score(state, pod, n)
                    .map_err(|st| st.with_plugin(p.name()))?;
                scores.push(NodeScore { node: k, score: s });
            }
            let st = p.normalize(state, pod, &mut scores);
            if !st.is_success() {
                return Err(st.with_plugin(p.name()));
            }
            for s in &scores {
                totals[s.node] += s.score * weight;
            }
        }
        Ok(totals)
    }

    /// The index of the highest total; ties broken uniformly at random by reservoir
    /// sampling, so equal nodes share the load.
    fn select_host(&mut self, totals: &[i64]) -> usize {
        let mut best = 0;
        let mut ties = 1u64;
        for (i, &t) in totals.iter().enumerate().skip(1) {
            if t > totals[best] {
                best = i;
                ties = 1;
            } else if t == totals[best] {
                ties += 1;
                if self.next_random().is_multiple_of(ties) {
                    best = i;
                }
            }
        }
        best
    }

    #[allow(clippy::too_many_arguments)]
    fn post_filter(
        &mut self,
        fw: &Framework,
        state: &CycleState,
        snapshot: &Snapshot,
        pod: &PodInfo,
        pre_filter_msg: Option<String>,
        statuses: NodeStatuses,
        rejecting_plugins: Vec<&'static str>,
    ) -> Outcome {
        let mut err = FitError {
            num_all_nodes: snapshot.nodes.len(),
            pre_filter_msg,
            statuses,
            rejecting_plugins,
            post_filter: None,
        };
        for p in &fw.post_filter {
            let r = p.post_filter(state, pod, snapshot, fw, &err.statuses);
            let done = r.status.is_success();
            err.post_filter = Some(r);
            if done {
                break;
            }
        }
        Outcome::Unschedulable(Box::new(err))
    }
}

fn filter_node(
    filters: &[&Arc<dyn crate::framework::Filter>],
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Status {
    for f in filters {
        let st = f.filter(state, pod, node);
        if !st.is_success() {
            return st.with_plugin(f.name());
        }
    }
    Status::success()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_nodes_follow_kube_rule() {
        assert_eq!(num_feasible_nodes_to_find(None, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(None, 100), 100);
        // 50 - 5000/125 = 10 %.
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        // 50 - 6000/125 = 2 % → floor of 5 %.
        assert_eq!(num_feasible_nodes_to_find(None, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(None, 150), 100);
        assert_eq!(num_feasible_nodes_to_find(Some(100), 5000), 5000);
        assert_eq!(num_feasible_nodes_to_find(Some(1), 5000), 100);
    }

    fn fit_error(reasons: &[(&str, &str)], post: Option<&str>) -> FitError {
        let mut statuses = NodeStatuses::new();
        for (node, r) in reasons {
            statuses.insert(node.to_string(), Status::unschedulable(r.to_string()));
        }
        FitError {
            num_all_nodes: reasons.len(),
            pre_filter_msg: None,
            statuses,
            rejecting_plugins: vec![],
            post_filter: post.map(|m| PostFilterResult {
                status: Status::unschedulable(m.to_string()),
                nominated_node: None,
                victims: vec![],
            }),
        }
    }

    #[test]
    fn message_matches_kube() {
        let e = fit_error(
            &[
                ("a", "Insufficient cpu"),
                (
                    "b",
                    "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
                ),
                ("c", "Insufficient cpu"),
            ],
            Some("preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."),
        );
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 \
             nodes are available: 3 No preemption victims found for incoming pod."
        );
        let e = fit_error(&[("a", "Insufficient cpu")], None);
        assert_eq!(
            e.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    #[test]
    fn counts_sort_as_strings() {
        let mut r = vec![("n0", "b")];
        let names: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
        for n in &names {
            r.push((n.as_str(), "z"));
        }
        let e = fit_error(&r, None);
        assert_eq!(e.to_string(), "0/11 nodes are available: 1 b, 10 z.");
        let mut r2 = vec![("x", "a"), ("y", "a")];
        for n in &names {
            r2.push((n.as_str(), "z"));
        }
        let e = fit_error(&r2, None);
        assert_eq!(e.to_string(), "0/12 nodes are available: 10 z, 2 a.");
    }

    #[test]
    fn select_host_breaks_ties_among_equals() {
        let mut a = Algorithm::new(7);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[a.select_host(&[5, 9, 9, 9])] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1] > 0 && seen[2] > 0 && seen[3] > 0);
    }

    mod cycle {
        use super::super::*;
        use crate::plugins::default_framework;
        use crate::plugins::testutil::*;

        fn snapshot(nodes: Vec<k8s_openapi::api::core::v1::Node>) -> Snapshot {
            Snapshot::from_nodes(nodes.into_iter().map(|n| node_info(n, vec![])).collect())
        }

        fn small(name: &str) -> k8s_openapi::api::core::v1::Node {
            node(name, &[("cpu", "1"), ("memory", "4Gi"), ("pods", "110")])
        }

        #[test]
        fn unschedulable_message_through_the_default_profile() {
            let snap = snapshot(vec![
                with_taint(
                    small("cp"),
                    "node-role.kubernetes.io/control-plane",
                    "",
                    "NoSchedule",
                ),
                small("a"),
                small("b"),
            ]);
            let config = Config::default();
            let fw = default_framework(&config);
            let pod = info(pod("big", &[("cpu", "2")]));
            let out =
                Algorithm::default().schedule(&fw, &config, &snap, &Nominated::default(), &pod);
            let Outcome::Unschedulable(e) = out else {
                panic!("expected unschedulable");
            };
            assert!(e.to_string().starts_with(
                "0/3 nodes are available: 1 node(s) had untolerated taint \
                 {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu."
            ));
            assert!(e.rejecting_plugins.contains(&"NodeResourcesFit"));
            assert!(e.rejecting_plugins.contains(&"TaintToleration"));
        }

        #[test]
        fn scores_a_rotating_window_of_feasible_nodes() {
            let snap = snapshot((0..300).map(|i| small(&format!("n{i}"))).collect());
            let config = Config::default();
            let fw = default_framework(&config);
            let mut algo = Algorithm::default();
            let pod = info(pod("p", &[("cpu", "100m")]));
            // 300 nodes: 50 - 300/125 = 48 %, so 144 feasible nodes are enough.
            let Outcome::Scheduled(r) =
                algo.schedule(&fw, &config, &snap, &Nominated::default(), &pod)
            else {
                panic!("expected scheduled");
            };
            assert_eq!((r.evaluated_nodes, r.feasible_nodes), (144, 144));
            assert_eq!(algo.next_start, 144);
        }

        #[test]
        fn simulate_places_in_order_and_respects_capacity() {
            let mut snap = snapshot(vec![small("a"), small("b")]);
            let config = Config::default();
            let fw = default_framework(&config);
            let pods: Vec<_> = (0..5)
                .map(|i| info(pod(&format!("p{i}"), &[("cpu", "500m")])))
                .collect();
            let out = crate::simulate(&fw, &config, &mut snap, &pods);
            assert_eq!(out.iter().filter(|o| o.is_some()).count(), 4);
            assert_eq!(out[4], None);
            assert_eq!(snap.get("a").unwrap().pods.len(), 2);
            assert_eq!(snap.get("b").unwrap().pods.len(), 2);
        }

        #[test]
        fn nominated_pods_hold_their_room_against_lower_priority() {
            let snap = snapshot(vec![small("a")]);
            let config = Config::default();
            let fw = default_framework(&config);
            let mut nominated = Nominated::default();
            let mut high = pod("high", &[("cpu", "800m")]);
            high.spec.as_mut().unwrap().priority = Some(100);
            nominated.add(info(high), "a");
            let low = info(pod("low", &[("cpu", "500m")]));
            let out = Algorithm::default().schedule(&fw, &config, &snap, &nominated, &low);
            assert!(matches!(out, Outcome::Unschedulable(_)));
            let mut higher = pod("higher", &[("cpu", "500m")]);
            higher.spec.as_mut().unwrap().priority = Some(1000);
            let out = Algorithm::default().schedule(&fw, &config, &snap, &nominated, &info(higher));
            assert!(matches!(out, Outcome::Scheduled(_)));
        }
    }
}
