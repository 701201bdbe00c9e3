//! [`NodeGraph`]: which objects each node needs, kept from pod, volume and attachment
//! events (kube's node authorizer graph, as indexes rather than a general graph).
//!
//! The relations, as kube draws them:
//! - pod → node (a pod bound to the node, mirror pods included);
//! - secret, configmap, pvc, service account, resource claim → pod → node (what a
//!   non-mirror pod refers to; a pod's references never change once it is bound);
//! - pv → pvc (a volume's `claimRef`), secret → pv (the secrets its plugin reads), so a
//!   node reaches a volume and its secrets through the claim of one of its pods;
//! - volume attachment → node.
//!
//! Each object reachable through pods keeps a count of the pods referring to it per node,
//! so every question is a few hash lookups however many pods share an object (every pod
//! mounts its namespace's `kube-root-ca.crt`).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::refs;

/// The kinds of objects a node may be related to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vertex {
    Pod,
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    PersistentVolume,
    ServiceAccount,
    ResourceClaim,
    VolumeAttachment,
}

/// The kinds a pod refers to (the index of `NodeGraph::related`).
const POD_REFERENCED: [Vertex; 5] = [
    Vertex::Secret,
    Vertex::ConfigMap,
    Vertex::PersistentVolumeClaim,
    Vertex::ServiceAccount,
    Vertex::ResourceClaim,
];

fn slot(v: Vertex) -> Option<usize> {
    POD_REFERENCED.iter().position(|x| *x == v)
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// A bound pod.
#[derive(Debug, Clone)]
struct PodEntry {
    node: String,
    /// `(slot, "ns/name")` of each object it refers to.
    refs: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Default)]
struct PvEntry {
    /// `ns/name` of the claim in its `claimRef`.
    claim: Option<String>,
    /// `ns/name` of the secrets its plugin reads.
    secrets: Vec<String>,
}

/// The relations between nodes and the objects their pods need. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct NodeGraph {
    /// Bound pods by `ns/name`.
    pods: HashMap<String, PodEntry>,
    /// Per referenced kind: `ns/name` → node → pods on that node referring to it.
    related: [HashMap<String, HashMap<String, u32>>; 5],
    pvs: HashMap<String, PvEntry>,
    /// `ns/name` of a secret → the volumes reading it.
    secret_pvs: HashMap<String, BTreeSet<String>>,
    /// Volume attachment → its node.
    attachments: HashMap<String, String>,
}

impl NodeGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// The node `ns/name` is bound to, if the graph has the pod.
    pub fn pod_node(&self, ns: &str, name: &str) -> Option<&str> {
        self.pods.get(&key(ns, name)).map(|p| p.node.as_str())
    }

    /// How many bound pods the graph holds.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Records pod `pod` (its state after a create or update). A pod without
    /// `spec.nodeName` is not the graph's; one that was bound stays until deleted (the
    /// API never unbinds a pod). The edges are rebuilt from the object each time.
    pub fn upsert_pod(&mut self, pod: &Value) {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if node.is_empty() {
            return;
        }
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() {
            return;
        }
        self.delete_pod(ns, name);
        let mut refs_of: Vec<(usize, String)> = Vec::new();
        // A node may create mirror pods, so a mirror pod must never grant it anything
        // (NodeRestriction refuses such pods too; this is the second line).
        if !super::is_mirror_pod(pod) {
            let mut add = |v: Vertex, names: Vec<String>| {
                if let Some(s) = slot(v) {
                    refs_of.extend(names.into_iter().map(|n| (s, key(ns, &n))));
                }
            };
            add(
                Vertex::ServiceAccount,
                refs::pod_service_account(pod).into_iter().collect(),
            );
            add(Vertex::Secret, refs::pod_secret_names(pod));
            add(Vertex::ConfigMap, refs::pod_configmap_names(pod));
            add(Vertex::PersistentVolumeClaim, refs::pod_claim_names(pod));
            add(Vertex::ResourceClaim, refs::pod_resource_claim_names(pod));
        }
        for (s, k) in &refs_of {
            *self.related[*s]
                .entry(k.clone())
                .or_default()
                .entry(node.to_string())
                .or_default() += 1;
        }
        self.pods.insert(
            key(ns, name),
            PodEntry {
                node: node.to_string(),
                refs: refs_of,
            },
        );
    }

    /// Forgets pod `ns/name` and what it related its node to.
    pub fn delete_pod(&mut self, ns: &str, name: &str) {
        let Some(old) = self.pods.remove(&key(ns, name)) else {
            return;
        };
        for (s, k) in old.refs {
            let map = &mut self.related[s];
            if let Some(nodes) = map.get_mut(&k) {
                if let Some(n) = nodes.get_mut(&old.node) {
                    *n -= 1;
                    if *n == 0 {
                        nodes.remove(&old.node);
                    }
                }
                if nodes.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }

    /// Records PersistentVolume `pv`: its claim and the secrets its plugin reads (a
    /// volume without a `claimRef` relates to no node).
    pub fn upsert_pv(&mut self, pv: &Value) {
        let name = pv
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() {
            return;
        }
        self.delete_pv(name);
        let claim = match (
            pv.pointer("/spec/claimRef/namespace")
                .and_then(Value::as_str),
            pv.pointer("/spec/claimRef/name").and_then(Value::as_str),
        ) {
            (Some(ns), Some(n)) if !n.is_empty() => Some(key(ns, n)),
            _ => None,
        };
        if claim.is_none() {
            return;
        }
        let secrets: Vec<String> = refs::pv_secret_refs(pv)
            .iter()
            .map(|(ns, n)| key(ns, n))
            .collect();
        for s in &secrets {
            self.secret_pvs
                .entry(s.clone())
                .or_default()
                .insert(name.to_string());
        }
        self.pvs
            .insert(name.to_string(), PvEntry { claim, secrets });
    }

    pub fn delete_pv(&mut self, name: &str) {
        let Some(old) = self.pvs.remove(name) else {
            return;
        };
        for s in old.secrets {
            if let Some(set) = self.secret_pvs.get_mut(&s) {
                set.remove(name);
                if set.is_empty() {
                    self.secret_pvs.remove(&s);
                }
            }
        }
    }

    /// Records volume attachment `name` to `node` (none when `node` is empty).
    pub fn upsert_attachment(&mut self, name: &str, node: &str) {
        if node.is_empty() {
            self.attachments.remove(name);
        } else {
            self.attachments.insert(name.to_string(), node.to_string());
        }
    }

    pub fn delete_attachment(&mut self, name: &str) {
        self.attachments.remove(name);
    }

    fn related_through_pods(&self, v: Vertex, k: &str, node: &str) -> bool {
        slot(v)
            .and_then(|s| self.related[s].get(k))
            .is_some_and(|nodes| nodes.contains_key(node))
    }

    fn pv_related(&self, pv: &str, node: &str) -> bool {
        self.pvs
            .get(pv)
            .and_then(|e| e.claim.as_deref())
            .is_some_and(|c| self.related_through_pods(Vertex::PersistentVolumeClaim, c, node))
    }

    /// Whether object `ns/name` of kind `v` (empty `ns` for cluster-scoped kinds) is
    /// related to `node`: a path leads from it to the node.
    pub fn has_path(&self, node: &str, v: Vertex, ns: &str, name: &str) -> bool {
        match v {
            Vertex::Pod => self.pod_node(ns, name) == Some(node),
            Vertex::PersistentVolume => self.pv_related(name, node),
            Vertex::VolumeAttachment => {
                self.attachments.get(name).map(String::as_str) == Some(node)
            }
            Vertex::Secret => {
                let k = key(ns, name);
                self.related_through_pods(v, &k, node)
                    || self
                        .secret_pvs
                        .get(&k)
                        .is_some_and(|pvs| pvs.iter().any(|pv| self.pv_related(pv, node)))
            }
            _ => self.related_through_pods(v, &key(ns, name), node),
        }
    }
}
