//! Containers on cgroup v2. This machine is hybrid: its v1 hierarchies carry the
//! controllers, and its cgroup2 mount (/sys/fs/cgroup/unified) has only the core and
//! hugetlb. That is enough to run skiff's v2 path for real: creation straight into the
//! cgroup (clone3 with CLONE_INTO_CGROUP), the eBPF device filter, freezing, exec, and a
//! clear refusal of limits whose controller is missing.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::{unique_name, Bundle, Rt};

fn unified() -> PathBuf {
    let p = PathBuf::from("/sys/fs/cgroup/unified");
    assert!(
        p.join("cgroup.controllers").exists(),
        "this test machine has a cgroup2 mount at {}",
        p.display()
    );
    p
}

fn cgroup_file(id: &str, file: &str) -> String {
    let p = unified().join(id).join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
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
    // The unified hierarchy here has no pids controller.
    let rt = Rt::skiff_on(&unified());
    let mut b = Bundle::new(&["true"]);
    b.set("/linux/resources/pids", json!({"limit": 10}));
    let id = unique_name();
    let out = rt.run(&b, &id);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("pids"),
        "error does not name the controller: {out:?}"
    );
    assert!(!rt.state_dir(&id).exists(), "state dir left behind");
    assert!(!unified().join(&id).exists(), "cgroup left behind");
}
