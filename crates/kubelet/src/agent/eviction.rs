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

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use skiff_controllers::EventType;
use skiff_serve::CancellationToken;

use super::containers::RunState;
use super::{lock, Shared};

/// What a threshold watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

pub const SIGNALS: &[Signal] = &[
    Signal::MemoryAvailable,
    Signal::NodefsAvailable,
    Signal::NodefsInodesFree,
    Signal::ImagefsAvailable,
    Signal::ImagefsInodesFree,
    Signal::PidAvailable,
];

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        SIGNALS.iter().copied().find(|x| x.name() == s)
    }

    /// The resource the eviction message names.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// The node condition a met threshold turns True.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }

    fn is_bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::NodefsAvailable | Signal::ImagefsAvailable
        )
    }
}

/// A threshold's value: an absolute quantity or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Quantity(i64),
    /// 0.0–1.0.
    Percent(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub amount: Amount,
    /// Soft thresholds: how long the signal must stay below before pods are evicted.
    pub grace: Option<Duration>,
}

impl Threshold {
    /// The threshold as a quantity of a signal whose capacity is `capacity`.
    pub fn quantity(&self, capacity: i64) -> i64 {
        match self.amount {
            Amount::Quantity(q) => q,
            Amount::Percent(p) => (capacity as f64 * p) as i64,
        }
    }
}

/// Why an eviction threshold flag does not parse; each says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("{entry:?}: write signal<quantity or signal<percentage%, e.g. memory.available<100Mi or nodefs.available<10%")]
    Syntax { entry: String },
    #[error("{entry:?}: unknown signal {signal:?}; the signals are memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree and pid.available")]
    Signal { entry: String, signal: String },
    #[error("{entry:?}: {signal} is given twice")]
    Duplicate { entry: String, signal: String },
    #[error("{entry:?}: {value:?} is not a quantity (e.g. 100Mi, 1Gi, 5%)")]
    Quantity { entry: String, value: String },
    #[error("{entry:?}: a percentage must be between 0% and 100%")]
    Percent { entry: String },
    #[error("{entry:?}: the threshold must not be negative")]
    Negative { entry: String },
    #[error("{signal}: a soft threshold needs a grace period (--eviction-soft-grace-period {signal}=1m30s)")]
    NoGrace { signal: String },
}

/// Parses `signal<value,…` (an empty text: no thresholds). Zero thresholds are dropped,
/// as the kubelet drops them (they can never be met).
pub fn parse_thresholds(text: &str) -> Result<Vec<Threshold>, ThresholdError> {
    let mut out: Vec<Threshold> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let syntax = || ThresholdError::Syntax {
            entry: entry.to_string(),
        };
        let (name, value) = entry.split_once('<').ok_or_else(syntax)?;
        let (name, value) = (name.trim(), value.trim());
        if value.is_empty() || name.is_empty() {
            return Err(syntax());
        }
        let signal = Signal::parse(name).ok_or_else(|| ThresholdError::Signal {
            entry: entry.to_string(),
            signal: name.to_string(),
        })?;
        if out.iter().any(|t| t.signal == signal) {
            return Err(ThresholdError::Duplicate {
                entry: entry.to_string(),
                signal: name.to_string(),
            });
        }
        let amount = if let Some(p) = value.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| ThresholdError::Quantity {
                entry: entry.to_string(),
                value: value.to_string(),
            })?;
            if !(0.0..=100.0).contains(&p) {
                return Err(ThresholdError::Percent {
                    entry: entry.to_string(),
                });
            }
            Amount::Percent(p / 100.0)
        } else {
            let q = skiff_api::quantity::Quantity::parse(value).map_err(|_| {
                ThresholdError::Quantity {
                    entry: entry.to_string(),
                    value: value.to_string(),
                }
            })?;
            if q.is_negative() {
                return Err(ThresholdError::Negative {
                    entry: entry.to_string(),
                });
            }
            Amount::Quantity(q.value())
        };
        let zero = match amount {
            Amount::Quantity(q) => q == 0,
            Amount::Percent(p) => p == 0.0,
        };
        if !zero {
            out.push(Threshold {
                signal,
                amount,
                grace: None,
            });
        }
    }
    Ok(out)
}

/// Gives each soft threshold its grace period (`signal=duration` pairs, parsed by the
/// caller); every soft threshold needs one.
pub fn with_grace(
    soft: Vec<Threshold>,
    graces: &BTreeMap<String, Duration>,
) -> Result<Vec<Threshold>, ThresholdError> {
    soft.into_iter()
        .map(|mut t| {
            let g = graces
                .get(t.signal.name())
                .ok_or_else(|| ThresholdError::NoGrace {
                    signal: t.signal.name().to_string(),
                })?;
            t.grace = Some(*g);
            Ok(t)
        })
        .collect()
}

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

pub const DEFAULT_HARD: &str = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%";

/// One signal as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

pub type Observations = BTreeMap<Signal, Observation>;

fn statvfs(dir: &Path) -> Option<nix::sys::statvfs::Statvfs> {
    nix::sys::statvfs::statvfs(dir).ok()
}

/// Observes every signal now.
pub fn observe(sh: &Shared) -> Observations {
    let mut obs = Observations::new();
    let cap = sh.cfg.memory_bytes.max(0);
    let ws = super::stats::node_usage().working_set_bytes as i64;
    obs.insert(
        Signal::MemoryAvailable,
        Observation {
            available: (cap - ws).max(0),
            capacity: cap,
        },
    );
    let fs = [
        (
            sh.cfg.data_dir.clone(),
            Signal::NodefsAvailable,
            Signal::NodefsInodesFree,
        ),
        (
            sh.cfg.data_dir.join("images"),
            Signal::ImagefsAvailable,
            Signal::ImagefsInodesFree,
        ),
    ];
    for (dir, bytes, inodes) in fs {
        if let Some(s) = statvfs(&dir) {
            let f = s.fragment_size() as i64;
            obs.insert(
                bytes,
                Observation {
                    available: s.blocks_available() as i64 * f,
                    capacity: s.blocks() as i64 * f,
                },
            );
            if s.files() > 0 {
                obs.insert(
                    inodes,
                    Observation {
                        available: s.files_free() as i64,
                        capacity: s.files() as i64,
                    },
                );
            }
        }
    }
    let pid_max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // /proc/loadavg: "0.00 0.01 0.05 1/234 5678": 234 tasks exist.
    let tasks: Option<i64> = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok());
    if let (true, Some(t)) = (pid_max > 0, tasks) {
        obs.insert(
            Signal::PidAvailable,
            Observation {
                available: (pid_max - t).max(0),
                capacity: pid_max,
            },
        );
    }
    obs
}

/// A met threshold with what was observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Met {
    pub threshold: Threshold,
    pub observed: Observation,
}

/// The thresholds `obs` meets (a signal that was not observed meets none).
pub fn thresholds_met(thresholds: &[Threshold], obs: &Observations) -> Vec<Met> {
    thresholds
        .iter()
        .filter_map(|t| {
            let o = obs.get(&t.signal)?;
            (o.available < t.quantity(o.capacity)).then_some(Met {
                threshold: *t,
                observed: *o,
            })
        })
        .collect()
}

/// A quantity of bytes (or a count) as `resource.Quantity` prints it (binary SI when it
/// divides evenly: `100Mi`, `50436Ki`, else the plain number).
pub fn format_quantity(n: i64, bytes: bool) -> String {
    if bytes && n != 0 {
        for (shift, suffix) in [
            (60, "Ei"),
            (50, "Pi"),
            (40, "Ti"),
            (30, "Gi"),
            (20, "Mi"),
            (10, "Ki"),
        ] {
            let unit = 1i64 << shift;
            if n % unit == 0 {
                return format!("{}{suffix}", n / unit);
            }
        }
    }
    n.to_string()
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
            let base = Path::new("/sys/fs/cgroup");
            let rel = cg.trim_start_matches('/');
            let f = if base.join("cgroup.controllers").exists() {
                base.join(rel).join("pids.current")
            } else {
                base.join("pids").join(rel).join("pids.current")
            };
            std::fs::read_to_string(f).ok()?.trim().parse().ok()
        }
        _ => {
            let mut total = du(&sh.rt.pod_dir(uid));
            for c in sh.rt.pod_containers(uid) {
                if let Ok(upper) = sh.rt.store.snapshotter().upper_dir(&c.record.id) {
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
    fn thresholds_parse_as_the_kubelet_writes_them() {
        let t = parse_thresholds(DEFAULT_HARD).unwrap();
        assert_eq!(
            t,
            vec![
                Threshold {
                    signal: Signal::MemoryAvailable,
                    amount: Amount::Quantity(100 << 20),
                    grace: None
                },
                Threshold {
                    signal: Signal::NodefsAvailable,
                    amount: Amount::Percent(0.10),
                    grace: None
                },
                Threshold {
                    signal: Signal::ImagefsAvailable,
                    amount: Amount::Percent(0.15),
                    grace: None
                },
            ]
        );
        assert!(parse_thresholds("").unwrap().is_empty());
        // Zero thresholds are dropped.
        assert!(parse_thresholds("memory.available<0,nodefs.available<0%")
            .unwrap()
            .is_empty());
        let p = parse_thresholds(" pid.available<10% , nodefs.inodesFree<5%").unwrap();
        assert_eq!(p[0].signal, Signal::PidAvailable);
        assert_eq!(p[1].quantity(1000), 50);
        assert_eq!(
            parse_thresholds("memory.available<1Gi").unwrap()[0].quantity(7),
            1 << 30
        );
        assert_eq!(
            parse_thresholds("memory.available<100%").unwrap()[0].quantity(8 << 30),
            8 << 30
        );
        for (bad, says) in [
            ("memory.available>1Gi", "write signal<quantity"),
            ("memory.availble<1Gi", "unknown signal \"memory.availble\""),
            ("memory.available<lots", "is not a quantity"),
            ("memory.available<", "write signal<quantity"),
            ("nodefs.available<101%", "between 0% and 100%"),
            ("memory.available<-1Mi", "must not be negative"),
            ("memory.available<1Mi,memory.available<2Mi", "given twice"),
        ] {
            let e = parse_thresholds(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut g = BTreeMap::new();
        g.insert("memory.available".to_string(), Duration::from_secs(90));
        let soft = parse_thresholds("memory.available<1Gi").unwrap();
        assert_eq!(
            with_grace(soft, &g).unwrap()[0].grace,
            Some(Duration::from_secs(90))
        );
        let soft = parse_thresholds("nodefs.available<1Gi").unwrap();
        assert!(with_grace(soft, &g)
            .unwrap_err()
            .to_string()
            .contains("--eviction-soft-grace-period nodefs.available="));
    }

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
