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

use crate::kinds::{Kind, KINDS};
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

/// The documents a server serves: the built-in kinds' ([`builtin`], built once) or those
/// with the custom kinds of the CustomResourceDefinitions served now added
/// ([`Documents::with_custom`], built again whenever a CRD changes).
///
/// Every server on one store builds the same bytes from the same CRDs, so the hashes the
/// `/openapi/v3` index advertises (and the ETags) agree between servers.
pub struct Documents {
    /// `/openapi/v2`, built on first use (kubectl asks for the v3 documents).
    v2: std::sync::OnceLock<Doc>,
    v3_index: Doc,
    /// The group/versions with custom kinds (the others are the built-in documents').
    v3: BTreeMap<String, Doc>,
    custom: Vec<CustomDefinitions>,
}

/// One served version of a custom kind, as the OpenAPI documents publish it.
#[derive(Debug, Clone)]
pub struct CustomVersion<'a> {
    /// The kind as served (group, version, names, scope, subresources).
    pub kind: &'a Kind,
    /// The version's `schema.openAPIV3Schema`; None publishes an object of any fields.
    pub schema: Option<&'a Value>,
}

/// What one custom kind adds to the documents.
struct CustomDefinitions {
    gv: String,
    /// Its definition names: `<reversed group>.<version>.<Kind>` and `…List`.
    name: String,
    list_name: String,
    /// Swagger 2.0 definitions (references as `#/definitions/`).
    v2: Value,
    list_v2: Value,
    /// OpenAPI 3.0 definition of the kind (the whole schema).
    v3: Value,
    /// Its paths, Swagger 2.0.
    paths: Map<String, Value>,
}

static DOCS: LazyLock<Documents> = LazyLock::new(build);

/// The documents of the built-in kinds.
pub fn builtin() -> &'static Documents {
    &DOCS
}

/// Builds every document now (tens of thousands of schema nodes walked and serialized), so
/// the first client that asks does not wait; a server calls it once at startup.
pub fn prepare() {
    LazyLock::force(&DOCS);
}

/// The Swagger 2.0 document served at `/openapi/v2` (JSON), of the built-in kinds.
pub fn v2() -> Value {
    DOCS.v2().value.clone()
}

/// [`v2`] serialized, for serving without re-encoding.
pub fn v2_bytes() -> &'static [u8] {
    DOCS.v2_bytes()
}

/// A strong validator for `/openapi/v2` (ETag).
pub fn v2_hash() -> &'static str {
    DOCS.v2_hash()
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
    DOCS.v3_group_version_bytes(path)
}

impl Documents {
    /// The built-in documents with `custom` kinds added: their definitions (under
    /// [`crate::crd::definition_name`], with `x-kubernetes-group-version-kind`) and paths
    /// in `/openapi/v2`, and a document per custom group/version in `/openapi/v3` (its
    /// kinds, their lists, and the built-in definitions they reference: ObjectMeta,
    /// ListMeta, Status, Scale…).
    pub fn with_custom(custom: &[CustomVersion<'_>]) -> Documents {
        let mut custom: Vec<&CustomVersion<'_>> = custom.iter().collect();
        // The same CRDs give the same bytes, whatever order they were registered in.
        custom.sort_by(|a, b| {
            (a.kind.group, a.kind.version, a.kind.plural).cmp(&(
                b.kind.group,
                b.kind.version,
                b.kind.plural,
            ))
        });
        custom.dedup_by(|a, b| {
            (a.kind.group, a.kind.version, a.kind.plural)
                == (b.kind.group, b.kind.version, b.kind.plural)
        });
        let custom: Vec<CustomDefinitions> = custom.into_iter().map(custom_definitions).collect();
        let builtin = &*DOCS;
        let defs = definitions_v2();
        let mut v3 = BTreeMap::new();
        let gvs: BTreeSet<&str> = custom.iter().map(|c| c.gv.as_str()).collect();
        for gv in gvs {
            // A custom kind in a built-in group/version (allowed with kube's approval
            // annotation) joins that group/version's document.
            let mut paths = builtin_gv_paths(gv);
            let mut own = Map::new();
            for c in custom.iter().filter(|c| c.gv == gv) {
                paths.extend(c.paths.clone());
                own.insert(c.name.clone(), c.v2.clone());
                own.insert(c.list_name.clone(), c.list_v2.clone());
            }
            let paths = Value::Object(paths);
            let mut roots = own.clone();
            roots.insert("paths".into(), paths.clone());
            let reach = reachable_in(&Value::Object(roots), defs, &own);
            let mut schemas = Map::new();
            for name in reach {
                if let Some(c) = custom.iter().find(|c| c.name == name) {
                    schemas.insert(name, c.v3.clone());
                } else if let Some(d) = own.get(&name).or_else(|| defs.get(&name)) {
                    schemas.insert(name, schema_v3(d));
                }
            }
            v3.insert(gv.to_string(), Doc::new(v3_document(&paths, schemas)));
        }
        let mut index = builtin
            .v3_index
            .value
            .get("paths")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (gv, doc) in &v3 {
            index.insert(gv.clone(), index_entry(gv, &doc.hash));
        }
        Documents {
            v2: std::sync::OnceLock::new(),
            v3_index: Doc::new(json!({"paths": sorted(index)})),
            v3,
            custom,
        }
    }

    fn v2(&self) -> &Doc {
        self.v2.get_or_init(|| {
            if self.custom.is_empty() {
                return Doc::new(v2_document(definitions_v2().clone(), all_builtin_paths()));
            }
            let mut defs = definitions_v2().clone();
            let mut paths = all_builtin_paths();
            for c in &self.custom {
                defs.insert(c.name.clone(), c.v2.clone());
                defs.insert(c.list_name.clone(), c.list_v2.clone());
                paths.extend(c.paths.clone());
            }
            Doc::new(v2_document(sorted(defs), sorted(paths)))
        })
    }

    /// `/openapi/v2` (JSON).
    pub fn v2_bytes(&self) -> &[u8] {
        &self.v2().bytes
    }

    /// A strong validator of [`Documents::v2_bytes`] (its ETag).
    pub fn v2_hash(&self) -> &str {
        &self.v2().hash
    }

    /// The `/openapi/v3` index (JSON).
    pub fn v3_index_bytes(&self) -> &[u8] {
        &self.v3_index.bytes
    }

    /// A strong validator of [`Documents::v3_index_bytes`].
    pub fn v3_index_hash(&self) -> &str {
        &self.v3_index.hash
    }

    /// The document of one group/version (`apis/apps/v1`, also as the index's
    /// `serverRelativeURL`) serialized, and its hash; None if it is not served.
    pub fn v3_group_version_bytes(&self, path: &str) -> Option<(&[u8], &str)> {
        let key = gv_key(path);
        let doc = match self.v3.get(key) {
            Some(d) => d,
            None if std::ptr::eq(self, &*DOCS) => return None,
            None => DOCS.v3.get(key)?,
        };
        Some((doc.bytes.as_slice(), doc.hash.as_str()))
    }

    /// The `serverRelativeURL` of a group/version's document, as the index names it.
    pub fn v3_url(&self, path: &str) -> Option<String> {
        let key = gv_key(path);
        let (_, hash) = self.v3_group_version_bytes(key)?;
        Some(format!("/openapi/v3/{key}?hash={hash}"))
    }
}

/// A map with its keys inserted in order (serialized the same with or without
/// serde_json's `preserve_order`).
fn sorted(m: Map<String, Value>) -> Map<String, Value> {
    let mut entries: Vec<(String, Value)> = m.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().collect()
}

fn index_entry(gv: &str, hash: &str) -> Value {
    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")})
}

fn custom_definitions(c: &CustomVersion<'_>) -> CustomDefinitions {
    let k = c.kind;
    let any = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let schema = c.schema.unwrap_or(&any);
    let name = crate::crd::definition_name(k.group, k.version, k.kind);
    let mut paths = Map::new();
    paths::custom_kind_paths(k, &name, &mut paths);
    CustomDefinitions {
        gv: gv_path(k.group, k.version),
        list_name: format!("{name}List"),
        v2: crate::crd::openapi_definition(schema, k.group, k.version, k.kind),
        list_v2: crate::crd::openapi_list_definition(k.group, k.version, k.kind),
        v3: crate::crd::openapi_definition_v3(schema, k.group, k.version, k.kind),
        paths,
        name,
    }
}

/// The built-in definitions with the Kubernetes extensions, built once.
fn definitions_v2() -> &'static Map<String, Value> {
    static DEFS: LazyLock<Map<String, Value>> = LazyLock::new(annotated_definitions);
    &DEFS
}

fn all_builtin_paths() -> Map<String, Value> {
    let mut all = Map::new();
    for k in KINDS {
        paths::kind_paths(k, &mut all);
    }
    all
}

/// The built-in kinds' paths in group/version `gv` (`apis/apps/v1`).
fn builtin_gv_paths(gv: &str) -> Map<String, Value> {
    let mut p = Map::new();
    for k in KINDS.iter().filter(|k| gv_path(k.group, k.version) == gv) {
        paths::kind_paths(k, &mut p);
    }
    p
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
    // Built-in groups only: the documents are the same whenever they are built.
    let mut groups: Vec<(&str, &str)> = KINDS.iter().map(|k| (k.group, k.version)).collect();
    groups.sort();
    groups.dedup();
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

fn v2_document(defs: Map<String, Value>, paths: Map<String, Value>) -> Value {
    let security = json!({"BearerToken": {"description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey"}});
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths,
        "definitions": defs,
        "securityDefinitions": security,
        "security": [{"BearerToken": []}],
    })
}

fn v3_document(paths: &Value, schemas: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths_v3(paths),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
    })
}

fn build() -> Documents {
    let defs = definitions_v2();
    let mut gv_paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for k in KINDS {
        paths::kind_paths(k, gv_paths.entry(gv_path(k.group, k.version)).or_default());
    }
    let mut v3 = BTreeMap::new();
    let mut index = Map::new();
    for (gv, paths) in gv_paths {
        let paths = Value::Object(paths);
        let needed = reachable(&paths, defs);
        let mut schemas = Map::new();
        for name in needed {
            if let Some(d) = defs.get(&name) {
                schemas.insert(name, schema_v3(d));
            }
        }
        let doc = Doc::new(v3_document(&paths, schemas));
        index.insert(gv.clone(), index_entry(&gv, &doc.hash));
        v3.insert(gv, doc);
    }
    Documents {
        v2: std::sync::OnceLock::new(),
        v3_index: Doc::new(json!({"paths": index})),
        v3,
        custom: Vec::new(),
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

/// Definition names reachable from `root` through `$ref`s, looked up in `own` first,
/// then in `defs`.
fn reachable_in(
    root: &Value,
    defs: &Map<String, Value>,
    own: &Map<String, Value>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = Vec::new();
    collect_refs(root, &mut todo);
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            if let Some(d) = own.get(&n).or_else(|| defs.get(&n)) {
                collect_refs(d, &mut todo);
            }
        }
    }
    seen
}

/// Definition names reachable from `root` through `$ref`s.
fn reachable(root: &Value, defs: &Map<String, Value>) -> BTreeSet<String> {
    reachable_in(root, defs, &Map::new())
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
