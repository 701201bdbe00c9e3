//! Content-addressed storage on the local filesystem.
//!
//! Layout under the data directory:
//!
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>                   one copy of every blob (manifests included)
//! uploads/<id>/{data,repo}                       uploads in progress, never visible as blobs
//! tmp/                                           staging for small atomic writes
//! repositories/<name>/_layers/<alg>/<hex>        the repository may serve this blob (empty file)
//! repositories/<name>/_manifests/revisions/<alg>/<hex>   manifest known here; holds its media type
//! repositories/<name>/_manifests/tags/<tag>      holds the tagged manifest's digest
//! repositories/<name>/_referrers/<alg>/<subject hex>/<alg>-<hex>   a referrer's descriptor (JSON)
//! ```
//!
//! Invariants: a file under `blobs/` always hashes to its name, because it only appears
//! there by `rename` after its content was verified and fsynced. Repositories hold links,
//! never content, so a blob pushed to many repositories is stored once. Names and digests
//! are validated before they reach this module, so they are safe path components.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::SystemTime;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::sync::Mutex;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::manifest;

mod uploads;

use uploads::UploadState;

/// Write buffer for uploads: large enough that each filesystem call moves a useful
/// amount, small enough that memory stays flat with many concurrent uploads.
const WRITE_BUF: usize = 1 << 20;
/// Body bytes handed to the writer thread at a time.
const WRITE_BATCH: usize = 512 << 10;

/// Where a manifest is looked up or stored.
#[derive(Debug, Clone)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// A manifest as stored: its digest, media type and exact bytes.
#[derive(Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// The result of a manifest PUT.
#[derive(Debug)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    uploads: StdMutex<HashMap<String, Arc<Mutex<UploadState>>>>,
}

impl Storage {
    /// Opens (creating if needed) the storage under `root`.
    pub fn open(root: &Path) -> Result<Storage> {
        for d in ["blobs", "uploads", "tmp", "repositories"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(Error::io("create directory", &p))?;
        }
        // Staged files left by a crash were never renamed into place: nothing refers to
        // them.
        let tmp = root.join("tmp");
        for name in read_dir_names(&tmp)? {
            let _ = std::fs::remove_file(tmp.join(name));
        }
        Ok(Storage {
            root: root.to_path_buf(),
            uploads: StdMutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        blob_path(&self.root, d)
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join("repositories").join(repo)
    }

    fn layer_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_layers")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn revision_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_manifests/revisions")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn tag_path(&self, repo: &str, tag: &str) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags").join(tag)
    }

    fn referrers_dir(&self, repo: &str, subject: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_referrers")
            .join(subject.algorithm().as_str())
            .join(subject.hex())
    }

    // ---- blobs ---------------------------------------------------------------------

    /// Size of a blob the repository may serve, or `BlobUnknown`.
    pub async fn blob_size(&self, repo: &str, d: &Digest) -> Result<u64> {
        let unknown = || Error::BlobUnknown {
            repo: repo.to_string(),
            digest: d.to_string(),
        };
        if !exists(&self.layer_link(repo, d)).await {
            return Err(unknown());
        }
        match tokio::fs::metadata(self.blob_path(d)).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unknown()),
            Err(e) => Err(Error::io("stat", self.blob_path(d))(e)),
        }
    }

    pub async fn open_blob(&self, repo: &str, d: &Digest) -> Result<(tokio::fs::File, u64)> {
        let size = self.blob_size(repo, d).await?;
        let path = self.blob_path(d);
        let f = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::BlobUnknown {
                    repo: repo.to_string(),
                    digest: d.to_string(),
                }
            } else {
                Error::io("open", &path)(e)
            }
        })?;
        Ok((f, size))
    }

    async fn link_blob(&self, repo: &str, d: &Digest) -> Result<()> {
        write_atomic(&self.root, &self.layer_link(repo, d), b"").await
    }

    /// Removes the repository's link to a blob; the content goes at the next gc.
    pub async fn delete_blob(&self, repo: &str, d: &Digest) -> Result<()> {
        self.blob_size(repo, d).await?;
        let p = self.layer_link(repo, d);
        tokio::fs::remove_file(&p)
            .await
            .map_err(Error::io("remove", &p))
    }

    /// Links a blob of repository `from` into `repo` without copying. False when `from`
    /// does not have it (the caller then starts an ordinary upload, as the spec says).
    pub async fn mount(&self, repo: &str, from: &str, d: &Digest) -> Result<bool> {
        if self.blob_size(from, d).await.is_err() {
            return Ok(false);
        }
        self.link_blob(repo, d).await?;
        Ok(true)
    }

    // ---- manifests -----------------------------------------------------------------

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        let parsed = manifest::parse(content_type, &body)?;
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(Error::DigestMismatch {
                        expected: d.to_string(),
                        actual: actual.to_string(),
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&body),
        };
        for r in &parsed.references {
            let present = if r.manifest {
                exists(&self.revision_link(repo, &r.digest)).await
                    && exists(&self.blob_path(&r.digest)).await
            } else {
                self.blob_size(repo, &r.digest).await.is_ok()
            };
            if !present {
                return Err(Error::ManifestBlobUnknown {
                    repo: repo.to_string(),
                    digest: r.digest.to_string(),
                });
            }
        }
        let blob = self.blob_path(&digest);
        if !exists(&blob).await {
            let staged = stage(&self.root, &body).await?;
            publish(&staged, &blob).await?;
        }
        self.link_blob(repo, &digest).await?;
        write_atomic(
            &self.root,
            &self.revision_link(repo, &digest),
            parsed.media_type.as_bytes(),
        )
        .await?;
        if let Some(subject) = &parsed.subject {
            let mut desc = serde_json::json!({
                "mediaType": parsed.media_type,
                "digest": digest.to_string(),
                "size": body.len(),
            });
            if let Some(a) = &parsed.artifact_type {
                desc["artifactType"] = a.clone().into();
            }
            if let Some(a) = &parsed.annotations {
                desc["annotations"] = serde_json::Value::Object(a.clone());
            }
            let p = self.referrers_dir(repo, subject).join(format!(
                "{}-{}",
                digest.algorithm().as_str(),
                digest.hex()
            ));
            write_atomic(&self.root, &p, desc.to_string().as_bytes()).await?;
        }
        if let Reference::Tag(tag) = reference {
            write_atomic(
                &self.root,
                &self.tag_path(repo, tag),
                digest.to_string().as_bytes(),
            )
            .await?;
        }
        Ok(PutManifest {
            digest,
            subject: parsed.subject,
        })
    }

    async fn resolve(&self, repo: &str, reference: &Reference) -> Result<Digest> {
        let unknown = || Error::ManifestUnknown {
            repo: repo.to_string(),
            reference: reference.to_string(),
        };
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => tokio::fs::read_to_string(self.tag_path(repo, t))
                .await
                .map_err(|_| unknown())?
                .trim()
                .parse()
                .map_err(|_| unknown())?,
        };
        if !exists(&self.revision_link(repo, &digest)).await {
            return Err(unknown());
        }
        Ok(digest)
    }

    pub async fn get_manifest(&self, repo: &str, reference: &Reference) -> Result<StoredManifest> {
        let digest = self.resolve(repo, reference).await?;
        let media_type = tokio::fs::read_to_string(self.revision_link(repo, &digest))
            .await
            .map_err(Error::io("read", self.revision_link(repo, &digest)))?;
        let path = self.blob_path(&digest);
        let body = tokio::fs::read(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::ManifestUnknown {
                    repo: repo.to_string(),
                    reference: reference.to_string(),
                }
            } else {
                Error::io("read", &path)(e)
            }
        })?;
        Ok(StoredManifest {
            digest,
            media_type,
            body: body.into(),
        })
    }

    /// Deleting a tag removes only the tag; deleting a digest removes the manifest from
    /// the repository with every tag pointing at it and its referrers entry.
    pub async fn delete_manifest(&self, repo: &str, reference: &Reference) -> Result<()> {
        let digest = self.resolve(repo, reference).await?;
        if let Reference::Tag(t) = reference {
            let p = self.tag_path(repo, t);
            return tokio::fs::remove_file(&p)
                .await
                .map_err(Error::io("remove", &p));
        }
        let wanted = digest.to_string();
        for tag in self.tags(repo).await.unwrap_or_default() {
            let p = self.tag_path(repo, &tag);
            if let Ok(s) = tokio::fs::read_to_string(&p).await {
                if s.trim() == wanted {
                    let _ = tokio::fs::remove_file(&p).await;
                }
            }
        }
        if let Ok(body) = tokio::fs::read(self.blob_path(&digest)).await {
            if let Ok(parsed) = manifest::parse(None, &body) {
                if let Some(subject) = parsed.subject {
                    let p = self.referrers_dir(repo, &subject).join(format!(
                        "{}-{}",
                        digest.algorithm().as_str(),
                        digest.hex()
                    ));
                    let _ = tokio::fs::remove_file(&p).await;
                }
            }
        }
        let p = self.revision_link(repo, &digest);
        tokio::fs::remove_file(&p)
            .await
            .map_err(Error::io("remove", &p))
    }

    /// All tags of a repository, sorted; `NameUnknown` for a repository never pushed to.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        if !exists(&self.repo_dir(repo).join("_manifests")).await {
            return Err(Error::NameUnknown {
                repo: repo.to_string(),
            });
        }
        let mut tags = list_dir(&self.repo_dir(repo).join("_manifests/tags")).await?;
        tags.sort();
        Ok(tags)
    }

    /// All repositories with manifests, sorted.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let root = self.root.join("repositories");
        let mut out = Vec::new();
        let mut stack = vec![(root, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for name in list_dir(&dir).await? {
                if name.starts_with('_') {
                    continue;
                }
                let path = dir.join(&name);
                let full = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if exists(&path.join("_manifests")).await {
                    out.push(full.clone());
                }
                stack.push((path, full));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`.
    pub async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<serde_json::Value>> {
        let dir = self.referrers_dir(repo, subject);
        let mut names = list_dir(&dir).await?;
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let Ok(text) = tokio::fs::read(dir.join(&n)).await else {
                continue;
            };
            let Ok(desc) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            // Skip entries whose manifest was deleted by a path that missed the index.
            let still_there = desc["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .map(|d| self.revision_link(repo, &d));
            if let Some(p) = still_there {
                if exists(&p).await {
                    out.push(desc);
                }
            }
        }
        Ok(out)
    }
}

// ---- helpers -----------------------------------------------------------------------

pub(crate) fn blob_path(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs")
        .join(d.algorithm().as_str())
        .join(&d.hex()[..2])
        .join(d.hex())
}

async fn exists(p: &Path) -> bool {
    tokio::fs::try_exists(p).await.unwrap_or(false)
}

async fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut rd = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", dir)(e)),
    };
    let mut out = Vec::new();
    while let Some(e) = rd
        .next_entry()
        .await
        .map_err(Error::io("read directory", dir))?
    {
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

async fn truncate(path: &Path, len: u64) {
    if let Ok(f) = tokio::fs::OpenOptions::new().write(true).open(path).await {
        let _ = f.set_len(len).await;
    }
}

async fn remove_dir(p: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(p).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "could not remove upload directory");
        }
    }
}

/// Streams `body` into `file`, hashing as it goes; returns the bytes written and the
/// updated hasher. Hashing and writing run on a blocking thread fed through a small
/// queue: frames move there without copying, the network side keeps reading meanwhile,
/// and memory is bounded by the queue whatever the body's size.
async fn write_body(
    path: &Path,
    file: std::fs::File,
    mut body: Body,
    hasher: Option<Hasher>,
) -> Result<(u64, Option<Hasher>)> {
    use std::io::Write as _;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Option<Hasher>)> {
        let mut w = std::io::BufWriter::with_capacity(WRITE_BUF, file);
        let mut h = hasher;
        let mut n = 0u64;
        while let Some(data) = rx.blocking_recv() {
            if let Some(h) = h.as_mut() {
                h.update(&data);
            }
            w.write_all(&data)?;
            n += data.len() as u64;
        }
        w.flush()?;
        Ok((n, h))
    });
    let mut body_err = None;
    // HTTP/1 frames are small (often 8–64 KiB); handing each to the writer thread costs a
    // wake-up. Batching them into WRITE_BATCH pieces cuts those hand-offs ~30-fold for
    // the same single copy the BufWriter would otherwise make.
    let mut batch = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    let piece = if batch.is_empty() && data.len() >= WRITE_BATCH {
                        Some(data)
                    } else {
                        batch.extend_from_slice(&data);
                        (batch.len() >= WRITE_BATCH).then(|| batch.split().freeze())
                    };
                    // A closed queue means the writer failed; its error is reported below.
                    if let Some(p) = piece {
                        if tx.send(p).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Err(source) => {
                body_err = Some(Error::Body { source });
                break;
            }
        }
    }
    if body_err.is_none() && !batch.is_empty() {
        let _ = tx.send(batch.freeze()).await;
    }
    drop(tx);
    let written = match writer.await {
        Ok(r) => r.map_err(Error::io("write", path)),
        Err(join) => Err(Error::io("write", path)(std::io::Error::other(join))),
    };
    match body_err {
        Some(e) => Err(e),
        None => written,
    }
}

async fn hash_file(path: &Path, alg: Algorithm) -> Result<Digest> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(Error::io("open", path))?;
    let mut h = alg.hasher();
    let mut buf = vec![0u8; WRITE_BUF];
    loop {
        let n = f.read(&mut buf).await.map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// Moves a verified, fsynced file into place. The rename is what makes it visible, so
/// readers never see a partial blob.
async fn publish(src: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(dest);
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(Error::io("create directory", parent))?;
    tokio::fs::rename(src, dest)
        .await
        .map_err(Error::io("rename into place", dest))?;
    // Persist the directory entry too, or a crash could forget a blob we acknowledged.
    if let Ok(d) = tokio::fs::File::open(parent).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// Writes `data` to a fresh fsynced file under `tmp/` and returns its path.
async fn stage(root: &Path, data: &[u8]) -> Result<PathBuf> {
    let p = root.join("tmp").join(random_hex(16));
    let mut f = tokio::fs::File::create(&p)
        .await
        .map_err(Error::io("create", &p))?;
    f.write_all(data).await.map_err(Error::io("write", &p))?;
    f.sync_all().await.map_err(Error::io("fsync", &p))?;
    Ok(p)
}

async fn write_atomic(root: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let staged = stage(root, data).await?;
    let res = publish(&staged, dest).await;
    if res.is_err() {
        let _ = tokio::fs::remove_file(&staged).await;
    }
    res
}

pub(crate) fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    // The system RNG failing means the OS is broken; fall back to time-based uniqueness
    // rather than refusing uploads (ids only need to be unique, not secret).
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        buf.iter_mut()
            .zip(t.to_le_bytes().iter().cycle())
            .for_each(|(b, t)| *b = *t);
    }
    hex::encode(buf)
}

pub(crate) fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(Error::io("read directory", dir))?;
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}
