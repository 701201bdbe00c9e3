//! The `/openapi/v2` and `/openapi/v3` documents for the served kinds, generated from the
//! k8s-openapi types: definitions with `x-kubernetes-group-version-kind` and the patch
//! strategy extensions from [`crate::patch::patch_meta`], and paths with their operations
//! and query parameters.
//!
//! What clients use them for: kubectl 1.27+ looks for the `fieldValidation` query
//! parameter on a kind's PATCH operation (v3, falling back to v2) to decide whether the
//! server validates fields itself; `kubectl explain` finds a kind's schema by its
//! `x-kubernetes-group-version-kind` and follows the `$ref`s; `kubectl apply` reads
//! `x-kubernetes-patch-strategy`/`-merge-key` to build its strategic merge patch.
//!
//! Everything is generated once, on first use, and kept as serialized bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use crate::kinds::KINDS;
use crate::patch::all_patch_meta;
use crate::schema::{definitions, ref_name};

/// The Kubernetes version the documents describe (k8s-openapi's oldest, v1_33).
pub const KUBE_VERSION: &str = "v1.33.0";

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// One served document: its JSON and the serialized bytes with a content hash.
struct Doc {
    value: Value,
    bytes: Vec<u8>,
    hash: String,
}

impl Doc {
    fn new(value: Value) -> Doc {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let hash = format!("{:016X}", h.finish());
        Doc { value, bytes, hash }
    }
}

struct Docs {
    v2: Doc,
    v3_index: Doc,
    v3: BTreeMap<String, Doc>,
}

static DOCS: LazyLock<Docs> = LazyLock::new(build);

/// Builds every document now (tens of thousands of schema nodes walked and serialized), so
/// the first client that asks does not wait; a server calls it once at startup.
pub fn prepare() {
    LazyLock::force(&DOCS);
}

/// The Swagger 2.0 document served at `/openapi/v2` (JSON).
pub fn v2() -> Value {
    DOCS.v2.value.clone()
}

/// [`v2`] serialized, for serving without re-encoding.
pub fn v2_bytes() -> &'static [u8] {
    &DOCS.v2.bytes
}

/// A strong validator for `/openapi/v2` (ETag).
pub fn v2_hash() -> &'static str {
    &DOCS.v2.hash
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}, …}}`.
pub fn v3_index() -> Value {
    DOCS.v3_index.value.clone()
}

/// [`v3_index`] serialized.
pub fn v3_index_bytes() -> &'static [u8] {
    &DOCS.v3_index.bytes
}

fn gv_key(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or_default();
    let path = path.trim_matches('/');
    path.strip_prefix("openapi/v3/").unwrap_or(path)
}

/// The OpenAPI 3.0 document of one group/version (`api/v1`, `apis/apps/v1`), or `None` if
/// it is not served.
pub fn v3_group_version(path: &str) -> Option<Value> {
    DOCS.v3.get(gv_key(path)).map(|d| d.value.clone())
}

/// [`v3_group_version`] serialized, and its hash (the `hash` query parameter and ETag the
/// index advertises; clients cache a response whose URL carries it for a long time).
pub fn v3_group_version_bytes(path: &str) -> Option<(&'static [u8], &'static str)> {
    DOCS.v3
        .get(gv_key(path))
        .map(|d| (d.bytes.as_slice(), d.hash.as_str()))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

/// Extra (definition → GVKs) for the types operations exchange besides the kinds.
fn extra_gvks() -> Vec<(String, Vec<Value>)> {
    let mut groups: Vec<(&str, &str)> = crate::kinds::group_versions();
    groups.sort();
    let per_gv =
        |kind: &str| -> Vec<Value> { groups.iter().map(|(g, v)| gvk(g, v, kind)).collect() };
    vec![
        (format!("{META}.DeleteOptions"), per_gv("DeleteOptions")),
        (format!("{META}.WatchEvent"), per_gv("WatchEvent")),
        (format!("{META}.Status"), vec![gvk("", "v1", "Status")]),
        (
            "io.k8s.api.autoscaling.v1.Scale".into(),
            vec![gvk("autoscaling", "v1", "Scale")],
        ),
        (
            "io.k8s.api.policy.v1.Eviction".into(),
            vec![gvk("policy", "v1", "Eviction")],
        ),
        (
            "io.k8s.api.core.v1.Binding".into(),
            vec![gvk("", "v1", "Binding")],
        ),
        (
            "io.k8s.api.authentication.v1.TokenRequest".into(),
            vec![gvk("authentication.k8s.io", "v1", "TokenRequest")],
        ),
    ]
}

/// The definitions with the Kubernetes extensions added (references as `#/definitions/`).
fn annotated_definitions() -> Map<String, Value> {
    let mut defs = definitions().clone();
    for k in KINDS {
        if let Some(Value::Object(d)) = defs.get_mut(k.openapi_name) {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(k.group, k.version, k.kind)]),
            );
        }
        if let Some(Value::Object(d)) = defs.get_mut(&format!("{}List", k.openapi_name)) {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(k.group, k.version, &format!("{}List", k.kind))]),
            );
        }
    }
    for (name, gvks) in extra_gvks() {
        if let Some(Value::Object(d)) = defs.get_mut(&name) {
            d.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
        }
    }
    for (ty, field, meta) in all_patch_meta() {
        let Some(prop) = defs
            .get_mut(ty)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        prop.insert("x-kubernetes-patch-strategy".into(), json!(meta.strategy()));
        if let Some(k) = meta.merge_key {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(k));
        }
    }
    defs
}

// ---- documents --------------------------------------------------------------------------

fn info() -> Value {
    json!({"title": "Kubernetes", "version": KUBE_VERSION})
}

fn build() -> Docs {
    let defs = annotated_definitions();
    let mut all_paths = Map::new();
    let mut gv_paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for k in KINDS {
        let mut p = Map::new();
        paths::kind_paths(k, &mut p);
        let gv = gv_path(k.group, k.version);
        let e = gv_paths.entry(gv).or_default();
        for (path, item) in p {
            all_paths.insert(path.clone(), item.clone());
            e.insert(path, item);
        }
    }
    let security = json!({"BearerToken": {"description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey"}});
    let v2 = json!({
        "swagger": "2.0",
        "info": info(),
        "paths": all_paths,
        "definitions": defs,
        "securityDefinitions": security,
        "security": [{"BearerToken": []}],
    });

    let mut v3 = BTreeMap::new();
    let mut index = Map::new();
    for (gv, paths) in gv_paths {
        let paths = Value::Object(paths);
        let needed = reachable(&paths, &defs);
        let mut schemas = Map::new();
        for name in needed {
            if let Some(d) = defs.get(&name) {
                schemas.insert(name, schema_v3(d));
            }
        }
        let doc = json!({
            "openapi": "3.0.0",
            "info": info(),
            "paths": paths_v3(&paths),
            "components": {
                "schemas": schemas,
                "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
            },
        });
        let doc = Doc::new(doc);
        index.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", doc.hash)}),
        );
        v3.insert(gv, doc);
    }
    Docs {
        v2: Doc::new(v2),
        v3_index: Doc::new(json!({"paths": index})),
        v3,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(n) = ref_name(v) {
                out.push(n.to_string());
            }
            for x in m.values() {
                collect_refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// Definition names reachable from `root` through `$ref`s.
fn reachable(root: &Value, defs: &Map<String, Value>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = Vec::new();
    collect_refs(root, &mut todo);
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            if let Some(d) = defs.get(&n) {
                collect_refs(d, &mut todo);
            }
        }
    }
    seen
}

/// Rewrites a Swagger 2.0 schema into OpenAPI 3.0: references move to
/// `#/components/schemas/`, and a reference with siblings (a field's own description or
/// patch extensions) is wrapped in `allOf`, as kube-apiserver writes it, since 3.0 ignores
/// a `$ref`'s siblings.
pub(crate) fn schema_v3(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(name) = ref_name(v) {
                let target = json!({"$ref": format!("#/components/schemas/{name}")});
                if m.len() == 1 {
                    return target;
                }
                let mut out = Map::new();
                out.insert("allOf".into(), json!([target]));
                for (k, x) in m {
                    if k != "$ref" {
                        out.insert(k.clone(), schema_v3(x));
                    }
                }
                return Value::Object(out);
            }
            Value::Object(m.iter().map(|(k, x)| (k.clone(), schema_v3(x))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(schema_v3).collect()),
        other => other.clone(),
    }
}

fn paths_v3(paths: &Value) -> Value {
    let Some(paths) = paths.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (p, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        let mut new_item = Map::new();
        for (verb, o) in item {
            if verb == "parameters" {
                let ps: Vec<Value> = o
                    .as_array()
                    .map(|a| a.iter().map(param_v3).collect())
                    .unwrap_or_default();
                new_item.insert("parameters".into(), Value::Array(ps));
            } else {
                new_item.insert(verb.clone(), operation_v3(o));
            }
        }
        out.insert(p.clone(), Value::Object(new_item));
    }
    Value::Object(out)
}

fn param_v3(p: &Value) -> Value {
    let mut out = Map::new();
    let mut schema = Map::new();
    if let Some(m) = p.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "type" | "uniqueItems" => {
                    schema.insert(k.clone(), v.clone());
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out.insert("schema".into(), Value::Object(schema));
    Value::Object(out)
}

fn operation_v3(o: &Value) -> Value {
    let Some(m) = o.as_object() else {
        return o.clone();
    };
    let produces: Vec<String> = m
        .get("produces")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let consumes: Vec<String> = m
        .get("consumes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "produces" | "consumes" | "schemes" => {}
            "parameters" => {
                let mut ps = Vec::new();
                for p in v.as_array().into_iter().flatten() {
                    if p.get("in").and_then(Value::as_str) == Some("body") {
                        let schema = schema_v3(p.get("schema").unwrap_or(&Value::Null));
                        let content: Map<String, Value> = consumes
                            .iter()
                            .map(|c| (c.clone(), json!({"schema": schema})))
                            .collect();
                        out.insert(
                            "requestBody".into(),
                            json!({"content": content, "required": true}),
                        );
                    } else {
                        ps.push(param_v3(p));
                    }
                }
                out.insert("parameters".into(), Value::Array(ps));
            }
            "responses" => {
                let mut rs = Map::new();
                for (code, r) in v.as_object().into_iter().flatten() {
                    let mut nr =
                        json!({"description": r.get("description").cloned().unwrap_or(json!(""))});
                    if let Some(s) = r.get("schema") {
                        let schema = schema_v3(s);
                        let content: Map<String, Value> = produces
                            .iter()
                            .map(|c| (c.clone(), json!({"schema": schema})))
                            .collect();
                        nr["content"] = Value::Object(content);
                    }
                    rs.insert(code.clone(), nr);
                }
                out.insert("responses".into(), Value::Object(rs));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

mod paths;
#[cfg(test)]
mod tests;
