//! `skiff bench controllers`: a Deployment of N replicas on hollow nodes, end to end. A
//! fresh `skiff server --disable-agent` child (API server, scheduler and controller
//! manager in one process; this binary) on a free loopback port with a temp data dir;
//! `--nodes` hollow nodes (skiff_controllers::hollow, in this process or, with
//! `--hollow-process`, a `skiff hollow-nodes` child) that report bound pods Running and
//! Ready. Two phases, each timed from the write until a watch of the pods sees the end
//! state and the Deployment's status agrees:
//!
//! - create: the Deployment of `--replicas` pods, until every pod is Running and Ready
//!   and the Deployment reports them ready;
//! - rolling update: the pod template's image changed (as `kubectl set image`), until the
//!   rollout is complete as `kubectl rollout status` sees it (observedGeneration current,
//!   updated = ready = available = replicas, no old pods left) and every pod runs the new
//!   image.
//!
//! Prints both times, pods per second, the server's RSS (peak and current), and the
//! anchor: kube-controller-manager's default client limits (20 QPS, burst 30) alone need
//! over 8 minutes for 10,000 pod creates. A phase that does not finish within
//! `--timeout` fails with what it reached, instead of hanging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct ControllersBenchArgs {
    /// Hollow nodes (110 pods each).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 10_000)]
    replicas: usize,
    /// Run the hollow nodes as a `skiff hollow-nodes` child instead of in this process.
    #[arg(long)]
    hollow_process: bool,
    /// Instead of a Deployment, create `--replicas` bare pods bound to the nodes by name
    /// (no scheduler, no controllers act): what the hollow nodes and the API server alone
    /// take to get them Running and Ready.
    #[arg(long)]
    bare_pods: bool,
    /// A phase that has not finished after this long fails.
    #[arg(long, default_value = "300s", value_parser = crate::server_cmd::parse_duration)]
    timeout: Duration,
    /// Extra `skiff server` arguments (repeat).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

const NAMESPACE: &str = "bench";
const NAME: &str = "bench";
const IMAGE_1: &str = "registry.example/bench:1";
const IMAGE_2: &str = "registry.example/bench:2";
/// Pods per hollow node.
const NODE_PODS: usize = 110;
/// The anchor: kube-controller-manager's default client QPS.
const KUBE_QPS: f64 = 20.0;

pub fn main(args: ControllersBenchArgs) -> Result<()> {
    if args.replicas == 0 || args.nodes == 0 {
        bail!("--nodes and --replicas must be at least 1");
    }
    if args.replicas > args.nodes * NODE_PODS {
        bail!(
            "{} replicas do not fit on {} nodes of {NODE_PODS} pods; raise --nodes to at least {}",
            args.replicas,
            args.nodes,
            args.replicas.div_ceil(NODE_PODS)
        );
    }
    crate::api_bench::raise_fd_limit();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(run(args))
}

/// What the pod watch has seen: live pods by name → (ready, runs the new image).
#[derive(Default)]
struct Seen {
    pods: HashMap<String, (bool, bool)>,
}

impl Seen {
    /// (live pods, ready with image 1, ready with image 2).
    fn counts(&self) -> (usize, usize, usize) {
        let mut c = (self.pods.len(), 0, 0);
        for (ready, new) in self.pods.values() {
            match (ready, new) {
                (true, false) => c.1 += 1,
                (true, true) => c.2 += 1,
                _ => {}
            }
        }
        c
    }
}

fn ready(p: &Pod) -> bool {
    let Some(s) = &p.status else { return false };
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn watch_pods(api: Api<Pod>, seen: Arc<Mutex<Seen>>, changed: Arc<tokio::sync::Notify>) {
    let mut stream = watcher(
        api,
        watcher::Config::default().labels(&format!("app={NAME}")),
    )
    .default_backoff()
    .boxed();
    while let Some(ev) = stream.next().await {
        let Ok(ev) = ev else { continue };
        let mut s = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ev {
            Event::Apply(p) | Event::InitApply(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                if p.metadata.deletion_timestamp.is_some() {
                    s.pods.remove(&name);
                } else {
                    let new = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.image.as_deref())
                        == Some(IMAGE_2);
                    s.pods.insert(name, (ready(&p), new));
                }
            }
            Event::Delete(p) => {
                s.pods.remove(&p.metadata.name.clone().unwrap_or_default());
            }
            Event::Init => s.pods.clear(),
            Event::InitDone => {}
        }
        drop(s);
        changed.notify_one();
    }
}

/// The Deployment's status as `kubectl rollout status` reads it.
fn rollout_line(d: &Deployment) -> String {
    let s = d.status.clone().unwrap_or_default();
    format!(
        "generation {} observed {}, replicas {} updated {} ready {} available {}",
        d.metadata.generation.unwrap_or(0),
        s.observed_generation.unwrap_or(0),
        s.replicas.unwrap_or(0),
        s.updated_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn rollout_complete(d: &Deployment, n: i32) -> bool {
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && s.replicas == Some(n)
        && s.updated_replicas == Some(n)
        && s.ready_replicas == Some(n)
        && s.available_replicas == Some(n)
}

/// Waits until `done` holds for the pods seen and the Deployment, re-checking on every
/// pod change (and every 200 ms for the Deployment's status); fails after `timeout`
/// saying how far it got.
async fn wait_until(
    what: &str,
    timeout: Duration,
    deployments: &Api<Deployment>,
    seen: &Arc<Mutex<Seen>>,
    changed: &tokio::sync::Notify,
    done: impl Fn((usize, usize, usize), &Deployment) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_report = Instant::now();
    loop {
        let counts = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .counts();
        let d = deployments.get(NAME).await.context("read the Deployment")?;
        if done(counts, &d) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not done after {timeout:?}: {} live pods, {} ready of the old image, {} ready of the new; deployment: {}",
                counts.0,
                counts.1,
                counts.2,
                rollout_line(&d)
            );
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  … {what}: {} live pods, {} ready (old image), {} ready (new image); {}",
                counts.0,
                counts.1,
                counts.2,
                rollout_line(&d)
            );
            last_report = Instant::now();
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changed.notified()).await;
    }
}

fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A `skiff hollow-nodes` child, killed on drop.
struct HollowChild(std::process::Child);

impl Drop for HollowChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hollow_child(kubeconfig: &std::path::Path, nodes: usize) -> Result<HollowChild> {
    use std::io::BufRead as _;
    let mut child =
        std::process::Command::new(std::env::current_exe().context("find the skiff binary")?)
            .arg("hollow-nodes")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--count", &nodes.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("start skiff hollow-nodes")?;
    let stderr = child.stderr.take().context("hollow-nodes stderr")?;
    let guard = HollowChild(child);
    let mut lines = std::io::BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("nodes registered") => break,
            Some(Ok(l)) => eprintln!("skiff hollow-nodes: {l}"),
            _ => bail!("skiff hollow-nodes exited before registering its nodes"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(guard)
}

async fn run(args: ControllersBenchArgs) -> Result<()> {
    let (server, addr) =
        crate::api_bench::start_server_named("controllers", None, &args.server_args)?;
    let pid = server.child.id();
    let kubeconfig = server.dir.join("kubeconfig.yaml");
    let (config, _) = crate::component::kube_config(&kubeconfig).await?;
    let client = kube::Client::try_from(config).context("a client for the bench server")?;
    println!(
        "skiff bench controllers: {} replicas on {} hollow nodes ({}), server https://{addr} (pid {pid})",
        args.replicas,
        args.nodes,
        if args.hollow_process {
            "a `skiff hollow-nodes` child"
        } else {
            "in the bench process"
        }
    );

    let t = Instant::now();
    let (hollow_child, hollow) = if args.hollow_process {
        (Some(hollow_child(&kubeconfig, args.nodes)?), None)
    } else {
        let config = skiff_controllers::hollow::HollowConfig {
            count: args.nodes,
            ..Default::default()
        };
        let nodes = skiff_controllers::hollow::HollowNodes::start(client.clone(), config)
            .await
            .context("start the hollow nodes")?;
        (None, Some(nodes))
    };
    println!(
        "{} hollow nodes registered in {:.2} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    let r = phases(&args, &client, pid).await;
    // Quietly: the nodes and the watch end before the server they talk to.
    if let Some(h) = hollow {
        h.stop().await;
    }
    drop(hollow_child);
    drop(server);
    r
}

/// The namespace, the Deployment and its two phases, measured.
async fn phases(args: &ControllersBenchArgs, client: &kube::Client, pid: u32) -> Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await
        .context("create the bench namespace")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let changed = Arc::new(tokio::sync::Notify::new());
    let watch = tokio::spawn(watch_pods(pods.clone(), seen.clone(), changed.clone()));
    // Aborted however this function returns.
    let _watch = AbortOnDrop(watch);
    if args.bare_pods {
        return bare_pods(args, &pods, &seen, &changed, pid).await;
    }

    let n = i32::try_from(args.replicas).context("--replicas is too large")?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "replicas": n,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {"containers": [{"name": "app", "image": IMAGE_1}]},
            },
        },
    }))?;
    let t = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .context("create the Deployment")?;
    let replicas = args.replicas;
    wait_until(
        "create",
        args.timeout,
        &deployments,
        &seen,
        &changed,
        |(live, old_ready, _), d| {
            live == replicas
                && old_ready == replicas
                && d.status.as_ref().and_then(|s| s.ready_replicas) == Some(n)
        },
    )
    .await?;
    let created = t.elapsed();
    println!(
        "create: {} pods Running and Ready in {:.2} s ({:.0} pods/s)",
        args.replicas,
        created.as_secs_f64(),
        args.replicas as f64 / created.as_secs_f64()
    );

    let t = Instant::now();
    deployments
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {
                "containers": [{"name": "app", "image": IMAGE_2}]}}}})),
        )
        .await
        .context("update the Deployment's image")?;
    wait_until(
        "rolling update",
        args.timeout,
        &deployments,
        &seen,
        &changed,
        |(live, _, new_ready), d| {
            live == replicas && new_ready == replicas && rollout_complete(d, n)
        },
    )
    .await?;
    // kubectl rollout status also wants the old ReplicaSets scaled to 0.
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let old_left: i32 = sets
        .list(&ListParams::default().labels(&format!("app={NAME}")))
        .await
        .context("list the ReplicaSets")?
        .items
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref())
                != Some(IMAGE_2)
        })
        .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
        .sum();
    let rolled = t.elapsed();
    println!(
        "rolling update: {} pods replaced in {:.2} s ({:.0} pods/s); old ReplicaSets hold {old_left} pods",
        args.replicas,
        rolled.as_secs_f64(),
        args.replicas as f64 / rolled.as_secs_f64()
    );
    let (hwm, rss) = rss_mb(pid);
    println!("server RSS: peak {hwm:.0} MB, now {rss:.0} MB");
    println!(
        "anchor: kube-controller-manager at its default client limits (20 QPS, burst 30) needs {:.1} min for {} pod creates alone; Kubernetes' SLO is pod startup p99 <= 5 s",
        args.replicas as f64 / KUBE_QPS / 60.0,
        args.replicas
    );
    println!(
        "targets (10,000 replicas, 100 nodes): create <= 10 s ({}), rolling update <= 20 s ({}), server RSS <= 400 MB ({})",
        verdict(created.as_secs_f64() <= 10.0),
        verdict(rolled.as_secs_f64() <= 20.0),
        verdict(hwm <= 400.0)
    );
    Ok(())
}

/// `--bare-pods`: N pods created with `spec.nodeName` set, round-robin over the nodes,
/// 128 creates in flight, until the watch sees them all Running and Ready.
async fn bare_pods(
    args: &ControllersBenchArgs,
    pods: &Api<Pod>,
    seen: &Arc<Mutex<Seen>>,
    changed: &tokio::sync::Notify,
    pid: u32,
) -> Result<()> {
    let t = Instant::now();
    let creates = futures_util::stream::iter(0..args.replicas)
        .map(|i| {
            let pods = pods.clone();
            let nodes = args.nodes;
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{NAME}-{i}"), "labels": {"app": NAME}},
                    "spec": {"nodeName": format!("hollow-node-{}", i % nodes),
                             "containers": [{"name": "app", "image": IMAGE_1}]},
                }))?;
                pods.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("create pod {NAME}-{i}"))?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(128);
    tokio::pin!(creates);
    while let Some(r) = creates.next().await {
        r?;
    }
    let created = t.elapsed();
    let deadline = t + args.timeout;
    loop {
        let (live, ready, _) = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .counts();
        if ready == args.replicas {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "bare pods: not done after {:?}: {live} pods seen, {ready} Running and Ready",
                args.timeout
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changed.notified()).await;
    }
    let all = t.elapsed();
    println!(
        "bare pods: {} created in {:.2} s; all Running and Ready after {:.2} s ({:.0} pods/s)",
        args.replicas,
        created.as_secs_f64(),
        all.as_secs_f64(),
        args.replicas as f64 / all.as_secs_f64()
    );
    let (hwm, rss) = rss_mb(pid);
    println!("server RSS: peak {hwm:.0} MB, now {rss:.0} MB");
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}
