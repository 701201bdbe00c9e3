//! The runtime manager: pod sandboxes and containers on skiff's container library.
//!
//! A sandbox is a pod's directory (`<data>/pods/<uid>`) with its network, IPC and UTS
//! namespaces pinned by bind mounts (no pause process), its `/etc/hosts`,
//! `/etc/resolv.conf` and volumes. A container is `<data>/containers/<id>`: its record
//! (what pod and container it is, which attempt), the OCI bundle whose rootfs is an
//! overlay of the image, and the socket of its shim: the small process that owns the
//! container, copies its output into the CRI log and, when it exits, writes `exit.json`
//! (exit code, time, OOM kill) and ends. Everything the kubelet knows about containers
//! is on disk, so an agent that was killed and started again adopts what runs: the same
//! containers, attempts (restart counts) and exit codes.

use std::ffi::OsString;
use std::fs;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};
use skiff_container::netns::Pinned;
use skiff_container::shim::Client;
use skiff_container::BindMount;
use skiff_image::mount::MountGuard;
use skiff_image::snapshot::Snapshotter;
use skiff_image::ImageStore;

use super::cri::{ContainerRuntime, SandboxConfig};
pub use super::hostfs::{
    is_mounted, kill_cgroup, mounts_below, move_into_cgroup, oom_killed, remove_cgroup,
    unmount_below,
};
pub use super::pod_shim::{serve_shim, PodOwner};

use super::AgentError;

/// What the agent knows about one container, written when it is created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_uid: String,
    pub namespace: String,
    pub pod: String,
    pub name: String,
    /// 0 for the first run of this container in the pod, then one more per restart.
    pub attempt: u32,
    pub init: bool,
    /// The image as the pod names it, and what it resolved to.
    pub image: String,
    /// The store's digest of the image (what the rootfs is made from).
    pub image_id: String,
    /// `registry/repo@sha256:…`: the status' imageID.
    #[serde(default)]
    pub image_ref: String,
    pub created: String,
    pub started: Option<String>,
    /// The container's cgroup (absolute, as in the spec).
    pub cgroup: String,
    pub log_path: PathBuf,
    /// Host side of `terminationMessagePath`, if the container has one.
    pub termination_log: Option<PathBuf>,
    /// The image's STOPSIGNAL (or SIGTERM).
    pub stop_signal: String,
    /// The container's `stdin`, `stdinOnce` and `tty`: its input stays open for attach,
    /// closed after the first attach; it runs with a terminal.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub tty: bool,
}

/// Written by the shim when the container has exited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub finished: String,
    pub oom_killed: bool,
}

/// A container as the runtime sees it now.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Running,
    Exited(ExitRecord),
    /// Neither running nor an exit record: its processes are gone (a reboot, a killed
    /// shim).
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub record: ContainerRecord,
    pub state: RunState,
}

/// What the pod worker asks for.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    pub record: ContainerRecord,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]` as the image or securityContext give it (resolved in the rootfs).
    pub user: String,
    pub supplemental_groups: Vec<u32>,
    pub mounts: Vec<BindMount>,
    pub memory_limit: Option<i64>,
    /// CFS quota in µs per 100 ms period.
    pub cpu_quota: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
    pub readonly_rootfs: bool,
    /// securityContext.runAsNonRoot: refuse a container that would run as uid 0.
    pub run_as_non_root: bool,
    /// securityContext.capabilities (names with or without `CAP_`; drop `ALL`).
    pub caps_add: Vec<String>,
    pub caps_drop: Vec<String>,
    pub privileged: bool,
    /// allowPrivilegeEscalation: false sets no_new_privs.
    pub no_new_privileges: bool,
    /// seccomp, procMount and the pod's host / shared namespaces.
    pub security: super::security::ContainerSecurity,
}

/// The capabilities a container starts with, as containerd gives Kubernetes containers.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability (privileged containers).
const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn capability(name: &str) -> Result<oci_spec::runtime::Capability, StartError> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    serde_json::from_value(serde_json::Value::String(full.clone())).map_err(|_| {
        StartError::Config(format!(
            "unknown capability {name:?} in securityContext.capabilities"
        ))
    })
}

/// The container's capability set from the defaults and its securityContext.
fn capability_set(cfg: &ContainerConfig) -> Result<oci_spec::runtime::Capabilities, StartError> {
    let mut set: oci_spec::runtime::Capabilities = oci_spec::runtime::Capabilities::new();
    // Privileged: every capability this agent holds (containerd's
    // WithAllCurrentCapabilities); ALL_CAPS is in the kernel's order.
    let base = if cfg.privileged {
        super::security::held_caps(ALL_CAPS)
    } else {
        DEFAULT_CAPS.to_vec()
    };
    for c in base {
        set.insert(capability(c)?);
    }
    for d in &cfg.caps_drop {
        if d.eq_ignore_ascii_case("ALL") {
            set.clear();
        } else {
            set.remove(&capability(d)?);
        }
    }
    for a in &cfg.caps_add {
        if a.eq_ignore_ascii_case("ALL") {
            for c in ALL_CAPS {
                set.insert(capability(c)?);
            }
        } else {
            set.insert(capability(a)?);
        }
    }
    Ok(set)
}

/// Why a container could not be created or started (the worker maps these to
/// `CreateContainerError`, `CreateContainerConfigError`, `RunContainerError`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Create(String),
    #[error("{0}")]
    Run(String),
}

/// Where shim sockets go when the data dir's path is too long for them.
const SHIM_SOCKETS: &str = "/run/skiff/shims";

pub struct RuntimeManager {
    pub data: PathBuf,
    pub runtime_root: PathBuf,
    pub shim_command: Vec<OsString>,
    pub cgroup_parent: String,
    pub store: Arc<ImageStore>,
    /// The node's pod network (None: pods get only loopback).
    pub network: Option<skiff_net::pod::PodNetwork>,
}

pub(super) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::TimestampRound::new().smallest(jiff::Unit::Second))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// 64 hex characters from the kernel's random source.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    let _ = getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(buf)
}

impl RuntimeManager {
    pub fn pods_dir(&self) -> PathBuf {
        self.data.join("pods")
    }
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(uid)
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.data.join("containers")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }
    /// The shim's task socket: in the container's directory, or under /run/skiff/shims
    /// when that path is too long for a Unix socket (108 bytes).
    pub fn socket(&self, id: &str) -> PathBuf {
        let p = self.container_dir(id).join("shim.sock");
        if p.as_os_str().len() < 100 {
            p
        } else {
            PathBuf::from(SHIM_SOCKETS).join(format!("{id}.sock"))
        }
    }

    pub fn ns_dir(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("ns")
    }

    pub fn save(&self, r: &ContainerRecord) -> Result<(), AgentError> {
        let path = self.container_dir(&r.id).join("record.json");
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| AgentError::Io {
            what: format!("encoding {}", path.display()),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, &bytes).map_err(io(format!("writing {}", path.display())))
    }

    fn spec(
        &self,
        cfg: &ContainerConfig,
        record: &ContainerRecord,
        rootfs: &Path,
    ) -> Result<Spec, StartError> {
        let user = skiff_container::user::resolve(rootfs, &cfg.user, &[])
            .map_err(|e| StartError::Config(skiff_serve::error_chain(&e)))?;
        if cfg.run_as_non_root && user.uid == 0 {
            return Err(StartError::Config(
                "container has runAsNonRoot and image will run as root".into(),
            ));
        }
        let mut user = user;
        for g in &cfg.supplemental_groups {
            if !user.additional_gids.contains(g) {
                user.additional_gids.push(*g);
            }
        }
        let mut env = cfg.env.clone();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        if cfg.cwd != "/" {
            // Kubernetes (as Docker) creates a missing working directory.
            skiff_container::path::secure_join(rootfs, &cfg.cwd, true).map_err(|e| {
                StartError::Create(format!(
                    "creating working directory {}: {}",
                    cfg.cwd,
                    skiff_serve::error_chain(&e)
                ))
            })?;
        }
        let mut b = skiff_container::SpecBuilder::new(cfg.args.clone())
            .env(env)
            .cwd(cfg.cwd.clone())
            .user(user)
            .terminal(record.tty);
        for m in &cfg.mounts {
            // The mount point must exist in the image for files (e.g. /etc/hosts).
            b = b.bind_mount(m.clone());
        }
        if let Some(m) = cfg.memory_limit {
            b = b.memory_limit(m.max(6 << 20));
        }
        let mut spec = b
            .build()
            .map_err(|e| StartError::Create(skiff_serve::error_chain(&e)))?;
        let pinned = Pinned::at(&self.ns_dir(&record.pod_uid));
        if let Some(linux) = spec.linux_mut() {
            if let Some(nss) = linux.namespaces_mut() {
                for n in nss.iter_mut() {
                    match n.typ() {
                        LinuxNamespaceType::Network => {
                            n.set_path(Some(pinned.net.clone()));
                        }
                        LinuxNamespaceType::Ipc => {
                            n.set_path(Some(pinned.ipc.clone()));
                        }
                        LinuxNamespaceType::Uts => {
                            n.set_path(Some(pinned.uts.clone()));
                        }
                        _ => {}
                    }
                }
            }
            linux.set_cgroups_path(Some(PathBuf::from(&record.cgroup)));
            let mut res = linux.resources().clone().unwrap_or_default();
            let mut cpu = res.cpu().clone().unwrap_or_default();
            if let Some(q) = cfg.cpu_quota {
                cpu.set_quota(Some(q));
                cpu.set_period(Some(100_000));
            }
            if let Some(s) = cfg.cpu_shares {
                cpu.set_shares(Some(s));
            }
            res.set_cpu(Some(cpu));
            if let Some(p) = cfg.pids_limit {
                res.set_pids(
                    oci_spec::runtime::LinuxPidsBuilder::default()
                        .limit(p)
                        .build()
                        .ok(),
                );
            }
            linux.set_resources(Some(res));
        }
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(cfg.readonly_rootfs));
        }
        let caps = capability_set(cfg)?;
        let cap_names: std::collections::BTreeSet<String> = caps
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(String::from))
            .collect();
        if let Some(p) = spec.process_mut() {
            if let Some(mut c) = p.capabilities().clone() {
                c.set_bounding(Some(caps.clone()));
                c.set_effective(Some(caps.clone()));
                c.set_permitted(Some(caps));
                // As containerd: no ambient or inheritable set.
                c.set_ambient(None);
                c.set_inheritable(None);
                p.set_capabilities(Some(c));
            }
            p.set_no_new_privileges(Some(cfg.no_new_privileges && !cfg.privileged));
        }
        if cfg.privileged {
            if let Some(linux) = spec.linux_mut() {
                linux.set_masked_paths(None);
                linux.set_readonly_paths(None);
            }
        }
        super::security::apply(
            &mut spec,
            &cfg.security,
            cfg.privileged,
            &cap_names,
            &self.data,
            &super::pidns::pin_path(&self.ns_dir(&record.pod_uid)),
        )
        .map_err(StartError::Config)?;
        // The sandbox's UTS namespace carries the host name.
        spec.set_hostname(None);
        Ok(spec)
    }

    fn spawn_shim(&self, id: &str) -> Result<Client, StartError> {
        let dir = self.container_dir(id);
        let sock = self.socket(id);
        if let Some(parent) = sock.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let run = |what: &str, e: &dyn std::error::Error| {
            StartError::Run(format!("{what}: {}", skiff_serve::error_chain(e)))
        };
        let listener =
            skiff_container::shim::bind(&sock).map_err(|e| run("binding the shim socket", &e))?;
        let log =
            fs::File::create(dir.join("shim.log")).map_err(|e| run("creating shim.log", &e))?;
        let Some((prog, args)) = self.shim_command.split_first() else {
            return Err(StartError::Run("no shim command configured".into()));
        };
        let mut child = Command::new(prog)
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| run("starting the container's shim", &e))?;
        let _ = write_atomic(&dir.join("shim.pid"), child.id().to_string().as_bytes());
        // Reap it when it ends (it outlives us if we are killed: then init reaps it).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(Client::new(sock))
    }
}

/// Removes a half-made container when `start` fails.
struct Cleanup<'a> {
    rt: &'a RuntimeManager,
    id: String,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let dir = self.rt.container_dir(&self.id);
        let rootfs = dir.join("bundle").join("rootfs");
        while is_mounted(&rootfs) {
            if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let _ = self.rt.store.snapshotter().remove(&self.id);
        let _ = fs::remove_dir_all(&dir);
    }
}

impl ContainerRuntime for RuntimeManager {
    /// The pod's namespaces, made on first use (and made again after a reboot-like loss).
    fn run_sandbox(
        &self,
        uid: &str,
        cfg: &SandboxConfig,
    ) -> Result<Option<std::net::IpAddr>, AgentError> {
        let dir = self.ns_dir(uid);
        let fail = |message: String| AgentError::Sandbox {
            uid: uid.to_string(),
            message,
        };
        if !Pinned::at(&dir).is_pinned() {
            skiff_container::netns::unpin(&dir);
            let pinned = skiff_container::netns::pin_sandbox(&dir, &cfg.hostname)
                .map_err(|e| fail(skiff_serve::error_chain(&e)))?;
            if let Err(e) = super::security::apply_sysctls(&pinned, &cfg.sysctls) {
                // Made again (and the sysctls tried again) on the next sync.
                skiff_container::netns::unpin(&dir);
                return Err(fail(e));
            }
        }
        if cfg.share_pid {
            let skiff = self.shim_command.first().cloned().unwrap_or_default();
            // The namespace's init is the pod's: it goes in a leaf of the pod's cgroup
            // (on cgroup v2 a cgroup with children may not hold processes itself).
            let cgroup = cfg.cgroup.as_ref().map(|c| format!("{c}/pidns-init"));
            super::pidns::ensure(&dir, &skiff, cgroup.as_deref()).map_err(fail)?;
        }
        match (&self.network, &cfg.network) {
            (Some(net), Some(ports)) => {
                let ip = net
                    .setup_blocking(uid, &Pinned::at(&dir).net, ports)
                    .map_err(|e| fail(skiff_serve::error_chain(&e)))?;
                Ok(Some(std::net::IpAddr::V4(ip.ip)))
            }
            _ => Ok(None),
        }
    }

    fn sandbox_ready(&self, uid: &str) -> bool {
        Pinned::at(&self.ns_dir(uid)).is_pinned()
    }

    fn records(&self) -> Vec<ContainerRecord> {
        let Ok(entries) = fs::read_dir(self.containers_dir()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Ok(bytes) = fs::read(e.path().join("record.json")) else {
                continue;
            };
            if let Ok(record) = serde_json::from_slice::<ContainerRecord>(&bytes) {
                out.push(record);
            }
        }
        out
    }

    fn state(&self, r: &ContainerRecord) -> RunState {
        let dir = self.container_dir(&r.id);
        let exit = || {
            fs::read(dir.join("exit.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
        };
        if let Some(e) = exit() {
            return RunState::Exited(e);
        }
        // The shim's process is alive (its pid, checked against its command line so a
        // reused pid does not count): no need to ask it over its socket.
        let alive = fs::read_to_string(dir.join("shim.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&r.id))
                    .unwrap_or(false)
            });
        if alive {
            return RunState::Running;
        }
        match Client::new(self.socket(&r.id)).state() {
            Ok(_) => RunState::Running,
            // The shim may have just written the record and ended.
            Err(_) => exit().map(RunState::Exited).unwrap_or(RunState::Lost),
        }
    }

    fn start(&self, cfg: ContainerConfig) -> Result<ContainerRecord, StartError> {
        let mut record = cfg.record.clone();
        let id = random_id();
        record.id = id.clone();
        record.cgroup = format!("{}/{id}", cfg.record.cgroup.trim_end_matches('/'));
        let dir = self.container_dir(&id);
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        let fail = |what: &str, e: &dyn std::error::Error| {
            StartError::Create(format!("{what}: {}", skiff_serve::error_chain(e)))
        };
        fs::create_dir_all(&rootfs).map_err(|e| fail("creating the container directory", &e))?;
        let cleanup = Cleanup {
            rt: self,
            id: id.clone(),
            armed: true,
        };
        let img = self
            .store
            .resolve(&record.image_id)
            .and_then(|d| self.store.image(&d))
            .map_err(|e| fail("reading the image", &e))?;
        let mounts = self
            .store
            .prepare_rootfs(&img, &id)
            .map_err(|e| fail("preparing the root filesystem", &e))?;
        let guard = MountGuard::mount(&mounts, &rootfs)
            .map_err(|e| fail("mounting the root filesystem", &e))?;
        let spec = self.spec(&cfg, &record, &rootfs)?;
        skiff_container::spec::write(&bundle, &spec)
            .map_err(|e| fail("writing the OCI spec", &e))?;
        if let Some(parent) = record.log_path.parent() {
            fs::create_dir_all(parent).map_err(|e| fail("creating the log directory", &e))?;
        }
        record.created = now_rfc3339();
        self.save(&record)
            .map_err(|e| fail("writing the container record", &e))?;
        let client = self.spawn_shim(&id)?;
        // The shim owns the mount now: it unmounts when the container exits.
        std::mem::forget(guard);
        if let Err(e) = client.create() {
            let _ = client.delete();
            return Err(StartError::Run(skiff_serve::error_chain(&e)));
        }
        if let Err(e) = client.start() {
            let _ = client.kill(Signal::SIGKILL, true);
            return Err(StartError::Run(skiff_serve::error_chain(&e)));
        }
        record.started = Some(now_rfc3339());
        self.save(&record)
            .map_err(|e| fail("writing the container record", &e))?;
        let mut cleanup = cleanup;
        cleanup.armed = false;
        Ok(record)
    }

    fn kill(&self, r: &ContainerRecord, signal: Signal, all: bool) {
        let _ = Client::new(self.socket(&r.id)).kill(signal, all);
    }

    fn remove(&self, r: &ContainerRecord) {
        if self.state(r) == RunState::Lost {
            // Its shim is gone but processes may be left: end them through the cgroup.
            kill_cgroup(&r.cgroup);
        }
        if self.state(r) == RunState::Running {
            self.kill(r, Signal::SIGKILL, true);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline && matches!(self.state(r), RunState::Running)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let dir = self.container_dir(&r.id);
        let rootfs = dir.join("bundle").join("rootfs");
        while is_mounted(&rootfs) {
            if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let _ = self.store.snapshotter().remove(&r.id);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_file(self.socket(&r.id));
        remove_cgroup(&r.cgroup);
    }

    fn remove_sandbox(&self, uid: &str) {
        if let Some(net) = &self.network {
            if let Err(e) = net.teardown_blocking(uid) {
                tracing::warn!(pod = uid, error = %skiff_serve::error_chain(&e), "removing the pod's network");
            }
        }
        let dir = self.ns_dir(uid);
        super::pidns::stop(&dir);
        skiff_container::netns::unpin(&dir);
        let _ = fs::remove_dir(&dir);
    }
    fn exec_sync(
        &self,
        r: &ContainerRecord,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), String> {
        let dir = self.container_dir(&r.id);
        let spec = skiff_container::spec::load(&dir.join("bundle")).map_err(|e| e.to_string())?;
        let process = skiff_container::spec::exec_process(&spec, argv, false, None, &[])
            .map_err(|e| e.to_string())?;
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        let null = fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let sock = self.socket(&r.id);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let client = Client::new(sock);
            let code = client.exec(&process, null.as_fd(), wr.as_fd(), wr.as_fd());
            drop(wr);
            let _ = tx.send(code);
        });
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut out = Vec::new();
            let _ = fs::File::from(rd).take(1 << 20).read_to_end(&mut out);
            out
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(code)) => Ok((code, reader.join().unwrap_or_default())),
            Ok(Err(e)) => Err(skiff_serve::error_chain(&e)),
            Err(_) => Err(format!("command timed out after {timeout:?}")),
        }
    }

    fn exec(
        &self,
        r: &ContainerRecord,
        argv: Vec<String>,
        tty: Option<crate::runtime::TermSize>,
        exec_id: &str,
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<i32, String> {
        let dir = self.container_dir(&r.id);
        let spec = skiff_container::spec::load(&dir.join("bundle")).map_err(|e| e.to_string())?;
        let mut process =
            skiff_container::spec::exec_process(&spec, argv, tty.is_some(), None, &[])
                .map_err(|e| e.to_string())?;
        // The runtime makes the pty with this first size and hands it to the shim, which
        // copies between it and the fds and resizes it later.
        if let Some(t) = tty.filter(|t| t.width > 0 && t.height > 0) {
            let size = oci_spec::runtime::BoxBuilder::default()
                .width(u64::from(t.width))
                .height(u64::from(t.height))
                .build()
                .map_err(|e| e.to_string())?;
            process.set_console_size(Some(size));
        }
        Client::new(self.socket(&r.id))
            .exec_named(&process, Some(exec_id), stdin, stdout, stderr)
            .map_err(|e| skiff_serve::error_chain(&e))
    }

    fn resize_exec(
        &self,
        r: &ContainerRecord,
        exec_id: &str,
        size: crate::runtime::TermSize,
    ) -> Result<(), String> {
        Client::new(self.socket(&r.id))
            .resize_exec(exec_id, size.width, size.height)
            .map_err(|e| skiff_serve::error_chain(&e))
    }

    fn attach(
        &self,
        r: &ContainerRecord,
        stdin: Option<BorrowedFd<'_>>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<(), String> {
        let client = Client::new(self.socket(&r.id));
        match stdin {
            Some(i) => client.attach_with_stdin(i, stdout, stderr),
            None => client.attach(stdout, stderr),
        }
        .map_err(|e| skiff_serve::error_chain(&e))
    }

    fn resize(&self, r: &ContainerRecord, size: crate::runtime::TermSize) -> Result<(), String> {
        Client::new(self.socket(&r.id))
            .resize(size.width, size.height)
            .map_err(|e| skiff_serve::error_chain(&e))
    }

    fn sandboxes(&self) -> Vec<String> {
        let Ok(d) = fs::read_dir(self.pods_dir()) else {
            return Vec::new();
        };
        d.flatten()
            .filter(|e| e.path().join("ns").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn network_namespace(&self, uid: &str) -> Option<PathBuf> {
        let ns = self.ns_dir(uid).join("net");
        ns.exists().then_some(ns)
    }
}
