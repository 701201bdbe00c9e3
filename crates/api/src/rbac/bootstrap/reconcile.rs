//! Start-up reconciliation of the bootstrap policy (kube's auto-reconcile).

use serde_json::{json, Map, Value};

use super::{AUTOUPDATE, RETIRED_NODE_SUBJECT};
use crate::rbac::escalation::covers;
use crate::rbac::{rules_of, Rule};

/// Merges `wanted` labels or annotations under `existing` ones (existing values win).
fn merge_map(existing: &mut Value, wanted: &Value, field: &str) {
    let Some(w) = wanted
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
    else {
        return;
    };
    let Some(meta) = existing.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let target = meta
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in w {
        t.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Start-up reconciliation of one bootstrap object (any of the four kinds): `wanted` when
/// it does not exist; `None` when nothing needs writing or `existing` is annotated
/// `rbac.authorization.kubernetes.io/autoupdate: "false"`; otherwise `existing` plus what
/// it lacks — labels and annotations, rules not covered (one rule per missing permission),
/// aggregation selectors, binding subjects. A binding whose `roleRef` differs comes back
/// with the wanted `roleRef`: since `roleRef` is immutable, the caller must delete and
/// recreate it (kube does the same).
pub fn reconcile(existing: Option<&Value>, wanted: &Value) -> Option<Value> {
    let Some(existing) = existing else {
        return Some(wanted.clone());
    };
    let autoupdate = existing
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE))
        .and_then(Value::as_str);
    if autoupdate == Some("false") {
        return None;
    }
    let mut out = existing.clone();
    merge_map(&mut out, wanted, "labels");
    merge_map(&mut out, wanted, "annotations");
    if wanted.get("roleRef").is_some() {
        if out.get("roleRef") != wanted.get("roleRef") {
            out["roleRef"] = wanted["roleRef"].clone();
        }
        let mut subjects: Vec<Value> = out
            .get("subjects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let same = |a: &Value, b: &Value| {
            ["kind", "name", "namespace"].iter().all(|k| {
                a.get(k).and_then(Value::as_str).unwrap_or("")
                    == b.get(k).and_then(Value::as_str).unwrap_or("")
            })
        };
        for s in wanted
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !subjects.iter().any(|e| same(e, s)) {
                subjects.push(s.clone());
            }
        }
        // skiff bound `system:node` to all nodes before it had a Node authorizer; that
        // subject would give every node what the Node authorizer scopes, so it goes (an
        // administrator who wants it anyway sets autoupdate "false").
        if wanted.get("kind").and_then(Value::as_str) == Some("ClusterRoleBinding")
            && wanted.pointer("/metadata/name").and_then(Value::as_str) == Some("system:node")
        {
            subjects.retain(|s| {
                !(s.get("kind").and_then(Value::as_str) == Some("Group")
                    && s.get("name").and_then(Value::as_str) == Some(RETIRED_NODE_SUBJECT))
            });
        }
        let before = out.get("subjects").and_then(Value::as_array);
        if before.map(Vec::as_slice).unwrap_or_default() != subjects.as_slice() {
            if subjects.is_empty() {
                if let Some(m) = out.as_object_mut() {
                    m.remove("subjects");
                }
            } else {
                out["subjects"] = Value::Array(subjects);
            }
        }
    } else {
        if let Err(missing) = covers(&rules_of(existing), &rules_of(wanted)) {
            let mut rules: Vec<Value> = out
                .get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            rules.extend(missing.iter().map(Rule::to_value));
            out["rules"] = Value::Array(rules);
        }
        if let Some(want_sel) = wanted
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        {
            let mut selectors: Vec<Value> = out
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for s in want_sel {
                if !selectors.contains(s) {
                    selectors.push(s.clone());
                }
            }
            out["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
        }
    }
    (out != *existing).then_some(out)
}
