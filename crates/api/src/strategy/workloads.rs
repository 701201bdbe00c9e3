//! Workload controllers' objects: Deployments, ReplicaSets, StatefulSets, DaemonSets.

use serde_json::{json, Value};

use super::pod::{pod_spec_defaults, validate_pod_spec};
use super::{Cause, Strategy};
use crate::object::default_at;

/// The four share validation (selector matches the template, immutable selector) and
/// differ only in their defaults.
pub(super) struct Workload(fn(&mut Value));

pub(super) const DEPLOYMENT: Workload = Workload(deployment);
pub(super) const REPLICA_SET: Workload = Workload(replica_set);
pub(super) const STATEFUL_SET: Workload = Workload(stateful_set);
pub(super) const DAEMON_SET: Workload = Workload(daemon_set);

impl Strategy for Workload {
    fn default(&self, obj: &mut Value) {
        (self.0)(obj);
        if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
            pod_spec_defaults(spec);
        }
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        workload(obj, causes);
    }
    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        if old.pointer("/spec/selector") != new.pointer("/spec/selector") {
            causes.push(Cause::invalid(
                "spec.selector",
                &new.pointer("/spec/selector")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                "field is immutable",
            ));
        }
    }
}

fn deployment(obj: &mut Value) {
    default_at(obj, &["spec", "replicas"], json!(1));
    default_at(obj, &["spec", "revisionHistoryLimit"], json!(10));
    default_at(obj, &["spec", "progressDeadlineSeconds"], json!(600));
    rolling_update(
        obj,
        "strategy",
        json!({"maxUnavailable": "25%", "maxSurge": "25%"}),
    );
}

/// `spec.<field>.type` defaults to RollingUpdate; a RollingUpdate strategy gets each of
/// `defaults`' fields in `rollingUpdate` that it leaves out.
fn rolling_update(obj: &mut Value, field: &str, defaults: Value) {
    default_at(obj, &["spec", field, "type"], json!("RollingUpdate"));
    if obj.pointer(&format!("/spec/{field}/type")) != Some(&json!("RollingUpdate")) {
        return;
    }
    for (k, v) in defaults.as_object().into_iter().flatten() {
        default_at(obj, &["spec", field, "rollingUpdate", k], v.clone());
    }
}

fn replica_set(obj: &mut Value) {
    default_at(obj, &["spec", "replicas"], json!(1));
}

fn stateful_set(obj: &mut Value) {
    default_at(obj, &["spec", "replicas"], json!(1));
    default_at(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
    default_at(obj, &["spec", "revisionHistoryLimit"], json!(10));
    rolling_update(obj, "updateStrategy", json!({"partition": 0}));
    default_at(
        obj,
        &["spec", "persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
}

fn daemon_set(obj: &mut Value) {
    default_at(obj, &["spec", "revisionHistoryLimit"], json!(10));
    rolling_update(
        obj,
        "updateStrategy",
        json!({"maxUnavailable": 1, "maxSurge": 0}),
    );
}

fn workload(obj: &Value, causes: &mut Vec<Cause>) {
    let sel = obj.pointer("/spec/selector");
    if sel.is_none_or(Value::is_null) {
        causes.push(Cause::required("spec.selector"));
    } else if let Some(sel) = sel {
        let empty = sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
            && sel
                .get("matchExpressions")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty());
        if empty {
            causes.push(Cause::invalid(
                "spec.selector",
                "{}",
                "empty selector is invalid for deployment",
            ));
        } else if let Ok(s) = crate::selector::LabelSelector::from_object(sel) {
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .map(|l| crate::object::labels(&serde_json::json!({"metadata": {"labels": l}})))
                .unwrap_or_default();
            if !s.matches(&labels) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &serde_json::to_string(&labels).unwrap_or_default(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(r) = obj.pointer("/spec/replicas") {
        if r.as_i64().is_none_or(|r| r < 0) {
            causes.push(Cause::invalid(
                "spec.replicas",
                &r.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    validate_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
}
