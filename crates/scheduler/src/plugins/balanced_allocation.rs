//! NodeResourcesBalancedAllocation: prefers nodes where, with the pod placed, cpu and memory
//! would be used in equal fractions (score = (1 - std of the fractions) · 100). Pods that
//! request nothing are skipped, as kube does, since they change no fraction.

use crate::framework::{CycleState, Plugin, PreScore, Score, Status, MAX_NODE_SCORE};
use crate::nodeinfo::{NodeInfo, PodInfo};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreScore for BalancedAllocation {
    fn pre_score(&self, _state: &mut CycleState, pod: &PodInfo, _nodes: &[&NodeInfo]) -> Status {
        if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
            return Status::skip();
        }
        Status::success()
    }
}

fn fraction(requested: i64, capacity: i64) -> Option<f64> {
    (capacity > 0).then(|| (requested as f64 / capacity as f64).min(1.0))
}

impl Score for BalancedAllocation {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let cpu = fraction(
            node.requested.milli_cpu + pod.requests.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let mem = fraction(
            node.requested.memory + pod.requests.memory,
            node.allocatable.memory,
        );
        let std = match (cpu, mem) {
            (Some(c), Some(m)) => ((c - m) / 2.0).abs(),
            _ => 0.0,
        };
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;

    #[test]
    fn balanced_scores_higher() {
        let n = node_info(
            node("n", &[("cpu", "4"), ("memory", "16Gi"), ("pods", "110")]),
            vec![],
        );
        let even = info(pod("a", &[("cpu", "2"), ("memory", "8Gi")]));
        let skewed = info(pod("b", &[("cpu", "4"), ("memory", "0")]));
        let st = CycleState::default();
        assert_eq!(BalancedAllocation.score(&st, &even, &n).unwrap(), 100);
        assert_eq!(BalancedAllocation.score(&st, &skewed, &n).unwrap(), 50);
        let none = info(pod("c", &[]));
        assert_eq!(
            BalancedAllocation
                .pre_score(&mut CycleState::default(), &none, &[])
                .code,
            crate::framework::Code::Skip
        );
    }
}
