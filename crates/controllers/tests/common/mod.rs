//! The controllers' in-process test cluster: the real API server (on an in-memory store,
//! listening on a free loopback port), the real controller manager over the server's
//! in-process client as `system:kube-controller-manager`, and an admin client for the
//! test itself. Nodes and their pods' status come from the test (or hollow nodes).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use skiff_controllers::Config;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    pub server: skiff_apiserver::Server,
    /// The test's own client (system:admin, system:masters).
    pub admin: Client,
    pub stop: CancellationToken,
    controllers: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A server with every controller running (default settings).
    pub async fn start() -> Cluster {
        Self::start_with(Config::default()).await
    }

    /// A server with the controller manager running with `config`.
    pub async fn start_with(config: Config) -> Cluster {
        let mut c = Self::server_only().await;
        let client = c.controller_client();
        let stop = c.stop.clone();
        c.controllers = Some(tokio::spawn(async move {
            skiff_controllers::run(client, config, stop)
                .await
                .expect("controller manager");
        }));
        c
    }

    /// A server with the controller manager (`config`) and the scheduler running, so
    /// pods get bound to the nodes the test registers.
    pub async fn start_with_scheduler(config: Config) -> Cluster {
        let c = Self::start_with(config).await;
        let client = c.server.client(
            "system:kube-scheduler",
            &["system:masters", "system:authenticated"],
        );
        let stop = c.stop.clone();
        tokio::spawn(async move {
            let s = skiff_scheduler::Scheduler::new(client, skiff_scheduler::Config::default());
            let _ = s.run(stop.cancelled_owned()).await;
        });
        c
    }

    /// A server with no controllers (tests that drive one by hand).
    pub async fn server_only() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(skiff_store::EmbeddedStore::in_memory().expect("store"));
        let server = skiff_apiserver::Server::bind(
            skiff_apiserver::Config {
                data_dir: dir.path().to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                extra_sans: vec![],
                audit: None,
                event_ttl: None,
                kubelet_ca: None,
                cluster: Default::default(),
                advertise_address: None,
            },
            store,
        )
        .await
        .expect("bind the API server");
        let admin = server.client("system:admin", &["system:masters", "system:authenticated"]);
        Cluster {
            server,
            admin,
            stop: CancellationToken::new(),
            controllers: None,
            _dir: dir,
        }
    }

    /// The controller manager's identity, as `skiff server` gives it.
    pub fn controller_client(&self) -> Client {
        self.server.client(
            "system:kube-controller-manager",
            &["system:masters", "system:authenticated"],
        )
    }

    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.admin.clone(), ns)
    }

    pub fn cluster_api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>,
    {
        Api::all(self.admin.clone())
    }

    /// Registers a Ready node with `cpu` cores and its heartbeat Lease, as a kubelet does.
    pub async fn add_node(&self, name: &str, cpu: &str) -> Node {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        }))
        .unwrap();
        let nodes: Api<Node> = self.cluster_api();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        let now = k8s_openapi::jiff::Timestamp::now();
        let status = serde_json::json!({"status": {
            "capacity": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        }});
        self.renew_lease(name).await;
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status")
    }

    /// Renews the node's Lease in kube-node-lease (one heartbeat): created on first use,
    /// then its renewTime merge-patched.
    pub async fn renew_lease(&self, name: &str) {
        let leases: Api<Lease> = self.api("kube-node-lease");
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
        }))
        .unwrap();
        match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let patch = serde_json::json!({"spec": {"renewTime": now}});
                leases
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("renew lease");
            }
            Err(e) => panic!("create lease: {e}"),
        }
    }

    /// Marks a bound pod Running and Ready, as its kubelet would.
    pub async fn set_running_ready(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap();
        let now = k8s_openapi::jiff::Timestamp::now();
        let status = serde_json::json!({"status": {
            "phase": "Running", "podIP": "10.42.0.10", "startTime": now,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ],
        }});
        let pods: Api<Pod> = self.api(ns);
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod status");
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(c) = self.controllers.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls `f` until it returns Some, for at most 30 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
