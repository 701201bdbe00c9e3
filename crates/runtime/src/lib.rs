//! skiff's OCI runtime (runtime-spec 1.x).
//!
//! The library is synchronous on purpose: containers are created by forking this
//! (single-threaded) process, never a multi-threaded one. Callers with an async runtime
//! (the kubelet) drive it through the `skiff runtime` command or from a blocking,
//! single-threaded helper process.

pub mod cgroups;
pub mod seccomp;
