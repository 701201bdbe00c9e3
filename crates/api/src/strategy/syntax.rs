//! Kubernetes' syntax rules with kube-apiserver's exact wording: every broken rule is its
//! own message, as `k8s.io/apimachinery/pkg/util/validation` words them, so a client sees
//! the same `Invalid value` lines it would from Kubernetes. Label selectors in objects
//! (`matchLabels`, `matchExpressions`) are validated here too.

use serde_json::Value;

use super::Cause;
use crate::selector::is_qualified_name_part;

const QNAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QNAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// kube's `RegexError`: the rule, examples, and the regular expression.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let e: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        e.join(" or ")
    )
}

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `IsDNS1123Subdomain`'s messages.
pub fn subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len(253));
    }
    // The regular expression limits neither the whole nor a label's length.
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if !s.split('.').all(label) {
        errs.push(regex_error(SUBDOMAIN_MSG, SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

/// `IsQualifiedName`'s messages (label keys, topology keys, gate names).
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [n] => *n,
        [prefix, n] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            n
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// `IsValidLabelValue`'s messages.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(regex_error(
            &format!("a valid label must be an empty string or {QNAME_MSG}"),
            &format!("({QNAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `ValidateLabelName`: one cause per message.
pub fn label_name(key: &str, field: &str, causes: &mut Vec<Cause>) {
    for m in qualified_name_errors(key) {
        causes.push(Cause::invalid(field, key, &m));
    }
}

/// `ValidateLabels`: keys and values of a label map at `field`.
pub fn labels(map: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    for (k, v) in map.and_then(Value::as_object).into_iter().flatten() {
        label_name(k, field, causes);
        let v = v.as_str().unwrap_or_default();
        for m in label_value_errors(v) {
            causes.push(Cause::invalid(field, v, &m));
        }
    }
}

/// The strings of a JSON array (`values`), others as empty strings.
pub fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|s| s.as_str().unwrap_or_default()).collect())
        .unwrap_or_default()
}

/// `ValidateLabelSelector` (metav1): `matchLabels` and each `matchExpressions` entry.
pub fn label_selector(sel: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return;
    };
    labels(
        sel.get("matchLabels"),
        &format!("{field}.matchLabels"),
        causes,
    );
    for (i, e) in items(sel.get("matchExpressions")).enumerate() {
        requirement(e, &format!("{field}.matchExpressions[{i}]"), false, causes);
    }
}

/// The entries of a JSON array (none when it is missing or not an array).
pub fn items(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// One `{key, operator, values}` requirement of a label selector or (with `node`, which
/// adds `Gt` and `Lt`) of a node selector term.
pub fn requirement(e: &Value, at: &str, node: bool, causes: &mut Vec<Cause>) {
    let op = e
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let values = strings(e.get("values"));
    match op {
        "In" | "NotIn" if values.is_empty() => causes.push(Cause::required_because(
            format!("{at}.values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
            format!("{at}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if node && values.len() != 1 => causes.push(Cause::required_because(
            format!("{at}.values"),
            "must be specified single value when `operator` is 'Lt' or 'Gt'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        "Gt" | "Lt" if node => {}
        _ => causes.push(Cause::invalid(
            format!("{at}.operator"),
            op,
            "not a valid selector operator",
        )),
    }
    let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
    label_name(key, &format!("{at}.key"), causes);
    for (j, v) in values.iter().enumerate() {
        for m in label_value_errors(v) {
            causes.push(Cause::invalid(format!("{at}.values[{j}]"), v, &m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_get_kubes_messages() {
        assert!(qualified_name_errors("kubernetes.io/hostname").is_empty());
        assert!(qualified_name_errors("zone").is_empty());
        assert_eq!(
            qualified_name_errors(""),
            vec![
                "name part must be non-empty".to_string(),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()
            ]
        );
        assert_eq!(
            qualified_name_errors("Bad_/x"),
            vec!["prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()]
        );
        assert_eq!(qualified_name_errors("a/b/c").len(), 1);
        assert_eq!(qualified_name_errors(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn label_values() {
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("web-1").is_empty());
        assert_eq!(label_value_errors("-x").len(), 1);
        assert_eq!(label_value_errors(&"-".repeat(64)).len(), 2);
    }

    #[test]
    fn selectors() {
        let mut c = Vec::new();
        let sel = serde_json::json!({"matchExpressions": [
            {"key": "app", "operator": "Exists", "values": ["x"]},
            {"key": "app", "operator": "Maybe"},
            {"key": "app", "operator": "In"},
            {"key": "-bad", "operator": "In", "values": ["ok"]},
        ]});
        label_selector(Some(&sel), "s", &mut c);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s.matchExpressions[0].values",
                "s.matchExpressions[1].operator",
                "s.matchExpressions[2].values",
                "s.matchExpressions[3].key"
            ]
        );
        assert_eq!(
            c[1].message,
            "Invalid value: \"Maybe\": not a valid selector operator"
        );
        assert_eq!(
            c[0].message,
            "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        );
    }
}
