#![allow(clippy::unwrap_used)]

use super::*;
use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext, Sysctl};

fn caps(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn profile_of(t: &str, local: Option<&str>) -> SeccompProfile {
    SeccompProfile {
        type_: t.into(),
        localhost_profile: local.map(String::from),
    }
}

#[test]
fn the_containers_seccomp_profile_wins_over_the_pods_and_unconfined_is_the_default() {
    let mut spec = PodSpec::default();
    let mut c = Container::default();
    assert_eq!(container_security(&spec, &c).seccomp, Seccomp::Unconfined);
    spec.security_context = Some(PodSecurityContext {
        seccomp_profile: Some(profile_of("RuntimeDefault", None)),
        ..Default::default()
    });
    assert_eq!(
        container_security(&spec, &c).seccomp,
        Seccomp::RuntimeDefault
    );
    c.security_context = Some(SecurityContext {
        seccomp_profile: Some(profile_of("Localhost", Some("profiles/a.json"))),
        proc_mount: Some("Unmasked".into()),
        ..Default::default()
    });
    let sec = container_security(&spec, &c);
    assert_eq!(sec.seccomp, Seccomp::Localhost("profiles/a.json".into()));
    assert!(sec.unmasked_proc);
    c.security_context = Some(SecurityContext {
        seccomp_profile: Some(profile_of("Localhost", None)),
        ..Default::default()
    });
    assert!(matches!(
        container_security(&spec, &c).seccomp,
        Seccomp::Invalid(_)
    ));
    // hostPID wins over shareProcessNamespace.
    spec.share_process_namespace = Some(true);
    assert!(container_security(&spec, &c).share_pid);
    spec.host_pid = Some(true);
    let sec = container_security(&spec, &c);
    assert!(sec.host_pid && !sec.share_pid);
}

fn names_denied(p: &LinuxSeccomp) -> Vec<String> {
    p.syscalls()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter(|s| s.args().is_none())
        .flat_map(|s| s.names().clone())
        .collect()
}

#[test]
fn runtime_default_denies_dangerous_syscalls_unless_a_capability_allows_them() {
    let default_caps = caps(&["CAP_CHOWN", "CAP_NET_RAW", "CAP_SETUID"]);
    let p = runtime_default(&default_caps);
    assert_eq!(
        p.default_action(),
        oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
    );
    let denied = names_denied(&p);
    for s in [
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "open_by_handle_at",
        "bpf",
        "perf_event_open",
        "mount",
        "unshare",
        "keyctl",
        "add_key",
        "request_key",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "settimeofday",
        "clock_settime",
        "iopl",
        "ioperm",
    ] {
        assert!(denied.iter().any(|d| d == s), "{s} is not denied");
    }
    assert!(!denied.iter().any(|d| d == "ptrace" || d == "read"));
    // clone with namespace flags, clone3 with ENOSYS.
    let calls = p.syscalls().clone().unwrap();
    let clone = calls.iter().find(|s| s.names() == &["clone"]).unwrap();
    assert_eq!(clone.args().as_ref().unwrap().len(), 7);
    let clone3 = calls.iter().find(|s| s.names() == &["clone3"]).unwrap();
    assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));
    // The runtime compiles it.
    skiff_runtime::seccomp::compile(&p).unwrap();

    // CAP_SYS_ADMIN lifts mount, unshare, the clone rule; CAP_SYS_TIME the clock.
    let p = runtime_default(&caps(&["CAP_SYS_ADMIN", "CAP_SYS_TIME"]));
    let denied = names_denied(&p);
    assert!(!denied
        .iter()
        .any(|d| d == "mount" || d == "unshare" || d == "bpf"));
    assert!(!denied.iter().any(|d| d == "settimeofday"));
    assert!(denied.iter().any(|d| d == "kexec_load" || d == "keyctl"));
    assert!(!p
        .syscalls()
        .clone()
        .unwrap()
        .iter()
        .any(|s| s.names() == &["clone"]));
}

#[test]
fn docker_profiles_resolve_arch_map_includes_and_excludes() {
    let v = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "always"},
            {"name": "exit", "action": "SCMP_ACT_ALLOW"},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
            {"names": ["newer"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "7.1"}}
        ]
    });
    let names = |v: &Value| -> Vec<String> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    let r = resolve_docker(v.clone(), &caps(&["CAP_CHOWN"]), "amd64", (6, 1)).unwrap();
    assert_eq!(
        r["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    assert_eq!(
        names(&r),
        ["read", "write", "exit", "ptrace", "clone", "arch_prctl"]
    );
    assert!(r["syscalls"][0].get("comment").is_none());
    let r = resolve_docker(v, &caps(&["CAP_SYS_ADMIN"]), "arm64", (4, 4)).unwrap();
    assert_eq!(
        r["architectures"],
        json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
    );
    assert_eq!(names(&r), ["read", "write", "exit", "mount"]);
    // An OCI profile passes through.
    let oci = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO"}]});
    assert_eq!(
        resolve_docker(oci.clone(), &caps(&[]), "amd64", (6, 1)).unwrap(),
        oci
    );
    assert!(resolve_docker(json!([1]), &caps(&[]), "amd64", (6, 1)).is_err());
}

#[test]
fn localhost_profiles_load_from_the_seccomp_directory_or_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("profiles")).unwrap();
    std::fs::write(
        root.join("profiles/deny-chmod.json"),
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    std::fs::write(
        root.join("profiles/bad.json"),
        r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
    )
    .unwrap();
    std::fs::write(
        root.join("profiles/bad-op.json"),
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
    )
    .unwrap();
    let none = caps(&[]);
    let p = profile(
        &Seccomp::Localhost("profiles/deny-chmod.json".into()),
        &none,
        root,
    )
    .unwrap()
    .unwrap();
    assert_eq!(p.syscalls().as_ref().unwrap().len(), 1);
    let err = localhost(root, "profiles/missing.json", &none).unwrap_err();
    assert!(
        err.contains("cannot load seccomp profile") && err.contains("missing.json"),
        "{err}"
    );
    let err = localhost(root, "profiles/bad.json", &none).unwrap_err();
    assert!(err.contains("invalid profile"), "{err}");
    let err = localhost(root, "profiles/bad-op.json", &none).unwrap_err();
    assert!(err.contains("invalid profile"), "{err}");
    let err = localhost(root, "../etc/passwd", &none).unwrap_err();
    assert!(err.contains("relative path"), "{err}");
    assert!(localhost(root, "/etc/passwd", &none).is_err());
    assert_eq!(profile(&Seccomp::Unconfined, &none, root).unwrap(), None);
    assert!(profile(&Seccomp::Invalid("why".into()), &none, root).is_err());
}

#[test]
fn sysctls_are_classified_normalized_and_matched() {
    assert_eq!(namespace_of("net.core.somaxconn"), Some(SysctlNs::Net));
    assert_eq!(namespace_of("kernel.shm_rmid_forced"), Some(SysctlNs::Ipc));
    assert_eq!(namespace_of("kernel.msgmax"), Some(SysctlNs::Ipc));
    assert_eq!(namespace_of("kernel.sem"), Some(SysctlNs::Ipc));
    assert_eq!(namespace_of("fs.mqueue.msg_max"), Some(SysctlNs::Ipc));
    assert_eq!(namespace_of("kernel.msg*"), Some(SysctlNs::Ipc));
    assert_eq!(namespace_of("kernel.panic"), None);
    assert_eq!(namespace_of("vm.swappiness"), None);
    assert_eq!(namespace_of("kernel.semx"), None);
    assert_eq!(
        normalize("net/ipv4/conf/eth0.100/rp_filter"),
        "net.ipv4.conf.eth0/100.rp_filter"
    );
    assert_eq!(
        normalize("net.ipv4.tcp_syncookies"),
        "net.ipv4.tcp_syncookies"
    );
    assert_eq!(
        sysctl_path("net.ipv4.conf.eth0/100.rp_filter"),
        "net/ipv4/conf/eth0.100/rp_filter"
    );
    assert!(pattern_matches("net.core.*", "net.core.somaxconn"));
    assert!(pattern_matches("kernel.msg*", "kernel.msgmax"));
    assert!(!pattern_matches("net.core.*", "net.ipv4.tcp_syncookies"));
    assert!(pattern_matches("kernel.sem", "kernel.sem"));
    assert!(!pattern_matches("kernel.sem", "kernel.semx"));
    assert!(validate_patterns(&["net.core.*".into(), "kernel.msgmax".into()]).is_ok());
    assert!(validate_patterns(&["kernel.panic".into()]).is_err());
    assert!(validate_patterns(&["vm.*".into()]).is_err());
    assert!(validate_patterns(&["net.*.foo".into()]).is_err());
}

fn pod_with(sysctls: &[(&str, &str)], host_net: bool, host_ipc: bool) -> PodSpec {
    PodSpec {
        host_network: Some(host_net),
        host_ipc: Some(host_ipc),
        security_context: Some(PodSecurityContext {
            sysctls: Some(
                sysctls
                    .iter()
                    .map(|(n, v)| Sysctl {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn sysctl_admission_allows_the_safe_set_and_allowed_unsafe_ones_as_the_kubelet() {
    let safe = pod_with(
        &[
            ("net.ipv4.ip_local_port_range", "1024 65000"),
            ("kernel.shm_rmid_forced", "1"),
        ],
        false,
        false,
    );
    assert_eq!(
        check_sysctls(&safe, &[]).unwrap(),
        vec![
            (
                "net.ipv4.ip_local_port_range".to_string(),
                "1024 65000".to_string()
            ),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string())
        ]
    );
    let unsafe_ = pod_with(&[("net.core.somaxconn", "1024")], false, false);
    assert_eq!(
        check_sysctls(&unsafe_, &[]).unwrap_err(),
        r#"forbidden sysctl: "net.core.somaxconn" not allowlisted"#
    );
    assert!(check_sysctls(&unsafe_, &["net.core.*".into()]).is_ok());
    // Not namespaced: never allowed, whatever the patterns.
    let host = pod_with(&[("kernel.panic", "10")], false, false);
    assert!(check_sysctls(&host, &["kernel.*".into()]).is_err());
    // A slash-separated name is normalized.
    let slashed = pod_with(&[("net/ipv4/tcp_syncookies", "1")], false, false);
    assert_eq!(
        check_sysctls(&slashed, &[]).unwrap()[0].0,
        "net.ipv4.tcp_syncookies"
    );
    // Host namespaces.
    let hostnet = pod_with(&[("net.ipv4.tcp_syncookies", "1")], true, false);
    assert_eq!(
        check_sysctls(&hostnet, &[]).unwrap_err(),
        r#"forbidden sysctl: "net.ipv4.tcp_syncookies" not allowed with host net enabled"#
    );
    let hostipc = pod_with(&[("kernel.shm_rmid_forced", "1")], false, true);
    assert!(check_sysctls(&hostipc, &[])
        .unwrap_err()
        .contains("host ipc enabled"));
    // Path tricks never pass.
    let bad = pod_with(&[("net.core..x", "1")], false, false);
    assert!(check_sysctls(&bad, &["net.*".into()]).is_err());
}

#[test]
fn sysctls_are_written_into_the_sandbox_namespaces() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("ns");
    let p = skiff_container::netns::pin_sandbox(&ns, "sysctl-test").unwrap();
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let r = apply_sysctls(
        &p,
        &[
            ("net.ipv4.ip_local_port_range".into(), "2000 3000".into()),
            ("kernel.shm_rmid_forced".into(), "1".into()),
        ],
    );
    let read = |flag: CloneFlags, file: std::path::PathBuf, what: &'static str| {
        let f = std::fs::File::open(file).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&f, flag).unwrap();
            std::fs::read_to_string(format!("/proc/sys/{what}")).unwrap()
        })
        .join()
        .unwrap()
    };
    let inside = read(
        CloneFlags::CLONE_NEWNET,
        p.net.clone(),
        "net/ipv4/ip_local_port_range",
    );
    let shm = read(
        CloneFlags::CLONE_NEWIPC,
        p.ipc.clone(),
        "kernel/shm_rmid_forced",
    );
    let bad = apply_sysctls(&p, &[("net.ipv4.no_such_thing".into(), "1".into())]);
    skiff_container::netns::unpin(&ns);
    r.unwrap();
    assert_eq!(
        inside.split_whitespace().collect::<Vec<_>>(),
        ["2000", "3000"]
    );
    assert_eq!(shm.trim(), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap(),
        host_range
    );
    assert!(bad.unwrap_err().contains("net.ipv4.no_such_thing"));
}
