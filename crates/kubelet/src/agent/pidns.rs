//! The PID namespace of a pod with `shareProcessNamespace: true`.
//!
//! A PID namespace cannot be pinned like the network, IPC and UTS ones: a bind mount
//! keeps the namespace object, but once its first process (its init) dies the kernel
//! kills everything in it and refuses new members. Kubernetes makes the pause container
//! that init. skiff has no pause container, so the agent starts a tiny helper,
//! `skiff container-shim pause`, that forks the namespace's PID 1: it only reaps the
//! orphans reparented to it and lives until the sandbox is removed. The helper's
//! first process exits at once, after printing the init's host PID; the agent then pins
//! the namespace on `<pod>/ns/pid` (the path containers' specs join) and records the
//! PID in `<pod>/ns/pause.pid`.
//!
//! Joining the first app container's namespace instead would need no helper, but the
//! pod's other containers would die with that container's init (a restart or an exit
//! of the first container ends the namespace), which Kubernetes pods do not do.
//!
//! The init is checked by comparing its `/proc/PID/ns/pid` with the pinned file, so a
//! reused PID is never taken for it; the agent restarting adopts a live one, and a dead
//! one is replaced (its containers died with it and restart in the new namespace).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

/// Where the pod's PID namespace is pinned (the path containers join).
pub fn pin_path(ns_dir: &Path) -> PathBuf {
    ns_dir.join("pid")
}

fn pid_file(ns_dir: &Path) -> PathBuf {
    ns_dir.join("pause.pid")
}

/// The (device, inode) of a namespace file.
fn ns_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// The PID of the live init of the pinned namespace in `ns_dir`, if there is one.
pub fn live_init(ns_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(ns_dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pinned = ns_id(&pin_path(ns_dir))?;
    let theirs = ns_id(Path::new(&format!("/proc/{pid}/ns/pid")))?;
    // The pinned file is the namespace itself only while mounted (else an empty file).
    (pinned == theirs).then_some(pid)
}

/// Makes sure the pod's PID namespace has a live init, pinned at `<ns_dir>/pid`;
/// `program` is the skiff binary and its leading arguments (`container-shim pause`
/// follows).
pub fn ensure(ns_dir: &Path, program: &OsString, cgroup: Option<&str>) -> Result<PathBuf, String> {
    if live_init(ns_dir).is_some() {
        return Ok(pin_path(ns_dir));
    }
    stop(ns_dir);
    let mut child = Command::new(program)
        .args(["container-shim", "pause"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the pod's PID namespace helper: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let _ = child.wait();
    let pid: i32 = line.trim().parse().map_err(|_| {
        format!("the pod's PID namespace helper did not say its PID (got {line:?})")
    })?;
    let pinned = pin_path(ns_dir);
    let placed = match cgroup {
        Some(cg) => super::containers::move_into_cgroup(pid, cg),
        None => Ok(()),
    };
    let made = placed
        .and_then(|()| {
            std::fs::write(&pinned, b"").map_err(|e| format!("creating {}: {e}", pinned.display()))
        })
        .and_then(|()| {
            let src = format!("/proc/{pid}/ns/pid");
            mount(
                Some(src.as_str()),
                &pinned,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("pinning the PID namespace on {}: {e}", pinned.display()))
        })
        .and_then(|()| {
            std::fs::write(pid_file(ns_dir), pid.to_string())
                .map_err(|e| format!("writing {}: {e}", pid_file(ns_dir).display()))
        });
    if let Err(e) = made {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        stop(ns_dir);
        return Err(e);
    }
    Ok(pinned)
}

/// Kills the namespace's init (and so every process left in it) and unpins it.
pub fn stop(ns_dir: &Path) {
    if let Some(pid) = live_init(ns_dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let pinned = pin_path(ns_dir);
    for _ in 0..4 {
        if umount2(&pinned, MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    let _ = std::fs::remove_file(&pinned);
    let _ = std::fs::remove_file(pid_file(ns_dir));
}

/// `skiff container-shim pause`: makes a PID namespace, starts its init (`skiff
/// container-shim pause --init`, the first process in it, so its PID 1), prints the
/// init's host PID and exits; the init reaps orphans until it is killed.
pub fn serve_pause(init: bool) -> i32 {
    if init {
        reap_forever();
    }
    let _ = nix::unistd::setsid();
    // Children made after this are in the new namespace; this process is not.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID) {
        eprintln!("skiff pause: creating a PID namespace: {e}");
        return 1;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skiff pause: finding the skiff binary: {e}");
            return 1;
        }
    };
    match Command::new(exe)
        .args(["container-shim", "pause", "--init"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            println!("{}", child.id());
            0
        }
        Err(e) => {
            eprintln!("skiff pause: starting the namespace's init: {e}");
            1
        }
    }
}

fn reap_forever() -> ! {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    // Blocked, SIGCHLD stays pending for sigwait; no wake-up is lost between a reap and
    // the next wait. Other signals from inside the namespace are ignored (the kernel
    // does not deliver default-action signals to a namespace's init).
    let _ = set.thread_block();
    loop {
        loop {
            match nix::sys::wait::waitpid(
                Pid::from_raw(-1),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = set.wait();
    }
}
