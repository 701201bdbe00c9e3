//! Store errors. Every variant has a [`Category`] so the API server maps them to a
//! Kubernetes `Status` in one place.

use std::path::PathBuf;

use crate::{LeaseId, Revision};

/// What kind of failure an error is, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    NotFound,
    AlreadyExists,
    Conflict,
    /// The requested revision was removed by compaction.
    Compacted,
    Invalid,
    /// The backend cannot serve the request now (I/O, corrupt file, unreachable etcd).
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} already exists (mod revision {mod_revision})")]
    AlreadyExists { key: String, mod_revision: Revision },
    #[error("key {key:?} was modified: expected mod revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted; the oldest readable revision is {compact_revision}")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {lease} not found (expired or revoked)")]
    LeaseNotFound { lease: LeaseId },
    #[error("key {key:?} appears more than once in one transaction")]
    DuplicateKeyInTxn { key: String },
    #[error("an empty key is not allowed")]
    EmptyKey,
    #[error("lease TTL must be at least 1 second, got {ttl_secs}")]
    InvalidTtl { ttl_secs: i64 },
    #[error("the store at {location} is opened read-only; {operation} needs the writer")]
    ReadOnly {
        location: String,
        operation: &'static str,
    },
    #[error("store {location}: {operation} failed")]
    Storage {
        location: String,
        operation: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("{path}: {operation} failed")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir {path} does not exist; create it or pass the --data-dir the server uses")]
    DataDirMissing { path: PathBuf },
    #[error("{path} is not a skiff store ({reason}); point --data-dir at a skiff data dir or restore from a snapshot")]
    Foreign { path: PathBuf, reason: &'static str },
    #[error("{path} is in use by another process (a running skiff server?) and no admin socket answers in its data dir; stop that process first")]
    Locked { path: PathBuf },
    #[error(
        "store {location} is corrupt: {detail}; restore it from a snapshot (`skiff store restore`)"
    )]
    Corrupt {
        location: String,
        detail: &'static str,
    },
    #[error("snapshot to {path} failed: {cause}")]
    SnapshotFailed { path: PathBuf, cause: String },
    /// The batch this write was part of could not be committed; none of it is visible.
    #[error("store {location}: commit failed, the write was not applied: {cause}")]
    CommitFailed { location: String, cause: String },
    #[error("store {location} is closed")]
    Closed { location: String },
    #[error("the in-memory store has no file to {operation}")]
    InMemory { operation: &'static str },
    /// The process that has the store open answered an admin request with an error.
    #[error("{socket}: the running store answered: {message}")]
    Remote {
        socket: PathBuf,
        category: Category,
        message: String,
    },
    /// The store is live (another process has it open) and the operation needs it closed.
    #[error("{path} is in use by a running process (it answers on {socket}); {operation} needs the store closed: stop that process first")]
    InUse {
        path: PathBuf,
        socket: PathBuf,
        operation: &'static str,
    },
    #[error("etcd at {endpoints}: {operation} failed")]
    Etcd {
        endpoints: String,
        operation: &'static str,
        #[source]
        source: Box<etcd_client::Error>,
    },
}

impl StoreError {
    pub fn category(&self) -> Category {
        use StoreError::*;
        match self {
            NotFound { .. } | LeaseNotFound { .. } => Category::NotFound,
            AlreadyExists { .. } => Category::AlreadyExists,
            Conflict { .. } => Category::Conflict,
            Compacted { .. } => Category::Compacted,
            FutureRevision { .. }
            | DuplicateKeyInTxn { .. }
            | EmptyKey
            | InvalidTtl { .. }
            | InMemory { .. } => Category::Invalid,
            Remote { category, .. } => *category,
            ReadOnly { .. }
            | Storage { .. }
            | Io { .. }
            | DataDirMissing { .. }
            | Foreign { .. }
            | Locked { .. }
            | InUse { .. }
            | Corrupt { .. }
            | Closed { .. }
            | CommitFailed { .. }
            | SnapshotFailed { .. }
            | Etcd { .. } => Category::Unavailable,
        }
    }
}
