//! Shared helpers for the end-to-end tests of `skiff runtime`.
//!
//! * [`Bundle`]: a temp dir with a busybox rootfs and the config.json that `runc spec`
//!   writes, edited through `serde_json::Value`.
//! * [`Rt`]: one runtime (`skiff runtime` or `runc`) with its own `--root` temp dir. It
//!   remembers every container a test created and force-deletes them (and removes their
//!   cgroup dirs) when dropped, so a failing test leaves no process or cgroup behind.
//! * [`unique_name`]: `skiff-t<pid>-<n>`, for container ids, cgroup paths and netns names,
//!   so tests run in parallel (nextest runs each in its own process) without colliding.
//!
//! Every command runs with a timeout and every wait is a bounded poll.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

/// How long any single command may take before it is killed and the test fails.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a container to change state.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn skiff_bin() -> &'static str {
    env!("CARGO_BIN_EXE_skiff")
}

/// `skiff-t<pid>-<n>`: unique on this machine while this process lives.
pub fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "skiff-t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The result of a command.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics (with everything) unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    /// Panics unless the command failed with exit status `code` and stderr contains each
    /// of `needles`.
    #[track_caller]
    pub fn fails_with(self, code: i32, needles: &[&str]) -> Self {
        assert_eq!(self.code, code, "unexpected exit status: {self:#?}");
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {self:#?}");
        }
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// stdout without the trailing newline.
    pub fn out(&self) -> &str {
        self.stdout.trim_end_matches('\n')
    }
}

/// Run `cmd` with stdin from /dev/null and stdout/stderr to temp files (not pipes: a
/// detached container inherits them and would keep a pipe open long after the command
/// returned). Kills it and panics after `timeout`.
#[track_caller]
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`run_with_timeout`], but returns an error instead of panicking (for drop guards).
pub fn try_run(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    let file = || tempfile::tempfile().map_err(|e| format!("temp file: {e}"));
    let (mut out, mut err) = (file()?, file()?);
    let dup = |f: &fs::File| f.try_clone().map_err(|e| format!("dup: {e}"));
    cmd.stdin(Stdio::null())
        .stdout(dup(&out)?)
        .stderr(dup(&err)?);
    let mut child = cmd.spawn().map_err(|e| format!("spawn {desc}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => return Err(format!("wait for {desc}: {e}")),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |f: &mut fs::File| {
        let mut b = Vec::new();
        let _ = f
            .seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut b));
        String::from_utf8_lossy(&b).into_owned()
    };
    let (stdout, stderr) = (read(&mut out), read(&mut err));
    let Some(status) = status else {
        return Err(format!(
            "{desc} did not finish within {timeout:?} and was killed; stdout: {stdout:?}, stderr: {stderr:?}"
        ));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(Output {
        code,
        stdout,
        stderr,
    })
}

/// Run a host command (`ip`, `stat`…) with the default timeout.
#[track_caller]
pub fn host(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args);
    run_with_timeout(c, CMD_TIMEOUT)
}

/// Poll `f` until it returns Some, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(50));
    }
}

/// Set the value at JSON pointer `ptr`, creating intermediate objects.
pub fn set_ptr(v: &mut Value, ptr: &str, new: Value) {
    let mut cur = v;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match cur {
            Value::Array(a) => {
                let idx: usize = p
                    .parse()
                    .unwrap_or_else(|_| panic!("{ptr}: {p} is not an index"));
                if last {
                    a[idx] = new;
                    return;
                }
                cur = &mut a[idx];
            }
            _ => {
                if !cur.is_object() {
                    *cur = json!({});
                }
                let obj = cur.as_object_mut().expect("object");
                if last {
                    obj.insert((*p).to_string(), new);
                    return;
                }
                cur = obj.entry((*p).to_string()).or_insert_with(|| json!({}));
            }
        }
    }
}

/// Busybox applets linked into every rootfs.
const APPLETS: &[&str] = &[
    "sh", "true", "false", "cat", "echo", "id", "hostname", "ls", "sleep", "ps", "mount", "touch",
    "mkdir", "grep", "head", "env", "readlink", "stat", "wc", "dd", "awk", "tr", "seq", "tty",
    "kill", "ip", "sort", "sed", "cut", "pwd", "uname", "rm", "test", "[", "printf", "yes",
    "nproc",
];

/// A bundle: `<tmp>/rootfs` with busybox, `<tmp>/config.json` from `runc spec`.
#[derive(Debug)]
pub struct Bundle {
    dir: Arc<TempDir>,
    pub config: Value,
    /// Set `linux.cgroupsPath` to `/<id>` (ids are unique `skiff-t<pid>-<n>` names, so no shared parent is left behind) whenever the config is saved for a
    /// container (on by default; off keeps the runc default untouched).
    pub auto_cgroups_path: bool,
}

impl Bundle {
    /// The `runc spec` config with only `process.args` set and `process.terminal` false.
    pub fn new(args: &[&str]) -> Bundle {
        let mut b = Bundle::runc_spec();
        b.args(args);
        b.set("/process/terminal", json!(false));
        b
    }

    /// The config exactly as `runc spec` writes it (terminal true, args ["sh"]).
    pub fn runc_spec() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("skiff-bundle-")
            .tempdir()
            .expect("tempdir");
        // Readable by anyone: user-namespaced containers run as unprivileged host ids.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod bundle");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
            .expect("chmod tmp");
        fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (install busybox-static)");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a))
                .expect("symlink applet");
        }
        let mut c = Command::new("runc");
        c.arg("spec").current_dir(dir.path());
        run_with_timeout(c, CMD_TIMEOUT).ok();
        let text = fs::read_to_string(dir.path().join("config.json"))
            .expect("runc spec wrote config.json");
        let config = serde_json::from_str(&text).expect("runc spec config is JSON");
        Bundle {
            dir: Arc::new(dir),
            config,
            auto_cgroups_path: true,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn set(&mut self, ptr: &str, v: Value) -> &mut Self {
        set_ptr(&mut self.config, ptr, v);
        self
    }

    pub fn get(&self, ptr: &str) -> &Value {
        self.config.pointer(ptr).unwrap_or(&Value::Null)
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    pub fn readonly(&mut self, ro: bool) -> &mut Self {
        self.set("/root/readonly", json!(ro))
    }

    pub fn env(&mut self, kv: &str) -> &mut Self {
        let env = self.config["process"]["env"]
            .as_array_mut()
            .expect("process.env");
        env.push(json!(kv));
        self
    }

    /// Add a namespace entry (`path` to join an existing one), replacing one of that type.
    pub fn namespace(&mut self, typ: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(typ);
        let mut ns = json!({ "type": typ });
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        self.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(ns);
        self
    }

    pub fn remove_namespace(&mut self, typ: &str) -> &mut Self {
        let nss = self.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces");
        nss.retain(|n| n["type"] != typ);
        self
    }

    /// Add a capability to the bounding, effective and permitted sets.
    pub fn add_cap(&mut self, cap: &str) -> &mut Self {
        for set in ["bounding", "effective", "permitted"] {
            let s = self.config["process"]["capabilities"][set]
                .as_array_mut()
                .expect("capability set");
            s.push(json!(cap));
        }
        self
    }

    /// Give the rootfs to `uid:gid` (recursively, symlinks themselves), as one does for
    /// a user namespace whose root maps to that id: runc refuses a rootfs its container
    /// root cannot create mount points in, and so does skiff.
    pub fn chown_rootfs(&self, uid: u32, gid: u32) {
        fn walk(p: &Path, uid: u32, gid: u32) {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("lchown");
            if fs::symlink_metadata(p).expect("lstat").is_dir() {
                for e in fs::read_dir(p).expect("read_dir") {
                    walk(&e.expect("dir entry").path(), uid, gid);
                }
            }
        }
        walk(&self.rootfs(), uid, gid);
    }

    /// Write config.json as is.
    pub fn save(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialize config");
        fs::write(self.path().join("config.json"), text).expect("write config.json");
    }

    /// Write config.json for container `id`; returns the cgroups path it will use.
    pub fn save_for(&self, id: &str) -> String {
        let mut c = self.config.clone();
        let path = if self.auto_cgroups_path {
            let p = format!("/{id}");
            set_ptr(&mut c, "/linux/cgroupsPath", json!(p));
            p
        } else {
            c.pointer("/linux/cgroupsPath")
                .and_then(Value::as_str)
                .unwrap_or(id)
                .to_string()
        };
        let text = serde_json::to_string_pretty(&c).expect("serialize config");
        fs::write(self.path().join("config.json"), text).expect("write config.json");
        path
    }
}

/// Which runtime binary an [`Rt`] drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Skiff,
    Runc,
}

/// One runtime with its own state root; deletes what it created when dropped.
#[derive(Debug)]
pub struct Rt {
    pub kind: Kind,
    root: TempDir,
    /// (id, cgroups path) of every container this test asked to create.
    created: Mutex<Vec<(String, String)>>,
    /// Bundles in use: kept alive until the containers are deleted.
    bundles: Mutex<Vec<Arc<TempDir>>>,
    /// `--cgroup-root` for skiff (None: the default /sys/fs/cgroup).
    cgroup_root: Option<PathBuf>,
}

impl Rt {
    pub fn skiff() -> Rt {
        Rt::new(Kind::Skiff)
    }

    pub fn runc() -> Rt {
        Rt::new(Kind::Runc)
    }

    /// skiff with its cgroups on the cgroup2 mount at `cgroup_root`.
    pub fn skiff_on(cgroup_root: &Path) -> Rt {
        let mut rt = Rt::new(Kind::Skiff);
        rt.cgroup_root = Some(cgroup_root.to_path_buf());
        rt
    }

    fn new(kind: Kind) -> Rt {
        let root = tempfile::Builder::new()
            .prefix("skiff-root-")
            .tempdir()
            .expect("tempdir");
        Rt {
            kind,
            root,
            created: Mutex::new(vec![]),
            bundles: Mutex::new(vec![]),
            cgroup_root: None,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The state dir a container would have under this root.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.root.path().join(id)
    }

    /// The command line `<runtime> --root R <args>`, not yet run.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = match self.kind {
            Kind::Skiff => {
                let mut c = Command::new(skiff_bin());
                c.arg("runtime");
                if let Some(r) = &self.cgroup_root {
                    c.arg("--cgroup-root").arg(r);
                }
                c
            }
            Kind::Runc => Command::new("runc"),
        };
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    #[track_caller]
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        run_with_timeout(self.command(args), CMD_TIMEOUT)
    }

    /// Remember `id` (and its bundle) for cleanup.
    pub fn track(&self, id: &str, bundle: &Bundle, cgroups_path: String) {
        self.created
            .lock()
            .expect("lock")
            .push((id.to_string(), cgroups_path));
        self.bundles.lock().expect("lock").push(bundle.dir.clone());
    }

    /// Save the bundle's config for `id` and run `<verb> [extra] -b BUNDLE ID`.
    #[track_caller]
    pub fn lifecycle(&self, verb: &[&str], bundle: &Bundle, id: &str) -> Output {
        let cg = bundle.save_for(id);
        self.track(id, bundle, cg);
        let mut args: Vec<&std::ffi::OsStr> = verb.iter().map(std::ffi::OsStr::new).collect();
        args.push("--bundle".as_ref());
        args.push(bundle.path().as_os_str());
        args.push(id.as_ref());
        self.cmd(&args)
    }

    /// `create`, tracked for cleanup.
    #[track_caller]
    pub fn create(&self, bundle: &Bundle, id: &str) -> Output {
        self.lifecycle(&["create"], bundle, id)
    }

    /// Foreground `run`, tracked for cleanup (a killed or failed run may leave it).
    #[track_caller]
    pub fn run(&self, bundle: &Bundle, id: &str) -> Output {
        self.lifecycle(&["run"], bundle, id)
    }

    /// `create` then `start`, both required to succeed; returns the init's host pid.
    #[track_caller]
    pub fn start_detached(&self, bundle: &Bundle, id: &str) -> i32 {
        self.create(bundle, id).ok();
        self.cmd(&["start", id]).ok();
        let st = self.state(id);
        st["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state has no pid: {st}")) as i32
    }

    /// `state ID`, required to succeed.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        self.cmd(&["state", id]).ok().json()
    }

    /// Poll `state` until `status` (bounded); returns the last state.
    #[track_caller]
    pub fn wait_status(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        let got = poll(STATE_TIMEOUT, || {
            last = self.state(id);
            (last["status"] == status).then(|| last.clone())
        });
        got.unwrap_or_else(|| {
            panic!("container {id} did not become {status} within {STATE_TIMEOUT:?}: {last}")
        })
    }

    /// Poll until the container is stopped *and* its exit status is recorded; returns the
    /// state. (Whether the two can be seen apart is `lifecycle::stopped_state_always_…`'s
    /// business; other tests only need the final state.)
    #[track_caller]
    pub fn wait_stopped(&self, id: &str) -> Value {
        let mut last = Value::Null;
        let got = poll(STATE_TIMEOUT, || {
            last = self.state(id);
            (last["status"] == "stopped" && !last["exitStatus"].is_null()).then(|| last.clone())
        });
        got.unwrap_or_else(|| {
            panic!(
                "container {id} did not stop with an exit status within {STATE_TIMEOUT:?}: {last}"
            )
        })
    }

    /// Poll `ps --format json` until the container has `n` processes; returns their pids.
    #[track_caller]
    pub fn wait_processes(&self, id: &str, n: usize) -> Vec<i64> {
        let mut last = vec![];
        let got = poll(STATE_TIMEOUT, || {
            let v = self.cmd(&["ps", "--format", "json", id]).ok().json();
            last = v
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            (last.len() == n).then(|| last.clone())
        });
        got.unwrap_or_else(|| panic!("container {id} did not reach {n} processes: {last:?}"))
    }
}

/// The host's cgroup layout under /sys/fs/cgroup, from /proc/self/mountinfo (the
/// runtime's own detection, so tests and runtime cannot disagree about the host).
pub fn host_cgroup_layout() -> skiff_runtime::cgroups::HostLayout {
    skiff_runtime::cgroups::host_layout(Path::new("/sys/fs/cgroup"))
        .expect("read /proc/self/mountinfo")
        .expect("no cgroup filesystem is mounted at /sys/fs/cgroup")
}

/// Where containers' cgroup files are: one directory per v1 hierarchy under
/// /sys/fs/cgroup (legacy and hybrid hosts, like this test machine), or one directory in
/// a cgroup2 tree (a unified host's /sys/fs/cgroup, or a hybrid host's unified mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    V1,
    V2 { root: PathBuf },
}

impl Cgroups {
    /// What `skiff runtime` uses on this host by default (no `--cgroup-root`).
    pub fn host() -> Cgroups {
        let layout = host_cgroup_layout();
        match layout.version {
            skiff_runtime::cgroups::CgroupVersion::V1 => Cgroups::V1,
            skiff_runtime::cgroups::CgroupVersion::V2 => Cgroups::V2 {
                root: layout.unified.unwrap_or_else(|| "/sys/fs/cgroup".into()),
            },
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Cgroups::V2 { .. })
    }

    /// The cgroup dir of `cgroups_path` that holds `controller`'s files (v1: that
    /// controller's hierarchy; v2: the one directory).
    pub fn dir(&self, controller: &str, cgroups_path: &str) -> PathBuf {
        let rel = cgroups_path.trim_start_matches('/');
        match self {
            Cgroups::V1 => Path::new("/sys/fs/cgroup").join(controller).join(rel),
            Cgroups::V2 { root } => root.join(rel),
        }
    }

    /// The trimmed contents of `file` in `controller`'s dir of `cgroups_path`.
    #[track_caller]
    pub fn read(&self, controller: &str, cgroups_path: &str, file: &str) -> String {
        let p = self.dir(controller, cgroups_path).join(file);
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        for (id, cg) in &created {
            // Ignore the result: the container may be gone already.
            let _ = try_run(
                self.command(&["delete", "--force", id.as_str()]),
                CMD_TIMEOUT,
            );
            // Backstop for a runtime that failed to remove its cgroups: only our own unique
            // leaf dirs, never the shared parent.
            if cg.contains("skiff-t") {
                let mut dirs = cgroup_dirs(cg);
                if let Some(r) = &self.cgroup_root {
                    dirs.push(r.join(cg.trim_start_matches('/')));
                }
                for d in dirs {
                    let _ = fs::remove_dir(&d);
                }
            }
        }
    }
}

/// A network namespace from `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        let name = unique_name();
        host("ip", &["netns", "add", &name]).ok();
        NetNs { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let mut c = Command::new("ip");
        c.args(["netns", "delete", &self.name]);
        let _ = try_run(c, CMD_TIMEOUT);
    }
}

/// Whether a process with host pid `pid` exists (and is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Live processes (not ours) whose command line contains `marker`, e.g. a runtime root
/// dir: a container init forked from `skiff runtime --root R create` carries R in its
/// command line until it execs.
pub fn processes_mentioning(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = vec![];
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(marker) && pid_alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// The dirs of cgroup `cgroups_path` that exist: under any v1 hierarchy or cgroup2
/// mount below /sys/fs/cgroup, or under /sys/fs/cgroup itself (a unified host).
pub fn cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    let mut dirs = vec![];
    for e in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let d = e.path().join(rel);
        if d.is_dir() {
            dirs.push(d);
        }
    }
    let top = Path::new("/sys/fs/cgroup").join(rel);
    if top.is_dir() {
        dirs.push(top);
    }
    dirs
}

/// A line of /proc/<pid>/status, e.g. `status_field(pid, "Uid")`.
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}
