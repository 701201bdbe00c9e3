//! [`Policy`]: the RBAC objects of a cluster indexed by subject, and authorization over
//! them.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::GROUP;
use super::{go_quote, is_superuser, rules_of, service_account_user, Attributes, Decision, Rule};

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

/// A role that a binding refers to but that does not exist. Displays as kube's authorizer
/// reports it (`role.rbac.authorization.k8s.io "x" not found`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRole {
    /// `Role` or `ClusterRole` (or whatever unsupported kind the roleRef names).
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for MissingRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{GROUP} {} not found",
            self.kind.to_lowercase(),
            go_quote(&self.name)
        )
    }
}

/// Binding names by subject.
#[derive(Debug, Clone, Default)]
pub(super) struct SubjectIndex {
    pub(super) users: HashMap<String, BTreeSet<String>>,
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
    pub(super) fn candidates<'a>(&'a self, user: &str, groups: &[String]) -> BTreeSet<&'a str> {
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
    pub(super) cluster_index: SubjectIndex,
    /// Per namespace: RoleBinding names by subject.
    pub(super) namespace_index: HashMap<String, SubjectIndex>,
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
    fn role_rules(&self, b: &Binding) -> Result<&[Rule], MissingRole> {
        self.role_ref_rules(&b.role_kind, &b.namespace, &b.role_name)
            .ok_or_else(|| MissingRole {
                kind: b.role_kind.clone(),
                name: b.role_name.clone(),
            })
    }

    /// The rules of the role a roleRef names (`namespace` is the binding's, for a Role).
    pub fn role_ref_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<&[Rule]> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            "Role" => self.roles.get(namespace).and_then(|m| m.get(name)),
            _ => None,
        }
        .map(Vec::as_slice)
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
        // kube's authorizer reads roles from listers: their not-found names the kind in the
        // singular (`role.rbac.authorization.k8s.io "x" not found`).
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
                Err(missing) => {
                    let e = missing.to_string();
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
    ) -> (Vec<Rule>, Vec<MissingRole>) {
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
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
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
