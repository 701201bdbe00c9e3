//! The `/openapi/v2` and `/openapi/v3` documents for the served kinds, generated from the
//! k8s-openapi types: definitions with `x-kubernetes-group-version-kind`, and paths with
//! their query parameters (kubectl looks for `fieldValidation` there).
//!
//! PLACEHOLDER (owned by the api-machinery work): empty documents so far.

use serde_json::{json, Value};

/// The Swagger 2.0 document served at `/openapi/v2` (JSON).
pub fn v2() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": {}})
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}, …}}`.
pub fn v3_index() -> Value {
    json!({"paths": {}})
}

/// The OpenAPI 3.0 document of one group/version (`api/v1`, `apis/apps/v1`), or `None` if
/// it is not served.
pub fn v3_group_version(path: &str) -> Option<Value> {
    let _ = path;
    None
}
