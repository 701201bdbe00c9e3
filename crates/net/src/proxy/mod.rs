//! The service proxy: kube-proxy's nftables mode, in one table of skiff's own.
//!
//! Contract:
//! - [`run`] watches Services and EndpointSlices (discovery.k8s.io/v1) and keeps the
//!   nftables table `ProxyConfig.table` (family `ip`) equal to what they ask for on this
//!   node: ClusterIPs, NodePorts on `node_ips`, load-balancer ingress and external IPs,
//!   session affinity, traffic policies, reject for ports without endpoints, masquerade
//!   of hairpin and external traffic (see [`model`] for the rules and [`nft`] for the
//!   table's layout).
//! - It writes nothing else: no other table, no sysctl, no route. Everything it matches
//!   is a Service's address or the node's; `skip_cluster_ips` are left alone.
//! - Every sync is one atomic `nft -j -f -` transaction holding only what changed
//!   ([`sync`]); the first sync, and any sync after a failure or after the table was
//!   changed behind the proxy's back, recreates the whole table. A failed transaction
//!   leaves the previous rules in force and is retried with backoff.
//! - [`clean`] deletes the table (`skiff server --clean`).
//!
//! Cost model (measured with nft 1.0.6 on Linux 6.18, `skiff bench proxy`): a
//! transaction's own size is small (14 commands, 4 KB, for a one-endpoint change of a
//! Service with 10 endpoints), but each `nft` run also pays for the table: the `nft` tool reads
//! every chain and set of the table before adding a rule (hence no per-endpoint chains
//! and no anonymous sets here), and the kernel's commit work grows with the rules
//! reachable from the table's base chains (30-40 ms more system time per commit at
//! 10,000 Services than with the same chains unhooked: it validates the chain graph). A
//! one-endpoint change therefore costs ~23 ms at 1,000 Services and ~85-100 ms at
//! 10,000 (p50-p99, debug build, loaded machine). Ways under 50 ms at 10,000: shard the
//! Services over several tables (validation is per table; a packet's DNAT happens in
//! the first nat chain that matches; a hand-written 10,000-Service layout over 16
//! tables took 30 ms per change with bare `nft` against 50 ms in one table), or make
//! endpoint changes touch map elements only.
//!
//! Lifecycle: [`run`] returns when `stop` is cancelled; the table stays (so restarting the
//! agent does not interrupt Services) until [`clean`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub mod conntrack;
mod metrics;
pub mod model;
pub mod nft;
mod runner;
pub mod sync;

pub use model::{service_rules, ServiceRef, ServiceRules};
pub use nft::{Nft, Transaction};
pub use runner::{run, run_with, Hooks, SyncReport};
pub use sync::{Plan, Proxier};

/// The proxy's settings for one node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The nftables table (family `ip`) the proxy owns, e.g. `skiff-proxy`.
    pub table: String,
    /// This node's name: endpoints with this `nodeName` are local (traffic policy Local).
    pub node_name: String,
    /// The node's addresses on which NodePorts answer.
    pub node_ips: Vec<IpAddr>,
    /// The pod network: traffic from outside it to a Service is masqueraded.
    pub cluster_cidr: IpNet,
    /// The Service network (ClusterIPs). Not matched yet: kube-proxy also rejects
    /// traffic to unallocated ClusterIPs in it, which this proxy does not do.
    pub service_cidr: IpNet,
    /// The interface pods hang off (the bridge). Not matched yet: hairpin traffic is
    /// recognised by being DNATed back to its own source address, whatever the
    /// interface.
    pub pod_bridge: String,
    /// ClusterIPs to leave alone (node-local DNS answers on the DNS Service's IP itself).
    pub skip_cluster_ips: Vec<IpAddr>,
    /// Where `/healthz` and `/metrics` are served; None for no server.
    pub metrics_addr: Option<SocketAddr>,
    /// The shortest time between two syncs: a burst of changes inside it is one sync.
    pub min_sync_period: Duration,
    /// How often the table is compared with what the proxy applied (a difference means
    /// someone changed it, and the next sync recreates it); 30 s.
    pub resync_period: Duration,
    /// The network namespace (a path such as `/run/netns/x`) whose nftables and conntrack
    /// the proxy programs; None for the process's own. Tests and multi-node clusters in
    /// namespaces use it.
    pub netns: Option<PathBuf>,
    /// Where the proxy remembers a fingerprint of what its table holds, so a restarted
    /// proxy whose first sync would write the same table leaves it alone (no rule rebuilt,
    /// no established connection disturbed). None: the first sync always rewrites it.
    pub state_file: Option<PathBuf>,
}

impl ProxyConfig {
    /// Defaults for a node: table `skiff-proxy`, pods 10.42.0.0/16, Services
    /// 10.43.0.0/16, bridge `skiff0`, 10 ms minimum sync period.
    pub fn new(node_name: impl Into<String>, node_ips: Vec<IpAddr>) -> ProxyConfig {
        ProxyConfig {
            table: "skiff-proxy".into(),
            node_name: node_name.into(),
            node_ips,
            cluster_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert([10, 42, 0, 0].into(), 16)),
            service_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert([10, 43, 0, 0].into(), 16)),
            pod_bridge: "skiff0".into(),
            skip_cluster_ips: Vec::new(),
            metrics_addr: None,
            min_sync_period: Duration::from_millis(10),
            resync_period: Duration::from_secs(30),
            netns: None,
            state_file: None,
        }
    }
}

/// What went wrong in the proxy. Sync failures are also handed to the caller of
/// [`run_with`] (`Hooks.errors`) so it can record an Event.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `nft` ran and refused (the kernel kept the previous rules).
    #[error("`{command}` failed (exit status {status:?}): {stderr}")]
    Nft {
        command: String,
        status: Option<i32>,
        stderr: String,
    },
    /// `nft` could not be started: is nftables installed (`nft` on PATH)?
    #[error("cannot run `{command}` (is nftables installed?)")]
    NftSpawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// `nft -j` printed something that is not JSON.
    #[error("`nft {command}` printed unreadable JSON")]
    NftOutput {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    /// The configured network namespace cannot be opened or entered.
    #[error("cannot enter the network namespace {path}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Deleting stale UDP conntrack entries failed (the rules are applied regardless).
    #[error("conntrack: {what}")]
    Conntrack {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The `/healthz` and `/metrics` address cannot be bound.
    #[error("cannot listen on {addr} for the proxy's /healthz and /metrics")]
    MetricsBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task died (a bug; the sync is retried).
    #[error("the nft worker task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl ProxyError {
    /// Kubernetes-style category: `Unavailable` for everything here, since each is a
    /// node-local condition that retrying (or an operator fixing the node) resolves.
    pub fn category(&self) -> &'static str {
        "Unavailable"
    }
}

/// Deletes the proxy's table (in the process's network namespace); nothing else is
/// touched. A missing table is fine.
pub async fn clean(table: &str) -> Result<(), ProxyError> {
    let table = table.to_string();
    tokio::task::spawn_blocking(move || Nft::default().delete_table(&table))
        .await
        .map_err(ProxyError::Task)?
}
