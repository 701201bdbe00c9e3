//! The StatefulSet controller (kube's `statefulset` package): pods with stable names,
//! hostnames and storage.
//!
//! Contract: a set of `replicas` keeps pods `<set>-<ordinal>` for ordinals
//! `start..start+replicas` ([`identity`]), each with its claims from
//! `volumeClaimTemplates` created first. With `podManagementPolicy: OrderedReady` an
//! ordinal is created only once every lower one is Running and Ready, and a scale-down
//! deletes the highest ordinal first, one at a time, waiting for each to go; `Parallel`
//! creates and deletes all at once. Failed (or finished) pods are deleted and made again.
//! Revisions are ControllerRevisions ([`crate::history`]); pods carry their revision's
//! name in `controller-revision-hash`. A RollingUpdate deletes, from the highest ordinal
//! down to `partition`, one pod not on the update revision at a time, waiting until
//! the replacement is Running and Ready; ordinals below the partition are made from the
//! current revision. OnDelete leaves pods until the user deletes them. Status counts
//! replicas, ready, available (`minReadySeconds`), current and updated pods, and names
//! the current and update revisions.
//!
//! Lifecycle: handlers enqueue the set of a pod or revision change; names are fixed, so
//! a create the cache has not seen yet answers AlreadyExists and no expectations are
//! needed.

mod identity;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::events::Recorder;
use crate::history::{self, HistoryError, CONTROLLER_REVISION_HASH};
use crate::informer::{key_of, Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{self, ApiError, SelectorError};
use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    #[error("statefulset {key}: {source}")]
    Selector {
        key: String,
        #[source]
        source: SelectorError,
    },
    #[error("statefulset {key}: history")]
    History {
        key: String,
        #[source]
        source: HistoryError,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let sets = ctx.informers.informer::<StatefulSet>();
    let pods = ctx.informers.informer::<Pod>();
    let revisions = ctx.informers.informer::<ControllerRevision>();
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        sets.on_change(move |c| q.add(key_of(&**c.object())));
    }
    {
        let (q, sets) = (queue.clone(), sets.clone());
        pods.on_change(move |c| {
            let pod = c.object();
            let ns = pod.namespace().unwrap_or_default();
            match util::controller_of(&pod.metadata) {
                Some(o) if o.kind == "StatefulSet" => q.add(format!("{ns}/{}", o.name)),
                Some(_) => {}
                None => {
                    if matches!(c, Change::Deleted(_)) {
                        return;
                    }
                    let labels = util::labels_of(&pod.metadata);
                    sets.for_each(Some(&ns), |s| {
                        let sel = s.spec.as_ref().map(|s| &s.selector);
                        if util::selector(sel).is_ok_and(|x| x.matches(labels)) {
                            q.add(key_of(&**s));
                        }
                    });
                }
            }
        });
    }
    {
        let q = queue.clone();
        revisions.on_change(move |c| {
            let r = c.object();
            if let Some(o) = util::controller_of(&r.metadata).filter(|o| o.kind == "StatefulSet") {
                q.add(format!("{}/{}", r.namespace().unwrap_or_default(), o.name));
            }
        });
    }
    let ready = {
        let (a, b, c, d) = (
            sets.clone(),
            pods.clone(),
            revisions.clone(),
            claims.clone(),
        );
        async move {
            a.synced().await;
            b.synced().await;
            c.synced().await;
            d.synced().await;
        }
    };
    let controller = StatefulSetController {
        ctx: ctx.clone(),
        sets,
        pods,
        revisions,
        claims,
        recorder: ctx.events.recorder("statefulset-controller"),
    };
    Some(runner::spawn(
        Arc::new(controller),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

struct StatefulSetController {
    ctx: Context,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    claims: Informer<PersistentVolumeClaim>,
    recorder: Recorder,
}

fn is_created(p: &Pod) -> bool {
    !util::phase(p).is_empty()
}

fn is_running_and_ready(p: &Pod) -> bool {
    util::phase(p) == "Running" && util::is_ready(p)
}

fn is_healthy(p: &Pod) -> bool {
    is_running_and_ready(p) && !util::is_deleting(&p.metadata)
}

fn revision_of(p: &Pod) -> Option<&str> {
    util::labels_of(&p.metadata)
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

/// What one sync of a set works with.
struct Sync<'a> {
    set: &'a StatefulSet,
    ns: String,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
}

#[async_trait::async_trait]
impl Reconciler for StatefulSetController {
    type Error = StatefulSetError;

    fn name(&self) -> &'static str {
        "statefulset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, StatefulSetError> {
        let Some(set) = self.sets.get_key(key) else {
            return Ok(Action::Done);
        };
        let Some(spec) = set.spec.as_ref() else {
            return Ok(Action::Done);
        };
        if util::is_deleting(&set.metadata) {
            return Ok(Action::Done);
        }
        let ns = set.namespace().unwrap_or_default();
        let name = set.name_any();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let selector =
            util::selector(Some(&spec.selector)).map_err(|source| StatefulSetError::Selector {
                key: key.into(),
                source,
            })?;
        let s = Sync {
            set: &set,
            ns: ns.clone(),
            pods: Api::namespaced(self.ctx.client.clone(), &ns),
            claims: Api::namespaced(self.ctx.client.clone(), &ns),
        };
        let rev_api: Api<ControllerRevision> = Api::namespaced(self.ctx.client.clone(), &ns);

        // Pods: ours, and orphans named as ours that the selector claims.
        let mut pods = Vec::new();
        let mut orphans = Vec::new();
        self.pods
            .for_each(Some(&ns), |p| match util::controller_of(&p.metadata) {
                Some(c) if c.uid == uid => pods.push(p.clone()),
                None if !util::is_deleting(&p.metadata)
                    && identity::ordinal_of(&name, &p.name_any()).is_some()
                    && selector.matches(util::labels_of(&p.metadata)) =>
                {
                    orphans.push(p.clone())
                }
                _ => {}
            });
        for o in orphans {
            util::adopt(&s.pods, &*o, util::controller_ref(&*set)).await?;
            pods.push(o);
        }

        // Revisions: the update revision holds the template; the current one is what the
        // status names (the update revision on a new set).
        let history_err = |source| StatefulSetError::History {
            key: key.into(),
            source,
        };
        let (revs, orphan_revs) = history::revisions_of(&self.revisions, &ns, &uid, &selector);
        history::adopt(&rev_api, &*set, &orphan_revs).await?;
        let status = set.status.clone().unwrap_or_default();
        let update = history::current_revision(
            &rev_api,
            &*set,
            &spec.template,
            &revs,
            status.collision_count,
        )
        .await
        .map_err(history_err)?;
        let update_name = update.revision.name_any();
        let current_rev = status
            .current_revision
            .as_deref()
            .filter(|c| *c != update_name)
            .and_then(|c| revs.iter().find(|r| r.name_any() == c));
        let (current_name, current_template) =
            match current_rev.and_then(|r| Some((r.name_any(), history::template_of(r)?))) {
                Some(c) => c,
                None => (update_name.clone(), spec.template.clone()),
            };

        let replicas = spec.replicas.unwrap_or(1).max(0);
        let start = spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0);
        let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
        let strategy = spec.update_strategy.as_ref();
        let rolling = strategy.and_then(|u| u.type_.as_deref()) != Some("OnDelete");
        let partition = strategy
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0);
        let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
        let now = self.ctx.now();

        let mut slots: Vec<Option<Arc<Pod>>> = vec![None; replicas as usize];
        let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
        for p in &pods {
            let Some(ord) = identity::ordinal_of(&name, &p.name_any()) else {
                continue;
            };
            if ord >= start && ord < start + replicas {
                slots[(ord - start) as usize] = Some(p.clone());
            } else {
                condemned.push((ord, p.clone()));
            }
        }
        condemned.sort_by_key(|(o, _)| *o);

        // Status as the cache shows it (kube's computeReplicaStatus).
        let mut st = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            collision_count: update.collision_count,
            conditions: status.conditions.clone(),
            current_revision: Some(current_name.clone()),
            update_revision: Some(update_name.clone()),
            ..Default::default()
        };
        let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
        let mut waiting_available = false;
        for p in &pods {
            if is_created(p) {
                st.replicas += 1;
            }
            if is_running_and_ready(p) {
                ready += 1;
                if util::is_available(p, min_ready, now) {
                    available += 1;
                } else {
                    waiting_available = true;
                }
            }
            if is_created(p) && !util::is_deleting(&p.metadata) {
                let r = revision_of(p);
                if r == Some(current_name.as_str()) {
                    current += 1;
                }
                if r == Some(update_name.as_str()) {
                    updated += 1;
                }
            }
        }

        let mut errors: Vec<ApiError> = Vec::new();
        // 1. Every ordinal in range: replace failed pods, create missing ones, wait for
        // each in order when monotonic.
        let mut blocked = false;
        let mut creates = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let ord = start + i as i32;
            match slot {
                Some(p) if util::is_terminal(p) => {
                    if !util::is_deleting(&p.metadata) {
                        if let Err(e) = self.delete_pod(&s, p).await {
                            errors.push(e);
                        }
                    }
                    if monotonic {
                        blocked = true;
                        break;
                    }
                }
                None => {
                    let (rev, template) = if rolling && ord < start + partition {
                        (current_name.as_str(), &current_template)
                    } else {
                        (update_name.as_str(), &spec.template)
                    };
                    creates.push((ord, rev.to_string(), template.clone()));
                    if monotonic {
                        blocked = true;
                        break;
                    }
                }
                Some(p) => {
                    if let Err(e) = self.sync_identity(&s, p, ord).await {
                        errors.push(e);
                    }
                    if let Err(e) = self.sync_claims(&s, p, true).await {
                        errors.push(e);
                    }
                    if util::is_deleting(&p.metadata) || !is_running_and_ready(p) {
                        if monotonic {
                            blocked = true;
                            break;
                        }
                        continue;
                    }
                    if monotonic && !util::is_available(p, min_ready, now) {
                        blocked = true;
                        break;
                    }
                }
            }
        }
        let results = join_all(
            creates
                .iter()
                .map(|(ord, rev, template)| self.create_pod(&s, template, rev, *ord)),
        )
        .await;
        errors.extend(results.into_iter().filter_map(Result::err));

        // 2. Scale down from the highest ordinal (all at once when Parallel).
        let first_unhealthy = condemned
            .iter()
            .find(|(_, p)| !is_healthy(p))
            .map(|(o, _)| *o);
        let mut scaled = false;
        if !blocked {
            for (ord, p) in condemned.iter().rev() {
                if util::is_deleting(&p.metadata) {
                    if monotonic {
                        scaled = true;
                        break;
                    }
                    continue;
                }
                if monotonic && !is_running_and_ready(p) && first_unhealthy != Some(*ord) {
                    scaled = true;
                    break;
                }
                if let Err(e) = self.sync_claims(&s, p, false).await {
                    errors.push(e);
                }
                if let Err(e) = self.delete_pod(&s, p).await {
                    errors.push(e);
                }
                scaled = true;
                if monotonic {
                    break;
                }
            }
        }

        // 3. Roll: the highest ordinal not on the update revision first, down to the
        // partition, one at a time.
        if rolling && !blocked && !scaled {
            for i in (partition.min(replicas)..replicas).rev() {
                let Some(p) = &slots[i as usize] else {
                    continue;
                };
                if revision_of(p) != Some(update_name.as_str()) && !util::is_deleting(&p.metadata) {
                    if let Err(e) = self.delete_pod(&s, p).await {
                        errors.push(e);
                    }
                    break;
                }
                if !is_healthy(p) {
                    break;
                }
            }
        }

        // History beyond the limit, sparing what pods and the status still name.
        let mut live: HashSet<String> = pods
            .iter()
            .filter_map(|p| revision_of(p).map(str::to_string))
            .collect();
        live.insert(current_name.clone());
        live.insert(update_name.clone());
        let old: Vec<_> = revs
            .iter()
            .filter(|r| {
                let n = r.name_any();
                n != current_name && n != update_name
            })
            .cloned()
            .collect();
        if let Err(e) = history::truncate(
            &rev_api,
            &old,
            &live,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await
        {
            errors.push(e);
        }

        st.ready_replicas = Some(ready);
        st.available_replicas = Some(available);
        st.current_replicas = Some(current);
        st.updated_replicas = Some(updated);
        // A finished rolling update makes the update revision current.
        if rolling && updated == st.replicas && ready == st.replicas {
            st.current_revision = Some(update_name.clone());
            st.current_replicas = Some(updated);
        }
        if set.status.as_ref() != Some(&st) {
            let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &ns);
            match api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": st})),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => return Ok(Action::Done),
                Err(e) => errors.push(ApiError::new("update status of statefulset", key, e)),
            }
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e.into());
        }
        if waiting_available && !min_ready.is_zero() {
            return Ok(Action::RequeueAfter(min_ready));
        }
        Ok(Action::Done)
    }
}

impl StatefulSetController {
    /// Creates the ordinal's missing claims, then its pod.
    async fn create_pod(
        &self,
        s: &Sync<'_>,
        template: &PodTemplateSpec,
        revision: &str,
        ordinal: i32,
    ) -> Result<(), ApiError> {
        let pod = identity::new_pod(s.set, template, revision, ordinal);
        let pod_name = pod.name_any();
        let set_name = s.set.name_any();
        for claim in identity::new_claims(s.set, ordinal) {
            let claim_name = claim.name_any();
            if self.claims.get(&s.ns, &claim_name).is_some() {
                continue;
            }
            match s.claims.create(&PostParams::default(), &claim).await {
                Ok(_) => self.recorder.normal(
                    s.set,
                    "SuccessfulCreate",
                    format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"),
                ),
                Err(e) if util::is_conflict(&e) => {}
                Err(e) => {
                    self.recorder.warning(
                        s.set,
                        "FailedCreate",
                        format!("create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                    );
                    return Err(ApiError::new("create persistentvolumeclaim", claim_name, e));
                }
            }
        }
        match s.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.recorder.normal(
                    s.set,
                    "SuccessfulCreate",
                    format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            // Created before; the cache has not caught up.
            Err(e) if util::is_conflict(&e) => Ok(()),
            Err(e) => {
                self.recorder.warning(
                    s.set,
                    "FailedCreate",
                    format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                );
                Err(ApiError::new("create pod", pod_name, e))
            }
        }
    }

    async fn delete_pod(&self, s: &Sync<'_>, pod: &Pod) -> Result<(), ApiError> {
        let pod_name = pod.name_any();
        let set_name = s.set.name_any();
        let dp = DeleteParams {
            preconditions: pod
                .metadata
                .uid
                .clone()
                .map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
            ..Default::default()
        };
        match s.pods.delete(&pod_name, &dp).await {
            Ok(_) => {
                self.recorder.normal(
                    s.set,
                    "SuccessfulDelete",
                    format!("delete Pod {pod_name} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => Ok(()),
            Err(e) => {
                self.recorder.warning(
                    s.set,
                    "FailedDelete",
                    format!("delete Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                );
                Err(ApiError::new("delete pod", pod_name, e))
            }
        }
    }

    /// Puts back the labels naming the pod (kube's `updateIdentity`; an adopted pod may
    /// lack them).
    async fn sync_identity(&self, s: &Sync<'_>, pod: &Pod, ordinal: i32) -> Result<(), ApiError> {
        let name = pod.name_any();
        let labels = util::labels_of(&pod.metadata);
        let index = ordinal.to_string();
        if labels.get(identity::POD_NAME_LABEL) == Some(&name)
            && labels.get(identity::POD_INDEX_LABEL) == Some(&index)
        {
            return Ok(());
        }
        let patch = json!({"metadata": {"labels": {
            identity::POD_NAME_LABEL: name,
            identity::POD_INDEX_LABEL: index,
        }}});
        match s
            .pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(ApiError::new("update identity of pod", name, e)),
        }
    }

    /// Brings the owner references of the pod's claims in line with the retention
    /// policy (`in_range`: the pod is kept, not scaled away).
    async fn sync_claims(&self, s: &Sync<'_>, pod: &Pod, in_range: bool) -> Result<(), ApiError> {
        let set_name = s.set.name_any();
        let Some(ordinal) = identity::ordinal_of(&set_name, &pod.name_any()) else {
            return Ok(());
        };
        for t in identity::claim_templates(s.set) {
            let claim_name = identity::claim_name(&t.name_any(), &set_name, ordinal);
            let Some(claim) = self.claims.get(&s.ns, &claim_name) else {
                continue;
            };
            let existing = claim.metadata.owner_references.clone().unwrap_or_default();
            let refs = identity::claim_owner_refs(s.set, Some(pod), in_range, &existing);
            if refs == existing {
                continue;
            }
            let patch = json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": claim.metadata.resource_version,
            }});
            match s
                .claims
                .patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(ApiError::new("update owners of claim", claim_name, e)),
            }
        }
        Ok(())
    }
}
