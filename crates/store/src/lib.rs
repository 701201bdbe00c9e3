//! skiff's cluster state store: etcd's v3 semantics behind one narrow [`Store`] trait.
//!
//! Contract (shared by every backend and checked by the conformance suite in
//! `tests/conformance`):
//! - every write transaction that changes something gets the next global [`Revision`];
//!   reads are served at the latest revision or at an older, not yet compacted one;
//! - `create` fails with [`StoreError::AlreadyExists`], guarded `update`/`delete` fail with
//!   [`StoreError::Conflict`], and [`Txn`] is etcd's compare-and-set transaction;
//! - a [`Watcher`] delivers every event from its start revision in revision order, then live
//!   events, and fails with [`StoreError::Compacted`] when its position was compacted away;
//! - keys attached to a lease are deleted when the lease expires or is revoked.
//!
//! Backends: [`EmbeddedStore`] (redb, one file, the default; also in memory for tests) and
//! [`EtcdStore`] (a real etcd cluster).

#![forbid(unsafe_code)]

mod embedded;
mod error;
mod etcd;
/// Real etcd processes for tests (not in the production binary: `features = ["testing"]`).
#[cfg(feature = "testing")]
pub mod testing;
mod types;

use std::time::Duration;

use async_trait::async_trait;

pub use embedded::{
    EmbeddedStore, LiveStore, LiveWatch, OpenOptions, SnapshotInfo, StoreStatus, ADMIN_SOCKET,
    STORE_FILE, WAL_FILE,
};
pub use error::{Category, StoreError};
pub use etcd::{EtcdOptions, EtcdStore};
pub use types::*;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Wall-clock time for lease deadlines, injected so tests control expiry.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A stream of watch events. Dropping it cancels the watch.
pub struct Watcher {
    rx: tokio::sync::mpsc::Receiver<Result<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub(crate) fn new(
        rx: tokio::sync::mpsc::Receiver<Result<Event>>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Watcher { rx, task }
    }

    /// The next event; `None` once the watch ended (store closed). An `Err` ends the watch.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The key at the latest revision or at `revision`.
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResult>;
    /// Keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult>;
    /// Number of keys starting with `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<i64>;
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;
    async fn watch(&self, range: KeyRange, opts: WatchOptions) -> Result<Watcher>;
    /// Forget history before `revision`; reads and watches below it then fail with
    /// [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<()>;
    async fn current_revision(&self) -> Result<Revision>;
    async fn grant_lease(&self, ttl: Duration) -> Result<Lease>;
    /// Revoke a lease, deleting its keys.
    async fn revoke_lease(&self, id: LeaseId) -> Result<()>;
    /// Renew a lease for its full TTL.
    async fn keep_alive(&self, id: LeaseId) -> Result<()>;

    /// Create `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision> {
        let r = self
            .txn(Txn {
                compares: vec![Compare::ModRevision {
                    key: key.to_string(),
                    revision: 0,
                }],
                success: vec![Op::Put {
                    key: key.to_string(),
                    value,
                    lease,
                }],
                failure: vec![Op::Get {
                    key: key.to_string(),
                }],
            })
            .await?;
        if r.succeeded {
            return Ok(r.revision);
        }
        let mod_revision = match r.results.first() {
            Some(OpResult::Get { kv: Some(kv) }) => kv.mod_revision,
            _ => 0,
        };
        Err(StoreError::AlreadyExists {
            key: key.to_string(),
            mod_revision,
        })
    }

    /// Write `key` unconditionally (create or overwrite).
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision> {
        let r = self
            .txn(Txn {
                compares: vec![],
                success: vec![Op::Put {
                    key: key.to_string(),
                    value,
                    lease,
                }],
                failure: vec![],
            })
            .await?;
        Ok(r.revision)
    }

    /// Overwrite an existing `key`, if `expected` is set only while its mod revision is
    /// `expected`. Returns the new key-value.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
        lease: LeaseId,
    ) -> Result<KeyValue> {
        guarded(self, key, expected, |key| Op::Put {
            key,
            value: value.clone(),
            lease,
        })
        .await
        .map(|(prev, rev)| KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.create_revision,
            mod_revision: rev,
            version: prev.version + 1,
            lease,
        })
    }

    /// Delete an existing `key`, if `expected` is set only while its mod revision is
    /// `expected`. Returns the deleted key-value.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        guarded(self, key, expected, |key| Op::Delete { key })
            .await
            .map(|(prev, _)| prev)
    }
}

/// Run `op` on `key` if the key exists (and has mod revision `expected`); returns the
/// previous value and the write's revision.
async fn guarded<S: Store + ?Sized>(
    store: &S,
    key: &str,
    expected: Option<Revision>,
    op: impl Fn(String) -> Op + Send,
) -> Result<(KeyValue, Revision)> {
    loop {
        // Without an expected revision, guard on whatever revision the key has now so a
        // concurrent delete cannot turn the update into a create.
        let guard = match expected {
            Some(r) => r,
            None => match store.get(key, None).await?.kv {
                Some(kv) => kv.mod_revision,
                None => {
                    return Err(StoreError::NotFound {
                        key: key.to_string(),
                    })
                }
            },
        };
        if guard == 0 {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        }
        let r = store
            .txn(Txn {
                compares: vec![Compare::ModRevision {
                    key: key.to_string(),
                    revision: guard,
                }],
                success: vec![
                    Op::Get {
                        key: key.to_string(),
                    },
                    op(key.to_string()),
                ],
                failure: vec![Op::Get {
                    key: key.to_string(),
                }],
            })
            .await?;
        let current = match r.results.first() {
            Some(OpResult::Get { kv }) => kv.clone(),
            _ => None,
        };
        match (r.succeeded, current) {
            (true, Some(prev)) => return Ok((prev, r.revision)),
            (false, None) => {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                })
            }
            (false, Some(kv)) if expected.is_some() => {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected: guard,
                    actual: kv.mod_revision,
                })
            }
            // Lost a race with another writer while unguarded: try again.
            _ => continue,
        }
    }
}
