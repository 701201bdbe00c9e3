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

struct Docs {
    v2: Doc,
    v3_index: Doc,
    v3: BTreeMap<String, Doc>,
}

static DOCS: LazyLock<Docs> = LazyLock::new(build);

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

// ---- operations -------------------------------------------------------------------------

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "type": ty, "uniqueItems": true, "description": description})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": description})
}

fn body_param(def: &str) -> Value {
    json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": format!("#/definitions/{def}")}})
}

fn p_pretty() -> Value {
    query(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    )
}

fn p_dry_run() -> Value {
    query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. The only valid value is 'All': all dry run stages are processed.",
    )
}

fn p_field_manager() -> Value {
    query(
        "fieldManager",
        "string",
        "A name associated with the actor or entity making these changes, at most 128 printable characters.",
    )
}

fn p_field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "How the server treats unknown or duplicate fields in the request body: Ignore drops them silently, Warn (the default) drops them and returns a warning per field, Strict fails the request with a BadRequest error naming them.",
    )
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "boolean", "Asks for watch events of type BOOKMARK; servers may send them at their discretion. Ignored unless watch is true."),
        query("continue", "string", "The continue token of a previous list response whose next page is wanted."),
        query("fieldSelector", "string", "Restricts the returned objects by their fields, e.g. metadata.name=x. Defaults to everything."),
        query("labelSelector", "string", "Restricts the returned objects by their labels, e.g. app=web,tier in (front). Defaults to everything."),
        query("limit", "integer", "The maximum number of objects to return in one page; the response carries a continue token if there are more."),
        query("resourceVersion", "string", "Which version of the data the list or watch starts from; see resourceVersionMatch. Defaults to the most recent."),
        query("resourceVersionMatch", "string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
        query("sendInitialEvents", "boolean", "With watch=true, start with synthetic ADDED events for the current state, then a BOOKMARK."),
        query("timeoutSeconds", "integer", "A timeout for the list/watch call, regardless of activity."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update and remove notifications."),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        p_dry_run(),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted; zero means delete immediately."),
        query("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "Delete an object that cannot be read from storage. Dangerous; off by default."),
        query("orphanDependents", "boolean", "Deprecated: use propagationPolicy. Whether dependents are orphaned."),
        query("propagationPolicy", "string", "Whether and how garbage collection is performed: Orphan, Background or Foreground."),
    ]
}

fn ref_schema(def: &str) -> Value {
    json!({"$ref": format!("#/definitions/{def}")})
}

fn responses(codes: &[&str], def: &str) -> Value {
    let mut r = Map::new();
    for c in codes {
        let desc = match *c {
            "200" => "OK",
            "201" => "Created",
            "202" => "Accepted",
            _ => "",
        };
        r.insert(
            (*c).into(),
            json!({"description": desc, "schema": ref_schema(def)}),
        );
    }
    r.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(r)
}

const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

struct OpCtx<'a> {
    kind: &'a Kind,
    tag: String,
    gv_id: String,
}

fn camel(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn op(
    ctx: &OpCtx<'_>,
    action: &str,
    id: String,
    description: String,
    params: Vec<Value>,
    resp: Value,
    consumes: &[&str],
    gvk_of: Value,
) -> Value {
    let mut o = json!({
        "description": description,
        "operationId": id,
        "tags": [ctx.tag],
        "schemes": ["https"],
        "produces": PRODUCES,
        "parameters": params,
        "responses": resp,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk_of,
    });
    if !consumes.is_empty() {
        o["consumes"] = json!(consumes);
    }
    o
}

fn kind_paths(k: &Kind, paths: &mut Map<String, Value>) {
    let prefix = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    let group_id = camel(k.group.split('.').next().unwrap_or_default());
    let ctx = OpCtx {
        kind: k,
        tag: format!(
            "{}_{}",
            if k.group.is_empty() {
                "core".to_string()
            } else {
                k.group.split('.').next().unwrap_or_default().to_string()
            },
            k.version
        ),
        gv_id: format!(
            "{}{}",
            if k.group.is_empty() {
                "Core".into()
            } else {
                group_id
            },
            camel(k.version)
        ),
    };
    let ns = if k.namespaced { "Namespaced" } else { "" };
    let coll = if k.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
    } else {
        format!("{prefix}/{}", k.plural)
    };
    let item = format!("{coll}/{{name}}");
    let this_gvk = gvk(k.group, k.version, k.kind);
    let list_def = format!("{}List", k.openapi_name);
    let def = k.openapi_name;
    let id = |verb: &str, suffix: &str| format!("{verb}{}{ns}{}{suffix}", ctx.gv_id, k.kind);
    let scope_params = |mut v: Vec<Value>| {
        v.push(p_pretty());
        v
    };
    let path_params = |with_name: bool| {
        let mut v = Vec::new();
        if with_name {
            v.push(path_param("name", &format!("name of the {}", k.kind)));
        }
        if k.namespaced {
            v.push(path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        v
    };

    let mut coll_item = Map::new();
    if k.allows("list") {
        coll_item.insert(
            "get".into(),
            op(
                &ctx,
                "list",
                id("list", ""),
                format!("list or watch objects of kind {}", k.kind),
                scope_params(list_params()),
                responses(&["200"], &list_def),
                &[],
                this_gvk.clone(),
            ),
        );
    }
    if k.allows("create") {
        let mut params = vec![
            body_param(def),
            p_dry_run(),
            p_field_manager(),
            p_field_validation(),
        ];
        params = scope_params(params);
        coll_item.insert(
            "post".into(),
            op(
                &ctx,
                "post",
                id("create", ""),
                format!("create a {}", k.kind),
                params,
                responses(&["200", "201", "202"], def),
                &["*/*"],
                this_gvk.clone(),
            ),
        );
    }
    if k.allows("deletecollection") {
        let mut params = vec![body_param(&format!("{META}.DeleteOptions"))];
        params.extend(delete_params());
        params.extend(list_params());
        coll_item.insert(
            "delete".into(),
            op(
                &ctx,
                "deletecollection",
                id("delete", "").replacen("delete", "deleteCollection", 1),
                format!("delete collection of {}", k.kind),
                scope_params(params),
                responses(&["200"], &format!("{META}.Status")),
                &["*/*"],
                this_gvk.clone(),
            ),
        );
    }
    if !coll_item.is_empty() {
        coll_item.insert("parameters".into(), json!(path_params(false)));
        paths.insert(coll, Value::Object(coll_item));
    }

    let mut obj_item = Map::new();
    if k.allows("get") {
        obj_item.insert(
            "get".into(),
            op(
                &ctx,
                "get",
                id("read", ""),
                format!("read the specified {}", k.kind),
                scope_params(Vec::new()),
                responses(&["200"], def),
                &[],
                this_gvk.clone(),
            ),
        );
    }
    if k.allows("update") {
        obj_item.insert(
            "put".into(),
            op(
                &ctx,
                "put",
                id("replace", ""),
                format!("replace the specified {}", k.kind),
                scope_params(vec![
                    body_param(def),
                    p_dry_run(),
                    p_field_manager(),
                    p_field_validation(),
                ]),
                responses(&["200", "201"], def),
                &["*/*"],
                this_gvk.clone(),
            ),
        );
    }
    if k.allows("patch") {
        obj_item.insert(
            "patch".into(),
            patch_op(&ctx, id("patch", ""), def, this_gvk.clone()),
        );
    }
    if k.allows("delete") {
        let mut params = vec![body_param(&format!("{META}.DeleteOptions"))];
        params.extend(delete_params());
        obj_item.insert(
            "delete".into(),
            op(
                &ctx,
                "delete",
                id("delete", ""),
                format!("delete a {}", k.kind),
                scope_params(params),
                responses(&["200", "202"], &format!("{META}.Status")),
                &["*/*"],
                this_gvk.clone(),
            ),
        );
    }
    if !obj_item.is_empty() {
        obj_item.insert("parameters".into(), json!(path_params(true)));
        paths.insert(item.clone(), Value::Object(obj_item));
    }

    if k.namespaced && k.allows("list") {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            op(
                &ctx,
                "list",
                format!("list{}{}ForAllNamespaces", ctx.gv_id, k.kind),
                format!("list or watch objects of kind {}", k.kind),
                scope_params(list_params()),
                responses(&["200"], &list_def),
                &[],
                this_gvk.clone(),
            ),
        );
        paths.insert(format!("{prefix}/{}", k.plural), Value::Object(all));
    }

    for sub in k.subresources {
        let mut sub_item = Map::new();
        let suffix = camel(sub);
        match *sub {
            "status" | "scale" => {
                let (sdef, sgvk) = if *sub == "scale" {
                    (
                        "io.k8s.api.autoscaling.v1.Scale",
                        gvk("autoscaling", "v1", "Scale"),
                    )
                } else {
                    (def, this_gvk.clone())
                };
                sub_item.insert(
                    "get".into(),
                    op(
                        &ctx,
                        "get",
                        id("read", &suffix),
                        format!("read {sub} of the specified {}", k.kind),
                        scope_params(Vec::new()),
                        responses(&["200"], sdef),
                        &[],
                        sgvk.clone(),
                    ),
                );
                sub_item.insert(
                    "put".into(),
                    op(
                        &ctx,
                        "put",
                        id("replace", &suffix),
                        format!("replace {sub} of the specified {}", k.kind),
                        scope_params(vec![
                            body_param(sdef),
                            p_dry_run(),
                            p_field_manager(),
                            p_field_validation(),
                        ]),
                        responses(&["200", "201"], sdef),
                        &["*/*"],
                        sgvk.clone(),
                    ),
                );
                sub_item.insert(
                    "patch".into(),
                    patch_op(&ctx, id("patch", &suffix), sdef, sgvk),
                );
            }
            "binding" | "eviction" | "token" => {
                let (sdef, sgvk) = match *sub {
                    "binding" => ("io.k8s.api.core.v1.Binding", gvk("", "v1", "Binding")),
                    "eviction" => (
                        "io.k8s.api.policy.v1.Eviction",
                        gvk("policy", "v1", "Eviction"),
                    ),
                    _ => (
                        "io.k8s.api.authentication.v1.TokenRequest",
                        gvk("authentication.k8s.io", "v1", "TokenRequest"),
                    ),
                };
                sub_item.insert(
                    "post".into(),
                    op(
                        &ctx,
                        "post",
                        id("create", &suffix),
                        format!("create {sub} of a {}", k.kind),
                        scope_params(vec![
                            body_param(sdef),
                            p_dry_run(),
                            p_field_manager(),
                            p_field_validation(),
                        ]),
                        responses(&["200", "201", "202"], sdef),
                        &["*/*"],
                        sgvk,
                    ),
                );
            }
            "finalize" => {
                sub_item.insert(
                    "put".into(),
                    op(
                        &ctx,
                        "put",
                        id("replace", &suffix),
                        format!("replace finalize of the specified {}", k.kind),
                        scope_params(vec![
                            body_param(def),
                            p_dry_run(),
                            p_field_manager(),
                            p_field_validation(),
                        ]),
                        responses(&["200", "201"], def),
                        &["*/*"],
                        this_gvk.clone(),
                    ),
                );
            }
            "log" => {
                let mut params = vec![
                    query("container", "string", "The container for which to stream logs. Defaults to the only container if there is one."),
                    query("follow", "boolean", "Follow the log stream of the pod."),
                    query("limitBytes", "integer", "The number of bytes to read from the server before terminating the log output."),
                    query("previous", "boolean", "Return the previous terminated container's logs."),
                    query("sinceSeconds", "integer", "A relative time in seconds before the current time from which to show logs."),
                    query("tailLines", "integer", "The number of lines from the end of the logs to show."),
                    query("timestamps", "boolean", "Add an RFC3339 timestamp at the beginning of every line."),
                ];
                params = scope_params(params);
                let mut o = op(
                    &ctx,
                    "get",
                    id("read", &suffix),
                    format!("read log of the specified {}", k.kind),
                    params,
                    json!({"200": {"description": "OK", "schema": {"type": "string"}}, "401": {"description": "Unauthorized"}}),
                    &[],
                    this_gvk.clone(),
                );
                o["produces"] = json!(["text/plain", "application/json", "application/yaml"]);
                sub_item.insert("get".into(), o);
            }
            // exec, attach, portforward, proxy: streaming "connect" operations.
            _ => {
                for verb in ["get", "post"] {
                    let mut o = op(
                        &ctx,
                        "connect",
                        format!("connect{}{}{ns}{}{suffix}", camel(verb), ctx.gv_id, k.kind),
                        format!(
                            "connect {} requests to {sub} of {}",
                            verb.to_uppercase(),
                            k.kind
                        ),
                        Vec::new(),
                        json!({"200": {"description": "OK", "schema": {"type": "string"}}, "401": {"description": "Unauthorized"}}),
                        &["*/*"],
                        gvk(k.group, k.version, &format!("{}{}", k.kind, camel(sub))),
                    );
                    o["produces"] = json!(["*/*"]);
                    sub_item.insert(verb.into(), o);
                }
            }
        }
        sub_item.insert("parameters".into(), json!(path_params(true)));
        paths.insert(format!("{item}/{sub}"), Value::Object(sub_item));
    }
}

fn patch_op(ctx: &OpCtx<'_>, id: String, def: &str, gvk_of: Value) -> Value {
    op(
        ctx,
        "patch",
        id,
        format!("partially update the specified {}", ctx.kind.kind),
        vec![
            body_param(&format!("{META}.Patch")),
            p_dry_run(),
            p_field_manager(),
            p_field_validation(),
            query("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Must be unset for non-apply patch requests."),
            p_pretty(),
        ],
        responses(&["200", "201"], def),
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ],
        gvk_of,
    )
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
        kind_paths(k, &mut p);
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
fn schema_v3(v: &Value) -> Value {
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

#[cfg(test)]
mod tests;
