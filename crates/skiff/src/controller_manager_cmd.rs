//! `skiff controller-manager`: the controllers (crates/controllers) as their own process,
//! reaching the API server through a kubeconfig over HTTPS as kube-controller-manager
//! does, optionally under leader election on the Lease kube-system/kube-controller-manager;
//! `/metrics` and `/healthz` over plain HTTP on the metrics address. [`run_elected`] is
//! also how `skiff server` runs its in-process controller manager, and
//! [`ControllerFlags`] are the flags both take (kube-controller-manager's names).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_leader::{CancellationToken, LeaderElector};

use crate::component::{Election, LeaderElectArgs, LeaderGauge};

/// The controller manager's flags shared by `skiff server` and `skiff controller-manager`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerFlags {
    /// Controllers to run: `*` for all, a name to enable one, `-name` to disable one
    /// (comma-separated, e.g. `*,-garbagecollector`).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// A node whose kubelet has not reported (Lease or Ready heartbeat) for this long is
    /// marked Ready=Unknown and tainted unreachable.
    #[arg(long, default_value = "40s", value_parser = crate::server_cmd::parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = crate::server_cmd::parse_duration)]
    pub node_monitor_period: Duration,
    /// How long a new node may go without reporting before it is marked Unknown.
    #[arg(long, default_value = "60s", value_parser = crate::server_cmd::parse_duration)]
    pub node_startup_grace_period: Duration,
    /// Terminated pods kept before the pod garbage collector deletes the oldest
    /// (0: never).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// The CA certificate (PEM) csrsigning signs approved CertificateSigningRequests
    /// with (kubelet client and serving certificates); with `--cluster-signing-key-file`.
    /// Inside `skiff server` the cluster CA by default.
    #[arg(long, requires = "cluster_signing_key_file")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `--cluster-signing-cert-file`.
    #[arg(long, requires = "cluster_signing_cert_file")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// The prefix length of each node's pod CIDR, cut from `--cluster-cidr` by node IPAM
    /// (24: 253 pods a node).
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// The longest validity of a signed certificate (and the default).
    #[arg(long, default_value = "8760h", value_parser = crate::server_cmd::parse_duration)]
    pub cluster_signing_duration: Duration,
    /// How often every HorizontalPodAutoscaler is reconciled.
    #[arg(long, default_value = "15s", value_parser = crate::server_cmd::parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How long the highest recent recommendation holds off a scale-down (and the
    /// default scaleDown stabilization window of an HPA's `spec.behavior`).
    #[arg(long, default_value = "5m", value_parser = crate::server_cmd::parse_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// The smallest change of the ratio of a metric to its target that rescales (0.1:
    /// ten percent either way).
    #[arg(long, default_value_t = 0.1)]
    pub horizontal_pod_autoscaler_tolerance: f64,
    /// After a pod starts, its cpu samples count only once it is Ready and a whole
    /// sample window has passed since.
    #[arg(long, default_value = "5m", value_parser = crate::server_cmd::parse_duration)]
    pub horizontal_pod_autoscaler_cpu_initialization_period: Duration,
    /// After the cpu initialization period, a pod unready since within this long of its
    /// start is taken as still starting.
    #[arg(long, default_value = "30s", value_parser = crate::server_cmd::parse_duration)]
    pub horizontal_pod_autoscaler_initial_readiness_delay: Duration,
}

/// The cluster signing CA read from its certificate and key files.
pub fn cluster_signing(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<skiff_controllers::ClusterSigning> {
    Ok(skiff_controllers::ClusterSigning {
        ca_cert_pem: std::fs::read_to_string(cert)
            .with_context(|| format!("read the cluster signing certificate {}", cert.display()))?,
        ca_key_pem: std::fs::read_to_string(key)
            .with_context(|| format!("read the cluster signing key {}", key.display()))?,
    })
}

impl ControllerFlags {
    /// The controllers' settings of these flags; pod CIDR allocation and the root CA are
    /// the caller's to fill in.
    pub fn config(&self) -> Result<skiff_controllers::Config> {
        let config = skiff_controllers::Config {
            controllers: self.controllers.clone(),
            node_monitor_grace_period: self.node_monitor_grace_period,
            node_monitor_period: self.node_monitor_period,
            node_startup_grace_period: self.node_startup_grace_period,
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            cluster_signing: match (
                &self.cluster_signing_cert_file,
                &self.cluster_signing_key_file,
            ) {
                (Some(cert), Some(key)) => Some(cluster_signing(cert, key)?),
                _ => None,
            },
            cluster_signing_duration: self.cluster_signing_duration,
            node_cidr_mask_size: self.node_cidr_mask_size,
            horizontal_pod_autoscaler_sync_period: self.horizontal_pod_autoscaler_sync_period,
            horizontal_pod_autoscaler_downscale_stabilization: self
                .horizontal_pod_autoscaler_downscale_stabilization,
            horizontal_pod_autoscaler_tolerance: self.horizontal_pod_autoscaler_tolerance,
            horizontal_pod_autoscaler_cpu_initialization_period: self
                .horizontal_pod_autoscaler_cpu_initialization_period,
            horizontal_pod_autoscaler_initial_readiness_delay: self
                .horizontal_pod_autoscaler_initial_readiness_delay,
            ..Default::default()
        };
        config.validate()?;
        if self.cluster_signing_duration < Duration::from_secs(600) {
            anyhow::bail!("--cluster-signing-duration must be at least 10m");
        }
        if self.node_monitor_period.is_zero() {
            anyhow::bail!("--node-monitor-period must be positive");
        }
        Ok(config)
    }
}

/// `--node-cidr-mask-size` must cut node CIDRs out of the cluster CIDR.
pub(crate) fn check_node_cidr_mask(
    config: &skiff_controllers::Config,
    cluster_cidr: ipnet::IpNet,
) -> Result<()> {
    let max = if cluster_cidr.addr().is_ipv4() {
        32
    } else {
        128
    };
    let mask = config.node_cidr_mask_size;
    if mask < cluster_cidr.prefix_len() || mask > max {
        anyhow::bail!(
            "--node-cidr-mask-size {mask} must be between --cluster-cidr's prefix length ({}) and {max}",
            cluster_cidr.prefix_len()
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ControllerManagerArgs {
    /// The kubeconfig to reach the API server with (its current context).
    #[arg(long)]
    kubeconfig: PathBuf,
    #[command(flatten)]
    elect: LeaderElectArgs,
    /// The name of the Lease.
    #[arg(long, default_value = "kube-controller-manager")]
    leader_elect_resource_name: String,
    #[command(flatten)]
    controllers: ControllerFlags,
    /// The range nodes' pod CIDRs are allocated from (`--allocate-node-cidrs`).
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: ipnet::IpNet,
    /// Give each node a pod CIDR from `--cluster-cidr` in spec.podCIDR(s):
    /// `--allocate-node-cidrs[=true|false]`.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// The cluster CA (PEM) published as the `kube-root-ca.crt` ConfigMap in every
    /// namespace. Default: the CA of the kubeconfig's cluster.
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// The private key (PKCS#8 PEM, ECDSA P-256) legacy service-account tokens are signed
    /// with, for Secrets of type kubernetes.io/service-account-token: the key the API
    /// server verifies service-account tokens with, which for skiff is the cluster CA's
    /// (`DATA/pki/ca.key`). Without it the serviceaccount-token controller does not run.
    #[arg(long)]
    service_account_private_key_file: Option<PathBuf>,
    /// Where `/metrics` and `/healthz` are served over plain HTTP (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:10257")]
    metrics_bind_address: SocketAddr,
}

/// Runs the controllers with `client` until `shutdown`: at once without `election`, else
/// only while holding its lease (each term starts them afresh: new caches, new queues).
pub(crate) async fn run_elected(
    client: kube::Client,
    config: skiff_controllers::Config,
    election: Option<Election>,
    leaders: Option<LeaderGauge>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let lease = election.as_ref().map(|e| e.name.clone());
    if let (Some(g), Some(l)) = (&leaders, &lease) {
        g.register(l);
    }
    let term = |stop: CancellationToken| {
        let (client, config) = (client.clone(), config.clone());
        let gauge = leaders.clone().zip(lease.clone());
        async move {
            if let Some((g, l)) = &gauge {
                g.set(l, true);
            }
            let r = skiff_controllers::run(client, config, stop).await;
            if let Some((g, l)) = &gauge {
                g.set(l, false);
            }
            r
        }
    };
    match election {
        None => {
            let stop = CancellationToken::new();
            let run = term(stop.clone());
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => return r.context("the controller manager stopped"),
                () = shutdown => {}
            }
            stop.cancel();
            run.await.context("the controller manager stopped")
        }
        Some(e) => {
            let elector = LeaderElector::new(client.clone(), &e.namespace, &e.name, &e.identity)
                .with_timing(e.timing)
                .context("leader election timing")?;
            elector
                .run(term, shutdown)
                .await
                .context("the controller manager stopped")
        }
    }
}

pub fn main(args: ControllerManagerArgs) -> Result<()> {
    crate::server_cmd::serve_blocking(run(args))
}

/// The PEM of the kubeconfig's current cluster CA, if it names one.
fn kubeconfig_ca(kubeconfig: &kube::config::Kubeconfig, path: &std::path::Path) -> Option<String> {
    use base64::Engine as _;
    let context = kubeconfig.current_context.as_deref()?;
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .cluster
        .clone();
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)?
        .cluster
        .as_ref()?;
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()?;
        return String::from_utf8(pem).ok();
    }
    let file = std::path::PathBuf::from(cluster.certificate_authority.as_ref()?);
    // A relative CA path is relative to the kubeconfig's directory.
    let file = match path.parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file,
    };
    std::fs::read_to_string(file).ok()
}

async fn run(args: ControllerManagerArgs) -> Result<()> {
    let identity = skiff_leader::unique_identity();
    let election = args
        .elect
        .election(&args.leader_elect_resource_name, &identity)?;
    let mut config = args.controllers.config()?;
    config.cluster_cidr = args.allocate_node_cidrs.then_some(args.cluster_cidr);
    check_node_cidr_mask(&config, args.cluster_cidr)?;
    let (_, kubeconfig) = crate::component::kube_config(&args.kubeconfig).await?;
    config.root_ca_pem = match &args.root_ca_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("read --root-ca-file {}", f.display()))?,
        ),
        None => kubeconfig_ca(&kubeconfig, &args.kubeconfig),
    };
    if let Some(f) = &args.service_account_private_key_file {
        config.service_account_private_key = Some(skiff_controllers::ServiceAccountKey {
            pem: std::fs::read_to_string(f).with_context(|| {
                format!("read --service-account-private-key-file {}", f.display())
            })?,
        });
        config
            .validate()
            .with_context(|| format!("--service-account-private-key-file {}", f.display()))?;
    }
    let (client, server) =
        crate::component::kube_client(&args.kubeconfig, "kube-controller-manager", &identity)
            .await?;
    let (listener, metrics_addr) =
        crate::component::bind_metrics(args.metrics_bind_address).await?;
    let leaders = election.as_ref().map(|_| LeaderGauge::new());
    let stop = CancellationToken::new();
    let encode: Arc<dyn Fn() -> String + Send + Sync> = match leaders.clone() {
        Some(g) => Arc::new(move || g.encode()),
        None => Arc::new(|| crate::component::join_expositions(&[])),
    };
    let serving = tokio::spawn(crate::component::serve_metrics(
        listener,
        "controller-manager-metrics",
        encode,
        stop.clone(),
    ));
    eprintln!(
        "skiff controller-manager: API {server}; metrics on http://{metrics_addr}/metrics; identity {identity}{}",
        if election.is_some() {
            "; leader election"
        } else {
            ""
        }
    );
    let shutdown = {
        let stop = stop.clone();
        async move {
            crate::server_cmd::shutdown_signal().await;
            stop.cancel();
        }
    };
    let r = run_elected(client, config, election, leaders, shutdown).await;
    stop.cancel();
    let _ = serving.await;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        flags: ControllerFlags,
    }

    fn config(args: &[&str]) -> Result<skiff_controllers::Config> {
        let cmd = Cmd::try_parse_from(std::iter::once("skiff").chain(args.iter().copied()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        cmd.flags.config()
    }

    #[test]
    fn hpa_flags_map_to_the_controllers_settings() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.horizontal_pod_autoscaler_sync_period,
            Duration::from_secs(15)
        );
        assert_eq!(
            c.horizontal_pod_autoscaler_downscale_stabilization,
            Duration::from_secs(300)
        );
        assert_eq!(c.horizontal_pod_autoscaler_tolerance, 0.1);
        assert_eq!(
            c.horizontal_pod_autoscaler_cpu_initialization_period,
            Duration::from_secs(300)
        );
        assert_eq!(
            c.horizontal_pod_autoscaler_initial_readiness_delay,
            Duration::from_secs(30)
        );
        let c = config(&[
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--horizontal-pod-autoscaler-downscale-stabilization=1m30s",
            "--horizontal-pod-autoscaler-tolerance=0.05",
            "--horizontal-pod-autoscaler-cpu-initialization-period=0s",
            "--horizontal-pod-autoscaler-initial-readiness-delay=10s",
        ])
        .unwrap();
        assert_eq!(
            c.horizontal_pod_autoscaler_sync_period,
            Duration::from_secs(5)
        );
        assert_eq!(
            c.horizontal_pod_autoscaler_downscale_stabilization,
            Duration::from_secs(90)
        );
        assert_eq!(c.horizontal_pod_autoscaler_tolerance, 0.05);
        assert!(c
            .horizontal_pod_autoscaler_cpu_initialization_period
            .is_zero());
        assert_eq!(
            c.horizontal_pod_autoscaler_initial_readiness_delay,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn bad_hpa_flags_are_refused_clearly() {
        let e = config(&["--horizontal-pod-autoscaler-sync-period=0s"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--horizontal-pod-autoscaler-sync-period must be positive"),
            "{e}"
        );
        let e = config(&["--horizontal-pod-autoscaler-tolerance=-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tolerance"), "{e}");
        let e = config(&["--horizontal-pod-autoscaler-sync-period=soon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a duration"), "{e}");
    }
}
