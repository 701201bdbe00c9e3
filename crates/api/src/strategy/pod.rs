//! Pods: defaults (the pod spec's, QoS class), admission (service account, default
//! tolerations), validation, what an update may change, and graceful deletion for the
//! kubelet.

use serde_json::{json, Value};

use super::{Cause, Strategy};
use crate::cluster::ClusterConfig;
use crate::object::{default_at, is_dns1123_label};

pub(super) struct Pod;

impl Strategy for Pod {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            pod_spec_defaults(spec);
            requests_from_limits(spec);
        }
        default_at(obj, &["status", "phase"], json!("Pending"));
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        default_at(obj, &["status", "qosClass"], json!(qos));
    }

    fn admit(&self, obj: &mut Value, cluster: &ClusterConfig) {
        pod_admission(obj, cluster);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_pod_spec(obj.get("spec"), "spec", causes);
        super::placement::gated_node_name(obj.get("spec"), causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        super::placement::gates_update(old.get("spec"), new.get("spec"), causes);
        // Only images, activeDeadlineSeconds, added tolerations and removed scheduling
        // gates may change.
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
            for key in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = s.get_mut(key) {
                    for c in cs {
                        if let Some(m) = c.as_object_mut() {
                            m.remove("image");
                        }
                    }
                }
            }
            if let Some(m) = s.as_object_mut() {
                m.remove("activeDeadlineSeconds");
                m.remove("tolerations");
                m.remove("schedulingGates");
                // Set once by the scheduler through pods/binding.
                m.remove("nodeName");
            }
            s
        };
        if strip(old) != strip(new) {
            causes.push(Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }

    /// As kube's pod strategy: the request's grace period, else the pod's
    /// `terminationGracePeriodSeconds`; 0 (removed at once) when the pod was never bound
    /// to a node or has already finished, since no kubelet has anything to stop.
    fn graceful_delete(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        let mut period = requested.unwrap_or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        });
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = obj.pointer("/status/phase").and_then(Value::as_str);
        if !bound || matches!(phase, Some("Succeeded" | "Failed")) {
            period = 0;
        }
        Some(period.max(0))
    }
}

/// kube's SetDefaults_Pod (pods only, not templates): a resource with a limit and no
/// request is requested at its limit.
fn requests_from_limits(spec: &mut Value) {
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(key) {
            for c in cs {
                let Some(limits) = c
                    .pointer("/resources/limits")
                    .and_then(Value::as_object)
                    .cloned()
                else {
                    continue;
                };
                for (name, q) in limits {
                    default_at(c, &["resources", "requests", name.as_str()], q);
                }
            }
        }
    }
}

/// Pod-spec defaults, shared by pods and every pod template.
pub fn pod_spec_defaults(spec: &mut Value) {
    default_at(spec, &["restartPolicy"], json!("Always"));
    default_at(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default_at(spec, &["terminationGracePeriodSeconds"], json!(30));
    default_at(spec, &["schedulerName"], json!("default-scheduler"));
    default_at(spec, &["securityContext"], json!({}));
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(key) {
            for c in cs {
                container(c);
            }
        }
    }
}
fn container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    // kube: "Always" when the tag is `latest` or missing (digests count as a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    let tag = if image.contains('@') {
        Some("digest")
    } else {
        last.split_once(':').map(|(_, t)| t)
    };
    let policy = match tag {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    };
    default_at(c, &["imagePullPolicy"], json!(policy));
    default_at(
        c,
        &["terminationMessagePath"],
        json!("/dev/termination-log"),
    );
    default_at(c, &["terminationMessagePolicy"], json!("File"));
    default_at(c, &["resources"], json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports {
            default_at(p, &["protocol"], json!("TCP"));
        }
    }
}
/// Pods get `serviceAccountName: default` from admission in Kubernetes, and from its
/// DefaultTolerationSeconds plugin a NoExecute toleration of the not-ready and the
/// unreachable taint for the cluster's seconds (300 by default), each unless the pod
/// already tolerates that taint with NoExecute (or any effect, or any key).
pub fn pod_admission(pod: &mut Value, cluster: &ClusterConfig) {
    // Like kube's ServiceAccount admission, a mirror pod (a node's static pod) gets no
    // service account: its spec is the node's, and NodeRestriction refuses a node's pod
    // that names one.
    let mirror = crate::node_authz::is_mirror_pod(pod);
    let Some(spec) = pod.get_mut("spec") else {
        return;
    };
    if !mirror {
        default_at(spec, &["serviceAccountName"], json!("default"));
        let sa = spec["serviceAccountName"].clone();
        default_at(spec, &["serviceAccount"], sa);
    }
    default_at(spec, &["enableServiceLinks"], json!(true));
    default_at(spec, &["preemptionPolicy"], json!("PreemptLowerPriority"));
    default_at(spec, &["priority"], json!(0));
    if !spec.get("tolerations").is_some_and(Value::is_array) {
        spec["tolerations"] = json!([]);
    }
    let Some(tolerations) = spec.get_mut("tolerations").and_then(Value::as_array_mut) else {
        return;
    };
    for (key, seconds) in [
        (
            "node.kubernetes.io/not-ready",
            cluster.default_not_ready_toleration_seconds,
        ),
        (
            "node.kubernetes.io/unreachable",
            cluster.default_unreachable_toleration_seconds,
        ),
    ] {
        let tolerated = tolerations.iter().any(|t| {
            let field = |f: &str| t.get(f).and_then(Value::as_str).unwrap_or_default();
            (field("key") == key || field("key").is_empty())
                && (field("effect") == "NoExecute" || field("effect").is_empty())
        });
        if !tolerated {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}
/// Guaranteed when every container sets equal cpu and memory requests and limits,
/// BestEffort when none sets any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests");
        let lim = c.pointer("/resources/limits");
        let nonempty =
            |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(|m| !m.is_empty());
        if nonempty(req) || nonempty(lim) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            let q = req.and_then(|q| q.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
pub(super) fn validate_pod_spec(spec: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{at}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{at}.containers"))),
        Some(cs) => {
            let mut seen = std::collections::HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                let f = format!("{at}.containers[{i}]");
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    causes.push(Cause::required(format!("{f}.name")));
                } else if !is_dns1123_label(name) {
                    causes.push(Cause::invalid(format!("{f}.name"), name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
                } else if !seen.insert(name) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        field: format!("{f}.name"),
                        message: format!("Duplicate value: {name:?}"),
                    });
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{f}.image")));
                }
                if let Some(ports) = c.get("ports").and_then(Value::as_array) {
                    for (j, p) in ports.iter().enumerate() {
                        let n = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                        if !(1..=65535).contains(&n) {
                            causes.push(Cause::invalid(
                                format!("{f}.ports[{j}].containerPort"),
                                &n.to_string(),
                                "must be between 1 and 65535, inclusive",
                            ));
                        }
                    }
                }
            }
        }
    }
    if let Some(s) = spec {
        super::placement::validate(s, at, causes);
    }
    if let Some(rp) = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
    {
        if !["Always", "OnFailure", "Never"].contains(&rp) {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{at}.restartPolicy"),
                message: format!("Unsupported value: {rp:?}: supported values: \"Always\", \"OnFailure\", \"Never\""),
            });
        }
    }
}
