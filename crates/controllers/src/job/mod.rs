//! The Job controller, as kube-controller-manager's `job` controller: runs a Job's pods
//! to `completions` successes with at most `parallelism` at once (NonIndexed, or Indexed
//! with one success per index), retries failures with exponential backoff up to
//! `backoffLimit`, honours `activeDeadlineSeconds`, `podFailurePolicy` and `suspend`,
//! and reports `status` and the conditions kube reports.
//!
//! Tracking with finalizers (kube ≥ 1.26): every pod is created with the
//! `batch.kubernetes.io/job-tracking` finalizer, so it cannot vanish before it is counted.
//! A terminated pod's UID is first written to `status.uncountedTerminatedPods` (Indexed
//! successes to `status.completedIndexes`), then its finalizer is removed, then it is
//! moved to the `succeeded`/`failed` counters. A crash between any two steps loses or
//! double-counts nothing. Pods the controller deletes itself (suspend, excess, a finished
//! Job's leftovers) lose the finalizer first and are not counted, except when the Job is
//! failing: then every remaining pod counts as failed, as kube counts them.
//!
//! Ending (kube ≥ 1.31): a Job first gets `FailureTarget` (or `SuccessCriteriaMet`), its
//! active pods are deleted, and once none is left terminating it gets the terminal
//! `Failed` (or `Complete`, with `completionTime`) condition and its Event.

mod logic;
mod pods;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::expectations::Expectations;
use crate::informer::{key_of, split_key, Change, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{self, ApiError};
use crate::{Context, Recorder};

use logic::PolicyAction;

/// The finalizer that keeps a Job's pod until the Job has counted it.
pub(crate) const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// kube's burst of pod creates per sync.
const MAX_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("creating pods for job {job}: {failed} of them were refused")]
    Create { job: String, failed: usize },
}

/// Failures since the Job's last success, for the backoff between recreations (kept in
/// memory, as kube's podBackoffStore).
#[derive(Default, Clone, Copy)]
struct BackoffRecord {
    failures: u32,
    last_failure: Option<Timestamp>,
}

struct JobController {
    ctx: Context,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    recorder: Recorder,
    expectations: Arc<Expectations>,
    backoff: Mutex<HashMap<String, BackoffRecord>>,
    /// The resourceVersion of each Job's last status write: a cache older than it is
    /// stale (its update event is on the way), and acting on it could repeat work.
    written: Mutex<HashMap<String, u64>>,
    /// Pods whose tracking finalizer was removed (and so were counted) but which the
    /// pod cache may still show with it: never counted twice.
    released: Mutex<HashMap<String, HashSet<String>>>,
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let jobs = ctx.informers.informer::<Job>();
    let pods = ctx.informers.informer::<Pod>();
    let queue = crate::Queue::new();
    let expectations = Arc::new(Expectations::new());
    {
        let q = queue.clone();
        jobs.on_change(move |ch| q.add(key_of(&**ch.object())));
    }
    {
        let (q, exp) = (queue.clone(), expectations.clone());
        pods.on_change(move |ch| {
            let pod = ch.object();
            let Some(key) = job_key_of(pod) else { return };
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            match ch {
                Change::Added(_) => exp.creation_observed(&key),
                Change::Deleted(_) => exp.deletion_observed(&key, uid),
                Change::Updated { old, new } => {
                    if new.metadata.deletion_timestamp.is_some()
                        && old.metadata.deletion_timestamp.is_none()
                    {
                        exp.deletion_observed(&key, uid);
                    }
                }
            }
            q.add(key);
        });
    }
    let ready = {
        let (j, p) = (jobs.clone(), pods.clone());
        async move {
            j.synced().await;
            p.synced().await;
        }
    };
    let c = JobController {
        recorder: ctx.events.recorder("job-controller"),
        ctx: ctx.clone(),
        jobs,
        pods,
        expectations,
        backoff: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        released: Mutex::new(HashMap::new()),
    };
    Some(runner::spawn(
        Arc::new(c),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

/// The queue key of the Job controlling `pod`, if one does.
fn job_key_of(pod: &Pod) -> Option<String> {
    let r = util::controller_of(&pod.metadata)?;
    if r.kind != "Job" || !r.api_version.starts_with("batch/") {
        return None;
    }
    Some(format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        r.name
    ))
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == TRACKING_FINALIZER))
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has its terminal condition (kube's `IsJobFinished`).
pub(crate) fn finished_condition(job: &Job) -> Option<&JobCondition> {
    let st = job.status.as_ref()?;
    condition(st, "Complete").or_else(|| condition(st, "Failed"))
}

/// Sets (or flips) a condition, keeping its transition time when the status holds.
fn set_condition(
    st: &mut JobStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    let now = Time(now);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(now.clone());
        }
        c.status = status.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message.to_string());
        c.last_probe_time = Some(now);
        return;
    }
    conds.push(JobCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
}

/// What ends the Job, once decided.
#[derive(Clone)]
enum Ending {
    Complete,
    Failed { reason: String, message: String },
}

impl JobController {
    fn job_api(&self, ns: &str) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn pod_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn backoff_of(&self, key: &str) -> BackoffRecord {
        self.backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or_default()
    }

    fn set_backoff(&self, key: &str, r: Option<BackoffRecord>) {
        let mut m = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match r {
            Some(r) => m.insert(key.to_string(), r),
            None => m.remove(key),
        };
    }

    async fn write_status(&self, key: &str, job: &Job, status: JobStatus) -> Result<Job, ApiError> {
        let mut j = job.clone();
        j.status = Some(status);
        let ns = job.namespace().unwrap_or_default();
        let written = self
            .job_api(&ns)
            .replace_status(&job.name_any(), &PostParams::default(), &j)
            .await
            .map_err(|e| ApiError::new("update status of job", job.name_any(), e))?;
        if let Some(rv) = rv_of(&written) {
            lock(&self.written).insert(key.to_string(), rv);
        }
        Ok(written)
    }

    /// Forgets what is remembered of a Job.
    fn forget(&self, key: &str) {
        self.expectations.delete(key);
        self.set_backoff(key, None);
        lock(&self.written).remove(key);
        lock(&self.released).remove(key);
    }

    async fn sync(&self, key: &str, job: Arc<Job>) -> Result<Action, JobError> {
        let now = self.ctx.now();
        let ns = job.namespace().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let spec_of = job.clone();
        let Some(spec) = spec_of.spec.as_ref() else {
            return Ok(Action::Done);
        };
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let suspended = spec.suspend == Some(true);
        let backoff_limit = i64::from(spec.backoff_limit.unwrap_or(6));
        let on_failure = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure");

        if lock(&self.written)
            .get(key)
            .is_some_and(|w| rv_of(&job).is_some_and(|rv| rv < *w))
        {
            // Our own last write has not reached the cache yet; its event will requeue.
            return Ok(Action::Done);
        }
        let mut pods: Vec<Arc<Pod>> = Vec::new();
        self.pods.for_each(Some(&ns), |p| {
            if util::is_controlled_by(&p.metadata, &uid) {
                pods.push(p.clone());
            }
        });
        // Released pods the cache now shows without the finalizer need no guard.
        let already_released: HashSet<String> = {
            let mut r = lock(&self.released);
            let set = r.entry(key.to_string()).or_default();
            set.retain(|u| {
                pods.iter()
                    .any(|p| p.metadata.uid.as_deref() == Some(u.as_str()) && has_finalizer(p))
            });
            set.clone()
        };
        let original = job.status.clone().unwrap_or_default();
        let mut st = original.clone();
        let unc = st.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_succ: BTreeSet<String> =
            unc.succeeded.unwrap_or_default().into_iter().collect();
        let mut unc_fail: BTreeSet<String> = unc.failed.unwrap_or_default().into_iter().collect();
        let mut done_idx =
            logic::parse_indexes(st.completed_indexes.as_deref(), completions.unwrap_or(0));

        // What the Job already decided (kube ≥ 1.31 keeps it as a condition).
        let mut ending = if let Some(c) = condition(&st, "FailureTarget") {
            Some(Ending::Failed {
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            })
        } else if condition(&st, "SuccessCriteriaMet").is_some() {
            Some(Ending::Complete)
        } else {
            None
        };

        // 1. Newly terminated pods (policy first: a FailJob match ends the Job).
        let mut record = BackoffRecord {
            ..self.backoff_of(key)
        };
        let mut to_release: Vec<Arc<Pod>> = Vec::new();
        let mut newly = false;
        let mut fail_job: Option<String> = None;
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            let puid = p.metadata.uid.clone().unwrap_or_default();
            if already_released.contains(&puid) {
                continue;
            }
            if unc_succ.contains(&puid) || unc_fail.contains(&puid) {
                to_release.push(p.clone());
                continue;
            }
            if util::phase(p) == "Succeeded" {
                if indexed {
                    if let Some(i) = logic::pod_index(p).filter(|i| Some(*i) < completions) {
                        newly |= done_idx.insert(i);
                    }
                } else {
                    unc_succ.insert(puid);
                    newly = true;
                }
                record.failures = 0;
                to_release.push(p.clone());
            } else if logic::is_pod_failed(p, &job) {
                let action = match &spec.pod_failure_policy {
                    Some(policy) if util::phase(p) == "Failed" => logic::match_policy(policy, p),
                    _ => PolicyAction::Count,
                };
                match action {
                    PolicyAction::Ignore => {}
                    PolicyAction::FailJob(m) => {
                        fail_job.get_or_insert(m);
                        unc_fail.insert(puid);
                    }
                    PolicyAction::Count => {
                        record.failures += 1;
                        let t = logic::finish_time(p, now);
                        record.last_failure = Some(record.last_failure.map_or(t, |l| l.max(t)));
                        unc_fail.insert(puid);
                    }
                }
                newly = true;
                to_release.push(p.clone());
            }
        }
        self.set_backoff(key, Some(record));

        let active_pods: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| util::is_active(p))
            .cloned()
            .collect();
        let succeeded = if indexed {
            done_idx.len() as i64
        } else {
            i64::from(st.succeeded.unwrap_or(0)) + unc_succ.len() as i64
        };
        let failed = i64::from(st.failed.unwrap_or(0)) + unc_fail.len() as i64;

        // 2. Does the Job end now?
        if ending.is_none() {
            let active_refs: Vec<&Pod> = active_pods.iter().map(|p| &**p).collect();
            let restarts = if on_failure {
                logic::restarts(&active_refs)
            } else {
                0
            };
            let past_on_failure = on_failure
                && if backoff_limit == 0 {
                    restarts > 0
                } else {
                    restarts >= backoff_limit
                };
            let deadline = spec
                .active_deadline_seconds
                .zip(st.start_time.as_ref())
                .filter(|_| !suspended)
                .is_some_and(|(s, t)| now.as_second() - t.0.as_second() >= s);
            let done = match completions {
                Some(c) => succeeded >= i64::from(c),
                None => succeeded > 0 && active_pods.is_empty(),
            };
            ending = if let Some(message) = fail_job {
                Some(Ending::Failed {
                    reason: "PodFailurePolicy".into(),
                    message,
                })
            } else if failed > backoff_limit || past_on_failure {
                Some(Ending::Failed {
                    reason: "BackoffLimitExceeded".into(),
                    message: "Job has reached the specified backoff limit".into(),
                })
            } else if deadline {
                Some(Ending::Failed {
                    reason: "DeadlineExceeded".into(),
                    message: "Job was active longer than specified deadline".into(),
                })
            } else if done {
                Some(Ending::Complete)
            } else {
                None
            };
            match &ending {
                Some(Ending::Failed { reason, message }) => {
                    set_condition(&mut st, "FailureTarget", "True", reason, message, now);
                    newly = true;
                }
                Some(Ending::Complete) => {
                    set_condition(
                        &mut st,
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                        now,
                    );
                    newly = true;
                }
                None => {}
            }
        }
        // A failing Job counts every pod it still holds as failed.
        let failing = matches!(ending, Some(Ending::Failed { .. }));
        let mut to_delete: Vec<Arc<Pod>> = Vec::new();
        if ending.is_some() {
            for p in &active_pods {
                let puid = p.metadata.uid.clone().unwrap_or_default();
                if failing && has_finalizer(p) && unc_fail.insert(puid) {
                    newly = true;
                    to_release.push(p.clone());
                }
            }
            to_delete = active_pods.clone();
        }

        // 3. Record before releasing: the UIDs (and indexes) first, then the finalizers.
        let mut job = job;
        if newly {
            st.uncounted_terminated_pods = uncounted(&unc_succ, &unc_fail);
            if indexed {
                st.completed_indexes = Some(logic::format_indexes(&done_idx));
                st.succeeded = Some(done_idx.len() as i32);
            }
            job = Arc::new(self.write_status(key, &job, st.clone()).await?);
        }
        let (released, release_err) = self.remove_finalizers(&to_release).await;
        lock(&self.released)
            .entry(key.to_string())
            .or_default()
            .extend(released.iter().cloned());
        let mut terminating = pods
            .iter()
            .filter(|p| util::is_deleting(&p.metadata) && !util::is_terminal(p))
            .count() as i32;
        let delete_result = if to_delete.is_empty() {
            Ok(0)
        } else {
            self.delete_pods(&job, key, &to_delete, &released).await
        };
        terminating += *delete_result.as_ref().unwrap_or(&0);

        // 4. Count what is released (or gone).
        let by_uid: HashMap<&str, &Arc<Pod>> = pods
            .iter()
            .map(|p| (p.metadata.uid.as_deref().unwrap_or_default(), p))
            .collect();
        let counted = |u: &String| {
            released.contains(u) || by_uid.get(u.as_str()).is_none_or(|p| !has_finalizer(p))
        };
        let moved_succ: Vec<String> = unc_succ.iter().filter(|u| counted(u)).cloned().collect();
        let moved_fail: Vec<String> = unc_fail.iter().filter(|u| counted(u)).cloned().collect();
        for u in &moved_succ {
            unc_succ.remove(u);
        }
        for u in &moved_fail {
            unc_fail.remove(u);
        }
        if !indexed {
            st.succeeded = Some(st.succeeded.unwrap_or(0) + moved_succ.len() as i32);
        }
        st.failed = Some(st.failed.unwrap_or(0) + moved_fail.len() as i32);
        st.uncounted_terminated_pods = uncounted(&unc_succ, &unc_fail);

        let mut active = active_pods.len() as i32;
        let mut ready = active_pods.iter().filter(|p| util::is_ready(p)).count() as i32;
        let mut requeue: Option<Duration> = None;
        let mut manage_err: Option<JobError> = None;

        if let Some(end) = &ending {
            active = 0;
            ready = 0;
            // The terminal condition once nothing is left running or uncounted.
            let clean = unc_succ.is_empty()
                && unc_fail.is_empty()
                && terminating == 0
                && delete_result.is_ok();
            if clean && finished_condition(&job).is_none() {
                match end {
                    Ending::Complete => {
                        set_condition(
                            &mut st,
                            "Complete",
                            "True",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                            now,
                        );
                        st.completion_time = Some(Time(now));
                        self.recorder.normal(&*job, "Completed", "Job completed");
                    }
                    Ending::Failed { reason, message } => {
                        set_condition(&mut st, "Failed", "True", reason, message, now);
                        self.recorder.warning(&*job, reason, message.clone());
                    }
                }
                self.set_backoff(key, None);
            } else if !clean {
                requeue = Some(Duration::from_secs(1));
            }
        } else if self.expectations.satisfied(key) {
            // 5. Manage: suspend, start, create, delete.
            let was_suspended = condition(&st, "Suspended").is_some();
            if suspended {
                if !was_suspended {
                    set_condition(
                        &mut st,
                        "Suspended",
                        "True",
                        "JobSuspended",
                        "Job suspended",
                        now,
                    );
                    self.recorder.normal(&*job, "Suspended", "Job suspended");
                }
                let n = self.delete_pods(&job, key, &active_pods, &released).await;
                match n {
                    Ok(t) => terminating += t,
                    Err(e) => manage_err = Some(e.into()),
                }
                active = 0;
                ready = 0;
            } else {
                if was_suspended {
                    set_condition(
                        &mut st,
                        "Suspended",
                        "False",
                        "JobResumed",
                        "Job resumed",
                        now,
                    );
                    self.recorder.normal(&*job, "Resumed", "Job resumed");
                    // The deadline counts from the resume.
                    st.start_time = Some(Time(now));
                }
                if st.start_time.is_none() {
                    st.start_time = Some(Time(now));
                }
                let (create, delete) = logic::plan_pods(
                    indexed,
                    completions,
                    parallelism,
                    succeeded,
                    &active_pods,
                    &done_idx,
                );
                if !delete.is_empty() {
                    match self.delete_pods(&job, key, &delete, &released).await {
                        Ok(t) => terminating += t,
                        Err(e) => manage_err = Some(e.into()),
                    }
                    active -= delete.len() as i32;
                    ready -= delete.iter().filter(|p| util::is_ready(p)).count() as i32;
                }
                // Replacements wait for failed pods to finish terminating when asked to.
                let waiting = logic::only_replace_failed(&job) && terminating > 0;
                if !create.is_empty() && !waiting {
                    let rec = self.backoff_of(key);
                    let wait = logic::backoff_remaining(rec.failures, rec.last_failure, now);
                    if wait.is_zero() {
                        let n = create.len().min(MAX_BATCH);
                        let batch: Vec<Option<i32>> = create.into_iter().take(n).collect();
                        let r = self.create_pods(&job, key, batch).await;
                        if let Err(e) = r {
                            manage_err = Some(e);
                        }
                        active += n as i32;
                    } else {
                        requeue = Some(wait);
                    }
                }
            }
            if let Some(ads) = spec.active_deadline_seconds.filter(|_| !suspended) {
                let start = st.start_time.as_ref().map_or(now, |t| t.0);
                let left = start.as_second() + ads - now.as_second();
                let left = Duration::from_secs(u64::try_from(left.max(1)).unwrap_or(1));
                requeue = Some(requeue.map_or(left, |r| r.min(left)));
            }
        }

        st.active = Some(active.max(0));
        st.ready = Some(ready.max(0));
        st.terminating = Some(terminating);
        if indexed {
            st.completed_indexes = Some(logic::format_indexes(&done_idx));
            st.succeeded = Some(done_idx.len() as i32);
        }
        if job.status.as_ref() != Some(&st) {
            self.write_status(key, &job, st).await?;
        }
        if let Some(e) = release_err {
            return Err(e.into());
        }
        if let Err(e) = delete_result {
            return Err(e.into());
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

#[async_trait::async_trait]
impl Reconciler for JobController {
    type Error = JobError;

    fn name(&self) -> &'static str {
        "job"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, JobError> {
        let (ns, name) = split_key(key);
        let Some(job) = self.jobs.get_key(key) else {
            self.forget(key);
            self.release_pods(ns, name, None).await?;
            return Ok(Action::Done);
        };
        // A Job another controller manages (spec.managedBy) is left to it.
        let managed_by = job.spec.as_ref().and_then(|s| s.managed_by.as_deref());
        if managed_by.is_some_and(|m| m != "kubernetes.io/job-controller") {
            return Ok(Action::Done);
        }
        if util::is_deleting(&job.metadata) || finished_condition(&job).is_some() {
            self.release_pods(ns, name, job.metadata.uid.as_deref())
                .await?;
            self.forget(key);
            return Ok(Action::Done);
        }
        self.sync(key, job).await
    }
}

/// A resourceVersion as the number it is in skiff's store (None if it is not one).
fn rv_of(job: &Job) -> Option<u64> {
    job.metadata.resource_version.as_deref()?.parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `status.uncountedTerminatedPods` as kube writes it (empty lists left out).
fn uncounted(
    succeeded: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) -> Option<UncountedTerminatedPods> {
    let list = |s: &BTreeSet<String>| (!s.is_empty()).then(|| s.iter().cloned().collect());
    Some(UncountedTerminatedPods {
        succeeded: list(succeeded),
        failed: list(failed),
    })
}
