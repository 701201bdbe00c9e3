//! Validation of incoming objects: names, labels, required and immutable fields of the
//! main kinds, and unknown fields for `fieldValidation`. Problems are collected as
//! [`Cause`]s with field paths, answered as one 422.

use serde_json::Value;
use skiff_api::kinds::Kind;

use crate::meta::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name,
};
use crate::status::Cause;

/// Kinds whose names must be DNS-1123 labels (≤ 63, no dots); services DNS-1035.
fn name_rule(kind: &str) -> (&'static str, fn(&str) -> bool) {
    match kind {
        "Namespace" => (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            is_dns1123_label,
        ),
        "Service" => (
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            is_dns1035_label,
        ),
        _ => (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            is_dns1123_subdomain,
        ),
    }
}

/// Validates a new or updated object (after defaulting).
pub fn object(kind: &Kind, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = crate::meta::name(obj);
    let (rule, ok) = name_rule(kind.kind);
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if !ok(name) {
        let why = if name.len() > 253 || (kind.kind == "Namespace" && name.len() > 63) {
            "must be no more than 63 characters".to_string()
        } else {
            rule.to_string()
        };
        causes.push(Cause::invalid("metadata.name", name, &why));
    }
    for (field, check_values) in [("labels", true), ("annotations", false)] {
        if let Some(m) = obj
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        {
            for (k, v) in m {
                if !is_qualified_name(k) {
                    causes.push(Cause::invalid(
                        format!("metadata.{field}"),
                        k,
                        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    ));
                }
                let vs = v.as_str();
                if vs.is_none() {
                    causes.push(Cause::invalid(
                        format!("metadata.{field}"),
                        &v.to_string(),
                        "must be a string",
                    ));
                } else if check_values && !is_label_value(vs.unwrap_or_default()) {
                    causes.push(Cause::invalid(
                        "metadata.labels".to_string(),
                        vs.unwrap_or_default(),
                        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    ));
                }
            }
        }
    }
    match kind.kind {
        "Pod" => pod_spec(obj.get("spec"), "spec", &mut causes),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workload(obj, &mut causes);
        }
        "Job" => {
            pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            let rp = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if rp != "Never" && rp != "OnFailure" {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: "spec.template.spec.restartPolicy".into(),
                    message: format!(
                        "Unsupported value: {rp:?}: supported values: \"OnFailure\", \"Never\""
                    ),
                });
            }
        }
        "Service" => service(obj, &mut causes),
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj.get(field).and_then(Value::as_object) {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
                            });
                        if !ok {
                            causes.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                k,
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    causes
}

fn workload(obj: &Value, causes: &mut Vec<Cause>) {
    let sel = obj.pointer("/spec/selector");
    if sel.is_none_or(Value::is_null) {
        causes.push(Cause::required("spec.selector"));
    } else if let Some(sel) = sel {
        let empty = sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
            && sel
                .get("matchExpressions")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty());
        if empty {
            causes.push(Cause::invalid(
                "spec.selector",
                "{}",
                "empty selector is invalid for deployment",
            ));
        } else if let Ok(s) = skiff_api::selector::LabelSelector::from_object(sel) {
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .map(|l| crate::meta::labels(&serde_json::json!({"metadata": {"labels": l}})))
                .unwrap_or_default();
            if !s.matches(&labels) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &serde_json::to_string(&labels).unwrap_or_default(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(r) = obj.pointer("/spec/replicas") {
        if r.as_i64().is_none_or(|r| r < 0) {
            causes.push(Cause::invalid(
                "spec.replicas",
                &r.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
}

fn pod_spec(spec: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{at}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{at}.containers"))),
        Some(cs) => {
            let mut seen = std::collections::HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                let f = format!("{at}.containers[{i}]");
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    causes.push(Cause::required(format!("{f}.name")));
                } else if !is_dns1123_label(name) {
                    causes.push(Cause::invalid(format!("{f}.name"), name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
                } else if !seen.insert(name) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        field: format!("{f}.name"),
                        message: format!("Duplicate value: {name:?}"),
                    });
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{f}.image")));
                }
                if let Some(ports) = c.get("ports").and_then(Value::as_array) {
                    for (j, p) in ports.iter().enumerate() {
                        let n = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                        if !(1..=65535).contains(&n) {
                            causes.push(Cause::invalid(
                                format!("{f}.ports[{j}].containerPort"),
                                &n.to_string(),
                                "must be between 1 and 65535, inclusive",
                            ));
                        }
                    }
                }
            }
        }
    }
    if let Some(rp) = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
    {
        if !["Always", "OnFailure", "Never"].contains(&rp) {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{at}.restartPolicy"),
                message: format!("Unsupported value: {rp:?}: supported values: \"Always\", \"OnFailure\", \"Never\""),
            });
        }
    }
}

fn service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.type".into(),
            message: format!("Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        });
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
        causes.push(Cause::required("spec.ports"));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let n = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&n) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

/// Fields that cannot change on update; `old` and `new` are stored/incoming objects.
pub fn immutable(kind: &Kind, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let same = |p: &str| old.pointer(p) == new.pointer(p);
    match kind.kind {
        "Pod" => {
            // Only images, activeDeadlineSeconds and added tolerations may change.
            let strip = |v: &Value| {
                let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
                for key in ["containers", "initContainers"] {
                    if let Some(Value::Array(cs)) = s.get_mut(key) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = s.as_object_mut() {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                    // Set once by the scheduler through pods/binding.
                    m.remove("nodeName");
                }
                s
            };
            if strip(old) != strip(new) {
                causes.push(Cause::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" if !same("/spec/selector") => {
            causes.push(Cause::invalid(
                "spec.selector",
                &new.pointer("/spec/selector")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                "field is immutable",
            ));
        }
        "Service" => {
            let old_ip = old.pointer("/spec/clusterIP");
            let new_ip = new.pointer("/spec/clusterIP");
            if new_ip.is_some_and(|v| !v.is_null() && v != "") && old_ip != new_ip {
                causes.push(Cause::invalid(
                    "spec.clusterIPs[0]",
                    new_ip.and_then(Value::as_str).unwrap_or_default(),
                    "may not change once set",
                ));
            }
        }
        "Job" if !same("/spec/selector") || !same("/spec/template") => {
            causes.push(Cause::invalid("spec.template", "", "field is immutable"));
        }
        _ => {}
    }
    if (kind.kind == "ConfigMap" || kind.kind == "Secret")
        && old.get("immutable") == Some(&Value::Bool(true))
        && (!same("/data") || !same("/binaryData"))
    {
        causes.push(Cause::forbidden(
            "data",
            "field is immutable when `immutable` is set",
        ));
    }
    causes
}

/// Top-level and metadata fields every object may carry; deeper unknown fields are found
/// with the OpenAPI schema when it has the kind's definition.
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Fields of `obj` the schema does not declare, as dotted paths (`spec.foo`).
pub fn unknown_fields(kind: &Kind, obj: &Value, defs: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(def) = defs.get(kind.openapi_name) {
        walk(obj, def, defs, "", &mut out, 0);
        return out;
    }
    // No schema for the kind: check what every kind shares.
    if let Some(m) = obj.get("metadata").and_then(Value::as_object) {
        for k in m.keys() {
            if !OBJECT_META.contains(&k.as_str()) {
                out.push(format!("metadata.{k}"));
            }
        }
    }
    let top: &[&str] = match kind.kind {
        "ConfigMap" => &["data", "binaryData", "immutable"],
        "Secret" => &["data", "stringData", "type", "immutable"],
        "Event" => &[
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
            "note",
            "regarding",
            "reportingController",
            "deprecatedSource",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ],
        "Endpoints" => &["subsets"],
        "EndpointSlice" => &["addressType", "endpoints", "ports"],
        "ServiceAccount" => &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        "ControllerRevision" => &["data", "revision"],
        "PriorityClass" => &["value", "globalDefault", "description", "preemptionPolicy"],
        _ => &["spec", "status"],
    };
    if let Some(m) = obj.as_object() {
        for k in m.keys() {
            if !["apiVersion", "kind", "metadata"].contains(&k.as_str())
                && !top.contains(&k.as_str())
            {
                out.push(k.clone());
            }
        }
    }
    out
}

fn walk(v: &Value, schema: &Value, defs: &Value, path: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 64 {
        return;
    }
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => match defs.get(r.rsplit('/').next().unwrap_or(r)) {
            Some(s) => s,
            None => return,
        },
        None => schema,
    };
    // allOf with a single $ref is how v3 wraps references.
    if let Some(Value::Array(all)) = schema.get("allOf") {
        if let Some(s) = all.first() {
            return walk(v, s, defs, path, out, depth + 1);
        }
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, child) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match props.get(k) {
                        Some(s) => walk(child, s, defs, &p, out, depth + 1),
                        None => out.push(p),
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties") {
                if ap.is_object() {
                    for (k, child) in m {
                        walk(child, ap, defs, &format!("{path}.{k}"), out, depth + 1);
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, child) in a.iter().enumerate() {
                    walk(child, items, defs, &format!("{path}[{i}]"), out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// The first field of `obj` whose JSON type does not fit the kind's schema, as
/// (dotted path, what was expected and found). kube-apiserver refuses these when it
/// decodes into its Go types, before defaulting and validation; so does skiff, so those
/// can rely on the declared shapes. `null` is every type's zero value.
pub fn type_error(kind: &Kind, obj: &Value, defs: &Value) -> Option<(String, String)> {
    let def = defs.get(kind.openapi_name)?;
    let mut path = String::new();
    type_walk(obj, def, defs, &mut path, 0)
}

fn type_walk(
    v: &Value,
    schema: &Value,
    defs: &Value,
    path: &mut String,
    depth: usize,
) -> Option<(String, String)> {
    if depth > 64 || v.is_null() {
        return None;
    }
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => defs.get(r.rsplit('/').next().unwrap_or(r))?,
        None => schema,
    };
    if let Some(Value::Array(all)) = schema.get("allOf") {
        return type_walk(v, all.first()?, defs, path, depth + 1);
    }
    let found = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fail = |path: &str, want: &str| {
        let at = if path.is_empty() { "the object" } else { path };
        Some((
            at.to_string(),
            format!("{at}: expected {want}, got {found}"),
        ))
    };
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return match v {
            Value::String(_) | Value::Number(_) => None,
            _ => fail(path, "an integer or a string"),
        };
    }
    let ty = schema.get("type").and_then(Value::as_str)?;
    match (ty, v) {
        ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => None,
        ("number", Value::Number(_)) => None,
        ("integer", Value::Number(n)) => {
            let fits = match schema.get("format").and_then(Value::as_str) {
                Some("int32") => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                _ => n.as_i64().is_some(),
            };
            if fits {
                None
            } else {
                let at = if path.is_empty() { "the object" } else { path };
                Some((
                    at.to_string(),
                    format!("{at}: {n} is not a valid integer here"),
                ))
            }
        }
        ("array", Value::Array(a)) => {
            let items = schema.get("items")?;
            let len = path.len();
            for (i, child) in a.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                let r = type_walk(child, items, defs, path, depth + 1);
                path.truncate(len);
                if r.is_some() {
                    return r;
                }
            }
            None
        }
        ("object", Value::Object(m)) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            let len = path.len();
            for (k, child) in m {
                let Some(s) = props.and_then(|p| p.get(k)).or(extra) else {
                    continue;
                };
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let r = type_walk(child, s, defs, path, depth + 1);
                path.truncate(len);
                if r.is_some() {
                    return r;
                }
            }
            None
        }
        ("integer" | "number", _) => fail(path, "a number"),
        (t, _) => fail(
            path,
            &format!(
                "{}{t}",
                if t == "array" || t == "object" {
                    "an "
                } else {
                    "a "
                }
            ),
        ),
    }
}
