//! Shared plumbing of the v1 and v2 managers: reading and writing interface files with
//! path/value context, `cgroupsPath` validation, `/proc/self/{cgroup,mountinfo}` parsing,
//! and the mkdir/rmdir/poll helpers both versions use the same way.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;

/// Write `value` to an existing interface file. `O_TRUNC` without `O_CREAT`: cgroupfs never
/// lets us create files, and a missing file must surface as an error, not a stray file.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let res = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    res.map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Like [`write`], but a missing file means the controller (or that knob of it) is not
/// available, which deserves a clearer error than ENOENT.
pub(crate) fn write_knob(
    path: &Path,
    value: &str,
    controller: &'static str,
    field: &'static str,
) -> Result<(), CgroupError> {
    if !path.exists() {
        return Err(CgroupError::MissingController { controller, field });
    }
    write(path, value)
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    read_whole(path).map_err(|e| CgroupError::io("read", path, e))
}

/// Read a file whose size stat does not know (procfs, cgroupfs) with one large read
/// instead of a series of growing small ones.
pub(crate) fn read_whole(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::with_capacity(16 * 1024);
    std::fs::File::open(path)?.read_to_string(&mut s)?;
    Ok(s)
}

/// `None` when the file does not exist (controller absent or knob not supported).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io("read", path, e)),
    }
}

pub(crate) fn parse_error(path: &Path, content: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        content: content.chars().take(200).collect(),
        reason: reason.into(),
    }
}

/// A single number; `"max"` (the kernel's "unlimited") becomes `max_value`.
pub(crate) fn parse_u64(path: &Path, content: &str, max_value: u64) -> Result<u64, CgroupError> {
    let t = content.trim();
    if t == "max" {
        return Ok(max_value);
    }
    t.parse::<u64>()
        .map_err(|e| parse_error(path, content, format!("not an unsigned number: {e}")))
}

/// Missing file → 0, which is what runc reports for counters the host does not have.
pub(crate) fn read_u64_or_zero(path: &Path, max_value: u64) -> Result<u64, CgroupError> {
    match read_opt(path)? {
        Some(s) => parse_u64(path, &s, max_value),
        None => Ok(0),
    }
}

/// "key value" lines (memory.stat, cpu.stat, memory.events, cgroup.events…).
pub(crate) fn parse_flat_keyed(
    path: &Path,
    content: &str,
) -> Result<BTreeMap<String, u64>, CgroupError> {
    let mut out = BTreeMap::new();
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(parse_error(path, line, "expected \"key value\""));
        };
        let v = v
            .parse::<u64>()
            .map_err(|e| parse_error(path, line, format!("bad value: {e}")))?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// Flat-keyed file, empty map when the file is missing.
pub(crate) fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    match read_opt(path)? {
        Some(s) => parse_flat_keyed(path, &s),
        None => Ok(BTreeMap::new()),
    }
}

/// The components of a validated `cgroupsPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupsPath {
    pub absolute: bool,
    pub components: Vec<String>,
}

pub(crate) fn parse_cgroups_path(raw: &str) -> Result<CgroupsPath, CgroupError> {
    let invalid = |reason: &str| CgroupError::Invalid {
        field: "cgroupsPath",
        value: raw.to_string(),
        reason: reason.to_string(),
    };
    if raw.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut components = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid("\"..\" components are not allowed")),
            c => components.push(c.to_string()),
        }
    }
    if components.is_empty() {
        // The root of a hierarchy is never a container's cgroup: destroy would try to
        // remove it and apply would limit the whole host.
        return Err(invalid("names no cgroup below the hierarchy root"));
    }
    Ok(CgroupsPath {
        absolute: raw.starts_with('/'),
        components,
    })
}

/// One line of `/proc/<pid>/cgroup`: the controllers of a hierarchy ("" for the unified
/// one) and the process's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(content: &str) -> Vec<ProcCgroup> {
    content
        .lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let (_id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            let mut controllers: Vec<String> = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            controllers.sort();
            Some(ProcCgroup {
                controllers,
                path: path.to_string(),
            })
        })
        .collect()
}

/// The fields of a `/proc/self/mountinfo` line this layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// Root of the mount within its filesystem (not "/" under a cgroup namespace or a
    /// bind mount of a sub-cgroup).
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

pub(crate) fn parse_mountinfo(content: &str) -> Vec<MountInfo> {
    content
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let _source = post.next()?;
            let super_options = post.next().unwrap_or("");
            Some(MountInfo {
                root: unescape_octal(pre.get(3)?),
                mount_point: PathBuf::from(unescape_octal(pre.get(4)?)),
                fstype: fstype.to_string(),
                super_options: super_options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the process's cgroup `cg_path` (as in /proc/self/cgroup) lives below a mount
/// whose root is `mount_root`.
pub(crate) fn own_cgroup_dir(mount_point: &Path, mount_root: &str, cg_path: &str) -> PathBuf {
    let root = mount_root.trim_end_matches('/');
    let rel = match cg_path.strip_prefix(root) {
        Some(rest) if root.is_empty() || rest.is_empty() || rest.starts_with('/') => rest,
        // The process is outside the mounted subtree; the best we can do is the path as is.
        _ => cg_path,
    };
    join_components(
        mount_point,
        rel.split('/').filter(|c| !c.is_empty() && *c != "."),
    )
}

pub(crate) fn join_components<'a>(
    base: &Path,
    comps: impl IntoIterator<Item = &'a str>,
) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in comps {
        p.push(c);
    }
    p
}

/// Test-only callbacks standing in for what the kernel does on mkdir/rmdir of a cgroup
/// (populating and discarding interface files); zero-sized outside tests.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FsHooks {
    #[cfg(test)]
    pub on_mkdir: Option<fn(&Path)>,
    #[cfg(test)]
    pub on_rmdir: Option<fn(&Path)>,
}

impl FsHooks {
    fn after_mkdir(&self, _dir: &Path) {
        #[cfg(test)]
        if let Some(h) = self.on_mkdir {
            h(_dir)
        }
    }
    fn before_rmdir(&self, _dir: &Path) {
        #[cfg(test)]
        if let Some(h) = self.on_rmdir {
            h(_dir)
        }
    }
}

/// mkdir one level; `Ok(true)` when this call created it.
pub(crate) fn mkdir(dir: &Path, hooks: &FsHooks) -> Result<bool, CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            hooks.after_mkdir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CgroupError::io("create directory", dir, e)),
    }
}

/// Levels from `base` (exclusive) down to `base/components…` (inclusive).
pub(crate) fn levels(base: &Path, components: &[&str]) -> Vec<PathBuf> {
    let mut cur = base.to_path_buf();
    components
        .iter()
        .map(|c| {
            cur.push(c);
            cur.clone()
        })
        .collect()
}

const LEAF_RMDIR_ATTEMPTS: u32 = 10;

/// Remove a container's cgroup: sub-cgroups deepest first, then `leaf` (retrying while the
/// kernel still reports it busy, as exiting processes linger briefly), then `created`
/// ancestors deepest first, leaving any that are shared and still in use.
pub(crate) fn remove_cgroup(
    leaf: &Path,
    created_ancestors: &[PathBuf],
    hooks: &FsHooks,
) -> Result<(), CgroupError> {
    // Most containers make no sub-cgroups: try the leaf first, and list it (a readdir per
    // hierarchy) only when the kernel refuses.
    let removed = match rmdir(leaf, hooks) {
        Ok(()) => true,
        Err(e) => e.kind() == ErrorKind::NotFound,
    };
    if !removed {
        remove_descendants(leaf, hooks)?;
        remove_leaf(leaf, hooks)?;
    }
    let mut ancestors: Vec<&PathBuf> = created_ancestors.iter().filter(|p| *p != leaf).collect();
    ancestors.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for dir in ancestors {
        match rmdir(dir, hooks) {
            Ok(()) => {}
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    || matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
            Err(e) => return Err(CgroupError::io("remove directory", dir, e)),
        }
    }
    Ok(())
}

/// rmdir `leaf`, retrying while the kernel still reports it busy.
fn remove_leaf(leaf: &Path, hooks: &FsHooks) -> Result<(), CgroupError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match rmdir(leaf, hooks) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EBUSY))
                    && attempt < LEAF_RMDIR_ATTEMPTS =>
            {
                std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Busy {
                    path: leaf.to_path_buf(),
                    attempts: attempt,
                })
            }
            Err(e) => return Err(CgroupError::io("remove directory", leaf, e)),
        }
    }
    Ok(())
}

fn rmdir(dir: &Path, hooks: &FsHooks) -> std::io::Result<()> {
    hooks.before_rmdir(dir);
    std::fs::remove_dir(dir)
}

fn remove_descendants(dir: &Path, hooks: &FsHooks) -> Result<(), CgroupError> {
    for child in subdirs(dir)? {
        remove_descendants(&child, hooks)?;
        match rmdir(&child, hooks) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Busy {
                    path: child,
                    attempts: 1,
                })
            }
            Err(e) => return Err(CgroupError::io("remove directory", child, e)),
        }
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io("list", dir, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| CgroupError::io("stat", entry.path(), e))?
            .is_dir();
        if is_dir {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Every pid in `cgroup.procs` of `dir` and its sub-cgroups, sorted and deduplicated.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let file = d.join("cgroup.procs");
        let Some(content) = read_opt(&file)? else {
            continue;
        };
        for line in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let pid = line
                .parse::<i32>()
                .map_err(|e| parse_error(&file, line, format!("bad pid: {e}")))?;
            out.push(pid);
        }
        stack.extend(subdirs(&d)?);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Poll `probe` until it returns `Ok(None)` or `deadline` passes; `probe` returns the
/// state it saw when not yet done, which goes into the timeout error.
pub(crate) fn poll_until(
    path: &Path,
    wanted: &'static str,
    timeout: Duration,
    mut probe: impl FnMut(u32) -> Result<Option<String>, CgroupError>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        let last = match probe(attempt)? {
            None => return Ok(()),
            Some(last) => last,
        };
        if start.elapsed() >= timeout {
            return Err(CgroupError::Timeout {
                path: path.to_path_buf(),
                wanted,
                last,
                waited: start.elapsed(),
            });
        }
        attempt += 1;
        // Short sleeps first: freezing an idle cgroup takes microseconds.
        std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20))));
    }
}

/// Hugepage sizes in OCI specs look like "2MB" / "1GB"; anything else could smuggle a path
/// into the file name.
pub(crate) fn validate_page_size(size: &str) -> Result<(), CgroupError> {
    let digits = size.trim_end_matches(['B', 'K', 'M', 'G', 'T', 'P']);
    let unit = &size[digits.len()..];
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB" | "TB" | "PB");
    if ok {
        Ok(())
    } else {
        Err(CgroupError::Invalid {
            field: "hugepageLimits.pageSize",
            value: size.to_string(),
            reason: "expected a size like 2MB or 1GB".to_string(),
        })
    }
}

/// Hugepage sizes that have interface files in `dir`, from names like
/// `hugetlb.2MB.<suffix>`.
pub(crate) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io("list", dir, e)),
    };
    let mut sizes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(size) = name
            .strip_prefix("hugetlb.")
            .and_then(|r| r.strip_suffix(suffix))
            .and_then(|r| r.strip_suffix('.'))
        {
            // "2MB.rsvd" belongs to the reservation counters, not a page size.
            if !size.contains('.') {
                sizes.push(size.to_string());
            }
        }
    }
    sizes.sort();
    Ok(sizes)
}

/// One `rdma.max` line ("mlx4_0 hca_handle=2 hca_object=2000"); same format on v1 and v2.
pub(crate) fn rdma_line(
    device: &str,
    limit: &oci_spec::runtime::LinuxRdma,
) -> Result<String, CgroupError> {
    if device.is_empty() || device.contains(char::is_whitespace) {
        return Err(CgroupError::Invalid {
            field: "rdma",
            value: device.to_string(),
            reason: "device names cannot be empty or contain whitespace".to_string(),
        });
    }
    let mut line = device.to_string();
    if let Some(h) = limit.hca_handles() {
        line.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = limit.hca_objects() {
        line.push_str(&format!(" hca_object={o}"));
    }
    Ok(line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn cgroups_path_validation() {
        let p = parse_cgroups_path("/skiff/abc").unwrap();
        assert!(p.absolute);
        assert_eq!(p.components, vec!["skiff", "abc"]);
        let p = parse_cgroups_path("skiff//./abc/").unwrap();
        assert!(!p.absolute);
        assert_eq!(p.components, vec!["skiff", "abc"]);
        for bad in ["/skiff/../etc", "..", "a/../../b", "/", "", "./"] {
            assert!(
                matches!(
                    parse_cgroups_path(bad),
                    Err(CgroupError::Invalid {
                        field: "cgroupsPath",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn proc_cgroup_and_mountinfo_parsing() {
        let pc = parse_proc_cgroup("4:memory:/a/b\n2:cpuacct,cpu:/\n1:name=systemd:/x\n0::/u\n");
        assert_eq!(pc[0].controllers, vec!["memory"]);
        assert_eq!(pc[0].path, "/a/b");
        assert_eq!(pc[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(pc[2].controllers, vec!["name=systemd"]);
        assert!(pc[3].controllers.is_empty());

        let mi = parse_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct\n\
             41 31 0:38 /sub /sys/fs/cgroup/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            mi[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(mi[0].fstype, "cgroup");
        assert_eq!(mi[0].super_options, vec!["rw", "cpu", "cpuacct"]);
        assert_eq!(mi[1].root, "/sub");
        assert_eq!(
            mi[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/with space")
        );
    }

    #[test]
    fn own_cgroup_dir_strips_mount_root() {
        let mp = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(own_cgroup_dir(mp, "/", "/a/b"), mp.join("a/b"));
        assert_eq!(own_cgroup_dir(mp, "/a", "/a/b"), mp.join("b"));
        assert_eq!(own_cgroup_dir(mp, "/a", "/a"), mp.to_path_buf());
        assert_eq!(own_cgroup_dir(mp, "/a", "/ab/c"), mp.join("ab/c"));
    }

    #[test]
    fn flat_keyed_and_numbers() {
        let p = Path::new("memory.events");
        let m = parse_flat_keyed(p, "low 0\nhigh 1\noom_kill 3\n").unwrap();
        assert_eq!(m["oom_kill"], 3);
        assert!(matches!(
            parse_flat_keyed(p, "low x\n"),
            Err(CgroupError::Parse { .. })
        ));
        assert_eq!(parse_u64(p, "max\n", u64::MAX).unwrap(), u64::MAX);
        assert_eq!(parse_u64(p, " 42\n", 0).unwrap(), 42);
    }

    #[test]
    fn page_sizes() {
        for ok in ["2MB", "1GB", "64KB"] {
            validate_page_size(ok).unwrap();
        }
        for bad in ["", "MB", "2mb", "../2MB", "2MB/x", "2"] {
            assert!(validate_page_size(bad).is_err(), "{bad:?}");
        }
    }
}
