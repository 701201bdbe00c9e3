use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::cel::{self, Rule};
use super::*;
use crate::table::IncludeObject;

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.acc.example.com"},
        "spec": {
            "group": "acc.example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                "color": {"type": "string", "default": "blue"}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {"ready": {"type": "boolean"}}
                        }
                    }
                }}
            }]
        }
    })
}

fn widget_schema() -> Schema {
    version_schema(&widget_crd(), "v1").unwrap()
}

/// `field: message` lines, as kube prints a 422's causes.
fn lines(causes: &[Cause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

/// Defaults, then validates a CRD, as the API server does on create.
fn check(crd: &Value) -> Vec<Cause> {
    let mut crd = crd.clone();
    default_crd(&mut crd);
    validate_crd(&crd)
}

#[test]
fn crd_example_validates_clean() {
    assert_eq!(lines(&check(&widget_crd())), Vec::<String>::new());
}

/// Replaces the v1 schema of the widget CRD.
fn with_schema(schema: Value) -> Value {
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema;
    crd["spec"]["versions"][0]
        .as_object_mut()
        .unwrap()
        .remove("subresources");
    crd
}

#[test]
fn crd_refusals() {
    let p = "spec.versions[0].schema.openAPIV3Schema";
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "untyped field",
            with_schema(json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}})),
            vec![format!("{p}.properties[spec].type: Required value: must not be empty for specified object fields")],
        ),
        (
            "untyped root",
            with_schema(json!({"properties": {"spec": {"type": "object"}}})),
            vec![format!("{p}.type: Required value: must not be empty at the root")],
        ),
        (
            "array without items",
            with_schema(json!({"type": "object", "properties": {"l": {"type": "array"}}})),
            vec![format!("{p}.properties[l].items: Required value: must be specified")],
        ),
        (
            "untyped items",
            with_schema(json!({"type": "object", "properties": {"l": {"type": "array", "items": {}}}})),
            vec![format!("{p}.properties[l].items.type: Required value: must not be empty for specified array items")],
        ),
        (
            "additionalProperties with properties",
            with_schema(json!({"type": "object", "properties": {"m": {"type": "object",
                "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}}})),
            vec![format!("{p}.properties[m].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive")],
        ),
        (
            "$ref",
            with_schema(json!({"type": "object", "properties": {"a": {"$ref": "#/x", "type": "string"}}})),
            vec![format!("{p}.properties[a].$ref: Forbidden: $ref is not supported")],
        ),
        (
            "uniqueItems",
            with_schema(json!({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true, "items": {"type": "string"}}}})),
            vec![format!("{p}.properties[a].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic")],
        ),
        (
            "metadata restricted",
            with_schema(json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}})),
            vec![format!("{p}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified")],
        ),
        (
            "metadata name allowed",
            with_schema(json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}}})),
            vec![],
        ),
        (
            "typed anyOf",
            with_schema(json!({"type": "object", "properties": {"a": {"type": "string", "anyOf": [{"type": "string"}]}}})),
            vec![format!("{p}.properties[a].anyOf[0].type: Forbidden: must be empty to be structural")],
        ),
        (
            "int-or-string anyOf",
            with_schema(json!({"type": "object", "properties": {"a": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}}})),
            vec![],
        ),
        (
            "preserve-unknown-fields untyped",
            with_schema(json!({"type": "object", "properties": {"a": {"x-kubernetes-preserve-unknown-fields": true}}})),
            vec![],
        ),
        (
            "bad default",
            with_schema(json!({"type": "object", "properties": {"a": {"type": "integer", "default": "x"}}})),
            vec![format!("{p}.properties[a].default: Invalid value: \"string\":  in body must be of type integer: \"string\"")],
        ),
        (
            "unpruned default",
            with_schema(json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}, "default": {"b": "x", "c": 1}}}})),
            vec![format!("{p}.properties[a].default: Invalid value: {{\"b\":\"x\",\"c\":1}}: must not have unknown fields")],
        ),
        (
            "value validation of an unspecified field",
            with_schema(json!({"type": "object", "properties": {"a": {"type": "string"}},
                "anyOf": [{"properties": {"b": {"maxLength": 1}}}]})),
            vec![format!("{p}.properties[b]: Required value: because it is defined in {p}.anyOf[0].properties[b]")],
        ),
        (
            "default in root metadata",
            with_schema(json!({"type": "object", "properties": {"metadata": {"type": "object",
                "properties": {"name": {"type": "string", "default": "x"}}}}})),
            vec![format!("{p}.properties[metadata].properties[name].default: Forbidden: must not be set in top-level metadata")],
        ),
        (
            "default failing a rule",
            with_schema(json!({"type": "object", "properties": {"w": {"type": "object", "default": {},
                "properties": {"min": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.min <= 3"}]}}})),
            vec![format!("{p}.properties[w].default: Invalid value: \"object\": no such key: min evaluating rule: self.min <= 3")],
        ),
        (
            "no schema",
            {
                let mut c = widget_crd();
                c["spec"]["versions"][0].as_object_mut().unwrap().remove("schema");
                c
            },
            vec!["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required".into()],
        ),
    ];
    for (name, crd, want) in cases {
        assert_eq!(lines(&check(&crd)), want, "{name}");
    }
}

#[test]
fn crd_spec_refusals() {
    let mut crd = widget_crd();
    crd["metadata"]["name"] = json!("widgets.other.com");
    crd["spec"]["scope"] = json!("Global");
    crd["spec"]["names"]["shortNames"] = json!(["W_D"]);
    crd["spec"]["versions"][0]["storage"] = json!(false);
    crd["spec"]["versions"][0]["additionalPrinterColumns"][0]["type"] = json!("int");
    crd["spec"]["versions"][0]["subresources"]["scale"] =
        json!({"specReplicasPath": ".status.replicas", "statusReplicasPath": ".status.replicas"});
    let got = lines(&check(&crd));
    let want = [
        "metadata.name: Invalid value: \"widgets.other.com\": must be spec.names.plural+\".\"+spec.group",
        "spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"",
        "spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".status.replicas\": should be a json path under .spec",
        "spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: \"int\": supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"",
    ];
    for w in want {
        assert!(got.iter().any(|g| g == w), "missing {w}\ngot {got:#?}");
    }
    assert!(got
        .iter()
        .any(|g| g.starts_with("spec.versions: Invalid value: [")
            && g.ends_with(": must have exactly one version marked as storage version")));
    assert!(got.iter().any(
        |g| g.starts_with("spec.names.shortNames[0]: Invalid value: \"W_D\": a DNS-1035 label")
    ));

    let mut crd = widget_crd();
    crd["spec"]["group"] = json!("example");
    crd["metadata"]["name"] = json!("widgets.example");
    assert_eq!(
        lines(&check(&crd)),
        ["spec.group: Invalid value: \"example\": should be a domain with at least one dot"]
    );
}

#[test]
fn custom_object_validation() {
    let s = widget_schema();
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"spec": {"size": 3}}), vec![]),
        (
            json!({"spec": {"size": 99}}),
            vec!["spec.size: Invalid value: 99: spec.size in body should be less than or equal to 10"],
        ),
        (
            json!({"spec": {"size": 0}}),
            vec!["spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"],
        ),
        (
            json!({"spec": {"size": "big"}}),
            vec!["spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""],
        ),
        (json!({"spec": {}}), vec!["spec.size: Required value"]),
        (
            json!({"spec": {"size": 2, "color": 5}}),
            vec!["spec.color: Invalid value: \"integer\": spec.color in body must be of type string: \"integer\""],
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(lines(&s.validate(&obj)), want, "{obj}");
    }
}

#[test]
fn value_validations() {
    let s = Schema::new(&json!({"type": "object", "properties": {
        "e": {"type": "string", "enum": ["a", "b"]},
        "p": {"type": "string", "pattern": "^[a-z]+$"},
        "l": {"type": "string", "minLength": 2, "maxLength": 3},
        "x": {"type": "number", "exclusiveMaximum": true, "maximum": 5, "multipleOf": 0.5},
        "t": {"type": "string", "format": "date-time"},
        "b": {"type": "string", "format": "byte"},
        "items": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "integer"}},
        "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "map": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}},
        "ios": {"x-kubernetes-int-or-string": true},
        "n": {"type": "string", "nullable": true},
        "m": {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 1},
        "one": {"type": "integer", "oneOf": [{"minimum": 0}, {"maximum": 10}]},
    }}));
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"e": "a", "p": "abc", "l": "ab", "x": 4.5, "t": "2024-01-02T03:04:05Z", "b": "aGk=",
                "items": [1], "set": ["a", "b"], "map": [{"name": "a"}, {"name": "b"}], "ios": 3, "n": null,
                "m": {"a": 1}, "one": 20}), vec![]),
        (json!({"e": "c"}), vec!["e: Unsupported value: \"c\": supported values: \"a\", \"b\""]),
        (json!({"p": "A1"}), vec!["p: Invalid value: \"A1\": p in body should match '^[a-z]+$'"]),
        (json!({"l": "a"}), vec!["l: Invalid value: \"a\": l in body should be at least 2 chars long"]),
        (json!({"l": "abcd"}), vec!["l: Too long: may not be more than 3 bytes"]),
        (json!({"x": 5}), vec!["x: Invalid value: 5: x in body should be less than 5"]),
        (json!({"x": 1.2}), vec!["x: Invalid value: 1.2: x in body should be a multiple of 0.5"]),
        (json!({"t": "yesterday"}), vec!["t: Invalid value: \"yesterday\": t in body must be of type date-time: \"yesterday\""]),
        (json!({"items": [1, 2, 3]}), vec!["items: Too many: 3: must have at most 2 items"]),
        (json!({"items": []}), vec!["items: Invalid value: 0: items in body should have at least 1 items"]),
        (json!({"items": ["a"]}), vec!["items[0]: Invalid value: \"string\": items[0] in body must be of type integer: \"string\""]),
        (json!({"set": ["a", "a"]}), vec!["set[1]: Duplicate value: \"a\""]),
        (json!({"map": [{"name": "a", "v": 1}, {"name": "a", "v": 2}]}), vec!["map[1]: Duplicate value: {\"name\":\"a\"}"]),
        (json!({"ios": true}), vec!["ios: Invalid value: \"boolean\": ios in body must be of type integer,string: \"boolean\""]),
        (json!({"e": null}), vec!["e: Invalid value: \"null\": e in body must be of type string: \"null\""]),
        (json!({"m": {"a": 1, "b": 2}}), vec!["m: Too many: 2: must have at most 1 item"]),
        (json!({"m": {"a": "x"}}), vec!["m.a: Invalid value: \"string\": m.a in body must be of type integer: \"string\""]),
        (json!({"one": 5}), vec!["<nil>: Invalid value: \"\": \"one\" must validate one and only one schema (oneOf). Found 2 valid alternatives"]),
    ];
    for (obj, want) in cases {
        assert_eq!(lines(&s.validate(&obj)), want, "{obj}");
    }
}

#[test]
fn defaulting() {
    let s = widget_schema();
    let mut o = json!({"spec": {"size": 3}});
    s.default(&mut o);
    assert_eq!(o, json!({"spec": {"size": 3, "color": "blue"}}));
    let mut o = json!({"spec": {"size": 3, "color": "red"}});
    s.default(&mut o);
    assert_eq!(o["spec"]["color"], "red");
    // A non-nullable null is defaulted; one without a default is dropped.
    let mut o = json!({"spec": {"size": null, "color": null}});
    s.default(&mut o);
    assert_eq!(o, json!({"spec": {"color": "blue"}}));

    let s = Schema::new(&json!({"type": "object", "properties": {
        "n": {"type": "string", "nullable": true, "default": "d"},
        "obj": {"type": "object", "default": {}, "properties": {"x": {"type": "integer", "default": 1}}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"p": {"type": "integer", "default": 80}}}},
        "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"q": {"type": "string", "default": "z"}}}},
    }}));
    let mut o = json!({"n": null, "list": [{}, {"p": 1}], "map": {"a": {}}});
    s.default(&mut o);
    assert_eq!(
        o,
        json!({"n": null, "obj": {"x": 1}, "list": [{"p": 80}, {"p": 1}], "map": {"a": {"q": "z"}}})
    );
}

#[test]
fn pruning() {
    let s = widget_schema();
    let mut o = json!({
        "apiVersion": "acc.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}},
        "spec": {"size": 3, "junk": true}, "junk": 1, "status": {"ready": true, "x": 1}
    });
    s.prune(&mut o);
    assert_eq!(
        o,
        json!({
            "apiVersion": "acc.example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "labels": {"a": "b"}},
            "spec": {"size": 3}, "status": {"ready": true}
        })
    );

    let s = Schema::new(&json!({"type": "object", "properties": {
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                 "properties": {"strict": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        "emb": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "ios": {"x-kubernetes-int-or-string": true},
        "list": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
    }}));
    let mut o = json!({
        "free": {"anything": {"deep": 1}, "strict": {"a": "x", "b": "y"}},
        "emb": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "other": 1},
        "labels": {"x": "y"},
        "ios": "80%",
        "list": [{"k": "v", "drop": 1}],
    });
    s.prune(&mut o);
    assert_eq!(
        o,
        json!({
            "free": {"anything": {"deep": 1}, "strict": {"a": "x"}},
            "emb": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}},
            "labels": {"x": "y"},
            "ios": "80%",
            "list": [{"k": "v"}],
        })
    );
}

#[test]
fn pruning_keeps_root_metadata() {
    // A root metadata schema restricting the name does not prune other metadata.
    let s = Schema::new(&json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 9}}},
        "spec": {"type": "object"},
    }}));
    let mut o = json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {"x": 1}});
    s.prune(&mut o);
    assert_eq!(
        o,
        json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {}})
    );
}

#[test]
fn printer_column_cells() {
    let crd = widget_crd();
    let cols = printer_columns(crd_version(&crd, "v1").unwrap());
    assert_eq!(cols.len(), 1);
    assert_eq!(cols[0].name, "Size");
    assert_eq!(
        cols[0].description,
        "Custom resource definition column (in JSONPath format): .spec.size"
    );
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_300);
    let w = json!({"metadata": {"name": "w1", "creationTimestamp": "2023-11-14T22:13:20Z"}, "spec": {"size": 3}});
    assert_eq!(column_cells(&cols, &w, now), vec![json!(3)]);
    assert_eq!(
        column_cells(&cols, &json!({"spec": {}}), now),
        vec![Value::Null]
    );

    let t = to_table(&cols, std::slice::from_ref(&w), IncludeObject::None, now);
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Size"]);
    assert_eq!(t["rows"][0]["cells"], json!(["w1", 3]));
    assert_eq!(t["columnDefinitions"][1]["type"], "integer");

    // Without printer columns: Name and Age.
    let cols = printer_columns(&json!({"name": "v1"}));
    let t = to_table(&cols, &[w], IncludeObject::Metadata, now);
    assert_eq!(t["columnDefinitions"][1]["name"], "Age");
    assert_eq!(t["columnDefinitions"][1]["type"], "date");
    assert_eq!(t["rows"][0]["cells"], json!(["w1", "5m"]));
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[test]
fn json_paths() {
    let o = json!({"status": {"conditions": [
        {"type": "Synced", "status": "False"},
        {"type": "Ready", "status": "True"}
    ]}, "spec": {"a.b": 1, "list": [1, 2, 3]}});
    let cases = [
        (
            r#".status.conditions[?(@.type=="Ready")].status"#,
            json!(["True"]),
        ),
        (".status.conditions[*].type", json!(["Synced", "Ready"])),
        (".spec['a.b']", json!([1])),
        (".spec.list[-1]", json!([3])),
        ("{.spec.list[0]}", json!([1])),
        (".spec.missing", json!([])),
    ];
    for (p, want) in cases {
        let jp = JsonPath::parse(p).unwrap();
        let got: Vec<Value> = jp.eval(&o).into_iter().cloned().collect();
        assert_eq!(Value::Array(got), want, "{p}");
    }
    assert!(JsonPath::parse("spec").is_none());
}

#[test]
fn openapi_definitions() {
    let crd = widget_crd();
    let schema = &crd_version(&crd, "v1").unwrap()["schema"]["openAPIV3Schema"];
    let d = openapi_definition(schema, "acc.example.com", "v1", "Widget");
    assert_eq!(
        d["x-kubernetes-group-version-kind"],
        json!([{"group": "acc.example.com", "kind": "Widget", "version": "v1"}])
    );
    assert_eq!(
        d["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert_eq!(d["properties"]["apiVersion"]["type"], "string");
    assert_eq!(d["properties"]["spec"]["properties"]["size"]["maximum"], 10);
    assert_eq!(
        definition_name("acc.example.com", "v1", "Widget"),
        "com.example.acc.v1.Widget"
    );
    let v3 = openapi_definition_v3(schema, "acc.example.com", "v1", "Widget");
    assert_eq!(
        v3["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    let odd = json!({"type": "object", "required": ["n", "k"], "properties": {
        "n": {"type": "string", "nullable": true},
        "k": {"type": "string", "anyOf": [{"minLength": 1}]},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"a": {"type": "string"}}},
    }});
    let v2 = openapi_definition(&odd, "g.io", "v1", "Odd");
    assert_eq!(v2["required"], json!(["k"]));
    assert_eq!(v2["properties"]["n"], json!({}));
    assert_eq!(v2["properties"]["k"], json!({"type": "string"}));
    assert_eq!(
        v2["properties"]["free"],
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    );
    let l = openapi_list_definition("acc.example.com", "v1", "Widget");
    assert_eq!(
        l["properties"]["items"]["items"]["$ref"],
        "#/definitions/com.example.acc.v1.Widget"
    );
}

#[test]
fn cel_rules() {
    let s = Schema::new(&json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
            {"rule": "!has(self.name) || self.name.startsWith('w-')"},
            {"rule": "size(self.tags) <= 2 && self.tags.all(t, t.matches('^[a-z]+$'))", "reason": "FieldValueForbidden", "message": "bad tags"},
            {"rule": "self.maxReplicas >= oldSelf.maxReplicas", "message": "may not shrink"},
        ],
        "properties": {
            "minReplicas": {"type": "integer"},
            "maxReplicas": {"type": "integer"},
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        }
    }}}));
    let ok = json!({"spec": {"minReplicas": 1, "maxReplicas": 3, "tags": ["a"]}});
    assert_eq!(lines(&s.validate(&ok)), Vec::<String>::new());
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"spec": {"minReplicas": 5, "maxReplicas": 3, "tags": []}}),
            vec!["spec: Invalid value: \"object\": minReplicas must not exceed maxReplicas"],
        ),
        (
            json!({"spec": {"minReplicas": 1, "maxReplicas": 3, "name": "x", "tags": []}}),
            vec!["spec: Invalid value: \"object\": failed rule: !has(self.name) || self.name.startsWith('w-')"],
        ),
        (
            json!({"spec": {"minReplicas": 1, "maxReplicas": 3, "tags": ["A"]}}),
            vec!["spec: Forbidden: bad tags"],
        ),
        (
            json!({"spec": {"maxReplicas": 3, "tags": []}}),
            vec!["spec: Invalid value: \"object\": no such key: minReplicas evaluating rule: self.minReplicas <= self.maxReplicas"],
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(lines(&s.validate(&obj)), want, "{obj}");
    }
    // Transition rule: only on update.
    let new = json!({"spec": {"minReplicas": 1, "maxReplicas": 2, "tags": []}});
    assert_eq!(
        lines(&s.validate_update(&new, &ok)),
        ["spec: Invalid value: \"object\": may not shrink"]
    );
    assert_eq!(lines(&s.validate_update(&ok, &new)), Vec::<String>::new());

    for (rule, want) in [
        ("1 + 2 * 3 == 7", true),
        ("'abc'.contains('b') && 'abc'.endsWith('c')", true),
        ("[1, 2, 3].exists_one(x, x > 2)", true),
        ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", true),
        ("[1, 2, 3].filter(x, x % 2 == 1).size() == 2", true),
        ("'a' in {'a': 1} && 2 in [1, 2]", true),
        ("true ? 1 == 1.0 : false", true),
        (
            "int('5') + 1 == 6 && string(5) == '5' && double(1) / 2.0 == 0.5",
            true,
        ),
        ("self.x == 1 || true", true),
        ("-(3) < 0u", true),
        ("'a-b-c'.split('-') == ['a', 'b', 'c'] && ['a', 'b'].join(',') == 'a,b'", true),
        ("'hello'.indexOf('l') == 2 && 'hello'.lastIndexOf('l') == 3 && 'hello'.substring(1, 3) == 'el'", true),
        ("'héllo'.charAt(1) == 'é' && 'abc'.replace('b', 'x') == 'axc'", true),
        ("[1, 2, 3].isSorted() && [3, 1].sum() == 4 && [3, 1, 2].min() == 1 && [3, 1, 2].max() == 3", true),
        ("'abc123def'.find('[0-9]+') == '123' && 'a1b2'.findAll('[0-9]') == ['1', '2']", true),
        ("[1, 2].indexOf(2) == 1 && bool('true') && dyn(1) == 1", true),
        (
            r#"r'a\d' == 'a\\d' && '''x''' == "x" && 'it\'s'.size() == 4"#,
            true,
        ),
    ] {
        let e = cel::parse(rule).unwrap();
        let r = Rule::compile(&json!({"rule": rule})).unwrap();
        assert_eq!(
            r.check(&json!({}), None, "p", "object").is_none(),
            want,
            "{rule} {e:?}"
        );
    }
    assert!(cel::parse("self.x ==").is_err());
    // Unsupported functions parse (the CRD is accepted) but the rule is not evaluated.
    assert!(cel::parse("timestamp(self.t) > now").is_ok());
    assert!(Rule::compile(&json!({"rule": "timestamp(self.t) > now"})).is_none());
    // Optionals are evaluated.
    let r = Rule::compile(&json!({"rule": "self.?x.orValue(1) == 1"})).unwrap();
    assert!(r.check(&json!({}), None, "p", "object").is_none());
    assert!(r.check(&json!({"x": 2}), None, "p", "object").is_some());
}

#[test]
fn crd_refuses_bad_cel() {
    let crd = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.a =="}]}}}),
    );
    let got = lines(&check(&crd));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with(
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: {\"rule\":\"self.a ==\"}: compilation failed: ERROR: <input>: "
    ));
}

#[test]
fn crd_defaulting_and_update() {
    let mut crd = widget_crd();
    assert_eq!(
        lines(&validate_crd(&crd)),
        ["spec.names.listKind: Required value"]
    );
    default_crd(&mut crd);
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(crd["spec"]["names"]["singular"], "widget");
    assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));

    let mut old = crd.clone();
    old["status"] = json!({"conditions": [{"type": "Established", "status": "True"}], "storedVersions": ["v1"]});
    let mut new = old.clone();
    new["spec"]["scope"] = json!("Cluster");
    new["spec"]["versions"][0]["name"] = json!("v2");
    assert_eq!(
        lines(&validate_crd_update(&new, &old)),
        [
            "spec.scope: Invalid value: \"Cluster\": field is immutable",
            "status.storedVersions[0]: Invalid value: \"v1\": must appear in spec.versions",
        ]
    );
}

#[test]
fn update_ratchets_unchanged_values() {
    let s = widget_schema();
    let old = json!({"metadata": {"name": "w"}, "spec": {"size": 99}});
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({"a": "b"});
    assert_eq!(lines(&s.validate_update(&new, &old)), Vec::<String>::new());
    new["spec"]["size"] = json!(98);
    assert_eq!(
        lines(&s.validate_update(&new, &old)),
        ["spec.size: Invalid value: 98: spec.size in body should be less than or equal to 10"]
    );
}

#[test]
fn metadata_name_restrictions() {
    let s = Schema::new(&json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 3}}}
    }}));
    assert_eq!(
        lines(&s.validate(&json!({"metadata": {"name": "long", "labels": {"x": "y"}}}))),
        ["metadata.name: Too long: may not be more than 3 bytes"]
    );
}

#[test]
fn crd_versions() {
    let crd = widget_crd();
    assert_eq!(storage_version(&crd), Some("v1"));
    assert!(crd_version(&crd, "v2").is_none());
    assert!(version_schema(&crd, "v1").is_some());
}

#[test]
fn embedded_resources_need_type_meta() {
    let s = Schema::new(&json!({"type": "object", "properties": {
        "tmpl": {"type": "object", "x-kubernetes-embedded-resource": true,
                 "x-kubernetes-preserve-unknown-fields": true},
    }}));
    assert_eq!(
        lines(&s.validate(&json!({"tmpl": {"apiVersion": "v1", "kind": "Pod"}}))),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(&s.validate(&json!({"tmpl": {"kind": ""}}))),
        [
            "tmpl.apiVersion: Required value: must not be empty",
            "tmpl.kind: Invalid value: \"\": must not be empty",
        ]
    );
}

#[test]
fn go_float_formatting() {
    for (f, want) in [
        (10.0, "10"),
        (1.5, "1.5"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (123456789.0, "1.23456789e+08"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5e-7, "-2.5e-07"),
        (0.0, "0"),
    ] {
        assert_eq!(go_float(f), want);
    }
}

#[test]
fn scale_subresource() {
    let cfg = json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                     "labelSelectorPath": ".status.selector"});
    let mut o = json!({"metadata": {"name": "w", "namespace": "d", "labels": {"a": "b"}},
                       "spec": {"replicas": 2}, "status": {"selector": "app=w"}});
    assert_eq!(
        scale(&o, &cfg).unwrap(),
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
               "metadata": {"name": "w", "namespace": "d"},
               "spec": {"replicas": 2}, "status": {"replicas": 0, "selector": "app=w"}})
    );
    set_replicas(&mut o, &cfg, 5);
    assert_eq!(o["spec"]["replicas"], 5);
    o["spec"]["replicas"] = json!("x");
    assert!(scale(&o, &cfg).is_err());
    let mut empty = json!({});
    set_replicas(&mut empty, &cfg, 1);
    assert_eq!(empty, json!({"spec": {"replicas": 1}}));
}
