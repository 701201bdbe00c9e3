//! ControllerRevision history shared by DaemonSets and StatefulSets (kube's
//! `controller/history`).
//!
//! Contract: a revision of an owner is a ControllerRevision named `<owner>-<hash>`, owned
//! (as controller) by the owner, labelled with the owner's pod-template labels plus
//! `controller-revision-hash: <hash>`, whose `data` is the owner's pod template as a
//! strategic-merge patch, `{"spec":{"template":{…,"$patch":"replace"}}}` — the patch
//! `kubectl rollout undo` applies to go back to it and `kubectl rollout history
//! --revision` shows. `revision` numbers grow; a template that comes back (an undo) reuses
//! its revision, renumbered as the newest, instead of creating a duplicate. The hash is
//! FNV-32a over the data (and the owner's collision count, when set), its decimal digits
//! spelled in kube's `SafeEncodeString` alphabet so names never form words.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};
use skiff_api::selector::LabelSelector;

use crate::informer::Informer;
use crate::util::{self, ApiError};

/// The label naming a pod's (and a revision's) revision.
pub(crate) const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// kube's `rand.SafeEncodeString` alphabet: no vowels, no 0/1/3.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// How many names a collision may push us through before giving up for this reconcile.
const MAX_COLLISIONS: i32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("encode the pod template of {owner} as a revision")]
    Encode {
        owner: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("revision names of {owner} collide {MAX_COLLISIONS} times in a row; retrying")]
    Collisions { owner: String },
}

/// FNV-32a of `bytes`.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// kube's `rand.SafeEncodeString`.
fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The hash of revision data under `collision_count`.
pub(crate) fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// kube's `ControllerRevisionName`: the prefix cut so the name stays a valid name.
pub(crate) fn revision_name(prefix: &str, hash: &str) -> String {
    let prefix: String = prefix.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// The revision data of a pod template: a strategic-merge patch replacing the owner's
/// template.
pub(crate) fn template_patch(template: &PodTemplateSpec) -> Result<Value, serde_json::Error> {
    let mut t = serde_json::to_value(template)?;
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    Ok(json!({"spec": {"template": t}}))
}

/// The pod template a revision holds.
pub(crate) fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Whether a revision holds exactly `data` (compared as JSON, so key order is moot).
pub(crate) fn holds(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// The owner's revisions as the cache has them, oldest revision first: those it controls
/// and orphans its selector matches (to adopt).
pub(crate) fn revisions_of(
    informer: &Informer<ControllerRevision>,
    ns: &str,
    owner_uid: &str,
    selector: &LabelSelector,
) -> (Vec<Arc<ControllerRevision>>, Vec<Arc<ControllerRevision>>) {
    let mut owned = Vec::new();
    let mut orphans = Vec::new();
    informer.for_each(Some(ns), |r| match util::controller_of(&r.metadata) {
        Some(c) if c.uid == owner_uid => owned.push(r.clone()),
        None if !util::is_deleting(&r.metadata)
            && selector.matches(util::labels_of(&r.metadata)) =>
        {
            orphans.push(r.clone())
        }
        _ => {}
    });
    owned.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    (owned, orphans)
}

/// The highest revision number among `revs` (0 when none).
pub(crate) fn max_revision(revs: &[Arc<ControllerRevision>]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// The revision of the owner's current template, from the cache or newly created, and
/// the owner's collision count after it (changed when a name was taken).
pub(crate) struct Current {
    pub revision: ControllerRevision,
    pub collision_count: Option<i32>,
}

/// Finds or makes the revision holding `template` for `owner` (kube's
/// `constructHistory`/`getStatefulSetRevisions`): an equal revision is reused and
/// renumbered as the newest if it is not; otherwise a new one numbered after the newest
/// is created, its name moved by the collision count while the name is taken by other
/// data.
pub(crate) async fn current_revision<K>(
    api: &Api<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    revs: &[Arc<ControllerRevision>],
    collision_count: Option<i32>,
) -> Result<Current, HistoryError>
where
    K: Resource<DynamicType = ()>,
{
    let owner_name = owner.name_any();
    let data = template_patch(template).map_err(|source| HistoryError::Encode {
        owner: owner_name.clone(),
        source,
    })?;
    let newest = max_revision(revs);
    if let Some(found) = revs.iter().rev().find(|r| holds(r, &data)) {
        let mut revision = (**found).clone();
        if found.revision < newest {
            revision = renumber(api, found, newest + 1).await?;
        }
        return Ok(Current {
            revision,
            collision_count,
        });
    }
    let mut count = collision_count;
    for _ in 0..MAX_COLLISIONS {
        let h = hash(&data, count);
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH.into(), h.clone());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision_name(&owner_name, &h)),
                namespace: owner.meta().namespace.clone(),
                labels: Some(labels),
                // As kube: the owner's annotations (kubernetes.io/change-cause is what
                // `kubectl rollout history` lists).
                annotations: owner.meta().annotations.clone(),
                owner_references: Some(vec![util::controller_ref(owner)]),
                ..Default::default()
            },
            data: Some(RawExtension(data.clone())),
            revision: newest + 1,
        };
        match api.create(&PostParams::default(), &rev).await {
            Ok(created) => {
                return Ok(Current {
                    revision: created,
                    collision_count: count,
                })
            }
            Err(e) if util::is_conflict(&e) => {
                let name = rev.name_any();
                let existing = api
                    .get(&name)
                    .await
                    .map_err(|e| ApiError::new("get controllerrevision", &name, e))?;
                let ours = util::is_controlled_by(
                    &existing.metadata,
                    owner.meta().uid.as_deref().unwrap_or_default(),
                );
                if ours && holds(&existing, &data) {
                    // Our own create, not yet in the cache.
                    let revision = if existing.revision < newest {
                        renumber(api, &existing, newest + 1).await?
                    } else {
                        existing
                    };
                    return Ok(Current {
                        revision,
                        collision_count: count,
                    });
                }
                count = Some(count.unwrap_or(0).saturating_add(1));
            }
            Err(e) => {
                return Err(ApiError::new("create controllerrevision", rev.name_any(), e).into())
            }
        }
    }
    Err(HistoryError::Collisions { owner: owner_name })
}

/// Gives a revision a new number (kube's `UpdateControllerRevision`).
async fn renumber(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision, ApiError> {
    let name = rev.name_any();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"revision": revision})),
    )
    .await
    .map_err(|e| ApiError::new("renumber controllerrevision", name, e))
}

/// Adopts orphan revisions (guarded by their resourceVersion).
pub(crate) async fn adopt<K: Resource<DynamicType = ()>>(
    api: &Api<ControllerRevision>,
    owner: &K,
    orphans: &[Arc<ControllerRevision>],
) -> Result<(), ApiError> {
    for o in orphans {
        util::adopt(api, &**o, util::controller_ref(owner)).await?;
    }
    Ok(())
}

/// Deletes the oldest of `old` beyond `limit`, sparing those `live` names (revisions
/// that live pods still run, or that the owner's status names).
pub(crate) async fn truncate(
    api: &Api<ControllerRevision>,
    old: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> Result<(), ApiError> {
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    let mut candidates: Vec<&Arc<ControllerRevision>> = old
        .iter()
        .filter(|r| {
            !live.contains(&r.name_any())
                && !util::labels_of(&r.metadata)
                    .get(CONTROLLER_REVISION_HASH)
                    .is_some_and(|h| live.contains(h))
        })
        .collect();
    let mut excess = old.len().saturating_sub(limit);
    candidates.sort_by_key(|r| r.revision);
    for r in candidates {
        if excess == 0 {
            break;
        }
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(ApiError::new("delete controllerrevision", r.name_any(), e)),
        }
        excess -= 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_use_the_safe_alphabet_and_move_with_collisions() {
        let data = json!({"spec": {"template": {"$patch": "replace"}}});
        let a = hash(&data, None);
        let b = hash(&data, Some(1));
        assert_ne!(a, b);
        assert_eq!(a, hash(&data, None));
        assert!(a.bytes().all(|c| ALPHANUMS.contains(&c)), "{a}");
        // FNV-32a's published test vector.
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        // kube: each byte indexes the alphabet modulo its length (b'0' = 48 -> 21 -> '4').
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        assert_eq!(revision_name("web", "abc"), "web-abc");
    }

    #[test]
    fn the_patch_replaces_the_template_and_reads_back() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
        }))
        .unwrap();
        let p = template_patch(&t).unwrap();
        assert_eq!(p.pointer("/spec/template/$patch"), Some(&json!("replace")));
        let rev = ControllerRevision {
            data: Some(RawExtension(p.clone())),
            ..Default::default()
        };
        assert_eq!(template_of(&rev), Some(t));
        assert!(holds(&rev, &p));
    }
}
