//! The zone's source: kube-rs reflectors over Services and EndpointSlices, and a task
//! that rebuilds the [`Zone`] when either changes.
//!
//! Contract: [`ZoneHandle::current`] is `None` until both caches have listed once (the
//! server answers SERVFAIL then, never a false NXDOMAIN); afterwards it is the zone as of
//! the latest change, swapped in whole. Bursts of events coalesce into one rebuild, so a
//! rebuild costs one pass over the caches however many objects changed.

use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::zone::Zone;

/// The zone queries read: swapped whole by the rebuilder, read without waiting on it.
#[derive(Debug, Clone, Default)]
pub struct ZoneHandle {
    inner: Arc<RwLock<Option<Arc<Zone>>>>,
}

impl ZoneHandle {
    /// A handle serving `zone` (tests and callers with their own source).
    pub fn fixed(zone: Zone) -> ZoneHandle {
        let h = ZoneHandle::default();
        h.set(zone);
        h
    }

    /// The zone now, or `None` before the first full list.
    pub fn current(&self) -> Option<Arc<Zone>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the zone.
    pub fn set(&self, zone: Zone) {
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(zone));
    }
}

/// Runs the reflectors and the rebuilder until `stop`, publishing into `handle`.
pub async fn run(
    client: kube::Client,
    domain: String,
    ttl: u32,
    handle: ZoneHandle,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_task = tokio::spawn(reflect(
        Api::<Service>::all(client.clone()),
        svc_writer,
        changed.clone(),
        stop.clone(),
    ));
    let slice_task = tokio::spawn(reflect(
        Api::<EndpointSlice>::all(client),
        slice_writer,
        changed.clone(),
        stop.clone(),
    ));
    let ready = async {
        // Both must have listed once before any answer is trusted.
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = stop.cancelled() => {}
    }
    while !stop.is_cancelled() {
        rebuild(&domain, ttl, &services, &slices, &handle);
        tokio::select! {
            _ = changed.notified() => {}
            _ = stop.cancelled() => break,
        }
    }
    let _ = svc_task.await;
    let _ = slice_task.await;
}

fn rebuild(
    domain: &str,
    ttl: u32,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    handle: &ZoneHandle,
) {
    let svcs = services.state();
    let eps = slices.state();
    match Zone::build(
        domain,
        ttl,
        svcs.iter().map(|s| s.as_ref()),
        eps.iter().map(|s| s.as_ref()),
    ) {
        Some(z) => handle.set(z),
        None => tracing::error!(domain, "the cluster domain is not a valid DNS name"),
    }
}

async fn reflect<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures_util::pin_mut!(stream);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(_)) => changed.notify_one(),
                Some(Err(e)) => tracing::warn!(error = %e, "cluster DNS watch failed; retrying"),
                None => break,
            },
            _ = stop.cancelled() => break,
        }
    }
}
