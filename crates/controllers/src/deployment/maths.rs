//! The rollout arithmetic of kube's deployment controller, as pure functions over plain
//! numbers: how far maxSurge and maxUnavailable reach (`ResolveFenceposts`), how much the
//! new ReplicaSet may grow (`NewRSNewReplicas`), how much the old ones may shrink
//! (`reconcileOldReplicaSets`, `cleanupUnhealthyReplicas`,
//! `scaleDownOldReplicaSetsForRollingUpdate`) and how a change of `spec.replicas` in the
//! middle of a rollout is shared out (`scale`, `GetReplicaSetProportion`).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::util::scaled_value;

/// A Deployment's rollout parameters, resolved against its replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `spec.replicas`.
    pub replicas: i32,
    /// Whether the strategy is RollingUpdate (else Recreate).
    pub rolling: bool,
    /// maxSurge, rounded up (0 for Recreate).
    pub surge: i32,
    /// maxUnavailable, rounded down, 1 when both are 0 (0 for Recreate).
    pub unavailable: i32,
}

impl Plan {
    pub fn new(
        replicas: i32,
        rolling: bool,
        max_surge: Option<&IntOrString>,
        max_unavailable: Option<&IntOrString>,
    ) -> Plan {
        let (surge, unavailable) = if rolling {
            resolve_fenceposts(max_surge, max_unavailable, replicas)
        } else {
            (0, 0)
        };
        Plan {
            replicas,
            rolling,
            surge,
            unavailable,
        }
    }

    /// kube's `MaxSurge`.
    pub fn max_surge(&self) -> i32 {
        if self.rolling {
            self.surge
        } else {
            0
        }
    }

    /// kube's `MaxUnavailable`: never more than the replicas.
    pub fn max_unavailable(&self) -> i32 {
        if !self.rolling || self.replicas == 0 {
            0
        } else {
            self.unavailable.min(self.replicas)
        }
    }

    /// `spec.replicas + maxSurge`: the max-replicas annotation.
    pub fn max_replicas(&self) -> i32 {
        self.replicas + self.max_surge()
    }

    /// kube's `NewRSNewReplicas`: the new ReplicaSet's size for this step, given the sum
    /// of every ReplicaSet's `spec.replicas` and the new one's.
    pub fn new_rs_replicas(&self, all_replicas: i32, new_replicas: i32) -> i32 {
        if !self.rolling {
            return self.replicas;
        }
        let max_total = self.replicas + self.surge;
        if all_replicas >= max_total {
            return new_replicas;
        }
        let up = (max_total - all_replicas).min(self.replicas - new_replicas);
        new_replicas + up
    }

    /// kube's `reconcileOldReplicaSets` bound: how many old replicas may go now, given
    /// every ReplicaSet's `spec.replicas` and the new one's size and available count.
    pub fn max_scaled_down(&self, all_replicas: i32, new_replicas: i32, new_available: i32) -> i32 {
        let min_available = self.replicas - self.max_unavailable();
        let new_unavailable = new_replicas - new_available;
        all_replicas - min_available - new_unavailable
    }

    /// kube's `scaleDownOldReplicaSetsForRollingUpdate`: how many available old replicas
    /// may go while keeping `replicas - maxUnavailable` available.
    pub fn available_surplus(&self, available: i32) -> i32 {
        (available - (self.replicas - self.max_unavailable())).max(0)
    }
}

/// kube's `ResolveFenceposts`: maxSurge rounded up, maxUnavailable rounded down, and
/// unavailable 1 when both come to 0 (so a rollout can always move). An unparsable
/// value counts as 0 (the API server refuses them).
pub(crate) fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let surge = scaled_value(max_surge, desired, true).unwrap_or(0);
    let unavailable = scaled_value(max_unavailable, desired, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Takes up to `budget` replicas from ReplicaSets given as `(spec.replicas, take_at_most)`
/// in the order to take them: the new size of each. Used for kube's
/// `cleanupUnhealthyReplicas` (take_at_most = the unavailable ones) and
/// `scaleDownOldReplicaSetsForRollingUpdate` (take_at_most = all).
pub(crate) fn take_down(sets: &[(i32, i32)], budget: i32) -> Vec<i32> {
    let mut taken = 0;
    sets.iter()
        .map(|&(replicas, at_most)| {
            if taken >= budget || replicas == 0 || at_most <= 0 {
                return replicas;
            }
            let n = (budget - taken).min(at_most).min(replicas);
            taken += n;
            replicas - n
        })
        .collect()
}

/// One active ReplicaSet as proportional scaling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Share {
    pub name: String,
    pub created: Option<Timestamp>,
    pub replicas: i32,
    /// The `deployment.kubernetes.io/max-replicas` annotation, if readable.
    pub max_replicas: Option<i32>,
}

/// kube's proportional `scale()`: the new size of each active ReplicaSet (same order as
/// `sets`) when the deployment wants `plan.replicas` (plus surge) and `status_replicas`
/// is the deployment's `status.replicas` (the fallback when an annotation is missing).
/// Shares go by each set's fraction of the old maximum; what rounding leaves over goes to
/// the first in order — the largest (newest first when scaling up, oldest first down).
pub(crate) fn proportional_sizes(plan: &Plan, status_replicas: i32, sets: &[Share]) -> Vec<i32> {
    let total: i32 = sets.iter().map(|s| s.replicas).sum();
    let allowed = if plan.replicas > 0 {
        plan.max_replicas()
    } else {
        0
    };
    let to_add = allowed - total;
    let mut sizes: Vec<i32> = sets.iter().map(|s| s.replicas).collect();
    if to_add == 0 {
        return sizes;
    }
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&sets[a], &sets[b]);
        b.replicas.cmp(&a.replicas).then_with(|| {
            let older = (a.created, &a.name).cmp(&(b.created, &b.name));
            if to_add > 0 {
                older.reverse()
            } else {
                older
            }
        })
    });
    let mut added = 0;
    for &i in &order {
        let p = proportion(plan, status_replicas, &sets[i], to_add, added);
        sizes[i] += p;
        added += p;
    }
    if let Some(&first) = order.first() {
        sizes[first] = (sizes[first] + to_add - added).max(0);
    }
    sizes
}

/// kube's `GetReplicaSetProportion`.
fn proportion(plan: &Plan, status_replicas: i32, set: &Share, to_add: i32, added: i32) -> i32 {
    if set.replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(plan, status_replicas, set);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// kube's `getReplicaSetFraction`: the set's share of the new maximum, minus its size.
fn fraction(plan: &Plan, status_replicas: i32, set: &Share) -> i32 {
    if plan.replicas == 0 {
        return -set.replicas;
    }
    let before = match set.max_replicas {
        Some(m) if m != 0 => m,
        _ => status_replicas,
    };
    if before == 0 {
        return 0;
    }
    let size = f64::from(set.replicas) * f64::from(plan.max_replicas()) / f64::from(before);
    size.round() as i32 - set.replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn plan(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Plan {
        Plan::new(replicas, true, Some(&surge), Some(&unavailable))
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10),
            (3, 2)
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 1),
            (1, 0)
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&pct("10%")), 5),
            (0, 1),
            "both 0 at runtime: one may be unavailable"
        );
        let p = plan(3, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(p.max_unavailable(), 3, "never more than the replicas");
        let r = Plan::new(3, false, Some(&pct("50%")), None);
        assert_eq!((r.max_surge(), r.max_unavailable()), (0, 0));
        assert_eq!(r.new_rs_replicas(3, 0), 3);
    }

    #[test]
    fn the_new_replica_set_grows_within_max_surge() {
        let p = plan(10, pct("25%"), pct("25%"));
        // Fresh rollout: 10 old, 0 new: up to 13 in total.
        assert_eq!(p.new_rs_replicas(10, 0), 3);
        // Already at the ceiling.
        assert_eq!(p.new_rs_replicas(13, 3), 3);
        // Never past the desired count.
        assert_eq!(p.new_rs_replicas(9, 8), 10);
        let p = plan(10, IntOrString::Int(0), IntOrString::Int(1));
        assert_eq!(p.new_rs_replicas(10, 0), 0);
        assert_eq!(p.new_rs_replicas(9, 0), 1);
    }

    #[test]
    fn old_replica_sets_shrink_within_max_unavailable() {
        let p = plan(10, pct("25%"), pct("25%"));
        // 10 old + 3 new (none available): 13 - 8 - 3 = 2 may go.
        assert_eq!(p.max_scaled_down(13, 3, 0), 2);
        // New pods available: 13 - 8 - 0 = 5.
        assert_eq!(p.max_scaled_down(13, 3, 3), 5);
        assert_eq!(p.available_surplus(10), 2);
        assert_eq!(p.available_surplus(7), 0);
        // Unhealthy first, oldest first: (replicas, unavailable).
        assert_eq!(take_down(&[(3, 2), (5, 0), (4, 4)], 3), vec![1, 5, 3]);
        assert_eq!(take_down(&[(0, 0), (5, 5), (4, 4)], 7), vec![0, 0, 2]);
        assert_eq!(take_down(&[(5, 5)], 0), vec![5]);
    }

    fn share(name: &str, at: i64, replicas: i32, max: Option<i32>) -> Share {
        Share {
            name: name.into(),
            created: Timestamp::from_second(at).ok(),
            replicas,
            max_replicas: max,
        }
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // kube's example: 10 replicas, maxSurge 3, mid-rollout 8 old + 5 new = 13;
        // scaled to 15 (max 18): +5 shared 8:5 → old 8*18/13=11 (+3), new 5*18/13=7 (+2).
        let p = plan(15, IntOrString::Int(3), IntOrString::Int(2));
        let sets = [share("old", 1, 8, Some(13)), share("new", 2, 5, Some(13))];
        assert_eq!(proportional_sizes(&p, 13, &sets), vec![11, 7]);
        // Down to 5 (max 8): -5 → old 8*8/13=5 (-3), new 5*8/13=3 (-2).
        let p = plan(5, IntOrString::Int(3), IntOrString::Int(2));
        assert_eq!(proportional_sizes(&p, 13, &sets), vec![5, 3]);
        // To zero: everything goes.
        let p = plan(0, IntOrString::Int(3), IntOrString::Int(2));
        assert_eq!(proportional_sizes(&p, 13, &sets), vec![0, 0]);
    }

    #[test]
    fn leftovers_go_to_the_largest_newest_when_scaling_up() {
        // 3 + 3 of max 6 (replicas 5, surge 1) → replicas 6, max 7: +1, fractions round to 0.
        let p = plan(6, IntOrString::Int(1), IntOrString::Int(0));
        let sets = [share("a", 1, 3, Some(6)), share("b", 2, 3, Some(6))];
        assert_eq!(proportional_sizes(&p, 6, &sets), vec![3, 4]);
        // Down by one: the older of two equals loses it.
        let p = plan(4, IntOrString::Int(1), IntOrString::Int(0));
        assert_eq!(proportional_sizes(&p, 6, &sets), vec![2, 3]);
        // No annotation: the status replicas stand in.
        let p = plan(20, IntOrString::Int(0), IntOrString::Int(1));
        let sets = [share("a", 1, 5, None), share("b", 2, 5, None)];
        assert_eq!(proportional_sizes(&p, 10, &sets), vec![10, 10]);
    }
}
