//! The `skiff` binary: command-line wiring only.

use clap::{Parser, Subcommand};

mod agent_cmd;
mod api_bench;
mod autoscale_bench;
mod bench;
mod component;
mod container;
mod controller_manager_cmd;
mod controllers_bench;
mod dev_cmd;
mod hollow_cmd;
mod image_bench;
mod image_cmd;
mod login_cmd;
mod net_bench;
mod pods_bench;
mod preflight;
mod proxy_bench;
mod rbac_bench;
mod registry_bench;
mod registry_client;
mod registry_cmd;
mod run_cmd;
mod scheduler_bench;
mod scheduler_cmd;
mod server_bench;
mod server_cmd;
mod store_cmd;

#[derive(Debug, Parser)]
#[command(name = "skiff", version, about = "Kubernetes in one binary")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// OCI container runtime with runc's verbs and flags.
    Runtime(Box<skiff_runtime::cli::RuntimeCli>),
    /// Build, store, load and save images.
    Image(image_cmd::ImageCli),
    /// Run a command in a new container from an image.
    Run(Box<run_cmd::RunArgs>),
    /// List containers.
    Ps(container::cmds::PsArgs),
    /// Print a detached container's output.
    Logs(container::cmds::LogsArgs),
    /// Stop running containers (STOPSIGNAL, then SIGKILL after -t seconds).
    Stop(container::cmds::StopArgs),
    /// Remove containers.
    Rm(container::cmds::RmArgs),
    /// Run a command in a running container.
    Exec(container::cmds::ExecArgs),
    /// Internal: a detached container's owner, and its hooks.
    #[command(subcommand, hide = true)]
    ContainerShim(container::shim::ShimCmd),
    /// Benchmarks against the peers (runc, …); results go to README.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// OCI distribution registry: serve it, collect its garbage.
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCmd),
    /// Log in to a registry (credentials go to docker's config.json).
    Login(login_cmd::LoginArgs),
    /// Log out of a registry.
    Logout(login_cmd::LogoutArgs),
    /// Admin of the embedded store: get, list, watch, compact, snapshot, restore, defrag.
    Store(store_cmd::StoreArgs),
    /// The control plane: state store, Kubernetes API server, scheduler and controller
    /// manager.
    Server(Box<server_cmd::ServerArgs>),
    /// The node agent (kubelet): runs this node's pods as containers.
    Agent(Box<agent_cmd::AgentArgs>),
    /// The scheduler alone, against an API server named by a kubeconfig.
    Scheduler(Box<scheduler_cmd::SchedulerArgs>),
    /// The controller manager alone, against an API server named by a kubeconfig.
    ControllerManager(Box<controller_manager_cmd::ControllerManagerArgs>),
    /// Nodes without machines (as kubemark's): they heartbeat and report their pods
    /// Running, for tests and benchmarks at scale.
    HollowNodes(Box<hollow_cmd::HollowArgs>),
    /// Development clusters on this machine: `skiff dev cluster --nodes 3`.
    Dev(dev_cmd::DevCli),
    /// Remove everything skiff made on this host: pods' containers, mounts, cgroups and
    /// network namespaces, the pod network and its nft tables (`skiff server --clean`);
    /// with `--purge` also the data dir. Takes `skiff server`'s flags.
    Uninstall(Box<server_cmd::ServerArgs>),
}

/// How a long-running component (`skiff server`, `skiff agent`) logs, on standard error.
#[derive(Debug, Clone, clap::Args)]
pub struct LogFlags {
    /// More detail in the logs: `-v` every component's info lines, `-vv` debug.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// `text` (one readable line per event) or `json` (one JSON object per line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn main() {
    // Rust starts with SIGPIPE ignored: printing to a closed pipe would then panic, and
    // containers we exec would inherit the ignored disposition. Behave like a C tool.
    // SAFETY: setting a signal disposition to its default before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Through a link named `skiff-runtime` (e.g. containerd's BinaryName), the command
    // line is exactly runc's: `skiff-runtime --root R create ...`.
    if invoked_as("skiff-runtime") {
        let rt = skiff_runtime::cli::RuntimeCli::parse();
        init_tracing(rt.debug);
        std::process::exit(skiff_runtime::cli::main(rt));
    }
    // `skiff runtime …` starts containers in single milliseconds: parse only the
    // runtime's command line (building every command's parser costs ~0.2 ms).
    if std::env::args_os().nth(1).is_some_and(|a| a == "runtime") {
        let args = std::iter::once("skiff runtime".into()).chain(std::env::args_os().skip(2));
        let rt = skiff_runtime::cli::RuntimeCli::parse_from::<_, std::ffi::OsString>(args);
        init_tracing(rt.debug);
        std::process::exit(skiff_runtime::cli::main(rt));
    }
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Runtime(rt) => {
            init_tracing(rt.debug);
            skiff_runtime::cli::main(*rt)
        }
        Cmd::Image(c) => {
            init_tracing(false);
            image_cmd::main(c)
        }
        Cmd::Run(r) => {
            init_tracing(false);
            run_cmd::main(*r)
        }
        Cmd::Ps(a) => container::cmds::report("ps", container::cmds::ps(a)),
        Cmd::Logs(a) => container::cmds::report("logs", container::cmds::logs(a)),
        Cmd::Stop(a) => container::cmds::report("stop", container::cmds::stop(a)),
        Cmd::Rm(a) => container::cmds::report("rm", container::cmds::rm(a)),
        Cmd::Exec(a) => {
            init_tracing(false);
            container::cmds::report("exec", container::cmds::exec(a))
        }
        Cmd::ContainerShim(c) => container::shim::main(c),
        Cmd::Bench(b) => {
            init_tracing(false);
            match bench::main(b) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff bench: {e:#}");
                    1
                }
            }
        }
        Cmd::Registry(r) => {
            init_tracing(false);
            match registry_cmd::main(r) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff registry: {e:#}");
                    1
                }
            }
        }
        Cmd::Login(a) => {
            init_tracing(false);
            report("skiff login", login_cmd::login(a))
        }
        Cmd::Logout(a) => {
            init_tracing(false);
            report("skiff logout", login_cmd::logout(a))
        }
        Cmd::Uninstall(mut s) => {
            init_logs(&s.log);
            s.clean = true;
            report("skiff uninstall", server_cmd::clean(&s))
        }
        Cmd::Server(s) => {
            init_logs(&s.log);
            match server_cmd::main(*s) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff server: {e:#}");
                    1
                }
            }
        }
        Cmd::Agent(a) => {
            init_tracing(false);
            report("skiff agent", agent_cmd::main(*a))
        }
        Cmd::Scheduler(s) => {
            init_tracing(false);
            report("skiff scheduler", scheduler_cmd::main(*s))
        }
        Cmd::ControllerManager(a) => {
            init_tracing(false);
            report("skiff controller-manager", controller_manager_cmd::main(*a))
        }
        Cmd::HollowNodes(a) => {
            init_tracing(false);
            report("skiff hollow-nodes", hollow_cmd::main(*a))
        }
        Cmd::Dev(a) => {
            init_tracing(false);
            report("skiff dev cluster", dev_cmd::main(a))
        }
        Cmd::Store(s) => {
            init_tracing(false);
            match store_cmd::main(s) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff store: {e:#}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

fn report(what: &str, r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            1
        }
    }
}

fn invoked_as(name: &str) -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f == name))
        .unwrap_or(false)
}

/// Logs of a long-running component: quiet by default (warnings, and the server's and
/// agent's own few lifecycle lines), more with `-v`; `SKIFF_LOG` (an env-filter spec)
/// overrides the level.
fn init_logs(flags: &LogFlags) {
    let spec = std::env::var("SKIFF_LOG").unwrap_or_else(|_| {
        match flags.verbose {
            // The server's and agent's lifecycle lines and image pulls; not the access log.
            0 => "warn,skiff=info,skiff::access=warn,skiff_kubelet::agent::images=info",
            1 => "info",
            _ => "debug,h2=info,hyper=info,tower=info,rustls=info",
        }
        .to_string()
    });
    let filter = tracing_subscriber::EnvFilter::new(spec);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if flags.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn init_tracing(debug: bool) {
    // An EnvFilter costs a noticeable fraction of a millisecond to build; container
    // start-up is measured in single milliseconds, so only pay for it when asked.
    if let Ok(spec) = std::env::var("SKIFF_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(spec))
            .with_writer(std::io::stderr)
            .without_time()
            .try_init();
        return;
    }
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
