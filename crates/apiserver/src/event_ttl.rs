//! Events expire: kube-apiserver stores each Event with a TTL (`--event-ttl`, 1 h by
//! default) so a busy cluster's history does not grow without bound. skiff attaches Events
//! to a store lease. Like kube-apiserver's lease manager, one lease is shared by all Events
//! written within a short window (5% of the TTL, at most a minute), granted for the TTL plus
//! that window, so the store holds a few dozen leases rather than one per Event.

use std::time::{Duration, SystemTime};

use skiff_api::kinds::Kind;
use skiff_store::{LeaseId, StoreError};

use crate::Objects;

/// How long one granted lease is handed out to new writes: 5% of the TTL, at most this.
const MAX_REUSE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct EventLeases {
    current: tokio::sync::Mutex<Option<(LeaseId, SystemTime)>>,
}

impl EventLeases {
    /// The lease a write of `kind` attaches to: none (0) unless it is a core Event and
    /// events expire.
    pub async fn for_write(&self, st: &Objects, kind: &Kind) -> Result<LeaseId, StoreError> {
        let Some(ttl) = st.event_ttl else {
            return Ok(0);
        };
        if !(kind.group.is_empty() && kind.kind == "Event") {
            return Ok(0);
        }
        let reuse = (ttl / 20).min(MAX_REUSE);
        let mut cur = self.current.lock().await;
        let now = st.clock.now();
        if let Some((id, granted)) = *cur {
            if now.duration_since(granted).is_ok_and(|age| age < reuse) {
                return Ok(id);
            }
        }
        let lease = st.store.grant_lease(ttl + reuse).await?;
        *cur = Some((lease.id, now));
        Ok(lease.id)
    }

    /// Forgets a lease the store no longer knows (revoked, or expired while unused).
    pub async fn forget(&self, id: LeaseId) {
        let mut cur = self.current.lock().await;
        if cur.is_some_and(|(c, _)| c == id) {
            *cur = None;
        }
    }
}
