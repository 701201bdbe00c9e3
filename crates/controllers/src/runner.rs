//! Runs one controller: workers take keys from its [`Queue`] and reconcile them, after
//! every informer the controller reads has listed once.
//!
//! A reconcile is level-based: it reads the desired and the observed state from the
//! caches and acts on the difference, so running it twice, or after any number of missed
//! notifications, is harmless. Its outcome is not an error: [`Action::Done`] waits for
//! the next change, [`Action::RequeueAfter`] comes back later (a deadline, a minimum
//! ready time). An error is logged and the key retried after its backoff; one broken
//! object never stalls the controller's other keys.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::queue::Queue;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the key's objects change.
    Done,
    /// Reconcile the key again after this long (and on any change before).
    RequeueAfter(Duration),
}

#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// kube-controller-manager's name for the controller (`replicaset`, `deployment` …).
    fn name(&self) -> &'static str;

    /// Brings the object of `key` (`namespace/name`, or `name`) to its desired state.
    async fn reconcile(&self, key: &str) -> Result<Action, Self::Error>;
}

/// Spawns `workers` workers for `reconciler` over `queue`; they start once `ready`
/// completes (the informers are synced) and stop when `stop` is cancelled.
pub fn spawn<R: Reconciler>(
    reconciler: Arc<R>,
    queue: Queue,
    workers: usize,
    ready: impl Future<Output = ()> + Send + 'static,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = ready => {}
            () = stop.cancelled() => return,
        }
        tracing::debug!(controller = reconciler.name(), "caches synced; starting workers");
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let (r, q) = (reconciler.clone(), queue.clone());
            set.spawn(async move {
                while let Some(key) = q.next().await {
                    work(&*r, &q, &key).await;
                }
            });
        }
        stop.cancelled().await;
        queue.shut_down();
        while set.join_next().await.is_some() {}
    })
}

async fn work<R: Reconciler>(r: &R, q: &Queue, key: &str) {
    match r.reconcile(key).await {
        Ok(Action::Done) => q.forget(key),
        Ok(Action::RequeueAfter(d)) => {
            q.forget(key);
            q.add_after(key, d);
        }
        Err(e) => {
            let failures = q.failures(key);
            // The first failures of a key are usually conflicts with a concurrent writer.
            if failures < 3 {
                tracing::debug!(controller = r.name(), key, error = %Chain(&e), "reconcile failed; retrying");
            } else {
                tracing::warn!(controller = r.name(), key, failures, error = %Chain(&e), "reconcile failed; retrying");
            }
            q.add_rate_limited(key);
        }
    }
    q.done(key);
}

/// An error with its causes, `a: b: c`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(c) = cur {
            write!(f, ": {c}")?;
            cur = c.source();
        }
        Ok(())
    }
}
