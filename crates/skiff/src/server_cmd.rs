//! `skiff server`: the control plane — the state store (embedded, or etcd with
//! `--datastore-endpoint`), the Kubernetes API server and, unless `--disable-scheduler`
//! and `--disable-controller-manager`, the scheduler and the controller manager. Both run
//! in process over `Server::client` (as `system:kube-scheduler` and
//! `system:kube-controller-manager`), each under leader election on its Lease in
//! kube-system (several servers on one etcd have one active scheduler and one active
//! controller manager); their metrics are appended to the API server's `/metrics`. Unless
//! `--disable-agent`, a local agent (kubelet) joins the cluster over HTTPS with the
//! cluster token, as a remote `skiff agent` does, and runs pods on this machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use skiff_store::{EmbeddedStore, EtcdOptions, EtcdStore, OpenOptions, Store};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Holds the store (store/), credentials (pki/, token) and kubeconfig.yaml.
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Run the control plane only, without the local agent (as k3s' `--disable-agent`).
    #[arg(long)]
    disable_agent: bool,
    /// Stop every pod container of the local agent (DATA/agent), unmount and remove what
    /// it made, then exit (the cluster state stays).
    #[arg(long)]
    clean: bool,
    #[command(flatten)]
    agent: crate::agent_cmd::AgentFlags,
    /// Do not create the default `local-path` StorageClass (as k3s' `--disable
    /// local-storage`); agents still provision claims of classes naming the
    /// `rancher.io/local-path` provisioner, under their data dir's `storage/`.
    #[arg(long)]
    disable_local_storage: bool,
    /// Do not run the scheduler in this server (as k3s' `--disable-scheduler`); a
    /// standalone `skiff scheduler` may schedule instead.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controller manager in this server (as k3s'
    /// `--disable-controller-manager`); a standalone `skiff controller-manager` may run
    /// the controllers instead.
    #[arg(long)]
    disable_controller_manager: bool,
    #[command(flatten)]
    controller_manager: crate::controller_manager_cmd::ControllerFlags,
    /// How often every node's kubelet is scraped for the resource metrics API
    /// (`metrics.k8s.io`: `kubectl top`, the HPA), as metrics-server's flag.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    metric_resolution: std::time::Duration,
    /// Do not serve resource metrics (as k3s' `--disable metrics-server`): the
    /// `metrics.k8s.io` API answers with no items and `kubectl top` has nothing to show.
    #[arg(long)]
    disable_metrics_server: bool,
    /// Keep the cluster state in etcd instead of the embedded store:
    /// `http(s)://host:2379[,…]`.
    #[arg(long, value_delimiter = ',')]
    datastore_endpoint: Vec<String>,
    /// CA bundle that signed the etcd servers' certificates.
    #[arg(long, requires = "datastore_endpoint")]
    datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd (mutual TLS).
    #[arg(long, requires_all = ["datastore_endpoint", "datastore_keyfile"])]
    datastore_certfile: Option<PathBuf>,
    /// Client key for etcd (mutual TLS).
    #[arg(long, requires_all = ["datastore_endpoint", "datastore_certfile"])]
    datastore_keyfile: Option<PathBuf>,
    /// Extra names or IPs for the serving certificate (used when it is first generated).
    #[arg(long = "tls-san", value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Audit log (audit.k8s.io/v1 Event JSON lines): a file, `-` for standard output, or
    /// an empty string for none. Default: DATA/audit.log.
    #[arg(long)]
    audit_log_path: Option<String>,
    /// How long Events are kept, as kube-apiserver's --event-ttl: `1h`, `30m`, `90s`,
    /// `1h30m` or plain seconds; 0 keeps them until deleted.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: std::time::Duration,
    /// Rotate the audit log file to `<path>.1` once it is larger than this many megabytes.
    #[arg(long, default_value_t = 100)]
    audit_log_maxsize: u64,
    /// CA bundle trusted for kubelet serving certificates, besides the cluster CA.
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    /// The range Service ClusterIPs are allocated from (its first address is the
    /// `kubernetes` Service's).
    #[arg(long, default_value = "10.43.0.0/16", value_parser = parse_service_cidr)]
    service_cluster_ip_range: ipnet::Ipv4Net,
    /// The range Service NodePorts are allocated from: FIRST-LAST.
    #[arg(long, default_value = "30000-32767", value_parser = parse_node_ports)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The range pod IPs are allocated from (nodes get slices of it).
    #[arg(long, default_value = "10.42.0.0/16", value_parser = parse_cluster_cidr)]
    cluster_cidr: ipnet::Ipv4Net,
    /// Seconds pods tolerate a not-ready node (the `node.kubernetes.io/not-ready:NoExecute`
    /// toleration added to every pod that has none), as kube-apiserver's flag.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate an unreachable node (the
    /// `node.kubernetes.io/unreachable:NoExecute` toleration added to every pod that has
    /// none), as kube-apiserver's flag.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// The address this server is reached at by other components and pods (the
    /// `kubernetes` Service's endpoints). Default: the listen address, or when listening
    /// on all addresses, this host's first non-loopback IPv4 address.
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
}

fn parse_service_cidr(s: &str) -> Result<ipnet::Ipv4Net, String> {
    skiff_api::cluster::ClusterConfig::parse_service_cidr(s).map_err(|e| e.to_string())
}

fn parse_cluster_cidr(s: &str) -> Result<ipnet::Ipv4Net, String> {
    skiff_api::cluster::ClusterConfig::parse_cluster_cidr(s).map_err(|e| e.to_string())
}

fn parse_node_ports(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    skiff_api::cluster::ClusterConfig::parse_node_ports(s).map_err(|e| e.to_string())
}

/// This host's first non-loopback, up IPv4 address, if it has one.
pub(crate) fn host_ipv4() -> Option<std::net::IpAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    addrs
        .filter(|a| {
            a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                && !a
                    .flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback())
        .map(std::net::IpAddr::V4)
}

/// A Go-style duration as Kubernetes flags take them (`1h30m`, `90s`, `500ms`), or seconds.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration; write e.g. 1h, 30m, 90s or 1h30m");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let d = match &rest[..unit] {
            "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
            "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
            "s" => std::time::Duration::from_secs(n),
            "ms" => std::time::Duration::from_millis(n),
            _ => return Err(bad()),
        };
        total = total.saturating_add(d);
        rest = &rest[unit..];
    }
    Ok(total)
}

fn audit_target(args: &ServerArgs) -> Option<skiff_apiserver::audit::AuditTarget> {
    use skiff_apiserver::audit::AuditTarget;
    match args.audit_log_path.as_deref() {
        Some("") => None,
        Some("-") => Some(AuditTarget::Stdout),
        path => Some(AuditTarget::File {
            path: path
                .map(PathBuf::from)
                .unwrap_or_else(|| args.data_dir.join("audit.log")),
            max_bytes: args.audit_log_maxsize.saturating_mul(1 << 20),
        }),
    }
}

pub fn main(args: ServerArgs) -> Result<()> {
    if args.clean {
        let dir = args.data_dir.join("agent");
        skiff_kubelet::agent::clean(&dir, &args.agent.cgroup_parent);
        crate::agent_cmd::clean_network(&args.agent, &dir, ranges(&args));
        for d in ["pods", "containers", "runtime"] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
        return Ok(());
    }
    if !args.disable_agent {
        crate::agent_cmd::validate(&args.agent)?;
    }
    serve_blocking(run(args))
}

/// Runs a long-lived server process's main future (the API server's, the standalone
/// scheduler's) on a multi-threaded runtime with rustls' ring provider installed.
pub(crate) fn serve_blocking<T>(main: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    // main() restores SIGPIPE's default (die) for C-like printing; a server must instead
    // see EPIPE when a peer goes away mid-write (a streaming exec or port-forward session
    // whose client or kubelet closed first), or one such session kills it.
    // SAFETY: changing a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(main)
}

async fn run(args: ServerArgs) -> Result<()> {
    if args.metric_resolution < std::time::Duration::from_secs(1) {
        anyhow::bail!(
            "--metric-resolution {:?} is too short: give at least 1s (metrics-server's default is 15s)",
            args.metric_resolution
        );
    }
    let mut controllers = args.controller_manager.config()?;
    controllers.cluster_cidr = Some(ipnet::IpNet::V4(args.cluster_cidr));
    crate::controller_manager_cmd::check_node_cidr_mask(
        &controllers,
        ipnet::IpNet::V4(args.cluster_cidr),
    )?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create the data dir {}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = if args.datastore_endpoint.is_empty() {
        let dir = args.data_dir.join("store");
        Arc::new(
            EmbeddedStore::open(&dir, &OpenOptions::default())
                .with_context(|| format!("open the embedded store in {}", dir.display()))?,
        )
    } else {
        for e in &args.datastore_endpoint {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                bail!("--datastore-endpoint {e:?}: use http://host:port or https://host:port (comma-separated for several)");
            }
        }
        let opts = EtcdOptions {
            endpoints: args.datastore_endpoint.clone(),
            ca_file: args.datastore_cafile.clone(),
            cert_file: args.datastore_certfile.clone(),
            key_file: args.datastore_keyfile.clone(),
            connect_timeout: None,
        };
        Arc::new(
            EtcdStore::connect(&opts).await.with_context(|| {
                format!("connect to etcd at {}", args.datastore_endpoint.join(","))
            })?,
        )
    };
    let mut server = skiff_apiserver::Server::bind(
        skiff_apiserver::Config {
            data_dir: args.data_dir.clone(),
            listen: args.listen,
            extra_sans: args.tls_san.clone(),
            audit: audit_target(&args),
            event_ttl: (!args.event_ttl.is_zero()).then_some(args.event_ttl),
            kubelet_ca: args.kubelet_certificate_authority.clone(),
            cluster: skiff_api::cluster::ClusterConfig {
                service_cidr: args.service_cluster_ip_range,
                node_ports: args.service_node_port_range.clone(),
                cluster_cidr: args.cluster_cidr,
                default_not_ready_toleration_seconds: args.default_not_ready_toleration_seconds,
                default_unreachable_toleration_seconds: args.default_unreachable_toleration_seconds,
            },
            advertise_address: args.advertise_address.or_else(|| {
                if args.listen.ip().is_unspecified() {
                    host_ipv4()
                } else {
                    Some(args.listen.ip())
                }
            }),
        },
        store,
    )
    .await
    .context("start the API server")?;
    if !args.disable_metrics_server {
        server.scrape_resource_metrics(args.metric_resolution);
    }
    let addr = server.local_addr().context("read the listen address")?;
    eprintln!(
        "skiff server: API on https://{addr}; kubeconfig {}",
        server.pki.kubeconfig.display()
    );
    print_usage(&args, &server, addr);
    let stop = skiff_leader::CancellationToken::new();
    // One leader_election_master_status gauge for both components' leases.
    let leaders = crate::component::LeaderGauge::new();
    let scheduler = (!args.disable_scheduler).then(|| {
        let election = crate::component::Election::in_kube_system("kube-scheduler");
        let metrics =
            crate::scheduler_cmd::MetricsSlot::new(Some((leaders.clone(), &election.name)));
        let source = metrics.clone();
        server.add_metrics_source(move || source.encode_scheduler());
        // kube-scheduler's certificate names only the user; the group comes with
        // authentication.
        let client = server.client("system:kube-scheduler", &["system:authenticated"]);
        let stop = stop.clone();
        tokio::spawn(async move {
            // The API server outlives a failed scheduler: start a new one (it campaigns
            // again; the failed one released the lease) after a pause, until shutdown.
            loop {
                let stopped = stop.clone().cancelled_owned();
                let run = crate::scheduler_cmd::run_elected(
                    client.clone(),
                    Some(election.clone()),
                    metrics.clone(),
                    stopped,
                );
                match run.await {
                    Ok(()) => return,
                    Err(e) => eprintln!("skiff server: scheduler: {e:#}; restarting it in 5 s"),
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
            }
        })
    });
    let controller_manager = if args.disable_controller_manager {
        None
    } else {
        controllers.root_ca_pem = Some(
            std::fs::read_to_string(&server.pki.ca_cert)
                .with_context(|| format!("read the cluster CA {}", server.pki.ca_cert.display()))?,
        );
        if controllers.cluster_signing.is_none() {
            // Agents' CSRs (kubelet TLS bootstrap) are signed with the cluster CA.
            controllers.cluster_signing = Some(crate::controller_manager_cmd::cluster_signing(
                &server.pki.ca_cert,
                &server.pki.ca_key,
            )?);
        }
        let election = crate::component::Election::in_kube_system("kube-controller-manager");
        let client = server.client("system:kube-controller-manager", &["system:authenticated"]);
        let (stop, leaders) = (stop.clone(), leaders.clone());
        Some(tokio::spawn(async move {
            // As the scheduler: a failed controller manager is started again after a pause.
            loop {
                let run = crate::controller_manager_cmd::run_elected(
                    client.clone(),
                    controllers.clone(),
                    Some(election.clone()),
                    Some(leaders.clone()),
                    stop.clone().cancelled_owned(),
                );
                match run.await {
                    Ok(()) => return,
                    Err(e) => {
                        eprintln!("skiff server: controller manager: {e:#}; restarting it in 5 s")
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
            }
        }))
    };
    if let Some(ip) = args
        .agent
        .cluster_dns
        .filter(|_| !args.agent.disable_cluster_dns)
    {
        // The Service every pod's resolv.conf names (`kubectl get svc -n kube-system`);
        // each node's agent answers on its IP.
        let client = server.client("skiff:server", &["system:masters", "system:authenticated"]);
        tokio::spawn(async move {
            if let Err(e) = skiff_net::dns::ensure_dns_service(&client, ip).await {
                eprintln!(
                    "skiff server: creating the kube-dns Service: {}",
                    skiff_serve::error_chain(&e)
                );
            }
        });
    }
    if !args.disable_local_storage {
        // k3s's `local-storage` manifest: the default class of the built-in provisioner.
        let client = server.client("skiff:server", &["system:masters", "system:authenticated"]);
        tokio::spawn(async move {
            if let Err(e) = skiff_kubelet::agent::storage::ensure_default_class(&client).await {
                eprintln!("skiff server: creating the local-path StorageClass: {e}");
            }
        });
    }
    let agent = if args.disable_agent {
        None
    } else {
        Some(start_agent(&args, &server, addr, stop.clone())?)
    };
    if scheduler.is_some() || controller_manager.is_some() {
        server.add_metrics_source(move || leaders.encode());
    }
    let signal = {
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    };
    tokio::spawn(signal);
    server.run(stop.clone().cancelled_owned()).await;
    // The in-process client outlives the listener: the scheduler and the controller
    // manager stop, then release their leases so another server's take over at once.
    for task in [scheduler, controller_manager, agent].into_iter().flatten() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), task).await;
    }
    Ok(())
}

/// How to use the cluster and join another machine to it.
fn print_usage(args: &ServerArgs, server: &skiff_apiserver::Server, addr: SocketAddr) {
    eprintln!(
        "skiff server: use it with: export KUBECONFIG={}; kubectl get nodes",
        server.pki.kubeconfig.display()
    );
    let host = match args.advertise_address {
        Some(ip) => ip,
        None if addr.ip().is_unspecified() => host_ipv4().unwrap_or(addr.ip()),
        None => addr.ip(),
    };
    if host.is_loopback() {
        eprintln!(
            "skiff server: it listens on loopback only; give --listen 0.0.0.0:{} for other machines to join",
            addr.port()
        );
        return;
    }
    let hash = std::fs::read_to_string(&server.pki.ca_cert)
        .map(|pem| skiff_kubelet::bootstrap::ca_cert_hash(&pem))
        .unwrap_or_default();
    eprintln!(
        "skiff server: join another machine with: skiff agent --server https://{} --token \"$(cat {})\" --ca-cert-hash {hash}",
        SocketAddr::new(host, addr.port()),
        args.data_dir.join("token").display()
    );
}

/// The local agent: it joins over HTTPS with the cluster token, as a remote agent does
/// (TLS bootstrap: its client and serving certificates come through CSRs).
fn start_agent(
    args: &ServerArgs,
    server: &skiff_apiserver::Server,
    addr: SocketAddr,
    stop: skiff_leader::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    let url = format!("https://{}", SocketAddr::new(ip, addr.port()));
    let node_ip = if ip.is_loopback() {
        ip
    } else {
        args.advertise_address.or_else(host_ipv4).unwrap_or(ip)
    };
    let dir = args.data_dir.join("agent");
    let cfg = crate::agent_cmd::config(&args.agent, &dir, node_ip, ranges(args))?;
    let ca = skiff_kubelet::bootstrap::CaSource::File(server.pki.ca_cert.clone());
    let token = server.pki.token.clone();
    Ok(tokio::spawn(crate::agent_cmd::run_joined(
        url, token, ca, cfg, stop,
    )))
}

fn ranges(args: &ServerArgs) -> crate::agent_cmd::ClusterRanges {
    crate::agent_cmd::ClusterRanges {
        cluster_cidr: args.cluster_cidr,
        service_cidr: args.service_cluster_ip_range,
    }
}

/// Completes on SIGTERM or Ctrl-C (never, if the handler cannot be installed).
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_kubernetes_flags_write_them() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "h", "1d", "1.5h", "-1h", "10x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
