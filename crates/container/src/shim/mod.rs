//! The shim: one small process per detached container that owns it, and the task
//! protocol to talk to it, modelled on containerd's task API.
//!
//! # Contract
//!
//! The caller prepares a bundle (rootfs mounted, `config.json` written), binds the
//! shim's socket with [`bind`], and starts a process that calls [`serve`] with that
//! listener (skiff passes it as the shim's stdin, so a client may connect before the
//! shim runs, and never races its start-up). Everything else is a request:
//!
//! | request | answer | effect |
//! |---|---|---|
//! | `create` | `created {pid}` | the runtime creates the container; its stdout and stderr are pipes the shim copies into the CRI log |
//! | `start` | `ok` | the runtime starts the container's process |
//! | `exec {process, exec_id}` + 3 fds | `exited {exit_code}` once it ends | runs `process` in the container with the fds as stdin, stdout, stderr; a process with a terminal gets a pty whose master the shim copies between the first two fds, known by `exec_id` for resizes |
//! | `resize_exec {exec_id, width, height}` | `ok` | that exec's terminal gets this size |
//! | `attach {stdin}` + 2 or 3 fds | `ok` | from now until the container ends, its stdout and stderr are also written to the last two fds; with `stdin`, the first fd's bytes go to the container's input (its stdin pipe, or its terminal) |
//! | `resize {width, height}` | `ok` | the container's terminal gets this size (an error when it has none) |
//! | `kill {signal, all}` | `ok` | signals the init (or, with `all`, every process) |
//! | `wait` | `exited {exit_code}` once it ended *and the owner recorded it* | |
//! | `stats` | `stats {…}` | the container's cgroup statistics |
//! | `state` | `state {state, pid, exit_code}` | |
//! | `delete` | `ok` | an exited container's shim ends (it refuses while the container runs) |
//!
//! Wire format: a client connects to the Unix socket, sends one request as one JSON line
//! (file descriptors ride along as `SCM_RIGHTS` with its first bytes), and reads one
//! JSON line back; then the connection is done. Errors are `{"op": "error", "category",
//! "message"}`, with the categories of the runtime's errors.
//!
//! # Lifecycle
//!
//! Until `create` the shim is single-threaded and answers requests one at a time (the
//! runtime forks it). From `create` on, each connection is served by its own thread, a
//! thread per stream copies the container's output into the log ([`crate::log`]), and a
//! watcher waits for the container's exit. On exit it drains the output, deletes the
//! runtime's state, lets the [`Owner`] record the exit (unmount, write the record), and
//! answers every `wait`. With [`ShimOptions::exit_when_stopped`] the shim then ends by
//! itself (`skiff run`, whose record keeps the exit code); otherwise it stays until
//! `delete` (a kubelet reads the exit code first). The socket file is removed when the
//! shim ends.
//!
//! Exec runs the runtime's command line (`RUNTIME --root R exec --process FILE ID`) as a
//! child process, never by forking the multi-threaded shim.

mod client;
mod server;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};

use crate::state::ContainerState;

pub use client::Client;
pub use server::serve;

/// The largest request line accepted (a Process spec is a few KiB).
const MAX_REQUEST: usize = 1 << 20;

/// What a failed request was, as the runtime categorises errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    Unavailable,
}

impl From<skiff_runtime::Category> for Category {
    fn from(c: skiff_runtime::Category) -> Self {
        match c {
            skiff_runtime::Category::NotFound => Category::NotFound,
            skiff_runtime::Category::AlreadyExists => Category::AlreadyExists,
            skiff_runtime::Category::Invalid => Category::Invalid,
            skiff_runtime::Category::Conflict => Category::Conflict,
            skiff_runtime::Category::Unavailable => Category::Unavailable,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Create,
    Start,
    /// With three fds: stdin, stdout, stderr.
    Exec {
        process: Box<Process>,
        /// Names the exec for `resize_exec` (when its process has a terminal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    ResizeExec {
        exec_id: String,
        width: u16,
        height: u16,
    },
    /// With two fds (stdout, stderr), or three with `stdin` (stdin first).
    Attach {
        #[serde(default)]
        stdin: bool,
    },
    Resize {
        width: u16,
        height: u16,
    },
    Kill {
        signal: i32,
        all: bool,
    },
    Wait,
    Stats,
    State,
    Delete,
}

impl Request {
    fn fds(&self) -> usize {
        match self {
            Request::Exec { .. } => 3,
            Request::Attach { stdin: false } => 2,
            Request::Attach { stdin: true } => 3,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Created {
        pid: i32,
    },
    Exited {
        exit_code: i32,
    },
    Stats {
        stats: Box<skiff_runtime::cgroups::Stats>,
    },
    State {
        state: ContainerState,
        pid: i32,
        exit_code: Option<i32>,
    },
    Error {
        category: Category,
        message: String,
    },
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("connecting to the container's shim at {path} (is the container still running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding the shim socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the container's shim: {op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's shim broke the protocol: {reason}")]
    Protocol { reason: String },
    #[error("bad request to the shim: {reason}")]
    BadRequest { reason: String },
    /// The shim answered with an error.
    #[error("{message}")]
    Remote { category: Category, message: String },
}

impl ShimError {
    pub fn category(&self) -> Category {
        match self {
            ShimError::Remote { category, .. } => *category,
            ShimError::Connect { .. } => Category::NotFound,
            _ => Category::Unavailable,
        }
    }
}

/// The container's owner: what the caller does around the shim's own steps.
pub trait Owner: Send {
    /// Before the runtime creates the container, in the still single-threaded shim: a
    /// thread started here must have ended on return.
    fn before_create(&mut self) -> Result<(), BoxError>;
    /// After the container exists (init `pid`), before `create` is answered.
    fn created(&mut self, pid: i32) -> Result<(), BoxError>;
    /// After `start`, before it is answered.
    fn started(&mut self) -> Result<(), BoxError>;
    /// After the container's processes are gone, before the runtime deletes its state
    /// (its cgroup can still be read, e.g. for an OOM kill).
    fn stopped(&mut self) {}
    /// After the container exited, its output is drained and the runtime's state is gone.
    fn exited(&mut self, exit_code: i32);
}

/// What the shim serves.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime_root: PathBuf,
    /// The CRI log the container's output goes to.
    pub log_path: PathBuf,
    /// The runtime command for exec (program and leading arguments, e.g. `skiff
    /// runtime`); `--root R exec --process FILE ID` is appended.
    pub runtime_command: Vec<OsString>,
    /// End once the container exited and the owner recorded it (else on `delete`).
    pub exit_when_stopped: bool,
    /// Keep the container's stdin open for attach (a pipe; its terminal when the bundle's
    /// process has one), instead of /dev/null.
    pub stdin: bool,
    /// Close the container's stdin when the first attach that wrote to it ends.
    pub stdin_once: bool,
    /// Size-based rotation of the log (none: it grows).
    pub log_rotation: Option<crate::log::Rotation>,
}

/// Binds the shim's socket at `path` (replacing a stale one).
pub fn bind(path: &Path) -> Result<UnixListener, ShimError> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|source| ShimError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

/// The error chain of `e`, one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn error(category: Category, e: &(dyn std::error::Error + 'static)) -> Response {
    Response::Error {
        category,
        message: chain(e),
    }
}

fn runtime_error(e: skiff_runtime::RuntimeError) -> Response {
    error(e.category().into(), &e)
}

fn conflict(message: impl Into<String>) -> Response {
    Response::Error {
        category: Category::Conflict,
        message: message.into(),
    }
}

type ReadError = (Option<UnixStream>, ShimError);

/// Reads one request line and the fds sent with it.
fn read_request(conn: UnixStream) -> Result<(Request, Vec<OwnedFd>, UnixStream), ReadError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 3]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(e) => {
                return Err((
                    Some(conn),
                    ShimError::Io {
                        op: "reading a request",
                        source: e.into(),
                    },
                ))
            }
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        // SAFETY: SCM_RIGHTS just installed `fd` in this process; nothing
                        // else knows it, so this is its only owner.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(n);
    let mut reader = BufReader::new(conn);
    if !buf.ends_with(b"\n") {
        let mut rest = Vec::new();
        let read = (&mut reader)
            .take((MAX_REQUEST - buf.len()) as u64)
            .read_until(b'\n', &mut rest);
        if let Err(e) = read {
            return Err((
                Some(reader.into_inner()),
                ShimError::Io {
                    op: "reading a request",
                    source: e,
                },
            ));
        }
        buf.extend_from_slice(&rest);
    }
    let conn = reader.into_inner();
    let req: Request = match serde_json::from_slice(&buf) {
        Ok(r) => r,
        Err(e) => {
            return Err((
                Some(conn),
                ShimError::BadRequest {
                    reason: e.to_string(),
                },
            ))
        }
    };
    if fds.len() != req.fds() {
        return Err((
            Some(conn),
            ShimError::BadRequest {
                reason: format!(
                    "the request needs {} file descriptors, {} came",
                    req.fds(),
                    fds.len()
                ),
            },
        ));
    }
    Ok((req, fds, conn))
}

fn write_response(conn: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs::File;

    #[test]
    fn requests_and_answers_are_json_lines_with_op_tags() {
        let r = Request::Kill {
            signal: 15,
            all: false,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"kill","signal":15,"all":false}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Wait).unwrap(),
            r#"{"op":"wait"}"#
        );
        let a = Response::Error {
            category: Category::Conflict,
            message: "x".into(),
        };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(
            text,
            r#"{"op":"error","category":"conflict","message":"x"}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), a);
        let st = Response::State {
            state: ContainerState::Exited,
            pid: 7,
            exit_code: Some(3),
        };
        assert_eq!(
            serde_json::from_str::<Response>(&serde_json::to_string(&st).unwrap()).unwrap(),
            st
        );
    }

    /// A request with fds crosses a real socket: the server side gets the request and
    /// working descriptors, the client side the answer.
    #[test]
    fn round_trip_with_file_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let (req, fds, mut conn) = read_request(conn).map_err(|(_, e)| e).unwrap();
            assert_eq!(req, Request::Attach { stdin: false });
            for (fd, text) in fds.into_iter().zip(["to stdout\n", "to stderr\n"]) {
                File::from(fd).write_all(text.as_bytes()).unwrap();
            }
            write_response(&mut conn, &Response::Ok).unwrap();
            // A bad request gets an error answer.
            let (conn, _) = listener.accept().unwrap();
            let (conn, e) = read_request(conn).map(|_| ()).unwrap_err();
            write_response(&mut conn.unwrap(), &error(Category::Invalid, &e)).unwrap();
        });
        let (mut out_r, out_w) = std::io::pipe().unwrap();
        let (mut err_r, err_w) = std::io::pipe().unwrap();
        let client = Client::new(&path);
        client
            .attach(
                std::os::fd::AsFd::as_fd(&out_w),
                std::os::fd::AsFd::as_fd(&err_w),
            )
            .unwrap();
        drop((out_w, err_w));
        let mut s = String::new();
        out_r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "to stdout\n");
        s.clear();
        err_r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "to stderr\n");
        // Attach without its fds is refused by the server's check.
        let e = client
            .call(&Request::Attach { stdin: false }, &[])
            .unwrap_err();
        assert_eq!(e.category(), Category::Invalid);
        assert!(e.to_string().contains("needs 2 file descriptors"), "{e}");
        server.join().unwrap();
        // Nobody listening: a connect error that says where.
        drop(dir);
        let e = client.state().unwrap_err();
        assert!(matches!(e, ShimError::Connect { .. }), "{e}");
    }
}
