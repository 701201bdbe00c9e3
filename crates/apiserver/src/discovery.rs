//! Discovery documents, all derived from `skiff_api::kinds::KINDS`: legacy `/api`,
//! `/apis`, per-group-version resource lists, and aggregated discovery
//! (`apidiscovery.k8s.io` v2 and v2beta1) when the Accept header asks for it.

use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};

/// What a subresource answers with: (group, version, kind, verbs).
fn subresource(kind: &Kind, sub: &str) -> (String, String, String, Vec<&'static str>) {
    let own = || {
        (
            kind.group.to_string(),
            kind.version.to_string(),
            kind.kind.to_string(),
        )
    };
    let (g, v, k) = match sub {
        "binding" => ("".into(), "v1".into(), "Binding".into()),
        "eviction" => ("policy".into(), "v1".into(), "Eviction".into()),
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "token" => (
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
        ),
        "exec" => ("".into(), "v1".into(), "PodExecOptions".into()),
        "attach" => ("".into(), "v1".into(), "PodAttachOptions".into()),
        "portforward" => ("".into(), "v1".into(), "PodPortForwardOptions".into()),
        "proxy" if kind.kind == "Node" => ("".into(), "v1".into(), "NodeProxyOptions".into()),
        "proxy" => ("".into(), "v1".into(), "ServiceProxyOptions".into()),
        _ => own(),
    };
    let verbs: Vec<&str> = match sub {
        "binding" | "eviction" | "token" => vec!["create"],
        "log" => vec!["get"],
        "exec" | "attach" | "portforward" => vec!["create", "get"],
        "proxy" => vec!["create", "delete", "get", "patch", "update"],
        "finalize" => vec!["update"],
        _ => vec!["get", "patch", "update"],
    };
    (g, v, k, verbs)
}

/// A stable short hash kube clients use to notice storage changes.
fn storage_version_hash(kind: &Kind) -> String {
    use base64::Engine;
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}/{}/{}", kind.group, kind.version, kind.kind).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(&d.as_ref()[..8])
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Groups other than core, with their versions in preference order.
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in kinds::group_versions() {
        if g.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

/// `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({
                "name": g,
                "versions": versions,
                "preferredVersion": versions[0],
            })
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, vs) = groups().into_iter().find(|(g, _)| *g == group)?;
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": g,
        "versions": versions, "preferredVersion": versions[0],
    }))
}

/// `/api/v1`, `/apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for k in kinds::in_group_version(group, version) {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": k.verbs,
            "storageVersionHash": storage_version_hash(k),
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for sub in k.subresources {
            let (g, v, kind, verbs) = subresource(k, sub);
            let mut r = json!({
                "name": format!("{}/{sub}", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if g != k.group || v != k.version {
                r["group"] = json!(g);
                r["version"] = json!(v);
            }
            resources.push(r);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// Which aggregated discovery version the Accept header asks for, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    let mut best = None;
    for part in accept.split(',') {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        if !p.contains(&"g=apidiscovery.k8s.io") || !p.contains(&"as=APIGroupDiscoveryList") {
            continue;
        }
        if p.contains(&"v=v2") {
            return Some("v2");
        }
        if p.contains(&"v=v2beta1") {
            best = Some("v2beta1");
        }
    }
    best
}

/// The aggregated document for `/api` (core only) or `/apis` (everything else).
pub fn aggregated(core: bool, version: &str) -> Value {
    let group_names: Vec<&str> = if core {
        vec![""]
    } else {
        groups().into_iter().map(|(g, _)| g).collect()
    };
    let items: Vec<Value> = group_names
        .into_iter()
        .map(|g| {
            let versions: Vec<&str> = kinds::group_versions()
                .into_iter()
                .filter(|(gg, _)| *gg == g)
                .map(|(_, v)| v)
                .collect();
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|v| {
                    let resources: Vec<Value> = kinds::in_group_version(g, v)
                        .map(|k| {
                            let subs: Vec<Value> = k
                                .subresources
                                .iter()
                                .map(|s| {
                                    let (sg, sv, sk, verbs) = subresource(k, s);
                                    json!({"subresource": s, "responseKind": {"group": sg, "version": sv, "kind": sk}, "verbs": verbs})
                                })
                                .collect();
                            let mut r = json!({
                                "resource": k.plural,
                                "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                                "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": k.singular,
                                "verbs": k.verbs,
                            });
                            if !k.short_names.is_empty() {
                                r["shortNames"] = json!(k.short_names);
                            }
                            if !k.categories.is_empty() {
                                r["categories"] = json!(k.categories);
                            }
                            if !subs.is_empty() {
                                r["subresources"] = json!(subs);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// `/version`: a 1.33-like build, so clients pick their newest code paths.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0+skiff",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "rustc",
        "platform": format!("linux/{}", if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }),
    })
}
