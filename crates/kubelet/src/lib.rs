//! skiff's node agent. For now only its streaming HTTPS API exists: the server ends of the
//! kubelet paths the API server proxies `kubectl exec`, `attach`, `port-forward` and `logs`
//! to. What runs the processes is behind the narrow [`StreamingRuntime`] trait, which the
//! pod workers will implement on skiff's container runtime.
//!
//! Paths (as the Kubernetes kubelet serves them):
//! - `/exec/{ns}/{pod}[/{uid}]/{container}?command=…&input=1&output=1&error=1&tty=1`
//! - `/attach/{ns}/{pod}[/{uid}]/{container}?input=1&output=1&error=1&tty=1`
//! - `/portForward/{ns}/{pod}[/{uid}]`
//! - `/containerLogs/{ns}/{pod}/{container}?follow=…&tailLines=…&limitBytes=…`
//!
//! Streaming protocols: WebSocket with the channel subprotocols `v5.channel.k8s.io` and
//! `v4.channel.k8s.io` (kubectl 1.30+ exec/attach), SPDY/3.1 with `X-Stream-Protocol-Version`
//! `v4.channel.k8s.io` (kubectl ≤ 1.29 exec/attach) and `portforward.k8s.io` (kubectl ≤ 1.30
//! port-forward), SPDY/3.1 tunneled in WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+ port-forward), and port-forward over the
//! WebSocket channel protocol (`v4.channel.k8s.io`, the Python client).

#![forbid(unsafe_code)]

pub mod balancer;
pub mod bootstrap;
/// The suite every [`StreamingRuntime`] runs (for tests only: `features = ["testing"]`).
#[cfg(feature = "testing")]
pub mod conformance;
pub mod portforward;
mod query;
pub mod remotecommand;
pub mod runtime;
pub mod server;
pub mod spdy;
pub mod ws;

pub use runtime::{
    ContainerRef, Duplex, ExecStdio, LogOptions, LogStream, RuntimeError, StreamingRuntime,
    TermSize,
};
pub use server::{ServerError, StreamingServer, TlsFiles};
pub mod agent;
