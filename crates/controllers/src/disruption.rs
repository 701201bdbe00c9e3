//! The disruption controller: the status of every PodDisruptionBudget, as
//! kube-controller-manager's `disruption` controller computes it, so evictions (and the
//! scheduler's preemption) know how many pods may go.
//!
//! Contract: for a PDB, the pods of its namespace its selector matches (a missing
//! selector matches none, an empty one all) give `currentHealthy` (ready pods that are
//! neither being deleted nor recently disrupted). `expectedPods` and `desiredHealthy`
//! follow the spec: an integer `minAvailable` is itself `desiredHealthy` against the
//! number of selected pods; a percentage `minAvailable` or any `maxUnavailable` is taken
//! of the summed scale of the pods' controllers (ReplicationController, Deployment through
//! its ReplicaSet, ReplicaSet, StatefulSet), rounding up. `disruptionsAllowed` is
//! `currentHealthy - desiredHealthy`, never below 0 and 0 while no pod is expected. The
//! condition `DisruptionAllowed` is True/SufficientPods or False/InsufficientPods; when
//! the status cannot be computed (a pod without a known controller under a percentage)
//! it is False/SyncFailed with the reason and nothing may be disrupted. Entries of
//! `disruptedPods` (written by evictions) are kept for two minutes or until the pod is
//! being deleted, whichever comes first; the PDB is looked at again when one expires.
//! The status is written only when it changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::events::Recorder;
use crate::informer::{key_of, split_key, Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{
    controller_of, is_not_found, is_ready, labels_of, scaled_value, selector, ApiError,
};
use crate::Context;

/// How long an eviction's entry in `disruptedPods` holds the pod out of the healthy count
/// (kube's `DeletionTimeout`).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// Pod-driven syncs of one PDB are coalesced over this long.
const BATCH: Duration = Duration::from_millis(100);
const CONDITION: &str = "DisruptionAllowed";

#[derive(Debug, thiserror::Error)]
pub(crate) enum DisruptionError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Why a PDB's expected pod count could not be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
enum ExpectedError {
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    #[error("{0}")]
    Scale(String),
    #[error("{0}")]
    Selector(String),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let pdbs = ctx.informers.informer::<PodDisruptionBudget>();
    let pods = ctx.informers.informer::<Pod>();
    let r = Disruption {
        client: ctx.client.clone(),
        recorder: ctx.events.recorder("controllermanager"),
        clock: ctx.clock.clone(),
        pdbs: pdbs.clone(),
        pods: pods.clone(),
        rcs: ctx.informers.informer::<ReplicationController>(),
        rss: ctx.informers.informer::<ReplicaSet>(),
        deployments: ctx.informers.informer::<Deployment>(),
        statefulsets: ctx.informers.informer::<StatefulSet>(),
    };
    let queue = Queue::new();
    {
        let q = queue.clone();
        pdbs.on_change(move |c| {
            if !matches!(c, Change::Deleted(_)) {
                q.add(key_of(&**c.object()));
            }
        });
    }
    {
        let (q, pdbs) = (queue.clone(), pdbs.clone());
        pods.on_change(move |c| pdbs_for_pod_change(&pdbs, c, |k| q.add_after(k, BATCH)));
    }
    let ready = {
        // Not the ReplicationControllers: a server that does not serve them must not hold
        // up every PDB (a pod of an RC not yet listed fails safe and is retried).
        let (a, b, d, e, f) = (
            r.pdbs.clone(),
            r.pods.clone(),
            r.rss.clone(),
            r.deployments.clone(),
            r.statefulsets.clone(),
        );
        async move {
            a.synced().await;
            b.synced().await;
            d.synced().await;
            e.synced().await;
            f.synced().await;
        }
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

/// Enqueues the PDBs of the pod's namespace that select its old or new version, when
/// something their status counts changed.
fn pdbs_for_pod_change(
    pdbs: &Informer<PodDisruptionBudget>,
    change: &Change<'_, Pod>,
    mut enqueue: impl FnMut(String),
) {
    let (old, new) = match change {
        Change::Added(p) | Change::Deleted(p) => (None, &***p),
        Change::Updated { old, new } => (Some(&***old), &***new),
    };
    let view = |p: &Pod| {
        (
            is_ready(p),
            p.metadata.deletion_timestamp.is_some(),
            controller_of(&p.metadata).map(|r| r.uid.clone()),
        )
    };
    let labels_changed = old.is_some_and(|o| o.metadata.labels != new.metadata.labels);
    if let Some(old) = old {
        if !labels_changed && view(old) == view(new) {
            return;
        }
    }
    let ns = new.metadata.namespace.as_deref().unwrap_or_default();
    pdbs.for_each(Some(ns), |pdb| {
        let Ok(sel) = selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref())) else {
            return;
        };
        if sel.matches(labels_of(&new.metadata))
            || (labels_changed && old.is_some_and(|o| sel.matches(labels_of(&o.metadata))))
        {
            enqueue(key_of(&**pdb));
        }
    });
}

struct Disruption {
    client: kube::Client,
    recorder: Recorder,
    clock: Arc<dyn crate::Clock>,
    pdbs: Informer<PodDisruptionBudget>,
    pods: Informer<Pod>,
    rcs: Informer<ReplicationController>,
    rss: Informer<ReplicaSet>,
    deployments: Informer<Deployment>,
    statefulsets: Informer<StatefulSet>,
}

#[async_trait::async_trait]
impl Reconciler for Disruption {
    type Error = DisruptionError;

    fn name(&self) -> &'static str {
        "disruption"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, DisruptionError> {
        let (ns, name) = split_key(key);
        let Some(pdb) = self.pdbs.get(ns, name) else {
            return Ok(Action::Done);
        };
        let now = self.clock.now();
        let spec = pdb.spec.clone().unwrap_or_default();
        let pods = match selector(spec.selector.as_ref()) {
            Ok(sel) => {
                let mut pods = Vec::new();
                self.pods.for_each(Some(ns), |p| {
                    if sel.matches(labels_of(&p.metadata)) {
                        pods.push(p.clone());
                    }
                });
                pods
            }
            Err(e) => {
                return self
                    .fail_safe(&pdb, &ExpectedError::Selector(e.to_string()), now)
                    .await
            }
        };
        let (expected, desired, unmanaged) = match self.expected_pod_count(&pdb, &pods) {
            Ok(v) => v,
            Err(e) => {
                self.recorder.warning(
                    &*pdb,
                    "CalculateExpectedPodCountFailed",
                    format!("Failed to calculate the number of expected pods: {e}"),
                );
                return self.fail_safe(&pdb, &e, now).await;
            }
        };
        if !unmanaged.is_empty() {
            self.recorder.warning(
                &*pdb,
                "UnmanagedPods",
                format!(
                    "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                    selector_string(&pdb)
                ),
            );
        }
        let old = pdb.status.clone().unwrap_or_default();
        let (disrupted, recheck) = disrupted_pod_map(&pods, old.disrupted_pods.as_ref(), now);
        let healthy = count_healthy(&pods, &disrupted, now);
        let mut allowed = healthy - desired;
        if expected <= 0 || allowed <= 0 {
            allowed = 0;
        }
        let generation = pdb.metadata.generation.unwrap_or(0);
        let disrupted_opt = (!disrupted.is_empty()).then_some(disrupted);
        let up_to_date = old.current_healthy == healthy
            && old.desired_healthy == desired
            && old.expected_pods == expected
            && old.disruptions_allowed == allowed
            && old.disrupted_pods.clone().filter(|m| !m.is_empty()) == disrupted_opt
            && old.observed_generation == Some(generation)
            && conditions_up_to_date(&old, generation);
        if !up_to_date {
            if pods.is_empty() {
                self.recorder
                    .normal(&*pdb, "NoPods", "No matching pods found");
            }
            let mut status = PodDisruptionBudgetStatus {
                current_healthy: healthy,
                desired_healthy: desired,
                expected_pods: expected,
                disruptions_allowed: allowed,
                disrupted_pods: disrupted_opt,
                observed_generation: Some(generation),
                conditions: old.conditions.clone(),
            };
            let (status_, reason) = if allowed > 0 {
                ("True", "SufficientPods")
            } else {
                ("False", "InsufficientPods")
            };
            set_condition(&mut status, status_, reason, "", generation, now);
            self.write_status(&pdb, status).await?;
        }
        Ok(match recheck {
            Some(at) => Action::RequeueAfter(
                Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
                    + Duration::from_secs(1),
            ),
            None => Action::Done,
        })
    }
}

impl Disruption {
    async fn write_status(
        &self,
        pdb: &PodDisruptionBudget,
        status: PodDisruptionBudgetStatus,
    ) -> Result<(), ApiError> {
        let mut new = pdb.clone();
        new.status = Some(status);
        let api: Api<PodDisruptionBudget> =
            Api::namespaced(self.client.clone(), &pdb.namespace().unwrap_or_default());
        match api
            .replace_status(&pdb.name_any(), &PostParams::default(), &new)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(ApiError::new("update status of", key_of(pdb), e)),
        }
    }

    /// kube's `failSafe`: nothing may be disrupted while the status cannot be computed.
    async fn fail_safe(
        &self,
        pdb: &PodDisruptionBudget,
        e: &ExpectedError,
        now: Timestamp,
    ) -> Result<Action, DisruptionError> {
        let mut status = pdb.status.clone().unwrap_or_default();
        let generation = status.observed_generation.unwrap_or(0);
        let before = status.clone();
        status.disruptions_allowed = 0;
        set_condition(
            &mut status,
            "False",
            "SyncFailed",
            &e.to_string(),
            generation,
            now,
        );
        if status != before {
            self.write_status(pdb, status).await?;
        }
        // Controllers may appear later (a cache lagging behind a new Deployment).
        Ok(Action::RequeueAfter(Duration::from_secs(10)))
    }

    /// kube's `getExpectedPodCount`: (expectedPods, desiredHealthy, unmanaged pods).
    fn expected_pod_count(
        &self,
        pdb: &PodDisruptionBudget,
        pods: &[Arc<Pod>],
    ) -> Result<(i32, i32, Vec<String>), ExpectedError> {
        let spec = pdb.spec.clone().unwrap_or_default();
        if let Some(max_unavailable) = spec.max_unavailable.as_ref() {
            let (expected, unmanaged) = self.expected_scale(pods)?;
            let mu = scaled_value(Some(max_unavailable), expected, true)
                .map_err(ExpectedError::Scale)?;
            return Ok((expected, (expected - mu).max(0), unmanaged));
        }
        match spec.min_available.as_ref() {
            Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n, Vec::new())),
            Some(pct @ IntOrString::String(_)) => {
                let (expected, unmanaged) = self.expected_scale(pods)?;
                let min = scaled_value(Some(pct), expected, true).map_err(ExpectedError::Scale)?;
                Ok((expected, min, unmanaged))
            }
            None => Ok((0, 0, Vec::new())),
        }
    }

    /// The summed scale of the controllers of `pods`, and the pods with no controller.
    fn expected_scale(&self, pods: &[Arc<Pod>]) -> Result<(i32, Vec<String>), ExpectedError> {
        // Keyed by the controller whose scale counts (a Deployment for its ReplicaSets).
        let mut scale: HashMap<String, i32> = HashMap::new();
        let mut resolved: HashSet<String> = HashSet::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let Some(r) = controller_of(&pod.metadata) else {
                unmanaged.push(pod.name_any());
                continue;
            };
            if !resolved.insert(r.uid.clone()) {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            let (uid, n) = self
                .controller_scale(r, &ns)
                .ok_or_else(|| ExpectedError::NoController(pod.name_any()))?;
            scale.insert(uid, n);
        }
        Ok((scale.values().sum(), unmanaged))
    }

    /// The controller `r` refers to (the Deployment above a Deployment's ReplicaSet) as
    /// (uid, spec.replicas), when the caches know it.
    fn controller_scale(&self, r: &OwnerReference, ns: &str) -> Option<(String, i32)> {
        let matches = |uid: Option<&String>| uid.map(String::as_str) == Some(r.uid.as_str());
        match r.kind.as_str() {
            "ReplicationController" => {
                let rc = self
                    .rcs
                    .get(ns, &r.name)
                    .filter(|o| matches(o.metadata.uid.as_ref()))?;
                Some((r.uid.clone(), rc.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            "ReplicaSet" => {
                let rs = self
                    .rss
                    .get(ns, &r.name)
                    .filter(|o| matches(o.metadata.uid.as_ref()))?;
                if let Some(owner) = controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")
                {
                    let d = self
                        .deployments
                        .get(ns, &owner.name)
                        .filter(|d| d.metadata.uid.as_deref() == Some(owner.uid.as_str()))?;
                    return Some((owner.uid.clone(), d.spec.as_ref()?.replicas.unwrap_or(1)));
                }
                Some((r.uid.clone(), rs.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            "StatefulSet" => {
                let s = self
                    .statefulsets
                    .get(ns, &r.name)
                    .filter(|o| matches(o.metadata.uid.as_ref()))?;
                Some((r.uid.clone(), s.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            _ => None,
        }
    }
}

fn selector_string(pdb: &PodDisruptionBudget) -> String {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return "nil".into();
    };
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// kube's `buildDisruptedPodMap`: the entries still in force (their pod exists, is not
/// being deleted, and its two minutes have not run out), and when the first runs out.
fn disrupted_pod_map(
    pods: &[Arc<Pod>],
    disrupted: Option<&BTreeMap<String, Time>>,
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let mut result = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    let Some(disrupted) = disrupted else {
        return (result, None);
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(t) = disrupted.get(&name) else {
            continue;
        };
        let expires = expires(t);
        if expires < now {
            tracing::info!(pod = %key_of(&**pod), "pod was expected to be deleted by an eviction but was not");
        } else {
            recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
            result.insert(name, t.clone());
        }
    }
    (result, recheck)
}

fn expires(t: &Time) -> Timestamp {
    t.0.checked_add(DELETION_TIMEOUT).unwrap_or(t.0)
}

/// kube's `countHealthyPods`: ready pods neither being deleted nor recently disrupted.
fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            disrupted
                .get(&p.name_any())
                .is_none_or(|t| expires(t) <= now)
        })
        .filter(|p| is_ready(p))
        .count() as i32
}

/// kube's `ConditionsAreUpToDate`.
fn conditions_up_to_date(status: &PodDisruptionBudgetStatus, generation: i64) -> bool {
    let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION)
    else {
        return false;
    };
    if status.observed_generation != Some(generation) {
        return false;
    }
    if status.disruptions_allowed > 0 {
        c.status == "True" && c.reason == "SufficientPods"
    } else {
        c.status == "False" && c.reason == "InsufficientPods"
    }
}

/// `meta.SetStatusCondition` for DisruptionAllowed: the transition time moves only when
/// the status does.
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    value: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let new = |t: Time| Condition {
        type_: CONDITION.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: t,
    };
    match conditions.iter_mut().find(|c| c.type_ == CONDITION) {
        Some(c) => {
            let t = if c.status == value {
                c.last_transition_time.clone()
            } else {
                Time(now)
            };
            *c = new(t);
        }
        None => conditions.push(new(Time(now))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn recently_disrupted_pods_do_not_count_as_healthy_for_two_minutes() {
        let now = Timestamp::from_second(10_000).unwrap();
        let pods = vec![pod("a", true), pod("b", true), pod("c", false)];
        let disrupted = BTreeMap::from([
            (
                "a".to_string(),
                Time(Timestamp::from_second(9_990).unwrap()),
            ),
            (
                "b".to_string(),
                Time(Timestamp::from_second(9_000).unwrap()),
            ),
            (
                "gone".to_string(),
                Time(Timestamp::from_second(9_990).unwrap()),
            ),
        ]);
        let (map, recheck) = disrupted_pod_map(&pods, Some(&disrupted), now);
        assert_eq!(map.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(recheck, Some(Timestamp::from_second(10_110).unwrap()));
        assert_eq!(count_healthy(&pods, &map, now), 1);
    }

    #[test]
    fn the_condition_moves_its_transition_time_only_on_a_change() {
        let t0 = Timestamp::from_second(1).unwrap();
        let t1 = Timestamp::from_second(2).unwrap();
        let mut s = PodDisruptionBudgetStatus::default();
        set_condition(&mut s, "False", "InsufficientPods", "", 1, t0);
        set_condition(&mut s, "False", "InsufficientPods", "", 2, t1);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.last_transition_time.0, c.observed_generation),
            (t0, Some(2))
        );
        s.observed_generation = Some(2);
        assert!(conditions_up_to_date(&s, 2));
        set_condition(&mut s, "True", "SufficientPods", "", 2, t1);
        assert_eq!(s.conditions.as_ref().unwrap()[0].last_transition_time.0, t1);
        assert!(!conditions_up_to_date(&s, 2));
        s.disruptions_allowed = 1;
        assert!(conditions_up_to_date(&s, 2));
    }
}
