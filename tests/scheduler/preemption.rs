//! Priority and preemption: the API server resolves priorityClassName into spec.priority,
//! and a high-priority pod that fits nowhere evicts a lower-priority one, is nominated to
//! its node and placed there once the victim is gone.

use serde_json::json;

use crate::cluster::{pod, Cluster, Node};
use crate::common::VERSIONS;

#[test]
fn a_high_priority_pod_preempts_a_low_priority_one_on_a_full_node() {
    let c = Cluster::start(VERSIONS[1]);
    for (name, value) in [("low", 100), ("high", 1000)] {
        c.create(&json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
        }));
    }
    c.node(&Node::new("only", "2"));
    c.create(&pod(
        "victim",
        json!({"app": "batch"}),
        Some("2"),
        json!({"priorityClassName": "low"}),
    ));
    assert_eq!(c.bound("victim"), "only");
    c.create(&pod(
        "urgent",
        json!({"app": "web"}),
        Some("2"),
        json!({"priorityClassName": "high"}),
    ));
    let urgent = c
        .kubectl(&["get", "pod", "urgent", "-o", "jsonpath={.spec.priority}"])
        .ok();
    assert_eq!(urgent.stdout, "1000");

    let nominated = c.wait_pod("urgent", "it is nominated to a node", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            == Some("only")
    });
    assert_eq!(crate::cluster::node_name(&nominated), None);
    // The victim is deleted gracefully: with no kubelet to confirm, it stays Terminating.
    c.wait_pod("victim", "it is being deleted", |p| {
        p.metadata.deletion_timestamp.is_some()
    });
    let preempted = c.event("victim", "Preempted");
    assert_eq!(preempted["type"], "Normal");
    // Play the kubelet: the victim's containers are gone.
    c.kubectl(&["delete", "pod", "victim", "--grace-period=0", "--force"])
        .ok();
    assert_eq!(c.bound("urgent"), "only");
}
