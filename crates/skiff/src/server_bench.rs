//! `skiff bench server`: the one-command cluster as a user meets it. Per run, on a fresh
//! data dir: `skiff server` (store, API server, scheduler, controller manager, registry,
//! local agent with the pod network) from exec until its node is Ready; the kubia
//! Deployment (3 replicas, `examples/kubia/kubia.yaml`) from `kubectl apply` until a
//! first pod answers HTTP and until all three are Ready; the server's RSS idle and with
//! kubia running. Then the binary's size, and HA failover: two servers on one etcd, the
//! one leading kube-controller-manager killed (SIGKILL), until the other leads.
//!
//! No peer runs here (k3s, kind and k0s are not installed); README sets the figures
//! beside their published ones.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Debug, clap::Args)]
pub struct ServerBenchArgs {
    /// Cold starts measured.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// HA failovers measured (0: skip; needs Debian's etcd-server).
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// The kubia example (build context and manifest).
    #[arg(long, default_value = "examples/kubia")]
    kubia: PathBuf,
    /// The static busybox the kubia image is built from.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
}

struct Run {
    ready: Duration,
    first_answer: Duration,
    all_ready: Duration,
    rss_idle_kib: u64,
    rss_kubia_kib: u64,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("find a free loopback port")?
        .port())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn skiff() -> Result<PathBuf> {
    std::env::current_exe().context("find the skiff binary")
}

fn run_ok(mut c: Command, what: &str) -> Result<String> {
    let o = c.output().with_context(|| format!("run {what}"))?;
    if !o.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(kubeconfig).args(args);
    c
}

/// A server child whose standard error lines arrive on a channel.
struct Server {
    child: Child,
    lines: Receiver<String>,
    dir: PathBuf,
    clean_args: Vec<String>,
}

impl Server {
    fn spawn(dir: &Path, args: &[String]) -> Result<Server> {
        let mut child = Command::new(skiff()?)
            .arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start skiff server")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Ok(Server {
            child,
            lines,
            dir: dir.to_path_buf(),
            clean_args: Vec::new(),
        })
    }

    fn until_line(&self, needle: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(()),
                Ok(l) => seen.push(l),
                Err(_) => bail!(
                    "the server did not say {needle:?} within {within:?}; it said:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(exe) = skiff() {
            let _ = Command::new(exe)
                .args(["uninstall", "--purge", "--data-dir"])
                .arg(&self.dir)
                .args(&self.clean_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP GET of `/` on a pod; true when kubia answered.
fn answers(ip: &str) -> bool {
    let Ok(addr) = format!("{ip}:8080").parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("You've hit")
}

fn one_run(args: &ServerBenchArgs, work: &Path, images: &Path, i: usize) -> Result<Run> {
    let id = std::process::id() % 10_000;
    let dir = work.join(format!("run-{i}"));
    let registry = format!("127.0.0.1:{}", free_port()?);
    let net = [
        "--cgroup-parent".to_string(),
        format!("/skiff-bench-server-{id}-{i}"),
        "--bridge-name".into(),
        format!("skbs{id}"),
        "--nft-table-prefix".into(),
        format!("skiff-bs{id}"),
        "--cluster-cidr".into(),
        "10.213.0.0/16".into(),
        "--service-cluster-ip-range".into(),
        "10.214.0.0/16".into(),
    ];
    let mut flags: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--registry-listen".into(),
        registry.clone(),
        "--kubelet-port".into(),
        "0".into(),
        "--cluster-dns".into(),
        "10.214.0.10".into(),
        "--kube-proxy-metrics-bind-address".into(),
        String::new(),
    ];
    flags.extend(net.iter().cloned());
    let t0 = Instant::now();
    let mut server = Server::spawn(&dir, &flags)?;
    server.clean_args = net.to_vec();
    server.until_line("Use it with", Duration::from_secs(60))?;
    let ready = t0.elapsed();
    let kubeconfig = dir.join("kubeconfig.yaml");

    // The image goes to this server's registry (the push is not timed).
    let image = format!("{registry}/kubia:v1");
    let mut c = Command::new(skiff()?);
    c.env("SKIFF_DATA_DIR", images)
        .args(["image", "tag", "kubia-bench:v1", &image]);
    run_ok(c, "skiff image tag")?;
    let mut c = Command::new(skiff()?);
    c.env("SKIFF_DATA_DIR", images)
        .args(["image", "push", &image]);
    run_ok(c, "skiff image push")?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle_kib = rss_kib(server.child.id());

    let manifest = std::fs::read_to_string(args.kubia.join("kubia.yaml"))
        .with_context(|| format!("read {}", args.kubia.join("kubia.yaml").display()))?
        .replace("127.0.0.1:5000/kubia:v1", &image);
    let t1 = Instant::now();
    let mut apply = kubectl(&kubeconfig, &["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run kubectl apply")?;
    apply
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(manifest.as_bytes())?;
    let o = apply.wait_with_output()?;
    if !o.status.success() {
        bail!("kubectl apply: {}", String::from_utf8_lossy(&o.stderr));
    }
    let deadline = t1 + Duration::from_secs(60);
    let ips = |path: &str| -> String {
        kubectl(
            &kubeconfig,
            &[
                "get",
                "pods",
                "-l",
                "app=kubia",
                "-o",
                &format!("jsonpath={path}"),
            ],
        )
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
    };
    let first_answer = loop {
        if ips("{.items[*].status.podIP}")
            .split_whitespace()
            .any(answers)
        {
            break t1.elapsed();
        }
        if Instant::now() > deadline {
            bail!("no kubia pod answered within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let all_ready = loop {
        let ready = ips("{.items[*].status.conditions[?(@.type==\"Ready\")].status}");
        if ready.split_whitespace().filter(|s| *s == "True").count() == 3 {
            break t1.elapsed();
        }
        if Instant::now() > deadline {
            bail!("the 3 kubia pods were not Ready within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_secs(5));
    let rss_kubia_kib = rss_kib(server.child.id());
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()?;
    let _ = server.child.wait();
    Ok(Run {
        ready,
        first_answer,
        all_ready,
        rss_idle_kib,
        rss_kubia_kib,
    })
}

/// Two servers on one etcd: kill the one leading kube-controller-manager, time until
/// the other leads it (its Lease renewed by the survivor).
fn failover(work: &Path, i: usize) -> Result<Duration> {
    let etcd = crate::store_cmd::EtcdPeer::start(work)?;
    let eps = etcd.endpoints().join(",");
    let mut servers = Vec::new();
    for s in 0..2 {
        let dir = work.join(format!("ha-{i}-{s}"));
        let flags: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--disable-agent",
            "--disable-registry",
            "--datastore-endpoint",
            &eps,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = Server::spawn(&dir, &flags)?;
        server.until_line("Use it with", Duration::from_secs(30))?;
        servers.push(server);
    }
    let leads = |s: &Server| -> bool {
        kubectl(
            &s.dir.join("kubeconfig.yaml"),
            &["get", "--raw", "/metrics"],
        )
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                l.starts_with("leader_election_master_status")
                    && l.contains("kube-controller-manager")
                    && l.trim_end().ends_with(" 1")
            })
        })
        .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(i) = (0..2).find(|&i| leads(&servers[i])) {
            break i;
        }
        if Instant::now() > deadline {
            bail!("neither server leads kube-controller-manager after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let t0 = Instant::now();
    servers[leader].child.kill()?;
    let _ = servers[leader].child.wait();
    let survivor = &servers[1 - leader];
    let deadline = t0 + Duration::from_secs(60);
    loop {
        if leads(survivor) {
            return Ok(t0.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the surviving server did not take over within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn main(args: ServerBenchArgs) -> Result<()> {
    crate::preflight::require_root("skiff bench server", "")?;
    let work = std::env::temp_dir().join(format!("skiff-bench-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let result = bench(&args, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn bench(args: &ServerBenchArgs, work: &Path) -> Result<()> {
    let size = std::fs::metadata(skiff()?)?.len();
    // kubia, built once into a store of the bench's own.
    let ctx = work.join("kubia");
    let mut c = Command::new("cp");
    c.arg("-r").arg(&args.kubia).arg(&ctx);
    run_ok(c, "copy the kubia example")?;
    std::fs::copy(&args.busybox, ctx.join("busybox"))
        .with_context(|| format!("copy {}", args.busybox.display()))?;
    let images = work.join("images");
    let mut c = Command::new(skiff()?);
    c.env("SKIFF_DATA_DIR", &images)
        .args(["image", "build", "-t", "kubia-bench:v1"])
        .arg(&ctx);
    run_ok(c, "skiff image build")?;

    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = one_run(args, work, &images, i)?;
        eprintln!(
            "run {i}: node Ready {:.0} ms; first pod answering {:.0} ms after apply, 3 Ready {:.0} ms; RSS idle {} MiB, with kubia {} MiB",
            r.ready.as_secs_f64() * 1e3,
            r.first_answer.as_secs_f64() * 1e3,
            r.all_ready.as_secs_f64() * 1e3,
            r.rss_idle_kib / 1024,
            r.rss_kubia_kib / 1024
        );
        runs.push(r);
    }
    let mut failovers = Vec::new();
    for i in 0..args.failovers {
        let t = failover(work, i)?;
        eprintln!("failover {i}: {:.1} s", t.as_secs_f64());
        failovers.push(t.as_secs_f64());
    }
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    if !runs.is_empty() {
        println!(
        "server: cold start to node Ready {:.0} ms (median of {}; target ≤ 1000 ms; k3s ~50 s to its default pods Ready, kind 12–17 s)",
        m(|r| r.ready.as_secs_f64() * 1e3),
        runs.len()
    );
        println!(
        "server: first kubia pod answering {:.0} ms after kubectl apply (target ≤ 2000 ms); all 3 Ready {:.0} ms",
        m(|r| r.first_answer.as_secs_f64() * 1e3),
        m(|r| r.all_ready.as_secs_f64() * 1e3)
    );
        println!(
        "server: RSS idle {:.0} MiB, with the kubia Deployment {:.0} MiB (target ≤ 150 MB; k3s ~1.6 GB with a workload, k0s controller 510 MB)",
        m(|r| r.rss_idle_kib as f64 / 1024.0),
        m(|r| r.rss_kubia_kib as f64 / 1024.0)
    );
    }
    println!("server: binary {:.1} MiB", size as f64 / (1 << 20) as f64);
    if !failovers.is_empty() {
        println!(
            "server: HA failover (leader's server killed → the other leads kube-controller-manager) {:.1} s (median of {}; target ≤ 15 s)",
            median(failovers.clone()),
            failovers.len()
        );
    }
    Ok(())
}
