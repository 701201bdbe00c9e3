//! The agent's own `/metrics` (the kubelet's names): what it started, what failed to
//! start, how long pods took to start, and what runs now.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::containers::RunState;
use super::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerType {
    container_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartErrorLabels {
    code: String,
    container_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerState {
    container_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeName {
    node: String,
}

/// The kubelet's `kubelet_pod_start_duration_seconds` buckets.
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

pub struct AgentMetrics {
    registry: Mutex<Registry>,
    started_pods: Counter,
    started_containers: Family<ContainerType, Counter>,
    start_errors: Family<StartErrorLabels, Counter>,
    pod_start: Histogram,
    running_pods: Gauge,
    running_containers: Family<ContainerState, Gauge>,
    node_name: Family<NodeName, Gauge>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let started_pods = Counter::default();
        r.register(
            "kubelet_started_pods",
            "Cumulative number of pods started",
            started_pods.clone(),
        );
        let started_containers = Family::<ContainerType, Counter>::default();
        r.register(
            "kubelet_started_containers",
            "Cumulative number of containers started",
            started_containers.clone(),
        );
        let start_errors = Family::<StartErrorLabels, Counter>::default();
        r.register(
            "kubelet_started_containers_errors",
            "Cumulative number of errors when starting containers",
            start_errors.clone(),
        );
        let pod_start = Histogram::new(POD_START_BUCKETS.iter().copied());
        r.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            pod_start.clone(),
        );
        let running_pods = Gauge::default();
        r.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            running_pods.clone(),
        );
        let running_containers = Family::<ContainerState, Gauge>::default();
        r.register(
            "kubelet_running_containers",
            "Number of containers currently running",
            running_containers.clone(),
        );
        let node_name = Family::<NodeName, Gauge>::default();
        r.register(
            "kubelet_node_name",
            "The node's name. The count is always 1.",
            node_name.clone(),
        );
        AgentMetrics {
            registry: Mutex::new(r),
            started_pods,
            started_containers,
            start_errors,
            pod_start,
            running_pods,
            running_containers,
            node_name,
        }
    }
}

fn container_type(init: bool) -> ContainerType {
    ContainerType {
        container_type: if init { "init_container" } else { "container" }.into(),
    }
}

impl AgentMetrics {
    pub fn container_started(&self, init: bool) {
        self.started_containers
            .get_or_create(&container_type(init))
            .inc();
    }

    /// `code` is the reason the start failed (`RunContainerError` …).
    pub fn container_start_failed(&self, init: bool, code: &str) {
        self.start_errors
            .get_or_create(&StartErrorLabels {
                code: code.into(),
                container_type: container_type(init).container_type,
            })
            .inc();
    }

    /// A pod's containers all run for the first time, `took` after the agent first saw it.
    pub fn pod_started(&self, took: Duration) {
        self.started_pods.inc();
        self.pod_start.observe(took.as_secs_f64());
    }

    /// The exposition, with the gauges of what runs now.
    pub fn render(&self, sh: &Shared) -> String {
        self.node_name
            .get_or_create(&NodeName {
                node: sh.cfg.node_name.clone(),
            })
            .set(1);
        self.running_pods.set(sh.rt.sandboxes().len() as i64);
        let mut counts = [0i64; 3];
        for c in sh.rt.list() {
            let i = match c.state {
                RunState::Running => 0,
                RunState::Exited(_) => 1,
                RunState::Lost => 2,
            };
            counts[i] += 1;
        }
        for (state, n) in ["running", "exited", "unknown"].iter().zip(counts) {
            self.running_containers
                .get_or_create(&ContainerState {
                    container_state: (*state).into(),
                })
                .set(n);
        }
        let mut text = String::new();
        let reg = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &reg) {
            text = format!("# encoding the metrics failed: {e}\n");
        }
        text
    }
}
