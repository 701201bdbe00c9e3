//! The clusterrole-aggregation controller's computation: an aggregated ClusterRole's rules
//! are the union of the rules of the ClusterRoles its selectors match.

use serde_json::Value;

use super::{rules_of, Rule};
use crate::selector::LabelSelector;

/// For `target` with `aggregationRule.clusterRoleSelectors`, the ClusterRole with its rules
/// replaced by the union of the rules of the other `cluster_roles` any selector matches
/// (selector by selector, roles by name, each rule once); `None` when `target` is not
/// aggregated or its rules are already that union. A selector that does not parse matches
/// nothing (validation refuses such roles).
pub fn aggregate(cluster_roles: &[Value], target: &Value) -> Option<Value> {
    let selectors = target
        .pointer("/aggregationRule/clusterRoleSelectors")?
        .as_array()?;
    let target_name = crate::object::name(target);
    let mut sorted: Vec<&Value> = cluster_roles.iter().collect();
    sorted.sort_by(|a, b| crate::object::name(a).cmp(crate::object::name(b)));
    let mut rules: Vec<Rule> = Vec::new();
    for sel in selectors {
        let Ok(sel) = LabelSelector::from_object(sel) else {
            continue;
        };
        for role in &sorted {
            if crate::object::name(role) == target_name || !sel.matches_object(role) {
                continue;
            }
            for r in rules_of(role) {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
    }
    if rules == rules_of(target) {
        return None;
    }
    let mut out = target.clone();
    out["rules"] = Value::Array(rules.iter().map(Rule::to_value).collect());
    Some(out)
}
