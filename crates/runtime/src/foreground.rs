//! Waiting for a foreground container process (`run`, `exec` without `-d`): forward the
//! signals we receive, copy between our stdio and the pty master when there is one, and
//! return the exit status in shell form.
//!
//! Signals are blocked before the child is created and read from a signalfd, so none is
//! lost between clone and the wait loop; the child unblocks them before exec.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::RuntimeError;
use crate::tty;

/// The signal mask before `block_signals`.
pub struct Blocked {
    old: SigSet,
}

fn forwarded() -> SigSet {
    let mut s = SigSet::all();
    s.remove(Signal::SIGKILL);
    s.remove(Signal::SIGSTOP);
    // Faults must stay deliverable to ourselves.
    for sig in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGABRT,
    ] {
        s.remove(sig);
    }
    s
}

pub fn block_signals() -> Result<Blocked, RuntimeError> {
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded()), Some(&mut old))
        .map_err(|e| RuntimeError::sys("block signals", e))?;
    Ok(Blocked { old })
}

pub fn restore_signals(b: &Blocked) {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&b.old), None);
}

/// Wait for `pid` (our child), forwarding signals and proxying `master`. Returns
/// (shell status, killing signal).
pub fn wait(
    pid: Pid,
    _blocked: &Blocked,
    master: Option<&OwnedFd>,
) -> Result<(i32, Option<i32>), RuntimeError> {
    let sfd = SignalFd::with_flags(&forwarded(), SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| RuntimeError::sys("signalfd", e))?;
    let _raw = master.map(|m| {
        tty::copy_size(m.as_raw_fd());
        tty::RawMode::enter()
    });
    let stdin = std::io::stdin();
    let mut stdin_open = master.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    // A pid may already have exited before we got here.
    if let Some(s) = reap(pid) {
        if let Some(m) = master {
            drain(m, &mut buf);
        }
        return Ok(s);
    }
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys("poll", e)),
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if ready[0].contains(PollFlags::POLLIN) {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match sig {
                    Signal::SIGCHLD => {
                        if let Some(s) = reap(pid) {
                            if let Some(m) = master {
                                drain(m, &mut buf);
                            }
                            return Ok(s);
                        }
                    }
                    Signal::SIGWINCH => {
                        if let Some(m) = master {
                            tty::copy_size(m.as_raw_fd());
                        }
                    }
                    Signal::SIGURG => {}
                    other => {
                        let _ = kill(pid, other);
                    }
                }
            }
        }
        if let Some(m) = master {
            if ready
                .get(1)
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
            {
                // EIO on the master means every slave fd is closed; the exit will follow.
                if copy(m.as_fd(), 1, &mut buf) == 0 {
                    continue;
                }
            }
            if stdin_open
                && ready
                    .get(2)
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
                && copy(stdin.as_fd(), m.as_raw_fd(), &mut buf) == 0
            {
                stdin_open = false;
            }
        }
    }
}

/// Reap `pid` and any other exited children (we may be a subreaper).
fn reap(pid: Pid) -> Option<(i32, Option<i32>)> {
    let mut result = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p == pid => result = Some((c, None)),
            Ok(WaitStatus::Signaled(p, s, _)) if p == pid => {
                result = Some((128 + s as i32, Some(s as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    result
}

fn copy(from: BorrowedFd<'_>, to: i32, buf: &mut [u8]) -> usize {
    match nix::unistd::read(from, buf) {
        Ok(n) if n > 0 => {
            write_all(to, &buf[..n]);
            n
        }
        _ => 0,
    }
}

fn write_all(fd: i32, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a valid buffer to a descriptor we hold.
        let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if r <= 0 {
            if nix::Error::last() == nix::Error::EINTR {
                continue;
            }
            return;
        }
        data = &data[r as usize..];
    }
}

/// Copy whatever output is still buffered in the pty after the process exited.
fn drain(m: &OwnedFd, buf: &mut [u8]) {
    let _ = nix::fcntl::fcntl(
        m,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while copy(m.as_fd(), 1, buf) > 0 {}
}
