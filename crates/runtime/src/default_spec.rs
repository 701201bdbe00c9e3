//! The default bundle config `skiff runtime spec` writes: the same shape as `runc spec`
//! (a busybox-friendly shell, the usual pseudo filesystems, six new namespaces, a small
//! capability set, masked and read-only kernel paths).
//!
//! Built from oci-spec's types ([`default_spec`]); [`default_config`] is the same spec as
//! JSON, with the capability sets in a stable order (oci-spec keeps them in hash sets).
//! Higher layers (skiff-container's spec builder) start from [`default_spec`].

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};
use serde_json::Value;

/// The PATH every default spec (and `skiff run`, when the image sets none) starts with.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OCI runtime-spec version written into default specs (runc's).
pub const SPEC_VERSION: &str = "1.0.2";

/// runc's default spec as typed values. Every field is set here, none is left to
/// oci-spec's own defaults (which differ from runc's).
pub fn default_spec(rootless: bool) -> Spec {
    // The builders below only fail on fields with validation (mount destinations),
    // and every value here is a constant that passes it.
    build(rootless).unwrap_or_else(|e| unreachable!("the default spec is valid: {e}"))
}

fn build(rootless: bool) -> Result<Spec, oci_spec::OciSpecError> {
    let caps: oci_spec::runtime::Capabilities = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .ambient(caps)
        .build()?;
    let mut capabilities = capabilities;
    // The builder fills unset sets from oci-spec's default; runc has no inheritable set.
    capabilities.set_inheritable(None);

    let mut process = ProcessBuilder::default()
        .terminal(true)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(vec!["sh".to_string()])
        .env(vec![DEFAULT_PATH.to_string(), "TERM=xterm".to_string()])
        .cwd("/")
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()?])
        .no_new_privileges(true)
        .build()?;
    process.set_apparmor_profile(None);
    process.set_selinux_label(None);
    process.set_oom_score_adj(None);
    process.set_scheduler(None);
    process.set_io_priority(None);
    process.set_exec_cpu_affinity(None);
    process.set_console_size(None);

    let mount = |dest: &str, typ: &str, src: &str, opts: &[&str]| -> Result<Mount, _> {
        let b = MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src);
        if opts.is_empty() {
            b.build()
        } else {
            b.options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .build()
        }
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &[])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ];

    let ns = |t: LinuxNamespaceType| -> Result<LinuxNamespace, _> {
        LinuxNamespaceBuilder::default().typ(t).build()
    };
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid)?,
        ns(LinuxNamespaceType::Network)?,
        ns(LinuxNamespaceType::Ipc)?,
        ns(LinuxNamespaceType::Uts)?,
        ns(LinuxNamespaceType::Mount)?,
        ns(LinuxNamespaceType::Cgroup)?,
    ];
    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()?])
            .build()?,
    ));
    linux.set_masked_paths(Some(
        [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]
        .map(String::from)
        .to_vec(),
    ));
    linux.set_readonly_paths(Some(
        [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]
        .map(String::from)
        .to_vec(),
    ));
    if rootless {
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
        namespaces.push(ns(LinuxNamespaceType::User)?);
        let map = |id: u32| {
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(id)
                .size(1u32)
                .build()
        };
        linux.set_uid_mappings(Some(vec![map(nix::unistd::getuid().as_raw())?]));
        linux.set_gid_mappings(Some(vec![map(nix::unistd::getgid().as_raw())?]));
        linux.set_resources(None);
        // As runc: an unprivileged user can neither pick the tty group for devpts nor
        // mount a new sysfs, so /dev/pts drops gid=5 and /sys is the host's, bound.
        for m in &mut mounts {
            match m.destination().to_str() {
                Some("/dev/pts") => {
                    let opts = m.options().clone().unwrap_or_default();
                    m.set_options(Some(opts.into_iter().filter(|o| o != "gid=5").collect()));
                }
                Some("/sys") => {
                    *m = mount(
                        "/sys",
                        "none",
                        "/sys",
                        &["rbind", "nosuid", "noexec", "nodev", "ro"],
                    )?;
                }
                _ => {}
            }
        }
    }
    linux.set_namespaces(Some(namespaces));

    let mut spec = Spec::default();
    spec.set_version(SPEC_VERSION.to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build()?,
    ));
    spec.set_hostname(Some("skiff".to_string()));
    spec.set_domainname(None);
    spec.set_mounts(Some(mounts));
    spec.set_annotations(None);
    spec.set_hooks(None);
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// [`default_spec`] as JSON (what `skiff runtime spec` writes).
pub fn default_config(rootless: bool) -> Value {
    to_json(&default_spec(rootless))
}

/// A spec as JSON with its capability sets sorted, so the same spec always prints the
/// same (oci-spec holds capabilities in hash sets, whose order changes per process).
pub fn to_json(spec: &Spec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `runc spec` writes (runc 1.2's layout: the cgroup namespace included; 1.1
    /// leaves it out and says 1.0.2-dev), with skiff's hostname: the typed builder must
    /// reproduce it exactly.
    fn runc_spec() -> Value {
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": true,
                "user": {"uid": 0, "gid": 0},
                "args": ["sh"],
                "env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"
                ],
                "cwd": "/",
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "skiff",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                    {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
                ],
                "readonlyPaths": [
                    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
                ]
            }
        })
    }

    #[test]
    fn typed_default_spec_is_runcs() {
        assert_eq!(default_config(false), runc_spec());
    }

    #[test]
    fn rootless_default_spec_maps_the_caller_and_has_no_network_namespace() {
        let v = default_config(true);
        let mut want = runc_spec();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        want["linux"].as_object_mut().map(|l| l.remove("resources"));
        want["linux"]["namespaces"] = json!([
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
            {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}
        ]);
        want["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        want["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        want["mounts"][2]["options"] = json!([
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620"
        ]);
        want["mounts"][5] = json!({"destination": "/sys", "type": "none", "source": "/sys",
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        assert_eq!(v, want);
    }
}
