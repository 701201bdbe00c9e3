//! End-to-end tests of the registry server with real clients: skopeo, raw HTTP, and
//! Debian's docker-registry as the reference where the spec leaves room.

// clippy's allow-unwrap-in-tests covers #[test] functions only; the shared helpers here
// are test code too, where a panic is the failure report.
#![allow(clippy::unwrap_used)]

#[path = "e2e/accept.rs"]
mod accept;
#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/conformance.rs"]
mod conformance;
#[path = "e2e/differential.rs"]
mod differential;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/skopeo.rs"]
mod skopeo;
#[path = "e2e/token.rs"]
mod token;
