//! kube-controller-manager's `persistentvolume-binder` and `pvc-protection`, small.
//!
//! Binder (keys: a claim's `namespace/name`, or `pv:<name>` for a volume):
//! - a claim not bound yet is bound to the volume whose `claimRef` names it (by uid, or
//!   by namespace/name when the ref has no uid) — what a provisioner made for it, or a
//!   volume an admin pre-bound; failing that, to the smallest `Available` volume of its
//!   class whose capacity and access modes cover the request (not for classes in
//!   `WaitForFirstConsumer` mode: their volumes are made for a node by a provisioner).
//!   Binding writes the claim's `spec.volumeName` (with kube's `bind-completed` and
//!   `bound-by-controller` annotations), then the volume's and the claim's status `Bound`
//!   (the claim's with the volume's capacity and access modes).
//! - a claim that stays unbound gets kube's events: `ProvisioningFailed` when its class
//!   does not exist, `WaitForFirstConsumer` or `ExternalProvisioning` otherwise.
//! - a volume whose claim is gone (confirmed with a GET) becomes `Released`; its reclaim
//!   policy is then its provisioner's business (the agent's local-path reclaimer deletes
//!   `Delete` volumes it made); a volume with no claim is `Available`.
//!
//! Protection (keys: `namespace/name` of claims): a claim being deleted keeps its
//! `kubernetes.io/pvc-protection` finalizer (added at creation by the API server) while a
//! pod that is not terminated mounts it; then the finalizer is removed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::events::Recorder;
use crate::informer::{key_of, split_key, Change, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_deleting, is_not_found, is_terminal, ApiError};
use crate::{Context, Queue};

const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
const PV_KEY: &str = "pv:";

fn claim_ref_key(pv: &PersistentVolume) -> Option<String> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(format!(
        "{}/{}",
        r.namespace.as_deref()?,
        r.name.as_deref()?
    ))
}

fn phase_of_pv(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn class_of(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
        .map(|q| q.value())
        .unwrap_or(0)
}

/// Whether `pv`'s claimRef names `pvc` (its uid, or its name when the ref has no uid).
pub(crate) fn names_claim(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    let same_name = r.namespace == pvc.metadata.namespace && r.name == pvc.metadata.name;
    match r.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(uid) => same_name && Some(uid) == pvc.metadata.uid.as_deref(),
        None => same_name,
    }
}

/// The volume `pvc` should be bound to: one whose claimRef names it, else (when
/// `static_ok`) the smallest Available unclaimed volume of its class that covers its
/// request and access modes.
pub(crate) fn volume_for<'a>(
    pvc: &PersistentVolumeClaim,
    volumes: &'a [Arc<PersistentVolume>],
    static_ok: bool,
) -> Option<&'a Arc<PersistentVolume>> {
    if let Some(pv) = volumes
        .iter()
        .find(|pv| names_claim(pv, pvc) && pv.metadata.deletion_timestamp.is_none())
    {
        return Some(pv);
    }
    if !static_ok {
        return None;
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    let want = bytes(
        spec.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    let modes = spec.access_modes.clone().unwrap_or_default();
    let class = class_of(pvc);
    let mode = spec.volume_mode.as_deref().unwrap_or("Filesystem");
    volumes
        .iter()
        .filter(|pv| {
            let Some(s) = pv.spec.as_ref() else {
                return false;
            };
            let pv_modes = s.access_modes.clone().unwrap_or_default();
            s.claim_ref.is_none()
                && phase_of_pv(pv) == "Available"
                && pv.metadata.deletion_timestamp.is_none()
                && s.storage_class_name.clone().unwrap_or_default() == class
                && s.volume_mode.as_deref().unwrap_or("Filesystem") == mode
                && modes.iter().all(|m| pv_modes.contains(m))
                && bytes(s.capacity.as_ref().and_then(|c| c.get("storage"))) >= want
        })
        .min_by_key(|pv| {
            bytes(
                pv.spec
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage")),
            )
        })
}

/// Whether a pod that is not terminated mounts the claim `name`.
pub(crate) fn claim_in_use(name: &str, pods: &[Arc<Pod>]) -> bool {
    pods.iter().any(|p| {
        !is_terminal(p)
            && p.spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|vs| {
                    vs.iter().any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.claim_name == name)
                    })
                })
    })
}

fn claims_of(p: &Pod) -> Vec<String> {
    let ns = p.namespace().unwrap_or_default();
    p.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| format!("{ns}/{}", c.claim_name))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn start_binder(ctx: &Context) -> Option<JoinHandle<()>> {
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let volumes = ctx.informers.informer::<PersistentVolume>();
    let classes = ctx.informers.informer::<StorageClass>();
    let pods = ctx.informers.informer::<Pod>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        claims.on_change(move |ch| {
            let c = ch.object();
            q.add(key_of(&**c));
            // Its volume is Released now.
            if let Change::Deleted(c) = ch {
                if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
                    q.add(format!("{PV_KEY}{v}"));
                }
            }
        });
    }
    {
        let q = queue.clone();
        volumes.on_change(move |ch| {
            let pv = ch.object();
            q.add(format!("{PV_KEY}{}", pv.name_any()));
            if let Some(k) = claim_ref_key(pv) {
                q.add(k);
            }
        });
    }
    {
        // A new consumer of an unbound claim changes its events (ExternalProvisioning).
        let q = queue.clone();
        pods.on_change(move |ch| {
            if let Change::Added(p) = ch {
                for k in claims_of(p) {
                    q.add(k);
                }
            }
        });
    }
    let ready = {
        let (c, v, s, p) = (
            claims.clone(),
            volumes.clone(),
            classes.clone(),
            pods.clone(),
        );
        async move {
            c.synced().await;
            v.synced().await;
            s.synced().await;
            p.synced().await;
        }
    };
    let r = Binder {
        ctx: ctx.clone(),
        claims,
        volumes,
        classes,
        pods,
        events: ctx.events.recorder("persistentvolume-controller"),
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

struct Binder {
    ctx: Context,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    pods: Informer<Pod>,
    events: Recorder,
}

impl Binder {
    fn pv_api(&self) -> Api<PersistentVolume> {
        Api::all(self.ctx.client.clone())
    }

    fn pvc_api(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    async fn set_pv_phase(&self, pv: &PersistentVolume, phase: &str) -> Result<(), ApiError> {
        if phase_of_pv(pv) == phase {
            return Ok(());
        }
        let patch = json!({"status": {"phase": phase}});
        match self
            .pv_api()
            .patch_status(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Err(e) if !is_not_found(&e) => Err(ApiError::new(
                "updating the status of persistentvolume",
                pv.name_any(),
                e,
            )),
            _ => Ok(()),
        }
    }

    async fn bind(
        &self,
        pvc: &PersistentVolumeClaim,
        pv: &PersistentVolume,
    ) -> Result<(), ApiError> {
        let (ns, name) = (pvc.namespace().unwrap_or_default(), pvc.name_any());
        let api = self.pvc_api(&ns);
        if pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none()
        {
            // A static volume: claim it first; its change brings the claim back here.
            let patch = json!({"spec": {"claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                "name": name, "uid": pvc.metadata.uid, "resourceVersion": pvc.metadata.resource_version,
            }}});
            self.pv_api()
                .patch(
                    &pv.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| ApiError::new("claiming persistentvolume", pv.name_any(), e))?;
            return Ok(());
        }
        let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        if volume_name != Some(&pv.name_any()) {
            let patch = json!({
                "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
                "spec": {"volumeName": pv.name_any()},
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| {
                    ApiError::new("binding persistentvolumeclaim", format!("{ns}/{name}"), e)
                })?;
        }
        self.set_pv_phase(pv, "Bound").await?;
        let spec = pv.spec.clone().unwrap_or_default();
        let status = json!({"status": {"phase": "Bound", "capacity": spec.capacity, "accessModes": spec.access_modes}});
        let current = pvc.status.as_ref().map(|s| {
            json!({"status": {"phase": s.phase, "capacity": s.capacity, "accessModes": s.access_modes}})
        });
        if current.as_ref() != Some(&status) {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(|e| {
                    ApiError::new(
                        "updating the status of persistentvolumeclaim",
                        format!("{ns}/{name}"),
                        e,
                    )
                })?;
            self.events.normal(
                pvc,
                "ProvisioningSucceeded",
                format!("Successfully bound to volume {}", pv.name_any()),
            );
        }
        Ok(())
    }

    async fn reconcile_claim(&self, key: &str) -> Result<Action, ApiError> {
        let Some(pvc) = self.claims.get_key(key) else {
            return Ok(Action::Done);
        };
        if is_deleting(&pvc.metadata) {
            return Ok(Action::Done);
        }
        let volumes = self.volumes.list(None);
        let bound_to = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty());
        if let Some(v) = bound_to {
            match self.volumes.get("", &v) {
                Some(pv) if names_claim(&pv, &pvc) || claim_ref_key(&pv).is_none() => {
                    self.bind(&pvc, &pv).await?
                }
                Some(_) => {}
                None => {
                    let was_bound =
                        pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                    if was_bound {
                        let (ns, name) = split_key(key);
                        let patch = json!({"status": {"phase": "Lost"}});
                        self.pvc_api(ns)
                            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map_err(|e| {
                                ApiError::new("marking persistentvolumeclaim lost", key, e)
                            })?;
                        self.events.warning(&*pvc, "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!");
                    }
                }
            }
            return Ok(Action::Done);
        }
        let class_name = class_of(&pvc);
        let class = (!class_name.is_empty())
            .then(|| self.classes.get("", &class_name))
            .flatten();
        let wait_for_consumer = class
            .as_ref()
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        if let Some(pv) = volume_for(&pvc, &volumes, !wait_for_consumer) {
            self.bind(&pvc, pv).await?;
            return Ok(Action::Done);
        }
        if class_name.is_empty() {
            return Ok(Action::Done);
        }
        match class {
            None => self.events.warning(
                &*pvc,
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io {class_name:?} not found"),
            ),
            Some(c) => {
                let (ns, name) = split_key(key);
                let consumed = claim_in_use(name, &self.pods.list(Some(ns)));
                if wait_for_consumer && !consumed {
                    self.events.normal(
                        &*pvc,
                        "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding",
                    );
                } else {
                    self.events.normal(&*pvc, "ExternalProvisioning", format!(
                        "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                        c.provisioner
                    ));
                }
            }
        }
        Ok(Action::Done)
    }

    async fn reconcile_volume(&self, name: &str) -> Result<Action, ApiError> {
        let Some(pv) = self.volumes.get("", name) else {
            return Ok(Action::Done);
        };
        let Some(claim) = claim_ref_key(&pv) else {
            self.set_pv_phase(&pv, "Available").await?;
            return Ok(Action::Done);
        };
        let cached = self.claims.get_key(&claim);
        let present = match cached.filter(|c| names_claim(&pv, c)) {
            Some(_) => true,
            None => {
                // The cache may be behind a claim created a moment ago: ask.
                let (ns, n) = split_key(&claim);
                match self.pvc_api(ns).get_opt(n).await {
                    Ok(c) => c.is_some_and(|c| names_claim(&pv, &c)),
                    Err(e) => return Err(ApiError::new("reading persistentvolumeclaim", claim, e)),
                }
            }
        };
        if !present && matches!(phase_of_pv(&pv), "Bound" | "Available" | "Pending" | "") {
            let had_uid = pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| r.uid.as_deref())
                .is_some_and(|u| !u.is_empty());
            // A ref without uid is a pre-binding waiting for its claim.
            if had_uid {
                self.set_pv_phase(&pv, "Released").await?;
            }
        }
        Ok(Action::Done)
    }
}

#[async_trait::async_trait]
impl Reconciler for Binder {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "persistentvolume-binder"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        match key.strip_prefix(PV_KEY) {
            Some(name) => self.reconcile_volume(name).await,
            None => self.reconcile_claim(key).await,
        }
    }
}

pub(crate) fn start_protection(ctx: &Context) -> Option<JoinHandle<()>> {
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let pods = ctx.informers.informer::<Pod>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        claims.on_change(move |ch| {
            let c = ch.object();
            if is_deleting(&c.metadata) && !matches!(ch, Change::Deleted(_)) {
                q.add(key_of(&**c));
            }
        });
    }
    {
        let (q, claims) = (queue.clone(), claims.clone());
        pods.on_change(move |ch| {
            let gone = match ch {
                Change::Deleted(_) => true,
                Change::Updated { old, new } => !is_terminal(old) && is_terminal(new),
                Change::Added(_) => false,
            };
            if gone {
                for k in claims_of(ch.object()) {
                    if claims.get_key(&k).is_some_and(|c| is_deleting(&c.metadata)) {
                        q.add(k);
                    }
                }
            }
        });
    }
    let ready = {
        let (c, p) = (claims.clone(), pods.clone());
        async move {
            c.synced().await;
            p.synced().await;
        }
    };
    let r = Protection {
        ctx: ctx.clone(),
        claims,
        pods,
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        1,
        ready,
        ctx.stop.clone(),
    ))
}

struct Protection {
    ctx: Context,
    claims: Informer<PersistentVolumeClaim>,
    pods: Informer<Pod>,
}

#[async_trait::async_trait]
impl Reconciler for Protection {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "pvc-protection"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        let Some(pvc) = self.claims.get_key(key) else {
            return Ok(Action::Done);
        };
        let finalizers = pvc.finalizers();
        if !is_deleting(&pvc.metadata) || !finalizers.iter().any(|f| f == PVC_PROTECTION) {
            return Ok(Action::Done);
        }
        let (ns, name) = split_key(key);
        if claim_in_use(name, &self.pods.list(Some(ns))) {
            return Ok(Action::Done);
        }
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != PVC_PROTECTION).collect();
        // The resourceVersion makes the patch fail on a concurrent change to the list.
        let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": pvc.metadata.resource_version}});
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), ns);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(e) if !is_not_found(&e) => Err(ApiError::new(
                "removing the finalizer of persistentvolumeclaim",
                key,
                e,
            )),
            _ => Ok(Action::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pvc(name: &str, uid: &str, class: &str, size: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": size}}}
        }))
        .unwrap()
    }

    fn pv(
        name: &str,
        class: &str,
        size: &str,
        claim: Option<(&str, &str)>,
        phase: &str,
    ) -> Arc<PersistentVolume> {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "storageClassName": class,
                     "capacity": {"storage": size}, "hostPath": {"path": "/x"}},
            "status": {"phase": phase},
        });
        if let Some((n, uid)) = claim {
            v["spec"]["claimRef"] = json!({"namespace": "default", "name": n, "uid": uid});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn claims_bind_to_their_volume_or_the_smallest_that_fits() {
        let c = pvc("data", "u1", "manual", "1Gi");
        let vols = vec![
            pv("big", "manual", "10Gi", None, "Available"),
            pv("small", "manual", "2Gi", None, "Available"),
            pv("tiny", "manual", "500Mi", None, "Available"),
            pv("other-class", "fast", "1Gi", None, "Available"),
        ];
        assert_eq!(volume_for(&c, &vols, true).unwrap().name_any(), "small");
        assert!(
            volume_for(&c, &vols, false).is_none(),
            "WaitForFirstConsumer"
        );
        let mut with_own = vols.clone();
        with_own.push(pv(
            "pvc-u1",
            "manual",
            "1Gi",
            Some(("data", "u1")),
            "Pending",
        ));
        assert_eq!(
            volume_for(&c, &with_own, false).unwrap().name_any(),
            "pvc-u1"
        );
        // A ref to an earlier claim of the same name (another uid) is not this claim's.
        let stale = vec![pv(
            "pvc-u0",
            "manual",
            "1Gi",
            Some(("data", "u0")),
            "Released",
        )];
        assert!(volume_for(&c, &stale, true).is_none());
        let mut rwx = c.clone();
        rwx.spec.as_mut().unwrap().access_modes = Some(vec!["ReadWriteMany".into()]);
        assert!(volume_for(&rwx, &vols, true).is_none());
    }

    #[test]
    fn a_claim_is_in_use_while_a_running_pod_mounts_it() {
        let pod = |phase: &str| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": "p", "namespace": "default"},
                    "spec": {"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]},
                    "status": {"phase": phase},
                }))
                .unwrap(),
            )
        };
        assert!(claim_in_use("data", &[pod("Running")]));
        assert!(!claim_in_use("data", &[pod("Succeeded")]));
        assert!(!claim_in_use("other", &[pod("Running")]));
        assert_eq!(claims_of(&pod("Running")), vec!["default/data".to_string()]);
    }
}
