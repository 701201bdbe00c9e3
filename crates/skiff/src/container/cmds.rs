//! `skiff ps | logs | stop | rm | exec` for the containers `skiff run` made.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use skiff_image::{ImageStore, Snapshotter};

use super::{now_secs, short, Meta, Paths};
use crate::image_cmd::DEFAULT_DATA_DIR;

#[derive(Debug, Args)]
pub struct Common {
    /// skiff's data directory (images, containers).
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where the runtime keeps container state.
    #[arg(long, env = "SKIFF_RUNTIME_ROOT", default_value = skiff_runtime::state::DEFAULT_ROOT, hide = true)]
    pub runtime_root: PathBuf,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep printing as the container writes, until it exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Start each line with the time it was written (RFC 3339, nanoseconds).
    #[arg(short = 't', long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub common: Common,
    /// Kill a running container first.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep stdin open (it always is: stdin is passed through).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable K=V.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Runs one of these commands, printing errors docker-style; returns the exit code.
pub fn report(what: &str, r: Result<i32>) -> i32 {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skiff {what}: {e:#}");
            1
        }
    }
}

fn ago(secs: u64) -> String {
    let d = now_secs().saturating_sub(secs);
    match d {
        0..=59 => format!("{d} seconds"),
        60..=3599 => format!("{} minutes", d / 60),
        3600..=172_799 => format!("{} hours", d / 3600),
        _ => format!("{} days", d / 86_400),
    }
}

fn status_text(m: &Meta) -> String {
    use skiff_container::Status;
    match m.status() {
        Status::Running => format!("Up {}", ago(m.created)),
        Status::Created => "Created".into(),
        Status::Exited {
            exit_code,
            finished,
        } => format!("Exited ({exit_code}) {} ago", ago(finished)),
        // The owner died without recording how the container ended.
        Status::Unknown => "Exited (unknown)".into(),
    }
}

pub fn ps(a: PsArgs) -> Result<i32> {
    let paths = Paths::new(&a.common.data_dir);
    let all = paths.list()?;
    let shown: Vec<&Meta> = all.iter().filter(|m| a.all || m.running()).collect();
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for m in shown {
            writeln!(
                out,
                "{}",
                if a.no_trunc {
                    m.id.clone()
                } else {
                    short(&m.id)
                }
            )?;
        }
        return Ok(0);
    }
    let rows: Vec<[String; 7]> = shown
        .iter()
        .map(|m| {
            let mut cmd = shell_join(&m.command);
            if !a.no_trunc && cmd.chars().count() > 20 {
                cmd = format!("{}…", cmd.chars().take(19).collect::<String>());
            }
            [
                if a.no_trunc {
                    m.id.clone()
                } else {
                    short(&m.id)
                },
                m.image.clone(),
                format!("\"{cmd}\""),
                format!("{} ago", ago(m.created)),
                status_text(m),
                if m.running() {
                    m.ports
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    String::new()
                },
                m.name.clone(),
            ]
        })
        .collect();
    let head = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w[i] - c.chars().count() + 3));
            }
        }
        s
    };
    writeln!(out, "{}", line(head.to_vec()))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(0)
}

fn shell_join(argv: &[String]) -> String {
    argv.join(" ")
}

/// Prints the container's CRI log: its stdout to stdout, its stderr to stderr.
pub fn logs(a: LogsArgs) -> Result<i32> {
    let paths = Paths::new(&a.common.data_dir);
    let m = paths.resolve(&a.container)?;
    let p = paths.log(&m.id);
    if !p.exists() {
        if m.detached {
            return Ok(0);
        }
        bail!(
            "container {} ran in the foreground: its output went to the terminal, there is no log (use skiff run -d)",
            m.name
        );
    }
    let mut reader = skiff_container::log::Reader::open(&p)?;
    let mut out = skiff_container::log::Render::new(
        std::io::stdout().lock(),
        std::io::stderr().lock(),
        a.timestamps,
    );
    let mut sleep = Duration::from_millis(10);
    loop {
        let records = reader.read_new()?;
        for r in &records {
            out.write(r)?;
        }
        out.flush()?;
        if !records.is_empty() {
            sleep = Duration::from_millis(10);
            continue;
        }
        if !a.follow {
            return Ok(0);
        }
        // Reread the record: the container may have been removed or ended.
        let alive = paths.load(&m.id).map(|m| m.running()).unwrap_or(false);
        if !alive {
            // Whatever was written before the end.
            for r in &reader.read_new()? {
                out.write(r)?;
            }
            out.flush()?;
            return Ok(0);
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(200));
    }
}

/// Waits up to `timeout` for the container's owner to finish (it records the exit).
fn wait_stopped(paths: &Paths, m: &Meta, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_millis(1);
    loop {
        let running = paths.load(&m.id).map(|m| m.running()).unwrap_or(false);
        if !running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(50));
    }
}

/// Sends the stop signal, then SIGKILL to every process after `grace`; returns once
/// the owner has recorded the exit.
fn stop_one(
    paths: &Paths,
    runtime: &skiff_runtime::Runtime,
    m: &Meta,
    grace: Duration,
) -> Result<()> {
    if !m.running() {
        return Ok(());
    }
    let sig = skiff_runtime::cli::parse_signal(&m.stop_signal)
        .unwrap_or(nix::sys::signal::Signal::SIGTERM);
    // The container may end between the check and the signal; that is a stop too.
    let _ = runtime.kill(&m.id, sig, false);
    if wait_stopped(paths, m, grace) {
        return Ok(());
    }
    let _ = runtime.kill(&m.id, nix::sys::signal::Signal::SIGKILL, true);
    if !wait_stopped(paths, m, Duration::from_secs(30)) {
        bail!(
            "container {} did not stop after SIGKILL (its owner, pid {}, is still waiting)",
            m.name,
            m.owner_pid
        );
    }
    Ok(())
}

pub fn stop(a: StopArgs) -> Result<i32> {
    let paths = Paths::new(&a.common.data_dir);
    let runtime = skiff_runtime::Runtime::new(&a.common.runtime_root);
    let mut code = 0;
    for c in &a.containers {
        match paths
            .resolve(c)
            .and_then(|m| stop_one(&paths, &runtime, &m, Duration::from_secs(a.time)))
        {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("skiff stop: {e:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Removes a stopped container's files: rootfs mount (if any), runtime state, snapshot,
/// directory, name.
pub fn remove_files(paths: &Paths, store: &ImageStore, m: &Meta) -> Result<()> {
    let rootfs = paths.rootfs(&m.id);
    if is_mounted(&rootfs) {
        skiff_image::mount::unmount(&rootfs)
            .with_context(|| format!("unmounting {}", rootfs.display()))?;
    }
    store
        .snapshotter()
        .remove(&m.id)
        .context("removing the container's writable layer")?;
    let dir = paths.dir(&m.id);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    let link = paths.name_link(&m.name);
    if fs::read_link(&link).is_ok_and(|t| t.as_os_str() == m.id.as_str()) {
        let _ = fs::remove_file(link);
    }
    Ok(())
}

fn is_mounted(p: &std::path::Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

pub fn rm(a: RmArgs) -> Result<i32> {
    let paths = Paths::new(&a.common.data_dir);
    let runtime = skiff_runtime::Runtime::new(&a.common.runtime_root);
    let store = ImageStore::open(&a.common.data_dir)?;
    let mut code = 0;
    for c in &a.containers {
        let r = (|| -> Result<()> {
            let m = paths.resolve(c)?;
            if m.running() {
                if !a.force {
                    bail!(
                        "container {} is running: stop it first (skiff stop {c}) or use skiff rm -f",
                        m.name
                    );
                }
                stop_one(&paths, &runtime, &m, Duration::ZERO)?;
            }
            // A crashed owner may have left the runtime's state and cgroup.
            let _ = runtime.delete(&m.id, true);
            remove_files(&paths, &store, &m)
        })();
        match r {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("skiff rm: {e:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    let paths = Paths::new(&a.common.data_dir);
    let runtime = skiff_runtime::Runtime::new(&a.common.runtime_root);
    let m = paths.resolve(&a.container)?;
    if !m.running() {
        bail!("container {} is not running (see skiff ps -a)", m.name);
    }
    // The container's own process settings (user, env, cwd, caps…) with this command.
    let spec = skiff_container::spec::load(&paths.bundle(&m.id))?;
    let process = skiff_container::spec::exec_process(
        &spec,
        a.cmd.clone(),
        a.tty,
        a.workdir.as_deref(),
        &a.env,
    )?;
    Ok(runtime.exec(&m.id, &process, &skiff_runtime::ExecOptions::default())?)
}
