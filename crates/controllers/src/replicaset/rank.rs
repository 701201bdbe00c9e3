//! Which pods a scale-down deletes first, as kube's `ActivePodsWithRanks` orders them
//! (with its default features PodDeletionCost and LogarithmicScaleDown): unassigned
//! before assigned, Pending before Unknown before Running, not ready before ready, lower
//! `controller.kubernetes.io/pod-deletion-cost` first, pods on nodes crowded with the
//! owner's pods first, then the most recently ready, the most restarted and the newest.
//!
//! kube compares ready and creation times on a log2 scale of their age (so pods of
//! about the same age are equal) and breaks some ties by UID inside a comparison; here
//! every pod gets one sort key instead, so the order is total (Rust's sort demands it)
//! and the UID is the last tie-breaker.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::util::{is_ready, phase, pod_condition};

/// The annotation that lets users order a scale-down (lower cost goes first).
pub(crate) const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// One pod's place in the deletion order: smaller keys are deleted first.
type Key = (
    bool,
    u8,
    bool,
    i32,
    Reverse<usize>,
    i64,
    Reverse<i32>,
    i64,
    String,
);

/// The first `n` of `pods` to delete. `on_node` counts the active pods of the owner
/// (and of its siblings under the same controller) per node name.
pub(crate) fn pods_to_delete(
    pods: &[Arc<Pod>],
    on_node: &HashMap<String, usize>,
    n: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    let mut keyed: Vec<(Key, &Arc<Pod>)> = pods.iter().map(|p| (key(p, on_node, now), p)).collect();
    if n < keyed.len() {
        keyed.select_nth_unstable_by(n, |a, b| a.0.cmp(&b.0));
        keyed.truncate(n);
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, p)| p.clone()).collect()
}

fn key(pod: &Pod, on_node: &HashMap<String, usize>, now: Timestamp) -> Key {
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("");
    let phase_rank = match phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let ready = is_ready(pod);
    let ready_since = if ready {
        let t = pod_condition(pod, "Ready").and_then(|c| c.last_transition_time.as_ref());
        age_rank(t, now)
    } else {
        0
    };
    (
        !node.is_empty(),
        phase_rank,
        ready,
        deletion_cost(pod),
        Reverse(on_node.get(node).copied().unwrap_or(0)),
        ready_since,
        Reverse(max_restarts(pod)),
        age_rank(pod.metadata.creation_timestamp.as_ref(), now),
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// kube's logarithmic age bucket: floor(log2(age in ns)); an unknown time sorts first
/// (kube's `afterOrZero`), a time not in the past next.
fn age_rank(t: Option<&Time>, now: Timestamp) -> i64 {
    let Some(Time(t)) = t else { return -2 };
    let age = now.as_nanosecond() - t.as_nanosecond();
    if age <= 0 {
        return -1;
    }
    i64::from(age.ilog2())
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// The pod's deletion cost; 0 when unset or not a canonical int32 (no `+`, no leading
/// zeros), as kube reads it.
fn deletion_cost(pod: &Pod) -> i32 {
    let Some(v) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
    else {
        return 0;
    };
    let digits = v.strip_prefix('-').unwrap_or(v);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical || v == "-0" {
        return 0;
    }
    v.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: &str, phase: &str, ready_secs_ago: Option<i64>) -> Arc<Pod> {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(900_000).unwrap()));
        p.spec = Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..Default::default()
        });
        let conditions = ready_secs_ago.map(|ago| {
            vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(
                    Timestamp::from_second(now.as_second() - ago).unwrap(),
                )),
                ..Default::default()
            }]
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions,
            ..Default::default()
        });
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).unwrap()
    }

    #[test]
    fn unassigned_then_pending_then_not_ready_then_most_recently_ready() {
        let pods = vec![
            pod("ready-old", "n1", "Running", Some(10_000)),
            pod("ready-new", "n1", "Running", Some(5)),
            pod("unready", "n1", "Running", None),
            pod("unknown", "n1", "Unknown", None),
            pod("pending", "n1", "Pending", None),
            pod("unassigned", "", "Pending", None),
        ];
        let all = pods_to_delete(&pods, &HashMap::new(), 6, now());
        assert_eq!(
            names(&all),
            [
                "unassigned",
                "pending",
                "unknown",
                "unready",
                "ready-new",
                "ready-old"
            ]
        );
        let two = pods_to_delete(&pods, &HashMap::new(), 2, now());
        assert_eq!(names(&two), ["unassigned", "pending"]);
    }

    #[test]
    fn crowded_nodes_restarts_and_deletion_cost_order_ready_pods() {
        let a = pod("a", "crowded", "Running", Some(100));
        let b = pod("b", "alone", "Running", Some(100));
        let on_node = HashMap::from([("crowded".to_string(), 3), ("alone".to_string(), 1)]);
        let order = pods_to_delete(&[b.clone(), a.clone()], &on_node, 1, now());
        assert_eq!(names(&order), ["a"]);

        let mut restarted = (*b).clone();
        restarted.metadata.name = Some("restarted".into());
        restarted.metadata.uid = Some("uid-z".into());
        restarted.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            restart_count: 4,
            ..Default::default()
        }]);
        let order = pods_to_delete(&[b.clone(), Arc::new(restarted)], &HashMap::new(), 1, now());
        assert_eq!(names(&order), ["restarted"]);

        let mut costly = (*a).clone();
        costly.metadata.annotations =
            Some([(POD_DELETION_COST.to_string(), "100".to_string())].into());
        let order = pods_to_delete(&[Arc::new(costly), b.clone()], &on_node, 1, now());
        assert_eq!(names(&order), ["b"]);
    }

    #[test]
    fn deletion_cost_must_be_a_canonical_int32() {
        let with = |v: &str| {
            let mut p = Pod::default();
            p.metadata.annotations = Some([(POD_DELETION_COST.to_string(), v.to_string())].into());
            deletion_cost(&p)
        };
        assert_eq!(with("-5"), -5);
        assert_eq!(with("7"), 7);
        assert_eq!(with("0"), 0);
        assert_eq!(with("+7"), 0);
        assert_eq!(with("007"), 0);
        assert_eq!(with("99999999999"), 0);
        assert_eq!(with("x"), 0);
    }

    #[test]
    fn ages_fall_in_log2_buckets() {
        let now = now();
        let at = |secs_ago: i64| Time(Timestamp::from_second(now.as_second() - secs_ago).unwrap());
        assert_eq!(age_rank(None, now), -2);
        assert_eq!(age_rank(Some(&at(-5)), now), -1);
        assert!(age_rank(Some(&at(1)), now) < age_rank(Some(&at(100)), now));
        // 1e9 ns is between 2^29 and 2^30.
        assert_eq!(age_rank(Some(&at(1)), now), 29);
    }
}
