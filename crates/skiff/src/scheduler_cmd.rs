//! `skiff scheduler`: the scheduler as its own process, reaching the API server through a
//! kubeconfig over HTTPS (as kube-scheduler does), optionally under leader election on
//! the Lease kube-system/kube-scheduler; `/metrics` and `/healthz` over plain HTTP on the
//! metrics address. [`run_elected`] is also how `skiff server` runs its in-process
//! scheduler.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use skiff_leader::{CancellationToken, LeaderElector};

use crate::component::{Election, LeaderElectArgs, LeaderGauge};

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The kubeconfig to reach the API server with (its current context).
    #[arg(long)]
    kubeconfig: PathBuf,
    #[command(flatten)]
    elect: LeaderElectArgs,
    /// The name of the Lease.
    #[arg(long, default_value = "kube-scheduler")]
    leader_elect_resource_name: String,
    /// Where `/metrics` and `/healthz` are served over plain HTTP (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:10251")]
    metrics_bind_address: SocketAddr,
}

/// The metrics of the scheduler of the current (or last) leadership term (each term runs
/// a fresh scheduler, and `/metrics` reads whichever is current), and kube's
/// `leader_election_master_status{name}` gauge when this process elects.
#[derive(Clone)]
pub(crate) struct MetricsSlot {
    scheduler: Arc<RwLock<Option<Arc<skiff_scheduler::Metrics>>>>,
    /// The gauge and the lease of its series, when this process elects.
    leader: Option<(LeaderGauge, String)>,
}

impl MetricsSlot {
    /// `leader`: the process's gauge and the lease whose series this scheduler sets
    /// (kube-scheduler exports it only when it elects).
    pub fn new(leader: Option<(LeaderGauge, &str)>) -> MetricsSlot {
        let leader = leader.map(|(g, lease)| {
            g.register(lease);
            (g, lease.to_string())
        });
        MetricsSlot {
            scheduler: Default::default(),
            leader,
        }
    }

    fn set_leading(&self, leading: bool) {
        if let Some((g, lease)) = &self.leader {
            g.set(lease, leading);
        }
    }

    /// The scheduler's metrics alone.
    pub fn encode_scheduler(&self) -> String {
        self.scheduler
            .read()
            .ok()
            .and_then(|m| m.as_ref().map(|m| m.encode()))
            .unwrap_or_default()
    }

    /// One text exposition: the scheduler's metrics, then the leader gauge.
    pub fn encode(&self) -> String {
        let mut parts = vec![self.encode_scheduler()];
        if let Some((g, _)) = &self.leader {
            parts.push(g.encode());
        }
        crate::component::join_expositions(&parts)
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
    let identity = skiff_leader::unique_identity();
    let election = args
        .elect
        .election(&args.leader_elect_resource_name, &identity)?;
    let (client, server) =
        crate::component::kube_client(&args.kubeconfig, "kube-scheduler", &identity).await?;
    let (listener, metrics_addr) =
        crate::component::bind_metrics(args.metrics_bind_address).await?;
    let metrics = MetricsSlot::new(
        election
            .as_ref()
            .map(|e| (LeaderGauge::new(), e.name.as_str())),
    );
    let stop = CancellationToken::new();
    let encode = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.encode())
    };
    let serving = tokio::spawn(crate::component::serve_metrics(
        listener,
        "scheduler-metrics",
        encode,
        stop.clone(),
    ));
    eprintln!(
        "skiff scheduler: API {server}; metrics on http://{metrics_addr}/metrics; identity {identity}{}",
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
    let r = run_elected(client, election, metrics, shutdown).await;
    stop.cancel();
    let _ = serving.await;
    r
}
