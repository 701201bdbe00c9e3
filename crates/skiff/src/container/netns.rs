//! The container's network namespace, made before the container with its loopback up.
//!
//! runc brings `lo` up in a new network namespace; skiff's runtime leaves it as the
//! kernel makes it (down). Rather than a hook process per container, `skiff run`
//! creates the namespace itself: a short-lived thread unshares it, sets `lo` up and
//! opens it; the bundle's config then names it by path (`/proc/<our pid>/fd/<fd>`) so
//! the runtime's init joins it. The thread has ended before the runtime forks, so the
//! process is single-threaded again when that matters.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Result;

/// Makes the namespace; returns it (keep it open until the container's init has joined,
/// or the namespace is gone) and the path the spec names it by.
pub fn create() -> Result<(File, String)> {
    let ns = skiff_container::netns::new_network()?;
    let path = format!("/proc/{}/fd/{}", std::process::id(), ns.as_raw_fd());
    Ok((ns, path))
}

/// [`create`], and points `bundle/config.json` at it.
pub fn prepare(bundle: &Path) -> Result<File> {
    let (ns, path) = create()?;
    set_path(bundle, Some(&path))?;
    Ok(ns)
}

/// Once the init has joined: the path dies with this process, and `exec` (which loads
/// the bundle and joins the init's namespaces) must not find a dangling one there.
pub fn forget(bundle: &Path) -> Result<()> {
    set_path(bundle, None)
}

fn set_path(bundle: &Path, path: Option<&str>) -> Result<()> {
    let mut spec = skiff_container::spec::load(bundle)?;
    skiff_container::spec::set_network_namespace(&mut spec, path);
    Ok(skiff_container::spec::write(bundle, &spec)?)
}
