//! CustomResourceDefinitions: what makes a CRD's kinds served, as apiextensions-apiserver
//! does inside kube-apiserver.
//!
//! Every API server follows the CRDs in the watch cache: a CRD whose names are free is
//! registered in `skiff_api::kinds` (routing, discovery, the watch cache and storage then
//! serve its kinds like built-in ones) and its schemas, printer columns and subresources
//! are kept here for the object handlers; its status gets `acceptedNames`, the
//! `NamesAccepted` and `Established` conditions and `storedVersions`. A deleted CRD
//! (deletionTimestamp, held by the `customresourcecleanup.apiextensions.k8s.io` finalizer)
//! has its objects deleted, then the finalizer removed, and stops being served once gone.
//! Servers on one store all do this; their status writes agree and conflicts are retried
//! on the next event.
//!
//! The OpenAPI documents ([`Crds::openapi`]) publish every served version's schema, as
//! kube-apiserver's OpenAPI controllers do: built again on the first request after a CRD
//! changed (each change bumps a generation), so a changed schema changes the documents'
//! hashes and ETags and clients' caches of them are invalidated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{json, Value};
use skiff_api::kinds::{self, CustomKind, Kind};
use skiff_store::Revision;

use crate::handlers::objects::{self, Part};
use crate::meta;
use crate::query::Query;
use crate::watch_cache::{Ended, WatchCache};
use crate::Objects;

/// The finalizer that keeps a deleted CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = skiff_api::strategy::CRD_CLEANUP_FINALIZER;

/// One served version of a custom kind: what the handlers need beyond the kinds table.
#[derive(Debug)]
pub struct Served {
    /// The CRD's name (`widgets.example.com`).
    pub crd: String,
    /// The version's structural schema, compiled.
    pub schema: Option<skiff_api::crd::Schema>,
    /// `additionalPrinterColumns` of the version.
    pub columns: Vec<skiff_api::crd::Column>,
    /// `subresources.scale` of the version.
    pub scale: Option<Value>,
    /// The version's `schema.openAPIV3Schema` as written, for the OpenAPI documents.
    pub openapi_schema: Option<Value>,
}

/// The custom kinds' extra information, by (group, version, plural).
#[derive(Default)]
pub struct Crds {
    served: RwLock<HashMap<(String, String, String), Arc<Served>>>,
    /// Bumped after every change of what is served.
    generation: AtomicU64,
    /// The OpenAPI documents of one generation (None: no custom kinds are served).
    documents: Mutex<Option<(u64, Option<Arc<OpenApiDocuments>>)>>,
    /// What each CRD publishes in the documents, to tell a change that shows there (a
    /// schema, a name, a version) from one that does not (its status).
    published: Mutex<HashMap<String, Published>>,
}

/// What one CRD adds to the OpenAPI documents: its served kinds and their schemas.
type Published = (Vec<CustomKind>, Vec<Option<Value>>);

type OpenApiDocuments = skiff_api::openapi::Documents;

impl Crds {
    /// What the handlers need to know about a custom `kind`; None for built-in kinds.
    pub fn get(&self, kind: &Kind) -> Option<Arc<Served>> {
        if kinds::is_builtin(kind) {
            return None;
        }
        let served = self.served.read().unwrap_or_else(|e| e.into_inner());
        served
            .get(&(
                kind.group.to_string(),
                kind.version.to_string(),
                kind.plural.to_string(),
            ))
            .cloned()
    }

    fn replace(&self, crd: &str, versions: ServedVersions) {
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        served.retain(|_, s| s.crd != crd);
        for (k, s) in versions {
            served.insert(k, Arc::new(s));
        }
    }

    /// Records what `crd` publishes now (None: nothing, it is gone), after the kinds and
    /// their information are in place; if that differs from before, the next
    /// [`Crds::openapi`] builds the documents again.
    fn publish(&self, crd: &str, now: Option<Published>) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match now {
            Some(p) => published.insert(crd.to_string(), p.clone()) != Some(p),
            None => published.remove(crd).is_some(),
        };
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The OpenAPI documents with every served custom kind added, or None while no custom
    /// kind is served (then the built-in documents are the whole answer). Built on the
    /// first call after a change (a blocking walk of the schemas: call it off the async
    /// workers), then shared.
    pub fn openapi(&self) -> Option<Arc<OpenApiDocuments>> {
        let mut cached = self.documents.lock().unwrap_or_else(|e| e.into_inner());
        // Read before the kinds are: a change during the build bumps it again, so what
        // is built now is never kept past that change.
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((g, docs)) = &*cached {
            if *g == generation {
                return docs.clone();
            }
        }
        let served: Vec<((String, String, String), Arc<Served>)> = {
            let served = self.served.read().unwrap_or_else(|e| e.into_inner());
            served.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        let versions: Vec<skiff_api::openapi::CustomVersion<'_>> = served
            .iter()
            .filter_map(|((g, v, plural), s)| {
                let kind = kinds::by_resource(g, v, plural).filter(|k| !kinds::is_builtin(k))?;
                Some(skiff_api::openapi::CustomVersion {
                    kind,
                    schema: s.openapi_schema.as_ref(),
                })
            })
            .collect();
        let docs = (!versions.is_empty())
            .then(|| Arc::new(skiff_api::openapi::Documents::with_custom(&versions)));
        *cached = Some((generation, docs.clone()));
        docs
    }
}

/// Prunes unknown fields of a custom object and applies its schema's defaults; returns a
/// warning per pruned field (`unknown field "spec.junk"`), as `fieldValidation=Warn` does.
///
/// kube-apiserver refuses pruned fields under `fieldValidation=Strict` (what kubectl
/// sends); skiff warns instead, so `kubectl apply` of a manifest with fields the schema
/// does not know succeeds and drops them, as it did before field validation existed.
pub fn prune_and_default(served: &Served, obj: &mut Value) -> Vec<String> {
    let Some(schema) = &served.schema else {
        return Vec::new();
    };
    let before = obj.clone();
    schema.prune(obj);
    let mut removed = Vec::new();
    removed_paths(&before, obj, "", &mut removed);
    schema.default(obj);
    removed
        .into_iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect()
}

fn removed_paths(before: &Value, after: &Value, at: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match a.get(k) {
                    None => out.push(p),
                    Some(av) => removed_paths(v, av, &p, out),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                removed_paths(bv, av, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The schema's validation of a custom object (of an update, with the stored `old`).
pub fn validate(
    served: &Served,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<skiff_api::strategy::Cause> {
    match (&served.schema, old) {
        (None, _) => Vec::new(),
        (Some(s), Some(old)) => s.validate_update(obj, old),
        (Some(s), None) => s.validate(obj),
    }
}

/// The Table of `items` of `kind`: a custom kind's printer columns, else the built-in one.
pub fn table(
    crds: &Crds,
    kind: &Kind,
    items: &[Value],
    include: skiff_api::table::IncludeObject,
    now: std::time::SystemTime,
) -> Value {
    match crds.get(kind) {
        Some(c) => skiff_api::crd::to_table(&c.columns, items, include, now),
        None => skiff_api::table::to_table(kind.kind, items, include, now),
    }
}

/// The CRD kind of the table.
pub fn crd_kind() -> &'static Kind {
    kinds::by_resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CustomResourceDefinition is a served kind")
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// versions that do not look like Kubernetes versions, alphabetically.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn rank(v: &str) -> (u8, u64, u64, String) {
        let parse = || -> Option<(u8, u64, u64)> {
            let rest = v.strip_prefix('v')?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let major: u64 = digits.parse().ok()?;
            let tail = &rest[digits.len()..];
            if tail.is_empty() {
                return Some((0, major, 0));
            }
            for (level, word) in [(1u8, "beta"), (2u8, "alpha")] {
                if let Some(n) = tail.strip_prefix(word) {
                    let minor: u64 = n.parse().ok()?;
                    return Some((level, major, minor));
                }
            }
            None
        };
        match parse() {
            Some((level, major, minor)) => {
                (level, u64::MAX - major, u64::MAX - minor, String::new())
            }
            None => (3, 0, 0, v.to_string()),
        }
    }
    rank(a).cmp(&rank(b))
}

/// What the handlers know of each served version, by (group, version, plural).
type ServedVersions = Vec<((String, String, String), Served)>;

/// The kinds a CRD serves (served versions in priority order) and their extra information.
fn kinds_of(crd: &Value) -> (Vec<CustomKind>, ServedVersions) {
    let name = meta::name(crd).to_string();
    let spec = crd.get("spec").cloned().unwrap_or_default();
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let list = |p: &str| -> Vec<String> {
        spec.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = s("/group");
    let plural = s("/names/plural");
    let kind = s("/names/kind");
    let singular = match s("/names/singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let namespaced = s("/scope") != "Cluster";
    let mut versions: Vec<&Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    versions.sort_by(|a, b| {
        version_order(
            a.get("name").and_then(Value::as_str).unwrap_or_default(),
            b.get("name").and_then(Value::as_str).unwrap_or_default(),
        )
    });
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
    let mut kinds = Vec::new();
    let mut served = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push("status".to_string());
        }
        let scale = v.pointer("/subresources/scale").cloned();
        if scale.is_some() {
            subresources.push("scale".to_string());
        }
        let openapi_schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let schema = openapi_schema.as_ref().map(skiff_api::crd::Schema::new);
        let columns = skiff_api::crd::printer_columns(v);
        kinds.push(CustomKind {
            group: group.clone(),
            version: version.clone(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: list("/names/shortNames"),
            categories: list("/names/categories"),
            subresources,
            storage: version == storage_version,
        });
        served.push((
            (group.clone(), version, plural.clone()),
            Served {
                crd: name.clone(),
                schema,
                columns,
                scale,
                openapi_schema,
            },
        ));
    }
    (kinds, served)
}

/// Why a CRD's names cannot be accepted: they are a built-in resource's or another CRD's.
fn names_conflict(crd: &Value) -> Option<String> {
    let name = meta::name(crd);
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    for gv in kinds::group_versions().iter().filter(|(g, _)| *g == group) {
        for k in kinds::in_group_version(gv.0, gv.1) {
            let owner = kinds::custom_definition(k);
            if owner.as_deref() == Some(name) {
                continue;
            }
            if k.plural == plural {
                return Some(format!("\"{plural}\" is already in use"));
            }
            if k.kind == kind {
                return Some(format!("\"{kind}\" is already in use"));
            }
        }
    }
    None
}

/// The status a CRD should have once its names are (or are not) accepted.
fn wanted_status(crd: &Value, conflict: Option<&str>, now: &str) -> Value {
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if names.get("listKind").is_none() {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        names["listKind"] = json!(format!("{kind}List"));
    }
    if names.get("singular").is_none() {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        names["singular"] = json!(kind.to_lowercase());
    }
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut set = |t: &str, st: &str, reason: &str, message: &str| match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
    {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(st) {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(st);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conditions.push(json!({"type": t, "status": st, "lastTransitionTime": now,
                "reason": reason, "message": message})),
    };
    match conflict {
        Some(why) => {
            set("NamesAccepted", "False", "NameConflict", why);
            set(
                "Established",
                "False",
                "NotAccepted",
                "not all names are accepted",
            );
        }
        None => {
            status["acceptedNames"] = names;
            set("NamesAccepted", "True", "NoConflicts", "no conflicts found");
            set(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
        }
    }
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        set(
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
    }
    status["conditions"] = json!(conditions);
    if status.get("acceptedNames").is_none() {
        status["acceptedNames"] = json!({"plural": "", "kind": ""});
    }
    let mut stored: Vec<Value> = status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v.get("storage") == Some(&json!(true))))
        .and_then(|v| v.get("name"))
    {
        if !stored.contains(v) {
            stored.push(v.clone());
        }
    }
    status["storedVersions"] = json!(stored);
    status
}

/// Serves what `crd` defines now (or stops serving it when `crd` is None: deleted).
pub fn sync_kinds(crds: &Crds, name: &str, crd: Option<&Value>) -> Option<String> {
    let Some(crd) = crd else {
        kinds::set_custom(name, &[]);
        crds.replace(name, Vec::new());
        crds.publish(name, None);
        return None;
    };
    if let Some(conflict) = names_conflict(crd) {
        return Some(conflict);
    }
    let (ks, served) = kinds_of(crd);
    // The extra information first: a kind is never routed without it.
    let schemas = served
        .iter()
        .map(|(_, s)| s.openapi_schema.clone())
        .collect();
    crds.replace(name, served);
    kinds::set_custom(name, &ks);
    crds.publish(name, Some((ks, schemas)));
    None
}

/// Registers every stored CRD, before the server answers its first request.
pub async fn load(objects: &Objects, crds: &Crds) -> Result<(), crate::ApiError> {
    let prefix = meta::kind_prefix(crd_kind());
    for crd in objects::list_values(&*objects.store, &prefix).await? {
        sync_kinds(crds, meta::name(&crd), Some(&crd));
    }
    Ok(())
}

/// Follows the CRDs until `stop`: serves them, writes their status, cleans deleted ones up.
pub async fn follow(
    st: Arc<crate::AppState>,
    cache: Arc<WatchCache>,
    stop: skiff_serve::CancellationToken,
) {
    let prefix = meta::kind_prefix(crd_kind());
    // Terminating CRDs by the storage prefix of their objects: each deletion of one of
    // their objects is a reason to look at them again.
    let mut terminating: HashMap<String, String> = HashMap::new();
    loop {
        let Ok(mut sub) = cache.subscribe(Revision::MAX) else {
            return;
        };
        // Everything stored now, then every change after the subscription began.
        terminating.clear();
        if let Ok(all) = objects::list_values(&*st.objects.store, &prefix).await {
            for crd in all {
                let name = meta::name(&crd).to_string();
                if let Some(p) = reconcile(&st.objects, &name).await {
                    terminating.insert(p, name);
                }
            }
        }
        loop {
            let name = tokio::select! {
                _ = stop.cancelled() => return,
                ev = sub.recv() => match ev {
                    Ok(ev) if ev.key.starts_with(&prefix) => ev.key[prefix.len()..].to_string(),
                    Ok(ev) => match terminating.iter().find(|(p, _)| ev.key.starts_with(p.as_str())) {
                        Some((_, name)) => name.clone(),
                        None => continue,
                    },
                    Err(Ended::Closed) => return,
                    Err(_) => break,
                }
            };
            terminating.retain(|_, n| *n != name);
            if let Some(p) = reconcile(&st.objects, &name).await {
                terminating.insert(p, name);
            }
        }
    }
}

/// Brings one CRD's serving, status and cleanup up to date with what is stored; returns
/// the storage prefix of its objects while it is terminating and some are left.
async fn reconcile(st: &Objects, name: &str) -> Option<String> {
    let name = name.to_string();
    let kind = crd_kind();
    let crd = match objects::get(st, kind, None, &name).await {
        Ok(c) => c,
        Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => {
            sync_kinds(&st.crds, &name, None);
            return None;
        }
        Err(e) => {
            tracing::warn!(crd = %name, error = %e.message, "reading a CustomResourceDefinition");
            return None;
        }
    };
    let conflict = sync_kinds(&st.crds, &name, Some(&crd));
    let now = meta::now();
    let status = wanted_status(&crd, conflict.as_deref(), &now);
    if crd.get("status") != Some(&status) && !same_but_times(crd.get("status"), &status) {
        let mut updated = crd.clone();
        updated["status"] = status;
        if let Err(e) = objects::update(
            st,
            kind,
            None,
            &name,
            updated,
            &Query::parse(None),
            Part::Status,
        )
        .await
        {
            tracing::debug!(crd = %name, error = %e.message, "CRD status (retried on the next event)");
        }
        return None;
    }
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        return cleanup(st, &crd).await;
    }
    None
}

fn same_but_times(a: Option<&Value>, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastTransitionTime");
                }
            }
        }
        v
    }
    a.is_some_and(|a| strip(a) == strip(b))
}

/// Deletes a terminating CRD's objects; once none is left, releases its finalizer.
/// Returns the objects' storage prefix while some are left.
async fn cleanup(st: &Objects, crd: &Value) -> Option<String> {
    let name = meta::name(crd).to_string();
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let served = kinds::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .find_map(|(g, v)| kinds::by_resource(g, v, plural));
    if let Some(kind) = served {
        let prefix = meta::kind_prefix(kind);
        let Ok(left) = objects::list_values(&*st.store, &prefix).await else {
            return Some(prefix);
        };
        if !left.is_empty() {
            let opts = crate::handlers::DeleteOptions::default();
            for o in left
                .iter()
                .filter(|o| o.pointer("/metadata/deletionTimestamp").is_none())
            {
                let ns = meta::namespace(o).map(str::to_string);
                let _ =
                    crate::handlers::delete_object(st, kind, ns.as_deref(), meta::name(o), &opts)
                        .await;
            }
            tracing::debug!(crd = %name, objects = left.len(), "deleting a CRD's objects");
            return Some(prefix);
        }
    }
    let mut updated = crd.clone();
    if let Some(f) = updated
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        f.retain(|x| x.as_str() != Some(CLEANUP_FINALIZER));
    }
    if let Err(e) = objects::update(
        st,
        crd_kind(),
        None,
        &name,
        updated,
        &Query::parse(None),
        Part::Main,
    )
    .await
    {
        tracing::debug!(crd = %name, error = %e.message, "releasing a CRD's finalizer");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_orders_them() {
        let mut v = vec![
            "v1alpha1",
            "foo1",
            "v2",
            "v1beta2",
            "v1",
            "v11alpha2",
            "v1beta1",
            "foo10",
        ];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v1beta2",
                "v1beta1",
                "v11alpha2",
                "v1alpha1",
                "foo1",
                "foo10"
            ]
        );
    }
}
