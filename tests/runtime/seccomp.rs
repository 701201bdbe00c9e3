//! `linux.seccomp`: the profile is enforced on the container's process and on exec'd
//! ones. Busybox prints strerror, so the errno shows in its message.

use serde_json::{json, Value};

use crate::common::{unique_name, Bundle, Rt};

fn deny_mkdir(action: &str, errno: Option<u32>) -> Value {
    let mut rule = json!({"names": ["mkdir", "mkdirat"], "action": action});
    if let Some(e) = errno {
        rule["errnoRet"] = json!(e);
    }
    json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]})
}

fn bundle(profile: Value, script: &str) -> Bundle {
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.readonly(false).set("/linux/seccomp", profile);
    b
}

#[test]
fn errno_action_defaults_to_eperm() {
    let rt = Rt::skiff();
    let b = bundle(
        deny_mkdir("SCMP_ACT_ERRNO", None),
        "grep '^Seccomp:' /proc/self/status; mkdir /tmp/x; touch /tmp/y && echo touched",
    );
    let out = rt.run(&b, &unique_name());
    assert_eq!(out.stdout, "Seccomp:\t2\ntouched\n", "{out:#?}");
    assert!(
        out.stderr
            .contains("can't create directory '/tmp/x': Operation not permitted"),
        "{out:#?}"
    );
    assert!(!b.rootfs().join("tmp/x").exists());
    assert!(
        b.rootfs().join("tmp/y").exists(),
        "an allowed syscall was blocked"
    );
}

#[test]
fn errno_ret_is_returned() {
    let rt = Rt::skiff();
    let b = bundle(deny_mkdir("SCMP_ACT_ERRNO", Some(38)), "mkdir /tmp/x");
    let out = rt.run(&b, &unique_name());
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("Function not implemented"),
        "ENOSYS (38) expected: {out:#?}"
    );
}

#[test]
fn kill_action_kills_with_sigsys() {
    let rt = Rt::skiff();
    let b = bundle(
        deny_mkdir("SCMP_ACT_KILL", None),
        "mkdir /tmp/x; echo status=$?",
    );
    let out = rt.run(&b, &unique_name()).ok();
    assert_eq!(
        out.stdout, "status=159\n",
        "mkdir should die of SIGSYS (128 + 31): {out:#?}"
    );
}

#[test]
fn profile_applies_without_no_new_privileges() {
    // Without no_new_privs the filter must go in while the init still has CAP_SYS_ADMIN.
    let rt = Rt::skiff();
    let mut b = bundle(
        deny_mkdir("SCMP_ACT_ERRNO", None),
        "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; mkdir /tmp/x",
    );
    b.set("/process/noNewPrivileges", json!(false));
    let out = rt.run(&b, &unique_name());
    assert_eq!(out.stdout, "NoNewPrivs:\t0\nSeccomp:\t2\n", "{out:#?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:#?}");
}

#[test]
fn profile_applies_to_exec() {
    let rt = Rt::skiff();
    let b = bundle(deny_mkdir("SCMP_ACT_ERRNO", None), "sleep 60");
    let id = unique_name();
    rt.start_detached(&b, &id);
    rt.cmd(&["exec", &id, "mkdir", "/tmp/x"])
        .fails_with(1, &["Operation not permitted"]);
    rt.cmd(&["exec", &id, "touch", "/tmp/y"]).ok();
    rt.cmd(&["delete", "--force", &id]).ok();
}
