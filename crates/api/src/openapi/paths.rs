//! The paths of the OpenAPI documents: every kind's operations, with kube's operation
//! ids, actions, group-version-kinds and query parameters.

use serde_json::{json, Map, Value};

use super::{gvk, META};
use crate::kinds::Kind;

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
    /// Whether PATCH takes strategic merge patches (built-in kinds; custom kinds do not).
    strategic: bool,
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

/// The paths of built-in kind `k`.
pub(super) fn kind_paths(k: &Kind, paths: &mut Map<String, Value>) {
    let tag_group = if k.group.is_empty() {
        "core".to_string()
    } else {
        k.group.split('.').next().unwrap_or_default().to_string()
    };
    let id_group = if k.group.is_empty() {
        "Core".to_string()
    } else {
        camel(k.group.split('.').next().unwrap_or_default())
    };
    let ctx = OpCtx {
        kind: k,
        tag: format!("{tag_group}_{}", k.version),
        gv_id: format!("{id_group}{}", camel(k.version)),
        strategic: true,
    };
    named_kind_paths(&ctx, k.openapi_name, paths);
}

/// The paths of custom kind `k` published under definition `def`, named as
/// kube-apiserver names a custom resource's operations: the whole group in the operation
/// ids and tags (`listTestExampleComV1NamespacedWidget`, `testExampleCom_v1`), and PATCH
/// without strategic merge patch.
pub(super) fn custom_kind_paths(k: &Kind, def: &str, paths: &mut Map<String, Value>) {
    let id_group: String = k
        .group
        .split(['.', '-'])
        .map(camel)
        .collect::<Vec<_>>()
        .concat();
    let mut tag_group = id_group.clone();
    if let Some(first) = tag_group.get(..1) {
        tag_group = first.to_lowercase() + &tag_group[1..];
    }
    let ctx = OpCtx {
        kind: k,
        tag: format!("{tag_group}_{}", k.version),
        gv_id: format!("{id_group}{}", camel(k.version)),
        strategic: false,
    };
    named_kind_paths(&ctx, def, paths);
}

fn named_kind_paths(ctx: &OpCtx<'_>, def: &str, paths: &mut Map<String, Value>) {
    let k = ctx.kind;
    let prefix = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    let ns = if k.namespaced { "Namespaced" } else { "" };
    let coll = if k.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
    } else {
        format!("{prefix}/{}", k.plural)
    };
    let item = format!("{coll}/{{name}}");
    let this_gvk = gvk(k.group, k.version, k.kind);
    let list_def = format!("{def}List");
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
                ctx,
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
                ctx,
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
                ctx,
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
                ctx,
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
                ctx,
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
            patch_op(ctx, id("patch", ""), def, this_gvk.clone()),
        );
    }
    if k.allows("delete") {
        let mut params = vec![body_param(&format!("{META}.DeleteOptions"))];
        params.extend(delete_params());
        obj_item.insert(
            "delete".into(),
            op(
                ctx,
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
                ctx,
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
                        ctx,
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
                        ctx,
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
                    patch_op(ctx, id("patch", &suffix), sdef, sgvk),
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
                        ctx,
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
                        ctx,
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
                    ctx,
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
                        ctx,
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
                        // kube tags connect operations with their options type
                        // (PodExecOptions, NodeProxyOptions, …).
                        gvk(
                            k.group,
                            k.version,
                            &format!(
                                "{}{}Options",
                                k.kind,
                                if *sub == "portforward" {
                                    "PortForward".to_string()
                                } else {
                                    camel(sub)
                                }
                            ),
                        ),
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
        if ctx.strategic {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ]
        } else {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
        },
        gvk_of,
    )
}
