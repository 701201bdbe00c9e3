//! `skiff bench registry`: skopeo pushes then pulls a multi-layer image against skiff's
//! registry and against distribution (Debian's docker-registry), alternating, each run on
//! fresh, empty registries; then the registries' peak RSS while a 1 GiB blob is pushed.
//! skopeo's own work bounds the wall time on both sides, so the registries' own cost is
//! reported too: each server's CPU seconds (user + system, from /proc) per GiB pushed and
//! per GiB pulled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::Digest as _;

#[derive(Debug, clap::Args)]
pub struct RegistryBenchArgs {
    /// Measured push+pull rounds per registry.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Layers in the test image.
    #[arg(long, default_value_t = 5)]
    layers: usize,
    /// Total size of the layers, MiB (random, so compression does not shrink it).
    #[arg(long, default_value_t = 256)]
    total_mib: usize,
    /// Size of the blob pushed while watching RSS, MiB.
    #[arg(long, default_value_t = 1024)]
    rss_blob_mib: usize,
    /// Pushes of that blob per registry (alternating; medians reported).
    #[arg(long, default_value_t = 3)]
    rss_runs: usize,
    /// The peer registry binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    peer: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Skiff,
    Peer,
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(which: Which, args: &RegistryBenchArgs, data: &Path) -> Result<Server> {
        std::fs::create_dir_all(data)?;
        match which {
            Which::Skiff => {
                let me = std::env::current_exe().context("locate the skiff binary")?;
                let mut child = Command::new(me)
                    .args(["registry", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
                    .arg(data)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("start skiff registry serve")?;
                let out = child.stdout.take().context("skiff registry stdout")?;
                let mut line = String::new();
                BufReader::new(out).read_line(&mut line)?;
                let addr = line
                    .trim()
                    .rsplit("://")
                    .next()
                    .and_then(|a| a.parse().ok())
                    .with_context(|| format!("unexpected first line from skiff: {line:?}"))?;
                Ok(Server { child, addr })
            }
            Which::Peer => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                let cfg = data.join("config.yml");
                std::fs::write(
                    &cfg,
                    format!(
                        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
                        data.join("store").display()
                    ),
                )?;
                let child = Command::new(&args.peer)
                    .arg("serve")
                    .arg(&cfg)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .with_context(|| format!("start {}", args.peer.display()))?;
                let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
                let s = Server { child, addr };
                let deadline = Instant::now() + Duration::from_secs(20);
                while TcpStream::connect(addr).is_err() {
                    if Instant::now() > deadline {
                        bail!("{} did not start listening", args.peer.display());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(s)
            }
        }
    }

    /// Peak resident set size so far (VmHWM), MiB.
    fn peak_rss_mib(&self) -> f64 {
        proc_status_kib(self.child.id(), "VmHWM:") as f64 / 1024.0
    }

    /// CPU time the server has used so far, all threads, user + system, seconds.
    fn cpu_secs(&self) -> Result<f64> {
        proc_cpu_secs(self.child.id())
    }
}

/// utime + stime of `pid` from /proc/PID/stat (fields 14 and 15, in clock ticks).
fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected /proc/{pid}/stat: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let ticks = |field: usize| -> Result<u64> {
        fields
            .get(field - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {field} in /proc/{pid}/stat: {stat:?}"))
    };
    // SAFETY: sysconf only reads a system constant; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok((ticks(14)? + ticks(15)?) as f64 / hz as f64)
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn sh(script: &str, args: &[&Path]) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .output()
        .context("run sh")?;
    if !out.status.success() {
        bail!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An OCI layout with `layers` gzipped tar layers of random data, tagged `bench`.
fn make_image(dir: &Path, layers: usize, total_mib: usize) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let per = (total_mib * 1024 * 1024).div_ceil(layers.max(1));
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for i in 0..layers {
        let work = dir.join(format!("layer{i}"));
        std::fs::create_dir_all(&work)?;
        // One script per layer: random file, tar, hash, gzip -1, hash.
        let out = sh(
            &format!(
                "set -e; cd \"$1\"; head -c {per} /dev/urandom > data{i}; tar -cf layer.tar data{i}; \
                 sha256sum layer.tar | cut -d' ' -f1; gzip -1 -n layer.tar; sha256sum layer.tar.gz | cut -d' ' -f1; stat -c %s layer.tar.gz"
            ),
            &[&work],
        )?;
        let mut it = out.lines();
        let (diff, gz, size) = (
            it.next().context("diff id")?.to_string(),
            it.next().context("digest")?.to_string(),
            it.next().context("size")?.parse::<u64>()?,
        );
        std::fs::rename(work.join("layer.tar.gz"), blobs.join(&gz))?;
        std::fs::remove_dir_all(&work)?;
        diff_ids.push(format!("sha256:{diff}"));
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{gz}"), "size": size,
        }));
    }
    let write = |data: &[u8]| -> Result<(String, usize)> {
        let d = hex::encode(sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&d), data)?;
        Ok((format!("sha256:{d}"), data.len()))
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let (cd, cs) = write(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    }))?;
    let (md, ms) = write(&manifest)?;
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                "annotations": {"org.opencontainers.image.ref.name": "bench"}}],
        }))?,
    )?;
    std::fs::write(
        dir.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )?;
    Ok(())
}

fn skopeo_copy(src: &str, dest: &str) -> Result<f64> {
    let start = Instant::now();
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .args([src, dest])
        .stdin(Stdio::null())
        .output()
        .context("run skopeo (Debian package skopeo)")?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "skopeo copy {src} {dest}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(secs)
}

/// Pushes `mib` MiB as one blob with POST then a single streamed PUT; returns seconds.
fn push_big_blob(addr: SocketAddr, mib: usize) -> Result<f64> {
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let chunk =
        |i: usize, block: &mut Vec<u8>| block[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let mut h = sha2::Sha256::new();
    for i in 0..mib {
        chunk(i, &mut block);
        h.update(&block);
    }
    let digest = format!("sha256:{}", hex::encode(h.finalize()));
    let (status, head) = request(addr, &format!("POST /v2/rss/blobs/uploads/ HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), |_| Ok(()))?;
    if status != 202 {
        bail!("starting an upload answered {status}");
    }
    let loc = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .context("no Location")?;
    let path = &loc[loc.find("/v2/").context("Location without /v2/")?..];
    let sep = if path.contains('?') { '&' } else { '?' };
    let len = mib << 20;
    let start = Instant::now();
    let (status, _) = request(
        addr,
        &format!("PUT {path}{sep}digest={digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
        |s| {
            for i in 0..mib {
                chunk(i, &mut block);
                s.write_all(&block)?;
            }
            Ok(())
        },
    )?;
    if status != 201 {
        bail!("completing the 1 GiB upload answered {status}");
    }
    Ok(start.elapsed().as_secs_f64())
}

fn request(
    addr: SocketAddr,
    head: &str,
    body: impl FnOnce(&mut TcpStream) -> std::io::Result<()>,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(head.as_bytes())?;
    body(&mut s)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, text))
}

pub fn main(args: RegistryBenchArgs) -> Result<()> {
    if args.runs == 0 || args.layers == 0 {
        bail!("--runs and --layers must be at least 1");
    }
    let tmp = std::env::temp_dir().join(format!("skiff-bench-registry-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run(&args, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run(args: &RegistryBenchArgs, tmp: &Path) -> Result<()> {
    let image = tmp.join("image");
    eprintln!(
        "making a {}-layer, {} MiB image…",
        args.layers, args.total_mib
    );
    make_image(&image, args.layers, args.total_mib)?;
    let src = format!("oci:{}:bench", image.display());
    // What a push sends and a pull fetches: every blob (layers, config) and the manifest.
    let image_bytes: u64 = std::fs::read_dir(image.join("blobs/sha256"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let gib = image_bytes as f64 / (1u64 << 30) as f64;
    let mut push = [Vec::new(), Vec::new()];
    let mut pull = [Vec::new(), Vec::new()];
    let mut push_cpu = [Vec::new(), Vec::new()];
    let mut pull_cpu = [Vec::new(), Vec::new()];
    let mut rss: [f64; 2] = [0.0, 0.0];
    for i in 0..args.runs {
        // Alternate who goes first, so neither always gets the warmer cache.
        let order = if i % 2 == 0 {
            [Which::Skiff, Which::Peer]
        } else {
            [Which::Peer, Which::Skiff]
        };
        for which in order {
            let k = which as usize;
            let data = tmp.join(format!("data-{k}-{i}"));
            let server = Server::start(which, args, &data)?;
            let repo = format!("docker://{}/bench/image:v1", server.addr);
            let c0 = server.cpu_secs()?;
            let p = skopeo_copy(&src, &repo)?;
            let c1 = server.cpu_secs()?;
            let out = tmp.join(format!("pulled-{k}-{i}"));
            let q = skopeo_copy(&repo, &format!("oci:{}:v1", out.display()))?;
            let c2 = server.cpu_secs()?;
            push_cpu[k].push((c1 - c0) / gib);
            pull_cpu[k].push((c2 - c1) / gib);
            rss[k] = rss[k].max(server.peak_rss_mib());
            drop(server);
            let _ = std::fs::remove_dir_all(&data);
            let _ = std::fs::remove_dir_all(&out);
            eprintln!(
                "run {i} {which:?}: push {p:.2} s ({:.2} CPU s), pull {q:.2} s ({:.2} CPU s)",
                c1 - c0,
                c2 - c1
            );
            push[k].push(p);
            pull[k].push(q);
        }
    }
    let mut total: [Vec<f64>; 2] = [
        push[0].iter().zip(&pull[0]).map(|(a, b)| a + b).collect(),
        push[1].iter().zip(&pull[1]).map(|(a, b)| a + b).collect(),
    ];
    let med = |v: &mut Vec<f64>| median(v);
    let (sp, pp) = (med(&mut push[0]), med(&mut push[1]));
    let (sq, pq) = (med(&mut pull[0]), med(&mut pull[1]));
    let (st, pt) = (med(&mut total[0]), med(&mut total[1]));
    println!(
        "skopeo push then pull of a {}-layer {} MiB image, {} runs each, alternating, fresh registries",
        args.layers, args.total_mib, args.runs
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>14}",
        "registry", "push (s)", "pull (s)", "total (s)", "peak RSS (MiB)"
    );
    println!(
        "{:<16} {:>10.2} {:>10.2} {:>10.2} {:>14.1}",
        "skiff", sp, sq, st, rss[0]
    );
    println!(
        "{:<16} {:>10.2} {:>10.2} {:>10.2} {:>14.1}",
        "docker-registry", pp, pq, pt, rss[1]
    );
    println!(
        "ratio skiff/docker-registry (push+pull medians): {:.3}",
        st / pt
    );

    println!(
        "\nthe registry's own cost: server CPU seconds (user + system, /proc/PID/stat) per GiB \
         ({:.0} MiB pushed, then pulled, per run), medians",
        image_bytes as f64 / 1048576.0
    );
    let cpu: Vec<[f64; 2]> = push_cpu
        .iter_mut()
        .zip(pull_cpu.iter_mut())
        .map(|(push, pull)| [median(push), median(pull)])
        .collect();
    println!(
        "{:<16} {:>14} {:>14} {:>14}",
        "registry", "push CPU s/GiB", "pull CPU s/GiB", "both CPU s/GiB"
    );
    for (k, name) in ["skiff", "docker-registry"].iter().enumerate() {
        println!(
            "{name:<16} {:>14.3} {:>14.3} {:>14.3}",
            cpu[k][0],
            cpu[k][1],
            (cpu[k][0] + cpu[k][1]) / 2.0
        );
    }
    println!(
        "ratio skiff/docker-registry CPU per GiB: push {:.3}, pull {:.3}, both {:.3} (target <= 0.5)",
        cpu[0][0] / cpu[1][0],
        cpu[0][1] / cpu[1][1],
        (cpu[0][0] + cpu[0][1]) / (cpu[1][0] + cpu[1][1])
    );

    if args.rss_runs == 0 {
        return Ok(());
    }
    println!(
        "\n{} MiB blob pushed in one streamed PUT: registry peak RSS, {} runs each, alternating, medians",
        args.rss_blob_mib, args.rss_runs
    );
    let mut peak = [Vec::new(), Vec::new()];
    let mut idle = [Vec::new(), Vec::new()];
    let mut rate = [Vec::new(), Vec::new()];
    for i in 0..args.rss_runs {
        let order = if i % 2 == 0 {
            [Which::Skiff, Which::Peer]
        } else {
            [Which::Peer, Which::Skiff]
        };
        for which in order {
            let k = which as usize;
            let data = tmp.join(format!("rss-{k}-{i}"));
            let server = Server::start(which, args, &data)?;
            idle[k].push(server.peak_rss_mib());
            let secs = push_big_blob(server.addr, args.rss_blob_mib)?;
            peak[k].push(server.peak_rss_mib());
            rate[k].push(args.rss_blob_mib as f64 / secs);
            drop(server);
            let _ = std::fs::remove_dir_all(&data);
        }
    }
    for (k, name) in ["skiff", "docker-registry"].iter().enumerate() {
        println!(
            "{name:<16} peak RSS {:>7.1} MiB (idle {:.1} MiB), {:.0} MiB/s",
            median(&mut peak[k]),
            median(&mut idle[k]),
            median(&mut rate[k])
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PullBenchArgs {
    /// Measured pulls per tool.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Layers in the test image.
    #[arg(long, default_value_t = 5)]
    layers: usize,
    /// Total size of the layers, MiB (random, so compression does not shrink it).
    #[arg(long, default_value_t = 256)]
    total_mib: usize,
}

/// `skiff bench pull`: one skiff registry holding a skopeo-pushed image; then, alternating,
/// `skiff image pull` into a fresh data dir vs `skopeo copy` into a fresh OCI dir followed
/// by `umoci unpack` of it. Both download, verify and unpack every layer.
pub fn pull_main(args: PullBenchArgs) -> Result<()> {
    if args.runs == 0 || args.layers == 0 {
        bail!("--runs and --layers must be at least 1");
    }
    let tmp = std::env::temp_dir().join(format!("skiff-bench-pull-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = pull_run(&args, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn timed(cmd: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(secs)
}

fn pull_run(args: &PullBenchArgs, tmp: &Path) -> Result<()> {
    let image = tmp.join("image");
    eprintln!(
        "making a {}-layer, {} MiB image…",
        args.layers, args.total_mib
    );
    make_image(&image, args.layers, args.total_mib)?;
    let reg_args = RegistryBenchArgs {
        runs: 1,
        layers: args.layers,
        total_mib: args.total_mib,
        rss_blob_mib: 0,
        rss_runs: 0,
        peer: PathBuf::new(),
    };
    let server = Server::start(Which::Skiff, &reg_args, &tmp.join("registry"))?;
    let reference = format!("{}/bench/image:v1", server.addr);
    skopeo_copy(
        &format!("oci:{}:bench", image.display()),
        &format!("docker://{reference}"),
    )?;
    let _ = std::fs::remove_dir_all(&image);
    let me = std::env::current_exe().context("locate the skiff binary")?;
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..args.runs {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let dir = tmp.join(format!("run-{k}-{i}"));
            std::fs::create_dir_all(&dir)?;
            let secs = if k == 0 {
                timed(
                    Command::new(&me)
                        .args(["image", "pull", "--quiet", &reference])
                        .env("SKIFF_DATA_DIR", &dir)
                        .env("DOCKER_CONFIG", &dir),
                )?
            } else {
                let layout = dir.join("oci");
                let a = skopeo_copy(
                    &format!("docker://{reference}"),
                    &format!("oci:{}:v1", layout.display()),
                )?;
                let b = timed(
                    Command::new("umoci")
                        .args(["unpack", "--image"])
                        .arg(format!("{}:v1", layout.display()))
                        .arg(dir.join("bundle")),
                )?;
                a + b
            };
            std::fs::remove_dir_all(&dir)?;
            let name = if k == 0 { "skiff" } else { "skopeo+umoci" };
            eprintln!("run {i} {name}: {secs:.2} s");
            times[k].push(secs);
        }
    }
    let s = median(&mut times[0]);
    let p = median(&mut times[1]);
    println!(
        "pull (download + unpack) of a {}-layer {} MiB image from a local skiff registry, {} runs each, alternating",
        args.layers, args.total_mib, args.runs
    );
    println!("{:<34} {:>10}", "tool", "median (s)");
    println!("{:<34} {:>10.2}", "skiff image pull", s);
    println!("{:<34} {:>10.2}", "skopeo copy + umoci unpack", p);
    println!("ratio skiff/(skopeo+umoci): {:.3}", s / p);
    Ok(())
}
