//! The single writer thread: group commit, transactions, leases and compaction.
//!
//! Callers queue requests; the thread takes every request waiting (up to a bound, and
//! waiting a fraction of a millisecond for as many as the last batch had), applies
//! them in order to a stage in memory, each with its own revision, writes the batch's
//! mutations to the write-ahead log and syncs it ([`super::wal`]), merges the stage into
//! the overlay readers see ([`super::overlay`]), and only then answers them and wakes the
//! watchers. So a write is visible and acknowledged only once durable, and concurrent
//! writers share one fsync. Once a second the overlay is folded into the redb file.

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use super::logged::{DbTables, Tables};
use super::overlay::{DbRead, Overlay};
use super::tables::*;
use super::wal::{OpLog, Wal};
use crate::{
    Compare, KeyValue, Lease, LeaseId, Op, OpResult, Result, Revision, StoreError, Txn, TxnResult,
};

/// The most requests committed together.
const MAX_BATCH: usize = 1024;
/// How long a batch waits for the writers of the previous one to come back.
const GATHER: Duration = Duration::from_millis(1);
/// Revlog entries removed per compaction step…
const COMPACT_STEP: usize = 4096;
/// …and at most this many steps per fold: a fold pauses every writer, so a large
/// compaction is spread over several, [`COMPACT_FOLD_EVERY`] apart.
const COMPACT_STEPS_PER_FOLD: usize = 16;
const COMPACT_FOLD_EVERY: Duration = Duration::from_millis(50);
/// How often leases are checked for expiry.
const LEASE_TICK: Duration = Duration::from_millis(200);
/// How often the overlay is folded into the redb file (a durable redb commit), by
/// default…
///
/// Every writer waits out a fold (redb allows one write transaction at a time, and a
/// durable commit writes and syncs every page changed since the last one), so each fold
/// delays one write of every writer. What decides how many writes see such a pause is
/// how often folds happen, not how large they are: at 64 writers, folding every 4 MiB
/// (several times a second) paused ~2% of all writes, enough to make the pause the p99
/// latency; once a second it is a fraction of a percent. Larger folds also write less in
/// total, since a page rewritten by many batches is written once per fold.
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(1);
/// …or sooner once this much was logged since the last fold: bounds the log file and the
/// replay at open (well under a second) when writes come faster than this per second.
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Where a defrag writes the new file before renaming it over the store.
pub(super) const DEFRAG_FILE: &str = "state.redb.defrag";

pub(super) enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResult>>),
    Compact(Revision, oneshot::Sender<Result<()>>),
    Grant(Duration, oneshot::Sender<Result<Lease>>),
    Revoke(LeaseId, oneshot::Sender<Result<()>>),
    KeepAlive(LeaseId, oneshot::Sender<Result<()>>),
    /// Rewrite the file compactly; answered with the file size before and after. Never part
    /// of a batch: it runs between batches, with the log folded first.
    Defrag(oneshot::Sender<Result<(u64, u64)>>),
}

impl Request {
    /// A reply slot for a request that will not be applied (its batch failed).
    fn into_pending(self) -> Reply {
        match self {
            Request::Txn(_, tx) => Reply::Txn(
                tx,
                Ok(TxnResult {
                    succeeded: false,
                    revision: 0,
                    results: Vec::new(),
                }),
            ),
            Request::Compact(_, tx) | Request::Revoke(_, tx) | Request::KeepAlive(_, tx) => {
                Reply::Unit(tx, Ok(()))
            }
            Request::Grant(ttl, tx) => Reply::Lease(tx, Ok(Lease { id: 0, ttl })),
            Request::Defrag(tx) => Reply::Sizes(tx, Ok((0, 0))),
        }
    }
}

pub(super) struct Writer {
    pub db: Arc<Database>,
    /// The writes not folded into `db` yet, shared with readers.
    pub mem: Arc<RwLock<Overlay>>,
    /// A snapshot of `db` as of the last fold (what `mem` lies on).
    pub snap: Arc<DbRead>,
    /// Compaction has physically removed everything below this revision.
    pub compact_done_to: u64,
    /// Where readers find the database; replaced with `db` after a defrag.
    pub slot: super::DbSlot,
    /// The data dir (None in memory).
    pub dir: Option<std::path::PathBuf>,
    pub loc: String,
    pub rx: mpsc::Receiver<Request>,
    pub notify: tokio::sync::watch::Sender<u64>,
    pub rev: u64,
    pub compact_rev: u64,
    /// None in memory.
    pub wal: Option<Wal>,
    /// Lease deadlines are on this clock.
    pub clock: Arc<dyn crate::Clock>,
    /// Keep at least this much history; compact older revisions automatically.
    pub history: Option<Duration>,
    /// Fold the overlay into the file this often.
    pub fold_every: Duration,
    /// The buffer of the last batch's log, reused by the next.
    pub spare: Vec<u8>,
    /// The first storage failure, reported with later ones that follow from it (redb
    /// refuses all writes after an I/O error until the store is reopened).
    pub first_failure: Option<String>,
}

/// An error and its sources, as one line.
fn chain(e: &StoreError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

/// A request's answer, sent only after the commit.
enum Reply {
    Txn(oneshot::Sender<Result<TxnResult>>, Result<TxnResult>),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
    Lease(oneshot::Sender<Result<Lease>>, Result<Lease>),
    Sizes(oneshot::Sender<Result<(u64, u64)>>, Result<(u64, u64)>),
    /// A compaction, answered once its removal is done rather than at its commit.
    CompactPending(oneshot::Sender<Result<()>>),
}

impl Reply {
    fn fail(self, e: impl Fn() -> StoreError) {
        match self {
            Reply::Txn(tx, _) => drop(tx.send(Err(e()))),
            Reply::Unit(tx, _) => drop(tx.send(Err(e()))),
            Reply::Lease(tx, _) => drop(tx.send(Err(e()))),
            Reply::Sizes(tx, _) => drop(tx.send(Err(e()))),
            Reply::CompactPending(tx) => drop(tx.send(Err(e()))),
        }
    }
    fn send(self) {
        match self {
            Reply::Txn(tx, r) => drop(tx.send(r)),
            Reply::Unit(tx, r) => drop(tx.send(r)),
            Reply::Lease(tx, r) => drop(tx.send(r)),
            Reply::Sizes(tx, r) => drop(tx.send(r)),
            Reply::CompactPending(tx) => drop(tx.send(Ok(()))),
        }
    }
}

impl Writer {
    pub fn run(mut self) {
        // Compactions waiting for their physical removal to finish.
        let mut compactions: Vec<oneshot::Sender<Result<()>>> = Vec::new();
        let mut last_fold = Instant::now();
        let mut next_lease_check = Instant::now();
        let mut next_checkpoint = Instant::now() + self.fold_every;
        // Automatic compaction: every `history`, compact to the revision that was current
        // one `history` ago, so reads and watches can reach back at least that far.
        let far_future = Instant::now() + Duration::from_secs(86400 * 365);
        let mut next_auto = self.history.map_or(far_future, |h| Instant::now() + h);
        let mut marked_rev = self.rev;
        let mut last_batch = 0;
        loop {
            let mut batch = Vec::new();
            let mut until = next_lease_check.min(next_auto);
            if self.unfolded() > 0 {
                until = until.min(next_checkpoint);
            }
            if self.compact_done_to < self.compact_rev {
                until = until.min(last_fold + COMPACT_FOLD_EVERY);
            }
            let wait = until.saturating_duration_since(Instant::now());
            // A defrag ends the batch: what was queued before it is committed first.
            let mut defrag = None;
            match self.rx.recv_timeout(wait) {
                Ok(Request::Defrag(tx)) => defrag = Some(tx),
                Ok(r) => batch.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            // The writers answered after the last batch come back one by one, each after
            // its task was scheduled; taking only the first of them would spend a whole
            // sync on it and make the rest wait for the next. So while fewer than last
            // time have arrived, wait a little (bounded, far below a sync) for the others.
            let gather_until = Instant::now() + GATHER;
            while batch.len() < MAX_BATCH && defrag.is_none() {
                let r = match self.rx.try_recv() {
                    Ok(r) => r,
                    Err(_) if !batch.is_empty() && batch.len() < last_batch => {
                        let left = gather_until.saturating_duration_since(Instant::now());
                        match self.rx.recv_timeout(left) {
                            Ok(r) => r,
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                };
                match r {
                    Request::Defrag(tx) => defrag = Some(tx),
                    r => batch.push(r),
                }
            }
            last_batch = batch.len();
            let check_leases = Instant::now() >= next_lease_check;
            if check_leases {
                next_lease_check = Instant::now() + LEASE_TICK;
            }
            let (rev0, compact0) = (self.rev, self.compact_rev);
            // After taking compact0, so the new compact revision is persisted below.
            if Instant::now() >= next_auto {
                if let Some(h) = self.history {
                    next_auto = Instant::now() + h;
                    if marked_rev > self.compact_rev && self.compact_done_to == self.compact_rev {
                        // Cannot fail: marked_rev is above the compact revision and not
                        // above the current one.
                        let _ = self.compact(marked_rev as Revision);
                    }
                    marked_rev = self.rev;
                }
            }
            let mut replies = Vec::with_capacity(batch.len());
            let res = self.commit_batch(batch, check_leases, (rev0, compact0), &mut replies);
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
                }
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed");
                    // Nothing of the batch is visible: roll the in-memory state back.
                    self.rev = rev0;
                    self.compact_rev = compact0;
                    // Each writer gets the whole cause (e.g. "No space left on device"), and
                    // the first failure if this one only follows from it.
                    let mut cause = chain(&e);
                    match &self.first_failure {
                        Some(first) => cause = format!("{cause} (first failure: {first})"),
                        None => self.first_failure = Some(cause.clone()),
                    }
                    for r in replies {
                        r.fail(|| StoreError::CommitFailed {
                            location: self.loc.clone(),
                            cause: cause.clone(),
                        });
                    }
                    // Avoid spinning on a persistent failure (e.g. a full disk).
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let unfolded = self.unfolded();
            let compacting = self.compact_done_to < self.compact_rev;
            let now = Instant::now();
            if unfolded > CHECKPOINT_BYTES
                || now >= next_checkpoint
                || (compacting && now >= last_fold + COMPACT_FOLD_EVERY)
            {
                next_checkpoint = now + self.fold_every;
                last_fold = now;
                let r = self.fold();
                tracing::debug!(bytes = unfolded, took = ?now.elapsed(), "store fold");
                if let Err(e) = r {
                    self.first_failure.get_or_insert_with(|| chain(&e));
                    tracing::error!(error = %e, "store fold failed; will retry");
                }
            }
            if self.compact_done_to == self.compact_rev {
                for tx in compactions.drain(..) {
                    let _ = tx.send(Ok(()));
                }
            }
            if let Some(tx) = defrag {
                let _ = tx.send(self.defrag());
            }
        }
        if let Err(e) = self.fold() {
            tracing::error!(error = %e, "store checkpoint at close failed; the log will be replayed");
        }
    }

    /// Bytes of log not folded into the file yet.
    fn unfolded(&self) -> u64 {
        self.mem.read().unwrap_or_else(|e| e.into_inner()).log.len() as u64
    }

    /// Apply a batch to a stage over the overlay, make its log record durable, and merge
    /// the stage into the overlay (which makes it visible). On failure nothing of it is
    /// visible or durable, and `replies` has every request's reply slot.
    fn commit_batch(
        &mut self,
        batch: Vec<Request>,
        check_leases: bool,
        (rev0, compact0): (u64, u64),
        replies: &mut Vec<Reply>,
    ) -> Result<()> {
        let mem = self.mem.clone();
        let snap = self.snap.clone();
        let loc = self.loc.clone();
        let (stage, mut log) = {
            let guard = mem.read().unwrap_or_else(|e| e.into_inner());
            let mut t = Tables::new(
                &guard,
                &snap,
                &loc,
                OpLog::reuse(std::mem::take(&mut self.spare)),
            );
            let mut reqs = batch.into_iter();
            while let Some(req) = reqs.next() {
                match self.apply(&mut t, req) {
                    Ok(r) => replies.push(r),
                    Err(failed) => {
                        let (e, r) = *failed;
                        // The batch fails as a whole: keep every sender so each
                        // writer hears why.
                        replies.push(r);
                        replies.extend(reqs.map(Request::into_pending));
                        return Err(e);
                    }
                }
            }
            if check_leases {
                self.expire_leases(&mut t)?;
            }
            if self.rev != rev0 {
                t.meta_put(REV_KEY, self.rev);
            }
            if self.compact_rev != compact0 {
                t.meta_put(COMPACT_KEY, self.compact_rev);
            }
            (t.stage, t.log)
        };
        if log.is_empty() {
            // Reads only: nothing to make durable or visible.
            self.spare = log.into_buf();
            return Ok(());
        }
        let appended = match self.wal.as_mut() {
            Some(wal) => wal.append_log(&mut log).map_err(|e| StoreError::Io {
                path: wal.path().to_path_buf(),
                operation: "append to the write-ahead log",
                source: e,
            }),
            None => Ok(()),
        };
        if appended.is_ok() {
            let mut m = mem.write().unwrap_or_else(|e| e.into_inner());
            m.merge(stage);
            m.log.extend_from_slice(log.payload());
        }
        self.spare = log.into_buf();
        appended
    }

    /// Fold the overlay into redb: one durable redb commit replays its log into the file
    /// (and removes a step of compacted history), and records the log's next lap in the
    /// same commit, so the log starts over from its beginning (without a sync of its own:
    /// the records of the finished lap are no longer needed, and the next lap's are told
    /// apart by it). Then the overlay is emptied.
    fn fold(&mut self) -> Result<()> {
        let compacting = self.compact_done_to < self.compact_rev;
        let mem = self.mem.clone();
        let guard = mem.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_empty() && !compacting {
            return Ok(());
        }
        let lap = self.wal.as_ref().map(|w| w.next_lap());
        let mut w = self.db.begin_write().ctx(&self.loc, "begin write")?;
        w.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)
            .ctx(&self.loc, "set durability")?;
        let mut done = !compacting;
        {
            let mut t = DbTables::open(&w, &self.loc)?;
            t.replay(&guard.log, &self.loc)?;
            for _ in 0..COMPACT_STEPS_PER_FOLD {
                if done {
                    break;
                }
                done = self.compact_step(&mut t)?;
            }
            if let Some(lap) = lap {
                t.meta
                    .insert(WAL_BASE_KEY, lap.base)
                    .ctx(&self.loc, "write")?;
                t.meta
                    .insert(WAL_SALT_KEY, lap.salt)
                    .ctx(&self.loc, "write")?;
            }
        }
        drop(guard);
        w.commit().ctx(&self.loc, "checkpoint")?;
        // The file now holds everything in the overlay: read it from there.
        let r = self.db.begin_read().ctx(&self.loc, "begin read")?;
        self.snap = Arc::new(DbRead::open(&r, &self.loc)?);
        mem.write().unwrap_or_else(|e| e.into_inner()).clear();
        if done {
            self.compact_done_to = self.compact_rev;
        }
        match (self.wal.as_mut(), lap) {
            (Some(wal), Some(lap)) => wal.restart(lap).map_err(|e| StoreError::Io {
                path: wal.path().to_path_buf(),
                operation: "start the write-ahead log over",
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Rewrite the store into a new file in one pass (pages full and in order, none free),
    /// shrink it, and rename it over the old one. The old file stays intact until the
    /// rename, which is atomic, and the log is empty by then, so a crash at any point
    /// leaves one complete store.
    fn defrag(&mut self) -> Result<(u64, u64)> {
        let Some(dir) = self.dir.clone() else {
            return Err(StoreError::InMemory {
                operation: "defragment",
            });
        };
        // Fold first: the log is then empty, and the copy carries its current lap.
        self.fold()?;
        let path = dir.join(super::STORE_FILE);
        let tmp = dir.join(DEFRAG_FILE);
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&path);
        let _ = std::fs::remove_file(&tmp);
        let tloc = tmp.display().to_string();
        let io = |operation, e| StoreError::Io {
            path: tmp.clone(),
            operation,
            source: e,
        };
        let res = (|| -> Result<Database> {
            let mut out = Database::builder().create(&tmp).ctx(&tloc, "create")?;
            let r = self.db.begin_read().ctx(&self.loc, "begin read")?;
            super::copy_all(&r, &[], &out, &self.loc, &tloc)?;
            drop(r);
            while out.compact().ctx(&tloc, "compact")? {}
            std::fs::rename(&tmp, &path).map_err(|e| io("rename over the store file", e))?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("sync the data dir", e))?;
            Ok(out)
        })();
        match res {
            Ok(out) => {
                let out = Arc::new(out);
                let snap = out
                    .begin_read()
                    .ctx(&self.loc, "begin read")
                    .and_then(|r| DbRead::open(&r, &self.loc))?;
                *self.slot.write().unwrap_or_else(|e| e.into_inner()) = out.clone();
                // Readers still on the old database finish on it; it closes with them.
                self.db = out;
                self.snap = Arc::new(snap);
                Ok((before, size(&path)))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// A storage error fails the whole batch; it comes back with the request's reply so
    /// the writer still gets an answer.
    fn apply(
        &mut self,
        t: &mut Tables,
        req: Request,
    ) -> std::result::Result<Reply, Box<(StoreError, Reply)>> {
        match req {
            Request::Txn(txn, tx) => match self.txn(t, txn) {
                Ok(r) => Ok(Reply::Txn(tx, r)),
                Err(e) => Err(Box::new((
                    e,
                    Reply::Txn(
                        tx,
                        Ok(TxnResult {
                            succeeded: false,
                            revision: 0,
                            results: Vec::new(),
                        }),
                    ),
                ))),
            },
            // Taken out of the batch before it gets here.
            Request::Defrag(tx) => Ok(Reply::Sizes(tx, Ok((0, 0)))),
            Request::Compact(rev, tx) => Ok(match self.compact(rev) {
                Ok(()) => Reply::CompactPending(tx),
                Err(e) => Reply::Unit(tx, Err(e)),
            }),
            Request::Grant(ttl, tx) => match self.grant(t, ttl) {
                Ok(r) => Ok(Reply::Lease(tx, r)),
                Err(e) => Err(Box::new((e, Request::Grant(ttl, tx).into_pending()))),
            },
            Request::Revoke(id, tx) => match self.revoke(t, id) {
                Ok(r) => Ok(Reply::Unit(tx, r)),
                Err(e) => Err(Box::new((e, Reply::Unit(tx, Ok(()))))),
            },
            Request::KeepAlive(id, tx) => {
                let r = (|| {
                    let found = t.view().lease(id)?;
                    Ok(match found {
                        Some((ttl, _)) => {
                            t.lease_put(id, ttl, self.clock.now_ms() + ttl);
                            Ok(())
                        }
                        None => Err(StoreError::LeaseNotFound { lease: id }),
                    })
                })();
                match r {
                    Ok(r) => Ok(Reply::Unit(tx, r)),
                    Err(e) => Err(Box::new((e, Reply::Unit(tx, Ok(()))))),
                }
            }
        }
    }

    /// Outer error: storage failure (aborts the batch). Inner: the request's own outcome.
    fn txn(&mut self, t: &mut Tables, txn: Txn) -> Result<Result<TxnResult>> {
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
                if lease != 0 && t.view().lease(lease)?.is_none() {
                    return Ok(Err(StoreError::LeaseNotFound { lease }));
                }
            }
        }
        let mut ok = true;
        for c in &txn.compares {
            let holds = match c {
                Compare::ModRevision { key, revision } => {
                    t.view().latest_rev(key)? as i64 == *revision
                }
                Compare::Value { key, value } => {
                    t.view().latest(key)?.is_some_and(|kv| kv.value == *value)
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
                    kv: t.view().latest(&key)?,
                },
                Op::Put { key, value, lease } => {
                    let prev = t.view().latest(&key)?;
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
                    let prev = t.view().latest(&key)?;
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
        t.hist_put(key, rev, rec.encode().as_slice());
        t.revlog_put(rev, n, key);
        if rec.put {
            t.latest_put(key, rev);
        } else {
            t.latest_remove(key);
        }
        let old_lease = prev.map_or(0, |p| p.lease);
        if old_lease != 0 && old_lease != rec.lease {
            t.lease_key_remove(old_lease, key);
        }
        if rec.lease != 0 {
            t.lease_key_put(rec.lease, key);
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
    fn compact_step(&self, t: &mut DbTables) -> Result<bool> {
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
        for ((rev, n), key) in todo {
            t.revlog.remove((rev, n)).ctx(loc, "compact")?;
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
            t.hist_remove_below(&key, upto, loc)?;
        }
        Ok(done)
    }

    fn grant(&mut self, t: &mut Tables, ttl: Duration) -> Result<Result<Lease>> {
        if ttl < Duration::from_secs(1) {
            return Ok(Err(StoreError::InvalidTtl {
                ttl_secs: ttl.as_secs() as i64,
            }));
        }
        let id = t.view().meta(LEASE_ID_KEY)?.unwrap_or(1) as i64;
        t.meta_put(LEASE_ID_KEY, id as u64 + 1);
        let ms = ttl.as_millis() as u64;
        t.lease_put(id, ms, self.clock.now_ms() + ms);
        Ok(Ok(Lease { id, ttl }))
    }

    fn revoke(&mut self, t: &mut Tables, id: LeaseId) -> Result<Result<()>> {
        if !t.lease_remove(id)? {
            return Ok(Err(StoreError::LeaseNotFound { lease: id }));
        }
        let keys = t.view().lease_keys(id)?;
        let new_rev = self.rev + 1;
        let mut n = 0;
        for key in &keys {
            let prev = t.view().latest(key)?;
            if prev.is_some() {
                self.delete(t, key, new_rev, n, prev.as_ref())?;
                n += 1;
            }
            t.lease_key_remove(id, key);
        }
        if n > 0 {
            self.rev = new_rev;
        }
        Ok(Ok(()))
    }

    fn expire_leases(&mut self, t: &mut Tables) -> Result<()> {
        let now = self.clock.now_ms();
        let expired: Vec<i64> = t
            .view()
            .leases()?
            .into_iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| id)
            .collect();
        for id in expired {
            // Already checked that it exists.
            let _ = self.revoke(t, id)?;
        }
        Ok(())
    }
}
