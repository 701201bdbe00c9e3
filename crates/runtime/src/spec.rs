//! Loading and validating a bundle's `config.json`.
//!
//! Contract: `load_bundle` either returns a spec that the rest of the runtime can act on
//! without further checks, or an error naming the JSON path and the offending value. It
//! creates nothing, so a refused config leaves no trace on the host.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};

use crate::seccomp::{self, CompiledSeccomp};

/// Why a bundle or its config was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {path}: {message} (line {line}, column {column})")]
    Parse {
        file: PathBuf,
        path: String,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("config.json: {path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// A validated bundle: its directory, the spec, and what was derived from it up front.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    /// `root.path` resolved against the bundle directory.
    pub rootfs: PathBuf,
    pub seccomp: Option<CompiledSeccomp>,
}

impl Bundle {
    pub fn process(&self) -> Option<&Process> {
        self.spec.process().as_ref()
    }
}

/// Parse JSON from `reader`, reporting the JSON path of any type error.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    file: &Path,
    reader: impl std::io::Read,
) -> Result<T, SpecError> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        SpecError::Parse {
            file: file.to_path_buf(),
            path: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message: strip_position(&inner.to_string()),
            line: inner.line(),
            column: inner.column(),
        }
    })
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Load and validate `<bundle>/config.json`.
pub fn load_bundle(dir: &Path) -> Result<Bundle, SpecError> {
    let dir = std::path::absolute(dir).map_err(|source| SpecError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let file = dir.join("config.json");
    let f = File::open(&file).map_err(|source| SpecError::Read {
        path: file.clone(),
        source,
    })?;
    let spec: Spec = parse_json(&file, BufReader::new(f))?;
    validate(dir, spec)
}

/// Check everything that can be checked before creating anything.
pub fn validate(dir: PathBuf, spec: Spec) -> Result<Bundle, SpecError> {
    if !spec.version().starts_with("1.") {
        return Err(invalid(
            "ociVersion",
            format!(
                "{:?} is not a 1.x runtime-spec version; set it to e.g. \"1.0.2\"",
                spec.version()
            ),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing; set root.path to the rootfs directory"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ))
        }
        Err(e) => {
            return Err(invalid(
                "root.path",
                format!("{}: {e}; unpack a root filesystem there", rootfs.display()),
            ))
        }
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing; a container needs a process to run"))?;
    validate_process(process, "process")?;
    warn_unsupported_labels(&spec);
    if let Some(mounts) = spec.mounts() {
        for (i, m) in mounts.iter().enumerate() {
            validate_mount(m, &format!("mounts[{i}]"))?;
        }
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux", "missing; skiff runs Linux containers only"))?;
    let mut seen = HashSet::new();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for (i, ns) in namespaces.iter().enumerate() {
        let p = format!("linux.namespaces[{i}]");
        if !seen.insert(ns.typ()) {
            return Err(invalid(
                format!("{p}.type"),
                format!("namespace {:?} listed twice", ns.typ().to_string()),
            ));
        }
        if ns.typ() == LinuxNamespaceType::Time {
            return Err(invalid(
                format!("{p}.type"),
                "time namespaces are not supported by skiff yet; remove this entry",
            ));
        }
        if let Some(path) = ns.path() {
            if !path.is_absolute() {
                return Err(invalid(
                    format!("{p}.path"),
                    format!("{} is not absolute", path.display()),
                ));
            }
            if let Err(e) = std::fs::metadata(path) {
                return Err(invalid(
                    format!("{p}.path"),
                    format!("{}: {e}", path.display()),
                ));
            }
            if ns.typ() == LinuxNamespaceType::User
                && namespaces
                    .iter()
                    .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
            {
                return Err(invalid(
                    format!("{p}.path"),
                    "joining a user namespace by path together with a new pid namespace is not supported; give the pid namespace a path too or drop the user path",
                ));
            }
        }
    }
    let has_new = |t: LinuxNamespaceType| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    let user_ns = has(LinuxNamespaceType::User);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if has_new(LinuxNamespaceType::User) {
        for (field, m) in [
            ("linux.uidMappings", linux.uid_mappings()),
            ("linux.gidMappings", linux.gid_mappings()),
        ] {
            match m {
                Some(m) if !m.is_empty() => {
                    for (i, e) in m.iter().enumerate() {
                        if e.size() == 0 {
                            return Err(invalid(format!("{field}[{i}].size"), "must be > 0"));
                        }
                    }
                }
                _ => {
                    return Err(invalid(
                        field,
                        "a new user namespace needs uid and gid mappings",
                    ))
                }
            }
        }
    } else if maps && !user_ns {
        return Err(invalid(
            "linux.uidMappings",
            "mappings are set but there is no user namespace; add {\"type\": \"user\"} to linux.namespaces",
        ));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        && !has_new(LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "hostname",
            "cannot set the hostname without a new uts namespace; add {\"type\": \"uts\"} to linux.namespaces",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty())
        && !has_new(LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "domainname",
            "cannot set the domainname without a new uts namespace",
        ));
    }
    if !has(LinuxNamespaceType::Mount) {
        return Err(invalid(
            "linux.namespaces",
            "skiff needs a mount namespace to set up the root filesystem; add {\"type\": \"mount\"}",
        ));
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            validate_sysctl(key, &has_new)?;
        }
    }
    if let Some(devices) = linux.devices() {
        for (i, d) in devices.iter().enumerate() {
            if !d.path().is_absolute() {
                return Err(invalid(
                    format!("linux.devices[{i}].path"),
                    format!("{} is not absolute", d.path().display()),
                ));
            }
        }
    }
    if let Some(p) = linux.cgroups_path() {
        let s = p.to_string_lossy();
        if s.split('/').any(|c| c == "..") {
            return Err(invalid(
                "linux.cgroupsPath",
                format!("{s:?} must not contain '..'"),
            ));
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        if !prop.is_empty() && propagation_flag(prop).is_none() {
            return Err(invalid(
                "linux.rootfsPropagation",
                format!("{prop:?} is not one of private, rprivate, slave, rslave, shared, rshared, unbindable, runbindable"),
            ));
        }
    }
    if let Some(hooks) = spec.hooks() {
        let lists = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (name, list) in lists {
            for (i, h) in list.iter().flatten().enumerate() {
                if !h.path().is_absolute() {
                    return Err(invalid(
                        format!("hooks.{name}[{i}].path"),
                        format!("{} is not absolute", h.path().display()),
                    ));
                }
                if h.timeout().is_some_and(|t| t <= 0) {
                    return Err(invalid(
                        format!("hooks.{name}[{i}].timeout"),
                        "must be a positive number of seconds",
                    ));
                }
            }
        }
    }
    let seccomp = match linux.seccomp() {
        Some(s) => Some(seccomp::compile(s)?),
        None => None,
    };
    Ok(Bundle {
        dir,
        spec,
        rootfs,
        seccomp,
    })
}

/// skiff has no LSM integration yet; like runc on a host without AppArmor or SELinux,
/// it runs the container without the label rather than refusing it.
fn warn_unsupported_labels(spec: &Spec) {
    let mut fields = Vec::new();
    if let Some(p) = spec.process() {
        if p.apparmor_profile()
            .as_deref()
            .is_some_and(|s| !s.is_empty())
        {
            fields.push("process.apparmorProfile");
        }
        if p.selinux_label().as_deref().is_some_and(|s| !s.is_empty()) {
            fields.push("process.selinuxLabel");
        }
    }
    if spec
        .linux()
        .as_ref()
        .and_then(|l| l.mount_label().as_deref())
        .is_some_and(|s| !s.is_empty())
    {
        fields.push("linux.mountLabel");
    }
    for f in fields {
        tracing::warn!(
            "{f} is set but skiff does not support AppArmor/SELinux labels; ignoring it"
        );
    }
}

/// Validate a process (from config.json or from `exec --process`); `at` is its JSON path.
pub fn validate_process(process: &Process, at: &str) -> Result<(), SpecError> {
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => {
            return Err(invalid(
                format!("{at}.args"),
                "empty; name the program to run",
            ))
        }
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            format!("{at}.cwd"),
            format!("{:?} must be an absolute path", process.cwd()),
        ));
    }
    if let Some(env) = process.env() {
        for (i, e) in env.iter().enumerate() {
            if !e.contains('=') {
                return Err(invalid(
                    format!("{at}.env[{i}]"),
                    format!("{e:?} is not KEY=VALUE"),
                ));
            }
        }
    }
    if let Some(rl) = process.rlimits() {
        let mut seen = HashSet::new();
        for (i, r) in rl.iter().enumerate() {
            if !seen.insert(format!("{:?}", r.typ())) {
                return Err(invalid(
                    format!("{at}.rlimits[{i}].type"),
                    format!("{:?} listed twice", r.typ()),
                ));
            }
            if r.soft() > r.hard() {
                return Err(invalid(
                    format!("{at}.rlimits[{i}]"),
                    format!("soft limit {} exceeds hard limit {}", r.soft(), r.hard()),
                ));
            }
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(
                format!("{at}.oomScoreAdj"),
                format!("{adj} is outside -1000..1000"),
            ));
        }
    }
    Ok(())
}

fn validate_mount(m: &Mount, at: &str) -> Result<(), SpecError> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(invalid(
            format!("{at}.destination"),
            format!("{:?} must be an absolute path inside the container", dest),
        ));
    }
    if dest
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(invalid(
            format!("{at}.destination"),
            format!("{:?} must not contain '..'", dest),
        ));
    }
    let opts = m.options().clone().unwrap_or_default();
    let is_bind =
        m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
    if is_bind && m.source().is_none() {
        return Err(invalid(
            format!("{at}.source"),
            "a bind mount needs a source",
        ));
    }
    if !is_bind && m.typ().as_deref().is_none_or(str::is_empty) {
        return Err(invalid(
            format!("{at}.type"),
            "missing; give a filesystem type such as tmpfs, or the bind option",
        ));
    }
    for (i, o) in opts.iter().enumerate() {
        if o == "idmap" || o == "ridmap" {
            return Err(invalid(
                format!("{at}.options[{i}]"),
                format!("{o:?}: id-mapped mounts are not supported yet"),
            ));
        }
    }
    Ok(())
}

fn validate_sysctl(
    key: &str,
    has_new: &dyn Fn(LinuxNamespaceType) -> bool,
) -> Result<(), SpecError> {
    let at = format!("linux.sysctl.{key}");
    if key.is_empty() || key.contains("..") || key.starts_with('/') || key.contains('\0') {
        return Err(invalid(at, "not a valid sysctl name"));
    }
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let ok = if ipc.contains(&key) || key.starts_with("fs.mqueue.") {
        has_new(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        has_new(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        return Err(invalid(
            at,
            "set hostname/domainname through the config fields instead",
        ));
    } else {
        return Err(invalid(
            at,
            "not namespaced: it would change the host; only net.*, fs.mqueue.* and kernel IPC sysctls are allowed",
        ));
    };
    if !ok {
        return Err(invalid(
            at,
            "needs a new network (net.*) or ipc namespace so that it does not change the host",
        ));
    }
    Ok(())
}

/// The mount propagation flag for an OCI propagation name.
pub fn propagation_flag(name: &str) -> Option<nix::mount::MsFlags> {
    use nix::mount::MsFlags as F;
    Some(match name {
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    })
}
