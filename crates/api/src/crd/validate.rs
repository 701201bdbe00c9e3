//! OpenAPI v3 validation of custom objects against a compiled schema, with kube-openapi's
//! messages and field paths as apiextensions-apiserver reports them, plus list types,
//! ratcheting on update and CEL rules.

use serde_json::{Map, Value};

use super::schema::{Node, META_FIELDS};
use super::{go_float, render, Cause};

/// Validates `v` against `root`. `old`: the old object on updates (ratcheting and
/// `oldSelf`); `prefix`: the field path validation starts from (kube's `fldPath`); `cel`:
/// whether CEL rules run; `resource_root`: `v` is a whole object (apiVersion, kind and
/// metadata are the API server's).
pub(super) fn run(
    root: &Node,
    v: &Value,
    old: Option<&Value>,
    prefix: &str,
    cel: bool,
    resource_root: bool,
) -> Vec<Cause> {
    let mut val = Validator {
        causes: Vec::new(),
        old: old.map(|_| ()),
        prefix: prefix.to_string(),
        cel,
        cel_causes: Vec::new(),
    };
    val.node(root, v, "", resource_root, old);
    val.causes.extend(val.cel_causes);
    val.causes
}

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
    cel_causes: Vec<Cause>,
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
        // In kube-openapi's order: junctors, string, format, number, slice, enum, object.
        self.junctors(s, v, path, root);
        if let Value::String(t) = v {
            self.string(s, t, v, path);
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
        match v {
            Value::Number(n) => self.number(s, n.as_f64().unwrap_or(0.0), v, path),
            Value::Array(a) => self.array(s, a, v, path, old),
            _ => {}
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
        if let Value::Object(m) = v {
            self.object(s, m, path, root, old);
        }
        // CEL rules (the value has the schema's type here); kube runs them in a pass of
        // their own, after the OpenAPI validation, so their causes come last.
        for rule in s.rules.iter().filter(|_| self.cel) {
            if let Some(c) = rule.check(
                v,
                old.filter(|_| self.old.is_some()),
                &self.field(path),
                &s.ty,
            ) {
                self.cel_causes.push(c);
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
        if s.embedded {
            self.embedded_type_meta(m, path);
        }
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

    /// An embedded resource needs its apiVersion and kind (its metadata is optional), as
    /// kube's ObjectMeta checks of embedded resources require.
    fn embedded_type_meta(&mut self, m: &Map<String, Value>, path: &str) {
        for k in ["apiVersion", "kind"] {
            let field = self.field(&child(path, k));
            match m.get(k) {
                None => self.causes.push(Cause {
                    reason: "FieldValueRequired",
                    field,
                    message: "Required value: must not be empty".to_string(),
                }),
                Some(Value::String(t)) if t.is_empty() => self.causes.push(invalid(
                    &field,
                    &Value::String(String::new()),
                    "must not be empty".into(),
                )),
                Some(Value::String(_)) => {}
                Some(other) => self
                    .causes
                    .push(invalid(&field, other, "must be a string".into())),
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
                cel_causes: Vec::new(),
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
