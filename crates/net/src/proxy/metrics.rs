//! The proxy's `/metrics` (names after kube-proxy's) and `/healthz`.
//!
//! `/healthz` is 200 once the first sync has applied and no change has waited longer than
//! [`HEALTHY_PENDING`] (a proxy that keeps failing to apply turns unhealthy), 503 before.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::ProxyError;

/// How long a change may wait for its sync before `/healthz` fails.
pub(crate) const HEALTHY_PENDING: Duration = Duration::from_secs(60);

pub(crate) struct Metrics {
    registry: Registry,
    pub sync_duration: Histogram,
    pub full_sync_duration: Histogram,
    pub partial_sync_duration: Histogram,
    pub network_programming: Histogram,
    pub full_syncs: Counter,
    pub partial_syncs: Counter,
    pub failures: Counter,
    pub last_tx_commands: Gauge,
    pub last_tx_bytes: Gauge,
    pub last_sync_timestamp: Gauge,
    pub health: Mutex<Health>,
}

#[derive(Debug, Default)]
pub(crate) struct Health {
    pub last_ok: Option<Instant>,
    /// The oldest change not yet applied.
    pub pending_since: Option<Instant>,
}

impl Metrics {
    pub fn new() -> Metrics {
        // 1 ms .. ~65 s: a sync at 10,000 Services is tens of ms, a full one seconds.
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let m = Metrics {
            registry: Registry::default(),
            sync_duration: buckets(),
            full_sync_duration: buckets(),
            partial_sync_duration: buckets(),
            network_programming: buckets(),
            full_syncs: Counter::default(),
            partial_syncs: Counter::default(),
            failures: Counter::default(),
            last_tx_commands: Gauge::default(),
            last_tx_bytes: Gauge::default(),
            last_sync_timestamp: Gauge::default(),
            health: Mutex::new(Health::default()),
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        r.register(
            "kubeproxy_network_programming_duration_seconds",
            "In-cluster network programming latency in seconds (from the EndpointSlice's last-change-trigger-time, or from when the proxy saw the change)",
            m.network_programming.clone(),
        );
        r.register(
            "kubeproxy_sync_full_proxy_rules",
            "Full resyncs applied",
            m.full_syncs.clone(),
        );
        r.register(
            "kubeproxy_sync_partial_proxy_rules",
            "Partial (incremental) syncs applied",
            m.partial_syncs.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_nftables_failures",
            "nft transactions that failed (the previous rules stayed in force)",
            m.failures.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_transaction_commands",
            "Commands in the last applied nft transaction",
            m.last_tx_commands.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_transaction_bytes",
            "Bytes of JSON in the last applied nft transaction",
            m.last_tx_bytes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time a sync applied, in seconds since the epoch",
            m.last_sync_timestamp.clone(),
        );
        m
    }

    pub fn healthy(&self) -> bool {
        let h = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.last_ok.is_some()
            && h.pending_since
                .is_none_or(|t| t.elapsed() < HEALTHY_PENDING)
    }

    fn encode(&self) -> Response<Full<Bytes>> {
        skiff_serve::metrics::response(&self.registry)
    }
}

/// Binds `addr` (so a taken port is an error of [`super::run`], not a log line).
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ProxyError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::MetricsBind { addr, source })
}

/// Serves `/healthz` and `/metrics` until `stop`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let metrics = metrics.clone();
        async move {
            let text = |code: StatusCode, body: &'static str| {
                let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *r.status_mut() = code;
                r
            };
            Ok::<_, std::convert::Infallible>(match req.uri().path() {
                "/metrics" => metrics.encode(),
                "/healthz" | "/livez" => {
                    if metrics.healthy() {
                        text(StatusCode::OK, "ok\n")
                    } else {
                        text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the service proxy has not synced its rules recently\n",
                        )
                    }
                }
                _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
            })
        }
    });
    skiff_serve::Serve::new(listener)
        .name("proxy")
        .shutdown_signal(stop.clone())
        .run(service, stop.cancelled_owned())
        .await;
}
