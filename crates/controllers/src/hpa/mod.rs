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
mod compute;

use compute::{default_metric, milli_of};
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
