//! Admission webhooks (Mutating- and ValidatingWebhookConfigurations), as kube-apiserver's
//! MutatingAdmissionWebhook and ValidatingAdmissionWebhook plugins call them: the mutating
//! ones one by one (configurations by name, then webhook order; a `JSONPatch` answer
//! changes the object, which is then validated again), the validating ones all at once.
//! A denial is the webhook's own status (`admission webhook "NAME" denied the request:
//! …`); a webhook that cannot be called or answers nonsense fails the request with 500
//! under `failurePolicy: Fail` and is skipped under `Ignore`. Calls are bounded by the
//! webhook's `timeoutSeconds` (default 10, at most 30), so a webhook never hangs a write.
//! Matching is [`super::matching`]'s; `matchConditions` are CEL over `object`,
//! `oldObject`, `request` and `authorizer`. Not done: `reinvocationPolicy: IfNeeded` (each
//! mutating webhook runs once) and `matchPolicy: Equivalent` across versions (the stored
//! version is sent). Webhook configurations and policies are never sent to webhooks.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{json, Value};
use skiff_api::admission::{conditions_match, Condition, WEBHOOK_CONDITION_NAMES};
use skiff_api::cel::{Declarations, Input};
use skiff_api::kinds::Kind;

use super::client::call_webhook;
use super::matching::{
    authorizer, request_attributes, rule_matches, selectors_match, strings, Decide,
};
use super::{internal, Admitted, Attributes, Request, GROUP};
use crate::audit::UserInfo;
use crate::status::{ApiError, ApiResult};

/// The webhook configurations in force, by configuration name.
#[derive(Default)]
pub struct Webhooks {
    /// Copied on write: a request keeps the snapshot it started with.
    index: RwLock<Arc<Index>>,
}

#[derive(Default, Clone)]
pub(super) struct Index {
    mutating: BTreeMap<String, Value>,
    validating: BTreeMap<String, Value>,
}

impl Index {
    fn is_empty(&self) -> bool {
        self.mutating.is_empty() && self.validating.is_empty()
    }

    pub(super) fn of(&mut self, kind: &str) -> &mut BTreeMap<String, Value> {
        if kind == "MutatingWebhookConfiguration" {
            &mut self.mutating
        } else {
            &mut self.validating
        }
    }
}

impl Webhooks {
    /// The configurations in force, None when there are none.
    pub(super) fn snapshot(&self) -> Option<Arc<Index>> {
        let i = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        (!i.is_empty()).then_some(i)
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Index)) {
        f(Arc::make_mut(
            &mut self.index.write().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The configuration kinds this index holds.
pub(super) const CONFIG_KINDS: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// Kinds kube never sends to webhooks: the admission configurations and policies (so a
/// bad webhook can always be removed) and the reviews, which are not stored.
pub(super) fn exempt(kind: &Kind) -> bool {
    (kind.group == GROUP
        && matches!(
            kind.kind,
            "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
                | "MutatingAdmissionPolicy"
                | "MutatingAdmissionPolicyBinding"
        ))
        || kind.kind.ends_with("Review")
}

/// Calls the matching mutating webhooks one after the other, each seeing the previous
/// one's patch.
pub(super) async fn mutate(
    attrs: &mut Attributes<'_>,
    index: &Index,
    mut obj: Option<&mut Value>,
    old: Option<&Value>,
    out: &mut Admitted,
) -> ApiResult<()> {
    if index.mutating.is_empty() {
        return Ok(());
    }
    let ns_labels = attrs.namespace_labels(obj.as_deref(), old).await?;
    let (st, req, user) = (attrs.st, attrs.req, &attrs.user);
    let decide = |a: &skiff_api::rbac::Attributes| st.authz.decide(a);
    for hook in hooks_of(&index.mutating) {
        let review = review(req, obj.as_deref(), old, user);
        let seen = Seen {
            obj: obj.as_deref(),
            old,
            ns_labels: ns_labels.as_ref(),
            user,
            decide: &decide,
        };
        let Some(call) = prepare(&hook, req, &seen, &review)? else {
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
    Ok(())
}

/// Calls the matching validating webhooks all at once, as kube calls them; the first
/// refusal in configuration order is the answer.
pub(super) async fn validate(
    attrs: &mut Attributes<'_>,
    index: &Index,
    obj: Option<&Value>,
    old: Option<&Value>,
    out: &mut Admitted,
) -> ApiResult<()> {
    if index.validating.is_empty() {
        return Ok(());
    }
    let ns_labels = attrs.namespace_labels(obj, old).await?;
    let (st, req, user) = (attrs.st, attrs.req, &attrs.user);
    let decide = |a: &skiff_api::rbac::Attributes| st.authz.decide(a);
    let seen = Seen {
        obj,
        old,
        ns_labels: ns_labels.as_ref(),
        user,
        decide: &decide,
    };
    let hooks = hooks_of(&index.validating);
    let mut calls = Vec::new();
    for hook in &hooks {
        let review = review(req, obj, old, user);
        if let Some(call) = prepare(hook, req, &seen, &review)? {
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
        None => Ok(()),
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

/// What a webhook's match sees of the request.
struct Seen<'a> {
    obj: Option<&'a Value>,
    old: Option<&'a Value>,
    /// The Namespace's labels (None: cluster-scoped, never excluded).
    ns_labels: Option<&'a BTreeMap<String, String>>,
    user: &'a UserInfo,
    /// The `authorizer` of match conditions.
    decide: Decide<'a>,
}

/// Whether `hook` is to be called (None: it does not match, or its match could not be
/// evaluated and the policy ignores it).
fn prepare<'h>(
    hook: &'h Value,
    req: &Request<'_>,
    seen: &Seen<'_>,
    review: &Value,
) -> ApiResult<Option<Call<'h>>> {
    let call = Call {
        name: hook.get("name").and_then(Value::as_str).unwrap_or_default(),
        fail: hook.get("failurePolicy").and_then(Value::as_str) != Some("Ignore"),
    };
    match matches(hook, req, seen, &review["request"]) {
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

/// Whether `hook` is to be called for the request. An error is a selector or match
/// condition that cannot be evaluated (a failure under the failure policy).
fn matches(
    hook: &Value,
    req: &Request<'_>,
    seen: &Seen<'_>,
    request: &Value,
) -> Result<bool, String> {
    let rules = hook
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !rules.iter().any(|r| rule_matches(r, req, req.kind)) {
        return Ok(false);
    }
    if !selectors_match(hook, seen.ns_labels, seen.obj, seen.old)? {
        return Ok(false);
    }
    let conditions = super::matching::list(hook.get("matchConditions"));
    if conditions.is_empty() {
        return Ok(true);
    }
    let decls = Declarations {
        names: WEBHOOK_CONDITION_NAMES,
        variables: None,
    };
    let conditions: Vec<Condition> = conditions
        .iter()
        .map(|c| Condition::compile(c, &decls))
        .collect();
    let null = Value::Null;
    let input = Input::new(vec![
        ("object", seen.obj.unwrap_or(&null)),
        ("oldObject", seen.old.unwrap_or(&null)),
        ("request", request),
    ])
    .with_authorizer(authorizer(seen.user, req, req.kind, seen.decide));
    conditions_match(&conditions, &input)
}

/// The AdmissionReview sent for the request.
fn review(req: &Request<'_>, obj: Option<&Value>, old: Option<&Value>, user: &UserInfo) -> Value {
    let mut r = request_attributes(req, req.kind, user);
    r["uid"] = json!(crate::meta::uid());
    r["object"] = obj.cloned().unwrap_or(Value::Null);
    r["oldObject"] = old.cloned().unwrap_or(Value::Null);
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r})
}

/// A webhook's verdict.
#[derive(Debug)]
pub(super) struct Answer {
    allowed: bool,
    status: Value,
    /// A JSON patch (RFC 6902) to apply.
    patch: Option<Vec<u8>>,
    warnings: Vec<String>,
}

/// Checks an answer as kube's VerifyAdmissionResponse does.
pub(super) fn verify(uid: &str, body: &[u8], mutating: bool) -> Result<Answer, String> {
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
    use super::super::client::parse_url;
    use super::super::matching::tests::{pods, req};
    use super::*;
    use skiff_api::kinds;

    /// An authorizer that allows only alice to list pods.
    fn nobody(a: &skiff_api::rbac::Attributes) -> skiff_api::rbac::Decision {
        if a.user == "alice" && a.verb == "list" && a.resource == "pods" {
            skiff_api::rbac::Decision::Allow {
                reason: String::new(),
            }
        } else {
            skiff_api::rbac::Decision::NoOpinion {
                reason: String::new(),
            }
        }
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
            let user = UserInfo {
                username: "alice".into(),
                ..Default::default()
            };
            let seen = Seen {
                obj: Some(&obj),
                old: None,
                ns_labels: Some(&ns),
                user: &user,
                decide: &nobody,
            };
            matches(&h, &r, &seen, &json!({"operation": "CREATE"}))
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
            json!({"matchConditions": [{"name": "c", "expression": "object.metadata.missing == 'y'"}]})
        )
        .is_err());
        // Only false excludes, as in kube.
        assert_eq!(
            hook(json!({"matchConditions": [{"name": "c", "expression": "object.metadata.name"}]})),
            Ok(true)
        );
        // The authorizer asks RBAC as the requesting user.
        assert_eq!(
            hook(
                json!({"matchConditions": [{"name": "c", "expression": "authorizer.group('').resource('pods').check('list').allowed() && !authorizer.requestResource.check('delete').allowed()"}]})
            ),
            Ok(true)
        );
        // The old object's labels count too (a DELETE has only the old one).
        let del = req(pods(), "DELETE", "");
        let h = json!({"rules": rules, "objectSelector": {"matchLabels": {"app": "a"}}});
        let user = UserInfo::default();
        let seen = Seen {
            obj: None,
            old: Some(&obj),
            ns_labels: None,
            user: &user,
            decide: &nobody,
        };
        assert_eq!(matches(&h, &del, &seen, &Value::Null), Ok(true));
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
        assert!(exempt(k(GROUP, "validatingwebhookconfigurations")));
        assert!(exempt(k(GROUP, "mutatingwebhookconfigurations")));
        assert!(exempt(k(GROUP, "validatingadmissionpolicies")));
        assert!(exempt(k("authentication.k8s.io", "tokenreviews")));
        assert!(!exempt(pods()));
    }
}
