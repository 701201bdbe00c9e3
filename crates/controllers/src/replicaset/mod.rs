//! The ReplicaSet and ReplicationController controllers (kube-controller-manager's
//! `replicaset` and `replicationcontroller`): each owner holds `spec.replicas` active
//! pods made from its template.
//!
//! Contract, per owner key: the pods of the owner's namespace are read from the shared
//! Pod cache once per reconcile; active orphans its selector matches are adopted and
//! owned pods it no longer matches are released (neither while the owner is being
//! deleted); missing pods are created in slow-start batches (1, 2, 4 … all of a batch
//! at once, stopping at the first refusal) and surplus pods deleted in the order of
//! [`rank`], at most [`BURST_REPLICAS`] of either per reconcile; the status (counts,
//! observedGeneration, the `ReplicaFailure` condition) is written through the status
//! subresource when it changed. Terminal pods count for nothing and are left to pod GC;
//! an owner being deleted creates nothing.
//!
//! Lifecycle: [`Expectations`] record each burst of creates (a count) or deletes (pod
//! UIDs) and the Pod handlers tick them off as the cache sees them, so the next
//! reconcile acts only on a cache that includes its own writes. The handlers only
//! enqueue owner keys: a pod's controller on every change, and for an orphan the owners
//! whose selectors match it.
//!
//! Both kinds share one generic controller over [`Owner`]; ReplicationControllers are
//! read as kube reads them (a map selector, defaulting to the template's labels).

mod rank;
mod status;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as KubeSelector, OwnerReference,
};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_api::selector::LabelSelector;
use tokio::task::JoinHandle;

use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informer::{key_of, split_key, Change, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{
    self, controller_of, controller_ref, generate_name_prefix, is_active, is_deleting, labels_of,
    pod_from_template, ApiError, SelectorError,
};
use crate::{Context, Queue};

use status::{Condition, Failure, Status};

/// kube's `burstReplicas`: the most pods created or deleted by one reconcile.
pub(crate) const BURST_REPLICAS: usize = 500;

/// The first slow-start batch (kube's `SlowStartInitialBatchSize`).
const SLOW_START_INITIAL_BATCH: usize = 1;

pub(crate) fn start_replicaset(ctx: &Context) -> Option<JoinHandle<()>> {
    start::<ReplicaSet>(ctx)
}

pub(crate) fn start_replication_controller(ctx: &Context) -> Option<JoinHandle<()>> {
    start::<ReplicationController>(ctx)
}

/// The two kinds' statuses have the same fields under different types.
macro_rules! status_from {
    ($s:expr) => {
        Status {
            replicas: $s.replicas,
            fully_labeled_replicas: $s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: $s.ready_replicas.unwrap_or(0),
            available_replicas: $s.available_replicas.unwrap_or(0),
            observed_generation: $s.observed_generation.unwrap_or(0),
            conditions: $s
                .conditions
                .iter()
                .flatten()
                .map(|c| Condition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
                .collect(),
        }
    };
}

/// What the controller needs of the kind that owns the pods.
pub(crate) trait Owner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// kube-controller-manager's controller name.
    const CONTROLLER: &'static str;
    /// The Events' `source.component`.
    const COMPONENT: &'static str;

    /// `spec.replicas` (1 when unset, the API default).
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn pod_selector(&self) -> Result<LabelSelector, SelectorError>;
    /// The status as it stands, in the shape both kinds share.
    fn current_status(&self) -> Status;
}

impl Owner for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset";
    const COMPONENT: &'static str = "replicaset-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn pod_selector(&self) -> Result<LabelSelector, SelectorError> {
        util::selector(self.spec.as_ref().map(|s| &s.selector))
    }
    fn current_status(&self) -> Status {
        self.status
            .as_ref()
            .map_or_else(Status::default, |s| status_from!(s))
    }
}

impl Owner for ReplicationController {
    const CONTROLLER: &'static str = "replicationcontroller";
    const COMPONENT: &'static str = "replication-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn pod_selector(&self) -> Result<LabelSelector, SelectorError> {
        // The API defaults an RC's selector to its template's labels.
        let spec = self.spec.as_ref();
        let map = spec
            .and_then(|s| s.selector.clone())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                spec.and_then(|s| s.template.as_ref())
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.clone())
            })
            .unwrap_or_default();
        util::selector(Some(&KubeSelector {
            match_labels: Some(map),
            match_expressions: None,
        }))
    }
    fn current_status(&self) -> Status {
        self.status
            .as_ref()
            .map_or_else(Status::default, |s| status_from!(s))
    }
}

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicaError {
    /// Adopting or releasing a pod failed.
    #[error("claiming pods of {owner}")]
    Claim {
        owner: String,
        #[source]
        source: ApiError,
    },
    /// A pod create was refused; the rest of the burst was skipped.
    #[error("creating pods for {owner}")]
    Create {
        owner: String,
        #[source]
        source: ApiError,
    },
    /// Deleting surplus pods failed.
    #[error("deleting pods of {owner}")]
    Delete {
        owner: String,
        #[source]
        source: ApiError,
    },
    /// Writing the status failed (a conflict or the owner is gone).
    #[error("updating the status of {owner}")]
    Status {
        owner: String,
        #[source]
        source: ApiError,
    },
}

struct Controller<K> {
    ctx: Context,
    owners: Informer<K>,
    pods: Informer<Pod>,
    expectations: Arc<Expectations>,
    recorder: Recorder,
}

fn start<K: Owner>(ctx: &Context) -> Option<JoinHandle<()>> {
    let owners = ctx.informers.informer::<K>();
    let pods = ctx.informers.informer::<Pod>();
    let queue = Queue::new();
    let expectations = Arc::new(Expectations::new());

    {
        let (q, e) = (queue.clone(), expectations.clone());
        owners.on_change(move |ch| {
            let key = key_of(&**ch.object());
            match ch {
                Change::Deleted(_) => e.delete(&key),
                // Its own status writes come back as updates: nothing to act on (a
                // reconcile walks the namespace's pods, so these would double them).
                Change::Updated { old, new } if status_only(old.meta(), new.meta()) => return,
                _ => {}
            }
            q.add(key);
        });
    }
    {
        let handler = PodHandler {
            owners: owners.clone(),
            queue: queue.clone(),
            expectations: expectations.clone(),
        };
        pods.on_change(move |ch| handler.on_change(ch));
    }

    let ready = {
        let (o, p) = (owners.clone(), pods.clone());
        async move {
            o.synced().await;
            p.synced().await;
        }
    };
    let controller = Controller {
        ctx: ctx.clone(),
        owners,
        pods,
        expectations,
        recorder: ctx.events.recorder(K::COMPONENT),
    };
    Some(runner::spawn(
        Arc::new(controller),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

/// Whether an owner's update changed nothing but its status (same generation, labels,
/// owners and deletion state).
fn status_only(
    old: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    new: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    old.generation == new.generation
        && old.labels == new.labels
        && old.owner_references == new.owner_references
        && old.deletion_timestamp == new.deletion_timestamp
        && old.annotations == new.annotations
}

/// How long pod events that change only what the status counts are gathered before the
/// owner is reconciled (each reconcile walks the namespace's pods).
const POD_STATUS_BATCH: std::time::Duration = std::time::Duration::from_millis(200);

/// Turns pod changes into owner keys and ticks off expectations.
struct PodHandler<K> {
    owners: Informer<K>,
    queue: Queue,
    expectations: Arc<Expectations>,
}

impl<K: Owner> PodHandler<K> {
    fn on_change(&self, ch: &Change<'_, Pod>) {
        match ch {
            Change::Added(pod) => {
                if is_deleting(&pod.metadata) {
                    // Already on its way out: never wait for it to show up as active.
                    self.deleted(pod);
                } else if let Some(key) = self.owner_key(pod, controller_of(&pod.metadata)) {
                    self.expectations.creation_observed(&key);
                    self.enqueue(key);
                } else if controller_of(&pod.metadata).is_none() {
                    self.enqueue_matching(pod);
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let labels_changed = old.metadata.labels != new.metadata.labels;
                if is_deleting(&new.metadata) {
                    self.deleted(new);
                    if labels_changed {
                        self.deleted(old);
                    }
                    return;
                }
                let (old_ref, new_ref) =
                    (controller_of(&old.metadata), controller_of(&new.metadata));
                let ref_changed = old_ref.map(|r| &r.uid) != new_ref.map(|r| &r.uid);
                if ref_changed {
                    if let Some(key) = self.owner_key(old, old_ref) {
                        self.queue.add(key);
                    }
                }
                if new_ref.is_some() {
                    if let Some(key) = self.owner_key(new, new_ref) {
                        // Status-only news (a pod turned ready): batched.
                        if ref_changed || labels_changed {
                            self.queue.add(key);
                        } else {
                            self.queue.add_after(key, POD_STATUS_BATCH);
                        }
                    }
                } else if labels_changed || ref_changed {
                    self.enqueue_matching(new);
                }
            }
            Change::Deleted(pod) => self.deleted(pod),
        }
    }

    /// A pod gone or going: its owner's expected deletion is seen.
    fn deleted(&self, pod: &Pod) {
        if let Some(key) = self.owner_key(pod, controller_of(&pod.metadata)) {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            self.expectations.deletion_observed(&key, uid);
            self.enqueue(key);
        }
    }

    /// Queues the owner at once when this event completes its expectations (the next
    /// burst of creates or deletes may start), else after a short batch period: a burst
    /// of ten thousand pod events costs a few reconciles, not ten thousand.
    fn enqueue(&self, key: String) {
        if self.expectations.satisfied(&key) {
            self.queue.add(key);
        } else {
            self.queue.add_after(key, POD_STATUS_BATCH);
        }
    }

    /// The key of the cached owner `r` names, if it is one of ours and still the same
    /// object (same UID).
    fn owner_key(&self, pod: &Pod, r: Option<&OwnerReference>) -> Option<String> {
        let r = r?;
        if r.kind != K::kind(&()) {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let owner = self.owners.get(ns, &r.name)?;
        (owner.meta().uid.as_deref() == Some(r.uid.as_str())).then(|| key_of(&*owner))
    }

    /// An orphan: every owner that could adopt it looks.
    fn enqueue_matching(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = labels_of(&pod.metadata);
        self.owners.for_each(Some(ns), |o| {
            if o.pod_selector()
                .is_ok_and(|s| !s.is_empty() && s.matches(labels))
            {
                self.queue.add(key_of(&**o));
            }
        });
    }
}

/// The namespace's pods as one reconcile sees them.
struct Observed {
    /// Active pods this owner controls and selects (adopted ones included).
    owned: Vec<Arc<Pod>>,
    /// Active orphans the selector matches.
    orphans: Vec<Arc<Pod>>,
    /// Active pods this owner controls but no longer selects.
    strays: Vec<Arc<Pod>>,
    /// Active pods of this owner and its siblings (same controller) per node.
    on_node: HashMap<String, usize>,
}

#[async_trait::async_trait]
impl<K: Owner> Reconciler for Controller<K> {
    type Error = ReplicaError;

    fn name(&self) -> &'static str {
        K::CONTROLLER
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReplicaError> {
        let Some(owner) = self.owners.get_key(key) else {
            self.expectations.delete(key);
            return Ok(Action::Done);
        };
        let selector = match owner.pod_selector() {
            Ok(s) => s,
            Err(e) => {
                // Nothing to do until the object is fixed (the API validates selectors).
                tracing::warn!(controller = K::CONTROLLER, key, error = %e, "invalid selector");
                return Ok(Action::Done);
            }
        };
        let needs_sync = self.expectations.satisfied(key);
        let deleting = is_deleting(owner.meta());
        let mut seen = self.observe(&owner, &selector);

        if !deleting {
            self.claim(&owner, &mut seen).await?;
        }

        let mut failure = None;
        if needs_sync && !deleting {
            if let Err(e) = self.manage(key, &owner, &seen).await {
                failure = Some(e);
            }
        }

        let now = self.ctx.now();
        let min_ready = Duration::from_secs(owner.min_ready_seconds().max(0) as u64);
        let template_labels = owner
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let counts = status::count(&seen.owned, &template_labels, min_ready, now);
        let message = failure.as_ref().map(failure_message);
        let failed = match (&failure, &message) {
            (Some(ReplicaError::Create { .. }), Some(m)) => Failure::Create(m),
            (Some(ReplicaError::Delete { .. }), Some(m)) => Failure::Delete(m),
            _ => Failure::None,
        };
        let old = owner.current_status();
        let generation = owner.meta().generation.unwrap_or(0);
        let new = status::next(&old, &counts, generation, failed, now);
        if new != old {
            self.write_status(&owner, &new).await?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(match counts.until_available {
            // A little after the pod turns available, so the second has passed.
            Some(d) => Action::RequeueAfter(d + Duration::from_millis(100)),
            None => Action::Done,
        })
    }
}

impl<K: Owner> Controller<K> {
    fn api<T>(&self, ns: &str) -> Api<T>
    where
        T: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    /// One pass over the namespace's cached pods.
    fn observe(&self, owner: &K, selector: &LabelSelector) -> Observed {
        let ns = owner.namespace().unwrap_or_default();
        let uid = owner.meta().uid.clone().unwrap_or_default();
        // The owner and its siblings under the same controller (a Deployment's
        // ReplicaSets), whose pods count for co-location when scaling down.
        let mut family: HashSet<String> = HashSet::from([uid.clone()]);
        if let Some(parent) = controller_of(owner.meta()) {
            self.owners.for_each(Some(&ns), |o| {
                if controller_of(o.meta()).is_some_and(|r| r.uid == parent.uid) {
                    if let Some(u) = &o.meta().uid {
                        family.insert(u.clone());
                    }
                }
            });
        }
        let mut seen = Observed {
            owned: Vec::new(),
            orphans: Vec::new(),
            strays: Vec::new(),
            on_node: HashMap::new(),
        };
        self.pods.for_each(Some(&ns), |p| {
            if !is_active(p) {
                return;
            }
            let labels = labels_of(&p.metadata);
            match controller_of(&p.metadata) {
                Some(r) => {
                    if family.contains(&r.uid) {
                        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                        *seen.on_node.entry(node.unwrap_or_default()).or_default() += 1;
                    }
                    if r.uid == uid {
                        if selector.matches(labels) {
                            seen.owned.push(p.clone());
                        } else {
                            seen.strays.push(p.clone());
                        }
                    }
                }
                None => {
                    // A selector of everything (refused by validation) adopts nothing.
                    if !selector.is_empty() && selector.matches(labels) {
                        seen.orphans.push(p.clone());
                    }
                }
            }
        });
        seen
    }

    /// Adopts matching orphans and releases owned pods that stopped matching.
    async fn claim(&self, owner: &K, seen: &mut Observed) -> Result<(), ReplicaError> {
        let ns = owner.namespace().unwrap_or_default();
        let api: Api<Pod> = self.api(&ns);
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let claim_err = |source| ReplicaError::Claim {
            owner: key_of(owner),
            source,
        };
        if !seen.orphans.is_empty() && self.may_adopt(owner).await? {
            let oref = controller_ref(owner);
            let results = join_all(
                seen.orphans
                    .iter()
                    .map(|p| util::adopt(&api, &**p, oref.clone())),
            )
            .await;
            let orphans = std::mem::take(&mut seen.orphans);
            let mut first_err = None;
            for (p, r) in orphans.into_iter().zip(results) {
                match r {
                    Ok(()) => seen.owned.push(p),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(claim_err(e));
            }
        }
        if !seen.strays.is_empty() {
            let results =
                join_all(seen.strays.iter().map(|p| util::release(&api, &**p, &uid))).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(claim_err(e));
            }
        }
        Ok(())
    }

    /// kube's adoption recheck: the owner, read fresh, is the same object and not being
    /// deleted (the cache may lag behind a delete).
    async fn may_adopt(&self, owner: &K) -> Result<bool, ReplicaError> {
        let ns = owner.namespace().unwrap_or_default();
        match self.api::<K>(&ns).get_opt(&owner.name_any()).await {
            Ok(Some(fresh)) => {
                Ok(fresh.meta().uid == owner.meta().uid && !is_deleting(fresh.meta()))
            }
            Ok(None) => Ok(false),
            Err(e) => Err(ReplicaError::Claim {
                owner: key_of(owner),
                source: ApiError::new("get", key_of(owner), e),
            }),
        }
    }

    /// Creates or deletes pods toward `spec.replicas`, at most a burst of them.
    async fn manage(&self, key: &str, owner: &K, seen: &Observed) -> Result<(), ReplicaError> {
        let want = owner.replicas().max(0) as usize;
        let have = seen.owned.len();
        if have < want {
            let n = (want - have).min(BURST_REPLICAS);
            // Expect them before the first create: the cache may see a pod before the
            // create returns.
            self.expectations.expect_creations(key, n);
            let (created, err) = slow_start(n, || self.create_pod(owner)).await;
            for _ in created..n {
                // Skipped or refused: never seen, never waited for.
                self.expectations.creation_observed(key);
            }
            if let Some(source) = err {
                return Err(ReplicaError::Create {
                    owner: key.to_string(),
                    source,
                });
            }
        } else if have > want {
            let n = (have - want).min(BURST_REPLICAS);
            let doomed = rank::pods_to_delete(&seen.owned, &seen.on_node, n, self.ctx.now());
            self.expectations
                .expect_deletions(key, doomed.iter().filter_map(|p| p.metadata.uid.clone()));
            let results = join_all(doomed.iter().map(|p| self.delete_pod(key, owner, p))).await;
            if let Some(source) = results.into_iter().find_map(Result::err) {
                return Err(ReplicaError::Delete {
                    owner: key.to_string(),
                    source,
                });
            }
        }
        Ok(())
    }

    async fn create_pod(&self, owner: &K) -> Result<(), ApiError> {
        let ns = owner.namespace().unwrap_or_default();
        let template = owner.template().cloned().unwrap_or_default();
        let pod = pod_from_template(
            &template,
            &ns,
            &generate_name_prefix(&owner.name_any()),
            controller_ref(owner),
        );
        match self
            .api::<Pod>(&ns)
            .create(&PostParams::default(), &pod)
            .await
        {
            Ok(p) => {
                self.recorder.normal(
                    owner,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
                Ok(())
            }
            // The namespace is going away: nothing to create, nothing wrong.
            Err(e) if namespace_terminating(&e) => Ok(()),
            Err(e) => {
                self.recorder.warning(
                    owner,
                    "FailedCreate",
                    format!("Error creating: {}", api_message(&e)),
                );
                Err(ApiError::new("create pod for", key_of(owner), e))
            }
        }
    }

    async fn delete_pod(&self, key: &str, owner: &K, pod: &Pod) -> Result<(), ApiError> {
        let ns = owner.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match self
            .api::<Pod>(&ns)
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                self.recorder
                    .normal(owner, "SuccessfulDelete", format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) if util::is_not_found(&e) => {
                // Gone already; its delete may have been seen before we expected it.
                self.expectations.deletion_observed(key, &uid);
                Ok(())
            }
            Err(e) => {
                self.expectations.deletion_observed(key, &uid);
                self.recorder.warning(
                    owner,
                    "FailedDelete",
                    format!("Error deleting: {}", api_message(&e)),
                );
                Err(ApiError::new("delete pod", format!("{ns}/{name}"), e))
            }
        }
    }

    async fn write_status(&self, owner: &K, status: &Status) -> Result<(), ReplicaError> {
        let (ns, name) = split_key_owned(owner);
        match self
            .api::<K>(&ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&status.patch()),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: its delete event ends the key.
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(ReplicaError::Status {
                owner: key_of(owner),
                source: ApiError::new("update status of", key_of(owner), e),
            }),
        }
    }
}

fn split_key_owned<K: Resource>(o: &K) -> (String, String) {
    let key = key_of(o);
    let (ns, name) = split_key(&key);
    (ns.to_string(), name.to_string())
}

/// kube's `slowStartBatch`: runs `count` calls of `f` in batches of 1, 2, 4 … (all of a
/// batch at once), stopping after the first batch with a failure. Returns how many
/// succeeded and the first failure.
async fn slow_start<F, Fut, E>(count: usize, f: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut succeeded = 0;
    let mut batch = remaining.min(SLOW_START_INITIAL_BATCH);
    while batch > 0 {
        let results = join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => succeeded += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return (succeeded, first_err);
        }
        remaining -= batch;
        batch = remaining.min(2 * batch);
    }
    (succeeded, None)
}

/// The API server's message for a refused call (what kube prints), else the error.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        e => e.to_string(),
    }
}

/// The ReplicaFailure condition's message: the API's words for the refused call.
fn failure_message(e: &ReplicaError) -> String {
    match e {
        ReplicaError::Claim { source, .. }
        | ReplicaError::Create { source, .. }
        | ReplicaError::Delete { source, .. }
        | ReplicaError::Status { source, .. } => api_message(&source.source),
    }
}

/// Whether a create was refused because its namespace is being deleted.
fn namespace_terminating(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_refusal() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(500, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        })
        .await;
        assert_eq!((ok, err), (500, None));
        assert_eq!(calls.load(Ordering::SeqCst), 500);

        // Refuse every call from the 4th on: batches 1, 2, then 4 with one success.
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(100, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n >= 3 {
                Err("refused")
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!((ok, err), (3, Some("refused")));
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn a_batch_runs_concurrently() {
        let in_flight = Mutex::new((0usize, 0usize));
        let (ok, _) = slow_start(7, || async {
            {
                let mut g = in_flight.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            tokio::task::yield_now().await;
            in_flight.lock().unwrap().0 -= 1;
            Ok::<(), ()>(())
        })
        .await;
        assert_eq!(ok, 7);
        assert_eq!(in_flight.lock().unwrap().1, 4);
    }

    #[test]
    fn an_rc_selector_defaults_to_the_template_labels() {
        let rc: ReplicationController = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rc"},
            "spec": {"template": {"metadata": {"labels": {"app": "a"}}}},
        }))
        .unwrap();
        let s = rc.pod_selector().unwrap();
        assert!(s.matches(&[("app".to_string(), "a".to_string())].into()));
        assert!(!s.matches(&BTreeMap::new()));
        assert_eq!(rc.replicas(), 1);
    }
}
