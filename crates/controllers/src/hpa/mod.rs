//! The HorizontalPodAutoscaler controller, as kube-controller-manager's
//! `horizontalpodautoscaling` (pkg/controller/podautoscaler/horizontal.go).
//!
//! Contract: every autoscaling/v2 HPA is reconciled when its spec changes and again every
//! `--horizontal-pod-autoscaler-sync-period`. A reconcile reads the target's scale
//! subresource (any kind that has one), computes a replica proposal per metric from the
//! pods the scale's selector picks (the shared Pod informer) and their metrics (a
//! [`MetricsSource`], by default the resource metrics API), takes the largest, holds it
//! with stabilization and the scaling policies ([`behavior`]), clamps it to
//! min/maxReplicas, updates the scale when it differs, and writes the HPA's status
//! (replicas, current metrics, the AbleToScale / ScalingActive / ScalingLimited
//! conditions with kube's reasons and messages) through the status subresource when it
//! changed. What went wrong is reported as kube reports it: conditions and Warning
//! Events (`FailedGetScale`, `FailedGetResourceMetric`, `FailedComputeMetricsReplicas`,
//! `FailedRescale` …); a rescale is a Normal `SuccessfulRescale` Event.
//!
//! Outcomes are not errors: a target that is missing or metrics that are unavailable
//! leave the HPA's conditions saying so and the key comes back after the sync period,
//! never in a hot loop. Only a failed status write is an error (retried with backoff).
//!
//! Lifecycle: recommendations and scale events are kept in memory per HPA key (as kube
//! keeps them) and dropped when the HPA is deleted; a restarted controller starts them
//! afresh from the targets' current replica counts.

mod behavior;
pub mod metrics;
mod replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, CrossVersionObjectReference, ExternalMetricStatus,
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricIdentifier, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus,
    ObjectMetricStatus, PodsMetricStatus, ResourceMetricSource, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as KubeSelector, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, ResourceExt};
use skiff_api::quantity::Quantity;
use skiff_api::selector::LabelSelector;
use tokio::task::JoinHandle;

use crate::events::Recorder;
use crate::informer::{key_of, split_key, Change, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{self, ApiError};
use crate::Context;

pub use metrics::{
    ApiMetricsSource, ContainerMetrics, MetricsError, MetricsSource, PodMetricValue, PodMetrics,
    SharedMetricsSource,
};

use behavior::HpaState;
use replicas::{PodMetric, PodMetricsInfo, Readiness, Tolerances};

const ABLE_TO_SCALE: &str = "AbleToScale";
const SCALING_ACTIVE: &str = "ScalingActive";
const SCALING_LIMITED: &str = "ScalingLimited";

struct HpaController {
    ctx: Context,
    hpas: Informer<HorizontalPodAutoscaler>,
    pods: Informer<Pod>,
    metrics: Arc<dyn MetricsSource>,
    recorder: Recorder,
    /// Recommendations and scale events by HPA key.
    states: Mutex<HashMap<String, HpaState>>,
    /// The pod selector of every reconciled HPA by key, to refuse two HPAs on one pod.
    selectors: Mutex<HashMap<String, LabelSelector>>,
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let hpas = ctx.informers.informer::<HorizontalPodAutoscaler>();
    let pods = ctx.informers.informer::<Pod>();
    let queue = crate::Queue::new();
    {
        let q = queue.clone();
        hpas.on_change(move |c| {
            // The controller's own status writes are not news: the HPA comes back with
            // the sync period (kube rate-limits every HPA to it).
            let changed = match c {
                Change::Updated { old, new } => {
                    old.spec != new.spec || old.metadata.generation != new.metadata.generation
                }
                Change::Added(_) | Change::Deleted(_) => true,
            };
            if changed {
                q.add(key_of(&**c.object()));
            }
        });
    }
    let ready = {
        let (h, p) = (hpas.clone(), pods.clone());
        async move {
            h.synced().await;
            p.synced().await;
        }
    };
    let metrics = match &ctx.config.hpa_metrics {
        Some(m) => m.0.clone(),
        None => Arc::new(ApiMetricsSource::new(ctx.client.clone())) as Arc<dyn MetricsSource>,
    };
    let c = HpaController {
        ctx: ctx.clone(),
        hpas,
        pods,
        metrics,
        recorder: ctx.events.recorder("horizontal-pod-autoscaler"),
        states: Mutex::default(),
        selectors: Mutex::default(),
    };
    Some(runner::spawn(
        Arc::new(c),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The message of an API error as client-go prints it (the Status message).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// A milli-value as a canonical decimal quantity (kube's NewMilliQuantity(v, DecimalSI)).
fn milli_quantity(v: i64) -> KubeQuantity {
    if v == 0 {
        return KubeQuantity("0".into());
    }
    if v % 1000 != 0 {
        return KubeQuantity(format!("{v}m"));
    }
    let mut n = v / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while n % 1000 == 0 && suffix < SUFFIXES.len() - 1 {
        n /= 1000;
        suffix += 1;
    }
    KubeQuantity(format!("{n}{}", SUFFIXES[suffix]))
}

fn milli_of(q: &KubeQuantity) -> Result<i64, String> {
    Quantity::parse(&q.0)
        .map(|q| q.milli_value())
        .map_err(|e| format!("invalid quantity {:?}: {e}", q.0))
}

/// Sets a condition, keeping its lastTransitionTime unless its status changes (kube's
/// setConditionInList).
fn set_condition(
    st: &mut HorizontalPodAutoscalerStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    let conds = st.conditions.get_or_insert_with(Vec::new);
    let i = match conds.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conds.push(HorizontalPodAutoscalerCondition {
                type_: type_.into(),
                ..Default::default()
            });
            conds.len() - 1
        }
    };
    let c = &mut conds[i];
    if c.status != status {
        c.last_transition_time = Some(Time(now));
    }
    c.status = status.into();
    c.reason = Some(reason.into());
    c.message = Some(message.into());
}

/// A failed metric: the condition it sets and the error it reports upwards.
struct MetricFailure {
    reason: &'static str,
    /// The cause, as the condition and the Event say it.
    cause: String,
    /// The error as computeReplicasForMetric returns it.
    error: String,
}

/// One metric's proposal.
struct Proposal {
    replicas: i32,
    metric: String,
    status: MetricStatus,
}

/// What one reconcile needs besides the HPA.
struct Sync<'a> {
    hpa: &'a HorizontalPodAutoscaler,
    key: &'a str,
    ns: String,
    now: Timestamp,
    st: HorizontalPodAutoscalerStatus,
}

impl HpaController {
    fn with_state<T>(&self, key: &str, f: impl FnOnce(&mut HpaState) -> T) -> T {
        f(lock(&self.states).entry(key.to_string()).or_default())
    }

    fn forget(&self, key: &str) {
        lock(&self.states).remove(key);
        lock(&self.selectors).remove(key);
    }

    fn readiness(&self, now: Timestamp) -> Readiness {
        Readiness {
            cpu_initialization_period: self
                .ctx
                .config
                .horizontal_pod_autoscaler_cpu_initialization_period,
            initial_readiness_delay: self
                .ctx
                .config
                .horizontal_pod_autoscaler_initial_readiness_delay,
            now,
        }
    }

    /// The flag's tolerance, or the HPA's own per direction when it sets one.
    fn tolerances(&self, hpa: &HorizontalPodAutoscaler) -> Tolerances {
        let default = self.ctx.config.horizontal_pod_autoscaler_tolerance;
        let behavior = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
        let of = |r: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>| {
            r.and_then(|r| r.tolerance.as_ref())
                .and_then(|q| milli_of(q).ok())
                .map_or(default, |m| m as f64 / 1000.0)
        };
        Tolerances {
            down: of(behavior.and_then(|b| b.scale_down.as_ref())),
            up: of(behavior.and_then(|b| b.scale_up.as_ref())),
        }
    }

    /// The API of the target's kind, or why it cannot be scaled.
    fn scale_api(
        &self,
        ns: &str,
        target: &CrossVersionObjectReference,
    ) -> Result<Api<DynamicObject>, String> {
        let api_version = target.api_version.as_deref().unwrap_or("");
        let Some(kind) = skiff_api::kinds::by_kind(api_version, &target.kind) else {
            let (group, _) = skiff_api::kinds::split_api_version(api_version);
            return Err(format!(
                "no matches for kind {:?} in group {group:?}",
                target.kind
            ));
        };
        if !kind.has_subresource("scale") {
            return Err(format!(
                "{} {:?} cannot be scaled: kind {} ({}) has no scale subresource",
                kind.plural,
                target.name,
                kind.kind,
                kind.api_version()
            ));
        }
        let gvk = GroupVersionKind::gvk(kind.group, kind.version, kind.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, kind.plural);
        Ok(if kind.namespaced {
            Api::namespaced_with(self.ctx.client.clone(), ns, &ar)
        } else {
            Api::all_with(self.ctx.client.clone(), &ar)
        })
    }

    fn failed_get_scale(&self, s: &mut Sync<'_>, message: &str) {
        self.recorder.warning(s.hpa, "FailedGetScale", message);
        set_condition(
            &mut s.st,
            ABLE_TO_SCALE,
            false,
            "FailedGetScale",
            format!("the HPA controller was unable to get the target's current scale: {message}"),
            s.now,
        );
    }

    /// kube's reconcileAutoscaler, up to the status write.
    async fn sync(&self, s: &mut Sync<'_>) {
        let spec = s.hpa.spec.clone().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let api = match self.scale_api(&s.ns, target) {
            Ok(api) => api,
            Err(m) => return self.failed_get_scale(s, &m),
        };
        let mut scale = match api.get_scale(&target.name).await {
            Ok(scale) => scale,
            Err(e) => return self.failed_get_scale(s, &api_message(&e)),
        };
        set_condition(
            &mut s.st,
            ABLE_TO_SCALE,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
            s.now,
        );
        let current = scale.spec.as_ref().and_then(|x| x.replicas).unwrap_or(0);
        self.with_state(s.key, |st| st.record_initial(current, s.now));
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;

        let mut desired = 0;
        let mut reason = String::new();
        let mut rescale = true;
        let mut statuses = None;
        let behavior = spec.behavior.as_ref().map(|b| {
            behavior::with_defaults(
                b,
                self.ctx
                    .config
                    .horizontal_pod_autoscaler_downscale_stabilization,
            )
        });
        if current == 0 && min != 0 {
            rescale = false;
            set_condition(
                &mut s.st,
                SCALING_ACTIVE,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                s.now,
            );
        } else if current > max {
            reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = max;
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let specs = match spec.metrics.as_deref() {
                Some(m) if !m.is_empty() => m.to_vec(),
                // The API server's default: 80 % cpu.
                _ => vec![default_metric()],
            };
            let computed = self.compute_replicas_for_metrics(s, &scale, &specs).await;
            let (proposal, metric, metric_statuses) = match computed {
                Ok(c) => c,
                Err((metric_statuses, error)) => {
                    {
                        let keep = s.st.desired_replicas;
                        set_observed(&mut s.st, current, keep, metric_statuses);
                    }
                    self.recorder
                        .warning(s.hpa, "FailedComputeMetricsReplicas", error.clone());
                    tracing::debug!(hpa = s.key, %error, "failed to compute desired number of replicas");
                    return;
                }
            };
            statuses = metric_statuses;
            let mut rescale_metric = String::new();
            if proposal > desired {
                desired = proposal;
                rescale_metric = metric;
            }
            if desired > current {
                reason = format!("{rescale_metric} above target");
            }
            if desired < current {
                reason = "All metrics below target".into();
            }
            let n = self.with_state(s.key, |st| match &behavior {
                None => st.normalize_legacy(
                    s.now,
                    self.ctx
                        .config
                        .horizontal_pod_autoscaler_downscale_stabilization,
                    current,
                    desired,
                    min,
                    max,
                ),
                Some((up, down)) => {
                    st.normalize_with_behavior(s.now, up, down, current, desired, min, max)
                }
            });
            let (ok, r, m) = n.able_to_scale;
            set_condition(&mut s.st, ABLE_TO_SCALE, ok, r, m, s.now);
            let (ok, r, m) = n.scaling_limited;
            set_condition(&mut s.st, SCALING_LIMITED, ok, r, m, s.now);
            desired = n.replicas;
            rescale = desired != current;
        }

        if rescale {
            if let Some(sp) = scale.spec.as_mut() {
                sp.replicas = Some(desired);
            } else {
                scale.spec = Some(k8s_openapi::api::autoscaling::v1::ScaleSpec {
                    replicas: Some(desired),
                });
            }
            if let Err(e) = self.update_scale(&api, &target.name, &scale).await {
                let e = api_message(&e);
                self.recorder.warning(
                    s.hpa,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {e}"),
                );
                set_condition(
                    &mut s.st,
                    ABLE_TO_SCALE,
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                    s.now,
                );
                {
                    let keep = s.st.desired_replicas;
                    set_observed(&mut s.st, current, keep, statuses);
                }
                return;
            }
            set_condition(
                &mut s.st,
                ABLE_TO_SCALE,
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
                s.now,
            );
            self.recorder.normal(
                s.hpa,
                "SuccessfulRescale",
                format!("New size: {desired}; reason: {reason}"),
            );
            let rules = behavior.as_ref().map(|(u, d)| (u, d));
            self.with_state(s.key, |st| {
                st.store_scale_event(rules, current, desired, s.now)
            });
            tracing::info!(hpa = s.key, current, desired, %reason, "rescaled");
        } else {
            desired = current;
        }
        set_observed(&mut s.st, current, desired, statuses);
        if rescale {
            s.st.last_scale_time = Some(Time(s.now));
        }
    }

    async fn update_scale(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        scale: &Scale,
    ) -> Result<Scale, kube::Error> {
        api.replace_scale(name, &PostParams::default(), scale).await
    }

    /// kube's validateAndParseSelector: the target's selector and the pods it picks.
    fn pods_of(&self, s: &mut Sync<'_>, selector: &str) -> Result<Vec<Arc<Pod>>, String> {
        if selector.is_empty() {
            let e = "selector is required";
            self.recorder.warning(s.hpa, "SelectorRequired", e);
            set_condition(
                &mut s.st,
                SCALING_ACTIVE,
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
                s.now,
            );
            return Err(e.into());
        }
        let parsed = match LabelSelector::parse(selector) {
            Ok(p) => p,
            Err(e) => {
                let e = format!(
                    "couldn't convert selector into a corresponding internal selector object: {e}"
                );
                self.recorder.warning(s.hpa, "InvalidSelector", e.clone());
                set_condition(
                    &mut s.st,
                    SCALING_ACTIVE,
                    false,
                    "InvalidSelector",
                    e.clone(),
                    s.now,
                );
                return Err(e);
            }
        };
        let mut pods = Vec::new();
        self.pods.for_each(Some(&s.ns), |p| {
            if parsed.matches(util::labels_of(&p.metadata)) {
                pods.push(p.clone());
            }
        });
        let mut controlling: Vec<String> = {
            let mut selectors = lock(&self.selectors);
            selectors.insert(s.key.to_string(), parsed);
            let prefix = format!("{}/", s.ns);
            selectors
                .iter()
                .filter(|(k, sel)| {
                    k.starts_with(&prefix)
                        && pods
                            .iter()
                            .any(|p| sel.matches(util::labels_of(&p.metadata)))
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        if controlling.len() > 1 {
            controlling.sort();
            let e = format!(
                "pods by selector {selector} are controlled by multiple HPAs: [{}]",
                controlling.join(" ")
            );
            self.recorder.warning(s.hpa, "AmbiguousSelector", e.clone());
            set_condition(
                &mut s.st,
                SCALING_ACTIVE,
                false,
                "AmbiguousSelector",
                e.clone(),
                s.now,
            );
            return Err(e);
        }
        Ok(pods)
    }

    /// kube's computeReplicasForMetrics: the largest proposal, or the first failure when
    /// every metric failed or a failure would hide a scale-down.
    #[allow(clippy::type_complexity)]
    async fn compute_replicas_for_metrics(
        &self,
        s: &mut Sync<'_>,
        scale: &Scale,
        specs: &[MetricSpec],
    ) -> Result<(i32, String, Option<Vec<MetricStatus>>), (Option<Vec<MetricStatus>>, String)> {
        let selector = scale
            .status
            .as_ref()
            .and_then(|x| x.selector.clone())
            .unwrap_or_default();
        let pods = self.pods_of(s, &selector).map_err(|e| (None, e))?;
        let spec_replicas = scale.spec.as_ref().and_then(|x| x.replicas).unwrap_or(0);
        let status_replicas = scale.status.as_ref().map_or(0, |x| x.replicas);
        let mut statuses = vec![MetricStatus::default(); specs.len()];
        let (mut replicas, mut metric) = (0, String::new());
        let mut invalid = 0;
        let mut first: Option<MetricFailure> = None;
        for (i, spec) in specs.iter().enumerate() {
            let r = self
                .compute_replicas_for_metric(
                    s,
                    spec,
                    spec_replicas,
                    status_replicas,
                    &selector,
                    &pods,
                )
                .await;
            match r {
                Ok(p) => {
                    statuses[i] = p.status;
                    if replicas == 0 || p.replicas > replicas {
                        replicas = p.replicas;
                        metric = p.metric;
                    }
                }
                Err(f) => {
                    self.recorder.warning(s.hpa, f.reason, f.cause.clone());
                    if first.is_none() {
                        first = Some(f);
                    }
                    invalid += 1;
                }
            }
        }
        let statuses = Some(statuses);
        if let Some(f) = &first {
            if invalid >= specs.len() || replicas < spec_replicas {
                set_condition(
                    &mut s.st,
                    SCALING_ACTIVE,
                    false,
                    f.reason,
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        f.cause
                    ),
                    s.now,
                );
                let e = format!(
                    "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                    specs.len(),
                    f.error
                );
                return Err((statuses, e));
            }
            tracing::debug!(hpa = s.key, error = %f.error, "some metrics are invalid; scaling on the others");
        }
        set_condition(
            &mut s.st,
            SCALING_ACTIVE,
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {metric}"),
            s.now,
        );
        Ok((replicas, metric, statuses))
    }

    /// kube's computeReplicasForMetric.
    async fn compute_replicas_for_metric(
        &self,
        s: &Sync<'_>,
        spec: &MetricSpec,
        spec_replicas: i32,
        status_replicas: i32,
        selector: &str,
        pods: &[Arc<Pod>],
    ) -> Result<Proposal, MetricFailure> {
        let fail =
            |reason: &'static str, cause: String, wrap: &dyn Fn(&str) -> String| MetricFailure {
                reason,
                error: wrap(&cause),
                cause,
            };
        let tol = self.tolerances(s.hpa);
        match spec.type_.as_str() {
            "Resource" | "ContainerResource" => {
                let (name, container, target, reason) =
                    match (&spec.resource, &spec.container_resource) {
                        (Some(r), _) if spec.type_ == "Resource" => (
                            r.name.clone(),
                            String::new(),
                            r.target.clone(),
                            "FailedGetResourceMetric",
                        ),
                        (_, Some(c)) if spec.type_ == "ContainerResource" => (
                            c.name.clone(),
                            c.container.clone(),
                            c.target.clone(),
                            "FailedGetContainerResourceMetric",
                        ),
                        _ => {
                            let e = format!("invalid metric source: {} is not set", spec.type_);
                            return Err(fail("InvalidMetricSourceType", e.clone(), &|c| {
                                c.to_string()
                            }));
                        }
                    };
                let r = self
                    .resource_metric(
                        s,
                        &name,
                        &container,
                        &target,
                        spec_replicas,
                        selector,
                        pods,
                        tol,
                    )
                    .await;
                let (replicas, current, metric) = r.map_err(|e| {
                    if container.is_empty() {
                        fail(reason, e, &|c| {
                            format!("failed to get {name} resource metric value: {c}")
                        })
                    } else {
                        fail(reason, e, &|c| {
                            format!("failed to get {container} container metric value: {c}")
                        })
                    }
                })?;
                let status = if container.is_empty() {
                    MetricStatus {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricStatus { name, current }),
                        ..Default::default()
                    }
                } else {
                    MetricStatus {
                        type_: "ContainerResource".into(),
                        container_resource: Some(ContainerResourceMetricStatus {
                            name,
                            container,
                            current,
                        }),
                        ..Default::default()
                    }
                };
                Ok(Proposal {
                    replicas,
                    metric,
                    status,
                })
            }
            "Pods" => {
                let wrap = |c: &str| format!("failed to get pods metric value: {c}");
                let Some(p) = &spec.pods else {
                    return Err(fail(
                        "FailedGetPodsMetric",
                        "invalid pods metric source: pods is not set".into(),
                        &wrap,
                    ));
                };
                let name = &p.metric.name;
                let metric_selector = selector_string(p.metric.selector.as_ref())
                    .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                let target = p
                    .target
                    .average_value
                    .as_ref()
                    .ok_or_else(|| {
                        "invalid pods metric source: no average value target was set".to_string()
                    })
                    .and_then(milli_of)
                    .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                let values = self
                    .metrics
                    .pods_metric(&s.ns, selector, name, &metric_selector)
                    .await
                    .map_err(|e| format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: {e}"))
                    .and_then(|v| {
                        if v.is_empty() {
                            Err(format!("unable to get metric {name}: no metrics returned from custom metrics API"))
                        } else {
                            Ok(v)
                        }
                    })
                    .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                let samples: PodMetricsInfo = values
                    .into_iter()
                    .map(|v| {
                        (
                            v.pod,
                            PodMetric {
                                value: v.milli_value,
                                timestamp: v.timestamp,
                                window: v.window,
                            },
                        )
                    })
                    .collect();
                let (replicas, usage) = replicas::plain_replicas(
                    samples,
                    spec_replicas,
                    target,
                    tol,
                    pods,
                    "",
                    &self.readiness(s.now),
                )
                .map_err(|e| fail("FailedGetPodsMetric", e, &wrap))?;
                Ok(Proposal {
                    replicas,
                    metric: format!("pods metric {name}"),
                    status: MetricStatus {
                        type_: "Pods".into(),
                        pods: Some(PodsMetricStatus {
                            metric: p.metric.clone(),
                            current: MetricValueStatus {
                                average_value: Some(milli_quantity(usage)),
                                ..Default::default()
                            },
                        }),
                        ..Default::default()
                    },
                })
            }
            "Object" => {
                let outer = |c: &str| format!("failed to get object metric value: {c}");
                let Some(o) = &spec.object else {
                    return Err(fail(
                        "FailedGetObjectMetric",
                        "invalid object metric source: object is not set".into(),
                        &outer,
                    ));
                };
                let name = &o.metric.name;
                let metric_selector = selector_string(o.metric.selector.as_ref())
                    .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                let obj = &o.described_object;
                let fetch = || async {
                    self.metrics
                        .object_metric(&s.ns, obj, name, &metric_selector)
                        .await
                        .map_err(|e| {
                            // kube's argument order, verbatim.
                            format!(
                                "unable to get metric {name}: {} on {} {}/unable to fetch metrics from custom metrics API: {e}",
                                obj.kind, s.ns, obj.name
                            )
                        })
                };
                let t = &o.target;
                if t.type_ == "Value" && t.value.is_some() {
                    let target = t
                        .value
                        .as_ref()
                        .map_or(Ok(0), milli_of)
                        .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                    let replicas = replicas::usage_ratio_replicas(
                        spec_replicas,
                        usage as f64 / target as f64,
                        tol,
                        pods,
                    )
                    .map_err(|e| fail("FailedGetObjectMetric", e, &outer))?;
                    Ok(Proposal {
                        replicas,
                        metric: format!("{} metric {name}", obj.kind),
                        status: object_status(
                            o.described_object.clone(),
                            &o.metric,
                            MetricValueStatus {
                                value: Some(milli_quantity(usage)),
                                ..Default::default()
                            },
                        ),
                    })
                } else if t.type_ == "AverageValue" && t.average_value.is_some() {
                    let wrap = |c: &str| outer(&format!("failed to get {name} object metric: {c}"));
                    let target = t
                        .average_value
                        .as_ref()
                        .map_or(Ok(0), milli_of)
                        .map_err(|e| fail("FailedGetObjectMetric", e, &wrap))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetObjectMetric", e, &wrap))?;
                    let (replicas, avg) =
                        replicas::per_pod_replicas(status_replicas, target, usage, tol);
                    Ok(Proposal {
                        replicas,
                        metric: format!(
                            "external metric {name}({})",
                            selector_debug(o.metric.selector.as_ref())
                        ),
                        status: object_status(
                            o.described_object.clone(),
                            &o.metric,
                            MetricValueStatus {
                                average_value: Some(milli_quantity(avg)),
                                ..Default::default()
                            },
                        ),
                    })
                } else {
                    Err(fail(
                        "FailedGetObjectMetric",
                        "invalid object metric source: neither a value target nor an average value target was set".into(),
                        &outer,
                    ))
                }
            }
            "External" => {
                let Some(x) = &spec.external else {
                    let e = "invalid external metric source: external is not set".to_string();
                    return Err(fail("FailedGetExternalMetric", e, &|c| c.to_string()));
                };
                let name = &x.metric.name;
                let outer = |c: &str| format!("failed to get {name} external metric value: {c}");
                let metric_selector = selector_string(x.metric.selector.as_ref())
                    .map_err(|e| fail("FailedGetExternalMetric", e, &outer))?;
                let shown = selector_debug(x.metric.selector.as_ref());
                let fetch = || async {
                    let v = self
                        .metrics
                        .external_metric(&s.ns, name, &metric_selector)
                        .await
                        .map_err(|e| format!("unable to get external metric {}/{name}/{shown}: unable to fetch metrics from external metrics API: {e}", s.ns))?;
                    if v.is_empty() {
                        return Err(format!("unable to get external metric {}/{name}/{shown}: no metrics returned from external metrics API", s.ns));
                    }
                    Ok(v.iter().fold(0i64, |a, b| a.saturating_add(*b)))
                };
                let status = |current| MetricStatus {
                    type_: "External".into(),
                    external: Some(ExternalMetricStatus {
                        metric: x.metric.clone(),
                        current,
                    }),
                    ..Default::default()
                };
                let metric = format!("external metric {name}({shown})");
                let t = &x.target;
                if let Some(av) = &t.average_value {
                    let wrap =
                        |c: &str| outer(&format!("failed to get {name} external metric: {c}"));
                    let target =
                        milli_of(av).map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let (replicas, avg) =
                        replicas::per_pod_replicas(status_replicas, target, usage, tol);
                    Ok(Proposal {
                        replicas,
                        metric,
                        status: status(MetricValueStatus {
                            average_value: Some(milli_quantity(avg)),
                            ..Default::default()
                        }),
                    })
                } else if let Some(v) = &t.value {
                    let wrap =
                        |c: &str| outer(&format!("failed to get external metric {name}: {c}"));
                    let target =
                        milli_of(v).map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let usage = fetch()
                        .await
                        .map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    let replicas = replicas::usage_ratio_replicas(
                        spec_replicas,
                        usage as f64 / target as f64,
                        tol,
                        pods,
                    )
                    .map_err(|e| fail("FailedGetExternalMetric", e, &wrap))?;
                    Ok(Proposal {
                        replicas,
                        metric,
                        status: status(MetricValueStatus {
                            value: Some(milli_quantity(usage)),
                            ..Default::default()
                        }),
                    })
                } else {
                    let e = "invalid external metric source: neither a value target nor an average value target was set";
                    Err(fail("FailedGetExternalMetric", e.into(), &outer))
                }
            }
            other => {
                let e = format!("unknown metric source type {other:?}");
                Err(fail("InvalidMetricSourceType", e, &|c| c.to_string()))
            }
        }
    }

    /// kube's computeStatusForResourceMetricGeneric.
    #[allow(clippy::too_many_arguments)]
    async fn resource_metric(
        &self,
        s: &Sync<'_>,
        resource: &str,
        container: &str,
        target: &MetricTarget,
        current: i32,
        selector: &str,
        pods: &[Arc<Pod>],
        tol: Tolerances,
    ) -> Result<(i32, MetricValueStatus, String), String> {
        let samples = || async {
            let list = self
                .metrics
                .pod_metrics(&s.ns, selector)
                .await
                .map_err(|e| format!("unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}"))?;
            replicas::resource_metrics(&list, resource, container)
                .map_err(|e| format!("unable to get metrics for resource {resource}: {e}"))
        };
        if let Some(av) = &target.average_value {
            let wrap = |e: String| format!("failed to get {resource} usage: {e}");
            let target = milli_of(av).map_err(wrap)?;
            let m = samples().await.map_err(wrap)?;
            let (replicas, raw) = replicas::plain_replicas(
                m,
                current,
                target,
                tol,
                pods,
                resource,
                &self.readiness(s.now),
            )
            .map_err(wrap)?;
            return Ok((
                replicas,
                MetricValueStatus {
                    average_value: Some(milli_quantity(raw)),
                    ..Default::default()
                },
                format!("{resource} resource"),
            ));
        }
        let Some(utilization) = target.average_utilization else {
            return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into());
        };
        let wrap = |e: String| format!("failed to get {resource} utilization: {e}");
        let m = samples().await.map_err(wrap)?;
        let o = replicas::resource_replicas(
            current,
            utilization,
            resource,
            tol,
            pods,
            m,
            container,
            &self.readiness(s.now),
        )
        .map_err(wrap)?;
        let metric = if container.is_empty() {
            format!("{resource} resource utilization (percentage of request)")
        } else {
            format!("{resource} container resource utilization (percentage of request)")
        };
        Ok((
            o.replicas,
            MetricValueStatus {
                average_utilization: Some(o.utilization),
                average_value: Some(milli_quantity(o.raw)),
                ..Default::default()
            },
            metric,
        ))
    }

    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        st: HorizontalPodAutoscalerStatus,
    ) -> Result<(), ApiError> {
        if hpa.status.as_ref() == Some(&st) {
            return Ok(());
        }
        let ns = hpa.namespace().unwrap_or_default();
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.ctx.client.clone(), &ns);
        let mut obj = hpa.clone();
        obj.status = Some(st);
        match api
            .replace_status(&hpa.name_any(), &PostParams::default(), &obj)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => {
                if !util::is_conflict(&e) {
                    self.recorder
                        .warning(hpa, "FailedUpdateStatus", api_message(&e));
                }
                Err(ApiError::new(
                    "update status of horizontalpodautoscaler",
                    key_of(hpa),
                    e,
                ))
            }
        }
    }
}

/// kube's setStatus: the replica counts and metrics, conditions and lastScaleTime kept.
fn set_observed(
    st: &mut HorizontalPodAutoscalerStatus,
    current: i32,
    desired: i32,
    metrics: Option<Vec<MetricStatus>>,
) {
    // Go omits a zero currentReplicas and an empty currentMetrics.
    st.current_replicas = (current != 0).then_some(current);
    st.desired_replicas = desired;
    st.current_metrics = metrics.filter(|m| !m.is_empty());
}

fn object_status(
    described_object: CrossVersionObjectReference,
    metric: &MetricIdentifier,
    current: MetricValueStatus,
) -> MetricStatus {
    MetricStatus {
        type_: "Object".into(),
        object: Some(ObjectMetricStatus {
            described_object,
            metric: metric.clone(),
            current,
        }),
        ..Default::default()
    }
}

fn default_metric() -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(80),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// A metric's label selector in its query-string form ("" for none).
fn selector_string(s: Option<&KubeSelector>) -> Result<String, String> {
    match s {
        None => Ok(String::new()),
        Some(s) => util::selector(Some(s))
            .map(|l| l.to_string())
            .map_err(|e| e.to_string()),
    }
}

/// How kube prints a metric selector in messages (`%+v` of a pointer; nil when unset).
fn selector_debug(s: Option<&KubeSelector>) -> String {
    match selector_string(s) {
        Ok(v) if s.is_some() => format!("&LabelSelector{{{v}}}"),
        _ => "nil".into(),
    }
}

#[async_trait::async_trait]
impl Reconciler for HpaController {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "horizontalpodautoscaling"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        let Some(hpa) = self.hpas.get_key(key) else {
            tracing::debug!(hpa = key, "deleted; its recommendations are dropped");
            self.forget(key);
            return Ok(Action::Done);
        };
        let mut s = Sync {
            hpa: &hpa,
            key,
            ns: split_key(key).0.to_string(),
            now: self.ctx.now(),
            st: hpa.status.clone().unwrap_or_default(),
        };
        self.sync(&mut s).await;
        let mut st = s.st;
        st.observed_generation = hpa.metadata.generation;
        self.write_status(&hpa, st).await?;
        Ok(Action::RequeueAfter(
            self.ctx.config.horizontal_pod_autoscaler_sync_period,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_quantities_print_as_kube_canonicalizes_them() {
        assert_eq!(milli_quantity(0).0, "0");
        assert_eq!(milli_quantity(250).0, "250m");
        assert_eq!(milli_quantity(2000).0, "2");
        assert_eq!(milli_quantity(1500).0, "1500m");
        assert_eq!(milli_quantity(1_048_576_000).0, "1048576");
        assert_eq!(milli_quantity(100_000_000_000).0, "100M");
    }

    #[test]
    fn conditions_keep_their_transition_time_while_their_status_holds() {
        let t0: Timestamp = "2024-01-01T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2024-01-01T10:05:00Z".parse().unwrap();
        let mut st = HorizontalPodAutoscalerStatus::default();
        set_condition(&mut st, ABLE_TO_SCALE, true, "A", "a", t0);
        set_condition(&mut st, ABLE_TO_SCALE, true, "B", "b", t1);
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (
                c.reason.as_deref(),
                c.last_transition_time.as_ref().map(|t| t.0)
            ),
            (Some("B"), Some(t0))
        );
        set_condition(&mut st, ABLE_TO_SCALE, false, "C", "c", t1);
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(c.last_transition_time.as_ref().map(|t| t.0), Some(t1));
        assert_eq!(st.conditions.as_ref().unwrap().len(), 1);
    }
}
