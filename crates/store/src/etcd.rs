//! placeholder
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions;
pub struct EtcdStore;
