//! More of config.json honoured, and runc's command-line conveniences: signal
//! forwarding by a foreground `run`, sysctls, domainname, bind mount options, `kill --all`,
//! `list`, and `--log` in JSON.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::{pid_alive, poll, skiff_bin, unique_name, Bundle, Rt};

#[test]
fn foreground_run_forwards_signals_to_the_container() {
    let rt = Rt::skiff();
    let b = Bundle::new(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    let id = unique_name();
    let cg = b.save_for(&id);
    rt.track(&id, &b, cg);
    let mut child = Command::new(skiff_bin())
        .arg("runtime")
        .arg("--root")
        .arg(rt.root())
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&id)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn skiff run");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal skiff");
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "got-term");
    let status = poll(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("skiff run did not exit after the container did");
    };
    assert_eq!(status.code(), Some(3));
}

#[test]
fn sysctls_and_domainname_are_set_in_the_containers_namespaces() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/domainname",
    ]);
    b.set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}))
        .set("/domainname", json!("example.test"));
    let out = rt.run(&b, &unique_name()).ok();
    assert_eq!(out.stdout, "1\nexample.test\n");
    // The host is untouched.
    let host = std::fs::read_to_string("/proc/sys/kernel/domainname").expect("read");
    assert_ne!(host.trim(), "example.test");
}

#[test]
fn a_host_wide_sysctl_is_refused() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["true"]);
    b.set("/linux/sysctl", json!({"kernel.panic": "1"}));
    let id = unique_name();
    let out = rt.run(&b, &id);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("linux.sysctl.kernel.panic"), "{out:?}");
    assert!(!rt.state_dir(&id).exists());
}

#[test]
fn bind_mount_options_are_applied() {
    let rt = Rt::skiff();
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("hello"), "from-host\n").expect("write");
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /data/hello; touch /data/x 2>/dev/null && echo writable || echo read-only; \
         touch /rw/y && echo rw-ok",
    ]);
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/data", "type": "bind",
        "source": host.path(), "options": ["rbind", "ro", "nosuid", "nodev"]}));
    mounts.push(json!({"destination": "/rw", "type": "bind",
        "source": host.path(), "options": ["bind"]}));
    let out = rt.run(&b, &unique_name()).ok();
    assert_eq!(out.stdout, "from-host\nread-only\nrw-ok\n");
    assert!(
        host.path().join("y").exists(),
        "write through the rw bind missing"
    );
    assert!(!host.path().join("x").exists());
}

#[test]
fn kill_all_signals_every_process_and_list_shows_containers() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "sleep 60 & sleep 60 & wait"]);
    let id = unique_name();
    let pid = rt.start_detached(&b, &id);
    let pids = poll(Duration::from_secs(10), || {
        let v: Vec<i64> = rt
            .cmd(&["ps", "--format", "json", id.as_str()])
            .ok()
            .json()
            .as_array()
            .expect("pid list")
            .iter()
            .filter_map(|p| p.as_i64())
            .collect();
        (v.len() == 3).then_some(v)
    })
    .expect("three processes in the container");
    let list = rt.cmd(&["list", "--format", "json"]).ok().json();
    assert!(list
        .as_array()
        .expect("list")
        .iter()
        .any(|c| c["id"] == id.as_str() && c["status"] == "running"));
    assert_eq!(rt.cmd(&["list", "-q"]).ok().stdout.trim(), id);
    rt.cmd(&["kill", "--all", id.as_str(), "KILL"]).ok();
    let gone = poll(Duration::from_secs(10), || {
        pids.iter().all(|p| !pid_alive(*p as i32)).then_some(())
    });
    assert!(
        gone.is_some(),
        "processes of {id} (init {pid}) survived kill --all"
    );
}

#[test]
fn errors_go_to_the_log_file_as_json() {
    let rt = Rt::skiff();
    let log = tempfile::NamedTempFile::new().expect("temp");
    let out = rt.cmd(&[
        "--log",
        log.path().to_str().expect("utf-8"),
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ]);
    assert_eq!(out.code, 1);
    let text = std::fs::read_to_string(log.path()).expect("read log");
    let entry: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert_eq!(entry["level"], "error");
    assert!(entry["msg"]
        .as_str()
        .is_some_and(|m| m.contains("does not exist")));
}
