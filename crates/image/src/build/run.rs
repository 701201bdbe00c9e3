//! RUN: one command in a skiff runtime container over the stage's layers.
//!
//! Lifecycle: prepare a snapshot `build-<pid>-<n>` over the layers so far, mount its
//! overlay on `<data>/builds/<key>/rootfs` (guarded: unmounted on every path), write a
//! bundle whose typed spec (skiff-container's builder) is the runtime's default (new,
//! empty network namespace: no network) with the stage's Env/WorkingDir/User, run it in the foreground with its stdout and
//! stderr sent to a file (so a failure can report the output), then read the snapshot's
//! upper dir back as layer entries. The snapshot and bundle are removed on drop.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

    let cfg = container_spec(&rootfs, spec)?;
    skiff_container::spec::write(&dir, &cfg).map_err(|e| StepError::Io {
        op: "write the RUN container's config.json in",
        path: dir.clone(),
        source: std::io::Error::other(e),
    })?;

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

/// The RUN container's typed spec: the runtime's default (a new, empty network
/// namespace: no network) with the stage's Env, WorkingDir (created if missing, inside
/// the image) and User (resolved in the image's /etc/passwd and /etc/group).
fn container_spec(rootfs: &Path, spec: &RunSpec<'_>) -> Result<oci_spec::runtime::Spec, StepError> {
    use skiff_container::path::{secure_join, PathError};
    use skiff_container::user;
    secure_join(rootfs, spec.cwd, true).map_err(|e| match e {
        PathError::SymlinkLoop { path } => StepError::SymlinkLoop { path },
        other => StepError::Io {
            op: "create the working directory",
            path: PathBuf::from(spec.cwd),
            source: std::io::Error::other(other),
        },
    })?;
    let user = user::resolve(rootfs, spec.user, &[]).map_err(|e| user_error(rootfs, e))?;
    skiff_container::SpecBuilder::new(spec.argv.clone())
        .env(spec.env.clone())
        .cwd(spec.cwd)
        .user(user)
        .hostname("buildkitsandbox")
        .build()
        .map_err(|e| StepError::Io {
            op: "build the RUN container's spec for",
            path: rootfs.to_path_buf(),
            source: std::io::Error::other(e),
        })
}

/// `uid[:gid]` or names looked up in the image's /etc/passwd and /etc/group (skiff-container's
/// resolver; COPY --chown uses it too).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), StepError> {
    let u = skiff_container::user::resolve(rootfs, user, &[]).map_err(|e| user_error(rootfs, e))?;
    Ok((u.uid, u.gid))
}

fn user_error(rootfs: &Path, e: skiff_container::user::UserError) -> StepError {
    use skiff_container::user::UserError;
    match e {
        UserError::UnknownUser { user } => StepError::UnknownUser { user },
        UserError::UnknownGroup { group } => StepError::UnknownUser { user: group },
        other => StepError::Io {
            op: "resolve the user in",
            path: rootfs.join("etc"),
            source: std::io::Error::other(other),
        },
    }
}
