//! The scheduling loop (kube-scheduler's `scheduleOne`): one cycle at a time on the cache's
//! snapshot, the decision assumed into the cache at once, binding in the background with
//! at most [`MAX_BINDS_IN_FLIGHT`] calls outstanding.
//!
//! The watchers ([`crate::watch`]) and the binders share the cache, queue and nominated
//! pods behind one mutex that is never held across an `.await`; the loop holds it only to
//! pop a pod and refresh its snapshot, and again to record the outcome.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::binder::{self, EventRecorder, EventRequest};
use crate::cache::Cache;
use crate::framework::CycleState;
use crate::metrics::AttemptResult;
use crate::nodeinfo::{PodInfo, Snapshot};
use crate::queue::{QueuedPod, SchedulingQueue};
use crate::schedule::{Algorithm, Nominated, Outcome};
use crate::{plugins, Config, Error, Framework, Metrics};

/// Bindings outstanding at once; the loop waits for a slot before the next cycle.
pub const MAX_BINDS_IN_FLIGHT: usize = 64;
/// How often expired assumptions and parked pods are looked at.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// What the watchers, the loop and the binders share.
pub(crate) struct Shared {
    pub cache: Cache,
    pub queue: SchedulingQueue,
    pub nominated: Nominated,
    /// Bits set by the watchers that must list before scheduling starts.
    pub synced: u32,
    /// Pending pods whose spec could not be read: reported unschedulable with the reason.
    pub invalid: Vec<(Arc<Pod>, String)>,
}

pub(crate) struct Inner {
    state: Mutex<Shared>,
    pub wake: Notify,
    pub tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic elsewhere must not stop scheduling: the data stays consistent per call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything a cycle's follow-up needs, cheap to clone into tasks.
#[derive(Clone)]
struct Ctx {
    inner: Arc<Inner>,
    client: Client,
    fw: Arc<Framework>,
    events: EventRecorder,
    statuses: binder::StatusWriter,
    metrics: Arc<Metrics>,
    profile: Arc<str>,
}

pub(crate) async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let fw = Arc::new(plugins::default_framework(&config));
    let inner = Arc::new(Inner {
        state: Mutex::new(Shared {
            cache: Cache::new(),
            queue: SchedulingQueue::new(fw.plugin_events()),
            nominated: Nominated::default(),
            synced: 0,
            invalid: Vec::new(),
        }),
        wake: Notify::new(),
        tasks: Mutex::new(Vec::new()),
    });
    crate::watch::spawn_all(&client, &inner, &config.scheduler_name);
    let instance = format!("{}-{}", config.scheduler_name, std::process::id());
    let ctx = Ctx {
        events: EventRecorder::start(client.clone(), config.scheduler_name.clone(), instance),
        statuses: binder::StatusWriter::start(client.clone()),
        inner: inner.clone(),
        client,
        fw,
        metrics,
        profile: config.scheduler_name.clone().into(),
    };
    // Callers may drop this future instead of completing `shutdown` (leader election
    // losing the lease): the watchers must stop either way.
    let _watchers = AbortOnDrop(inner);
    tokio::select! {
        _ = shutdown => Ok(()),
        r = schedule_loop(ctx, config) => r,
    }
}

struct AbortOnDrop(Arc<Inner>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in self
            .0
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

async fn schedule_loop(ctx: Ctx, config: Config) -> Result<(), Error> {
    // Decisions on a partial view would overcommit nodes: wait for the first lists.
    while ctx.inner.lock().synced & crate::watch::SYNCED_ALL != crate::watch::SYNCED_ALL {
        tokio::select! {
            _ = ctx.inner.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tracing::info!("scheduler caches synced; scheduling");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut algo = Algorithm::new(seed);
    let mut snapshot = Snapshot::default();
    let binds = Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT));
    let mut housekeeping = Instant::now();
    loop {
        let now = Instant::now();
        let (popped, invalid, next_backoff) = {
            let mut sh = ctx.inner.lock();
            if now.duration_since(housekeeping) >= HOUSEKEEPING {
                housekeeping = now;
                sh.cache.cleanup_expired(now);
                sh.queue.flush(now);
            }
            let p = sh.queue.pop(now);
            ctx.metrics.pending(sh.queue.lengths());
            (p, std::mem::take(&mut sh.invalid), sh.queue.next_backoff())
        };
        for (pod, reason) in invalid {
            report_unschedulable(&ctx, &pod, &reason, None);
        }
        let Some(qp) = popped else {
            let wait = next_backoff
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(HOUSEKEEPING)
                .min(HOUSEKEEPING);
            tokio::select! {
                _ = ctx.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        };
        // A slot for the binding, before deciding, so decisions never outrun binders.
        let Ok(permit) = binds.clone().acquire_owned().await else {
            return Ok(());
        };
        schedule_one(&ctx, &config, &mut algo, &mut snapshot, qp, permit);
        // Let the watchers and binders run between cycles on a busy runtime.
        tokio::task::yield_now().await;
    }
}

fn schedule_one(
    ctx: &Ctx,
    config: &Config,
    algo: &mut Algorithm,
    snapshot: &mut Snapshot,
    qp: QueuedPod,
    permit: OwnedSemaphorePermit,
) {
    let start = Instant::now();
    let pod = qp.info.clone();
    let nominated = {
        let mut sh = ctx.inner.lock();
        sh.cache.update_snapshot(snapshot);
        (!sh.nominated.is_empty()).then(|| sh.nominated.clone())
    };
    let nominated = nominated.unwrap_or_default();
    match algo.schedule(&ctx.fw, config, snapshot, &nominated, &pod) {
        Outcome::Scheduled(mut r) => {
            if let Err(msg) = reserve(&ctx.fw, &mut r.state, &pod, &r.node_name) {
                fail_with_error(ctx, qp, &msg, start);
                return;
            }
            let mut assumed = (*pod).clone();
            assumed.node_name = Some(r.node_name.clone());
            let mut placed = crate::cache::slim_assigned(&pod.pod);
            placed.spec.get_or_insert_with(Default::default).node_name = Some(r.node_name.clone());
            assumed.pod = Arc::new(placed);
            {
                let mut sh = ctx.inner.lock();
                sh.cache.assume_pod(Arc::new(assumed), &r.node_name);
                sh.nominated.remove(&pod.uid);
            }
            let ctx = ctx.clone();
            tokio::spawn(async move {
                bind_pod(&ctx, qp, r.state, r.node_name, start).await;
                drop(permit);
            });
        }
        Outcome::Unschedulable(fit) => {
            let msg = fit.to_string();
            ctx.metrics.attempt(
                AttemptResult::Unschedulable,
                &ctx.profile,
                start.elapsed().as_secs_f64(),
            );
            let nominate = fit
                .post_filter
                .as_ref()
                .and_then(|pf| pf.nominated_node.clone().map(|n| (n, pf.victims.clone())))
                .filter(|(n, _)| !n.is_empty());
            tracing::debug!(pod = %pod.key(), %msg, "unschedulable");
            {
                let mut sh = ctx.inner.lock();
                if let Some((n, _)) = &nominate {
                    sh.nominated.add(pod.clone(), n);
                }
                sh.queue
                    .requeue_unschedulable(qp, fit.rejecting_plugins.clone(), Instant::now());
                ctx.metrics.pending(sh.queue.lengths());
            }
            if let Some((node, victims)) = &nominate {
                preempt(ctx, &pod, node, victims.clone());
            }
            report_unschedulable(ctx, &pod.pod, &msg, nominate.map(|(n, _)| n));
        }
        Outcome::Error(st) => {
            let msg = format!("{}: {}", st.plugin, st.reasons.join(", "));
            fail_with_error(ctx, qp, &msg, start);
        }
    }
}

fn reserve(
    fw: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    node: &str,
) -> Result<(), String> {
    for (k, p) in fw.reserve.iter().enumerate() {
        let st = p.reserve(state, pod, node);
        if !st.is_success() {
            unreserve(&fw.reserve[..=k], state, pod, node);
            return Err(format!("{}: {}", p.name(), st.reasons.join(", ")));
        }
    }
    Ok(())
}

fn unreserve(
    plugins: &[Arc<dyn crate::framework::Reserve>],
    state: &mut CycleState,
    pod: &PodInfo,
    node: &str,
) {
    for p in plugins.iter().rev() {
        p.unreserve(state, pod, node);
    }
}

/// A failure that is not the pod's: counted as `error`, retried after backoff.
fn fail_with_error(ctx: &Ctx, qp: QueuedPod, msg: &str, start: Instant) {
    ctx.metrics.attempt(
        AttemptResult::Error,
        &ctx.profile,
        start.elapsed().as_secs_f64(),
    );
    let pod = qp.info.pod.clone();
    {
        let mut sh = ctx.inner.lock();
        sh.queue.requeue_backoff(qp, Instant::now());
    }
    ctx.events.record(EventRequest {
        regarding: binder::pod_ref(&pod),
        type_: "Warning",
        reason: "FailedScheduling",
        action: "Scheduling",
        note: msg.to_string(),
    });
    ctx.inner.wake.notify_one();
}

async fn bind_pod(ctx: &Ctx, qp: QueuedPod, mut state: CycleState, node: String, start: Instant) {
    let pod = qp.info.clone();
    let mut result = Ok(());
    for p in &ctx.fw.pre_bind {
        let st = p.pre_bind(&state, &pod, &node);
        if !st.is_success() {
            result = Err(format!("{}: {}", p.name(), st.reasons.join(", ")));
            break;
        }
    }
    let gone = match result {
        Ok(()) => match binder::bind(&ctx.client, &pod.pod, &node).await {
            Ok(()) => None,
            // The pod was deleted or bound by someone else: nothing to retry.
            Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) => {
                Some(true)
            }
            Err(e) => {
                result = Err(format!("Binding rejected: {e}"));
                Some(false)
            }
        },
        Err(_) => Some(false),
    };
    let key = pod.key();
    match gone {
        None => {
            {
                let mut sh = ctx.inner.lock();
                sh.cache.finish_binding(&pod.uid, Instant::now());
                sh.queue.done(&key);
            }
            ctx.metrics.attempt(
                AttemptResult::Scheduled,
                &ctx.profile,
                start.elapsed().as_secs_f64(),
            );
            let created = pod.pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let since = created
                .and_then(|c| {
                    k8s_openapi::jiff::Timestamp::now()
                        .duration_since(c)
                        .try_into()
                        .ok()
                })
                .map(|d: Duration| d.as_secs_f64())
                .unwrap_or_else(|| qp.initial.elapsed().as_secs_f64());
            ctx.metrics.pod_scheduled(since);
            ctx.events.record(EventRequest {
                regarding: binder::pod_ref(&pod.pod),
                type_: "Normal",
                reason: "Scheduled",
                action: "Binding",
                note: format!("Successfully assigned {key} to {node}"),
            });
        }
        Some(deleted) => {
            unreserve(&ctx.fw.reserve, &mut state, &pod, &node);
            {
                let mut sh = ctx.inner.lock();
                sh.cache.forget_pod(&pod.uid);
                if deleted {
                    sh.queue.done(&key);
                }
            }
            if let Err(msg) = result {
                tracing::debug!(pod = %key, %msg, "binding failed");
                fail_with_error(ctx, qp, &msg, start);
            }
            ctx.inner.wake.notify_one();
        }
    }
}

/// Deletes the victims gracefully, each with a `Preempted` Event.
fn preempt(ctx: &Ctx, pod: &PodInfo, node: &str, victims: Vec<(String, String, String)>) {
    let (ctx, node, preemptor) = (ctx.clone(), node.to_string(), pod.uid.clone());
    tokio::spawn(async move {
        for (ns, name, uid) in victims {
            match binder::delete_victim(&ctx.client, &ns, &name).await {
                Ok(()) => ctx.events.record(EventRequest {
                    regarding: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        namespace: Some(ns),
                        name: Some(name),
                        uid: Some(uid),
                        ..Default::default()
                    },
                    type_: "Normal",
                    reason: "Preempted",
                    action: "Preempting",
                    note: format!("Preempted by pod {preemptor} on node {node}"),
                }),
                Err(e) => tracing::warn!(%e, victim = %name, "preemption victim not deleted"),
            }
        }
    });
}

/// A `FailedScheduling` Event, and `PodScheduled=False` (plus `nominatedNodeName`) patched
/// when it differs from what the pod shows.
fn report_unschedulable(ctx: &Ctx, pod: &Arc<Pod>, msg: &str, nominated: Option<String>) {
    ctx.events.record(EventRequest {
        regarding: binder::pod_ref(pod),
        type_: "Warning",
        reason: "FailedScheduling",
        action: "Scheduling",
        note: msg.to_string(),
    });
    let shown = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .unwrap_or("");
    let nominated = nominated.filter(|n| n != shown);
    if nominated.is_none() && binder::has_condition(pod, "False", "Unschedulable", msg) {
        return;
    }
    ctx.statuses.queue(pod.clone(), msg.to_string(), nominated);
}
