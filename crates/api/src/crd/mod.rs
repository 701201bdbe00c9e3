//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) over JSON, with no I/O: what
//! kube-apiserver's apiextensions-apiserver does with a CRD and its custom objects.
//!
//! - [`default_crd`], [`validate_crd`], [`validate_crd_update`]: the CRD object's own
//!   defaulting and validation (names, scope, versions,
//!   subresources, printer columns, allowed schema keywords, structural-schema rules,
//!   defaults), with kube's field paths and messages;
//! - [`Schema`]: a version's `openAPIV3Schema`, compiled once, to [`Schema::prune`],
//!   [`Schema::default`] and [`Schema::validate`] custom objects (OpenAPI v3 with
//!   kube-openapi's messages, list types, CEL `x-kubernetes-validations`);
//! - [`printer_columns`], [`column_cells`], [`to_table`]: the Table `kubectl get` prints;
//! - [`openapi_definition`], [`openapi_definition_v3`]: the kind's published OpenAPI
//!   definitions (`kubectl explain`).
//!
//! A custom object goes through [`Schema::prune`], then [`Schema::default`], then
//! [`Schema::validate`] (or [`Schema::validate_update`] with the stored object), as
//! kube-apiserver decodes and validates it. Causes are [`crate::strategy::Cause`]s, with
//! `message` in kube's `Type: value: detail` form (what `details.causes[].message`
//! carries); reasons beyond the usual ones: `FieldValueTypeInvalid`,
//! `FieldValueTooLong`, `FieldValueTooMany`.

mod cel;
mod columns;
mod format;
mod openapi;
mod schema;
mod structural;
#[cfg(test)]
mod tests;
mod validate;
mod validation;

use serde_json::Value;

pub use crate::strategy::Cause;
pub use columns::{column_cells, printer_columns, to_table, Column, JsonPath};
pub use openapi::{
    definition_name, definition_to_v3, openapi_definition, openapi_definition_v3,
    openapi_list_definition,
};
pub use schema::Schema;
pub use validation::{default_crd, validate_crd, validate_crd_update};

/// A value as kube's field errors print it: strings quoted, numbers and booleans bare,
/// `null`, objects and arrays as JSON.
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The version named `version` of a CRD (`spec.versions[*]`).
pub fn crd_version<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
}

/// The compiled schema of a CRD version, if it has one.
pub fn version_schema(crd: &Value, version: &str) -> Option<Schema> {
    crd_version(crd, version)?
        .pointer("/schema/openAPIV3Schema")
        .map(Schema::new)
}

/// The name of the version marked `storage: true`.
pub fn storage_version(crd: &Value) -> Option<&str> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))?
        .get("name")?
        .as_str()
}
