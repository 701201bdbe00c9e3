//! The checks apiextensions-apiserver makes on a version's `openAPIV3Schema`: allowed
//! keywords, the structural-schema rules (kube's "NonStructuralSchema" condition), value
//! validations that only constrain specified fields, and defaults that validate and
//! survive pruning.

use serde_json::Value;

use super::schema::{Node, Schema};
use super::validation::{forbidden, invalid, invalid_str, not_supported, required, s};
use super::Cause;

const TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// The schema fields kube allows at the root when the status subresource is enabled.
const ROOT_ALLOWED: [(&str, &str); 22] = [
    ("description", "Description"),
    ("type", "Type"),
    ("format", "Format"),
    ("title", "Title"),
    ("maximum", "Maximum"),
    ("exclusiveMaximum", "ExclusiveMaximum"),
    ("minimum", "Minimum"),
    ("exclusiveMinimum", "ExclusiveMinimum"),
    ("maxLength", "MaxLength"),
    ("minLength", "MinLength"),
    ("pattern", "Pattern"),
    ("maxItems", "MaxItems"),
    ("minItems", "MinItems"),
    ("uniqueItems", "UniqueItems"),
    ("multipleOf", "MultipleOf"),
    ("required", "Required"),
    ("items", "Items"),
    ("properties", "Properties"),
    ("externalDocs", "ExternalDocs"),
    ("example", "Example"),
    (
        "x-kubernetes-preserve-unknown-fields",
        "XPreserveUnknownFields",
    ),
    ("x-kubernetes-validations", "XValidations"),
];

pub(super) fn validate_version_schema(
    schema: &Value,
    path: &str,
    status: bool,
    out: &mut Vec<Cause>,
) {
    let before = out.len();
    if status {
        if let Some(m) = schema.as_object() {
            for (k, v) in m {
                let zero = matches!(v, Value::Null | Value::Bool(false))
                    || v.as_str() == Some("")
                    || v.as_array().is_some_and(|a| a.is_empty())
                    || v.as_object().is_some_and(|o| o.is_empty());
                if zero {
                    continue;
                }
                if k == "type" {
                    if v.as_str() != Some("object") {
                        out.push(invalid(
                            format!("{path}.type"),
                            v,
                            "only \"object\" is allowed as the type at the root of the schema if the status subresource is enabled",
                        ));
                        break;
                    }
                    continue;
                }
                if !ROOT_ALLOWED.iter().any(|(key, _)| key == k) {
                    let names: Vec<&str> = ROOT_ALLOWED.iter().map(|(_, n)| *n).collect();
                    out.push(invalid(
                        path,
                        schema,
                        &format!(
                            "only [{}] fields are allowed at the root of the schema if the status subresource is enabled",
                            names.join(" ")
                        ),
                    ));
                    break;
                }
            }
        }
    }
    keywords(schema, path, true, None, out);
    let mut structural = Vec::new();
    structural_invariants(schema, Level::Root, path, &mut structural);
    junctor_completeness(schema, Some(schema), path, path, &mut structural);
    structural.sort_by(|a, b| {
        (a.field.as_str(), a.message.as_str()).cmp(&(b.field.as_str(), b.message.as_str()))
    });
    out.extend(structural);
    if out.len() == before {
        defaults(schema, path, true, out);
    }
}

/// The OpenAPI keywords apiextensions forbids or restricts, at every level.
/// `no_default`: why defaults are forbidden here (inside the root's metadata).
fn keywords(v: &Value, path: &str, root: bool, no_default: Option<&str>, out: &mut Vec<Cause>) {
    let Some(m) = v.as_object() else { return };
    if let (Some(why), Some(_)) = (no_default, m.get("default")) {
        out.push(forbidden(
            format!("{path}.default"),
            &format!("must not be set {why}"),
        ));
    }
    for (k, why) in [
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("$ref", "$ref is not supported"),
    ] {
        let present = match m.get(k) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Object(o)) => !o.is_empty() || k == "additionalItems",
            Some(_) => true,
        };
        if present {
            out.push(forbidden(format!("{path}.{k}"), why));
        }
    }
    match m.get("type") {
        Some(Value::String(t)) if t == "null" => out.push(forbidden(
            format!("{path}.type"),
            "type cannot be set to null",
        )),
        Some(Value::String(t)) if !t.is_empty() && !TYPES.contains(&t.as_str()) => {
            out.push(not_supported(format!("{path}.type"), &m["type"], &TYPES))
        }
        _ => {}
    }
    if m.get("items").is_some_and(Value::is_array) {
        out.push(forbidden(
            format!("{path}.items"),
            "items must be a schema object and not an array",
        ));
    }
    if m.get("uniqueItems") == Some(&Value::Bool(true)) {
        out.push(forbidden(
            format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        if let Err(e) = regex::Regex::new(p) {
            out.push(invalid_str(
                format!("{path}.pattern"),
                p,
                &format!("must be a valid regular expression, but isn't: {e}"),
            ));
        }
    }
    let has_props = m
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    if let Some(ap) = m.get("additionalProperties") {
        if has_props && (ap == &Value::Bool(false) || ap.is_object()) {
            out.push(forbidden(
                format!("{path}.additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        keywords(
            ap,
            &format!("{path}.additionalProperties"),
            false,
            no_default,
            out,
        );
    }
    match m.get("x-kubernetes-list-type").and_then(Value::as_str) {
        None | Some("atomic") | Some("set") => {}
        Some("map") => {
            let empty = m
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty());
            if empty {
                out.push(required(
                    format!("{path}.x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
        }
        Some(other) => out.push(not_supported(
            format!("{path}.x-kubernetes-list-type"),
            &Value::String(other.into()),
            &["atomic", "map", "set"],
        )),
    }
    if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
        for (i, r) in rules.iter().enumerate() {
            let rule = s(r, "rule");
            if rule.is_empty() {
                out.push(required(
                    format!("{path}.x-kubernetes-validations[{i}].rule"),
                    "",
                ));
            } else if let Err(e) = super::cel::parse(rule) {
                // kube prints the whole rule entry as the value.
                out.push(invalid(
                    format!("{path}.x-kubernetes-validations[{i}].rule"),
                    r,
                    &format!("compilation failed: ERROR: <input>: {e}"),
                ));
            }
        }
    }
    for (k, sub) in m
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let nd = if root && k == "metadata" {
            Some("in top-level metadata")
        } else {
            no_default
        };
        keywords(sub, &format!("{path}.properties[{k}]"), false, nd, out);
    }
    if let Some(i) = m.get("items").filter(|i| i.is_object()) {
        keywords(i, &format!("{path}.items"), false, no_default, out);
    }
    if let Some(n) = m.get("not") {
        keywords(n, &format!("{path}.not"), false, no_default, out);
    }
    for j in ["allOf", "oneOf", "anyOf"] {
        for (i, sub) in m
            .get(j)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            keywords(sub, &format!("{path}.{j}[{i}]"), false, no_default, out);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

fn flag(m: &Value, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// kube's structural-schema invariants ("NonStructuralSchema" condition).
fn structural_invariants(v: &Value, lvl: Level, path: &str, out: &mut Vec<Cause>) {
    let Some(m) = v.as_object() else { return };
    let ty = s(v, "type");
    let props = m.get("properties").and_then(Value::as_object);
    if ty == "array" && !m.get("items").is_some_and(Value::is_object) {
        out.push(required(format!("{path}.items"), "must be specified"));
    }
    if let Some(i) = m.get("items").filter(|i| i.is_object()) {
        structural_invariants(i, Level::Item, &format!("{path}.items"), out);
    }
    for (k, p) in props.into_iter().flatten() {
        structural_invariants(p, Level::Field, &format!("{path}.properties[{k}]"), out);
    }
    let embedded = flag(v, "x-kubernetes-embedded-resource");
    let preserve = flag(v, "x-kubernetes-preserve-unknown-fields");
    let int_or_string = flag(v, "x-kubernetes-int-or-string");
    if let Some(ap) = m.get("additionalProperties") {
        if lvl == Level::Root {
            out.push(forbidden(
                format!("{path}.additionalProperties"),
                "must not be used at the root",
            ));
        }
        if ap.is_object() {
            structural_invariants(
                ap,
                Level::Field,
                &format!("{path}.additionalProperties"),
                out,
            );
        }
        if embedded {
            out.push(forbidden(
                format!("{path}.additionalProperties"),
                "must not be used if x-kubernetes-embedded-resource is set",
            ));
        }
    }
    if int_or_string && preserve {
        out.push(invalid(
            format!("{path}.x-kubernetes-preserve-unknown-fields"),
            &Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if int_or_string && embedded {
        out.push(invalid(
            format!("{path}.x-kubernetes-embedded-resource"),
            &Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }

    // Value validations (allOf/anyOf/oneOf/not) may not specify structure of their own.
    let int_or_string_any_of = |x: Option<&Value>| {
        x.and_then(Value::as_array).is_some_and(|a| {
            a.len() == 2
                && a[0] == serde_json::json!({"type": "integer"})
                && a[1] == serde_json::json!({"type": "string"})
        })
    };
    if !int_or_string_any_of(m.get("anyOf")) {
        for (i, x) in m
            .get("anyOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            nested(x, &format!("{path}.anyOf[{i}]"), false, out);
        }
    }
    for (i, x) in m
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let skip = i == 0 && int_or_string_any_of(x.get("anyOf"));
        nested(x, &format!("{path}.allOf[{i}]"), skip, out);
    }
    for (i, x) in m
        .get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        nested(x, &format!("{path}.oneOf[{i}]"), false, out);
    }
    if let Some(n) = m.get("not") {
        nested(n, &format!("{path}.not"), false, out);
    }

    let check_metadata = lvl == Level::Root || embedded;
    if embedded && ty != "object" {
        if ty.is_empty() {
            out.push(required(
                format!("{path}.type"),
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        } else {
            out.push(invalid_str(
                format!("{path}.type"),
                ty,
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        }
    } else if ty.is_empty() && !int_or_string && !preserve {
        let why = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        out.push(required(format!("{path}.type"), why));
    }
    if lvl == Level::Root && !ty.is_empty() && ty != "object" {
        out.push(invalid_str(
            format!("{path}.type"),
            ty,
            "must be object at the root",
        ));
    }
    if let Some(props) = props {
        for k in ["kind", "apiVersion"] {
            if let Some(p) = props.get(k) {
                if check_metadata && s(p, "type") != "string" {
                    out.push(invalid_str(
                        format!("{path}.properties[{k}].type"),
                        s(p, "type"),
                        "must be string",
                    ));
                }
            }
        }
        if let Some(meta) = props.get("metadata") {
            let mpath = format!("{path}.properties[metadata]");
            if check_metadata && s(meta, "type") != "object" {
                out.push(invalid_str(
                    format!("{mpath}.type"),
                    s(meta, "type"),
                    "must be object",
                ));
            }
            if lvl == Level::Root {
                let mut rest = meta.as_object().cloned().unwrap_or_default();
                rest.remove("type");
                rest.remove("default");
                if let Some(Value::Object(p)) = rest.get("properties") {
                    let only_names = p.keys().all(|k| k == "name" || k == "generateName");
                    if only_names {
                        rest.remove("properties");
                    }
                }
                if !rest.is_empty() {
                    out.push(forbidden(
                        mpath,
                        "must not specify anything other than name and generateName, but metadata is implicitly specified",
                    ));
                }
            }
        }
    }
    if embedded && !preserve && props.is_none_or(|p| p.is_empty()) {
        out.push(required(
            format!("{path}.properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

/// Every property or items that a value validation (allOf/anyOf/oneOf/not of the root)
/// constrains must also be specified in the structural schema `s`.
fn junctor_completeness(
    v: &Value,
    s: Option<&Value>,
    s_path: &str,
    v_path: &str,
    out: &mut Vec<Cause>,
) {
    for (j, x) in junctor_children(v) {
        completeness(x, s, s_path, &format!("{v_path}.{j}"), out);
    }
}

fn junctor_children(v: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    if let Some(n) = v.get("not") {
        out.push(("not".to_string(), n));
    }
    for j in ["allOf", "anyOf", "oneOf"] {
        for (i, x) in v
            .get(j)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push((format!("{j}[{i}]"), x));
        }
    }
    out
}

fn completeness(v: &Value, s: Option<&Value>, s_path: &str, v_path: &str, out: &mut Vec<Cause>) {
    let Some(s) = s else {
        out.push(required(
            s_path,
            &format!("because it is defined in {v_path}"),
        ));
        return;
    };
    junctor_completeness(v, Some(s), s_path, v_path, out);
    if let Some(items) = v.get("items").filter(|i| i.is_object()) {
        completeness(
            items,
            s.get("items").filter(|i| i.is_object()),
            &format!("{s_path}.items"),
            &format!("{v_path}.items"),
            out,
        );
    }
    for (k, p) in v
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let sp = format!("{s_path}.properties[{k}]");
        let vp = format!("{v_path}.properties[{k}]");
        match s.pointer(&format!(
            "/properties/{}",
            k.replace('~', "~0").replace('/', "~1")
        )) {
            Some(sf) => completeness(p, Some(sf), &sp, &vp, out),
            None => out.push(required(sp, &format!("because it is defined in {vp}"))),
        }
    }
}

/// A schema under allOf/anyOf/oneOf/not: no types, defaults, descriptions or extensions.
fn nested(v: &Value, path: &str, skip_any_of: bool, out: &mut Vec<Cause>) {
    let Some(m) = v.as_object() else { return };
    for (j, key) in [("anyOf", "anyOf"), ("allOf", "allOf"), ("oneOf", "oneOf")] {
        if j == "anyOf" && skip_any_of {
            continue;
        }
        for (i, x) in m
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            nested(x, &format!("{path}.{j}[{i}]"), false, out);
        }
    }
    if let Some(n) = m.get("not") {
        nested(n, &format!("{path}.not"), false, out);
    }
    if let Some(i) = m.get("items").filter(|i| i.is_object()) {
        nested(i, &format!("{path}.items"), false, out);
    }
    for (k, p) in m
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        nested(p, &format!("{path}.properties[{k}]"), false, out);
    }
    if m.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
    {
        out.push(forbidden(
            format!("{path}.type"),
            "must be empty to be structural",
        ));
    }
    if m.contains_key("additionalProperties") {
        out.push(forbidden(
            format!("{path}.additionalProperties"),
            "must be undefined to be structural",
        ));
    }
    for (k, why) in [
        ("default", "must be undefined to be structural"),
        ("title", "must be empty to be structural"),
        ("description", "must be empty to be structural"),
        ("externalDocs", "must be undefined to be structural"),
        (
            "x-kubernetes-list-map-keys",
            "must be empty to be structural",
        ),
        (
            "x-kubernetes-list-type",
            "must be undefined to be structural",
        ),
        (
            "x-kubernetes-map-type",
            "must be undefined to be structural",
        ),
        ("x-kubernetes-validations", "must be empty to be structural"),
    ] {
        let set = match m.get(k) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if set {
            out.push(forbidden(format!("{path}.{k}"), why));
        }
    }
    for (k, why) in [
        ("nullable", "must be false to be structural"),
        (
            "x-kubernetes-preserve-unknown-fields",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-embedded-resource",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-int-or-string",
            "must be false to be structural",
        ),
    ] {
        if flag(v, k) {
            out.push(forbidden(format!("{path}.{k}"), why));
        }
    }
    if m.get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key("metadata"))
    {
        out.push(forbidden(
            format!("{path}.properties[metadata]"),
            "must not be specified in a nested context",
        ));
    }
}

/// Every `default` must validate against its own schema and survive pruning unchanged.
fn defaults(v: &Value, path: &str, root: bool, out: &mut Vec<Cause>) {
    let Some(m) = v.as_object() else { return };
    if let Some(d) = m.get("default") {
        let dpath = format!("{path}.default");
        let schema = Schema::from_node(Node::compile(v));
        let mut pruned = d.clone();
        schema.prune_nested(&mut pruned);
        if &pruned != d {
            out.push(invalid(&dpath, d, "must not have unknown fields"));
        }
        let errs = schema.validate_at(d, &dpath, false);
        if errs.is_empty() {
            out.extend(schema.validate_at(d, &dpath, true));
        }
        out.extend(errs);
    }
    // Not into additionalProperties (kube does not follow it), nor into the root's
    // metadata (defaults are forbidden there).
    for (k, p) in m
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if root && k == "metadata" {
            continue;
        }
        defaults(p, &format!("{path}.properties[{k}]"), false, out);
    }
    if let Some(i) = m.get("items").filter(|i| i.is_object()) {
        defaults(i, &format!("{path}.items"), false, out);
    }
}
