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

const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Evicts `name`, returning the refusal's Status.
async fn evict(c: &Cluster, name: &str, dry_run: bool) -> Result<(), Box<kube::core::Status>> {
    let mut params = kube::api::EvictParams::default();
    params.post_options.dry_run = dry_run;
    match c.api::<Pod>("default").evict(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s),
        Err(e) => panic!("evicting {name}: {e}"),
    }
}

/// The refusal's code, reason, message and DisruptionBudget cause message.
fn refusal(s: &kube::core::Status) -> (u16, String, String, String) {
    let cause = s
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .find(|c| c.reason == "DisruptionBudget")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    (s.code, s.reason.clone(), s.message.clone(), cause)
}

fn refused(cause: &str) -> (u16, String, String, String) {
    (429, "TooManyRequests".into(), VIOLATES.into(), cause.into())
}

async fn still_there(c: &Cluster, name: &str) {
    let p = c.api::<Pod>("default").get(name).await.unwrap();
    assert!(
        p.metadata.deletion_timestamp.is_none(),
        "{name} is being deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_that_would_break_the_budget_is_refused() {
    let c = cluster().await;
    let rs = replica_set(&c, "db", 2, None).await;
    pod(&c, "db-0", &rs, true).await;
    pod(&c, "db-1", &rs, true).await;
    pdb(
        &c,
        "db",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    wait_status(&c, "db", sum(2, 2, 2, 0, "False", "InsufficientPods")).await;
    let s = evict(&c, "db-0", false).await.unwrap_err();
    assert_eq!(
        refusal(&s),
        refused("The disruption budget db needs 2 healthy pods and has 2 currently")
    );
    still_there(&c, "db-0").await;

    // An unready pod goes free only while the budget has its healthy pods: here it
    // has not, so the unready pod is refused too.
    set_ready(&c, "db-1", false).await;
    wait_status(&c, "db", sum(2, 2, 1, 0, "False", "InsufficientPods")).await;
    let s = evict(&c, "db-1", false).await.unwrap_err();
    assert_eq!(
        refusal(&s),
        refused("The disruption budget db needs 2 healthy pods and has 1 currently")
    );
    still_there(&c, "db-1").await;

    // Two budgets over one pod: the eviction subresource does not support it.
    pdb(
        &c,
        "db-too",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    let s = evict(&c, "db-0", false).await.unwrap_err();
    assert_eq!(
        (s.code, s.message.as_str()),
        (
            500,
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
        )
    );
    still_there(&c, "db-0").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_consumes_the_budget() {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};

    let c = cluster().await;
    let rs = replica_set(&c, "db", 2, None).await;
    pod(&c, "db-0", &rs, true).await;
    pod(&c, "db-1", &rs, true).await;
    pdb(
        &c,
        "db",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    wait_status(&c, "db", sum(2, 1, 2, 1, "True", "SufficientPods")).await;
    let pdbs: Api<PodDisruptionBudget> = c.api("default");

    // A dry run neither deletes the pod nor touches the budget.
    evict(&c, "db-1", true).await.unwrap();
    still_there(&c, "db-1").await;
    let before = pdbs.get("db").await.unwrap();
    let s = before.status.clone().unwrap();
    assert_eq!((s.disruptions_allowed, s.disrupted_pods), (1, None));

    // Watch the budget from here, to see the eviction's write whatever the controller
    // does after it.
    let rv = before.metadata.resource_version.clone().unwrap();
    let mut events = pdbs
        .watch(&WatchParams::default().fields("metadata.name=db"), &rv)
        .await
        .unwrap()
        .boxed();
    evict(&c, "db-0", false).await.unwrap();
    let consumed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            if let WatchEvent::Modified(p) = e.unwrap() {
                let s = p.status.unwrap_or_default();
                if s.disrupted_pods.is_some_and(|m| m.contains_key("db-0")) {
                    return Some(s.disruptions_allowed);
                }
            }
        }
        None
    })
    .await
    .expect("the eviction marks db-0 in disruptedPods");
    assert_eq!(consumed, Some(0));
    let gone = eventually("db-0 deleted", || async {
        match c.api::<Pod>("default").get_opt("db-0").await.unwrap() {
            None => Some(()),
            Some(p) => p.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await;
    assert_eq!(gone, ());

    // Nothing is left to disrupt: an immediate second eviction is refused.
    let s = evict(&c, "db-1", false).await.unwrap_err();
    let (code, reason, message, cause) = refusal(&s);
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (429, "TooManyRequests", VIOLATES)
    );
    assert!(
        cause.starts_with("The disruption budget db needs 1 healthy pods and has "),
        "{cause}"
    );
    still_there(&c, "db-1").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_and_pending_pods_go_without_using_the_budget() {
    let c = cluster().await;
    let rs = replica_set(&c, "db", 3, None).await;
    pod(&c, "db-0", &rs, true).await;
    pod(&c, "db-1", &rs, true).await;
    pod(&c, "db-2", &rs, false).await;
    pdb(
        &c,
        "db",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    wait_status(&c, "db", sum(3, 2, 2, 0, "False", "InsufficientPods")).await;

    // Unready, and the budget has the healthy pods it needs (IfHealthyBudget).
    evict(&c, "db-2", false).await.unwrap();
    let gone = c.api::<Pod>("default").get_opt("db-2").await.unwrap();
    assert!(gone.is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
    let s = c
        .api::<PodDisruptionBudget>("default")
        .get("db")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(s.disrupted_pods, None);

    // A pod not yet running is no disruption.
    let api: Api<Pod> = c.api("default");
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db-3", "labels": {"app": "db"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    p.metadata.owner_references = Some(vec![controller(&rs)]);
    api.create(&PostParams::default(), &p).await.unwrap();
    evict(&c, "db-3", false).await.unwrap();

    // A ready one is still guarded.
    let s = evict(&c, "db-0", false).await.unwrap_err();
    assert_eq!(refusal(&s).0, 429);
    still_there(&c, "db-0").await;
    c.shutdown().await;
}
