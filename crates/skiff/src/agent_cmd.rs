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
    /// Namespaced sysctls pods may set besides Kubernetes' safe set: names or groups
    /// ending in `*`, e.g. `kernel.msg*,net.core.somaxconn`.
    #[arg(long, value_delimiter = ',')]
    pub allowed_unsafe_sysctls: Vec<String>,
    /// A container's log is rotated before it grows past this size (a quantity: 10Mi).
    #[arg(long, default_value = "10Mi")]
    pub container_log_max_size: String,
    /// Log files kept per container, the current one included (at least 2).
    #[arg(long, default_value_t = 5)]
    pub container_log_max_files: i64,
    /// Percent of the image filesystem in use at which unused images are deleted
    /// (100: never).
    #[arg(long, default_value_t = 85)]
    pub image_gc_high_threshold: i64,
    /// Percent of the image filesystem image garbage collection frees down to.
    #[arg(long, default_value_t = 80)]
    pub image_gc_low_threshold: i64,
    /// Images first seen more recently than this are never collected.
    #[arg(long, default_value = "2m", value_parser = crate::server_cmd::parse_duration)]
    pub minimum_image_ttl_duration: std::time::Duration,
    /// How often image garbage collection looks at the disk.
    #[arg(long, default_value = "5m", value_parser = crate::server_cmd::parse_duration)]
    pub image_gc_period: std::time::Duration,
    /// Thresholds that evict pods at once: signal<quantity or signal<percent%, comma
    /// separated ("" for none). Signals: memory.available, nodefs.available,
    /// nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available.
    #[arg(long, default_value = skiff_kubelet::agent::eviction::DEFAULT_HARD)]
    pub eviction_hard: String,
    /// Thresholds that evict pods once met for their grace period.
    #[arg(long, default_value = "")]
    pub eviction_soft: String,
    /// Grace periods of the soft thresholds: signal=duration,… (memory.available=1m30s).
    #[arg(long, default_value = "")]
    pub eviction_soft_grace_period: String,
    /// The most grace (seconds) a pod evicted by a soft threshold gets (0: its own).
    #[arg(long, default_value_t = 0)]
    pub eviction_max_pod_grace_period: i64,
    /// How long a pressure condition stays True after its thresholds stop being met.
    #[arg(long, default_value = "5m", value_parser = crate::server_cmd::parse_duration)]
    pub eviction_pressure_transition_period: std::time::Duration,
    /// How often the eviction manager observes the node's signals.
    #[arg(long, default_value = "10s", value_parser = crate::server_cmd::parse_duration)]
    pub eviction_monitoring_period: std::time::Duration,
    /// Pods get only loopback: no pod network, service proxy or cluster DNS on this node.
    #[arg(long)]
    pub disable_pod_network: bool,
    /// The bridge pods hang off (one per node; several agents on one machine each run in
    /// their own network namespace, or take different names).
    #[arg(long, default_value = "skiff0")]
    pub bridge_name: String,
    /// The prefix of skiff's nft tables (`<prefix>-net`, `<prefix>-proxy`).
    #[arg(long, default_value = "skiff")]
    pub nft_table_prefix: String,
    /// No service proxy on this node (Services are not reachable from its pods).
    #[arg(long)]
    pub disable_kube_proxy: bool,
    /// Where the service proxy serves /healthz and /metrics (as kube-proxy's
    /// --metrics-bind-address); empty for nowhere.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub kube_proxy_metrics_bind_address: String,
    /// No node-local cluster DNS on this node (pods' resolv.conf still names
    /// --cluster-dns).
    #[arg(long)]
    pub disable_cluster_dns: bool,
    /// The pods' MTU. Default: the MTU of the interface with the node's address (less
    /// 50 bytes with VXLAN).
    #[arg(long)]
    pub pod_mtu: Option<u32>,
    /// How pods reach other nodes' pods (k3s' flag): `host-gw` routes each node's pod
    /// CIDR via its InternalIP (nodes on one L2 segment); `vxlan` carries the traffic in
    /// a VXLAN overlay (UDP 8472, VNI 1) for nodes that share no L2 segment. Every node
    /// of a cluster must use the same.
    #[arg(long, default_value = "host-gw", value_parser = ["host-gw", "vxlan"])]
    pub flannel_backend: String,
    /// The VXLAN device with `--flannel-backend vxlan`.
    #[arg(long, default_value = "skiff.vxlan")]
    pub vxlan_device: String,
}

/// The cluster's address ranges as an agent needs them.
#[derive(Debug, Clone, Copy)]
pub struct ClusterRanges {
    pub cluster_cidr: ipnet::Ipv4Net,
    pub service_cidr: ipnet::Ipv4Net,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The API server: https://host:port. Several (comma-separated or repeated) for a
    /// highly available control plane: the agent then forwards its connections through a
    /// load balancer on 127.0.0.1 to one live server, moving to the next when it fails.
    #[arg(long, value_delimiter = ',')]
    pub server: Vec<String>,
    /// How long the load balancer waits for a server to accept a connection before it
    /// tries the next one (with several --server).
    #[arg(long, default_value = "2s", value_parser = crate::server_cmd::parse_duration)]
    pub lb_connect_timeout: std::time::Duration,
    /// The cluster's join token (the server's DATA/token).
    #[arg(long, env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// The cluster CA (the server's DATA/pki/ca.crt). Without it the CA is fetched from
    /// the server's /cacerts (checked against --ca-cert-hash when given).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// `sha256:<hex>` of the cluster CA's PEM, to check a fetched CA against.
    #[arg(long)]
    pub ca_cert_hash: Option<String>,
    /// Pods, containers, images and credentials of this node.
    #[arg(long, default_value = "/var/lib/skiff/agent")]
    pub data_dir: PathBuf,
    /// Stop every pod container of this data dir, unmount and remove what the agent
    /// made, then exit.
    #[arg(long)]
    pub clean: bool,
    /// The cluster's pod range (the server's --cluster-cidr).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The cluster's Service range (the server's --service-cluster-ip-range).
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: ipnet::Ipv4Net,
    #[command(flatten)]
    pub flags: AgentFlags,
}

fn proxy_metrics_addr(flags: &AgentFlags) -> Result<Option<std::net::SocketAddr>> {
    let s = &flags.kube_proxy_metrics_bind_address;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        anyhow::anyhow!(
            "--kube-proxy-metrics-bind-address {s:?}: write host:port, e.g. 127.0.0.1:10249, or \"\" for none"
        )
    })
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

/// The container log rotation of `--container-log-max-size` and `--container-log-max-files`.
fn log_rotation(flags: &AgentFlags) -> Result<skiff_container::log::Rotation> {
    let size = &flags.container_log_max_size;
    let q = skiff_api::quantity::Quantity::parse(size).map_err(|_| {
        anyhow::anyhow!(
            "--container-log-max-size {size:?}: not a quantity; write e.g. 10Mi or 500Ki"
        )
    })?;
    if q.value() <= 0 {
        bail!("--container-log-max-size {size:?}: the size must be more than 0 (e.g. 10Mi)");
    }
    let files = flags.container_log_max_files;
    if files < 2 {
        bail!("--container-log-max-files {files}: keep at least 2 files (the current one and a rotated one)");
    }
    Ok(skiff_container::log::Rotation {
        max_size: q.value() as u64,
        max_files: u32::try_from(files).unwrap_or(u32::MAX),
    })
}

/// The image GC policy of the `--image-gc-*` flags.
fn image_gc(flags: &AgentFlags) -> Result<skiff_kubelet::agent::imagegc::ImageGcPolicy> {
    let pct = |name: &str, v: i64| -> Result<u8> {
        u8::try_from(v)
            .ok()
            .filter(|p| *p <= 100)
            .with_context(|| format!("--{name} {v}: write a percentage from 0 to 100"))
    };
    let p = skiff_kubelet::agent::imagegc::ImageGcPolicy {
        high: pct("image-gc-high-threshold", flags.image_gc_high_threshold)?,
        low: pct("image-gc-low-threshold", flags.image_gc_low_threshold)?,
        min_age: flags.minimum_image_ttl_duration,
        period: flags
            .image_gc_period
            .max(std::time::Duration::from_millis(100)),
    };
    p.validate().map_err(anyhow::Error::msg)?;
    Ok(p)
}

/// The eviction manager's config of the `--eviction-*` flags.
fn eviction(flags: &AgentFlags) -> Result<skiff_kubelet::agent::eviction::EvictionConfig> {
    use skiff_kubelet::agent::eviction::{parse_thresholds, with_grace, EvictionConfig};
    let hard = parse_thresholds(&flags.eviction_hard).context("--eviction-hard")?;
    let soft = parse_thresholds(&flags.eviction_soft).context("--eviction-soft")?;
    let mut graces = BTreeMap::new();
    for pair in flags
        .eviction_soft_grace_period
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (sig, d) = pair.split_once('=').with_context(|| {
            format!("--eviction-soft-grace-period {pair:?}: write signal=duration, e.g. memory.available=1m30s")
        })?;
        let d = crate::server_cmd::parse_duration(d.trim())
            .map_err(|e| anyhow::anyhow!("--eviction-soft-grace-period {pair:?}: {e}"))?;
        graces.insert(sig.trim().to_string(), d);
    }
    let soft = with_grace(soft, &graces).context("--eviction-soft")?;
    if flags.eviction_max_pod_grace_period < 0 {
        bail!(
            "--eviction-max-pod-grace-period {}: write a number of seconds, 0 or more",
            flags.eviction_max_pod_grace_period
        );
    }
    Ok(EvictionConfig {
        hard,
        soft,
        max_pod_grace_period: std::time::Duration::from_secs(
            flags.eviction_max_pod_grace_period as u64,
        ),
        pressure_transition_period: flags.eviction_pressure_transition_period,
        monitoring_period: flags
            .eviction_monitoring_period
            .max(std::time::Duration::from_millis(100)),
    })
}

/// Checks the housekeeping flags (before anything starts).
pub fn validate(flags: &AgentFlags) -> Result<()> {
    log_rotation(flags)?;
    image_gc(flags)?;
    eviction(flags)?;
    proxy_metrics_addr(flags)?;
    Ok(())
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

/// The agent's config from its flags (its TLS files are the bootstrap's).
pub fn config(
    flags: &AgentFlags,
    data_dir: &Path,
    default_ip: IpAddr,
    ranges: ClusterRanges,
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
    // NodeRestriction would refuse the registration: say so before starting, as the
    // kubelet does.
    if let Some(e) =
        skiff_api::node_authz::restriction::node_labels_error(labels.keys().map(String::as_str))
    {
        bail!(e);
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
    skiff_kubelet::agent::security::validate_patterns(&flags.allowed_unsafe_sysctls)
        .map_err(|e| anyhow::anyhow!("--allowed-unsafe-sysctls: {e}"))?;
    let rotation = log_rotation(flags)?;
    proxy_metrics_addr(flags)?;
    let image_gc = image_gc(flags)?;
    let eviction = eviction(flags)?;
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    let node_ip = flags.node_ip.unwrap_or(default_ip);
    let network =
        (!flags.disable_pod_network).then(|| network(&node_name, flags, data_dir, node_ip, ranges));
    Ok(AgentConfig {
        network,
        node_name,
        data_dir: data_dir.to_path_buf(),
        node_ip,
        kubelet_port: flags.kubelet_port,
        cgroup_parent: flags.cgroup_parent.clone(),
        max_pods: flags.max_pods,
        node_labels: labels,
        taints,
        shim_command: vec![
            exe.into_os_string(),
            "container-shim".into(),
            "pod".into(),
            "--log-max-size".into(),
            rotation.max_size.to_string().into(),
            "--log-max-files".into(),
            rotation.max_files.to_string().into(),
        ],
        runtime_root: data_dir.join("runtime"),
        tls: skiff_kubelet::TlsFiles {
            cert: data_dir.join("pki/kubelet-serving.crt"),
            key: data_dir.join("pki/kubelet-serving.key"),
            client_ca: Some(data_dir.join("pki/ca.crt")),
        },
        cluster_dns: flags.cluster_dns,
        cluster_domain: flags.cluster_domain.clone(),
        cpu_milli: cpus * 1000,
        memory_bytes: mem_total(),
        system_reserved_cpu_milli: rcpu,
        system_reserved_memory: rmem,
        pod_pids_limit: flags.pod_max_pids,
        allowed_unsafe_sysctls: flags.allowed_unsafe_sysctls.clone(),
        registry: skiff_image::distribution::ClientOptions::default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        container_log: Some(rotation),
        image_gc,
        eviction,
    })
}

/// The pod network's config of the agent's flags.
pub fn pod_network(
    flags: &AgentFlags,
    data_dir: &Path,
    node_ip: IpAddr,
    ranges: ClusterRanges,
) -> skiff_net::pod::PodNetConfig {
    skiff_net::pod::PodNetConfig {
        bridge: flags.bridge_name.clone(),
        table: format!("{}-net", flags.nft_table_prefix),
        cluster_cidr: ranges.cluster_cidr,
        service_cidr: ranges.service_cidr,
        dns_ip: match flags.cluster_dns {
            Some(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        },
        state_dir: data_dir.join("net"),
        node_ip,
        mtu: flags.pod_mtu,
        vxlan: (flags.flannel_backend == "vxlan").then(|| skiff_net::pod::Vxlan {
            device: flags.vxlan_device.clone(),
            vni: skiff_net::pod::DEFAULT_VXLAN_VNI,
            port: skiff_net::pod::DEFAULT_VXLAN_PORT,
        }),
    }
}

fn network(
    node_name: &str,
    flags: &AgentFlags,
    data_dir: &Path,
    node_ip: IpAddr,
    ranges: ClusterRanges,
) -> skiff_kubelet::agent::network::NetworkConfig {
    let dns = match (flags.disable_cluster_dns, flags.cluster_dns) {
        (false, Some(ip)) => Some(skiff_net::dns::DnsConfig {
            listen: vec![std::net::SocketAddr::new(ip, 53)],
            domain: flags.cluster_domain.clone(),
            // Names outside the cluster go to this node's own resolvers.
            upstreams: skiff_net::dns::upstreams_from_resolv_conf(Path::new("/etc/resolv.conf"))
                .unwrap_or_default(),
            cluster_cidr: ipnet::IpNet::V4(ranges.cluster_cidr),
            service_cidr: ipnet::IpNet::V4(ranges.service_cidr),
            ..Default::default()
        }),
        _ => None,
    };
    let proxy = (!flags.disable_kube_proxy).then(|| {
        let mut p = skiff_net::proxy::ProxyConfig::new(node_name, vec![node_ip]);
        p.table = format!("{}-proxy", flags.nft_table_prefix);
        p.cluster_cidr = ipnet::IpNet::V4(ranges.cluster_cidr);
        p.service_cidr = ipnet::IpNet::V4(ranges.service_cidr);
        p.pod_bridge = flags.bridge_name.clone();
        // The node-local DNS answers on the DNS Service's IP itself.
        p.skip_cluster_ips = dns
            .as_ref()
            .map(|d| d.listen.iter().map(|a| a.ip()).collect())
            .unwrap_or_default();
        p.metrics_addr = proxy_metrics_addr(flags).ok().flatten();
        p.state_file = Some(data_dir.join("net/proxy.fingerprint"));
        p
    });
    skiff_kubelet::agent::network::NetworkConfig {
        pods: skiff_net::pod::PodNetwork::new(pod_network(flags, data_dir, node_ip, ranges)),
        dns,
        proxy,
    }
}

/// Removes the node's pod network (bridge, routes, nft tables): `--clean`.
pub fn clean_network(flags: &AgentFlags, data_dir: &Path, ranges: ClusterRanges) {
    let cfg = pod_network(
        flags,
        data_dir,
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        ranges,
    );
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    for p in rt.block_on(skiff_net::pod::clean(&cfg)) {
        eprintln!("skiff: removing the pod network: {p}");
    }
    let proxy_table = format!("{}-proxy", flags.nft_table_prefix);
    if let Err(e) = rt.block_on(skiff_net::proxy::clean(&proxy_table)) {
        eprintln!("skiff: removing the service proxy's table {proxy_table}: {e}");
    }
}

/// The join was refused for good: a wrong token or CA (as opposed to a server not up yet).
fn refused(e: &anyhow::Error) -> bool {
    use skiff_kubelet::bootstrap::BootstrapError as B;
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<B>(),
            Some(
                B::TokenRefused { .. }
                    | B::CaHashMismatch { .. }
                    | B::BadCaHash { .. }
                    | B::BadCa { .. }
            )
        )
    })
}

/// Joins the cluster (TLS bootstrap with the token: the node's client and serving
/// certificates through CSRs, reused on later starts and renewed before they expire),
/// then runs the agent until `stop`; a failed agent is started again after 5 s.
pub async fn run_joined(
    server: String,
    token: String,
    ca: skiff_kubelet::bootstrap::CaSource,
    cfg: AgentConfig,
    stop: skiff_serve::CancellationToken,
) -> Result<()> {
    use skiff_kubelet::bootstrap;
    let mut opts = bootstrap::BootstrapOptions::new(&server, &token, &cfg.node_name, &cfg.data_dir);
    opts.ca = ca;
    opts.serving_ips = vec![cfg.node_ip];
    let (renewed_tx, mut renewed) = tokio::sync::watch::channel(0u64);
    let mut renewed_tx = Some(renewed_tx);
    loop {
        // A renewed certificate restarts the agent in place (it adopts its running pods):
        // its API client and kubelet API then use the new pair.
        let this_run = stop.child_token();
        let run = async {
            let creds = bootstrap::ensure(&opts).await?;
            if let Some(tx) = renewed_tx.take() {
                tokio::spawn(bootstrap::renew_loop(
                    opts.clone(),
                    creds.clone(),
                    stop.clone(),
                    tx,
                ));
            }
            let client = bootstrap::client(&creds)?;
            let mut cfg = cfg.clone();
            cfg.tls = skiff_kubelet::TlsFiles {
                cert: creds.serving_cert.clone(),
                key: creds.serving_key.clone(),
                client_ca: Some(creds.ca_cert.clone()),
            };
            skiff_kubelet::agent::run(client, cfg, this_run.clone()).await?;
            anyhow::Ok(())
        };
        let watch_renewal = {
            let this_run = this_run.clone();
            renewed.mark_unchanged();
            let mut renewed = renewed.clone();
            tokio::spawn(async move {
                if renewed.changed().await.is_ok() {
                    this_run.cancel();
                }
            })
        };
        let result = run.await;
        watch_renewal.abort();
        match result {
            Ok(()) if stop.is_cancelled() => return Ok(()),
            Ok(()) => {
                eprintln!("skiff agent: certificates renewed; the agent starts again with them");
                continue;
            }
            Err(e) if refused(&e) => {
                // Trying again cannot help: the token or the CA is wrong.
                tracing::error!("{e:#}");
                return Err(e);
            }
            Err(e) => tracing::error!("{e:#}; starting again in 5 s"),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

pub fn main(args: AgentArgs) -> Result<()> {
    let ranges = ClusterRanges {
        cluster_cidr: args.cluster_cidr,
        service_cidr: args.service_cidr,
    };
    if args.clean {
        skiff_kubelet::agent::clean(&args.data_dir, &args.flags.cgroup_parent);
        clean_network(&args.flags, &args.data_dir, ranges);
        for d in ["pods", "containers", "runtime"] {
            let _ = std::fs::remove_dir_all(args.data_dir.join(d));
        }
        return Ok(());
    }
    crate::preflight::require_root("skiff agent", "")?;
    crate::preflight::kernel_features()?;
    // A restarted agent may find its predecessor still exiting (its port still bound).
    let _lock = crate::preflight::DataDirLock::acquire_within(
        &args.data_dir,
        "agent",
        std::time::Duration::from_secs(5),
    )?;
    crate::preflight::kubelet_port_free(&args.flags)?;
    let servers: Vec<String> = args
        .server
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        bail!("--server is required: the API server's https://host:port (several comma-separated for a highly available control plane)");
    }
    for s in &servers {
        skiff_kubelet::balancer::server_addr(s)?;
    }
    let token = args
        .token
        .clone()
        .context("--token is required: the cluster's join token (the server's DATA/token)")?;
    let ca = match (&args.ca_file, &args.ca_cert_hash) {
        (Some(f), _) => skiff_kubelet::bootstrap::CaSource::File(f.clone()),
        (None, h) => skiff_kubelet::bootstrap::CaSource::FetchWithHash(h.clone()),
    };
    let first = &servers[0];
    let url: http::Uri = first
        .parse()
        .with_context(|| format!("--server {first:?}: write https://host:port"))?;
    let host_ip: Option<IpAddr> = url
        .host()
        .and_then(|h| h.trim_matches(|c| c == '[' || c == ']').parse().ok());
    let default_ip = match host_ip {
        Some(ip) if ip.is_loopback() => ip,
        _ => crate::server_cmd::host_ipv4().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
    };
    let cfg = config(&args.flags, &args.data_dir, default_ip, ranges)?;
    let lb_connect_timeout = args.lb_connect_timeout;
    crate::server_cmd::serve_blocking(async move {
        let stop = skiff_serve::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            crate::server_cmd::shutdown_signal().await;
            s.cancel();
        });
        // With several servers every connection goes through the balancer (its listener
        // lives as long as the agent); with one, straight to it.
        let (server, _balancer) = if servers.len() > 1 {
            let lb = skiff_kubelet::balancer::LoadBalancer::start(
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
                &servers,
                lb_connect_timeout,
            )
            .await?;
            eprintln!(
                "skiff agent: API servers {} through the load balancer on {}",
                servers.join(", "),
                lb.local_addr()
            );
            (lb.url(), Some(lb))
        } else {
            (servers[0].clone(), None)
        };
        run_joined(server, token, ca, cfg, stop).await
    })
}
