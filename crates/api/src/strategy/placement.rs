//! Validation of what a pod spec tells the scheduler — resources, node selector,
//! affinity, tolerations, topology spread, scheduling gates, priority — with
//! kube-apiserver's field paths and messages (`pkg/apis/core/validation`). Shared by pods
//! and every pod template, so a Deployment with a broken affinity term is refused as its
//! pods would be. Malformed quantities never get here: the API server refuses them when
//! it decodes the body, as Kubernetes does.

use serde_json::Value;

use super::syntax::{
    items, label_name, label_selector, label_value_errors, labels, requirement, strings,
};
use super::Cause;
use crate::quantity::Quantity;

/// Every placement rule of the pod spec at `at` (`spec`, `spec.template.spec`).
pub(super) fn validate(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    for key in ["containers", "initContainers"] {
        for (i, c) in spec
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            resources(
                c.get("resources"),
                &format!("{at}.{key}[{i}].resources"),
                causes,
            );
        }
    }
    labels(
        spec.get("nodeSelector"),
        &format!("{at}.nodeSelector"),
        causes,
    );
    if let Some(a) = spec.get("affinity").filter(|a| !a.is_null()) {
        affinity(a, &format!("{at}.affinity"), causes);
    }
    tolerations(
        spec.get("tolerations"),
        &format!("{at}.tolerations"),
        causes,
    );
    if let Some(name) = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        for m in super::syntax::subdomain_errors(name) {
            causes.push(Cause::invalid(format!("{at}.priorityClassName"), name, &m));
        }
    }
    causes.extend(super::scheduling::preemption_policy(
        spec.get("preemptionPolicy"),
        &format!("{at}.preemptionPolicy"),
    ));
    spread(
        spec.get("topologySpreadConstraints"),
        &format!("{at}.topologySpreadConstraints"),
        causes,
    );
    gates(
        spec.get("schedulingGates"),
        &format!("{at}.schedulingGates"),
        causes,
    );
}

/// Resources whose requests may differ from their limits: the native ones but huge pages.
fn overcommit_allowed(name: &str) -> bool {
    (!name.contains('/') || name.contains("kubernetes.io/")) && !name.starts_with("hugepages-")
}

/// Extended resources (`example.com/gpu`): counted in whole units.
fn extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// How kube prints a quantity in a message (`Quantity.String()`, its canonical form):
/// `2000m` is `2`, `1000` is `1k`, `0.5` is `500m`, `1024Mi` is `1Gi`.
fn quantity_text(v: &Value) -> String {
    let raw = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    canonical(raw.trim()).unwrap_or(raw)
}

fn canonical(s: &str) -> Option<String> {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", s.strip_prefix('+').unwrap_or(s)),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let mut digits: u128 = format!("{int}{frac}").parse().ok()?;
    let mut exp = -(frac.len() as i32);
    let binary = match suffix {
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let k = 10
                * (1 + ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                    .iter()
                    .position(|x| *x == suffix)? as u32);
            digits = digits.checked_mul(1u128.checked_shl(k)?)?;
            true
        }
        _ => false,
    };
    let exponent_form = suffix.starts_with(['e', 'E']);
    exp += match suffix {
        "n" => -9,
        "u" => -6,
        "m" => -3,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => 0,
        "k" => 3,
        "M" => 6,
        "G" => 9,
        "T" => 12,
        "P" => 15,
        "E" => 18,
        e if exponent_form => e[1..].parse().ok()?,
        _ => return None,
    };
    if digits == 0 {
        return Some("0".into());
    }
    while digits.is_multiple_of(10) {
        digits /= 10;
        exp += 1;
    }
    if binary && exp >= 0 {
        let value = digits.checked_mul(10u128.checked_pow(exp as u32)?)?;
        let (mut n, mut unit) = (value, 0);
        while unit < 6 && n.is_multiple_of(1024) {
            n /= 1024;
            unit += 1;
        }
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][unit];
        return Some(format!("{sign}{n}{suffix}"));
    }
    // Nano is the finest unit: smaller values round up to it.
    if exp < -9 {
        let scale = 10u128.checked_pow((-9 - exp) as u32)?;
        digits = digits.div_ceil(scale);
        exp = -9;
    }
    let e3 = exp.div_euclid(3) * 3;
    let mantissa = digits.checked_mul(10u128.checked_pow((exp - e3) as u32)?)?;
    let unit = if exponent_form {
        if e3 == 0 {
            String::new()
        } else {
            format!("e{e3}")
        }
    } else {
        match e3 {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        }
        .to_string()
    };
    Some(format!("{sign}{mantissa}{unit}"))
}

fn quantity(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// `ValidateContainerResourceRequirements`: names, non-negative (and for extended
/// resources whole) quantities, and requests within limits.
fn resources(res: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    let Some(res) = res else { return };
    let limits = res.get("limits").and_then(Value::as_object);
    let requests = res.get("requests").and_then(Value::as_object);
    for (part, map) in [("limits", limits), ("requests", requests)] {
        for (name, v) in map.into_iter().flatten() {
            let field = format!("{at}.{part}[{name}]");
            resource_name(name, &field, causes);
            let text = quantity_text(v);
            let Some(q) = quantity(v) else { continue };
            if q.is_negative() {
                causes.push(Cause::invalid(
                    &field,
                    &text,
                    "must be greater than or equal to 0",
                ));
            }
            if extended(name) && q.milli_value() % 1000 != 0 {
                causes.push(Cause::invalid(&field, &text, "must be an integer"));
            }
            if part == "limits" {
                continue;
            }
            let limit = limits.and_then(|l| l.get(name));
            match limit.and_then(|l| quantity(l).map(|lq| (l, lq))) {
                Some((l, lq)) => {
                    let (r, lim) = (q.milli_value(), lq.milli_value());
                    if r != lim && !overcommit_allowed(name) {
                        causes.push(Cause::invalid(
                            format!("{at}.requests"),
                            &text,
                            &format!("must be equal to {name} limit of {}", quantity_text(l)),
                        ));
                    } else if r > lim {
                        causes.push(Cause::invalid(
                            format!("{at}.requests"),
                            &text,
                            &format!(
                                "must be less than or equal to {name} limit of {}",
                                quantity_text(l)
                            ),
                        ));
                    }
                }
                None if !overcommit_allowed(name) => causes.push(Cause::required_because(
                    format!("{at}.limits"),
                    "Limit must be set for non overcommitable resources",
                )),
                None => {}
            }
        }
    }
}

/// `validateContainerResourceName`.
fn resource_name(name: &str, field: &str, causes: &mut Vec<Cause>) {
    let errs = super::syntax::qualified_name_errors(name);
    let bad = !errs.is_empty();
    for m in errs {
        causes.push(Cause::invalid(field, name, &m));
    }
    if bad {
        return;
    }
    if !name.contains('/') {
        let standard = ["cpu", "memory", "ephemeral-storage"].contains(&name)
            || name.starts_with("hugepages-");
        if !standard {
            causes.push(Cause::invalid(
                field,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !name.contains("kubernetes.io/") && name.starts_with("requests.") {
        causes.push(Cause::invalid(
            field,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
}

fn affinity(a: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(na) = a.get("nodeAffinity").filter(|v| !v.is_null()) {
        let at = format!("{at}.nodeAffinity");
        if let Some(req) = na
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .filter(|v| !v.is_null())
        {
            let terms_at =
                format!("{at}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
            let terms = req.get("nodeSelectorTerms").and_then(Value::as_array);
            match terms {
                Some(t) if !t.is_empty() => {
                    for (i, term) in t.iter().enumerate() {
                        node_selector_term(term, &format!("{terms_at}[{i}]"), causes);
                    }
                }
                _ => causes.push(Cause::required_because(
                    terms_at,
                    "must have at least one node selector term",
                )),
            }
        }
        preferred(na, &at, "preference", node_selector_term, causes);
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = a.get(kind).filter(|v| !v.is_null()) else {
            continue;
        };
        let at = format!("{at}.{kind}");
        let required = pa.get("requiredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in items(required).enumerate() {
            pod_affinity_term(
                t,
                &format!("{at}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                causes,
            );
        }
        preferred(pa, &at, "podAffinityTerm", pod_affinity_term, causes);
    }
}

/// Each `preferredDuringSchedulingIgnoredDuringExecution` entry of `parent`: its weight
/// and, checked by `term`, what it holds under `inner`.
fn preferred(
    parent: &Value,
    at: &str,
    inner: &str,
    term: fn(&Value, &str, &mut Vec<Cause>),
    causes: &mut Vec<Cause>,
) {
    let list = parent.get("preferredDuringSchedulingIgnoredDuringExecution");
    for (i, p) in items(list).enumerate() {
        let at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        weight(p, &at, causes);
        term(
            p.get(inner).unwrap_or(&Value::Null),
            &format!("{at}.{inner}"),
            causes,
        );
    }
}

fn weight(term: &Value, at: &str, causes: &mut Vec<Cause>) {
    let w = term.get("weight").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=100).contains(&w) {
        causes.push(Cause::invalid_raw(
            format!("{at}.weight"),
            &w.to_string(),
            "must be in the range 1-100",
        ));
    }
}

/// `ValidateNodeSelectorTerm`: label expressions and field expressions.
fn node_selector_term(term: &Value, at: &str, causes: &mut Vec<Cause>) {
    for (j, e) in items(term.get("matchExpressions")).enumerate() {
        requirement(e, &format!("{at}.matchExpressions[{j}]"), true, causes);
    }
    for (j, e) in items(term.get("matchFields")).enumerate() {
        let at = format!("{at}.matchFields[{j}]");
        let op = e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values = strings(e.get("values"));
        match op {
            "In" | "NotIn" if values.len() != 1 => causes.push(Cause::required_because(
                format!("{at}.values"),
                "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
            )),
            "In" | "NotIn" => {}
            _ => causes.push(Cause::invalid(
                format!("{at}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        if key != "metadata.name" {
            causes.push(Cause::invalid(
                format!("{at}.key"),
                key,
                "not a valid field selector key",
            ));
        } else {
            for (k, v) in values.iter().enumerate() {
                for m in super::syntax::subdomain_errors(v) {
                    causes.push(Cause::invalid(format!("{at}.values[{k}]"), v, &m));
                }
            }
        }
    }
}

/// `validatePodAffinityTerm`: selectors, namespaces, and a topology key that is a label
/// name.
fn pod_affinity_term(term: &Value, at: &str, causes: &mut Vec<Cause>) {
    label_selector(
        term.get("labelSelector"),
        &format!("{at}.labelSelector"),
        causes,
    );
    label_selector(
        term.get("namespaceSelector"),
        &format!("{at}.namespaceSelector"),
        causes,
    );
    for ns in strings(term.get("namespaces")) {
        if !crate::object::is_dns1123_label(ns) {
            causes.push(Cause::invalid(
                format!("{at}.namespace"),
                ns,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
    }
    let key = term
        .get("topologyKey")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if key.is_empty() {
        causes.push(Cause::required_because(
            format!("{at}.topologyKey"),
            "can not be empty",
        ));
    }
    label_name(key, &format!("{at}.topologyKey"), causes);
}

const EFFECTS: [&str; 3] = ["NoExecute", "NoSchedule", "PreferNoSchedule"];

/// Go's `%#v` of a toleration, which kube prints as the invalid value of one.
fn go_toleration(t: &Value) -> String {
    let s = |k: &str| format!("{:?}", t.get(k).and_then(Value::as_str).unwrap_or_default());
    let secs = match t.get("tolerationSeconds").and_then(Value::as_i64) {
        Some(n) => format!("(*int64)({n})"),
        None => "(*int64)(nil)".into(),
    };
    format!(
        "core.Toleration{{Key:{}, Operator:{}, Value:{}, Effect:{}, TolerationSeconds:{secs}}}",
        s("key"),
        s("operator"),
        s("value"),
        s("effect")
    )
}

/// `ValidateTolerations`.
pub(super) fn tolerations(list: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    for (i, t) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{at}[{i}]");
        let get = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default();
        let (key, op, value, effect) = (get("key"), get("operator"), get("value"), get("effect"));
        if !key.is_empty() {
            label_name(key, &format!("{at}.key"), causes);
        }
        if key.is_empty() && op != "Exists" {
            causes.push(Cause::invalid(
                format!("{at}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.get("tolerationSeconds").is_some_and(|s| !s.is_null()) && effect != "NoExecute" {
            causes.push(Cause::invalid(
                format!("{at}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let errs = label_value_errors(value);
                if !errs.is_empty() {
                    causes.push(Cause::invalid(
                        format!("{at}.operator"),
                        value,
                        &errs.join(";"),
                    ));
                }
            }
            "Exists" if !value.is_empty() => causes.push(Cause::invalid_raw(
                format!("{at}.operator"),
                &go_toleration(t),
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            _ => causes.push(Cause::not_supported(
                format!("{at}.operator"),
                op,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !EFFECTS.contains(&effect) {
            causes.push(Cause::not_supported(
                format!("{at}.effect"),
                effect,
                &EFFECTS,
            ));
        }
    }
}

/// `validateTopologySpreadConstraints`.
fn spread(list: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    let list: Vec<&Value> = list
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let get = |c: &Value, k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    for (i, c) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let skew = c.get("maxSkew").and_then(Value::as_i64).unwrap_or(0);
        if skew <= 0 {
            causes.push(Cause::invalid_raw(
                format!("{at}.maxSkew"),
                &skew.to_string(),
                "must be greater than zero",
            ));
        }
        let key = get(c, "topologyKey");
        if key.is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.topologyKey"),
                "can not be empty",
            ));
        }
        let action = get(c, "whenUnsatisfiable");
        if !["DoNotSchedule", "ScheduleAnyway"].contains(&action.as_str()) {
            causes.push(Cause::not_supported(
                format!("{at}.whenUnsatisfiable"),
                &action,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        if list[i + 1..]
            .iter()
            .any(|o| get(o, "topologyKey") == key && get(o, "whenUnsatisfiable") == action)
        {
            causes.push(Cause::duplicate(
                format!("{at}.{{topologyKey, whenUnsatisfiable}}"),
                &format!("{{{key}, {action}}}"),
            ));
        }
        if let Some(min) = c.get("minDomains").and_then(Value::as_i64) {
            if min <= 0 {
                causes.push(Cause::invalid_raw(
                    format!("{at}.minDomains"),
                    &min.to_string(),
                    "must be greater than zero",
                ));
            }
            if action != "DoNotSchedule" {
                causes.push(Cause::invalid_raw(
                    format!("{at}.minDomains"),
                    &min.to_string(),
                    &format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"
                    ),
                ));
            }
        }
        for policy in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            if let Some(p) = c.get(policy).and_then(Value::as_str) {
                if !["Honor", "Ignore"].contains(&p) {
                    causes.push(Cause::not_supported(
                        format!("{at}.{policy}"),
                        p,
                        &["Honor", "Ignore"],
                    ));
                }
            }
        }
        label_selector(
            c.get("labelSelector"),
            &format!("{at}.labelSelector"),
            causes,
        );
    }
}

/// `validateSchedulingGates`: qualified names, no duplicates.
fn gates(list: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    let mut seen = std::collections::HashSet::new();
    for (i, g) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = g.get("name").and_then(Value::as_str).unwrap_or_default();
        label_name(name, &format!("{at}[{i}]"), causes);
        if !seen.insert(name) {
            causes.push(Cause::duplicate(format!("{at}[{i}]"), name));
        }
    }
}

fn gate_names(spec: Option<&Value>) -> Vec<&str> {
    spec.and_then(|s| s.get("schedulingGates"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|g| g.get("name").and_then(Value::as_str).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// A new pod may not name its node while it still has scheduling gates.
pub(super) fn gated_node_name(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let node = spec
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !node.is_empty() && !gate_names(spec).is_empty() {
        causes.push(Cause::forbidden(
            "spec.nodeName",
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
}

/// An update may remove scheduling gates, never add one.
pub(super) fn gates_update(old: Option<&Value>, new: Option<&Value>, causes: &mut Vec<Cause>) {
    let before = gate_names(old);
    for (i, g) in gate_names(new).into_iter().enumerate() {
        if !before.contains(&g) {
            causes.push(Cause::forbidden(
                format!("spec.schedulingGates[{i}].name"),
                &format!("only deletion is allowed, but found new scheduling gate '{g}'"),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
