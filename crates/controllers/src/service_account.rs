//! The serviceaccount controller: a `default` ServiceAccount in every namespace, as
//! kube-controller-manager's `serviceaccount` controller keeps it.
//!
//! Contract: every namespace that is not terminating has a ServiceAccount named
//! `default`; it is recreated when deleted. Nothing else of it is managed (a user may
//! edit it freely). Keys are namespace names.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::informer::{Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_conflict, is_not_found, status_code, ApiError};
use crate::Context;

/// The ServiceAccounts every namespace gets.
const ENSURED: &[&str] = &["default"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceAccountError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let namespaces = ctx.informers.informer::<Namespace>();
    let accounts = ctx.informers.informer::<ServiceAccount>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        namespaces.on_change(move |c| {
            if !matches!(c, Change::Deleted(_)) {
                q.add(c.object().name_any());
            }
        });
    }
    {
        let q = queue.clone();
        accounts.on_change(move |c| {
            if let Change::Deleted(sa) = c {
                if ENSURED.contains(&sa.name_any().as_str()) {
                    q.add(sa.namespace().unwrap_or_default());
                }
            }
        });
    }
    let ready = {
        let (n, a) = (namespaces.clone(), accounts.clone());
        async move {
            n.synced().await;
            a.synced().await;
        }
    };
    let r = ServiceAccounts {
        client: ctx.client.clone(),
        namespaces,
        accounts,
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

/// Whether the namespace is being deleted (no new objects may go into it).
pub(crate) fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

struct ServiceAccounts {
    client: kube::Client,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
}

#[async_trait::async_trait]
impl Reconciler for ServiceAccounts {
    type Error = ServiceAccountError;

    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    async fn reconcile(&self, ns: &str) -> Result<Action, ServiceAccountError> {
        let Some(namespace) = self.namespaces.get("", ns) else {
            return Ok(Action::Done);
        };
        if is_terminating(&namespace) {
            return Ok(Action::Done);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        for name in ENSURED {
            if self.accounts.get(ns, name).is_some() {
                continue;
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some((*name).into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                // Already there (our cache lags), or the namespace went away or is
                // terminating meanwhile.
                Err(e) if is_conflict(&e) || is_not_found(&e) || status_code(&e) == Some(403) => {}
                Err(e) => {
                    return Err(
                        ApiError::new("create serviceaccount", format!("{ns}/{name}"), e).into(),
                    )
                }
            }
        }
        Ok(Action::Done)
    }
}
