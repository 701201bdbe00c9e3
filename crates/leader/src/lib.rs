//! Leader election on a `coordination.k8s.io/v1` Lease, through kube-rs, as client-go's
//! `leaderelection` package does it for kube-scheduler and kube-controller-manager.
//!
//! Contract:
//! - Candidates share one Lease (`namespace/name`). A candidate acquires it when it does
//!   not exist, has no holder, or its holder has not renewed it for `leaseDurationSeconds`
//!   as measured on the candidate's own clock since it saw the record change. Every write
//!   is an update with the read `resourceVersion` (or a create), so of two candidates
//!   racing, the API server lets exactly one win.
//! - The leader renews every `retry_period`. If it cannot renew for `renew_deadline`
//!   (shorter than the lease duration), or sees another holder, it has lost: the work's
//!   [`CancellationToken`] is cancelled and the work is awaited before the elector
//!   campaigns again, so a component that lost the lease stops acting before another may
//!   take over (the lease outlives the renew deadline by the difference).
//! - On shutdown the work is stopped first, then the lease is released (holder cleared),
//!   so another candidate takes over on its next try instead of waiting out the lease.
//!   A killed leader is replaced once its lease expires.
//!
//! The fields written are kube's: holderIdentity, leaseDurationSeconds, acquireTime,
//! renewTime and leaseTransitions (incremented whenever the holder changes).

#![forbid(unsafe_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

pub use tokio_util::sync::CancellationToken;

/// How often and how long: kube-scheduler's `--leader-elect-lease-duration`,
/// `--leader-elect-renew-deadline` and `--leader-elect-retry-period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease is honoured after its holder's last renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// The pause between tries to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A [`Timing`] under which two leaders could act at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("the lease duration ({lease:?}) must be longer than the renew deadline ({renew:?}), or a leader that cannot renew still acts after others take over")]
    LeaseNotLongerThanRenew { lease: Duration, renew: Duration },
    #[error("the renew deadline ({renew:?}) must be longer than 1.2 × the retry period ({retry:?}), so a leader gets more than one try to renew")]
    RenewTooShort { renew: Duration, retry: Duration },
    #[error("the lease duration ({0:?}) must be a whole number of seconds, at least 1 s (leaseDurationSeconds)")]
    LeaseNotWholeSeconds(Duration),
    #[error("the retry period must be positive")]
    ZeroRetry,
}

impl Timing {
    /// kube-scheduler's checks of the three flags.
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.retry_period.is_zero() {
            return Err(TimingError::ZeroRetry);
        }
        if self.lease_duration.subsec_nanos() != 0
            || self.lease_duration.is_zero()
            || i32::try_from(self.lease_duration.as_secs()).is_err()
        {
            return Err(TimingError::LeaseNotWholeSeconds(self.lease_duration));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(TimingError::LeaseNotLongerThanRenew {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= self.retry_period.as_secs_f64() * 1.2 {
            return Err(TimingError::RenewTooShort {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(())
    }
}

/// `<hostname>_<random>`, the shape of the identity kube components campaign with:
/// unique per process, and it says which machine holds the lease.
pub fn unique_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{}", random_hex())
}

/// 128 bits from the kernel's random pool as hex (falling back to the time and process
/// id, which still differ between two candidates on one machine).
fn random_hex() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if random.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

/// What this candidate last read of the lease, and when (its own clock).
struct Observed {
    lease: Lease,
    /// When the current record was written, as best this candidate can tell.
    changed_at: Instant,
    /// When the read that returned it was sent.
    read_at: Instant,
}

impl Observed {
    fn spec(&self) -> LeaseSpec {
        self.lease.spec.clone().unwrap_or_default()
    }

    fn holder(&self) -> &str {
        self.lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .unwrap_or("")
    }

    /// When the holder's claim ends unless it renews.
    fn expiry(&self, default: Duration) -> Instant {
        let secs = self
            .lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(default);
        self.changed_at + secs
    }
}

/// The outcome of one try to acquire or renew.
enum Attempt {
    Held,
    /// Another candidate holds an unexpired lease.
    Other(String),
    /// Someone wrote the lease between our read and our write; read again.
    Conflict,
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `namespace/name`, with kube's default timing
    /// (15 s lease, 10 s renew deadline, 2 s retry period).
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing: Timing::default(),
        }
    }

    pub fn with_timing(mut self, timing: Timing) -> Result<Self, TimingError> {
        timing.validate()?;
        self.timing = timing;
        Ok(self)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Campaigns until `shutdown`, running `work` while this candidate leads. `work` gets
    /// a token that is cancelled when leadership is lost or shutdown starts; it must then
    /// stop acting and return. After a loss the candidate campaigns again (calling `work`
    /// anew when it wins). Returns `Ok` at shutdown (after releasing the lease), or what
    /// `work` returned if it ended while still leading.
    pub async fn run<F, Fut, E>(
        self,
        mut work: F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), E>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        tokio::pin!(shutdown);
        let mut seen: Option<Observed> = None;
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                () = self.acquire(&mut seen) => {}
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let lost = CancellationToken::new();
            let job = work(lost.clone());
            tokio::pin!(job);
            enum End<E> {
                Shutdown,
                Lost,
                Work(Result<(), E>),
            }
            let end = tokio::select! {
                _ = &mut shutdown => End::Shutdown,
                () = self.renew(&mut seen) => End::Lost,
                r = &mut job => End::Work(r),
            };
            lost.cancel();
            match end {
                End::Lost => {
                    tracing::warn!(lease = %self.name, identity = %self.identity, "lost the lease; stopping until leading again");
                    if (&mut job).await.is_err() {
                        tracing::warn!(lease = %self.name, "the work failed while stopping after the lease was lost");
                    }
                }
                End::Shutdown => {
                    // Keep the lease while the work winds down, so nobody else acts yet.
                    let r = tokio::select! {
                        r = &mut job => r,
                        () = self.renew(&mut seen) => (&mut job).await,
                    };
                    self.release(&mut seen).await;
                    return r;
                }
                End::Work(r) => {
                    self.release(&mut seen).await;
                    return r;
                }
            }
        }
    }

    /// Tries until this candidate holds the lease: every retry period, and at once when
    /// the holder's lease runs out sooner.
    async fn acquire(&self, seen: &mut Option<Observed>) {
        loop {
            let next = match self.try_acquire_or_renew(seen).await {
                Ok(Attempt::Held) => return,
                Ok(Attempt::Other(holder)) => {
                    tracing::debug!(lease = %self.name, %holder, "lease held by another candidate");
                    let retry = Instant::now() + self.timing.retry_period;
                    seen.as_ref()
                        .map(|o| o.expiry(self.timing.lease_duration).min(retry))
                        .unwrap_or(retry)
                }
                Ok(Attempt::Conflict) => Instant::now() + self.timing.retry_period,
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "could not read or take the lease; retrying");
                    Instant::now() + self.timing.retry_period
                }
            };
            tokio::time::sleep_until(next).await;
        }
    }

    /// Renews every retry period; returns when leadership is lost: no successful renewal
    /// for the renew deadline, or another holder seen.
    async fn renew(&self, seen: &mut Option<Observed>) {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            let deadline = last + self.timing.renew_deadline;
            loop {
                let started = Instant::now();
                match tokio::time::timeout_at(deadline, self.try_acquire_or_renew(seen)).await {
                    Ok(Ok(Attempt::Held)) => {
                        last = started;
                        break;
                    }
                    Ok(Ok(Attempt::Other(holder))) => {
                        tracing::warn!(lease = %self.name, %holder, "another candidate holds the lease");
                        return;
                    }
                    Ok(Ok(Attempt::Conflict)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed");
                    }
                    Err(_) => return,
                }
                let retry = Instant::now() + self.timing.retry_period;
                if retry >= deadline {
                    return;
                }
                tokio::time::sleep_until(retry).await;
            }
        }
    }

    /// One read and (unless another holds it) one write of the lease.
    async fn try_acquire_or_renew(
        &self,
        seen: &mut Option<Observed>,
    ) -> Result<Attempt, kube::Error> {
        let sent = Instant::now();
        let wall = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.claim(&LeaseSpec::default(), wall)),
            };
            let created = self.api.create(&PostParams::default(), &lease).await;
            return written(created, seen, sent);
        };
        self.observe(seen, current, sent, wall);
        let Some(obs) = seen.as_ref() else {
            return Ok(Attempt::Conflict);
        };
        let holder = obs.holder();
        if !holder.is_empty()
            && holder != self.identity
            && obs.expiry(self.timing.lease_duration) > Instant::now()
        {
            return Ok(Attempt::Other(holder.to_string()));
        }
        let mut claimed = obs.lease.clone();
        claimed.spec = Some(self.claim(&obs.spec(), wall));
        // `claimed` carries the resourceVersion read: a write by anyone since fails.
        let replaced = self
            .api
            .replace(&self.name, &PostParams::default(), &claimed)
            .await;
        written(replaced, seen, sent)
    }

    /// The record this candidate writes to hold the lease from `old`.
    fn claim(&self, old: &LeaseSpec, now: Timestamp) -> LeaseSpec {
        let ours = old.holder_identity.as_deref() == Some(self.identity.as_str());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: if ours {
                old.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 }),
            ..old.clone()
        }
    }

    /// Records a read. When the record changed since the previous read, its holder wrote
    /// it in between: take its renewTime as when, but never earlier than the previous
    /// read nor by more than half the margin between lease and renew deadline, so a
    /// skewed clock cannot make a live leader's lease look expired. A first read counts
    /// as now, as client-go does.
    fn observe(&self, seen: &mut Option<Observed>, lease: Lease, sent: Instant, wall: Timestamp) {
        if let Some(o) = seen.as_mut() {
            if o.lease.metadata.resource_version == lease.metadata.resource_version {
                o.read_at = sent;
                return;
            }
        }
        let window = seen
            .as_ref()
            .map(|o| sent.saturating_duration_since(o.read_at))
            .unwrap_or_default()
            .min((self.timing.lease_duration - self.timing.renew_deadline) / 2);
        let age = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .and_then(|t| Duration::try_from(wall.duration_since(t.0)).ok())
            .unwrap_or_default()
            .min(window);
        *seen = Some(Observed {
            lease,
            changed_at: sent.checked_sub(age).unwrap_or(sent),
            read_at: sent,
        });
    }

    /// Clears the holder if it is still this candidate (bounded by the renew deadline, so
    /// shutdown never hangs on an unreachable API server).
    async fn release(&self, seen: &mut Option<Observed>) {
        let attempt = async {
            for _ in 0..2 {
                let current = match self.api.get_opt(&self.name).await {
                    Ok(Some(l)) => l,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(lease = %self.name, error = %e, "could not release the lease");
                        return;
                    }
                };
                let mut spec = current.spec.clone().unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    return;
                }
                let now = MicroTime(Timestamp::now());
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                let released = Lease {
                    spec: Some(spec),
                    ..current
                };
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &released)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(lease = %self.name, identity = %self.identity, "released the lease");
                        return;
                    }
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => {
                        tracing::warn!(lease = %self.name, error = %e, "could not release the lease");
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(self.timing.renew_deadline, attempt).await;
        *seen = None;
    }
}

/// The outcome of writing our claim (read at `sent`): held from then on, or lost to a
/// concurrent writer.
fn written(
    result: Result<Lease, kube::Error>,
    seen: &mut Option<Observed>,
    sent: Instant,
) -> Result<Attempt, kube::Error> {
    match result {
        Ok(lease) => {
            *seen = Some(Observed {
                lease,
                changed_at: sent,
                read_at: sent,
            });
            Ok(Attempt::Held)
        }
        Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
        Err(e) => Err(e),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn kube_scheduler_defaults_are_valid_and_unsafe_timings_are_refused() {
        assert_eq!(Timing::default().validate(), Ok(()));
        let t = |l, r, p| Timing {
            lease_duration: Duration::from_secs(l),
            renew_deadline: Duration::from_secs(r),
            retry_period: Duration::from_secs(p),
        };
        assert!(matches!(
            t(10, 10, 2).validate(),
            Err(TimingError::LeaseNotLongerThanRenew { .. })
        ));
        assert!(matches!(
            t(15, 2, 2).validate(),
            Err(TimingError::RenewTooShort { .. })
        ));
        assert_eq!(t(15, 10, 0).validate(), Err(TimingError::ZeroRetry));
        let half = Timing {
            lease_duration: Duration::from_millis(15_500),
            ..Timing::default()
        };
        assert!(matches!(
            half.validate(),
            Err(TimingError::LeaseNotWholeSeconds(_))
        ));
    }

    #[test]
    fn identities_are_host_and_128_random_bits() {
        let a = unique_identity();
        let b = unique_identity();
        assert_ne!(a, b);
        let (host, random) = a.rsplit_once('_').expect("host_random");
        assert!(!host.is_empty());
        assert_eq!(random.len(), 32);
    }

    /// An elector whose client is never called (these tests only build records).
    fn elector(identity: &str) -> LeaderElector {
        let unreachable = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
            Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("no API server"))
        });
        LeaderElector::new(
            kube::Client::new(unreachable, "default"),
            "kube-system",
            "lease",
            identity,
        )
    }

    fn lease(rv: &str, holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("lease".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn claims_count_transitions_only_when_the_holder_changes() {
        let me = elector("me");
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(1_010).unwrap();
        let first = me.claim(&LeaseSpec::default(), t0);
        assert_eq!(first.holder_identity.as_deref(), Some("me"));
        assert_eq!(first.lease_transitions, Some(1));
        assert_eq!(first.lease_duration_seconds, Some(15));
        assert_eq!(first.acquire_time, Some(MicroTime(t0)));
        let renewed = me.claim(&first, t1);
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t0)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        let taken = elector("other").claim(&renewed, t1);
        assert_eq!(taken.lease_transitions, Some(2));
        assert_eq!(taken.acquire_time, Some(MicroTime(t1)));
    }

    /// A record seen to change is dated by its renewTime, but only within the interval
    /// since the previous read (bounded by half the lease/renew margin): a holder's clock
    /// running behind can never make its live lease look expired.
    #[tokio::test(start_paused = true)]
    async fn observed_renewals_are_dated_within_the_read_interval() {
        let me = elector("me");
        let mut seen = None;
        let wall = Timestamp::from_second(10_000).unwrap();
        let secs = |s: i64| k8s_openapi::jiff::SignedDuration::from_secs(s);
        let read0 = Instant::now();
        // A first read counts as now, whatever renewTime says.
        me.observe(&mut seen, lease("1", "x", wall - secs(12)), read0, wall);
        assert_eq!(seen.as_ref().unwrap().changed_at, read0);

        // Two seconds later the record changed; its renewTime says a second ago.
        tokio::time::advance(Duration::from_secs(2)).await;
        let read1 = Instant::now();
        let wall1 = wall + secs(2);
        me.observe(&mut seen, lease("2", "x", wall1 - secs(1)), read1, wall1);
        assert_eq!(
            seen.as_ref().unwrap().changed_at,
            read1 - Duration::from_secs(1)
        );

        // An unchanged record keeps its date; only the read time moves.
        tokio::time::advance(Duration::from_secs(2)).await;
        let read2 = Instant::now();
        me.observe(
            &mut seen,
            lease("2", "x", wall1 - secs(1)),
            read2,
            wall1 + secs(2),
        );
        assert_eq!(
            seen.as_ref().unwrap().changed_at,
            read1 - Duration::from_secs(1)
        );
        assert_eq!(seen.as_ref().unwrap().read_at, read2);

        // A holder whose clock is 20 s behind: the date is clamped to the last read.
        tokio::time::advance(Duration::from_secs(2)).await;
        let read3 = Instant::now();
        let wall3 = wall1 + secs(4);
        me.observe(&mut seen, lease("3", "x", wall3 - secs(20)), read3, wall3);
        assert_eq!(seen.as_ref().unwrap().changed_at, read2);
        // A holder whose clock runs ahead: dated now.
        tokio::time::advance(Duration::from_secs(2)).await;
        let read4 = Instant::now();
        let wall4 = wall3 + secs(2);
        me.observe(&mut seen, lease("4", "x", wall4 + secs(30)), read4, wall4);
        assert_eq!(seen.as_ref().unwrap().changed_at, read4);
        assert_eq!(
            seen.as_ref().unwrap().expiry(Duration::from_secs(99)),
            read4 + Duration::from_secs(15)
        );
    }
}
