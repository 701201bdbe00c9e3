//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes
//! strategic merge patch (SMP).
//!
//! Strategic merge patch is a merge patch that knows, per field, whether a list is
//! replaced (the default) or merged element by element, and by which key. That knowledge
//! lives in the Go struct tags of the Kubernetes types (`patchStrategy`, `patchMergeKey`),
//! which the OpenAPI schemas k8s-openapi ships do not carry, so [`patch_meta`] keeps them
//! as a table keyed by (OpenAPI definition name, field), and the patch walks the type
//! graph (from [`crate::schema`]) to know which definition each nested object is.
//!
//! Directives understood, as kube-apiserver applies them (`MergeParallelList` on,
//! unmatched nulls ignored):
//! - `field: null` deletes the field;
//! - `$patch: replace` in a map replaces the map; as a list element, the list;
//! - `$patch: delete` in a map empties it; as a list element `{"$patch": "delete",
//!   "<mergeKey>": v}` removes the elements with that key;
//! - `$patch: merge` in a map is the default merge (kube rejects it; accepting it is
//!   harmless); in a list it is rejected as kube does;
//! - `$retainKeys: [..]` drops the original's keys not listed (fields with the
//!   `retainKeys` strategy, where a union member is swapped, e.g. a volume's source);
//! - `$setElementOrder/<field>: [..]` orders a merged list (kubectl apply sends the full
//!   order of the elements it manages; server-only elements keep their live position);
//! - `$deleteFromPrimitiveList/<field>: [..]` removes values from a merged primitive list.

use serde_json::{Map, Value};

use crate::schema::Cursor;

mod meta;
pub use meta::{all_patch_meta, patch_meta, PatchMeta};

/// The patch flavours, by the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    /// `application/json-patch+json`, `application/merge-patch+json`,
    /// `application/strategic-merge-patch+json`, `application/apply-patch+yaml`.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }

    /// The Content-Type this patch flavour is sent with.
    pub fn content_type(&self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch could not be applied; the API server answers 422 (or 400 for bad bodies).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the patch body is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("{0:?} patches are not supported")]
    Unsupported(PatchType),
    #[error("the patch does not apply: {reason}")]
    Invalid { reason: String },
}

impl PatchError {
    fn invalid(path: &str, reason: impl std::fmt::Display) -> Self {
        let reason = if path.is_empty() {
            reason.to_string()
        } else {
            format!("{path}: {reason}")
        };
        PatchError::Invalid { reason }
    }
}

/// Applies `body` to `original`. `type_name` is the object's OpenAPI definition name
/// (`io.k8s.api.core.v1.Pod`, see [`crate::kinds::Kind::openapi_name`]); strategic merge
/// patch looks up each field's patch strategy and merge key from it.
pub fn apply_patch(
    type_name: &str,
    original: &Value,
    patch_type: PatchType,
    body: &[u8],
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(body).map_err(PatchError::Malformed)?;
            let mut out = original.clone();
            json_patch::patch(&mut out, &ops).map_err(|e| PatchError::Invalid {
                reason: e.to_string(),
            })?;
            Ok(out)
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body).map_err(PatchError::Malformed)?;
            let mut out = original.clone();
            json_patch::merge(&mut out, &patch);
            Ok(out)
        }
        PatchType::StrategicMerge => {
            let patch: Value = serde_json::from_slice(body).map_err(PatchError::Malformed)?;
            strategic_merge(type_name, original, patch)
        }
        PatchType::Apply => Err(PatchError::Unsupported(PatchType::Apply)),
    }
}

/// Strategic merge patch of an already-decoded patch. Both must be JSON objects.
pub fn strategic_merge(
    type_name: &str,
    original: &Value,
    patch: Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::invalid(
            "",
            "a strategic merge patch must be a JSON object",
        ));
    };
    let orig = match original {
        Value::Object(o) => o.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(PatchError::invalid(
                "",
                "the object to patch is not a JSON object",
            ))
        }
    };
    merge_map(orig, patch, Cursor::root(type_name), "").map(Value::Object)
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn field_meta(cur: &Cursor, key: &str) -> PatchMeta {
    cur.name
        .and_then(|n| patch_meta(n, key))
        .unwrap_or(PatchMeta {
            merge: false,
            retain_keys: false,
            replace: false,
            merge_key: None,
        })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    cur: Cursor,
    path: &str,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(d) = patch.get(DIRECTIVE) {
        match d.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                return Ok(clean_map(patch));
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {
                patch.remove(DIRECTIVE);
            }
            _ => {
                return Err(PatchError::invalid(
                    path,
                    format!("unknown $patch directive {d} (expected replace, delete or merge)"),
                ))
            }
        }
    }

    if let Some(rk) = patch.remove(RETAIN_KEYS) {
        let Value::Array(keep) = rk else {
            return Err(PatchError::invalid(
                path,
                "$retainKeys must be a list of field names",
            ));
        };
        for (k, v) in &patch {
            if v.is_null() || k.starts_with(SET_ORDER) || k.starts_with(DELETE_PRIMITIVE) {
                continue;
            }
            if !keep.iter().any(|x| x.as_str() == Some(k.as_str())) {
                return Err(PatchError::invalid(
                    path,
                    format!(
                        "field {k:?} is set by the patch but missing from its $retainKeys list"
                    ),
                ));
            }
        }
        original.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k.as_str())));
    }

    // `$setElementOrder/<f>` lists are applied together with `<f>` itself.
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for ok in order_keys {
        let order = patch.remove(&ok).unwrap_or(Value::Null);
        let field = &ok[SET_ORDER.len()..];
        let fpath = join(path, field);
        if field.is_empty() {
            return Err(PatchError::invalid(path, format!("{ok:?} names no field")));
        }
        let Value::Array(order) = order else {
            return Err(PatchError::invalid(
                &fpath,
                "$setElementOrder must be a list",
            ));
        };
        let meta = field_meta(&cur, field);
        if !meta.merge {
            // Only merged lists have an order to keep; a replaced list is the patch's.
            continue;
        }
        let orig_list = match original.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                return Err(PatchError::invalid(
                    &fpath,
                    format!(
                        "$setElementOrder given for a {}, not a list",
                        kind_of(other)
                    ),
                ))
            }
        };
        let patch_list = match patch.get(field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            // null (delete the field) or another type: handled by the main loop.
            Some(_) => continue,
        };
        check_order(
            patch_list.as_deref().unwrap_or(&[]),
            &order,
            meta.merge_key,
            &fpath,
        )?;
        let elem = cur.field(field).items();
        let (merged, live) = match (orig_list, patch_list) {
            (None, None) => continue,
            (Some(o), None) => (o.clone(), o),
            (o, Some(p)) => merge_list_with_view(
                o.unwrap_or_default(),
                p,
                elem,
                meta.merge_key,
                false,
                &fpath,
            )?,
        };
        let (in_order, server_only): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|v| index_of(&order, v, meta.merge_key).is_some());
        let all = normalize_order(in_order, server_only, &order, &live, meta.merge_key);
        original.insert(field.to_string(), Value::Array(all));
        patch.remove(field);
    }

    for (k, pv) in patch {
        let (key, delete_list) = if let Some(f) = k.strip_prefix(DELETE_PRIMITIVE) {
            if f.is_empty() {
                return Err(PatchError::invalid(path, format!("{k:?} names no field")));
            }
            (f.to_string(), true)
        } else if k.starts_with('$') {
            return Err(PatchError::invalid(
                path,
                format!("unknown patch directive {k:?} (known: $patch, $retainKeys, $setElementOrder/<field>, $deleteFromPrimitiveList/<field>)"),
            ));
        } else {
            (k, false)
        };
        let fpath = join(path, &key);

        if delete_list {
            let Value::Array(del) = pv else {
                return Err(PatchError::invalid(
                    &fpath,
                    "$deleteFromPrimitiveList must be a list",
                ));
            };
            if let Some(Value::Array(have)) = original.get_mut(&key) {
                if del
                    .iter()
                    .chain(have.iter())
                    .any(|v| v.is_object() || v.is_array())
                {
                    return Err(PatchError::invalid(
                        &fpath,
                        "$deleteFromPrimitiveList applies to lists of strings or numbers only",
                    ));
                }
                have.retain(|v| !del.contains(v));
            }
            continue;
        }

        if pv.is_null() {
            original.remove(&key);
            continue;
        }
        let ov = match original.remove(&key) {
            None | Some(Value::Null) => {
                original.insert(key, clean(pv));
                continue;
            }
            Some(ov) => ov,
        };
        let merged = match (ov, pv) {
            (Value::Object(o), Value::Object(p)) => {
                let meta = field_meta(&cur, &key);
                if meta.replace {
                    Value::Object(clean_map(p))
                } else {
                    Value::Object(merge_map(o, p, cur.field(&key), &fpath)?)
                }
            }
            (Value::Array(o), Value::Array(p)) => {
                let meta = field_meta(&cur, &key);
                if meta.merge {
                    let elem = cur.field(&key).items();
                    Value::Array(merge_list(o, p, elem, meta.merge_key, false, &fpath)?)
                } else {
                    clean(Value::Array(p))
                }
            }
            (_, p) => clean(p),
        };
        original.insert(key, merged);
    }
    Ok(original)
}

/// Merges list `patch` into list `original` (a field with the `merge` strategy).
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    elem: Cursor,
    merge_key: Option<&str>,
    delete_list: bool,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    merge_list_with_view(original, patch, elem, merge_key, delete_list, path).map(|(m, _)| m)
}

/// [`merge_list`], also returning what kube-apiserver's `$setElementOrder` step then sees
/// as the live list's order.
///
/// kube merges in place: deleting an element shifts the live slice's backing array left,
/// and elements appended while the slice still has spare capacity are written into that
/// same array. The `$setElementOrder` step afterwards orders server-only elements by that
/// mutated array, not by the untouched live list, which decides where live-only elements
/// land (e.g. live `[1, 4]`, patch deleting 1 and adding 2 and 3 in order `[2, 3]` gives
/// `[4, 2, 3]`, not `[2, 3, 4]`). The view reproduces that, taking the backing array's
/// capacity as the next power of two of the live length (how Go's append grows a decoded
/// slice, which kube's unstructured conversion keeps).
fn merge_list_with_view(
    original: Vec<Value>,
    patch: Vec<Value>,
    elem: Cursor,
    merge_key: Option<&str>,
    delete_list: bool,
    path: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok((original, Vec::new()));
    }
    let mut first: Option<&'static str> = None;
    for v in original.iter().chain(patch.iter()) {
        let k = kind_of(v);
        if k == "list" {
            return Err(PatchError::invalid(path, "lists of lists cannot be merged"));
        }
        match first {
            None => first = Some(k),
            Some(f) if f != k => {
                return Err(PatchError::invalid(
                    path,
                    format!("list element types are not identical ({f} and {k})"),
                ))
            }
            _ => {}
        }
    }
    if first != Some("map") {
        if delete_list {
            let mut out = original.clone();
            out.retain(|v| !patch.contains(v));
            return Ok((out, original));
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|v| patch.contains(v));
        let out = normalize_order(in_patch, server_only, &patch, &original, None);
        return Ok((out, original));
    }
    let Some(mk) = merge_key else {
        return Err(PatchError::invalid(
            path,
            "cannot merge a list of objects without a merge key",
        ));
    };

    // `view` is the live slice's backing array (its first `live_len` slots), `len` the
    // length of the slice being merged into.
    let live_len = original.len();
    let cap = if live_len == 0 {
        0
    } else {
        live_len.next_power_of_two()
    };
    let mut view = original;
    let mut len = live_len;

    // Directive elements first: deletions by key, or a whole-list replace.
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Value::Object(m) = &v else {
            continue;
        };
        match m.get(DIRECTIVE) {
            None => plain.push(v),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(key) = m.get(mk) else {
                        return Err(PatchError::invalid(
                            path,
                            format!("a $patch: delete element needs its merge key {mk:?}"),
                        ));
                    };
                    while let Some(at) = view[..len].iter().position(|o| o.get(mk) == Some(key)) {
                        // Shift left in place; the last slot keeps its old value.
                        for j in at..len - 1 {
                            view[j] = view[j + 1].clone();
                        }
                        len -= 1;
                    }
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(PatchError::invalid(
                        path,
                        "merging lists cannot yet be specified in the patch ($patch: merge)",
                    ))
                }
                _ => {
                    return Err(PatchError::invalid(
                        path,
                        format!("unknown $patch directive {d} in a list element"),
                    ))
                }
            },
        }
    }
    let (original, patch) = if replace {
        (plain, Vec::new())
    } else {
        (view[..len].to_vec(), plain)
    };
    // Appends write into the live backing array until it is full (then Go reallocates).
    let mut aliased = !replace;

    let mut merged = original.clone();
    for (i, v) in patch.iter().enumerate() {
        let Some(key) = v.get(mk) else {
            return Err(PatchError::invalid(
                &format!("{path}[{i}]"),
                format!("the element does not contain its merge key {mk:?}"),
            ));
        };
        match merged.iter().position(|o| o.get(mk) == Some(key)) {
            Some(at) => {
                let Value::Object(o) = std::mem::take(&mut merged[at]) else {
                    continue;
                };
                let Value::Object(p) = v.clone() else {
                    continue;
                };
                let epath = format!("{path}[{mk}={}]", display_key(key));
                merged[at] = Value::Object(merge_map(o, p, elem, &epath)?);
            }
            None => {
                let slot = merged.len();
                if aliased && slot < cap {
                    if slot < live_len {
                        view[slot] = v.clone();
                    }
                } else {
                    aliased = false;
                }
                merged.push(v.clone());
            }
        }
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_of(&patch, v, Some(mk)).is_some());
    let out = normalize_order(in_patch, server_only, &patch, &original, Some(mk));
    Ok((out, view))
}

fn display_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Position of `item` in `list`: by merge key for objects, by value otherwise.
fn index_of(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    match merge_key {
        Some(mk) => {
            let key = item.get(mk)?;
            list.iter().position(|v| v.get(mk) == Some(key))
        }
        None => list.iter().position(|v| v == item),
    }
}

/// Orders a merged list as kube does: the patch's elements in the patch's (or
/// `$setElementOrder`'s) order, the server-only elements in their live order, and the
/// two interleaved so that elements the live list had keep their relative positions.
fn normalize_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    let pos = |order: &[Value], v: &Value| index_of(order, v, merge_key).unwrap_or(usize::MAX);
    in_patch.sort_by_key(|v| pos(patch_order, v));
    server_only.sort_by_key(|v| pos(server_order, v));
    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (Some(l), Some(r)) => {
                let li = index_of(server_order, l, merge_key);
                let ri = index_of(server_order, r, merge_key);
                match (li, ri) {
                    (Some(li), Some(ri)) if li < ri => out.extend(left.next()),
                    _ => out.extend(right.next()),
                }
            }
        }
    }
    out
}

/// Checks that the patch list's elements appear in `$setElementOrder` in the same
/// relative order (kubectl always sends them so; anything else is a broken patch).
fn check_order(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    path: &str,
) -> Result<(), PatchError> {
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    if items.is_empty() || order.is_empty() {
        return Ok(());
    }
    let same = |a: &Value, b: &Value| match merge_key {
        Some(mk) => a.get(mk).is_some() && a.get(mk) == b.get(mk),
        None => a == b,
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < items.len() && oi < order.len() {
        if same(items[pi], &order[oi]) {
            pi += 1;
        }
        oi += 1;
    }
    if pi < items.len() {
        return Err(PatchError::invalid(
            path,
            "the order of the patch list does not match its $setElementOrder list",
        ));
    }
    Ok(())
}

/// A patch value taken as is (the original had nothing to merge it with): nulls mean
/// "absent" and directives have nothing to act on, so both are dropped.
fn clean(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .filter(|e| match e.get(DIRECTIVE).and_then(Value::as_str) {
                    // A deletion of an element that is not there, or a replace marker.
                    Some("delete") => false,
                    Some("replace") => e.as_object().is_some_and(|m| m.len() > 1),
                    _ => true,
                })
                .map(clean)
                .collect(),
        ),
        other => other,
    }
}

fn clean_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, v)| !v.is_null() && !k.starts_with('$'))
        .map(|(k, v)| (k, clean(v)))
        .collect()
}

#[cfg(test)]
mod tests;
