//! The taints the node lifecycle controller owns and what they mean for pods: which
//! taints a node's conditions call for (kube's NoSchedule and NoExecute tainting passes),
//! whether a toleration tolerates a taint, and when a pod on a NoExecute-tainted node is
//! to be evicted. Pure functions; the controllers apply them.

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub(crate) const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub(crate) const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub(crate) const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

pub(crate) const NO_SCHEDULE: &str = "NoSchedule";
pub(crate) const NO_EXECUTE: &str = "NoExecute";

/// Condition (type, status) → the NoSchedule taint it calls for (kube's
/// nodeConditionToTaintKeyStatusMap).
const NO_SCHEDULE_BY_CONDITION: &[(&str, &str, &str)] = &[
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    ("MemoryPressure", "True", MEMORY_PRESSURE),
    ("DiskPressure", "True", DISK_PRESSURE),
    ("NetworkUnavailable", "True", NETWORK_UNAVAILABLE),
    ("PIDPressure", "True", PID_PRESSURE),
];

/// The node's condition of `type_`, if reported.
pub(crate) fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The node's taints (empty when it has none).
pub(crate) fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The node's NoExecute taints.
pub(crate) fn no_execute(node: &Node) -> Vec<&Taint> {
    taints(node)
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .collect()
}

fn managed(t: &Taint) -> bool {
    match t.effect.as_str() {
        NO_SCHEDULE => {
            t.key == UNSCHEDULABLE || NO_SCHEDULE_BY_CONDITION.iter().any(|(_, _, k)| *k == t.key)
        }
        NO_EXECUTE => t.key == NOT_READY || t.key == UNREACHABLE,
        _ => false,
    }
}

/// Whether the node's Ready condition is True.
pub(crate) fn is_ready(node: &Node) -> bool {
    condition(node, "Ready").is_some_and(|c| c.status == "True")
}

/// The taints `node` should carry given its conditions and `spec.unschedulable`, or None
/// when it carries them already. Taints this controller does not own are kept as they
/// are; owned ones still called for keep their `timeAdded`; new NoExecute taints get
/// `now` (the start of their pods' toleration). With `evict` false (every node is
/// down: kube's master disruption mode) no NoExecute taint is called for.
pub(crate) fn desired_taints(node: &Node, now: Timestamp, evict: bool) -> Option<Vec<Taint>> {
    let mut want: Vec<(&str, &str)> = Vec::new();
    for (type_, status, key) in NO_SCHEDULE_BY_CONDITION {
        if condition(node, type_).is_some_and(|c| c.status == *status) {
            want.push((key, NO_SCHEDULE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        want.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") if evict => want.push((NOT_READY, NO_EXECUTE)),
        Some("Unknown") if evict => want.push((UNREACHABLE, NO_EXECUTE)),
        _ => {}
    }
    let current = taints(node);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || want.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                time_added: (effect == NO_EXECUTE).then_some(Time(now)),
                value: None,
            });
        }
    }
    (out != current).then_some(out)
}

/// kube's `Toleration.ToleratesTaint`.
pub(crate) fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// When a pod on a node with NoExecute `taints` is to be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// It tolerates every taint forever.
    Never,
    /// At once: a taint it does not tolerate, or a toleration of zero seconds.
    Now,
    /// When the first of its tolerations runs out.
    At(Timestamp),
}

/// When `pod` is evicted from a node with the NoExecute `taints`: each taint is tolerated
/// by the first of the pod's tolerations that matches it, for that toleration's seconds
/// counted from the taint's `timeAdded` (`since` when the taint has none).
pub(crate) fn eviction(pod: &Pod, taints: &[&Taint], since: Timestamp) -> Eviction {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut first: Option<Timestamp> = None;
    for taint in taints {
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        let Some(secs) = t.toleration_seconds else {
            continue;
        };
        if secs <= 0 {
            return Eviction::Now;
        }
        let start = taint.time_added.as_ref().map_or(since, |t| t.0);
        let at = Timestamp::from_millisecond(
            start
                .as_millisecond()
                .saturating_add(secs.saturating_mul(1000)),
        )
        .unwrap_or(Timestamp::MAX);
        first = Some(first.map_or(at, |f| f.min(at)));
    }
    first.map_or(Eviction::Never, Eviction::At)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSpec};

    fn node(ready: &str, unschedulable: bool, taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            metadata: Default::default(),
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn keys(ts: &[Taint]) -> Vec<(String, String)> {
        ts.iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn conditions_call_for_taints_and_others_are_kept() {
        let now = ts(1000);
        let n = node("Unknown", false, vec![taint("mine", NO_EXECUTE)]);
        let got = desired_taints(&n, now, true).unwrap();
        assert_eq!(
            keys(&got),
            vec![
                ("mine".into(), NO_EXECUTE.into()),
                (UNREACHABLE.into(), NO_SCHEDULE.into()),
                (UNREACHABLE.into(), NO_EXECUTE.into()),
            ]
        );
        assert_eq!(got[2].time_added, Some(Time(now)));
        assert_eq!(got[1].time_added, None);
        // Already tainted: nothing to do.
        let n = node("Unknown", false, got);
        assert_eq!(desired_taints(&n, ts(2000), true), None);
        // Unknown → False swaps unreachable for not-ready.
        let n = node("False", true, n.spec.unwrap().taints.unwrap());
        let got = desired_taints(&n, now, true).unwrap();
        assert_eq!(
            keys(&got),
            vec![
                ("mine".into(), NO_EXECUTE.into()),
                (NOT_READY.into(), NO_SCHEDULE.into()),
                (UNSCHEDULABLE.into(), NO_SCHEDULE.into()),
                (NOT_READY.into(), NO_EXECUTE.into()),
            ]
        );
        // Every node down: no NoExecute taints.
        let down = node("Unknown", false, vec![]);
        assert_eq!(
            keys(&desired_taints(&down, now, false).unwrap()),
            vec![(UNREACHABLE.into(), NO_SCHEDULE.into())]
        );
        // Ready again: only what is not ours stays (and the cordon).
        let n = node("True", true, got);
        assert_eq!(
            keys(&desired_taints(&n, now, true).unwrap()),
            vec![
                ("mine".into(), NO_EXECUTE.into()),
                (UNSCHEDULABLE.into(), NO_SCHEDULE.into())
            ]
        );
    }

    #[test]
    fn tolerations_match_as_kubernetes_does() {
        let t =
            |key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>| Toleration {
                key: key.map(Into::into),
                operator: Some(op.into()),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                toleration_seconds: None,
            };
        let mut tn = taint("k", NO_EXECUTE);
        tn.value = Some("v".into());
        assert!(tolerates(&t(None, "Exists", None, None), &tn));
        assert!(tolerates(
            &t(Some("k"), "Exists", None, Some(NO_EXECUTE)),
            &tn
        ));
        assert!(!tolerates(
            &t(Some("k"), "Exists", None, Some(NO_SCHEDULE)),
            &tn
        ));
        assert!(tolerates(&t(Some("k"), "Equal", Some("v"), None), &tn));
        assert!(!tolerates(&t(Some("k"), "Equal", Some("w"), None), &tn));
        assert!(!tolerates(&t(Some("j"), "Exists", None, None), &tn));
    }

    #[test]
    fn eviction_waits_for_the_first_toleration_to_run_out() {
        let pod = |tols: Vec<(&str, Option<i64>)>| Pod {
            spec: Some(PodSpec {
                tolerations: Some(
                    tols.into_iter()
                        .map(|(k, s)| Toleration {
                            key: Some(k.into()),
                            operator: Some("Exists".into()),
                            effect: Some(NO_EXECUTE.into()),
                            toleration_seconds: s,
                            value: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut a = taint("a", NO_EXECUTE);
        a.time_added = Some(Time(ts(100)));
        let b = taint("b", NO_EXECUTE);
        let since = ts(200);
        assert_eq!(eviction(&pod(vec![]), &[&a], since), Eviction::Now);
        assert_eq!(
            eviction(&pod(vec![("a", None)]), &[&a], since),
            Eviction::Never
        );
        assert_eq!(
            eviction(&pod(vec![("a", Some(0))]), &[&a], since),
            Eviction::Now
        );
        assert_eq!(
            eviction(&pod(vec![("a", Some(2))]), &[&a], since),
            Eviction::At(ts(102))
        );
        assert_eq!(
            eviction(&pod(vec![("a", None)]), &[&a, &b], since),
            Eviction::Now
        );
        assert_eq!(
            eviction(&pod(vec![("a", None), ("b", Some(5))]), &[&a, &b], since),
            Eviction::At(ts(205))
        );
        assert_eq!(eviction(&pod(vec![]), &[], since), Eviction::Never);
    }
}
