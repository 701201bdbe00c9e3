//! The pod and container securityContext pieces that shape a container's OCI spec and
//! its sandbox: seccomp profiles, sysctls, procMount, and the host / shared namespaces.
//!
//! * **seccomp** (`seccompProfile`, the container's over the pod's): `Unconfined` (also
//!   the default when neither sets one, as Kubernetes without the SeccompDefault feature
//!   gate) installs no filter; `RuntimeDefault` installs [`runtime_default`];
//!   `Localhost` loads `<agent data dir>/seccomp/<localhostProfile>` (Kubernetes'
//!   `<root-dir>/seccomp`), in OCI or Docker JSON. A privileged container gets no filter
//!   (as containerd). A profile that is missing or that the runtime would refuse is a
//!   `CreateContainerConfigError`.
//! * **sysctls** (`spec.securityContext.sysctls`): checked when the pod is admitted, as
//!   the kubelet's sysctl admit handler does: the safe set and the namespaced sysctls the
//!   agent's `--allowed-unsafe-sysctls` patterns allow pass; any other (or a net.* one
//!   with hostNetwork, an IPC one with hostIPC) fails the pod with `SysctlForbidden`. The
//!   allowed ones are written once into the pod's pinned network / IPC namespaces
//!   ([`apply_sysctls`]), where containerd writes them into the pause container's: every
//!   container of the pod shares those namespaces.
//! * **procMount**: `Default` keeps the runtime's masked and read-only /proc and /sys
//!   paths; `Unmasked` drops them. Kubernetes allows Unmasked only with `hostUsers:
//!   false` (its API validation); skiff has no user namespaces for pods yet and accepts
//!   it as given (the API server decides what pods may ask for).
//! * **namespaces**: `hostNetwork` (the host's network and UTS namespaces), `hostPID`,
//!   `hostIPC` leave the container in the host's; `shareProcessNamespace` puts every
//!   container of the pod in the pod's PID namespace (see [`super::pidns`]).

use std::collections::BTreeSet;
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Spec};
use serde_json::{json, Value};
use skiff_container::netns::Pinned;

/// Which seccomp profile a container runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    #[default]
    Unconfined,
    RuntimeDefault,
    /// A path below `<data>/seccomp`.
    Localhost(String),
    /// A seccompProfile the kubelet cannot apply (the message says why).
    Invalid(String),
}

/// A container's security settings besides user, capabilities and privilege.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSecurity {
    pub seccomp: Seccomp,
    /// procMount: Unmasked.
    pub unmasked_proc: bool,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// shareProcessNamespace: join the pod's PID namespace.
    pub share_pid: bool,
}

fn seccomp_of(p: &SeccompProfile) -> Seccomp {
    match p.type_.as_str() {
        "Unconfined" => Seccomp::Unconfined,
        "RuntimeDefault" => Seccomp::RuntimeDefault,
        "Localhost" => match p.localhost_profile.as_deref().filter(|s| !s.is_empty()) {
            Some(path) => Seccomp::Localhost(path.to_string()),
            None => Seccomp::Invalid(
                "seccompProfile type Localhost needs localhostProfile: a path below the kubelet's seccomp directory".into(),
            ),
        },
        other => Seccomp::Invalid(format!(
            "unknown seccompProfile type {other:?}: use RuntimeDefault, Unconfined or Localhost"
        )),
    }
}

/// The container's settings from its securityContext and the pod's.
pub fn container_security(spec: &PodSpec, c: &Container) -> ContainerSecurity {
    let sc = c.security_context.as_ref();
    let psc = spec.security_context.as_ref();
    let seccomp = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| psc.and_then(|s| s.seccomp_profile.as_ref()))
        .map(seccomp_of)
        .unwrap_or_default();
    let host_pid = spec.host_pid == Some(true);
    ContainerSecurity {
        seccomp,
        unmasked_proc: sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked"),
        host_network: spec.host_network == Some(true),
        host_pid,
        host_ipc: spec.host_ipc == Some(true),
        share_pid: spec.share_process_namespace == Some(true) && !host_pid,
    }
}

/// The pod's host name: the node's for a hostNetwork pod (it shares the node's UTS
/// namespace), else `spec.hostname` or the pod's name (at most 63 characters).
pub fn pod_hostname(spec: &PodSpec, pod_name: &str) -> String {
    if spec.host_network == Some(true) {
        if let Ok(h) = nix::unistd::gethostname() {
            return h.to_string_lossy().into_owned();
        }
    }
    let name = spec.hostname.as_deref().unwrap_or(pod_name);
    name.chars().take(63).collect()
}

/// The /etc/hosts of a hostNetwork pod: the node's, then the pod's hostAliases (as the
/// kubelet writes it).
pub fn host_network_hosts(spec: &PodSpec) -> String {
    let mut h = String::from("# Kubernetes-managed hosts file (host network).\n");
    h.push_str(&std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    for a in spec.host_aliases.clone().unwrap_or_default() {
        h.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{}\n",
            a.ip,
            a.hostnames.unwrap_or_default().join("\t")
        ));
    }
    h
}

/// Applies `sec` to a container's spec: its namespaces (`pid_ns` is the pod's pinned
/// PID namespace), procMount and seccomp profile. `caps` is the container's bounding
/// set as `CAP_*` names (the Docker profile format and [`runtime_default`] look at it).
pub fn apply(
    spec: &mut Spec,
    sec: &ContainerSecurity,
    privileged: bool,
    caps: &BTreeSet<String>,
    data_dir: &Path,
    pid_ns: &Path,
) -> Result<(), String> {
    let seccomp = if privileged {
        None
    } else {
        profile(&sec.seccomp, caps, &data_dir.join("seccomp"))?
    };
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    if let Some(nss) = linux.namespaces_mut() {
        nss.retain(|n| match n.typ() {
            // A host-network pod also has the host's name (Kubernetes' hostNetwork pods
            // run in the host's UTS namespace).
            LinuxNamespaceType::Network | LinuxNamespaceType::Uts => !sec.host_network,
            LinuxNamespaceType::Pid => !sec.host_pid,
            LinuxNamespaceType::Ipc => !sec.host_ipc,
            _ => true,
        });
        if sec.share_pid {
            for n in nss.iter_mut() {
                if n.typ() == LinuxNamespaceType::Pid {
                    n.set_path(Some(pid_ns.to_path_buf()));
                }
            }
        }
    }
    if sec.unmasked_proc {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    linux.set_seccomp(seccomp);
    Ok(())
}

/// The filter for `choice`, or none. `root` is the directory Localhost paths are below.
pub fn profile(
    choice: &Seccomp,
    caps: &BTreeSet<String>,
    root: &Path,
) -> Result<Option<LinuxSeccomp>, String> {
    let p = match choice {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Invalid(m) => return Err(m.clone()),
        Seccomp::RuntimeDefault => runtime_default(caps),
        Seccomp::Localhost(rel) => localhost(root, rel, caps)?,
    };
    Ok(Some(p))
}

/// Loads and checks the Localhost profile `rel` below `root`.
pub fn localhost(root: &Path, rel: &str, caps: &BTreeSet<String>) -> Result<LinuxSeccomp, String> {
    let descends = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !descends {
        return Err(format!(
            "seccomp localhostProfile {rel:?} must be a relative path without \"..\" (below {})",
            root.display()
        ));
    }
    let path = root.join(rel);
    let load = |why: String| format!("cannot load seccomp profile {:?}: {why}", path.display());
    let bytes = std::fs::read(&path).map_err(|e| load(e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| load(format!("not JSON: {e}")))?;
    let v = resolve_docker(v, caps, host_arch(), kernel_version())
        .map_err(|e| load(format!("invalid profile: {e}")))?;
    let p: LinuxSeccomp =
        serde_json::from_value(v).map_err(|e| load(format!("invalid profile: {e}")))?;
    skiff_runtime::seccomp::compile(&p).map_err(|e| load(format!("invalid profile: {e}")))?;
    Ok(p)
}

/// The host architecture as Docker profiles name it in `includes.arches` and
/// `excludes.arches` (Go's GOARCH).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The OCI name of the host architecture (`archMap` entries are picked by it).
fn host_oci_arch(goarch: &str) -> String {
    match goarch {
        "amd64" => "SCMP_ARCH_X86_64".into(),
        "arm64" => "SCMP_ARCH_AARCH64".into(),
        other => format!("SCMP_ARCH_{}", other.to_ascii_uppercase()),
    }
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Turns a profile in Docker's format (moby's `profiles/seccomp`) into the OCI one, as
/// Docker and containerd do when they load it: `archMap` gives `architectures` (the
/// host's entry and its sub-architectures), `name` joins `names`, and an entry whose
/// `includes` (all its caps, the host arch, minKernel) or `excludes` (any of its caps,
/// the host arch) do not fit this container is left out. An OCI profile passes through.
pub fn resolve_docker(
    mut v: Value,
    caps: &BTreeSet<String>,
    goarch: &str,
    kernel: (u32, u32),
) -> Result<Value, String> {
    let Some(obj) = v.as_object_mut() else {
        return Err("a seccomp profile is a JSON object".into());
    };
    if let Some(map) = obj.remove("archMap") {
        let host = host_oci_arch(goarch);
        let mut arches: Vec<Value> = Vec::new();
        for entry in map.as_array().into_iter().flatten() {
            if entry["architecture"] == host {
                arches.push(entry["architecture"].clone());
                for s in entry["subArchitectures"].as_array().into_iter().flatten() {
                    arches.push(s.clone());
                }
            }
        }
        if !obj.contains_key("architectures") {
            obj.insert("architectures".into(), Value::Array(arches));
        }
    }
    let has_cap = |c: &Value| c.as_str().is_some_and(|c| caps.contains(c));
    let is_arch = |a: &Value| a.as_str() == Some(goarch);
    if let Some(Value::Array(calls)) = obj.get_mut("syscalls") {
        let mut kept = Vec::with_capacity(calls.len());
        for mut call in std::mem::take(calls) {
            let Some(c) = call.as_object_mut() else {
                return Err("syscalls: each entry is a JSON object".into());
            };
            let inc = c.remove("includes").unwrap_or(Value::Null);
            let exc = c.remove("excludes").unwrap_or(Value::Null);
            c.remove("comment");
            if let Some(name) = c.remove("name") {
                let names = c.entry("names").or_insert_with(|| Value::Array(Vec::new()));
                if let Some(a) = names.as_array_mut() {
                    a.push(name);
                }
            }
            let list = |v: &Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
            if list(&exc, "caps").iter().any(has_cap) || list(&exc, "arches").iter().any(is_arch) {
                continue;
            }
            if !list(&inc, "caps").iter().all(has_cap) {
                continue;
            }
            let arches = list(&inc, "arches");
            if !arches.is_empty() && !arches.iter().any(is_arch) {
                continue;
            }
            if let Some(min) = inc["minKernel"].as_str() {
                let want = parse_version(min)
                    .ok_or_else(|| format!("includes.minKernel {min:?} is not a version"))?;
                if kernel < want {
                    continue;
                }
            }
            kept.push(call);
        }
        *calls = kept;
    }
    Ok(v)
}

/// Syscalls RuntimeDefault refuses with EPERM, each group unless the container has one
/// of the capabilities after it (the kernel asks for that capability anyway, so the
/// profile adds nothing for such a container).
///
/// Design: containerd's and Docker's default profile is an allow list (default action
/// ERRNO) of ~370 syscalls, plus extra allows for containers with certain capabilities.
/// This profile is the same policy written from the other side: default ALLOW and the
/// syscalls their allow list leaves out (or only grants with a capability), for the
/// syscalls that exist on current kernels. A container therefore sees the same answers
/// for every syscall Docker's profile names; the one difference is a syscall neither
/// list knows (one added by a newer kernel), which this profile lets through where
/// Docker's refuses. The list is short enough to audit, and `ptrace`,
/// `process_vm_readv` and friends are allowed as Docker does on kernels ≥ 4.8.
const DENIED: &[(&[&str], &[&str])] = &[
    // The kernel keyring is not namespaced.
    (&["add_key", "keyctl", "request_key"], &[]),
    // Obsolete or unsafe interfaces, and io_uring (which bypasses syscall filtering;
    // Docker ≥ 25 and containerd 2 refuse it too).
    (
        &[
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
            "vm86",
            "vm86old",
            "get_kernel_syms",
            "query_module",
            "create_module",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
        &[],
    ),
    (
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
            "unshare",
            "setns",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "sethostname",
            "setdomainname",
            "fanotify_init",
            "lookup_dcookie",
            "name_to_handle_at",
        ],
        &["CAP_SYS_ADMIN"],
    ),
    (&["bpf"], &["CAP_SYS_ADMIN", "CAP_BPF"]),
    (&["perf_event_open"], &["CAP_SYS_ADMIN", "CAP_PERFMON"]),
    (
        &["reboot", "kexec_load", "kexec_file_load"],
        &["CAP_SYS_BOOT"],
    ),
    (
        &["init_module", "finit_module", "delete_module"],
        &["CAP_SYS_MODULE"],
    ),
    (&["acct"], &["CAP_SYS_PACCT"]),
    (&["iopl", "ioperm"], &["CAP_SYS_RAWIO"]),
    (
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &["CAP_SYS_TIME"],
    ),
    (&["vhangup"], &["CAP_SYS_TTY_CONFIG"]),
    (&["syslog"], &["CAP_SYSLOG"]),
    (&["open_by_handle_at"], &["CAP_DAC_READ_SEARCH"]),
    (&["userfaultfd"], &["CAP_SYS_PTRACE"]),
];

/// clone(2) flags that make namespaces: refused without CAP_SYS_ADMIN, as Docker does.
const CLONE_NAMESPACES: &[CloneFlags] = &[
    CloneFlags::CLONE_NEWNS,
    CloneFlags::CLONE_NEWCGROUP,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWUSER,
    CloneFlags::CLONE_NEWPID,
    CloneFlags::CLONE_NEWNET,
];

/// The RuntimeDefault profile for a container with the capabilities `caps` (see
/// [`DENIED`]).
pub fn runtime_default(caps: &BTreeSet<String>) -> LinuxSeccomp {
    let mut syscalls: Vec<Value> = Vec::new();
    for (names, lifted_by) in DENIED {
        if lifted_by.iter().any(|c| caps.contains(*c)) {
            continue;
        }
        syscalls.push(json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}));
    }
    if !caps.contains("CAP_SYS_ADMIN") {
        // Any namespace flag: each comparison on the same argument is its own rule (ORed).
        let args: Vec<Value> = CLONE_NAMESPACES
            .iter()
            .map(|f| {
                let bit = f.bits() as u64;
                json!({"index": 0, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"})
            })
            .collect();
        syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM, "args": args}));
        // clone3 passes its flags in memory a filter cannot read: ENOSYS makes the C
        // library fall back to clone (Docker's choice).
        syscalls.push(
            json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
        );
    }
    let v = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [host_oci_arch(host_arch())],
        "syscalls": syscalls,
    });
    // The JSON above is well-formed by construction; a failure would be a bug here.
    serde_json::from_value(v).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the RuntimeDefault seccomp profile does not parse");
        LinuxSeccomp::default()
    })
}

/// The capabilities of `all` (named in the kernel's order, so that a name's index is its
/// number) in this process' bounding set: a container cannot get more.
pub fn held_caps(all: &[&'static str]) -> Vec<&'static str> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    all.iter()
        .enumerate()
        .filter(|(i, _)| *i < 64 && bounding & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect()
}

// ---- sysctls ----

/// The sysctls Kubernetes allows every pod (its "safe" set, as of 1.33).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The namespace a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNs {
    Net,
    Ipc,
}

impl SysctlNs {
    fn name(self) -> &'static str {
        match self {
            SysctlNs::Net => "net",
            SysctlNs::Ipc => "ipc",
        }
    }
}

/// Kubernetes' NormalizeName: a name written with `/` separators (whose first separator
/// is `/`) gets `.` separators, and its dots (as in `eth0.100`) become `/`.
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The namespace of a (normalized) sysctl or of a pattern's prefix, or None for a
/// sysctl of the whole host (Kubernetes' namespaced groups).
pub fn namespace_of(name: &str) -> Option<SysctlNs> {
    let name = name.trim_end_matches('*');
    if name.starts_with("net.") {
        Some(SysctlNs::Net)
    } else if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
    {
        Some(SysctlNs::Ipc)
    } else {
        None
    }
}

/// Whether `pattern` (a name, or a prefix ending in `*`) matches `name`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Checks `--allowed-unsafe-sysctls` patterns as the kubelet does at start: each names a
/// namespaced sysctl or group, with at most a trailing `*`.
pub fn validate_patterns(patterns: &[String]) -> Result<(), String> {
    for p in patterns {
        let n = normalize(p);
        if n.is_empty() || n.trim_end_matches('*').contains('*') {
            return Err(format!(
                "sysctl pattern {p:?}: only a trailing \"*\" is allowed"
            ));
        }
        if namespace_of(&n).is_none() {
            return Err(format!(
                "sysctl pattern {p:?}: not a namespaced sysctl (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*); it would change the whole host"
            ));
        }
    }
    Ok(())
}

/// Why a sysctl may not be set, as the kubelet says it: `"x" not allowlisted` or
/// `"x" not allowed with host net enabled`.
fn check_one(
    name: &str,
    allowed_unsafe: &[String],
    host_net: bool,
    host_ipc: bool,
) -> Result<(), String> {
    let allowed = SAFE_SYSCTLS.contains(&name)
        || allowed_unsafe
            .iter()
            .any(|p| pattern_matches(&normalize(p), name));
    let ns = namespace_of(name);
    if !allowed || ns.is_none() || !valid_name(name) {
        return Err(format!("{name:?} not allowlisted"));
    }
    match ns {
        Some(SysctlNs::Net) if host_net => {
            Err(format!("{name:?} not allowed with host net enabled"))
        }
        Some(SysctlNs::Ipc) if host_ipc => {
            Err(format!("{name:?} not allowed with host ipc enabled"))
        }
        _ => Ok(()),
    }
}

fn valid_name(name: &str) -> bool {
    name.split('.').all(|part| {
        !part.is_empty()
            && part.split('/').all(|p| !p.is_empty())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-/@:+".contains(c))
    })
}

/// The pod's sysctls (normalized name, value) if the agent admits them all, or the
/// message of the `SysctlForbidden` rejection.
pub fn check_sysctls(
    spec: &PodSpec,
    allowed_unsafe: &[String],
) -> Result<Vec<(String, String)>, String> {
    let list = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.clone())
        .unwrap_or_default();
    let host_net = spec.host_network == Some(true);
    let host_ipc = spec.host_ipc == Some(true);
    let mut out = Vec::new();
    for s in list {
        let name = normalize(&s.name);
        check_one(&name, allowed_unsafe, host_net, host_ipc)
            .map_err(|e| format!("forbidden sysctl: {e}"))?;
        out.push((name, s.value));
    }
    Ok(out)
}

/// Writes the sysctls into the sandbox's network and IPC namespaces.
pub fn apply_sysctls(pinned: &Pinned, sysctls: &[(String, String)]) -> Result<(), String> {
    for kind in [SysctlNs::Net, SysctlNs::Ipc] {
        let mine: Vec<(String, String)> = sysctls
            .iter()
            .filter(|(k, _)| namespace_of(k) == Some(kind))
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let (ns, flag) = match kind {
            SysctlNs::Net => (&pinned.net, CloneFlags::CLONE_NEWNET),
            SysctlNs::Ipc => (&pinned.ipc, CloneFlags::CLONE_NEWIPC),
        };
        let file = std::fs::File::open(ns)
            .map_err(|e| format!("opening the pod's {} namespace: {e}", kind.name()))?;
        // /proc/sys/{net,kernel} show the namespaces of the thread that opens them.
        std::thread::spawn(move || -> Result<(), String> {
            nix::sched::setns(&file, flag)
                .map_err(|e| format!("joining the pod's {} namespace: {e}", kind.name()))?;
            for (k, v) in &mine {
                let path = Path::new("/proc/sys").join(sysctl_path(k));
                std::fs::write(&path, v.as_bytes())
                    .map_err(|e| format!("setting sysctl {k}={v:?}: {e}"))?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| "the sysctl thread panicked".to_string())??;
    }
    Ok(())
}

/// `net.ipv4.conf.eth0/100.rp_filter` → `net/ipv4/conf/eth0.100/rp_filter`.
fn sysctl_path(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
