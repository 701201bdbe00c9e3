//! `skiff run`: one container from an image, in the foreground or detached (`-d`).
//!
//! Lifecycle: resolve the image (refusing a wrong platform), reserve the name, prepare
//! a snapshot keyed by the container ID, mount its overlay on
//! `<data>/containers/<id>/bundle/rootfs`, write `config.json` (the runtime's default
//! spec with the image config applied as Docker applies it) and the record
//! (container/mod.rs). In the foreground the container runs through
//! `skiff_runtime::Runtime` in this process, and on exit the rootfs is unmounted and the
//! exit code recorded; `--rm` removes everything instead. Detached, or with published
//! ports, the shim (container/shim.rs) takes over; a foreground `-p` run then only relays
//! output and signals (container/attach.rs). This process stays single-threaded (the runtime forks
//! it): no async runtime here.
//!
//! Paths inside the image (WORKDIR, /etc/passwd) are resolved with [`secure_join`], which
//! follows the image's symlinks as the container would see them, never onto the host.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use skiff_image::mount::MountGuard;
use skiff_image::{Image, ImageStore};

use crate::container::{self, ports, Meta, Paths};
use crate::image_cmd::DEFAULT_DATA_DIR;

/// The exit code of `skiff run` when skiff itself failed (Docker's convention).
const RUN_FAILED: i32 = 125;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// skiff's data directory (images, containers).
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where the runtime keeps container state.
    #[arg(long, env = "SKIFF_RUNTIME_ROOT", default_value = skiff_runtime::state::DEFAULT_ROOT, hide = true)]
    pub runtime_root: PathBuf,
    /// Remove the container's writable layer when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (default: skiff-<short ID>).
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open (it always is in the foreground: stdin is passed through).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal (foreground only).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Publish a container port: [IP:]HOSTPORT:CTRPORT[/tcp] (needs -d).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Set an environment variable (K=V, or K to pass this process's value).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container (created if missing).
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User: name|uid[:group|gid].
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Container host name (default: the first 12 characters of its ID).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Bind mount HOST:CONTAINER[:ro|rw] (absolute paths; named volumes are not supported).
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Memory limit, e.g. 64m, 1g (bytes without a suffix).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    pub image: String,
    /// Command and arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

pub fn main(args: RunArgs) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff run: {e:#}");
            RUN_FAILED
        }
    }
}

fn run(args: RunArgs) -> Result<i32> {
    // Flags first: nothing is created for a command line that cannot work.
    if args.detach && args.tty {
        bail!("-t with -d: skiff has no attach, so a detached container cannot have a terminal; drop -t (use skiff exec -it later)");
    }
    // With -p the container is served by a shim even in the foreground; this process
    // then only relays its output and signals.
    let via_shim = args.detach || !args.publish.is_empty();
    if via_shim && args.tty {
        bail!("-p with -t: a container with published ports runs under a shim and cannot have a terminal; drop -t (use skiff exec -it later)");
    }
    let ports = args
        .publish
        .iter()
        .map(|p| ports::parse(p))
        .collect::<Result<Vec<_>>>()?;
    let store = ImageStore::open(&args.data_dir)
        .with_context(|| format!("opening the image store in {}", args.data_dir.display()))?;
    let img = store.image(&store.resolve(&args.image)?)?;
    let paths = Paths::new(&args.data_dir);
    let id = container::random_id()?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("skiff-{}", container::short(&id)));
    paths.reserve_name(&name, &id)?;
    let dir = paths.dir(&id);
    let cleanup = Cleanup {
        paths: &paths,
        store: &store,
        id: &id,
        name: &name,
        armed: true,
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = img.config.config().clone().unwrap_or_default();
    let mut meta = Meta {
        id: id.clone(),
        name: name.clone(),
        image: args.image.clone(),
        command: Vec::new(),
        created: container::now_secs(),
        ports,
        rm: args.rm,
        detached: via_shim,
        stop_signal: cfg
            .stop_signal()
            .clone()
            .unwrap_or_else(|| "SIGTERM".into()),
        state: "created".into(),
        owner_pid: 0,
        owner_start: 0,
        exit_code: None,
        finished: None,
    };
    let mounts = store.prepare_rootfs(&img, &id)?;
    let bundle = paths.bundle(&id);
    let rootfs = paths.rootfs(&id);
    fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let guard = MountGuard::mount(&mounts, &rootfs)?;

    let spec = container_spec(&img, &args, &id, &rootfs)?;
    meta.command = serde_json::from_value(spec["process"]["args"].clone()).unwrap_or_default();
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )
    .context("writing config.json")?;
    if via_shim {
        paths.save(&meta)?;
        let report = start_shim(&args, &paths, &id)?;
        // The shim owns the mount and the container now.
        std::mem::forget(guard);
        let mut cleanup = cleanup;
        cleanup.armed = false;
        if args.detach {
            println!("{id}");
            return Ok(0);
        }
        let runtime = skiff_runtime::Runtime::new(&args.runtime_root);
        return container::attach::follow(&paths, &runtime, &id, report);
    }
    meta.state = "running".into();
    meta.owner_pid = std::process::id() as i32;
    meta.owner_start = skiff_runtime::state::process_start_time(meta.owner_pid).unwrap_or(0);
    paths.save(&meta)?;
    let runtime = skiff_runtime::Runtime::new(&args.runtime_root);
    let opts = skiff_runtime::CreateOptions {
        id: id.clone(),
        bundle: bundle.clone(),
        ..Default::default()
    };
    // The namespace file must stay open until the runtime's init has joined it.
    let netns = container::netns::prepare(&bundle)?;
    let result = runtime.run(&opts, false, false);
    drop(netns);
    if !args.rm {
        // Only for the record: the namespace is gone with the container.
        let _ = container::netns::forget(&bundle);
    }
    let mut cleanup = cleanup;
    if let Err(e) = guard.unmount() {
        // Never delete a directory that is still mounted: that would reach into it.
        cleanup.armed = false;
        return Err(e).with_context(|| {
            format!("container {id} exited, but its root filesystem is still mounted")
        });
    }
    // Runtime errors already name the container.
    let code = result?;
    if !args.rm {
        meta.state = "exited".into();
        meta.exit_code = Some(code);
        meta.finished = Some(container::now_secs());
        paths.save(&meta)?;
    }
    cleanup.armed = args.rm;
    drop(cleanup);
    Ok(code)
}

/// Starts the detached container's shim and waits for its verdict: `ok`, or the error
/// (then the shim has undone its part, and our Cleanup the rest).
fn start_shim(
    args: &RunArgs,
    paths: &Paths,
    id: &str,
) -> Result<BufReader<std::process::ChildStdout>> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log(id))
        .with_context(|| format!("creating {}", paths.log(id).display()))?;
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let mut child = Command::new(exe)
        .arg("container-shim")
        .arg("run")
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--runtime-root")
        .arg(&args.runtime_root)
        .args(if args.detach {
            None
        } else {
            Some("--attached")
        })
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the container's shim")?;
    let mut out = BufReader::new(child.stdout.take().context("shim stdout")?);
    let mut first = String::new();
    // Only the first line: the container's processes inherit the pipe, so it may
    // never reach EOF while they live.
    out.read_line(&mut first).context("reading from the shim")?;
    if first == "ok\n" {
        return Ok(out);
    }
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let _ = child.wait();
    let msg = format!("{first}{rest}");
    if msg.trim().is_empty() {
        bail!(
            "the container's shim failed; see {}",
            paths.log(id).display()
        );
    }
    bail!("{}", msg.trim_end())
}

/// Removes the snapshot, container dir and name (on failure, and on exit with --rm).
/// Declared before the MountGuard, so it runs after the rootfs is unmounted.
struct Cleanup<'a> {
    paths: &'a Paths,
    store: &'a ImageStore,
    id: &'a str,
    name: &'a str,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            let link = self.paths.name_link(self.name);
            if fs::read_link(&link).is_ok_and(|t| t.as_os_str() == self.id) {
                let _ = fs::remove_file(link);
            }
            // Deleting the writable layer and the bundle costs several journaled
            // metadata operations (tens of ms on a busy disk); like docker's daemon,
            // do it in the background. What is visible goes at once: both directories
            // move into <data>/trash first, and only then does `rm` run, detached.
            let snapshot = self
                .store
                .snapshotter()
                .upper_dir(self.id)
                .ok()
                .and_then(|u| u.parent().map(Path::to_path_buf));
            let trash = self.paths.data.join("trash");
            let _ = fs::create_dir_all(&trash);
            let mut doomed = Vec::new();
            for (from, suffix) in [
                (snapshot, "snapshot"),
                (Some(self.paths.dir(self.id)), "container"),
            ] {
                let Some(from) = from else { continue };
                let to = trash.join(format!("{}-{suffix}", self.id));
                match fs::rename(&from, &to) {
                    Ok(()) => doomed.push(to),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => {
                        let _ = fs::remove_dir_all(&from);
                    }
                }
            }
            if !doomed.is_empty() {
                let spawned = Command::new("rm")
                    .arg("-rf")
                    .args(&doomed)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                if spawned.is_err() {
                    for d in &doomed {
                        let _ = fs::remove_dir_all(d);
                    }
                }
            }
        }
    }
}

/// The runtime's default spec with the image config and the flags applied.
fn container_spec(img: &Image, args: &RunArgs, id: &str, rootfs: &Path) -> Result<Value> {
    let cfg = img.config.config().clone().unwrap_or_default();
    // Docker: the command line replaces CMD; ENTRYPOINT stays in front of it.
    let mut argv: Vec<String> = cfg.entrypoint().clone().unwrap_or_default();
    if args.cmd.is_empty() {
        argv.extend(cfg.cmd().clone().unwrap_or_default());
    } else {
        argv.extend(args.cmd.iter().cloned());
    }
    if argv.is_empty() {
        bail!("no command: the image has no ENTRYPOINT or CMD; give one after the image name");
    }

    let user_spec = args
        .user
        .clone()
        .or_else(|| cfg.user().clone())
        .unwrap_or_default();
    let user = resolve_user(rootfs, &user_spec)?;

    let hostname: String = match &args.hostname {
        Some(h) => h.clone(),
        None => id.chars().take(12).collect(),
    };
    let mut env: Vec<String> = cfg.env().clone().unwrap_or_default();
    let set = |env: &mut Vec<String>, kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
    }
    set(&mut env, format!("HOSTNAME={hostname}"));
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    for e in &args.env {
        if e.contains('=') {
            set(&mut env, e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set(&mut env, format!("{e}={v}"));
        }
    }

    let cwd = args
        .workdir
        .clone()
        .or_else(|| cfg.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        bail!("working directory {cwd:?} must be absolute");
    }
    // Docker creates a missing WORKDIR; do it in the container's own writable layer.
    secure_join(rootfs, &cwd, true).with_context(|| format!("creating working directory {cwd}"))?;

    let mut spec = skiff_runtime::default_spec::default_config(false);
    spec["process"]["terminal"] = json!(args.tty);

    spec["process"]["args"] = json!(argv);
    spec["process"]["env"] = json!(env);
    spec["process"]["cwd"] = json!(cwd);
    spec["process"]["user"] = json!({
        "uid": user.uid, "gid": user.gid, "additionalGids": user.groups,
    });
    spec["root"] = json!({"path": "rootfs", "readonly": false});
    spec["hostname"] = json!(hostname);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for v in &args.volumes {
            mounts.push(parse_volume(v)?);
        }
    }
    if let Some(m) = &args.memory {
        spec["linux"]["resources"]["memory"] = json!({"limit": parse_bytes(m)?});
    }
    if let Some(c) = args.cpus {
        if !(c > 0.0 && c.is_finite()) {
            bail!("--cpus {c}: give a positive number of CPUs, e.g. 0.5");
        }
        // Docker's mapping: a 100 ms period and a quota of cpus × period.
        let period = 100_000u64;
        spec["linux"]["resources"]["cpu"] =
            json!({"quota": (c * period as f64).round() as i64, "period": period});
    }
    Ok(spec)
}

/// `-v HOST:CONTAINER[:ro|rw]` as an OCI bind mount.
fn parse_volume(v: &str) -> Result<Value> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, ctr, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, "rw"),
        [h, c, m] => (*h, *c, *m),
        _ => bail!("-v {v:?}: expected HOST:CONTAINER[:ro|rw]"),
    };
    if !host.starts_with('/') {
        bail!("-v {v:?}: named volumes are not supported; give an absolute host path");
    }
    if !ctr.starts_with('/') {
        bail!("-v {v:?}: the container path must be absolute");
    }
    if !Path::new(host).exists() {
        bail!("-v {v:?}: host path {host} does not exist");
    }
    let mut options = vec!["rbind", "rprivate"];
    match mode {
        "ro" => options.push("ro"),
        "rw" => {}
        other => bail!("-v {v:?}: unknown mode {other:?}; use ro or rw"),
    }
    Ok(json!({"destination": ctr, "type": "bind", "source": host, "options": options}))
}

/// `64m`, `1g`, `512k`, `1048576` as bytes (binary units, as Docker reads them).
fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("--memory {s:?}: expected a size like 64m or 1g"))?;
    let bytes = (n * mul as f64) as i64;
    if n <= 0.0 || bytes < 6 << 20 {
        bail!("--memory {s:?}: the minimum is 6m");
    }
    Ok(bytes)
}

#[derive(Debug)]
struct User {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: String,
}

/// Resolves `name|uid[:group|gid]` against the image's /etc/passwd and /etc/group, the
/// way Docker does: a numeric uid need not exist; a name must.
fn resolve_user(rootfs: &Path, spec: &str) -> Result<User> {
    let read = |p: &str| -> String {
        secure_join(rootfs, p, false)
            .ok()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let passwd = read("/etc/passwd");
    let group = read("/etc/group");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let (uid, mut gid, name, home) = match (found, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .with_context(|| format!("bad uid in /etc/passwd for {}", f[0]))?,
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0].to_string()),
            f[5].to_string(),
        ),
        (None, Ok(n)) => (n, 0, None, "/".to_string()),
        (None, Err(_)) => {
            bail!("unable to find user {u}: no matching entries in the image's /etc/passwd")
        }
    };
    let groups_file: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups_file
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| {
                    format!(
                        "unable to find group {g}: no matching entries in the image's /etc/group"
                    )
                })?,
        };
    }
    let groups = match &name {
        Some(n) => groups_file
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    Ok(User {
        uid,
        gid,
        groups,
        home: if home.is_empty() {
            "/".to_string()
        } else {
            home
        },
    })
}

/// Resolves `path` inside `root` as the container would: symlinks (absolute ones
/// relative to `root`) are followed, `..` never climbs above `root`. With `create`,
/// missing directories are made (mode 0755). Returns the host path.
pub fn secure_join(root: &Path, path: &str, create: bool) -> Result<PathBuf> {
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .rev()
        .map(str::to_string)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let host = cur
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    bail!("too many symlinks resolving {path}");
                }
                let target = fs::read_link(&host)?;
                if target.is_absolute() {
                    cur.clear();
                }
                for comp in target.components().rev() {
                    match comp {
                        Component::Normal(s) => todo.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => todo.push("..".to_string()),
                        _ => {}
                    }
                }
            }
            Ok(m) => {
                if !m.is_dir() && !todo.is_empty() {
                    bail!("{} is not a directory", host.display());
                }
                cur.push(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                fs::create_dir(&host).with_context(|| format!("creating {}", host.display()))?;
                cur.push(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                cur.push(c);
            }
            Err(e) => return Err(e).with_context(|| format!("stat {}", host.display())),
        }
    }
    Ok(cur.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", r.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../..", r.join("up")).unwrap();
        std::os::unix::fs::symlink("/private/etc", r.join("etc")).unwrap();
        std::os::unix::fs::symlink("/loop", r.join("loop")).unwrap();
        assert_eq!(
            secure_join(r, "/lib/x", false).unwrap(),
            r.join("usr/lib/x")
        );
        assert_eq!(secure_join(r, "/up/tmp", false).unwrap(), r.join("tmp"));
        assert_eq!(secure_join(r, "/../../x", false).unwrap(), r.join("x"));
        // An absolute symlink is resolved inside the image, never on the host.
        assert_eq!(
            secure_join(r, "/etc/passwd", false).unwrap(),
            r.join("private/etc/passwd")
        );
        assert!(secure_join(r, "/loop/x", false).is_err());
        let made = secure_join(r, "/up/work/dir", true).unwrap();
        assert_eq!(made, r.join("work/dir"));
        assert!(made.is_dir());
    }

    #[test]
    fn flags_parse() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("10485760").unwrap(), 10 << 20);
        assert!(parse_bytes("1k").is_err());
        assert!(parse_bytes("lots").is_err());
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(v["options"], json!(["rbind", "rprivate", "ro"]));
        assert!(parse_volume("named:/data")
            .unwrap_err()
            .to_string()
            .contains("named volumes"));
        assert!(parse_volume("/tmp:rel").is_err());
        assert!(parse_volume("/tmp:/x:rx").is_err());
    }

    #[test]
    fn users_resolve_like_docker() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir(r.join("etc")).unwrap();
        fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\n",
        )
        .unwrap();
        let u = resolve_user(r, "app").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone(), u.home.as_str()),
            (1000, 1001, vec![10], "/home/app")
        );
        let u = resolve_user(r, "1000:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = resolve_user(r, "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = resolve_user(r, "").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert!(resolve_user(r, "nobody")
            .unwrap_err()
            .to_string()
            .contains("nobody"));
        assert!(resolve_user(r, "app:nogroup").is_err());
    }
}
