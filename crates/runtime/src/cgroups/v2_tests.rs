use super::*;
use crate::cgroups::testutil::{get, put, FakeV2};

const ALL: &str = "cpuset cpu io memory hugetlb pids";

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

#[test]
fn conversions() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(1), 1, "clamped, no underflow");
    assert_eq!(shares_to_weight(1_000_000), 10_000, "clamped");

    assert_eq!(blkio_weight_to_io_weight(10), 1);
    assert_eq!(blkio_weight_to_io_weight(500), 1 + 490 * 9999 / 990);
    assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    assert_eq!(blkio_weight_to_io_weight(1), 1, "clamped");

    assert_eq!(
        cpu_max(Some(50_000), Some(100_000)).as_deref(),
        Some("50000 100000")
    );
    assert_eq!(cpu_max(None, Some(100_000)).as_deref(), Some("max 100000"));
    assert_eq!(
        cpu_max(Some(-1), Some(20_000)).as_deref(),
        Some("max 20000")
    );
    assert_eq!(cpu_max(Some(30_000), None).as_deref(), Some("30000"));
    assert_eq!(cpu_max(None, None), None);
    assert_eq!(cpu_max(Some(0), Some(0)), None);

    assert_eq!(swap_to_v2(None, None).unwrap(), None);
    assert_eq!(swap_to_v2(None, Some(-1)).unwrap(), Some(-1));
    assert_eq!(swap_to_v2(Some(-1), Some(100)).unwrap(), Some(-1));
    assert_eq!(swap_to_v2(Some(300), Some(100)).unwrap(), Some(200));
    assert_eq!(swap_to_v2(Some(100), Some(100)).unwrap(), Some(0));
    assert_eq!(swap_to_v2(None, Some(100)).unwrap(), None);
    assert!(swap_to_v2(Some(50), Some(100)).is_err(), "swap below limit");
    assert!(swap_to_v2(Some(50), None).is_err(), "swap without limit");
    assert!(
        swap_to_v2(Some(50), Some(-1)).is_err(),
        "swap with unlimited memory"
    );
    assert!(swap_to_v2(Some(-2), Some(100)).is_err());
}

#[test]
fn create_enables_controllers_in_ancestors_only() {
    let fake = FakeV2::new(ALL);
    let root = fake.root();
    let m = fake.manager("/skiff/pod/ctr");
    m.create().unwrap();
    let enabled = get(&root.join("cgroup.subtree_control"));
    assert_eq!(enabled, "+cpuset +cpu +io +memory +hugetlb +pids");
    assert_eq!(
        get(&root.join("skiff/cgroup.subtree_control")),
        "+cpuset +cpu +io +memory +hugetlb +pids"
    );
    assert_eq!(
        get(&root.join("skiff/pod/cgroup.subtree_control")),
        "+cpuset +cpu +io +memory +hugetlb +pids"
    );
    assert_eq!(
        get(&root.join("skiff/pod/ctr/cgroup.subtree_control")),
        "",
        "leaf untouched"
    );
    assert!(root.join("skiff/pod/ctr/memory.max").exists());
    assert_eq!(m.path(), root.join("skiff/pod/ctr"));
    assert_eq!(
        m.mount_sources(),
        vec![CgroupMountSource {
            subdir: String::new(),
            host_dir: root.join("skiff/pod/ctr"),
        }]
    );

    // Only what the parent offers is enabled, and nothing is written when all is enabled.
    let fake = FakeV2::new("cpu pids misc");
    fake.manager("/a/b").create().unwrap();
    assert_eq!(
        get(&fake.root().join("cgroup.subtree_control")),
        "+cpu +pids"
    );
    put(&fake.root().join("a/cgroup.subtree_control"), "cpu pids\n");
    fake.manager("/a/c").create().unwrap();
    assert_eq!(
        get(&fake.root().join("a/cgroup.subtree_control")),
        "cpu pids\n"
    );
}

#[test]
fn apply_writes_converted_values() {
    let fake = FakeV2::new(ALL);
    let m = fake.manager("/skiff/c1");
    m.create().unwrap();
    m.apply(&resources(
        r#"{
            "memory": {"limit": 67108864, "reservation": 33554432, "swap": 100663296},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000,
                    "cpus": "0-1", "mems": "0"},
            "pids": {"limit": 10},
            "blockIO": {"weight": 500,
                        "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                        "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 0}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
        }"#,
    ))
    .unwrap();
    let d = m.path();
    let f = |n: &str| get(&d.join(n));
    assert_eq!(f("memory.max"), "67108864");
    assert_eq!(f("memory.low"), "33554432");
    assert_eq!(f("memory.swap.max"), "33554432", "swap - limit");
    assert_eq!(f("cpu.weight"), "39");
    assert_eq!(f("cpu.max"), "50000 100000");
    assert_eq!(f("cpuset.cpus"), "0-1");
    assert_eq!(f("cpuset.mems"), "0");
    assert_eq!(f("pids.max"), "10");
    // Files keep the last write on the fake fs: the last io.weight write is per device.
    assert_eq!(f("io.weight"), "8:0 10000");
    assert_eq!(f("io.max"), "8:16 wiops=max");
    assert_eq!(f("hugetlb.2MB.max"), "4194304");

    m.apply(&resources(
        r#"{"memory": {"limit": -1}, "cpu": {"period": 20000},
            "pids": {"limit": 0}, "blockIO": {"weight": 10}}"#,
    ))
    .unwrap();
    assert_eq!(f("memory.max"), "max");
    assert_eq!(
        f("memory.swap.max"),
        "max",
        "unlimited memory → unlimited swap"
    );
    assert_eq!(f("cpu.max"), "max 20000");
    assert_eq!(f("pids.max"), "max");
    assert_eq!(f("io.weight"), "1");

    // BFQ is preferred when present, with the v1 scale.
    put(&d.join("io.bfq.weight"), "100\n");
    m.apply(&resources(r#"{"blockIO": {"weight": 300}}"#))
        .unwrap();
    assert_eq!(f("io.bfq.weight"), "300");

    m.apply(&resources(r#"{"unified": {"memory.high": "50000000"}}"#))
        .unwrap_err();
    put(&d.join("memory.high"), "max\n");
    m.apply(&resources(r#"{"unified": {"memory.high": "50000000"}}"#))
        .unwrap();
    assert_eq!(f("memory.high"), "50000000");
    for bad in [
        r#"{"unified": {"../x": "1"}}"#,
        r#"{"hugepageLimits": [{"pageSize": "../2MB", "limit": 1}]}"#,
    ] {
        assert!(
            matches!(m.apply(&resources(bad)), Err(CgroupError::Invalid { .. })),
            "{bad}"
        );
    }
}

#[test]
fn apply_reports_missing_controllers_and_bad_values() {
    let fake = FakeV2::new("cpu pids");
    let m = fake.manager("/c");
    m.create().unwrap();
    let err = m
        .apply(&resources(r#"{"memory": {"limit": 1048576}}"#))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "memory",
                ..
            }
        ),
        "{err}"
    );
    let err = m
        .apply(&resources(r#"{"cpu": {"realtimeRuntime": 950000}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::MissingController { .. }),
        "{err}"
    );
    // hugetlb is skipped rather than refused when the controller is missing.
    m.apply(&resources(
        r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}"#,
    ))
    .unwrap();

    let fake = FakeV2::new(ALL);
    let m = fake.manager("/c");
    m.create().unwrap();
    let err = m
        .apply(&resources(r#"{"memory": {"limit": 100, "swap": 50}}"#))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Invalid {
                field: "memory.swap",
                ..
            }
        ),
        "{err}"
    );
    // No swap accounting: "no extra swap" is fine, a real swap limit is not.
    std::fs::remove_file(m.path().join("memory.swap.max")).unwrap();
    m.apply(&resources(r#"{"memory": {"limit": 100, "swap": 100}}"#))
        .unwrap();
    let err = m
        .apply(&resources(r#"{"memory": {"limit": 100, "swap": 200}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::MissingController { .. }),
        "{err}"
    );
    let err = m.add_process(0).unwrap_err();
    assert!(matches!(err, CgroupError::Invalid { field: "pid", .. }));
}

#[test]
fn processes_freeze_and_oom() {
    let fake = FakeV2::new(ALL);
    let m = fake.manager("/skiff/c2");
    m.create().unwrap();
    m.add_process(4242).unwrap();
    assert_eq!(get(&m.path().join("cgroup.procs")), "4242");
    std::fs::create_dir(m.path().join("sub")).unwrap();
    put(&m.path().join("cgroup.procs"), "12\n4242\n");
    put(&m.path().join("sub/cgroup.procs"), "7\n12\n");
    assert_eq!(m.pids().unwrap(), vec![7, 12, 4242]);
    std::fs::remove_dir_all(m.path().join("sub")).unwrap();
    put(&m.path().join("cgroup.procs"), "");

    // The fake kernel never reports frozen: freezing times out, and is undone.
    let err = m.freeze().unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Timeout {
                wanted: "frozen",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(get(&m.path().join("cgroup.freeze")), "0", "rolled back");
    put(&m.path().join("cgroup.events"), "populated 1\nfrozen 1\n");
    m.freeze().unwrap();
    assert_eq!(get(&m.path().join("cgroup.freeze")), "1");
    assert!(m.is_frozen().unwrap());
    put(&m.path().join("cgroup.events"), "populated 1\nfrozen 0\n");
    m.thaw().unwrap();
    assert_eq!(get(&m.path().join("cgroup.freeze")), "0");
    assert!(!m.is_frozen().unwrap());

    assert!(!m.oom_killed().unwrap());
    put(
        &m.path().join("memory.events"),
        "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\n",
    );
    assert!(m.oom_killed().unwrap());
}

#[test]
fn stats_from_files() {
    let fake = FakeV2::new(ALL);
    let m = fake.manager("/skiff/c3");
    m.create().unwrap();
    let d = m.path();
    put(
        &d.join("cpu.stat"),
        "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 700\n",
    );
    put(&d.join("memory.current"), "1048576\n");
    put(&d.join("memory.max"), "67108864\n");
    put(&d.join("memory.swap.current"), "4096\n");
    put(&d.join("memory.swap.max"), "max\n");
    put(&d.join("memory.stat"), "anon 524288\nfile 8192\n");
    put(
        &d.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n",
    );
    put(&d.join("pids.current"), "2\n");
    put(&d.join("pids.max"), "max\n");
    put(
        &d.join("io.stat"),
        "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    );
    put(&d.join("hugetlb.2MB.current"), "2097152\n");
    put(&d.join("hugetlb.2MB.events"), "max 5\n");
    let s = m.stats().unwrap();
    assert_eq!(s.cpu.usage.total, 5_000_000);
    assert_eq!(s.cpu.usage.user, 3_000_000);
    assert_eq!(s.cpu.usage.kernel, 2_000_000);
    assert_eq!(s.cpu.throttling.periods, 10);
    assert_eq!(s.cpu.throttling.throttled_periods, 4);
    assert_eq!(s.cpu.throttling.throttled_time, 700_000);
    assert_eq!(s.memory.usage.usage, 1_048_576);
    assert_eq!(s.memory.usage.limit, 67_108_864);
    assert_eq!(s.memory.usage.failcnt, 3);
    assert_eq!(s.memory.swap.usage, 1_048_576 + 4096);
    assert_eq!(s.memory.swap.limit, u64::MAX, "max saturates");
    assert_eq!(s.memory.cache, 8192);
    assert_eq!(s.memory.raw["anon"], 524_288);
    assert_eq!(s.pids.current, 2);
    assert_eq!(s.pids.limit, 0, "unlimited");
    assert_eq!(s.blkio.io_service_bytes_recursive[0].value, 4096);
    assert_eq!(s.blkio.io_serviced_recursive[0].op, "Read");
    assert_eq!(s.hugetlb["2MB"].usage, 2_097_152);
    assert_eq!(s.hugetlb["2MB"].failcnt, 5);
    assert_eq!(s.hugetlb["1GB"].usage, 0);

    put(&d.join("pids.current"), "lots\n");
    assert!(matches!(m.stats(), Err(CgroupError::Parse { .. })));
}

#[test]
fn destroy_removes_only_what_create_made() {
    let fake = FakeV2::new(ALL);
    let root = fake.root();
    std::fs::create_dir(root.join("skiff")).unwrap();
    let a = fake.manager("/skiff/pod/a");
    let b = fake.manager("/skiff/pod/b");
    a.create().unwrap();
    b.create().unwrap();
    // a made skiff/pod, which still holds b: it stays, and so does the pre-existing skiff.
    a.destroy().unwrap();
    assert!(!root.join("skiff/pod/a").exists());
    assert!(root.join("skiff/pod/b").exists());
    b.destroy().unwrap();
    assert!(!root.join("skiff/pod/b").exists());
    assert!(
        root.join("skiff/pod").exists(),
        "b's manager did not create pod"
    );
    // Reopened managers (another process) remove just the leaf; destroy is idempotent.
    let c = fake.manager("/skiff/pod2/c");
    c.create().unwrap();
    let reopened = fake.manager("/skiff/pod2/c");
    reopened.destroy().unwrap();
    reopened.destroy().unwrap();
    assert!(!root.join("skiff/pod2/c").exists());
    assert!(root.join("skiff/pod2").exists());
    assert!(root.join("skiff").exists(), "pre-existing parent kept");

    // Sub-cgroups the container made are removed first.
    let d = fake.manager("/skiff/d");
    d.create().unwrap();
    std::fs::create_dir(d.path().join("nested")).unwrap();
    d.destroy().unwrap();
    assert!(!root.join("skiff/d").exists());
}

#[test]
fn device_program_is_computed_not_attached_on_fake_fs() {
    let fake = FakeV2::new(ALL);
    let m = fake.manager("/skiff/dev");
    m.create().unwrap();
    assert!(m.device_program().is_none());
    m.apply(&resources(r#"{"devices": []}"#)).unwrap();
    assert!(
        m.device_program().is_none(),
        "empty list leaves devices alone"
    );
    m.apply(&resources(
        r#"{"devices": [{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}"#,
    ))
    .unwrap();
    let prog = m.device_program().unwrap();
    assert_eq!(prog.last().unwrap().code, devices::op::EXIT);
    assert_eq!(prog[prog.len() - 2].imm, 0, "deny by default");
}

#[test]
fn relative_paths_and_validation() {
    let fake = FakeV2::new(ALL);
    assert!(matches!(
        V2Manager::new(fake.root(), "/a/../b"),
        Err(CgroupError::Invalid {
            field: "cgroupsPath",
            ..
        })
    ));
    // Relative paths go below this process's own cgroup (whatever it is here).
    let own = fs::parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap())
        .into_iter()
        .find(|e| e.controllers.is_empty())
        .unwrap();
    let m = V2Manager::new(fake.root(), "skiff/rel").unwrap();
    let expected = fs::own_cgroup_dir(fake.root(), "/", &own.path).join("skiff/rel");
    assert_eq!(m.path(), expected);
}

// ---- real cgroup2 mount (as root): the device filter is loaded, attached and enforced ----

/// Kills the test's child and removes its cgroup even when an assertion fails.
struct Cgroup2Guard {
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Drop for Cgroup2Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn real_cgroup2_device_filter_is_enforced() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    // A v2 host mounts cgroup2 at /sys/fs/cgroup; a hybrid one at .../unified.
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|p| matches!(crate::cgroups::detect(p), Ok(CgroupVersion::V2)));
    // Runs as root with a cgroup2 mount (this host's hybrid /sys/fs/cgroup/unified).
    let root = root
        .filter(|_| nix::unistd::geteuid().is_root())
        .expect("needs root and a cgroup2 mount");
    let name = format!("/skiff-t{}-bpf", std::process::id());
    let m = V2Manager::new(root, &name).unwrap();
    // mkdir rather than create(): create() would enable controllers in the host's root
    // cgroup, which this test must leave alone; device filters need no controller.
    std::fs::create_dir(m.path()).unwrap();
    let mut guard = Cgroup2Guard {
        dir: m.path().to_path_buf(),
        child: None,
    };
    let rules = resources(
        r#"{"devices": [{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}"#,
    );
    m.apply(&rules).unwrap();
    m.apply(&rules).unwrap();
    let attached = bpf::attached_device_programs(m.path()).unwrap();
    assert_eq!(attached.len(), 1, "re-applying replaces the old program");

    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; head -c0 /dev/null && echo null-ok; \
             if head -c1 /dev/zero >/dev/null 2>&1; then echo zero-ok; else echo zero-denied; fi",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    m.add_process(child.id() as i32).unwrap();
    guard.child = Some(child);
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    let out = guard.child.take().unwrap().wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("null-ok"), "{out:?}");
    assert!(out.contains("zero-denied"), "{out:?}");

    m.destroy().unwrap();
    assert!(!m.path().exists());
}
