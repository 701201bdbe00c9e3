//! DefaultPreemption (PostFilter): when a pod fits nowhere, find a node where evicting
//! lower-priority pods makes it fit, and pick the victims.
//!
//! Contract, as kube-scheduler's plugin and `preemption` package:
//! - A pod with `preemptionPolicy: Never`, or nominated to a node where a lower-priority
//!   pod is already terminating (its earlier preemption is still under way), does not
//!   preempt (unless that node is now unresolvable for it).
//! - Candidates are the nodes whose filter status is Unschedulable; UnschedulableAndUnresolvable
//!   ones (and nodes missing from `statuses`) are "Preemption is not helpful for
//!   scheduling". On each candidate, on a copy of the node and of the cycle state, every
//!   lower-priority pod is removed (PreFilter `remove_pod` keeps the plugins' counts
//!   right); if the pod then passes every Filter, victims are reprieved one by one, highest
//!   priority first and those whose eviction would break a PodDisruptionBudget before the
//!   others, as long as the pod still fits. Nodes are tried from an offset derived from the
//!   pod's uid until max(10 %, 100) candidates with at least one PDB-respecting one exist.
//! - The node is picked by: fewest PDB violations, lowest highest-victim priority,
//!   smallest priority sum, fewest victims, latest start among the highest-priority
//!   victims, then the first tried.
//! - Outcome: Success with the nominated node and its victims (highest priority first),
//!   which the caller deletes; or Unschedulable with `preemption: 0/N nodes are available:
//!   <count> <reason>, ….` (reasons sorted as kube sorts them), to be appended to the
//!   scheduling failure message.
//!
//! Not modelled: pods nominated to a node (kube's "with nominated pods" filter pass) and
//! clearing lower-priority nominations on the chosen node; the caller owns nominations.

use std::collections::HashMap;
use std::sync::Arc;

use crate::framework::{
    ClusterEvent, Code, CycleState, NodeStatuses, Plugin, PostFilter, PostFilterResult, Status,
};
use crate::nodeinfo::{NodeInfo, PdbInfo, PodInfo, Snapshot};
use crate::Framework;

pub const NAME: &str = "DefaultPreemption";

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// kube's `minCandidateNodesPercentage` and `minCandidateNodesAbsolute`.
#[derive(Debug, Clone)]
pub struct DefaultPreemption {
    pub min_candidate_nodes_percentage: usize,
    pub min_candidate_nodes_absolute: usize,
}

impl Default for DefaultPreemption {
    fn default() -> Self {
        DefaultPreemption {
            min_candidate_nodes_percentage: 10,
            min_candidate_nodes_absolute: 100,
        }
    }
}

/// A node where preemption makes the pod fit, with the pods to evict.
#[derive(Debug, Clone)]
struct Candidate {
    node: String,
    /// Highest priority (then earliest start) first.
    victims: Vec<Arc<PodInfo>>,
    pdb_violations: usize,
}

/// Runs the profile's Filter plugins (those PreFilter did not skip) on one node; the first
/// rejection wins, as in kube.
pub fn run_filters(
    framework: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Status {
    for f in &framework.filter {
        if state.skip_filter.contains(&f.name()) {
            continue;
        }
        let s = f.filter(state, pod, node);
        if !s.is_success() {
            let name = f.name();
            return if s.plugin.is_empty() {
                s.with_plugin(name)
            } else {
                s
            };
        }
    }
    Status::success()
}

/// Removes (`add == false`) or adds a pod on the node copy and tells every PreFilter
/// plugin that did not skip.
fn simulate(
    framework: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    other: &Arc<PodInfo>,
    node: &mut NodeInfo,
    add: bool,
) -> Result<(), Status> {
    if add {
        node.add_pod(other.clone());
    } else {
        node.remove_pod(&other.uid);
    }
    for p in &framework.pre_filter {
        if state.skip_filter.contains(&p.name()) {
            continue;
        }
        let s = if add {
            p.add_pod(state, pod, other, node)
        } else {
            p.remove_pod(state, pod, other, node)
        };
        if !s.is_success() {
            return Err(Status::error(format!(
                "preemption simulation in {}: {}",
                p.name(),
                s.reasons.join(", ")
            )));
        }
    }
    Ok(())
}

fn start_nanos(p: &PodInfo, now: i128) -> i128 {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(now, |t| t.0.as_nanosecond())
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// kube's `MoreImportantPod`: higher priority, then earlier start, comes first.
fn sort_by_importance(pods: &mut [Arc<PodInfo>], now: i128) {
    pods.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| start_nanos(a, now).cmp(&start_nanos(b, now)))
    });
}

/// Splits victims (in importance order) into those whose eviction breaks a budget and the
/// rest, spending each budget's allowance as it goes.
fn split_by_pdb(
    victims: Vec<Arc<PodInfo>>,
    pdbs: &[PdbInfo],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i64> = pdbs
        .iter()
        .map(|p| i64::from(p.disruptions_allowed))
        .collect();
    let (mut violating, mut other) = (Vec::new(), Vec::new());
    for v in victims {
        let mut violated = false;
        // A pod without labels matches no budget.
        if !v.labels.is_empty() {
            for (pdb, allowed) in pdbs.iter().zip(&mut allowed) {
                if pdb.namespace != v.namespace
                    || pdb.selector.is_empty()
                    || !pdb.selector.matches(&v.labels)
                    || pdb.disrupted_pods.contains(&v.name)
                {
                    continue;
                }
                *allowed -= 1;
                if *allowed < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(v);
        } else {
            other.push(v);
        }
    }
    (violating, other)
}

/// Which lower-priority pods on `node` must go for `pod` to fit there, with how many of
/// them break a budget; Err carries the node's status when preemption cannot help there.
fn select_victims(
    framework: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    node: &mut NodeInfo,
    pdbs: &[PdbInfo],
    now: i128,
) -> Result<(Vec<Arc<PodInfo>>, usize), Status> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS).with_plugin(NAME));
    }
    for v in &potential {
        simulate(framework, state, pod, v, node, false)?;
    }
    // Even with every lower-priority pod gone the pod does not fit: not this node.
    let fits = run_filters(framework, state, pod, node);
    if !fits.is_success() {
        return Err(fits);
    }
    sort_by_importance(&mut potential, now);
    let (violating, other) = split_by_pdb(potential, pdbs);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (v, breaks_budget) in violating
        .into_iter()
        .map(|v| (v, true))
        .chain(other.into_iter().map(|v| (v, false)))
    {
        simulate(framework, state, pod, &v, node, true)?;
        if !run_filters(framework, state, pod, node).is_success() {
            simulate(framework, state, pod, &v, node, false)?;
            victims.push(v);
            violations += usize::from(breaks_budget);
        }
    }
    sort_by_importance(&mut victims, now);
    Ok((victims, violations))
}

/// kube's `pickOneNodeForPreemption`: each criterion keeps the best-scoring candidates;
/// the first criterion that leaves one decides.
fn pick(candidates: &[Candidate], now: i128) -> usize {
    type Criterion = fn(&Candidate, i128) -> i128;
    let criteria: [Criterion; 5] = [
        |c, _| -(c.pdb_violations as i128),
        |c, _| -i128::from(c.victims.first().map_or(0, |v| v.priority)),
        |c, _| {
            // Shifted so that negative priorities still add up to more with more pods.
            -c.victims
                .iter()
                .map(|v| i128::from(v.priority) + i128::from(i32::MAX) + 1)
                .sum::<i128>()
        },
        |c, _| -(c.victims.len() as i128),
        |c, now| {
            // The earliest start among the highest-priority victims; later is better.
            let top = c.victims.first().map_or(0, |v| v.priority);
            c.victims
                .iter()
                .filter(|v| v.priority == top)
                .map(|v| start_nanos(v, now))
                .min()
                .unwrap_or(i128::MIN)
        },
    ];
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    for f in criteria {
        let best = left
            .iter()
            .map(|&i| f(&candidates[i], now))
            .max()
            .unwrap_or(0);
        left.retain(|&i| f(&candidates[i], now) == best);
        if left.len() == 1 {
            break;
        }
    }
    left.first().copied().unwrap_or(0)
}

/// Why the pod may not preempt, as kube words it.
fn ineligible(pod: &PodInfo, snapshot: &Snapshot, statuses: &NodeStatuses) -> Option<&'static str> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())?;
    if statuses
        .get(nominated)
        .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable)
    {
        return None;
    }
    let node = snapshot.get(nominated)?;
    let terminating = node
        .pods
        .iter()
        .any(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some());
    terminating.then_some("not eligible due to a terminating pod on the nominated node.")
}

/// kube's FitError text: `0/N nodes are available: 2 reason-a, 1 reason-b.`
fn fit_error(all_nodes: usize, statuses: &HashMap<&str, Status>) -> String {
    let mut histogram: HashMap<&str, usize> = HashMap::new();
    for s in statuses.values() {
        for r in &s.reasons {
            *histogram.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut reasons: Vec<String> = histogram
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    reasons.sort();
    let mut msg = format!("0/{all_nodes} nodes are available:");
    if !reasons.is_empty() {
        msg.push(' ');
        msg.push_str(&reasons.join(", "));
        msg.push('.');
    }
    msg
}

fn failed(status: Status) -> PostFilterResult {
    PostFilterResult {
        status: status.with_plugin(NAME),
        nominated_node: None,
        victims: Vec::new(),
    }
}

impl DefaultPreemption {
    fn candidates_wanted(&self, potential: usize) -> usize {
        (potential * self.min_candidate_nodes_percentage / 100)
            .max(self.min_candidate_nodes_absolute)
            .min(potential)
    }
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Preemption rejects nothing by itself, so no event needs to wake pods for it.
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        Vec::new()
    }
}

impl PostFilter for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        framework: &Framework,
        statuses: &NodeStatuses,
    ) -> PostFilterResult {
        if let Some(why) = ineligible(pod, snapshot, statuses) {
            return failed(Status::unschedulable(format!("preemption: {why}")));
        }
        if snapshot.nodes.is_empty() {
            return failed(Status::error("preemption: no nodes available"));
        }
        let mut node_statuses: HashMap<&str, Status> = HashMap::new();
        let mut potential: Vec<&Arc<NodeInfo>> = Vec::new();
        for n in &snapshot.nodes {
            match statuses.get(&n.name) {
                Some(s) if s.code != Code::UnschedulableAndUnresolvable => potential.push(n),
                _ => {
                    node_statuses.insert(&n.name, Status::unresolvable(NOT_HELPFUL));
                }
            }
        }
        let now = now_nanos();
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut errors = Vec::new();
        if !potential.is_empty() {
            let wanted = self.candidates_wanted(potential.len());
            // A per-pod offset spreads preemptions over the nodes, as kube's random one.
            let offset = pod.uid.bytes().fold(0usize, |h, b| {
                h.wrapping_mul(31).wrapping_add(usize::from(b))
            }) % potential.len();
            let mut non_violating = 0;
            for i in 0..potential.len() {
                let node = potential[(offset + i) % potential.len()];
                let mut state = state.clone();
                let mut copy = NodeInfo::clone(node);
                match select_victims(framework, &mut state, pod, &mut copy, &snapshot.pdbs, now) {
                    Ok((victims, pdb_violations)) if !victims.is_empty() => {
                        non_violating += usize::from(pdb_violations == 0);
                        candidates.push(Candidate {
                            node: node.name.clone(),
                            victims,
                            pdb_violations,
                        });
                        if non_violating > 0 && candidates.len() >= wanted {
                            break;
                        }
                    }
                    Ok(_) => {
                        let s = Status::error(format!(
                            "expected at least one victim pod on node {:?}",
                            node.name
                        ));
                        errors.push(s.reasons.join(", "));
                        node_statuses.insert(&node.name, s);
                    }
                    Err(s) => {
                        if s.code == Code::Error {
                            errors.push(s.reasons.join(", "));
                        }
                        node_statuses.insert(&node.name, s);
                    }
                }
            }
        }
        if candidates.is_empty() {
            if !errors.is_empty() {
                return failed(Status::error(format!("preemption: {}", errors.join("; "))));
            }
            let msg = fit_error(snapshot.nodes.len(), &node_statuses);
            return failed(Status::unschedulable(format!("preemption: {msg}")));
        }
        // PDB-respecting candidates first, as kube lists them.
        candidates.sort_by_key(|c| c.pdb_violations > 0);
        let best = candidates.swap_remove(pick(&candidates, now));
        PostFilterResult {
            status: Status::success().with_plugin(NAME),
            nominated_node: Some(best.node),
            victims: best
                .victims
                .iter()
                .map(|v| (v.namespace.clone(), v.name.clone(), v.uid.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::nodeinfo::PdbInfo;
    use crate::plugins::inter_pod_affinity::InterPodAffinity;
    use crate::testutil::{node, node_with_cpu, place, pod, run_cycle, snapshot, term, CpuFit};
    use skiff_api::selector::LabelSelector;

    fn framework() -> Framework {
        let ipa = Arc::new(InterPodAffinity::default());
        Framework {
            pre_filter: vec![ipa.clone()],
            filter: vec![Arc::new(CpuFit), ipa],
            ..Default::default()
        }
    }

    fn preempt(p: &PodInfo, snap: &Snapshot) -> PostFilterResult {
        let fw = framework();
        let (state, statuses) = run_cycle(&fw, p, snap);
        assert!(statuses.len() == snap.nodes.len(), "the pod fits somewhere");
        DefaultPreemption::default().post_filter(&state, p, snap, &fw, &statuses)
    }

    fn victims(r: &PostFilterResult) -> Vec<&str> {
        r.victims.iter().map(|(_, name, _)| name.as_str()).collect()
    }

    #[test]
    fn high_priority_pod_preempts_a_low_priority_one_on_a_full_node() {
        let mut nodes = vec![node("node-1", &[])];
        place(&mut nodes, "node-1", pod("low").cpu("4").priority(0));
        let snap = snapshot(nodes);
        let r = preempt(&pod("high").cpu("2").priority(1000).info(), &snap);
        assert!(r.status.is_success(), "{:?}", r.status);
        assert_eq!(r.nominated_node.as_deref(), Some("node-1"));
        assert_eq!(victims(&r), ["low"]);
        // An equal-priority pod evicts nothing.
        let r = preempt(&pod("peer").cpu("2").priority(0).info(), &snap);
        assert_eq!(r.status.code, Code::Unschedulable);
        assert_eq!(
            r.status.reasons,
            ["preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."]
        );
        assert_eq!(r.nominated_node, None);
    }

    #[test]
    fn victims_are_reprieved_highest_priority_first() {
        let mut nodes = vec![node("node-1", &[])];
        place(&mut nodes, "node-1", pod("small").cpu("1").priority(1));
        place(&mut nodes, "node-1", pod("big").cpu("3").priority(2));
        let snap = snapshot(nodes);
        // Needs 3 CPUs: "big" is tried first and must go; then "small" fits beside.
        let r = preempt(&pod("p").cpu("3").priority(10).info(), &snap);
        assert_eq!(victims(&r), ["big"]);
        // Needs 4: both go, listed highest priority first.
        let r = preempt(&pod("p").cpu("4").priority(10).info(), &snap);
        assert_eq!(victims(&r), ["big", "small"]);
    }

    #[test]
    fn node_choice_follows_kubes_order() {
        let mut nodes = vec![
            node("node-1", &[]),
            node("node-2", &[]),
            node("node-3", &[]),
        ];
        // node-1: two victims of priority 1 and 2; node-2: one of priority 1 but 4 CPUs;
        // node-3: two of priority 1.
        place(&mut nodes, "node-1", pod("a1").cpu("2").priority(1));
        place(&mut nodes, "node-1", pod("a2").cpu("2").priority(2));
        place(&mut nodes, "node-2", pod("b1").cpu("4").priority(1));
        place(&mut nodes, "node-3", pod("c1").cpu("2").priority(1));
        place(&mut nodes, "node-3", pod("c2").cpu("2").priority(1));
        let snap = snapshot(nodes.clone());
        // Lowest highest priority (1) ties node-2 and node-3; smallest sum picks node-2.
        let r = preempt(&pod("p").cpu("4").priority(10).info(), &snap);
        assert_eq!(r.nominated_node.as_deref(), Some("node-2"));
        assert_eq!(victims(&r), ["b1"]);
        // A budget protecting b1 (0 disruptions allowed) moves it to node-3.
        let mut snap = snapshot(nodes);
        snap.pdbs.push(PdbInfo {
            namespace: "default".into(),
            selector: LabelSelector::parse("app=b").expect("selector"),
            disruptions_allowed: 0,
            disrupted_pods: Default::default(),
        });
        let mut n2 = NodeInfo::clone(&snap.nodes[1]);
        n2.remove_pod("uid-b1");
        n2.add_pod(Arc::new(
            pod("b1")
                .cpu("4")
                .priority(1)
                .labels(&[("app", "b")])
                .node("node-2")
                .info(),
        ));
        snap.nodes[1] = Arc::new(n2);
        let r = preempt(&pod("p").cpu("4").priority(10).info(), &snap);
        assert_eq!(r.nominated_node.as_deref(), Some("node-3"));
        assert_eq!(victims(&r), ["c1", "c2"]);
    }

    #[test]
    fn later_started_victims_are_preferred_on_a_tie() {
        let mut nodes = vec![node("node-1", &[]), node("node-2", &[])];
        place(
            &mut nodes,
            "node-1",
            pod("old")
                .cpu("4")
                .priority(1)
                .start_time("2024-01-01T00:00:00Z"),
        );
        place(
            &mut nodes,
            "node-2",
            pod("young")
                .cpu("4")
                .priority(1)
                .start_time("2025-01-01T00:00:00Z"),
        );
        let r = preempt(&pod("p").cpu("4").priority(10).info(), &snapshot(nodes));
        assert_eq!(r.nominated_node.as_deref(), Some("node-2"));
    }

    #[test]
    fn message_when_preemption_cannot_help() {
        let mut nodes = vec![
            node_with_cpu("node-1", &[], "1"),
            node("node-2", &[]),
            node_with_cpu("node-3", &[], "2"),
        ];
        place(&mut nodes, "node-2", pod("vip").cpu("4").priority(100));
        place(&mut nodes, "node-3", pod("low").cpu("1").priority(0));
        let snap = snapshot(nodes);
        let p = pod("p").cpu("3").priority(10).info();
        let fw = framework();
        let (state, mut statuses) = run_cycle(&fw, &p, &snap);
        // As if node-1 had an untolerated taint.
        statuses.insert(
            "node-1".into(),
            Status::unresolvable("node(s) had untolerated taint"),
        );
        let r = DefaultPreemption::default().post_filter(&state, &p, &snap, &fw, &statuses);
        assert_eq!(r.status.code, Code::Unschedulable);
        assert_eq!(
            r.status.reasons,
            ["preemption: 0/3 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."]
        );
    }

    #[test]
    fn preemption_policy_never_and_terminating_victims_hold_back() {
        let mut nodes = vec![node("node-1", &[])];
        place(&mut nodes, "node-1", pod("low").cpu("4").priority(0));
        let snap = snapshot(nodes.clone());
        let never = pod("p")
            .cpu("2")
            .priority(10)
            .set("/spec/preemptionPolicy", json!("Never"))
            .info();
        let r = preempt(&never, &snap);
        assert_eq!(
            r.status.reasons,
            ["preemption: not eligible due to preemptionPolicy=Never."]
        );
        let mut nodes = vec![node("node-1", &[])];
        place(
            &mut nodes,
            "node-1",
            pod("low")
                .cpu("4")
                .priority(0)
                .set("/metadata/deletionTimestamp", json!("2025-01-01T00:00:00Z")),
        );
        let nominated = pod("p")
            .cpu("2")
            .priority(10)
            .set("/status/nominatedNodeName", json!("node-1"))
            .info();
        let r = preempt(&nominated, &snapshot(nodes));
        assert_eq!(
            r.status.reasons,
            ["preemption: not eligible due to a terminating pod on the nominated node."]
        );
    }

    #[test]
    fn evicting_pods_that_skew_the_spread_makes_room() {
        use crate::plugins::pod_topology_spread::{PodTopologySpread, LABEL_ZONE};
        let spread = Arc::new(PodTopologySpread::default());
        let fw = Framework {
            pre_filter: vec![spread.clone()],
            filter: vec![Arc::new(CpuFit), spread],
            ..Default::default()
        };
        let mut nodes = vec![
            node("a1", &[(LABEL_ZONE, "a")]),
            node("b1", &[(LABEL_ZONE, "b")]),
        ];
        for i in 0..2 {
            place(
                &mut nodes,
                "a1",
                pod(&format!("web-{i}"))
                    .labels(&[("app", "web")])
                    .priority(i),
            );
        }
        place(&mut nodes, "b1", pod("vip").cpu("4").priority(100));
        let snap = snapshot(nodes);
        let p = pod("web-new")
            .labels(&[("app", "web")])
            .cpu("1")
            .priority(10)
            .spread(json!([{"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}}}]))
            .info();
        let (state, statuses) = run_cycle(&fw, &p, &snap);
        assert_eq!(statuses.len(), 2);
        let r = DefaultPreemption::default().post_filter(&state, &p, &snap, &fw, &statuses);
        assert_eq!(r.nominated_node.as_deref(), Some("a1"));
        // With one web pod back in zone a the skew would be 2: both go.
        assert_eq!(victims(&r), ["web-1", "web-0"]);
    }

    #[test]
    fn evicting_the_pod_its_anti_affinity_rejects_makes_room() {
        let mut nodes = vec![node("node-1", &[])];
        place(
            &mut nodes,
            "node-1",
            pod("web-old").labels(&[("app", "web")]).priority(0),
        );
        let snap = snapshot(nodes);
        let p = pod("web-new")
            .priority(10)
            .affinity(
                json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("app", "web", "kubernetes.io/hostname")]}}),
            )
            .info();
        let r = preempt(&p, &snap);
        assert!(r.status.is_success(), "{:?}", r.status);
        assert_eq!(victims(&r), ["web-old"]);
    }
}
