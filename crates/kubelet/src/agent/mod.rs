//! The node agent: registers its Node, keeps its Lease, and runs the pods bound to it.
//!
//! - [`node`]: registration (capacity, allocatable, addresses, nodeInfo, conditions),
//!   the Lease every 10 s and the node status when it changes (or every 5 minutes).
//! - the pod manager (here): a watch of the pods bound to this node feeds one
//!   [`worker::Worker`] per pod UID; on start it adopts what the runtime still runs and
//!   removes what belongs to no pod any more.
//! - [`containers`]: the runtime manager (sandboxes, containers, shims) on skiff's
//!   container library; [`images`]: pulls; [`volumes`]: env and volume plugins;
//!   [`storage`]: the built-in local-path provisioner and the persistentVolumeClaim
//!   plugin; [`service_env`]: the Services' link variables in every container's env;
//!   [`status`]: the pod status; [`probes`]: probes and hooks; [`streaming`]: the
//!   [`crate::StreamingRuntime`] the kubelet API serves exec, attach, port-forward and
//!   logs with.
//! - housekeeping: [`eviction`] (node-pressure eviction and the pressure conditions, on
//!   [`thresholds`]),
//!   [`imagegc`] (image garbage collection by disk thresholds); container logs are
//!   rotated by their shims (`--container-log-max-size`, `--container-log-max-files`).

pub mod actions;
pub mod containers;
pub mod cri;
#[cfg(any(test, feature = "testing"))]
pub mod cri_conformance;
pub mod eviction;
pub mod fake;
pub mod grpc_probe;
pub mod hostfs;
pub mod imagegc;
pub mod images;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pidns;
pub mod pod_shim;
pub mod podspec;
pub mod probes;
pub mod security;
pub mod service_env;
pub mod stats;
pub mod status;
pub mod storage;
pub mod streaming;
pub mod thresholds;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret, Taint};
use kube::runtime::watcher;
use kube::{Api, Resource};
use skiff_controllers::{EventType, Recorder};
use skiff_serve::CancellationToken;
use tokio::sync::watch;

use crate::server::{StreamingServer, TlsFiles};

use cri::ContainerRuntime as _;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the sandbox of pod {uid}: {message}")]
    Sandbox { uid: String, message: String },
    #[error("opening the image store in {dir}: {message}")]
    Store { dir: PathBuf, message: String },
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("the kubelet API on {addr}: {source}")]
    Streaming {
        addr: SocketAddr,
        #[source]
        source: crate::ServerError,
    },
}

/// How the agent runs (`skiff agent`'s flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub node_ip: IpAddr,
    /// The kubelet API's port (0: any free one; the Node reports the one it got).
    pub kubelet_port: u16,
    /// Pods' cgroups go under `{cgroup_parent}/{qos}/pod{uid}`.
    pub cgroup_parent: String,
    pub max_pods: u32,
    pub node_labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// The shim program and its leading arguments (`skiff container-shim pod`).
    pub shim_command: Vec<OsString>,
    pub runtime_root: PathBuf,
    /// The kubelet API's serving certificate and the CA client certificates must chain to.
    pub tls: TlsFiles,
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: String,
    /// This node's CPU (millicores) and memory (bytes), for capacity and resourceFieldRef.
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub system_reserved_cpu_milli: i64,
    pub system_reserved_memory: i64,
    pub pod_pids_limit: Option<i64>,
    /// `--allowed-unsafe-sysctls`: namespaced sysctls (or `prefix*` groups) pods may set
    /// besides the safe set.
    pub allowed_unsafe_sysctls: Vec<String>,
    pub registry: skiff_image::distribution::ClientOptions,
    pub version: String,
    /// How the shims rotate container logs (the shim command carries it).
    pub container_log: Option<skiff_container::log::Rotation>,
    pub image_gc: imagegc::ImageGcPolicy,
    pub eviction: eviction::EvictionConfig,
    /// The pod network, service proxy and cluster DNS of this node (None: pods get only
    /// loopback and no Service is reachable).
    pub network: Option<network::NetworkConfig>,
}

/// The kubelet's events, about pods and their containers.
#[derive(Clone)]
pub struct Events {
    rec: Recorder,
}

impl Events {
    pub fn normal(&self, pod: &Pod, reason: &str, msg: impl Into<String>) {
        self.rec.normal(pod, reason, msg);
    }
    pub fn warning(&self, pod: &Pod, reason: &str, msg: impl Into<String>) {
        self.rec.warning(pod, reason, msg);
    }
    /// An event about one container (`spec.containers{name}`).
    pub fn container(
        &self,
        pod: &Pod,
        name: &str,
        init: bool,
        warning: bool,
        reason: &str,
        msg: impl Into<String>,
    ) {
        let mut r: ObjectReference = pod.object_ref(&());
        r.field_path = Some(if init {
            format!("spec.initContainers{{{name}}}")
        } else {
            format!("spec.containers{{{name}}}")
        });
        let kind = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.rec.publish_ref(r, kind, reason, msg);
    }
}

/// What every part of the agent shares.
pub struct Shared {
    pub client: kube::Client,
    pub cfg: Arc<AgentConfig>,
    pub rt: Arc<dyn cri::ContainerRuntime>,
    pub images: Arc<images::ImageManager>,
    pub events: Events,
    pods: Mutex<HashMap<String, Arc<Pod>>>,
    workers: Mutex<HashMap<String, watch::Sender<Option<Arc<Pod>>>>>,
    /// CPU rates between `/stats/summary` reads.
    pub rates: stats::Rates,
    /// The agent's `/metrics`.
    pub metrics: metrics::AgentMetrics,
    /// Pods the eviction manager evicted, by UID, for their workers.
    evictions: Mutex<HashMap<String, eviction::Eviction>>,
    /// The node's pressure conditions.
    pub pressure: Mutex<eviction::Pressure>,
    /// Every Service, for containers' service-link variables.
    pub services: service_env::ServiceCache,
    /// The node's service proxy's latest applied sync (None: no proxy on this node).
    pub proxy_synced: Option<watch::Receiver<skiff_net::proxy::SyncReport>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The pod `namespace/name` this agent runs, if any.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        lock(&self.pods)
            .values()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }

    /// The pods this agent runs now.
    pub fn pods_snapshot(&self) -> Vec<Arc<Pod>> {
        lock(&self.pods).values().cloned().collect()
    }

    /// The pod's directory: its volumes, `/etc/hosts`, logs (and, on skiff's runtime,
    /// its pinned namespaces).
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.cfg.data_dir.join("pods").join(uid)
    }

    /// Wakes the pod's worker (its pod unchanged) to sync now.
    fn poke(&self, uid: &str) {
        if let Some(tx) = lock(&self.workers).get(uid) {
            tx.send_modify(|_| {});
        }
    }

    fn forget(&self, uid: &str) {
        lock(&self.workers).remove(uid);
        lock(&self.pods).remove(uid);
        lock(&self.evictions).remove(uid);
    }

    /// Hands the pod's latest state to its worker, starting one for a new UID.
    fn dispatch(self: &Arc<Self>, uid: &str, pod: Option<Arc<Pod>>) {
        if let Some(p) = &pod {
            lock(&self.pods).insert(uid.to_string(), p.clone());
        }
        let mut workers = lock(&self.workers);
        if let Some(tx) = workers.get(uid) {
            let _ = tx.send(pod);
            return;
        }
        let (tx, rx) = watch::channel(pod);
        workers.insert(uid.to_string(), tx);
        let w = worker::Worker::new(self.clone(), uid.to_string(), rx);
        tokio::spawn(w.run());
    }
}

/// The docker config (`{"auths": …}`) of the pod's imagePullSecrets, if it has any.
pub async fn pull_secrets(client: &kube::Client, pod: &Pod) -> Option<serde_json::Value> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let refs = pod.spec.as_ref()?.image_pull_secrets.clone()?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut auths = serde_json::Map::new();
    for r in refs {
        let Ok(Some(s)) = api.get_opt(&r.name).await else {
            continue;
        };
        let data = s.data.unwrap_or_default();
        if let Some(b) = data.get(".dockerconfigjson") {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b.0) {
                if let Some(m) = v.get("auths").and_then(|a| a.as_object()) {
                    auths.extend(m.clone());
                }
            }
        } else if let Some(b) = data.get(".dockercfg") {
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(&b.0) {
                auths.extend(m);
            }
        }
    }
    (!auths.is_empty()).then(|| serde_json::json!({ "auths": auths }))
}

/// Runs the agent until `stop`; pods keep running when it ends (a new agent adopts them).
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    for d in ["pods", "containers"] {
        let p = cfg.data_dir.join(d);
        std::fs::create_dir_all(&p).map_err(|source| AgentError::Io {
            what: format!("creating {}", p.display()),
            source,
        })?;
    }
    let store = skiff_image::ImageStore::open(&cfg.data_dir).map_err(|e| AgentError::Store {
        dir: cfg.data_dir.clone(),
        message: skiff_serve::error_chain(&e),
    })?;
    let store = Arc::new(store);
    let rt = Arc::new(containers::RuntimeManager {
        data: cfg.data_dir.clone(),
        runtime_root: cfg.runtime_root.clone(),
        shim_command: cfg.shim_command.clone(),
        cgroup_parent: cfg.cgroup_parent.clone(),
        store: store.clone(),
        network: cfg.network.as_ref().map(|n| n.pods.clone()),
    });
    let images = Arc::new(images::ImageManager::new(
        store,
        cfg.registry.clone(),
        cfg.data_dir.join("pull-auth"),
    ));
    let sink = skiff_controllers::EventSink::start(client.clone());
    let events = Events {
        rec: sink.recorder("kubelet"),
    };
    let mut cfg = cfg;
    // The kubelet API first: the Node names its port.
    let addr = SocketAddr::new(cfg.node_ip, cfg.kubelet_port);
    let shared_slot: Arc<std::sync::OnceLock<Arc<Shared>>> = Arc::new(std::sync::OnceLock::new());
    let streaming = Arc::new(streaming::AgentStreaming {
        shared: shared_slot.clone(),
    });
    let server = StreamingServer::bind(addr, &cfg.tls, streaming)
        .await
        .map_err(|source| AgentError::Streaming { addr, source })?
        .with_token_reviewer(Arc::new(ApiTokenReviewer {
            client: client.clone(),
        }));
    if let Ok(a) = server.local_addr() {
        cfg.kubelet_port = a.port();
    }
    let proxy_synced = cfg
        .network
        .as_ref()
        .and_then(|n| n.proxy.as_ref())
        .map(|_| {
            watch::channel(skiff_net::proxy::SyncReport {
                generation: 0,
                full: false,
                commands: 0,
                bytes: 0,
                applied_at: std::time::Instant::now(),
            })
        });
    let sh = Arc::new(Shared {
        client: client.clone(),
        cfg: Arc::new(cfg),
        rt,
        images,
        events,
        pods: Mutex::new(HashMap::new()),
        workers: Mutex::new(HashMap::new()),
        rates: stats::Rates::default(),
        metrics: metrics::AgentMetrics::default(),
        evictions: Mutex::new(HashMap::new()),
        pressure: Mutex::new(eviction::Pressure::default()),
        services: service_env::ServiceCache::start(client.clone(), stop.clone()),
        proxy_synced: proxy_synced.as_ref().map(|(_, rx)| rx.clone()),
    });
    let _ = shared_slot.set(sh.clone());
    let serve_stop = stop.clone();
    let streaming_task =
        tokio::spawn(async move { server.run(serve_stop.cancelled_owned()).await });
    node::register(&sh).await?;
    let hb = tokio::spawn(node::heartbeat(sh.clone(), stop.clone()));
    let relist = tokio::spawn(pleg(sh.clone(), stop.clone()));
    let reclaim = tokio::spawn(storage::reclaimer(sh.clone(), stop.clone()));
    let gc = tokio::spawn(imagegc::run(sh.clone(), stop.clone()));
    let evict = tokio::spawn(eviction::run(sh.clone(), stop.clone()));
    let mut net_tasks = Vec::new();
    if let Some(n) = sh.cfg.network.clone() {
        if let Some(p) = n.proxy.clone() {
            net_tasks.push(tokio::spawn(network::proxy(
                sh.client.clone(),
                p,
                sink.recorder("kube-proxy"),
                proxy_synced.map(|(tx, _)| tx),
                stop.clone(),
            )));
        }
        if let Some(d) = n.dns.clone() {
            net_tasks.push(tokio::spawn(network::dns(
                sh.client.clone(),
                n.pods.clone(),
                d,
                stop.clone(),
            )));
        }
        net_tasks.push(tokio::spawn(network::run(
            sh.client.clone(),
            sh.cfg.node_name.clone(),
            n.pods,
            stop.clone(),
        )));
    }
    pod_manager(sh.clone(), stop.clone()).await;
    for t in net_tasks {
        let _ = t.await;
    }
    let _ = hb.await;
    let _ = relist.await;
    let _ = reclaim.await;
    let _ = gc.await;
    let _ = evict.await;
    let _ = streaming_task.await;
    // Workers see their channels close and leave the pods running.
    lock(&sh.workers).clear();
    Ok(())
}

/// Bearer tokens on the kubelet API are checked by the API server (a TokenReview), as the
/// kubelet's webhook authenticator does.
struct ApiTokenReviewer {
    client: kube::Client,
}

#[async_trait::async_trait]
impl crate::server::TokenReviewer for ApiTokenReviewer {
    async fn review(&self, token: &str) -> Option<crate::server::Peer> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = match api.create(&kube::api::PostParams::default(), &review).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reviewing a bearer token on the kubelet API");
                return None;
            }
        };
        let status = answer.status?;
        if status.authenticated != Some(true) {
            return None;
        }
        let user = status.user?;
        Some(crate::server::Peer {
            user: user.username.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
        })
    }
}

/// The pod lifecycle event generator: relists the runtime's containers every second and
/// wakes the worker of each pod where a container appeared, changed state (started,
/// exited, lost) or went away, so a worker learns of an exit within a second without
/// polling the runtime itself.
async fn pleg(sh: Arc<Shared>, stop: CancellationToken) {
    let mut last: HashMap<String, (String, u8)> = HashMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let rt = sh.rt.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || rt.list()).await else {
            continue;
        };
        let (cur, changed) = relist_changes(&last, now);
        last = cur;
        for uid in changed {
            sh.poke(&uid);
        }
    }
}

/// The containers now (id → pod UID and state) and the pods whose containers changed
/// since `last`.
fn relist_changes(
    last: &HashMap<String, (String, u8)>,
    now: Vec<containers::Container>,
) -> (HashMap<String, (String, u8)>, HashSet<String>) {
    let mut cur = HashMap::new();
    let mut changed = HashSet::new();
    for c in now {
        let s = match c.state {
            containers::RunState::Running => 0,
            containers::RunState::Exited(_) => 1,
            containers::RunState::Lost => 2,
        };
        if last.get(&c.record.id).map(|x| x.1) != Some(s) {
            changed.insert(c.record.pod_uid.clone());
        }
        cur.insert(c.record.id, (c.record.pod_uid, s));
    }
    for (id, (uid, _)) in last {
        if !cur.contains_key(id) {
            changed.insert(uid.clone());
        }
    }
    (cur, changed)
}

/// Feeds the pod workers from a watch of the pods bound to this node.
async fn pod_manager(sh: Arc<Shared>, stop: CancellationToken) {
    let api: Api<Pod> = Api::all(sh.client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", sh.cfg.node_name));
    let mut stream =
        kube::runtime::WatchStreamExt::default_backoff(watcher::watcher(api, wc)).boxed();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(p)) | Ok(watcher::Event::Apply(p)) => {
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
                listed.insert(uid.clone());
                sh.dispatch(&uid, Some(Arc::new(p)));
            }
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = &p.metadata.uid {
                    sh.dispatch(uid, None);
                }
            }
            Ok(watcher::Event::InitDone) => {
                // Pods that went away while we were not watching, and containers of pods
                // this node no longer has: terminated and removed.
                let known: Vec<String> = lock(&sh.workers).keys().cloned().collect();
                for uid in known {
                    if !listed.contains(&uid) {
                        sh.dispatch(&uid, None);
                    }
                }
                let rt = sh.rt.clone();
                let pods_dir = sh.cfg.data_dir.join("pods");
                let on_disk = tokio::task::spawn_blocking(move || {
                    let mut uids: HashSet<String> =
                        rt.records().into_iter().map(|r| r.pod_uid).collect();
                    uids.extend(rt.sandboxes());
                    if let Ok(d) = std::fs::read_dir(pods_dir) {
                        uids.extend(
                            d.flatten()
                                .map(|e| e.file_name().to_string_lossy().into_owned()),
                        );
                    }
                    uids
                })
                .await
                .unwrap_or_default();
                for uid in on_disk {
                    if !listed.contains(&uid) && !lock(&sh.workers).contains_key(&uid) {
                        sh.dispatch(&uid, None);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching this node's pods"),
        }
    }
}

/// Stops every pod container under `data_dir` and removes what the agent made there
/// (mounts, namespaces, cgroups): `skiff server --clean` / `skiff agent --clean`.
pub fn clean(data_dir: &std::path::Path, cgroup_parent: &str) {
    let Ok(store) = skiff_image::ImageStore::open(data_dir) else {
        containers::unmount_below(data_dir);
        return;
    };
    let rt = containers::RuntimeManager {
        data: data_dir.to_path_buf(),
        runtime_root: data_dir.join("runtime"),
        shim_command: Vec::new(),
        cgroup_parent: cgroup_parent.to_string(),
        store: Arc::new(store),
        network: None,
    };
    let mut cgroups = Vec::new();
    for c in rt.list() {
        if let Some((parent, _)) = c.record.cgroup.rsplit_once('/') {
            cgroups.push(parent.to_string());
        }
        rt.remove(&c.record);
    }
    for uid in rt.sandboxes() {
        rt.remove_sandbox(&uid);
    }
    if let Ok(d) = std::fs::read_dir(rt.pods_dir()) {
        for e in d.flatten() {
            containers::unmount_below(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    cgroups.sort();
    cgroups.dedup();
    for cg in cgroups {
        containers::remove_cgroup(&cg);
    }
    // Pod cgroups, the QoS levels and the parent go when empty (rmdir, depth first: a
    // cgroup still in use stays).
    containers::remove_cgroup(cgroup_parent.trim_end_matches('/'));
    containers::unmount_below(data_dir);
}

#[cfg(test)]
mod tests {
    use super::containers::{Container, ContainerRecord, ExitRecord, RunState};
    use super::*;

    fn c(id: &str, uid: &str, state: RunState) -> Container {
        Container {
            record: ContainerRecord {
                id: id.into(),
                pod_uid: uid.into(),
                ..Default::default()
            },
            state,
        }
    }

    #[test]
    fn the_pleg_wakes_pods_whose_containers_changed() {
        let exited = RunState::Exited(ExitRecord {
            exit_code: 1,
            finished: String::new(),
            oom_killed: false,
        });
        let (first, changed) = relist_changes(
            &HashMap::new(),
            vec![
                c("a", "p1", RunState::Running),
                c("b", "p2", RunState::Running),
            ],
        );
        assert_eq!(changed.len(), 2);
        // Nothing changed: nobody is woken.
        let (same, changed) = relist_changes(
            &first,
            vec![
                c("a", "p1", RunState::Running),
                c("b", "p2", RunState::Running),
            ],
        );
        assert!(changed.is_empty());
        // p1's container exited, p2's went away, p3 got one.
        let (_, changed) = relist_changes(
            &same,
            vec![c("a", "p1", exited), c("x", "p3", RunState::Running)],
        );
        let mut got: Vec<_> = changed.into_iter().collect();
        got.sort();
        assert_eq!(got, ["p1", "p2", "p3"]);
    }
}
