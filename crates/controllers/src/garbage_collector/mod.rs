//! The garbage collector: deletes objects whose owners are gone, and runs the
//! `foregroundDeletion` and `orphan` finalizers the API server adds on a delete with
//! propagationPolicy Foreground or Orphan (kube's garbagecollector, in a simpler shape).
//!
//! It must know every kind that can carry ownerReferences, so it discovers the server's
//! resources (again every 30 s, for kinds that appear later) and watches the metadata of
//! every one that supports list, watch and delete — except Events — into one
//! [`graph::Graph`] keyed by uid. The graph's changes put uids on the queue; a worker
//! handles one uid at a time:
//! - an owner with a deletionTimestamp and `orphan`: every dependent loses its
//!   reference to it, then the finalizer is removed (the server then removes the owner);
//! - an owner with a deletionTimestamp and `foregroundDeletion`: its dependents are
//!   deleted (each is queued and deleted as below); once none with
//!   `blockOwnerDeletion: true` remains, the finalizer is removed;
//! - an object with owners: each owner is classified as solid (there), dangling (gone:
//!   seen deleted, or a live GET finds nothing or another uid) or waiting (there and
//!   deleting in foreground). With a solid owner it stays and loses its dangling and
//!   waiting references; otherwise it is deleted (in foreground when a waiting owner
//!   needs its own dependents gone first), with a uid precondition.
//!
//! Events are not written. A failing object is retried with backoff by the queue and
//! never stalls the others.

mod graph;
pub(crate) mod resources;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_conflict, is_not_found, ApiError};
use crate::Context;
use graph::{Graph, Node, Resource, FOREGROUND, ORPHAN};

/// How often discovery runs again for kinds that appeared (or went) meanwhile.
const REDISCOVERY: Duration = Duration::from_secs(30);
/// How long the first lists may take before the collector starts with what it has.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// kube-controller-manager's `--concurrent-gc-syncs`.
const WORKERS: usize = 20;

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let queue = Queue::new();
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        graph: Mutex::new(Graph::default()),
        kinds: RwLock::new(HashMap::new()),
        queue: queue.clone(),
    });
    let (ready_tx, mut ready_rx) = watch::channel(false);
    tokio::spawn(monitor(shared.clone(), ready_tx, ctx.stop.clone()));
    let ready = async move {
        let _ = ready_rx.wait_for(|r| *r).await;
    };
    Some(runner::spawn(
        Arc::new(GarbageCollector { shared }),
        queue,
        WORKERS,
        ready,
        ctx.stop.clone(),
    ))
}

/// What the watches and the workers share.
struct Shared {
    client: Client,
    graph: Mutex<Graph>,
    /// Every served kind by (group, kind), to read an owner by its reference.
    kinds: RwLock<HashMap<(String, String), Arc<Resource>>>,
    queue: Queue,
}

impl Shared {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enqueue(&self, work: Vec<String>) {
        for uid in work {
            self.queue.add(uid);
        }
    }

    fn api(&self, res: &Resource, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) if res.namespaced => Api::namespaced_with(self.client.clone(), ns, &res.ar),
            _ => Api::all_with(self.client.clone(), &res.ar),
        }
    }

    /// The served resource of an owner reference's kind, in whatever version the server
    /// prefers (the reference may name another version of the group).
    fn kind(&self, api_version: &str, kind: &str) -> Option<Arc<Resource>> {
        self.kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .cloned()
    }
}

/// The group of an apiVersion (`apps/v1` → `apps`, `v1` → the core group, "").
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Kinds never collected: Events (kube's default ignored resources).
fn ignored(res: &Resource) -> bool {
    res.ar.plural == "events" && (res.ar.group.is_empty() || res.ar.group == "events.k8s.io")
}

/// Discovers the kinds and keeps one metadata watch per kind; marks the graph synced
/// (and the workers ready) once the first lists are in.
async fn monitor(shared: Arc<Shared>, ready: watch::Sender<bool>, stop: CancellationToken) {
    let mut watches: HashMap<Resource, JoinHandle<()>> = HashMap::new();
    let mut synced = false;
    loop {
        let mut first_lists = Vec::new();
        match resources::discover(&shared.client).await {
            Ok(found) => {
                if let Some(msg) = found.failure_message() {
                    tracing::warn!(error = %msg, "garbage collector: discovery incomplete");
                }
                let complete = found.failed.is_empty();
                let mut kinds = HashMap::new();
                let mut watched = HashSet::new();
                for (res, caps) in found.resources {
                    let res = Arc::new(res);
                    kinds.insert((res.ar.group.clone(), res.ar.kind.clone()), res.clone());
                    if ignored(&res) || !resources::supports(&caps, resources::GC_VERBS) {
                        continue;
                    }
                    watched.insert((*res).clone());
                    if !watches.contains_key(&*res) {
                        let (tx, rx) = oneshot::channel();
                        first_lists.push(rx);
                        let task =
                            tokio::spawn(watch_kind(shared.clone(), res.clone(), tx, stop.clone()));
                        watches.insert((*res).clone(), task);
                    }
                }
                *shared.kinds.write().unwrap_or_else(PoisonError::into_inner) = kinds;
                // Kinds no longer served (a removed CRD): stop watching them and forget
                // their objects. Only after a complete discovery: a group that failed
                // to answer this time is not gone.
                if complete {
                    watches.retain(|res, task| {
                        let keep = watched.contains(res);
                        if !keep {
                            task.abort();
                            let mut graph = shared.graph();
                            let mut work = Vec::new();
                            for uid in graph.uids_of(res) {
                                work.extend(graph.remove(&uid));
                            }
                            drop(graph);
                            shared.enqueue(work);
                        }
                        keep
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "garbage collector: discovery failed"),
        }
        if !synced && !watches.is_empty() {
            let all = futures_util::future::join_all(first_lists);
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tokio::time::timeout(SYNC_TIMEOUT, all) => {}
            }
            let work = shared.graph().mark_synced();
            tracing::debug!(objects = shared.graph().len(), "garbage collector synced");
            shared.enqueue(work);
            ready.send_replace(true);
            synced = true;
        }
        let wait = if synced {
            REDISCOVERY
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    for (_, task) in watches {
        task.abort();
    }
}

/// Watches the metadata of one kind into the graph.
async fn watch_kind(
    shared: Arc<Shared>,
    res: Arc<Resource>,
    first_list: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let mut first_list = Some(first_list);
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(shared.client.clone(), &res.ar);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<Vec<(String, Node)>> = None;
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = stream.next() => match ev { Some(ev) => ev, None => return },
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(kind = %res.ar.kind, %e, "garbage collector watch failed; retrying");
                continue;
            }
        };
        let work = match ev {
            Event::Init => {
                listing = Some(Vec::new());
                continue;
            }
            Event::InitApply(o) => {
                let Some((uid, node)) = Node::from_meta(&res, &o.metadata) else {
                    continue;
                };
                match listing.as_mut() {
                    Some(l) => {
                        l.push((uid, node));
                        continue;
                    }
                    None => shared.graph().upsert(uid, node),
                }
            }
            Event::InitDone => {
                let listed = listing.take().unwrap_or_default();
                let mut graph = shared.graph();
                let seen: HashSet<&String> = listed.iter().map(|(u, _)| u).collect();
                let mut work = Vec::new();
                for uid in graph.uids_of(&res) {
                    if !seen.contains(&uid) {
                        work.extend(graph.remove(&uid));
                    }
                }
                for (uid, node) in listed {
                    work.extend(graph.upsert(uid, node));
                }
                drop(graph);
                if let Some(tx) = first_list.take() {
                    let _ = tx.send(());
                }
                work
            }
            Event::Apply(o) => match Node::from_meta(&res, &o.metadata) {
                Some((uid, node)) => shared.graph().upsert(uid, node),
                None => continue,
            },
            Event::Delete(o) => match o.metadata.uid.as_deref() {
                Some(uid) => shared.graph().remove(uid),
                None => continue,
            },
        };
        shared.enqueue(work);
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum GcError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(
        "{dependent} has an owner reference to {api_version} {kind} {name:?}, a kind the server does not serve; the reference is kept until it resolves"
    )]
    UnknownOwnerKind {
        dependent: String,
        api_version: String,
        kind: String,
        name: String,
    },
    #[error("{object} changed under every attempt to update it")]
    Contended { object: String },
}

struct GarbageCollector {
    shared: Arc<Shared>,
}

/// How an owner reference stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The owner is there.
    Solid,
    /// No object with the reference's uid exists.
    Dangling,
    /// The owner is there and deleting in foreground: it waits for this dependent.
    Waiting,
}

#[async_trait::async_trait]
impl Reconciler for GarbageCollector {
    type Error = GcError;

    fn name(&self) -> &'static str {
        "garbagecollector"
    }

    async fn reconcile(&self, uid: &str) -> Result<Action, GcError> {
        let node = self.shared.graph().get(uid).cloned();
        let Some(node) = node else {
            // Gone: its dependents (if any) are looked at on their own.
            let deps = self.shared.graph().dependents(uid);
            self.shared
                .enqueue(deps.into_iter().map(|(d, _)| d).collect());
            return Ok(Action::Done);
        };
        if node.deleting && node.orphan {
            self.orphan_dependents(uid, &node).await?;
            self.remove_finalizer(uid, &node, ORPHAN).await?;
            return Ok(Action::Done);
        }
        if node.deleting_dependents() {
            return self.delete_dependents(uid, &node).await;
        }
        if node.owners.is_empty() || node.deleting {
            return Ok(Action::Done);
        }
        self.attempt_to_delete(uid, &node).await
    }
}

impl GarbageCollector {
    /// An owner deleting in foreground: its dependents go; once no blocking dependent is
    /// left, so does the finalizer.
    async fn delete_dependents(&self, uid: &str, node: &Node) -> Result<Action, GcError> {
        let deps = self.shared.graph().dependents(uid);
        if !deps.iter().any(|(_, d)| d.blocks(uid)) {
            self.remove_finalizer(uid, node, FOREGROUND).await?;
            return Ok(Action::Done);
        }
        // The dependents' own turns delete them; their removal brings the owner back.
        self.shared.enqueue(
            deps.into_iter()
                .filter(|(_, d)| !d.deleting)
                .map(|(d, _)| d)
                .collect(),
        );
        Ok(Action::Done)
    }

    /// An object with owners: deleted when none of them is solid, else freed of the
    /// references that are dangling or waiting.
    async fn attempt_to_delete(&self, uid: &str, node: &Node) -> Result<Action, GcError> {
        let api = self.shared.api(&node.resource, node.namespace.as_deref());
        let live = api
            .get_metadata_opt(&node.name)
            .await
            .map_err(|e| ApiError::new("reading", node.display(), e))?;
        let Some(live) = live.filter(|o| o.metadata.uid.as_deref() == Some(uid)) else {
            // Gone already; the watch will say so.
            return Ok(Action::Done);
        };
        if live.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let owners = live.metadata.owner_references.clone().unwrap_or_default();
        let mut solid = Vec::new();
        let mut gone = Vec::new();
        let mut waiting = false;
        for r in &owners {
            match self.classify(node, r).await? {
                Owner::Solid => solid.push(r.uid.clone()),
                Owner::Dangling => gone.push(r.uid.clone()),
                Owner::Waiting => {
                    waiting = true;
                    gone.push(r.uid.clone());
                }
            }
        }
        if !solid.is_empty() {
            if !gone.is_empty() {
                self.remove_owner_refs(uid, node, &gone).await?;
            }
            return Ok(Action::Done);
        }
        if owners.is_empty() {
            return Ok(Action::Done);
        }
        let has_finalizer = |f: &str| live.metadata.finalizers.iter().flatten().any(|x| x == f);
        let policy = if waiting && self.shared.graph().has_dependents(uid) {
            // Its own dependents must go before it, so that the waiting owner waits
            // for them too.
            PropagationPolicy::Foreground
        } else if has_finalizer(ORPHAN) {
            PropagationPolicy::Orphan
        } else if has_finalizer(FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(object = %node.display(), ?policy, "garbage collector: deleting");
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&node.name, &dp).await {
            Ok(_) => Ok(Action::Done),
            // Gone, or replaced by another object of the same name.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(Action::Done),
            Err(e) => Err(ApiError::new("deleting", node.display(), e).into()),
        }
    }

    /// Whether the owner `r` of `node` is there, gone, or waiting for its dependents. The
    /// graph answers for owners it holds; others are read live, as the caches may lag.
    async fn classify(&self, node: &Node, r: &OwnerReference) -> Result<Owner, GcError> {
        {
            let graph = self.shared.graph();
            if graph.is_absent(&r.uid) {
                return Ok(Owner::Dangling);
            }
            // The graph answers for an owner it holds under the reference's name (and,
            // when namespaced, in the dependent's namespace); else a live read does.
            if let Some(owner) = graph.get(&r.uid).filter(|o| {
                o.name == r.name && (o.namespace.is_none() || o.namespace == node.namespace)
            }) {
                return Ok(if owner.deleting_dependents() {
                    Owner::Waiting
                } else {
                    Owner::Solid
                });
            }
        }
        let Some(kind) = self.shared.kind(&r.api_version, &r.kind) else {
            return Err(GcError::UnknownOwnerKind {
                dependent: node.display(),
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
            });
        };
        if kind.namespaced && node.namespace.is_none() {
            // A cluster-scoped object cannot be owned by a namespaced one: the reference
            // is unresolvable, and kube never collects such an object for it.
            tracing::debug!(object = %node.display(), owner = %r.name, "cluster-scoped object with a namespaced owner kind; kept");
            return Ok(Owner::Solid);
        }
        let owner = self
            .shared
            .api(&kind, node.namespace.as_deref())
            .get_metadata_opt(&r.name)
            .await
            .map_err(|e| ApiError::new("reading the owner of", node.display(), e))?;
        match owner {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let fg = o
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == FOREGROUND);
                Ok(if o.metadata.deletion_timestamp.is_some() && fg {
                    Owner::Waiting
                } else {
                    Owner::Solid
                })
            }
            _ => {
                self.shared.graph().mark_absent(&r.uid);
                Ok(Owner::Dangling)
            }
        }
    }

    /// Every dependent of an owner with the `orphan` finalizer loses its reference.
    async fn orphan_dependents(&self, uid: &str, _node: &Node) -> Result<(), GcError> {
        let deps = self.shared.graph().dependents(uid);
        let owner = [uid.to_string()];
        let results = futures_util::future::join_all(
            deps.iter()
                .map(|(d, dep)| self.remove_owner_refs(d, dep, &owner)),
        )
        .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    /// Removes the references to `owners` from the object `uid`, against its live
    /// version (the write pins its resourceVersion; conflicts are retried).
    async fn remove_owner_refs(
        &self,
        uid: &str,
        node: &Node,
        owners: &[String],
    ) -> Result<(), GcError> {
        let api = self.shared.api(&node.resource, node.namespace.as_deref());
        for _ in 0..5 {
            let live = api
                .get_metadata_opt(&node.name)
                .await
                .map_err(|e| ApiError::new("reading", node.display(), e))?;
            let Some(live) = live.filter(|o| o.metadata.uid.as_deref() == Some(uid)) else {
                return Ok(());
            };
            let refs = live.metadata.owner_references.unwrap_or_default();
            let kept: Vec<&OwnerReference> =
                refs.iter().filter(|r| !owners.contains(&r.uid)).collect();
            if kept.len() == refs.len() {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "ownerReferences": if kept.is_empty() { json!(null) } else { json!(kept) },
                "resourceVersion": live.metadata.resource_version,
            }});
            match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => {
                    return Err(
                        ApiError::new("removing owner references from", node.display(), e).into(),
                    );
                }
            }
        }
        Err(GcError::Contended {
            object: node.display(),
        })
    }

    /// Removes a garbage-collector finalizer from the live object `uid`.
    async fn remove_finalizer(
        &self,
        uid: &str,
        node: &Node,
        finalizer: &str,
    ) -> Result<(), GcError> {
        let api = self.shared.api(&node.resource, node.namespace.as_deref());
        for _ in 0..5 {
            let live = api
                .get_metadata_opt(&node.name)
                .await
                .map_err(|e| ApiError::new("reading", node.display(), e))?;
            let Some(live) = live.filter(|o| o.metadata.uid.as_deref() == Some(uid)) else {
                return Ok(());
            };
            let finalizers = live.metadata.finalizers.unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return Ok(());
            }
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            let patch = json!({"metadata": {
                "finalizers": kept,
                "resourceVersion": live.metadata.resource_version,
            }});
            match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(object = %node.display(), finalizer, "garbage collector: finalizer removed");
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => {
                    return Err(
                        ApiError::new("removing a finalizer from", node.display(), e).into(),
                    );
                }
            }
        }
        Err(GcError::Contended {
            object: node.display(),
        })
    }
}
