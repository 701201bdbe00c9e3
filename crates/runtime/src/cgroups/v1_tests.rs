use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::cgroups::testutil::{get, put, FakeV1};

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_usual_places_agree_with_mountinfo_on_this_host() {
    let root = Path::new("/sys/fs/cgroup");
    if crate::cgroups::detect(root).ok() != Some(crate::cgroups::CgroupVersion::V1) {
        return; // a v2 host: no v1 hierarchies to find
    }
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let key = |m: &Mount| {
        (
            m.controllers.join(","),
            m.mount_point.clone(),
            m.mount_root.clone(),
        )
    };
    let slow: Vec<_> = discover(root, &mountinfo, &proc_cgroup)
        .iter()
        .map(key)
        .collect();
    let fast: Vec<_> = discover_usual(root, &proc_cgroup)
        .expect("this host mounts its hierarchies where hosts usually do")
        .iter()
        .map(key)
        .collect();
    // The same hierarchies in the same order (a container's /sys/fs/cgroup lists them so).
    assert_eq!(fast, slow);
    // Somewhere else, the usual places are not taken for granted.
    assert!(discover_usual(Path::new("/tmp"), &proc_cgroup).is_none());
}

#[test]
fn discover_reads_mountinfo_controllers() {
    let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 31 0:31 / /mnt/other-memory rw - cgroup cgroup rw,memory
36 31 0:31 / /sys/fs/cgroup/memory2 rw - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
";
    let proc_cgroup = "4:memory:/a\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n";
    let mounts = discover(Path::new("/sys/fs/cgroup"), mountinfo, proc_cgroup);
    let got: Vec<(String, PathBuf)> = mounts
        .iter()
        .map(|m| (m.controllers.join(","), m.mount_point.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "cpu,cpuacct".to_string(),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
            ),
            ("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory")),
            (
                "name=systemd".to_string(),
                PathBuf::from("/sys/fs/cgroup/systemd")
            ),
        ],
        "cgroup2 and mounts outside the root are ignored, first mount wins"
    );
}

#[test]
fn relative_path_goes_below_own_cgroup() {
    let mounts = vec![
        Mount {
            controllers: vec!["memory".into()],
            mount_point: "/sys/fs/cgroup/memory".into(),
            mount_root: "/".into(),
        },
        Mount {
            controllers: vec!["cpu".into(), "cpuacct".into()],
            mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
            mount_root: "/kubepods".into(),
        },
    ];
    let proc_cgroup = "4:memory:/user.slice/me\n2:cpuacct,cpu:/kubepods/pod1\n";
    let path = fs::parse_cgroups_path("skiff/c").unwrap();
    let m = V1Manager::build(mounts.clone(), "skiff/c", path, Some(proc_cgroup)).unwrap();
    assert_eq!(
        m.controller_dir("memory").unwrap(),
        Path::new("/sys/fs/cgroup/memory/user.slice/me/skiff/c")
    );
    assert_eq!(
        m.controller_dir("cpuacct").unwrap(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct/pod1/skiff/c")
    );
    let path = fs::parse_cgroups_path("/skiff/c").unwrap();
    let m = V1Manager::build(mounts.clone(), "/skiff/c", path, None).unwrap();
    assert_eq!(
        m.controller_dir("cpu").unwrap(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct/skiff/c")
    );
    let path = fs::parse_cgroups_path("c").unwrap();
    let err = V1Manager::build(mounts, "c", path, Some("4:memory:/\n")).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Invalid {
                field: "cgroupsPath",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fake_create_copies_cpuset_and_lists_mount_sources() {
    let fake = FakeV1::new();
    let m = fake.manager("/skiff/pod/c1");
    m.create().unwrap();
    for (_, mount) in &fake.hierarchies {
        assert!(
            mount.join("skiff/pod/c1/cgroup.procs").exists(),
            "{}",
            mount.display()
        );
    }
    let cpuset = fake.mount("cpuset");
    assert_eq!(get(&cpuset.join("skiff/cpuset.cpus")), "0-1");
    assert_eq!(get(&cpuset.join("skiff/pod/c1/cpuset.cpus")), "0-1");
    assert_eq!(get(&cpuset.join("skiff/pod/c1/cpuset.mems")), "0");
    let sources = m.mount_sources();
    let subdirs: Vec<&str> = sources.iter().map(|s| s.subdir.as_str()).collect();
    assert_eq!(
        subdirs,
        [
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "devices",
            "freezer",
            "blkio",
            "pids",
            "hugetlb",
            "net_cls,net_prio",
            "systemd"
        ]
    );
    assert_eq!(
        sources[2].host_dir,
        fake.mount("memory").join("skiff/pod/c1")
    );
    m.create().unwrap();
}

#[test]
fn fake_apply_value_formats() {
    let fake = FakeV1::new();
    let m = fake.manager("/skiff/c2");
    m.create().unwrap();
    m.apply(&resources(
        r#"{
            "devices": [{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
            "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728,
                       "swappiness": 10, "disableOOMKiller": true, "kernel": 1000},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000,
                    "realtimePeriod": 1000000, "realtimeRuntime": 95000,
                    "cpus": "1", "mems": "0"},
            "pids": {"limit": 10},
            "blockIO": {"weight": 300, "leafWeight": 200,
                        "weightDevice": [{"major": 8, "minor": 0, "weight": 700}],
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                        "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}
        }"#,
    ))
    .unwrap();
    let f = |mount: &str, file: &str| get(&fake.mount(mount).join("skiff/c2").join(file));
    assert_eq!(f("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(f("memory", "memory.memsw.limit_in_bytes"), "134217728");
    assert_eq!(f("memory", "memory.soft_limit_in_bytes"), "33554432");
    assert_eq!(f("memory", "memory.swappiness"), "10");
    assert_eq!(f("memory", "memory.oom_control"), "1");
    assert_eq!(f("cpu,cpuacct", "cpu.shares"), "512");
    assert_eq!(f("cpu,cpuacct", "cpu.cfs_period_us"), "100000");
    assert_eq!(f("cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
    assert_eq!(f("cpu,cpuacct", "cpu.rt_period_us"), "1000000");
    assert_eq!(f("cpu,cpuacct", "cpu.rt_runtime_us"), "95000");
    assert_eq!(f("cpuset", "cpuset.cpus"), "1");
    assert_eq!(f("cpuset", "cpuset.mems"), "0");
    assert_eq!(f("pids", "pids.max"), "10");
    assert_eq!(f("blkio", "blkio.weight"), "300");
    assert_eq!(f("blkio", "blkio.leaf_weight"), "200");
    assert_eq!(f("blkio", "blkio.weight_device"), "8:0 700");
    assert_eq!(f("blkio", "blkio.throttle.read_bps_device"), "8:0 1048576");
    assert_eq!(f("blkio", "blkio.throttle.write_iops_device"), "8:16 100");
    // Fake files keep only the last write; the full sequence is checked in devices.rs.
    assert_eq!(f("devices", "devices.allow"), "c 1:3 rwm");
    assert_eq!(f("devices", "devices.deny"), "a");
    assert_eq!(f("hugetlb", "hugetlb.2MB.limit_in_bytes"), "4194304");
    assert_eq!(f("net_cls,net_prio", "net_cls.classid"), "1048577");
    assert_eq!(f("net_cls,net_prio", "net_prio.ifpriomap"), "eth0 5");

    m.apply(&resources(
        r#"{"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}}"#,
    ))
    .unwrap();
    assert_eq!(f("memory", "memory.limit_in_bytes"), "-1");
    assert_eq!(
        f("memory", "memory.memsw.limit_in_bytes"),
        "-1",
        "unlimited swap follows"
    );
    assert_eq!(f("pids", "pids.max"), "max");
    assert_eq!(f("cpu,cpuacct", "cpu.cfs_quota_us"), "-1");

    // Without CFQ's blkio.weight the BFQ file takes the weight.
    let blkio = fake.mount("blkio").join("skiff/c2");
    std::fs::remove_file(blkio.join("blkio.weight")).unwrap();
    let err = m
        .apply(&resources(r#"{"blockIO": {"weight": 300}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::MissingController { .. }),
        "{err}"
    );
    put(&blkio.join("blkio.bfq.weight"), "100\n");
    m.apply(&resources(r#"{"blockIO": {"weight": 400}}"#))
        .unwrap();
    assert_eq!(get(&blkio.join("blkio.bfq.weight")), "400");

    for bad in [
        r#"{"memory": {"limit": 100, "swap": 50}}"#,
        r#"{"memory": {"swappiness": 101}}"#,
        r#"{"unified": {"memory.high": "1"}}"#,
        r#"{"devices": [{"allow": true, "access": "rwx"}]}"#,
    ] {
        assert!(
            matches!(m.apply(&resources(bad)), Err(CgroupError::Invalid { .. })),
            "{bad}"
        );
    }
}

#[test]
fn fake_memory_swap_ordering_and_missing_memsw() {
    let fake = FakeV1::with_layout(&["memory", "cpu", "cpuset"]);
    let m = fake.manager("/c");
    m.create().unwrap();
    let dir = fake.mount("memory").join("c");
    // Shrinking below the current limit: limit first (the fake cannot show order, but the
    // current limit must be read and parsed without error).
    put(&dir.join("memory.limit_in_bytes"), "9223372036854771712\n");
    m.apply(&resources(
        r#"{"memory": {"limit": 1048576, "swap": 2097152}}"#,
    ))
    .unwrap();
    assert_eq!(get(&dir.join("memory.limit_in_bytes")), "1048576");
    assert_eq!(get(&dir.join("memory.memsw.limit_in_bytes")), "2097152");

    std::fs::remove_file(dir.join("memory.memsw.limit_in_bytes")).unwrap();
    m.apply(&resources(
        r#"{"memory": {"limit": 4194304, "swap": 4194304}}"#,
    ))
    .unwrap();
    assert_eq!(get(&dir.join("memory.limit_in_bytes")), "4194304");
    let err = m
        .apply(&resources(
            r#"{"memory": {"limit": 4194304, "swap": 8388608}}"#,
        ))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::MissingController { .. }),
        "{err}"
    );

    // Controllers that are not mounted at all.
    let err = m
        .apply(&resources(r#"{"pids": {"limit": 5}}"#))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    m.apply(&resources(
        r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}"#,
    ))
    .unwrap();
    m.apply(&resources(r#"{"network": {"classID": 5}}"#))
        .unwrap();
    assert!(matches!(
        m.freeze(),
        Err(CgroupError::MissingController { .. })
    ));
    assert!(!m.is_frozen().unwrap());
}

#[test]
fn fake_processes_freezer_stats_oom() {
    let fake = FakeV1::new();
    let m = fake.manager("/skiff/c3");
    m.create().unwrap();
    m.add_process(777).unwrap();
    for (_, mount) in &fake.hierarchies {
        assert_eq!(get(&mount.join("skiff/c3/cgroup.procs")), "777");
    }
    let pids_dir = fake.mount("pids").join("skiff/c3");
    put(&pids_dir.join("cgroup.procs"), "777\n778\n");
    std::fs::create_dir(pids_dir.join("inner")).unwrap();
    put(&pids_dir.join("inner/cgroup.procs"), "779\n");
    assert_eq!(m.pids().unwrap(), vec![777, 778, 779]);
    std::fs::remove_dir_all(pids_dir.join("inner")).unwrap();
    put(&pids_dir.join("cgroup.procs"), "");

    m.freeze().unwrap();
    assert_eq!(
        get(&fake.mount("freezer").join("skiff/c3/freezer.state")),
        "FROZEN"
    );
    assert!(m.is_frozen().unwrap());
    m.thaw().unwrap();
    assert!(!m.is_frozen().unwrap());

    let d = |mount: &str| fake.mount(mount).join("skiff/c3");
    put(&d("cpu,cpuacct").join("cpuacct.usage"), "123456789\n");
    put(
        &d("cpu,cpuacct").join("cpuacct.usage_percpu"),
        "100000000 23456789 \n",
    );
    put(&d("cpu,cpuacct").join("cpuacct.stat"), "user 7\nsystem 3\n");
    put(
        &d("cpu,cpuacct").join("cpu.stat"),
        "nr_periods 20\nnr_throttled 5\nthrottled_time 999\n",
    );
    put(&d("memory").join("memory.usage_in_bytes"), "4096000\n");
    put(&d("memory").join("memory.max_usage_in_bytes"), "8192000\n");
    put(&d("memory").join("memory.limit_in_bytes"), "67108864\n");
    put(&d("memory").join("memory.failcnt"), "2\n");
    put(
        &d("memory").join("memory.memsw.usage_in_bytes"),
        "5000000\n",
    );
    put(
        &d("memory").join("memory.stat"),
        "cache 4096\nrss 8192\ntotal_rss 8192\n",
    );
    put(&d("pids").join("pids.current"), "3\n");
    put(&d("pids").join("pids.max"), "10\n");
    put(
        &d("blkio").join("blkio.throttle.io_service_bytes_recursive"),
        "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\nTotal 4608\n",
    );
    put(
        &d("hugetlb").join("hugetlb.2MB.usage_in_bytes"),
        "2097152\n",
    );
    put(&d("hugetlb").join("hugetlb.2MB.failcnt"), "1\n");
    let s = m.stats().unwrap();
    assert_eq!(s.cpu.usage.total, 123_456_789);
    assert_eq!(s.cpu.usage.percpu, vec![100_000_000, 23_456_789]);
    let tick = 1_000_000_000 / clock_ticks();
    assert_eq!(s.cpu.usage.user, 7 * tick);
    assert_eq!(s.cpu.usage.kernel, 3 * tick);
    assert_eq!(s.cpu.throttling.periods, 20);
    assert_eq!(s.cpu.throttling.throttled_periods, 5);
    assert_eq!(s.cpu.throttling.throttled_time, 999);
    assert_eq!(s.memory.usage.usage, 4_096_000);
    assert_eq!(s.memory.usage.max, 8_192_000);
    assert_eq!(s.memory.usage.limit, 67_108_864);
    assert_eq!(s.memory.usage.failcnt, 2);
    assert_eq!(s.memory.swap.usage, 5_000_000);
    assert_eq!(s.memory.cache, 4096);
    assert_eq!(s.memory.raw["total_rss"], 8192);
    assert_eq!((s.pids.current, s.pids.limit), (3, 10));
    assert_eq!(s.blkio.io_service_bytes_recursive.len(), 3);
    assert_eq!(s.blkio.io_service_bytes_recursive[0].value, 4096);
    assert_eq!(s.hugetlb.len(), 1, "rsvd counters are not a page size");
    assert_eq!(s.hugetlb["2MB"].usage, 2_097_152);
    assert_eq!(s.hugetlb["2MB"].failcnt, 1);

    assert!(!m.oom_killed().unwrap());
    put(
        &d("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    assert!(m.oom_killed().unwrap());
}

#[test]
fn fake_destroy_keeps_shared_and_preexisting_parents() {
    let fake = FakeV1::with_layout(&["memory", "cpuset", "name=systemd"]);
    std::fs::create_dir(fake.mount("memory").join("skiff")).unwrap();
    let a = fake.manager("/skiff/pod/a");
    let b = fake.manager("/skiff/pod/b");
    a.create().unwrap();
    b.create().unwrap();
    a.destroy().unwrap();
    for mount in ["memory", "cpuset", "systemd"] {
        let m = fake.mount(mount);
        assert!(!m.join("skiff/pod/a").exists(), "{mount}");
        assert!(
            m.join("skiff/pod/b").exists(),
            "{mount}: shared parent kept"
        );
    }
    b.destroy().unwrap();
    b.destroy().unwrap();
    for mount in ["memory", "cpuset", "systemd"] {
        assert!(!fake.mount(mount).join("skiff/pod/b").exists(), "{mount}");
    }
    assert!(
        fake.mount("memory").join("skiff").exists(),
        "pre-existing kept"
    );

    let c = fake.manager("/solo/c");
    c.create().unwrap();
    c.destroy().unwrap();
    for mount in ["memory", "cpuset", "systemd"] {
        assert!(
            !fake.mount(mount).join("solo").exists(),
            "{mount}: created parent removed"
        );
    }
}

// ---- real host (cgroup v1 or hybrid, as root) ----

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Kills the test's children and removes its cgroup even when an assertion fails.
struct HostGuard {
    mgr: V1Manager,
    children: Vec<Child>,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let _ = self.mgr.thaw();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.mgr.destroy();
    }
}

fn host_v1_available() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    nix::unistd::geteuid().is_root()
        && matches!(crate::cgroups::detect(root), Ok(CgroupVersion::V1))
        && V1Manager::new(root, "/probe").is_ok()
}

/// A real block device's "major:minor", for the throttle check.
fn some_block_device() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("zram") && !n.starts_with("ram"))
        .collect();
    names.sort();
    let dev = std::fs::read_to_string(format!("/sys/block/{}/dev", names.first()?)).ok()?;
    Some(dev.trim().to_string())
}

#[test]
fn real_host_v1_lifecycle() {
    // The suite runs as root on a cgroup v1/hybrid host (like CI's); anything else is a
    // broken test environment, not a reason to pass silently.
    assert!(host_v1_available(), "needs root on a cgroup v1/hybrid host");
    let name = format!(
        "/skiff-t{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let mgr = V1Manager::new(Path::new("/sys/fs/cgroup"), &name).unwrap();
    let mut g = HostGuard {
        mgr,
        children: Vec::new(),
    };
    g.mgr.create().unwrap();
    let dirs: Vec<PathBuf> = g
        .mgr
        .mount_sources()
        .into_iter()
        .map(|s| s.host_dir)
        .collect();
    assert!(!dirs.is_empty());
    for d in &dirs {
        assert!(d.is_dir(), "{} not created", d.display());
    }

    let blkio = g.mgr.controller_dir("blkio").map(Path::to_path_buf);
    let has_weight = blkio
        .as_ref()
        .is_some_and(|d| d.join("blkio.weight").exists() || d.join("blkio.bfq.weight").exists());
    let device = some_block_device();
    let mut block_io = serde_json::Map::new();
    if has_weight {
        block_io.insert("weight".into(), 300.into());
    }
    if let Some((maj, min)) = device.as_deref().and_then(|d| d.split_once(':')) {
        let t = serde_json::json!([{"major": maj.parse::<i64>().unwrap(),
                                    "minor": min.parse::<i64>().unwrap(), "rate": 1048576}]);
        block_io.insert("throttleReadBpsDevice".into(), t);
    }
    let res = serde_json::json!({
        "devices": [{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}],
        "memory": {"limit": 64 * 1024 * 1024},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 10},
        "blockIO": block_io,
    });
    g.mgr.apply(&serde_json::from_value(res).unwrap()).unwrap();

    let read = |ctrl: &str, file: &str| get(&g.mgr.controller_dir(ctrl).unwrap().join(file));
    assert_eq!(read("memory", "memory.limit_in_bytes").trim(), "67108864");
    assert_eq!(read("cpu", "cpu.shares").trim(), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us").trim(), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us").trim(), "100000");
    assert_eq!(read("cpuset", "cpuset.cpus").trim(), "0");
    assert_eq!(read("cpuset", "cpuset.mems").trim(), "0");
    assert_eq!(read("pids", "pids.max").trim(), "10");
    let list = read("devices", "devices.list");
    let mut lines: Vec<&str> = list.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["c 1:3 rwm", "c 1:5 r"], "devices.list");
    if has_weight {
        let d = blkio.as_ref().unwrap();
        let f = if d.join("blkio.weight").exists() {
            "blkio.weight"
        } else {
            "blkio.bfq.weight"
        };
        assert!(get(&d.join(f)).contains("300"), "{f}");
    } else {
        // This kernel's blkio (no CFQ, BFQ not active) has no weight files; apply would
        // refuse a weight with MissingController, so the weight sub-check is skipped.
        eprintln!("blkio weight files absent: weight not checked");
    }
    if let Some(dev) = &device {
        let t = read("blkio", "blkio.throttle.read_bps_device");
        assert!(t.contains(&format!("{dev} 1048576")), "throttle: {t:?}");
    }

    // A child that joins the cgroup before doing anything, so its memory is charged here.
    let mut child = Command::new("sh")
        .args(["-c", "read go; exec sleep 60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    g.children.push(child);
    g.mgr.add_process(pid).unwrap();
    writeln!(stdin, "go").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "child never exec'd sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(g.mgr.pids().unwrap().contains(&pid));

    g.mgr.freeze().unwrap();
    assert_eq!(read("freezer", "freezer.state").trim(), "FROZEN");
    assert!(g.mgr.is_frozen().unwrap());
    g.mgr.thaw().unwrap();
    assert_eq!(read("freezer", "freezer.state").trim(), "THAWED");
    assert!(!g.mgr.is_frozen().unwrap());

    let s = g.mgr.stats().unwrap();
    assert!(s.pids.current >= 1, "{:?}", s.pids);
    assert_eq!(s.pids.limit, 10);
    assert!(s.memory.usage.usage > 0, "{:?}", s.memory.usage);
    assert_eq!(s.memory.usage.limit, 64 * 1024 * 1024);
    assert!(!g.mgr.oom_killed().unwrap());

    // join_self: a forked (single-threaded) child moves itself into every hierarchy.
    let leaf = name.trim_start_matches('/').to_string();
    // SAFETY: the child only does file I/O on paths computed before the fork and exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let ok = g.mgr.join_self().is_ok()
                && std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| {
                    t.lines()
                        .filter(|l| !l.starts_with("0::"))
                        .all(|l| l.ends_with(&format!("/{leaf}")))
                });
            // SAFETY: leave the forked test process without running its destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(
                st,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "child did not land in {name} in every hierarchy"
            );
        }
    }

    for mut c in g.children.drain(..) {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    g.mgr.destroy().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
