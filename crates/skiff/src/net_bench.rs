//! `skiff bench net`: the data path of a two-node `skiff dev cluster`.
//!
//! 1. Request rate and latency through a ClusterIP versus straight to the pod IP: wrk
//!    (Debian's) runs in a client pod's network namespace on node 1 against a busybox
//!    httpd pod on node 2, the two targets alternating, medians of each.
//! 2. Pod-to-pod TCP throughput across the nodes, with skiff's rules in force, versus the
//!    same veths, bridges and routes after skiff's nft tables are deleted in both nodes
//!    (their agents paused, so nothing puts them back while it runs).
//!
//! Everything runs inside the cluster's own network namespaces; the cluster is removed at
//! the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Debug, clap::Args)]
pub struct NetBenchArgs {
    /// Rounds of each measurement (the two sides alternate within a round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Bytes each throughput run sends (MiB).
    #[arg(long, default_value_t = 2048)]
    pub mib: u64,
}

fn skiff() -> Result<Command> {
    Ok(Command::new(
        std::env::current_exe().context("find the skiff binary")?,
    ))
}

struct Cluster {
    dir: PathBuf,
    state: serde_json::Value,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(mut c) = skiff() {
            let _ = c
                .args(["dev", "cluster", "down", "--data-dir"])
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig.yaml"))
            .args(args)
            .output()
            .context("run kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn apply(&self, manifest: &str) -> Result<()> {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig.yaml"))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(manifest.as_bytes())?;
        if !child.wait()?.success() {
            bail!("kubectl apply failed");
        }
        Ok(())
    }

    /// The pinned network namespace of pod `name` (on its node's data dir).
    fn pod_netns(&self, name: &str) -> Result<PathBuf> {
        let uid = self.kubectl(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"])?;
        let node = self.kubectl(&["get", "pod", name, "-o", "jsonpath={.spec.nodeName}"])?;
        let nodes = self.state["nodes"].as_array().context("nodes")?;
        let n = nodes
            .iter()
            .find(|n| n["name"].as_str() == Some(node.trim()))
            .context("the pod's node")?;
        let dir = PathBuf::from(n["data_dir"].as_str().context("data_dir")?);
        Ok(dir.join("pods").join(uid.trim()).join("ns/net"))
    }

    fn node_netns(&self, i: usize) -> Result<PathBuf> {
        let n = &self.state["nodes"][i];
        Ok(skiff_net::netlink::named_netns(
            n["netns"].as_str().context("netns")?,
        ))
    }
}

fn kubia_image(work: &Path) -> Result<PathBuf> {
    let src = ["examples/kubia", "../../examples/kubia"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("Dockerfile").exists())
        .context("examples/kubia not found: run from the project's root")?;
    let ctx = work.join("kubia");
    if !Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&ctx)
        .status()?
        .success()
    {
        bail!("copying {}", src.display());
    }
    std::fs::copy("/bin/busybox", ctx.join("busybox")).context("copy /bin/busybox")?;
    let store = work.join("images");
    let out = skiff()?
        .env("SKIFF_DATA_DIR", &store)
        .args(["image", "build", "-t", "kubia:1"])
        .arg(&ctx)
        .output()?;
    if !out.status.success() {
        bail!("building kubia: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(store)
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: skiff-node-2
  containers:
  - name: web
    image: kubia:1
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /srv && echo ok > /srv/index.html && exec httpd -f -p 8080 -h /srv"]
---
apiVersion: v1
kind: Pod
metadata: {name: sink}
spec:
  nodeName: skiff-node-2
  containers: [{name: c, image: kubia:1, imagePullPolicy: Never, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: skiff-node-1
  containers: [{name: c, image: kubia:1, imagePullPolicy: Never, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-direct}
spec:
  nodeName: skiff-node-1
  containers: [{name: c, image: kubia:1, imagePullPolicy: Never, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// One wrk run from the client pod's namespace: (requests/s, p50 latency in ms).
fn wrk(ns: &Path, url: &str, seconds: u64) -> Result<(f64, f64)> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c8", &format!("-d{seconds}s"), "--latency", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = skiff_net::devnet::spawn_in_netns(&mut cmd, ns)
        .context("start wrk (Debian's wrk; scripts/setup.sh installs it)")?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk printed no rate: {text}"))?;
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| parse_wrk_time(v.trim()))
        .unwrap_or(f64::NAN);
    Ok((rate, p50))
}

fn parse_wrk_time(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        _ => f64::NAN,
    }
}

/// Sends `mib` MiB from the client pod's namespace to a listener in the sink pod's;
/// Gbit/s.
fn throughput(from: &Path, to: &Path, to_ip: std::net::IpAddr, mib: u64) -> Result<f64> {
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = std::fs::File::open(to).context("open the sink pod's namespace")?;
    let server = std::thread::spawn(move || -> Result<u64> {
        nix::sched::setns(sink.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        let l = TcpListener::bind("0.0.0.0:5201")?;
        tx.send(())?;
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("the sink did not listen")?;
    let src = std::fs::File::open(from).context("open the client pod's namespace")?;
    let secs = std::thread::spawn(move || -> Result<f64> {
        nix::sched::setns(src.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(to_ip, 5201), Duration::from_secs(5))?;
        let buf = vec![0x5au8; 1 << 20];
        let start = Instant::now();
        for _ in 0..mib {
            s.write_all(&buf)?;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        Ok(start.elapsed().as_secs_f64())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("the sink panicked"))??;
    if got != mib << 20 {
        bail!("the sink got {got} bytes of {}", mib << 20);
    }
    Ok((mib << 20) as f64 * 8.0 / secs / 1e9)
}

fn agent_pids(state: &serde_json::Value) -> Vec<i32> {
    state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["agent_pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

fn nft_in(ns: &Path, script: &str) -> Result<()> {
    let mut cmd = Command::new("nft");
    cmd.args(script.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = skiff_net::devnet::spawn_in_netns(&mut cmd, ns)?.wait_with_output()?;
    if !out.status.success() {
        bail!("nft {script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub fn main(args: NetBenchArgs) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("skiff-bench-net-")
        .tempdir()?;
    let store = kubia_image(work.path())?;
    let dir = work.path().join("cluster");
    let st = skiff()?
        .args(["dev", "cluster", "-d", "--nodes", "2", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()?;
    if !st.success() {
        bail!("skiff dev cluster failed");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json"))?)?;
    let c = Cluster { dir, state };
    let st = skiff()?
        .env("SKIFF_DATA_DIR", &store)
        .args(["dev", "cluster", "load", "--data-dir"])
        .arg(&c.dir)
        .arg("kubia:1")
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("loading kubia on the nodes failed");
    }
    c.apply(MANIFEST)?;
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/web",
        "pod/sink",
        "pod/client",
        "pod/client-direct",
        "--timeout=120s",
    ])?;
    let cluster_ip = c.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    let web_ip = c.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"])?;
    let sink_ip: std::net::IpAddr = c
        .kubectl(&["get", "pod", "sink", "-o", "jsonpath={.status.podIP}"])?
        .trim()
        .parse()?;
    let client_ns = c.pod_netns("client")?;
    // The direct requests come from a pod of their own: the same client address and
    // ports to the same server would make one target's connections collide in conntrack
    // with the other's lingering ones (the reply tuple of a DNATed flow is the original
    // tuple of a direct one).
    let direct_ns = c.pod_netns("client-direct")?;
    // busybox httpd closes every connection: tens of thousands of connections a run. The
    // clients get the widest port range and reuse TIME_WAIT ports, so neither target
    // runs out of (or waits on) client ports.
    for path in [&client_ns, &direct_ns] {
        let ns = std::fs::File::open(path).context("open a client pod's namespace")?;
        std::thread::spawn(move || -> Result<()> {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")?;
            std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1")?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the sysctl thread panicked"))??;
    }
    let sink_ns = c.pod_netns("sink")?;
    // The proxy has programmed the Service once the ClusterIP answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while wrk(&client_ns, &format!("http://{}/", cluster_ip.trim()), 1)
        .map(|(r, _)| r <= 0.0)
        .unwrap_or(true)
    {
        if Instant::now() > deadline {
            bail!("the ClusterIP {} never answered", cluster_ip.trim());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "# skiff bench net: 2-node dev cluster; wrk -t1 -c8 -d{}s from a pod on node 1 to busybox httpd on node 2; {} rounds",
        args.seconds, args.rounds
    );
    let (mut via_svc, mut direct, mut lat_svc, mut lat_direct) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.rounds {
        let (r, l) = wrk(
            &client_ns,
            &format!("http://{}/", cluster_ip.trim()),
            args.seconds,
        )?;
        via_svc.push(r);
        lat_svc.push(l);
        let (r, l) = wrk(
            &direct_ns,
            &format!("http://{}:8080/", web_ip.trim()),
            args.seconds,
        )?;
        direct.push(r);
        lat_direct.push(l);
    }
    let (s, d) = (
        crate::bench::median(&mut via_svc),
        crate::bench::median(&mut direct),
    );
    println!(
        "request rate through the ClusterIP: {s:.0}/s (p50 {:.2} ms); straight to the pod IP: {d:.0}/s (p50 {:.2} ms); ratio {:.3} (target >= 0.9)",
        crate::bench::median(&mut lat_svc),
        crate::bench::median(&mut lat_direct),
        s / d
    );
    // Throughput: with the rules, then the same path with skiff's tables gone (agents
    // paused so they do not restore them), alternating.
    let pids = agent_pids(&c.state);
    let (mut with, mut without) = (vec![], vec![]);
    for _ in 0..args.rounds {
        with.push(throughput(&client_ns, &sink_ns, sink_ip, args.mib)?);
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
        let mut removed = Ok(());
        for i in 0..2 {
            let ns = c.node_netns(i)?;
            for t in ["skiff-net", "skiff-proxy"] {
                match nft_in(&ns, &format!("delete table ip {t}")) {
                    // Gone already (not yet put back after an earlier round).
                    Err(e) if e.to_string().contains("No such file or directory") => {}
                    Err(e) => removed = Err(e),
                    Ok(()) => {}
                }
            }
        }
        let r = removed.and_then(|()| throughput(&client_ns, &sink_ns, sink_ip, args.mib));
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        without.push(r?);
        // The agents put the tables back (the proxy at once, the pod network within 10 s)
        // before the next round.
        std::thread::sleep(Duration::from_secs(11));
    }
    let (w, wo) = (
        crate::bench::median(&mut with),
        crate::bench::median(&mut without),
    );
    println!(
        "pod-to-pod TCP across nodes ({} MiB): {w:.2} Gbit/s with skiff's rules; {wo:.2} Gbit/s on the same veths without them; ratio {:.3}",
        args.mib,
        w / wo
    );
    Ok(())
}
