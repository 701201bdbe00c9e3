//! Role-based access control (`rbac.authorization.k8s.io/v1`) over stored JSON objects,
//! with kube-apiserver's semantics and messages, and no I/O.
//!
//! Contract:
//! - [`Policy`] is an index of the four RBAC kinds that the API server keeps current from
//!   watch events ([`Policy::upsert`], [`Policy::remove`]); it never reads the store.
//!   Bindings are indexed by subject (user name, group name; a ServiceAccount subject is
//!   indexed under its user name `system:serviceaccount:<ns>:<name>`), so
//!   [`Policy::authorize`] looks only at the bindings naming the requesting user or one of
//!   its groups, however many roles and bindings the cluster holds.
//! - [`Policy::authorize`] answers [`Decision::Allow`] or [`Decision::NoOpinion`] (RBAC never
//!   denies outright; the server answers 403 when no authorizer allows). Members of
//!   `system:masters` are allowed everything, as kube's privileged-group authorizer does
//!   ahead of RBAC. [`forbidden_message`] renders kube-apiserver's 403 text.
//! - The authenticator, not this module, gives ServiceAccounts their groups
//!   (`system:serviceaccounts`, `system:serviceaccounts:<ns>`) and everyone
//!   `system:authenticated`.
//! - [`escalation`] holds what the RBAC registry checks on writes of roles and bindings
//!   (no granting of permissions one does not hold unless `escalate`/`bind`), and the
//!   kinds' validation; [`aggregate()`] is the clusterrole-aggregation controller's
//!   computation; [`bootstrap`] the default policy and its auto-reconciliation.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

mod aggregate;
pub mod bootstrap;
pub mod escalation;
mod policy;
#[cfg(test)]
mod tests;

pub use aggregate::aggregate;
pub use bootstrap::{
    bootstrap_cluster_role_bindings, bootstrap_cluster_roles, bootstrap_role_bindings,
    bootstrap_roles, reconcile,
};
pub use escalation::{
    covers, default_binding, escalation_message, validate_binding, validate_binding_update,
    validate_rbac_name, validate_role, GrantError,
};
pub use policy::{MissingRole, Policy, KINDS};

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Members of this group may do anything (kube's `system:masters`).
pub const SUPERUSER_GROUP: &str = "system:masters";
/// The prefix of a ServiceAccount's user name.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// True when `groups` holds `system:masters`.
pub fn is_superuser(groups: &[String]) -> bool {
    groups.iter().any(|g| g == SUPERUSER_GROUP)
}

/// The user name of ServiceAccount `name` in `namespace`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// What a request asks to do, as kube's `authorizer.Attributes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: String,
    pub groups: Vec<String>,
    /// The authorization verb (`get`, `list`, `watch`, `create`, …, or a special verb such
    /// as `bind`, `escalate`, `impersonate`).
    pub verb: String,
    /// Empty for cluster-scoped resources and for non-resource requests.
    pub namespace: String,
    pub api_group: String,
    /// Plural resource (`pods`).
    pub resource: String,
    /// `status`, `log`, `scale`, … or empty.
    pub subresource: String,
    /// Object name; empty for list, watch (without a name), create and deletecollection.
    pub name: String,
    /// The request path, used for non-resource requests.
    pub path: String,
    pub resource_request: bool,
    /// The list or watch's field selector as sent (`spec.nodeName=n1`); the Node
    /// authorizer scopes a node's reads by it (kube's `AuthorizeWithSelectors`).
    pub field_selector: String,
}

impl Attributes {
    /// A resource request.
    #[allow(clippy::too_many_arguments)]
    pub fn resource(
        user: &str,
        groups: &[&str],
        verb: &str,
        namespace: &str,
        api_group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
    ) -> Self {
        Attributes {
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            verb: verb.to_string(),
            namespace: namespace.to_string(),
            api_group: api_group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            name: name.to_string(),
            path: String::new(),
            resource_request: true,
            field_selector: String::new(),
        }
    }

    /// A non-resource request (`/healthz`, `/apis`).
    pub fn non_resource(user: &str, groups: &[&str], verb: &str, path: &str) -> Self {
        Attributes {
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            verb: verb.to_string(),
            path: path.to_string(),
            resource_request: false,
            ..Default::default()
        }
    }
}

/// RBAC's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `reason` names the binding, role and subject that allowed (kube's
    /// `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`); empty
    /// for `system:masters`.
    Allow { reason: String },
    /// No binding allows. `reason` is empty, or `RBAC: …` listing the roles that bindings
    /// of this user refer to but that do not exist, as kube appends to the 403 message.
    NoOpinion { reason: String },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow { reason } | Decision::NoOpinion { reason } => reason,
        }
    }

    /// The 403 message for a request this decision refused: [`forbidden_message`] plus
    /// `: <reason>` when there is one, as kube-apiserver writes it.
    pub fn forbidden_message(&self, a: &Attributes) -> String {
        let mut m = forbidden_message(a);
        let reason = self.reason();
        if !reason.is_empty() {
            m.push_str(": ");
            m.push_str(reason);
        }
        m
    }
}

/// kube-apiserver's 403 `message` for a refused request (without an authorizer reason):
/// `pods is forbidden: User "u" cannot list resource "pods" in API group "" in the
/// namespace "default"`, `deployments.apps "web" is forbidden: … at the cluster scope`,
/// `forbidden: User "u" cannot get path "/foo"`.
pub fn forbidden_message(a: &Attributes) -> String {
    if !a.resource_request {
        return format!(
            "forbidden: {}",
            sanitize(&format!(
                "User {} cannot {} path {}",
                go_quote(&a.user),
                a.verb,
                go_quote(&a.path)
            ))
        );
    }
    let mut resource = a.resource.clone();
    if !a.subresource.is_empty() {
        resource.push('/');
        resource.push_str(&a.subresource);
    }
    let why = if a.namespace.is_empty() {
        format!(
            "User {} cannot {} resource {} in API group {} at the cluster scope",
            go_quote(&a.user),
            a.verb,
            go_quote(&resource),
            go_quote(&a.api_group)
        )
    } else {
        format!(
            "User {} cannot {} resource {} in API group {} in the namespace {}",
            go_quote(&a.user),
            a.verb,
            go_quote(&resource),
            go_quote(&a.api_group),
            go_quote(&a.namespace)
        )
    };
    forbidden(
        &group_resource(&a.api_group, &a.resource),
        &a.name,
        &sanitize(&why),
    )
}

/// kube-apiserver escapes `&`, `<` and `>` in the 403 text so it never reads as HTML.
fn sanitize(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The whole 403 `Status` object kube-apiserver sends for a refused request, with the
/// authorizer's `reason` (may be empty) appended to the message as kube does:
/// `details` names the object (`name`, `group`, `kind` = the resource), `{}` for
/// non-resource requests.
pub fn forbidden_status(a: &Attributes, reason: &str) -> Value {
    let mut message = forbidden_message(a);
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    let mut details = Map::new();
    if a.resource_request {
        for (k, v) in [
            ("name", &a.name),
            ("group", &a.api_group),
            ("kind", &a.resource),
        ] {
            if !v.is_empty() {
                details.insert(k.into(), Value::String(v.clone()));
            }
        }
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    })
}

/// `resource.group`, or `resource` for the core group (Go's `GroupResource.String()`).
pub(crate) fn group_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// kube's `NewForbidden` message shape.
pub(crate) fn forbidden(group_resource: &str, name: &str, why: &str) -> String {
    if group_resource.is_empty() {
        format!("forbidden: {why}")
    } else if name.is_empty() {
        format!("{group_resource} is forbidden: {why}")
    } else {
        format!("{group_resource} {} is forbidden: {why}", go_quote(name))
    }
}

/// Go's `%q` for the strings RBAC prints.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", parts.join(" "))
}

/// One `rules[]` entry (`rbacv1.PolicyRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    /// A rule with these verbs; add the rest with the builder methods.
    pub fn new(verbs: &[&str]) -> Self {
        Rule {
            verbs: owned(verbs),
            ..Default::default()
        }
    }
    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.api_groups = owned(groups);
        self
    }
    pub fn resources(mut self, resources: &[&str]) -> Self {
        self.resources = owned(resources);
        self
    }
    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = owned(names);
        self
    }
    pub fn urls(mut self, urls: &[&str]) -> Self {
        self.non_resource_urls = owned(urls);
        self
    }

    /// Reads a `PolicyRule` object; missing or malformed lists read as empty (validation
    /// reports them).
    pub fn from_value(v: &Value) -> Self {
        Rule {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// The `PolicyRule` object, with empty lists other than `verbs` left out as kube
    /// serializes them.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        for (key, list) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !list.is_empty() {
                m.insert(key.into(), json!(list));
            }
        }
        Value::Object(m)
    }

    /// kube's compact rendering used in escalation messages:
    /// `{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:{}", go_quote_list(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }

    /// Whether this rule allows the request (kube's `RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has_or_star(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self
                .non_resource_urls
                .iter()
                .any(|u| url_matches(u, &a.path));
        }
        has_or_star(&self.api_groups, &a.api_group)
            && self.resource_matches(&a.resource, &a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == &a.name))
    }

    /// `*`, the exact `resource[/subresource]`, or `*/subresource`. As in Kubernetes,
    /// `pods/*` is no wildcard: it matches only a subresource literally named `*`.
    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if subresource.is_empty() {
                return r == resource;
            }
            if let Some((res, sub)) = r.split_once('/') {
                sub == subresource && (res == resource || res == "*")
            } else {
                false
            }
        })
    }
}

fn has_or_star(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

/// A non-resource URL pattern: `*`, an exact path, or a prefix ending in `*`.
fn url_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" || pattern == path {
        return true;
    }
    // Like kube, every trailing `*` goes: `/apis/**` is the prefix `/apis/`.
    pattern.ends_with('*') && path.starts_with(pattern.trim_end_matches('*'))
}

/// The `rules` of a Role or ClusterRole object.
pub fn rules_of(obj: &Value) -> Vec<Rule> {
    obj.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_value).collect())
        .unwrap_or_default()
}
