use super::*;
use proptest::prelude::*;
use serde_json::json;

const POD: &str = "io.k8s.api.core.v1.Pod";
const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

fn smp(ty: &str, original: Value, patch: Value) -> Value {
    apply_patch(
        ty,
        &original,
        PatchType::StrategicMerge,
        patch.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("patch {patch} failed: {e}"))
}

fn smp_err(ty: &str, original: Value, patch: Value) -> String {
    match apply_patch(
        ty,
        &original,
        PatchType::StrategicMerge,
        patch.to_string().as_bytes(),
    ) {
        Ok(v) => panic!("patch {patch} unexpectedly applied: {v}"),
        Err(e) => e.to_string(),
    }
}

/// A pod as the API server stores it after defaulting.
fn live_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"},
                     "finalizers": ["a.example.com/x"]},
        "spec": {
            "containers": [
                {"name": "app", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                 "terminationMessagePath": "/dev/termination-log",
                 "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]},
                {"name": "sidecar", "image": "busybox", "command": ["sleep", "inf"]}
            ],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}],
            "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"
        }
    })
}

#[test]
fn containers_merge_by_name() {
    // kubectl patch pod web -p '{"spec":{"containers":[{"name":"app","image":"nginx:1.26"}]}}'
    let out = smp(
        POD,
        live_pod(),
        json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.26"}]}}),
    );
    let cs = out["spec"]["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["name"], "app");
    assert_eq!(cs[0]["image"], "nginx:1.26");
    assert_eq!(cs[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(cs[0]["env"].as_array().map(Vec::len), Some(2));
    assert_eq!(cs[1]["name"], "sidecar");
}

#[test]
fn new_list_element_goes_first_without_an_order_directive() {
    // Without $setElementOrder, kube places patch-only elements before the live ones that
    // follow them (the patch list's order wins where the live list says nothing).
    let out = smp(
        POD,
        live_pod(),
        json!({"spec": {"containers": [{"name": "new", "image": "x"}]}}),
    );
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["new", "app", "sidecar"]);
}

#[test]
fn set_element_order_places_elements() {
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}, {"name": "new"}],
        "containers": [{"name": "new", "image": "x"}]
    }});
    let out = smp(POD, live_pod(), patch);
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["sidecar", "app", "new"]);
    // The order directive never reaches the object.
    assert!(out["spec"].get("$setElementOrder/containers").is_none());
}

#[test]
fn kubectl_apply_removing_an_env_var_and_a_field() {
    // Last applied had env A and B and activeDeadlineSeconds; the new file drops B and the
    // deadline and bumps the image. kubectl apply's three-way patch:
    let mut live = live_pod();
    live["spec"]["activeDeadlineSeconds"] = json!(30);
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "activeDeadlineSeconds": null,
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}],
                "env": [{"$patch": "delete", "name": "B"}],
                "image": "nginx:1.26",
                "name": "app"
            }]
        }
    });
    let out = smp(POD, live.clone(), patch.clone());
    let app = &out["spec"]["containers"][0];
    assert_eq!(app["image"], "nginx:1.26");
    assert_eq!(app["env"], json!([{"name": "A", "value": "1"}]));
    // Server-defaulted fields the file never set survive.
    assert_eq!(app["terminationMessagePath"], "/dev/termination-log");
    assert!(out["spec"].get("activeDeadlineSeconds").is_none());
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{}\n"
    );
    // Applying the same patch again changes nothing (kubectl apply run twice).
    assert_eq!(smp(POD, out.clone(), patch), out);
}

#[test]
fn kubectl_apply_changing_a_volume_source_uses_retain_keys() {
    // configMap volume replaced by a secret volume of the same name.
    let patch = json!({"spec": {
        "$setElementOrder/volumes": [{"name": "cfg"}],
        "volumes": [{"$retainKeys": ["name", "secret"], "configMap": null,
                     "name": "cfg", "secret": {"secretName": "s"}}]
    }});
    let out = smp(POD, live_pod(), patch);
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "cfg", "secret": {"secretName": "s"}}])
    );
    // A patch field missing from $retainKeys is refused.
    let bad =
        json!({"spec": {"volumes": [{"$retainKeys": ["name"], "name": "cfg", "secret": {}}]}});
    assert!(smp_err(POD, live_pod(), bad).contains("$retainKeys"));
}

#[test]
fn deployment_strategy_switch_drops_rolling_update() {
    let live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate",
                 "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
    let out = smp(
        DEPLOY,
        live,
        json!({"spec": {"replicas": null, "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    assert!(out["spec"].get("replicas").is_none());
    // The pod template inside a deployment is walked too: containers still merge by name.
    let out = smp(
        DEPLOY,
        out,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "y"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn lists_without_a_strategy_are_replaced() {
    let out = smp(
        POD,
        live_pod(),
        json!({"spec": {"tolerations": [{"key": "c", "operator": "Exists"}],
                        "containers": [{"name": "sidecar", "command": ["true"]}]}}),
    );
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "c", "operator": "Exists"}])
    );
    assert_eq!(out["spec"]["containers"][1]["command"], json!(["true"]));
}

#[test]
fn primitive_merge_lists_and_delete_from_primitive_list() {
    let out = smp(
        POD,
        live_pod(),
        json!({"metadata": {"finalizers": ["b.example.com/y", "a.example.com/x"]}}),
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["b.example.com/y", "a.example.com/x"])
    );
    let out = smp(
        POD,
        out,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/x"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b.example.com/y"]));
    // kubectl apply removing a finalizer from the file sends both directives.
    let out = smp(
        POD,
        live_pod(),
        json!({"metadata": {"$setElementOrder/finalizers": [],
                            "$deleteFromPrimitiveList/finalizers": ["a.example.com/x"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!([]));
    // Deleting from a list that is not there is a no-op, not an addition.
    let out = smp(
        POD,
        json!({"metadata": {"name": "x"}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    );
    assert_eq!(out, json!({"metadata": {"name": "x"}}));
}

#[test]
fn patch_directives_replace_and_delete() {
    // Replace the whole container list.
    let out = smp(
        POD,
        live_pod(),
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "only", "image": "x"}])
    );
    // Delete one container by name.
    let out = smp(
        POD,
        live_pod(),
        json!({"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}}),
    );
    assert_eq!(out["spec"]["containers"].as_array().map(Vec::len), Some(1));
    // Replace a map.
    let out = smp(
        POD,
        live_pod(),
        json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));
    // Delete a map's contents.
    let out = smp(
        POD,
        live_pod(),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({}));
    // `$patch: merge` on a map is the default behaviour.
    let out = smp(
        POD,
        live_pod(),
        json!({"metadata": {"labels": {"$patch": "merge", "x": "y"}}}),
    );
    assert_eq!(out["metadata"]["labels"]["app"], "web");
    assert_eq!(out["metadata"]["labels"]["x"], "y");
}

#[test]
fn other_merge_keys() {
    let out = smp(
        POD,
        live_pod(),
        json!({"spec": {"containers": [{"name": "app",
            "ports": [{"containerPort": 443, "protocol": "TCP"}, {"containerPort": 80, "name": "http"}],
            "volumeMounts": [{"mountPath": "/etc/cfg", "readOnly": true}]}]}}),
    );
    let app = &out["spec"]["containers"][0];
    assert_eq!(
        app["ports"],
        json!([{"containerPort": 443, "protocol": "TCP"},
               {"containerPort": 80, "protocol": "TCP", "name": "http"}])
    );
    assert_eq!(
        app["volumeMounts"],
        json!([{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}])
    );

    let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"},
                                          {"port": 443, "targetPort": 8443}]}});
    let out = smp(
        "io.k8s.api.core.v1.Service",
        svc,
        json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}),
    );
    assert_eq!(out["spec"]["ports"][0]["port"], 80);
    assert_eq!(out["spec"]["ports"][1]["targetPort"], 9443);

    let owners = json!({"metadata": {"ownerReferences": [
        {"uid": "1", "kind": "ReplicaSet", "name": "a"}, {"uid": "2", "kind": "ReplicaSet", "name": "b"}]}});
    let out = smp(
        POD,
        owners,
        json!({"metadata": {"ownerReferences": [{"uid": "2", "blockOwnerDeletion": true}]}}),
    );
    assert_eq!(
        out["metadata"]["ownerReferences"][1]["blockOwnerDeletion"],
        true
    );
    assert_eq!(out["metadata"]["ownerReferences"][0]["name"], "a");
}

#[test]
fn status_conditions_merge_by_type() {
    // What a kubelet's status patch looks like.
    let live = json!({"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "False"}]}});
    let out = smp(
        POD,
        live,
        json!({"status": {
            "$setElementOrder/conditions": [{"type": "Initialized"}, {"type": "Ready"}, {"type": "PodScheduled"}],
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "phase": "Running"}}),
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
               {"type": "PodScheduled", "status": "True"}])
    );
    let node = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}],
                                 "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let out = smp(
        "io.k8s.api.core.v1.Node",
        node,
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                          "addresses": [{"type": "Hostname", "address": "n1"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(2));
    let d = json!({"status": {"conditions": [{"type": "Available", "status": "False"}]}});
    let out = smp(
        DEPLOY,
        d,
        json!({"status": {"conditions": [{"type": "Progressing", "status": "True"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn nulls_and_new_values() {
    let out = smp(
        POD,
        live_pod(),
        json!({"metadata": {"labels": {"tier": null, "new": "1"},
                            "annotations": {"a": "b", "gone": null}},
               "spec": {"nodeSelector": {"disk": "ssd", "x": null}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "1"}));
    // Nulls inside values the original did not have are dropped, not stored.
    assert_eq!(out["metadata"]["annotations"], json!({"a": "b"}));
    assert_eq!(out["spec"]["nodeSelector"], json!({"disk": "ssd"}));
    // A value of another type replaces the original.
    let out = smp(POD, live_pod(), json!({"spec": {"containers": "oops"}}));
    assert_eq!(out["spec"]["containers"], "oops");
}

#[test]
fn bad_patches_are_errors() {
    let cases = [
        json!(["not", "an", "object"]),
        json!({"spec": {"containers": [{"image": "no-name"}]}}),
        json!({"spec": {"containers": [{"$patch": "merge"}]}}),
        json!({"spec": {"containers": [{"$patch": "bogus", "name": "app"}]}}),
        json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        json!({"metadata": {"labels": {"$patch": "bogus"}}}),
        json!({"spec": {"$unknown": 1}}),
        json!({"spec": {"$setElementOrder/containers": {"name": "app"}}}),
        json!({"spec": {"$retainKeys": "name"}}),
        json!({"metadata": {"finalizers": [{"a": 1}]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
        json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                        "containers": [{"name": "app"}, {"name": "sidecar"}]}}),
    ];
    for p in cases {
        let e = smp_err(POD, live_pod(), p.clone());
        assert!(!e.is_empty(), "{p}");
    }
    let e = apply_patch(POD, &live_pod(), PatchType::StrategicMerge, b"{nope").expect_err("json");
    assert!(matches!(e, PatchError::Malformed(_)));
    let e = apply_patch(POD, &live_pod(), PatchType::Apply, b"{}").expect_err("apply");
    assert!(matches!(e, PatchError::Unsupported(PatchType::Apply)));
}

#[test]
fn unknown_types_merge_maps_and_replace_lists() {
    let out = smp(
        "io.example.v1.Widget",
        json!({"spec": {"list": [1, 2], "m": {"a": 1}}}),
        json!({"spec": {"list": [3], "m": {"b": 2}}}),
    );
    assert_eq!(out, json!({"spec": {"list": [3], "m": {"a": 1, "b": 2}}}));
}

#[test]
fn merge_patch_rfc7386() {
    let out = apply_patch(
        POD,
        &live_pod(),
        PatchType::Merge,
        br#"{"metadata":{"labels":{"tier":null}},"spec":{"containers":[{"name":"only"}]}}"#,
    )
    .expect("merge");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(out["spec"]["containers"], json!([{"name": "only"}]));
}

#[test]
fn json_patch_rfc6902() {
    let out = apply_patch(
        POD,
        &live_pod(),
        PatchType::Json,
        br#"[{"op":"replace","path":"/spec/containers/0/image","value":"x"},
             {"op":"add","path":"/metadata/labels/new","value":"1"},
             {"op":"remove","path":"/spec/tolerations/0"},
             {"op":"test","path":"/metadata/name","value":"web"}]"#,
    )
    .expect("json patch");
    assert_eq!(out["spec"]["containers"][0]["image"], "x");
    assert_eq!(out["metadata"]["labels"]["new"], "1");
    assert_eq!(out["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
    for bad in [
        &br#"[{"op":"test","path":"/metadata/name","value":"other"}]"#[..],
        br#"[{"op":"remove","path":"/spec/nope"}]"#,
        br#"[{"op":"bogus","path":"/"}]"#,
        br#"{"op":"add"}"#,
    ] {
        assert!(apply_patch(POD, &live_pod(), PatchType::Json, bad).is_err());
    }
}

#[test]
fn content_types() {
    for t in [
        PatchType::Json,
        PatchType::Merge,
        PatchType::StrategicMerge,
        PatchType::Apply,
    ] {
        assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
    }
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
        Some(PatchType::StrategicMerge)
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
}

#[test]
fn patch_meta_table_names_real_fields() {
    // Every entry must name a field that exists in the generated schemas, or it would
    // silently never apply.
    let defs = crate::schema::definitions();
    for (ty, field, meta) in all_patch_meta() {
        let def = defs.get(ty).unwrap_or_else(|| panic!("no definition {ty}"));
        let prop = def
            .pointer(&format!("/properties/{field}"))
            .unwrap_or_else(|| panic!("{ty} has no field {field}"));
        if meta.merge {
            assert_eq!(prop["type"], "array", "{ty}.{field}");
        }
        if let Some(k) = meta.merge_key {
            let item = crate::schema::Cursor::root(ty).field(field).items();
            let props = item.schema.and_then(|s| s.get("properties"));
            assert!(
                props.is_some_and(|p| p.get(k).is_some()),
                "{ty}.{field} elements have no merge key {k}"
            );
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "spec",
        "metadata",
        "containers",
        "name",
        "env",
        "image",
        "ports",
        "containerPort",
        "volumes",
        "finalizers",
        "labels",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$setElementOrder/env",
        "$deleteFromPrimitiveList/finalizers",
        "$deleteFromPrimitiveList/env",
        "strategy",
        "type",
        "conditions",
        "status",
        "value",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec!["a", "b", "delete", "replace", "merge", "name", "app"])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn strategic_merge_never_panics(original in arb_json(), patch in arb_json()) {
        for ty in [POD, DEPLOY, "io.k8s.api.core.v1.Service", "nope"] {
            let body = patch.to_string();
            for t in [PatchType::StrategicMerge, PatchType::Merge, PatchType::Json] {
                let _ = apply_patch(ty, &original, t, body.as_bytes());
            }
            // Also with the patch nested where the typed walk finds merge lists.
            let nested = json!({"spec": {"containers": [patch.clone()]}});
            let _ = apply_patch(ty, &live_pod(), PatchType::StrategicMerge, nested.to_string().as_bytes());
            let _ = apply_patch(ty, &json!({"spec": original.clone()}), PatchType::StrategicMerge,
                json!({"spec": patch.clone()}).to_string().as_bytes());
        }
    }

    /// A body that is not JSON is `Malformed` for every patch flavour (the API server's 400),
    /// never applied and never another error.
    #[test]
    fn malformed_bodies_are_errors(body in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assume!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
        for t in [PatchType::StrategicMerge, PatchType::Merge, PatchType::Json] {
            let r = apply_patch(POD, &live_pod(), t, &body);
            prop_assert!(matches!(r, Err(PatchError::Malformed(_))), "{:?} of {:?}: {:?}", t, body, r);
        }
    }
}

#[test]
fn kubectl_apply_deployment_twice_after_removing_fields() {
    // Live object after `kubectl apply -f v1.yaml` (server defaults filled in).
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "env": "dev"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "v1"}},
        "spec": {
            "replicas": 2, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "web", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "1"}],
                                "terminationMessagePath": "/dev/termination-log"}],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}}
        }
    });
    // v2.yaml drops the env list and the env label and scales to 3: kubectl's three-way
    // patch (last-applied vs file vs live).
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "v2"},
                     "labels": {"env": null}},
        "spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"env": null, "name": "web"}]}}}
    });
    let out = smp(DEPLOY, live.clone(), patch);
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert!(c.get("env").is_none());
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(out["spec"]["replicas"], 3);
    assert_eq!(out["spec"]["strategy"], live["spec"]["strategy"]);

    // v3.yaml adds a sidecar before the web container and a second port: order follows the file.
    let patch = json!({"spec": {"template": {"spec": {
    "$setElementOrder/containers": [{"name": "log"}, {"name": "web"}],
    "containers": [
        {"name": "log", "image": "busybox"},
        {"$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
         "name": "web", "ports": [{"containerPort": 443}]}
    ]}}}});
    let out = smp(DEPLOY, out, patch);
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs[0]["name"], "log");
    assert_eq!(cs[1]["name"], "web");
    assert_eq!(
        cs[1]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}])
    );
}

#[test]
fn set_element_order_keeps_server_only_elements_in_place() {
    // Finalizers added by controllers (server-only) stay where they were relative to the
    // ones the file manages.
    let live = json!({"metadata": {"finalizers": ["ctrl/a", "mine/x", "ctrl/b"]}});
    let out = smp(
        POD,
        live,
        json!({"metadata": {"$setElementOrder/finalizers": ["mine/y", "mine/x"], "finalizers": ["mine/y"]}}),
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["mine/y", "ctrl/a", "mine/x", "ctrl/b"])
    );
}

/// Cases from apimachinery's strategic merge patch fixtures (the "current + three-way
/// patch → result" half), with their `mergingList` played by pod containers (merge key
/// name), `mergeItemPtr` by init containers and `mergingIntList` by finalizers.
#[test]
fn apimachinery_fixture_cases() {
    fn c(names: &[&str]) -> Value {
        Value::Array(names.iter().map(|n| json!({"name": n})).collect())
    }
    let spec = |v: Value| json!({"spec": v});
    // "add map and delete map from merging list with conflict": the live-only element
    // lands first because kube's in-place merge rewrote the live order it sorts by.
    let out = smp(
        POD,
        spec(json!({"containers": [{"name": "1", "other": "a"}, {"name": "4", "other": "c"}]})),
        spec(json!({"$setElementOrder/containers": c(&["2", "3"]),
                    "containers": [{"name": "2"}, {"name": "3"}, {"name": "1", "$patch": "delete"}]})),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "4", "other": "c"}, {"name": "2"}, {"name": "3"}])
    );

    // "add an item in a list and preserve order".
    let out = smp(
        POD,
        spec(
            json!({"containers": [{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}]}),
        ),
        spec(json!({"$setElementOrder/containers": c(&["3", "1", "2"]),
                    "containers": [{"name": "3", "value": "3"}]})),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "3", "value": "3"}, {"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}])
    );

    // "nested patch merge with empty list".
    let out = smp(
        POD,
        spec(json!({"containers": c(&["hello2"])})),
        spec(
            json!({"$setElementOrder/containers": c(&["hello", "doesntexist"]), "containers": c(&["hello"])}),
        ),
    );
    assert_eq!(out["spec"]["containers"], c(&["hello", "hello2"]));

    // "delete and reorder in one list, reorder in another".
    let out = smp(
        POD,
        spec(json!({"containers": c(&["a", "b"]), "initContainers": c(&["c", "d"])})),
        spec(
            json!({"$setElementOrder/containers": c(&["b"]), "$setElementOrder/initContainers": c(&["d", "c"]),
                    "containers": [{"$patch": "delete", "name": "a"}]}),
        ),
    );
    assert_eq!(out["spec"]["containers"], c(&["b"]));
    assert_eq!(out["spec"]["initContainers"], c(&["d", "c"]));

    // "$setElementOrder contains item that is not present in the list to be merged".
    let out = smp(
        POD,
        spec(json!({"containers": c(&["1", "3"])})),
        spec(json!({"$setElementOrder/containers": c(&["3", "2", "1"]),
                    "containers": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]})),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "3", "value": "3"}, {"name": "1", "value": "1"}])
    );

    // "behavior of set element order for a merging list with duplicate".
    let out = smp(
        POD,
        spec(
            json!({"containers": [{"name": "1"}, {"name": "2", "value": "dup1"}, {"name": "3"},
                                    {"name": "2", "value": "dup2"}, {"name": "4"}]}),
        ),
        spec(json!({"$setElementOrder/containers": c(&["2", "1", "4", "3", "2"])})),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "2", "value": "dup1"}, {"name": "2", "value": "dup2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}])
    );

    // Primitive lists: "delete items in lists of scalars" (with and without reordering) and
    // "$setElementOrder contains item that is not present in the int list".
    let meta = |v: Value| json!({"metadata": v});
    let out = smp(
        POD,
        meta(json!({"finalizers": ["1", "2", "3"]})),
        meta(
            json!({"$setElementOrder/finalizers": ["2", "1"], "$deleteFromPrimitiveList/finalizers": ["3"]}),
        ),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["2", "1"]));
    let out = smp(
        POD,
        meta(json!({"finalizers": ["1", "3"]})),
        meta(json!({"$setElementOrder/finalizers": ["3", "2", "1"]})),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["3", "1"]));
}

/// More of apimachinery's "current + three-way patch → result" fixtures about order
/// (containers stand in for `mergingList`, finalizers for `mergingIntList`).
#[test]
fn apimachinery_order_fixtures() {
    // (current names, $setElementOrder, patch list, expected names)
    type Names = &'static [&'static str];
    let maps: &[(Names, Names, Value, Names)] = &[
        (
            &["1", "2"],
            &["1", "4", "2", "3"],
            json!([{"name": "4"}, {"name": "3"}]),
            &["1", "4", "2", "3"],
        ),
        (
            &["1", "2", "3"],
            &["2", "1"],
            json!([{"name": "3", "$patch": "delete"}]),
            &["2", "1"],
        ),
        (
            &["1", "2", "3"],
            &["2", "3", "1"],
            json!([{"name": "3", "value": "x"}]),
            &["2", "3", "1"],
        ),
        (
            &["1", "2", "3"],
            &["4", "2", "1"],
            json!([{"name": "4"}, {"name": "3", "$patch": "delete"}]),
            &["4", "2", "1"],
        ),
        (
            &["1", "3", "4", "2"],
            &["4", "2", "3", "1"],
            Value::Null,
            &["4", "2", "3", "1"],
        ),
        (
            &["1", "3", "4", "2", "9"],
            &["4", "2", "3", "1"],
            Value::Null,
            &["4", "2", "3", "1", "9"],
        ),
        (
            &["1", "2", "9", "3", "4"],
            &["2", "1", "4", "3"],
            Value::Null,
            &["2", "1", "9", "4", "3"],
        ),
        (
            &["1", "2", "7", "9", "8", "3", "4"],
            &["2", "1", "4", "3"],
            Value::Null,
            &["2", "1", "7", "9", "8", "4", "3"],
        ),
    ];
    for (current, order, list, want) in maps {
        let mut spec = json!({
            "$setElementOrder/containers": order.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()
        });
        if !list.is_null() {
            spec["containers"] = list.clone();
        }
        let live = json!({"spec": {"containers": current.iter().map(|n| json!({"name": n, "live": true})).collect::<Vec<_>>()}});
        let out = smp(POD, live, json!({"spec": spec}));
        let got: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            &got, want,
            "current {current:?}, order {order:?}, list {list}"
        );
    }
    let ints: &[(Names, Names, Names, Names)] = &[
        (&["1", "2"], &["3", "1", "2"], &["3"], &["3", "1", "2"]),
        (
            &["1", "2"],
            &["1", "4", "2", "3"],
            &["4", "3"],
            &["1", "4", "2", "3"],
        ),
    ];
    for (current, order, list, want) in ints {
        let out = smp(
            POD,
            json!({"metadata": {"finalizers": current}}),
            json!({"metadata": {"$setElementOrder/finalizers": order, "finalizers": list}}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(want),
            "{current:?} {order:?}"
        );
    }
}
