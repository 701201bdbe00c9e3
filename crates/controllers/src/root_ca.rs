//! The root-ca-cert-publisher: the ConfigMap `kube-root-ca.crt` in every namespace,
//! holding the cluster CA (`ca.crt`) that pods use to verify the API server, as
//! kube-controller-manager's `root-ca-cert-publisher` keeps it.
//!
//! Contract: with a CA configured (`Config::root_ca_pem`), every namespace that is not
//! terminating has the ConfigMap with exactly `ca.crt` in its data and the
//! `kubernetes.io/description` annotation; edits to its data and deletion are undone
//! (other annotations and labels a user adds are kept). Without a CA the controller does
//! nothing. Keys are namespace names.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::informer::{Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::service_account::is_terminating;
use crate::util::{is_conflict, is_not_found, status_code, ApiError};
use crate::Context;

/// The ConfigMap's name.
pub(crate) const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
pub(crate) enum RootCaError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let root_ca = ctx.config.root_ca_pem.clone()?;
    let namespaces = ctx.informers.informer::<Namespace>();
    let config_maps = ctx.informers.informer::<ConfigMap>();
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
        config_maps.on_change(move |c| {
            let cm = c.object();
            if cm.name_any() == ROOT_CA_CONFIG_MAP {
                q.add(cm.namespace().unwrap_or_default());
            }
        });
    }
    let ready = {
        let (n, m) = (namespaces.clone(), config_maps.clone());
        async move {
            n.synced().await;
            m.synced().await;
        }
    };
    let r = RootCaPublisher {
        client: ctx.client.clone(),
        namespaces,
        config_maps,
        root_ca,
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

struct RootCaPublisher {
    client: kube::Client,
    namespaces: Informer<Namespace>,
    config_maps: Informer<ConfigMap>,
    root_ca: String,
}

#[async_trait::async_trait]
impl Reconciler for RootCaPublisher {
    type Error = RootCaError;

    fn name(&self) -> &'static str {
        "root-ca-cert-publisher"
    }

    async fn reconcile(&self, ns: &str) -> Result<Action, RootCaError> {
        let Some(namespace) = self.namespaces.get("", ns) else {
            return Ok(Action::Done);
        };
        if is_terminating(&namespace) {
            return Ok(Action::Done);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let data = BTreeMap::from([("ca.crt".to_string(), self.root_ca.clone())]);
        let object = format!("{ns}/{ROOT_CA_CONFIG_MAP}");
        match self.config_maps.get(ns, ROOT_CA_CONFIG_MAP) {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIG_MAP.into()),
                        namespace: Some(ns.into()),
                        annotations: Some(BTreeMap::from([(
                            DESCRIPTION_ANNOTATION.to_string(),
                            DESCRIPTION.to_string(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => Ok(Action::Done),
                    // Our cache lags behind: its event brings us back.
                    Err(e) if is_conflict(&e) => Ok(Action::Done),
                    // The namespace went away or is terminating.
                    Err(e) if is_not_found(&e) || status_code(&e) == Some(403) => Ok(Action::Done),
                    Err(e) => Err(ApiError::new("create configmap", object, e).into()),
                }
            }
            Some(cur) => {
                let described = cur
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
                    .is_some_and(|d| !d.is_empty());
                if cur.data.as_ref() == Some(&data) && cur.binary_data.is_none() && described {
                    return Ok(Action::Done);
                }
                let mut cm = (*cur).clone();
                cm.data = Some(data);
                cm.binary_data = None;
                let a = cm.metadata.annotations.get_or_insert_with(BTreeMap::new);
                if a.get(DESCRIPTION_ANNOTATION).is_none_or(String::is_empty) {
                    a.insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
                }
                match api
                    .replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &cm)
                    .await
                {
                    Ok(_) => Ok(Action::Done),
                    Err(e) if is_not_found(&e) => Ok(Action::Done),
                    Err(e) => Err(ApiError::new("update configmap", object, e).into()),
                }
            }
        }
    }
}
