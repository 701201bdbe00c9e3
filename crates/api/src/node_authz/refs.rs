//! What a Pod or PersistentVolume refers to, read from stored JSON: the objects a node
//! needs to run a pod (kube's `VisitPodSecretNames`, `VisitPodConfigmapNames`, claim and
//! service-account references) and the Secrets a volume's kubelet-side plugin reads.
//! Missing or malformed fields read as no reference; empty names are skipped.

use serde_json::Value;

fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn name_at(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn push(out: &mut Vec<String>, name: Option<String>) {
    if let Some(n) = name {
        if !out.contains(&n) {
            out.push(n);
        }
    }
}

/// Every container of the pod: init, regular and ephemeral.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| items(spec, k))
}

fn volumes(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.get("spec")
        .into_iter()
        .flat_map(|s| items(s, "volumes"))
}

fn projected_sources(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("projected")
        .into_iter()
        .flat_map(|p| items(p, "sources"))
}

/// The Secrets the pod refers to: image pull secrets, environment variables
/// (`secretKeyRef`, `envFrom.secretRef`) of every container, and volumes (`secret`,
/// projected `secret` sources, and the secret references of the volume plugins that read
/// one on the node).
pub fn pod_secret_names(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(spec) = pod.get("spec") {
        for r in items(spec, "imagePullSecrets") {
            push(&mut out, name_at(r, "/name"));
        }
    }
    for c in containers(pod) {
        for e in items(c, "envFrom") {
            push(&mut out, name_at(e, "/secretRef/name"));
        }
        for e in items(c, "env") {
            push(&mut out, name_at(e, "/valueFrom/secretKeyRef/name"));
        }
    }
    for v in volumes(pod) {
        push(&mut out, name_at(v, "/secret/secretName"));
        for s in projected_sources(v) {
            push(&mut out, name_at(s, "/secret/name"));
        }
        push(&mut out, name_at(v, "/azureFile/secretName"));
        for plugin in [
            "cephfs",
            "cinder",
            "flexVolume",
            "rbd",
            "scaleIO",
            "iscsi",
            "storageos",
        ] {
            push(&mut out, name_at(v, &format!("/{plugin}/secretRef/name")));
        }
        push(&mut out, name_at(v, "/csi/nodePublishSecretRef/name"));
    }
    out
}

/// The ConfigMaps the pod refers to: environment variables (`configMapKeyRef`,
/// `envFrom.configMapRef`) of every container, `configMap` volumes and projected
/// `configMap` sources.
pub fn pod_configmap_names(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for c in containers(pod) {
        for e in items(c, "envFrom") {
            push(&mut out, name_at(e, "/configMapRef/name"));
        }
        for e in items(c, "env") {
            push(&mut out, name_at(e, "/valueFrom/configMapKeyRef/name"));
        }
    }
    for v in volumes(pod) {
        push(&mut out, name_at(v, "/configMap/name"));
        for s in projected_sources(v) {
            push(&mut out, name_at(s, "/configMap/name"));
        }
    }
    out
}

/// The PersistentVolumeClaims the pod mounts: `persistentVolumeClaim` volumes, and the
/// claim of each generic `ephemeral` volume (`<pod>-<volume>`).
pub fn pod_claim_names(pod: &Value) -> Vec<String> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = Vec::new();
    for v in volumes(pod) {
        if v.get("persistentVolumeClaim").is_some() {
            push(&mut out, name_at(v, "/persistentVolumeClaim/claimName"));
        } else if v.get("ephemeral").is_some() {
            if let Some(vol) = name_at(v, "/name") {
                push(&mut out, Some(format!("{pod_name}-{vol}")));
            }
        }
    }
    out
}

/// The ResourceClaims the pod uses: `spec.resourceClaims[].resourceClaimName`, and for an
/// entry made from a template, the claim `status.resourceClaimStatuses` names for it.
pub fn pod_resource_claim_names(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = pod.get("spec") else {
        return out;
    };
    for c in items(spec, "resourceClaims") {
        if let Some(n) = name_at(c, "/resourceClaimName") {
            push(&mut out, Some(n));
        } else if c.get("resourceClaimTemplateName").is_some() {
            let entry = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let made = pod
                .pointer("/status/resourceClaimStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(entry))
                .and_then(|s| name_at(s, "/resourceClaimName"));
            push(&mut out, made);
        }
    }
    out
}

/// The pod's service account, if it names one.
pub fn pod_service_account(pod: &Value) -> Option<String> {
    name_at(pod, "/spec/serviceAccountName")
}

/// Whether a projected volume of the pod reads a ClusterTrustBundle.
pub fn pod_uses_cluster_trust_bundles(pod: &Value) -> bool {
    volumes(pod).any(|v| projected_sources(v).any(|s| s.get("clusterTrustBundle").is_some()))
}

/// Whether the pod mounts a PersistentVolumeClaim (not counting generic ephemeral
/// volumes, as kube's NodeRestriction counts them).
pub fn pod_mounts_claims(pod: &Value) -> bool {
    volumes(pod).any(|v| v.get("persistentVolumeClaim").is_some())
}

/// The Secrets (`(namespace, name)`) a PersistentVolume's plugin reads on the node. A
/// reference without a namespace means the namespace of the volume's claim (except for
/// StorageOS and CSI, which name theirs); references
/// only the controller side reads (CSI `controllerPublishSecretRef`,
/// `controllerExpandSecretRef`) are not the node's.
pub fn pv_secret_refs(pv: &Value) -> Vec<(String, String)> {
    let claim_ns = pv
        .pointer("/spec/claimRef/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    // StorageOS and CSI references name their namespace themselves.
    let mut add = |ns: Option<&str>, name: Option<String>, claim_default: bool| {
        if let Some(name) = name {
            let fallback = if claim_default { claim_ns } else { "" };
            let ns = ns.filter(|n| !n.is_empty()).unwrap_or(fallback).to_string();
            if !ns.is_empty() && !out.iter().any(|(a, b)| *a == ns && *b == name) {
                out.push((ns, name));
            }
        }
    };
    let Some(spec) = pv.get("spec") else {
        return out;
    };
    if let Some(a) = spec.get("azureFile") {
        add(
            a.get("secretNamespace").and_then(Value::as_str),
            name_at(a, "/secretName"),
            true,
        );
    }
    for plugin in [
        "cephfs",
        "cinder",
        "flexVolume",
        "rbd",
        "scaleIO",
        "iscsi",
        "storageos",
    ] {
        if let Some(r) = spec.pointer(&format!("/{plugin}/secretRef")) {
            add(
                r.get("namespace").and_then(Value::as_str),
                name_at(r, "/name"),
                plugin != "storageos",
            );
        }
    }
    if let Some(csi) = spec.get("csi") {
        for field in [
            "nodeStageSecretRef",
            "nodePublishSecretRef",
            "nodeExpandSecretRef",
        ] {
            if let Some(r) = csi.get(field) {
                add(
                    r.get("namespace").and_then(Value::as_str),
                    name_at(r, "/name"),
                    false,
                );
            }
        }
    }
    out
}
