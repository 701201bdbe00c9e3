//! `skiff image …`: the docker-like image commands over `skiff_image::ImageStore`.
//!
//! Output follows `docker image …` (column layout, `Loaded image:` lines, inspect as a
//! JSON array) so habits and scripts carry over. Errors print the whole cause chain and
//! exit 1.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use skiff_image::distribution::{Progress, RemoteRef, Silent};
use skiff_image::reference::NamedRef;
use skiff_image::{archive, build, Image, ImageStore};

/// Where skiff keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/skiff";

#[derive(Debug, Args)]
pub struct ImageCli {
    /// skiff's data directory (images live under DIR/images).
    #[arg(long, global = true, env = "SKIFF_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub registry: crate::registry_client::RegistryOpts,
    #[command(subcommand)]
    pub cmd: ImageCmd,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build an image from a Dockerfile.
    Build(BuildArgs),
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only show image IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show an image's metadata as JSON.
    Inspect {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove image names; content no other image uses is deleted.
    #[command(alias = "rmi")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Delete blobs and unpacked layers that no image or container uses.
    Prune {
        /// Accepted for docker compatibility (skiff never asks).
        #[arg(short, long)]
        force: bool,
        /// Accepted for docker compatibility: skiff keeps no dangling images.
        #[arg(short, long)]
        all: bool,
    },
    /// Show how an image's layers were made.
    History { reference: String },
    /// Create a one-layer image from a root filesystem tarball.
    Import { file: PathBuf, reference: String },
    /// Load images from a docker-archive or oci-archive tarball.
    Load {
        #[arg(short, long)]
        input: PathBuf,
        /// Print nothing but errors.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Download an image from a registry: REGISTRY/REPO[:TAG|@DIGEST].
    Pull {
        reference: String,
        /// Print only the image name.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Upload an image to a registry: REGISTRY/REPO[:TAG] (tag it so first).
    Push {
        reference: String,
        /// Push the local image SOURCE under REFERENCE instead of the image named REFERENCE.
        #[arg(long)]
        from: Option<String>,
        /// Print only the manifest digest.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write images to a tarball readable as docker-archive and as oci-archive.
    Save {
        #[arg(short, long)]
        output: PathBuf,
        #[arg(required = true)]
        references: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name (and optionally tag) of the image: NAME[:TAG]. Repeatable.
    #[arg(short, long = "tag")]
    pub tag: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A build-time variable: KEY=VALUE (or KEY to pass this process's value).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build only up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Where the runtime keeps the state of RUN containers.
    #[arg(long, env = "SKIFF_RUNTIME_ROOT", default_value = skiff_runtime::state::DEFAULT_ROOT, hide = true)]
    pub runtime_root: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
}

fn build(
    store: &ImageStore,
    data_dir: &Path,
    registry: &crate::registry_client::RegistryOpts,
    a: BuildArgs,
    out: &mut impl Write,
) -> Result<()> {
    let mut build_args = std::collections::BTreeMap::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.insert(kv.clone(), v);
                }
            }
        }
    }
    let tags = a
        .tag
        .iter()
        .map(|t| NamedRef::parse(t).with_context(|| format!("-t {t}")))
        .collect::<Result<Vec<_>>>()?;
    // Reproducible builds: every timestamp is SOURCE_DATE_EPOCH (default 0).
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        Err(_) => 0,
    };
    let opts = build::BuildOptions {
        context: a.context,
        dockerfile: a.file,
        tags,
        build_args,
        target: a.target,
        no_cache: a.no_cache,
        epoch,
        data_dir: data_dir.to_path_buf(),
        runtime_root: a.runtime_root,
        pull: Some(pull_hook(data_dir, registry)),
    };
    build::build(store, &opts, out)?;
    Ok(())
}

pub fn main(cli: ImageCli) -> i32 {
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff image: {e:#}");
            1
        }
    }
}

fn open(data_dir: &Path) -> Result<ImageStore> {
    ImageStore::open(data_dir)
        .with_context(|| format!("opening the image store in {}", data_dir.display()))
}

fn run(cli: ImageCli) -> Result<()> {
    let store = open(&cli.data_dir)?;
    let mut out = std::io::stdout().lock();
    match cli.cmd {
        ImageCmd::Build(a) => build(&store, &cli.data_dir, &cli.registry, a, &mut out),
        ImageCmd::Pull { reference, quiet } => {
            let store = std::sync::Arc::new(store);
            pull(&store, &cli.registry, &reference, quiet, &mut out)
        }
        ImageCmd::Push {
            reference,
            from,
            quiet,
        } => push(store, &cli.registry, &reference, from, quiet, &mut out),
        ImageCmd::Ls { quiet } => ls(&store, quiet, &mut out),
        ImageCmd::Inspect { references } => {
            let mut all = Vec::new();
            for r in &references {
                let top = store.resolve(r)?;
                let img = store.image(&top)?;
                all.push(inspect(&store, &img)?);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            Ok(())
        }
        ImageCmd::Rm { references } => {
            for r in &references {
                for name in store.untag(r)? {
                    writeln!(out, "Untagged: {name}")?;
                }
            }
            let report = store.prune()?;
            for d in &report.blobs {
                writeln!(out, "Deleted: {d}")?;
            }
            Ok(())
        }
        ImageCmd::Tag { source, target } => {
            let top = store.resolve(&source)?;
            let name = NamedRef::parse(&target)?;
            store.tag(&top, &name)?;
            Ok(())
        }
        ImageCmd::Prune { .. } => {
            let report = store.prune()?;
            for d in &report.blobs {
                writeln!(out, "Deleted: {d}")?;
            }
            for d in &report.layers {
                writeln!(out, "Deleted layer: {d}")?;
            }
            writeln!(out, "Total reclaimed space: {}", human_size(report.bytes))?;
            Ok(())
        }
        ImageCmd::History { reference } => history(&store, &reference, &mut out),
        ImageCmd::Import { file, reference } => {
            let name = NamedRef::parse(&reference)?;
            let created = archive::rfc3339(std::time::SystemTime::now());
            let top = archive::import(&store, &file, &name, &created)?;
            let img = store.image(&top)?;
            writeln!(out, "{}", img.config_digest)?;
            Ok(())
        }
        ImageCmd::Load { input, quiet } => {
            let loaded = archive::load(&store, &input)?;
            if !quiet {
                for n in &loaded.names {
                    writeln!(out, "Loaded image: {n}")?;
                }
                if loaded.names.is_empty() {
                    for d in &loaded.digests {
                        writeln!(out, "Loaded image ID: {d}")?;
                    }
                }
            }
            Ok(())
        }
        ImageCmd::Save { output, references } => {
            if output.as_os_str() == "-" {
                bail!("writing to stdout is not supported; give a file with -o");
            }
            archive::save(&store, &references, &output)?;
            Ok(())
        }
    }
}

fn ls(store: &ImageStore, quiet: bool, out: &mut impl Write) -> Result<()> {
    let rows = store.list()?;
    if quiet {
        for (_, img) in rows {
            if let Ok(img) = img {
                writeln!(out, "{}", img.config_digest.short())?;
            }
        }
        return Ok(());
    }
    let mut table = vec![[
        "REPOSITORY".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "CREATED".to_string(),
        "SIZE".to_string(),
    ]];
    for (name, img) in rows {
        let (repo, tag) = name.rsplit_once(':').unwrap_or((name.as_str(), ""));
        let (id, created, size) = match img {
            Ok(img) => (
                img.config_digest.short().to_string(),
                img.config.created().clone().unwrap_or_default(),
                human_size(img.size()),
            ),
            Err(e) => (format!("<{e}>"), String::new(), String::new()),
        };
        table.push([repo.to_string(), tag.to_string(), id, created, size]);
    }
    print_table(out, &table)
}

fn print_table<const N: usize>(out: &mut impl Write, rows: &[[String; N]]) -> Result<()> {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn inspect(store: &ImageStore, img: &Image) -> Result<serde_json::Value> {
    let config: serde_json::Value = serde_json::from_slice(&img.config_bytes)?;
    let names = store.names_by_digest()?;
    let tags = names.get(&img.top).cloned().unwrap_or_default();
    Ok(json!({
        "Id": img.config_digest.to_string(),
        "RepoTags": tags,
        "Manifest": {
            "Digest": img.manifest_digest.to_string(),
            "MediaType": img.manifest_media_type,
        },
        "Index": if img.top != img.manifest_digest { json!(img.top.to_string()) } else { json!(null) },
        "Created": config.get("created"),
        "Author": config.get("author"),
        "Architecture": config.get("architecture"),
        "Variant": config.get("variant"),
        "Os": config.get("os"),
        "Config": config.get("config"),
        "Size": img.size(),
        "RootFS": {
            "Type": "layers",
            "Layers": img.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "Layers": img.layers.iter().map(|l| json!({
            "Digest": l.blob.to_string(), "MediaType": l.media_type, "Size": l.size,
        })).collect::<Vec<_>>(),
    }))
}

fn history(store: &ImageStore, reference: &str, out: &mut impl Write) -> Result<()> {
    let img = store.image(&store.resolve(reference)?)?;
    let mut table = vec![[
        "IMAGE".to_string(),
        "CREATED".to_string(),
        "CREATED BY".to_string(),
        "SIZE".to_string(),
        "COMMENT".to_string(),
    ]];
    // History runs oldest first and marks entries that made no layer; layers are
    // matched to the others in order. Docker prints newest first.
    let mut layers = img.layers.iter();
    let mut rows = Vec::new();
    let entries = img.config.history().clone().unwrap_or_default();
    for h in &entries {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            layers.next().map(|l| l.size).unwrap_or(0)
        };
        rows.push([
            "<missing>".to_string(),
            h.created().clone().unwrap_or_default(),
            h.created_by().clone().unwrap_or_default(),
            human_size(size),
            h.comment().clone().unwrap_or_default(),
        ]);
    }
    // Layers without history entries (e.g. hand-made images) still get a line each.
    for l in layers {
        rows.push([
            "<missing>".to_string(),
            String::new(),
            String::new(),
            human_size(l.size),
            String::new(),
        ]);
    }
    if let Some(first) = rows.last_mut() {
        first[0] = img.config_digest.short().to_string();
    }
    rows.reverse();
    table.extend(rows);
    print_table(out, &table)
}

/// Sizes as docker prints them (decimal units).
pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.3}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.3}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.3}kB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
}

fn pull(
    store: &std::sync::Arc<ImageStore>,
    registry: &crate::registry_client::RegistryOpts,
    reference: &str,
    quiet: bool,
    out: &mut impl Write,
) -> Result<()> {
    let r = RemoteRef::parse(reference)?;
    let client = registry.client();
    let progress: std::sync::Arc<dyn Progress> = if quiet {
        std::sync::Arc::new(Silent)
    } else {
        crate::registry_client::progress()
    };
    if !quiet {
        writeln!(out, "Pulling {r}")?;
    }
    let pulled = crate::registry_client::runtime()?.block_on(client.pull(store, &r, &progress))?;
    let name = pulled.name.clone().unwrap_or_else(|| r.to_string());
    if quiet {
        writeln!(out, "{name}")?;
        return Ok(());
    }
    writeln!(out, "Digest: {}", pulled.top)?;
    if pulled.downloaded > 0 {
        writeln!(out, "Status: Downloaded newer image for {name}")?;
    } else {
        writeln!(out, "Status: Image is up to date for {name}")?;
    }
    writeln!(out, "{name}")?;
    Ok(())
}

fn push(
    store: ImageStore,
    registry: &crate::registry_client::RegistryOpts,
    reference: &str,
    from: Option<String>,
    quiet: bool,
    out: &mut impl Write,
) -> Result<()> {
    let r = RemoteRef::parse(reference)?;
    let local = from.unwrap_or_else(|| reference.to_string());
    let client = registry.client();
    let progress: std::sync::Arc<dyn Progress> = if quiet {
        std::sync::Arc::new(Silent)
    } else {
        crate::registry_client::progress()
    };
    if !quiet {
        writeln!(
            out,
            "The push refers to repository [{}/{}]",
            r.registry, r.repository
        )?;
    }
    let store = std::sync::Arc::new(store);
    let pushed =
        crate::registry_client::runtime()?.block_on(client.push(&store, &local, &r, &progress))?;
    if quiet {
        writeln!(out, "{}", pushed.manifest)?;
    } else {
        writeln!(
            out,
            "{}: digest: {} size: {}",
            r.tag.as_deref().unwrap_or("latest"),
            pushed.manifest,
            pushed.size
        )?;
    }
    Ok(())
}

/// `FROM registry/repo:tag` in builds pulls through the same client as `skiff image pull`.
fn pull_hook(data_dir: &Path, registry: &crate::registry_client::RegistryOpts) -> build::PullHook {
    let data_dir = data_dir.to_path_buf();
    let registry = registry.clone();
    build::PullHook(std::sync::Arc::new(move |name: &str| {
        let store = std::sync::Arc::new(ImageStore::open(&data_dir)?);
        let mut err = std::io::stderr();
        pull(&store, &registry, name, false, &mut err).map_err(|e| format!("{e:#}").into())
    }))
}
