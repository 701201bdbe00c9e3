//! kube-rs as a client of `skiff server`, configured from the server's generated
//! kubeconfig as a user would: typed `Api` CRUD, the three patch types and paged lists; a
//! `watcher` + reflector that follows the server across a restart; and a small
//! `Controller` that keeps one ConfigMap in every Namespace.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::common::Server;

/// A kube-rs client for `s` from the kubeconfig it wrote (admin client certificate).
pub async fn client(s: &Server) -> Client {
    s.kube_client().await
}

/// Polls `f` every 100 ms until it returns Some, for at most 30 s.
pub async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// What a client's view of ConfigMaps is compared on: name -> (resourceVersion, data).
pub type View = BTreeMap<String, (String, BTreeMap<String, String>)>;

pub fn view<'a>(objs: impl IntoIterator<Item = &'a ConfigMap>) -> View {
    objs.into_iter()
        .map(|c| {
            (
                c.name_any(),
                (
                    c.resource_version().unwrap_or_default(),
                    c.data.clone().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

pub fn reader_view(r: &Store<ConfigMap>) -> View {
    let objs = r.state();
    view(objs.iter().map(|o| o.as_ref()))
}

/// The server's own answer, for comparison with a client's view.
pub async fn listed(api: &Api<ConfigMap>) -> View {
    view(&api.list(&ListParams::default()).await.expect("list").items)
}

fn api_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_crud_patch_and_paged_list() {
    let s = Server::start();
    let c = client(&s).await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("kube-rs".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-rs");

    // Create and get.
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("k", "1")]))
        .await
        .unwrap();
    assert!(created.uid().is_some_and(|u| !u.is_empty()), "{created:?}");
    assert!(created.metadata.creation_timestamp.is_some());
    let got = cms.get("a").await.unwrap();
    assert_eq!(got.resource_version(), created.resource_version());
    assert_eq!(got.namespace().as_deref(), Some("kube-rs"));
    let e = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 409, "{e}");

    // Replace with the current resourceVersion; a stale one is a conflict.
    let mut upd = got.clone();
    upd.data = Some([("k".to_string(), "2".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_ne!(replaced.resource_version(), got.resource_version());
    let e = cms
        .replace("a", &PostParams::default(), &upd)
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 409, "{e}");

    // The three patch types kube-rs sends.
    let pp = PatchParams::default();
    let merged = cms
        .patch("a", &pp, &Patch::Merge(json!({"data": {"m": "merge"}})))
        .await
        .unwrap();
    let strategic = cms
        .patch(
            "a",
            &pp,
            &Patch::Strategic(json!({"metadata": {"labels": {"tier": "web"}}})),
        )
        .await
        .unwrap();
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "3"}]))
            .unwrap();
    let patched = cms.patch("a", &pp, &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(
        merged.data.unwrap(),
        [("k".into(), "2".into()), ("m".into(), "merge".into())].into()
    );
    assert_eq!(
        strategic.labels().get("tier").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        patched.data.clone().unwrap(),
        [("k".into(), "3".into()), ("m".into(), "merge".into())].into()
    );
    assert_eq!(
        patched.labels().get("tier").map(String::as_str),
        Some("web")
    );

    // Delete; then it is gone.
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
    let e = cms.get("a").await.unwrap_err();
    assert_eq!(api_code(&e), 404, "{e}");

    // List in pages of 3: every object once, in order, all pages at the first one's
    // revision (an object created between pages is not in them).
    let names: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    for n in &names {
        cms.create(&PostParams::default(), &cm(n, &[("n", n)]))
            .await
            .unwrap();
    }
    let mut lp = ListParams::default().limit(3);
    let mut seen = Vec::new();
    let mut revisions = Vec::new();
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3, "{:?}", page.metadata);
        seen.extend(page.items.iter().map(|c| c.name_any()));
        revisions.push(page.metadata.resource_version.clone());
        if pages == 1 {
            cms.create(&PostParams::default(), &cm("p9", &[]))
                .await
                .unwrap();
        }
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => lp = lp.continue_token(&t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names);
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "{revisions:?}");
    // A label selector through kube-rs.
    let web = cms
        .list(&ListParams::default().labels("tier=web"))
        .await
        .unwrap();
    assert!(web.items.is_empty());
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_reflector_follows_the_server_across_a_restart() {
    let mut s = Server::start_on_fixed_port(&[]);
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for n in ["a", "b"] {
        cms.create(&PostParams::default(), &cm(n, &[("v", "0")]))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default()).default_backoff(),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // Errors while the server is down are retried with backoff by the watcher.
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    let want = listed(&cms).await;
    until("the reflector to list a and b", || async {
        (reader_view(&reader) == want).then_some(())
    })
    .await;

    // The server goes away and comes back on the same address and data.
    tokio::task::block_in_place(|| s.restart());
    cms.create(&PostParams::default(), &cm("c", &[("v", "0")]))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    let want = listed(&cms).await;
    assert_eq!(want.keys().collect::<Vec<_>>(), ["a", "c"]);
    until(
        "the reflector to hold exactly the server's state",
        || async { (reader_view(&reader) == want).then_some(()) },
    )
    .await;
    task.abort();
}

/// The ConfigMap the controller keeps in every namespace.
const ROOT: &str = "skiff-root";

struct Ctx {
    client: Client,
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile {namespace}: {source}")]
struct ReconcileError {
    namespace: String,
    #[source]
    source: kube::Error,
}

fn desired(ns: &Namespace) -> ConfigMap {
    let mut want = cm(ROOT, &[("namespace", &ns.name_any())]);
    want.metadata.namespace = Some(ns.name_any());
    want.metadata.labels = Some([("skiff.test/root".to_string(), "true".to_string())].into());
    want.metadata.owner_references = ns.controller_owner_ref(&()).map(|o| vec![o]);
    want
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let err = |source| ReconcileError {
        namespace: name.clone(),
        source,
    };
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let want = desired(&ns);
    match cms.get_opt(ROOT).await.map_err(err)? {
        None => {
            cms.create(&PostParams::default(), &want)
                .await
                .map_err(err)?;
        }
        Some(cur) if cur.data != want.data => {
            let mut upd = want;
            upd.metadata.resource_version = cur.resource_version();
            cms.replace(ROOT, &PostParams::default(), &upd)
                .await
                .map_err(err)?;
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Namespace>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_controller_reconciles_a_configmap_per_namespace() {
    let s = Server::start();
    let c = client(&s).await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let controller = Controller::new(namespaces.clone(), watcher::Config::default())
        .owns(
            Api::<ConfigMap>::all(c.clone()),
            watcher::Config::default().labels("skiff.test/root=true"),
        )
        .run(reconcile, error_policy, Arc::new(Ctx { client: c.clone() }))
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    for n in ["team-a", "team-b"] {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(n.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let root_of = |ns: &str| {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        async move { api.get_opt(ROOT).await.unwrap() }
    };
    // Every namespace, built-in ones included, gets its ConfigMap, owned by it.
    let all: Vec<Namespace> = namespaces.list(&ListParams::default()).await.unwrap().items;
    assert!(all.len() >= 3, "{all:?}");
    for ns in &all {
        let name = ns.name_any();
        let got = until(&format!("the ConfigMap in {name}"), || root_of(&name)).await;
        assert_eq!(got.data, desired(ns).data);
        let owner = &got.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Namespace", ns.uid().unwrap().as_str(), Some(true))
        );
    }
    // Deleted: the owner's reconcile recreates it.
    let old = root_of("team-a").await.unwrap();
    Api::<ConfigMap>::namespaced(c.clone(), "team-a")
        .delete(ROOT, &DeleteParams::default())
        .await
        .unwrap();
    until("the deleted ConfigMap to be recreated", || async {
        root_of("team-a")
            .await
            .filter(|n| n.uid() != old.uid())
            .map(|_| ())
    })
    .await;
    // Changed: it is put back.
    Api::<ConfigMap>::namespaced(c.clone(), "team-b")
        .patch(
            ROOT,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"namespace": "elsewhere"}})),
        )
        .await
        .unwrap();
    until("the changed ConfigMap to be restored", || async {
        root_of("team-b")
            .await
            .and_then(|c| c.data)
            .filter(|d| d.get("namespace").map(String::as_str) == Some("team-b"))
            .map(|_| ())
    })
    .await;
    task.abort();
}

/// An operator's reconcile of a custom kind: the Widget's `status.ready` follows whether
/// its ConfigMap (owned by it) exists; the Widget's `spec.size` is copied into it.
async fn reconcile_widget(
    w: Arc<kube::api::DynamicObject>,
    ctx: Arc<(Client, kube::api::ApiResource)>,
) -> Result<Action, kube::Error> {
    let (client, ar) = (&ctx.0, &ctx.1);
    let ns = w.namespace().unwrap_or_default();
    let size = w.data["spec"]["size"]
        .as_i64()
        .unwrap_or_default()
        .to_string();
    let mut want = cm(&w.name_any(), &[("size", &size)]);
    want.metadata.owner_references = w.controller_owner_ref(ar).map(|o| vec![o]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.patch(
        &w.name_any(),
        &PatchParams::apply("widget-operator").force(),
        &Patch::Apply(&want),
    )
    .await?;
    let widgets: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, ar);
    widgets
        .patch_status(
            &w.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true, "size": size}})),
        )
        .await?;
    Ok(Action::await_change())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_operator_reconciles_a_custom_resource() {
    use kube::api::DynamicObject;
    use kube::discovery::{self, Scope};
    let s = Server::start();
    let c = client(&s).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(c.clone());
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.op.example.com"},
        "spec": {"group": "op.example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {
                        "ready": {"type": "boolean"}, "size": {"type": "string"}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    // As an operator finds its kind: discovery, until the CRD is Established.
    let (ar, caps) = until("the Widget kind in discovery", || {
        let c = c.clone();
        async move {
            let group = discovery::group(&c, "op.example.com").await.ok()?;
            group.recommended_kind("Widget")
        }
    })
    .await;
    assert!(matches!(caps.scope, Scope::Namespaced));
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let controller = Controller::new_with(widgets.clone(), watcher::Config::default(), ar.clone())
        .owns(
            Api::<ConfigMap>::namespaced(c.clone(), "default"),
            watcher::Config::default(),
        )
        .run(
            reconcile_widget,
            |_, _, _| Action::requeue(Duration::from_millis(200)),
            Arc::new((c.clone(), ar.clone())),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "op.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"}, "spec": {"size": 3}}))
    .unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let made = until("the operator's ConfigMap", || async {
        cms.get_opt("w1").await.unwrap()
    })
    .await;
    assert_eq!(made.data.unwrap()["size"], "3");
    assert_eq!(made.metadata.owner_references.unwrap()[0].kind, "Widget");
    until("the Widget's status", || async {
        let got = widgets.get("w1").await.unwrap();
        (got.data["status"]["ready"] == json!(true)).then_some(())
    })
    .await;
    // A change of the custom object is reconciled again.
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 7}})),
        )
        .await
        .unwrap();
    until("the ConfigMap following the Widget", || async {
        let d = cms.get("w1").await.unwrap().data.unwrap_or_default();
        (d.get("size").map(String::as_str) == Some("7")).then_some(())
    })
    .await;
    task.abort();
}
