//! What several controllers share: pod readiness and availability as kube's `podutil`
//! reads them, controller references (owner, adoption, release), label selectors, pods
//! made from a template, and the errors of API calls.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as KubeSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use skiff_api::selector::LabelSelector;

/// A failed API call of a reconcile: what was being done, to which object, and why.
#[derive(Debug, thiserror::Error)]
#[error("{action} {object}")]
pub struct ApiError {
    pub action: &'static str,
    pub object: String,
    #[source]
    pub source: kube::Error,
}

impl ApiError {
    pub fn new(action: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        ApiError {
            action,
            object: object.into(),
            source,
        }
    }

    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        status_code(&self.source)
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether the error is a 404 (the object is already gone).
pub fn is_not_found(e: &kube::Error) -> bool {
    status_code(e) == Some(404)
}

/// Whether the error is a 409 (a concurrent writer or an existing name).
pub fn is_conflict(e: &kube::Error) -> bool {
    status_code(e) == Some(409)
}

/// The selector error of an object whose selector does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid label selector: {0}")]
pub struct SelectorError(pub String);

/// Compiles a Kubernetes label selector. A missing selector selects nothing (as
/// controllers treat it); an empty one selects everything.
pub fn selector(s: Option<&KubeSelector>) -> Result<LabelSelector, SelectorError> {
    let Some(s) = s else {
        return Ok(LabelSelector::nothing());
    };
    let v = serde_json::to_value(s).map_err(|e| SelectorError(e.to_string()))?;
    LabelSelector::from_object(&v).map_err(|e| SelectorError(e.to_string()))
}

/// The object's labels (an empty map when it has none).
pub fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the object is being deleted.
pub fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The pod's phase ("" when unset).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the pod has ended (Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// kube's `IsPodActive`: not ended and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_deleting(&pod.metadata)
}

/// The pod's condition of `type_`, if reported.
pub fn pod_condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// kube's `IsPodAvailable`: ready for at least `min_ready` by `now`.
pub fn is_available(pod: &Pod, min_ready: Duration, now: Timestamp) -> bool {
    let Some(c) = pod_condition(pod, "Ready").filter(|c| c.status == "True") else {
        return false;
    };
    if min_ready.is_zero() {
        return true;
    }
    match &c.last_transition_time {
        Some(Time(t)) => t.as_second() + min_ready.as_secs() as i64 <= now.as_second(),
        None => false,
    }
}

/// Seconds until a ready pod becomes available under `min_ready` (None if it already is
/// or is not ready): when to look again.
pub fn until_available(pod: &Pod, min_ready: Duration, now: Timestamp) -> Option<Duration> {
    let c = pod_condition(pod, "Ready").filter(|c| c.status == "True")?;
    let t = c.last_transition_time.as_ref()?.0.as_second() + min_ready.as_secs() as i64;
    let left = t - now.as_second();
    (left > 0).then(|| Duration::from_secs(left as u64))
}

/// A pod for `template`, controlled by `owner`, named `<prefix>` plus a random suffix by
/// the API server (kube's `GetPodFromTemplate`).
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// kube's generateName prefix for pods of `owner_name`: the name and a dash, cut so the
/// random suffix still fits in 63 characters.
pub fn generate_name_prefix(owner_name: &str) -> String {
    let mut p = format!("{owner_name}-");
    if p.len() > 58 {
        p.truncate(58);
    }
    p
}

/// Makes `owner` the controller of the object `name` (adoption), unless another
/// controller got there first; guarded by the object's resourceVersion.
pub async fn adopt<K>(
    api: &Api<K>,
    obj: &K,
    owner: OwnerReference,
) -> Result<(), ApiError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner);
    set_owner_refs(api, obj, refs, "adopt").await
}

/// Removes `owner_uid` from the object's owner references (release).
pub async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<(), ApiError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner_uid);
    set_owner_refs(api, obj, refs, "release").await
}

async fn set_owner_refs<K>(
    api: &Api<K>,
    obj: &K,
    refs: Vec<OwnerReference>,
    action: &'static str,
) -> Result<(), ApiError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": obj.meta().resource_version,
        "uid": obj.meta().uid,
    }});
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(ApiError::new(action, obj.name_any(), e)),
    }
}

/// The integer or percentage of `v` against `total`, rounded up or down as kube's
/// `intstr.GetScaledValueFromIntOrPercent`.
pub fn scaled_value(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    round_up: bool,
) -> Result<i32, String> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        None => Ok(0),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            Ok(v as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn percentages_round_as_kubernetes_does() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(Some(&p("25%")), 10, true), Ok(3));
        assert_eq!(scaled_value(Some(&p("25%")), 10, false), Ok(2));
        assert_eq!(scaled_value(Some(&p("100%")), 3, false), Ok(3));
        assert_eq!(scaled_value(Some(&IntOrString::Int(2)), 10, true), Ok(2));
        assert_eq!(scaled_value(None, 10, true), Ok(0));
        assert!(scaled_value(Some(&p("x%")), 10, true).is_err());
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now = Timestamp::from_second(1_000).unwrap();
        let mut pod = Pod::default();
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(995).unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(is_ready(&pod));
        assert!(is_available(&pod, Duration::ZERO, now));
        assert!(is_available(&pod, Duration::from_secs(5), now));
        assert!(!is_available(&pod, Duration::from_secs(10), now));
        assert_eq!(
            until_available(&pod, Duration::from_secs(10), now),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_missing_selector_selects_nothing() {
        let s = selector(None).unwrap();
        assert!(!s.matches(&BTreeMap::new()));
        let s = selector(Some(&KubeSelector::default())).unwrap();
        assert!(s.matches(&BTreeMap::new()));
    }
}
