//! End-to-end tests of `skiff server`'s Kubernetes API: each test starts the real binary
//! on a free loopback port with a temp data dir and drives it with real clients — kubectl
//! 1.27 and 1.33, curl with the admin certificate, the official Python client, kube-rs —
//! and, for the etcd backend, a real etcd on free loopback ports.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
mod common;

#[path = "apiserver/kubectl.rs"]
mod kubectl;

#[path = "apiserver/http.rs"]
mod http;

#[path = "apiserver/python.rs"]
mod python;

#[path = "apiserver/etcd.rs"]
mod etcd;

#[path = "apiserver/audit.rs"]
mod audit;

#[path = "apiserver/events.rs"]
mod events;

#[path = "apiserver/stream.rs"]
mod stream;

#[path = "apiserver/lifecycle.rs"]
mod lifecycle;

#[path = "apiserver/kube_rs.rs"]
mod kube_rs;

#[path = "apiserver/watch.rs"]
mod watch;

#[path = "apiserver/serving.rs"]
mod serving;

#[path = "apiserver/scheduling.rs"]
mod scheduling;

#[path = "apiserver/certificates.rs"]
mod certificates;

#[path = "apiserver/ssa.rs"]
mod ssa;

#[path = "apiserver/api_complete.rs"]
mod api_complete;

#[path = "apiserver/webhooks.rs"]
mod webhooks;

#[path = "apiserver/legacy_tokens.rs"]
mod legacy_tokens;

#[path = "apiserver/admission_policy.rs"]
mod admission_policy;

#[path = "apiserver/node_authz.rs"]
mod node_authz;
