//! Node health (kube's monitorNodeHealth): each pass looks at every node's heartbeats and
//! marks the silent ones Unknown. What was seen of each node lives here, in memory: the
//! last Ready heartbeat and Lease renewTime seen, and when (by this controller's clock)
//! either last changed. A restarted controller gives every node a fresh grace period.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::taints::condition;
use super::PodsByNode;
use crate::informer::{split_key, Informer};
use crate::util::{is_not_found, pod_condition, ApiError};
use crate::{Context, EventType, Queue, Recorder};

/// The conditions a silent node has set to Unknown (kube's nodeConditionTypes).
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Pod status writes in flight at once when a node's pods are marked not ready.
const CONCURRENT_POD_WRITES: usize = 32;

struct Health {
    /// When this controller last saw a heartbeat.
    probe: Timestamp,
    /// The Ready condition's lastHeartbeatTime last seen.
    ready_heartbeat: Option<Timestamp>,
    /// The Lease's renewTime last seen.
    lease_renew: Option<Timestamp>,
    /// The node's uid (for the Event when it goes).
    uid: Option<String>,
}

pub(super) struct Monitor {
    ctx: Context,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    index: PodsByNode,
    recorder: Recorder,
    health: HashMap<String, Health>,
    /// Nodes whose pods could not all be marked not ready (tried again next pass).
    retry: HashSet<String>,
    /// The taint queue: every node is looked at again when disruption mode flips.
    taint_queue: Queue,
    /// Whether the last pass found every node down (master disruption mode).
    all_down: bool,
}

impl Monitor {
    pub(super) fn new(
        ctx: &Context,
        nodes: Informer<Node>,
        leases: Informer<Lease>,
        pods: Informer<Pod>,
        index: PodsByNode,
        taint_queue: Queue,
    ) -> Monitor {
        Monitor {
            ctx: ctx.clone(),
            nodes,
            leases,
            pods,
            index,
            recorder: ctx.events.recorder("node-controller"),
            health: HashMap::new(),
            retry: HashSet::new(),
            taint_queue,
            all_down: false,
        }
    }

    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(
            self.ctx
                .config
                .node_monitor_period
                .max(Duration::from_millis(10)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.pass().await,
                () = self.ctx.stop.cancelled() => return,
            }
        }
    }

    async fn pass(&mut self) {
        let nodes = self.nodes.list(None);
        let names: HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        let recorder = &self.recorder;
        self.health.retain(|n, h| {
            let keep = names.contains(n.as_str());
            if !keep {
                node_event(
                    recorder,
                    n,
                    h.uid.clone(),
                    "RemovingNode",
                    &format!("Removing Node {n} from Controller"),
                );
            }
            keep
        });
        self.retry.retain(|n| names.contains(n.as_str()));
        for node in &nodes {
            if let Err(e) = self.check(node).await {
                tracing::debug!(error = %crate::runner::Chain(&e), "node health update failed; next pass retries");
            }
        }
        let all_down = super::all_down(&self.nodes);
        if all_down != self.all_down {
            self.all_down = all_down;
            if all_down {
                tracing::warn!("no node is Ready: entering master disruption mode (no evictions)");
            } else {
                tracing::info!("a node is Ready again: leaving master disruption mode");
            }
            for n in &names {
                self.taint_queue.add(*n);
            }
        }
    }

    /// One node: note its heartbeats, mark it Unknown when silent past its grace, and
    /// mark its pods not ready when it stops being Ready.
    async fn check(&mut self, node: &Node) -> Result<(), ApiError> {
        let name = node.name_any();
        let now = self.ctx.now();
        let observed = condition(node, "Ready").cloned();
        let heartbeat = observed
            .as_ref()
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        let grace = match observed {
            None => self.ctx.config.node_startup_grace_period,
            Some(_) => self.ctx.config.node_monitor_grace_period,
        };
        if !self.health.contains_key(&name) {
            node_event(
                &self.recorder,
                &name,
                node.metadata.uid.clone(),
                "RegisteredNode",
                &format!("Registered Node {name} in Controller"),
            );
        }
        let h = self.health.entry(name.clone()).or_insert_with(|| {
            // A node that never reported counts its startup grace from its creation.
            let probe = match &observed {
                None => node
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(now, |t| t.0),
                Some(_) => now,
            };
            Health {
                probe,
                ready_heartbeat: heartbeat,
                lease_renew: None,
                uid: node.metadata.uid.clone(),
            }
        });
        if h.ready_heartbeat != heartbeat {
            h.ready_heartbeat = heartbeat;
            h.probe = now;
        }
        let renew = self
            .leases
            .get("kube-node-lease", &name)
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        if renew.is_some() && renew > h.lease_renew {
            h.lease_renew = renew;
            h.probe = now;
        }
        let silent = now.as_millisecond() - h.probe.as_millisecond() > grace.as_millis() as i64;
        let mut current = observed.as_ref().map(|c| c.status.clone());
        if silent {
            if let Some(conditions) = unknown_conditions(node, now) {
                let mut updated = node.clone();
                if let Some(s) = updated.status.as_mut() {
                    s.conditions = Some(conditions);
                }
                let api: Api<Node> = Api::all(self.ctx.client.clone());
                match api
                    .replace_status(&name, &PostParams::default(), &updated)
                    .await
                {
                    Ok(_) => current = Some("Unknown".into()),
                    Err(e) if is_not_found(&e) => return Ok(()),
                    Err(e) => return Err(ApiError::new("mark node status unknown", name, e)),
                }
            }
        }
        let was_ready = observed.as_ref().is_some_and(|c| c.status == "True");
        let is_ready = current.as_deref() == Some("True");
        if current.is_some() && !is_ready && (was_ready || self.retry.contains(&name)) {
            if was_ready {
                self.recorder.normal(
                    node,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
            }
            if self.mark_pods_not_ready(&name, now).await {
                self.retry.remove(&name);
            } else {
                self.retry.insert(name);
            }
        } else if is_ready {
            self.retry.remove(&name);
        }
        Ok(())
    }

    /// kube's MarkPodsNotReady: the Ready condition of every pod on `node` goes False.
    /// Whether every write succeeded.
    async fn mark_pods_not_ready(&self, node: &str, now: Timestamp) -> bool {
        let pods: Vec<_> = self
            .index
            .pods(node)
            .iter()
            .filter_map(|k| {
                let (ns, name) = split_key(k);
                self.pods.get(ns, name)
            })
            .filter(|p| pod_condition(p, "Ready").is_some_and(|c| c.status != "False"))
            .collect();
        let results: Vec<bool> = futures_util::stream::iter(pods)
            .map(|pod| async move {
                let ns = pod.namespace().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
                let patch = serde_json::json!({"status": {"conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": Time(now)},
                ]}});
                match api
                    .patch_status(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await
                {
                    Ok(_) => {
                        self.recorder
                            .warning(&*pod, "NodeNotReady", "Node is not ready");
                        true
                    }
                    Err(e) if is_not_found(&e) => true,
                    Err(e) => {
                        tracing::debug!(%e, pod = pod.name_any(), "marking pod not ready failed");
                        false
                    }
                }
            })
            .buffer_unordered(CONCURRENT_POD_WRITES)
            .collect()
            .await;
        results.into_iter().all(|ok| ok)
    }
}

/// kube's RecordNodeEvent: an Event about the node `name` (which may be gone).
fn node_event(recorder: &Recorder, name: &str, uid: Option<String>, reason: &str, what: &str) {
    let object = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.to_string()),
        uid,
        ..Default::default()
    };
    recorder.publish_ref(
        object,
        EventType::Normal,
        reason,
        format!("Node {name} event: {what}"),
    );
}

/// The node's conditions with every one of [`CONDITIONS`] Unknown, or None when they
/// already are. A condition the kubelet never posted is added as never updated.
fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;

    #[test]
    fn a_silent_node_turns_unknown_once() {
        let now = Timestamp::from_second(1000).unwrap();
        let node = Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = unknown_conditions(&node, now).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].status, "Unknown");
        assert_eq!(got[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            got[0].message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(got[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        let mut node = node;
        node.status.as_mut().unwrap().conditions = Some(got);
        assert!(unknown_conditions(&node, now).is_none());
    }
}
