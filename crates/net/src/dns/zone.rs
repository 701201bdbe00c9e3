//! The cluster zone: an immutable index of every name the cluster domain answers, built
//! from typed Services and EndpointSlices (the reflector caches' contents), and the
//! lookup of one question against it.
//!
//! Contract (the Kubernetes DNS specification, schema 1.1.0):
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA of the ClusterIP(s); for a headless Service the
//!   addresses of its ready endpoints (all of them with `publishNotReadyAddresses`); an
//!   ExternalName Service is a CNAME to its external name.
//! - `<host>.<svc>.<ns>.svc.<domain>`: one headless endpoint, `<host>` being the
//!   endpoint's hostname or else its dashed address (`10-42-0-5`).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV per named port, targeting the
//!   Service name (ClusterIP) or each endpoint's name (headless).
//! - PTR for every ClusterIP and headless endpoint address.
//! - `<a-b-c-d>.<ns>.pod.<domain>`: that address (synthesised, not indexed).
//!
//! A name under the domain is either an owner of records, an empty non-terminal (an
//! ancestor of one: NODATA), or does not exist (NXDOMAIN). A zone is rebuilt as a whole
//! when the caches change, so a lookup never sees half an update.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::names::{dashed, label, undashed};

/// The label an EndpointSlice names its Service by.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What one question gets from the zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Records of the asked type (or a CNAME), plus helpful extras (the addresses of
    /// SRV targets).
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of that type (NOERROR, empty answer).
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SrvTarget {
    port: u16,
    target: Name,
}

#[derive(Debug, Default)]
struct Owner {
    addrs: BTreeSet<IpAddr>,
    cname: Option<Name>,
    srv: BTreeSet<SrvTarget>,
}

/// The index of one cluster domain at one moment.
#[derive(Debug)]
pub struct Zone {
    /// The domain, lower-case and fully qualified (`cluster.local.`).
    domain: Name,
    ttl: u32,
    owners: HashMap<Name, Owner>,
    /// Names that own nothing but lie above an owner (`<ns>.svc.<domain>`).
    nonterminals: HashSet<Name>,
    ptr: HashMap<IpAddr, BTreeSet<Name>>,
}

/// A lower-case, fully-qualified name from `text` (`None` when `text` is not a valid
/// name, e.g. an object that slipped past validation).
fn fqdn(text: &str) -> Option<Name> {
    let mut n = Name::from_ascii(text).ok()?.to_lowercase();
    n.set_fqdn(true);
    Some(n)
}

fn child(parent: &Name, label: &str) -> Option<Name> {
    Name::from_ascii(label)
        .ok()?
        .to_lowercase()
        .append_domain(parent)
        .ok()
}

impl Zone {
    /// Indexes `services` and `slices` for `domain` (e.g. `cluster.local`). Objects whose
    /// names are not valid DNS names are skipped: one bad object must not take the zone
    /// down.
    pub fn build<'a>(
        domain: &str,
        ttl: u32,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Option<Zone> {
        let domain = fqdn(domain)?;
        let mut zone = Zone {
            domain,
            ttl,
            owners: HashMap::new(),
            nonterminals: HashSet::new(),
            ptr: HashMap::new(),
        };
        // Slices by (namespace, service name).
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                by_service.entry((ns, svc.clone())).or_default().push(s);
            }
        }
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let slices = by_service
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            zone.add_service(&ns, &name, svc, slices);
        }
        Some(zone)
    }

    /// The domain this zone answers for.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    fn owner(&mut self, name: Name) -> &mut Owner {
        // Every ancestor up to the domain exists as at least an empty non-terminal.
        let mut up = name.base_name();
        while up.num_labels() > self.domain.num_labels() && self.domain.zone_of(&up) {
            self.nonterminals.insert(up.clone());
            up = up.base_name();
        }
        self.owners.entry(name).or_default()
    }

    fn add_service(&mut self, ns: &str, name: &str, svc: &Service, slices: &[&EndpointSlice]) {
        let Some(svc_name) = child(&self.domain, "svc")
            .and_then(|d| child(&d, ns))
            .and_then(|d| child(&d, name))
        else {
            tracing::debug!(ns, name, "service name is not a DNS name; not served");
            return;
        };
        let Some(spec) = svc.spec.as_ref() else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().and_then(fqdn) {
                self.owner(svc_name).cname = Some(target);
            }
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            let ips: BTreeSet<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect();
            if ips.is_empty() {
                // Not yet allocated: nothing to answer with, but the name exists.
                self.owner(svc_name.clone());
            }
            for ip in &ips {
                self.ptr.entry(*ip).or_default().insert(svc_name.clone());
            }
            let owner = self.owner(svc_name.clone());
            owner.addrs.extend(ips);
            for p in spec.ports.iter().flatten() {
                let (Some(pname), Ok(port)) = (p.name.as_deref(), u16::try_from(p.port)) else {
                    continue;
                };
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                if let Some(srv_name) = srv_name(&svc_name, pname, proto) {
                    self.owner(srv_name).srv.insert(SrvTarget {
                        port,
                        target: svc_name.clone(),
                    });
                }
            }
            return;
        }
        // Headless: the endpoints answer.
        self.owner(svc_name.clone());
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        for slice in slices {
            if slice.address_type == "FQDN" {
                continue;
            }
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready && !publish_not_ready {
                    continue;
                }
                for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    let host = ep
                        .hostname
                        .clone()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| dashed(ip));
                    let Some(ep_name) = child(&svc_name, &host) else {
                        continue;
                    };
                    self.owner(svc_name.clone()).addrs.insert(ip);
                    self.owner(ep_name.clone()).addrs.insert(ip);
                    self.ptr.entry(ip).or_default().insert(ep_name.clone());
                    for p in slice.ports.iter().flatten() {
                        let (Some(pname), Some(port)) = (
                            p.name.as_deref().filter(|n| !n.is_empty()),
                            p.port.and_then(|p| u16::try_from(p).ok()),
                        ) else {
                            continue;
                        };
                        let proto = p.protocol.as_deref().unwrap_or("TCP");
                        if let Some(srv_name) = srv_name(&svc_name, pname, proto) {
                            self.owner(srv_name).srv.insert(SrvTarget {
                                port,
                                target: ep_name.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Answers `qtype` for `name` (any case), which must lie under the domain.
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let mut key = name.to_lowercase();
        key.set_fqdn(true);
        if key == self.domain {
            return match qtype {
                RecordType::SOA => Lookup::Answer {
                    answers: vec![self.soa()],
                    additionals: vec![],
                },
                _ => Lookup::NoData,
            };
        }
        if let Some(found) = self.lookup_pod(&key, name, qtype) {
            return found;
        }
        let Some(owner) = self.owners.get(&key) else {
            return if self.nonterminals.contains(&key) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        let rec = |data: RData| Record::from_rdata(name.clone(), self.ttl, data);
        if let Some(target) = &owner.cname {
            return Lookup::Answer {
                answers: vec![rec(RData::CNAME(CNAME(target.clone())))],
                additionals: vec![],
            };
        }
        let (answers, additionals): (Vec<Record>, Vec<Record>) = match qtype {
            RecordType::A | RecordType::AAAA | RecordType::ANY => (
                owner
                    .addrs
                    .iter()
                    .filter_map(|ip| address(*ip, qtype))
                    .map(rec)
                    .collect(),
                vec![],
            ),
            RecordType::SRV => {
                let weight = u16::try_from(100 / owner.srv.len().max(1))
                    .unwrap_or(1)
                    .max(1);
                let answers = owner
                    .srv
                    .iter()
                    .map(|s| rec(RData::SRV(SRV::new(0, weight, s.port, s.target.clone()))))
                    .collect();
                // The targets' addresses, so a client needs no second round trip.
                let targets: BTreeSet<&Name> = owner.srv.iter().map(|s| &s.target).collect();
                let additionals = targets
                    .into_iter()
                    .filter_map(|t| self.owners.get(t).map(|o| (t, o)))
                    .flat_map(|(t, o)| {
                        o.addrs.iter().filter_map(move |ip| {
                            address(*ip, RecordType::ANY)
                                .map(|d| Record::from_rdata(t.clone(), self.ttl, d))
                        })
                    })
                    .collect();
                (answers, additionals)
            }
            _ => (vec![], vec![]),
        };
        if answers.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer {
                answers,
                additionals,
            }
        }
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>`: answered for any well-formed address, as Kubernetes
    /// DNS does without a pod cache ("pods insecure"); `None` when `key` is not under
    /// `pod.<domain>`.
    fn lookup_pod(&self, key: &Name, name: &Name, qtype: RecordType) -> Option<Lookup> {
        let pods = child(&self.domain, "pod")?;
        if !pods.zone_of(key) {
            return None;
        }
        let depth = key.num_labels() - pods.num_labels();
        Some(match depth {
            // `pod.<domain>` and `<ns>.pod.<domain>`: structure, no records.
            0 | 1 => Lookup::NoData,
            2 => match label(key, 0).as_deref().and_then(undashed) {
                Some(ip) => match address(ip, qtype) {
                    Some(d) => Lookup::Answer {
                        answers: vec![Record::from_rdata(name.clone(), self.ttl, d)],
                        additionals: vec![],
                    },
                    None => Lookup::NoData,
                },
                None => Lookup::NxDomain,
            },
            _ => Lookup::NxDomain,
        })
    }

    /// PTR records for `ip`, if the cluster names it (`owner` is the question's name).
    pub fn lookup_ptr(&self, ip: IpAddr, owner: &Name) -> Option<Vec<Record>> {
        let names = self.ptr.get(&ip)?;
        Some(
            names
                .iter()
                .map(|n| Record::from_rdata(owner.clone(), self.ttl, RData::PTR(PTR(n.clone()))))
                .collect(),
        )
    }

    /// The zone's SOA, for authoritative negative answers (its minimum is the TTL, so
    /// resolvers cache a miss no longer than a hit).
    pub fn soa(&self) -> Record {
        soa_record(&self.domain, self.ttl)
    }
}

/// An SOA for `apex` (the cluster domain or one of its reverse zones).
pub fn soa_record(apex: &Name, ttl: u32) -> Record {
    let mname = child(apex, "ns").unwrap_or_else(|| apex.clone());
    let rname = child(apex, "hostmaster").unwrap_or_else(|| apex.clone());
    Record::from_rdata(
        apex.clone(),
        ttl,
        RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, ttl)),
    )
}

/// `_<port>._<proto>.<svc-name>`, protocol lower-cased.
fn srv_name(svc: &Name, port: &str, proto: &str) -> Option<Name> {
    let proto = child(svc, &format!("_{}", proto.to_ascii_lowercase()))?;
    child(&proto, &format!("_{port}"))
}

/// The record data of `ip` when it answers `qtype` (ANY takes both families).
fn address(ip: IpAddr, qtype: RecordType) -> Option<RData> {
    match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(v6))),
        _ => None,
    }
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
