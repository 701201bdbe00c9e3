//! The DaemonSet controller against the real API server and scheduler: one pod per
//! eligible node as nodes come and go, taints, a rolling update bounded by
//! maxUnavailable, and its ControllerRevision history (with an undo as kubectl does it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{eventually, Cluster};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use skiff_controllers::Config;

async fn cluster() -> Cluster {
    Cluster::start_with_scheduler(Config {
        controllers: vec!["daemonset".into()],
        ..Default::default()
    })
    .await
}

fn daemonset(name: &str, image: &str, extra_spec: serde_json::Value) -> DaemonSet {
    let mut pod_spec = json!({
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "agent", "image": image}],
    });
    if let (Some(p), Some(e)) = (pod_spec.as_object_mut(), extra_spec.as_object()) {
        p.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }))
    .unwrap()
}

/// The DaemonSet's live pods by node (only bound, not terminating pods).
async fn pods_by_node(c: &Cluster, app: &str) -> BTreeMap<String, Pod> {
    let pods = c
        .api::<Pod>("default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap();
    pods.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p)))
        .collect()
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_node_following_nodes_added_and_deleted() {
    let c = cluster().await;
    add_node(&c, "n1", "4").await;
    add_node(&c, "n2", "4").await;
    let dss = c.api::<DaemonSet>("default");
    dss.create(
        &PostParams::default(),
        &daemonset("agent", "busybox", json!({})),
    )
    .await
    .unwrap();
    let pods = eventually("a pod bound on each of n1 and n2", || async {
        let p = pods_by_node(&c, "agent").await;
        (p.len() == 2).then_some(p)
    })
    .await;
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        ["n1".to_string(), "n2".to_string()]
    );
    let (node, pod) = pods.iter().next().unwrap();
    assert!(pod.name_any().starts_with("agent-"), "{}", pod.name_any());
    let labels = pod.labels();
    assert!(
        labels.contains_key("controller-revision-hash"),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("pod-template-generation").map(String::as_str),
        Some("1")
    );
    let spec = pod.spec.as_ref().unwrap();
    let term = &spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    let field = &term.match_fields.as_ref().unwrap()[0];
    assert_eq!(
        (field.key.as_str(), field.operator.as_str()),
        ("metadata.name", "In")
    );
    assert_eq!(field.values.as_deref(), Some(&[node.clone()][..]));
    let tolerated: BTreeSet<String> = spec
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| Some(format!("{}:{}", t.key.clone()?, t.effect.clone()?)))
        .collect();
    for t in [
        "node.kubernetes.io/not-ready:NoExecute",
        "node.kubernetes.io/unreachable:NoExecute",
        "node.kubernetes.io/disk-pressure:NoSchedule",
        "node.kubernetes.io/memory-pressure:NoSchedule",
        "node.kubernetes.io/pid-pressure:NoSchedule",
        "node.kubernetes.io/unschedulable:NoSchedule",
    ] {
        assert!(tolerated.contains(t), "{t} missing from {tolerated:?}");
    }
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("DaemonSet", Some(true))
    );

    add_node(&c, "n3", "4").await;
    eventually("a pod on the new node n3", || async {
        pods_by_node(&c, "agent")
            .await
            .contains_key("n3")
            .then_some(())
    })
    .await;

    c.cluster_api::<Node>()
        .delete("n2", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "n2's pod deleted and the status to count two nodes",
        || async {
            let p = pods_by_node(&c, "agent").await;
            let ds = dss.get("agent").await.ok()?;
            let st = ds.status?;
            (p.keys().cloned().collect::<Vec<_>>() == ["n1", "n3"]
                && st.desired_number_scheduled == 2
                && st.current_number_scheduled == 2
                && st.number_misscheduled == 0
                && st.observed_generation == Some(1))
            .then_some(())
        },
    )
    .await;

    // A ready pod counts as ready and available.
    for p in pods_by_node(&c, "agent").await.values() {
        set_running_ready(&c, p).await;
    }
    eventually("numberReady and numberAvailable 2", || async {
        let st = dss.get("agent").await.ok()?.status?;
        (st.number_ready == 2
            && st.number_available == Some(2)
            && st.number_unavailable == Some(0)
            && st.updated_number_scheduled == Some(2))
        .then_some(())
    })
    .await;

    // A failed pod is deleted and made again.
    let failed = pods_by_node(&c, "agent").await["n1"].clone();
    c.api::<Pod>("default")
        .patch_status(
            &failed.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "conditions": [
                {"type": "Ready", "status": "False"}]}})),
        )
        .await
        .unwrap();
    eventually("a new pod on n1 in place of the failed one", || async {
        let p = pods_by_node(&c, "agent").await;
        let now = p.get("n1")?;
        (now.metadata.uid != failed.metadata.uid && util_phase(now) != "Failed").then_some(())
    })
    .await;
    eventually("SuccessfulCreate and SuccessfulDelete events", || async {
        let evs = c
            .api::<Event>("default")
            .list(&ListParams::default())
            .await
            .ok()?;
        let seen = |reason: &str, msg: String| {
            evs.items.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.message.as_deref() == Some(msg.as_str())
                    && e.source.as_ref().and_then(|s| s.component.as_deref())
                        == Some("daemonset-controller")
            })
        };
        (seen(
            "SuccessfulCreate",
            format!("Created pod: {}", pod.name_any()),
        ) && seen(
            "SuccessfulDelete",
            format!("Deleted pod: {}", failed.name_any()),
        ))
        .then_some(())
    })
    .await;
    c.shutdown().await;
}

fn util_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_surge_starts_the_new_pod_before_the_old_one_goes() {
    let c = cluster().await;
    add_node(&c, "n1", "4").await;
    add_node(&c, "n2", "4").await;
    let dss = c.api::<DaemonSet>("default");
    let mut ds = daemonset("surge", "nginx:1", json!({}));
    ds.spec.as_mut().unwrap().update_strategy = serde_json::from_value(json!({
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}))
    .unwrap();
    dss.create(&PostParams::default(), &ds).await.unwrap();
    let all = || async {
        c.api::<Pod>("default")
            .list(&ListParams::default().labels("app=surge"))
            .await
            .unwrap()
            .items
    };
    eventually("two ready pods", || async {
        for p in pods_by_node(&c, "surge").await.values() {
            if !is_ready(p) {
                set_running_ready(&c, p).await;
            }
        }
        let st = dss.get("surge").await.ok()?.status?;
        (st.number_available == Some(2)).then_some(())
    })
    .await;
    dss.patch(
        "surge",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "agent", "image": "nginx:2"}]}}}})),
    )
    .await
    .unwrap();
    let surged = std::cell::Cell::new(false);
    eventually("both nodes on nginx:2, each surged first", || async {
        let pods = all().await;
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for p in &pods {
            if p.metadata.deletion_timestamp.is_none() {
                if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    *per_node.entry(n).or_default() += 1;
                }
            }
        }
        // maxUnavailable 0: every node keeps a ready pod throughout.
        for n in ["n1", "n2"] {
            assert!(
                pods.iter()
                    .any(
                        |p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n)
                            && is_ready(p)
                            && p.metadata.deletion_timestamp.is_none()
                    ),
                "{n} has no ready pod"
            );
        }
        if per_node.values().any(|c| *c == 2) {
            surged.set(true);
        }
        // Mark only one new pod at a time, so the surge is visible.
        for p in &pods {
            if !is_ready(p) && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                set_running_ready(&c, p).await;
                break;
            }
        }
        let p = pods_by_node(&c, "surge").await;
        (p.len() == 2 && p.values().all(|p| image(p) == "nginx:2" && is_ready(p))).then_some(())
    })
    .await;
    assert!(
        surged.get(),
        "no node ever ran the old and the new pod together"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tainted_node_is_skipped_unless_tolerated() {
    let c = cluster().await;
    add_node(&c, "plain", "4").await;
    add_node(&c, "gpu", "4").await;
    c.cluster_api::<Node>()
        .patch(
            "gpu",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    let dss = c.api::<DaemonSet>("default");
    dss.create(
        &PostParams::default(),
        &daemonset("plain", "busybox", json!({})),
    )
    .await
    .unwrap();
    dss.create(
        &PostParams::default(),
        &daemonset(
            "tolerant",
            "busybox",
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        ),
    )
    .await
    .unwrap();
    eventually("the tolerant DaemonSet on both nodes", || async {
        (pods_by_node(&c, "tolerant").await.len() == 2).then_some(())
    })
    .await;
    eventually("the plain DaemonSet only on the untainted node", || async {
        let p = pods_by_node(&c, "plain").await;
        let st = dss.get("plain").await.ok()?.status?;
        (p.keys().cloned().collect::<Vec<_>>() == ["plain"] && st.desired_number_scheduled == 1)
            .then_some(())
    })
    .await;
    // Tolerating it afterwards brings a pod there too.
    dss.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Exists"}]}}}})),
    )
    .await
    .unwrap();
    eventually(
        "the plain DaemonSet on the tainted node once it tolerates it",
        || async {
            pods_by_node(&c, "plain")
                .await
                .contains_key("gpu")
                .then_some(())
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_replaces_one_node_at_a_time_and_history_records_it() {
    let c = cluster().await;
    for n in ["n1", "n2", "n3"] {
        add_node(&c, n, "4").await;
    }
    let dss = c.api::<DaemonSet>("default");
    let mut ds = daemonset("web", "nginx:1", json!({}));
    ds.metadata.annotations = Some(
        [(
            "kubernetes.io/change-cause".to_string(),
            "first".to_string(),
        )]
        .into(),
    );
    dss.create(&PostParams::default(), &ds).await.unwrap();
    // Acts as the kubelets: every bound pod becomes Running and Ready.
    let ready_all = || async {
        let pods = pods_by_node(&c, "web").await;
        for p in pods.values() {
            if !p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            {
                set_running_ready(&c, p).await;
            }
        }
        pods
    };
    eventually("three ready pods", || async {
        ready_all().await;
        let st = dss.get("web").await.ok()?.status?;
        (st.number_ready == 3 && st.number_available == Some(3)).then_some(())
    })
    .await;

    dss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "agent", "image": "nginx:2"}]}}}})),
    )
    .await
    .unwrap();
    let saw_v2_while_v1_left = std::cell::Cell::new(false);
    eventually("every node on nginx:2, one node at a time", || async {
        let before = pods_by_node(&c, "web").await;
        let ready_old = before.values().filter(|p| image(p) == "nginx:1").count();
        let new = before.values().filter(|p| image(p) == "nginx:2").count();
        // maxUnavailable 1: at most one node lacks an available pod; the new pods we
        // have not marked ready yet are the unavailable ones.
        let unready_new = new
            - before
                .values()
                .filter(|p| image(p) == "nginx:2" && is_ready(p))
                .count();
        assert!(
            ready_old + new >= 2 && unready_new + (3 - ready_old - new) <= 1,
            "more than one node unavailable: {} old, {} new ({} unready)",
            ready_old,
            new,
            unready_new
        );
        if ready_old > 0 && new > 0 {
            saw_v2_while_v1_left.set(true);
        }
        let pods = ready_all().await;
        let st = dss.get("web").await.ok()?.status?;
        (pods.len() == 3
            && pods.values().all(|p| image(p) == "nginx:2")
            && st.updated_number_scheduled == Some(3)
            && st.number_available == Some(3))
        .then_some(())
    })
    .await;
    assert!(
        saw_v2_while_v1_left.get(),
        "the update replaced every pod at once"
    );

    // History: two revisions, the newest the pods' hash.
    let revs = c.api::<ControllerRevision>("default");
    let by_revision = || async {
        let list = revs
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        list.items
            .into_iter()
            .map(|r| (r.revision, r))
            .collect::<BTreeMap<i64, ControllerRevision>>()
    };
    let history = by_revision().await;
    assert_eq!(history.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let hash = pods_by_node(&c, "web")
        .await
        .values()
        .next()
        .unwrap()
        .labels()["controller-revision-hash"]
        .clone();
    assert_eq!(
        history[&1]
            .annotations()
            .get("kubernetes.io/change-cause")
            .map(String::as_str),
        Some("first"),
        "the revision keeps the change cause"
    );
    let rev2 = &history[&2];
    assert_eq!(rev2.name_any(), format!("web-{hash}"));
    assert_eq!(rev2.labels()["controller-revision-hash"], hash);
    assert_eq!(rev2.owner_references()[0].kind, "DaemonSet");
    let data = &rev2.data.as_ref().unwrap().0;
    assert_eq!(
        data.pointer("/spec/template/$patch"),
        Some(&json!("replace"))
    );
    assert_eq!(
        data.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("nginx:2"))
    );

    // kubectl rollout undo: the old revision's data as a strategic merge patch. The
    // controller reuses that revision as revision 3 instead of making a third.
    let old = history[&1].clone();
    dss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(old.data.as_ref().unwrap().0.clone()),
    )
    .await
    .unwrap();
    eventually("the undone revision renumbered 3", || async {
        let h = by_revision().await;
        (h.len() == 2 && h.get(&3).is_some_and(|r| r.name_any() == old.name_any())).then_some(())
    })
    .await;
    eventually("every node back on nginx:1", || async {
        let pods = ready_all().await;
        (pods.len() == 3 && pods.values().all(|p| image(p) == "nginx:1")).then_some(())
    })
    .await;
    c.shutdown().await;
}

/// Registers a Ready node, as `Cluster::add_node` does but without its Lease (whose
/// server-side apply the API server refuses for now; no test here reads leases).
async fn add_node(c: &Cluster, name: &str, cpu: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
    }))
    .unwrap();
    let nodes = c.cluster_api::<Node>();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = json!({"status": {
        "capacity": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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
