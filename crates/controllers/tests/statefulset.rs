//! The StatefulSet controller against the real API server: ordered creation with claims,
//! scale-down from the highest ordinal, failed pods replaced, and a partitioned rolling
//! update. The test plays the kubelet, marking pods Running and Ready.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{eventually, Cluster};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use skiff_controllers::Config;

async fn cluster() -> Cluster {
    Cluster::start_with(Config {
        // Claims carry the pvc-protection finalizer: its controller lets them go.
        controllers: vec![
            "statefulset".into(),
            "garbagecollector".into(),
            "pvc-protection".into(),
        ],
        ..Default::default()
    })
    .await
}

fn statefulset(name: &str, replicas: i32, extra: serde_json::Value) -> StatefulSet {
    let mut spec = json!({
        "replicas": replicas,
        "serviceName": "nginx",
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1",
                "volumeMounts": [{"name": "www", "mountPath": "/usr/share/nginx/html"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "www"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

async fn pods(c: &Cluster, app: &str) -> BTreeMap<String, Pod> {
    c.api::<Pod>("default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(p: &Pod) -> &str {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .as_deref()
        .unwrap_or_default()
}

/// Plays the kubelet: every pod not yet ready becomes Running and Ready.
async fn ready_all(c: &Cluster, app: &str) -> BTreeMap<String, Pod> {
    let ps = pods(c, app).await;
    for p in ps.values() {
        let failed = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
        if !is_ready(p) && !failed && p.metadata.deletion_timestamp.is_none() {
            set_running_ready(c, p).await;
        }
    }
    ps
}

/// `Cluster::set_running_ready`, but a pod deleted meanwhile (by the controller) is no
/// failure.
async fn set_running_ready(c: &Cluster, p: &Pod) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = json!({"status": {
        "phase": "Running", "podIP": "10.42.0.10", "startTime": now,
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ],
    }});
    let r = c
        .api::<Pod>("default")
        .patch_status(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await;
    match r {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("mark {} ready: {e}", p.name_any()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_creation_claims_failed_pods_and_scale_down() {
    let c = cluster().await;
    let sets = c.api::<StatefulSet>("default");
    sets.create(&PostParams::default(), &statefulset("web", 3, json!({})))
        .await
        .unwrap();
    eventually("web-0 created and counted", || async {
        let st = sets.get("web").await.ok()?.status?;
        (st.replicas == 1).then_some(())
    })
    .await;
    let ps = pods(&c, "web").await;
    assert_eq!(
        ps.keys().collect::<Vec<_>>(),
        ["web-0"],
        "web-1 made before web-0 was ready"
    );
    let web0 = &ps["web-0"];
    let labels = web0.labels();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    let st = sets.get("web").await.unwrap().status.unwrap();
    let update_revision = st.update_revision.clone().unwrap();
    assert!(update_revision.starts_with("web-"), "{update_revision}");
    assert_eq!(labels["controller-revision-hash"], update_revision);
    assert_eq!(
        st.current_revision.as_deref(),
        Some(update_revision.as_str())
    );
    let spec = web0.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "www")
        .unwrap();
    assert_eq!(
        vol.persistent_volume_claim.as_ref().unwrap().claim_name,
        "www-web-0"
    );
    let claims = c.api::<PersistentVolumeClaim>("default");
    let claim = claims.get("www-web-0").await.expect("claim www-web-0");
    assert_eq!(claim.labels()["app"], "web");
    assert!(
        claim.metadata.owner_references.is_none(),
        "Retain: no owners"
    );
    eventually("the SuccessfulCreate event", || async {
        let evs = c
            .api::<Event>("default")
            .list(&ListParams::default())
            .await
            .ok()?;
        evs.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("SuccessfulCreate")
                    && e.message.as_deref()
                        == Some("create Pod web-0 in StatefulSet web successful")
                    && e.source.as_ref().and_then(|s| s.component.as_deref())
                        == Some("statefulset-controller")
            })
            .then_some(())
    })
    .await;

    set_running_ready(&c, web0).await;
    eventually("web-1 once web-0 is ready", || async {
        pods(&c, "web").await.contains_key("web-1").then_some(())
    })
    .await;
    assert!(!pods(&c, "web").await.contains_key("web-2"));
    eventually("all three ready", || async {
        let ps = ready_all(&c, "web").await;
        let st = sets.get("web").await.ok()?.status?;
        (ps.len() == 3
            && st.ready_replicas == Some(3)
            && st.available_replicas == Some(3)
            && st.current_replicas == Some(3)
            && st.updated_replicas == Some(3))
        .then_some(())
    })
    .await;
    for n in ["www-web-1", "www-web-2"] {
        claims.get(n).await.expect(n);
    }

    // A failed pod is replaced under the same name.
    let old_uid = pods(&c, "web").await["web-1"].metadata.uid.clone();
    c.api::<Pod>("default")
        .patch_status(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "conditions": [
                {"type": "Ready", "status": "False"}]}})),
        )
        .await
        .unwrap();
    eventually("web-1 made again", || async {
        let ps = ready_all(&c, "web").await;
        let p = ps.get("web-1")?;
        (p.metadata.uid != old_uid && ps.len() == 3).then_some(())
    })
    .await;
    eventually("three ready again", || async {
        ready_all(&c, "web").await;
        let st = sets.get("web").await.ok()?.status?;
        (st.ready_replicas == Some(3)).then_some(())
    })
    .await;

    // Scale down: web-2 goes before web-1.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("only web-0 left, highest ordinal first", || async {
        let ps = pods(&c, "web").await;
        assert!(
            ps.contains_key("web-1") || !ps.contains_key("web-2"),
            "web-1 deleted before web-2: {:?}",
            ps.keys().collect::<Vec<_>>()
        );
        let st = sets.get("web").await.ok()?.status?;
        (ps.keys().collect::<Vec<_>>() == ["web-0"] && st.replicas == 1).then_some(())
    })
    .await;
    // Retain keeps the claims.
    claims.get("www-web-2").await.expect("claim kept");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_rolling_update_leaves_lower_ordinals_alone() {
    let c = cluster().await;
    let sets = c.api::<StatefulSet>("default");
    sets.create(
        &PostParams::default(),
        &statefulset(
            "db",
            3,
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}),
        ),
    )
    .await
    .unwrap();
    eventually("three ready", || async {
        ready_all(&c, "db").await;
        let st = sets.get("db").await.ok()?.status?;
        (st.ready_replicas == Some(3)).then_some(())
    })
    .await;
    let first = sets
        .get("db")
        .await
        .unwrap()
        .status
        .unwrap()
        .update_revision
        .unwrap();

    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2"}]}}}})),
    )
    .await
    .unwrap();
    let st = eventually("db-2 and db-1 on nginx:2, in that order", || async {
        let ps = ready_all(&c, "db").await;
        if ps.get("db-1").is_some_and(|p| image(p) == "nginx:2") {
            assert!(
                ps.get("db-2").is_some_and(|p| image(p) == "nginx:2"),
                "db-1 updated before db-2"
            );
        }
        let st = sets.get("db").await.ok()?.status?;
        (ps.len() == 3
            && image(&ps["db-2"]) == "nginx:2"
            && image(&ps["db-1"]) == "nginx:2"
            && st.updated_replicas == Some(2)
            && st.ready_replicas == Some(3))
        .then_some(st)
    })
    .await;
    let ps = pods(&c, "db").await;
    assert_eq!(image(&ps["db-0"]), "nginx:1", "below the partition");
    assert_eq!(ps["db-0"].labels()["controller-revision-hash"], first);
    assert_eq!(st.current_revision.as_deref(), Some(first.as_str()));
    assert_ne!(st.update_revision.as_deref(), Some(first.as_str()));
    assert_eq!(st.current_replicas, Some(1));

    // Partition 0 finishes the update and the update revision becomes current.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    eventually("db-0 on nginx:2 and the revision current", || async {
        let ps = ready_all(&c, "db").await;
        let st = sets.get("db").await.ok()?.status?;
        (ps.len() == 3
            && ps.values().all(|p| image(p) == "nginx:2")
            && st.current_revision == st.update_revision
            && st.current_replicas == Some(3))
        .then_some(())
    })
    .await;

    // History: two revisions; `kubectl rollout undo` patches the first one's data back,
    // and the controller renumbers that revision 3 rather than making another.
    let revs = c.api::<ControllerRevision>("default");
    let history = || async {
        revs.list(&ListParams::default().labels("app=db"))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|r| (r.revision, r))
            .collect::<BTreeMap<i64, ControllerRevision>>()
    };
    let h = history().await;
    assert_eq!(h.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(h[&1].name_any(), first);
    let data = h[&1].data.as_ref().unwrap().0.clone();
    assert_eq!(
        data.pointer("/spec/template/$patch"),
        Some(&json!("replace"))
    );
    sets.patch("db", &PatchParams::default(), &Patch::Strategic(data))
        .await
        .unwrap();
    eventually(
        "the first revision renumbered 3 and every pod back on nginx:1",
        || async {
            let ps = ready_all(&c, "db").await;
            let h = history().await;
            let st = sets.get("db").await.ok()?.status?;
            (h.len() == 2
                && h.get(&3).is_some_and(|r| r.name_any() == first)
                && ps.len() == 3
                && ps.values().all(|p| image(p) == "nginx:1")
                && st.current_revision.as_deref() == Some(first.as_str()))
            .then_some(())
        },
    )
    .await;

    // revisionHistoryLimit 0 drops the revision no pod runs any more.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"revisionHistoryLimit": 0}})),
    )
    .await
    .unwrap();
    eventually("only the current revision kept", || async {
        let h = history().await;
        (h.len() == 1 && h.values().all(|r| r.name_any() == first)).then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_pods_come_at_once_and_scaled_claims_get_the_pod_as_owner() {
    let c = cluster().await;
    // An orphan already named as the set's ordinal 0 is adopted and given its identity.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "par-0", "labels": {"app": "par"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
    }))
    .unwrap();
    c.api::<Pod>("default")
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    let sets = c.api::<StatefulSet>("default");
    sets.create(
        &PostParams::default(),
        &statefulset(
            "par",
            3,
            json!({"podManagementPolicy": "Parallel",
                   "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}),
        ),
    )
    .await
    .unwrap();
    // No pod is ready, yet all three are made.
    eventually("three pods without waiting", || async {
        (pods(&c, "par").await.len() == 3).then_some(())
    })
    .await;
    let set_uid = sets.get("par").await.unwrap().metadata.uid.unwrap();
    eventually("par-0 adopted with its identity labels", || async {
        let p = pods(&c, "par").await.remove("par-0")?;
        (p.owner_references()
            .first()
            .is_some_and(|o| o.uid == set_uid)
            && p.labels()
                .get("statefulset.kubernetes.io/pod-name")
                .map(String::as_str)
                == Some("par-0")
            && p.labels()
                .get("apps.kubernetes.io/pod-index")
                .map(String::as_str)
                == Some("0"))
        .then_some(())
    })
    .await;
    let claims = c.api::<PersistentVolumeClaim>("default");
    let claim = claims.get("www-par-2").await.unwrap();
    let owners = claim.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("StatefulSet", set_uid.as_str())
    );
    sets.patch(
        "par",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    // whenScaled: Delete makes the pod the claim's owner before the pod goes, so the
    // claim goes with it; the claims of kept pods stay, owned by the set.
    eventually("par-2 and its claim gone", || async {
        let ps = pods(&c, "par").await;
        let gone = claims.get_opt("www-par-2").await.ok()?.is_none();
        (!ps.contains_key("par-2") && gone).then_some(())
    })
    .await;
    let kept = claims.get("www-par-1").await.unwrap();
    assert_eq!(kept.owner_references()[0].uid, set_uid);
    c.shutdown().await;
}
