//! Container lifecycle on the runtime side: create, start, state, kill, delete, pause,
//! resume, and the foreground `run`.
//!
//! A detached container's init is the child of a monitor process (monitor.rs), so its
//! exit status is known after the process that created it is long gone; a foreground
//! `run` is its own monitor. Either way the creating process does the handshake with the
//! init over a socketpair (sync.rs).
//! Every step that creates something (state dir, cgroup, process) is undone by `Rollback`
//! if a later step fails.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};

use crate::cgroups::{self, CgroupManager, Stats};
use crate::error::RuntimeError;
use crate::foreground;
use crate::hooks;
use crate::init::{self, InitContext};
use crate::monitor::{clone_into, enter_pid_ns, spawn_monitored, Cloned};
use crate::rootfs::RootfsConfig;
use crate::spec::{self, Bundle};
use crate::state::{self, ExitStatus, Record, Root, StateJson, Status};
use crate::sync::{self, Channel, Msg};
use crate::tty;

/// The runtime: where state lives and where the cgroup filesystem is.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: Root,
    pub cgroup_root: PathBuf,
}

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

enum Mode {
    Detached,
    Foreground,
}

/// A container whose init is set up and waiting for start.
struct Spawned {
    rec: Record,
    dir: PathBuf,
    bundle: Bundle,
    cg: Box<dyn CgroupManager>,
    ch: Channel,
    master: Option<OwnedFd>,
    /// Start was sent already (see `early_start` in `spawn`).
    started: bool,
    /// The init had a pid namespace of its own: when it is gone, so is every process
    /// of the container.
    new_pidns: bool,
}

/// Undo a half-made container.
struct Rollback<'a> {
    dir: Option<PathBuf>,
    cg: Option<&'a dyn CgroupManager>,
    pid: Option<Pid>,
    monitor: Option<i32>,
    reap: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = kill(pid, Signal::SIGKILL);
            if self.reap {
                let _ = waitpid(pid, None);
            } else {
                wait_gone(pid.as_raw(), Duration::from_secs(5));
            }
        }
        if let Some(m) = self.monitor {
            // The monitor writes exit.json into the dir we are about to remove.
            wait_gone(m, Duration::from_secs(5));
        }
        if let Some(cg) = self.cg {
            let _ = cg.destroy();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Rollback<'_> {
    fn disarm(mut self) {
        self.dir = None;
        self.cg = None;
        self.pid = None;
        self.monitor = None;
    }
}

/// Wait until `pid` no longer exists (it is not our child, so we cannot waitpid).
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    poll_until(timeout, || state::process_start_time(pid).is_none())
}

/// Poll `done` with a backoff from 100 µs to 10 ms until it holds or `timeout` passes.
fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_micros(100);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(10));
    }
    false
}

fn id_map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime {
            root: Root::new(root),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }

    /// `create`: set the container up and leave its init waiting for `start`.
    pub fn create(&self, o: &CreateOptions) -> Result<(), RuntimeError> {
        let s = self.spawn(o, Mode::Detached)?;
        drop(s);
        Ok(())
    }

    /// `run`: create and start. Detached: returns 0 once started. Foreground: waits,
    /// forwarding signals (and the terminal), deletes the container unless `keep`, and
    /// returns its exit status (128 + signal when killed).
    pub fn run(&self, o: &CreateOptions, detach: bool, keep: bool) -> Result<i32, RuntimeError> {
        if detach {
            self.spawn(o, Mode::Detached)?;
            self.start(&o.id)?;
            return Ok(0);
        }
        let blocked = foreground::block_signals()?;
        let s = match self.spawn(o, Mode::Foreground) {
            Ok(s) => s,
            Err(e) => {
                foreground::restore_signals(&blocked);
                return Err(e);
            }
        };
        let result = self.run_foreground(s, &blocked, keep);
        foreground::restore_signals(&blocked);
        result
    }

    fn run_foreground(
        &self,
        s: Spawned,
        blocked: &foreground::Blocked,
        keep: bool,
    ) -> Result<i32, RuntimeError> {
        let pid = Pid::from_raw(s.rec.pid);
        let id = s.rec.id.clone();
        let started = (|| {
            if !s.started {
                s.ch.send(Msg::Start)
                    .map_err(|source| RuntimeError::Setup {
                        id: id.clone(),
                        source,
                    })?;
            }
            // EOF means the exec succeeded (the channel is close-on-exec).
            match s.ch.recv() {
                Ok(None) => Ok(()),
                Ok(Some((Msg::Error, msg, _))) => Err(RuntimeError::Setup {
                    id: id.clone(),
                    source: sync::SyncError::Child(String::from_utf8_lossy(&msg).into_owned()),
                }),
                Ok(Some((m, _, _))) => Err(RuntimeError::Setup {
                    id: id.clone(),
                    source: sync::SyncError::Unexpected {
                        expected: Msg::Start,
                        got: Some(m),
                    },
                }),
                Err(source) => Err(RuntimeError::Setup {
                    id: id.clone(),
                    source,
                }),
            }
        })();
        if let Err(e) = started {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            let _ = s.cg.destroy();
            let _ = std::fs::remove_dir_all(&s.dir);
            return Err(e);
        }
        let hooks = s.bundle.spec.hooks().as_ref();
        if let Some(h) = hooks.and_then(|h| h.poststart().as_ref()) {
            let st = self.state_of(&s.rec);
            hooks::run_warn("poststart", Some(h), &oci_state_bytes(&st));
        }
        let status = foreground::wait(pid, blocked, s.master.as_ref())?;
        let exit = ExitStatus {
            status: status.0,
            signal: status.1,
            oom_killed: s.cg.oom_killed().unwrap_or(false),
        };
        if keep {
            let _ = state::save_exit(&s.dir, &exit);
        } else {
            // The init is reaped and this process held the only reference to it: tear
            // down directly instead of re-reading state and config from disk. An init
            // with its own pid namespace took every other process with it.
            if !s.new_pidns {
                for p in s.cg.pids().unwrap_or_default() {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            s.cg.destroy()?;
            if let Some(h) = hooks.and_then(|h| h.poststop().as_ref()) {
                let st = self.make_state(&s.rec, Status::Stopped);
                hooks::run_warn("poststop", Some(h), &oci_state_bytes(&st));
            }
            std::fs::remove_dir_all(&s.dir)
                .map_err(|e| RuntimeError::io(format!("remove {}", s.dir.display()), e))?;
        }
        Ok(exit.status)
    }

    fn spawn(&self, o: &CreateOptions, mode: Mode) -> Result<Spawned, RuntimeError> {
        let bundle = spec::load_bundle(&o.bundle)?;
        let process = bundle
            .process()
            .ok_or_else(|| RuntimeError::Usage("config.json has no process".into()))?;
        let terminal = process.terminal() == Some(true);
        let detached = matches!(mode, Mode::Detached);
        if terminal && detached && o.console_socket.is_none() {
            return Err(RuntimeError::Usage(
                "cannot allocate a tty for a detached container without --console-socket; pass --console-socket or set process.terminal to false".into(),
            ));
        }
        if !terminal && o.console_socket.is_some() {
            return Err(RuntimeError::Usage(
                "--console-socket needs process.terminal: true in config.json".into(),
            ));
        }
        state::validate_id(&o.id)?;
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| o.id.clone());

        let origin = cgroups::own_cgroup_text();
        let cg = cgroups::open_from(&self.cgroup_root, &cgroups_path, origin.as_deref())?;
        let dir = self.root.reserve(&o.id)?;
        let mut rb = Rollback {
            dir: Some(dir.clone()),
            cg: None,
            pid: None,
            monitor: None,
            reap: !detached,
        };
        rb.cg = Some(cg.as_ref());
        let setup_cgroup = || -> Result<(), RuntimeError> {
            cg.create()?;
            cg.apply(&with_default_devices(
                linux.resources().clone().unwrap_or_default(),
                linux.devices().as_deref().unwrap_or_default(),
            ))?;
            Ok(())
        };
        // A cgroup2 init is cloned straight into its cgroup, which must exist by then.
        // Elsewhere the init joins it itself once told to (Go), so the cgroup is made
        // while the init, already cloned, makes its namespaces: two CPUs at work instead
        // of one after the other (a network namespace alone is most of a millisecond).
        let cgroup_first = cg.clone_target().is_some();
        if cgroup_first {
            setup_cgroup()?;
        }

        let mut clone_flags = CloneFlags::empty();
        let mut join = Vec::new();
        let mut pid_path = None;
        let mut user_join = None;
        for ns in &namespaces {
            match (ns.typ(), ns.path()) {
                (LinuxNamespaceType::Cgroup, None) => {}
                (LinuxNamespaceType::Pid, Some(p)) => pid_path = Some(p.clone()),
                (LinuxNamespaceType::User, Some(p)) => user_join = Some(p.clone()),
                (t, Some(p)) => join.push((t, p.clone())),
                (t, None) => clone_flags |= init::ns_flag(t),
            }
        }
        if let Some(p) = user_join {
            join.insert(0, (LinuxNamespaceType::User, p));
        }
        let new_userns = clone_flags.contains(CloneFlags::CLONE_NEWUSER);
        // Only the user and pid namespaces (the latter needs a new process) are made by
        // clone; the init unshares the rest itself. With a new user namespace it does so
        // once it is root inside, so they, and e.g. the mqueue filesystem of the new ipc
        // namespace, belong to that root (the order runc uses); without one, first thing,
        // while this process makes the cgroup.
        let unshare_flags = clone_flags & !(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID);
        clone_flags &= CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID;
        let new_pidns = clone_flags.contains(CloneFlags::CLONE_NEWPID);
        let fifo = if detached {
            let p = dir.join(state::FIFO_FILE);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| RuntimeError::sys(format!("mkfifo {}", p.display()), e))?;
            Some(p)
        } else {
            None
        };
        let new_cgroupns = namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none());
        let ctx = InitContext {
            id: o.id.clone(),
            bundle: bundle.dir.clone(),
            spec: bundle.spec.clone(),
            rootfs: RootfsConfig {
                rootfs: bundle.rootfs.clone(),
                cgroup_version: cg.version(),
                cgroup_sources: cg.mount_sources(),
                new_cgroupns,
                in_userns: namespaces
                    .iter()
                    .any(|n| n.typ() == LinuxNamespaceType::User),
                terminal,
            },
            seccomp: bundle.seccomp.clone(),
            join,
            new_userns,
            unshare_flags,
            new_utsns: (clone_flags | unshare_flags).contains(CloneFlags::CLONE_NEWUTS),
            new_cgroupns,
            cgroupns_early: new_cgroupns && cg.version() == cgroups::CgroupVersion::V2,
            runtime_hooks: bundle.spec.hooks().as_ref().is_some_and(|h| {
                [h.prestart(), h.create_runtime()]
                    .into_iter()
                    .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
            }),
            fifo,
        };

        let (parent_ch, child_ch) = sync::pair().map_err(|source| RuntimeError::Setup {
            id: o.id.clone(),
            source,
        })?;
        let (pid, monitor_pid) = match mode {
            Mode::Foreground => {
                let restore = match &pid_path {
                    Some(p) => Some(enter_pid_ns(p)?),
                    None => None,
                };
                let target = cg.clone_target();
                let r = clone_into(clone_flags, target.as_deref());
                if let Some(own) = restore {
                    let _ = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
                }
                match r? {
                    Cloned::Child { in_cgroup } => {
                        drop(parent_ch);
                        init::init_main(&ctx, cg.as_ref(), in_cgroup, &child_ch)
                    }
                    Cloned::Parent(pid) => (pid, std::process::id() as i32),
                }
            }
            Mode::Detached => spawn_monitored(
                &ctx,
                &dir,
                cg.as_ref(),
                clone_flags,
                pid_path.as_deref(),
                &parent_ch,
                &child_ch,
            )?,
        };
        drop(child_ch);
        rb.pid = Some(pid);
        if detached {
            rb.monitor = Some(monitor_pid);
        }
        if !cgroup_first {
            setup_cgroup()?;
        }
        let setup_err = |source| RuntimeError::Setup {
            id: o.id.clone(),
            source,
        };

        if new_userns {
            let uid = id_map_text(linux.uid_mappings().as_deref().unwrap_or_default());
            let gid = id_map_text(linux.gid_mappings().as_deref().unwrap_or_default());
            for (file, text) in [("uid_map", uid), ("gid_map", gid)] {
                let p = format!("/proc/{pid}/{file}");
                std::fs::write(&p, &text)
                    .map_err(|e| RuntimeError::io(format!("write {p} ({})", text.trim()), e))?;
            }
        }
        // The init joins its cgroup itself, first thing (see CgroupManager::join_self).
        parent_ch
            .send_payload(Msg::Go, pid.as_raw().to_string().as_bytes())
            .map_err(setup_err)?;
        // From here on the init works on its own (mounts, pivot, identity) while this
        // process keeps its books; the two meet only where the config needs it.
        let pid_start = state::process_start_time(pid.as_raw()).unwrap_or(0);
        let rec = Record {
            id: o.id.clone(),
            pid: pid.as_raw(),
            pid_start,
            monitor_pid,
            monitor_start: state::process_start_time(monitor_pid).unwrap_or(0),
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            cgroups_path: cgroups_path.clone(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup_origin: origin.clone(),
            created: state::now_rfc3339(),
            owner: String::new(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        };
        if ctx.runtime_hooks {
            parent_ch.expect(Msg::Hooks).map_err(setup_err)?;
            let creating = oci_state_bytes(&self.make_state(&rec, Status::Creating));
            let hooks = bundle.spec.hooks().as_ref();
            hooks::run(
                "prestart",
                hooks.and_then(|h| h.prestart().as_ref()),
                &creating,
            )?;
            hooks::run(
                "createRuntime",
                hooks.and_then(|h| h.create_runtime().as_ref()),
                &creating,
            )?;
            parent_ch.send(Msg::HooksDone).map_err(setup_err)?;
        }
        // A plain foreground run (no terminal, pid file or console socket to hand over
        // once the init is ready) records its state and queues Start while the init is
        // still setting up, so the init finds Start waiting when it is ready and execs
        // without another round trip. A failure after that still reaches us as an Error
        // instead of Ready, and the rollback removes the state.
        let early_start =
            !detached && !terminal && o.pid_file.is_none() && o.console_socket.is_none();
        if early_start {
            state::save_record(&dir, &rec)?;
            parent_ch.send(Msg::Start).map_err(setup_err)?;
        }
        let master = if terminal {
            let (_, fd) = parent_ch.expect(Msg::Fd).map_err(setup_err)?;
            fd
        } else {
            None
        };
        parent_ch.expect(Msg::Ready).map_err(setup_err)?;
        if !early_start {
            state::save_record(&dir, &rec)?;
        }
        if let Some(pf) = &o.pid_file {
            write_pid_file(pf, pid.as_raw())?;
        }
        if let (Some(sock), Some(m)) = (&o.console_socket, &master) {
            tty::send_to_console_socket(sock, m)?;
        }
        rb.disarm();
        Ok(Spawned {
            rec,
            dir,
            bundle,
            cg,
            ch: parent_ch,
            master,
            started: early_start,
            new_pidns,
        })
    }

    pub fn load(&self, id: &str) -> Result<Record, RuntimeError> {
        Ok(self.root.load(id)?)
    }

    fn cgroup_of(&self, rec: &Record) -> Result<Box<dyn CgroupManager>, RuntimeError> {
        Ok(cgroups::open_from(
            &rec.cgroup_root,
            &rec.cgroups_path,
            rec.cgroup_origin.as_deref(),
        )?)
    }

    fn status_of(&self, rec: &Record) -> Status {
        if !state::init_alive(rec) {
            self.wait_for_monitor(rec);
            return Status::Stopped;
        }
        if self
            .root
            .container_dir(&rec.id)
            .join(state::FIFO_FILE)
            .exists()
        {
            return Status::Created;
        }
        if let Ok(cg) = self.cgroup_of(rec) {
            if cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    /// The init is gone: give its monitor (bounded) time to record the exit status and
    /// finish, so "stopped" always comes with the exit status and nobody removes the
    /// state dir under the monitor's feet.
    fn wait_for_monitor(&self, rec: &Record) {
        let mon = rec.monitor_pid;
        if mon <= 0 || mon == std::process::id() as i32 {
            return;
        }
        poll_until(Duration::from_secs(5), || {
            rec.monitor_start == 0 || state::process_start_time(mon) != Some(rec.monitor_start)
        });
    }

    fn make_state(&self, rec: &Record, status: Status) -> StateJson {
        let exit = if status == Status::Stopped {
            state::load_exit(&self.root.container_dir(&rec.id))
        } else {
            None
        };
        StateJson {
            oci_version: state::OCI_VERSION.into(),
            id: rec.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                rec.pid
            },
            bundle: rec.bundle.clone(),
            rootfs: rec.rootfs.clone(),
            created: rec.created.clone(),
            owner: rec.owner.clone(),
            annotations: rec.annotations.clone(),
            exit_status: exit.map(|e| e.status),
            oom_killed: exit.map(|e| e.oom_killed),
        }
    }

    fn state_of(&self, rec: &Record) -> StateJson {
        self.make_state(rec, self.status_of(rec))
    }

    pub fn state(&self, id: &str) -> Result<StateJson, RuntimeError> {
        let rec = self.load(id)?;
        Ok(self.state_of(&rec))
    }

    /// How the container's init ended, once it has.
    pub fn exit_status(&self, id: &str) -> Result<Option<ExitStatus>, RuntimeError> {
        let rec = self.load(id)?;
        if state::init_alive(&rec) {
            return Ok(None);
        }
        Ok(state::load_exit(&self.root.container_dir(id)))
    }

    pub fn list(&self) -> Result<Vec<StateJson>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.root.list()? {
            if let Ok(rec) = self.root.load(&id) {
                out.push(self.state_of(&rec));
            }
        }
        Ok(out)
    }

    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status != Status::Created {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status,
                action: "only a created container can be started".into(),
            });
        }
        let fifo = self.root.container_dir(id).join(state::FIFO_FILE);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&fifo)
                .map_err(|e| {
                    RuntimeError::io(
                        format!(
                            "open {} (is the container's init still alive?)",
                            fifo.display()
                        ),
                        e,
                    )
                })?;
            f.write_all(&[0])
                .map_err(|e| RuntimeError::io(format!("write {}", fifo.display()), e))?;
        }
        let _ = std::fs::remove_file(&fifo);
        let bundle = spec::load_bundle(&rec.bundle).ok();
        let st = self.state_of(&rec);
        if let Some(b) = bundle {
            hooks::run_warn(
                "poststart",
                b.spec.hooks().as_ref().and_then(|h| h.poststart().as_ref()),
                &oci_state_bytes(&st),
            );
        }
        Ok(())
    }

    pub fn kill(&self, id: &str, sig: Signal, all: bool) -> Result<(), RuntimeError> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status == Status::Stopped {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status,
                action: "there is no process to signal".into(),
            });
        }
        if all {
            let cg = self.cgroup_of(&rec)?;
            for p in cg.pids()? {
                let _ = kill(Pid::from_raw(p), sig);
            }
            // Frozen processes only act on signals once thawed.
            if status == Status::Paused {
                let _ = cg.thaw();
            }
            return Ok(());
        }
        kill(Pid::from_raw(rec.pid), sig).map_err(|e| {
            RuntimeError::sys(format!("send {sig} to container {id} (pid {})", rec.pid), e)
        })
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let rec = match self.load(id) {
            Ok(r) => r,
            Err(RuntimeError::State(state::StateError::NotFound { .. })) if force => {
                // A create that died before writing state.json may have left its dir.
                let d = self.root.container_dir(id);
                if state::validate_id(id).is_ok() && d.exists() {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let status = self.status_of(&rec);
        match status {
            Status::Stopped => {}
            Status::Created => self.kill_all_and_wait(&rec)?,
            _ if force => self.kill_all_and_wait(&rec)?,
            _ => {
                return Err(RuntimeError::WrongState {
                    id: id.into(),
                    status,
                    action: "stop it first or use delete --force".into(),
                })
            }
        }
        self.wait_for_monitor(&rec);
        let cg = self.cgroup_of(&rec)?;
        // Processes that outlived the init (no pid namespace) still hold the cgroup.
        for p in cg.pids().unwrap_or_default() {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        cg.destroy()?;
        if let Ok(b) = spec::load_bundle(&rec.bundle) {
            let st = self.make_state(&rec, Status::Stopped);
            hooks::run_warn(
                "poststop",
                b.spec.hooks().as_ref().and_then(|h| h.poststop().as_ref()),
                &oci_state_bytes(&st),
            );
        }
        let d = self.root.container_dir(id);
        std::fs::remove_dir_all(&d)
            .map_err(|e| RuntimeError::io(format!("remove {}", d.display()), e))?;
        Ok(())
    }

    fn kill_all_and_wait(&self, rec: &Record) -> Result<(), RuntimeError> {
        let cg = self.cgroup_of(rec)?;
        let frozen = cg.is_frozen().unwrap_or(false);
        let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
        for p in cg.pids().unwrap_or_default() {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        if frozen {
            let _ = cg.thaw();
        }
        if !wait_gone(rec.pid, Duration::from_secs(10)) {
            return Err(RuntimeError::Usage(format!(
                "container {}: init (pid {}) did not exit after SIGKILL",
                rec.id, rec.pid
            )));
        }
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status != Status::Running && status != Status::Created {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status,
                action: "only a running or created container can be paused".into(),
            });
        }
        Ok(self.cgroup_of(&rec)?.freeze()?)
    }

    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status != Status::Paused {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status,
                action: "only a paused container can be resumed".into(),
            });
        }
        Ok(self.cgroup_of(&rec)?.thaw()?)
    }

    /// Host pids of every process in the container.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>, RuntimeError> {
        let rec = self.load(id)?;
        if self.status_of(&rec) == Status::Stopped {
            return Ok(vec![]);
        }
        let mut p = self.cgroup_of(&rec)?.pids()?;
        p.sort_unstable();
        Ok(p)
    }

    pub fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status == Status::Stopped {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status,
                action: "a stopped container has no stats".into(),
            });
        }
        Ok(self.cgroup_of(&rec)?.stats()?)
    }
}

/// The config's resources with the device rules every container needs appended, as runc
/// does: the standard devices, and the config's own `linux.devices`. Later rules win, so
/// the config cannot lock its own container out of /dev/null.
fn with_default_devices(
    mut res: oci_spec::runtime::LinuxResources,
    devices: &[oci_spec::runtime::LinuxDevice],
) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType as T};
    let mut rules = res.devices().clone().unwrap_or_default();
    rules.extend(cgroups::devices::default_allowed_devices());
    for d in devices {
        let typ = match d.typ() {
            T::U => T::C,
            T::P => continue,
            t => t,
        };
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(Some(d.major()));
        r.set_minor(Some(d.minor()));
        r.set_access(Some("rwm".to_string()));
        rules.push(r);
    }
    res.set_devices(Some(rules));
    res
}

/// The OCI state (what hooks read on stdin).
pub fn oci_state_bytes(st: &StateJson) -> Vec<u8> {
    state::hook_state(&st.id, st.status, st.pid, &st.bundle, &st.annotations)
}

pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), RuntimeError> {
    // Written atomically: tools poll for the file and read it as soon as it appears.
    let tmp = path.with_extension("tmp-skiff");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| RuntimeError::io(format!("write pid file {}", path.display()), e))
}
