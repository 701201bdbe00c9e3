//! Version conversion of kinds served in more than one version from one storage.
//!
//! HorizontalPodAutoscalers are served as `autoscaling/v2` (preferred, and the storage
//! version) and `autoscaling/v1`. As kube-apiserver does, v1 keeps what it has no field for
//! in annotations, so an object read and written back through v1 loses nothing:
//! - `autoscaling.alpha.kubernetes.io/metrics`: spec metrics other than the CPU
//!   utilization target (v1's `targetCPUUtilizationPercentage`), in v1's metric form;
//! - `autoscaling.alpha.kubernetes.io/behavior`: `spec.behavior`;
//! - `autoscaling.alpha.kubernetes.io/current-metrics`: status metrics other than the CPU
//!   utilization;
//! - `autoscaling.alpha.kubernetes.io/conditions`: `status.conditions`.
//!
//! Every other kind is stored in its one served version; converting it only sets
//! `apiVersion`.

use serde_json::{json, Map, Value};

use crate::kinds::Kind;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// The served kind objects of `kind` are stored as, when that is another version (HPA
/// v1 is stored as v2); None for the kinds stored as they are served.
pub fn storage_kind(kind: &Kind) -> Option<&'static Kind> {
    match (kind.group, kind.version, kind.kind) {
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            crate::kinds::by_kind("autoscaling/v2", kind.kind)
        }
        _ => crate::kinds::custom_storage(kind),
    }
}

/// Converts `obj` (of any served version of its kind) to `to` in place.
pub fn to_version(obj: &mut Value, to: &str) {
    let from = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let is_hpa = obj.get("kind").and_then(Value::as_str) == Some("HorizontalPodAutoscaler");
    if is_hpa && from != to {
        match (from.as_str(), to) {
            ("autoscaling/v1", "autoscaling/v2") => hpa_v1_to_v2(obj),
            ("autoscaling/v2", "autoscaling/v1") => hpa_v2_to_v1(obj),
            _ => {}
        }
    }
    obj["apiVersion"] = json!(to);
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()
}

/// Removes annotation `key` and parses it as a JSON value.
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let a = annotations(obj)?;
    let s = a.remove(key)?;
    if a.is_empty() {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("annotations");
        }
    }
    serde_json::from_str(s.as_str()?).ok()
}

fn set_annotation(obj: &mut Value, key: &str, v: &Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let md = &mut obj["metadata"];
    if !md.get("annotations").is_some_and(Value::is_object) {
        md["annotations"] = json!({});
    }
    md["annotations"][key] = json!(v.to_string());
}

fn take(m: &mut Value, key: &str) -> Option<Value> {
    m.as_object_mut()?.remove(key).filter(|v| !v.is_null())
}

fn is_cpu_utilization(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer("/resource/target/averageUtilization").is_some()
}

fn hpa_v2_to_v1(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
        let metrics = take(spec, "metrics")
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default();
        let behavior = take(spec, "behavior");
        let mut other = Vec::new();
        for m in metrics {
            if spec.get("targetCPUUtilizationPercentage").is_none() && is_cpu_utilization(&m) {
                spec["targetCPUUtilizationPercentage"] = m
                    .pointer("/resource/target/averageUtilization")
                    .cloned()
                    .unwrap_or_default();
            } else {
                other.push(metric_spec_v2_to_v1(&m));
            }
        }
        if !other.is_empty() {
            set_annotation(obj, METRICS, &Value::Array(other));
        }
        if let Some(b) = behavior {
            set_annotation(obj, BEHAVIOR, &b);
        }
    }
    if let Some(status) = obj.get_mut("status").filter(|s| s.is_object()) {
        let current = take(status, "currentMetrics")
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default();
        let conditions = take(status, "conditions");
        let mut other = Vec::new();
        for m in current {
            let cpu = m.get("type").and_then(Value::as_str) == Some("Resource")
                && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu");
            match m.pointer("/resource/current/averageUtilization") {
                Some(u) if cpu && status.get("currentCPUUtilizationPercentage").is_none() => {
                    status["currentCPUUtilizationPercentage"] = u.clone();
                }
                _ => other.push(metric_status_v2_to_v1(&m)),
            }
        }
        if !other.is_empty() {
            set_annotation(obj, CURRENT_METRICS, &Value::Array(other));
        }
        if let Some(c) = conditions {
            set_annotation(obj, CONDITIONS, &c);
        }
    }
}

fn hpa_v1_to_v2(obj: &mut Value) {
    let other = take_annotation(obj, METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let behavior = take_annotation(obj, BEHAVIOR);
    let current = take_annotation(obj, CURRENT_METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let conditions = take_annotation(obj, CONDITIONS);
    if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
        let mut metrics = Vec::new();
        if let Some(cpu) = take(spec, "targetCPUUtilizationPercentage") {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu}}}));
        }
        metrics.extend(other.iter().map(metric_spec_v1_to_v2));
        if !metrics.is_empty() {
            spec["metrics"] = Value::Array(metrics);
        }
        if let Some(b) = behavior {
            spec["behavior"] = b;
        }
    }
    if !obj.get("status").is_some_and(Value::is_object) {
        return;
    }
    let status = &mut obj["status"];
    let mut metrics = Vec::new();
    if let Some(cpu) = take(status, "currentCPUUtilizationPercentage") {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": cpu}}}));
    }
    metrics.extend(current.iter().map(metric_status_v1_to_v2));
    if !metrics.is_empty() {
        status["currentMetrics"] = Value::Array(metrics);
    }
    if let Some(c) = conditions {
        status["conditions"] = c;
    }
}

/// Moves the fields present in `from` to `to` under new names (`(v1 name, v2 name)`).
fn copy_fields(from: &Value, to: &mut Value, names: &[(&str, &str)]) {
    for (a, b) in names {
        if let Some(v) = from.get(*a).filter(|v| !v.is_null()) {
            to[*b] = v.clone();
        }
    }
}

/// The fields of a metric target as (v1 name, v2 name).
const TARGET: &[(&str, &str)] = &[
    ("targetAverageUtilization", "averageUtilization"),
    ("targetAverageValue", "averageValue"),
    ("targetValue", "value"),
];
/// The fields of a metric's current value as (v1 name, v2 name).
const CURRENT: &[(&str, &str)] = &[
    ("currentAverageUtilization", "averageUtilization"),
    ("currentAverageValue", "averageValue"),
    ("currentValue", "value"),
];

/// [`copy_fields`] the other way: from each pair's second name to its first.
fn copy_back(from: &Value, to: &mut Value, names: &[(&str, &str)]) {
    let flipped: Vec<(&str, &str)> = names.iter().map(|(a, b)| (*b, *a)).collect();
    copy_fields(from, to, &flipped);
}

/// A v2 `MetricTarget` in v1's `target…` fields (utilization only for resources).
fn target_v2_to_v1(t: &Value, out: &mut Value, utilization: bool) {
    copy_back(t, out, if utilization { TARGET } else { &TARGET[1..] });
}

fn target_v1_to_v2(m: &Value) -> Value {
    let mut t = json!({});
    copy_fields(m, &mut t, TARGET);
    let ty = if t.get("averageUtilization").is_some() {
        "Utilization"
    } else if t.get("averageValue").is_some() {
        "AverageValue"
    } else {
        "Value"
    };
    t["type"] = json!(ty);
    t
}

fn current_v2_to_v1(c: &Value, out: &mut Value) {
    copy_back(c, out, CURRENT);
}

fn current_v1_to_v2(m: &Value) -> Value {
    let mut c = json!({});
    copy_fields(m, &mut c, CURRENT);
    c
}

/// The lower-camel field of each metric source type.
fn source_field(ty: &str) -> &'static str {
    match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => "",
    }
}

/// A metric's type, the field its source is in, and the source.
fn source_of(m: &Value) -> Option<(&str, &'static str, &Value)> {
    let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
    let field = source_field(ty);
    Some((ty, field, m.get(field)?))
}

/// The fields of a (container) resource metric source, the same in both versions.
const RESOURCE_NAME: &[(&str, &str)] = &[("name", "name"), ("container", "container")];

/// The fields of a Pods, Object or External metric's identifier as (v1 name, v2 name
/// under `metric`): v1 calls an External metric's selector `metricSelector`.
fn metric_fields(ty: &str) -> [(&'static str, &'static str); 2] {
    let selector = if ty == "External" {
        "metricSelector"
    } else {
        "selector"
    };
    [("metricName", "name"), (selector, "selector")]
}

fn metric_spec_v2_to_v1(m: &Value) -> Value {
    let Some((ty, field, src)) = source_of(m) else {
        return m.clone();
    };
    let target = src.get("target").cloned().unwrap_or_default();
    let metric = src.get("metric").unwrap_or(&Value::Null);
    let mut out = json!({});
    match ty {
        "Resource" | "ContainerResource" => {
            copy_fields(src, &mut out, RESOURCE_NAME);
            target_v2_to_v1(&target, &mut out, true);
        }
        "Pods" | "External" => {
            copy_back(metric, &mut out, &metric_fields(ty));
            target_v2_to_v1(&target, &mut out, false);
        }
        "Object" => {
            copy_fields(src, &mut out, &[("describedObject", "target")]);
            copy_back(metric, &mut out, &metric_fields(ty));
            copy_fields(
                &target,
                &mut out,
                &[("value", "targetValue"), ("averageValue", "averageValue")],
            );
        }
        _ => {}
    }
    json!({"type": ty, field: out})
}

fn metric_spec_v1_to_v2(m: &Value) -> Value {
    let Some((ty, field, src)) = source_of(m) else {
        return m.clone();
    };
    let mut out = json!({});
    if matches!(ty, "Resource" | "ContainerResource") {
        copy_fields(src, &mut out, RESOURCE_NAME);
        out["target"] = target_v1_to_v2(src);
        return json!({"type": ty, field: out});
    }
    let mut metric = json!({});
    copy_fields(src, &mut metric, &metric_fields(ty));
    out["metric"] = metric;
    if ty == "Object" {
        copy_fields(src, &mut out, &[("target", "describedObject")]);
        let mut t = json!({});
        copy_fields(
            src,
            &mut t,
            &[("targetValue", "value"), ("averageValue", "averageValue")],
        );
        t["type"] = json!(if t.get("averageValue").is_some() {
            "AverageValue"
        } else {
            "Value"
        });
        out["target"] = t;
    } else {
        out["target"] = target_v1_to_v2(src);
    }
    json!({"type": ty, field: out})
}

fn metric_status_v2_to_v1(m: &Value) -> Value {
    let Some((ty, field, src)) = source_of(m) else {
        return m.clone();
    };
    let current = src.get("current").cloned().unwrap_or_default();
    let mut out = json!({});
    if matches!(ty, "Resource" | "ContainerResource") {
        copy_fields(src, &mut out, RESOURCE_NAME);
    } else {
        if ty == "Object" {
            copy_fields(src, &mut out, &[("describedObject", "target")]);
        }
        let metric = src.get("metric").unwrap_or(&Value::Null);
        copy_back(metric, &mut out, &metric_fields(ty));
    }
    current_v2_to_v1(&current, &mut out);
    if ty == "Object" {
        copy_fields(&current, &mut out, &[("averageValue", "averageValue")]);
    }
    json!({"type": ty, field: out})
}

fn metric_status_v1_to_v2(m: &Value) -> Value {
    let Some((ty, field, src)) = source_of(m) else {
        return m.clone();
    };
    let mut out = json!({});
    if matches!(ty, "Resource" | "ContainerResource") {
        copy_fields(src, &mut out, RESOURCE_NAME);
    } else {
        if ty == "Object" {
            copy_fields(src, &mut out, &[("target", "describedObject")]);
        }
        let mut metric = json!({});
        copy_fields(src, &mut metric, &metric_fields(ty));
        out["metric"] = metric;
    }
    let mut current = current_v1_to_v2(src);
    if ty == "Object" {
        copy_fields(src, &mut current, &[("averageValue", "averageValue")]);
    }
    out["current"] = current;
    json!({"type": ty, field: out})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {"keep": "me"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "s", "apiVersion": "v1"}, "metric": {"name": "hits"}, "target": {"type": "Value", "value": "7"}}},
                    {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}}, "target": {"type": "AverageValue", "averageValue": "3"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 73, "averageValue": "73m"}}},
                    {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "90Mi"}}}
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]
            }
        })
    }

    #[test]
    fn v1_keeps_the_cpu_target_in_its_field_and_the_rest_in_annotations() {
        let mut o = v2();
        to_version(&mut o, "autoscaling/v1");
        assert_eq!(o["apiVersion"], "autoscaling/v1");
        assert_eq!(o["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(o["spec"].get("metrics").is_none());
        assert_eq!(o["status"]["currentCPUUtilizationPercentage"], 73);
        let a = &o["metadata"]["annotations"];
        assert_eq!(a["keep"], "me");
        let m: Value = serde_json::from_str(a[METRICS].as_str().unwrap()).unwrap();
        assert_eq!(m.as_array().unwrap().len(), 5);
        assert_eq!(
            m[0],
            json!({"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}})
        );
        assert_eq!(
            m[3],
            json!({"type": "Object", "object": {"target": {"kind": "Service", "name": "s", "apiVersion": "v1"}, "metricName": "hits", "targetValue": "7"}})
        );
        assert!(a.get(CONDITIONS).is_some() && a.get(BEHAVIOR).is_some());
    }

    #[test]
    fn v2_to_v1_and_back_loses_nothing() {
        let mut o = v2();
        to_version(&mut o, "autoscaling/v1");
        to_version(&mut o, "autoscaling/v2");
        let mut want = v2();
        // v1 has only the utilization of the CPU; its average value is not kept.
        want["status"]["currentMetrics"][0] = json!({"type": "Resource",
            "resource": {"name": "cpu", "current": {"averageUtilization": 73}}});
        assert_eq!(o, want);
    }

    #[test]
    fn kubectl_autoscale_from_v1_is_a_cpu_metric_in_v2() {
        let mut o = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "burn"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "burn", "apiVersion": "apps/v1"},
                "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 0, "desiredReplicas": 0}});
        to_version(&mut o, "autoscaling/v2");
        assert_eq!(
            o["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert!(o["metadata"].get("annotations").is_none());
        let v1 = crate::kinds::by_kind("autoscaling/v1", "HorizontalPodAutoscaler").unwrap();
        assert_eq!(
            storage_kind(v1).map(|k| k.api_version()).as_deref(),
            Some("autoscaling/v2")
        );
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
        to_version(&mut pod, "v1");
        assert_eq!(pod, json!({"apiVersion": "v1", "kind": "Pod"}));
    }
}
