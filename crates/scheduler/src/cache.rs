//! The scheduler's cache (kube-scheduler's `backend/cache`): every node with the pods
//! assigned to it, including *assumed* pods — those the scheduler decided on whose binding
//! has not been seen yet — so a decision counts at once, before the API confirms it.
//!
//! Lifecycle of a pod the scheduler places: [`Cache::assume_pod`] when the cycle picks a
//! node; [`Cache::finish_binding`] when `pods/binding` returned (the assumption then
//! expires after [`ASSUMED_POD_TTL`] unless the watch shows the pod bound);
//! [`Cache::add_pod`] from the watch confirms it; [`Cache::forget_pod`] undoes it when the
//! binding failed. Pods bound by others come straight through [`Cache::add_pod`].
//!
//! Snapshots are incremental: every change marks its node dirty, and
//! [`Cache::update_snapshot`] copies only the dirty nodes' `Arc`s into the cycle's
//! [`Snapshot`] (node infos are copy-on-write, so a node is cloned only when it changes
//! while a snapshot still shares it). The cost of a cycle's update is the number of nodes
//! changed since the last one, not the cluster size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSelector, Pod};
use skiff_api::selector::LabelSelector;

use crate::nodeinfo::{NodeInfo, PdbInfo, PodInfo, Snapshot};

/// How long an assumed pod whose binding finished may go unconfirmed by the watch.
pub const ASSUMED_POD_TTL: Duration = Duration::from_secs(30);

struct NodeEntry {
    info: Arc<NodeInfo>,
    /// False while only pods name this node (the Node object is missing or deleted):
    /// such a node is kept for its pods but left out of snapshots.
    has_node: bool,
}

struct PodState {
    pod: Arc<PodInfo>,
    node: String,
    assumed: bool,
    /// When an assumed pod whose binding finished stops counting.
    deadline: Option<Instant>,
}

/// Nodes, pods and the cluster-wide data plugins read, kept from the watches.
#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, NodeEntry>,
    pods: HashMap<String, PodState>,
    dirty: HashSet<String>,
    /// Bumped on every change; a snapshot at the same generation needs no update.
    generation: u64,
    image_nodes: HashMap<String, usize>,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    pdbs: BTreeMap<String, PdbInfo>,
    service_selectors: BTreeMap<(String, String), LabelSelector>,
    controller_selectors: HashMap<String, LabelSelector>,
    claims: HashMap<String, Option<String>>,
    volumes: HashMap<String, Option<NodeSelector>>,
    /// Which of the cluster-wide maps changed since the last snapshot update.
    ns_dirty: bool,
    pdbs_dirty: bool,
    services_dirty: bool,
    controllers_dirty: bool,
    volumes_dirty: bool,
    snapshot_generation: u64,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    fn touch(&mut self, node: &str) {
        self.generation += 1;
        self.dirty.insert(node.to_string());
    }

    fn entry(&mut self, name: &str) -> &mut NodeEntry {
        self.nodes.entry(name.to_string()).or_insert_with(|| {
            let mut n = Node::default();
            n.metadata.name = Some(name.to_string());
            NodeEntry {
                info: Arc::new(NodeInfo::new(Arc::new(n))),
                has_node: false,
            }
        })
    }

    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|n| n.has_node).count()
    }

    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.nodes.get(name).filter(|n| n.has_node).map(|n| &n.info)
    }

    /// The previous Node object when this is an update.
    pub fn set_node(&mut self, node: Arc<Node>) -> Option<Arc<Node>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let new_images: Vec<String> = NodeInfo::new(node.clone()).images.into_keys().collect();
        let e = self.entry(&name);
        let old = e.has_node.then(|| e.info.node.clone());
        let old_images: Vec<String> = if e.has_node {
            e.info.images.keys().cloned().collect()
        } else {
            Vec::new()
        };
        e.has_node = true;
        Arc::make_mut(&mut e.info).set_node(node);
        self.touch(&name);
        self.recount_images(&old_images, &new_images);
        old
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(e) = self.nodes.get_mut(name) else {
            return;
        };
        let old_images: Vec<String> = e.info.images.keys().cloned().collect();
        if e.info.pods.is_empty() {
            self.nodes.remove(name);
        } else {
            e.has_node = false;
        }
        self.touch(name);
        self.recount_images(&old_images, &[]);
    }

    /// Keeps ImageLocality's "on how many nodes" counts; only nodes holding an image whose
    /// count changed are touched.
    fn recount_images(&mut self, old: &[String], new: &[String]) {
        let mut changed = Vec::new();
        for i in old.iter().filter(|i| !new.contains(i)) {
            if let Some(c) = self.image_nodes.get_mut(i) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.image_nodes.remove(i);
                }
            }
            changed.push(i);
        }
        for i in new.iter().filter(|i| !old.contains(i)) {
            *self.image_nodes.entry(i.clone()).or_default() += 1;
            changed.push(i);
        }
        if changed.is_empty() {
            return;
        }
        let mut touched = Vec::new();
        for (name, e) in self.nodes.iter_mut() {
            if changed.iter().any(|i| e.info.images.contains_key(*i)) {
                let info = Arc::make_mut(&mut e.info);
                for (img, st) in info.images.iter_mut() {
                    st.num_nodes = self.image_nodes.get(img).copied().unwrap_or(1);
                }
                touched.push(name.clone());
            }
        }
        for n in touched {
            self.touch(&n);
        }
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: &str) {
        let e = self.entry(node);
        Arc::make_mut(&mut e.info).add_pod(pod);
        self.touch(node);
    }

    fn unplace(&mut self, uid: &str, node: &str) {
        let Some(e) = self.nodes.get_mut(node) else {
            return;
        };
        Arc::make_mut(&mut e.info).remove_pod(uid);
        if !e.has_node && e.info.pods.is_empty() {
            self.nodes.remove(node);
        }
        self.touch(node);
    }

    /// Counts `pod` on `node` at once (the cycle's decision), before binding.
    pub fn assume_pod(&mut self, pod: Arc<PodInfo>, node: &str) {
        if let Some(old) = self.pods.remove(&pod.uid) {
            self.unplace(&old.pod.uid, &old.node);
        }
        self.place(pod.clone(), node);
        self.pods.insert(
            pod.uid.clone(),
            PodState {
                pod,
                node: node.to_string(),
                assumed: true,
                deadline: None,
            },
        );
    }

    /// `pods/binding` returned: the assumption now expires unless the watch confirms it.
    pub fn finish_binding(&mut self, uid: &str, now: Instant) {
        if let Some(p) = self.pods.get_mut(uid).filter(|p| p.assumed) {
            p.deadline = Some(now + ASSUMED_POD_TTL);
        }
    }

    /// The binding failed: the pod no longer counts on its node.
    pub fn forget_pod(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            let p = self.pods.remove(uid).expect("checked above");
            self.unplace(uid, &p.node);
        }
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// An assigned pod from the watch (added or updated); confirms an assumption.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod.node_name.clone() else {
            return;
        };
        if let Some(p) = self.pods.get_mut(&pod.uid) {
            // The watch confirms our assumption, or the pod's status changed: the node's
            // sums already hold the pod, so nothing is copied unless what plugins read
            // (labels, requests, ports, being deleted, start time; the rest of the spec is
            // immutable) changed.
            let (was, is) = (&p.pod.pod, &pod.pod);
            if p.node == node
                && was.metadata.deletion_timestamp == is.metadata.deletion_timestamp
                && was.status.as_ref().and_then(|s| s.start_time.as_ref())
                    == is.status.as_ref().and_then(|s| s.start_time.as_ref())
                && p.pod.labels == pod.labels
                && p.pod.requests == pod.requests
                && p.pod.host_ports == pod.host_ports
            {
                p.assumed = false;
                p.deadline = None;
                return;
            }
        }
        if let Some(old) = self.pods.remove(&pod.uid) {
            self.unplace(&pod.uid, &old.node);
        }
        self.place(pod.clone(), &node);
        self.pods.insert(
            pod.uid.clone(),
            PodState {
                pod,
                node,
                assumed: false,
                deadline: None,
            },
        );
    }

    /// The pod this cache holds for `uid`, and whether it is only assumed.
    pub fn pod(&self, uid: &str) -> Option<(&Arc<PodInfo>, bool)> {
        self.pods.get(uid).map(|p| (&p.pod, p.assumed))
    }

    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let p = self.pods.remove(uid)?;
        self.unplace(uid, &p.node);
        Some(p.pod)
    }

    /// Drops assumed pods whose binding finished more than [`ASSUMED_POD_TTL`] ago and
    /// that the watch never showed; returns how many.
    pub fn cleanup_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.assumed && p.deadline.is_some_and(|d| d <= now))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &expired {
            self.remove_pod(uid);
        }
        expired.len()
    }

    /// Every pod the cache holds (assigned or assumed), for the watch's re-list.
    pub fn pod_uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, e)| e.has_node)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn set_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        if self.namespace_labels.get(name) != Some(&labels) {
            self.namespace_labels.insert(name.to_string(), labels);
            self.ns_dirty = true;
            self.generation += 1;
        }
    }

    pub fn remove_namespace(&mut self, name: &str) {
        if self.namespace_labels.remove(name).is_some() {
            self.ns_dirty = true;
            self.generation += 1;
        }
    }

    /// `key` is `namespace/name`; `None` removes the budget.
    pub fn set_pdb(&mut self, key: &str, pdb: Option<PdbInfo>) {
        match pdb {
            Some(p) => self.pdbs.insert(key.to_string(), p),
            None => self.pdbs.remove(key),
        };
        self.pdbs_dirty = true;
        self.generation += 1;
    }

    /// A Service's selector; `None` (deleted, or no selector) removes it.
    pub fn set_service(&mut self, namespace: &str, name: &str, selector: Option<LabelSelector>) {
        let key = (namespace.to_string(), name.to_string());
        let changed = match selector {
            Some(s) => self.service_selectors.insert(key, s.clone()) != Some(s),
            None => self.service_selectors.remove(&key).is_some(),
        };
        if changed {
            self.services_dirty = true;
            self.generation += 1;
        }
    }

    /// A controller's selector under [`crate::nodeinfo::controller_key`].
    pub fn set_controller(&mut self, key: &str, selector: Option<LabelSelector>) {
        let changed = match selector {
            Some(s) => self.controller_selectors.insert(key.to_string(), s.clone()) != Some(s),
            None => self.controller_selectors.remove(key).is_some(),
        };
        if changed {
            self.controllers_dirty = true;
            self.generation += 1;
        }
    }

    /// A claim (`namespace/name`) and the volume it is bound to; `None` removes it.
    pub fn set_claim(&mut self, key: &str, bound: Option<Option<String>>) {
        let changed = match bound {
            Some(b) => self.claims.insert(key.to_string(), b.clone()) != Some(b),
            None => self.claims.remove(key).is_some(),
        };
        if changed {
            self.volumes_dirty = true;
            self.generation += 1;
        }
    }

    /// A volume and its required node affinity; `None` removes it.
    pub fn set_volume(&mut self, name: &str, affinity: Option<Option<NodeSelector>>) {
        let changed = match affinity {
            Some(a) => self.volumes.insert(name.to_string(), a.clone()) != Some(a),
            None => self.volumes.remove(name).is_some(),
        };
        if changed {
            self.volumes_dirty = true;
            self.generation += 1;
        }
    }

    /// Brings `snap` up to date, copying only what changed since the last call.
    pub fn update_snapshot(&mut self, snap: &mut Snapshot) {
        if self.snapshot_generation == self.generation {
            return;
        }
        self.snapshot_generation = self.generation;
        let mut relist = false;
        for name in self.dirty.drain() {
            let live = self.nodes.get(&name).filter(|e| e.has_node);
            match (live, snap.index.get(&name).copied()) {
                (Some(e), Some(i)) => {
                    let old = std::mem::replace(&mut snap.nodes[i], e.info.clone());
                    relist |= old.pods_with_affinity.is_empty()
                        != e.info.pods_with_affinity.is_empty()
                        || old.pods_with_required_anti_affinity.is_empty()
                            != e.info.pods_with_required_anti_affinity.is_empty();
                }
                (Some(e), None) => {
                    snap.index.insert(name, snap.nodes.len());
                    snap.nodes.push(e.info.clone());
                    relist = true;
                }
                (None, Some(i)) => {
                    snap.index.remove(&name);
                    snap.nodes.swap_remove(i);
                    if let Some(moved) = snap.nodes.get(i) {
                        snap.index.insert(moved.name.clone(), i);
                    }
                    relist = true;
                }
                (None, None) => {}
            }
        }
        if relist {
            snap.refresh_lists();
        }
        if std::mem::take(&mut self.ns_dirty) {
            snap.namespace_labels = self.namespace_labels.clone();
        }
        if std::mem::take(&mut self.pdbs_dirty) {
            snap.pdbs = self.pdbs.values().cloned().collect();
        }
        if std::mem::take(&mut self.services_dirty) {
            let mut by_ns: HashMap<String, Vec<LabelSelector>> = HashMap::new();
            for ((ns, _), s) in &self.service_selectors {
                by_ns.entry(ns.clone()).or_default().push(s.clone());
            }
            snap.service_selectors = by_ns;
        }
        if std::mem::take(&mut self.controllers_dirty) {
            snap.controller_selectors = self.controller_selectors.clone();
        }
        if std::mem::take(&mut self.volumes_dirty) {
            snap.claims = self.claims.clone();
            snap.volumes = self.volumes.clone();
        }
    }
}

/// The parts of a placed pod that plugins and the watch read (metadata, the scheduling
/// fields of the spec, phase and start time), without containers, volumes or container
/// statuses: the cache holds every pod of the cluster, so this is most of its memory.
pub fn slim_assigned(pod: &Pod) -> Pod {
    let mut metadata = pod.metadata.clone();
    metadata.managed_fields = None;
    if let Some(a) = metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    let spec = pod
        .spec
        .as_ref()
        .map(|s| k8s_openapi::api::core::v1::PodSpec {
            node_name: s.node_name.clone(),
            scheduler_name: s.scheduler_name.clone(),
            priority: s.priority,
            priority_class_name: s.priority_class_name.clone(),
            preemption_policy: s.preemption_policy.clone(),
            node_selector: s.node_selector.clone(),
            affinity: s.affinity.clone(),
            tolerations: s.tolerations.clone(),
            topology_spread_constraints: s.topology_spread_constraints.clone(),
            ..Default::default()
        });
    let status = pod
        .status
        .as_ref()
        .map(|s| k8s_openapi::api::core::v1::PodStatus {
            phase: s.phase.clone(),
            start_time: s.start_time.clone(),
            nominated_node_name: s.nominated_node_name.clone(),
            ..Default::default()
        });
    Pod {
        metadata,
        spec,
        status,
    }
}

/// A pod the scheduler should no longer count anywhere: finished or being deleted pods
/// free their resources as far as scheduling is concerned (kube skips terminal pods).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    fn bound(name: &str, node: &str, cpu: &str) -> Arc<PodInfo> {
        let mut p = pod(name, &[("cpu", cpu)]);
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        info(p)
    }

    fn n(name: &str) -> Arc<Node> {
        Arc::new(node(
            name,
            &[("cpu", "4"), ("memory", "16Gi"), ("pods", "110")],
        ))
    }

    #[test]
    fn assume_confirm_forget_expire() {
        let mut c = Cache::new();
        c.set_node(n("a"));
        let now = Instant::now();
        let p = bound("p", "a", "1");
        c.assume_pod(p.clone(), "a");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1000);
        assert!(c.is_assumed(&p.uid));
        // Watch confirms: no longer assumed, still counted once.
        c.add_pod(p.clone());
        assert!(!c.is_assumed(&p.uid));
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.node("a").unwrap().pods.len(), 1);

        let q = bound("q", "a", "1");
        c.assume_pod(q.clone(), "a");
        c.forget_pod(&q.uid);
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1000);

        let r = bound("r", "a", "1");
        c.assume_pod(r.clone(), "a");
        c.finish_binding(&r.uid, now);
        assert_eq!(c.cleanup_expired(now + Duration::from_secs(29)), 0);
        assert_eq!(c.cleanup_expired(now + ASSUMED_POD_TTL), 1);
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1000);
        // A confirmed pod never expires.
        assert_eq!(c.cleanup_expired(now + Duration::from_secs(3600)), 0);
    }

    #[test]
    fn snapshot_copies_only_changed_nodes() {
        let mut c = Cache::new();
        for i in 0..50 {
            c.set_node(n(&format!("n{i}")));
        }
        let mut snap = Snapshot::default();
        c.update_snapshot(&mut snap);
        assert_eq!(snap.nodes.len(), 50);
        let before: Vec<*const NodeInfo> = snap.nodes.iter().map(Arc::as_ptr).collect();
        c.add_pod(bound("p", "n7", "1"));
        c.update_snapshot(&mut snap);
        let changed: Vec<usize> = snap
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| Arc::as_ptr(n) != before[*i])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(changed, vec![snap.index["n7"]]);
        assert_eq!(snap.get("n7").unwrap().requested.milli_cpu, 1000);

        c.remove_node("n3");
        c.update_snapshot(&mut snap);
        assert_eq!(snap.nodes.len(), 49);
        assert!(snap.get("n3").is_none());
        for (name, &i) in &snap.index {
            assert_eq!(&snap.nodes[i].name, name);
        }
    }

    #[test]
    fn pods_before_their_node_and_after_it_is_gone() {
        let mut c = Cache::new();
        c.add_pod(bound("p", "late", "1"));
        let mut snap = Snapshot::default();
        c.update_snapshot(&mut snap);
        assert!(snap.nodes.is_empty());
        c.set_node(n("late"));
        c.update_snapshot(&mut snap);
        assert_eq!(snap.get("late").unwrap().requested.milli_cpu, 1000);
        c.remove_node("late");
        c.update_snapshot(&mut snap);
        assert!(snap.nodes.is_empty());
        c.remove_pod("uid-p");
        assert_eq!(c.node_names().len(), 0);
    }

    #[test]
    fn cluster_wide_data_reaches_the_snapshot_when_changed() {
        let mut c = Cache::new();
        let mut snap = Snapshot::default();
        c.set_namespace("team-a", [("env".to_string(), "prod".to_string())].into());
        c.set_service(
            "default",
            "web",
            Some(LabelSelector::parse("app=web").unwrap()),
        );
        c.set_controller(
            &crate::nodeinfo::controller_key("default", "ReplicaSet", "web-1"),
            Some(LabelSelector::parse("app=web,pod-template-hash=1").unwrap()),
        );
        c.update_snapshot(&mut snap);
        assert_eq!(snap.namespace_labels["team-a"]["env"], "prod");
        assert_eq!(snap.service_selectors["default"].len(), 1);
        assert_eq!(snap.controller_selectors.len(), 1);
        c.set_service("default", "web", None);
        c.remove_namespace("team-a");
        c.update_snapshot(&mut snap);
        assert!(snap.service_selectors.is_empty());
        assert!(snap.namespace_labels.is_empty());
    }

    #[test]
    fn slim_copies_keep_what_plugins_read() {
        let mut p = with_toleration(pod("p", &[("cpu", "1")]), "k", "Exists", "", "");
        p.spec.as_mut().unwrap().node_name = Some("n".into());
        p.spec.as_mut().unwrap().priority = Some(7);
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        let slim = slim_assigned(&p);
        let spec = slim.spec.as_ref().unwrap();
        assert!(spec.containers.is_empty());
        assert_eq!(spec.node_name.as_deref(), Some("n"));
        assert_eq!(spec.priority, Some(7));
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(1));
        assert_eq!(slim.metadata.labels, p.metadata.labels);
        // The digest comes from the full pod; only the object it points at is slim.
        let mut info = (*info(p.clone())).clone();
        info.pod = Arc::new(slim);
        assert_eq!(info.requests.milli_cpu, 1000);
    }
}
