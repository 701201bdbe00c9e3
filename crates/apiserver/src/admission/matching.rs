//! What decides whether a webhook or a policy applies to a request, shared by both as
//! kube shares its predicates: rules (operations, groups, versions, resources with `*`,
//! `res/sub`, `*/*`, scope, resource names), `namespaceSelector` (the labels of the
//! object's Namespace; a Namespace's own; never excludes other cluster-scoped objects),
//! `objectSelector` (labels of the new or the old object), a policy's `MatchResources`
//! (exclude rules first, no rules matching everything, `matchPolicy: Equivalent` across
//! served versions of a resource), and the `request` CEL expressions see.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use skiff_api::cel::{Authorizer, RequestResource};
use skiff_api::kinds::{self, Kind};
use skiff_api::rbac::{Attributes, Decision};
use skiff_api::selector::LabelSelector;

use super::Request;
use crate::audit::UserInfo;

pub(super) fn labels(obj: Option<&Value>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(super) fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether one rule (`operations`, `apiGroups`, `apiVersions`, `resources`, `scope`,
/// and for a policy's named rules `resourceNames`) covers the request as `kind`.
pub(super) fn rule_matches(rule: &Value, req: &Request<'_>, kind: &Kind) -> bool {
    rule_matches_version(rule, req, kind, Some(kind.version))
}

/// [`rule_matches`], the version left out (None: any version).
fn rule_matches_version(
    rule: &Value,
    req: &Request<'_>,
    kind: &Kind,
    version: Option<&str>,
) -> bool {
    let has = |field: &str, want: &str| {
        strings(rule.get(field))
            .iter()
            .any(|s| *s == "*" || *s == want)
    };
    let resource_ok = strings(rule.get("resources")).into_iter().any(|r: &str| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == kind.plural) && (sub == req.subresource || sub == "*")
    });
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !kind.namespaced,
        "Namespaced" => kind.namespaced,
        _ => true,
    };
    // An empty list names every object (a create whose name is generated has none yet).
    let names = strings(rule.get("resourceNames"));
    let name_ok = names.is_empty() || names.contains(&req.name);
    has("operations", req.operation)
        && has("apiGroups", kind.group)
        && version.is_none_or(|v| has("apiVersions", v))
        && resource_ok
        && scope_ok
        && name_ok
}

/// A selector field; absent or null selects everything.
pub(super) fn selector_matches(
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

/// `namespaceSelector` and `objectSelector` of a webhook or of `MatchResources`.
/// `ns_labels` is None for cluster-scoped objects other than Namespaces (never excluded).
pub(super) fn selectors_match(
    holder: &Value,
    ns_labels: Option<&BTreeMap<String, String>>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Result<bool, String> {
    if let Some(ns) = ns_labels {
        if !selector_matches(holder.get("namespaceSelector"), ns)? {
            return Ok(false);
        }
    }
    let sel = holder.get("objectSelector");
    let new_ok = obj.is_some() && selector_matches(sel, &labels(obj))?;
    let old_ok = old.is_some() && selector_matches(sel, &labels(old))?;
    Ok(new_ok || old_ok)
}

/// Whether a selector field selects anything but everything (then the namespace's labels
/// are needed to decide).
pub(super) fn selects(sel: Option<&Value>) -> bool {
    match sel {
        None | Some(Value::Null) => false,
        Some(s) => !LabelSelector::from_object(s).is_ok_and(|s| s.is_everything()),
    }
}

/// What a policy's `MatchResources` matched the request as: the request's own kind, or
/// (`matchPolicy: Equivalent`) another served version of the same resource.
pub(super) fn matches_resources<'a>(
    m: &Value,
    req: &Request<'a>,
    ns_labels: Option<&BTreeMap<String, String>>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Result<Option<&'a Kind>, String> {
    // Selectors first, as kube: a selector error only counts for requests the rules match.
    let selected = selectors_match(m, ns_labels, obj, old);
    if matches!(selected, Ok(false)) {
        return Ok(None);
    }
    let equivalent = m.get("matchPolicy").and_then(Value::as_str) != Some("Exact");
    let excluded = list(m.get("excludeResourceRules"));
    if rules_match(excluded, req, equivalent).is_some() {
        return Ok(None);
    }
    let rules = list(m.get("resourceRules"));
    let matched = if rules.is_empty() {
        Some(req.kind)
    } else {
        rules_match(rules, req, equivalent)
    };
    match (matched, selected) {
        (None, _) => Ok(None),
        (Some(_), Err(e)) => Err(e),
        (Some(k), Ok(_)) => Ok(Some(k)),
    }
}

/// The kind `rules` match the request as: its own, else an equivalent version.
fn rules_match<'a>(rules: &[Value], req: &Request<'a>, equivalent: bool) -> Option<&'a Kind> {
    if rules.iter().any(|r| rule_matches(r, req, req.kind)) {
        return Some(req.kind);
    }
    // Only a rule that matches but for the version can match another version (most do
    // not: then the served versions are not looked up).
    if !equivalent
        || !rules
            .iter()
            .any(|r| rule_matches_version(r, req, req.kind, None))
    {
        return None;
    }
    equivalents(req.kind).find(|k| rules.iter().any(|r| rule_matches(r, req, k)))
}

/// The other served versions of `kind`'s resource (autoscaling/v1 and v2 …).
fn equivalents(kind: &Kind) -> impl Iterator<Item = &'static Kind> + '_ {
    kinds::group_versions()
        .into_iter()
        .filter(move |(g, v)| *g == kind.group && *v != kind.version)
        .filter_map(move |(g, v)| kinds::by_resource(g, v, kind.plural))
}

/// How CEL's `authorizer` decides: the server's RBAC policy.
pub(super) type Decide<'a> = &'a (dyn Fn(&Attributes) -> Decision + Sync);

/// The `authorizer` of CEL expressions: `decide` asked as the requesting user, with the
/// request's resource (as `kind`) for `authorizer.requestResource`.
pub(super) fn authorizer<'a>(
    user: &'a UserInfo,
    req: &'a Request<'a>,
    kind: &'a Kind,
    decide: Decide<'a>,
) -> Authorizer<'a> {
    Authorizer {
        username: &user.username,
        groups: &user.groups,
        request: RequestResource {
            group: kind.group,
            resource: kind.plural,
            subresource: req.subresource,
            namespace: req.namespace.unwrap_or_default(),
            name: req.name,
        },
        decide,
    }
}

/// The `request` of CEL expressions (and of an AdmissionReview, without its uid and
/// objects): kube's AdmissionRequest for the request as `kind` (what a policy matched),
/// with the request's own kind as `requestKind`.
pub(super) fn request_attributes(req: &Request<'_>, kind: &Kind, user: &UserInfo) -> Value {
    let gvk = |k: &Kind| json!({"group": k.group, "version": k.version, "kind": k.kind});
    let gvr = |k: &Kind| json!({"group": k.group, "version": k.version, "resource": k.plural});
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
        "kind": gvk(kind),
        "resource": gvr(kind),
        "requestKind": gvk(req.kind),
        "requestResource": gvr(req.kind),
        "operation": req.operation,
        "userInfo": user_info,
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
    r
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn req<'a>(kind: &'a Kind, op: &'static str, sub: &'a str) -> Request<'a> {
        Request {
            kind,
            subresource: sub,
            operation: op,
            namespace: Some("default"),
            name: "x",
            dry_run: false,
        }
    }

    pub(crate) fn pods() -> &'static Kind {
        kinds::by_resource("", "v1", "pods").unwrap()
    }

    #[test]
    fn rules_match_operations_groups_resources_and_scope() {
        let r = req(pods(), "CREATE", "");
        let rule = |v: Value| rule_matches(&v, &r, r.kind);
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
        assert!(rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods"], "resourceNames": ["x"]})
        ));
        assert!(!rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods"], "resourceNames": ["y"]})
        ));
        let status = req(pods(), "UPDATE", "status");
        let rule = |v: Value| rule_matches(&v, &status, status.kind);
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
    fn match_resources_exclude_narrow_and_find_equivalent_versions() {
        let hpa2 = kinds::by_resource("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let r = req(hpa2, "CREATE", "");
        let obj = json!({"metadata": {"labels": {"app": "a"}}});
        let v1_rule = json!([{"operations": ["*"], "apiGroups": ["autoscaling"], "apiVersions": ["v1"], "resources": ["horizontalpodautoscalers"]}]);
        let m = |extra: Value| {
            let mut m = json!({"resourceRules": v1_rule});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            matches_resources(&m, &r, None, Some(&obj), None).map(|k| k.map(|k| k.version))
        };
        assert_eq!(m(json!({})), Ok(Some("v1")));
        assert_eq!(m(json!({"matchPolicy": "Exact"})), Ok(None));
        assert_eq!(m(json!({"excludeResourceRules": v1_rule})), Ok(None));
        assert_eq!(
            m(json!({"objectSelector": {"matchLabels": {"app": "b"}}})),
            Ok(None)
        );
        // A binding's matchResources without rules narrows by selectors only.
        let sel = json!({"objectSelector": {"matchLabels": {"app": "a"}}});
        assert_eq!(
            matches_resources(&sel, &r, None, Some(&obj), None).map(|k| k.map(|k| k.version)),
            Ok(Some("v2"))
        );
        // Selector errors count only for requests the rules match.
        let bad = json!({"resourceRules": v1_rule, "objectSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}});
        assert!(matches_resources(&bad, &r, None, Some(&obj), None).is_err());
        let other = req(pods(), "CREATE", "");
        assert_eq!(
            matches_resources(&bad, &other, None, Some(&obj), None).map(|k| k.is_some()),
            Ok(false)
        );
    }
}
