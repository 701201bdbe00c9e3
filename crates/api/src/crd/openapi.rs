//! The published OpenAPI definition of a custom kind, so `kubectl explain` and
//! `kubectl apply` find custom kinds as they find built-in ones.

use serde_json::{json, Map, Value};

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// The definition name kube publishes a custom kind under: the group reversed, then the
/// version and kind (`com.example.acc.v1.Widget`).
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').filter(|p| !p.is_empty()).collect();
    parts.reverse();
    parts.push(version);
    parts.push(kind);
    parts.join(".")
}

/// A TypeMeta/ObjectMeta field's description as built-in kinds publish it.
fn pod_doc(field: &str) -> Value {
    crate::schema::definitions()
        .get("io.k8s.api.core.v1.Pod")
        .and_then(|d| d.pointer(&format!("/properties/{field}/description")))
        .cloned()
        .unwrap_or(Value::String(String::new()))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{ "group": group, "kind": kind, "version": version }])
}

/// The schema with `apiVersion`, `kind` and `metadata` (a `$ref` to ObjectMeta, Swagger
/// 2.0 style) added as kube-apiserver publishes them, and
/// `x-kubernetes-group-version-kind`.
fn with_type_meta(schema: &Value, group: &str, version: &str, kind: &str) -> Map<String, Value> {
    let mut def = schema.as_object().cloned().unwrap_or_default();
    def.insert("type".into(), json!("object"));
    let mut props = def
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": pod_doc("apiVersion")}),
    );
    props.insert(
        "kind".into(),
        json!({"type": "string", "description": pod_doc("kind")}),
    );
    props.insert(
        "metadata".into(),
        json!({
            "$ref": format!("#/definitions/{META}.ObjectMeta"),
            "description": pod_doc("metadata"),
        }),
    );
    def.insert("properties".into(), Value::Object(props));
    def.insert(
        "x-kubernetes-group-version-kind".into(),
        gvk(group, version, kind),
    );
    def
}

/// The Swagger 2.0 (`/openapi/v2`) definition of a custom kind from its version's
/// `openAPIV3Schema`: TypeMeta/ObjectMeta added, and what v2 clients cannot read
/// dropped as kube does (allOf/anyOf/oneOf/not; nullable fields become untyped;
/// preserve-unknown-fields nodes lose their properties and items; nullable properties
/// are no longer required).
pub fn openapi_definition(schema: &Value, group: &str, version: &str, kind: &str) -> Value {
    let mut v = schema.clone();
    to_v2(&mut v);
    Value::Object(with_type_meta(&v, group, version, kind))
}

/// The OpenAPI 3.0 (`/openapi/v3/apis/<group>/<version>`) definition of a custom kind:
/// the whole schema with TypeMeta/ObjectMeta added, references under
/// `#/components/schemas/` (metadata's wrapped in `allOf`, as kube writes it).
pub fn openapi_definition_v3(schema: &Value, group: &str, version: &str, kind: &str) -> Value {
    crate::openapi::schema_v3(&Value::Object(with_type_meta(schema, group, version, kind)))
}

fn flag(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn to_v2(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    for k in ["allOf", "oneOf", "anyOf", "not"] {
        m.remove(k);
    }
    if flag(m, "nullable") {
        m.remove("type");
        m.remove("nullable");
        m.remove("items");
        m.remove("properties");
    }
    if flag(m, "x-kubernetes-preserve-unknown-fields") {
        m.remove("items");
        m.remove("properties");
    }
    if m.get("type").and_then(Value::as_str) == Some("array") && !m.contains_key("items") {
        m.remove("type");
    }
    let nullable: Vec<String> = m
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter(|(_, s)| s.get("nullable").and_then(Value::as_bool) == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let nullable_values = m
        .get("additionalProperties")
        .and_then(|a| a.get("nullable"))
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(Value::Array(req)) = m.get_mut("required") {
        req.retain(|r| r.as_str().is_none_or(|r| !nullable.iter().any(|n| n == r)));
    }
    if nullable_values
        || m.get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.is_empty())
    {
        m.remove("required");
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        for p in props.values_mut() {
            to_v2(p);
        }
    }
    if let Some(i) = m.get_mut("items") {
        to_v2(i);
    }
    if let Some(a) = m.get_mut("additionalProperties") {
        to_v2(a);
    }
}

/// The `<Kind>List` definition published beside [`openapi_definition`].
pub fn openapi_list_definition(group: &str, version: &str, kind: &str) -> Value {
    let mut props = Map::new();
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": pod_doc("apiVersion")}),
    );
    props.insert(
        "items".into(),
        json!({
            "type": "array",
            "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", kind.to_lowercase()),
            "items": {"$ref": format!("#/definitions/{}", definition_name(group, version, kind))},
        }),
    );
    props.insert(
        "kind".into(),
        json!({"type": "string", "description": pod_doc("kind")}),
    );
    props.insert(
        "metadata".into(),
        json!({
            "$ref": format!("#/definitions/{META}.ListMeta"),
            "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
        }),
    );
    json!({
        "type": "object",
        "description": format!("{kind}List is a list of {kind}"),
        "required": ["items"],
        "properties": props,
        "x-kubernetes-group-version-kind": gvk(group, version, &format!("{kind}List")),
    })
}

/// A Swagger 2.0 definition (such as [`openapi_list_definition`]'s) rewritten for
/// OpenAPI 3.0, as the `/openapi/v3` documents write built-in kinds.
pub fn definition_to_v3(def: &Value) -> Value {
    crate::openapi::schema_v3(def)
}
