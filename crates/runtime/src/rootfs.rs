//! Building the container's root filesystem inside its new mount namespace.
//!
//! Contract: runs only in the container's init, after it entered its mount namespace and
//! before it drops privileges. `prepare` mounts everything of `config.json`'s `mounts`
//! into the rootfs and fills /dev; `pivot` makes the rootfs `/` and detaches the old
//! root; `finalize` applies masked and read-only paths and the read-only root. Because
//! the mount namespace is private to the container (the host's `/` is made a slave
//! first), nothing done here is visible on the host, and it all disappears with the
//! namespace when the container's last process exits.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, fchdir, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::cgroups::{CgroupMountSource, CgroupVersion};
use crate::spec::propagation_flag;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what} {target}")]
    Sys {
        what: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{what} {target}")]
    Io {
        what: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: too many levels of symbolic links under the rootfs")]
    SymlinkLoop { path: PathBuf },
}

fn sys(what: impl Into<String>, target: &Path, source: nix::Error) -> RootfsError {
    RootfsError::Sys {
        what: what.into(),
        target: target.to_path_buf(),
        source,
    }
}

fn ioe(what: impl Into<String>, target: &Path, source: std::io::Error) -> RootfsError {
    RootfsError::Io {
        what: what.into(),
        target: target.to_path_buf(),
        source,
    }
}

/// What the rootfs code needs besides the spec.
#[derive(Debug, Clone)]
pub struct RootfsConfig {
    pub rootfs: PathBuf,
    pub cgroup_version: CgroupVersion,
    pub cgroup_sources: Vec<CgroupMountSource>,
    pub new_cgroupns: bool,
    pub in_userns: bool,
    pub terminal: bool,
}

/// Resolve `unsafe_path` inside `root` the way the container would see it: symlinks are
/// followed relative to `root`, and `..` never climbs above it.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, RootfsError> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(RootfsError::SymlinkLoop {
                        path: unsafe_path.to_path_buf(),
                    });
                }
                let target = std::fs::read_link(&full).map_err(|e| ioe("readlink", &full, e))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => pending.push(s.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Parsed mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags to clear (e.g. "rw" after a default "ro"); only matters on remount.
    pub clear: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
}

pub fn parse_options(opts: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        clear: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        bind: false,
        recursive: false,
    };
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            // Runtime hints we have no use for.
            "tmpcopyup" | "defaults" | "" => continue,
            other => {
                if let Some(p) = propagation_flag(other) {
                    o.propagation.push(p);
                } else {
                    o.data.push(other.to_string());
                }
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
    }
    o
}

/// Flags the kernel locks on a mount made in a less privileged user namespace: a
/// remount must repeat them or it fails with EPERM.
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let mut f = MsFlags::empty();
    if let Ok(st) = statvfs(path) {
        let fl = st.flags();
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(a) {
                f |= b;
            }
        }
    }
    f
}

fn remount_bind(path: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
    match mount(None::<&str>, path, None::<&str>, f, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::Error::EPERM) => {
            let f2 = f | locked_flags(path);
            mount(None::<&str>, path, None::<&str>, f2, None::<&str>)
                .map_err(|e| sys("remount", path, e))
        }
        Err(e) => Err(sys("remount", path, e)),
    }
}

fn mkdir_all(p: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(p).map_err(|e| ioe("mkdir", p, e))
}

fn ensure_file(p: &Path) -> Result<(), RootfsError> {
    if p.exists() {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        mkdir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map(|_| ())
        .map_err(|e| ioe("create", p, e))
}

/// Set up the rootfs: propagation, self-bind, every mount, /dev. Runs before pivot.
pub fn prepare(spec: &Spec, cfg: &RootfsConfig) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flag)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    // Shared propagation is applied after pivot; before, keep our mounts away from the host.
    let initial = if prop.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        prop
    };
    mount(None::<&str>, "/", None::<&str>, initial, None::<&str>)
        .map_err(|e| sys("set propagation of", Path::new("/"), e))?;
    // pivot_root refuses a rootfs whose parent mount is shared. After a recursive slave or
    // private every mount is unshared already, and the mount table need not be read.
    let unshared = initial.contains(MsFlags::MS_REC)
        && initial.intersects(MsFlags::MS_SLAVE | MsFlags::MS_PRIVATE);
    if !unshared {
        make_parent_private(&cfg.rootfs)?;
    }
    mount(
        Some(&cfg.rootfs),
        &cfg.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| sys("bind rootfs onto itself", &cfg.rootfs, e))?;

    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(m, cfg)?;
    }
    let dev_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && parse_options(&m.options().clone().unwrap_or_default()).bind
    });
    if !dev_bound {
        create_devices(linux.and_then(|l| l.devices().as_ref()), cfg)?;
        dev_symlinks(&cfg.rootfs, &mounts)?;
    }
    if cfg.terminal {
        ensure_file(&secure_join(&cfg.rootfs, Path::new("/dev/console"))?)?;
    }
    Ok(())
}

fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| ioe("read", Path::new("/proc/self/mountinfo"), e))?;
    let mut best: Option<PathBuf> = None;
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if rootfs.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len())
        {
            best = Some(mp);
        }
    }
    if let Some(mp) = best {
        mount(
            None::<&str>,
            &mp,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| sys("make private", &mp, e))?;
    }
    Ok(())
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_one(m: &Mount, cfg: &RootfsConfig) -> Result<(), RootfsError> {
    let opts = parse_options(&m.options().clone().unwrap_or_default());
    let typ = m.typ().clone().unwrap_or_default();
    let dest = secure_join(&cfg.rootfs, m.destination())?;
    let bind = opts.bind || typ == "bind";
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(&dest, &opts, cfg);
    }
    if bind {
        let src = m.source().clone().unwrap_or_default();
        let src_is_dir = std::fs::metadata(&src)
            .map_err(|e| ioe("bind source", &src, e))?
            .is_dir();
        if src_is_dir {
            mkdir_all(&dest)?;
        } else {
            ensure_file(&dest)?;
        }
        let mut f = MsFlags::MS_BIND;
        if opts.recursive {
            f |= MsFlags::MS_REC;
        }
        mount(Some(&src), &dest, None::<&str>, f, None::<&str>)
            .map_err(|e| sys(format!("bind mount {} on", src.display()), &dest, e))?;
        let extra = opts.flags & !(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount_bind(&dest, extra)?;
        }
    } else {
        mkdir_all(&dest)?;
        let data = opts.data.join(",");
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let r = mount(
            Some(&src),
            &dest,
            Some(typ.as_str()),
            opts.flags,
            if data.is_empty() {
                None
            } else {
                Some(data.as_str())
            },
        );
        match r {
            Ok(()) => {}
            // sysfs cannot be mounted in a user namespace without its own network
            // namespace; the host's /sys bound read-only is the usual fallback.
            Err(nix::Error::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| sys("bind /sys on", &dest, e))?;
                remount_bind(&dest, opts.flags | MsFlags::MS_RDONLY)?;
            }
            Err(e) => return Err(sys(format!("mount {typ} on"), &dest, e)),
        }
    }
    for p in &opts.propagation {
        mount(None::<&str>, &dest, None::<&str>, *p, None::<&str>)
            .map_err(|e| sys("set propagation of", &dest, e))?;
    }
    Ok(())
}

fn mount_cgroup(dest: &Path, opts: &MountOptions, cfg: &RootfsConfig) -> Result<(), RootfsError> {
    mkdir_all(dest)?;
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if cfg.cgroup_version == CgroupVersion::V2 && cfg.new_cgroupns {
        return mount(
            Some("cgroup2"),
            dest,
            Some("cgroup2"),
            opts.flags,
            None::<&str>,
        )
        .map_err(|e| sys("mount cgroup2 on", dest, e));
    }
    if cfg.cgroup_version == CgroupVersion::V1 {
        mount(Some("tmpfs"), dest, Some("tmpfs"), base, Some("mode=755"))
            .map_err(|e| sys("mount tmpfs on", dest, e))?;
    }
    for src in &cfg.cgroup_sources {
        let target = if src.subdir.is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(&src.subdir)
        };
        mkdir_all(&target)?;
        mount(
            Some(&src.host_dir),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| {
            sys(
                format!("bind cgroup {} on", src.host_dir.display()),
                &target,
                e,
            )
        })?;
        remount_bind(
            &target,
            base | if ro {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            },
        )?;
    }
    // Like runc, the v1 tmpfs that holds the hierarchies stays writable; the
    // hierarchies themselves carry the read-only flag.
    Ok(())
}

struct DefaultDev {
    path: &'static str,
    major: u64,
    minor: u64,
}

/// The devices every container gets, in runc's order (visible in the mount table of a
/// user-namespaced container, where they are bind mounts).
const DEFAULT_DEVICES: &[DefaultDev] = &[
    dev("/dev/null", 1, 3),
    dev("/dev/random", 1, 8),
    dev("/dev/full", 1, 7),
    dev("/dev/tty", 5, 0),
    dev("/dev/zero", 1, 5),
    dev("/dev/urandom", 1, 9),
];

const fn dev(path: &'static str, major: u64, minor: u64) -> DefaultDev {
    DefaultDev { path, major, minor }
}

fn create_devices(extra: Option<&Vec<LinuxDevice>>, cfg: &RootfsConfig) -> Result<(), RootfsError> {
    // As runc: no umask while the nodes are made, so mknod gives each its exact mode
    // without a chmod after it, and parent directories get 0755 whatever the umask.
    let old = nix::sys::stat::umask(Mode::empty());
    let r = create_devices_unmasked(extra, cfg);
    nix::sys::stat::umask(old);
    r
}

fn create_devices_unmasked(
    extra: Option<&Vec<LinuxDevice>>,
    cfg: &RootfsConfig,
) -> Result<(), RootfsError> {
    let mut parents = Parents::new();
    // New nodes belong to our effective ids: root's, so only other owners need a chown.
    let made_by_root = nix::unistd::geteuid().is_root() && nix::unistd::getegid().as_raw() == 0;
    for d in DEFAULT_DEVICES {
        make_device(
            cfg,
            &mut parents,
            made_by_root,
            Path::new(d.path),
            SFlag::S_IFCHR,
            d.major,
            d.minor,
            0o666,
            0,
            0,
        )?;
    }
    for d in extra.into_iter().flatten() {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => continue,
        };
        make_device(
            cfg,
            &mut parents,
            made_by_root,
            d.path(),
            kind,
            d.major().max(0) as u64,
            d.minor().max(0) as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
        )?;
    }
    Ok(())
}

/// Directories known to exist, each with whether new files in it take its group
/// (set-group-ID), so a run of devices in /dev checks /dev once.
struct Parents(Vec<(PathBuf, bool)>);

impl Parents {
    fn new() -> Self {
        Parents(Vec::new())
    }

    /// Make `dir` (0755, the umask being 0 here) unless known; returns its setgid bit.
    fn ensure(&mut self, dir: &Path) -> Result<bool, RootfsError> {
        if let Some((_, setgid)) = self.0.iter().find(|(d, _)| d == dir) {
            return Ok(*setgid);
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| ioe("mkdir", dir, e))?;
        let setgid = std::fs::metadata(dir)
            .map_err(|e| ioe("stat", dir, e))?
            .permissions()
            .mode()
            & 0o2000
            != 0;
        self.0.push((dir.to_path_buf(), setgid));
        Ok(setgid)
    }
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    cfg: &RootfsConfig,
    parents: &mut Parents,
    made_by_root: bool,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), RootfsError> {
    let dest = secure_join(&cfg.rootfs, path)?;
    let setgid_parent = match dest.parent() {
        Some(parent) => parents.ensure(parent)?,
        None => false,
    };
    if !cfg.in_userns {
        let _ = std::fs::remove_file(&dest);
        let perm = Mode::from_bits_truncate(mode & 0o7777);
        match mknod(&dest, kind, perm, makedev(major, minor)) {
            Ok(()) => {
                // Already root's when made by root, unless the directory passes its
                // own group on.
                if uid != 0 || gid != 0 || setgid_parent || !made_by_root {
                    chown(&dest, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                        .map_err(|e| sys("chown", &dest, e))?;
                }
                return Ok(());
            }
            Err(nix::Error::EPERM) => {}
            Err(e) => return Err(sys("mknod", &dest, e)),
        }
    }
    // Without the right to mknod (user namespace), bind the host's node instead.
    ensure_file(&dest)?;
    mount(
        Some(path),
        &dest,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| sys(format!("bind device {} on", path.display()), &dest, e))
}

fn dev_symlinks(rootfs: &Path, mounts: &[Mount]) -> Result<(), RootfsError> {
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    if mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev/pts"))
    {
        links.push(("pts/ptmx", "/dev/ptmx"));
    }
    for (target, link) in links {
        let at = secure_join(rootfs, Path::new(link))?;
        if link == "/dev/ptmx" {
            let _ = std::fs::remove_file(&at);
        }
        match symlink(target, &at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ioe("symlink", &at, e)),
        }
    }
    Ok(())
}

/// Make `rootfs` the root and detach the old one.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let old = open_dir(Path::new("/"))?;
    let new = open_dir(rootfs)?;
    fchdir(&new).map_err(|e| sys("chdir", rootfs, e))?;
    pivot_root(".", ".").map_err(|e| sys("pivot_root", rootfs, e))?;
    // The old root is now stacked under the new one at ".": detach it without letting the
    // unmount propagate anywhere.
    fchdir(&old).map_err(|e| sys("chdir", Path::new("/"), e))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| sys("make old root slave", Path::new("."), e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| sys("detach old root", Path::new("."), e))?;
    nix::unistd::chdir("/").map_err(|e| sys("chdir", Path::new("/"), e))
}

fn open_dir(p: &Path) -> Result<std::fs::File, RootfsError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| ioe("open", p, e))
}

/// After pivot: sysctls, masked and read-only paths, read-only /dev and root, shared root.
pub fn finalize(spec: &Spec) -> Result<(), RootfsError> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    if let Some(sysctl) = linux.sysctl() {
        for (k, v) in sysctl {
            let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&p, v).map_err(|e| ioe(format!("set sysctl {k}={v:?} via"), &p, e))?;
        }
    }
    for p in linux.readonly_paths().iter().flatten() {
        let path = Path::new(p);
        if !path.exists() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| sys("bind", path, e))?;
        // Only read-only, as runc does; remount_bind adds back flags the kernel locked.
        remount_bind(path, MsFlags::MS_RDONLY | MsFlags::MS_REC)?;
    }
    for p in linux.masked_paths().iter().flatten() {
        let path = Path::new(p);
        match std::fs::metadata(path) {
            Err(_) => continue,
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| sys("mask", path, e))?,
            Ok(_) => mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| sys("mask", path, e))?,
        }
    }
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") {
            let o = parse_options(&m.options().clone().unwrap_or_default());
            if o.flags.contains(MsFlags::MS_RDONLY) && !o.bind {
                mount(
                    None::<&str>,
                    "/dev",
                    None::<&str>,
                    MsFlags::MS_REMOUNT | o.flags,
                    None::<&str>,
                )
                .map_err(|e| sys("remount read-only", Path::new("/dev"), e))?;
            }
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_bind(Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    if let Some(p) = linux
        .rootfs_propagation()
        .as_deref()
        .and_then(propagation_flag)
    {
        if p.contains(MsFlags::MS_SHARED) {
            mount(None::<&str>, "/", None::<&str>, p, None::<&str>)
                .map_err(|e| sys("set propagation of", Path::new("/"), e))?;
        }
    }
    Ok(())
}

/// Bind the pty slave at `slave` over /dev/console (after pivot).
pub fn bind_console(slave: &Path) -> Result<(), RootfsError> {
    let console = Path::new("/dev/console");
    if !console.exists() {
        return Ok(());
    }
    mount(
        Some(slave),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| sys(format!("bind {} on", slave.display()), console, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "rprivate".into(),
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let b = parse_options(&["rbind".into(), "ro".into(), "rw".into()]);
        assert!(b.bind && b.recursive);
        assert!(!b.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn secure_join_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("a/abs")).unwrap();
        symlink("../../..", root.join("a/b/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/a/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/b/up/x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert!(matches!(
            secure_join(root, Path::new("/loop")),
            Err(RootfsError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
