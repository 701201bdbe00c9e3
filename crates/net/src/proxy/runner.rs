//! The proxy's loop: two watches feed a [`Proxier`], one task syncs.
//!
//! - Services and EndpointSlices are watched through kube-runtime's watcher (list, then
//!   watch, re-list on expiry). The Proxier is the reflector store: it keeps the objects
//!   indexed by Service, so a change marks exactly one Service dirty.
//! - The sync task waits until both kinds have listed once, then syncs whenever something
//!   is dirty, at most once per `min_sync_period` (a burst of changes is one transaction;
//!   an idle proxy applies a single change at once, which keeps network-programming
//!   latency low).
//! - The transaction is applied on a blocking thread while the watches keep feeding the
//!   Proxier; success commits the plan, failure aborts it (the kernel kept the old rules),
//!   asks for a full resync and retries with backoff (100 ms doubling to 30 s).
//! - Every `ProxyConfig.resync_period` the table is compared with what the proxy applied (the
//!   `services` chain exists and `service-ips` holds as many elements as it should); a
//!   difference means someone changed the table, and the next sync recreates it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::metrics::{self, Metrics};
use super::model::ServiceRef;
use super::nft::{Nft, NO_ENDPOINTS_MAP, SERVICE_IPS_MAP};
use super::sync::Proxier;
use super::{conntrack, ProxyConfig, ProxyError};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The annotation the EndpointSlice controller sets to when the change started.
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

struct Shared {
    proxier: Mutex<Proxier>,
    /// Last-change-trigger-times of slices not yet synced, by Service.
    triggers: Mutex<HashMap<ServiceRef, Timestamp>>,
    changed: Notify,
    services_listed: AtomicBool,
    slices_listed: AtomicBool,
    metrics: Arc<Metrics>,
    nft: Nft,
    generation: AtomicU64,
    synced: Option<watch::Sender<SyncReport>>,
    /// The fingerprint the previous run left in `state_file`, taken by the first sync.
    previous: Mutex<Option<u64>>,
    state_file: Option<std::path::PathBuf>,
}

impl Shared {
    fn proxier(&self) -> std::sync::MutexGuard<'_, Proxier> {
        self.proxier.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the proxy until `stop`; see the module docs. Sync failures are logged and
/// retried; use [`run_with`] to also receive them (to record Events).
pub async fn run(
    client: Client,
    cfg: ProxyConfig,
    stop: CancellationToken,
) -> Result<(), ProxyError> {
    run_with(client, cfg, stop, Hooks::default()).await
}

/// What a caller can observe of a running proxy.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Every failed sync's error (to record an Event); the sync is retried regardless.
    pub errors: Option<mpsc::UnboundedSender<ProxyError>>,
    /// The latest applied sync (benchmarks and tests wait on it).
    pub synced: Option<watch::Sender<SyncReport>>,
}

/// One applied sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Counts applied syncs from 1.
    pub generation: u64,
    pub full: bool,
    /// Commands and JSON bytes of its transaction (0 when nothing needed writing).
    pub commands: usize,
    pub bytes: usize,
    /// When it finished applying.
    pub applied_at: Instant,
}

/// [`run`], with [`Hooks`].
pub async fn run_with(
    client: Client,
    cfg: ProxyConfig,
    stop: CancellationToken,
    hooks: Hooks,
) -> Result<(), ProxyError> {
    // Our own token: the watches stop with the loop without cancelling the caller's.
    let stop = stop.child_token();
    let metrics = Arc::new(Metrics::new());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = cfg.metrics_addr {
        let listener = metrics::bind(addr).await?;
        tasks.spawn(metrics::serve(listener, metrics.clone(), stop.clone()));
    }
    let shared = Arc::new(Shared {
        nft: Nft {
            netns: cfg.netns.clone(),
        },
        proxier: Mutex::new(Proxier::new(cfg.clone())),
        triggers: Mutex::new(HashMap::new()),
        changed: Notify::new(),
        services_listed: AtomicBool::new(false),
        slices_listed: AtomicBool::new(false),
        metrics,
        generation: AtomicU64::new(0),
        synced: hooks.synced,
        previous: Mutex::new(cfg.state_file.as_ref().and_then(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            u64::from_str_radix(text.trim(), 16).ok()
        })),
        state_file: cfg.state_file.clone(),
    });
    tasks.spawn(watch_services(
        Api::all(client.clone()),
        shared.clone(),
        stop.clone(),
    ));
    tasks.spawn(watch_slices(Api::all(client), shared.clone(), stop.clone()));

    sync_loop(&shared, &cfg, &stop, hooks.errors.as_ref()).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn sync_loop(
    shared: &Arc<Shared>,
    cfg: &ProxyConfig,
    stop: &CancellationToken,
    errors: Option<&mpsc::UnboundedSender<ProxyError>>,
) {
    let mut backoff = Duration::ZERO;
    let mut last_attempt: Option<Instant> = None;
    let mut next_check = tokio::time::Instant::now() + cfg.resync_period;
    loop {
        let listed = shared.services_listed.load(Ordering::Acquire)
            && shared.slices_listed.load(Ordering::Acquire);
        let pending = listed && shared.proxier().pending();
        if !pending {
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.changed.notified() => {}
                () = tokio::time::sleep_until(next_check) => {
                    next_check = tokio::time::Instant::now() + cfg.resync_period;
                    if listed {
                        check_drift(shared).await;
                    }
                }
            }
            continue;
        }
        if let Some(last) = last_attempt {
            let wait = cfg.min_sync_period.max(backoff);
            let due = last + wait;
            if Instant::now() < due {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(due.into()) => {}
                }
            }
        }
        last_attempt = Some(Instant::now());
        match sync_once(shared).await {
            Ok(()) => backoff = Duration::ZERO,
            Err(e) => {
                backoff = (backoff * 2).clamp(BACKOFF_START, BACKOFF_MAX);
                tracing::warn!(
                    error = %skiff_serve::Chain(&e),
                    retry_in = ?backoff,
                    "service proxy sync failed; the previous rules stay in force"
                );
                if let Some(tx) = errors {
                    let _ = tx.send(e);
                }
            }
        }
    }
}

/// One sync: plan under the lock, apply on a blocking thread, then commit or abort.
async fn sync_once(shared: &Arc<Shared>) -> Result<(), ProxyError> {
    let started = Instant::now();
    // Planning a full sync of 10,000 Services takes a while: off the async threads.
    let planner = shared.clone();
    let (plan, triggers) = tokio::task::spawn_blocking(move || {
        let mut p = planner.proxier();
        let plan = p.plan();
        let triggers = std::mem::take(
            &mut *planner
                .triggers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        (plan, triggers)
    })
    .await
    .map_err(ProxyError::Task)?;
    {
        let mut h = shared
            .metrics
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        h.pending_since = plan.changes_since.iter().min().copied();
    }
    let bytes;
    let mut commands = plan.transaction.len();
    let previous = shared
        .previous
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let adopt = match previous {
        Some(fp) if plan.full && fp == shared.proxier().plan_fingerprint(&plan) => {
            table_holds(shared, plan.expected_elements()).await
        }
        _ => false,
    };
    if adopt {
        // A restarted proxy: the table holds exactly what this sync would write.
        tracing::info!("the service proxy's table is as the previous run left it; kept");
        commands = 0;
    }
    let result = if plan.transaction.is_empty() || adopt {
        bytes = 0;
        Ok(())
    } else {
        let json = plan.transaction.to_json();
        bytes = json.len();
        let nft = shared.nft.clone();
        let tx = plan.transaction.clone();
        tokio::task::spawn_blocking(move || nft.apply(&tx))
            .await
            .map_err(ProxyError::Task)
            .and_then(|r| r)
    };
    let m = &shared.metrics;
    if let Err(e) = result {
        m.failures.inc();
        shared.proxier().abort(plan);
        // Keep the trigger times for the retry.
        let mut t = shared
            .triggers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (k, v) in triggers {
            t.entry(k).or_insert(v);
        }
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    m.sync_duration.observe(elapsed);
    if plan.full {
        m.full_syncs.inc();
        m.full_sync_duration.observe(elapsed);
    } else {
        m.partial_syncs.inc();
        m.partial_sync_duration.observe(elapsed);
    }
    m.last_tx_commands
        .set(i64::try_from(commands).unwrap_or(i64::MAX));
    m.last_tx_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    m.last_sync_timestamp.set(Timestamp::now().as_second());
    let now = Timestamp::now();
    if triggers.is_empty() {
        for since in &plan.changes_since {
            m.network_programming.observe(since.elapsed().as_secs_f64());
        }
    }
    for t in triggers.values() {
        let d = now.duration_since(*t).as_secs_f64();
        if d >= 0.0 {
            m.network_programming.observe(d);
        }
    }
    let stale = plan.stale_udp.clone();
    let full = plan.full;
    let fingerprint = {
        let mut p = shared.proxier();
        p.commit(plan);
        p.fingerprint()
    };
    if let Some(path) = &shared.state_file {
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let write = std::fs::write(&tmp, format!("{fingerprint:016x}\n"))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = write {
            tracing::warn!(path = %path.display(), error = %e, "recording the proxy's table fingerprint");
        }
    }
    if let Some(tx) = &shared.synced {
        let generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tx.send_replace(SyncReport {
            generation,
            full,
            commands,
            bytes,
            applied_at: Instant::now(),
        });
    }
    {
        let mut h = m.health.lock().unwrap_or_else(PoisonError::into_inner);
        h.last_ok = Some(Instant::now());
        h.pending_since = None;
    }
    if !stale.is_empty() {
        let netns = shared.nft.netns.clone();
        let r = tokio::task::spawn_blocking(move || {
            conntrack::delete_udp_flows(netns.as_deref(), &stale)
        })
        .await
        .map_err(ProxyError::Task)
        .and_then(|r| r);
        if let Err(e) = r {
            // The rules are in; stale flows only delay clients until their entries expire.
            tracing::warn!(error = %skiff_serve::Chain(&e), "clearing stale UDP conntrack entries failed");
        }
    }
    tracing::debug!(
        commands,
        bytes,
        seconds = elapsed,
        "service proxy rules synced"
    );
    Ok(())
}

/// The element counts of the table's `service-ips` and `no-endpoint-services` maps, or
/// None when the table (its `services` chain) is missing.
async fn table_counts(
    shared: &Arc<Shared>,
    table: String,
) -> Result<Option<(usize, usize)>, ProxyError> {
    let nft = shared.nft.clone();
    tokio::task::spawn_blocking(move || -> Result<Option<(usize, usize)>, ProxyError> {
        if nft.list_chain(&table, "services")?.is_none() {
            return Ok(None);
        }
        let count = |map: &str| -> Result<usize, ProxyError> {
            Ok(nft
                .list_map(&table, map)?
                .map(|v| map_element_count(&v))
                .unwrap_or(0))
        };
        Ok(Some((count(SERVICE_IPS_MAP)?, count(NO_ENDPOINTS_MAP)?)))
    })
    .await
    .map_err(ProxyError::Task)?
}

/// Whether the table exists and its maps hold `expected` elements.
async fn table_holds(shared: &Arc<Shared>, expected: (usize, usize)) -> bool {
    let table = shared.proxier().config().table.clone();
    matches!(table_counts(shared, table).await, Ok(Some(f)) if f == expected)
}

/// Compares the table with the applied state; asks for a full resync on a difference.
async fn check_drift(shared: &Arc<Shared>) {
    let (table, expected) = {
        let p = shared.proxier();
        if p.pending() {
            // A sync is coming anyway.
            return;
        }
        (p.config().table.clone(), p.expected_elements())
    };
    let found = table_counts(shared, table).await;
    let drifted = match found {
        Ok(Some(found)) => found != expected,
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(error = %skiff_serve::Chain(&e), "checking the proxy's table failed");
            true
        }
    };
    if drifted {
        tracing::warn!("the service proxy's nftables table changed behind its back; recreating it");
        shared.proxier().request_full_sync();
        shared.changed.notify_one();
    }
}

/// The number of elements of the map in `nft -j list map` output.
pub(crate) fn map_element_count(v: &serde_json::Value) -> usize {
    v.get("nftables")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("map"))
        .filter_map(|m| m.get("elem").and_then(|e| e.as_array()))
        .map(Vec::len)
        .sum()
}

async fn watch_services(api: Api<Service>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut stream = watcher(api).boxed();
    let mut buf = Vec::new();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Ok(Event::Init) => buf.clear(),
            Ok(Event::InitApply(s)) => buf.push(s),
            Ok(Event::InitDone) => {
                shared.proxier().replace_services(std::mem::take(&mut buf));
                shared.services_listed.store(true, Ordering::Release);
            }
            Ok(Event::Apply(s)) => shared.proxier().upsert_service(s),
            Ok(Event::Delete(s)) => {
                if let Some(k) = ServiceRef::of_service(&s) {
                    shared.proxier().delete_service(&k);
                }
            }
            Err(e) => {
                tracing::warn!(error = %skiff_serve::Chain(&e), "watching Services failed; retrying");
                continue;
            }
        }
        shared.changed.notify_one();
    }
}

async fn watch_slices(api: Api<EndpointSlice>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut stream = watcher(api).boxed();
    let mut buf = Vec::new();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Ok(Event::Init) => buf.clear(),
            Ok(Event::InitApply(s)) => buf.push(s),
            Ok(Event::InitDone) => {
                shared.proxier().replace_slices(std::mem::take(&mut buf));
                shared.slices_listed.store(true, Ordering::Release);
            }
            Ok(Event::Apply(s)) => {
                note_trigger(&shared, &s);
                shared.proxier().upsert_slice(s);
            }
            Ok(Event::Delete(s)) => shared.proxier().delete_slice(&s),
            Err(e) => {
                tracing::warn!(error = %skiff_serve::Chain(&e), "watching EndpointSlices failed; retrying");
                continue;
            }
        }
        shared.changed.notify_one();
    }
}

fn watcher<K>(
    api: Api<K>,
) -> impl futures_util::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

fn note_trigger(shared: &Shared, slice: &EndpointSlice) {
    let Some(key) = ServiceRef::of_slice(slice) else {
        return;
    };
    let Some(t) = slice
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRIGGER_TIME))
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return;
    };
    shared
        .triggers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .and_modify(|old| *old = (*old).min(t))
        .or_insert(t);
}
