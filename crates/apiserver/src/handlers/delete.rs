//! Deletion with Kubernetes' semantics: preconditions, finalizers (deletionTimestamp
//! instead of removal), propagationPolicy through ownerReferences (Orphan, Background,
//! Foreground), and namespaces that turn Terminating while their contents are removed.
//! The dependents' work done here is the API-level share of the garbage-collector and
//! namespace controllers until those land.

use axum::http::StatusCode;
use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};
use skiff_store::{Revision, Store, StoreError};

use super::objects::{get_kv, map_write, ns_kind, BUILTIN_NAMESPACES};
use crate::handlers::decode_json;
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// DeleteOptions from the query and/or the body.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    /// Orphan, Background or Foreground.
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(q: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions {
            grace_period: q.int("gracePeriodSeconds"),
            propagation: q.value("propagationPolicy").map(str::to_string),
            dry_run: q.get("dryRun") == Some("All"),
            ..Default::default()
        };
        if q.get("orphanDependents") == Some("true") {
            o.propagation = Some("Orphan".into());
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v = decode_json(body)?;
            if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period = Some(g);
            }
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(p.to_string());
            }
            if v.get("orphanDependents") == Some(&json!(true)) {
                o.propagation = Some("Orphan".into());
            }
            if v.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.contains(&json!("All")))
            {
                o.dry_run = true;
            }
            o.precondition_uid = meta::str_at(&v, "/preconditions/uid").map(str::to_string);
            o.precondition_rv =
                meta::str_at(&v, "/preconditions/resourceVersion").map(str::to_string);
        }
        if let Some(p) = &o.propagation {
            if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "invalid propagationPolicy {p:?}: use Orphan, Background or Foreground"
                )));
            }
        }
        Ok(o)
    }
}

/// Deletes an object: immediately, or by marking it terminating when finalizers (or
/// foreground/orphan propagation) must run first. Returns the code and the body.
pub async fn delete(
    st: &AppState,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<(StatusCode, Value)> {
    let (old, old_rev) = get_kv(st, kind, ns, name).await?;
    if let Some(uid) = &opts.precondition_uid {
        if meta::str_at(&old, "/metadata/uid") != Some(uid.as_str()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::str_at(&old, "/metadata/uid").unwrap_or_default()
                ),
            ));
        }
    }
    if let Some(rv) = &opts.precondition_rv {
        if *rv != old_rev.to_string() {
            return Err(ApiError::conflict(kind.group, kind.plural, name));
        }
    }
    if opts.dry_run {
        return Ok((StatusCode::OK, old));
    }
    let uid = meta::str_at(&old, "/metadata/uid")
        .unwrap_or_default()
        .to_string();
    let key = meta::key(kind, ns, name);
    let mut finalizers: Vec<String> = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let policy = opts
        .propagation
        .clone()
        .unwrap_or_else(|| "Background".into());
    if kind.kind == "Namespace" {
        return delete_namespace(st, kind, name, old, old_rev).await;
    }
    let already_terminating = old.pointer("/metadata/deletionTimestamp").is_some();
    match policy.as_str() {
        "Foreground" if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
            finalizers.push("foregroundDeletion".into())
        }
        "Orphan" if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
        _ => {}
    }
    if !finalizers.is_empty() {
        let mut new = old.clone();
        let md = meta::metadata_mut(&mut new);
        if !already_terminating {
            md.insert("deletionTimestamp".into(), json!(meta::now()));
            md.insert(
                "deletionGracePeriodSeconds".into(),
                json!(opts.grace_period.unwrap_or(0)),
            );
        }
        md.insert("finalizers".into(), json!(finalizers));
        md.remove("resourceVersion");
        let kv = st
            .store
            .update(&key, new.to_string().into_bytes(), Some(old_rev), 0)
            .await
            .map_err(|e| map_write(kind, name, e))?;
        meta::metadata_mut(&mut new)
            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        if finalizers
            .iter()
            .any(|f| f == "foregroundDeletion" || f == "orphan")
        {
            let store = crate::handlers::store_arc(st);
            let k: &'static Kind =
                kinds::by_kind(&kind.api_version(), kind.kind).unwrap_or(ns_kind());
            let (ns, name) = (ns.map(str::to_string), name.to_string());
            tokio::spawn(async move {
                if let Err(e) = finish_propagation(&*store, k, ns.as_deref(), &name, &uid).await {
                    tracing::warn!(error = %e, object = %name, "finishing deletion propagation failed");
                }
            });
        }
        return Ok((StatusCode::OK, new));
    }
    let _ = st
        .store
        .delete(&key, Some(old_rev))
        .await
        .map_err(|e| map_write(kind, name, e))?;
    if policy == "Background" {
        let store = crate::handlers::store_arc(st);
        let ns = ns.map(str::to_string);
        tokio::spawn(async move {
            if let Err(e) = collect_dependents(&*store, ns.as_deref(), &uid, false).await {
                tracing::warn!(error = %e, "deleting dependents failed");
            }
        });
    }
    let mut out = old;
    meta::metadata_mut(&mut out).remove("resourceVersion");
    Ok((StatusCode::OK, out))
}

/// Namespaces turn Terminating; their contents are removed, then the namespace.
async fn delete_namespace(
    st: &AppState,
    kind: &Kind,
    name: &str,
    mut ns: Value,
    rev: Revision,
) -> ApiResult<(StatusCode, Value)> {
    if BUILTIN_NAMESPACES.contains(&name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("namespace {name:?} is forbidden: this namespace may not be deleted"),
        ));
    }
    if ns.pointer("/metadata/deletionTimestamp").is_none() {
        let md = meta::metadata_mut(&mut ns);
        md.insert("deletionTimestamp".into(), json!(meta::now()));
        md.insert("deletionGracePeriodSeconds".into(), json!(0));
        md.remove("resourceVersion");
        ns["status"]["phase"] = json!("Terminating");
        let kv = st
            .store
            .update(
                &meta::key(kind, None, name),
                ns.to_string().into_bytes(),
                Some(rev),
                0,
            )
            .await
            .map_err(|e| map_write(kind, name, e))?;
        meta::metadata_mut(&mut ns)
            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    let store = crate::handlers::store_arc(st);
    let name = name.to_string();
    tokio::spawn(async move {
        if let Err(e) = finalize_namespace(&*store, &name).await {
            tracing::warn!(error = %e, namespace = %name, "finalizing the namespace failed");
        }
    });
    Ok((StatusCode::OK, ns))
}

async fn finalize_namespace(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    for k in kinds::KINDS.iter().filter(|k| k.namespaced) {
        let prefix = meta::list_prefix(k, Some(name));
        let res = store.list(&prefix, &Default::default()).await?;
        for kv in res.kvs {
            match store.delete(&kv.key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    match store.delete(&meta::key(ns_kind(), None, name), None).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// Deletes (or, with `orphan`, releases) the objects owned by `uid` in `ns` — the API-level
/// share of the garbage collector until the controller lands.
fn collect_dependents<'a>(
    store: &'a dyn Store,
    ns: Option<&'a str>,
    uid: &'a str,
    orphan: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>> {
    Box::pin(async move {
        for k in kinds::KINDS
            .iter()
            .filter(|k| ns.is_some() || !k.namespaced)
        {
            let res = store
                .list(&meta::list_prefix(k, ns), &Default::default())
                .await?;
            for kv in res.kvs {
                let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
                    continue;
                };
                if !owned_by(&obj, uid) {
                    continue;
                }
                if orphan {
                    if let Some(Value::Array(refs)) = obj.pointer_mut("/metadata/ownerReferences") {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                    }
                    match store
                        .update(
                            &kv.key,
                            obj.to_string().into_bytes(),
                            Some(kv.mod_revision),
                            0,
                        )
                        .await
                    {
                        Ok(_)
                        | Err(StoreError::NotFound { .. })
                        | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                } else {
                    let dep_uid = meta::str_at(&obj, "/metadata/uid")
                        .unwrap_or_default()
                        .to_string();
                    match store.delete(&kv.key, None).await {
                        Ok(_) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    collect_dependents(store, ns, &dep_uid, false).await?;
                }
            }
        }
        Ok(())
    })
}

/// Runs the foregroundDeletion/orphan finalizers of a terminating object, then removes
/// the object if no other finalizer remains.
async fn finish_propagation(
    store: &dyn Store,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    uid: &str,
) -> Result<(), StoreError> {
    let key = meta::key(kind, ns, name);
    let Some(kv) = store.get(&key, None).await?.kv else {
        return Ok(());
    };
    let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    let fins: Vec<String> = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let orphan = fins.iter().any(|f| f == "orphan");
    collect_dependents(store, ns, uid, orphan).await?;
    // Re-read and drop our finalizers; retry on concurrent writers.
    loop {
        let Some(kv) = store.get(&key, None).await?.kv else {
            return Ok(());
        };
        let mut obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if meta::str_at(&obj, "/metadata/uid") != Some(uid) {
            return Ok(());
        }
        let mut rest = Vec::new();
        if let Some(Value::Array(a)) = obj.pointer_mut("/metadata/finalizers") {
            a.retain(|f| f != "orphan" && f != "foregroundDeletion");
            rest = a.clone();
        }
        let r = if rest.is_empty() {
            store.delete(&key, Some(kv.mod_revision)).await.map(|_| ())
        } else {
            store
                .update(&key, obj.to_string().into_bytes(), Some(kv.mod_revision), 0)
                .await
                .map(|_| ())
        };
        match r {
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            r => return r,
        }
    }
}
