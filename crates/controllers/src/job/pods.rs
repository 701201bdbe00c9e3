//! The Job controller's writes to pods: creating them from the template (with the
//! tracking finalizer and, for Indexed Jobs, the completion index), deleting those no
//! longer wanted, and removing the tracking finalizer once a pod is counted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;

use super::logic::INDEX_KEY;
use super::{has_finalizer, JobController, JobError, TRACKING_FINALIZER};
use crate::util::{self, ApiError};

impl JobController {
    /// Removes the tracking finalizer (a JSON patch guarded by the finalizer's position).
    pub(super) async fn remove_finalizer(&self, pod: &Pod) -> Result<(), ApiError> {
        let Some(i) = pod
            .metadata
            .finalizers
            .as_ref()
            .and_then(|f| f.iter().position(|x| x == TRACKING_FINALIZER))
        else {
            return Ok(());
        };
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": TRACKING_FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ]))
        .map_err(|e| {
            ApiError::new(
                "build the finalizer patch of pod",
                pod.name_any(),
                kube::Error::SerdeError(e),
            )
        })?;
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        match self
            .pod_api(ns)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(ApiError::new(
                "remove the tracking finalizer of pod",
                pod.name_any(),
                e,
            )),
        }
    }

    /// Removes the finalizer of `pods` concurrently; the UIDs it was removed from.
    pub(super) async fn remove_finalizers(
        &self,
        pods: &[Arc<Pod>],
    ) -> (HashSet<String>, Option<ApiError>) {
        let results = join_all(pods.iter().map(|p| self.remove_finalizer(p))).await;
        let mut done = HashSet::new();
        let mut err = None;
        for (p, r) in pods.iter().zip(results) {
            match r {
                Ok(()) => {
                    done.insert(p.metadata.uid.clone().unwrap_or_default());
                }
                Err(e) => err = Some(e),
            }
        }
        (done, err)
    }

    /// Deletes pods the controller no longer wants (finalizer first, so they are not
    /// counted); how many are left terminating.
    pub(super) async fn delete_pods(
        &self,
        job: &Job,
        key: &str,
        pods: &[Arc<Pod>],
        released: &HashSet<String>,
    ) -> Result<i32, ApiError> {
        if pods.is_empty() {
            return Ok(0);
        }
        self.expectations.expect_deletions(
            key,
            pods.iter()
                .map(|p| p.metadata.uid.clone().unwrap_or_default()),
        );
        let ns = job.namespace().unwrap_or_default();
        let api = self.pod_api(&ns);
        let results = join_all(pods.iter().map(|p| {
            let api = api.clone();
            async move {
                // The cache may not show a finalizer just removed; never remove it twice.
                if !released.contains(p.metadata.uid.as_deref().unwrap_or_default()) {
                    self.remove_finalizer(p).await?;
                }
                let dp = DeleteParams::background();
                match api.delete(&p.name_any(), &dp).await {
                    Ok(either) => Ok(either.is_left()),
                    Err(e) if util::is_not_found(&e) => Ok(false),
                    Err(e) => Err(ApiError::new("delete pod", p.name_any(), e)),
                }
            }
        }))
        .await;
        let mut terminating = 0;
        let mut err = None;
        for (p, r) in pods.iter().zip(results) {
            match r {
                Ok(left) => {
                    terminating += i32::from(left);
                    self.recorder.normal(
                        job,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", p.name_any()),
                    );
                }
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, p.metadata.uid.as_deref().unwrap_or_default());
                    self.recorder.warning(
                        job,
                        "FailedDelete",
                        format!("Error deleting: {}", e.source),
                    );
                    err = Some(e);
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(terminating),
        }
    }

    /// The pod for `index` (Indexed) or a plain one, as kube builds it.
    pub(super) fn new_pod(&self, job: &Job, index: Option<i32>) -> Option<Pod> {
        let spec = job.spec.as_ref()?;
        let ns = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let prefix = match index {
            Some(i) => util::generate_name_prefix(&format!("{name}-{i}")),
            None => util::generate_name_prefix(&name),
        };
        let mut pod =
            util::pod_from_template(&spec.template, &ns, &prefix, util::controller_ref(job));
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.to_string());
        if let Some(i) = index {
            let v = i.to_string();
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(INDEX_KEY.into(), v.clone());
            pod.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(INDEX_KEY.into(), v);
            if let Some(ps) = pod.spec.as_mut() {
                if ps.hostname.is_none() {
                    ps.hostname = Some(format!("{name}-{i}"));
                }
                let env = EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.labels['{INDEX_KEY}']"),
                        }),
                        ..Default::default()
                    }),
                };
                let all = ps
                    .containers
                    .iter_mut()
                    .chain(ps.init_containers.iter_mut().flatten());
                for c in all {
                    let e = c.env.get_or_insert_with(Vec::new);
                    if !e.iter().any(|x| x.name == env.name) {
                        e.push(env.clone());
                    }
                }
            }
        }
        Some(pod)
    }

    /// Creates pods in slow-start batches (1, 2, 4 …); stops at the first refused batch.
    pub(super) async fn create_pods(
        &self,
        job: &Job,
        key: &str,
        indexes: Vec<Option<i32>>,
    ) -> Result<(), JobError> {
        if indexes.is_empty() {
            return Ok(());
        }
        let ns = job.namespace().unwrap_or_default();
        let api = self.pod_api(&ns);
        let total = indexes.len();
        self.expectations.expect_creations(key, total);
        let mut done = 0;
        let mut batch = 1;
        let mut failed = 0;
        while done < total {
            let n = batch.min(total - done);
            let chunk = &indexes[done..done + n];
            let results = join_all(chunk.iter().map(|i| {
                let api = api.clone();
                let pod = self.new_pod(job, *i);
                async move {
                    match pod {
                        Some(pod) => api.create(&PostParams::default(), &pod).await.map(Some),
                        None => Ok(None),
                    }
                }
            }))
            .await;
            for r in results {
                match r {
                    Ok(Some(p)) => self.recorder.normal(
                        job,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    ),
                    Ok(None) => self.expectations.creation_observed(key),
                    Err(e) => {
                        failed += 1;
                        self.expectations.creation_observed(key);
                        self.recorder
                            .warning(job, "FailedCreate", format!("Error creating: {e}"));
                    }
                }
            }
            done += n;
            if failed > 0 {
                // The rest will not be created now; stop expecting them.
                for _ in done..total {
                    self.expectations.creation_observed(key);
                }
                return Err(JobError::Create {
                    job: key.to_string(),
                    failed,
                });
            }
            batch *= 2;
        }
        Ok(())
    }

    /// A gone (or going) Job: its pods' finalizers must not keep them forever.
    pub(super) async fn release_pods(
        &self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut held = Vec::new();
        self.pods.for_each(Some(ns), |p| {
            let ours = util::controller_of(&p.metadata).is_some_and(|r| {
                r.kind == "Job" && r.name == name && uid.is_none_or(|u| r.uid == u)
            });
            if ours && has_finalizer(p) {
                held.push(p.clone());
            }
        });
        match self.remove_finalizers(&held).await.1 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
