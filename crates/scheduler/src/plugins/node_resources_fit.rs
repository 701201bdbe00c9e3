//! NodeResourcesFit: a pod fits a node when its effective requests (containers, init
//! containers, overhead) fit in the node's allocatable minus what its pods already request,
//! for cpu, memory, ephemeral-storage, the pod count and extended resources. Scores by
//! LeastAllocated (default, spreads) or MostAllocated (packs) over cpu and memory, weight 1
//! each, using the non-zero requests so pods that request nothing still spread.

use crate::framework::{
    action, ClusterEvent, CycleState, EventResource, Filter, Plugin, Score, Status, MAX_NODE_SCORE,
};
use crate::nodeinfo::{NodeInfo, PodInfo, Resource};
use crate::ScoringStrategy;

pub const NAME: &str = "NodeResourcesFit";

pub struct NodeResourcesFit {
    pub strategy: ScoringStrategy,
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(
                EventResource::AssignedPod,
                action::DELETE | action::UPDATE_POD_SCALE_DOWN,
            ),
            ClusterEvent::new(
                EventResource::Node,
                action::ADD
                    | action::UPDATE_NODE_ALLOCATABLE
                    | action::UPDATE_NODE_TAINT
                    | action::UPDATE_NODE_LABEL,
            ),
        ]
    }
}

/// The reasons `pod` does not fit on `node`; empty when it fits. Allocates only on failure.
pub fn insufficient(req: &Resource, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable.allowed_pod_number {
        out.push("Too many pods".to_string());
    }
    let (a, r) = (&node.allocatable, &node.requested);
    if req.milli_cpu > 0 && req.milli_cpu > a.milli_cpu - r.milli_cpu {
        out.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && req.memory > a.memory - r.memory {
        out.push("Insufficient memory".to_string());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > a.ephemeral_storage - r.ephemeral_storage
    {
        out.push("Insufficient ephemeral-storage".to_string());
    }
    for (name, &want) in &req.scalar {
        if want > 0 && want > a.scalar(name) - r.scalar(name) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl Filter for NodeResourcesFit {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(&pod.requests, node);
        if reasons.is_empty() {
            return Status::success();
        }
        Status {
            code: crate::framework::Code::Unschedulable,
            reasons: reasons.into_iter().map(Into::into).collect(),
            plugin: NAME,
        }
    }
}

/// kube's `leastRequestedScore`.
pub fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// kube's `mostRequestedScore` (pods with default requests may overshoot capacity).
pub fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

impl Score for NodeResourcesFit {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let f = match self.strategy {
            ScoringStrategy::LeastAllocated => least_requested,
            ScoringStrategy::MostAllocated => most_requested,
        };
        let cpu = f(
            node.non_zero_requested.milli_cpu + pod.non_zero_requests.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let mem = f(
            node.non_zero_requested.memory + pod.non_zero_requests.memory,
            node.allocatable.memory,
        );
        Ok((cpu + mem) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    fn fit() -> NodeResourcesFit {
        NodeResourcesFit {
            strategy: ScoringStrategy::LeastAllocated,
        }
    }

    fn small() -> k8s_openapi::api::core::v1::Node {
        node(
            "n",
            &[
                ("cpu", "1"),
                ("memory", "1Gi"),
                ("pods", "2"),
                ("example.com/gpu", "1"),
            ],
        )
    }

    #[test]
    fn fits_when_room() {
        let n = node_info(small(), vec![pod("a", &[("cpu", "500m")])]);
        let p = info(pod("b", &[("cpu", "500m"), ("memory", "512Mi")]));
        assert!(fit().filter(&CycleState::default(), &p, &n).is_success());
    }

    #[test]
    fn insufficient_cpu_and_memory_and_extended() {
        let n = node_info(small(), vec![pod("a", &[("cpu", "600m")])]);
        let p = info(pod(
            "b",
            &[("cpu", "500m"), ("memory", "2Gi"), ("example.com/gpu", "2")],
        ));
        let st = fit().filter(&CycleState::default(), &p, &n);
        assert_eq!(st.code, crate::framework::Code::Unschedulable);
        assert_eq!(
            st.reasons,
            vec![
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient example.com/gpu"
            ]
        );
    }

    #[test]
    fn too_many_pods() {
        let n = node_info(small(), vec![pod("a", &[]), pod("b", &[])]);
        let st = fit().filter(&CycleState::default(), &info(pod("c", &[])), &n);
        assert_eq!(st.reasons, vec!["Too many pods"]);
    }

    #[test]
    fn init_containers_and_overhead_count() {
        let mut p = pod("b", &[("cpu", "200m")]);
        let spec = p.spec.as_mut().unwrap();
        let mut init = spec.containers[0].clone();
        init.name = "init".into();
        init.resources.as_mut().unwrap().requests = Some(list(&[("cpu", "900m")]));
        spec.init_containers = Some(vec![init]);
        spec.overhead = Some(list(&[("cpu", "200m")]));
        let p = info(p);
        assert_eq!(p.requests.milli_cpu, 1100);
        let n = node_info(small(), vec![]);
        assert_eq!(
            fit().filter(&CycleState::default(), &p, &n).reasons,
            vec!["Insufficient cpu"]
        );
    }

    #[test]
    fn least_and_most_allocated_scores() {
        let n = node_info(
            node("n", &[("cpu", "4"), ("memory", "16Gi"), ("pods", "110")]),
            vec![pod("a", &[("cpu", "1"), ("memory", "4Gi")])],
        );
        let p = info(pod("b", &[("cpu", "1"), ("memory", "4Gi")]));
        let s = fit().score(&CycleState::default(), &p, &n).unwrap();
        assert_eq!(s, 50);
        let most = NodeResourcesFit {
            strategy: ScoringStrategy::MostAllocated,
        };
        assert_eq!(most.score(&CycleState::default(), &p, &n).unwrap(), 50);
        let p = info(pod("c", &[("cpu", "3"), ("memory", "12Gi")]));
        assert_eq!(fit().score(&CycleState::default(), &p, &n).unwrap(), 0);
        assert_eq!(most.score(&CycleState::default(), &p, &n).unwrap(), 100);
    }
}
