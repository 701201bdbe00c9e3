//! NodeName: a pod that names its node (`spec.nodeName`) fits only there.

use crate::framework::{CycleState, Filter, Plugin, PreFilter, Status};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreFilter for NodeName {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, Option<Vec<String>>) {
        super::skip_unless(pod.node_name.is_some())
    }
}

impl Filter for NodeName {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match &pod.node_name {
            Some(n) if *n != node.name => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    #[test]
    fn only_the_named_node() {
        let mut p = pod("a", &[]);
        p.spec.as_mut().unwrap().node_name = Some("n2".into());
        let p = info(p);
        let n1 = node_info(node("n1", &[]), vec![]);
        let n2 = node_info(node("n2", &[]), vec![]);
        assert_eq!(run_filter(&NodeName, &p, &n1).reasons, vec![REASON]);
        assert!(run_filter(&NodeName, &p, &n2).is_success());
        assert!(run_filter(&NodeName, &info(pod("b", &[])), &n1).is_success());
    }
}
