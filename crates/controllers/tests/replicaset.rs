//! The ReplicaSet and ReplicationController controllers against the real API server:
//! replicas held (created, replaced, scaled down in kube's order), orphans adopted and
//! relabelled pods released, status counts, ReplicaFailure on a refused create, and a
//! burst created exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::{eventually, Cluster};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod, ReplicationController};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use skiff_controllers::Config;

async fn cluster() -> Cluster {
    Cluster::start_with(Config {
        controllers: vec!["replicaset".into(), "replicationcontroller".into()],
        ..Default::default()
    })
    .await
}

fn replica_set(name: &str, replicas: i32, extra: serde_json::Value) -> ReplicaSet {
    let mut v = serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The active pods `uid` controls.
async fn owned_pods(pods: &Api<Pod>, uid: &str) -> Vec<Pod> {
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
        .collect()
}

async fn wait_owned(pods: &Api<Pod>, uid: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} owned pods"), || async {
        let p = owned_pods(pods, uid).await;
        (p.len() == n).then_some(p)
    })
    .await
}

async fn wait_status(
    api: &Api<ReplicaSet>,
    name: &str,
    what: &str,
    f: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> bool,
) -> ReplicaSet {
    eventually(what, || async {
        let rs = api.get(name).await.unwrap();
        let st = rs.status.as_ref()?;
        (st.observed_generation == rs.metadata.generation && f(st)).then_some(rs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_replicas_replaces_a_deleted_pod_and_leaves_terminal_pods() {
    let c = cluster().await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let rs = rss
        .create(
            &PostParams::default(),
            &replica_set("web", 3, serde_json::json!({})),
        )
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    let made = wait_owned(&pods, &uid, 3).await;
    for p in &made {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("web"));
        let r = &p.owner_references()[0];
        assert_eq!((r.kind.as_str(), r.name.as_str()), ("ReplicaSet", "web"));
        assert_eq!(r.block_owner_deletion, Some(true));
    }
    wait_status(&rss, "web", "status.replicas 3", |s| {
        s.replicas == 3 && s.fully_labeled_replicas == Some(3)
    })
    .await;

    // A deleted pod is replaced by a new one.
    let gone = made[0].name_any();
    pods.delete(&gone, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let now = eventually("a replacement", || async {
        let p = owned_pods(&pods, &uid).await;
        (p.len() == 3 && p.iter().all(|p| p.name_any() != gone)).then_some(p)
    })
    .await;
    assert_eq!(now.len(), 3);

    // A pod that failed counts for nothing: replaced, and left for pod GC.
    let failed = now[0].name_any();
    pods.patch_status(
        &failed,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    eventually("a replacement for the failed pod", || async {
        let p = owned_pods(&pods, &uid).await;
        (p.len() == 3 && p.iter().all(|p| p.name_any() != failed)).then_some(())
    })
    .await;
    assert!(
        pods.get_opt(&failed).await.unwrap().is_some(),
        "the failed pod is kept"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_deletes_pending_and_not_ready_pods_first() {
    let c = cluster().await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let rs = rss
        .create(
            &PostParams::default(),
            &replica_set("down", 5, serde_json::json!({})),
        )
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    let made = wait_owned(&pods, &uid, 5).await;
    let keep: HashSet<String> = made[..2].iter().map(|p| p.name_any()).collect();
    for p in &made[..2] {
        c.set_running_ready(p).await;
    }
    // One Running but not ready: deleted before the ready ones, after the Pending ones.
    pods.patch_status(
        &made[2].name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    wait_status(&rss, "down", "2 ready", |s| s.ready_replicas == Some(2)).await;

    rss.patch(
        "down",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let left = wait_owned(&pods, &uid, 3).await;
    let left: HashSet<String> = left.iter().map(|p| p.name_any()).collect();
    assert!(keep.is_subset(&left), "ready pods kept: {left:?}");
    assert!(
        left.contains(&made[2].name_any()),
        "running pod kept over pending: {left:?}"
    );

    rss.patch(
        "down",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let left = wait_owned(&pods, &uid, 2).await;
    let left: HashSet<String> = left.iter().map(|p| p.name_any()).collect();
    assert_eq!(left, keep);
    wait_status(&rss, "down", "2 replicas", |s| s.replicas == 2).await;

    let events: Api<Event> = c.api("default");
    eventually("SuccessfulDelete events", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        evs.iter()
            .any(|e| {
                e.reason.as_deref() == Some("SuccessfulDelete")
                    && e.message.as_deref() == Some(&format!("Deleted pod: {}", made[3].name_any()))
                    && e.source.as_ref().and_then(|s| s.component.as_deref())
                        == Some("replicaset-controller")
            })
            .then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_matching_orphan_and_releases_a_relabelled_pod() {
    let c = cluster().await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    // An orphan with the selector's label but not the template's `tier`.
    let orphan: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let rs = rss
        .create(
            &PostParams::default(),
            &replica_set("adopt", 2, serde_json::json!({})),
        )
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    let owned = wait_owned(&pods, &uid, 2).await;
    assert!(
        owned.iter().any(|p| p.name_any() == "orphan"),
        "the orphan is adopted"
    );
    let st = wait_status(&rss, "adopt", "status of 2", |s| s.replicas == 2).await;
    assert_eq!(st.status.unwrap().fully_labeled_replicas, Some(1));

    // Relabel the pod the controller made: released and replaced.
    let made = owned
        .iter()
        .find(|p| p.name_any() != "orphan")
        .unwrap()
        .name_any();
    pods.patch(
        &made,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    eventually("the relabelled pod released", || async {
        let p = pods.get(&made).await.unwrap();
        p.owner_references()
            .iter()
            .all(|r| r.uid != uid)
            .then_some(())
    })
    .await;
    let owned = wait_owned(&pods, &uid, 2).await;
    assert!(owned.iter().all(|p| p.name_any() != made));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_available_counts_follow_min_ready_seconds() {
    let c = cluster().await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let rs = rss
        .create(
            &PostParams::default(),
            &replica_set(
                "avail",
                2,
                serde_json::json!({"spec": {"minReadySeconds": 3600}}),
            ),
        )
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    let made = wait_owned(&pods, &uid, 2).await;
    wait_status(&rss, "avail", "2 replicas, none ready", |s| {
        s.replicas == 2 && s.ready_replicas.unwrap_or(0) == 0
    })
    .await;
    for p in &made {
        c.set_running_ready(p).await;
    }
    let rs = wait_status(&rss, "avail", "2 ready", |s| s.ready_replicas == Some(2)).await;
    assert_eq!(rs.status.unwrap().available_replicas.unwrap_or(0), 0);

    // A short minReadySeconds: available once it has passed (the controller comes back
    // by itself).
    rss.patch(
        "avail",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"minReadySeconds": 1}})),
    )
    .await
    .unwrap();
    wait_status(&rss, "avail", "2 available", |s| {
        s.available_replicas == Some(2) && s.ready_replicas == Some(2)
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_sets_replica_failure_until_it_succeeds() {
    let c = cluster().await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    // Priority admission refuses pods of a PriorityClass that does not exist.
    let rs = rss
        .create(
            &PostParams::default(),
            &replica_set(
                "refused",
                2,
                serde_json::json!({"spec": {"template": {"spec": {"priorityClassName": "later"}}}}),
            ),
        )
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    let rs = eventually("ReplicaFailure", || async {
        let rs = rss.get("refused").await.unwrap();
        let failed = rs
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "ReplicaFailure");
        failed.then_some(rs)
    })
    .await;
    let cond = rs.status.unwrap().conditions.unwrap().remove(0);
    assert_eq!(cond.status, "True");
    assert_eq!(cond.reason.as_deref(), Some("FailedCreate"));
    let msg = cond.message.unwrap();
    assert!(
        msg.contains("no PriorityClass with name later was found"),
        "{msg}"
    );

    let events: Api<Event> = c.api("default");
    eventually("a FailedCreate event", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        evs.iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedCreate")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref().is_some_and(|m| {
                        m.starts_with("Error creating: ") && m.contains("no PriorityClass")
                    })
            })
            .then_some(())
    })
    .await;
    assert!(owned_pods(&pods, &uid).await.is_empty());

    // Once the class exists the creates succeed and the condition goes.
    let pc: PriorityClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "later"}, "value": 1000,
    }))
    .unwrap();
    c.cluster_api::<PriorityClass>()
        .create(&PostParams::default(), &pc)
        .await
        .unwrap();
    wait_owned(&pods, &uid, 2).await;
    wait_status(&rss, "refused", "the condition removed", |s| {
        s.replicas == 2 && s.conditions.as_ref().is_none_or(Vec::is_empty)
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_creates_exactly_200_pods() {
    let c = cluster().await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    // Every pod ever created, from a watch started before the ReplicaSet.
    let created = Arc::new(Mutex::new(HashSet::new()));
    let watch = {
        let (created, pods) = (created.clone(), pods.clone());
        tokio::spawn(async move {
            let mut s = watcher(pods, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev {
                    created.lock().unwrap().insert(p.name_any());
                }
            }
        })
    };
    let rs = rss
        .create(
            &PostParams::default(),
            &replica_set("burst", 200, serde_json::json!({})),
        )
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    wait_owned(&pods, &uid, 200).await;
    wait_status(&rss, "burst", "200 replicas", |s| s.replicas == 200).await;
    eventually("the watch to see 200 pods", || async {
        (created.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    // A second reconcile after the status write has run on a cache with all 200.
    rss.patch(
        "burst",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"touch": "1"}}})),
    )
    .await
    .unwrap();
    wait_status(&rss, "burst", "200 replicas again", |s| s.replicas == 200).await;
    assert_eq!(owned_pods(&pods, &uid).await.len(), 200);
    assert_eq!(
        created.lock().unwrap().len(),
        200,
        "no pod beyond 200 was ever created"
    );
    watch.abort();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_being_deleted_creates_nothing() {
    let c = cluster().await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let rs = rss
        .create(
            &PostParams::default(),
            &replica_set(
                "going",
                0,
                serde_json::json!({"metadata": {"finalizers": ["test.skiff.dev/hold"]}}),
            ),
        )
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    wait_status(&rss, "going", "status observed", |s| s.replicas == 0).await;
    rss.delete("going", &DeleteParams::default()).await.unwrap();
    rss.patch(
        "going",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    // The status is written after the create decision of the same reconcile.
    wait_status(&rss, "going", "the new generation observed", |s| {
        s.replicas == 0
    })
    .await;
    assert!(owned_pods(&pods, &uid).await.is_empty());
    rss.patch(
        "going",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_holds_its_replicas() {
    let c = cluster().await;
    let rcs: Api<ReplicationController> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let rc: ReplicationController = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "old"},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "old"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }))
    .unwrap();
    let rc = rcs.create(&PostParams::default(), &rc).await.unwrap();
    let uid = rc.uid().unwrap();
    let made = wait_owned(&pods, &uid, 2).await;
    assert!(made.iter().all(|p| p.name_any().starts_with("old-")));
    assert_eq!(made[0].owner_references()[0].kind, "ReplicationController");
    pods.delete(
        &made[0].name_any(),
        &DeleteParams::default().grace_period(0),
    )
    .await
    .unwrap();
    eventually("a replacement", || async {
        let p = owned_pods(&pods, &uid).await;
        (p.len() == 2 && p.iter().all(|p| p.name_any() != made[0].name_any())).then_some(())
    })
    .await;
    eventually("status.replicas 2", || async {
        let rc = rcs.get("old").await.unwrap();
        let st = rc.status?;
        (st.replicas == 2 && st.observed_generation == rc.metadata.generation).then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_deletes_unscheduled_pods_before_scheduled_ones() {
    let c = Cluster::start_with_scheduler(Config {
        controllers: vec!["replicaset".into()],
        ..Default::default()
    })
    .await;
    // Room for three pods: the fourth stays unscheduled, though it is alone on its
    // (empty) node name and the three are crowded on theirs.
    add_node(&c, "only", "2").await;
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let template = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "600m"}}},
    ]}}}});
    let rs = rss
        .create(&PostParams::default(), &replica_set("fit", 4, template))
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    wait_owned(&pods, &uid, 4).await;
    let bound = eventually("three pods bound", || async {
        let p = owned_pods(&pods, &uid).await;
        let bound: HashSet<String> = p
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .map(|p| p.name_any())
            .collect();
        (bound.len() == 3).then_some(bound)
    })
    .await;
    rss.patch(
        "fit",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let left = wait_owned(&pods, &uid, 3).await;
    let left: HashSet<String> = left.iter().map(|p| p.name_any()).collect();
    assert_eq!(left, bound);
    c.shutdown().await;
}

/// A Ready node with `cpu` cores (common's `add_node` renews its Lease with server-side
/// apply, which the API server refuses for now; the scheduler needs no Lease).
async fn add_node(c: &Cluster, name: &str, cpu: &str) {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = c.cluster_api();
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = serde_json::json!({"status": {
        "capacity": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}
