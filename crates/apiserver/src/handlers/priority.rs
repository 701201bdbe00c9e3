//! The I/O half of priority admission (the rules are `skiff_api::strategy`'s): pods
//! get their priority from the PriorityClasses in the store, a PriorityClass may become
//! the global default only when no other is, and the system classes exist from the
//! server's first start.

use serde_json::Value;
use skiff_api::kinds::{self, Kind};
use skiff_api::strategy;
use skiff_store::{Store, StoreError};

use crate::meta;
use crate::status::{ApiError, ApiResult};
use crate::Objects;

fn kind() -> &'static Kind {
    kinds::by_resource("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priorityclasses are served")
}

/// Every PriorityClass (there are few; read whole on each pod create, as kube's plugin
/// reads its informer).
async fn classes(store: &dyn Store) -> ApiResult<Vec<Value>> {
    super::objects::list_values(store, &meta::kind_prefix(kind())).await
}

/// Admission of a create or update of `obj` (of `kind`) that needs other objects: the
/// pod's priority (create only, as kube's plugin) and the single global default class.
pub(super) async fn admit(
    st: &Objects,
    kind: &Kind,
    obj: &mut Value,
    creating: bool,
) -> ApiResult<()> {
    match kind.kind {
        "Pod" if creating => {
            let classes = classes(&*st.store).await?;
            strategy::admit_pod_priority(obj, &classes)
                .map_err(|r| ApiError::forbidden(kind.group, kind.plural, meta::name(obj), &r.0))
        }
        "PriorityClass" if obj.get("globalDefault") == Some(&Value::Bool(true)) => {
            let classes = classes(&*st.store).await?;
            match strategy::default_class_conflict(obj, &classes, creating) {
                Some(why) => Err(ApiError::forbidden(
                    kind.group,
                    kind.plural,
                    meta::name(obj),
                    &why,
                )),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Creates the system PriorityClasses when missing (server start; idempotent).
pub(super) async fn bootstrap(store: &dyn Store) -> Result<(), ApiError> {
    let kind = kind();
    for mut pc in strategy::system_priority_classes() {
        super::objects::stamp_new(kind, &mut pc);
        let key = meta::key(kind, None, meta::name(&pc));
        match store.create(&key, pc.to_string().into_bytes(), 0).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
