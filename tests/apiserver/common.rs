//! Helpers for the API server tests: a real `skiff server` on a free loopback port with a
//! temp data dir (killed and removed on drop), and runners for kubectl of a given version,
//! curl with the admin certificate, and the Python client.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
/// Any command that runs longer fails the test (watch tests pass their own timeouts).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The kubectl versions every kubectl test runs with: the oldest and newest supported.
pub const VERSIONS: &[&str] = &["1.27", "1.33"];

pub struct Server {
    pub child: Child,
    pub dir: TempDir,
    pub url: String,
    /// Extra server arguments (for restarts).
    args: Vec<String>,
    /// The --listen address (127.0.0.1:0 unless the port must survive restarts).
    listen: String,
    /// The local agent's cgroup parent, when the server runs its agent (cleaned on drop).
    agent_cgroup: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts `skiff server` with `args` on 127.0.0.1:0 and waits until it serves. The
    /// API server tests run it without its scheduler and controller manager, whose
    /// writes (pod conditions, ServiceAccounts, Events, their Leases, their watches in the
    /// audit log) are not theirs to see.
    pub fn start_with(args: &[&str]) -> Server {
        Self::start_listening("127.0.0.1:0", &without_scheduler(args))
    }

    /// Starts `skiff server` with its in-process scheduler but no controller manager
    /// (the scheduler tests).
    #[allow(dead_code)]
    pub fn start_with_scheduler(args: &[&str]) -> Server {
        let args: Vec<&str> = ["--disable-controller-manager", "--disable-agent"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Self::start_listening("127.0.0.1:0", &args)
    }

    /// Starts `skiff server` with its in-process scheduler and controller manager (the
    /// controller tests).
    #[allow(dead_code)]
    pub fn start_with_controllers(args: &[&str]) -> Server {
        let args: Vec<&str> = std::iter::once("--disable-agent")
            .chain(args.iter().copied())
            .collect();
        Self::start_listening("127.0.0.1:0", &args)
    }

    /// Starts the whole `skiff server`: scheduler, controller manager and its local
    /// agent (kubelet API on a free port, pods' cgroups under a parent of this test's).
    /// On drop the server is killed and `skiff server --clean` removes its pods.
    #[allow(dead_code)]
    pub fn start_with_agent(args: &[&str]) -> Server {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let cgroup = format!(
            "/skiff-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let args: Vec<&str> = ["--kubelet-port", "0", "--cgroup-parent", cgroup.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let mut s = Self::start_listening("127.0.0.1:0", &args);
        s.agent_cgroup = Some(cgroup);
        s
    }

    /// Starts `skiff server` on a fixed free port, so [`Server::restart`] keeps the URL
    /// that long-lived clients (kube-rs watchers) hold.
    pub fn start_on_fixed_port(args: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Self::start_listening(&format!("127.0.0.1:{port}"), &without_scheduler(args))
    }

    fn start_listening(listen: &str, args: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("skiff-apiserver-")
            .tempdir()
            .expect("temp dir");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, url) = spawn(dir.path(), listen, &args);
        Server {
            child,
            dir,
            url,
            args,
            listen: listen.to_string(),
            agent_cgroup: None,
        }
    }

    /// Stops the server and starts it again on the same data dir (and a new port, unless
    /// started with [`Server::start_on_fixed_port`]).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Restarts the server with some flags set anew (`(flag, value)`: an earlier value
    /// of the flag is replaced).
    #[allow(dead_code)]
    pub fn restart_with(&mut self, flags: &[(&str, &str)]) {
        self.stop();
        for (flag, value) in flags {
            if let Some(i) = self.args.iter().position(|a| a == flag) {
                self.args.drain(i..(i + 2).min(self.args.len()));
            }
            self.args.push(flag.to_string());
            self.args.push(value.to_string());
        }
        self.start_again();
    }

    /// Kills the server (it stays down until [`Server::start_again`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on its data dir.
    pub fn start_again(&mut self) {
        let (child, url) = spawn(self.dir.path(), &self.listen, &self.args);
        self.child = child;
        self.url = url;
    }

    /// The local agent's cgroup parent (servers from [`Server::start_with_agent`]).
    #[allow(dead_code)]
    pub fn agent_cgroup(&self) -> Option<&str> {
        self.agent_cgroup.as_deref()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn pki(&self, f: &str) -> PathBuf {
        self.dir.path().join("pki").join(f)
    }

    /// A kube-rs client from the kubeconfig the server wrote (admin client certificate),
    /// configured as a user would.
    pub async fn kube_client(&self) -> kube::Client {
        // skiff uses rustls with ring; kube-rs picks up the process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config from the server's kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("token"))
            .expect("token file")
            .trim()
            .to_string()
    }

    /// kubectl of `version` (`1.27`…`1.33`) with this server's kubeconfig.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Out {
        self.kubectl_with(version, args, None, &[])
    }

    /// kubectl `version` with `args`, pointed at this server (not started yet).
    pub fn kubectl_command(&self, version: &str, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl_path(version));
        c.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path());
        c
    }

    pub fn kubectl_with(
        &self,
        version: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Out {
        let mut c = self.kubectl_command(version, args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(c, stdin)
    }

    /// curl with the admin client certificate; `args` are extra curl arguments.
    pub fn curl(&self, method: &str, path: &str, args: &[&str]) -> Out {
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(self.pki("ca.crt"))
            .arg("--cert")
            .arg(self.pki("admin.crt"))
            .arg("--key")
            .arg(self.pki("admin.key"))
            .args(args)
            .arg(format!("{}{path}", self.url));
        run(c, None)
    }
}

impl Server {
    /// curl `method path` with `body` (written to a file in the data dir) as `content_type`:
    /// the HTTP status and the JSON answer.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let f = write(self.dir.path(), "body", body);
        self.curl(
            method,
            path,
            &[
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                &format!("@{}", f.display()),
            ],
        )
        .http()
    }
}

fn without_scheduler<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [
        "--disable-scheduler",
        "--disable-controller-manager",
        "--disable-agent",
    ]
    .into_iter()
    .chain(args.iter().copied())
    .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(cg) = &self.agent_cgroup {
            // The pods' containers outlive the server (as on a node): stop and remove them.
            let _ = Command::new(SKIFF)
                .arg("server")
                .arg("--clean")
                .arg("--data-dir")
                .arg(self.dir.path())
                .args(["--cgroup-parent", cg])
                .args(self.args.iter().filter(|a| *a == "--disable-pod-network"))
                .status();
        }
    }
}

fn spawn(dir: &Path, listen: &str, args: &[String]) -> (Child, String) {
    // Tests run many servers at once: the built-in registry (127.0.0.1:5000 by default)
    // only where a test asks for it on a port of its own.
    let registry = if args.iter().any(|a| a.starts_with("--registry-listen")) {
        None
    } else {
        Some("--disable-registry")
    };
    let mut child = Command::new(SKIFF)
        .arg("server")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", listen])
        .args(registry)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line
                .split("API on ")
                .nth(1)
                .and_then(|r| r.split(';').next())
            {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Ok(url.to_string()));
                }
            } else if let Some(t) = &tx {
                let _ = t.send(Err(line));
            } else {
                eprintln!("skiff server: {line}");
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(url)) => return (child, url),
            Ok(Err(line)) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("skiff server did not start: {}", log.join("\n"));
            }
        }
    }
}

/// kubectl of `version` (`1.NN`): `kubectl.1.NN` beside the kubectl on PATH (after
/// symlinks), else that kubectl itself when it is of that version. A version that is in
/// neither place fails the test, naming it (scripts/setup.sh says how to install it).
pub fn kubectl_path(version: &str) -> PathBuf {
    let k = which("kubectl");
    let real = std::fs::canonicalize(&k).unwrap_or_else(|_| k.clone());
    let dir = real.parent().expect("kubectl dir");
    let beside = dir.join(format!("kubectl.{version}"));
    if beside.exists() {
        return beside;
    }
    let on_path = kubectl_client_version(&k);
    if on_path.as_deref() == Some(version) {
        return k;
    }
    panic!(
        "kubectl {version} not found: no {} and the kubectl on PATH ({}) is {}; \
         put the kubectl v{version} release binary there (see scripts/setup.sh)",
        beside.display(),
        k.display(),
        on_path.as_deref().unwrap_or("of an unknown version"),
    )
}

/// `1.NN` of `kubectl version --client` ("minor" may carry a suffix such as `32+`).
fn kubectl_client_version(kubectl: &Path) -> Option<String> {
    let out = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let major = v["clientVersion"]["major"].as_str()?;
    let minor: String = v["clientVersion"]["minor"]
        .as_str()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(format!("{major}.{minor}"))
}

fn which(bin: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| panic!("{bin} not on PATH"))
}

#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    #[track_caller]
    pub fn fails(self) -> Out {
        assert_ne!(self.code, 0, "command unexpectedly succeeded: {self:#?}");
        self
    }

    /// For curl: the HTTP status (last line) and the JSON body.
    pub fn http(&self) -> (u16, serde_json::Value) {
        let (body, code) = self.stdout.rsplit_once('\n').unwrap_or(("", &self.stdout));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }
}

pub fn run(mut c: Command, stdin: Option<&str>) -> Out {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    if let (Some(s), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(s.as_bytes()).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CMD_TIMEOUT) {
        Ok(Ok(o)) => Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("{c:?}: {e}"),
        Err(_) => {
            // The child moved into the waiter thread; signal it by pid.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{c:?} timed out after {CMD_TIMEOUT:?}");
        }
    }
}

/// Polls `f` until it returns Some, for at most 30 s.
#[track_caller]
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write file");
    p
}

/// One test module per function named, with a test per kubectl version in [`VERSIONS`].
macro_rules! per_version {
    ($($name:ident),*) => {
        $(
            mod $name {
                #[test]
                fn kubectl_1_27() {
                    super::$name($crate::common::VERSIONS[0]);
                }
                #[test]
                fn kubectl_1_33() {
                    super::$name($crate::common::VERSIONS[1]);
                }
            }
        )*
    };
}

/// A standalone control-plane component (`skiff scheduler` or `skiff controller-manager`)
/// with `--leader-elect`, killed on drop.
#[allow(dead_code)]
pub struct Standalone {
    pub child: Child,
    pub identity: String,
    /// `http://127.0.0.1:PORT`, where /metrics and /healthz are served.
    pub metrics: String,
}
impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `skiff <component> --leader-elect` against `kubeconfig` and waits until it
/// reports its identity and metrics address.
#[allow(dead_code)]
pub fn standalone(component: &str, kubeconfig: &Path) -> Standalone {
    let mut child = Command::new(SKIFF)
        .arg(component)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--leader-elect", "--metrics-bind-address", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn skiff {component}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let name = component.to_string();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let id = line
                .split("identity ")
                .nth(1)
                .and_then(|r| r.split(';').next());
            let metrics = line
                .split("metrics on ")
                .nth(1)
                .and_then(|r| r.split("/metrics").next());
            match (id.zip(metrics), tx.take()) {
                (Some((id, metrics)), Some(tx)) => {
                    let _ = tx.send((id.to_string(), metrics.to_string()));
                }
                (_, t) => {
                    tx = t;
                    eprintln!("skiff {name}: {line}");
                }
            }
        }
    });
    let (identity, metrics) = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("skiff {component} did not start"));
    Standalone {
        child,
        identity,
        metrics,
    }
}

/// Plain-HTTP GET with curl: the body.
#[allow(dead_code)]
pub fn http_get(url: &str) -> String {
    let mut c = Command::new("curl");
    c.args(["-sSf", url]);
    run(c, None).ok().stdout
}

/// What a server refused its agents (`system:node:<name>`, held to what their pods need
/// by the Node authorizer and NodeRestriction), from its audit log at `log`: `VERB URI
/// 403` of each refusal. An agent doing its work is never refused. Panics when the log
/// holds no request of a node at all (the check would prove nothing). Used by the tests
/// that run agents (kubelet, network).
#[allow(dead_code)]
pub fn node_refusals(log: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(log).expect("the audit log");
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut requests = 0;
    for line in log.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let user = ev["user"]["username"].as_str().unwrap_or_default();
        if !user.starts_with("system:node:") {
            continue;
        }
        requests += 1;
        if ev["responseStatus"]["code"] == 403 && seen.insert(ev["auditID"].to_string()) {
            out.push(format!(
                "{} {} 403",
                ev["verb"].as_str().unwrap_or_default(),
                ev["requestURI"].as_str().unwrap_or_default()
            ));
        }
    }
    assert!(requests > 0, "no request of an agent in the audit log");
    out
}
