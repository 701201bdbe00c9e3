//! Per-kind REST strategies, in the shape of kube-apiserver's: what happens to an object of
//! one kind when it is created, updated, has its status written or is deleted. The API
//! server runs one generic pipeline and asks the kind's [`Strategy`] at each step, so a new
//! kind or a new rule lands in one place (the kind's module here), never as a match on
//! kind names inside the handlers.
//!
//! The pipeline, for a create: server metadata is stamped; the status is cleared when the
//! kind has a status subresource and [`Strategy::resets_status_on_create`];
//! [`Strategy::prepare_for_create`]; [`Strategy::default`]; [`Strategy::admit`];
//! validation ([`validate`]: the object's metadata and [`Strategy::validate`]). For an
//! update of the main resource: [`Strategy::prepare_for_update`] (with the stored object);
//! defaulting and admission; validation plus [`Strategy::validate_update`]. A status
//! update keeps everything but what [`Strategy::prepare_for_status_update`] lets through.
//! On delete, [`Strategy::graceful_delete`] decides whether the object lingers with a
//! `deletionTimestamp` (pods, for their kubelet) or goes at once.
//!
//! Objects are JSON values here, as the API server stores them; the functions never do I/O.

use serde_json::Value;

use crate::cluster::ClusterConfig;
use crate::object::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name,
};

mod access;
mod admission;
mod autoscaling;
mod batch;
mod certificates;
mod core;
mod placement;
mod pod;
mod replication_controller;
mod scheduling;
mod service;
mod storage;
mod syntax;
mod workloads;

pub use access::CRD_CLEANUP_FINALIZER;
pub use certificates::{check_request_pem, KNOWN_USAGES as CSR_USAGES};
pub use pod::{pod_spec_defaults, qos_class};
pub use scheduling::{
    admit_pod_priority, default_class_conflict, system_priority_classes, PriorityRefusal,
};
pub use storage::{
    admit_claim_class, default_storage_class, is_default_class, IS_DEFAULT_CLASS, PVC_PROTECTION,
};

/// One `details.causes` entry of a 422: which field is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, …
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, value: &str, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {why}"),
        }
    }
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".to_string(),
        }
    }
    /// An invalid value that kube prints unquoted (numbers, Go structs): `rendered` as is.
    pub fn invalid_raw(field: impl Into<String>, rendered: &str, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {rendered}: {why}"),
        }
    }
    pub fn required_because(field: impl Into<String>, why: &str) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {why}"),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value:?}"),
        }
    }
    pub fn forbidden(field: impl Into<String>, why: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {why}"),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }
}

/// The authenticated user behind a request, for kinds that record who created them
/// (CertificateSigningRequests).
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub username: &'a str,
    /// Empty when the authenticator gives no uid (certificates, the cluster token).
    pub uid: &'a str,
    pub groups: &'a [String],
}

/// Which syntax a kind's names follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services: names become DNS labels).
    Dns1035,
    /// Any URL path segment: not `.` or `..`, no `/` or `%` (RBAC kinds: `system:node`).
    PathSegment,
}

/// The kind-specific steps of the API server's object lifecycle. Every method has the
/// behaviour most kinds want as its default.
pub trait Strategy: Sync {
    /// Whether changes outside metadata and status bump `metadata.generation`.
    fn has_generation(&self) -> bool {
        true
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Whether a create starts from an empty status (for kinds with a status
    /// subresource: status is the controllers' to write).
    fn resets_status_on_create(&self) -> bool {
        true
    }

    /// Records the authenticated creator in a new object (before defaulting and
    /// validation), overwriting whatever the client sent there.
    fn set_requester(&self, _obj: &mut Value, _who: &Requester<'_>) {}

    /// Kind-specific server fields of a new object (after uid and timestamps are set).
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Kind-specific carry-over from the stored object into an update of the main
    /// resource (fields the client may leave out and the server keeps).
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    /// What a write to the status subresource may change: by default only `status`.
    fn prepare_for_status_update(&self, new: &mut Value, old: &Value) {
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) if !s.is_null() => new["status"] = s,
            _ => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }

    /// What a write to the `approval` subresource may change (CertificateSigningRequests:
    /// the Approved and Denied conditions); by default nothing.
    fn prepare_for_approval_update(&self, new: &mut Value, old: &Value) {
        *new = old.clone();
    }

    /// Rules about what a write to `status` (or `approval`) may change; by default none.
    fn validate_status_update(&self, _old: &Value, _new: &Value, _causes: &mut Vec<Cause>) {}

    /// Defaulting, as kube-apiserver's defaulters (applied on create and update).
    fn default(&self, _obj: &mut Value) {}

    /// What admission adds to the kind (on create and update), under the cluster's
    /// settings (default toleration seconds).
    fn admit(&self, _obj: &mut Value, _cluster: &ClusterConfig) {}

    /// Kind-specific validation of a whole (defaulted) object.
    fn validate(&self, _obj: &Value, _causes: &mut Vec<Cause>) {}

    /// Rules about what an update may change.
    fn validate_update(&self, _old: &Value, _new: &Value, _causes: &mut Vec<Cause>) {}

    /// Graceful deletion: `Some(seconds)` when deleting `obj` (with the grace period the
    /// request asked for, if any) should mark it with a `deletionTimestamp` that far
    /// ahead and leave it for its owner to finish (0 removes it at once); `None` when
    /// the kind is not deleted gracefully.
    fn graceful_delete(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }

    /// Why deleting `obj` is refused, if it is: the API server answers 403
    /// `<resource> "<name>" is forbidden: <why>` (system PriorityClasses).
    fn delete_forbidden(&self, _obj: &Value) -> Option<&'static str> {
        None
    }

    /// Deleting marks the object terminating and empties it asynchronously before it is
    /// removed (namespaces).
    fn terminates_before_delete(&self) -> bool {
        false
    }
}

/// The strategy of `kind` (its `kind` name, as `Pod`).
pub fn for_kind(kind: &str) -> &'static dyn Strategy {
    match kind {
        "Pod" => &pod::Pod,
        "Service" => &service::Service,
        "Namespace" => &core::Namespace,
        "ConfigMap" | "Secret" => &core::ConfigData,
        "PersistentVolumeClaim" => &core::PersistentVolumeClaim,
        "PersistentVolume" => &core::PersistentVolume,
        "PriorityClass" => &scheduling::PriorityClass,
        "StorageClass" => &storage::StorageClass,
        "CertificateSigningRequest" => &certificates::CertificateSigningRequest,
        "HorizontalPodAutoscaler" => &autoscaling::HorizontalPodAutoscaler,
        "Event" | "Endpoints" | "EndpointSlice" | "Lease" | "ServiceAccount"
        | "ControllerRevision" => &core::NoGeneration,
        "Deployment" => &workloads::DEPLOYMENT,
        "ReplicaSet" => &workloads::REPLICA_SET,
        "ReplicationController" => &replication_controller::ReplicationController,
        "StatefulSet" => &workloads::STATEFUL_SET,
        "DaemonSet" => &workloads::DAEMON_SET,
        "Job" => &batch::Job,
        "CronJob" => &batch::CronJob,
        "Role" | "ClusterRole" => &access::RbacRole,
        "RoleBinding" | "ClusterRoleBinding" => &access::RbacBinding,
        "CustomResourceDefinition" => &access::CustomResourceDefinition,
        "ValidatingAdmissionPolicy" => &admission::ValidatingAdmissionPolicy,
        "ValidatingAdmissionPolicyBinding" => &admission::ValidatingAdmissionPolicyBinding,
        _ => &core::Generic,
    }
}

/// Validates a new or updated object of `kind` (after defaulting): its metadata, then the
/// kind's own rules.
pub fn validate(kind: &str, obj: &Value) -> Vec<Cause> {
    let strategy = for_kind(kind);
    let mut causes = Vec::new();
    validate_metadata(strategy.name_rule(), obj, &mut causes);
    strategy.validate(obj, &mut causes);
    causes
}

/// Validates an update: the whole new object, and what may not change since `old`.
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = validate(kind, new);
    for_kind(kind).validate_update(old, new, &mut causes);
    causes
}

/// Validates a write to the status (or approval) subresource of `kind`.
pub fn validate_status_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for_kind(kind).validate_status_update(old, new, &mut causes);
    causes
}

const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_RULE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn validate_metadata(rule: NameRule, obj: &Value, causes: &mut Vec<Cause>) {
    let name = crate::object::name(obj);
    let (text, ok): (&str, fn(&str) -> bool) = match rule {
        NameRule::Subdomain => (SUBDOMAIN_RULE, is_dns1123_subdomain),
        NameRule::Label => (LABEL_RULE, is_dns1123_label),
        NameRule::Dns1035 => (DNS1035_RULE, is_dns1035_label),
        NameRule::PathSegment => {
            for why in crate::rbac::validate_rbac_name(name) {
                causes.push(Cause::invalid("metadata.name", name, &why));
            }
            ("", |_| true)
        }
    };
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if !ok(name) {
        let why = if name.len() > 253 || (rule != NameRule::Subdomain && name.len() > 63) {
            "must be no more than 63 characters"
        } else {
            text
        };
        causes.push(Cause::invalid("metadata.name", name, why));
    }
    for (field, check_values) in [("labels", true), ("annotations", false)] {
        let Some(m) = obj
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (k, v) in m {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid(
                    format!("metadata.{field}"),
                    k,
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ));
            }
            match v.as_str() {
                None => causes.push(Cause::invalid(
                    format!("metadata.{field}"),
                    &v.to_string(),
                    "must be a string",
                )),
                Some(s) if check_values && !is_label_value(s) => causes.push(Cause::invalid(
                    "metadata.labels",
                    s,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                )),
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
