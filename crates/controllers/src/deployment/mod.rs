//! The Deployment controller, as kube-controller-manager's (pkg/controller/deployment):
//! a Deployment owns ReplicaSets, one per pod template it has had, named
//! `<deployment>-<pod-template-hash>`; rolling out a new template means growing the new
//! ReplicaSet and shrinking the old ones within maxSurge and maxUnavailable
//! (RollingUpdate), or emptying the old ones before the new one starts (Recreate).
//!
//! Contract: the controller writes ReplicaSets (create, scale, adopt, release, delete
//! beyond `revisionHistoryLimit`) and the Deployment's status (with its revision
//! annotation), never pods: the ReplicaSet controller makes pods and reports their
//! readiness and availability in the ReplicaSet's status, which is all a rollout reads.
//! A reconcile reads the caches only, so it costs O(ReplicaSets of the namespace) (plus
//! the namespace's pods for Recreate); every ReplicaSet write is guarded by the
//! resourceVersion it was computed from, so a stale cache costs a retry, never a wrong
//! step.
//!
//! The steps follow kube's `syncDeployment`: claim ReplicaSets (adopt orphans the
//! selector matches, release those it no longer matches); a deleted Deployment only gets
//! its status; a paused one or one whose `spec.replicas` changed is only scaled
//! (proportionally across its ReplicaSets); otherwise the strategy rolls out
//! ([`rolling`], [`recreate`]) and [`progress`] writes status and conditions, and asks
//! to look again when the progress deadline would pass.
//!
//! kubectl's rollout commands work on what this writes: `rollout history` reads the
//! ReplicaSets' revision and change-cause annotations, `rollout undo` copies a
//! ReplicaSet's template back into the Deployment (whose ReplicaSet then gets a new
//! revision), `rollout status` reads observedGeneration and the Progressing condition.

mod history;
mod maths;
mod progress;
mod recreate;
mod rolling;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::informer::{key_of, split_key, Change, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{self, controller_of, labels_of, ApiError, SelectorError};
use crate::{Clock, Context, Queue, Recorder};

use maths::Plan;

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeploymentError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("deployment {key}: {source}")]
    Selector {
        key: String,
        #[source]
        source: SelectorError,
    },
    #[error("deployment {key}: replica set {name} already exists with another pod template; status.collisionCount is now {count}, so the next name differs")]
    HashCollision {
        key: String,
        name: String,
        count: i32,
    },
}

type Result<T, E = DeploymentError> = std::result::Result<T, E>;

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let deployments = ctx.informers.informer::<Deployment>();
    let replica_sets = ctx.informers.informer::<ReplicaSet>();
    let pods = ctx.informers.informer::<Pod>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        deployments.on_change(move |ch| q.add(key_of(&**ch.object())));
    }
    {
        let (q, ds) = (queue.clone(), deployments.clone());
        replica_sets.on_change(move |ch| match ch {
            Change::Added(rs) | Change::Deleted(rs) => enqueue_owner(&q, &ds, rs),
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                if controller_of(&old.metadata).map(|r| &r.uid)
                    != controller_of(&new.metadata).map(|r| &r.uid)
                {
                    enqueue_owner(&q, &ds, old);
                }
                enqueue_owner(&q, &ds, new);
            }
        });
    }
    {
        // Recreate waits for the old pods to be gone.
        let (q, ds, rss) = (queue.clone(), deployments.clone(), replica_sets.clone());
        pods.on_change(move |ch| {
            let Change::Deleted(pod) = ch else { return };
            let Some(owner) = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")
            else {
                return;
            };
            let ns = pod.namespace().unwrap_or_default();
            let Some(rs) = rss.get(&ns, &owner.name) else {
                return;
            };
            let Some(d) = controller_of(&rs.metadata)
                .filter(|r| r.kind == "Deployment")
                .and_then(|r| ds.get(&ns, &r.name))
            else {
                return;
            };
            if is_recreate(&d) {
                q.add(key_of(&*d));
            }
        });
    }
    let ready = {
        let (d, r, p) = (deployments.clone(), replica_sets.clone(), pods.clone());
        async move {
            d.synced().await;
            r.synced().await;
            p.synced().await;
        }
    };
    let controller = DeploymentController {
        client: ctx.client.clone(),
        deployments,
        replica_sets,
        pods,
        recorder: ctx.events.recorder("deployment-controller"),
        clock: ctx.clock.clone(),
    };
    Some(runner::spawn(
        Arc::new(controller),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

/// Queues the Deployment that controls `rs`, or for an orphan every Deployment of its
/// namespace whose selector matches it (one of them may adopt it).
fn enqueue_owner(q: &Queue, deployments: &Informer<Deployment>, rs: &ReplicaSet) {
    let ns = rs.namespace().unwrap_or_default();
    match controller_of(&rs.metadata) {
        Some(r) if r.kind == "Deployment" => q.add(format!("{ns}/{}", r.name)),
        Some(_) => {}
        None => {
            let labels = labels_of(&rs.metadata);
            deployments.for_each(Some(&ns), |d| {
                let matches = util::selector(d.spec.as_ref().map(|s| &s.selector))
                    .is_ok_and(|s| !s.is_empty() && s.matches(labels));
                if matches {
                    q.add(key_of(&**d));
                }
            });
        }
    }
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

pub(crate) struct DeploymentController {
    client: Client,
    deployments: Informer<Deployment>,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
}

#[async_trait::async_trait]
impl Reconciler for DeploymentController {
    type Error = DeploymentError;

    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &str) -> Result<Action> {
        let Some(d) = self.deployments.get_key(key) else {
            return Ok(Action::Done);
        };
        let (ns, _) = split_key(key);
        let mut run = Run {
            c: self,
            plan: plan_of(&d),
            d: (*d).clone(),
            ns: ns.to_string(),
            key: key.to_string(),
            requeue: None,
        };
        run.sync_deployment().await?;
        Ok(match run.requeue {
            Some(after) => Action::RequeueAfter(after),
            None => Action::Done,
        })
    }
}

/// The rollout parameters of a Deployment.
fn plan_of(d: &Deployment) -> Plan {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let rolling = !is_recreate(d);
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    Plan::new(
        replicas,
        rolling,
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
    )
}

/// One reconcile of one Deployment: the Deployment as last read or written, and when to
/// look at it again.
pub(crate) struct Run<'a> {
    c: &'a DeploymentController,
    d: Deployment,
    plan: Plan,
    ns: String,
    key: String,
    requeue: Option<Duration>,
}

impl Run<'_> {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.c.client.clone(), &self.ns)
    }

    fn replica_sets(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.c.client.clone(), &self.ns)
    }

    fn now(&self) -> k8s_openapi::jiff::Timestamp {
        self.c.clock.now()
    }

    /// Asks to look again after `after` (the earliest of what was asked).
    fn requeue_after(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn spec(&self) -> k8s_openapi::api::apps::v1::DeploymentSpec {
        self.d.spec.clone().unwrap_or_default()
    }

    fn paused(&self) -> bool {
        self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
    }

    /// kube's `syncDeployment`.
    async fn sync_deployment(&mut self) -> Result<()> {
        let sel = util::selector(self.d.spec.as_ref().map(|s| &s.selector)).map_err(|source| {
            DeploymentError::Selector {
                key: self.key.clone(),
                source,
            }
        })?;
        if sel.is_empty() {
            self.c.recorder.warning(
                &self.d,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            let generation = self.d.metadata.generation;
            let mut status = self.d.status.clone().unwrap_or_default();
            if status.observed_generation < generation {
                status.observed_generation = generation;
                self.write_status(status).await?;
            }
            return Ok(());
        }
        let rs_list = self.claim_replica_sets(&sel).await?;
        if util::is_deleting(&self.d.metadata) {
            let sets = self.split(rs_list).await?;
            return self.sync_status_only(sets).await;
        }
        self.check_paused_conditions().await?;
        let sets = self.split(rs_list).await?;
        if self.paused() || self.is_scaling_event(&sets) {
            return self.sync_scale(sets).await;
        }
        if self.plan.rolling {
            self.rollout_rolling(sets).await
        } else {
            self.rollout_recreate(sets).await
        }
    }

    /// kube's `getReplicaSetsForDeployment`: the ReplicaSets this Deployment controls,
    /// adopting orphans its selector matches and releasing those it no longer matches.
    async fn claim_replica_sets(
        &mut self,
        sel: &skiff_api::selector::LabelSelector,
    ) -> Result<Vec<ReplicaSet>> {
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let deleting = util::is_deleting(&self.d.metadata);
        let mut owned = Vec::new();
        let mut adopt = Vec::new();
        let mut release = Vec::new();
        self.c.replica_sets.for_each(Some(&self.ns), |rs| {
            let matches = sel.matches(labels_of(&rs.metadata));
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push((**rs).clone());
                    } else if !deleting {
                        release.push(rs.clone());
                    }
                }
                Some(_) => {}
                None => {
                    if matches && !deleting && !util::is_deleting(&rs.metadata) {
                        adopt.push(rs.clone());
                    }
                }
            }
        });
        let api = self.replica_sets();
        for rs in release {
            util::release(&api, &*rs, &uid).await?;
        }
        for rs in adopt {
            let owner = util::controller_ref(&self.d);
            util::adopt(&api, &*rs, owner.clone()).await?;
            let mut rs = (*rs).clone();
            rs.metadata
                .owner_references
                .get_or_insert_with(Vec::new)
                .push(owner);
            owned.push(rs);
        }
        Ok(owned)
    }
}

/// `spec.replicas` of a ReplicaSet (defaulted to 1 by the API server).
pub(crate) fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.replicas`.
pub(crate) fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// `status.availableReplicas`.
pub(crate) fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// `status.readyReplicas`.
pub(crate) fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// kube's `ReplicaSetsByCreationTimestamp` key: oldest first, then by name.
pub(crate) fn by_age(rs: &ReplicaSet) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.name_any(),
    )
}
