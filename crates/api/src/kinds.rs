//! The resources skiff serves: one static table that discovery, routing, OpenAPI and the
//! storage layout are all derived from, so they cannot disagree.

/// One served resource (a kind in one group/version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group; `""` is the legacy core group served under `/api/v1`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural resource name used in URLs (`pods`).
    pub plural: &'static str,
    /// Lower-case singular name (`pod`).
    pub singular: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `<plural>/<name>/<sub>`.
    pub subresources: &'static [&'static str],
    /// OpenAPI definition name (`io.k8s.api.core.v1.Pod`).
    pub openapi_name: &'static str,
}

impl Kind {
    /// `v1` for the core group, `apps/v1` otherwise — the object's `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `verb` (Kubernetes vocabulary: get, list, watch, create, …) is allowed.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

/// Every verb of a full CRUD resource, in the order kube-apiserver lists them.
pub const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deleted as a collection.
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// Read-only views (the resource metrics API).
const GET_LIST: &[&str] = &["get", "list"];
/// Review resources are create-only.
const CREATE_ONLY: &[&str] = &["create"];
const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

#[allow(clippy::too_many_arguments)]
const fn k(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    openapi_name: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        verbs,
        short_names,
        categories,
        subresources,
        openapi_name,
    }
}

/// All served kinds, grouped by group/version in discovery order.
pub static KINDS: &[Kind] = &[
    // core/v1
    k(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        CRUD,
        &["cm"],
        NONE,
        NONE,
        "io.k8s.api.core.v1.ConfigMap",
    ),
    k(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        CRUD,
        &["ep"],
        NONE,
        NONE,
        "io.k8s.api.core.v1.Endpoints",
    ),
    k(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        CRUD,
        &["ev"],
        NONE,
        NONE,
        "io.k8s.api.core.v1.Event",
    ),
    k(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        "limitrange",
        true,
        CRUD,
        &["limits"],
        NONE,
        NONE,
        "io.k8s.api.core.v1.LimitRange",
    ),
    k(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        NS_VERBS,
        &["ns"],
        NONE,
        &["status", "finalize"],
        "io.k8s.api.core.v1.Namespace",
    ),
    k(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        CRUD,
        &["no"],
        NONE,
        &["status", "proxy"],
        "io.k8s.api.core.v1.Node",
    ),
    k(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        CRUD,
        &["pvc"],
        NONE,
        &["status"],
        "io.k8s.api.core.v1.PersistentVolumeClaim",
    ),
    k(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        CRUD,
        &["pv"],
        NONE,
        &["status"],
        "io.k8s.api.core.v1.PersistentVolume",
    ),
    k(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        CRUD,
        &["po"],
        ALL,
        &[
            "attach",
            "binding",
            "eviction",
            "exec",
            "log",
            "portforward",
            "status",
        ],
        "io.k8s.api.core.v1.Pod",
    ),
    k(
        "",
        "v1",
        "PodTemplate",
        "podtemplates",
        "podtemplate",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.core.v1.PodTemplate",
    ),
    k(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
        CRUD,
        &["rc"],
        ALL,
        &["scale", "status"],
        "io.k8s.api.core.v1.ReplicationController",
    ),
    k(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        true,
        CRUD,
        &["quota"],
        NONE,
        &["status"],
        "io.k8s.api.core.v1.ResourceQuota",
    ),
    k(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.core.v1.Secret",
    ),
    k(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        CRUD,
        &["sa"],
        NONE,
        &["token"],
        "io.k8s.api.core.v1.ServiceAccount",
    ),
    k(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        CRUD,
        &["svc"],
        ALL,
        &["status", "proxy"],
        "io.k8s.api.core.v1.Service",
    ),
    // apps/v1
    k(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.apps.v1.ControllerRevision",
    ),
    k(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        CRUD,
        &["ds"],
        ALL,
        &["status"],
        "io.k8s.api.apps.v1.DaemonSet",
    ),
    k(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        CRUD,
        &["deploy"],
        ALL,
        &["scale", "status"],
        "io.k8s.api.apps.v1.Deployment",
    ),
    k(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        CRUD,
        &["rs"],
        ALL,
        &["scale", "status"],
        "io.k8s.api.apps.v1.ReplicaSet",
    ),
    k(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        CRUD,
        &["sts"],
        ALL,
        &["scale", "status"],
        "io.k8s.api.apps.v1.StatefulSet",
    ),
    // authentication.k8s.io/v1
    k(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        "tokenreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.authentication.v1.TokenReview",
    ),
    // authorization.k8s.io/v1
    k(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
    ),
    // autoscaling/v2 (preferred) and v1
    k(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        CRUD,
        &["hpa"],
        ALL,
        &["status"],
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
    ),
    k(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        CRUD,
        &["hpa"],
        ALL,
        &["status"],
        "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler",
    ),
    // batch/v1
    k(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        CRUD,
        &["cj"],
        ALL,
        &["status"],
        "io.k8s.api.batch.v1.CronJob",
    ),
    k(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        CRUD,
        NONE,
        ALL,
        &["status"],
        "io.k8s.api.batch.v1.Job",
    ),
    // certificates.k8s.io/v1
    k(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "certificatesigningrequest",
        false,
        CRUD,
        &["csr"],
        NONE,
        &["status", "approval"],
        "io.k8s.api.certificates.v1.CertificateSigningRequest",
    ),
    // coordination.k8s.io/v1
    k(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.coordination.v1.Lease",
    ),
    // discovery.k8s.io/v1
    k(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.discovery.v1.EndpointSlice",
    ),
    // events.k8s.io/v1
    k(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        true,
        CRUD,
        &["ev"],
        NONE,
        NONE,
        "io.k8s.api.events.v1.Event",
    ),
    // policy/v1
    k(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        CRUD,
        &["pdb"],
        NONE,
        &["status"],
        "io.k8s.api.policy.v1.PodDisruptionBudget",
    ),
    // scheduling.k8s.io/v1
    k(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        false,
        CRUD,
        &["pc"],
        NONE,
        NONE,
        "io.k8s.api.scheduling.v1.PriorityClass",
    ),
    // storage.k8s.io/v1
    k(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        CRUD,
        &["sc"],
        NONE,
        NONE,
        "io.k8s.api.storage.v1.StorageClass",
    ),
    k(
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        "csidrivers",
        "csidriver",
        false,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.storage.v1.CSIDriver",
    ),
    k(
        "storage.k8s.io",
        "v1",
        "CSINode",
        "csinodes",
        "csinode",
        false,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.storage.v1.CSINode",
    ),
    k(
        "storage.k8s.io",
        "v1",
        "CSIStorageCapacity",
        "csistoragecapacities",
        "csistoragecapacity",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.storage.v1.CSIStorageCapacity",
    ),
    k(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        "volumeattachment",
        false,
        CRUD,
        NONE,
        NONE,
        &["status"],
        "io.k8s.api.storage.v1.VolumeAttachment",
    ),
    // admissionregistration.k8s.io/v1
    k(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        false,
        CRUD,
        NONE,
        &["api-extensions"],
        NONE,
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
    ),
    k(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        false,
        CRUD,
        NONE,
        &["api-extensions"],
        &["status"],
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy",
    ),
    k(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        false,
        CRUD,
        NONE,
        &["api-extensions"],
        NONE,
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding",
    ),
    k(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        false,
        CRUD,
        NONE,
        &["api-extensions"],
        NONE,
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
    ),
    // apiextensions.k8s.io/v1
    k(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        CRUD,
        &["crd", "crds"],
        &["api-extensions"],
        &["status"],
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    ),
    // apiregistration.k8s.io/v1
    k(
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
        "apiservice",
        false,
        CRUD,
        NONE,
        &["api-extensions"],
        &["status"],
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService",
    ),
    // authentication.k8s.io/v1
    k(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.authentication.v1.SelfSubjectReview",
    ),
    // authorization.k8s.io/v1
    k(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true,
        CREATE_ONLY,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.authorization.v1.LocalSubjectAccessReview",
    ),
    k(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
    ),
    k(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
        false,
        CREATE_ONLY,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.authorization.v1.SubjectAccessReview",
    ),
    // flowcontrol.apiserver.k8s.io/v1
    k(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "FlowSchema",
        "flowschemas",
        "flowschema",
        false,
        CRUD,
        NONE,
        NONE,
        &["status"],
        "io.k8s.api.flowcontrol.v1.FlowSchema",
    ),
    k(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        "prioritylevelconfiguration",
        false,
        CRUD,
        NONE,
        NONE,
        &["status"],
        "io.k8s.api.flowcontrol.v1.PriorityLevelConfiguration",
    ),
    // networking.k8s.io/v1
    k(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.networking.v1.IngressClass",
    ),
    k(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        CRUD,
        &["ing"],
        NONE,
        &["status"],
        "io.k8s.api.networking.v1.Ingress",
    ),
    k(
        "networking.k8s.io",
        "v1",
        "IPAddress",
        "ipaddresses",
        "ipaddress",
        false,
        CRUD,
        &["ip"],
        NONE,
        NONE,
        "io.k8s.api.networking.v1.IPAddress",
    ),
    k(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        CRUD,
        &["netpol"],
        NONE,
        NONE,
        "io.k8s.api.networking.v1.NetworkPolicy",
    ),
    k(
        "networking.k8s.io",
        "v1",
        "ServiceCIDR",
        "servicecidrs",
        "servicecidr",
        false,
        CRUD,
        NONE,
        NONE,
        &["status"],
        "io.k8s.api.networking.v1.ServiceCIDR",
    ),
    // node.k8s.io/v1
    k(
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        "runtimeclasses",
        "runtimeclass",
        false,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.node.v1.RuntimeClass",
    ),
    // rbac.authorization.k8s.io/v1
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
    ),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.rbac.v1.ClusterRole",
    ),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.rbac.v1.RoleBinding",
    ),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
        CRUD,
        NONE,
        NONE,
        NONE,
        "io.k8s.api.rbac.v1.Role",
    ),
    // metrics.k8s.io/v1beta1: the resource metrics API (what metrics-server adds), served
    // from the API server's scraper, not stored.
    k(
        "metrics.k8s.io",
        "v1beta1",
        "NodeMetrics",
        "nodes",
        "",
        false,
        GET_LIST,
        NONE,
        NONE,
        NONE,
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.NodeMetrics",
    ),
    k(
        "metrics.k8s.io",
        "v1beta1",
        "PodMetrics",
        "pods",
        "",
        true,
        GET_LIST,
        NONE,
        NONE,
        NONE,
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics",
    ),
];

/// Group/versions in discovery order; the first version listed for a group is preferred.
/// Built-in groups come first, then the custom resources' groups (see [`set_custom`]).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let custom = custom_kinds();
    for k in KINDS.iter().chain(custom.iter().copied()) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

/// Kinds served in one group/version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Kind> + 'a {
    let custom = custom_kinds();
    KINDS
        .iter()
        .chain(custom)
        .filter(move |k| k.group == group && k.version == version)
}

/// Looks a resource up by its URL coordinates.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    // The most distinctive part first: the watch cache and routing look kinds up on
    // every request and event.
    let hit = |k: &&Kind| k.plural == plural && k.group == group && k.version == version;
    KINDS.iter().find(hit).or_else(|| find_custom(hit))
}

/// Looks a kind up by an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Kind> {
    let (group, version) = split_api_version(api_version);
    let hit = |k: &&Kind| k.kind == kind && k.group == group && k.version == version;
    KINDS.iter().find(hit).or_else(|| find_custom(hit))
}

/// Whether `kind` is a built-in kind (not one a CustomResourceDefinition added): an
/// address inside the static table (asked on every write).
pub fn is_builtin(kind: &Kind) -> bool {
    KINDS.as_ptr_range().contains(&std::ptr::from_ref(kind))
}

/// One served version of a custom resource, as its CustomResourceDefinition describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomKind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<String>,
    /// Objects are stored in this version (the others convert to it: conversion None).
    pub storage: bool,
}

/// The custom kinds served now, by the CustomResourceDefinition that defines them.
static CUSTOM: std::sync::RwLock<Vec<(String, Vec<&'static Kind>)>> =
    std::sync::RwLock::new(Vec::new());
/// Every custom kind ever registered, so registering the same definition again (each API
/// server re-reads every CRD on start and on each change) reuses it instead of leaking.
static POOL: std::sync::Mutex<Vec<&'static Kind>> = std::sync::Mutex::new(Vec::new());

/// The first custom kind `hit` accepts, looked for under the lock (no list is built).
fn find_custom(hit: impl Fn(&&'static Kind) -> bool) -> Option<&'static Kind> {
    let custom = CUSTOM.read().unwrap_or_else(|e| e.into_inner());
    custom
        .iter()
        .flat_map(|(_, ks)| ks.iter())
        .find(|k| hit(k))
        .copied()
}

fn custom_kinds() -> Vec<&'static Kind> {
    let custom = CUSTOM.read().unwrap_or_else(|e| e.into_inner());
    custom
        .iter()
        .flat_map(|(_, ks)| ks.iter().copied())
        .collect()
}

fn intern(s: &str) -> &'static str {
    static STRINGS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut set = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = set.get(s) {
        return s;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

fn intern_list(l: &[String]) -> &'static [&'static str] {
    if l.is_empty() {
        return NONE;
    }
    Box::leak(
        l.iter()
            .map(|s| intern(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn pooled(c: &CustomKind) -> &'static Kind {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let same = |k: &&&Kind| {
        k.group == c.group
            && k.version == c.version
            && k.kind == c.kind
            && k.plural == c.plural
            && k.singular == c.singular
            && k.namespaced == c.namespaced
            && k.short_names
                .iter()
                .copied()
                .eq(c.short_names.iter().map(String::as_str))
            && k.categories
                .iter()
                .copied()
                .eq(c.categories.iter().map(String::as_str))
            && k.subresources
                .iter()
                .copied()
                .eq(c.subresources.iter().map(String::as_str))
    };
    if let Some(k) = pool.iter().find(same) {
        return k;
    }
    let kind: &'static Kind = Box::leak(Box::new(Kind {
        group: intern(&c.group),
        version: intern(&c.version),
        kind: intern(&c.kind),
        plural: intern(&c.plural),
        singular: intern(&c.singular),
        namespaced: c.namespaced,
        verbs: CRUD,
        short_names: intern_list(&c.short_names),
        categories: intern_list(&c.categories),
        subresources: intern_list(&c.subresources),
        openapi_name: "",
    }));
    pool.push(kind);
    kind
}

/// Serves `kinds` (in version-priority order) for the CustomResourceDefinition `crd`,
/// replacing what it served before; an empty list stops serving it.
pub fn set_custom(crd: &str, kinds: &[CustomKind]) {
    let ks: Vec<&'static Kind> = kinds.iter().map(pooled).collect();
    {
        let mut storage = STORAGE.write().unwrap_or_else(|e| e.into_inner());
        storage.retain(|(name, _)| name != crd);
        if let Some(i) = kinds.iter().position(|k| k.storage) {
            storage.push((crd.to_string(), ks[i]));
        }
    }
    let mut custom = CUSTOM.write().unwrap_or_else(|e| e.into_inner());
    custom.retain(|(name, _)| name != crd);
    if !ks.is_empty() {
        custom.push((crd.to_string(), ks));
        custom.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

/// The storage version of each CRD, if it is served.
static STORAGE: std::sync::RwLock<Vec<(String, &'static Kind)>> =
    std::sync::RwLock::new(Vec::new());

/// The kind objects of custom `kind` are stored as, when it is another version.
pub fn custom_storage(kind: &Kind) -> Option<&'static Kind> {
    if is_builtin(kind) {
        return None;
    }
    let crd = custom_definition(kind)?;
    let storage = STORAGE.read().unwrap_or_else(|e| e.into_inner());
    storage
        .iter()
        .find(|(name, _)| *name == crd)
        .map(|(_, k)| *k)
        .filter(|k| !std::ptr::eq(*k, kind))
}

/// The CustomResourceDefinition serving `kind`, if it is a custom kind.
pub fn custom_definition(kind: &Kind) -> Option<String> {
    let custom = CUSTOM.read().unwrap_or_else(|e| e.into_inner());
    custom
        .iter()
        .find(|(_, ks)| ks.iter().any(|k| std::ptr::eq(*k, kind)))
        .map(|(name, _)| name.clone())
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        for k in KINDS {
            assert_eq!(by_resource(k.group, k.version, k.plural), Some(k));
            assert_eq!(by_kind(&k.api_version(), k.kind), Some(k));
            assert!(k.openapi_name.ends_with(k.kind), "{}", k.openapi_name);
        }
        assert_eq!(
            by_kind("apps/v1", "Deployment").map(|k| k.plural),
            Some("deployments")
        );
        assert_eq!(by_kind("v1", "Pod").map(|k| k.namespaced), Some(true));
        assert!(by_kind("v2", "Pod").is_none());
    }

    /// One resource of k8s-openapi (Kubernetes 1.33's own definitions) as the table must serve it.
    fn served_as_upstream<T: k8s_openapi::Resource + 'static>() -> Option<String> {
        use std::any::TypeId;
        let Some(k) = by_kind(T::API_VERSION, T::KIND) else {
            return Some(format!("{} {} is not served", T::API_VERSION, T::KIND));
        };
        let namespaced =
            TypeId::of::<T::Scope>() == TypeId::of::<k8s_openapi::NamespaceResourceScope>();
        (k.plural != T::URL_PATH_SEGMENT
            || k.namespaced != namespaced
            || k.singular != T::KIND.to_lowercase())
        .then(|| format!("{} {} differs from k8s-openapi", T::API_VERSION, T::KIND))
    }

    /// Every resource kube-apiserver 1.33 serves by default (GA and enabled-by-default
    /// groups), checked against k8s-openapi's generated constants.
    #[test]
    fn every_built_in_resource_of_kubernetes_1_33_is_served_as_upstream_names_it() {
        use k8s_openapi::api::*;
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
        use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apireg;
        let wrong: Vec<String> = [
            served_as_upstream::<core::v1::ConfigMap>(),
            served_as_upstream::<core::v1::Endpoints>(),
            served_as_upstream::<core::v1::Event>(),
            served_as_upstream::<core::v1::LimitRange>(),
            served_as_upstream::<core::v1::Namespace>(),
            served_as_upstream::<core::v1::Node>(),
            served_as_upstream::<core::v1::PersistentVolume>(),
            served_as_upstream::<core::v1::PersistentVolumeClaim>(),
            served_as_upstream::<core::v1::Pod>(),
            served_as_upstream::<core::v1::PodTemplate>(),
            served_as_upstream::<core::v1::ReplicationController>(),
            served_as_upstream::<core::v1::ResourceQuota>(),
            served_as_upstream::<core::v1::Secret>(),
            served_as_upstream::<core::v1::Service>(),
            served_as_upstream::<core::v1::ServiceAccount>(),
            served_as_upstream::<admissionregistration::v1::MutatingWebhookConfiguration>(),
            served_as_upstream::<admissionregistration::v1::ValidatingWebhookConfiguration>(),
            served_as_upstream::<admissionregistration::v1::ValidatingAdmissionPolicy>(),
            served_as_upstream::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(),
            served_as_upstream::<apiext::CustomResourceDefinition>(),
            served_as_upstream::<apireg::APIService>(),
            served_as_upstream::<apps::v1::ControllerRevision>(),
            served_as_upstream::<apps::v1::DaemonSet>(),
            served_as_upstream::<apps::v1::Deployment>(),
            served_as_upstream::<apps::v1::ReplicaSet>(),
            served_as_upstream::<apps::v1::StatefulSet>(),
            served_as_upstream::<authentication::v1::TokenReview>(),
            served_as_upstream::<authentication::v1::SelfSubjectReview>(),
            served_as_upstream::<authorization::v1::LocalSubjectAccessReview>(),
            served_as_upstream::<authorization::v1::SelfSubjectAccessReview>(),
            served_as_upstream::<authorization::v1::SelfSubjectRulesReview>(),
            served_as_upstream::<authorization::v1::SubjectAccessReview>(),
            served_as_upstream::<autoscaling::v1::HorizontalPodAutoscaler>(),
            served_as_upstream::<autoscaling::v2::HorizontalPodAutoscaler>(),
            served_as_upstream::<batch::v1::CronJob>(),
            served_as_upstream::<batch::v1::Job>(),
            served_as_upstream::<certificates::v1::CertificateSigningRequest>(),
            served_as_upstream::<coordination::v1::Lease>(),
            served_as_upstream::<discovery::v1::EndpointSlice>(),
            served_as_upstream::<events::v1::Event>(),
            served_as_upstream::<flowcontrol::v1::FlowSchema>(),
            served_as_upstream::<flowcontrol::v1::PriorityLevelConfiguration>(),
            served_as_upstream::<networking::v1::Ingress>(),
            served_as_upstream::<networking::v1::IngressClass>(),
            served_as_upstream::<networking::v1::IPAddress>(),
            served_as_upstream::<networking::v1::NetworkPolicy>(),
            served_as_upstream::<networking::v1::ServiceCIDR>(),
            served_as_upstream::<node::v1::RuntimeClass>(),
            served_as_upstream::<policy::v1::PodDisruptionBudget>(),
            served_as_upstream::<rbac::v1::ClusterRole>(),
            served_as_upstream::<rbac::v1::ClusterRoleBinding>(),
            served_as_upstream::<rbac::v1::Role>(),
            served_as_upstream::<rbac::v1::RoleBinding>(),
            served_as_upstream::<scheduling::v1::PriorityClass>(),
            served_as_upstream::<storage::v1::CSIDriver>(),
            served_as_upstream::<storage::v1::CSINode>(),
            served_as_upstream::<storage::v1::CSIStorageCapacity>(),
            served_as_upstream::<storage::v1::StorageClass>(),
            served_as_upstream::<storage::v1::VolumeAttachment>(),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn custom_kinds_are_served_replaced_and_removed() {
        let widget = |version: &str| CustomKind {
            group: "kinds-test.example.com".into(),
            version: version.into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            singular: "widget".into(),
            namespaced: true,
            short_names: vec!["wd".into()],
            categories: vec![],
            subresources: vec!["status".into()],
            storage: version == "v1",
        };
        set_custom(
            "widgets.kinds-test.example.com",
            &[widget("v2"), widget("v1")],
        );
        let v2 = by_resource("kinds-test.example.com", "v2", "widgets").unwrap();
        assert_eq!(custom_storage(v2).map(|k| k.version), Some("v1"));
        let k = by_resource("kinds-test.example.com", "v1", "widgets").unwrap();
        assert_eq!(by_kind("kinds-test.example.com/v1", "Widget"), Some(k));
        assert!(k.has_subresource("status") && !is_builtin(k));
        assert!(custom_storage(k).is_none());
        let gvs = group_versions();
        let ours: Vec<_> = gvs
            .iter()
            .filter(|(g, _)| *g == "kinds-test.example.com")
            .collect();
        assert_eq!(
            ours,
            vec![
                &("kinds-test.example.com", "v2"),
                &("kinds-test.example.com", "v1")
            ]
        );
        // Registering the same definition again reuses the same kinds.
        set_custom("widgets.kinds-test.example.com", &[widget("v1")]);
        assert!(std::ptr::eq(
            by_resource("kinds-test.example.com", "v1", "widgets").unwrap(),
            k
        ));
        assert!(by_resource("kinds-test.example.com", "v2", "widgets").is_none());
        assert_eq!(
            custom_definition(k).as_deref(),
            Some("widgets.kinds-test.example.com")
        );
        set_custom("widgets.kinds-test.example.com", &[]);
        assert!(by_resource("kinds-test.example.com", "v1", "widgets").is_none());
        assert!(is_builtin(by_kind("v1", "Pod").unwrap()));
    }

    #[test]
    fn preferred_versions_come_first() {
        let gvs = group_versions();
        let autoscaling: Vec<_> = gvs.iter().filter(|(g, _)| *g == "autoscaling").collect();
        assert_eq!(
            autoscaling,
            vec![&("autoscaling", "v2"), &("autoscaling", "v1")]
        );
        assert_eq!(gvs[0], ("", "v1"));
    }
}
