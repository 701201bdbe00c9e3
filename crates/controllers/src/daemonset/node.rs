//! Which nodes a DaemonSet's pods belong on (kube's `NodeShouldRunDaemonPod`), and the
//! pod a DaemonSet makes for one node: its template pinned to the node by a required
//! `matchFields metadata.name In [node]` term (the scheduler binds it) and tolerating the
//! taints a node's own troubles put on it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Taint, Toleration,
};

/// Whether a new daemon pod should run on the node, and whether one already there may
/// keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub should_run: bool,
    pub should_continue_running: bool,
}

/// kube's `NodeShouldRunDaemonPod` for a pod spec already carrying the daemon
/// tolerations and the node's affinity term (see [`daemon_pod_spec`]).
pub(crate) fn placement(node: &Node, spec: &PodSpec) -> Placement {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let no = Placement {
        should_run: false,
        should_continue_running: false,
    };
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return no;
    }
    if !fits_node_affinity(node, spec) {
        return no;
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let untolerated = |effects: &[&str]| {
        taints.iter().any(|t| {
            effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
        })
    };
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return Placement {
            should_run: false,
            should_continue_running: !untolerated(&["NoExecute"]),
        };
    }
    Placement {
        should_run: true,
        should_continue_running: true,
    }
}

/// kube's `Toleration.ToleratesTaint`.
pub(crate) fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => {
            tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The node selector and the required node-affinity terms (any one) both match.
fn fits_node_affinity(node: &Node, spec: &PodSpec) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&EMPTY);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(r) => r
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, name, labels)),
    }
}

/// A node selector term: every expression and field; an empty term matches nothing.
fn term_matches(term: &NodeSelectorTerm, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else {
                return false;
            };
            match bound.parse::<i64>() {
                Ok(b) if r.operator == "Gt" => v > b,
                Ok(b) => v < b,
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// The node a daemon pod is for: its `spec.nodeName` once bound, else its affinity's
/// `matchFields metadata.name In [node]` (kube's `GetTargetNodeName`).
pub(crate) fn target_node(spec: Option<&PodSpec>) -> Option<String> {
    let spec = spec?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.as_ref()?.iter().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| {
                    f.values
                        .as_ref()
                        .and_then(|v| (v.len() == 1).then(|| v[0].clone()))
                })
                .flatten()
        })
    })
}

/// The template's pod spec with the daemon tolerations and pinned to `node`.
pub(crate) fn daemon_pod_spec(template: &PodSpec, node: &str) -> PodSpec {
    let mut spec = template.clone();
    add_daemon_tolerations(&mut spec);
    pin_to_node(&mut spec, node);
    spec
}

/// kube's `ReplaceDaemonSetPodNodeNameNodeAffinity`: every required term gets (only) the
/// `metadata.name In [node]` field, keeping its label expressions.
pub(crate) fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let field = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let pinned = |exprs: Option<Vec<NodeSelectorRequirement>>| NodeSelectorTerm {
        match_expressions: exprs,
        match_fields: Some(vec![field.clone()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let terms = match na
        .required_during_scheduling_ignored_during_execution
        .take()
    {
        Some(sel) if !sel.node_selector_terms.is_empty() => sel
            .node_selector_terms
            .into_iter()
            .map(|t| pinned(t.match_expressions.filter(|e| !e.is_empty())))
            .collect(),
        _ => vec![pinned(None)],
    };
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: terms,
    });
}

/// kube's `AddOrUpdateDaemonPodTolerations`: daemons ride out the node's own troubles.
pub(crate) fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        // kube's AddOrUpdateTolerationInPodSpec: same key, operator, value and effect
        // replaces; anything else is added.
        match tolerations.iter_mut().find(|x| {
            x.key == t.key
                && x.operator.as_deref().unwrap_or("Equal") == "Exists"
                && x.value.as_deref().unwrap_or_default().is_empty()
                && x.effect == t.effect
        }) {
            Some(x) => *x = t,
            None => tolerations.push(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn taints_keep_new_pods_off_and_no_execute_evicts() {
        let base = PodSpec::default();
        let spec = daemon_pod_spec(&base, "a");
        let plain = node(json!({"metadata": {"name": "a"}}));
        assert!(placement(&plain, &spec).should_run);
        let no_sched = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert_eq!(
            placement(&no_sched, &spec),
            Placement {
                should_run: false,
                should_continue_running: true
            }
        );
        let no_exec = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]}}));
        assert!(!placement(&no_exec, &spec).should_continue_running);
        let mut tolerant = base.clone();
        tolerant.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            ..Default::default()
        }]);
        assert!(placement(&no_exec, &daemon_pod_spec(&tolerant, "a")).should_run);
        // A cordoned node still runs daemons.
        let cordoned = node(
            json!({"metadata": {"name": "a"}, "spec": {"unschedulable": true, "taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        );
        assert!(placement(&cordoned, &spec).should_run);
    }

    #[test]
    fn selectors_and_affinity_pick_nodes_and_pods_are_pinned() {
        let mut base = PodSpec {
            node_selector: Some([("disk".to_string(), "ssd".to_string())].into()),
            ..Default::default()
        };
        let ssd = node(json!({"metadata": {"name": "a", "labels": {"disk": "ssd", "zone": "z1"}}}));
        let hdd = node(json!({"metadata": {"name": "b", "labels": {"disk": "hdd"}}}));
        assert!(placement(&ssd, &daemon_pod_spec(&base, "a")).should_run);
        assert!(!placement(&hdd, &daemon_pod_spec(&base, "b")).should_run);
        base.affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}],
                 "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["x"]}]}]}}}))
        .unwrap();
        let spec = daemon_pod_spec(&base, "a");
        assert!(!placement(&ssd, &spec).should_run);
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(
            terms[0].match_fields.as_ref().unwrap()[0].values,
            Some(vec!["a".into()])
        );
        assert_eq!(terms[0].match_expressions.as_ref().unwrap()[0].key, "zone");
        assert_eq!(target_node(Some(&spec)), Some("a".into()));
        let keys: Vec<_> = spec
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| t.key.clone())
            .collect();
        assert_eq!(keys.len(), 6);
        assert!(!keys.iter().any(|k| k.contains("network-unavailable")));
    }
}
