//! Decisions per second of the scheduling cycle alone, on the benchmark's synthetic
//! cluster (5,000 nodes: 4 CPU, 16 GiB, 110 pods, 10 zones) with plain pods.
//! `cargo run --release -p skiff-scheduler --example simulate [nodes] [pods] [plain|anti|spread|soft]`
//! (`anti`: required pod anti-affinity per hostname; `spread`: zone topology spread,
//! maxSkew 1; `soft`: the same spread as ScheduleAnyway, scored rather than filtered).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_scheduler::nodeinfo::{NodeInfo, PodInfo, Snapshot};
use skiff_scheduler::{plugins, simulate, Config};

fn q(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50000);
    let mode = args.next().unwrap_or_else(|| "plain".into());
    let infos: Vec<NodeInfo> = (0..nodes)
        .map(|i| {
            let mut n = Node::default();
            n.metadata.name = Some(format!("node-{i}"));
            n.metadata.labels = Some(
                [
                    (
                        "topology.kubernetes.io/zone".to_string(),
                        format!("zone-{}", i % 10),
                    ),
                    ("kubernetes.io/hostname".to_string(), format!("node-{i}")),
                ]
                .into(),
            );
            n.spec = Some(NodeSpec::default());
            n.status = Some(NodeStatus {
                allocatable: Some(q(&[("cpu", "4"), ("memory", "16Gi"), ("pods", "110")])),
                ..Default::default()
            });
            NodeInfo::new(Arc::new(n))
        })
        .collect();
    let mut snapshot = Snapshot::from_nodes(infos);
    let pod_infos: Vec<Arc<PodInfo>> =
        (0..pods)
            .map(|i| {
                let mut p = Pod::default();
                p.metadata.name = Some(format!("pod-{i}"));
                p.metadata.namespace = Some("default".into());
                p.metadata.uid = Some(format!("uid-{i}"));
                p.metadata.labels = Some([("app".to_string(), "bench".to_string())].into());
                p.spec = Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        resources: Some(ResourceRequirements {
                            requests: Some(q(&[("cpu", "100m"), ("memory", "100Mi")])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                let spec = p.spec.as_mut().expect("spec set above");
                let selector = serde_json::json!({"matchLabels": {"app": "bench"}});
                match mode.as_str() {
                    "anti" => {
                        spec.affinity = Some(serde_json::from_value(serde_json::json!({
                        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                            {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}
                        ]}
                    })).expect("affinity"));
                    }
                    "spread" | "soft" => {
                        let when = if mode == "soft" {
                            "ScheduleAnyway"
                        } else {
                            "DoNotSchedule"
                        };
                        spec.topology_spread_constraints =
                            Some(vec![serde_json::from_value(serde_json::json!({
                                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": when, "labelSelector": selector
                            }))
                            .expect("constraint")]);
                    }
                    _ => {}
                }
                Arc::new(PodInfo::new(Arc::new(p)).expect("valid pod"))
            })
            .collect();
    let config = Config::default();
    let fw = plugins::default_framework(&config);
    let start = Instant::now();
    let out = simulate(&fw, &config, &mut snapshot, &pod_infos);
    let secs = start.elapsed().as_secs_f64();
    let placed = out.iter().filter(|o| o.is_some()).count();
    println!(
        "{mode}: {nodes} nodes, {pods} pods: {placed} placed in {secs:.3} s = {:.0} decisions/s",
        pods as f64 / secs
    );
}
