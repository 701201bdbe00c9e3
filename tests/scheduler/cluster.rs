//! A test cluster: a `skiff server`, a kube-rs client for watching, kubectl for writing,
//! and Node objects as a kubelet would register them (labels, taints, then capacity,
//! allocatable and the Ready condition through `nodes/status`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::{json, Value};

use crate::common::{Out, Server};

/// How long a pod may take to reach the state a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub server: Server,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    /// The kubectl version this test writes with.
    pub kubectl: &'static str,
}

impl Cluster {
    /// A server with its in-process scheduler.
    pub fn start(kubectl: &'static str) -> Cluster {
        Self::start_with(kubectl, &[])
    }

    pub fn start_with(kubectl: &'static str, args: &[&str]) -> Cluster {
        let server = Server::start_with_scheduler(args);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt.block_on(server.kube_client());
        Cluster {
            server,
            rt,
            client,
            kubectl,
        }
    }

    #[track_caller]
    pub fn kubectl(&self, args: &[&str]) -> Out {
        self.server.kubectl(self.kubectl, args)
    }

    /// `kubectl create -f -` of `obj`.
    #[track_caller]
    pub fn create(&self, obj: &Value) {
        self.server
            .kubectl_with(
                self.kubectl,
                &["create", "-f", "-"],
                Some(&obj.to_string()),
                &[],
            )
            .ok();
    }

    /// Registers a node as a kubelet would: the object, then its status.
    #[track_caller]
    pub fn node(&self, n: &Node) {
        register_node(&self.server, self.kubectl, n);
    }
    /// Waits (watching) until `cond` holds for the pod `name` in default; panics with the
    /// pod's YAML after [`WAIT`].
    #[track_caller]
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(&Pod) -> bool + Send + 'static,
    ) -> Pod {
        self.wait_pod_within(name, what, WAIT, cond)
    }

    #[track_caller]
    pub fn wait_pod_within(
        &self,
        name: &str,
        what: &str,
        within: Duration,
        cond: impl Fn(&Pod) -> bool + Send + 'static,
    ) -> Pod {
        let api: Api<Pod> = Api::default_namespaced(self.client.clone());
        let found = self.rt.block_on(async {
            tokio::time::timeout(
                within,
                kube::runtime::wait::await_condition(api, name, move |p: Option<&Pod>| {
                    p.is_some_and(&cond)
                }),
            )
            .await
        });
        match found {
            Ok(Ok(Some(p))) => p,
            _ => {
                let now = self.kubectl(&["get", "pod", name, "-o", "yaml"]);
                panic!(
                    "pod {name}: timed out after {within:?} waiting until {what}; now:\n{}{}",
                    now.stdout, now.stderr
                )
            }
        }
    }

    /// Waits until the pod is bound; returns its node.
    #[track_caller]
    pub fn bound(&self, name: &str) -> String {
        self.bound_within(name, WAIT)
    }

    #[track_caller]
    pub fn bound_within(&self, name: &str, within: Duration) -> String {
        let p = self.wait_pod_within(name, "it is bound to a node", within, |p| {
            node_name(p).is_some()
        });
        node_name(&p).expect("bound").to_string()
    }

    /// Waits until the scheduler marked the pod unschedulable; returns the condition's
    /// message.
    #[track_caller]
    pub fn unschedulable(&self, name: &str) -> String {
        let p = self.wait_pod(name, "PodScheduled is False/Unschedulable", |p| {
            scheduled_condition(p).is_some_and(|c| {
                c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
            })
        });
        assert_eq!(node_name(&p), None, "an unschedulable pod has no node");
        scheduled_condition(&p)
            .and_then(|c| c.message.clone())
            .unwrap_or_default()
    }

    /// The pod's Events (core/v1), oldest first.
    pub fn events(&self, pod: &str) -> Vec<Value> {
        let out = self
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={pod}"),
                "-o",
                "json",
            ])
            .ok();
        let v: Value = serde_json::from_str(&out.stdout).expect("events JSON");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the pod has an Event with `reason`; returns it.
    #[track_caller]
    pub fn event(&self, pod: &str, reason: &str) -> Value {
        crate::common::eventually(&format!("a {reason} Event for {pod}"), || {
            self.events(pod).into_iter().find(|e| e["reason"] == reason)
        })
    }
}

pub fn node_name(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

pub fn scheduled_condition(p: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
}

/// A node to register: 16 GiB, 110 pods, `cpu` cores.
pub struct Node {
    pub name: String,
    pub cpu: String,
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Value>,
}

impl Node {
    pub fn new(name: &str, cpu: &str) -> Node {
        Node {
            name: name.into(),
            cpu: cpu.into(),
            labels: vec![],
            taints: vec![],
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> Node {
        self.labels.push((k.into(), v.into()));
        self
    }

    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Node {
        self.taints
            .push(json!({"key": key, "value": value, "effect": effect}));
        self
    }
}

/// A pause pod `name` with `labels`, requesting `cpu` (if any); `spec` is merged into its
/// spec (JSON merge patch).
pub fn pod(name: &str, labels: Value, cpu: Option<&str>, spec: Value) -> Value {
    let resources = match cpu {
        Some(c) => json!({"requests": {"cpu": c}}),
        None => json!({}),
    };
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{
            "name": "app",
            "image": "registry.k8s.io/pause:3.9",
            "resources": resources,
        }]},
    });
    json_patch::merge(&mut p["spec"], &spec);
    p
}

/// kube-scheduler's message for a pod no node fits: the filter reasons, then what
/// preemption found.
pub fn unschedulable_message(nodes: usize, reasons: &str, preemption: &str) -> String {
    format!("0/{nodes} nodes are available: {reasons}. preemption: 0/{nodes} nodes are available: {preemption}.")
}

/// Registers `n` through `server` with kubectl `version`: the object, then its status.
#[track_caller]
pub fn register_node(server: &Server, version: &str, n: &Node) {
    let mut labels = json!({
        "kubernetes.io/hostname": n.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    });
    for (k, v) in &n.labels {
        labels[k] = json!(v);
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": labels},
        "spec": {"taints": n.taints},
    });
    server
        .kubectl_with(
            version,
            &["create", "-f", "-"],
            Some(&node.to_string()),
            &[],
        )
        .ok();
    let resources =
        json!({"cpu": n.cpu, "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }],
    }});
    server
        .kubectl(
            version,
            &[
                "patch",
                "node",
                &n.name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ],
        )
        .ok();
}
