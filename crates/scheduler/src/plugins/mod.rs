//! The default plugins, one module each, and the default profile that wires them.

pub mod default_preemption;
pub mod inter_pod_affinity;
pub mod pod_topology_spread;
mod topology;

use std::sync::Arc;

use crate::{Config, Framework};

/// kube-scheduler's default profile for `config`.
pub fn default_framework(_config: &Config) -> Framework {
    let mut fw = Framework::default();
    add_spread_affinity_preemption(&mut fw);
    fw
}

/// Appends PodTopologySpread and InterPodAffinity (PreFilter, Filter, PreScore, Score
/// with kube's weight 2 each, in kube's order) and DefaultPreemption (PostFilter).
pub fn add_spread_affinity_preemption(fw: &mut Framework) {
    let spread = Arc::new(pod_topology_spread::PodTopologySpread::default());
    let affinity = Arc::new(inter_pod_affinity::InterPodAffinity::default());
    fw.pre_filter.push(spread.clone());
    fw.pre_filter.push(affinity.clone());
    fw.filter.push(spread.clone());
    fw.filter.push(affinity.clone());
    fw.pre_score.push(affinity.clone());
    fw.pre_score.push(spread.clone());
    fw.score.push((affinity, 2));
    fw.score.push((spread, 2));
    fw.post_filter
        .push(Arc::new(default_preemption::DefaultPreemption::default()));
}
