//! The TTL-after-finished controller, as kube-controller-manager's `ttl-after-finished`:
//! a Job with `ttlSecondsAfterFinished` is deleted (dependents in the background) that
//! long after it finished — the last transition of its Complete or Failed condition —
//! and looked at again at that time until then. Before deleting, the Job is read fresh
//! from the API, so a TTL just extended or a Job just recreated under the same name is
//! never deleted from a stale cache.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::informer::{key_of, split_key, Informer};
use crate::job::finished_condition;
use crate::runner::{self, Action, Reconciler};
use crate::util::{self, ApiError};
use crate::Context;

struct TtlController {
    ctx: Context,
    jobs: Informer<Job>,
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let jobs = ctx.informers.informer::<Job>();
    let queue = crate::Queue::new();
    {
        let q = queue.clone();
        jobs.on_change(move |ch| {
            let job = ch.object();
            if needs_cleanup(job) {
                q.add(key_of(&**job));
            }
        });
    }
    let ready = {
        let j = jobs.clone();
        async move { j.synced().await }
    };
    let c = TtlController {
        ctx: ctx.clone(),
        jobs,
    };
    Some(runner::spawn(
        Arc::new(c),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

/// A finished Job with a TTL that is not already being deleted.
fn needs_cleanup(job: &Job) -> bool {
    job.spec
        .as_ref()
        .is_some_and(|s| s.ttl_seconds_after_finished.is_some())
        && finished_condition(job).is_some()
        && !util::is_deleting(&job.metadata)
}

/// How long until the Job expires (zero when it has); None when it never does.
fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if !needs_cleanup(job) {
        return None;
    }
    let ttl = i64::from(job.spec.as_ref()?.ttl_seconds_after_finished?);
    let finished = finished_condition(job)?
        .last_transition_time
        .as_ref()
        .map_or(now, |t| t.0);
    let expire_ms = finished.as_millisecond() + ttl * 1000;
    let left = expire_ms - now.as_millisecond();
    Some(Duration::from_millis(
        u64::try_from(left.max(0)).unwrap_or(0),
    ))
}

#[async_trait::async_trait]
impl Reconciler for TtlController {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "ttl-after-finished"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        let Some(cached) = self.jobs.get_key(key) else {
            return Ok(Action::Done);
        };
        match time_left(&cached, self.ctx.now()) {
            None => return Ok(Action::Done),
            Some(d) if !d.is_zero() => return Ok(Action::RequeueAfter(d)),
            Some(_) => {}
        }
        let (ns, name) = split_key(key);
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), ns);
        let fresh = match api.get_opt(name).await {
            Ok(Some(j)) => j,
            Ok(None) => return Ok(Action::Done),
            Err(e) => return Err(ApiError::new("get job", name, e)),
        };
        match time_left(&fresh, self.ctx.now()) {
            None => return Ok(Action::Done),
            Some(d) if !d.is_zero() => return Ok(Action::RequeueAfter(d)),
            Some(_) => {}
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: fresh.metadata.uid.clone(),
                resource_version: fresh.metadata.resource_version.clone(),
            }),
            ..DeleteParams::background()
        };
        match api.delete(&fresh.name_any(), &dp).await {
            Ok(_) => Ok(Action::Done),
            Err(e) if util::is_not_found(&e) => Ok(Action::Done),
            Err(e) => Err(ApiError::new("delete expired job", name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ttl: Option<i32>, finished_at: Option<&str>) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": {"ttlSecondsAfterFinished": ttl, "template": {}},
            "status": {"conditions": finished_at.map(|t| vec![serde_json::json!(
                {"type": "Complete", "status": "True", "lastTransitionTime": t})]) },
        }))
        .unwrap()
    }

    #[test]
    fn a_finished_job_expires_ttl_after_its_finish() {
        let now: Timestamp = "2024-01-01T10:00:00Z".parse().unwrap();
        assert_eq!(time_left(&job(Some(60), None), now), None);
        assert_eq!(
            time_left(&job(None, Some("2024-01-01T09:59:30Z")), now),
            None
        );
        assert_eq!(
            time_left(&job(Some(60), Some("2024-01-01T09:59:30Z")), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            time_left(&job(Some(10), Some("2024-01-01T09:59:30Z")), now),
            Some(Duration::ZERO)
        );
    }
}
