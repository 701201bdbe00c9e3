//! The pure rule model: from one Service, its EndpointSlices and the node's
//! [`ProxyConfig`], the nftables objects that Service needs ([`ServiceRules`]).
//!
//! Contract: [`service_rules`] has no I/O and depends only on its arguments, so the
//! incremental sync can recompute one Service and compare the result with what it
//! applied last time. Every name it produces (chains, sets) is derived from the Service's
//! namespace, name and port (and an endpoint's address), never from a counter, so the same
//! input always yields the same names and two Services never share a chain.
//!
//! Behaviour follows kube-proxy's nftables mode (learned, not copied):
//! - every ClusterIP, node address (NodePort), load-balancer ingress IP and external IP
//!   becomes one element `ip . proto . port` of the shared `service-ips` verdict map that
//!   jumps to the Service port's chain;
//! - a port's chain picks an endpoint with cascading `numgen random` rules and DNATs to
//!   it; every endpoint address is in the shared `hairpin` set, so a pod reaching itself
//!   is masqueraded;
//! - only ready endpoints are used, or, when none is ready, the serving-and-terminating
//!   ones; internal/external traffic policy Local keeps only endpoints on this node;
//! - a port without any usable endpoint goes into `no-endpoint-services`: `reject` when
//!   the Service has no endpoints at all, `drop` when it has some but none for this
//!   traffic policy on this node;
//! - sessionAffinity ClientIP keeps a dynamic set of client addresses per endpoint with
//!   the Service's timeout, consulted before the random pick;
//! - external traffic (NodePort, load balancer) from outside the pod CIDR is marked for
//!   masquerade unless externalTrafficPolicy is Local (which keeps the client address).
//!
//! Only IPv4 is modelled (the table is family `ip`); IPv6 addresses are ignored.

use crate::fnv1a;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::ProxyConfig;

/// The label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of_service(svc: &Service) -> Option<ServiceRef> {
        Some(ServiceRef::new(
            svc.metadata.namespace.clone()?,
            svc.metadata.name.clone()?,
        ))
    }

    /// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
    pub fn of_slice(slice: &EndpointSlice) -> Option<ServiceRef> {
        let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        Some(ServiceRef::new(
            slice.metadata.namespace.clone()?,
            name.clone(),
        ))
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes' spelling (`TCP`, the default when unset); None for anything else.
    pub fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nft's spelling (`inet_proto` values).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One element key of the `service-ips` / `no-endpoint-services` maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MapKey {
    pub ip: Ipv4Addr,
    pub proto: Protocol,
    pub port: u16,
}

/// What `no-endpoint-services` does with a new connection to a port without endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoEndpoints {
    /// The Service has no usable endpoint: refuse (ICMP port unreachable, so TCP clients
    /// fail at once instead of timing out).
    Reject,
    /// It has endpoints, but none on this node for a Local traffic policy.
    Drop,
}

/// One rule of a per-Service chain, typed so the diff compares values and the renderer
/// ([`super::nft`]) is the only place that knows nft's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `ip daddr <cluster_ip> ip saddr != <cluster_cidr> jump mark-for-masquerade`:
    /// traffic to a ClusterIP from outside the pod network is masqueraded so the reply
    /// comes back through this node.
    MasqueradeOffCluster {
        cluster_ip: Ipv4Addr,
        cluster_cidr: Ipv4Net,
    },
    /// `ip saddr != <cluster_cidr> jump mark-for-masquerade` (external traffic).
    MasqueradeExternal { cluster_cidr: Ipv4Net },
    /// `ip saddr <cluster_cidr> goto <chain>`: pods reaching an externalTrafficPolicy
    /// Local Service's external address use all endpoints, as kube-proxy does.
    PodsGoto {
        cluster_cidr: Ipv4Net,
        chain: String,
    },
    /// `goto <chain>`.
    Goto { chain: String },
    /// `ip saddr @<set> update @<set> { ip saddr } meta l4proto <p> dnat to <ip>:<port>`:
    /// a client with affinity goes back to its endpoint (and its entry is refreshed).
    AffinityDnat {
        set: String,
        proto: Protocol,
        ip: Ipv4Addr,
        port: u16,
    },
    /// `numgen random mod <one_in> 0` (left out when `one_in` is 1), then
    /// `update @<remember> { ip saddr }` (with affinity), then
    /// `meta l4proto <p> dnat to <ip>:<port>`.
    Dnat {
        one_in: u32,
        remember: Option<String>,
        proto: Protocol,
        ip: Ipv4Addr,
        port: u16,
    },
}

/// Everything one Service needs in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Regular chains by name, with their rules in order.
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Session-affinity sets by name, with their timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// `service-ips` elements: destination → chain to `goto`.
    pub service_ips: BTreeMap<MapKey, String>,
    /// `no-endpoint-services` elements.
    pub no_endpoints: BTreeMap<MapKey, NoEndpoints>,
    /// Every endpoint address a chain DNATs to: each gets a `hairpin` set element
    /// (`ip . ip`), so a pod reaching itself through a Service is masqueraded (else it
    /// would answer itself directly). Shared between Services, so the sync counts users.
    pub endpoint_ips: BTreeSet<Ipv4Addr>,
    /// For UDP destinations, the endpoint addresses behind them: when one goes away its
    /// conntrack entries must go too, or clients keep sending into the void.
    pub udp_endpoints: BTreeMap<MapKey, BTreeSet<Ipv4Addr>>,
}

impl ServiceRules {
    /// How many nft objects (chains, rules, sets, elements) this Service accounts for.
    pub fn object_count(&self) -> usize {
        self.chains.len()
            + self.chains.values().map(Vec::len).sum::<usize>()
            + self.endpoint_ips.len()
            + self.affinity_sets.len()
            + self.service_ips.len()
            + self.no_endpoints.len()
    }
}

/// One usable endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    ip: Ipv4Addr,
    port: u16,
    local: bool,
}

/// An endpoint as read from the slices, before the ready/serving selection.
struct Candidate {
    ep: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// The nft objects of one Service. Headless and ExternalName Services, and Services
/// without an IPv4 ClusterIP, get none.
pub fn service_rules(svc: &Service, slices: &[&EndpointSlice], cfg: &ProxyConfig) -> ServiceRules {
    let mut out = ServiceRules::default();
    let (Some(svc_ref), Some(spec)) = (ServiceRef::of_service(svc), svc.spec.as_ref()) else {
        return out;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return out;
    }
    let cluster_ips = cluster_ipv4s(svc);
    if cluster_ips.is_empty() {
        // Headless (None) or IPv6 only: nothing for this table to do.
        return out;
    }
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let cluster_cidr = match cfg.cluster_cidr {
        IpNet::V4(n) => Some(n),
        IpNet::V6(_) => None,
    };
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => Some(
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                // Kubernetes' default: three hours.
                .unwrap_or(10_800),
        ),
        _ => None,
    };
    let ingress_ips: Vec<Ipv4Addr> = if service_type == "LoadBalancer" {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
            .collect()
    } else {
        Vec::new()
    };
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .collect();
    let node_ips: Vec<Ipv4Addr> = cfg
        .node_ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();

    for port in spec.ports.iter().flatten() {
        let Some(proto) = Protocol::parse(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(svc_port) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let label = format!(
            "{}/{}/{}/{}",
            svc_ref.namespace,
            svc_ref.name,
            proto.nft(),
            if port_name.is_empty() {
                svc_port.to_string()
            } else {
                port_name.clone()
            }
        );
        let port_id = format!("{svc_ref}/{port_name}/{}", proto.nft());

        let candidates = candidates(slices, port, proto, &cfg.node_name);
        let cluster_eps = usable(&candidates, |_| true);
        let local_eps = usable(&candidates, |e| e.local);

        // Destinations of this port: internal (ClusterIP) and external ones.
        let internal: Vec<MapKey> = cluster_ips
            .iter()
            .filter(|ip| !cfg.skip_cluster_ips.contains(&IpAddr::V4(**ip)))
            .map(|ip| MapKey {
                ip: *ip,
                proto,
                port: svc_port,
            })
            .collect();
        let mut external: Vec<MapKey> = Vec::new();
        if matches!(service_type, "NodePort" | "LoadBalancer") {
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                external.extend(node_ips.iter().map(|ip| MapKey {
                    ip: *ip,
                    proto,
                    port: node_port,
                }));
            }
        }
        external.extend(
            ingress_ips
                .iter()
                .chain(external_ips.iter())
                .map(|ip| MapKey {
                    ip: *ip,
                    proto,
                    port: svc_port,
                }),
        );
        // A destination listed twice (an external IP equal to a node IP) keeps its first
        // meaning.
        external.retain(|k| !internal.contains(k));

        let svc_chain = format!("svc-{}", name_suffix(&port_id, &label));
        let lcl_chain = format!("lcl-{}", name_suffix(&port_id, &label));
        let ext_chain = format!("ext-{}", name_suffix(&port_id, &label));
        let internal_eps = if internal_local {
            &local_eps
        } else {
            &cluster_eps
        };
        let external_eps = if external_local {
            &local_eps
        } else {
            &cluster_eps
        };
        let internal_chain = if internal_local {
            &lcl_chain
        } else {
            &svc_chain
        };
        // The all-endpoints chain serves ClusterIP traffic (policy Cluster) and external
        // traffic (policy Cluster, or pods short-circuiting a Local policy).
        let use_svc = !cluster_eps.is_empty()
            && ((!internal_local && !internal.is_empty()) || !external.is_empty());
        let use_lcl =
            !local_eps.is_empty() && (internal_local || (external_local && !external.is_empty()));
        let use_ext = !external.is_empty() && !external_eps.is_empty();

        // No chain per endpoint and no anonymous set or map: nft 1.0.6 reads every set
        // and chain of the table before each transaction that adds a rule, which made a
        // one-endpoint change take 150 ms-3 s at 10,000 Services with those layouts. So a
        // port's chain picks its endpoint with iptables-style cascading `numgen` rules
        // (endpoint i of n with probability 1/(n-i) of what reaches it: uniform).
        let mut ep_set = BTreeMap::new();
        if let Some(timeout) = affinity {
            let reached: BTreeSet<&Endpoint> = cluster_eps
                .iter()
                .filter(|_| use_svc)
                .chain(local_eps.iter().filter(|_| use_lcl))
                .collect();
            for ep in reached {
                // The timeout is part of the set's name: a changed timeout makes a new set
                // (and rewrites the chains that use it).
                let id = format!("{port_id}/{}:{}/{timeout}", ep.ip, ep.port);
                let set = format!("aff-{}", name_suffix(&id, ""));
                out.affinity_sets.insert(set.clone(), timeout);
                ep_set.insert(ep.clone(), set);
            }
        }
        let balance = |eps: &[Endpoint], chain_is_internal: bool| -> Vec<Rule> {
            let mut rules = Vec::new();
            if chain_is_internal {
                if let Some(cidr) = cluster_cidr {
                    rules.extend(internal.iter().map(|k| Rule::MasqueradeOffCluster {
                        cluster_ip: k.ip,
                        cluster_cidr: cidr,
                    }));
                }
            }
            for ep in eps {
                if let Some(set) = ep_set.get(ep) {
                    rules.push(Rule::AffinityDnat {
                        set: set.clone(),
                        proto,
                        ip: ep.ip,
                        port: ep.port,
                    });
                }
            }
            let n = eps.len();
            for (i, ep) in eps.iter().enumerate() {
                rules.push(Rule::Dnat {
                    one_in: u32::try_from(n - i).unwrap_or(u32::MAX),
                    remember: ep_set.get(ep).cloned(),
                    proto,
                    ip: ep.ip,
                    port: ep.port,
                });
            }
            rules
        };
        if use_svc {
            let rules = balance(&cluster_eps, !internal_local && !internal.is_empty());
            out.chains.insert(svc_chain.clone(), rules);
        }
        if use_lcl {
            let rules = balance(&local_eps, internal_local && !internal.is_empty());
            out.chains.insert(lcl_chain.clone(), rules);
        }
        if use_svc {
            out.endpoint_ips.extend(cluster_eps.iter().map(|e| e.ip));
        }
        if use_lcl {
            out.endpoint_ips.extend(local_eps.iter().map(|e| e.ip));
        }
        if use_ext {
            let mut rules = Vec::new();
            match (external_local, cluster_cidr) {
                (false, Some(cidr)) => {
                    rules.push(Rule::MasqueradeExternal { cluster_cidr: cidr });
                    rules.push(Rule::Goto {
                        chain: svc_chain.clone(),
                    });
                }
                (false, None) => rules.push(Rule::Goto {
                    chain: svc_chain.clone(),
                }),
                (true, cidr) => {
                    if let (Some(cidr), true) = (cidr, use_svc) {
                        rules.push(Rule::PodsGoto {
                            cluster_cidr: cidr,
                            chain: svc_chain.clone(),
                        });
                    }
                    rules.push(Rule::Goto {
                        chain: lcl_chain.clone(),
                    });
                }
            }
            out.chains.insert(ext_chain.clone(), rules);
        }

        let verdict_for_empty = if cluster_eps.is_empty() {
            NoEndpoints::Reject
        } else {
            NoEndpoints::Drop
        };
        for key in &internal {
            if internal_eps.is_empty() {
                out.no_endpoints.insert(*key, verdict_for_empty);
            } else {
                out.service_ips.insert(*key, internal_chain.clone());
            }
        }
        for key in &external {
            if external_eps.is_empty() {
                out.no_endpoints.insert(*key, verdict_for_empty);
            } else {
                out.service_ips.insert(*key, ext_chain.clone());
            }
        }
        if proto == Protocol::Udp {
            let ips: BTreeSet<Ipv4Addr> = cluster_eps.iter().map(|e| e.ip).collect();
            for key in internal.iter().chain(external.iter()) {
                out.udp_endpoints.insert(*key, ips.clone());
            }
        }
    }
    out
}

/// The Service's IPv4 ClusterIPs (`spec.clusterIPs`, else `spec.clusterIP`), none when
/// headless.
fn cluster_ipv4s(svc: &Service) -> Vec<Ipv4Addr> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for ip in listed {
        if let Ok(a) = ip.parse::<Ipv4Addr>() {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// The endpoints of one Service port across all slices (IPv4 slices only), each address
/// once. A slice port matches by name and protocol and carries the resolved target port
/// (named targetPorts are resolved per pod by the EndpointSlice controller).
fn candidates(
    slices: &[&EndpointSlice],
    port: &ServicePort,
    proto: Protocol,
    node_name: &str,
) -> Vec<Candidate> {
    let want_name = port.name.as_deref().unwrap_or("");
    let mut out: Vec<Candidate> = Vec::new();
    let mut seen = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(target) = slice.ports.iter().flatten().find_map(|p| {
            let name_ok = p.name.as_deref().unwrap_or("") == want_name;
            let proto_ok = Protocol::parse(p.protocol.as_deref()) == Some(proto);
            if name_ok && proto_ok {
                p.port.and_then(|n| u16::try_from(n).ok())
            } else {
                None
            }
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            // kube-proxy uses an endpoint's first address; the others are the same pod.
            let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if !seen.insert((ip, target)) {
                continue;
            }
            let cond = ep.conditions.as_ref();
            // Unset conditions mean ready (the API's "unknown state is ready").
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            out.push(Candidate {
                ep: Endpoint {
                    ip,
                    port: target,
                    local: ep.node_name.as_deref() == Some(node_name),
                },
                ready,
                serving,
                terminating,
            });
        }
    }
    out
}

/// The ready endpoints among those `keep` accepts or, when none is ready, the ones that
/// are serving while terminating (so a rolling update never leaves a gap). Sorted, so the
/// rules do not change when only the slices' order does.
fn usable(all: &[Candidate], keep: impl Fn(&Endpoint) -> bool) -> Vec<Endpoint> {
    let mut ready: Vec<Endpoint> = all
        .iter()
        .filter(|c| keep(&c.ep) && c.ready && !c.terminating)
        .map(|c| c.ep.clone())
        .collect();
    if ready.is_empty() {
        ready = all
            .iter()
            .filter(|c| keep(&c.ep) && c.serving && c.terminating)
            .map(|c| c.ep.clone())
            .collect();
    }
    ready.sort();
    ready
}

/// `<16 hex digits of a stable hash of id>-<label>`, at most 60 characters in all with a
/// 4-character prefix: the hash keeps names unique, the label keeps `nft list` readable.
fn name_suffix(id: &str, label: &str) -> String {
    let mut name = format!("{:016x}", fnv1a(id.as_bytes()));
    if !label.is_empty() {
        name.push('-');
        for c in label.chars() {
            if name.len() >= 56 {
                break;
            }
            let ok = c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':');
            name.push(if ok { c } else { '_' });
        }
    }
    name
}

#[cfg(test)]
#[path = "model_tests.rs"]
pub(crate) mod tests;
