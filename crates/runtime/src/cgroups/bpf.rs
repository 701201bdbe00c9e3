//! Loading and attaching the v2 device filter with the raw `bpf(2)` syscall.
//!
//! The new program is attached with `BPF_F_ALLOW_MULTI` before the previously attached
//! device programs are detached, so there is no window in which the cgroup has no filter
//! (the kernel ANDs the verdicts of all attached programs, so the old ones must go).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::devices::BpfInsn;
use super::CgroupError;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

const LOG_SIZE: usize = 64 * 1024;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`; the kernel copies only `info_len` bytes.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; returns the syscall's non-negative result.
///
/// # Safety
/// `attr` must be the attribute struct `cmd` expects, and every pointer stored in it must
/// be valid for the access the kernel makes during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees `attr` matches `cmd`; the size passed is its size,
    // so the kernel reads and writes only inside it (zero-extending the rest).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf_err(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Bpf {
        op,
        path: path.to_path_buf(),
        log: String::new(),
        source,
    }
}

fn owned_fd(raw: libc::c_long, op: &'static str, path: &Path) -> Result<OwnedFd, CgroupError> {
    let raw = i32::try_from(raw).map_err(|_| {
        bpf_err(
            op,
            path,
            io::Error::new(io::ErrorKind::InvalidData, "fd out of range"),
        )
    })?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn load(prog: &[BpfInsn], path: &Path) -> Result<OwnedFd, CgroupError> {
    let license = c"Apache";
    let attempt = |log: Option<&mut [u8]>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        // SAFETY: PROG_LOAD with a ProgLoadAttr; `prog`, `license` and the log buffer
        // outlive the call and their lengths are the ones passed.
        unsafe { bpf(BPF_PROG_LOAD, &mut attr) }
    };
    match attempt(None) {
        Ok(fd) => owned_fd(fd, "load", path),
        Err(source) => {
            // Load again with the verifier log only on failure: logging slows loading and
            // the log is only useful to explain a refusal.
            let mut buf = vec![0u8; LOG_SIZE];
            let _ = attempt(Some(&mut buf));
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            Err(CgroupError::Bpf {
                op: "load",
                path: path.to_path_buf(),
                log: String::from_utf8_lossy(&buf[..end]).into_owned(),
                source,
            })
        }
    }
}

fn prog_id(fd: &OwnedFd, path: &Path) -> Result<u32, CgroupError> {
    let mut info = ProgInfoHead::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfoHead>() as u32,
        info: &mut info as *mut ProgInfoHead as u64,
    };
    // SAFETY: OBJ_GET_INFO_BY_FD with an InfoAttr whose buffer is `info`, of the size given.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.map_err(|e| bpf_err("inspect", path, e))?;
    Ok(info.id)
}

fn attached_ids(cgroup: &OwnedFd, path: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: PROG_QUERY with a QueryAttr; `ids` has room for `prog_cnt` ids.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }.map_err(|e| bpf_err("query", path, e))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

fn detach(cgroup: &OwnedFd, id: u32, path: &Path) -> Result<(), CgroupError> {
    let mut by_id = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: PROG_GET_FD_BY_ID with a GetFdByIdAttr (no pointers).
    let raw = match unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id) } {
        Ok(raw) => raw,
        // Detached and freed meanwhile: nothing left to do.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(bpf_err("open old program of", path, e)),
    };
    let old = owned_fd(raw, "open old program of", path)?;
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: old.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    // SAFETY: PROG_DETACH with an AttachAttr (no pointers).
    match unsafe { bpf(BPF_PROG_DETACH, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(bpf_err("detach old program of", path, e)),
    }
}

/// Load `prog` and make it the only device filter of the cgroup directory `dir`.
pub(crate) fn install_device_filter(dir: &Path, prog: &[BpfInsn]) -> Result<(), CgroupError> {
    let prog_fd = load(prog, dir)?;
    let cgroup: OwnedFd = std::fs::File::open(dir)
        .map_err(|e| CgroupError::io("open", dir, e))?
        .into();
    let old = attached_ids(&cgroup, dir)?;
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: PROG_ATTACH with an AttachAttr (no pointers).
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map_err(|e| bpf_err("attach", dir, e))?;
    let new_id = prog_id(&prog_fd, dir)?;
    for id in old.into_iter().filter(|id| *id != new_id) {
        detach(&cgroup, id, dir)?;
    }
    Ok(())
}

/// Ids of the device programs attached to `dir` (for tests on a real cgroup2 mount).
#[cfg(test)]
pub(crate) fn attached_device_programs(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let cgroup: OwnedFd = std::fs::File::open(dir)
        .map_err(|e| CgroupError::io("open", dir, e))?
        .into();
    attached_ids(&cgroup, dir)
}
