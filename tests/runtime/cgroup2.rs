//! Containers on cgroup v2. On a unified host (Debian 12 and later) that is
//! /sys/fs/cgroup itself, with every controller. This test machine is hybrid: its v1
//! hierarchies carry the controllers, and its cgroup2 mount (/sys/fs/cgroup/unified) has
//! only the core and hugetlb. That is enough to run skiff's v2 path for real: creation
//! straight into the cgroup (clone3 with CLONE_INTO_CGROUP), the eBPF device filter,
//! freezing, exec, and a clear refusal of limits whose controller is missing. (v2 limits
//! are written to a fake cgroupfs by the runtime crate's unit tests.)

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::{host_cgroup_layout, unique_name, Bundle, Cgroups, Rt};

/// The host's cgroup2 mount: /sys/fs/cgroup on a unified host, e.g.
/// /sys/fs/cgroup/unified on a hybrid one.
fn unified() -> PathBuf {
    let p = host_cgroup_layout()
        .unified
        .expect("this host has no cgroup2 mount under /sys/fs/cgroup");
    assert!(
        p.join("cgroup.controllers").exists(),
        "{} is not a cgroup2 root",
        p.display()
    );
    p
}

fn cgroup_file(id: &str, file: &str) -> String {
    Cgroups::V2 { root: unified() }.read("", id, file)
}

#[test]
fn container_is_created_in_its_cgroup2_cgroup_and_devices_are_filtered() {
    let rt = Rt::skiff_on(&unified());
    // /dev/kmsg (char 1:11) is bound in but not allowed by the device rules: the eBPF
    // filter must refuse opening it, while the default devices work.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "grep '^0::' /proc/self/cgroup; echo x > /dev/null && echo null-ok; \
         head -c1 /dev/kmsg >/dev/null 2>&1 && echo kmsg-open || echo kmsg-denied",
    ]);
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/dev/kmsg", "type": "bind", "source": "/dev/kmsg", "options": ["bind"]}));
    let id = unique_name();
    let out = rt.run(&b, &id).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [format!("0::/{id}").as_str(), "null-ok", "kmsg-denied"],
        "{out:?}"
    );
    assert!(!unified().join(&id).exists(), "cgroup left behind");
}

#[test]
fn cgroup2_pause_resume_exec_and_delete() {
    let rt = Rt::skiff_on(&unified());
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique_name();
    let pid = rt.start_detached(&b, &id);
    let procs = cgroup_file(&id, "cgroup.procs");
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs:?}");

    rt.cmd(&["pause", id.as_str()]).ok();
    assert_eq!(rt.state(&id)["status"], "paused");
    assert!(cgroup_file(&id, "cgroup.events").contains("frozen 1"));
    rt.cmd(&["resume", id.as_str()]).ok();
    assert_eq!(rt.state(&id)["status"], "running");

    let out = rt
        .cmd(&[
            "exec",
            id.as_str(),
            "sh",
            "-c",
            "grep '^0::' /proc/self/cgroup",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), format!("0::/{id}"));

    rt.cmd(&["delete", "--force", id.as_str()]).ok();
    assert!(
        !Path::new(&unified().join(&id)).exists(),
        "cgroup left behind"
    );
}

#[test]
fn a_limit_without_its_controller_is_refused_and_nothing_is_left() {
    let root = unified();
    let available =
        std::fs::read_to_string(root.join("cgroup.controllers")).expect("read cgroup.controllers");
    let available: Vec<&str> = available.split_whitespace().collect();
    // A limit whose controller this cgroup2 mount lacks (pids on this hybrid host). A
    // unified host may have them all; cgroup v2 has no realtime cpu limits at all.
    let candidates = [
        ("pids", "/linux/resources/pids", json!({"limit": 10})),
        (
            "rdma",
            "/linux/resources/rdma",
            json!({"mlx5_0": {"hcaHandles": 1}}),
        ),
    ];
    let (name, pointer, value) = candidates
        .into_iter()
        .find(|(c, _, _)| !available.contains(c))
        .unwrap_or((
            "realtime",
            "/linux/resources/cpu",
            json!({"realtimeRuntime": 1000, "realtimePeriod": 100000}),
        ));
    let rt = Rt::skiff_on(&root);
    let mut b = Bundle::new(&["true"]);
    b.set(pointer, value);
    let id = unique_name();
    let out = rt.run(&b, &id);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(name),
        "error does not name the {name} controller: {out:?}"
    );
    assert!(!rt.state_dir(&id).exists(), "state dir left behind");
    assert!(!root.join(&id).exists(), "cgroup left behind");
}
