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

/// 64-bit FNV-1a: stable across builds and Rust versions (std's hasher is not promised to
/// be), which names and fingerprints that outlive the process need (chain and interface
/// names, the proxy's table fingerprint, dev cluster ids).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
