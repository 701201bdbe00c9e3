//! What the RBAC registry checks when Roles, ClusterRoles and their bindings are written:
//! nobody grants a permission they do not hold ([`covers`]), unless they may `escalate`
//! on the role or `bind` the role a binding refers to; and the kinds' validation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{go_quote, go_quote_list, group_resource, is_superuser, rules_of, Attributes};
use super::{Policy, Rule, GROUP};
use crate::selector::LabelSelector;
use crate::strategy::Cause;

/// Why a write of an RBAC object is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// 403: the writer does not hold what the object grants.
    #[error("{resource} {name:?} is forbidden: {reason}")]
    Forbidden {
        /// `roles.rbac.authorization.k8s.io`, `clusterrolebindings.rbac.authorization.k8s.io`…
        resource: String,
        name: String,
        /// kube's `user "u" (groups=["g"]) is attempting to grant RBAC permissions not
        /// currently held:\n{…}` text.
        reason: String,
    },
    /// 404: a binding refers to a role that does not exist and the writer may not `bind`
    /// it.
    #[error("{resource} {name:?} not found")]
    RoleNotFound { resource: String, name: String },
}

/// Splits a rule into one rule per (group, resource, verb[, name]) and per (URL, verb).
fn breakdown(rule: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    for g in &rule.api_groups {
        for r in &rule.resources {
            for v in &rule.verbs {
                let one = Rule {
                    verbs: vec![v.clone()],
                    api_groups: vec![g.clone()],
                    resources: vec![r.clone()],
                    ..Default::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(one);
                } else {
                    for n in &rule.resource_names {
                        out.push(Rule {
                            resource_names: vec![n.clone()],
                            ..one.clone()
                        });
                    }
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for v in &rule.verbs {
            out.push(Rule {
                verbs: vec![v.clone()],
                non_resource_urls: vec![u.clone()],
                ..Default::default()
            });
        }
    }
    out
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == v)
}

fn has_all(list: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(list, w))
}

fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, "*") {
        return true;
    }
    wanted.iter().all(|w| {
        has(owner, w)
            || w.split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

fn urls_cover(owner: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| {
        owner.iter().any(|o| {
            o == "*"
                || o == w
                || o.strip_suffix('*')
                    .is_some_and(|prefix| w.starts_with(prefix))
        })
    })
}

/// Whether one owner rule covers one broken-down rule (kube's `ruleCovers`).
fn rule_covers(owner: &Rule, sub: &Rule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs
        && groups
        && names
        && resources_cover(&owner.resources, &sub.resources)
        && urls_cover(&owner.non_resource_urls, &sub.non_resource_urls)
}

/// Whether `owner_rules` grant everything `requested` does. On failure, the requested
/// permissions not held, one (group, resource, verb[, name]) or (URL, verb) per rule.
pub fn covers(owner_rules: &[Rule], requested: &[Rule]) -> Result<(), Vec<Rule>> {
    let missing: Vec<Rule> = requested
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner_rules.iter().any(|o| rule_covers(o, sub)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Merges rules that differ only in verbs (one group, one resource, at most one name, no
/// URLs), as kube does before printing the missing permissions.
fn compact(rules: &[Rule]) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut simple: BTreeMap<(String, String, Option<String>), Rule> = BTreeMap::new();
    for r in rules {
        let is_simple = r.api_groups.len() == 1
            && r.resources.len() == 1
            && r.resource_names.len() <= 1
            && r.non_resource_urls.is_empty();
        if !is_simple {
            out.push(r.clone());
            continue;
        }
        let key = (
            r.api_groups[0].clone(),
            r.resources[0].clone(),
            r.resource_names.first().cloned(),
        );
        simple
            .entry(key)
            .and_modify(|e| e.verbs.extend(r.verbs.iter().cloned()))
            .or_insert_with(|| r.clone());
    }
    out.extend(simple.into_values());
    out
}

/// kube's escalation text: `user "u" (groups=["g"]) is attempting to grant RBAC
/// permissions not currently held:` then one compacted missing rule per line, sorted.
pub fn escalation_message(user: &str, groups: &[String], missing: &[Rule]) -> String {
    let lines: BTreeSet<String> = compact(missing).iter().map(Rule::compact_string).collect();
    format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        go_quote(user),
        go_quote_list(groups),
        lines.into_iter().collect::<Vec<_>>().join("\n")
    )
}

fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl Policy {
    fn escalation_check(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
        rules: &[Rule],
        resource: &str,
        name: &str,
    ) -> Result<(), GrantError> {
        let (held, errors) = self.rules_of_user(user, groups, namespace);
        match covers(&held, rules) {
            Ok(()) => Ok(()),
            Err(missing) => {
                let mut reason = escalation_message(user, groups, &missing);
                if !errors.is_empty() {
                    // kube's escalation check reads roles from the registry, whose
                    // not-found names the resource (`roles.rbac.authorization.k8s.io`),
                    // and prints its one aggregate error inside `[…]`.
                    let msgs: Vec<String> = errors
                        .iter()
                        .map(|m| {
                            let resource = if m.kind == "Role" {
                                "roles"
                            } else {
                                "clusterroles"
                            };
                            format!(
                                "{} {} not found",
                                group_resource(GROUP, resource),
                                go_quote(&m.name)
                            )
                        })
                        .collect();
                    let aggregate = if msgs.len() == 1 {
                        msgs[0].clone()
                    } else {
                        format!("[{}]", msgs.join(", "))
                    };
                    reason.push_str(&format!("; resolution errors: [{aggregate}]"));
                }
                Err(GrantError::Forbidden {
                    resource: group_resource(GROUP, resource),
                    name: name.to_string(),
                    reason,
                })
            }
        }
    }

    /// The check on create (`old` is `None`) or update of a Role or ClusterRole (`kind`) by
    /// `user`: allowed for `system:masters`, for whoever may `escalate` on it, for an update
    /// touching only ownerReferences and finalizers (the garbage collector's), and for
    /// whoever already holds every rule it grants (in its namespace, for a Role). Setting a
    /// ClusterRole's `aggregationRule` takes holding everything (`*` on `*`, and every URL).
    pub fn check_role_grant(
        &self,
        user: &str,
        groups: &[String],
        kind: &str,
        role: &Value,
        old: Option<&Value>,
    ) -> Result<(), GrantError> {
        let resource = if kind == "Role" {
            "roles"
        } else {
            "clusterroles"
        };
        let namespace = if kind == "Role" {
            meta(role, "namespace")
        } else {
            ""
        };
        let name = meta(role, "name");
        if is_superuser(groups) {
            return Ok(());
        }
        let escalate = Attributes {
            user: user.to_string(),
            groups: groups.to_vec(),
            verb: "escalate".into(),
            namespace: namespace.to_string(),
            api_group: GROUP.into(),
            resource: resource.into(),
            name: name.to_string(),
            resource_request: true,
            ..Default::default()
        };
        if self.authorize(&escalate).is_allowed()
            || old.is_some_and(|o| only_gc_fields_changed(o, role))
        {
            return Ok(());
        }
        self.escalation_check(user, groups, namespace, &rules_of(role), resource, name)?;
        let aggregated = role.get("aggregationRule").is_some_and(|a| !a.is_null());
        if kind == "ClusterRole" && aggregated {
            let everything = [
                Rule::new(&["*"]).groups(&["*"]).resources(&["*"]),
                Rule::new(&["*"]).urls(&["*"]),
            ];
            let (held, _) = self.rules_of_user(user, groups, "");
            if covers(&held, &everything).is_err() {
                return Err(GrantError::Forbidden {
                    resource: group_resource(GROUP, resource),
                    name: name.to_string(),
                    reason: "must have cluster-admin privileges to use the aggregationRule".into(),
                });
            }
        }
        Ok(())
    }

    /// The check on create (`old` is `None`) or update of a RoleBinding or
    /// ClusterRoleBinding (`kind`): allowed for `system:masters`, for an update touching only
    /// ownerReferences and finalizers, for whoever may `bind` the referred role (in the
    /// binding's namespace, or cluster-wide for a ClusterRoleBinding), and for whoever holds
    /// every rule of that role.
    pub fn check_binding_grant(
        &self,
        user: &str,
        groups: &[String],
        kind: &str,
        binding: &Value,
        old: Option<&Value>,
    ) -> Result<(), GrantError> {
        let (resource, namespace) = if kind == "RoleBinding" {
            ("rolebindings", meta(binding, "namespace"))
        } else {
            ("clusterrolebindings", "")
        };
        let name = meta(binding, "name");
        if is_superuser(groups) || old.is_some_and(|o| only_gc_fields_changed(o, binding)) {
            return Ok(());
        }
        let s = |p: &str| binding.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (role_kind, role_name) = (s("/roleRef/kind"), s("/roleRef/name"));
        let role_resource = if role_kind == "Role" {
            "roles"
        } else {
            "clusterroles"
        };
        let bind = Attributes {
            user: user.to_string(),
            groups: groups.to_vec(),
            verb: "bind".into(),
            namespace: namespace.to_string(),
            api_group: GROUP.into(),
            resource: role_resource.into(),
            name: role_name.to_string(),
            resource_request: true,
            ..Default::default()
        };
        if self.authorize(&bind).is_allowed() {
            return Ok(());
        }
        let rules = self.role_ref_rules(role_kind, namespace, role_name);
        let Some(rules) = rules else {
            return Err(GrantError::RoleNotFound {
                resource: group_resource(GROUP, role_resource),
                name: role_name.to_string(),
            });
        };
        self.escalation_check(user, groups, namespace, rules, resource, name)
    }
}

/// Whether an update changes nothing but what the garbage collector writes
/// (`ownerReferences`, `finalizers`) and server-set metadata.
fn only_gc_fields_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "ownerReferences",
                "finalizers",
                "resourceVersion",
                "managedFields",
                "generation",
            ] {
                m.remove(k);
            }
        }
        v
    };
    strip(old) == strip(new)
}

/// kube's `%#v` of a `[]string`: `[]string{"a", "b"}`.
fn go_string_slice(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", parts.join(", "))
}

/// Validation of a Role or ClusterRole (`kind`) beyond object metadata: every rule, and a
/// ClusterRole's `aggregationRule`.
pub fn validate_role(kind: &str, obj: &Value) -> Vec<Cause> {
    let namespaced = kind == "Role";
    let mut causes = Vec::new();
    for (i, rule) in rules_of(obj).iter().enumerate() {
        let at = format!("rules[{i}]");
        if rule.verbs.is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        if !rule.non_resource_urls.is_empty() {
            let urls = go_string_slice(&rule.non_resource_urls);
            if namespaced {
                causes.push(Cause::invalid_raw(
                    format!("{at}.nonResourceURLs"),
                    &urls,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !rule.api_groups.is_empty()
                || !rule.resources.is_empty()
                || !rule.resource_names.is_empty()
            {
                causes.push(Cause::invalid_raw(
                    format!("{at}.nonResourceURLs"),
                    &urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if rule.api_groups.is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if rule.resources.is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    if !namespaced {
        if let Some(agg) = obj.get("aggregationRule").filter(|v| !v.is_null()) {
            let selectors = agg
                .get("clusterRoleSelectors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if selectors.is_empty() {
                causes.push(Cause::required_because(
                    "aggregationRule.clusterRoleSelectors",
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                ));
            }
            for (i, sel) in selectors.iter().enumerate() {
                if let Err(e) = LabelSelector::from_object(sel) {
                    causes.push(Cause::invalid_raw(
                        format!("aggregationRule.clusterRoleSelectors[{i}]"),
                        &sel.to_string(),
                        &e.to_string(),
                    ));
                }
            }
        }
    }
    causes
}

/// Sets what kube's v1 defaulting sets on a binding when missing: `roleRef.apiGroup` and
/// a User or Group subject's `apiGroup` (`rbac.authorization.k8s.io`).
pub fn default_binding(obj: &mut Value) {
    if let Some(role_ref) = obj.get_mut("roleRef").and_then(Value::as_object_mut) {
        let missing = role_ref
            .get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if missing {
            role_ref.insert("apiGroup".into(), Value::String(GROUP.into()));
        }
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or_default();
            let group = match kind {
                "User" | "Group" => GROUP,
                _ => "",
            };
            let Some(m) = s.as_object_mut() else { continue };
            let missing = m
                .get("apiGroup")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if missing && !group.is_empty() {
                m.insert("apiGroup".into(), Value::String(group.into()));
            }
        }
    }
}

/// kube's `ValidateRBACName`: a name usable as one path segment.
pub fn validate_rbac_name(name: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if name == "." || name == ".." {
        msgs.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            msgs.push(format!("may not contain '{bad}'"));
        }
    }
    msgs
}

/// Validation of a RoleBinding or ClusterRoleBinding (`kind`) beyond object metadata,
/// after [`default_binding`]: the roleRef (group, kind, name) and every subject.
pub fn validate_binding(kind: &str, obj: &Value) -> Vec<Cause> {
    let namespaced = kind == "RoleBinding";
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
    let mut causes = Vec::new();
    let group = s(&role_ref, "apiGroup");
    if group != GROUP {
        causes.push(Cause::not_supported("roleRef.apiGroup", &group, &[GROUP]));
    }
    let role_kind = s(&role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&role_kind.as_str()) {
        causes.push(Cause::not_supported("roleRef.kind", &role_kind, kinds));
    }
    let role_name = s(&role_ref, "name");
    if role_name.is_empty() {
        causes.push(Cause::required("roleRef.name"));
    } else {
        for msg in validate_rbac_name(&role_name) {
            causes.push(Cause::invalid("roleRef.name", &role_name, &msg));
        }
    }
    let subjects = obj
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, subject) in subjects.iter().enumerate() {
        let at = format!("subjects[{i}]");
        let name = s(subject, "name");
        let api_group = s(subject, "apiGroup");
        if name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        }
        match s(subject, "kind").as_str() {
            "ServiceAccount" => {
                if !name.is_empty() && !crate::object::is_dns1123_subdomain(&name) {
                    causes.push(Cause::invalid(
                        format!("{at}.name"),
                        &name,
                        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                    ));
                }
                if !api_group.is_empty() {
                    causes.push(Cause::not_supported(
                        format!("{at}.apiGroup"),
                        &api_group,
                        &[""],
                    ));
                }
                if !namespaced && s(subject, "namespace").is_empty() {
                    causes.push(Cause::required(format!("{at}.namespace")));
                }
            }
            "User" | "Group" => {
                if api_group != GROUP {
                    causes.push(Cause::not_supported(
                        format!("{at}.apiGroup"),
                        &api_group,
                        &[GROUP],
                    ));
                }
            }
            other => causes.push(Cause::not_supported(
                format!("{at}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    causes
}

/// The update rule of both binding kinds: `roleRef` is immutable
/// (`roleRef: Invalid value: rbac.RoleRef{…}: cannot change roleRef`).
pub fn validate_binding_update(old: &Value, new: &Value) -> Vec<Cause> {
    let field = |v: &Value, k: &str| {
        v.get("roleRef")
            .and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let triple = |v: &Value| (field(v, "apiGroup"), field(v, "kind"), field(v, "name"));
    let (g, k, n) = triple(new);
    if triple(old) == (g.clone(), k.clone(), n.clone()) {
        return Vec::new();
    }
    let rendered = format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        go_quote(&g),
        go_quote(&k),
        go_quote(&n)
    );
    vec![Cause::invalid_raw(
        "roleRef",
        &rendered,
        "cannot change roleRef",
    )]
}
