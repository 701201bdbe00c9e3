//! Schema checks of incoming objects against the OpenAPI definitions: JSON types that do
//! not fit (a 400, as kube's decoding) and unknown fields for `fieldValidation`. The
//! kinds' own rules (names, required and immutable fields) are their strategies', in
//! `skiff_api::strategy`.

use serde_json::Value;
use skiff_api::kinds::Kind;

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
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or(r);
            if name == QUANTITY {
                return quantity_error(v, path);
            }
            defs.get(name)?
        }
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

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// A resource quantity is a number or a string in quantity syntax; kube's decoder refuses
/// anything else with the syntax's regular expression (no field path).
fn quantity_error(v: &Value, path: &str) -> Option<(String, String)> {
    let ok = match v {
        Value::Number(_) => true,
        Value::String(s) => skiff_api::quantity::Quantity::parse(s).is_ok(),
        _ => false,
    };
    (!ok).then(|| {
        (
            path.to_string(),
            skiff_api::quantity::QuantityError.to_string(),
        )
    })
}
