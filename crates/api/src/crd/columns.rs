//! `additionalPrinterColumns`: the Table kube-apiserver serves for custom objects
//! (apiextensions-apiserver's tableconvertor), with the JSONPath subset CRDs use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::table::{human_duration, parse_time, IncludeObject};

/// One column of a custom kind's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// The column's JSONPath (`.spec.size`); its parsed form is in `path`.
    pub json_path: String,
    path: Option<JsonPath>,
}

impl Column {
    fn new(
        name: &str,
        ty: &str,
        format: &str,
        description: String,
        priority: i64,
        jp: &str,
    ) -> Self {
        Column {
            name: name.to_string(),
            ty: ty.to_string(),
            format: format.to_string(),
            description,
            priority,
            json_path: jp.to_string(),
            path: JsonPath::parse(jp),
        }
    }

    fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

fn meta_doc(field: &str) -> String {
    crate::schema::definitions()
        .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        .and_then(|d| d.pointer(&format!("/properties/{field}/description")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The columns after Name of a CRD version (`spec.versions[*]`): its
/// `additionalPrinterColumns`, or kube's default `Age` (a `date` of
/// `.metadata.creationTimestamp`) when it has none.
pub fn printer_columns(version: &Value) -> Vec<Column> {
    let given: Vec<Column> = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
            let jp = s("jsonPath");
            let description = match s("description") {
                "" => format!("Custom resource definition column (in JSONPath format): {jp}"),
                d => d.to_string(),
            };
            let priority = c.get("priority").and_then(Value::as_i64).unwrap_or(0);
            Column::new(s("name"), s("type"), s("format"), description, priority, jp)
        })
        .collect();
    if !given.is_empty() {
        return given;
    }
    vec![Column::new(
        "Age",
        "date",
        "",
        meta_doc("creationTimestamp"),
        0,
        ".metadata.creationTimestamp",
    )]
}

/// The cells of `obj` for `cols` (without the Name cell), at `now`: integers, numbers,
/// booleans and strings as JSON values of the column's type (`null` when missing or of
/// another type), dates as ages (`5m`, `<invalid>`).
pub fn column_cells(cols: &[Column], obj: &Value, now: SystemTime) -> Vec<Value> {
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    cols.iter()
        .map(|c| {
            let found = c.path.as_ref().and_then(|p| p.eval(obj).into_iter().next());
            match found {
                Some(v) => cell(&c.ty, v, now_secs),
                None => Value::Null,
            }
        })
        .collect()
}

fn cell(ty: &str, v: &Value, now_secs: i64) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Value::from)
            .unwrap_or(Value::Null),
        ("number", Value::Number(n)) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("string", Value::String(s)) => Value::String(s.clone()),
        // kube prints any JSONPath result into a string column.
        ("string", other) => Value::String(other.to_string()),
        ("date", Value::String(s)) => match parse_time(s) {
            Some(t) if now_secs - t < -1 => Value::String("<invalid>".into()),
            Some(t) => Value::String(human_duration(Duration::from_secs(
                (now_secs - t).max(0) as u64
            ))),
            None => Value::String("<invalid>".into()),
        },
        _ => Value::Null,
    }
}

/// The Table (`meta.k8s.io/v1`) of custom objects: Name, then `cols`, in the shape of
/// [`crate::table::to_table`]. The caller fills `metadata.resourceVersion`/`continue`.
pub fn to_table(
    cols: &[Column],
    items: &[Value],
    include: IncludeObject,
    now: SystemTime,
) -> Value {
    let mut defs = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": meta_doc("name"),
        "priority": 0,
    })];
    defs.extend(cols.iter().map(Column::definition));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![json!(crate::object::name(o))];
            cells.extend(column_cells(cols, o, now));
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => crate::table::partial_metadata(o),
                IncludeObject::Object => o.clone(),
            };
            json!({ "cells": cells, "object": object })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

// ------------------------------------------------------------ JSONPath subset

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.a.b == value)]` (or `!=`); `None` value: `[?(@.a.b)]` (exists).
    Filter(Vec<String>, bool, Option<Value>),
}

/// A parsed JSONPath of the subset kube's CRD columns use: `.a.b`, `['a']`, `[0]`,
/// `[*]`, `.*`, `[?(@.type=="Ready")]`; an optional `{…}` wrapper.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    pub fn parse(src: &str) -> Option<JsonPath> {
        let s = src.trim();
        let s = s
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(s);
        let s = s.strip_prefix('$').unwrap_or(s);
        let b = s.as_bytes();
        let mut i = 0;
        let mut steps = Vec::new();
        while i < b.len() {
            match b[i] {
                b'.' => {
                    i += 1;
                    if i < b.len() && b[i] == b'*' {
                        steps.push(Step::All);
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        i += 1;
                    }
                    if start == i {
                        // `.` alone selects the object itself.
                        if i == b.len() && steps.is_empty() {
                            break;
                        }
                        return None;
                    }
                    steps.push(Step::Field(s[start..i].to_string()));
                }
                b'[' => {
                    let end = find_close(s, i)?;
                    let inner = s[i + 1..end].trim();
                    steps.push(bracket(inner)?);
                    i = end + 1;
                }
                _ => return None,
            }
        }
        Some(JsonPath(steps))
    }

    /// The values the path selects in `v`, in document order.
    pub fn eval<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for x in cur {
                match step {
                    Step::Field(f) => next.extend(x.get(f)),
                    Step::Index(n) => {
                        if let Some(a) = x.as_array() {
                            let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                            if idx >= 0 {
                                next.extend(a.get(idx as usize));
                            }
                        }
                    }
                    Step::All => match x {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Step::Filter(path, eq, want) => {
                        if let Some(a) = x.as_array() {
                            for item in a {
                                let got = path.iter().try_fold(item, |acc, k| acc.get(k));
                                let keep = match (got, want) {
                                    (Some(g), Some(w)) => (g == w) == *eq,
                                    (None, Some(_)) => !*eq,
                                    (g, None) => g.is_some(),
                                };
                                if keep {
                                    next.push(item);
                                }
                            }
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }
}

fn find_close(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s[open..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
}

fn bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::All);
    }
    if let Some(f) = unquote(inner) {
        return Some(Step::Field(f.to_string()));
    }
    if let Ok(n) = inner.parse::<i64>() {
        return Some(Step::Index(n));
    }
    let expr = inner.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (lhs, eq, rhs) = if let Some((l, r)) = expr.split_once("==") {
        (l, true, Some(r))
    } else if let Some((l, r)) = expr.split_once("!=") {
        (l, false, Some(r))
    } else {
        (expr, true, None)
    };
    let lhs = lhs.trim().strip_prefix('@')?;
    let path: Vec<String> = lhs.split('.').skip(1).map(str::to_string).collect();
    if path.is_empty() || path.iter().any(String::is_empty) {
        return None;
    }
    let want = match rhs {
        None => None,
        Some(r) => Some(match unquote(r) {
            Some(t) => Value::String(t.to_string()),
            None => serde_json::from_str(r.trim()).ok()?,
        }),
    };
    Some(Step::Filter(path, eq, want))
}
