//! The registry's error type and its mapping to OCI distribution error responses.
//!
//! Every failure a client can cause maps to one of the spec's error codes, with the
//! HTTP status distribution uses for it; I/O failures are the server's fault (500) and
//! carry the path and operation so the log says what broke.

use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::digest::DigestParseError;

/// Broad class of an error, independent of the wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    NotFound,
    Invalid,
    Unauthorized,
    Forbidden,
    Unsupported,
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob {digest} is unknown to repository {repo}")]
    BlobUnknown { repo: String, digest: String },
    #[error("upload {id} is unknown to repository {repo}")]
    BlobUploadUnknown { repo: String, id: String },
    #[error("upload {id}: {reason}")]
    BlobUploadInvalid { id: String, reason: &'static str },
    #[error("upload {id}: chunk starts at {start} but {offset} bytes have been received; send the chunk that starts at {offset}")]
    ChunkOutOfOrder { id: String, offset: u64, start: u64 },
    #[error("range {range:?} cannot be served from a blob of {size} bytes")]
    RangeNotSatisfiable { range: String, size: u64 },
    #[error("content does not match digest {expected}: it hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid digest")]
    DigestInvalid(#[from] DigestParseError),
    #[error("the `digest` query parameter is required to complete an upload")]
    DigestMissing,
    #[error("{what} is {actual} bytes but {expected} were declared")]
    SizeInvalid {
        what: &'static str,
        expected: u64,
        actual: u64,
    },
    #[error("manifest is larger than the {limit}-byte limit")]
    ManifestTooLarge { limit: usize },
    #[error("manifest media type {media_type:?} is not supported (use an OCI image manifest or index, or a Docker schema 2 manifest or manifest list)")]
    ManifestMediaType { media_type: String },
    #[error("manifest is not valid JSON for its media type")]
    ManifestJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest is invalid: {reason}")]
    ManifestInvalid { reason: &'static str },
    #[error("manifest field {field} holds a bad digest")]
    ManifestDigest {
        field: &'static str,
        #[source]
        source: DigestParseError,
    },
    #[error("manifest references {digest}, which repository {repo} does not have; push it first")]
    ManifestBlobUnknown { repo: String, digest: String },
    #[error("manifest {reference} is unknown to repository {repo}")]
    ManifestUnknown { repo: String, reference: String },
    #[error("repository name {name:?} is invalid: lowercase letters, digits and separators (. _ __ -) between them, components joined by /")]
    NameInvalid { name: String },
    #[error("repository {repo} is unknown")]
    NameUnknown { repo: String },
    #[error("tag {tag:?} is invalid: [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    TagInvalid { tag: String },
    #[error("authentication required")]
    Unauthorized { challenge: String },
    #[error("access to {resource} denied")]
    Denied { resource: String },
    #[error("the registry is read-only")]
    ReadOnly,
    #[error("{what} is not supported")]
    Unsupported { what: &'static str },
    #[error("reading the request body")]
    Body {
        #[source]
        source: axum::Error,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub fn category(&self) -> Category {
        use Error::*;
        match self {
            BlobUnknown { .. }
            | BlobUploadUnknown { .. }
            | ManifestUnknown { .. }
            | NameUnknown { .. } => Category::NotFound,
            Unauthorized { .. } => Category::Unauthorized,
            Denied { .. } | ReadOnly => Category::Forbidden,
            Unsupported { .. } => Category::Unsupported,
            Io { .. } => Category::Unavailable,
            _ => Category::Invalid,
        }
    }

    /// The OCI error code of the response body.
    pub fn code(&self) -> &'static str {
        use Error::*;
        match self {
            BlobUnknown { .. } => "BLOB_UNKNOWN",
            BlobUploadUnknown { .. } => "BLOB_UPLOAD_UNKNOWN",
            BlobUploadInvalid { .. } | Body { .. } => "BLOB_UPLOAD_INVALID",
            ChunkOutOfOrder { .. } | RangeNotSatisfiable { .. } => "RANGE_INVALID",
            DigestMismatch { .. } | DigestInvalid(_) | DigestMissing => "DIGEST_INVALID",
            SizeInvalid { .. } => "SIZE_INVALID",
            // distribution's code for it; the 413 status is the spec's.
            ManifestTooLarge { .. }
            | ManifestMediaType { .. }
            | ManifestJson { .. }
            | ManifestInvalid { .. }
            | ManifestDigest { .. } => "MANIFEST_INVALID",
            ManifestBlobUnknown { .. } => "MANIFEST_BLOB_UNKNOWN",
            ManifestUnknown { .. } => "MANIFEST_UNKNOWN",
            NameInvalid { .. } => "NAME_INVALID",
            NameUnknown { .. } => "NAME_UNKNOWN",
            TagInvalid { .. } => "TAG_INVALID",
            Unauthorized { .. } => "UNAUTHORIZED",
            Denied { .. } | ReadOnly => "DENIED",
            Unsupported { .. } => "UNSUPPORTED",
            Io { .. } => "UNKNOWN",
        }
    }

    pub fn status(&self) -> StatusCode {
        use Error::*;
        match self {
            ChunkOutOfOrder { .. } | RangeNotSatisfiable { .. } => {
                StatusCode::RANGE_NOT_SATISFIABLE
            }
            ManifestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // distribution does not register write handlers in read-only mode, so writes
            // get 405 from its router; we keep the status and say why in the body.
            ReadOnly => StatusCode::METHOD_NOT_ALLOWED,
            Unsupported { .. } => StatusCode::METHOD_NOT_ALLOWED,
            _ => match self.category() {
                Category::NotFound => StatusCode::NOT_FOUND,
                Category::Invalid => StatusCode::BAD_REQUEST,
                Category::Unauthorized => StatusCode::UNAUTHORIZED,
                Category::Forbidden => StatusCode::FORBIDDEN,
                Category::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
                Category::Unavailable => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // Display leaves causes to `source()`; clients and logs get the whole chain.
        let message = skiff_serve::error_chain(&self);
        if status.is_server_error() {
            tracing::error!(error = %message, "registry request failed");
        } else {
            tracing::debug!(error = %message, "registry request refused");
        }
        let body = serde_json::json!({
            "errors": [{ "code": self.code(), "message": message, "detail": serde_json::Value::Null }]
        });
        let mut resp = crate::http::json_response(status, &body);
        if let Error::Unauthorized { challenge } = &self {
            if let Ok(v) = HeaderValue::from_str(challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Error::RangeNotSatisfiable { size, .. } = &self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        if matches!(self, Error::ReadOnly) {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
