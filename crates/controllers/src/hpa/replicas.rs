//! The replica calculation of kube's `replica_calculator.go`: from the pods of the
//! target and their metrics, how many replicas would bring a metric to its target.
//!
//! Pods are grouped first: deleted and Failed pods are ignored; Pending pods, and for cpu
//! pods not yet Ready or still starting (within the cpu initialization period, or whose
//! sample predates their readiness), are unready; pods without a sample are missing.
//! The ratio of usage to target over the ready pods decides; within the tolerance nothing
//! changes. When pods are missing, they are assumed at the target (at 100 % of their
//! request, or the target when above 100 %) on a scale-down and at zero on a scale-up;
//! unready pods count as zero on a scale-up; and the result never reverses the direction
//! the ready pods asked for. Errors are kube's messages: they end up in HPA conditions
//! and Events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::metrics::PodMetrics;
use crate::util;

/// One pod's sample of a metric, in milli-units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// Samples by pod name.
pub(crate) type PodMetricsInfo = BTreeMap<String, PodMetric>;

/// How far the usage ratio may stray from 1 before the replica count changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tolerances {
    pub down: f64,
    pub up: f64,
}

impl Tolerances {
    pub fn is_within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// The readiness rules for cpu samples, and the time they are judged at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    pub cpu_initialization_period: Duration,
    pub initial_readiness_delay: Duration,
    pub now: Timestamp,
}

/// The pods of a calculation by what their samples are worth.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Groups {
    pub ready: usize,
    pub unready: BTreeSet<String>,
    pub missing: BTreeSet<String>,
    pub ignored: BTreeSet<String>,
}

/// What a utilization target asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ResourceOutcome {
    pub replicas: i32,
    /// Usage as a percentage of the requests (of the ready pods with samples).
    pub utilization: i32,
    /// Average usage per pod, milli-units.
    pub raw: i64,
}

fn ceil_i32(v: f64) -> i32 {
    // `as` saturates, as the HPA caps huge proposals at MaxInt32.
    v.ceil() as i32
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(t)
}

/// The samples of `resource` from the resource metrics API: a pod's containers summed,
/// or one `container`'s (kube's getPodMetrics / getContainerMetrics).
pub(crate) fn resource_metrics(
    list: &[PodMetrics],
    resource: &str,
    container: &str,
) -> Result<PodMetricsInfo, String> {
    if list.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let mut out = PodMetricsInfo::new();
    for m in list {
        let sample = |value| PodMetric {
            value,
            timestamp: m.timestamp,
            window: m.window,
        };
        if !container.is_empty() {
            let Some(c) = m.containers.iter().find(|c| c.name == container) else {
                return Err(format!(
                    "failed to get container metrics: container {container} not present in metrics for pod {}/{}",
                    m.namespace, m.name
                ));
            };
            if let Some(q) = c.usage.get(resource) {
                out.insert(m.name.clone(), sample(q.milli_value()));
            }
            continue;
        }
        // A pod without containers, or with one not reporting the resource, is missing.
        if m.containers.is_empty() {
            continue;
        }
        let mut sum = 0i64;
        let mut complete = true;
        for c in &m.containers {
            match c.usage.get(resource) {
                Some(q) => sum = sum.saturating_add(q.milli_value()),
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            out.insert(m.name.clone(), sample(sum));
        }
    }
    Ok(out)
}

/// kube's groupPods.
pub(crate) fn group_pods(
    pods: &[Arc<Pod>],
    metrics: &PodMetricsInfo,
    resource: &str,
    r: &Readiness,
) -> Groups {
    let mut g = Groups::default();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = util::phase(pod);
        if util::is_deleting(&pod.metadata) || phase == "Failed" {
            g.ignored.insert(name);
            continue;
        }
        if phase == "Pending" {
            g.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let cond = util::pod_condition(pod, "Ready");
            let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref());
            let unready = match (cond, start) {
                (Some(c), Some(start)) => {
                    let transition = c
                        .last_transition_time
                        .as_ref()
                        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
                    if add(start.0, r.cpu_initialization_period) > r.now {
                        // Still initializing: a sample counts once the pod is ready and
                        // one whole window was measured since it became so.
                        c.status == "False" || metric.timestamp < add(transition, metric.window)
                    } else {
                        // Unready and never ready since the start.
                        c.status == "False" && add(start.0, r.initial_readiness_delay) > transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(name);
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// Each pod's request of `resource` (milli-units): the sum over its containers (and
/// restartable init containers), or `container`'s alone.
pub(crate) fn requests(
    pods: &[Arc<Pod>],
    container: &str,
    resource: &str,
) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let sidecars = spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let all = spec
            .map(|s| s.containers.iter())
            .into_iter()
            .flatten()
            .chain(sidecars);
        let mut request = 0i64;
        let mut found = false;
        for c in all {
            if container.is_empty() || container == c.name {
                let q = c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(resource))
                    .ok_or_else(|| {
                        format!(
                            "missing request for {resource} in container {} of Pod {name}",
                            c.name
                        )
                    })?;
                let v = skiff_api::quantity::Quantity::parse(&q.0)
                    .map_err(|e| {
                        format!(
                            "invalid request for {resource} in container {} of Pod {name}: {e}",
                            c.name
                        )
                    })?
                    .milli_value();
                request = request.saturating_add(v);
            }
            if container == c.name {
                found = true;
                break;
            }
        }
        if !container.is_empty() && !found {
            return Err(format!("container {container} not found in Pod {name}"));
        }
        out.insert(name, request);
    }
    Ok(out)
}

/// kube's GetResourceUtilizationRatio: (ratio to the target, utilization %, average).
fn utilization_ratio(
    metrics: &PodMetricsInfo,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut total, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, m) in metrics {
        // Samples of pods the lister does not know are extraneous.
        let Some(r) = requests.get(pod) else { continue };
        total = total.saturating_add(m.value);
        requested = requested.saturating_add(*r);
        n += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (total.saturating_mul(100) / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        total / n,
    ))
}

/// kube's GetMetricUsageRatio: (ratio to the target, average).
fn usage_ratio(metrics: &PodMetricsInfo, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let n = i64::try_from(metrics.len()).unwrap_or(i64::MAX).max(1);
    let avg = total / n;
    (avg as f64 / target as f64, avg)
}

/// The pods with samples still worth counting, or kube's error when none are.
fn drop_unusable(metrics: &mut PodMetricsInfo, g: &Groups) -> Result<(), String> {
    metrics.retain(|pod, _| !g.ignored.contains(pod) && !g.unready.contains(pod));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    Ok(())
}

/// kube's GetResourceReplicas after the metrics are read: a utilization target.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resource_replicas(
    current: i32,
    target_utilization: i32,
    resource: &str,
    tol: Tolerances,
    pods: &[Arc<Pod>],
    mut metrics: PodMetricsInfo,
    container: &str,
    r: &Readiness,
) -> Result<ResourceOutcome, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group_pods(pods, &metrics, resource, r);
    drop_unusable(&mut metrics, &g)?;
    let requests = requests(pods, container, resource)?;
    let (ratio, utilization, raw) = utilization_ratio(&metrics, &requests, target_utilization)?;
    let keep = ResourceOutcome {
        replicas: current,
        utilization,
        raw,
    };
    let with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !with_unready && g.missing.is_empty() {
        if tol.is_within(ratio) {
            return Ok(keep);
        }
        return Ok(ResourceOutcome {
            replicas: ceil_i32(ratio * g.ready as f64),
            ..keep
        });
    }
    let zero = |m: &PodMetricsInfo| PodMetric {
        value: 0,
        ..m.values().next().copied().unwrap_or(PodMetric {
            value: 0,
            timestamp: r.now,
            window: Duration::ZERO,
        })
    };
    if !g.missing.is_empty() {
        if ratio < 1.0 {
            // Scaling down: a missing pod is assumed at its whole request, or at the
            // target when that is above 100 %.
            let fallback = i64::from(target_utilization.max(100));
            for pod in &g.missing {
                let request = requests.get(pod).copied().unwrap_or(0);
                let z = zero(&metrics);
                metrics.insert(
                    pod.clone(),
                    PodMetric {
                        value: request.saturating_mul(fallback) / 100,
                        ..z
                    },
                );
            }
        } else if ratio > 1.0 {
            for pod in &g.missing {
                let z = zero(&metrics);
                metrics.insert(pod.clone(), z);
            }
        }
    }
    if with_unready {
        for pod in &g.unready {
            let z = zero(&metrics);
            metrics.insert(pod.clone(), z);
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target_utilization)?;
    if tol.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(keep);
    }
    let replicas = ceil_i32(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(keep);
    }
    Ok(ResourceOutcome { replicas, ..keep })
}

/// kube's calcPlainMetricReplicas: an average-value target (resource AverageValue or a
/// Pods metric). Returns the replicas and the average usage.
pub(crate) fn plain_replicas(
    mut metrics: PodMetricsInfo,
    current: i32,
    target: i64,
    tol: Tolerances,
    pods: &[Arc<Pod>],
    resource: &str,
    r: &Readiness,
) -> Result<(i32, i64), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group_pods(pods, &metrics, resource, r);
    drop_unusable(&mut metrics, &g)?;
    let (ratio, usage) = usage_ratio(&metrics, target);
    let with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !with_unready && g.missing.is_empty() {
        if tol.is_within(ratio) {
            return Ok((current, usage));
        }
        return Ok((ceil_i32(ratio * g.ready as f64), usage));
    }
    let sample = |value| PodMetric {
        value,
        timestamp: r.now,
        window: Duration::ZERO,
    };
    if !g.missing.is_empty() {
        if ratio < 1.0 {
            for pod in &g.missing {
                metrics.insert(pod.clone(), sample(target));
            }
        } else if ratio > 1.0 {
            for pod in &g.missing {
                metrics.insert(pod.clone(), sample(0));
            }
        }
    }
    if with_unready {
        for pod in &g.unready {
            metrics.insert(pod.clone(), sample(0));
        }
    }
    let (new_ratio, _) = usage_ratio(&metrics, target);
    if tol.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, usage));
    }
    let replicas = ceil_i32(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok((current, usage));
    }
    Ok((replicas, usage))
}

/// Running and Ready pods (kube's getReadyPodsCount).
pub(crate) fn ready_pod_count(pods: &[Arc<Pod>]) -> Result<i64, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    Ok(pods
        .iter()
        .filter(|p| util::phase(p) == "Running" && util::is_ready(p))
        .count() as i64)
}

/// kube's getUsageRatioReplicaCount: a whole-target ratio (Object Value, External Value)
/// applied to the ready pods; from zero replicas, the ratio alone.
pub(crate) fn usage_ratio_replicas(
    current: i32,
    ratio: f64,
    tol: Tolerances,
    pods: &[Arc<Pod>],
) -> Result<i32, String> {
    if current == 0 {
        return Ok(ceil_i32(ratio));
    }
    if tol.is_within(ratio) {
        return Ok(current);
    }
    let ready =
        ready_pod_count(pods).map_err(|e| format!("unable to calculate ready pods: {e}"))?;
    Ok(ceil_i32(ratio * ready as f64))
}

/// kube's per-pod average of a whole value (Object/External AverageValue): replicas and
/// the average per current replica.
pub(crate) fn per_pod_replicas(
    status_replicas: i32,
    target_per_pod: i64,
    usage: i64,
    tol: Tolerances,
) -> (i32, i64) {
    let mut replicas = status_replicas;
    let ratio = usage as f64 / (target_per_pod as f64 * f64::from(status_replicas));
    if !tol.is_within(ratio) {
        replicas = ceil_i32(usage as f64 / target_per_pod as f64);
    }
    let avg = if status_replicas == 0 {
        usage
    } else {
        ceil_i32(usage as f64 / f64::from(status_replicas)) as i64
    };
    (replicas, avg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOL: Tolerances = Tolerances { down: 0.1, up: 0.1 };

    fn now() -> Timestamp {
        "2024-01-01T10:00:00Z".parse().unwrap()
    }

    fn readiness() -> Readiness {
        Readiness {
            cpu_initialization_period: Duration::from_secs(120),
            initial_readiness_delay: Duration::from_secs(10),
            now: now(),
        }
    }

    /// A Running pod requesting `request` cpu in one container, Ready since long ago.
    fn pod(name: &str, request: &str) -> Arc<Pod> {
        pod_with(
            name,
            request,
            "Running",
            "True",
            "2024-01-01T09:00:00Z",
            "2024-01-01T09:00:05Z",
        )
    }

    fn pod_with(
        name: &str,
        request: &str,
        phase: &str,
        ready: &str,
        start: &str,
        transition: &str,
    ) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": request, "memory": "100Mi"}}}]},
                "status": {"phase": phase, "startTime": start,
                    "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": transition}]},
            }))
            .unwrap(),
        )
    }

    fn samples(v: &[(&str, i64)]) -> PodMetricsInfo {
        v.iter()
            .map(|(n, m)| {
                (
                    n.to_string(),
                    PodMetric {
                        value: *m,
                        timestamp: now(),
                        window: Duration::from_secs(30),
                    },
                )
            })
            .collect()
    }

    fn cpu(
        current: i32,
        target: i32,
        pods: &[Arc<Pod>],
        m: &[(&str, i64)],
    ) -> Result<ResourceOutcome, String> {
        resource_replicas(
            current,
            target,
            "cpu",
            TOL,
            pods,
            samples(m),
            "",
            &readiness(),
        )
    }

    #[test]
    fn scale_up_to_the_usage_ratio() {
        // kube's TestReplicaCalcScaleUp: 3 pods at 1 cpu, usage 300m/500m/700m, 30 % target.
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let o = cpu(3, 30, &pods, &[("a", 300), ("b", 500), ("c", 700)]).unwrap();
        assert_eq!(
            o,
            ResourceOutcome {
                replicas: 5,
                utilization: 50,
                raw: 500
            }
        );
    }

    #[test]
    fn within_tolerance_nothing_changes() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        // 1.05 of the target: within 10 %.
        let o = cpu(3, 100, &pods, &[("a", 1010), ("b", 1070), ("c", 1070)]).unwrap();
        assert_eq!(o.replicas, 3);
        assert_eq!(o.utilization, 105);
        // A per-HPA tolerance of 1 % does not hold it.
        let o = resource_replicas(
            3,
            100,
            "cpu",
            Tolerances {
                down: 0.01,
                up: 0.01,
            },
            &pods,
            samples(&[("a", 1010), ("b", 1070), ("c", 1070)]),
            "",
            &readiness(),
        )
        .unwrap();
        assert_eq!(o.replicas, 4);
    }

    #[test]
    fn scale_down_with_missing_pods_assumes_them_at_their_request() {
        // kube's TestReplicaCalcMissingMetricsScaleDown-like: 4 pods, one without a sample.
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1"), pod("d", "1")];
        let o = cpu(4, 50, &pods, &[("a", 100), ("b", 100), ("c", 100)]).unwrap();
        // ready ratio 10/50=0.2; with d at 100 %: (300+1000)/4000 = 32 % → 0.64 → ceil(2.56)=3.
        assert_eq!(o.replicas, 3);
        assert_eq!(o.utilization, 10);
        // Above 100 %, the target itself is assumed.
        let o = cpu(4, 200, &pods, &[("a", 100), ("b", 100), ("c", 100)]).unwrap();
        // (300 + 2000)/4000 = 57 % of 200 → 0.285 → ceil(1.14) = 2.
        assert_eq!(o.replicas, 2);
    }

    #[test]
    fn scale_up_with_missing_pods_assumes_them_idle() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1"), pod("d", "1")];
        // Ready: 900/1000 of 50 → 1.8; with d at 0: 2700/4000=67 % → 1.34 → ceil(5.36)=6.
        let o = cpu(4, 50, &pods, &[("a", 900), ("b", 900), ("c", 900)]).unwrap();
        assert_eq!(o.replicas, 6);
    }

    #[test]
    fn missing_pods_never_reverse_the_direction() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        // Ready pods ask to go up a little (1.2), the idle missing pod pulls it below 1.
        let o = cpu(3, 50, &pods, &[("a", 600), ("b", 600)]).unwrap();
        assert_eq!(o.replicas, 3);
    }

    #[test]
    fn unready_pods_count_as_idle_only_when_scaling_up() {
        let pods = [
            pod("a", "1"),
            pod("b", "1"),
            pod_with(
                "c",
                "1",
                "Pending",
                "False",
                "2024-01-01T09:59:00Z",
                "2024-01-01T09:59:00Z",
            ),
        ];
        // Ready 1000/1000 of 50 → 2.0; with c at 0: 2000/3000 = 66 % → 1.32 → ceil(3.96) = 4.
        let o = cpu(3, 50, &pods, &[("a", 1000), ("b", 1000)]).unwrap();
        assert_eq!(o.replicas, 4);
        // Scaling down, unready pods are left out: 100/1000 of 50 → 0.2 × 2 ready = 1.
        let o = cpu(3, 50, &pods, &[("a", 100), ("b", 100)]).unwrap();
        assert_eq!(o.replicas, 1);
    }

    #[test]
    fn cpu_readiness_follows_the_initialization_period() {
        let r = readiness();
        let m = samples(&[
            ("young", 1),
            ("fresh", 1),
            ("old-unready", 1),
            ("late-unready", 1),
            ("ok", 1),
        ]);
        let pods = [
            // Started 30 s ago, ready 5 s ago: a 30 s window has not passed since.
            pod_with(
                "young",
                "1",
                "Running",
                "True",
                "2024-01-01T09:59:30Z",
                "2024-01-01T09:59:55Z",
            ),
            // Started 60 s ago, ready 50 s ago: the sample covers readiness.
            pod_with(
                "fresh",
                "1",
                "Running",
                "True",
                "2024-01-01T09:59:00Z",
                "2024-01-01T09:59:10Z",
            ),
            // Past initialization, unready and never ready since start (within the delay).
            pod_with(
                "old-unready",
                "1",
                "Running",
                "False",
                "2024-01-01T09:00:00Z",
                "2024-01-01T09:00:05Z",
            ),
            // Past initialization, became unready later: its sample still counts.
            pod_with(
                "late-unready",
                "1",
                "Running",
                "False",
                "2024-01-01T09:00:00Z",
                "2024-01-01T09:30:00Z",
            ),
            pod("ok", "1"),
        ];
        let g = group_pods(&pods, &m, "cpu", &r);
        assert_eq!(g.ready, 3);
        assert_eq!(
            g.unready,
            ["old-unready", "young"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        // Memory has no readiness rules.
        assert_eq!(group_pods(&pods, &m, "memory", &r).ready, 5);
    }

    #[test]
    fn deleted_and_failed_pods_are_ignored() {
        let mut failed = (*pod("f", "1")).clone();
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut deleting = (*pod("d", "1")).clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let pods = [pod("a", "1"), Arc::new(failed), Arc::new(deleting)];
        // Their samples do not count: a alone at 100 % of 50 → 2.
        let o = cpu(1, 50, &pods, &[("a", 1000), ("f", 0), ("d", 0)]).unwrap();
        assert_eq!(o.replicas, 2);
        assert_eq!(o.utilization, 100);
    }

    #[test]
    fn errors_are_kubes() {
        let mut p = (*pod("p", "1")).clone();
        p.spec.as_mut().unwrap().containers[0].resources = None;
        let e = cpu(1, 50, &[Arc::new(p)], &[("p", 10)]).unwrap_err();
        assert_eq!(e, "missing request for cpu in container c of Pod p");
        let e = cpu(1, 50, &[], &[("p", 10)]).unwrap_err();
        assert_eq!(
            e,
            "no pods returned by selector while calculating replica count"
        );
        let e = cpu(1, 50, &[pod("a", "1")], &[]).unwrap_err();
        assert_eq!(
            e,
            "did not receive metrics for targeted pods (pods might be unready)"
        );
        let e = resource_replicas(
            1,
            50,
            "cpu",
            TOL,
            &[pod("a", "1")],
            samples(&[("a", 1)]),
            "web",
            &readiness(),
        )
        .unwrap_err();
        assert_eq!(e, "container web not found in Pod a");
    }

    #[test]
    fn resource_metrics_sum_containers_or_pick_one() {
        use super::super::metrics::ContainerMetrics;
        let q = |s: &str| skiff_api::quantity::Quantity::parse(s).unwrap();
        let c = |n: &str, cpu: Option<&str>| ContainerMetrics {
            name: n.into(),
            usage: cpu.map(|v| ("cpu".to_string(), q(v))).into_iter().collect(),
        };
        let pm = |n: &str, cs: Vec<ContainerMetrics>| PodMetrics {
            name: n.into(),
            namespace: "ns".into(),
            timestamp: now(),
            window: Duration::from_secs(15),
            containers: cs,
        };
        let list = vec![
            pm("a", vec![c("app", Some("100m")), c("side", Some("50m"))]),
            pm("b", vec![c("app", Some("100m")), c("side", None)]),
        ];
        let m = resource_metrics(&list, "cpu", "").unwrap();
        assert_eq!(m["a"].value, 150);
        assert!(
            !m.contains_key("b"),
            "a pod missing a container's usage is missing"
        );
        let m = resource_metrics(&list, "cpu", "app").unwrap();
        assert_eq!((m["a"].value, m["b"].value), (100, 100));
        let e = resource_metrics(&list, "cpu", "nope").unwrap_err();
        assert_eq!(
            e,
            "failed to get container metrics: container nope not present in metrics for pod ns/a"
        );
        assert_eq!(
            resource_metrics(&[], "cpu", "").unwrap_err(),
            "no metrics returned from resource metrics API"
        );
    }

    #[test]
    fn container_requests_count_only_that_container() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "app", "image": "i", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "side", "image": "i"}],
              "initContainers": [{"name": "proxy", "image": "i", "restartPolicy": "Always",
                "resources": {"requests": {"cpu": "100m"}}}]},
        }))
        .unwrap();
        let pods = [Arc::new(p)];
        assert_eq!(requests(&pods, "app", "cpu").unwrap()["p"], 200);
        assert_eq!(requests(&pods, "proxy", "cpu").unwrap()["p"], 100);
        assert_eq!(
            requests(&pods, "", "cpu").unwrap_err(),
            "missing request for cpu in container side of Pod p"
        );
    }

    #[test]
    fn plain_average_values() {
        let pods = [pod("a", "1"), pod("b", "1")];
        // 500m average against 250m → 2.0 × 2 = 4.
        let (n, avg) = plain_replicas(
            samples(&[("a", 400), ("b", 600)]),
            2,
            250,
            TOL,
            &pods,
            "memory",
            &readiness(),
        )
        .unwrap();
        assert_eq!((n, avg), (4, 500));
        // Missing pod on a scale-down is assumed at the target.
        let pods3 = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let (n, _) = plain_replicas(
            samples(&[("a", 100), ("b", 100)]),
            3,
            250,
            TOL,
            &pods3,
            "memory",
            &readiness(),
        )
        .unwrap();
        // (100+100+250)/3 = 150 → 0.6 × 3 = 1.8 → 2.
        assert_eq!(n, 2);
    }

    #[test]
    fn whole_value_targets() {
        let pods = [pod("a", "1"), pod("b", "1")];
        assert_eq!(usage_ratio_replicas(2, 2.0, TOL, &pods), Ok(4));
        assert_eq!(usage_ratio_replicas(2, 1.05, TOL, &pods), Ok(2));
        assert_eq!(usage_ratio_replicas(0, 2.5, TOL, &[]), Ok(3));
        assert_eq!(per_pod_replicas(2, 100, 500, TOL), (5, 250));
        assert_eq!(per_pod_replicas(5, 100, 510, TOL), (5, 102));
    }
}
