//! The shim's side: the accept loop, the container's lifecycle, the log copiers and
//! the exit watcher (see the module docs of [`super`]).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::Process;
use skiff_runtime::Runtime;

use super::{
    conflict, error, read_request, runtime_error, write_response, Category, Owner, Request,
    Response, ShimError, ShimOptions,
};
use crate::log::{Copier, Sinks, Stream, Writer};
use crate::state::ContainerState;

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
    /// Where attached input goes: the write end of the container's stdin pipe, or its
    /// terminal's master (`None` once closed, or when it has neither).
    input: Mutex<Option<File>>,
    /// The container's terminal (its pty master), for resizes.
    master: Mutex<Option<OwnedFd>>,
    /// The terminals of running execs, by exec id.
    exec_terminals: Mutex<std::collections::HashMap<String, OwnedFd>>,
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
        input: Mutex::new(None),
        master: Mutex::new(None),
        exec_terminals: Mutex::new(std::collections::HashMap::new()),
    });
    let code = accept_loop(&listener, &shared);
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    code
}

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) -> i32 {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        // A client that connects and never writes must not hold the shim up.
        let _ = conn.set_read_timeout(Some(REQUEST_TIMEOUT));
        if shared.phase() == Phase::New {
            // Single-threaded until the container exists: answer in this thread.
            let Some((req, _fds, mut conn)) = receive(conn) else {
                continue;
            };
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
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("shim-conn".into())
            .spawn(move || {
                if let Some((req, fds, mut conn)) = receive(conn) {
                    let exited = matches!(s.phase(), Phase::Exited { .. });
                    if req == Request::Delete && exited {
                        let _ = write_response(&mut conn, &Response::Ok);
                        end(&s);
                    }
                    let resp = handle(&s, req, fds);
                    let _ = write_response(&mut conn, &resp);
                }
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    0
}

/// Reads a request; a bad one is answered here (None).
fn receive(conn: UnixStream) -> Option<(Request, Vec<OwnedFd>, UnixStream)> {
    match read_request(conn) {
        Ok(r) => Some(r),
        Err((conn, e)) => {
            if let Some(mut c) = conn {
                let _ = write_response(&mut c, &error(Category::Invalid, &e));
            }
            None
        }
    }
}

/// Ends the shim after the container is gone: the socket file goes first.
fn end(s: &Shared) -> ! {
    if let Some(p) = &s.socket {
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(0)
}

fn handle(s: &Arc<Shared>, req: Request, mut fds: Vec<OwnedFd>) -> Response {
    let id = &s.opts.id;
    match req {
        Request::Create => Response::Error {
            category: Category::AlreadyExists,
            message: format!("container {id} is already created"),
        },
        Request::Start => start(s),
        Request::ResizeExec {
            exec_id,
            width,
            height,
        } => match lock(&s.exec_terminals).get(&exec_id) {
            Some(m) => {
                use std::os::fd::AsRawFd;
                match skiff_runtime::tty::set_size(m.as_raw_fd(), height, width) {
                    Ok(()) => Response::Ok,
                    Err(e) => error(Category::Unavailable, &e),
                }
            }
            None => Response::Error {
                category: Category::NotFound,
                message: format!("no running exec {exec_id:?} with a terminal"),
            },
        },
        Request::Exec { process, exec_id } => {
            let (Some(err), Some(out), Some(inp)) = (fds.pop(), fds.pop(), fds.pop()) else {
                return Response::Error {
                    category: Category::Invalid,
                    message: "exec needs three file descriptors (stdin, stdout, stderr)".into(),
                };
            };
            exec(s, &process, exec_id, inp, out, err)
        }
        Request::Attach { stdin } => {
            let (Some(err), Some(out)) = (fds.pop(), fds.pop()) else {
                return Response::Error {
                    category: Category::Invalid,
                    message: "attach needs two file descriptors (stdout, stderr)".into(),
                };
            };
            let inp = if stdin { fds.pop() } else { None };
            if let Phase::Exited { .. } = s.phase() {
                return conflict(format!("container {id} has exited"));
            }
            lock(&s.stdout_sinks).push(File::from(out));
            lock(&s.stderr_sinks).push(File::from(err));
            if let Some(inp) = inp {
                let s = s.clone();
                std::thread::spawn(move || feed_input(&s, File::from(inp)));
            }
            Response::Ok
        }
        Request::Resize { width, height } => match &*lock(&s.master) {
            Some(m) => {
                use std::os::fd::AsRawFd;
                match skiff_runtime::tty::set_size(m.as_raw_fd(), height, width) {
                    Ok(()) => Response::Ok,
                    Err(e) => error(Category::Unavailable, &e),
                }
            }
            None => Response::Error {
                category: Category::Invalid,
                message: format!(
                    "container {id} has no terminal (its output goes to its log): nothing to resize"
                ),
            },
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

/// The container's stdio while the runtime creates it: stdin its pipe (or /dev/null),
/// stdout and stderr the write ends of the log pipes. The shim's own are put back on drop.
struct Stdio {
    saved: [OwnedFd; 3],
}

impl Stdio {
    fn redirect(
        stdin: Option<&OwnedFd>,
        stdout: &OwnedFd,
        stderr: &OwnedFd,
    ) -> std::io::Result<Stdio> {
        let devnull = File::open("/dev/null")?;
        let saved = [
            nix::unistd::dup(std::io::stdin())?,
            nix::unistd::dup(std::io::stdout())?,
            nix::unistd::dup(std::io::stderr())?,
        ];
        let guard = Stdio { saved };
        match stdin {
            Some(fd) => nix::unistd::dup2_stdin(fd)?,
            None => nix::unistd::dup2_stdin(&devnull)?,
        }
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
    let writer = match Writer::open_rotating(&s.opts.log_path, s.opts.log_rotation) {
        Ok(w) => w,
        Err(e) => return error(Category::Unavailable, &e),
    };
    let pipes = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .and_then(|o| Ok((o, nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)));
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return error(Category::Unavailable, &io("making the log pipes")(e.into())),
    };
    // A terminal (the bundle's process asks for one): the runtime hands its master over
    // a console socket. Otherwise, with stdin kept open, a pipe.
    let terminal = crate::spec::load(&s.opts.bundle)
        .ok()
        .and_then(|sp| sp.process().as_ref().and_then(|p| p.terminal()))
        == Some(true);
    let console = if terminal {
        match ConsoleSocket::bind() {
            Ok(c) => Some(c),
            Err(e) => return error(Category::Unavailable, &io("binding the console socket")(e)),
        }
    } else {
        None
    };
    let stdin_pipe = if s.opts.stdin && !terminal {
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => Some(p),
            Err(e) => {
                return error(
                    Category::Unavailable,
                    &io("making the stdin pipe")(e.into()),
                )
            }
        }
    } else {
        None
    };
    if let Err(e) = lock(&s.owner).before_create() {
        return error(Category::Invalid, &*e);
    }
    let opts = skiff_runtime::CreateOptions {
        id: s.opts.id.clone(),
        bundle: s.opts.bundle.clone(),
        console_socket: console.as_ref().map(|c| c.path.clone()),
        ..Default::default()
    };
    let created = match Stdio::redirect(stdin_pipe.as_ref().map(|p| &p.0), &out_w, &err_w) {
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
    if let Some((_, w)) = stdin_pipe {
        *lock(&s.input) = Some(File::from(w));
    }
    let master = match console.map(|c| c.receive()) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            let _ = s.runtime.delete(&s.opts.id, true);
            return error(Category::Unavailable, &io("receiving the terminal")(e));
        }
    };
    let pid = s.runtime.state(&s.opts.id).map(|st| st.pid).unwrap_or(0);
    // From here on the shim may have threads: the container's processes exist.
    let mut outputs = vec![
        (Stream::Stdout, out_r, s.stdout_sinks.clone()),
        (Stream::Stderr, err_r, s.stderr_sinks.clone()),
    ];
    if let Some(m) = master {
        // The terminal's output is the container's stdout.
        match (m.try_clone(), m.try_clone()) {
            (Ok(reader), Ok(input)) => {
                outputs.push((Stream::Stdout, reader, s.stdout_sinks.clone()));
                if s.opts.stdin {
                    *lock(&s.input) = Some(File::from(input));
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = s.runtime.delete(&s.opts.id, true);
                return error(Category::Unavailable, &io("duplicating the terminal")(e));
            }
        }
        *lock(&s.master) = Some(m);
    }
    let copiers: Vec<_> = outputs
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
    lock(&s.owner).stopped();
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
        end(s);
    }
}

fn exec(
    s: &Arc<Shared>,
    process: &Process,
    exec_id: Option<String>,
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
    // Beside the bundle's config, readable by root only (the env may hold secrets).
    let file = s.opts.bundle.join(format!("exec-{n}.json"));
    let written = serde_json::to_vec(process)
        .map_err(std::io::Error::other)
        .and_then(|b| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&file)?
                .write_all(&b)
        });
    if let Err(e) = written {
        return error(
            Category::Unavailable,
            &ShimError::Io {
                op: "writing the exec process",
                source: e,
            },
        );
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(lead)
        .arg("--root")
        .arg(&s.opts.runtime_root)
        .arg("exec")
        .arg("--process")
        .arg(&file);
    let status = if process.terminal() == Some(true) {
        exec_with_terminal(s, cmd, id, exec_id, stdin, stdout, stderr)
    } else {
        cmd.arg(id)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .status()
    };
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

/// Copies attached input into the container's stdin (or terminal); with `stdin_once`, the
/// first attach that ends closes it (a terminal gets an end-of-file character).
fn feed_input(s: &Arc<Shared>, mut from: File) {
    let to = lock(&s.input).as_ref().and_then(|f| f.try_clone().ok());
    match to {
        Some(mut to) => {
            let _ = std::io::copy(&mut from, &mut to);
        }
        None => {
            // Nowhere to go: read it so the client's writes do not block.
            let _ = std::io::copy(&mut from, &mut std::io::sink());
        }
    }
    if s.opts.stdin_once {
        let closed = lock(&s.input).take();
        if let Some(mut f) = closed {
            if lock(&s.master).is_some() {
                let _ = f.write_all(&[0x04]);
            }
        }
    }
}

/// A Unix socket the runtime sends a new container's terminal master to
/// (`--console-socket`), at a short path (socket paths are limited to 108 bytes).
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn bind() -> std::io::Result<ConsoleSocket> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = Path::new("/run/skiff/console");
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "{}-{}.sock",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The master the runtime sent (it connected and sent while creating).
    fn receive(self) -> std::io::Result<OwnedFd> {
        self.try_receive()?.ok_or_else(|| {
            std::io::Error::other("the runtime did not connect to the console socket")
        })
    }

    /// The master, if the runtime has connected (`None` while it has not).
    fn try_receive(&self) -> std::io::Result<Option<OwnedFd>> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let _ = self.listener.set_nonblocking(true);
        let conn = match self.listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let _ = conn.set_nonblocking(false);
        let mut buf = [0u8; 256];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<nix::sys::socket::UnixAddr>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: SCM_RIGHTS just installed `fd` in this process; nothing else
                    // owns it.
                    return Ok(Some(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        Err(std::io::Error::other(
            "the runtime sent no terminal over the console socket",
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs the runtime's exec of a process with a terminal: the runtime sends the pty's
/// master over a console socket; the shim copies `stdin` into it and its output to
/// `stdout` (a terminal has one output stream), and keeps it for resizes under `exec_id`.
fn exec_with_terminal(
    s: &Arc<Shared>,
    mut cmd: std::process::Command,
    id: &str,
    exec_id: Option<String>,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> std::io::Result<std::process::ExitStatus> {
    let console = ConsoleSocket::bind()?;
    let mut child = cmd
        .arg("--console-socket")
        .arg(&console.path)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()?;
    // The runtime connects once the process exists; it may also fail before that.
    let deadline = Instant::now() + Duration::from_secs(30);
    let master = loop {
        match console.try_receive() {
            Ok(Some(m)) => break Some(m),
            Ok(None) => {}
            Err(_) => break None,
        }
        if child.try_wait()?.is_some() || Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let Some(master) = master else {
        return child.wait();
    };
    let (reader, writer) = (master.try_clone()?, master.try_clone()?);
    let key =
        exec_id.unwrap_or_else(|| format!("exec-{}", s.exec_seq.fetch_add(1, Ordering::Relaxed)));
    lock(&s.exec_terminals).insert(key.clone(), master);
    let feed = std::thread::spawn(move || {
        let _ = std::io::copy(&mut File::from(stdin), &mut File::from(writer));
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // EIO once every process holding the terminal is gone.
        let _ = std::io::copy(&mut File::from(reader), &mut File::from(stdout));
        let _ = done_tx.send(());
    });
    let status = child.wait();
    // The output drains; a process left in the background holding the terminal must not
    // keep the exec open.
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    lock(&s.exec_terminals).remove(&key);
    drop(feed);
    status
}
