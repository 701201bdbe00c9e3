//! Strategies of ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding: kube's
//! defaults (`failurePolicy: Fail`, `matchPolicy: Equivalent`, empty selectors, rule scope
//! `*`) and the validation that matters for enforcing them — required fields, supported
//! values, and every CEL expression compiled (`crate::admission::Policy::compile`), so a
//! policy the server could not evaluate is refused when it is written, not when it
//! denies a request.

use serde_json::{json, Value};

use super::syntax::{items, label_selector, qualified_name_errors, strings, subdomain_errors};
use super::{Cause, Strategy};
use crate::admission::Policy;

pub(super) struct ValidatingAdmissionPolicy;
impl Strategy for ValidatingAdmissionPolicy {
    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        spec.entry("failurePolicy").or_insert_with(|| json!("Fail"));
        if let Some(m) = spec.get_mut("matchConstraints") {
            default_match_resources(m);
        }
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_policy(obj, causes);
    }
}

pub(super) struct ValidatingAdmissionPolicyBinding;
impl Strategy for ValidatingAdmissionPolicyBinding {
    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.pointer_mut("/spec/matchResources") {
            default_match_resources(m);
        }
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_binding(obj, causes);
    }
}

/// kube's `SetDefaults_MatchResources` and `SetDefaults_Rule` (scope `*`).
fn default_match_resources(m: &mut Value) {
    let Some(m) = m.as_object_mut() else {
        return;
    };
    m.entry("matchPolicy")
        .or_insert_with(|| json!("Equivalent"));
    m.entry("namespaceSelector").or_insert_with(|| json!({}));
    m.entry("objectSelector").or_insert_with(|| json!({}));
    for rules in ["resourceRules", "excludeResourceRules"] {
        if let Some(list) = m.get_mut(rules).and_then(Value::as_array_mut) {
            for r in list.iter_mut().filter_map(Value::as_object_mut) {
                r.entry("scope").or_insert_with(|| json!("*"));
            }
        }
    }
}

fn not_supported(field: String, v: &str, supported: &[&str], causes: &mut Vec<Cause>) {
    causes.push(Cause::not_supported(field, v, supported));
}

fn validate_policy(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match spec.get("failurePolicy").and_then(Value::as_str) {
        None => causes.push(Cause::required("spec.failurePolicy")),
        Some("Fail" | "Ignore") => {}
        Some(v) => not_supported("spec.failurePolicy".into(), v, &["Fail", "Ignore"], causes),
    }
    if let Some(pk) = spec.get("paramKind").filter(|p| !p.is_null()) {
        let api_version = pk.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if api_version.is_empty() {
            causes.push(Cause::required("spec.paramKind.apiVersion"));
        } else if api_version.matches('/').count() > 1 || api_version.ends_with('/') {
            causes.push(Cause::invalid(
                "spec.paramKind.apiVersion",
                api_version,
                &format!("unexpected GroupVersion string: {api_version}"),
            ));
        }
        if pk
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(Cause::required("spec.paramKind.kind"));
        }
    }
    match spec.get("matchConstraints").filter(|m| !m.is_null()) {
        None => causes.push(Cause::required("spec.matchConstraints")),
        Some(m) => {
            match_resources(m, "spec.matchConstraints", causes);
            if items(m.get("resourceRules")).next().is_none() {
                causes.push(Cause::required("spec.matchConstraints.resourceRules"));
            }
        }
    }
    let mut names = Vec::new();
    for (i, c) in items(spec.get("matchConditions")).enumerate() {
        let at = format!("spec.matchConditions[{i}]");
        if c.get("expression")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .is_empty()
        {
            causes.push(Cause::required(format!("{at}.expression")));
        }
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        } else {
            for m in qualified_name_errors(name) {
                causes.push(Cause::invalid(format!("{at}.name"), name, &m));
            }
            if names.contains(&name) {
                causes.push(Cause::duplicate(format!("{at}.name"), name));
            }
            names.push(name);
        }
    }
    for (i, v) in items(spec.get("variables")).enumerate() {
        let at = format!("spec.variables[{i}]");
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name.trim().is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.name"),
                "name is not specified",
            ));
        } else if !is_cel_identifier(name) {
            causes.push(Cause::invalid(
                format!("{at}.name"),
                name,
                "name is not a valid CEL identifier",
            ));
        }
        if v.get("expression")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .is_empty()
        {
            causes.push(Cause::required_because(
                format!("{at}.expression"),
                "expression is not specified",
            ));
        }
    }
    let validations: Vec<&Value> = items(spec.get("validations")).collect();
    let annotations: Vec<&Value> = items(spec.get("auditAnnotations")).collect();
    if validations.is_empty() && annotations.is_empty() {
        let why = "validations or auditAnnotations must contain at least one item";
        causes.push(Cause::required_because("spec.validations", why));
        causes.push(Cause::required_because("spec.auditAnnotations", why));
    }
    for (i, v) in validations.iter().enumerate() {
        let at = format!("spec.validations[{i}]");
        if v.get("expression")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .is_empty()
        {
            causes.push(Cause::required_because(
                format!("{at}.expression"),
                "expression is not specified",
            ));
        }
        if let Some(m) = v.get("messageExpression").and_then(Value::as_str) {
            if !m.is_empty() && m.trim().is_empty() {
                causes.push(Cause::invalid(
                    format!("{at}.messageExpression"),
                    m,
                    "must be non-empty if specified",
                ));
            }
        }
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            if !m.is_empty() && m.trim().is_empty() {
                causes.push(Cause::invalid(
                    format!("{at}.message"),
                    m,
                    "message must be non-empty if specified",
                ));
            } else if m.trim().contains(['\n', '\r']) {
                causes.push(Cause::invalid(
                    format!("{at}.message"),
                    m,
                    "message must not contain line breaks",
                ));
            }
        }
        if let Some(r) = v.get("reason").and_then(Value::as_str) {
            const REASONS: [&str; 4] = [
                "Forbidden",
                "Invalid",
                "RequestEntityTooLarge",
                "Unauthorized",
            ];
            if !REASONS.contains(&r) {
                not_supported(format!("{at}.reason"), r, &REASONS, causes);
            }
        }
    }
    if annotations.len() > 20 {
        causes.push(Cause::invalid_raw(
            "spec.auditAnnotations",
            &format!("{} items", annotations.len()),
            "must not have more than 20 auditAnnotations",
        ));
    }
    let policy_name = crate::object::name(obj);
    let mut keys = Vec::new();
    for (i, a) in annotations.iter().enumerate() {
        let at = format!("spec.auditAnnotations[{i}]");
        let key = a.get("key").and_then(Value::as_str).unwrap_or("");
        let full = format!("{policy_name}/{key}");
        for m in qualified_name_errors(&full) {
            causes.push(Cause::invalid(format!("{at}.key"), &full, &m));
        }
        if keys.contains(&key) {
            causes.push(Cause::duplicate(format!("{at}.key"), key));
        }
        keys.push(key);
        let value = a
            .get("valueExpression")
            .and_then(Value::as_str)
            .unwrap_or("");
        if value.trim().is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.valueExpression"),
                "valueExpression is not specified",
            ));
        } else if value.trim().len() > 5 * 1024 {
            causes.push(Cause::required_because(
                format!("{at}.valueExpression"),
                "must not exceed 5120 bytes in length",
            ));
        }
    }
    // Every expression that is there compiles.
    for (field, src, e) in Policy::compile(obj).compile_errors() {
        if src.trim().is_empty() {
            continue;
        }
        causes.push(Cause::invalid(
            field,
            &src,
            &format!("compilation failed: ERROR: <input>: {e}"),
        ));
    }
}

/// A CEL identifier: a letter or `_`, then letters, digits or `_`, and no reserved word.
fn is_cel_identifier(s: &str) -> bool {
    const RESERVED: [&str; 23] = [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
        "int",
        "uint",
    ];
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&s)
}

/// `validateMatchResources`: match policy, selectors, rules.
fn match_resources(m: &Value, at: &str, causes: &mut Vec<Cause>) {
    match m.get("matchPolicy").and_then(Value::as_str) {
        None => causes.push(Cause::required(format!("{at}.matchPolicy"))),
        Some("Exact" | "Equivalent") => {}
        Some(v) => not_supported(
            format!("{at}.matchPolicy"),
            v,
            &["Equivalent", "Exact"],
            causes,
        ),
    }
    for sel in ["namespaceSelector", "objectSelector"] {
        match m.get(sel).filter(|s| !s.is_null()) {
            None => causes.push(Cause::required(format!("{at}.{sel}"))),
            Some(s) => label_selector(Some(s), &format!("{at}.{sel}"), causes),
        }
    }
    for rules in ["resourceRules", "excludeResourceRules"] {
        for (i, r) in items(m.get(rules)).enumerate() {
            rule(r, &format!("{at}.{rules}[{i}]"), causes);
        }
    }
}

/// `validateRuleWithOperations` and the resource names of a named rule.
fn rule(r: &Value, at: &str, causes: &mut Vec<Cause>) {
    let ops = strings(r.get("operations"));
    if ops.is_empty() {
        causes.push(Cause::required(format!("{at}.operations")));
    }
    const OPS: [&str; 5] = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
    for (i, op) in ops.iter().enumerate() {
        if !OPS.contains(op) {
            not_supported(format!("{at}.operations[{i}]"), op, &OPS, causes);
        }
    }
    if ops.len() > 1 && ops.contains(&"*") {
        causes.push(Cause::invalid_raw(
            format!("{at}.operations"),
            &format!("{ops:?}"),
            "if '*' is present, must not specify other operations",
        ));
    }
    for (field, what) in [
        ("apiGroups", "API groups"),
        ("apiVersions", "API versions"),
        ("resources", "resources"),
    ] {
        let list = strings(r.get(field));
        if list.is_empty() {
            causes.push(Cause::required(format!("{at}.{field}")));
        }
        if field != "resources" && list.len() > 1 && list.contains(&"*") {
            causes.push(Cause::invalid_raw(
                format!("{at}.{field}"),
                &format!("{list:?}"),
                &format!("if '*' is present, must not specify other {what}"),
            ));
        }
        if field == "apiVersions" {
            for (i, v) in list.iter().enumerate() {
                if v.is_empty() {
                    causes.push(Cause::required(format!("{at}.apiVersions[{i}]")));
                }
            }
        }
    }
    match r.get("scope").and_then(Value::as_str) {
        None | Some("*" | "Cluster" | "Namespaced") => {}
        Some(s) => not_supported(
            format!("{at}.scope"),
            s,
            &["*", "Cluster", "Namespaced"],
            causes,
        ),
    }
    let mut seen = Vec::new();
    for (i, n) in strings(r.get("resourceNames")).iter().enumerate() {
        if seen.contains(n) {
            causes.push(Cause::duplicate(format!("{at}.resourceNames[{i}]"), n));
        }
        seen.push(n);
    }
}

fn validate_binding(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let policy = spec.get("policyName").and_then(Value::as_str).unwrap_or("");
    if policy.is_empty() {
        causes.push(Cause::required("spec.policyName"));
    } else {
        for m in subdomain_errors(policy) {
            causes.push(Cause::invalid("spec.policyName", policy, &m));
        }
    }
    if let Some(p) = spec.get("paramRef").filter(|p| !p.is_null()) {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        let selector = p.get("selector").filter(|s| !s.is_null());
        if !name.is_empty() && selector.is_some() {
            let why = "name and selector are mutually exclusive";
            causes.push(Cause::forbidden("spec.paramRef.name", why));
            causes.push(Cause::forbidden("spec.paramRef.selector", why));
        }
        if let Some(s) = selector {
            label_selector(Some(s), "spec.paramRef.selector", causes);
        }
        if name.is_empty() && selector.is_none() {
            causes.push(Cause::required_because(
                "spec.paramRef",
                "one of name or selector must be specified",
            ));
        }
        match p.get("parameterNotFoundAction").and_then(Value::as_str) {
            None | Some("") => {
                causes.push(Cause::required("spec.paramRef.parameterNotFoundAction"))
            }
            Some("Allow" | "Deny") => {}
            Some(v) => not_supported(
                "spec.paramRef.parameterNotFoundAction".into(),
                v,
                &["Deny", "Allow"],
                causes,
            ),
        }
    }
    if let Some(m) = spec.get("matchResources").filter(|m| !m.is_null()) {
        match_resources(m, "spec.matchResources", causes);
    }
    let actions = strings(spec.get("validationActions"));
    let mut seen: Vec<&str> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if !["Audit", "Deny", "Warn"].contains(a) {
            not_supported(
                format!("spec.validationActions[{i}]"),
                a,
                &["Audit", "Deny", "Warn"],
                causes,
            );
        }
        if seen.contains(a) {
            causes.push(Cause::duplicate(format!("spec.validationActions[{i}]"), a));
        }
        seen.push(a);
    }
    if seen.contains(&"Deny") && seen.contains(&"Warn") {
        causes.push(Cause::invalid_raw(
            "spec.validationActions",
            &format!("[{}]", actions.join(" ")),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if seen.is_empty() {
        causes.push(Cause::required_because(
            "spec.validationActions",
            "at least one validation action is required",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(kind: &str, obj: Value) -> Vec<String> {
        let mut obj = obj;
        let s = super::super::for_kind(kind);
        s.default(&mut obj);
        let mut out = Vec::new();
        s.validate(&obj, &mut out);
        out.iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn policies_are_defaulted_and_their_expressions_compiled() {
        let mut p = json!({"metadata": {"name": "p.example.com"}, "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.replicas <= 5"}],
        }});
        let s = super::super::for_kind("ValidatingAdmissionPolicy");
        s.default(&mut p);
        assert_eq!(p["spec"]["failurePolicy"], "Fail");
        assert_eq!(p["spec"]["matchConstraints"]["matchPolicy"], "Equivalent");
        assert_eq!(
            p["spec"]["matchConstraints"]["namespaceSelector"],
            json!({})
        );
        assert_eq!(
            p["spec"]["matchConstraints"]["resourceRules"][0]["scope"],
            "*"
        );
        assert_eq!(
            causes("ValidatingAdmissionPolicy", p.clone()),
            Vec::<String>::new()
        );

        let mut bad = p.clone();
        bad["spec"]["validations"][0] =
            json!({"expression": "object.spec.replicas <=", "reason": "Nope"});
        bad["spec"]["failurePolicy"] = json!("Sometimes");
        let got = causes("ValidatingAdmissionPolicy", bad);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "spec.failurePolicy: Unsupported value: \"Sometimes\": supported values: \"Fail\", \"Ignore\"");
        assert_eq!(got[1], "spec.validations[0].reason: Unsupported value: \"Nope\": supported values: \"Forbidden\", \"Invalid\", \"RequestEntityTooLarge\", \"Unauthorized\"");
        assert!(got[2].starts_with("spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": compilation failed: ERROR: <input>: Syntax error"), "{got:?}");

        let got = causes(
            "ValidatingAdmissionPolicy",
            json!({"metadata": {"name": "p"}, "spec": {"validations": [{"expression": "params.max > 1"}]}}),
        );
        assert_eq!(got, [
            "spec.matchConstraints: Required value",
            "spec.validations[0].expression: Invalid value: \"params.max > 1\": compilation failed: ERROR: <input>: undeclared reference to 'params' (in container '')",
        ]);
        let got = causes(
            "ValidatingAdmissionPolicy",
            json!({"metadata": {"name": "p"}, "spec": {
                "matchConstraints": {"resourceRules": [{"operations": ["GET"]}]},
            }}),
        );
        assert_eq!(got, [
            "spec.matchConstraints.resourceRules[0].operations[0]: Unsupported value: \"GET\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\"",
            "spec.matchConstraints.resourceRules[0].apiGroups: Required value",
            "spec.matchConstraints.resourceRules[0].apiVersions: Required value",
            "spec.matchConstraints.resourceRules[0].resources: Required value",
            "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
            "spec.auditAnnotations: Required value: validations or auditAnnotations must contain at least one item",
        ]);
    }

    #[test]
    fn bindings_need_a_policy_and_actions() {
        let ok = json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"],
            "paramRef": {"name": "cm", "namespace": "default", "parameterNotFoundAction": "Deny"},
            "matchResources": {"namespaceSelector": {"matchLabels": {"env": "test"}}}}});
        assert_eq!(
            causes("ValidatingAdmissionPolicyBinding", ok),
            Vec::<String>::new()
        );
        let got = causes(
            "ValidatingAdmissionPolicyBinding",
            json!({"metadata": {"name": "b"}, "spec": {
                "validationActions": ["Deny", "Warn", "Deny", "Log"],
                "paramRef": {"name": "x", "selector": {}},
            }}),
        );
        assert_eq!(got, [
            "spec.policyName: Required value",
            "spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
            "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive",
            "spec.paramRef.parameterNotFoundAction: Required value",
            "spec.validationActions[2]: Duplicate value: \"Deny\"",
            "spec.validationActions[3]: Unsupported value: \"Log\": supported values: \"Audit\", \"Deny\", \"Warn\"",
            "spec.validationActions: Invalid value: [Deny Warn Deny Log]: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ]);
        let got = causes(
            "ValidatingAdmissionPolicyBinding",
            json!({"metadata": {"name": "b"}, "spec": {"policyName": "p"}}),
        );
        assert_eq!(got, ["spec.validationActions: Required value: at least one validation action is required"]);
    }
}
