//! skiff's scheduler, in the shape of kube-scheduler: it watches pods without a node and
//! the nodes, picks a node for each pod through a framework of small plugins
//! ([`framework`]), and binds the pod with `pods/binding`. It reaches the cluster only
//! through the Kubernetes API (kube-rs), never the store, so it runs inside `skiff server`
//! (over an in-process client) or standalone (`skiff scheduler --kubeconfig`).
//!
//! Parts:
//! - [`framework`]: extension-point traits and [`framework::Status`] codes;
//! - [`nodeinfo`]: pods and nodes digested for the plugins, and the cycle's snapshot;
//! - [`plugins`]: the default plugin set (NodeResourcesFit, NodeAffinity, TaintToleration,
//!   InterPodAffinity, PodTopologySpread, …) and preemption;
//! - [`schedule`]: one scheduling cycle (kube's `schedulePod`) and its Unschedulable
//!   message; [`simulate`] runs it over a list of pods for the in-process benchmark;
//! - [`queue`]: active, backoff, unschedulable and gated pods, moved back on the cluster
//!   events the rejecting plugins registered;
//! - [`cache`]: node totals with assumed pods, incremental copy-on-write snapshots;
//! - [`binder`]: the API writes (asynchronous `pods/binding`, condition patches, victim
//!   deletions, Events through a bounded channel);
//! - [`metrics`]: kube-scheduler's Prometheus metrics;
//! - the loop behind [`Scheduler::run`] and its watchers (private modules `run`, `watch`).

#![forbid(unsafe_code)]

pub mod binder;
pub mod cache;
pub mod framework;
pub mod metrics;
pub mod nodeinfo;
pub mod plugins;
pub mod queue;
mod run;
pub mod schedule;
#[cfg(test)]
pub(crate) mod testutil;
mod watch;

use std::sync::Arc;

use framework::{Filter, PostFilter, PreBind, PreFilter, PreScore, Reserve, Score};
pub use metrics::Metrics;
use nodeinfo::{PodInfo, Snapshot};

/// The name pods select this scheduler by (`spec.schedulerName`).
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How NodeResourcesFit scores a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    /// Prefer nodes with the most free resources (spreads load; the default).
    #[default]
    LeastAllocated,
    /// Prefer the fullest nodes that still fit (packs load).
    MostAllocated,
}

/// The scheduler's settings (kube-scheduler's profile and component configuration).
#[derive(Debug, Clone)]
pub struct Config {
    pub scheduler_name: String,
    /// kube-scheduler's `percentageOfNodesToScore`; None is the adaptive default
    /// (50 % minus 1 % per 125 nodes, at least 5 %, and never fewer than 100 nodes).
    pub percentage_of_nodes_to_score: Option<u32>,
    pub scoring_strategy: ScoringStrategy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            percentage_of_nodes_to_score: None,
            scoring_strategy: ScoringStrategy::LeastAllocated,
        }
    }
}

/// The plugins of one scheduling profile, per extension point, in the order they run.
/// Score plugins carry their weight.
#[derive(Default, Clone)]
pub struct Framework {
    pub pre_filter: Vec<Arc<dyn PreFilter>>,
    pub filter: Vec<Arc<dyn Filter>>,
    pub post_filter: Vec<Arc<dyn PostFilter>>,
    pub pre_score: Vec<Arc<dyn PreScore>>,
    pub score: Vec<(Arc<dyn Score>, i64)>,
    pub reserve: Vec<Arc<dyn Reserve>>,
    pub pre_bind: Vec<Arc<dyn PreBind>>,
}

impl Framework {
    /// Every plugin's registered cluster events, by plugin name (the queue moves a pod
    /// back when an event registered by a plugin that rejected it happens).
    pub fn plugin_events(
        &self,
    ) -> std::collections::HashMap<&'static str, Vec<framework::ClusterEvent>> {
        let mut out = std::collections::HashMap::new();
        let mut add = |p: &dyn framework::Plugin| {
            out.entry(p.name())
                .or_insert_with(|| p.events_to_register());
        };
        self.pre_filter.iter().for_each(|p| add(&**p));
        self.filter.iter().for_each(|p| add(&**p));
        self.post_filter.iter().for_each(|p| add(&**p));
        self.pre_score.iter().for_each(|p| add(&**p));
        self.score.iter().for_each(|(p, _)| add(&**p));
        self.reserve.iter().for_each(|p| add(&**p));
        self.pre_bind.iter().for_each(|p| add(&**p));
        out
    }
}

/// Runs the real scheduling cycle for each pod in order against `snapshot`, assuming each
/// placed pod there (so later pods see it), and returns the chosen node per pod (`None`
/// when it fits nowhere). The in-process benchmark and tests use it; PostFilter results
/// (preemption) are not acted on.
pub fn simulate(
    framework: &Framework,
    config: &Config,
    snapshot: &mut Snapshot,
    pods: &[Arc<PodInfo>],
) -> Vec<Option<String>> {
    let mut algo = schedule::Algorithm::default();
    let nominated = schedule::Nominated::default();
    let mut out = Vec::with_capacity(pods.len());
    for pod in pods {
        match algo.schedule(framework, config, snapshot, &nominated, pod) {
            schedule::Outcome::Scheduled(r) => {
                snapshot.assume(r.node, pod.clone());
                out.push(Some(r.node_name));
            }
            _ => out.push(None),
        }
    }
    out
}

/// Why the scheduler stopped (it runs until shutdown otherwise).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// One scheduler: built with a client and settings, then run until shutdown (callers
/// wrap `run` in leader election when several may run).
pub struct Scheduler {
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
}

impl Scheduler {
    pub fn new(client: kube::Client, config: Config) -> Scheduler {
        Scheduler {
            client,
            config,
            metrics: Arc::new(Metrics::default()),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Schedules pods until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        run::run(self.client, self.config, self.metrics, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `skiff server` spawns the scheduler on a multi-threaded runtime.
    #[allow(dead_code)]
    fn run_is_send(s: Scheduler) {
        fn send<T: Send>(_: &T) {}
        send(&s.run(std::future::pending::<()>()));
    }
}
