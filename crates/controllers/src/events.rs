//! Events for what controllers do, written as core/v1 Events the way client-go's event
//! recorder writes them, so `kubectl describe` and `kubectl get events` read as on
//! Kubernetes: the reporting component as `source.component`, a repeat of the same event
//! for the same object counted on the first one (`count`, `lastTimestamp`) instead of
//! written again, and client-go's spam filter (per object and component, a burst of 25
//! then one per 5 minutes) so a burst of ten thousand creates is not ten thousand writes.
//!
//! Recording never blocks a reconcile: events go through a bounded channel to one writer
//! task, and are dropped (as client-go drops them) when it is full or a write fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tokio::time::Instant;

const QUEUE: usize = 1000;
const BURST: f64 = 25.0;
const REFILL_EVERY: Duration = Duration::from_secs(300);
/// Aggregated events remembered per writer (client-go's LRU holds 4096).
const REMEMBERED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

struct Record {
    component: &'static str,
    object: ObjectReference,
    kind: EventType,
    reason: String,
    message: String,
}

/// Writes Events for one component (`replicaset-controller` …); cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    tx: mpsc::Sender<Record>,
    spam: Arc<Mutex<HashMap<(String, &'static str), Bucket>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The writer behind every [`Recorder`] of one controller manager.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Record>,
    spam: Arc<Mutex<HashMap<(String, &'static str), Bucket>>>,
}

impl EventSink {
    /// Starts the writer task (it ends when every recorder is dropped).
    pub fn start(client: Client) -> EventSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(client, rx));
        EventSink {
            tx,
            spam: Default::default(),
        }
    }

    /// A recorder that reports as `component`.
    pub fn recorder(&self, component: &'static str) -> Recorder {
        Recorder {
            component,
            tx: self.tx.clone(),
            spam: self.spam.clone(),
        }
    }
}

impl Recorder {
    /// Records an event about `obj`.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.publish_ref(obj.object_ref(&()), kind, reason, message);
    }

    /// Records an event about the object `object` names.
    pub fn publish_ref(
        &self,
        object: ObjectReference,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let id = object
            .uid
            .clone()
            .or_else(|| object.name.clone())
            .unwrap_or_default();
        if !self.allow(id) {
            return;
        }
        let r = Record {
            component: self.component,
            object,
            kind,
            reason: reason.to_string(),
            message: message.into(),
        };
        if self.tx.try_send(r).is_err() {
            tracing::debug!(component = self.component, "event queue full; event dropped");
        }
    }

    pub fn normal<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.publish(obj, EventType::Normal, reason, message);
    }

    pub fn warning<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.publish(obj, EventType::Warning, reason, message);
    }

    /// client-go's EventSourceObjectSpamFilter: a token bucket per object and component.
    fn allow(&self, id: String) -> bool {
        let mut spam = self
            .spam
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if spam.len() > REMEMBERED {
            spam.retain(|_, b| now.duration_since(b.at) < REFILL_EVERY * 25);
        }
        let b = spam.entry((id, self.component)).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() / REFILL_EVERY.as_secs_f64();
        b.tokens = (b.tokens + refill).min(BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The identity of an aggregated event: same object, component, type, reason, message.
type Identity = (String, &'static str, &'static str, String, String);

async fn write_events(client: Client, mut rx: mpsc::Receiver<Record>) {
    let mut seen: HashMap<Identity, (String, String, i32)> = HashMap::new();
    while let Some(r) = rx.recv().await {
        let ns = r
            .object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let id: Identity = (
            r.object.uid.clone().unwrap_or_default(),
            r.component,
            r.kind.as_str(),
            r.reason.clone(),
            r.message.clone(),
        );
        let now = Time(Timestamp::now());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        if let Some((ens, name, count)) = seen.get_mut(&id) {
            *count += 1;
            let patch = serde_json::json!({"count": *count, "lastTimestamp": now});
            let res = Api::<Event>::namespaced(client.clone(), ens)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            match res {
                Ok(_) => continue,
                // Expired (event TTL) or never written: write it anew below.
                Err(e) => tracing::debug!(%e, "event count update failed"),
            }
        }
        let name = format!(
            "{}.{:x}",
            r.object.name.as_deref().unwrap_or("unknown"),
            now.0.as_nanosecond()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: r.object,
            reason: Some(r.reason),
            message: Some(r.message),
            source: Some(EventSource {
                component: Some(r.component.to_string()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            type_: Some(r.kind.as_str().to_string()),
            reporting_component: Some(r.component.to_string()),
            reporting_instance: Some(String::new()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                seen.insert(id, (ns, name, 1));
            }
            Err(e) => tracing::debug!(%e, "event write failed; dropped"),
        }
    }
}
