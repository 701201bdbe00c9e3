//! The HorizontalPodAutoscaler controller against the real API server: Deployments whose
//! pods the test makes Ready, metrics from a fake resource metrics source (or the real
//! one through the API server), and the HPA's scale changes, status, conditions and
//! Events as Kubernetes writes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use skiff_api::quantity::Quantity;
use skiff_controllers::{
    Config, ContainerMetrics, MetricsError, MetricsSource, PodMetrics, SharedMetricsSource,
};

const NS: &str = "default";

/// Metrics for the Running pods of a selector, every pod at the cpu usage the test set
/// for that selector; a selector with no usage set answers as an absent metrics API.
struct FakeMetrics {
    client: Client,
    cpu: Mutex<HashMap<String, String>>,
}

impl FakeMetrics {
    fn set(&self, selector: &str, usage: &str) {
        self.cpu
            .lock()
            .unwrap()
            .insert(selector.into(), usage.into());
    }
}

#[async_trait::async_trait]
impl MetricsSource for FakeMetrics {
    async fn pod_metrics(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<PodMetrics>, MetricsError> {
        let usage = self.cpu.lock().unwrap().get(selector).cloned();
        let Some(usage) = usage else {
            return Err(MetricsError::Status {
                code: 503,
                message:
                    "the server is currently unable to handle the request (get pods.metrics.k8s.io)"
                        .into(),
            });
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| MetricsError::Transport { source })?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| PodMetrics {
                name: p.metadata.name.unwrap(),
                namespace: namespace.into(),
                timestamp: Timestamp::now(),
                window: Duration::from_secs(15),
                containers: vec![ContainerMetrics {
                    name: "c".into(),
                    usage: [("cpu".to_string(), Quantity::parse(&usage).unwrap())].into(),
                }],
            })
            .collect())
    }
}

fn config(metrics: Option<Arc<FakeMetrics>>) -> Config {
    Config {
        controllers: vec!["horizontalpodautoscaling".into()],
        horizontal_pod_autoscaler_sync_period: Duration::from_millis(200),
        horizontal_pod_autoscaler_downscale_stabilization: Duration::from_secs(2),
        // The test's pods became Ready just now: count their samples at once.
        horizontal_pod_autoscaler_cpu_initialization_period: Duration::ZERO,
        hpa_metrics: metrics.map(|m| SharedMetricsSource(m as Arc<dyn MetricsSource>)),
        ..Default::default()
    }
}

/// A server with the HPA controller reading metrics from a fake that lists the
/// cluster's pods.
async fn start_cluster() -> (Cluster, Arc<FakeMetrics>) {
    let c = Cluster::server_only().await;
    let fake = Arc::new(FakeMetrics {
        client: c.admin.clone(),
        cpu: Mutex::default(),
    });
    let (client, stop) = (c.controller_client(), c.stop.clone());
    let config = config(Some(fake.clone()));
    tokio::spawn(async move {
        skiff_controllers::run(client, config, stop)
            .await
            .expect("controller manager");
    });
    (c, fake)
}

/// A Deployment `app` of `replicas` (no deployment controller runs: the test makes the
/// pods) whose containers request `request` cpu.
async fn deployment(c: &Cluster, app: &str, replicas: i32, request: Option<&str>) {
    let resources = match request {
        Some(r) => json!({"requests": {"cpu": r}}),
        None => json!({}),
    };
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}}},
    }))
    .unwrap();
    c.api::<Deployment>(NS)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// `n` Running and Ready pods of `app` requesting `request` cpu.
async fn pods(c: &Cluster, app: &str, n: usize, request: Option<&str>) {
    let resources = match request {
        Some(r) => json!({"requests": {"cpu": r}}),
        None => json!({}),
    };
    for i in 0..n {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{app}-{i}"), "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
        }))
        .unwrap();
        let p = c
            .api::<Pod>(NS)
            .create(&PostParams::default(), &p)
            .await
            .unwrap();
        c.set_running_ready(&p).await;
    }
}

async fn hpa(c: &Cluster, name: &str, spec: Value) {
    let h: HorizontalPodAutoscaler =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    c.api::<HorizontalPodAutoscaler>(NS)
        .create(&PostParams::default(), &h)
        .await
        .unwrap();
}

/// An HPA on Deployment `app` at `target` % cpu.
fn cpu_spec(app: &str, min: i32, max: i32, target: i32) -> Value {
    json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
        "minReplicas": min, "maxReplicas": max,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target}}}],
    })
}

async fn replicas(c: &Cluster, app: &str) -> i32 {
    let d = c.api::<Deployment>(NS).get(app).await.unwrap();
    d.spec.unwrap().replicas.unwrap_or(1)
}

async fn get_hpa(c: &Cluster, name: &str) -> HorizontalPodAutoscaler {
    c.api::<HorizontalPodAutoscaler>(NS)
        .get(name)
        .await
        .unwrap()
}

fn condition(h: &HorizontalPodAutoscaler, type_: &str) -> Option<HorizontalPodAutoscalerCondition> {
    h.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Waits for the HPA's condition `type_` to read `status`/`reason`; returns its message.
async fn wait_condition(
    c: &Cluster,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> String {
    eventually(&format!("{name}: {type_}={status} {reason}"), || async {
        let h = get_hpa(c, name).await;
        let cond = condition(&h, type_)?;
        (cond.status == status && cond.reason.as_deref() == Some(reason))
            .then(|| cond.message.unwrap_or_default())
    })
    .await
}

/// Waits for an Event on HPA `name` with `reason` whose message passes `want`.
async fn wait_event(
    c: &Cluster,
    name: &str,
    type_: &str,
    reason: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    eventually(&format!("{name}: {type_} Event {reason}"), || async {
        let events = c
            .api::<Event>(NS)
            .list(&ListParams::default())
            .await
            .unwrap();
        events.items.into_iter().find_map(|e| {
            let m = e.message.clone().unwrap_or_default();
            (e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.kind.as_deref() == Some("HorizontalPodAutoscaler")
                && e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some(type_)
                && e.source.as_ref().and_then(|s| s.component.as_deref())
                    == Some("horizontal-pod-autoscaler")
                && want(&m))
            .then_some(m)
        })
    })
    .await
}

async fn wait_replicas(c: &Cluster, app: &str, n: i32) {
    eventually(&format!("{app} at {n} replicas"), || async {
        (replicas(c, app).await == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn scales_up_to_max_then_down_after_the_stabilization_window() {
    let (c, fake) = start_cluster().await;
    deployment(&c, "web", 2, Some("100m")).await;
    pods(&c, "web", 2, Some("100m")).await;
    fake.set("app=web", "100m");
    hpa(&c, "web", cpu_spec("web", 1, 3, 50)).await;

    // 100 % of the request against 50 %: twice the pods, capped at maxReplicas.
    wait_replicas(&c, "web", 3).await;
    wait_event(&c, "web", "Normal", "SuccessfulRescale", |m| {
        m == "New size: 3; reason: cpu resource utilization (percentage of request) above target"
    })
    .await;
    let msg = wait_condition(&c, "web", "ScalingLimited", "True", "TooManyReplicas").await;
    assert_eq!(
        msg,
        "the desired replica count is more than the maximum replica count"
    );
    let h = eventually("status of the scaled HPA", || async {
        let h = get_hpa(&c, "web").await;
        (h.status.as_ref()?.current_replicas == Some(3)).then_some(h)
    })
    .await;
    let st = h.status.clone().unwrap();
    assert_eq!(st.desired_replicas, 3);
    assert!(st.last_scale_time.is_some());
    assert_eq!(st.observed_generation, h.metadata.generation);
    let m = &st.current_metrics.unwrap()[0];
    assert_eq!(m.type_, "Resource");
    let r = m.resource.as_ref().unwrap();
    assert_eq!(r.name, "cpu");
    assert_eq!(r.current.average_utilization, Some(100));
    assert_eq!(r.current.average_value.as_ref().unwrap().0, "100m");
    let active = condition(&h, "ScalingActive").unwrap();
    assert_eq!(active.status, "True");
    assert_eq!(active.reason.as_deref(), Some("ValidMetricFound"));
    assert_eq!(
        active.message.as_deref(),
        Some("the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)")
    );
    assert_eq!(condition(&h, "AbleToScale").unwrap().status, "True");

    // Idle: the recommendation of 1 waits for the stabilization window, then applies.
    fake.set("app=web", "5m");
    let msg = wait_condition(&c, "web", "AbleToScale", "True", "ScaleDownStabilized").await;
    assert_eq!(
        msg,
        "recent recommendations were higher than current one, applying the highest recent recommendation"
    );
    assert_eq!(
        replicas(&c, "web").await,
        3,
        "scaled down inside the window"
    );
    wait_replicas(&c, "web", 1).await;
    wait_event(&c, "web", "Normal", "SuccessfulRescale", |m| {
        m == "New size: 1; reason: All metrics below target"
    })
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn behavior_policies_limit_each_step() {
    let (c, fake) = start_cluster().await;
    deployment(&c, "api", 1, Some("200m")).await;
    pods(&c, "api", 2, Some("200m")).await;
    fake.set("app=api", "400m");
    let mut spec = cpu_spec("api", 1, 10, 50);
    spec["behavior"] = json!({"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}]}});
    hpa(&c, "api", spec).await;

    // The pods ask for 8 (200 % of 50 % on 2 ready pods = 4 × 2), one pod per period.
    wait_replicas(&c, "api", 2).await;
    let msg = wait_condition(&c, "api", "ScalingLimited", "True", "ScaleUpLimit").await;
    assert_eq!(
        msg,
        "the desired replica count is increasing faster than the maximum scale rate"
    );
    let h = eventually("desired replicas held by the policy", || async {
        let h = get_hpa(&c, "api").await;
        (h.status.as_ref()?.current_replicas == Some(2)).then_some(h)
    })
    .await;
    assert_eq!(h.status.unwrap().desired_replicas, 2);
    assert_eq!(replicas(&c, "api").await, 2);
    c.shutdown().await;
}

#[tokio::test]
async fn failures_are_conditions_and_events_and_other_hpas_keep_working() {
    let (c, fake) = start_cluster().await;
    // A target whose containers request no cpu.
    deployment(&c, "norequest", 1, None).await;
    pods(&c, "norequest", 1, None).await;
    fake.set("app=norequest", "50m");
    hpa(&c, "norequest", cpu_spec("norequest", 1, 5, 50)).await;
    // A target that does not exist.
    hpa(&c, "missing", cpu_spec("nope", 1, 5, 50)).await;
    // A kind without a scale subresource.
    let mut spec = cpu_spec("x", 1, 5, 50);
    spec["scaleTargetRef"] = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "x"});
    hpa(&c, "unscalable", spec).await;
    // An Object metric: no custom metrics API is served.
    deployment(&c, "queue", 1, Some("100m")).await;
    pods(&c, "queue", 1, Some("100m")).await;
    hpa(
        &c,
        "queue",
        json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "queue"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Object", "object": {
                "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "queue"},
                "metric": {"name": "depth"},
                "target": {"type": "Value", "value": "10"}}}],
        }),
    )
    .await;
    // The resource metrics API is down for this one.
    deployment(&c, "dark", 1, Some("100m")).await;
    pods(&c, "dark", 1, Some("100m")).await;
    hpa(&c, "dark", cpu_spec("dark", 1, 5, 50)).await;
    // Two HPAs on the same pods.
    deployment(&c, "twin", 1, Some("100m")).await;
    pods(&c, "twin", 1, Some("100m")).await;
    fake.set("app=twin", "100m");
    hpa(&c, "twin-a", cpu_spec("twin", 1, 5, 50)).await;
    hpa(&c, "twin-b", cpu_spec("twin", 1, 5, 50)).await;
    // And one that works.
    deployment(&c, "good", 1, Some("100m")).await;
    pods(&c, "good", 2, Some("100m")).await;
    fake.set("app=good", "100m");
    hpa(&c, "good", cpu_spec("good", 1, 10, 50)).await;

    let msg = wait_condition(
        &c,
        "norequest",
        "ScalingActive",
        "False",
        "FailedGetResourceMetric",
    )
    .await;
    assert_eq!(
        msg,
        "the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu in container c of Pod norequest-0"
    );
    wait_event(&c, "norequest", "Warning", "FailedGetResourceMetric", |m| {
        m == "failed to get cpu utilization: missing request for cpu in container c of Pod norequest-0"
    })
    .await;
    wait_event(&c, "norequest", "Warning", "FailedComputeMetricsReplicas", |m| {
        m == "invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: failed to get cpu utilization: missing request for cpu in container c of Pod norequest-0"
    })
    .await;

    let msg = wait_condition(&c, "missing", "AbleToScale", "False", "FailedGetScale").await;
    assert_eq!(
        msg,
        "the HPA controller was unable to get the target's current scale: deployments.apps \"nope\" not found"
    );
    wait_event(&c, "missing", "Warning", "FailedGetScale", |m| {
        m == "deployments.apps \"nope\" not found"
    })
    .await;

    let msg = wait_condition(&c, "unscalable", "AbleToScale", "False", "FailedGetScale").await;
    assert_eq!(
        msg,
        "the HPA controller was unable to get the target's current scale: configmaps \"x\" cannot be scaled: kind ConfigMap (v1) has no scale subresource"
    );

    let msg = wait_condition(
        &c,
        "queue",
        "ScalingActive",
        "False",
        "FailedGetObjectMetric",
    )
    .await;
    assert!(
        msg.starts_with(
            "the HPA was unable to compute the replica count: unable to get metric depth: "
        ),
        "{msg}"
    );
    assert!(
        msg.contains("no custom metrics API (custom.metrics.k8s.io) registered"),
        "{msg}"
    );

    let msg = wait_condition(
        &c,
        "dark",
        "ScalingActive",
        "False",
        "FailedGetResourceMetric",
    )
    .await;
    assert_eq!(
        msg,
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server is currently unable to handle the request (get pods.metrics.k8s.io)"
    );

    for name in ["twin-a", "twin-b"] {
        let msg = wait_condition(&c, name, "ScalingActive", "False", "AmbiguousSelector").await;
        assert_eq!(
            msg,
            "pods by selector app=twin are controlled by multiple HPAs: [default/twin-a default/twin-b]"
        );
    }

    // Ratio 2 on two ready pods: 4, the legacy limit from 1 replica.
    wait_replicas(&c, "good", 4).await;
    wait_event(&c, "good", "Normal", "SuccessfulRescale", |m| {
        m.starts_with("New size: 4;")
    })
    .await;
    // No failed HPA moved its target.
    for app in ["norequest", "queue", "dark"] {
        assert_eq!(replicas(&c, app).await, 1, "{app}");
    }
    c.shutdown().await;
}

#[tokio::test]
async fn the_real_metrics_source_reports_an_unreadable_metrics_api_as_a_condition() {
    let c = Cluster::start_with(config(None)).await;
    deployment(&c, "web", 1, Some("100m")).await;
    pods(&c, "web", 1, Some("100m")).await;
    hpa(&c, "web", cpu_spec("web", 1, 5, 50)).await;
    // Whether or not the server serves metrics.k8s.io, no kubelet reports usage here.
    let msg = wait_condition(
        &c,
        "web",
        "ScalingActive",
        "False",
        "FailedGetResourceMetric",
    )
    .await;
    assert!(
        msg.starts_with("the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: "),
        "{msg}"
    );
    assert_eq!(replicas(&c, "web").await, 1);
    c.shutdown().await;
}
