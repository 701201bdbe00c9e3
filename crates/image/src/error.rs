//! Error categories shared by every error type of this crate.
//!
//! Callers (the CLI today, the API server and kubelet later) map a category to an exit
//! code or a Kubernetes `Status` in one place instead of matching every variant.

/// What kind of failure an error is, independent of which operation raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// The named image, blob, layer or snapshot does not exist.
    NotFound,
    /// Something with that name already exists and may not be replaced.
    AlreadyExists,
    /// The request conflicts with current state (e.g. removing an image in use).
    Conflict,
    /// The input is malformed, corrupt, unsafe or unsupported.
    Invalid,
    /// The host cannot do it right now or at all (I/O failure, missing kernel feature).
    Unavailable,
}
