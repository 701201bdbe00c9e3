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
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
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
    KINDS
        .iter()
        .filter(move |k| k.group == group && k.version == version)
}

/// Looks a resource up by its URL coordinates.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        // The most distinctive part first: the watch cache and routing look kinds up on
        // every request and event.
        .find(|k| k.plural == plural && k.group == group && k.version == version)
}

/// Looks a kind up by an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Kind> {
    let (group, version) = split_api_version(api_version);
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.group == group && k.version == version)
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
