//! Cluster DNS: every agent answers the cluster's names on the DNS Service's IP
//! (normally 10.43.0.10:53, UDP and TCP) and forwards everything else to the node's own
//! resolvers.
//!
//! Contract:
//! - Names under `cfg.domain` (`cluster.local`) follow the Kubernetes DNS specification
//!   (see [`zone`]) and are answered authoritatively from kube-rs reflector caches of
//!   Services and EndpointSlices, with TTL `cfg.ttl`: no API call per query. A missing
//!   name is NXDOMAIN; a name with no record of the asked type is NODATA (NOERROR, no
//!   answers), which is what a client asking A and AAAA of an IPv4 Service must see.
//! - PTR names of ClusterIPs and headless endpoints answer from the same caches; other
//!   names in the reverse zones of `cfg.cluster_cidr` and `cfg.service_cidr` are
//!   NXDOMAIN. Neither cluster names nor those reverse names are ever forwarded.
//! - Everything else goes to `cfg.upstreams` (see [`upstreams_from_resolv_conf`]) with a
//!   timeout per attempt; SERVFAIL when they all fail, REFUSED when there are none.
//! - Until the caches have listed once, cluster questions get SERVFAIL.
//!
//! Lifecycle: [`DnsServer::bind`] binds the sockets (so a caller, or a test on port 0,
//! learns the addresses), [`DnsServer::serve`] starts the reflectors and answers until the
//! stop token fires. [`run`] does both. [`ensure_dns_service`] creates the
//! `kube-system/kube-dns` Service the pods' resolv.conf points at, and
//! [`ensure_dns_address`] puts its ClusterIP on a dummy link of the node so the DNS can
//! bind it (the proxy skips that Service).

mod address;
mod cache;
mod forward;
mod names;
mod server;
mod service;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

pub use address::{ensure_dns_address, remove_dns_address};
pub use cache::ZoneHandle;
pub use forward::{parse_resolv_conf, upstreams_from_resolv_conf, ForwardError, Forwarder};
pub use names::reverse_name;
pub use server::{DnsMetrics, DnsServer};
pub use service::{dns_service, ensure_dns_service, DNS_SERVICE_NAME, DNS_SERVICE_NAMESPACE};
pub use zone::{Lookup, Zone};

/// What the DNS serves and where.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Addresses to answer on, UDP and TCP (port 0 picks a free one).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain, without a trailing dot (`cluster.local`).
    pub domain: String,
    /// The node's resolvers, for names outside the cluster.
    pub upstreams: Vec<SocketAddr>,
    /// The pod network; its reverse zone is the cluster's.
    pub cluster_cidr: IpNet,
    /// The Service network; its reverse zone is the cluster's.
    pub service_cidr: IpNet,
    /// TTL of every cluster answer, in seconds (and of negative answers, through the SOA).
    pub ttl: u32,
    /// How long one forwarding attempt to one upstream may take.
    pub forward_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::new(IpAddr::from([10, 43, 0, 10]), 53)],
            domain: "cluster.local".into(),
            upstreams: vec![],
            cluster_cidr: IpNet::new(IpAddr::from([10, 42, 0, 0]), 16)
                .unwrap_or_else(|_| IpNet::default()),
            service_cidr: IpNet::new(IpAddr::from([10, 43, 0, 0]), 16)
                .unwrap_or_else(|_| IpNet::default()),
            ttl: 5,
            forward_timeout: Duration::from_secs(2),
        }
    }
}

/// What can go wrong running the DNS or creating its Service.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Unavailable: the address is taken or not on this node.
    #[error(
        "binding DNS on {addr}: {source} (is the address assigned to this node and the port free?)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Invalid configuration.
    #[error("cluster domain {domain:?} is not a valid DNS name")]
    BadDomain { domain: String },
    /// The server's tasks failed.
    #[error("serving DNS: {message}")]
    Serve { message: String },
    /// NotFound / unreadable file.
    #[error("reading resolver configuration {}: {source}", path.display())]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Conflict: the DNS Service exists with another address.
    #[error(
        "kube-system/kube-dns exists with clusterIP {existing:?}, not {wanted}; \
         delete it or configure the DNS address to match"
    )]
    ServiceIpMismatch { existing: String, wanted: IpAddr },
    /// The kernel refused a change to the DNS address's link.
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Conflict: someone deleted the link between our create and our lookup.
    #[error("link {link} disappeared while being set up; retry")]
    LinkVanished { link: String },
    /// A bug: the Service object we build does not deserialize.
    #[error("building the kube-dns Service object: {source}")]
    ServiceObject {
        #[source]
        source: serde_json::Error,
    },
}

/// Binds `cfg.listen` and answers until `stop`, from caches kept by `client`.
pub async fn run(
    client: kube::Client,
    cfg: DnsConfig,
    stop: CancellationToken,
) -> Result<(), DnsError> {
    DnsServer::bind(cfg).await?.serve(client, stop).await
}
