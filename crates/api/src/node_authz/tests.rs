#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use super::restriction::{self, Found, Lookup, Refusal, Request};
use super::*;
use crate::rbac::bootstrap::node_rules;

fn pod(ns: &str, name: &str, node: &str, spec: Value) -> Value {
    let mut spec = spec;
    if !node.is_empty() {
        spec["nodeName"] = json!(node);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}")},
           "spec": spec})
}

/// A pod that refers to one object of every kind a node may read through it.
fn busy_pod(node: &str) -> Value {
    pod(
        "default",
        "web",
        node,
        json!({
            "serviceAccountName": "app",
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"name": "i", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "init-env", "key": "k"}}}]}],
            "containers": [{"name": "c",
                "env": [{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "env-from"}}, {"configMapRef": {"name": "env-from-cm"}}]}],
            "ephemeralContainers": [{"name": "debug", "envFrom": [{"secretRef": {"name": "debug-secret"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "vol-secret"}},
                {"name": "c", "configMap": {"name": "vol-cm"}},
                {"name": "p", "projected": {"sources": [
                    {"secret": {"name": "proj-secret"}},
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"serviceAccountToken": {"path": "token"}}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-secret"}}}
            ],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu-claim"}]
        }),
    )
}

fn can(g: &NodeGraph, node: &str, v: Vertex, ns: &str, name: &str) -> bool {
    g.has_path(node, v, ns, name)
}

#[test]
fn a_bound_pod_relates_its_node_to_everything_it_refers_to() {
    let mut g = NodeGraph::new();
    g.upsert_pod(&busy_pod("n1"));
    for s in [
        "pull",
        "init-env",
        "env-from",
        "debug-secret",
        "vol-secret",
        "proj-secret",
        "csi-secret",
    ] {
        assert!(can(&g, "n1", Vertex::Secret, "default", s), "secret {s}");
        assert!(!can(&g, "n2", Vertex::Secret, "default", s), "secret {s}");
        assert!(!can(&g, "n1", Vertex::Secret, "other", s), "secret {s}");
    }
    for c in ["env-cm", "env-from-cm", "vol-cm", "kube-root-ca.crt"] {
        assert!(
            can(&g, "n1", Vertex::ConfigMap, "default", c),
            "configmap {c}"
        );
        assert!(
            !can(&g, "n1", Vertex::Secret, "default", c),
            "{c} is no secret"
        );
    }
    assert!(can(&g, "n1", Vertex::ServiceAccount, "default", "app"));
    assert!(can(
        &g,
        "n1",
        Vertex::PersistentVolumeClaim,
        "default",
        "data"
    ));
    assert!(can(
        &g,
        "n1",
        Vertex::PersistentVolumeClaim,
        "default",
        "web-scratch"
    ));
    assert!(can(&g, "n1", Vertex::ResourceClaim, "default", "gpu-claim"));
    assert!(can(&g, "n1", Vertex::Pod, "default", "web"));
    assert!(!can(&g, "n2", Vertex::Pod, "default", "web"));
    assert!(!can(&g, "n1", Vertex::Secret, "default", "unrelated"));
}

#[test]
fn pods_without_a_node_and_deleted_pods_relate_nothing() {
    let mut g = NodeGraph::new();
    g.upsert_pod(&busy_pod(""));
    assert_eq!(g.pod_count(), 0);
    g.upsert_pod(&busy_pod("n1"));
    assert_eq!(g.pod_node("default", "web"), Some("n1"));
    g.delete_pod("default", "web");
    assert_eq!(g.pod_count(), 0);
    assert!(!can(&g, "n1", Vertex::Secret, "default", "vol-secret"));
    assert!(!can(&g, "n1", Vertex::Pod, "default", "web"));
}

#[test]
fn shared_objects_stay_related_while_any_pod_of_the_node_uses_them() {
    let mut g = NodeGraph::new();
    let mut a = busy_pod("n1");
    a["metadata"]["name"] = json!("a");
    let mut b = busy_pod("n1");
    b["metadata"]["name"] = json!("b");
    let mut c = busy_pod("n2");
    c["metadata"]["name"] = json!("c");
    for p in [&a, &b, &c] {
        g.upsert_pod(p);
    }
    // Updating a pod rebuilds its edges without counting them twice.
    g.upsert_pod(&a);
    g.delete_pod("default", "a");
    assert!(can(&g, "n1", Vertex::Secret, "default", "vol-secret"));
    g.delete_pod("default", "b");
    assert!(!can(&g, "n1", Vertex::Secret, "default", "vol-secret"));
    assert!(can(&g, "n2", Vertex::Secret, "default", "vol-secret"));
    // A recreated pod of the same name on another node moves its relations.
    let mut moved = busy_pod("n3");
    moved["metadata"]["name"] = json!("c");
    g.upsert_pod(&moved);
    assert!(!can(&g, "n2", Vertex::Secret, "default", "vol-secret"));
    assert!(can(&g, "n3", Vertex::Secret, "default", "vol-secret"));
}

#[test]
fn mirror_pods_relate_only_themselves() {
    let mut g = NodeGraph::new();
    let mut p = busy_pod("n1");
    p["metadata"]["annotations"] = json!({MIRROR_POD_ANNOTATION: "hash"});
    g.upsert_pod(&p);
    assert!(can(&g, "n1", Vertex::Pod, "default", "web"));
    assert!(!can(&g, "n1", Vertex::Secret, "default", "vol-secret"));
    assert!(!can(&g, "n1", Vertex::ServiceAccount, "default", "app"));
}

#[test]
fn volumes_and_their_secrets_are_reached_through_a_pods_claim() {
    let mut g = NodeGraph::new();
    let pv = json!({"metadata": {"name": "pv1"}, "spec": {
        "claimRef": {"namespace": "default", "name": "data"},
        "rbd": {"secretRef": {"name": "ceph"}},
        "csi": {"driver": "d", "controllerPublishSecretRef": {"name": "ctl", "namespace": "kube-system"},
                "nodeStageSecretRef": {"name": "stage", "namespace": "kube-system"}}}});
    g.upsert_pv(&pv);
    assert!(!can(&g, "n1", Vertex::PersistentVolume, "", "pv1"));
    g.upsert_pod(&busy_pod("n1"));
    assert!(can(&g, "n1", Vertex::PersistentVolume, "", "pv1"));
    assert!(!can(&g, "n2", Vertex::PersistentVolume, "", "pv1"));
    // Without a namespace the claim's; CSI names its own; controller-only refs never.
    assert!(can(&g, "n1", Vertex::Secret, "default", "ceph"));
    assert!(can(&g, "n1", Vertex::Secret, "kube-system", "stage"));
    assert!(!can(&g, "n1", Vertex::Secret, "kube-system", "ctl"));
    // Unbound volumes relate to nobody; deleted ones are forgotten.
    let mut unbound = pv.clone();
    unbound["spec"].as_object_mut().unwrap().remove("claimRef");
    g.upsert_pv(&unbound);
    assert!(!can(&g, "n1", Vertex::PersistentVolume, "", "pv1"));
    assert!(!can(&g, "n1", Vertex::Secret, "default", "ceph"));
    g.upsert_pv(&pv);
    g.delete_pv("pv1");
    assert!(!can(&g, "n1", Vertex::Secret, "default", "ceph"));
}

#[test]
fn attachments_belong_to_their_node() {
    let mut g = NodeGraph::new();
    g.upsert_attachment("va", "n1");
    assert!(can(&g, "n1", Vertex::VolumeAttachment, "", "va"));
    assert!(!can(&g, "n2", Vertex::VolumeAttachment, "", "va"));
    g.upsert_attachment("va", "");
    assert!(!can(&g, "n1", Vertex::VolumeAttachment, "", "va"));
}

#[test]
fn node_identity_needs_the_prefix_and_the_group() {
    let nodes = vec![NODES_GROUP.to_string()];
    assert_eq!(node_identity("system:node:n1", &nodes), Some("n1"));
    assert_eq!(node_identity("system:node:", &nodes), Some(""));
    assert_eq!(node_identity("system:node:n1", &[]), None);
    assert_eq!(node_identity("n1", &nodes), None);
}

fn attrs(verb: &str, ns: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
    Attributes::resource(
        "system:node:n1",
        &[NODES_GROUP, "system:authenticated"],
        verb,
        ns,
        group,
        resource,
        sub,
        name,
    )
}

#[test]
fn the_node_authorizer_decides_as_kube() {
    let mut g = NodeGraph::new();
    g.upsert_pod(&busy_pod("n1"));
    let other = pod(
        "default",
        "theirs",
        "n2",
        json!({"volumes": [{"name": "s", "secret": {"secretName": "their-secret"}}]}),
    );
    g.upsert_pod(&other);
    let rules = node_rules();
    let decide = |a: &Attributes| authorize(&g, &rules, "n1", a);
    let allow = |a: Attributes| assert_eq!(decide(&a), NodeDecision::Allow, "{a:?}");
    let deny = |a: Attributes, reason: &str| {
        let d = decide(&a);
        assert!(!d.is_allowed(), "{a:?}");
        assert_eq!(d.reason(), reason, "{a:?}");
    };
    let no_rel = "no relationship found between node 'n1' and this object";
    allow(attrs("get", "default", "", "secrets", "", "vol-secret"));
    let mut watch_one = attrs("watch", "default", "", "secrets", "", "vol-secret");
    watch_one.field_selector = "metadata.name=vol-secret".into();
    allow(watch_one);
    deny(
        attrs("get", "default", "", "secrets", "", "their-secret"),
        no_rel,
    );
    assert_eq!(
        decide(&attrs("get", "default", "", "secrets", "", "their-secret")),
        NodeDecision::NoRelationship { node: "n1".into() }
    );
    deny(
        attrs("list", "default", "", "secrets", "", ""),
        "No Object name found",
    );
    deny(
        attrs("update", "default", "", "secrets", "", "vol-secret"),
        "can only read resources of this type",
    );
    allow(attrs(
        "get",
        "default",
        "",
        "configmaps",
        "",
        "kube-root-ca.crt",
    ));
    allow(attrs(
        "get",
        "default",
        "",
        "persistentvolumeclaims",
        "",
        "data",
    ));
    deny(
        attrs("list", "default", "", "persistentvolumeclaims", "", ""),
        "can only get individual resources of this type",
    );
    allow(attrs(
        "patch",
        "default",
        "",
        "persistentvolumeclaims",
        "status",
        "data",
    ));
    allow(attrs(
        "create",
        "default",
        "",
        "serviceaccounts",
        "token",
        "app",
    ));
    deny(
        attrs(
            "create",
            "default",
            "",
            "serviceaccounts",
            "token",
            "default",
        ),
        no_rel,
    );
    deny(
        attrs("get", "default", "", "serviceaccounts", "", "app"),
        "can only create tokens for individual service accounts",
    );
    // Its own Node by name; writes are NodeRestriction's to limit.
    allow(attrs("get", "", "", "nodes", "", "n1"));
    deny(
        attrs("get", "", "", "nodes", "", "n2"),
        "node 'n1' cannot read 'n2', only its own Node object",
    );
    deny(
        attrs("list", "", "", "nodes", "", ""),
        "node 'n1' cannot read all nodes, only its own Node object",
    );
    allow(attrs("patch", "", "", "nodes", "status", "n2"));
    allow(attrs("create", "", "", "nodes", "", ""));
    deny(attrs("delete", "", "", "nodes", "", "n1"), "");
    // Its own pods: listed by spec.nodeName, read through the graph.
    let mut mine = attrs("watch", "", "", "pods", "", "");
    mine.field_selector = "spec.nodeName=n1".into();
    allow(mine.clone());
    mine.field_selector = "spec.nodeName=n2".into();
    deny(
        mine,
        "can only list/watch pods with spec.nodeName field selector",
    );
    allow(attrs("get", "default", "", "pods", "", "web"));
    deny(attrs("get", "default", "", "pods", "", "theirs"), no_rel);
    allow(attrs("patch", "default", "", "pods", "status", "theirs"));
    allow(attrs("create", "default", "", "pods", "eviction", "theirs"));
    deny(attrs("update", "default", "", "pods", "", "web"), "");
    deny(attrs("create", "default", "", "pods", "exec", "web"), "");
    // Leases and CSINodes by name.
    allow(attrs(
        "update",
        "kube-node-lease",
        "coordination.k8s.io",
        "leases",
        "",
        "n1",
    ));
    allow(attrs(
        "create",
        "kube-node-lease",
        "coordination.k8s.io",
        "leases",
        "",
        "",
    ));
    deny(
        attrs(
            "update",
            "kube-node-lease",
            "coordination.k8s.io",
            "leases",
            "",
            "n2",
        ),
        "can only access node lease with the same name as the requesting node",
    );
    deny(
        attrs("get", "default", "coordination.k8s.io", "leases", "", "n1"),
        "can only access leases in the \"kube-node-lease\" system namespace",
    );
    allow(attrs("get", "", "storage.k8s.io", "csinodes", "", "n1"));
    deny(
        attrs("get", "", "storage.k8s.io", "csinodes", "", "n2"),
        "can only access CSINode with the same name as the requesting node",
    );
    // Everything else: the static node rules.
    allow(attrs("list", "", "", "services", "", ""));
    allow(attrs("create", "default", "", "events", "", ""));
    allow(attrs(
        "create",
        "",
        "certificates.k8s.io",
        "certificatesigningrequests",
        "",
        "",
    ));
    deny(
        attrs("list", "", "discovery.k8s.io", "endpointslices", "", ""),
        "",
    );
    deny(
        attrs("create", "default", "", "secrets", "", ""),
        "can only read resources of this type",
    );
    // An unnamed node gets nothing.
    let d = authorize(&g, &rules, "", &attrs("get", "", "", "nodes", "", "n1"));
    assert_eq!(d.reason(), "unknown node for user \"system:node:n1\"");
    // The graph follows deletes.
    g.delete_pod("default", "web");
    let d = authorize(
        &g,
        &rules,
        "n1",
        &attrs("get", "default", "", "secrets", "", "vol-secret"),
    );
    assert_eq!(d.reason(), no_rel);
}

fn node_obj(labels: Value, taints: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": "n1", "uid": "node-uid", "labels": labels},
           "spec": {"taints": taints}})
}

#[allow(clippy::too_many_arguments)]
fn req<'a>(
    op: &'a str,
    group: &'a str,
    resource: &'a str,
    sub: &'a str,
    ns: &'a str,
    name: &'a str,
    object: Option<&'a Value>,
    old: Option<&'a Value>,
) -> Request<'a> {
    Request {
        node: "n1",
        user: "system:node:n1",
        operation: op,
        group,
        resource,
        subresource: sub,
        namespace: ns,
        name,
        object,
        old,
    }
}

fn refused(r: Result<(), Refusal>) -> String {
    match r {
        Err(e) => e.message(),
        Ok(()) => panic!("admitted"),
    }
}

#[test]
fn node_restriction_limits_a_node_to_its_own_node_object() {
    let none = Found::default();
    let old = node_obj(json!({"kubernetes.io/hostname": "n1"}), json!([]));
    let ok = node_obj(
        json!({"kubernetes.io/hostname": "n1", "node.kubernetes.io/instance-type": "big", "mine": "x"}),
        json!(null),
    );
    assert!(restriction::admit(
        &req("UPDATE", "", "nodes", "", "", "n1", Some(&ok), Some(&old)),
        &none
    )
    .is_ok());
    assert_eq!(
        refused(restriction::admit(
            &req("UPDATE", "", "nodes", "", "", "n2", Some(&ok), Some(&old)),
            &none
        )),
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
    );
    let tainted = node_obj(
        json!({"kubernetes.io/hostname": "n1"}),
        json!([{"key": "k", "effect": "NoSchedule"}]),
    );
    assert_eq!(
        refused(restriction::admit(
            &req(
                "UPDATE",
                "",
                "nodes",
                "status",
                "",
                "n1",
                Some(&tainted),
                Some(&old)
            ),
            &none
        )),
        "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"
    );
    let relabelled = node_obj(
        json!({"kubernetes.io/hostname": "n1", "node-restriction.kubernetes.io/pool": "a", "node-role.kubernetes.io/master": ""}),
        json!([]),
    );
    assert_eq!(
        refused(restriction::admit(&req("UPDATE", "", "nodes", "", "", "n1", Some(&relabelled), Some(&old)), &none)),
        "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/master"
    );
    // Removing such a label is a modification too.
    assert!(restriction::admit(
        &req(
            "UPDATE",
            "",
            "nodes",
            "",
            "",
            "n1",
            Some(&old),
            Some(&relabelled)
        ),
        &none
    )
    .is_err());
    let mut owned = old.clone();
    owned["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "Node", "name": "x", "uid": "u"}]);
    assert_eq!(
        refused(restriction::admit(
            &req(
                "UPDATE",
                "",
                "nodes",
                "",
                "",
                "n1",
                Some(&owned),
                Some(&old)
            ),
            &none
        )),
        "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify ownerReferences"
    );
    assert_eq!(
        refused(restriction::admit(&req("CREATE", "", "nodes", "", "", "n1", Some(&relabelled), None), &none)),
        "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/master"
    );
    assert!(restriction::admit(
        &req("CREATE", "", "nodes", "", "", "n1", Some(&tainted), None),
        &none
    )
    .is_ok());
    assert!(restriction::admit(
        &req("DELETE", "", "nodes", "", "", "n2", None, Some(&old)),
        &none
    )
    .is_err());
}

fn mirror(node: &str, owner_uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "static-web-n1", "namespace": "default",
                        "annotations": {MIRROR_POD_ANNOTATION: "hash"},
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": owner_uid, "controller": true}]},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
}

#[test]
fn node_restriction_allows_only_clean_mirror_pods_of_the_node() {
    let node = node_obj(json!({}), json!([]));
    let found = Found {
        pod: None,
        node: Some(&node),
    };
    let good = mirror("n1", "node-uid");
    let r = req(
        "CREATE",
        "",
        "pods",
        "",
        "default",
        "static-web-n1",
        Some(&good),
        None,
    );
    assert_eq!(
        restriction::lookup_needed(&r),
        Some(Lookup::Node { name: "n1".into() })
    );
    assert!(restriction::admit(&r, &found).is_ok());
    let check = |p: &Value| {
        refused(restriction::admit(
            &req(
                "CREATE",
                "",
                "pods",
                "",
                "default",
                "static-web-n1",
                Some(p),
                None,
            ),
            &found,
        ))
    };
    let mut plain = good.clone();
    plain["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert_eq!(
        check(&plain),
        "pods \"static-web-n1\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
    );
    assert_eq!(
        check(&mirror("n2", "node-uid")),
        "pods \"static-web-n1\" is forbidden: node \"n1\" can only create pods with spec.nodeName set to itself"
    );
    assert_eq!(
        check(&mirror("n1", "other")),
        "pods \"static-web-n1\" is forbidden: node n1 UID mismatch: expected other got node-uid"
    );
    let mut secret = good.clone();
    secret["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "x"}}]);
    assert_eq!(
        check(&secret),
        "pods \"static-web-n1\" is forbidden: node \"n1\" can not create pods that reference secrets"
    );
    let mut sa = good.clone();
    sa["spec"]["serviceAccountName"] = json!("default");
    assert!(check(&sa).ends_with("can not create pods that reference a service account"));
    let mut claim = good.clone();
    claim["spec"]["volumes"] = json!([{"name": "d", "persistentVolumeClaim": {"claimName": "x"}}]);
    assert!(check(&claim).ends_with("can not create pods that reference persistentvolumeclaims"));
    let mut orphan = good.clone();
    orphan["metadata"]["ownerReferences"] = json!([]);
    assert!(check(&orphan).ends_with("can only create pods with an owner reference set to itself"));
    // The node's own Node must exist.
    let r = req(
        "CREATE",
        "",
        "pods",
        "",
        "default",
        "static-web-n1",
        Some(&good),
        None,
    );
    assert_eq!(
        restriction::admit(&r, &Found::default()),
        Err(Refusal::NotFound {
            resource: "node".into(),
            name: "n1".into()
        })
    );
}

#[test]
fn node_restriction_limits_pod_writes_to_pods_bound_to_the_node() {
    let none = Found::default();
    let theirs = pod("default", "x", "n2", json!({}));
    let mine = pod("default", "x", "n1", json!({}));
    let mut mine_new = mine.clone();
    mine_new["status"] = json!({"phase": "Running"});
    assert!(restriction::admit(
        &req(
            "UPDATE",
            "",
            "pods",
            "status",
            "default",
            "x",
            Some(&mine_new),
            Some(&mine)
        ),
        &none
    )
    .is_ok());
    assert_eq!(
        refused(restriction::admit(&req("UPDATE", "", "pods", "status", "default", "x", Some(&theirs), Some(&theirs)), &none)),
        "pods \"x\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
    );
    let mut relabel = mine.clone();
    relabel["metadata"]["labels"] = json!({"a": "b"});
    assert_eq!(
        refused(restriction::admit(
            &req(
                "UPDATE",
                "",
                "pods",
                "status",
                "default",
                "x",
                Some(&relabel),
                Some(&mine)
            ),
            &none
        )),
        "pods \"x\" is forbidden: node \"n1\" cannot update labels through pod status"
    );
    assert_eq!(
        refused(restriction::admit(&req("DELETE", "", "pods", "", "default", "x", None, Some(&theirs)), &none)),
        "pods \"x\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself"
    );
    assert!(restriction::admit(
        &req("DELETE", "", "pods", "", "default", "x", None, Some(&mine)),
        &none
    )
    .is_ok());
    // Evictions: the pod is looked up by name.
    let eviction = json!({"metadata": {"name": "x", "namespace": "default"}});
    let r = req(
        "CREATE",
        "",
        "pods",
        "eviction",
        "default",
        "x",
        Some(&eviction),
        None,
    );
    assert_eq!(
        restriction::lookup_needed(&r),
        Some(Lookup::Pod {
            namespace: "default".into(),
            name: "x".into()
        })
    );
    assert_eq!(
        refused(restriction::admit(
            &r,
            &Found {
                pod: Some(&theirs),
                node: None
            }
        )),
        "pods \"x\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself"
    );
    assert!(restriction::admit(
        &r,
        &Found {
            pod: Some(&mine),
            node: None
        }
    )
    .is_ok());
    assert_eq!(
        refused(restriction::admit(&r, &none)),
        "pod \"x\" not found"
    );
}

#[test]
fn node_restriction_limits_tokens_leases_claims_and_csrs() {
    let mine = pod("default", "web", "n1", json!({}));
    let theirs = pod("default", "web", "n2", json!({}));
    let tr = |uid: &str| json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": uid}}});
    let good = tr("uid-web");
    let r = req(
        "CREATE",
        "",
        "serviceaccounts",
        "token",
        "default",
        "app",
        Some(&good),
        None,
    );
    assert_eq!(
        restriction::lookup_needed(&r),
        Some(Lookup::Pod {
            namespace: "default".into(),
            name: "web".into()
        })
    );
    assert!(restriction::admit(
        &r,
        &Found {
            pod: Some(&mine),
            node: None
        }
    )
    .is_ok());
    assert_eq!(
        refused(restriction::admit(&r, &Found { pod: Some(&theirs), node: None })),
        "serviceaccounts \"app\" is forbidden: node requested token bound to a pod scheduled on a different node"
    );
    let stale = tr("old");
    let r2 = req(
        "CREATE",
        "",
        "serviceaccounts",
        "token",
        "default",
        "app",
        Some(&stale),
        None,
    );
    assert!(refused(restriction::admit(
        &r2,
        &Found {
            pod: Some(&mine),
            node: None
        }
    ))
    .contains("does not match the UID in record"));
    let unbound = json!({"spec": {}});
    let r3 = req(
        "CREATE",
        "",
        "serviceaccounts",
        "token",
        "default",
        "app",
        Some(&unbound),
        None,
    );
    assert_eq!(
        refused(restriction::admit(&r3, &Found::default())),
        "serviceaccounts \"app\" is forbidden: node requested token not bound to a pod"
    );

    let lease = json!({"metadata": {"name": "n2", "namespace": "kube-node-lease"}});
    assert_eq!(
        refused(restriction::admit(&req("CREATE", "coordination.k8s.io", "leases", "", "kube-node-lease", "n2", Some(&lease), None), &Found::default())),
        "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node"
    );
    assert!(restriction::admit(
        &req(
            "UPDATE",
            "coordination.k8s.io",
            "leases",
            "",
            "kube-node-lease",
            "n1",
            Some(&lease),
            Some(&lease)
        ),
        &Found::default()
    )
    .is_ok());

    let claim = json!({"metadata": {"name": "data", "resourceVersion": "1"}, "spec": {"volumeName": "v"}, "status": {"phase": "Bound"}});
    let mut grown = claim.clone();
    grown["status"]["capacity"] = json!({"storage": "2Gi"});
    grown["metadata"]["resourceVersion"] = json!("2");
    assert!(restriction::admit(
        &req(
            "UPDATE",
            "",
            "persistentvolumeclaims",
            "status",
            "default",
            "data",
            Some(&grown),
            Some(&claim)
        ),
        &Found::default()
    )
    .is_ok());
    let mut relabel = claim.clone();
    relabel["metadata"]["labels"] = json!({"a": "b"});
    assert!(refused(restriction::admit(&req("UPDATE", "", "persistentvolumeclaims", "status", "default", "data", Some(&relabel), Some(&claim)), &Found::default()))
        .contains("is not allowed to update fields other than status.quantity and status.conditions: changed metadata.labels"));
    assert_eq!(
        refused(restriction::admit(
            &req(
                "UPDATE",
                "",
                "persistentvolumeclaims",
                "",
                "default",
                "data",
                Some(&claim),
                Some(&claim)
            ),
            &Found::default()
        )),
        "persistentvolumeclaims \"data\" is forbidden: may only update PVC status"
    );
}

fn csr_object(cn: &str, signer: &str) -> Value {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    json!({"metadata": {"name": "csr-1"}, "spec": {"signerName": signer,
        "request": base64::engine::general_purpose::STANDARD.encode(pem)}})
}

#[test]
fn node_restriction_lets_a_node_ask_certificates_only_for_itself() {
    let none = Found::default();
    let check = |o: &Value| {
        restriction::admit(
            &req(
                "CREATE",
                "certificates.k8s.io",
                "certificatesigningrequests",
                "",
                "",
                "csr-1",
                Some(o),
                None,
            ),
            &none,
        )
    };
    assert!(check(&csr_object(
        "system:node:n1",
        "kubernetes.io/kubelet-serving"
    ))
    .is_ok());
    assert_eq!(
        refused(check(&csr_object("system:node:n2", "kubernetes.io/kube-apiserver-client-kubelet"))),
        "certificatesigningrequests.certificates.k8s.io \"csr-1\" is forbidden: can only create a node CSR with CN=system:node:n1"
    );
    assert!(check(&csr_object("anything", "example.com/other")).is_ok());
}

#[test]
fn kubelet_labels_follow_kubes_rules() {
    for ok in [
        "kubernetes.io/hostname",
        "node.kubernetes.io/instance-type",
        "kubelet.kubernetes.io/x",
        "a.node.kubernetes.io/x",
        "example.com/role",
        "plain",
    ] {
        assert!(!restriction::is_forbidden_node_label(ok), "{ok}");
    }
    for bad in [
        "node-role.kubernetes.io/master",
        "node-restriction.kubernetes.io/pool",
        "a.node-restriction.kubernetes.io/pool",
        "k8s.io/x",
        "foo.k8s.io/x",
    ] {
        assert!(restriction::is_forbidden_node_label(bad), "{bad}");
    }
    assert!(restriction::node_labels_error(["a", "kubernetes.io/os"]).is_none());
    let e = restriction::node_labels_error(["node-role.kubernetes.io/worker"]).unwrap();
    assert!(e.contains("node-role.kubernetes.io/worker"), "{e}");
}
