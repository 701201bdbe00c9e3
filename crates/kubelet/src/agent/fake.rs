//! An in-memory [`ContainerRuntime`] for tests of the agent's logic: no namespaces,
//! cgroups or processes, but the behaviour the agent relies on, checked by the same
//! conformance suite as skiff's real runtime ([`super::cri_conformance`]).
//!
//! A fake container "runs" its command by interpreting a small subset of the shell:
//! `sh -c SCRIPT` (or the argv itself) where SCRIPT is commands joined by `;` or `&&`,
//! each one of `echo WORDS…`, `exit N`, `sleep SECONDS` (`infinity` too), `true`,
//! `false`. Output goes to the container's CRI log as the real runtime's shim writes it;
//! time passes for real (a `sleep 1` container exits a second after it started). An
//! executable that is neither `sh` nor one of those commands fails to start with
//! `RunContainerError`'s message, as a missing binary does. A signal ends a running
//! container with `128 + signal`. [`FakeRuntime::reopen`] gives a second handle on the
//! same state: an agent restarted on the same node.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use super::containers::{
    now_rfc3339, ContainerConfig, ContainerRecord, ExitRecord, RunState, StartError,
};
use super::cri::{ContainerRuntime, SandboxConfig};
use super::AgentError;

/// One step of a fake process.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Out(String),
    /// `None`: forever.
    Sleep(Option<Duration>),
    Exit(i32),
    /// Sets the exit status without ending (`true`, `false`, `echo`).
    Status(i32),
}

/// Parses what the fake can run; `Err` names the executable it does not have.
fn parse(argv: &[String]) -> Result<Vec<Step>, String> {
    let script = match argv {
        [sh, c, script, ..] if (sh == "sh" || sh.ends_with("/sh")) && c == "-c" => script.clone(),
        [] => return Err(String::new()),
        _ => argv.join(" "),
    };
    let mut steps = Vec::new();
    let first = argv.first().map(String::as_str).unwrap_or_default();
    for (i, cmd) in script
        .split([';', '&'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .enumerate()
    {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let step = match words.as_slice() {
            ["echo", rest @ ..] => {
                steps.push(Step::Out(rest.join(" ")));
                Step::Status(0)
            }
            ["exit"] => Step::Exit(0),
            ["exit", n] => Step::Exit(n.parse().unwrap_or(2)),
            ["sleep", "infinity"] => Step::Sleep(None),
            ["sleep", n] => Step::Sleep(Some(Duration::from_secs_f64(
                n.parse::<f64>().unwrap_or(0.0).max(0.0),
            ))),
            ["true"] => Step::Status(0),
            ["false"] => Step::Status(1),
            [other, ..] => {
                // The container's own executable is missing: it cannot start. A missing
                // command inside a script is the shell's "not found".
                if i == 0 && first == *other {
                    return Err((*other).to_string());
                }
                steps.push(Step::Out(format!("sh: {other}: not found")));
                Step::Exit(127)
            }
            [] => continue,
        };
        steps.push(step);
    }
    Ok(steps)
}

/// A fake process: what is left of its steps, and when it may go on.
#[derive(Debug, Clone)]
struct Proc {
    steps: Vec<Step>,
    at: usize,
    status: i32,
    /// Asleep until then (`None` with `asleep`: forever).
    wake: Option<Instant>,
    asleep: bool,
}

impl Proc {
    fn new(steps: Vec<Step>) -> Proc {
        Proc {
            steps,
            at: 0,
            status: 0,
            wake: None,
            asleep: false,
        }
    }

    /// Runs until it sleeps or ends at `now`: the lines it printed and, if it ended, its
    /// exit code.
    fn advance(&mut self, now: Instant) -> (Vec<String>, Option<i32>) {
        let mut out = Vec::new();
        if self.asleep {
            match self.wake {
                Some(t) if now >= t => self.asleep = false,
                _ => return (out, None),
            }
        }
        while let Some(step) = self.steps.get(self.at).cloned() {
            self.at += 1;
            match step {
                Step::Out(s) => out.push(s),
                Step::Status(c) => self.status = c,
                Step::Exit(c) => return (out, Some(c)),
                Step::Sleep(d) => {
                    self.status = 0;
                    match d {
                        Some(d) if d.is_zero() => {}
                        Some(d) => {
                            self.asleep = true;
                            self.wake = Some(now + d);
                            return (out, None);
                        }
                        None => {
                            self.asleep = true;
                            self.wake = None;
                            return (out, None);
                        }
                    }
                }
            }
        }
        (out, Some(self.status))
    }
}

struct FakeContainer {
    record: ContainerRecord,
    proc: Proc,
    exit: Option<ExitRecord>,
    /// Gone without an exit status (a reboot).
    lost: bool,
    /// Attached output streams: what the container prints from now on.
    attached: Vec<OwnedFd>,
}

#[derive(Default)]
struct State {
    /// Pod UID → host name.
    sandboxes: BTreeMap<String, String>,
    containers: BTreeMap<String, FakeContainer>,
    next_id: u64,
}

#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    /// Another handle on the same containers and sandboxes (an agent restarted).
    pub fn reopen(&self) -> FakeRuntime {
        self.clone()
    }

    /// Loses every container and sandbox, as a reboot does (records stay, state is
    /// `Lost`).
    pub fn lose_everything(&self) {
        let mut st = self.lock();
        st.sandboxes.clear();
        for c in st.containers.values_mut() {
            if c.exit.is_none() {
                c.lost = true;
                c.attached.clear();
            }
        }
    }

    /// The host name the pod's sandbox was made with.
    pub fn sandbox_hostname(&self, uid: &str) -> Option<String> {
        self.lock().sandboxes.get(uid).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Advances every running container to now.
    fn tick(st: &mut State) {
        let now = Instant::now();
        for c in st.containers.values_mut() {
            if c.exit.is_some() || c.lost {
                continue;
            }
            let (lines, ended) = c.proc.advance(now);
            for l in &lines {
                log_line(&c.record, l);
                c.attached.retain(|fd| write_fd(fd.as_fd(), l).is_ok());
            }
            if let Some(code) = ended {
                c.exit = Some(ExitRecord {
                    exit_code: code,
                    finished: now_rfc3339(),
                    oom_killed: false,
                });
                c.attached.clear();
            }
        }
    }
}

fn write_fd(fd: BorrowedFd<'_>, line: &str) -> std::io::Result<()> {
    let mut b = line.as_bytes().to_vec();
    b.push(b'\n');
    let mut off = 0;
    while off < b.len() {
        off += nix::unistd::write(fd, &b[off..]).map_err(std::io::Error::from)?;
    }
    Ok(())
}

fn log_line(r: &ContainerRecord, line: &str) {
    let rec = skiff_container::log::Record {
        time: SystemTime::now(),
        stream: skiff_container::log::Stream::Stdout,
        partial: false,
        content: line.as_bytes().to_vec(),
    };
    if let Some(dir) = r.log_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&r.log_path)
    {
        let _ = f.write_all(&skiff_container::log::format_record(&rec));
    }
}

impl ContainerRuntime for FakeRuntime {
    fn run_sandbox(
        &self,
        uid: &str,
        cfg: &SandboxConfig,
    ) -> Result<Option<std::net::IpAddr>, AgentError> {
        if uid.is_empty() {
            return Err(AgentError::Sandbox {
                uid: uid.into(),
                message: "a pod without a UID".into(),
            });
        }
        self.lock()
            .sandboxes
            .entry(uid.to_string())
            .or_insert_with(|| cfg.hostname.clone());
        Ok(None)
    }

    fn sandbox_ready(&self, uid: &str) -> bool {
        self.lock().sandboxes.contains_key(uid)
    }

    fn sandboxes(&self) -> Vec<String> {
        self.lock().sandboxes.keys().cloned().collect()
    }

    fn network_namespace(&self, _uid: &str) -> Option<PathBuf> {
        None
    }

    fn remove_sandbox(&self, uid: &str) {
        self.lock().sandboxes.remove(uid);
    }

    fn start(&self, cfg: ContainerConfig) -> Result<ContainerRecord, StartError> {
        let mut st = self.lock();
        if !st.sandboxes.contains_key(&cfg.record.pod_uid) {
            return Err(StartError::Create(format!(
                "pod sandbox {} not found",
                cfg.record.pod_uid
            )));
        }
        let steps = parse(&cfg.args).map_err(|exe| {
            StartError::Run(format!("exec: {exe:?}: executable file not found in $PATH"))
        })?;
        st.next_id += 1;
        let id = format!("{:064x}", st.next_id);
        let mut record = cfg.record;
        record.cgroup = format!("{}/{id}", record.cgroup.trim_end_matches('/'));
        record.id = id.clone();
        record.created = now_rfc3339();
        record.started = Some(now_rfc3339());
        st.containers.insert(
            id,
            FakeContainer {
                record: record.clone(),
                proc: Proc::new(steps),
                exit: None,
                lost: false,
                attached: Vec::new(),
            },
        );
        Self::tick(&mut st);
        Ok(record)
    }

    fn records(&self) -> Vec<ContainerRecord> {
        self.lock()
            .containers
            .values()
            .map(|c| c.record.clone())
            .collect()
    }

    fn state(&self, r: &ContainerRecord) -> RunState {
        let mut st = self.lock();
        Self::tick(&mut st);
        match st.containers.get(&r.id) {
            Some(c) => match &c.exit {
                Some(e) => RunState::Exited(e.clone()),
                None if c.lost => RunState::Lost,
                None => RunState::Running,
            },
            None => RunState::Lost,
        }
    }

    fn kill(&self, r: &ContainerRecord, signal: Signal, _all: bool) {
        let mut st = self.lock();
        Self::tick(&mut st);
        if let Some(c) = st.containers.get_mut(&r.id) {
            if c.exit.is_none() && !c.lost {
                c.exit = Some(ExitRecord {
                    exit_code: 128 + signal as i32,
                    finished: now_rfc3339(),
                    oom_killed: false,
                });
                c.attached.clear();
            }
        }
    }

    fn remove(&self, r: &ContainerRecord) {
        self.lock().containers.remove(&r.id);
    }

    fn exec_sync(
        &self,
        r: &ContainerRecord,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), String> {
        let (out, code) = self.run_exec(r, &argv, timeout)?;
        let mut bytes = Vec::new();
        for l in out {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        Ok((code, bytes))
    }

    fn exec(
        &self,
        r: &ContainerRecord,
        argv: Vec<String>,
        _tty: Option<crate::runtime::TermSize>,
        _exec_id: &str,
        _stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        _stderr: BorrowedFd<'_>,
    ) -> Result<i32, String> {
        let (out, code) = self.run_exec(r, &argv, Duration::MAX)?;
        for l in out {
            write_fd(stdout, &l).map_err(|e| e.to_string())?;
        }
        Ok(code)
    }

    fn resize(&self, r: &ContainerRecord, _size: crate::runtime::TermSize) -> Result<(), String> {
        Err(format!("container {} has no terminal", r.id))
    }

    fn resize_exec(
        &self,
        _r: &ContainerRecord,
        exec_id: &str,
        _size: crate::runtime::TermSize,
    ) -> Result<(), String> {
        Err(format!("no running exec {exec_id:?} with a terminal"))
    }

    fn attach(
        &self,
        r: &ContainerRecord,
        _stdin: Option<BorrowedFd<'_>>,
        stdout: BorrowedFd<'_>,
        _stderr: BorrowedFd<'_>,
    ) -> Result<(), String> {
        let fd = stdout.try_clone_to_owned().map_err(|e| e.to_string())?;
        let mut st = self.lock();
        Self::tick(&mut st);
        let c = st
            .containers
            .get_mut(&r.id)
            .filter(|c| c.exit.is_none())
            .ok_or_else(|| format!("container {} is not running", r.id))?;
        c.attached.push(fd);
        drop(st);
        // Something has to let fake time pass while nobody asks for the state.
        let me = self.clone();
        let id = r.id.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(10));
            let mut st = me.lock();
            Self::tick(&mut st);
            if st.containers.get(&id).is_none_or(|c| c.attached.is_empty()) {
                return;
            }
        });
        Ok(())
    }
}

impl FakeRuntime {
    /// Runs an exec'd command to its end (really waiting out its sleeps, at most
    /// `timeout`): its output and exit code.
    fn run_exec(
        &self,
        r: &ContainerRecord,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(Vec<String>, i32), String> {
        if self.state(r) != RunState::Running {
            return Err(format!("container {} is not running", r.id));
        }
        let steps = match parse(argv) {
            Ok(s) => s,
            Err(exe) => {
                return Ok((
                    vec![format!("exec: {exe:?}: executable file not found in $PATH")],
                    127,
                ))
            }
        };
        let deadline = Instant::now().checked_add(timeout);
        let mut p = Proc::new(steps);
        let mut out = Vec::new();
        loop {
            let (lines, ended) = p.advance(Instant::now());
            out.extend(lines);
            if let Some(code) = ended {
                return Ok((out, code));
            }
            let wake = p.wake;
            let until = match (wake, deadline) {
                (Some(w), Some(d)) => w.min(d),
                (Some(w), None) => w,
                (None, Some(d)) => d,
                (None, None) => return Err("the command sleeps forever".into()),
            };
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            if deadline.is_some_and(|d| Instant::now() >= d) && wake.is_none_or(|w| w > until) {
                return Err(format!("command timed out after {timeout:?}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), s.into()]
    }

    #[test]
    fn scripts_parse_into_steps() {
        assert_eq!(
            parse(&argv("echo hi there; sleep 2 && exit 3")).unwrap(),
            vec![
                Step::Out("hi there".into()),
                Step::Status(0),
                Step::Sleep(Some(Duration::from_secs(2))),
                Step::Exit(3)
            ]
        );
        assert_eq!(parse(&["/nope".to_string()]).unwrap_err(), "/nope");
        assert_eq!(
            parse(&argv("nope")).unwrap(),
            vec![Step::Out("sh: nope: not found".into()), Step::Exit(127)]
        );
        assert_eq!(
            parse(&argv("sleep infinity")).unwrap(),
            vec![Step::Sleep(None)]
        );
    }

    #[test]
    fn a_process_sleeps_then_goes_on() {
        let mut p = Proc::new(parse(&argv("echo a; sleep 5; echo b; false")).unwrap());
        let t0 = Instant::now();
        assert_eq!(p.advance(t0), (vec!["a".to_string()], None));
        assert_eq!(p.advance(t0 + Duration::from_secs(1)), (vec![], None));
        assert_eq!(
            p.advance(t0 + Duration::from_secs(6)),
            (vec!["b".to_string()], Some(1))
        );
    }
}
