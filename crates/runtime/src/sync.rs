//! The parent ↔ container-init handshake over a SOCK_SEQPACKET socketpair.
//!
//! Each message is one datagram: a tag byte and an optional UTF-8 payload (an error
//! message). File descriptors (the pty master) travel as SCM_RIGHTS with a `Fd` message.
//! Both ends are close-on-exec, so a successful execve in the init shows up as EOF.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync with container process: {op}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("sync with container process: expected {expected:?}, got {got:?}")]
    Unexpected { expected: Msg, got: Option<Msg> },
    #[error("{0}")]
    Child(String),
}

/// Handshake steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Msg {
    /// parent → child: maps written, cgroup joined; go on.
    Go = 1,
    /// child → parent: mounts prepared; run prestart/createRuntime hooks now. Only sent
    /// when the config has such hooks (both sides know it before the clone).
    Hooks = 2,
    /// parent → child: hooks ran.
    HooksDone = 3,
    /// child → parent: carries the pty master fd.
    Fd = 4,
    /// child → parent: fully set up, waiting for start.
    Ready = 5,
    /// parent → child: exec now (foreground run; `start` uses the fifo instead). A plain
    /// foreground run queues it before Ready arrives; the init reads it after Ready.
    Start = 6,
    /// child → parent: something failed; payload is the message.
    Error = 7,
    /// child → parent: the pid of a grandchild (exec through a joined pid namespace).
    Pid = 8,
}

impl Msg {
    fn from_u8(b: u8) -> Option<Msg> {
        Some(match b {
            1 => Msg::Go,
            2 => Msg::Hooks,
            3 => Msg::HooksDone,
            4 => Msg::Fd,
            5 => Msg::Ready,
            6 => Msg::Start,
            7 => Msg::Error,
            8 => Msg::Pid,
            _ => return None,
        })
    }
}

/// A received message: its tag, payload, and the descriptor it carried, if any.
pub type Received = (Msg, Vec<u8>, Option<OwnedFd>);

/// One end of the handshake.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel), SyncError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| SyncError::Sys {
        op: "socketpair",
        source,
    })?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, msg: Msg) -> Result<(), SyncError> {
        self.send_payload(msg, &[])
    }

    pub fn send_payload(&self, msg: Msg, payload: &[u8]) -> Result<(), SyncError> {
        let tag = [msg as u8];
        let iov = [IoSlice::new(&tag), IoSlice::new(payload)];
        sendmsg::<()>(self.raw(), &iov, &[], MsgFlags::MSG_NOSIGNAL, None)
            .map(|_| ())
            .map_err(|source| SyncError::Sys { op: "send", source })
    }

    pub fn send_error(&self, message: &str) {
        // Best effort: the parent may be gone, and then nobody is left to tell.
        let _ = self.send_payload(Msg::Error, message.as_bytes());
    }

    pub fn send_fd(&self, fd: RawFd) -> Result<(), SyncError> {
        let tag = [Msg::Fd as u8];
        let iov = [IoSlice::new(&tag)];
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(self.raw(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
            .map(|_| ())
            .map_err(|source| SyncError::Sys {
                op: "send fd",
                source,
            })
    }

    /// Receive one message; None on EOF (the peer exited or exec'd).
    pub fn recv(&self) -> Result<Option<Received>, SyncError> {
        let mut buf = vec![0u8; 8192];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = recvmsg::<()>(
                self.raw(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match r {
                Ok(m) => m,
                Err(nix::Error::EINTR) => continue,
                Err(source) => return Err(SyncError::Sys { op: "recv", source }),
            };
            let mut fd = None;
            for c in msg.cmsgs().map_err(|source| SyncError::Sys {
                op: "recv cmsg",
                source,
            })? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel just installed this descriptor for us and
                        // nothing else refers to it.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
            }
            let n = msg.bytes;
            if n == 0 {
                return Ok(None);
            }
            let Some(tag) = Msg::from_u8(buf[0]) else {
                return Err(SyncError::Unexpected {
                    expected: Msg::Go,
                    got: None,
                });
            };
            return Ok(Some((tag, buf[1..n].to_vec(), fd)));
        }
    }

    /// Wait for `expected`; an `Error` message from the child becomes `SyncError::Child`.
    pub fn expect(&self, expected: Msg) -> Result<(Vec<u8>, Option<OwnedFd>), SyncError> {
        match self.recv()? {
            Some((m, payload, fd)) if m == expected => Ok((payload, fd)),
            Some((Msg::Error, payload, _)) => Err(SyncError::Child(
                String::from_utf8_lossy(&payload).into_owned(),
            )),
            Some((m, _, _)) => Err(SyncError::Unexpected {
                expected,
                got: Some(m),
            }),
            None => Err(SyncError::Unexpected {
                expected,
                got: None,
            }),
        }
    }
}
