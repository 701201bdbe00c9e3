//! Taint-based eviction (kube's `taint-eviction-controller`): pods on a node with
//! NoExecute taints they do not tolerate are deleted at once; pods that tolerate them for
//! a while are deleted when the first toleration runs out, counted from the taint's
//! `timeAdded`.
//!
//! Keys: `node:<name>` when a node's NoExecute taints change (fans out to its pods) and
//! `pod:<ns>/<name>` for one pod. A pod's key comes back through [`Queue::add_after`] at
//! its eviction time and is decided again then, so a taint removed meanwhile (the node is
//! back) cancels the eviction. Before deleting, the pod gets the condition
//! DisruptionTarget (reason DeletionByTaintManager) and the Event TaintManagerEviction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::taints::{self, Eviction};
use super::PodsByNode;
use crate::informer::{key_of, split_key, Informer};
use crate::runner::{Action, Reconciler};
use crate::util::{is_deleting, is_not_found, ApiError};
use crate::{Context, Queue, Recorder};

pub(super) fn node_key(name: &str) -> String {
    format!("node:{name}")
}

pub(super) fn pod_key(pod: &Pod) -> String {
    format!("pod:{}", key_of(pod))
}

pub(super) struct Evictor {
    ctx: Context,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    index: PodsByNode,
    queue: Queue,
    recorder: Recorder,
    /// When each pending pod was first seen under a NoExecute taint that has no
    /// `timeAdded` (its toleration counts from then).
    first_seen: Mutex<HashMap<String, Timestamp>>,
}

impl Evictor {
    pub(super) fn new(
        ctx: &Context,
        nodes: Informer<Node>,
        pods: Informer<Pod>,
        index: PodsByNode,
        queue: Queue,
    ) -> Evictor {
        Evictor {
            ctx: ctx.clone(),
            nodes,
            pods,
            index,
            queue,
            recorder: ctx.events.recorder("taint-eviction-controller"),
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self, key: &str) {
        self.first_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    fn since(&self, key: &str) -> Timestamp {
        *self
            .first_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_string())
            .or_insert_with(|| self.ctx.now())
    }

    async fn pod(&self, key: &str) -> Result<Action, ApiError> {
        let (ns, name) = split_key(key);
        let pod = self.pods.get(ns, name);
        let node = pod
            .as_ref()
            .filter(|p| !is_deleting(&p.metadata))
            .and_then(|p| p.spec.as_ref()?.node_name.clone())
            .and_then(|n| self.nodes.get("", &n));
        let (Some(pod), Some(node)) = (pod, node) else {
            self.forget(key);
            return Ok(Action::Done);
        };
        let no_execute = taints::no_execute(&node);
        if no_execute.is_empty() {
            self.forget(key);
            return Ok(Action::Done);
        }
        let now = self.ctx.now();
        match taints::eviction(&pod, &no_execute, self.since(key)) {
            Eviction::Never => {
                self.forget(key);
                return Ok(Action::Done);
            }
            Eviction::At(t) if t > now => {
                let left = t.as_millisecond().saturating_sub(now.as_millisecond());
                return Ok(Action::RequeueAfter(Duration::from_millis(
                    left.max(1) as u64
                )));
            }
            Eviction::At(_) | Eviction::Now => {}
        }
        self.evict(&pod, now).await?;
        self.forget(key);
        Ok(Action::Done)
    }

    async fn evict(&self, pod: &Pod, now: Timestamp) -> Result<(), ApiError> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        self.recorder.normal(
            pod,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        );
        let status = serde_json::json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Time(now),
        }]}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => {
                return Err(ApiError::new(
                    "mark for deletion pod",
                    format!("{ns}/{name}"),
                    e,
                ))
            }
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(ApiError::new("evict pod", format!("{ns}/{name}"), e)),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Evictor {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "taint-eviction-controller"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        if let Some(node) = key.strip_prefix("node:") {
            for p in self.index.pods(node) {
                self.queue.add(format!("pod:{p}"));
            }
            return Ok(Action::Done);
        }
        match key.strip_prefix("pod:") {
            Some(p) => self.pod(p).await,
            None => Ok(Action::Done),
        }
    }
}
