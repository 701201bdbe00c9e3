//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) over JSON, with no I/O: what
//! kube-apiserver's apiextensions-apiserver does with a CRD and with its custom objects.
//!
//! The CRD itself:
//! - [`default_crd`] then [`validate_crd`] on create, [`validate_crd_update`] on update:
//!   names, scope, versions, subresources, printer columns, conversion, the schema's
//!   allowed keywords, the structural-schema rules (kube's `NonStructuralSchema`),
//!   defaults that validate and are pruned, CEL rules that parse — with kube's field paths
//!   and messages. The generic ObjectMeta checks, `status.storedVersions` (the storage
//!   version on create) and the Established/NamesAccepted conditions are the API
//!   server's.
//!
//! Its custom objects, through a [`Schema`] compiled once per served version
//! ([`version_schema`]):
//! - on every write [`Schema::prune`], then [`Schema::default`], then
//!   [`Schema::validate`] (create) or [`Schema::validate_update`] (update, with the stored
//!   object: ratcheting and CEL transition rules), as kube-apiserver decodes and
//!   validates them;
//! - [`scale`] and [`set_replicas`]: the `scale` subresource;
//! - [`printer_columns`] and [`to_table`] (or [`column_cells`]): the Table `kubectl get`
//!   prints;
//! - [`openapi_definition`] (Swagger 2.0), [`openapi_definition_v3`],
//!   [`openapi_list_definition`]: the published definitions `kubectl explain` reads,
//!   under [`definition_name`].
//!
//! Causes are [`crate::strategy::Cause`]s (the type the API server already turns into
//! `details.causes`), `message` in kube's `Type: value: detail` form; reasons beyond the
//! usual ones: `FieldValueTypeInvalid`, `FieldValueTooLong`, `FieldValueTooMany`.

pub mod cel;
mod columns;
mod format;
mod openapi;
mod scale;
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
pub use scale::{scale, set_replicas};
pub use schema::Schema;
pub use validation::{default_crd, validate_crd, validate_crd_update};

/// A value as kube's field errors print it: strings quoted, integers and booleans bare,
/// floats as Go's `%v`, `null`, objects and arrays as JSON.
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => go_float(n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    }
}

/// Go's `%v` of a float64 (kube-openapi prints its bounds so): the shortest digits, in
/// exponent form (`1e+06`, `1.5e-05`) when the exponent is below -4 or at least 6.
pub(crate) fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
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
