//! Authorization as kube-apiserver's `--authorization-mode=Node,RBAC`: requests of nodes
//! (`system:node:<name>` in `system:nodes`) go to the Node authorizer first
//! ([`crate::node_authz`]), and what it does not allow falls through to RBAC, its reason
//! kept for the 403 message. RBAC: each request's
//! attributes (kube's RequestInfo: verb, API group, resource, subresource, namespace, name,
//! or a non-resource path) are checked against the Roles, ClusterRoles and their bindings,
//! which every server keeps in memory from the watch cache. `system:masters` may do
//! everything. The default roles and bindings Kubernetes bootstraps are reconciled into
//! the store at start, and ClusterRoles with an `aggregationRule` are kept the union of
//! the roles they select (the clusterrole-aggregation controller).
//!
//! The reviews (SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectRulesReview, SelfSubjectReview) answer from the same policy, so
//! `kubectl auth can-i` predicts exactly what a request gets.

use std::sync::{Arc, RwLock};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_api::kinds;
use skiff_api::node_authz::{node_identity, NodeDecision, RULES_UNSUPPORTED};
use skiff_api::rbac::{self, Decision, Policy};
use skiff_store::Revision;

pub use skiff_api::rbac::Attributes;

use crate::audit::UserInfo;
use crate::handlers::objects::{self, Part};
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::{Ended, WatchCache};
use crate::{AppState, Objects};

tokio::task_local! {
    /// Who the request being served acts as: the RBAC kinds' escalation checks read it
    /// where the final object is known. Absent for the server's own writes.
    pub static REQUEST_USER: UserInfo;
}

/// The in-memory policy every request is checked against.
#[derive(Default)]
pub struct Authorizer {
    policy: RwLock<Policy>,
    /// The Node authorizer's graph and rules.
    pub nodes: crate::node_authz::NodeAuthorizer,
}

/// The Node authorizer's answer, then RBAC's for what it does not allow: kube's union of
/// authorizers (the first to allow wins; the reasons of those without an opinion are
/// joined with newlines).
fn union(node: NodeDecision, rbac: impl FnOnce() -> Decision) -> Decision {
    if node.is_allowed() {
        return Decision::Allow {
            reason: String::new(),
        };
    }
    match rbac() {
        d @ Decision::Allow { .. } => d,
        Decision::NoOpinion { reason } => {
            let reasons: Vec<String> = [node.reason(), reason]
                .into_iter()
                .filter(|r| !r.is_empty())
                .collect();
            Decision::NoOpinion {
                reason: reasons.join("\n"),
            }
        }
    }
}

/// The decision on `a`: Node authorizer (for nodes, after its graph caught up with the
/// watch cache when a relationship is missing), then RBAC.
pub async fn decide(st: &AppState, a: &Attributes) -> Decision {
    if rbac::is_superuser(&a.groups) {
        return st.authz.decide(a);
    }
    match node_identity(&a.user, &a.groups) {
        Some(node) => {
            let d = st.authz.nodes.decide_current(&st.cache, node, a).await;
            union(d, || st.authz.decide(a))
        }
        None => st.authz.decide(a),
    }
}

impl Authorizer {
    /// The decision on `a` from the graph and policy as they are (no waiting).
    pub fn decide_now(&self, a: &Attributes) -> Decision {
        if rbac::is_superuser(&a.groups) {
            return self.decide(a);
        }
        match node_identity(&a.user, &a.groups) {
            Some(node) => union(self.nodes.decide(node, a), || self.decide(a)),
            None => self.decide(a),
        }
    }

    /// RBAC's decision alone.
    pub fn decide(&self, a: &Attributes) -> Decision {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .authorize(a)
    }

    fn with<T>(&self, f: impl FnOnce(&Policy) -> T) -> T {
        f(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn update(&self, f: impl FnOnce(&mut Policy)) {
        f(&mut self.policy.write().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Whether the authorizers allow `a` (impersonation checks).
pub fn allowed(st: &AppState, a: &Attributes) -> bool {
    st.authz.decide_now(a).is_allowed()
}

/// The 403 kube-apiserver answers a refused impersonation with.
pub fn impersonation_message(user: &UserInfo, a: &Attributes) -> String {
    let what = if a.resource == "serviceaccounts" {
        format!("serviceaccounts {:?}", a.name)
    } else if a.api_group.is_empty() {
        format!("{} {:?}", a.resource, a.name)
    } else {
        format!("{}.{} {:?}", a.resource, a.api_group, a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    format!(
        "{what} is forbidden: User {:?} cannot impersonate resource {:?} in API group {:?} {scope}",
        user.username, a.resource, a.api_group
    )
}

/// The attributes of a request, as kube-apiserver's RequestInfoFactory reads a URL.
pub fn attributes(user: &UserInfo, method: &Method, path: &str, q: &Query) -> Attributes {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let base = Attributes {
        user: user.username.clone(),
        groups: user.groups.clone(),
        ..Default::default()
    };
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _v, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => {
            let verb = match *method {
                Method::GET | Method::HEAD => "get",
                Method::POST => "post",
                Method::PUT => "put",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "get",
            };
            return Attributes {
                verb: verb.into(),
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
                resource_request: false,
                ..base
            };
        }
    };
    let (watch_path, mut parts) = match rest {
        ["watch", r @ ..] => (true, r.to_vec()),
        r => (false, r.to_vec()),
    };
    let mut namespace = String::new();
    if parts.first() == Some(&"namespaces") && parts.len() > 1 {
        namespace = parts[1].to_string();
        if parts.len() > 2 && !["status", "finalize"].contains(&parts[2]) {
            parts = parts[2..].to_vec();
        }
    }
    let resource = parts.first().copied().unwrap_or_default().to_string();
    let mut name = parts.get(1).copied().unwrap_or_default().to_string();
    let subresource = parts.get(2).copied().unwrap_or_default().to_string();
    let watch = watch_path || q.flag("watch") && q.get("watch").is_some();
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    };
    // A list or watch of one object by field selector is a request about that name.
    if (verb == "list" || verb == "watch") && name.is_empty() {
        if let Some(sel) = q.get("fieldSelector") {
            if let Some(n) = sel
                .split(',')
                .find_map(|t| t.trim().strip_prefix("metadata.name=").map(str::to_string))
            {
                name = n.trim_start_matches('=').to_string();
            }
        }
    }
    // The namespace of /namespaces/<ns> is the object itself.
    if resource == "namespaces" && namespace.is_empty() {
        namespace = name.clone();
    }
    let field_selector = if verb == "list" || verb == "watch" {
        q.get("fieldSelector").unwrap_or_default().to_string()
    } else {
        String::new()
    };
    Attributes {
        verb: verb.into(),
        namespace,
        api_group: group.into(),
        resource,
        subresource,
        name,
        path: path.into(),
        resource_request: true,
        field_selector,
        ..base
    }
}

/// The 403 for a request RBAC refused, with kube-apiserver's message and details.
pub fn forbidden(a: &Attributes, d: &Decision) -> ApiError {
    let mut e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", d.forbidden_message(a));
    if a.resource_request {
        let mut details = json!({"kind": a.resource});
        if !a.name.is_empty() {
            details["name"] = json!(a.name);
        }
        if !a.api_group.is_empty() {
            details["group"] = json!(a.api_group);
        }
        e.details = Some(details);
    }
    e
}

/// Checks a request; Err is the 403 to answer.
pub async fn check(
    st: &AppState,
    user: &UserInfo,
    method: &Method,
    path: &str,
    q: &Query,
) -> ApiResult<()> {
    if rbac::is_superuser(&user.groups) {
        return Ok(());
    }
    let a = attributes(user, method, path, q);
    let d = decide(st, &a).await;
    if d.is_allowed() {
        Ok(())
    } else {
        Err(forbidden(&a, &d))
    }
}

fn rbac_kind(kind: &str) -> &'static kinds::Kind {
    let plural = match kind {
        "Role" => "roles",
        "ClusterRole" => "clusterroles",
        "RoleBinding" => "rolebindings",
        _ => "clusterrolebindings",
    };
    kinds::by_resource("rbac.authorization.k8s.io", "v1", plural).expect("RBAC kinds are served")
}

/// Loads the whole policy from the store (before serving, and after the watch lost events).
pub async fn load(objects: &Objects, authz: &Authorizer) -> ApiResult<()> {
    let mut lists = Vec::new();
    for kind in rbac::KINDS {
        lists.push(
            objects::list_values(&*objects.store, &meta::kind_prefix(rbac_kind(kind))).await?,
        );
    }
    let [roles, cluster_roles, role_bindings, cluster_role_bindings]: [Vec<Value>; 4] = lists
        .try_into()
        .map_err(|_| ApiError::internal("four RBAC kinds"))?;
    let p = Policy::new(roles, cluster_roles, role_bindings, cluster_role_bindings);
    authz.update(|policy| *policy = p);
    Ok(())
}

/// Writes the default roles and bindings Kubernetes bootstraps, reconciling ones that
/// exist (missing rules and subjects are added unless `autoupdate` is "false").
pub async fn bootstrap(objects: &Objects) -> ApiResult<()> {
    let sets: [(&str, Vec<Value>); 4] = [
        ("ClusterRole", rbac::bootstrap_cluster_roles()),
        (
            "ClusterRoleBinding",
            rbac::bootstrap_cluster_role_bindings(),
        ),
        ("Role", rbac::bootstrap_roles()),
        ("RoleBinding", rbac::bootstrap_role_bindings()),
    ];
    let q = Query::parse(None);
    for (kind, wanted) in sets {
        let k = rbac_kind(kind);
        for w in wanted {
            let name = meta::name(&w).to_string();
            let ns = meta::namespace(&w).map(str::to_string);
            let existing = match objects::get(objects, k, ns.as_deref(), &name).await {
                Ok(o) => Some(o),
                Err(e) if e.code == StatusCode::NOT_FOUND => None,
                Err(e) => return Err(e),
            };
            let Some(obj) = rbac::reconcile(existing.as_ref(), &w) else {
                continue;
            };
            let r = if existing.is_some() {
                objects::update(objects, k, ns.as_deref(), &name, obj, &q, Part::Main)
                    .await
                    .map(|_| ())
            } else {
                objects::create(objects, k, ns.as_deref(), obj, &q)
                    .await
                    .map(|_| ())
            };
            match r {
                // Another server on the store wrote it meanwhile.
                Err(e) if e.code == StatusCode::CONFLICT => {}
                r => r?,
            }
        }
    }
    Ok(())
}

/// Keeps the policy current from the watch cache until `stop`, and aggregated
/// ClusterRoles the union of the roles they select.
pub async fn follow(
    st: Arc<AppState>,
    cache: Arc<WatchCache>,
    stop: skiff_serve::CancellationToken,
) {
    let prefixes: Vec<(String, &str)> = rbac::KINDS
        .iter()
        .map(|k| (meta::kind_prefix(rbac_kind(k)), *k))
        .collect();
    let cluster_roles = meta::kind_prefix(rbac_kind("ClusterRole"));
    loop {
        let Ok(mut sub) = cache.subscribe(Revision::MAX) else {
            return;
        };
        if let Err(e) = load(&st.objects, &st.authz).await {
            tracing::warn!(error = %e.message, "loading the RBAC policy");
        }
        aggregate(&st.objects).await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        let Some((_, kind)) = prefixes.iter().find(|(p, _)| ev.key.starts_with(p.as_str())) else {
                            continue;
                        };
                        match ev.kind {
                            crate::watch_cache::EventType::Deleted => {
                                let obj = ev.decode().unwrap_or_default();
                                st.authz.update(|p| p.remove(kind, meta::namespace(&obj), meta::name(&obj)));
                            }
                            _ => {
                                if let Some(obj) = ev.decode() {
                                    st.authz.update(|p| p.upsert(kind, &obj));
                                }
                            }
                        }
                        if ev.key.starts_with(&cluster_roles) {
                            aggregate(&st.objects).await;
                        }
                    }
                    Err(Ended::Closed) => return,
                    Err(_) => break,
                }
            }
        }
    }
}

/// The clusterrole-aggregation controller: each ClusterRole with an aggregationRule gets
/// the rules of the ClusterRoles its selectors match.
async fn aggregate(objects: &Objects) {
    let kind = rbac_kind("ClusterRole");
    let Ok(all) = objects::list_values(&*objects.store, &meta::kind_prefix(kind)).await else {
        return;
    };
    for target in all.iter().filter(|r| r.get("aggregationRule").is_some()) {
        if let Some(updated) = rbac::aggregate(&all, target) {
            let name = meta::name(target).to_string();
            if let Err(e) = objects::update(
                objects,
                kind,
                None,
                &name,
                updated,
                &Query::parse(None),
                Part::Main,
            )
            .await
            {
                tracing::debug!(role = %name, error = %e.message, "aggregating a ClusterRole (retried on the next change)");
            }
        }
    }
}

/// Refuses a write of an RBAC object that grants more than its writer holds (unless the
/// writer may `escalate`/`bind`), as kube's RBAC registry does. Writes by the server
/// itself (no request user) are not checked.
pub fn check_grant(
    authz: &Authorizer,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let Ok(user) = REQUEST_USER.try_with(Clone::clone) else {
        return Ok(());
    };
    if rbac::is_superuser(&user.groups) {
        return Ok(());
    }
    let r = authz.with(|p| match kind {
        "Role" | "ClusterRole" => p.check_role_grant(&user.username, &user.groups, kind, obj, old),
        "RoleBinding" | "ClusterRoleBinding" => {
            p.check_binding_grant(&user.username, &user.groups, kind, obj, old)
        }
        _ => Ok(()),
    });
    r.map_err(|e| match e {
        rbac::GrantError::Forbidden { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string())
        }
        rbac::GrantError::RoleNotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "NotFound", e.to_string())
        }
    })
}

/// Answers the access reviews and SelfSubjectReview (`create` of these kinds), as `user`.
pub async fn review(
    st: &AppState,
    kind: &str,
    ns: Option<&str>,
    user: &UserInfo,
    mut obj: Value,
) -> ApiResult<Value> {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let (subject, groups): (String, Vec<String>) = match kind {
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let u = spec
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let g: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            if u.is_empty() && g.is_empty() {
                return Err(ApiError::invalid(
                    kind,
                    "authorization.k8s.io",
                    "",
                    vec![skiff_api::strategy::Cause::invalid_raw(
                        "spec.user,spec.groups",
                        "\"\"",
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            (u, g)
        }
        _ => (user.username.clone(), user.groups.clone()),
    };
    match kind {
        "SelfSubjectReview" => {
            obj["status"] = json!({"userInfo": {
                "username": user.username,
                "uid": user.uid,
                "groups": user.groups,
                "extra": user.extra,
            }});
        }
        "SelfSubjectRulesReview" => {
            let ns = spec
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut status = st
                .authz
                .with(|p| p.rules_review_status(&subject, &groups, ns));
            // A node's rights are the Node authorizer's, not a list of rules: kube marks
            // the answer incomplete with the authorizer's error first.
            if node_identity(&subject, &groups).is_some() {
                let e = match status.get("evaluationError").and_then(Value::as_str) {
                    Some(rbac_err) => format!("[{RULES_UNSUPPORTED}, {rbac_err}]"),
                    None => RULES_UNSUPPORTED.to_string(),
                };
                status["incomplete"] = json!(true);
                status["evaluationError"] = json!(e);
            }
            obj["status"] = status;
        }
        _ => {
            let s = |p: &str| {
                spec.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let a = if let Some(_r) = spec.get("resourceAttributes") {
                let mut namespace = s("/resourceAttributes/namespace");
                if kind == "LocalSubjectAccessReview" {
                    let want = ns.unwrap_or_default();
                    if !namespace.is_empty() && namespace != want {
                        return Err(ApiError::invalid(
                            kind,
                            "authorization.k8s.io",
                            "",
                            vec![skiff_api::strategy::Cause::invalid(
                                "spec.resourceAttributes.namespace",
                                &namespace,
                                "must match metadata.namespace",
                            )],
                        ));
                    }
                    namespace = want.to_string();
                }
                Attributes {
                    user: subject.clone(),
                    groups: groups.clone(),
                    verb: s("/resourceAttributes/verb"),
                    namespace,
                    api_group: s("/resourceAttributes/group"),
                    resource: s("/resourceAttributes/resource"),
                    subresource: s("/resourceAttributes/subresource"),
                    name: s("/resourceAttributes/name"),
                    path: String::new(),
                    resource_request: true,
                    field_selector: review_field_selector(
                        spec.pointer("/resourceAttributes/fieldSelector"),
                    ),
                }
            } else if spec.get("nonResourceAttributes").is_some() {
                Attributes {
                    user: subject.clone(),
                    groups: groups.clone(),
                    verb: s("/nonResourceAttributes/verb"),
                    path: s("/nonResourceAttributes/path"),
                    resource_request: false,
                    ..Default::default()
                }
            } else {
                return Err(ApiError::invalid(
                    kind,
                    "authorization.k8s.io",
                    "",
                    vec![skiff_api::strategy::Cause::invalid_raw(
                        "spec.resourceAttributes",
                        "null",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            };
            let d = decide(st, &a).await;
            obj["status"] = if d.is_allowed() {
                json!({"allowed": true, "reason": d.reason()})
            } else {
                let mut s = json!({"allowed": false});
                if !d.reason().is_empty() {
                    s["reason"] = json!(d.reason());
                }
                s
            };
        }
    }
    meta::default_at(&mut obj, &["metadata", "creationTimestamp"], Value::Null);
    Ok(obj)
}

/// A review's `resourceAttributes.fieldSelector` as a selector string: its
/// `rawSelector`, or its `requirements` (`In` or `NotIn` one value), as kube reads them.
fn review_field_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return String::new();
    };
    if let Some(raw) = sel.get("rawSelector").and_then(Value::as_str) {
        return raw.to_string();
    }
    let terms: Vec<String> = sel
        .get("requirements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let key = r.get("key")?.as_str()?;
            let values = r.get("values")?.as_array()?;
            let [v] = values.as_slice() else {
                return None;
            };
            let v = skiff_api::selector::escape_field_value(v.as_str()?);
            match r.get("operator")?.as_str()? {
                "In" => Some(format!("{key}={v}")),
                "NotIn" => Some(format!("{key}!={v}")),
                _ => None,
            }
        })
        .collect();
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_decisions_fall_through_to_rbac_with_both_reasons() {
        let refused = NodeDecision::NoOpinion("node says no".into());
        let rbac_no = || Decision::NoOpinion {
            reason: "RBAC: role.rbac.authorization.k8s.io \"x\" not found".into(),
        };
        assert_eq!(
            union(refused.clone(), rbac_no),
            Decision::NoOpinion {
                reason: "node says no\nRBAC: role.rbac.authorization.k8s.io \"x\" not found".into()
            }
        );
        let rbac_yes = || Decision::Allow {
            reason: "RBAC: allowed".into(),
        };
        assert!(union(refused, rbac_yes).is_allowed());
        assert_eq!(
            union(NodeDecision::NoOpinion(String::new()), || {
                Decision::NoOpinion {
                    reason: String::new(),
                }
            }),
            Decision::NoOpinion {
                reason: String::new()
            }
        );
        assert!(union(NodeDecision::Allow, || unreachable!()).is_allowed());
    }

    #[test]
    fn review_field_selectors_read_raw_or_requirements() {
        assert_eq!(
            review_field_selector(Some(&json!({"rawSelector": "spec.nodeName=n1"}))),
            "spec.nodeName=n1"
        );
        assert_eq!(
            review_field_selector(Some(&json!({"requirements": [
                {"key": "spec.nodeName", "operator": "In", "values": ["n1"]},
                {"key": "status.phase", "operator": "NotIn", "values": ["Failed"]},
                {"key": "x", "operator": "Exists"}]}))),
            "spec.nodeName=n1,status.phase!=Failed"
        );
        assert_eq!(review_field_selector(None), "");
    }

    fn attrs(method: Method, path_and_query: &str) -> Attributes {
        let (path, q) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let user = UserInfo {
            username: "u".into(),
            groups: vec!["g".into()],
            ..Default::default()
        };
        attributes(&user, &method, path, &Query::parse(Some(q)))
    }

    fn short(a: &Attributes) -> String {
        format!(
            "{} {}/{}/{}/{} ns={} name={}",
            a.verb, a.api_group, a.resource, a.subresource, a.path, a.namespace, a.name
        )
    }

    #[test]
    fn request_attributes_read_urls_as_kube_apiserver() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                "list /pods// ns=default name=",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods?watch=true",
                "watch /pods// ns=default name=",
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/default/pods",
                "watch /pods// ns=default name=",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/p/log",
                "get /pods/log/ ns=default name=p",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/p/exec",
                "create /pods/exec/ ns=default name=p",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/x/deployments/web/scale",
                "patch apps/deployments/scale/ ns=x name=web",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/x/configmaps",
                "deletecollection /configmaps// ns=x name=",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/x",
                "get /namespaces// ns=x name=x",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/x/finalize",
                "update /namespaces/finalize/ ns=x name=x",
            ),
            (
                Method::GET,
                "/api/v1/nodes?fieldSelector=metadata.name%3Dn1",
                "list /nodes// ns= name=n1",
            ),
            (
                Method::GET,
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                "list rbac.authorization.k8s.io/clusterroles// ns= name=",
            ),
        ];
        for (m, p, want) in cases {
            let a = attrs(m, p);
            assert!(a.resource_request, "{p}");
            let got = short(&Attributes {
                path: String::new(),
                ..a
            });
            assert_eq!(got, want, "{p}");
        }
        // Lists and watches carry their field selector (the Node authorizer's scope).
        let a = attrs(
            Method::GET,
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=1",
        );
        assert_eq!(
            (a.verb.as_str(), a.field_selector.as_str()),
            ("watch", "spec.nodeName=n1")
        );
        let a = attrs(
            Method::DELETE,
            "/api/v1/namespaces/x/pods?fieldSelector=spec.nodeName%3Dn1",
        );
        assert_eq!(a.field_selector, "");
        let a = attrs(Method::GET, "/healthz");
        assert!(!a.resource_request);
        assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", "/healthz"));
        let a = attrs(Method::POST, "/apis");
        assert_eq!(a.verb, "post");
    }
}
