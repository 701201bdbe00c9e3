//! Dynamic admission (`admissionregistration.k8s.io/v1`), as kube-apiserver's
//! MutatingAdmissionWebhook and ValidatingAdmissionWebhook plugins call webhooks.
//!
//! Contract: every server keeps the Mutating- and ValidatingWebhookConfigurations in
//! memory ([`Webhooks`]), loaded before serving ([`load`]) and kept current from the watch
//! cache ([`follow`]). Each create, update and delete of a stored object calls [`admit`]
//! after the strategy's validation and before the store write: first the matching
//! mutating webhooks one by one (configurations by name, then webhook order; a
//! `JSONPatch` answer changes the object, which is then validated again), then the
//! matching validating webhooks, all at once. A denial is the
//! webhook's own status (`admission webhook "NAME" denied the request: …`); a webhook that
//! cannot be called or answers nonsense fails the request with 500 under
//! `failurePolicy: Fail` and is skipped under `Ignore`. Calls are bounded by the
//! webhook's `timeoutSeconds` (default 10, at most 30), so a webhook never hangs a write.
//!
//! Matching follows kube: `rules` (operations, groups, versions, resources with `*`,
//! `res/sub` and `*/*`, scope), `namespaceSelector` (the labels of the object's
//! Namespace; a Namespace's own labels; never excludes other cluster-scoped objects),
//! `objectSelector` (labels of the new or the old object) and `matchConditions` (CEL over
//! `object`, `oldObject`, `request`, evaluated by `skiff_api::crd::evaluate_cel`, whose
//! subset excludes `authorizer`; a condition that cannot be evaluated is an error under
//! the failure policy). Not done: `reinvocationPolicy: IfNeeded` (each mutating webhook
//! runs once) and `matchPolicy: Equivalent` across versions (the stored version is sent).
//! Webhook configurations themselves are never sent to webhooks.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};
use skiff_api::selector::LabelSelector;
use skiff_store::Revision;

mod client;

use crate::audit::UserInfo;
use crate::handlers::objects;
use crate::meta;
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::{Ended, EventType, WatchCache};
use crate::{AppState, Objects};
use client::call_webhook;

const GROUP: &str = "admissionregistration.k8s.io";

/// The webhook configurations in force, by configuration name.
#[derive(Default)]
pub struct Webhooks {
    /// Copied on write: a request keeps the snapshot it started with.
    index: RwLock<Arc<Index>>,
}

#[derive(Default, Clone)]
struct Index {
    mutating: BTreeMap<String, Value>,
    validating: BTreeMap<String, Value>,
}

impl Index {
    fn of(&mut self, kind: &str) -> &mut BTreeMap<String, Value> {
        if kind == "MutatingWebhookConfiguration" {
            &mut self.mutating
        } else {
            &mut self.validating
        }
    }
}

impl Webhooks {
    fn snapshot(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Index)) {
        f(Arc::make_mut(
            &mut self.index.write().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

fn config_kind(kind: &str) -> &'static Kind {
    let plural = if kind == "MutatingWebhookConfiguration" {
        "mutatingwebhookconfigurations"
    } else {
        "validatingwebhookconfigurations"
    };
    kinds::by_resource(GROUP, "v1", plural).expect("webhook configurations are served")
}

const CONFIG_KINDS: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// Reads both configuration kinds from the store into `hooks`.
pub async fn load(objects: &Objects, hooks: &Webhooks) -> ApiResult<()> {
    let mut index = Index::default();
    for k in CONFIG_KINDS {
        for obj in objects::list_values(&*objects.store, &meta::kind_prefix(config_kind(k))).await?
        {
            index.of(k).insert(meta::name(&obj).to_string(), obj);
        }
    }
    hooks.update(|i| *i = index);
    Ok(())
}

/// Keeps `st.objects.webhooks` current from the watch cache until `stop`.
pub async fn follow(
    st: Arc<AppState>,
    cache: Arc<WatchCache>,
    stop: skiff_serve::CancellationToken,
) {
    let prefixes: Vec<(String, &str)> = CONFIG_KINDS
        .iter()
        .map(|k| (meta::kind_prefix(config_kind(k)), *k))
        .collect();
    loop {
        let Ok(mut sub) = cache.subscribe(Revision::MAX) else {
            return;
        };
        if let Err(e) = load(&st.objects, &st.objects.webhooks).await {
            tracing::warn!(error = %e.message, "loading the admission webhook configurations");
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        let Some((_, kind)) = prefixes.iter().find(|(p, _)| ev.key.starts_with(p.as_str())) else {
                            continue;
                        };
                        let name = ev.key.rsplit('/').next().unwrap_or_default().to_string();
                        match ev.kind {
                            EventType::Deleted => st.objects.webhooks.update(|i| {
                                i.of(kind).remove(&name);
                            }),
                            _ => {
                                if let Some(obj) = ev.decode() {
                                    st.objects.webhooks.update(|i| {
                                        i.of(kind).insert(name, obj);
                                    });
                                }
                            }
                        }
                    }
                    Err(Ended::Closed) => return,
                    Err(_) => break,
                }
            }
        }
    }
}

/// What is being admitted.
pub struct Request<'a> {
    pub kind: &'a Kind,
    /// `""`, `status`, …
    pub subresource: &'a str,
    /// CREATE, UPDATE or DELETE.
    pub operation: &'static str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub dry_run: bool,
}

/// What admission made of a request that may go on.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The webhooks' warnings, for the response's Warning headers.
    pub warnings: Vec<String>,
    /// Whether a mutating webhook patched the object (to be validated again).
    pub mutated: bool,
}

/// Calls the matching mutating webhooks (which may change `obj`), then the matching
/// validating ones. A denial or a failed call under `failurePolicy: Fail` is the error
/// to answer.
pub async fn admit(
    st: &Objects,
    req: &Request<'_>,
    obj: Option<&mut Value>,
    old: Option<&Value>,
) -> ApiResult<Admitted> {
    crate::node_authz::admit(
        st,
        req.kind,
        req.subresource,
        req.operation,
        req.namespace,
        req.name,
        obj.as_deref(),
        old,
    )
    .await?;
    if skipped(req.kind) {
        return Ok(Admitted::default());
    }
    let index = st.webhooks.snapshot();
    if index.mutating.is_empty() && index.validating.is_empty() {
        return Ok(Admitted::default());
    }
    let user = crate::authz::REQUEST_USER
        .try_with(Clone::clone)
        .unwrap_or_default();
    let ns_labels = namespace_labels(st, req, obj.as_deref(), old).await?;
    let mut obj = obj;
    let mut out = Admitted::default();
    // Mutating webhooks one after the other, each seeing the previous one's patch.
    for hook in hooks_of(&index.mutating) {
        let review = review(req, obj.as_deref(), old, &user);
        let Some(call) = prepare(&hook, req, obj.as_deref(), old, ns_labels.as_ref(), &review)?
        else {
            continue;
        };
        let Some(answer) = call.answer(call_webhook(st, &hook, &review, true).await)? else {
            continue;
        };
        out.warnings.extend(answer.warnings);
        if !answer.allowed {
            return Err(denied(call.name, &answer.status));
        }
        if let (Some(patch), Some(o)) = (answer.patch, obj.as_deref_mut()) {
            let patched = skiff_api::patch::apply_patch(
                req.kind.openapi_name,
                o,
                skiff_api::patch::PatchType::Json,
                &patch,
            )
            .map_err(|e| internal(format!("failed calling webhook {:?}: {e}", call.name)))?;
            if *o != patched {
                *o = patched;
                out.mutated = true;
            }
        }
    }
    // Validating webhooks all at once, as kube calls them; the first refusal in
    // configuration order is the answer.
    let obj = obj.as_deref();
    let hooks = hooks_of(&index.validating);
    let mut calls = Vec::new();
    for hook in &hooks {
        let review = review(req, obj, old, &user);
        if let Some(call) = prepare(hook, req, obj, old, ns_labels.as_ref(), &review)? {
            calls.push(async move {
                let r = call_webhook(st, hook, &review, false).await;
                (call, r)
            });
        }
    }
    let mut refusal = None;
    for (call, r) in futures_util::future::join_all(calls).await {
        let answer = match call.answer(r) {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(e) => {
                refusal.get_or_insert(e);
                continue;
            }
        };
        out.warnings.extend(answer.warnings);
        if !answer.allowed {
            refusal.get_or_insert(denied(call.name, &answer.status));
        }
    }
    match refusal {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The webhooks of configurations, in name order.
fn hooks_of(configs: &BTreeMap<String, Value>) -> Vec<Value> {
    configs
        .values()
        .filter_map(|c| c.get("webhooks").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect()
}

/// A webhook to call.
struct Call<'a> {
    name: &'a str,
    /// `failurePolicy: Fail` (the default).
    fail: bool,
}

impl Call<'_> {
    /// The answer to act on; None: a failure the policy ignores.
    fn answer(&self, r: Result<Answer, String>) -> ApiResult<Option<Answer>> {
        match r {
            Ok(a) => Ok(Some(a)),
            Err(e) => {
                tracing::warn!(webhook = self.name, error = %e, "calling an admission webhook");
                if self.fail {
                    Err(internal(format!(
                        "failed calling webhook {:?}: {e}",
                        self.name
                    )))
                } else {
                    Ok(None)
                }
            }
        }
    }
}

/// Whether `hook` is to be called (None: it does not match, or its match could not be
/// evaluated and the policy ignores it).
fn prepare<'h>(
    hook: &'h Value,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
    ns_labels: Option<&BTreeMap<String, String>>,
    review: &Value,
) -> ApiResult<Option<Call<'h>>> {
    let call = Call {
        name: hook.get("name").and_then(Value::as_str).unwrap_or_default(),
        fail: hook.get("failurePolicy").and_then(Value::as_str) != Some("Ignore"),
    };
    match matches(hook, req, obj, old, ns_labels, &review["request"]) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return call.answer(Err(e)).map(|_| None),
    }
    if req.dry_run
        && !matches!(
            hook.get("sideEffects").and_then(Value::as_str),
            Some("None" | "NoneOnDryRun")
        )
    {
        return Err(ApiError::bad_request(format!(
            "admission webhook {:?} does not support dry run",
            call.name
        )));
    }
    Ok(Some(call))
}

/// Kinds kube never sends to webhooks: the configurations (so a bad webhook can always
/// be removed) and the reviews, which are not stored.
fn skipped(kind: &Kind) -> bool {
    (kind.group == GROUP
        && matches!(
            kind.kind,
            "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        ))
        || kind.kind.ends_with("Review")
}

/// The labels `namespaceSelector` sees: the object's Namespace's, a Namespace's own, or
/// None for other cluster-scoped objects (never excluded).
async fn namespace_labels(
    st: &Objects,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<Option<BTreeMap<String, String>>> {
    if req.kind.group.is_empty() && req.kind.kind == "Namespace" {
        return Ok(Some(labels(obj.or(old))));
    }
    let Some(ns) = req.namespace.filter(|_| req.kind.namespaced) else {
        return Ok(None);
    };
    match objects::get(st, objects::ns_kind(), None, ns).await {
        Ok(n) => Ok(Some(labels(Some(&n)))),
        Err(e) if e.code == StatusCode::NOT_FOUND => Ok(Some(BTreeMap::new())),
        Err(e) => Err(e),
    }
}

fn labels(obj: Option<&Value>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether one rule (`operations`, `apiGroups`, `apiVersions`, `resources`, `scope`)
/// covers the request.
fn rule_matches(rule: &Value, req: &Request<'_>) -> bool {
    let has = |field: &str, want: &str| {
        strings(rule.get(field))
            .iter()
            .any(|s| *s == "*" || *s == want)
    };
    let resource_ok = strings(rule.get("resources")).into_iter().any(|r: &str| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == req.kind.plural) && (sub == req.subresource || sub == "*")
    });
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !req.kind.namespaced,
        "Namespaced" => req.kind.namespaced,
        _ => true,
    };
    has("operations", req.operation)
        && has("apiGroups", req.kind.group)
        && has("apiVersions", req.kind.version)
        && resource_ok
        && scope_ok
}

/// A selector field; absent or null selects everything.
fn selector_matches(
    sel: Option<&Value>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    match sel {
        None | Some(Value::Null) => Ok(true),
        Some(s) => LabelSelector::from_object(s)
            .map(|s| s.matches(labels))
            .map_err(|e| e.to_string()),
    }
}

/// Whether `hook` is to be called for the request. An error is a selector or match
/// condition that cannot be evaluated (a failure under the failure policy).
fn matches(
    hook: &Value,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
    ns_labels: Option<&BTreeMap<String, String>>,
    request: &Value,
) -> Result<bool, String> {
    let rules = hook
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !rules.iter().any(|r| rule_matches(r, req)) {
        return Ok(false);
    }
    if let Some(ns) = ns_labels {
        if !selector_matches(hook.get("namespaceSelector"), ns)? {
            return Ok(false);
        }
    }
    let sel = hook.get("objectSelector");
    let new_ok = obj.is_some() && selector_matches(sel, &labels(obj))?;
    let old_ok = old.is_some() && selector_matches(sel, &labels(old))?;
    if !new_ok && !old_ok {
        return Ok(false);
    }
    for cond in hook
        .get("matchConditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = cond.get("name").and_then(Value::as_str).unwrap_or_default();
        let expr = cond
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let vars = vec![
            ("object".to_string(), obj.cloned().unwrap_or(Value::Null)),
            ("oldObject".to_string(), old.cloned().unwrap_or(Value::Null)),
            ("request".to_string(), request.clone()),
        ];
        match skiff_api::crd::evaluate_cel(expr, vars) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => return Ok(false),
            Ok(other) => {
                return Err(format!(
                    "matchCondition {name:?} must evaluate to a bool, got {other}"
                ))
            }
            Err(e) => return Err(format!("evaluating matchCondition {name:?}: {e}")),
        }
    }
    Ok(true)
}

/// The AdmissionReview sent for the request.
fn review(req: &Request<'_>, obj: Option<&Value>, old: Option<&Value>, user: &UserInfo) -> Value {
    let k = req.kind;
    let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
    let gvr = json!({"group": k.group, "version": k.version, "resource": k.plural});
    let mut user_info = json!({"username": user.username});
    if !user.uid.is_empty() {
        user_info["uid"] = json!(user.uid);
    }
    if !user.groups.is_empty() {
        user_info["groups"] = json!(user.groups);
    }
    if !user.extra.is_empty() {
        user_info["extra"] = json!(user.extra);
    }
    let options = match req.operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    let mut r = json!({
        "uid": meta::uid(),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": req.operation,
        "userInfo": user_info,
        "object": obj.cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": req.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
    });
    if !req.subresource.is_empty() {
        r["subResource"] = json!(req.subresource);
        r["requestSubResource"] = json!(req.subresource);
    }
    if !req.name.is_empty() {
        r["name"] = json!(req.name);
    }
    if let Some(ns) = req.namespace.filter(|n| !n.is_empty()) {
        r["namespace"] = json!(ns);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r})
}

/// A webhook's verdict.
#[derive(Debug)]
struct Answer {
    allowed: bool,
    status: Value,
    /// A JSON patch (RFC 6902) to apply.
    patch: Option<Vec<u8>>,
    warnings: Vec<String>,
}

/// Checks an answer as kube's VerifyAdmissionResponse does.
fn verify(uid: &str, body: &[u8], mutating: bool) -> Result<Answer, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("failed to call webhook: the answer is not JSON: {e}"))?;
    let invalid = |why: String| format!("received invalid webhook response: {why}");
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        // As Go prints a GroupVersionKind: `group/version`, `/v1` for the core group.
        let gv = if api_version.contains('/') {
            api_version.to_string()
        } else {
            format!("/{api_version}")
        };
        return Err(invalid(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {gv}, Kind={kind}"
        )));
    }
    let Some(resp) = v.get("response").filter(|r| r.is_object()) else {
        return Err(invalid("webhook response was absent".into()));
    };
    let got = resp.get("uid").and_then(Value::as_str).unwrap_or_default();
    if got != uid {
        return Err(invalid(format!(
            "expected response.uid={uid:?}, got {got:?}"
        )));
    }
    let patch = match resp.get("patch").and_then(Value::as_str) {
        None | Some("") => None,
        Some(_) if !mutating => {
            return Err(invalid("validating webhook may not return a patch".into()))
        }
        Some(p) => {
            match resp.get("patchType").and_then(Value::as_str) {
                Some("JSONPatch") => {}
                None => return Err(invalid("webhook returned patch but not patchType".into())),
                Some(t) => {
                    return Err(invalid(format!(
                        "webhook returned invalid patchType: {t:?}"
                    )))
                }
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| invalid(format!("the patch is not base64: {e}")))?;
            serde_json::from_slice::<Vec<Value>>(&bytes)
                .map_err(|e| invalid(format!("the patch is not a JSON patch: {e}")))?;
            Some(bytes)
        }
    };
    Ok(Answer {
        allowed: resp
            .get("allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status: resp.get("status").cloned().unwrap_or(Value::Null),
        patch,
        warnings: strings(resp.get("warnings"))
            .into_iter()
            .map(String::from)
            .collect(),
    })
}

/// kube's InternalError for a webhook that could not be called.
fn internal(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("Internal error occurred: {message}"),
    )
}

/// kube's error for a denial: the webhook's status, its code at least 400.
fn denied(name: &str, status: &Value) -> ApiError {
    let by = format!("admission webhook {name:?} denied the request");
    let msg = status
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = if !msg.is_empty() {
        format!("{by}: {msg}")
    } else if !reason.is_empty() {
        format!("{by}: {reason}")
    } else {
        format!("{by} without explanation")
    };
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(code, static_reason(reason), message)
}

/// ApiError's reasons are static: the webhook's, when it is one of kube's.
fn static_reason(r: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    KNOWN.iter().find(|k| **k == r).copied().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::client::parse_url;
    use super::*;

    fn req<'a>(kind: &'a Kind, op: &'static str, sub: &'a str) -> Request<'a> {
        Request {
            kind,
            subresource: sub,
            operation: op,
            namespace: Some("default"),
            name: "x",
            dry_run: false,
        }
    }

    fn pods() -> &'static Kind {
        kinds::by_resource("", "v1", "pods").unwrap()
    }

    #[test]
    fn rules_match_operations_groups_resources_and_scope() {
        let r = req(pods(), "CREATE", "");
        let rule = |v: Value| rule_matches(&v, &r);
        assert!(rule(
            json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]})
        ));
        assert!(rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]})
        ));
        assert!(!rule(
            json!({"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]})
        ));
        assert!(!rule(
            json!({"operations": ["*"], "apiGroups": ["apps"], "apiVersions": ["*"], "resources": ["*"]})
        ));
        assert!(!rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods"], "scope": "Cluster"})
        ));
        assert!(rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods"], "scope": "Namespaced"})
        ));
        let status = req(pods(), "UPDATE", "status");
        let rule = |v: Value| rule_matches(&v, &status);
        assert!(!rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods", "*"]})
        ));
        assert!(rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods/status"]})
        ));
        assert!(rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["*/*"]})
        ));
        assert!(rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods/*"]})
        ));
    }

    #[test]
    fn selectors_and_conditions_decide_the_call() {
        let r = req(pods(), "CREATE", "");
        let rules = json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]);
        let obj = json!({"metadata": {"name": "x", "labels": {"app": "a"}}});
        let ns: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let hook = |extra: Value| {
            let mut h = json!({"name": "h", "rules": rules});
            for (k, v) in extra.as_object().unwrap() {
                h[k] = v.clone();
            }
            matches(
                &h,
                &r,
                Some(&obj),
                None,
                Some(&ns),
                &json!({"operation": "CREATE"}),
            )
        };
        assert_eq!(hook(json!({})), Ok(true));
        assert_eq!(
            hook(json!({"objectSelector": {"matchLabels": {"app": "a"}}})),
            Ok(true)
        );
        assert_eq!(
            hook(json!({"objectSelector": {"matchLabels": {"app": "b"}}})),
            Ok(false)
        );
        assert_eq!(
            hook(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}})),
            Ok(true)
        );
        assert_eq!(
            hook(
                json!({"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}})
            ),
            Ok(false)
        );
        assert_eq!(
            hook(
                json!({"matchConditions": [{"name": "c", "expression": "object.metadata.labels.app == 'a' && request.operation == 'CREATE'"}]})
            ),
            Ok(true)
        );
        assert_eq!(
            hook(
                json!({"matchConditions": [{"name": "c", "expression": "oldObject == null && object.metadata.name == 'y'"}]})
            ),
            Ok(false)
        );
        assert!(hook(
            json!({"matchConditions": [{"name": "c", "expression": "object.metadata.name"}]})
        )
        .is_err());
        // The old object's labels count too (a DELETE has only the old one).
        let del = req(pods(), "DELETE", "");
        let h = json!({"rules": rules, "objectSelector": {"matchLabels": {"app": "a"}}});
        assert_eq!(
            matches(&h, &del, None, Some(&obj), None, &Value::Null),
            Ok(true)
        );
    }

    #[test]
    fn the_review_has_kubes_shape() {
        let r = req(pods(), "UPDATE", "status");
        let user = UserInfo {
            username: "alice".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let new = json!({"metadata": {"name": "x"}});
        let old = json!({"metadata": {"name": "x", "labels": {"a": "b"}}});
        let v = review(&r, Some(&new), Some(&old), &user);
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        let q = &v["request"];
        assert_eq!(q["uid"].as_str().unwrap().len(), 36);
        assert_eq!(
            q["kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(
            q["resource"],
            json!({"group": "", "version": "v1", "resource": "pods"})
        );
        assert_eq!(q["subResource"], "status");
        assert_eq!(q["requestKind"], q["kind"]);
        assert_eq!(q["name"], "x");
        assert_eq!(q["namespace"], "default");
        assert_eq!(q["operation"], "UPDATE");
        assert_eq!(
            q["userInfo"],
            json!({"username": "alice", "groups": ["system:authenticated"]})
        );
        assert_eq!(q["object"], new);
        assert_eq!(q["oldObject"], old);
        assert_eq!(q["dryRun"], false);
        assert_eq!(q["options"]["kind"], "UpdateOptions");
    }

    #[test]
    fn answers_are_verified_as_kube_does() {
        let ok = |resp: Value| {
            serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})).unwrap()
        };
        let a = verify(
            "u",
            &ok(json!({"uid": "u", "allowed": true, "warnings": ["w"]})),
            false,
        )
        .unwrap();
        assert!(a.allowed);
        assert_eq!(a.warnings, ["w"]);
        let e = verify("u", &ok(json!({"uid": "v", "allowed": true})), false).unwrap_err();
        assert_eq!(
            e,
            "received invalid webhook response: expected response.uid=\"u\", got \"v\""
        );
        assert!(verify("u", b"garbage", false)
            .unwrap_err()
            .starts_with("failed to call webhook: "));
        let wrong = br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "response": {"uid": "u", "allowed": true}}"#;
        assert!(verify("u", wrong, false)
            .unwrap_err()
            .contains("expected webhook response of admission.k8s.io/v1"));
        assert_eq!(
            verify("u", b"{}", false).unwrap_err(),
            "received invalid webhook response: expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got /, Kind="
        );
        let patch = base64::engine::general_purpose::STANDARD
            .encode(r#"[{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]"#);
        let with_patch =
            ok(json!({"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": patch}));
        assert!(verify("u", &with_patch, true).unwrap().patch.is_some());
        assert!(verify("u", &with_patch, false).is_err());
        let e = denied("h.example.com", &json!({"message": "no", "code": 403}));
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert_eq!(
            e.message,
            "admission webhook \"h.example.com\" denied the request: no"
        );
        let e = denied("h", &Value::Null);
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "admission webhook \"h\" denied the request without explanation"
        );
    }

    #[test]
    fn urls_split_into_address_name_and_path() {
        let t = parse_url("https://127.0.0.1:8443/validate").unwrap();
        assert_eq!(t.connect, "127.0.0.1:8443");
        assert_eq!(t.server_name, "127.0.0.1");
        assert_eq!(t.path, "/validate");
        let t = parse_url("https://[::1]/x?a=b").unwrap();
        assert_eq!(t.connect, "[::1]:443");
        assert_eq!(t.path, "/x?a=b");
        assert!(parse_url("http://127.0.0.1/").is_err());
    }

    #[test]
    fn configurations_and_reviews_are_never_sent() {
        let k = |g, p| kinds::by_resource(g, "v1", p).unwrap();
        assert!(skipped(k(GROUP, "validatingwebhookconfigurations")));
        assert!(skipped(k(GROUP, "mutatingwebhookconfigurations")));
        assert!(skipped(k("authentication.k8s.io", "tokenreviews")));
        assert!(!skipped(pods()));
    }
}
