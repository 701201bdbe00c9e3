//! NodePorts: a pod asking for host ports fits only where none of them is taken. Two
//! claims conflict when protocol and port match and either hostIP is `0.0.0.0` or both
//! are the same address.

use crate::framework::{
    action, ClusterEvent, CycleState, EventResource, Filter, Plugin, PreFilter, Status,
};
use crate::nodeinfo::{HostPort, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(EventResource::AssignedPod, action::DELETE),
            ClusterEvent::new(EventResource::Node, action::ADD),
        ]
    }
}

pub fn conflicts(a: &HostPort, b: &HostPort) -> bool {
    a.port == b.port
        && a.protocol == b.protocol
        && (a.ip == b.ip || a.ip == "0.0.0.0" || b.ip == "0.0.0.0")
}

impl PreFilter for NodePorts {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, Option<Vec<String>>) {
        super::skip_unless(!pod.host_ports.is_empty())
    }
}

impl Filter for NodePorts {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let taken = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| conflicts(want, used)));
        if taken {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    #[test]
    fn host_port_conflicts() {
        let n = node_info(
            node("n", &[]),
            vec![with_host_port(pod("a", &[]), 8080, "10.0.0.1", "TCP")],
        );
        let any = info(with_host_port(pod("b", &[]), 8080, "", "TCP"));
        assert_eq!(run_filter(&NodePorts, &any, &n).reasons, vec![REASON]);
        let same_ip = info(with_host_port(pod("c", &[]), 8080, "10.0.0.1", "TCP"));
        assert!(!run_filter(&NodePorts, &same_ip, &n).is_success());
        let other_ip = info(with_host_port(pod("d", &[]), 8080, "10.0.0.2", "TCP"));
        assert!(run_filter(&NodePorts, &other_ip, &n).is_success());
        let udp = info(with_host_port(pod("e", &[]), 8080, "", "UDP"));
        assert!(run_filter(&NodePorts, &udp, &n).is_success());
        let other_port = info(with_host_port(pod("f", &[]), 8081, "", "TCP"));
        assert!(run_filter(&NodePorts, &other_port, &n).is_success());
        let wildcard_node = node_info(
            node("m", &[]),
            vec![with_host_port(pod("g", &[]), 80, "0.0.0.0", "TCP")],
        );
        let specific = info(with_host_port(pod("h", &[]), 80, "10.0.0.9", "TCP"));
        assert!(!run_filter(&NodePorts, &specific, &wildcard_node).is_success());
    }
}
