//! OCI lifecycle hooks: each gets the container state on stdin; a failing prestart hook
//! undoes the whole create.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::{cgroup_dirs, processes_mentioning, unique_name, Bundle, Rt};

/// A host hook that saves its stdin to `file`.
fn save_stdin_to(file: &Path) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > {}", file.display())],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
    })
}

fn read_state(file: &Path) -> Value {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("hook did not write {}: {e}", file.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text:?}", file.display()))
}

#[test]
fn hooks_receive_the_state_at_each_step() {
    let out = tempfile::tempdir().expect("tempdir");
    let f = |name: &str| out.path().join(name);
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["sleep", "60"]);
    b.set(
        "/hooks",
        json!({
            "prestart": [save_stdin_to(&f("prestart"))],
            "createRuntime": [save_stdin_to(&f("createRuntime"))],
            "poststart": [save_stdin_to(&f("poststart"))],
            "poststop": [save_stdin_to(&f("poststop"))],
        }),
    );
    let id = unique_name();
    rt.create(&b, &id).ok();
    let pid = rt.state(&id)["pid"].clone();
    assert!(pid.as_i64().unwrap_or(0) > 0);
    for name in ["prestart", "createRuntime"] {
        let st = read_state(&f(name));
        assert_eq!(st["id"], id.as_str(), "{name}: {st}");
        assert_eq!(st["status"], "creating", "{name}: {st}");
        assert_eq!(st["pid"], pid, "{name}: {st}");
        assert_eq!(st["bundle"].as_str(), b.path().to_str(), "{name}: {st}");
    }
    assert!(!f("poststart").exists(), "poststart ran before start");

    rt.cmd(&["start", &id]).ok();
    let st = read_state(&f("poststart"));
    assert_eq!(st["id"], id.as_str(), "{st}");
    assert_eq!(st["pid"], pid, "{st}");

    rt.cmd(&["kill", &id, "KILL"]).ok();
    rt.wait_stopped(&id);
    assert!(!f("poststop").exists(), "poststop ran before delete");
    rt.cmd(&["delete", &id]).ok();
    let st = read_state(&f("poststop"));
    assert_eq!(st["id"], id.as_str(), "{st}");
    assert_eq!(st["status"], "stopped", "{st}");
}

#[test]
fn container_hooks_run_around_the_pivot() {
    // createContainer: in the container's namespaces, before pivot_root, so host paths
    // still resolve. startContainer: in the container, after pivot_root, just before the
    // program; it writes into the container's /tmp, which is the rootfs' tmp on the host.
    let out = tempfile::tempdir().expect("tempdir");
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["true"]);
    b.readonly(false).set(
        "/hooks",
        json!({
            "createContainer": [save_stdin_to(&out.path().join("createContainer"))],
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/startContainer"]}],
        }),
    );
    let id = unique_name();
    rt.run(&b, &id).ok();
    for st in [
        read_state(&out.path().join("createContainer")),
        read_state(&b.rootfs().join("tmp/startContainer")),
    ] {
        assert_eq!(st["id"], id.as_str(), "{st}");
        assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{st}");
    }
}

#[test]
fn failing_prestart_hook_undoes_the_create() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["sleep", "60"]);
    b.set(
        "/hooks/prestart",
        json!([{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-said-no >&2; exit 1"]}]),
    );
    let id = unique_name();
    rt.create(&b, &id)
        .fails_with(1, &["prestart", "hook-said-no"]);
    assert!(
        !rt.state_dir(&id).exists(),
        "failed create left its state dir"
    );
    rt.cmd(&["state", &id]).fails_with(1, &["does not exist"]);
    let left = cgroup_dirs(&format!("/{id}"));
    assert!(left.is_empty(), "failed create left cgroup dirs: {left:?}");
    let procs = processes_mentioning(&rt.root().to_string_lossy());
    assert!(procs.is_empty(), "failed create left processes: {procs:?}");
}
