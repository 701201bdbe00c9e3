//! Every failed request is answered with a Kubernetes `Status` object; this is the one
//! place errors are mapped to HTTP codes and Status reasons.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use skiff_store::{Category, StoreError};

pub use skiff_api::strategy::Cause;

/// An API error, rendered as a Status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: StatusCode,
    /// Status `reason` (NotFound, AlreadyExists, Conflict, Invalid, BadRequest, …).
    pub reason: &'static str,
    pub message: String,
    /// `details` (name, group, kind, causes, retryAfterSeconds).
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::about_object(
            StatusCode::NOT_FOUND,
            "NotFound",
            group,
            plural,
            name,
            |res| format!("{res} {name:?} not found"),
        )
    }

    pub fn path_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::about_object(
            StatusCode::CONFLICT,
            "AlreadyExists",
            group,
            plural,
            name,
            |res| format!("{res} {name:?} already exists"),
        )
    }

    /// 403 about one object, as kube's admission refusals:
    /// `pods "x" is forbidden: <why>`.
    pub fn forbidden(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::about_object(
            StatusCode::FORBIDDEN,
            "Forbidden",
            group,
            plural,
            name,
            |res| format!("{res} {name:?} is forbidden: {why}"),
        )
    }

    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::about_object(
            StatusCode::CONFLICT,
            "Conflict",
            group,
            plural,
            name,
            |res| {
                format!("Operation cannot be fulfilled on {res} {name:?}: the object has been modified; please apply your changes to the latest version and try again")
            },
        )
    }

    /// A Status about one object, with kube's details; `message` gets the resource as kube
    /// names it in messages (`pods`, `deployments.apps`).
    fn about_object(
        code: StatusCode,
        reason: &'static str,
        group: &str,
        plural: &str,
        name: &str,
        message: impl FnOnce(&str) -> String,
    ) -> Self {
        let res = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        ApiError {
            details: Some(json!({"name": name, "group": group, "kind": plural})),
            ..Self::new(code, reason, message(&res))
        }
    }

    /// 422 with causes, as kube-apiserver's field validation.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let message = if list.len() == 1 {
            format!("{what} {name:?} is invalid: {}", list[0])
        } else {
            format!("{what} {name:?} is invalid: [{}]", list.join(", "))
        };
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        ApiError {
            details: Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
        }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn status_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = skiff_serve::error_chain(&e);
        match e.category() {
            Category::Compacted => ApiError::gone(format!("too old resource version: {msg}")),
            Category::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", msg)
            }
            _ => ApiError::internal(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.status_json().to_string();
        (
            self.code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
