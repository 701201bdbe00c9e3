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
    /// Remove everything the local agent made on this host (pods' containers, mounts,
    /// cgroups and network namespaces, the pod network's bridge, routes and nft tables),
    /// then exit; the cluster state stays unless `--purge` (as `skiff uninstall`).
    #[arg(long)]
    pub(crate) clean: bool,
    /// With `--clean`: remove the data dir too (the cluster's state, credentials, images
    /// and the built-in registry's content).
    #[arg(long)]
    pub(crate) purge: bool,
    /// Stop this node's pods when the server exits (by default they keep running, and the
    /// next start adopts them).
    #[arg(long)]
    stop_pods_on_exit: bool,
    /// Where skiff's built-in image registry listens (`skiff image push
    /// 127.0.0.1:5000/app:v1`; pods on this node pull from there).
    #[arg(long, default_value = "127.0.0.1:5000")]
    registry_listen: SocketAddr,
    /// Do not run the built-in registry.
    #[arg(long)]
    disable_registry: bool,
    #[command(flatten)]
    pub(crate) log: crate::LogFlags,
    /// How long the in-server scheduler's and controller manager's leases are honoured
    /// after their last renewal: with several servers on one etcd, how soon another
    /// server takes over from one that died (kube's default is 15s; skiff's is shorter
    /// so a failover completes within 15 s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long a leading server tries to renew before it stops acting.
    #[arg(long, default_value = "7s", value_parser = parse_duration)]
    leader_elect_renew_deadline: std::time::Duration,
    /// The pause between tries to acquire or renew the leases.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    leader_elect_retry_period: std::time::Duration,
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
        return clean(&args);
    }
    if !args.disable_agent {
        crate::agent_cmd::validate(&args.agent)?;
    }
    // Everything that can be found wrong before anything starts.
    if !args.disable_agent {
        crate::preflight::require_root(
            "skiff server",
            ", or give --disable-agent to run the control plane only (pods then run on joined agents)",
        )?;
        crate::preflight::kernel_features()?;
    }
    if args.metric_resolution < std::time::Duration::from_secs(1) {
        anyhow::bail!(
            "--metric-resolution {:?} is too short: give at least 1s (metrics-server's default is 15s)",
            args.metric_resolution
        );
    }
    let timing = leader_timing(&args)?;
    crate::preflight::port_free(args.listen, "the API server", "--listen")?;
    if !args.disable_registry {
        crate::preflight::port_free(
            args.registry_listen,
            "the built-in registry",
            "--registry-listen (or --disable-registry)",
        )?;
    }
    if !args.disable_agent {
        crate::preflight::kubelet_port_free(&args.agent)?;
    }
    let existed = args.data_dir.exists();
    let fresh = std::fs::read_dir(&args.data_dir).map_or(true, |mut d| d.next().is_none());
    let lock = crate::preflight::DataDirLock::acquire(&args.data_dir, "server")?;
    let stop_pods = args.stop_pods_on_exit && !args.disable_agent;
    let result = serve_blocking(run(&args, timing));
    if result.is_err() && fresh {
        // A first start that failed (etcd unreachable, a bad certificate file …) leaves
        // no half-made data dir behind.
        // A dir that existed (empty) stays, as the user made it.
        skiff_kubelet::agent::containers::unmount_below(&args.data_dir);
        let _ = std::fs::remove_dir_all(&args.data_dir);
        if existed {
            let _ = std::fs::create_dir(&args.data_dir);
        }
    }
    if stop_pods {
        tracing::info!("stopping this node's pods (--stop-pods-on-exit)");
        stop_local_pods(&args);
    }
    drop(lock);
    result
}

/// `skiff server --clean` and `skiff uninstall`: what the local agent made on this host
/// goes, and with `--purge` the data dir.
pub(crate) fn clean(args: &ServerArgs) -> Result<()> {
    let _lock = crate::preflight::DataDirLock::acquire_within(
        &args.data_dir,
        "server",
        std::time::Duration::from_secs(5),
    )?;
    let dir = args.data_dir.join("agent");
    stop_local_pods(args);
    if !args.agent.disable_pod_network {
        crate::agent_cmd::clean_network(&args.agent, &dir, ranges(args));
    }
    for d in ["pods", "containers", "runtime"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    if args.purge {
        skiff_kubelet::agent::containers::unmount_below(&args.data_dir);
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("remove the data dir {}", args.data_dir.display()))?;
    }
    Ok(())
}

/// Stops and removes every pod of the local agent (containers, mounts, cgroups, netns).
fn stop_local_pods(args: &ServerArgs) {
    skiff_kubelet::agent::clean(&args.data_dir.join("agent"), &args.agent.cgroup_parent);
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

async fn run(args: &ServerArgs, timing: skiff_leader::Timing) -> Result<()> {
    let started = std::time::Instant::now();
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
        Arc::new(EtcdStore::connect(&opts).await.with_context(|| {
            format!(
                "connect to etcd at {} (is it running and reachable from here? check --datastore-endpoint, and for TLS --datastore-cafile/--datastore-certfile/--datastore-keyfile)",
                args.datastore_endpoint.join(",")
            )
        })?)
    };
    tracing::info!(
        store = if args.datastore_endpoint.is_empty() {
            "embedded"
        } else {
            "etcd"
        },
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store open"
    );
    let mut server = skiff_apiserver::Server::bind(
        skiff_apiserver::Config {
            data_dir: args.data_dir.clone(),
            listen: args.listen,
            extra_sans: args.tls_san.clone(),
            audit: audit_target(args),
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
    let stop = skiff_leader::CancellationToken::new();
    let registry = if args.disable_registry {
        None
    } else {
        let dir = args.data_dir.join("registry");
        let reg = skiff_registry::Server::bind(skiff_registry::Config::new(
            args.registry_listen,
            dir.clone(),
        ))
        .await
        .map_err(|e| anyhow::anyhow!(skiff_serve::error_chain(&e)))
        .with_context(|| {
            format!(
                "start the built-in registry on {} (data in {}; give --registry-listen or --disable-registry)",
                args.registry_listen,
                dir.display()
            )
        })?;
        let at = reg.local_addr().context("read the registry's address")?;
        tracing::info!(%at, "built-in registry serving");
        Some((at, tokio::spawn(reg.run(stop.clone().cancelled_owned()))))
    };
    // One leader_election_master_status gauge for both components' leases.
    let leaders = crate::component::LeaderGauge::new();
    let scheduler = (!args.disable_scheduler).then(|| {
        let election = crate::component::Election::in_kube_system("kube-scheduler", timing);
        let metrics =
            crate::scheduler_cmd::MetricsSlot::new(Some((leaders.clone(), &election.name)));
        let source = metrics.clone();
        server.add_metrics_source(move || source.encode_scheduler());
        // kube-scheduler's certificate names only the user; the group comes with
        // authentication.
        let client = server.client(
            "system:kube-scheduler",
            // In process, it is trusted as the server itself is.
            &["system:masters", "system:authenticated"],
        );
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
                    Err(e) => tracing::error!("scheduler failed: {e:#}; restarting it in 5 s"),
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
        // Legacy service-account tokens are signed with the key the API server verifies
        // service-account tokens with: the cluster CA's.
        controllers.service_account_private_key = Some(skiff_controllers::ServiceAccountKey {
            pem: std::fs::read_to_string(&server.pki.ca_key).with_context(|| {
                format!("read the cluster CA key {}", server.pki.ca_key.display())
            })?,
        });
        if controllers.cluster_signing.is_none() {
            // Agents' CSRs (kubelet TLS bootstrap) are signed with the cluster CA.
            controllers.cluster_signing = Some(crate::controller_manager_cmd::cluster_signing(
                &server.pki.ca_cert,
                &server.pki.ca_key,
            )?);
        }
        let election =
            crate::component::Election::in_kube_system("kube-controller-manager", timing);
        let client = server.client(
            "system:kube-controller-manager",
            &["system:masters", "system:authenticated"],
        );
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
                        tracing::error!("controller manager failed: {e:#}; restarting it in 5 s")
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
                tracing::error!(
                    "creating the kube-dns Service: {}",
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
                tracing::error!("creating the local-path StorageClass: {e}");
            }
        });
    }
    let (agent, node) = if args.disable_agent {
        (None, None)
    } else {
        let (task, node) = start_agent(args, &server, addr, stop.clone())?;
        (Some(task), Some(node))
    };
    // The usage is printed once the cluster can run a pod: the local node is Ready.
    let usage = {
        let client = server.client("skiff:server", &["system:masters", "system:authenticated"]);
        let usage = Usage::new(args, &server, addr, registry.as_ref().map(|r| r.0));
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Some(node) = node {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = wait_node_ready(&client, &node, started) => {}
                }
            }
            usage.print();
        })
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
    usage.abort();
    let registry = registry.map(|r| r.1);
    for task in [scheduler, controller_manager, agent, registry]
        .into_iter()
        .flatten()
    {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), task).await;
    }
    Ok(())
}

/// Waits until `node` is Ready, saying what it waits for while it takes long.
async fn wait_node_ready(client: &kube::Client, node: &str, started: std::time::Instant) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let mut said = std::time::Instant::now();
    let mut last = String::from("not registered yet");
    loop {
        match nodes.get_opt(node).await {
            Ok(Some(n)) => {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
                match ready {
                    Some(c) if c.status == "True" => {
                        tracing::info!(
                            node,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "node Ready"
                        );
                        return;
                    }
                    Some(c) => last = c.message.clone().unwrap_or_else(|| c.status.clone()),
                    None => last = "registered, no Ready condition yet".into(),
                }
            }
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if said.elapsed() >= std::time::Duration::from_secs(5) {
            said = std::time::Instant::now();
            eprintln!(
                "skiff server: waiting for node {node} to be Ready ({:.0} s): {last}",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// How to use the cluster and join another machine to it.
struct Usage {
    kubeconfig: PathBuf,
    registry: Option<SocketAddr>,
    join: Result<String, String>,
}

impl Usage {
    fn new(
        args: &ServerArgs,
        server: &skiff_apiserver::Server,
        addr: SocketAddr,
        registry: Option<SocketAddr>,
    ) -> Usage {
        let host = match args.advertise_address {
            Some(ip) => ip,
            None if addr.ip().is_unspecified() => host_ipv4().unwrap_or(addr.ip()),
            None => addr.ip(),
        };
        let join = if host.is_loopback() {
            Err(format!(
                "it listens on loopback only; give --listen 0.0.0.0:{} for other machines to join",
                addr.port()
            ))
        } else {
            let hash = std::fs::read_to_string(&server.pki.ca_cert)
                .map(|pem| skiff_kubelet::bootstrap::ca_cert_hash(&pem))
                .unwrap_or_default();
            Ok(format!(
                "skiff agent --server https://{} --token \"$(cat {})\" --ca-cert-hash {hash}",
                SocketAddr::new(host, addr.port()),
                args.data_dir.join("token").display()
            ))
        };
        Usage {
            kubeconfig: server.pki.kubeconfig.clone(),
            registry,
            join,
        }
    }

    fn print(&self) {
        eprintln!(
            "skiff server: ready. Use it with: export KUBECONFIG={}; kubectl get nodes",
            self.kubeconfig.display()
        );
        if let Some(r) = self.registry {
            eprintln!(
                "skiff server: push images to the built-in registry: skiff image push {r}/NAME:TAG"
            );
        }
        match &self.join {
            Ok(cmd) => eprintln!("skiff server: join another machine with: {cmd}"),
            Err(why) => eprintln!("skiff server: {why}"),
        }
    }
}

/// The local agent: it joins over HTTPS with the cluster token, as a remote agent does
/// (TLS bootstrap: its client and serving certificates come through CSRs).
fn start_agent(
    args: &ServerArgs,
    server: &skiff_apiserver::Server,
    addr: SocketAddr,
    stop: skiff_leader::CancellationToken,
) -> Result<(tokio::task::JoinHandle<()>, String)> {
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
    let node = cfg.node_name.clone();
    Ok((
        tokio::spawn(async move {
            if let Err(e) = crate::agent_cmd::run_joined(url, token, ca, cfg, stop).await {
                tracing::error!("the local agent stopped: {e:#}");
            }
        }),
        node,
    ))
}

/// The in-server components' election timing, validated.
fn leader_timing(args: &ServerArgs) -> Result<skiff_leader::Timing> {
    let timing = skiff_leader::Timing {
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    timing.validate().context(
        "--leader-elect-lease-duration, --leader-elect-renew-deadline, --leader-elect-retry-period",
    )?;
    Ok(timing)
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
