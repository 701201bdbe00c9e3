//! RollingUpdate (kube's `rolling.go`): grow the new ReplicaSet up to
//! `replicas + maxSurge` in total, shrink the old ones while at least
//! `replicas - maxUnavailable` stay available, the unhealthy old replicas first. A
//! rollout whose new pods never become available therefore stops by itself: the surge is
//! used up and nothing more may become unavailable.

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::maths::take_down;
use super::sync::Sets;
use super::{progress, rs_available, rs_replicas, Result, Run};

impl Run<'_> {
    /// kube's `rolloutRolling`.
    pub(super) async fn rollout_rolling(&mut self, mut sets: Sets) -> Result<()> {
        if sets.new.is_none() {
            self.create_new_rs(&mut sets).await?;
        }
        if self.reconcile_new_rs(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        if self.reconcile_old_rss(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        let status = self.d.status.clone().unwrap_or_default();
        if progress::complete(&self.d, &status) {
            self.cleanup(&sets.olds).await?;
        }
        self.sync_rollout_status(&sets).await
    }

    /// kube's `reconcileNewReplicaSet`: one step of growth (or a cut back to the
    /// desired count).
    async fn reconcile_new_rs(&mut self, sets: &mut Sets) -> Result<bool> {
        let total = sets.spec_replicas();
        let Some(new) = sets.new.as_mut() else {
            return Ok(false);
        };
        let (current, desired) = (rs_replicas(new), self.plan.replicas);
        if current == desired {
            return Ok(false);
        }
        let target = if current > desired {
            desired
        } else {
            self.plan.new_rs_replicas(total, current)
        };
        self.scale_and_record(new, target).await
    }

    /// kube's `reconcileOldReplicaSets`: unhealthy old replicas first, then available
    /// ones beyond the minimum availability.
    async fn reconcile_old_rss(&mut self, sets: &mut Sets) -> Result<bool> {
        let old_total: i32 = sets.olds.iter().map(rs_replicas).sum();
        if old_total == 0 {
            return Ok(false);
        }
        let all_total = sets.spec_replicas();
        let (new_replicas, new_available) = sets
            .new
            .as_ref()
            .map_or((0, 0), |rs| (rs_replicas(rs), rs_available(rs)));
        let budget = self
            .plan
            .max_scaled_down(all_total, new_replicas, new_available);
        if budget <= 0 {
            return Ok(false);
        }
        let unhealthy: Vec<(i32, i32)> = sets
            .olds
            .iter()
            .map(|rs| (rs_replicas(rs), rs_replicas(rs) - rs_available(rs)))
            .collect();
        let mut scaled = self
            .apply_sizes(&mut sets.olds, take_down(&unhealthy, budget))
            .await?;
        // A ReplicaSet just scaled down still reports the available pods it is about to
        // delete (its status lags its spec): count at most spec.replicas of them, or two
        // syncs in a row would take down the same surplus twice.
        let available: i32 = sets
            .all()
            .map(|rs| rs_available(rs).min(rs_replicas(rs)))
            .sum();
        let surplus = self.plan.available_surplus(available);
        if surplus > 0 {
            let all: Vec<(i32, i32)> = sets
                .olds
                .iter()
                .map(|rs| (rs_replicas(rs), rs_replicas(rs)))
                .collect();
            scaled |= self
                .apply_sizes(&mut sets.olds, take_down(&all, surplus))
                .await?;
        }
        Ok(scaled)
    }

    /// Scales each ReplicaSet to its size; whether any changed.
    async fn apply_sizes(&mut self, sets: &mut [ReplicaSet], sizes: Vec<i32>) -> Result<bool> {
        let mut scaled = false;
        for (rs, size) in sets.iter_mut().zip(sizes) {
            scaled |= self.scale_and_record(rs, size).await?;
        }
        Ok(scaled)
    }
}
