//! Seccomp: compile the OCI `linux.seccomp` section to BPF and install it.
//!
//! Contract: `compile` runs in the runtime before anything is created, so a bad profile is
//! refused early with the JSON path of the offending field; `CompiledSeccomp::install` runs
//! in the container's init just before exec and does no allocation-heavy work (none at all
//! unless it fails). `install` needs `no_new_privs` or CAP_SYS_ADMIN, which the caller
//! arranges; it never sets `no_new_privs` itself (runc does not either).
//!
//! The profile means what it means to runc with libseccomp:
//! * actions: SCMP_ACT_KILL (the thread), _KILL_THREAD, _KILL_PROCESS, _TRAP, _ERRNO (errno
//!   `errnoRet`/`defaultErrnoRet`, EPERM when absent), _TRACE (same data and default), _LOG,
//!   _ALLOW. SCMP_ACT_NOTIFY is refused: there is no listener yet. An `errnoRet` with any other
//!   action is refused (runc ignores it), as is one above 65535.
//! * entries whose action equals the default action are dropped; unknown syscall names are
//!   skipped (logged at debug level);
//! * `args` of one entry are ANDed, except when two of them name the same argument: then each
//!   becomes a rule of its own and they are ORed. Comparisons are on all 64 bits; for
//!   SCMP_CMP_MASKED_EQ `value` is the mask and `valueTwo` the expected value;
//! * runc's ENOSYS stub: with a non-permissive default action and the host architecture listed
//!   in `architectures`, syscall numbers above the largest one the profile names get ENOSYS;
//! * `flags`: absent means SPEC_ALLOW if the kernel has it (runc's default); TSYNC, LOG and
//!   SPEC_ALLOW are passed to seccomp(2) and must be supported; WAIT_KILLABLE_RECV is ignored.
//!
//! Known differences from runc:
//! * only the host's native ABI is filtered. Other entries of `architectures` are accepted
//!   and ignored, and calls through any other ABI (i386 `int 0x80` or x32 on x86_64, arm32 on
//!   aarch64) kill the process, where runc filters them with the same profile when the
//!   architecture is listed, and kills the thread otherwise;
//! * a call matching rules with different actions gets the strongest action, ties between
//!   equal-precedence actions going to the one listed first (see `program`).
//!
//! Layout: `profile` interprets the JSON into a plan, `program` turns the plan into one BPF
//! program with seccompiler, `kernel` does the seccomp(2) calls.

mod kernel;
mod profile;
mod program;

#[cfg(test)]
mod process_tests;
#[cfg(test)]
mod tests;

use oci_spec::runtime::LinuxSeccomp;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("installing seccomp filter")]
    Install(#[source] std::io::Error),
}

/// A profile compiled to a BPF program for the host architecture, ready to install.
#[derive(Debug, Clone)]
pub struct CompiledSeccomp {
    /// `None` when the profile allows every call: there is nothing to install.
    program: Option<Vec<libc::sock_filter>>,
    /// seccomp(2) `SECCOMP_FILTER_FLAG_*` bits.
    flags: libc::c_ulong,
}

/// Compile `seccomp` (found at JSON path `linux.seccomp`).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<CompiledSeccomp, SeccompError> {
    let host = program::HOST.ok_or_else(|| SeccompError::Invalid {
        path: "linux.seccomp".to_owned(),
        reason: format!(
            "seccomp filters are not supported on {}",
            std::env::consts::ARCH
        ),
    })?;
    let plan = profile::plan(seccomp, host.oci)?;
    let program = program::build(&plan, &host)?;
    let flags = kernel::resolve_flags(seccomp.flags().as_deref())?;
    tracing::debug!(
        instructions = program.as_ref().map_or(0, Vec::len),
        flags,
        "seccomp: profile compiled"
    );
    Ok(CompiledSeccomp { program, flags })
}

impl CompiledSeccomp {
    /// Install the filter on the calling thread (inherited by its children and kept across
    /// exec). Call it last before exec: from then on the profile applies to this process too.
    pub fn install(&self) -> Result<(), SeccompError> {
        match &self.program {
            Some(program) => kernel::install(program, self.flags),
            None => Ok(()),
        }
    }
}
