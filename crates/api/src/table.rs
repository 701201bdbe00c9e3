//! Server-side `meta.k8s.io/v1` Table output (what `kubectl get` prints), with the columns
//! kube-apiserver prints for each kind, `-o wide` ones at priority 1.
//!
//! The column sets, cell types and cell texts follow kube-apiserver's printers (pods'
//! STATUS logic, `5m20s`-style ages, `<none>`/`<unknown>` placeholders …), so
//! `kubectl get` output matches a real cluster's for the same objects. A kind without a
//! printer gets kube's default columns: Name and Created At.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

mod cells;
mod pod;
#[cfg(test)]
mod tests;
mod time;

pub use time::{format_time, human_duration, parse_time};

/// What each row carries in `object` (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (`None`, `Metadata`, `Object`).
    pub fn from_query(v: &str) -> Option<Self> {
        match v {
            "None" => Some(IncludeObject::None),
            "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// OpenAPI type of the cells: `string`, `integer`, `boolean`, `date`.
    pub ty: &'static str,
    /// `name` for the object-name column, else empty.
    pub format: &'static str,
    pub description: String,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
}

impl Column {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// Builds the Table for `items` (full objects of `kind`, e.g. `Pod`, as JSON). The caller
/// fills `metadata.resourceVersion`/`continue`. `now` ages the rows.
pub fn to_table(kind: &str, items: &[Value], include: IncludeObject, now: SystemTime) -> Value {
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let cols: Vec<Value> = columns(kind).iter().map(Column::to_json).collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let (cells, conditions) = cells::row(kind, o, now_secs);
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => partial_metadata(o),
                IncludeObject::Object => o.clone(),
            };
            let mut row = json!({ "cells": cells, "object": object });
            if let Some(c) = conditions {
                row["conditions"] = c;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": cols,
        "rows": rows,
    })
}

/// The `PartialObjectMetadata` of an object (what `includeObject=Metadata` embeds, and
/// what `Accept: …;as=PartialObjectMetadata` asks for).
pub fn partial_metadata(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A field's description from the OpenAPI schemas (what kube takes from `SwaggerDoc()`).
fn doc(def: &str, field: &str) -> String {
    crate::schema::definitions()
        .get(def)
        .and_then(|d| d.pointer(&format!("/properties/{field}/description")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const CORE: &str = "io.k8s.api.core.v1";
const APPS: &str = "io.k8s.api.apps.v1";

fn name_col() -> Column {
    Column {
        name: "Name",
        ty: "string",
        format: "name",
        description: doc(META, "name"),
        priority: 0,
    }
}

fn age_col() -> Column {
    Column {
        name: "Age",
        ty: "string",
        format: "",
        description: doc(META, "creationTimestamp"),
        priority: 0,
    }
}

fn col(name: &'static str, ty: &'static str, description: String) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

fn wide(name: &'static str, ty: &'static str, description: String) -> Column {
    Column {
        priority: 1,
        ..col(name, ty, description)
    }
}

fn containers_cols(selector_doc: Option<String>) -> Vec<Column> {
    let mut v = vec![
        wide(
            "Containers",
            "string",
            "Names of each container in the template.".into(),
        ),
        wide(
            "Images",
            "string",
            "Images referenced by each container in the template.".into(),
        ),
    ];
    if let Some(d) = selector_doc {
        v.push(wide("Selector", "string", d));
    }
    v
}

/// The columns kube-apiserver prints for `kind`.
pub fn columns(kind: &str) -> Vec<Column> {
    let d = |def: &str, field: &str| doc(def, field);
    let core = |t: &str, f: &str| doc(&format!("{CORE}.{t}"), f);
    let apps = |t: &str, f: &str| doc(&format!("{APPS}.{t}"), f);
    let mut c = vec![name_col()];
    match kind {
        "Pod" => {
            c.extend([
                col(
                    "Ready",
                    "string",
                    "The aggregate readiness state of this pod for accepting traffic.".into(),
                ),
                col(
                    "Status",
                    "string",
                    "The aggregate status of the containers in this pod.".into(),
                ),
                col(
                    "Restarts",
                    "string",
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.".into(),
                ),
                age_col(),
                wide("IP", "string", core("PodStatus", "podIP")),
                wide("Node", "string", core("PodSpec", "nodeName")),
                wide("Nominated Node", "string", core("PodStatus", "nominatedNodeName")),
                wide("Readiness Gates", "string", core("PodSpec", "readinessGates")),
            ]);
        }
        "Deployment" => {
            c.extend([
                col(
                    "Ready",
                    "string",
                    "Number of the pod with ready state".into(),
                ),
                col(
                    "Up-to-date",
                    "string",
                    apps("DeploymentStatus", "updatedReplicas"),
                ),
                col(
                    "Available",
                    "string",
                    apps("DeploymentStatus", "availableReplicas"),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(Some(apps("DeploymentSpec", "selector"))));
        }
        "ReplicaSet" => {
            c.extend([
                col("Desired", "integer", apps("ReplicaSetSpec", "replicas")),
                col("Current", "integer", apps("ReplicaSetStatus", "replicas")),
                col(
                    "Ready",
                    "integer",
                    apps("ReplicaSetStatus", "readyReplicas"),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(Some(apps("ReplicaSetSpec", "selector"))));
        }
        "ReplicationController" => {
            c.extend([
                col(
                    "Desired",
                    "integer",
                    core("ReplicationControllerSpec", "replicas"),
                ),
                col(
                    "Current",
                    "integer",
                    core("ReplicationControllerStatus", "replicas"),
                ),
                col(
                    "Ready",
                    "integer",
                    core("ReplicationControllerStatus", "readyReplicas"),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(Some(core(
                "ReplicationControllerSpec",
                "selector",
            ))));
        }
        "StatefulSet" => {
            c.extend([
                col(
                    "Ready",
                    "string",
                    "Number of the pod with ready state".into(),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(None));
        }
        "DaemonSet" => {
            c.extend([
                col(
                    "Desired",
                    "integer",
                    apps("DaemonSetStatus", "desiredNumberScheduled"),
                ),
                col(
                    "Current",
                    "integer",
                    apps("DaemonSetStatus", "currentNumberScheduled"),
                ),
                col("Ready", "integer", apps("DaemonSetStatus", "numberReady")),
                col(
                    "Up-to-date",
                    "integer",
                    apps("DaemonSetStatus", "updatedNumberScheduled"),
                ),
                col(
                    "Available",
                    "integer",
                    apps("DaemonSetStatus", "numberAvailable"),
                ),
                col("Node Selector", "string", core("PodSpec", "nodeSelector")),
                age_col(),
            ]);
            c.extend(containers_cols(Some(apps("DaemonSetSpec", "selector"))));
        }
        "Job" => {
            c.extend([
                col("Status", "string", "Status of the job.".into()),
                col(
                    "Completions",
                    "string",
                    d("io.k8s.api.batch.v1.JobStatus", "succeeded"),
                ),
                col(
                    "Duration",
                    "string",
                    "Time required to complete the job.".into(),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(Some(d(
                "io.k8s.api.batch.v1.JobSpec",
                "selector",
            ))));
        }
        "CronJob" => {
            let spec = "io.k8s.api.batch.v1.CronJobSpec";
            let status = "io.k8s.api.batch.v1.CronJobStatus";
            c.extend([
                col("Schedule", "string", d(spec, "schedule")),
                col("Timezone", "string", d(spec, "timeZone")),
                col("Suspend", "boolean", d(spec, "suspend")),
                col("Active", "integer", d(status, "active")),
                col("Last Schedule", "string", d(status, "lastScheduleTime")),
                age_col(),
            ]);
            c.extend(containers_cols(Some(d(
                "io.k8s.api.batch.v1.JobSpec",
                "selector",
            ))));
        }
        "Service" => {
            c.extend([
                col("Type", "string", core("ServiceSpec", "type")),
                col("Cluster-IP", "string", core("ServiceSpec", "clusterIP")),
                col("External-IP", "string", core("ServiceSpec", "externalIPs")),
                col("Port(s)", "string", core("ServiceSpec", "ports")),
                age_col(),
                wide("Selector", "string", core("ServiceSpec", "selector")),
            ]);
        }
        "Endpoints" => {
            c.extend([
                col("Endpoints", "string", core("Endpoints", "subsets")),
                age_col(),
            ]);
        }
        "EndpointSlice" => {
            let es = "io.k8s.api.discovery.v1.EndpointSlice";
            c.extend([
                col("AddressType", "string", d(es, "addressType")),
                col("Ports", "string", d(es, "ports")),
                col("Endpoints", "string", d(es, "endpoints")),
                age_col(),
            ]);
        }
        "Node" => {
            c.extend([
                col("Status", "string", "The status of the node".into()),
                col("Roles", "string", "The roles of the node".into()),
                age_col(),
                col(
                    "Version",
                    "string",
                    core("NodeSystemInfo", "kubeletVersion"),
                ),
                wide("Internal-IP", "string", core("NodeStatus", "addresses")),
                wide("External-IP", "string", core("NodeStatus", "addresses")),
                wide("OS-Image", "string", core("NodeSystemInfo", "osImage")),
                wide(
                    "Kernel-Version",
                    "string",
                    core("NodeSystemInfo", "kernelVersion"),
                ),
                wide(
                    "Container-Runtime",
                    "string",
                    core("NodeSystemInfo", "containerRuntimeVersion"),
                ),
            ]);
        }
        "Event" => {
            return vec![
                col("Last Seen", "string", core("Event", "lastTimestamp")),
                col("Type", "string", core("Event", "type")),
                col("Reason", "string", core("Event", "reason")),
                col("Object", "string", core("Event", "involvedObject")),
                wide("Subobject", "string", core("ObjectReference", "fieldPath")),
                wide("Source", "string", core("Event", "source")),
                col("Message", "string", core("Event", "message")),
                wide("First Seen", "string", core("Event", "firstTimestamp")),
                wide("Count", "string", core("Event", "count")),
                Column {
                    priority: 1,
                    ..name_col()
                },
            ];
        }
        "Namespace" => {
            c.extend([
                col("Status", "string", "The status of the namespace".into()),
                age_col(),
            ]);
        }
        "Secret" => {
            c.extend([
                col("Type", "string", core("Secret", "type")),
                col("Data", "string", core("Secret", "data")),
                age_col(),
            ]);
        }
        "ConfigMap" => {
            c.extend([col("Data", "string", core("ConfigMap", "data")), age_col()]);
        }
        "ServiceAccount" => {
            c.extend([
                col("Secrets", "string", core("ServiceAccount", "secrets")),
                age_col(),
            ]);
        }
        "PersistentVolume" => {
            let spec = "PersistentVolumeSpec";
            c.extend([
                col("Capacity", "string", core(spec, "capacity")),
                col("Access Modes", "string", core(spec, "accessModes")),
                col(
                    "Reclaim Policy",
                    "string",
                    core(spec, "persistentVolumeReclaimPolicy"),
                ),
                col("Status", "string", core("PersistentVolumeStatus", "phase")),
                col("Claim", "string", core(spec, "claimRef")),
                col("StorageClass", "string", "StorageClass of the pv".into()),
                col(
                    "VolumeAttributesClass",
                    "string",
                    "VolumeAttributesClass of the pv".into(),
                ),
                col("Reason", "string", core("PersistentVolumeStatus", "reason")),
                age_col(),
                wide("VolumeMode", "string", core(spec, "volumeMode")),
            ]);
        }
        "PersistentVolumeClaim" => {
            c.extend([
                col(
                    "Status",
                    "string",
                    core("PersistentVolumeClaimStatus", "phase"),
                ),
                col(
                    "Volume",
                    "string",
                    core("PersistentVolumeClaimSpec", "volumeName"),
                ),
                col(
                    "Capacity",
                    "string",
                    core("PersistentVolumeClaimStatus", "capacity"),
                ),
                col(
                    "Access Modes",
                    "string",
                    core("PersistentVolumeClaimStatus", "accessModes"),
                ),
                col("StorageClass", "string", "StorageClass of the pvc".into()),
                col(
                    "VolumeAttributesClass",
                    "string",
                    "VolumeAttributesClass of the pvc".into(),
                ),
                age_col(),
                wide(
                    "VolumeMode",
                    "string",
                    core("PersistentVolumeClaimSpec", "volumeMode"),
                ),
            ]);
        }
        "HorizontalPodAutoscaler" => {
            let spec = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec";
            c.extend([
                col("Reference", "string", d(spec, "scaleTargetRef")),
                col("Targets", "string", d(spec, "metrics")),
                col("MinPods", "string", d(spec, "minReplicas")),
                col("MaxPods", "string", d(spec, "maxReplicas")),
                col(
                    "Replicas",
                    "string",
                    d(
                        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
                        "currentReplicas",
                    ),
                ),
                age_col(),
            ]);
        }
        "PodDisruptionBudget" => {
            c.extend([
                col(
                    "Min Available",
                    "string",
                    "The minimum number of pods that must be available.".into(),
                ),
                col(
                    "Max Unavailable",
                    "string",
                    "The maximum number of pods that may be unavailable.".into(),
                ),
                col(
                    "Allowed Disruptions",
                    "integer",
                    "Calculated number of pods that may be disrupted at this time.".into(),
                ),
                age_col(),
            ]);
        }
        "CertificateSigningRequest" => {
            let spec = "io.k8s.api.certificates.v1.CertificateSigningRequestSpec";
            c.extend([
                age_col(),
                col("SignerName", "string", d(spec, "signerName")),
                col("Requestor", "string", d(spec, "request")),
                col("RequestedDuration", "string", d(spec, "expirationSeconds")),
                col(
                    "Condition",
                    "string",
                    d(
                        "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
                        "conditions",
                    ),
                ),
            ]);
        }
        "ValidatingAdmissionPolicy" => {
            c.extend([
                col(
                    "Validations",
                    "integer",
                    "Validations indicates the number of validation rules defined in this configuration".into(),
                ),
                col(
                    "ParamKind",
                    "string",
                    "ParamKind specifies the kind of resources used to parameterize this policy".into(),
                ),
                age_col(),
            ]);
        }
        "ValidatingAdmissionPolicyBinding" => {
            c.extend([
                col(
                    "PolicyName",
                    "string",
                    "PolicyName indicates the policy definition which the policy binding binded to"
                        .into(),
                ),
                col(
                    "ParamRef",
                    "string",
                    "ParamRef indicates the param resource which sets the configration param"
                        .into(),
                ),
                age_col(),
            ]);
        }
        "Lease" => {
            c.extend([
                col(
                    "Holder",
                    "string",
                    d("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity"),
                ),
                age_col(),
            ]);
        }
        "PriorityClass" => {
            let pc = "io.k8s.api.scheduling.v1.PriorityClass";
            c.extend([
                col("Value", "integer", d(pc, "value")),
                col("Global-Default", "boolean", d(pc, "globalDefault")),
                age_col(),
                col("PreemptionPolicy", "string", d(pc, "preemptionPolicy")),
            ]);
        }
        "StorageClass" => {
            let sc = "io.k8s.api.storage.v1.StorageClass";
            c.extend([
                col("Provisioner", "string", d(sc, "provisioner")),
                col("ReclaimPolicy", "string", d(sc, "reclaimPolicy")),
                col("VolumeBindingMode", "string", d(sc, "volumeBindingMode")),
                col(
                    "AllowVolumeExpansion",
                    "string",
                    d(sc, "allowVolumeExpansion"),
                ),
                age_col(),
            ]);
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            c.extend([
                col(
                    "Role",
                    "string",
                    d("io.k8s.api.rbac.v1.RoleBinding", "roleRef"),
                ),
                age_col(),
                wide("Users", "string", "Users in the roleBinding".into()),
                wide("Groups", "string", "Groups in the roleBinding".into()),
                wide(
                    "ServiceAccounts",
                    "string",
                    "ServiceAccounts in the roleBinding".into(),
                ),
            ]);
        }
        "Ingress" => {
            let spec = "io.k8s.api.networking.v1.IngressSpec";
            c.extend([
                col("Class", "string", d(spec, "ingressClassName")),
                col(
                    "Hosts",
                    "string",
                    "Hosts that incoming requests are matched against before the ingress rule"
                        .into(),
                ),
                col(
                    "Address",
                    "string",
                    "Address is a list containing ingress points for the load-balancer".into(),
                ),
                col(
                    "Ports",
                    "string",
                    "Ports of TLS configurations that open".into(),
                ),
                age_col(),
            ]);
        }
        "IngressClass" => {
            let spec = "io.k8s.api.networking.v1.IngressClassSpec";
            c.extend([
                col("Controller", "string", d(spec, "controller")),
                col("Parameters", "string", d(spec, "parameters")),
                age_col(),
            ]);
        }
        "NetworkPolicy" => {
            c.extend([
                col(
                    "Pod-Selector",
                    "string",
                    d("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector"),
                ),
                age_col(),
            ]);
        }
        "RuntimeClass" => {
            c.extend([
                col(
                    "Handler",
                    "string",
                    d("io.k8s.api.node.v1.RuntimeClass", "handler"),
                ),
                age_col(),
            ]);
        }
        "ControllerRevision" => {
            c.extend([
                col("Controller", "string", "Controller of the object".into()),
                col("Revision", "string", apps("ControllerRevision", "revision")),
                age_col(),
            ]);
        }
        "ResourceQuota" => {
            c.extend([
                age_col(),
                col(
                    "Request",
                    "string",
                    "Request represents a minimum amount of cpu/memory that a container may consume.".into(),
                ),
                col(
                    "Limit",
                    "string",
                    "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.".into(),
                ),
            ]);
        }
        _ => {
            // kube-apiserver's default table convertor.
            c.push(Column {
                name: "Created At",
                ty: "date",
                format: "",
                description: doc(META, "creationTimestamp"),
                priority: 0,
            });
        }
    }
    c
}
