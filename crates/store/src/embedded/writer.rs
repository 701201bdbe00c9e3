//! The single writer thread: group commit, transactions, leases and compaction.
//!
//! Callers queue requests; the thread takes every request waiting (up to a bound), applies
//! them in order in one redb write transaction, each with its own revision, commits it
//! with fsync, and only then answers them and wakes the watchers. So a write is
//! acknowledged only once durable, and concurrent writers share one fsync.

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::tables::*;
use crate::{
    Compare, KeyValue, Lease, LeaseId, Op, OpResult, Result, Revision, StoreError, Txn, TxnResult,
};

/// The most requests committed together.
const MAX_BATCH: usize = 1024;
/// Revlog entries removed per compaction step (one step per commit, between batches).
const COMPACT_STEP: usize = 4096;
/// How often leases are checked for expiry.
const LEASE_TICK: Duration = Duration::from_millis(200);

pub(super) enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResult>>),
    Compact(Revision, oneshot::Sender<Result<()>>),
    Grant(Duration, oneshot::Sender<Result<Lease>>),
    Revoke(LeaseId, oneshot::Sender<Result<()>>),
    KeepAlive(LeaseId, oneshot::Sender<Result<()>>),
}

pub(super) struct Writer {
    pub db: Arc<Database>,
    pub loc: String,
    pub rx: mpsc::Receiver<Request>,
    pub notify: tokio::sync::watch::Sender<u64>,
    pub rev: u64,
    pub compact_rev: u64,
    pub durability: Durability,
}

struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    hist: Table<'t, (&'static str, u64), &'static [u8]>,
    revlog: Table<'t, (u64, u32), &'static str>,
    latest: Table<'t, &'static str, u64>,
    leases: Table<'t, i64, (u64, u64)>,
    lease_keys: Table<'t, (i64, &'static str), ()>,
}

impl<'t> Tables<'t> {
    fn open(w: &'t WriteTransaction, loc: &str) -> Result<Self> {
        Ok(Tables {
            meta: w.open_table(META).ctx(loc, "open table")?,
            hist: w.open_table(HIST).ctx(loc, "open table")?,
            revlog: w.open_table(REVLOG).ctx(loc, "open table")?,
            latest: w.open_table(LATEST).ctx(loc, "open table")?,
            leases: w.open_table(LEASES).ctx(loc, "open table")?,
            lease_keys: w.open_table(LEASE_KEYS).ctx(loc, "open table")?,
        })
    }
}

/// A request's answer, sent only after the commit.
enum Reply {
    Txn(oneshot::Sender<Result<TxnResult>>, Result<TxnResult>),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
    Lease(oneshot::Sender<Result<Lease>>, Result<Lease>),
    /// A compaction, answered once its removal is done rather than at its commit.
    CompactPending(oneshot::Sender<Result<()>>),
}

impl Reply {
    fn fail(self, e: impl Fn() -> StoreError) {
        match self {
            Reply::Txn(tx, _) => drop(tx.send(Err(e()))),
            Reply::Unit(tx, _) => drop(tx.send(Err(e()))),
            Reply::Lease(tx, _) => drop(tx.send(Err(e()))),
            Reply::CompactPending(tx) => drop(tx.send(Err(e()))),
        }
    }
    fn send(self) {
        match self {
            Reply::Txn(tx, r) => drop(tx.send(r)),
            Reply::Unit(tx, r) => drop(tx.send(r)),
            Reply::Lease(tx, r) => drop(tx.send(r)),
            Reply::CompactPending(tx) => drop(tx.send(Ok(()))),
        }
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Writer {
    pub fn run(mut self) {
        // Compactions waiting for their physical removal to finish.
        let mut compactions: Vec<oneshot::Sender<Result<()>>> = Vec::new();
        let mut compact_done_to = self.compact_rev;
        let mut next_lease_check = std::time::Instant::now();
        loop {
            let mut batch = Vec::new();
            let busy = compact_done_to < self.compact_rev;
            let wait = if busy {
                Duration::ZERO
            } else {
                next_lease_check.saturating_duration_since(std::time::Instant::now())
            };
            match self.rx.recv_timeout(wait) {
                Ok(r) => batch.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let check_leases = std::time::Instant::now() >= next_lease_check;
            if check_leases {
                next_lease_check = std::time::Instant::now() + LEASE_TICK;
            }
            let (rev0, compact0) = (self.rev, self.compact_rev);
            let mut replies = Vec::with_capacity(batch.len());
            let mut step_done = None;
            let res = (|| -> Result<()> {
                let mut w = self.db.begin_write().ctx(&self.loc, "begin write")?;
                w.set_durability(self.durability)
                    .map_err(redb::Error::from)
                    .ctx(&self.loc, "set durability")?;
                {
                    let mut t = Tables::open(&w, &self.loc)?;
                    for req in batch {
                        replies.push(self.apply(&mut t, req)?);
                    }
                    if check_leases {
                        self.expire_leases(&mut t)?;
                    }
                    if compact_done_to < self.compact_rev {
                        step_done = Some(self.compact_step(&mut t)?);
                    }
                    t.meta.insert(REV_KEY, self.rev).ctx(&self.loc, "write")?;
                    t.meta
                        .insert(COMPACT_KEY, self.compact_rev)
                        .ctx(&self.loc, "write")?;
                }
                w.commit().ctx(&self.loc, "commit")?;
                Ok(())
            })();
            match res {
                Ok(()) => {
                    if self.rev != rev0 {
                        self.notify.send_replace(self.rev);
                    }
                    for r in replies {
                        match r {
                            Reply::CompactPending(tx) => compactions.push(tx),
                            r => r.send(),
                        }
                    }
                    if step_done == Some(true) {
                        compact_done_to = self.compact_rev;
                    }
                    if compact_done_to == self.compact_rev {
                        for tx in compactions.drain(..) {
                            let _ = tx.send(Ok(()));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed");
                    // Nothing of the batch is visible: roll the in-memory state back.
                    self.rev = rev0;
                    self.compact_rev = compact0;
                    for r in replies {
                        r.fail(|| StoreError::CommitFailed {
                            location: self.loc.clone(),
                            cause: e.to_string(),
                        });
                    }
                    // Avoid spinning on a persistent failure (e.g. a full disk).
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn apply(&mut self, t: &mut Tables, req: Request) -> Result<Reply> {
        Ok(match req {
            Request::Txn(txn, tx) => {
                let r = self.txn(t, txn)?;
                Reply::Txn(tx, r)
            }
            Request::Compact(rev, tx) => match self.compact(rev) {
                Ok(()) => Reply::CompactPending(tx),
                Err(e) => Reply::Unit(tx, Err(e)),
            },
            Request::Grant(ttl, tx) => {
                let r = self.grant(t, ttl)?;
                Reply::Lease(tx, r)
            }
            Request::Revoke(id, tx) => {
                let r = self.revoke(t, id)?;
                Reply::Unit(tx, r)
            }
            Request::KeepAlive(id, tx) => {
                let found = t.leases.get(id).ctx(&self.loc, "read")?.map(|v| v.value());
                let r = match found {
                    Some((ttl, _)) => {
                        t.leases
                            .insert(id, (ttl, now_ms() + ttl))
                            .ctx(&self.loc, "write")?;
                        Ok(())
                    }
                    None => Err(StoreError::LeaseNotFound { lease: id }),
                };
                Reply::Unit(tx, r)
            }
        })
    }

    /// Outer error: storage failure (aborts the batch). Inner: the request's own outcome.
    fn txn(&mut self, t: &mut Tables, txn: Txn) -> Result<Result<TxnResult>> {
        let loc = self.loc.clone();
        // Validate both branches before writing anything, so a refused request never leaves
        // part of itself behind.
        for ops in [&txn.success, &txn.failure] {
            let mut seen = HashSet::new();
            for op in ops {
                let (key, lease) = match op {
                    Op::Put { key, lease, .. } => (key, *lease),
                    Op::Delete { key } => (key, 0),
                    Op::Get { .. } => continue,
                };
                if key.is_empty() {
                    return Ok(Err(StoreError::EmptyKey));
                }
                if !seen.insert(key.as_str()) {
                    return Ok(Err(StoreError::DuplicateKeyInTxn { key: key.clone() }));
                }
                if lease != 0 && t.leases.get(lease).ctx(&loc, "read")?.is_none() {
                    return Ok(Err(StoreError::LeaseNotFound { lease }));
                }
            }
        }
        let mut ok = true;
        for c in &txn.compares {
            let holds = match c {
                Compare::ModRevision { key, revision } => {
                    let cur = t.latest.get(key.as_str()).ctx(&loc, "read")?;
                    cur.map(|v| v.value() as i64).unwrap_or(0) == *revision
                }
                Compare::Value { key, value } => {
                    kv_latest(&t.latest, &t.hist, key, &loc)?.is_some_and(|kv| kv.value == *value)
                }
            };
            if !holds {
                ok = false;
                break;
            }
        }
        let ops = if ok { txn.success } else { txn.failure };
        let new_rev = self.rev + 1;
        let mut n = 0u32;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                Op::Get { key } => OpResult::Get {
                    kv: kv_latest(&t.latest, &t.hist, &key, &loc)?,
                },
                Op::Put { key, value, lease } => {
                    let prev = kv_latest(&t.latest, &t.hist, &key, &loc)?;
                    let rec = Rec {
                        put: true,
                        create: prev.as_ref().map_or(new_rev, |p| p.create_revision as u64),
                        version: prev.as_ref().map_or(1, |p| p.version as u64 + 1),
                        lease,
                        value,
                    };
                    self.write(t, &key, new_rev, n, &rec, prev.as_ref())?;
                    n += 1;
                    OpResult::Put { prev }
                }
                Op::Delete { key } => {
                    let prev = kv_latest(&t.latest, &t.hist, &key, &loc)?;
                    if prev.is_some() {
                        self.delete(t, &key, new_rev, n, prev.as_ref())?;
                        n += 1;
                    }
                    OpResult::Delete { prev }
                }
            });
        }
        if n > 0 {
            self.rev = new_rev;
        }
        Ok(Ok(TxnResult {
            succeeded: ok,
            revision: self.rev as i64,
            results,
        }))
    }

    fn write(
        &self,
        t: &mut Tables,
        key: &str,
        rev: u64,
        n: u32,
        rec: &Rec,
        prev: Option<&KeyValue>,
    ) -> Result<()> {
        let loc = &self.loc;
        t.hist
            .insert((key, rev), rec.encode().as_slice())
            .ctx(loc, "write")?;
        t.revlog.insert((rev, n), key).ctx(loc, "write")?;
        if rec.put {
            t.latest.insert(key, rev).ctx(loc, "write")?;
        } else {
            t.latest.remove(key).ctx(loc, "write")?;
        }
        let old_lease = prev.map_or(0, |p| p.lease);
        if old_lease != 0 && old_lease != rec.lease {
            t.lease_keys.remove((old_lease, key)).ctx(loc, "write")?;
        }
        if rec.lease != 0 {
            t.lease_keys
                .insert((rec.lease, key), ())
                .ctx(loc, "write")?;
        }
        Ok(())
    }

    fn delete(
        &self,
        t: &mut Tables,
        key: &str,
        rev: u64,
        n: u32,
        prev: Option<&KeyValue>,
    ) -> Result<()> {
        let rec = Rec {
            put: false,
            create: 0,
            version: 0,
            lease: 0,
            value: Vec::new(),
        };
        self.write(t, key, rev, n, &rec, prev)
    }

    fn compact(&mut self, rev: Revision) -> Result<()> {
        if rev <= self.compact_rev as i64 {
            return Err(StoreError::Compacted {
                requested: rev,
                compact_revision: self.compact_rev as i64,
            });
        }
        if rev > self.rev as i64 {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: self.rev as i64,
            });
        }
        // Reads below it fail from this commit on; removal proceeds in steps.
        self.compact_rev = rev as u64;
        Ok(())
    }

    /// Remove up to [`COMPACT_STEP`] events below the compact revision and the versions
    /// they superseded. Returns whether everything below it is gone.
    fn compact_step(&self, t: &mut Tables) -> Result<bool> {
        let loc = &self.loc;
        let c = self.compact_rev;
        let mut todo = Vec::new();
        for e in t
            .revlog
            .range((0u64, 0u32)..(c, 0u32))
            .ctx(loc, "compact")?
        {
            let (k, v) = e.ctx(loc, "compact")?;
            todo.push((k.value(), v.value().to_string()));
            if todo.len() == COMPACT_STEP {
                break;
            }
        }
        let done = todo.len() < COMPACT_STEP;
        let mut keys = HashSet::new();
        for (pos, key) in todo {
            t.revlog.remove(pos).ctx(loc, "compact")?;
            keys.insert(key);
        }
        for key in keys {
            // Keep the newest version at or below c (unless it is a tombstone below c);
            // drop everything older.
            let keep = {
                let mut it = t
                    .hist
                    .range((key.as_str(), 0u64)..=(key.as_str(), c))
                    .ctx(loc, "compact")?;
                match it.next_back() {
                    Some(e) => {
                        let (k, v) = e.ctx(loc, "compact")?;
                        let r = k.value().1;
                        let rec = Rec::decode(v.value(), loc)?;
                        Some((r, rec.put))
                    }
                    None => None,
                }
            };
            let Some((r, put)) = keep else { continue };
            let upto = if put || r == c { r } else { r + 1 };
            t.hist
                .retain_in((key.as_str(), 0u64)..(key.as_str(), upto), |_, _| false)
                .ctx(loc, "compact")?;
        }
        Ok(done)
    }

    fn grant(&mut self, t: &mut Tables, ttl: Duration) -> Result<Result<Lease>> {
        if ttl < Duration::from_secs(1) {
            return Ok(Err(StoreError::InvalidTtl {
                ttl_secs: ttl.as_secs() as i64,
            }));
        }
        let loc = &self.loc;
        let id = meta_get(&t.meta, LEASE_ID_KEY, loc)?.unwrap_or(1) as i64;
        t.meta
            .insert(LEASE_ID_KEY, id as u64 + 1)
            .ctx(loc, "write")?;
        let ms = ttl.as_millis() as u64;
        t.leases.insert(id, (ms, now_ms() + ms)).ctx(loc, "write")?;
        Ok(Ok(Lease { id, ttl }))
    }

    fn revoke(&mut self, t: &mut Tables, id: LeaseId) -> Result<Result<()>> {
        let loc = self.loc.clone();
        if t.leases.remove(id).ctx(&loc, "write")?.is_none() {
            return Ok(Err(StoreError::LeaseNotFound { lease: id }));
        }
        let mut keys = Vec::new();
        for e in t
            .lease_keys
            .range((id, "")..(id + 1, ""))
            .ctx(&loc, "read")?
        {
            let (k, _) = e.ctx(&loc, "read")?;
            keys.push(k.value().1.to_string());
        }
        let new_rev = self.rev + 1;
        let mut n = 0;
        for key in &keys {
            let prev = kv_latest(&t.latest, &t.hist, key, &loc)?;
            if prev.is_some() {
                self.delete(t, key, new_rev, n, prev.as_ref())?;
                n += 1;
            }
            t.lease_keys.remove((id, key.as_str())).ctx(&loc, "write")?;
        }
        if n > 0 {
            self.rev = new_rev;
        }
        Ok(Ok(()))
    }

    fn expire_leases(&mut self, t: &mut Tables) -> Result<()> {
        let now = now_ms();
        let mut expired = Vec::new();
        for e in t.leases.iter().ctx(&self.loc, "read")? {
            let (k, v) = e.ctx(&self.loc, "read")?;
            if v.value().1 <= now {
                expired.push(k.value());
            }
        }
        for id in expired {
            // Already checked that it exists.
            let _ = self.revoke(t, id)?;
        }
        Ok(())
    }
}
