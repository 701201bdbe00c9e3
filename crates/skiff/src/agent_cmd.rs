//! `skiff agent --server URL --token TOKEN`: the node agent (kubelet) of one node, and
//! the same agent inside `skiff server` (joining over HTTPS with the cluster token, as a
//! remote agent does).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Taint;
use skiff_kubelet::agent::AgentConfig;

/// The flags the agent shares with `skiff server`'s local agent.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentFlags {
    /// The Node's name. Default: this host's name.
    #[arg(long)]
    pub node_name: Option<String>,
    /// The Node's InternalIP, where the kubelet API listens. Default: the server's
    /// address if it is loopback, else this host's first IPv4 address.
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// The kubelet API's port (0 picks a free one; the Node reports it).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// The cgroup pods' cgroups go under (`{parent}/{qos}/pod{uid}`).
    #[arg(long, default_value = "/kubepods")]
    pub cgroup_parent: String,
    /// How many pods this node takes.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Labels for the Node: k=v,…
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Taints the Node registers with: key[=value]:Effect,…
    #[arg(long, value_delimiter = ',')]
    pub register_with_taints: Vec<String>,
    /// The cluster DNS server written into pods' resolv.conf.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: Option<IpAddr>,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Resources kept for the system: cpu=100m,memory=256Mi (allocatable = capacity − this).
    #[arg(long, value_delimiter = ',')]
    pub system_reserved: Vec<String>,
    /// The most processes a pod's container may have.
    #[arg(long)]
    pub pod_max_pids: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The API server: https://host:port.
    #[arg(long)]
    pub server: Option<String>,
    /// The cluster's join token (the server's DATA/token).
    #[arg(long, env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// The cluster CA (the server's DATA/pki/ca.crt).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Pods, containers, images and credentials of this node.
    #[arg(long, default_value = "/var/lib/skiff/agent")]
    pub data_dir: PathBuf,
    /// Stop every pod container of this data dir, unmount and remove what the agent
    /// made, then exit.
    #[arg(long)]
    pub clean: bool,
    #[command(flatten)]
    pub flags: AgentFlags,
}

fn parse_quantity(s: &str) -> Result<skiff_api::quantity::Quantity> {
    skiff_api::quantity::Quantity::parse(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))
}

fn taint(s: &str) -> Result<Taint> {
    let (kv, effect) = s
        .rsplit_once(':')
        .with_context(|| format!("--register-with-taints {s:?}: write key[=value]:Effect"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        bail!("--register-with-taints {s:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute");
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        bail!("--register-with-taints {s:?}: the key is empty");
    }
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The agent's config from its flags.
pub fn config(
    flags: &AgentFlags,
    data_dir: &Path,
    default_ip: IpAddr,
    tls: skiff_kubelet::TlsFiles,
) -> Result<AgentConfig> {
    let node_name = match &flags.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading this host's name (or give --node-name)")?
            .to_string_lossy()
            .to_lowercase(),
    };
    let mut labels = BTreeMap::new();
    for l in &flags.node_labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--node-labels {l:?}: write key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let taints = flags
        .register_with_taints
        .iter()
        .map(|t| taint(t))
        .collect::<Result<Vec<_>>>()?;
    let (mut rcpu, mut rmem) = (0, 0);
    for r in &flags.system_reserved {
        match r.split_once('=') {
            Some(("cpu", v)) => rcpu = parse_quantity(v)?.milli_value(),
            Some(("memory", v)) => rmem = parse_quantity(v)?.value(),
            _ => bail!("--system-reserved {r:?}: write cpu=100m or memory=256Mi"),
        }
    }
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    Ok(AgentConfig {
        node_name,
        data_dir: data_dir.to_path_buf(),
        node_ip: flags.node_ip.unwrap_or(default_ip),
        kubelet_port: flags.kubelet_port,
        cgroup_parent: flags.cgroup_parent.clone(),
        max_pods: flags.max_pods,
        node_labels: labels,
        taints,
        shim_command: vec![exe.into_os_string(), "container-shim".into(), "pod".into()],
        runtime_root: data_dir.join("runtime"),
        tls,
        cluster_dns: flags.cluster_dns,
        cluster_domain: flags.cluster_domain.clone(),
        cpu_milli: cpus * 1000,
        memory_bytes: mem_total(),
        system_reserved_cpu_milli: rcpu,
        system_reserved_memory: rmem,
        pod_pids_limit: flags.pod_max_pids,
        registry: skiff_image::distribution::ClientOptions::default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// A kube client that authenticates with the join token over HTTPS.
pub fn token_client(server: &str, token: &str, ca_pem: &[u8]) -> Result<kube::Client> {
    let url: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?}: write https://host:port"))?;
    let mut cfg = kube::Config::new(url);
    let ders: Vec<Vec<u8>> = rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem)
        .filter_map(|c| c.ok())
        .map(|c| c.to_vec())
        .collect();
    if ders.is_empty() {
        bail!("the cluster CA has no PEM certificate");
    }
    cfg.root_cert = Some(ders);
    cfg.auth_info.token = Some(token.to_string().into());
    kube::Client::try_from(cfg).context("building the API client")
}

pub fn main(args: AgentArgs) -> Result<()> {
    if args.clean {
        skiff_kubelet::agent::clean(&args.data_dir, &args.flags.cgroup_parent);
        for d in ["pods", "containers", "runtime"] {
            let _ = std::fs::remove_dir_all(args.data_dir.join(d));
        }
        return Ok(());
    }
    let server = args
        .server
        .clone()
        .context("--server is required: the API server's https://host:port")?;
    let token = args
        .token
        .clone()
        .context("--token is required: the cluster's join token (the server's DATA/token)")?;
    let ca_file = args
        .ca_file
        .clone()
        .context("--ca-file is required: the cluster CA (the server's DATA/pki/ca.crt)")?;
    let ca = std::fs::read(&ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    crate::server_cmd::serve_blocking(async move {
        let client = token_client(&server, &token, &ca)?;
        let _ = client;
        bail!("a standalone agent needs a serving certificate from the cluster (TLS bootstrap); not available yet: run the agent inside `skiff server`")
    })
}

use rustls::pki_types::pem::PemObject as _;
