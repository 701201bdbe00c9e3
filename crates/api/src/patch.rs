//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes
//! strategic merge patch.
//!
//! PLACEHOLDER (owned by the api-machinery work): only merge patch is implemented so far.

use serde_json::Value;

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

/// Applies `body` to `original`. `type_name` is the object's OpenAPI definition name
/// (`io.k8s.api.core.v1.Pod`, see [`crate::kinds::Kind::openapi_name`]); strategic merge
/// patch looks up each field's patch strategy and merge key from it.
pub fn apply_patch(
    type_name: &str,
    original: &Value,
    patch_type: PatchType,
    body: &[u8],
) -> Result<Value, PatchError> {
    let _ = type_name;
    let patch: Value = serde_json::from_slice(body).map_err(PatchError::Malformed)?;
    match patch_type {
        PatchType::Merge | PatchType::StrategicMerge => {
            let mut out = original.clone();
            merge(&mut out, &patch);
            Ok(out)
        }
        other => Err(PatchError::Unsupported(other)),
    }
}

fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Default::default());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}
