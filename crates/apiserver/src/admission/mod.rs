//! Dynamic admission (`admissionregistration.k8s.io/v1`): admission webhooks
//! ([`webhook`]) and ValidatingAdmissionPolicies ([`policy`]), as kube-apiserver's
//! MutatingAdmissionWebhook, ValidatingAdmissionPolicy and ValidatingAdmissionWebhook
//! plugins run, in that order.
//!
//! Contract: every server keeps the webhook configurations ([`Webhooks`]) and the
//! policies with their bindings, compiled ([`Policies`]), in memory, loaded before serving
//! ([`load`]) and kept current from the watch cache ([`follow`]); no request reads them
//! from the store. Each create, update and delete of a stored object calls [`admit`]
//! after the strategy's validation and before the store write: first the matching
//! mutating webhooks (which may change the object, then validated again), then the
//! policies bound to the request, then the matching validating webhooks. The first
//! refusal is the answer; warnings (webhooks', and policy bindings' `Warn`) go into the
//! response's Warning headers and audit annotations into the request's audit event.
//! Matching (rules, namespace and object selectors, policies' `MatchResources`) is
//! [`matching`]'s, shared by webhooks and policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;
use skiff_api::kinds::{self, Kind};
use skiff_store::Revision;

mod client;
mod matching;
mod policy;
mod webhook;

pub use policy::Policies;
pub use webhook::Webhooks;

use crate::audit::UserInfo;
use crate::handlers::objects;
use crate::meta;
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::{Ended, EventType, WatchCache};
use crate::{AppState, Objects};

const GROUP: &str = "admissionregistration.k8s.io";

/// The kinds [`follow`] keeps in memory.
const FOLLOWED: [&str; 4] = [
    webhook::CONFIG_KINDS[0],
    webhook::CONFIG_KINDS[1],
    policy::POLICY_KIND,
    policy::BINDING_KIND,
];

fn followed_kind(kind: &str) -> &'static Kind {
    let plural = match kind {
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        "ValidatingWebhookConfiguration" => "validatingwebhookconfigurations",
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        _ => "validatingadmissionpolicybindings",
    };
    kinds::by_resource(GROUP, "v1", plural).expect("admission configuration kinds are served")
}

/// Puts one stored object (None: deleted) of a followed kind into its index.
fn apply(st: &Objects, kind: &str, name: String, obj: Option<Value>) {
    match kind {
        "ValidatingAdmissionPolicy" => st.policies.set_policy(&name, obj.as_ref()),
        "ValidatingAdmissionPolicyBinding" => st.policies.set_binding(&name, obj.as_ref()),
        _ => st.webhooks.update(|i| match obj {
            Some(o) => {
                i.of(kind).insert(name, o);
            }
            None => {
                i.of(kind).remove(&name);
            }
        }),
    }
}

/// Reads every followed kind from the store into the indexes (replacing them).
pub async fn load(st: &Objects) -> ApiResult<()> {
    let mut all = Vec::new();
    for k in FOLLOWED {
        let objs = objects::list_values(&*st.store, &meta::kind_prefix(followed_kind(k))).await?;
        all.push((k, objs));
    }
    st.webhooks.update(|i| *i = Default::default());
    st.policies.clear();
    for (k, objs) in all {
        for obj in objs {
            apply(st, k, meta::name(&obj).to_string(), Some(obj));
        }
    }
    Ok(())
}

/// Keeps `st.objects.webhooks` and `st.objects.policies` current from the watch cache
/// until `stop`; a gap in the cache's events reloads everything.
pub async fn follow(
    st: Arc<AppState>,
    cache: Arc<WatchCache>,
    stop: skiff_serve::CancellationToken,
) {
    let prefixes: Vec<(String, &str)> = FOLLOWED
        .iter()
        .map(|k| (meta::kind_prefix(followed_kind(k)), *k))
        .collect();
    loop {
        let Ok(mut sub) = cache.subscribe(Revision::MAX) else {
            return;
        };
        if let Err(e) = load(&st.objects).await {
            tracing::warn!(error = %e.message, "loading the admission configurations and policies");
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        let Some((_, kind)) = prefixes.iter().find(|(p, _)| ev.key.starts_with(p.as_str())) else {
                            continue;
                        };
                        let name = ev.key.rsplit('/').next().unwrap_or_default().to_string();
                        match ev.kind {
                            EventType::Deleted => apply(&st.objects, kind, name, None),
                            _ => {
                                if let Some(obj) = ev.decode() {
                                    apply(&st.objects, kind, name, Some(obj));
                                }
                            }
                        }
                    }
                    Err(Ended::Closed) => return,
                    Err(_) => break,
                }
            }
        }
    }
}

/// What is being admitted.
pub struct Request<'a> {
    pub kind: &'a Kind,
    /// `""`, `status`, …
    pub subresource: &'a str,
    /// CREATE, UPDATE or DELETE.
    pub operation: &'static str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub dry_run: bool,
}

/// What admission made of a request that may go on.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Warnings (webhooks' and `Warn` bindings'), for the response's Warning headers.
    pub warnings: Vec<String>,
    /// Whether a mutating webhook patched the object (to be validated again).
    pub mutated: bool,
}

/// Runs the request through the mutating webhooks (which may change `obj`), the
/// policies and the validating webhooks. A denial, or a failure under `failurePolicy:
/// Fail`, is the error to answer.
pub async fn admit(
    st: &Objects,
    req: &Request<'_>,
    obj: Option<&mut Value>,
    old: Option<&Value>,
) -> ApiResult<Admitted> {
    crate::node_authz::admit(
        st,
        req.kind,
        req.subresource,
        req.operation,
        req.namespace,
        req.name,
        obj.as_deref(),
        old,
    )
    .await?;
    let hooks = if webhook::exempt(req.kind) {
        None
    } else {
        st.webhooks.snapshot()
    };
    let policies = if policy::exempt(req.kind) {
        None
    } else {
        st.policies.snapshot()
    };
    if hooks.is_none() && policies.is_none() {
        return Ok(Admitted::default());
    }
    let user = crate::authz::REQUEST_USER
        .try_with(Clone::clone)
        .unwrap_or_default();
    let mut attrs = Attributes::new(st, req, user);
    let mut out = Admitted::default();
    let mut obj = obj;
    if let Some(h) = &hooks {
        webhook::mutate(&mut attrs, h, obj.as_deref_mut(), old, &mut out).await?;
    }
    let obj = obj.as_deref();
    if let Some(p) = &policies {
        policy::validate(&mut attrs, p, obj, old, &mut out).await?;
    }
    if let Some(h) = &hooks {
        webhook::validate(&mut attrs, h, obj, old, &mut out).await?;
    }
    Ok(out)
}

/// What admission knows of a request (kube's `admission.Attributes`): the request, who
/// makes it, and the Namespace of its object, read from the store at most once per
/// request and only when a selector or an expression needs it.
pub(super) struct Attributes<'a> {
    st: &'a Objects,
    req: &'a Request<'a>,
    user: UserInfo,
    /// None: not read yet; Some(None): there is none (cluster-scoped, or not found).
    read: Option<Option<Value>>,
}

impl<'a> Attributes<'a> {
    fn new(st: &'a Objects, req: &'a Request<'a>, user: UserInfo) -> Attributes<'a> {
        Attributes {
            st,
            req,
            user,
            read: None,
        }
    }

    fn is_namespace(&self) -> bool {
        self.req.kind.group.is_empty() && self.req.kind.kind == "Namespace"
    }

    /// The Namespace object a namespaced request is in (None for cluster-scoped objects,
    /// Namespaces themselves included, and for a namespace that does not exist).
    pub(super) async fn namespace_object(&mut self) -> ApiResult<Option<&Value>> {
        if self.read.is_none() {
            let ns = match self.req.namespace.filter(|n| !n.is_empty()) {
                Some(ns) if self.req.kind.namespaced && !self.is_namespace() => {
                    match objects::get(self.st, objects::ns_kind(), None, ns).await {
                        Ok(n) => Some(n),
                        Err(e) if e.code == StatusCode::NOT_FOUND => None,
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            };
            self.read = Some(ns);
        }
        Ok(self.read.as_ref().and_then(Option::as_ref))
    }

    /// The labels `namespaceSelector` sees: the object's Namespace's (none if it does
    /// not exist), a Namespace's own, or None for other cluster-scoped objects (never
    /// excluded).
    pub(super) async fn namespace_labels(
        &mut self,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> ApiResult<Option<BTreeMap<String, String>>> {
        if self.is_namespace() {
            return Ok(Some(matching::labels(obj.or(old))));
        }
        if !self.req.kind.namespaced || self.req.namespace.is_none_or(str::is_empty) {
            return Ok(None);
        }
        Ok(Some(matching::labels(self.namespace_object().await?)))
    }
}

/// kube's InternalError for a webhook that could not be called.
fn internal(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("Internal error occurred: {message}"),
    )
}
