//! kube-controller-manager's `podgc`: removes pods nobody else will.
//!
//! - Orphaned pods: bound to a node that no longer exists. A node missing from the cache
//!   is quarantined for [`ORPHAN_QUARANTINE`] (kube waits 40 s; a node being recreated,
//!   or a cache behind, gets that long) and then confirmed gone with a GET before its
//!   pods are marked Failed (DisruptionTarget, reason DeletionByPodGC) and force deleted.
//! - Terminated pods (Succeeded or Failed) beyond `terminated_pod_gc_threshold`: the
//!   oldest by creation go first (evicted ones before the rest, as kube sorts them).
//! - Terminating pods of a node that is not Ready and tainted
//!   `node.kubernetes.io/out-of-service`: marked Failed and force deleted.
//! - Unscheduled terminating pods (a `deletionTimestamp` and no node): no kubelet will
//!   finish them, so they are force deleted (grace 0).
//!
//! Keys: `orphaned` and `terminated` are passes over the pod cache, queued with a short
//! delay so a burst of changes costs one pass; `node:<name>` is one out-of-service node;
//! `pod:<ns>/<name>` is one unscheduled terminating pod. Each pass runs once at start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::informer::{key_of, split_key, Change, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_deleting, is_not_found, is_terminal, ApiError};
use crate::{Context, Queue};

/// How long a node is missing before its pods are deleted.
pub(crate) const ORPHAN_QUARANTINE: Duration = Duration::from_secs(2);
/// How long changes are gathered before a pass over the pods.
const BATCH: Duration = Duration::from_millis(200);
/// Deletes in flight at once.
const CONCURRENT_DELETES: usize = 32;

const ORPHANED: &str = "orphaned";
/// Nodes shut down for good are tainted so by their admin (kube's NodeOutOfService).
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
const TERMINATED: &str = "terminated";

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Whether `node` is not Ready and tainted out-of-service: its terminating pods will not
/// be finished by a kubelet.
fn out_of_service(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE));
    !ready && tainted
}

fn unscheduled_terminating(p: &Pod) -> bool {
    is_deleting(&p.metadata) && node_of(p).is_none()
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.informers.informer::<Pod>();
    let queue = Queue::new();
    // Terminated pods in the cache, counted by the handler so a pass runs only when
    // they are over the threshold.
    let terminated = Arc::new(AtomicUsize::new(0));
    {
        let (q, nodes, count) = (queue.clone(), nodes.clone(), terminated.clone());
        let threshold = ctx.config.terminated_pod_gc_threshold;
        pods.on_change(move |ch| {
            let p = ch.object();
            let (was, is) = match ch {
                Change::Added(p) => (false, is_terminal(p)),
                Change::Updated { old, new } => (is_terminal(old), is_terminal(new)),
                Change::Deleted(p) => (is_terminal(p), false),
            };
            if was != is {
                let n = if is {
                    count.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    count.fetch_sub(1, Ordering::Relaxed).saturating_sub(1)
                };
                if is && threshold > 0 && n > threshold {
                    q.add_after(TERMINATED, BATCH);
                }
            }
            if let Change::Deleted(_) = ch {
                return;
            }
            if unscheduled_terminating(p) {
                q.add(format!("pod:{}", key_of(&**p)));
            }
            if let Some(n) = node_of(p) {
                match nodes.get("", n) {
                    None => q.add_after(ORPHANED, BATCH),
                    Some(node) if is_deleting(&p.metadata) && out_of_service(&node) => {
                        q.add_after(format!("node:{n}"), BATCH);
                    }
                    Some(_) => {}
                }
            }
        });
    }
    {
        let q = queue.clone();
        nodes.on_change(move |ch| match ch {
            Change::Deleted(_) => q.add_after(ORPHANED, BATCH),
            Change::Added(n) | Change::Updated { new: n, .. } => {
                if out_of_service(n) {
                    q.add_after(format!("node:{}", key_of(&***n)), BATCH);
                }
            }
        });
    }
    queue.add(ORPHANED);
    queue.add(TERMINATED);
    let ready = {
        let (n, p) = (nodes.clone(), pods.clone());
        async move {
            n.synced().await;
            p.synced().await;
        }
    };
    let r = PodGc {
        ctx: ctx.clone(),
        nodes,
        pods,
        missing: Mutex::new(HashMap::new()),
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        2,
        ready,
        ctx.stop.clone(),
    ))
}

/// What a pod is marked with before it is force deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Nothing,
    /// Phase Failed (a terminating pod of an out-of-service node).
    Failed,
    /// Phase Failed and DisruptionTarget (its node is gone).
    NodeGone,
}

struct PodGc {
    ctx: Context,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    /// Nodes pods are bound to but the cache lacks, and since when (this clock).
    missing: Mutex<HashMap<String, Timestamp>>,
}

impl PodGc {
    fn api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    /// Force deletes (grace 0) every pod in `victims`, concurrently.
    async fn delete_all(&self, victims: Vec<Arc<Pod>>, mark: Mark) -> Result<(), ApiError> {
        use futures_util::StreamExt;
        let results: Vec<Result<(), ApiError>> = futures_util::stream::iter(victims)
            .map(|p| async move { self.delete(&p, mark).await })
            .buffer_unordered(CONCURRENT_DELETES)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn delete(&self, pod: &Pod, mark: Mark) -> Result<(), ApiError> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api = self.api(&ns);
        if mark != Mark::Nothing && !is_terminal(pod) {
            // kube's markFailedAndDeletePodWithCondition.
            let mut status = serde_json::json!({"status": {"phase": "Failed"}});
            if mark == Mark::NodeGone {
                status["status"]["conditions"] = serde_json::json!([{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists",
                    "lastTransitionTime": Time(self.ctx.now()),
                }]);
            }
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(ApiError::new("mark failed pod", format!("{ns}/{name}"), e)),
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || crate::util::is_conflict(&e) => Ok(()),
            Err(e) => Err(ApiError::new("delete pod", format!("{ns}/{name}"), e)),
        }
    }

    async fn orphaned(&self) -> Result<Action, ApiError> {
        let now = self.ctx.now();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        self.pods.for_each(None, |p| {
            if let Some(n) = node_of(p) {
                if self.nodes.get("", n).is_none() {
                    by_node.entry(n.to_string()).or_default().push(p.clone());
                }
            }
        });
        let mut due = Vec::new();
        let mut wait: Option<Duration> = None;
        {
            let mut missing = self
                .missing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            missing.retain(|n, _| by_node.contains_key(n));
            for node in by_node.keys() {
                let since = *missing.entry(node.clone()).or_insert(now);
                let gone = Duration::from_millis(
                    now.as_millisecond()
                        .saturating_sub(since.as_millisecond())
                        .max(0) as u64,
                );
                match ORPHAN_QUARANTINE.checked_sub(gone).filter(|d| !d.is_zero()) {
                    Some(left) => wait = Some(wait.map_or(left, |w| w.min(left))),
                    None => due.push(node.clone()),
                }
            }
        }
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        for node in due {
            // The cache may be behind: only a node the server does not know is gone.
            match nodes.get_opt(&node).await {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(e) => return Err(ApiError::new("get node", node, e)),
            }
            let victims = by_node.remove(&node).unwrap_or_default();
            tracing::info!(
                node,
                pods = victims.len(),
                "deleting the pods of a deleted node"
            );
            self.delete_all(victims, Mark::NodeGone).await?;
        }
        Ok(wait.map_or(Action::Done, |w| {
            Action::RequeueAfter(w + Duration::from_millis(10))
        }))
    }

    /// kube's gcTerminating: the terminating pods of an out-of-service node.
    async fn out_of_service(&self, node: &str) -> Result<Action, ApiError> {
        if !self.nodes.get("", node).is_some_and(|n| out_of_service(&n)) {
            return Ok(Action::Done);
        }
        let mut victims = Vec::new();
        self.pods.for_each(None, |p| {
            if is_deleting(&p.metadata) && node_of(p) == Some(node) {
                victims.push(p.clone());
            }
        });
        if !victims.is_empty() {
            tracing::info!(
                node,
                pods = victims.len(),
                "force deleting the terminating pods of an out-of-service node"
            );
        }
        self.delete_all(victims, Mark::Failed).await?;
        Ok(Action::Done)
    }

    async fn terminated(&self) -> Result<Action, ApiError> {
        let threshold = self.ctx.config.terminated_pod_gc_threshold;
        if threshold == 0 {
            // kube: a threshold of 0 turns this part off.
            return Ok(Action::Done);
        }
        let mut terminated: Vec<Arc<Pod>> = Vec::new();
        self.pods.for_each(None, |p| {
            if is_terminal(p) && !is_deleting(&p.metadata) {
                terminated.push(p.clone());
            }
        });
        if terminated.len() <= threshold {
            return Ok(Action::Done);
        }
        let excess = terminated.len() - threshold;
        let evicted =
            |p: &Pod| p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
        terminated.sort_by(|a, b| {
            evicted(b).cmp(&evicted(a)).then_with(|| {
                let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
                    .then_with(|| a.name_any().cmp(&b.name_any()))
            })
        });
        terminated.truncate(excess);
        tracing::info!(
            count = excess,
            threshold,
            "deleting terminated pods over the threshold"
        );
        self.delete_all(terminated, Mark::Nothing).await?;
        Ok(Action::Done)
    }
}

#[async_trait::async_trait]
impl Reconciler for PodGc {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "podgc"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        match key {
            ORPHANED => self.orphaned().await,
            TERMINATED => self.terminated().await,
            _ => {
                if let Some(node) = key.strip_prefix("node:") {
                    return self.out_of_service(node).await;
                }
                let Some(k) = key.strip_prefix("pod:") else {
                    return Ok(Action::Done);
                };
                let (ns, name) = split_key(k);
                match self.pods.get(ns, name) {
                    Some(p) if unscheduled_terminating(&p) => {
                        self.delete(&p, Mark::Nothing).await?;
                        Ok(Action::Done)
                    }
                    _ => Ok(Action::Done),
                }
            }
        }
    }
}
