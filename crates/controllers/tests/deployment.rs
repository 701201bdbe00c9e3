//! The Deployment controller against the real API server. Until the ReplicaSet
//! controller runs beside it, a stand-in (`FakeReplicaSets`) reports each ReplicaSet's
//! status as a healthy ReplicaSet controller would (every replica ready and available),
//! except for templates whose image contains "bad", whose replicas never become ready.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, Cluster};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event as WatchEvent};
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_controllers::Config;
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

async fn cluster() -> Cluster {
    Cluster::start_with(Config {
        controllers: vec!["deployment".into()],
        ..Default::default()
    })
    .await
}

/// Reports ReplicaSet statuses as a ReplicaSet controller whose pods start at once.
struct FakeReplicaSets {
    stop: CancellationToken,
}

impl Drop for FakeReplicaSets {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn image_of(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

fn fake_replica_sets(c: &Cluster) -> FakeReplicaSets {
    let stop = CancellationToken::new();
    let api: Api<ReplicaSet> = c.api(NS);
    let s = stop.clone();
    tokio::spawn(async move {
        while !s.is_cancelled() {
            for rs in api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ok = if image_of(&rs).contains("bad") {
                    0
                } else {
                    want
                };
                let status = json!({"status": {
                    "replicas": want, "fullyLabeledReplicas": want,
                    "readyReplicas": ok, "availableReplicas": ok,
                    "observedGeneration": rs.metadata.generation,
                }});
                let cur = rs.status.clone().unwrap_or_default();
                if cur.replicas != want
                    || cur.available_replicas.unwrap_or(0) != ok
                    || cur.observed_generation != rs.metadata.generation
                {
                    let _ = api
                        .patch_status(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&status),
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    FakeReplicaSets { stop }
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }))
    .unwrap()
}

async fn create(c: &Cluster, d: &Deployment) -> Deployment {
    c.api::<Deployment>(NS)
        .create(&PostParams::default(), d)
        .await
        .expect("create deployment")
}

async fn patch(c: &Cluster, name: &str, p: serde_json::Value) -> Deployment {
    c.api::<Deployment>(NS)
        .patch(name, &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("patch deployment")
}

async fn set_image(c: &Cluster, name: &str, image: &str) -> Deployment {
    patch(
        c,
        name,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}),
    )
    .await
}

async fn replica_sets(c: &Cluster, owner: &str) -> Vec<ReplicaSet> {
    let mut l: Vec<ReplicaSet> = c
        .api::<ReplicaSet>(NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|r| r.kind == "Deployment" && r.name == owner && r.controller == Some(true))
        })
        .collect();
    l.sort_by_key(revision);
    l
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, "deployment.kubernetes.io/revision")
        .parse()
        .unwrap_or(0)
}

fn annotation(rs: &ReplicaSet, key: &str) -> String {
    rs.annotations().get(key).cloned().unwrap_or_default()
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// The Deployment once its rollout is complete as `kubectl rollout status` reads it.
async fn rolled_out(c: &Cluster, name: &str) -> Deployment {
    eventually("the rollout to complete", || async {
        let d = c.api::<Deployment>(NS).get(name).await.ok()?;
        let s = d.status.clone()?;
        let want = d.spec.as_ref()?.replicas?;
        let done = d.metadata.generation <= s.observed_generation
            && s.updated_replicas.unwrap_or(0) == want
            && s.replicas.unwrap_or(0) == want
            && s.available_replicas.unwrap_or(0) == want
            && condition(&d, "Progressing").is_some_and(|c| c.1 == "NewReplicaSetAvailable");
        done.then_some(d)
    })
    .await
}

async fn events_of(c: &Cluster, name: &str) -> Vec<String> {
    c.api::<Event>(NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.kind.as_deref() == Some("Deployment")
        })
        .map(|e| {
            format!(
                "{} {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_gets_a_replica_set_named_by_its_template_hash() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    create(&c, &deployment("web", 3, "nginx:1", json!({}))).await;
    let d = rolled_out(&c, "web").await;
    let rss = replica_sets(&c, "web").await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let spec = rs.spec.clone().unwrap();
    assert_eq!(
        spec.selector.match_labels.unwrap().get("pod-template-hash"),
        Some(&hash)
    );
    let tl = spec.template.unwrap().metadata.unwrap().labels.unwrap();
    assert_eq!(tl.get("pod-template-hash"), Some(&hash));
    assert_eq!(tl.get("app").map(String::as_str), Some("web"));
    assert_eq!(replicas(rs), 3);
    assert_eq!(revision(rs), 1);
    assert_eq!(
        annotation(rs, "deployment.kubernetes.io/desired-replicas"),
        "3"
    );
    assert_eq!(annotation(rs, "deployment.kubernetes.io/max-replicas"), "4");
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let s = d.status.clone().unwrap();
    assert_eq!(s.observed_generation, d.metadata.generation);
    assert_eq!(s.ready_replicas, Some(3));
    assert_eq!(
        condition(&d, "Available"),
        Some((
            "True".into(),
            "MinimumReplicasAvailable".into(),
            "Deployment has minimum availability.".into()
        ))
    );
    assert_eq!(
        condition(&d, "Progressing"),
        Some((
            "True".into(),
            "NewReplicaSetAvailable".into(),
            format!(
                "ReplicaSet \"{}\" has successfully progressed.",
                rs.name_any()
            )
        ))
    );
    let want = format!(
        "ScalingReplicaSet Scaled up replica set {} from 0 to 3",
        rs.name_any()
    );
    eventually("the ScalingReplicaSet event", || async {
        events_of(&c, "web").await.contains(&want).then_some(())
    })
    .await;
    drop(d);
    c.shutdown().await;
}

/// Follows every ReplicaSet change of `owner` in store order and checks the rollout
/// bounds at each: spec replicas within replicas + maxSurge, available at least
/// replicas - maxUnavailable. Returns the number of states checked.
fn check_bounds(
    c: &Cluster,
    owner: &'static str,
    max_total: i32,
    min_available: i32,
) -> (CancellationToken, tokio::task::JoinHandle<usize>) {
    let api: Api<ReplicaSet> = c.api(NS);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let h = tokio::spawn(async move {
        let mut state: BTreeMap<String, (i32, i32)> = BTreeMap::new();
        let mut seen: Vec<String> = Vec::new();
        let mut checked = 0;
        let mut w = watcher(api, watcher::Config::default()).boxed();
        loop {
            let ev = tokio::select! {
                () = s.cancelled() => return checked,
                ev = w.next() => ev,
            };
            let Some(Ok(ev)) = ev else { continue };
            let rs = match ev {
                WatchEvent::Apply(rs) | WatchEvent::InitApply(rs) => rs,
                _ => continue,
            };
            if !rs.owner_references().iter().any(|r| r.name == owner) {
                continue;
            }
            let avail = rs
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            state.insert(rs.name_any(), (replicas(&rs), avail));
            seen.push(format!("{state:?}"));
            let total: i32 = state.values().map(|v| v.0).sum();
            let available: i32 = state.values().map(|v| v.1).sum();
            assert!(
                total <= max_total,
                "{total} replicas > {max_total}: {}",
                seen.join(" | ")
            );
            if state.len() > 1 {
                assert!(
                    available >= min_available,
                    "{available} available < {min_available}: {}",
                    seen.join(" | ")
                );
            }
            checked += 1;
        }
    });
    (stop, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_change_rolls_within_max_surge_and_max_unavailable() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    create(&c, &deployment("web", 10, "nginx:1", strategy)).await;
    rolled_out(&c, "web").await;
    let (stop, checker) = check_bounds(&c, "web", 13, 8);
    patch(
        &c,
        "web",
        json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "kubectl set image deployment/web app=nginx:2"}},
               "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}}),
    )
    .await;
    let d = rolled_out(&c, "web").await;
    stop.cancel();
    let checked = checker.await.expect("bounds held at every step");
    assert!(checked > 3, "saw {checked} states");
    let rss = replica_sets(&c, "web").await;
    assert_eq!(rss.len(), 2);
    assert_eq!((revision(&rss[0]), replicas(&rss[0])), (1, 0));
    assert_eq!((revision(&rss[1]), replicas(&rss[1])), (2, 10));
    assert_eq!(image_of(&rss[1]), "nginx:2");
    assert_eq!(
        annotation(&rss[1], "kubernetes.io/change-cause"),
        "kubectl set image deployment/web app=nginx:2"
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let events = events_of(&c, "web").await;
    let down = format!(
        "ScalingReplicaSet Scaled down replica set {} to 8 from 10",
        rss[0].name_any()
    );
    assert!(events.contains(&down), "{events:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_empties_the_old_replica_set_before_the_new_one_starts() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    create(
        &c,
        &deployment("db", 3, "postgres:1", json!({"type": "Recreate"})),
    )
    .await;
    rolled_out(&c, "db").await;
    // Every state of the rollout: a new ReplicaSet appears only once the old one is
    // empty, spec and status.
    let api: Api<ReplicaSet> = c.api(NS);
    let checker = tokio::spawn(async move {
        let mut old: Option<(String, i32, i32)> = None;
        let mut w = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = w.next().await {
            let Ok(WatchEvent::Apply(rs) | WatchEvent::InitApply(rs)) = ev else {
                continue;
            };
            let actual = rs.status.as_ref().map_or(0, |s| s.replicas);
            if image_of(&rs) == "postgres:1" {
                old = Some((rs.name_any(), replicas(&rs), actual));
            } else {
                let (_, spec, actual) = old.clone().expect("old first");
                assert_eq!(
                    (spec, actual),
                    (0, 0),
                    "the new ReplicaSet came while old pods ran"
                );
                if replicas(&rs) == 3 {
                    return;
                }
            }
        }
    });
    set_image(&c, "db", "postgres:2").await;
    rolled_out(&c, "db").await;
    tokio::time::timeout(Duration::from_secs(20), checker)
        .await
        .expect("checker")
        .expect("recreate order");
    let rss = replica_sets(&c, "db").await;
    assert_eq!(rss.iter().map(replicas).collect::<Vec<_>>(), [0, 3]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_only_scales_until_resumed() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    create(&c, &deployment("web", 2, "nginx:1", json!({}))).await;
    rolled_out(&c, "web").await;
    patch(&c, "web", json!({"spec": {"paused": true}})).await;
    eventually("the paused condition", || async {
        let d = c.api::<Deployment>(NS).get("web").await.ok()?;
        (condition(&d, "Progressing")
            == Some((
                "Unknown".into(),
                "DeploymentPaused".into(),
                "Deployment is paused".into(),
            )))
        .then_some(())
    })
    .await;
    set_image(&c, "web", "nginx:2").await;
    let d = patch(&c, "web", json!({"spec": {"replicas": 4}})).await;
    eventually("the paused deployment to scale", || async {
        let rss = replica_sets(&c, "web").await;
        let got = c.api::<Deployment>(NS).get("web").await.ok()?;
        let observed = got.status?.observed_generation >= d.metadata.generation;
        (observed && rss.len() == 1 && replicas(&rss[0]) == 4).then_some(())
    })
    .await;
    assert_eq!(
        image_of(&replica_sets(&c, "web").await[0]),
        "nginx:1",
        "no rollout while paused"
    );
    patch(&c, "web", json!({"spec": {"paused": false}})).await;
    let d = rolled_out(&c, "web").await;
    let rss = replica_sets(&c, "web").await;
    assert_eq!(rss.len(), 2);
    assert_eq!(
        (image_of(&rss[1]), replicas(&rss[1])),
        ("nginx:2".into(), 4)
    );
    assert_eq!(d.spec.unwrap().paused, Some(false));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_stuck_rollout_is_proportional() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    create(&c, &deployment("web", 10, "nginx:1", strategy)).await;
    rolled_out(&c, "web").await;
    set_image(&c, "web", "nginx:bad").await;
    // The new pods never become available: 3 surge, then 2 more as 2 old ones go.
    eventually("the rollout to stall at 8 old + 5 new", || async {
        let rss = replica_sets(&c, "web").await;
        let sizes: Vec<i32> = rss.iter().map(replicas).collect();
        (sizes == [8, 5]).then_some(())
    })
    .await;
    patch(&c, "web", json!({"spec": {"replicas": 20}})).await;
    // 23 allowed: old 8*23/13 → 14, new 5*23/13 → 9.
    let rss = eventually("proportional scaling", || async {
        let rss = replica_sets(&c, "web").await;
        let sizes: Vec<i32> = rss.iter().map(replicas).collect();
        (sizes == [14, 9]).then_some(rss)
    })
    .await;
    for rs in &rss {
        assert_eq!(
            annotation(rs, "deployment.kubernetes.io/desired-replicas"),
            "20"
        );
        assert_eq!(
            annotation(rs, "deployment.kubernetes.io/max-replicas"),
            "23"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_stops_at_its_progress_deadline_and_undo_restores_the_old_one() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut d = deployment("web", 4, "nginx:1", strategy);
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(2);
    create(&c, &d).await;
    rolled_out(&c, "web").await;
    let before = set_image(&c, "web", "nginx:bad").await;
    let d = eventually("ProgressDeadlineExceeded", || async {
        let d = c.api::<Deployment>(NS).get("web").await.ok()?;
        let (status, reason, _) = condition(&d, "Progressing")?;
        (status == "False" && reason == "ProgressDeadlineExceeded").then_some(d)
    })
    .await;
    let rss = replica_sets(&c, "web").await;
    assert_eq!(
        rss.iter().map(replicas).collect::<Vec<_>>(),
        [4, 1],
        "old replicas intact, no more surge"
    );
    let (_, _, message) = condition(&d, "Progressing").unwrap();
    assert_eq!(
        message,
        format!(
            "ReplicaSet \"{}\" has timed out progressing.",
            rss[1].name_any()
        )
    );
    assert_eq!(
        d.status.as_ref().unwrap().observed_generation,
        before.metadata.generation
    );
    // kubectl rollout undo: the template of revision 1 goes back into the Deployment.
    let old_template = rss[0].spec.clone().unwrap().template.unwrap();
    let mut labels = old_template.metadata.clone().unwrap().labels.unwrap();
    labels.remove("pod-template-hash");
    patch(
        &c,
        "web",
        json!({"spec": {"template": {"metadata": {"labels": labels}, "spec": old_template.spec}}}),
    )
    .await;
    rolled_out(&c, "web").await;
    let rss = replica_sets(&c, "web").await;
    assert_eq!(rss.len(), 2);
    // The undone ReplicaSet is revision 3 now and remembers it was 1.
    assert_eq!(
        (image_of(&rss[1]), revision(&rss[1]), replicas(&rss[1])),
        ("nginx:1".into(), 3, 4)
    );
    assert_eq!(
        annotation(&rss[1], "deployment.kubernetes.io/revision-history"),
        "1"
    );
    assert_eq!((revision(&rss[0]), replicas(&rss[0])), (2, 0));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    let mut d = deployment("web", 1, "nginx:1", json!({}));
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    create(&c, &d).await;
    rolled_out(&c, "web").await;
    for image in ["nginx:2", "nginx:3", "nginx:4"] {
        set_image(&c, "web", image).await;
        rolled_out(&c, "web").await;
    }
    let rss = eventually("two ReplicaSets left", || async {
        let rss = replica_sets(&c, "web").await;
        (rss.len() == 2).then_some(rss)
    })
    .await;
    assert_eq!(rss.iter().map(revision).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(image_of(&rss[1]), "nginx:4");
    c.shutdown().await;
}

/// The whole chain: the Deployment controller, the real ReplicaSet controller, the
/// scheduler and hollow nodes that run pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_the_replicaset_controller_and_hollow_nodes() {
    use k8s_openapi::api::core::v1::Pod;
    use skiff_controllers::hollow::{HollowConfig, HollowNodes};
    let c = Cluster::start_with_scheduler(Config {
        controllers: vec!["deployment".into(), "replicaset".into()],
        ..Default::default()
    })
    .await;
    let hollow = HollowNodes::start(
        c.controller_client(),
        HollowConfig {
            prefix: "deploy-node-".into(),
            count: 2,
            renew_interval: Duration::from_millis(200),
            pod_cidr_wait: Duration::ZERO,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // 30 replicas, 25% each way: at most 38 replicas, at least 23 available.
    create(&c, &deployment("web", 30, "nginx:1", json!({}))).await;
    rolled_out(&c, "web").await;
    let (stop, checker) = check_bounds(&c, "web", 38, 23);
    set_image(&c, "web", "nginx:2").await;
    rolled_out(&c, "web").await;
    stop.cancel();
    checker.await.expect("bounds held at every step");
    let rss = replica_sets(&c, "web").await;
    assert_eq!(rss.iter().map(replicas).collect::<Vec<_>>(), [0, 30]);
    let hash = rss[1].labels()["pod-template-hash"].clone();
    eventually("30 new pods and no old ones", || async {
        let pods = c
            .api::<Pod>(NS)
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let new = live
            .iter()
            .filter(|p| p.labels().get("pod-template-hash") == Some(&hash))
            .count();
        (live.len() == 30 && new == 30).then_some(())
    })
    .await;
    hollow.stop().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_strategies_are_refused_with_kubes_messages() {
    let c = Cluster::server_only().await;
    let api = c.api::<Deployment>(NS);
    let refused = |d: Deployment| {
        let api = api.clone();
        async move {
            match api.create(&PostParams::default(), &d).await {
                Err(kube::Error::Api(s)) => (s.code, s.message),
                other => panic!("not refused: {other:?}"),
            }
        }
    };
    let (code, msg) = refused(deployment(
        "a",
        1,
        "i",
        json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
    ))
    .await;
    assert_eq!(code, 422);
    assert!(msg.contains("spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"), "{msg}");
    let (_, msg) = refused(deployment(
        "b",
        1,
        "i",
        json!({"rollingUpdate": {"maxUnavailable": "101%"}}),
    ))
    .await;
    assert!(msg.contains("spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 101%: must not be greater than 100%"), "{msg}");
    let (_, msg) = refused(deployment(
        "c",
        1,
        "i",
        json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}),
    ))
    .await;
    assert!(msg.contains("spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"), "{msg}");
    let mut d = deployment("d", 1, "i", json!({}));
    d.spec.as_mut().unwrap().min_ready_seconds = Some(30);
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
    let (_, msg) = refused(d).await;
    assert!(
        msg.contains(
            "spec.progressDeadlineSeconds: Invalid value: 30: must be greater than minReadySeconds"
        ),
        "{msg}"
    );
    let (_, msg) = refused(deployment(
        "e",
        1,
        "i",
        json!({"rollingUpdate": {"maxSurge": "x%"}}),
    ))
    .await;
    assert!(
        msg.contains(
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: x%: a valid percent string"
        ),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_replica_sets_are_adopted_and_non_matching_ones_released() {
    let c = cluster().await;
    let _rs = fake_replica_sets(&c);
    let orphan: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-orphan", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:0"}]}},
        },
    }))
    .unwrap();
    let rs_api = c.api::<ReplicaSet>(NS);
    rs_api
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    create(&c, &deployment("web", 2, "nginx:1", json!({}))).await;
    rolled_out(&c, "web").await;
    // Adopted as an old ReplicaSet (another template), then rolled down to 0.
    let rss = replica_sets(&c, "web").await;
    assert_eq!(
        rss.len(),
        2,
        "{:?}",
        rss.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    let adopted = rss
        .iter()
        .find(|r| r.name_any() == "web-orphan")
        .expect("adopted");
    assert_eq!(replicas(adopted), 0);
    // Labels that no longer match: released.
    rs_api
        .patch(
            "web-orphan",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app": "other"}}})),
        )
        .await
        .unwrap();
    eventually("the release", || async {
        let rs = rs_api.get("web-orphan").await.ok()?;
        rs.owner_references().is_empty().then_some(())
    })
    .await;
    c.shutdown().await;
}
