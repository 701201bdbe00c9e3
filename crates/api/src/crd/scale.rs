//! The `scale` subresource of custom objects: an `autoscaling/v1` Scale read from and
//! written to the paths the CRD's `subresources.scale` names.

use serde_json::{json, Map, Value};

/// The fields of a simple JSON path (`.spec.replicas` → `["spec", "replicas"]`).
fn fields(path: &str) -> Vec<&str> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|f| !f.is_empty())
        .collect()
}

fn get<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    fields(path).into_iter().try_fold(obj, |v, f| v.get(f))
}

/// The Scale of `obj` for a CRD version's `subresources.scale` (`specReplicasPath`,
/// `statusReplicasPath`, `labelSelectorPath`): replicas missing from the object read as
/// 0, a missing selector as empty, as kube-apiserver does. `Err` names the path whose
/// value is not an integer (or, for the selector, a string).
pub fn scale(obj: &Value, scale: &Value) -> Result<Value, String> {
    let path = |k: &str| scale.get(k).and_then(Value::as_str).unwrap_or_default();
    let int = |p: &str| -> Result<i64, String> {
        match get(obj, p) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_i64().ok_or_else(|| {
                format!(
                    "{p} accessor error: {v} is of the type {}, expected int64",
                    super::validate::type_name(v)
                )
            }),
        }
    };
    let spec = int(path("specReplicasPath"))?;
    let status = int(path("statusReplicasPath"))?;
    let selector = match path("labelSelectorPath") {
        "" => String::new(),
        p => match get(obj, p) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(format!("{p} accessor error: {v} is not a string")),
        },
    };
    let meta = obj.get("metadata").and_then(Value::as_object);
    let mut m = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.and_then(|m| m.get(k)) {
            m.insert(k.into(), v.clone());
        }
    }
    let mut status_v = json!({ "replicas": status });
    if !selector.is_empty() {
        status_v["selector"] = Value::String(selector);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": { "replicas": spec },
        "status": status_v,
    }))
}

/// Writes `replicas` at `specReplicasPath` of `obj`, creating the objects on the way.
pub fn set_replicas(obj: &mut Value, scale: &Value, replicas: i64) {
    let path = scale
        .get("specReplicasPath")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let fs = fields(path);
    let Some((last, parents)) = fs.split_last() else {
        return;
    };
    let mut cur = obj;
    for f in parents {
        if !cur.get(*f).is_some_and(Value::is_object) {
            cur[*f] = json!({});
        }
        cur = &mut cur[*f];
    }
    cur[*last] = Value::from(replicas);
}
