//! The seccomp(2) calls: probing filter flags (at compile time) and installing the program
//! (in the container's init, just before exec).

use std::io;

use libc::{c_ulong, sock_filter};
use oci_spec::runtime::LinuxSeccompFilterFlag;

use super::SeccompError;

/// Whether this kernel accepts `flag` for SECCOMP_SET_MODE_FILTER. Like libseccomp (which runc
/// asks), pass a NULL program: the kernel validates the flags first and then fails copying the
/// program with EFAULT, while an unknown flag gives EINVAL. Nothing is installed either way.
fn flag_supported(flag: c_ulong) -> bool {
    // SAFETY: seccomp(2) with a null `struct sock_fprog *` only reads from that pointer, which
    // the kernel checks and rejects with EFAULT; no memory of ours is touched.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flag,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// The seccomp(2) flags to install with, from `linux.seccomp.flags`.
///
/// Absent flags mean runc's default: SPEC_ALLOW when the kernel supports it (containers then
/// keep the host's speculative-store-bypass setting instead of having seccomp force the
/// mitigation on). Listed flags must be supported, as in runc, which checks them up front.
pub(super) fn resolve_flags(
    flags: Option<&[LinuxSeccompFilterFlag]>,
) -> Result<c_ulong, SeccompError> {
    let Some(flags) = flags else {
        return Ok(if flag_supported(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) {
            libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
        } else {
            0
        });
    };
    let mut bits = 0;
    for (i, flag) in flags.iter().enumerate() {
        let bit = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            // Harmless in the single-threaded init, which is where we install.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only valid together with a notify listener, which we never create (the kernel
            // would refuse the filter with EINVAL).
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                tracing::debug!(%flag, "seccomp: flag ignored, there is no notify listener");
                continue;
            }
        };
        if !flag_supported(bit) {
            return Err(SeccompError::Invalid {
                path: format!("linux.seccomp.flags[{i}]"),
                reason: format!("{flag} is not supported by this kernel"),
            });
        }
        bits |= bit;
    }
    Ok(bits)
}

/// Install `program` on the calling thread. Allocates nothing on success or on an ordinary
/// error, so it is safe in a child forked from a multi-threaded process.
pub(super) fn install(program: &[sock_filter], flags: c_ulong) -> Result<(), SeccompError> {
    // `compile` keeps programs within BPF_MAXINSNS, so this cannot fail.
    let len = u16::try_from(program.len())
        .map_err(|_| SeccompError::Install(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads the instructions (copy_from_user).
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` describes `len` valid instructions that stay borrowed for the whole
    // call; the kernel copies them and keeps no pointer to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        // With TSYNC the kernel returns the id of a thread it could not synchronise. Cannot
        // happen in a single-threaded process; the message allocates, which is acceptable here.
        tid if tid > 0 => Err(SeccompError::Install(io::Error::other(format!(
            "SECCOMP_FILTER_FLAG_TSYNC: thread {tid} could not be synchronised"
        )))),
        _ => Err(SeccompError::Install(io::Error::last_os_error())),
    }
}
