//! End-to-end tests of the controller manager: a real `skiff server` (its in-process
//! controller manager, or standalone `skiff controller-manager` processes against a
//! `--disable-controller-manager` server), `skiff hollow-nodes` processes as the nodes,
//! and real kubectl 1.27 and 1.33.
//!
//! Each test has its own server and its own hollow nodes.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
#[allow(dead_code, unused_macros)]
mod common;

#[path = "controllers/cluster.rs"]
#[allow(dead_code)]
mod cluster;

#[path = "controllers/hollow.rs"]
mod hollow;

#[path = "controllers/leader.rs"]
mod leader;

#[path = "controllers/deployment.rs"]
mod deployment;

#[path = "controllers/gc.rs"]
mod gc;

#[path = "controllers/rollout.rs"]
mod rollout;

#[path = "controllers/workloads.rs"]
mod workloads;
