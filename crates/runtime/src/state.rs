//! Persistent container state under the runtime root (`--root`, default `/run/skiff/runtime`).
//!
//! Layout of `<root>/<id>/`:
//! - `state.json`: what `create` learned (init pid and start time, bundle, cgroup path…),
//!   written atomically once the container is created;
//! - `exec.fifo`: present from create until start; `start` writes one byte into it;
//! - `exit.json`: written by the container's monitor when the init exits, so the exit
//!   status survives the process that started the container.
//!
//! The status is derived, never stored: the init process alive (same start time, so a
//! reused pid is not mistaken for it) and the fifo present means "created"; alive and
//! frozen means "paused"; alive means "running"; otherwise "stopped".

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_ROOT: &str = "/run/skiff/runtime";
/// The runtime-spec version skiff implements, reported in every state.
pub const OCI_VERSION: &str = "1.2.0";
pub const STATE_FILE: &str = "state.json";
pub const FIFO_FILE: &str = "exec.fifo";
pub const EXIT_FILE: &str = "exit.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {id:?} does not exist")]
    NotFound { id: String },
    #[error("container with id {id:?} already exists")]
    Exists { id: String },
    #[error("invalid container id {id:?}: use 1-1024 characters from [A-Za-z0-9_+.-], not starting with '.'")]
    InvalidId { id: String },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// OCI status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What `create` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Init pid in the runtime's pid namespace.
    pub pid: i32,
    /// Start time of the init (field 22 of /proc/PID/stat), to detect pid reuse.
    pub pid_start: u64,
    /// Pid of the monitor that waits for the init and writes `exit.json` (0 when the
    /// foreground `run` process is the monitor).
    pub monitor_pid: i32,
    /// Start time of the monitor, to tell it from a process that reused its pid.
    #[serde(default)]
    pub monitor_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub cgroups_path: String,
    pub cgroup_root: PathBuf,
    /// /proc/self/cgroup of the creating process: a relative `cgroups_path` is relative
    /// to it, not to whoever runs a later command.
    #[serde(default)]
    pub cgroup_origin: Option<String>,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// How the init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Shell-style status: the exit code, or 128 + signal when killed by a signal.
    pub status: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
}

/// The state JSON `skiff runtime state` prints: the OCI fields plus runc's extras.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateJson {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub oom_killed: Option<bool>,
}

/// A runtime root directory.
#[derive(Debug, Clone)]
pub struct Root {
    pub dir: PathBuf,
}

pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId { id: id.to_string() })
    }
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Reserve `id`: make its directory, failing if it exists.
    pub fn reserve(&self, id: &str) -> Result<PathBuf, StateError> {
        validate_id(id)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| io("create", &self.dir, e))?;
        let d = self.container_dir(id);
        match std::fs::create_dir(&d) {
            Ok(()) => Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists { id: id.to_string() })
            }
            Err(e) => Err(io("create", &d, e)),
        }
    }

    pub fn load(&self, id: &str) -> Result<Record, StateError> {
        validate_id(id)?;
        let p = self.container_dir(id).join(STATE_FILE);
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound { id: id.to_string() })
            }
            Err(e) => return Err(io("read", &p, e)),
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path: p, source })
    }

    /// Ids of every container with a state file, sorted.
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io("read", &self.dir, e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// Write `data` to `path` atomically (temp file, rename), so readers never see a
/// partial file. No fsync: this state describes live processes and lives on a tmpfs
/// (/run) by default; after a reboot there is nothing for it to describe.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
    f.write_all(data).map_err(|e| io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("rename", path, e))
}

pub fn save_record(dir: &Path, rec: &Record) -> Result<(), StateError> {
    let data = serde_json::to_vec_pretty(rec).map_err(|source| StateError::Corrupt {
        path: dir.join(STATE_FILE),
        source,
    })?;
    write_atomic(&dir.join(STATE_FILE), &data)
}

pub fn save_exit(dir: &Path, exit: &ExitStatus) -> Result<(), StateError> {
    let data = serde_json::to_vec(exit).map_err(|source| StateError::Corrupt {
        path: dir.join(EXIT_FILE),
        source,
    })?;
    write_atomic(&dir.join(EXIT_FILE), &data)
}

pub fn load_exit(dir: &Path) -> Option<ExitStatus> {
    let data = std::fs::read(dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// The OCI state as hooks read it on stdin.
pub fn hook_state(
    id: &str,
    status: Status,
    pid: i32,
    bundle: &Path,
    annotations: &HashMap<String, String>,
) -> Vec<u8> {
    let v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Start time of `pid` in clock ticks since boot, or None if it does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' field 3 (state) is index 0, so field 22 (starttime) is index 19.
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the init recorded in `rec` is still alive (and not a reused pid).
pub fn init_alive(rec: &Record) -> bool {
    rec.pid > 0 && process_start_time(rec.pid) == Some(rec.pid_start)
}

/// RFC 3339 UTC timestamp with nanoseconds, from the system clock.
pub fn now_rfc3339() -> String {
    rfc3339_nanos(std::time::SystemTime::now())
}

/// `t` as RFC 3339 in UTC with nanoseconds (`2024-05-01T12:34:56.123456789Z`).
pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".x", "a/b", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn own_start_time_is_known() {
        let pid = std::process::id() as i32;
        assert!(process_start_time(pid).is_some());
        assert!(process_start_time(i32::MAX).is_none());
    }
}
