//! cgroup v1 manager (also used on hybrid hosts, whose unified mount it ignores).
//!
//! Hierarchies are discovered from `/proc/self/mountinfo` (type `cgroup`, below the given
//! root), with the controllers taken from each mount's super options, so co-mounted
//! layouts such as `cpu,cpuacct` and named hierarchies (`name=systemd`) work without a
//! hard-coded list. The container gets one directory per hierarchy; limits go to the
//! hierarchy that carries the controller. A limit whose controller is not mounted is an
//! error, except hugetlb and network priorities/class ids, which are skipped with a warning
//! because hosts commonly lack those hierarchies.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::fs::{self, FsHooks};
use super::stats;
use super::{devices, CgroupError, CgroupManager, CgroupMountSource, CgroupVersion, Stats};

const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// One hierarchy as seen by this container.
#[derive(Debug, Clone)]
struct Hierarchy {
    /// Sorted controller names ("cpu", "cpuacct", "name=systemd").
    controllers: Vec<String>,
    mount_point: PathBuf,
    /// Existing directory the container's path is created under: the mount point for an
    /// absolute `cgroupsPath`, the process's own cgroup for a relative one.
    base: PathBuf,
    /// The container's directory.
    dir: PathBuf,
}

/// A mounted v1 hierarchy.
#[derive(Debug, Clone)]
struct Mount {
    controllers: Vec<String>,
    mount_point: PathBuf,
    mount_root: String,
}

#[derive(Debug)]
pub struct V1Manager {
    hierarchies: Vec<Hierarchy>,
    components: Vec<String>,
    /// Directories `create` made, so `destroy` removes exactly those plus the leaf.
    created: Mutex<Vec<PathBuf>>,
    hooks: FsHooks,
    freeze_timeout: Duration,
}

impl V1Manager {
    /// The manager for `cgroups_path` over every v1 hierarchy mounted below `root`.
    pub fn new(root: &Path, cgroups_path: &str) -> Result<Self, CgroupError> {
        Self::new_from(root, cgroups_path, None)
    }

    /// Like `new`, resolving a relative path against `origin` (the text of
    /// /proc/self/cgroup of the process that created the container) instead of ours.
    pub fn new_from(
        root: &Path,
        cgroups_path: &str,
        origin: Option<&str>,
    ) -> Result<Self, CgroupError> {
        let path = fs::parse_cgroups_path(cgroups_path)?;
        let proc_cgroup = match origin {
            Some(o) => o.to_string(),
            None => fs::read(Path::new("/proc/self/cgroup"))?,
        };
        // mountinfo lists every mount of the namespace (on a node, every pod's rootfs and
        // volumes): reading it costs the kernel more the more pods run, so it is read
        // only when the hierarchies are not where they usually are.
        let mounts = match discover_usual(root, &proc_cgroup) {
            Some(m) => m,
            None => discover(
                root,
                &fs::read(Path::new("/proc/self/mountinfo"))?,
                &proc_cgroup,
            ),
        };
        if mounts.is_empty() {
            return Err(CgroupError::MissingController {
                controller: "any cgroup v1 hierarchy",
                field: "cgroupsPath",
            });
        }
        Self::build(mounts, cgroups_path, path, Some(&proc_cgroup))
    }

    /// The manager over an explicit list of `(controllers, mount point)` hierarchies, e.g.
    /// `(["cpu", "cpuacct"], "/sys/fs/cgroup/cpu,cpuacct")`. `/proc/self/cgroup` is read
    /// only for a relative `cgroups_path`.
    pub fn with_hierarchies(
        hierarchies: impl IntoIterator<Item = (Vec<String>, PathBuf)>,
        cgroups_path: &str,
    ) -> Result<Self, CgroupError> {
        let path = fs::parse_cgroups_path(cgroups_path)?;
        let mounts = hierarchies
            .into_iter()
            .map(|(mut controllers, mount_point)| {
                controllers.sort();
                Mount {
                    controllers,
                    mount_point,
                    mount_root: "/".to_string(),
                }
            })
            .collect();
        let proc_cgroup = if path.absolute {
            None
        } else {
            Some(fs::read(Path::new("/proc/self/cgroup"))?)
        };
        Self::build(mounts, cgroups_path, path, proc_cgroup.as_deref())
    }

    fn build(
        mounts: Vec<Mount>,
        raw_path: &str,
        path: fs::CgroupsPath,
        proc_cgroup: Option<&str>,
    ) -> Result<Self, CgroupError> {
        let own = proc_cgroup.map(fs::parse_proc_cgroup).unwrap_or_default();
        let mut hierarchies = Vec::with_capacity(mounts.len());
        for m in mounts {
            let base = if path.absolute {
                m.mount_point.clone()
            } else {
                let entry = own.iter().find(|e| e.controllers == m.controllers);
                let Some(entry) = entry else {
                    return Err(CgroupError::Invalid {
                        field: "cgroupsPath",
                        value: raw_path.to_string(),
                        reason: format!(
                            "relative path, but this process has no cgroup in hierarchy {}",
                            m.controllers.join(",")
                        ),
                    });
                };
                fs::own_cgroup_dir(&m.mount_point, &m.mount_root, &entry.path)
            };
            let dir = fs::join_components(&base, path.components.iter().map(String::as_str));
            hierarchies.push(Hierarchy {
                controllers: m.controllers,
                mount_point: m.mount_point,
                base,
                dir,
            });
        }
        Ok(V1Manager {
            hierarchies,
            components: path.components,
            created: Mutex::new(Vec::new()),
            hooks: FsHooks::default(),
            freeze_timeout: DEFAULT_FREEZE_TIMEOUT,
        })
    }

    #[cfg(test)]
    pub(crate) fn with_test_hooks(mut self, hooks: FsHooks, freeze_timeout: Duration) -> Self {
        self.hooks = hooks;
        self.freeze_timeout = freeze_timeout;
        self
    }

    /// The container's directory in the hierarchy carrying `controller`.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    fn need(&self, controller: &'static str, field: &'static str) -> Result<&Path, CgroupError> {
        self.controller_dir(controller)
            .ok_or(CgroupError::MissingController { controller, field })
    }

    fn apply_cpuset(&self, cpu: &LinuxCpu) -> Result<(), CgroupError> {
        for (value, file, field) in [
            (cpu.cpus(), "cpuset.cpus", "cpu.cpus"),
            (cpu.mems(), "cpuset.mems", "cpu.mems"),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                let dir = self.need("cpuset", field)?;
                fs::write_knob(&dir.join(file), v, "cpuset", field)?;
            }
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<(), CgroupError> {
        // 0 means "unset" in runc's model, never "no memory at all".
        let nonzero = |v: Option<i64>| v.filter(|v| *v != 0);
        let limit = nonzero(m.limit());
        let reservation = nonzero(m.reservation());
        let mut swap = nonzero(m.swap());
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            tracing::debug!(
                "ignoring memory.kernel/kernelTCP: deprecated and refused by recent kernels"
            );
        }
        let disable_oom = m.disable_oom_killer() == Some(true);
        if limit.is_none()
            && reservation.is_none()
            && swap.is_none()
            && m.swappiness().is_none()
            && !disable_oom
        {
            return Ok(());
        }
        let dir = self.need("memory", "memory")?;
        for (field, v) in [
            ("memory.limit", limit),
            ("memory.swap", swap),
            ("memory.reservation", reservation),
        ] {
            if let Some(v) = v.filter(|v| *v < -1) {
                return Err(invalid(field, v, "must be -1 (unlimited) or a byte count"));
            }
        }
        // runc: unlimited memory without an explicit swap means unlimited memory+swap.
        if limit == Some(-1) && swap.is_none() {
            swap = Some(-1);
        }
        if let (Some(l), Some(s)) = (limit, swap) {
            if l != -1 && s != -1 && s < l {
                return Err(invalid(
                    "memory.swap",
                    s,
                    "memory+swap must be >= the memory limit",
                ));
            }
        }
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if swap.is_some() && !memsw.exists() {
            if swap == limit {
                // "No swap on top of the limit" is what kubelet asks for by default; without
                // swap accounting there is nothing to write for it.
                swap = None;
            } else {
                return Err(CgroupError::MissingController {
                    controller: "memory (swap accounting)",
                    field: "memory.swap",
                });
            }
        }
        let limit_file = dir.join("memory.limit_in_bytes");
        match (limit, swap) {
            (Some(l), Some(s)) => {
                // The kernel keeps memsw >= limit at every step, so a growing limit needs
                // memsw raised first and a shrinking one needs the limit lowered first.
                let cur_text = fs::read(&limit_file)?;
                let cur = fs::parse_u64(&limit_file, &cur_text, u64::MAX)?;
                let growing = l == -1 || l as u64 > cur;
                if growing {
                    fs::write(&memsw, &s.to_string())?;
                    fs::write(&limit_file, &l.to_string())?;
                } else {
                    fs::write(&limit_file, &l.to_string())?;
                    fs::write(&memsw, &s.to_string())?;
                }
            }
            (Some(l), None) => fs::write(&limit_file, &l.to_string())?,
            (None, Some(s)) => fs::write(&memsw, &s.to_string())?,
            (None, None) => {}
        }
        if let Some(r) = reservation {
            fs::write(&dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(invalid("memory.swappiness", s, "must be between 0 and 100"));
            }
            fs::write_knob(
                &dir.join("memory.swappiness"),
                &s.to_string(),
                "memory",
                "memory.swappiness",
            )?;
        }
        if disable_oom {
            fs::write(&dir.join("memory.oom_control"), "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &LinuxCpu) -> Result<(), CgroupError> {
        let shares = cpu.shares().filter(|v| *v != 0);
        let period = cpu.period().filter(|v| *v != 0);
        let quota = cpu.quota().filter(|v| *v != 0);
        let rt_period = cpu.realtime_period().filter(|v| *v != 0);
        let rt_runtime = cpu.realtime_runtime().filter(|v| *v != 0);
        let wanted = shares.is_some()
            || period.is_some()
            || quota.is_some()
            || rt_period.is_some()
            || rt_runtime.is_some()
            || cpu.burst().is_some()
            || cpu.idle().is_some();
        if !wanted {
            return Ok(());
        }
        let dir = self.need("cpu", "cpu")?;
        if let Some(s) = shares {
            fs::write_knob(&dir.join("cpu.shares"), &s.to_string(), "cpu", "cpu.shares")?;
        }
        let period_file = dir.join("cpu.cfs_period_us");
        let quota_file = dir.join("cpu.cfs_quota_us");
        match (period, quota) {
            (Some(p), Some(q)) => {
                // Period first keeps quota/period valid in the common case; if the old quota
                // makes the new period invalid, the other order works.
                if let Err(e) = fs::write(&period_file, &p.to_string()) {
                    if !is_einval(&e) {
                        return Err(e);
                    }
                    fs::write(&quota_file, &q.to_string())?;
                    fs::write(&period_file, &p.to_string())?;
                } else {
                    fs::write(&quota_file, &q.to_string())?;
                }
            }
            (Some(p), None) => fs::write_knob(&period_file, &p.to_string(), "cpu", "cpu.period")?,
            (None, Some(q)) => fs::write_knob(&quota_file, &q.to_string(), "cpu", "cpu.quota")?,
            (None, None) => {}
        }
        if let Some(b) = cpu.burst() {
            fs::write_knob(
                &dir.join("cpu.cfs_burst_us"),
                &b.to_string(),
                "cpu (burst)",
                "cpu.burst",
            )?;
        }
        if let Some(p) = rt_period {
            let f = dir.join("cpu.rt_period_us");
            fs::write_knob(&f, &p.to_string(), "cpu (realtime)", "cpu.realtimePeriod")?;
        }
        if let Some(r) = rt_runtime {
            let f = dir.join("cpu.rt_runtime_us");
            fs::write_knob(&f, &r.to_string(), "cpu (realtime)", "cpu.realtimeRuntime")?;
        }
        if let Some(i) = cpu.idle() {
            fs::write_knob(
                &dir.join("cpu.idle"),
                &i.to_string(),
                "cpu (idle)",
                "cpu.idle",
            )?;
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &LinuxBlockIo) -> Result<(), CgroupError> {
        let weight = b.weight().filter(|w| *w != 0);
        let leaf_weight = b.leaf_weight().filter(|w| *w != 0);
        let weight_devices = b.weight_device().as_deref().unwrap_or_default();
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
            ),
        ];
        let any_throttle = throttles
            .iter()
            .any(|(t, _)| t.as_ref().is_some_and(|t| !t.is_empty()));
        if weight.is_none() && leaf_weight.is_none() && weight_devices.is_empty() && !any_throttle {
            return Ok(());
        }
        let dir = self.need("blkio", "blockIO")?;
        // CFQ's blkio.weight is gone from multi-queue kernels; BFQ's file takes the same
        // 10..1000 scale.
        let (weight_file, weight_device_file) = if dir.join("blkio.weight").exists() {
            ("blkio.weight", "blkio.weight_device")
        } else {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        };
        if let Some(w) = weight {
            let f = dir.join(weight_file);
            fs::write_knob(&f, &w.to_string(), "blkio (weight)", "blockIO.weight")?;
        }
        if let Some(w) = leaf_weight {
            let f = dir.join("blkio.leaf_weight");
            fs::write_knob(
                &f,
                &w.to_string(),
                "blkio (leaf weight)",
                "blockIO.leafWeight",
            )?;
        }
        for d in weight_devices {
            if let Some(w) = d.weight() {
                let line = format!("{}:{} {w}", d.major(), d.minor());
                let f = dir.join(weight_device_file);
                fs::write_knob(&f, &line, "blkio (weight)", "blockIO.weightDevice")?;
            }
            if let Some(w) = d.leaf_weight() {
                let line = format!("{}:{} {w}", d.major(), d.minor());
                let f = dir.join("blkio.leaf_weight_device");
                fs::write_knob(&f, &line, "blkio (leaf weight)", "blockIO.weightDevice")?;
            }
        }
        for (list, file) in throttles {
            for t in list.as_deref().unwrap_or_default() {
                let line = format!("{}:{} {}", t.major(), t.minor(), t.rate());
                fs::write_knob(
                    &dir.join(file),
                    &line,
                    "blkio (throttle)",
                    "blockIO.throttle",
                )?;
            }
        }
        Ok(())
    }

    fn apply_devices(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let rules = devices::normalize(r.devices().as_deref().unwrap_or_default())?;
        let writes = devices::v1_writes(&rules);
        if writes.is_empty() {
            return Ok(());
        }
        let dir = self.need("devices", "devices")?;
        // One rule per write(2), but each file opened once: the kernel parses every write
        // on its own, and a container's dozen default rules then cost a dozen syscalls
        // instead of three dozen.
        let mut open: Vec<(&str, std::fs::File)> = Vec::with_capacity(2);
        for (file, line) in writes {
            let path = dir.join(file);
            let werr = |source| CgroupError::Write {
                path: path.clone(),
                value: line.clone(),
                source,
            };
            let i = match open.iter().position(|(n, _)| *n == file) {
                Some(i) => i,
                None => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(werr)?;
                    open.push((file, f));
                    open.len() - 1
                }
            };
            std::io::Write::write_all(&mut &open[i].1, line.as_bytes()).map_err(werr)?;
        }
        Ok(())
    }

    fn apply_misc(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(p) = r.pids() {
            let dir = self.need("pids", "pids")?;
            fs::write_knob(
                &dir.join("pids.max"),
                &pids_max(p.limit()),
                "pids",
                "pids.limit",
            )?;
        }
        let hugepages = r.hugepage_limits().as_deref().unwrap_or_default();
        for h in hugepages {
            fs::validate_page_size(h.page_size())?;
        }
        match (self.controller_dir("hugetlb"), hugepages.is_empty()) {
            (_, true) => {}
            (None, false) => tracing::warn!("no hugetlb hierarchy: hugepage limits not applied"),
            (Some(dir), false) => {
                for h in hugepages {
                    let f = dir.join(format!("hugetlb.{}.limit_in_bytes", h.page_size()));
                    fs::write_knob(&f, &h.limit().to_string(), "hugetlb", "hugepageLimits")?;
                }
            }
        }
        if let Some(net) = r.network() {
            self.apply_network(net)?;
        }
        if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
            let dir = self.need("rdma", "rdma")?;
            for (device, limit) in rdma {
                fs::write(&dir.join("rdma.max"), &fs::rdma_line(device, limit)?)?;
            }
        }
        if let Some((key, _)) = r.unified().as_ref().and_then(|u| u.iter().next()) {
            return Err(CgroupError::Invalid {
                field: "unified",
                value: key.clone(),
                reason: "unified resources need a cgroup v2 host".to_string(),
            });
        }
        Ok(())
    }

    fn apply_network(&self, net: &oci_spec::runtime::LinuxNetwork) -> Result<(), CgroupError> {
        if let Some(id) = net.class_id() {
            match self.controller_dir("net_cls") {
                Some(dir) => fs::write(&dir.join("net_cls.classid"), &id.to_string())?,
                None => tracing::warn!("no net_cls hierarchy: network.classID not applied"),
            }
        }
        let priorities = net.priorities().as_deref().unwrap_or_default();
        if !priorities.is_empty() {
            match self.controller_dir("net_prio") {
                Some(dir) => {
                    for p in priorities {
                        let line = format!("{} {}", p.name(), p.priority());
                        fs::write(&dir.join("net_prio.ifpriomap"), &line)?;
                    }
                }
                None => tracing::warn!("no net_prio hierarchy: network.priorities not applied"),
            }
        }
        Ok(())
    }

    fn freezer_state(&self) -> Result<Option<String>, CgroupError> {
        let Some(dir) = self.controller_dir("freezer") else {
            return Ok(None);
        };
        Ok(Some(
            fs::read(&dir.join("freezer.state"))?.trim().to_string(),
        ))
    }

    fn set_freezer(&self, state: &'static str) -> Result<(), CgroupError> {
        let dir = self.need("freezer", "freeze")?;
        let file = dir.join("freezer.state");
        fs::write(&file, state)?;
        let res = fs::poll_until(&file, state, self.freeze_timeout, |attempt| {
            let now = fs::read(&file)?;
            if now.trim() == state {
                return Ok(None);
            }
            // A cgroup whose tasks keep forking can stall in FREEZING; asking again makes
            // the kernel retry the tasks it missed.
            if attempt % 10 == 9 {
                fs::write(&file, state)?;
            }
            Ok(Some(now.trim().to_string()))
        });
        if res.is_err() && state == "FROZEN" {
            // Never leave the container half frozen behind an error.
            let _ = fs::write(&file, "THAWED");
        }
        res
    }

    fn cpu_stats(&self, s: &mut Stats) -> Result<(), CgroupError> {
        if let Some(dir) = self.controller_dir("cpuacct") {
            let u = &mut s.cpu.usage;
            u.total = fs::read_u64_or_zero(&dir.join("cpuacct.usage"), u64::MAX)?;
            for (name, out) in [
                ("cpuacct.usage_percpu", &mut u.percpu),
                ("cpuacct.usage_percpu_sys", &mut u.percpu_kernel),
                ("cpuacct.usage_percpu_user", &mut u.percpu_user),
            ] {
                let f = dir.join(name);
                if let Some(c) = fs::read_opt(&f)? {
                    *out = stats::parse_percpu(&f, &c)?;
                }
            }
            let ticks = fs::read_flat_keyed(&dir.join("cpuacct.stat"))?;
            let ns_per_tick = 1_000_000_000 / clock_ticks();
            u.user = ticks.get("user").copied().unwrap_or(0) * ns_per_tick;
            u.kernel = ticks.get("system").copied().unwrap_or(0) * ns_per_tick;
        }
        if let Some(dir) = self.controller_dir("cpu") {
            let st = fs::read_flat_keyed(&dir.join("cpu.stat"))?;
            let get = |k: &str| st.get(k).copied().unwrap_or(0);
            s.cpu.throttling.periods = get("nr_periods");
            s.cpu.throttling.throttled_periods = get("nr_throttled");
            s.cpu.throttling.throttled_time = get("throttled_time");
        }
        Ok(())
    }
}

/// The hierarchies as a host mounts them: each one this process is in at
/// `root/<controllers as /proc/self/cgroup lists them>` (`root/<name>` for a named one),
/// a cgroup filesystem holding this process's own cgroup directory (so its root is the
/// hierarchy's root). `None` when any of them is not: [`discover`] reads mountinfo then.
fn discover_usual(root: &Path, proc_cgroup: &str) -> Option<Vec<Mount>> {
    let mut out: Vec<(u32, Mount)> = Vec::new();
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (id, ctrls, own) = (it.next()?, it.next()?, it.next()?);
        let id: u32 = id.parse().ok()?;
        if ctrls.is_empty() {
            // The unified hierarchy of a hybrid host: not a v1 hierarchy.
            continue;
        }
        let dir = ctrls.strip_prefix("name=").unwrap_or(ctrls);
        if dir.is_empty() || dir.contains('/') {
            return None;
        }
        let mount_point = root.join(dir);
        let st = nix::sys::statfs::statfs(&mount_point).ok()?;
        if st.filesystem_type() != nix::sys::statfs::CGROUP_SUPER_MAGIC {
            return None;
        }
        if !mount_point.join(own.trim_start_matches('/')).is_dir() {
            return None;
        }
        let mut controllers: Vec<String> = ctrls.split(',').map(str::to_string).collect();
        controllers.sort();
        if out.iter().any(|(_, m)| m.controllers == controllers) {
            continue;
        }
        out.push((
            id,
            Mount {
                controllers,
                mount_point,
                mount_root: "/".to_string(),
            },
        ));
    }
    // In hierarchy order, which is the order hosts mount them in (and so the order
    // mountinfo, and runc, list them).
    out.sort_by_key(|(id, _)| *id);
    (!out.is_empty()).then(|| out.into_iter().map(|(_, m)| m).collect())
}

/// Every mounted v1 hierarchy below `root`, first mount of each wins.
fn discover(root: &Path, mountinfo: &str, proc_cgroup: &str) -> Vec<Mount> {
    // Controller names the kernel reports for this process: anything else in the super
    // options (rw, xattr, release_agent=…) is a mount option.
    let known: HashSet<String> = fs::parse_proc_cgroup(proc_cgroup)
        .into_iter()
        .flat_map(|e| e.controllers)
        .collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in fs::parse_mountinfo(mountinfo) {
        if m.fstype != "cgroup" || !m.mount_point.starts_with(root) {
            continue;
        }
        let mut controllers: Vec<String> = m
            .super_options
            .into_iter()
            .filter(|o| known.contains(o))
            .collect();
        controllers.sort();
        if controllers.is_empty() || !seen.insert(controllers.clone()) {
            continue;
        }
        out.push(Mount {
            controllers,
            mount_point: m.mount_point,
            mount_root: m.root,
        });
    }
    out
}

fn invalid(field: &'static str, value: impl ToString, reason: &str) -> CgroupError {
    CgroupError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn is_einval(e: &CgroupError) -> bool {
    matches!(e, CgroupError::Write { source, .. } if source.raw_os_error() == Some(libc::EINVAL))
}

/// runc: a limit <= 0 means unlimited.
pub(crate) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self) -> Result<(), CgroupError> {
        let comps: Vec<&str> = self.components.iter().map(String::as_str).collect();
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        for h in &self.hierarchies {
            let is_cpuset = h.controllers.iter().any(|c| c == "cpuset");
            for level in fs::levels(&h.base, &comps) {
                if fs::mkdir(&level, &self.hooks)? && !created.contains(&level) {
                    created.push(level.clone());
                }
                if is_cpuset {
                    // A new cpuset starts with no CPUs and no memory nodes, and tasks cannot
                    // join it until both are set; inherit the parent's.
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let f = level.join(file);
                        if fs::read(&f)?.trim().is_empty() {
                            let parent = level.parent().unwrap_or(&h.mount_point).join(file);
                            fs::write(&f, fs::read(&parent)?.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(cpu) = r.cpu() {
            self.apply_cpuset(cpu)?;
        }
        self.apply_devices(r)?;
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_blkio(b)?;
        }
        self.apply_misc(r)
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(invalid("pid", pid, "must be positive"));
        }
        for h in &self.hierarchies {
            fs::write(&h.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn join_self(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            fs::write(&h.dir.join("tasks"), "0")?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        // Every process is in every hierarchy; one is enough.
        let dir = self
            .controller_dir("pids")
            .or_else(|| self.controller_dir("memory"))
            .or_else(|| self.hierarchies.first().map(|h| h.dir.as_path()));
        match dir {
            Some(d) => fs::procs_recursive(d),
            None => Ok(Vec::new()),
        }
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_freezer("FROZEN")
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_freezer("THAWED")
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(self.freezer_state()?.is_some_and(|s| s == "FROZEN"))
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut s = Stats::default();
        self.cpu_stats(&mut s)?;
        if let Some(dir) = self.controller_dir("cpuset") {
            s.cpuset = stats::read_cpuset_v1(dir)?;
        }
        if let Some(dir) = self.controller_dir("memory") {
            s.memory.usage = stats::read_memory_entry_v1(dir, "memory")?;
            s.memory.swap = stats::read_memory_entry_v1(dir, "memory.memsw")?;
            s.memory.kernel = stats::read_memory_entry_v1(dir, "memory.kmem")?;
            s.memory.kernel_tcp = stats::read_memory_entry_v1(dir, "memory.kmem.tcp")?;
            s.memory.raw = fs::read_flat_keyed(&dir.join("memory.stat"))?;
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
        }
        if let Some(dir) = self.controller_dir("pids") {
            s.pids.current = fs::read_u64_or_zero(&dir.join("pids.current"), 0)?;
            s.pids.limit = fs::read_u64_or_zero(&dir.join("pids.max"), 0)?;
        }
        if let Some(dir) = self.controller_dir("blkio") {
            stats::read_blkio_v1(dir, &mut s.blkio)?;
        }
        if let Some(dir) = self.controller_dir("hugetlb") {
            for size in fs::hugetlb_sizes(dir, "usage_in_bytes")? {
                let f = |n: &str| {
                    fs::read_u64_or_zero(&dir.join(format!("hugetlb.{size}.{n}")), u64::MAX)
                };
                let entry = stats::Hugetlb {
                    usage: f("usage_in_bytes")?,
                    max: f("max_usage_in_bytes")?,
                    failcnt: f("failcnt")?,
                };
                s.hugetlb.insert(size, entry);
            }
        }
        Ok(s)
    }

    fn oom_killed(&self) -> Result<bool, CgroupError> {
        let Some(dir) = self.controller_dir("memory") else {
            return Ok(false);
        };
        let ctl = fs::read_flat_keyed(&dir.join("memory.oom_control"))?;
        Ok(ctl.get("oom_kill").is_some_and(|n| *n > 0))
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        let mut first_err = None;
        for h in &self.hierarchies {
            let mine: Vec<PathBuf> = created
                .iter()
                .filter(|p| h.dir.starts_with(p) && p.starts_with(&h.base))
                .cloned()
                .collect();
            if let Err(e) = fs::remove_cgroup(&h.dir, &mine, &self.hooks) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                created.clear();
                Ok(())
            }
        }
    }

    fn mount_sources(&self) -> Vec<CgroupMountSource> {
        self.hierarchies
            .iter()
            .map(|h| CgroupMountSource {
                subdir: h
                    .mount_point
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                host_dir: h.dir.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#[path = "v1_tests.rs"]
mod tests;
