//! A `skiff dev cluster` for a test: N agents in network namespaces of their own, the
//! kubia image built by `skiff image build` and loaded on every node, kubectl through the
//! cluster's admin kubeconfig. Dropped: `skiff dev cluster down`, then a check that no
//! namespace, link, mount or cgroup of it is left.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{kubectl_path, run, Out, SKIFF};

pub struct Cluster {
    pub dir: PathBuf,
    _work: tempfile::TempDir,
    pub nodes: usize,
    id: String,
}

impl Cluster {
    pub fn start(nodes: usize) -> Cluster {
        Self::start_with(nodes, &[])
    }

    /// [`Cluster::start`] with more `skiff dev cluster` flags.
    pub fn start_with(nodes: usize, flags: &[&str]) -> Cluster {
        Self::start_env(nodes, flags, &[])
    }

    /// [`Cluster::start_with`] with environment variables for the cluster's processes.
    pub fn start_env(nodes: usize, flags: &[&str], env: &[(&str, &str)]) -> Cluster {
        let work = tempfile::Builder::new()
            .prefix("skiff-net-")
            .tempdir()
            .unwrap();
        let dir = work.path().join("cluster");
        let mut c = Command::new(SKIFF);
        c.args([
            "dev",
            "cluster",
            "-d",
            "--nodes",
            &nodes.to_string(),
            "--data-dir",
        ])
        .arg(&dir)
        .args(flags)
        .envs(env.iter().copied());
        let o = run_long(c, Duration::from_secs(150));
        assert_eq!(o.code, 0, "skiff dev cluster: {o:#?}");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap();
        let cluster = Cluster {
            dir,
            _work: work,
            nodes,
            id: state["id"].as_str().unwrap().to_string(),
        };
        cluster.load_kubia();
        cluster
    }

    /// What the (first) server refused the agents, from its audit log.
    pub fn node_refusals(&self) -> Vec<String> {
        crate::common::node_refusals(&self.dir.join("server/audit.log"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }

    pub fn k(&self, args: &[&str]) -> Out {
        let mut c = Command::new(kubectl_path("1.33"));
        c.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        run(c, None)
    }

    pub fn apply(&self, manifest: &str) {
        let mut c = Command::new(kubectl_path("1.33"));
        c.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["apply", "-f", "-"]);
        run(c, Some(manifest)).ok();
    }

    /// Runs a shell script in pod `pod` (kubectl exec).
    pub fn sh(&self, pod: &str, script: &str) -> Out {
        self.k(&["exec", pod, "--", "sh", "-c", script])
    }

    fn load_kubia(&self) {
        let ctx = self.dir.join("kubia-ctx");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubia");
        assert!(Command::new("cp")
            .arg("-r")
            .arg(&src)
            .arg(&ctx)
            .status()
            .unwrap()
            .success());
        std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("copy /bin/busybox");
        let store = self.dir.join("images");
        let mut c = Command::new(SKIFF);
        c.env("SKIFF_DATA_DIR", &store)
            .args(["image", "build", "-t", "kubia:1"])
            .arg(&ctx);
        run(c, None).ok();
        let mut c = Command::new(SKIFF);
        c.env("SKIFF_DATA_DIR", &store)
            .args(["dev", "cluster", "load", "--data-dir"])
            .arg(&self.dir)
            .arg("kubia:1");
        run(c, None).ok();
    }

    /// Waits (up to `secs`) until `f` is Some.
    #[track_caller]
    pub fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let pods = self.k(&["get", "pods", "-A", "-o", "wide"]);
                panic!("timed out waiting for {what}; pods:\n{}", pods.stdout);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A kubia Deployment with `replicas` (image loaded locally, never pulled).
    pub fn kubia(&self, name: &str, replicas: u32) {
        self.apply(&format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: kubia
        image: kubia:1
        imagePullPolicy: Never
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /cgi-bin/ready, port: 8080}}
          periodSeconds: 1
"#
        ));
    }

    pub fn ready_replicas(&self, deploy: &str) -> Option<u32> {
        self.k(&[
            "get",
            "deploy",
            deploy,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .stdout
        .trim()
        .parse()
        .ok()
    }

    /// A client pod (kubia's busybox, sleeping) in namespace `ns`, Ready.
    pub fn client(&self, name: &str, ns: &str, node: Option<&str>) {
        let node_sel = node
            .map(|n| format!("  nodeName: {n}\n"))
            .unwrap_or_default();
        self.apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
{node_sel}  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: kubia:1
    imagePullPolicy: Never
    command: [sleep, "3600"]
"#
        ));
        self.wait(&format!("client pod {ns}/{name} Running"), 90, || {
            let o = self.k(&[
                "get",
                "pod",
                "-n",
                ns,
                name,
                "-o",
                "jsonpath={.status.phase}",
            ]);
            (o.stdout.trim() == "Running").then_some(())
        });
    }

    /// The distinct kubia pods that answered `n` requests to `url` from pod `from`.
    pub fn hits(
        &self,
        ns: &str,
        from: &str,
        url: &str,
        n: u32,
    ) -> std::collections::BTreeSet<String> {
        let o = self.k(&[
            "exec",
            "-n",
            ns,
            from,
            "--",
            "sh",
            "-c",
            &format!("for i in $(seq {n}); do wget -qO- -T 2 {url}; done"),
        ]);
        o.stdout
            .split("You've hit ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next())
            .map(|s| {
                s.trim_end_matches(|c: char| !c.is_alphanumeric())
                    .to_string()
            })
            .collect()
    }

    pub fn node_ips(&self) -> Vec<String> {
        self.k(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.addresses[?(@.type==\"InternalIP\")].address}{\"\\n\"}{end}",
        ])
        .ok()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Runs `cmd` inside node `i`'s network namespace (1-based), as `ip netns exec`.
    pub fn in_node(&self, i: usize, cmd: &[&str]) -> Out {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("skiff-{}-n{i}", self.id)])
            .args(cmd);
        run(c, None)
    }

    pub fn dev(&self, args: &[&str]) -> Out {
        let mut c = Command::new(SKIFF);
        c.args(["dev", "cluster"])
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir);
        run_long(c, Duration::from_secs(60))
    }
}

fn run_long(mut c: Command, timeout: Duration) -> Out {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(o)) => Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("{c:?}: {e}"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{c:?} timed out after {timeout:?}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The logs of a failed test outlive its cluster.
            let keep = std::env::temp_dir().join(format!("skiff-net-failed-{}", self.id));
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(self.dir.join("server.log"), keep.join("server.log"));
            // The other servers and etcd members of a `--servers N --etcd` cluster.
            for i in 2..=7 {
                let log = format!("server-{i}.log");
                let _ = std::fs::copy(self.dir.join(&log), keep.join(&log));
            }
            for i in 1..=3 {
                let log = format!("etcd-{i}.log");
                let _ = std::fs::copy(self.dir.join("etcd").join(&log), keep.join(&log));
            }
            for i in 1..=self.nodes {
                let _ = std::fs::copy(
                    self.dir.join(format!("nodes/skiff-node-{i}/agent.log")),
                    keep.join(format!("agent-{i}.log")),
                );
            }
            eprintln!("logs kept in {}", keep.display());
        }
        let mut c = Command::new(SKIFF);
        c.args(["dev", "cluster", "down", "--data-dir"])
            .arg(&self.dir);
        let o = run_long(c, Duration::from_secs(120));
        if std::thread::panicking() {
            return;
        }
        assert_eq!(o.code, 0, "down: {o:#?}");
        let ns = run(
            {
                let mut c = Command::new("ip");
                c.args(["netns", "list"]);
                c
            },
            None,
        );
        assert!(
            !ns.stdout.contains(&self.id),
            "namespaces left: {}",
            ns.stdout
        );
        let links = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(&self.id))
            .collect::<Vec<_>>();
        assert!(links.is_empty(), "links left: {links:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.to_string_lossy();
        assert!(!mounts.contains(dir.as_ref()), "mounts left under {dir}");
        assert!(
            !Path::new(&format!("/sys/fs/cgroup/memory/skiff-dev-{}", self.id)).exists()
                && !Path::new(&format!("/sys/fs/cgroup/skiff-dev-{}", self.id)).exists(),
            "cgroups left"
        );
    }
}
