//! A StatefulSet pod's identity (kube's `stateful_set_utils.go`): its name
//! `<set>-<ordinal>`, the labels naming it, its hostname and subdomain, and its claims
//! `<claim>-<set>-<ordinal>` made from `volumeClaimTemplates` and mounted as the pod
//! volumes of the templates' names; with the owner references on claims that
//! `persistentVolumeClaimRetentionPolicy` asks for.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::history::CONTROLLER_REVISION_HASH;
use crate::util;

pub(crate) const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub(crate) const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The ordinal of a pod named `<set>-<n>`, if it is one of the set's names.
pub(crate) fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    n.parse().ok()
}

pub(crate) fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

pub(crate) fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// The set's claim templates.
pub(crate) fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or(&[])
}

/// The pod of `ordinal` made from `template` at revision `revision` (kube's
/// `newVersionedStatefulSetPod`).
pub(crate) fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    revision: &str,
    ordinal: i32,
) -> Pod {
    let set_name = set.name_any();
    let ns = set.namespace().unwrap_or_default();
    let name = pod_name(&set_name, ordinal);
    let mut pod = util::pod_from_template(template, &ns, "", util::controller_ref(set));
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH.into(), revision.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name.clone());
    if let Some(svc) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(svc.into());
    }
    let templates = claim_templates(set);
    if !templates.is_empty() {
        let mut volumes: Vec<Volume> = templates
            .iter()
            .map(|t| {
                let claim = t.name_any();
                Volume {
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name(&claim, &set_name, ordinal),
                        read_only: None,
                    }),
                    name: claim,
                    ..Default::default()
                }
            })
            .collect();
        for v in spec.volumes.take().unwrap_or_default() {
            if !volumes.iter().any(|c| c.name == v.name) {
                volumes.push(v);
            }
        }
        spec.volumes = Some(volumes);
    }
    pod
}

/// The claims the pod of `ordinal` needs, as they should be created.
pub(crate) fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set_name = set.name_any();
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            let mut claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&t.name_any(), &set_name, ordinal)),
                    namespace: set.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            };
            let refs = claim_owner_refs(set, None, true, &[]);
            claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
            claim
        })
        .collect()
}

/// A plain (not controller) reference, as kube's `setOwnerRef` writes on claims.
fn plain_ref<K: Resource<DynamicType = ()>>(o: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: o.name_any(),
        uid: o.meta().uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The owner references a claim should carry (kube's `updateClaimOwnerRefs`): the set's
/// when `whenDeleted: Delete` and the pod is kept; the pod's when `whenScaled: Delete`
/// and the pod is scaled away; others' references left alone.
pub(crate) fn claim_owner_refs(
    set: &StatefulSet,
    pod: Option<&Pod>,
    in_range: bool,
    existing: &[OwnerReference],
) -> Vec<OwnerReference> {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let deleted = policy.and_then(|p| p.when_deleted.as_deref()) == Some("Delete");
    let scaled = policy.and_then(|p| p.when_scaled.as_deref()) == Some("Delete");
    let set_uid = set.meta().uid.clone().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.metadata.uid.clone());
    let mut refs: Vec<OwnerReference> = existing
        .iter()
        .filter(|r| r.uid != set_uid && Some(&r.uid) != pod_uid.as_ref())
        .cloned()
        .collect();
    let scaled_down = !in_range && scaled;
    if deleted && !scaled_down {
        refs.push(plain_ref(set));
    }
    if scaled_down {
        if let Some(p) = pod {
            refs.push(plain_ref(p));
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(policy: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "set-uid"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}],
                             "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
                "persistentVolumeClaimRetentionPolicy": policy,
            },
        }))
        .unwrap()
    }

    #[test]
    fn ordinals_parse_only_the_sets_own_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
    }

    #[test]
    fn a_pod_gets_its_identity_and_claims() {
        let s = set(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
        let t = s.spec.as_ref().unwrap().template.clone();
        let p = new_pod(&s, &t, "web-abc", 2);
        assert_eq!(p.name_any(), "web-2");
        let l = p.labels();
        assert_eq!(l[POD_NAME_LABEL], "web-2");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        assert_eq!(l[CONTROLLER_REVISION_HASH], "web-abc");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.unwrap();
        assert_eq!(vols.len(), 2);
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-2"
        );
        let claims = new_claims(&s, 2);
        assert_eq!(claims[0].name_any(), "www-web-2");
        assert_eq!(claims[0].labels()["app"], "nginx");
        assert!(claims[0].metadata.owner_references.is_none());
    }

    #[test]
    fn retention_policy_decides_claim_owners() {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "web-3", "uid": "pod-uid"}}))
                .unwrap();
        let s = set(json!({"whenDeleted": "Delete", "whenScaled": "Retain"}));
        let r = claim_owner_refs(&s, Some(&pod), false, &[]);
        assert_eq!(
            r.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(),
            ["set-uid"]
        );
        let s = set(json!({"whenDeleted": "Retain", "whenScaled": "Delete"}));
        assert!(claim_owner_refs(&s, Some(&pod), true, &[]).is_empty());
        let r = claim_owner_refs(&s, Some(&pod), false, &[]);
        assert_eq!(
            r.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(),
            ["pod-uid"]
        );
        let s = set(json!({"whenDeleted": "Delete", "whenScaled": "Delete"}));
        let r = claim_owner_refs(&s, Some(&pod), true, &[]);
        assert_eq!(
            r.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(),
            ["set-uid"]
        );
        let s = set(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
        assert!(claim_owner_refs(&s, Some(&pod), false, &r).is_empty());
    }
}
