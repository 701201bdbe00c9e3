//! Content-addressed blob storage.
//!
//! Contract: a blob is visible under its digest only once all of its bytes are on disk
//! and match that digest. Writers stage into a temporary file and `commit` verifies the
//! digest (and the expected size, if given), fsyncs, and renames into place, so a crash
//! or an error mid-write never leaves a visible partial blob; an uncommitted writer
//! removes its temporary file when dropped. Storing a blob that already exists is a
//! no-op, so a layer shared by many images is stored once.
//!
//! [`FsContentStore`] lays blobs out as `<root>/blobs/sha256/<hex>` (the OCI layout's
//! shape) and stages in `<root>/ingest/`. [`conformance`] is the suite every backend runs.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, Hashing};
use crate::error::Category;

/// Errors of content store operations.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {digest} not found in the content store")]
    NotFound { digest: Digest },
    #[error("blob content does not match its digest: expected {expected}, got {actual} ({size} bytes); the source is corrupt or truncated")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {digest} has {actual} bytes but {expected} were expected; the source is corrupt or truncated")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("content store: cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ContentError {
    pub fn category(&self) -> Category {
        match self {
            Self::NotFound { .. } => Category::NotFound,
            Self::DigestMismatch { .. } | Self::SizeMismatch { .. } => Category::Invalid,
            Self::Io { .. } => Category::Unavailable,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a blob ended up after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// A staged blob: bytes written here become visible only through [`BlobWriter::commit`].
pub trait BlobWriter: Write {
    /// Verifies the staged bytes against `expected` (digest and, if given, size) and
    /// makes the blob visible. Without `expected`, the computed digest is used.
    fn commit(
        self: Box<Self>,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobInfo, ContentError>;

    /// Digest and size of what has been written so far (before commit).
    fn digest_so_far(&self) -> BlobInfo;

    /// Re-reads the staged bytes from the start, so a caller can validate a blob (e.g.
    /// decompress a layer) before deciding to commit it. The reader is independent of
    /// the writer (and `Send`), so several staged layers can be unpacked on their own
    /// threads at once; it must not outlive the writer, whose drop discards the bytes.
    fn read_staged(&mut self) -> Result<Box<dyn Read + Send>, ContentError>;
}

/// Blob storage keyed by sha256 digest.
pub trait ContentStore {
    /// Size of the blob, or `None` if it is absent.
    fn stat(&self, digest: &Digest) -> Result<Option<u64>, ContentError>;

    /// Opens a blob for reading.
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ContentError>;

    /// Starts staging a new blob.
    fn writer(&self) -> Result<Box<dyn BlobWriter + '_>, ContentError>;

    /// Removes a blob; returns whether it existed.
    fn delete(&self, digest: &Digest) -> Result<bool, ContentError>;

    /// Every stored blob.
    fn list(&self) -> Result<Vec<Digest>, ContentError>;

    /// Reads a whole (small) blob: manifests, configs, indexes.
    fn read_all(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut buf = Vec::new();
        self.open(digest)?
            .read_to_end(&mut buf)
            .map_err(|source| ContentError::Io {
                op: "read blob",
                path: PathBuf::from(digest.to_string()),
                source,
            })?;
        let actual = Digest::of(&buf);
        if &actual != digest {
            // Stored content went bad under us (disk corruption, manual edits): say so
            // instead of handing out bytes that do not match their name.
            return Err(ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
                size: buf.len() as u64,
            });
        }
        Ok(buf)
    }

    /// Stores a byte slice and returns its digest.
    fn put(&self, bytes: &[u8]) -> Result<BlobInfo, ContentError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(|source| ContentError::Io {
            op: "stage blob",
            path: PathBuf::from("<ingest>"),
            source,
        })?;
        w.commit(None, Some(bytes.len() as u64))
    }
}

/// The on-disk content store.
pub struct FsContentStore {
    root: PathBuf,
    counter: AtomicU64,
}

impl FsContentStore {
    /// Opens (creating if needed) a store rooted at `root`. Leftover staging files from
    /// a crashed writer are removed: they were never visible, so nothing refers to them.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ContentError> {
        let root = root.into();
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        let ingest = root.join("ingest");
        fs::create_dir_all(&ingest).map_err(io_err("create", &ingest))?;
        Ok(Self {
            root,
            counter: AtomicU64::new(0),
        })
    }

    /// Removes staging files older than a writer can plausibly be alive for. Called by
    /// prune, not by `open`, because another process may be writing right now.
    pub fn clean_ingest(&self, older_than: std::time::Duration) -> Result<usize, ContentError> {
        let ingest = self.root.join("ingest");
        let mut n = 0;
        let now = std::time::SystemTime::now();
        for e in fs::read_dir(&ingest).map_err(io_err("read", &ingest))? {
            let e = e.map_err(io_err("read", &ingest))?;
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > older_than)
                .unwrap_or(false);
            if old && fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where writers stage blobs; files here are never visible as blobs. Callers that
    /// stage on their own (resumable downloads) put their partial files here too.
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Makes a file staged in [`FsContentStore::ingest_dir`] visible as `digest`. The
    /// caller must already have verified the file's digest and size while writing it
    /// (a download hashes as it streams, so reading it again here would double the I/O).
    pub fn adopt(&self, staged: &Path, digest: &Digest) -> Result<(), ContentError> {
        let dst = self.blob_path(digest);
        if dst.exists() {
            let _ = fs::remove_file(staged);
            return Ok(());
        }
        File::open(staged)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync", staged))?;
        fs::rename(staged, &dst).map_err(io_err("rename into place", &dst))?;
        let dir = self.root.join("blobs/sha256");
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &dir))
    }

    /// Path of a blob inside the store (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }
}

impl ContentStore for FsContentStore {
    fn stat(&self, digest: &Digest) -> Result<Option<u64>, ContentError> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ContentError> {
        let p = self.blob_path(digest);
        match File::open(&p) {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(256 * 1024, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(io_err("open", &p)(e)),
        }
    }

    fn writer(&self) -> Result<Box<dyn BlobWriter + '_>, ContentError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = self
            .root
            .join("ingest")
            .join(format!("{}-{n}-{nanos}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok(Box::new(FsBlobWriter {
            store: self,
            out: Some(Hashing::new(io::BufWriter::with_capacity(256 * 1024, file))),
            path,
        }))
    }

    fn delete(&self, digest: &Digest) -> Result<bool, ContentError> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        crate::digest::digests_in(&dir).map_err(io_err("read", &dir))
    }
}

struct FsBlobWriter<'a> {
    store: &'a FsContentStore,
    out: Option<Hashing<io::BufWriter<File>>>,
    path: PathBuf,
}

impl Write for FsBlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            Some(o) => o.write(buf),
            None => Err(io::Error::other("blob writer already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl FsBlobWriter<'_> {
    fn finish_file(&mut self) -> Result<(BlobInfo, File), ContentError> {
        let out = self.out.take().ok_or_else(|| ContentError::Io {
            op: "finish",
            path: self.path.clone(),
            source: io::Error::other("blob writer already finished"),
        })?;
        let (digest, size, buf) = out.finish();
        let file = buf
            .into_inner()
            .map_err(|e| io_err("write", &self.path)(e.into_error()))?;
        Ok((BlobInfo { digest, size }, file))
    }
}

impl BlobWriter for FsBlobWriter<'_> {
    fn commit(
        mut self: Box<Self>,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobInfo, ContentError> {
        let (info, file) = self.finish_file()?;
        if let Some(exp) = expected {
            if exp != &info.digest {
                return Err(ContentError::DigestMismatch {
                    expected: exp.clone(),
                    actual: info.digest,
                    size: info.size,
                });
            }
        }
        if let Some(exp) = expected_size {
            if exp != info.size {
                return Err(ContentError::SizeMismatch {
                    digest: info.digest,
                    expected: exp,
                    actual: info.size,
                });
            }
        }
        let dst = self.store.blob_path(&info.digest);
        if dst.exists() {
            // Already stored (shared layer): keep the existing copy; Drop removes ours.
            return Ok(info);
        }
        file.sync_all().map_err(io_err("fsync", &self.path))?;
        drop(file);
        fs::rename(&self.path, &dst).map_err(io_err("rename into place", &dst))?;
        // The rename is durable only once the directory entry is: fsync the directory.
        let dir = self.store.root.join("blobs/sha256");
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &dir))?;
        Ok(info)
    }

    fn digest_so_far(&self) -> BlobInfo {
        match &self.out {
            Some(o) => {
                // Hashing state cannot be peeked without cloning; sha2 hashers are Clone.
                let h = o.clone_state();
                BlobInfo {
                    digest: h.0,
                    size: h.1,
                }
            }
            None => BlobInfo {
                digest: Digest::of(b""),
                size: 0,
            },
        }
    }

    fn read_staged(&mut self) -> Result<Box<dyn Read + Send>, ContentError> {
        if let Some(o) = &mut self.out {
            o.flush().map_err(io_err("flush", &self.path))?;
        }
        let f = File::open(&self.path).map_err(io_err("reopen", &self.path))?;
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, f)))
    }
}

impl Drop for FsBlobWriter<'_> {
    fn drop(&mut self) {
        // Either committed (renamed away, so this fails harmlessly) or abandoned.
        let _ = fs::remove_file(&self.path);
    }
}

/// The conformance suite every [`ContentStore`] backend runs. `make` returns a fresh,
/// empty store each call.
pub mod conformance {
    use super::*;

    /// Runs every check; panics (test failure) on the first violation.
    pub fn run_all<S: ContentStore>(make: &dyn Fn() -> S) {
        put_get_roundtrip(&make());
        dedup(&make());
        mismatch_leaves_nothing(&make());
        abandoned_writer_leaves_nothing(&make());
        missing_is_not_found(&make());
        delete_and_list(&make());
        read_staged_before_commit(&make());
    }

    #[allow(clippy::unwrap_used)]
    fn put_get_roundtrip<S: ContentStore>(s: &S) {
        let info = s.put(b"hello").unwrap();
        assert_eq!(info.digest, Digest::of(b"hello"));
        assert_eq!(info.size, 5);
        assert_eq!(s.stat(&info.digest).unwrap(), Some(5));
        assert_eq!(s.read_all(&info.digest).unwrap(), b"hello");
    }

    #[allow(clippy::unwrap_used)]
    fn dedup<S: ContentStore>(s: &S) {
        let a = s.put(b"same").unwrap();
        let b = s.put(b"same").unwrap();
        assert_eq!(a, b);
        assert_eq!(s.list().unwrap(), vec![a.digest]);
    }

    #[allow(clippy::unwrap_used)]
    fn mismatch_leaves_nothing<S: ContentStore>(s: &S) {
        let mut w = s.writer().unwrap();
        w.write_all(b"truncat").unwrap();
        let err = w.commit(Some(&Digest::of(b"truncated")), None).unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert_eq!(err.category(), Category::Invalid);
        let mut w = s.writer().unwrap();
        w.write_all(b"abc").unwrap();
        let err = w.commit(None, Some(4)).unwrap_err();
        assert!(matches!(err, ContentError::SizeMismatch { .. }), "{err}");
        assert!(s.list().unwrap().is_empty());
    }

    #[allow(clippy::unwrap_used)]
    fn abandoned_writer_leaves_nothing<S: ContentStore>(s: &S) {
        let mut w = s.writer().unwrap();
        w.write_all(b"half a blob").unwrap();
        drop(w);
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.stat(&Digest::of(b"half a blob")).unwrap(), None);
    }

    #[allow(clippy::unwrap_used)]
    fn missing_is_not_found<S: ContentStore>(s: &S) {
        let d = Digest::of(b"nope");
        match s.open(&d) {
            Err(e) => assert_eq!(e.category(), Category::NotFound),
            Ok(_) => panic!("opened a missing blob"),
        }
        assert_eq!(s.stat(&d).unwrap(), None);
    }

    #[allow(clippy::unwrap_used)]
    fn delete_and_list<S: ContentStore>(s: &S) {
        let a = s.put(b"a").unwrap().digest;
        let b = s.put(b"b").unwrap().digest;
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(s.list().unwrap(), both);
        assert!(s.delete(&a).unwrap());
        assert!(!s.delete(&a).unwrap());
        assert_eq!(s.list().unwrap(), vec![b]);
    }

    #[allow(clippy::unwrap_used)]
    fn read_staged_before_commit<S: ContentStore>(s: &S) {
        let mut w = s.writer().unwrap();
        w.write_all(b"staged bytes").unwrap();
        assert_eq!(w.digest_so_far().digest, Digest::of(b"staged bytes"));
        let mut back = Vec::new();
        w.read_staged().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, b"staged bytes");
        assert!(s.list().unwrap().is_empty(), "visible before commit");
        w.commit(None, None).unwrap();
        assert_eq!(s.list().unwrap(), vec![Digest::of(b"staged bytes")]);
    }
}
