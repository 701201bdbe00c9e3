//! `skiff bench unpack | run | rebuild`: images and `skiff run` against their peers
//! (umoci, runc), alternating in one run, medians and ratios printed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::{measure, median};

#[derive(Debug, clap::Args)]
pub struct UnpackArgs {
    /// Measured runs of each side (after one warm-up each).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Layers of the generated image.
    #[arg(long, default_value_t = 5)]
    pub layers: usize,
    /// Uncompressed MiB per layer.
    #[arg(long, default_value_t = 48)]
    pub layer_mib: usize,
    /// Where to put the image and the unpacked trees (default: the system temp dir).
    /// Needs about 0.9 GiB plus 0.9 GiB per run (defaults), all removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the generated layout and archive (for profiling); prints where.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// The peer runtime binary.
    #[arg(long, default_value = "runc")]
    pub peer: String,
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: PathBuf,
}

fn tmpdir(base: Option<&Path>, what: &str) -> Result<PathBuf> {
    let d = base
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("skiff-bench-{what}-{}", std::process::id()));
    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn ok(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A cheap deterministic byte generator (xorshift): "random" content that does not
/// compress, without reading /dev/urandom for hundreds of MiB.
struct Xorshift(u64);
impl Xorshift {
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
    }
}

/// Fills `dir` with about `mib` MiB the way real layers look: a third many small text
/// files (source, configs), a third mid-size text (libraries' data), a third
/// incompressible binaries, plus some symlinks.
fn gen_layer(dir: &Path, seed: u64, mib: usize) -> Result<()> {
    let mut rng = Xorshift(seed | 1);
    let third = mib * (1 << 20) / 3;
    let words = [
        "fn", "let", "return", "struct", "impl", "match", "config", "value", "error", "path",
        "include", "static", "const", "void", "int", "char", "for", "while", "if", "else",
    ];
    let text = |rng: &mut Xorshift, n: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 16);
        let mut b = [0u8; 8];
        while out.len() < n {
            rng.fill(&mut b);
            out.extend_from_slice(words[b[0] as usize % words.len()].as_bytes());
            out.push(if b[1] % 9 == 0 { b'\n' } else { b' ' });
            if b[2] % 5 == 0 {
                out.extend_from_slice(
                    format!("{}", u32::from_le_bytes([b[3], b[4], 0, 0])).as_bytes(),
                );
            }
        }
        out
    };
    let mut written = 0;
    let mut i = 0;
    while written < third {
        let sub = dir.join(format!("src/mod{}", i / 100));
        fs::create_dir_all(&sub)?;
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        let n = 512 + (u16::from_le_bytes([b[0], b[1]]) as usize % 8192);
        fs::write(sub.join(format!("file{i}.rs")), text(&mut rng, n))?;
        if i % 50 == 0 {
            std::os::unix::fs::symlink(format!("file{i}.rs"), sub.join(format!("link{i}")))?;
        }
        written += n;
        i += 1;
    }
    fs::create_dir_all(dir.join("share"))?;
    let mut written = 0;
    let mut i = 0;
    while written < third {
        let n = (256 << 10).min(third - written + 1);
        fs::write(dir.join(format!("share/data{i}.txt")), text(&mut rng, n))?;
        written += n;
        i += 1;
    }
    fs::create_dir_all(dir.join("lib"))?;
    let mut written = 0;
    let mut i = 0;
    let mut buf = vec![0u8; 4 << 20];
    while written < third {
        rng.fill(&mut buf);
        let n = buf.len().min(third - written + 1);
        fs::write(dir.join(format!("lib/lib{i}.so")), &buf[..n])?;
        written += n;
        i += 1;
    }
    Ok(())
}

/// Builds an OCI layout (gzip layers, as registries serve them) with umoci.
fn make_layout(tmp: &Path, layers: usize, mib: usize) -> Result<PathBuf> {
    let layout = tmp.join("layout");
    let img = format!("{}:bench", layout.display());
    ok(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    ok(Command::new("umoci").args(["new", "--image", &img]))?;
    for l in 0..layers {
        // Kept until the end of the benchmark, like the unpacked trees (see `unpack`).
        let b = tmp.join(format!("gen-bundle-{l}"));
        ok(Command::new("umoci")
            .args(["unpack", "--image", &img])
            .arg(&b))?;
        gen_layer(&b.join(format!("rootfs/layer{l}")), 0x5eed + l as u64, mib)?;
        ok(Command::new("umoci")
            .args(["repack", "--image", &img])
            .arg(&b))?;
        eprintln!("generated layer {}/{layers}", l + 1);
    }
    ok(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    Ok(layout)
}

/// The image's layer blobs (gzip tars), base layer first, from the layout's only manifest.
fn layer_blobs(layout: &Path) -> Result<Vec<PathBuf>> {
    let read = |p: &Path| -> Result<serde_json::Value> {
        serde_json::from_slice(&fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("parsing {}", p.display()))
    };
    let blob = |digest: &serde_json::Value| -> Result<PathBuf> {
        let d = digest.as_str().context("a descriptor without a digest")?;
        let hex = d
            .strip_prefix("sha256:")
            .context("a digest that is not sha256")?;
        Ok(layout.join("blobs/sha256").join(hex))
    };
    let index = read(&layout.join("index.json"))?;
    let manifest = read(&blob(&index["manifests"][0]["digest"])?)?;
    manifest["layers"]
        .as_array()
        .context("a manifest without layers")?
        .iter()
        .map(|l| blob(&l["digest"]))
        .collect()
}

/// The three sides of the unpack benchmark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UnpackSide {
    Skiff,
    Umoci,
    Tar,
}

/// Every run unpacks into fresh directories, and nothing is deleted before the end.
///
/// Deleting a tree right before the next run distorts both sides: on ext4 without a
/// journal (as on this project's machines) the inode allocator skips inodes freed in
/// the last `dirty_expire_centisecs` (30 s) one by one, so after removing an unpacked
/// image (~19,000 inodes) every file the next run creates first scans all of them, and
/// creates cost ~0.4 ms instead of ~10 µs for skiff and umoci alike. So the trees (about
/// 0.6 GiB per run and side) stay until all runs are done.
pub fn unpack(a: UnpackArgs) -> Result<()> {
    if a.runs == 0 || a.layers == 0 {
        bail!("--runs and --layers must be at least 1");
    }
    let me = std::env::current_exe().context("locate the skiff binary")?;
    let tmp = tmpdir(a.dir.as_deref(), "unpack")?;
    let result = (|| -> Result<()> {
        let layout = make_layout(&tmp, a.layers, a.layer_mib)?;
        // skiff loads an oci-archive: the same layout as a tar.
        let archive = tmp.join("image.tar");
        ok(Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .arg("."))?;
        let blobs: u64 = fs::read_dir(layout.join("blobs/sha256"))?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        let layers = layer_blobs(&layout)?;
        let (mut st, mut pt, mut tt) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=a.runs {
            // The order is reversed every round, so no side always runs first (on the
            // coldest cache) or right after the same other side.
            let mut order = [UnpackSide::Skiff, UnpackSide::Umoci, UnpackSide::Tar];
            if i % 2 == 1 {
                order.reverse();
            }
            for side in order {
                let (secs, tree) = match side {
                    UnpackSide::Skiff => {
                        let data = tmp.join(format!("skiff-data-{i}"));
                        let s = measure(
                            Command::new(&me)
                                .args(["image", "load", "--data-dir"])
                                .arg(&data)
                                .arg("-i")
                                .arg(&archive)
                                .stdout(Stdio::null()),
                        )?;
                        (s.secs, data.join("images/snapshots"))
                    }
                    UnpackSide::Umoci => {
                        let bundle = tmp.join(format!("umoci-bundle-{i}"));
                        let s = measure(
                            Command::new("umoci")
                                .args(["unpack", "--image"])
                                .arg(format!("{}:bench", layout.display()))
                                .arg(&bundle)
                                .stdout(Stdio::null()),
                        )?;
                        (s.secs, bundle.join("rootfs"))
                    }
                    UnpackSide::Tar => {
                        // The floor: each layer's gzip tar extracted in order into one
                        // tree, nothing hashed or verified (these layers have no whiteouts).
                        let root = tmp.join(format!("tar-rootfs-{i}"));
                        fs::create_dir_all(&root)?;
                        let script = "set -e; root=$1; shift; for l in \"$@\"; do tar -xzf \"$l\" -C \"$root\"; done";
                        let s = measure(
                            Command::new("sh")
                                .args(["-c", script, "sh"])
                                .arg(&root)
                                .args(&layers),
                        )?;
                        (s.secs, root)
                    }
                };
                if i == 0 {
                    let name = match side {
                        UnpackSide::Skiff => "skiff",
                        UnpackSide::Umoci => "umoci",
                        UnpackSide::Tar => "tar -x",
                    };
                    eprintln!("unpacked: {name} {:.0} MiB", du(&tree)? as f64 / 1048576.0);
                    continue;
                }
                match side {
                    UnpackSide::Skiff => st.push(secs),
                    UnpackSide::Umoci => pt.push(secs),
                    UnpackSide::Tar => tt.push(secs),
                }
            }
        }
        let (sm, pm, tm) = (median(&mut st), median(&mut pt), median(&mut tt));
        println!(
            "{} layers, {} MiB uncompressed, {:.0} MiB of gzip blobs; {} runs each, alternating with the order reversed every round",
            a.layers,
            a.layers * a.layer_mib,
            blobs as f64 / 1048576.0,
            a.runs
        );
        println!("skiff image load (store + verify + unpack all layers):     {sm:.2} s");
        println!("umoci unpack (also hashes every file for its mtree manifest): {pm:.2} s");
        println!("tar -xzf of each layer in order (the floor, nothing hashed): {tm:.2} s");
        println!("ratio skiff/umoci: {:.3}", sm / pm);
        println!("ratio skiff/tar:   {:.3}", sm / tm);
        Ok(())
    })();
    if a.keep {
        eprintln!("kept {}", tmp.display());
    } else {
        let _ = remove_tree(&tmp);
    }
    result
}

fn du(p: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sb").arg(p).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

pub fn run(a: RunArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let me = std::env::current_exe().context("locate the skiff binary")?;
    let tmp = tmpdir(None, "run")?;
    let result = (|| -> Result<()> {
        // One rootfs: imported into skiff as an image, and the peer's bundle rootfs.
        let bundle = tmp.join("bundle");
        let rootfs = bundle.join("rootfs");
        fs::create_dir_all(rootfs.join("bin"))?;
        fs::copy(&a.busybox, rootfs.join("bin/busybox")).context("copy busybox")?;
        for l in ["true", "sh"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l))?;
        }
        let tar = tmp.join("rootfs.tar");
        ok(Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&rootfs)
            .arg("."))?;
        let data = tmp.join("data");
        ok(Command::new(&me)
            .args(["image", "import", "--data-dir"])
            .arg(&data)
            .arg(&tar)
            .arg("bench:1"))?;
        ok(Command::new(&a.peer).arg("spec").current_dir(&bundle))?;
        let cfg = bundle.join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&cfg)?)?;
        v["process"]["args"] = serde_json::json!(["/bin/true"]);
        v["process"]["terminal"] = serde_json::json!(false);
        fs::write(&cfg, serde_json::to_vec_pretty(&v)?)?;
        let (skiff_root, peer_root) = (tmp.join("skiff-state"), tmp.join("peer-state"));
        let (mut st, mut pt) = (Vec::new(), Vec::new());
        for i in 0..a.runs + 2 {
            let s = measure(
                Command::new(&me)
                    .args(["run", "--rm", "--data-dir"])
                    .arg(&data)
                    .env("SKIFF_RUNTIME_ROOT", &skiff_root)
                    .args(["bench:1", "/bin/true"]),
            )?;
            let p = measure(
                Command::new(&a.peer)
                    .arg("--root")
                    .arg(&peer_root)
                    .args(["run", "-b"])
                    .arg(&bundle)
                    .arg(format!("bench-{}-{i}", std::process::id())),
            )?;
            if i >= 2 {
                st.push(s.secs * 1e3);
                pt.push(p.secs * 1e3);
            }
        }
        let (sm, pm) = (median(&mut st), median(&mut pt));
        println!(
            "skiff run --rm (image, overlay mount, lo up) vs {} run of the same rootfs as a prepared bundle ({} spec), /bin/true, {} runs each, alternating",
            a.peer, a.peer, a.runs
        );
        println!("skiff run: {sm:.2} ms");
        println!("{} run: {pm:.2} ms", a.peer);
        println!("ratio skiff/{}: {:.3}", a.peer, sm / pm);
        Ok(())
    })();
    let _ = remove_tree(&tmp);
    result
}

pub fn rebuild(a: RebuildArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let me = std::env::current_exe().context("locate the skiff binary")?;
    let tmp = tmpdir(None, "rebuild")?;
    let result = (|| -> Result<()> {
        let ctx = tmp.join("ctx");
        fs::create_dir_all(ctx.join("app"))?;
        fs::copy(&a.busybox, ctx.join("busybox")).context("copy busybox")?;
        for i in 0..50 {
            fs::write(
                ctx.join(format!("app/f{i}.txt")),
                format!("file {i}\n").repeat(100),
            )?;
        }
        let mut df = fs::File::create(ctx.join("Dockerfile"))?;
        // Ten steps: FROM + 9 instructions, three of them layers made by COPY and RUN.
        write!(
            df,
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             ENV APP=/srv/app MODE=bench\n\
             WORKDIR /srv/app\n\
             COPY app/ ./\n\
             RUN echo built > /srv/app/stamp && ls /srv/app | wc -l > count\n\
             LABEL org.example.bench=rebuild\n\
             EXPOSE 8080\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n"
        )?;
        drop(df);
        let data = tmp.join("data");
        let rt = tmp.join("rt");
        let build = |quiet: bool| -> Result<f64> {
            let start = Instant::now();
            let out = Command::new(&me)
                .args(["image", "build", "--data-dir"])
                .arg(&data)
                .env("SKIFF_RUNTIME_ROOT", &rt)
                .args(["-t", "rebuild:1"])
                .arg(&ctx)
                .output()?;
            let secs = start.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!("build failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            if quiet && text.matches("CACHED").count() + text.matches("Using cache").count() < 3 {
                bail!("the rebuild was not fully cached:\n{text}");
            }
            Ok(secs)
        };
        let first = build(false)?;
        let mut times = Vec::new();
        for _ in 0..a.runs {
            times.push(build(true)? * 1e3);
        }
        let m = median(&mut times);
        println!(
            "rebuild of an unchanged 10-step Dockerfile (all steps cached), {} runs: median {m:.1} ms (first build {:.2} s)",
            a.runs, first
        );
        println!(
            "target <= 100 ms: {}",
            if m <= 100.0 { "met" } else { "missed" }
        );
        Ok(())
    })();
    let _ = remove_tree(&tmp);
    result
}
