//! `exec`: another process in a running container's namespaces.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use serde_json::json;

use crate::common::{pid_alive, run_with_timeout, unique_name, Bundle, Rt, CMD_TIMEOUT};

fn ns_inode(pid: i32, ns: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .map(|m| m.ino())
        .unwrap_or_else(|e| panic!("{pid}/{ns}: {e}"))
}

/// A running `sleep 60` container; returns (runtime, bundle, id, init pid).
fn running() -> (Rt, Bundle, String, i32) {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["sleep", "60"]);
    b.set("/hostname", json!("exec-box"));
    let id = unique_name();
    let pid = rt.start_detached(&b, &id);
    (rt, b, id, pid)
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_propagates_status() {
    let (rt, _b, id, _pid) = running();
    // The glob runs in the shell: only the init (1) and the shell itself exist.
    let script = "echo $$; hostname; echo /proc/[0-9]*";
    let out = rt.cmd(&["exec", &id, "sh", "-c", script]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let own: i32 = lines[0].parse().expect("a pid");
    assert!(
        own > 1,
        "exec'd process is pid {own} in the container: {out:#?}"
    );
    let procs = format!("/proc/1 /proc/{own}");
    assert_eq!(&lines[1..], ["exec-box", procs.as_str()], "{out:#?}");
    assert_eq!(rt.cmd(&["exec", &id, "sh", "-c", "exit 4"]).code, 4);
    assert_eq!(rt.cmd(&["exec", &id, "false"]).code, 1);
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn exec_flags_env_cwd_user() {
    let (rt, _b, id, _pid) = running();
    assert_eq!(
        rt.cmd(&["exec", "--env", "FOO=bar", &id, "sh", "-c", "echo $FOO"])
            .ok()
            .stdout,
        "bar\n"
    );
    assert_eq!(
        rt.cmd(&["exec", "--cwd", "/tmp", &id, "pwd"]).ok().stdout,
        "/tmp\n"
    );
    assert_eq!(
        rt.cmd(&["exec", "--user", "1000:1000", &id, "id", "-u"])
            .ok()
            .stdout,
        "1000\n"
    );
    assert_eq!(
        rt.cmd(&["exec", "-u", "1000:1001", &id, "id", "-g"])
            .ok()
            .stdout,
        "1001\n"
    );
    // The config's env is the base, as in runc.
    assert_eq!(
        rt.cmd(&["exec", &id, "sh", "-c", "echo $TERM"]).ok().stdout,
        "xterm\n"
    );
    // Capabilities: the config's set, plus --cap.
    let caps = rt
        .cmd(&[
            "exec",
            "--cap",
            "CAP_SYS_ADMIN",
            &id,
            "grep",
            "CapEff",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(
        caps.stdout,
        format!(
            "CapEff:\t{:016x}\n",
            (1u64 << 29) | (1 << 5) | (1 << 10) | (1 << 21)
        )
    );
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn exec_process_file() {
    let (rt, b, id, _pid) = running();
    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sh", "-c", "echo \"$X $(id -u) $(pwd)\"; exit 6"],
        "env": ["PATH=/bin", "X=from-file"],
        "cwd": "/tmp",
    });
    let file = b.path().join("process.json");
    std::fs::write(&file, process.to_string()).expect("write process.json");
    let out = rt.cmd(&["exec", "--process", file.to_str().expect("utf-8"), &id]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (6, "from-file 1000 /tmp\n"),
        "{out:#?}"
    );
    // A bad process file is refused with its JSON path.
    std::fs::write(
        &file,
        json!({"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .expect("write");
    rt.cmd(&["exec", "--process", file.to_str().expect("utf-8"), &id])
        .fails_with(1, &["process.args"]);
    std::fs::write(&file, "{\"args\": [\"true\"],").expect("write");
    rt.cmd(&["exec", "--process", file.to_str().expect("utf-8"), &id])
        .fails_with(1, &["process.json", "line 1"]);
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn exec_detached_with_pid_file() {
    let (rt, b, id, init) = running();
    let pid_file = b.path().join("exec.pid");
    rt.cmd(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().expect("utf-8"),
        &id,
        "sleep",
        "60",
    ])
    .ok();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert!(pid_alive(pid), "exec -d process {pid} is not running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert_eq!(cmdline, b"sleep\x0060\x00");
    for ns in ["pid", "mnt", "net", "uts", "ipc"] {
        assert_eq!(
            ns_inode(pid, ns),
            ns_inode(init, ns),
            "exec'd process is not in the container's {ns} namespace"
        );
    }
    // It belongs to the container: delete --force takes it down too.
    rt.cmd(&["delete", "--force", &id]).ok();
    assert!(!pid_alive(pid), "exec'd process survived delete --force");
}

#[test]
fn exec_into_a_stopped_container_fails() {
    let (rt, _b, id, _pid) = running();
    rt.cmd(&["kill", &id, "KILL"]).ok();
    rt.wait_stopped(&id);
    rt.cmd(&["exec", &id, "true"])
        .fails_with(1, &[&id, "stopped"]);
    rt.cmd(&["delete", &id]).ok();
}

#[test]
fn exec_does_not_leak_inherited_descriptors() {
    let (rt, _b, id, _pid) = running();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("exec 7</ 8>/dev/null; exec \"$@\"")
        .arg("sh");
    let inner = rt.command(&["exec", &id, "ls", "/proc/self/fd"]);
    c.arg(inner.get_program()).args(inner.get_args());
    let out = run_with_timeout(c, CMD_TIMEOUT).ok();
    assert_eq!(
        out.stdout, "0\n1\n2\n3\n",
        "descriptors in the exec'd process: {out:#?}"
    );
    rt.cmd(&["delete", "--force", &id]).ok();
}
