//! Hollow nodes: Node objects with no machine behind them, as Kubernetes' kubemark runs
//! them, for tests and benchmarks of the control plane at scale.
//!
//! Contract: [`HollowNodes::start`] registers `count` nodes named `<prefix><i>` the way a
//! kubelet does (labels, capacity, nodeInfo, addresses, the four node conditions with
//! Ready=True) and a Lease in `kube-node-lease` per node, then keeps them alive: each
//! node renews its Lease every `renew_interval` and re-posts its Ready condition's
//! heartbeat every `status_interval`. Every pod bound to one of the nodes is reported
//! Running and Ready (pod IP from the node's `spec.podCIDR` once the nodeipam controller
//! has assigned one, container statuses running) without starting anything, and a pod
//! being deleted gracefully is finished at once (delete with grace 0 and the pod's uid
//! as precondition), as a kubelet does once its containers have stopped. Probes are not
//! run: a hollow pod is Ready as soon as it is reported.
//!
//! One process's nodes share one watch of bound pods (`spec.nodeName!=`, filtered here
//! by node name) and one watch of Nodes (for the pod CIDRs); status writes run
//! concurrently (at most [`MAX_WRITES`] in flight), so ten thousand pods turn Running
//! within seconds. Every write is level-based: a pod is written only while its status
//! is not yet the hollow kubelet's, and an event older than our own last write of the
//! pod is ignored.
//!
//! Lifecycle: [`HollowNodes::fail`] stops one node's heartbeats and pod handling (a node
//! failure, as seen by the node lifecycle controller); [`HollowNodes::recover`] brings
//! it back (Ready again, its pods looked at afresh). [`HollowNodes::stop`] (or dropping
//! the value) ends every node the same way: the Node objects stay, silent.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::util::{is_conflict, is_not_found};

/// Status writes and deletions of pods in flight at once, for all nodes of a process.
pub const MAX_WRITES: usize = 64;

/// Node registrations in flight at once.
const MAX_REGISTRATIONS: usize = 32;

/// The kubelet version hollow nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";

/// What the hollow nodes look like and how often they report.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// Node names are `<prefix><i>`, i = 0..count.
    pub prefix: String,
    pub count: usize,
    /// Capacity (and allocatable) of each node.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    /// The Lease's `leaseDurationSeconds` (kubelet: 40 s).
    pub lease_duration: Duration,
    /// How often each node renews its Lease (kubelet: a quarter of the duration).
    pub renew_interval: Duration,
    /// How often each node re-posts its Ready condition's heartbeat (kubelet: 5 min
    /// without changes; shorter here so an old-style reader sees a live node).
    pub status_interval: Duration,
    /// How long after registration a pod waits for its node's podCIDR before it gets an
    /// address from the node's fallback range (no nodeipam controller running).
    pub pod_cidr_wait: Duration,
}

impl Default for HollowConfig {
    fn default() -> Self {
        HollowConfig {
            prefix: "hollow-node-".into(),
            count: 1,
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
            lease_duration: Duration::from_secs(40),
            renew_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            pod_cidr_wait: Duration::from_secs(3),
        }
    }
}

/// Why hollow nodes could not start.
#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error("hollow node {node}: {action}")]
    Register {
        node: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "hollow nodes: {count} nodes do not fit the fake address ranges (at most {max}); \
         run several processes with different --prefix values"
    )]
    TooMany { count: usize, max: usize },
}

/// At most this many nodes per process: host IPs are 10.255.<(i+1)/256>.<(i+1)%256>,
/// fallback pod ranges 10.<128 + i/256>.<i%256>.0/24 (below 10.255).
const MAX_NODES: usize = 127 * 256;

/// Running hollow nodes; see the module docs.
pub struct HollowNodes {
    shared: Arc<Shared>,
    names: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    client: Client,
    config: HollowConfig,
    nodes: HashMap<String, Arc<NodeState>>,
    pods: Mutex<PodTable>,
    writes: Semaphore,
    stop: CancellationToken,
}

/// One hollow node's live state.
struct NodeState {
    name: String,
    host_ip: Ipv4Addr,
    /// The fake pod range used when nodeipam assigns none in time.
    fallback: Ipv4Net,
    registered: Instant,
    failed: AtomicBool,
    /// The next heartbeat posts the node's status whatever its interval (recovery, or
    /// someone else marked the node not Ready).
    post_status: AtomicBool,
    /// Wakes the heartbeat early.
    wake: Notify,
    cidr: tokio::sync::watch::Sender<Option<Ipv4Net>>,
    ips: Mutex<IpPool>,
    /// When Ready last turned True (registration or recovery).
    ready_since: Mutex<Timestamp>,
}

/// The pods of this process's nodes, by uid.
#[derive(Default)]
struct PodTable {
    by_uid: HashMap<String, PodEntry>,
    /// Incremented by each full list of the watch, to drop what vanished meanwhile.
    epoch: u64,
}

struct PodEntry {
    node: String,
    ip: Option<Ipv4Addr>,
    /// The resourceVersion of our last write; older events are stale.
    written: u64,
    /// A write of this pod is in flight (later events wait for its result).
    busy: bool,
    seen: u64,
}

impl HollowNodes {
    /// Registers the nodes and starts their heartbeats and pod handling.
    pub async fn start(client: Client, config: HollowConfig) -> Result<HollowNodes, HollowError> {
        if config.count > MAX_NODES {
            return Err(HollowError::TooMany {
                count: config.count,
                max: MAX_NODES,
            });
        }
        let names: Vec<String> = (0..config.count)
            .map(|i| format!("{}{i}", config.prefix))
            .collect();
        let now = Instant::now();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                // Host addresses start at 10.255.0.1 (never a network's .0).
                let h = i + 1;
                let state = NodeState {
                    name: name.clone(),
                    host_ip: Ipv4Addr::new(10, 255, (h / 256) as u8, (h % 256) as u8),
                    fallback: Ipv4Net::new(
                        Ipv4Addr::new(10, 128 + (i / 256) as u8, (i % 256) as u8, 0),
                        24,
                    )
                    .unwrap_or_default(),
                    registered: now,
                    failed: AtomicBool::new(false),
                    post_status: AtomicBool::new(false),
                    wake: Notify::new(),
                    cidr: tokio::sync::watch::channel(None).0,
                    ips: Mutex::new(IpPool::default()),
                    ready_since: Mutex::new(Timestamp::now()),
                };
                (name.clone(), Arc::new(state))
            })
            .collect();
        let shared = Arc::new(Shared {
            client,
            config,
            nodes,
            pods: Mutex::new(PodTable::default()),
            writes: Semaphore::new(MAX_WRITES),
            stop: CancellationToken::new(),
        });
        futures_util::stream::iter(names.iter().map(|n| register(&shared, n)))
            .buffer_unordered(MAX_REGISTRATIONS)
            .try_collect::<Vec<()>>()
            .await?;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(watch_nodes(shared.clone())));
        tasks.push(tokio::spawn(watch_pods(shared.clone())));
        let count = names.len().max(1) as u32;
        for (i, name) in names.iter().enumerate() {
            if let Some(node) = shared.nodes.get(name) {
                // Spread the renewals over the interval, as independent kubelets would be.
                let offset = shared.config.renew_interval * (i as u32 % count) / count;
                tasks.push(tokio::spawn(heartbeat(
                    shared.clone(),
                    node.clone(),
                    offset,
                )));
            }
        }
        tracing::info!(count = names.len(), prefix = %shared.config.prefix, "hollow nodes registered");
        Ok(HollowNodes {
            shared,
            names,
            tasks,
        })
    }

    /// The nodes' names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Stops one node's heartbeats and pod handling, as if its machine died. False if
    /// the node is not one of these.
    pub fn fail(&self, name: &str) -> bool {
        match self.shared.nodes.get(name) {
            Some(n) => {
                n.failed.store(true, Ordering::SeqCst);
                tracing::info!(node = name, "hollow node failed");
                true
            }
            None => false,
        }
    }

    /// Brings a failed node back: it reports Ready at once and handles the pods bound to
    /// it meanwhile. False if the node is not one of these.
    pub fn recover(&self, name: &str) -> bool {
        let Some(n) = self.shared.nodes.get(name) else {
            return false;
        };
        if n.failed.swap(false, Ordering::SeqCst) {
            n.post_status.store(true, Ordering::SeqCst);
            n.wake.notify_one();
            let shared = self.shared.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                let pods: Api<Pod> = Api::all(shared.client.clone());
                let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
                match pods.list(&lp).await {
                    Ok(list) => {
                        for p in list.items {
                            handle_pod(&shared, p);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "list the pods of a recovered hollow node")
                    }
                }
            });
        }
        true
    }

    /// Whether `name` is one of these nodes and currently failed.
    pub fn is_failed(&self, name: &str) -> bool {
        self.shared
            .nodes
            .get(name)
            .is_some_and(|n| n.failed.load(Ordering::SeqCst))
    }

    /// Ends every node's heartbeats and pod handling and waits for the tasks to finish.
    pub async fn stop(mut self) {
        self.shared.stop.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The four node conditions a healthy kubelet reports, with `now` as heartbeat.
fn conditions(now: Timestamp, ready_since: Timestamp, registered: Timestamp) -> Value {
    let c = |type_: &str, status: &str, reason: &str, message: &str, since: Timestamp| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": Time(now), "lastTransitionTime": Time(since)})
    };
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            registered
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            registered
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            registered
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            ready_since
        ),
    ])
}

/// The whole status a freshly registered node posts.
fn node_status(config: &HollowConfig, node: &NodeState, now: Timestamp) -> Value {
    let resources = json!({
        "cpu": config.cpu, "memory": config.memory, "pods": config.pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(now, now, now),
        "addresses": [
            {"type": "InternalIP", "address": node.host_ip.to_string()},
            {"type": "Hostname", "address": node.name},
        ],
        // Port 0: a hollow node serves no kubelet API, so nothing connects to its
        // made-up address (the metrics scraper skips it).
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "hollow", "osImage": "skiff hollow node",
            "containerRuntimeVersion": concat!("skiff://", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": arch(),
        },
    }})
}

/// Registers one node (or takes over an existing one of that name) and its Lease.
async fn register(shared: &Shared, name: &str) -> Result<(), HollowError> {
    let err = |action| {
        let node = name.to_string();
        move |source| HollowError::Register {
            node,
            action,
            source,
        }
    };
    let Some(state) = shared.nodes.get(name) else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch(),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
    }))
    .map_err(|e| err("build the Node")(kube::Error::SerdeError(e)))?;
    let created = match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        // A node of that name exists (an earlier run): a kubelet takes it over.
        Err(e) if is_conflict(&e) => nodes
            .get(name)
            .await
            .map_err(err("read the existing Node"))?,
        Err(e) => return Err(err("create the Node")(e)),
    };
    if let Some(cidr) = pod_cidr(&created) {
        state.cidr.send_replace(Some(cidr));
    }
    let now = Timestamp::now();
    *lock(&state.ready_since) = now;
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(node_status(&shared.config, state, now)),
        )
        .await
        .map_err(err("post the Node status"))?;
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                  "uid": created.metadata.uid.clone().unwrap_or_default()}],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": shared.config.lease_duration.as_secs(),
            "renewTime": MicroTime(now),
        },
    }))
    .map_err(|e| err("build the Lease")(kube::Error::SerdeError(e)))?;
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => renew_lease(shared, name)
            .await
            .map_err(err("renew the existing Lease")),
        Err(e) => Err(err("create the Lease")(e)),
    }
}

/// Whether the node's Ready condition is True.
fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let cidrs = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
    cidrs.filter_map(|c| c.parse::<Ipv4Net>().ok()).next()
}

async fn renew_lease(shared: &Shared, name: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    let patch = json!({"spec": {
        "holderIdentity": name,
        "leaseDurationSeconds": shared.config.lease_duration.as_secs(),
        "renewTime": MicroTime(Timestamp::now()),
    }});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            // Someone deleted it (or the garbage collector did): the kubelet recreates it.
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": patch["spec"],
            }))
            .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// One node's heartbeats: the Lease every renew interval, the Ready condition every
/// status interval (and at once after a recovery).
async fn heartbeat(shared: Arc<Shared>, node: Arc<NodeState>, offset: Duration) {
    let config = &shared.config;
    let mut last_status = Instant::now();
    let mut next = tokio::time::Instant::now() + offset;
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => next += config.renew_interval,
            () = node.wake.notified() => {}
        }
        if node.failed.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = renew_lease(&shared, &node.name).await {
            tracing::warn!(node = %node.name, error = %e, "renew the hollow node's Lease");
        }
        let forced = node.post_status.swap(false, Ordering::SeqCst);
        if forced || last_status.elapsed() >= config.status_interval {
            let now = Timestamp::now();
            let since = {
                let mut since = lock(&node.ready_since);
                if forced {
                    // Ready turns True again now (it was Unknown or False meanwhile).
                    *since = now;
                }
                *since
            };
            let patch = json!({"status": {"conditions": conditions(now, since, since)}});
            let nodes: Api<Node> = Api::all(shared.client.clone());
            match nodes
                .patch_status(
                    &node.name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
            {
                Ok(_) => last_status = Instant::now(),
                Err(e) => {
                    node.post_status.store(forced, Ordering::SeqCst);
                    tracing::warn!(node = %node.name, error = %e, "post the hollow node's status")
                }
            }
        }
    }
}

/// Follows the Nodes for their pod CIDRs.
async fn watch_nodes(shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(shared.client.clone());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let ev = tokio::select! {
            () = shared.stop.cancelled() => return,
            ev = stream.next() => match ev { Some(ev) => ev, None => return },
        };
        match ev {
            Ok(Event::Apply(n) | Event::InitApply(n)) => {
                let Some(state) = shared.nodes.get(&n.name_any()) else {
                    continue;
                };
                if let Some(cidr) = pod_cidr(&n) {
                    if *state.cidr.borrow() != Some(cidr) {
                        state.cidr.send_replace(Some(cidr));
                    }
                }
                // A live kubelet reports Ready again when someone else (the node
                // lifecycle controller) marked it otherwise.
                if !node_ready(&n)
                    && !state.failed.load(Ordering::SeqCst)
                    && !state.post_status.swap(true, Ordering::SeqCst)
                {
                    state.wake.notify_one();
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "hollow nodes: node watch failed; retrying"),
        }
    }
}

/// Follows every bound pod and hands those of our nodes to [`handle_pod`].
async fn watch_pods(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let mut stream = watcher(api, watcher::Config::default().fields("spec.nodeName!="))
        .default_backoff()
        .boxed();
    loop {
        let ev = tokio::select! {
            () = shared.stop.cancelled() => return,
            ev = stream.next() => match ev { Some(ev) => ev, None => return },
        };
        match ev {
            Ok(Event::Init) => lock(&shared.pods).epoch += 1,
            Ok(Event::Apply(p) | Event::InitApply(p)) => handle_pod(&shared, p),
            Ok(Event::InitDone) => forget_vanished(&shared),
            Ok(Event::Delete(p)) => forget_pod(&shared, &p),
            Err(e) => tracing::debug!(error = %e, "hollow nodes: pod watch failed; retrying"),
        }
    }
}

fn rv(p: &Pod) -> u64 {
    p.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether the pod's status already is what a hollow kubelet reports.
fn reported(p: &Pod) -> bool {
    let Some(s) = &p.status else { return false };
    let containers = p.spec.as_ref().map_or(0, |s| s.containers.len());
    s.phase.as_deref() == Some("Running")
        && s.host_ip.is_some()
        && s.pod_ip.is_some()
        && s.container_statuses.as_ref().map_or(0, Vec::len) == containers
        && crate::util::is_ready(p)
}

/// What to do for one observed version of a pod; the work runs in its own task.
fn handle_pod(shared: &Arc<Shared>, pod: Pod) {
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return;
    };
    let Some(node) = shared.nodes.get(node_name) else {
        return;
    };
    if node.failed.load(Ordering::SeqCst) || shared.stop.is_cancelled() {
        return;
    }
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    {
        let mut table = lock(&shared.pods);
        let epoch = table.epoch;
        let entry = table.by_uid.entry(uid).or_insert_with(|| PodEntry {
            node: node_name.to_string(),
            ip: None,
            written: 0,
            busy: false,
            seen: epoch,
        });
        entry.seen = epoch;
        if entry.busy || rv(&pod) < entry.written {
            return;
        }
        if !deleting && (terminal || reported(&pod)) {
            return;
        }
        entry.busy = true;
    }
    let shared = shared.clone();
    let node = node.clone();
    tokio::spawn(async move {
        let next = if deleting {
            finish_deletion(&shared, &pod).await;
            None
        } else {
            report_running(&shared, &node, &pod).await
        };
        if let Some(uid) = &pod.metadata.uid {
            if let Some(e) = lock(&shared.pods).by_uid.get_mut(uid) {
                e.busy = false;
            }
        }
        // What the write returned may already need more (deleted meanwhile).
        if let Some(p) = next {
            handle_pod(&shared, p);
        }
    });
}

/// Deletes a terminating pod with grace 0, as the kubelet does once its containers have
/// stopped (the uid precondition keeps a new pod of the same name safe).
async fn finish_deletion(shared: &Shared, pod: &Pod) {
    let Ok(_permit) = shared.writes.acquire().await else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    for attempt in 0..5u32 {
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => return,
            Err(e) if is_not_found(&e) || is_conflict(&e) => return,
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), error = %e, "hollow kubelet: finish a deletion");
                if shared.stop.is_cancelled() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
}

/// The pod's address: kept across writes, from the node's podCIDR (waiting for it a
/// little after the node registered), else from the node's fallback range.
async fn pod_ip(shared: &Shared, node: &NodeState, pod: &Pod) -> Ipv4Addr {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(ip) = lock(&shared.pods).by_uid.get(&uid).and_then(|e| e.ip) {
        return ip;
    }
    let mut cidr = *node.cidr.borrow();
    if cidr.is_none() {
        let deadline = node.registered + shared.config.pod_cidr_wait;
        let mut rx = node.cidr.subscribe();
        let waited = tokio::time::timeout_at(deadline.into(), rx.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|c| *c);
        cidr = waited;
    }
    let net = cidr.unwrap_or(node.fallback);
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .filter(|ip| net.contains(ip));
    let ip = {
        let mut pool = lock(&node.ips);
        match existing {
            Some(ip) => {
                pool.take(net, ip);
                ip
            }
            None => pool.allocate(net),
        }
    };
    if let Some(e) = lock(&shared.pods).by_uid.get_mut(&uid) {
        e.ip = Some(ip);
    }
    ip
}

/// Writes the Running/Ready status; returns the pod as written (None when it is gone).
async fn report_running(shared: &Shared, node: &NodeState, pod: &Pod) -> Option<Pod> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let ip = if host_network {
        node.host_ip
    } else {
        pod_ip(shared, node, pod).await
    };
    let _permit = shared.writes.acquire().await.ok()?;
    let patch = running_status(pod, node.host_ip, ip, Timestamp::now());
    let api: Api<Pod> = Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    for attempt in 0..5u32 {
        if node.failed.load(Ordering::SeqCst) || shared.stop.is_cancelled() {
            return None;
        }
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(p) if p.metadata.uid == pod.metadata.uid => {
                if let Some(u) = &p.metadata.uid {
                    if let Some(e) = lock(&shared.pods).by_uid.get_mut(u) {
                        e.written = rv(&p);
                    }
                }
                return Some(p);
            }
            // A new pod of the same name: not the one we were asked about.
            Ok(_) => return None,
            Err(e) if is_not_found(&e) => return None,
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), error = %e, "hollow kubelet: report a pod Running");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    None
}

/// The status a kubelet reports for a pod whose containers all started and are ready.
fn running_status(pod: &Pod, host_ip: Ipv4Addr, ip: Ipv4Addr, now: Timestamp) -> Value {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    let start = status
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(now));
    let scheduled =
        crate::util::pod_condition(pod, "PodScheduled").is_some_and(|c| c.status == "True");
    let mut conditions: Vec<Value> = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": Time(now)}))
        .collect();
    if !scheduled {
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": Time(now)}));
    }
    let spec = pod.spec.as_ref();
    let container = |c: &k8s_openapi::api::core::v1::Container, running: bool| {
        let state = if running {
            json!({"running": {"startedAt": Time(now)}})
        } else {
            json!({"terminated": {"exitCode": 0, "reason": "Completed",
                                  "startedAt": Time(now), "finishedAt": Time(now),
                                  "containerID": format!("hollow://{uid}/{}", c.name)}})
        };
        json!({
            "name": c.name,
            "image": c.image.clone().unwrap_or_default(),
            "imageID": format!("hollow://{}", c.image.as_deref().unwrap_or_default()),
            "containerID": format!("hollow://{uid}/{}", c.name),
            "ready": true,
            "started": running,
            "restartCount": 0,
            "state": state,
        })
    };
    let containers: Vec<Value> = spec
        .map(|s| s.containers.iter().map(|c| container(c, true)).collect())
        .unwrap_or_default();
    let init: Vec<Value> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| container(c, c.restart_policy.as_deref() == Some("Always")))
                .collect()
        })
        .unwrap_or_default();
    let mut s = json!({
        "phase": "Running",
        "hostIP": host_ip.to_string(),
        "hostIPs": [{"ip": host_ip.to_string()}],
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": start,
        "conditions": conditions,
        "containerStatuses": containers,
    });
    if !init.is_empty() {
        s["initContainerStatuses"] = Value::Array(init);
    }
    json!({"status": s})
}

fn forget_pod(shared: &Shared, pod: &Pod) {
    let Some(uid) = &pod.metadata.uid else { return };
    let gone = lock(&shared.pods).by_uid.remove(uid);
    if let Some(e) = gone {
        release_ip(shared, &e);
    }
}

/// After a re-list: pods we knew that the list no longer has were deleted meanwhile.
fn forget_vanished(shared: &Shared) {
    let gone: Vec<PodEntry> = {
        let mut t = lock(&shared.pods);
        let epoch = t.epoch;
        let uids: Vec<String> = t
            .by_uid
            .iter()
            .filter(|(_, e)| e.seen != epoch && !e.busy)
            .map(|(u, _)| u.clone())
            .collect();
        uids.iter().filter_map(|u| t.by_uid.remove(u)).collect()
    };
    for e in &gone {
        release_ip(shared, e);
    }
}

fn release_ip(shared: &Shared, e: &PodEntry) {
    if let (Some(ip), Some(node)) = (e.ip, shared.nodes.get(&e.node)) {
        lock(&node.ips).release(ip);
    }
}

/// The addresses in use on one node, handed out round-robin so a freed address is not
/// reused at once.
#[derive(Default)]
struct IpPool {
    used: BTreeSet<u32>,
    next: u32,
}

impl IpPool {
    /// An unused host address of `net` (.0 and .1, network and gateway, are skipped;
    /// when every address is taken, addresses are shared rather than refused).
    fn allocate(&mut self, net: Ipv4Net) -> Ipv4Addr {
        let base = u32::from(net.network());
        let size = 1u32 << (32 - u32::from(net.prefix_len())).min(31);
        let hosts = size.saturating_sub(3).max(1);
        for _ in 0..hosts {
            let offset = 2 + self.next % hosts;
            self.next = self.next.wrapping_add(1);
            if self.used.insert(base + offset) {
                return Ipv4Addr::from(base + offset);
            }
        }
        let offset = 2 + self.next % hosts;
        self.next = self.next.wrapping_add(1);
        Ipv4Addr::from(base + offset)
    }

    fn take(&mut self, _net: Ipv4Net, ip: Ipv4Addr) {
        self.used.insert(u32::from(ip));
    }

    fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_come_from_the_range_and_are_not_reused_at_once() {
        let net: Ipv4Net = "10.42.3.0/24".parse().unwrap_or_default();
        let mut pool = IpPool::default();
        let a = pool.allocate(net);
        let b = pool.allocate(net);
        assert_eq!(a, Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 42, 3, 3));
        pool.release(a);
        assert_eq!(pool.allocate(net), Ipv4Addr::new(10, 42, 3, 4));
        let mut seen = BTreeSet::new();
        for _ in 0..250 {
            let ip = pool.allocate(net);
            assert!(net.contains(&ip) && ip != net.broadcast(), "{ip}");
            seen.insert(ip);
        }
        assert_eq!(seen.len(), 250);
    }

    #[test]
    fn a_running_status_has_every_condition_and_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"nodeName": "n", "containers": [{"name": "a", "image": "nginx"}],
                     "initContainers": [{"name": "init", "image": "busybox"},
                                        {"name": "side", "image": "envoy", "restartPolicy": "Always"}]},
        }))
        .unwrap_or_default();
        let s = running_status(
            &pod,
            Ipv4Addr::new(10, 255, 0, 1),
            Ipv4Addr::new(10, 42, 0, 2),
            Timestamp::UNIX_EPOCH,
        );
        let s = &s["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.42.0.2");
        let types: Vec<&str> = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert!(s["containerStatuses"][0]["state"]["running"].is_object());
        assert!(s["initContainerStatuses"][0]["state"]["terminated"].is_object());
        assert!(s["initContainerStatuses"][1]["state"]["running"].is_object());
    }
}
