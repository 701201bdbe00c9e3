//! The cgroup side of a container on this host's default cgroup layout: v1 hierarchies
//! on a legacy or hybrid host (like the test machines), the unified hierarchy on a v2
//! host (Debian 12 and later); each test reads the files of the layout it finds. Its
//! cgroup, resource limits, pause/resume, ps and events. cgroupsPath is `/<id>`; ids are
//! unique `skiff-t<pid>-<n>` names (see `Bundle::save_for`).

use serde_json::json;

use crate::common::{cgroup_dirs, pid_alive, unique_name, Bundle, Cgroups, Rt};

/// The v1 hierarchies a container joins.
const CONTROLLERS: &[&str] = &[
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids",
];

fn cg_path(id: &str) -> String {
    format!("/{id}")
}

#[test]
fn container_gets_its_own_cgroup_which_delete_removes() {
    let cgroups = Cgroups::host();
    let rt = Rt::skiff();
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique_name();
    rt.create(&b, &id).ok();
    let pid = rt.state(&id)["pid"].as_i64().expect("pid");
    // Already in its cgroup while created, before the program runs.
    let controllers: &[&str] = if cgroups.is_v2() { &[""] } else { CONTROLLERS };
    for c in controllers {
        let procs = cgroups.read(c, &cg_path(&id), "cgroup.procs");
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{c}: init {pid} not in cgroup.procs {procs:?}"
        );
    }
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/PID/cgroup");
    let lines: Vec<&str> = own
        .lines()
        .filter(|l| {
            let ctl = l.split(':').nth(1);
            if cgroups.is_v2() {
                ctl == Some("")
            } else {
                CONTROLLERS.iter().any(|c| ctl == Some(c))
            }
        })
        .collect();
    assert_eq!(lines.len(), controllers.len(), "{own}");
    for line in lines {
        assert!(line.ends_with(&cg_path(&id)), "init is elsewhere: {line}");
    }
    rt.cmd(&["start", &id]).ok();
    rt.cmd(&["delete", "--force", &id]).ok();
    let left = cgroup_dirs(&cg_path(&id));
    assert!(left.is_empty(), "delete left cgroup dirs: {left:?}");
}

#[test]
fn resource_limits_are_written_to_the_cgroup() {
    let cgroups = Cgroups::host();
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["sleep", "60"]);
    b.set("/linux/resources/memory", json!({"limit": 67108864}))
        .set(
            "/linux/resources/cpu",
            json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}),
        )
        .set("/linux/resources/pids", json!({"limit": 20}));
    let id = unique_name();
    rt.start_detached(&b, &id);
    let p = cg_path(&id);
    let read = |controller: &str, file: &str| cgroups.read(controller, &p, file);
    assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    assert_eq!(read("cpuset", "cpuset.mems"), "0");
    assert_eq!(read("pids", "pids.max"), "20");
    if cgroups.is_v2() {
        assert_eq!(read("memory", "memory.max"), "67108864");
        // runc's conversion of shares [2, 262144] to weight [1, 10000].
        assert_eq!(read("cpu", "cpu.weight"), "20");
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
        // Device rules are an eBPF program on v2, with no file to read: the filter is
        // tested by what a container can open (cgroup2.rs).
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        // runc's default config denies every device; the runtime then allows the
        // standard ones.
        let devices = read("devices", "devices.list");
        assert!(
            !devices.lines().any(|l| l == "a *:* rwm"),
            "devices not restricted: {devices}"
        );
        for dev in ["c 1:3 rwm", "c 1:5 rwm", "c 1:9 rwm", "c 5:0 rwm"] {
            assert!(
                devices.lines().any(|l| l == dev),
                "{dev} missing from devices.list: {devices}"
            );
        }
    }
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn memory_limit_oom_kills_the_container() {
    let rt = Rt::skiff();
    // The shell holds 100 MB in a variable; the limit is 32 MiB (and there is no swap).
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    ]);
    b.set("/linux/resources/memory", json!({"limit": 33554432}));
    let id = unique_name();
    let out = rt.lifecycle(&["run", "--keep"], &b, &id);
    assert_eq!(out.code, 137, "not OOM-killed: {out:#?}");
    assert!(!out.stdout.contains("survived"), "{out:#?}");
    let st = rt.state(&id);
    assert_eq!(
        (st["status"].as_str(), st["exitStatus"].as_i64()),
        (Some("stopped"), Some(137)),
        "{st}"
    );
    assert_eq!(st["oomKilled"], true, "{st}");
    rt.cmd(&["delete", &id]).ok();
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "for i in $(seq 1 50); do sleep 30 & done; echo all-forked",
    ]);
    b.set("/linux/resources/pids", json!({"limit": 10}));
    let id = unique_name();
    let out = rt.run(&b, &id);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(
        !out.stdout.contains("all-forked"),
        "50 processes forked under pids.max 10: {out:#?}"
    );
    assert!(out.stderr.contains("can't fork"), "{out:#?}");
}

#[test]
fn pause_and_resume_freeze_the_container() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "sleep 60 & sleep 60"]);
    let id = unique_name();
    let pid = rt.start_detached(&b, &id);
    let cgroups = Cgroups::host();
    // v1: freezer.state; v2: cgroup.events' "frozen" key.
    let frozen = || {
        if cgroups.is_v2() {
            let events = cgroups.read("", &cg_path(&id), "cgroup.events");
            events.lines().any(|l| l == "frozen 1")
        } else {
            let state = cgroups.read("freezer", &cg_path(&id), "freezer.state");
            assert!(state == "FROZEN" || state == "THAWED", "{state}");
            state == "FROZEN"
        }
    };
    rt.cmd(&["pause", &id]).ok();
    assert_eq!(rt.state(&id)["status"], "paused");
    assert!(frozen(), "pause left the cgroup thawed");
    rt.cmd(&["pause", &id]).fails_with(1, &["paused"]);
    rt.cmd(&["resume", &id]).ok();
    assert_eq!(rt.state(&id)["status"], "running");
    assert!(!frozen(), "resume left the cgroup frozen");
    rt.cmd(&["resume", &id]).fails_with(1, &["running"]);

    // A paused container can still be force-deleted: its processes must be thawed to die.
    rt.cmd(&["pause", &id]).ok();
    rt.cmd(&["delete", "--force", &id]).ok();
    assert!(!pid_alive(pid), "frozen init survived delete --force");
}

#[test]
fn ps_lists_the_containers_processes() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "sleep 60 & wait"]);
    let id = unique_name();
    let pid = rt.start_detached(&b, &id) as i64;
    // sh and, once it has forked, sleep.
    let pids = rt.wait_processes(&id, 2);
    assert!(pids.contains(&pid), "init {pid} not in {pids:?}");
    let table = rt.cmd(&["ps", &id]).ok();
    assert!(
        table
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .contains("PID"),
        "{table:#?}"
    );
    assert!(table.stdout.contains("sleep 60"), "{table:#?}");
    assert_eq!(
        table.stdout.lines().count(),
        3,
        "header and two processes: {table:#?}"
    );
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn events_stats_reports_the_cgroup() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "sleep 60 & wait"]);
    let id = unique_name();
    rt.start_detached(&b, &id);
    rt.wait_processes(&id, 2);
    let out = rt.cmd(&["events", "--stats", &id]).ok();
    let ev = out.json();
    assert_eq!(ev["type"], "stats", "{ev}");
    assert_eq!(ev["id"], id.as_str(), "{ev}");
    assert_eq!(ev["data"]["pids"]["current"], 2, "{ev}");
    assert!(
        ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{ev}"
    );
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn events_stream_ends_when_the_container_does() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "sleep 0.5"]);
    let id = unique_name();
    rt.start_detached(&b, &id);
    let out = rt.cmd(&["events", "--interval", "100ms", id.as_str()]).ok();
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert!(!events.is_empty(), "{out:?}");
    assert!(events
        .iter()
        .all(|e| e["type"] == "stats" && e["id"] == id.as_str()));
}
