//! One node for a test: `skiff server` with its agent, a registry with the kubia image.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{run, Out, Server, SKIFF};

pub struct Node {
    pub server: Server,
    registry: Child,
    _work: tempfile::TempDir,
    /// `127.0.0.1:PORT/kubia:1`.
    pub image: String,
    pub registry_addr: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// The agent's housekeeping flags for tests, unless a test gives its own: no eviction
/// and no image GC, so that no test depends on the host's free memory or disk.
const HOST_INDEPENDENT: &[(&str, &str)] = &[
    ("--eviction-hard", ""),
    ("--image-gc-high-threshold", "100"),
];

impl Node {
    pub fn start() -> Node {
        Self::start_with(&[])
    }

    /// [`Node::start`] with extra server (and agent) flags.
    pub fn start_with(flags: &[&str]) -> Node {
        let work = tempfile::Builder::new()
            .prefix("skiff-kubelet-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let registry = Command::new(SKIFF)
            .args(["registry", "serve", "--listen", &addr, "--data-dir"])
            .arg(work.path().join("registry"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let image = format!("{addr}/kubia:1");
        build_kubia(work.path(), &image);
        let mut args: Vec<&str> = flags.to_vec();
        for (flag, value) in HOST_INDEPENDENT {
            if !flags.contains(flag) {
                args.extend([*flag, *value]);
            }
        }
        // Servers of these tests run side by side in the host's network namespace: the
        // pod network (one bridge per node) is tested in `skiff dev cluster`'s namespaces.
        args.push("--disable-pod-network");
        let server = Server::start_with_agent(&args);
        let node = Node {
            server,
            registry,
            _work: work,
            image,
            registry_addr: addr,
        };
        node.wait_ready();
        node
    }

    pub fn k(&self, args: &[&str]) -> Out {
        self.server.kubectl(crate::common::VERSIONS[1], args)
    }

    pub fn kv(&self, v: &str, args: &[&str]) -> Out {
        self.server.kubectl(v, args)
    }

    pub fn apply(&self, manifest: &str) {
        let mut c = self
            .server
            .kubectl_command(crate::common::VERSIONS[1], &["apply", "-f", "-"]);
        c.env("KUBECONFIG", self.server.kubeconfig());
        run(c, Some(manifest)).ok();
    }

    fn wait_ready(&self) {
        wait("the node Ready", 60, || {
            let o = self.k(&["get", "nodes", "--no-headers"]);
            o.stdout.contains(" Ready").then_some(())
        });
    }

    /// `kubectl get pod NAME -o jsonpath=PATH`.
    pub fn jp(&self, pod: &str, path: &str) -> String {
        self.k(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
            .stdout
    }

    pub fn data(&self) -> &Path {
        self.server.dir.path()
    }

    /// What the server refused its agent, from its audit log (see
    /// [`crate::common::node_refusals`]).
    pub fn node_refusals(&self) -> Vec<String> {
        crate::common::node_refusals(&self.data().join("audit.log"))
    }

    /// The agent's cgroup parent (under every hierarchy).
    pub fn cgroup_dirs(&self, rel: &str) -> Vec<PathBuf> {
        cgroup_dirs(rel)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

/// The cgroup `rel` under every hierarchy a test checks (the unified one, or v1's
/// memory, cpu and pids).
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.join(rel.trim_start_matches('/'))];
    }
    ["memory", "cpu", "pids"]
        .iter()
        .map(|c| base.join(c).join(rel.trim_start_matches('/')))
        .collect()
}

/// The cgroup `rel` in the memory hierarchy (the unified one on v2).
pub fn memory_cgroup(rel: &str) -> PathBuf {
    cgroup_dirs(rel).remove(0)
}

/// Builds examples/kubia (with this machine's static busybox) and pushes it.
pub fn build_kubia(work: &Path, image: &str) {
    let ctx = work.join("kubia");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubia");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&ctx)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy("/bin/busybox", ctx.join("busybox"))
        .expect("copy /bin/busybox (busybox-static, installed by scripts/setup.sh)");
    let store = work.join("images");
    let mut c = Command::new(SKIFF);
    c.env("SKIFF_DATA_DIR", &store)
        .args(["image", "build", "-t", image])
        .arg(&ctx);
    run(c, None).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Command::new(SKIFF);
        c.env("SKIFF_DATA_DIR", &store)
            .args(["image", "push", image]);
        let o = run(c, None);
        if o.code == 0 {
            return;
        }
        // The registry may still be starting.
        assert!(Instant::now() < deadline, "push failed: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `f` for at most `secs`.
#[track_caller]
pub fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait`], and on time-out says what `why` finds.
#[track_caller]
pub fn wait_or<T>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {secs} s waiting for {what}: {}", why());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Nothing of `dir` is mounted and `cgroup` exists in no hierarchy.
#[track_caller]
pub fn assert_clean(dir: &Path, cgroup_dirs: &[PathBuf]) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(d.as_ref())).collect();
    assert!(left.is_empty(), "mounts left under {d}: {left:#?}");
    for c in cgroup_dirs {
        assert!(!c.exists(), "cgroup left: {}", c.display());
    }
}
