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

/// How a field's value is combined with the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    /// Lists are merged element by element (by `merge_key` for lists of objects; as a set
    /// for lists of primitives). Without it, a list is replaced whole.
    pub merge: bool,
    /// The object's keys not named in a `$retainKeys` directive are dropped.
    pub retain_keys: bool,
    /// A map-typed field is replaced whole rather than merged.
    pub replace: bool,
    pub merge_key: Option<&'static str>,
}

impl PatchMeta {
    /// The `x-kubernetes-patch-strategy` value (`merge`, `merge,retainKeys`, …).
    pub fn strategy(&self) -> String {
        let mut s = Vec::new();
        if self.merge {
            s.push("merge");
        }
        if self.replace {
            s.push("replace");
        }
        if self.retain_keys {
            s.push("retainKeys");
        }
        s.join(",")
    }
}

const M: u8 = 1;
const RK: u8 = 2;
const MRK: u8 = M | RK;

/// (definition, field, strategy bits, merge key) for every field of the served kinds'
/// types whose Go declaration carries a `patchStrategy` tag. A field's tag says how a
/// patch combines that field's value: `merge` on a list of structs merges elements
/// whose `patchMergeKey` field is equal; `merge` on a list of strings treats it as a
/// set; `retainKeys` says the struct is a union whose unset members a patch may clear
/// with `$retainKeys`. Fields absent here are replaced (lists) or merged (maps).
const PATCH_META: &[(&str, &str, u8, &str)] = &[
    // metav1.ObjectMeta: finalizers is a set of strings; owner references are one per uid.
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        M,
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        M,
        "uid",
    ),
    // core/v1 pods: containers and volumes are addressed by name, so a patch that only
    // names one container does not drop the others; tolerations have no tag (replaced).
    ("io.k8s.api.core.v1.PodSpec", "volumes", MRK, "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", M, "name"),
    ("io.k8s.api.core.v1.PodSpec", "containers", M, "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        M,
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", M, "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", M, "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        M,
        "topologyKey",
    ),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", M, "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", MRK, "name"),
    ("io.k8s.api.core.v1.Container", "ports", M, "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", M, "name"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        M,
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        M,
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        M,
        "containerPort",
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", M, "name"),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        M,
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        M,
        "devicePath",
    ),
    ("io.k8s.api.core.v1.PodStatus", "conditions", M, "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", M, "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", M, "ip"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        MRK,
        "name",
    ),
    // core/v1 others.
    ("io.k8s.api.core.v1.ServiceSpec", "ports", M, "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", M, "type"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", M, ""),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", M, "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", M, "type"),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        M,
        "type",
    ),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", M, "name"),
    // apps/v1: a deployment's strategy is a union (type + rollingUpdate).
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", RK, ""),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        M,
        "type",
    ),
    // batch, autoscaling, policy status conditions.
    ("io.k8s.api.batch.v1.JobStatus", "conditions", M, "type"),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        M,
        "type",
    ),
];

/// The patch strategy of `field` in definition `type_name`, if it has one.
pub fn patch_meta(type_name: &str, field: &str) -> Option<PatchMeta> {
    PATCH_META
        .iter()
        .find(|(t, f, _, _)| *t == type_name && *f == field)
        .map(|&(_, _, bits, key)| PatchMeta {
            merge: bits & M != 0,
            retain_keys: bits & RK != 0,
            replace: false,
            merge_key: (!key.is_empty()).then_some(key),
        })
}

/// Every (definition, field, meta) of the table, for the OpenAPI extensions.
pub fn all_patch_meta() -> impl Iterator<Item = (&'static str, &'static str, PatchMeta)> {
    PATCH_META
        .iter()
        .filter_map(|&(t, f, _, _)| patch_meta(t, f).map(|m| (t, f, m)))
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
        let merged = match (orig_list.clone(), patch_list) {
            (None, None) => continue,
            (Some(o), None) => o,
            (o, Some(p)) => merge_list(
                o.unwrap_or_default(),
                p,
                elem,
                meta.merge_key,
                false,
                &fpath,
            )?,
        };
        let live = orig_list.unwrap_or_default();
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
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
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
            let mut out = original;
            out.retain(|v| !patch.contains(v));
            return Ok(out);
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|v| patch.contains(v));
        return Ok(normalize_order(
            in_patch,
            server_only,
            &patch,
            &original,
            None,
        ));
    }
    let Some(mk) = merge_key else {
        return Err(PatchError::invalid(
            path,
            "cannot merge a list of objects without a merge key",
        ));
    };

    // Directive elements first: deletions by key, or a whole-list replace.
    let mut original = original;
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
                    original.retain(|o| o.get(mk) != Some(key));
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
        (original, plain)
    };

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
            None => merged.push(v.clone()),
        }
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_of(&patch, v, Some(mk)).is_some());
    Ok(normalize_order(
        in_patch,
        server_only,
        &patch,
        &original,
        Some(mk),
    ))
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
