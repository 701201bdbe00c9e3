//! The endpoint and EndpointSlice controllers against the real API server: Endpoints and
//! slices follow pod readiness, named ports resolve per pod, publishNotReadyAddresses,
//! headless Services, slices of at most 100 endpoints, and cleanup with the Service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{eventually, Cluster};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff_controllers::Config;

async fn cluster() -> Cluster {
    let c = Cluster::start_with(Config {
        controllers: vec!["endpoint".into(), "endpointslice".into()],
        ..Default::default()
    })
    .await;
    // A node without the Lease heartbeat of Cluster::add_node: only its name and zone
    // matter here.
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
    }))
    .unwrap();
    c.cluster_api::<Node>()
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    c
}

/// Creates pod `name` labelled `app=<app>` on node n1 whose container names port `http`
/// as `http_port`, then reports it with `ip` and the given readiness, as a kubelet would.
async fn pod(
    c: &Cluster,
    ns: &str,
    name: &str,
    app: &str,
    http_port: i32,
    ip: &str,
    ready: bool,
) -> Pod {
    let api: Api<Pod> = c.api(ns);
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": http_port}]}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    set_ready(c, ns, name, ip, ready).await
}

async fn set_ready(c: &Cluster, ns: &str, name: &str, ip: &str, ready: bool) -> Pod {
    let api: Api<Pod> = c.api(ns);
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        ],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("pod status")
}

async fn service(c: &Cluster, ns: &str, spec: serde_json::Value) -> Service {
    let api: Api<Service> = c.api(ns);
    let s: Service = serde_json::from_value(spec).unwrap();
    api.create(&PostParams::default(), &s)
        .await
        .expect("create service")
}

/// The IPs of each subset's ready and not-ready addresses, by the subset's ports.
fn addresses(ep: &Endpoints) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for s in ep.subsets.iter().flatten() {
        ready.extend(s.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

async fn slices(c: &Cluster, ns: &str, svc: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = c.api(ns);
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap()
        .items
}

/// ip → (ready, serving, terminating) over all slices of the Service.
async fn slice_conditions(
    c: &Cluster,
    ns: &str,
    svc: &str,
) -> BTreeMap<String, (bool, bool, bool)> {
    let mut m = BTreeMap::new();
    for s in slices(c, ns, svc).await {
        for e in s.endpoints {
            let cond = e.conditions.unwrap_or_default();
            m.insert(
                e.addresses[0].clone(),
                (
                    cond.ready.unwrap_or(false),
                    cond.serving.unwrap_or(false),
                    cond.terminating.unwrap_or(false),
                ),
            );
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pod_readiness() {
    let c = cluster().await;
    service(
        &c,
        "default",
        json!({"metadata": {"name": "web", "labels": {"team": "a"}},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    pod(&c, "default", "a", "web", 8080, "10.42.0.2", true).await;
    pod(&c, "default", "b", "web", 8080, "10.42.0.3", false).await;
    pod(&c, "default", "other", "db", 8080, "10.42.0.9", true).await;
    let eps: Api<Endpoints> = c.api("default");
    let ep = eventually("ready and not-ready addresses", || async {
        let ep = eps.get_opt("web").await.unwrap()?;
        (addresses(&ep) == (vec!["10.42.0.2".into()], vec!["10.42.0.3".into()])).then_some(ep)
    })
    .await;
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let port = &subset.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    let addr = &subset.addresses.as_ref().unwrap()[0];
    assert_eq!(addr.node_name.as_deref(), Some("n1"));
    assert_eq!(addr.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    let labels = ep.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert!(!labels.contains_key("service.kubernetes.io/headless"));
    assert!(ep
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("endpoints.kubernetes.io/last-change-trigger-time"));

    eventually("slice conditions", || async {
        let m = slice_conditions(&c, "default", "web").await;
        (m == BTreeMap::from([
            ("10.42.0.2".into(), (true, true, false)),
            ("10.42.0.3".into(), (false, false, false)),
        ]))
        .then_some(())
    })
    .await;
    let s = &slices(&c, "default", "web").await[0];
    let l = s.metadata.labels.clone().unwrap();
    assert_eq!(
        l["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(l["team"], "a");
    assert_eq!(s.address_type, "IPv4");
    assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Service", Some(true))
    );
    let e = &s.endpoints[0];
    assert_eq!(e.node_name.as_deref(), Some("n1"));
    assert_eq!(e.zone.as_deref(), Some("z1"));
    assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));

    // b turns ready; a goes unready.
    set_ready(&c, "default", "b", "10.42.0.3", true).await;
    set_ready(&c, "default", "a", "10.42.0.2", false).await;
    eventually("readiness to flip", || async {
        let ep = eps.get_opt("web").await.unwrap()?;
        (addresses(&ep) == (vec!["10.42.0.3".into()], vec!["10.42.0.2".into()])).then_some(())
    })
    .await;

    // A terminating pod leaves the Endpoints but stays in the slice, terminating.
    let pods: Api<Pod> = c.api("default");
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    // Graceful deletion: with no kubelet to finish it, the pod stays, terminating.
    let terminating = pods.get_opt("b").await.unwrap().is_some();
    assert!(
        terminating,
        "the pod is gone at once: no graceful deletion?"
    );
    eventually("the deleted pod to leave the Endpoints", || async {
        let ep = eps.get_opt("web").await.unwrap()?;
        (addresses(&ep) == (vec![], vec!["10.42.0.2".into()])).then_some(())
    })
    .await;
    eventually("a terminating endpoint in the slice", || async {
        let m = slice_conditions(&c, "default", "web").await;
        (m.get("10.42.0.3") == Some(&(false, true, true))).then_some(())
    })
    .await;

    // Deleting the Service removes its Endpoints and slices.
    let svcs: Api<Service> = c.api("default");
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the Endpoints and slices to go", || async {
        (eps.get_opt("web").await.unwrap().is_none()
            && slices(&c, "default", "web").await.is_empty())
        .then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_ports_resolve_per_pod_and_pods_without_the_name_are_left_out() {
    let c = cluster().await;
    service(
        &c,
        "default",
        json!({"metadata": {"name": "named"},
               "spec": {"selector": {"app": "n"}, "ports": [
                   {"name": "web", "port": 80, "targetPort": "http"},
                   {"name": "admin", "port": 81, "targetPort": "admin"}]}}),
    )
    .await;
    pod(&c, "default", "x", "n", 8080, "10.42.0.2", true).await;
    pod(&c, "default", "y", "n", 9090, "10.42.0.3", true).await;
    let eps: Api<Endpoints> = c.api("default");
    let ep = eventually("one subset per resolved port", || async {
        let ep = eps.get_opt("named").await.unwrap()?;
        (ep.subsets.as_ref().map_or(0, Vec::len) == 2).then_some(ep)
    })
    .await;
    let mut got: Vec<(String, i32, String)> = ep
        .subsets
        .unwrap()
        .iter()
        .flat_map(|s| {
            let ports = s.ports.clone().unwrap();
            let ip = s.addresses.as_ref().unwrap()[0].ip.clone();
            ports
                .into_iter()
                .map(move |p| (ip.clone(), p.port, p.name.unwrap_or_default()))
        })
        .collect();
    got.sort();
    // No pod names "admin": that port is left out for both.
    assert_eq!(
        got,
        vec![
            ("10.42.0.2".into(), 8080, "web".into()),
            ("10.42.0.3".into(), 9090, "web".into())
        ]
    );
    let s = eventually("two slices, one per port set", || async {
        let s = slices(&c, "default", "named").await;
        (s.len() == 2 && s.iter().all(|s| s.endpoints.len() == 1)).then_some(s)
    })
    .await;
    let mut ports: Vec<i32> = s
        .iter()
        .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, vec![8080, 9090]);

    // Deleted or edited by hand, the Endpoints come back as the Service says.
    let old_uid = ep.metadata.uid.clone();
    eps.delete("named", &DeleteParams::default()).await.unwrap();
    eventually("the Endpoints restored", || async {
        let ep = eps.get_opt("named").await.unwrap()?;
        (ep.metadata.uid != old_uid && ep.subsets.as_ref().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;
    let patch = json!({"subsets": [{"addresses": [{"ip": "192.0.2.9"}], "ports": [{"port": 1}]}]});
    eps.patch("named", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the edit reverted", || async {
        let ep = eps.get_opt("named").await.unwrap()?;
        (addresses(&ep).0 == vec!["10.42.0.2".to_string(), "10.42.0.3".to_string()]).then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_not_ready_addresses_and_headless_services() {
    let c = cluster().await;
    service(
        &c,
        "default",
        json!({"metadata": {"name": "peers"},
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
                        "selector": {"app": "p"}, "ports": [{"port": 7000}]}}),
    )
    .await;
    let api: Api<Pod> = c.api("default");
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p-0", "labels": {"app": "p"}},
        "spec": {"nodeName": "n1", "hostname": "p-0", "subdomain": "peers",
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    set_ready(&c, "default", "p-0", "10.42.0.7", false).await;
    let eps: Api<Endpoints> = c.api("default");
    let ep = eventually("the unready pod published as ready", || async {
        let ep = eps.get_opt("peers").await.unwrap()?;
        (addresses(&ep) == (vec!["10.42.0.7".into()], vec![])).then_some(ep)
    })
    .await;
    let labels = ep.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );
    let addr = &ep.subsets.unwrap()[0].addresses.clone().unwrap()[0];
    assert_eq!(addr.hostname.as_deref(), Some("p-0"));
    let s = eventually("a ready endpoint with its hostname", || async {
        let s = slices(&c, "default", "peers").await;
        s.into_iter().find(|s| {
            s.address_type == "IPv4"
                && s.endpoints.len() == 1
                && s.endpoints[0].conditions.as_ref().unwrap().ready == Some(true)
                && s.endpoints[0].conditions.as_ref().unwrap().serving == Some(false)
        })
    })
    .await;
    assert_eq!(s.endpoints[0].hostname.as_deref(), Some("p-0"));
    let l = s.metadata.labels.unwrap();
    assert_eq!(
        l.get("service.kubernetes.io/headless").map(String::as_str),
        Some("")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pods_fill_slices_of_at_most_a_hundred() {
    let c = cluster().await;
    service(
        &c,
        "default",
        json!({"metadata": {"name": "big"},
               "spec": {"selector": {"app": "big"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..250 {
        let api: Api<Pod> = c.api("default");
        let admin = c.admin.clone();
        tasks.spawn(async move {
            let name = format!("big-{i}");
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": "big"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
            }))
            .unwrap();
            api.create(&PostParams::default(), &p).await.unwrap();
            let ip = format!("10.42.{}.{}", i / 200, 2 + i % 200);
            let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}]}});
            let api: Api<Pod> = Api::namespaced(admin, "default");
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let s = eventually("250 endpoints in slices", || async {
        let s = slices(&c, "default", "big").await;
        (s.iter().map(|s| s.endpoints.len()).sum::<usize>() == 250).then_some(s)
    })
    .await;
    let mut sizes: Vec<usize> = s.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
    let eps: Api<Endpoints> = c.api("default");
    eventually("250 ready addresses", || async {
        let ep = eps.get_opt("big").await.unwrap()?;
        (addresses(&ep).0.len() == 250).then_some(())
    })
    .await;
    let svcs: Api<Service> = c.api("default");
    svcs.delete("big", &DeleteParams::default()).await.unwrap();
    eventually("the slices to go with the Service", || async {
        slices(&c, "default", "big").await.is_empty().then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_a_selector_keep_their_own_endpoints() {
    let c = cluster().await;
    service(
        &c,
        "default",
        json!({"metadata": {"name": "external"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    let kube_slices = eventually("the API server's `kubernetes` slice", || async {
        let n = slices(&c, "default", "kubernetes").await.len();
        (n > 0).then_some(n)
    })
    .await;
    let eps: Api<Endpoints> = c.api("default");
    let mine: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}],
    }))
    .unwrap();
    eps.create(&PostParams::default(), &mine).await.unwrap();
    // A selecting Service in the same namespace is reconciled meanwhile: once its
    // Endpoints exist, the controller has run past the selector-less one.
    service(
        &c,
        "default",
        json!({"metadata": {"name": "sel"}, "spec": {"selector": {"app": "z"}, "ports": [{"port": 80}]}}),
    )
    .await;
    eventually("the selecting Service's Endpoints", || async {
        eps.get_opt("sel").await.unwrap()
    })
    .await;
    let got = eps.get("external").await.unwrap();
    assert_eq!(addresses(&got).0, vec!["192.0.2.1".to_string()]);
    assert!(slices(&c, "default", "external").await.is_empty());

    // A Service that loses its selector loses its slices (its placeholder here).
    eventually("the placeholder slice", || async {
        (slices(&c, "default", "sel").await.len() == 1).then_some(())
    })
    .await;
    let svcs: Api<Service> = c.api("default");
    svcs.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"selector": null}})),
    )
    .await
    .unwrap();
    eventually("the slices of the selector-less Service to go", || async {
        slices(&c, "default", "sel").await.is_empty().then_some(())
    })
    .await;
    // The API server's own slices of `kubernetes` (no selector, no owner) are left alone.
    assert_eq!(slices(&c, "default", "kubernetes").await.len(), kube_slices);
    c.shutdown().await;
}
