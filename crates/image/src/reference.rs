//! Image references (`name[:tag]`, `name@sha256:…`) and the local reference store.
//!
//! Names are kept as the user wrote them, with Docker Hub's implicit prefixes
//! (`docker.io/library/`, `docker.io/`) removed so `busybox` and
//! `docker.io/library/busybox` are the same image; a missing tag means `latest`.
//!
//! The reference store maps `name:tag` to the digest of a manifest or index, in one
//! JSON file replaced atomically (temp file, fsync, rename) on every change; callers
//! serialize writers with the image store's lock.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::Category;

/// Errors of reference parsing and the reference store.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("invalid image reference {value:?}: {reason}")]
    Invalid { value: String, reason: &'static str },
    #[error("reference store {path} is corrupt; fix or remove it")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("reference store: cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RefError {
    pub fn category(&self) -> Category {
        match self {
            Self::Invalid { .. } | Self::Corrupt { .. } => Category::Invalid,
            Self::Io { .. } => Category::Unavailable,
        }
    }
}

/// A parsed `name:tag`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedRef {
    pub name: String,
    pub tag: String,
}

impl std::fmt::Display for NamedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl NamedRef {
    /// Parses `name[:tag]`; refuses digests (`@`), empty parts and characters a
    /// registry would refuse.
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let bad = |reason| RefError::Invalid {
            value: s.to_string(),
            reason,
        };
        if s.contains('@') {
            return Err(bad("a digest reference cannot be used as a name"));
        }
        // The tag is after the last ':' unless a '/' follows it (then it was a port).
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i + 1..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, "latest"),
        };
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        if tag.is_empty() || tag.len() > 128 {
            return Err(bad("tag must be 1-128 characters"));
        }
        if !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            || tag.starts_with(['.', '-'])
        {
            return Err(bad(
                "tag may contain only [A-Za-z0-9_.-] and must not start with '.' or '-'",
            ));
        }
        if !name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'_' | b'-' | b'/' | b':')
        }) || name.starts_with(['/', '.', '-'])
            || name.ends_with('/')
            || name.contains("//")
        {
            return Err(bad(
                "name may contain only lowercase letters, digits and . _ - / (and a registry port)",
            ));
        }
        let name = name
            .strip_prefix("docker.io/library/")
            .or_else(|| name.strip_prefix("docker.io/"))
            .unwrap_or(name);
        Ok(Self {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct RefFile {
    /// `name:tag` -> manifest or index digest.
    images: BTreeMap<String, Digest>,
}

/// The on-disk `name:tag -> digest` map.
pub struct RefStore {
    path: PathBuf,
}

impl RefStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn all(&self) -> Result<BTreeMap<String, Digest>, RefError> {
        match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice::<RefFile>(&b)
                .map(|f| f.images)
                .map_err(|source| RefError::Corrupt {
                    path: self.path.clone(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(RefError::Io {
                op: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    pub fn get(&self, r: &NamedRef) -> Result<Option<Digest>, RefError> {
        Ok(self.all()?.remove(&r.to_string()))
    }

    /// Applies `f` to the map and writes it back atomically.
    pub fn update(&self, f: impl FnOnce(&mut BTreeMap<String, Digest>)) -> Result<(), RefError> {
        let mut images = self.all()?;
        f(&mut images);
        let bytes =
            serde_json::to_vec_pretty(&RefFile { images }).map_err(|source| RefError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        write_atomic(&self.path, &bytes).map_err(|source| RefError::Io {
            op: "write",
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes a file so that readers see either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp)?;
    let r = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = r.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refs() {
        let r = |s| NamedRef::parse(s).unwrap().to_string();
        assert_eq!(r("busybox"), "busybox:latest");
        assert_eq!(r("docker.io/library/busybox:1.36"), "busybox:1.36");
        assert_eq!(r("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(r("localhost:5000/app:v1"), "localhost:5000/app:v1");
        for bad in ["", "UPPER", "a:", "a@sha256:00", "../x", "a:b c", "/abs"] {
            assert!(NamedRef::parse(bad).is_err(), "{bad}");
        }
    }
}
