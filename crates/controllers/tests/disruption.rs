//! The disruption controller against the real API server: a PodDisruptionBudget's status
//! counts healthy pods against its controllers' scale.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, Cluster};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::json;
use skiff_controllers::Config;

async fn cluster() -> Cluster {
    Cluster::start_with(Config {
        controllers: vec!["disruption".into()],
        ..Default::default()
    })
    .await
}

/// A ReplicaSet of `replicas` (no replicaset controller runs: the test makes its pods).
async fn replica_set(
    c: &Cluster,
    name: &str,
    replicas: i32,
    owner: Option<&Deployment>,
) -> ReplicaSet {
    let mut rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    if let Some(d) = owner {
        rs.metadata.owner_references = Some(vec![controller(d)]);
    }
    c.api::<ReplicaSet>("default")
        .create(&PostParams::default(), &rs)
        .await
        .unwrap()
}

fn controller<K: Resource<DynamicType = ()>>(
    o: &K,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: o.meta().name.clone().unwrap(),
        uid: o.meta().uid.clone().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod labelled app=db controlled by `owner`, Ready or not.
async fn pod(c: &Cluster, name: &str, owner: &ReplicaSet, ready: bool) {
    let api: Api<Pod> = c.api("default");
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "db"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    p.metadata.owner_references = Some(vec![controller(owner)]);
    api.create(&PostParams::default(), &p).await.unwrap();
    set_ready(c, name, ready).await;
}

async fn set_ready(c: &Cluster, name: &str, ready: bool) {
    let api: Api<Pod> = c.api("default");
    let s = if ready { "True" } else { "False" };
    let patch = json!({"status": {"phase": "Running", "podIP": "10.42.0.5",
        "conditions": [{"type": "Ready", "status": s}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn pdb(c: &Cluster, name: &str, spec: serde_json::Value) {
    let p: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    c.api::<PodDisruptionBudget>("default")
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
}

/// (expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed, condition status,
/// reason) once the status is observed.
type Summary = (i32, i32, i32, i32, String, String);

fn summary(s: &PodDisruptionBudgetStatus) -> Summary {
    let c = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed")
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default();
    (
        s.expected_pods,
        s.desired_healthy,
        s.current_healthy,
        s.disruptions_allowed,
        c.0,
        c.1,
    )
}

async fn wait_status(c: &Cluster, name: &str, want: Summary) {
    let api: Api<PodDisruptionBudget> = c.api("default");
    let mut last = None;
    let got = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let p = api.get(name).await.unwrap();
            let s = p.status.clone().unwrap_or_default();
            if s.observed_generation == p.metadata.generation && summary(&s) == want {
                return;
            }
            last = Some(summary(&s));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(got.is_ok(), "{name}: want {want:?}, last {last:?}");
}

fn sum(e: i32, d: i32, h: i32, a: i32, status: &str, reason: &str) -> Summary {
    (e, d, h, a, status.into(), reason.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percentage_is_taken_of_the_controllers_scale() {
    let c = cluster().await;
    let rs = replica_set(&c, "db", 4, None).await;
    // Three of four pods exist, all Ready: 50% of the scale (4) must stay.
    for i in 0..3 {
        pod(&c, &format!("db-{i}"), &rs, true).await;
    }
    pdb(
        &c,
        "half",
        json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    pdb(
        &c,
        "one-down",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    pdb(
        &c,
        "three",
        json!({"minAvailable": 3, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    wait_status(&c, "half", sum(4, 2, 3, 1, "True", "SufficientPods")).await;
    wait_status(&c, "one-down", sum(4, 3, 3, 0, "False", "InsufficientPods")).await;
    // An integer minAvailable counts the pods there are.
    wait_status(&c, "three", sum(3, 3, 3, 0, "False", "InsufficientPods")).await;

    // The fourth arrives Ready, then two turn unready.
    pod(&c, "db-3", &rs, true).await;
    wait_status(&c, "half", sum(4, 2, 4, 2, "True", "SufficientPods")).await;
    wait_status(&c, "one-down", sum(4, 3, 4, 1, "True", "SufficientPods")).await;
    set_ready(&c, "db-0", false).await;
    set_ready(&c, "db-1", false).await;
    wait_status(&c, "half", sum(4, 2, 2, 0, "False", "InsufficientPods")).await;

    // An eviction's mark keeps a pod out of the healthy count.
    let api: Api<PodDisruptionBudget> = c.api("default");
    let now = k8s_openapi::jiff::Timestamp::now();
    let patch = json!({"status": {"disruptedPods": {"db-2": now, "gone": now}}});
    api.patch_status("half", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_status(&c, "half", sum(4, 2, 1, 0, "False", "InsufficientPods")).await;
    let s = api.get("half").await.unwrap().status.unwrap();
    let marked: Vec<String> = s.disrupted_pods.unwrap().into_keys().collect();
    assert_eq!(marked, vec!["db-2".to_string()]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_scale_counts_once_over_its_replica_sets() {
    let c = cluster().await;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    let d = c
        .api::<Deployment>("default")
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let old = replica_set(&c, "web-old", 3, Some(&d)).await;
    let new = replica_set(&c, "web-new", 3, Some(&d)).await;
    for i in 0..3 {
        pod(&c, &format!("old-{i}"), &old, true).await;
        pod(&c, &format!("new-{i}"), &new, true).await;
    }
    pdb(
        &c,
        "web",
        json!({"maxUnavailable": "34%", "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    // 34% of 6 rounds up to 3 unavailable: 3 must stay of 6 healthy.
    wait_status(&c, "web", sum(6, 3, 6, 3, "True", "SufficientPods")).await;

    // A selected pod whose controller is unknown makes the status uncomputable.
    let api: Api<Pod> = c.api("default");
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "db"}, "ownerReferences": [{
            "apiVersion": "example.com/v1", "kind": "Thing", "name": "t", "uid": "thing-uid", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    p.metadata.namespace = None;
    api.create(&PostParams::default(), &p).await.unwrap();
    let pdbs: Api<PodDisruptionBudget> = c.api("default");
    let cond = eventually("SyncFailed", || async {
        let s = pdbs.get("web").await.unwrap().status?;
        let c = s
            .conditions?
            .into_iter()
            .find(|c| c.reason == "SyncFailed")?;
        (s.disruptions_allowed == 0).then_some(c)
    })
    .await;
    assert_eq!(cond.status, "False");
    assert_eq!(cond.message, "found no controllers for pod \"stray\"");
    c.shutdown().await;
}
