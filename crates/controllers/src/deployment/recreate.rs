//! Recreate (kube's `recreate.go`): empty the old ReplicaSets, wait until none of their
//! pods runs any more, then create (or grow) the new one to the full count.

use std::collections::HashSet;

use super::sync::Sets;
use super::{progress, rs_actual, rs_replicas, Result, Run};
use crate::util;

impl Run<'_> {
    /// kube's `rolloutRecreate`.
    pub(super) async fn rollout_recreate(&mut self, mut sets: Sets) -> Result<()> {
        let mut scaled_down = false;
        for rs in sets.olds.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            scaled_down |= self.scale_and_record(rs, 0).await?;
        }
        if scaled_down || self.old_pods_running(&sets) {
            return self.sync_rollout_status(&sets).await;
        }
        if sets.new.is_none() {
            self.create_new_rs(&mut sets).await?;
        }
        let replicas = self.plan.replicas;
        if let Some(new) = sets.new.as_mut() {
            self.scale_and_record(new, replicas).await?;
        }
        let status = self.d.status.clone().unwrap_or_default();
        if progress::complete(&self.d, &status) {
            self.cleanup(&sets.olds).await?;
        }
        self.sync_rollout_status(&sets).await
    }

    /// kube's `oldPodsRunning`: an old ReplicaSet still reports replicas, or one of its
    /// pods has not ended (an Unknown phase counts as running).
    fn old_pods_running(&self, sets: &Sets) -> bool {
        if sets.olds.iter().map(rs_actual).sum::<i32>() > 0 {
            return true;
        }
        let olds: HashSet<&str> = sets
            .olds
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        if olds.is_empty() {
            return false;
        }
        let mut running = false;
        self.c.pods.for_each(Some(&self.ns), |pod| {
            if running {
                return;
            }
            let owned =
                util::controller_of(&pod.metadata).is_some_and(|r| olds.contains(r.uid.as_str()));
            if owned && !util::is_terminal(pod) {
                running = true;
            }
        });
        running
    }
}
