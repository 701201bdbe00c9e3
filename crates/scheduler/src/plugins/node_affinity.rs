//! NodeAffinity: `spec.nodeSelector` and the required node affinity terms must match the
//! node (`node(s) didn't match Pod's node affinity/selector`); preferred terms add their
//! weights to the score, normalized to 0..=100. When every required term pins
//! `metadata.name`, PreFilter narrows the candidates to those nodes.

use k8s_openapi::api::core::v1::{NodeSelectorTerm, PreferredSchedulingTerm};

use crate::framework::{
    action, default_normalize, ClusterEvent, CycleState, EventResource, Filter, NodeScore, Plugin,
    PreFilter, PreScore, Score, Status,
};
use crate::nodeinfo::{node_matches_term, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";
const FILTER_KEY: &str = "PreFilterNodeAffinity";
const SCORE_KEY: &str = "PreScoreNodeAffinity";

pub struct NodeAffinity;

#[derive(Clone)]
struct Required {
    selector: Vec<(String, String)>,
    /// None when the pod has no required node affinity.
    terms: Option<Vec<NodeSelectorTerm>>,
}

#[derive(Clone)]
struct Preferred(Vec<PreferredSchedulingTerm>);

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(
            EventResource::Node,
            action::ADD | action::UPDATE_NODE_LABEL,
        )]
    }
}

fn required_terms(pod: &PodInfo) -> Option<&Vec<NodeSelectorTerm>> {
    pod.pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .map(|s| &s.node_selector_terms)
}

/// The node names every term pins with `matchFields metadata.name In`, if all do.
fn pinned_names(terms: &[NodeSelectorTerm]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for t in terms {
        let r = t
            .match_fields
            .iter()
            .flatten()
            .find(|r| r.key == "metadata.name" && r.operator == "In")?;
        names.extend(r.values.iter().flatten().cloned());
    }
    names.sort();
    names.dedup();
    Some(names)
}

impl PreFilter for NodeAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, Option<Vec<String>>) {
        let selector: Vec<(String, String)> = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.node_selector.as_ref())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let terms = required_terms(pod).cloned();
        if selector.is_empty() && terms.is_none() {
            return (Status::skip(), None);
        }
        let narrowed = terms.as_deref().and_then(pinned_names);
        if narrowed.as_ref().is_some_and(|n| n.is_empty()) {
            return (Status::unresolvable(REASON), None);
        }
        state.write(FILTER_KEY, Required { selector, terms });
        (Status::success(), narrowed)
    }
}

impl Filter for NodeAffinity {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(req) = state.read::<Required>(FILTER_KEY) else {
            return Status::error("NodeAffinity: PreFilter state missing");
        };
        let selector_ok = req
            .selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        let terms_ok = req.terms.as_ref().is_none_or(|terms| {
            terms
                .iter()
                .any(|t| node_matches_term(t, &node.name, &node.labels))
        });
        if selector_ok && terms_ok {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
    }
}

impl PreScore for NodeAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, _nodes: &[&NodeInfo]) -> Status {
        let preferred = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        if preferred.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, Preferred(preferred));
        Status::success()
    }
}

impl Score for NodeAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(Preferred(terms)) = state.read::<Preferred>(SCORE_KEY) else {
            return Err(Status::error("NodeAffinity: PreScore state missing"));
        };
        Ok(terms
            .iter()
            .filter(|t| t.weight != 0 && node_matches_term(&t.preference, &node.name, &node.labels))
            .map(|t| t.weight as i64)
            .sum())
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize(scores, false);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeSelector, NodeSelectorRequirement};

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_affinity(
        mut p: k8s_openapi::api::core::v1::Pod,
        required: Vec<NodeSelectorTerm>,
        preferred: Vec<PreferredSchedulingTerm>,
    ) -> k8s_openapi::api::core::v1::Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: (!required.is_empty())
                    .then_some(NodeSelector {
                        node_selector_terms: required,
                    }),
                preferred_during_scheduling_ignored_during_execution: Some(preferred),
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn node_selector_and_required_terms() {
        let a = node_info(
            with_labels(node("a", &[]), &[("zone", "z1"), ("gen", "5")]),
            vec![],
        );
        let b = node_info(
            with_labels(node("b", &[]), &[("zone", "z2"), ("gen", "3")]),
            vec![],
        );
        let mut p = pod("p", &[]);
        p.spec.as_mut().unwrap().node_selector =
            Some([("zone".to_string(), "z1".to_string())].into());
        let p = info(p);
        assert!(run_filter(&NodeAffinity, &p, &a).is_success());
        assert_eq!(run_filter(&NodeAffinity, &p, &b).reasons, vec![REASON]);

        let terms = vec![
            NodeSelectorTerm {
                match_expressions: Some(vec![req("gen", "Gt", &["4"])]),
                ..Default::default()
            },
            NodeSelectorTerm {
                match_expressions: Some(vec![req("zone", "NotIn", &["z1", "z2"])]),
                ..Default::default()
            },
        ];
        let p = info(with_affinity(pod("q", &[]), terms, vec![]));
        assert!(run_filter(&NodeAffinity, &p, &a).is_success());
        assert!(!run_filter(&NodeAffinity, &p, &b).is_success());
        // No selector and no terms: the filter is skipped.
        assert!(run_filter(&NodeAffinity, &info(pod("r", &[])), &b).is_success());
    }

    #[test]
    fn match_fields_narrow_candidates() {
        let terms = vec![NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.name", "In", &["b", "c"])]),
            ..Default::default()
        }];
        let p = info(with_affinity(pod("q", &[]), terms, vec![]));
        let (st, nodes) =
            NodeAffinity.pre_filter(&mut CycleState::default(), &p, &Snapshot::default());
        assert!(st.is_success());
        assert_eq!(nodes, Some(vec!["b".to_string(), "c".to_string()]));
    }

    #[test]
    fn preferred_terms_score() {
        let a = node_info(with_labels(node("a", &[]), &[("disk", "ssd")]), vec![]);
        let b = node_info(with_labels(node("b", &[]), &[("disk", "hdd")]), vec![]);
        let pref = vec![
            PreferredSchedulingTerm {
                weight: 80,
                preference: NodeSelectorTerm {
                    match_expressions: Some(vec![req("disk", "In", &["ssd"])]),
                    ..Default::default()
                },
            },
            PreferredSchedulingTerm {
                weight: 20,
                preference: NodeSelectorTerm {
                    match_expressions: Some(vec![req("disk", "Exists", &[])]),
                    ..Default::default()
                },
            },
        ];
        let p = info(with_affinity(pod("q", &[]), vec![], pref));
        let mut st = CycleState::default();
        assert!(NodeAffinity.pre_score(&mut st, &p, &[&a, &b]).is_success());
        let mut scores = vec![
            NodeScore {
                node: 0,
                score: NodeAffinity.score(&st, &p, &a).unwrap(),
            },
            NodeScore {
                node: 1,
                score: NodeAffinity.score(&st, &p, &b).unwrap(),
            },
        ];
        assert_eq!((scores[0].score, scores[1].score), (100, 20));
        NodeAffinity.normalize(&st, &p, &mut scores);
        assert_eq!((scores[0].score, scores[1].score), (100, 20));
    }
}
