//! Not written yet.

use tokio::task::JoinHandle;

use crate::Context;

pub(crate) fn start(_ctx: &Context) -> Option<JoinHandle<()>> {
    None
}
