//! `skiff bench pods`: pod start-up on one real node. A fresh `skiff server
//! --disable-agent` child, a standalone `skiff agent` child (joined by TLS bootstrap, so
//! its memory is the agent's alone), a `skiff registry` child serving the kubia image
//! (built from examples/kubia with this machine's busybox, or `--image`), then:
//!
//! 1. one pod at a time, `--single` times: create → Running (the container started) and
//!    → Ready, p50/p99; each pod is deleted before the next;
//! 2. a Deployment of `--replicas` pods: create → all Running, and per pod first seen →
//!    Running, p50/p99;
//! 3. the agent's RSS idle and with the Deployment's pods, and the memory of the per-pod
//!    helper processes (each container's shim and the runtime's monitor), RSS and PSS.
//!
//! The anchors are published figures (no peer runs here): Kubernetes' pod start-up SLO
//! (p99 ≤ 5 s), k3s' agent (~275 MB), containerd-shim plus pause (several MB per pod).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct PodsBenchArgs {
    /// Single pods created one after another.
    #[arg(long, default_value_t = 20)]
    pub single: usize,
    /// Pods of the Deployment.
    #[arg(long, default_value_t = 100)]
    pub replicas: i32,
    /// The image to run (default: kubia, built and pushed to a registry child).
    #[arg(long)]
    pub image: Option<String>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// The bench's scratch directory, removed at the end.
pub(crate) struct Work(pub PathBuf);
impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) struct Kill(pub Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bench agent's pod network (pods get veths and addresses, as on any node) under
/// names of its own, removed by its `--clean`.
const BENCH_NET: &[&str] = &[
    "--bridge-name",
    "skiffbench0",
    "--nft-table-prefix",
    "skiff-bench",
];

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn skiff() -> Result<Command> {
    Ok(Command::new(
        std::env::current_exe().context("find the skiff binary")?,
    ))
}

/// Builds examples/kubia and pushes it to a registry child; the guard and the image.
pub(crate) fn kubia(work: &Path) -> Result<(Kill, String)> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let reg = skiff()?
        .args(["registry", "serve", "--listen", &addr, "--data-dir"])
        .arg(work.join("registry"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the registry")?;
    let reg = Kill(reg);
    let ctx = work.join("kubia");
    let src = ["examples/kubia", "../../examples/kubia"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("Dockerfile").exists())
        .context("examples/kubia not found: run from the project's root, or give --image")?;
    let ok = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&ctx)
        .status()?
        .success();
    if !ok {
        bail!("copying {}", src.display());
    }
    std::fs::copy("/bin/busybox", ctx.join("busybox"))
        .context("copy /bin/busybox (busybox-static; scripts/setup.sh installs it)")?;
    let image = format!("{addr}/kubia:1");
    let store = work.join("images");
    let out = skiff()?
        .env("SKIFF_DATA_DIR", &store)
        .args(["image", "build", "-t", &image])
        .arg(&ctx)
        .output()?;
    if !out.status.success() {
        bail!("building kubia: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = skiff()?
            .env("SKIFF_DATA_DIR", &store)
            .args(["image", "push", &image])
            .output()?;
        if out.status.success() {
            break;
        }
        if Instant::now() > deadline {
            bail!("pushing kubia: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((reg, image))
}

fn kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    kb(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(),
        "VmRSS:",
    )
}

fn pss_kb(pid: u32) -> u64 {
    kb(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default(),
        "Pss:",
    )
}

/// The shims (and the runtime's monitors, forked from them) of the agent's data dir.
fn helpers(agent_dir: &Path) -> Vec<u32> {
    let needle = agent_dir.to_string_lossy().to_string();
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("container-shim pod") && cmd.contains(&needle) {
                out.push(pid);
            }
        }
    }
    out
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
}

pub(crate) fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn main(args: PodsBenchArgs) -> Result<()> {
    crate::server_cmd::serve_blocking(run(args))
}

async fn run(args: PodsBenchArgs) -> Result<()> {
    let work = Work(std::env::temp_dir().join(format!("skiff-bench-pods-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir_all(&work.0).with_context(|| format!("create {}", work.0.display()))?;
    let (_registry, image) = match &args.image {
        Some(i) => (None, i.clone()),
        None => {
            let (r, i) = kubia(&work.0)?;
            (Some(r), i)
        }
    };
    let node = BenchNode::start("pods", &work.0, &[]).await?;
    phases(&args, &node.client, &image, node.agent_pid, &node.agent_dir).await
}

/// One real node for a bench: a `skiff server --disable-agent` child (with
/// `server_flags`) and a standalone `skiff agent` child joined to it by TLS bootstrap,
/// its pods' cgroups under a parent of the bench's own and its pod network under names
/// of its own ([`BENCH_NET`]); on drop the agent is stopped and cleaned, then the server.
pub(crate) struct BenchNode {
    pub client: kube::Client,
    pub agent_pid: u32,
    pub agent_dir: PathBuf,
    pub kubeconfig: PathBuf,
    cgroup: String,
    agent: Option<Kill>,
    server: Option<crate::api_bench::ServerChild>,
}

impl BenchNode {
    pub(crate) async fn start(
        bench: &str,
        work: &Path,
        server_flags: &[String],
    ) -> Result<BenchNode> {
        let (server, addr) = crate::api_bench::start_server_named(bench, None, server_flags)?;
        let agent_dir = work.join("agent");
        let cgroup = format!("/skiff-bench-{}", std::process::id());
        let token =
            std::fs::read_to_string(server.dir.join("token")).context("read the server's token")?;
        let agent = skiff()?
            .args([
                "agent",
                "--server",
                &format!("https://{addr}"),
                "--token",
                token.trim(),
                "--ca-file",
            ])
            .arg(server.dir.join("pki/ca.crt"))
            .arg("--data-dir")
            .arg(&agent_dir)
            .args([
                "--kubelet-port",
                "0",
                "--node-name",
                "bench-node",
                "--cgroup-parent",
                &cgroup,
            ])
            .args(BENCH_NET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start skiff agent")?;
        let agent_pid = agent.id();
        let kubeconfig = server.dir.join("kubeconfig.yaml");
        Ok(BenchNode {
            client: kube::Client::try_from(crate::component::kube_config(&kubeconfig).await?.0)
                .context("a client for the bench server")?,
            agent_pid,
            agent_dir,
            kubeconfig,
            cgroup,
            agent: Some(Kill(agent)),
            server: Some(server),
        })
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        drop(self.agent.take());
        if let Ok(mut c) = skiff() {
            let _ = c
                .args([
                    "agent",
                    "--clean",
                    "--cgroup-parent",
                    &self.cgroup,
                    "--data-dir",
                ])
                .arg(&self.agent_dir)
                .args(BENCH_NET)
                .status();
        }
        drop(self.server.take());
    }
}

async fn phases(
    args: &PodsBenchArgs,
    client: &kube::Client,
    image: &str,
    agent_pid: u32,
    agent_dir: &Path,
) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let t = Instant::now();
    loop {
        if let Ok(n) = nodes.get("bench-node").await {
            let ok = n
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ok {
                break;
            }
        }
        if t.elapsed() > timeout {
            bail!("the agent's node is not Ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "skiff bench pods: image {image}; node Ready {:.2} s after the agent started",
        t.elapsed().as_secs_f64()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "kubia", "image": image,
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}
        }))?)
    };
    let gone = |name: String| {
        let pods = pods.clone();
        async move {
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            let t = Instant::now();
            while pods.get_opt(&name).await.ok().flatten().is_some()
                && t.elapsed() < Duration::from_secs(60)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Warm-up: the image is pulled once.
    pods.create(&PostParams::default(), &pod("warm-up")?)
        .await?;
    let t = Instant::now();
    while !pods
        .get("warm-up")
        .await
        .map(|p| running(&p))
        .unwrap_or(false)
    {
        if t.elapsed() > timeout {
            bail!("the warm-up pod is not Running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "warm-up pod (image pull included): Running in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    gone("warm-up".into()).await;
    let idle_rss = rss_kb(agent_pid);

    let (mut to_running, mut to_ready) = (Vec::new(), Vec::new());
    for i in 0..args.single {
        let name = format!("single-{i}");
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod(&name)?).await?;
        let mut run_at = None;
        loop {
            let p = pods.get(&name).await?;
            if run_at.is_none() && running(&p) {
                run_at = Some(t.elapsed());
            }
            if ready(&p) {
                break;
            }
            if t.elapsed() > timeout {
                bail!("pod {name} not Ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        to_ready.push(t.elapsed().as_secs_f64() * 1000.0);
        to_running.push(run_at.unwrap_or_default().as_secs_f64() * 1000.0);
        gone(name).await;
    }
    let (r50, r99) = (
        percentile(&mut to_running, 50.0),
        percentile(&mut to_running, 99.0),
    );
    let (y50, y99) = (
        percentile(&mut to_ready, 50.0),
        percentile(&mut to_ready, 99.0),
    );
    println!("one pod ({} runs): create -> Running p50 {r50:.0} ms, p99 {r99:.0} ms; -> Ready p50 {y50:.0} ms, p99 {y99:.0} ms", args.single);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "kubia", "image": image}]}}}
    }))?;
    let t = Instant::now();
    deployments.create(&PostParams::default(), &d).await?;
    let mut first: HashMap<String, Duration> = HashMap::new();
    let mut up: HashMap<String, Duration> = HashMap::new();
    loop {
        let list = pods
            .list(&ListParams::default().labels("app=bench"))
            .await?;
        let now = t.elapsed();
        for p in &list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            first.entry(name.clone()).or_insert(now);
            if running(p) {
                up.entry(name).or_insert(now);
            }
        }
        if up.len() >= args.replicas as usize {
            break;
        }
        if t.elapsed() > timeout {
            bail!(
                "{} of {} pods Running after {timeout:?}",
                up.len(),
                args.replicas
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = t.elapsed().as_secs_f64();
    let mut per: Vec<f64> = up
        .iter()
        .map(|(n, at)| (at.saturating_sub(first[n])).as_secs_f64() * 1000.0)
        .collect();
    let (p50, p99) = (percentile(&mut per, 50.0), percentile(&mut per, 99.0));
    println!("Deployment of {}: create -> all Running {all:.2} s; per pod first seen -> Running p50 {p50:.0} ms, p99 {p99:.0} ms", args.replicas);
    let busy_rss = rss_kb(agent_pid);
    let hs = helpers(agent_dir);
    let h_rss: u64 = hs.iter().map(|p| rss_kb(*p)).sum();
    let h_pss: u64 = hs.iter().map(|p| pss_kb(*p)).sum();
    let n = args.replicas.max(1) as f64;
    println!(
        "agent RSS: idle {:.1} MB, with {} pods {:.1} MB ({:+.2} MB per pod)",
        idle_rss as f64 / 1024.0,
        args.replicas,
        busy_rss as f64 / 1024.0,
        (busy_rss as f64 - idle_rss as f64) / 1024.0 / n
    );
    println!(
        "per-pod helpers ({} processes: shim + runtime monitor per container): RSS {:.2} MB per pod, PSS {:.2} MB per pod",
        hs.len(),
        h_rss as f64 / 1024.0 / n,
        h_pss as f64 / 1024.0 / n
    );
    println!(
        "targets: one pod -> Running p50 <= 100 ms ({}); {} pods all Running <= 3 s ({}); agent <= 50 MB idle ({}) and <= 2 MB more per pod, helpers included ({})",
        if r50 <= 100.0 { "met" } else { "not met" },
        args.replicas,
        if all <= 3.0 { "met" } else { "not met" },
        if idle_rss as f64 / 1024.0 <= 50.0 { "met" } else { "not met" },
        if ((busy_rss as f64 - idle_rss as f64) + h_pss as f64) / 1024.0 / n <= 2.0 { "met" } else { "not met" },
    );
    println!("anchors (published): Kubernetes pod start-up SLO p99 <= 5 s; k3s agent ~275 MB; containerd-shim + pause several MB per pod");
    let _ = deployments.delete("bench", &DeleteParams::default()).await;
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default().labels("app=bench"),
        )
        .await;
    Ok(())
}
