//! The Job controller's pure parts: completion-index sets and their `status.completedIndexes`
//! form, the pod backoff between recreations, podFailurePolicy matching and the counts a
//! Job's pods give. No I/O here, so each rule is unit-tested with fixed times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, PodFailurePolicy};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::util;

/// kube's `DefaultJobPodFailureBackOff`: the first recreation after a failure waits this.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// kube's `MaxJobPodFailureBackOff`: the doubling stops here.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// The annotation and label carrying an Indexed Job pod's completion index.
pub(crate) const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// How long to wait before creating pods again after `failures` failures since the last
/// success, the last of them at `last_failure` (kube's `getRemainingTime`).
pub(crate) fn backoff_remaining(
    failures: u32,
    last_failure: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let Some(last) = last_failure.filter(|_| failures > 0) else {
        return Duration::ZERO;
    };
    let backoff = backoff_delay(failures);
    let elapsed = now.as_millisecond().saturating_sub(last.as_millisecond());
    let elapsed = Duration::from_millis(u64::try_from(elapsed).unwrap_or(0));
    backoff.saturating_sub(elapsed)
}

/// 10 s, 20 s, 40 s … for the 1st, 2nd, 3rd … failure, at most 6 minutes.
pub(crate) fn backoff_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .checked_mul(1u32 << doublings)
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

/// Parses `status.completedIndexes` ("0-2,5"); what does not parse is skipped, as kube
/// does.
pub(crate) fn parse_indexes(s: Option<&str>, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) else {
            continue;
        };
        for i in a.max(0)..=b.min(completions.saturating_sub(1)) {
            out.insert(i);
        }
    }
    out
}

/// The `status.completedIndexes` form of a set: ascending ranges, "0-2,5".
pub(crate) fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// An Indexed Job pod's completion index (annotation first, then label), if valid.
pub(crate) fn pod_index(pod: &Pod) -> Option<i32> {
    let m = &pod.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(INDEX_KEY)))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|i| *i >= 0)
}

/// What a podFailurePolicy says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyAction {
    /// Fail the whole Job, with this message for its condition.
    FailJob(String),
    /// Not counted towards the backoff limit.
    Ignore,
    /// Counted as usual (a Count rule, or no rule matched).
    Count,
}

/// kube's `matchPodFailurePolicy`: the first rule that matches decides.
pub(crate) fn match_policy(policy: &PodFailurePolicy, pod: &Pod) -> PolicyAction {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    for (i, rule) in policy.rules.iter().enumerate() {
        let what = if let Some(req) = &rule.on_exit_codes {
            let statuses = status
                .into_iter()
                .flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                })
                .collect::<Vec<&ContainerStatus>>();
            statuses.into_iter().find_map(|c| {
                let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                let named = req.container_name.as_ref().is_none_or(|n| *n == c.name);
                let listed = req.values.contains(&code);
                let matches = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                (named && code != 0 && matches).then(|| {
                    format!(
                        "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        c.name, rule.action
                    )
                })
            })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            patterns.iter().find_map(|p| {
                util::pod_condition(pod, &p.type_)
                    .filter(|c| c.status == p.status)
                    .map(|c| {
                        format!(
                            "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                            c.type_, rule.action
                        )
                    })
            })
        } else {
            None
        };
        let Some(message) = what else { continue };
        return match rule.action.as_str() {
            "FailJob" => PolicyAction::FailJob(message),
            "Ignore" => PolicyAction::Ignore,
            _ => PolicyAction::Count,
        };
    }
    PolicyAction::Count
}

/// kube's `isPodFailed`: Failed, or (unless only failed pods are replaced) being deleted
/// before it succeeded — an orphan that will never reach a phase.
pub(crate) fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    if util::phase(pod) == "Failed" {
        return true;
    }
    if only_replace_failed(job) {
        return false;
    }
    util::is_deleting(&pod.metadata) && util::phase(pod) != "Succeeded"
}

/// Whether replacement pods wait for the old ones to reach Failed.
pub(crate) fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.is_some_and(|s| s.pod_failure_policy.is_some())
}

/// When a terminated pod finished: its containers' last finish, else its deletion, else
/// `now`.
pub(crate) fn finish_time(pod: &Pod, now: Timestamp) -> Timestamp {
    let status = pod.status.as_ref();
    let finished = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    finished
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now)
}

/// kube's `pastBackoffLimitOnFailure`: with restartPolicy OnFailure failures are container
/// restarts of the active pods.
pub(crate) fn restarts(pods: &[&Pod]) -> i64 {
    pods.iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum()
}

/// Which pods to create (their indexes, None for NonIndexed) and which to delete.
pub(crate) fn plan_pods(
    indexed: bool,
    completions: Option<i32>,
    parallelism: i32,
    succeeded: i64,
    active: &[Arc<Pod>],
    done_idx: &BTreeSet<i32>,
) -> (Vec<Option<i32>>, Vec<Arc<Pod>>) {
    let parallelism = i64::from(parallelism);
    if !indexed {
        let want = match completions {
            // A work queue: once one succeeded, start no more.
            None if succeeded > 0 => active.len() as i64,
            None => parallelism,
            Some(c) => parallelism.min(i64::from(c) - succeeded).max(0),
        };
        let have = active.len() as i64;
        if have > want {
            let mut victims: Vec<Arc<Pod>> = active.to_vec();
            // Unready and newest first, as kube's ActivePods ranking roughly does.
            victims.sort_by_key(|p| {
                (
                    util::is_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                )
            });
            victims.truncate((have - want) as usize);
            return (Vec::new(), victims);
        }
        return (vec![None; (want - have) as usize], Vec::new());
    }
    let completions = completions.unwrap_or(0);
    let mut by_index: BTreeMap<i32, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut delete = Vec::new();
    for p in active {
        match pod_index(p) {
            Some(i) if i < completions && !done_idx.contains(&i) => {
                by_index.entry(i).or_default().push(p.clone())
            }
            _ => delete.push(p.clone()),
        }
    }
    for pods in by_index.values_mut() {
        // One pod per index: keep the oldest.
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        delete.extend(pods.drain(1..));
    }
    let remaining = i64::from(completions) - done_idx.len() as i64;
    let want = parallelism.min(remaining).max(0) as usize;
    if by_index.len() > want {
        let extra: Vec<i32> = by_index
            .keys()
            .rev()
            .take(by_index.len() - want)
            .copied()
            .collect();
        for i in extra {
            delete.extend(by_index.remove(&i).into_iter().flatten());
        }
    }
    let mut create = Vec::new();
    let mut i = 0;
    while by_index.len() + create.len() < want && i < completions {
        if !done_idx.contains(&i) && !by_index.contains_key(&i) {
            create.push(Some(i));
        }
        i += 1;
    }
    (create, delete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
        PodFailurePolicyRule,
    };

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn pod(name: &str, index: Option<i32>, ready: bool, created: i64) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": ts(created)},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap();
        if let Some(i) = index {
            p.metadata.annotations = Some([(INDEX_KEY.to_string(), i.to_string())].into());
        }
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn non_indexed_jobs_keep_parallelism_pods_up_to_what_is_left() {
        let none = BTreeSet::new();
        // 5 completions, 2 done, parallelism 4: 3 wanted, 1 running → 2 more.
        let (create, delete) = plan_pods(false, Some(5), 4, 2, &[pod("a", None, true, 1)], &none);
        assert_eq!((create.len(), delete.len()), (2, 0));
        // Parallelism lowered to 1 with 3 running: the unready, then the newest, go.
        let active = [
            pod("old", None, true, 1),
            pod("new", None, true, 3),
            pod("unready", None, false, 2),
        ];
        let (create, delete) = plan_pods(false, Some(10), 1, 0, &active, &none);
        assert!(create.is_empty());
        assert_eq!(names(&delete), ["unready", "new"]);
        // A work queue (no completions): after one success nothing new starts.
        let (create, _) = plan_pods(false, None, 3, 1, &[pod("a", None, true, 1)], &none);
        assert!(create.is_empty());
        let (create, _) = plan_pods(false, None, 3, 0, &[], &none);
        assert_eq!(create.len(), 3);
    }

    #[test]
    fn indexed_jobs_run_the_lowest_missing_indexes_once_each() {
        let done: BTreeSet<i32> = [0, 2].into_iter().collect();
        let active = [
            pod("one", Some(1), true, 1),
            pod("one-dup", Some(1), true, 2),
            pod("done", Some(2), true, 1),
            pod("stray", Some(9), true, 1),
        ];
        let (create, delete) = plan_pods(true, Some(6), 3, 2, &active, &done);
        assert_eq!(create, [Some(3), Some(4)]);
        assert_eq!(names(&delete), ["done", "stray", "one-dup"]);
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_six_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(5), Duration::from_secs(160));
        assert_eq!(backoff_delay(6), Duration::from_secs(320));
        assert_eq!(backoff_delay(7), BACKOFF_MAX);
        assert_eq!(backoff_delay(1000), BACKOFF_MAX);
        assert_eq!(backoff_remaining(0, Some(ts(100)), ts(100)), Duration::ZERO);
        assert_eq!(
            backoff_remaining(1, Some(ts(100)), ts(104)),
            Duration::from_secs(6)
        );
        assert_eq!(backoff_remaining(2, Some(ts(100)), ts(150)), Duration::ZERO);
        assert_eq!(backoff_remaining(3, None, ts(150)), Duration::ZERO);
    }

    #[test]
    fn completed_indexes_read_and_write_as_ranges() {
        let set = parse_indexes(Some("0-2,5,7-8"), 10);
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 7, 8]);
        assert_eq!(format_indexes(&set), "0-2,5,7-8");
        assert_eq!(format_indexes(&[0, 1].into_iter().collect()), "0-1");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        // Out of range indexes (completions lowered) and garbage are dropped.
        assert_eq!(format_indexes(&parse_indexes(Some("1-4,x,9"), 3)), "1-2");
    }

    fn failed_pod(code: i32, cond: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed",
                "conditions": cond.map(|c| vec![serde_json::json!({"type": c, "status": "True"})]),
                "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": code}}}]},
        }))
        .unwrap()
    }

    #[test]
    fn pod_failure_policy_rules_match_in_order() {
        let policy = PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    on_exit_codes: None,
                },
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: None,
                        operator: "In".into(),
                        values: vec![42],
                    }),
                    on_pod_conditions: None,
                },
                PodFailurePolicyRule {
                    action: "Count".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("main".into()),
                        operator: "NotIn".into(),
                        values: vec![42],
                    }),
                    on_pod_conditions: None,
                },
            ],
        };
        assert_eq!(
            match_policy(&policy, &failed_pod(42, None)),
            PolicyAction::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            )
        );
        assert_eq!(
            match_policy(&policy, &failed_pod(42, Some("DisruptionTarget"))),
            PolicyAction::Ignore
        );
        assert_eq!(
            match_policy(&policy, &failed_pod(1, None)),
            PolicyAction::Count
        );
    }
}
