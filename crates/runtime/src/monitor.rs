//! Creating the container's processes: the fork-like clone into new namespaces, and the
//! monitor that outlives `create`.
//!
//! ```text
//! skiff runtime create ──fork──▶ T ──fork──▶ M (monitor) ──clone(CLONE_NEW*)──▶ init
//! ```
//! T exits at once, so M is nobody's zombie; M waits for the init and records how it
//! ended in `exit.json`, so the exit status outlives the process that created the
//! container.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::cgroups::CgroupManager;
use crate::error::RuntimeError;
use crate::init::{self, InitContext};
use crate::state::{self, ExitStatus};
use crate::sync::Channel;

/// What a clone returned.
pub(crate) enum Cloned {
    /// We are the new process; `in_cgroup` tells whether the kernel already placed us in
    /// the target cgroup.
    Child {
        in_cgroup: bool,
    },
    Parent(Pid),
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3(2), up to the `cgroup` field (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Fork-like clone into new namespaces, and straight into `cgroup` (a cgroup2 directory)
/// when given and the kernel supports it, so the child never has to be migrated.
pub(crate) fn clone_into(flags: CloneFlags, cgroup: Option<&Path>) -> Result<Cloned, RuntimeError> {
    if let Some(dir) = cgroup {
        let fd = std::fs::File::open(dir)
            .map_err(|e| RuntimeError::io(format!("open cgroup {}", dir.display()), e))?;
        let args = CloneArgs {
            flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: fd.as_raw_fd() as u64,
        };
        // SAFETY: as for clone below (no CLONE_VM, no stack: fork semantics); `args` is a
        // valid clone_args of the size we pass.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match r {
            0 => return Ok(Cloned::Child { in_cgroup: true }),
            pid if pid > 0 => return Ok(Cloned::Parent(Pid::from_raw(pid as i32))),
            _ => {
                let e = nix::Error::last();
                // Older kernels: fall back to clone and a migration.
                if !matches!(
                    e,
                    nix::Error::ENOSYS | nix::Error::E2BIG | nix::Error::EINVAL
                ) {
                    return Err(RuntimeError::sys(
                        format!("clone3 with {flags:?} into cgroup {}", dir.display()),
                        e,
                    ));
                }
            }
        }
    }
    let f = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone without CLONE_VM and with a null stack behaves like fork: the child
    // gets a copy-on-write copy of this address space and returns here on its own copy of
    // the stack. This process is single-threaded, so no lock can be held by another
    // thread in the child.
    let r = unsafe { libc::syscall(libc::SYS_clone, f, 0usize, 0usize, 0usize, 0usize) };
    match r {
        -1 => Err(RuntimeError::sys(
            format!("clone with {flags:?}"),
            nix::Error::last(),
        )),
        0 => Ok(Cloned::Child { in_cgroup: false }),
        pid => Ok(Cloned::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Point our pid_for_children at the namespace at `path`; returns our own to restore.
pub(crate) fn enter_pid_ns(path: &Path) -> Result<std::fs::File, RuntimeError> {
    let own = std::fs::File::open("/proc/self/ns/pid")
        .map_err(|e| RuntimeError::io("open /proc/self/ns/pid", e))?;
    let target = std::fs::File::open(path)
        .map_err(|e| RuntimeError::io(format!("open pid namespace {}", path.display()), e))?;
    nix::sched::setns(&target, CloneFlags::CLONE_NEWPID)
        .map_err(|e| RuntimeError::sys(format!("join pid namespace {}", path.display()), e))?;
    Ok(own)
}

/// Start the monitor (double fork) and have it clone the init; returns (init, monitor).
pub(crate) fn spawn_monitored(
    ctx: &InitContext,
    dir: &Path,
    cg: &dyn CgroupManager,
    flags: CloneFlags,
    pid_path: Option<&Path>,
    parent_ch: &Channel,
    child_ch: &Channel,
) -> Result<(Pid, i32), RuntimeError> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("pipe", e))?;
    // SAFETY: this process is single-threaded (the runtime CLI never starts threads), so
    // the child may run arbitrary code.
    match unsafe { fork() }.map_err(|e| RuntimeError::sys("fork", e))? {
        ForkResult::Child => {
            drop(rd);
            let _ = nix::unistd::setsid();
            // SAFETY: as above, still single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    monitor_main(ctx, dir, cg, flags, pid_path, parent_ch, child_ch, wr)
                }
                // SAFETY: leave without running the parent's destructors.
                _ => unsafe { libc::_exit(0) },
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let _ = waitpid(child, None);
            let mut buf = [0u8; 8];
            let n = read_full(&rd, &mut buf);
            if n != 8 {
                return Err(RuntimeError::Usage(format!(
                    "container {}: the monitor process failed to start the init",
                    ctx.id
                )));
            }
            let pid = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let mon = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
            if pid <= 0 {
                return Err(RuntimeError::sys(
                    format!("container {}: clone of the init", ctx.id),
                    nix::Error::from_raw(-pid),
                ));
            }
            Ok((Pid::from_raw(pid), mon))
        }
    }
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match nix::unistd::read(fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
    }
    n
}

#[allow(clippy::too_many_arguments)]
fn monitor_main(
    ctx: &InitContext,
    dir: &Path,
    cg: &dyn CgroupManager,
    flags: CloneFlags,
    pid_path: Option<&Path>,
    parent_ch: &Channel,
    child_ch: &Channel,
    report: OwnedFd,
) -> ! {
    let _ = nix::unistd::close(parent_ch.raw());
    let name = c"skiff-monitor";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    let pid = match pid_path.map(enter_pid_ns).transpose() {
        Err(_) => Err(nix::Error::EINVAL),
        Ok(_) => match clone_into(flags, cg.clone_target().as_deref()) {
            Ok(Cloned::Child { in_cgroup }) => init::init_main(ctx, cg, in_cgroup, child_ch),
            Ok(Cloned::Parent(pid)) => Ok(pid),
            Err(RuntimeError::Sys { source, .. }) => Err(source),
            Err(_) => Err(nix::Error::EINVAL),
        },
    };
    let code = match pid {
        Ok(p) => p.as_raw(),
        Err(e) => -(e as i32),
    };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&code.to_le_bytes());
    msg[4..].copy_from_slice(&(std::process::id() as i32).to_le_bytes());
    let _ = nix::unistd::write(&report, &msg);
    drop(report);
    let _ = nix::unistd::close(child_ch.raw());
    let Ok(pid) = pid else {
        // SAFETY: exit without the parent's destructors.
        unsafe { libc::_exit(1) }
    };
    // Let go of every descriptor inherited from the caller (its stdio and whatever else
    // it had open, such as the write end of a pipe that is the container's stdin), so
    // that it sees EOF when the container's side closes; the monitor only waits and
    // writes files by path from here on.
    close_inherited();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto our own standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let status = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => break (c, None),
            Ok(WaitStatus::Signaled(_, s, _)) => break (128 + s as i32, Some(s as i32)),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => break (255, None),
        }
    };
    let exit = ExitStatus {
        status: status.0,
        signal: status.1,
        oom_killed: cg.oom_killed().unwrap_or(false),
    };
    let _ = state::save_exit(dir, &exit);
    // SAFETY: exit without the parent's destructors.
    unsafe { libc::_exit(0) }
}

/// Closes every descriptor from 3 up (close_range(2), or one by one from /proc/self/fd on
/// kernels without it).
fn close_inherited() {
    // SAFETY: close_range only closes descriptors of this (single-threaded) process.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r == 0 {
        return;
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd >= 3)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}
