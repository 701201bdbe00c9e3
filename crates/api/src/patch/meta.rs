//! Which fields strategic merge patch merges, and by which key: the `patchStrategy` and
//! `patchMergeKey` tags of the Kubernetes Go types, which the OpenAPI schemas k8s-openapi
//! ships do not carry.

/// How a field's value is combined with the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    /// Lists are merged element by element (by `merge_key` for lists of objects; as a set
    /// for lists of primitives). Without it, a list is replaced whole.
    pub merge: bool,
    /// The object's keys not named in a `$retainKeys` directive are dropped.
    pub retain_keys: bool,
    /// A map-typed field is replaced whole rather than merged.
    pub replace: bool,
    pub merge_key: Option<&'static str>,
}

impl PatchMeta {
    /// The `x-kubernetes-patch-strategy` value (`merge`, `merge,retainKeys`, …).
    pub fn strategy(&self) -> String {
        let mut s = Vec::new();
        if self.merge {
            s.push("merge");
        }
        if self.replace {
            s.push("replace");
        }
        if self.retain_keys {
            s.push("retainKeys");
        }
        s.join(",")
    }
}

const M: u8 = 1;
const RK: u8 = 2;
const MRK: u8 = M | RK;

/// (definition, field, strategy bits, merge key) for every field of the served kinds'
/// types whose Go declaration carries a `patchStrategy` tag. A field's tag says how a
/// patch combines that field's value: `merge` on a list of structs merges elements
/// whose `patchMergeKey` field is equal; `merge` on a list of strings treats it as a
/// set; `retainKeys` says the struct is a union whose unset members a patch may clear
/// with `$retainKeys`. Fields absent here are replaced (lists) or merged (maps).
const PATCH_META: &[(&str, &str, u8, &str)] = &[
    // metav1.ObjectMeta: finalizers is a set of strings; owner references are one per uid.
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        M,
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        M,
        "uid",
    ),
    // core/v1 pods: containers and volumes are addressed by name, so a patch that only
    // names one container does not drop the others; tolerations have no tag (replaced).
    ("io.k8s.api.core.v1.PodSpec", "volumes", MRK, "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", M, "name"),
    ("io.k8s.api.core.v1.PodSpec", "containers", M, "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        M,
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", M, "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", M, "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        M,
        "topologyKey",
    ),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", M, "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", MRK, "name"),
    ("io.k8s.api.core.v1.Container", "ports", M, "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", M, "name"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        M,
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        M,
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        M,
        "containerPort",
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", M, "name"),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        M,
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        M,
        "devicePath",
    ),
    ("io.k8s.api.core.v1.PodStatus", "conditions", M, "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", M, "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", M, "ip"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        MRK,
        "name",
    ),
    // core/v1 others.
    ("io.k8s.api.core.v1.ServiceSpec", "ports", M, "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", M, "type"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", M, ""),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", M, "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", M, "type"),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        M,
        "type",
    ),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", M, "name"),
    // apps/v1: a deployment's strategy is a union (type + rollingUpdate).
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", RK, ""),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        M,
        "type",
    ),
    // batch, autoscaling, policy status conditions.
    ("io.k8s.api.batch.v1.JobStatus", "conditions", M, "type"),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        M,
        "type",
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        M,
        "type",
    ),
];

/// The patch strategy of `field` in definition `type_name`, if it has one.
pub fn patch_meta(type_name: &str, field: &str) -> Option<PatchMeta> {
    PATCH_META
        .iter()
        .find(|(t, f, _, _)| *t == type_name && *f == field)
        .map(|&(_, _, bits, key)| PatchMeta {
            merge: bits & M != 0,
            retain_keys: bits & RK != 0,
            replace: false,
            merge_key: (!key.is_empty()).then_some(key),
        })
}

/// Every (definition, field, meta) of the table, for the OpenAPI extensions.
pub fn all_patch_meta() -> impl Iterator<Item = (&'static str, &'static str, PatchMeta)> {
    PATCH_META
        .iter()
        .filter_map(|&(t, f, _, _)| patch_meta(t, f).map(|m| (t, f, m)))
}
