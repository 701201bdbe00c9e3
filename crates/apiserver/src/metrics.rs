//! The API server's metrics (served at `/metrics`, authenticated) and health checks
//! (`/livez`, `/readyz`, anonymous), under kube-apiserver's names:
//! - `apiserver_request_total{verb,group,version,resource,subresource,scope,component,dry_run,code}`;
//! - `apiserver_request_duration_seconds{…without code}` for requests that are not
//!   long-running (time to the response head);
//! - `apiserver_longrunning_requests{…}`: watches and connect/log streams open now;
//! - `etcd_request_duration_seconds{operation,type}`: every store call, timed by
//!   [`MeteredStore`] whichever backend is behind it (`type` is the group-resource the
//!   key belongs to, as kube-apiserver reports it);
//! - `watch_cache_capacity`, `apiserver_watch_cache_events_received_total{resource}` and
//!   `apiserver_watch_cache_resource_version`, fed by one subscriber of the watch cache.
//!
//! Lifecycle: [`Metrics::new`] registers everything in one registry at start-up;
//! [`Metrics::follow_cache`] runs until the shutdown signal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use skiff_serve::health::Checks;
use skiff_serve::metrics::{Registry, REQUEST_BUCKETS, STORAGE_BUCKETS};
use skiff_serve::CancellationToken;
use skiff_store::{
    GetResult, KeyRange, Lease, LeaseId, ListOptions, ListResult, Op, Result, Revision, Store, Txn,
    TxnResult, WatchOptions, Watcher,
};

use crate::watch_cache::{Ended, WatchCache};

/// What a request is, as the metrics label it (kube-apiserver's RequestInfo).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestInfo {
    /// Upper case: `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`,
    /// `DELETECOLLECTION`, `CONNECT`; the HTTP method for non-resource paths.
    pub verb: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    /// `resource` (one object), `namespace`, `cluster`, or empty (non-resource path).
    pub scope: &'static str,
    pub component: &'static str,
    pub dry_run: &'static str,
}

impl RequestInfo {
    pub fn non_resource(method: &str) -> RequestInfo {
        let verb = match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "OPTIONS" => "OPTIONS",
            _ => "OTHER",
        };
        RequestInfo {
            verb,
            group: "",
            version: "",
            resource: "",
            subresource: "",
            scope: "",
            component: "apiserver",
            dry_run: "",
        }
    }

    /// Watches, and the streams kube-apiserver counts as long-running.
    pub fn long_running(&self) -> bool {
        self.verb == "WATCH"
            || matches!(
                self.subresource,
                "attach" | "exec" | "proxy" | "log" | "portforward"
            )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestCode {
    #[prometheus(flatten)]
    info: RequestInfo,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageOp {
    operation: &'static str,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub(crate) struct Metrics {
    pub registry: Registry,
    requests: Family<RequestCode, Counter>,
    durations: HistogramFamily<RequestInfo>,
    longrunning: Family<RequestInfo, Gauge>,
    storage: HistogramFamily<StorageOp>,
    cache_events: Family<ResourceLabel, Counter>,
    cache_revision: Gauge,
    /// Components running inside the server whose metrics `/metrics` appends.
    sources: std::sync::RwLock<Vec<MetricsSource>>,
}

/// Another registry's text exposition (see `Server::add_metrics_source`).
pub(crate) type MetricsSource = Box<dyn Fn() -> String + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS.iter().copied())
}

fn storage_histogram() -> Histogram {
    Histogram::new(STORAGE_BUCKETS.iter().copied())
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<RequestCode, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        let durations: HistogramFamily<RequestInfo> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component (long-running requests excluded)",
            durations.clone(),
        );
        let longrunning = Family::<RequestInfo, Gauge>::default();
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component",
            longrunning.clone(),
        );
        let storage: HistogramFamily<StorageOp> = Family::new_with_constructor(storage_histogram);
        registry.register(
            "etcd_request_duration_seconds",
            "Storage request latency in seconds for each operation and object type (whichever store backend serves it)",
            storage.clone(),
        );
        let capacity = Gauge::<i64>::default();
        capacity.set(crate::watch_cache::HISTORY as i64);
        registry.register(
            "watch_cache_capacity",
            "Events the watch cache keeps for resuming watchers",
            capacity,
        );
        let cache_events = Family::<ResourceLabel, Counter>::default();
        registry.register(
            "apiserver_watch_cache_events_received",
            "Counter of events received by the watch cache, by resource",
            cache_events.clone(),
        );
        let cache_revision = Gauge::<i64>::default();
        registry.register(
            "apiserver_watch_cache_resource_version",
            "The newest resourceVersion the watch cache has seen",
            cache_revision.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            durations,
            longrunning,
            storage,
            cache_events,
            cache_revision,
            sources: Default::default(),
        })
    }

    pub fn add_source(&self, source: MetricsSource) {
        if let Ok(mut s) = self.sources.write() {
            s.push(source);
        }
    }

    /// `/metrics`: this server's registry, then every added source, as one exposition
    /// (each part's `# EOF` dropped, one at the end).
    pub fn response(&self) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        const EOF: &str = "# EOF\n";
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the metrics failed: {e}\n"),
            )
                .into_response();
        }
        let strip = |t: &mut String| {
            if t.ends_with(EOF) {
                t.truncate(t.len() - EOF.len());
            }
        };
        strip(&mut text);
        if let Ok(sources) = self.sources.read() {
            for source in sources.iter() {
                let mut part = source();
                strip(&mut part);
                text.push_str(&part);
            }
        }
        text.push_str(EOF);
        (
            [(
                axum::http::header::CONTENT_TYPE,
                skiff_serve::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response()
    }

    /// Counts a finished request (its response head is ready).
    pub fn observe(&self, info: &RequestInfo, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestCode {
                info: info.clone(),
                code: code.to_string(),
            })
            .inc();
        if !info.long_running() {
            self.durations
                .get_or_create(info)
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a long-running request as open until the guard is dropped (with the
    /// response body).
    pub fn long_running(&self, info: &RequestInfo) -> LongRunningGuard {
        let g = self.longrunning.get_or_create_owned(info);
        g.inc();
        LongRunningGuard(g)
    }

    /// Follows the watch cache's live events until `stop`, counting them by resource.
    pub async fn follow_cache(self: Arc<Self>, cache: Arc<WatchCache>, stop: CancellationToken) {
        loop {
            // Live events only: no backlog is after the newest possible revision.
            let Ok(mut sub) = cache.subscribe(Revision::MAX) else {
                return;
            };
            if let Some(rev) = cache.progress(&sub) {
                self.cache_revision.set(rev);
            }
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = sub.recv() => match ev {
                        Ok(ev) => self.cache_event(&ev.key, ev.revision),
                        Err(Ended::Closed) => return,
                        // Fell behind, or the cache lost events: follow again from now.
                        Err(_) => break,
                    }
                }
            }
        }
    }

    fn cache_event(&self, key: &str, revision: Revision) {
        self.cache_events
            .get_or_create(&ResourceLabel {
                resource: key_type(key),
            })
            .inc();
        self.cache_revision.set(revision);
    }

    fn time_storage(&self, operation: &'static str, key: &str, started: Instant) {
        self.storage
            .get_or_create(&StorageOp {
                operation,
                r#type: key_type(key),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

pub(crate) struct LongRunningGuard(Gauge);

impl Drop for LongRunningGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The group-resource a storage key belongs to, as kube-apiserver labels storage
/// metrics: `/registry/core/pods/ns/name` → `pods`, `/registry/apps/deployments/…` →
/// `deployments.apps`. Keys outside that layout keep their first segment.
fn key_type(key: &str) -> String {
    let mut segs = key.trim_start_matches('/').split('/');
    match (segs.next(), segs.next(), segs.next()) {
        (Some("registry"), Some("core"), Some(plural)) if !plural.is_empty() => plural.to_string(),
        (Some("registry"), Some(group), Some(plural)) if !plural.is_empty() => {
            format!("{plural}.{group}")
        }
        (Some("registry"), _, _) | (Some(""), _, _) => "registry".to_string(),
        (Some(first), _, _) => first.to_string(),
        (None, _, _) => String::new(),
    }
}

/// The store behind the API server, timing every operation into
/// `etcd_request_duration_seconds` (whatever the backend: embedded or etcd).
pub(crate) struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }
}

/// The key a transaction is about: its first compare's or operation's.
fn txn_key(txn: &Txn) -> &str {
    fn op_key(op: &Op) -> &str {
        match op {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key,
        }
    }
    txn.compares
        .first()
        .map(|c| match c {
            skiff_store::Compare::ModRevision { key, .. }
            | skiff_store::Compare::Value { key, .. } => key.as_str(),
        })
        .or_else(|| txn.success.first().map(op_key))
        .or_else(|| txn.failure.first().map(op_key))
        .unwrap_or("")
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResult> {
        let t = Instant::now();
        let r = self.inner.get(key, revision).await;
        self.metrics.time_storage("get", key, t);
        r
    }
    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let t = Instant::now();
        let r = self.inner.list(prefix, opts).await;
        self.metrics.time_storage("list", prefix, t);
        r
    }
    async fn count(&self, prefix: &str) -> Result<i64> {
        let t = Instant::now();
        let r = self.inner.count(prefix).await;
        self.metrics.time_storage("count", prefix, t);
        r
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let key = txn_key(&txn).to_string();
        let t = Instant::now();
        let r = self.inner.txn(txn).await;
        self.metrics.time_storage("txn", &key, t);
        r
    }
    async fn watch(&self, range: KeyRange, opts: WatchOptions) -> Result<Watcher> {
        let t = Instant::now();
        let r = self.inner.watch(range, opts).await;
        self.metrics.time_storage("watch", "", t);
        r
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.compact(revision).await;
        self.metrics.time_storage("compact", "", t);
        r
    }
    async fn current_revision(&self) -> Result<Revision> {
        let t = Instant::now();
        let r = self.inner.current_revision().await;
        self.metrics.time_storage("currentRevision", "", t);
        r
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let t = Instant::now();
        let r = self.inner.grant_lease(ttl).await;
        self.metrics.time_storage("grantLease", "", t);
        r
    }
    async fn revoke_lease(&self, id: LeaseId) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.revoke_lease(id).await;
        self.metrics.time_storage("revokeLease", "", t);
        r
    }
    async fn keep_alive(&self, id: LeaseId) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.keep_alive(id).await;
        self.metrics.time_storage("keepAlive", "", t);
        r
    }
    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision> {
        let t = Instant::now();
        let r = self.inner.create(key, value, lease).await;
        self.metrics.time_storage("create", key, t);
        r
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision> {
        let t = Instant::now();
        let r = self.inner.put(key, value, lease).await;
        self.metrics.time_storage("put", key, t);
        r
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
        lease: LeaseId,
    ) -> Result<skiff_store::KeyValue> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected, lease).await;
        self.metrics.time_storage("update", key, t);
        r
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<skiff_store::KeyValue> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.metrics.time_storage("delete", key, t);
        r
    }
}

/// The checks of `/livez` and `/readyz`, as kube-apiserver names them.
pub(crate) struct Health {
    pub livez: Checks,
    pub readyz: Checks,
}

impl Health {
    pub fn new(store: Arc<dyn Store>, shutdown: CancellationToken) -> Health {
        let etcd = move || {
            let store = store.clone();
            async move {
                match tokio::time::timeout(Duration::from_secs(2), store.current_revision()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(skiff_serve::error_chain(&e)),
                    Err(_) => Err("the store did not answer within 2s".to_string()),
                }
            }
        };
        let livez = Checks::new()
            .with("log", || async { Ok(()) })
            .with("etcd", etcd.clone());
        let readyz = Checks::new()
            .with("log", || async { Ok(()) })
            .with("etcd", etcd)
            // The watch cache is filled before the server starts serving.
            .with("informer-sync", || async { Ok(()) })
            .with("shutdown", move || {
                let down = shutdown.is_cancelled();
                async move {
                    if down {
                        Err("the server is shutting down".to_string())
                    } else {
                        Ok(())
                    }
                }
            });
        Health { livez, readyz }
    }
}

#[cfg(test)]
mod tests {
    use super::key_type;

    #[test]
    fn storage_keys_map_to_group_resources() {
        assert_eq!(key_type("/registry/core/pods/default/a"), "pods");
        assert_eq!(key_type("/registry/core/namespaces/"), "namespaces");
        assert_eq!(
            key_type("/registry/apps/deployments/default/web"),
            "deployments.apps"
        );
        assert_eq!(key_type("/registry/"), "registry");
        assert_eq!(key_type(""), "registry");
    }
}
