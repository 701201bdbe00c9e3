//! RUN: one command in a skiff runtime container over the stage's layers.
//!
//! Lifecycle: prepare a snapshot `build-<pid>-<n>` over the layers so far, mount its
//! overlay on `<data>/builds/<key>/rootfs` (guarded: unmounted on every path), write a
//! bundle whose spec is the runtime's default (new, empty network namespace: no network)
//! with the stage's Env/WorkingDir/User, run it in the foreground with its stdout and
//! stderr sent to a file (so a failure can report the output), then read the snapshot's
//! upper dir back as layer entries. The snapshot and bundle are removed on drop.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::layer::{self, Entries};
use super::StepError;
use crate::digest::Digest;
use crate::mount::MountGuard;
use crate::snapshot::{OverlaySnapshotter, Snapshotter};

/// What the container runs with.
pub struct RunSpec<'a> {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: &'a str,
    pub user: &'a str,
}

/// Removes the snapshot and bundle dir when dropped (after the mount guard).
struct Cleanup<'a> {
    snapshots: &'a OverlaySnapshotter,
    key: String,
    dir: PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.snapshots.remove(&self.key);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StepError + 'a {
    move |source| StepError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs `spec` over `layers`; returns the command's output and the layer entries it
/// produced (from the upper dir), or `RunFailed` with the output.
pub fn run(
    snapshots: &OverlaySnapshotter,
    data_dir: &Path,
    runtime_root: &Path,
    layers: &[Digest],
    spec: &RunSpec<'_>,
    f: impl FnOnce(&Entries) -> Result<(), StepError>,
) -> Result<String, StepError> {
    let key = format!(
        "build-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = data_dir.join("builds").join(&key);
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
    let mounts = snapshots.prepare(&key, layers)?;
    let _cleanup = Cleanup {
        snapshots,
        key: key.clone(),
        dir: dir.clone(),
    };
    let guard = MountGuard::mount(&mounts, &rootfs)?;

    make_workdir(&rootfs, spec.cwd)?;
    let (uid, gid) = resolve_user(&rootfs, spec.user)?;
    let mut cfg = skiff_runtime::default_spec::default_config(false);
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(spec.argv);
    cfg["process"]["env"] = json!(spec.env);
    cfg["process"]["cwd"] = json!(spec.cwd);
    cfg["process"]["user"] = json!({"uid": uid, "gid": gid});
    cfg["root"] = json!({"path": "rootfs", "readonly": false});
    cfg["hostname"] = json!("buildkitsandbox");
    let cfg_path = dir.join("config.json");
    let bytes = serde_json::to_vec_pretty(&cfg).map_err(|source| StepError::Json {
        what: "the RUN container's config.json",
        source,
    })?;
    fs::write(&cfg_path, bytes).map_err(io_err("write", &cfg_path))?;

    let out_path = dir.join("output");
    let out_file = fs::File::create(&out_path).map_err(io_err("create", &out_path))?;
    let runtime = skiff_runtime::Runtime::new(runtime_root);
    let opts = skiff_runtime::CreateOptions {
        id: key.clone(),
        bundle: dir.clone(),
        ..Default::default()
    };
    let result = with_output_to(&out_file, || runtime.run(&opts, false, false))?;
    let mut output = String::new();
    fs::File::open(&out_path)
        .and_then(|mut f| f.read_to_string(&mut output))
        .map_err(io_err("read", &out_path))?;
    guard.unmount()?;
    let code = result.map_err(|source| StepError::Runtime {
        source: Box::new(source),
    })?;
    if code != 0 {
        return Err(StepError::RunFailed { code, output });
    }
    let upper = snapshots.upper_dir(&key)?;
    let entries = layer::from_upper(&upper)?;
    f(&entries)?;
    Ok(output)
}

/// Runs `f` with this process's stdout and stderr pointing at `file` and stdin at
/// /dev/null (the container inherits them: RUN never reads the builder's terminal, as
/// in Docker), restoring all three afterwards whatever happens.
fn with_output_to<T>(file: &fs::File, f: impl FnOnce() -> T) -> Result<T, StepError> {
    use std::io::Write;
    let dup_err = |source: nix::Error| StepError::Redirect { source };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let devnull = fs::File::open("/dev/null").map_err(io_err("open", Path::new("/dev/null")))?;
    let _restore = Restore {
        stdin: nix::unistd::dup(std::io::stdin()).map_err(dup_err)?,
        stdout: nix::unistd::dup(std::io::stdout()).map_err(dup_err)?,
        stderr: nix::unistd::dup(std::io::stderr()).map_err(dup_err)?,
    };
    nix::unistd::dup2_stdin(&devnull).map_err(dup_err)?;
    nix::unistd::dup2_stdout(file).map_err(dup_err)?;
    nix::unistd::dup2_stderr(file).map_err(dup_err)?;
    Ok(f())
}

/// The builder's own stdio, put back on drop.
struct Restore {
    stdin: std::os::fd::OwnedFd,
    stdout: std::os::fd::OwnedFd,
    stderr: std::os::fd::OwnedFd,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Nothing sensible to do if restoring fails: the descriptors were valid a moment
        // ago, and there is no stderr left to report on.
        let _ = nix::unistd::dup2_stdin(&self.stdin);
        let _ = nix::unistd::dup2_stdout(&self.stdout);
        let _ = nix::unistd::dup2_stderr(&self.stderr);
    }
}

/// Docker creates a missing WORKDIR before RUN. Components that are symlinks are left to
/// the container to resolve: creating through them could reach outside the rootfs.
fn make_workdir(rootfs: &Path, cwd: &str) -> Result<(), StepError> {
    let mut p = rootfs.to_path_buf();
    for c in cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return Ok(());
        }
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(()),
            Err(_) => fs::create_dir(&p).map_err(io_err("create working directory", &p))?,
        }
    }
    Ok(())
}

/// `uid[:gid]` or names looked up in the image's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), StepError> {
    let read = |f: &str| -> String {
        let etc = rootfs.join("etc");
        let p = etc.join(f);
        let plain = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink());
        if plain(&etc) && plain(&p) {
            fs::read_to_string(p).unwrap_or_default()
        } else {
            String::new()
        }
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let lookup = |file: &str, name: &str, id_field: usize| -> Option<(u32, u32)> {
        read(file).lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() > id_field && f[0] == name {
                let id = f[id_field].parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0);
                Some((id, gid))
            } else {
                None
            }
        })
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(n) => (n, 0),
        Err(_) => lookup("passwd", u, 2).ok_or_else(|| StepError::UnknownUser {
            user: u.to_string(),
        })?,
    };
    if let Some(g) = g {
        gid =
            match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup("group", g, 2).map(|(id, _)| id).ok_or_else(|| {
                    StepError::UnknownUser {
                        user: g.to_string(),
                    }
                })?,
            };
    }
    Ok((uid, gid))
}
