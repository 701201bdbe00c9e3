//! `skiff dev cluster`: a real multi-node cluster on one machine with no Docker, as kind
//! makes one: a server in the host's namespace and N agents, each in its own network
//! namespace wired to a bridge this command creates (addresses from a /24 of
//! 198.18.0.0/15, the benchmarking range, that no interface of the host uses), each with
//! its own data dir and cgroup parent.
//!
//! With `--etcd` the cluster state lives in a real etcd cluster of three members (Debian's
//! `etcd`, child processes on loopback, data under `DATA/etcd/`), and `--servers N` runs N
//! servers on it (a highly available control plane, as k3s' servers on one datastore):
//! they share one CA and join token (through the store), elect one scheduler and one
//! controller manager, and every agent is given every server (its load balancer fails
//! over). `stop-server`/`start-server` kill and restart one server, as a crash does.
//!
//! Everything it made is written to `DATA/cluster.json` as soon as it is made, so
//! `skiff dev cluster down` removes all of it even after the foreground command was
//! killed; processes are only ever signalled by their recorded pid. Nodes have no default
//! route: nothing a pod sends leaves the machine.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

const DEFAULT_DIR: &str = "/var/lib/skiff/dev-cluster";

#[derive(Debug, clap::Args)]
pub struct DevCli {
    #[command(subcommand)]
    cmd: DevCmd,
}

#[derive(Debug, clap::Subcommand)]
enum DevCmd {
    /// A multi-node cluster on this machine: `skiff dev cluster --nodes 3`.
    Cluster(ClusterArgs),
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// How many nodes (agents), each in its own network namespace.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Where the cluster keeps everything (`DIR/kubeconfig.yaml` is its admin kubeconfig).
    #[arg(long, global = true, default_value = DEFAULT_DIR)]
    data_dir: PathBuf,
    /// Return once the nodes are Ready and leave the cluster running.
    #[arg(short = 'd', long)]
    detach: bool,
    /// How pods reach other nodes' pods: `host-gw` routes or a `vxlan` overlay (the
    /// agents' `--flannel-backend`).
    #[arg(long, default_value = "host-gw", value_parser = ["host-gw", "vxlan"])]
    flannel_backend: String,
    /// One more flag for the server (repeatable), as k3d's `--k3s-arg`:
    /// `--server-arg=--node-cidr-mask-size=26`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// How many servers (control planes); more than one needs `--etcd`.
    #[arg(long, default_value_t = 1)]
    servers: u32,
    /// Keep the cluster state in a real 3-member etcd cluster (Debian's `etcd`, started
    /// on loopback with its data under DIR/etcd) instead of the embedded store.
    #[arg(long)]
    etcd: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Put local images on every node (as `kind load docker-image`).
    Load {
        /// Images from the local store (SKIFF_DATA_DIR, default /var/lib/skiff).
        #[arg(required = true)]
        images: Vec<String>,
        /// The local store the images come from.
        #[arg(long, env = "SKIFF_DATA_DIR", default_value = "/var/lib/skiff")]
        images_from: PathBuf,
    },
    /// Simulate a node failure: its agent is killed and its network link cut.
    StopNode { name: String },
    /// Bring a stopped node back (link up, agent started again; it adopts its pods).
    StartNode { name: String },
    /// Restart a node's agent (killed, as by a crash, and started again; its link and
    /// pods stay up), as an agent upgrade or crash does.
    RestartNode { name: String },
    /// Simulate a server crash: kill -9 one server (`server-2` or `2`).
    StopServer { name: String },
    /// Start a stopped server again (same data dir, address and flags).
    StartServer { name: String },
    /// Remove everything the cluster made: processes, pods, namespaces, links, data.
    Down,
}

/// One `skiff server` of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServerState {
    name: String,
    data_dir: PathBuf,
    addr: SocketAddr,
    log: PathBuf,
    pid: Option<u32>,
}

/// One etcd member (with `--etcd`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EtcdMember {
    name: String,
    data_dir: PathBuf,
    client_url: String,
    peer_url: String,
    pid: Option<u32>,
}

/// How many members the etcd cluster of `--etcd` has (survives one member's loss).
const ETCD_MEMBERS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeState {
    name: String,
    netns: String,
    host_veth: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    cgroup_parent: String,
    agent_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    id: String,
    bridge: String,
    subnet: Ipv4Net,
    /// The one server of a cluster made before there could be several (read by `down`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_pid: Option<u32>,
    #[serde(default)]
    servers: Vec<ServerState>,
    /// Every server's extra flags (`--server-arg`), kept for `start-server`.
    #[serde(default)]
    server_args: Vec<String>,
    #[serde(default)]
    etcd: Vec<EtcdMember>,
    nodes: Vec<NodeState>,
    /// The agents' `--flannel-backend`.
    #[serde(default = "host_gw")]
    flannel_backend: String,
}

fn host_gw() -> String {
    "host-gw".into()
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }
    fn load(dir: &Path) -> Result<State> {
        let p = Self::path(dir);
        let b = fs::read(&p).with_context(|| {
            format!(
                "no dev cluster in {} (no {}); start one with `skiff dev cluster --data-dir {}`",
                dir.display(),
                p.display(),
                dir.display()
            )
        })?;
        serde_json::from_slice(&b).with_context(|| format!("reading {}", p.display()))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        let p = Self::path(dir);
        let tmp = p.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    }
    /// Server `name` (`server-2`) or its number (`2`).
    fn server_index(&self, name: &str) -> Result<usize> {
        let wanted = match name.parse::<usize>() {
            Ok(i) => format!("server-{i}"),
            Err(_) => name.to_string(),
        };
        self.servers
            .iter()
            .position(|s| s.name == wanted)
            .with_context(|| {
                let names: Vec<&str> = self.servers.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "no server {name:?} in this dev cluster; its servers: {} (or their numbers 1 to {})",
                    names.join(", "),
                    names.len()
                )
            })
    }
    fn node(&self, name: &str) -> Result<&NodeState> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "no node {name:?} in this dev cluster; its nodes: {}",
                names.join(", ")
            )
        })
    }
}

fn id_of(dir: &Path) -> String {
    let h = skiff_net::fnv1a(dir.to_string_lossy().as_bytes());
    format!("{:06x}", h & 0xff_ffff)
}

fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

pub fn main(cli: DevCli) -> Result<()> {
    let DevCmd::Cluster(args) = cli.cmd;
    if nix::unistd::geteuid().as_raw() != 0 {
        bail!("skiff dev cluster makes network namespaces, links and cgroups: run it as root");
    }
    let dir = if args.data_dir.is_absolute() {
        args.data_dir.clone()
    } else {
        std::env::current_dir()?.join(&args.data_dir)
    };
    match args.action {
        None => up(&dir, &args),
        Some(Action::Load {
            images,
            images_from,
        }) => load(&dir, &images, &images_from),
        Some(Action::StopNode { name }) => stop_node(&dir, &name),
        Some(Action::StartNode { name }) => start_node(&dir, &name),
        Some(Action::RestartNode { name }) => restart_node(&dir, &name),
        Some(Action::StopServer { name }) => stop_server(&dir, &name),
        Some(Action::StartServer { name }) => start_server_again(&dir, &name),
        Some(Action::Down) => down(&dir),
    }
}

/// A /24 of 198.18.0.0/15 that no interface here uses, starting from the cluster's id.
fn pick_subnet(id: &str) -> Result<Ipv4Net> {
    let rt = rt()?;
    let start = u32::from_str_radix(id, 16).unwrap_or(0) % 512;
    for i in 0..512 {
        let k = (start + i) % 512;
        let net = Ipv4Net::new(
            Ipv4Addr::new(198, 18 + (k / 256) as u8, (k % 256) as u8, 0),
            24,
        )
        .context("subnet")?;
        if !rt.block_on(skiff_net::devnet::subnet_in_use(net))? {
            return Ok(net);
        }
    }
    bail!("every /24 of 198.18.0.0/15 is in use on this machine; remove a dev cluster first")
}

fn host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

fn free_port(ip: Ipv4Addr) -> Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0)).context("find a free port")?;
    Ok(l.local_addr()?.port())
}

fn up(dir: &Path, args: &ClusterArgs) -> Result<()> {
    let (nodes, detach) = (args.nodes, args.detach);
    if !(1..=50).contains(&nodes) {
        bail!("--nodes {nodes}: give 1 to 50 nodes");
    }
    if !(1..=7).contains(&args.servers) {
        bail!("--servers {}: give 1 to 7 servers", args.servers);
    }
    if args.servers > 1 && !args.etcd {
        bail!(
            "--servers {}: several servers share the cluster state only through etcd (the embedded store belongs to one server); add --etcd",
            args.servers
        );
    }
    if State::path(dir).exists() {
        bail!(
            "a dev cluster already lives in {}: use it (KUBECONFIG={}/kubeconfig.yaml) or remove it with `skiff dev cluster down --data-dir {}`",
            dir.display(),
            dir.display(),
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let id = id_of(dir);
    let subnet = pick_subnet(&id)?;
    let mut state = State {
        id: id.clone(),
        bridge: format!("skd{id}"),
        subnet,
        server_pid: None,
        servers: Vec::new(),
        server_args: args.server_args.clone(),
        etcd: Vec::new(),
        flannel_backend: args.flannel_backend.clone(),
        nodes: (1..=nodes)
            .map(|i| NodeState {
                name: format!("skiff-node-{i}"),
                netns: format!("skiff-{id}-n{i}"),
                host_veth: format!("skd{id}n{i}"),
                ip: host(subnet, i + 1),
                data_dir: dir.join("nodes").join(format!("skiff-node-{i}")),
                cgroup_parent: format!("/skiff-dev-{id}/node-{i}"),
                agent_pid: None,
            })
            .collect(),
    };
    state.save(dir)?;
    let result = (|| -> Result<()> {
        let gateway = host(subnet, 1);
        let rt = rt()?;
        rt.block_on(skiff_net::devnet::ensure_host_bridge(
            &state.bridge,
            gateway,
            subnet,
        ))?;
        for n in &state.nodes {
            let ns = rt.block_on(skiff_net::devnet::create_netns(&n.netns))?;
            rt.block_on(skiff_net::devnet::plumb_node(
                &state.bridge,
                &n.host_veth,
                &ns,
                n.ip,
                subnet.prefix_len(),
            ))?;
        }
        if args.etcd {
            start_etcd(dir, &mut state)?;
        }
        // The servers, on the bridge's address (reached by the nodes and by kubectl
        // here), all started at once: the first to store the cluster's CA wins, the
        // others take it.
        for i in 0..args.servers as usize {
            let addr = SocketAddr::from((gateway, free_port(gateway)?));
            // The first server keeps the layout of a one-server cluster.
            let (name, data_dir, log) = match i {
                0 => (
                    "server-1".to_string(),
                    dir.join("server"),
                    dir.join("server.log"),
                ),
                _ => (
                    format!("server-{}", i + 1),
                    dir.join(format!("server-{}", i + 1)),
                    dir.join(format!("server-{}.log", i + 1)),
                ),
            };
            state.servers.push(ServerState {
                name,
                data_dir,
                addr,
                log,
                pid: None,
            });
            let pid = start_server(&state, i)?;
            state.servers[i].pid = Some(pid);
            state.save(dir)?;
        }
        for srv in &state.servers {
            wait_server(srv)?;
            fs::copy(
                srv.data_dir.join("kubeconfig.yaml"),
                dir.join(format!("kubeconfig-{}.yaml", srv.name)),
            )?;
        }
        fs::copy(
            state.servers[0].data_dir.join("kubeconfig.yaml"),
            dir.join("kubeconfig.yaml"),
        )?;
        for i in 0..state.nodes.len() {
            let pid = start_agent(&state, &state.nodes[i])?;
            state.nodes[i].agent_pid = Some(pid);
            state.save(dir)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = down(dir);
        return Err(e);
    }
    eprintln!(
        "skiff dev cluster: {} node(s) starting; export KUBECONFIG={}/kubeconfig.yaml",
        state.nodes.len(),
        dir.display()
    );
    if state.servers.len() > 1 {
        for srv in &state.servers {
            eprintln!(
                "skiff dev cluster: {} on https://{} (kubeconfig {}/kubeconfig-{}.yaml)",
                srv.name,
                srv.addr,
                dir.display(),
                srv.name
            );
        }
    }
    if detach {
        wait_ready(dir, state.nodes.len())?;
        return Ok(());
    }
    let state_file = State::path(dir);
    let removed = crate::server_cmd::serve_blocking(async move {
        let signal = crate::server_cmd::shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => return Ok(false),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // The first agents and the server are our children: reap those that exited
            // (a stopped node's agent).
            while let Ok(s) =
                nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
            {
                if s == nix::sys::wait::WaitStatus::StillAlive {
                    break;
                }
            }
            if !state_file.exists() {
                return Ok(true);
            }
        }
    })?;
    if removed {
        eprintln!("skiff dev cluster: removed by `skiff dev cluster down`");
        return Ok(());
    }
    eprintln!("skiff dev cluster: stopping");
    down(dir)
}

/// Starts the etcd members of `--etcd` on free loopback ports, each pid recorded in
/// cluster.json as soon as it runs, and waits until the cluster has a leader.
fn start_etcd(dir: &Path, state: &mut State) -> Result<()> {
    let lo = Ipv4Addr::LOCALHOST;
    // Every port is held until all are picked, so no two members get the same one.
    let held: Vec<std::net::TcpListener> = (0..2 * ETCD_MEMBERS)
        .map(|_| std::net::TcpListener::bind((lo, 0)))
        .collect::<std::io::Result<_>>()
        .context("find free loopback ports for etcd")?;
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    drop(held);
    state.etcd = (0..ETCD_MEMBERS)
        .map(|i| EtcdMember {
            name: format!("etcd-{}", i + 1),
            data_dir: dir.join("etcd").join(format!("etcd-{}", i + 1)),
            client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
            peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
            pid: None,
        })
        .collect();
    let initial: Vec<String> = state
        .etcd
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect();
    let initial = initial.join(",");
    for i in 0..state.etcd.len() {
        let m = state.etcd[i].clone();
        fs::create_dir_all(&m.data_dir)?;
        let log = fs::File::create(dir.join("etcd").join(format!("{}.log", m.name)))?;
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &initial])
            .args([
                "--initial-cluster-token",
                &format!("skiff-dev-{}", state.id),
            ])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .context("start etcd (install Debian's etcd-server: apt-get install etcd-server)")?;
        state.etcd[i].pid = Some(child.id());
        state.save(dir)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in &state.etcd {
        let addr: SocketAddr = m
            .client_url
            .trim_start_matches("http://")
            .parse()
            .context("etcd client address")?;
        while !etcd_healthy(addr) {
            if Instant::now() > deadline {
                bail!(
                    "etcd member {} was not healthy on {} in 60 s; see {}/etcd/{}.log",
                    m.name,
                    m.client_url,
                    dir.display(),
                    m.name
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Whether the etcd member at `addr` answers `/health` with a leader (plain HTTP on
/// loopback).
fn etcd_healthy(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    if c.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = c.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// Starts server `i` of `state` (its own data dir and port, `--disable-agent`, on etcd
/// with `--etcd`); returns its pid.
fn start_server(state: &State, i: usize) -> Result<u32> {
    let srv = &state.servers[i];
    fs::create_dir_all(&srv.data_dir)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&srv.log)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&srv.data_dir)
        .args([
            "--listen",
            &srv.addr.to_string(),
            "--disable-agent",
            "--disable-registry",
        ])
        .args(["--tls-san", &srv.addr.ip().to_string()]);
    if !state.etcd.is_empty() {
        let endpoints: Vec<&str> = state.etcd.iter().map(|m| m.client_url.as_str()).collect();
        cmd.args(["--datastore-endpoint", &endpoints.join(",")]);
    }
    cmd.args(&state.server_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: Ctrl-C in the terminal reaches only this command, which then
    // stops everything in order.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().with_context(|| format!("start {}", srv.name))?;
    Ok(child.id())
}

/// Waits until server `srv` wrote its credentials and kubeconfig.
fn wait_server(srv: &ServerState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let dir = &srv.data_dir;
    while !(dir.join("token").exists()
        && dir.join("pki/ca.crt").exists()
        && dir.join("kubeconfig.yaml").exists())
    {
        let exited = srv.pid.is_some_and(|p| !alive(p));
        if exited || Instant::now() > deadline {
            let log = fs::read_to_string(&srv.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "{} did not start{}; the end of its log ({}):\n{}",
                srv.name,
                if exited { "" } else { " in 60 s" },
                srv.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn stop_server(dir: &Path, name: &str) -> Result<()> {
    let mut state = State::load(dir)?;
    let i = state.server_index(name)?;
    let srv = state.servers[i].clone();
    if let Some(pid) = srv.pid {
        stop_pid(
            pid,
            &srv.data_dir.to_string_lossy(),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    state.servers[i].pid = None;
    state.save(dir)?;
    eprintln!(
        "skiff dev cluster: {} killed (kill -9, as a crash)",
        srv.name
    );
    Ok(())
}

fn start_server_again(dir: &Path, name: &str) -> Result<()> {
    let mut state = State::load(dir)?;
    let i = state.server_index(name)?;
    let srv = state.servers[i].clone();
    if srv
        .pid
        .is_some_and(|p| ours(p, &srv.data_dir.to_string_lossy()))
    {
        bail!("{} is running already", srv.name);
    }
    let pid = start_server(&state, i)?;
    state.servers[i].pid = Some(pid);
    state.save(dir)?;
    eprintln!(
        "skiff dev cluster: {} started on https://{}",
        srv.name, srv.addr
    );
    Ok(())
}

/// Waits until `n` nodes are Ready (kubectl's view, through the admin kubeconfig).
fn wait_ready(dir: &Path, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig.yaml"))
            .args(["get", "nodes", "--no-headers"])
            .output();
        if let Ok(o) = out {
            let ready = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                .count();
            if ready >= n {
                eprintln!("skiff dev cluster: {ready} node(s) Ready");
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the nodes were not Ready in 120 s; see {}/nodes/*/agent.log",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn start_agent(state: &State, n: &NodeState) -> Result<u32> {
    let first = state
        .servers
        .first()
        .context("the cluster has no server yet")?;
    let server_dir = &first.data_dir;
    let token = fs::read_to_string(server_dir.join("token"))?;
    // Every server, in one order: the agent's load balancer fails over along it.
    let servers: Vec<String> = state
        .servers
        .iter()
        .map(|s| format!("https://{}", s.addr))
        .collect();
    fs::create_dir_all(&n.data_dir)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(n.data_dir.join("agent.log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("agent")
        .args(["--server", &servers.join(",")])
        .arg("--ca-file")
        .arg(server_dir.join("pki/ca.crt"))
        .arg("--data-dir")
        .arg(&n.data_dir)
        .args(["--node-name", &n.name])
        .args(["--node-ip", &n.ip.to_string()])
        .args(["--cgroup-parent", &n.cgroup_parent])
        .args(["--flannel-backend", &state.flannel_backend])
        // As kind's nodes: all share this machine's disk, so no disk-pressure eviction
        // or image GC (a developer's full disk must not evict the cluster's pods).
        .args(["--eviction-hard", "", "--image-gc-high-threshold", "100"])
        .env("SKIFF_TOKEN", token.trim())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let ns = skiff_net::netlink::named_netns(&n.netns);
    let child = skiff_net::devnet::spawn_in_netns(&mut cmd, &ns)?;
    Ok(child.id())
}

/// Whether `pid` is a skiff (or etcd) process whose command line mentions `needle` (so a
/// reused pid of someone else's process is never signalled).
fn ours(pid: u32, needle: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let s = String::from_utf8_lossy(&c);
            let exe = s.split('\0').next().unwrap_or_default();
            (s.contains("skiff") || exe.ends_with("etcd")) && s.contains(needle)
        })
        .unwrap_or(false)
}

/// Whether process `pid` (a child just started) still runs: not gone, not a zombie. Its
/// command line cannot tell: right after exec it may still be empty.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(!matches!(state, 'Z' | 'X'))
        })
        .unwrap_or(false)
}

/// Signals every `(pid, needle)` at once, then waits for all (SIGKILL after 20 s).
fn stop_pids(procs: &[(u32, String)], signal: nix::sys::signal::Signal) {
    let alive: Vec<&(u32, String)> = procs.iter().filter(|(p, n)| ours(*p, n)).collect();
    for (pid, _) in &alive {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), signal);
    }
    for (pid, needle) in alive {
        stop_pid(*pid, needle, signal);
    }
}

fn stop_pid(pid: u32, needle: &str, signal: nix::sys::signal::Signal) {
    if !ours(pid, needle) {
        return;
    }
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(p, signal);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ours(pid, needle) && Instant::now() < deadline {
        // Reap it if it is our child (the foreground command started it).
        let _ = nix::sys::wait::waitpid(p, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(50));
    }
    if ours(pid, needle) {
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(p, None);
    }
}

fn stop_node(dir: &Path, name: &str) -> Result<()> {
    let mut state = State::load(dir)?;
    let n = state.node(name)?.clone();
    kill_agent(&n);
    rt()?.block_on(skiff_net::devnet::set_link(&n.host_veth, false))?;
    if let Some(s) = state.nodes.iter_mut().find(|x| x.name == name) {
        s.agent_pid = None;
    }
    state.save(dir)?;
    eprintln!("skiff dev cluster: node {name} stopped (agent killed, link down)");
    Ok(())
}

fn start_node(dir: &Path, name: &str) -> Result<()> {
    let mut state = State::load(dir)?;
    let n = state.node(name)?.clone();
    if n.agent_pid
        .is_some_and(|p| ours(p, &n.data_dir.to_string_lossy()))
    {
        bail!("node {name} is running already");
    }
    rt()?.block_on(skiff_net::devnet::set_link(&n.host_veth, true))?;
    let pid = start_agent(&state, &n)?;
    if let Some(s) = state.nodes.iter_mut().find(|x| x.name == name) {
        s.agent_pid = Some(pid);
    }
    state.save(dir)?;
    eprintln!("skiff dev cluster: node {name} started");
    Ok(())
}

/// Kills node `n`'s agent, if it runs.
fn kill_agent(n: &NodeState) {
    if let Some(pid) = n.agent_pid {
        stop_pid(
            pid,
            &n.data_dir.to_string_lossy(),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn restart_node(dir: &Path, name: &str) -> Result<()> {
    let mut state = State::load(dir)?;
    let n = state.node(name)?.clone();
    kill_agent(&n);
    let pid = start_agent(&state, &n)?;
    if let Some(s) = state.nodes.iter_mut().find(|x| x.name == name) {
        s.agent_pid = Some(pid);
    }
    state.save(dir)?;
    eprintln!("skiff dev cluster: node {name}'s agent restarted");
    Ok(())
}

fn load(dir: &Path, images: &[String], from: &Path) -> Result<()> {
    let state = State::load(dir)?;
    let src = skiff_image::ImageStore::open(from)
        .with_context(|| format!("open the image store in {}", from.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("skiff-dev-load-")
        .tempdir_in(dir)?;
    let archive = tmp.path().join("images.tar");
    skiff_image::archive::save(&src, images, &archive)
        .with_context(|| format!("reading {} from {}", images.join(" "), from.display()))?;
    for n in &state.nodes {
        let store = skiff_image::ImageStore::open(&n.data_dir)?;
        skiff_image::archive::load(&store, &archive)
            .with_context(|| format!("loading images on node {}", n.name))?;
        eprintln!(
            "skiff dev cluster: {} loaded on {}",
            images.join(" "),
            n.name
        );
    }
    Ok(())
}

/// Removes the (empty) cgroup tree `name` under the cgroup root and under every v1
/// hierarchy, children first.
fn remove_cgroups(name: &str) {
    fn rm_tree(p: &Path) {
        if let Ok(d) = fs::read_dir(p) {
            for e in d.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm_tree(&e.path());
                }
            }
        }
        let _ = fs::remove_dir(p);
    }
    let root = Path::new("/sys/fs/cgroup");
    rm_tree(&root.join(name));
    if let Ok(d) = fs::read_dir(root) {
        for e in d.flatten() {
            let p = e.path().join(name);
            if p.is_dir() {
                rm_tree(&p);
            }
        }
    }
}

/// Removes everything the cluster made; what is gone already is skipped.
fn down(dir: &Path) -> Result<()> {
    let state = match State::load(dir) {
        Ok(s) => s,
        Err(e) => {
            if dir.join("cluster.json").exists() {
                return Err(e);
            }
            eprintln!("skiff dev cluster: nothing to remove in {}", dir.display());
            return Ok(());
        }
    };
    let exe = std::env::current_exe()?;
    for n in &state.nodes {
        if let Some(pid) = n.agent_pid {
            stop_pid(
                pid,
                &n.data_dir.to_string_lossy(),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let mut servers: Vec<(u32, String)> = state
        .servers
        .iter()
        .filter_map(|s| Some((s.pid?, s.data_dir.to_string_lossy().into_owned())))
        .collect();
    if let Some(pid) = state.server_pid {
        servers.push((pid, dir.join("server").to_string_lossy().into_owned()));
    }
    stop_pids(&servers, nix::sys::signal::Signal::SIGTERM);
    // The store goes last: the servers stop (and release their Leases) through it.
    let etcd: Vec<(u32, String)> = state
        .etcd
        .iter()
        .filter_map(|m| Some((m.pid?, m.data_dir.to_string_lossy().into_owned())))
        .collect();
    stop_pids(&etcd, nix::sys::signal::Signal::SIGTERM);
    let rt = rt()?;
    for n in &state.nodes {
        // The agent's own clean, inside the node's namespace: pods stopped, mounts,
        // cgroups, the pod bridge, routes and nft tables removed.
        let ns = skiff_net::netlink::named_netns(&n.netns);
        if ns.exists() && n.data_dir.exists() {
            let mut cmd = Command::new(&exe);
            cmd.args([
                "agent",
                "--clean",
                "--cgroup-parent",
                &n.cgroup_parent,
                "--data-dir",
            ])
            .arg(&n.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            if let Ok(mut c) = skiff_net::devnet::spawn_in_netns(&mut cmd, &ns) {
                let _ = c.wait();
            }
        }
        let _ = rt.block_on(skiff_net::devnet::delete_link(&n.host_veth));
        skiff_net::devnet::delete_netns(&n.netns);
    }
    let _ = rt.block_on(skiff_net::devnet::delete_link(&state.bridge));
    remove_cgroups(&format!("skiff-dev-{}", state.id));
    fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    eprintln!("skiff dev cluster: removed");
    Ok(())
}
