//! Strategies of the RBAC kinds (Role, ClusterRole and their bindings) and of
//! CustomResourceDefinitions: the validation and defaulting of `crate::rbac` and
//! `crate::crd` in the shape the generic handlers call.

use serde_json::{json, Value};

use super::{Cause, NameRule, Strategy};

/// Roles and ClusterRoles: names are path segments (`system:controller:job`), no
/// generation, kube's rule validation.
pub(super) struct RbacRole;
impl Strategy for RbacRole {
    fn has_generation(&self) -> bool {
        false
    }
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("Role");
        causes.extend(crate::rbac::validate_role(kind, obj));
    }
}

/// RoleBindings and ClusterRoleBindings: roleRef defaulted and immutable.
pub(super) struct RbacBinding;
impl Strategy for RbacBinding {
    fn has_generation(&self) -> bool {
        false
    }
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn default(&self, obj: &mut Value) {
        crate::rbac::default_binding(obj);
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("RoleBinding");
        causes.extend(crate::rbac::validate_binding(kind, obj));
    }
    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        causes.extend(crate::rbac::validate_binding_update(old, new));
    }
}

/// The finalizer that keeps a deleted CRD until the API server deleted its objects.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// CustomResourceDefinitions: kube's CRD validation (structural schemas included); a new
/// CRD carries the cleanup finalizer.
pub(super) struct CustomResourceDefinition;
impl Strategy for CustomResourceDefinition {
    fn prepare_for_create(&self, obj: &mut Value) {
        let md = obj
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
        if let Some(Value::Object(md)) = md {
            let f = md.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = f.as_array_mut() {
                if !list.iter().any(|x| x == CRD_CLEANUP_FINALIZER) {
                    list.push(json!(CRD_CLEANUP_FINALIZER));
                }
            }
        }
    }
    fn default(&self, obj: &mut Value) {
        crate::crd::default_crd(obj);
    }
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        causes.extend(crate::crd::validate_crd(obj));
    }
    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        // validate_crd_update starts with validate_crd(new), which `validate` gave already.
        let whole = crate::crd::validate_crd(new).len();
        causes.extend(
            crate::crd::validate_crd_update(new, old)
                .into_iter()
                .skip(whole),
        );
    }
}
