//! The owner of a detached container, and the hook that brings up its loopback.
//!
//! `skiff run -d` prepares the container (snapshot, overlay mount, bundle) and starts
//! `skiff container-shim run ID` in a new session, its stderr on the container's log
//! file and its stdout a pipe back to `skiff run`. The shim binds the published ports,
//! creates and starts the container through the runtime library (the container inherits
//! the log as stdout/stderr), serves the ports, then writes `ok` on the pipe, or the
//! error, and closes it. It stays until the container exits, then deletes the runtime's
//! state, unmounts the rootfs and records the exit code (or, with `--rm`, removes the
//! container). The shim is single-threaded until the container's processes exist (the
//! runtime forks it); only then do the port threads start.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use skiff_image::ImageStore;

use super::{ports, Paths};

#[derive(Debug, Subcommand)]
pub enum ShimCmd {
    /// Own a prepared detached container (started by `skiff run -d`).
    Run(ShimRun),
    /// createRuntime hook: bring up `lo` in the container's network namespace (OCI
    /// state on stdin).
    LoUp,
}

#[derive(Debug, Args)]
pub struct ShimRun {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub runtime_root: PathBuf,
    pub id: String,
}

pub fn main(cmd: ShimCmd) -> i32 {
    match cmd {
        ShimCmd::LoUp => match lo_up_hook() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("skiff: bringing up lo: {e:#}");
                1
            }
        },
        ShimCmd::Run(a) => shim(a),
    }
}

fn lo_up_hook() -> Result<()> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the OCI state")?;
    let v: serde_json::Value = serde_json::from_str(&s).context("parsing the OCI state")?;
    let pid = v["pid"]
        .as_i64()
        .context("the OCI state on stdin has no pid")?;
    let ns = fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("opening /proc/{pid}/ns/net"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("joining the container's network namespace")?;
    set_lo_up()
}

/// SIOCGIFFLAGS / SIOCSIFFLAGS on `lo` in this thread's network namespace.
fn set_lo_up() -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
    }
    // SAFETY: the flags member is the one SIOCGIFFLAGS filled in.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo");
    }
    Ok(())
}

fn shim(a: ShimRun) -> i32 {
    // The pipe to `skiff run` is our stdout; keep a private copy, then make stdout the
    // log too, so the container gets the log on both.
    let report = std::io::stdout().as_fd().try_clone_to_owned();
    let mut report = match report {
        Ok(r) => fs::File::from(r),
        Err(e) => {
            eprintln!("skiff shim: {e}");
            return 1;
        }
    };
    if let Err(e) = nix::unistd::dup2_stdout(std::io::stderr()) {
        let _ = writeln!(report, "redirecting the shim's stdout to the log: {e}");
        return 1;
    }
    // A session of its own: the terminal's signals and hangups are not the container's.
    let _ = nix::unistd::setsid();
    let paths = Paths::new(&a.data_dir);
    let runtime = skiff_runtime::Runtime::new(&a.runtime_root);
    match start(&a, &paths, &runtime) {
        Ok(()) => {
            let _ = report.write_all(b"ok\n");
            drop(report);
        }
        Err(e) => {
            let _ = write!(report, "{e:#}");
            return 1;
        }
    }
    let code = wait_exit(&runtime, &a.id);
    finish(&paths, &runtime, &a.id, code);
    0
}

fn start(a: &ShimRun, paths: &Paths, runtime: &skiff_runtime::Runtime) -> Result<()> {
    let mut meta = paths.load(&a.id)?;
    let listeners = ports::bind(&mut meta.ports)?;
    let opts = skiff_runtime::CreateOptions {
        id: a.id.clone(),
        bundle: paths.bundle(&a.id),
        ..Default::default()
    };
    runtime.create(&opts)?;
    let started = (|| -> Result<()> {
        let pid = runtime.load(&a.id)?.pid;
        if !listeners.is_empty() {
            ports::serve(
                listeners,
                &meta.ports,
                &PathBuf::from(format!("/proc/{pid}/ns/net")),
            )?;
        }
        meta.state = "running".into();
        meta.owner_pid = std::process::id() as i32;
        meta.owner_start = skiff_runtime::state::process_start_time(meta.owner_pid).unwrap_or(0);
        paths.save(&meta)?;
        runtime.start(&a.id)?;
        Ok(())
    })();
    if let Err(e) = started {
        let _ = runtime.delete(&a.id, true);
        return Err(e);
    }
    Ok(())
}

/// Waits for the container's init to end; its exit code (128+signal if killed).
fn wait_exit(runtime: &skiff_runtime::Runtime, id: &str) -> i32 {
    let mut sleep = Duration::from_millis(2);
    loop {
        match runtime.state(id) {
            Ok(st) if st.status == skiff_runtime::state::Status::Stopped => {
                return st.exit_status.unwrap_or(255);
            }
            Ok(_) => {}
            Err(_) => return 255,
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(100));
    }
}

/// After the container exited: drop the runtime state and the mount; record the exit
/// code, or remove everything with --rm.
fn finish(paths: &Paths, runtime: &skiff_runtime::Runtime, id: &str, code: i32) {
    let _ = runtime.delete(id, true);
    let _ = skiff_image::mount::unmount(&paths.rootfs(id));
    let Ok(mut meta) = paths.load(id) else { return };
    if meta.rm {
        if let Ok(store) = ImageStore::open(&paths.data) {
            let _ = super::cmds::remove_files(paths, &store, &meta);
        }
        return;
    }
    meta.state = "exited".into();
    meta.exit_code = Some(code);
    meta.finished = Some(super::now_secs());
    let _ = paths.save(&meta);
}
