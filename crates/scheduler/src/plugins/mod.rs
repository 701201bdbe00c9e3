//! The default plugins, one module each, and the default profile that wires them.

use crate::{Config, Framework};

/// kube-scheduler's default profile for `config`.
pub fn default_framework(_config: &Config) -> Framework {
    Framework::default()
}
