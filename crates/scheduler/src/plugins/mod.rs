//! The default plugins, one module each, and the default profile that wires them.

pub mod default_preemption;
pub mod inter_pod_affinity;
pub mod pod_topology_spread;
mod topology;

use std::sync::Arc;

use crate::{Config, Framework};

pub mod balanced_allocation;
pub mod image_locality;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod taint_toleration;
pub mod volume_binding;

#[cfg(test)]
pub(crate) mod testutil;

/// A PreFilter outcome for plugins with nothing to narrow: Skip (their Filter does not
/// run this cycle) unless the pod needs them.
pub fn skip_unless(needed: bool) -> (crate::framework::Status, Option<Vec<String>>) {
    use crate::framework::Status;
    if needed {
        (Status::success(), None)
    } else {
        (Status::skip(), None)
    }
}

/// kube-scheduler's default profile for `config`: filters in kube's order, score plugins
/// with kube's default weights.
pub fn default_framework(config: &Config) -> Framework {
    let mut fw = Framework::default();
    let fit = Arc::new(node_resources_fit::NodeResourcesFit {
        strategy: config.scoring_strategy,
    });
    let ports = Arc::new(node_ports::NodePorts);
    let affinity = Arc::new(node_affinity::NodeAffinity);
    let taints = Arc::new(taint_toleration::TaintToleration);
    let name = Arc::new(node_name::NodeName);
    let volumes = Arc::new(volume_binding::VolumeBinding);
    let balanced = Arc::new(balanced_allocation::BalancedAllocation);

    fw.pre_filter.push(name.clone());
    fw.pre_filter.push(ports.clone());
    fw.pre_filter.push(affinity.clone());
    fw.pre_filter.push(volumes.clone());

    fw.filter
        .push(Arc::new(node_unschedulable::NodeUnschedulable));
    fw.filter.push(name);
    fw.filter.push(taints.clone());
    fw.filter.push(affinity.clone());
    fw.filter.push(ports);
    fw.filter.push(fit.clone());
    fw.filter.push(volumes);

    fw.pre_score.push(taints.clone());
    fw.pre_score.push(affinity.clone());
    fw.pre_score.push(balanced.clone());

    fw.score.push((taints, 3));
    fw.score.push((affinity, 2));
    fw.score.push((fit, 1));
    fw.score.push((balanced, 1));
    fw.score.push((Arc::new(image_locality::ImageLocality), 1));
    // Last in kube's filter order; their scores weigh 2 each.
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
