//! The client side of the task protocol: one connection per request.

use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::signal::Signal;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use oci_spec::runtime::Process;

use super::{Request, Response, ShimError};
use crate::state::ContainerState;

/// A client of one container's shim.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            path: socket.into(),
        }
    }

    /// Sends `req` (with `fds`) and reads the answer; an error answer is `Err(Remote)`.
    pub fn call(&self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<Response, ShimError> {
        let conn = UnixStream::connect(&self.path).map_err(|source| ShimError::Connect {
            path: self.path.clone(),
            source,
        })?;
        let mut line = serde_json::to_vec(req).map_err(|e| ShimError::Protocol {
            reason: format!("encoding the request: {e}"),
        })?;
        line.push(b'\n');
        let raw: Vec<std::os::fd::RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let sent = sendmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &[IoSlice::new(&line)],
            if raw.is_empty() { &[] } else { &cmsg },
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| ShimError::Io {
            op: "sending a request",
            source: e.into(),
        })?;
        let mut conn = conn;
        if sent < line.len() {
            conn.write_all(&line[sent..])
                .map_err(|source| ShimError::Io {
                    op: "sending a request",
                    source,
                })?;
        }
        let mut answer = Vec::new();
        BufReader::new(conn)
            .read_until(b'\n', &mut answer)
            .map_err(|source| ShimError::Io {
                op: "reading the answer",
                source,
            })?;
        if answer.is_empty() {
            return Err(ShimError::Protocol {
                reason: "it closed the connection without an answer (did it exit?)".into(),
            });
        }
        match serde_json::from_slice(&answer) {
            Ok(Response::Error { category, message }) => {
                Err(ShimError::Remote { category, message })
            }
            Ok(r) => Ok(r),
            Err(e) => Err(ShimError::Protocol {
                reason: format!("bad answer: {e}"),
            }),
        }
    }

    fn unexpected(r: Response) -> ShimError {
        ShimError::Protocol {
            reason: format!("unexpected answer {r:?}"),
        }
    }

    fn ok(&self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), ShimError> {
        match self.call(req, fds)? {
            Response::Ok => Ok(()),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Creates the container; its init's pid.
    pub fn create(&self) -> Result<i32, ShimError> {
        match self.call(&Request::Create, &[])? {
            Response::Created { pid } => Ok(pid),
            r => Err(Self::unexpected(r)),
        }
    }

    pub fn start(&self) -> Result<(), ShimError> {
        self.ok(&Request::Start, &[])
    }

    /// Runs `process` in the container with these stdio fds; its exit code.
    pub fn exec(
        &self,
        process: &Process,
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<i32, ShimError> {
        self.exec_named(process, None, stdin, stdout, stderr)
    }

    /// [`Client::exec`], naming the exec so its terminal can be resized
    /// ([`Client::resize_exec`]).
    pub fn exec_named(
        &self,
        process: &Process,
        exec_id: Option<&str>,
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<i32, ShimError> {
        let req = Request::Exec {
            process: Box::new(process.clone()),
            exec_id: exec_id.map(str::to_string),
        };
        match self.call(&req, &[stdin, stdout, stderr])? {
            Response::Exited { exit_code } => Ok(exit_code),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Resizes the terminal of the running exec `exec_id`.
    pub fn resize_exec(&self, exec_id: &str, width: u16, height: u16) -> Result<(), ShimError> {
        self.ok(
            &Request::ResizeExec {
                exec_id: exec_id.to_string(),
                width,
                height,
            },
            &[],
        )
    }

    /// Copies the container's output to these fds from now until it ends.
    pub fn attach(&self, stdout: BorrowedFd<'_>, stderr: BorrowedFd<'_>) -> Result<(), ShimError> {
        self.ok(&Request::Attach { stdin: false }, &[stdout, stderr])
    }

    /// [`Client::attach`], and what `stdin` yields goes to the container's input (when
    /// its shim keeps one open; else it is read and dropped).
    pub fn attach_with_stdin(
        &self,
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<(), ShimError> {
        self.ok(&Request::Attach { stdin: true }, &[stdin, stdout, stderr])
    }

    pub fn resize(&self, width: u16, height: u16) -> Result<(), ShimError> {
        self.ok(&Request::Resize { width, height }, &[])
    }

    pub fn kill(&self, signal: Signal, all: bool) -> Result<(), ShimError> {
        self.ok(
            &Request::Kill {
                signal: signal as i32,
                all,
            },
            &[],
        )
    }

    /// Blocks until the container exited and its owner recorded it; the exit code.
    pub fn wait(&self) -> Result<i32, ShimError> {
        match self.call(&Request::Wait, &[])? {
            Response::Exited { exit_code } => Ok(exit_code),
            r => Err(Self::unexpected(r)),
        }
    }

    pub fn stats(&self) -> Result<skiff_runtime::cgroups::Stats, ShimError> {
        match self.call(&Request::Stats, &[])? {
            Response::Stats { stats } => Ok(*stats),
            r => Err(Self::unexpected(r)),
        }
    }

    /// (state, init pid, exit code).
    pub fn state(&self) -> Result<(ContainerState, i32, Option<i32>), ShimError> {
        match self.call(&Request::State, &[])? {
            Response::State {
                state,
                pid,
                exit_code,
            } => Ok((state, pid, exit_code)),
            r => Err(Self::unexpected(r)),
        }
    }

    pub fn delete(&self) -> Result<(), ShimError> {
        self.ok(&Request::Delete, &[])
    }
}
