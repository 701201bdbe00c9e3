//! The runtime's top-level error, with a category so callers (the CLI, later the kubelet)
//! map it to an exit code or an API status in one place.

use crate::cgroups::CgroupError;
use crate::hooks::HookError;
use crate::spec::SpecError;
use crate::state::{StateError, Status};
use crate::sync::SyncError;
use crate::tty::TtyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    NotFound,
    AlreadyExists,
    Invalid,
    Conflict,
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Tty(#[from] TtyError),
    #[error("container {id}")]
    Setup {
        id: String,
        #[source]
        source: SyncError,
    },
    #[error("container {id} is {status}; {action}")]
    WrongState {
        id: String,
        status: Status,
        action: String,
    },
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// An error and its causes, `outer: cause: root cause`, for places that can only carry
/// a string (the init's report to its parent, the CLI's message).
pub fn chain(e: &dyn std::error::Error) -> String {
    skiff_serve::error_chain(e)
}

impl RuntimeError {
    pub fn category(&self) -> Category {
        match self {
            RuntimeError::State(StateError::NotFound { .. }) => Category::NotFound,
            RuntimeError::State(StateError::Exists { .. }) => Category::AlreadyExists,
            RuntimeError::Spec(_)
            | RuntimeError::Usage(_)
            | RuntimeError::State(StateError::InvalidId { .. }) => Category::Invalid,
            RuntimeError::WrongState { .. } => Category::Conflict,
            _ => Category::Unavailable,
        }
    }

    pub fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        RuntimeError::Sys {
            what: what.into(),
            source,
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what: what.into(),
            source,
        }
    }
}
