//! Deletion with Kubernetes' semantics: preconditions, finalizers (deletionTimestamp
//! instead of removal), propagationPolicy through ownerReferences (Orphan, Background,
//! Foreground), and namespaces that turn Terminating, as kube-apiserver does. The
//! dependents and a namespace's contents are not the server's: the garbage collector
//! deletes (or orphans) dependents and runs the `foregroundDeletion`/`orphan` finalizers
//! this adds, the namespace controller empties a Terminating namespace and finalizes it.

use axum::http::StatusCode;
use serde_json::{json, Value};
use skiff_api::kinds::Kind;
use skiff_store::Revision;

use super::objects::{get_kv, map_write, BUILTIN_NAMESPACES};
use crate::handlers::decode_json;
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::Objects;

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

/// How often a delete is tried again when a concurrent writer (a controller's status
/// write) changed the object between our read and our write.
const DELETE_ATTEMPTS: usize = 8;

/// Deletes an object: immediately, or by marking it terminating when finalizers (or
/// foreground/orphan propagation) must run first. Returns the code and the body. A write
/// that loses a race with another writer is tried again on the new version, as
/// kube-apiserver's `GuaranteedUpdate` does, unless the caller pinned a resourceVersion.
pub async fn delete(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<(StatusCode, Value)> {
    delete_warned(st, kind, ns, name, opts)
        .await
        .map(|(code, obj, _)| (code, obj))
}

/// [`delete`] with the admission warnings (a policy binding's `Warn`, webhooks').
pub async fn delete_warned(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<(StatusCode, Value, Vec<String>)> {
    let mut attempt = 1;
    loop {
        let mut warnings = Vec::new();
        match delete_once(st, kind, ns, name, opts, &mut warnings).await {
            Err(e)
                if e.code == StatusCode::CONFLICT
                    && opts.precondition_rv.is_none()
                    && attempt < DELETE_ATTEMPTS =>
            {
                attempt += 1;
            }
            r => return r.map(|(code, obj)| (code, obj, warnings)),
        }
    }
}

async fn delete_once(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    warnings: &mut Vec<String>,
) -> ApiResult<(StatusCode, Value)> {
    let (old, old_rev) = get_kv(st, kind, ns, name).await?;
    if let Some(why) = skiff_api::strategy::for_kind(kind.kind).delete_forbidden(&old) {
        return Err(ApiError::forbidden(kind.group, kind.plural, name, why));
    }
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
    let request = crate::admission::Request {
        kind,
        subresource: "",
        operation: "DELETE",
        namespace: ns,
        name,
        dry_run: opts.dry_run,
    };
    let admitted = crate::admission::admit(st, &request, None, Some(&old)).await?;
    warnings.extend(admitted.warnings);
    if opts.dry_run {
        return Ok((StatusCode::OK, old));
    }
    let key = meta::key(kind, ns, name);
    let strategy = skiff_api::strategy::for_kind(kind.kind);
    if strategy.terminates_before_delete() {
        return delete_namespace(st, kind, name, old, old_rev).await;
    }
    let current = finalizers_of(&old);
    let finalizers = gc_finalizers(&current, opts.propagation.as_deref());
    let mut new = old.clone();
    let grace = before_delete(strategy, &mut new, opts.grace_period, st.clock.now());
    if grace == Grace::Pending && finalizers == current {
        // Graceful deletion is already under way and this request changes nothing.
        return Ok((StatusCode::OK, old));
    }
    let already_terminating = old.pointer("/metadata/deletionTimestamp").is_some();
    // Removed now when nothing waits for it: no finalizer, and no grace period left to
    // run (a graceful kind's owner, such as a pod's kubelet, deletes it with grace 0).
    // Dependents are the garbage collector's: it sees the owner gone and removes them
    // (Background), or runs the `foregroundDeletion`/`orphan` finalizer added here.
    let delete_now = finalizers.is_empty()
        && match grace {
            Grace::Set(g) => g == 0,
            Grace::Pending => false,
            Grace::NotGraceful => true,
        };
    if !delete_now && already_terminating && grace == Grace::NotGraceful && finalizers == current {
        // Terminating already, and this request neither shortens the grace period nor
        // changes the finalizers.
        return Ok((StatusCode::OK, old));
    }
    if !delete_now {
        let md = meta::metadata_mut(&mut new);
        if !already_terminating && grace == Grace::NotGraceful {
            md.insert(
                "deletionTimestamp".into(),
                json!(meta::rfc3339(st.clock.now())),
            );
            md.insert(
                "deletionGracePeriodSeconds".into(),
                json!(opts.grace_period.unwrap_or(0)),
            );
        }
        if finalizers.is_empty() {
            md.remove("finalizers");
        } else {
            md.insert("finalizers".into(), json!(finalizers));
        }
        md.remove("resourceVersion");
        let kv = st
            .store
            .update(&key, new.to_string().into_bytes(), Some(old_rev), 0)
            .await
            .map_err(|e| map_write(kind, name, e))?;
        meta::metadata_mut(&mut new)
            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        return Ok((StatusCode::OK, new));
    }
    crate::alloc::delete_with_holdings(&*st.store, kind.kind, &key, old_rev, &old)
        .await
        .map_err(|e| map_write(kind, name, e))?;
    let mut out = old;
    meta::metadata_mut(&mut out).remove("resourceVersion");
    Ok((StatusCode::OK, out))
}

fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The finalizers an object keeps when deleted with `policy`, as kube-apiserver's
/// `deletionFinalizersForGarbageCollection`: an explicit policy replaces the garbage
/// collector's finalizers (`orphan` for Orphan, `foregroundDeletion` for Foreground,
/// neither for Background); without one, the object keeps the ones it has.
fn gc_finalizers(current: &[String], policy: Option<&str>) -> Vec<String> {
    const ORPHAN: &str = "orphan";
    const FOREGROUND: &str = "foregroundDeletion";
    let Some(policy) = policy else {
        return current.to_vec();
    };
    let mut out: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    match policy {
        "Orphan" => out.push(ORPHAN.into()),
        "Foreground" => out.push(FOREGROUND.into()),
        _ => {}
    }
    out
}

/// What graceful deletion makes of a delete request, as kube-apiserver's `BeforeDelete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grace {
    /// The kind is not deleted gracefully (or a zero grace period already ran out).
    NotGraceful,
    /// The object is terminating gracefully and the request does not shorten that.
    Pending,
    /// `deletionTimestamp` and `deletionGracePeriodSeconds` were set to this period.
    Set(i64),
}

/// Marks `obj` for graceful deletion per its strategy: a first delete sets
/// `deletionTimestamp` to now plus the grace period; a later one may only shorten it.
fn before_delete(
    strategy: &dyn skiff_api::strategy::Strategy,
    obj: &mut Value,
    requested: Option<i64>,
    now: std::time::SystemTime,
) -> Grace {
    let secs = |g: i64| std::time::Duration::from_secs(g.max(0).unsigned_abs());
    let current = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        let current = match current {
            Some(c) if c > 0 => c,
            // Marked with no time left (or by finalizers only): nothing to wait for.
            _ => return Grace::NotGraceful,
        };
        return match requested {
            Some(r) if r < current => {
                // The deadline moves earlier by the difference, as kube does.
                let deadline = meta::str_at(obj, "/metadata/deletionTimestamp")
                    .and_then(meta::parse_rfc3339)
                    .unwrap_or(now + secs(current));
                let start = deadline.checked_sub(secs(current)).unwrap_or(now);
                let md = meta::metadata_mut(obj);
                md.insert(
                    "deletionTimestamp".into(),
                    json!(meta::rfc3339(start + secs(r))),
                );
                md.insert("deletionGracePeriodSeconds".into(), json!(r.max(0)));
                Grace::Set(r.max(0))
            }
            _ => Grace::Pending,
        };
    }
    let Some(period) = strategy.graceful_delete(obj, requested) else {
        return Grace::NotGraceful;
    };
    let md = meta::metadata_mut(obj);
    md.insert(
        "deletionTimestamp".into(),
        json!(meta::rfc3339(now + secs(period))),
    );
    md.insert("deletionGracePeriodSeconds".into(), json!(period));
    if let Some(g) = md.get("generation").and_then(Value::as_i64) {
        md.insert("generation".into(), json!(g + 1));
    }
    Grace::Set(period)
}

/// Namespaces turn Terminating: `deletionTimestamp` and phase Terminating. The namespace
/// controller empties it and then removes `kubernetes` from `spec.finalizers` through
/// `namespaces/{name}/finalize`; the namespace is removed once no finalizer (spec or
/// metadata) remains, by that update or here when there was none to begin with.
async fn delete_namespace(
    st: &Objects,
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
    let key = meta::key(kind, None, name);
    let spec_finalizers = ns
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !spec_finalizers && finalizers_of(&ns).is_empty() {
        crate::alloc::delete_with_holdings(&*st.store, kind.kind, &key, rev, &ns)
            .await
            .map_err(|e| map_write(kind, name, e))?;
        meta::metadata_mut(&mut ns).remove("resourceVersion");
        return Ok((StatusCode::OK, ns));
    }
    if ns.pointer("/metadata/deletionTimestamp").is_none() {
        let md = meta::metadata_mut(&mut ns);
        md.insert("deletionTimestamp".into(), json!(meta::now()));
        md.insert("deletionGracePeriodSeconds".into(), json!(0));
        md.remove("resourceVersion");
        ns["status"]["phase"] = json!("Terminating");
        let kv = st
            .store
            .update(&key, ns.to_string().into_bytes(), Some(rev), 0)
            .await
            .map_err(|e| map_write(kind, name, e))?;
        meta::metadata_mut(&mut ns)
            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    Ok((StatusCode::OK, ns))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;
    use skiff_api::strategy::for_kind;

    use super::{before_delete, gc_finalizers, Grace};
    use crate::meta;

    #[test]
    fn an_explicit_policy_replaces_the_collectors_finalizers() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let held = v(&["example.com/hold", "orphan"]);
        assert_eq!(gc_finalizers(&held, None), held);
        assert_eq!(
            gc_finalizers(&held, Some("Foreground")),
            v(&["example.com/hold", "foregroundDeletion"])
        );
        assert_eq!(
            gc_finalizers(&held, Some("Background")),
            v(&["example.com/hold"])
        );
        assert_eq!(gc_finalizers(&[], Some("Orphan")), v(&["orphan"]));
    }

    #[test]
    fn graceful_deadlines_follow_kube_before_delete() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut pod = json!({"metadata": {"name": "p", "generation": 1},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}});
        let pods = for_kind("Pod");
        assert_eq!(before_delete(pods, &mut pod, None, t0), Grace::Set(30));
        assert_eq!(
            pod["metadata"]["deletionTimestamp"],
            json!(meta::rfc3339(t0 + Duration::from_secs(30)))
        );
        assert_eq!(pod["metadata"]["generation"], 2);
        // Ten seconds on, a longer period changes nothing, a shorter one moves the
        // deadline earlier by the difference.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(before_delete(pods, &mut pod, Some(60), t1), Grace::Pending);
        assert_eq!(before_delete(pods, &mut pod, None, t1), Grace::Pending);
        assert_eq!(before_delete(pods, &mut pod, Some(5), t1), Grace::Set(5));
        assert_eq!(
            pod["metadata"]["deletionTimestamp"],
            json!(meta::rfc3339(t0 + Duration::from_secs(5)))
        );
        assert_eq!(before_delete(pods, &mut pod, Some(0), t1), Grace::Set(0));
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 0);
        // Kinds without graceful deletion are removed as they are.
        let mut cm = json!({"metadata": {"name": "c"}});
        assert_eq!(
            before_delete(for_kind("ConfigMap"), &mut cm, Some(30), t0),
            Grace::NotGraceful
        );
        assert!(cm["metadata"].get("deletionTimestamp").is_none());
    }
}
