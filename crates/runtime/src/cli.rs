//! `skiff runtime`: runc's command line (verbs, flags, output formats and exit codes), so
//! that tools and people that drive runc can drive skiff.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use oci_spec::runtime::Process;

use crate::container::{CreateOptions, Runtime};
use crate::error::{chain, RuntimeError};
use crate::exec::ExecOptions;
use crate::state::DEFAULT_ROOT;

#[derive(Debug, Parser)]
#[command(
    name = "skiff runtime",
    about = "OCI container runtime (runc-compatible)"
)]
pub struct RuntimeCli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT, env = "SKIFF_RUNTIME_ROOT")]
    pub root: PathBuf,
    /// Where the cgroup filesystem is mounted (v1 hierarchies or the v2 root).
    #[arg(
        long,
        global = true,
        default_value = "/sys/fs/cgroup",
        env = "SKIFF_CGROUP_ROOT"
    )]
    pub cgroup_root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of --log: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    /// Verbose logging to stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility; skiff manages cgroupfs directly.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility. Like runc's, it goes before the command: after
    /// `spec` the same name is that command's own flag.
    #[arg(long)]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Path to the bundle (directory holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master fd.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's init pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Accepted for runc compatibility (only 0 is supported).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container; in the foreground, wait and return its exit status.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container is started.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init, or with --all to all its processes.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete containers (their state, cgroup); --force kills running ones first.
    Delete {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a new process in a container.
    Exec {
        /// JSON file with the process (as config.json's "process").
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long)]
        tty: bool,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(short, long)]
        env: Vec<String>,
        /// UID[:GID]
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short = 'g', long)]
        additional_gids: Vec<u32>,
        /// Add a capability (e.g. CAP_NET_ADMIN) to the process.
        #[arg(short, long)]
        cap: Vec<String>,
        #[arg(long)]
        no_new_privs: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show the processes of a container.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Write a default config.json (like `runc spec`) into the bundle directory.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// Config for running without root: a user namespace mapping the current user.
        #[arg(long = "rootless", id = "spec_rootless")]
        rootless_spec: bool,
    },
    /// Print container statistics as JSON events.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between stats events (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
}

/// Run the CLI; returns the process exit code.
pub fn main(cli: RuntimeCli) -> i32 {
    let log = (cli.log.clone(), cli.log_format.clone());
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = chain(&e);
            eprintln!("skiff runtime: {msg}");
            if let (Some(path), fmt) = log {
                write_log(&path, &fmt, &msg);
            }
            1
        }
    }
}

fn write_log(path: &std::path::Path, fmt: &str, msg: &str) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let time = crate::state::now_rfc3339();
    let line = if fmt == "json" {
        serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
    } else {
        format!("time=\"{time}\" level=error msg={msg:?}")
    };
    let _ = writeln!(f, "{line}");
}

fn create_opts(a: &CreateArgs) -> Result<CreateOptions, RuntimeError> {
    if a.preserve_fds != 0 {
        return Err(RuntimeError::Usage(
            "--preserve-fds is not supported yet".into(),
        ));
    }
    Ok(CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
    })
}

fn print_json(v: &impl serde::Serialize) -> Result<(), RuntimeError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| RuntimeError::Usage(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn dispatch(cli: RuntimeCli) -> Result<i32, RuntimeError> {
    let mut rt = Runtime::new(&cli.root);
    rt.cgroup_root = cli.cgroup_root.clone();
    match cli.cmd {
        Cmd::Create(a) => rt.create(&create_opts(&a)?).map(|_| 0),
        Cmd::Start { id } => rt.start(&id).map(|_| 0),
        Cmd::Run {
            create,
            detach,
            keep,
        } => rt.run(&create_opts(&create)?, detach, keep),
        Cmd::State { id } => print_json(&rt.state(&id)?).map(|_| 0),
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            rt.kill(&id, sig, all).map(|_| 0)
        }
        Cmd::Delete { force, ids } => {
            let mut first_err = None;
            for id in ids {
                if let Err(e) = rt.delete(&id, force) {
                    if first_err.is_some() {
                        eprintln!("skiff runtime: {}", chain(&e));
                    } else {
                        first_err = Some(e);
                    }
                }
            }
            first_err.map_or(Ok(0), Err)
        }
        Cmd::Exec {
            process,
            detach,
            tty,
            cwd,
            env,
            user,
            additional_gids,
            cap,
            no_new_privs,
            pid_file,
            console_socket,
            preserve_fds,
            id,
            args,
        } => {
            if preserve_fds != 0 {
                return Err(RuntimeError::Usage(
                    "--preserve-fds is not supported yet".into(),
                ));
            }
            let p = build_exec_process(
                &rt,
                &id,
                ExecFlags {
                    process,
                    tty,
                    cwd,
                    env,
                    user,
                    additional_gids,
                    cap,
                    no_new_privs,
                    args,
                },
            )?;
            rt.exec(
                &id,
                &p,
                &ExecOptions {
                    detach,
                    pid_file,
                    console_socket,
                },
            )
        }
        Cmd::List { format, quiet } => {
            let list = rt.list()?;
            if quiet {
                for c in &list {
                    println!("{}", c.id);
                }
            } else if format == "json" {
                print_json(&list)?;
            } else {
                let mut out = String::from("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n");
                for c in &list {
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\n",
                        c.id,
                        c.pid,
                        c.status,
                        c.bundle.display(),
                        c.created,
                        if c.owner.is_empty() { "root" } else { &c.owner }
                    ));
                }
                print!("{out}");
            }
            Ok(0)
        }
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = rt.pids(&id)?;
            if format == "json" {
                print_json(&pids)?;
                return Ok(0);
            }
            let args = if ps_args.is_empty() {
                vec!["-ef".to_string()]
            } else {
                ps_args
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| RuntimeError::io("run ps", e))?;
            if !out.status.success() {
                return Err(RuntimeError::Usage(format!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            print!(
                "{}",
                filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)?
            );
            Ok(0)
        }
        Cmd::Spec {
            bundle,
            rootless_spec,
        } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(RuntimeError::Usage(format!(
                    "{} already exists; remove it first",
                    path.display()
                )));
            }
            let v = crate::default_spec::default_config(rootless_spec);
            let text =
                serde_json::to_string_pretty(&v).map_err(|e| RuntimeError::Usage(e.to_string()))?;
            std::fs::write(&path, text + "\n")
                .map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))?;
            Ok(0)
        }
        Cmd::Pause { id } => rt.pause(&id).map(|_| 0),
        Cmd::Resume { id } => rt.resume(&id).map(|_| 0),
        Cmd::Events {
            stats,
            interval,
            id,
        } => {
            let every = parse_duration(&interval)?;
            let mut first = true;
            loop {
                let s = match rt.stats(&id) {
                    Ok(s) => s,
                    // The stream ends, successfully, when the container does.
                    Err(RuntimeError::WrongState { .. }) if !first => return Ok(0),
                    Err(e) => return Err(e),
                };
                first = false;
                let ev = serde_json::json!({"type": "stats", "id": id, "data": s});
                println!("{ev}");
                let _ = std::io::stdout().flush();
                if stats {
                    return Ok(0);
                }
                std::thread::sleep(every);
            }
        }
    }
}

/// Keep the header and the lines whose PID column is one of `pids`.
fn filter_ps(out: &str, pids: &[i32]) -> Result<String, RuntimeError> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| {
            RuntimeError::Usage("ps output has no PID column; include pid in the ps format".into())
        })?;
    let mut s = format!("{header}\n");
    for l in lines {
        if let Some(p) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&p) {
                s.push_str(l);
                s.push('\n');
            }
        }
    }
    Ok(s)
}

struct ExecFlags {
    process: Option<PathBuf>,
    tty: bool,
    cwd: Option<PathBuf>,
    env: Vec<String>,
    user: Option<String>,
    additional_gids: Vec<u32>,
    cap: Vec<String>,
    no_new_privs: bool,
    args: Vec<String>,
}

/// The process for `exec`: from --process, or the container's process with the flags
/// applied, as runc does.
fn build_exec_process(rt: &Runtime, id: &str, f: ExecFlags) -> Result<Process, RuntimeError> {
    if let Some(path) = &f.process {
        let file = std::fs::File::open(path)
            .map_err(|e| RuntimeError::io(format!("open {}", path.display()), e))?;
        return Ok(crate::spec::parse_json(
            path,
            std::io::BufReader::new(file),
        )?);
    }
    if f.args.is_empty() {
        return Err(RuntimeError::Usage(
            "exec needs a command: skiff runtime exec ID CMD [ARGS...] or --process FILE".into(),
        ));
    }
    let rec = rt.load(id)?;
    let bundle = crate::spec::load_bundle(&rec.bundle)?;
    let mut p = bundle.process().cloned().unwrap_or_default();
    p.set_args(Some(f.args));
    p.set_terminal(Some(f.tty));
    p.set_console_size(None);
    if let Some(c) = f.cwd {
        p.set_cwd(c);
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(f.env);
    p.set_env(Some(env));
    if let Some(u) = f.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        let bad = || RuntimeError::Usage(format!("--user {u:?}: expected UID[:GID] as numbers"));
        p.user_mut().set_uid(uid.parse().map_err(|_| bad())?);
        if let Some(g) = gid {
            p.user_mut().set_gid(g.parse().map_err(|_| bad())?);
        }
    }
    if !f.additional_gids.is_empty() {
        p.user_mut().set_additional_gids(Some(f.additional_gids));
    }
    if f.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !f.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for c in &f.cap {
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::Value::String(c.clone()))
                    .map_err(|_| RuntimeError::Usage(format!("--cap {c:?}: unknown capability")))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
                caps.inheritable().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut s = set.1.clone().unwrap_or_default();
                s.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(s)),
                    1 => caps.set_effective(Some(s)),
                    2 => caps.set_permitted(Some(s)),
                    _ => caps.set_inheritable(Some(s)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

pub fn parse_signal(s: &str) -> Result<Signal, RuntimeError> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| RuntimeError::Usage(format!("unknown signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>().map_err(|_| {
        RuntimeError::Usage(format!(
            "unknown signal {s:?}; use a name like TERM or KILL, or a number"
        ))
    })
}

pub fn parse_duration(s: &str) -> Result<Duration, RuntimeError> {
    let bad = || RuntimeError::Usage(format!("invalid duration {s:?}; use e.g. 5s, 500ms, 1m"));
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        // clap checks (e.g. one long name per argument, globals included) run here, not
        // only when a debug binary happens to parse that subcommand.
        use clap::CommandFactory;
        RuntimeCli::command().debug_assert();
        let cli = RuntimeCli::try_parse_from(["skiff runtime", "spec", "--rootless"]).unwrap();
        assert!(matches!(
            cli.cmd,
            Cmd::Spec {
                rootless_spec: true,
                ..
            }
        ));
        let cli = RuntimeCli::try_parse_from(["skiff runtime", "--rootless", "auto", "state", "x"])
            .unwrap();
        assert_eq!(cli.rootless.as_deref(), Some("auto"));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn ps_filter() {
        let out = "UID   PID  PPID  C STIME TTY TIME CMD\nroot  10  1  0 00:00 ?  00:00:00 sleep\nroot  11  1  0 00:00 ?  00:00:00 other\n";
        let f = filter_ps(out, &[10]).unwrap();
        assert!(f.contains("sleep") && !f.contains("other"));
    }
}
