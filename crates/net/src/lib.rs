//! A node's network, run by every agent:
//!
//! - [`pod`]: the pod network. A bridge per node, a veth pair per pod moved into the pod's
//!   network namespace, addresses from the node's `spec.podCIDR` ([`ipam`]), routes to
//!   other nodes' pod CIDRs (host-gw), egress masquerading and hostPorts.
//! - [`proxy`]: the service proxy (kube-proxy's nftables mode).
//! - [`dns`]: cluster DNS on the DNS Service's IP.
//!
//! Every kernel change goes through netlink or one nftables transaction, never by running
//! `ip` or `iptables`. Every name (bridge, nft tables) and range is a parameter, so
//! several nodes (each in its own network namespace) and tests run side by side.

pub mod devnet;
pub mod dns;
pub mod ipam;
pub mod netlink;
pub mod nft;
pub mod pod;
pub mod proxy;
