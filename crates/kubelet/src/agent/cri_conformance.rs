//! The conformance suite every [`ContainerRuntime`] passes: what the agent relies on,
//! checked through the trait alone. skiff's real runtime runs it as root with a real
//! image (`tests/kubelet/runtime.rs`); the in-memory fake runs it in its unit tests. The
//! commands are the shell subset the fake understands (see [`super::fake`]).

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::containers::{ContainerConfig, ContainerRecord, RunState, StartError};
use super::cri::{ContainerRuntime, SandboxConfig};

/// How long any state the suite waits for may take.
const DEADLINE: Duration = Duration::from_secs(20);

pub struct Fixture {
    /// A new handle on the runtime's state, as an agent restarted on the node gets it.
    pub open: Box<dyn Fn() -> Arc<dyn ContainerRuntime> + Send + Sync>,
    /// What every container of the suite starts from: its image and the cgroup parent
    /// under which the suite makes its pods' cgroups (`<cgroup>/pod<uid>`).
    pub template: ContainerConfig,
    /// Where the suite puts its containers' logs.
    pub log_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("runtime conformance check {check:?} failed: {what}")]
pub struct Failure {
    pub check: &'static str,
    pub what: String,
}

type Check = fn(&Fixture, &Ctx) -> Result<(), String>;

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("sandbox lifecycle", sandbox_lifecycle),
    (
        "a container runs, logs and exits with its code",
        run_log_exit,
    ),
    ("exec with a timeout, streaming exec, kill", exec_and_kill),
    (
        "attach sees later output and ends with the container",
        attach,
    ),
    (
        "a restarted agent adopts containers and exit codes",
        adoption,
    ),
    (
        "a missing executable fails to start and leaves nothing",
        missing_executable,
    ),
    ("pods see only their own containers", pods_are_separate),
];

/// Runs every check; the first failure.
pub fn run_all(f: &Fixture) -> Result<(), Failure> {
    for (check, run) in CHECKS {
        let ctx = Ctx::new(f, check);
        let r = run(f, &ctx);
        ctx.cleanup();
        r.map_err(|what| Failure { check, what })?;
    }
    Ok(())
}

/// One check's pods: made unique, removed afterwards.
pub struct Ctx {
    rt: Arc<dyn ContainerRuntime>,
    prefix: String,
    pods: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    fn new(f: &Fixture, check: &str) -> Ctx {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let tag: String = check
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .collect();
        Ctx {
            rt: (f.open)(),
            prefix: format!("conf-{tag}-{}-{nanos:x}", std::process::id()),
            pods: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A new pod with its sandbox.
    fn pod(&self, n: usize) -> Result<String, String> {
        let uid = format!("{}-{n}", self.prefix);
        self.rt
            .run_sandbox(&uid, &sandbox())
            .map_err(|e| format!("run_sandbox: {e}"))?;
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(uid.clone());
        Ok(uid)
    }

    fn cleanup(&self) {
        let pods = std::mem::take(
            &mut *self
                .pods
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for uid in pods {
            for c in self.rt.pod_containers(&uid) {
                self.rt.remove(&c.record);
            }
            self.rt.remove_sandbox(&uid);
        }
    }
}

fn sandbox() -> SandboxConfig {
    SandboxConfig {
        hostname: "conformance".into(),
        ..Default::default()
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn config(f: &Fixture, uid: &str, name: &str, args: Vec<String>) -> ContainerConfig {
    let mut c = f.template.clone();
    c.args = args;
    c.record.pod_uid = uid.to_string();
    c.record.pod = uid.to_string();
    c.record.namespace = "conformance".into();
    c.record.name = name.to_string();
    c.record.cgroup = format!(
        "{}/pod{uid}",
        f.template.record.cgroup.trim_end_matches('/')
    );
    c.record.log_path = f.log_dir.join(uid).join(name).join("0.log");
    c
}

fn wait_for(
    what: &str,
    mut f: impl FnMut() -> Option<RunState>,
    ok: impl Fn(&RunState) -> bool,
) -> Result<RunState, String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = f();
        if let Some(s) = &s {
            if ok(s) {
                return Ok(s.clone());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}; last state {s:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exited_with(rt: &dyn ContainerRuntime, r: &ContainerRecord, code: i32) -> Result<(), String> {
    match wait_for(
        &format!("container {} to exit", r.name),
        || Some(rt.state(r)),
        |s| matches!(s, RunState::Exited(_)),
    )? {
        RunState::Exited(e) if e.exit_code == code => Ok(()),
        other => Err(format!(
            "{} ended as {other:?}, not with exit code {code}",
            r.name
        )),
    }
}

fn start(rt: &dyn ContainerRuntime, cfg: ContainerConfig) -> Result<ContainerRecord, String> {
    let name = cfg.record.name.clone();
    let r = rt.start(cfg).map_err(|e| format!("start {name}: {e}"))?;
    if r.id.is_empty() || r.started.is_none() || !r.cgroup.ends_with(&r.id) {
        return Err(format!(
            "the record of a started container needs an id, a start time and its own cgroup: {r:?}"
        ));
    }
    Ok(r)
}

/// Reads `fd` to its end in a thread; `None` if it does not end within the deadline.
fn read_all(fd: OwnedFd) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::fs::File::from(fd).read_to_end(&mut out);
        let _ = tx.send(out);
    });
    rx
}

fn sandbox_lifecycle(_f: &Fixture, ctx: &Ctx) -> Result<(), String> {
    let rt = &*ctx.rt;
    let uid = ctx.pod(0)?;
    rt.run_sandbox(&uid, &sandbox())
        .map_err(|e| format!("a second run_sandbox of a ready sandbox must succeed: {e}"))?;
    if !rt.sandbox_ready(&uid) || !rt.sandboxes().contains(&uid) {
        return Err("a sandbox just made is not ready or not listed".into());
    }
    rt.remove_sandbox(&uid);
    if rt.sandbox_ready(&uid) || rt.sandboxes().contains(&uid) {
        return Err("a removed sandbox is still ready or listed".into());
    }
    Ok(())
}

fn run_log_exit(f: &Fixture, ctx: &Ctx) -> Result<(), String> {
    let rt = &*ctx.rt;
    let uid = ctx.pod(0)?;
    let r = start(rt, config(f, &uid, "app", sh("echo hello; exit 3")))?;
    exited_with(rt, &r, 3)?;
    let listed = rt.pod_containers(&uid);
    if listed.len() != 1 || listed[0].record != r {
        return Err(format!(
            "pod_containers shows {listed:?}, not the one record {r:?}"
        ));
    }
    if !rt.list().iter().any(|c| c.record == r) {
        return Err("list() does not show the container".into());
    }
    let mut reader = skiff_container::log::Reader::open(&r.log_path)
        .map_err(|e| format!("opening the log {}: {e}", r.log_path.display()))?;
    let recs = reader
        .read_new()
        .map_err(|e| format!("reading the log: {e}"))?;
    let text: Vec<String> = recs
        .iter()
        .map(|x| String::from_utf8_lossy(&x.content).into_owned())
        .collect();
    if text != ["hello"] {
        return Err(format!("the CRI log holds {text:?}, not [\"hello\"]"));
    }
    rt.remove(&r);
    rt.remove(&r);
    if rt.records().iter().any(|x| x.id == r.id) {
        return Err("a removed container is still listed".into());
    }
    Ok(())
}

fn exec_and_kill(f: &Fixture, ctx: &Ctx) -> Result<(), String> {
    let rt = &*ctx.rt;
    let uid = ctx.pod(0)?;
    let r = start(rt, config(f, &uid, "sleeper", sh("sleep 3600")))?;
    if rt.state(&r) != RunState::Running {
        return Err(format!("a sleeping container is {:?}", rt.state(&r)));
    }
    let (code, out) = rt
        .exec_sync(&r, sh("echo inside; exit 4"), Duration::from_secs(10))
        .map_err(|e| format!("exec_sync: {e}"))?;
    if code != 4 || out != b"inside\n" {
        return Err(format!(
            "exec_sync gave {code} and {:?}, not 4 and \"inside\\n\"",
            String::from_utf8_lossy(&out)
        ));
    }
    let t = Instant::now();
    match rt.exec_sync(&r, sh("sleep 30"), Duration::from_secs(1)) {
        Err(_) if t.elapsed() < Duration::from_secs(10) => {}
        other => {
            return Err(format!(
                "exec_sync past its 1 s timeout gave {other:?} after {:?}",
                t.elapsed()
            ))
        }
    }
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let (rd, wr) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let out = read_all(rd);
    let code = rt
        .exec(
            &r,
            sh("echo streamed"),
            None,
            "conformance-exec",
            null.as_fd(),
            wr.as_fd(),
            wr.as_fd(),
        )
        .map_err(|e| format!("exec: {e}"))?;
    drop(wr);
    let got = out
        .recv_timeout(DEADLINE)
        .map_err(|_| "the exec's output did not end".to_string())?;
    if code != 0 || got != b"streamed\n" {
        return Err(format!(
            "exec gave {code} and {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    rt.kill(&r, Signal::SIGKILL, true);
    exited_with(rt, &r, 137)?;
    // Killing what has exited changes nothing.
    rt.kill(&r, Signal::SIGKILL, true);
    exited_with(rt, &r, 137)?;
    if rt.exec_sync(&r, sh("true"), Duration::from_secs(5)).is_ok() {
        return Err("exec_sync in an exited container succeeded".into());
    }
    Ok(())
}

fn attach(f: &Fixture, ctx: &Ctx) -> Result<(), String> {
    let rt = &*ctx.rt;
    let uid = ctx.pod(0)?;
    let r = start(
        rt,
        config(f, &uid, "talker", sh("sleep 1; echo late; sleep 1")),
    )?;
    let (rd, wr) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let (erd, ewr) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let out = read_all(rd);
    let _err = read_all(erd);
    rt.attach(&r, None, wr.as_fd(), ewr.as_fd())
        .map_err(|e| format!("attach: {e}"))?;
    drop((wr, ewr));
    let got = out
        .recv_timeout(DEADLINE)
        .map_err(|_| "the attached output did not end when the container exited".to_string())?;
    if got != b"late\n" {
        return Err(format!(
            "attach saw {:?}, not \"late\\n\"",
            String::from_utf8_lossy(&got)
        ));
    }
    exited_with(rt, &r, 0)
}

fn adoption(f: &Fixture, ctx: &Ctx) -> Result<(), String> {
    let rt = &*ctx.rt;
    let uid = ctx.pod(0)?;
    let running = start(rt, config(f, &uid, "running", sh("sleep 3600")))?;
    let done = start(rt, config(f, &uid, "done", sh("exit 7")))?;
    exited_with(rt, &done, 7)?;
    let again = (f.open)();
    let records = again.records();
    for r in [&running, &done] {
        if !records.contains(r) {
            return Err(format!("a new handle does not list {} as it was", r.name));
        }
    }
    if again.state(&running) != RunState::Running {
        return Err(format!(
            "a running container is {:?} to a new handle",
            again.state(&running)
        ));
    }
    exited_with(&*again, &done, 7)?;
    if !again.sandbox_ready(&uid) {
        return Err("the sandbox is not ready to a new handle".into());
    }
    again.kill(&running, Signal::SIGKILL, true);
    exited_with(rt, &running, 137)
}

fn missing_executable(f: &Fixture, ctx: &Ctx) -> Result<(), String> {
    let rt = &*ctx.rt;
    let uid = ctx.pod(0)?;
    let cfg = config(f, &uid, "missing", vec!["/no/such/binary".into()]);
    match rt.start(cfg) {
        Err(StartError::Run(_)) => {}
        Err(e) => return Err(format!("a missing executable failed as {e:?}, not Run")),
        Ok(r) => {
            // Some runtimes start and fail at once; the exit must say so.
            return match wait_for(
                "the container to end",
                || Some(rt.state(&r)),
                |s| *s != RunState::Running,
            )? {
                RunState::Exited(e) if e.exit_code != 0 => Err(format!(
                    "a missing executable started (exit {}); it must fail to start",
                    e.exit_code
                )),
                s => Err(format!("a missing executable started and is {s:?}")),
            };
        }
    }
    if !rt.pod_containers(&uid).is_empty() {
        return Err("a container that failed to start left a record".into());
    }
    Ok(())
}

fn pods_are_separate(f: &Fixture, ctx: &Ctx) -> Result<(), String> {
    let rt = &*ctx.rt;
    let a = ctx.pod(0)?;
    let b = ctx.pod(1)?;
    let ra = start(rt, config(f, &a, "one", sh("sleep 3600")))?;
    let rb = start(rt, config(f, &b, "one", sh("sleep 3600")))?;
    let ids = |uid: &str| -> Vec<String> {
        rt.pod_containers(uid)
            .into_iter()
            .map(|c| c.record.id)
            .collect()
    };
    if ids(&a) != [ra.id.clone()] || ids(&b) != [rb.id.clone()] {
        return Err(format!("pod a has {:?}, pod b {:?}", ids(&a), ids(&b)));
    }
    if ra.id == rb.id {
        return Err("two containers got one id".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fake::FakeRuntime;

    #[test]
    fn the_fake_runtime_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeRuntime::new();
        let fixture = Fixture {
            open: Box::new(move || Arc::new(fake.reopen()) as Arc<dyn ContainerRuntime>),
            template: ContainerConfig::default(),
            log_dir: dir.path().to_path_buf(),
        };
        run_all(&fixture).unwrap();
    }
}
