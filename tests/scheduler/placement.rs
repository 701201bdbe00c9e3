//! Where pods land, and why the ones that fit nowhere stay Pending: resources, pod
//! affinity and anti-affinity, taints, topology spread, node selectors and affinity, host
//! ports — each as kube-scheduler places it and words it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::cluster::{pod, unschedulable_message, Cluster, Node};
use crate::common::VERSIONS;

fn anti_affinity(app: &str) -> serde_json::Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": app}},
        "topologyKey": "kubernetes.io/hostname",
    }]}}})
}

fn affinity(app: &str) -> serde_json::Value {
    json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": app}},
        "topologyKey": "kubernetes.io/hostname",
    }]}}})
}

/// The seed's "spread around": three replicas with required anti-affinity take one node
/// each; a fourth has nowhere to go and says so, in the pod's condition, its
/// FailedScheduling Event and `kubectl describe`.
#[test]
fn anti_affinity_puts_one_replica_per_node_and_the_fourth_stays_pending() {
    let c = Cluster::start(VERSIONS[1]);
    for n in ["node-1", "node-2", "node-3"] {
        c.node(&Node::new(n, "4"));
    }
    let web = |i: usize| {
        pod(
            &format!("web-{i}"),
            json!({"app": "web"}),
            Some("500m"),
            anti_affinity("web"),
        )
    };
    for i in 0..3 {
        c.create(&web(i));
    }
    let nodes: BTreeSet<String> = (0..3).map(|i| c.bound(&format!("web-{i}"))).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["node-1".into(), "node-2".into(), "node-3".into()])
    );
    c.create(&web(3));
    let expected = unschedulable_message(
        3,
        "3 node(s) didn't match pod anti-affinity rules",
        "3 No preemption victims found for incoming pod",
    );
    assert_eq!(c.unschedulable("web-3"), expected);

    let failed = c.event("web-3", "FailedScheduling");
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["message"], expected.as_str());
    // kube-scheduler records through events.k8s.io/v1: core/v1 shows it as the
    // reporting component (`source` stays empty).
    assert_eq!(
        failed["reportingComponent"], "default-scheduler",
        "{failed}"
    );
    let scheduled = c.event("web-0", "Scheduled");
    assert_eq!(scheduled["type"], "Normal");
    assert_eq!(
        scheduled["message"],
        format!(
            "Successfully assigned default/web-0 to {}",
            c.bound("web-0")
        )
    );
    for v in VERSIONS {
        let d = c
            .server
            .kubectl(v, &["describe", "pod", "web-3"])
            .ok()
            .stdout;
        assert!(d.contains("FailedScheduling"), "kubectl {v} describe:\n{d}");
        assert!(
            d.contains("default-scheduler"),
            "kubectl {v} describe:\n{d}"
        );
        assert!(d.contains(&expected), "kubectl {v} describe:\n{d}");
        assert!(d.contains("PodScheduled"), "kubectl {v} describe:\n{d}");
    }
}

/// The seed's "run together": pods with required affinity to an app land on its node;
/// affinity to an app that runs nowhere cannot be met, and preemption cannot help.
#[test]
fn required_affinity_lands_on_the_apps_node() {
    let c = Cluster::start(VERSIONS[0]);
    for n in ["node-1", "node-2", "node-3"] {
        c.node(&Node::new(n, "4"));
    }
    c.create(&pod("db", json!({"app": "db"}), Some("1"), json!({})));
    let db_node = c.bound("db");
    for i in 0..3 {
        c.create(&pod(
            &format!("cache-{i}"),
            json!({"app": "cache"}),
            Some("500m"),
            affinity("db"),
        ));
    }
    for i in 0..3 {
        assert_eq!(c.bound(&format!("cache-{i}")), db_node, "cache-{i}");
    }
    c.create(&pod(
        "lonely",
        json!({"app": "lonely"}),
        None,
        affinity("nowhere"),
    ));
    assert_eq!(
        c.unschedulable("lonely"),
        unschedulable_message(
            3,
            "3 node(s) didn't match pod affinity rules",
            "3 Preemption is not helpful for scheduling"
        )
    );
}

/// Requests are counted against allocatable: a 2-CPU pod fits no 1-CPU node, waits, and
/// is placed as soon as a node it fits is added — woken by the node event, not a timer.
#[test]
fn insufficient_cpu_waits_until_a_bigger_node_joins() {
    let c = Cluster::start(VERSIONS[1]);
    c.node(&Node::new("small-1", "1"));
    c.node(&Node::new("small-2", "1"));
    c.create(&pod("big", json!({"app": "big"}), Some("2"), json!({})));
    assert_eq!(
        c.unschedulable("big"),
        unschedulable_message(
            2,
            "2 Insufficient cpu",
            "2 No preemption victims found for incoming pod"
        )
    );
    // A pod that fits is not held up by the one that does not.
    c.create(&pod(
        "small",
        json!({"app": "small"}),
        Some("500m"),
        json!({}),
    ));
    assert!(c.bound("small").starts_with("small-"));
    c.node(&Node::new("large", "4"));
    // kube-scheduler moves the pod back to the active queue on the node-add event; only a
    // missed event would leave it to the periodic flush (minutes).
    assert_eq!(c.bound_within("big", Duration::from_secs(10)), "large");
}

/// NoSchedule taints keep pods off unless tolerated; PreferNoSchedule only steers.
#[test]
fn a_tainted_node_is_avoided_unless_tolerated() {
    let c = Cluster::start(VERSIONS[0]);
    c.node(&Node::new("gpu", "4").taint("dedicated", "gpu", "NoSchedule"));
    c.node(&Node::new("plain", "4"));
    for i in 0..3 {
        c.create(&pod(
            &format!("any-{i}"),
            json!({"app": "any"}),
            Some("100m"),
            json!({}),
        ));
    }
    for i in 0..3 {
        assert_eq!(c.bound(&format!("any-{i}")), "plain", "any-{i}");
    }
    let on_gpu = json!({"nodeSelector": {"kubernetes.io/hostname": "gpu"}});
    c.create(&pod("intruder", json!({"app": "x"}), None, on_gpu.clone()));
    assert_eq!(
        c.unschedulable("intruder"),
        unschedulable_message(
            2,
            "1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}",
            "2 Preemption is not helpful for scheduling"
        )
    );
    let mut tolerating = on_gpu;
    tolerating["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    c.create(&pod("trainer", json!({"app": "x"}), None, tolerating));
    assert_eq!(c.bound("trainer"), "gpu");
    // Exists without a key tolerates every taint.
    c.create(&pod(
        "tolerates-all",
        json!({"app": "x"}),
        None,
        json!({"nodeSelector": {"kubernetes.io/hostname": "gpu"}, "tolerations": [{"operator": "Exists"}]}),
    ));
    assert_eq!(c.bound("tolerates-all"), "gpu");

    // PreferNoSchedule: the scheduler prefers the untainted node while it has room.
    c.node(&Node::new("spot", "4").taint("spot", "true", "PreferNoSchedule"));
    c.node(&Node::new("steady", "4"));
    let not_plain_or_gpu = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["spot", "steady"]}]}],
    }}}});
    c.create(&pod(
        "batch",
        json!({"app": "batch"}),
        Some("100m"),
        not_plain_or_gpu,
    ));
    assert_eq!(c.bound("batch"), "steady");
}

/// maxSkew 1 over zones with DoNotSchedule: zone counts never differ by more than one,
/// however many nodes each zone has.
#[test]
fn topology_spread_keeps_zones_even() {
    let c = Cluster::start(VERSIONS[1]);
    for (n, zone) in [
        ("a-1", "zone-a"),
        ("a-2", "zone-a"),
        ("a-3", "zone-a"),
        ("b-1", "zone-b"),
    ] {
        c.node(&Node::new(n, "4").label("topology.kubernetes.io/zone", zone));
    }
    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "spread"}},
    }]});
    for i in 0..6 {
        c.create(&pod(
            &format!("spread-{i}"),
            json!({"app": "spread"}),
            Some("100m"),
            spread.clone(),
        ));
    }
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..6 {
        let node = c.bound(&format!("spread-{i}"));
        *per_zone
            .entry(if node.starts_with("a-") {
                "zone-a"
            } else {
                "zone-b"
            })
            .or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("zone-a", 3), ("zone-b", 3)]));
}

/// nodeSelector and node affinity (required terms with In, NotIn, Exists, Gt; preferred
/// terms by weight).
#[test]
fn node_selector_and_node_affinity_are_honoured() {
    let c = Cluster::start(VERSIONS[0]);
    c.node(
        &Node::new("ssd-1", "4")
            .label("disk", "ssd")
            .label("topology.kubernetes.io/zone", "a")
            .label("gen", "5"),
    );
    c.node(
        &Node::new("hdd-1", "4")
            .label("disk", "hdd")
            .label("topology.kubernetes.io/zone", "b")
            .label("gen", "1"),
    );
    c.node(
        &Node::new("hdd-2", "4")
            .label("disk", "hdd")
            .label("topology.kubernetes.io/zone", "c")
            .label("gen", "1"),
    );
    let required = |exprs: serde_json::Value| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": exprs}],
        }}}})
    };
    c.create(&pod(
        "fast",
        json!({"app": "a"}),
        None,
        json!({"nodeSelector": {"disk": "ssd"}}),
    ));
    c.create(&pod(
        "in-b",
        json!({"app": "a"}),
        None,
        required(
            json!([{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]),
        ),
    ));
    c.create(&pod("not-ab", json!({"app": "a"}), None, required(json!([{"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["a", "b"]}]))));
    c.create(&pod(
        "new-gen",
        json!({"app": "a"}),
        None,
        required(json!([{"key": "gen", "operator": "Gt", "values": ["2"]}])),
    ));
    assert_eq!(c.bound("fast"), "ssd-1");
    assert_eq!(c.bound("in-b"), "hdd-1");
    assert_eq!(c.bound("not-ab"), "hdd-2");
    assert_eq!(c.bound("new-gen"), "ssd-1");
    // Two terms are ORed.
    c.create(&pod(
        "either",
        json!({"app": "a"}),
        None,
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["c"]}]},
        ]}}}}),
    ));
    assert_eq!(c.bound("either"), "hdd-2");
    // Preferred terms: the heaviest matching node wins when all else is equal.
    c.create(&pod(
        "likes-b",
        json!({"app": "b"}),
        None,
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}},
            {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
        ]}}}),
    ));
    assert_eq!(c.bound("likes-b"), "hdd-1");
    c.create(&pod(
        "gpu",
        json!({"app": "a"}),
        None,
        required(json!([{"key": "gpu", "operator": "Exists"}])),
    ));
    assert_eq!(
        c.unschedulable("gpu"),
        unschedulable_message(
            3,
            "3 node(s) didn't match Pod's node affinity/selector",
            "3 Preemption is not helpful for scheduling"
        )
    );
}

/// Two pods asking for one host port never share a node.
#[test]
fn host_port_conflicts_are_avoided() {
    let c = Cluster::start(VERSIONS[1]);
    c.node(&Node::new("node-1", "4"));
    c.node(&Node::new("node-2", "4"));
    let port = |p: u16| {
        json!({"containers": [{
            "name": "app",
            "image": "registry.k8s.io/pause:3.9",
            "ports": [{"containerPort": 80, "hostPort": p, "protocol": "TCP"}],
        }]})
    };
    let hp = |i: usize| pod(&format!("hp-{i}"), json!({"app": "hp"}), None, port(8080));
    c.create(&hp(0));
    c.create(&hp(1));
    let a = c.bound("hp-0");
    let b = c.bound("hp-1");
    assert_ne!(a, b, "hp-0 and hp-1 share host port 8080");
    c.create(&hp(2));
    assert_eq!(
        c.unschedulable("hp-2"),
        unschedulable_message(
            2,
            "2 node(s) didn't have free ports for the requested pod ports",
            "2 No preemption victims found for incoming pod"
        )
    );
    // Another port still fits.
    c.create(&pod("other-port", json!({"app": "hp"}), None, port(8081)));
    c.bound("other-port");
}
