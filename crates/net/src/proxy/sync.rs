//! The incremental sync: what is in the table now, what changed since, and the one
//! transaction that brings the table from the first to the second.
//!
//! Contract: a [`Proxier`] is fed Services and EndpointSlices as they change (any order,
//! any repetition) and marks their Service dirty. [`Proxier::plan`] recomputes only the
//! dirty Services with the pure model and diffs each against what was last applied, so
//! the transaction of a one-endpoint change is the same few commands at 10 Services or at
//! 10,000. The caller applies the plan and reports back: [`Proxier::commit`] makes it the
//! new applied state, [`Proxier::abort`] (nft failed; nothing changed in the kernel since
//! transactions are atomic) keeps the old state, re-marks the Services dirty and asks for
//! a full resync, which recreates the table from scratch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{service_rules, MapKey, ServiceRef, ServiceRules};
use super::nft::{Transaction, TxBuilder, NO_ENDPOINTS_MAP, SERVICE_IPS_MAP};
use super::ProxyConfig;

/// The proxy's view of the cluster and of the table.
#[derive(Debug)]
pub struct Proxier {
    cfg: ProxyConfig,
    services: HashMap<ServiceRef, Service>,
    /// Slices by Service, then by slice name.
    slices: HashMap<ServiceRef, BTreeMap<String, EndpointSlice>>,
    /// Which Service each slice (namespace, name) was filed under, so a slice whose
    /// service-name label changes leaves its old Service.
    slice_owner: HashMap<(String, String), ServiceRef>,
    /// What the table holds, per Service (only Services with at least one object).
    applied: HashMap<ServiceRef, ServiceRules>,
    /// How many applied Services DNAT to each endpoint address (its `hairpin` element
    /// exists while the count is above 0).
    hairpin_refs: HashMap<Ipv4Addr, usize>,
    /// Services changed since the last plan, with when the first change was seen.
    dirty: HashMap<ServiceRef, Instant>,
    /// The next plan rewrites the whole table.
    full: bool,
    /// [`fingerprint`] of each applied Service, and their wrapping sum: what the table
    /// holds, in one number a restarted proxy compares with its first plan's.
    fingerprints: HashMap<ServiceRef, u64>,
    aggregate: u64,
}

/// A stable hash of one Service's rules under `cfg` (FNV-1a over their debug form, which
/// is ordered: every collection in [`ServiceRules`] is a BTree).
fn fingerprint(cfg: &ProxyConfig, key: &ServiceRef, rules: &ServiceRules) -> u64 {
    let text = format!(
        "{}|{}|{:?}|{:?}|{key:?}|{rules:?}",
        env!("CARGO_PKG_VERSION"),
        cfg.table,
        cfg.cluster_cidr,
        cfg.node_ips
    );
    crate::fnv1a(text.as_bytes())
}

/// One sync's work: the transaction and what to remember once it is applied.
#[derive(Debug)]
pub struct Plan {
    pub transaction: Transaction,
    /// A full resync (table recreated) rather than an incremental one.
    pub full: bool,
    /// When the oldest change this plan carries was seen (network-programming latency).
    pub changes_since: Vec<Instant>,
    /// UDP flows to clear after applying: (destination, endpoint that went away).
    pub stale_udp: Vec<(MapKey, Ipv4Addr)>,
    updates: Vec<(ServiceRef, ServiceRules)>,
    dirty: HashMap<ServiceRef, Instant>,
    /// The hairpin counts once applied.
    hairpin_refs: HashMap<Ipv4Addr, usize>,
}

impl Plan {
    /// How many `service-ips` and `no-endpoint-services` elements the table holds once a
    /// full plan is applied.
    pub fn expected_elements(&self) -> (usize, usize) {
        self.updates.iter().fold((0, 0), |(a, b), (_, r)| {
            (a + r.service_ips.len(), b + r.no_endpoints.len())
        })
    }
}

impl Proxier {
    pub fn new(cfg: ProxyConfig) -> Self {
        Proxier {
            cfg,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            hairpin_refs: HashMap::new(),
            applied: HashMap::new(),
            dirty: HashMap::new(),
            full: true,
            fingerprints: HashMap::new(),
            aggregate: 0,
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    fn touch(&mut self, key: ServiceRef) {
        self.dirty.entry(key).or_insert_with(Instant::now);
    }

    pub fn upsert_service(&mut self, svc: Service) {
        if let Some(key) = ServiceRef::of_service(&svc) {
            if self.services.get(&key) != Some(&svc) {
                self.services.insert(key.clone(), svc);
                self.touch(key);
            }
        }
    }

    pub fn delete_service(&mut self, key: &ServiceRef) {
        if self.services.remove(key).is_some() {
            self.touch(key.clone());
        }
    }

    pub fn upsert_slice(&mut self, slice: EndpointSlice) {
        let (Some(key), Some(name)) = (ServiceRef::of_slice(&slice), slice.metadata.name.clone())
        else {
            return;
        };
        let id = (key.namespace.clone(), name.clone());
        if let Some(old) = self.slice_owner.insert(id, key.clone()) {
            if old != key {
                self.remove_slice_from(&old, &name);
            }
        }
        let by_name = self.slices.entry(key.clone()).or_default();
        if by_name.get(&name) != Some(&slice) {
            by_name.insert(name, slice);
            self.touch(key);
        }
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        let (Some(ns), Some(name)) = (
            slice.metadata.namespace.as_ref(),
            slice.metadata.name.as_ref(),
        ) else {
            return;
        };
        // Filed under the Service it was last seen with (its label may have changed).
        if let Some(key) = self.slice_owner.remove(&(ns.clone(), name.clone())) {
            self.remove_slice_from(&key, name);
        }
    }

    fn remove_slice_from(&mut self, key: &ServiceRef, name: &str) {
        if let Some(by_name) = self.slices.get_mut(key) {
            if by_name.remove(name).is_some() {
                if by_name.is_empty() {
                    self.slices.remove(key);
                }
                self.touch(key.clone());
            }
        }
    }

    /// Replaces every Service (a re-list): ones not in `all` are deleted.
    pub fn replace_services(&mut self, all: Vec<Service>) {
        let keep: BTreeSet<ServiceRef> = all.iter().filter_map(ServiceRef::of_service).collect();
        let gone: Vec<ServiceRef> = self
            .services
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.delete_service(&k);
        }
        for s in all {
            self.upsert_service(s);
        }
    }

    /// Replaces every EndpointSlice (a re-list).
    pub fn replace_slices(&mut self, all: Vec<EndpointSlice>) {
        let keep: BTreeSet<(ServiceRef, String)> = all
            .iter()
            .filter_map(|s| Some((ServiceRef::of_slice(s)?, s.metadata.name.clone()?)))
            .collect();
        let mut gone = Vec::new();
        for (svc, by_name) in &self.slices {
            for (name, slice) in by_name {
                if !keep.contains(&(svc.clone(), name.clone())) {
                    gone.push(slice.clone());
                }
            }
        }
        for s in gone {
            self.delete_slice(&s);
        }
        for s in all {
            self.upsert_slice(s);
        }
    }

    /// The next sync rewrites the whole table (the table changed behind our back, or an
    /// incremental apply failed).
    pub fn request_full_sync(&mut self) {
        self.full = true;
    }

    /// Whether anything waits to be synced.
    pub fn pending(&self) -> bool {
        self.full || !self.dirty.is_empty()
    }

    /// Number of Services known (for metrics).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    fn rules_of(&self, key: &ServiceRef) -> ServiceRules {
        let Some(svc) = self.services.get(key) else {
            return ServiceRules::default();
        };
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(key)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        service_rules(svc, &slices, &self.cfg)
    }

    /// Takes the pending changes and builds their transaction (nothing is applied here).
    pub fn plan(&mut self) -> Plan {
        let dirty = std::mem::take(&mut self.dirty);
        let changes_since: Vec<Instant> = dirty.values().copied().collect();
        let mut b = TxBuilder::new(&self.cfg.table);
        let mut updates = Vec::new();
        let mut stale_udp = Vec::new();
        let full = self.full;
        if full {
            b.recreate_table();
            let mut keys: Vec<&ServiceRef> = self.services.keys().collect();
            keys.sort();
            let empty = ServiceRules::default();
            for key in keys {
                let new = self.rules_of(key);
                diff(&empty, &new, &mut b, false);
                if let Some(old) = self.applied.get(key) {
                    stale_udp.extend(stale_udp_flows(old, &new));
                }
                updates.push((key.clone(), new));
            }
            // Services that disappeared while the table was out of sync.
            for (key, old) in &self.applied {
                if !self.services.contains_key(key) {
                    stale_udp.extend(stale_udp_flows(old, &ServiceRules::default()));
                    updates.push((key.clone(), ServiceRules::default()));
                }
            }
        } else {
            let empty = ServiceRules::default();
            let mut keys: Vec<&ServiceRef> = dirty.keys().collect();
            keys.sort();
            for key in keys {
                let new = self.rules_of(key);
                let old = self.applied.get(key).unwrap_or(&empty);
                if *old == new {
                    continue;
                }
                diff(old, &new, &mut b, true);
                stale_udp.extend(stale_udp_flows(old, &new));
                updates.push((key.clone(), new));
            }
        }
        // Hairpin elements follow the count of Services using each endpoint address.
        let mut refs = if full {
            HashMap::new()
        } else {
            self.hairpin_refs.clone()
        };
        let mut touched = BTreeSet::new();
        for (key, new) in &updates {
            if !full {
                if let Some(old) = self.applied.get(key) {
                    for ip in &old.endpoint_ips {
                        if let Some(n) = refs.get_mut(ip) {
                            *n = n.saturating_sub(1);
                        }
                        touched.insert(*ip);
                    }
                }
            }
            for ip in &new.endpoint_ips {
                *refs.entry(*ip).or_insert(0) += 1;
                touched.insert(*ip);
            }
        }
        for ip in touched {
            let before = if full {
                0
            } else {
                self.hairpin_refs.get(&ip).copied().unwrap_or(0)
            };
            let after = refs.get(&ip).copied().unwrap_or(0);
            if before == 0 && after > 0 {
                b.add_hairpin(ip);
            } else if before > 0 && after == 0 {
                b.delete_hairpin(ip);
            }
        }
        refs.retain(|_, n| *n > 0);
        Plan {
            hairpin_refs: refs,
            transaction: b.finish(),
            full,
            changes_since,
            stale_udp,
            updates,
            dirty,
        }
    }

    /// The plan was applied: it is now what the table holds.
    pub fn commit(&mut self, plan: Plan) {
        self.hairpin_refs = plan.hairpin_refs;
        if plan.full {
            self.full = false;
            self.applied.clear();
            self.fingerprints.clear();
            self.aggregate = 0;
        }
        for (key, rules) in plan.updates {
            if let Some(old) = self.fingerprints.remove(&key) {
                self.aggregate = self.aggregate.wrapping_sub(old);
            }
            if rules == ServiceRules::default() {
                self.applied.remove(&key);
            } else {
                let f = fingerprint(&self.cfg, &key, &rules);
                self.aggregate = self.aggregate.wrapping_add(f);
                self.fingerprints.insert(key.clone(), f);
                self.applied.insert(key, rules);
            }
        }
    }

    /// What the table holds (as [`Plan::fingerprint`] of a full plan would say).
    pub fn fingerprint(&self) -> u64 {
        self.aggregate
    }

    /// The fingerprint of what `plan` (a full one) writes: equal to [`Self::fingerprint`]
    /// of a proxy that applied the same rules, in this run or an earlier one.
    pub fn plan_fingerprint(&self, plan: &Plan) -> u64 {
        plan.updates
            .iter()
            .filter(|(_, r)| *r != ServiceRules::default())
            .fold(0u64, |acc, (k, r)| {
                acc.wrapping_add(fingerprint(&self.cfg, k, r))
            })
    }

    /// The plan failed to apply (the kernel kept the previous rules): its Services stay
    /// dirty and the next sync rewrites the table.
    pub fn abort(&mut self, plan: Plan) {
        for (key, since) in plan.dirty {
            let entry = self.dirty.entry(key).or_insert(since);
            *entry = (*entry).min(since);
        }
        self.full = true;
    }

    /// How many `service-ips` and `no-endpoint-services` elements the table should hold.
    pub fn expected_elements(&self) -> (usize, usize) {
        self.applied.values().fold((0, 0), |(a, b), r| {
            (a + r.service_ips.len(), b + r.no_endpoints.len())
        })
    }

    /// The chains and map elements the proxier believes are in the table (for tests and
    /// the drift check).
    pub fn applied_object_count(&self) -> usize {
        self.applied.values().map(ServiceRules::object_count).sum()
    }
}

/// Adds to `b` the commands that turn `old` into `new` for one Service. With
/// `incremental` false the table is known to be empty of this Service's objects.
fn diff(old: &ServiceRules, new: &ServiceRules, b: &mut TxBuilder, incremental: bool) {
    for (name, timeout) in &new.affinity_sets {
        if old.affinity_sets.get(name) != Some(timeout) {
            b.add_affinity_set(name, *timeout);
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(old_rules) if old_rules == rules => {}
            Some(_) => b.write_chain(name, rules, incremental),
            None => {
                b.add_chain(name);
                b.write_chain(name, rules, false);
            }
        }
    }
    for (key, chain) in &old.service_ips {
        if new.service_ips.get(key) != Some(chain) {
            b.delete_element(SERVICE_IPS_MAP, key);
        }
    }
    for (key, chain) in &new.service_ips {
        if old.service_ips.get(key) != Some(chain) {
            b.add_service_ip(key, chain);
        }
    }
    for (key, v) in &old.no_endpoints {
        if new.no_endpoints.get(key) != Some(v) {
            b.delete_element(NO_ENDPOINTS_MAP, key);
        }
    }
    for (key, v) in &new.no_endpoints {
        if old.no_endpoints.get(key) != Some(v) {
            b.add_no_endpoints(key, *v);
        }
    }
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            b.delete_chain(name);
        }
    }
    for name in old.affinity_sets.keys() {
        if !new.affinity_sets.contains_key(name) {
            b.delete_set(name);
        }
    }
}

/// UDP flows whose endpoint went away: conntrack would keep sending them to it.
fn stale_udp_flows(old: &ServiceRules, new: &ServiceRules) -> Vec<(MapKey, Ipv4Addr)> {
    let mut out = Vec::new();
    for (key, old_ips) in &old.udp_endpoints {
        let new_ips = new.udp_endpoints.get(key);
        for ip in old_ips {
            if !new_ips.is_some_and(|n| n.contains(ip)) {
                out.push((*key, *ip));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
