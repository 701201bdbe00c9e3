//! Namespaces made before a container: a network namespace with its loopback up (what
//! runc's init does and skiff's runtime leaves to the caller), and a pod sandbox's
//! network, IPC and UTS namespaces pinned by bind mounts instead of a pause process.
//!
//! Each namespace is made by a short-lived thread: `unshare(2)` of these kinds moves
//! only the calling thread, so the process itself never changes namespaces.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("{op}")]
    Sys {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace thread panicked")]
    Thread,
}

fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> NsError {
    let op = op.into();
    move |e| NsError::Sys {
        op,
        source: std::io::Error::from(e),
    }
}

/// A new network namespace with `lo` up, held open by the returned file.
pub fn new_network() -> Result<File, NsError> {
    std::thread::spawn(|| -> Result<File, NsError> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(sys("creating a network namespace"))?;
        set_lo_up()?;
        File::open("/proc/thread-self/ns/net").map_err(|source| NsError::Sys {
            op: "opening the new network namespace".into(),
            source,
        })
    })
    .join()
    .map_err(|_| NsError::Thread)?
}

/// The pinned namespaces of a pod sandbox: files a container's spec names by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
}

impl Pinned {
    /// Where [`pin_sandbox`] puts the namespaces of the sandbox in `dir`.
    pub fn at(dir: &Path) -> Pinned {
        Pinned {
            net: dir.join("net"),
            ipc: dir.join("ipc"),
            uts: dir.join("uts"),
        }
    }

    /// Whether every namespace is still pinned (a mount of nsfs on each file).
    pub fn is_pinned(&self) -> bool {
        [&self.net, &self.ipc, &self.uts].iter().all(|p| is_nsfs(p))
    }
}

fn is_nsfs(p: &Path) -> bool {
    // A pinned namespace file is on nsfs (magic 0x6e736673), unlike the empty file.
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 == 0x6e73_6673)
        .unwrap_or(false)
}

/// Makes new network (loopback up), IPC and UTS (host name `hostname`) namespaces and
/// pins each by a bind mount on a file in `dir`. On failure nothing stays mounted.
pub fn pin_sandbox(dir: &Path, hostname: &str) -> Result<Pinned, NsError> {
    std::fs::create_dir_all(dir).map_err(|source| NsError::Sys {
        op: format!("creating {}", dir.display()),
        source,
    })?;
    let pinned = Pinned::at(dir);
    let p = pinned.clone();
    let host = hostname.to_string();
    let made = std::thread::spawn(move || -> Result<(), NsError> {
        nix::sched::unshare(
            CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS,
        )
        .map_err(sys("creating the sandbox's namespaces"))?;
        nix::unistd::sethostname(&host).map_err(sys(format!("setting host name {host:?}")))?;
        set_lo_up()?;
        for (kind, target) in [("net", &p.net), ("ipc", &p.ipc), ("uts", &p.uts)] {
            File::create(target).map_err(|source| NsError::Sys {
                op: format!("creating {}", target.display()),
                source,
            })?;
            let src = format!("/proc/thread-self/ns/{kind}");
            mount(
                Some(src.as_str()),
                target.as_path(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys(format!(
                "pinning the {kind} namespace on {}",
                target.display()
            )))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| NsError::Thread)
    .and_then(|r| r);
    if let Err(e) = made {
        unpin(dir);
        return Err(e);
    }
    Ok(pinned)
}

/// Unmounts the pinned namespaces in `dir` and removes their files (best effort; the
/// namespaces end once no process is left in them).
pub fn unpin(dir: &Path) {
    let p = Pinned::at(dir);
    for f in [&p.net, &p.ipc, &p.uts] {
        while is_nsfs(f) {
            if umount2(f.as_path(), MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let _ = std::fs::remove_file(f);
    }
}

/// Runs `f` on a thread that has joined the network namespace pinned (or opened) at
/// `ns`: a socket it makes lives in that namespace.
pub fn in_network<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NsError> {
    let file = File::open(ns).map_err(|source| NsError::Sys {
        op: format!("opening the network namespace {}", ns.display()),
        source,
    })?;
    std::thread::spawn(move || -> Result<T, NsError> {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(sys("joining the pod's network namespace"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| NsError::Thread)?
}

/// SIOCGIFFLAGS / SIOCSIFFLAGS on `lo` in this thread's network namespace.
pub fn set_lo_up() -> Result<(), NsError> {
    let io = |op: &str| NsError::Sys {
        op: op.into(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io("socket"));
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
        return Err(io("SIOCGIFFLAGS lo"));
    }
    // SAFETY: the flags member is the one SIOCGIFFLAGS filled in.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io("SIOCSIFFLAGS lo"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sandbox_is_pinned_and_unpinned() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        let p = pin_sandbox(&ns, "sandbox-test").unwrap();
        assert!(p.is_pinned());
        // The UTS namespace carries the host name; ours is untouched.
        let uts = File::open(&p.uts).unwrap();
        let name = std::thread::spawn(move || {
            nix::sched::setns(&uts, CloneFlags::CLONE_NEWUTS).unwrap();
            nix::unistd::gethostname().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(name.to_str(), Some("sandbox-test"));
        assert_ne!(
            nix::unistd::gethostname().unwrap().to_str(),
            Some("sandbox-test")
        );
        // A listener inside answers only inside.
        let port = in_network(&p.net, || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::thread::spawn(move || {
                let _ = l.accept();
            });
            port
        })
        .unwrap();
        assert!(in_network(&p.net, move || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok())
        .unwrap());
        unpin(&ns);
        assert!(!p.is_pinned());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(!mounts.contains(ns.to_str().unwrap()));
    }
}
