//! Node-pressure eviction, as the kubelet's eviction manager does it.
//!
//! Every monitoring period (10 s) the manager observes the node's signals
//! (`memory.available` = capacity − working set, `nodefs.*` and `imagefs.*` from the
//! filesystems of the data dir and the image store, `pid.available`), compares them with
//! the hard and soft thresholds (`--eviction-hard`, `--eviction-soft` with
//! `--eviction-soft-grace-period`) and:
//! - reports the pressure conditions (MemoryPressure, DiskPressure, PIDPressure) in the
//!   node status while a threshold is met, and for `--eviction-pressure-transition-period`
//!   after (the node lifecycle controller turns them into `NoSchedule` taints);
//! - for disk, first reclaims node-level resources (unused images), then
//! - evicts one pod per pass, ranked as the kubelet ranks them: pods whose usage of the
//!   starved resource exceeds their requests first, then by priority (lowest first),
//!   then by usage beyond requests (largest first). The evicted pod's containers are
//!   killed (hard: 1 s grace; soft: the pod's grace, capped by
//!   `--eviction-max-pod-grace-period`) and it ends in phase Failed, reason `Evicted`,
//!   with an `Evicted` event.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use skiff_controllers::EventType;
use skiff_serve::CancellationToken;

use super::containers::RunState;
pub use super::thresholds::{
    format_quantity, observe, parse_thresholds, thresholds_met, with_grace, Amount, Met,
    Observation, Observations, Signal, Threshold, ThresholdError, DEFAULT_HARD, SIGNALS,
};
use super::{lock, Shared};

/// The eviction manager's configuration (`skiff agent`'s eviction flags).
#[derive(Debug, Clone)]
pub struct EvictionConfig {
    pub hard: Vec<Threshold>,
    pub soft: Vec<Threshold>,
    /// Soft evictions give pods at most this grace (0: the pod's own).
    pub max_pod_grace_period: Duration,
    /// A pressure condition stays True this long after its last met threshold.
    pub pressure_transition_period: Duration,
    pub monitoring_period: Duration,
}

impl Default for EvictionConfig {
    /// The kubelet's defaults (Linux).
    fn default() -> Self {
        EvictionConfig {
            hard: parse_thresholds(DEFAULT_HARD).unwrap_or_default(),
            soft: Vec::new(),
            max_pod_grace_period: Duration::ZERO,
            pressure_transition_period: Duration::from_secs(300),
            monitoring_period: Duration::from_secs(10),
        }
    }
}

/// One pod as ranked: its usage of the starved resource and what it requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub uid: String,
    pub priority: i32,
    /// None when no stats could be read (ranked first, as the kubelet does).
    pub usage: Option<i64>,
    pub request: i64,
}

/// Orders pods for eviction (the first is evicted first): usage over requests first,
/// then lower priority, then more usage beyond requests. For PIDs: priority, then usage.
pub fn rank(mut pods: Vec<Candidate>, signal: Signal) -> Vec<Candidate> {
    use std::cmp::Reverse;
    if signal == Signal::PidAvailable {
        pods.sort_by_key(|p| (p.priority, Reverse(p.usage.unwrap_or(i64::MAX))));
        return pods;
    }
    pods.sort_by_key(|p| {
        let (no_stats, exceeds, beyond) = match p.usage {
            None => (true, true, i64::MAX),
            Some(u) => (false, u > p.request, u - p.request),
        };
        (
            Reverse(no_stats),
            Reverse(exceeds),
            p.priority,
            Reverse(beyond),
        )
    });
    pods
}

/// A container's request of `resource` in bytes (its limit when it gives no request,
/// as the API's defaulting does).
pub fn container_request(c: &k8s_openapi::api::core::v1::Container, resource: &str) -> i64 {
    let r = c.resources.as_ref();
    r.and_then(|r| r.requests.as_ref()?.get(resource))
        .or_else(|| r.and_then(|r| r.limits.as_ref()?.get(resource)))
        .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
        .map(|q| q.value())
        .unwrap_or(0)
}

/// Memory or ephemeral-storage requests of a pod (its containers' sum, or the largest
/// init container's when that is more), in bytes.
pub fn pod_request(pod: &Pod, resource: &str) -> i64 {
    let req = |c: &k8s_openapi::api::core::v1::Container| container_request(c, resource);
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let sum: i64 = spec.containers.iter().map(req).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(req)
        .max()
        .unwrap_or(0);
    sum.max(init)
}

/// Bytes under `dir` (not following symlinks, not crossing into other filesystems'
/// mounts beyond the first level of care: good enough to rank pods).
fn du(dir: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += (m.blocks() * 512) as i64;
            }
        }
    }
    total
}

/// A pod's usage of what `signal` measures: memory working set, disk bytes (writable
/// layers, logs, emptyDirs) or processes.
fn pod_usage(sh: &Shared, pod: &Pod, signal: Signal) -> Option<i64> {
    let uid = pod.metadata.uid.as_deref()?;
    match signal {
        Signal::MemoryAvailable => {
            let cg = super::podspec::pod_cgroup(&sh.cfg.cgroup_parent, pod);
            super::stats::cgroup_usage(&cg)
                .map(|u| u.working_set_bytes as i64)
                .or_else(|| {
                    // The pod's cgroup unreadable: its running containers' sum.
                    let sum: Vec<i64> = sh
                        .rt
                        .pod_containers(uid)
                        .iter()
                        .filter(|c| c.state == RunState::Running)
                        .filter_map(|c| super::stats::cgroup_usage(&c.record.cgroup))
                        .map(|u| u.working_set_bytes as i64)
                        .collect();
                    (!sum.is_empty()).then(|| sum.iter().sum())
                })
        }
        Signal::PidAvailable => {
            let cg = super::podspec::pod_cgroup(&sh.cfg.cgroup_parent, pod);
            let f = super::hostfs::cgroup_file("pids", &cg, "pids.current");
            std::fs::read_to_string(f).ok()?.trim().parse().ok()
        }
        _ => {
            let mut total = du(&sh.pod_dir(uid));
            for c in sh.rt.pod_containers(uid) {
                if let Ok(upper) = sh.images.store.snapshotter().upper_dir(&c.record.id) {
                    total += du(&upper);
                }
            }
            Some(total)
        }
    }
}

/// A pending eviction of one pod, for its worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    pub reason: String,
    pub message: String,
    pub grace: Duration,
}

/// The eviction the worker of pod `uid` is to carry out, if any: one the manager asked
/// for, or (after an agent restart) the one the pod's status records.
pub fn pending(sh: &Shared, uid: &str, pod: &Pod) -> Option<Eviction> {
    if let Some(e) = lock(&sh.evictions).get(uid) {
        return Some(e.clone());
    }
    let st = pod.status.as_ref()?;
    (st.phase.as_deref() == Some("Failed") && st.reason.as_deref() == Some("Evicted")).then(|| {
        Eviction {
            reason: "Evicted".into(),
            message: st.message.clone().unwrap_or_default(),
            grace: Duration::ZERO,
        }
    })
}

/// Whether a new pod may start under the node's pressure (the eviction manager's
/// admission): under MemoryPressure no BestEffort pod, under DiskPressure or PIDPressure
/// no pod, unless it tolerates the condition's taint. `Some(message)` rejects it.
pub fn admit(sh: &Shared, pod: &Pod) -> Option<String> {
    let p = lock(&sh.pressure);
    let tolerates = |key: &str| {
        pod.spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|ts| {
                ts.iter().any(|t| {
                    let key_ok = match t.key.as_deref() {
                        None | Some("") => t.operator.as_deref() == Some("Exists"),
                        Some(k) => k == key,
                    };
                    let effect_ok =
                        matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
                    key_ok && effect_ok
                })
            })
    };
    let mut conditions = Vec::new();
    if p.under("MemoryPressure")
        && super::podspec::qos_class(pod) == "BestEffort"
        && !tolerates("node.kubernetes.io/memory-pressure")
    {
        conditions.push("MemoryPressure");
    }
    if p.under("DiskPressure") && !tolerates("node.kubernetes.io/disk-pressure") {
        conditions.push("DiskPressure");
    }
    if p.under("PIDPressure") && !tolerates("node.kubernetes.io/pid-pressure") {
        conditions.push("PIDPressure");
    }
    (!conditions.is_empty())
        .then(|| format!("The node had condition: [{}]. ", conditions.join(", ")))
}

/// The pressure conditions to report now.
#[derive(Debug, Default)]
pub struct Pressure {
    /// Condition type → when a threshold for it was last met.
    last_met: HashMap<&'static str, Instant>,
    /// The conditions whose thresholds the last pass found met.
    current: std::collections::HashSet<&'static str>,
    pub transition_period: Duration,
}

impl Pressure {
    /// Whether the condition (`MemoryPressure`, …) is True now: a threshold for it is
    /// met, or was within the transition period.
    pub fn under(&self, condition: &str) -> bool {
        self.current.contains(condition)
            || self
                .last_met
                .get(condition)
                .is_some_and(|t| t.elapsed() < self.transition_period)
    }

    fn observed(&mut self, met: &[&'static str]) {
        self.current = met.iter().copied().collect();
        for c in met {
            self.last_met.insert(c, Instant::now());
        }
    }
}

/// The node's ObjectReference (the kubelet's nodeRef: the UID is the node's name).
fn node_ref(sh: &Shared) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        api_version: Some("v1".into()),
        name: Some(sh.cfg.node_name.clone()),
        uid: Some(sh.cfg.node_name.clone()),
        ..Default::default()
    }
}

/// An event about this node.
pub fn node_event(sh: &Shared, warning: bool, reason: &str, message: impl Into<String>) {
    let kind = if warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    sh.events
        .rec
        .publish_ref(node_ref(sh), kind, reason, message);
}

/// Whether the pod is one the manager may still evict.
fn active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The eviction message, as the kubelet writes it.
pub fn message(met: &Met, containers: &[(String, i64, i64)]) -> String {
    let t = &met.threshold;
    let bytes = t.signal.is_bytes();
    let mut m = format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        t.signal.resource(),
        format_quantity(t.quantity(met.observed.capacity), bytes),
        format_quantity(met.observed.available, bytes),
    );
    for (name, usage, request) in containers {
        if usage > request {
            m.push_str(&format!(
                "Container {name} was using {}, request is {}, has larger consumption of {}. ",
                format_quantity(*usage, bytes),
                format_quantity(*request, bytes),
                t.signal.resource()
            ));
        }
    }
    m
}

/// Runs the eviction manager until `stop`.
pub async fn run(sh: Arc<Shared>, stop: CancellationToken) {
    let cfg = sh.cfg.eviction.clone();
    if cfg.hard.is_empty() && cfg.soft.is_empty() {
        return;
    }
    let mut first_seen: HashMap<Signal, Instant> = HashMap::new();
    // The pod evicted last and when: the next waits for its containers (at most 30 s).
    let mut last: Option<(String, Instant)> = None;
    loop {
        let s = sh.clone();
        let obs = tokio::task::spawn_blocking(move || observe(&s))
            .await
            .unwrap_or_default();
        let hard = thresholds_met(&cfg.hard, &obs);
        let soft = thresholds_met(&cfg.soft, &obs);
        {
            let mut p = lock(&sh.pressure);
            p.transition_period = cfg.pressure_transition_period;
            let met: Vec<&'static str> = hard
                .iter()
                .chain(&soft)
                .map(|m| m.threshold.signal.condition())
                .collect();
            p.observed(&met);
        }
        first_seen.retain(|sig, _| soft.iter().any(|m| m.threshold.signal == *sig));
        for m in &soft {
            first_seen
                .entry(m.threshold.signal)
                .or_insert_with(Instant::now);
        }
        // Hard thresholds act now; soft ones once met for their grace period.
        let mut acting: Vec<(Met, bool)> = hard.iter().map(|m| (*m, true)).collect();
        for m in &soft {
            let since = first_seen.get(&m.threshold.signal).map(|t| t.elapsed());
            if since.is_some_and(|d| d >= m.threshold.grace.unwrap_or_default()) {
                acting.push((*m, false));
            }
        }
        let waiting = last.as_ref().is_some_and(|(uid, at)| {
            at.elapsed() < Duration::from_secs(30)
                && sh
                    .rt
                    .pod_containers(uid)
                    .iter()
                    .any(|c| c.state == RunState::Running)
        });
        if !acting.is_empty() && !waiting {
            if let Some(uid) = evict_one(&sh, &cfg, &acting).await {
                last = Some((uid, Instant::now()));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(cfg.monitoring_period) => {}
        }
    }
}

/// Reclaims what it can for the most starved signal and evicts one pod if that was not
/// enough; the evicted pod's UID.
async fn evict_one(
    sh: &Arc<Shared>,
    cfg: &EvictionConfig,
    acting: &[(Met, bool)],
) -> Option<String> {
    // Memory first, then disk, then PIDs (as the kubelet orders its signals).
    let (met, hard) = acting
        .iter()
        .min_by_key(|(m, _)| {
            (
                m.threshold.signal.condition() != "MemoryPressure",
                m.threshold.signal,
            )
        })
        .copied()?;
    let signal = met.threshold.signal;
    node_event(
        sh,
        true,
        "EvictionThresholdMet",
        format!("Attempting to reclaim {}", signal.resource()),
    );
    if signal.condition() == "DiskPressure" {
        // Node-level first: images no container uses.
        let s = sh.clone();
        let freed = tokio::task::spawn_blocking(move || {
            super::imagegc::free(&s, i64::MAX, s.cfg.image_gc.min_age)
        })
        .await
        .map(|r| r.freed)
        .unwrap_or(0);
        if freed > 0 {
            let s = sh.clone();
            let obs = tokio::task::spawn_blocking(move || observe(&s))
                .await
                .unwrap_or_default();
            if thresholds_met(&[met.threshold], &obs).is_empty() {
                return None;
            }
        }
    }
    let pods: Vec<Arc<Pod>> = sh
        .pods_snapshot()
        .into_iter()
        .filter(|p| active(p))
        .collect();
    let s = sh.clone();
    let ps = pods.clone();
    let candidates = tokio::task::spawn_blocking(move || {
        let resource = match signal.resource() {
            "memory" => "memory",
            _ => "ephemeral-storage",
        };
        ps.iter()
            .filter(|p| {
                !lock(&s.evictions).contains_key(p.metadata.uid.as_deref().unwrap_or_default())
            })
            .map(|p| Candidate {
                uid: p.metadata.uid.clone().unwrap_or_default(),
                priority: p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                usage: pod_usage(&s, p, signal),
                request: if signal == Signal::PidAvailable {
                    0
                } else {
                    pod_request(p, resource)
                },
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let ranked = rank(candidates, signal);
    tracing::debug!(?ranked, "eviction ranking");
    let victim = ranked.into_iter().next()?;
    let pod = pods
        .iter()
        .find(|p| p.metadata.uid.as_deref() == Some(victim.uid.as_str()))?
        .clone();
    // Per container: usage and request of the starved resource (memory only: the
    // kubelet names containers for memory and ephemeral storage by their cgroups/disks).
    let mut per_container = Vec::new();
    if signal == Signal::MemoryAvailable {
        for c in sh.rt.pod_containers(&victim.uid) {
            if c.state != RunState::Running {
                continue;
            }
            let usage = super::stats::cgroup_usage(&c.record.cgroup)
                .map(|u| u.working_set_bytes as i64)
                .unwrap_or(0);
            let request = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|x| x.name == c.record.name))
                .map(|x| container_request(x, "memory"))
                .unwrap_or(0);
            per_container.push((c.record.name.clone(), usage, request));
        }
    }
    let msg = message(&met, &per_container);
    let grace = if hard {
        Duration::from_secs(1)
    } else {
        let own = Duration::from_secs(
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        );
        if cfg.max_pod_grace_period.is_zero() {
            own
        } else {
            own.min(cfg.max_pod_grace_period)
        }
    };
    tracing::info!(pod = ?pod.metadata.name, signal = signal.name(), "evicting a pod under node pressure");
    sh.events.warning(&pod, "Evicted", msg.clone());
    lock(&sh.evictions).insert(
        victim.uid.clone(),
        Eviction {
            reason: "Evicted".into(),
            message: msg,
            grace,
        },
    );
    // Wake the pod's worker.
    sh.dispatch(&victim.uid, Some(pod));
    Some(victim.uid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn met_thresholds_and_messages() {
        let t = parse_thresholds("memory.available<100Mi,nodefs.available<10%").unwrap();
        let mut obs = Observations::new();
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 50 << 20,
                capacity: 8 << 30,
            },
        );
        obs.insert(
            Signal::NodefsAvailable,
            Observation {
                available: 500,
                capacity: 1000,
            },
        );
        let met = thresholds_met(&t, &obs);
        assert_eq!(met.len(), 1);
        assert_eq!(
            message(
                &met[0],
                &[("c".into(), 3 << 20, 0), ("g".into(), 1 << 20, 64 << 20)]
            ),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container c was using 3Mi, request is 0, has larger consumption of memory. "
        );
        assert_eq!(format_quantity(51_644_416, true), "50434Ki");
        assert_eq!(format_quantity(1023, true), "1023");
        assert_eq!(format_quantity(0, true), "0");
        assert_eq!(format_quantity(1 << 30, false), "1073741824");
    }

    #[test]
    fn ranking_is_the_kubelets() {
        let c = |uid: &str, priority, usage: Option<i64>, request| Candidate {
            uid: uid.into(),
            priority,
            usage,
            request,
        };
        let pods = vec![
            c("guaranteed", 0, Some(10), 64),
            c("burstable-over", 0, Some(80), 64),
            c("besteffort", 0, Some(5), 0),
            c("burstable-way-over", 0, Some(200), 64),
            c("important-besteffort", 1000, Some(500), 0),
        ];
        let order: Vec<String> = rank(pods, Signal::MemoryAvailable)
            .into_iter()
            .map(|p| p.uid)
            .collect();
        assert_eq!(
            order,
            [
                "burstable-way-over",
                "burstable-over",
                "besteffort",
                "important-besteffort",
                "guaranteed"
            ]
        );
        // No stats: first.
        let order = rank(
            vec![c("a", 0, Some(100), 0), c("b", 0, None, 0)],
            Signal::NodefsAvailable,
        );
        assert_eq!(order[0].uid, "b");
        // PIDs: priority, then usage.
        let order = rank(
            vec![
                c("a", 0, Some(1), 0),
                c("b", 0, Some(9), 0),
                c("c", -1, Some(1), 0),
            ],
            Signal::PidAvailable,
        );
        assert_eq!(
            order.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
    }

    #[test]
    fn requests_default_to_limits() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [
                {"name": "a", "resources": {"limits": {"memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "1Gi"}}},
                {"name": "c"}
            ], "initContainers": [
                {"name": "i", "resources": {"requests": {"memory": "1Gi"}}}
            ]}
        }))
        .unwrap();
        assert_eq!(pod_request(&pod, "memory"), 1 << 30);
        let mut p = pod.clone();
        p.spec.as_mut().unwrap().init_containers = None;
        assert_eq!(pod_request(&p, "memory"), 80 << 20);
        assert_eq!(pod_request(&p, "ephemeral-storage"), 0);
    }

    #[test]
    fn pressure_lasts_the_transition_period() {
        let mut p = Pressure {
            transition_period: Duration::from_secs(300),
            ..Default::default()
        };
        assert!(!p.under("MemoryPressure"));
        p.observed(&["MemoryPressure"]);
        assert!(p.under("MemoryPressure"));
        assert!(!p.under("DiskPressure"));
        p.observed(&[]);
        assert!(p.under("MemoryPressure"), "for the transition period");
        p.last_met
            .insert("MemoryPressure", Instant::now() - Duration::from_secs(301));
        assert!(!p.under("MemoryPressure"));
        // Without a transition period: only while met.
        p.transition_period = Duration::ZERO;
        p.observed(&["DiskPressure"]);
        assert!(p.under("DiskPressure"));
        p.observed(&[]);
        assert!(!p.under("DiskPressure"));
    }
}
