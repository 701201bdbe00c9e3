//! VolumeBinding: the hook where PersistentVolumeClaims will be matched to local volumes.
//!
//! skiff has no volume provisioning yet, so the plugin only takes part in the cycle: its
//! PreFilter returns Skip for pods without PVC (or generic ephemeral) volumes, and for the
//! rest it admits every node. Its registered events (PV, PVC and StorageClass changes)
//! already move pods it might reject back to the active queue, so adding real binding
//! means filling in Filter, Reserve and PreBind here, without touching the queue.

use crate::framework::{
    action, ClusterEvent, CycleState, EventResource, Filter, Plugin, PreFilter, Status,
};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "VolumeBinding";

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
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, Option<Vec<String>>) {
        super::skip_unless(has_claims(pod))
    }
}

impl Filter for VolumeBinding {
    fn filter(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> Status {
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};

    #[test]
    fn skips_pods_without_claims() {
        let snap = Snapshot::default();
        let (st, _) =
            VolumeBinding.pre_filter(&mut CycleState::default(), &info(pod("a", &[])), &snap);
        assert_eq!(st.code, crate::framework::Code::Skip);
        let mut p = pod("b", &[]);
        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: "data".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let (st, _) = VolumeBinding.pre_filter(&mut CycleState::default(), &info(p), &snap);
        assert!(st.is_success());
    }
}
