//! `skiff bench`: benchmarks that run skiff and its peer side by side in one run,
//! alternating, and print medians and the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// `skiff runtime run` vs `runc run` of the `runc spec` bundle running /bin/true.
    Runtime {
        /// Measured runs of each runtime (after 2 warm-up runs each).
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// The peer runtime binary (anything with runc's command line, e.g. a
        /// `skiff-runtime` link to another skiff build, to compare two builds).
        #[arg(long, default_value = "runc")]
        peer: String,
        /// The binary whose `spec` writes the bundle's config.json (default: runc, so both
        /// sides run exactly what `runc spec` describes, whatever the peer).
        #[arg(long, default_value = "runc")]
        spec_from: String,
        /// Where the busybox-static binary is.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
    /// skopeo push+pull against skiff's registry vs docker-registry, and registry RSS
    /// during a 1 GiB blob push.
    Registry(crate::registry_bench::RegistryBenchArgs),
    /// `skiff image pull` (download + unpack) vs `skopeo copy` to an OCI dir + `umoci
    /// unpack`, from the same local registry.
    Pull(crate::registry_bench::PullBenchArgs),
    /// The embedded store vs a single-member etcd: concurrent writers, latency, watch delivery.
    Store(crate::store_cmd::BenchStore),
    /// Load + unpack of a ≥200 MB multi-layer image vs `umoci unpack` of the same layout.
    Unpack(crate::image_bench::UnpackArgs),
    /// `skiff run --rm IMAGE true` vs `runc run` of a prepared bundle of the same rootfs.
    Run(crate::image_bench::RunArgs),
    /// Rebuild of an unchanged 10-step Dockerfile (all cached).
    Rebuild(crate::image_bench::RebuildArgs),
    /// The API server on the embedded store vs on etcd: creates, LIST, watch delivery, RSS.
    Api(crate::api_bench::ApiBenchArgs),
    /// Pods bound per second end to end (server + scheduler) on N Node objects: basic,
    /// required anti-affinity and topology-spread phases; `--in-process` for the
    /// scheduling cycle alone.
    Scheduler(crate::scheduler_bench::SchedulerBenchArgs),
    /// A Deployment of N replicas on hollow nodes (server, scheduler and controller
    /// manager in one `skiff server`): create until all pods are Running and Ready, then a
    /// rolling update to a new image until complete; times, pods/s, server RSS.
    Controllers(crate::controllers_bench::ControllersBenchArgs),
    /// Pod start-up on one real node (server + standalone agent): one pod create →
    /// Running/Ready p50/p99, a Deployment's pods all Running, agent and per-pod memory.
    Pods(crate::pods_bench::PodsBenchArgs),
    /// The one-command cluster: `skiff server` cold start until its node is Ready and
    /// until a first kubia pod answers, server RSS idle and with kubia, binary size, HA
    /// failover on etcd.
    Server(crate::server_bench::ServerBenchArgs),
    /// The data path of a two-node dev cluster: request rate through a ClusterIP vs
    /// straight to the pod (wrk), pod-to-pod throughput with and without skiff's rules.
    Net(crate::net_bench::NetBenchArgs),
    /// The HPA on one real node: load start -> in the metrics -> scale-out decision ->
    /// new pods Ready, load end -> scale-in, against the scrape, sync and window
    /// periods; the metrics store's memory per pod.
    Autoscale(crate::autoscale_bench::AutoscaleBenchArgs),
    /// The service proxy with real nftables in a scratch netns: full sync time and size at
    /// 1,000 and 10,000 Services, one-endpoint change latency p50/p99 (direct and through
    /// the API server's watch) and its transaction size.
    Proxy(crate::proxy_bench::ProxyBenchArgs),
    /// Authorization cost (ConfigMap creates/s as an RBAC-checked service account vs as
    /// system:masters, with 1,000 Roles and RoleBindings) and custom-resource create/list
    /// throughput vs a built-in kind.
    Rbac(crate::rbac_bench::RbacBenchArgs),
}

pub fn main(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Runtime {
            runs,
            peer,
            spec_from,
            busybox,
        } => runtime(runs, &peer, &spec_from, &busybox),
        BenchCmd::Registry(args) => crate::registry_bench::main(args),
        BenchCmd::Pull(args) => crate::registry_bench::pull_main(args),
        BenchCmd::Store(b) => crate::store_cmd::bench(b),
        BenchCmd::Unpack(a) => crate::image_bench::unpack(a),
        BenchCmd::Run(a) => crate::image_bench::run(a),
        BenchCmd::Rebuild(a) => crate::image_bench::rebuild(a),
        BenchCmd::Api(a) => crate::api_bench::main(a),
        BenchCmd::Scheduler(a) => crate::scheduler_bench::main(a),
        BenchCmd::Controllers(a) => crate::controllers_bench::main(a),
        BenchCmd::Pods(a) => crate::pods_bench::main(a),
        BenchCmd::Server(a) => crate::server_bench::main(a),
        BenchCmd::Net(a) => crate::net_bench::main(a),
        BenchCmd::Autoscale(a) => crate::autoscale_bench::main(a),
        BenchCmd::Proxy(a) => crate::proxy_bench::main(a),
        BenchCmd::Rbac(a) => crate::rbac_bench::main(a),
    }
}

pub(crate) struct Sample {
    pub(crate) secs: f64,
    pub(crate) maxrss_kib: i64,
}

/// Run `cmd`, returning wall time and the peak RSS of it and its waited-for descendants.
pub(crate) fn measure(cmd: &mut Command) -> Result<Sample> {
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data that wait4 fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = start.elapsed().as_secs_f64();
    if r != pid {
        bail!("wait4 {cmd:?}: {}", std::io::Error::last_os_error());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed with wait status {status}");
    }
    std::mem::forget(child);
    Ok(Sample {
        secs,
        maxrss_kib: ru.ru_maxrss,
    })
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn make_bundle(dir: &Path, busybox: &Path, spec_from: &str) -> Result<()> {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(busybox, bin.join("busybox")).context("copy busybox")?;
    std::os::unix::fs::symlink("busybox", bin.join("true"))?;
    std::os::unix::fs::symlink("busybox", bin.join("sh"))?;
    // runc's own default spec, so both run exactly what `runc spec` describes.
    let st = Command::new(spec_from)
        .arg("spec")
        .current_dir(dir)
        .status()
        .with_context(|| format!("run {spec_from} spec"))?;
    if !st.success() {
        bail!("{spec_from} spec failed");
    }
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    v["process"]["args"] = serde_json::json!(["/bin/true"]);
    v["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&path, serde_json::to_vec_pretty(&v)?)?;
    Ok(())
}

fn runtime(runs: usize, peer: &str, spec_from: &str, busybox: &Path) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let me = std::env::current_exe().context("locate the skiff binary")?;
    let tmp = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        let bundle = tmp.join("bundle");
        make_bundle(&bundle, busybox, spec_from)?;
        let (skiff_root, peer_root) = (tmp.join("skiff-state"), tmp.join("peer-state"));
        let mut skiff = Vec::new();
        let mut other = Vec::new();
        for i in 0..runs + 2 {
            let id = format!("bench-{}-{i}", std::process::id());
            let mut skiff_cmd = Command::new(&me);
            skiff_cmd
                .args(["runtime", "--root"])
                .arg(&skiff_root)
                .args(["run", "-b"])
                .arg(&bundle)
                .arg(&id);
            let mut peer_cmd = Command::new(peer);
            peer_cmd
                .arg("--root")
                .arg(&peer_root)
                .args(["run", "-b"])
                .arg(&bundle)
                .arg(&id);
            // Alternate, and swap the order every round, so neither side always runs
            // right after the other's teardown.
            let (s, p) = if i % 2 == 0 {
                let s = measure(&mut skiff_cmd)?;
                (s, measure(&mut peer_cmd)?)
            } else {
                let p = measure(&mut peer_cmd)?;
                (measure(&mut skiff_cmd)?, p)
            };
            if i >= 2 {
                skiff.push(s);
                other.push(p);
            }
        }
        let mut st: Vec<f64> = skiff.iter().map(|s| s.secs * 1e3).collect();
        let mut pt: Vec<f64> = other.iter().map(|s| s.secs * 1e3).collect();
        let (sm, pm) = (median(&mut st), median(&mut pt));
        let srss = skiff.iter().map(|s| s.maxrss_kib).max().unwrap_or(0);
        let prss = other.iter().map(|s| s.maxrss_kib).max().unwrap_or(0);
        println!(
            "runtime run of the `{spec_from} spec` bundle with /bin/true, {runs} runs each, alternating (order swapped every round)"
        );
        println!(
            "{:<8} {:>12} {:>16}",
            "runtime", "median (ms)", "peak RSS (MiB)"
        );
        println!("{:<8} {:>12.2} {:>16.1}", "skiff", sm, srss as f64 / 1024.0);
        println!("{:<8} {:>12.2} {:>16.1}", peer, pm, prss as f64 / 1024.0);
        println!("ratio skiff/{peer}: {:.3}", sm / pm);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}
