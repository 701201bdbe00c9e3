//! The type graph of the served kinds, generated once from k8s-openapi's schemars schemas:
//! a map of OpenAPI definition name (`io.k8s.api.core.v1.Pod`) to its JSON schema, with
//! references written as `#/definitions/<name>`. OpenAPI documents are rendered from it and
//! strategic merge patch walks it to find the type of each field.

use std::sync::LazyLock;

use k8s_openapi::api;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::kinds::KINDS;

const REF_PREFIX: &str = "#/definitions/";

static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(build);

/// Every definition reachable from the served kinds, plus their `…List` types and the
/// meta types the API's operations use (Status, DeleteOptions, WatchEvent, Scale, …).
pub(crate) fn definitions() -> &'static Map<String, Value> {
    &DEFINITIONS
}

fn add<T: JsonSchema>(g: &mut SchemaGenerator) {
    g.subschema_for::<T>();
}

fn build() -> Map<String, Value> {
    let settings = SchemaSettings::draft07().with(|s| {
        s.meta_schema = None;
        // Keep `description` next to `$ref` (the OpenAPI writers decide how to render it).
        s.transforms.clear();
        s.definitions_path = "/definitions".into();
    });
    let mut g = settings.into_generator();
    // The served kinds (kinds::KINDS, checked by a test) …
    add::<api::core::v1::ConfigMap>(&mut g);
    add::<api::core::v1::Endpoints>(&mut g);
    add::<api::core::v1::Event>(&mut g);
    add::<api::core::v1::LimitRange>(&mut g);
    add::<api::core::v1::Namespace>(&mut g);
    add::<api::core::v1::Node>(&mut g);
    add::<api::core::v1::PersistentVolumeClaim>(&mut g);
    add::<api::core::v1::PersistentVolume>(&mut g);
    add::<api::core::v1::Pod>(&mut g);
    add::<api::core::v1::ReplicationController>(&mut g);
    add::<api::core::v1::ResourceQuota>(&mut g);
    add::<api::core::v1::Secret>(&mut g);
    add::<api::core::v1::ServiceAccount>(&mut g);
    add::<api::core::v1::Service>(&mut g);
    add::<api::apps::v1::ControllerRevision>(&mut g);
    add::<api::apps::v1::DaemonSet>(&mut g);
    add::<api::apps::v1::Deployment>(&mut g);
    add::<api::apps::v1::ReplicaSet>(&mut g);
    add::<api::apps::v1::StatefulSet>(&mut g);
    add::<api::authentication::v1::TokenReview>(&mut g);
    add::<api::authorization::v1::SelfSubjectAccessReview>(&mut g);
    add::<api::autoscaling::v2::HorizontalPodAutoscaler>(&mut g);
    add::<api::autoscaling::v1::HorizontalPodAutoscaler>(&mut g);
    add::<api::batch::v1::CronJob>(&mut g);
    add::<api::batch::v1::Job>(&mut g);
    add::<api::certificates::v1::CertificateSigningRequest>(&mut g);
    add::<api::coordination::v1::Lease>(&mut g);
    add::<api::discovery::v1::EndpointSlice>(&mut g);
    add::<api::events::v1::Event>(&mut g);
    add::<api::policy::v1::PodDisruptionBudget>(&mut g);
    add::<api::scheduling::v1::PriorityClass>(&mut g);
    add::<api::storage::v1::StorageClass>(&mut g);
    add::<api::core::v1::PodTemplate>(&mut g);
    add::<api::storage::v1::CSIDriver>(&mut g);
    add::<api::storage::v1::CSINode>(&mut g);
    add::<api::storage::v1::CSIStorageCapacity>(&mut g);
    add::<api::storage::v1::VolumeAttachment>(&mut g);
    add::<api::admissionregistration::v1::MutatingWebhookConfiguration>(&mut g);
    add::<api::admissionregistration::v1::ValidatingAdmissionPolicy>(&mut g);
    add::<api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>(&mut g);
    add::<api::admissionregistration::v1::ValidatingWebhookConfiguration>(&mut g);
    add::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&mut g);
    add::<k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService>(&mut g);
    add::<api::authentication::v1::SelfSubjectReview>(&mut g);
    add::<api::authorization::v1::LocalSubjectAccessReview>(&mut g);
    add::<api::authorization::v1::SelfSubjectRulesReview>(&mut g);
    add::<api::authorization::v1::SubjectAccessReview>(&mut g);
    add::<api::flowcontrol::v1::FlowSchema>(&mut g);
    add::<api::flowcontrol::v1::PriorityLevelConfiguration>(&mut g);
    add::<api::networking::v1::IngressClass>(&mut g);
    add::<api::networking::v1::Ingress>(&mut g);
    add::<api::networking::v1::IPAddress>(&mut g);
    add::<api::networking::v1::NetworkPolicy>(&mut g);
    add::<api::networking::v1::ServiceCIDR>(&mut g);
    add::<api::node::v1::RuntimeClass>(&mut g);
    add::<api::rbac::v1::ClusterRoleBinding>(&mut g);
    add::<api::rbac::v1::ClusterRole>(&mut g);
    add::<api::rbac::v1::RoleBinding>(&mut g);
    add::<api::rbac::v1::Role>(&mut g);
    // … and what their subresources and operations exchange.
    add::<api::core::v1::Binding>(&mut g);
    add::<api::policy::v1::Eviction>(&mut g);
    add::<api::autoscaling::v1::Scale>(&mut g);
    add::<api::authentication::v1::TokenRequest>(&mut g);
    add::<meta::Status>(&mut g);
    add::<meta::DeleteOptions>(&mut g);
    add::<meta::ListMeta>(&mut g);
    add::<meta::WatchEvent<api::core::v1::Pod>>(&mut g);
    add::<meta::Patch>(&mut g);
    let mut defs = g.take_definitions(false);
    // k8s-openapi types these "any JSON value" fields as objects; kube-apiserver publishes
    // them without a type (a CRD's `default: blue` is a string).
    for name in [
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
    ] {
        if let Some(Value::Object(d)) = defs.get_mut(name) {
            d.remove("type");
        }
    }
    // The resource metrics API's types (metrics-server's; not in k8s-openapi).
    metrics_definitions(&mut defs);
    // k8s-openapi has no schema for the generic List<T>; kube-apiserver publishes one
    // `…List` definition per kind, so write them in the same shape.
    for k in KINDS {
        if k.verbs.contains(&"list") {
            let name = format!("{}List", k.openapi_name);
            defs.entry(name).or_insert_with(|| list_definition(k));
        }
    }
    defs
}

fn metrics_definitions(defs: &mut Map<String, Value>) {
    const P: &str = "io.k8s.metrics.pkg.apis.metrics.v1beta1";
    let meta =
        |d: &str| json!({"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.{d}")});
    let usage = json!({
        "description": "The memory and CPU usage.",
        "type": "object",
        "additionalProperties": {"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.api.resource.Quantity")}
    });
    let common = |extra: (&str, Value)| {
        let mut props = json!({
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": meta("ObjectMeta"),
            "timestamp": meta("Time"),
            "window": {"type": "string", "description": "The interval the usage was averaged over (a duration)."},
        });
        props[extra.0] = extra.1;
        props
    };
    defs.insert(
        format!("{P}.ContainerMetrics"),
        json!({"description": "The resource usage of one container.", "type": "object",
            "required": ["name", "usage"],
            "properties": {"name": {"type": "string"}, "usage": usage.clone()}}),
    );
    defs.insert(
        format!("{P}.NodeMetrics"),
        json!({"description": "The resource usage of a node.", "type": "object",
            "required": ["timestamp", "window", "usage"],
            "properties": common(("usage", usage))}),
    );
    defs.insert(
        format!("{P}.PodMetrics"),
        json!({"description": "The resource usage of a pod's containers.", "type": "object",
            "required": ["timestamp", "window", "containers"],
            "properties": common(("containers", json!({"type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{P}.ContainerMetrics")}})))}),
    );
}

fn list_definition(k: &crate::kinds::Kind) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", k.kind, k.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string"
            },
            "items": {
                "description": format!("List of {}.", k.plural),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{}", k.openapi_name)}
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string"
            },
            "metadata": {
                "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
            }
        }
    })
}

/// The definition name a `{"$ref": "#/definitions/<name>"}` schema points at.
pub(crate) fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
}

/// A position in the type graph while walking an object: the definition name (when the
/// schema is a named type) and the schema itself. Unknown positions (fields the schema
/// does not describe) have neither, and are walked with the default rules.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    pub name: Option<&'static str>,
    pub schema: Option<&'static Value>,
}

impl Cursor {
    /// The cursor at a named definition (`io.k8s.api.core.v1.Pod`).
    pub fn root(name: &str) -> Cursor {
        match definitions().get_key_value(name) {
            Some((n, s)) => Cursor {
                name: Some(n.as_str()),
                schema: Some(s),
            },
            None => Cursor::default(),
        }
    }

    fn at(schema: &'static Value) -> Cursor {
        match ref_name(schema) {
            Some(name) => Cursor::root(name),
            None => Cursor {
                name: None,
                schema: Some(schema),
            },
        }
    }

    /// The schema of property `key` (a struct field, or any key of a map type).
    pub fn field(&self, key: &str) -> Cursor {
        let Some(s) = self.schema else {
            return Cursor::default();
        };
        if let Some(p) = s.get("properties").and_then(|p| p.get(key)) {
            return Cursor::at(p);
        }
        match s.get("additionalProperties") {
            Some(a) if a.is_object() => Cursor::at(a),
            _ => Cursor::default(),
        }
    }

    /// The schema of the elements of an array type.
    pub fn items(&self) -> Cursor {
        match self.schema.and_then(|s| s.get("items")) {
            Some(i) if i.is_object() => Cursor::at(i),
            _ => Cursor::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_and_its_list_has_a_definition() {
        let defs = definitions();
        for k in KINDS {
            assert!(defs.contains_key(k.openapi_name), "{}", k.openapi_name);
            if k.allows("list") {
                assert!(defs.contains_key(&format!("{}List", k.openapi_name)));
            }
        }
        for name in [
            "io.k8s.api.core.v1.PodSpec",
            "io.k8s.api.core.v1.Container",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.api.autoscaling.v1.Scale",
        ] {
            assert!(defs.contains_key(name), "{name}");
        }
    }

    #[test]
    fn cursor_walks_fields_items_and_maps() {
        let pod = Cursor::root("io.k8s.api.core.v1.Pod");
        assert_eq!(pod.name, Some("io.k8s.api.core.v1.Pod"));
        let c = pod.field("spec").field("containers").items();
        assert_eq!(c.name, Some("io.k8s.api.core.v1.Container"));
        assert_eq!(
            c.field("env").items().name,
            Some("io.k8s.api.core.v1.EnvVar")
        );
        let labels = pod.field("metadata").field("labels");
        assert!(labels.schema.is_some());
        let limits = c.field("resources").field("limits").field("cpu");
        assert_eq!(
            limits.name,
            Some("io.k8s.apimachinery.pkg.api.resource.Quantity")
        );
        assert!(pod.field("nope").schema.is_none());
        assert!(Cursor::root("io.example.Nope").schema.is_none());
    }
}
