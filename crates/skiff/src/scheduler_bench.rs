//! `skiff bench scheduler`: pods placed per second end to end, as kube-scheduler's
//! scheduler_perf measures it. A fresh `skiff server --disable-agent` child (API server
//! and scheduler in one process) on a free port with a temp data dir; concurrent HTTP/2
//! clients create N Node objects (4 CPU, 16 GiB, 110 pods, hostname and zone labels over
//! 10 zones, Ready; status written through the status subresource), then the pods of each
//! phase: basic (small requests), required pod anti-affinity on the hostname within
//! groups of 50, and topology spread with maxSkew 1 over zones. A watch per phase sees the
//! binds: pods bound per second from the first bind to the last, p50/p99 from the
//! client's create to the bind seen on the watch (creationTimestamp has 1 s resolution),
//! and the server's peak RSS. Every placement is checked against the node (requests within
//! allocatable, at most 110 pods) and the phase's rule (no two pods of a group on one
//! node, zones within the skew); any violation fails the bench after the table.
//!
//! `--in-process` runs no server: the same cluster as a scheduler snapshot and the same
//! pods through `skiff_scheduler::simulate`, decisions per second.
//!
//! The peer is a published figure (kube-scheduler's scheduler_perf CI floors), so there is
//! no alternation: the table prints it beside ours. Ctrl-C or any failure kills the child
//! and removes its data dir (the guard's drop).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use crate::api_bench::{pct, peak_rss_mb, Conn};

#[derive(Debug, clap::Args)]
pub struct SchedulerBenchArgs {
    /// Node objects in the cluster.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods of the basic phase (small requests, no constraints).
    #[arg(long, default_value_t = 50_000)]
    pods: usize,
    /// Pods with required pod anti-affinity on the hostname (groups of 50); 0 skips.
    /// Default: one per node (5,000 at 5,000 nodes, as the case).
    #[arg(long)]
    anti_affinity_pods: Option<usize>,
    /// Pods spread over zones with maxSkew 1 (DoNotSchedule); 0 skips.
    /// Default: two per node (10,000 at 5,000 nodes).
    #[arg(long)]
    spread_pods: Option<usize>,
    /// No server: the scheduling cycle alone on a snapshot of the same cluster.
    #[arg(long)]
    in_process: bool,
    /// Requests in flight at once (over a few HTTP/2 connections).
    #[arg(long, default_value_t = 128)]
    clients: usize,
    /// Extra `skiff server` arguments (repeat).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

const ZONES: usize = 10;
const NODE_CPU_M: i64 = 4000;
const NODE_MEM: i64 = 16 << 30;
const NODE_PODS: u32 = 110;
const POD_CPU_M: i64 = 100;
const POD_MEM: i64 = 128 << 20;
/// Pods of one anti-affinity group: each on its own node.
const GROUP: usize = 50;
/// HTTP/2 connections the clients share.
const CONNECTIONS: usize = 4;
/// A phase fails when no bind arrives for this long after its pods are created.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Basic,
    AntiAffinity,
    Spread,
}

struct Phase {
    kind: Kind,
    name: &'static str,
    namespace: &'static str,
    count: usize,
    /// kube-scheduler's scheduler_perf floor at 5,000 nodes, pods/s (published).
    kube_floor: Option<f64>,
}

fn phases(args: &SchedulerBenchArgs) -> Vec<Phase> {
    [
        Phase {
            kind: Kind::Basic,
            name: "basic",
            namespace: "bench-basic",
            count: args.pods,
            kube_floor: Some(810.0),
        },
        Phase {
            kind: Kind::AntiAffinity,
            name: "anti-affinity",
            namespace: "bench-anti",
            count: args.anti_affinity_pods.unwrap_or(args.nodes),
            kube_floor: Some(60.0),
        },
        Phase {
            kind: Kind::Spread,
            name: "spread",
            namespace: "bench-spread",
            count: args.spread_pods.unwrap_or(2 * args.nodes),
            kube_floor: None,
        },
    ]
    .into_iter()
    .filter(|p| p.count > 0)
    .collect()
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

fn node(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name(i), "labels": {
            "kubernetes.io/hostname": node_name(i),
            "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES),
        }},
        "spec": {},
    })
}

fn node_status() -> Value {
    let res = json!({"cpu": "4", "memory": "16Gi", "pods": "110"});
    json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "skiff bench node"}],
    }})
}

fn pod_name(i: usize) -> String {
    format!("p-{i:06}")
}

fn pod(phase: &Phase, i: usize) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(i), "namespace": phase.namespace, "labels": {"app": phase.name}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    });
    match phase.kind {
        Kind::Basic => {}
        Kind::AntiAffinity => {
            let group = format!("g{}", i / GROUP);
            p["metadata"]["labels"]["group"] = json!(group);
            p["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"group": group}}, "topologyKey": "kubernetes.io/hostname"}]}});
        }
        Kind::Spread => {
            p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": phase.name}}}]);
        }
    }
    p
}

/// What every node holds so far, to check each placement as it is seen.
struct Ledger {
    cpu: Vec<i64>,
    mem: Vec<i64>,
    pods: Vec<u32>,
    /// (node, anti-affinity group) pairs taken.
    groups: std::collections::HashSet<(usize, usize)>,
    zones: [usize; ZONES],
    violations: Vec<String>,
}

impl Ledger {
    fn new(nodes: usize) -> Ledger {
        Ledger {
            cpu: vec![0; nodes],
            mem: vec![0; nodes],
            pods: vec![0; nodes],
            groups: Default::default(),
            zones: [0; ZONES],
            violations: Vec::new(),
        }
    }

    fn place(&mut self, phase: &Phase, pod: usize, node: usize) {
        let what = || {
            format!(
                "{}/{} on {}",
                phase.namespace,
                pod_name(pod),
                node_name(node)
            )
        };
        if node >= self.cpu.len() {
            self.violations.push(format!("{}: no such node", what()));
            return;
        }
        self.cpu[node] += POD_CPU_M;
        self.mem[node] += POD_MEM;
        self.pods[node] += 1;
        if self.cpu[node] > NODE_CPU_M || self.mem[node] > NODE_MEM || self.pods[node] > NODE_PODS {
            self.violations.push(format!(
                "{}: node over allocatable ({}m cpu, {} MiB, {} pods)",
                what(),
                self.cpu[node],
                self.mem[node] >> 20,
                self.pods[node]
            ));
        }
        match phase.kind {
            Kind::Basic => {}
            Kind::AntiAffinity => {
                if !self.groups.insert((node, pod / GROUP)) {
                    self.violations.push(format!(
                        "{}: a pod of group g{} is already there",
                        what(),
                        pod / GROUP
                    ));
                }
            }
            Kind::Spread => self.zones[node % ZONES] += 1,
        }
    }

    /// The spread phase's skew over zones (max − min pods), once all are placed.
    fn skew(&self) -> usize {
        let max = self.zones.iter().max().copied().unwrap_or(0);
        let min = self.zones.iter().min().copied().unwrap_or(0);
        max - min
    }
}

fn parse_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.parse().ok()
}

struct Row {
    name: &'static str,
    pods: usize,
    bound: usize,
    per_s: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    rss_mb: f64,
    kube_floor: Option<f64>,
    note: String,
}

fn print_table(title: &str, rate: &str, rows: &[Row]) {
    println!("{title}");
    println!(
        "{:<14} {:>7} {:>7} {:>12} {:>8} {:>8} {:>7} {:>16}  notes",
        "phase", "pods", "bound", rate, "p50 ms", "p99 ms", "RSS MB", "kube floor pods/s"
    );
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    for r in rows {
        println!(
            "{:<14} {:>7} {:>7} {:>12.0} {:>8} {:>8} {:>7.0} {:>16}  {}",
            r.name,
            r.pods,
            r.bound,
            r.per_s,
            ms(r.p50),
            ms(r.p99),
            r.rss_mb,
            r.kube_floor
                .map(|f| format!("{f:.0}"))
                .unwrap_or_else(|| "-".into()),
            r.note
        );
    }
    // One line per phase with the figure and its unit, for scripts and README.
    let unit = if rate == "bound pods/s" {
        "pods/s bound"
    } else {
        rate
    };
    for r in rows {
        let mut line = format!("{}: {:.0} {unit}", r.name, r.per_s);
        if let (Some(p50), Some(p99)) = (r.p50, r.p99) {
            line += &format!(", p50 {} ms, p99 {} ms", ms(Some(p50)), ms(Some(p99)));
        }
        println!("{line}");
    }
}

pub fn main(args: SchedulerBenchArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::api_bench::raise_fd_limit();
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    check_capacity(&args)?;
    if args.in_process {
        return in_process(&args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async {
        tokio::select! {
            r = end_to_end(&args) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })
}

/// Refuses a run whose pods cannot all fit: the phases' CPU requests must leave a tenth
/// of the cluster free, or the last DoNotSchedule-spread pods would wait, rightly, for
/// room in the emptiest zone and the bench would report a stall instead of a figure.
fn check_capacity(args: &SchedulerBenchArgs) -> Result<()> {
    let pods: usize = phases(args).iter().map(|p| p.count).sum();
    let wanted = pods as i64 * POD_CPU_M;
    let room = args.nodes as i64 * NODE_CPU_M * 9 / 10;
    let slots = args.nodes * NODE_PODS as usize;
    if wanted > room || pods > slots {
        bail!(
            "{pods} pods of {POD_CPU_M}m CPU do not fit in 90% of {} nodes of {NODE_CPU_M}m \
             ({NODE_PODS} pods each): lower --pods, --anti-affinity-pods or --spread-pods, \
             or raise --nodes",
            args.nodes
        );
    }
    Ok(())
}

/// The scheduling cycle alone: the same nodes and pods through `simulate`.
fn in_process(args: &SchedulerBenchArgs) -> Result<()> {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use skiff_scheduler::nodeinfo::{NodeInfo, PodInfo, Snapshot};

    let t = Instant::now();
    let mut infos = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let mut n = node(i);
        n["status"] = node_status()["status"].take();
        let n: Node = serde_json::from_value(n).context("node manifest")?;
        infos.push(NodeInfo::new(Arc::new(n)));
    }
    let mut snapshot = Snapshot::from_nodes(infos);
    let config = skiff_scheduler::Config::default();
    let framework = skiff_scheduler::plugins::default_framework(&config);
    println!(
        "in process: {} nodes built in {:.2} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    let mut ledger = Ledger::new(args.nodes);
    let mut rows = Vec::new();
    for phase in phases(args) {
        let mut pods = Vec::with_capacity(phase.count);
        for i in 0..phase.count {
            let mut p = pod(&phase, i);
            p["metadata"]["uid"] = json!(format!("{}-{i}", phase.namespace));
            let p: Pod = serde_json::from_value(p).context("pod manifest")?;
            let info = PodInfo::new(Arc::new(p))
                .map_err(|e| anyhow::anyhow!("pod {}: {}", pod_name(i), e.0))?;
            pods.push(Arc::new(info));
        }
        let t = Instant::now();
        let decisions = skiff_scheduler::simulate(&framework, &config, &mut snapshot, &pods);
        let secs = t.elapsed().as_secs_f64();
        let mut placed = 0;
        for (i, d) in decisions.iter().enumerate() {
            if let Some(n) = d {
                placed += 1;
                let idx = parse_index(n, "node-").unwrap_or(usize::MAX);
                ledger.place(&phase, i, idx);
            }
        }
        rows.push(Row {
            name: phase.name,
            pods: phase.count,
            bound: placed,
            per_s: phase.count as f64 / secs,
            p50: None,
            p99: None,
            rss_mb: peak_rss_mb(std::process::id()),
            kube_floor: phase.kube_floor,
            note: phase_note(&phase, &ledger),
        });
    }
    print_table(
        &format!("skiff bench scheduler --in-process: {} nodes (the scheduling cycle alone; kube's floors are end to end)", args.nodes),
        "decisions/s",
        &rows,
    );
    verdict(&rows, &ledger)
}

fn phase_note(phase: &Phase, ledger: &Ledger) -> String {
    match phase.kind {
        Kind::Spread => format!("zone skew {}", ledger.skew()),
        _ => String::new(),
    }
}

fn verdict(rows: &[Row], ledger: &Ledger) -> Result<()> {
    if !ledger.violations.is_empty() {
        for v in ledger.violations.iter().take(20) {
            eprintln!("violation: {v}");
        }
        bail!(
            "{} placements broke their node's capacity or their constraint",
            ledger.violations.len()
        );
    }
    if let Some(r) = rows.iter().find(|r| r.bound < r.pods) {
        bail!(
            "{}: only {} of {} pods were placed",
            r.name,
            r.bound,
            r.pods
        );
    }
    if ledger.skew() > 1 {
        bail!("spread: zones differ by {} pods (maxSkew 1)", ledger.skew());
    }
    Ok(())
}

/// HTTP/2 connections to the server, shared round-robin by the clients.
struct Clients {
    conn: Conn,
    sends: Vec<SendRequest<Full<Bytes>>>,
    next: AtomicUsize,
}

impl Clients {
    async fn open(conn: Conn) -> Result<Clients> {
        let mut sends = Vec::new();
        for _ in 0..CONNECTIONS {
            let tcp = tokio::net::TcpStream::connect(&conn.addr)
                .await
                .context("connect")?;
            let _ = tcp.set_nodelay(true);
            let name =
                rustls::pki_types::ServerName::try_from("localhost").context("server name")?;
            let tls = conn.tls.connect(name, tcp).await.context("TLS handshake")?;
            let (send, c) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(tls))
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(c);
            sends.push(send);
        }
        Ok(Clients {
            conn,
            sends,
            next: AtomicUsize::new(0),
        })
    }

    /// One request; the status and body, failing on anything but `want`.
    async fn call(&self, method: &str, path: &str, body: Value, ct: &str, want: u16) -> Result<()> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sends.len();
        let mut send = self.sends[i].clone();
        send.ready().await.context("connection closed")?;
        let resp = send
            .send_request(
                self.conn
                    .req(method, path, body.to_string().into_bytes(), ct)?,
            )
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status != want {
            bail!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(())
    }
}

/// Runs `n` jobs with at most `width` in flight.
async fn fan_out<F, Fut>(n: usize, width: usize, job: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..width.max(1) {
        let (job, next) = (job.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                job(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("client task")??;
    }
    Ok(())
}

async fn end_to_end(args: &SchedulerBenchArgs) -> Result<()> {
    let (server, addr) =
        crate::api_bench::start_server_named("scheduler", None, &args.server_args)?;
    let clients =
        Arc::new(Clients::open(Conn::with_alpn(&server.dir, &addr, vec![b"h2".to_vec()])?).await?);
    // Watches speak HTTP/1.
    let conn = Conn::new(&server.dir, &addr)?;
    let pid = server.child.id();

    let t = Instant::now();
    let c = clients.clone();
    fan_out(args.nodes, args.clients, move |i| {
        let c = c.clone();
        async move {
            c.call("POST", "/api/v1/nodes", node(i), "application/json", 201)
                .await?;
            c.call(
                "PATCH",
                &format!("/api/v1/nodes/{}/status", node_name(i)),
                node_status(),
                "application/merge-patch+json",
                200,
            )
            .await
        }
    })
    .await?;
    println!(
        "{} nodes created (and their status written) in {:.2} s by {} clients",
        args.nodes,
        t.elapsed().as_secs_f64(),
        args.clients
    );

    let ledger = Arc::new(Mutex::new(Ledger::new(args.nodes)));
    let mut rows = Vec::new();
    for phase in phases(args) {
        let row = run_phase(args, &clients, &conn, &ledger, phase, pid).await?;
        rows.push(row);
    }
    let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger lock"))?;
    print_table(
        &format!(
            "skiff bench scheduler: {} nodes, server and scheduler in one `skiff server` child, {} clients over HTTP/2",
            args.nodes, args.clients
        ),
        "bound pods/s",
        &rows,
    );
    drop(server);
    verdict(&rows, &ledger)
}

/// Binds seen on a phase's watch: pod index → (node index, when).
type Binds = Arc<Mutex<HashMap<usize, (usize, Instant)>>>;

async fn run_phase(
    args: &SchedulerBenchArgs,
    clients: &Arc<Clients>,
    conn: &Conn,
    ledger: &Arc<Mutex<Ledger>>,
    phase: Phase,
    pid: u32,
) -> Result<Row> {
    let phase = Arc::new(phase);
    clients
        .call(
            "POST",
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": phase.namespace}}),
            "application/json",
            201,
        )
        .await?;
    let binds: Binds = Arc::new(Mutex::new(HashMap::with_capacity(phase.count)));
    let watch = tokio::spawn(watch_binds(
        conn.clone(),
        phase.clone(),
        binds.clone(),
        ledger.clone(),
    ));
    // The watch is open (its response headers arrived) before the first create.
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if binds_ready(&binds) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if ready.is_err() {
        bail!("{}: the pod watch did not open", phase.name);
    }

    let base = Instant::now();
    let created: Arc<Vec<AtomicU64>> =
        Arc::new((0..phase.count).map(|_| AtomicU64::new(0)).collect());
    let (c, p, cr) = (clients.clone(), phase.clone(), created.clone());
    fan_out(phase.count, args.clients, move |i| {
        let (c, p, cr) = (c.clone(), p.clone(), cr.clone());
        async move {
            cr[i].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            c.call(
                "POST",
                &format!("/api/v1/namespaces/{}/pods", p.namespace),
                pod(&p, i),
                "application/json",
                201,
            )
            .await
        }
    })
    .await?;
    let create_secs = base.elapsed().as_secs_f64();
    println!(
        "{}: {} pods created in {create_secs:.2} s ({:.0}/s), {} bound meanwhile",
        phase.name,
        phase.count,
        phase.count as f64 / create_secs,
        bound(&binds)
    );

    // Wait for every bind, failing when none arrives for STALL.
    let mut last = (0, Instant::now());
    loop {
        let n = bound(&binds);
        if n >= phase.count {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > STALL {
            watch.abort();
            bail!(
                "{}: {n} of {} pods bound, none for {} s{}",
                phase.name,
                phase.count,
                STALL.as_secs(),
                if n == 0 {
                    " (is the scheduler running in `skiff server`?)"
                } else {
                    ""
                }
            );
        }
        if watch.is_finished() {
            bail!("{}: the pod watch ended early", phase.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let binds = binds.lock().map_err(|_| anyhow::anyhow!("binds lock"))?;
    let mut lat = Vec::with_capacity(binds.len());
    let (mut first, mut last_bind) = (None::<Instant>, None::<Instant>);
    for (i, (_, at)) in binds.iter() {
        if *i == usize::MAX {
            continue;
        }
        let sent = base + Duration::from_nanos(created[*i].load(Ordering::Relaxed));
        lat.push(at.saturating_duration_since(sent));
        first = Some(first.map_or(*at, |f| f.min(*at)));
        last_bind = Some(last_bind.map_or(*at, |l| l.max(*at)));
    }
    let span = match (first, last_bind) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let n = lat.len();
    let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger lock"))?;
    Ok(Row {
        name: phase.name,
        pods: phase.count,
        bound: n,
        per_s: if span > 0.0 {
            n as f64 / span
        } else {
            n as f64
        },
        p50: Some(pct(&mut lat, 0.50)),
        p99: Some(pct(&mut lat, 0.99)),
        rss_mb: peak_rss_mb(pid),
        kube_floor: phase.kube_floor,
        note: format!(
            "created in {create_secs:.1} s ({:.0}/s){}",
            phase.count as f64 / create_secs,
            match phase.kind {
                Kind::Spread => format!("; {}", phase_note(&phase, &ledger)),
                _ => String::new(),
            }
        ),
    })
}

/// The watch marks itself open with a sentinel entry (`usize::MAX`), dropped from counts.
fn binds_ready(binds: &Binds) -> bool {
    binds.lock().is_ok_and(|b| b.contains_key(&usize::MAX))
}

fn bound(binds: &Binds) -> usize {
    binds
        .lock()
        .map(|b| b.len() - usize::from(b.contains_key(&usize::MAX)))
        .unwrap_or(0)
}

#[derive(serde::Deserialize)]
struct WatchEvent {
    object: WatchPod,
}

#[derive(serde::Deserialize)]
struct WatchPod {
    metadata: WatchMeta,
    spec: Option<WatchSpec>,
}

#[derive(serde::Deserialize)]
struct WatchMeta {
    name: Option<String>,
}

#[derive(serde::Deserialize)]
struct WatchSpec {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

/// Follows the phase's namespace and records each pod's first event with a node.
async fn watch_binds(
    conn: Conn,
    phase: Arc<Phase>,
    binds: Binds,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<()> {
    // A watch is one long response: an HTTP/1 connection of its own.
    let mut send = conn.open().await?;
    let path = format!(
        "/api/v1/namespaces/{}/pods?watch=1&timeoutSeconds=3600",
        phase.namespace
    );
    send.ready().await.context("watch connection")?;
    let resp = send
        .send_request(conn.req("GET", &path, Vec::new(), "application/json")?)
        .await
        .context("open the pod watch")?;
    if !resp.status().is_success() {
        bail!("pod watch: HTTP {}", resp.status());
    }
    if let Ok(mut b) = binds.lock() {
        b.insert(usize::MAX, (0, Instant::now()));
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("pod watch stream")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            let Ok(ev) = serde_json::from_slice::<WatchEvent>(line) else {
                continue;
            };
            let node = ev
                .object
                .spec
                .and_then(|s| s.node_name)
                .filter(|n| !n.is_empty());
            let (Some(node), Some(name)) = (node, ev.object.metadata.name) else {
                continue;
            };
            let Some(i) = parse_index(&name, "p-") else {
                continue;
            };
            let n = parse_index(&node, "node-").unwrap_or(usize::MAX);
            let mut b = binds.lock().map_err(|_| anyhow::anyhow!("binds lock"))?;
            if let std::collections::hash_map::Entry::Vacant(e) = b.entry(i) {
                e.insert((n, now));
                drop(b);
                ledger
                    .lock()
                    .map_err(|_| anyhow::anyhow!("ledger lock"))?
                    .place(&phase, i, n);
            }
        }
        buf.drain(..start);
    }
    Ok(())
}
