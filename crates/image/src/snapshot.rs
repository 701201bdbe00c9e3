//! Snapshots: unpacked layers and containers' writable layers.
//!
//! Contract of [`Snapshotter`]: a layer, named by its diff ID, is unpacked once into a
//! directory that is never written again and is shared by every image and container
//! that uses it. `prepare(key, layers)` creates a container's writable layer and returns
//! the mounts that assemble its root filesystem; the snapshotter never mounts anything
//! itself, so callers choose the mount namespace (and tests can mount in a private one).
//! `remove(key)` deletes the writable layer; the caller must have unmounted it.
//!
//! [`OverlaySnapshotter`] layout under its root:
//! `layers/<diff-id hex>/` (overlay lower dirs), `active/<key>/{upper,work}` plus
//! `active/<key>/layers.json` (what the snapshot stands on, for prune), `tmp/` (unpacks in
//! progress: renamed into `layers/` only once complete and verified).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::Category;
use crate::unpack::{unpack_layer, LayerInfo, UnpackError};

/// Errors of snapshot operations.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {key:?} not found")]
    NotFound { key: String },
    #[error("snapshot {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("layer {diff_id} is not unpacked")]
    LayerMissing { diff_id: Digest },
    #[error("invalid snapshot key {key:?}: use 1-128 characters of [A-Za-z0-9_.-], not starting with '.'")]
    InvalidKey { key: String },
    #[error("layer content does not match its diff ID: expected {expected}, got {actual}; the layer blob is corrupt")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("unpacking layer {diff_id}")]
    Unpack {
        diff_id: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("snapshotter: cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SnapshotError {
    pub fn category(&self) -> Category {
        match self {
            Self::NotFound { .. } | Self::LayerMissing { .. } => Category::NotFound,
            Self::AlreadyExists { .. } => Category::AlreadyExists,
            Self::InvalidKey { .. } | Self::DiffIdMismatch { .. } => Category::Invalid,
            Self::Unpack { source, .. } => source.category(),
            Self::Io { .. } => Category::Unavailable,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One mount, in mount(2) terms, to be performed by the caller at the rootfs path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Filesystem type (`overlay`).
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

impl Mount {
    /// The options as mount(2)'s data string.
    pub fn data(&self) -> String {
        self.options.join(",")
    }
}

/// Layered snapshots of unpacked image layers.
pub trait Snapshotter {
    fn has_layer(&self, diff_id: &Digest) -> Result<bool, SnapshotError>;

    /// Unpacks a layer blob (compressed or not) unless already present; the unpacked
    /// content must hash to `diff_id` or nothing is kept.
    fn unpack(&self, diff_id: &Digest, blob: &mut dyn Read) -> Result<(), SnapshotError>;

    /// Creates the writable snapshot `key` over `layers` (bottom first) and returns the
    /// mounts that make its root filesystem.
    fn prepare(&self, key: &str, layers: &[Digest]) -> Result<Vec<Mount>, SnapshotError>;

    /// The mounts of an existing snapshot.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError>;

    /// Removes a writable snapshot; returns whether it existed.
    fn remove(&self, key: &str) -> Result<bool, SnapshotError>;

    /// Every unpacked layer.
    fn layers(&self) -> Result<Vec<Digest>, SnapshotError>;

    /// Removes an unpacked layer; returns whether it existed.
    fn remove_layer(&self, diff_id: &Digest) -> Result<bool, SnapshotError>;

    /// Every writable snapshot with the layers it stands on.
    fn active(&self) -> Result<Vec<(String, Vec<Digest>)>, SnapshotError>;
}

/// Overlayfs snapshots on a local directory.
pub struct OverlaySnapshotter {
    root: PathBuf,
    counter: AtomicU64,
}

impl OverlaySnapshotter {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let root = root.into();
        for d in ["layers", "active", "tmp", "empty"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        Ok(Self {
            root,
            counter: AtomicU64::new(0),
        })
    }

    /// Directory of an unpacked layer (an overlay lower dir).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    fn active_dir(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        let ok = !key.is_empty()
            && key.len() <= 128
            && !key.starts_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok {
            return Err(SnapshotError::InvalidKey {
                key: key.to_string(),
            });
        }
        Ok(self.root.join("active").join(key))
    }

    /// The writable (upper) directory of a snapshot.
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        Ok(self.active_dir(key)?.join("upper"))
    }

    fn overlay(&self, dir: &Path, layers: &[Digest]) -> Vec<Mount> {
        // overlayfs lists lower dirs top-most first; an image without layers still
        // needs one lower dir.
        let lower: Vec<String> = if layers.is_empty() {
            vec![self.root.join("empty").display().to_string()]
        } else {
            layers
                .iter()
                .rev()
                .map(|d| self.layer_dir(d).display().to_string())
                .collect()
        };
        vec![Mount {
            kind: "overlay".to_string(),
            source: "overlay".to_string(),
            options: vec![
                format!("lowerdir={}", lower.join(":")),
                format!("upperdir={}", dir.join("upper").display()),
                format!("workdir={}", dir.join("work").display()),
            ],
        }]
    }

    fn read_parents(&self, dir: &Path) -> Result<Vec<Digest>, SnapshotError> {
        let p = dir.join("layers.json");
        let bytes = fs::read(&p).map_err(io_err("read", &p))?;
        serde_json::from_slice(&bytes).map_err(|e| io_err("parse", &p)(io::Error::other(e)))
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn has_layer(&self, diff_id: &Digest) -> Result<bool, SnapshotError> {
        Ok(self.layer_dir(diff_id).is_dir())
    }

    fn unpack(&self, diff_id: &Digest, blob: &mut dyn Read) -> Result<(), SnapshotError> {
        let dst = self.layer_dir(diff_id);
        if dst.is_dir() {
            return Ok(());
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}-{}-{n}", diff_id.short(), std::process::id()));
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let info: LayerInfo = unpack_layer(blob, &tmp).map_err(|source| SnapshotError::Unpack {
            diff_id: diff_id.clone(),
            source,
        })?;
        if &info.diff_id != diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual: info.diff_id,
            });
        }
        match fs::rename(&tmp, &dst) {
            Ok(()) => {}
            // Another process unpacked the same layer first: theirs is as good as ours.
            Err(_) if dst.is_dir() => return Ok(()),
            Err(e) => return Err(io_err("rename into place", &dst)(e)),
        }
        std::mem::forget(guard);
        Ok(())
    }

    fn prepare(&self, key: &str, layers: &[Digest]) -> Result<Vec<Mount>, SnapshotError> {
        let dir = self.active_dir(key)?;
        for l in layers {
            if !self.has_layer(l)? {
                return Err(SnapshotError::LayerMissing { diff_id: l.clone() });
            }
        }
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SnapshotError::AlreadyExists {
                    key: key.to_string(),
                })
            }
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        let guard = RemoveOnDrop(Some(dir.clone()));
        for d in ["upper", "work"] {
            let p = dir.join(d);
            fs::create_dir(&p).map_err(io_err("create", &p))?;
        }
        let p = dir.join("layers.json");
        let json =
            serde_json::to_vec(layers).map_err(|e| io_err("encode", &p)(io::Error::other(e)))?;
        fs::write(&p, json).map_err(io_err("write", &p))?;
        std::mem::forget(guard);
        Ok(self.overlay(&dir, layers))
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let dir = self.active_dir(key)?;
        if !dir.is_dir() {
            return Err(SnapshotError::NotFound {
                key: key.to_string(),
            });
        }
        let layers = self.read_parents(&dir)?;
        Ok(self.overlay(&dir, &layers))
    }

    fn remove(&self, key: &str) -> Result<bool, SnapshotError> {
        let dir = self.active_dir(key)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    fn layers(&self) -> Result<Vec<Digest>, SnapshotError> {
        let dir = self.root.join("layers");
        crate::digest::digests_in(&dir).map_err(io_err("read", &dir))
    }

    fn remove_layer(&self, diff_id: &Digest) -> Result<bool, SnapshotError> {
        let dst = self.layer_dir(diff_id);
        if !dst.is_dir() {
            return Ok(false);
        }
        // Rename first so a half-deleted layer is never mistaken for a complete one.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("tmp").join(format!(
            "rm-{}-{}-{n}",
            diff_id.short(),
            std::process::id()
        ));
        fs::rename(&dst, &tmp).map_err(io_err("rename", &dst))?;
        fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        Ok(true)
    }

    fn active(&self) -> Result<Vec<(String, Vec<Digest>)>, SnapshotError> {
        let dir = self.root.join("active");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let e = e.map_err(io_err("read", &dir))?;
            let Some(key) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let layers = self.read_parents(&e.path()).unwrap_or_default();
            out.push((key, layers));
        }
        out.sort();
        Ok(out)
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// The conformance suite every [`Snapshotter`] runs. `make` returns a fresh, empty
/// snapshotter each call. Mount behaviour (whiteouts in the merged view, copy-on-write)
/// needs a mount namespace and is tested per backend.
pub mod conformance {
    use super::*;

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            #[allow(clippy::unwrap_used)]
            b.append_data(&mut h, name, *data).unwrap();
        }
        #[allow(clippy::unwrap_used)]
        b.into_inner().unwrap()
    }

    /// Runs every check; panics (test failure) on the first violation.
    pub fn run_all<S: Snapshotter>(make: &dyn Fn() -> S) {
        unpack_once_and_verified(&make());
        prepare_mounts_remove(&make());
        bad_keys_and_missing_layers(&make());
    }

    #[allow(clippy::unwrap_used)]
    fn unpack_once_and_verified<S: Snapshotter>(s: &S) {
        let l = layer(&[("a", b"a")]);
        let d = Digest::of(&l);
        assert!(!s.has_layer(&d).unwrap());
        s.unpack(&d, &mut &l[..]).unwrap();
        assert!(s.has_layer(&d).unwrap());
        // Again: a no-op, even with a stream that would not verify.
        s.unpack(&d, &mut &b"garbage"[..]).unwrap();
        assert_eq!(s.layers().unwrap(), vec![d.clone()]);
        let lie = Digest::of(b"not this layer");
        let err = s.unpack(&lie, &mut &l[..]).unwrap_err();
        assert_eq!(err.category(), Category::Invalid, "{err}");
        assert!(!s.has_layer(&lie).unwrap());
        assert_eq!(s.layers().unwrap(), vec![d.clone()]);
        assert!(s.remove_layer(&d).unwrap());
        assert!(!s.remove_layer(&d).unwrap());
        assert!(s.layers().unwrap().is_empty());
    }

    #[allow(clippy::unwrap_used)]
    fn prepare_mounts_remove<S: Snapshotter>(s: &S) {
        let (l1, l2) = (layer(&[("a", b"1")]), layer(&[("b", b"2")]));
        let (d1, d2) = (Digest::of(&l1), Digest::of(&l2));
        s.unpack(&d1, &mut &l1[..]).unwrap();
        s.unpack(&d2, &mut &l2[..]).unwrap();
        let layers = vec![d1.clone(), d2.clone()];
        let m = s.prepare("c1", &layers).unwrap();
        assert!(!m.is_empty());
        assert_eq!(s.mounts("c1").unwrap(), m);
        let err = s.prepare("c1", &layers).unwrap_err();
        assert_eq!(err.category(), Category::AlreadyExists);
        s.prepare("c2", &[]).unwrap();
        assert_eq!(
            s.active().unwrap(),
            vec![
                ("c1".to_string(), layers.clone()),
                ("c2".to_string(), vec![])
            ]
        );
        assert!(s.remove("c1").unwrap());
        assert!(!s.remove("c1").unwrap());
        assert_eq!(s.mounts("c1").unwrap_err().category(), Category::NotFound);
        assert_eq!(s.layers().unwrap().len(), 2, "layers outlive snapshots");
    }

    #[allow(clippy::unwrap_used)]
    fn bad_keys_and_missing_layers<S: Snapshotter>(s: &S) {
        for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(200)] {
            let err = s.prepare(bad, &[]).unwrap_err();
            assert_eq!(err.category(), Category::Invalid, "{bad:?}: {err}");
        }
        let err = s.prepare("c", &[Digest::of(b"absent")]).unwrap_err();
        assert_eq!(err.category(), Category::NotFound);
        assert!(
            s.active().unwrap().is_empty(),
            "a failed prepare leaves nothing"
        );
    }
}
