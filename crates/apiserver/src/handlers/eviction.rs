//! `pods/eviction`, as kube-apiserver's EvictionREST: a pod is deleted only if the one
//! PodDisruptionBudget selecting it allows a disruption, which the eviction consumes
//! (`status.disruptionsAllowed` decremented, the pod recorded in `status.disruptedPods`)
//! in a guarded write before the pod is deleted. Terminal, pending and terminating pods
//! are deleted without consulting budgets; an unready pod is deleted without consuming
//! budget when its PDB's `unhealthyPodEvictionPolicy` allows it (`AlwaysAllow`, or the
//! default `IfHealthyBudget` while the budget has the healthy pods it needs). The
//! disruption controller recomputes the status and expires `disruptedPods` entries.

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use skiff_api::kinds::Kind;

use super::decode_body;
use super::delete::{self, DeleteOptions};
use super::objects::{self, Part};
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// Attempts per conflicting write (kube retries 20 times).
const RETRIES: usize = 20;

/// kube's `MaxDisruptedPodSize`: evictions not yet seen by the disruption controller.
const MAX_DISRUPTED_PODS: usize = 2000;

const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Evicts pod `name` in `ns`. `Ok` means the pod was deleted (or would be, on a dry run).
pub(super) async fn evict(
    st: &AppState,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<()> {
    let eviction = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(decode_body(st, headers, body)?)
    };
    // NodeRestriction: a node evicts only pods bound to it.
    crate::node_authz::admit(
        &st.objects,
        kind,
        "eviction",
        "CREATE",
        ns,
        name,
        Some(eviction.as_ref().unwrap_or(&json!({}))),
        None,
    )
    .await?;
    let mut opts = match eviction {
        None => DeleteOptions::default(),
        Some(v) => {
            if meta::str_at(&v, "/metadata/name") != Some(name) {
                return Err(ApiError::bad_request(
                    "name in URL does not match name in Eviction object",
                ));
            }
            let inner = v.get("deleteOptions").cloned().unwrap_or(json!({}));
            DeleteOptions::parse(&Query::default(), inner.to_string().as_bytes())?
        }
    };
    if q.get("dryRun") == Some("All") {
        opts.dry_run = true;
    }
    let caller_rv = opts.precondition_rv.is_some();

    // Pods a budget does not protect are deleted directly; a pending pod guarded by its
    // resourceVersion so it cannot turn ready in between.
    let mut pod = None;
    for _ in 0..RETRIES {
        let (p, rev) = objects::get_kv(&st.objects, kind, ns, name).await?;
        if !can_ignore_budget(&p) {
            pod = Some((p, rev));
            break;
        }
        let mut o = opts.clone();
        if !caller_rv && !is_terminal_or_terminating(&p) {
            o.precondition_rv = Some(rev.to_string());
        }
        match delete::delete(&st.objects, kind, ns, name, &o).await {
            Err(e) if e.code == StatusCode::CONFLICT && !caller_rv => continue,
            r => return r.map(|_| ()),
        }
    }
    let Some((pod, pod_rev)) = pod else {
        return Err(ApiError::conflict(kind.group, kind.plural, name));
    };

    let pdbs = budgets_of(st, ns, &pod).await?;
    if pdbs.len() > 1 {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let mut guarded = None;
    if let Some(pdb) = pdbs.into_iter().next() {
        let pdb_name = meta::str_at(&pdb, "/metadata/name")
            .unwrap_or_default()
            .to_string();
        if !is_ready(&pod) && unhealthy_may_go(&pdb) {
            // An unready pod is not counted healthy: deleting it uses no budget, as long
            // as it does not turn ready before the delete.
            guarded = Some(pdb_name);
        } else {
            consume(st, ns, name, &pdb_name, pdb, opts.dry_run).await?;
        }
    }

    let mut o = opts.clone();
    if guarded.is_some() && !caller_rv {
        o.precondition_rv = Some(pod_rev.to_string());
    }
    match delete::delete(&st.objects, kind, ns, name, &o).await {
        Err(e) if e.code == StatusCode::CONFLICT && !caller_rv => match guarded {
            Some(pdb_name) => Err(still_processing(&pdb_name)),
            None => Err(e),
        },
        r => r.map(|_| ()),
    }
}

/// Terminal (Succeeded/Failed), pending and terminating pods are deleted without budgets.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
}

fn is_terminal_or_terminating(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// A pod's phase; a pod without one has not started (the server defaults it to Pending).
fn phase(pod: &Value) -> &str {
    meta::str_at(pod, "/status/phase")
        .filter(|p| !p.is_empty())
        .unwrap_or("Pending")
}

/// kube's `IsPodReady`: the Ready condition is True.
fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

/// Whether an unready pod may go without consuming the budget: always under
/// `AlwaysAllow`; under `IfHealthyBudget` (the default) while the budget has the healthy
/// pods it needs.
fn unhealthy_may_go(pdb: &Value) -> bool {
    if meta::str_at(pdb, "/spec/unhealthyPodEvictionPolicy") == Some("AlwaysAllow") {
        return true;
    }
    let current = int_at(pdb, "/status/currentHealthy");
    let desired = int_at(pdb, "/status/desiredHealthy");
    desired > 0 && current >= desired
}

fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The PDBs of the pod's namespace whose selector matches it. An empty or null
/// selector matches nothing here; an unparsable one is skipped.
async fn budgets_of(st: &AppState, ns: Option<&str>, pod: &Value) -> ApiResult<Vec<Value>> {
    let pdb_kind = pdb_kind()?;
    let listed = super::list::list_items(st, pdb_kind, ns, &Query::default()).await?;
    let labels = meta::labels(pod);
    Ok(listed
        .items
        .into_iter()
        .filter_map(|i| i.into_value())
        .filter(|pdb| {
            let sel = pdb
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or(Value::Null);
            skiff_api::selector::LabelSelector::from_object(&sel)
                .is_ok_and(|s| !s.is_everything() && !s.matches_nothing() && s.matches(&labels))
        })
        .collect())
}

fn pdb_kind() -> ApiResult<&'static Kind> {
    skiff_api::kinds::by_resource("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets.policy/v1 is not served"))
}

/// kube's verify-and-decrement, retried on conflicts with a fresh read of the PDB.
async fn consume(
    st: &AppState,
    ns: Option<&str>,
    pod_name: &str,
    pdb_name: &str,
    listed: Value,
    dry_run: bool,
) -> ApiResult<()> {
    let pdb_kind = pdb_kind()?;
    let mut current = Some(listed);
    for _ in 0..RETRIES {
        let (pdb, rev) = match current.take() {
            Some(p) => {
                let rev = meta::str_at(&p, "/metadata/resourceVersion")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                (p, rev)
            }
            None => objects::get_kv(&st.objects, pdb_kind, ns, pdb_name).await?,
        };
        let now = meta::rfc3339(st.objects.clock.now());
        let new = decremented(&pdb, pod_name, &now)?;
        if dry_run {
            return Ok(());
        }
        match objects::write_update(
            &st.objects,
            pdb_kind,
            ns,
            pdb_name,
            &pdb,
            new,
            rev,
            Part::Status,
            false,
        )
        .await
        {
            Err(e) if e.code == StatusCode::CONFLICT => continue,
            r => return r.map(|_| ()),
        }
    }
    Err(ApiError {
        details: Some(json!({"retryAfterSeconds": 10})),
        ..ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Timeout: couldn't update PodDisruptionBudget {pdb_name:?} due to conflicts"),
        )
    })
}

/// The PDB with one disruption consumed by `pod` at `now`, or the refusal.
fn decremented(pdb: &Value, pod: &str, now: &str) -> ApiResult<Value> {
    let name = meta::str_at(pdb, "/metadata/name").unwrap_or_default();
    let generation = int_at(pdb, "/metadata/generation");
    if int_at(pdb, "/status/observedGeneration") < generation {
        return Err(still_processing(name));
    }
    let allowed = int_at(pdb, "/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            name,
            "pdb disruptions allowed is negative",
        ));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(
            0,
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                int_at(pdb, "/status/desiredHealthy"),
                int_at(pdb, "/status/currentHealthy"),
            ),
        ));
    }
    let mut new = pdb.clone();
    new["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        let observed = new.pointer("/status/observedGeneration").cloned();
        insufficient(&mut new, observed.unwrap_or(json!(0)), now);
    }
    meta::default_at(&mut new, &["status", "disruptedPods"], json!({}));
    new["status"]["disruptedPods"][pod] = json!(now);
    Ok(new)
}

/// kube's `UpdateDisruptionAllowedCondition` once nothing more may be disrupted:
/// DisruptionAllowed False/InsufficientPods, its transition time moved on a change.
fn insufficient(pdb: &mut Value, observed: Value, now: &str) {
    meta::default_at(pdb, &["status", "conditions"], json!([]));
    let Some(conds) = pdb
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let old = conds
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionAllowed"));
    let since = match old.map(|i| &conds[i]) {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("False") => c
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now)),
        _ => json!(now),
    };
    let cond = json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
        "message": "", "observedGeneration": observed, "lastTransitionTime": since});
    match old {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
}

/// 429 while the disruption controller has not caught up with the PDB (or the pod
/// changed under a guarded delete); clients retry.
fn still_processing(pdb: &str) -> ApiError {
    too_many_requests(
        10,
        format!("The disruption budget {pdb} is still being processed by the server."),
    )
}

fn too_many_requests(retry_after: i64, cause: String) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after > 0 {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    ApiError {
        details: Some(details),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", VIOLATES)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "db", "generation": generation},
               "status": {"observedGeneration": observed, "disruptionsAllowed": allowed,
                          "desiredHealthy": 2, "currentHealthy": 2, "expectedPods": 2,
                          "conditions": [{"type": "DisruptionAllowed", "status": "True",
                              "reason": "SufficientPods", "message": "",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    }

    #[test]
    fn a_budget_with_no_disruption_left_refuses_with_its_numbers() {
        let e = decremented(&pdb(0, 1, 1), "p", "now").unwrap_err();
        assert_eq!(e.code, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.message, VIOLATES);
        let d = e.details.unwrap();
        assert_eq!(d["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            d["causes"][0]["message"],
            "The disruption budget db needs 2 healthy pods and has 2 currently"
        );
        assert!(d.get("retryAfterSeconds").is_none());
    }

    #[test]
    fn a_stale_budget_is_still_being_processed() {
        let e = decremented(&pdb(3, 2, 1), "p", "now").unwrap_err();
        assert_eq!(e.code, StatusCode::TOO_MANY_REQUESTS);
        let d = e.details.unwrap();
        assert_eq!(
            d["causes"][0]["message"],
            "The disruption budget db is still being processed by the server."
        );
        assert_eq!(d["retryAfterSeconds"], 10);
        let e = decremented(&pdb(-1, 1, 1), "p", "now").unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
    }

    #[test]
    fn consuming_the_last_disruption_records_the_pod_and_flips_the_condition() {
        let t = "2026-12-07T04:00:00Z";
        let two = decremented(&pdb(2, 1, 1), "a", t).unwrap();
        assert_eq!(two["status"]["disruptionsAllowed"], 1);
        assert_eq!(two["status"]["disruptedPods"], json!({"a": t}));
        assert_eq!(two["status"]["conditions"][0]["status"], "True");
        let one = decremented(&two, "b", t).unwrap();
        assert_eq!(one["status"]["disruptionsAllowed"], 0);
        assert_eq!(one["status"]["disruptedPods"], json!({"a": t, "b": t}));
        let c = &one["status"]["conditions"][0];
        assert_eq!(
            (&c["status"], &c["reason"], &c["lastTransitionTime"]),
            (&json!("False"), &json!("InsufficientPods"), &json!(t))
        );
    }

    #[test]
    fn which_pods_skip_the_budget() {
        let pod = |phase: &str, ready: &str| json!({"status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}});
        assert!(can_ignore_budget(&pod("Pending", "False")));
        assert!(can_ignore_budget(&pod("Succeeded", "False")));
        assert!(can_ignore_budget(&pod("Failed", "False")));
        assert!(can_ignore_budget(&json!({})));
        assert!(!can_ignore_budget(&pod("Running", "False")));
        let mut deleting = pod("Running", "True");
        deleting["metadata"] = json!({"deletionTimestamp": "2026-01-01T00:00:00Z"});
        assert!(can_ignore_budget(&deleting));
        assert!(is_ready(&pod("Running", "True")));
        assert!(!is_ready(&pod("Running", "False")));
    }

    #[test]
    fn unready_pods_go_free_only_while_the_budget_is_healthy() {
        let mut p = pdb(0, 1, 1);
        assert!(unhealthy_may_go(&p));
        p["status"]["currentHealthy"] = json!(1);
        assert!(!unhealthy_may_go(&p));
        p["spec"] = json!({"unhealthyPodEvictionPolicy": "AlwaysAllow"});
        assert!(unhealthy_may_go(&p));
        p["spec"] = json!({"unhealthyPodEvictionPolicy": "IfHealthyBudget"});
        p["status"]["desiredHealthy"] = json!(0);
        p["status"]["currentHealthy"] = json!(0);
        assert!(!unhealthy_may_go(&p));
    }
}
