//! Image archives: `load` (docker-archive as `docker save` writes it, legacy or OCI
//! flavoured, and oci-archive), `save` (one tarball that is both a docker-archive and an
//! OCI image layout, as Docker 25+ writes), and `import` of a root filesystem tarball.
//!
//! Contract: an archive is read completely, every blob is staged and verified (digests,
//! sizes, each layer's diff ID, and layer member names that would escape the root)
//! before anything is committed; a corrupt, truncated or unsafe archive leaves the store
//! exactly as it was. Commit (blobs, then names) happens under the store lock. Layers
//! of images for this host are unpacked into the snapshotter during verification (so
//! each layer is read once), and removed again if the load fails.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::ImageIndex;
use serde_json::json;

use crate::content::{BlobWriter, ContentError, ContentStore};
use crate::digest::Digest;
use crate::error::Category;
use crate::manifest::{self, Compression, FormatError, TopLevel};
use crate::parallel;
use crate::reference::{NamedRef, RefError};
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::store::{ImageError, ImageStore};
use crate::unpack::{scan_layer, UnpackError};

/// Archive members kept in memory (manifests, configs, indexes) are at most this big.
const SMALL: u64 = 4 << 20;

/// Errors of load, save and import.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{file}: archive is corrupt or truncated")]
    Corrupt {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file}: member {member:?} escapes the archive root; refusing it")]
    UnsafeMember { file: PathBuf, member: String },
    #[error("{file}: neither index.json (oci-archive) nor manifest.json (docker-archive) found; is this an image archive?")]
    UnknownFormat { file: PathBuf },
    #[error("{file}: {member} is missing from the archive")]
    Missing { file: PathBuf, member: String },
    #[error("{file}: {member} is not valid JSON of the expected shape")]
    BadJson {
        file: PathBuf,
        member: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: blob {member} does not match its descriptor: expected {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)")]
    BlobMismatch {
        file: PathBuf,
        member: String,
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
    #[error("{file}: layer {member}")]
    Layer {
        file: PathBuf,
        member: String,
        #[source]
        source: UnpackError,
    },
    #[error("{file}: layer {member} has diff ID {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        file: PathBuf,
        member: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{file}: config {config} lists {diff_ids} layers but {layers} are given")]
    LayerCount {
        file: PathBuf,
        config: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("{file}: bad image name {name:?}")]
    BadName {
        file: PathBuf,
        name: String,
        #[source]
        source: RefError,
    },
    #[error("{file}")]
    Format {
        file: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    pub fn category(&self) -> Category {
        match self {
            Self::Image(e) => e.category(),
            Self::Content(e) => e.category(),
            Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Category::NotFound
            }
            Self::Io { .. } => Category::Unavailable,
            _ => Category::Invalid,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What a load added.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `name:tag` of each named image.
    pub names: Vec<String>,
    /// Top digests (manifest or index) of every image, named or not.
    pub digests: Vec<Digest>,
}

/// Lexically normalizes an archive member path; `None` if it escapes the root.
fn normalize(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Everything read from an archive, staged but not committed.
struct Staged<'s> {
    file: PathBuf,
    blobs: HashMap<String, Box<dyn BlobWriter + 's>>,
    small: HashMap<String, Vec<u8>>,
    links: HashMap<String, String>,
    /// Layer blobs already checked: digest -> (diff ID, compression).
    scanned: HashMap<Digest, (Digest, Compression)>,
    /// Blobs to commit: digest -> (member, size).
    commit: BTreeMap<Digest, (String, u64)>,
    /// Generated documents to store (legacy docker manifests).
    generated: Vec<Vec<u8>>,
    store: &'s ImageStore,
    /// Layers this load unpacked into the snapshotter; removed again unless committed.
    unpacked: Vec<Digest>,
    committed: bool,
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.committed {
            for d in &self.unpacked {
                let _ = self.store.snapshotter().remove_layer(d);
            }
        }
    }
}

impl<'s> Staged<'s> {
    fn read(store: &'s ImageStore, file: &Path) -> Result<Self, ArchiveError> {
        let f = File::open(file).map_err(io_err("open", file))?;
        let corrupt = |source| ArchiveError::Corrupt {
            file: file.to_path_buf(),
            source,
        };
        // `docker load` also accepts a compressed archive.
        let (_, plain) = manifest::decompress(f).map_err(corrupt)?;
        let mut ar = tar::Archive::new(plain);
        let mut st = Staged {
            file: file.to_path_buf(),
            blobs: HashMap::new(),
            small: HashMap::new(),
            links: HashMap::new(),
            scanned: HashMap::new(),
            commit: BTreeMap::new(),
            generated: Vec::new(),
            store,
            unpacked: Vec::new(),
            committed: false,
        };
        for e in ar.entries().map_err(corrupt)? {
            let mut e = e.map_err(corrupt)?;
            let raw = e.path().map_err(corrupt)?.into_owned();
            let unsafe_member = || ArchiveError::UnsafeMember {
                file: file.to_path_buf(),
                member: raw.display().to_string(),
            };
            if raw.components().any(|c| c == Component::ParentDir) {
                return Err(unsafe_member());
            }
            let Some(name) = normalize(&raw) else {
                return Err(unsafe_member());
            };
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut w = store.content().writer()?;
                    let size = e.header().size().map_err(corrupt)?;
                    let mut keep = Vec::new();
                    if size <= SMALL {
                        e.read_to_end(&mut keep).map_err(corrupt)?;
                        w.write_all(&keep).map_err(io_err("stage", file))?;
                        st.small.insert(name.clone(), keep);
                    } else {
                        io::copy(&mut e, &mut w).map_err(corrupt)?;
                    }
                    st.blobs.insert(name, w);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = e
                        .link_name()
                        .map_err(corrupt)?
                        .map(|l| l.into_owned())
                        .unwrap_or_default();
                    // Symlinks are relative to their directory, hard links to the root.
                    let base = if e.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&name)
                            .parent()
                            .unwrap_or(Path::new(""))
                            .join(&target)
                    } else {
                        target
                    };
                    let resolved = normalize(&base).ok_or_else(unsafe_member)?;
                    st.links.insert(name, resolved);
                }
                _ => {}
            }
        }
        Ok(st)
    }

    fn resolve(&self, member: &str) -> String {
        let mut m = member.trim_start_matches("./").to_string();
        for _ in 0..8 {
            match self.links.get(&m) {
                Some(t) => m = t.clone(),
                None => break,
            }
        }
        m
    }

    fn missing(&self, member: &str) -> ArchiveError {
        ArchiveError::Missing {
            file: self.file.clone(),
            member: member.to_string(),
        }
    }

    fn bad_json(&self, member: &str, source: serde_json::Error) -> ArchiveError {
        ArchiveError::BadJson {
            file: self.file.clone(),
            member: member.to_string(),
            source,
        }
    }

    fn small(&self, member: &str) -> Result<&[u8], ArchiveError> {
        let m = self.resolve(member);
        self.small
            .get(&m)
            .map(Vec::as_slice)
            .ok_or_else(|| self.missing(member))
    }

    /// Checks that `member` holds exactly `expected` and marks it for commit.
    fn verify(
        &mut self,
        member: &str,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<(), ArchiveError> {
        let m = self.resolve(member);
        let w = self.blobs.get(&m).ok_or_else(|| self.missing(member))?;
        let got = w.digest_so_far();
        if &got.digest != expected || size.is_some_and(|s| s != got.size) {
            return Err(ArchiveError::BlobMismatch {
                file: self.file.clone(),
                member: member.to_string(),
                expected: expected.clone(),
                expected_size: size.unwrap_or(got.size),
                actual: got.digest,
                actual_size: got.size,
            });
        }
        self.commit.insert(expected.clone(), (m, got.size));
        Ok(())
    }

    /// Digest and size of a member as staged.
    fn digest_of(&self, member: &str) -> Result<(Digest, u64), ArchiveError> {
        let m = self.resolve(member);
        let w = self.blobs.get(&m).ok_or_else(|| self.missing(member))?;
        let i = w.digest_so_far();
        Ok((i.digest, i.size))
    }

    /// Checks staged layers (names, diff IDs), each on its own thread; afterwards each
    /// layer's blob is in `scanned` with its diff ID and compression.
    ///
    /// A layer of an image for this host is unpacked into the snapshotter right away:
    /// that reads and verifies it once instead of twice (scan now, unpack at the first
    /// run). Layers unpacked here are removed again if the load fails (see `Drop`), and
    /// so are the ones that finished while another layer of the same image failed.
    fn check_layers(&mut self, jobs: &[LayerJob]) -> Result<(), ArchiveError> {
        let snapshots = self.store.snapshotter();
        // Readers are opened here, one writer borrowed at a time; they are independent
        // of their writers, so the threads below own them.
        let mut work = Vec::new();
        for job in jobs {
            let done = self
                .scanned
                .get(&job.blob)
                .is_some_and(|(d, _)| d == &job.diff_id);
            let queued = work.iter().any(|(j, ..): &(&LayerJob, _, _, _)| {
                j.blob == job.blob && j.diff_id == job.diff_id
            });
            if done || queued {
                continue;
            }
            let m = self.resolve(&job.member);
            let w = self
                .blobs
                .get_mut(&m)
                .ok_or_else(|| ArchiveError::Missing {
                    file: self.file.clone(),
                    member: job.member.clone(),
                })?;
            let mut head = Vec::with_capacity(4);
            w.read_staged()?
                .take(4)
                .read_to_end(&mut head)
                .map_err(|source| ArchiveError::Layer {
                    file: self.file.clone(),
                    member: job.member.clone(),
                    source: UnpackError::Corrupt { entries: 0, source },
                })?;
            let unpack = job.unpack
                && !snapshots
                    .has_layer(&job.diff_id)
                    .map_err(ImageError::from)?;
            work.push((job, Compression::sniff(&head), unpack, w.read_staged()?));
        }
        let file = &self.file;
        let results = parallel::run(work, |(job, compression, unpack, mut r)| {
            let layer_err = |source| ArchiveError::Layer {
                file: file.clone(),
                member: job.member.clone(),
                source,
            };
            let diff_id = if unpack {
                match snapshots.unpack(&job.diff_id, &mut r) {
                    Ok(()) => job.diff_id.clone(),
                    Err(SnapshotError::Unpack { source, .. }) => return Err(layer_err(source)),
                    Err(SnapshotError::DiffIdMismatch { actual, .. }) => actual,
                    Err(e) => return Err(ImageError::from(e).into()),
                }
            } else {
                scan_layer(r).map_err(layer_err)?.diff_id
            };
            if diff_id != job.diff_id {
                return Err(ArchiveError::DiffIdMismatch {
                    file: file.clone(),
                    member: job.member.clone(),
                    expected: job.diff_id.clone(),
                    actual: diff_id,
                });
            }
            Ok((job, compression, unpack))
        });
        // Record every success before reporting the first failure, so `Drop` removes
        // all that this load unpacked.
        let mut first = None;
        for r in results.into_iter().flatten() {
            match r {
                Ok((job, compression, unpacked)) => {
                    if unpacked {
                        self.unpacked.push(job.diff_id.clone());
                    }
                    self.scanned
                        .insert(job.blob.clone(), (job.diff_id.clone(), compression));
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn format(&self, source: FormatError) -> ArchiveError {
        ArchiveError::Format {
            file: self.file.clone(),
            source,
        }
    }

    /// Verifies an OCI manifest and everything it references.
    fn oci_manifest(&mut self, digest: &Digest, bytes: &[u8]) -> Result<(), ArchiveError> {
        let m = manifest::parse_manifest(bytes, digest).map_err(|e| self.format(e))?;
        let cfg = manifest::descriptor_digest(m.config(), "config").map_err(|e| self.format(e))?;
        let cfg_member = format!("blobs/sha256/{}", cfg.hex());
        self.verify(&cfg_member, &cfg, Some(m.config().size()))?;
        let cfg_bytes = self.small(&cfg_member)?.to_vec();
        let config = manifest::parse_config(&cfg_bytes, &cfg).map_err(|e| self.format(e))?;
        let diff_ids = manifest::diff_ids(&config, &cfg).map_err(|e| self.format(e))?;
        // Only this host's images are unpacked at load; other platforms' are scanned.
        let here = manifest::check_platform(&config, self.store.platform()).is_ok();
        if diff_ids.len() != m.layers().len() {
            return Err(ArchiveError::LayerCount {
                file: self.file.clone(),
                config: cfg.to_string(),
                diff_ids: diff_ids.len(),
                layers: m.layers().len(),
            });
        }
        let mut jobs = Vec::new();
        for (l, diff_id) in m.layers().iter().zip(diff_ids) {
            let d = manifest::descriptor_digest(l, "layer").map_err(|e| self.format(e))?;
            let member = format!("blobs/sha256/{}", d.hex());
            self.verify(&member, &d, Some(l.size()))?;
            jobs.push(LayerJob {
                member,
                blob: d,
                diff_id,
                unpack: here,
            });
        }
        self.check_layers(&jobs)
    }

    /// Verifies a manifest or index named by an OCI descriptor, recursively.
    fn oci_top(&mut self, digest: &Digest, size: u64, depth: usize) -> Result<(), ArchiveError> {
        let member = format!("blobs/sha256/{}", digest.hex());
        self.verify(&member, digest, Some(size))?;
        let bytes = self.small(&member)?.to_vec();
        match manifest::parse_top(&bytes, None, digest).map_err(|e| self.format(e))? {
            TopLevel::Manifest(_) => self.oci_manifest(digest, &bytes),
            TopLevel::Index(idx) if depth < 3 => {
                for m in idx.manifests() {
                    let d = manifest::descriptor_digest(m, "index entry")
                        .map_err(|e| self.format(e))?;
                    // A multi-platform index may come with only some platforms' blobs.
                    if self
                        .blobs
                        .contains_key(&self.resolve(&format!("blobs/sha256/{}", d.hex())))
                    {
                        self.oci_top(&d, m.size(), depth + 1)?;
                    }
                }
                Ok(())
            }
            TopLevel::Index(_) => Err(self.format(FormatError::TooDeep {
                digest: digest.to_string(),
                max: 3,
            })),
        }
    }

    fn name(&self, n: &str) -> Result<String, ArchiveError> {
        NamedRef::parse(n)
            .map(|r| r.to_string())
            .map_err(|source| ArchiveError::BadName {
                file: self.file.clone(),
                name: n.to_string(),
                source,
            })
    }

    /// oci-archive, or a Docker 25+ archive (which is also an OCI layout).
    fn load_oci(&mut self) -> Result<Vec<(Digest, Vec<String>)>, ArchiveError> {
        let bytes = self.small("index.json")?.to_vec();
        let idx: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| self.bad_json("index.json", e))?;
        let mut docker_names: HashMap<String, Vec<String>> = HashMap::new();
        if let Ok(mj) = self.small("manifest.json") {
            if let Ok(entries) = serde_json::from_slice::<Vec<DockerEntry>>(mj) {
                for e in entries {
                    docker_names.insert(self.resolve(&e.config), e.repo_tags.unwrap_or_default());
                }
            }
        }
        let mut tops = Vec::new();
        for desc in idx.manifests() {
            let d = manifest::descriptor_digest(desc, "index entry").map_err(|e| self.format(e))?;
            self.oci_top(&d, desc.size(), 0)?;
            let ann = desc.annotations().clone().unwrap_or_default();
            let name = ann
                .get("io.containerd.image.name")
                .or_else(|| ann.get("org.opencontainers.image.ref.name"));
            let names = match name {
                Some(n) => vec![self.name(n)?],
                None => Vec::new(),
            };
            tops.push((d, names));
        }
        Ok(tops)
    }

    /// Legacy docker-archive: manifest.json with paths to configs and layer tars.
    fn load_docker(&mut self) -> Result<Vec<(Digest, Vec<String>)>, ArchiveError> {
        let bytes = self.small("manifest.json")?.to_vec();
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(&bytes).map_err(|e| self.bad_json("manifest.json", e))?;
        let mut tops = Vec::new();
        for e in entries {
            let (cfg, cfg_size) = self.digest_of(&e.config)?;
            self.verify(&e.config, &cfg, None)?;
            let cfg_bytes = self.small(&e.config)?.to_vec();
            let config = manifest::parse_config(&cfg_bytes, &cfg).map_err(|x| self.format(x))?;
            let diff_ids = manifest::diff_ids(&config, &cfg).map_err(|x| self.format(x))?;
            let here = manifest::check_platform(&config, self.store.platform()).is_ok();
            if diff_ids.len() != e.layers.len() {
                return Err(ArchiveError::LayerCount {
                    file: self.file.clone(),
                    config: e.config.clone(),
                    diff_ids: diff_ids.len(),
                    layers: e.layers.len(),
                });
            }
            let mut jobs = Vec::new();
            let mut sizes = Vec::new();
            for (member, diff_id) in e.layers.iter().zip(diff_ids) {
                let (d, size) = self.digest_of(member)?;
                self.verify(member, &d, None)?;
                sizes.push(size);
                jobs.push(LayerJob {
                    member: member.clone(),
                    blob: d,
                    diff_id,
                    unpack: here,
                });
            }
            self.check_layers(&jobs)?;
            let mut layers = Vec::new();
            for (job, size) in jobs.iter().zip(sizes) {
                // The same blob named with two diff IDs fails in check_layers.
                let media_type = self
                    .scanned
                    .get(&job.blob)
                    .map_or(manifest::OCI_LAYER_GZIP, |(_, c)| c.oci_media_type());
                layers.push(
                    json!({"mediaType": media_type, "digest": job.blob.to_string(), "size": size}),
                );
            }
            let m = json!({
                "schemaVersion": 2,
                "mediaType": manifest::OCI_MANIFEST,
                "config": {"mediaType": manifest::OCI_CONFIG, "digest": cfg.to_string(), "size": cfg_size},
                "layers": layers,
            });
            let m = serde_json::to_vec(&m).map_err(|x| self.bad_json("generated manifest", x))?;
            let d = Digest::of(&m);
            self.generated.push(m);
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|n| self.name(n))
                .collect::<Result<Vec<_>, _>>()?;
            tops.push((d, names));
        }
        Ok(tops)
    }

    /// Makes the verified blobs visible, then the names. Holds the store lock.
    fn commit(
        mut self,
        store: &ImageStore,
        tops: &[(Digest, Vec<String>)],
    ) -> Result<(), ArchiveError> {
        let _lock = store.lock()?;
        for (digest, (member, size)) in std::mem::take(&mut self.commit) {
            if let Some(w) = self.blobs.remove(&member) {
                w.commit(Some(&digest), Some(size))?;
            }
        }
        for m in &self.generated {
            store.content().put(m)?;
        }
        store
            .refs()
            .update(|refs| {
                for (d, names) in tops {
                    for n in names {
                        refs.insert(n.clone(), d.clone());
                    }
                }
            })
            .map_err(ImageError::from)?;
        self.committed = true;
        Ok(())
    }
}

/// A staged layer to check: unpacked (an image for this host) or only scanned.
struct LayerJob {
    /// The archive member as the manifest names it (for errors).
    member: String,
    blob: Digest,
    diff_id: Digest,
    unpack: bool,
}

#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Loads a docker-archive or oci-archive file into the store.
pub fn load(store: &ImageStore, file: &Path) -> Result<Loaded, ArchiveError> {
    let mut st = Staged::read(store, file)?;
    let tops = if st.small.contains_key("index.json") {
        st.load_oci()?
    } else if st.small.contains_key("manifest.json") {
        st.load_docker()?
    } else {
        return Err(ArchiveError::UnknownFormat {
            file: file.to_path_buf(),
        });
    };
    st.commit(store, &tops)?;
    let mut out = Loaded::default();
    for (d, names) in tops {
        out.digests.push(d);
        out.names.extend(names);
    }
    Ok(out)
}

/// Imports a root filesystem tarball (any compression) as a one-layer image.
pub fn import(
    store: &ImageStore,
    file: &Path,
    name: &NamedRef,
    created: &str,
) -> Result<Digest, ArchiveError> {
    let mut src = File::open(file).map_err(io_err("open", file))?;
    let mut w = store.content().writer()?;
    io::copy(&mut src, &mut w).map_err(io_err("read", file))?;
    let info = scan_layer(w.read_staged()?).map_err(|source| ArchiveError::Layer {
        file: file.to_path_buf(),
        member: "(rootfs)".to_string(),
        source,
    })?;
    let blob = w.digest_so_far();
    let platform = store.platform();
    let config = json!({
        "created": created,
        "architecture": platform.arch,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [info.diff_id.to_string()]},
        "history": [{"created": created, "created_by": "skiff image import", "comment": format!("Imported from {}", file.display())}],
    });
    let config = serde_json::to_vec(&config).map_err(|e| ArchiveError::BadJson {
        file: file.to_path_buf(),
        member: "generated config".to_string(),
        source: e,
    })?;
    let cfg = Digest::of(&config);
    let m = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": manifest::OCI_CONFIG, "digest": cfg.to_string(), "size": config.len()},
        "layers": [{"mediaType": info.compression.oci_media_type(), "digest": blob.digest.to_string(), "size": blob.size}],
    });
    let m = serde_json::to_vec(&m).map_err(|e| ArchiveError::BadJson {
        file: file.to_path_buf(),
        member: "generated manifest".to_string(),
        source: e,
    })?;
    let _lock = store.lock()?;
    w.commit(Some(&blob.digest), Some(blob.size))?;
    store.content().put(&config)?;
    let top = store.content().put(&m)?.digest;
    let key = name.to_string();
    store
        .refs()
        .update(|r| {
            r.insert(key, top.clone());
        })
        .map_err(ImageError::from)?;
    Ok(top)
}

/// Writes `references` to `out` as one tarball readable as docker-archive and as
/// oci-archive. The file appears only once complete.
pub fn save(store: &ImageStore, references: &[String], out: &Path) -> Result<(), ArchiveError> {
    let names = store.names_by_digest()?;
    let mut index = Vec::new();
    let mut docker = Vec::new();
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for r in references {
        let top = store.resolve(r)?;
        let img = store.image(&top)?;
        let tags: Vec<String> = match NamedRef::parse(r) {
            Ok(n) if names.get(&top).is_some_and(|v| v.contains(&n.to_string())) => {
                vec![n.to_string()]
            }
            _ => names.get(&top).cloned().unwrap_or_default(),
        };
        blobs.insert(img.manifest_digest.clone(), img.manifest_size);
        blobs.insert(img.config_digest.clone(), img.config_bytes.len() as u64);
        for l in &img.layers {
            blobs.insert(l.blob.clone(), l.size);
        }
        let desc = |ann: serde_json::Value| {
            json!({"mediaType": img.manifest_media_type, "digest": img.manifest_digest.to_string(),
                   "size": img.manifest_size, "annotations": ann})
        };
        if tags.is_empty() {
            index.push(json!({"mediaType": img.manifest_media_type, "digest": img.manifest_digest.to_string(), "size": img.manifest_size}));
        }
        for t in &tags {
            let tag = t.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            index.push(desc(
                json!({"io.containerd.image.name": t, "org.opencontainers.image.ref.name": tag}),
            ));
        }
        docker.push(json!({
            "Config": format!("blobs/sha256/{}", img.config_digest.hex()),
            "RepoTags": tags,
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.blob.hex())).collect::<Vec<_>>(),
        }));
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("save"),
        std::process::id()
    ));
    let r = (|| -> Result<(), ArchiveError> {
        let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        let mut b = tar::Builder::new(io::BufWriter::with_capacity(256 * 1024, f));
        let werr = |e| ArchiveError::Io {
            op: "write",
            path: out.to_path_buf(),
            source: e,
        };
        let add_dir = |b: &mut tar::Builder<_>, p: &str| -> Result<(), ArchiveError> {
            let mut h = header(0, tar::EntryType::Directory, 0o755);
            b.append_data(&mut h, p, io::empty()).map_err(werr)
        };
        add_dir(&mut b, "blobs/")?;
        add_dir(&mut b, "blobs/sha256/")?;
        for (d, size) in &blobs {
            let mut h = header(*size, tar::EntryType::Regular, 0o644);
            let r = store.content().open(d)?;
            b.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), r.take(*size))
                .map_err(werr)?;
        }
        let index =
            json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": index});
        for (name, value) in [
            ("oci-layout", json!({"imageLayoutVersion": "1.0.0"})),
            ("index.json", index),
            ("manifest.json", serde_json::Value::Array(docker)),
        ] {
            let bytes = serde_json::to_vec(&value).map_err(|e| ArchiveError::BadJson {
                file: out.to_path_buf(),
                member: name.to_string(),
                source: e,
            })?;
            let mut h = header(bytes.len() as u64, tar::EntryType::Regular, 0o644);
            b.append_data(&mut h, name, &bytes[..]).map_err(werr)?;
        }
        let w = b.into_inner().map_err(werr)?;
        let f = w.into_inner().map_err(|e| werr(e.into_error()))?;
        f.sync_all().map_err(werr)?;
        fs::rename(&tmp, out).map_err(io_err("rename into place", out))?;
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// A reproducible header: root-owned, epoch mtime.
fn header(size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Now as RFC 3339 UTC (`2006-01-02T15:04:05Z`), without a date library.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339(t(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(t(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(t(1_700_000_000)), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn normalize_refuses_escape() {
        assert_eq!(normalize(Path::new("./a/b/../c")).as_deref(), Some("a/c"));
        assert_eq!(normalize(Path::new("../x")), None);
    }
}
