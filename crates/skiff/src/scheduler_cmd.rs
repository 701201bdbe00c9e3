//! `skiff scheduler`: the scheduler as its own process, reaching the API server through a
//! kubeconfig over HTTPS (as kube-scheduler does), optionally under leader election on
//! the Lease kube-system/kube-scheduler; `/metrics` and `/healthz` over plain HTTP on the
//! metrics address. [`run_elected`] is also how `skiff server` runs its in-process
//! scheduler.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_leader::{CancellationToken, LeaderElector, Timing};

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The kubeconfig to reach the API server with (its current context).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Campaign for the Lease before scheduling, so only one of several schedulers acts:
    /// `--leader-elect` or `--leader-elect=true|false`.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a leader's lease is honoured after its last renewal.
    #[arg(long, default_value = "15s", value_parser = crate::server_cmd::parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader tries to renew before it stops scheduling.
    #[arg(long, default_value = "10s", value_parser = crate::server_cmd::parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// The pause between tries to acquire or renew the lease.
    #[arg(long, default_value = "2s", value_parser = crate::server_cmd::parse_duration)]
    leader_elect_retry_period: Duration,
    /// The namespace of the Lease.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
    /// The name of the Lease.
    #[arg(long, default_value = "kube-scheduler")]
    leader_elect_resource_name: String,
    /// Where `/metrics` and `/healthz` are served over plain HTTP (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:10251")]
    metrics_bind_address: SocketAddr,
}

/// Where the scheduler's lease lives (kube-scheduler's `--leader-elect-resource-*`).
#[derive(Clone)]
pub(crate) struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub timing: Timing,
}

impl Election {
    /// kube-scheduler's lease, defaults and a fresh `<host>_<random>` identity.
    pub fn kube_scheduler() -> Election {
        Election {
            namespace: "kube-system".into(),
            name: "kube-scheduler".into(),
            identity: skiff_leader::unique_identity(),
            timing: Timing::default(),
        }
    }
}

/// The metrics of the scheduler of the current (or last) leadership term (each term runs
/// a fresh scheduler, and `/metrics` reads whichever is current), and kube's
/// `leader_election_master_status{name}` gauge: 1 while this process leads.
#[derive(Clone)]
pub(crate) struct MetricsSlot {
    scheduler: Arc<RwLock<Option<Arc<skiff_scheduler::Metrics>>>>,
    leading: LeaderGauge,
    /// The gauge's one series (`name` = the lease), when this process elects.
    lease: Option<Vec<(String, String)>>,
    registry: Arc<prometheus_client::registry::Registry>,
}

type LeaderGauge = prometheus_client::metrics::family::Family<
    Vec<(String, String)>,
    prometheus_client::metrics::gauge::Gauge,
>;

impl MetricsSlot {
    /// `lease` names the gauge's lease (kube-scheduler exports it only when it elects).
    pub fn new(lease: Option<&str>) -> MetricsSlot {
        let leading = LeaderGauge::default();
        let mut registry = prometheus_client::registry::Registry::default();
        let lease = lease.map(|l| vec![("name".to_string(), l.to_string())]);
        if let Some(series) = &lease {
            leading.get_or_create(series).set(0);
            registry.register(
                "leader_election_master_status",
                "Whether this process is the leader (1) or not (0), per lease",
                leading.clone(),
            );
        }
        MetricsSlot {
            scheduler: Default::default(),
            leading,
            lease,
            registry: Arc::new(registry),
        }
    }

    fn set_leading(&self, leading: bool) {
        if let Some(series) = &self.lease {
            self.leading.get_or_create(series).set(i64::from(leading));
        }
    }

    /// One text exposition: the scheduler's metrics, then the leader gauge.
    pub fn encode(&self) -> String {
        const EOF: &str = "# EOF\n";
        let mut text = self
            .scheduler
            .read()
            .ok()
            .and_then(|m| m.as_ref().map(|m| m.encode()))
            .unwrap_or_default();
        if text.ends_with(EOF) {
            text.truncate(text.len() - EOF.len());
        }
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn set(&self, metrics: Arc<skiff_scheduler::Metrics>) {
        if let Ok(mut m) = self.scheduler.write() {
            *m = Some(metrics);
        }
    }
}

/// Schedules with `client` until `shutdown`: at once without `election`, else only while
/// holding its lease (a scheduler that loses the lease stops before campaigning again).
pub(crate) async fn run_elected(
    client: kube::Client,
    election: Option<Election>,
    metrics: MetricsSlot,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let term = |stop: CancellationToken| {
        let scheduler =
            skiff_scheduler::Scheduler::new(client.clone(), skiff_scheduler::Config::default());
        metrics.set(scheduler.metrics());
        metrics.set_leading(true);
        let metrics = metrics.clone();
        async move {
            let r = scheduler.run(stop.cancelled_owned()).await;
            metrics.set_leading(false);
            r
        }
    };
    match election {
        None => {
            let stop = CancellationToken::new();
            let run = term(stop.clone());
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => return r.context("the scheduler stopped"),
                () = shutdown => {}
            }
            stop.cancel();
            run.await.context("the scheduler stopped")
        }
        Some(e) => {
            let elector = LeaderElector::new(client.clone(), &e.namespace, &e.name, &e.identity)
                .with_timing(e.timing)
                .context("leader election timing")?;
            elector
                .run(term, shutdown)
                .await
                .context("the scheduler stopped")
        }
    }
}

pub fn main(args: SchedulerArgs) -> Result<()> {
    crate::server_cmd::serve_blocking(run(args))
}

async fn run(args: SchedulerArgs) -> Result<()> {
    let timing = Timing {
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    timing.validate().context(
        "--leader-elect-lease-duration, --leader-elect-renew-deadline, --leader-elect-retry-period",
    )?;
    let identity = skiff_leader::unique_identity();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("read the kubeconfig {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("use the kubeconfig {}", args.kubeconfig.display()))?;
    let mut config = config;
    // Which scheduler process made a request, in the audit log: two schedulers sharing a
    // kubeconfig authenticate as one user.
    if let Ok(ua) = hyper::header::HeaderValue::from_str(&format!(
        "kube-scheduler/skiff-{} ({identity})",
        env!("CARGO_PKG_VERSION")
    )) {
        config.headers.push((hyper::header::USER_AGENT, ua));
    }
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("a client for {server} from {}", args.kubeconfig.display()))?;
    let listener = tokio::net::TcpListener::bind(args.metrics_bind_address)
        .await
        .with_context(|| format!("listen on {} for /metrics", args.metrics_bind_address))?;
    let metrics_addr = listener.local_addr().context("read the metrics address")?;
    let election = args.leader_elect.then(|| Election {
        namespace: args.leader_elect_resource_namespace.clone(),
        name: args.leader_elect_resource_name.clone(),
        identity: identity.clone(),
        timing,
    });
    let metrics = MetricsSlot::new(
        args.leader_elect
            .then_some(args.leader_elect_resource_name.as_str()),
    );
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve_metrics(listener, metrics.clone(), stop.clone()));
    eprintln!(
        "skiff scheduler: API {server}; metrics on http://{metrics_addr}/metrics; identity {identity}{}",
        if args.leader_elect {
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
    let r = run_elected(client, election, metrics, shutdown).await;
    stop.cancel();
    let _ = serving.await;
    r
}

/// `/metrics` and `/healthz` (also `/livez`, `/readyz`) over plain HTTP until `stop`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: MetricsSlot,
    stop: CancellationToken,
) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let metrics = metrics.clone();
        async move {
            let (code, content_type, body) = match req.uri().path() {
                "/metrics" => (
                    StatusCode::OK,
                    skiff_serve::metrics::CONTENT_TYPE,
                    metrics.encode(),
                ),
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
        .name("scheduler-metrics")
        .shutdown_signal(stop.clone())
        .run(service, stop.cancelled_owned())
        .await;
}
