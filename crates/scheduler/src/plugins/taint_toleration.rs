//! TaintToleration: a node's NoSchedule and NoExecute taints keep off pods that do not
//! tolerate them (`node(s) had untolerated taint {key: value}`); PreferNoSchedule taints
//! only lower the score, by how many of them the pod does not tolerate.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{
    action, default_normalize, ClusterEvent, CycleState, EventResource, Filter, NodeScore, Plugin,
    PreScore, Score, Status,
};
use crate::nodeinfo::{NodeInfo, PodInfo};

pub const NAME: &str = "TaintToleration";

/// Whether `t` tolerates `taint` (Kubernetes' `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        // An empty key with Exists tolerates every taint.
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(
            EventResource::Node,
            action::ADD | action::UPDATE_NODE_TAINT,
        )]
    }
}

impl Filter for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tolerations = pod.tolerations();
        for taint in &node.taints {
            if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !tolerated(tolerations, taint)
            {
                return Status::unresolvable(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.as_deref().unwrap_or("")
                ));
            }
        }
        Status::success()
    }
}

impl PreScore for TaintToleration {
    fn pre_score(&self, _state: &mut CycleState, _pod: &PodInfo, nodes: &[&NodeInfo]) -> Status {
        if nodes.iter().all(|n| n.taints.is_empty()) {
            // Every node scores the same; reversed normalize would give all 100.
            return Status::skip();
        }
        Status::success()
    }
}

impl Score for TaintToleration {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let prefer = |t: &&Toleration| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        };
        let tolerations = pod.tolerations();
        Ok(node
            .taints
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|taint| {
                !tolerations
                    .iter()
                    .filter(prefer)
                    .any(|t| tolerates(t, taint))
            })
            .count() as i64)
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize(scores, true);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    #[test]
    fn untolerated_taint_message() {
        let n = node_info(
            with_taint(
                node("n", &[]),
                "node-role.kubernetes.io/control-plane",
                "",
                "NoSchedule",
            ),
            vec![],
        );
        let st = TaintToleration.filter(&CycleState::default(), &info(pod("a", &[])), &n);
        assert_eq!(
            st.reasons,
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
        let p = with_toleration(
            pod("b", &[]),
            "node-role.kubernetes.io/control-plane",
            "Exists",
            "",
            "NoSchedule",
        );
        assert!(TaintToleration
            .filter(&CycleState::default(), &info(p), &n)
            .is_success());
        let p = with_toleration(pod("c", &[]), "", "Exists", "", "");
        assert!(TaintToleration
            .filter(&CycleState::default(), &info(p), &n)
            .is_success());
    }

    #[test]
    fn equal_needs_value_and_effect() {
        let n = node_info(with_taint(node("n", &[]), "k", "v", "NoExecute"), vec![]);
        let st = CycleState::default();
        let wrong = with_toleration(pod("a", &[]), "k", "Equal", "w", "NoExecute");
        assert_eq!(
            TaintToleration.filter(&st, &info(wrong), &n).reasons,
            vec!["node(s) had untolerated taint {k: v}"]
        );
        let other_effect = with_toleration(pod("b", &[]), "k", "Equal", "v", "NoSchedule");
        assert!(!TaintToleration
            .filter(&st, &info(other_effect), &n)
            .is_success());
        let ok = with_toleration(pod("c", &[]), "k", "Equal", "v", "NoExecute");
        assert!(TaintToleration.filter(&st, &info(ok), &n).is_success());
    }

    #[test]
    fn prefer_no_schedule_scores_reversed() {
        let clean = node_info(node("a", &[]), vec![]);
        let tainted = node_info(
            with_taint(
                with_taint(node("b", &[]), "x", "", "PreferNoSchedule"),
                "y",
                "",
                "PreferNoSchedule",
            ),
            vec![],
        );
        let p = info(with_toleration(
            pod("p", &[]),
            "x",
            "Exists",
            "",
            "PreferNoSchedule",
        ));
        let st = CycleState::default();
        assert!(TaintToleration.filter(&st, &p, &tainted).is_success());
        let mut scores = vec![
            NodeScore {
                node: 0,
                score: TaintToleration.score(&st, &p, &clean).unwrap(),
            },
            NodeScore {
                node: 1,
                score: TaintToleration.score(&st, &p, &tainted).unwrap(),
            },
        ];
        assert_eq!(scores[1].score, 1);
        TaintToleration.normalize(&st, &p, &mut scores);
        assert_eq!((scores[0].score, scores[1].score), (100, 0));
    }
}
