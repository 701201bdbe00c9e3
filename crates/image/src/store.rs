//! The image store: content store + reference store + snapshotter under one data dir.
//!
//! Layout under `<data-dir>/images/`: `content/` ([`FsContentStore`]), `refs.json`
//! ([`RefStore`]), `snapshots/` ([`OverlaySnapshotter`]) and `lock`. Every operation that
//! makes blobs reachable or unreachable (load, import, tag, rm, prune) holds an exclusive
//! `flock` on `lock`, so prune never deletes a blob another process is about to name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::content::{ContentError, ContentStore, FsContentStore};
use crate::digest::Digest;
use crate::error::Category;
use crate::manifest::{self, FormatError, Platform, TopLevel};
use crate::reference::{NamedRef, RefError, RefStore};
use crate::snapshot::{Mount, OverlaySnapshotter, SnapshotError, Snapshotter};

/// Errors of image-level operations.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference:?} not found; see `skiff image ls`")]
    NotFound { reference: String },
    #[error("image reference {reference:?} is ambiguous: it matches {matches}")]
    Ambiguous { reference: String, matches: String },
    #[error("image {reference:?} is used by snapshot {key:?}; remove that container first")]
    InUse { reference: String, key: String },
    #[error(transparent)]
    Ref(#[from] RefError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("image store: cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub fn category(&self) -> Category {
        match self {
            Self::NotFound { .. } => Category::NotFound,
            Self::Ambiguous { .. } => Category::Invalid,
            Self::InUse { .. } => Category::Conflict,
            Self::Ref(e) => e.category(),
            Self::Content(e) => e.category(),
            Self::Format(e) => e.category(),
            Self::Snapshot(e) => e.category(),
            Self::Io { .. } => Category::Unavailable,
        }
    }
}

/// One layer of a resolved image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Digest of the blob as stored (compressed or not).
    pub blob: Digest,
    pub size: u64,
    pub media_type: String,
    /// Digest of the uncompressed tar (the snapshot's name).
    pub diff_id: Digest,
}

/// An image resolved to one platform's manifest.
#[derive(Debug, Clone)]
pub struct Image {
    /// What the reference names: a manifest, or an index the manifest was picked from.
    pub top: Digest,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    pub manifest: ImageManifest,
    /// The image ID, as Docker shows it.
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Sum of the stored layer blobs.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// Content store, references and snapshots of one data dir.
pub struct ImageStore {
    root: PathBuf,
    content: FsContentStore,
    refs: RefStore,
    snapshots: OverlaySnapshotter,
    platform: Platform,
}

/// An exclusive hold on the store's lock file; released on drop.
pub struct StoreLock {
    _lock: Flock<File>,
}

/// A name and its image, or why the image cannot be read here.
pub type Listed = (String, Result<Image, ImageError>);

/// What prune removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub blobs: Vec<Digest>,
    pub bytes: u64,
    pub layers: Vec<Digest>,
}

impl ImageStore {
    /// Opens (creating) the store under `<data_dir>/images`, for the host's platform.
    pub fn open(data_dir: &Path) -> Result<Self, ImageError> {
        Self::open_for(data_dir, Platform::host())
    }

    /// Opens the store for a given platform (tests use this to simulate other hosts).
    pub fn open_for(data_dir: &Path, platform: Platform) -> Result<Self, ImageError> {
        let root = data_dir.join("images");
        fs::create_dir_all(&root).map_err(|source| ImageError::Io {
            op: "create",
            path: root.clone(),
            source,
        })?;
        Ok(Self {
            content: FsContentStore::open(root.join("content"))?,
            refs: RefStore::new(root.join("refs.json")),
            snapshots: OverlaySnapshotter::open(root.join("snapshots"))?,
            root,
            platform,
        })
    }

    pub fn content(&self) -> &FsContentStore {
        &self.content
    }

    pub fn snapshotter(&self) -> &OverlaySnapshotter {
        &self.snapshots
    }

    pub fn refs(&self) -> &RefStore {
        &self.refs
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Takes the store's exclusive lock (blocking until other writers finish).
    pub fn lock(&self) -> Result<StoreLock, ImageError> {
        self.flock("lock", FlockArg::LockExclusive)
    }

    /// Held (shared) by a build from start to tag: the blobs and layers it writes are
    /// referenced by no name until it tags the image, so prune, which takes this lock
    /// exclusively (before the store lock), waits for builds in progress instead of
    /// deleting their work. Builds do not wait for each other, nor loads for builds.
    pub fn build_lease(&self) -> Result<StoreLock, ImageError> {
        self.flock("build.lock", FlockArg::LockShared)
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<StoreLock, ImageError> {
        let path = self.root.join(name);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ImageError::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
        let lock = Flock::lock(f, arg).map_err(|(_, e)| ImageError::Io {
            op: "lock",
            path,
            source: e.into(),
        })?;
        Ok(StoreLock { _lock: lock })
    }

    /// Resolves a user's reference to the digest it names: `name[:tag]`, a full digest
    /// (`sha256:…`, manifest or image ID), or a unique prefix of an image ID.
    pub fn resolve(&self, reference: &str) -> Result<Digest, ImageError> {
        let not_found = || ImageError::NotFound {
            reference: reference.to_string(),
        };
        if let Some((_, d)) = reference.split_once('@') {
            let d = Digest::parse(d).map_err(|_| not_found())?;
            return self.content.stat(&d)?.map(|_| d).ok_or_else(not_found);
        }
        if let Ok(d) = Digest::parse(reference) {
            return match self.by_id(d.hex(), reference) {
                // An image loaded without a name is reachable by its manifest or index
                // digest (what `load` prints) until prune collects it.
                Err(ImageError::NotFound { .. }) if self.is_top(&d) => Ok(d),
                other => other,
            };
        }
        if let Ok(r) = NamedRef::parse(reference) {
            if let Some(d) = self.refs.get(&r)? {
                return Ok(d);
            }
        }
        let hex_prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex_prefix.len() >= 4 && hex_prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.by_id(hex_prefix, reference);
        }
        Err(not_found())
    }

    /// Whether `d` is a stored manifest or index.
    fn is_top(&self, d: &Digest) -> bool {
        self.content
            .read_all(d)
            .ok()
            .is_some_and(|b| manifest::parse_top(&b, None, d).is_ok())
    }

    /// Finds the stored image whose top digest or image ID starts with `prefix`.
    fn by_id(&self, prefix: &str, reference: &str) -> Result<Digest, ImageError> {
        let mut hits = BTreeSet::new();
        for top in self.refs.all()?.values() {
            if top.hex().starts_with(prefix) {
                hits.insert(top.clone());
                continue;
            }
            if let Ok(img) = self.image(top) {
                if img.config_digest.hex().starts_with(prefix)
                    || img.manifest_digest.hex().starts_with(prefix)
                {
                    hits.insert(top.clone());
                }
            }
        }
        match hits.len() {
            0 => Err(ImageError::NotFound {
                reference: reference.to_string(),
            }),
            1 => Ok(hits
                .into_iter()
                .next()
                .ok_or_else(|| ImageError::NotFound {
                    reference: reference.to_string(),
                })?),
            _ => Err(ImageError::Ambiguous {
                reference: reference.to_string(),
                matches: hits
                    .iter()
                    .map(|d| d.short().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Loads the image a digest names, picking this host's platform from an index.
    pub fn image(&self, top: &Digest) -> Result<Image, ImageError> {
        let mut digest = top.clone();
        let mut hint: Option<String> = None;
        for _ in 0..4 {
            let bytes = self.content.read_all(&digest)?;
            match manifest::parse_top(&bytes, hint.as_deref(), &digest)? {
                TopLevel::Index(idx) => {
                    let d = manifest::select_from_index(&idx, &self.platform, &digest)?;
                    hint = Some(d.media_type().to_string());
                    digest = manifest::descriptor_digest(d, "index entry")?;
                }
                TopLevel::Manifest(m) => {
                    let media_type = m
                        .media_type()
                        .as_ref()
                        .map(|t| t.to_string())
                        .or(hint)
                        .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string());
                    return self.with_manifest(top, digest, media_type, bytes.len() as u64, *m);
                }
            }
        }
        Err(FormatError::TooDeep {
            digest: top.to_string(),
            max: 4,
        }
        .into())
    }

    fn with_manifest(
        &self,
        top: &Digest,
        manifest_digest: Digest,
        manifest_media_type: String,
        manifest_size: u64,
        m: ImageManifest,
    ) -> Result<Image, ImageError> {
        let config_digest = manifest::descriptor_digest(m.config(), "config")?;
        let config_bytes = self.content.read_all(&config_digest)?;
        let config = manifest::parse_config(&config_bytes, &config_digest)?;
        let diff_ids = manifest::diff_ids(&config, &config_digest)?;
        if diff_ids.len() != m.layers().len() {
            return Err(FormatError::LayerCount {
                digest: config_digest.to_string(),
                diff_ids: diff_ids.len(),
                layers: m.layers().len(),
            }
            .into());
        }
        let layers = m
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(l, diff_id)| {
                Ok(Layer {
                    blob: manifest::descriptor_digest(l, "layer")?,
                    size: l.size(),
                    media_type: l.media_type().to_string(),
                    diff_id,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        Ok(Image {
            top: top.clone(),
            manifest_digest,
            manifest_media_type,
            manifest_size,
            manifest: m,
            config_digest,
            config,
            config_bytes,
            layers,
        })
    }

    /// Every tagged image: `(name:tag, image)`; images whose metadata cannot be read
    /// (e.g. an index without this platform) are listed with the error.
    pub fn list(&self) -> Result<Vec<Listed>, ImageError> {
        Ok(self
            .refs
            .all()?
            .into_iter()
            .map(|(name, d)| {
                let img = self.image(&d);
                (name, img)
            })
            .collect())
    }

    /// Names `top` as `name` (replacing what `name` named before).
    pub fn tag(&self, top: &Digest, name: &NamedRef) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let key = name.to_string();
        self.refs.update(|m| {
            m.insert(key, top.clone());
        })?;
        Ok(())
    }

    /// Removes a name; when `reference` is a digest or ID, removes every name of that
    /// image. Content is reclaimed by [`ImageStore::prune`]. Returns the removed names.
    pub fn untag(&self, reference: &str) -> Result<Vec<String>, ImageError> {
        let _lock = self.lock()?;
        let all = self.refs.all()?;
        let named = NamedRef::parse(reference)
            .ok()
            .map(|r| r.to_string())
            .filter(|k| all.contains_key(k));
        let removed: Vec<String> = match named {
            Some(k) => vec![k],
            None => {
                let d = self.resolve(reference)?;
                all.iter()
                    .filter(|(_, v)| **v == d)
                    .map(|(k, _)| k.clone())
                    .collect()
            }
        };
        if removed.is_empty() {
            return Err(ImageError::NotFound {
                reference: reference.to_string(),
            });
        }
        self.refs.update(|m| {
            for k in &removed {
                m.remove(k);
            }
        })?;
        Ok(removed)
    }

    /// Blobs reachable from `top`: itself, index children that are present, their
    /// configs and layers.
    fn reachable(
        &self,
        top: &Digest,
        out: &mut BTreeSet<Digest>,
        depth: usize,
    ) -> Result<(), ImageError> {
        if depth > 4 || !out.insert(top.clone()) {
            return Ok(());
        }
        let bytes = match self.content.read_all(top) {
            Ok(b) => b,
            // A partial multi-platform index keeps only what was loaded.
            Err(ContentError::NotFound { .. }) if depth > 0 => {
                out.remove(top);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        match manifest::parse_top(&bytes, None, top)? {
            TopLevel::Index(idx) => {
                for m in idx.manifests() {
                    let d = manifest::descriptor_digest(m, "index entry")?;
                    self.reachable(&d, out, depth + 1)?;
                }
            }
            TopLevel::Manifest(m) => {
                out.insert(manifest::descriptor_digest(m.config(), "config")?);
                for l in m.layers() {
                    out.insert(manifest::descriptor_digest(l, "layer")?);
                }
            }
        }
        Ok(())
    }

    /// Diff IDs of every image reachable from the references (host platform only:
    /// other platforms' layers are never unpacked here).
    fn used_layers(&self) -> Result<BTreeSet<Digest>, ImageError> {
        let mut used = BTreeSet::new();
        for top in self.refs.all()?.values() {
            if let Ok(img) = self.image(top) {
                used.extend(img.layers.into_iter().map(|l| l.diff_id));
            }
        }
        for (_, layers) in self.snapshots.active()? {
            used.extend(layers);
        }
        Ok(used)
    }

    /// Removes blobs no reference reaches and unpacked layers no image or container uses.
    pub fn prune(&self) -> Result<PruneReport, ImageError> {
        // Builds first, then the store lock: the order every holder of both uses.
        let _builds = self.flock("build.lock", FlockArg::LockExclusive)?;
        let _lock = self.lock()?;
        let mut keep = BTreeSet::new();
        for top in self.refs.all()?.values() {
            self.reachable(top, &mut keep, 0)?;
        }
        let mut report = PruneReport::default();
        for d in self.content.list()? {
            if !keep.contains(&d) {
                report.bytes += self.content.stat(&d)?.unwrap_or(0);
                if self.content.delete(&d)? {
                    report.blobs.push(d);
                }
            }
        }
        let used = self.used_layers()?;
        for l in self.snapshots.layers()? {
            if !used.contains(&l) && self.snapshots.remove_layer(&l)? {
                report.layers.push(l);
            }
        }
        // Staging files this old belong to writers that died.
        self.content
            .clean_ingest(std::time::Duration::from_secs(24 * 3600))?;
        Ok(report)
    }

    /// Unpacks the image's missing layers (verifying each against its diff ID), each on
    /// its own thread: every layer goes to its own directory. A layer that unpacked
    /// while another failed stays: it is complete and verified, and the next run uses it.
    pub fn unpack(&self, img: &Image) -> Result<(), ImageError> {
        let mut missing = Vec::new();
        for l in &img.layers {
            if !missing.iter().any(|m: &&Layer| m.diff_id == l.diff_id)
                && !self.snapshots.has_layer(&l.diff_id)?
            {
                missing.push(l);
            }
        }
        let results = crate::parallel::run(missing, |l| -> Result<(), ImageError> {
            let mut r = self.content.open(&l.blob)?;
            self.snapshots.unpack(&l.diff_id, &mut r)?;
            Ok(())
        });
        results.into_iter().flatten().collect()
    }

    /// Checks the platform, unpacks the layers and prepares snapshot `key`; returns the
    /// mounts of the container's root filesystem.
    pub fn prepare_rootfs(&self, img: &Image, key: &str) -> Result<Vec<Mount>, ImageError> {
        manifest::check_platform(&img.config, &self.platform)?;
        self.unpack(img)?;
        let ids: Vec<Digest> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
        Ok(self.snapshots.prepare(key, &ids)?)
    }

    /// Every name of each top digest.
    pub fn names_by_digest(&self) -> Result<BTreeMap<Digest, Vec<String>>, ImageError> {
        let mut out: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (k, v) in self.refs.all()? {
            out.entry(v).or_default().push(k);
        }
        Ok(out)
    }
}
