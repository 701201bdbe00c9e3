//! skiff's OCI runtime (runtime-spec 1.x).
//!
//! The library is synchronous on purpose: containers are created by forking this
//! (single-threaded) process, never a multi-threaded one. Callers with an async runtime
//! (the kubelet) drive it through the `skiff runtime` command or from a blocking,
//! single-threaded helper process.

pub mod cgroups;
pub mod cli;
pub mod container;
pub mod default_spec;
pub mod error;
pub mod exec;
mod foreground;
pub mod hooks;
pub mod init;
mod monitor;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;
pub mod tty;

pub use container::{CreateOptions, Runtime};
pub use error::{Category, RuntimeError};
pub use exec::ExecOptions;
