//! core/v1 ReplicationControllers: the ReplicaSet's predecessor, whose selector is a plain
//! label map (every pair must match) instead of a LabelSelector.
//!
//! Defaults and validation follow kube-apiserver's (`SetDefaults_ReplicationController`,
//! `ValidateReplicationController`). Unlike a ReplicaSet's, an RC's selector may change
//! on update. Status writes, generation bumps and the status reset on create are the
//! pipeline's defaults for a kind with a status subresource.

use serde_json::{json, Map, Value};

use super::pod::{pod_spec_defaults, validate_pod_spec};
use super::{Cause, Strategy};
use crate::object::default_at;

pub(super) struct ReplicationController;

impl Strategy for ReplicationController {
    fn default(&self, obj: &mut Value) {
        // The template's labels stand in for an empty selector and empty object labels.
        if let Some(labels) = obj
            .pointer("/spec/template/metadata/labels")
            .filter(|l| l.is_object())
            .cloned()
        {
            if is_empty_map(obj.pointer("/spec/selector")) {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("selector".into(), labels.clone());
                }
            }
            if is_empty_map(obj.pointer("/metadata/labels")) {
                if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    md.insert("labels".into(), labels);
                }
            }
        }
        default_at(obj, &["spec", "replicas"], json!(1));
        if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
            pod_spec_defaults(spec);
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        nonnegative(obj, "minReadySeconds", causes);
        let selector = obj.pointer("/spec/selector").and_then(Value::as_object);
        if selector.is_none_or(Map::is_empty) {
            causes.push(Cause::required("spec.selector"));
        }
        nonnegative(obj, "replicas", causes);
        let Some(template) = obj.pointer("/spec/template").filter(|t| !t.is_null()) else {
            causes.push(Cause::required("spec.template"));
            return;
        };
        let labels = template
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        if let Some(selector) = selector.filter(|s| !s.is_empty()) {
            let matches = selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
            if !matches {
                causes.push(Cause::invalid_raw(
                    "spec.template.metadata.labels",
                    &go_map(labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        let spec = template.get("spec");
        validate_pod_spec(spec, "spec.template.spec", causes);
        let policy = spec
            .and_then(|s| s.get("restartPolicy"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if policy != "Always" {
            causes.push(Cause::not_supported(
                "spec.template.spec.restartPolicy",
                policy,
                &["Always"],
            ));
        }
        if let Some(ads) = spec
            .and_then(|s| s.get("activeDeadlineSeconds"))
            .filter(|v| !v.is_null())
        {
            causes.push(Cause::invalid_raw(
                "spec.template.spec.activeDeadlineSeconds",
                &ads.to_string(),
                "activeDeadlineSeconds in ReplicationController is not Supported",
            ));
        }
    }
}

fn is_empty_map(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_none_or(Map::is_empty)
}

fn nonnegative(obj: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(v) = obj
        .pointer(&format!("/spec/{field}"))
        .and_then(Value::as_i64)
    {
        if v < 0 {
            causes.push(Cause::invalid_raw(
                format!("spec.{field}"),
                &v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// A label map as kube prints it in a field error (Go's `%#v`, keys sorted).
fn go_map(labels: Option<&Map<String, Value>>) -> String {
    let Some(labels) = labels else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::{for_kind, validate, validate_update};
    use serde_json::{json, Value};

    fn rc(spec: Value) -> Value {
        let mut rc = json!({"metadata": {"name": "nginx", "namespace": "default"}, "spec": spec});
        for_kind("ReplicationController").default(&mut rc);
        rc
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels},
               "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}})
    }

    fn messages(rc: &Value) -> Vec<String> {
        validate("ReplicationController", rc)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_take_the_template_labels() {
        let o = rc(json!({"template": template(json!({"app": "nginx"}))}));
        assert_eq!(o["spec"]["replicas"], 1);
        assert_eq!(o["spec"]["selector"], json!({"app": "nginx"}));
        assert_eq!(o["metadata"]["labels"], json!({"app": "nginx"}));
        assert_eq!(o["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(messages(&o), Vec::<String>::new());

        // What the user gave is kept.
        let mut given = json!({"metadata": {"name": "nginx", "labels": {"team": "a"}},
            "spec": {"replicas": 0, "selector": {"app": "nginx"},
                     "template": template(json!({"app": "nginx", "v": "1"}))}});
        for_kind("ReplicationController").default(&mut given);
        assert_eq!(given["spec"]["replicas"], 0);
        assert_eq!(given["spec"]["selector"], json!({"app": "nginx"}));
        assert_eq!(given["metadata"]["labels"], json!({"team": "a"}));
        assert_eq!(messages(&given), Vec::<String>::new());
    }

    #[test]
    fn validation_matches_kube() {
        let o = rc(
            json!({"selector": {"app": "web"}, "template": template(json!({"app": "nginx", "v": "1"}))}),
        );
        assert_eq!(
            messages(&o),
            [
                r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"nginx", "v":"1"}: `selector` does not match template `labels`"#
            ]
        );

        let o = rc(json!({"replicas": -1, "minReadySeconds": -2, "template": {
            "metadata": {"labels": {"app": "a"}},
            "spec": {"restartPolicy": "Never", "activeDeadlineSeconds": 5,
                     "containers": [{"name": "c", "image": "i"}]}}}));
        assert_eq!(
            messages(&o),
            [
                "spec.minReadySeconds: Invalid value: -2: must be greater than or equal to 0",
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.template.spec.activeDeadlineSeconds: Invalid value: 5: activeDeadlineSeconds in ReplicationController is not Supported",
            ]
        );

        // No template: nothing to default the selector from.
        let o = rc(json!({}));
        assert_eq!(
            messages(&o),
            [
                "spec.selector: Required value",
                "spec.template: Required value"
            ]
        );
        // A template without labels and no selector.
        let o = rc(json!({"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}));
        assert_eq!(messages(&o), ["spec.selector: Required value"]);
    }

    #[test]
    fn the_selector_may_change() {
        let old = rc(json!({"template": template(json!({"app": "nginx", "v": "1"}))}));
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"app": "nginx"});
        assert_eq!(
            validate_update("ReplicationController", &old, &new),
            Vec::new()
        );
    }
}
