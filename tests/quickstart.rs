//! End-to-end tests of the one-command cluster: `skiff server` with its built-in
//! registry and local agent, as README's quickstart drives it — the refusals before
//! anything starts, the usage printed once the node is Ready, Ctrl-C that leaves pods
//! running (or stops them), `skiff uninstall` — and the seed's story walked with real
//! kubectl 1.27 and 1.33.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
#[allow(dead_code, unused_macros)]
mod common;

#[path = "kubelet/node.rs"]
#[allow(dead_code)]
mod node;

#[path = "quickstart/one_command.rs"]
mod one_command;

#[path = "quickstart/story.rs"]
mod story;
