//! The scheduler's writes to the API, all off the scheduling loop: `pods/binding`, the
//! `PodScheduled=False` condition and `status.nominatedNodeName`, preemption's victim
//! deletions, and Events.
//!
//! Events go through a bounded channel drained by one task ([`EventRecorder`]); when it is
//! full they are dropped, so a slow API never slows scheduling. `PodScheduled=False`
//! patches go through a queue keyed by pod ([`StatusWriter`]): a few writers drain it, and
//! a newer verdict for a pod still waiting replaces the older one, so thousands of
//! unschedulable pods never mean thousands of concurrent requests. The other writes retry
//! transient failures (5xx, 429, transport errors) with exponential backoff and give up on
//! answers that will not change (404, 409, 422).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{mpsc, Notify, Semaphore};

/// How many Events may wait to be written before new ones are dropped.
pub const EVENT_QUEUE: usize = 4096;
/// Events written concurrently.
const EVENT_WRITERS: usize = 16;
const RETRIES: u32 = 5;
/// `PodScheduled=False` patches written concurrently.
const STATUS_WRITERS: usize = 8;

/// Whether an API failure is worth retrying.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Runs `op` until it succeeds, fails for good, or [`RETRIES`] attempts failed.
pub async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < RETRIES && is_transient(&e) => {
                tracing::debug!(%e, attempt, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One Event to write about a pod.
#[derive(Debug, Clone)]
pub struct EventRequest {
    pub regarding: ObjectReference,
    pub type_: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// The reference an Event's `regarding` gets for a pod.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The sending side of the Event channel; cloning is cheap.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<EventRequest>,
}

impl EventRecorder {
    /// Starts the task that writes Events with `client`, reported by `controller` (the
    /// profile's scheduler name, as kube-scheduler does) and `instance`.
    pub fn start(client: Client, controller: String, instance: String) -> EventRecorder {
        let (tx, mut rx) = mpsc::channel::<EventRequest>(EVENT_QUEUE);
        tokio::spawn(async move {
            let writers = Arc::new(Semaphore::new(EVENT_WRITERS));
            while let Some(req) = rx.recv().await {
                let Ok(permit) = writers.clone().acquire_owned().await else {
                    break;
                };
                let client = client.clone();
                let (controller, instance) = (controller.clone(), instance.clone());
                tokio::spawn(async move {
                    write_event(client, &controller, &instance, req).await;
                    drop(permit);
                });
            }
        });
        EventRecorder { tx }
    }

    /// Queues an Event; dropped when the queue is full.
    pub fn record(&self, req: EventRequest) {
        if self.tx.try_send(req).is_err() {
            tracing::debug!("event queue full; event dropped");
        }
    }
}

async fn write_event(client: Client, controller: &str, instance: &str, req: EventRequest) {
    let ns = req
        .regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = k8s_openapi::jiff::Timestamp::now();
    let name = format!(
        "{}.{:x}",
        req.regarding.name.as_deref().unwrap_or("pod"),
        now.as_nanosecond()
    );
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(req.action.into()),
        reason: Some(req.reason.into()),
        note: Some(req.note),
        type_: Some(req.type_.into()),
        regarding: Some(req.regarding),
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client, &ns);
    let pp = PostParams::default();
    if let Err(e) = with_retries("event", || api.create(&pp, &ev)).await {
        tracing::debug!(%e, "event not written");
    }
}

/// `pods/binding` for `pod` to `node`.
pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    with_retries("binding", || {
        api.create_subresource::<_, serde_json::Value>("binding", name, &pp, &binding)
    })
    .await
    .map(|_| ())
}

/// Whether the pod already carries this `PodScheduled` condition (so the patch is skipped).
pub fn has_condition(pod: &Pod, status: &str, reason: &str, message: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref().unwrap_or("") == message
        })
}

/// Patches `PodScheduled=False` with `reason` and `message`, and `nominatedNodeName` when
/// given (`Some("")` clears it).
pub async fn patch_unschedulable(
    client: &Client,
    pod: &Pod,
    reason: &str,
    message: &str,
    nominated: Option<&str>,
) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut status = json!({
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now()
                .round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
                .to_string(),
        }]
    });
    if let Some(n) = nominated {
        status["nominatedNodeName"] = if n.is_empty() { json!(null) } else { json!(n) };
    }
    let patch = json!({ "status": status });
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (pp, patch) = (PatchParams::default(), Patch::Strategic(&patch));
    with_retries("pod status", || api.patch_status(name, &pp, &patch))
        .await
        .map(|_| ())
}

/// One pod's unschedulable verdict waiting to be written.
struct StatusPatch {
    pod: Arc<Pod>,
    message: String,
    nominated: Option<String>,
}

#[derive(Default)]
struct StatusQueue {
    pending: HashMap<String, StatusPatch>,
    order: VecDeque<String>,
}

struct StatusShared {
    queue: Mutex<StatusQueue>,
    ready: Notify,
    closed: AtomicBool,
}

/// Writes `PodScheduled=False` (and `nominatedNodeName`) with [`STATUS_WRITERS`] tasks
/// from a queue keyed by pod: a pod queued again before its write keeps its place and
/// gets the newest verdict. The writers end when the last clone is dropped.
#[derive(Clone)]
pub struct StatusWriter {
    shared: Arc<StatusShared>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<StatusShared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.ready.notify_waiters();
    }
}

impl StatusWriter {
    pub fn start(client: Client) -> StatusWriter {
        let shared = Arc::new(StatusShared {
            queue: Mutex::new(StatusQueue::default()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        });
        for _ in 0..STATUS_WRITERS {
            tokio::spawn(status_worker(client.clone(), shared.clone()));
        }
        StatusWriter {
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        }
    }

    /// Queues `pod`'s verdict, replacing one still waiting for the same pod.
    pub fn queue(&self, pod: Arc<Pod>, message: String, nominated: Option<String>) {
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let patch = StatusPatch {
            pod,
            message,
            nominated,
        };
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.pending.insert(key.clone(), patch).is_none() {
                q.order.push_back(key);
            }
        }
        self.shared.ready.notify_one();
    }
}

async fn status_worker(client: Client, sh: Arc<StatusShared>) {
    loop {
        // Made before the checks: a `notify_one` or the closing `notify_waiters` that
        // comes after them still wakes this wait.
        let notified = sh.ready.notified();
        if sh.closed.load(Ordering::SeqCst) {
            return;
        }
        let taken = {
            let mut q = sh.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.order.pop_front().and_then(|k| q.pending.remove(&k))
        };
        let Some(p) = taken else {
            notified.await;
            continue;
        };
        let nominated = p.nominated.as_deref();
        if let Err(e) =
            patch_unschedulable(&client, &p.pod, "Unschedulable", &p.message, nominated).await
        {
            tracing::debug!(%e, "PodScheduled condition not written");
        }
    }
}

/// Deletes a preemption victim gracefully; a victim already gone is fine.
pub async fn delete_victim(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams::default();
    match with_retries("victim", || api.delete(name, &dp)).await {
        Err(e) if is_not_found(&e) => Ok(()),
        r => r.map(|_| ()),
    }
}
