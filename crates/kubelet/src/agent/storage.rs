//! The built-in local-path provisioner and the `persistentVolumeClaim` volume plugin, as
//! k3s runs rancher's local-path-provisioner: volumes are directories under
//! `<agent data dir>/storage`, made on the node of the claim's first consumer.
//!
//! Contract and lifecycle:
//! - `skiff server` creates the default StorageClass [`DEFAULT_CLASS`] (provisioner
//!   [`PROVISIONER`], k3s's name, so manifests written for k3s work unchanged;
//!   `WaitForFirstConsumer`, reclaim `Delete`) when it is missing ([`ensure_default_class`]).
//! - Provisioning: when a pod bound to this node mounts a claim that is not bound yet and
//!   whose class names [`PROVISIONER`], the agent creates the PersistentVolume
//!   `pvc-<claim uid>` ([`provisioned_volume`]: a `hostPath` directory, node affinity to
//!   this node, the claim's request and access modes, the class's reclaim policy, a
//!   `claimRef` to the claim). The name is the claim's, so two nodes racing for one claim
//!   make one volume. The controller manager's `persistentvolume-binder` then binds the
//!   claim to it (Kubernetes' split between a provisioner and the PV controller); the pod
//!   waits in ContainerCreating with FailedMount events saying what it waits for.
//! - Mounting: a bound claim mounts its volume's `hostPath` or `local` path; a volume of
//!   another kind, or of another node, is a FailedMount with the reason.
//! - Reclaim: [`reclaimer`] watches the volumes; one this node provisioned that is
//!   `Released` with reclaim `Delete` has its directory removed and is deleted. `Retain`
//!   keeps both. Only directories directly under `<data dir>/storage` are ever removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use skiff_serve::CancellationToken;

use super::volumes::ConfigError;
use super::Shared;

/// The provisioner of the built-in class (rancher's local-path-provisioner, as k3s).
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The built-in default class.
pub const DEFAULT_CLASS: &str = "local-path";
/// Names the provisioner on the volumes it made.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const HOSTNAME: &str = "kubernetes.io/hostname";
const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// The class `skiff server` creates (k3s's `local-storage` manifest).
pub fn local_path_class() -> StorageClass {
    StorageClass {
        metadata: kube::api::ObjectMeta {
            name: Some(DEFAULT_CLASS.into()),
            annotations: Some(BTreeMap::from([(
                IS_DEFAULT_CLASS.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// Creates [`local_path_class`] unless a class of that name exists (an admin's own is
/// kept as it is).
pub async fn ensure_default_class(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    match api
        .create(&PostParams::default(), &local_path_class())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The directory of the claim's volume: `<data>/storage/pvc-<uid>_<ns>_<name>`, as the
/// local-path-provisioner names it.
pub fn claim_dir(data_dir: &Path, pvc: &PersistentVolumeClaim) -> PathBuf {
    storage_root(data_dir).join(format!(
        "pvc-{}_{}_{}",
        pvc.metadata.uid.as_deref().unwrap_or_default(),
        pvc.namespace().unwrap_or_default(),
        pvc.name_any()
    ))
}

fn storage_root(data_dir: &Path) -> PathBuf {
    data_dir.join("storage")
}

/// The volume this node provisions for `pvc` of `class`, in `dir`.
pub fn provisioned_volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    dir: &Path,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
        .unwrap_or_else(|| Quantity("0".into()));
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    PersistentVolume {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("pvc-{uid}")),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), request)])),
            access_modes: spec.access_modes.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: Some(class.name_any()),
            volume_mode: spec.volume_mode.clone(),
            mount_options: class.mount_options.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: pvc.namespace(),
                name: Some(pvc.name_any()),
                uid: Some(uid),
                resource_version: pvc.metadata.resource_version.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The `kubernetes.io/hostname` values the volume's node affinity allows (None when it
/// has no such single-key term: any node).
fn affinity_hosts(pv: &PersistentVolume) -> Option<Vec<String>> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let mut hosts = Vec::new();
    for t in terms {
        for r in t.match_expressions.iter().flatten() {
            if r.key == HOSTNAME && r.operator == "In" {
                hosts.extend(r.values.iter().flatten().cloned());
            }
        }
    }
    (!hosts.is_empty()).then_some(hosts)
}

/// The host directory a bound volume mounts on `node`, or why it cannot be mounted here.
pub fn local_path(pv: &PersistentVolume, node: &str) -> Result<PathBuf, String> {
    let name = pv.name_any();
    let spec = pv.spec.as_ref();
    let path = spec
        .and_then(|s| s.host_path.as_ref().map(|h| h.path.clone()))
        .or_else(|| spec.and_then(|s| s.local.as_ref().map(|l| l.path.clone())));
    let Some(path) = path else {
        return Err(format!(
            "persistentvolume {name:?} is neither a hostPath nor a local volume; this node mounts only those"
        ));
    };
    if let Some(hosts) = affinity_hosts(pv) {
        if !hosts.iter().any(|h| h == node) {
            return Err(format!(
                "persistentvolume {name:?} is on node(s) {} and this is {node}: volume node affinity conflict",
                hosts.join(",")
            ));
        }
    }
    Ok(PathBuf::from(path))
}

/// The directory to remove and the volume to delete when `pv` is one this node
/// provisioned and its claim is gone under reclaim `Delete`.
pub fn reclaimable(pv: &PersistentVolume, node: &str, data_dir: &Path) -> Option<PathBuf> {
    let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let spec = pv.spec.as_ref()?;
    let delete = spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete");
    if !(ours && released && delete) || pv.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let path = local_path(pv, node).ok()?;
    // Only a directory this provisioner names, directly under the storage root.
    let in_root = path.parent() == Some(storage_root(data_dir).as_path());
    let named = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("pvc-"));
    (in_root && named).then_some(path)
}

/// What the plugin needs of the agent: its client, node name and data dir.
pub struct Local<'a> {
    pub client: &'a kube::Client,
    pub node: &'a str,
    pub data_dir: &'a Path,
}

fn claim_is_bound(pvc: &PersistentVolumeClaim) -> Option<String> {
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let name = pvc
        .spec
        .as_ref()?
        .volume_name
        .clone()
        .filter(|n| !n.is_empty())?;
    (phase == Some("Bound")).then_some(name)
}

/// The host directory of the pod's `persistentVolumeClaim` volume `volume`: the bound
/// volume's path, provisioning it on this node first when the claim's class is ours.
pub async fn claim_path(
    sh: &Local<'_>,
    ns: &str,
    volume: &str,
    claim: &str,
) -> Result<PathBuf, ConfigError> {
    let failed = |why: String| {
        ConfigError(format!(
            "MountVolume.SetUp failed for volume {volume:?} : {why}"
        ))
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sh.client.clone(), ns);
    let get_claim = || async {
        match claims.get_opt(claim).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(failed(format!("persistentvolumeclaim {claim:?} not found"))),
            Err(e) => Err(failed(format!(
                "reading persistentvolumeclaim {claim:?}: {e}"
            ))),
        }
    };
    let mut pvc = get_claim().await?;
    if claim_is_bound(&pvc).is_none() {
        // A bound claim being deleted stays mounted (pvc-protection keeps it while pods
        // use it: a running pod's volume refresh must not fail); an unbound one is not
        // provisioned any more.
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(failed(format!(
                "persistentvolumeclaim {claim:?} is being deleted"
            )));
        }
        provision(sh, &pvc, &failed).await?;
        // The binder usually binds within moments: wait a little before the pod's
        // worker retries (every 5 s).
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            pvc = get_claim().await?;
            if claim_is_bound(&pvc).is_some() {
                break;
            }
        }
    }
    let Some(pv_name) = claim_is_bound(&pvc) else {
        return Err(failed(format!(
            "waiting for a volume to be created and bound to persistentvolumeclaim \"{ns}/{claim}\""
        )));
    };
    let pvs: Api<PersistentVolume> = Api::all(sh.client.clone());
    let pv = match pvs.get_opt(&pv_name).await {
        Ok(Some(pv)) => pv,
        Ok(None) => return Err(failed(format!("persistentvolume {pv_name:?} not found"))),
        Err(e) => return Err(failed(format!("reading persistentvolume {pv_name:?}: {e}"))),
    };
    let path = local_path(&pv, sh.node).map_err(failed)?;
    let mode = pv
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .and_then(|h| h.type_.as_deref());
    if mode == Some("DirectoryOrCreate") || path.starts_with(storage_root(sh.data_dir)) {
        make_dir(&path).map_err(|e| failed(format!("creating {}: {e}", path.display())))?;
    } else if !path.is_dir() {
        return Err(failed(format!(
            "persistentvolume {pv_name:?}: {} is not a directory",
            path.display()
        )));
    }
    Ok(path)
}

fn make_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !path.is_dir() {
        std::fs::create_dir_all(path)?;
        // Any container user may write to it (as the local-path-provisioner's mkdir -m 0777).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    }
    Ok(())
}

/// Creates the volume of an unbound claim when its class is ours; otherwise says what
/// the claim waits for.
async fn provision(
    sh: &Local<'_>,
    pvc: &PersistentVolumeClaim,
    failed: &(dyn Fn(String) -> ConfigError + Sync),
) -> Result<(), ConfigError> {
    let key = format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any());
    let class_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    if class_name.is_empty() {
        return Err(failed(format!(
            "persistentvolumeclaim \"{key}\" is not bound and names no StorageClass: waiting for a matching persistentvolume"
        )));
    }
    let classes: Api<StorageClass> = Api::all(sh.client.clone());
    let class = match classes.get_opt(&class_name).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(failed(format!(
                "waiting for a volume to be created for persistentvolumeclaim \"{key}\": storageclass.storage.k8s.io {class_name:?} not found"
            )))
        }
        Err(e) => return Err(failed(format!("reading storageclass {class_name:?}: {e}"))),
    };
    if class.provisioner != PROVISIONER {
        return Err(failed(format!(
            "waiting for a volume to be created for persistentvolumeclaim \"{key}\" by the external provisioner {:?}",
            class.provisioner
        )));
    }
    let dir = claim_dir(sh.data_dir, pvc);
    let pv = provisioned_volume(pvc, &class, sh.node, &dir);
    let pvs: Api<PersistentVolume> = Api::all(sh.client.clone());
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            tracing::info!(claim = %key, volume = %pv.name_any(), path = %dir.display(), "provisioned");
            make_dir(&dir).map_err(|e| failed(format!("creating {}: {e}", dir.display())))
        }
        // Made before (an earlier sync, or another node for the same claim): the binder
        // binds it; the mount checks its node.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(failed(format!(
            "provisioning a volume for persistentvolumeclaim \"{key}\": {e}"
        ))),
    }
}

/// Removes the directories and volumes of released claims this node provisioned, until
/// `stop`.
pub async fn reclaimer(sh: Arc<Shared>, stop: CancellationToken) {
    let api: Api<PersistentVolume> = Api::all(sh.client.clone());
    let mut stream = kube::runtime::WatchStreamExt::default_backoff(watcher::watcher(
        api.clone(),
        watcher::Config::default(),
    ))
    .boxed();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        let pv = match ev {
            None => return,
            Some(Ok(watcher::Event::Apply(pv) | watcher::Event::InitApply(pv))) => pv,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "watching persistent volumes");
                continue;
            }
        };
        let Some(dir) = reclaimable(&pv, &sh.cfg.node_name, &sh.cfg.data_dir) else {
            continue;
        };
        let d = dir.clone();
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await;
        match removed {
            Ok(Ok(())) => match api.delete(&pv.name_any(), &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {
                    tracing::info!(volume = %pv.name_any(), path = %dir.display(), "reclaimed")
                }
                Err(e) => {
                    tracing::warn!(volume = %pv.name_any(), error = %e, "deleting a released volume")
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(volume = %pv.name_any(), path = %dir.display(), error = %e, "removing a released volume's directory")
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "default", "uid": "u1", "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"}
        }))
        .unwrap()
    }

    #[test]
    fn a_claim_gives_a_volume_on_this_node() {
        let data = Path::new("/var/lib/skiff/agent");
        let dir = claim_dir(data, &claim());
        assert_eq!(
            dir,
            Path::new("/var/lib/skiff/agent/storage/pvc-u1_default_data")
        );
        let pv = provisioned_volume(&claim(), &local_path_class(), "n1", &dir);
        let v = serde_json::to_value(&pv).unwrap();
        assert_eq!(v["metadata"]["name"], "pvc-u1");
        assert_eq!(
            v["metadata"]["annotations"][PROVISIONED_BY],
            "rancher.io/local-path"
        );
        let s = &v["spec"];
        assert_eq!(s["capacity"]["storage"], "1Gi");
        assert_eq!(s["accessModes"], serde_json::json!(["ReadWriteOnce"]));
        assert_eq!(s["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(s["storageClassName"], "local-path");
        assert_eq!(s["hostPath"]["path"], dir.to_string_lossy().as_ref());
        assert_eq!(
            s["claimRef"],
            serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": "default", "name": "data", "uid": "u1", "resourceVersion": "7"})
        );
        let term = &s["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(
            term,
            &serde_json::json!({"key": HOSTNAME, "operator": "In", "values": ["n1"]})
        );
        assert_eq!(local_path(&pv, "n1").unwrap(), dir);
        let other = local_path(&pv, "n2").unwrap_err();
        assert!(other.contains("volume node affinity conflict"), "{other}");
    }

    #[test]
    fn only_released_volumes_of_this_provisioner_under_the_root_are_reclaimed() {
        let data = Path::new("/d");
        let dir = claim_dir(data, &claim());
        let mut pv = provisioned_volume(&claim(), &local_path_class(), "n1", &dir);
        assert_eq!(reclaimable(&pv, "n1", data), None, "still bound");
        pv.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        assert_eq!(reclaimable(&pv, "n1", data), Some(dir.clone()));
        assert_eq!(reclaimable(&pv, "n2", data), None, "another node's");
        let mut retain = pv.clone();
        retain
            .spec
            .as_mut()
            .unwrap()
            .persistent_volume_reclaim_policy = Some("Retain".into());
        assert_eq!(reclaimable(&retain, "n1", data), None);
        let mut elsewhere = pv.clone();
        elsewhere
            .spec
            .as_mut()
            .unwrap()
            .host_path
            .as_mut()
            .unwrap()
            .path = "/etc".into();
        assert_eq!(reclaimable(&elsewhere, "n1", data), None);
        let mut foreign = pv.clone();
        foreign.metadata.annotations = None;
        assert_eq!(reclaimable(&foreign, "n1", data), None);
        let mut nfs = pv;
        nfs.spec.as_mut().unwrap().host_path = None;
        assert!(local_path(&nfs, "n1")
            .unwrap_err()
            .contains("neither a hostPath nor a local volume"));
    }
}
