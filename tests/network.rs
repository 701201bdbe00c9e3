//! End-to-end tests of the pod network, Services and cluster DNS on real multi-node
//! clusters (`skiff dev cluster`: agents in network namespaces of their own). Requests
//! are sent only from client pods inside the cluster, to cluster IPs, pod IPs, node IPs
//! of the test's own namespaces, and cluster names.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
#[allow(dead_code, unused_macros)]
mod common;

#[path = "network/cluster.rs"]
#[allow(dead_code)]
mod cluster;

#[path = "network/services.rs"]
mod services;

#[path = "network/single.rs"]
mod single;

#[path = "network/vxlan.rs"]
mod vxlan;

#[path = "network/restart.rs"]
mod restart;

#[path = "network/exhausted.rs"]
mod exhausted;

#[path = "network/nft_failure.rs"]
mod nft_failure;

#[path = "network/story.rs"]
mod story;

#[path = "network/ha.rs"]
mod ha;
