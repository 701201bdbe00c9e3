//! Terminals: allocating the container's pty (inside the container, so its slave lives
//! in the container's devpts), handing the master to a `--console-socket` listener the
//! way runc does, and proxying it to our own stdio for a foreground `run -t`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios;

#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    #[error("{what}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("console socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn sys(what: &'static str, source: nix::Error) -> TtyError {
    TtyError::Sys { what, source }
}

/// A freshly allocated pty: master and the slave's path (e.g. /dev/pts/0).
pub struct Pty {
    pub master: OwnedFd,
    pub slave_path: PathBuf,
}

/// Open a new pty from /dev/ptmx of the current mount namespace.
pub fn open_pty(size: Option<(u16, u16)>) -> Result<Pty, TtyError> {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| sys("open /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| sys("grantpt", e))?;
    unlockpt(&master).map_err(|e| sys("unlockpt", e))?;
    let slave_path = PathBuf::from(ptsname_r(&master).map_err(|e| sys("ptsname", e))?);
    if let Some((rows, cols)) = size {
        set_size(master.as_raw_fd(), rows, cols)?;
    }
    // Hand out a plain close-on-exec descriptor; the PtyMaster closes its own on drop.
    let fd = nix::unistd::dup(&master).map_err(|e| sys("dup", e))?;
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(Pty {
        master: fd,
        slave_path,
    })
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<(), TtyError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(sys("set terminal size", nix::Error::last()));
    }
    Ok(())
}

fn get_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into the winsize struct we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Make the pty slave at `path` our controlling terminal and stdio.
pub fn attach_slave(path: &Path) -> Result<(), TtyError> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let slave = open(path, OFlag::O_RDWR, Mode::empty()).map_err(|e| sys("open pty slave", e))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors of this (about to exec) process.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(sys("dup2 pty slave", nix::Error::last()));
        }
    }
    // SAFETY: TIOCSCTTY on our stdin, which is the pty slave; we are a session leader.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(sys("set controlling terminal", nix::Error::last()));
    }
    Ok(())
}

/// Send `master` over the unix socket at `path`, as runc does for `--console-socket`.
pub fn send_to_console_socket(path: &Path, master: &OwnedFd) -> Result<(), TtyError> {
    let sock = UnixStream::connect(path).map_err(|source| TtyError::Socket {
        path: path.to_path_buf(),
        source,
    })?;
    let name = b"/dev/ptmx";
    let iov = [IoSlice::new(name)];
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map(|_| ())
        .map_err(|e| TtyError::Socket {
            path: path.to_path_buf(),
            source: std::io::Error::from(e),
        })
}

/// Puts our stdin in raw mode for the life of the guard.
pub struct RawMode {
    saved: Option<termios::Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, t);
        }
    }
}

/// Copy the size of our own terminal (if any) to the pty master.
pub fn copy_size(master: RawFd) {
    if let Some((r, c)) = get_size(0) {
        let _ = set_size(master, r, c);
    }
}
