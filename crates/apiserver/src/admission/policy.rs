//! ValidatingAdmissionPolicies enforced, as kube-apiserver's ValidatingAdmissionPolicy
//! plugin dispatches them.
//!
//! Contract: [`Policies`] holds every policy compiled (once per generation:
//! `skiff_api::admission::Policy::compile`) and every binding, kept current by the
//! admission follower; a request sees the policies some binding names ([`validate`]),
//! in policy name order, each with its bindings in name order. For each: the policy's
//! `matchConstraints`, then the binding's `matchResources`, must match the request; the
//! params are collected (`paramKind` + `paramRef`: one object by name or all a selector
//! picks, in the request's namespace unless the binding names one; each is evaluated;
//! none found is an error under `parameterNotFoundAction: Deny` and skips the binding
//! under `Allow`); then the policy is evaluated over `object`, `oldObject`, `request`,
//! `params`, `namespaceObject`, `variables` and `authorizer` (the RBAC policy, as the
//! requesting user). A failed validation acts as the binding's `validationActions` say:
//! `Deny` refuses with kube's message and the validation's `reason` (Invalid, 422, by
//! default), `Warn` adds a Warning header, `Audit` records the
//! `validation.policy.admission.k8s.io/validation_failure` audit annotation. Errors —
//! expressions that fail, params that cannot be read, a `paramKind` the server does not
//! serve — deny under `failurePolicy: Fail` and are ignored under `Ignore`. A policy's
//! `auditAnnotations` go into the request's audit event as `<policy>/<key>`.
//!
//! Params are read from the store when a binding that names them matches (kube reads
//! them from an informer); the request's Namespace likewise, only when a selector or an
//! expression needs it. Not done: CONNECT requests (exec, attach, port-forward) are not
//! admitted, and `status.typeChecking` is never written (there is no static type check:
//! a type mismatch is an evaluation error).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use serde_json::{json, Value};
use skiff_api::admission::{AnnotationResult, Binding, Policy};
use skiff_api::cel::Input;
use skiff_api::kinds::{self, Kind};
use skiff_api::selector::LabelSelector;

use super::matching::{authorizer, matches_resources, request_attributes, selects};
use super::{Admitted, Attributes, Request, GROUP};
use crate::handlers::objects;
use crate::meta;
use crate::status::{ApiError, ApiResult};
use crate::Objects;

pub(super) const POLICY_KIND: &str = "ValidatingAdmissionPolicy";
pub(super) const BINDING_KIND: &str = "ValidatingAdmissionPolicyBinding";

/// The audit annotation a binding's `Audit` action records.
const VALIDATION_FAILURE: &str = "validation.policy.admission.k8s.io/validation_failure";
/// kube truncates audit annotation values to this length.
const MAX_ANNOTATION_VALUE: usize = 10 * 1024;

/// The policies and bindings in force, compiled.
#[derive(Default)]
pub struct Policies {
    /// Copied on write: a request keeps the snapshot it started with.
    index: RwLock<Arc<Index>>,
}

#[derive(Default, Clone)]
pub(super) struct Index {
    policies: BTreeMap<String, Arc<Policy>>,
    bindings: BTreeMap<String, Arc<Binding>>,
    /// The policies some binding names, with those bindings: what requests go through.
    hooks: Vec<Hook>,
}

#[derive(Clone)]
struct Hook {
    policy: Arc<Policy>,
    bindings: Vec<Arc<Binding>>,
}

impl Index {
    fn rebuild(&mut self) {
        self.hooks = self
            .policies
            .values()
            .map(|p| Hook {
                policy: p.clone(),
                bindings: self
                    .bindings
                    .values()
                    .filter(|b| b.policy_name == p.name)
                    .cloned()
                    .collect(),
            })
            .filter(|h| !h.bindings.is_empty())
            .collect();
    }
}

impl Policies {
    /// The bound policies, None when no policy is bound.
    pub(super) fn snapshot(&self) -> Option<Arc<Index>> {
        let i = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        (!i.hooks.is_empty()).then_some(i)
    }

    fn update(&self, f: impl FnOnce(&mut Index)) {
        let mut guard = self.index.write().unwrap_or_else(|e| e.into_inner());
        let index = Arc::make_mut(&mut guard);
        f(index);
        index.rebuild();
    }

    pub(super) fn clear(&self) {
        self.update(|i| {
            i.policies.clear();
            i.bindings.clear();
        });
    }

    /// Sets (None: removes) the policy `name`, compiling it only when its generation
    /// changed (a status write or a label change does not recompile).
    pub(super) fn set_policy(&self, name: &str, obj: Option<&Value>) {
        self.update(|i| match obj {
            None => {
                i.policies.remove(name);
            }
            Some(o) => {
                let uid = meta::str_at(o, "/metadata/uid").unwrap_or_default();
                let generation = o
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let same = i
                    .policies
                    .get(name)
                    .is_some_and(|p| p.uid == uid && p.generation == generation && generation > 0);
                if !same {
                    i.policies
                        .insert(name.to_string(), Arc::new(Policy::compile(o)));
                }
            }
        });
    }

    pub(super) fn set_binding(&self, name: &str, obj: Option<&Value>) {
        self.update(|i| match obj {
            None => {
                i.bindings.remove(name);
            }
            Some(o) => {
                i.bindings
                    .insert(name.to_string(), Arc::new(Binding::parse(o)));
            }
        });
    }

    #[cfg(test)]
    fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .policies
            .get(name)
            .cloned()
    }
}

/// Kinds policies never see: the policies and bindings themselves (so a bad one can
/// always be fixed) and the reviews, which are not stored.
pub(super) fn exempt(kind: &Kind) -> bool {
    (kind.group == GROUP
        && matches!(
            kind.kind,
            "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
                | "MutatingAdmissionPolicy"
                | "MutatingAdmissionPolicyBinding"
        ))
        || kind.kind.ends_with("Review")
}

/// What the request's evaluation concluded so far: the first refusal, and the audit
/// annotations to record.
struct Outcome<'a> {
    req: &'a Request<'a>,
    refusal: Option<ApiError>,
    annotations: Vec<(String, String)>,
}

impl Outcome<'_> {
    fn deny(
        &mut self,
        policy: &Policy,
        binding: Option<&Binding>,
        message: &str,
        reason: Option<&str>,
    ) {
        if self.refusal.is_none() {
            self.refusal = Some(denied(self.req, policy, binding, message, reason));
        }
    }

    /// A configuration or evaluation error: denies under `failurePolicy: Fail`.
    fn config_error(&mut self, policy: &Policy, binding: Option<&Binding>, e: &str) {
        if !policy.fail {
            tracing::debug!(policy = %policy.name, error = %e, "admission policy error ignored");
            return;
        }
        let what = if binding.is_some() {
            "binding"
        } else {
            "policy"
        };
        self.deny(
            policy,
            binding,
            &format!("failed to configure {what}: {e}"),
            None,
        );
    }
}

/// Evaluates the bound policies that match the request; the first refusal is the
/// error, warnings go to `out`, audit annotations into the request's audit event.
pub(super) async fn validate(
    attrs: &mut Attributes<'_>,
    index: &Index,
    obj: Option<&Value>,
    old: Option<&Value>,
    out: &mut Admitted,
) -> ApiResult<()> {
    let (st, req) = (attrs.st, attrs.req);
    let mut outcome = Outcome {
        req,
        refusal: None,
        annotations: Vec::new(),
    };
    // The request's Namespace, read once if an expression names it.
    let mut namespace_object: Option<Value> = None;
    let null = Value::Null;
    for hook in &index.hooks {
        let policy = &*hook.policy;
        let Some(constraints) = &policy.match_constraints else {
            outcome.config_error(
                policy,
                None,
                "policy contained no match constraints, a required field",
            );
            continue;
        };
        let ns_labels = if selects(constraints.get("namespaceSelector")) {
            attrs.namespace_labels(obj, old).await?
        } else {
            None
        };
        let kind = match matches_resources(constraints, req, ns_labels.as_ref(), obj, old) {
            Ok(Some(k)) => k,
            Ok(None) => continue,
            Err(e) => {
                outcome.config_error(policy, None, &e);
                continue;
            }
        };
        let param_kind = match &policy.param_kind {
            None => None,
            Some(pk) => match kinds::by_kind(&pk.api_version, &pk.kind) {
                Some(k) => Some(k),
                None => {
                    let (g, v) = kinds::split_api_version(&pk.api_version);
                    outcome.config_error(
                        policy,
                        None,
                        &format!(
                            "failed to find resource referenced by paramKind: '{g}/{v}, Kind={}'",
                            pk.kind
                        ),
                    );
                    continue;
                }
            },
        };
        // The objects as the version the policy matched (`matchPolicy: Equivalent`).
        let (vobj, vold) = (as_version(obj, kind), as_version(old, kind));
        let request = request_attributes(req, kind, &attrs.user);
        if namespace_object.is_none() && policy.mentions("namespaceObject") {
            namespace_object = Some(
                attrs
                    .namespace_object()
                    .await?
                    .cloned()
                    .unwrap_or(Value::Null),
            );
        }
        let mut published: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for binding in &hook.bindings {
            if let Some(m) = &binding.match_resources {
                let ns_labels = if selects(m.get("namespaceSelector")) {
                    attrs.namespace_labels(obj, old).await?
                } else {
                    None
                };
                match matches_resources(m, req, ns_labels.as_ref(), obj, old) {
                    Ok(Some(_)) => {}
                    Ok(None) => continue,
                    Err(e) => {
                        outcome.config_error(policy, Some(binding), &e);
                        continue;
                    }
                }
            }
            let params = match param_kind {
                None => vec![None],
                Some(pk) => match collect_params(st, policy, pk, binding, req).await {
                    Ok(p) => p,
                    Err(e) => {
                        outcome.config_error(policy, Some(binding), &e);
                        continue;
                    }
                },
            };
            let decide = |a: &skiff_api::rbac::Attributes| st.authz.decide(a);
            for param in &params {
                let input = Input::new(vec![
                    ("object", vobj.as_deref().unwrap_or(&null)),
                    ("oldObject", vold.as_deref().unwrap_or(&null)),
                    ("request", &request),
                    (
                        "namespaceObject",
                        namespace_object.as_ref().unwrap_or(&null),
                    ),
                    ("params", param.as_ref().unwrap_or(&null)),
                ])
                .with_variables(&policy.variables)
                .with_authorizer(authorizer(&attrs.user, req, kind, &decide));
                let evaluation = policy.validate(&input);
                for (i, d) in evaluation.decisions.iter().enumerate() {
                    if !d.deny {
                        if d.error {
                            tracing::debug!(policy = %policy.name, error = %d.message, "admission policy error ignored");
                        }
                        continue;
                    }
                    for action in &binding.actions {
                        match action.as_str() {
                            "Deny" => outcome.deny(
                                policy,
                                Some(binding),
                                &d.message,
                                d.reason.as_deref(),
                            ),
                            "Warn" => out.warnings.push(format!(
                                "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                                policy.name, binding.name, d.message
                            )),
                            "Audit" => outcome.annotations.push((
                                VALIDATION_FAILURE.to_string(),
                                validation_failure(policy, binding, i, &d.message),
                            )),
                            _ => {}
                        }
                    }
                }
                for a in evaluation.annotations {
                    match a {
                        AnnotationResult::Publish { key, mut value } => {
                            truncate(&mut value, MAX_ANNOTATION_VALUE);
                            let values = published.entry(key).or_default();
                            if !values.contains(&value) {
                                values.push(value);
                            }
                        }
                        AnnotationResult::Error(e) => outcome.deny(policy, Some(binding), &e, None),
                    }
                }
            }
        }
        for (key, values) in published {
            outcome
                .annotations
                .push((format!("{}/{key}", policy.name), values.join(", ")));
        }
    }
    for (k, v) in &outcome.annotations {
        crate::audit::annotate(k, v);
    }
    match outcome.refusal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `obj` as `kind`'s version (the request's own objects unless a policy matched an
/// equivalent version).
fn as_version<'v>(obj: Option<&'v Value>, kind: &Kind) -> Option<Cow<'v, Value>> {
    let o = obj?;
    let want = kind.api_version();
    if o.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return Some(Cow::Borrowed(o));
    }
    let mut c = o.clone();
    skiff_api::convert::to_version(&mut c, &want);
    Some(Cow::Owned(c))
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The value of the `validation_failure` audit annotation (kube's field order).
fn validation_failure(policy: &Policy, binding: &Binding, index: usize, message: &str) -> String {
    format!(
        r#"[{{"message":{},"policy":{},"binding":{},"expressionIndex":{index},"validationActions":{}}}]"#,
        json!(message),
        json!(policy.name),
        json!(binding.name),
        json!(binding.actions),
    )
}

/// The params a binding names (`paramRef`) of the policy's `paramKind`: each is
/// evaluated; `[None]` when the binding names none (`params` is null). An error is a
/// configuration error (under the failure policy).
async fn collect_params(
    st: &Objects,
    policy: &Policy,
    kind: &'static Kind,
    binding: &Binding,
    req: &Request<'_>,
) -> Result<Vec<Option<Value>>, String> {
    let Some(r) = &binding.param_ref else {
        return Ok(vec![None]);
    };
    let namespace = if kind.namespaced {
        let ns = if r.namespace.is_empty() {
            req.namespace.unwrap_or_default()
        } else {
            r.namespace.as_str()
        };
        if ns.is_empty() {
            return Err(
                "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
                    .into(),
            );
        }
        Some(ns)
    } else {
        if !r.namespace.is_empty() {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into(),
            );
        }
        None
    };
    let stamp = |mut o: Value| {
        // Params carry the paramKind's apiVersion and kind, whatever version is stored.
        if let Some(pk) = &policy.param_kind {
            o["apiVersion"] = json!(pk.api_version);
            o["kind"] = json!(pk.kind);
        }
        Some(o)
    };
    let found: Vec<Option<Value>> = if !r.name.is_empty() {
        match objects::get(st, kind, namespace, &r.name).await {
            Ok(o) => vec![stamp(o)],
            Err(e) if e.code == StatusCode::NOT_FOUND => Vec::new(),
            Err(e) => return Err(e.message),
        }
    } else if let Some(sel) = &r.selector {
        let sel = LabelSelector::from_object(sel).map_err(|e| e.to_string())?;
        let prefix = meta::list_prefix(kind, namespace);
        objects::list_values(&*st.store, &prefix)
            .await
            .map_err(|e| e.message)?
            .into_iter()
            .filter(|o| sel.matches(&skiff_api::object::labels(o)))
            .map(stamp)
            .collect()
    } else {
        return Err("one of name or selector must be provided".into());
    };
    if found.is_empty() && r.deny_when_missing {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        );
    }
    Ok(found)
}

/// kube's refusal: `admission.NewForbidden`'s message (`<resource> "<name>" is
/// forbidden: …`) with the validation's reason and its code (Invalid, 422, by default).
fn denied(
    req: &Request<'_>,
    policy: &Policy,
    binding: Option<&Binding>,
    message: &str,
    reason: Option<&str>,
) -> ApiError {
    let why = match binding {
        Some(b) => format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
            policy.name, b.name
        ),
        None => format!(
            "ValidatingAdmissionPolicy '{}' denied request: {message}",
            policy.name
        ),
    };
    let k = req.kind;
    let resource = if k.group.is_empty() {
        k.plural.to_string()
    } else {
        format!("{}.{}", k.plural, k.group)
    };
    let full = if req.name.is_empty() {
        format!("{resource} is forbidden: {why}")
    } else {
        format!("{resource} {:?} is forbidden: {why}", req.name)
    };
    let (code, reason) = match reason.unwrap_or("Invalid") {
        "Forbidden" => (StatusCode::FORBIDDEN, "Forbidden"),
        "Unauthorized" => (StatusCode::UNAUTHORIZED, "Unauthorized"),
        "RequestEntityTooLarge" => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
    };
    ApiError {
        details: Some(json!({
            "name": req.name,
            "group": k.group,
            "kind": k.plural,
            "causes": [{"message": why}],
        })),
        ..ApiError::new(code, reason, full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_obj(generation: i64, rv: &str, expr: &str) -> Value {
        json!({"metadata": {"name": "p", "uid": "u1", "generation": generation, "resourceVersion": rv},
               "spec": {"validations": [{"expression": expr}]}})
    }

    #[test]
    fn policies_compile_once_per_generation_and_need_a_binding() {
        let p = Policies::default();
        p.set_policy("p", Some(&policy_obj(1, "10", "true")));
        assert!(p.snapshot().is_none(), "an unbound policy is not enforced");
        let first = p.policy("p").unwrap();
        // A status write: new resourceVersion, same generation.
        p.set_policy("p", Some(&policy_obj(1, "11", "true")));
        assert!(Arc::ptr_eq(&first, &p.policy("p").unwrap()));
        p.set_policy("p", Some(&policy_obj(2, "12", "false")));
        assert!(!Arc::ptr_eq(&first, &p.policy("p").unwrap()));
        let binding = json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]}});
        p.set_binding("b", Some(&binding));
        assert_eq!(p.snapshot().unwrap().hooks.len(), 1);
        p.set_binding("b", None);
        assert!(p.snapshot().is_none());
    }

    #[test]
    fn refusals_read_as_kubes() {
        let deployments = kinds::by_resource("apps", "v1", "deployments").unwrap();
        let req = Request {
            kind: deployments,
            subresource: "",
            operation: "CREATE",
            namespace: Some("default"),
            name: "x",
            dry_run: false,
        };
        let policy = Policy::compile(&json!({"metadata": {"name": "demo-policy.example.com"}}));
        let binding =
            Binding::parse(&json!({"metadata": {"name": "demo-binding-test.example.com"}}));
        let e = denied(
            &req,
            &policy,
            Some(&binding),
            "failed expression: object.spec.replicas <= 5",
            None,
        );
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.reason, "Invalid");
        assert_eq!(
            e.message,
            "deployments.apps \"x\" is forbidden: ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
        );
        assert_eq!(
            e.details.unwrap()["causes"][0]["message"],
            "ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
        );
        let e = denied(
            &req,
            &policy,
            None,
            "failed to configure policy: x",
            Some("Forbidden"),
        );
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert!(e
            .message
            .ends_with("ValidatingAdmissionPolicy 'demo-policy.example.com' denied request: failed to configure policy: x"));
        let v = validation_failure(
            &policy,
            &Binding {
                actions: vec!["Audit".into()],
                ..binding
            },
            0,
            "m",
        );
        assert_eq!(
            v,
            r#"[{"message":"m","policy":"demo-policy.example.com","binding":"demo-binding-test.example.com","expressionIndex":0,"validationActions":["Audit"]}]"#
        );
    }
}
