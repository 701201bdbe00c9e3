//! What the agent does to the host's mount table and cgroup filesystems: finding and
//! undoing mounts below a directory, and making, filling, killing and removing cgroups
//! in every hierarchy (v2, or each v1 controller's mount).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn is_mounted(p: &Path) -> bool {
    mounts_below(p).iter().any(|m| m == p)
}

/// Unmounts everything at or below `dir` (lazily: a leftover must never block cleanup).
pub fn unmount_below(dir: &Path) {
    for _ in 0..4 {
        let ms = mounts_below(dir);
        if ms.is_empty() {
            return;
        }
        for m in ms {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The cgroup hierarchies of this machine: the v2 root, or each v1 controller's mount.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    fs::read_dir(base)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

/// Puts process `pid` in the cgroup `path` (made if missing) of the hierarchies that
/// account for resources: the unified one, or v1's cpu, cpuacct, memory, pids and blkio
/// (a new cpuset or devices cgroup would first need its own setup).
pub fn move_into_cgroup(pid: i32, path: &str) -> Result<(), String> {
    let rel = path.trim_start_matches('/');
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for root in cgroup_roots() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let accounts = unified
            || name
                .split(',')
                .any(|c| ["cpu", "cpuacct", "memory", "pids", "blkio"].contains(&c));
        if !accounts {
            continue;
        }
        let dir = root.join(rel);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving {pid} into {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Removes the cgroup `path` (absolute, as in a spec) in every hierarchy, children first.
pub fn remove_cgroup(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for root in cgroup_roots() {
        remove_cgroup_dir(&root.join(rel));
    }
}

/// SIGKILLs every process in the cgroup `path` (in any hierarchy) and waits briefly for
/// them to go.
pub fn kill_cgroup(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for _ in 0..50 {
        let mut any = false;
        for root in cgroup_roots() {
            let Ok(text) = fs::read_to_string(root.join(rel).join("cgroup.procs")) else {
                continue;
            };
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if !any {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn remove_cgroup_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_dir(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The file `name` of the cgroup `path` for `controller`: under the unified hierarchy on
/// cgroup v2, under that controller's mount on v1.
pub fn cgroup_file(controller: &str, path: &str, name: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        base.join(rel).join(name)
    } else {
        base.join(controller).join(rel).join(name)
    }
}

/// A file of the container's memory cgroup (v2 or v1), read as `key value` lines.
pub fn oom_killed(cgroup: &str) -> bool {
    let rel = cgroup.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    let candidates = [
        base.join(rel).join("memory.events"),
        base.join("memory").join(rel).join("memory.oom_control"),
    ];
    for f in candidates {
        if let Ok(text) = fs::read_to_string(&f) {
            let kv: BTreeMap<&str, u64> = text
                .lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    Some((it.next()?, it.next()?.parse().ok()?))
                })
                .collect();
            return kv.get("oom_kill").copied().unwrap_or(0) > 0;
        }
    }
    false
}
