//! Not written yet.

use tokio::task::JoinHandle;

use crate::Context;

pub(crate) fn start_replicaset(_ctx: &Context) -> Option<JoinHandle<()>> {
    None
}

pub(crate) fn start_replication_controller(_ctx: &Context) -> Option<JoinHandle<()>> {
    None
}
