//! `pull`: manifest (index → this host's platform), config, then the layers in
//! parallel, each downloaded into a resumable partial file, verified, made visible and
//! unpacked while the others still download; the name is recorded last.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderName};
use hyper::{Method, StatusCode};
use nix::fcntl::{Flock, FlockArg};
use sha2::Digest as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::session::{read_small, ReqBody, Session};
use super::{sources, Client, DistributionError, Event, Progress, RemoteRef};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::manifest::{self, TopLevel};
use crate::reference::NamedRef;
use crate::snapshot::Snapshotter;
use crate::store::ImageStore;

/// Manifests and configs larger than this are refused (as registries do).
const MAX_MANIFEST: usize = 4 << 20;
const MAX_CONFIG: usize = 32 << 20;
/// A layer download that breaks is resumed (with `Range`) this many times.
const RESUMES: usize = 5;
/// No byte for this long means the connection is dead.
const STALL: Duration = Duration::from_secs(120);

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest or index the reference named (the repo digest).
    pub top: Digest,
    pub manifest: Digest,
    /// The image ID.
    pub config: Digest,
    /// `os/arch` picked from an index, if the reference named one.
    pub picked: Option<String>,
    /// The local name it was stored under (`None` for a digest-only reference).
    pub name: Option<String>,
    /// Bytes downloaded (0 when everything was already present).
    pub downloaded: u64,
}

/// What this pull added to the store, removed again if the pull fails.
#[derive(Default)]
struct Added {
    blobs: Vec<Digest>,
    layers: Vec<Digest>,
}

impl Added {
    fn undo(&self, store: &ImageStore) {
        for l in &self.layers {
            let _ = store.snapshotter().remove_layer(l);
        }
        for b in &self.blobs {
            let _ = store.content().delete(b);
        }
    }
}

fn blob_path(repo: &str, d: &Digest) -> String {
    format!("/v2/{repo}/blobs/{d}")
}

impl Client {
    /// Pulls `r` into `store`, unpacks its layers and names it `registry/repo:tag`.
    pub async fn pull(
        &self,
        store: &Arc<ImageStore>,
        r: &RemoteRef,
        progress: &Arc<dyn Progress>,
    ) -> Result<Pulled, DistributionError> {
        let s = self.session(&r.registry)?;
        let scopes = vec![format!("repository:{}:pull", r.repository)];
        let (top_bytes, top_type, top) = fetch_manifest(
            &s,
            &r.repository,
            &r.reference(),
            r.digest.as_ref(),
            &scopes,
        )
        .await?;
        let mut picked = None;
        let (m_bytes, m_digest, index_bytes) =
            match manifest::parse_top(&top_bytes, top_type.as_deref(), &top)? {
                TopLevel::Index(idx) => {
                    let d = manifest::select_from_index(&idx, store.platform(), &top)?;
                    let what = d
                        .platform()
                        .as_ref()
                        .map(|p| {
                            let mut s = format!("{}/{}", p.os(), p.architecture());
                            if let Some(v) = p.variant() {
                                s.push('/');
                                s.push_str(v);
                            }
                            s
                        })
                        .unwrap_or_else(|| "the only manifest".to_string());
                    progress.event(Event::Message(format!("Picked {what} from index")));
                    picked = Some(what);
                    let dd = manifest::descriptor_digest(d, "index entry")?;
                    let (b, _, got) =
                        fetch_manifest(&s, &r.repository, &dd.to_string(), Some(&dd), &scopes)
                            .await?;
                    (b, got, Some(top_bytes))
                }
                TopLevel::Manifest(_) => (top_bytes, top.clone(), None),
            };
        let m = manifest::parse_manifest(&m_bytes, &m_digest)?;
        let config_digest = manifest::descriptor_digest(m.config(), "config")?;
        let config_bytes = fetch_small_blob(
            &s,
            &r.repository,
            &config_digest,
            m.config().size(),
            &scopes,
        )
        .await?;
        let config = manifest::parse_config(&config_bytes, &config_digest)?;
        manifest::check_platform(&config, store.platform())?;
        let diff_ids = manifest::diff_ids(&config, &config_digest)?;
        if diff_ids.len() != m.layers().len() {
            return Err(manifest::FormatError::LayerCount {
                digest: config_digest.to_string(),
                diff_ids: diff_ids.len(),
                layers: m.layers().len(),
            }
            .into());
        }

        let cancel = Arc::new(AtomicBool::new(false));
        let downloads = Arc::new(Semaphore::new(self.opts.parallel.max(1)));
        // Unpacking is CPU-bound (decompression): no more at once than cores.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let unpacks = Arc::new(Semaphore::new(cores));
        let mut set = JoinSet::new();
        for (l, diff_id) in m.layers().iter().zip(diff_ids) {
            let job = LayerJob {
                session: s.clone(),
                repo: r.repository.clone(),
                digest: manifest::descriptor_digest(l, "layer")?,
                size: l.size(),
                diff_id,
                scopes: scopes.clone(),
                store: store.clone(),
                progress: progress.clone(),
                cancel: cancel.clone(),
                downloads: downloads.clone(),
                unpacks: unpacks.clone(),
            };
            set.spawn(job.run());
        }
        let mut added = Added::default();
        let mut first_err = None;
        let mut downloaded = 0;
        while let Some(res) = set.join_next().await {
            let res = res.unwrap_or_else(|e| {
                Err(DistributionError::Task {
                    detail: e.to_string(),
                })
            });
            match res {
                Ok(o) => {
                    downloaded += o.downloaded;
                    if o.blob_new {
                        added.blobs.push(o.blob);
                    }
                    if o.layer_new {
                        added.layers.push(o.diff_id);
                    }
                }
                Err(e) => {
                    cancel.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            added.undo(store);
            return Err(e);
        }
        let res = (|| {
            for (bytes, d) in [(&config_bytes, &config_digest), (&m_bytes, &m_digest)]
                .into_iter()
                .chain(index_bytes.as_ref().map(|b| (b, &top)))
            {
                if store.content().stat(d)?.is_none() {
                    let info = store.content().put(bytes)?;
                    if &info.digest != d {
                        return Err(DistributionError::DigestMismatch {
                            registry: r.registry.clone(),
                            what: "document",
                            expected: d.clone(),
                            actual: info.digest,
                            size: info.size,
                        });
                    }
                    added.blobs.push(d.clone());
                }
            }
            let name = match r.local_name() {
                Some(n) => {
                    let nr = NamedRef::parse(&n).map_err(crate::store::ImageError::from)?;
                    store.tag(&top, &nr)?;
                    Some(n)
                }
                None => None,
            };
            Ok(name)
        })();
        let name = match res {
            Ok(n) => n,
            Err(e) => {
                added.undo(store);
                return Err(e);
            }
        };
        let mut all: Vec<Digest> = m
            .layers()
            .iter()
            .filter_map(|l| manifest::descriptor_digest(l, "layer").ok())
            .collect();
        all.push(config_digest.clone());
        sources::record(store, &r.registry, &r.repository, &all);
        Ok(Pulled {
            top,
            manifest: m_digest,
            config: config_digest,
            picked,
            name,
            downloaded,
        })
    }
}

/// GETs a manifest or index; verifies it against `expected` if the reference is a
/// digest. Returns the bytes, the Content-Type and the digest of the bytes.
async fn fetch_manifest(
    s: &Session,
    repo: &str,
    reference: &str,
    expected: Option<&Digest>,
    scopes: &[String],
) -> Result<(Vec<u8>, Option<String>, Digest), DistributionError> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let resp = s
        .send(
            Method::GET,
            &path,
            &[(header::ACCEPT, ACCEPT.to_string())],
            &ReqBody::Empty,
            scopes,
        )
        .await?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Err(DistributionError::ManifestUnknown {
            registry: s.registry.clone(),
            reference: format!("{repo}:{reference}").replace(":sha256:", "@sha256:"),
        });
    }
    if !status.is_success() {
        return Err(s.status_error("GET", &path, resp).await);
    }
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let bytes = read_small(resp, MAX_MANIFEST).await.map_err(|detail| {
        if detail.contains("larger than") {
            DistributionError::ManifestTooLarge {
                registry: s.registry.clone(),
                reference: format!("{repo}:{reference}"),
                max: MAX_MANIFEST as u64,
            }
        } else {
            DistributionError::Transfer {
                registry: s.registry.clone(),
                what: format!("manifest {repo}:{reference}"),
                detail,
            }
        }
    })?;
    let got = Digest::of(&bytes);
    if let Some(exp) = expected {
        if exp != &got {
            return Err(DistributionError::DigestMismatch {
                registry: s.registry.clone(),
                what: "manifest",
                expected: exp.clone(),
                actual: got,
                size: bytes.len() as u64,
            });
        }
    }
    Ok((bytes, ctype, got))
}

async fn fetch_small_blob(
    s: &Session,
    repo: &str,
    d: &Digest,
    size: u64,
    scopes: &[String],
) -> Result<Vec<u8>, DistributionError> {
    let path = blob_path(repo, d);
    let resp = get_following(s, &path, &[], scopes).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(DistributionError::BlobUnknown {
            registry: s.registry.clone(),
            repository: repo.to_string(),
            digest: d.clone(),
        });
    }
    if !resp.status().is_success() {
        return Err(s.status_error("GET", &path, resp).await);
    }
    let bytes =
        read_small(resp, MAX_CONFIG)
            .await
            .map_err(|detail| DistributionError::Transfer {
                registry: s.registry.clone(),
                what: format!("blob {d}"),
                detail,
            })?;
    let got = Digest::of(&bytes);
    if &got != d {
        return Err(DistributionError::DigestMismatch {
            registry: s.registry.clone(),
            what: "config",
            expected: d.clone(),
            actual: got,
            size: bytes.len() as u64,
        });
    }
    if bytes.len() as u64 != size {
        return Err(DistributionError::SizeMismatch {
            registry: s.registry.clone(),
            what: "config",
            digest: d.clone(),
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// GET that follows redirects (registries may send blob downloads to storage elsewhere).
async fn get_following(
    s: &Session,
    path: &str,
    headers: &[(HeaderName, String)],
    scopes: &[String],
) -> Result<hyper::Response<hyper::body::Incoming>, DistributionError> {
    let mut url = path.to_string();
    for _ in 0..5 {
        let resp = s
            .send(Method::GET, &url, headers, &ReqBody::Empty, scopes)
            .await?;
        if resp.status().is_redirection() {
            if let Some(loc) = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
            {
                url = loc.to_string();
                continue;
            }
        }
        return Ok(resp);
    }
    Err(DistributionError::Transfer {
        registry: s.registry.clone(),
        what: format!("GET {path}"),
        detail: "too many redirects".to_string(),
    })
}

struct LayerJob {
    session: Arc<Session>,
    repo: String,
    digest: Digest,
    size: u64,
    diff_id: Digest,
    scopes: Vec<String>,
    store: Arc<ImageStore>,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
    downloads: Arc<Semaphore>,
    unpacks: Arc<Semaphore>,
}

struct LayerOutcome {
    blob: Digest,
    diff_id: Digest,
    blob_new: bool,
    layer_new: bool,
    downloaded: u64,
}

impl LayerJob {
    fn id(&self) -> String {
        self.digest.short().to_string()
    }

    async fn run(self) -> Result<LayerOutcome, DistributionError> {
        let mut out = LayerOutcome {
            blob: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            blob_new: false,
            layer_new: false,
            downloaded: 0,
        };
        let have_layer = self.store.snapshotter().has_layer(&self.diff_id)?;
        let have_blob = self.store.content().stat(&self.digest)? == Some(self.size);
        if have_blob && have_layer {
            self.progress.event(Event::Done {
                id: self.id(),
                status: "Already exists".to_string(),
            });
            return Ok(out);
        }
        if !have_blob {
            let _permit = self
                .downloads
                .acquire()
                .await
                .map_err(|e| DistributionError::Task {
                    detail: e.to_string(),
                })?;
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(out);
            }
            out.downloaded = self.download().await?;
            out.blob_new = true;
        }
        if !have_layer && !self.cancel.load(Ordering::Relaxed) {
            let _permit = self
                .unpacks
                .acquire()
                .await
                .map_err(|e| DistributionError::Task {
                    detail: e.to_string(),
                })?;
            self.progress
                .event(Event::Message(format!("{}: Extracting", self.id())));
            let store = self.store.clone();
            let (blob, diff_id) = (self.digest.clone(), self.diff_id.clone());
            let res = tokio::task::spawn_blocking(move || -> Result<bool, DistributionError> {
                // Another pull may have unpacked it meanwhile.
                if store.snapshotter().has_layer(&diff_id)? {
                    return Ok(false);
                }
                let mut r = store.content().open(&blob)?;
                store.snapshotter().unpack(&diff_id, &mut r)?;
                Ok(true)
            })
            .await
            .map_err(|e| DistributionError::Task {
                detail: e.to_string(),
            })?;
            match res {
                Ok(new) => out.layer_new = new,
                Err(e) => {
                    if out.blob_new {
                        let _ = self.store.content().delete(&self.digest);
                    }
                    return Err(e);
                }
            }
        }
        self.progress.event(Event::Done {
            id: self.id(),
            status: "Pull complete".to_string(),
        });
        Ok(out)
    }

    fn registry(&self) -> String {
        self.session.registry.clone()
    }

    /// Downloads the blob into `ingest/pull-<hex>.partial` (continuing what an earlier
    /// attempt left there), verifies it and makes it visible. Returns bytes fetched.
    async fn download(&self) -> Result<u64, DistributionError> {
        let ingest = self.store.content().ingest_dir();
        let fixed = ingest.join(format!("pull-{}.partial", self.digest.hex()));
        let (mut file, part, _lock) = open_partial(&fixed, &ingest)?;
        let mut have = file
            .metadata()
            .map_err(DistributionError::io("stat", &part))?
            .len();
        let mut hasher = sha2::Sha256::new();
        if have > self.size {
            have = 0;
        }
        if have > 0 {
            // Hash what an earlier attempt left, so the digest covers the whole blob.
            let mut buf = vec![0u8; 1 << 20];
            let mut left = have;
            file.seek(SeekFrom::Start(0))
                .map_err(DistributionError::io("seek", &part))?;
            while left > 0 {
                let n = file
                    .read(&mut buf[..left.min(1 << 20) as usize])
                    .map_err(DistributionError::io("read", &part))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            have -= left;
        }
        file.set_len(have)
            .map_err(DistributionError::io("truncate", &part))?;
        file.seek(SeekFrom::Start(have))
            .map_err(DistributionError::io("seek", &part))?;
        self.progress.event(Event::Start {
            id: self.id(),
            what: "layer",
            total: self.size,
            done: have,
        });
        let fail = |e: DistributionError, part: &PathBuf| {
            let _ = std::fs::remove_file(part);
            e
        };
        let mut fetched = 0u64;
        let path = blob_path(&self.repo, &self.digest);
        let mut from_disk = have > 0;
        loop {
            let mut attempt = 0;
            while have < self.size || attempt == 0 {
                attempt += 1;
                let mut headers = Vec::new();
                if have > 0 {
                    headers.push((header::RANGE, format!("bytes={have}-")));
                    self.progress.event(Event::Message(format!(
                        "{}: resuming at byte {have} of {}",
                        self.id(),
                        self.size
                    )));
                }
                let resp = match get_following(&self.session, &path, &headers, &self.scopes).await {
                    Ok(r) => r,
                    Err(e @ DistributionError::Connect { .. }) if attempt <= RESUMES => {
                        tracing::warn!("{e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match resp.status() {
                    StatusCode::OK => {
                        if have > 0 {
                            // The registry ignored Range: start over.
                            have = 0;
                            hasher = sha2::Sha256::new();
                            file.set_len(0)
                                .and_then(|_| file.seek(SeekFrom::Start(0)).map(|_| ()))
                                .map_err(DistributionError::io("truncate", &part))?;
                        }
                    }
                    StatusCode::PARTIAL_CONTENT => {
                        let start = resp
                            .headers()
                            .get(header::CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("bytes "))
                            .and_then(|v| v.split('-').next())
                            .and_then(|v| v.parse::<u64>().ok());
                        if start != Some(have) {
                            return Err(fail(
                                DistributionError::Transfer {
                                    registry: self.registry(),
                                    what: format!("layer {}", self.digest),
                                    detail: format!(
                                        "asked for bytes from {have}, got Content-Range starting at {start:?}"
                                    ),
                                },
                                &part,
                            ));
                        }
                    }
                    StatusCode::RANGE_NOT_SATISFIABLE if have >= self.size => break,
                    StatusCode::NOT_FOUND => {
                        return Err(DistributionError::BlobUnknown {
                            registry: self.registry(),
                            repository: self.repo.clone(),
                            digest: self.digest.clone(),
                        })
                    }
                    _ => return Err(self.session.status_error("GET", &path, resp).await),
                }
                let mut body = resp.into_body();
                let broke: Option<String> = loop {
                    if self.cancel.load(Ordering::Relaxed) {
                        // The pull failed elsewhere (often a corrupt registry): leave no
                        // staging file behind.
                        return Err(fail(
                            DistributionError::Task {
                                detail: "cancelled after another layer failed".to_string(),
                            },
                            &part,
                        ));
                    }
                    let frame = match tokio::time::timeout(STALL, body.frame()).await {
                        Err(_) => break Some(format!("no data for {}s", STALL.as_secs())),
                        Ok(None) => break None,
                        Ok(Some(Err(e))) => break Some(super::session::err_chain(&e)),
                        Ok(Some(Ok(f))) => f,
                    };
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if have + data.len() as u64 > self.size {
                        return Err(fail(
                            DistributionError::SizeMismatch {
                                registry: self.registry(),
                                what: "layer",
                                digest: self.digest.clone(),
                                expected: self.size,
                                actual: have + data.len() as u64,
                            },
                            &part,
                        ));
                    }
                    file.write_all(&data)
                        .map_err(DistributionError::io("write", &part))?;
                    hasher.update(&data);
                    have += data.len() as u64;
                    fetched += data.len() as u64;
                    self.progress.event(Event::Advance {
                        id: self.id(),
                        bytes: data.len() as u64,
                    });
                };
                match broke {
                    None if have == self.size => break,
                    None => {
                        if attempt > RESUMES {
                            return Err(DistributionError::SizeMismatch {
                                registry: self.registry(),
                                what: "layer",
                                digest: self.digest.clone(),
                                expected: self.size,
                                actual: have,
                            });
                        }
                    }
                    Some(detail) => {
                        if attempt > RESUMES {
                            // The partial file stays: the next pull continues from it.
                            return Err(DistributionError::Transfer {
                                registry: self.registry(),
                                what: format!("layer {}", self.digest),
                                detail,
                            });
                        }
                        tracing::warn!("layer {}: {detail}; resuming", self.digest);
                    }
                }
            }
            let actual = Digest::from_hex(&hex::encode(std::mem::take(&mut hasher).finalize()))
                .map_err(|_| DistributionError::Task {
                    detail: "digest encoding".to_string(),
                })?;
            if actual != self.digest && from_disk {
                // What an earlier run left was bad (e.g. written before a crash): start over
                // once rather than fail a pull the registry could serve.
                from_disk = false;
                have = 0;
                file.set_len(0)
                    .and_then(|_| file.seek(SeekFrom::Start(0)).map(|_| ()))
                    .map_err(DistributionError::io("truncate", &part))?;
                self.progress.event(Event::Message(format!(
                    "{}: the partial download kept from before was corrupt; starting over",
                    self.id()
                )));
                continue;
            }
            if actual != self.digest {
                return Err(fail(
                    DistributionError::DigestMismatch {
                        registry: self.registry(),
                        what: "layer",
                        expected: self.digest.clone(),
                        actual,
                        size: have,
                    },
                    &part,
                ));
            }
            break;
        }
        file.flush()
            .map_err(DistributionError::io("write", &part))?;
        drop(file);
        self.store.content().adopt(&part, &self.digest)?;
        Ok(fetched)
    }
}

/// Opens the partial file of a blob, locked so two pulls never write one file; if
/// another pull holds it, this one downloads into a private file instead.
fn open_partial(
    fixed: &std::path::Path,
    ingest: &std::path::Path,
) -> Result<(File, PathBuf, Option<Flock<File>>), DistributionError> {
    let open = |p: &std::path::Path, create_new: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if create_new {
            o.create_new(true);
        } else {
            o.create(true).truncate(false);
        }
        o.open(p).map_err(DistributionError::io("open", p))
    };
    let f = open(fixed, false)?;
    let lockf = f
        .try_clone()
        .map_err(DistributionError::io("open", fixed))?;
    match Flock::lock(lockf, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok((f, fixed.to_path_buf(), Some(l))),
        Err(_) => {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let p = ingest.join(format!(
                "pull-{}-{}.partial",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            Ok((open(&p, true)?, p, None))
        }
    }
}
