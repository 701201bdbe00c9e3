//! `skiff server` as one command: what it refuses before it starts anything, the usage it
//! prints once its node is Ready, its built-in registry, how it exits (pods kept, or
//! stopped with `--stop-pods-on-exit`), and `skiff uninstall --purge`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::common::{kubectl_path, run, Out, SKIFF, VERSIONS};
use crate::node::{build_kubia, wait};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn server(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(SKIFF);
    c.arg("server").arg("--data-dir").arg(dir).args(args);
    c
}

/// Runs a `skiff server` that must refuse to start.
#[track_caller]
fn refused(c: Command, needles: &[&str]) -> Out {
    let o = run(c, None);
    assert_ne!(o.code, 0, "the server started: {o:#?}");
    for n in needles {
        assert!(o.stderr.contains(n), "no {n:?} in: {}", o.stderr);
    }
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o
}

#[test]
fn bad_input_is_refused_before_anything_starts() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");

    // The API's port in use: the holder is named, the flag that moves it too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let me = std::process::id().to_string();
    refused(
        server(
            &dir,
            &[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--disable-agent",
                "--disable-registry",
            ],
        ),
        &[
            &format!("the API server: port {port} is already in use by"),
            &format!("(pid {me})"),
            "--listen",
        ],
    );
    // The registry's port in use.
    refused(
        server(
            &dir,
            &[
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--registry-listen",
                &format!("127.0.0.1:{port}"),
            ],
        ),
        &[
            &format!("the built-in registry: port {port} is already in use"),
            "--registry-listen",
            "--disable-registry",
        ],
    );
    // The kubelet's port in use.
    refused(
        server(
            &dir,
            &[
                "--listen",
                "127.0.0.1:0",
                "--disable-registry",
                "--node-ip",
                "127.0.0.1",
                "--kubelet-port",
                &port.to_string(),
            ],
        ),
        &[
            &format!("the kubelet API: port {port} is already in use"),
            "--kubelet-port",
        ],
    );
    drop(taken);
    assert!(!dir.exists(), "a refused server created its data dir");

    // Not root: pods need it; the control plane alone does not.
    let o = {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            SKIFF,
            "server",
            "--listen",
            "127.0.0.1:0",
            "--disable-registry",
            "--data-dir",
        ])
        .arg(&dir);
        run(c, None)
    };
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(
        o.stderr.contains("must run as root") && o.stderr.contains("--disable-agent"),
        "{}",
        o.stderr
    );
    assert!(!dir.exists(), "a refused server created its data dir");

    // No nftables: the pod network and Services cannot be programmed.
    let mut c = server(&dir, &["--listen", "127.0.0.1:0", "--disable-registry"]);
    c.env("PATH", work.path().join("empty-path"));
    refused(c, &["no working `nft` command", "apt-get install nftables"]);
    assert!(!dir.exists(), "a refused server created its data dir");

    // A data dir another running server holds.
    let running = crate::common::Server::start_with(&[]);
    let o = refused(
        server(
            running.dir.path(),
            &[
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--disable-registry",
            ],
        ),
        &[
            "is in use by another skiff server",
            &format!("(pid {})", running.child.id()),
            "--data-dir",
        ],
    );
    assert!(!o.stderr.contains("API on"), "{}", o.stderr);
    // The running server was not disturbed.
    running.kubectl(VERSIONS[1], &["get", "ns", "default"]).ok();

    // An agent with a wrong join token ends at once, saying so (no retry loop).
    let agent_dir = work.path().join("agent");
    let mut c = Command::new(SKIFF);
    c.args([
        "agent",
        "--server",
        &running.url,
        "--token",
        "not-the-token",
        "--ca-file",
    ])
    .arg(running.pki("ca.crt"))
    .args([
        "--kubelet-port",
        "0",
        "--disable-pod-network",
        "--node-name",
        "wrong-token",
        "--data-dir",
    ])
    .arg(&agent_dir);
    let o = run(c, None);
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(
        o.stderr.contains("refused the bootstrap token")
            && o.stderr.contains("DATA/token")
            && !o.stderr.contains("starting again"),
        "{}",
        o.stderr
    );
    // Node labels NodeRestriction would refuse the node are refused before it joins.
    let mut c = Command::new(SKIFF);
    c.args([
        "agent",
        "--server",
        &running.url,
        "--token",
        &running.token(),
        "--ca-file",
    ])
    .arg(running.pki("ca.crt"))
    .args([
        "--kubelet-port",
        "0",
        "--disable-pod-network",
        "--node-name",
        "labelled",
        "--node-labels",
        "disk=ssd,node-role.kubernetes.io/worker=",
        "--data-dir",
    ])
    .arg(work.path().join("labelled"));
    let o = run(c, None);
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(
        o.stderr
            .contains("--node-labels [\"node-role.kubernetes.io/worker\"]")
            && o.stderr.contains("kubectl label node"),
        "{}",
        o.stderr
    );
    let nodes = running
        .kubectl(VERSIONS[1], &["get", "nodes", "-o", "name"])
        .ok();
    assert!(nodes.stdout.trim().is_empty(), "{nodes:?}");

    // Bad flags are refused before the data dir is made.
    refused(
        server(
            &dir,
            &[
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--log-format",
                "xml",
            ],
        ),
        &["--log-format"],
    );
    refused(
        server(
            &dir,
            &[
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--registry-listen",
                "localhost",
            ],
        ),
        &["--registry-listen"],
    );
    assert!(!dir.exists(), "a refused server created its data dir");
}

/// A `skiff server` with its agent and registry whose standard error a test reads.
pub(crate) struct Running {
    pub(crate) child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
    pub(crate) dir: PathBuf,
}

impl Running {
    pub(crate) fn start(dir: &Path, args: &[&str]) -> Running {
        let mut child = server(dir, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            log: Vec::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// Reads standard error until a line contains `needle`; returns it.
    #[track_caller]
    pub(crate) fn until_line(&mut self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {secs} s; the server said:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    fn k(&self, args: &[&str]) -> Out {
        let mut c = Command::new(kubectl_path(VERSIONS[1]));
        c.arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig.yaml"))
            .args(args);
        run(c, None)
    }

    /// Sends `signal` and waits for the exit.
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit on {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PIDs of processes whose command line contains `needle` and whose cgroup is under
/// `cgroup` (this test's pods only).
pub(crate) fn pids_in(cgroup: &str, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cmd.contains(needle) && cg.contains(cgroup) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn one_command_serves_a_registry_says_how_to_use_it_keeps_pods_on_exit_and_uninstalls() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let registry = format!("127.0.0.1:{}", free_port());
    let cgroup = format!("/skiff-test-quick-{}", std::process::id());
    let started = Instant::now();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--registry-listen",
        registry.as_str(),
        "--kubelet-port",
        "0",
        "--cgroup-parent",
        cgroup.as_str(),
        "--disable-pod-network",
        "--eviction-hard",
        "",
        "--image-gc-high-threshold",
        "100",
    ];
    let mut s = Running::start(&dir, &args);
    // The usage comes once the node is Ready, and says how to use the cluster.
    let usage = s.until_line("Use it with", 60);
    let kubeconfig = dir.join("kubeconfig.yaml");
    assert!(
        usage.contains(&format!(
            "export KUBECONFIG={}; kubectl get nodes",
            kubeconfig.display()
        )),
        "{usage}"
    );
    let nodes = s.k(&["get", "nodes", "--no-headers"]).ok().stdout;
    assert!(
        nodes.contains(" Ready "),
        "usage printed before the node was Ready: {nodes}"
    );
    s.until_line("push images to the built-in registry", 5);
    s.until_line("listens on loopback only", 5);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    // Quiet by default: a handful of lines, no debug noise, no colour codes in a file.
    assert!(
        s.log.len() <= 15
            && s.log
                .iter()
                .all(|l| !l.contains("DEBUG") && !l.contains('\u{1b}')),
        "{}",
        s.log.join("\n")
    );

    // The built-in registry takes a push; a pod runs from it.
    let image = format!("{registry}/kubia:v1");
    build_kubia(work.path(), &image);
    s.k(&["run", "web", "--image", &image]).ok();
    wait("pod web Running", 60, || {
        let o = s.k(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]);
        (o.stdout == "Running").then_some(())
    });
    let httpd = "httpd -f -v -p 8080";
    let before = pids_in(&cgroup, httpd);
    assert_eq!(before.len(), 1, "{before:?}");

    // Ctrl-C: the server exits 0 and the pod keeps running.
    let status = s.stop("-INT");
    assert!(status.success(), "{status:?}\n{}", s.log.join("\n"));
    assert_eq!(
        pids_in(&cgroup, httpd),
        before,
        "the pod did not outlive the server"
    );

    // The next start adopts it (same process, no restart) and keeps every object.
    let mut s = Running::start(&dir, &args);
    s.until_line("Use it with", 60);
    wait("pod web Running after the restart", 30, || {
        let o = s.k(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]);
        (o.stdout == "Running").then_some(())
    });
    assert_eq!(pids_in(&cgroup, httpd), before, "the pod was not adopted");
    let restarts = s
        .k(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .ok()
        .stdout;
    assert_eq!(restarts, "0");

    // --stop-pods-on-exit: SIGTERM stops them with the server.
    let status = s.stop("-TERM");
    assert!(status.success());
    let mut with_stop: Vec<&str> = args.to_vec();
    with_stop.push("--stop-pods-on-exit");
    let mut s = Running::start(&dir, &with_stop);
    s.until_line("Use it with", 60);
    wait("pod web Running again", 30, || {
        let o = s.k(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]);
        (o.stdout == "Running").then_some(())
    });
    assert!(s.stop("-TERM").success());
    assert!(
        pids_in(&cgroup, httpd).is_empty(),
        "--stop-pods-on-exit left the pod running"
    );

    // `skiff uninstall --purge`: nothing of it is left, the data dir neither.
    let mut c = Command::new(SKIFF);
    c.args([
        "uninstall",
        "--purge",
        "--disable-pod-network",
        "--cgroup-parent",
        &cgroup,
        "--data-dir",
    ])
    .arg(&dir);
    run(c, None).ok();
    assert!(!dir.exists(), "--purge left the data dir");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.to_string_lossy().to_string()),
        "mounts left under {}",
        dir.display()
    );
    assert!(
        !Path::new("/sys/fs/cgroup")
            .join(cgroup.trim_start_matches('/'))
            .exists(),
        "cgroup {cgroup} left"
    );
}
