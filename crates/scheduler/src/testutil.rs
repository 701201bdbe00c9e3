//! Builders of typed Pods and Nodes for the plugins' unit tests: a pod or node is written
//! as the JSON the API would hold, deserialized into k8s_openapi's types, then digested
//! into [`PodInfo`]/[`NodeInfo`] exactly as the cache does.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::framework::{CycleState, Filter, PreFilter, Status};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

/// A pod under construction: chain setters, then [`PodBuilder::info`].
#[derive(Debug, Clone)]
pub struct PodBuilder(Value);

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
}

impl PodBuilder {
    /// Sets the JSON at `pointer` (`/spec/priority`), creating objects on the way.
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        let mut cur = &mut self.0;
        for part in pointer.trim_start_matches('/').split('/') {
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = cur
                .as_object_mut()
                .map(|o| o.entry(part.to_string()).or_insert(Value::Null))
                .unwrap_or_else(|| unreachable!("made an object above"));
        }
        *cur = value;
        self
    }

    pub fn namespace(self, ns: &str) -> Self {
        self.set("/metadata/namespace", json!(ns))
    }

    pub fn labels(self, labels: &[(&str, &str)]) -> Self {
        let m: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.set("/metadata/labels", Value::Object(m))
    }

    pub fn cpu(self, cpu: &str) -> Self {
        self.set(
            "/spec/containers",
            json!([{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]),
        )
    }

    pub fn priority(self, p: i32) -> Self {
        self.set("/spec/priority", json!(p))
    }

    pub fn node(self, node: &str) -> Self {
        self.set("/spec/nodeName", json!(node))
    }

    pub fn start_time(self, t: &str) -> Self {
        self.set("/status/startTime", json!(t))
    }

    /// `spec.affinity` as JSON.
    pub fn affinity(self, affinity: Value) -> Self {
        self.set("/spec/affinity", affinity)
    }

    /// `spec.topologySpreadConstraints` as JSON.
    pub fn spread(self, constraints: Value) -> Self {
        self.set("/spec/topologySpreadConstraints", constraints)
    }

    pub fn pod(&self) -> Pod {
        serde_json::from_value(self.0.clone()).expect("test pod JSON is a Pod")
    }

    pub fn info(&self) -> PodInfo {
        PodInfo::new(Arc::new(self.pod())).expect("test pod digests")
    }
}

/// A required (anti-)affinity term selecting `key=value` over `topology_key`.
pub fn term(key: &str, value: &str, topology_key: &str) -> Value {
    json!({"labelSelector": {"matchLabels": {key: value}}, "topologyKey": topology_key})
}

/// A node with 4 CPUs, 16 GiB and 110 pods; `kubernetes.io/hostname` is set to its name.
pub fn node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
    node_with_cpu(name, labels, "4")
}

pub fn node_with_cpu(name: &str, labels: &[(&str, &str)], cpu: &str) -> NodeInfo {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/hostname".into(), json!(name));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": l},
        "status": {"allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"}}
    }))
    .expect("test node JSON is a Node");
    NodeInfo::new(Arc::new(n))
}

/// Places `pod` on the node called `node` (setting its `spec.nodeName`).
pub fn place(nodes: &mut [NodeInfo], node: &str, pod: PodBuilder) {
    let info = pod.node(node).info();
    let n = nodes
        .iter_mut()
        .find(|n| n.name == node)
        .expect("test places pods on known nodes");
    n.add_pod(Arc::new(info));
}

pub fn snapshot(nodes: Vec<NodeInfo>) -> Snapshot {
    Snapshot::from_nodes(nodes)
}

/// Runs one plugin's PreFilter then Filter on every node; returns the state and each
/// node's status (Skip from PreFilter passes every node, as the framework does).
pub fn filter_all<P: PreFilter + Filter>(
    plugin: &P,
    pod: &PodInfo,
    snap: &Snapshot,
) -> (CycleState, Vec<Status>) {
    let mut state = CycleState::default();
    let (pre, _) = plugin.pre_filter(&mut state, pod, snap);
    let statuses = snap
        .nodes
        .iter()
        .map(|n| {
            if pre.code == crate::framework::Code::Skip {
                Status::success()
            } else {
                plugin.filter(&state, pod, n)
            }
        })
        .collect();
    (state, statuses)
}

/// The names of the nodes whose status is a success.
pub fn feasible(snap: &Snapshot, statuses: &[Status]) -> Vec<String> {
    snap.nodes
        .iter()
        .zip(statuses)
        .filter(|(_, s)| s.is_success())
        .map(|(n, _)| n.name.clone())
        .collect()
}

/// A stand-in for NodeResourcesFit in tests of preemption: CPU only.
pub struct CpuFit;

impl crate::framework::Plugin for CpuFit {
    fn name(&self) -> &'static str {
        "CpuFit"
    }
}

impl Filter for CpuFit {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if node.requested.milli_cpu + pod.requests.milli_cpu > node.allocatable.milli_cpu {
            Status::unschedulable("Insufficient cpu")
        } else {
            Status::success()
        }
    }
}

/// Runs every PreFilter of `fw` (recording skips) and every Filter on each node, as the
/// framework's runner does; returns the state and the rejected nodes' statuses.
pub fn run_cycle(
    fw: &crate::Framework,
    pod: &PodInfo,
    snap: &Snapshot,
) -> (CycleState, crate::framework::NodeStatuses) {
    let mut state = CycleState::default();
    for p in &fw.pre_filter {
        let (s, _) = p.pre_filter(&mut state, pod, snap);
        if s.code == crate::framework::Code::Skip {
            state.skip_filter.push(p.name());
        }
    }
    let mut statuses = crate::framework::NodeStatuses::new();
    for n in &snap.nodes {
        let s = crate::plugins::default_preemption::run_filters(fw, &state, pod, n);
        if !s.is_success() {
            statuses.insert(n.name.clone(), s);
        }
    }
    (state, statuses)
}
