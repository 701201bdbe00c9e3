//! `skiff run`: one container from an image, in the foreground or detached (`-d`).
//!
//! Lifecycle: resolve the image (refusing a wrong platform), reserve the name, prepare
//! a snapshot keyed by the container ID, mount its overlay on
//! `<data>/containers/<id>/bundle/rootfs`, write `config.json` (skiff-container's typed
//! spec: the runtime's default with the image config applied as Docker applies it) and
//! the record (container/mod.rs). In the foreground the container runs through
//! `skiff_runtime::Runtime` in this process, and on exit the rootfs is unmounted and the
//! exit code recorded; `--rm` removes everything instead. Detached, or with published
//! ports, the shim (container/shim.rs) takes over, driven over its task socket (create,
//! attach, start); a foreground `-p` run then only relays signals and waits
//! (container/attach.rs). This process stays single-threaded until then (the runtime
//! forks it): no async runtime here.
//!
//! Paths inside the image (WORKDIR, /etc/passwd) are resolved with skiff-container's
//! `secure_join`, which follows the image's symlinks as the container would see them,
//! never onto the host.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::Spec;
use skiff_container::shim::{Client, ShimError};
use skiff_container::spec::set_env;
use skiff_container::{BindMount, ContainerState, SpecBuilder};
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
        state: ContainerState::Created,
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

    // In the foreground the namespace is made first, so the spec names it once.
    let netns = if via_shim {
        None
    } else {
        Some(container::netns::create()?)
    };
    let spec = container_spec(
        &img,
        &args,
        &id,
        &rootfs,
        netns.as_ref().map(|(_, path)| path.as_str()),
    )?;
    meta.command = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    skiff_container::spec::write(&bundle, &spec)?;
    if via_shim {
        paths.save(&meta)?;
        let client = start_shim(&args, &paths, &id)?;
        // The shim owns the mount and the container now.
        std::mem::forget(guard);
        let mut cleanup = cleanup;
        cleanup.armed = false;
        if args.detach {
            println!("{id}");
            return Ok(0);
        }
        return container::attach::follow(&client);
    }
    meta.state = ContainerState::Running;
    meta.owner_pid = std::process::id() as i32;
    meta.owner_start = skiff_runtime::state::process_start_time(meta.owner_pid).unwrap_or(0);
    paths.save(&meta)?;
    let runtime = skiff_runtime::Runtime::new(&args.runtime_root);
    let opts = skiff_runtime::CreateOptions {
        id: id.clone(),
        bundle: bundle.clone(),
        ..Default::default()
    };
    // The namespace file stays open until the runtime's init has joined it.
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
        meta.state = ContainerState::Exited;
        meta.exit_code = Some(code);
        meta.finished = Some(container::now_secs());
        paths.save(&meta)?;
    }
    cleanup.armed = args.rm;
    drop(cleanup);
    Ok(code)
}

/// Starts the container's shim with its task socket, then creates and starts the
/// container through it (attached to our stdout and stderr in the foreground). On an
/// error the shim has undone its part and ended, and our Cleanup does the rest.
fn start_shim(args: &RunArgs, paths: &Paths, id: &str) -> Result<Client> {
    let sock = paths.socket(id);
    let listener = skiff_container::shim::bind(&sock)?;
    let shim_log_path = paths.dir(id).join("shim.log");
    let shim_log = fs::File::create(&shim_log_path)
        .with_context(|| format!("creating {}", shim_log_path.display()))?;
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let mut child = Command::new(exe)
        .arg("container-shim")
        .arg("serve")
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--runtime-root")
        .arg(&args.runtime_root)
        .arg(id)
        .stdin(Stdio::from(OwnedFd::from(listener)))
        .stdout(Stdio::null())
        .stderr(shim_log)
        .spawn()
        .context("starting the container's shim")?;
    let client = Client::new(&sock);
    let explain = |e: ShimError| match e {
        // The shim's own answer already says what went wrong.
        ShimError::Remote { message, .. } => anyhow::anyhow!(message),
        other => anyhow::Error::new(other).context(format!(
            "the container's shim failed; see {}",
            shim_log_path.display()
        )),
    };
    if let Err(e) = client.create() {
        // The shim waits in its first phase: delete ends it.
        let _ = client.delete();
        let _ = child.wait();
        return Err(explain(e));
    }
    let started = if args.detach {
        Ok(())
    } else {
        client.attach(std::io::stdout().as_fd(), std::io::stderr().as_fd())
    }
    .and_then(|()| {
        if !args.detach {
            // Blocked before the start: a signal that comes before `follow` is
            // forwarded, never fatal to this process.
            if let Err(e) = container::attach::block_forwarded_signals() {
                tracing::warn!(error = %e, "could not block SIGINT/SIGTERM/SIGHUP");
            }
        }
        client.start()
    });
    if let Err(e) = started {
        // Created but not running: end it; the shim records the exit and ends.
        let _ = client.kill(nix::sys::signal::Signal::SIGKILL, true);
        let _ = client.wait();
        let _ = child.wait();
        return Err(explain(e));
    }
    Ok(client)
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

/// The container's typed spec: the runtime's default with the image config and the
/// flags applied; `netns` is the network namespace to join (else a new one).
fn container_spec(
    img: &Image,
    args: &RunArgs,
    id: &str,
    rootfs: &Path,
    netns: Option<&str>,
) -> Result<Spec> {
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
    let user = skiff_container::user::resolve(rootfs, &user_spec, &[])?;

    let hostname: String = match &args.hostname {
        Some(h) => h.clone(),
        None => container::short(id),
    };
    let mut env: Vec<String> = cfg.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, skiff_runtime::default_spec::DEFAULT_PATH.to_string());
    }
    set_env(&mut env, format!("HOSTNAME={hostname}"));
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    for e in &args.env {
        if e.contains('=') {
            set_env(&mut env, e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set_env(&mut env, format!("{e}={v}"));
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
    skiff_container::path::secure_join(rootfs, &cwd, true)
        .with_context(|| format!("creating working directory {cwd}"))?;

    let mut b = SpecBuilder::new(argv)
        .env(env)
        .cwd(cwd)
        .user(user)
        .hostname(hostname)
        .terminal(args.tty);
    for v in &args.volumes {
        b = b.bind_mount(parse_volume(v)?);
    }
    if let Some(m) = &args.memory {
        b = b.memory_limit(parse_bytes(m)?);
    }
    if let Some(c) = args.cpus {
        if !(c > 0.0 && c.is_finite()) {
            bail!("--cpus {c}: give a positive number of CPUs, e.g. 0.5");
        }
        b = b.cpus(c);
    }
    if let Some(path) = netns {
        b = b.network_namespace(path);
    }
    Ok(b.build()?)
}

/// `-v HOST:CONTAINER[:ro|rw]` as a bind mount.
fn parse_volume(v: &str) -> Result<BindMount> {
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
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        other => bail!("-v {v:?}: unknown mode {other:?}; use ro or rw"),
    };
    Ok(BindMount {
        source: PathBuf::from(host),
        destination: ctr.to_string(),
        read_only,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("10485760").unwrap(), 10 << 20);
        assert!(parse_bytes("1k").is_err());
        assert!(parse_bytes("lots").is_err());
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(
            v,
            BindMount {
                source: PathBuf::from("/tmp"),
                destination: "/data".into(),
                read_only: true
            }
        );
        assert!(!parse_volume("/tmp:/data").unwrap().read_only);
        assert!(parse_volume("named:/data")
            .unwrap_err()
            .to_string()
            .contains("named volumes"));
        assert!(parse_volume("/tmp:rel").is_err());
        assert!(parse_volume("/tmp:/x:rx").is_err());
    }
}
