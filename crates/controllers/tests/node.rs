//! Node controllers against the real API server: nodelifecycle (health, taints,
//! taint-based eviction), nodeipam (pod CIDRs) and podgc.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use skiff_controllers::Config;

fn config(controllers: &[&str]) -> Config {
    Config {
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        node_monitor_grace_period: Duration::from_secs(3),
        node_startup_grace_period: Duration::from_secs(3),
        node_monitor_period: Duration::from_millis(500),
        ..Default::default()
    }
}

async fn create_pod(
    c: &Cluster,
    name: &str,
    node: Option<&str>,
    tolerations: serde_json::Value,
) -> Pod {
    let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let Some(n) = node {
        spec["nodeName"] = n.into();
    }
    if !tolerations.is_null() {
        spec["tolerations"] = tolerations;
    }
    let pod: Pod =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec}))
            .unwrap();
    c.api::<Pod>("default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

/// Registers a Ready node with its Lease (the shared helper's server-side apply of the
/// Lease is refused by the API server, so the Lease is created and patched here).
async fn add_node(c: &Cluster, name: &str) {
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    let nodes: Api<Node> = c.cluster_api();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": MicroTime(Timestamp::now())},
    }))
    .unwrap();
    let leases: Api<Lease> = c.api("kube-node-lease");
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => renew_lease(c, name).await,
        Err(e) => panic!("create lease: {e}"),
    }
    post_ready(c, name, "True").await;
}

/// One heartbeat of the node's Lease.
async fn renew_lease(c: &Cluster, name: &str) {
    let leases: Api<Lease> = c.api("kube-node-lease");
    let patch = serde_json::json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The kubelet's status heartbeat with Ready `status`.
async fn post_ready(c: &Cluster, name: &str, status: &str) {
    let nodes: Api<Node> = c.cluster_api();
    let now = Timestamp::now();
    let reason = if status == "True" {
        "KubeletReady"
    } else {
        "KubeletNotReady"
    };
    let status = serde_json::json!({"status": {
        "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": status, "reason": reason,
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .unwrap();
}

/// A kubelet's heartbeats for `name` every 500 ms until the handle is aborted.
fn keep_alive(c: &Cluster, name: &'static str) -> tokio::task::JoinHandle<()> {
    let leases: Api<Lease> = c.api("kube-node-lease");
    let nodes: Api<Node> = c.cluster_api();
    tokio::spawn(async move {
        loop {
            let now = Timestamp::now();
            let lease = serde_json::json!({"spec": {"renewTime": MicroTime(now)}});
            let _ = leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&lease))
                .await;
            let status = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
            let _ = nodes
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

fn node_taints(n: &Node) -> Vec<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

fn ready_status(n: &Node) -> Option<(String, Option<String>)> {
    let c = n
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn events_for(c: &Cluster, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = c.api("default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

fn pod_condition(p: &Pod, type_: &str) -> Option<(String, Option<String>)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Gone, or marked for deletion.
async fn deleted(pods: &Api<Pod>, name: &str) -> Option<Option<Pod>> {
    match pods.get_opt(name).await.unwrap() {
        None => Some(None),
        Some(p) if p.metadata.deletion_timestamp.is_some() => Some(Some(p)),
        Some(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_turns_unknown_is_tainted_and_recovers() {
    let c = Cluster::start_with(config(&["nodelifecycle"])).await;
    add_node(&c, "n1").await;
    add_node(&c, "n2").await;
    // n2 stays up: with every node down nothing would be evicted.
    let alive = keep_alive(&c, "n2");
    let pod = create_pod(&c, "p", Some("n1"), serde_json::Value::Null).await;
    c.set_running_ready(&pod).await;
    let short = serde_json::json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 1}]);
    create_pod(&c, "short", Some("n1"), short).await;
    let nodes: Api<Node> = c.cluster_api();
    // No more lease renewals or status heartbeats: n1 goes silent.
    let node = eventually(
        "the node to turn Unknown and be tainted unreachable",
        || async {
            let n = nodes.get("n1").await.unwrap();
            let t = node_taints(&n);
            (ready_status(&n) == Some(("Unknown".into(), Some("NodeStatusUnknown".into())))
                && t.contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()))
                && t.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into())))
            .then_some(n)
        },
    )
    .await;
    let conditions = node.status.unwrap().conditions.unwrap();
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let c = conditions.iter().find(|c| c.type_ == type_).unwrap();
        assert_eq!(c.status, "Unknown", "{type_}");
    }
    let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let no_execute = node
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap();
    assert!(
        no_execute.time_added.is_some(),
        "a NoExecute taint carries timeAdded"
    );
    let ev = eventually("the NodeNotReady event", || async {
        events_for(&c, "n1", "NodeNotReady")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Node n1 status is now: NodeNotReady")
    );
    assert_eq!(
        ev.source.unwrap().component.as_deref(),
        Some("node-controller")
    );
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Node"));
    let ev = events_for(&c, "n1", "RegisteredNode").await;
    assert_eq!(
        ev[0].message.as_deref(),
        Some("Node n1 event: Registered Node n1 in Controller")
    );
    let pods: Api<Pod> = c.api("default");
    eventually("the node's pod to turn not ready", || async {
        let p = pods.get("p").await.unwrap();
        (pod_condition(&p, "Ready").map(|c| c.0).as_deref() == Some("False")).then_some(())
    })
    .await;
    eventually(
        "the pod tolerating unreachable for 1 s to be evicted",
        || deleted(&pods, "short"),
    )
    .await;
    // The default toleration (300 s) keeps the other pod meanwhile.
    assert!(pods
        .get("p")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());

    // The kubelet is back: it renews its lease and posts Ready.
    renew_lease(&c, "n1").await;
    post_ready(&c, "n1", "True").await;
    eventually("the node to be untainted", || async {
        let n = nodes.get("n1").await.unwrap();
        node_taints(&n)
            .iter()
            .all(|(k, _)| !k.starts_with("node.kubernetes.io/"))
            .then_some(())
    })
    .await;
    alive.abort();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_node_is_down_nothing_is_evicted() {
    let c = Cluster::start_with(config(&["nodelifecycle"])).await;
    add_node(&c, "n1").await;
    create_pod(&c, "p", Some("n1"), serde_json::json!([])).await;
    let nodes: Api<Node> = c.cluster_api();
    // The one node goes silent: kube's master disruption mode.
    eventually(
        "the node to turn Unknown and be tainted NoSchedule",
        || async {
            let n = nodes.get("n1").await.unwrap();
            (ready_status(&n).map(|r| r.0).as_deref() == Some("Unknown")
                && node_taints(&n)
                    .contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into())))
            .then_some(())
        },
    )
    .await;
    // Both taints are written in one patch: the NoExecute one is left out on purpose.
    let n = nodes.get("n1").await.unwrap();
    assert!(
        !node_taints(&n).iter().any(|(_, e)| e == "NoExecute"),
        "{:?}",
        node_taints(&n)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_ready_node_and_a_cordon_get_their_taints() {
    let c = Cluster::start_with(Config {
        controllers: vec!["nodelifecycle".into()],
        ..Default::default()
    })
    .await;
    add_node(&c, "n1").await;
    // A Ready node besides (with every node down nothing is tainted NoExecute).
    add_node(&c, "n2").await;
    let nodes: Api<Node> = c.cluster_api();
    post_ready(&c, "n1", "False").await;
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    eventually("not-ready and unschedulable taints", || async {
        let mut t = node_taints(&nodes.get("n1").await.unwrap());
        t.sort();
        (t == vec![
            (
                "node.kubernetes.io/not-ready".to_string(),
                "NoExecute".to_string(),
            ),
            (
                "node.kubernetes.io/not-ready".to_string(),
                "NoSchedule".to_string(),
            ),
            (
                "node.kubernetes.io/unschedulable".to_string(),
                "NoSchedule".to_string(),
            ),
        ])
        .then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_evicted_when_their_tolerations_run_out() {
    let c = Cluster::start_with(Config {
        controllers: vec!["nodelifecycle".into()],
        ..Default::default()
    })
    .await;
    add_node(&c, "n1").await;
    let toleration = |seconds: Option<i64>| {
        let mut t = serde_json::json!({"key": "example.com/drain", "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = seconds {
            t["tolerationSeconds"] = s.into();
        }
        serde_json::json!([t])
    };
    create_pod(&c, "none", Some("n1"), serde_json::Value::Null).await;
    create_pod(&c, "brief", Some("n1"), toleration(Some(2))).await;
    create_pod(&c, "forever", Some("n1"), toleration(None)).await;
    let nodes: Api<Node> = c.cluster_api();
    let taint = serde_json::json!({"spec": {"taints": [{"key": "example.com/drain", "effect": "NoExecute"}]}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    let pods: Api<Pod> = c.api("default");
    let p = eventually("the pod without a toleration to be evicted", || {
        deleted(&pods, "none")
    })
    .await;
    if let Some(p) = p {
        assert_eq!(
            pod_condition(&p, "DisruptionTarget"),
            Some(("True".into(), Some("DeletionByTaintManager".into())))
        );
    }
    let ev = eventually("the TaintManagerEviction event", || async {
        events_for(&c, "none", "TaintManagerEviction")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Marking for deletion Pod default/none")
    );
    assert_eq!(
        ev.source.unwrap().component.as_deref(),
        Some("taint-eviction-controller")
    );
    eventually("the pod tolerating 2 s to be evicted", || {
        deleted(&pods, "brief")
    })
    .await;
    // Had it been mistaken for an intolerant pod it would have gone first.
    assert!(pods
        .get("forever")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs_and_freed_ones_are_reused() {
    let c = Cluster::start_with(Config {
        controllers: vec!["nodeipam".into()],
        cluster_cidr: Some("10.42.0.0/23".parse().unwrap()),
        ..Default::default()
    })
    .await;
    let nodes: Api<Node> = c.cluster_api();
    let cidr_of = |name: &'static str| {
        let nodes = nodes.clone();
        move || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get(name).await.unwrap();
                let spec = n.spec?;
                let cidr = spec.pod_cidr?;
                assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]));
                Some(cidr)
            }
        }
    };
    add_node(&c, "n1").await;
    add_node(&c, "n2").await;
    let a = eventually("n1's podCIDR", cidr_of("n1")).await;
    let b = eventually("n2's podCIDR", cidr_of("n2")).await;
    assert_ne!(a, b);
    let mut both = vec![a.clone(), b];
    both.sort();
    assert_eq!(
        both,
        vec!["10.42.0.0/24".to_string(), "10.42.1.0/24".to_string()]
    );
    // The range is full: n3 waits, with an Event.
    add_node(&c, "n3").await;
    let ev = eventually("the CIDRNotAvailable event", || async {
        events_for(&c, "n3", "CIDRNotAvailable")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Node n3 status is now: CIDRNotAvailable")
    );
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    let got = eventually("n3 to get n1's freed podCIDR", cidr_of("n3")).await;
    assert_eq!(got, a);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gc_removes_pods_of_deleted_nodes_and_old_terminated_pods() {
    let c = Cluster::start_with(Config {
        controllers: vec!["podgc".into()],
        terminated_pod_gc_threshold: 2,
        ..Default::default()
    })
    .await;
    add_node(&c, "gone").await;
    add_node(&c, "stays").await;
    create_pod(&c, "orphan", Some("gone"), serde_json::Value::Null).await;
    create_pod(&c, "kept", Some("stays"), serde_json::Value::Null).await;
    let nodes: Api<Node> = c.cluster_api();
    nodes
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    let pods: Api<Pod> = c.api("default");
    eventually("the deleted node's pod to be removed", || async {
        pods.get_opt("orphan")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(pods.get_opt("kept").await.unwrap().is_some());

    // Four finished pods, threshold 2: the two oldest go.
    for name in ["t1", "t2", "t3", "t4"] {
        create_pod(&c, name, None, serde_json::Value::Null).await;
    }
    for name in ["t1", "t2", "t3", "t4"] {
        let status = serde_json::json!({"status": {"phase": "Succeeded"}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    eventually("the oldest terminated pods to be removed", || async {
        let mut left = Vec::new();
        for name in ["t1", "t2", "t3", "t4"] {
            if pods.get_opt(name).await.unwrap().is_some() {
                left.push(name);
            }
        }
        (left == ["t3", "t4"]).then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pods_of_an_out_of_service_node_are_force_deleted() {
    let c = Cluster::start_with(Config {
        controllers: vec!["podgc".into()],
        ..Default::default()
    })
    .await;
    add_node(&c, "n1").await;
    let pod = create_pod(&c, "p", Some("n1"), serde_json::Value::Null).await;
    c.set_running_ready(&pod).await;
    let pods: Api<Pod> = c.api("default");
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    // No kubelet finishes it: it lingers, terminating.
    assert!(pods
        .get("p")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    post_ready(&c, "n1", "False").await;
    let nodes: Api<Node> = c.cluster_api();
    let taint = serde_json::json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    eventually("the terminating pod to be force deleted", || async {
        pods.get_opt("p").await.unwrap().is_none().then_some(())
    })
    .await;
    c.shutdown().await;
}
