//! The DaemonSet controller (kube's `daemon` package): one pod per eligible node.
//!
//! Contract: for every node where the DaemonSet's pod should run ([`node::placement`]:
//! node selector, required node affinity, NoSchedule/NoExecute taints not tolerated) it
//! keeps exactly one pod, created from the template of the current revision with the
//! node's `matchFields metadata.name In [node]` affinity term and the daemon
//! tolerations, for the scheduler to bind; pods on nodes no longer eligible or gone are
//! deleted, failed pods are deleted (with a per-node backoff) and made again. Pods carry
//! `controller-revision-hash` (the current revision's hash) and `pod-template-generation`.
//! Updates roll per `updateStrategy`: RollingUpdate replaces old pods while at most
//! `maxUnavailable` nodes lack an available pod, or surges a new pod beside an old one
//! on at most `maxSurge` nodes; OnDelete waits for the user to delete pods. History lives
//! in ControllerRevisions ([`crate::history`]), cut to `revisionHistoryLimit`.
//!
//! Lifecycle: handlers enqueue the DaemonSet of a pod or revision change, and every
//! DaemonSet on a node change; expectations hold a DaemonSet back while the pod cache
//! lags behind its creates and deletes.

mod node;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::history::{self, HistoryError, CONTROLLER_REVISION_HASH};
use crate::informer::{key_of, Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{self, ApiError, SelectorError};
use crate::Context;

use node::Placement;

/// The pod label holding the DaemonSet's template generation.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Where apps/v1 DaemonSets keep the template generation.
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// kube's `BurstReplicas`: the most creates or deletes of one sync.
const BURST: usize = 500;
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error("daemonset {key}: {source}")]
    Selector {
        key: String,
        #[source]
        source: SelectorError,
    },
    #[error("daemonset {key}: history")]
    History {
        key: String,
        #[source]
        source: HistoryError,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let dss = ctx.informers.informer::<DaemonSet>();
    let pods = ctx.informers.informer::<Pod>();
    let nodes = ctx.informers.informer::<Node>();
    let revisions = ctx.informers.informer::<ControllerRevision>();
    let queue = Queue::new();
    let creations = Arc::new(Expectations::new());
    let deletions = Arc::new(Expectations::new());

    {
        let q = queue.clone();
        dss.on_change(move |c| q.add(key_of(&**c.object())));
    }
    {
        let (q, cr, de, dss) = (
            queue.clone(),
            creations.clone(),
            deletions.clone(),
            dss.clone(),
        );
        pods.on_change(move |c| {
            let pod = c.object();
            let ns = pod.namespace().unwrap_or_default();
            let Some(owner) = util::controller_of(&pod.metadata).filter(|o| o.kind == "DaemonSet")
            else {
                // An orphan may be adopted by a DaemonSet whose selector matches it.
                if matches!(c, Change::Added(_)) && !util::is_deleting(&pod.metadata) {
                    let labels = util::labels_of(&pod.metadata);
                    dss.for_each(Some(&ns), |ds| {
                        let sel = ds.spec.as_ref().map(|s| &s.selector);
                        if util::selector(sel).is_ok_and(|s| s.matches(labels)) {
                            q.add(key_of(&**ds));
                        }
                    });
                }
                return;
            };
            let key = format!("{ns}/{}", owner.name);
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            match c {
                Change::Added(_) => cr.creation_observed(&key),
                Change::Deleted(_) => de.deletion_observed(&key, uid),
                Change::Updated { old, new } => {
                    if util::is_deleting(&new.metadata) && !util::is_deleting(&old.metadata) {
                        de.deletion_observed(&key, uid);
                    }
                }
            }
            q.add(key);
        });
    }
    {
        let (q, dss) = (queue.clone(), dss.clone());
        nodes.on_change(move |c| {
            if let Change::Updated { old, new } = c {
                // Heartbeats change only status; placement reads labels and spec.
                if old.metadata.labels == new.metadata.labels && old.spec == new.spec {
                    return;
                }
            }
            dss.for_each(None, |ds| q.add(key_of(&**ds)));
        });
    }
    {
        let q = queue.clone();
        revisions.on_change(move |c| {
            let r = c.object();
            if let Some(o) = util::controller_of(&r.metadata).filter(|o| o.kind == "DaemonSet") {
                q.add(format!("{}/{}", r.namespace().unwrap_or_default(), o.name));
            }
        });
    }

    let ready = {
        let (a, b, c, d) = (dss.clone(), pods.clone(), nodes.clone(), revisions.clone());
        async move {
            a.synced().await;
            b.synced().await;
            c.synced().await;
            d.synced().await;
        }
    };
    let controller = DaemonSetController {
        ctx: ctx.clone(),
        dss,
        pods,
        nodes,
        revisions,
        creations,
        deletions,
        recorder: ctx.events.recorder("daemonset-controller"),
        backoff: Mutex::new(HashMap::new()),
    };
    Some(runner::spawn(
        Arc::new(controller),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

struct DaemonSetController {
    ctx: Context,
    dss: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    creations: Arc<Expectations>,
    deletions: Arc<Expectations>,
    recorder: Recorder,
    /// Failed-pod backoff per `ds-key/node`: the current delay and when it was set.
    backoff: Mutex<HashMap<String, (Duration, Instant)>>,
}

/// One sync's view of a DaemonSet.
struct Sync<'a> {
    key: &'a str,
    ds: &'a DaemonSet,
    hash: String,
    generation: Option<String>,
    min_ready: Duration,
    /// Every node with where the pod belongs on it.
    nodes: Vec<(Arc<Node>, Placement)>,
    /// The DaemonSet's pods by the node they are for.
    by_node: HashMap<String, Vec<Arc<Pod>>>,
}

impl Sync<'_> {
    /// kube's `IsPodUpdated`: the pod runs the current template.
    fn is_updated(&self, pod: &Pod) -> bool {
        let labels = util::labels_of(&pod.metadata);
        labels.get(CONTROLLER_REVISION_HASH) == Some(&self.hash)
            || self
                .generation
                .as_ref()
                .is_some_and(|g| labels.get(TEMPLATE_GENERATION_LABEL) == Some(g))
    }

    fn desired(&self) -> i32 {
        self.nodes.iter().filter(|(_, p)| p.should_run).count() as i32
    }

    fn rolling(&self) -> bool {
        self.ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate")
    }

    /// `maxSurge` and `maxUnavailable` against the desired count (kube's
    /// `updatedDesiredNodeCounts`: never both zero).
    fn budgets(&self) -> (i32, i32) {
        let ru = self
            .ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref());
        let desired = self.desired();
        let surge =
            util::scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true).unwrap_or(0);
        let unavailable = match ru.and_then(|r| r.max_unavailable.as_ref()) {
            None => 1,
            v => util::scaled_value(v, desired, true).unwrap_or(1),
        };
        if surge <= 0 && unavailable <= 0 {
            (0, 1)
        } else {
            (surge.max(0), unavailable.max(0))
        }
    }
}

/// Creation time, then name: the oldest first.
fn by_age(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

#[async_trait::async_trait]
impl Reconciler for DaemonSetController {
    type Error = DaemonSetError;

    fn name(&self) -> &'static str {
        "daemonset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, DaemonSetError> {
        let Some(ds) = self.dss.get_key(key) else {
            self.creations.delete(key);
            self.deletions.delete(key);
            return Ok(Action::Done);
        };
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(Action::Done);
        };
        if util::is_deleting(&ds.metadata) {
            return Ok(Action::Done);
        }
        let ns = ds.namespace().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let selector =
            util::selector(Some(&spec.selector)).map_err(|source| DaemonSetError::Selector {
                key: key.into(),
                source,
            })?;
        let pod_api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let rev_api: Api<ControllerRevision> = Api::namespaced(self.ctx.client.clone(), &ns);

        // Pods: ours, and orphans the selector claims.
        let mut pods = Vec::new();
        let mut orphans = Vec::new();
        self.pods
            .for_each(Some(&ns), |p| match util::controller_of(&p.metadata) {
                Some(c) if c.uid == uid => pods.push(p.clone()),
                None if !util::is_deleting(&p.metadata)
                    && selector.matches(util::labels_of(&p.metadata)) =>
                {
                    orphans.push(p.clone())
                }
                _ => {}
            });
        for o in orphans {
            util::adopt(&pod_api, &*o, util::controller_ref(&*ds)).await?;
            pods.push(o);
        }

        // History: the current revision, the old ones.
        let history_err = |source| DaemonSetError::History {
            key: key.into(),
            source,
        };
        let (revs, orphan_revs) = history::revisions_of(&self.revisions, &ns, &uid, &selector);
        history::adopt(&rev_api, &*ds, &orphan_revs).await?;
        let status = ds.status.clone().unwrap_or_default();
        let current = history::current_revision(
            &rev_api,
            &*ds,
            &spec.template,
            &revs,
            status.collision_count,
        )
        .await
        .map_err(history_err)?;
        let cur_name = current.revision.name_any();
        let hash = util::labels_of(&current.revision.metadata)
            .get(CONTROLLER_REVISION_HASH)
            .cloned()
            .unwrap_or_else(|| cur_name.clone());
        let old: Vec<_> = revs
            .iter()
            .filter(|r| r.name_any() != cur_name)
            .cloned()
            .collect();

        let generation = ds
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION).cloned())
            .or_else(|| ds.metadata.generation.map(|g| g.to_string()));
        let template_spec = spec.template.spec.clone().unwrap_or_default();
        let nodes: Vec<(Arc<Node>, Placement)> = self
            .nodes
            .list(None)
            .into_iter()
            .map(|n| {
                let p = node::placement(&n, &node::daemon_pod_spec(&template_spec, &n.name_any()));
                (n, p)
            })
            .collect();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in &pods {
            // Finished pods already deleted are as good as gone.
            if util::is_terminal(p) && util::is_deleting(&p.metadata) {
                continue;
            }
            if let Some(n) = node::target_node(p.spec.as_ref()) {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        for v in by_node.values_mut() {
            v.sort_by(by_age);
        }
        let sync = Sync {
            key,
            ds: &ds,
            hash,
            generation,
            min_ready: Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64),
            nodes,
            by_node,
        };

        let mut requeue: Option<Duration> = None;
        let mut errors = Vec::new();
        if self.creations.satisfied(key) && self.deletions.satisfied(key) {
            let (creates, deletes, backoff) = self.manage(&sync);
            requeue = backoff;
            if creates.is_empty() && deletes.is_empty() {
                if sync.rolling() {
                    let (deletes, creates) = self.rolling_update(&sync);
                    errors.extend(self.sync_nodes(&sync, &pod_api, creates, deletes).await);
                }
            } else {
                errors.extend(self.sync_nodes(&sync, &pod_api, creates, deletes).await);
            }
        }

        let live: HashSet<String> = pods
            .iter()
            .filter_map(|p| {
                util::labels_of(&p.metadata)
                    .get(CONTROLLER_REVISION_HASH)
                    .cloned()
            })
            .collect();
        history::truncate(
            &rev_api,
            &old,
            &live,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;

        let (new_status, unavailable_ready) = self.status(&sync, current.collision_count);
        if ds.status.as_ref() != Some(&new_status) {
            let ds_api: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), &ns);
            let patch = serde_json::json!({"status": new_status});
            match ds_api
                .patch_status(
                    &ds.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => return Ok(Action::Done),
                Err(e) => return Err(ApiError::new("update status of daemonset", key, e).into()),
            }
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e.into());
        }
        if unavailable_ready && !sync.min_ready.is_zero() {
            requeue = Some(requeue.map_or(sync.min_ready, |r| r.min(sync.min_ready)));
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

impl DaemonSetController {
    /// kube's `manage`/`podsShouldBeOnNode`: the nodes needing a pod and the pods to
    /// delete, plus when to look again for failed pods held back by their backoff.
    fn manage(&self, s: &Sync<'_>) -> (Vec<String>, Vec<Arc<Pod>>, Option<Duration>) {
        let mut creates = Vec::new();
        let mut deletes = Vec::new();
        let mut requeue: Option<Duration> = None;
        let surge = s.rolling() && s.budgets().0 > 0;
        let now = Instant::now();
        let mut known = HashSet::new();
        for (n, p) in &s.nodes {
            let name = n.name_any();
            let on_node = s.by_node.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            known.insert(name.clone());
            if p.should_run && on_node.is_empty() {
                creates.push(name);
            } else if p.should_continue_running && !on_node.is_empty() {
                let mut running = Vec::new();
                for pod in on_node {
                    if util::is_deleting(&pod.metadata) {
                        continue;
                    }
                    match util::phase(pod) {
                        "Failed" => {
                            let bkey = format!("{}/{name}", s.key);
                            match self.backoff_left(&bkey, now) {
                                Some(left) => requeue = Some(requeue.map_or(left, |r| r.min(left))),
                                None => deletes.push(pod.clone()),
                            }
                        }
                        "Succeeded" => deletes.push(pod.clone()),
                        _ => running.push(pod.clone()),
                    }
                }
                if running.len() <= 1 {
                    continue;
                }
                if !surge {
                    deletes.extend(running.into_iter().skip(1));
                    continue;
                }
                // Surging: keep the oldest new pod, and the oldest old pod only while it
                // is ready and the new one is not yet available.
                let (mut oldest_new, mut oldest_old) = (None, None);
                for pod in running {
                    let slot = if s.is_updated(&pod) {
                        &mut oldest_new
                    } else {
                        &mut oldest_old
                    };
                    if slot.is_none() {
                        *slot = Some(pod);
                    } else {
                        deletes.push(pod);
                    }
                }
                if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                    if !util::is_ready(&old)
                        || util::is_available(&new, s.min_ready, self.ctx.now())
                    {
                        deletes.push(old);
                    }
                }
            } else if !p.should_continue_running {
                deletes.extend(
                    on_node
                        .iter()
                        .filter(|p| !util::is_deleting(&p.metadata))
                        .cloned(),
                );
            }
        }
        // Pods for nodes that are gone.
        for (n, on_node) in &s.by_node {
            if !known.contains(n) {
                deletes.extend(
                    on_node
                        .iter()
                        .filter(|p| !util::is_deleting(&p.metadata))
                        .cloned(),
                );
            }
        }
        (creates, deletes, requeue)
    }

    /// Whether a failed pod on this node waits; otherwise steps the backoff.
    fn backoff_left(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut b = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match b.get(key).copied() {
            Some((delay, at)) if now < at + delay => Some(at + delay - now),
            Some((delay, at)) => {
                let next = if now.duration_since(at) > 2 * BACKOFF_MAX {
                    BACKOFF_INITIAL
                } else {
                    (delay * 2).min(BACKOFF_MAX)
                };
                b.insert(key.into(), (next, now));
                None
            }
            None => {
                b.insert(key.into(), (BACKOFF_INITIAL, now));
                None
            }
        }
    }

    /// kube's `rollingUpdate`: old pods to delete and nodes to surge a new pod onto.
    fn rolling_update(&self, s: &Sync<'_>) -> (Vec<Arc<Pod>>, Vec<String>) {
        let (max_surge, max_unavailable) = s.budgets();
        let now = self.ctx.now();
        let available = |p: &Pod| util::is_available(p, s.min_ready, now);
        let mut names: Vec<&String> = s.by_node.keys().collect();
        names.sort();
        // (new pod, old pod) per node; None when the node is inconsistent.
        let split = |pods: &[Arc<Pod>]| {
            let (mut new, mut old) = (None, None);
            for p in pods.iter().filter(|p| !util::is_deleting(&p.metadata)) {
                let slot = if s.is_updated(p) { &mut new } else { &mut old };
                if slot.is_some() {
                    return None;
                }
                *slot = Some(p.clone());
            }
            Some((new, old))
        };
        if max_surge == 0 {
            let mut unavailable = 0;
            let mut replace_now = Vec::new();
            let mut candidates = Vec::new();
            for n in names {
                let Some((new, old)) = split(&s.by_node[n]) else {
                    unavailable += 1;
                    continue;
                };
                match (new, old) {
                    (None, None) | (Some(_), Some(_)) => unavailable += 1,
                    (Some(new), None) => {
                        if !available(&new) {
                            unavailable += 1;
                        }
                    }
                    (None, Some(old)) => {
                        if !available(&old) {
                            replace_now.push(old);
                        } else if unavailable < max_unavailable {
                            candidates.push(old);
                        }
                    }
                }
            }
            let room = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
            replace_now.extend(candidates.into_iter().take(room));
            return (replace_now, Vec::new());
        }
        let mut surged = 0;
        let mut deletes = Vec::new();
        let mut surge_now = Vec::new();
        let mut candidates = Vec::new();
        let wanted: HashSet<String> = s
            .nodes
            .iter()
            .filter(|(_, p)| p.should_run)
            .map(|(n, _)| n.name_any())
            .collect();
        for n in names {
            let Some((new, old)) = split(&s.by_node[n]) else {
                surged += 1;
                continue;
            };
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) => {
                    if !wanted.contains(n) {
                        continue;
                    }
                    if !available(&old) {
                        surge_now.push(n.clone());
                    } else if surged < max_surge {
                        candidates.push(n.clone());
                    }
                }
                (Some(new), Some(old)) => {
                    if available(&new) {
                        deletes.push(old);
                    } else {
                        surged += 1;
                    }
                }
            }
        }
        let room = usize::try_from((max_surge - surged).max(0)).unwrap_or(0);
        surge_now.extend(candidates.into_iter().take(room));
        (deletes, surge_now)
    }

    /// Creates pods for `creates` (in slow-start batches) and deletes `deletes`,
    /// concurrently, under expectations; returns the failures.
    async fn sync_nodes(
        &self,
        s: &Sync<'_>,
        api: &Api<Pod>,
        mut creates: Vec<String>,
        mut deletes: Vec<Arc<Pod>>,
    ) -> Vec<ApiError> {
        creates.truncate(BURST);
        deletes.truncate(BURST);
        let mut errors = Vec::new();
        self.creations.expect_creations(s.key, creates.len());
        self.deletions
            .expect_deletions(s.key, deletes.iter().filter_map(|p| p.metadata.uid.clone()));

        let deleted = join_all(deletes.iter().map(|p| async move {
            let r = api.delete(&p.name_any(), &DeleteParams::default()).await;
            (p, r)
        }))
        .await;
        for (p, r) in deleted {
            let uid = p.metadata.uid.as_deref().unwrap_or_default();
            match r {
                Ok(_) => self.recorder.normal(
                    s.ds,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name_any()),
                ),
                Err(e) if util::is_not_found(&e) => self.deletions.deletion_observed(s.key, uid),
                Err(e) => {
                    self.deletions.deletion_observed(s.key, uid);
                    self.recorder
                        .warning(s.ds, "FailedDelete", format!("Error deleting: {e}"));
                    errors.push(ApiError::new("delete pod", p.name_any(), e));
                }
            }
        }

        let spec = s.ds.spec.as_ref();
        let mut template = spec.map(|s| s.template.clone()).unwrap_or_default();
        {
            let labels = template
                .metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(Default::default);
            labels.insert(CONTROLLER_REVISION_HASH.into(), s.hash.clone());
            if let Some(g) = &s.generation {
                labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.clone());
            }
        }
        let ns = s.ds.namespace().unwrap_or_default();
        let prefix = util::generate_name_prefix(&s.ds.name_any());
        let owner = util::controller_ref(s.ds);
        let template_spec = template.spec.clone().unwrap_or_default();
        let mut batch = 1usize;
        let mut rest = creates.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(batch.min(rest.len()));
            rest = later;
            let results = join_all(now.iter().map(|n| {
                let mut pod = util::pod_from_template(&template, &ns, &prefix, owner.clone());
                pod.spec = Some(node::daemon_pod_spec(&template_spec, n));
                async move { api.create(&PostParams::default(), &pod).await }
            }))
            .await;
            let mut failed = false;
            for r in results {
                match r {
                    Ok(p) => self.recorder.normal(
                        s.ds,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    ),
                    Err(e) => {
                        failed = true;
                        self.creations.creation_observed(s.key);
                        self.recorder
                            .warning(s.ds, "FailedCreate", format!("Error creating: {e}"));
                        errors.push(ApiError::new("create pod for daemonset", s.key, e));
                    }
                }
            }
            if failed {
                // The creates never sent will never be observed.
                for _ in rest {
                    self.creations.creation_observed(s.key);
                }
                break;
            }
            batch *= 2;
        }
        errors
    }

    /// kube's `updateDaemonSetStatus`; also whether some ready pod is not yet available.
    fn status(&self, s: &Sync<'_>, collision_count: Option<i32>) -> (DaemonSetStatus, bool) {
        let now = self.ctx.now();
        let mut st = DaemonSetStatus {
            collision_count,
            conditions: s.ds.status.as_ref().and_then(|x| x.conditions.clone()),
            observed_generation: s.ds.metadata.generation,
            ..Default::default()
        };
        let (mut available, mut updated) = (0, 0);
        for (n, p) in &s.nodes {
            let on_node = s
                .by_node
                .get(&n.name_any())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let scheduled = !on_node.is_empty();
            if p.should_run {
                st.desired_number_scheduled += 1;
                let Some(pod) = on_node.first() else { continue };
                st.current_number_scheduled += 1;
                if util::is_ready(pod) {
                    st.number_ready += 1;
                    if util::is_available(pod, s.min_ready, now) {
                        available += 1;
                    }
                }
                if s.is_updated(pod) {
                    updated += 1;
                }
            } else if scheduled {
                st.number_misscheduled += 1;
            }
        }
        st.number_available = Some(available);
        st.number_unavailable = Some(st.desired_number_scheduled - available);
        st.updated_number_scheduled = Some(updated);
        let waiting = st.number_ready != available;
        (st, waiting)
    }
}
