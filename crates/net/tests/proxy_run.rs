//! `proxy::run` against the real API server (in process, memory store): it follows
//! Services and EndpointSlices through its watches into a table in a fresh network
//! namespace, recreates the table when it is changed behind its back, and serves
//! `/healthz` and `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use netns::NetNs;
use serde_json::json;
use skiff_net::proxy::{self, Hooks, Nft, ProxyConfig, Transaction};
use tokio_util::sync::CancellationToken;

async fn server(dir: &std::path::Path) -> skiff_apiserver::Server {
    let store = Arc::new(skiff_store::EmbeddedStore::in_memory().expect("store"));
    skiff_apiserver::Server::bind(
        skiff_apiserver::Config {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
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
    .expect("bind the API server")
}

/// Polls `f` (on a blocking thread) until it is true, for at most 20 s.
async fn eventually(what: &str, f: impl Fn() -> bool + Send + Sync + 'static) {
    let f = Arc::new(f);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g = f.clone();
        if tokio::task::spawn_blocking(move || g()).await.unwrap() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn slice(ip: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_the_api_and_repairs_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let admin = srv.client("system:admin", &["system:masters", "system:authenticated"]);
    let ns = NetNs::new();

    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.7.7", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
    slices
        .create(&PostParams::default(), &slice("10.42.0.5"))
        .await
        .unwrap();

    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = ProxyConfig::new("node-a", vec![]);
    cfg.table = format!("skiff-proxy-{}", ns.name);
    cfg.netns = Some(ns.path());
    cfg.metrics_addr = Some(metrics_addr);
    cfg.resync_period = Duration::from_millis(300);
    let (tx, mut rx) = tokio::sync::watch::channel(proxy::SyncReport {
        generation: 0,
        full: false,
        commands: 0,
        bytes: 0,
        applied_at: Instant::now(),
    });
    let stop = CancellationToken::new();
    let proxy = tokio::spawn(proxy::run_with(
        admin.clone(),
        cfg.clone(),
        stop.clone(),
        Hooks {
            errors: None,
            synced: Some(tx),
        },
    ));

    let nft = Nft {
        netns: cfg.netns.clone(),
    };
    let table_has = |needle: &'static str| {
        let (nft, table) = (nft.clone(), cfg.table.clone());
        move || {
            nft.list_table(&table)
                .unwrap()
                .is_some_and(|v| v.to_string().contains(needle))
        }
    };
    eventually("the first sync", table_has("10.42.0.5")).await;
    rx.wait_for(|r| r.generation >= 1 && r.full).await.unwrap();
    let text = nft.list_table(&cfg.table).unwrap().unwrap().to_string();
    assert!(text.contains("10.43.7.7"), "{text}");

    // An endpoint change goes through the watch into an incremental sync.
    slices
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"endpoints": [{"addresses": ["10.42.0.9"], "conditions": {"ready": true}}]}),
            ),
        )
        .await
        .unwrap();
    eventually("the new endpoint", table_has("10.42.0.9")).await;
    // (The report follows the apply by a moment.)
    let r = *rx.wait_for(|r| r.generation >= 2).await.unwrap();
    assert!(!r.full && r.commands > 0 && r.commands < 20, "{r:?}");

    let map_has = |needle: &'static str| {
        let (nft, table) = (nft.clone(), cfg.table.clone());
        move || {
            nft.list_map(&table, "service-ips")
                .unwrap()
                .is_some_and(|v| v.to_string().contains(needle))
        }
    };
    assert!(map_has("10.43.7.7")());
    // Someone flushes the map behind the proxy's back: the drift check recreates it.
    let flush = Transaction {
        commands: vec![
            json!({"flush": {"map": {"family": "ip", "table": cfg.table, "name": "service-ips"}}}),
        ],
    };
    nft.apply(&flush).unwrap();
    eventually("the repaired table", map_has("10.43.7.7")).await;
    rx.wait_for(|r| r.full && r.generation > 2).await.unwrap();

    // Health and metrics.
    let health = tokio::task::spawn_blocking(move || http_get(metrics_addr, "/healthz"))
        .await
        .unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = tokio::task::spawn_blocking(move || http_get(metrics_addr, "/metrics"))
        .await
        .unwrap();
    for m in [
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "kubeproxy_network_programming_duration_seconds",
        "kubeproxy_sync_full_proxy_rules_total",
        "kubeproxy_sync_proxy_rules_last_transaction_commands",
    ] {
        assert!(metrics.contains(m), "{m} in {metrics}");
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .expect("run returns after stop")
        .unwrap()
        .unwrap();
    nft.delete_table(&cfg.table).unwrap();
}

/// A restarted proxy (an agent restart) whose table still holds what it would write
/// keeps it: its first sync applies nothing; once the Services change while it is down,
/// it rewrites the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_keeps_an_unchanged_table() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let admin = srv.client("system:admin", &["system:masters", "system:authenticated"]);
    let ns = NetNs::new();
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.7.8", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
    slices
        .create(&PostParams::default(), &slice("10.42.0.6"))
        .await
        .unwrap();
    let mut cfg = ProxyConfig::new("node-a", vec![]);
    cfg.table = format!("skiff-proxy-{}", ns.name);
    cfg.netns = Some(ns.path());
    cfg.state_file = Some(dir.path().join("proxy.fingerprint"));
    // One run until its first sync: the report of that sync.
    let first_sync = |cfg: ProxyConfig| {
        let admin = admin.clone();
        async move {
            let (tx, mut rx) = tokio::sync::watch::channel(proxy::SyncReport {
                generation: 0,
                full: false,
                commands: 0,
                bytes: 0,
                applied_at: Instant::now(),
            });
            let stop = CancellationToken::new();
            let run = tokio::spawn(proxy::run_with(
                admin,
                cfg,
                stop.clone(),
                Hooks {
                    errors: None,
                    synced: Some(tx),
                },
            ));
            let report =
                tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|r| r.generation >= 1))
                    .await
                    .expect("a sync within 20 s")
                    .unwrap()
                    .to_owned();
            stop.cancel();
            run.await.unwrap().unwrap();
            report
        }
    };
    let r = first_sync(cfg.clone()).await;
    assert!(r.full && r.commands > 0, "{r:?}");
    let r = first_sync(cfg.clone()).await;
    assert!(
        r.full && r.commands == 0,
        "the unchanged table was rewritten: {r:?}"
    );
    let nft = Nft {
        netns: cfg.netns.clone(),
    };
    let text = nft.list_table(&cfg.table).unwrap().unwrap().to_string();
    assert!(text.contains("10.42.0.6"), "{text}");
    // Changed while no proxy ran: rewritten.
    slices
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"endpoints": [{"addresses": ["10.42.0.9"], "conditions": {"ready": true}}]}),
            ),
        )
        .await
        .unwrap();
    let r = first_sync(cfg.clone()).await;
    assert!(r.full && r.commands > 0, "{r:?}");
    let text = nft.list_table(&cfg.table).unwrap().unwrap().to_string();
    assert!(
        text.contains("10.42.0.9") && !text.contains("10.42.0.6"),
        "{text}"
    );
    nft.delete_table(&cfg.table).unwrap();
}
