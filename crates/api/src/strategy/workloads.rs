//! Workload controllers' objects: Deployments, ReplicaSets, StatefulSets, DaemonSets.

use serde_json::{json, Value};

use super::pod::{pod_spec_defaults, validate_pod_spec};
use super::{Cause, Strategy};
use crate::object::default_at;

/// The four share validation (selector matches the template, immutable selector) and
/// differ only in their defaults.
pub(super) struct Workload(fn(&mut Value));

pub(super) const DEPLOYMENT: DeploymentStrategy = DeploymentStrategy;
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

/// Deployments: the workloads' rules, plus kube's `ValidateDeploymentSpec` (strategy,
/// minReadySeconds, revisionHistoryLimit, progressDeadlineSeconds), and a status write
/// that may also carry annotations (kube's deployment status strategy keeps only the
/// spec and labels of the stored object, which is how the controller sets
/// `deployment.kubernetes.io/revision` on the Deployment with its status).
pub(super) struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {
    fn default(&self, obj: &mut Value) {
        Workload(deployment).default(obj);
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        workload(obj, causes);
        deployment_spec(obj, causes);
    }
    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        Workload(deployment).validate_update(old, new, causes);
    }
    fn prepare_for_status_update(&self, new: &mut Value, old: &Value) {
        let status = new.get("status").cloned();
        let annotations = new.pointer("/metadata/annotations").cloned();
        *new = old.clone();
        match status {
            Some(s) if !s.is_null() => new["status"] = s,
            _ => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            match annotations {
                Some(a) if !a.is_null() => {
                    m.insert("annotations".into(), a);
                }
                _ => {
                    m.remove("annotations");
                }
            }
        }
    }
}

const PERCENT_RULE: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

/// How kube prints an IntOrString in a field error: the number or the string, unquoted.
fn int_or_string_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// kube's `ValidatePositiveIntOrPercent`; returns the value it stands for (0 when absent
/// or invalid) and whether it is a percentage.
fn positive_int_or_percent(v: Option<&Value>, field: &str, causes: &mut Vec<Cause>) -> (i64, bool) {
    match v {
        None | Some(Value::Null) => (0, false),
        Some(Value::String(s)) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match digits {
                Some(d) => (d.parse().unwrap_or(i64::MAX), true),
                None => {
                    causes.push(Cause::invalid_raw(field, s, PERCENT_RULE));
                    (0, false)
                }
            }
        }
        Some(n) => {
            let i = n.as_i64().unwrap_or(0);
            if i < 0 {
                causes.push(Cause::invalid_raw(
                    field,
                    &i.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
            (i, false)
        }
    }
}

fn nonnegative(obj: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) -> Option<i64> {
    let v = obj.pointer(pointer).and_then(Value::as_i64)?;
    if v < 0 {
        causes.push(Cause::invalid_raw(
            field,
            &v.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    Some(v)
}

/// kube's `ValidateDeploymentSpec`, the parts the shared workload rules leave out.
fn deployment_spec(obj: &Value, causes: &mut Vec<Cause>) {
    match obj.pointer("/spec/strategy/type").and_then(Value::as_str) {
        Some("Recreate") => {
            if obj
                .pointer("/spec/strategy/rollingUpdate")
                .is_some_and(|v| !v.is_null())
            {
                causes.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") => {
            let ru = obj.pointer("/spec/strategy/rollingUpdate");
            if ru.is_none_or(Value::is_null) {
                causes.push(Cause::required_because(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                ));
            } else {
                let at = "spec.strategy.rollingUpdate";
                let unavailable_v = obj.pointer("/spec/strategy/rollingUpdate/maxUnavailable");
                let (unavailable, pct) =
                    positive_int_or_percent(unavailable_v, &format!("{at}.maxUnavailable"), causes);
                let (surge, _) = positive_int_or_percent(
                    obj.pointer("/spec/strategy/rollingUpdate/maxSurge"),
                    &format!("{at}.maxSurge"),
                    causes,
                );
                let text = unavailable_v
                    .map(int_or_string_text)
                    .unwrap_or_else(|| "0".into());
                if unavailable == 0 && surge == 0 {
                    causes.push(Cause::invalid_raw(
                        format!("{at}.maxUnavailable"),
                        &text,
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                if pct && unavailable > 100 {
                    causes.push(Cause::invalid_raw(
                        format!("{at}.maxUnavailable"),
                        &text,
                        "must not be greater than 100%",
                    ));
                }
            }
        }
        other => {
            let v = other.map(str::to_string).unwrap_or_default();
            causes.push(Cause::not_supported(
                "spec.strategy.type",
                &v,
                &["Recreate", "RollingUpdate"],
            ));
        }
    }
    let min_ready = nonnegative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", causes);
    nonnegative(
        obj,
        "/spec/revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        causes,
    );
    if let Some(deadline) = nonnegative(
        obj,
        "/spec/progressDeadlineSeconds",
        "spec.progressDeadlineSeconds",
        causes,
    ) {
        if deadline <= min_ready.unwrap_or(0) {
            causes.push(Cause::invalid_raw(
                "spec.progressDeadlineSeconds",
                &deadline.to_string(),
                "must be greater than minReadySeconds",
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

#[cfg(test)]
mod deployment_tests {
    use super::super::{for_kind, validate};
    use serde_json::{json, Value};

    fn deployment(strategy: Value, extra: Value) -> Value {
        let mut d = json!({
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": strategy,
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            d["spec"][k] = v.clone();
        }
        for_kind("Deployment").default(&mut d);
        d
    }

    fn messages(d: &Value) -> Vec<String> {
        validate("Deployment", d)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_valid_deployment_passes() {
        assert_eq!(
            messages(&deployment(json!({}), json!({}))),
            Vec::<String>::new()
        );
        let d = deployment(json!({"type": "Recreate"}), json!({}));
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
        assert_eq!(messages(&d), Vec::<String>::new());
    }

    #[test]
    fn max_surge_and_max_unavailable_may_not_both_be_zero() {
        let d = deployment(
            json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
            json!({}),
        );
        assert_eq!(
            messages(&d),
            ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]
        );
        let d = deployment(
            json!({"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": 0}}),
            json!({}),
        );
        assert_eq!(messages(&d).len(), 1);
        let d = deployment(
            json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            json!({}),
        );
        assert_eq!(messages(&d), Vec::<String>::new());
    }

    #[test]
    fn percentages_are_checked() {
        let d = deployment(
            json!({"rollingUpdate": {"maxSurge": "abc", "maxUnavailable": "150%"}}),
            json!({}),
        );
        let m = messages(&d);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].starts_with(
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: abc: a valid percent string"
            ),
            "{m:?}"
        );
        assert_eq!(
            m[1],
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 150%: must not be greater than 100%"
        );
        let d = deployment(json!({"rollingUpdate": {"maxSurge": -1}}), json!({}));
        assert_eq!(
            messages(&d),
            ["spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn recreate_forbids_rolling_update_parameters() {
        let d = deployment(
            json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}),
            json!({}),
        );
        assert_eq!(
            messages(&d),
            ["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
        );
    }

    #[test]
    fn the_progress_deadline_must_exceed_min_ready_seconds() {
        let d = deployment(
            json!({}),
            json!({"minReadySeconds": 10, "progressDeadlineSeconds": 10}),
        );
        assert_eq!(
            messages(&d),
            ["spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds"]
        );
        let d = deployment(json!({}), json!({"revisionHistoryLimit": -1}));
        assert_eq!(
            messages(&d),
            ["spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn status_writes_carry_annotations_but_not_spec_or_labels() {
        let old = json!({"metadata": {"name": "d", "labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "d", "labels": {"a": "2"},
            "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 5}, "status": {"replicas": 1}});
        for_kind("Deployment").prepare_for_status_update(&mut new, &old);
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["metadata"]["labels"]["a"], "1");
        assert_eq!(
            new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "2"
        );
        assert_eq!(new["status"]["replicas"], 1);
    }
}
