//! End-to-end tests of `skiff runtime`, the runc-compatible OCI runtime: they drive the
//! built binary as root on bundles made by `runc spec` with a busybox rootfs, and compare
//! with runc where behaviour must match. Run with `cargo nextest run -p skiff --test runtime`.
//!
//! Tests of resource limits, pause/resume, ps/events need the cgroup layer; they fail
//! (rather than being skipped) while it is missing.

mod common;

#[path = "runtime/basics.rs"]
mod basics;
#[path = "runtime/cgroup2.rs"]
mod cgroup2;
#[path = "runtime/cgroups.rs"]
mod cgroups;
#[path = "runtime/config.rs"]
mod config;
#[path = "runtime/exec.rs"]
mod exec;
#[path = "runtime/hooks.rs"]
mod hooks;
#[path = "runtime/lifecycle.rs"]
mod lifecycle;
#[path = "runtime/namespaces.rs"]
mod namespaces;
#[path = "runtime/seccomp.rs"]
mod seccomp;
#[path = "runtime/terminal.rs"]
mod terminal;
#[path = "runtime/validation.rs"]
mod validation;
#[path = "runtime/vs_runc.rs"]
mod vs_runc;
