//! The namespace controller: empties a namespace being deleted, then finalizes it.
//!
//! A DELETE of a namespace only marks it (deletionTimestamp, phase Terminating; its
//! `spec.finalizers` holds `kubernetes`). For such a namespace this controller discovers
//! every namespaced resource that supports delete and removes its objects in the
//! namespace (deletecollection where served, else one delete per object, propagation
//! Background), kind by kind and all kinds at once; then lists again. While objects
//! remain (pods until their kubelet finishes them, objects held by finalizers) it comes
//! back later; once none remain it removes `kubernetes` through
//! `namespaces/{name}/finalize`, and the API server removes the namespace when no other
//! finalizer is left. Each pass reports kube's five conditions in the namespace's status
//! (NamespaceDeletionDiscoveryFailure, NamespaceDeletionGroupVersionParsingFailure,
//! NamespaceDeletionContentFailure, NamespaceContentRemaining,
//! NamespaceFinalizersRemaining) with kube's reasons and messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::discovery::{verbs, ApiCapabilities};
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::garbage_collector::resources::{self, supports};
use crate::informer::{Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_not_found, ApiError};
use crate::{Clock, Context};

/// The finalizer of `spec.finalizers` this controller owns.
const FINALIZER: &str = "kubernetes";
/// kube-controller-manager's `--concurrent-namespace-syncs`.
const WORKERS: usize = 10;

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let namespaces = ctx.informers.informer::<Namespace>();
    let queue = Queue::new();
    let q = queue.clone();
    namespaces.on_change(move |c| {
        if let Change::Deleted(_) = c {
            return;
        }
        let ns = c.object();
        if ns.metadata.deletion_timestamp.is_some() {
            if let Some(name) = &ns.metadata.name {
                q.add(name.clone());
            }
        }
    });
    let controller = NamespaceController {
        client: ctx.client.clone(),
        namespaces: namespaces.clone(),
        clock: ctx.clock.clone(),
        passes: Mutex::new(HashMap::new()),
    };
    let ready = async move { namespaces.synced().await };
    Some(runner::spawn(
        Arc::new(controller),
        queue,
        WORKERS,
        ready,
        ctx.stop.clone(),
    ))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum NamespaceError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("namespace {namespace}: discovery failed")]
    Discovery {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("namespace {namespace}: {message}")]
    Content { namespace: String, message: String },
}

struct NamespaceController {
    client: Client,
    namespaces: Informer<Namespace>,
    clock: Arc<dyn Clock>,
    /// Passes that found content remaining, per namespace (the delay grows with them).
    passes: Mutex<HashMap<String, u32>>,
}

/// What one pass over a namespace's content found.
#[derive(Default)]
struct Content {
    /// `plural.group` → objects still there.
    remaining: BTreeMap<String, usize>,
    /// finalizer → objects still carrying it.
    finalizers: BTreeMap<String, usize>,
    /// Why a kind could not be emptied.
    errors: Vec<String>,
}

#[async_trait::async_trait]
impl Reconciler for NamespaceController {
    type Error = NamespaceError;

    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, name: &str) -> Result<Action, NamespaceError> {
        let cached = self.namespaces.get("", name);
        if cached.is_none_or(|n| n.metadata.deletion_timestamp.is_none()) {
            self.forget(name);
            return Ok(Action::Done);
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        // The cache may lag: act on the live namespace.
        let ns = api
            .get_opt(name)
            .await
            .map_err(|e| ApiError::new("reading", format!("namespace {name}"), e))?;
        let Some(ns) = ns.filter(|n| n.metadata.deletion_timestamp.is_some()) else {
            self.forget(name);
            return Ok(Action::Done);
        };
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            self.forget(name);
            return Ok(Action::Done);
        }
        let mut failures: Vec<NamespaceCondition> = Vec::new();
        let found = match resources::discover(&self.client).await {
            Ok(found) => found,
            Err(e) => {
                failures.push(self.failure(
                    "NamespaceDeletionDiscoveryFailure",
                    "DiscoveryFailed",
                    e.to_string(),
                ));
                self.update_conditions(&api, &ns, failures).await?;
                return Err(NamespaceError::Discovery {
                    namespace: name.to_string(),
                    source: e,
                });
            }
        };
        if let Some(msg) = found.failure_message() {
            failures.push(self.failure(
                "NamespaceDeletionDiscoveryFailure",
                "DiscoveryFailed",
                format!(
                    "Discovery failed for some groups, {} failing: {msg}",
                    found.failed.len()
                ),
            ));
        }
        let deletable = found
            .resources
            .iter()
            .filter(|(r, caps)| r.namespaced && supports(caps, &[verbs::DELETE, verbs::LIST]));
        let results = futures_util::future::join_all(
            deletable.map(|(r, caps)| self.empty_kind(name, r, caps)),
        )
        .await;
        let mut content = Content::default();
        for (gr, r) in results {
            match r {
                Ok((count, fins)) => {
                    if count > 0 {
                        content.remaining.insert(gr, count);
                    }
                    for (f, n) in fins {
                        *content.finalizers.entry(f).or_default() += n;
                    }
                }
                Err(e) => content.errors.push(e),
            }
        }
        failures.extend(self.content_conditions(&content));
        self.update_conditions(&api, &ns, failures).await?;
        if !content.errors.is_empty() {
            content.errors.sort();
            return Err(NamespaceError::Content {
                namespace: name.to_string(),
                message: content.errors.join(", "),
            });
        }
        if !content.remaining.is_empty() || !found.failed.is_empty() {
            return Ok(Action::RequeueAfter(self.next_delay(name)));
        }
        self.finalize(&api, ns).await?;
        self.forget(name);
        Ok(Action::Done)
    }
}

impl NamespaceController {
    fn now(&self) -> Time {
        Time(self.clock.now())
    }

    fn failure(&self, type_: &str, reason: &str, message: String) -> NamespaceCondition {
        NamespaceCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(self.now()),
        }
    }

    /// The content failure, remaining and finalizers-remaining conditions of a pass.
    fn content_conditions(&self, c: &Content) -> Vec<NamespaceCondition> {
        let mut out = Vec::new();
        if !c.errors.is_empty() {
            let mut msgs = c.errors.clone();
            msgs.sort();
            out.push(self.failure(
                "NamespaceDeletionContentFailure",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    msgs.len(),
                    msgs.join(", ")
                ),
            ));
        }
        if !c.remaining.is_empty() {
            let mut parts: Vec<String> = c
                .remaining
                .iter()
                .map(|(gr, n)| format!("{gr} has {n} resource instances"))
                .collect();
            parts.sort();
            out.push(self.failure(
                "NamespaceContentRemaining",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            ));
        }
        if !c.finalizers.is_empty() {
            let mut parts: Vec<String> = c
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            parts.sort();
            out.push(self.failure(
                "NamespaceFinalizersRemaining",
                "SomeFinalizerRemain",
                format!("Some finalizers are remaining: {}", parts.join(", ")),
            ));
        }
        out
    }

    /// Deletes the objects of one kind in `ns` and counts what is left (and the
    /// finalizers holding it). Returns the kind as `plural.group` with the outcome.
    async fn empty_kind(
        &self,
        ns: &str,
        res: &resources::Resource,
        caps: &ApiCapabilities,
    ) -> (String, Result<(usize, BTreeMap<String, usize>), String>) {
        let gr = res.group_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &res.ar);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        let lp = ListParams::default();
        let mut collection_done = false;
        if caps.supports_operation(verbs::DELETE_COLLECTION) {
            match api.delete_collection(&dp, &lp).await {
                Ok(_) => collection_done = true,
                // Not served after all (404/405): one by one below.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
                Err(e) => return (gr.clone(), Err(format!("{gr}: {e}"))),
            }
        }
        if !collection_done {
            let list = match api.list_metadata(&lp).await {
                Ok(l) => l,
                Err(e) => return (gr.clone(), Err(format!("{gr}: {e}"))),
            };
            for o in list.items {
                if o.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let Some(name) = o.metadata.name.as_deref() else {
                    continue;
                };
                match api.delete(name, &dp).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return (gr.clone(), Err(format!("{gr}: {e}"))),
                }
            }
        }
        let left = match api.list_metadata(&lp).await {
            Ok(l) => l,
            Err(e) => return (gr.clone(), Err(format!("{gr}: {e}"))),
        };
        let mut finalizers = BTreeMap::new();
        for o in &left.items {
            for f in o.metadata.finalizers.iter().flatten() {
                *finalizers.entry(f.clone()).or_default() += 1;
            }
        }
        (gr, Ok((left.items.len(), finalizers)))
    }

    /// Sets kube's five deletion conditions from this pass's failures, writing only when
    /// one changed (a status that did not change keeps its lastTransitionTime).
    async fn update_conditions(
        &self,
        api: &Api<Namespace>,
        ns: &Namespace,
        failures: Vec<NamespaceCondition>,
    ) -> Result<(), NamespaceError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let mut conditions = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if !merge_conditions(&mut conditions, failures, self.now()) {
            return Ok(());
        }
        let patch = json!({"status": {"conditions": conditions}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                ApiError::new("updating the conditions of", format!("namespace {name}"), e)
            })?;
        Ok(())
    }

    /// Removes `kubernetes` from `spec.finalizers` through the finalize subresource.
    async fn finalize(
        &self,
        api: &Api<Namespace>,
        mut ns: Namespace,
    ) -> Result<(), NamespaceError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let spec = ns.spec.get_or_insert_with(Default::default);
        let kept: Vec<String> = spec
            .finalizers
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != FINALIZER)
            .collect();
        spec.finalizers = Some(kept);
        match api
            .replace_subresource("finalize", &name, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(ApiError::new("finalizing", format!("namespace {name}"), e).into()),
        }
    }

    /// How long until the next look at a namespace whose content remains: short at
    /// first (pods usually finish within seconds), longer while it stays.
    fn next_delay(&self, name: &str) -> Duration {
        let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        let n = passes.entry(name.to_string()).or_default();
        *n = n.saturating_add(1);
        let ms = 250u64.saturating_mul(1 << (*n).min(6));
        Duration::from_millis(ms.min(15_000))
    }

    fn forget(&self, name: &str) {
        self.passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

/// The condition types the namespace controller maintains, in kube's order.
const CONDITION_TYPES: [&str; 5] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

/// kube's reason and message for a condition type that is not failing.
fn ok_condition(type_: &str) -> (&'static str, &'static str) {
    match type_ {
        "NamespaceDeletionDiscoveryFailure" => (
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        "NamespaceDeletionGroupVersionParsingFailure" => (
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        "NamespaceDeletionContentFailure" => (
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        _ => ("ContentRemoved", "All content successfully removed"),
    }
}

/// Brings `conditions` to this pass's outcome: each maintained type is its failure when
/// one was found, else its "ok" form. Returns whether anything changed.
fn merge_conditions(
    conditions: &mut Vec<NamespaceCondition>,
    failures: Vec<NamespaceCondition>,
    now: Time,
) -> bool {
    let mut changed = false;
    for t in CONDITION_TYPES {
        let new = failures
            .iter()
            .find(|c| c.type_ == t)
            .cloned()
            .unwrap_or_else(|| {
                let (reason, message) = ok_condition(t);
                NamespaceCondition {
                    type_: t.into(),
                    status: "False".into(),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_transition_time: Some(now.clone()),
                }
            });
        match conditions.iter_mut().find(|c| c.type_ == t) {
            None => {
                conditions.push(new);
                changed = true;
            }
            Some(old) => {
                if old.status != new.status
                    || old.reason != new.reason
                    || old.message != new.message
                {
                    if old.status != new.status {
                        old.last_transition_time = Some(now.clone());
                    }
                    old.status = new.status;
                    old.reason = new.reason;
                    old.message = new.message;
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn conditions_follow_kube_and_keep_transition_times() {
        let t0 = Time(Timestamp::from_second(1_000).unwrap_or_default());
        let t1 = Time(Timestamp::from_second(2_000).unwrap_or_default());
        let mut conds = Vec::new();
        let remaining = NamespaceCondition {
            type_: "NamespaceContentRemaining".into(),
            status: "True".into(),
            reason: Some("SomeResourcesRemain".into()),
            message: Some("Some resources are remaining: pods. has 1 resource instances".into()),
            last_transition_time: Some(t0.clone()),
        };
        assert!(merge_conditions(
            &mut conds,
            vec![remaining.clone()],
            t0.clone()
        ));
        assert_eq!(conds.len(), 5);
        assert_eq!(conds[0].reason.as_deref(), Some("ResourcesDiscovered"));
        assert_eq!(conds[3].status, "True");
        // The same outcome writes nothing.
        assert!(!merge_conditions(&mut conds, vec![remaining], t1.clone()));
        // The content is gone: the condition turns False and its time moves.
        assert!(merge_conditions(&mut conds, vec![], t1.clone()));
        assert_eq!(conds[3].status, "False");
        assert_eq!(conds[3].reason.as_deref(), Some("ContentRemoved"));
        assert_eq!(conds[3].last_transition_time, Some(t1));
        assert_eq!(conds[0].last_transition_time, Some(t0));
    }
}
