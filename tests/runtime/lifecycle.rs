//! create → start → kill → delete, the state JSON on the way, and the errors of each verb
//! used out of order.

use serde_json::Value;

use crate::common::{cgroup_dirs, pid_alive, poll, unique_name, Bundle, Rt, STATE_TIMEOUT};

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn create_start_kill_delete() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique_name();
    rt.create(&b, &id).ok();

    let st = rt.state(&id);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"].as_str(), b.path().to_str(), "{st}");
    let pid = st["pid"].as_i64().expect("pid") as i32;
    assert!(
        pid > 0 && pid_alive(pid),
        "created container has no live init: {st}"
    );
    assert!(
        !cmdline(pid).starts_with("sleep"),
        "the program ran before start: {}",
        cmdline(pid)
    );
    let list = rt.cmd(&["list", "--format", "json"]).ok().json();
    let entry = list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["id"] == id.as_str()))
        .cloned();
    assert_eq!(
        entry.map(|c| c["status"].clone()),
        Some(Value::from("created")),
        "{list}"
    );
    assert_eq!(rt.cmd(&["list", "-q"]).ok().stdout, format!("{id}\n"));

    rt.cmd(&["start", &id]).ok();
    let st = rt.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"], pid, "the init's pid changed at start");
    // As with runc, start returns once the init is released; the exec follows.
    let exec = poll(STATE_TIMEOUT, || {
        cmdline(pid).starts_with("sleep 60").then_some(())
    });
    assert!(
        exec.is_some(),
        "init never became the program: {:?}",
        cmdline(pid)
    );

    // sleep as pid 1 has no handler for TERM, which the kernel then ignores: use KILL.
    rt.cmd(&["kill", &id, "KILL"]).ok();
    let st = rt.wait_stopped(&id);
    assert_eq!(st["exitStatus"], 137, "{st}");
    assert!(!pid_alive(pid));
    rt.cmd(&["kill", &id, "KILL"]).fails_with(1, &["stopped"]);

    rt.cmd(&["delete", &id]).ok();
    rt.cmd(&["state", &id]).fails_with(1, &["does not exist"]);
    assert!(!rt.state_dir(&id).exists(), "delete left the state dir");
    assert_eq!(rt.cmd(&["list", "-q"]).ok().stdout, "");
}

#[test]
fn verbs_used_out_of_order_fail_clearly() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique_name();
    let pid = rt.start_detached(&b, &id);

    rt.cmd(&["start", &id])
        .fails_with(1, &[&id, "running", "created"]);
    rt.create(&b, &id).fails_with(1, &["already exists"]);
    rt.cmd(&["resume", &id]).fails_with(1, &[&id, "running"]);
    rt.cmd(&["delete", &id])
        .fails_with(1, &[&id, "running", "--force"]);
    assert_eq!(
        rt.state(&id)["status"],
        "running",
        "a refused verb changed the container"
    );
    assert!(pid_alive(pid));
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn unknown_container_is_reported() {
    let rt = Rt::skiff();
    let id = unique_name();
    for verb in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id, "KILL"],
        vec!["delete", &id],
        vec!["pause", &id],
        vec!["resume", &id],
        vec!["ps", &id],
        vec!["exec", &id, "true"],
        vec!["events", "--stats", &id],
    ] {
        let out = rt.cmd(&verb);
        assert_eq!(out.code, 1, "{verb:?}: {out:#?}");
        assert!(
            out.stderr.contains("does not exist") && out.stderr.contains(&id),
            "{verb:?}: {out:#?}"
        );
    }
    // Like runc: forcing the delete of nothing is not an error.
    rt.cmd(&["delete", "--force", &id]).ok();
    rt.cmd(&["state", "../etc"])
        .fails_with(1, &["invalid container id"]);
}

#[test]
fn delete_force_kills_a_running_container_and_removes_its_cgroup() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "sleep 60 & sleep 60"]);
    let id = unique_name();
    let pid = rt.start_detached(&b, &id);
    rt.cmd(&["delete", &id]).fails_with(1, &["--force"]);
    rt.cmd(&["delete", "--force", &id]).ok();
    assert!(!pid_alive(pid), "init survived delete --force");
    rt.cmd(&["state", &id]).fails_with(1, &["does not exist"]);
    assert!(!rt.state_dir(&id).exists());
    let left = cgroup_dirs(&format!("/{id}"));
    assert!(left.is_empty(), "cgroup dirs left behind: {left:?}");
}

#[test]
fn exit_status_outlives_the_process_that_started_it() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "sleep 0.3; exit 5"]);
    let id = unique_name();
    // create and start return at once; only the container's monitor sees the exit.
    rt.start_detached(&b, &id);
    let st = rt.wait_stopped(&id);
    assert_eq!(st["exitStatus"], 5, "{st}");
    assert_eq!(st["pid"], 0, "{st}");
    rt.cmd(&["delete", &id]).ok();
}

#[test]
fn stopped_state_always_carries_the_exit_status() {
    // A container the kubelet did not start must still yield its exit code: whenever
    // `state` says stopped, exitStatus is there (no window between the init's death and
    // the record of its status).
    // The window is short: poll `state` back to back, over many containers.
    let rt = Rt::skiff();
    for i in 0..20 {
        let b = Bundle::new(&["sh", "-c", &format!("exit {}", 10 + i)]);
        let id = unique_name();
        rt.start_detached(&b, &id);
        let deadline = std::time::Instant::now() + STATE_TIMEOUT;
        let st = loop {
            let st = rt.state(&id);
            if st["status"] == "stopped" {
                break st;
            }
            assert!(std::time::Instant::now() < deadline, "never stopped: {st}");
        };
        assert_eq!(
            st["exitStatus"],
            10 + i,
            "stopped without (the right) exit status: {st}"
        );
        rt.cmd(&["delete", &id]).ok();
    }
}

#[test]
fn run_detached_and_run_keep() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "exit 7"]);
    let id = unique_name();
    assert_eq!(rt.lifecycle(&["run", "--keep"], &b, &id).code, 7);
    let st = rt.state(&id);
    assert_eq!(
        (st["status"].as_str(), st["exitStatus"].as_i64()),
        (Some("stopped"), Some(7)),
        "{st}"
    );
    rt.cmd(&["delete", &id]).ok();

    let b = Bundle::new(&["sleep", "60"]);
    let id = unique_name();
    rt.lifecycle(&["run", "-d"], &b, &id).ok();
    let st = rt.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    rt.cmd(&["kill", &id, "9"]).ok();
    assert_eq!(rt.wait_stopped(&id)["exitStatus"], 137);
    rt.cmd(&["delete", &id]).ok();
}

#[test]
fn pid_file_holds_the_init_pid() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique_name();
    let pid_file = b.path().join("init.pid");
    rt.lifecycle(
        &["create", "--pid-file", pid_file.to_str().expect("utf-8")],
        &b,
        &id,
    )
    .ok();
    let written: i64 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(rt.state(&id)["pid"], written);
    rt.cmd(&["delete", &id]).ok();
    assert!(
        !pid_alive(written as i32),
        "delete of a created container left its init"
    );
}
