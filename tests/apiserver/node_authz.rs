//! The Node authorizer and NodeRestriction (`--authorization-mode=Node,RBAC`,
//! `--enable-admission-plugins=NodeRestriction`): two node identities, client
//! certificates `CN=system:node:<name>, O=system:nodes` signed by the cluster CA, against
//! one server; kubectl 1.33 and curl see kube-apiserver 1.33's answers and messages.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::api_complete::{as_kubeconfig, user_kubeconfig};
use crate::common::{eventually, run, write, Out, Server};

const KUBECTL: &str = "1.33";

/// A node's credentials: its kubeconfig and its certificate for curl.
struct NodeUser {
    name: String,
    kubeconfig: PathBuf,
    crt: PathBuf,
    key: PathBuf,
}

impl NodeUser {
    fn new(s: &Server, node: &str) -> NodeUser {
        let user = format!("system:node:{node}");
        let kubeconfig = user_kubeconfig(s, &user, &["system:nodes"]);
        // The files user_kubeconfig wrote (named without colons).
        let file = user.replace(':', "_");
        NodeUser {
            name: node.to_string(),
            kubeconfig,
            crt: s.dir.path().join(format!("{file}.crt")),
            key: s.dir.path().join(format!("{file}.key")),
        }
    }

    fn kubectl(&self, s: &Server, args: &[&str]) -> Out {
        as_kubeconfig(s, KUBECTL, &self.kubeconfig, args)
    }

    /// curl as this node: the HTTP status and the JSON answer.
    fn send(&self, s: &Server, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(s.pki("ca.crt"))
            .arg("--cert")
            .arg(&self.crt)
            .arg("--key")
            .arg(&self.key);
        if let Some(b) = body {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            let f = write(s.dir.path(), &format!("body-{}", self.name), &b.to_string());
            c.args(["-H", &format!("Content-Type: {ct}")])
                .arg("--data-binary")
                .arg(format!("@{}", f.display()));
        }
        c.arg(format!("{}{path}", s.url));
        run(c, None).http()
    }
}

/// The 403 message of an answer, after checking it is one.
#[track_caller]
fn forbidden((code, body): (u16, Value)) -> String {
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden", "{body}");
    body["message"].as_str().unwrap_or_default().to_string()
}

#[track_caller]
fn allowed((code, body): (u16, Value)) -> Value {
    assert!((200..300).contains(&code), "{code}: {body}");
    body
}

fn apply(s: &Server, name: &str, yaml: &str) {
    let f = write(s.dir.path(), name, yaml);
    s.kubectl(KUBECTL, &["apply", "-f", f.to_str().unwrap()])
        .ok();
}

/// A pod bound to `node` (no scheduler runs) mounting secret `secret`, reading configmap
/// `cm` in its environment, running as service account `sa`.
fn pod_yaml(name: &str, node: &str, secret: &str, cm: &str, sa: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers:
  - name: c
    image: busybox
    env: [{{name: A, valueFrom: {{configMapKeyRef: {{name: {cm}, key: a}}}}}}]
  volumes:
  - {{name: s, secret: {{secretName: {secret}}}}}
"#
    )
}

fn forbidden_read(node: &str, verb: &str, resource: &str, name: &str, reason: &str) -> String {
    let what = if name.is_empty() {
        format!("{resource} is forbidden")
    } else {
        format!("{resource} \"{name}\" is forbidden")
    };
    format!(
        "{what}: User \"system:node:{node}\" cannot {verb} resource \"{resource}\" in API group \"\" in the namespace \"default\": {reason}"
    )
}

#[test]
fn nodes_reach_only_what_their_pods_need_and_write_only_their_own_objects() {
    let s = Server::start();
    apply(
        &s,
        "objects.yaml",
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: app1, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app2, namespace: default}
---
apiVersion: v1
kind: Secret
metadata: {name: s1, namespace: default}
stringData: {k: one}
---
apiVersion: v1
kind: Secret
metadata: {name: s2, namespace: default}
stringData: {k: two}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c1, namespace: default}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c2, namespace: default}
data: {a: "2"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, storageClassName: manual}
"#,
    );
    let n1 = NodeUser::new(&s, "n1");
    let n2 = NodeUser::new(&s, "n2");

    // Each node registers itself; its Node carries only labels a kubelet may set.
    for n in [&n1, &n2] {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name}}});
        allowed(n.send(&s, "POST", "/api/v1/nodes", Some(&node)));
    }
    let other = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n3"}});
    assert_eq!(
        forbidden(n1.send(&s, "POST", "/api/v1/nodes", Some(&other))),
        "nodes \"n3\" is forbidden: node \"n1\" is not allowed to modify node \"n3\""
    );
    let role = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n4", "labels": {"node-role.kubernetes.io/control-plane": ""}}});
    let n4 = NodeUser::new(&s, "n4");
    assert_eq!(
        forbidden(n4.send(&s, "POST", "/api/v1/nodes", Some(&role))),
        "nodes \"n4\" is forbidden: node \"n4\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane"
    );

    apply(&s, "p1.yaml", &pod_yaml("p1", "n1", "s1", "c1", "app1"));
    apply(&s, "p2.yaml", &pod_yaml("p2", "n2", "s2", "c2", "app2"));

    // Reads: the secret and configmap of its own pod, nothing else, with kube's reasons.
    let no_rel = "no relationship found between node 'n1' and this object";
    let out = n1
        .kubectl(&s, &["get", "secret", "s1", "-o", "jsonpath={.data.k}"])
        .ok();
    assert_eq!(out.stdout, "b25l");
    n1.kubectl(&s, &["get", "configmap", "c1"]).ok();
    let out = n1.kubectl(&s, &["get", "secret", "s2"]).fails();
    assert_eq!(
        out.stderr.trim(),
        format!(
            "Error from server (Forbidden): {}",
            forbidden_read("n1", "get", "secrets", "s2", no_rel)
        )
    );
    let out = n1.kubectl(&s, &["get", "configmap", "c2"]).fails();
    assert!(
        out.stderr
            .contains(&forbidden_read("n1", "get", "configmaps", "c2", no_rel)),
        "{out:?}"
    );
    let out = n1.kubectl(&s, &["get", "secrets"]).fails();
    assert!(
        out.stderr.contains(&forbidden_read(
            "n1",
            "list",
            "secrets",
            "",
            "No Object name found"
        )),
        "{out:?}"
    );
    // A watch of one secret by name (the kubelet's reflectors) is a read of that secret.
    allowed(n1.send(
        &s,
        "GET",
        "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds1",
        None,
    ));
    forbidden(n1.send(
        &s,
        "GET",
        "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds2",
        None,
    ));

    // kubectl auth can-i predicts it (the admin impersonating the node).
    let can_i = |what: &[&str]| {
        let mut args = vec!["auth", "can-i"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["--as=system:node:n1", "--as-group=system:nodes"]);
        s.kubectl(KUBECTL, &args).stdout.trim().to_string()
    };
    assert_eq!(can_i(&["get", "secret/s1"]), "yes");
    // kubectl prints the authorizer's reason after a refusal.
    assert_eq!(can_i(&["get", "secret/s2"]), format!("no - {no_rel}"));
    assert_eq!(can_i(&["list", "secrets"]), "no - No Object name found");
    assert_eq!(can_i(&["get", "configmap/c1"]), "yes");
    assert_eq!(can_i(&["patch", "nodes/n2", "--subresource=status"]), "yes");
    assert_eq!(can_i(&["delete", "nodes/n1"]), "no");

    // Pods: its own listed by spec.nodeName, read by name; others' not.
    let list = allowed(n1.send(
        &s,
        "GET",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
        None,
    ));
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["p1"]);
    assert_eq!(
        forbidden(n1.send(&s, "GET", "/api/v1/pods", None)),
        "pods is forbidden: User \"system:node:n1\" cannot list resource \"pods\" in API group \"\" at the cluster scope: can only list/watch pods with spec.nodeName field selector"
    );
    allowed(n1.send(&s, "GET", "/api/v1/namespaces/default/pods/p1", None));
    assert_eq!(
        forbidden(n1.send(&s, "GET", "/api/v1/namespaces/default/pods/p2", None)),
        forbidden_read("n1", "get", "pods", "p2", no_rel)
    );

    // Pod status, deletion, eviction: only of pods bound to the node.
    let status = json!({"status": {"phase": "Running"}});
    allowed(n1.send(
        &s,
        "PATCH",
        "/api/v1/namespaces/default/pods/p1/status",
        Some(&status),
    ));
    assert_eq!(
        forbidden(n1.send(&s, "PATCH", "/api/v1/namespaces/default/pods/p2/status", Some(&status))),
        "pods \"p2\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
    );
    // Labels never change through pods/status here: skiff's status strategy keeps the
    // stored metadata (kube's lets labels through and NodeRestriction refuses a node's).
    let relabel =
        json!({"metadata": {"labels": {"stolen": "yes"}}, "status": {"phase": "Running"}});
    let (code, p) = n1.send(
        &s,
        "PATCH",
        "/api/v1/namespaces/default/pods/p1/status",
        Some(&relabel),
    );
    assert!(code == 200 || code == 403, "{code}: {p}");
    let p = allowed(
        s.curl("GET", "/api/v1/namespaces/default/pods/p1", &[])
            .http(),
    );
    assert!(p["metadata"]["labels"].get("stolen").is_none(), "{p}");
    assert_eq!(
        forbidden(n1.send(&s, "DELETE", "/api/v1/namespaces/default/pods/p2", None)),
        "pods \"p2\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself"
    );
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "p2", "namespace": "default"}});
    assert_eq!(
        forbidden(n1.send(
            &s,
            "POST",
            "/api/v1/namespaces/default/pods/p2/eviction",
            Some(&eviction)
        )),
        "pods \"p2\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself"
    );

    // Tokens: for the service account of one of its pods, bound to that pod.
    let p1_uid = allowed(
        s.curl("GET", "/api/v1/namespaces/default/pods/p1", &[])
            .http(),
    )["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let p2_uid = allowed(
        s.curl("GET", "/api/v1/namespaces/default/pods/p2", &[])
            .http(),
    )["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let token = |pod: &str, uid: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["x"], "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}}})
    };
    let t = allowed(n1.send(
        &s,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/app1/token",
        Some(&token("p1", &p1_uid)),
    ));
    assert!(t["status"]["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        forbidden(n1.send(
            &s,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/app2/token",
            Some(&token("p2", &p2_uid)),
        )),
        "serviceaccounts \"app2\" is forbidden: User \"system:node:n1\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
    );
    assert_eq!(
        forbidden(n1.send(
            &s,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/app1/token",
            Some(&token("p2", &p2_uid)),
        )),
        "serviceaccounts \"app1\" is forbidden: node requested token bound to a pod scheduled on a different node"
    );

    // Its own Node: labels in the kubelet's set and its own, never taints or restricted
    // labels; never another node.
    n1.kubectl(&s, &["label", "node", "n1", "example.com/disk=ssd"])
        .ok();
    let out = n1
        .kubectl(
            &s,
            &[
                "label",
                "node",
                "n1",
                "node-restriction.kubernetes.io/pool=gold",
            ],
        )
        .fails();
    assert!(
        out.stderr.contains("nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool"),
        "{out:?}"
    );
    let out = n1
        .kubectl(&s, &["taint", "node", "n1", "dedicated=x:NoSchedule"])
        .fails();
    assert!(
        out.stderr
            .contains("nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"),
        "{out:?}"
    );
    let out = n1
        .kubectl(&s, &["label", "node", "n2", "example.com/disk=ssd"])
        .fails();
    assert!(
        out.stderr.contains(
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        ),
        "{out:?}"
    );
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}]}});
    allowed(n1.send(&s, "PATCH", "/api/v1/nodes/n1/status", Some(&ready)));
    assert_eq!(
        forbidden(n1.send(&s, "PATCH", "/api/v1/nodes/n2/status", Some(&ready))),
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
    );
    assert_eq!(
        forbidden(n1.send(&s, "GET", "/api/v1/nodes/n1/status", None)),
        "nodes \"n1\" is forbidden: User \"system:node:n1\" cannot get resource \"nodes/status\" in API group \"\" at the cluster scope"
    );
    forbidden(n1.send(&s, "DELETE", "/api/v1/nodes/n1", None));

    // Leases: its own in kube-node-lease.
    let lease = |n: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": n, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": n, "leaseDurationSeconds": 40}})
    };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    allowed(n1.send(&s, "POST", leases, Some(&lease("n1"))));
    allowed(n2.send(&s, "POST", leases, Some(&lease("n2"))));
    assert_eq!(
        forbidden(n1.send(&s, "POST", leases, Some(&lease("n3")))),
        "leases.coordination.k8s.io \"n3\" is forbidden: can only access node lease with the same name as the requesting node"
    );
    let renew = json!({"spec": {"leaseDurationSeconds": 41}});
    allowed(n1.send(&s, "PATCH", &format!("{leases}/n1"), Some(&renew)));
    assert_eq!(
        forbidden(n1.send(&s, "PATCH", &format!("{leases}/n2"), Some(&renew))),
        "leases.coordination.k8s.io \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\": can only access node lease with the same name as the requesting node"
    );
    let out = n1
        .kubectl(
            &s,
            &["annotate", "lease", "n2", "-n", "kube-node-lease", "x=y"],
        )
        .fails();
    assert!(
        out.stderr
            .contains("can only access node lease with the same name as the requesting node"),
        "{out:?}"
    );

    // Mirror pods: only of itself, owned by its Node, referring to nothing.
    let node_uid = allowed(s.curl("GET", "/api/v1/nodes/n1", &[]).http())["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let mirror = |name: &str, node: &str, extra: Value| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                "annotations": {"kubernetes.io/config.mirror": "hash"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": node_uid, "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
        if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        p
    };
    let pods = "/api/v1/namespaces/default/pods";
    allowed(n1.send(
        &s,
        "POST",
        pods,
        Some(&mirror("static-n1", "n1", json!({}))),
    ));
    assert_eq!(
        forbidden(n1.send(&s, "POST", pods, Some(&mirror("static-n2", "n2", json!({}))))),
        "pods \"static-n2\" is forbidden: node \"n1\" can only create pods with spec.nodeName set to itself"
    );
    let with_secret = json!({"volumes": [{"name": "s", "secret": {"secretName": "s2"}}]});
    assert_eq!(
        forbidden(n1.send(
            &s,
            "POST",
            pods,
            Some(&mirror("static-s", "n1", with_secret))
        )),
        "pods \"static-s\" is forbidden: node \"n1\" can not create pods that reference secrets"
    );
    let mut plain = mirror("plain", "n1", json!({}));
    plain["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert_eq!(
        forbidden(n1.send(&s, "POST", pods, Some(&plain))),
        "pods \"plain\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
    );
    allowed(n1.send(&s, "DELETE", &format!("{pods}/static-n1"), None));

    // Claims: a node reads the claim its pod mounts, no other.
    apply(
        &s,
        "p3.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: p3, namespace: default}
spec:
  nodeName: n2
  containers: [{name: c, image: busybox}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
"#,
    );
    allowed(n2.send(
        &s,
        "GET",
        "/api/v1/namespaces/default/persistentvolumeclaims/data",
        None,
    ));
    assert_eq!(
        forbidden(n1.send(
            &s,
            "GET",
            "/api/v1/namespaces/default/persistentvolumeclaims/data",
            None
        )),
        forbidden_read("n1", "get", "persistentvolumeclaims", "data", no_rel)
    );
    forbidden(n2.send(
        &s,
        "DELETE",
        "/api/v1/namespaces/default/persistentvolumeclaims/data",
        None,
    ));

    // The graph follows the pods: p1 deleted takes s1 from n1; a pod of the same name
    // made again on n2 gives s1 to n2 instead.
    s.kubectl(
        KUBECTL,
        &["delete", "pod", "p1", "--grace-period=0", "--force"],
    )
    .ok();
    eventually("n1 to lose s1 with its pod", || {
        let (code, _) = n1.send(&s, "GET", "/api/v1/namespaces/default/secrets/s1", None);
        (code == 403).then_some(())
    });
    forbidden(n1.send(
        &s,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/app1/token",
        Some(&token("p1", &p1_uid)),
    ));
    apply(
        &s,
        "p1-again.yaml",
        &pod_yaml("p1", "n2", "s1", "c1", "app1"),
    );
    eventually("n2 to gain s1 with the new pod", || {
        let (code, _) = n2.send(&s, "GET", "/api/v1/namespaces/default/secrets/s1", None);
        (code == 200).then_some(())
    });
    forbidden(n1.send(&s, "GET", "/api/v1/namespaces/default/secrets/s1", None));
    allowed(n2.send(&s, "GET", "/api/v1/namespaces/default/configmaps/c1", None));

    // Whatever the Node authorizer leaves falls to RBAC: the agent's service proxy lists
    // nodes and endpoint slices through skiff's bindings; nothing grants secrets.
    n1.kubectl(&s, &["get", "nodes"]).ok();
    n1.kubectl(&s, &["get", "endpointslices", "-A"]).ok();
    assert_eq!(
        can_i(&["create", "secrets"]),
        "no - can only read resources of this type"
    );

    // A node's rights are not a list of rules.
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": "default"}});
    let r = allowed(n1.send(
        &s,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        Some(&review),
    ));
    assert_eq!(r["status"]["incomplete"], true, "{r}");
    assert_eq!(
        r["status"]["evaluationError"],
        "node authorizer does not support user rule resolution"
    );
}

#[test]
fn the_system_node_binding_of_older_clusters_loses_the_nodes_group() {
    let mut s = Server::start();
    // What skiff bootstrapped before it had a Node authorizer.
    let f = write(
        s.dir.path(),
        "old-binding.yaml",
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:node
  annotations: {rbac.authorization.kubernetes.io/autoupdate: "true"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:nodes}]
"#,
    );
    s.kubectl(KUBECTL, &["apply", "-f", f.to_str().unwrap()])
        .ok();
    let can = |s: &Server| {
        s.kubectl(
            KUBECTL,
            &[
                "auth",
                "can-i",
                "get",
                "secret/anything",
                "--as=system:node:n1",
                "--as-group=system:nodes",
            ],
        )
        .stdout
        .trim()
        .to_string()
    };
    assert_eq!(can(&s), "yes");
    s.restart();
    let subjects = s
        .kubectl(
            KUBECTL,
            &[
                "get",
                "clusterrolebinding",
                "system:node",
                "-o",
                "jsonpath={.subjects}",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(subjects.trim(), "");
    assert_eq!(
        can(&s),
        "no - no relationship found between node 'n1' and this object"
    );
}
