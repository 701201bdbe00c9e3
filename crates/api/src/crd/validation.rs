//! The CustomResourceDefinition object's own validation, as kube-apiserver's
//! apiextensions validation does it: names, scope, versions, subresources, printer
//! columns, the OpenAPI schema's allowed keywords, structural-schema rules and defaults.

use serde_json::Value;

use super::structural::validate_version_schema;
use super::{render, Cause};
use crate::object::{is_dns1035_label, is_dns1123_subdomain};

const DNS1035_RULE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub(super) fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

pub(super) fn invalid(field: impl Into<String>, value: &Value, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {}: {why}", render(value)),
    }
}
pub(super) fn invalid_str(field: impl Into<String>, value: &str, why: &str) -> Cause {
    invalid(field, &Value::String(value.to_string()), why)
}
pub(super) fn required(field: impl Into<String>, why: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: if why.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {why}")
        },
    }
}
pub(super) fn forbidden(field: impl Into<String>, why: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {why}"),
    }
}
pub(super) fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Cause {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            render(value),
            list.join(", ")
        ),
    }
}

fn dns1035_why(v: &str) -> &'static str {
    if v.len() > 63 {
        "must be no more than 63 characters"
    } else {
        DNS1035_RULE
    }
}

/// Validates a CustomResourceDefinition (apiextensions.k8s.io/v1) as kube-apiserver does
/// on create (the generic metadata checks are the API server's, as for every kind).
pub fn validate_crd(crd: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let group = s(&spec, "group");
    let plural = s(&names, "plural");
    let name = crd.pointer("/metadata/name").and_then(Value::as_str);
    if let Some(name) = name {
        if name != format!("{plural}.{group}") {
            out.push(invalid_str(
                "metadata.name",
                name,
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
    }

    if group.is_empty() {
        out.push(required("spec.group", ""));
    } else if !is_dns1123_subdomain(group) {
        out.push(invalid_str("spec.group", group, SUBDOMAIN_RULE));
    } else if !group.contains('.') {
        out.push(invalid_str(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }

    match s(&spec, "scope") {
        "" => out.push(required("spec.scope", "")),
        "Cluster" | "Namespaced" => {}
        other => out.push(not_supported(
            "spec.scope",
            &Value::String(other.into()),
            &["Cluster", "Namespaced"],
        )),
    }

    let versions: Vec<Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut storage = 0;
    let mut seen = Vec::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let vname = s(v, "name");
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage += 1;
        }
        if seen.contains(&vname) {
            unique = false;
        } else {
            seen.push(vname);
        }
        if !is_dns1035_label(vname) {
            out.push(invalid_str(
                format!("{path}.name"),
                vname,
                dns1035_why(vname),
            ));
        }
        let status_enabled = v.pointer("/subresources/status").is_some();
        match v.pointer("/schema/openAPIV3Schema") {
            Some(schema) if schema.is_object() => validate_version_schema(
                schema,
                &format!("{path}.schema.openAPIV3Schema"),
                status_enabled,
                &mut out,
            ),
            _ => out.push(required(
                format!("{path}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
        }
        if let Some(sub) = v.get("subresources") {
            validate_subresources(sub, &format!("{path}.subresources"), &mut out);
        }
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            for (j, c) in cols.iter().enumerate() {
                validate_column(
                    c,
                    &format!("{path}.additionalPrinterColumns[{j}]"),
                    &mut out,
                );
            }
        }
    }
    let versions_value = Value::Array(versions.clone());
    if !unique {
        out.push(invalid(
            "spec.versions",
            &versions_value,
            "must contain unique version names",
        ));
    }
    if storage != 1 {
        out.push(invalid(
            "spec.versions",
            &versions_value,
            "must have exactly one version marked as storage version",
        ));
    }

    // Required after defaulting (see `default_crd`), as kube requires them in spec.
    for field in ["plural", "singular", "kind", "listKind"] {
        if s(&names, field).is_empty() {
            out.push(required(format!("spec.names.{field}"), ""));
        }
    }
    validate_names(&names, "spec.names", &mut out);
    validate_conversion(spec.get("conversion"), &mut out);
    out
}

/// kube's defaulting of a v1 CRD: `names.singular` (the lowercase kind),
/// `names.listKind` (`<Kind>List`), `conversion.strategy: None`, and port 443 of a
/// conversion webhook's service. Call it before [`validate_crd`].
pub fn default_crd(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
        if empty(names.get("singular")) {
            names.insert("singular".into(), Value::String(kind.to_lowercase()));
        }
        if empty(names.get("listKind")) && !kind.is_empty() {
            names.insert("listKind".into(), Value::String(format!("{kind}List")));
        }
    }
    let conversion = spec
        .entry("conversion")
        .or_insert_with(|| serde_json::json!({"strategy": "None"}));
    if let Some(svc) = conversion
        .pointer_mut("/webhook/clientConfig/service")
        .and_then(Value::as_object_mut)
    {
        svc.entry("port").or_insert(Value::from(443));
    }
}

fn validate_conversion(conversion: Option<&Value>, out: &mut Vec<Cause>) {
    let Some(c) = conversion.filter(|c| !c.is_null()) else {
        return;
    };
    let strategy = s(c, "strategy");
    let client = c.pointer("/webhook/clientConfig");
    match strategy {
        "" => out.push(required("spec.conversion.strategy", "")),
        "None" => {
            if client.is_some() {
                out.push(forbidden(
                    "spec.conversion.webhookClientConfig",
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        "Webhook" => match client {
            None => out.push(required(
                "spec.conversion.webhookClientConfig",
                "required when strategy is set to Webhook",
            )),
            Some(cc) => {
                if cc.get("url").is_some() == cc.get("service").is_some() {
                    out.push(required(
                        "spec.conversion.webhookClientConfig",
                        "exactly one of url or service is required",
                    ));
                }
            }
        },
        other => out.push(not_supported(
            "spec.conversion.strategy",
            &Value::String(other.into()),
            &["None", "Webhook"],
        )),
    }
}

/// Validates an update of a CRD: [`validate_crd`] on `new`, the fields that may not
/// change (group and plural always; scope and kind once `old` is Established), and that
/// every `status.storedVersions` entry of `new` is still in `spec.versions`.
pub fn validate_crd_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut out = validate_crd(new);
    let established = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "type") == "Established" && s(c, "status") == "True")
        });
    let mut immutable = vec![
        ("spec.group", "/spec/group"),
        ("spec.names.plural", "/spec/names/plural"),
    ];
    if established {
        immutable.insert(1, ("spec.scope", "/spec/scope"));
        immutable.push(("spec.names.kind", "/spec/names/kind"));
    }
    for (field, ptr) in immutable {
        let (n, o) = (new.pointer(ptr), old.pointer(ptr));
        if n != o {
            out.push(invalid(
                field,
                n.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    if let Some(stored) = new
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
    {
        let versions: Vec<&str> = new
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| s(v, "name"))
            .collect();
        for (i, v) in stored.iter().enumerate() {
            let name = v.as_str().unwrap_or_default();
            if !versions.contains(&name) {
                out.push(invalid_str(
                    format!("status.storedVersions[{i}]"),
                    name,
                    "must appear in spec.versions",
                ));
            }
        }
    }
    out
}

/// The DNS-1035 rules of a CRD's names (also used for `status.acceptedNames`).
fn validate_names(names: &Value, path: &str, out: &mut Vec<Cause>) {
    for field in ["plural", "singular"] {
        let v = s(names, field);
        if !v.is_empty() && !is_dns1035_label(v) {
            out.push(invalid_str(format!("{path}.{field}"), v, dns1035_why(v)));
        }
    }
    for field in ["kind", "listKind"] {
        let v = s(names, field);
        if !v.is_empty() && !is_dns1035_label(&v.to_lowercase()) {
            out.push(invalid_str(
                format!("{path}.{field}"),
                v,
                &format!(
                    "may have mixed case, but should otherwise match: {}",
                    dns1035_why(v)
                ),
            ));
        }
    }
    for field in ["shortNames", "categories"] {
        if let Some(a) = names.get(field).and_then(Value::as_array) {
            for (i, x) in a.iter().enumerate() {
                let v = x.as_str().unwrap_or_default();
                if !is_dns1035_label(v) {
                    out.push(invalid_str(
                        format!("{path}.{field}[{i}]"),
                        v,
                        dns1035_why(v),
                    ));
                }
            }
        }
    }
    let kind = s(names, "kind");
    if !kind.is_empty() && kind == s(names, "listKind") {
        out.push(invalid_str(
            format!("{path}.listKind"),
            kind,
            "kind and listKind may not be the same",
        ));
    }
}

fn simple_json_path(p: &str, field: &str, out: &mut Vec<Cause>) -> bool {
    if p.is_empty() {
        out.push(invalid_str(field, p, "must not be empty"));
        false
    } else if !p.starts_with('.') {
        out.push(invalid_str(
            field,
            p,
            "must be a simple json path starting with .",
        ));
        false
    } else {
        true
    }
}

fn validate_subresources(sub: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(scale) = sub.get("scale") else {
        return;
    };
    for (field, prefix, why) in [
        (
            "specReplicasPath",
            ".spec.",
            "should be a json path under .spec",
        ),
        (
            "statusReplicasPath",
            ".status.",
            "should be a json path under .status",
        ),
    ] {
        let f = format!("{path}.scale.{field}");
        let p = s(scale, field);
        if p.is_empty() {
            out.push(required(f, ""));
        } else if simple_json_path(p, &f, out) && !p.starts_with(prefix) {
            out.push(invalid_str(f, p, why));
        }
    }
    let p = s(scale, "labelSelectorPath");
    let f = format!("{path}.scale.labelSelectorPath");
    if !p.is_empty()
        && simple_json_path(p, &f, out)
        && !p.starts_with(".spec.")
        && !p.starts_with(".status.")
    {
        out.push(invalid_str(
            f,
            p,
            "should be a json path under either .spec or .status",
        ));
    }
}

const COLUMN_TYPES: [&str; 5] = ["boolean", "date", "integer", "number", "string"];
const COLUMN_FORMATS: [&str; 8] = [
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "password",
];

fn validate_column(c: &Value, path: &str, out: &mut Vec<Cause>) {
    if s(c, "name").is_empty() {
        out.push(required(format!("{path}.name"), ""));
    }
    let ty = s(c, "type");
    if ty.is_empty() {
        out.push(required(
            format!("{path}.type"),
            &format!("must be one of {}", COLUMN_TYPES.join(",")),
        ));
    } else if !COLUMN_TYPES.contains(&ty) {
        out.push(not_supported(
            format!("{path}.type"),
            &Value::String(ty.into()),
            &COLUMN_TYPES,
        ));
    }
    let format = s(c, "format");
    if !format.is_empty() && !COLUMN_FORMATS.contains(&format) {
        out.push(not_supported(
            format!("{path}.format"),
            &Value::String(format.into()),
            &COLUMN_FORMATS,
        ));
    }
    let jp = s(c, "jsonPath");
    let f = format!("{path}.jsonPath");
    if jp.is_empty() {
        out.push(required(f, ""));
    } else if simple_json_path(jp, &f, out) && super::columns::JsonPath::parse(jp).is_none() {
        out.push(invalid_str(
            f,
            jp,
            "must be a simple json path starting with .",
        ));
    }
}
