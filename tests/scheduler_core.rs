//! The scheduler's loop against a real `skiff server`: the test runs
//! `skiff_scheduler::Scheduler` in its own process over a kube-rs client from the server's
//! kubeconfig, under a schedulerName of its own (so a scheduler built into the server
//! leaves these pods alone), writes Node objects itself, and checks bindings, the
//! Unschedulable condition and message, the FailedScheduling/Scheduled Events, the retry
//! on a cluster event and the metrics. The kubectl end-to-end cases are tests/scheduler.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
#[allow(dead_code, unused_macros)]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Server;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

const NAME: &str = "skiff-core-test";

async fn client(s: &Server) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// Polls `f` every 50 ms for at most 30 s.
async fn until<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn add_node(nodes: &Api<Node>, name: &str, cpu: &str, taint: Option<&str>) {
    let mut spec = json!({});
    if let Some(t) = taint {
        spec = json!({"taints": [{"key": t, "effect": "NoSchedule"}]});
    }
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": spec,
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let status = json!({"status": {
        "allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
        "capacity": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn pod(name: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "schedulerName": NAME,
            "containers": [{"name": "c", "image": "pause",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
        },
    }))
    .unwrap()
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())
}

fn condition(p: &Pod) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// The first Event with `reason` about pod `name`.
async fn event(events: &Api<Event>, reason: &str, name: &str) -> Option<Event> {
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find(|e| {
        e.reason.as_deref() == Some(reason)
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_loop_binds_reports_and_retries_on_node_add() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = Server::start();
    let c = client(&server).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    add_node(&nodes, "node-1", "4", None).await;
    add_node(&nodes, "node-2", "4", None).await;
    add_node(
        &nodes,
        "control",
        "4",
        Some("node-role.kubernetes.io/control-plane"),
    )
    .await;

    let config = skiff_scheduler::Config {
        scheduler_name: NAME.into(),
        ..Default::default()
    };
    let sched = skiff_scheduler::Scheduler::new(c.clone(), config);
    let metrics = sched.metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sched.run(async {
        let _ = stop_rx.await;
    }));

    // Six 1-CPU pods: all bound, none on the tainted node, no node over its 4 CPUs.
    for i in 0..6 {
        pods.create(&PostParams::default(), &pod(&format!("web-{i}"), "1"))
            .await
            .unwrap();
    }
    let placed = until("six pods bound", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let bound: Vec<(String, String)> = list
            .items
            .iter()
            .filter_map(|p| Some((p.metadata.name.clone()?, node_of(p)?)))
            .collect();
        (bound.len() == 6).then_some(bound)
    })
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (_, n) in &placed {
        *per_node.entry(n.clone()).or_default() += 1;
    }
    assert!(!per_node.contains_key("control"), "{per_node:?}");
    assert!(per_node.values().all(|&n| n <= 4), "{per_node:?}");
    // LeastAllocated spreads equal pods evenly.
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![3, 3]);

    // A pod that fits nowhere: kube's message, on the condition and in an Event.
    pods.create(&PostParams::default(), &pod("big", "3"))
        .await
        .unwrap();
    // The tainted node is unresolvable (preemption cannot help there); on the others no
    // lower-priority pod could make room.
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint \
                {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: \
                0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No \
                preemption victims found for incoming pod.";
    let cond = until("PodScheduled=False", || async {
        let p = pods.get("big").await.ok()?;
        condition(&p).filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(cond, ("False".into(), "Unschedulable".into(), want.into()));
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let failed = until("FailedScheduling event", || {
        event(&events, "FailedScheduling", "big")
    })
    .await;
    assert_eq!(failed.note.as_deref(), Some(want));

    // A bigger node appears: the parked pod is retried on that event, not by polling.
    add_node(&nodes, "node-big", "8", None).await;
    let n = until("big bound", || async {
        node_of(&pods.get("big").await.ok()?)
    })
    .await;
    assert_eq!(n, "node-big");
    let scheduled = until("Scheduled event", || event(&events, "Scheduled", "big")).await;
    assert_eq!(
        scheduled.note.as_deref(),
        Some("Successfully assigned default/big to node-big")
    );
    assert_eq!(scheduled.reporting_controller.as_deref(), Some(NAME));

    let text = metrics.encode();
    assert!(
        text.contains(&format!(
            "scheduler_schedule_attempts_total{{result=\"scheduled\",profile=\"{NAME}\"}} 7"
        )),
        "{text}"
    );
    assert!(
        text.contains("scheduler_pod_scheduling_duration_seconds_count 7"),
        "{text}"
    );

    // Many unschedulable pods at once, more than the status writers: every one gets its
    // condition (the writes are queued per pod, not dropped).
    for i in 0..40 {
        pods.create(&PostParams::default(), &pod(&format!("huge-{i}"), "100"))
            .await
            .unwrap();
    }
    until("40 pods marked unschedulable", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let marked = list
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("huge-"))
            })
            .filter(|p| condition(p).is_some_and(|c| c.0 == "False" && c.1 == "Unschedulable"))
            .count();
        (marked == 40).then_some(())
    })
    .await;
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}
