//! The typed OCI spec of a container: runc's default spec (from the runtime) with what a
//! container runs with applied — `skiff run`'s flags and image config, an image build's
//! RUN step, and next the kubelet's container config.
//!
//! [`SpecBuilder`] starts from [`skiff_runtime::default_spec::default_spec`], with a
//! writable rootfs and no terminal, and only sets typed fields; [`write`] and [`load`]
//! move the spec in and out of a bundle's `config.json`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceType, LinuxResources, Mount, MountBuilder,
    Process, RootBuilder, Spec, UserBuilder,
};

use crate::user::User;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command: the image has no ENTRYPOINT or CMD; give one")]
    NoCommand,
    #[error("working directory {cwd:?} must be an absolute path")]
    RelativeCwd { cwd: String },
    #[error("bind mount {what}: the {side} path {path:?} must be absolute")]
    RelativeMount {
        what: String,
        side: &'static str,
        path: String,
    },
    #[error("memory limit {bytes} bytes: the minimum is 6 MiB")]
    MemoryTooSmall { bytes: i64 },
    #[error("CPU limit {cpus}: give a positive number of CPUs, e.g. 0.5")]
    BadCpus { cpus: f64 },
    #[error("the spec has no {what}")]
    Missing { what: &'static str },
    #[error("building the spec's {what}")]
    Build {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid OCI spec")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A host directory or file bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// The Docker CPU mapping: a 100 ms period and a quota of cpus × period.
const CPU_PERIOD: u64 = 100_000;
/// The kernel refuses smaller memory limits for a container that runs anything.
const MIN_MEMORY: i64 = 6 << 20;

/// What a container runs with, applied to the runtime's default spec by [`build`].
///
/// [`build`]: SpecBuilder::build
#[derive(Debug, Clone)]
pub struct SpecBuilder {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: Option<User>,
    hostname: Option<String>,
    terminal: bool,
    mounts: Vec<BindMount>,
    memory_limit: Option<i64>,
    cpus: Option<f64>,
    network_namespace: Option<String>,
}

impl SpecBuilder {
    /// `args` runs as root in `/`, with an empty environment (see [`env`](Self::env)).
    pub fn new(args: Vec<String>) -> Self {
        SpecBuilder {
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            user: None,
            hostname: None,
            terminal: false,
            mounts: Vec::new(),
            memory_limit: None,
            cpus: None,
            network_namespace: None,
        }
    }

    /// The environment as given (see [`set_env`] to merge variables).
    pub fn env(mut self, env: Vec<String>) -> Self {
        self.env = env;
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = cwd.into();
        self
    }

    pub fn user(mut self, user: User) -> Self {
        self.user = Some(user);
        self
    }

    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    pub fn terminal(mut self, terminal: bool) -> Self {
        self.terminal = terminal;
        self
    }

    pub fn bind_mount(mut self, m: BindMount) -> Self {
        self.mounts.push(m);
        self
    }

    /// The memory limit in bytes (at least 6 MiB).
    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// A CPU limit in CPUs (0.5 = half of one), as Docker's `--cpus`.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Join this network namespace (a path) instead of making a new one.
    pub fn network_namespace(mut self, path: impl Into<String>) -> Self {
        self.network_namespace = Some(path.into());
        self
    }

    pub fn build(self) -> Result<Spec, SpecError> {
        let build = |what| move |source| SpecError::Build { what, source };
        if self.args.is_empty() {
            return Err(SpecError::NoCommand);
        }
        if !self.cwd.starts_with('/') {
            return Err(SpecError::RelativeCwd { cwd: self.cwd });
        }
        let mut spec = skiff_runtime::default_spec::default_spec(false);
        let mut process = spec
            .process()
            .clone()
            .ok_or(SpecError::Missing { what: "process" })?;
        process.set_terminal(Some(self.terminal));
        process.set_args(Some(self.args));
        process.set_env(Some(self.env));
        process.set_cwd(PathBuf::from(self.cwd));
        if let Some(u) = &self.user {
            let mut b = UserBuilder::default().uid(u.uid).gid(u.gid);
            if !u.additional_gids.is_empty() {
                b = b.additional_gids(u.additional_gids.clone());
            }
            process.set_user(b.build().map_err(build("process user"))?);
        }
        spec.set_process(Some(process));
        spec.set_root(Some(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .map_err(build("root"))?,
        ));
        if let Some(h) = self.hostname {
            spec.set_hostname(Some(h));
        }
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for m in &self.mounts {
            mounts.push(bind(m)?);
        }
        spec.set_mounts(Some(mounts));

        let mut linux = spec
            .linux()
            .clone()
            .ok_or(SpecError::Missing { what: "linux" })?;
        let mut resources: LinuxResources = linux.resources().clone().unwrap_or_default();
        if let Some(bytes) = self.memory_limit {
            if bytes < MIN_MEMORY {
                return Err(SpecError::MemoryTooSmall { bytes });
            }
            resources.set_memory(Some(
                LinuxMemoryBuilder::default()
                    .limit(bytes)
                    .build()
                    .map_err(build("memory limit"))?,
            ));
        }
        if let Some(cpus) = self.cpus {
            if !(cpus > 0.0 && cpus.is_finite()) {
                return Err(SpecError::BadCpus { cpus });
            }
            resources.set_cpu(Some(
                LinuxCpuBuilder::default()
                    .quota((cpus * CPU_PERIOD as f64).round() as i64)
                    .period(CPU_PERIOD)
                    .build()
                    .map_err(build("CPU limit"))?,
            ));
        }
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        if let Some(p) = &self.network_namespace {
            set_network_namespace(&mut spec, Some(p));
        }
        Ok(spec)
    }
}

fn bind(m: &BindMount) -> Result<Mount, SpecError> {
    let what = format!("{}:{}", m.source.display(), m.destination);
    if !m.source.is_absolute() {
        return Err(SpecError::RelativeMount {
            what,
            side: "host",
            path: m.source.display().to_string(),
        });
    }
    if !m.destination.starts_with('/') {
        return Err(SpecError::RelativeMount {
            what,
            side: "container",
            path: m.destination.clone(),
        });
    }
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if m.read_only {
        options.push("ro".to_string());
    }
    MountBuilder::default()
        .destination(&m.destination)
        .typ("bind")
        .source(&m.source)
        .options(options)
        .build()
        .map_err(|source| SpecError::Build {
            what: "bind mount",
            source,
        })
}

/// Sets `key=value` in `env`, replacing an earlier value of `key` (the last one wins, as
/// for Docker's `-e` over the image's ENV).
pub fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv.split('=').next().unwrap_or("").to_string();
    env.retain(|e| e.split('=').next() != Some(key.as_str()));
    env.push(kv);
}

/// Points the spec's network namespace at `path` (join it), or at none (a new one).
pub fn set_network_namespace(spec: &mut Spec, path: Option<&str>) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let Some(list) = linux.namespaces_mut() else {
        return;
    };
    for n in list.iter_mut() {
        if n.typ() == LinuxNamespaceType::Network {
            n.set_path(path.map(PathBuf::from));
        }
    }
}

/// A running container's process settings (user, env, cwd, capabilities…) for `args`:
/// what `exec` runs, as `docker exec` does. `env` entries override the container's.
pub fn exec_process(
    spec: &Spec,
    args: Vec<String>,
    terminal: bool,
    cwd: Option<&str>,
    env: &[String],
) -> Result<Process, SpecError> {
    let mut p = spec
        .process()
        .clone()
        .ok_or(SpecError::Missing { what: "process" })?;
    p.set_args(Some(args));
    p.set_terminal(Some(terminal));
    if let Some(w) = cwd {
        p.set_cwd(PathBuf::from(w));
    }
    let mut all = p.env().clone().unwrap_or_default();
    for kv in env {
        set_env(&mut all, kv.clone());
    }
    p.set_env(Some(all));
    Ok(p)
}

/// Writes `bundle/config.json`.
pub fn write(bundle: &Path, spec: &Spec) -> Result<(), SpecError> {
    let path = bundle.join("config.json");
    let bytes = serde_json::to_vec(spec).map_err(|source| SpecError::Parse {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, bytes).map_err(|source| SpecError::Io {
        op: "writing",
        path,
        source,
    })
}

/// Reads `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| SpecError::Io {
        op: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SpecError::Parse { path, source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn user() -> User {
        User {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![10],
            home: "/home/app".into(),
            name: Some("app".into()),
        }
    }

    #[test]
    fn builds_the_default_spec_with_the_container_applied() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SpecBuilder::new(vec!["sh".into(), "-c".into(), "echo hi".into()])
            .env(vec!["PATH=/bin".into(), "A=1".into()])
            .cwd("/work")
            .user(user())
            .hostname("box")
            .bind_mount(BindMount {
                source: dir.path().to_path_buf(),
                destination: "/data".into(),
                read_only: true,
            })
            .memory_limit(64 << 20)
            .cpus(0.5)
            .network_namespace("/proc/1/fd/3")
            .build()
            .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["ociVersion"], "1.0.2");
        assert_eq!(v["process"]["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(v["process"]["terminal"], json!(false));
        assert_eq!(v["process"]["env"], json!(["PATH=/bin", "A=1"]));
        assert_eq!(v["process"]["cwd"], "/work");
        assert_eq!(
            v["process"]["user"],
            json!({"uid": 1000, "gid": 1001, "additionalGids": [10]})
        );
        assert_eq!(v["root"], json!({"path": "rootfs", "readonly": false}));
        assert_eq!(v["hostname"], "box");
        let mounts = v["mounts"].as_array().unwrap();
        assert_eq!(mounts[0]["destination"], "/proc");
        assert_eq!(
            mounts.last().unwrap(),
            &json!({"destination": "/data", "type": "bind",
                    "source": dir.path(), "options": ["rbind", "rprivate", "ro"]})
        );
        assert_eq!(
            v["linux"]["resources"]["memory"],
            json!({"limit": 64 << 20})
        );
        assert_eq!(
            v["linux"]["resources"]["cpu"],
            json!({"quota": 50000, "period": 100000})
        );
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        assert_eq!(
            v["linux"]["namespaces"][1],
            json!({"type": "network", "path": "/proc/1/fd/3"})
        );
        // The runtime reads back what was written.
        write(dir.path(), &spec).unwrap();
        assert_eq!(load(dir.path()).unwrap(), spec);
        let mut again = load(dir.path()).unwrap();
        set_network_namespace(&mut again, None);
        assert_eq!(
            serde_json::to_value(&again).unwrap()["linux"]["namespaces"][1],
            json!({"type": "network"})
        );
    }

    #[test]
    fn defaults_and_bad_input() {
        let v =
            serde_json::to_value(SpecBuilder::new(vec!["true".into()]).build().unwrap()).unwrap();
        assert_eq!(v["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["hostname"], "skiff");
        assert!(v["linux"]["resources"].get("memory").is_none());
        assert!(matches!(
            SpecBuilder::new(vec![]).build(),
            Err(SpecError::NoCommand)
        ));
        assert!(matches!(
            SpecBuilder::new(vec!["x".into()]).cwd("rel").build(),
            Err(SpecError::RelativeCwd { .. })
        ));
        assert!(matches!(
            SpecBuilder::new(vec!["x".into()])
                .memory_limit(1024)
                .build(),
            Err(SpecError::MemoryTooSmall { .. })
        ));
        assert!(matches!(
            SpecBuilder::new(vec!["x".into()]).cpus(-1.0).build(),
            Err(SpecError::BadCpus { .. })
        ));
        let e = SpecBuilder::new(vec!["x".into()])
            .bind_mount(BindMount {
                source: "/tmp".into(),
                destination: "data".into(),
                read_only: false,
            })
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("container path"), "{e}");
    }

    #[test]
    fn exec_takes_the_containers_process() {
        let spec = SpecBuilder::new(vec!["sleep".into(), "9".into()])
            .env(vec!["A=1".into(), "B=2".into()])
            .user(user())
            .build()
            .unwrap();
        let p = exec_process(
            &spec,
            vec!["id".into()],
            true,
            Some("/tmp"),
            &["B=3".into()],
        )
        .unwrap();
        assert_eq!(p.args().as_deref().unwrap(), ["id"]);
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!(p.env().as_deref().unwrap(), ["A=1", "B=3"]);
        assert_eq!(p.user().uid(), 1000);
    }

    #[test]
    fn set_env_replaces() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        set_env(&mut env, "A=3".into());
        assert_eq!(env, ["B=2", "A=3"]);
    }
}
