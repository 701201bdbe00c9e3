//! What every skiff server shares: one HTTP(S) serving loop ([`Serve`]) with TLS-handshake
//! and header-read timeouts, a connection limit and graceful drain; named health checks
//! for `/livez` and `/readyz` ([`health`]); Prometheus exposition of `/metrics`
//! ([`metrics`]); and the one walker of an error's cause chain ([`error_chain`]).
//!
//! Conventions every component follows (API server, registry, kubelet, and the ones to
//! come):
//! - serve through [`Serve`], hand long-running handlers the [`Serve::shutdown_signal`]
//!   token so watches and streams end when shutdown starts, and exit 0 on SIGTERM/Ctrl-C
//!   once drained;
//! - keep one `prometheus_client::registry::Registry` per server, built at start-up and
//!   passed to the parts that record into it (no globals), served at `/metrics` with
//!   [`metrics::response`]; use Kubernetes' metric names where Kubernetes has one,
//!   `skiff_<component>_…` otherwise; labels only from small closed sets (verb, resource,
//!   code), never from user data such as object or repository names;
//! - answer `/livez` and `/readyz` (and `/livez/<check>`, `?verbose`, `?exclude=`) from a
//!   [`health::Checks`] list, as kube-apiserver does.

mod errors;
pub use errors::{error_chain, Chain};

#[cfg(feature = "server")]
pub mod health;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
mod serve;
#[cfg(feature = "server")]
pub use serve::{ConnectionInfo, Limits, Serve};
#[cfg(feature = "server")]
pub use tokio_util::sync::CancellationToken;
