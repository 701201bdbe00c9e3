//! The controller manager: kube-controller-manager's controllers over kube-rs.
//!
//! Shape (DESIGN, "Controllers in the kube-runtime shape"): every kind is watched once,
//! by a shared [`informer::Informer`] whose cache all controllers read; a controller's
//! event handlers only turn changes into keys on its own [`queue::Queue`], which hands a
//! key to one worker at a time and retries failures with backoff; a reconcile
//! ([`runner::Reconciler`]) is level-based and idempotent, reading desired and observed
//! state from the caches and writing only through the API; [`expectations::Expectations`]
//! keep a burst of creates or deletes from being repeated while the caches catch up.
//! Controllers never touch the store: inside `skiff server` they use an in-process
//! `kube::Client` authenticated as `system:kube-controller-manager`, standalone a
//! kubeconfig.
//!
//! Lifecycle: [`run`] builds a [`Context`], lets each enabled controller register its
//! informers and handlers and spawn its workers, starts the informers' watches, and
//! returns when `stop` is cancelled and the workers have finished.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod events;
pub mod expectations;
pub mod hollow;
pub mod informer;
pub mod queue;
pub mod runner;
pub mod util;

// One module per controller (kube-controller-manager's controller names in CONTROLLERS).
mod certificates;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod endpointslice;
mod garbage_collector;
mod history;
mod hpa;
mod job;
mod namespace;
mod node_ipam;
mod node_lifecycle;
mod persistent_volume;
mod pod_gc;
mod replicaset;
mod root_ca;
mod service_account;
mod service_account_token;
pub mod servicelb;
mod statefulset;
mod ttl_after_finished;

pub use events::{EventSink, EventType, Recorder};
pub use hpa::{
    ApiMetricsSource, ContainerMetrics, MetricsError, MetricsSource, PodMetricValue, PodMetrics,
    SharedMetricsSource,
};
pub use informer::{Change, Informer, Informers};
pub use queue::Queue;
pub use runner::{Action, Reconciler};

/// Starts one controller: registers its handlers and spawns its workers (None when the
/// controller has nothing to run).
type Start = fn(&Context) -> Option<JoinHandle<()>>;

/// Every controller, by kube-controller-manager's name for it (`--controllers`).
pub const CONTROLLERS: &[(&str, Start)] = &[
    ("replicaset", replicaset::start_replicaset),
    (
        "replicationcontroller",
        replicaset::start_replication_controller,
    ),
    ("deployment", deployment::start),
    ("daemonset", daemonset::start),
    ("statefulset", statefulset::start),
    ("job", job::start),
    ("cronjob", cronjob::start),
    ("ttl-after-finished", ttl_after_finished::start),
    ("endpoint", endpoints::start),
    ("endpointslice", endpointslice::start),
    ("serviceaccount", service_account::start),
    ("serviceaccount-token", service_account_token::start),
    ("root-ca-cert-publisher", root_ca::start),
    ("garbagecollector", garbage_collector::start),
    ("namespace", namespace::start),
    ("nodelifecycle", node_lifecycle::start),
    ("nodeipam", node_ipam::start),
    ("podgc", pod_gc::start),
    ("persistentvolume-binder", persistent_volume::start_binder),
    ("pvc-protection", persistent_volume::start_protection),
    ("disruption", disruption::start),
    ("horizontalpodautoscaling", hpa::start),
    ("csrapproving", certificates::start_approving),
    ("csrsigning", certificates::start_signing),
    // k3s's ServiceLB: LoadBalancer Services answer on every Ready node's InternalIP.
    ("servicelb", servicelb::start),
];

/// The controller manager's settings; names follow kube-controller-manager's flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--controllers`: `*` for all, a name to enable one, `-name` to disable one.
    pub controllers: Vec<String>,
    /// Workers per controller (kube's `--concurrent-*-syncs`, 5 by default).
    pub workers: usize,
    /// `--node-monitor-grace-period`: a node silent this long is marked Unknown.
    pub node_monitor_grace_period: Duration,
    /// `--node-monitor-period`: how often node health is checked.
    pub node_monitor_period: Duration,
    /// `--node-startup-grace-period`: a new node's grace before it must report.
    pub node_startup_grace_period: Duration,
    /// `--cluster-cidr` when `--allocate-node-cidrs` (node pod CIDRs), None to not allocate.
    pub cluster_cidr: Option<ipnet::IpNet>,
    /// `--node-cidr-mask-size` (24 for IPv4).
    pub node_cidr_mask_size: u8,
    /// `--terminated-pod-gc-threshold`: terminated pods kept before pod GC deletes the
    /// oldest.
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA (PEM) published as `kube-root-ca.crt` in every namespace (and put
    /// in legacy service-account token Secrets as `ca.crt`).
    pub root_ca_pem: Option<String>,
    /// `--service-account-private-key-file`: the key the `serviceaccount-token`
    /// controller signs legacy tokens with; the API server must verify with it (in skiff,
    /// the cluster CA's key). None turns that controller off.
    pub service_account_private_key: Option<ServiceAccountKey>,
    /// `--cluster-signing-cert-file`/`--cluster-signing-key-file`: the CA `csrsigning`
    /// signs approved CertificateSigningRequests with; None turns the signer off.
    pub cluster_signing: Option<ClusterSigning>,
    /// `--cluster-signing-duration`: the longest validity an issued certificate gets
    /// (and the default when a request names none); one year.
    pub cluster_signing_duration: Duration,
    /// `--horizontal-pod-autoscaler-sync-period`: how often every HPA is looked at.
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`: how far back the highest
    /// recommendation holds a scale-down (and the default scaleDown window of
    /// `spec.behavior`).
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// `--horizontal-pod-autoscaler-tolerance`: how far the usage ratio may stray from 1
    /// before the replica count changes.
    pub horizontal_pod_autoscaler_tolerance: f64,
    /// `--horizontal-pod-autoscaler-cpu-initialization-period`: after a pod starts, its
    /// cpu samples count only once it is ready and a whole sample window has passed.
    pub horizontal_pod_autoscaler_cpu_initialization_period: Duration,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay`: after the initialization
    /// period, a pod unready since within this long of its start is still starting.
    pub horizontal_pod_autoscaler_initial_readiness_delay: Duration,
    /// Where the HPA controller reads metrics; None for the resource metrics API through
    /// the client (tests inject their own).
    pub hpa_metrics: Option<SharedMetricsSource>,
}

/// The cluster signing CA, PEM.
#[derive(Clone)]
pub struct ClusterSigning {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
}

/// The service-account token signing key, PEM (PKCS#8, ECDSA P-256).
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub pem: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    // The key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceAccountKey(<redacted>)")
    }
}

impl std::fmt::Debug for ClusterSigning {
    // The key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSigning")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"<redacted>")
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            controllers: vec!["*".into()],
            workers: 5,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            node_startup_grace_period: Duration::from_secs(60),
            cluster_cidr: Some(ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 42, 0, 0), 16).unwrap_or_default(),
            )),
            node_cidr_mask_size: 24,
            terminated_pod_gc_threshold: 12500,
            root_ca_pem: None,
            service_account_private_key: None,
            cluster_signing: None,
            cluster_signing_duration: Duration::from_secs(365 * 24 * 3600),
            horizontal_pod_autoscaler_sync_period: Duration::from_secs(15),
            horizontal_pod_autoscaler_downscale_stabilization: Duration::from_secs(300),
            horizontal_pod_autoscaler_tolerance: 0.1,
            horizontal_pod_autoscaler_cpu_initialization_period: Duration::from_secs(300),
            horizontal_pod_autoscaler_initial_readiness_delay: Duration::from_secs(30),
            hpa_metrics: None,
        }
    }
}

impl Config {
    /// Whether `--controllers` enables `name`.
    pub fn enabled(&self, name: &str) -> bool {
        let mut on = false;
        for c in &self.controllers {
            if c == "*" {
                on = true;
            } else if c.strip_prefix('-') == Some(name) {
                return false;
            } else if c == name {
                on = true;
            }
        }
        on
    }

    /// Checks `--controllers` against the known names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for c in &self.controllers {
            let name = c.strip_prefix('-').unwrap_or(c);
            if name != "*" && !CONTROLLERS.iter().any(|(n, _)| *n == name) {
                return Err(ConfigError::UnknownController {
                    name: c.clone(),
                    known: CONTROLLERS.iter().map(|(n, _)| *n).collect(),
                });
            }
        }
        if self.horizontal_pod_autoscaler_sync_period.is_zero() {
            return Err(ConfigError::NotPositive {
                flag: "--horizontal-pod-autoscaler-sync-period",
            });
        }
        let t = self.horizontal_pod_autoscaler_tolerance;
        if !t.is_finite() || t < 0.0 {
            return Err(ConfigError::Tolerance { value: t });
        }
        if let Some(k) = &self.service_account_private_key {
            skiff_api::service_account_token::Signer::from_pem(&k.pem)
                .map_err(ConfigError::ServiceAccountKey)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--controllers: unknown controller {name:?}; use * or one of {}", known.join(", "))]
    UnknownController {
        name: String,
        known: Vec<&'static str>,
    },
    #[error("{flag} must be positive (e.g. 15s)")]
    NotPositive { flag: &'static str },
    #[error(
        "--horizontal-pod-autoscaler-tolerance {value} must be a number of at least 0 (e.g. 0.1)"
    )]
    Tolerance { value: f64 },
    #[error("the service-account private key")]
    ServiceAccountKey(#[source] skiff_api::service_account_token::KeyError),
}

/// The time controllers read, injectable so tests can move it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// What every controller gets: the client, the shared informers, the event writer, the
/// settings, the clock and the stop signal.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub informers: Informers,
    pub events: EventSink,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub stop: CancellationToken,
}

impl Context {
    pub fn new(client: Client, config: Config, stop: CancellationToken) -> Context {
        Context {
            informers: Informers::new(client.clone()),
            events: EventSink::start(client.clone()),
            client,
            config: Arc::new(config),
            clock: Arc::new(SystemClock),
            stop,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// Runs the enabled controllers with `client` until `stop` is cancelled.
pub async fn run(
    client: Client,
    config: Config,
    stop: CancellationToken,
) -> Result<(), ConfigError> {
    config.validate()?;
    run_with(Context::new(client, config, stop)).await;
    Ok(())
}

/// Runs the enabled controllers of `ctx` until its stop token is cancelled.
pub async fn run_with(ctx: Context) {
    let mut handles = Vec::new();
    for (name, start) in CONTROLLERS {
        if ctx.config.enabled(name) {
            if let Some(h) = start(&ctx) {
                tracing::debug!(controller = name, "started");
                handles.push(h);
            }
        }
    }
    ctx.informers.start(&ctx.stop);
    ctx.stop.cancelled().await;
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag_enables_and_disables_by_name() {
        let mut c = Config::default();
        assert!(c.enabled("deployment"));
        c.controllers = vec!["*".into(), "-deployment".into()];
        assert!(!c.enabled("deployment"));
        assert!(c.enabled("replicaset"));
        c.controllers = vec!["job".into()];
        assert!(c.enabled("job"));
        assert!(!c.enabled("replicaset"));
        c.controllers = vec!["*".into(), "-nope".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("unknown controller \"-nope\""), "{e}");
    }
}
