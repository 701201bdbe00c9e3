//! The CronJob controller, as kube-controller-manager's `cronjob` controller (v2): at
//! each time of `spec.schedule` in `spec.timeZone` (UTC when unset) it creates the Job
//! `<cronjob>-<minutes since the epoch>` from `jobTemplate`, honouring
//! `concurrencyPolicy`, `startingDeadlineSeconds` and `suspend`; it keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`, deletes finished Jobs beyond the history
//! limits, and comes back at the next scheduled time. The decisions are the pure
//! [`plan::plan`]; this module reads the caches and carries them out.
//!
//! A schedule the API server would refuse (stored before validation, or by another
//! server) is an Event on the CronJob, never a failed reconcile or a panic.

mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::events::EventType;
use crate::informer::{key_of, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{self, ApiError};
use crate::{Context, Recorder};

#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("could not replace job {namespace}/{name}")]
    Replace { namespace: String, name: String },
}

struct CronJobController {
    ctx: Context,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    recorder: Recorder,
    /// The resourceVersion of each CronJob's last status write: a cache older than it
    /// lacks the Jobs just recorded in `active` (its update event is on the way).
    written: Mutex<HashMap<String, u64>>,
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let cronjobs = ctx.informers.informer::<CronJob>();
    let jobs = ctx.informers.informer::<Job>();
    let queue = crate::Queue::new();
    {
        let q = queue.clone();
        cronjobs.on_change(move |ch| q.add(key_of(&**ch.object())));
    }
    {
        let q = queue.clone();
        jobs.on_change(move |ch| {
            let job = ch.object();
            if let Some(r) = util::controller_of(&job.metadata).filter(|r| r.kind == "CronJob") {
                let ns = job.metadata.namespace.as_deref().unwrap_or_default();
                q.add(format!("{ns}/{}", r.name));
            }
        });
    }
    let ready = {
        let (c, j) = (cronjobs.clone(), jobs.clone());
        async move {
            c.synced().await;
            j.synced().await;
        }
    };
    let c = CronJobController {
        recorder: ctx.events.recorder("cronjob-controller"),
        ctx: ctx.clone(),
        cronjobs,
        jobs,
        written: Mutex::new(HashMap::new()),
    };
    Some(runner::spawn(
        Arc::new(c),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

impl CronJobController {
    fn event(&self, cj: &CronJob, kind: EventType, reason: &str, message: String) {
        self.recorder.publish(cj, kind, reason, message);
    }

    /// Deletes a Job (its pods in the background); false when the API refused.
    async fn delete_job(&self, cj: &CronJob, job: &Job) -> bool {
        let api: Api<Job> = Api::namespaced(
            self.ctx.client.clone(),
            &job.namespace().unwrap_or_default(),
        );
        let mut result = api
            .delete(&job.name_any(), &DeleteParams::background())
            .await;
        // skiff's API server answers a delete that races a status write with a conflict
        // (kube-apiserver retries it itself): try again a few times.
        for _ in 0..3 {
            match &result {
                Err(e) if util::is_conflict(e) => {
                    result = api
                        .delete(&job.name_any(), &DeleteParams::background())
                        .await;
                }
                _ => break,
            }
        }
        match result {
            Ok(_) => {
                self.event(
                    cj,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted job {}", job.name_any()),
                );
                true
            }
            Err(e) if util::is_not_found(&e) => true,
            Err(e) => {
                self.event(
                    cj,
                    EventType::Warning,
                    "FailedDelete",
                    format!("Deleted job: {e}"),
                );
                false
            }
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for CronJobController {
    type Error = CronJobError;

    fn name(&self) -> &'static str {
        "cronjob"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, CronJobError> {
        let Some(cj) = self.cronjobs.get_key(key) else {
            lock(&self.written).remove(key);
            return Ok(Action::Done);
        };
        let rv = |cj: &CronJob| cj.metadata.resource_version.as_deref()?.parse::<u64>().ok();
        if lock(&self.written)
            .get(key)
            .is_some_and(|w| rv(&cj).is_some_and(|r| r < *w))
        {
            return Ok(Action::Done);
        }
        let ns = cj.namespace().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = Vec::new();
        self.jobs.for_each(Some(&ns), |j| {
            if util::is_controlled_by(&j.metadata, &uid) {
                jobs.push(j.clone());
            }
        });
        let job_api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
        // Active Jobs the cache does not have yet are asked for, so a slow watch is not
        // taken for a missing Job.
        let mut missing = Vec::new();
        let active = cj
            .status
            .as_ref()
            .and_then(|s| s.active.clone())
            .unwrap_or_default();
        for r in active {
            if jobs.iter().any(|j| j.metadata.uid == r.uid) {
                continue;
            }
            let name = r.name.clone().unwrap_or_default();
            match job_api.get_opt(&name).await {
                Ok(Some(j)) if j.metadata.uid == r.uid => jobs.push(Arc::new(j)),
                Ok(_) => missing.push(name),
                Err(e) => return Err(ApiError::new("get job", name, e).into()),
            }
        }
        let now = self.ctx.now();
        let mut p = plan::plan(&cj, &jobs, &missing, now);
        for (kind, reason, message) in std::mem::take(&mut p.events) {
            self.event(&cj, kind, reason, message);
        }
        for j in &p.replace {
            if !self.delete_job(&cj, j).await {
                return Err(CronJobError::Replace {
                    namespace: ns,
                    name: j.name_any(),
                });
            }
            if let Some(a) = p.status.active.as_mut() {
                a.retain(|r| r.uid != j.metadata.uid);
            }
        }
        for j in &p.delete {
            if self.delete_job(&cj, j).await {
                if let Some(a) = p.status.active.as_mut() {
                    a.retain(|r| r.uid != j.metadata.uid);
                }
            }
        }
        if let Some(job) = p.create.take() {
            let name = job.name_any();
            let created = match job_api.create(&PostParams::default(), &job).await {
                Ok(j) => {
                    self.event(
                        &cj,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created job {name}"),
                    );
                    Some(j)
                }
                Err(e) if util::is_conflict(&e) => {
                    // Made already (by us before a restart, or by someone else): adopt
                    // it into the status only if it is ours.
                    let existing = job_api
                        .get(&name)
                        .await
                        .map_err(|e| ApiError::new("get job", name.clone(), e))?;
                    let ours = util::is_controlled_by(&existing.metadata, &uid);
                    let listed = p
                        .status
                        .active
                        .iter()
                        .flatten()
                        .any(|r| r.uid == existing.metadata.uid);
                    (ours && !listed).then_some(existing)
                }
                Err(e) => {
                    self.event(
                        &cj,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating job: {e}"),
                    );
                    return Err(ApiError::new("create job", name, e).into());
                }
            };
            if let Some(j) = created {
                plan::record_created(&mut p.status, &j);
            }
        }
        if p.status.active.as_ref().is_some_and(Vec::is_empty) {
            p.status.active = None;
        }
        let stored = cj.status.clone().unwrap_or_default();
        if p.status != stored {
            let mut updated = (*cj).clone();
            updated.status = Some(p.status);
            let written = Api::<CronJob>::namespaced(self.ctx.client.clone(), &ns)
                .replace_status(&cj.name_any(), &PostParams::default(), &updated)
                .await
                .map_err(|e| ApiError::new("update status of cronjob", cj.name_any(), e))?;
            if let Some(r) = rv(&written) {
                lock(&self.written).insert(key.to_string(), r);
            }
        }
        Ok(p.requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
