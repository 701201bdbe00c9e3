//! `skiff bench proxy`: the service proxy's cost with real nftables, in a scratch network
//! namespace (`skiff-bench-proxy-<pid>`, deleted at the end; the host's namespace is
//! never touched).
//!
//! For each Service count (1,000 and 10,000 by default), each Service with 10 ready
//! endpoints:
//! - direct: the Proxier is handed the objects; a full sync (plan time, `nft` apply time,
//!   commands and bytes of its JSON), then `--changes` one-endpoint changes, each timed
//!   from handing the new EndpointSlice to the proxier to `nft` having applied the
//!   transaction (p50/p99), with the transaction's size;
//! - via the API server (unless `--no-api`): the objects are created in an in-process API
//!   server (memory store, the same server `skiff server` runs; the client talks to it
//!   in process, without a socket), `proxy::run` watches them, and each change is timed
//!   from the EndpointSlice PATCH being sent to the proxy having applied it — the watch
//!   path included.
//!
//! The anchor is published, not run here: kube-proxy's iptables mode takes minutes per
//! change at 5k-20k Services; Kubernetes' network-programming SLO is p99 <= 30 s; the
//! target for skiff is p99 <= 50 ms at 10,000 Services.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff_net::proxy::{self, Hooks, Nft, Proxier, ProxyConfig, SyncReport};
use skiff_serve::CancellationToken;

use crate::api_bench::pct;

#[derive(Debug, clap::Args)]
pub struct ProxyBenchArgs {
    /// Service counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10000])]
    services: Vec<usize>,
    /// Ready endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// One-endpoint changes timed per Service count.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Skip the phase driven through the API server.
    #[arg(long)]
    no_api: bool,
}

/// The API server's data dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(n: usize) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("skiff-bench-proxy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch network namespace, deleted on drop.
struct ScratchNs {
    name: String,
}

impl ScratchNs {
    fn new() -> Result<ScratchNs> {
        let name = format!("skiff-bench-proxy-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .context("run `ip netns add` (iproute2 is needed, and root)")?;
        if !st.success() {
            bail!("ip netns add {name} failed");
        }
        Ok(ScratchNs { name })
    }

    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.name).into()
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip_of(n: usize) -> String {
    // 10.42.0.0/16 holds 65,536 addresses; beyond that the second /16 of 10.44/14.
    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 44, 0, 1)) + n as u32);
    a.to_string()
}

fn service(i: usize, cluster_ip: Option<String>) -> Service {
    let mut spec = json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip);
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("svc-{i}")},
        "spec": spec,
    }))
    .unwrap_or_default()
}

fn slice(i: usize, ips: &[String]) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("svc-{i}-1"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap_or_default()
}

fn endpoints_of(i: usize, per: usize) -> Vec<String> {
    (0..per).map(|e| ip_of(i * per + e)).collect()
}

/// The Service a change touches: spread over the range.
fn victim(change: usize, n: usize) -> usize {
    (change * 7919) % n
}

struct Direct {
    services: usize,
    full_plan: Duration,
    full_apply: Duration,
    full_commands: usize,
    full_bytes: usize,
    change: Vec<Duration>,
    change_commands: usize,
    change_bytes: usize,
}

fn direct(ns: &ScratchNs, n: usize, per: usize, changes: usize) -> Result<Direct> {
    let mut cfg = ProxyConfig::new("bench-node", vec![]);
    cfg.table = format!("skiff-bench-{}", std::process::id());
    cfg.netns = Some(ns.path());
    let nft = Nft {
        netns: cfg.netns.clone(),
    };
    let mut p = Proxier::new(cfg.clone());
    for i in 0..n {
        let cip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 0, 1)) + i as u32);
        p.upsert_service(service(i, Some(cip.to_string())));
        p.upsert_slice(slice(i, &endpoints_of(i, per)));
    }
    let t = Instant::now();
    let plan = p.plan();
    let full_plan = t.elapsed();
    let full_commands = plan.transaction.len();
    let full_bytes = plan.transaction.to_json().len();
    let t = Instant::now();
    nft.apply(&plan.transaction)
        .context("apply the full sync")?;
    let full_apply = t.elapsed();
    p.commit(plan);

    let mut lat = Vec::with_capacity(changes);
    let (mut change_commands, mut change_bytes) = (0, 0);
    for c in 0..changes {
        let i = victim(c, n);
        let mut ips = endpoints_of(i, per);
        ips[0] = ip_of(n * per + c);
        let s = slice(i, &ips);
        let t = Instant::now();
        p.upsert_slice(s);
        let plan = p.plan();
        nft.apply(&plan.transaction)
            .context("apply a one-endpoint change")?;
        lat.push(t.elapsed());
        change_commands = plan.transaction.len();
        change_bytes = plan.transaction.to_json().len();
        p.commit(plan);
    }
    nft.delete_table(&cfg.table)?;
    Ok(Direct {
        services: n,
        full_plan,
        full_apply,
        full_commands,
        full_bytes,
        change: lat,
        change_commands,
        change_bytes,
    })
}

struct ViaApi {
    services: usize,
    create: Duration,
    first_sync: Duration,
    change: Vec<Duration>,
}

async fn via_api(ns: &ScratchNs, n: usize, per: usize, changes: usize) -> Result<ViaApi> {
    let dir = TempDir::new(n)?;
    let store = Arc::new(skiff_store::EmbeddedStore::in_memory().context("memory store")?);
    let srv = skiff_apiserver::Server::bind(
        skiff_apiserver::Config {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse()?,
            extra_sans: vec![],
            audit: None,
            event_ttl: None,
            kubelet_ca: None,
            cluster: Default::default(),
            advertise_address: None,
        },
        store,
    )
    .await
    .context("start the API server")?;
    let admin = srv.client("system:admin", &["system:masters", "system:authenticated"]);
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
    let t = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                services
                    .create(&PostParams::default(), &service(i, None))
                    .await?;
                slices
                    .create(&PostParams::default(), &slice(i, &endpoints_of(i, per)))
                    .await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .context("create the Services and EndpointSlices")?;
    let create = t.elapsed();

    let mut cfg = ProxyConfig::new("bench-node", vec![]);
    cfg.table = format!("skiff-bench-{}", std::process::id());
    cfg.netns = Some(ns.path());
    let (tx, mut rx) = tokio::sync::watch::channel(SyncReport {
        generation: 0,
        full: false,
        commands: 0,
        bytes: 0,
        applied_at: Instant::now(),
    });
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let t = Instant::now();
    let proxy = tokio::spawn(proxy::run_with(
        admin.clone(),
        cfg.clone(),
        stop.clone(),
        Hooks {
            errors: Some(etx),
            synced: Some(tx),
        },
    ));
    let first = tokio::select! {
        r = rx.wait_for(|r| r.generation >= 1) => r.map(|r| *r).context("proxy stopped")?,
        Some(e) = erx.recv() => bail!("the first sync failed: {}", skiff_serve::Chain(&e)),
    };
    let first_sync = first.applied_at - t;

    let mut lat = Vec::with_capacity(changes);
    for c in 0..changes {
        let i = victim(c, n);
        let mut ips = endpoints_of(i, per);
        ips[0] = ip_of(n * per + changes + c);
        let eps: Vec<serde_json::Value> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect();
        let before = rx.borrow().generation;
        let t = Instant::now();
        slices
            .patch(
                &format!("svc-{i}-1"),
                &PatchParams::default(),
                &Patch::Merge(json!({"endpoints": eps})),
            )
            .await
            .context("patch an EndpointSlice")?;
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|r| r.generation > before && r.commands > 0),
        )
        .await
        .context("the change was not applied within 30 s")?
        .map(|r| *r)
        .context("proxy stopped")?;
        lat.push(r.applied_at.saturating_duration_since(t));
    }
    stop.cancel();
    let _ = proxy.await;
    Nft {
        netns: cfg.netns.clone(),
    }
    .delete_table(&cfg.table)?;
    Ok(ViaApi {
        services: n,
        create,
        first_sync,
        change: lat,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn main(args: ProxyBenchArgs) -> Result<()> {
    if args.services.is_empty() || args.services.contains(&0) || args.changes == 0 {
        bail!("--services needs counts above 0 and --changes at least 1");
    }
    if args.endpoints == 0 {
        bail!("--endpoints must be at least 1");
    }
    let ns = ScratchNs::new()?;
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    println!(
        "skiff bench proxy: Services x {} ready endpoints, real nft ({}) in netns {}",
        args.endpoints,
        nft_version(),
        ns.name
    );
    println!();
    println!("direct (objects handed to the proxier; latency = hand-over to nft applied):");
    println!(
        "{:>9} | {:>10} {:>10} {:>9} {:>9} | {:>8} {:>7} {:>9} {:>9}",
        "services",
        "full plan",
        "full nft",
        "commands",
        "JSON MB",
        "chg cmds",
        "chg B",
        "p50",
        "p99"
    );
    for &n in &args.services {
        let mut d = direct(&ns, n, args.endpoints, args.changes)?;
        println!(
            "{:>9} | {:>10} {:>10} {:>9} {:>9.1} | {:>8} {:>7} {:>9} {:>9}",
            d.services,
            ms(d.full_plan),
            ms(d.full_apply),
            d.full_commands,
            d.full_bytes as f64 / 1e6,
            d.change_commands,
            d.change_bytes,
            ms(pct(&mut d.change, 0.50)),
            ms(pct(&mut d.change, 0.99)),
        );
    }
    if !args.no_api {
        println!();
        println!(
            "via the API server (in process, memory store; latency = EndpointSlice PATCH sent to nft applied, watch included):"
        );
        println!(
            "{:>9} | {:>12} {:>14} | {:>9} {:>9}",
            "services", "create all", "first sync", "p50", "p99"
        );
        for &n in &args.services {
            let mut a = rt.block_on(via_api(&ns, n, args.endpoints, args.changes))?;
            println!(
                "{:>9} | {:>12} {:>14} | {:>9} {:>9}",
                a.services,
                ms(a.create),
                ms(a.first_sync),
                ms(pct(&mut a.change, 0.50)),
                ms(pct(&mut a.change, 0.99)),
            );
        }
    }
    println!();
    println!("anchor (published, not run here): kube-proxy iptables mode needs minutes per change at 5k-20k Services;");
    println!("Kubernetes' network-programming latency SLO is p99 <= 30 s; skiff's target is p99 <= 50 ms at 10,000 Services.");
    Ok(())
}

fn nft_version() -> String {
    Command::new("nft")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "nft ?".into())
}
