//! The serviceaccount-token controller: legacy service-account token Secrets, filled only
//! when asked for, as kube-controller-manager's tokens controller keeps them since
//! Kubernetes 1.24 (no Secret is made for an account by itself any more).
//!
//! Contract: a Secret of type `kubernetes.io/service-account-token` whose
//! `kubernetes.io/service-account.name` annotation names an existing ServiceAccount (and
//! whose `kubernetes.io/service-account.uid` annotation, if set, is that account's uid)
//! gets `data.token` (a legacy JWT signed with `--service-account-private-key-file`,
//! naming the Secret and the account, with no expiry) unless it holds one already,
//! `data.ca.crt` (the root CA, when configured) and `data.namespace`, and both annotations
//! set to the account's name and uid. A token Secret whose account is missing, or is
//! another account of the same name (a uid mismatch), is deleted: so deleting a
//! ServiceAccount deletes its token Secrets. The API server verifies such tokens against
//! the Secret and the account on every request. Without a key the controller does not
//! run. Keys are Secrets' `namespace/name`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use skiff_api::service_account_token::{
    legacy_claims, Signer, NAME_ANNOTATION, SECRET_TYPE, UID_ANNOTATION,
};
use tokio::task::JoinHandle;

use crate::informer::{key_of, split_key, Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_conflict, is_deleting, is_not_found, ApiError};
use crate::Context;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let key = ctx.config.service_account_private_key.as_ref()?;
    let signer = match Signer::from_pem(&key.pem) {
        Ok(s) => s,
        Err(e) => {
            // Config::validate refuses such a key; a Config built without it lands here.
            tracing::error!(
                "serviceaccount-token: --service-account-private-key-file: {e}; not started"
            );
            return None;
        }
    };
    let accounts = ctx.informers.informer::<ServiceAccount>();
    let secrets = ctx.informers.informer::<Secret>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        secrets.on_change(move |c| {
            if !matches!(c, Change::Deleted(_)) && is_token_secret(c.object()) {
                q.add(key_of(&**c.object()));
            }
        });
    }
    {
        // An account's coming and going decides its token Secrets' fate.
        let (q, secrets) = (queue.clone(), secrets.clone());
        accounts.on_change(move |c| {
            if matches!(c, Change::Updated { .. }) {
                return;
            }
            let sa = c.object();
            let ns = sa.namespace().unwrap_or_default();
            secrets.for_each(Some(&ns), |s| {
                if is_token_secret(s) && annotation(s, NAME_ANNOTATION) == Some(&sa.name_any()) {
                    q.add(key_of(&**s));
                }
            });
        });
    }
    let ready = {
        let (a, s) = (accounts.clone(), secrets.clone());
        async move {
            a.synced().await;
            s.synced().await;
        }
    };
    let r = Tokens {
        client: ctx.client.clone(),
        accounts,
        secrets,
        signer,
        root_ca: ctx.config.root_ca_pem.clone(),
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

fn is_token_secret(s: &Secret) -> bool {
    s.type_.as_deref() == Some(SECRET_TYPE)
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a String> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .filter(|v| !v.is_empty())
}

struct Tokens {
    client: kube::Client,
    accounts: Informer<ServiceAccount>,
    secrets: Informer<Secret>,
    signer: Signer,
    root_ca: Option<String>,
}

impl Tokens {
    /// The account named `name` whose uid is `uid` (any uid when None). The cache first;
    /// on a miss, the API: a token must not be deleted because the cache has not seen a
    /// new account yet.
    async fn account(
        &self,
        ns: &str,
        name: &str,
        uid: Option<&String>,
    ) -> Result<Option<ServiceAccount>, ApiError> {
        let matches = |sa: &ServiceAccount| uid.is_none_or(|u| sa.uid().as_ref() == Some(u));
        if let Some(sa) = self.accounts.get(ns, name).filter(|sa| matches(sa)) {
            return Ok(Some((*sa).clone()));
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(sa) => Ok(sa.filter(matches)),
            Err(e) => Err(ApiError::new(
                "get serviceaccount",
                format!("{ns}/{name}"),
                e,
            )),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Tokens {
    type Error = TokenError;

    fn name(&self) -> &'static str {
        "serviceaccount-token"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, TokenError> {
        let Some(secret) = self.secrets.get_key(key) else {
            return Ok(Action::Done);
        };
        if !is_token_secret(&secret) || is_deleting(&secret.metadata) {
            return Ok(Action::Done);
        }
        let (ns, name) = split_key(key);
        // The API server refuses a token Secret without the name.
        let Some(sa_name) = annotation(&secret, NAME_ANNOTATION) else {
            return Ok(Action::Done);
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let Some(sa) = self
            .account(ns, sa_name, annotation(&secret, UID_ANNOTATION))
            .await?
        else {
            tracing::debug!(secret = key, account = %sa_name, "the token's service account is gone: deleting the token");
            // Only this Secret, not one made again under its name meanwhile.
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            return match api.delete(name, &dp).await {
                Ok(_) => Ok(Action::Done),
                Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(Action::Done),
                Err(e) => Err(ApiError::new("delete secret", key, e).into()),
            };
        };
        let sa_uid = sa.uid().unwrap_or_default();
        let data = secret.data.clone().unwrap_or_default();
        let holds = |k: &str, v: &[u8]| data.get(k).is_some_and(|b| b.0 == v);
        let needs_token = data.get("token").is_none_or(|t| t.0.is_empty());
        let needs_ca = self
            .root_ca
            .as_ref()
            .is_some_and(|ca| !holds("ca.crt", ca.as_bytes()));
        let needs_ns = !holds("namespace", ns.as_bytes());
        let needs_annotations = annotation(&secret, UID_ANNOTATION) != Some(&sa_uid);
        if !(needs_token || needs_ca || needs_ns || needs_annotations) {
            return Ok(Action::Done);
        }
        let mut filled = (*secret).clone();
        let data = filled.data.get_or_insert_with(BTreeMap::new);
        if needs_token {
            let claims = legacy_claims(ns, &sa.name_any(), &sa_uid, name);
            data.insert(
                "token".into(),
                ByteString(self.signer.sign(&claims).into_bytes()),
            );
        }
        if let Some(ca) = &self.root_ca {
            data.insert("ca.crt".into(), ByteString(ca.clone().into_bytes()));
        }
        data.insert("namespace".into(), ByteString(ns.as_bytes().to_vec()));
        let annotations = filled
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(NAME_ANNOTATION.into(), sa.name_any());
        annotations.insert(UID_ANNOTATION.into(), sa_uid);
        match api.replace(name, &PostParams::default(), &filled).await {
            Ok(_) => Ok(Action::Done),
            // Our copy was stale (its newer version's event brings the key back), or the
            // Secret is gone.
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(Action::Done),
            Err(e) => Err(ApiError::new("update secret", key, e).into()),
        }
    }
}
