//! The node's network as the agent runs it: the pod network readied once this Node has a
//! pod CIDR, and routes to every other node's pod CIDR kept from a watch of the Nodes.
//! The service proxy and the cluster DNS start beside it (from `NetworkConfig`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, PodSpec};
use kube::runtime::watcher;
use kube::Api;
use skiff_net::pod::{HostPort, PodNetwork};
use tokio_util::sync::CancellationToken;

/// What the agent runs of the node's network.
#[derive(Clone)]
pub struct NetworkConfig {
    pub pods: PodNetwork,
    /// The node-local cluster DNS (it answers on the DNS Service's IP, which the pod
    /// network puts on the bridge).
    pub dns: Option<skiff_net::dns::DnsConfig>,
    /// The service proxy.
    pub proxy: Option<skiff_net::proxy::ProxyConfig>,
}

impl std::fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("pods", self.pods.config())
            .field("dns", &self.dns.as_ref().map(|d| &d.listen))
            .finish()
    }
}

/// Runs the node-local DNS once the pod network is ready (its address is on the
/// bridge), starting it again 5 s after a failure.
pub async fn dns(
    client: kube::Client,
    net: PodNetwork,
    cfg: skiff_net::dns::DnsConfig,
    stop: CancellationToken,
) {
    while net.pod_cidr().is_none() {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    loop {
        match skiff_net::dns::run(client.clone(), cfg.clone(), stop.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %skiff_serve::error_chain(&e), "cluster DNS; starting it again in 5 s")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Runs the service proxy; a failed sync (the kernel kept the rules before it) is a log
/// line and a Warning Event on this Node. The proxy is started again 5 s after it fails.
pub async fn proxy(
    client: kube::Client,
    cfg: skiff_net::proxy::ProxyConfig,
    events: skiff_controllers::Recorder,
    synced: Option<tokio::sync::watch::Sender<skiff_net::proxy::SyncReport>>,
    stop: CancellationToken,
) {
    let node = Node {
        metadata: kube::api::ObjectMeta {
            name: Some(cfg.node_name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let hooks = skiff_net::proxy::Hooks {
            errors: Some(tx),
            synced: synced.clone(),
        };
        let run = skiff_net::proxy::run_with(client.clone(), cfg.clone(), stop.clone(), hooks);
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(e) = rx.recv() => {
                    let msg = skiff_serve::error_chain(&e);
                    tracing::warn!(error = %msg, "syncing the service proxy's rules; the previous rules stay in force");
                    events.warning(&node, "SyncProxyRulesFailed", format!("Failed to sync the service proxy's nftables rules (the previous rules stay in force): {msg}"));
                }
            }
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %skiff_serve::error_chain(&e), "service proxy; starting it again in 5 s")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// The hostPorts of a pod's containers.
pub fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    let mut out = Vec::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            let Some(hp) = p.host_port.and_then(|h| u16::try_from(h).ok()) else {
                continue;
            };
            let Ok(cp) = u16::try_from(p.container_port) else {
                continue;
            };
            out.push(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip: p.host_ip.as_deref().and_then(|h| h.parse().ok()),
                host_port: hp,
                container_port: cp,
            });
        }
    }
    out
}

fn internal_ipv4(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse::<IpAddr>().ok())
        .and_then(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec
        .as_ref()?
        .pod_cidr
        .as_deref()
        .and_then(|c| c.parse().ok())
}

/// Watches the Nodes: readies the pod network when this node (`node_name`) has a pod
/// CIDR, and keeps one route per other node. Failures are logged and tried again.
pub async fn run(
    client: kube::Client,
    node_name: String,
    net: PodNetwork,
    stop: CancellationToken,
) {
    let api: Api<Node> = Api::all(client);
    let mut stream = kube::runtime::WatchStreamExt::default_backoff(watcher::watcher(
        api,
        watcher::Config::default(),
    ))
    .boxed();
    let mut nodes: BTreeMap<String, Arc<Node>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Arc<Node>>> = None;
    let mut retry = tokio::time::interval(Duration::from_secs(10));
    loop {
        let mut tick = false;
        tokio::select! {
            () = stop.cancelled() => return,
            _ = retry.tick() => tick = true,
            ev = stream.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
                    Ok(watcher::Event::InitApply(n)) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(n.metadata.name.clone().unwrap_or_default(), Arc::new(n));
                        }
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        nodes = listing.take().unwrap_or_default();
                    }
                    Ok(watcher::Event::Apply(n)) => {
                        nodes.insert(n.metadata.name.clone().unwrap_or_default(), Arc::new(n));
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching Nodes for the pod network");
                        continue;
                    }
                }
            }
        }
        if nodes.is_empty() {
            continue;
        }
        if let Some(cidr) = nodes.get(&node_name).and_then(|n| pod_cidr(n)) {
            // Again every 10 s: what was removed behind the agent's back comes back.
            let first = net.pod_cidr() != Some(cidr.trunc());
            // A Node's status change alone needs only the routes to follow.
            if first || tick {
                match net.init(cidr).await {
                    Ok(()) if first => tracing::info!(pod_cidr = %cidr, "pod network ready"),
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %skiff_serve::error_chain(&e), "readying the pod network")
                    }
                }
            }
        }
        if net.pod_cidr().is_none() {
            continue;
        }
        let peers: Vec<(Ipv4Net, Ipv4Addr)> = nodes
            .iter()
            .filter(|(name, _)| **name != node_name)
            .filter_map(|(_, n)| Some((pod_cidr(n)?, internal_ipv4(n)?)))
            .collect();
        if let Err(e) = net.sync_routes(&peers).await {
            tracing::warn!(error = %skiff_serve::error_chain(&e), "routes to other nodes' pods");
        }
    }
}
