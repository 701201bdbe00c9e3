//! Status and conditions, as kube's deploymentutil writes them: the replica counts
//! summed over the ReplicaSets, Available (enough replicas available), Progressing
//! (created, updated, complete, paused, resumed, or timed out past
//! `progressDeadlineSeconds`) and ReplicaFailure copied from the ReplicaSets; and the
//! requeue at the deadline so a stuck rollout is noticed without any other change.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::sync::Sets;
use super::{rs_actual, rs_available, rs_ready, Result, Run};

pub(crate) const PROGRESSING: &str = "Progressing";
pub(crate) const AVAILABLE: &str = "Available";
pub(crate) const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The reasons of the conditions (kube's deploymentutil constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    NewReplicaSetCreated,
    FoundNewReplicaSet,
    ReplicaSetUpdated,
    NewReplicaSetAvailable,
    ProgressDeadlineExceeded,
    DeploymentPaused,
    DeploymentResumed,
    ReplicaSetCreateError,
    MinimumReplicasAvailable,
    MinimumReplicasUnavailable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NewReplicaSetCreated => "NewReplicaSetCreated",
            Reason::FoundNewReplicaSet => "FoundNewReplicaSet",
            Reason::ReplicaSetUpdated => "ReplicaSetUpdated",
            Reason::NewReplicaSetAvailable => "NewReplicaSetAvailable",
            Reason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            Reason::DeploymentPaused => "DeploymentPaused",
            Reason::DeploymentResumed => "DeploymentResumed",
            Reason::ReplicaSetCreateError => "ReplicaSetCreateError",
            Reason::MinimumReplicasAvailable => "MinimumReplicasAvailable",
            Reason::MinimumReplicasUnavailable => "MinimumReplicasUnavailable",
        }
    }
}

/// kube's `NewDeploymentCondition` (times to the second, as they are stored).
pub(crate) fn condition(
    type_: &str,
    status: &str,
    reason: Reason,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.as_str().into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

pub(crate) fn get<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// kube's `SetDeploymentCondition`: no change when status and reason are the same; the
/// transition time survives when only the reason changes.
pub(crate) fn set(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get(status, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove(status, &c.type_.clone());
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

pub(crate) fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// kube's `DeploymentComplete`.
pub(crate) fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas_of(d);
    s.updated_replicas.unwrap_or(0) == r
        && s.replicas.unwrap_or(0) == r
        && s.available_replicas.unwrap_or(0) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// kube's `DeploymentProgressing`: more updated, ready or available replicas, or fewer
/// old ones, than the last status said.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_olds = n(old.replicas) - n(old.updated_replicas);
    let new_olds = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_olds < old_olds
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// When the progress deadline passes, counted from the Progressing condition's last
/// update.
fn deadline(d: &Deployment, c: &DeploymentCondition) -> Option<Timestamp> {
    let secs = d.spec.as_ref()?.progress_deadline_seconds?;
    let from = c.last_update_time.as_ref()?.0;
    from.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
        secs,
    )))
    .ok()
}

/// kube's `DeploymentTimedOut`.
fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(c) = get(s, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => deadline(d, c).is_some_and(|t| t < now),
    }
}

impl Run<'_> {
    /// kube's `calculateStatus`.
    pub(super) fn calculate_status(&self, sets: &Sets) -> DeploymentStatus {
        let available: i32 = sets.all().map(rs_available).sum();
        let total = sets.spec_replicas();
        let old = self.d.status.clone().unwrap_or_default();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: nonzero(sets.all().map(rs_actual).sum()),
            updated_replicas: nonzero(sets.new.as_ref().map_or(0, rs_actual)),
            ready_replicas: nonzero(sets.all().map(rs_ready).sum()),
            available_replicas: nonzero(available),
            unavailable_replicas: nonzero((total - available).max(0)),
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
            ..Default::default()
        };
        let now = self.now();
        if available >= self.plan.replicas - self.plan.max_unavailable() {
            set(
                &mut status,
                condition(
                    AVAILABLE,
                    "True",
                    Reason::MinimumReplicasAvailable,
                    "Deployment has minimum availability.".into(),
                    now,
                ),
            );
        } else {
            set(
                &mut status,
                condition(
                    AVAILABLE,
                    "False",
                    Reason::MinimumReplicasUnavailable,
                    "Deployment does not have minimum availability.".into(),
                    now,
                ),
            );
        }
        status
    }

    /// kube's `checkPausedConditions`: Progressing says DeploymentPaused while paused
    /// and DeploymentResumed after, unless the deadline was already reported.
    pub(super) async fn check_paused_conditions(&mut self) -> Result<()> {
        if !self.has_progress_deadline() {
            return Ok(());
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let reason = get(&status, PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(Reason::ProgressDeadlineExceeded.as_str()) {
            return Ok(());
        }
        let paused_cond = reason.as_deref() == Some(Reason::DeploymentPaused.as_str());
        let c = if self.paused() && !paused_cond {
            condition(
                PROGRESSING,
                "Unknown",
                Reason::DeploymentPaused,
                "Deployment is paused".into(),
                self.now(),
            )
        } else if !self.paused() && paused_cond {
            condition(
                PROGRESSING,
                "Unknown",
                Reason::DeploymentResumed,
                "Deployment is resumed".into(),
                self.now(),
            )
        } else {
            return Ok(());
        };
        set(&mut status, c);
        self.write_status(status).await
    }

    /// kube's `syncRolloutStatus`: status, Progressing (complete, progressing or timed
    /// out) and ReplicaFailure; when nothing changed, a requeue at the deadline.
    pub(super) async fn sync_rollout_status(&mut self, sets: &Sets) -> Result<()> {
        let mut status = self.calculate_status(sets);
        let has_deadline = self.has_progress_deadline();
        if !has_deadline {
            remove(&mut status, PROGRESSING);
        }
        let old = self.d.status.clone().unwrap_or_default();
        let current = get(&old, PROGRESSING).cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref())
                == Some(Reason::NewReplicaSetAvailable.as_str());
        let now = self.now();
        let subject = match &sets.new {
            Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
            None => format!("Deployment {:?}", self.d.name_any()),
        };
        if has_deadline && !complete_before {
            if complete(&self.d, &status) {
                set(
                    &mut status,
                    condition(
                        PROGRESSING,
                        "True",
                        Reason::NewReplicaSetAvailable,
                        format!("{subject} has successfully progressed."),
                        now,
                    ),
                );
            } else if progressing(&self.d, &status) {
                // Progress refreshes lastUpdateTime even under the same reason.
                let mut c = condition(
                    PROGRESSING,
                    "True",
                    Reason::ReplicaSetUpdated,
                    format!("{subject} is progressing."),
                    now,
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove(&mut status, PROGRESSING);
                }
                set(&mut status, c);
            } else if timed_out(&self.d, &status, now) {
                set(
                    &mut status,
                    condition(
                        PROGRESSING,
                        "False",
                        Reason::ProgressDeadlineExceeded,
                        format!("{subject} has timed out progressing."),
                        now,
                    ),
                );
            }
        }
        match replica_failure(sets) {
            Some(c) => set(&mut status, c),
            None => remove(&mut status, REPLICA_FAILURE),
        }
        if self.d.status.as_ref() == Some(&status) {
            self.requeue_stuck(&status);
            return Ok(());
        }
        self.write_status(status).await
    }

    /// kube's `requeueStuckDeployment`: with no sign of progress, look again when the
    /// deadline passes.
    fn requeue_stuck(&mut self, status: &DeploymentStatus) {
        if !self.has_progress_deadline() {
            return;
        }
        let Some(c) = self
            .d
            .status
            .as_ref()
            .and_then(|s| get(s, PROGRESSING))
            .cloned()
        else {
            return;
        };
        if complete(&self.d, status)
            || c.reason.as_deref() == Some(Reason::ProgressDeadlineExceeded.as_str())
        {
            return;
        }
        let Some(at) = deadline(&self.d, &c) else {
            return;
        };
        let left = at.as_second() - self.now().as_second();
        let after = if left < 1 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(left as u64 + 1)
        };
        self.requeue_after(after);
    }
}

/// The ReplicaFailure condition of the new ReplicaSet, else of any old one.
fn replica_failure(sets: &Sets) -> Option<DeploymentCondition> {
    let of = |rs: &k8s_openapi::api::apps::v1::ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    sets.new
        .as_ref()
        .and_then(of)
        .or_else(|| sets.all().find_map(of))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn conditions_keep_their_transition_time_when_only_the_reason_changes() {
        let mut s = DeploymentStatus::default();
        set(
            &mut s,
            condition(
                PROGRESSING,
                "True",
                Reason::NewReplicaSetCreated,
                "a".into(),
                at(10),
            ),
        );
        set(
            &mut s,
            condition(
                PROGRESSING,
                "True",
                Reason::NewReplicaSetCreated,
                "b".into(),
                at(20),
            ),
        );
        assert_eq!(
            get(&s, PROGRESSING).and_then(|c| c.message.as_deref()),
            Some("a"),
            "same status and reason: unchanged"
        );
        set(
            &mut s,
            condition(
                PROGRESSING,
                "True",
                Reason::ReplicaSetUpdated,
                "c".into(),
                at(30),
            ),
        );
        let c = get(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(c.last_transition_time, Some(Time(at(10))));
        assert_eq!(c.last_update_time, Some(Time(at(30))));
        set(
            &mut s,
            condition(
                PROGRESSING,
                "False",
                Reason::ProgressDeadlineExceeded,
                "d".into(),
                at(40),
            ),
        );
        let c = get(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(c.last_transition_time, Some(Time(at(40))));
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn a_rollout_times_out_after_the_deadline_from_its_last_progress() {
        let d = Deployment {
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                progress_deadline_seconds: Some(10),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut s = DeploymentStatus::default();
        assert!(!timed_out(&d, &s, at(100)));
        set(
            &mut s,
            condition(
                PROGRESSING,
                "True",
                Reason::ReplicaSetUpdated,
                "x".into(),
                at(50),
            ),
        );
        assert!(!timed_out(&d, &s, at(60)));
        assert!(timed_out(&d, &s, at(61)));
        let mut done = DeploymentStatus::default();
        set(
            &mut done,
            condition(
                PROGRESSING,
                "True",
                Reason::NewReplicaSetAvailable,
                "x".into(),
                at(0),
            ),
        );
        assert!(!timed_out(&d, &done, at(1000)));
    }
}
