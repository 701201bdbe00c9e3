//! The `default/kubernetes` Service's endpoints: every API server serving the cluster.
//!
//! Each server keeps a key `/registry/masterleases/<ip>:<port>` alive on a store lease
//! (15 s TTL, renewed every 5 s), as kube-apiserver's lease endpoint reconciler does. Every
//! server periodically writes the Endpoints and EndpointSlice `default/kubernetes` from the
//! live keys, so a server that stops (or dies) drops out within a TTL. Writes are guarded
//! and skipped when nothing changed, so several servers reconcile without churn.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_store::{LeaseId, ListOptions, Store, StoreError};

use crate::meta;

const PREFIX: &str = "/registry/masterleases/";
const TTL: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(5);
const ENDPOINTS_KEY: &str = "/registry/core/endpoints/default/kubernetes";
const SLICES_PREFIX: &str = "/registry/discovery.k8s.io/endpointslices/default/kubernetes";

/// Starts keeping this server (`addr`, as others reach it) in the endpoints.
pub(crate) async fn start(store: Arc<dyn Store>, addr: SocketAddr) -> Result<(), StoreError> {
    let lease = announce(&*store, addr).await?;
    reconcile(&*store).await?;
    tokio::spawn(async move {
        let mut lease = lease;
        loop {
            tokio::time::sleep(RENEW).await;
            if Arc::strong_count(&store) == 1 {
                // The server is gone; let the lease run out.
                return;
            }
            let renewed = match store.keep_alive(lease).await {
                Ok(()) => Ok(lease),
                Err(StoreError::LeaseNotFound { .. }) => announce(&*store, addr).await,
                Err(e) => Err(e),
            };
            match renewed {
                Ok(l) => lease = l,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing this API server's endpoint lease failed")
                }
            }
            if let Err(e) = reconcile(&*store).await {
                tracing::warn!(error = %e, "updating the kubernetes Service's endpoints failed");
            }
        }
    });
    Ok(())
}

async fn announce(store: &dyn Store, addr: SocketAddr) -> Result<LeaseId, StoreError> {
    let lease = store.grant_lease(TTL).await?;
    let value = json!({"ip": addr.ip().to_string(), "port": addr.port()});
    store
        .put(
            &format!("{PREFIX}{addr}"),
            value.to_string().into_bytes(),
            lease.id,
        )
        .await?;
    Ok(lease.id)
}

/// Live API servers grouped by port: port -> sorted IPs.
async fn live(store: &dyn Store) -> Result<BTreeMap<u16, Vec<String>>, StoreError> {
    let res = store.list(PREFIX, &ListOptions::default()).await?;
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for kv in res.kvs {
        let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let (Some(ip), Some(port)) = (
            v.get("ip").and_then(Value::as_str),
            v.get("port").and_then(Value::as_u64),
        ) else {
            continue;
        };
        if let Ok(port) = u16::try_from(port) {
            by_port.entry(port).or_default().push(ip.to_string());
        }
    }
    for ips in by_port.values_mut() {
        ips.sort();
        ips.dedup();
    }
    Ok(by_port)
}

pub(crate) async fn reconcile(store: &dyn Store) -> Result<(), StoreError> {
    let by_port = live(store).await?;
    let port = |p: u16| json!([{"name": "https", "port": p, "protocol": "TCP"}]);
    let subsets: Vec<Value> = by_port
        .iter()
        .map(|(p, ips)| {
            json!({"addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(), "ports": port(*p)})
        })
        .collect();
    write_if_changed(
        store,
        ENDPOINTS_KEY,
        "subsets",
        json!(subsets),
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        }),
    )
    .await?;
    // An EndpointSlice has one port list: one slice per port (normally just one).
    for (i, (p, ips)) in by_port.iter().enumerate() {
        let name = if i == 0 {
            "kubernetes".to_string()
        } else {
            format!("kubernetes-{p}")
        };
        let key = format!("{SLICES_PREFIX}{}", &name["kubernetes".len()..]);
        let endpoints: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect();
        let mut base = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                // Only the service name, as kube-apiserver's own slice: no managed-by, so
                // the endpointslice controller never takes it for one of its own.
                "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "ports": port(*p),
        });
        base["endpoints"] = json!(endpoints);
        write_if_changed(store, &key, "endpoints", json!(endpoints), base).await?;
    }
    Ok(())
}

/// Creates `key` from `base` (with `field` set to `value`), or updates its `field` and
/// labels when they differ (as kube's adapter, so an old slice loses labels it should not
/// carry); a concurrent writer's change is re-read and retried.
async fn write_if_changed(
    store: &dyn Store,
    key: &str,
    field: &str,
    value: Value,
    mut base: Value,
) -> Result<(), StoreError> {
    for _ in 0..5 {
        match store.get(key, None).await?.kv {
            None => {
                let md = meta::metadata_mut(&mut base);
                md.insert("uid".into(), json!(meta::uid()));
                md.insert("creationTimestamp".into(), json!(meta::now()));
                base[field] = value.clone();
                match store.create(key, base.to_string().into_bytes(), 0).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Some(kv) => {
                let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
                    return Ok(());
                };
                let labels = base.pointer("/metadata/labels").cloned();
                if obj.get(field) == Some(&value)
                    && obj.pointer("/metadata/labels") == labels.as_ref()
                {
                    return Ok(());
                }
                obj[field] = value.clone();
                if let Some(l) = labels {
                    meta::metadata_mut(&mut obj).insert("labels".into(), l);
                }
                meta::metadata_mut(&mut obj).remove("resourceVersion");
                match store
                    .update(key, obj.to_string().into_bytes(), Some(kv.mod_revision), 0)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use skiff_store::EmbeddedStore;

    async fn slice(store: &dyn Store) -> Value {
        let kv = store.get(SLICES_PREFIX, None).await.unwrap().kv.unwrap();
        serde_json::from_slice(&kv.value).unwrap()
    }

    #[tokio::test]
    async fn the_slice_carries_only_the_service_name_like_kube_apiservers() {
        let store = EmbeddedStore::in_memory().expect("memory store");
        announce(&store, "10.0.0.1:6443".parse().unwrap())
            .await
            .unwrap();
        reconcile(&store).await.unwrap();
        let s = slice(&store).await;
        assert_eq!(
            s["metadata"]["labels"],
            json!({"kubernetes.io/service-name": "kubernetes"})
        );
        assert_eq!(s["endpoints"][0]["addresses"], json!(["10.0.0.1"]));

        // A slice written with the controller's managed-by label loses it.
        let mut old = s.clone();
        old["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] =
            json!("endpointslice-controller.k8s.io");
        let rev = store
            .get(SLICES_PREFIX, None)
            .await
            .unwrap()
            .kv
            .unwrap()
            .mod_revision;
        store
            .update(SLICES_PREFIX, old.to_string().into_bytes(), Some(rev), 0)
            .await
            .unwrap();
        reconcile(&store).await.unwrap();
        assert_eq!(
            slice(&store).await["metadata"]["labels"],
            json!({"kubernetes.io/service-name": "kubernetes"})
        );
    }
}
