//! kube-controller-manager's `nodelifecycle`: node health, the taints that follow it, and
//! (as kube's separate `taint-eviction-controller`) the eviction of pods from nodes with
//! NoExecute taints.
//!
//! - Health ([`monitor`]): every `node_monitor_period` each node's heartbeats — its Lease
//!   in `kube-node-lease` and its Ready condition's `lastHeartbeatTime` — are compared
//!   with what was seen before; a change counts as a heartbeat at the time *this
//!   controller* saw it (its own clock, never the kubelet's). A node silent for
//!   `node_monitor_grace_period` (`node_startup_grace_period` while it has never reported
//!   Ready) gets every condition Unknown, the Event NodeNotReady, and its pods' Ready
//!   condition False.
//! - Taints ([`Tainter`]): a node's Ready condition and `spec.unschedulable` decide its
//!   `node.kubernetes.io/*` taints (see [`taints::desired_taints`]); they are written with
//!   a patch of `spec.taints` guarded by the node's resourceVersion, so a concurrent
//!   writer makes the patch fail and the node is looked at again. When no node at all is
//!   Ready (kube's master disruption mode) no NoExecute taints are set and those set are
//!   removed: the control plane is more likely cut off than every node dead.
//! - Eviction ([`eviction`]): a pod on a node with NoExecute taints is deleted once one of
//!   them is not tolerated, or when its toleration runs out; a delayed key per pod, so the
//!   decision is taken again at that time (and dropped if the taint is gone).
//!
//! Lifecycle: [`start`] registers the handlers; the workers and the monitor start once the
//! Node, Lease and Pod caches are synced and stop with the controller manager.

mod eviction;
mod monitor;
pub(crate) mod taints;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::task::JoinHandle;

use crate::informer::{key_of, Change, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_conflict, is_not_found, ApiError};
use crate::{Context, Queue};

/// The keys of the pods bound to each node, kept by the pod handler so a node's pods are
/// found without walking every pod.
#[derive(Clone, Default)]
pub(crate) struct PodsByNode(Arc<Mutex<HashMap<String, HashSet<String>>>>);

impl PodsByNode {
    fn node_of(pod: &Pod) -> Option<&str> {
        pod.spec
            .as_ref()?
            .node_name
            .as_deref()
            .filter(|n| !n.is_empty())
    }

    fn apply(&self, change: &Change<'_, Pod>) {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (old, new) = match change {
            Change::Added(p) => (None, Some(p)),
            Change::Updated { old, new } => (Some(old), Some(new)),
            Change::Deleted(p) => (Some(p), None),
        };
        let key = key_of(&**change.object());
        let old_node = old.and_then(|p| Self::node_of(p));
        let new_node = new.and_then(|p| Self::node_of(p));
        if old_node == new_node && new.is_some() {
            if let Some(n) = new_node {
                m.entry(n.to_string()).or_default().insert(key);
            }
            return;
        }
        if let Some(n) = old_node {
            if let Some(set) = m.get_mut(n) {
                set.remove(&key);
                if set.is_empty() {
                    m.remove(n);
                }
            }
        }
        if let Some(n) = new_node {
            m.entry(n.to_string()).or_default().insert(key);
        }
    }

    /// The keys of the pods bound to `node`.
    pub(crate) fn pods(&self, node: &str) -> Vec<String> {
        let m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let nodes = ctx.informers.informer::<Node>();
    let leases = ctx.informers.informer::<Lease>();
    let pods = ctx.informers.informer::<Pod>();
    let index = PodsByNode::default();
    let taint_queue = Queue::new();
    let evict_queue = Queue::new();
    {
        let (index, q, nodes) = (index.clone(), evict_queue.clone(), nodes.clone());
        pods.on_change(move |ch| {
            index.apply(ch);
            // A pod is looked at when it lands on a node with NoExecute taints or its
            // tolerations change; the node's handler covers taint changes.
            let relevant = match ch {
                Change::Added(p) => PodsByNode::node_of(p).is_some(),
                Change::Updated { old, new } => {
                    PodsByNode::node_of(old) != PodsByNode::node_of(new)
                        || old.spec.as_ref().map(|s| &s.tolerations)
                            != new.spec.as_ref().map(|s| &s.tolerations)
                }
                Change::Deleted(_) => false,
            };
            if !relevant {
                return;
            }
            let p = ch.object();
            if let Some(n) = PodsByNode::node_of(p).and_then(|n| nodes.get("", n)) {
                if !taints::no_execute(&n).is_empty() {
                    q.add(eviction::pod_key(p));
                }
            }
        });
    }
    {
        let (tq, eq) = (taint_queue.clone(), evict_queue.clone());
        nodes.on_change(move |ch| {
            let name = key_of(&**ch.object());
            match ch {
                Change::Added(n) => {
                    tq.add(name.clone());
                    if !taints::no_execute(n).is_empty() {
                        eq.add(eviction::node_key(&name));
                    }
                }
                Change::Updated { old, new } => {
                    tq.add(name.clone());
                    if taints::no_execute(old) != taints::no_execute(new) {
                        eq.add(eviction::node_key(&name));
                    }
                }
                Change::Deleted(_) => {}
            }
        });
    }
    let ready = {
        let (n, l, p) = (nodes.clone(), leases.clone(), pods.clone());
        move || {
            let (n, l, p) = (n.clone(), l.clone(), p.clone());
            async move {
                n.synced().await;
                l.synced().await;
                p.synced().await;
            }
        }
    };
    let tainter = Tainter {
        api: Api::all(ctx.client.clone()),
        nodes: nodes.clone(),
        ctx: ctx.clone(),
    };
    let evictor = eviction::Evictor::new(
        ctx,
        nodes.clone(),
        pods.clone(),
        index.clone(),
        evict_queue.clone(),
    );
    let workers = ctx.config.workers;
    let h1 = runner::spawn(
        Arc::new(tainter),
        taint_queue.clone(),
        workers,
        ready(),
        ctx.stop.clone(),
    );
    let h2 = runner::spawn(
        Arc::new(evictor),
        evict_queue,
        workers,
        ready(),
        ctx.stop.clone(),
    );
    let m = monitor::Monitor::new(ctx, nodes, leases, pods, index, taint_queue.clone());
    let (ready3, stop) = (ready(), ctx.stop.clone());
    let h3 = tokio::spawn(async move {
        tokio::select! {
            () = ready3 => m.run().await,
            () = stop.cancelled() => {}
        }
    });
    Some(tokio::spawn(async move {
        let _ = tokio::join!(h1, h2, h3);
    }))
}

/// kube's master disruption mode: when no node is Ready the control plane is more likely
/// cut off than every node dead, so nothing is evicted (NoExecute taints are removed)
/// until a node is Ready again.
pub(crate) fn all_down(nodes: &Informer<Node>) -> bool {
    let mut any = false;
    let mut ready = false;
    nodes.for_each(None, |n| {
        any = true;
        ready |= taints::is_ready(n);
    });
    any && !ready
}

/// Keeps each node's `node.kubernetes.io/*` taints in line with its conditions (kube's
/// doNoScheduleTaintingPass and doNoExecuteTaintingPass).
struct Tainter {
    api: Api<Node>,
    nodes: Informer<Node>,
    ctx: Context,
}

#[async_trait::async_trait]
impl Reconciler for Tainter {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "nodelifecycle"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        let Some(node) = self.nodes.get("", key) else {
            return Ok(Action::Done);
        };
        // Only a node that is down can need NoExecute taints; only then is it worth
        // asking whether every node is down.
        let evict = taints::is_ready(&node) || !all_down(&self.nodes);
        let Some(want) = taints::desired_taints(&node, self.ctx.now(), evict) else {
            return Ok(Action::Done);
        };
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": want},
        });
        match self
            .api
            .patch(key, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if is_not_found(&e) => Ok(Action::Done),
            // The cache is behind a concurrent writer; its update requeues the node.
            Err(e) if is_conflict(&e) => {
                Ok(Action::RequeueAfter(std::time::Duration::from_millis(200)))
            }
            Err(e) => Err(ApiError::new("taint node", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [], "nodeName": node},
            }))
            .unwrap_or_default(),
        )
    }

    #[test]
    fn the_index_follows_pods_between_nodes() {
        let idx = PodsByNode::default();
        let (a, b) = (pod("p", None), pod("p", Some("n1")));
        idx.apply(&Change::Added(&a));
        assert!(idx.pods("n1").is_empty());
        idx.apply(&Change::Updated { old: &a, new: &b });
        assert_eq!(idx.pods("n1"), vec!["default/p".to_string()]);
        let c = pod("p", Some("n2"));
        idx.apply(&Change::Updated { old: &b, new: &c });
        assert!(idx.pods("n1").is_empty());
        assert_eq!(idx.pods("n2"), vec!["default/p".to_string()]);
        idx.apply(&Change::Deleted(&c));
        assert!(idx.pods("n2").is_empty());
    }
}
