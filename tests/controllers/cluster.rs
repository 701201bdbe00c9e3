//! A controllers test cluster: a `skiff server` (scheduler and controller manager on
//! unless the test's flags turn them off), a kube-rs client for reading, kubectl of the
//! test's version for writing, and `skiff hollow-nodes` processes as the nodes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::common::{Out, Server, SKIFF};

pub struct Cluster {
    pub server: Server,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    /// The kubectl version this test writes with.
    pub kubectl: &'static str,
}

impl Cluster {
    /// A server with its scheduler and controller manager.
    pub fn start(kubectl: &'static str) -> Cluster {
        Self::start_with(kubectl, &[])
    }

    pub fn start_with(kubectl: &'static str, args: &[&str]) -> Cluster {
        let server = Server::start_with_controllers(args);
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
    pub fn create(&self, obj: &serde_json::Value) {
        self.server
            .kubectl_with(
                self.kubectl,
                &["create", "-f", "-"],
                Some(&obj.to_string()),
                &[],
            )
            .ok();
    }

    /// The pods of namespace default matching `selector`.
    pub fn pods(&self, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::default_namespaced(self.client.clone());
        self.rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .expect("list pods")
            .items
    }

    /// `skiff hollow-nodes --count N --prefix P` against this server.
    pub fn hollow(&self, count: usize, prefix: &str) -> Hollow {
        Hollow::start(&self.server, count, prefix)
    }
}

/// Whether the pod is Running with Ready=True.
pub fn running_ready(p: &Pod) -> bool {
    let Some(s) = &p.status else { return false };
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A `skiff hollow-nodes` process (killed on drop): its nodes fail and recover through
/// its standard input.
pub struct Hollow {
    pub child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    pub names: Vec<String>,
}

impl Hollow {
    pub fn start(server: &Server, count: usize, prefix: &str) -> Hollow {
        let mut child = Command::new(SKIFF)
            .arg("hollow-nodes")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(["--count", &count.to_string(), "--prefix", prefix])
            .args(["--node-lease-renew-interval", "1s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skiff hollow-nodes");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, replies) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (started_tx, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(started_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("nodes registered") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(()));
                        continue;
                    }
                }
                match &tx {
                    Some(t) => {
                        let _ = t.send(Err(line));
                    }
                    None => eprintln!("skiff hollow-nodes: {line}"),
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = Vec::new();
        loop {
            match started.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(())) => break,
                Ok(Err(line)) => log.push(line),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    panic!("skiff hollow-nodes did not start: {}", log.join("\n"));
                }
            }
        }
        Hollow {
            child,
            stdin,
            replies,
            names: (0..count).map(|i| format!("{prefix}{i}")).collect(),
        }
    }

    /// Sends one command line; returns the reply.
    #[track_caller]
    pub fn command(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to skiff hollow-nodes");
        self.stdin.flush().expect("flush");
        self.replies
            .recv_timeout(Duration::from_secs(10))
            .expect("a reply from skiff hollow-nodes")
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
