//! `skiff image build`: executes a parsed Dockerfile against an [`ImageStore`].
//!
//! Contract: stages are built in order up to the target; each instruction either changes
//! the image config (ENV, CMD, …: no layer) or produces one uncompressed layer (COPY,
//! ADD, RUN) that is stored as a blob and unpacked into the snapshotter so the next RUN
//! sees it. The name is tagged only once every stage succeeded, so a failed build leaves
//! the store's names unchanged (blobs it wrote are left for `skiff image prune`).
//!
//! Reproducibility: layer entries are sorted and every mtime, plus the config's
//! `created` times, is the build epoch (`SOURCE_DATE_EPOCH`, default 0) — unlike Docker,
//! which keeps files' real mtimes. Building an unchanged context twice gives the same
//! image digest.
//!
//! Cache: each step extends a chain digest `sha256(previous chain, expanded instruction,
//! build args in effect)`; the stage's base (image config digest, `scratch` or the stage
//! it names) starts the chain. A RUN whose chain digest has an entry under
//! `<data>/images/build-cache/` reuses that layer; a COPY/ADD additionally includes its
//! layer's digest (so a changed file misses, and every step after it misses too).

mod cache;
mod context;
mod healthcheck;
mod layer;
mod paths;
mod run;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::dockerfile::{self, Command, DockerfileError, Instruction, Stage};
use crate::error::Category;
use crate::manifest;
use crate::mount::{MountError, MountGuard};
use crate::reference::NamedRef;
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::store::{ImageError, ImageStore};

pub use context::Ignore;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile (default `<context>/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    pub tags: Vec<NamedRef>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// Seconds since the epoch for every mtime and `created` time.
    pub epoch: u64,
    /// skiff's data directory (bundles of RUN containers live under `builds/`).
    pub data_dir: PathBuf,
    /// The runtime's state root for RUN containers.
    pub runtime_root: PathBuf,
    /// Pulls a `FROM registry/repo:tag` base that is not in the store (`None`: no pulls).
    pub pull: Option<PullHook>,
}

/// Fetches a base image into the store by name; the binary wires it to the registry
/// client so the builder stays synchronous and free of network code.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct PullHook(
    pub  std::sync::Arc<
        dyn Fn(&str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
    >,
);

impl std::fmt::Debug for PullHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullHook")
    }
}

/// Why one instruction failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(
        "COPY source {source_path:?} not found in the build context (or excluded by .dockerignore)"
    )]
    SourceNotFound { source_path: String },
    #[error("COPY source {source_path:?} points outside the build context")]
    OutsideContext { source_path: String },
    #[error("the command exited with status {code}; its output:\n{output}")]
    RunFailed { code: i32, output: String },
    #[error("unknown user or group {user:?}: not in the image's /etc/passwd or /etc/group")]
    UnknownUser { user: String },
    #[error("invalid {flag} value {value:?}")]
    BadFlag { flag: &'static str, value: String },
    #[error("ADD of a remote URL ({url}) is not supported: download it into the build context and ADD or COPY that file")]
    RemoteUrl { url: String },
    #[error("too many symlinks resolving {path} in the image")]
    SymlinkLoop { path: String },
    #[error("stage or image {name:?} not found (COPY --from / FROM)")]
    UnknownFrom { name: String },
    #[error("pulling base image {name}")]
    Pull {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("ADD: {file} is not a readable archive")]
    BadArchive {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("running the RUN container")]
    Runtime {
        #[source]
        source: Box<skiff_runtime::RuntimeError>,
    },
    #[error("redirecting the RUN container's output")]
    Redirect {
        #[source]
        source: nix::Error,
    },
    #[error("encoding {what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read the Dockerfile {path}")]
    ReadDockerfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("build context {path} is not a directory")]
    BadContext { path: PathBuf },
    #[error(transparent)]
    Parse(#[from] DockerfileError),
    #[error("target stage {target:?} not found in the Dockerfile")]
    NoTarget { target: String },
    #[error("Dockerfile line {line}: {text}")]
    Step {
        line: usize,
        text: String,
        #[source]
        source: StepError,
    },
    #[error("storing the image")]
    Store(#[source] StepError),
    #[error("tagging the image")]
    Tag(#[source] ImageError),
}

impl BuildError {
    pub fn category(&self) -> Category {
        match self {
            Self::ReadDockerfile { .. } | Self::BadContext { .. } | Self::Parse(_) => {
                Category::Invalid
            }
            Self::NoTarget { .. } => Category::NotFound,
            Self::Step { source, .. } | Self::Store(source) => match source {
                StepError::Image(e) => e.category(),
                StepError::Io { .. }
                | StepError::Runtime { .. }
                | StepError::Redirect { .. }
                | StepError::Mount(_) => Category::Unavailable,
                _ => Category::Invalid,
            },
            Self::Tag(e) => e.category(),
        }
    }
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Digest,
    pub config: Digest,
}

/// One layer of the image being built.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LayerDesc {
    blob: Digest,
    diff_id: Digest,
    size: u64,
    media_type: String,
}

/// A stage's image so far.
#[derive(Debug, Clone)]
struct State {
    /// The image config without its `config` member, which lives in `cfg`.
    config: Value,
    cfg: Map<String, Value>,
    layers: Vec<LayerDesc>,
    chain: Digest,
}

impl State {
    fn cfg(&mut self) -> &mut Map<String, Value> {
        &mut self.cfg
    }
    fn get(&self, k: &str) -> Option<&Value> {
        self.cfg.get(k)
    }
    fn env(&self) -> Vec<String> {
        self.get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
    fn str(&self, k: &str) -> String {
        self.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }
    fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
}

fn chain(prev: &Digest, parts: &[&str]) -> Digest {
    let mut s = prev.to_string();
    for p in parts {
        s.push('\n');
        s.push_str(p);
    }
    Digest::of(s.as_bytes())
}

/// Builds the Dockerfile, printing `docker build`-style progress to `out`.
pub fn build(
    store: &ImageStore,
    opts: &BuildOptions,
    out: &mut dyn Write,
) -> Result<Built, BuildError> {
    if !opts.context.is_dir() {
        return Err(BuildError::BadContext {
            path: opts.context.clone(),
        });
    }
    // Until the image is tagged, prune must not take what this build stores.
    let _lease = store
        .build_lease()
        .map_err(|e| BuildError::Store(e.into()))?;
    let df_path = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| opts.context.join("Dockerfile"));
    let text = fs::read_to_string(&df_path).map_err(|source| BuildError::ReadDockerfile {
        path: df_path.clone(),
        source,
    })?;
    let df = dockerfile::parse(&text)?;
    for w in &df.warnings {
        let _ = writeln!(out, "WARNING: {w}");
    }
    let last = match &opts.target {
        Some(t) => df
            .stages
            .iter()
            .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
            .ok_or_else(|| BuildError::NoTarget { target: t.clone() })?,
        None => df.stages.len().saturating_sub(1),
    };
    let ignore = match fs::read_to_string(opts.context.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(_) => Ignore::default(),
    };
    let mut meta: HashMap<String, String> = HashMap::new();
    for (k, v) in &df.global_args {
        if let Some(v) = opts.build_args.get(k).cloned().or_else(|| v.clone()) {
            meta.insert(k.clone(), v);
        }
    }
    let total: usize = df.stages[..=last].iter().map(|s| s.steps.len() + 1).sum();
    let mut b = Builder {
        store,
        opts,
        out,
        ignore,
        meta,
        step: 0,
        total,
        done: Vec::new(),
        consumed: df.global_args.iter().map(|(k, _)| k.clone()).collect(),
    };
    for stage in &df.stages[..=last] {
        let st = b.stage(stage)?;
        b.done.push((stage.name.clone(), st));
    }
    let (_, fin) = b
        .done
        .pop()
        .ok_or(BuildError::Parse(DockerfileError::NoFrom))?;
    let built = b.commit(&fin).map_err(BuildError::Store)?;
    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .filter(|k| !b.consumed.contains(*k))
        .map(String::as_str)
        .collect();
    if !unused.is_empty() {
        let _ = writeln!(
            b.out,
            "[Warning] One or more build-args [{}] were not consumed",
            unused.join(" ")
        );
    }
    let _ = writeln!(b.out, "Successfully built {}", &built.config.hex()[..12]);
    for t in &opts.tags {
        store.tag(&built.manifest, t).map_err(BuildError::Tag)?;
        let _ = writeln!(b.out, "Successfully tagged {t}");
    }
    Ok(built)
}

struct Builder<'a> {
    store: &'a ImageStore,
    opts: &'a BuildOptions,
    out: &'a mut dyn Write,
    ignore: Ignore,
    meta: HashMap<String, String>,
    step: usize,
    total: usize,
    done: Vec<(Option<String>, State)>,
    /// Build args some ARG declared (Docker warns about the others).
    consumed: std::collections::HashSet<String>,
}

impl Builder<'_> {
    fn created(&self) -> String {
        crate::archive::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.opts.epoch),
        )
    }

    fn stage_by_name(&self, name: &str) -> Option<&State> {
        if let Ok(i) = name.parse::<usize>() {
            return self.done.get(i).map(|(_, s)| s);
        }
        self.done
            .iter()
            .rev()
            .find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|(_, s)| s)
    }

    /// The state of a base: a finished stage, `scratch`, or a local image.
    fn base(&self, name: &str) -> Result<State, StepError> {
        if let Some(s) = self.stage_by_name(name) {
            return Ok(s.clone());
        }
        if name == "scratch" {
            let p = self.store.platform();
            return Ok(State {
                config: json!({
                    "architecture": p.arch, "os": p.os, "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []}, "history": [],
                }),
                cfg: Map::new(),
                layers: Vec::new(),
                chain: Digest::of(b"scratch"),
            });
        }
        let mut found = self.store.resolve(name);
        // Like docker: a base named with a registry host and not here yet is pulled.
        // Hub-style names are not, so a build never reaches out without being told where.
        if let (Err(ImageError::NotFound { .. }), Some(pull)) = (&found, &self.opts.pull) {
            let first = name.split('/').next().unwrap_or("");
            if name.contains('/') && crate::distribution::reference::is_registry_host(first) {
                (pull.0)(name).map_err(|source| StepError::Pull {
                    name: name.to_string(),
                    source,
                })?;
                found = self.store.resolve(name);
            }
        }
        let img = found
            .and_then(|d| self.store.image(&d))
            .map_err(|e| match e {
                ImageError::NotFound { .. } => StepError::UnknownFrom {
                    name: name.to_string(),
                },
                e => e.into(),
            })?;
        manifest::check_platform(&img.config, self.store.platform()).map_err(ImageError::from)?;
        self.store.unpack(&img)?;
        let config: Value =
            serde_json::from_slice(&img.config_bytes).map_err(|source| StepError::Json {
                what: "the base image's config",
                source,
            })?;
        let cfg = config["config"].as_object().cloned().unwrap_or_default();
        Ok(State {
            config,
            cfg,
            layers: img
                .layers
                .iter()
                .map(|l| LayerDesc {
                    blob: l.blob.clone(),
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
                .collect(),
            chain: img.config_digest.clone(),
        })
    }

    fn stage(&mut self, stage: &Stage) -> Result<State, BuildError> {
        let at = |line: usize, text: &str| {
            let text = text.to_string();
            move |source: StepError| BuildError::Step { line, text, source }
        };
        self.step += 1;
        let _ = writeln!(
            self.out,
            "Step {}/{} : FROM {}{}",
            self.step,
            self.total,
            stage.base,
            stage
                .name
                .as_ref()
                .map(|n| format!(" AS {n}"))
                .unwrap_or_default()
        );
        let base_name = dockerfile::expand(stage.line, &stage.base, &self.meta)?;
        let from_text = format!("FROM {}", stage.base);
        let mut st = self.base(&base_name).map_err(at(stage.line, &from_text))?;
        let _ = writeln!(self.out, " ---> {}", &st.chain.hex()[..12]);
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut cmd_set = false;
        for s in &stage.steps {
            self.step += 1;
            let _ = writeln!(self.out, "Step {}/{} : {}", self.step, self.total, s.text);
            self.instruction(&mut st, &mut args, &mut cmd_set, s)
                .map_err(at(s.line, &s.text))?;
        }
        Ok(st)
    }

    fn instruction(
        &mut self,
        st: &mut State,
        args: &mut BTreeMap<String, String>,
        cmd_set: &mut bool,
        s: &dockerfile::Step,
    ) -> Result<(), StepError> {
        let mut vars: HashMap<String, String> =
            args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for e in st.env() {
            if let Some((k, v)) = e.split_once('=') {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        let x = |t: &str| dockerfile::expand(s.line, t, &vars);
        let shell = st
            .get("Shell")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()]);
        let argv = |c: &Command| -> Vec<String> {
            match c {
                Command::Exec(v) => v.clone(),
                Command::Shell(t) => {
                    let mut v = shell.clone();
                    v.push(t.clone());
                    v
                }
            }
        };
        // What identifies this step for the cache: the instruction after expansion.
        let mut key = s.text.clone();
        match &s.instruction {
            Instruction::Arg { name, default } => {
                let d = match default {
                    Some(d) => Some(x(d)?),
                    None => None,
                };
                self.consumed.insert(name.clone());
                let v = self
                    .opts
                    .build_args
                    .get(name)
                    .cloned()
                    .or(d)
                    .or_else(|| self.meta.get(name).cloned());
                key = format!("ARG {name}={}", v.clone().unwrap_or_default());
                if let Some(v) = v {
                    args.insert(name.clone(), v);
                }
            }
            Instruction::Env(kvs) => {
                let mut env = st.env();
                let mut parts = Vec::new();
                for (k, v) in kvs {
                    let v = x(v)?;
                    env.retain(|e| e.split('=').next() != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                    parts.push(format!("{k}={v}"));
                }
                key = format!("ENV {}", parts.join(" "));
                st.cfg().insert("Env".into(), json!(env));
            }
            Instruction::Workdir(w) => {
                let w = x(w)?;
                let cur = st.str("WorkingDir");
                let abs = if w.starts_with('/') {
                    w
                } else {
                    format!(
                        "{}/{w}",
                        if cur.is_empty() {
                            ""
                        } else {
                            cur.trim_end_matches('/')
                        }
                    )
                };
                key = format!("WORKDIR {abs}");
                st.cfg().insert("WorkingDir".into(), json!(abs));
            }
            Instruction::User(u) => {
                let u = x(u)?;
                key = format!("USER {u}");
                st.cfg().insert("User".into(), json!(u));
            }
            Instruction::Cmd(c) => {
                *cmd_set = true;
                st.cfg().insert("Cmd".into(), json!(argv(c)));
            }
            Instruction::Entrypoint(c) => {
                st.cfg().insert("Entrypoint".into(), json!(argv(c)));
                // Docker: an ENTRYPOINT resets a CMD inherited from the base image.
                if !*cmd_set {
                    st.cfg().remove("Cmd");
                }
            }
            Instruction::Expose(ports) => {
                let mut m = st.get("ExposedPorts").cloned().unwrap_or_else(|| json!({}));
                for p in ports {
                    let p = x(p)?;
                    let p = if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    };
                    m[p] = json!({});
                }
                st.cfg().insert("ExposedPorts".into(), m);
            }
            Instruction::Label(kvs) => {
                let mut m = st.get("Labels").cloned().unwrap_or_else(|| json!({}));
                for (k, v) in kvs {
                    m[x(k)?] = json!(x(v)?);
                }
                st.cfg().insert("Labels".into(), m);
            }
            Instruction::Volume(vs) => {
                let mut m = st.get("Volumes").cloned().unwrap_or_else(|| json!({}));
                for v in vs {
                    m[x(v)?] = json!({});
                }
                st.cfg().insert("Volumes".into(), m);
            }
            Instruction::StopSignal(sig) => {
                st.cfg().insert("StopSignal".into(), json!(x(sig)?));
            }
            Instruction::Shell(v) => {
                st.cfg().insert("Shell".into(), json!(v));
            }
            Instruction::Healthcheck(h) => {
                let v = healthcheck::to_config(h)?;
                st.cfg().insert("Healthcheck".into(), v);
            }
            Instruction::Copy {
                add,
                sources,
                dest,
                from,
                chown,
                chmod,
            } => {
                let sources = sources
                    .iter()
                    .map(|s| x(s))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(u) = sources.iter().find(|s| s.contains("://")) {
                    return Err(StepError::RemoteUrl { url: u.clone() });
                }
                let mut dest = x(dest)?;
                if !dest.starts_with('/') {
                    let wd = st.str("WorkingDir");
                    dest = format!("{}/{dest}", wd.trim_end_matches('/'));
                }
                // Docker follows the image's symlinks in the destination (a COPY into
                // /bin/ on a merged-/usr image lands in /usr/bin).
                let trailing = dest.ends_with('/') || dest.ends_with("/.");
                dest = self.resolve_path(st, &dest)?;
                if trailing && !dest.ends_with('/') {
                    dest.push('/');
                }
                let owner = match chown {
                    Some(c) => Some(self.owner(st, &x(c)?)?),
                    None => None,
                };
                let chmod =
                    match chmod {
                        Some(m) => Some(u32::from_str_radix(&x(m)?, 8).map_err(|_| {
                            StepError::BadFlag {
                                flag: "--chmod",
                                value: m.clone(),
                            }
                        })?),
                        None => None,
                    };
                let spec = context::CopySpec {
                    add: *add,
                    sources: &sources,
                    dest: &dest,
                    owner,
                    chmod,
                };
                let mut entries = layer::Entries::default();
                let from_key;
                match from {
                    None => {
                        let src = context::Source {
                            root: &self.opts.context,
                            ignore: Some(&self.ignore),
                        };
                        context::collect(&src, &spec, &mut entries)?;
                        self.keep_existing_dirs(st, &mut entries);
                        from_key = String::new();
                        self.copy_layer(st, &s.text, &entries, &from_key)?
                    }
                    Some(f) => {
                        let f = x(f)?;
                        let src_state = self.base(&f)?;
                        from_key = src_state.chain.to_string();
                        // Read the other stage through a mount of its layers.
                        let key = format!("build-from-{}-{}", std::process::id(), self.step);
                        let snaps = self.store.snapshotter();
                        let mounts = snaps.prepare(&key, &src_state.diff_ids())?;
                        let dir = self.opts.data_dir.join("builds").join(&key);
                        let _cleanup = RemoveSnapshot {
                            store: self.store,
                            key: key.clone(),
                            dir: dir.clone(),
                        };
                        fs::create_dir_all(&dir).map_err(|source| StepError::Io {
                            op: "create",
                            path: dir.clone(),
                            source,
                        })?;
                        let guard = MountGuard::mount(&mounts, &dir)?;
                        let src = context::Source {
                            root: &dir,
                            ignore: None,
                        };
                        let r = context::collect(&src, &spec, &mut entries).and_then(|()| {
                            self.keep_existing_dirs(st, &mut entries);
                            self.copy_layer(st, &s.text, &entries, &from_key)
                        });
                        guard.unmount()?;
                        r?;
                    }
                }
                return Ok(());
            }
            Instruction::Run(c) => {
                let mut env = st.env();
                if !env.iter().any(|e| e.starts_with("PATH=")) {
                    env.insert(
                        0,
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                            .to_string(),
                    );
                }
                // Build args are visible to RUN (and part of its cache key), never
                // stored in the image.
                for (k, v) in args.iter() {
                    if !env.iter().any(|e| e.split('=').next() == Some(k.as_str())) {
                        env.push(format!("{k}={v}"));
                    }
                }
                let argv = argv(c);
                key = format!(
                    "RUN {} {}",
                    serde_json::to_string(&argv).unwrap_or_default(),
                    serde_json::to_string(&env).unwrap_or_default()
                );
                let next = chain(&st.chain, &[&key, &st.str("WorkingDir"), &st.str("User")]);
                if let Some(l) = self.cached(&next)? {
                    let _ = writeln!(self.out, " ---> Using cache");
                    self.push_layer(st, l, &s.text, next);
                    return Ok(());
                }
                let cwd = {
                    let w = st.str("WorkingDir");
                    if w.is_empty() {
                        "/".to_string()
                    } else {
                        w
                    }
                };
                let user = st.str("User");
                let spec = run::RunSpec {
                    argv,
                    env,
                    cwd: &cwd,
                    user: &user,
                };
                let mut desc = None;
                let output = run::run(
                    self.store.snapshotter(),
                    &self.opts.data_dir,
                    &self.opts.runtime_root,
                    &st.diff_ids(),
                    &spec,
                    |entries| {
                        desc = Some(self.store_layer(entries)?);
                        Ok(())
                    },
                )?;
                let _ = self.out.write_all(output.as_bytes());
                if let Some(d) = desc {
                    self.save_cache(&next, &d)?;
                    self.push_layer(st, d, &s.text, next);
                }
                return Ok(());
            }
        }
        // A config-only step.
        st.chain = chain(&st.chain, &[&key]);
        let created = self.created();
        if let Some(h) = st.config["history"].as_array_mut() {
            h.push(json!({"created": created, "created_by": s.text, "empty_layer": true}));
        }
        let _ = writeln!(self.out, " ---> {}", &st.chain.hex()[..12]);
        Ok(())
    }

    /// `--chown=user[:group]`, names resolved in the stage's top-most /etc/passwd.
    fn owner(&self, st: &State, spec: &str) -> Result<(u64, u64), StepError> {
        let snaps = self.store.snapshotter();
        for l in st.layers.iter().rev() {
            let dir = snaps.layer_dir(&l.diff_id);
            if dir.join("etc/passwd").is_file() {
                let (u, g) = run::resolve_user(&dir, spec)?;
                return Ok((u64::from(u), u64::from(g)));
            }
        }
        let (u, g) = run::resolve_user(Path::new("/nonexistent"), spec)?;
        Ok((u64::from(u), u64::from(g)))
    }

    fn copy_layer(
        &mut self,
        st: &mut State,
        text: &str,
        entries: &layer::Entries,
        from_key: &str,
    ) -> Result<(), StepError> {
        let mut w = self.store.content().writer()?;
        entries.write_tar(&mut w, self.opts.epoch)?;
        let info = w.digest_so_far();
        let next = chain(&st.chain, &[text, from_key, &info.digest.to_string()]);
        if !self.opts.no_cache && self.cached(&next)?.is_some() {
            let _ = writeln!(self.out, " ---> Using cache");
        }
        let d = w.commit(None, None)?;
        let desc = LayerDesc {
            blob: d.digest.clone(),
            diff_id: d.digest.clone(),
            size: d.size,
            media_type: manifest::OCI_LAYER.to_string(),
        };
        self.unpack(&desc)?;
        self.save_cache(&next, &desc)?;
        self.push_layer(st, desc, text, next);
        Ok(())
    }

    fn store_layer(&self, entries: &layer::Entries) -> Result<LayerDesc, StepError> {
        let mut w = self.store.content().writer()?;
        entries.write_tar(&mut w, self.opts.epoch)?;
        let d = w.commit(None, None)?;
        let desc = LayerDesc {
            blob: d.digest.clone(),
            diff_id: d.digest,
            size: d.size,
            media_type: manifest::OCI_LAYER.to_string(),
        };
        self.unpack(&desc)?;
        Ok(desc)
    }

    fn unpack(&self, l: &LayerDesc) -> Result<(), StepError> {
        let snaps = self.store.snapshotter();
        if !snaps.has_layer(&l.diff_id)? {
            let mut r = self.store.content().open(&l.blob)?;
            snaps.unpack(&l.diff_id, &mut r)?;
        }
        Ok(())
    }

    fn push_layer(&mut self, st: &mut State, l: LayerDesc, text: &str, next: Digest) {
        let _ = writeln!(self.out, " ---> {}", &l.diff_id.hex()[..12]);
        let created = self.created();
        if let Some(h) = st.config["history"].as_array_mut() {
            h.push(json!({"created": created, "created_by": text}));
        } else {
            st.config["history"] = json!([{"created": created, "created_by": text}]);
        }
        st.layers.push(l);
        st.chain = next;
    }
}

/// Removes a `COPY --from` snapshot and its mount point (after the mount guard).
struct RemoveSnapshot<'a> {
    store: &'a ImageStore,
    key: String,
    dir: PathBuf,
}

impl Drop for RemoveSnapshot<'_> {
    fn drop(&mut self) {
        let _ = self.store.snapshotter().remove(&self.key);
        let _ = fs::remove_dir(&self.dir);
    }
}
