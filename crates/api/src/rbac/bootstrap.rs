//! The default policy the API server creates at start-up (kube's bootstrap policy, written
//! for the components skiff has), and its auto-reconciliation: missing rules and subjects
//! are added on every start, additions made by users are kept, and an object annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"` is left alone.

use serde_json::{json, Map, Value};

use super::escalation::covers;
use super::{rules_of, Rule, GROUP};

/// The label every bootstrap object carries.
pub const BOOTSTRAP_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
/// The annotation that lets start-up reconciliation update an object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

const READ: &[&str] = &["get", "list", "watch"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

const CORE: &str = "";
const APPS: &str = "apps";
const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const EVENTS: &str = "events.k8s.io";
const EXTENSIONS: &str = "extensions";
const NETWORKING: &str = "networking.k8s.io";
const NODE: &str = "node.k8s.io";
const POLICY: &str = "policy";
const STORAGE: &str = "storage.k8s.io";

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
    Rule::new(verbs).groups(groups).resources(resources)
}

fn urls(verbs: &[&str], urls: &[&str]) -> Rule {
    Rule::new(verbs).urls(urls)
}

/// Creating and updating Events, in both groups that serve them.
fn events_rule() -> Rule {
    r(&["create", "update", "patch"], &[CORE, EVENTS], &["events"])
}

fn metadata(name: &str, namespace: Option<&str>, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = Map::new();
    labels.insert(BOOTSTRAP_LABEL.0.into(), BOOTSTRAP_LABEL.1.into());
    for (k, v) in extra_labels {
        labels.insert((*k).into(), (*v).into());
    }
    let mut m = json!({
        "name": name,
        "labels": labels,
        "annotations": {AUTOUPDATE: "true"},
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn role_object(
    kind: &str,
    name: &str,
    ns: Option<&str>,
    labels: &[(&str, &str)],
    rules: Vec<Rule>,
) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": kind,
        "metadata": metadata(name, ns, labels),
        "rules": rules.iter().map(Rule::to_value).collect::<Vec<_>>(),
    })
}

fn cluster_role(name: &str, rules: Vec<Rule>) -> Value {
    role_object("ClusterRole", name, None, &[], rules)
}

fn labelled_cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Rule>) -> Value {
    role_object("ClusterRole", name, None, labels, rules)
}

fn aggregate_label(to: &str) -> String {
    format!("{GROUP}/aggregate-to-{to}")
}

/// A ClusterRole whose rules the aggregation controller fills from the roles labelled
/// `rbac.authorization.k8s.io/aggregate-to-<name>: "true"`.
fn aggregated_cluster_role(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut role = role_object("ClusterRole", name, None, labels, Vec::new());
    role["aggregationRule"] = json!({
        "clusterRoleSelectors": [{"matchLabels": {aggregate_label(name): "true"}}]
    });
    role
}

/// Subjects of bootstrap bindings.
fn user(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": GROUP, "name": name})
}
fn group(name: &str) -> Value {
    json!({"kind": "Group", "apiGroup": GROUP, "name": name})
}
fn service_account(ns: &str, name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
}

fn binding(
    kind: &str,
    name: &str,
    ns: Option<&str>,
    role_kind: &str,
    role: &str,
    subjects: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": kind,
        "metadata": metadata(name, ns, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role},
        "subjects": subjects,
    })
}

fn cluster_binding(role: &str, subjects: Vec<Value>) -> Value {
    binding(
        "ClusterRoleBinding",
        role,
        None,
        "ClusterRole",
        role,
        subjects,
    )
}

/// The controllers of the controller manager, each with its own role
/// `system:controller:<name>` bound to ServiceAccount `kube-system/<name>` (the identities
/// controllers use with `--use-service-account-credentials`).
fn controller_roles() -> Vec<(&'static str, Vec<Rule>)> {
    let ev = events_rule;
    vec![
        (
            "clusterrole-aggregation-controller",
            vec![r(
                &["escalate", "get", "list", "watch", "update", "patch"],
                &[GROUP],
                &["clusterroles"],
            )],
        ),
        (
            "cronjob-controller",
            vec![
                r(&["get", "list", "watch", "update"], &[BATCH], &["cronjobs"]),
                r(
                    &[
                        "get", "list", "watch", "create", "update", "delete", "patch",
                    ],
                    &[BATCH],
                    &["jobs"],
                ),
                r(&["update"], &[BATCH], &["cronjobs/status"]),
                r(&["update"], &[BATCH], &["cronjobs/finalizers"]),
                r(&["list", "delete"], &[CORE], &["pods"]),
                ev(),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                r(
                    &["get", "list", "watch"],
                    &[EXTENSIONS, APPS],
                    &["daemonsets"],
                ),
                r(&["update"], &[EXTENSIONS, APPS], &["daemonsets/status"]),
                r(&["update"], &[EXTENSIONS, APPS], &["daemonsets/finalizers"]),
                r(&["list", "watch"], &[CORE], &["nodes"]),
                r(
                    &["list", "watch", "create", "delete", "patch"],
                    &[CORE],
                    &["pods"],
                ),
                r(&["create"], &[CORE], &["pods/binding"]),
                r(
                    &[
                        "get", "list", "watch", "create", "delete", "update", "patch",
                    ],
                    &[APPS],
                    &["controllerrevisions"],
                ),
                ev(),
            ],
        ),
        (
            "deployment-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    &[EXTENSIONS, APPS],
                    &["deployments"],
                ),
                r(&["update"], &[EXTENSIONS, APPS], &["deployments/status"]),
                r(
                    &["update"],
                    &[EXTENSIONS, APPS],
                    &["deployments/finalizers"],
                ),
                r(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &[EXTENSIONS, APPS],
                    &["replicasets"],
                ),
                // Pods are listed only to know which ReplicaSets still have pods.
                r(&["get", "list", "watch", "update"], &[CORE], &["pods"]),
                ev(),
            ],
        ),
        (
            "disruption-controller",
            vec![
                r(
                    &["get", "list", "watch"],
                    &[EXTENSIONS, APPS],
                    &["deployments"],
                ),
                r(
                    &["get", "list", "watch"],
                    &[EXTENSIONS, APPS],
                    &["replicasets"],
                ),
                r(
                    &["get", "list", "watch"],
                    &[CORE],
                    &["replicationcontrollers"],
                ),
                r(
                    &["get", "list", "watch"],
                    &[POLICY],
                    &["poddisruptionbudgets"],
                ),
                r(&["get", "list", "watch"], &[APPS], &["statefulsets"]),
                r(&["update"], &[POLICY], &["poddisruptionbudgets/status"]),
                r(&["get"], &["*"], &["*/scale"]),
                r(&["patch", "update"], &[CORE], &["pods/status"]),
                ev(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                r(&["get", "list", "watch"], &[CORE], &["services", "pods"]),
                r(
                    &["get", "list", "create", "update", "delete"],
                    &[CORE],
                    &["endpoints"],
                ),
                r(&["create"], &[CORE], &["endpoints/restricted"]),
                ev(),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                r(
                    &["get", "list", "watch"],
                    &[CORE],
                    &["services", "pods", "nodes"],
                ),
                r(&["update"], &[CORE], &["services/finalizers"]),
                r(
                    &["get", "list", "create", "update", "delete"],
                    &[DISCOVERY],
                    &["endpointslices"],
                ),
                ev(),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![r(
                &["get", "list", "watch", "patch", "update", "delete"],
                &["*"],
                &["*"],
            )],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                r(
                    &["get", "list", "watch"],
                    &[AUTOSCALING],
                    &["horizontalpodautoscalers"],
                ),
                r(
                    &["update"],
                    &[AUTOSCALING],
                    &["horizontalpodautoscalers/status"],
                ),
                r(&["get", "update"], &["*"], &["*/scale"]),
                r(&["list"], &[CORE], &["pods"]),
                r(&["list"], &["metrics.k8s.io"], &["pods"]),
                r(&["get", "list"], &["custom.metrics.k8s.io"], &["*"]),
                r(&["get", "list"], &["external.metrics.k8s.io"], &["*"]),
                ev(),
            ],
        ),
        (
            "job-controller",
            vec![
                r(
                    &["get", "list", "watch", "update", "patch"],
                    &[BATCH],
                    &["jobs"],
                ),
                r(&["update"], &[BATCH], &["jobs/status"]),
                r(&["update"], &[BATCH], &["jobs/finalizers"]),
                r(
                    &["list", "watch", "create", "delete", "patch"],
                    &[CORE],
                    &["pods"],
                ),
                ev(),
            ],
        ),
        (
            "namespace-controller",
            vec![
                r(
                    &["get", "list", "watch", "delete"],
                    &[CORE],
                    &["namespaces"],
                ),
                r(
                    &["update"],
                    &[CORE],
                    &["namespaces/finalize", "namespaces/status"],
                ),
                r(
                    &["get", "list", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                ),
            ],
        ),
        (
            "node-controller",
            vec![
                r(
                    &["get", "list", "update", "delete", "patch"],
                    &[CORE],
                    &["nodes"],
                ),
                r(&["patch", "update"], &[CORE], &["nodes/status"]),
                r(&["patch", "update"], &[CORE], &["pods/status"]),
                r(&["list", "delete"], &[CORE], &["pods"]),
                ev(),
            ],
        ),
        (
            "persistent-volume-binder",
            vec![
                r(
                    &["get", "list", "watch", "update", "create", "delete"],
                    &[CORE],
                    &["persistentvolumes"],
                ),
                r(&["update"], &[CORE], &["persistentvolumes/status"]),
                r(
                    &["get", "list", "watch", "update"],
                    &[CORE],
                    &["persistentvolumeclaims"],
                ),
                r(&["update"], &[CORE], &["persistentvolumeclaims/status"]),
                r(
                    &["list", "watch", "get", "create", "delete"],
                    &[CORE],
                    &["pods"],
                ),
                r(&["get", "list", "watch"], &[STORAGE], &["storageclasses"]),
                r(&["watch"], &[CORE, EVENTS], &["events"]),
                ev(),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                r(&["list", "watch", "delete"], &[CORE], &["pods"]),
                r(&["get", "list"], &[CORE], &["nodes"]),
                r(&["patch"], &[CORE], &["pods/status"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    &[APPS, EXTENSIONS],
                    &["replicasets"],
                ),
                r(&["update"], &[APPS, EXTENSIONS], &["replicasets/status"]),
                r(
                    &["update"],
                    &[APPS, EXTENSIONS],
                    &["replicasets/finalizers"],
                ),
                r(
                    &["list", "watch", "patch", "create", "delete"],
                    &[CORE],
                    &["pods"],
                ),
                ev(),
            ],
        ),
        (
            "replication-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    &[CORE],
                    &["replicationcontrollers"],
                ),
                r(&["update"], &[CORE], &["replicationcontrollers/status"]),
                r(&["update"], &[CORE], &["replicationcontrollers/finalizers"]),
                r(
                    &["list", "watch", "patch", "create", "delete"],
                    &[CORE],
                    &["pods"],
                ),
                ev(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["update"], &[CORE], &["resourcequotas/status"]),
                ev(),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![r(&["create", "update"], &[CORE], &["configmaps"]), ev()],
        ),
        (
            "service-account-controller",
            vec![r(&["create"], &[CORE], &["serviceaccounts"]), ev()],
        ),
        (
            "statefulset-controller",
            vec![
                r(&["list", "watch"], &[CORE], &["pods"]),
                r(&["get", "list", "watch"], &[APPS], &["statefulsets"]),
                r(&["update"], &[APPS], &["statefulsets/status"]),
                r(&["update"], &[APPS], &["statefulsets/finalizers"]),
                r(
                    &["get", "create", "delete", "update", "patch"],
                    &[CORE],
                    &["pods"],
                ),
                r(
                    &[
                        "get", "create", "delete", "update", "patch", "list", "watch",
                    ],
                    &[APPS],
                    &["controllerrevisions"],
                ),
                r(&["get", "create"], &[CORE], &["persistentvolumeclaims"]),
                r(&["update", "delete"], &[CORE], &["persistentvolumeclaims"]),
                ev(),
            ],
        ),
        (
            "certificate-controller",
            vec![
                r(
                    &["get", "list", "watch", "delete"],
                    &[CERTIFICATES],
                    &["certificatesigningrequests"],
                ),
                r(
                    &["update"],
                    &[CERTIFICATES],
                    &[
                        "certificatesigningrequests/status",
                        "certificatesigningrequests/approval",
                    ],
                ),
                Rule::new(&["approve"])
                    .groups(&[CERTIFICATES])
                    .resources(&["signers"])
                    .names(&[
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ]),
                Rule::new(&["sign"])
                    .groups(&[CERTIFICATES])
                    .resources(&["signers"])
                    .names(&[
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ]),
                r(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
                ev(),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![
                r(&["get", "list", "watch", "delete"], &[BATCH], &["jobs"]),
                ev(),
            ],
        ),
        (
            "ttl-controller",
            vec![
                r(&["update", "patch", "list", "watch"], &[CORE], &["nodes"]),
                ev(),
            ],
        ),
    ]
}

/// Approver roles for the built-in signers of certificates.k8s.io.
fn certificate_roles() -> Vec<Value> {
    let csr = |name: &str, verbs: &[&str], resource: &str| {
        cluster_role(name, vec![r(verbs, &[CERTIFICATES], &[resource])])
    };
    let approver = |name: &str, signer: &str| {
        cluster_role(
            name,
            vec![Rule::new(&["approve"])
                .groups(&[CERTIFICATES])
                .resources(&["signers"])
                .names(&[signer])],
        )
    };
    vec![
        csr(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &["create"],
            "certificatesigningrequests/nodeclient",
        ),
        csr(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &["create"],
            "certificatesigningrequests/selfnodeclient",
        ),
        approver(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            "kubernetes.io/kube-apiserver-client",
        ),
        approver(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        approver(
            "system:certificates.k8s.io:kubelet-serving-approver",
            "kubernetes.io/kubelet-serving",
        ),
        approver(
            "system:certificates.k8s.io:legacy-unknown-approver",
            "kubernetes.io/legacy-unknown",
        ),
    ]
}

/// The aggregate-to-view rules: read access to the namespaced resources of the built-in
/// groups, except Secrets and other escalating ones.
fn view_rules() -> Vec<Rule> {
    vec![
        r(
            READ,
            &[CORE],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        r(
            READ,
            &[CORE],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        // Reading namespaces through a RoleBinding reads only that namespace: a way to
        // learn which namespaces one has access to.
        r(READ, &[CORE], &["namespaces"]),
        r(READ, &[DISCOVERY], &["endpointslices"]),
        r(
            READ,
            &[APPS],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        r(
            READ,
            &[AUTOSCALING],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        r(
            READ,
            &[BATCH],
            &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
        ),
        r(
            READ,
            &[EXTENSIONS],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        r(
            READ,
            &[POLICY],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        r(
            READ,
            &[NETWORKING],
            &["networkpolicies", "ingresses", "ingresses/status"],
        ),
    ]
}

/// The aggregate-to-edit rules: writing the namespaced workload resources, Secrets
/// included, but not roles, bindings, quotas or limits.
fn edit_rules() -> Vec<Rule> {
    vec![
        r(&["impersonate"], &[CORE], &["serviceaccounts"]),
        r(
            WRITE,
            &[CORE],
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        r(&["create"], &[CORE], &["pods/eviction"]),
        r(
            WRITE,
            &[CORE],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        r(&["create"], &[CORE], &["serviceaccounts/token"]),
        r(
            WRITE,
            &[APPS],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        r(WRITE, &[AUTOSCALING], &["horizontalpodautoscalers"]),
        r(WRITE, &[BATCH], &["jobs", "cronjobs"]),
        r(
            WRITE,
            &[EXTENSIONS],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        r(WRITE, &[POLICY], &["poddisruptionbudgets"]),
        r(WRITE, &[NETWORKING], &["networkpolicies", "ingresses"]),
        // Reading what can escalate (Secrets, exec, proxies) is edit's, not view's.
        r(
            READ,
            &[CORE],
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
    ]
}

/// The default ClusterRoles, labelled `kubernetes.io/bootstrapping: rbac-defaults` and
/// annotated `rbac.authorization.kubernetes.io/autoupdate: "true"`. admin, edit and view
/// are aggregated: their rules come from the `system:aggregate-to-*` roles (and any role a
/// user labels `rbac.authorization.k8s.io/aggregate-to-<name>: "true"`); edit aggregates
/// into admin and view into edit, so admin ⊇ edit ⊇ view.
pub fn bootstrap_cluster_roles() -> Vec<Value> {
    let discovery_urls = &[
        "/livez",
        "/readyz",
        "/healthz",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
    ];
    let public_info_urls = &["/livez", "/readyz", "/healthz", "/version", "/version/"];
    let mut roles = vec![
        cluster_role(
            "cluster-admin",
            vec![r(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role("system:discovery", vec![urls(&["get"], discovery_urls)]),
        cluster_role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &[AUTHZ],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(&["create"], &[AUTHN], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(&["get"], public_info_urls)],
        ),
        aggregated_cluster_role("admin", &[]),
        aggregated_cluster_role("edit", &[(&aggregate_label("admin"), "true")]),
        aggregated_cluster_role("view", &[(&aggregate_label("edit"), "true")]),
        labelled_cluster_role(
            "system:aggregate-to-admin",
            &[(&aggregate_label("admin"), "true")],
            vec![
                r(&["create"], &[AUTHZ], &["localsubjectaccessreviews"]),
                r(READ_WRITE, &[GROUP], &["rolebindings", "roles"]),
            ],
        ),
        labelled_cluster_role(
            "system:aggregate-to-edit",
            &[(&aggregate_label("edit"), "true")],
            edit_rules(),
        ),
        labelled_cluster_role(
            "system:aggregate-to-view",
            &[(&aggregate_label("view"), "true")],
            view_rules(),
        ),
        cluster_role(
            "system:heapster",
            vec![
                r(READ, &[CORE], &["events", "pods", "nodes", "namespaces"]),
                r(READ, &[EXTENSIONS], &["deployments"]),
            ],
        ),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:node-problem-detector",
            vec![
                r(&["get"], &[CORE], &["nodes"]),
                r(&["patch"], &[CORE], &["nodes/status"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                r(&["get", "list", "watch", "proxy"], &[CORE], &["nodes"]),
                r(
                    &["*"],
                    &[CORE],
                    &["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log"],
                ),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![r(
                &["create", "get", "list", "watch"],
                &[CERTIFICATES],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                r(&["create"], &[AUTHN], &["tokenreviews"]),
                r(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role(
            "system:kube-aggregator",
            vec![r(READ, &[CORE], &["services", "endpoints"])],
        ),
        cluster_role(
            "system:kube-controller-manager",
            vec![
                events_rule(),
                // Leader election.
                r(&["create"], &[COORDINATION], &["leases"]),
                Rule::new(&["get", "update"])
                    .groups(&[COORDINATION])
                    .resources(&["leases"])
                    .names(&["kube-controller-manager"]),
                r(&["create"], &[CORE], &["secrets", "serviceaccounts"]),
                r(&["delete"], &[CORE], &["secrets"]),
                r(
                    &["get"],
                    &[CORE],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                r(&["update"], &[CORE], &["secrets", "serviceaccounts"]),
                r(&["create"], &[AUTHN], &["tokenreviews"]),
                r(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
                // Shared informers watch everything.
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["create"], &[CORE], &["serviceaccounts/token"]),
            ],
        ),
        cluster_role(
            "system:kube-dns",
            vec![
                r(&["list", "watch"], &[CORE], &["endpoints", "services"]),
                r(&["list", "watch"], &[DISCOVERY], &["endpointslices"]),
            ],
        ),
        cluster_role(
            "system:persistent-volume-provisioner",
            vec![
                r(
                    &["get", "list", "watch", "create", "delete"],
                    &[CORE],
                    &["persistentvolumes"],
                ),
                r(
                    &["get", "list", "watch", "update"],
                    &[CORE],
                    &["persistentvolumeclaims"],
                ),
                r(READ, &[STORAGE], &["storageclasses"]),
                r(&["watch"], &[CORE, EVENTS], &["events"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:kube-scheduler",
            vec![
                events_rule(),
                r(&["create"], &[COORDINATION], &["leases"]),
                Rule::new(&["get", "update"])
                    .groups(&[COORDINATION])
                    .resources(&["leases"])
                    .names(&["kube-scheduler"]),
                r(READ, &[CORE], &["nodes"]),
                r(&["get", "list", "watch", "delete"], &[CORE], &["pods"]),
                r(&["create"], &[CORE], &["pods/binding", "bindings"]),
                r(&["patch", "update"], &[CORE], &["pods/status"]),
                r(READ, &[CORE], &["replicationcontrollers", "services"]),
                r(READ, &[APPS, EXTENSIONS], &["replicasets"]),
                r(READ, &[APPS], &["statefulsets"]),
                r(READ, &[POLICY], &["poddisruptionbudgets"]),
                r(
                    READ,
                    &[CORE],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["create"], &[AUTHN], &["tokenreviews"]),
                r(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
                r(
                    READ,
                    &[STORAGE],
                    &[
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                        "storageclasses",
                    ],
                ),
                r(READ, &[CORE], &["namespaces"]),
            ],
        ),
        cluster_role(
            "system:volume-scheduler",
            vec![
                r(
                    &["get", "list", "watch", "update", "patch"],
                    &[CORE],
                    &["persistentvolumes"],
                ),
                r(READ, &[STORAGE], &["storageclasses"]),
                r(
                    &["get", "list", "watch", "update", "patch"],
                    &[CORE],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        cluster_role(
            "system:node-proxier",
            vec![
                r(&["list", "watch"], &[CORE], &["services", "endpoints"]),
                r(&["get", "list", "watch"], &[CORE], &["nodes"]),
                r(&["list", "watch"], &[DISCOVERY], &["endpointslices"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
    ];
    roles.extend(certificate_roles());
    for (name, rules) in controller_roles() {
        roles.push(cluster_role(&format!("system:controller:{name}"), rules));
    }
    roles
}

/// What a node agent needs: register and update its Node, run the pods bound to it, read
/// what they mount, report status and events.
fn node_rules() -> Vec<Rule> {
    vec![
        // Access checks; these creates mutate nothing.
        r(&["create"], &[AUTHN], &["tokenreviews"]),
        r(
            &["create"],
            &[AUTHZ],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        // Services for pods' environment variables.
        r(READ, &[CORE], &["services"]),
        r(&["create", "get", "list", "watch"], &[CORE], &["nodes"]),
        r(&["update", "patch"], &[CORE], &["nodes/status"]),
        r(&["update", "patch"], &[CORE], &["nodes"]),
        events_rule(),
        r(READ, &[CORE], &["pods"]),
        // Mirror pods of static pods.
        r(&["create", "delete"], &[CORE], &["pods"]),
        r(&["update", "patch"], &[CORE], &["pods/status"]),
        r(&["create"], &[CORE], &["pods/eviction"]),
        r(READ, &[CORE], &["secrets", "configmaps"]),
        r(
            &["get"],
            &[CORE],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        r(&["get"], &[CORE], &["endpoints"]),
        r(
            &["update", "patch"],
            &[CORE],
            &["persistentvolumeclaims/status"],
        ),
        r(&["create"], &[CORE], &["serviceaccounts/token"]),
        r(
            &["create", "get", "list", "watch"],
            &[CERTIFICATES],
            &["certificatesigningrequests"],
        ),
        r(
            &["get", "create", "update", "patch", "delete"],
            &[COORDINATION],
            &["leases"],
        ),
        r(&["get"], &[STORAGE], &["volumeattachments"]),
        r(READ, &[STORAGE], &["csidrivers"]),
        r(
            &["get", "create", "update", "patch", "delete"],
            &[STORAGE],
            &["csinodes"],
        ),
        r(READ, &[NODE], &["runtimeclasses"]),
    ]
}

/// The default ClusterRoleBindings (named after their ClusterRole).
///
/// `system:node` is bound to the group `system:nodes`, as Kubernetes did before its Node
/// authorizer: skiff has no Node authorizer yet, so this binding is what lets agents
/// (`system:node:<name>` in `system:nodes`) run. Kubernetes today creates it without
/// subjects and authorizes nodes in the Node authorizer instead.
pub fn bootstrap_cluster_role_bindings() -> Vec<Value> {
    let mut bindings = vec![
        cluster_binding("cluster-admin", vec![group(super::SUPERUSER_GROUP)]),
        cluster_binding("system:monitoring", vec![group("system:monitoring")]),
        cluster_binding("system:discovery", vec![group("system:authenticated")]),
        cluster_binding("system:basic-user", vec![group("system:authenticated")]),
        cluster_binding(
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        cluster_binding("system:node-proxier", vec![user("system:kube-proxy")]),
        cluster_binding(
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        cluster_binding(
            "system:kube-dns",
            vec![service_account("kube-system", "kube-dns")],
        ),
        cluster_binding("system:kube-scheduler", vec![user("system:kube-scheduler")]),
        cluster_binding(
            "system:volume-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        cluster_binding("system:node", vec![group("system:nodes")]),
        cluster_binding(
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
    ];
    for (name, _) in controller_roles() {
        bindings.push(cluster_binding(
            &format!("system:controller:{name}"),
            vec![service_account("kube-system", name)],
        ));
    }
    bindings
}

/// The default Roles of `kube-system` and `kube-public`.
pub fn bootstrap_roles() -> Vec<Value> {
    let role =
        |ns: &str, name: &str, rules: Vec<Rule>| role_object("Role", name, Some(ns), &[], rules);
    vec![
        role(
            "kube-system",
            "extension-apiserver-authentication-reader",
            vec![Rule::new(&["get", "list", "watch"])
                .groups(&[CORE])
                .resources(&["configmaps"])
                .names(&["extension-apiserver-authentication"])],
        ),
        role(
            "kube-system",
            "system::leader-locking-kube-controller-manager",
            vec![
                r(&["watch"], &[CORE], &["configmaps"]),
                Rule::new(&["get", "update"])
                    .groups(&[CORE])
                    .resources(&["configmaps"])
                    .names(&["kube-controller-manager"]),
            ],
        ),
        role(
            "kube-system",
            "system::leader-locking-kube-scheduler",
            vec![
                r(&["watch"], &[CORE], &["configmaps"]),
                Rule::new(&["get", "update"])
                    .groups(&[CORE])
                    .resources(&["configmaps"])
                    .names(&["kube-scheduler"]),
            ],
        ),
        role(
            "kube-system",
            "system:controller:bootstrap-signer",
            vec![r(READ, &[CORE], &["secrets"])],
        ),
        role(
            "kube-system",
            "system:controller:cloud-provider",
            vec![r(
                &["create", "get", "list", "watch"],
                &[CORE],
                &["configmaps"],
            )],
        ),
        role(
            "kube-system",
            "system:controller:token-cleaner",
            vec![
                r(&["delete", "get", "list", "watch"], &[CORE], &["secrets"]),
                events_rule(),
            ],
        ),
        role(
            "kube-public",
            "system:controller:bootstrap-signer",
            vec![
                r(READ, &[CORE], &["configmaps"]),
                Rule::new(&["update"])
                    .groups(&[CORE])
                    .resources(&["configmaps"])
                    .names(&["cluster-info"]),
                events_rule(),
            ],
        ),
    ]
}

/// The default RoleBindings of `kube-system` and `kube-public`.
pub fn bootstrap_role_bindings() -> Vec<Value> {
    let rb = |ns: &str, name: &str, role: &str, subjects: Vec<Value>| {
        binding("RoleBinding", name, Some(ns), "Role", role, subjects)
    };
    vec![
        rb(
            "kube-system",
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            vec![
                user("system:kube-controller-manager"),
                user("system:kube-scheduler"),
            ],
        ),
        rb(
            "kube-system",
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            vec![
                service_account("kube-system", "kube-controller-manager"),
                user("system:kube-controller-manager"),
            ],
        ),
        rb(
            "kube-system",
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            vec![
                service_account("kube-system", "kube-scheduler"),
                user("system:kube-scheduler"),
            ],
        ),
        rb(
            "kube-system",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account("kube-system", "bootstrap-signer")],
        ),
        rb(
            "kube-system",
            "system:controller:cloud-provider",
            "system:controller:cloud-provider",
            vec![service_account("kube-system", "cloud-provider")],
        ),
        rb(
            "kube-system",
            "system:controller:token-cleaner",
            "system:controller:token-cleaner",
            vec![service_account("kube-system", "token-cleaner")],
        ),
        rb(
            "kube-public",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account("kube-system", "bootstrap-signer")],
        ),
    ]
}

/// Merges `wanted` labels or annotations under `existing` ones (existing values win).
fn merge_map(existing: &mut Value, wanted: &Value, field: &str) {
    let Some(w) = wanted
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
    else {
        return;
    };
    let Some(meta) = existing.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let target = meta
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in w {
        t.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Start-up reconciliation of one bootstrap object (any of the four kinds): `wanted` when
/// it does not exist; `None` when nothing needs writing or `existing` is annotated
/// `rbac.authorization.kubernetes.io/autoupdate: "false"`; otherwise `existing` plus what
/// it lacks — labels and annotations, rules not covered (one rule per missing permission),
/// aggregation selectors, binding subjects. A binding whose `roleRef` differs comes back
/// with the wanted `roleRef`: since `roleRef` is immutable, the caller must delete and
/// recreate it (kube does the same).
pub fn reconcile(existing: Option<&Value>, wanted: &Value) -> Option<Value> {
    let Some(existing) = existing else {
        return Some(wanted.clone());
    };
    let autoupdate = existing
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE))
        .and_then(Value::as_str);
    if autoupdate == Some("false") {
        return None;
    }
    let mut out = existing.clone();
    merge_map(&mut out, wanted, "labels");
    merge_map(&mut out, wanted, "annotations");
    if wanted.get("roleRef").is_some() {
        if out.get("roleRef") != wanted.get("roleRef") {
            out["roleRef"] = wanted["roleRef"].clone();
        }
        let mut subjects: Vec<Value> = out
            .get("subjects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let same = |a: &Value, b: &Value| {
            ["kind", "name", "namespace"].iter().all(|k| {
                a.get(k).and_then(Value::as_str).unwrap_or("")
                    == b.get(k).and_then(Value::as_str).unwrap_or("")
            })
        };
        for s in wanted
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !subjects.iter().any(|e| same(e, s)) {
                subjects.push(s.clone());
            }
        }
        if !subjects.is_empty() || out.get("subjects").is_some() {
            out["subjects"] = Value::Array(subjects);
        }
    } else {
        if let Err(missing) = covers(&rules_of(existing), &rules_of(wanted)) {
            let mut rules: Vec<Value> = out
                .get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            rules.extend(missing.iter().map(Rule::to_value));
            out["rules"] = Value::Array(rules);
        }
        if let Some(want_sel) = wanted
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        {
            let mut selectors: Vec<Value> = out
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for s in want_sel {
                if !selectors.contains(s) {
                    selectors.push(s.clone());
                }
            }
            out["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
        }
    }
    (out != *existing).then_some(out)
}
