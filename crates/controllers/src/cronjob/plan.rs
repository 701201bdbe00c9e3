//! The CronJob controller's decisions as a pure function of the CronJob, its Jobs and
//! the time (kube's `syncCronJob` and `cleanupFinishedJobs`), so every rule — missed
//! runs, starting deadlines, concurrency policies, history limits — is tested with fixed
//! times and no cluster.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use skiff_api::cron::{self, Schedule};

use crate::events::EventType;
use crate::util;

/// The annotation with a Job's scheduled time (RFC 3339 in the CronJob's zone).
pub(crate) const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// kube wakes up this long after a scheduled time, so the time has surely passed.
const NEXT_DELTA: Duration = Duration::from_millis(100);
/// Past this many missed runs kube warns instead of counting them.
const TOO_MANY_MISSED: i64 = 100;

/// What a sync of one CronJob does.
#[derive(Default)]
pub(crate) struct Plan {
    /// The status to write (when it differs from the stored one).
    pub status: CronJobStatus,
    pub events: Vec<(EventType, &'static str, String)>,
    /// Running Jobs the new run replaces (Replace); the run waits until they are gone.
    pub replace: Vec<Arc<Job>>,
    /// Finished Jobs beyond the history limits.
    pub delete: Vec<Arc<Job>>,
    /// The Job to create for a scheduled time (its ref goes to `active` once created).
    pub create: Option<Job>,
    pub requeue: Option<Duration>,
}

fn is_finished(job: &Job) -> Option<&'static str> {
    crate::job::finished_condition(job).map(|c| {
        if c.type_ == "Complete" {
            "Complete"
        } else {
            "Failed"
        }
    })
}

/// The reference kept in `status.active`.
pub(crate) fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`: one name per run, so a run is
/// never created twice.
pub(crate) fn job_name(cj: &CronJob, scheduled: Timestamp) -> String {
    format!("{}-{}", cj.name_any(), scheduled.as_second().div_euclid(60))
}

/// The schedule and the zone it runs in (the timeZone field, else a TZ= prefix, else
/// UTC). Err is the event to record.
fn schedule_of(cj: &CronJob) -> Result<(Schedule, jiff::tz::TimeZone), (&'static str, String)> {
    let spec = cj.spec.as_ref();
    let text = spec.map(|s| s.schedule.as_str()).unwrap_or_default();
    let zone_field = spec.and_then(|s| s.time_zone.as_deref());
    if let Some(z) = zone_field {
        if let Err(e) = cron::load_location(z) {
            return Err(("UnknownTimeZone", format!("invalid timeZone: {z:?}: {e}")));
        }
    }
    let sched = cron::parse(text).map_err(|e| {
        (
            "UnparseableSchedule",
            format!("unparseable schedule: {text:?} : {e}"),
        )
    })?;
    let zone = zone_field.or(sched.zone()).unwrap_or_default();
    let tz = cron::load_location(zone).map_err(|e| {
        (
            "UnknownTimeZone",
            format!("invalid timeZone: {zone:?}: {e}"),
        )
    })?;
    Ok((sched, tz))
}

enum Missed {
    None,
    Few,
    Many,
}

/// kube's `mostRecentScheduleTime`: the earliest time considered, the latest scheduled
/// time not after `now` (if any since then), and how many were missed.
fn most_recent(
    cj: &CronJob,
    sched: &Schedule,
    tz: &jiff::tz::TimeZone,
    now: Timestamp,
    with_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map_or(created, |t| t.0);
    if with_deadline {
        if let Some(d) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds) {
            let deadline = Timestamp::from_second(now.as_second() - d).unwrap_or(now);
            if deadline > earliest {
                earliest = deadline;
            }
        }
    }
    let never = || "no schedule time within five years".to_string();
    let t1 = sched.next(earliest, tz).ok_or_else(never)?;
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let t2 = sched.next(t1, tz).ok_or_else(never)?;
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2.as_second() - t1.as_second();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let missed = (now.as_second() - t1.as_second()) / between + 1;
    // Start one interval before the estimate and let the schedule find the exact time.
    let from = t1.as_second() + (missed - 2) * between;
    let mut t = Timestamp::from_second(from).unwrap_or(t1);
    let mut latest = None;
    while let Some(n) = sched.next(t, tz).filter(|n| *n <= now) {
        latest = Some(n);
        t = n;
    }
    let kind = if missed > TOO_MANY_MISSED {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, latest, kind))
}

/// kube's `nextScheduleTimeDuration`: how long until the next run is due.
fn next_in(
    cj: &CronJob,
    sched: &Schedule,
    tz: &jiff::tz::TimeZone,
    now: Timestamp,
) -> Option<Duration> {
    let from = match most_recent(cj, sched, tz, now, false) {
        Err(_) => now,
        Ok((_, Some(t), _)) => t,
        Ok((earliest, None, _)) => earliest,
    };
    let next = sched.next(from, tz)?;
    let ms = next.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0)) + NEXT_DELTA)
}

/// The Job of the run at `scheduled` (kube's `getJobFromTemplate2`).
fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &jiff::tz::TimeZone) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let at = scheduled.to_zoned(tz.clone());
    annotations.insert(
        SCHEDULED_ANNOTATION.into(),
        at.strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z"),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![util::controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Decides one sync of `cj` given its Jobs (those it controls) at `now`. `missing` are
/// active refs whose Job is known to be gone (not cached and not found by the API).
pub(crate) fn plan(cj: &CronJob, jobs: &[Arc<Job>], missing: &[String], now: Timestamp) -> Plan {
    let mut p = Plan {
        status: cj.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    let spec = cj.spec.clone().unwrap_or_default();
    let in_active = |st: &CronJobStatus, uid: &str| {
        st.active
            .iter()
            .flatten()
            .any(|r| r.uid.as_deref() == Some(uid))
    };
    for j in jobs {
        let uid = j.metadata.uid.as_deref().unwrap_or_default();
        let found = in_active(&p.status, uid);
        let finished = is_finished(j);
        if !found && finished.is_none() {
            p.events.push((
                EventType::Warning,
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    j.name_any()
                ),
            ));
        } else if let (true, Some(cond)) = (found, finished) {
            remove_active(&mut p.status, uid);
            p.events.push((
                EventType::Normal,
                "SawCompletedJob",
                format!("Saw completed job: {}, condition: {cond}", j.name_any()),
            ));
        }
        if finished == Some("Complete") {
            let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
            let last = p.status.last_successful_time.as_ref().map(|t| t.0);
            if let Some(d) = done {
                if last.is_none_or(|l| d.0 > l) {
                    p.status.last_successful_time = Some(d);
                }
            }
        }
    }
    for name in missing {
        p.events.push((
            EventType::Normal,
            "MissingJob",
            format!("Active job went missing: {name}"),
        ));
        if let Some(active) = p.status.active.as_mut() {
            active.retain(|r| r.name.as_deref() != Some(name));
        }
    }
    if util::is_deleting(&cj.metadata) {
        return p;
    }
    cleanup_history(cj, jobs, &mut p);
    if p.status.active.as_ref().is_some_and(Vec::is_empty) {
        p.status.active = None;
    }
    let (sched, tz) = match schedule_of(cj) {
        Ok(s) => s,
        Err((reason, message)) => {
            p.events.push((EventType::Warning, reason, message));
            return p;
        }
    };
    if spec.suspend == Some(true) {
        return p;
    }
    let scheduled = match most_recent(cj, &sched, &tz, now, true) {
        Err(e) => {
            p.events.push((
                EventType::Warning,
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            ));
            return p;
        }
        Ok((_, None, _)) => {
            p.requeue = next_in(cj, &sched, &tz, now);
            return p;
        }
        Ok((_, Some(t), missed)) => {
            if matches!(missed, Missed::Many) {
                p.events.push((
                    EventType::Warning,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
                ));
            }
            t
        }
    };
    p.requeue = next_in(cj, &sched, &tz, now);
    if let Some(d) = spec.starting_deadline_seconds {
        if scheduled.as_second() + d < now.as_second() {
            p.events.push((
                EventType::Warning,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled
                        .to_zoned(jiff::tz::TimeZone::UTC)
                        .strftime("%a, %d %b %Y %H:%M:%S %z")
                ),
            ));
            return p;
        }
    }
    let name = job_name(cj, scheduled);
    let already = p
        .status
        .active
        .iter()
        .flatten()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || p.status.last_schedule_time.as_ref().map(|t| t.0) == Some(scheduled);
    if already {
        return p;
    }
    let active_count = p.status.active.as_ref().map_or(0, Vec::len);
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if active_count > 0 => {
            p.events.push((
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return p;
        }
        Some("Replace") => {
            for r in p.status.active.iter().flatten() {
                if let Some(j) = jobs.iter().find(|j| j.metadata.uid == r.uid) {
                    p.replace.push(j.clone());
                }
            }
        }
        _ => {}
    }
    p.create = Some(job_for(cj, scheduled, &tz));
    p
}

fn remove_active(st: &mut CronJobStatus, uid: &str) {
    if let Some(a) = st.active.as_mut() {
        a.retain(|r| r.uid.as_deref() != Some(uid));
    }
}

/// kube's `cleanupFinishedJobs`: the oldest finished Jobs beyond the history limits.
fn cleanup_history(cj: &CronJob, jobs: &[Arc<Job>], p: &mut Plan) {
    let spec = cj.spec.as_ref();
    for (cond, limit) in [
        (
            "Complete",
            spec.and_then(|s| s.successful_jobs_history_limit),
        ),
        ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
    ] {
        let Some(limit) = limit else { continue };
        let mut finished: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| is_finished(j) == Some(cond))
            .collect();
        let extra = finished
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        if extra == 0 {
            continue;
        }
        // By start time (unstarted last), then name.
        finished.sort_by_key(|j| {
            let start = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            (start.is_none(), start, j.name_any())
        });
        for j in finished.into_iter().take(extra) {
            remove_active(&mut p.status, j.metadata.uid.as_deref().unwrap_or_default());
            p.delete.push(j.clone());
        }
    }
}

/// The status with the just-created Job in `active` and its run as lastScheduleTime.
pub(crate) fn record_created(st: &mut CronJobStatus, job: &Job) {
    st.active.get_or_insert_with(Vec::new).push(job_ref(job));
    if let Some(t) = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULED_ANNOTATION))
        .and_then(|v| v.parse::<Timestamp>().ok())
    {
        st.last_schedule_time = Some(Time(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(spec: serde_json::Value, created: &str) -> CronJob {
        let mut cj = json!({
            "metadata": {"name": "cj", "namespace": "ns", "uid": "cj-uid", "creationTimestamp": created},
            "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "suspend": false,
                "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                "jobTemplate": {"metadata": {"labels": {"app": "x"}}, "spec": {"template": {"spec": {"containers": []}}}}},
        });
        for (k, v) in spec.as_object().into_iter().flatten() {
            cj["spec"][k] = v.clone();
        }
        serde_json::from_value(cj).unwrap()
    }

    fn job(name: &str, uid: &str, finished: Option<(&str, &str)>) -> Arc<Job> {
        let conditions = finished.map(|(c, _)| vec![json!({"type": c, "status": "True"})]);
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": uid},
                "status": {"conditions": conditions,
                    "startTime": finished.map(|(_, t)| t),
                    "completionTime": finished.filter(|(c, _)| *c == "Complete").map(|(_, t)| t)},
            }))
            .unwrap(),
        )
    }

    fn with_active(mut cj: CronJob, jobs: &[&Arc<Job>], last: &str) -> CronJob {
        cj.status = Some(CronJobStatus {
            active: Some(jobs.iter().map(|j| job_ref(j)).collect()),
            last_schedule_time: Some(Time(ts(last))),
            last_successful_time: None,
        });
        cj
    }

    fn reasons(p: &Plan) -> Vec<&'static str> {
        p.events.iter().map(|e| e.1).collect()
    }

    #[test]
    fn a_due_run_creates_its_job_and_waits_for_the_next() {
        let cj = cronjob(json!({}), "2024-01-01T10:01:00Z");
        // Not yet due: wait until 10:05 (plus kube's 100 ms).
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:02:00Z"));
        assert!(p.create.is_none());
        assert_eq!(p.requeue, Some(Duration::from_millis(180_100)));
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:05:10Z"));
        let job = p.create.unwrap();
        // 10:05 UTC is minute 28401725 since the epoch.
        assert_eq!(job.name_any(), "cj-28401725");
        assert_eq!(
            job.annotations()
                .get(SCHEDULED_ANNOTATION)
                .map(String::as_str),
            Some("2024-01-01T10:05:00Z")
        );
        assert_eq!(job.labels().get("app").map(String::as_str), Some("x"));
        assert_eq!(job.owner_references()[0].uid, "cj-uid");
        assert_eq!(p.requeue, Some(Duration::from_millis(290_100)));
        let mut st = CronJobStatus::default();
        record_created(&mut st, &job);
        assert_eq!(
            st.last_schedule_time,
            Some(Time(ts("2024-01-01T10:05:00Z")))
        );
    }

    #[test]
    fn missed_runs_start_the_latest_one_unless_past_the_starting_deadline() {
        let cj = cronjob(json!({}), "2024-01-01T09:00:00Z");
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:07:00Z"));
        assert_eq!(p.create.unwrap().name_any(), "cj-28401725");
        let cj = cronjob(
            json!({"startingDeadlineSeconds": 60}),
            "2024-01-01T09:00:00Z",
        );
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:07:00Z"));
        assert!(p.create.is_none());
        assert!(p.events.is_empty(), "the deadline hides runs older than it");
        let cj = cronjob(
            json!({"startingDeadlineSeconds": 40}),
            "2024-01-01T09:00:00Z",
        );
        assert!(plan(&cj, &[], &[], ts("2024-01-01T10:05:30Z"))
            .create
            .is_some());
        // Years of missed minutes: a warning, and still the latest run.
        let cj = cronjob(json!({"schedule": "* * * * *"}), "2020-01-01T00:00:00Z");
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:05:30Z"));
        assert_eq!(reasons(&p), ["TooManyMissedTimes"]);
        assert_eq!(p.create.unwrap().name_any(), "cj-28401725");
    }

    #[test]
    fn a_run_already_made_is_not_made_again() {
        let cj = cronjob(json!({}), "2024-01-01T09:00:00Z");
        let j = job("cj-28401725", "j1", None);
        let cj = with_active(cj, &[&j], "2024-01-01T10:05:00Z");
        let p = plan(&cj, &[j], &[], ts("2024-01-01T10:06:00Z"));
        assert!(p.create.is_none());
        assert!(p.events.is_empty());
    }

    #[test]
    fn concurrency_policies() {
        let running = job("cj-28401725", "j1", None);
        let at = ts("2024-01-01T10:10:01Z");
        for (policy, creates, deletes, events) in [
            ("Allow", true, 0, vec![]),
            ("Forbid", false, 0, vec!["JobAlreadyActive"]),
            ("Replace", true, 1, vec![]),
        ] {
            let cj = cronjob(json!({"concurrencyPolicy": policy}), "2024-01-01T09:00:00Z");
            let cj = with_active(cj, &[&running], "2024-01-01T10:05:00Z");
            let p = plan(&cj, std::slice::from_ref(&running), &[], at);
            assert_eq!(p.create.is_some(), creates, "{policy}");
            assert_eq!(p.replace.len(), deletes, "{policy}");
            assert_eq!(reasons(&p), events, "{policy}");
        }
    }

    #[test]
    fn finished_jobs_leave_active_and_old_ones_go() {
        let cj = cronjob(
            json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}),
            "2024-01-01T09:00:00Z",
        );
        let a = job("cj-1", "a", Some(("Complete", "2024-01-01T09:05:00Z")));
        let b = job("cj-2", "b", Some(("Complete", "2024-01-01T09:10:00Z")));
        let c = job("cj-3", "c", Some(("Failed", "2024-01-01T09:15:00Z")));
        let cj = with_active(cj, &[&b], "2024-01-01T09:10:00Z");
        let p = plan(&cj, &[a, b, c], &[], ts("2024-01-01T09:11:00Z"));
        assert_eq!(reasons(&p), ["SawCompletedJob"]);
        assert_eq!(
            p.events[0].2,
            "Saw completed job: cj-2, condition: Complete"
        );
        assert!(p.status.active.is_none());
        assert_eq!(
            p.status.last_successful_time,
            Some(Time(ts("2024-01-01T09:10:00Z")))
        );
        let gone: Vec<String> = p.delete.iter().map(|j| j.name_any()).collect();
        assert_eq!(gone, ["cj-1", "cj-3"]);
    }

    #[test]
    fn unexpected_and_missing_jobs_and_bad_schedules_are_reported() {
        let cj = cronjob(json!({"suspend": true}), "2024-01-01T09:00:00Z");
        let stranger = job("other", "x", None);
        let p = plan(
            &cj,
            &[stranger],
            &["cj-5".into()],
            ts("2024-01-01T10:00:00Z"),
        );
        assert_eq!(reasons(&p), ["UnexpectedJob", "MissingJob"]);
        assert!(p.create.is_none(), "suspended");
        let cj = cronjob(json!({"schedule": "* * *"}), "2024-01-01T09:00:00Z");
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:00:00Z"));
        assert_eq!(reasons(&p), ["UnparseableSchedule"]);
        assert_eq!(
            p.events[0].2,
            "unparseable schedule: \"* * *\" : expected exactly 5 fields, found 3: [* * *]"
        );
        let cj = cronjob(json!({"schedule": "0 0 31 2 *"}), "2024-01-01T09:00:00Z");
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:00:00Z"));
        assert_eq!(reasons(&p), ["InvalidSchedule"]);
        let cj = cronjob(json!({"timeZone": "Mars/Phobos"}), "2024-01-01T09:00:00Z");
        let p = plan(&cj, &[], &[], ts("2024-01-01T10:00:00Z"));
        assert_eq!(reasons(&p), ["UnknownTimeZone"]);
    }

    #[test]
    fn schedules_run_in_their_time_zone() {
        let cj = cronjob(
            json!({"schedule": "0 9 * * *", "timeZone": "Europe/Paris"}),
            "2024-01-01T00:00:00Z",
        );
        let p = plan(&cj, &[], &[], ts("2024-01-01T08:00:30Z"));
        let job = p.create.unwrap();
        assert_eq!(
            job.annotations()
                .get(SCHEDULED_ANNOTATION)
                .map(String::as_str),
            Some("2024-01-01T09:00:00+01:00")
        );
        assert_eq!(
            job.name_any(),
            format!("cj-{}", ts("2024-01-01T08:00:00Z").as_second() / 60)
        );
    }
}
