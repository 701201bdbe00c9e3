//! What the control-plane components' commands share (`skiff scheduler`, `skiff
//! controller-manager`, `skiff hollow-nodes`, and the in-process components of `skiff
//! server`): a client from a kubeconfig, kube's leader-election flags and Lease, the
//! `leader_election_master_status` gauge, and `/metrics` + `/healthz` over plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_leader::{CancellationToken, Timing};

/// kube's `--leader-elect*` flags (the Lease's name is each component's own flag, as its
/// default differs).
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderElectArgs {
    /// Campaign for the Lease before acting, so only one of several instances acts:
    /// `--leader-elect` or `--leader-elect=true|false`.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a leader's lease is honoured after its last renewal.
    #[arg(long, default_value = "15s", value_parser = crate::server_cmd::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader tries to renew before it stops acting.
    #[arg(long, default_value = "10s", value_parser = crate::server_cmd::parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// The pause between tries to acquire or renew the lease.
    #[arg(long, default_value = "2s", value_parser = crate::server_cmd::parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// The namespace of the Lease.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
}

impl LeaderElectArgs {
    /// The validated timing of the three flags.
    pub fn timing(&self) -> Result<Timing> {
        let timing = Timing {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        };
        timing.validate().context(
            "--leader-elect-lease-duration, --leader-elect-renew-deadline, --leader-elect-retry-period",
        )?;
        Ok(timing)
    }

    /// The election to run under, if `--leader-elect`.
    pub fn election(&self, lease: &str, identity: &str) -> Result<Option<Election>> {
        let timing = self.timing()?;
        Ok(self.leader_elect.then(|| Election {
            namespace: self.leader_elect_resource_namespace.clone(),
            name: lease.to_string(),
            identity: identity.to_string(),
            timing,
        }))
    }
}

/// Where a component's lease lives (kube's `--leader-elect-resource-*`).
#[derive(Clone)]
pub(crate) struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub timing: Timing,
}

impl Election {
    /// The Lease kube-system/`name` with `timing` and a fresh `<host>_<random>`
    /// identity (how `skiff server` runs its in-process components; their timing is
    /// `skiff server`'s `--leader-elect-*` flags).
    pub fn in_kube_system(name: &str, timing: Timing) -> Election {
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: skiff_leader::unique_identity(),
            timing,
        }
    }
}

/// A client for the API server of `kubeconfig` (its current context), sending
/// `<component>/skiff-<version> (<identity>)` as its user agent, so the audit log tells
/// apart two processes sharing one kubeconfig. Also returns the server's URL.
pub(crate) async fn kube_client(
    kubeconfig: &Path,
    component: &str,
    identity: &str,
) -> Result<(kube::Client, String)> {
    let (config, _) = kube_config(kubeconfig).await?;
    let mut config = config;
    if let Ok(ua) = hyper::header::HeaderValue::from_str(&format!(
        "{component}/skiff-{} ({identity})",
        env!("CARGO_PKG_VERSION")
    )) {
        config.headers.push((hyper::header::USER_AGENT, ua));
    }
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("a client for {server} from {}", kubeconfig.display()))?;
    Ok((client, server))
}

/// The kubeconfig's client settings and the file as parsed.
pub(crate) async fn kube_config(
    kubeconfig: &Path,
) -> Result<(kube::Config, kube::config::Kubeconfig)> {
    let parsed = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read the kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        parsed.clone(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("use the kubeconfig {}", kubeconfig.display()))?;
    Ok((config, parsed))
}

type GaugeFamily = prometheus_client::metrics::family::Family<
    Vec<(String, String)>,
    prometheus_client::metrics::gauge::Gauge,
>;

/// kube's `leader_election_master_status{name}` gauge: 1 while this process leads the
/// Lease `name`, 0 while it campaigns. One per process, shared by its components.
#[derive(Clone)]
pub(crate) struct LeaderGauge {
    family: GaugeFamily,
    registry: Arc<prometheus_client::registry::Registry>,
}

impl LeaderGauge {
    pub fn new() -> LeaderGauge {
        let family = GaugeFamily::default();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            "leader_election_master_status",
            "Whether this process is the leader (1) or not (0), per lease",
            family.clone(),
        );
        LeaderGauge {
            family,
            registry: Arc::new(registry),
        }
    }

    fn series(lease: &str) -> Vec<(String, String)> {
        vec![("name".to_string(), lease.to_string())]
    }

    /// Adds the lease's series (at 0).
    pub fn register(&self, lease: &str) {
        self.family.get_or_create(&Self::series(lease)).set(0);
    }

    pub fn set(&self, lease: &str, leading: bool) {
        self.family
            .get_or_create(&Self::series(lease))
            .set(i64::from(leading));
    }

    /// The text exposition (ending in `# EOF`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Joins text expositions into one (one `# EOF`, at the end).
pub(crate) fn join_expositions(parts: &[String]) -> String {
    const EOF: &str = "# EOF\n";
    let mut text = String::new();
    for p in parts {
        text.push_str(p.strip_suffix(EOF).unwrap_or(p));
    }
    text.push_str(EOF);
    text
}

/// Binds the metrics address (port 0: any free port); returns the listener and the
/// address it got.
pub(crate) async fn bind_metrics(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} for /metrics"))?;
    let local = listener.local_addr().context("read the metrics address")?;
    Ok((listener, local))
}

/// `/metrics` (from `encode`) and `/healthz` (also `/livez`, `/readyz`) over plain HTTP
/// until `stop`.
pub(crate) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    name: &'static str,
    encode: Arc<dyn Fn() -> String + Send + Sync>,
    stop: CancellationToken,
) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let encode = encode.clone();
        async move {
            let (code, content_type, body) = match req.uri().path() {
                "/metrics" => (StatusCode::OK, skiff_serve::metrics::CONTENT_TYPE, encode()),
                "/healthz" | "/livez" | "/readyz" => {
                    (StatusCode::OK, "text/plain; charset=utf-8", "ok".into())
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "404 page not found\n".into(),
                ),
            };
            Response::builder()
                .status(code)
                .header(hyper::header::CONTENT_TYPE, content_type)
                .body(Full::new(bytes::Bytes::from(body)))
        }
    });
    skiff_serve::Serve::new(listener)
        .name(name)
        .shutdown_signal(stop.clone())
        .run(service, stop.cancelled_owned())
        .await;
}
