use super::*;

/// kubectl's `supportsQueryParamV3`: the first PATCH operation tagged with the kind's GVK
/// decides whether the query parameter is supported.
fn supports_query_param(doc: &Value, g: &str, v: &str, k: &str, param: &str) -> bool {
    let want = json!({"group": g, "version": v, "kind": k});
    for item in doc["paths"].as_object().expect("paths").values() {
        let Some(op) = item.get("patch") else {
            continue;
        };
        let gvk = &op["x-kubernetes-group-version-kind"];
        if *gvk != want {
            continue;
        }
        return op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == param && p["in"] == "query");
    }
    false
}

fn refs_resolve(doc: &Value, prefix: &str, defs: &Value) {
    let mut refs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.to_string());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{r} does not start with {prefix}"));
        assert!(defs.get(name).is_some(), "dangling reference {r}");
    }
}

#[test]
fn v2_has_kinds_paths_and_field_validation() {
    let doc = v2();
    assert_eq!(doc["swagger"], "2.0");
    let defs = &doc["definitions"];
    for k in KINDS {
        let d = &defs[k.openapi_name];
        assert_eq!(
            d["x-kubernetes-group-version-kind"],
            json!([{"group": k.group, "version": k.version, "kind": k.kind}]),
            "{}",
            k.openapi_name
        );
        if k.allows("patch") {
            assert!(
                supports_query_param(&doc, k.group, k.version, k.kind, "fieldValidation"),
                "{} PATCH lacks fieldValidation",
                k.kind
            );
        }
    }
    let pods = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"];
    assert_eq!(pods["get"]["operationId"], "listCoreV1NamespacedPod");
    assert_eq!(pods["post"]["operationId"], "createCoreV1NamespacedPod");
    let pod = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
    assert_eq!(pod["patch"]["operationId"], "patchCoreV1NamespacedPod");
    assert_eq!(pod["patch"]["x-kubernetes-action"], "patch");
    assert!(doc["paths"]["/api/v1/pods"]["get"]["operationId"] == "listCoreV1PodForAllNamespaces");
    assert_eq!(
        doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["put"]
            ["x-kubernetes-group-version-kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(
        doc["paths"]["/api/v1/nodes/{name}"]["get"]["operationId"],
        "readCoreV1Node"
    );
    assert_eq!(
        doc["paths"]["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"]["get"]
            ["operationId"],
        "listCoordinationV1NamespacedLease"
    );
    let exec = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/exec"];
    assert_eq!(exec["post"]["x-kubernetes-action"], "connect");
    assert_eq!(
        exec["get"]["x-kubernetes-group-version-kind"]["kind"],
        "PodExecOptions"
    );
    assert_eq!(
        doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/portforward"]["get"]
            ["x-kubernetes-group-version-kind"]["kind"],
        "PodPortForwardOptions"
    );
    refs_resolve(&doc, "#/definitions/", defs);
    let back: Value = serde_json::from_slice(v2_bytes()).expect("bytes are JSON");
    assert_eq!(back, doc);
    assert!(!v2_hash().is_empty());
}

#[test]
fn patch_strategy_extensions_are_published() {
    let doc = v2();
    let c = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(c["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
    let v = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
    assert_eq!(v["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let f = &doc["definitions"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
        ["finalizers"];
    assert_eq!(f["x-kubernetes-patch-strategy"], "merge");
    assert!(f.get("x-kubernetes-patch-merge-key").is_none());
    let t = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["tolerations"];
    assert!(t.get("x-kubernetes-patch-strategy").is_none());

    let apps = v3_group_version("apis/apps/v1").expect("apps/v1");
    let s = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
        ["strategy"];
    assert_eq!(s["x-kubernetes-patch-strategy"], "retainKeys");
    assert_eq!(
        s["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}])
    );
}

#[test]
fn v3_index_and_group_versions() {
    let index = v3_index();
    let paths = index["paths"].as_object().expect("paths");
    for (g, v) in crate::kinds::group_versions() {
        let key = gv_path(g, v);
        let url = paths[&key]["serverRelativeURL"].as_str().expect("url");
        let (bytes, hash) = v3_group_version_bytes(&key).expect("served");
        assert_eq!(url, format!("/openapi/v3/{key}?hash={hash}"));
        // The URL as the client sends it finds the same document.
        assert_eq!(
            v3_group_version_bytes(url).map(|(b, _)| b.len()),
            Some(bytes.len())
        );
        let doc: Value = serde_json::from_slice(bytes).expect("json");
        assert_eq!(doc["openapi"], "3.0.0");
        refs_resolve(&doc, "#/components/schemas/", &doc["components"]["schemas"]);
        for k in crate::kinds::in_group_version(g, v) {
            let schema = &doc["components"]["schemas"][k.openapi_name];
            assert_eq!(
                schema["x-kubernetes-group-version-kind"][0]["kind"], k.kind,
                "{key}"
            );
            if k.allows("patch") {
                assert!(supports_query_param(&doc, g, v, k.kind, "fieldValidation"));
                assert!(!supports_query_param(&doc, g, v, k.kind, "nope"));
            }
        }
    }
    assert!(v3_group_version("apis/nope/v1").is_none());
    let core = v3_group_version("/api/v1").expect("core");
    // Request bodies and responses are in the v3 shape.
    let post = &core["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
    assert_eq!(
        post["requestBody"]["content"]["*/*"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.ConfigMap"
    );
    assert_eq!(
        post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.ConfigMap"
    );
    let fv = post["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .find(|p| p["name"] == "fieldValidation")
        .expect("fieldValidation");
    assert_eq!(fv["schema"]["type"], "string");
    // Only the group's own kinds (and what they reference) are in a group's document.
    assert!(core["components"]["schemas"]
        .get("io.k8s.api.apps.v1.Deployment")
        .is_none());
}

#[test]
fn explain_can_walk_from_a_kind_to_nested_field_descriptions() {
    // What `kubectl explain deployment.spec.template.spec.containers.image` does.
    let doc = v3_group_version("apis/apps/v1").expect("apps/v1");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let (_, deploy) = schemas
        .iter()
        .find(|(_, s)| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|a| a.iter().any(|g| g["kind"] == "Deployment"))
        })
        .expect("Deployment by GVK");
    let follow = |s: &Value| -> Value {
        let r = s["allOf"][0]["$ref"]
            .as_str()
            .or(s["$ref"].as_str())
            .or(s["items"]["allOf"][0]["$ref"].as_str())
            .or(s["items"]["$ref"].as_str())
            .expect("a reference");
        schemas[r.trim_start_matches("#/components/schemas/")].clone()
    };
    let spec = follow(&deploy["properties"]["spec"]);
    let template = follow(&spec["properties"]["template"]);
    let pod_spec = follow(&template["properties"]["spec"]);
    let container = follow(&pod_spec["properties"]["containers"]);
    let image = &container["properties"]["image"];
    assert_eq!(image["type"], "string");
    assert!(image["description"]
        .as_str()
        .is_some_and(|d| d.contains("image")));
    assert!(deploy["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
}

const WIDGET: Kind = Kind {
    group: "test.example.com",
    version: "v1",
    kind: "Widget",
    plural: "widgets",
    singular: "widget",
    namespaced: true,
    verbs: crate::kinds::CRUD,
    short_names: &[],
    categories: &[],
    subresources: &["status", "scale"],
    openapi_name: "",
};

fn widget_schema(size_doc: &str) -> Value {
    json!({"type": "object", "description": "A Widget is a thing.", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "description": size_doc, "minimum": 1},
            "note": {"type": "string", "nullable": true},
        }},
    }})
}

#[test]
fn custom_kinds_get_a_group_version_document_and_v2_definitions() {
    let schema = widget_schema("How big it is.");
    let docs = Documents::with_custom(&[CustomVersion {
        kind: &WIDGET,
        schema: Some(&schema),
    }]);
    let index: Value = serde_json::from_slice(docs.v3_index_bytes()).unwrap();
    let url = index["paths"]["apis/test.example.com/v1"]["serverRelativeURL"]
        .as_str()
        .expect("the custom group/version is in the index");
    // The built-in group/versions are still there, with the built-in documents' hashes.
    assert_eq!(
        index["paths"]["apis/apps/v1"],
        v3_index()["paths"]["apis/apps/v1"]
    );
    assert_eq!(
        docs.v3_group_version_bytes("apis/apps/v1").map(|(_, h)| h),
        v3_group_version_bytes("apis/apps/v1").map(|(_, h)| h)
    );
    let (bytes, hash) = docs.v3_group_version_bytes(url).expect("served");
    assert_eq!(
        docs.v3_url("apis/test.example.com/v1").as_deref(),
        Some(url)
    );
    assert!(url.ends_with(&format!("?hash={hash}")));
    let doc: Value = serde_json::from_slice(bytes).unwrap();
    let schemas = &doc["components"]["schemas"];
    refs_resolve(&doc, "#/components/schemas/", schemas);
    let w = &schemas["com.example.test.v1.Widget"];
    assert_eq!(
        w["x-kubernetes-group-version-kind"],
        json!([{"group": "test.example.com", "kind": "Widget", "version": "v1"}])
    );
    assert_eq!(w["description"], "A Widget is a thing.");
    assert_eq!(
        w["properties"]["spec"]["properties"]["size"]["description"],
        "How big it is."
    );
    // The whole schema in v3 (nullable kept), metadata resolved to the built-in ObjectMeta.
    assert_eq!(
        w["properties"]["spec"]["properties"]["note"]["nullable"],
        true
    );
    assert_eq!(
        w["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    for name in [
        "com.example.test.v1.WidgetList",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.api.autoscaling.v1.Scale",
    ] {
        assert!(schemas.get(name).is_some(), "{name} missing");
    }
    assert!(schemas.get("io.k8s.api.core.v1.Pod").is_none());
    // kubectl finds server-side field validation, and no strategic merge patch.
    assert!(supports_query_param(
        &doc,
        "test.example.com",
        "v1",
        "Widget",
        "fieldValidation"
    ));
    let patch =
        &doc["paths"]["/apis/test.example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    let consumes: Vec<&String> = patch["requestBody"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert!(
        !consumes.iter().any(|c| c.contains("strategic")),
        "{consumes:?}"
    );
    assert_eq!(
        patch["operationId"],
        "patchTestExampleComV1NamespacedWidget"
    );
    assert!(doc["paths"]
        .get("/apis/test.example.com/v1/namespaces/{namespace}/widgets/{name}/scale")
        .is_some());

    // /openapi/v2: the built-in document plus the kind's (pruned for v2) definitions.
    let v2: Value = serde_json::from_slice(docs.v2_bytes()).unwrap();
    let d = &v2["definitions"]["com.example.test.v1.Widget"];
    assert_eq!(d["properties"]["spec"]["properties"]["note"], json!({}));
    assert!(v2["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
    assert!(v2["paths"]["/apis/test.example.com/v1/widgets"].is_object());
    assert!(v2["paths"]["/api/v1/namespaces/{namespace}/pods"].is_object());
    refs_resolve(&v2, "#/definitions/", &v2["definitions"]);
    assert_ne!(docs.v2_hash(), v2_hash());

    // A changed CRD changes the hash; the same CRD gives the same bytes.
    let again = Documents::with_custom(&[CustomVersion {
        kind: &WIDGET,
        schema: Some(&schema),
    }]);
    assert_eq!(
        again.v3_group_version_bytes("apis/test.example.com/v1"),
        Some((bytes, hash))
    );
    let changed_schema = widget_schema("How big it is, in metres.");
    let changed = Documents::with_custom(&[CustomVersion {
        kind: &WIDGET,
        schema: Some(&changed_schema),
    }]);
    let (_, new_hash) = changed
        .v3_group_version_bytes("apis/test.example.com/v1")
        .unwrap();
    assert_ne!(new_hash, hash);
    assert_ne!(changed.v3_index_bytes(), docs.v3_index_bytes());
    // Without it, the group/version is not served.
    let none = Documents::with_custom(&[]);
    assert!(none
        .v3_group_version_bytes("apis/test.example.com/v1")
        .is_none());
    assert_eq!(none.v3_index_bytes(), v3_index_bytes());
    assert!(builtin()
        .v3_group_version_bytes("apis/test.example.com/v1")
        .is_none());
}
