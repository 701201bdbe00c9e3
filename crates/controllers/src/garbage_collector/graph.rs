//! The garbage collector's picture of the cluster: every object of every watched kind,
//! by uid, with its owner references, and the reverse index owner uid → dependents.
//!
//! Contract: the watches feed [`Graph::upsert`] and [`Graph::remove`]; each returns the
//! uids whose handling the change may have made necessary (pure bookkeeping, no I/O),
//! which the caller puts on the work queue. Before the first lists of all kinds are in
//! ([`Graph::mark_synced`]) nothing is returned: an owner may simply not be listed yet;
//! `mark_synced` then returns every uid that needs a look. A uid seen deleted is gone
//! for good (uids are never reused), so it is remembered as absent while dependents
//! still point at it, sparing a live GET per dependent when a large owner goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::discovery::ApiResource;

/// The finalizer that makes an owner wait for its blocking dependents (Foreground).
pub(crate) const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that makes an owner release its dependents first (Orphan).
pub(crate) const ORPHAN: &str = "orphan";

/// A kind the collector watches, as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Resource {
    pub ar: ApiResource,
    pub namespaced: bool,
}

impl Resource {
    /// `plural.group`, as kube names a group resource.
    pub fn group_resource(&self) -> String {
        format!("{}.{}", self.ar.plural, self.ar.group)
    }
}

/// One object, as much of it as the collector reads.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub resource: Arc<Resource>,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<OwnerReference>,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// Carries the `foregroundDeletion` finalizer.
    pub foreground: bool,
    /// Carries the `orphan` finalizer.
    pub orphan: bool,
}

impl Node {
    /// The node of an object's metadata; None without a uid or name.
    pub fn from_meta(resource: &Arc<Resource>, md: &ObjectMeta) -> Option<(String, Node)> {
        let uid = md.uid.clone().filter(|u| !u.is_empty())?;
        let name = md.name.clone()?;
        let has = |f: &str| md.finalizers.iter().flatten().any(|x| x == f);
        Some((
            uid,
            Node {
                resource: resource.clone(),
                namespace: md.namespace.clone().filter(|n| !n.is_empty()),
                name,
                owners: md.owner_references.clone().unwrap_or_default(),
                deleting: md.deletion_timestamp.is_some(),
                foreground: has(FOREGROUND),
                orphan: has(ORPHAN),
            },
        ))
    }

    /// Being deleted and waiting for its dependents (Foreground).
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.foreground
    }

    /// Has a garbage-collector finalizer to run.
    fn needs_finalizing(&self) -> bool {
        self.deleting && (self.foreground || self.orphan)
    }

    /// `namespace/name` (or `name`), for messages.
    pub fn display(&self) -> String {
        let kind = &self.resource.ar.kind;
        match &self.namespace {
            Some(ns) => format!("{kind} {ns}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }

    /// Whether its reference to `owner` blocks the owner's foreground deletion.
    pub fn blocks(&self, owner: &str) -> bool {
        self.owners
            .iter()
            .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
    }
}

/// Above this many remembered absent owners the memory is dropped (live GETs answer).
const MAX_ABSENT: usize = 100_000;

#[derive(Default)]
pub(crate) struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    absent: HashSet<String>,
    synced: bool,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether `uid` was seen deleted.
    pub fn is_absent(&self, uid: &str) -> bool {
        self.absent.contains(uid)
    }

    /// Records that a live read found no object with `uid`.
    pub fn mark_absent(&mut self, uid: &str) {
        if !self.nodes.contains_key(uid) {
            self.remember_absent(uid);
        }
    }

    fn remember_absent(&mut self, uid: &str) {
        if self.absent.len() >= MAX_ABSENT {
            self.absent.clear();
        }
        self.absent.insert(uid.to_string());
    }

    /// The objects that name `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// The uids of the objects of `resource`.
    pub fn uids_of(&self, resource: &Resource) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| *n.resource == *resource)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Adds or updates an object; returns the uids to look at.
    pub fn upsert(&mut self, uid: String, node: Node) -> Vec<String> {
        let old = self.nodes.remove(&uid);
        let old_owners: HashSet<String> = old
            .iter()
            .flat_map(|o| o.owners.iter().map(|r| r.uid.clone()))
            .collect();
        let new_owners: HashSet<String> = node.owners.iter().map(|r| r.uid.clone()).collect();
        for gone in old_owners.difference(&new_owners) {
            self.unlink(gone, &uid);
        }
        for owner in &new_owners {
            self.dependents
                .entry(owner.clone())
                .or_default()
                .insert(uid.clone());
        }
        let mut work = Vec::new();
        if self.synced {
            if node.needs_finalizing() {
                work.push(uid.clone());
            }
            // An owner that is not (or no longer) there, or that waits for its
            // dependents: this object may have to go.
            if new_owners.iter().any(|o| match self.nodes.get(o) {
                None => true,
                Some(owner) => owner.deleting_dependents(),
            }) {
                work.push(uid.clone());
            }
            // Owners waiting for their dependents look again: this one may have stopped
            // blocking them (a reference removed or changed).
            for o in old_owners.union(&new_owners) {
                if self.nodes.get(o).is_some_and(Node::deleting_dependents) {
                    work.push(o.clone());
                }
            }
            // A foreground deletion just began: the dependents go first.
            if node.deleting_dependents() && !old.as_ref().is_some_and(Node::deleting_dependents) {
                work.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
            }
        }
        self.nodes.insert(uid, node);
        work.dedup();
        work
    }

    /// Removes a deleted object; returns the uids to look at (its dependents, and its
    /// owners that wait for their dependents).
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut work = Vec::new();
        for r in &node.owners {
            self.unlink(&r.uid, uid);
            if self.synced
                && self
                    .nodes
                    .get(&r.uid)
                    .is_some_and(Node::deleting_dependents)
            {
                work.push(r.uid.clone());
            }
        }
        if let Some(deps) = self.dependents.get(uid) {
            if !deps.is_empty() {
                if self.synced {
                    work.extend(deps.iter().cloned());
                }
                self.remember_absent(uid);
            }
        }
        work
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(deps) = self.dependents.get_mut(owner) {
            deps.remove(dependent);
            if deps.is_empty() {
                self.dependents.remove(owner);
                self.absent.remove(owner);
            }
        }
    }

    /// The first lists are complete: returns every uid that needs a look (objects with
    /// an owner not in the graph or waiting for dependents, and owners with a
    /// garbage-collector finalizer to run).
    pub fn mark_synced(&mut self) -> Vec<String> {
        self.synced = true;
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.needs_finalizing()
                    || n.owners.iter().any(|r| match self.nodes.get(&r.uid) {
                        None => true,
                        Some(o) => o.deleting_dependents(),
                    })
            })
            .map(|(u, _)| u.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: &str) -> Arc<Resource> {
        Arc::new(Resource {
            ar: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_lowercase()),
            },
            namespaced: true,
        })
    }

    fn node(name: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            resource: res("ConfigMap"),
            namespace: Some("ns".into()),
            name: name.into(),
            owners: owners
                .iter()
                .map(|(uid, block)| OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: format!("owner-{uid}"),
                    uid: (*uid).into(),
                    block_owner_deletion: Some(*block),
                    controller: None,
                })
                .collect(),
            deleting: false,
            foreground: false,
            orphan: false,
        }
    }

    #[test]
    fn nothing_is_queued_until_synced_then_dangling_dependents_are() {
        let mut g = Graph::default();
        assert!(g
            .upsert("d1".into(), node("d1", &[("o1", false)]))
            .is_empty());
        assert!(g
            .upsert("d2".into(), node("d2", &[("o2", false)]))
            .is_empty());
        assert!(g.upsert("o1".into(), node("o1", &[])).is_empty());
        // o2 was never listed: d2 needs a look; d1's owner is there.
        assert_eq!(g.mark_synced(), vec!["d2".to_string()]);
        assert_eq!(g.dependents("o1").len(), 1);
    }

    #[test]
    fn an_owner_removed_queues_its_dependents_and_is_remembered_absent() {
        let mut g = Graph::default();
        g.mark_synced();
        assert!(g.upsert("o".into(), node("o", &[])).is_empty());
        assert!(g.upsert("d".into(), node("d", &[("o", true)])).is_empty());
        assert_eq!(g.remove("o"), vec!["d".to_string()]);
        assert!(g.is_absent("o"));
        // The dependent lets go of the owner: nothing remembers it any more.
        g.upsert("d".into(), node("d", &[]));
        assert!(!g.is_absent("o"));
        assert!(!g.has_dependents("o"));
    }

    #[test]
    fn foreground_owner_is_queued_with_its_dependents_and_again_when_one_goes() {
        let mut g = Graph::default();
        g.mark_synced();
        g.upsert("o".into(), node("o", &[]));
        g.upsert("d".into(), node("d", &[("o", true)]));
        let mut o = node("o", &[]);
        o.deleting = true;
        o.foreground = true;
        let work = g.upsert("o".into(), o);
        assert!(work.contains(&"o".to_string()) && work.contains(&"d".to_string()));
        assert!(g.get("d").is_some_and(|d| d.blocks("o")));
        assert_eq!(g.remove("d"), vec!["o".to_string()]);
        // A new dependent of a waiting owner is queued itself.
        assert_eq!(
            g.upsert("e".into(), node("e", &[("o", false)])),
            vec!["e".to_string(), "o".to_string()]
        );
    }

    #[test]
    fn orphan_finalizer_queues_the_owner() {
        let mut g = Graph::default();
        g.mark_synced();
        let mut o = node("o", &[]);
        o.deleting = true;
        o.orphan = true;
        assert_eq!(g.upsert("o".into(), o), vec!["o".to_string()]);
    }
}
