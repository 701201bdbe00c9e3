//! A version's `openAPIV3Schema` compiled once: pruning, defaulting and OpenAPI v3
//! validation of custom objects, with kube-openapi's messages and field paths.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::cel::Rule;
use super::{render, Cause};

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
    fn additional_schema(&self) -> Option<Option<&Node>> {
        self.additional.as_ref().map(|a| a.as_deref())
    }
}

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

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
        let mut val = Validator {
            causes: Vec::new(),
            old: None,
            prefix: prefix.to_string(),
            cel,
        };
        val.node(&self.root, v, "", false, None);
        val.causes
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
        let mut v = Validator {
            causes: Vec::new(),
            old: None,
            prefix: String::new(),
            cel: true,
        };
        v.node(&self.root, obj, "", true, None);
        v.causes
    }

    /// Like [`Schema::validate`] for an update from `old`: values unchanged since `old`
    /// are not validated again (kube's validation ratcheting), and `old` is `oldSelf` for
    /// transition rules (rules referring to `oldSelf` run only where the old object has a
    /// value at that place: object properties, map values, items of `map` lists).
    pub fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut v = Validator {
            causes: Vec::new(),
            old: Some(()),
            prefix: String::new(),
            cel: true,
        };
        v.node(&self.root, new, "", true, Some(old));
        v.causes
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

// ---------------------------------------------------------------- validation

pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The JSON type name kube-openapi reports for a value.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `%v` of a float64 bound (`10`, `1.5`).
pub(crate) fn go_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn invalid(field: &str, value: &Value, why: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.to_string(),
        message: format!("Invalid value: {}: {why}", render(value)),
    }
}

/// How kube-openapi names a value in its messages (`spec.size in body`; ` in body` at the
/// root of a validation, as kube prints for a default).
fn body(path: &str) -> String {
    format!("{path} in body")
}

struct Validator {
    causes: Vec<Cause>,
    old: Option<()>,
    /// The field path validation started from (kube's `fldPath`): empty for a custom
    /// object, `….default` for a schema's default.
    prefix: String,
    /// Whether CEL rules run (kube checks a default's rules only once it validates).
    cel: bool,
}

fn matches_type(ty: &str, v: &Value) -> bool {
    match ty {
        "" => true,
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        _ => true,
    }
}

impl Validator {
    /// The field of a cause at `name` (kube-openapi's path, also used in messages).
    fn field(&self, name: &str) -> String {
        match (self.prefix.as_str(), name) {
            ("", "") => "<nil>".to_string(),
            ("", n) => n.to_string(),
            (p, "") => p.to_string(),
            (p, n) => format!("{p}.{n}"),
        }
    }

    /// Validates `v` against `s` at `path`; `old` is the old value at the same place on
    /// updates.
    fn node(&mut self, s: &Node, v: &Value, path: &str, root: bool, old: Option<&Value>) {
        // Ratcheting (CRDValidationRatcheting): on update, a value unchanged since the old
        // object is not validated again, so a stricter schema does not block updates of
        // other fields.
        if self.old.is_some() && old == Some(v) {
            return;
        }
        // type
        if v.is_null() {
            if !s.nullable && (!s.ty.is_empty() || s.int_or_string) {
                let ty = if s.int_or_string {
                    "integer,string"
                } else {
                    s.ty.as_str()
                };
                self.type_error(path, ty, v);
                return;
            }
            if s.nullable {
                return;
            }
        } else if s.int_or_string {
            if !(v.is_string() || matches_type("integer", v)) {
                self.type_error(path, "integer,string", v);
                return;
            }
        } else if !matches_type(&s.ty, v) {
            self.type_error(path, &s.ty, v);
            return;
        }
        // format
        if let Value::String(text) = v {
            if !s.format.is_empty() && !super::format::valid(&s.format, text) {
                self.causes.push(invalid(
                    &self.field(path),
                    v,
                    format!(
                        "{} must be of type {}: {:?}",
                        body(path),
                        s.format,
                        text.as_str()
                    ),
                ));
            }
        }
        // enum
        if let Some(values) = &s.enum_values {
            if !values.contains(v) {
                let list: Vec<String> = values
                    .iter()
                    .map(|e| match e {
                        Value::String(t) => format!("{t:?}"),
                        other => format!("{:?}", other.to_string()),
                    })
                    .collect();
                self.causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: self.field(path),
                    message: format!(
                        "Unsupported value: {}: supported values: {}",
                        render(v),
                        list.join(", ")
                    ),
                });
            }
        }
        match v {
            Value::Number(n) => self.number(s, n.as_f64().unwrap_or(0.0), v, path),
            Value::String(t) => self.string(s, t, v, path),
            Value::Array(a) => self.array(s, a, v, path, old),
            Value::Object(m) => self.object(s, m, path, root, old),
            _ => {}
        }
        self.junctors(s, v, path, root);
        // CEL rules (the value has the schema's type here).
        for rule in s.rules.iter().filter(|_| self.cel) {
            if let Some(c) = rule.check(
                v,
                old.filter(|_| self.old.is_some()),
                &self.field(path),
                &s.ty,
            ) {
                self.causes.push(c);
            }
        }
    }

    fn type_error(&mut self, path: &str, ty: &str, v: &Value) {
        let actual = type_name(v);
        self.causes.push(Cause {
            reason: "FieldValueTypeInvalid",
            field: self.field(path),
            message: format!(
                "Invalid value: {actual:?}: {} must be of type {ty}: {actual:?}",
                body(path)
            ),
        });
    }

    fn number(&mut self, s: &Node, f: f64, v: &Value, path: &str) {
        if let Some(m) = s.multiple_of {
            if m > 0.0 && ((f / m).fract().abs() > 1e-9) {
                self.causes.push(invalid(
                    &self.field(path),
                    v,
                    format!("{} should be a multiple of {}", body(path), go_float(m)),
                ));
            }
        }
        if let Some(max) = s.maximum {
            if f > max || (s.exclusive_maximum && f >= max) {
                let how = if s.exclusive_maximum {
                    "less than"
                } else {
                    "less than or equal to"
                };
                self.causes.push(invalid(
                    &self.field(path),
                    v,
                    format!("{} should be {how} {}", body(path), go_float(max)),
                ));
            }
        }
        if let Some(min) = s.minimum {
            if f < min || (s.exclusive_minimum && f <= min) {
                let how = if s.exclusive_minimum {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                self.causes.push(invalid(
                    &self.field(path),
                    v,
                    format!("{} should be {how} {}", body(path), go_float(min)),
                ));
            }
        }
    }

    fn string(&mut self, s: &Node, t: &str, v: &Value, path: &str) {
        let chars = t.chars().count() as u64;
        if let Some(max) = s.max_length {
            if chars > max {
                let unit = if max == 1 { "byte" } else { "bytes" };
                self.causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: self.field(path),
                    message: format!("Too long: may not be more than {max} {unit}"),
                });
            }
        }
        if let Some(min) = s.min_length {
            if chars < min {
                self.causes.push(invalid(
                    &self.field(path),
                    v,
                    format!("{} should be at least {min} chars long", body(path)),
                ));
            }
        }
        if let Some((src, Some(re))) = &s.pattern {
            if !re.is_match(t) {
                self.causes.push(invalid(
                    &self.field(path),
                    v,
                    format!("{} should match '{src}'", body(path)),
                ));
            }
        }
    }

    fn array(&mut self, s: &Node, a: &[Value], v: &Value, path: &str, old: Option<&Value>) {
        let n = a.len() as u64;
        if let Some(max) = s.max_items {
            if n > max {
                let unit = if max == 1 { "item" } else { "items" };
                self.causes.push(Cause {
                    reason: "FieldValueTooMany",
                    field: self.field(path),
                    message: format!("Too many: {n}: must have at most {max} {unit}"),
                });
            }
        }
        if let Some(min) = s.min_items {
            if n < min {
                self.causes.push(invalid(
                    &self.field(path),
                    &Value::from(n),
                    format!("{} should have at least {min} items", body(path)),
                ));
            }
        }
        let _ = v;
        match s.list_type.as_deref() {
            Some("set") => {
                for (i, x) in a.iter().enumerate() {
                    if a[..i].contains(x) {
                        self.causes.push(Cause {
                            reason: "FieldValueDuplicate",
                            field: self.field(&format!("{path}[{i}]")),
                            message: format!("Duplicate value: {}", render(x)),
                        });
                    }
                }
            }
            Some("map") => {
                let key = |x: &Value| -> Value {
                    let mut m = Map::new();
                    for k in &s.list_map_keys {
                        if let Some(kv) = x.get(k) {
                            m.insert(k.clone(), kv.clone());
                        }
                    }
                    Value::Object(m)
                };
                let keys: Vec<Value> = a.iter().map(key).collect();
                for (i, k) in keys.iter().enumerate() {
                    if keys[..i].contains(k) {
                        self.causes.push(Cause {
                            reason: "FieldValueDuplicate",
                            field: self.field(&format!("{path}[{i}]")),
                            message: format!("Duplicate value: {k}"),
                        });
                    }
                }
            }
            _ => {}
        }
        if let Some(items) = s.items.as_deref() {
            let olds = old.and_then(Value::as_array);
            for (i, x) in a.iter().enumerate() {
                // Transition rules of items compare items at the same map key (list-type
                // map) or index is not correlatable: only map lists get oldSelf.
                let old_item = match (s.list_type.as_deref(), olds) {
                    (Some("map"), Some(olds)) => olds
                        .iter()
                        .find(|o| s.list_map_keys.iter().all(|k| o.get(k) == x.get(k))),
                    _ => None,
                };
                self.node(items, x, &format!("{path}[{i}]"), false, old_item);
            }
        }
    }

    fn object(
        &mut self,
        s: &Node,
        m: &Map<String, Value>,
        path: &str,
        root: bool,
        old: Option<&Value>,
    ) {
        let n = m.len() as u64;
        if let Some(max) = s.max_properties {
            if n > max {
                let unit = if max == 1 { "item" } else { "items" };
                self.causes.push(Cause {
                    reason: "FieldValueTooMany",
                    field: self.field(path),
                    message: format!("Too many: {n}: must have at most {max} {unit}"),
                });
            }
        }
        if let Some(min) = s.min_properties {
            if n < min {
                self.causes.push(invalid(
                    &self.field(path),
                    &Value::from(n),
                    format!("{} should have at least {min} properties", body(path)),
                ));
            }
        }
        for r in &s.required {
            if !m.contains_key(r) {
                self.causes.push(Cause {
                    reason: "FieldValueRequired",
                    field: self.field(&child(path, r)),
                    message: "Required value".to_string(),
                });
            }
        }
        for (k, v) in m {
            if root && META_FIELDS.contains(&k.as_str()) && !s.properties.contains_key(k) {
                continue;
            }
            let old_v = old.and_then(|o| o.get(k));
            if let Some(p) = s.properties.get(k) {
                // Metadata at the root is ObjectMeta, validated by the API server; the
                // schema may only restrict its name and generateName.
                if root && k == "metadata" {
                    for f in ["name", "generateName"] {
                        if let (Some(fs), Some(fv)) = (p.properties.get(f), v.get(f)) {
                            let old_f = old_v.and_then(|o| o.get(f));
                            self.node(fs, fv, &format!("metadata.{f}"), false, old_f);
                        }
                    }
                    continue;
                }
                self.node(p, v, &child(path, k), false, old_v);
            } else if let Some(Some(a)) = s.additional_schema() {
                self.node(a, v, &child(path, k), false, old_v);
            } else if s.no_additional && !(root && META_FIELDS.contains(&k.as_str())) {
                self.causes.push(invalid(
                    &self.field(&child(path, k)),
                    &Value::String(k.clone()),
                    format!("{}.{k} in body is a forbidden property", path),
                ));
            }
        }
    }

    fn junctors(&mut self, s: &Node, v: &Value, path: &str, root: bool) {
        let prefix = self.prefix.clone();
        let probe = |n: &Node| -> Vec<Cause> {
            let mut sub = Validator {
                causes: Vec::new(),
                old: None,
                prefix: prefix.clone(),
                cel: false,
            };
            sub.node(n, v, path, root, None);
            sub.causes
        };
        // These are kube-openapi's composite errors: kube reports them on the path the
        // validation started from (`<nil>` for a custom object), with the schema path quoted.
        let at = if prefix.is_empty() {
            "<nil>".to_string()
        } else {
            prefix.clone()
        };
        let blank = Value::String(String::new());
        if !s.all_of.is_empty() {
            let results: Vec<Vec<Cause>> = s.all_of.iter().map(probe).collect();
            let valid = results.iter().filter(|r| r.is_empty()).count();
            if valid != results.len() {
                self.causes.extend(results.into_iter().flatten());
                let none = if valid == 0 { ". None validated" } else { "" };
                self.causes.push(invalid(
                    &at,
                    &blank,
                    format!("{path:?} must validate all the schemas (allOf){none}"),
                ));
            }
        }
        if !s.any_of.is_empty() {
            let results: Vec<Vec<Cause>> = s.any_of.iter().map(probe).collect();
            if results.iter().all(|r| !r.is_empty()) {
                self.causes.push(invalid(
                    &at,
                    &blank,
                    format!("{path:?} must validate at least one schema (anyOf)"),
                ));
                if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                    self.causes.extend(best);
                }
            }
        }
        if !s.one_of.is_empty() {
            let results: Vec<Vec<Cause>> = s.one_of.iter().map(probe).collect();
            let ok = results.iter().filter(|r| r.is_empty()).count();
            if ok != 1 {
                let found = if ok == 0 {
                    "Found none valid".to_string()
                } else {
                    format!("Found {ok} valid alternatives")
                };
                self.causes.push(invalid(
                    &at,
                    &blank,
                    format!("{path:?} must validate one and only one schema (oneOf). {found}"),
                ));
                if ok == 0 {
                    if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                        self.causes.extend(best);
                    }
                }
            }
        }
        if let Some(n) = &s.not {
            if probe(n).is_empty() {
                self.causes.push(invalid(
                    &at,
                    &blank,
                    format!("{path:?} must not validate the schema (not)"),
                ));
            }
        }
    }
}
