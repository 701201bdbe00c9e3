//! The Node authorizer and the NodeRestriction admission plugin, as kube-apiserver 1.33
//! runs them with `--authorization-mode=Node,RBAC` and
//! `--enable-admission-plugins=NodeRestriction`, over stored JSON and with no I/O.
//!
//! Contract:
//! - A request is a node's when its user is `system:node:<name>` in the group
//!   `system:nodes` ([`node_identity`]). Only such requests are this module's business;
//!   for everyone else [`authorize`] has no opinion.
//! - [`authorize`] decides a node's request before RBAC, as kube's union authorizer
//!   does: [`NodeDecision::Allow`], or no opinion (with kube's reason), in which case RBAC
//!   decides and the reason ends the 403 message. Secrets, ConfigMaps,
//!   PersistentVolumeClaims, PersistentVolumes, ResourceClaims, VolumeAttachments, single
//!   pods and service-account tokens are allowed only when the object is related to the
//!   node in the [`NodeGraph`]; the node's own Node object, Lease and CSINode by name;
//!   everything else by the static `system:node` rules (kube's `NodeRules()`, the rules
//!   of the bootstrap `system:node` ClusterRole, which no binding grants any more).
//!   `AuthorizeNodeWithSelectors` (beta, on in 1.33) is in force: a node lists and
//!   watches only its own pods (`spec.nodeName=<node>`) and reads only its own Node.
//! - [`restriction`] is NodeRestriction: what a node may write, with the objects
//!   themselves in hand (its own Node and labels, mirror pods, status of its pods, its
//!   Lease, tokens for its pods, its CSINode, CSRs for its own name).
//! - The graph is fed by the API server from the watch cache ([`NodeGraph::upsert_pod`]
//!   and friends); it never reads the store.

use serde_json::Value;

use crate::rbac::{Attributes, Rule};
use crate::selector::{FieldOp, FieldSelector};

mod graph;
pub mod refs;
pub mod restriction;
#[cfg(test)]
mod tests;

pub use graph::{NodeGraph, Vertex};

/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group every node is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The annotation that makes a pod the mirror of a node's static pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The SelfSubjectRulesReview error kube reports for nodes (their rights are not a list
/// of rules).
pub const RULES_UNSUPPORTED: &str = "node authorizer does not support user rule resolution";

/// `Some(node name)` when the user is a node (`system:node:<name>` in `system:nodes`);
/// the name may be empty, which kube treats as an unidentifiable node.
pub fn node_identity<'a>(user: &'a str, groups: &[String]) -> Option<&'a str> {
    let name = user.strip_prefix(NODE_USER_PREFIX)?;
    groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// Whether `pod` carries the mirror-pod annotation.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
}

/// The node authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeDecision {
    Allow,
    /// No opinion: RBAC decides; the reason (may be empty) is kube's.
    NoOpinion(String),
    /// No opinion because the object is not related to the node in the graph (kube's
    /// `no relationship found between node '<node>' and this object`). Unlike the other
    /// refusals this one may change as the graph catches up with the store.
    NoRelationship {
        node: String,
    },
}

impl NodeDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, NodeDecision::Allow)
    }

    /// The reason kube appends to the 403 message (empty for none).
    pub fn reason(&self) -> String {
        match self {
            NodeDecision::Allow => String::new(),
            NodeDecision::NoOpinion(r) => r.clone(),
            NodeDecision::NoRelationship { node } => {
                format!("no relationship found between node '{node}' and this object")
            }
        }
    }
}

fn no(reason: &str) -> NodeDecision {
    NodeDecision::NoOpinion(reason.to_string())
}

/// Whether the request's field selector has the term `field=value` (kube's node
/// authorizer accepts only that exact requirement for scoped lists).
fn selects(a: &Attributes, field: &str, value: &str) -> bool {
    if a.field_selector.is_empty() {
        return false;
    }
    FieldSelector::parse(&a.field_selector).is_ok_and(|s| {
        s.terms()
            .iter()
            .any(|t| t.field == field && t.op == FieldOp::Equals && t.value == value)
    })
}

/// Decides request `a` of node `node` (from [`node_identity`]); `rules` are the static
/// node rules (the bootstrap `system:node` ClusterRole's).
pub fn authorize(graph: &NodeGraph, rules: &[Rule], node: &str, a: &Attributes) -> NodeDecision {
    if node.is_empty() {
        return NodeDecision::NoOpinion(format!("unknown node for user {:?}", a.user));
    }
    if a.resource_request {
        match (a.api_group.as_str(), a.resource.as_str()) {
            ("", "secrets") => return read_namespaced(graph, node, Vertex::Secret, a),
            ("", "configmaps") => return read_namespaced(graph, node, Vertex::ConfigMap, a),
            ("", "persistentvolumeclaims") => {
                return if a.subresource == "status" {
                    status_update(graph, node, Vertex::PersistentVolumeClaim, a)
                } else {
                    get_related(graph, node, Vertex::PersistentVolumeClaim, a)
                };
            }
            ("", "persistentvolumes") => {
                return get_related(graph, node, Vertex::PersistentVolume, a)
            }
            ("resource.k8s.io", "resourceclaims") => {
                return get_related(graph, node, Vertex::ResourceClaim, a)
            }
            ("storage.k8s.io", "volumeattachments") => {
                return get_related(graph, node, Vertex::VolumeAttachment, a)
            }
            ("", "serviceaccounts") => return create_token(graph, node, a),
            ("coordination.k8s.io", "leases") => return lease(node, a),
            ("storage.k8s.io", "csinodes") => return csi_node(node, a),
            ("", "nodes") => return node_object(node, a),
            ("", "pods") => return pod(graph, node, a),
            _ => {}
        }
    }
    if rules.iter().any(|r| r.allows(a)) {
        NodeDecision::Allow
    } else {
        no("")
    }
}

/// The graph's answer for the named object.
fn related(graph: &NodeGraph, node: &str, v: Vertex, a: &Attributes) -> NodeDecision {
    if a.name.is_empty() {
        return no("No Object name found");
    }
    if graph.has_path(node, v, &a.namespace, &a.name) {
        NodeDecision::Allow
    } else {
        NodeDecision::NoRelationship {
            node: node.to_string(),
        }
    }
}

/// get, list and watch of single objects (a list or watch names one by a
/// `metadata.name` field selector, as the kubelet's reflectors do).
fn read_namespaced(graph: &NodeGraph, node: &str, v: Vertex, a: &Attributes) -> NodeDecision {
    if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
        return no("can only read resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot read subresource");
    }
    if a.namespace.is_empty() {
        return no("can only read namespaced object of this type");
    }
    related(graph, node, v, a)
}

fn get_related(graph: &NodeGraph, node: &str, v: Vertex, a: &Attributes) -> NodeDecision {
    if a.verb != "get" {
        return no("can only get individual resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot get subresource");
    }
    related(graph, node, v, a)
}

fn status_update(graph: &NodeGraph, node: &str, v: Vertex, a: &Attributes) -> NodeDecision {
    if !matches!(a.verb.as_str(), "update" | "patch") {
        return no("can only get/update/patch this type");
    }
    related(graph, node, v, a)
}

fn create_token(graph: &NodeGraph, node: &str, a: &Attributes) -> NodeDecision {
    if a.verb != "create" || a.name.is_empty() {
        return no("can only create tokens for individual service accounts");
    }
    if a.subresource != "token" {
        return no("can only create token subresource of serviceaccount");
    }
    related(graph, node, Vertex::ServiceAccount, a)
}

fn lease(node: &str, a: &Attributes) -> NodeDecision {
    let verb = a.verb.as_str();
    if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
        return no("can only get, create, update, patch, or delete a node lease");
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return NodeDecision::NoOpinion(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    // A create names no object here; NodeRestriction checks the new Lease's name.
    if verb != "create" && a.name != node {
        return no("can only access node lease with the same name as the requesting node");
    }
    NodeDecision::Allow
}

fn csi_node(node: &str, a: &Attributes) -> NodeDecision {
    let verb = a.verb.as_str();
    if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
        return no("can only get, create, update, patch, or delete a CSINode");
    }
    if !a.subresource.is_empty() {
        return no("cannot authorize CSINode subresources");
    }
    if verb != "create" && a.name != node {
        return no("can only access CSINode with the same name as the requesting node");
    }
    NodeDecision::Allow
}

fn node_object(node: &str, a: &Attributes) -> NodeDecision {
    match (a.subresource.as_str(), a.verb.as_str()) {
        // NodeRestriction limits writes to the node's own object.
        ("", "create" | "update" | "patch") | ("status", "update" | "patch") => NodeDecision::Allow,
        // By name, not through the graph: a kubelet reads its Node before creating it.
        ("", "get" | "list" | "watch") => {
            if a.name == node {
                NodeDecision::Allow
            } else if a.name.is_empty() {
                NodeDecision::NoOpinion(format!(
                    "node '{node}' cannot read all nodes, only its own Node object"
                ))
            } else {
                NodeDecision::NoOpinion(format!(
                    "node '{node}' cannot read '{}', only its own Node object",
                    a.name
                ))
            }
        }
        _ => no(""),
    }
}

fn pod(graph: &NodeGraph, node: &str, a: &Attributes) -> NodeDecision {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "get") => get_related(graph, node, Vertex::Pod, a),
        ("", "list" | "watch") => {
            if selects(a, "spec.nodeName", node) {
                NodeDecision::Allow
            } else if !a.name.is_empty() {
                related(graph, node, Vertex::Pod, a)
            } else {
                no("can only list/watch pods with spec.nodeName field selector")
            }
        }
        // Mirror pods, pod status and evictions: NodeRestriction limits them to pods
        // bound to the node.
        ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
            NodeDecision::Allow
        }
        _ => no(""),
    }
}
