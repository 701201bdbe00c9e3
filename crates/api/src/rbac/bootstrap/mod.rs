//! The default policy the API server creates at start-up (kube's bootstrap policy, written
//! for the components skiff has), and its auto-reconciliation: missing rules and subjects
//! are added on every start, additions made by users are kept, and an object annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"` is left alone.

use serde_json::{json, Map, Value};

use super::{Rule, GROUP};

mod controllers;
mod reconcile;

use controllers::{certificate_roles, controller_roles};
pub use reconcile::reconcile;

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
    let mut b = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": kind,
        "metadata": metadata(name, ns, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role},
    });
    // kube leaves an empty subject list out (the `system:node` binding has none).
    if !subjects.is_empty() {
        b["subjects"] = Value::Array(subjects);
    }
    b
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
                    &[
                        "nodes/proxy",
                        "nodes/metrics",
                        "nodes/spec",
                        "nodes/stats",
                        "nodes/log",
                    ],
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
    // skiff's agents provision local-path volumes (k3s runs a separate provisioner): they
    // create the volume of a claim their pod mounts, watch volumes and delete the released
    // ones they made. The claims themselves they read through the Node authorizer (only
    // those of their pods) and never write (NodeRestriction allows a node claim status
    // only).
    roles.push(cluster_role(
        LOCAL_PATH_PROVISIONER,
        vec![
            r(
                &["get", "list", "watch", "create", "delete"],
                &[CORE],
                &["persistentvolumes"],
            ),
            r(READ, &["storage.k8s.io"], &["storageclasses"]),
            events_rule(),
        ],
    ));
    roles
}

/// The ClusterRole (and its binding to `system:nodes`) of the agents' local-path provisioner.
pub const LOCAL_PATH_PROVISIONER: &str = "skiff:local-path-provisioner";

/// What a kubelet needs (kube's `NodeRules()`): the rules of the `system:node`
/// ClusterRole, which no binding grants; the Node authorizer applies them to every node
/// for what it does not decide itself (`skiff_api::node_authz`).
pub fn node_rules() -> Vec<Rule> {
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
        // The Node authorizer and NodeRestriction limit these to the node's own Node.
        r(&["create", "get", "list", "watch"], &[CORE], &["nodes"]),
        r(&["update", "patch"], &[CORE], &["nodes/status"]),
        r(&["update", "patch"], &[CORE], &["nodes"]),
        r(&["create", "update", "patch"], &[CORE], &["events"]),
        r(READ, &[CORE], &["pods"]),
        // Mirror pods of static pods.
        r(&["create", "delete"], &[CORE], &["pods"]),
        r(&["update", "patch"], &[CORE], &["pods/status"]),
        r(&["create"], &[CORE], &["pods/eviction"]),
        // The Node authorizer limits these to what the node's pods refer to.
        r(READ, &[CORE], &["secrets", "configmaps"]),
        r(
            &["get"],
            &[CORE],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        r(&["get"], &[CORE], &["endpoints"]),
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
        r(&["create"], &[CORE], &["serviceaccounts/token"]),
        r(
            &["get", "update", "patch"],
            &[CORE],
            &["persistentvolumeclaims/status"],
        ),
        r(READ, &[STORAGE], &["csidrivers"]),
        r(
            &["get", "create", "update", "patch", "delete"],
            &[STORAGE],
            &["csinodes"],
        ),
        r(READ, &[NODE], &["runtimeclasses"]),
    ]
}

/// The subject skiff bound `system:node` to before it had a Node authorizer (group
/// `system:nodes`): start-up reconciliation removes it (see [`reconcile`]), or every node
/// would keep every right the Node authorizer is there to scope.
pub const RETIRED_NODE_SUBJECT: &str = "system:nodes";

/// The default ClusterRoleBindings (named after their ClusterRole).
///
/// `system:node` is bound to no one, as in Kubernetes since its Node authorizer: nodes get
/// those rights from the Node authorizer, scoped to what each node needs.
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
        cluster_binding("system:node", vec![]),
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
    // skiff's agent runs the service proxy and the cluster DNS with its node's
    // credentials, so nodes also hold what kube-proxy and CoreDNS hold.
    for (name, role) in [
        ("skiff:node-proxier", "system:node-proxier"),
        ("skiff:node-dns", "system:kube-dns"),
        (LOCAL_PATH_PROVISIONER, LOCAL_PATH_PROVISIONER),
    ] {
        let mut b = cluster_binding(role, vec![group("system:nodes")]);
        b["metadata"]["name"] = serde_json::json!(name);
        bindings.push(b);
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
