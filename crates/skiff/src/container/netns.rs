//! The container's network namespace, made before the container with its loopback up.
//!
//! runc brings `lo` up in a new network namespace; skiff's runtime leaves it as the
//! kernel makes it (down). Rather than a hook process per container, `skiff run`
//! creates the namespace itself: a short-lived thread unshares it, sets `lo` up and
//! opens it; the bundle's config then names it by path (`/proc/<our pid>/fd/<fd>`) so
//! the runtime's init joins it. The thread has ended before the runtime forks, so the
//! process is single-threaded again when that matters.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};

/// Makes the namespace; returns it (keep it open until the container's init has joined,
/// or the namespace is gone) and the path the spec names it by.
pub fn create() -> Result<(File, String)> {
    let ns = std::thread::spawn(|| -> Result<File> {
        // unshare(CLONE_NEWNET) moves only this thread.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("creating a network namespace")?;
        set_lo_up()?;
        File::open("/proc/thread-self/ns/net").context("opening the new network namespace")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the network namespace thread panicked"))??;
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

/// SIOCGIFFLAGS / SIOCSIFFLAGS on `lo` in this thread's network namespace.
fn set_lo_up() -> Result<()> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
    }
    // SAFETY: the flags member is the one SIOCGIFFLAGS filled in.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo");
    }
    Ok(())
}
