//! The I/O half of `DefaultStorageClass` admission (the rule is `skiff_api::strategy`'s):
//! a claim created without a class gets the default StorageClass from the store.

use serde_json::Value;
use skiff_api::kinds::{self, Kind};
use skiff_api::strategy;
use skiff_store::ListOptions;

use crate::meta;
use crate::status::ApiResult;
use crate::Objects;

/// Admission of a create of `obj` (of `kind`) that reads StorageClasses.
pub(super) async fn admit(st: &Objects, kind: &Kind, obj: &mut Value) -> ApiResult<()> {
    if kind.kind != "PersistentVolumeClaim" {
        return Ok(());
    }
    let named = obj
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null());
    if named {
        return Ok(());
    }
    let sc = kinds::by_resource("storage.k8s.io", "v1", "storageclasses")
        .expect("storageclasses are served");
    // There are few classes: read whole on each claim create, as kube's plugin reads its
    // informer.
    let res = st
        .store
        .list(&meta::kind_prefix(sc), &ListOptions::default())
        .await?;
    let classes: Vec<Value> = res
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    strategy::admit_claim_class(obj, &classes);
    Ok(())
}
