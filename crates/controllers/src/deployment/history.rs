//! What ties a Deployment to its ReplicaSets over time: the `pod-template-hash` that
//! names each ReplicaSet, the template comparison that finds the current one, and the
//! revision annotations `kubectl rollout history` and `rollout undo` read.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label a Deployment adds to its ReplicaSets, their selectors and their pods.
pub(crate) const HASH_LABEL: &str = "pod-template-hash";
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// kube's bound on the revision-history annotation.
const MAX_HISTORY_CHARS: usize = 2000;

/// kube's `SafeEncodeString` alphabet: no vowels, no look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-32a over the template's JSON (kube hashes
/// Go's printing of the struct, which we cannot reproduce; what matters is that equal
/// templates hash equal and the hash is stable across restarts) and the collision count,
/// rendered in kube's safe alphabet.
pub(crate) fn pod_template_hash(
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> String {
    let mut h = Fnv32a::default();
    h.write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        h.write(&u64::from(c as u32).to_le_bytes());
    }
    safe_encode(&h.0.to_string())
}

fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

struct Fnv32a(u32);

impl Default for Fnv32a {
    fn default() -> Self {
        Fnv32a(0x811c_9dc5)
    }
}

impl Fnv32a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u32::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// kube's `EqualIgnoreHash`: the two templates are the same but for the hash label
/// (empty and missing fields count as equal, as Go's semantic equality has it).
pub(crate) fn equal_ignore_hash(a: Option<&PodTemplateSpec>, b: Option<&PodTemplateSpec>) -> bool {
    normalized(a) == normalized(b)
}

fn normalized(t: Option<&PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(l) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    prune(&mut v);
    v
}

/// Drops nulls and empty maps and lists, recursively.
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => {
            m.retain(|_, v| prune(v));
            !m.is_empty()
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                prune(x);
            }
            !a.is_empty()
        }
        _ => true,
    }
}

/// The ReplicaSet's revision (0 when missing or unreadable).
pub(crate) fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// kube's `MaxRevision`.
pub(crate) fn max_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    sets.into_iter().map(revision_of).max().unwrap_or(0)
}

/// Annotations the Deployment keeps to itself (kube's `skipCopyAnnotation`).
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// kube's `SetNewReplicaSetAnnotations`: copies the Deployment's annotations (so
/// `kubernetes.io/change-cause` shows in `rollout history`), raises the revision to
/// `new_revision` (an old ReplicaSet brought back by an undo gets the new number and
/// keeps its old ones in the revision history), and for a ReplicaSet about to be created
/// the replica annotations. Returns whether anything changed.
pub(crate) fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    replicas: i32,
    max_replicas: i32,
) -> bool {
    let mut changed = false;
    let anns = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || anns.get(k) == Some(v) {
            continue;
        }
        anns.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = anns.get(REVISION).cloned();
    let old_n = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return changed,
        },
    };
    if old_n < new_revision {
        anns.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = anns.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                anns.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut list: Vec<&str> = history.split(',').collect();
                let mut len = history.len() + old.len() + 1;
                let mut start = 0;
                while len > MAX_HISTORY_CHARS && start < list.len() {
                    len -= list[start].len() + 1;
                    start += 1;
                }
                if len <= MAX_HISTORY_CHARS {
                    list.push(&old);
                    let joined = list[start..].join(",");
                    anns.insert(REVISION_HISTORY.into(), joined);
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas, max_replicas) {
        changed = true;
    }
    changed
}

/// Sets the desired- and max-replicas annotations; whether they changed.
pub(crate) fn set_replicas_annotations(
    rs: &mut ReplicaSet,
    replicas: i32,
    max_replicas: i32,
) -> bool {
    let anns = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, replicas), (MAX_REPLICAS, max_replicas)] {
        let v = v.to_string();
        if anns.get(k) != Some(&v) {
            anns.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// Whether the replica annotations differ from these values.
pub(crate) fn replicas_annotations_need_update(
    rs: &ReplicaSet,
    replicas: i32,
    max_replicas: i32,
) -> bool {
    annotation(&rs.metadata, DESIRED_REPLICAS) != Some(replicas.to_string().as_str())
        || annotation(&rs.metadata, MAX_REPLICAS) != Some(max_replicas.to_string().as_str())
}

/// The desired-replicas annotation, if readable.
pub(crate) fn desired_replicas(rs: &ReplicaSet) -> Option<i32> {
    annotation(&rs.metadata, DESIRED_REPLICAS)?.parse().ok()
}

/// The max-replicas annotation, if readable.
pub(crate) fn max_replicas(rs: &ReplicaSet) -> Option<i32> {
    annotation(&rs.metadata, MAX_REPLICAS)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn the_hash_is_stable_and_safe() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        assert!(!a.is_empty() && a.len() <= 10);
        assert!(a.bytes().all(|b| ALPHANUMS.contains(&b)), "{a}");
        // Known FNV-32a vectors: "" and "a".
        let mut h = Fnv32a::default();
        assert_eq!(h.0, 0x811c_9dc5);
        h.write(b"a");
        assert_eq!(h.0, 0xe40c_292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a = template("nginx:1");
        let mut b = a.clone();
        b.metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), "abc".into());
        assert!(equal_ignore_hash(Some(&a), Some(&b)));
        assert!(!equal_ignore_hash(Some(&a), Some(&template("nginx:2"))));
        let mut c = a.clone();
        c.metadata.get_or_insert_with(Default::default).annotations = Some(BTreeMap::new());
        assert!(
            equal_ignore_hash(Some(&a), Some(&c)),
            "empty equals missing"
        );
    }

    fn rs(anns: &[(&str, &str)]) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                annotations: Some(
                    anns.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_new_replica_set_gets_the_next_revision_and_the_change_cause() {
        let mut d = Deployment::default();
        d.metadata.annotations = Some(
            [
                ("kubernetes.io/change-cause", "kubectl set image"),
                (LAST_APPLIED, "{}"),
                (REVISION, "7"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let mut r = rs(&[]);
        assert!(set_new_rs_annotations(&d, &mut r, 3, false, 4, 5));
        let a = r.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(
            a.get("kubernetes.io/change-cause").map(String::as_str),
            Some("kubectl set image")
        );
        assert!(!a.contains_key(LAST_APPLIED));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("5"));
        assert!(
            !set_new_rs_annotations(&d, &mut r, 3, true, 4, 5),
            "idempotent"
        );
    }

    #[test]
    fn an_undone_replica_set_keeps_its_old_revisions() {
        let d = Deployment::default();
        let mut r = rs(&[(REVISION, "1")]);
        assert!(set_new_rs_annotations(&d, &mut r, 3, true, 1, 1));
        assert_eq!(revision_of(&r), 3);
        assert_eq!(annotation(&r.metadata, REVISION_HISTORY), Some("1"));
        set_new_rs_annotations(&d, &mut r, 5, true, 1, 1);
        assert_eq!(annotation(&r.metadata, REVISION_HISTORY), Some("1,3"));
        assert_eq!(max_revision([&r, &rs(&[(REVISION, "4")])]), 5);
        assert!(
            !set_new_rs_annotations(&d, &mut r, 2, true, 1, 1),
            "never lowered"
        );
    }
}
