//! Expectations, as client-go's `ControllerExpectations`: after a controller asks for N
//! creates (or deletes) for a key, it does not act on that key again until its informer
//! has seen them (or five minutes pass, in case a watch event was lost), so a burst of
//! creates is never repeated because the cache lagged behind the writes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long unmet expectations hold a key back before the controller acts anyway.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Record>>,
}

struct Record {
    adds: i64,
    /// UIDs whose deletion is expected (client-go's UIDTrackingControllerExpectations).
    deletes: HashSet<String>,
    since: Instant,
}

impl Expectations {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.by_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the controller may act on `key`: nothing pending, or it timed out.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.map().get(key) {
            None => true,
            Some(r) => {
                (r.adds <= 0 && r.deletes.is_empty()) || r.since.elapsed() > EXPECTATIONS_TIMEOUT
            }
        }
    }

    /// Expects `adds` creates for `key` (replacing what was expected before).
    pub fn expect_creations(&self, key: &str, adds: usize) {
        self.map().insert(
            key.to_string(),
            Record {
                adds: adds as i64,
                deletes: HashSet::new(),
                since: Instant::now(),
            },
        );
    }

    /// Expects the deletion of these pod UIDs for `key` (replacing what was expected).
    pub fn expect_deletions(&self, key: &str, uids: impl IntoIterator<Item = String>) {
        self.map().insert(
            key.to_string(),
            Record {
                adds: 0,
                deletes: uids.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }

    /// One expected create was seen (or was refused and will never be seen).
    pub fn creation_observed(&self, key: &str) {
        if let Some(r) = self.map().get_mut(key) {
            r.adds -= 1;
        }
    }

    /// The deletion of `uid` was seen (or failed and will never be seen).
    pub fn deletion_observed(&self, key: &str, uid: &str) {
        if let Some(r) = self.map().get_mut(key) {
            r.deletes.remove(uid);
        }
    }

    /// Forgets `key` (its owner was deleted).
    pub fn delete(&self, key: &str) {
        self.map().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_waits_for_its_creates_and_deletes_or_the_timeout() {
        let e = Expectations::new();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["u1".to_string()]);
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "u2");
        assert!(!e.satisfied("ns/rs"));
        tokio::time::advance(EXPECTATIONS_TIMEOUT + Duration::from_secs(1)).await;
        assert!(e.satisfied("ns/rs"));
        e.delete("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }
}
