use serde_json::{json, Value};

use super::*;

const CM: Option<&str> = Some("io.k8s.api.core.v1.ConfigMap");
const DEPLOY: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");

fn writer<'a>(manager: &'a str, openapi_name: Option<&'a str>) -> Writer<'a> {
    Writer {
        manager,
        api_version: "v1",
        time: "2026-01-01T00:00:00Z",
        openapi_name,
        scope: Scope::Whole,
    }
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "default", "uid": "u", "resourceVersion": "5",
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": data})
}

fn entry<'a>(managed: &'a [Value], manager: &str) -> &'a Value {
    managed
        .iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no entry for {manager} in {managed:#?}"))
}

#[test]
fn create_owns_what_the_writer_set() {
    let obj = cm(json!({"a": "1"}));
    let m = on_update(&[], None, &obj, &writer("kubectl-create", CM));
    assert_eq!(
        m,
        vec![
            json!({"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
            "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:a": {}}}})
        ]
    );
    // Labels are a map the create adds (owned with `.`), metadata a struct always there.
    let mut obj = obj;
    obj["metadata"]["labels"] = json!({"app": "web"});
    let m = on_update(&[], None, &obj, &writer("m", CM));
    assert_eq!(
        m[0]["fieldsV1"],
        json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}})
    );
}

#[test]
fn update_moves_changed_fields_and_drops_removed_ones() {
    let old = cm(json!({"a": "1", "b": "2"}));
    let m = on_update(&[], None, &old, &writer("creator", CM));
    // `editor` changes a, adds c and removes b.
    let new = cm(json!({"a": "9", "c": "3"}));
    let m = on_update(&m, Some(&old), &new, &writer("editor", CM));
    assert_eq!(entry(&m, "creator")["fieldsV1"], json!({"f:data": {}}));
    assert_eq!(
        entry(&m, "editor")["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:c": {}}})
    );
    // Writing the same value again changes nothing.
    let again = on_update(&m, Some(&new), &new, &writer("third", CM));
    assert_eq!(again, m);
    // A manager whose every field is gone loses its entry.
    let mut gone = new.clone();
    gone.as_object_mut().unwrap().remove("data");
    let m = on_update(&m, Some(&new), &gone, &writer("editor", CM));
    assert!(m.iter().all(|e| e["manager"] != "creator"), "{m:#?}");
}

#[test]
fn status_writes_are_recorded_with_their_subresource() {
    let old = json!({"metadata": {"name": "p"}, "spec": {"x": 1}, "status": {"phase": "Pending"}});
    let new = json!({"metadata": {"name": "p"}, "spec": {"x": 1}, "status": {"phase": "Running"}});
    let w = Writer {
        scope: Scope::Subresource("status"),
        ..writer("kubelet", None)
    };
    let m = on_update(&[], Some(&old), &new, &w);
    assert_eq!(m[0]["subresource"], "status");
    assert_eq!(m[0]["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
    // The main resource ignores status.
    let w = Writer {
        scope: Scope::Main,
        ..writer("kubectl", None)
    };
    assert!(on_update(&[], Some(&old), &new, &w).is_empty());
}

#[test]
fn apply_creates_and_owns_the_applied_fields() {
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "labels": {"app": "web"}}, "data": {"a": "1"}});
    let (obj, m) = apply(None, &[], &applied, false, &writer("kubectl", CM)).unwrap();
    assert_eq!(obj["data"], json!({"a": "1"}));
    assert_eq!(obj["metadata"]["name"], "x");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["operation"], "Apply");
    assert_eq!(
        m[0]["fieldsV1"],
        json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
}

#[test]
fn apply_conflicts_with_another_owner_unless_forced() {
    let live = cm(json!({"a": "1", "b": "2"}));
    let m = on_update(&[], None, &live, &writer("kubectl-create", CM));
    let applied = json!({"metadata": {"name": "x"}, "data": {"a": "2"}});
    let err = apply(Some(&live), &m, &applied, false, &writer("other", CM)).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.a"#
    );
    let causes = err.causes();
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".data.a");
    assert_eq!(
        causes[0].message,
        r#"conflict with "kubectl-create" using v1"#
    );

    let both = json!({"data": {"a": "2", "b": "3"}});
    let err = apply(Some(&live), &m, &both, false, &writer("other", CM)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using v1:\n- .data.a\n- .data.b"
    );

    let (obj, m) = apply(Some(&live), &m, &applied, true, &writer("other", CM)).unwrap();
    assert_eq!(obj["data"], json!({"a": "2", "b": "2"}));
    assert_eq!(
        entry(&m, "kubectl-create")["fieldsV1"],
        json!({"f:data": {".": {}, "f:b": {}}})
    );
    assert_eq!(
        entry(&m, "other")["fieldsV1"],
        json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(entry(&m, "other")["operation"], "Apply");
}

#[test]
fn applying_the_same_value_shares_ownership() {
    let live = cm(json!({"a": "1"}));
    let m = on_update(&[], None, &live, &writer("kubectl-create", CM));
    let applied = json!({"data": {"a": "1"}});
    let (obj, m) = apply(Some(&live), &m, &applied, false, &writer("other", CM)).unwrap();
    assert_eq!(obj["data"], json!({"a": "1"}));
    assert_eq!(
        entry(&m, "kubectl-create")["fieldsV1"],
        json!({"f:data": {".": {}, "f:a": {}}})
    );
    assert_eq!(
        entry(&m, "other")["fieldsV1"],
        json!({"f:data": {"f:a": {}}})
    );
    // A shared field the applier stops applying stays (the other owner still wants it).
    let (obj, m) = apply(
        Some(&obj),
        &m,
        &json!({"metadata": {"name": "x"}}),
        false,
        &writer("other", CM),
    )
    .unwrap();
    assert_eq!(obj["data"], json!({"a": "1"}));
    assert!(m.iter().all(|e| e["manager"] != "other"), "{m:#?}");
}

#[test]
fn fields_an_applier_drops_are_removed() {
    let applied = json!({"metadata": {"name": "x", "labels": {"app": "web", "tier": "fe"}},
        "data": {"a": "1", "b": "2"}});
    let (live, m) = apply(None, &[], &applied, false, &writer("kubectl", CM)).unwrap();
    // Someone else adds a field; the applier's next apply leaves it alone.
    let mut edited = live.clone();
    edited["data"]["c"] = json!("3");
    let m = on_update(&m, Some(&live), &edited, &writer("editor", CM));
    let applied = json!({"metadata": {"name": "x", "labels": {"app": "web"}}, "data": {"a": "1"}});
    let (obj, m) = apply(Some(&edited), &m, &applied, false, &writer("kubectl", CM)).unwrap();
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(obj["data"], json!({"a": "1", "c": "3"}));
    assert_eq!(
        entry(&m, "kubectl")["fieldsV1"],
        json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
    // Applying the same configuration again changes nothing, not even the time.
    let w = Writer {
        time: "2027-01-01T00:00:00Z",
        ..writer("kubectl", CM)
    };
    let (again, m2) = apply(Some(&obj), &m, &applied, false, &w).unwrap();
    assert_eq!(again, obj);
    assert_eq!(m2, m);
}

fn deployment(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}}}})
}

#[test]
fn containers_are_an_associative_list_by_name() {
    let w = Writer {
        api_version: "apps/v1",
        ..writer("kubectl", DEPLOY)
    };
    let applied =
        deployment(json!([{"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]}]));
    let (live, m) = apply(None, &[], &applied, false, &w).unwrap();
    assert_eq!(
        m[0]["fieldsV1"],
        json!({"f:spec": {"f:selector": {}, "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {},
                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}})
    );
    // A sidecar added by another manager survives the applier's changes to its container.
    let mut live2 = live.clone();
    live2["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "s:1"}));
    let m = on_update(
        &m,
        Some(&live),
        &live2,
        &Writer {
            manager: "injector",
            ..w
        },
    );
    assert_eq!(
        entry(&m, "injector")["fieldsV1"],
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"side\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
    );
    let applied =
        deployment(json!([{"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]}]));
    let (obj, _) = apply(Some(&live2), &m, &applied, false, &w).unwrap();
    let cs = &obj["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs[0]["image"], "a:2");
    assert_eq!(cs[1]["name"], "side");
    // Changing the sidecar's image is a conflict with the injector, named by key.
    let applied =
        deployment(json!([{"name": "app", "image": "a:2"}, {"name": "side", "image": "s:2"}]));
    let err = apply(Some(&live2), &m, &applied, false, &w).unwrap_err();
    assert_eq!(
        err.conflicts,
        vec![Conflict {
            manager: r#""injector" using apps/v1"#.into(),
            field: r#".spec.template.spec.containers[name="side"].image"#.into()
        }]
    );
}

#[test]
fn atomic_lists_are_owned_and_replaced_whole() {
    let w = Writer {
        api_version: "apps/v1",
        ..writer("kubectl", DEPLOY)
    };
    let applied = deployment(json!([{"name": "app", "image": "a", "args": ["x", "y"]}]));
    let (live, m) = apply(None, &[], &applied, false, &w).unwrap();
    let key = "k:{\"name\":\"app\"}";
    assert_eq!(
        m[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"][key]["f:args"],
        json!({})
    );
    let applied = deployment(json!([{"name": "app", "image": "a", "args": ["z"]}]));
    let (obj, _) = apply(Some(&live), &m, &applied, false, &w).unwrap();
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["z"])
    );
    // An update of one element is a change of the whole list.
    let mut edited = obj.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["z", "w"]);
    let m = on_update(
        &m,
        Some(&obj),
        &edited,
        &Writer {
            manager: "editor",
            ..w
        },
    );
    let err = apply(Some(&edited), &m, &applied, false, &w).unwrap_err();
    assert_eq!(
        err.conflicts[0].field,
        r#".spec.template.spec.containers[name="app"].args"#
    );
}

#[test]
fn set_lists_and_unknown_kinds() {
    // finalizers: a set of strings.
    let old = json!({"metadata": {"name": "x", "finalizers": ["a"]}});
    let new = json!({"metadata": {"name": "x", "finalizers": ["a", "b"]}});
    let m = on_update(&[], Some(&old), &new, &writer("m", CM));
    assert_eq!(
        m[0]["fieldsV1"],
        json!({"f:metadata": {"f:finalizers": {"v:\"b\"": {}}}})
    );
    // Without a schema maps are granular and lists atomic.
    let old = json!({"spec": {"a": 1, "l": [1]}});
    let new = json!({"spec": {"a": 2, "l": [1, 2]}});
    let m = on_update(&[], Some(&old), &new, &writer("m", None));
    assert_eq!(m[0]["fieldsV1"], json!({"f:spec": {"f:a": {}, "f:l": {}}}));
}

#[test]
fn explicit_managed_fields_win_and_one_empty_entry_clears() {
    let stored = json!({"metadata": {"managedFields": [{"manager": "a"}]}});
    let sent = json!({"metadata": {"managedFields": [{"manager": "b"}]}});
    assert_eq!(
        base_entries(Some(&stored), &sent),
        vec![json!({"manager": "b"})]
    );
    let empty = json!({"metadata": {"managedFields": []}});
    assert_eq!(
        base_entries(Some(&stored), &empty),
        vec![json!({"manager": "a"})]
    );
    let obj = cm(json!({"a": "1"}));
    let m = on_update(&[json!({})], Some(&obj), &obj, &writer("m", CM));
    assert!(m.is_empty());
}

#[test]
fn fields_v1_round_trips() {
    let v = json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}});
    assert_eq!(FieldSet::from_v1(&v).to_v1(), v);
}

#[test]
fn kubectl_takes_over_its_client_side_apply() {
    // A client-side apply: kubectl-client-side-apply owns what the annotation lists.
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "labels": {"app": "web", "tier": "fe"}}, "data": {"a": "1"}});
    let mut live = config.clone();
    live["metadata"]["annotations"] = json!({LAST_APPLIED: format!("{config}\n")});
    let m = on_update(&[], None, &live, &writer("kubectl-client-side-apply", CM));
    // kubectl's server-side apply changing a field of that configuration takes it over …
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "labels": {"app": "web", "tier": "fe"}}, "data": {"a": "2"}});
    let (obj, m) = apply(Some(&live), &m, &applied, false, &writer("kubectl", CM)).unwrap();
    assert_eq!(obj["data"]["a"], "2");
    // … and keeps the annotation current.
    let recorded: Value = serde_json::from_str(
        obj["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recorded, applied);
    // Another manager gets no such pass.
    let err = apply(Some(&live), &[], &applied, false, &writer("other", CM));
    assert!(
        err.is_ok(),
        "nobody owns anything in an empty managedFields"
    );
    let m0 = on_update(&[], None, &live, &writer("kubectl-client-side-apply", CM));
    assert!(apply(Some(&live), &m0, &applied, false, &writer("other", CM)).is_err());

    // After kubectl migrated the client-side entry into its own (maps with `.`), an
    // apply without the tier label removes only that label.
    let mut migrated = m.clone();
    for e in &mut migrated {
        if e["manager"] == "kubectl" {
            e["fieldsV1"]["f:metadata"]["f:labels"] = json!({".": {}, "f:app": {}, "f:tier": {}});
        }
    }
    migrated.retain(|e| e["manager"] == "kubectl");
    let applied = json!({"metadata": {"name": "x", "labels": {"app": "web"}}, "data": {"a": "2"}});
    let (obj, _) = apply(
        Some(&obj),
        &migrated,
        &applied,
        false,
        &writer("kubectl", CM),
    )
    .unwrap();
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(obj["data"], json!({"a": "2"}));
}

#[test]
fn create_leaves_out_the_dot_of_structs_go_always_has() {
    let mut d = deployment(json!([{"name": "app", "image": "a"}]));
    d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}});
    let w = Writer {
        api_version: "apps/v1",
        ..writer("kubectl-create", DEPLOY)
    };
    let m = on_update(&[], None, &d, &w);
    let spec = &m[0]["fieldsV1"]["f:spec"];
    assert!(spec.get(".").is_none(), "{spec:#}");
    assert_eq!(
        spec["f:strategy"],
        json!({"f:type": {}, "f:rollingUpdate": {".": {}, "f:maxSurge": {}}})
    );
    assert_eq!(spec["f:selector"], json!({}), "LabelSelector is atomic");
    assert_eq!(
        spec["f:template"]["f:metadata"],
        json!({"f:labels": {".": {}, "f:app": {}}})
    );
    assert_eq!(
        spec["f:template"]["f:spec"]["f:containers"],
        json!({"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}),
        "a pod's containers are never omitted (required): no `.`"
    );
}

#[test]
fn removed_walks_both_objects_as_the_difference_of_their_paths() {
    use super::fieldset::{all_paths, removed, Ty};
    let deploy = |containers: Value, labels: Value, finalizers: Value| {
        json!({"metadata": {"labels": labels, "finalizers": finalizers},
            "spec": {"replicas": 2, "template": {"spec": {"containers": containers}}}})
    };
    let c = |name: &str, ports: Value| json!({"name": name, "image": "i", "ports": ports});
    let objs = [
        deploy(
            json!([c("a", json!([{"containerPort": 80}]))]),
            json!({"x": "1"}),
            json!(["f1"]),
        ),
        deploy(
            json!([
                c(
                    "a",
                    json!([{"containerPort": 80}, {"containerPort": 81, "protocol": "UDP"}])
                ),
                c("b", json!([]))
            ]),
            json!({"x": "1", "y": "2"}),
            json!(["f1", "f2"]),
        ),
        deploy(json!([c("b", json!(null))]), json!({}), json!([])),
        deploy(
            json!([{"image": "keyless"}]),
            json!({"y": "2"}),
            json!(["f2"]),
        ),
        json!({"metadata": {"labels": "not a map"}, "spec": 7}),
        json!({}),
    ];
    let ty = Ty::root(crate::schema::Cursor::root("io.k8s.api.apps.v1.Deployment"));
    for old in &objs {
        for new in &objs {
            let mut want = all_paths(old, &ty);
            want.subtract(&all_paths(new, &ty));
            assert_eq!(removed(old, new, &ty), want, "{old} -> {new}");
        }
    }
}
