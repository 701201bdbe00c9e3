//! The owner of a detached container.
//!
//! `skiff run -d` prepares the container (snapshot, overlay mount, bundle) and starts
//! `skiff container-shim run ID` in a new session, its stderr on the container's log
//! file and its stdout a pipe back to `skiff run`. The shim binds the published ports,
//! creates and starts the container through the runtime library (the container inherits
//! the log as stdout/stderr) in a network namespace made beforehand (netns.rs), serves the ports, then writes `ok` on the pipe, or the
//! error, and closes it. It stays until the container exits, then deletes the runtime's
//! state, unmounts the rootfs and records the exit code (or, with `--rm`, removes the
//! container). The shim is single-threaded until the container's processes exist (the
//! runtime forks it); only then do the port threads start.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use skiff_image::ImageStore;

use super::{ports, Paths};

#[derive(Debug, Subcommand)]
pub enum ShimCmd {
    /// Own a prepared detached container (started by `skiff run -d`).
    Run(ShimRun),
}

#[derive(Debug, Args)]
pub struct ShimRun {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub runtime_root: PathBuf,
    /// A foreground `skiff run -p` waits on the pipe: write `exit N` there at the end.
    #[arg(long)]
    pub attached: bool,
    pub id: String,
}

pub fn main(cmd: ShimCmd) -> i32 {
    match cmd {
        ShimCmd::Run(a) => shim(a),
    }
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
        }
        Err(e) => {
            let _ = write!(report, "{e:#}");
            return 1;
        }
    }
    // Detached, nobody reads the pipe any more (and writing to it would raise SIGPIPE).
    let report = if a.attached { Some(report) } else { None };
    let code = wait_exit(&runtime, &a.id);
    finish(&paths, &runtime, &a.id, code);
    if let Some(mut r) = report {
        let _ = writeln!(r, "exit {code}");
    }
    0
}

fn start(a: &ShimRun, paths: &Paths, runtime: &skiff_runtime::Runtime) -> Result<()> {
    let mut meta = paths.load(&a.id)?;
    let listeners = ports::bind(&mut meta.ports)?;
    let netns = super::netns::prepare(&paths.bundle(&a.id))?;
    let opts = skiff_runtime::CreateOptions {
        id: a.id.clone(),
        bundle: paths.bundle(&a.id),
        ..Default::default()
    };
    runtime.create(&opts)?;
    let started = (|| -> Result<()> {
        super::netns::forget(&paths.bundle(&a.id))?;
        if !listeners.is_empty() {
            ports::serve(listeners, &meta.ports, netns)?;
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
