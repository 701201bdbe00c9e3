//! Cgroup layer: one small manager per cgroup version behind the `CgroupManager` trait.
//!
//! Contract: `open` detects the host's cgroup layout under a root (normally
//! `/sys/fs/cgroup`) and returns the manager for one container's cgroup path. Nothing is
//! created until `create`; `destroy` is idempotent and removes every directory `create`
//! made, so a failed container creation can always be rolled back.
//!
//! Lifecycle: create → apply(resources) → add_process(init pid) → [freeze/thaw, stats,
//! add_process(exec pids)] → destroy (after every process in it has exited).
//!
//! `cgroupsPath` follows runc's cgroupfs driver: an absolute path is taken relative to the
//! root of every hierarchy, a relative one is placed under the calling process's own cgroup
//! (from `/proc/self/cgroup`). Paths with `..` components and empty paths are refused (the
//! caller defaults an absent `cgroupsPath`, e.g. to `/skiff/<id>`).
//!
//! `destroy` removes the container's directory (and any sub-cgroups the container made
//! inside it). Intermediate directories are removed only when this same manager created
//! them, so a manager reopened by a later `delete` never removes shared parents such as
//! `/skiff`.
//!
//! Device rules (`linux.resources.devices`): a non-empty list is applied on top of
//! "deny everything", last matching rule wins, like runc's device emulator; an empty list
//! leaves device access untouched. The runtime is expected to append
//! [`devices::default_allowed_devices`] as runc does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

mod bpf;
pub mod devices;
mod fs;
pub mod stats;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod testutil;
pub mod v1;
pub mod v2;

pub use stats::Stats;

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy (or hybrid): one hierarchy per controller.
    V1,
    /// Unified hierarchy.
    V2,
}

/// Where a container's cgroup lives on the host, for bind-mounting it at
/// `/sys/fs/cgroup[/<subdir>]` inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMountSource {
    /// Sub-directory under the container's `/sys/fs/cgroup` ("memory", "cpu", "systemd"…);
    /// empty for v2, where the container's cgroup is mounted at `/sys/fs/cgroup` itself.
    pub subdir: String,
    /// The container's cgroup directory on the host.
    pub host_dir: PathBuf,
}

/// Errors of the cgroup layer.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup: invalid value for {field}: {value} ({reason})")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cgroup: controller {controller} is not available on this host (needed for {field})")]
    MissingController {
        controller: &'static str,
        field: &'static str,
    },
    #[error("cgroup: {path} still has processes after {attempts} attempts to remove it")]
    Busy { path: PathBuf, attempts: u32 },
    #[error("cgroup: cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup: cannot parse {path}: {reason} (content {content:?})")]
    Parse {
        path: PathBuf,
        content: String,
        reason: String,
    },
    #[error("cgroup: {path} did not become {wanted} within {waited:?} (last seen {last:?})")]
    Timeout {
        path: PathBuf,
        wanted: &'static str,
        last: String,
        waited: Duration,
    },
    #[error("cgroup: cannot {op} the device filter of {path}{}", verifier_suffix(.log))]
    Bpf {
        op: &'static str,
        path: PathBuf,
        /// Verifier output when the kernel refused the program; empty otherwise.
        log: String,
        #[source]
        source: std::io::Error,
    },
}

fn verifier_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {})", log.trim_end())
    }
}

impl CgroupError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CgroupError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// One container's cgroup.
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    fn version(&self) -> CgroupVersion;
    /// Make the cgroup directories (idempotent).
    fn create(&self) -> Result<(), CgroupError>;
    /// Write the limits of `linux.resources`.
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    /// Move a process (and its future children) into the cgroup.
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;
    /// Move the calling process, which must be single-threaded, into the cgroup. On v1
    /// this writes "0" to each hierarchy's `tasks`: moving only oneself skips the
    /// kernel's global threadgroup lock, whose first writer waits for an RCU grace
    /// period (~10 ms here), so it is much cheaper than `add_process` from outside.
    fn join_self(&self) -> Result<(), CgroupError>;
    /// A cgroup2 directory a new process can be created in directly (clone3 with
    /// CLONE_INTO_CGROUP), which needs no migration at all; None on v1.
    fn clone_target(&self) -> Option<PathBuf> {
        None
    }
    /// Every process currently in the cgroup.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Freeze every process and wait until the kernel reports the cgroup frozen.
    fn freeze(&self) -> Result<(), CgroupError>;
    fn thaw(&self) -> Result<(), CgroupError>;
    fn is_frozen(&self) -> Result<bool, CgroupError>;
    fn stats(&self) -> Result<Stats, CgroupError>;
    /// Whether the kernel OOM-killed a process of this cgroup.
    fn oom_killed(&self) -> Result<bool, CgroupError>;
    /// Remove the cgroup directories; missing ones are fine.
    fn destroy(&self) -> Result<(), CgroupError>;
    fn mount_sources(&self) -> Vec<CgroupMountSource>;
}

/// Detect the layout under `root`: v2 when `root` itself is a cgroup2 mount.
pub fn detect(root: &Path) -> Result<CgroupVersion, CgroupError> {
    let st = nix::sys::statfs::statfs(root)
        .map_err(|e| CgroupError::io("statfs", root, std::io::Error::from(e)))?;
    if st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        Ok(CgroupVersion::V2)
    } else {
        Ok(CgroupVersion::V1)
    }
}

/// The manager for `cgroups_path` (OCI `linux.cgroupsPath`) under `root`.
pub fn open(root: &Path, cgroups_path: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    open_from(root, cgroups_path, None)
}

/// Like `open`, but a relative `cgroups_path` is resolved against `origin`, the
/// /proc/self/cgroup text of the process that created the container, so that later
/// commands run from another cgroup find the same directories.
pub fn open_from(
    root: &Path,
    cgroups_path: &str,
    origin: Option<&str>,
) -> Result<Box<dyn CgroupManager>, CgroupError> {
    match detect(root)? {
        CgroupVersion::V1 => Ok(Box::new(v1::V1Manager::new_from(
            root,
            cgroups_path,
            origin,
        )?)),
        CgroupVersion::V2 => Ok(Box::new(v2::V2Manager::new_from(
            root,
            cgroups_path,
            origin,
        )?)),
    }
}

/// The calling process's /proc/self/cgroup, to record as a container's origin.
pub fn own_cgroup_text() -> Option<String> {
    std::fs::read_to_string("/proc/self/cgroup").ok()
}
