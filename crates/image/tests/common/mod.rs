//! Helpers shared by the image crate's integration tests: layer tarballs built in
//! memory, a private mount namespace to mount overlays in, and tree snapshots.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Builds a layer tarball entry by entry.
pub struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    h
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    pub fn dir(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, uid, gid);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, uid, gid);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn file_xattr(mut self, path: &str, data: &[u8], xattrs: &[(&str, &[u8])]) -> Self {
        let ext: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(ext.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(path, data, 0o644, 0, 0)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn device(mut self, path: &str, char_dev: bool, major: u32, minor: u32) -> Self {
        let kind = if char_dev {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        };
        let mut h = header(kind, 0o660, 0, 6);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn fifo(mut self, path: &str) -> Self {
        let mut h = header(tar::EntryType::Fifo, 0o600, 0, 0);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// An entry whose name (or link name) is written verbatim, bypassing the tar crate's
    /// refusal of `..`: how a hostile layer would look.
    pub fn raw(mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> Self {
        let mut h = header(kind, 0o644, 0, 0);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// Runs `f` on a fresh thread in its own mount namespace (with `/` made private), so
/// mounts made by `f` are never seen by the host and disappear with the thread.
pub fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount ns");
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// One node of a tree, with what the image spec says must be preserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File contents, symlink target, or device numbers.
    pub data: Vec<u8>,
    /// Modification time, for everything but directories (whose mtime depends on how
    /// the tree was assembled, not on the image).
    pub mtime: Option<i64>,
    /// `user.*` extended attributes.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Walks `root` (without following symlinks) into path -> node.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let (kind, data) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_file() {
            let mut v = Vec::new();
            fs::File::open(&p).unwrap().read_to_end(&mut v).unwrap();
            ("file", v)
        } else if ft.is_char_device() {
            ("char", m.rdev().to_string().into_bytes())
        } else if ft.is_block_device() {
            ("block", m.rdev().to_string().into_bytes())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else {
            ("other", Vec::new())
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = if ft.is_symlink() {
            Vec::new()
        } else {
            xattr::list(&p)
                .unwrap()
                .filter_map(|n| n.into_string().ok())
                .filter(|n| n.starts_with("user."))
                .map(|n| {
                    let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                    (n, v)
                })
                .collect()
        };
        xattrs.sort();
        out.insert(
            p.strip_prefix(root).unwrap().to_path_buf(),
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                data,
                mtime: (!ft.is_dir()).then(|| m.mtime()),
                xattrs,
            },
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// Asserts two trees are identical, printing the first differences readably.
pub fn assert_same_tree(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>, what: &str) {
    let mut diffs = Vec::new();
    for (p, n) in a {
        match b.get(p) {
            None => diffs.push(format!("only in first: {}", p.display())),
            Some(m) if m != n => diffs.push(format!(
                "differs: {} ({} {:o} {}:{} mtime {:?} xattrs {:?} vs {} {:o} {}:{} mtime {:?} xattrs {:?}{})",
                p.display(),
                n.kind,
                n.mode,
                n.uid,
                n.gid,
                n.mtime,
                n.xattrs,
                m.kind,
                m.mode,
                m.uid,
                m.gid,
                m.mtime,
                m.xattrs,
                if m.data != n.data { ", contents differ" } else { "" }
            )),
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            diffs.push(format!("only in second: {}", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}
