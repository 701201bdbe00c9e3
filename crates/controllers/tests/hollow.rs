//! Hollow nodes against the real API server: registration, Lease renewal, pods bound to
//! a node reported Running and Ready, graceful deletions finished, a failed node going
//! silent and coming back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use skiff_controllers::hollow::{HollowConfig, HollowNodes};
use skiff_controllers::util::is_ready;

fn config(prefix: &str, count: usize) -> HollowConfig {
    HollowConfig {
        prefix: prefix.into(),
        count,
        renew_interval: Duration::from_millis(100),
        // No nodeipam controller here: pods of a node without a podCIDR get their
        // address from the fallback range at once.
        pod_cidr_wait: Duration::ZERO,
        ..Default::default()
    }
}

async fn bound_pod(api: &Api<Pod>, name: &str, node: &str) -> Pod {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap()
}

async fn running(api: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("pod {name} Running and Ready"), || async {
        let p = api.get(name).await.ok()?;
        let phase = p.status.as_ref()?.phase.as_deref()?;
        (phase == "Running" && is_ready(&p)).then_some(p)
    })
    .await
}

async fn renew_time(leases: &Api<Lease>, name: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let l = leases.get(name).await.ok()?;
    l.spec?.renew_time.map(|t| t.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_ready_and_report_bound_pods_running() {
    let c = Cluster::server_only().await;
    let hollow = HollowNodes::start(c.controller_client(), config("hollow-a-", 3))
        .await
        .unwrap();
    assert_eq!(hollow.names(), ["hollow-a-0", "hollow-a-1", "hollow-a-2"]);
    let nodes: Api<Node> = c.cluster_api();
    let n = nodes.get("hollow-a-1").await.unwrap();
    let labels = n.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "hollow-a-1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    let status = n.status.unwrap();
    assert_eq!(status.capacity.unwrap()["cpu"].0, "4");
    assert_eq!(status.allocatable.unwrap()["pods"].0, "110");
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("True", Some("KubeletReady"))
    );
    assert_eq!(status.node_info.unwrap().kubelet_version, "v1.33.0-skiff");
    let addresses = status.addresses.unwrap();
    assert!(addresses
        .iter()
        .any(|a| a.type_ == "InternalIP" && a.address == "10.255.0.1"));

    // A pod bound to a node without a podCIDR: an address from the node's fake range.
    let pods: Api<Pod> = c.api("default");
    bound_pod(&pods, "web-1", "hollow-a-1").await;
    let p = running(&pods, "web-1").await;
    let s = p.status.unwrap();
    assert_eq!(s.host_ip.as_deref(), Some("10.255.0.1"));
    assert!(
        s.pod_ip.as_deref().unwrap().starts_with("10.128.1."),
        "{:?}",
        s.pod_ip
    );
    let cs = &s.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.started == Some(true));
    assert!(cs.state.as_ref().unwrap().running.is_some());
    assert!(cs.container_id.as_deref().unwrap().starts_with("hollow://"));
    let types: Vec<String> = s.conditions.unwrap().into_iter().map(|c| c.type_).collect();
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }

    // Once the node has a podCIDR (nodeipam's job), pods get addresses from it.
    nodes
        .patch(
            "hollow-a-2",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"podCIDR": "10.42.7.0/24", "podCIDRs": ["10.42.7.0/24"]}})),
        )
        .await
        .unwrap();
    eventually("the podCIDR to be set", || async {
        nodes.get("hollow-a-2").await.ok()?.spec?.pod_cidr
    })
    .await;
    // The node watch may trail the write: a later pod surely sees the range.
    let mut ips = Vec::new();
    for i in 0..3 {
        bound_pod(&pods, &format!("ipam-{i}"), "hollow-a-2").await;
    }
    for i in 0..3 {
        let p = running(&pods, &format!("ipam-{i}")).await;
        ips.push(p.status.unwrap().pod_ip.unwrap());
    }
    let last = ips.last().unwrap();
    assert!(last.starts_with("10.42.7."), "{ips:?}");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "addresses are unique: {ips:?}");

    // Pods of other nodes are not ours.
    let other: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "elsewhere"},
        "spec": {"nodeName": "real-node", "containers": [{"name": "app", "image": "app"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &other).await.unwrap();
    bound_pod(&pods, "after", "hollow-a-0").await;
    running(&pods, "after").await;
    let other = pods.get("elsewhere").await.unwrap();
    assert_ne!(
        other.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    hollow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_renew_and_graceful_deletions_finish() {
    let c = Cluster::server_only().await;
    let hollow = HollowNodes::start(c.controller_client(), config("hollow-b-", 1))
        .await
        .unwrap();
    let leases: Api<Lease> = c.api("kube-node-lease");
    let lease = leases.get("hollow-b-0").await.unwrap();
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("hollow-b-0"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owner = &lease.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", "hollow-b-0")
    );
    let first = spec.renew_time.unwrap().0;
    eventually("the Lease to be renewed", || async {
        (renew_time(&leases, "hollow-b-0").await? > first).then_some(())
    })
    .await;

    let pods: Api<Pod> = c.api("default");
    bound_pod(&pods, "graceful", "hollow-b-0").await;
    let p = running(&pods, "graceful").await;
    // The default grace period (30 s) leaves the pod terminating for its kubelet.
    pods.delete("graceful", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the hollow kubelet to finish the deletion", || async {
        match pods.get_opt("graceful").await {
            Ok(None) => Some(()),
            Ok(Some(q)) if q.metadata.uid != p.metadata.uid => Some(()),
            _ => None,
        }
    })
    .await;
    hollow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_goes_silent_and_recovers() {
    let c = Cluster::server_only().await;
    let hollow = HollowNodes::start(c.controller_client(), config("hollow-c-", 2))
        .await
        .unwrap();
    assert!(hollow.fail("hollow-c-1"));
    assert!(!hollow.fail("not-ours"));
    assert!(hollow.is_failed("hollow-c-1"));
    let leases: Api<Lease> = c.api("kube-node-lease");
    let pods: Api<Pod> = c.api("default");
    // The failed node's pod is created first: by the time the live node's later pod is
    // Running, the one watch has delivered both.
    bound_pod(&pods, "on-failed", "hollow-c-1").await;
    bound_pod(&pods, "on-live", "hollow-c-0").await;
    running(&pods, "on-live").await;
    let silent = renew_time(&leases, "hollow-c-1").await.unwrap();
    // Two renewals of the live node span at least one renew interval of the other.
    for _ in 0..2 {
        let t = renew_time(&leases, "hollow-c-0").await.unwrap();
        eventually("the live node's Lease to be renewed", || async {
            (renew_time(&leases, "hollow-c-0").await? > t).then_some(())
        })
        .await;
    }
    assert_eq!(renew_time(&leases, "hollow-c-1").await, Some(silent));
    let p = pods.get("on-failed").await.unwrap();
    assert_ne!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    assert!(hollow.recover("hollow-c-1"));
    running(&pods, "on-failed").await;
    eventually("the recovered node's Lease to be renewed", || async {
        (renew_time(&leases, "hollow-c-1").await? > silent).then_some(())
    })
    .await;
    hollow.stop().await;
}
