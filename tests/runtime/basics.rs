//! What a process sees in a container made from the `runc spec` default config.

use std::process::Command;

use serde_json::json;

use crate::common::{run_with_timeout, unique_name, Bundle, Rt, CMD_TIMEOUT};

#[test]
fn runc_spec_bundle_runs_unmodified() {
    // Only what a test must change: the program, and no terminal (there is none here).
    let mut b = Bundle::new(&["true"]);
    b.auto_cgroups_path = false;
    let rt = Rt::skiff();
    let id = unique_name();
    let out = rt.run(&b, &id).ok();
    assert_eq!(out.stdout, "");
    assert!(
        !rt.state_dir(&id).exists(),
        "run without --keep left its state dir"
    );
}

#[test]
fn detached_terminal_without_console_socket_is_refused() {
    // `runc spec` sets process.terminal true.
    let mut b = Bundle::runc_spec();
    b.auto_cgroups_path = false;
    assert_eq!(b.get("/process/terminal"), &json!(true));
    let rt = Rt::skiff();
    let id = unique_name();
    rt.lifecycle(&["run", "-d"], &b, &id)
        .fails_with(1, &["console-socket"]);
    assert!(!rt.state_dir(&id).exists(), "refused run left a state dir");
    rt.create(&b, &id).fails_with(1, &["console-socket"]);
    assert!(
        !rt.state_dir(&id).exists(),
        "refused create left a state dir"
    );
}

#[test]
fn pid_namespace_shows_only_the_containers_processes() {
    // The glob loop runs inside the shell, so pid 1 is the only process while it runs.
    // (`ps` is not the last command: ash would exec it in place of itself.)
    let b = Bundle::new(&["sh", "-c", "echo $$; for p in /proc/[0-9]*; do echo ${p#/proc/}; done; echo ---; ps -o pid,comm; echo ---"]);
    let rt = Rt::skiff();
    let out = rt.run(&b, &unique_name()).ok();
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out:#?}");
    assert_eq!(parts[0], "1\n1\n", "$$ and /proc: {out:#?}");
    let rows: Vec<Vec<&str>> = parts[1]
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "ps should list only sh (pid 1) and itself: {out:#?}"
    );
    assert_eq!(rows[0], ["1", "sh"], "{out:#?}");
    assert_eq!(rows[1][1], "ps", "{out:#?}");
}

#[test]
fn hostname_and_env_come_from_the_config() {
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "hostname; cat /proc/sys/kernel/hostname; echo \"$GREETING\"; echo $TERM",
    ]);
    b.set("/hostname", json!("skiff-box"))
        .env("GREETING=hello  world");
    let rt = Rt::skiff();
    let out = rt.run(&b, &unique_name()).ok();
    // TERM=xterm is in the runc default env.
    assert_eq!(out.stdout, "skiff-box\nskiff-box\nhello  world\nxterm\n");
    let host_after = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    assert_eq!(host_before, host_after, "the host's hostname changed");
}

#[test]
fn exit_status_is_propagated() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sh", "-c", "exit 3"]);
    assert_eq!(rt.run(&b, &unique_name()).code, 3);
    // Without a pid namespace of its own the shell can kill itself (in one, as pid 1, the
    // kernel would ignore its own SIGKILL, in runc as well).
    let mut b = Bundle::new(&["sh", "-c", "kill -9 $$"]);
    b.remove_namespace("pid");
    assert_eq!(
        rt.run(&b, &unique_name()).code,
        137,
        "killed by SIGKILL is 128 + 9"
    );
    let b = Bundle::new(&["false"]);
    assert_eq!(rt.run(&b, &unique_name()).code, 1);
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["touch", "/x"]);
    assert_eq!(b.get("/root/readonly"), &json!(true), "runc default");
    let out = rt.run(&b, &unique_name());
    assert_ne!(
        out.code, 0,
        "touch on a read-only rootfs succeeded: {out:#?}"
    );
    assert!(out.stderr.contains("Read-only file system"), "{out:#?}");
    assert!(!b.rootfs().join("x").exists());

    b.readonly(false);
    rt.run(&b, &unique_name()).ok();
    assert!(
        b.rootfs().join("x").exists(),
        "the file written in the container is not in the rootfs"
    );
}

/// CapEff/CapBnd/CapPrm of `/proc/self/status` for the runc default set (AUDIT_WRITE 29,
/// KILL 5, NET_BIND_SERVICE 10).
const DEFAULT_CAPS: u64 = (1 << 29) | (1 << 5) | (1 << 10);
const CAP_SYS_ADMIN: u64 = 1 << 21;

fn cap_lines(mask: u64) -> String {
    format!("CapPrm:\t{mask:016x}\nCapEff:\t{mask:016x}\nCapBnd:\t{mask:016x}\n")
}

#[test]
fn default_capabilities_are_runcs() {
    let rt = Rt::skiff();
    let b = Bundle::new(&[
        "sh",
        "-c",
        "grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; hostname foo",
    ]);
    let out = rt.run(&b, &unique_name());
    assert_eq!(out.stdout, cap_lines(DEFAULT_CAPS), "{out:#?}");
    assert_ne!(
        out.code, 0,
        "sethostname without CAP_SYS_ADMIN succeeded: {out:#?}"
    );
    assert!(out.stderr.contains("Operation not permitted"), "{out:#?}");
}

#[test]
fn added_capability_is_granted() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; hostname foo && hostname",
    ]);
    b.add_cap("CAP_SYS_ADMIN");
    let out = rt.run(&b, &unique_name()).ok();
    assert_eq!(
        out.stdout,
        cap_lines(DEFAULT_CAPS | CAP_SYS_ADMIN) + "foo\n",
        "{out:#?}"
    );
}

#[test]
fn process_user_and_additional_gids() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "id; grep -E '^(Uid|Gid|Groups):' /proc/self/status",
    ]);
    b.set(
        "/process/user",
        json!({"uid": 1000, "gid": 1000, "additionalGids": [2000]}),
    );
    let out = rt.run(&b, &unique_name()).ok();
    let mut lines = out.stdout.lines();
    let id = lines.next().unwrap_or_default();
    assert!(id.starts_with("uid=1000 gid=1000 "), "{out:#?}");
    let groups = id.split_once("groups=").map(|(_, g)| g).unwrap_or_default();
    assert!(groups.split(',').any(|g| g.starts_with("2000")), "{out:#?}");
    let status: Vec<&str> = lines.collect();
    assert_eq!(
        status[0].split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "1000", "1000", "1000", "1000"]
    );
    assert_eq!(
        status[1].split_whitespace().collect::<Vec<_>>(),
        ["Gid:", "1000", "1000", "1000", "1000"]
    );
    assert_eq!(
        status[2].split_whitespace().collect::<Vec<_>>(),
        ["Groups:", "2000"],
        "{out:#?}"
    );
}

/// Descriptors the runtime inherited (here 7 and 8, opened without close-on-exec by the
/// shell that starts it) must not reach the container, as runc guarantees: an inherited
/// directory descriptor would let the container escape its rootfs.
#[test]
fn inherited_descriptors_do_not_leak_into_the_container() {
    for rt in [Rt::runc(), Rt::skiff()] {
        let b = Bundle::new(&["ls", "/proc/self/fd"]);
        let id = unique_name();
        let cg = b.save_for(&id);
        rt.track(&id, &b, cg);
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("exec 7</ 8>/dev/null; exec \"$@\"")
            .arg("sh");
        let inner = rt.command(&[
            "run".as_ref(),
            "--bundle".as_ref(),
            b.path().as_os_str(),
            id.as_ref(),
        ]);
        c.arg(inner.get_program()).args(inner.get_args());
        let out = run_with_timeout(c, CMD_TIMEOUT).ok();
        // 3 is the directory ls itself opened.
        assert_eq!(
            out.stdout, "0\n1\n2\n3\n",
            "{:?}: descriptors in the container: {out:#?}",
            rt.kind
        );
    }
}

/// Signals the caller ignores (a `nohup`, a supervisor) must not stay ignored in the
/// container: runc resets every disposition; an inherited SIG_IGN of TERM would make a
/// container's processes deaf to `kill`.
#[test]
fn signals_ignored_by_the_caller_are_reset() {
    for rt in [Rt::runc(), Rt::skiff()] {
        let b = Bundle::new(&["grep", "SigIgn", "/proc/self/status"]);
        let id = unique_name();
        let cg = b.save_for(&id);
        rt.track(&id, &b, cg);
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("trap '' HUP INT USR1 TERM; exec \"$@\"")
            .arg("sh");
        let inner = rt.command(&[
            "run".as_ref(),
            "--bundle".as_ref(),
            b.path().as_os_str(),
            id.as_ref(),
        ]);
        c.arg(inner.get_program()).args(inner.get_args());
        let out = run_with_timeout(c, CMD_TIMEOUT).ok();
        let mask = u64::from_str_radix(out.stdout.trim().trim_start_matches("SigIgn:").trim(), 16)
            .expect("hex mask");
        // Bits n-1 for signals HUP 1, INT 2, USR1 10, TERM 15.
        let leaked = mask & ((1 << 0) | (1 << 1) | (1 << 9) | (1 << 14));
        assert_eq!(
            leaked, 0,
            "{:?}: container ignores signals its caller ignored: {out:#?}",
            rt.kind
        );
    }
}

#[test]
fn a_link_named_skiff_runtime_speaks_runcs_command_line() {
    // Tools that take a runtime binary (containerd's BinaryName, podman's --runtime) call
    // it with runc's arguments, no `runtime` subcommand in front.
    let b = Bundle::new(&["sh", "-c", "echo via-link"]);
    let id = unique_name();
    b.save_for(&id);
    let links = tempfile::tempdir().expect("tempdir");
    let link = links.path().join("skiff-runtime");
    std::os::unix::fs::symlink(crate::common::skiff_bin(), &link).expect("symlink");
    let root = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new(&link);
    c.arg("--root")
        .arg(root.path())
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&id);
    let out = run_with_timeout(c, CMD_TIMEOUT).ok();
    assert_eq!(out.stdout.trim(), "via-link");
    assert!(!root.path().join(&id).exists(), "state left behind");
}
