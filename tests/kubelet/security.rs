//! Pod security: seccomp profiles (RuntimeDefault, Unconfined, Localhost, privileged),
//! sysctls (safe, allowed unsafe, forbidden), procMount and masked paths,
//! shareProcessNamespace, and hostNetwork / hostPID / hostIPC — each checked inside the
//! containers, and bad input with Kubernetes' reasons.

use crate::node::{assert_clean, wait, Node};

const OCI_DENY_CHMOD: &str = r#"{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["chmod", "fchmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}]}"#;

/// Docker's format: an entry only for containers with CAP_SYS_ADMIN (these have none).
const DOCKER_DENY_MKDIR: &str = r#"{"defaultAction": "SCMP_ACT_ALLOW",
 "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
             {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []}],
 "syscalls": [
   {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "comment": "no dirs"},
   {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}}
 ]}"#;

fn seccomp_mode(n: &Node, pod: &str, c: &str) -> String {
    let o = n
        .k(&[
            "exec",
            pod,
            "-c",
            c,
            "--",
            "grep",
            "Seccomp:",
            "/proc/self/status",
        ])
        .ok();
    o.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn ns_link(n: &Node, pod: &str, c: &str, ns: &str) -> String {
    n.k(&[
        "exec",
        pod,
        "-c",
        c,
        "--",
        "readlink",
        &format!("/proc/self/ns/{ns}"),
    ])
    .ok()
    .stdout
    .trim()
    .to_string()
}

fn host_ns(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn seccomp_sysctls_proc_mount_and_namespaces() {
    let (dir, cgroups, left_pause);
    {
        let n = Node::start_with(&["--allowed-unsafe-sysctls", "net.core.*,kernel.msgmax"]);
        dir = n.data().to_path_buf();
        cgroups = n.cgroup_dirs(n.server.agent_cgroup().unwrap());
        let profiles = n.data().join("agent/seccomp/profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(profiles.join("deny-chmod.json"), OCI_DENY_CHMOD).unwrap();
        std::fs::write(profiles.join("docker-deny-mkdir.json"), DOCKER_DENY_MKDIR).unwrap();
        std::fs::write(
            profiles.join("broken.json"),
            r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
        )
        .unwrap();
        let img = &n.image;
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: sec}}
spec:
  securityContext:
    seccompProfile: {{type: RuntimeDefault}}
    sysctls:
    - {{name: net.ipv4.ip_local_port_range, value: "2000 3000"}}
    - {{name: kernel.shm_rmid_forced, value: "1"}}
    - {{name: net.core.somaxconn, value: "1234"}}
    - {{name: kernel.msgmax, value: "9000"}}
  containers:
  - name: rd
    image: {img}
    command: ["sleep", "3600"]
  - name: unconfined
    image: {img}
    command: ["sleep", "3601"]
    securityContext:
      seccompProfile: {{type: Unconfined}}
      procMount: Unmasked
  - name: local
    image: {img}
    command: ["sleep", "3602"]
    securityContext:
      seccompProfile: {{type: Localhost, localhostProfile: profiles/deny-chmod.json}}
  - name: docker
    image: {img}
    command: ["sleep", "3603"]
    securityContext:
      seccompProfile: {{type: Localhost, localhostProfile: profiles/docker-deny-mkdir.json}}
  - name: priv
    image: {img}
    command: ["sleep", "3604"]
    securityContext: {{privileged: true}}
---
apiVersion: v1
kind: Pod
metadata: {{name: shared}}
spec:
  shareProcessNamespace: true
  containers:
  - name: a
    image: {img}
    command: ["sleep", "3700"]
  - name: b
    image: {img}
    command: ["sleep", "3701"]
---
apiVersion: v1
kind: Pod
metadata: {{name: shared2}}
spec:
  shareProcessNamespace: true
  containers:
  - name: a
    image: {img}
    command: ["sleep", "3702"]
---
apiVersion: v1
kind: Pod
metadata: {{name: hostns}}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers:
  - name: h
    image: {img}
    command: ["sleep", "3800"]
---
apiVersion: v1
kind: Pod
metadata: {{name: badprofile}}
spec:
  containers:
  - name: missing
    image: {img}
    command: ["sleep", "3600"]
    securityContext:
      seccompProfile: {{type: Localhost, localhostProfile: profiles/nope.json}}
  - name: broken
    image: {img}
    command: ["sleep", "3600"]
    securityContext:
      seccompProfile: {{type: Localhost, localhostProfile: profiles/broken.json}}
---
apiVersion: v1
kind: Pod
metadata: {{name: forbidden}}
spec:
  securityContext:
    sysctls: [{{name: kernel.msgmni, value: "100"}}]
  containers:
  - name: c
    image: {img}
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: hostnet-sysctl}}
spec:
  hostNetwork: true
  securityContext:
    sysctls: [{{name: net.ipv4.tcp_syncookies, value: "1"}}]
  containers:
  - name: c
    image: {img}
    command: ["sleep", "3600"]
"#
        ));
        for p in ["sec", "shared", "shared2", "hostns"] {
            let o = n.k(&[
                "wait",
                "--for=condition=Ready",
                &format!("pod/{p}"),
                "--timeout=50s",
            ]);
            if o.code != 0 {
                let status = n.jp(p, "{.status}");
                let events = n.k(&["get", "events"]).stdout;
                panic!("pod {p} not Ready: {status}\n{events}");
            }
        }

        // seccomp: the pod's RuntimeDefault, the container's Unconfined and Localhost
        // profiles (OCI and Docker format), none for a privileged container.
        assert_eq!(seccomp_mode(&n, "sec", "rd"), "2");
        assert_eq!(seccomp_mode(&n, "sec", "unconfined"), "0");
        assert_eq!(seccomp_mode(&n, "sec", "local"), "2");
        assert_eq!(seccomp_mode(&n, "sec", "docker"), "2");
        assert_eq!(seccomp_mode(&n, "sec", "priv"), "0");
        // RuntimeDefault refuses a user namespace (unshare) that Unconfined allows.
        let o = n.k(&["exec", "sec", "-c", "rd", "--", "unshare", "-U", "true"]);
        assert_ne!(o.code, 0, "{o:?}");
        assert!(o.stderr.contains("Operation not permitted"), "{o:?}");
        n.k(&[
            "exec",
            "sec",
            "-c",
            "unconfined",
            "--",
            "unshare",
            "-U",
            "true",
        ])
        .ok();
        // The Localhost profiles refuse what they say, and only that.
        let o = n.k(&[
            "exec",
            "sec",
            "-c",
            "local",
            "--",
            "sh",
            "-c",
            "touch /f && chmod 600 /f",
        ]);
        assert_ne!(o.code, 0, "{o:?}");
        assert!(o.stderr.contains("Operation not permitted"), "{o:?}");
        n.k(&["exec", "sec", "-c", "local", "--", "mkdir", "/d"])
            .ok();
        let o = n.k(&["exec", "sec", "-c", "docker", "--", "mkdir", "/d"]);
        assert!(o.stderr.contains("Operation not permitted"), "{o:?}");
        n.k(&[
            "exec",
            "sec",
            "-c",
            "docker",
            "--",
            "sh",
            "-c",
            "touch /f && chmod 600 /f",
        ])
        .ok();

        // sysctls: in the pod's namespaces (every container sees them), not the host's.
        let range = n
            .k(&[
                "exec",
                "sec",
                "-c",
                "rd",
                "--",
                "cat",
                "/proc/sys/net/ipv4/ip_local_port_range",
            ])
            .ok()
            .stdout;
        assert_eq!(
            range.split_whitespace().collect::<Vec<_>>(),
            ["2000", "3000"]
        );
        for (c, file, want) in [
            ("unconfined", "net/core/somaxconn", "1234"),
            ("local", "kernel/shm_rmid_forced", "1"),
            ("priv", "kernel/msgmax", "9000"),
        ] {
            let got = n
                .k(&[
                    "exec",
                    "sec",
                    "-c",
                    c,
                    "--",
                    "cat",
                    &format!("/proc/sys/{file}"),
                ])
                .ok()
                .stdout;
            assert_eq!(got.trim(), want, "{file} in {c}");
        }
        let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        assert_ne!(
            host.split_whitespace().collect::<Vec<_>>(),
            ["2000", "3000"]
        );

        // procMount: Default masks /proc/keys and /proc/timer_list (this kernel has no
        // /proc/kcore) and makes /proc/sys read-only; Unmasked and privileged
        // containers have neither.
        let masked = |c: &str| {
            n.k(&[
                "exec",
                "sec",
                "-c",
                c,
                "--",
                "grep",
                "-c",
                " /proc/keys ",
                "/proc/self/mountinfo",
            ])
            .stdout
            .trim()
            .to_string()
        };
        assert_eq!(masked("rd"), "1");
        assert_eq!(masked("unconfined"), "0");
        assert_eq!(masked("priv"), "0");
        let timer_list = |c: &str| {
            let o = n
                .k(&["exec", "sec", "-c", c, "--", "wc", "-c", "/proc/timer_list"])
                .ok();
            o.stdout
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(timer_list("rd"), 0);
        assert!(timer_list("unconfined") > 0);
        let o = n.k(&[
            "exec",
            "sec",
            "-c",
            "rd",
            "--",
            "grep",
            " /proc/sys ",
            "/proc/self/mountinfo",
        ]);
        assert!(
            o.stdout.contains(" ro,") || o.stdout.contains(" ro "),
            "{o:?}"
        );

        // shareProcessNamespace: each container sees the other's processes; PID 1 is
        // the pod's namespace init. Containers of other pods see only their own.
        let ps = n.k(&["exec", "shared", "-c", "a", "--", "ps"]).ok().stdout;
        assert!(
            ps.contains("sleep 3701") && ps.contains("sleep 3700"),
            "{ps}"
        );
        let ps = n.k(&["exec", "shared", "-c", "b", "--", "ps"]).ok().stdout;
        assert!(ps.contains("sleep 3700") && ps.contains("pause"), "{ps}");
        let ps = n.k(&["exec", "sec", "-c", "rd", "--", "ps"]).ok().stdout;
        assert!(
            ps.contains("sleep 3600") && !ps.contains("sleep 3601"),
            "{ps}"
        );
        assert_eq!(
            ns_link(&n, "shared", "a", "pid"),
            ns_link(&n, "shared", "b", "pid")
        );
        // The namespace's init is accounted to the pod: a leaf of the pod's cgroup.
        let uid = n.jp("shared", "{.metadata.uid}");
        let qos = n.jp("shared", "{.status.qosClass}").to_lowercase();
        let parent = n.server.agent_cgroup().unwrap().trim_start_matches('/');
        let procs = crate::node::memory_cgroup(&format!("{parent}/{qos}/pod{uid}/pidns-init"))
            .join("cgroup.procs");
        let init = std::fs::read_to_string(&procs).unwrap_or_default();
        assert_eq!(init.lines().count(), 1, "{}: {init:?}", procs.display());
        // A container kills the other's process; that one restarts in the same namespace
        // (its init is the pod's, not the first container's) and the first runs on.
        n.k(&[
            "exec",
            "shared",
            "-c",
            "a",
            "--",
            "sh",
            "-c",
            r#"for p in /proc/[0-9]*; do [ "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" = "sleep 3701 " ] && kill ${p#/proc/}; done; true"#,
        ])
        .ok();
        wait("b restarted", 60, || {
            let counts = n.jp("shared", "{.status.containerStatuses[*].restartCount}");
            let ready = n.jp("shared", "{.status.containerStatuses[*].ready}");
            (counts == "0 1" && ready == "true true").then_some(())
        });
        let ps = n.k(&["exec", "shared", "-c", "a", "--", "ps"]).ok().stdout;
        assert!(ps.contains("sleep 3701"), "{ps}");
        assert_eq!(
            ns_link(&n, "shared", "a", "pid"),
            ns_link(&n, "shared", "b", "pid")
        );
        assert_ne!(
            ns_link(&n, "sec", "rd", "pid"),
            ns_link(&n, "sec", "local", "pid")
        );
        let pause_of = |pod: &str| -> i32 {
            let uid = n.jp(pod, "{.metadata.uid}");
            std::fs::read_to_string(n.data().join(format!("agent/pods/{uid}/ns/pause.pid")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        left_pause = pause_of("shared2");
        let shared_uid = n.jp("shared", "{.metadata.uid}");
        let pause_pid = pause_of("shared");
        assert!(!gone(pause_pid) && !gone(left_pause));

        // hostNetwork, hostPID, hostIPC: the host's namespaces; the pod IP is the node's.
        for ns in ["net", "pid", "ipc", "uts"] {
            assert_eq!(ns_link(&n, "hostns", "h", ns), host_ns(ns), "{ns}");
        }
        assert_ne!(ns_link(&n, "sec", "rd", "net"), host_ns("net"));
        assert_ne!(ns_link(&n, "sec", "rd", "ipc"), host_ns("ipc"));
        assert_eq!(
            n.jp("hostns", "{.status.podIP}"),
            n.jp("hostns", "{.status.hostIP}")
        );
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let o = n
            .k(&[
                "exec",
                "hostns",
                "--",
                "sh",
                "-c",
                "hostname; echo $HOSTNAME; cat /etc/hostname",
            ])
            .ok();
        assert_eq!(o.stdout, host_name.repeat(3), "{o:?}");
        let hosts = n
            .k(&["exec", "hostns", "--", "cat", "/etc/hosts"])
            .ok()
            .stdout;
        assert!(
            hosts.starts_with("# Kubernetes-managed hosts file (host network)."),
            "{hosts}"
        );

        // Bad input: a missing or invalid Localhost profile, a forbidden sysctl.
        wait("the bad profiles refused", 60, || {
            let reasons = n.jp(
                "badprofile",
                "{.status.containerStatuses[*].state.waiting.reason}",
            );
            (reasons == "CreateContainerConfigError CreateContainerConfigError").then_some(())
        });
        let msgs = n.jp(
            "badprofile",
            "{.status.containerStatuses[*].state.waiting.message}",
        );
        assert!(
            msgs.contains("cannot load seccomp profile")
                && msgs.contains("profiles/nope.json")
                && msgs.contains("No such file")
                && msgs.contains("profiles/broken.json")
                && msgs.contains("invalid profile"),
            "{msgs}"
        );
        for (pod, why) in [
            (
                "forbidden",
                r#"forbidden sysctl: "kernel.msgmni" not allowlisted"#,
            ),
            (
                "hostnet-sysctl",
                r#"forbidden sysctl: "net.ipv4.tcp_syncookies" not allowed with host net enabled"#,
            ),
        ] {
            wait("the pod rejected", 60, || {
                (n.jp(pod, "{.status.phase}") == "Failed").then_some(())
            });
            assert_eq!(n.jp(pod, "{.status.reason}"), "SysctlForbidden");
            assert_eq!(
                n.jp(pod, "{.status.message}"),
                format!("Pod was rejected: {why}")
            );
            let events = n
                .k(&[
                    "get",
                    "events",
                    "--field-selector",
                    &format!("involvedObject.name={pod}"),
                    "-o",
                    "jsonpath={.items[*].reason}: {.items[*].message}",
                ])
                .ok()
                .stdout;
            assert!(
                events.contains("SysctlForbidden") && events.contains(why),
                "{events}"
            );
        }
        let get = n
            .k(&["get", "pod", "forbidden", "--no-headers"])
            .ok()
            .stdout;
        assert!(get.contains("SysctlForbidden"), "{get}");

        // Deleting the shared pod ends its namespace's init.
        n.k(&["delete", "pod", "shared", "--timeout=60s"]).ok();
        wait("the pause process gone", 30, || {
            gone(pause_pid).then_some(())
        });
        assert!(!n.data().join(format!("agent/pods/{shared_uid}")).exists());
    }
    assert_clean(&dir, &cgroups);
    // The server's --clean ended the PID namespace init of the pod it left.
    assert!(gone(left_pause), "pause process {left_pause} left");
}

/// Whether the process is gone (or a zombie its new parent has not reaped yet).
fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}
