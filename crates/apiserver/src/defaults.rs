//! Defaulting as kube-apiserver does it for the main kinds, applied on create and update
//! so `kubectl get -o yaml` shows the same fields a real cluster would.

use serde_json::{json, Value};

use crate::meta::default_at;

/// Defaults `obj` (a full object of `kind`) in place.
pub fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
            }
            default_at(obj, &["status", "phase"], json!("Pending"));
            let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
            default_at(obj, &["status", "qosClass"], json!(qos));
        }
        "Deployment" => {
            default_at(obj, &["spec", "replicas"], json!(1));
            default_at(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default_at(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            default_at(obj, &["spec", "strategy", "type"], json!("RollingUpdate"));
            if obj.pointer("/spec/strategy/type") == Some(&json!("RollingUpdate")) {
                default_at(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                    json!("25%"),
                );
                default_at(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxSurge"],
                    json!("25%"),
                );
            }
            template(obj);
        }
        "ReplicaSet" => {
            default_at(obj, &["spec", "replicas"], json!(1));
            template(obj);
        }
        "StatefulSet" => {
            default_at(obj, &["spec", "replicas"], json!(1));
            default_at(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
            default_at(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default_at(
                obj,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            if obj.pointer("/spec/updateStrategy/type") == Some(&json!("RollingUpdate")) {
                default_at(
                    obj,
                    &["spec", "updateStrategy", "rollingUpdate", "partition"],
                    json!(0),
                );
            }
            default_at(
                obj,
                &["spec", "persistentVolumeClaimRetentionPolicy"],
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template(obj);
        }
        "DaemonSet" => {
            default_at(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default_at(
                obj,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            if obj.pointer("/spec/updateStrategy/type") == Some(&json!("RollingUpdate")) {
                default_at(
                    obj,
                    &["spec", "updateStrategy", "rollingUpdate"],
                    json!({"maxUnavailable": 1, "maxSurge": 0}),
                );
            }
            template(obj);
        }
        "Job" => {
            job_spec(obj.get_mut("spec"));
        }
        "CronJob" => {
            default_at(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
            default_at(obj, &["spec", "suspend"], json!(false));
            default_at(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
            default_at(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
            if let Some(js) = obj.pointer_mut("/spec/jobTemplate/spec") {
                if let Some(spec) = js.pointer_mut("/template/spec") {
                    pod_spec(spec);
                }
                default_at(js, &["backoffLimit"], json!(6));
                default_at(js, &["completionMode"], json!("NonIndexed"));
                default_at(js, &["suspend"], json!(false));
            }
        }
        "Service" => {
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
        "Namespace" => {
            default_at(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            default_at(obj, &["status", "phase"], json!("Active"));
            let name = crate::meta::name(obj).to_string();
            default_at(
                obj,
                &["metadata", "labels", "kubernetes.io/metadata.name"],
                json!(name),
            );
        }
        "Secret" => default_at(obj, &["type"], json!("Opaque")),
        "PersistentVolumeClaim" => {
            default_at(obj, &["spec", "volumeMode"], json!("Filesystem"));
            default_at(obj, &["status", "phase"], json!("Pending"));
        }
        "PersistentVolume" => {
            default_at(
                obj,
                &["spec", "persistentVolumeReclaimPolicy"],
                json!("Retain"),
            );
            default_at(obj, &["spec", "volumeMode"], json!("Filesystem"));
            default_at(obj, &["status", "phase"], json!("Pending"));
        }
        "PriorityClass" => {
            default_at(obj, &["preemptionPolicy"], json!("PreemptLowerPriority"));
        }
        "HorizontalPodAutoscaler" => {
            default_at(obj, &["spec", "minReplicas"], json!(1));
        }
        "PodDisruptionBudget" => {}
        _ => {}
    }
}

fn template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

fn job_spec(spec: Option<&mut Value>) {
    let Some(js) = spec else { return };
    default_at(js, &["parallelism"], json!(1));
    default_at(js, &["completions"], json!(1));
    default_at(js, &["backoffLimit"], json!(6));
    default_at(js, &["completionMode"], json!("NonIndexed"));
    default_at(js, &["suspend"], json!(false));
    default_at(js, &["podReplacementPolicy"], json!("TerminatingOrFailed"));
    if let Some(spec) = js.pointer_mut("/template/spec") {
        pod_spec(spec);
    }
}

/// Pod-spec defaults, shared by pods and every pod template.
pub fn pod_spec(spec: &mut Value) {
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

/// Pods get `serviceAccountName: default` and the not-ready/unreachable tolerations from
/// admission in Kubernetes; skiff applies them on create only.
pub fn pod_admission(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec") else {
        return;
    };
    default_at(spec, &["serviceAccountName"], json!("default"));
    let sa = spec["serviceAccountName"].clone();
    default_at(spec, &["serviceAccount"], sa);
    default_at(spec, &["enableServiceLinks"], json!(true));
    default_at(spec, &["preemptionPolicy"], json!("PreemptLowerPriority"));
    default_at(spec, &["priority"], json!(0));
    if spec.get("tolerations").is_none_or(Value::is_null) {
        spec["tolerations"] = json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ]);
    }
}

/// Guaranteed when every container sets equal cpu and memory requests and limits,
/// BestEffort when none sets any, Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
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
