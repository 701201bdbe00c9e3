//! End-to-end tests of the node agent: a real `skiff server` with its local agent (the
//! kubelet API on a free port, pods' cgroups under a parent of the test's own), a real
//! `skiff registry` serving the kubia image built by `skiff image build`, and real
//! kubectl 1.27 and 1.33. Pods are real containers; on drop the server is killed and
//! `skiff server --clean` removes what its agent left, which each test then checks.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
#[allow(dead_code, unused_macros)]
mod common;

#[path = "kubelet/node.rs"]
#[allow(dead_code)]
mod node;

#[path = "kubelet/pods.rs"]
mod pods;

#[path = "kubelet/restarts.rs"]
mod restarts;

#[path = "kubelet/config.rs"]
mod config;

#[path = "kubelet/runtime.rs"]
mod runtime;

#[path = "kubelet/security.rs"]
mod security;

#[path = "kubelet/storage.rs"]
mod storage;

#[path = "kubelet/housekeeping.rs"]
mod housekeeping;
