//! Paths inside the image being built, read from its unpacked layers without mounting:
//! COPY's destination resolved through the image's symlinks, and the directories a COPY
//! passes through, which keep the mode and owner the image gives them.

use std::fs;
use std::path::PathBuf;

use super::layer;
use super::{Builder, State, StepError};

impl Builder<'_> {
    /// The top-most entry for `rel` in the stage's unpacked layers: its host path and
    /// metadata, or `None` if absent or deleted (overlay whiteout, opaque directory).
    /// Never follows a symlink on the host: each component is checked in its layer.
    pub(super) fn lookup(&self, st: &State, rel: &str) -> Option<(PathBuf, fs::Metadata)> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if parts.is_empty() {
            return None;
        }
        let snaps = self.store.snapshotter();
        'layers: for l in st.layers.iter().rev() {
            let mut cur = snaps.layer_dir(&l.diff_id);
            let mut opaque = false;
            for (i, c) in parts.iter().enumerate() {
                cur.push(c);
                let Ok(md) = fs::symlink_metadata(&cur) else {
                    if opaque {
                        return None;
                    }
                    continue 'layers;
                };
                if md.file_type().is_char_device() && md.rdev() == 0 {
                    return None;
                }
                if i + 1 == parts.len() {
                    return Some((cur, md));
                }
                if !md.is_dir() {
                    // A file or symlink hides whatever lower layers have below it.
                    return None;
                }
                opaque |= xattr::get(&cur, crate::unpack::OPAQUE_XATTR)
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == b"y");
            }
        }
        None
    }

    /// Resolves `path` through the stage's symlinks as the container would see it;
    /// `..` never climbs above `/`. Returns an absolute path.
    pub(super) fn resolve_path(&self, st: &State, path: &str) -> Result<String, StepError> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .rev()
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            let cand = if cur.is_empty() {
                c.clone()
            } else {
                format!("{}/{c}", cur.join("/"))
            };
            match self.lookup(st, &cand) {
                Some((host, md)) if md.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(StepError::SymlinkLoop {
                            path: path.to_string(),
                        });
                    }
                    let t = fs::read_link(&host).map_err(|source| StepError::Io {
                        op: "read link",
                        path: host.clone(),
                        source,
                    })?;
                    if t.is_absolute() {
                        cur.clear();
                    }
                    for comp in t.components().rev() {
                        match comp {
                            std::path::Component::Normal(x) => {
                                todo.push(x.to_string_lossy().into_owned())
                            }
                            std::path::Component::ParentDir => todo.push("..".to_string()),
                            _ => {}
                        }
                    }
                }
                _ => cur.push(c),
            }
        }
        Ok(format!("/{}", cur.join("/")))
    }

    /// Directories a COPY only passes through keep the mode and owner they have in the
    /// image, as Docker leaves them.
    pub(super) fn keep_existing_dirs(&self, st: &State, entries: &mut layer::Entries) {
        use std::os::unix::fs::MetadataExt;
        for p in &entries.implicit {
            if let Some((_, md)) = self.lookup(st, p) {
                if let Some(e) = entries.map.get_mut(p).filter(|_| md.is_dir()) {
                    e.mode = md.mode() & 0o7777;
                    e.uid = u64::from(md.uid());
                    e.gid = u64::from(md.gid());
                }
            }
        }
    }
}
