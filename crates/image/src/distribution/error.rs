//! Errors of registry operations (pull, push, login).

use std::io;
use std::path::PathBuf;

use crate::content::ContentError;
use crate::digest::Digest;
use crate::error::Category;
use crate::manifest::FormatError;
use crate::snapshot::SnapshotError;
use crate::store::ImageError;

/// Everything that can go wrong talking to a registry or storing what came from it.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error("invalid remote image reference {value:?}: {reason}")]
    Reference { value: String, reason: &'static str },
    #[error("cannot reach registry {registry} ({url}): {detail}; is it running and is the address right? (a plain-HTTP registry needs --insecure-registry {registry})")]
    Connect {
        registry: String,
        url: String,
        detail: String,
    },
    #[error("registry {registry}: the connection broke during {what}: {detail}")]
    Transfer {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("registry {registry}: TLS setup failed: {detail}")]
    Tls { registry: String, detail: String },
    #[error("registry {registry}: cannot read CA certificate {path}: {detail}")]
    CaCert {
        registry: String,
        path: PathBuf,
        detail: String,
    },
    #[error("registry {registry} refused the credentials{user}: {detail}; check them and run `skiff login {registry}`")]
    Unauthorized {
        registry: String,
        user: String,
        detail: String,
    },
    #[error("registry {registry} requires authentication ({detail}); run `skiff login {registry}` first")]
    NeedsLogin { registry: String, detail: String },
    #[error("manifest {reference} not found in registry {registry}; check the repository and tag")]
    ManifestUnknown { registry: String, reference: String },
    #[error("blob {digest} not found in {registry}/{repository}")]
    BlobUnknown {
        registry: String,
        repository: String,
        digest: Digest,
    },
    #[error("registry {registry}: {method} {url} answered {status}{code}: {message}")]
    Status {
        registry: String,
        method: String,
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what} {expected} from {registry} does not match its digest (got {actual}, {size} bytes): the registry served corrupt content; nothing was stored")]
    DigestMismatch {
        registry: String,
        what: &'static str,
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("{what} {digest} from {registry} has {actual} bytes, the manifest says {expected}; nothing was stored")]
    SizeMismatch {
        registry: String,
        what: &'static str,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("manifest {reference} from {registry} is larger than {max} bytes; refusing it")]
    ManifestTooLarge {
        registry: String,
        reference: String,
        max: u64,
    },
    #[error("docker config {path}: {detail}; fix or remove it")]
    DockerConfig { path: PathBuf, detail: String },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("background task failed: {detail}")]
    Task { detail: String },
}

impl DistributionError {
    pub fn category(&self) -> Category {
        match self {
            Self::Reference { .. }
            | Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::ManifestTooLarge { .. }
            | Self::DockerConfig { .. }
            | Self::CaCert { .. } => Category::Invalid,
            Self::ManifestUnknown { .. } | Self::BlobUnknown { .. } => Category::NotFound,
            Self::Unauthorized { .. } | Self::NeedsLogin { .. } => Category::Invalid,
            Self::Status { status, .. } if *status == 404 => Category::NotFound,
            Self::Status { status, .. } if *status < 500 => Category::Invalid,
            Self::Format(e) => e.category(),
            Self::Image(e) => e.category(),
            Self::Content(e) => e.category(),
            Self::Snapshot(e) => e.category(),
            _ => Category::Unavailable,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
