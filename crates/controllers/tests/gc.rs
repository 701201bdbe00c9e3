//! The garbage collector and the namespace controller against the real API server:
//! cascading deletion in the three propagation modes, dependents with several owners,
//! and a namespace emptied (with kube's status conditions) and then removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, Cluster};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use skiff_controllers::Config;

async fn cluster() -> Cluster {
    Cluster::start_with(Config {
        controllers: vec!["garbagecollector".into(), "namespace".into()],
        ..Default::default()
    })
    .await
}

async fn namespace(c: &Cluster, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    c.cluster_api::<Namespace>()
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// A reference to `owner`, blocking its foreground deletion when `block`.
fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K, block: bool) -> serde_json::Value {
    json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "name": owner.name_any(), "uid": owner.uid().unwrap(),
        "blockOwnerDeletion": block,
    })
}

async fn configmap(
    api: &Api<ConfigMap>,
    name: &str,
    owners: Vec<serde_json::Value>,
    finalizers: &[&str],
) -> ConfigMap {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers},
        "data": {"k": "v"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap()
}

async fn gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} to be deleted"), || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

fn policy(p: PropagationPolicy) -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(p),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_removes_dependents_and_theirs() {
    let c = cluster().await;
    namespace(&c, "bg").await;
    let cms: Api<ConfigMap> = c.api("bg");
    let secrets: Api<Secret> = c.api("bg");
    let owner = configmap(&cms, "owner", vec![], &[]).await;
    let d1 = configmap(&cms, "d1", vec![owner_ref(&owner, false)], &[]).await;
    configmap(&cms, "d2", vec![owner_ref(&owner, true)], &[]).await;
    let grand: Secret = serde_json::from_value(json!({
        "metadata": {"name": "grand", "ownerReferences": [owner_ref(&d1, false)]},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &grand)
        .await
        .unwrap();
    let unrelated = configmap(&cms, "unrelated", vec![], &[]).await;

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    // Background: the owner goes at once, the collector removes the rest.
    assert!(cms.get_opt("owner").await.unwrap().is_none());
    gone(&cms, "d1").await;
    gone(&cms, "d2").await;
    gone(&secrets, "grand").await;
    assert_eq!(
        cms.get("unrelated").await.unwrap().uid(),
        unrelated.uid(),
        "an object without owners is never collected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_owner_never_existed_is_collected() {
    let c = cluster().await;
    namespace(&c, "dangling").await;
    let cms: Api<ConfigMap> = c.api("dangling");
    let missing = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
        "uid": "00000000-0000-0000-0000-000000000001"});
    configmap(&cms, "orphaned", vec![missing], &[]).await;
    gone(&cms, "orphaned").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let c = cluster().await;
    namespace(&c, "fg").await;
    let cms: Api<ConfigMap> = c.api("fg");
    let owner = configmap(&cms, "owner", vec![], &[]).await;
    // The dependent is held by a finalizer of its own, so it lingers while deleted.
    configmap(
        &cms,
        "blocker",
        vec![owner_ref(&owner, true)],
        &["example.com/hold"],
    )
    .await;
    configmap(&cms, "free", vec![owner_ref(&owner, false)], &[]).await;

    cms.delete("owner", &policy(PropagationPolicy::Foreground))
        .await
        .unwrap();
    let o = cms.get("owner").await.unwrap();
    assert!(o.metadata.deletion_timestamp.is_some());
    assert_eq!(o.finalizers(), ["foregroundDeletion"]);
    // The dependents are deleted first; the owner stays while the blocker is there.
    gone(&cms, "free").await;
    eventually("the blocking dependent to be deleted", || async {
        cms.get("blocker")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
            .then_some(())
    })
    .await;
    let o = cms.get("owner").await.unwrap();
    assert_eq!(o.finalizers(), ["foregroundDeletion"], "{o:?}");
    // Its own finalizer done, the blocker goes, and then the owner.
    cms.patch(
        "blocker",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&cms, "blocker").await;
    gone(&cms, "owner").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let c = cluster().await;
    namespace(&c, "orphan").await;
    let cms: Api<ConfigMap> = c.api("orphan");
    let owner = configmap(&cms, "owner", vec![], &[]).await;
    let other = configmap(&cms, "other", vec![], &[]).await;
    configmap(&cms, "d1", vec![owner_ref(&owner, true)], &[]).await;
    configmap(
        &cms,
        "d2",
        vec![owner_ref(&owner, false), owner_ref(&other, false)],
        &[],
    )
    .await;

    cms.delete("owner", &policy(PropagationPolicy::Orphan))
        .await
        .unwrap();
    gone(&cms, "owner").await;
    let d1 = cms.get("d1").await.unwrap();
    assert!(d1.owner_references().is_empty(), "{d1:?}");
    let d2 = cms.get("d2").await.unwrap();
    let refs: Vec<&str> = d2
        .owner_references()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(refs, ["other"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_with_another_live_owner_survives() {
    let c = cluster().await;
    namespace(&c, "two").await;
    let cms: Api<ConfigMap> = c.api("two");
    let a = configmap(&cms, "a", vec![], &[]).await;
    let b = configmap(&cms, "b", vec![], &[]).await;
    let shared = configmap(
        &cms,
        "shared",
        vec![owner_ref(&a, false), owner_ref(&b, false)],
        &[],
    )
    .await;

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    // The dangling reference is dropped; the object stays for its other owner.
    eventually(
        "the reference to the deleted owner to be dropped",
        || async {
            let s = cms.get("shared").await.unwrap();
            (s.owner_references().len() == 1).then_some(s)
        },
    )
    .await;
    let s = cms.get("shared").await.unwrap();
    assert_eq!(s.uid(), shared.uid());
    assert_eq!(s.owner_references()[0].name, "b");

    cms.delete("b", &DeleteParams::default()).await.unwrap();
    gone(&cms, "shared").await;
}

fn condition(ns: &Namespace, t: &str) -> Option<(String, String, String)> {
    ns.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_empties_it_then_removes_it() {
    let c = cluster().await;
    namespace(&c, "doomed").await;
    let cms: Api<ConfigMap> = c.api("doomed");
    let secrets: Api<Secret> = c.api("doomed");
    let services: Api<Service> = c.api("doomed");
    let pods: Api<Pod> = c.api("doomed");
    configmap(&cms, "plain", vec![], &[]).await;
    configmap(&cms, "held", vec![], &["example.com/hold"]).await;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}))
            .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    // A pod bound to a node is deleted gracefully: it stays until its kubelet is done.
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "c", "image": "busybox:1.36"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let nss = c.cluster_api::<Namespace>();
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let ns = nss.get("doomed").await.unwrap();
    assert_eq!(
        ns.status.as_ref().unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert!(ns.metadata.deletion_timestamp.is_some());
    // No new content in a terminating namespace.
    let e = configmap_err(&cms).await;
    assert!(e.contains("because it is being terminated"), "{e}");

    // What can go goes; the held configmap and the terminating pod remain, and the
    // namespace says so.
    gone(&secrets, "s").await;
    gone(&services, "web").await;
    gone(&cms, "plain").await;
    let ns = eventually("the remaining content to be reported", || async {
        let ns = nss.get("doomed").await.unwrap();
        let (status, _, msg) = condition(&ns, "NamespaceContentRemaining")?;
        (status == "True" && msg.contains("pods. has 1") && msg.contains("configmaps. has 1"))
            .then_some(ns)
    })
    .await;
    let (_, reason, msg) = condition(&ns, "NamespaceContentRemaining").unwrap();
    assert_eq!(reason, "SomeResourcesRemain");
    assert_eq!(
        msg,
        "Some resources are remaining: configmaps. has 1 resource instances, pods. has 1 resource instances"
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining").unwrap(),
        (
            "True".into(),
            "SomeFinalizerRemain".into(),
            "Some finalizers are remaining: example.com/hold in 1 resource instances".into()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionDiscoveryFailure").unwrap(),
        (
            "False".into(),
            "ResourcesDiscovered".into(),
            "All resources successfully discovered".into()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionContentFailure").unwrap().1,
        "ContentDeleted"
    );
    assert_eq!(
        ns.spec.as_ref().unwrap().finalizers.as_deref(),
        Some(&["kubernetes".to_string()][..])
    );
    let p = pods.get("p").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());

    // The kubelet finishes the pod; the finalizer's owner lets go of the configmap.
    pods.delete("p", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&nss, "doomed").await;
}

async fn configmap_err(cms: &Api<ConfigMap>) -> String {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
    cms.create(&PostParams::default(), &cm)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreground_owner_waits_for_its_pods_kubelet() {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let c = cluster().await;
    namespace(&c, "pods").await;
    let rss: Api<ReplicaSet> = c.api("pods");
    let pods: Api<Pod> = c.api("pods");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}},
    }))
    .unwrap();
    let rs = rss.create(&PostParams::default(), &rs).await.unwrap();
    let mut owner = owner_ref(&rs, true);
    owner["controller"] = json!(true);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"app": "web"}, "ownerReferences": [owner]},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "c", "image": "busybox:1.36"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    rss.delete("web", &policy(PropagationPolicy::Foreground))
        .await
        .unwrap();
    // The pod is deleted gracefully; until its kubelet is done, the owner stays.
    eventually("the pod to be terminating", || async {
        pods.get("web-1")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
            .then_some(())
    })
    .await;
    assert_eq!(
        rss.get("web").await.unwrap().finalizers(),
        ["foregroundDeletion"]
    );
    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    gone(&rss, "web").await;
}
