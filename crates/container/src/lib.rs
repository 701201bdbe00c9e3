//! skiff's container library: what owns a running container, shared by `skiff run`,
//! image builds (RUN) and the kubelet.
//!
//! - [`spec`]: the typed OCI spec of a container, built on the runtime's default spec.
//! - [`user`]: one resolver of `user[:group]` against an image's /etc/passwd and /etc/group.
//! - [`path`]: paths inside a rootfs resolved as the container sees them.
//! - [`state`]: the typed lifecycle state of a container.
//! - [`netns`]: namespaces made before a container (a network namespace with loopback up;
//!   a pod sandbox's network, IPC and UTS namespaces pinned by bind mounts).
//! - [`log`]: CRI-format logs (stdout and stderr apart, timestamped, per instance).
//! - [`shim`]: the process that owns a detached container and its task protocol (create,
//!   start, exec, attach, resize, kill, wait, stats, delete) over a Unix socket.
//!
//! The library never resolves images: callers hand it a bundle whose rootfs is already
//! mounted (skiff-image depends on this crate, not the other way round).

pub mod log;
pub mod netns;
pub mod path;
pub mod shim;
pub mod spec;
pub mod state;
pub mod user;

pub use spec::{BindMount, SpecBuilder};
pub use state::{ContainerState, Status};
pub use user::User;
