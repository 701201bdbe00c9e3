//! End-to-end tests of the registry server with real clients: skopeo, raw HTTP, and
//! Debian's docker-registry as the reference where the spec leaves room.

#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/skopeo.rs"]
mod skopeo;
