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

/// The Swagger 2.0 definition of a custom kind from its version's `openAPIV3Schema`:
/// the schema with `apiVersion`, `kind` and `metadata` (a `$ref` to ObjectMeta) added as
/// kube-apiserver publishes them, and `x-kubernetes-group-version-kind`. References use
/// `#/definitions/`; the v3 document rewrites them as it does for built-in kinds.
pub fn openapi_definition(schema: &Value, group: &str, version: &str, kind: &str) -> Value {
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
    Value::Object(def)
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
