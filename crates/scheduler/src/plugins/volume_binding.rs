//! VolumeBinding: pods go only where their bound volumes are.
//!
//! PreFilter reads the pod's PersistentVolumeClaims from the snapshot: a missing claim
//! makes the pod unschedulable (`persistentvolumeclaim "x" not found`); a claim bound to
//! a volume with a required node affinity (a local-path volume lives on one node) narrows
//! Filter to nodes that affinity selects, the others getting kube's `node(s) had volume
//! node affinity conflict`. An unbound claim admits every node: skiff's local-path
//! provisioner makes the volume on the node the pod lands on (kube's `WaitForFirstConsumer`
//! without the PreBind hand-off; a claim of an Immediate class is bound by the PV
//! controller before its pod needs it). PVC, PV and StorageClass changes move pods this
//! plugin rejected back to the active queue.

use k8s_openapi::api::core::v1::NodeSelector;

use crate::framework::{
    action, ClusterEvent, CycleState, EventResource, Filter, Plugin, PreFilter, Status,
};
use crate::nodeinfo::{node_matches_term, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "VolumeBinding";
const STATE_KEY: &str = "PreFilterVolumeBinding";
pub const CONFLICT: &str = "node(s) had volume node affinity conflict";

/// The node affinities of the pod's bound volumes.
#[derive(Clone)]
struct Affinities(Vec<NodeSelector>);

pub struct VolumeBinding;

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(
                EventResource::PersistentVolume,
                action::ADD | action::UPDATE,
            ),
            ClusterEvent::new(
                EventResource::PersistentVolumeClaim,
                action::ADD | action::UPDATE,
            ),
            ClusterEvent::new(EventResource::StorageClass, action::ADD | action::UPDATE),
            ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_LABEL),
        ]
    }
}

/// Whether the pod mounts a PersistentVolumeClaim (directly or as a generic ephemeral
/// volume).
pub fn has_claims(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| {
            v.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        })
}

impl PreFilter for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, Option<Vec<String>>) {
        if !has_claims(pod) {
            return (Status::skip(), None);
        }
        let volumes = pod.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let mut affinities = Vec::new();
        for c in volumes
            .into_iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
        {
            let key = format!("{}/{}", pod.namespace, c.claim_name);
            match snapshot.claims.get(&key) {
                None => {
                    return (
                        Status::unresolvable(format!(
                            "persistentvolumeclaim \"{}\" not found",
                            c.claim_name
                        )),
                        None,
                    )
                }
                Some(None) => {}
                Some(Some(pv)) => match snapshot.volumes.get(pv) {
                    Some(Some(sel)) => affinities.push(sel.clone()),
                    Some(None) => {}
                    // The volume event will come: try again then.
                    None => {
                        return (
                            Status::unschedulable(format!(
                                "persistentvolume \"{pv}\" bound to persistentvolumeclaim \"{}\" not found",
                                c.claim_name
                            )),
                            None,
                        )
                    }
                },
            }
        }
        if affinities.is_empty() {
            return (Status::skip(), None);
        }
        state.write(STATE_KEY, Affinities(affinities));
        (Status::success(), None)
    }
}

impl Filter for VolumeBinding {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(a) = state.read::<Affinities>(STATE_KEY) else {
            return Status::error("VolumeBinding: PreFilter state missing");
        };
        let ok = a.0.iter().all(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| node_matches_term(t, &node.name, &node.labels))
        });
        if ok {
            Status::success()
        } else {
            Status::unresolvable(CONFLICT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testutil::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};

    fn with_claim(
        mut p: k8s_openapi::api::core::v1::Pod,
        claim: &str,
    ) -> k8s_openapi::api::core::v1::Pod {
        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        p
    }

    fn on_host(host: &str) -> NodeSelector {
        serde_json::from_value(
            serde_json::json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}),
        )
        .unwrap()
    }

    #[test]
    fn bound_volumes_pin_pods_to_their_nodes() {
        let mut snap = Snapshot::default();
        let p = info(with_claim(pod("a", &[]), "data"));
        let (st, _) =
            VolumeBinding.pre_filter(&mut CycleState::default(), &info(pod("b", &[])), &snap);
        assert_eq!(st.code, Code::Skip, "no claims");
        let (st, _) = VolumeBinding.pre_filter(&mut CycleState::default(), &p, &snap);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons[0], "persistentvolumeclaim \"data\" not found");
        // Unbound: every node (the volume is made where the pod lands).
        snap.claims.insert(format!("{}/data", p.namespace), None);
        let (st, _) = VolumeBinding.pre_filter(&mut CycleState::default(), &p, &snap);
        assert_eq!(st.code, Code::Skip);
        snap.claims
            .insert(format!("{}/data", p.namespace), Some("pv1".into()));
        let (st, _) = VolumeBinding.pre_filter(&mut CycleState::default(), &p, &snap);
        assert_eq!(st.code, Code::Unschedulable, "volume not seen yet");
        snap.volumes.insert("pv1".into(), Some(on_host("n1")));
        let mut state = CycleState::default();
        let (st, _) = VolumeBinding.pre_filter(&mut state, &p, &snap);
        assert!(st.is_success());
        let n1 = NodeInfo::new(std::sync::Arc::new(with_labels(
            node("n1", &[("cpu", "1")]),
            &[("kubernetes.io/hostname", "n1")],
        )));
        let n2 = NodeInfo::new(std::sync::Arc::new(with_labels(
            node("n2", &[("cpu", "1")]),
            &[("kubernetes.io/hostname", "n2")],
        )));
        assert!(VolumeBinding.filter(&state, &p, &n1).is_success());
        let st = VolumeBinding.filter(&state, &p, &n2);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons[0], CONFLICT);
        // A volume without node affinity admits every node.
        snap.volumes.insert("pv1".into(), None);
        let (st, _) = VolumeBinding.pre_filter(&mut CycleState::default(), &p, &snap);
        assert_eq!(st.code, Code::Skip);
    }
}
