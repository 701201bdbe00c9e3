//! kube-controller-manager's `nodeipam` (the range allocator): every node gets its own
//! `/node_cidr_mask_size` slice of `cluster_cidr` in `spec.podCIDR` and `spec.podCIDRs`.
//!
//! The allocations live in memory: they are rebuilt from the nodes' `spec.podCIDR` once
//! the Node cache is synced, before any node is reconciled, so a restarted controller
//! never hands out a slice that is taken. A node keeps its slice for life; deleting the
//! node frees it. When the range is full the node gets the Event CIDRNotAvailable and is
//! tried again later.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::task::JoinHandle;

use crate::informer::{key_of, Informer};
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_not_found, ApiError};
use crate::{Context, Queue, Recorder};

/// How long a node waits for a slice to be freed when the range is full.
const FULL_RETRY: Duration = Duration::from_secs(10);

/// The slices of one cluster CIDR, numbered from 0, and which node holds which.
pub(crate) struct CidrSet {
    cluster: IpNet,
    mask: u8,
    count: u128,
    used: BTreeMap<u128, String>,
    by_node: HashMap<String, u128>,
    /// Where the search for a free slice starts (after the last one handed out).
    next: u128,
}

impl CidrSet {
    /// None when `mask` is not a prefix inside `cluster`.
    pub(crate) fn new(cluster: IpNet, mask: u8) -> Option<CidrSet> {
        if mask < cluster.prefix_len() || mask > cluster.max_prefix_len() {
            return None;
        }
        let bits = u32::from(mask - cluster.prefix_len());
        let count = if bits >= 127 {
            1u128 << 127
        } else {
            1u128 << bits
        };
        Some(CidrSet {
            cluster: cluster.trunc(),
            mask,
            count,
            used: BTreeMap::new(),
            by_node: HashMap::new(),
            next: 0,
        })
    }

    fn slice(&self, i: u128) -> Option<IpNet> {
        let host_bits = u32::from(self.cluster.max_prefix_len() - self.mask);
        let offset = i.checked_shl(host_bits)?;
        match self.cluster.network() {
            IpAddr::V4(a) => {
                let base = u128::from(u32::from(a));
                let ip = u32::try_from(base.checked_add(offset)?).ok()?;
                IpNet::new(IpAddr::V4(ip.into()), self.mask).ok()
            }
            IpAddr::V6(a) => {
                let ip = u128::from(a).checked_add(offset)?;
                IpNet::new(IpAddr::V6(ip.into()), self.mask).ok()
            }
        }
    }

    fn index_of(&self, net: &IpNet) -> Option<u128> {
        if net.prefix_len() != self.mask || !self.cluster.contains(net) {
            return None;
        }
        let host_bits = u32::from(self.cluster.max_prefix_len() - self.mask);
        let delta = match (net.network(), self.cluster.network()) {
            (IpAddr::V4(n), IpAddr::V4(c)) => u128::from(u32::from(n) - u32::from(c)),
            (IpAddr::V6(n), IpAddr::V6(c)) => u128::from(n) - u128::from(c),
            _ => return None,
        };
        Some(delta >> host_bits)
    }

    /// Records that `node` holds `cidr` (a node's existing podCIDR). False when the
    /// slice is outside the range or another node holds it.
    pub(crate) fn occupy(&mut self, node: &str, cidr: &str) -> bool {
        let Some(i) = cidr.parse::<IpNet>().ok().and_then(|n| self.index_of(&n)) else {
            return false;
        };
        match self.used.get(&i) {
            Some(holder) if holder != node => false,
            _ => {
                self.used.insert(i, node.to_string());
                if let Some(old) = self.by_node.insert(node.to_string(), i) {
                    if old != i {
                        self.used.remove(&old);
                    }
                }
                true
            }
        }
    }

    /// The slice of `node`: the one it holds, or the next free one (None when full).
    pub(crate) fn allocate(&mut self, node: &str) -> Option<IpNet> {
        if let Some(&i) = self.by_node.get(node) {
            return self.slice(i);
        }
        if self.used.len() as u128 >= self.count {
            return None;
        }
        let mut i = self.next % self.count;
        while self.used.contains_key(&i) {
            i = (i + 1) % self.count;
        }
        self.used.insert(i, node.to_string());
        self.by_node.insert(node.to_string(), i);
        self.next = i + 1;
        self.slice(i)
    }

    /// Frees the slice of `node`, if it holds one.
    pub(crate) fn release(&mut self, node: &str) {
        if let Some(i) = self.by_node.remove(node) {
            self.used.remove(&i);
            // Hand out freed slices first, as kube's bitmap allocator does.
            self.next = self.next.min(i);
        }
    }
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let cluster = ctx.config.cluster_cidr?;
    let Some(set) = CidrSet::new(cluster, ctx.config.node_cidr_mask_size) else {
        tracing::error!(
            %cluster,
            mask = ctx.config.node_cidr_mask_size,
            "--node-cidr-mask-size must lie between the --cluster-cidr prefix and the address length; not allocating pod CIDRs"
        );
        return None;
    };
    let nodes = ctx.informers.informer::<Node>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        nodes.on_change(move |ch| q.add(key_of(&**ch.object())));
    }
    let set = Arc::new(Mutex::new(set));
    let ready = {
        let (nodes, set) = (nodes.clone(), set.clone());
        async move {
            nodes.synced().await;
            let mut s = set
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            nodes.for_each(None, |n| {
                if let (Some(name), Some(cidr)) = (n.metadata.name.as_deref(), pod_cidr(n)) {
                    if !s.occupy(name, cidr) {
                        tracing::warn!(
                            node = name,
                            cidr,
                            "node's podCIDR is outside --cluster-cidr or taken by another node"
                        );
                    }
                }
            });
        }
    };
    let r = Allocator {
        api: Api::all(ctx.client.clone()),
        nodes,
        set,
        recorder: ctx.events.recorder("cidrAllocator"),
        queue: queue.clone(),
        waiting: Mutex::new(HashSet::new()),
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        1,
        ready,
        ctx.stop.clone(),
    ))
}

fn pod_cidr(n: &Node) -> Option<&str> {
    n.spec
        .as_ref()?
        .pod_cidr
        .as_deref()
        .filter(|c| !c.is_empty())
}

struct Allocator {
    api: Api<Node>,
    nodes: Informer<Node>,
    set: Arc<Mutex<CidrSet>>,
    recorder: Recorder,
    queue: Queue,
    /// Nodes that found the range full, looked at again when a slice is freed.
    waiting: Mutex<HashSet<String>>,
}

impl Allocator {
    fn set(&self) -> std::sync::MutexGuard<'_, CidrSet> {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Reconciler for Allocator {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "nodeipam"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        let Some(node) = self.nodes.get("", key) else {
            self.set().release(key);
            let waiting: Vec<String> = self.waiting().drain().collect();
            for k in waiting {
                self.queue.add(k);
            }
            return Ok(Action::Done);
        };
        if let Some(cidr) = pod_cidr(&node) {
            self.set().occupy(key, cidr);
            return Ok(Action::Done);
        }
        let allocated = self.set().allocate(key);
        let Some(cidr) = allocated else {
            self.waiting().insert(key.to_string());
            self.recorder.normal(
                &*node,
                "CIDRNotAvailable",
                format!("Node {key} status is now: CIDRNotAvailable"),
            );
            return Ok(Action::RequeueAfter(FULL_RETRY));
        };
        let cidr = cidr.to_string();
        let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match self
            .api
            .patch(key, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Action::Done),
            // Gone meanwhile: its delete requeues the key, which frees the slice.
            Err(e) if is_not_found(&e) => Ok(Action::Done),
            Err(e) => Err(ApiError::new("set podCIDR of node", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_distinct_reused_and_run_out() {
        let mut s = CidrSet::new("10.42.0.0/22".parse().unwrap(), 24).unwrap();
        assert!(s.occupy("b", "10.42.1.0/24"));
        assert!(!s.occupy("c", "10.42.1.0/24"), "taken by b");
        assert!(!s.occupy("c", "10.43.0.0/24"), "outside");
        assert_eq!(s.allocate("a").unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(
            s.allocate("a").unwrap().to_string(),
            "10.42.0.0/24",
            "stable"
        );
        assert_eq!(s.allocate("c").unwrap().to_string(), "10.42.2.0/24");
        assert_eq!(s.allocate("d").unwrap().to_string(), "10.42.3.0/24");
        assert_eq!(s.allocate("e"), None, "full");
        s.release("c");
        assert_eq!(s.allocate("e").unwrap().to_string(), "10.42.2.0/24");
        assert!(CidrSet::new("10.42.0.0/16".parse().unwrap(), 8).is_none());
        let mut v6 = CidrSet::new("fd00::/48".parse().unwrap(), 64).unwrap();
        v6.allocate("x");
        assert_eq!(v6.allocate("y").unwrap().to_string(), "fd00:0:0:1::/64");
    }
}
