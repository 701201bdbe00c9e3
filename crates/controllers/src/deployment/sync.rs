//! The steps every strategy shares (kube's deployment `sync.go`): finding or creating the
//! new ReplicaSet and keeping revisions in step, scaling a ReplicaSet (with its Event),
//! proportional scaling, history cleanup and the status write.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;

use super::history::{self, HASH_LABEL, REVISION};
use super::maths::{proportional_sizes, Share};
use super::progress::{self, Reason};
use super::{by_age, rs_actual, rs_available, rs_replicas, DeploymentError, Result, Run};
use crate::util::{self, ApiError};

/// A Deployment's ReplicaSets: the one whose template is the Deployment's (if any) and
/// the others, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Sets {
    pub new: Option<ReplicaSet>,
    pub olds: Vec<ReplicaSet>,
}

impl Sets {
    /// Old ones first, then the new one.
    pub fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.olds.iter().chain(self.new.iter())
    }

    /// kube's `GetReplicaCountForReplicaSets`: the sum of `spec.replicas`.
    pub fn spec_replicas(&self) -> i32 {
        self.all().map(rs_replicas).sum()
    }
}

/// The message of a refused API call, as kube prints the error.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

impl Run<'_> {
    /// Splits the claimed ReplicaSets into the new one (the oldest whose template equals
    /// the Deployment's) and the old ones, and brings the new one's revision and
    /// annotations up to date (kube's `getAllReplicaSetsAndSyncRevision` without create).
    pub(super) async fn split(&mut self, mut list: Vec<ReplicaSet>) -> Result<Sets> {
        list.sort_by_key(by_age);
        let template = self.spec().template;
        let pos = list.iter().position(|rs| {
            history::equal_ignore_hash(
                rs.spec.as_ref().and_then(|s| s.template.as_ref()),
                Some(&template),
            )
        });
        let new = pos.map(|i| list.remove(i));
        let mut sets = Sets {
            new: None,
            olds: list,
        };
        if let Some(rs) = new {
            sets.new = Some(self.sync_existing_new_rs(rs, &sets.olds).await?);
        }
        Ok(sets)
    }

    /// The existing new ReplicaSet: its revision becomes the newest, it gets the
    /// Deployment's annotations and minReadySeconds, and the Deployment its revision.
    async fn sync_existing_new_rs(
        &mut self,
        rs: ReplicaSet,
        olds: &[ReplicaSet],
    ) -> Result<ReplicaSet> {
        let new_revision = history::max_revision(olds) + 1;
        let spec = self.spec();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let mut copy = rs.clone();
        let changed = history::set_new_rs_annotations(
            &self.d,
            &mut copy,
            new_revision,
            true,
            self.plan.replicas,
            self.plan.max_replicas(),
        );
        let min_ready_changed = copy
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
            != min_ready;
        if changed || min_ready_changed {
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": rs.metadata.resource_version, "annotations": copy.metadata.annotations},
                "spec": {"minReadySeconds": min_ready},
            });
            let updated = self
                .replica_sets()
                .patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| ApiError::new("update replica set", rs.name_any(), e))?;
            return Ok(updated);
        }
        let revision = history::annotation(&copy.metadata, REVISION)
            .unwrap_or_default()
            .to_string();
        let mut needs_update = self.set_deployment_revision(&revision);
        let mut status = self.d.status.clone().unwrap_or_default();
        if self.has_progress_deadline() && progress::get(&status, progress::PROGRESSING).is_none() {
            let msg = format!("Found new replica set {:?}", copy.name_any());
            progress::set(
                &mut status,
                progress::condition(
                    progress::PROGRESSING,
                    "True",
                    Reason::FoundNewReplicaSet,
                    msg,
                    self.now(),
                ),
            );
            needs_update = true;
        }
        if needs_update {
            self.write_status(status).await?;
        }
        Ok(copy)
    }

    /// Sets the Deployment's revision annotation; whether it changed.
    fn set_deployment_revision(&mut self, revision: &str) -> bool {
        let anns = self
            .d
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        if anns.get(REVISION).map(String::as_str) == Some(revision) {
            return false;
        }
        anns.insert(REVISION.into(), revision.into());
        true
    }

    pub(super) fn has_progress_deadline(&self) -> bool {
        self.d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .is_some_and(|s| s != i32::MAX)
    }

    /// Creates the ReplicaSet of the Deployment's current template (kube's
    /// `getNewReplicaSet` with create), sized by the strategy's first step.
    pub(super) async fn create_new_rs(&mut self, sets: &mut Sets) -> Result<()> {
        let spec = self.spec();
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = history::pod_template_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let replicas = self.plan.new_rs_replicas(sets.spec_replicas(), 0);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![util::controller_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let new_revision = history::max_revision(&sets.olds) + 1;
        history::set_new_rs_annotations(
            &self.d,
            &mut rs,
            new_revision,
            false,
            self.plan.replicas,
            self.plan.max_replicas(),
        );
        let (created, already_existed) = match self
            .replica_sets()
            .create(&PostParams::default(), &rs)
            .await
        {
            Ok(c) => (c, false),
            Err(e) if util::is_conflict(&e) => (self.existing_new_rs(&name, e).await?, true),
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set {name:?}: {}",
                    api_message(&e)
                );
                if self.has_progress_deadline() {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    progress::set(
                        &mut status,
                        progress::condition(
                            progress::PROGRESSING,
                            "False",
                            Reason::ReplicaSetCreateError,
                            msg.clone(),
                            self.now(),
                        ),
                    );
                    // The create error is what matters; the condition is best effort.
                    let _ = self.write_status(status).await;
                }
                self.c
                    .recorder
                    .warning(&self.d, "ReplicaSetCreateError", msg);
                return Err(ApiError::new("create replica set", name, e).into());
            }
        };
        if !already_existed && replicas > 0 {
            self.c.recorder.normal(
                &self.d,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
        }
        let revision = history::annotation(&created.metadata, REVISION)
            .unwrap_or_default()
            .to_string();
        let mut needs_update = self.set_deployment_revision(&revision);
        let mut status = self.d.status.clone().unwrap_or_default();
        if !already_existed && self.has_progress_deadline() {
            let msg = format!("Created new replica set {name:?}");
            progress::set(
                &mut status,
                progress::condition(
                    progress::PROGRESSING,
                    "True",
                    Reason::NewReplicaSetCreated,
                    msg,
                    self.now(),
                ),
            );
            needs_update = true;
        }
        if needs_update {
            self.write_status(status).await?;
        }
        sets.new = Some(created);
        Ok(())
    }

    /// The name is taken: it is ours if we control it and its template is ours (the
    /// cache lagged behind our own create); otherwise a hash collision, so bump
    /// `status.collisionCount` and retry under the next name.
    async fn existing_new_rs(
        &mut self,
        name: &str,
        create_error: kube::Error,
    ) -> Result<ReplicaSet> {
        let existing = match self.c.replica_sets.get(&self.ns, name) {
            Some(rs) => Some((*rs).clone()),
            None => self
                .replica_sets()
                .get_opt(name)
                .await
                .map_err(|e| ApiError::new("get replica set", name, e))?,
        };
        let Some(existing) = existing else {
            return Err(ApiError::new("create replica set", name, create_error).into());
        };
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let template = self.spec().template;
        if util::is_controlled_by(&existing.metadata, &uid)
            && history::equal_ignore_hash(
                Some(&template),
                existing.spec.as_ref().and_then(|s| s.template.as_ref()),
            )
        {
            return Ok(existing);
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let count = status.collision_count.unwrap_or(0) + 1;
        status.collision_count = Some(count);
        self.write_status(status).await?;
        Err(DeploymentError::HashCollision {
            key: self.key.clone(),
            name: name.to_string(),
            count,
        })
    }

    /// kube's `scaleReplicaSetAndRecordEvent`: scales `rs` to `n` if it is not there.
    pub(super) async fn scale_and_record(&mut self, rs: &mut ReplicaSet, n: i32) -> Result<bool> {
        if rs_replicas(rs) == n {
            return Ok(false);
        }
        let op = if rs_replicas(rs) < n { "up" } else { "down" };
        self.scale_rs(rs, n, op).await
    }

    /// kube's `scaleReplicaSet`: sets the size and the replica annotations (guarded by
    /// the resourceVersion the decision was made on); whether the size changed.
    pub(super) async fn scale_rs(&mut self, rs: &mut ReplicaSet, n: i32, op: &str) -> Result<bool> {
        let (replicas, max) = (self.plan.replicas, self.plan.max_replicas());
        let size_changes = rs_replicas(rs) != n;
        if !size_changes && !history::replicas_annotations_need_update(rs, replicas, max) {
            return Ok(false);
        }
        let old = rs_replicas(rs);
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": rs.metadata.resource_version,
                "annotations": {
                    history::DESIRED_REPLICAS: replicas.to_string(),
                    history::MAX_REPLICAS: max.to_string(),
                },
            },
            "spec": {"replicas": n},
        });
        let name = rs.name_any();
        *rs = self
            .replica_sets()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ApiError::new("scale replica set", name.clone(), e))?;
        if size_changes {
            self.c.recorder.normal(
                &self.d,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} to {n} from {old}"),
            );
        }
        Ok(size_changes)
    }

    /// kube's `isScalingEvent`: an active ReplicaSet was sized for another replica count.
    pub(super) fn is_scaling_event(&self, sets: &Sets) -> bool {
        sets.all()
            .filter(|rs| rs_replicas(rs) > 0)
            .filter_map(history::desired_replicas)
            .any(|desired| desired != self.plan.replicas)
    }

    /// kube's `sync`: scaling only (paused, or `spec.replicas` changed), then status.
    pub(super) async fn sync_scale(&mut self, mut sets: Sets) -> Result<()> {
        self.scale(&mut sets).await?;
        if self.paused() {
            self.cleanup(&sets.olds).await?;
        }
        self.sync_deployment_status(&sets).await
    }

    /// kube's `scale`: one active ReplicaSet takes the whole count; a saturated new one
    /// empties the old ones; otherwise a rolling Deployment shares the change among its
    /// active ReplicaSets in proportion.
    async fn scale(&mut self, sets: &mut Sets) -> Result<()> {
        if sets.new.is_none() && sets.olds.is_empty() {
            return Ok(());
        }
        let replicas = self.plan.replicas;
        let active = sets.all().filter(|rs| rs_replicas(rs) > 0).count();
        if active <= 1 {
            let target = if active == 1 {
                match sets.new.as_mut().filter(|rs| rs_replicas(rs) > 0) {
                    Some(rs) => rs,
                    None => match sets.olds.iter_mut().find(|rs| rs_replicas(rs) > 0) {
                        Some(rs) => rs,
                        None => return Ok(()),
                    },
                }
            } else {
                match sets.new.as_mut() {
                    Some(rs) => rs,
                    None => match sets.olds.last_mut() {
                        Some(rs) => rs,
                        None => return Ok(()),
                    },
                }
            };
            if rs_replicas(target) != replicas {
                self.scale_and_record(target, replicas).await?;
            }
            return Ok(());
        }
        if let Some(new) = &sets.new {
            let saturated = rs_replicas(new) == replicas
                && history::desired_replicas(new) == Some(replicas)
                && rs_available(new) == replicas;
            if saturated {
                for rs in sets.olds.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
                    self.scale_and_record(rs, 0).await?;
                }
                return Ok(());
            }
        }
        if !self.plan.rolling {
            return Ok(());
        }
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut active: Vec<&mut ReplicaSet> = sets
            .olds
            .iter_mut()
            .chain(sets.new.iter_mut())
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        let shares: Vec<Share> = active
            .iter()
            .map(|rs| Share {
                name: rs.name_any(),
                created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
                replicas: rs_replicas(rs),
                max_replicas: history::max_replicas(rs),
            })
            .collect();
        let total: i32 = shares.iter().map(|s| s.replicas).sum();
        let sizes = proportional_sizes(&self.plan, status_replicas, &shares);
        let op = if sizes.iter().sum::<i32>() >= total {
            "up"
        } else {
            "down"
        };
        for (rs, size) in active.iter_mut().zip(sizes) {
            self.scale_rs(rs, size, op).await?;
        }
        Ok(())
    }

    /// kube's `cleanupDeployment`: deletes the oldest old ReplicaSets beyond
    /// `revisionHistoryLimit`, only those with no replicas left.
    pub(super) async fn cleanup(&mut self, olds: &[ReplicaSet]) -> Result<()> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = olds
            .iter()
            .filter(|rs| !util::is_deleting(&rs.metadata))
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| (history::revision_of(rs), by_age(rs)));
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_actual(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = rs.name_any();
            match self
                .replica_sets()
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(ApiError::new("delete replica set", name, e).into()),
            }
        }
        Ok(())
    }

    /// kube's `syncStatusOnly`: a Deployment being deleted only gets its status.
    pub(super) async fn sync_status_only(&mut self, sets: Sets) -> Result<()> {
        self.sync_deployment_status(&sets).await
    }

    /// kube's `syncDeploymentStatus`: writes the computed status if it changed.
    pub(super) async fn sync_deployment_status(&mut self, sets: &Sets) -> Result<()> {
        let status = self.calculate_status(sets);
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.write_status(status).await
    }

    /// Writes `status` (and the Deployment's annotations) through the status
    /// subresource, guarded by the resourceVersion read.
    pub(super) async fn write_status(&mut self, status: DeploymentStatus) -> Result<()> {
        let mut d = self.d.clone();
        d.status = Some(status);
        self.d = self
            .deployments()
            .replace_status(&self.d.name_any(), &PostParams::default(), &d)
            .await
            .map_err(|e| ApiError::new("update deployment status", self.key.clone(), e))?;
        Ok(())
    }
}
