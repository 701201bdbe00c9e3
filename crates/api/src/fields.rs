//! The fields each kind can be selected by (`--field-selector`), and their values.
//!
//! kube-apiserver accepts only a fixed set of field labels per resource (every object has
//! `metadata.name`, namespaced ones `metadata.namespace`; pods add `spec.nodeName`,
//! `status.phase`, …); anything else is a 400 "field label not supported". Values are
//! strings; booleans print as `true`/`false`, a missing field as the empty string.

use serde_json::Value;

use crate::kinds::Kind;
use crate::selector::{FieldSelector, SelectorError};

/// (kind, group, field, JSON pointer of its value) beyond `metadata.name`/`namespace`.
const FIELDS: &[(&str, &str, &str, &str)] = &[
    ("Pod", "", "spec.nodeName", "/spec/nodeName"),
    ("Pod", "", "spec.restartPolicy", "/spec/restartPolicy"),
    ("Pod", "", "spec.schedulerName", "/spec/schedulerName"),
    (
        "Pod",
        "",
        "spec.serviceAccountName",
        "/spec/serviceAccountName",
    ),
    ("Pod", "", "spec.hostNetwork", "/spec/hostNetwork"),
    ("Pod", "", "status.phase", "/status/phase"),
    ("Pod", "", "status.podIP", "/status/podIPs/0/ip"),
    (
        "Pod",
        "",
        "status.nominatedNodeName",
        "/status/nominatedNodeName",
    ),
    ("Event", "", "involvedObject.kind", "/involvedObject/kind"),
    (
        "Event",
        "",
        "involvedObject.namespace",
        "/involvedObject/namespace",
    ),
    ("Event", "", "involvedObject.name", "/involvedObject/name"),
    ("Event", "", "involvedObject.uid", "/involvedObject/uid"),
    (
        "Event",
        "",
        "involvedObject.apiVersion",
        "/involvedObject/apiVersion",
    ),
    (
        "Event",
        "",
        "involvedObject.resourceVersion",
        "/involvedObject/resourceVersion",
    ),
    (
        "Event",
        "",
        "involvedObject.fieldPath",
        "/involvedObject/fieldPath",
    ),
    ("Event", "", "reason", "/reason"),
    ("Event", "", "reportingComponent", "/reportingComponent"),
    ("Event", "", "source", "/source/component"),
    ("Event", "", "type", "/type"),
    (
        "Event",
        "events.k8s.io",
        "regarding.kind",
        "/regarding/kind",
    ),
    (
        "Event",
        "events.k8s.io",
        "regarding.namespace",
        "/regarding/namespace",
    ),
    (
        "Event",
        "events.k8s.io",
        "regarding.name",
        "/regarding/name",
    ),
    ("Event", "events.k8s.io", "regarding.uid", "/regarding/uid"),
    (
        "Event",
        "events.k8s.io",
        "regarding.apiVersion",
        "/regarding/apiVersion",
    ),
    (
        "Event",
        "events.k8s.io",
        "regarding.resourceVersion",
        "/regarding/resourceVersion",
    ),
    (
        "Event",
        "events.k8s.io",
        "regarding.fieldPath",
        "/regarding/fieldPath",
    ),
    ("Event", "events.k8s.io", "reason", "/reason"),
    (
        "Event",
        "events.k8s.io",
        "reportingController",
        "/reportingController",
    ),
    ("Event", "events.k8s.io", "type", "/type"),
    ("Namespace", "", "status.phase", "/status/phase"),
    ("Node", "", "spec.unschedulable", "/spec/unschedulable"),
    ("Secret", "", "type", "/type"),
    ("Service", "", "spec.clusterIP", "/spec/clusterIP"),
    ("Service", "", "spec.type", "/spec/type"),
    ("ReplicaSet", "apps", "status.replicas", "/status/replicas"),
    (
        "ReplicationController",
        "",
        "status.replicas",
        "/status/replicas",
    ),
    ("Job", "batch", "status.successful", "/status/succeeded"),
];

/// The field labels `kind` can be selected by.
pub fn selectable_fields(kind: &Kind) -> Vec<&'static str> {
    let mut out = vec!["metadata.name"];
    if kind.namespaced {
        out.push("metadata.namespace");
    }
    out.extend(
        FIELDS
            .iter()
            .filter(|(k, g, _, _)| *k == kind.kind && *g == kind.group)
            .map(|(_, _, f, _)| *f),
    );
    out
}

/// The value of field label `field` in `obj` (an object of `kind`), `None` if `kind`
/// cannot be selected by it.
pub fn field_value(kind: &Kind, obj: &Value, field: &str) -> Option<String> {
    let ptr = match field {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" if kind.namespaced => "/metadata/namespace",
        _ => {
            FIELDS
                .iter()
                .find(|(k, g, f, _)| *k == kind.kind && *g == kind.group && *f == field)?
                .3
        }
    };
    Some(render(field, obj.pointer(ptr)))
}

/// Every field label `kind` can be selected by with its value in `obj`, in
/// [`selectable_fields`] order, in one pass over the table (the watch cache takes them
/// from every event it keeps).
pub fn field_values(kind: &Kind, obj: &Value) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "metadata.name",
        render("metadata.name", obj.pointer("/metadata/name")),
    )];
    if kind.namespaced {
        out.push((
            "metadata.namespace",
            render("metadata.namespace", obj.pointer("/metadata/namespace")),
        ));
    }
    for (k, g, f, ptr) in FIELDS {
        if *k == kind.kind && *g == kind.group {
            out.push((f, render(f, obj.pointer(ptr))));
        }
    }
    out
}

/// A field's value as a selector compares it.
fn render(field: &str, v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // A pod without an IP, a node without `unschedulable`: kube compares the Go zero
        // value, which prints as "" for strings, "false" for booleans and "0" for numbers.
        _ => match field {
            "spec.hostNetwork" | "spec.unschedulable" => "false".into(),
            "status.replicas" | "status.successful" => "0".into(),
            _ => String::new(),
        },
    }
}

impl FieldSelector {
    /// Refuses field labels `kind` cannot be selected by, with kube's message.
    pub fn check_supported(&self, kind: &Kind) -> Result<(), SelectorError> {
        let ok = selectable_fields(kind);
        for f in self.fields() {
            if !ok.contains(&f) {
                return Err(SelectorError {
                    selector: self.to_string(),
                    reason: format!(
                        "field label not supported: {f} (supported for {}: {})",
                        kind.plural,
                        ok.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether `obj` (an object of `kind`) matches; unsupported fields never match.
    pub fn matches_object(&self, kind: &Kind, obj: &Value) -> bool {
        self.terms().iter().all(|t| {
            let Some(have) = field_value(kind, obj, &t.field) else {
                return false;
            };
            match t.op {
                crate::selector::FieldOp::Equals => have == t.value,
                crate::selector::FieldOp::NotEquals => have != t.value,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::by_kind;
    use serde_json::json;

    #[test]
    fn all_values_at_once_match_one_by_one() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        for (api, kind) in [("v1", "Pod"), ("v1", "Node"), ("events.k8s.io/v1", "Event")] {
            let k = by_kind(api, kind).expect("served");
            let one_by_one: Vec<(&str, String)> = selectable_fields(k)
                .into_iter()
                .filter_map(|f| Some((f, field_value(k, &pod, f)?)))
                .collect();
            assert_eq!(field_values(k, &pod), one_by_one, "{kind}");
        }
    }

    fn kind(api_version: &str, k: &str) -> &'static Kind {
        by_kind(api_version, k).expect("served kind")
    }

    #[test]
    fn pods_by_node_and_phase() {
        let pods = kind("v1", "Pod");
        let p = json!({"metadata": {"name": "a", "namespace": "ns"},
            "spec": {"nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.9"}]}});
        let unscheduled =
            json!({"metadata": {"name": "b", "namespace": "ns"}, "status": {"phase": "Pending"}});
        let sel = |s: &str| FieldSelector::parse(s).expect("parse");
        assert!(sel("spec.nodeName=n1,status.phase!=Pending").matches_object(pods, &p));
        assert!(!sel("spec.nodeName=n1").matches_object(pods, &unscheduled));
        assert!(sel("spec.nodeName=").matches_object(pods, &unscheduled));
        assert!(sel("spec.hostNetwork=true").matches_object(pods, &p));
        assert!(sel("spec.hostNetwork=false").matches_object(pods, &unscheduled));
        assert!(sel("status.podIP=10.42.0.9,metadata.namespace=ns").matches_object(pods, &p));
        assert!(sel("metadata.name=b").matches_object(pods, &unscheduled));
        assert!(sel("spec.nodeName=n1").check_supported(pods).is_ok());
        let e = sel("spec.containers=x")
            .check_supported(pods)
            .expect_err("unsupported");
        assert!(e
            .reason
            .contains("field label not supported: spec.containers"));
        assert!(!sel("spec.containers=").matches_object(pods, &p));
    }

    #[test]
    fn other_kinds() {
        let events = kind("v1", "Event");
        let ev = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Pulled", "type": "Normal", "source": {"component": "kubelet"}});
        let sel = |s: &str| FieldSelector::parse(s).expect("parse");
        assert!(
            sel("involvedObject.kind=Pod,involvedObject.name=web,source=kubelet,type=Normal")
                .matches_object(events, &ev)
        );
        let new_events = kind("events.k8s.io/v1", "Event");
        assert!(selectable_fields(new_events).contains(&"regarding.name"));
        assert!(!selectable_fields(new_events).contains(&"involvedObject.name"));
        let nodes = kind("v1", "Node");
        assert_eq!(
            selectable_fields(nodes),
            vec!["metadata.name", "spec.unschedulable"]
        );
        assert!(sel("metadata.namespace=x").check_supported(nodes).is_err());
        assert!(sel("spec.unschedulable=false")
            .matches_object(nodes, &json!({"metadata": {"name": "n"}})));
        let secrets = kind("v1", "Secret");
        assert!(sel("type=kubernetes.io/tls")
            .matches_object(secrets, &json!({"type": "kubernetes.io/tls"})));
        let rs = kind("apps/v1", "ReplicaSet");
        assert!(sel("status.replicas=0").matches_object(rs, &json!({"status": {}})));
        let rc = kind("v1", "ReplicationController");
        assert!(sel("status.replicas=3").matches_object(rc, &json!({"status": {"replicas": 3}})));
        assert!(!sel("status.replicas=3").matches_object(rc, &json!({"status": {"replicas": 2}})));
        for k in crate::kinds::KINDS {
            assert!(selectable_fields(k).contains(&"metadata.name"));
            assert_eq!(
                selectable_fields(k).contains(&"metadata.namespace"),
                k.namespaced
            );
        }
    }
}
