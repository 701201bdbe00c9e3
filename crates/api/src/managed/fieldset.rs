//! Field sets in the FieldsV1 encoding and how an object's fields are tracked: which
//! lists are associative (by which keys), sets or atomic; the fields a value has, the
//! fields a write changed or added, and the fields it removed.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::patch::patch_meta;
use crate::schema::Cursor;

/// A set of field paths as a tree of FieldsV1 path elements (`f:x`, `k:{..}`, `v:..`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldSet {
    /// The path ending here is itself in the set.
    pub(super) member: bool,
    pub(super) children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub(super) fn leaf() -> FieldSet {
        FieldSet {
            member: true,
            children: BTreeMap::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub(super) fn from_v1(v: &Value) -> FieldSet {
        let Some(m) = v.as_object() else {
            return FieldSet::default();
        };
        let mut s = FieldSet {
            member: m.is_empty() || m.contains_key("."),
            children: BTreeMap::new(),
        };
        for (k, c) in m {
            if k != "." {
                s.children.insert(k.clone(), FieldSet::from_v1(c));
            }
        }
        s
    }

    pub(super) fn to_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && self.children.values().any(|c| !c.is_empty()) {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            if !c.is_empty() {
                m.insert(k.clone(), c.to_v1());
            }
        }
        Value::Object(m)
    }

    pub(super) fn prune(&mut self) {
        self.children.retain(|_, c| {
            c.prune();
            !c.is_empty()
        });
    }

    pub(super) fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    /// Removes `other`'s members (not the children of a member `other` lacks).
    pub(super) fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (k, c) in &other.children {
            if let Some(mine) = self.children.get_mut(k) {
                mine.subtract(c);
            }
        }
        self.prune();
    }

    pub(super) fn intersect(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersect(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// The member paths, in order.
    pub(super) fn paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.paths(prefix, out);
            prefix.pop();
        }
    }
}

/// A path as structured-merge-diff prints it: `.spec.containers[name="app"].image`.
pub(super) fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let keys: Vec<String> = match serde_json::from_str::<Map<String, Value>>(k) {
                Ok(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                Err(_) => vec![k.to_string()],
            };
            s.push('[');
            s.push_str(&keys.join(","));
            s.push(']');
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else {
            s.push_str(&format!("[{e}]"));
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// Types: how a field's value is tracked

#[derive(Debug, Clone, PartialEq)]
pub(super) enum ListType {
    /// Owned whole.
    Atomic,
    /// Elements are primitives owned one by one (`v:<value>`).
    Set,
    /// Elements are objects owned one by one, identified by these keys (`k:{..}`).
    Map(Vec<&'static str>),
}

/// Structured-merge-diff list-map keys that differ from the strategic-merge-patch key:
/// ports are identified by number and protocol.
const LIST_MAP_KEYS: &[(&str, &str, &[&str])] = &[
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        &["port", "protocol"],
    ),
];

/// Types whose values are owned whole (`x-kubernetes-map-type: atomic`).
const ATOMIC_TYPES: &[&str] = &["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"];

/// The value of a list-map key an element leaves out (defaulted by the server).
pub(super) fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| json!("TCP"))
}

pub(super) fn list_type(parent: &Cursor, field: &str) -> ListType {
    let Some(name) = parent.name else {
        return ListType::Atomic;
    };
    if let Some((_, _, keys)) = LIST_MAP_KEYS
        .iter()
        .find(|(d, f, _)| *d == name && *f == field)
    {
        return ListType::Map(keys.to_vec());
    }
    match patch_meta(name, field) {
        Some(m) if m.merge => match m.merge_key {
            Some(k) => ListType::Map(vec![k]),
            None => ListType::Set,
        },
        _ => ListType::Atomic,
    }
}

pub(super) fn atomic_map(cur: &Cursor) -> bool {
    cur.name.is_some_and(|n| ATOMIC_TYPES.contains(&n))
}

/// The `k:{..}` path element of an associative list's element.
pub(super) fn element_key(elem: &Value, keys: &[&str]) -> Option<String> {
    let mut m = BTreeMap::new();
    for k in keys {
        match elem.get(*k).cloned().or_else(|| key_default(k)) {
            Some(v) => {
                m.insert(*k, v);
            }
            None if keys.len() == 1 => return None,
            None => {}
        }
    }
    Some(format!("k:{}", serde_json::to_string(&m).ok()?))
}

pub(super) fn value_key(v: &Value) -> String {
    format!("v:{v}")
}

/// Where a value sits in the type graph: its schema, and how it is tracked if a list.
#[derive(Clone)]
pub(super) struct Ty {
    pub(super) cur: Cursor,
    pub(super) list: ListType,
}

impl Ty {
    pub(super) fn root(cur: Cursor) -> Ty {
        Ty {
            cur,
            list: ListType::Atomic,
        }
    }

    pub(super) fn field(&self, k: &str) -> Ty {
        Ty {
            cur: self.cur.field(k),
            list: list_type(&self.cur, k),
        }
    }

    pub(super) fn items(&self) -> Ty {
        Ty::root(self.cur.items())
    }

    pub(super) fn granular_map(&self, v: &Value) -> bool {
        v.is_object() && !atomic_map(&self.cur)
    }
}

/// Fields an empty object of the Go type already has: non-pointer structs (`spec`,
/// `template`, …) and fields serialized without `omitempty` (the schema's required ones,
/// such as a pod's `containers`). A write that fills them adds their contents, not the
/// field itself (`.`).
pub(super) fn always_present(field: &str, parent: &Ty, ty: &Ty) -> bool {
    let required = parent
        .cur
        .schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|f| f == field));
    required
        || matches!(
            field,
            "metadata" | "spec" | "status" | "template" | "strategy"
        ) && ty.cur.schema.is_some_and(|s| s.get("properties").is_some())
}

/// Every path of `v`. `dot`: maps own themselves (`.`) — true for what an update adds,
/// false for an applied configuration (which owns only its leaves and list elements).
pub(super) fn set_of(v: &Value, ty: &Ty, dot: bool) -> FieldSet {
    match v {
        Value::Object(m) if ty.granular_map(v) => {
            let mut s = FieldSet {
                member: dot || m.is_empty(),
                children: BTreeMap::new(),
            };
            for (k, c) in m {
                let cty = ty.field(k);
                let mut cs = set_of(c, &cty, dot);
                if dot && always_present(k, ty, &cty) && !cs.children.is_empty() {
                    cs.member = false;
                }
                s.children.insert(format!("f:{k}"), cs);
            }
            s
        }
        Value::Array(items) => match &ty.list {
            ListType::Atomic => FieldSet::leaf(),
            ListType::Set => {
                let mut s = FieldSet {
                    member: dot || items.is_empty(),
                    children: BTreeMap::new(),
                };
                for i in items {
                    s.children.insert(value_key(i), FieldSet::leaf());
                }
                s
            }
            ListType::Map(keys) => {
                let mut s = FieldSet {
                    member: dot || items.is_empty(),
                    children: BTreeMap::new(),
                };
                let ity = ty.items();
                for i in items {
                    let Some(k) = element_key(i, keys) else {
                        // An element without its key: the list can only be owned whole.
                        return FieldSet::leaf();
                    };
                    let mut es = set_of(i, &ity, dot);
                    es.member = true;
                    s.children.insert(k, es);
                }
                s
            }
        },
        _ => FieldSet::leaf(),
    }
}

/// The fields `new` changed or added relative to `old`.
pub(super) fn changed(old: &Value, new: &Value, ty: &Ty) -> FieldSet {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) if ty.granular_map(new) => {
            let mut s = FieldSet::default();
            for (k, nv) in n {
                let ov = o.get(k);
                if ov == Some(nv) {
                    continue;
                }
                let cty = ty.field(k);
                let cs = match ov {
                    None => {
                        let mut cs = set_of(nv, &cty, true);
                        cs.member = !always_present(k, ty, &cty) || cs.children.is_empty();
                        cs
                    }
                    Some(ov) => changed(ov, nv, &cty),
                };
                if !cs.is_empty() {
                    s.children.insert(format!("f:{k}"), cs);
                }
            }
            s
        }
        (Value::Array(o), Value::Array(n)) if ty.list != ListType::Atomic => {
            if o == n {
                return FieldSet::default();
            }
            match &ty.list {
                ListType::Set => {
                    let mut s = FieldSet::default();
                    for v in n.iter().filter(|v| !o.contains(v)) {
                        s.children.insert(value_key(v), FieldSet::leaf());
                    }
                    s
                }
                ListType::Map(keys) => {
                    let ity = ty.items();
                    let olds: BTreeMap<String, &Value> = o
                        .iter()
                        .filter_map(|e| Some((element_key(e, keys)?, e)))
                        .collect();
                    let mut s = FieldSet::default();
                    for e in n {
                        let Some(k) = element_key(e, keys) else {
                            return FieldSet::leaf();
                        };
                        let es = match olds.get(&k) {
                            None => {
                                let mut es = set_of(e, &ity, true);
                                es.member = true;
                                es
                            }
                            Some(oe) => changed(oe, e, &ity),
                        };
                        if !es.is_empty() {
                            s.children.insert(k, es);
                        }
                    }
                    s
                }
                ListType::Atomic => unreachable!("atomic lists are compared whole"),
            }
        }
        _ if old == new => FieldSet::default(),
        _ => {
            let mut s = set_of(new, ty, true);
            s.member = true;
            s
        }
    }
}

/// Every path of `v`, each a member (what removing `v` takes away).
pub(super) fn all_paths(v: &Value, ty: &Ty) -> FieldSet {
    let mut s = set_of(v, ty, true);
    mark_all(&mut s);
    s
}

pub(super) fn mark_all(s: &mut FieldSet) {
    s.member = true;
    s.children.values_mut().for_each(mark_all);
}

/// The paths of `old` that `new` no longer has: `all_paths(old) − all_paths(new)`,
/// computed by walking both together so unchanged subtrees cost one comparison.
pub(super) fn removed(old: &Value, new: &Value, ty: &Ty) -> FieldSet {
    let mut out = FieldSet::default();
    if old == new {
        return out;
    }
    let Some(olds) = keyed_children(old, ty) else {
        return out;
    };
    let news: BTreeMap<String, &Value> = keyed_children(new, ty)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    for (k, ov, cty) in olds {
        let r = match news.get(&k) {
            Some(nv) => removed(ov, nv, &cty),
            None => all_paths(ov, &cty),
        };
        if !r.is_empty() {
            out.children.insert(k, r);
        }
    }
    out
}

/// The children [`set_of`] gives `v` (path element, value, type), or None for a leaf.
fn keyed_children<'a>(v: &'a Value, ty: &Ty) -> Option<Vec<(String, &'a Value, Ty)>> {
    match v {
        Value::Object(m) if ty.granular_map(v) => Some(
            m.iter()
                .map(|(k, c)| (format!("f:{k}"), c, ty.field(k)))
                .collect(),
        ),
        Value::Array(items) => match &ty.list {
            ListType::Atomic => None,
            ListType::Set => Some(
                items
                    .iter()
                    .map(|i| (value_key(i), i, Ty::root(Cursor::default())))
                    .collect(),
            ),
            ListType::Map(keys) => {
                let ity = ty.items();
                items
                    .iter()
                    .map(|i| Some((element_key(i, keys)?, i, ity.clone())))
                    .collect()
            }
        },
        _ => None,
    }
}
