//! The servicelb controller against the real API server: LoadBalancer Services get the
//! Ready nodes' InternalIPs as ingress, follow the nodes, leave other classes alone and
//! are cleared when they stop being LoadBalancers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, Cluster};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff_controllers::Config;

async fn node(c: &Cluster, name: &str, ip: &str, ready: bool) {
    let nodes: Api<Node> = c.cluster_api();
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    set_node(c, name, ip, ready).await;
}

async fn set_node(c: &Cluster, name: &str, ip: &str, ready: bool) {
    let nodes: Api<Node> = c.cluster_api();
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn lb(c: &Cluster, name: &str, class: Option<&str>) {
    let svcs: Api<Service> = c.api("default");
    let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]});
    if let Some(class) = class {
        spec["loadBalancerClass"] = json!(class);
    }
    let s: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap();
    svcs.create(&PostParams::default(), &s).await.unwrap();
}

async fn ingress(c: &Cluster, name: &str) -> Vec<(String, String)> {
    let svcs: Api<Service> = c.api("default");
    let s = svcs.get(name).await.unwrap();
    s.status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.ip.unwrap_or_default(), i.ip_mode.unwrap_or_default()))
        .collect()
}

async fn wait_for(c: &Cluster, name: &str, want: &[&str]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|ip| (ip.to_string(), "VIP".to_string()))
        .collect();
    eventually(&format!("ingress of {name} = {want:?}"), || async {
        (ingress(c, name).await == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn load_balancers_answer_on_ready_nodes() {
    let c = Cluster::start_with(Config {
        controllers: vec!["servicelb".into()],
        ..Default::default()
    })
    .await;
    node(&c, "n1", "10.0.0.1", true).await;
    node(&c, "n2", "10.0.0.2", true).await;
    node(&c, "n3", "10.0.0.3", false).await;

    lb(&c, "other", Some("example.com/their-lb")).await;
    lb(&c, "web", None).await;
    lb(&c, "ours", Some("skiff.io/servicelb")).await;
    wait_for(&c, "web", &["10.0.0.1", "10.0.0.2"]).await;
    wait_for(&c, "ours", &["10.0.0.1", "10.0.0.2"]).await;

    // Nodes change: n3 turns Ready, n1 goes away, n2 gets a new address.
    set_node(&c, "n3", "10.0.0.3", true).await;
    wait_for(&c, "web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"]).await;
    c.cluster_api::<Node>()
        .delete("n1", &DeleteParams::default())
        .await
        .unwrap();
    set_node(&c, "n2", "10.0.0.22", true).await;
    wait_for(&c, "web", &["10.0.0.22", "10.0.0.3"]).await;

    // No longer a LoadBalancer: cleared.
    let svcs: Api<Service> = c.api("default");
    let patch = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP", "nodePort": null}]}});
    svcs.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(&c, "web", &[]).await;

    // The Service of another class was never touched.
    assert_eq!(ingress(&c, "other").await, vec![]);
    c.shutdown().await;
}
