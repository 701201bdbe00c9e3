//! Core kinds without much of their own: namespaces, ConfigMaps and Secrets, volumes,
//! and the kinds that carry no generation.

use serde_json::{json, Value};

use super::{Cause, NameRule, Strategy};
use crate::object::default_at;

/// Kinds with no rules of their own.
pub(super) struct Generic;
impl Strategy for Generic {}

/// Kinds without a spec/status split, whose writes never bump `metadata.generation`.
pub(super) struct NoGeneration;
impl Strategy for NoGeneration {
    fn has_generation(&self) -> bool {
        false
    }
}

pub(super) struct Namespace;
impl Strategy for Namespace {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }
    /// A namespace is created Active; its status is not left empty.
    fn resets_status_on_create(&self) -> bool {
        false
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, &["spec", "finalizers"], json!(["kubernetes"]));
        default_at(obj, &["status", "phase"], json!("Active"));
        let name = crate::object::name(obj).to_string();
        default_at(
            obj,
            &["metadata", "labels", "kubernetes.io/metadata.name"],
            json!(name),
        );
    }
    fn terminates_before_delete(&self) -> bool {
        true
    }
}

/// ConfigMaps and Secrets: key syntax, and `immutable`; a Secret's type never changes,
/// and a service-account token Secret names its ServiceAccount.
pub(super) struct ConfigData;
impl Strategy for ConfigData {
    fn has_generation(&self) -> bool {
        false
    }
    fn default(&self, obj: &mut Value) {
        if obj.get("kind").and_then(Value::as_str) == Some("Secret") {
            default_at(obj, &["type"], json!("Opaque"));
            merge_string_data(obj);
        }
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let is_secret = obj.get("kind").and_then(Value::as_str) == Some("Secret");
        if is_secret
            && obj.get("type").and_then(Value::as_str)
                == Some(crate::service_account_token::SECRET_TYPE)
        {
            let names = obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(crate::service_account_token::NAME_ANNOTATION))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !names {
                causes.push(Cause::required(format!(
                    "metadata.annotations[{}]",
                    crate::service_account_token::NAME_ANNOTATION
                )));
            }
        }
        for field in ["data", "binaryData", "stringData"] {
            let Some(m) = obj.get(field).and_then(Value::as_object) else {
                continue;
            };
            for k in m.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
                if !ok {
                    causes.push(Cause::invalid(
                        format!("{field}[{k}]"),
                        k,
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
    }
    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        let same = |p: &str| old.pointer(p) == new.pointer(p);
        if new.get("kind").and_then(Value::as_str) == Some("Secret") && !same("/type") {
            let ty = new.get("type").and_then(Value::as_str).unwrap_or_default();
            causes.push(Cause::invalid("type", ty, "field is immutable"));
        }
        if old.get("immutable") == Some(&Value::Bool(true))
            && (!same("/data") || !same("/binaryData"))
        {
            causes.push(Cause::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

/// A Secret's write-only `stringData`, as kube-apiserver reads a Secret: each value is
/// stored base64-encoded under `data` (over a `data` value of the same key) and
/// `stringData` itself is never stored.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if strings.is_empty() {
        return;
    }
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in strings {
        let text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

pub(super) struct PersistentVolumeClaim;
impl Strategy for PersistentVolumeClaim {
    fn prepare_for_create(&self, obj: &mut Value) {
        super::storage::protect_claim(obj);
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, &["spec", "volumeMode"], json!("Filesystem"));
        default_at(obj, &["status", "phase"], json!("Pending"));
    }
}

pub(super) struct PersistentVolume;
impl Strategy for PersistentVolume {
    fn default(&self, obj: &mut Value) {
        default_at(
            obj,
            &["spec", "persistentVolumeReclaimPolicy"],
            json!("Retain"),
        );
        default_at(obj, &["spec", "volumeMode"], json!("Filesystem"));
        default_at(obj, &["status", "phase"], json!("Pending"));
    }
}
