//! End-to-end tests of the scheduler: a real `skiff server` (its in-process scheduler, or
//! standalone `skiff scheduler` processes against a `--disable-scheduler` server), real
//! kubectl 1.27 and 1.33, and Node objects the tests write themselves (no kubelet yet):
//! every placement and every Pending message is what kube-scheduler does for the case.
//!
//! Each test has its own server: the messages count every node of the cluster
//! (`0/3 nodes are available`), so tests sharing one would see each other's nodes.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
#[allow(dead_code, unused_macros)]
mod common;

#[path = "scheduler/cluster.rs"]
mod cluster;

#[path = "scheduler/placement.rs"]
mod placement;

#[path = "scheduler/preemption.rs"]
mod preemption;

#[path = "scheduler/leader.rs"]
mod leader;
