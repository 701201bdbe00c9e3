//! Performing the mounts a [`crate::Snapshotter`] returns.
//!
//! Kept apart from the snapshotter so that it stays free of side effects on the host:
//! only callers that own a mount namespace decision (`skiff run`, tests in a private
//! namespace, later the kubelet) mount.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::Category;
use crate::snapshot::Mount;

/// A mount or unmount that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount {kind} on {target} (options {options})")]
    Mount {
        kind: String,
        target: PathBuf,
        options: String,
        #[source]
        source: nix::Error,
    },
    #[error("mount options for {target} are {len} bytes, over the kernel's {max}-byte limit (too many layers)")]
    OptionsTooLong {
        target: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("cannot unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

impl MountError {
    pub fn category(&self) -> Category {
        Category::Unavailable
    }
}

/// mount(2) copies at most one page of option data.
const MAX_DATA: usize = 4095;

/// Mounts each of `mounts` on `target`, in order.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    for m in mounts {
        let data = m.data();
        if data.len() > MAX_DATA {
            return Err(MountError::OptionsTooLong {
                target: target.to_path_buf(),
                len: data.len(),
                max: MAX_DATA,
            });
        }
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            Some(m.kind.as_str()),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| MountError::Mount {
            kind: m.kind.clone(),
            target: target.to_path_buf(),
            options: data.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Unmounts `target` (not lazily: a busy rootfs is an error the caller should see).
pub fn unmount(target: &Path) -> Result<(), MountError> {
    nix::mount::umount2(target, MntFlags::empty()).map_err(|source| MountError::Unmount {
        target: target.to_path_buf(),
        source,
    })
}

/// Unmounts on drop; for callers (and tests) that must never leave a mount behind.
pub struct MountGuard {
    target: Option<PathBuf>,
}

impl MountGuard {
    /// Mounts `mounts` on `target` and returns the guard that unmounts it.
    pub fn mount(mounts: &[Mount], target: &Path) -> Result<Self, MountError> {
        mount_all(mounts, target)?;
        Ok(Self {
            target: Some(target.to_path_buf()),
        })
    }

    /// Unmounts now, reporting failure.
    pub fn unmount(mut self) -> Result<(), MountError> {
        match self.target.take() {
            Some(t) => unmount(&t),
            None => Ok(()),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(t) = self.target.take() {
            // Best effort on unwind paths; detach if something still holds it open.
            if unmount(&t).is_err() {
                let _ = nix::mount::umount2(&t, MntFlags::MNT_DETACH);
            }
        }
    }
}
