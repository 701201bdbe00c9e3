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

/// The cgroup filesystems a host has under one root (normally `/sys/fs/cgroup`), as its
/// mount table shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    /// What the runtime uses there: V2 when the root itself is a cgroup2 mount (a unified
    /// host: Debian 12 and every current systemd distribution), else V1 (legacy, or
    /// hybrid with the controllers on v1 hierarchies).
    pub version: CgroupVersion,
    /// The cgroup2 mount at or below the root: the root itself on a unified host, e.g.
    /// `<root>/unified` on a hybrid one, None on a purely legacy one.
    pub unified: Option<PathBuf>,
}

/// The layout under `root` from the text of `/proc/self/mountinfo`; None when neither a
/// cgroup2 mount at `root` nor any v1 hierarchy below it is mounted.
///
/// When several mounts share a mount point the last one listed is the visible one, so a
/// tmpfs mounted over a cgroup2 root (or the other way round) is judged by what is on top.
pub fn layout_from_mountinfo(mountinfo: &str, root: &Path) -> Option<HostLayout> {
    let mounts = fs::parse_mountinfo(mountinfo);
    let on_top = |mp: &Path| mounts.iter().rev().find(|m| m.mount_point == mp);
    if on_top(root).is_some_and(|m| m.fstype == "cgroup2") {
        return Some(HostLayout {
            version: CgroupVersion::V2,
            unified: Some(root.to_path_buf()),
        });
    }
    let below = |fstype: &str| {
        mounts
            .iter()
            .filter(|m| m.mount_point != root && m.mount_point.starts_with(root))
            .filter(|m| m.fstype == fstype)
            .find(|m| on_top(&m.mount_point).is_some_and(|t| t.fstype == fstype))
            .map(|m| m.mount_point.clone())
    };
    below("cgroup")?;
    Some(HostLayout {
        version: CgroupVersion::V1,
        unified: below("cgroup2"),
    })
}

/// The layout of this host under `root` (see [`layout_from_mountinfo`]).
pub fn host_layout(root: &Path) -> Result<Option<HostLayout>, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    Ok(layout_from_mountinfo(&fs::read(path)?, root))
}

/// Detect the layout under `root`: v2 when `root` itself is a cgroup2 mount. One statfs,
/// so every command pays almost nothing for it; it agrees with [`layout_from_mountinfo`]
/// (tested on this host's mounts), which also finds a hybrid host's cgroup2 mount.
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
    fs::read_whole(Path::new("/proc/self/cgroup")).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod layout_tests {
    use super::*;

    const ROOT: &str = "/sys/fs/cgroup";

    /// Debian 12 / any systemd host booted with the unified hierarchy only.
    const UNIFIED: &str = "\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 28 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
";

    /// systemd's hybrid layout (this test machine): a tmpfs at the root, v1 hierarchies
    /// below it, and a controller-less cgroup2 mount at `unified`.
    const HYBRID: &str = "\
31 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
";

    /// A legacy host: v1 only.
    const LEGACY: &str = "\
31 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - tmpfs tmpfs rw,mode=755
37 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
38 31 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
";

    #[test]
    fn unified_host_is_v2_at_the_root() {
        let l = layout_from_mountinfo(UNIFIED, Path::new(ROOT)).unwrap();
        assert_eq!(l.version, CgroupVersion::V2);
        assert_eq!(l.unified.as_deref(), Some(Path::new(ROOT)));
    }

    #[test]
    fn hybrid_host_is_v1_with_its_unified_mount_found() {
        let l = layout_from_mountinfo(HYBRID, Path::new(ROOT)).unwrap();
        assert_eq!(l.version, CgroupVersion::V1);
        assert_eq!(
            l.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        // The unified mount itself, used as a root (`--cgroup-root`), is a v2 layout.
        let u = layout_from_mountinfo(HYBRID, Path::new("/sys/fs/cgroup/unified")).unwrap();
        assert_eq!(u.version, CgroupVersion::V2);
    }

    #[test]
    fn legacy_host_is_v1_without_a_unified_mount() {
        let l = layout_from_mountinfo(LEGACY, Path::new(ROOT)).unwrap();
        assert_eq!(l.version, CgroupVersion::V1);
        assert_eq!(l.unified, None);
    }

    #[test]
    fn no_cgroup_mount_and_over_mounts() {
        let none = "23 1 0:22 / /sys rw - sysfs sysfs rw\n";
        assert_eq!(layout_from_mountinfo(none, Path::new(ROOT)), None);
        // A root elsewhere sees nothing of /sys/fs/cgroup.
        assert_eq!(layout_from_mountinfo(UNIFIED, Path::new("/cg")), None);
        // A tmpfs mounted over the cgroup2 root hides it.
        let hidden = format!("{UNIFIED}40 26 0:40 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n");
        assert_eq!(layout_from_mountinfo(&hidden, Path::new(ROOT)), None);
        // A path that only shares a prefix with the root is not below it.
        let sibling = "37 31 0:32 / /sys/fs/cgroupX/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(layout_from_mountinfo(sibling, Path::new(ROOT)), None);
    }

    #[test]
    fn statfs_detection_agrees_with_this_hosts_mount_table() {
        let root = Path::new(ROOT);
        let layout = host_layout(root)
            .unwrap()
            .expect("this host mounts cgroups at /sys/fs/cgroup");
        assert_eq!(detect(root).unwrap(), layout.version);
        if let Some(u) = &layout.unified {
            assert_eq!(detect(u).unwrap(), CgroupVersion::V2, "{}", u.display());
        }
    }
}
