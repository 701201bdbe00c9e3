//! StorageClasses (storage.k8s.io/v1) and the two admission plugins of claims, as
//! kube-apiserver's StorageClass strategy, `DefaultStorageClass` and
//! `StorageObjectInUseProtection` plugins.
//!
//! Contract: a class defaults to `reclaimPolicy: Delete` and `volumeBindingMode:
//! Immediate`; its provisioner, parameters, reclaim policy and binding mode never change.
//! A new claim gets the `kubernetes.io/pvc-protection` finalizer (the controller manager's
//! `pvc-protection` removes it once no pod uses the claim). On claim create the API server
//! reads every class and calls [`admit_claim_class`]: a claim that names no class (the
//! field absent, not `""`) gets the default class's name; the I/O is the API server's,
//! the rules are here.

use serde_json::{json, Value};

use super::{Cause, Strategy};
use crate::object::default_at;

/// The annotation that makes a class the default (`"true"`).
pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const IS_DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// Whether the class is marked default.
pub fn is_default_class(sc: &Value) -> bool {
    let ann = sc.pointer("/metadata/annotations");
    [IS_DEFAULT_CLASS, IS_DEFAULT_CLASS_BETA]
        .iter()
        .any(|k| ann.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"))
}

/// The default class among `classes`: with several, the newest (then the first by name),
/// as kube's `GetDefaultClass`.
pub fn default_storage_class(classes: &[Value]) -> Option<&Value> {
    let created = |c: &Value| {
        c.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .max_by(|a, b| {
            created(a)
                .cmp(&created(b))
                .then_with(|| crate::object::name(b).cmp(crate::object::name(a)))
        })
}

/// `DefaultStorageClass` admission of a new claim: one without `spec.storageClassName`
/// (and without the beta class annotation) gets the default class, if there is one.
pub fn admit_claim_class(pvc: &mut Value, classes: &[Value]) {
    let annotated = pvc
        .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .is_some();
    let Some(spec) = pvc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if annotated || spec.get("storageClassName").is_some_and(|v| !v.is_null()) {
        return;
    }
    if let Some(d) = default_storage_class(classes) {
        spec.insert("storageClassName".into(), json!(crate::object::name(d)));
    }
}

pub(super) struct StorageClass;

impl Strategy for StorageClass {
    fn has_generation(&self) -> bool {
        false
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, &["reclaimPolicy"], json!("Delete"));
        default_at(obj, &["volumeBindingMode"], json!("Immediate"));
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let provisioner = obj.get("provisioner").and_then(Value::as_str).unwrap_or("");
        if provisioner.is_empty() {
            causes.push(Cause::required("provisioner"));
        }
        let policy = obj.get("reclaimPolicy").and_then(Value::as_str);
        if let Some(p) = policy.filter(|p| !["Delete", "Retain"].contains(p)) {
            causes.push(Cause::not_supported(
                "reclaimPolicy",
                p,
                &["Delete", "Retain"],
            ));
        }
        let mode = obj.get("volumeBindingMode").and_then(Value::as_str);
        let modes = ["Immediate", "WaitForFirstConsumer"];
        if let Some(m) = mode.filter(|m| !modes.contains(m)) {
            causes.push(Cause::not_supported("volumeBindingMode", m, &modes));
        }
    }
    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        for (field, what) in [
            ("parameters", "parameters"),
            ("provisioner", "provisioner"),
            ("reclaimPolicy", "reclaimPolicy"),
            ("volumeBindingMode", "volumeBindingMode"),
        ] {
            if old.get(field) != new.get(field) {
                causes.push(Cause::forbidden(
                    field,
                    &format!("updates to {what} are forbidden."),
                ));
            }
        }
    }
}

/// `StorageObjectInUseProtection` on a new claim.
pub(super) fn protect_claim(obj: &mut Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(l) = list.as_array_mut() {
        if !l.iter().any(|f| f == PVC_PROTECTION) {
            l.push(json!(PVC_PROTECTION));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::for_kind;

    fn sc(name: &str, default: bool, created: &str) -> Value {
        let mut o =
            json!({"metadata": {"name": name, "creationTimestamp": created}, "provisioner": "p"});
        if default {
            o["metadata"]["annotations"] = json!({IS_DEFAULT_CLASS: "true"});
        }
        o
    }

    #[test]
    fn claims_without_a_class_get_the_newest_default() {
        let classes = [
            sc("old", true, "2024-01-01T00:00:00Z"),
            sc("new", true, "2025-01-01T00:00:00Z"),
            sc("other", false, "2026-01-01T00:00:00Z"),
        ];
        let mut pvc = json!({"metadata": {"name": "c"}, "spec": {}});
        admit_claim_class(&mut pvc, &classes);
        assert_eq!(pvc["spec"]["storageClassName"], "new");
        // An explicit "" means no class, and a named class stays.
        for set in [json!(""), json!("other")] {
            let mut pvc = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": set}});
            admit_claim_class(&mut pvc, &classes);
            assert_eq!(pvc["spec"]["storageClassName"], set);
        }
        let mut pvc = json!({"metadata": {"name": "c"}, "spec": {}});
        admit_claim_class(&mut pvc, &classes[2..]);
        assert!(pvc["spec"].get("storageClassName").is_none());
    }

    #[test]
    fn classes_default_and_keep_their_provisioner() {
        let s = for_kind("StorageClass");
        let mut o = sc("a", false, "");
        s.default(&mut o);
        assert_eq!(
            (&o["reclaimPolicy"], &o["volumeBindingMode"]),
            (&json!("Delete"), &json!("Immediate"))
        );
        let mut changed = o.clone();
        changed["provisioner"] = json!("q");
        let mut causes = Vec::new();
        s.validate_update(&o, &changed, &mut causes);
        assert_eq!(causes.len(), 1);
        assert!(causes[0]
            .message
            .contains("updates to provisioner are forbidden"));
        let mut pvc = json!({"metadata": {"name": "c"}});
        protect_claim(&mut pvc);
        protect_claim(&mut pvc);
        assert_eq!(pvc["metadata"]["finalizers"], json!([PVC_PROTECTION]));
    }
}
