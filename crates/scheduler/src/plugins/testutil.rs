//! Typed Pods and Nodes for the plugins' unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
    Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::framework::{CycleState, Filter, PreFilter, Status};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub fn list(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

pub fn node(name: &str, alloc: &[(&str, &str)]) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.spec = Some(NodeSpec::default());
    n.status = Some(NodeStatus {
        allocatable: Some(list(alloc)),
        ..Default::default()
    });
    n
}

pub fn with_labels(mut n: Node, labels: &[(&str, &str)]) -> Node {
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    n
}

pub fn with_taint(mut n: Node, key: &str, value: &str, effect: &str) -> Node {
    let spec = n.spec.get_or_insert_with(Default::default);
    spec.taints.get_or_insert_with(Vec::new).push(Taint {
        key: key.into(),
        value: (!value.is_empty()).then(|| value.into()),
        effect: effect.into(),
        ..Default::default()
    });
    n
}

pub fn pod(name: &str, requests: &[(&str, &str)]) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "c".into(),
            image: Some("nginx".into()),
            resources: Some(ResourceRequirements {
                requests: (!requests.is_empty()).then(|| list(requests)),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

pub fn with_host_port(mut p: Pod, port: i32, ip: &str, proto: &str) -> Pod {
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.ports.get_or_insert_with(Vec::new).push(ContainerPort {
        container_port: port,
        host_port: Some(port),
        host_ip: (!ip.is_empty()).then(|| ip.into()),
        protocol: Some(proto.into()),
        ..Default::default()
    });
    p
}

pub fn with_toleration(mut p: Pod, key: &str, op: &str, value: &str, effect: &str) -> Pod {
    let spec = p.spec.as_mut().unwrap();
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            ..Default::default()
        });
    p
}

pub fn info(p: Pod) -> Arc<PodInfo> {
    Arc::new(PodInfo::new(Arc::new(p)).unwrap())
}

pub fn node_info(n: Node, pods: Vec<Pod>) -> NodeInfo {
    let mut ni = NodeInfo::new(Arc::new(n));
    for p in pods {
        ni.add_pod(info(p));
    }
    ni
}

/// Runs a plugin's PreFilter then Filter (Filter skipped on Skip) for one node.
pub fn run_filter<P: PreFilter + Filter>(pl: &P, pod: &PodInfo, node: &NodeInfo) -> Status {
    let mut state = CycleState::default();
    let snapshot = Snapshot::default();
    let (st, _) = pl.pre_filter(&mut state, pod, &snapshot);
    if st.code == crate::framework::Code::Skip {
        return Status::success();
    }
    if !st.is_success() {
        return st;
    }
    pl.filter(&state, pod, node)
}
