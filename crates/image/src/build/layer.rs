//! Layer tars made by a build: a sorted set of entries written with fixed mtimes.
//!
//! Both COPY/ADD (entries gathered from the context) and RUN (entries read back from the
//! overlay upper dir) go through [`Entries`], so a layer's bytes depend only on paths,
//! modes, owners and contents: entries are sorted by path and every mtime is the build's
//! epoch (SOURCE_DATE_EPOCH, default 0). That is what makes a rebuild byte-identical.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::StepError;
use crate::unpack::OPAQUE_XATTR;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum Data {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// One node of a layer.
#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    File(Data),
    Symlink(String),
    /// A hard link to an earlier entry (path inside the layer).
    Link(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub node: Node,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// Layer entries keyed by their path inside the image (no leading `/`).
#[derive(Debug, Default)]
pub struct Entries {
    pub map: BTreeMap<String, Entry>,
    /// Directories added only because something is copied into them: when they already
    /// exist in the image, they keep their mode and owner (e.g. /tmp stays 1777).
    pub implicit: BTreeSet<String>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StepError + 'a {
    move |source| StepError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Entries {
    /// Adds `path`, first adding any missing parent directories (root-owned, 0755, as
    /// Docker creates them).
    pub fn insert(&mut self, path: &str, e: Entry) {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return;
        }
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(p);
            if !self.map.contains_key(&prefix) {
                self.implicit.insert(prefix.clone());
                self.map.insert(
                    prefix.clone(),
                    Entry {
                        node: Node::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    },
                );
            }
        }
        self.implicit.remove(path);
        self.map.insert(path.to_string(), e);
    }

    /// Adds a directory that is kept as it is if the image already has it.
    pub fn insert_implicit_dir(&mut self, path: &str, e: Entry) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.map.contains_key(path) {
            return;
        }
        self.insert(path, e);
        self.implicit.insert(path.to_string());
    }

    /// Writes the entries as a tar with every mtime set to `epoch`.
    pub fn write_tar(&self, out: impl Write, epoch: u64) -> Result<(), StepError> {
        let tar_err = |path: &str| {
            let path = PathBuf::from(path);
            move |source| StepError::Io {
                op: "write layer entry",
                path,
                source,
            }
        };
        let mut b = tar::Builder::new(out);
        b.mode(tar::HeaderMode::Complete);
        for (path, e) in &self.map {
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode & 0o7777);
            h.set_uid(e.uid);
            h.set_gid(e.gid);
            h.set_mtime(epoch);
            match &e.node {
                Node::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), io::empty())
                        .map_err(tar_err(path))?;
                }
                Node::File(Data::Bytes(bytes)) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, path, bytes.as_slice())
                        .map_err(tar_err(path))?;
                }
                Node::File(Data::Path(src)) => {
                    let f = File::open(src).map_err(io_err("open", src))?;
                    let len = f.metadata().map_err(io_err("stat", src))?.len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(len);
                    // A file that changes size while we read it would corrupt the tar:
                    // take exactly `len` bytes and fail if fewer arrive.
                    let mut r = io::Read::take(f, len);
                    b.append_data(&mut h, path, &mut r).map_err(tar_err(path))?;
                }
                Node::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).map_err(tar_err(path))?;
                }
                Node::Link(target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).map_err(tar_err(path))?;
                }
                Node::Char(ma, mi) | Node::Block(ma, mi) => {
                    h.set_entry_type(if matches!(e.node, Node::Char(..)) {
                        tar::EntryType::Char
                    } else {
                        tar::EntryType::Block
                    });
                    h.set_size(0);
                    h.set_device_major(*ma).map_err(tar_err(path))?;
                    h.set_device_minor(*mi).map_err(tar_err(path))?;
                    b.append_data(&mut h, path, io::empty())
                        .map_err(tar_err(path))?;
                }
                Node::Fifo => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_size(0);
                    b.append_data(&mut h, path, io::empty())
                        .map_err(tar_err(path))?;
                }
            }
        }
        b.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(tar_err("(end of layer)"))?;
        Ok(())
    }
}

/// Reads an overlay upper dir back as layer entries, turning overlay whiteouts (0:0
/// character devices, `trusted.overlay.opaque=y` dirs) into OCI `.wh.` entries.
pub fn from_upper(upper: &Path) -> Result<Entries, StepError> {
    let mut found: Vec<(String, PathBuf, fs::Metadata)> = Vec::new();
    walk(upper, "", &mut found)?;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Entries::default();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    for (rel, host, md) in found {
        let ft = md.file_type();
        let base = Entry {
            node: Node::Dir,
            mode: md.mode(),
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
        };
        let node = if ft.is_char_device() && md.rdev() == 0 {
            let (dir, name) = match rel.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n),
                None => (String::new(), rel.as_str()),
            };
            out.insert(
                &format!("{dir}.wh.{name}"),
                Entry {
                    node: Node::File(Data::Bytes(Vec::new())),
                    mode: 0,
                    uid: 0,
                    gid: 0,
                },
            );
            continue;
        } else if ft.is_dir() {
            let opaque = xattr::get(&host, OPAQUE_XATTR)
                .map_err(io_err("read xattrs of", &host))?
                .is_some_and(|v| v == b"y");
            if opaque {
                out.insert(
                    &format!("{rel}/.wh..wh..opq"),
                    Entry {
                        node: Node::File(Data::Bytes(Vec::new())),
                        mode: 0,
                        uid: 0,
                        gid: 0,
                    },
                );
            }
            Node::Dir
        } else if ft.is_symlink() {
            let t = fs::read_link(&host).map_err(io_err("read link", &host))?;
            Node::Symlink(t.to_string_lossy().into_owned())
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                    out.insert(
                        &rel,
                        Entry {
                            node: Node::Link(first.clone()),
                            ..base
                        },
                    );
                    continue;
                }
                inodes.insert((md.dev(), md.ino()), rel.clone());
            }
            Node::File(Data::Path(host.clone()))
        } else if ft.is_char_device() || ft.is_block_device() {
            let (ma, mi) = (libc::major(md.rdev()), libc::minor(md.rdev()));
            if ft.is_char_device() {
                Node::Char(ma, mi)
            } else {
                Node::Block(ma, mi)
            }
        } else if ft.is_fifo() {
            Node::Fifo
        } else {
            // Sockets cannot be stored in a tar; Docker drops them too.
            continue;
        };
        out.insert(&rel, Entry { node, ..base });
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(String, PathBuf, fs::Metadata)>,
) -> Result<(), StepError> {
    for e in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let e = e.map_err(io_err("read", dir))?;
        let host = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = fs::symlink_metadata(&host).map_err(io_err("stat", &host))?;
        let is_dir = md.is_dir();
        out.push((r.clone(), host.clone(), md));
        if is_dir {
            walk(&host, &r, out)?;
        }
    }
    Ok(())
}
