//! HorizontalPodAutoscalers (stored as `autoscaling/v2`): kube's v2 defaulting (one
//! replica at least, a CPU target of 80 % when no metric is given, the missing scaling
//! rules of a given `behavior`) and kube's validation of the spec, with its messages.

use serde_json::{json, Value};

use super::{Cause, Strategy};
use crate::object::default_at;
use crate::quantity::Quantity;

pub(super) struct HorizontalPodAutoscaler;

impl Strategy for HorizontalPodAutoscaler {
    fn default(&self, obj: &mut Value) {
        default_at(obj, &["spec", "minReplicas"], json!(1));
        let no_metrics = obj
            .pointer("/spec/metrics")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if no_metrics && obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"]["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]);
        }
        let Some(b) = obj.pointer_mut("/spec/behavior").filter(|b| b.is_object()) else {
            return;
        };
        // kube's GenerateHPAScaleUpRules / GenerateHPAScaleDownRules.
        default_rules(
            b,
            "scaleUp",
            Some(0),
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                   {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
        default_rules(
            b,
            "scaleDown",
            None,
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let int = |p: &str| spec.pointer(p).and_then(Value::as_i64);
        let min = int("/minReplicas");
        let max = int("/maxReplicas").unwrap_or(0);
        if let Some(m) = min.filter(|m| *m < 1) {
            causes.push(Cause::invalid_raw(
                "spec.minReplicas",
                &m.to_string(),
                "must be greater than or equal to 1",
            ));
        }
        if max < 1 {
            causes.push(Cause::invalid_raw(
                "spec.maxReplicas",
                &max.to_string(),
                "must be greater than 0",
            ));
        }
        if min.is_some_and(|m| max < m) {
            causes.push(Cause::invalid_raw(
                "spec.maxReplicas",
                &max.to_string(),
                "must be greater than or equal to `minReplicas`",
            ));
        }
        for f in ["kind", "name"] {
            let v = spec
                .pointer(&format!("/scaleTargetRef/{f}"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if v.is_empty() {
                causes.push(Cause::required(format!("spec.scaleTargetRef.{f}")));
            } else if v.contains('/') || v.contains('%') || v == "." || v == ".." {
                causes.push(Cause::invalid(
                    format!("spec.scaleTargetRef.{f}"),
                    v,
                    "may not contain '/' or '%' and may not be '.' or '..'",
                ));
            }
        }
        if let Some(ms) = spec.get("metrics").and_then(Value::as_array) {
            for (i, m) in ms.iter().enumerate() {
                metric(m, &format!("spec.metrics[{i}]"), causes);
            }
        }
        if let Some(b) = spec.get("behavior").filter(|b| b.is_object()) {
            for dir in ["scaleUp", "scaleDown"] {
                if let Some(r) = b.get(dir).filter(|r| r.is_object()) {
                    rules(r, &format!("spec.behavior.{dir}"), causes);
                }
            }
        }
    }
}

fn default_rules(b: &mut Value, dir: &str, window: Option<i64>, policies: Value) {
    if !b.get(dir).is_some_and(Value::is_object) {
        b[dir] = json!({});
    }
    let r = &mut b[dir];
    if r.get("policies").is_none_or(Value::is_null) {
        r["policies"] = policies;
    }
    if r.get("selectPolicy").is_none_or(Value::is_null) {
        r["selectPolicy"] = json!("Max");
    }
    if let Some(w) = window {
        if r.get("stabilizationWindowSeconds")
            .is_none_or(Value::is_null)
        {
            r["stabilizationWindowSeconds"] = json!(w);
        }
    }
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

fn metric(m: &Value, path: &str, causes: &mut Vec<Cause>) {
    let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
    let sources = [
        ("Resource", "resource"),
        ("ContainerResource", "containerResource"),
        ("Pods", "pods"),
        ("Object", "object"),
        ("External", "external"),
    ];
    let set: Vec<&str> = sources
        .iter()
        .filter(|(_, f)| m.get(*f).is_some_and(|v| !v.is_null()))
        .map(|(t, _)| *t)
        .collect();
    if ty.is_empty() {
        causes.push(Cause::required_because(
            format!("{path}.type"),
            "must specify a metric source type",
        ));
        return;
    }
    if !METRIC_TYPES.contains(&ty) {
        causes.push(Cause::not_supported(
            format!("{path}.type"),
            ty,
            METRIC_TYPES,
        ));
        return;
    }
    if set.len() > 1 {
        causes.push(Cause::forbidden(
            path.to_string(),
            "must populate the given metric source only",
        ));
    }
    let Some((_, field)) = sources.iter().find(|(t, _)| *t == ty) else {
        return;
    };
    let Some(src) = m.get(*field).filter(|v| v.is_object()) else {
        causes.push(Cause::required_because(
            format!("{path}.{field}"),
            "must populate information for the given metric source",
        ));
        return;
    };
    let p = format!("{path}.{field}");
    match ty {
        "Resource" | "ContainerResource" => {
            if src
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                causes.push(Cause::required_because(
                    format!("{p}.name"),
                    "must specify a resource name",
                ));
            }
            if ty == "ContainerResource"
                && src
                    .get("container")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
            {
                causes.push(Cause::required_because(
                    format!("{p}.container"),
                    "must specify a container",
                ));
            }
            let t = src.get("target").unwrap_or(&Value::Null);
            if t.get("averageUtilization").is_none() && t.get("averageValue").is_none() {
                causes.push(Cause::required_because(
                    format!("{p}.target.averageUtilization"),
                    "must set either a target raw value or a target utilization",
                ));
            } else if t.get("averageUtilization").is_some() && t.get("averageValue").is_some() {
                causes.push(Cause::forbidden(
                    format!("{p}.target.averageValue"),
                    "may not set both a target raw value and a target utilization",
                ));
            }
            target(t, &format!("{p}.target"), causes);
        }
        _ => {
            if src
                .pointer("/metric/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                causes.push(Cause::required_because(
                    format!("{p}.metric.name"),
                    "must specify a metric name",
                ));
            }
            if ty == "Object"
                && src
                    .pointer("/describedObject/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
            {
                causes.push(Cause::required(format!("{p}.describedObject.kind")));
            }
            target(
                src.get("target").unwrap_or(&Value::Null),
                &format!("{p}.target"),
                causes,
            );
        }
    }
}

const TARGET_TYPES: &[&str] = &["AverageValue", "Utilization", "Value"];

fn target(t: &Value, path: &str, causes: &mut Vec<Cause>) {
    let ty = t.get("type").and_then(Value::as_str).unwrap_or_default();
    if ty.is_empty() {
        causes.push(Cause::required_because(
            format!("{path}.type"),
            "must specify a metric target type",
        ));
    } else if !TARGET_TYPES.contains(&ty) {
        causes.push(Cause::not_supported(
            format!("{path}.type"),
            ty,
            TARGET_TYPES,
        ));
    }
    if let Some(u) = t.get("averageUtilization").and_then(Value::as_i64) {
        if u < 1 {
            causes.push(Cause::invalid_raw(
                format!("{path}.averageUtilization"),
                &u.to_string(),
                "must be greater than 0",
            ));
        }
    }
    for f in ["value", "averageValue"] {
        let Some(v) = t.get(f).filter(|v| !v.is_null()) else {
            continue;
        };
        let s = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        match s.parse::<Quantity>() {
            Ok(q) if q.is_negative() || q.is_zero() => causes.push(Cause::invalid(
                format!("{path}.{f}"),
                &s,
                "must be positive",
            )),
            Ok(_) => {}
            Err(e) => causes.push(Cause::invalid(format!("{path}.{f}"), &s, &e.to_string())),
        }
    }
    let need = match ty {
        "Utilization" => Some("averageUtilization"),
        "AverageValue" => Some("averageValue"),
        "Value" => Some("value"),
        _ => None,
    };
    if let Some(f) = need.filter(|f| t.get(*f).is_none_or(Value::is_null)) {
        causes.push(Cause::required_because(
            format!("{path}.{f}"),
            &format!("must set {f} when the target type is {ty}"),
        ));
    }
}

fn rules(r: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(w) = r.get("stabilizationWindowSeconds").and_then(Value::as_i64) {
        if w < 0 {
            causes.push(Cause::invalid_raw(
                format!("{path}.stabilizationWindowSeconds"),
                &w.to_string(),
                "must be greater than or equal to zero",
            ));
        } else if w > 3600 {
            causes.push(Cause::invalid_raw(
                format!("{path}.stabilizationWindowSeconds"),
                &w.to_string(),
                "must be less than or equal to 3600",
            ));
        }
    }
    if let Some(s) = r.get("selectPolicy").and_then(Value::as_str) {
        const SELECT: &[&str] = &["Disabled", "Max", "Min"];
        if !SELECT.contains(&s) {
            causes.push(Cause::not_supported(
                format!("{path}.selectPolicy"),
                s,
                SELECT,
            ));
        }
    }
    let policies = r.get("policies").and_then(Value::as_array);
    if policies.is_some_and(Vec::is_empty) {
        causes.push(Cause::required_because(
            format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, p) in policies.into_iter().flatten().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if ty != "Pods" && ty != "Percent" {
            causes.push(Cause::not_supported(
                format!("{pp}.type"),
                ty,
                &["Percent", "Pods"],
            ));
        }
        let value = p.get("value").and_then(Value::as_i64).unwrap_or(0);
        if value <= 0 {
            causes.push(Cause::invalid_raw(
                format!("{pp}.value"),
                &value.to_string(),
                "must be greater than zero",
            ));
        }
        let period = p.get("periodSeconds").and_then(Value::as_i64).unwrap_or(0);
        if period <= 0 {
            causes.push(Cause::invalid_raw(
                format!("{pp}.periodSeconds"),
                &period.to_string(),
                "must be greater than zero",
            ));
        } else if period > 1800 {
            causes.push(Cause::invalid_raw(
                format!("{pp}.periodSeconds"),
                &period.to_string(),
                "must be less than or equal to 1800",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(spec: Value) -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"}, "spec": spec})
    }

    fn messages(obj: &Value) -> Vec<String> {
        let mut o = obj.clone();
        HorizontalPodAutoscaler.default(&mut o);
        let mut c = Vec::new();
        HorizontalPodAutoscaler.validate(&o, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_fill_min_replicas_a_cpu_target_and_missing_rules() {
        let mut o = hpa(
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}),
        );
        HorizontalPodAutoscaler.default(&mut o);
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        let b = &o["spec"]["behavior"];
        assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(b["scaleUp"]["policies"].as_array().unwrap().len(), 2);
        assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 30);
        assert_eq!(b["scaleDown"]["selectPolicy"], "Max");
        assert!(messages(&o).is_empty(), "{:?}", messages(&o));
    }

    #[test]
    fn min_above_max_and_bad_metrics_are_refused_with_kubes_messages() {
        let m = messages(&hpa(
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 5, "maxReplicas": 2}),
        ));
        assert_eq!(
            m,
            ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
        );
        let m = messages(&hpa(
            json!({"scaleTargetRef": {"name": "web"}, "maxReplicas": 0,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 0}}},
                {"type": "Bogus"}],
            "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 4000}]}}}),
        ));
        for want in [
            "spec.maxReplicas: Invalid value: 0: must be greater than 0",
            "spec.scaleTargetRef.kind: Required value",
            "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
            "spec.metrics[1].type: Unsupported value: \"Bogus\"",
            "spec.behavior.scaleUp.policies[0].value: Invalid value: 0: must be greater than zero",
            "spec.behavior.scaleUp.policies[0].periodSeconds: Invalid value: 4000: must be less than or equal to 1800",
        ] {
            assert!(m.iter().any(|s| s.starts_with(want)), "{want} not in {m:?}");
        }
    }
}
