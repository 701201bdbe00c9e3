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

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use serde_json::{json, Map, Value};

mod aggregate;
pub mod bootstrap;
pub mod escalation;
#[cfg(test)]
mod tests;

pub use aggregate::aggregate;
pub use bootstrap::{
    bootstrap_cluster_role_bindings, bootstrap_cluster_roles, bootstrap_role_bindings,
    bootstrap_roles, reconcile,
};
pub use escalation::{
    covers, escalation_message, validate_binding, validate_binding_update, validate_role,
    GrantError,
};

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
            "forbidden: User {} cannot {} path {}",
            go_quote(&a.user),
            a.verb,
            go_quote(&a.path)
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
    forbidden(&group_resource(&a.api_group, &a.resource), &a.name, &why)
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
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => false,
    }
}

/// The `rules` of a Role or ClusterRole object.
pub fn rules_of(obj: &Value) -> Vec<Rule> {
    obj.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_value).collect())
        .unwrap_or_default()
}

/// One binding subject.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

impl Subject {
    /// kube's `describeSubject`.
    fn describe(&self, binding_namespace: &str) -> String {
        if self.kind == "ServiceAccount" {
            let ns = if self.namespace.is_empty() {
                binding_namespace
            } else {
                &self.namespace
            };
            format!("{} {}", self.kind, go_quote(&format!("{}/{ns}", self.name)))
        } else {
            format!("{} {}", self.kind, go_quote(&self.name))
        }
    }

    /// Whether the subject names this user or one of its groups.
    fn applies_to(&self, user: &str, groups: &[String], binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == user,
            "Group" => groups.iter().any(|g| g == &self.name),
            "ServiceAccount" => match self.index_key(binding_namespace) {
                Some(IndexKey::User(u)) => u == user,
                _ => false,
            },
            _ => false,
        }
    }

    fn index_key(&self, binding_namespace: &str) -> Option<IndexKey> {
        match self.kind.as_str() {
            "User" => Some(IndexKey::User(self.name.clone())),
            "Group" => Some(IndexKey::Group(self.name.clone())),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                if ns.is_empty() || self.name.is_empty() {
                    None
                } else {
                    Some(IndexKey::User(service_account_user(ns, &self.name)))
                }
            }
            _ => None,
        }
    }
}

enum IndexKey {
    User(String),
    Group(String),
}

#[derive(Debug, Clone)]
struct Binding {
    namespace: String,
    name: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_value(obj: &Value) -> Self {
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let subjects = obj
            .get("subjects")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| {
                        let f = |k: &str| {
                            v.get(k)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string()
                        };
                        Subject {
                            kind: f("kind"),
                            name: f("name"),
                            namespace: f("namespace"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Binding {
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
            role_kind: s("/roleRef/kind"),
            role_name: s("/roleRef/name"),
            subjects,
        }
    }
}

/// Binding names by subject.
#[derive(Debug, Clone, Default)]
struct SubjectIndex {
    users: HashMap<String, BTreeSet<String>>,
    groups: HashMap<String, BTreeSet<String>>,
}

impl SubjectIndex {
    fn map<'a, 'k>(
        &'a mut self,
        key: &'k IndexKey,
    ) -> (&'a mut HashMap<String, BTreeSet<String>>, &'k str) {
        match key {
            IndexKey::User(u) => (&mut self.users, u),
            IndexKey::Group(g) => (&mut self.groups, g),
        }
    }

    fn add(&mut self, key: &IndexKey, binding: &str) {
        let (map, k) = self.map(key);
        map.entry(k.to_string())
            .or_default()
            .insert(binding.to_string());
    }

    fn remove(&mut self, key: &IndexKey, binding: &str) {
        let (map, k) = self.map(key);
        if let Some(set) = map.get_mut(k) {
            set.remove(binding);
            if set.is_empty() {
                map.remove(k);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// The names of bindings naming `user` or one of `groups`, sorted and without repeats.
    fn candidates<'a>(&'a self, user: &str, groups: &[String]) -> BTreeSet<&'a str> {
        let mut out = BTreeSet::new();
        if let Some(set) = self.users.get(user) {
            out.extend(set.iter().map(String::as_str));
        }
        for g in groups {
            if let Some(set) = self.groups.get(g.as_str()) {
                out.extend(set.iter().map(String::as_str));
            }
        }
        out
    }
}

/// The RBAC objects of a cluster, indexed for authorization. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Role rules by namespace, then name.
    roles: HashMap<String, HashMap<String, Vec<Rule>>>,
    cluster_roles: HashMap<String, Vec<Rule>>,
    cluster_role_bindings: HashMap<String, Binding>,
    /// RoleBindings by namespace, then name.
    role_bindings: HashMap<String, HashMap<String, Binding>>,
    cluster_index: SubjectIndex,
    /// Per namespace: RoleBinding names by subject.
    namespace_index: HashMap<String, SubjectIndex>,
}

/// The four RBAC kinds [`Policy::upsert`] and [`Policy::remove`] take.
pub const KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

impl Policy {
    /// A policy holding these objects (each list of one kind).
    pub fn new(
        roles: Vec<Value>,
        cluster_roles: Vec<Value>,
        role_bindings: Vec<Value>,
        cluster_role_bindings: Vec<Value>,
    ) -> Self {
        let mut p = Policy::default();
        for (kind, objs) in [
            ("Role", roles),
            ("ClusterRole", cluster_roles),
            ("RoleBinding", role_bindings),
            ("ClusterRoleBinding", cluster_role_bindings),
        ] {
            for o in &objs {
                p.upsert(kind, o);
            }
        }
        p
    }

    /// Adds or replaces one object (from an ADDED or MODIFIED watch event). Unknown kinds
    /// are ignored.
    pub fn upsert(&mut self, kind: &str, obj: &Value) {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "Role" => {
                self.roles
                    .entry(ns.to_string())
                    .or_default()
                    .insert(name.to_string(), rules_of(obj));
            }
            "ClusterRole" => {
                self.cluster_roles.insert(name.to_string(), rules_of(obj));
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let ns = if kind == "RoleBinding" {
                    Some(ns)
                } else {
                    None
                };
                self.remove_binding(ns, name);
                let mut b = Binding::from_value(obj);
                if ns.is_none() {
                    b.namespace.clear();
                }
                self.add_binding(b);
            }
            _ => {}
        }
    }

    /// Forgets one object (a DELETED watch event). `ns` is the namespace of a Role or
    /// RoleBinding, ignored for the cluster-scoped kinds.
    pub fn remove(&mut self, kind: &str, ns: Option<&str>, name: &str) {
        let ns = ns.unwrap_or_default();
        match kind {
            "Role" => {
                if let Some(m) = self.roles.get_mut(ns) {
                    m.remove(name);
                    if m.is_empty() {
                        self.roles.remove(ns);
                    }
                }
            }
            "ClusterRole" => {
                self.cluster_roles.remove(name);
            }
            "RoleBinding" => self.remove_binding(Some(ns), name),
            "ClusterRoleBinding" => self.remove_binding(None, name),
            _ => {}
        }
    }

    fn add_binding(&mut self, b: Binding) {
        let index = if b.namespace.is_empty() {
            &mut self.cluster_index
        } else {
            self.namespace_index.entry(b.namespace.clone()).or_default()
        };
        for s in &b.subjects {
            if let Some(key) = s.index_key(&b.namespace) {
                index.add(&key, &b.name);
            }
        }
        if b.namespace.is_empty() {
            self.cluster_role_bindings.insert(b.name.clone(), b);
        } else {
            self.role_bindings
                .entry(b.namespace.clone())
                .or_default()
                .insert(b.name.clone(), b);
        }
    }

    fn remove_binding(&mut self, ns: Option<&str>, name: &str) {
        let old = match ns {
            None => self.cluster_role_bindings.remove(name),
            Some(ns) => {
                let Some(m) = self.role_bindings.get_mut(ns) else {
                    return;
                };
                let old = m.remove(name);
                if m.is_empty() {
                    self.role_bindings.remove(ns);
                }
                old
            }
        };
        let Some(old) = old else { return };
        let index = match ns {
            None => &mut self.cluster_index,
            Some(ns) => match self.namespace_index.get_mut(ns) {
                Some(i) => i,
                None => return,
            },
        };
        for s in &old.subjects {
            if let Some(key) = s.index_key(&old.namespace) {
                index.remove(&key, name);
            }
        }
        if let Some(ns) = ns {
            if self
                .namespace_index
                .get(ns)
                .is_some_and(SubjectIndex::is_empty)
            {
                self.namespace_index.remove(ns);
            }
        }
    }

    /// The rules a binding's roleRef resolves to, or kube's not-found text.
    fn role_rules(&self, b: &Binding) -> Result<&[Rule], String> {
        let found = match b.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&b.role_name),
            "Role" => self
                .roles
                .get(&b.namespace)
                .and_then(|m| m.get(&b.role_name)),
            _ => None,
        };
        found.map(Vec::as_slice).ok_or_else(|| {
            format!(
                "{}.{GROUP} {} not found",
                b.role_kind.to_lowercase(),
                go_quote(&b.role_name)
            )
        })
    }

    /// The bindings that apply to the user: all matching ClusterRoleBindings, then the
    /// matching RoleBindings of `namespace`, each with its matching subject.
    fn bindings_for<'a>(
        &'a self,
        user: &'a str,
        groups: &'a [String],
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a Binding, &'a Subject)> + 'a {
        let cluster = self
            .cluster_index
            .candidates(user, groups)
            .into_iter()
            .filter_map(|n| self.cluster_role_bindings.get(n));
        let local = (!namespace.is_empty())
            .then(|| {
                let idx = self.namespace_index.get(namespace)?;
                let bindings = self.role_bindings.get(namespace)?;
                Some(
                    idx.candidates(user, groups)
                        .into_iter()
                        .filter_map(move |n| bindings.get(n)),
                )
            })
            .flatten()
            .into_iter()
            .flatten();
        cluster.chain(local).filter_map(move |b| {
            b.subjects
                .iter()
                .find(|s| s.applies_to(user, groups, &b.namespace))
                .map(|s| (b, s))
        })
    }

    /// Whether RBAC allows the request. See [`Decision`].
    pub fn authorize(&self, a: &Attributes) -> Decision {
        if is_superuser(&a.groups) {
            return Decision::Allow {
                reason: String::new(),
            };
        }
        let mut errors: Vec<String> = Vec::new();
        for (b, subject) in self.bindings_for(&a.user, &a.groups, &a.namespace) {
            match self.role_rules(b) {
                Ok(rules) => {
                    if rules.iter().any(|r| r.allows(a)) {
                        let what = if b.namespace.is_empty() {
                            format!("ClusterRoleBinding {}", go_quote(&b.name))
                        } else {
                            format!(
                                "RoleBinding {}",
                                go_quote(&format!("{}/{}", b.name, b.namespace))
                            )
                        };
                        return Decision::Allow {
                            reason: format!(
                                "RBAC: allowed by {what} of {} {} to {}",
                                b.role_kind,
                                go_quote(&b.role_name),
                                subject.describe(&b.namespace)
                            ),
                        };
                    }
                }
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            }
        }
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        Decision::NoOpinion { reason }
    }

    /// Every rule granted to the user in `namespace` (cluster-wide grants included; an
    /// empty namespace gives the cluster-wide ones only), and the roles that bindings refer
    /// to but are missing. `system:masters` gets what its bindings grant, like kube.
    pub fn rules_of_user(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
    ) -> (Vec<Rule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (b, _) in self.bindings_for(user, groups, namespace) {
            match self.role_rules(b) {
                Ok(r) => rules.extend(r.iter().cloned()),
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e)
                    }
                }
            }
        }
        (rules, errors)
    }

    /// `(resourceRules, nonResourceRules)` of a SelfSubjectRulesReview status
    /// (`authorization.k8s.io/v1`), as JSON objects.
    pub fn rules_for(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
    ) -> (Vec<Value>, Vec<Value>) {
        let (rules, _) = self.rules_of_user(user, groups, namespace);
        split_review_rules(&rules)
    }

    /// The whole `status` of a SelfSubjectRulesReview: `resourceRules`, `nonResourceRules`,
    /// `incomplete` and, when bindings refer to missing roles, `evaluationError`.
    pub fn rules_review_status(&self, user: &str, groups: &[String], namespace: &str) -> Value {
        let (rules, errors) = self.rules_of_user(user, groups, namespace);
        let (resource_rules, non_resource_rules) = split_review_rules(&rules);
        let mut status = json!({
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": !errors.is_empty(),
        });
        if !errors.is_empty() {
            let e = if errors.len() == 1 {
                errors[0].clone()
            } else {
                format!("[{}]", errors.join(", "))
            };
            status["evaluationError"] = Value::String(e);
        }
        status
    }
}

fn split_review_rules(rules: &[Rule]) -> (Vec<Value>, Vec<Value>) {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if !r.resources.is_empty() {
            let mut m = Map::new();
            m.insert("verbs".into(), json!(r.verbs));
            if !r.api_groups.is_empty() {
                m.insert("apiGroups".into(), json!(r.api_groups));
            }
            m.insert("resources".into(), json!(r.resources));
            if !r.resource_names.is_empty() {
                m.insert("resourceNames".into(), json!(r.resource_names));
            }
            resource_rules.push(Value::Object(m));
        }
        if !r.non_resource_urls.is_empty() {
            non_resource_rules.push(json!({
                "verbs": r.verbs,
                "nonResourceURLs": r.non_resource_urls,
            }));
        }
    }
    (resource_rules, non_resource_rules)
}
