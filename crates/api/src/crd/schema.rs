//! A version's `openAPIV3Schema` compiled once: pruning, defaulting and OpenAPI v3
//! validation of custom objects, with kube-openapi's messages and field paths.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::cel::Rule;
use super::{validate, Cause};

/// A compiled structural schema (`spec.versions[*].schema.openAPIV3Schema`).
#[derive(Debug, Clone)]
pub struct Schema {
    root: Node,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub(crate) ty: String,
    pub(crate) format: String,
    pub(crate) nullable: bool,
    pub(crate) default: Option<Value>,
    pub(crate) properties: BTreeMap<String, Node>,
    /// `Some(None)`: `additionalProperties: true` (no schema); `Some(Some(n))`: a schema.
    pub(crate) additional: Option<Option<Box<Node>>>,
    /// `additionalProperties: false`.
    pub(crate) no_additional: bool,
    pub(crate) items: Option<Box<Node>>,
    pub(crate) required: Vec<String>,
    pub(crate) enum_values: Option<Vec<Value>>,
    pub(crate) maximum: Option<f64>,
    pub(crate) exclusive_maximum: bool,
    pub(crate) minimum: Option<f64>,
    pub(crate) exclusive_minimum: bool,
    pub(crate) multiple_of: Option<f64>,
    pub(crate) max_length: Option<u64>,
    pub(crate) min_length: Option<u64>,
    pub(crate) max_items: Option<u64>,
    pub(crate) min_items: Option<u64>,
    pub(crate) max_properties: Option<u64>,
    pub(crate) min_properties: Option<u64>,
    pub(crate) pattern: Option<(String, Option<Regex>)>,
    pub(crate) all_of: Vec<Node>,
    pub(crate) any_of: Vec<Node>,
    pub(crate) one_of: Vec<Node>,
    pub(crate) not: Option<Box<Node>>,
    pub(crate) preserve_unknown: bool,
    pub(crate) embedded: bool,
    pub(crate) int_or_string: bool,
    pub(crate) list_type: Option<String>,
    pub(crate) list_map_keys: Vec<String>,
    pub(crate) rules: Vec<Rule>,
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}
fn count(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(|n| {
        n.as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}
fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}
fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
fn list(v: &Value, k: &str) -> Vec<Node> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Node::compile).collect())
        .unwrap_or_default()
}

impl Node {
    pub(crate) fn compile(v: &Value) -> Node {
        let pattern = v.get("pattern").and_then(Value::as_str).map(|p| {
            let re = Regex::new(p).ok();
            (p.to_string(), re)
        });
        let (additional, no_additional) = match v.get("additionalProperties") {
            Some(Value::Bool(true)) => (Some(None), false),
            Some(Value::Bool(false)) => (None, true),
            Some(s @ Value::Object(_)) => (Some(Some(Box::new(Node::compile(s)))), false),
            _ => (None, false),
        };
        Node {
            ty: text(v, "type"),
            format: text(v, "format"),
            nullable: flag(v, "nullable"),
            default: v.get("default").cloned(),
            properties: v
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, s)| (k.clone(), Node::compile(s)))
                        .collect()
                })
                .unwrap_or_default(),
            additional,
            no_additional,
            items: v
                .get("items")
                .filter(|i| i.is_object())
                .map(|i| Box::new(Node::compile(i))),
            required: v
                .get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            enum_values: v.get("enum").and_then(Value::as_array).cloned(),
            maximum: num(v, "maximum"),
            exclusive_maximum: flag(v, "exclusiveMaximum"),
            minimum: num(v, "minimum"),
            exclusive_minimum: flag(v, "exclusiveMinimum"),
            multiple_of: num(v, "multipleOf"),
            max_length: count(v, "maxLength"),
            min_length: count(v, "minLength"),
            max_items: count(v, "maxItems"),
            min_items: count(v, "minItems"),
            max_properties: count(v, "maxProperties"),
            min_properties: count(v, "minProperties"),
            pattern,
            all_of: list(v, "allOf"),
            any_of: list(v, "anyOf"),
            one_of: list(v, "oneOf"),
            not: v
                .get("not")
                .filter(|n| n.is_object())
                .map(|n| Box::new(Node::compile(n))),
            preserve_unknown: flag(v, "x-kubernetes-preserve-unknown-fields"),
            embedded: flag(v, "x-kubernetes-embedded-resource"),
            int_or_string: flag(v, "x-kubernetes-int-or-string"),
            list_type: v
                .get("x-kubernetes-list-type")
                .and_then(Value::as_str)
                .map(String::from),
            list_map_keys: v
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            rules: v
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Rule::compile).collect())
                .unwrap_or_default(),
        }
    }

    /// The structural schema of map values: `None` when `additionalProperties` is absent.
    pub(crate) fn additional_schema(&self) -> Option<Option<&Node>> {
        self.additional.as_ref().map(|a| a.as_deref())
    }
}

pub(crate) const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

impl Schema {
    /// Compiles `openAPIV3Schema`. The schema should have passed [`super::validate_crd`];
    /// an invalid `pattern` is then ignored.
    pub fn new(open_api_v3_schema: &Value) -> Schema {
        Schema {
            root: Node::compile(open_api_v3_schema),
        }
    }

    pub(crate) fn from_node(root: Node) -> Schema {
        Schema { root }
    }

    /// Validates `v` as a non-root value from field path `prefix`, as kube validates a
    /// schema's `default` (kube-openapi's own paths, in messages, start empty there).
    pub(crate) fn validate_at(&self, v: &Value, prefix: &str, cel: bool) -> Vec<Cause> {
        validate::run(&self.root, v, None, prefix, cel, false)
    }

    /// Prunes `v` as a value below the root (no apiVersion/kind/metadata exception).
    pub(crate) fn prune_nested(&self, v: &mut Value) {
        prune(v, Some(&self.root), false);
    }

    /// Drops the fields the schema does not specify, as kube-apiserver's pruning does:
    /// `x-kubernetes-preserve-unknown-fields` keeps a subtree (still pruning the
    /// properties it specifies), `x-kubernetes-embedded-resource` keeps
    /// apiVersion/kind/metadata, and the root always keeps apiVersion/kind/metadata.
    pub fn prune(&self, obj: &mut Value) {
        prune(obj, Some(&self.root), true);
    }

    /// Applies the schema's `default`s (absent properties, map values and array items,
    /// recursively), then drops non-nullable `null` fields that have no default, as
    /// apiextensions-apiserver does when decoding a custom object.
    pub fn default(&self, obj: &mut Value) {
        default(obj, Some(&self.root));
        drop_nulls(obj, Some(&self.root));
    }

    /// OpenAPI v3 validation of a custom object (after pruning and defaulting), with
    /// kube-openapi's messages, plus `x-kubernetes-list-type` and CEL
    /// `x-kubernetes-validations` rules (no `oldSelf`: transition rules are skipped).
    pub fn validate(&self, obj: &Value) -> Vec<Cause> {
        validate::run(&self.root, obj, None, "", true, true)
    }

    /// Like [`Schema::validate`] for an update from `old`: values unchanged since `old`
    /// are not validated again (kube's validation ratcheting), and `old` is `oldSelf` for
    /// transition rules (rules referring to `oldSelf` run only where the old object has a
    /// value at that place: object properties, map values, items of `map` lists).
    pub fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        validate::run(&self.root, new, Some(old), "", true, true)
    }
}

// ---------------------------------------------------------------- pruning

/// `root`: the resource's root, treated as an embedded resource (apiVersion, kind and
/// metadata are left to ObjectMeta handling), as kube's pruning does.
fn prune(x: &mut Value, s: Option<&Node>, root: bool) {
    if let Some(s) = s {
        if s.preserve_unknown {
            skip_prune(x, s, root);
            return;
        }
    }
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                if root {
                    m.retain(|k, _| META_FIELDS.contains(&k.as_str()));
                } else {
                    m.clear();
                }
                return;
            };
            m.retain(|k, v| {
                if s.embedded || root {
                    match k.as_str() {
                        "apiVersion" | "kind" if v.is_string() => return true,
                        "metadata" if v.is_object() => return true,
                        _ => {}
                    }
                }
                if let Some(p) = s.properties.get(k) {
                    prune(v, Some(p), false);
                    true
                } else if let Some(a) = s.additional_schema() {
                    prune(v, a, false);
                    true
                } else {
                    root && META_FIELDS.contains(&k.as_str())
                }
            });
        }
        Value::Array(a) => {
            let items = s.and_then(|s| s.items.as_deref());
            for v in a {
                prune(v, items, false);
            }
        }
        _ => {}
    }
}

fn skip_prune(x: &mut Value, s: &Node, root: bool) {
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if (s.embedded || root) && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(p) = s.properties.get(k) {
                    prune(v, Some(p), false);
                } else if let Some(a) = s.additional_schema() {
                    prune(v, a, false);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for v in a {
                    skip_prune(v, items, false);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- defaulting

fn non_nullable_null(v: &Value, s: Option<&Node>) -> bool {
    v.is_null() && s.is_some_and(|s| !s.nullable)
}

fn default(x: &mut Value, s: Option<&Node>) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            for (k, p) in &s.properties {
                let Some(d) = &p.default else { continue };
                match m.get(k) {
                    Some(v) if !non_nullable_null(v, Some(p)) => {}
                    _ => {
                        m.insert(k.clone(), d.clone());
                    }
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(p) = s.properties.get(k) {
                    default(v, Some(p));
                } else if let Some(Some(a)) = s.additional_schema() {
                    if non_nullable_null(v, Some(a)) {
                        if let Some(d) = &a.default {
                            *v = d.clone();
                        }
                    }
                    default(v, Some(a));
                }
            }
        }
        Value::Array(items) => {
            let Some(is) = s.items.as_deref() else { return };
            for v in items {
                if non_nullable_null(v, Some(is)) {
                    if let Some(d) = &is.default {
                        *v = d.clone();
                    }
                }
                default(v, Some(is));
            }
        }
        _ => {}
    }
}

/// kube's PruneNonNullableNullsWithoutDefaults: `null` values of non-nullable fields
/// without a default are dropped from objects (not from arrays).
fn drop_nulls(x: &mut Value, s: Option<&Node>) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            m.retain(|k, v| {
                let p = s
                    .properties
                    .get(k)
                    .or_else(|| s.additional_schema().flatten());
                match p {
                    Some(p) if v.is_null() => p.nullable || p.default.is_some(),
                    _ => true,
                }
            });
            for (k, v) in m.iter_mut() {
                let p = s
                    .properties
                    .get(k)
                    .or_else(|| s.additional_schema().flatten());
                drop_nulls(v, p);
            }
        }
        Value::Array(a) => {
            for v in a {
                drop_nulls(v, s.items.as_deref());
            }
        }
        _ => {}
    }
}
