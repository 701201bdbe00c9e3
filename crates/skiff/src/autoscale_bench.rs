//! `skiff bench autoscale`: how fast the HPA follows load on one real node (server child
//! with the given metric resolution, HPA sync period and downscale window, plus a
//! standalone agent, as `skiff bench pods` runs them).
//!
//! A Deployment `burn` (100m CPU request, 200m limit) whose pod burns a CPU while
//! /tmp/go exists and /tmp/stop does not, and an HPA at 50 % of the request (min 1,
//! max `--max`). Each round: the load starts in the one pod (`kubectl exec … touch`),
//! and the bench records when the metrics API first shows it, when the HPA raises the
//! Deployment's replicas (the decision) and when the new pods are Ready; then the load
//! stops and it records when the replicas are back to 1. Figures are medians over
//! `--rounds`, against their floors: the load shows within one scrape, a decision within
//! one sync after that, a scale-in only after the downscale window.
//!
//! Also: the metrics store's memory per pod (1,000 pods, estimated from its own
//! allocations). The anchor is metrics-server's published figures (about 2 MB of memory
//! per node of ~30 pods, 15 s resolution) and the HPA's 15 s sync.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::bench::median;
use crate::pods_bench::{kubia, BenchNode, Work};

#[derive(Debug, clap::Args)]
pub struct AutoscaleBenchArgs {
    /// Load-up/load-down rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The server's `--metric-resolution`.
    #[arg(long, default_value = "15s", value_parser = crate::server_cmd::parse_duration)]
    pub metric_resolution: Duration,
    /// The server's `--horizontal-pod-autoscaler-sync-period`.
    #[arg(long, default_value = "15s", value_parser = crate::server_cmd::parse_duration)]
    pub sync_period: Duration,
    /// The server's `--horizontal-pod-autoscaler-downscale-stabilization`.
    #[arg(long, default_value = "30s", value_parser = crate::server_cmd::parse_duration)]
    pub downscale_stabilization: Duration,
    /// The HPA's maxReplicas.
    #[arg(long, default_value_t = 4)]
    pub max: i32,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub fn main(args: AutoscaleBenchArgs) -> Result<()> {
    crate::server_cmd::serve_blocking(run(args))
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

async fn run(args: AutoscaleBenchArgs) -> Result<()> {
    let work =
        Work(std::env::temp_dir().join(format!("skiff-bench-autoscale-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir_all(&work.0).with_context(|| format!("create {}", work.0.display()))?;
    let (_registry, image) = kubia(&work.0)?;
    let flags: Vec<String> = vec![
        "--metric-resolution".into(),
        secs(args.metric_resolution),
        "--horizontal-pod-autoscaler-sync-period".into(),
        secs(args.sync_period),
        "--horizontal-pod-autoscaler-downscale-stabilization".into(),
        secs(args.downscale_stabilization),
    ];
    let node = BenchNode::start("autoscale", &work.0, &flags).await?;
    let per_pod = skiff_apiserver::metrics_store_bytes_per_pod(1000);
    println!(
        "skiff bench autoscale: metric resolution {:?}, HPA sync {:?}, downscale window {:?}; metrics store {per_pod:.0} bytes per pod (1,000 pods), {:.1} KB for a node of 30 pods",
        args.metric_resolution,
        args.sync_period,
        args.downscale_stabilization,
        per_pod * 30.0 / 1024.0
    );
    rounds(&args, &node, &image).await
}

/// `kubectl exec POD -- sh -c SCRIPT` against the bench server.
fn exec(node: &BenchNode, pod: &str, script: &str) -> Result<()> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&node.kubeconfig)
        .args(["exec", pod, "--", "sh", "-c", script])
        .output()
        .context("run kubectl (the bench drives the pods with kubectl exec)")?;
    if !out.status.success() {
        bail!(
            "kubectl exec {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The burning pod's CPU in the metrics API, millicores (None: no metrics yet).
async fn pod_cpu(client: &kube::Client, pod: &str) -> Option<f64> {
    let req = http::Request::get(format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod}"
    ))
    .body(Vec::new())
    .ok()?;
    let v: serde_json::Value = client.request(req).await.ok()?;
    let q = v.pointer("/containers/0/usage/cpu")?.as_str()?;
    let q: skiff_api::quantity::Quantity = q.parse().ok()?;
    Some(q.milli_value() as f64)
}

async fn rounds(args: &AutoscaleBenchArgs, node: &BenchNode, image: &str) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let client = &node.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "burn"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "burn"}},
            "template": {"metadata": {"labels": {"app": "burn"}}, "spec": {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "b", "image": image,
                    "command": ["sh", "-c", "while :; do if [ -f /tmp/go ] && [ ! -f /tmp/stop ]; then :; else sleep 0.1; fi; done"],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}}]}}}
    }))?;
    let start = Instant::now();
    // The node may still be joining: the create waits for nothing, the pod for the node.
    deployments.create(&PostParams::default(), &d).await?;
    let ready_one = || async {
        let d = deployments.get("burn").await.ok()?;
        let st = d.status?;
        (st.ready_replicas == Some(1) && st.replicas == Some(1)).then_some(())
    };
    while ready_one().await.is_none() {
        if start.elapsed() > timeout {
            bail!("burn is not Ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "burn"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burn"},
            "minReplicas": 1, "maxReplicas": args.max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    hpas.create(&PostParams::default(), &serde_json::from_value(hpa)?)
        .await?;
    let (mut show, mut decide, mut decide_total, mut up_ready, mut down) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        let list = pods.list(&ListParams::default().labels("app=burn")).await?;
        let Some(pod) = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .find_map(|p| p.metadata.name.clone())
        else {
            bail!("no burn pod");
        };
        // Metrics of the idle pod first, so the load's first showing is what is timed.
        let t = Instant::now();
        while pod_cpu(client, &pod).await.is_none() {
            if t.elapsed() > timeout {
                bail!("no metrics for {pod} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        exec(node, &pod, "rm -f /tmp/stop; touch /tmp/go")?;
        let t0 = Instant::now();
        let (mut shown, mut decided) = (None, None);
        loop {
            if shown.is_none() && pod_cpu(client, &pod).await.is_some_and(|m| m >= 50.0) {
                shown = Some(t0.elapsed());
            }
            let d = deployments.get("burn").await?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            if decided.is_none() && want > 1 {
                decided = Some(t0.elapsed());
            }
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if want > 1 && ready == want {
                break;
            }
            if t0.elapsed() > timeout {
                bail!("round {round}: no scale-out within {timeout:?} (replicas {want}, ready {ready})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ready_at = t0.elapsed();
        let (shown, decided) = (
            shown.unwrap_or(decided.unwrap_or_default()),
            decided.unwrap_or_default(),
        );
        exec(node, &pod, "touch /tmp/stop")?;
        let t1 = Instant::now();
        loop {
            let d = deployments.get("burn").await?;
            if d.spec.and_then(|s| s.replicas) == Some(1) {
                break;
            }
            if t1.elapsed() > timeout {
                bail!("round {round}: no scale-in within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let down_at = t1.elapsed();
        println!(
            "round {}: load shows in the metrics after {:.1} s, scale-out decided {:.1} s after that ({:.1} s after the load), new pods Ready {:.1} s after the load; scale-in {:.1} s after the load stopped",
            round + 1,
            shown.as_secs_f64(),
            decided.saturating_sub(shown).as_secs_f64(),
            decided.as_secs_f64(),
            ready_at.as_secs_f64(),
            down_at.as_secs_f64()
        );
        show.push(shown.as_secs_f64());
        decide.push(decided.saturating_sub(shown).as_secs_f64());
        decide_total.push(decided.as_secs_f64());
        up_ready.push(ready_at.as_secs_f64());
        down.push(down_at.as_secs_f64());
        // The pods of the scale-in go; the next round starts from one settled pod.
        let t = Instant::now();
        while ready_one().await.is_none() {
            if t.elapsed() > timeout {
                bail!("burn did not settle at one pod");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "medians over {} rounds: load -> in the metrics {:.1} s (floor: one scrape, {:?}); -> scale-out decision {:.1} s more (target: within one scrape, {:?}; {:.1} s after the load); load -> new pods Ready {:.1} s; load end -> scale-in {:.1} s (window {:?})",
        args.rounds,
        median(&mut show),
        args.metric_resolution,
        median(&mut decide),
        args.metric_resolution,
        median(&mut decide_total),
        median(&mut up_ready),
        median(&mut down),
        args.downscale_stabilization
    );
    Ok(())
}
