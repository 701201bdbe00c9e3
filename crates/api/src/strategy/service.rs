//! Services: defaults, validation, and the ClusterIP the client may leave out on update.
//! Address allocation itself needs the store and lives in the API server.

use serde_json::{json, Value};

use super::{Cause, NameRule, Strategy};
use crate::object::default_at;

pub(super) struct Service;

impl Strategy for Service {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035
    }

    fn default(&self, obj: &mut Value) {
        default_at(obj, &["spec", "type"], json!("ClusterIP"));
        default_at(obj, &["spec", "sessionAffinity"], json!("None"));
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty != "ExternalName" {
            default_at(obj, &["spec", "ipFamilies"], json!(["IPv4"]));
            default_at(obj, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
            default_at(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            default_at(obj, &["spec", "externalTrafficPolicy"], json!("Cluster"));
        }
        if let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") {
            for p in ports {
                default_at(p, &["protocol"], json!("TCP"));
                if p.get("targetPort").is_none_or(Value::is_null) {
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    p["targetPort"] = port;
                }
            }
        }
        default_at(obj, &["status", "loadBalancer"], json!({}));
    }

    /// A client that leaves the ClusterIP out keeps the allocated one.
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        let given = new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !given && new.get("spec").is_some_and(Value::is_object) {
            for k in ["clusterIP", "clusterIPs"] {
                if let Some(v) = old.pointer(&format!("/spec/{k}")) {
                    new["spec"][k] = v.clone();
                }
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        service(obj, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        let old_ip = old.pointer("/spec/clusterIP");
        let new_ip = new.pointer("/spec/clusterIP");
        let external = |v: &Value| v.pointer("/spec/type") == Some(&json!("ExternalName"));
        if new_ip.is_some_and(|v| !v.is_null() && v != "")
            && old_ip != new_ip
            && !external(old)
            && !external(new)
        {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                new_ip.and_then(Value::as_str).unwrap_or_default(),
                "may not change once set",
            ));
        }
    }
}

fn service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.type".into(),
            message: format!("Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        });
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
        causes.push(Cause::required("spec.ports"));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let n = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&n) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}
