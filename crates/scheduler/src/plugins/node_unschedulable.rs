//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods that tolerate
//! the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{action, ClusterEvent, CycleState, EventResource, Filter, Plugin, Status};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::plugins::taint_toleration::tolerated;

pub const NAME: &str = "NodeUnschedulable";
pub const REASON: &str = "node(s) were unschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(
            EventResource::Node,
            action::ADD | action::UPDATE_NODE_TAINT | action::UPDATE_OTHER,
        )]
    }
}

impl Filter for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if tolerated(pod.tolerations(), &taint) {
            return Status::success();
        }
        Status::unresolvable(REASON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    #[test]
    fn cordoned_node_refuses_unless_tolerated() {
        let mut n = node("n", &[]);
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let n = node_info(n, vec![]);
        let st = CycleState::default();
        assert_eq!(
            NodeUnschedulable
                .filter(&st, &info(pod("a", &[])), &n)
                .reasons,
            vec![REASON]
        );
        let p = with_toleration(pod("b", &[]), TAINT_KEY, "Exists", "", "NoSchedule");
        assert!(NodeUnschedulable.filter(&st, &info(p), &n).is_success());
        let open = node_info(node("m", &[]), vec![]);
        assert!(NodeUnschedulable
            .filter(&st, &info(pod("c", &[])), &open)
            .is_success());
    }
}
