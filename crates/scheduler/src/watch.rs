//! The scheduler's view of the cluster, kept by kube-runtime watchers: pending pods of this
//! scheduler go to the queue, assigned pods and nodes to the cache, namespaces, PDBs and
//! workload selectors to the cache's cluster-wide data, and PV/PVC changes only wake
//! pods parked by the plugins that care ([`ClusterEvent`]s).
//!
//! Each watcher keeps its own map of the last object seen per key, so an update is
//! compared with what came before (which node fields changed, whether a pod's labels
//! did), and a re-list (`Init` … `InitDone`) deletes what disappeared meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use skiff_api::selector::LabelSelector;

use crate::cache::is_terminal;
use crate::framework::{action, ClusterEvent, EventResource};
use crate::nodeinfo::{compile_selector, controller_key, PdbInfo, PodInfo};
use crate::run::Shared;

/// What one watched kind does with its objects.
pub(crate) trait Handler<K>: Send + 'static {
    /// `old` is the previous version (None for a new object), `new` None for a delete.
    fn handle(&self, sh: &mut Shared, old: Option<&Arc<K>>, new: Option<&Arc<K>>, now: Instant);

    /// The version of `new` to remember for the next comparison (a slimmer copy the
    /// handler already holds, or `new` itself).
    fn keep(&self, _sh: &Shared, new: &Arc<K>) -> Arc<K> {
        new.clone()
    }
}

/// Watches `api` until the process ends, feeding `handler` under the shared lock; marks
/// `synced` once the first full list has been applied.
pub(crate) async fn run_watch<K, H>(
    api: Api<K>,
    shared: Arc<crate::run::Inner>,
    handler: H,
    synced: Option<usize>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    H: Handler<K>,
{
    let mut known: HashMap<String, Arc<K>> = HashMap::new();
    let mut relist: Option<HashSet<String>> = None;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(%e, "scheduler watch failed; retrying");
                continue;
            }
        };
        let now = Instant::now();
        let mut sh = shared.lock();
        match ev {
            Event::Init => relist = Some(HashSet::new()),
            Event::InitApply(o) | Event::Apply(o) => {
                let key = key_of(&o);
                if let Some(seen) = relist.as_mut() {
                    seen.insert(key.clone());
                }
                let mut o = o;
                // Server-side apply bookkeeping is large and never read here.
                o.meta_mut().managed_fields = None;
                let new = Arc::new(o);
                let old = known.remove(&key);
                handler.handle(&mut sh, old.as_ref(), Some(&new), now);
                let kept = handler.keep(&sh, &new);
                known.insert(key, kept);
            }
            Event::Delete(o) => {
                let key = key_of(&o);
                let old = known.remove(&key).unwrap_or_else(|| Arc::new(o));
                handler.handle(&mut sh, Some(&old), None, now);
            }
            Event::InitDone => {
                if let Some(seen) = relist.take() {
                    let gone: Vec<String> = known
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        if let Some(old) = known.remove(&k) {
                            handler.handle(&mut sh, Some(&old), None, now);
                        }
                    }
                }
                if let Some(bit) = synced {
                    sh.synced |= 1 << bit;
                }
            }
        }
        drop(sh);
        shared.wake.notify_one();
    }
}

fn key_of<K: Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

pub(crate) struct PodHandler {
    pub scheduler_name: String,
}

fn assigned(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn changed<T: PartialEq>(a: Option<&T>, b: Option<&T>) -> bool {
    a != b
}

impl Handler<Pod> for PodHandler {
    fn keep(&self, sh: &Shared, new: &Arc<Pod>) -> Arc<Pod> {
        if assigned(new).is_some() {
            if let Some((info, _)) = sh.cache.pod(&new.uid().unwrap_or_default()) {
                return info.pod.clone();
            }
        }
        new.clone()
    }

    fn handle(
        &self,
        sh: &mut Shared,
        old: Option<&Arc<Pod>>,
        new: Option<&Arc<Pod>>,
        now: Instant,
    ) {
        let Some(pod) = new else {
            let Some(old) = old else { return };
            let uid = old.uid().unwrap_or_default();
            sh.nominated.remove(&uid);
            let was_counted = sh.cache.remove_pod(&uid).is_some();
            sh.queue.delete(&format!(
                "{}/{}",
                old.namespace().unwrap_or_default(),
                old.name_any()
            ));
            if was_counted {
                sh.queue.on_event(
                    ClusterEvent::new(EventResource::AssignedPod, action::DELETE),
                    now,
                );
            }
            return;
        };
        let uid = pod.uid().unwrap_or_default();
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        if assigned(pod).is_some() {
            sh.queue.delete(&key);
            sh.nominated.remove(&uid);
            if is_terminal(pod) {
                if sh.cache.remove_pod(&uid).is_some() {
                    sh.queue.on_event(
                        ClusterEvent::new(EventResource::AssignedPod, action::DELETE),
                        now,
                    );
                }
                return;
            }
            let Ok(mut info) = PodInfo::new(pod.clone()) else {
                return;
            };
            // Placed pods are read for their digest, not their containers: keep a slim copy.
            info.pod = Arc::new(crate::cache::slim_assigned(pod));
            let was_bound = old.is_some_and(|o| assigned(o).is_some());
            sh.cache.add_pod(Arc::new(info));
            let act = if !was_bound {
                action::ADD
            } else if changed(
                old.and_then(|o| o.metadata.labels.as_ref()),
                pod.metadata.labels.as_ref(),
            ) {
                action::UPDATE_POD_LABEL
            } else {
                0
            };
            if act != 0 {
                sh.queue
                    .on_event(ClusterEvent::new(EventResource::AssignedPod, act), now);
            }
            return;
        }
        let ours = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::DEFAULT_SCHEDULER_NAME)
            == self.scheduler_name;
        if !ours || is_terminal(pod) || pod.metadata.deletion_timestamp.is_some() {
            sh.queue.delete(&key);
            return;
        }
        // Our own decision, not yet visible as bound: the binding is in flight.
        if sh.cache.is_assumed(&uid) {
            return;
        }
        match PodInfo::new(pod.clone()) {
            Ok(info) => {
                let info = Arc::new(info);
                if let Some(n) = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.nominated_node_name.as_deref())
                    .filter(|n| !n.is_empty())
                {
                    sh.nominated.add(info.clone(), n);
                }
                sh.queue.add(info, now);
            }
            Err(e) => sh.invalid.push((pod.clone(), e.to_string())),
        }
    }
}

/// Which node fields changed, as [`action`] bits (0: nothing the scheduler reads).
pub fn node_update_actions(old: &Node, new: &Node) -> u32 {
    let mut a = 0;
    let (os, ns) = (old.spec.as_ref(), new.spec.as_ref());
    let (ost, nst) = (old.status.as_ref(), new.status.as_ref());
    if changed(
        ost.and_then(|s| s.allocatable.as_ref()),
        nst.and_then(|s| s.allocatable.as_ref()),
    ) {
        a |= action::UPDATE_NODE_ALLOCATABLE;
    }
    if changed(old.metadata.labels.as_ref(), new.metadata.labels.as_ref()) {
        a |= action::UPDATE_NODE_LABEL;
    }
    if changed(
        os.and_then(|s| s.taints.as_ref()),
        ns.and_then(|s| s.taints.as_ref()),
    ) {
        a |= action::UPDATE_NODE_TAINT;
    }
    let conds = |s: Option<&k8s_openapi::api::core::v1::NodeStatus>| {
        s.and_then(|s| s.conditions.as_ref()).map(|c| {
            c.iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect::<Vec<_>>()
        })
    };
    if conds(ost) != conds(nst) {
        a |= action::UPDATE_NODE_CONDITION;
    }
    if os.and_then(|s| s.unschedulable) != ns.and_then(|s| s.unschedulable)
        || changed(
            ost.and_then(|s| s.images.as_ref()),
            nst.and_then(|s| s.images.as_ref()),
        )
    {
        a |= action::UPDATE_OTHER;
    }
    a
}

pub(crate) struct NodeHandler;

impl Handler<Node> for NodeHandler {
    fn handle(
        &self,
        sh: &mut Shared,
        old: Option<&Arc<Node>>,
        new: Option<&Arc<Node>>,
        now: Instant,
    ) {
        match (old, new) {
            (_, None) => {
                if let Some(o) = old {
                    sh.cache.remove_node(&o.name_any());
                    sh.queue
                        .on_event(ClusterEvent::new(EventResource::Node, action::DELETE), now);
                }
            }
            (None, Some(n)) => {
                sh.cache.set_node(n.clone());
                sh.queue
                    .on_event(ClusterEvent::new(EventResource::Node, action::ADD), now);
            }
            (Some(o), Some(n)) => {
                let act = node_update_actions(o, n);
                // Heartbeats change nothing the plugins read: leave the cache alone.
                if act != 0 || sh.cache.node(&n.name_any()).is_none() {
                    sh.cache.set_node(n.clone());
                    let act = if act == 0 { action::ADD } else { act };
                    sh.queue
                        .on_event(ClusterEvent::new(EventResource::Node, act), now);
                }
            }
        }
    }
}

pub(crate) struct NamespaceHandler;

impl Handler<Namespace> for NamespaceHandler {
    fn handle(
        &self,
        sh: &mut Shared,
        old: Option<&Arc<Namespace>>,
        new: Option<&Arc<Namespace>>,
        _now: Instant,
    ) {
        match new {
            Some(n) => sh.cache.set_namespace(&n.name_any(), n.labels().clone()),
            None => {
                if let Some(o) = old {
                    sh.cache.remove_namespace(&o.name_any());
                }
            }
        }
    }
}

/// PVs and PVCs: what VolumeBinding reads (a claim's volume, a volume's node affinity)
/// goes to the cache, and each change wakes the pods it parked.
pub(crate) struct VolumeEvents(pub EventResource);

fn volume_event<K>(
    sh: &mut Shared,
    res: EventResource,
    old: Option<&Arc<K>>,
    new: Option<&Arc<K>>,
    now: Instant,
) {
    let act = match (old, new) {
        (None, Some(_)) => action::ADD,
        (Some(_), Some(_)) => action::UPDATE_OTHER,
        _ => action::DELETE,
    };
    sh.queue.on_event(ClusterEvent::new(res, act), now);
}

impl Handler<PersistentVolume> for VolumeEvents {
    fn handle(
        &self,
        sh: &mut Shared,
        old: Option<&Arc<PersistentVolume>>,
        new: Option<&Arc<PersistentVolume>>,
        now: Instant,
    ) {
        let Some(o) = new.or(old) else { return };
        let affinity = new.map(|v| {
            v.spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.clone())
        });
        sh.cache.set_volume(&o.name_any(), affinity);
        volume_event(sh, self.0, old, new, now);
    }
}

impl Handler<PersistentVolumeClaim> for VolumeEvents {
    fn handle(
        &self,
        sh: &mut Shared,
        old: Option<&Arc<PersistentVolumeClaim>>,
        new: Option<&Arc<PersistentVolumeClaim>>,
        now: Instant,
    ) {
        let Some(o) = new.or(old) else { return };
        let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        let bound = new.map(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|n| !n.is_empty())
        });
        sh.cache.set_claim(&key, bound);
        volume_event(sh, self.0, old, new, now);
    }
}

pub(crate) struct PdbHandler;

impl Handler<PodDisruptionBudget> for PdbHandler {
    fn handle(
        &self,
        sh: &mut Shared,
        old: Option<&Arc<PodDisruptionBudget>>,
        new: Option<&Arc<PodDisruptionBudget>>,
        _now: Instant,
    ) {
        let Some(o) = new.or(old) else { return };
        let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        let info = new.map(|p| {
            let selector = p
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| compile_selector(s).ok())
                .filter(|s| !s.is_everything())
                .unwrap_or_else(LabelSelector::nothing);
            let status = p.status.as_ref();
            PdbInfo {
                namespace: p.namespace().unwrap_or_default(),
                selector,
                disruptions_allowed: status.map_or(0, |s| s.disruptions_allowed),
                disrupted_pods: status
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default(),
            }
        });
        sh.cache.set_pdb(&key, info);
    }
}

fn map_selector(m: Option<&std::collections::BTreeMap<String, String>>) -> Option<LabelSelector> {
    let m = m.filter(|m| !m.is_empty())?;
    LabelSelector::from_object(&serde_json::json!({ "matchLabels": m })).ok()
}

pub(crate) struct ServiceHandler;

impl Handler<Service> for ServiceHandler {
    fn handle(
        &self,
        sh: &mut Shared,
        old: Option<&Arc<Service>>,
        new: Option<&Arc<Service>>,
        _now: Instant,
    ) {
        let Some(o) = new.or(old) else { return };
        let sel = new.and_then(|s| map_selector(s.spec.as_ref().and_then(|s| s.selector.as_ref())));
        sh.cache
            .set_service(&o.namespace().unwrap_or_default(), &o.name_any(), sel);
    }
}

/// ReplicaSets, StatefulSets and ReplicationControllers: their selectors by controller key.
pub(crate) struct ControllerHandler<K>(std::marker::PhantomData<fn() -> K>);

impl<K> ControllerHandler<K> {
    pub fn new() -> Self {
        ControllerHandler(std::marker::PhantomData)
    }
}

pub(crate) trait HasSelector: Resource<DynamicType = ()> {
    fn selector(&self) -> Option<LabelSelector>;
}

impl HasSelector for ReplicaSet {
    fn selector(&self) -> Option<LabelSelector> {
        compile_selector(&self.spec.as_ref()?.selector).ok()
    }
}

impl HasSelector for StatefulSet {
    fn selector(&self) -> Option<LabelSelector> {
        compile_selector(&self.spec.as_ref()?.selector).ok()
    }
}

impl HasSelector for ReplicationController {
    fn selector(&self) -> Option<LabelSelector> {
        map_selector(self.spec.as_ref()?.selector.as_ref())
    }
}

impl<K: HasSelector + Send + Sync + 'static> Handler<K> for ControllerHandler<K> {
    fn handle(&self, sh: &mut Shared, old: Option<&Arc<K>>, new: Option<&Arc<K>>, _now: Instant) {
        let Some(o) = new.or(old) else { return };
        let key = controller_key(
            o.meta().namespace.as_deref().unwrap_or(""),
            &K::kind(&()),
            o.meta().name.as_deref().unwrap_or(""),
        );
        sh.cache
            .set_controller(&key, new.and_then(|n| n.selector()));
    }
}

/// Starts every watcher; pods (bit 0) and nodes (bit 1) must list before scheduling starts.
pub(crate) fn spawn_all(client: &Client, inner: &Arc<crate::run::Inner>, scheduler_name: &str) {
    fn go<K, H>(api: Api<K>, inner: &Arc<crate::run::Inner>, h: H, bit: Option<usize>)
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        H: Handler<K>,
    {
        inner
            .tasks
            .lock()
            .expect("task list")
            .push(tokio::spawn(run_watch(api, inner.clone(), h, bit)));
    }
    let c = || client.clone();
    go(
        Api::<Pod>::all(c()),
        inner,
        PodHandler {
            scheduler_name: scheduler_name.to_string(),
        },
        Some(0),
    );
    go(Api::<Node>::all(c()), inner, NodeHandler, Some(1));
    go(Api::<Namespace>::all(c()), inner, NamespaceHandler, None);
    go(
        Api::<PersistentVolume>::all(c()),
        inner,
        VolumeEvents(EventResource::PersistentVolume),
        None,
    );
    go(
        Api::<PersistentVolumeClaim>::all(c()),
        inner,
        VolumeEvents(EventResource::PersistentVolumeClaim),
        None,
    );
    go(
        Api::<PodDisruptionBudget>::all(c()),
        inner,
        PdbHandler,
        None,
    );
    go(Api::<Service>::all(c()), inner, ServiceHandler, None);
    go(
        Api::<ReplicaSet>::all(c()),
        inner,
        ControllerHandler::<ReplicaSet>::new(),
        None,
    );
    go(
        Api::<StatefulSet>::all(c()),
        inner,
        ControllerHandler::<StatefulSet>::new(),
        None,
    );
    go(
        Api::<ReplicationController>::all(c()),
        inner,
        ControllerHandler::<ReplicationController>::new(),
        None,
    );
}

/// Both required watchers have listed.
pub(crate) const SYNCED_ALL: u32 = 0b11;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    #[test]
    fn node_updates_map_to_actions_and_heartbeats_to_none() {
        let old = node("n", &[("cpu", "4")]);
        let mut beat = old.clone();
        beat.metadata.resource_version = Some("9".into());
        assert_eq!(node_update_actions(&old, &beat), 0);
        let labelled = with_labels(old.clone(), &[("zone", "a")]);
        assert_eq!(
            node_update_actions(&old, &labelled),
            action::UPDATE_NODE_LABEL
        );
        let tainted = with_taint(old.clone(), "k", "", "NoSchedule");
        assert_eq!(
            node_update_actions(&old, &tainted),
            action::UPDATE_NODE_TAINT
        );
        let bigger = node("n", &[("cpu", "8")]);
        assert_eq!(
            node_update_actions(&old, &bigger),
            action::UPDATE_NODE_ALLOCATABLE
        );
        let mut cordoned = old.clone();
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        assert_eq!(node_update_actions(&old, &cordoned), action::UPDATE_OTHER);
    }
}
