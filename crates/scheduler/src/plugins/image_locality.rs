//! ImageLocality: prefers nodes that already hold the pod's images, by their size, scaled
//! down for images that almost every node has (so it does not herd pods onto one node).

use crate::framework::{CycleState, Plugin, Score, Status, MAX_NODE_SCORE};
use crate::nodeinfo::{NodeInfo, PodInfo};

pub const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// `nginx` → `nginx:latest`; names with a tag or digest stay as they are.
pub fn normalized_image_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.rfind(':').unwrap_or(0) <= name.rfind('/').unwrap_or(0) && !name.contains('@') {
        format!("{name}:latest").into()
    } else {
        name.into()
    }
}

impl Score for ImageLocality {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        if node.images.is_empty() || pod.images.is_empty() {
            return Ok(0);
        }
        let total = state.num_all_nodes.max(1) as f64;
        let mut sum = 0i64;
        for image in &pod.images {
            if let Some(s) = node.images.get(normalized_image_name(image).as_ref()) {
                sum += (s.size as f64 * (s.num_nodes as f64 / total)) as i64;
            }
        }
        let containers = pod
            .pod
            .spec
            .as_ref()
            .map(|s| s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len))
            .unwrap_or(1)
            .max(1) as i64;
        let max = MAX_CONTAINER_THRESHOLD * containers;
        let sum = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use k8s_openapi::api::core::v1::ContainerImage;

    #[test]
    fn nodes_with_the_image_score_higher() {
        let mut n = node("a", &[]);
        n.status.as_mut().unwrap().images = Some(vec![ContainerImage {
            names: Some(vec!["nginx:latest".into()]),
            size_bytes: Some(500 * MB),
        }]);
        let with = node_info(n, vec![]);
        let without = node_info(node("b", &[]), vec![]);
        let p = info(pod("p", &[]));
        let mut st = CycleState::default();
        st.num_all_nodes = 2;
        let s = ImageLocality.score(&st, &p, &with).unwrap();
        // 500 MB on 1 of 2 nodes: 250 MB, scaled between 23 MB and 1000 MB.
        assert_eq!(
            s,
            100 * (250 * MB - MIN_THRESHOLD) / (1000 * MB - MIN_THRESHOLD)
        );
        assert_eq!(ImageLocality.score(&st, &p, &without).unwrap(), 0);
        assert_eq!(normalized_image_name("reg:5000/app"), "reg:5000/app:latest");
        assert_eq!(normalized_image_name("app:1.0"), "app:1.0");
    }
}
