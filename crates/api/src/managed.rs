//! Field ownership (`metadata.managedFields`) and server-side apply, with Kubernetes'
//! structured-merge-diff semantics over JSON objects.
//!
//! Contract:
//! - every write records which *manager* (`?fieldManager=` or the client's User-Agent)
//!   set which fields: [`on_update`] gives the fields a create/update/patch changed or
//!   added to the writer's `Update` entry and takes them away from every other manager;
//!   fields the write removed leave every entry; empty entries are dropped;
//! - [`apply`] merges an applied configuration into the live object: the applied field
//!   set becomes the manager's `Apply` entry, changing a field another manager owns is a
//!   conflict ([`ApplyConflicts`], HTTP 409) unless forced (then ownership moves), setting
//!   the same value shares ownership, and fields the manager applied before but omits now
//!   are removed unless someone else owns them.
//!
//! Field sets use the FieldsV1 encoding: `{"f:data":{".":{},"f:a":{}}}` where `f:<name>`
//! is a field, `.` the node itself (when it has children), `k:{"name":"c"}` an element of
//! an associative list by its keys, `v:<json>` an element of a set list. Which lists are
//! associative (and by which keys), sets or atomic comes from the kind's type graph (the
//! strategic-merge-patch metadata, [`crate::patch::patch_meta`]); without a schema (custom
//! resources) maps are granular and lists atomic.
//!
//! Server-set metadata (name, namespace, uid, resourceVersion, generation,
//! creationTimestamp, managedFields, …), `apiVersion` and `kind` are never owned.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value};

use crate::schema::Cursor;

mod fieldset;
use fieldset::{
    changed, element_key, removed, render_path, set_of, value_key, FieldSet, ListType, Ty,
};

/// Which part of the object a write may change, and so which fields it is recorded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole object (kinds without a status subresource).
    Whole,
    /// Everything but `status` (the main resource of a kind with a status subresource).
    Main,
    /// Only `status`, through the named subresource (`status`, `approval`).
    Subresource(&'static str),
}

/// Who writes, and how the object is typed.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager (`kubectl-create`, `kubectl-client-side-apply`, `kubectl`, …).
    pub manager: &'a str,
    /// The apiVersion the request used (`v1`, `apps/v1`).
    pub api_version: &'a str,
    /// The write's time, RFC 3339 (`2026-01-01T00:00:00Z`).
    pub time: &'a str,
    /// The kind's OpenAPI definition name (`io.k8s.api.core.v1.ConfigMap`); None for
    /// kinds without a schema.
    pub openapi_name: Option<&'a str>,
    pub scope: Scope,
}

impl Writer<'_> {
    fn subresource(&self) -> Option<&'static str> {
        match self.scope {
            Scope::Subresource(s) => Some(s),
            _ => None,
        }
    }

    fn root(&self) -> Cursor {
        self.openapi_name.map(Cursor::root).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Objects as ownership sees them

/// Metadata the server sets, never owned by a manager.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "generation",
    "selfLink",
];

/// The part of `obj` whose fields a write in `scope` is tracked for.
fn tracked(obj: &Value, scope: Scope) -> Value {
    let mut v = obj.clone();
    let Some(m) = v.as_object_mut() else {
        return json!({});
    };
    m.remove("apiVersion");
    m.remove("kind");
    match scope {
        Scope::Whole => {}
        Scope::Main => {
            m.remove("status");
        }
        Scope::Subresource(_) => m.retain(|k, _| k == "status"),
    }
    if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_METADATA {
            md.remove(*k);
        }
        if md.is_empty() {
            m.remove("metadata");
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// managedFields entries

struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: Option<Value>,
    set: FieldSet,
}

impl Entry {
    fn decode(v: &Value) -> Entry {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            subresource: v
                .get("subresource")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            time: v.get("time").cloned(),
            set: v.get("fieldsV1").map(FieldSet::from_v1).unwrap_or_default(),
        }
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), t.clone());
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }

    /// Same manager identity: name, operation, subresource and (for updates) apiVersion.
    fn is(&self, manager: &str, operation: &str, api_version: &str, sub: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == sub
            && (operation == "Apply" || self.api_version == api_version)
    }

    /// How kube-apiserver names the manager in conflicts.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// The entries a write starts from: those the written object carries (a client may set
/// managedFields explicitly), else the stored object's. An empty list keeps the stored
/// entries, as kube-apiserver does; `[{}]` (one empty entry) clears them.
pub fn base_entries(old: Option<&Value>, new: &Value) -> Vec<Value> {
    let of = |o: &Value| {
        o.pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let sent = of(new);
    if !sent.is_empty() {
        return sent;
    }
    old.map(of).unwrap_or_default()
}

fn finish(entries: Vec<Entry>) -> Vec<Value> {
    entries
        .into_iter()
        .filter(|e| !e.set.is_empty() && !e.manager.is_empty())
        .map(|e| e.encode())
        .collect()
}

/// Records a create (`old` None) or update by `w.manager`: the fields the write changed
/// or added join its `Update` entry and leave every other entry; the fields it removed
/// leave every entry. Returns the new `metadata.managedFields`.
pub fn on_update(managed: &[Value], old: Option<&Value>, new: &Value, w: &Writer) -> Vec<Value> {
    let ty = Ty::root(w.root());
    let empty = json!({});
    let old_t = old.map(|o| tracked(o, w.scope)).unwrap_or(empty);
    let new_t = tracked(new, w.scope);
    let changed = changed(&old_t, &new_t, &ty);
    let removed = removed(&old_t, &new_t, &ty);
    let sub = w.subresource();
    let mut entries: Vec<Entry> = managed.iter().map(Entry::decode).collect();
    let mut mine = None;
    for (i, e) in entries.iter_mut().enumerate() {
        e.set.subtract(&removed);
        if e.is(w.manager, "Update", w.api_version, sub) {
            mine = Some(i);
        } else {
            e.set.subtract(&changed);
        }
    }
    if !changed.is_empty() || !removed.is_empty() {
        let i = match mine {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    manager: w.manager.to_string(),
                    operation: "Update".into(),
                    api_version: w.api_version.to_string(),
                    subresource: sub.map(str::to_string),
                    time: None,
                    set: FieldSet::default(),
                });
                entries.len() - 1
            }
        };
        let e = &mut entries[i];
        e.set.union(&changed);
        e.set.prune();
        e.time = Some(json!(w.time));
    }
    finish(entries)
}

// ---------------------------------------------------------------------------------------
// Apply

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager as kube-apiserver names it (`"kubectl-create" using v1`).
    pub manager: String,
    /// The field (`.data.a`).
    pub field: String,
}

/// Why an apply was refused: fields other managers own would change (HTTP 409, reason
/// `Conflict`). Apply again with `force` to take them over, or leave them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflicts {
    pub conflicts: Vec<Conflict>,
}

impl ApplyConflicts {
    /// The Status causes: reason `FieldManagerConflict`, one per field.
    pub fn causes(&self) -> Vec<crate::strategy::Cause> {
        self.conflicts
            .iter()
            .map(|c| crate::strategy::Cause {
                reason: "FieldManagerConflict",
                field: c.field.clone(),
                message: format!("conflict with {}", c.manager),
            })
            .collect()
    }
}

impl fmt::Display for ApplyConflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [c] = self.conflicts.as_slice() {
            return write!(
                f,
                "Apply failed with 1 conflict: conflict with {}: {}",
                c.manager, c.field
            );
        }
        let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in &self.conflicts {
            by_manager.entry(&c.manager).or_default().push(&c.field);
        }
        let mut lines = Vec::new();
        for (m, fields) in by_manager {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(fields.iter().map(|f| format!("- {f}")));
        }
        write!(
            f,
            "Apply failed with {} conflicts: {}",
            self.conflicts.len(),
            lines.join("\n")
        )
    }
}

impl std::error::Error for ApplyConflicts {}

/// Metadata an applied configuration may not set (the server's), dropped before merging.
const APPLY_IGNORED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "generation",
    "selfLink",
];

/// Merges `applied` over `live`: granular maps by key, associative lists by element key
/// (live order, new elements appended), set lists as a union, everything else replaced.
fn merge(live: Option<&Value>, applied: &Value, ty: &Ty) -> Value {
    match (live, applied) {
        (Some(Value::Object(l)), Value::Object(a)) if ty.granular_map(applied) => {
            let mut out = l.clone();
            for (k, av) in a {
                if av.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = merge(l.get(k), av, &ty.field(k));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(l)), Value::Array(a)) => match &ty.list {
            ListType::Atomic => applied.clone(),
            ListType::Set => {
                let mut out = l.clone();
                for v in a {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Map(keys) => {
                let ity = ty.items();
                let mut out = l.clone();
                for e in a {
                    let Some(k) = element_key(e, keys) else {
                        return applied.clone();
                    };
                    match out
                        .iter()
                        .position(|x| element_key(x, keys).as_ref() == Some(&k))
                    {
                        Some(i) => out[i] = merge(Some(&out[i]), e, &ity),
                        None => out.push(e.clone()),
                    }
                }
                Value::Array(out)
            }
        },
        (_, Value::Object(a)) => {
            // Nothing (or another type) live: the applied map, without its nulls.
            let mut out = Map::new();
            for (k, av) in a {
                if !av.is_null() {
                    out.insert(k.clone(), merge(None, av, &ty.field(k)));
                }
            }
            Value::Object(out)
        }
        _ => applied.clone(),
    }
}

/// Removes from `obj` the members of `remove` under which nothing in `kept` is owned.
fn prune(obj: &mut Value, remove: &FieldSet, others: &FieldSet, ty: &Ty) {
    for (elem, rs) in &remove.children {
        let os = others.children.get(elem).cloned().unwrap_or_default();
        let drop = rs.member && os.is_empty();
        match obj {
            Value::Object(m) => {
                let Some(name) = elem.strip_prefix("f:") else {
                    continue;
                };
                if drop {
                    m.remove(name);
                } else if let Some(c) = m.get_mut(name) {
                    prune(c, rs, &os, &ty.field(name));
                }
            }
            Value::Array(items) => {
                if elem.starts_with("v:") {
                    if drop {
                        items.retain(|i| value_key(i) != *elem);
                    }
                } else if let ListType::Map(keys) = &ty.list {
                    let ity = ty.items();
                    if drop {
                        items.retain(|i| element_key(i, keys).as_ref() != Some(elem));
                    } else if let Some(i) = items
                        .iter_mut()
                        .find(|i| element_key(i, keys).as_ref() == Some(elem))
                    {
                        prune(i, rs, &os, &ity);
                    }
                }
            }
            _ => {}
        }
    }
}

/// kubectl's client-side apply record, and the manager kubectl's server-side apply uses.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const KUBECTL: &str = "kubectl";

fn last_applied(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()
}

/// The fields of the live object's last-applied configuration, when `kubectl` applies
/// server-side over a client-side apply (kube-apiserver lets it take those over).
fn last_applied_set(live: Option<&Value>, w: &Writer, ty: &Ty) -> Option<FieldSet> {
    if w.manager != KUBECTL {
        return None;
    }
    let config: Value = serde_json::from_str(last_applied(live?)?).ok()?;
    let mut s = set_of(&tracked(&config, w.scope), ty, false);
    s.member = false;
    Some(s)
}

/// Server-side apply of `applied` (the manager's whole intent for the object) over `live`
/// (None: the apply creates it), with the stored `managed` entries. Returns the merged
/// object (its managedFields not yet set) and the new managedFields.
pub fn apply(
    live: Option<&Value>,
    managed: &[Value],
    applied: &Value,
    force: bool,
    w: &Writer,
) -> Result<(Value, Vec<Value>), ApplyConflicts> {
    let ty = Ty::root(w.root());
    let sub = w.subresource();
    let original = applied;
    let mut applied = applied.clone();
    if let Some(md) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in APPLY_IGNORED_METADATA {
            md.remove(*k);
        }
    }
    // What the applier may write in this scope; the rest of its configuration is ignored.
    let intent = tracked(&applied, w.scope);
    let mut aset = set_of(&intent, &ty, false);
    aset.member = false;
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let mut merged = merge(Some(live_v), &applied, &ty);
    if w.scope != Scope::Whole {
        // Fields outside the scope keep their live values.
        if let (Some(m), Some(l)) = (merged.as_object_mut(), live_v.as_object()) {
            let keep = |k: &str| match w.scope {
                Scope::Main => k == "status",
                _ => k != "status" && k != "metadata" && k != "apiVersion" && k != "kind",
            };
            m.retain(|k, _| !keep(k));
            for (k, v) in l.iter().filter(|(k, _)| keep(k)) {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    let live_t = tracked(live_v, w.scope);
    let changed = changed(&live_t, &tracked(&merged, w.scope), &ty);

    let mut entries: Vec<Entry> = managed.iter().map(Entry::decode).collect();
    let mine = entries
        .iter()
        .position(|e| e.is(w.manager, "Apply", w.api_version, sub));
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == mine {
            continue;
        }
        let c = e.set.intersect(&changed);
        if c.is_empty() {
            continue;
        }
        if force {
            e.set.subtract(&c);
        } else {
            let mut paths = Vec::new();
            c.paths(&mut Vec::new(), &mut paths);
            conflicts.extend(paths.iter().map(|p| Conflict {
                manager: e.describe(),
                field: render_path(p),
            }));
        }
    }
    if !conflicts.is_empty() {
        if let Some(allowed) = last_applied_set(live, w, &ty) {
            // kubectl moving from client-side to server-side apply: what its
            // last-applied configuration set is its own already, so it takes it over.
            let mut outside = FieldSet::default();
            for (i, e) in entries.iter().enumerate() {
                if Some(i) != mine {
                    outside.union(&e.set.intersect(&changed));
                }
            }
            outside.subtract(&allowed);
            if outside.is_empty() {
                return apply(live, managed, original, true, w);
            }
        }
        conflicts.sort_by(|a, b| (&a.manager, &a.field).cmp(&(&b.manager, &b.field)));
        return Err(ApplyConflicts { conflicts });
    }

    // Fields this manager applied before but leaves out now go, unless others own them.
    let previous = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    let mut dropped = previous.clone();
    dropped.subtract(&aset);
    // What stays owned (by others, or by this apply) keeps its ancestors.
    let mut kept = aset.clone();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != mine {
            kept.union(&e.set);
        }
    }
    prune(&mut merged, &dropped, &kept, &ty);

    let gone = removed(&live_t, &tracked(&merged, w.scope), &ty);
    for e in entries.iter_mut() {
        e.set.subtract(&gone);
    }
    if live.is_some_and(|l| last_applied(l).is_some()) && w.manager == KUBECTL {
        // kubectl's server-side apply keeps the client-side annotation current, so a
        // later client-side apply still knows what was applied.
        let mut config = original.clone();
        if let Some(a) = config
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(LAST_APPLIED);
        }
        if let Ok(text) = serde_json::to_string(&config) {
            if let Some(md) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
                let a = md.entry("annotations").or_insert_with(|| json!({}));
                if let Some(a) = a.as_object_mut() {
                    a.insert(LAST_APPLIED.into(), json!(format!("{text}\n")));
                }
            }
        }
    }
    let object_changed =
        live.is_none_or(|l| tracked(l, Scope::Whole) != tracked(&merged, Scope::Whole));
    let entry = Entry {
        manager: w.manager.to_string(),
        operation: "Apply".into(),
        api_version: w.api_version.to_string(),
        subresource: sub.map(str::to_string),
        time: Some(json!(w.time)),
        set: aset,
    };
    match mine {
        Some(i) => {
            let keep_time = !object_changed
                && entries[i].set == entry.set
                && entries[i].api_version == entry.api_version;
            let time = if keep_time {
                entries[i].time.clone()
            } else {
                entry.time.clone()
            };
            entries[i] = Entry { time, ..entry };
        }
        None => entries.push(entry),
    }
    Ok((merged, finish(entries)))
}

#[cfg(test)]
mod tests;
