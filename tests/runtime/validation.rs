//! Bad configs are refused before anything is created, with the JSON path of the
//! offending field in the message.

use serde_json::json;

use crate::common::{processes_mentioning, unique_name, Bundle, Rt};

/// `create` and `run` of the bundle fail with exit 1, stderr naming each of `needles`,
/// and leave no state dir, no process and no container behind.
#[track_caller]
fn refused(b: &Bundle, needles: &[&str]) {
    let rt = Rt::skiff();
    for verb in [&["create"][..], &["run"][..]] {
        let id = unique_name();
        let out = rt.lifecycle(verb, b, &id).fails_with(1, needles);
        assert!(!out.stderr.contains("panicked"), "{out:#?}");
        assert!(
            !rt.state_dir(&id).exists(),
            "{verb:?} left a state dir: {out:#?}"
        );
        rt.cmd(&["state", &id]).fails_with(1, &["does not exist"]);
    }
    let procs = processes_mentioning(&rt.root().to_string_lossy());
    assert!(procs.is_empty(), "refused config left processes: {procs:?}");
}

#[test]
fn unknown_namespace_type() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "foo"}));
    refused(&b, &["linux.namespaces[5]", "foo"]);
}

#[test]
fn missing_rootfs() {
    let mut b = Bundle::new(&["true"]);
    b.set("/root/path", json!("no-such-rootfs"));
    refused(&b, &["root.path", "no-such-rootfs"]);
}

#[test]
fn relative_mount_destination() {
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"destination": "mnt", "type": "tmpfs", "source": "tmpfs"}));
    refused(&b, &["mounts[7].destination", "mnt"]);
}

#[test]
fn unknown_capability() {
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .expect("bounding")
        .push(json!("CAP_FOO"));
    refused(&b, &["process.capabilities", "CAP_FOO"]);
}

#[test]
fn bad_seccomp_action() {
    let mut b = Bundle::new(&["true"]);
    b.set("/linux/seccomp", json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_FOO"}]}));
    refused(&b, &["linux.seccomp", "SCMP_ACT_FOO"]);
    b.set("/linux/seccomp", json!({"defaultAction": "SCMP_ACT_FOO"}));
    refused(&b, &["linux.seccomp.defaultAction"]);
}

#[test]
fn malformed_json() {
    let b = Bundle::new(&["true"]);
    let rt = Rt::skiff();
    let id = unique_name();
    std::fs::write(
        b.path().join("config.json"),
        "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {,\n}\n",
    )
    .expect("write");
    let out = rt.cmd(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        b.path().as_os_str(),
        id.as_ref(),
    ]);
    let out = out.fails_with(1, &["config.json", "line 3"]);
    assert!(!rt.state_dir(&id).exists(), "{out:#?}");
    std::fs::remove_file(b.path().join("config.json")).expect("rm");
    rt.cmd(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        b.path().as_os_str(),
        id.as_ref(),
    ])
    .fails_with(1, &["config.json", "No such file"]);
    assert!(!rt.state_dir(&id).exists());
}

#[test]
fn other_invalid_fields() {
    let cases: &[(&str, serde_json::Value, &[&str])] = &[
        ("/process/args", json!([]), &["process.args"]),
        ("/process/cwd", json!("relative"), &["process.cwd"]),
        ("/process/env", json!(["NOEQUALS"]), &["process.env[0]"]),
        (
            "/process/oomScoreAdj",
            json!(5000),
            &["process.oomScoreAdj"],
        ),
        (
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 1000, "size": 1}]),
            &["linux.uidMappings"],
        ),
        (
            "/hooks/prestart",
            json!([{"path": "relative/hook"}]),
            &["hooks.prestart[0].path"],
        ),
        (
            "/linux/sysctl",
            json!({"kernel.panic": "1"}),
            &["linux.sysctl.kernel.panic"],
        ),
        ("/ociVersion", json!("2.0.0"), &["ociVersion"]),
    ];
    for (ptr, v, needles) in cases {
        let mut b = Bundle::new(&["true"]);
        b.set(ptr, v.clone());
        refused(&b, needles);
    }
}
