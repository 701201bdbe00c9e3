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
//! | `exec {process}` + 3 fds | `exited {exit_code}` once it ends | runs `process` in the container with the fds as stdin, stdout, stderr |
//! | `attach` + 2 fds | `ok` | from now until the container ends, its stdout and stderr are also written to the fds |
//! | `resize {width, height}` | error | the container's process has no terminal (its output goes to the log), so there is nothing to resize; the request is part of the API for when it does |
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

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};
use skiff_runtime::Runtime;

use crate::log::{Copier, Sinks, Stream, Writer};
use crate::state::ContainerState;

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
    },
    /// With two fds: stdout, stderr.
    Attach,
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
            Request::Attach => 2,
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    New,
    Created { pid: i32 },
    Running { pid: i32 },
    Exited { pid: i32, exit_code: i32 },
}

struct Shared {
    opts: ShimOptions,
    socket: Option<PathBuf>,
    runtime: Runtime,
    phase: Mutex<Phase>,
    changed: Condvar,
    owner: Mutex<Box<dyn Owner>>,
    stdout_sinks: Sinks,
    stderr_sinks: Sinks,
    /// Connections being answered: the shim ends only when none is.
    in_flight: AtomicUsize,
    exec_seq: AtomicU64,
}

impl Shared {
    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set_phase(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = p;
        self.changed.notify_all();
    }
}

/// Serves the task protocol for one container until it ends (see the module docs);
/// returns the shim's exit code.
pub fn serve(listener: UnixListener, opts: ShimOptions, owner: Box<dyn Owner>) -> i32 {
    let socket_path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let shared = Arc::new(Shared {
        runtime: Runtime::new(&opts.runtime_root),
        opts,
        socket: socket_path.clone(),
        phase: Mutex::new(Phase::New),
        changed: Condvar::new(),
        owner: Mutex::new(owner),
        stdout_sinks: Arc::default(),
        stderr_sinks: Arc::default(),
        in_flight: AtomicUsize::new(0),
        exec_seq: AtomicU64::new(0),
    });
    let code = accept_loop(&listener, &shared);
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    code
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) -> i32 {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (req, fds, conn) = match read_request(conn) {
            Ok(r) => r,
            Err((conn, e)) => {
                if let Some(mut c) = conn {
                    let _ = write_response(&mut c, &error(Category::Invalid, &e));
                }
                continue;
            }
        };
        let mut conn = conn;
        if shared.phase() == Phase::New {
            // Single-threaded until the container exists: answer in this thread.
            let resp = match req {
                Request::Create => create(shared),
                Request::State => state(shared),
                Request::Delete => {
                    let _ = write_response(&mut conn, &Response::Ok);
                    return 0;
                }
                _ => conflict("the container is not created yet: send create first"),
            };
            let _ = write_response(&mut conn, &resp);
            continue;
        }
        let is_delete = req == Request::Delete;
        if is_delete {
            if let Phase::Exited { .. } = shared.phase() {
                let _ = write_response(&mut conn, &Response::Ok);
                return 0;
            }
        }
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("shim-conn".into())
            .spawn(move || {
                let resp = handle(&s, req, fds);
                let _ = write_response(&mut conn, &resp);
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    0
}

fn handle(s: &Arc<Shared>, req: Request, mut fds: Vec<OwnedFd>) -> Response {
    let id = &s.opts.id;
    match req {
        Request::Create => Response::Error {
            category: Category::AlreadyExists,
            message: format!("container {id} is already created"),
        },
        Request::Start => start(s),
        Request::Exec { process } => {
            let (Some(err), Some(out), Some(inp)) = (fds.pop(), fds.pop(), fds.pop()) else {
                return Response::Error {
                    category: Category::Invalid,
                    message: "exec needs three file descriptors (stdin, stdout, stderr)".into(),
                };
            };
            exec(s, &process, inp, out, err)
        }
        Request::Attach => {
            let (Some(err), Some(out)) = (fds.pop(), fds.pop()) else {
                return Response::Error {
                    category: Category::Invalid,
                    message: "attach needs two file descriptors (stdout, stderr)".into(),
                };
            };
            if let Phase::Exited { .. } = s.phase() {
                return conflict(format!("container {id} has exited"));
            }
            lock(&s.stdout_sinks).push(File::from(out));
            lock(&s.stderr_sinks).push(File::from(err));
            Response::Ok
        }
        Request::Resize { .. } => Response::Error {
            category: Category::Invalid,
            message: format!(
                "container {id} has no terminal (its output goes to its log): nothing to resize"
            ),
        },
        Request::Kill { signal, all } => {
            let sig = match Signal::try_from(signal) {
                Ok(sig) => sig,
                Err(_) => {
                    return Response::Error {
                        category: Category::Invalid,
                        message: format!("kill: {signal} is not a signal number"),
                    }
                }
            };
            if let Phase::Exited { .. } = s.phase() {
                return conflict(format!("container {id} has exited"));
            }
            match s.runtime.kill(id, sig, all) {
                Ok(()) => Response::Ok,
                Err(e) => runtime_error(e),
            }
        }
        Request::Wait => {
            let mut phase = s.phase.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Phase::Exited { exit_code, .. } = *phase {
                    return Response::Exited { exit_code };
                }
                phase = s.changed.wait(phase).unwrap_or_else(|p| p.into_inner());
            }
        }
        Request::Stats => match s.runtime.stats(id) {
            Ok(stats) => Response::Stats {
                stats: Box::new(stats),
            },
            Err(e) => runtime_error(e),
        },
        Request::State => state(s),
        Request::Delete => conflict(format!(
            "container {id} is still running: kill it and wait first"
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn state(s: &Shared) -> Response {
    let (state, pid, exit_code) = match s.phase() {
        Phase::New => (ContainerState::Created, 0, None),
        Phase::Created { pid } => (ContainerState::Created, pid, None),
        Phase::Running { pid } => (ContainerState::Running, pid, None),
        Phase::Exited { pid, exit_code } => (ContainerState::Exited, pid, Some(exit_code)),
    };
    Response::State {
        state,
        pid,
        exit_code,
    }
}

/// The container's stdio while the runtime creates it: stdin /dev/null, stdout and
/// stderr the write ends of the log pipes. The shim's own are put back on drop.
struct Stdio {
    saved: [OwnedFd; 3],
}

impl Stdio {
    fn redirect(stdout: &OwnedFd, stderr: &OwnedFd) -> std::io::Result<Stdio> {
        let devnull = File::open("/dev/null")?;
        let saved = [
            nix::unistd::dup(std::io::stdin())?,
            nix::unistd::dup(std::io::stdout())?,
            nix::unistd::dup(std::io::stderr())?,
        ];
        let guard = Stdio { saved };
        nix::unistd::dup2_stdin(&devnull)?;
        nix::unistd::dup2_stdout(stdout)?;
        nix::unistd::dup2_stderr(stderr)?;
        Ok(guard)
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        let _ = nix::unistd::dup2_stdin(&self.saved[0]);
        let _ = nix::unistd::dup2_stdout(&self.saved[1]);
        let _ = nix::unistd::dup2_stderr(&self.saved[2]);
    }
}

fn create(s: &Arc<Shared>) -> Response {
    let io = |op: &'static str| move |source| ShimError::Io { op, source };
    let writer = match Writer::open(&s.opts.log_path) {
        Ok(w) => w,
        Err(e) => return error(Category::Unavailable, &e),
    };
    let pipes = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .and_then(|o| Ok((o, nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)));
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return error(Category::Unavailable, &io("making the log pipes")(e.into())),
    };
    if let Err(e) = lock(&s.owner).before_create() {
        return error(Category::Invalid, &*e);
    }
    let opts = skiff_runtime::CreateOptions {
        id: s.opts.id.clone(),
        bundle: s.opts.bundle.clone(),
        ..Default::default()
    };
    let created = match Stdio::redirect(&out_w, &err_w) {
        Ok(guard) => {
            let r = s.runtime.create(&opts);
            drop(guard);
            r
        }
        Err(e) => return error(Category::Unavailable, &io("redirecting stdio")(e)),
    };
    // Only the container holds the write ends now: EOF on the pipes means it is gone.
    drop((out_w, err_w));
    if let Err(e) = created {
        return runtime_error(e);
    }
    let pid = s.runtime.state(&s.opts.id).map(|st| st.pid).unwrap_or(0);
    // From here on the shim may have threads: the container's processes exist.
    let copiers: Vec<_> = [
        (Stream::Stdout, out_r, s.stdout_sinks.clone()),
        (Stream::Stderr, err_r, s.stderr_sinks.clone()),
    ]
    .into_iter()
    .map(|(stream, fd, sinks)| {
        let c = Copier {
            stream,
            writer: writer.clone(),
            sinks,
        };
        std::thread::spawn(move || c.run(File::from(fd)))
    })
    .collect();
    if let Err(e) = lock(&s.owner).created(pid) {
        let _ = s.runtime.delete(&s.opts.id, true);
        for c in copiers {
            let _ = c.join();
        }
        return error(Category::Invalid, &*e);
    }
    s.set_phase(Phase::Created { pid });
    let w = s.clone();
    std::thread::spawn(move || watch(&w, copiers));
    Response::Created { pid }
}

fn start(s: &Arc<Shared>) -> Response {
    let pid = match s.phase() {
        Phase::Created { pid } => pid,
        Phase::Running { .. } => {
            return conflict(format!("container {} is already started", s.opts.id))
        }
        _ => return conflict(format!("container {} cannot start now", s.opts.id)),
    };
    if let Err(e) = lock(&s.owner).started() {
        return error(Category::Invalid, &*e);
    }
    // Running before the runtime's start: a fast exit found by the watcher wins.
    {
        let mut phase = lock(&s.phase);
        if *phase == (Phase::Created { pid }) {
            *phase = Phase::Running { pid };
        }
    }
    match s.runtime.start(&s.opts.id) {
        Ok(()) => Response::Ok,
        Err(e) => runtime_error(e),
    }
}

/// Waits for the container to stop, then drains, deletes, records and answers.
fn watch(s: &Arc<Shared>, copiers: Vec<std::thread::JoinHandle<std::io::Result<()>>>) {
    let id = &s.opts.id;
    let mut sleep = Duration::from_millis(2);
    let exit_code = loop {
        match s.runtime.state(id) {
            Ok(st) if st.status == skiff_runtime::state::Status::Stopped => {
                break st.exit_status.unwrap_or(255)
            }
            Ok(_) => {}
            Err(_) => break 255,
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(100));
    };
    for c in copiers {
        let _ = c.join();
    }
    lock(&s.stdout_sinks).clear();
    lock(&s.stderr_sinks).clear();
    let _ = s.runtime.delete(id, true);
    lock(&s.owner).exited(exit_code);
    let pid = match s.phase() {
        Phase::Created { pid } | Phase::Running { pid } | Phase::Exited { pid, .. } => pid,
        Phase::New => 0,
    };
    s.set_phase(Phase::Exited { pid, exit_code });
    if s.opts.exit_when_stopped {
        // Let the answers to waiters go out, then end (the socket file goes with us).
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(p) = &s.socket {
            let _ = std::fs::remove_file(p);
        }
        std::process::exit(0);
    }
}

fn exec(
    s: &Arc<Shared>,
    process: &Process,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Response {
    let id = &s.opts.id;
    if !matches!(s.phase(), Phase::Running { .. }) {
        return conflict(format!("container {id} is not running"));
    }
    let Some((program, lead)) = s.opts.runtime_command.split_first() else {
        return Response::Error {
            category: Category::Invalid,
            message: "the shim has no runtime command for exec".into(),
        };
    };
    let n = s.exec_seq.fetch_add(1, Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("skiff-exec-{}-{n}.json", std::process::id()));
    let written = serde_json::to_vec(process)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&file, b));
    if let Err(e) = written {
        return error(
            Category::Unavailable,
            &ShimError::Io {
                op: "writing the exec process",
                source: e,
            },
        );
    }
    let status = std::process::Command::new(program)
        .args(lead)
        .arg("--root")
        .arg(&s.opts.runtime_root)
        .arg("exec")
        .arg("--process")
        .arg(&file)
        .arg(id)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .status();
    let _ = std::fs::remove_file(&file);
    match status {
        Ok(st) => Response::Exited {
            exit_code: st.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + st.signal().unwrap_or(0)
            }),
        },
        Err(e) => error(
            Category::Unavailable,
            &ShimError::Io {
                op: "running the runtime's exec",
                source: e,
            },
        ),
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
        let req = Request::Exec {
            process: Box::new(process.clone()),
        };
        match self.call(&req, &[stdin, stdout, stderr])? {
            Response::Exited { exit_code } => Ok(exit_code),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Copies the container's output to these fds from now until it ends.
    pub fn attach(&self, stdout: BorrowedFd<'_>, stderr: BorrowedFd<'_>) -> Result<(), ShimError> {
        self.ok(&Request::Attach, &[stdout, stderr])
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
            assert_eq!(req, Request::Attach);
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
        let e = client.call(&Request::Attach, &[]).unwrap_err();
        assert_eq!(e.category(), Category::Invalid);
        assert!(e.to_string().contains("needs 2 file descriptors"), "{e}");
        server.join().unwrap();
        // Nobody listening: a connect error that says where.
        drop(dir);
        let e = client.state().unwrap_err();
        assert!(matches!(e, ShimError::Connect { .. }), "{e}");
    }
}
