//! Fake cgroup filesystems for tests: temporary directories laid out like the kernel's
//! cgroupfs, with mkdir/rmdir hooks that populate and discard interface files the way the
//! kernel does (v2: a child gets the files of the controllers its parent enabled).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fs::FsHooks;
use super::v1::V1Manager;
use super::v2::V2Manager;

const V1_MARKER: &str = ".fake-v1-controllers";
const V2_MARKER: &str = ".fake-cgroup2";

pub(crate) fn hooks() -> FsHooks {
    FsHooks {
        on_mkdir: Some(fake_mkdir),
        on_rmdir: Some(fake_rmdir),
    }
}

pub(crate) fn put(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub(crate) fn get(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn fake_mkdir(dir: &Path) {
    for anc in dir.ancestors() {
        if let Ok(ctrls) = std::fs::read_to_string(anc.join(V1_MARKER)) {
            let ctrls: Vec<&str> = ctrls.split(',').collect();
            populate_v1(dir, &ctrls, false);
            return;
        }
        if anc.join(V2_MARKER).exists() {
            populate_v2_child(dir);
            return;
        }
    }
    panic!("{} is not inside a fake cgroup fs", dir.display());
}

/// The kernel drops a cgroup's interface files with it; only directories with sub-cgroups
/// keep them (rmdir then fails with ENOTEMPTY, like EBUSY on the real thing).
fn fake_rmdir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let entries: Vec<_> = entries.flatten().collect();
    if entries.iter().any(|e| e.path().is_dir()) {
        return;
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        return;
    }
    for e in entries {
        let _ = std::fs::remove_file(e.path());
    }
}

fn populate_v1(dir: &Path, controllers: &[&str], root: bool) {
    put(&dir.join("cgroup.procs"), "");
    put(&dir.join("tasks"), "");
    for c in controllers {
        let files: &[(&str, &str)] = match *c {
            "cpu" => &[
                ("cpu.shares", "1024\n"),
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.rt_period_us", "1000000\n"),
                ("cpu.rt_runtime_us", "0\n"),
                (
                    "cpu.stat",
                    "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
                ),
            ],
            "cpuacct" => &[
                ("cpuacct.usage", "0\n"),
                ("cpuacct.usage_percpu", "0 0 \n"),
                ("cpuacct.stat", "user 0\nsystem 0\n"),
            ],
            "cpuset" if root => &[("cpuset.cpus", "0-1\n"), ("cpuset.mems", "0\n")],
            "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")],
            "memory" => &[
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.soft_limit_in_bytes", "9223372036854771712\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.swappiness", "60\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                ),
                ("memory.usage_in_bytes", "0\n"),
                ("memory.max_usage_in_bytes", "0\n"),
                ("memory.failcnt", "0\n"),
                ("memory.memsw.usage_in_bytes", "0\n"),
                ("memory.stat", "cache 0\nrss 0\n"),
            ],
            "devices" => &[
                ("devices.allow", ""),
                ("devices.deny", ""),
                ("devices.list", "a *:* rwm\n"),
            ],
            "freezer" => &[("freezer.state", "THAWED\n")],
            "blkio" => &[
                ("blkio.weight", "500\n"),
                ("blkio.weight_device", ""),
                ("blkio.leaf_weight", "500\n"),
                ("blkio.throttle.read_bps_device", ""),
                ("blkio.throttle.write_bps_device", ""),
                ("blkio.throttle.read_iops_device", ""),
                ("blkio.throttle.write_iops_device", ""),
                ("blkio.throttle.io_service_bytes_recursive", "Total 0\n"),
                ("blkio.throttle.io_serviced_recursive", "Total 0\n"),
            ],
            "pids" => &[("pids.max", "max\n"), ("pids.current", "0\n")],
            "hugetlb" => &[
                ("hugetlb.2MB.limit_in_bytes", "9223372036854771712\n"),
                ("hugetlb.2MB.usage_in_bytes", "0\n"),
                ("hugetlb.2MB.max_usage_in_bytes", "0\n"),
                ("hugetlb.2MB.failcnt", "0\n"),
                ("hugetlb.2MB.rsvd.usage_in_bytes", "0\n"),
            ],
            "net_cls" => &[("net_cls.classid", "0\n")],
            "net_prio" => &[("net_prio.ifpriomap", "lo 0\n")],
            _ => &[],
        };
        for (name, content) in files {
            put(&dir.join(name), content);
        }
    }
}

/// A v1 host: one tempdir per hierarchy, named like the mount points.
pub(crate) struct FakeV1 {
    pub tmp: tempfile::TempDir,
    pub hierarchies: Vec<(Vec<String>, PathBuf)>,
}

impl FakeV1 {
    pub fn new() -> Self {
        Self::with_layout(&[
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "devices",
            "freezer",
            "blkio",
            "pids",
            "hugetlb",
            "net_cls,net_prio",
            "name=systemd",
        ])
    }

    /// `mounts` are comma-separated controller lists, one per hierarchy.
    pub fn with_layout(mounts: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut hierarchies = Vec::new();
        for m in mounts {
            let name = m.strip_prefix("name=").unwrap_or(m);
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            put(&dir.join(V1_MARKER), m);
            let ctrls: Vec<&str> = m.split(',').collect();
            populate_v1(&dir, &ctrls, true);
            hierarchies.push((ctrls.iter().map(|c| c.to_string()).collect(), dir));
        }
        FakeV1 { tmp, hierarchies }
    }

    pub fn manager(&self, cgroups_path: &str) -> V1Manager {
        V1Manager::with_hierarchies(self.hierarchies.clone(), cgroups_path)
            .unwrap()
            .with_test_hooks(hooks(), Duration::from_millis(50))
    }

    pub fn mount(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// A cgroup2 mount: root offering `controllers`, nothing enabled yet.
pub(crate) struct FakeV2 {
    pub tmp: tempfile::TempDir,
}

impl FakeV2 {
    pub fn new(controllers: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        put(&root.join(V2_MARKER), "");
        put(
            &root.join("cgroup.controllers"),
            &format!("{controllers}\n"),
        );
        put(&root.join("cgroup.subtree_control"), "");
        put(&root.join("cgroup.procs"), "");
        FakeV2 { tmp }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn manager(&self, cgroups_path: &str) -> V2Manager {
        V2Manager::new(self.root(), cgroups_path)
            .unwrap()
            .with_test_hooks(hooks(), Duration::from_millis(50))
    }
}

/// What a new v2 cgroup looks like: the controllers its parent enabled, and their files.
fn populate_v2_child(dir: &Path) {
    let parent = dir.parent().unwrap();
    let enabled: Vec<String> = std::fs::read_to_string(parent.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|t| t.trim_start_matches('+').to_string())
        .collect();
    put(
        &dir.join("cgroup.controllers"),
        &format!("{}\n", enabled.join(" ")),
    );
    put(&dir.join("cgroup.subtree_control"), "");
    put(&dir.join("cgroup.procs"), "");
    put(&dir.join("cgroup.freeze"), "0\n");
    put(&dir.join("cgroup.events"), "populated 0\nfrozen 0\n");
    put(
        &dir.join("cpu.stat"),
        "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    );
    put(&dir.join("memory.pressure"), "");
    for c in &enabled {
        let files: &[(&str, &str)] = match c.as_str() {
            "cpu" => &[
                ("cpu.weight", "100\n"),
                ("cpu.max", "max 100000\n"),
                ("cpu.max.burst", "0\n"),
                ("cpu.idle", "0\n"),
                (
                    "cpu.stat",
                    "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
                ),
            ],
            "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")],
            "io" => &[("io.weight", "default 100\n"), ("io.max", ""), ("io.stat", "")],
            "memory" => &[
                ("memory.max", "max\n"),
                ("memory.low", "0\n"),
                ("memory.swap.max", "max\n"),
                ("memory.current", "0\n"),
                ("memory.swap.current", "0\n"),
                ("memory.stat", "anon 0\nfile 0\n"),
                ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
            ],
            "hugetlb" => &[
                ("hugetlb.2MB.max", "max\n"),
                ("hugetlb.2MB.current", "0\n"),
                ("hugetlb.2MB.events", "max 0\n"),
                ("hugetlb.1GB.max", "max\n"),
                ("hugetlb.1GB.current", "0\n"),
                ("hugetlb.1GB.events", "max 0\n"),
            ],
            "pids" => &[("pids.max", "max\n"), ("pids.current", "0\n")],
            _ => &[],
        };
        for (name, content) in files {
            put(&dir.join(name), content);
        }
    }
}
