//! cgroup v2 (unified hierarchy) manager.
//!
//! `create` enables the controllers the container needs (cpuset cpu io memory hugetlb pids
//! rdma, as far as each parent offers them) in `cgroup.subtree_control` of every ancestor,
//! from the hierarchy root down. Limits are converted from the OCI (v1-flavoured) values
//! the way runc does: cpu shares → `cpu.weight`, blkio weight → `io.weight`, memory+swap →
//! `memory.swap.max`. Device rules become an eBPF program, attached only when the
//! directory is on a real cgroup2 mount; elsewhere (test fixtures) it is only kept for
//! inspection through [`V2Manager::device_program`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::devices::{self, BpfInsn};
use super::fs::{self, FsHooks};
use super::stats;
use super::{bpf, CgroupError, CgroupManager, CgroupMountSource, CgroupVersion, Stats};

const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Controllers a container may need, in the order they are enabled.
const WANTED_CONTROLLERS: [&str; 7] = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma"];

#[derive(Debug)]
pub struct V2Manager {
    mount_point: PathBuf,
    dir: PathBuf,
    /// On a real cgroup2 filesystem (device filters are attached, not just computed).
    real: bool,
    created: Mutex<Vec<PathBuf>>,
    device_program: Mutex<Option<Vec<BpfInsn>>>,
    hooks: FsHooks,
    freeze_timeout: Duration,
}

impl V2Manager {
    /// The manager for `cgroups_path` in the unified hierarchy mounted at `root` (or, for
    /// tests, any directory laid out like one).
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
        let real = nix::sys::statfs::statfs(root)
            .map(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .map_err(|e| CgroupError::io("statfs", root, std::io::Error::from(e)))?;
        let base = if path.absolute {
            root.to_path_buf()
        } else {
            let text = match origin {
                Some(o) => o.to_string(),
                None => fs::read(Path::new("/proc/self/cgroup"))?,
            };
            let own = fs::parse_proc_cgroup(&text);
            let Some(entry) = own.into_iter().find(|e| e.controllers.is_empty()) else {
                return Err(CgroupError::Invalid {
                    field: "cgroupsPath",
                    value: cgroups_path.to_string(),
                    reason: "relative path, but this process has no unified-hierarchy cgroup"
                        .to_string(),
                });
            };
            let mount_root = fs::parse_mountinfo(&fs::read(Path::new("/proc/self/mountinfo"))?)
                .into_iter()
                .find(|m| m.fstype == "cgroup2" && m.mount_point == root)
                .map_or_else(|| "/".to_string(), |m| m.root);
            fs::own_cgroup_dir(root, &mount_root, &entry.path)
        };
        Ok(V2Manager {
            mount_point: root.to_path_buf(),
            dir: fs::join_components(&base, path.components.iter().map(String::as_str)),
            real,
            created: Mutex::new(Vec::new()),
            device_program: Mutex::new(None),
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

    /// The container's cgroup directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The device filter computed by the last `apply` with device rules.
    pub fn device_program(&self) -> Option<Vec<BpfInsn>> {
        self.device_program
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Enable in `dir`'s subtree_control every wanted controller it offers and has not
    /// enabled yet.
    fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
        let tokens = |name: &str| -> Result<Vec<String>, CgroupError> {
            Ok(fs::read_opt(&dir.join(name))?
                .unwrap_or_default()
                .split_whitespace()
                .filter(|t| !t.starts_with('-'))
                .map(|t| t.trim_start_matches('+').to_string())
                .collect())
        };
        let available = tokens("cgroup.controllers")?;
        let enabled = tokens("cgroup.subtree_control")?;
        let missing: Vec<String> = WANTED_CONTROLLERS
            .iter()
            .filter(|c| available.iter().any(|a| a == *c) && !enabled.iter().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let file = dir.join("cgroup.subtree_control");
        if fs::write(&file, &missing.join(" ")).is_ok() {
            return Ok(());
        }
        // One refusal (e.g. cpu with realtime tasks around, or an ancestor holding
        // processes) fails the whole write; enable what can be enabled and let `apply`
        // report the knobs that are then missing.
        for c in &missing {
            if let Err(e) = fs::write(&file, c) {
                tracing::debug!(error = %e, "cannot enable controller");
            }
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &LinuxCpu) -> Result<(), CgroupError> {
        if let Some(s) = cpu.shares().filter(|s| *s != 0) {
            let w = shares_to_weight(s).to_string();
            fs::write_knob(&self.file("cpu.weight"), &w, "cpu", "cpu.shares")?;
        }
        if let Some(v) = cpu_max(cpu.quota(), cpu.period()) {
            fs::write_knob(&self.file("cpu.max"), &v, "cpu", "cpu.quota")?;
        }
        if let Some(b) = cpu.burst() {
            fs::write_knob(
                &self.file("cpu.max.burst"),
                &b.to_string(),
                "cpu (burst)",
                "cpu.burst",
            )?;
        }
        if let Some(i) = cpu.idle() {
            fs::write_knob(
                &self.file("cpu.idle"),
                &i.to_string(),
                "cpu (idle)",
                "cpu.idle",
            )?;
        }
        let rt = cpu.realtime_period().is_some_and(|v| v != 0)
            || cpu.realtime_runtime().is_some_and(|v| v != 0);
        if rt {
            return Err(CgroupError::MissingController {
                controller: "cpu (realtime, not in cgroup v2)",
                field: "cpu.realtimeRuntime",
            });
        }
        for (value, file, field) in [
            (cpu.cpus(), "cpuset.cpus", "cpu.cpus"),
            (cpu.mems(), "cpuset.mems", "cpu.mems"),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                fs::write_knob(&self.file(file), v, "cpuset", field)?;
            }
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<(), CgroupError> {
        let nonzero = |v: Option<i64>| v.filter(|v| *v != 0);
        let limit = nonzero(m.limit());
        if let Some(swap) = swap_to_v2(nonzero(m.swap()), limit)? {
            let f = self.file("memory.swap.max");
            if f.exists() {
                fs::write(&f, &limit_value(swap))?;
            } else if swap > 0 {
                return Err(CgroupError::MissingController {
                    controller: "memory (swap accounting)",
                    field: "memory.swap",
                });
            }
        }
        if let Some(l) = limit {
            if l < -1 {
                return Err(invalid(
                    "memory.limit",
                    l,
                    "must be -1 (unlimited) or a byte count",
                ));
            }
            fs::write_knob(
                &self.file("memory.max"),
                &limit_value(l),
                "memory",
                "memory.limit",
            )?;
        }
        if let Some(r) = nonzero(m.reservation()) {
            fs::write_knob(
                &self.file("memory.low"),
                &limit_value(r),
                "memory",
                "memory.reservation",
            )?;
        }
        if m.swappiness().is_some() || m.disable_oom_killer().is_some() || m.kernel().is_some() {
            tracing::debug!(
                "memory swappiness/disableOOMKiller/kernel have no cgroup v2 knob; ignored"
            );
        }
        Ok(())
    }

    fn apply_io(&self, b: &LinuxBlockIo) -> Result<(), CgroupError> {
        // BFQ takes the v1 weight scale as is; io.weight (iocost) needs the conversion.
        let bfq = self.file("io.bfq.weight").exists();
        let weight_file = self.file(if bfq { "io.bfq.weight" } else { "io.weight" });
        let convert = |w: u16| {
            if bfq {
                u64::from(w)
            } else {
                blkio_weight_to_io_weight(w)
            }
        };
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            fs::write_knob(
                &weight_file,
                &convert(w).to_string(),
                "io",
                "blockIO.weight",
            )?;
        }
        for d in b.weight_device().as_deref().unwrap_or_default() {
            if let Some(w) = d.weight() {
                let line = format!("{}:{} {}", d.major(), d.minor(), convert(w));
                fs::write_knob(&weight_file, &line, "io", "blockIO.weightDevice")?;
            }
        }
        for (list, key) in [
            (b.throttle_read_bps_device(), "rbps"),
            (b.throttle_write_bps_device(), "wbps"),
            (b.throttle_read_iops_device(), "riops"),
            (b.throttle_write_iops_device(), "wiops"),
        ] {
            for t in list.as_deref().unwrap_or_default() {
                // A zero rate removes the limit, as in v1.
                let rate = if t.rate() == 0 {
                    "max".to_string()
                } else {
                    t.rate().to_string()
                };
                let line = format!("{}:{} {key}={rate}", t.major(), t.minor());
                fs::write_knob(&self.file("io.max"), &line, "io", "blockIO.throttle")?;
            }
        }
        Ok(())
    }

    fn apply_devices(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let rules = devices::normalize(r.devices().as_deref().unwrap_or_default())?;
        if rules.is_empty() {
            return Ok(());
        }
        let prog = devices::device_filter(&rules);
        if self.real {
            bpf::install_device_filter(&self.dir, &prog)?;
        }
        *self
            .device_program
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(prog);
        Ok(())
    }

    fn apply_other(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(p) = r.pids() {
            let v = super::v1::pids_max(p.limit());
            fs::write_knob(&self.file("pids.max"), &v, "pids", "pids.limit")?;
        }
        for h in r.hugepage_limits().as_deref().unwrap_or_default() {
            fs::validate_page_size(h.page_size())?;
            let f = self.file(&format!("hugetlb.{}.max", h.page_size()));
            if f.exists() {
                fs::write(&f, &limit_value(h.limit()))?;
            } else {
                let size = h.page_size();
                tracing::warn!(page_size = %size, "hugetlb not available: limit not applied");
            }
        }
        for (device, limit) in r.rdma().iter().flatten() {
            fs::write_knob(
                &self.file("rdma.max"),
                &fs::rdma_line(device, limit)?,
                "rdma",
                "rdma",
            )?;
        }
        if r.network().is_some() {
            tracing::debug!("network classID/priorities have no cgroup v2 controller; ignored");
        }
        for (key, value) in r.unified().iter().flatten() {
            let bad = key.is_empty() || key.contains('/') || key == "." || key == "..";
            let f = self.file(key);
            if bad || !f.exists() {
                return Err(CgroupError::Invalid {
                    field: "unified",
                    value: key.clone(),
                    reason: format!("no such interface file in {}", self.dir.display()),
                });
            }
            fs::write(&f, value)?;
        }
        Ok(())
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let file = self.file("cgroup.freeze");
        let (value, wanted) = if frozen {
            ("1", "frozen")
        } else {
            ("0", "thawed")
        };
        fs::write_knob(&file, value, "freezer (cgroup.freeze)", "freeze")?;
        let events = self.file("cgroup.events");
        let res = fs::poll_until(&events, wanted, self.freeze_timeout, |_| {
            let now = fs::read_flat_keyed(&events)?
                .get("frozen")
                .copied()
                .unwrap_or(0);
            Ok(((now == 1) != frozen).then(|| format!("frozen {now}")))
        });
        if res.is_err() && frozen {
            // Never leave the container half frozen behind an error.
            let _ = fs::write(&file, "0");
        }
        res
    }
}

fn invalid(field: &'static str, value: impl ToString, reason: &str) -> CgroupError {
    CgroupError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// -1 (and any negative) is "max" in v2 files.
fn limit_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// runc's linear map of cpu.shares [2, 262144] onto cpu.weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// runc's linear map of blkio.weight [10, 1000] onto io.weight [1, 10000].
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight).clamp(10, 1000);
    1 + ((w - 10) * 9999) / 990
}

/// The `cpu.max` line: "$QUOTA $PERIOD", "max" for no quota; the period is left out when
/// unset so the kernel keeps the current one. `None` when neither is set.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.filter(|q| *q != 0);
    let period = period.filter(|p| *p != 0);
    if quota.is_none() && period.is_none() {
        return None;
    }
    let q = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    Some(match period {
        Some(p) => format!("{q} {p}"),
        None => q,
    })
}

/// OCI's memory+swap limit to v2's swap-only `memory.swap.max` (runc's conversion); 0 and
/// `None` mean unset, -1 unlimited.
pub fn swap_to_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<i64>, CgroupError> {
    let (s, l) = (swap.unwrap_or(0), limit.unwrap_or(0));
    // Unlimited memory without a swap value means unlimited memory+swap, as on v1.
    if l == -1 && s == 0 {
        return Ok(Some(-1));
    }
    match s {
        0 => return Ok(None),
        -1 => return Ok(Some(-1)),
        s if s < -1 => return Err(invalid("memory.swap", s, "must be -1 or a byte count")),
        _ => {}
    }
    if l <= 0 {
        return Err(invalid(
            "memory.swap",
            s,
            "a swap limit needs a memory limit",
        ));
    }
    if s < l {
        return Err(invalid(
            "memory.swap",
            s,
            "memory+swap must be >= the memory limit",
        ));
    }
    Ok(Some(s - l))
}

impl CgroupManager for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self) -> Result<(), CgroupError> {
        let rel: Vec<String> = self
            .dir
            .strip_prefix(&self.mount_point)
            .map_err(|_| CgroupError::Invalid {
                field: "cgroupsPath",
                value: self.dir.display().to_string(),
                reason: format!(
                    "not below the hierarchy root {}",
                    self.mount_point.display()
                ),
            })?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let comps: Vec<&str> = rel.iter().map(String::as_str).collect();
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        // Parents enable before each child exists, so a child's controllers show up with it.
        Self::enable_controllers(&self.mount_point)?;
        let levels = fs::levels(&self.mount_point, &comps);
        let last = levels.len().saturating_sub(1);
        for (i, level) in levels.iter().enumerate() {
            if fs::mkdir(level, &self.hooks)? && !created.contains(level) {
                created.push(level.clone());
            }
            if i < last {
                Self::enable_controllers(level)?;
            }
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        self.apply_devices(r)?;
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_io(b)?;
        }
        self.apply_other(r)
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(invalid("pid", pid, "must be positive"));
        }
        fs::write(&self.file("cgroup.procs"), &pid.to_string())
    }

    fn join_self(&self) -> Result<(), CgroupError> {
        fs::write(&self.file("cgroup.procs"), "0")
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        fs::procs_recursive(&self.dir)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        let events = fs::read_flat_keyed(&self.file("cgroup.events"))?;
        Ok(events.get("frozen").is_some_and(|v| *v == 1))
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut s = Stats::default();
        let cpu = fs::read_flat_keyed(&self.file("cpu.stat"))?;
        let get = |k: &str| cpu.get(k).copied().unwrap_or(0);
        s.cpu.usage.total = get("usage_usec") * 1000;
        s.cpu.usage.user = get("user_usec") * 1000;
        s.cpu.usage.kernel = get("system_usec") * 1000;
        s.cpu.throttling.periods = get("nr_periods");
        s.cpu.throttling.throttled_periods = get("nr_throttled");
        s.cpu.throttling.throttled_time = get("throttled_usec") * 1000;

        let num = |name: &str, max: u64| fs::read_u64_or_zero(&self.file(name), max);
        let mem = &mut s.memory;
        mem.usage.usage = num("memory.current", u64::MAX)?;
        mem.usage.limit = num("memory.max", u64::MAX)?;
        mem.usage.max = num("memory.peak", u64::MAX)?;
        let events = fs::read_flat_keyed(&self.file("memory.events"))?;
        mem.usage.failcnt = events.get("max").copied().unwrap_or(0);
        // runc reports v2 swap in v1's memory+swap terms.
        mem.swap.usage = num("memory.swap.current", u64::MAX)?.saturating_add(mem.usage.usage);
        mem.swap.limit = num("memory.swap.max", u64::MAX)?.saturating_add(mem.usage.limit);
        mem.raw = fs::read_flat_keyed(&self.file("memory.stat"))?;
        mem.cache = mem.raw.get("file").copied().unwrap_or(0);

        s.pids.current = num("pids.current", 0)?;
        s.pids.limit = num("pids.max", 0)?;

        let io = self.file("io.stat");
        if let Some(c) = fs::read_opt(&io)? {
            stats::parse_io_stat(&io, &c, &mut s.blkio)?;
        }
        for size in fs::hugetlb_sizes(&self.dir, "current")? {
            let events = fs::read_flat_keyed(&self.file(&format!("hugetlb.{size}.events")))?;
            let entry = stats::Hugetlb {
                usage: num(&format!("hugetlb.{size}.current"), u64::MAX)?,
                max: 0,
                failcnt: events.get("max").copied().unwrap_or(0),
            };
            s.hugetlb.insert(size, entry);
        }
        Ok(s)
    }

    fn oom_killed(&self) -> Result<bool, CgroupError> {
        let events = fs::read_flat_keyed(&self.file("memory.events"))?;
        Ok(events.get("oom_kill").is_some_and(|n| *n > 0))
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        fs::remove_cgroup(&self.dir, &created, &self.hooks)?;
        created.clear();
        Ok(())
    }

    fn clone_target(&self) -> Option<PathBuf> {
        self.real.then(|| self.dir.clone())
    }

    fn mount_sources(&self) -> Vec<CgroupMountSource> {
        vec![CgroupMountSource {
            subdir: String::new(),
            host_dir: self.dir.clone(),
        }]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#[path = "v2_tests.rs"]
mod tests;
