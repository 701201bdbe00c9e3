//! Applying one layer tarball to a directory, for the overlay snapshotter.
//!
//! Contract: [`unpack_layer`] reads a (gzip, zstd or uncompressed) layer stream, writes
//! its entries under `target` and returns the layer's diff ID (sha256 of the
//! uncompressed tar). The result is an overlayfs lower directory:
//! - OCI whiteouts become overlay whiteouts: `.wh.NAME` a 0:0 character device `NAME`,
//!   `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory; other
//!   `.wh..wh.*` AUFS metadata is dropped.
//! - Regular files, directories, symlinks, hard links, character and block devices and
//!   FIFOs keep uid/gid, mode (with setuid/setgid/sticky), mtime and xattrs. Xattrs in
//!   the `trusted.overlay.` namespace are dropped: they would let a layer forge overlay
//!   metadata (redirects, opacity).
//! - Nothing is written outside `target`: entry and hard-link names with `..` are
//!   refused, a leading `/` is relative to `target` (as GNU tar treats it), and no write
//!   goes through a symlink (an entry whose parent is a symlink is refused). Symlink
//!   targets are stored verbatim: they are resolved inside the container's root, and
//!   this code never follows them.
//!
//! The caller unpacks into a fresh directory and discards it on error; [`scan_layer`]
//! runs the same name checks and diff ID computation without writing anything, so an
//! archive can be refused before anything is stored.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use crate::digest::{Digest, HashingReader};
use crate::error::Category;
use crate::manifest::{decompress, Compression};

/// The xattr overlayfs reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Errors applying or scanning a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?} is unsafe: {reason}")]
    UnsafePath { path: PathBuf, reason: &'static str },
    #[error("layer is corrupt or truncated (after {entries} entries)")]
    Corrupt {
        entries: usize,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: unsupported tar entry type {kind}")]
    UnsupportedEntry { path: PathBuf, kind: u8 },
    #[error("layer entry {path:?}: hard link to {target:?}, which is not earlier in the layer")]
    DanglingHardlink { path: PathBuf, target: PathBuf },
    #[error("cannot {op} {path} while unpacking a layer")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    pub fn category(&self) -> Category {
        match self {
            Self::Io { .. } => Category::Unavailable,
            _ => Category::Invalid,
        }
    }
}

/// What an unpack or scan learned about a layer.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub size: u64,
    pub compression: Compression,
    pub entries: usize,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Normalizes an archive member name to a path relative to the layer root: strips `./`
/// and leading `/`, refuses `..`. The empty path is the root itself.
pub fn safe_relative(name: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(UnpackError::UnsafePath {
                    path: name.to_path_buf(),
                    reason: "contains '..'",
                })
            }
            Component::Prefix(_) => {
                return Err(UnpackError::UnsafePath {
                    path: name.to_path_buf(),
                    reason: "has a path prefix",
                })
            }
        }
    }
    Ok(out)
}

/// Reads every entry of a layer, checking names, and returns its diff ID. Writes nothing.
pub fn scan_layer(reader: impl Read) -> Result<LayerInfo, UnpackError> {
    walk(reader, None)
}

/// Unpacks a layer into `target` (an existing, empty directory).
pub fn unpack_layer(reader: impl Read, target: &Path) -> Result<LayerInfo, UnpackError> {
    walk(reader, Some(target))
}

fn corrupt(entries: usize) -> impl FnOnce(io::Error) -> UnpackError {
    move |source| UnpackError::Corrupt { entries, source }
}

fn walk(reader: impl Read, target: Option<&Path>) -> Result<LayerInfo, UnpackError> {
    let (compression, plain) = decompress(reader).map_err(corrupt(0))?;
    let zeros = Rc::new(Cell::new(0u64));
    let mut archive = tar::Archive::new(ZeroTail {
        inner: HashingReader::new(plain),
        served: zeros.clone(),
    });
    let mut entries = 0usize;
    let mut applier = target.map(Applier::new);
    {
        let iter = archive.entries().map_err(corrupt(0))?;
        for entry in iter {
            let mut entry = entry.map_err(corrupt(entries))?;
            let name = entry.path().map_err(corrupt(entries))?.into_owned();
            let rel = safe_relative(&name)?;
            let link = entry
                .link_name()
                .map_err(corrupt(entries))?
                .map(|l| l.into_owned());
            if entry.header().entry_type() == tar::EntryType::Link {
                let l = link.as_deref().unwrap_or(Path::new(""));
                let lrel = safe_relative(l)?;
                if lrel.as_os_str().is_empty() {
                    return Err(UnpackError::UnsafePath {
                        path: name,
                        reason: "hard link without a target",
                    });
                }
            }
            if let Some(a) = applier.as_mut() {
                a.apply(&mut entry, &name, &rel, link.as_deref(), entries)?;
            } else {
                // Scanning still has to read the data through the hasher.
                io::copy(&mut entry, &mut io::sink()).map_err(corrupt(entries))?;
            }
            // Zeros served before this entry's data was complete: the data is cut short.
            if zeros.get() > 0 {
                return Err(UnpackError::Corrupt {
                    entries,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the data of {name:?} is cut short"),
                    ),
                });
            }
            entries += 1;
        }
    }
    if let Some(a) = applier {
        a.finish()?;
    }
    // The diff ID covers the whole tar stream, including the end-of-archive blocks and
    // any padding after them.
    let mut rest = archive.into_inner().inner;
    io::copy(&mut rest, &mut io::sink()).map_err(corrupt(entries))?;
    let (diff_id, size) = rest.finish();
    Ok(LayerInfo {
        diff_id,
        size,
        compression,
        entries,
    })
}

/// Serves up to 1.5 KiB of zeros after the real end of the stream, counting them.
///
/// Some writers (umoci 0.4's `insert`, among others) end a layer right after the last
/// entry's data, without the padding to 512 bytes and the two zero blocks that close a
/// tar archive. Go's archive/tar, and so Docker, containerd and umoci, accept such
/// layers; so does skiff, but only when every entry's data is complete: `walk` refuses
/// the layer if zeros were needed before an entry's data ended. The zeros are never
/// hashed: the diff ID covers the real bytes only.
struct ZeroTail<R> {
    inner: R,
    served: Rc<Cell<u64>>,
}

impl<R: Read> Read for ZeroTail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        let left = 1536u64.saturating_sub(self.served.get());
        let n = (buf.len() as u64).min(left) as usize;
        buf[..n].fill(0);
        self.served.set(self.served.get() + n as u64);
        Ok(n)
    }
}

/// An entry's ownership, time and xattrs: the header's, overridden by PAX records.
struct Meta {
    uid: u64,
    gid: u64,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    /// PAX records carry ids too large for the header (Go's archive/tar writes them
    /// past 2097151), sub-second times, and xattrs. Xattrs in `trusted.overlay.` are
    /// dropped: they would let a layer forge overlay metadata.
    fn apply_pax<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return;
        };
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            let value = ext.value().unwrap_or("");
            match key {
                "uid" => self.uid = value.parse().unwrap_or(self.uid),
                "gid" => self.gid = value.parse().unwrap_or(self.gid),
                "mtime" => {
                    let (s, frac) = value.split_once('.').unwrap_or((value, ""));
                    if let Ok(secs) = s.parse::<i64>() {
                        let digits: String = frac.chars().take(9).collect();
                        let nanos = format!("{digits:0<9}").parse::<i64>().unwrap_or(0);
                        self.mtime = (secs, if secs < 0 { 0 } else { nanos });
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        if !name.starts_with("trusted.overlay.") {
                            self.xattrs
                                .push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
    }
}

struct Applier<'a> {
    root: &'a Path,
    /// Directories (relative) known to be real directories under root.
    dirs: HashSet<PathBuf>,
    /// Directory mtimes to set last: creating children changes them.
    dir_times: Vec<(PathBuf, (i64, i64))>,
    /// Copy buffer for file data, allocated at the first regular file.
    buf: Vec<u8>,
}

impl<'a> Applier<'a> {
    fn new(root: &'a Path) -> Self {
        let mut dirs = HashSet::new();
        dirs.insert(PathBuf::new());
        Self {
            root,
            dirs,
            dir_times: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Makes sure every ancestor of `rel` is a real directory (creating missing ones),
    /// refusing to pass through a symlink or a non-directory.
    fn ensure_parents(&mut self, rel: &Path) -> Result<(), UnpackError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if self.dirs.contains(parent) {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            if self.dirs.contains(&cur) {
                continue;
            }
            let abs = self.root.join(&cur);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::UnsafePath {
                        path: rel.to_path_buf(),
                        reason: "a parent directory is a symlink in this layer",
                    })
                }
                Ok(_) => {
                    return Err(UnpackError::UnsafePath {
                        path: rel.to_path_buf(),
                        reason: "a parent directory is not a directory in this layer",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&abs).map_err(io_err("create directory", &abs))?;
                    fs::set_permissions(&abs, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("chmod", &abs))?;
                }
                Err(e) => return Err(io_err("stat", &abs)(e)),
            }
            self.dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Removes whatever is at `abs` (a previous entry of the same name).
    fn clear(&mut self, rel: &Path, abs: &Path, keep_dir: bool) -> Result<bool, UnpackError> {
        match fs::symlink_metadata(abs) {
            Ok(m) if m.file_type().is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(abs).map_err(io_err("remove", abs))?;
                self.dirs.retain(|d| !d.starts_with(rel));
            }
            Ok(_) => fs::remove_file(abs).map_err(io_err("remove", abs))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("stat", abs)(e)),
        }
        Ok(false)
    }

    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &Path,
        rel: &Path,
        link: Option<&Path>,
        index: usize,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        let file_name = rel.file_name().map(OsStr::as_bytes).unwrap_or(b"");

        // Whiteouts first: they describe deletions, not files.
        if let Some(hidden) = file_name.strip_prefix(b".wh.") {
            self.ensure_parents(rel)?;
            let dir = rel.parent().unwrap_or(Path::new(""));
            if hidden == b".wh..opq" {
                let abs = self.root.join(dir);
                xattr::set(&abs, OPAQUE_XATTR, b"y")
                    .map_err(io_err("set opaque xattr on", &abs))?;
            } else if !hidden.starts_with(b".wh.") && !hidden.is_empty() {
                let wrel = dir.join(OsStr::from_bytes(hidden));
                let abs = self.root.join(&wrel);
                self.clear(&wrel, &abs, false)?;
                nix::sys::stat::mknod(&abs, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(nix_err("create whiteout", &abs))?;
            }
            return Ok(());
        }

        let abs = self.root.join(rel);
        let h = entry.header();
        let mode = h.mode().map_err(corrupt(index))? & 0o7777;
        let mut meta = Meta {
            uid: h.uid().map_err(corrupt(index))?,
            gid: h.gid().map_err(corrupt(index))?,
            mtime: (h.mtime().map_err(corrupt(index))? as i64, 0),
            xattrs: Vec::new(),
        };
        // Device fields are often left blank on other entries: read them only here.
        let (major, minor) = if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            (
                h.device_major().map_err(corrupt(index))?.unwrap_or(0),
                h.device_minor().map_err(corrupt(index))?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        meta.apply_pax(entry);
        let mtime = meta.mtime;

        if rel.as_os_str().is_empty() {
            // An entry for the layer root itself ("./"): only its metadata matters.
            if kind.is_dir() {
                self.metadata(&abs, &meta, Some(mode))?;
                self.dir_times.push((abs, mtime));
            }
            return Ok(());
        }
        self.ensure_parents(rel)?;

        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let create = || {
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&abs)
                };
                // Most names are new in a layer: try first, and clear only what is in
                // the way (O_EXCL fails on any existing name, dangling symlinks too).
                let mut f = match create() {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        self.clear(rel, &abs, false)?;
                        create()
                    }
                    r => r,
                }
                .map_err(io_err("create", &abs))?;
                self.copy_data(entry, &mut f, &abs, index)?;
                // Through the open file: no path lookups, and nothing can swap the
                // file for a symlink in between.
                let id = |v: u64| u32::try_from(v).ok();
                std::os::unix::fs::fchown(&f, id(meta.uid), id(meta.gid))
                    .map_err(io_err("chown", &abs))?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", &abs))?;
                for (name, value) in &meta.xattrs {
                    xattr::FileExt::set_xattr(&f, name, value)
                        .map_err(io_err("set xattr on", &abs))?;
                }
                let t = TimeSpec::new(mtime.0, mtime.1);
                nix::sys::stat::futimens(&f, &t, &t).map_err(nix_err("set times on", &abs))?;
            }
            tar::EntryType::Directory => {
                if !self.clear(rel, &abs, true)? {
                    fs::create_dir(&abs).map_err(io_err("create directory", &abs))?;
                }
                self.dirs.insert(rel.to_path_buf());
                self.metadata(&abs, &meta, Some(mode))?;
                self.dir_times.push((abs, mtime));
            }
            tar::EntryType::Symlink => {
                let target = link.filter(|l| !l.as_os_str().is_empty()).ok_or_else(|| {
                    UnpackError::UnsafePath {
                        path: name.to_path_buf(),
                        reason: "symlink without a target",
                    }
                })?;
                self.clear(rel, &abs, false)?;
                std::os::unix::fs::symlink(target, &abs).map_err(io_err("create symlink", &abs))?;
                self.metadata(&abs, &meta, None)?;
                set_mtime(&abs, mtime)?;
            }
            tar::EntryType::Link => {
                let lrel = safe_relative(link.unwrap_or(Path::new("")))?;
                // The link target must not be reached through a symlink either.
                self.ensure_parents(&lrel)?;
                let src = self.root.join(&lrel);
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(UnpackError::DanglingHardlink {
                            path: name.to_path_buf(),
                            target: lrel,
                        })
                    }
                }
                if src != abs {
                    self.clear(rel, &abs, false)?;
                    fs::hard_link(&src, &abs).map_err(io_err("hard link", &abs))?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let f = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, nix::sys::stat::makedev(major.into(), minor.into()))
                    }
                };
                self.clear(rel, &abs, false)?;
                nix::sys::stat::mknod(&abs, sflag, Mode::from_bits_truncate(mode), dev)
                    .map_err(nix_err("create device node", &abs))?;
                self.metadata(&abs, &meta, Some(mode))?;
                set_mtime(&abs, mtime)?;
            }
            // Global PAX headers and similar carry nothing to write.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(UnpackError::UnsupportedEntry {
                    path: name.to_path_buf(),
                    kind: other.as_byte(),
                })
            }
        }
        Ok(())
    }

    /// Copies an entry's data in large chunks: one write per 256 KiB instead of per
    /// 8 KiB (`io::copy`'s buffer) for the big files of a layer.
    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        f: &mut File,
        abs: &Path,
        index: usize,
    ) -> Result<(), UnpackError> {
        if self.buf.is_empty() {
            self.buf = vec![0; 256 * 1024];
        }
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A short or undecodable stream is the archive's fault; a write error
                // (below) or a failing read of the blob file is ours.
                Err(source)
                    if matches!(
                        source.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::InvalidData
                            | io::ErrorKind::InvalidInput
                    ) =>
                {
                    return Err(UnpackError::Corrupt {
                        entries: index,
                        source,
                    })
                }
                Err(e) => return Err(io_err("read the layer data for", abs)(e)),
            };
            f.write_all(&self.buf[..n]).map_err(io_err("write", abs))?;
        }
    }

    /// Ownership, then mode (chown clears setuid bits), then xattrs.
    fn metadata(&self, abs: &Path, meta: &Meta, mode: Option<u32>) -> Result<(), UnpackError> {
        let id = |v: u64| u32::try_from(v).ok();
        std::os::unix::fs::lchown(abs, id(meta.uid), id(meta.gid)).map_err(io_err("chown", abs))?;
        if let Some(mode) = mode {
            fs::set_permissions(abs, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", abs))?;
        }
        for (name, value) in &meta.xattrs {
            xattr::set(abs, name, value).map_err(io_err("set xattr on", abs))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), UnpackError> {
        // Deepest first is not needed: setting a directory's times does not touch its
        // parent's. Later entries for the same directory win, as in tar.
        for (abs, mtime) in std::mem::take(&mut self.dir_times) {
            set_mtime(&abs, mtime)?;
        }
        Ok(())
    }
}

fn set_mtime(abs: &Path, mtime: (i64, i64)) -> Result<(), UnpackError> {
    let t = TimeSpec::new(mtime.0, mtime.1);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        abs,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_err("set times on", abs))
}

/// Reads a file into a fresh directory-less check: used by tests and import to get a
/// layer's diff ID from a path.
pub fn scan_file(path: &Path) -> Result<LayerInfo, UnpackError> {
    let f = File::open(path).map_err(io_err("open", path))?;
    scan_layer(f)
}
