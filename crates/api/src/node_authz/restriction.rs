//! NodeRestriction: what a node (`system:node:<name>` in `system:nodes`) may write, with
//! the objects in hand, as kube-apiserver 1.33's admission plugin decides it:
//!
//! - its own Node only, created without labels outside the kubelet's set and the
//!   `node-restriction.kubernetes.io/` prefix, and updated without changing its taints,
//!   its owner references, its `configSource` or such labels;
//! - mirror pods only (the `kubernetes.io/config.mirror` annotation), bound to itself,
//!   owned by its Node, and referring to no Secret, ConfigMap, ServiceAccount, claim or
//!   ClusterTrustBundle; deletes and evictions of pods bound to itself; status updates of
//!   pods bound to itself that leave labels and resource claim statuses alone;
//! - PersistentVolumeClaim status (capacity, conditions, allocations) only;
//! - tokens bound to a pod (by uid) scheduled on itself;
//! - its own Lease in `kube-node-lease`, its own CSINode;
//! - kubelet CertificateSigningRequests for its own name only.
//!
//! [`admit`] is pure: the caller fetches what [`lookup_needed`] names (the pod an eviction
//! or token refers to, the node's own Node for a mirror pod) and hands it in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{is_mirror_pod, refs, NODE_LEASE_NAMESPACE, NODE_USER_PREFIX};
use crate::rbac::{forbidden, group_resource};

/// The labels a kubelet may set on its own Node (kube's `KubeletLabels()`).
pub const KUBELET_LABELS: [&str; 11] = [
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Label namespaces (and their subdomains) a kubelet may use freely.
pub const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Labels in this namespace (or a subdomain) are the cluster admin's, never a node's.
pub const NODE_RESTRICTION_NAMESPACE: &str = "node-restriction.kubernetes.io";

const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// A label in the `kubernetes.io` or `k8s.io` namespaces (or a subdomain of them).
pub fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io")
}

/// A label the kubelet may set on its own Node (kube's `IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key) || {
        let ns = label_namespace(key);
        KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|allowed| in_namespace(ns, allowed))
    }
}

/// Whether a node may not add, change or remove label `key` of its own Node.
pub fn is_forbidden_node_label(key: &str) -> bool {
    in_namespace(label_namespace(key), NODE_RESTRICTION_NAMESPACE)
        || (is_kubernetes_label(key) && !is_kubelet_label(key))
}

/// The keys whose values differ between `a` and `b` (added, removed or changed) that a
/// node may not touch, sorted.
pub fn forbidden_label_changes(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (k, v) in a {
        if b.get(k) != Some(v) && is_forbidden_node_label(k) {
            out.insert(k.clone());
        }
    }
    for (k, v) in b {
        if a.get(k) != Some(v) && is_forbidden_node_label(k) {
            out.insert(k.clone());
        }
    }
    out.into_iter().collect()
}

/// Why a kubelet's `--node-labels` would be refused by NodeRestriction, if they would:
/// the same rule, checked before the node registers (as the kubelet checks its flags).
pub fn node_labels_error<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let bad: BTreeSet<&str> = keys
        .into_iter()
        .filter(|k| is_forbidden_node_label(k))
        .collect();
    if bad.is_empty() {
        return None;
    }
    Some(format!(
        "--node-labels {:?}: a node may not set labels in the {NODE_RESTRICTION_NAMESPACE:?} namespace, nor \
         'kubernetes.io' or 'k8s.io' labels other than those with an allowed prefix ({}) or in the allowed set ({}); \
         an administrator sets them with kubectl label node",
        bad.into_iter().collect::<Vec<_>>(),
        KUBELET_LABEL_NAMESPACES.join(", "),
        KUBELET_LABELS.join(", ")
    ))
}

/// A write by a node, as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The node's name (from `system:node:<name>`; empty when it has none).
    pub node: &'a str,
    /// The user name, for the message about an unidentifiable node.
    pub user: &'a str,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'a str,
    pub group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// The object's name (for a create, the new object's).
    pub name: &'a str,
    /// The new object (create, update; the Eviction or TokenRequest of those
    /// subresources).
    pub object: Option<&'a Value>,
    /// The stored object (update, delete).
    pub old: Option<&'a Value>,
}

/// An object [`admit`] needs to decide, to be fetched by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The pod `namespace/name` (an eviction's or a token's).
    Pod { namespace: String, name: String },
    /// The node's own Node (a mirror pod's owner).
    Node { name: String },
}

/// What the caller fetched for [`Lookup`]; `None` when it does not exist.
#[derive(Debug, Clone, Copy, Default)]
pub struct Found<'a> {
    pub pod: Option<&'a Value>,
    pub node: Option<&'a Value>,
}

/// Why admission refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403, with kube's whole message; `group`, `resource`, `name` for the details.
    Forbidden {
        group: String,
        resource: String,
        name: String,
        message: String,
    },
    /// 404 of a looked-up object, as kube's listers say it (`pod "x" not found`: the
    /// resource in the singular).
    NotFound { resource: String, name: String },
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Forbidden { message, .. } => message.clone(),
            Refusal::NotFound { resource, name } => format!("{resource} {name:?} not found"),
        }
    }
}

fn str_at<'a>(v: Option<&'a Value>, ptr: &str) -> &'a str {
    v.and_then(|v| v.pointer(ptr))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What [`admit`] will need for `req`, if anything.
pub fn lookup_needed(req: &Request<'_>) -> Option<Lookup> {
    if req.node.is_empty() {
        return None;
    }
    match (req.group, req.resource, req.subresource, req.operation) {
        ("", "pods", "", "CREATE") if req.object.is_some_and(is_mirror_pod) => Some(Lookup::Node {
            name: req.node.to_string(),
        }),
        ("", "pods", "eviction", "CREATE") => {
            let name = if req.name.is_empty() {
                str_at(req.object, "/metadata/name")
            } else {
                req.name
            };
            (!name.is_empty()).then(|| Lookup::Pod {
                namespace: req.namespace.to_string(),
                name: name.to_string(),
            })
        }
        ("", "serviceaccounts", "token", "CREATE") => {
            let r = req.object.and_then(|o| o.pointer("/spec/boundObjectRef"));
            let name = str_at(r, "/name");
            (str_at(r, "/kind") == "Pod" && !name.is_empty()).then(|| Lookup::Pod {
                namespace: req.namespace.to_string(),
                name: name.to_string(),
            })
        }
        _ => None,
    }
}

/// The 403 kube's `admission.NewForbidden` makes of `why`: the resource without its
/// subresource, the request's name (a create's: the new object's).
fn forbid(req: &Request<'_>, why: String) -> Refusal {
    let name = if req.name.is_empty() {
        str_at(req.object, "/metadata/name")
    } else {
        req.name
    };
    Refusal::Forbidden {
        group: req.group.to_string(),
        resource: req.resource.to_string(),
        name: name.to_string(),
        message: forbidden(&group_resource(req.group, req.resource), name, &why),
    }
}

/// NodeRestriction's decision on `req`, a node's write (callers pass only requests of
/// users [`super::node_identity`] recognises).
pub fn admit(req: &Request<'_>, found: &Found<'_>) -> Result<(), Refusal> {
    let refuse = |why: String| Err(forbid(req, why));
    let node = req.node;
    if node.is_empty() {
        return refuse(format!("could not determine node from user {:?}", req.user));
    }
    let op = req.operation;
    match (req.group, req.resource) {
        ("", "pods") => match req.subresource {
            "" => match op {
                "CREATE" => mirror_pod(req, found),
                "DELETE" => {
                    if str_at(req.old, "/spec/nodeName") != node {
                        return refuse(format!(
                            "node {node:?} can only delete pods with spec.nodeName set to itself"
                        ));
                    }
                    Ok(())
                }
                _ => refuse(format!(
                    "unexpected operation {op:?}, node {node:?} can only create and delete mirror pods"
                )),
            },
            "status" => {
                if op != "UPDATE" {
                    return refuse(format!("unexpected operation {op:?}"));
                }
                if str_at(req.old, "/spec/nodeName") != node {
                    return refuse(format!(
                        "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                    ));
                }
                let labels = |o: Option<&Value>| o.map(crate::object::labels).unwrap_or_default();
                if labels(req.object) != labels(req.old) {
                    return refuse(format!(
                        "node {node:?} cannot update labels through pod status"
                    ));
                }
                if claim_statuses(req.object) != claim_statuses(req.old) {
                    return refuse(format!(
                        "node {node:?} cannot update resource claim statues"
                    ));
                }
                Ok(())
            }
            "eviction" => {
                if op != "CREATE" {
                    return refuse(format!("unexpected operation {op}"));
                }
                let Some(Lookup::Pod { name, .. }) = lookup_needed(req) else {
                    return refuse("could not determine pod from request data".into());
                };
                let Some(pod) = found.pod else {
                    return Err(Refusal::NotFound {
                        resource: "pod".into(),
                        name,
                    });
                };
                if str_at(Some(pod), "/spec/nodeName") != node {
                    return refuse(format!(
                        "node {node} can only evict pods with spec.nodeName set to itself"
                    ));
                }
                Ok(())
            }
            sub => refuse(format!(
                "unexpected pod subresource {sub:?}, only 'status' and 'eviction' are allowed"
            )),
        },
        ("", "nodes") => node_object(req).or_else(refuse),
        ("", "persistentvolumeclaims") => {
            if req.subresource != "status" {
                return refuse("may only update PVC status".into());
            }
            if op != "UPDATE" {
                return refuse(format!("unexpected operation {op:?}"));
            }
            claim_status(req).or_else(refuse)
        }
        ("", "serviceaccounts") if op == "CREATE" && req.subresource == "token" => {
            token_request(req, found)
        }
        ("coordination.k8s.io", "leases") => {
            if req.namespace != NODE_LEASE_NAMESPACE {
                return refuse(format!(
                    "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
                ));
            }
            if req.name != node {
                return refuse(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        ("storage.k8s.io", "csinodes") => {
            if req.name != node {
                return refuse(
                    "can only access CSINode with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        ("certificates.k8s.io", "certificatesigningrequests") if op == "CREATE" => {
            csr(req).or_else(refuse)
        }
        _ => Ok(()),
    }
}

/// `status.resourceClaimStatuses` as (name, claim) pairs.
fn claim_statuses(pod: Option<&Value>) -> Vec<(String, Option<String>)> {
    pod.and_then(|p| p.pointer("/status/resourceClaimStatuses"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| {
            (
                str_at(Some(s), "/name").to_string(),
                s.get("resourceClaimName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        })
        .collect()
}

/// A node's pod: a clean mirror pod of itself (see the module docs).
fn mirror_pod(req: &Request<'_>, found: &Found<'_>) -> Result<(), Refusal> {
    let refuse = |why: String| Err(forbid(req, why));
    let node = req.node;
    let pod = req.object.unwrap_or(&Value::Null);
    if !is_mirror_pod(pod) {
        return refuse(format!(
            "pod does not have {:?} annotation, node {node:?} can only create mirror pods",
            super::MIRROR_POD_ANNOTATION
        ));
    }
    if str_at(Some(pod), "/spec/nodeName") != node {
        return refuse(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners: Vec<&Value> = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    match owners.as_slice() {
        [] => {
            return refuse(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ))
        }
        [owner] => {
            let s = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or_default();
            if s("apiVersion") != "v1" || s("kind") != "Node" || s("name") != node {
                return refuse(format!(
                    "node {node:?} can only create pods with an owner reference set to itself"
                ));
            }
            if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                return refuse(format!(
                    "node {node:?} can only create pods with a controller owner reference set to itself"
                ));
            }
            if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                return refuse(format!(
                    "node {node:?} must not set blockOwnerDeletion on an owner reference"
                ));
            }
            let Some(n) = found.node else {
                return Err(Refusal::NotFound {
                    resource: "node".into(),
                    name: node.to_string(),
                });
            };
            let uid = str_at(Some(n), "/metadata/uid");
            if s("uid") != uid {
                return refuse(format!(
                    "node {node} UID mismatch: expected {} got {uid}",
                    s("uid")
                ));
            }
        }
        _ => {
            return refuse(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ))
        }
    }
    if refs::pod_service_account(pod).is_some() {
        return refuse(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    if !refs::pod_secret_names(pod).is_empty() {
        return refuse(format!(
            "node {node:?} can not create pods that reference secrets"
        ));
    }
    if !refs::pod_configmap_names(pod).is_empty() {
        return refuse(format!(
            "node {node:?} can not create pods that reference configmaps"
        ));
    }
    if refs::pod_uses_cluster_trust_bundles(pod) {
        return refuse(format!(
            "node {node:?} can not create pods that reference clustertrustbundles"
        ));
    }
    if refs::pod_mounts_claims(pod) {
        return refuse(format!(
            "node {node:?} can not create pods that reference persistentvolumeclaims"
        ));
    }
    Ok(())
}

/// Missing and `null` read as empty, as Go's semantic equality treats nil and empty
/// slices and maps alike.
fn normalized(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(Value::Object(m)) if m.is_empty() => Value::Null,
        Some(v) => v.clone(),
    }
}

fn node_object(req: &Request<'_>) -> Result<(), String> {
    let node = req.node;
    if req.name != node {
        return Err(format!(
            "node {node:?} is not allowed to modify node {:?}",
            req.name
        ));
    }
    let labels = |o: Option<&Value>| o.map(crate::object::labels).unwrap_or_default();
    let at = |o: Option<&Value>, p: &str| normalized(o.and_then(|o| o.pointer(p)));
    match req.operation {
        "CREATE" => {
            if !at(req.object, "/spec/configSource").is_null() {
                return Err(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let bad = forbidden_label_changes(&labels(req.object), &BTreeMap::new());
            if !bad.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    bad.join(", ")
                ));
            }
        }
        "UPDATE" => {
            let source = at(req.object, "/spec/configSource");
            if !source.is_null() && source != at(req.old, "/spec/configSource") {
                return Err(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            if at(req.object, "/spec/taints") != at(req.old, "/spec/taints") {
                return Err(format!("node {node:?} is not allowed to modify taints"));
            }
            if at(req.object, "/metadata/ownerReferences")
                != at(req.old, "/metadata/ownerReferences")
            {
                return Err(format!(
                    "node {node:?} is not allowed to modify ownerReferences"
                ));
            }
            let bad = forbidden_label_changes(&labels(req.object), &labels(req.old));
            if !bad.is_empty() {
                return Err(format!(
                    "is not allowed to modify labels: {}",
                    bad.join(", ")
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A PVC status update may change `status.capacity`, `status.conditions` and the
/// expansion-recovery fields (`allocatedResources`, `allocatedResourceStatuses`), nothing
/// else.
fn claim_status(req: &Request<'_>) -> Result<(), String> {
    let strip = |o: Option<&Value>| {
        let mut v = o.cloned().unwrap_or(Value::Null);
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        if let Some(s) = v.get_mut("status").and_then(Value::as_object_mut) {
            for k in [
                "capacity",
                "conditions",
                "allocatedResources",
                "allocatedResourceStatuses",
            ] {
                s.remove(k);
            }
        }
        v
    };
    let (old, new) = (strip(req.old), strip(req.object));
    if old == new {
        return Ok(());
    }
    let mut changed: Vec<String> = Vec::new();
    for top in ["metadata", "spec", "status"] {
        let (a, b) = (normalized(old.get(top)), normalized(new.get(top)));
        if a == b {
            continue;
        }
        match (a.as_object(), b.as_object()) {
            (Some(a), Some(b)) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    if normalized(a.get(k)) != normalized(b.get(k)) {
                        changed.push(format!("{top}.{k}"));
                    }
                }
            }
            _ => changed.push(top.to_string()),
        }
    }
    Err(format!(
        "node {:?} is not allowed to update fields other than status.quantity and status.conditions: {}",
        req.node,
        if changed.is_empty() {
            "the object changed".to_string()
        } else {
            format!("changed {}", changed.join(", "))
        }
    ))
}

fn token_request(req: &Request<'_>, found: &Found<'_>) -> Result<(), Refusal> {
    let refuse = |why: &str| Err(forbid(req, why.to_string()));
    let r = req.object.and_then(|o| o.pointer("/spec/boundObjectRef"));
    let s = |k: &str| str_at(r, &format!("/{k}"));
    if s("apiVersion") != "v1" || s("kind") != "Pod" || s("name").is_empty() {
        return refuse("node requested token not bound to a pod");
    }
    if s("uid").is_empty() {
        return refuse("node requested token with a pod binding without a uid");
    }
    let Some(pod) = found.pod else {
        return Err(Refusal::NotFound {
            resource: "pod".into(),
            name: s("name").to_string(),
        });
    };
    if str_at(Some(pod), "/metadata/uid") != s("uid") {
        return refuse(&format!(
            "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
            s("uid")
        ));
    }
    if str_at(Some(pod), "/spec/nodeName") != req.node {
        return refuse("node requested token bound to a pod scheduled on a different node");
    }
    Ok(())
}

fn csr(req: &Request<'_>) -> Result<(), String> {
    let signer = str_at(req.object, "/spec/signerName");
    if signer != KUBELET_SERVING_SIGNER && signer != KUBELET_CLIENT_SIGNER {
        return Ok(());
    }
    let cn = request_common_name(str_at(req.object, "/spec/request"))
        .map_err(|e| format!("unable to parse csr: {e}"))?;
    let want = format!("{NODE_USER_PREFIX}{}", req.node);
    if cn != want {
        return Err(format!("can only create a node CSR with CN={want}"));
    }
    Ok(())
}

/// The subject common name of a CSR's `spec.request` (base64 of a PEM request).
fn request_common_name(b64: &str) -> Result<String, String> {
    use base64::Engine as _;
    use x509_parser::prelude::FromDer;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the request is not base64: {e}"))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(cn)
}
