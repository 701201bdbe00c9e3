//! The containers `skiff run` made: their records, names, and the commands that manage
//! them (`skiff ps | logs | stop | rm | exec`).
//!
//! Layout under the data dir:
//! ```text
//! containers/<id>/container.json   this module's record (Meta), rewritten atomically
//! containers/<id>/bundle/           the OCI bundle (rootfs is the overlay mount point)
//! containers/<id>/0.log             a detached container's output, CRI log format
//! containers/<id>/shim.sock         its shim's task socket (while the shim runs)
//! containers/<id>/shim.log          the shim's own diagnostics
//! container-names/<name> -> <id>    a symlink: creating it atomically reserves the name
//! ```
//! A container's *owner* is the process that waits for it: the foreground `skiff run`,
//! or the shim of a detached one (skiff-container's shim, wired up in shim.rs). The
//! container is running while its record says so and its owner (pid + start time) is
//! alive; the owner writes the exit code.

pub mod attach;
pub mod cmds;
pub mod netns;
pub mod ports;
pub mod shim;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use skiff_container::ContainerState;

pub use ports::PortMap;

/// A container's record (`container.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub name: String,
    /// The image reference as given.
    pub image: String,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    #[serde(default)]
    pub ports: Vec<PortMap>,
    #[serde(default)]
    pub rm: bool,
    #[serde(default)]
    pub detached: bool,
    /// The image's STOPSIGNAL (default SIGTERM).
    pub stop_signal: String,
    pub state: ContainerState,
    #[serde(default)]
    pub owner_pid: i32,
    #[serde(default)]
    pub owner_start: u64,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub finished: Option<u64>,
}

/// Where containers live under a data dir.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data: PathBuf,
}

impl Paths {
    pub fn new(data: &Path) -> Self {
        Paths {
            data: data.to_path_buf(),
        }
    }
    pub fn containers(&self) -> PathBuf {
        self.data.join("containers")
    }
    pub fn dir(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    pub fn meta(&self, id: &str) -> PathBuf {
        self.dir(id).join("container.json")
    }
    /// The CRI log of the container's first (only) instance.
    pub fn log(&self, id: &str) -> PathBuf {
        skiff_container::log::instance_path(&self.dir(id), 0)
    }
    pub fn socket(&self, id: &str) -> PathBuf {
        self.dir(id).join("shim.sock")
    }
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir(id).join("bundle")
    }
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.bundle(id).join("rootfs")
    }
    pub fn names(&self) -> PathBuf {
        self.data.join("container-names")
    }
    pub fn name_link(&self, name: &str) -> PathBuf {
        self.names().join(name)
    }

    pub fn load(&self, id: &str) -> Result<Meta> {
        let p = self.meta(id);
        let b = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))
    }

    /// Rewrites the record atomically (readers never see half of it).
    pub fn save(&self, m: &Meta) -> Result<()> {
        let p = self.meta(&m.id);
        let tmp = p.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(m)?)
            .and_then(|_| fs::rename(&tmp, &p))
            .with_context(|| format!("writing {}", p.display()))
    }

    /// Reserves `name` for `id`; fails clearly if another container has it.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        validate_name(name)?;
        fs::create_dir_all(self.names())
            .with_context(|| format!("creating {}", self.names().display()))?;
        match std::os::unix::fs::symlink(id, self.name_link(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let other = fs::read_link(self.name_link(name))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                bail!(
                    "the container name {name:?} is already in use by container {}; remove it (skiff rm {name}) or pick another --name",
                    short(&other)
                )
            }
            Err(e) => Err(e).with_context(|| format!("reserving name {name}")),
        }
    }

    /// Every container record, newest first.
    pub fn list(&self) -> Result<Vec<Meta>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(self.containers()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).context("listing containers"),
        };
        for e in rd {
            let e = e?;
            if let Some(id) = e.file_name().to_str() {
                // A container being created or removed may have no record yet/anymore.
                if let Ok(m) = self.load(id) {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// A container by name, full ID or unique ID prefix (as docker resolves them).
    pub fn resolve(&self, what: &str) -> Result<Meta> {
        if what.is_empty() {
            bail!("no container given");
        }
        if let Ok(id) = fs::read_link(self.name_link(what)) {
            if let Ok(m) = self.load(&id.to_string_lossy()) {
                return Ok(m);
            }
        }
        let all = self.list()?;
        let hits: Vec<&Meta> = all.iter().filter(|m| m.id.starts_with(what)).collect();
        match hits.as_slice() {
            [m] => Ok((*m).clone()),
            [] => bail!("no such container: {what} (see skiff ps -a)"),
            many => bail!(
                "{what:?} is ambiguous: it matches {} containers ({}); give more of the ID or the name",
                many.len(),
                many.iter()
                    .map(|m| short(&m.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Meta {
    /// Whether the owner (foreground `skiff run` or shim) still waits for the container.
    pub fn running(&self) -> bool {
        self.state == ContainerState::Running && self.owner_alive()
    }

    fn owner_alive(&self) -> bool {
        self.owner_pid > 0
            && skiff_runtime::state::process_start_time(self.owner_pid) == Some(self.owner_start)
    }

    /// What `skiff ps` shows.
    pub fn status(&self) -> skiff_container::Status {
        skiff_container::Status::of(
            self.state,
            self.owner_alive(),
            self.exit_code,
            self.finished,
        )
    }
}

/// Docker's short ID: the first 12 characters.
pub fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

pub fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-', '_'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        bail!("invalid container name {name:?}: use 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit");
    }
    Ok(())
}

/// A container ID: 32 random hex characters (Docker uses 64; the runtime's state paths
/// and the snapshot key prefer shorter).
pub fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
