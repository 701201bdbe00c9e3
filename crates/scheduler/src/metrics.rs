//! The scheduler's Prometheus metrics, named as kube-scheduler's so dashboards carry over:
//! `scheduler_schedule_attempts_total{result,profile}`,
//! `scheduler_scheduling_attempt_duration_seconds{result,profile}`,
//! `scheduler_pod_scheduling_duration_seconds` (pod creation to bound) and
//! `scheduler_pending_pods{queue}`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::queue::Lengths;

type Labels = Vec<(&'static str, String)>;

/// How a scheduling attempt ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Scheduled,
    Unschedulable,
    Error,
}

impl AttemptResult {
    fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

fn attempt_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Registered once per scheduler; cheap to update from the loop and the binders.
pub struct Metrics {
    registry: Registry,
    attempts: Family<Labels, Counter>,
    attempt_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pod_duration: Histogram,
    pending: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let attempts = Family::<Labels, Counter>::default();
        registry.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            attempts.clone(),
        );
        let attempt_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(attempt_histogram);
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            attempt_duration.clone(),
        );
        let pod_duration = Histogram::new(exponential_buckets(0.01, 2.0, 20));
        registry.register(
            "scheduler_pod_scheduling_duration_seconds",
            "E2e latency for a pod being scheduled, from its creation to its binding",
            pod_duration.clone(),
        );
        let pending = Family::<Labels, Gauge>::default();
        registry.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type.",
            pending.clone(),
        );
        Metrics {
            registry,
            attempts,
            attempt_duration,
            pod_duration,
            pending,
        }
    }
}

impl Metrics {
    /// The text exposition format served at `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn attempt(&self, result: AttemptResult, profile: &str, seconds: f64) {
        let labels = vec![
            ("result", result.as_str().to_string()),
            ("profile", profile.to_string()),
        ];
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn pod_scheduled(&self, seconds_since_creation: f64) {
        self.pod_duration.observe(seconds_since_creation.max(0.0));
    }

    pub fn pending(&self, l: Lengths) {
        for (q, n) in [
            ("active", l.active),
            ("backoff", l.backoff),
            ("unschedulable", l.unschedulable),
            ("gated", l.gated),
        ] {
            self.pending
                .get_or_create(&vec![("queue", q.to_string())])
                .set(n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_kube_names() {
        let m = Metrics::default();
        m.attempt(AttemptResult::Scheduled, "default-scheduler", 0.002);
        m.pod_scheduled(0.5);
        m.pending(Lengths {
            active: 1,
            backoff: 2,
            unschedulable: 3,
            gated: 4,
        });
        let text = m.encode();
        assert!(text.contains(
            "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 1"
        ));
        assert!(text.contains("scheduler_scheduling_attempt_duration_seconds_bucket"));
        assert!(text.contains("scheduler_pod_scheduling_duration_seconds_count 1"));
        assert!(text.contains("scheduler_pending_pods{queue=\"unschedulable\"} 3"));
    }
}
