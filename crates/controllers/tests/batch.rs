//! Jobs, CronJobs and the TTL of finished Jobs against the real API server and the real
//! job, cronjob and ttl-after-finished controllers. No kubelet runs: the tests finish pods
//! themselves by writing their status (phase and container exit codes), as a kubelet
//! would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, Cluster};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_controllers::Config;

async fn cluster() -> Cluster {
    Cluster::start_with(Config {
        controllers: vec!["job".into(), "cronjob".into(), "ttl-after-finished".into()],
        ..Default::default()
    })
    .await
}

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}},
    });
    for (k, v) in spec.as_object().into_iter().flatten() {
        j["spec"][k] = v.clone();
    }
    serde_json::from_value(j).unwrap()
}

async fn create(c: &Cluster, j: Job) -> Job {
    c.api::<Job>("default")
        .create(&PostParams::default(), &j)
        .await
        .unwrap()
}

/// The job's pods that have not ended (and are not being deleted).
async fn running_pods(c: &Cluster, name: &str) -> Vec<Pod> {
    let pods = c.api::<Pod>("default");
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
    let mut v: Vec<Pod> = pods
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
        .collect();
    v.sort_by_key(|p| p.name_any());
    v
}

async fn wait_pods(c: &Cluster, name: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} running pods of job {name}"), || async {
        let v = running_pods(c, name).await;
        (v.len() == n).then_some(v)
    })
    .await
}

/// Ends a pod as its kubelet would: phase, and the container's exit code.
async fn finish(c: &Cluster, pod: &Pod, code: i32) {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let now = Timestamp::now();
    let status = json!({"status": {"phase": phase, "containerStatuses": [{
        "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": if code == 0 {"Completed"} else {"Error"},
            "startedAt": now, "finishedAt": now}}}]}});
    c.api::<Pod>("default")
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
}

fn condition(j: &Job, type_: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn wait_condition(c: &Cluster, name: &str, type_: &str) -> (Job, (String, String)) {
    let jobs = c.api::<Job>("default");
    eventually(&format!("job {name} {type_}"), || async {
        let j = jobs.get(name).await.ok()?;
        let cond = condition(&j, type_)?;
        Some((j, cond))
    })
    .await
}

async fn events_of(c: &Cluster, name: &str) -> Vec<(String, String)> {
    let evs = c.api::<Event>("default");
    evs.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

async fn wait_event(c: &Cluster, name: &str, reason: &str) -> String {
    eventually(&format!("event {reason} on {name}"), || async {
        events_of(c, name)
            .await
            .into_iter()
            .find(|(r, _)| r == reason)
            .map(|(_, m)| m)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_parallel_pods_to_its_completions() {
    let c = cluster().await;
    create(&c, job("pi", json!({"completions": 3, "parallelism": 2}))).await;
    let pods = wait_pods(&c, "pi", 2).await;
    let p = &pods[0];
    assert!(p.name_any().starts_with("pi-"));
    let labels = p.labels();
    assert_eq!(labels.get("job-name").map(String::as_str), Some("pi"));
    assert!(labels.contains_key("batch.kubernetes.io/controller-uid"));
    assert!(p
        .finalizers()
        .iter()
        .any(|f| f == "batch.kubernetes.io/job-tracking"));
    assert_eq!(p.owner_references()[0].kind, "Job");

    finish(&c, &pods[0], 0).await;
    // The success is counted and a third pod replaces it (never more than 2 at once).
    let jobs = c.api::<Job>("default");
    eventually("one success counted", || async {
        let j = jobs.get("pi").await.ok()?;
        (j.status?.succeeded == Some(1)).then_some(())
    })
    .await;
    let pods = wait_pods(&c, "pi", 2).await;
    for p in &pods {
        finish(&c, p, 0).await;
    }
    let (j, (reason, _)) = wait_condition(&c, "pi", "Complete").await;
    assert_eq!(reason, "CompletionsReached");
    assert!(condition(&j, "SuccessCriteriaMet").is_some());
    let st = j.status.unwrap();
    assert_eq!(st.succeeded, Some(3));
    assert_eq!(st.active, Some(0));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    // Counted pods lose the tracking finalizer.
    let all = c
        .api::<Pod>("default")
        .list(&ListParams::default().labels("job-name=pi"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    assert!(all.items.iter().all(|p| p.finalizers().is_empty()));
    assert_eq!(wait_event(&c, "pi", "Completed").await, "Job completed");
    assert!(wait_event(&c, "pi", "SuccessfulCreate")
        .await
        .starts_with("Created pod: pi-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pods_are_retried_after_a_backoff_up_to_the_backoff_limit() {
    let c = cluster().await;
    create(&c, job("flaky", json!({"backoffLimit": 1}))).await;
    let pods = wait_pods(&c, "flaky", 1).await;
    finish(&c, &pods[0], 1).await;
    // The replacement comes after kube's 10 s backoff.
    let again = eventually_long(|| async {
        let v = running_pods(&c, "flaky").await;
        (v.len() == 1 && v[0].name_any() != pods[0].name_any()).then_some(v)
    })
    .await;
    finish(&c, &again[0], 1).await;
    let (j, (reason, message)) = wait_condition(&c, "flaky", "Failed").await;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(message, "Job has reached the specified backoff limit");
    assert!(condition(&j, "FailureTarget").is_some());
    assert_eq!(j.status.unwrap().failed, Some(2));
    assert_eq!(
        wait_event(&c, "flaky", "BackoffLimitExceeded").await,
        "Job has reached the specified backoff limit"
    );
}

/// `eventually` with room for one 10 s pod backoff on a loaded machine.
async fn eventually_long<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the retry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_runs_one_pod_per_index() {
    let c = cluster().await;
    create(
        &c,
        job(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    )
    .await;
    let pods = wait_pods(&c, "idx", 3).await;
    let mut by_index = std::collections::BTreeMap::new();
    for p in &pods {
        let i = p.annotations()["batch.kubernetes.io/job-completion-index"].clone();
        assert_eq!(p.labels()["batch.kubernetes.io/job-completion-index"], i);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        let env = spec.containers[0].env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
        assert!(p.name_any().starts_with(&format!("idx-{i}-")));
        by_index.insert(i, p.clone());
    }
    assert_eq!(
        by_index.keys().cloned().collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    finish(&c, &by_index["0"], 0).await;
    finish(&c, &by_index["2"], 0).await;
    let jobs = c.api::<Job>("default");
    eventually("indexes 0 and 2 completed", || async {
        let st = jobs.get("idx").await.ok()?.status?;
        (st.completed_indexes.as_deref() == Some("0,2") && st.succeeded == Some(2)).then_some(())
    })
    .await;
    // A failed index is run again by a new pod for the same index.
    finish(&c, &by_index["1"], 3).await;
    let again = eventually_long(|| async {
        let v = running_pods(&c, "idx").await;
        (v.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(
        again[0].annotations()["batch.kubernetes.io/job-completion-index"],
        "1"
    );
    finish(&c, &again[0], 0).await;
    let (j, _) = wait_condition(&c, "idx", "Complete").await;
    let st = j.status.unwrap();
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!((st.succeeded, st.failed), (Some(3), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_job_runs_no_pods_until_resumed() {
    let c = cluster().await;
    create(
        &c,
        job(
            "later",
            json!({"suspend": true, "parallelism": 2, "completions": 4}),
        ),
    )
    .await;
    let (j, (reason, message)) = wait_condition(&c, "later", "Suspended").await;
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("JobSuspended", "Job suspended")
    );
    assert!(j.status.unwrap().start_time.is_none());
    assert!(running_pods(&c, "later").await.is_empty());
    let jobs = c.api::<Job>("default");
    let resume = |s: bool| json!({"spec": {"suspend": s}});
    jobs.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(&resume(false)),
    )
    .await
    .unwrap();
    wait_pods(&c, "later", 2).await;
    eventually("the Suspended condition to turn False", || async {
        let j = jobs.get("later").await.ok()?;
        let st = j.status?;
        let c = st
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Suspended")?;
        (c.status == "False"
            && c.reason.as_deref() == Some("JobResumed")
            && st.start_time.is_some())
        .then_some(())
    })
    .await;
    // Suspending again deletes the running pods, without counting them as failed.
    jobs.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(&resume(true)),
    )
    .await
    .unwrap();
    wait_pods(&c, "later", 0).await;
    let (j, _) = wait_condition(&c, "later", "Suspended").await;
    let st = j.status.unwrap();
    assert_eq!(st.failed.unwrap_or(0), 0);
    eventually("active 0", || async {
        let st = jobs.get("later").await.ok()?.status?;
        (st.active == Some(0)).then_some(())
    })
    .await;
    assert!(wait_event(&c, "later", "SuccessfulDelete")
        .await
        .starts_with("Deleted pod: later-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_active_deadline_fails() {
    let c = cluster().await;
    create(&c, job("slow", json!({"activeDeadlineSeconds": 2}))).await;
    wait_pods(&c, "slow", 1).await;
    let (j, (reason, message)) = wait_condition(&c, "slow", "Failed").await;
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    let st = j.status.unwrap();
    assert_eq!((st.active, st.failed), (Some(0), Some(1)));
    assert!(running_pods(&c, "slow").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failure_policy_fails_the_job_on_an_exit_code() {
    let c = cluster().await;
    let policy = json!({"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    ]});
    create(
        &c,
        job(
            "strict",
            json!({"backoffLimit": 6, "podFailurePolicy": policy}),
        ),
    )
    .await;
    let pods = wait_pods(&c, "strict", 1).await;
    finish(&c, &pods[0], 42).await;
    let (j, (reason, message)) = wait_condition(&c, "strict", "Failed").await;
    assert_eq!(reason, "PodFailurePolicy");
    assert_eq!(
        message,
        format!(
            "Container main for pod default/{} failed with exit code 42 matching FailJob rule at index 0",
            pods[0].name_any()
        )
    );
    assert_eq!(j.status.unwrap().failed, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_after_its_ttl() {
    let c = cluster().await;
    create(&c, job("brief", json!({"ttlSecondsAfterFinished": 1}))).await;
    let pods = wait_pods(&c, "brief", 1).await;
    finish(&c, &pods[0], 0).await;
    wait_condition(&c, "brief", "Complete").await;
    let jobs = c.api::<Job>("default");
    eventually("the expired job to be deleted", || async {
        jobs.get_opt("brief").await.unwrap().is_none().then_some(())
    })
    .await;
}

fn cronjob(name: &str, spec: serde_json::Value) -> CronJob {
    let mut cj = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {"schedule": "* * * * *", "jobTemplate": {
            "metadata": {"labels": {"app": "tick"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}}}}},
    });
    for (k, v) in spec.as_object().into_iter().flatten() {
        cj["spec"][k] = v.clone();
    }
    serde_json::from_value(cj).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_runs_its_missed_schedule_as_a_job() {
    let c = cluster().await;
    let cjs = c.api::<CronJob>("default");
    // Created suspended, with a last run five minutes ago: once resumed, the run of the
    // last minute is due at once (a missed schedule), so the test need not wait for a
    // minute to turn.
    cjs.create(
        &PostParams::default(),
        &cronjob("tick", json!({"suspend": true})),
    )
    .await
    .unwrap();
    let past = Timestamp::from_second(Timestamp::now().as_second() - 300).unwrap();
    cjs.patch_status(
        "tick",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"lastScheduleTime": past}})),
    )
    .await
    .unwrap();
    cjs.patch(
        "tick",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    let jobs = c.api::<Job>("default");
    let job = eventually("the CronJob's job", || async {
        let l = jobs
            .list(&ListParams::default().labels("app=tick"))
            .await
            .ok()?;
        l.items.into_iter().next()
    })
    .await;
    let minutes: i64 = job
        .name_any()
        .strip_prefix("tick-")
        .unwrap()
        .parse()
        .unwrap();
    let now_minutes = Timestamp::now().as_second() / 60;
    assert!(
        (now_minutes - 1..=now_minutes).contains(&minutes),
        "{minutes} vs {now_minutes}"
    );
    assert_eq!(job.owner_references()[0].kind, "CronJob");
    assert!(job
        .annotations()
        .get("batch.kubernetes.io/cronjob-scheduled-timestamp")
        .is_some_and(|t| t.ends_with('Z')));
    let cj = eventually("status.active", || async {
        let cj = cjs.get("tick").await.ok()?;
        let st = cj.status.clone()?;
        (st.active?.len() == 1 && st.last_schedule_time.is_some()).then_some(cj)
    })
    .await;
    assert_eq!(
        cj.status.unwrap().last_schedule_time.unwrap().0.as_second(),
        minutes * 60
    );
    assert_eq!(
        wait_event(&c, "tick", "SuccessfulCreate").await,
        format!("Created job {}", job.name_any())
    );
    // The Job's pod runs and succeeds; the CronJob notices.
    let pods = wait_pods(&c, &job.name_any(), 1).await;
    finish(&c, &pods[0], 0).await;
    let st = eventually("the CronJob to see its job complete", || async {
        let st = cjs.get("tick").await.ok()?.status?;
        (st.active.is_none() && st.last_successful_time.is_some()).then_some(st)
    })
    .await;
    assert!(st.last_successful_time.is_some());
    assert!(wait_event(&c, "tick", "SawCompletedJob")
        .await
        .ends_with("condition: Complete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_history_limits_delete_the_oldest_finished_jobs() {
    let c = cluster().await;
    let cjs = c.api::<CronJob>("default");
    let cj = cjs
        .create(
            &PostParams::default(),
            &cronjob(
                "hist",
                json!({"suspend": true, "successfulJobsHistoryLimit": 1}),
            ),
        )
        .await
        .unwrap();
    // Two finished Jobs of the CronJob (as if from earlier runs).
    let owner = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "hist",
        "uid": cj.uid().unwrap(), "controller": true}]);
    for (name, start) in [("hist-1", 100), ("hist-2", 200)] {
        let mut j = job(name, json!({}));
        j.metadata.owner_references = serde_json::from_value(owner.clone()).unwrap();
        let j = create(&c, j).await;
        let t = Timestamp::from_second(1_700_000_000 + start).unwrap();
        let status = json!({"status": {"startTime": t, "completionTime": t, "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": t},
                {"type": "Complete", "status": "True", "lastTransitionTime": t}]}});
        c.api::<Job>("default")
            .patch_status(
                &j.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
    }
    let jobs = c.api::<Job>("default");
    eventually("the older job to be deleted", || async {
        let gone = jobs.get_opt("hist-1").await.unwrap().is_none();
        let kept = jobs.get_opt("hist-2").await.unwrap().is_some();
        (gone && kept).then_some(())
    })
    .await;
    assert_eq!(
        wait_event(&c, "hist", "SuccessfulDelete").await,
        "Deleted job hist-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_schedules_and_time_zones() {
    let c = Cluster::server_only().await;
    let cjs: Api<CronJob> = c.api("default");
    let refused = |cj: CronJob| {
        let cjs = cjs.clone();
        async move {
            match cjs.create(&PostParams::default(), &cj).await {
                Err(kube::Error::Api(s)) => (s.code, s.message),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    };
    let (code, msg) = refused(cronjob("bad", json!({"schedule": "* * *"}))).await;
    assert_eq!(code, 422);
    assert!(
        msg.contains(
            "spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]"
        ),
        "{msg}"
    );
    let (code, msg) = refused(cronjob("mars", json!({"timeZone": "Mars/Phobos"}))).await;
    assert_eq!(code, 422);
    assert!(
        msg.contains(
            "spec.timeZone: Invalid value: \"Mars/Phobos\": unknown time zone Mars/Phobos"
        ),
        "{msg}"
    );
    let (_, msg) = refused(cronjob("tz", json!({"schedule": "TZ=UTC 0 * * * *"}))).await;
    assert!(
        msg.contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        "{msg}"
    );
    cjs.create(
        &PostParams::default(),
        &cronjob(
            "good",
            json!({"schedule": "@hourly", "timeZone": "Europe/Paris"}),
        ),
    )
    .await
    .unwrap();
}

/// A CronJob with a still-running Job from its previous run, whose next run is due now.
async fn cronjob_with_running_job(c: &Cluster, name: &str, policy: &str) -> Job {
    let cjs = c.api::<CronJob>("default");
    let cj = cjs
        .create(
            &PostParams::default(),
            &cronjob(name, json!({"suspend": true, "concurrencyPolicy": policy})),
        )
        .await
        .unwrap();
    let mut j = job(&format!("{name}-1"), json!({}));
    j.metadata.owner_references = serde_json::from_value(json!([{"apiVersion": "batch/v1",
        "kind": "CronJob", "name": name, "uid": cj.uid().unwrap(), "controller": true}]))
    .unwrap();
    let running = create(c, j).await;
    let past = Timestamp::from_second(Timestamp::now().as_second() - 300).unwrap();
    let status = json!({"status": {"lastScheduleTime": past, "active": [{"apiVersion": "batch/v1",
        "kind": "Job", "name": running.name_any(), "namespace": "default", "uid": running.uid()}]}});
    cjs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    cjs.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_a_run_while_one_is_active_and_replace_replaces_it() {
    let c = cluster().await;
    let jobs = c.api::<Job>("default");
    let cjs = c.api::<CronJob>("default");

    cronjob_with_running_job(&c, "forbid", "Forbid").await;
    assert_eq!(
        wait_event(&c, "forbid", "JobAlreadyActive").await,
        "Not starting job because prior execution is running and concurrency policy is Forbid"
    );
    let l = jobs.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        l.items
            .iter()
            .filter(|j| j.name_any().starts_with("forbid-"))
            .count(),
        1
    );

    let old = cronjob_with_running_job(&c, "replace", "Replace").await;
    let new = eventually("the replacing job", || async {
        let st = cjs.get("replace").await.ok()?.status?;
        let active = st.active?;
        (active.len() == 1 && active[0].name != old.metadata.name).then(|| active[0].clone())
    })
    .await;
    assert!(jobs
        .get_opt(new.name.as_deref().unwrap())
        .await
        .unwrap()
        .is_some());
    eventually("the replaced job to go", || async {
        let j = jobs.get_opt(&old.name_any()).await.unwrap();
        j.is_none_or(|j| j.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    assert_eq!(
        wait_event(&c, "replace", "SuccessfulDelete").await,
        format!("Deleted job {}", old.name_any())
    );
}
