//! The roles of the controller manager's controllers and of the certificate approvers.

use super::{cluster_role, events_rule, r, Rule};
use super::{APPS, AUTHZ, AUTOSCALING, BATCH, CERTIFICATES, CORE, DISCOVERY, EVENTS, EXTENSIONS};
use super::{POLICY, STORAGE};
use crate::rbac::GROUP;
use serde_json::Value;

/// The controllers of the controller manager, each with its own role
/// `system:controller:<name>` bound to ServiceAccount `kube-system/<name>` (the identities
/// controllers use with `--use-service-account-credentials`).
pub(super) fn controller_roles() -> Vec<(&'static str, Vec<Rule>)> {
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
                r(&["list", "get", "delete"], &[CORE], &["pods"]),
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
            vec![
                r(
                    &["get", "list", "watch", "patch", "update", "delete"],
                    &["*"],
                    &["*"],
                ),
                ev(),
            ],
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
                r(
                    &["get", "create", "update", "delete"],
                    &[CORE],
                    &["endpoints"],
                ),
                r(&["get", "create", "delete"], &[CORE], &["services"]),
                r(&["get"], &[CORE], &["secrets"]),
                r(&["get", "list"], &[CORE], &["nodes"]),
                r(&["watch"], &[CORE, EVENTS], &["events"]),
                ev(),
            ],
        ),
        (
            "pv-protection-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    &[CORE],
                    &["persistentvolumes"],
                ),
                ev(),
            ],
        ),
        (
            "pvc-protection-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    &[CORE],
                    &["persistentvolumeclaims"],
                ),
                r(&["list", "watch", "get"], &[CORE], &["pods"]),
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
                    .names(&["kubernetes.io/kube-apiserver-client-kubelet"]),
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
pub(super) fn certificate_roles() -> Vec<Value> {
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
