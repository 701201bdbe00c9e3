//! The pod network of one node (the agent's network namespace).
//!
//! Lifecycle: [`PodNetwork::new`] with the node's config; [`PodNetwork::init`] once the
//! Node has a `spec.podCIDR` (the controller manager's node IPAM gives it): the bridge
//! with the CIDR's first address as the pods' gateway, `unreachable` routes for the
//! cluster and service CIDRs (no cluster traffic leaves by the default route), IP
//! forwarding, and skiff's own nft table (egress masquerading and hostPorts). Then, per
//! pod, [`PodNetwork::setup`] (idempotent: an agent that restarts calls it again for
//! the pods it adopts) and [`PodNetwork::teardown`]; [`PodNetwork::sync_routes`] keeps
//! one route per other node (its pod CIDR via its InternalIP: host-gw; or over a VXLAN
//! overlay, [`Vxlan`]).
//! [`clean`] removes everything.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;

use crate::ipam::{Ipam, IpamError};
use crate::netlink::{Nl, NlError};
use crate::nft;

/// The interface name a pod sees.
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, Clone)]
pub struct PodNetConfig {
    /// The bridge pods hang off (`skiff0`).
    pub bridge: String,
    /// skiff's nft table for egress masquerading and hostPorts (`skiff-net`).
    pub table: String,
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    /// The cluster DNS Service's IP: added to the bridge so the node-local DNS server
    /// answers on it.
    pub dns_ip: Option<Ipv4Addr>,
    /// IPAM state and what `clean` must undo.
    pub state_dir: PathBuf,
    /// The node's address (its interface's MTU is the pods').
    pub node_ip: IpAddr,
    /// The pods' MTU; default the node interface's (less VXLAN's 50 bytes with VXLAN).
    pub mtu: Option<u32>,
    /// Reach other nodes' pods through a VXLAN overlay instead of host-gw routes (for
    /// nodes that share no L2 segment).
    pub vxlan: Option<Vxlan>,
}

/// The VXLAN overlay (flannel's vxlan backend as the model): one device per node with a
/// MAC derived from the node's address ([`vtep_mac`]), so no node has to publish its
/// own; a peer's pod CIDR is routed on-link to the CIDR's network address, which a
/// permanent neighbour entry puts at the peer's VTEP MAC, which a forwarding entry puts
/// at the peer's InternalIP.
#[derive(Debug, Clone)]
pub struct Vxlan {
    pub device: String,
    pub vni: u32,
    pub port: u16,
}

/// flannel's defaults: VNI 1 on UDP 8472.
pub const DEFAULT_VXLAN_VNI: u32 = 1;
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// The file in the state dir naming the VXLAN device made.
const VXLAN_RECORD: &str = "vxlan-device";
/// The bytes VXLAN over IPv4 adds to each packet.
const VXLAN_OVERHEAD: u32 = 50;

/// The VTEP MAC of the node at `ip`: locally administered, unicast, the address's bytes.
pub fn vtep_mac(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x0e, 0x5f, a, b, c, d]
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the pod network is not ready: the node has no pod CIDR yet (spec.podCIDR is given by the controller manager's node IPAM)")]
    NotReady,
    #[error("pod CIDR {got} is outside the cluster CIDR {cluster}")]
    OutsideCluster { got: Ipv4Net, cluster: Ipv4Net },
    #[error(transparent)]
    Netlink(#[from] NlError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a runtime for network setup")]
    Runtime(#[source] std::io::Error),
    #[error("the VXLAN backend needs an IPv4 node address, not {0} (set --node-ip)")]
    VxlanNeedsIpv4(IpAddr),
}

/// A pod's address on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIp {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// A pod container's `hostPort`: traffic to `host_ip` (any local address when None)
/// on `host_port` goes to the pod's `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// Each pod's address and hostPorts, by pod UID.
type HostPorts = BTreeMap<String, (Ipv4Addr, Vec<HostPort>)>;

struct Ready {
    ipam: Ipam,
    mtu: u32,
    bridge: u32,
    /// The VXLAN device's index, with the VXLAN backend.
    vxlan: Option<u32>,
}

#[derive(Clone)]
pub struct PodNetwork {
    cfg: Arc<PodNetConfig>,
    ready: Arc<Mutex<Option<Arc<Ready>>>>,
    host_ports: Arc<Mutex<HostPorts>>,
}

/// Enough of a stable hash to keep interface names apart.
fn short_hash(s: &str) -> String {
    format!("{:08x}", crate::fnv1a(s.as_bytes()) as u32)
}

/// The host side of pod `uid`'s veth pair (at most 15 characters, as the kernel wants).
pub fn host_veth(uid: &str) -> String {
    format!("veth{}", short_hash(uid))
}

fn peer_veth(uid: &str) -> String {
    format!("skp{}", short_hash(uid))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PodNetwork {
    pub fn new(cfg: PodNetConfig) -> PodNetwork {
        PodNetwork {
            cfg: Arc::new(cfg),
            ready: Arc::new(Mutex::new(None)),
            host_ports: Arc::default(),
        }
    }

    pub fn config(&self) -> &PodNetConfig {
        &self.cfg
    }

    pub fn pod_cidr(&self) -> Option<Ipv4Net> {
        lock(&self.ready).as_ref().map(|r| r.ipam.cidr())
    }

    fn ready(&self) -> Result<Arc<Ready>, NetError> {
        lock(&self.ready).clone().ok_or(NetError::NotReady)
    }

    /// Readies the node for pods of `pod_cidr`. Idempotent: called again, it puts back
    /// what was removed behind its back (the bridge's addresses, routes, the nft table).
    pub async fn init(&self, pod_cidr: Ipv4Net) -> Result<(), NetError> {
        let cfg = &self.cfg;
        let pod_cidr = pod_cidr.trunc();
        if !cfg.cluster_cidr.contains(&pod_cidr) {
            return Err(NetError::OutsideCluster {
                got: pod_cidr,
                cluster: cfg.cluster_cidr,
            });
        }
        let ipam = Ipam::open(&cfg.state_dir.join("ipam"), pod_cidr)?;
        let nl = Nl::open(None)?;
        let overhead = if cfg.vxlan.is_some() {
            VXLAN_OVERHEAD
        } else {
            0
        };
        let mtu = match cfg.mtu {
            Some(m) => m,
            // A node on loopback (a one-machine server) has no link MTU worth copying:
            // lo's 65536 is more than a bridge takes.
            None if cfg.node_ip.is_loopback() => 1500 - overhead,
            None => {
                nl.mtu_of_addr(cfg.node_ip)
                    .await?
                    .unwrap_or(1500)
                    .min(65535)
                    - overhead
            }
        };
        let bridge = nl.ensure_bridge(&cfg.bridge, mtu).await?;
        nl.ensure_addr(bridge, IpAddr::V4(ipam.gateway()), pod_cidr.prefix_len())
            .await?;
        if let Some(dns) = cfg.dns_ip {
            nl.ensure_addr(bridge, IpAddr::V4(dns), 32).await?;
        }
        nl.set_up(bridge).await?;
        for net in [cfg.cluster_cidr, cfg.service_cidr] {
            nl.replace_route(net.network(), net.prefix_len(), None)
                .await?;
        }
        let vxlan = match &cfg.vxlan {
            None => None,
            Some(v) => {
                let IpAddr::V4(local) = cfg.node_ip else {
                    return Err(NetError::VxlanNeedsIpv4(cfg.node_ip));
                };
                let dev = nl
                    .ensure_vxlan(&v.device, v.vni, local, v.port, mtu, vtep_mac(local))
                    .await?;
                // The device answers for this node's pod CIDR as its peers' gateway.
                nl.ensure_addr(dev, IpAddr::V4(pod_cidr.network()), 32)
                    .await?;
                nl.set_up(dev).await?;
                // Recorded (once) so `clean` removes it whatever flags it is given.
                let rec = cfg.state_dir.join(VXLAN_RECORD);
                if std::fs::read_to_string(&rec).ok().as_deref() != Some(v.device.as_str()) {
                    std::fs::create_dir_all(&cfg.state_dir)
                        .and_then(|()| std::fs::write(&rec, &v.device))
                        .map_err(|source| NetError::Io {
                            op: "recording the VXLAN device in",
                            path: rec,
                            source,
                        })?;
                }
                Some(dev)
            }
        };
        enable_forwarding(&cfg.state_dir)?;
        // Written when it is missing (first start, or removed behind the agent's back);
        // hostPort changes rewrite it themselves.
        if !nft::table_exists(&cfg.table) {
            self.apply_host_ports()?;
        }
        *lock(&self.ready) = Some(Arc::new(Ready {
            ipam,
            mtu,
            bridge,
            vxlan,
        }));
        Ok(())
    }

    /// Gives pod `uid` (its network namespace at `netns`) an interface and an address on
    /// the bridge; the same address when it has one. `host_ports` are forwarded to it.
    pub async fn setup(
        &self,
        uid: &str,
        netns: &Path,
        host_ports: &[HostPort],
    ) -> Result<PodIp, NetError> {
        let ready = self.ready()?;
        let prefix = ready.ipam.cidr().prefix_len();
        let gateway = ready.ipam.gateway();
        let had = ready.ipam.lookup(uid)?;
        let pod_nl = Nl::open(Some(netns))?;
        let ip = match had {
            Some(ip) if pod_nl.index(POD_IFNAME).await?.is_some() => ip,
            _ => {
                let ip = ready.ipam.allocate(uid)?;
                if let Err(e) = self.plumb(&ready, uid, netns, &pod_nl, ip).await {
                    let nl = Nl::open(None)?;
                    let _ = nl.del_link(&host_veth(uid)).await;
                    let _ = ready.ipam.release(uid);
                    return Err(e);
                }
                ip
            }
        };
        let changed = {
            let mut hp = lock(&self.host_ports);
            let mut ports = host_ports.to_vec();
            ports.sort();
            let new = (ip, ports);
            if host_ports.is_empty() {
                hp.remove(uid).is_some()
            } else if hp.get(uid) != Some(&new) {
                hp.insert(uid.to_string(), new);
                true
            } else {
                false
            }
        };
        if changed {
            self.apply_host_ports()?;
        }
        Ok(PodIp {
            ip,
            prefix,
            gateway,
        })
    }

    async fn plumb(
        &self,
        ready: &Ready,
        uid: &str,
        netns: &Path,
        pod_nl: &Nl,
        ip: Ipv4Addr,
    ) -> Result<(), NetError> {
        let nl = Nl::open(None)?;
        let (host, peer) = (host_veth(uid), peer_veth(uid));
        // A half-made pair of an earlier try goes first.
        nl.del_link(&host).await?;
        nl.del_link(&peer).await?;
        nl.add_veth(&host, &peer, ready.mtu).await?;
        let ns = File::open(netns).map_err(|source| NetError::Io {
            op: "opening the pod's network namespace",
            path: netns.to_path_buf(),
            source,
        })?;
        nl.move_to_ns(&peer, &ns).await?;
        nl.attach(&host, ready.bridge).await?;
        let idx = pod_nl.rename_up(&peer, POD_IFNAME).await?;
        pod_nl
            .ensure_addr(idx, IpAddr::V4(ip), ready.ipam.cidr().prefix_len())
            .await?;
        pod_nl.default_route(ready.ipam.gateway()).await?;
        // The address may have been another pod's a moment ago: the host's entry for it
        // would still name the old pod's MAC for up to ~40 s (reachable, then the
        // delay before a probe), and everything sent to it (Service traffic included)
        // would vanish until then. The entry is set to the new pod's MAC now.
        if let Some(mac) = pod_nl.mac(POD_IFNAME).await? {
            nl.learn_neigh(ready.bridge, ip, mac).await?;
        }
        Ok(())
    }

    /// Removes pod `uid`'s interface and frees its address. Idempotent.
    pub async fn teardown(&self, uid: &str) -> Result<(), NetError> {
        let nl = Nl::open(None)?;
        nl.del_link(&host_veth(uid)).await?;
        if let Ok(ready) = self.ready() {
            ready.ipam.release(uid)?;
        } else if let Some(ipam) = self.stored_ipam()? {
            ipam.release(uid)?;
        }
        if lock(&self.host_ports).remove(uid).is_some() {
            self.apply_host_ports()?;
        }
        Ok(())
    }

    /// The allocator of the pod CIDR used before (teardown before `init`, after an agent
    /// restart).
    fn stored_ipam(&self) -> Result<Option<Ipam>, NetError> {
        let dir = self.cfg.state_dir.join("ipam");
        if !dir.is_dir() {
            return Ok(None);
        }
        // Every allocation is inside the cluster CIDR: an allocator over all of it
        // finds a pod's address by its UID, which is all a release needs.
        Ok(Some(Ipam::open(&dir, self.cfg.cluster_cidr)?))
    }

    /// `setup` for callers outside a runtime (the kubelet's sandbox code runs on a
    /// blocking thread).
    pub fn setup_blocking(
        &self,
        uid: &str,
        netns: &Path,
        host_ports: &[HostPort],
    ) -> Result<PodIp, NetError> {
        block_on(self.setup(uid, netns, host_ports))?
    }

    pub fn teardown_blocking(&self, uid: &str) -> Result<(), NetError> {
        block_on(self.teardown(uid))?
    }

    /// The pods that have addresses here (UIDs), for garbage collection of addresses of
    /// pods removed while the agent was down.
    pub fn allocated_pods(&self) -> Vec<String> {
        let ipam = match self.ready() {
            Ok(r) => Some(r.ipam.clone()),
            Err(_) => self.stored_ipam().ok().flatten(),
        };
        ipam.and_then(|i| i.allocations().ok())
            .map(|a| a.into_iter().map(|(_, uid)| uid).collect())
            .unwrap_or_default()
    }

    fn apply_host_ports(&self) -> Result<(), NetError> {
        let all: Vec<(Ipv4Addr, HostPort)> = lock(&self.host_ports)
            .values()
            .flat_map(|(ip, ports)| ports.iter().map(|p| (*ip, p.clone())))
            .collect();
        nft::apply(&nft::base_table(
            &self.cfg.table,
            &self.cfg.bridge,
            self.cfg.cluster_cidr,
            &all,
        ))?;
        Ok(())
    }

    /// Makes the routes to other nodes' pods exactly `peers` (pod CIDR, the node's
    /// InternalIP), removing skiff routes to nodes that are gone: via the node (host-gw)
    /// or, with VXLAN, on-link over the overlay with the peer's neighbour and forwarding
    /// entries.
    pub async fn sync_routes(&self, peers: &[(Ipv4Net, Ipv4Addr)]) -> Result<(), NetError> {
        let nl = Nl::open(None)?;
        let own = self.pod_cidr();
        let vxlan = lock(&self.ready).as_ref().and_then(|r| r.vxlan);
        // (pod CIDR) → (gateway, the node's address).
        let want: BTreeMap<(Ipv4Addr, u8), (Ipv4Addr, Ipv4Addr)> = peers
            .iter()
            .filter(|(cidr, _)| Some(cidr.trunc()) != own)
            .map(|(cidr, node)| {
                let gw = if vxlan.is_some() {
                    cidr.trunc().network()
                } else {
                    *node
                };
                ((cidr.network(), cidr.prefix_len()), (gw, *node))
            })
            .collect();
        let fits = |r: &crate::netlink::SkiffRoute, gw: Ipv4Addr| {
            r.gateway == Some(gw) && (vxlan.is_none() || r.oif == vxlan)
        };
        let have = nl.skiff_routes().await?;
        for r in &have {
            if r.gateway.is_none() {
                continue;
            }
            if !want
                .get(&(r.dst, r.prefix))
                .is_some_and(|(gw, _)| fits(r, *gw))
            {
                nl.del_route(r).await?;
            }
        }
        for ((dst, prefix), (gw, node)) in &want {
            if let Some(dev) = vxlan {
                let mac = vtep_mac(*node);
                nl.replace_fdb(dev, mac, *node).await?;
                nl.replace_neigh(dev, *gw, mac).await?;
            }
            let present = have
                .iter()
                .any(|r| r.dst == *dst && r.prefix == *prefix && fits(r, *gw));
            if !present {
                match vxlan {
                    Some(dev) => nl.replace_route_onlink(*dst, *prefix, *gw, dev).await?,
                    None => nl.replace_route(*dst, *prefix, Some(*gw)).await?,
                }
            }
        }
        Ok(())
    }
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, NetError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetError::Runtime)?;
    Ok(rt.block_on(f))
}

const FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding in this namespace, remembering the value it had so
/// [`clean`] puts it back.
fn enable_forwarding(state_dir: &Path) -> Result<(), NetError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| NetError::Io { op, path, source }
    };
    let before = std::fs::read_to_string(FORWARD).map_err(io("reading", Path::new(FORWARD)))?;
    if before.trim() == "1" {
        return Ok(());
    }
    std::fs::create_dir_all(state_dir).map_err(io("creating", state_dir))?;
    let saved = state_dir.join("ip_forward.orig");
    if !saved.exists() {
        std::fs::write(&saved, before.trim()).map_err(io("writing", &saved))?;
    }
    std::fs::write(FORWARD, "1").map_err(io("enabling IP forwarding in", Path::new(FORWARD)))
}

/// Removes the bridge (and with it every pod's veth), skiff's routes and nft table, and
/// puts IP forwarding back as it was. Errors are reported, not fatal: it does what it can.
pub async fn clean(cfg: &PodNetConfig) -> Vec<String> {
    let mut problems = Vec::new();
    match Nl::open(None) {
        Ok(nl) => {
            let recorded = std::fs::read_to_string(cfg.state_dir.join(VXLAN_RECORD)).ok();
            let vxlan = cfg.vxlan.as_ref().map(|v| v.device.as_str());
            let mut devices = vec![cfg.bridge.as_str()];
            devices.extend(vxlan);
            devices.extend(recorded.as_deref().map(str::trim));
            devices.dedup();
            for dev in devices {
                if let Err(e) = nl.del_link(dev).await {
                    problems.push(e.to_string());
                }
            }
            match nl.skiff_routes().await {
                Ok(routes) => {
                    for r in routes {
                        if let Err(e) = nl.del_route(&r).await {
                            problems.push(e.to_string());
                        }
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if let Err(e) = nft::delete_table(&cfg.table) {
        problems.push(e.to_string());
    }
    let saved = cfg.state_dir.join("ip_forward.orig");
    if let Ok(v) = std::fs::read_to_string(&saved) {
        if std::fs::write(FORWARD, v.trim()).is_ok() {
            let _ = std::fs::remove_file(&saved);
        }
    }
    let _ = std::fs::remove_dir_all(cfg.state_dir.join("ipam"));
    let _ = std::fs::remove_file(cfg.state_dir.join(VXLAN_RECORD));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_the_kernel_limit_and_differ_by_pod() {
        let a = host_veth("7f9c2a34-1b2c-4d5e-8f90-123456789abc");
        let b = host_veth("7f9c2a34-1b2c-4d5e-8f90-123456789abd");
        assert!(a.len() <= 15 && peer_veth("x").len() <= 15);
        assert_ne!(a, b);
    }
}
