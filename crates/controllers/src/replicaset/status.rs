//! The status a ReplicaSet or ReplicationController reports (both kinds share its
//! shape): counts of its active pods, the generation they reflect and the
//! `ReplicaFailure` condition while creating or deleting pods is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::util::{is_available, is_ready, labels_of, until_available};

/// The condition type set while pod creates or deletes are refused.
pub(crate) const REPLICA_FAILURE: &str = "ReplicaFailure";

/// One status condition (ReplicaSetCondition and ReplicationControllerCondition alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status fields this controller owns, unset counts read as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    pub conditions: Vec<Condition>,
}

impl Status {
    /// The merge patch that writes this whole status (conditions removed when empty).
    pub(crate) fn patch(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if self.conditions.is_empty() {
            v["conditions"] = serde_json::Value::Null;
        }
        serde_json::json!({ "status": v })
    }
}

/// What a manage step left to report: nothing wrong, or a refused create/delete.
pub(crate) enum Failure<'a> {
    None,
    Create(&'a str),
    Delete(&'a str),
}

/// Counts over the owner's active pods; `until_available` is the soonest a ready pod
/// becomes available under minReadySeconds (when to look again).
pub(crate) struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub until_available: Option<Duration>,
}

pub(crate) fn count(
    pods: &[std::sync::Arc<Pod>],
    template_labels: &BTreeMap<String, String>,
    min_ready: Duration,
    now: Timestamp,
) -> Counts {
    let mut c = Counts {
        replicas: pods.len() as i32,
        fully_labeled: 0,
        ready: 0,
        available: 0,
        until_available: None,
    };
    for p in pods {
        let labels = labels_of(&p.metadata);
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            c.fully_labeled += 1;
        }
        if is_ready(p) {
            c.ready += 1;
            if is_available(p, min_ready, now) {
                c.available += 1;
            } else if let Some(d) = until_available(p, min_ready, now) {
                c.until_available = Some(c.until_available.map_or(d, |u| u.min(d)));
            }
        }
    }
    c
}

/// The new status from the old one: counts replaced, observedGeneration set, and the
/// ReplicaFailure condition added on a new failure (an existing one is kept as is, as
/// kube does) or removed once the manage step succeeds.
pub(crate) fn next(
    old: &Status,
    counts: &Counts,
    generation: i64,
    failure: Failure<'_>,
    now: Timestamp,
) -> Status {
    let mut s = old.clone();
    s.replicas = counts.replicas;
    s.fully_labeled_replicas = counts.fully_labeled;
    s.ready_replicas = counts.ready;
    s.available_replicas = counts.available;
    s.observed_generation = generation;
    let has = s.conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    let (reason, message) = match failure {
        Failure::None => {
            s.conditions.retain(|c| c.type_ != REPLICA_FAILURE);
            return s;
        }
        Failure::Create(m) => ("FailedCreate", m),
        Failure::Delete(m) => ("FailedDelete", m),
    };
    if !has {
        s.conditions.push(Condition {
            type_: REPLICA_FAILURE.into(),
            status: "True".into(),
            last_transition_time: Some(Time(now)),
            reason: Some(reason.into()),
            message: Some(message.into()),
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use std::sync::Arc;

    fn pod(labels: &[(&str, &str)], ready_at: Option<i64>) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.status = Some(PodStatus {
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn counts_follow_labels_readiness_and_min_ready_seconds() {
        let now = Timestamp::from_second(1_000).unwrap();
        let template: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "a".to_string()),
        ]
        .into();
        let pods = vec![
            pod(&[("app", "web"), ("tier", "a"), ("extra", "x")], Some(900)),
            pod(&[("app", "web"), ("tier", "a")], Some(995)),
            pod(&[("app", "web")], None),
        ];
        let c = count(&pods, &template, Duration::from_secs(10), now);
        assert_eq!(
            (c.replicas, c.fully_labeled, c.ready, c.available),
            (3, 2, 2, 1)
        );
        assert_eq!(c.until_available, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_failure_condition_is_added_kept_and_removed() {
        let now = Timestamp::from_second(1_000).unwrap();
        let counts = Counts {
            replicas: 1,
            fully_labeled: 1,
            ready: 0,
            available: 0,
            until_available: None,
        };
        let s = next(
            &Status::default(),
            &counts,
            3,
            Failure::Create("forbidden"),
            now,
        );
        assert_eq!(s.observed_generation, 3);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].reason.as_deref(), Some("FailedCreate"));
        let later = Timestamp::from_second(2_000).unwrap();
        let again = next(&s, &counts, 3, Failure::Create("other"), later);
        assert_eq!(again, s, "an existing condition is kept unchanged");
        let ok = next(&s, &counts, 3, Failure::None, later);
        assert!(ok.conditions.is_empty());
        assert_eq!(ok.patch()["status"]["conditions"], serde_json::Value::Null);
    }
}
