//! Service ClusterIP and NodePort allocation, kept in the store so that several API
//! servers on one etcd never hand out one address twice and a restart never reuses a
//! live one.
//!
//! Contract: every allocated address is a key of its own, written in the same store
//! transaction as the Service that holds it and removed in the same transaction that
//! deletes the Service (or releases the address on update):
//! - a ClusterIP is `/registry/networking.k8s.io/ipaddresses/<ip>`, holding an
//!   `networking.k8s.io/v1` IPAddress object whose `parentRef` names the Service (as
//!   kube-apiserver 1.33 keeps them);
//! - a NodePort is `/registry/ranges/servicenodeports/<port>`, holding the Service's
//!   namespace, name and uid.
//!
//! A transaction creates the Service only if none of its addresses' keys exists, so two
//! servers racing for one address see exactly one succeed; the loser picks another free
//! address (or, for an address the user asked for, answers Kubernetes' "already
//! allocated"). Free addresses are chosen at random from the range (as kube-apiserver does),
//! which keeps concurrent servers from probing the same ones; after a few collisions the
//! allocator reads the taken keys once and picks among the rest.
//!
//! [`repair`] (run at start) gives Services stored before this scheme their keys and
//! removes keys whose Service no longer exists (objects removed behind the API's back).

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use skiff_api::cluster::ClusterConfig;
use skiff_store::{Compare, ListOptions, Op, OpResult, Revision, Store, StoreError, Txn};

use crate::meta;
use crate::status::{ApiError, ApiResult, Cause};

pub(crate) const IP_PREFIX: &str = "/registry/networking.k8s.io/ipaddresses/";
pub(crate) const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// How often a create or update retries after losing an address to another writer.
const ATTEMPTS: usize = 32;
/// Random picks before the allocator reads which addresses are taken.
const BLIND_PICKS: usize = 4;

/// The addresses one Service object holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Holdings {
    pub ips: BTreeSet<Ipv4Addr>,
    pub ports: BTreeSet<u16>,
}

impl Holdings {
    /// What `svc` (a Service object) holds: its ClusterIPs and node ports.
    pub fn of(svc: &Value) -> Holdings {
        let mut h = Holdings::default();
        let ips = svc
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        for ip in ips.into_iter().chain(meta::str_at(svc, "/spec/clusterIP")) {
            if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                h.ips.insert(ip);
            }
        }
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                if let Ok(n) = u16::try_from(n) {
                    h.ports.insert(n);
                }
            }
        }
        h
    }

    fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.ips
            .iter()
            .map(|ip| ip_key(*ip))
            .chain(self.ports.iter().map(|p| port_key(*p)))
    }
}

pub(crate) fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

pub(crate) fn port_key(port: u16) -> String {
    format!("{PORT_PREFIX}{port}")
}

/// The owner written into each allocation record.
struct Owner<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
}

impl<'a> Owner<'a> {
    fn of(svc: &'a Value) -> Owner<'a> {
        Owner {
            namespace: meta::namespace(svc).unwrap_or_default(),
            name: meta::name(svc),
            uid: meta::str_at(svc, "/metadata/uid").unwrap_or_default(),
        }
    }
}

fn ip_record(ip: Ipv4Addr, owner: &Owner<'_>) -> Vec<u8> {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip.to_string(),
            "uid": meta::uid(),
            "creationTimestamp": meta::now(),
            "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
        },
        "spec": {"parentRef": {
            "group": "", "resource": "services",
            "namespace": owner.namespace, "name": owner.name,
        }},
    })
    .to_string()
    .into_bytes()
}

fn port_record(owner: &Owner<'_>) -> Vec<u8> {
    json!({"namespace": owner.namespace, "name": owner.name, "uid": owner.uid})
        .to_string()
        .into_bytes()
}

/// Which Service an allocation record names: (namespace, name).
fn record_owner(key: &str, value: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let (ns, name) = if key.starts_with(IP_PREFIX) {
        (
            v.pointer("/spec/parentRef/namespace")?,
            v.pointer("/spec/parentRef/name")?,
        )
    } else {
        (v.get("namespace")?, v.get("name")?)
    };
    Some((ns.as_str()?.to_string(), name.as_str()?.to_string()))
}

/// Allocates from the cluster's ranges through the store.
pub(crate) struct Allocator {
    pub config: ClusterConfig,
}

/// The outcome of one attempt to write a Service with its addresses.
enum Attempt {
    Written(Revision),
    /// The Service's own key was not as expected (exists on create, changed on update).
    ObjectConflict,
    /// These address keys are taken by someone else.
    Taken(Vec<String>),
}

impl Allocator {
    pub fn new(config: ClusterConfig) -> Allocator {
        Allocator { config }
    }

    /// Fills in the addresses `svc` leaves to the server (an empty clusterIP, ports
    /// without nodePort on NodePort/LoadBalancer services), keeping those of `old` (on
    /// update), and checks requested ones against the ranges. `avoid` are keys known
    /// to be taken.
    fn assign(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        avoid: &HashSet<String>,
    ) -> ApiResult<()> {
        let ty = meta::str_at(svc, "/spec/type")
            .unwrap_or("ClusterIP")
            .to_string();
        let name = meta::name(svc).to_string();
        if ty == "ExternalName" {
            if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        } else {
            let requested = meta::str_at(svc, "/spec/clusterIP")
                .or_else(|| svc.pointer("/spec/clusterIPs/0").and_then(Value::as_str))
                .unwrap_or("")
                .to_string();
            let kept = old
                .filter(|o| meta::str_at(o, "/spec/type") != Some("ExternalName"))
                .and_then(|o| meta::str_at(o, "/spec/clusterIP"))
                .map(str::to_string);
            let ip = match (requested.as_str(), kept) {
                ("", Some(k)) => k,
                ("", None) => self.pick_ip(avoid)?.to_string(),
                ("None", _) => "None".to_string(),
                (r, _) => {
                    let ok = r
                        .parse::<Ipv4Addr>()
                        .is_ok_and(|a| self.config.service_range_contains(a));
                    let unchanged = old.and_then(|o| meta::str_at(o, "/spec/clusterIP")) == Some(r);
                    if !ok && !unchanged {
                        return Err(ip_invalid(
                            &name,
                            r,
                            &format!(
                                "failed to allocate IP {r}: {}",
                                self.config.ip_out_of_range(r)
                            ),
                        ));
                    }
                    r.to_string()
                }
            };
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
        let wants_ports = ty == "NodePort" || ty == "LoadBalancer";
        let old_ports = old.map(Holdings::of).unwrap_or_default().ports;
        let mut chosen: HashSet<u16> = HashSet::new();
        let range = self.config.node_ports.clone();
        if let Some(Value::Array(ports)) = svc.pointer_mut("/spec/ports") {
            for (i, p) in ports.iter_mut().enumerate() {
                if !wants_ports {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("nodePort");
                    }
                    continue;
                }
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(n) => {
                        let in_range = u16::try_from(n).is_ok_and(|n| range.contains(&n));
                        if !in_range && !u16::try_from(n).is_ok_and(|n| old_ports.contains(&n)) {
                            return Err(port_invalid(
                                &name,
                                i,
                                n,
                                &self.config.port_out_of_range(),
                            ));
                        }
                        if let Ok(n) = u16::try_from(n) {
                            chosen.insert(n);
                        }
                    }
                    None => {
                        let n = self.pick_port(avoid, &chosen)?;
                        chosen.insert(n);
                        p["nodePort"] = json!(n);
                    }
                }
            }
        }
        Ok(())
    }

    fn pick_ip(&self, avoid: &HashSet<String>) -> ApiResult<Ipv4Addr> {
        let count = self.config.service_ip_count();
        // The first host is the kubernetes Service's; kube-apiserver also keeps the low
        // band of the range for static addresses (such as DNS at .10) when it can.
        let reserved = if count > 256 {
            (count / 16).clamp(16, 256)
        } else {
            1
        };
        let pool = count.saturating_sub(reserved);
        let (base, size) = if pool > 0 {
            (reserved, pool)
        } else {
            (1, count.saturating_sub(1))
        };
        if size == 0 {
            return Err(full_range(&format!(
                "the service IP range {} is full",
                self.config.service_cidr
            )));
        }
        let start = random_u32() % size;
        (0..size)
            .filter_map(|i| self.config.service_ip(base + (start + i) % size))
            .find(|ip| !avoid.contains(&ip_key(*ip)))
            .ok_or_else(|| {
                full_range(&format!(
                    "range is full: the service IP range {} has no free address",
                    self.config.service_cidr
                ))
            })
    }

    fn pick_port(&self, avoid: &HashSet<String>, chosen: &HashSet<u16>) -> ApiResult<u16> {
        let first = u32::from(*self.config.node_ports.start());
        let size = u32::from(*self.config.node_ports.end()) - first + 1;
        let start = random_u32() % size;
        (0..size)
            .filter_map(|i| u16::try_from(first + (start + i) % size).ok())
            .find(|p| !chosen.contains(p) && !avoid.contains(&port_key(*p)))
            .ok_or_else(|| {
                full_range(&format!(
                    "range is full: the node port range {}-{} has no free port",
                    self.config.node_ports.start(),
                    self.config.node_ports.end()
                ))
            })
    }

    /// Creates the Service `svc` at `key` with its addresses, filling in those the
    /// server chooses. Returns the revision; `AlreadyExists` when the name is taken.
    pub async fn create(
        &self,
        store: &dyn Store,
        key: &str,
        svc: &mut Value,
        dry_run: bool,
    ) -> ApiResult<Result<Revision, StoreError>> {
        self.write(store, key, None, svc, 0, dry_run).await
    }

    /// Writes the updated Service `new` over `old` (guarded by `expected`), taking the
    /// addresses it newly needs and releasing those it no longer holds.
    pub async fn update(
        &self,
        store: &dyn Store,
        key: &str,
        old: &Value,
        new: &mut Value,
        expected: Revision,
        dry_run: bool,
    ) -> ApiResult<Result<Revision, StoreError>> {
        self.write(store, key, Some(old), new, expected, dry_run)
            .await
    }

    /// One guarded write of `svc` (a create when `old` is None, `expected` 0) with the
    /// addresses it gains and loses against `old`, retried with other addresses while
    /// those the server picked turn out taken.
    async fn write(
        &self,
        store: &dyn Store,
        key: &str,
        old: Option<&Value>,
        svc: &mut Value,
        expected: Revision,
        dry_run: bool,
    ) -> ApiResult<Result<Revision, StoreError>> {
        let template = svc.clone();
        let old_h = old.map(Holdings::of).unwrap_or_default();
        let mut avoid = HashSet::new();
        for attempt in 0..ATTEMPTS {
            let mut o = template.clone();
            self.assign(&mut o, old, &avoid)?;
            if dry_run {
                *svc = o;
                return Ok(Ok(expected));
            }
            let new_h = Holdings::of(&o);
            let gained = Holdings {
                ips: new_h.ips.difference(&old_h.ips).copied().collect(),
                ports: new_h.ports.difference(&old_h.ports).copied().collect(),
            };
            let released = Holdings {
                ips: old_h.ips.difference(&new_h.ips).copied().collect(),
                ports: old_h.ports.difference(&new_h.ports).copied().collect(),
            };
            let mut compares = vec![Compare::ModRevision {
                key: key.to_string(),
                revision: expected,
            }];
            let mut success = vec![Op::Put {
                key: key.to_string(),
                value: o.to_string().into_bytes(),
                lease: 0,
            }];
            add_holdings(&gained, &Owner::of(&o), &mut compares, &mut success);
            success.extend(released.keys().map(|key| Op::Delete { key }));
            match attempt_txn(store, compares, success).await? {
                Attempt::Written(rev) => {
                    *svc = o;
                    return Ok(Ok(rev));
                }
                Attempt::ObjectConflict if old.is_none() => {
                    return Ok(Err(StoreError::AlreadyExists {
                        key: key.to_string(),
                        mod_revision: 0,
                    }))
                }
                Attempt::ObjectConflict => {
                    return Ok(Err(StoreError::Conflict {
                        key: key.to_string(),
                        expected,
                        actual: 0,
                    }))
                }
                Attempt::Taken(keys) => {
                    self.taken(&template, old, &keys)?;
                    avoid.extend(keys);
                    if attempt + 1 == BLIND_PICKS {
                        avoid.extend(taken_keys(store).await?);
                    }
                }
            }
        }
        Err(ApiError::conflict("", "services", meta::name(svc)))
    }

    /// An address the user asked for is taken: Kubernetes' 422. Taken addresses the
    /// server picked itself are retried by the caller.
    fn taken(&self, requested: &Value, old: Option<&Value>, keys: &[String]) -> ApiResult<()> {
        let name = meta::name(requested);
        let old_h = old.map(Holdings::of).unwrap_or_default();
        let ip = meta::str_at(requested, "/spec/clusterIP").unwrap_or("");
        if let Ok(addr) = ip.parse::<Ipv4Addr>() {
            if keys.contains(&ip_key(addr)) && !old_h.ips.contains(&addr) {
                return Err(ip_invalid(
                    name,
                    ip,
                    &format!("failed to allocate IP {ip}: provided IP is already allocated"),
                ));
            }
        }
        for (i, p) in requested
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                if let Ok(n) = u16::try_from(n) {
                    if keys.contains(&port_key(n)) && !old_h.ports.contains(&n) {
                        return Err(port_invalid(
                            name,
                            i,
                            i64::from(n),
                            "provided port is already allocated",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The store ops that remove an object together with the addresses it holds: for a
/// Service, its allocation keys; for any other kind, none.
pub(crate) fn release_ops(kind: &str, obj: &Value) -> Vec<Op> {
    if kind != "Service" {
        return Vec::new();
    }
    Holdings::of(obj)
        .keys()
        .map(|key| Op::Delete { key })
        .collect()
}

/// Deletes `key` (guarded by `expected` when set) together with the addresses the object
/// holds, in one transaction. `NotFound`/`Conflict` as the store's delete.
pub(crate) async fn delete_with_holdings(
    store: &dyn Store,
    kind: &str,
    key: &str,
    expected: Revision,
    obj: &Value,
) -> Result<Revision, StoreError> {
    let mut success = vec![Op::Delete {
        key: key.to_string(),
    }];
    success.extend(release_ops(kind, obj));
    let r = store
        .txn(Txn {
            compares: vec![Compare::ModRevision {
                key: key.to_string(),
                revision: expected,
            }],
            success,
            failure: vec![Op::Get {
                key: key.to_string(),
            }],
        })
        .await?;
    if r.succeeded {
        return Ok(r.revision);
    }
    match r.results.first() {
        Some(OpResult::Get { kv: Some(kv) }) => Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            actual: kv.mod_revision,
        }),
        _ => Err(StoreError::NotFound {
            key: key.to_string(),
        }),
    }
}

fn add_holdings(
    h: &Holdings,
    owner: &Owner<'_>,
    compares: &mut Vec<Compare>,
    success: &mut Vec<Op>,
) {
    let ips = h.ips.iter().map(|ip| (ip_key(*ip), ip_record(*ip, owner)));
    let ports = h.ports.iter().map(|p| (port_key(*p), port_record(owner)));
    for (key, value) in ips.chain(ports) {
        compares.push(Compare::ModRevision {
            key: key.clone(),
            revision: 0,
        });
        success.push(Op::Put {
            key,
            value,
            lease: 0,
        });
    }
}

/// Runs one guarded write; on failure reads which compare failed.
async fn attempt_txn(
    store: &dyn Store,
    compares: Vec<Compare>,
    success: Vec<Op>,
) -> ApiResult<Attempt> {
    let failure: Vec<Op> = compares
        .iter()
        .map(|c| match c {
            Compare::ModRevision { key, .. } | Compare::Value { key, .. } => {
                Op::Get { key: key.clone() }
            }
        })
        .collect();
    let expected: Vec<Revision> = compares
        .iter()
        .map(|c| match c {
            Compare::ModRevision { revision, .. } => *revision,
            Compare::Value { .. } => -1,
        })
        .collect();
    let r = store
        .txn(Txn {
            compares,
            success,
            failure,
        })
        .await?;
    if r.succeeded {
        return Ok(Attempt::Written(r.revision));
    }
    let mut taken = Vec::new();
    for (i, res) in r.results.iter().enumerate() {
        let OpResult::Get { kv } = res else { continue };
        let actual = kv.as_ref().map_or(0, |kv| kv.mod_revision);
        if actual == expected.get(i).copied().unwrap_or(-1) {
            continue;
        }
        if i == 0 {
            return Ok(Attempt::ObjectConflict);
        }
        if let Some(kv) = kv {
            taken.push(kv.key.clone());
        }
    }
    if taken.is_empty() {
        // Every compare held when re-read: another writer came and went; try again.
        return Ok(Attempt::Taken(Vec::new()));
    }
    Ok(Attempt::Taken(taken))
}

/// Every allocation key in the store.
async fn taken_keys(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for prefix in [IP_PREFIX, PORT_PREFIX] {
        let mut opts = ListOptions::default();
        loop {
            let res = store.list(prefix, &opts).await?;
            out.extend(res.kvs.iter().map(|kv| kv.key.clone()));
            match (res.more, res.kvs.last()) {
                (true, Some(last)) => {
                    opts.continue_after = Some(last.key.clone());
                    opts.revision = Some(res.revision);
                }
                _ => break,
            }
        }
    }
    Ok(out)
}

/// Brings the allocation keys in line with the stored Services: Services without their
/// keys (stored before this scheme) get them, keys whose Service is gone are removed.
/// Every write is guarded, so it is safe while other servers allocate.
pub(crate) async fn repair(store: &dyn Store, services_prefix: &str) -> Result<(), StoreError> {
    let services = store.list(services_prefix, &ListOptions::default()).await?;
    let at = Some(services.revision);
    let mut live: HashSet<(String, String)> = HashSet::new();
    for kv in &services.kvs {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let owner = Owner::of(&svc);
        live.insert((owner.namespace.to_string(), owner.name.to_string()));
        let h = Holdings::of(&svc);
        for ip in &h.ips {
            match store.create(&ip_key(*ip), ip_record(*ip, &owner), 0).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for p in &h.ports {
            match store.create(&port_key(*p), port_record(&owner), 0).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for prefix in [IP_PREFIX, PORT_PREFIX] {
        let keys = store
            .list(
                prefix,
                &ListOptions {
                    revision: at,
                    ..Default::default()
                },
            )
            .await?;
        for kv in keys.kvs {
            let Some(owner) = record_owner(&kv.key, &kv.value) else {
                continue;
            };
            if live.contains(&owner) {
                continue;
            }
            tracing::info!(key = %kv.key, service = %format!("{}/{}", owner.0, owner.1), "releasing an address whose Service is gone");
            match store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn ip_invalid(name: &str, ip: &str, why: &str) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        name,
        vec![Cause {
            reason: "FieldValueInvalid",
            field: "spec.clusterIPs".into(),
            message: format!("Invalid value: []string{{{ip:?}}}: {why}"),
        }],
    )
}

fn port_invalid(name: &str, i: usize, port: i64, why: &str) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        name,
        vec![Cause {
            reason: "FieldValueInvalid",
            field: format!("spec.ports[{i}].nodePort"),
            message: format!("Invalid value: {port}: {why}"),
        }],
    )
}

fn full_range(msg: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("Internal error occurred: failed to allocate a serviceIP: {msg}"),
    )
}

fn random_u32() -> u32 {
    let b: [u8; 4] = meta::random_bytes();
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::EmbeddedStore;

    fn svc(name: &str, ty: &str, ip: &str, node_port: Option<i64>) -> Value {
        let mut port = json!({"port": 80, "protocol": "TCP"});
        if let Some(n) = node_port {
            port["nodePort"] = json!(n);
        }
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"type": ty, "clusterIP": ip, "ports": [port]}})
    }

    fn key(name: &str) -> String {
        format!("/registry/core/services/default/{name}")
    }

    fn small() -> Allocator {
        Allocator::new(ClusterConfig {
            service_cidr: "10.96.0.0/29".parse().expect("cidr"),
            node_ports: 30000..=30002,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn every_address_is_given_once_until_released() {
        let store = EmbeddedStore::in_memory().expect("memory store");
        let a = small();
        // /29: 6 hosts, the first reserved for the kubernetes Service.
        let mut ips = HashSet::new();
        let mut ports = HashSet::new();
        for i in 0..3 {
            let mut s = svc(&format!("s{i}"), "NodePort", "", None);
            a.create(&store, &key(&format!("s{i}")), &mut s, false)
                .await
                .expect("allocates")
                .expect("created");
            assert!(ips.insert(s["spec"]["clusterIP"].as_str().expect("ip").to_string()));
            assert!(ports.insert(s["spec"]["ports"][0]["nodePort"].as_i64().expect("port")));
        }
        let mut s = svc("s3", "NodePort", "", None);
        let e = a
            .create(&store, &key("s3"), &mut s, false)
            .await
            .unwrap_err();
        assert!(
            e.message
                .contains("node port range 30000-30002 has no free port"),
            "{}",
            e.message
        );
        // Deleting one frees its port for the next.
        let got = store
            .get(&key("s1"), None)
            .await
            .expect("get")
            .kv
            .expect("s1");
        let old: Value = serde_json::from_slice(&got.value).expect("json");
        delete_with_holdings(&store, "Service", &key("s1"), got.mod_revision, &old)
            .await
            .expect("deleted");
        let mut s = svc("s3", "NodePort", "", None);
        a.create(&store, &key("s3"), &mut s, false)
            .await
            .expect("allocates")
            .expect("created");
        assert_eq!(
            s["spec"]["ports"][0]["nodePort"],
            old["spec"]["ports"][0]["nodePort"]
        );
    }

    #[tokio::test]
    async fn requested_addresses_get_kubernetes_messages() {
        let store = EmbeddedStore::in_memory().expect("memory store");
        let a = small();
        let mut s = svc("a", "NodePort", "10.96.0.3", Some(30001));
        a.create(&store, &key("a"), &mut s, false)
            .await
            .expect("ok")
            .expect("created");
        // The causes of the refusal of Service `name`.
        let refused = |name: &'static str, kind, ip, port| {
            let (a, store) = (&a, &store);
            async move {
                let mut s = svc(name, kind, ip, port);
                let e = a
                    .create(store, &key(name), &mut s, false)
                    .await
                    .unwrap_err();
                e.details.expect("details").to_string()
            }
        };
        let causes = refused("b", "ClusterIP", "10.96.0.3", None).await;
        assert!(causes.contains(r#"Invalid value: []string{\"10.96.0.3\"}: failed to allocate IP 10.96.0.3: provided IP is already allocated"#), "{causes}");
        let causes = refused("c", "NodePort", "", Some(30001)).await;
        assert!(
            causes.contains("spec.ports[0].nodePort")
                && causes.contains("Invalid value: 30001: provided port is already allocated"),
            "{causes}"
        );
        let causes = refused("d", "ClusterIP", "10.1.2.3", None).await;
        assert!(causes.contains("provided IP (10.1.2.3) is not in the valid range. The range of valid IPs is 10.96.0.0/29"), "{causes}");
        let causes = refused("e", "NodePort", "", Some(40000)).await;
        assert!(
            causes.contains(
                "provided port is not in the valid range. The range of valid ports is 30000-30002"
            ),
            "{causes}"
        );
        // Nothing the failed creates asked for was kept.
        assert_eq!(taken_keys(&store).await.expect("keys").len(), 2);
    }

    #[tokio::test]
    async fn concurrent_allocators_never_collide() {
        let store = std::sync::Arc::new(EmbeddedStore::in_memory().expect("memory store"));
        let a = std::sync::Arc::new(Allocator::new(ClusterConfig {
            service_cidr: "10.96.0.0/24".parse().expect("cidr"),
            node_ports: 30000..=30199,
            ..Default::default()
        }));
        let mut tasks = Vec::new();
        for i in 0..150 {
            let (store, a) = (store.clone(), a.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = svc(&format!("s{i}"), "NodePort", "", None);
                a.create(&*store, &key(&format!("s{i}")), &mut s, false)
                    .await
                    .expect("allocates")
                    .expect("created");
                (
                    s["spec"]["clusterIP"].as_str().expect("ip").to_string(),
                    s["spec"]["ports"][0]["nodePort"].as_i64().expect("port"),
                )
            }));
        }
        let mut ips = HashSet::new();
        let mut ports = HashSet::new();
        for t in tasks {
            let (ip, port) = t.await.expect("task");
            assert!(ips.insert(ip.clone()), "duplicate IP {ip}");
            assert!(ports.insert(port), "duplicate port {port}");
        }
    }

    #[tokio::test]
    async fn updates_take_and_release_node_ports() {
        let store = EmbeddedStore::in_memory().expect("memory store");
        let a = small();
        let mut s = svc("a", "ClusterIP", "", None);
        let rev = a
            .create(&store, &key("a"), &mut s, false)
            .await
            .expect("ok")
            .expect("created");
        let mut n = s.clone();
        n["spec"]["type"] = json!("NodePort");
        n["spec"]["clusterIP"] = json!("");
        let rev = a
            .update(&store, &key("a"), &s, &mut n, rev, false)
            .await
            .expect("ok")
            .expect("updated");
        assert_eq!(
            n["spec"]["clusterIP"], s["spec"]["clusterIP"],
            "the ClusterIP is kept"
        );
        assert!(n["spec"]["ports"][0]["nodePort"].is_i64());
        assert_eq!(taken_keys(&store).await.expect("keys").len(), 2);
        let mut back = n.clone();
        back["spec"]["type"] = json!("ClusterIP");
        a.update(&store, &key("a"), &n, &mut back, rev, false)
            .await
            .expect("ok")
            .expect("updated");
        assert!(back["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(taken_keys(&store).await.expect("keys").len(), 1);
    }

    #[tokio::test]
    async fn repair_adds_missing_keys_and_drops_orphans() {
        let store = EmbeddedStore::in_memory().expect("memory store");
        let s = svc("legacy", "NodePort", "10.96.0.4", Some(30002));
        store
            .create(&key("legacy"), s.to_string().into_bytes(), 0)
            .await
            .expect("put");
        let orphan = Owner {
            namespace: "default",
            name: "gone",
            uid: "x",
        };
        store
            .create(&port_key(30000), port_record(&orphan), 0)
            .await
            .expect("put");
        repair(&store, "/registry/core/services/")
            .await
            .expect("repair");
        let mut keys = taken_keys(&store).await.expect("keys");
        keys.sort();
        assert_eq!(
            keys,
            vec![ip_key("10.96.0.4".parse().expect("ip")), port_key(30002)]
        );
    }
}
