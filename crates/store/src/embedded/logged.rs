//! A batch's mutations (staged in memory and recorded for the write-ahead log), the redb
//! tables a fold writes, and the replay of logged mutations into them.

use std::sync::Arc;

use redb::{Database, Table, WriteTransaction};

use super::overlay::{DbRead, Layers, Overlay};
use super::tables::*;
use super::wal::{op, OpLog, OpReader, Wal};
use crate::{Result, StoreError};

/// One batch: its mutations go to `stage` and `log`; reads see them over the shared
/// overlay and the redb snapshot.
pub(super) struct Tables<'a> {
    pub(super) stage: Overlay,
    pub(super) log: OpLog,
    mem: &'a Overlay,
    db: &'a DbRead,
    loc: &'a str,
}

impl<'a> Tables<'a> {
    pub(super) fn new(mem: &'a Overlay, db: &'a DbRead, loc: &'a str, log: OpLog) -> Self {
        Tables {
            stage: Overlay::default(),
            log,
            mem,
            db,
            loc,
        }
    }

    /// What the batch sees: its own writes over everything before.
    pub(super) fn view(&self) -> Layers<'_> {
        Layers {
            over: [Some(&self.stage), Some(self.mem)],
            db: self.db,
            loc: self.loc,
        }
    }

    pub(super) fn meta_put(&mut self, k: &str, v: u64) {
        self.log.tag(op::META_PUT).bytes(k.as_bytes()).u64(v);
        self.stage.meta.insert(k.to_string(), v);
    }
    pub(super) fn hist_put(&mut self, key: &str, rev: u64, val: &[u8]) {
        self.log
            .tag(op::HIST_PUT)
            .bytes(key.as_bytes())
            .u64(rev)
            .bytes(val);
        self.stage.hist_put(key, rev, val);
    }
    pub(super) fn revlog_put(&mut self, rev: u64, n: u32, key: &str) {
        self.log
            .tag(op::REVLOG_PUT)
            .u64(rev)
            .u32(n)
            .bytes(key.as_bytes());
        self.stage.revlog_put(rev, n, key);
    }
    // The overlay needs no `latest`: a key's newest version there is its latest.
    pub(super) fn latest_put(&mut self, key: &str, rev: u64) {
        self.log.tag(op::LATEST_PUT).bytes(key.as_bytes()).u64(rev);
    }
    pub(super) fn latest_remove(&mut self, key: &str) {
        self.log.tag(op::LATEST_REMOVE).bytes(key.as_bytes());
    }
    pub(super) fn lease_put(&mut self, id: i64, ttl: u64, deadline: u64) {
        self.log
            .tag(op::LEASE_PUT)
            .u64(id as u64)
            .u64(ttl)
            .u64(deadline);
        self.stage.leases.insert(id, Some((ttl, deadline)));
    }
    /// Whether the lease existed.
    pub(super) fn lease_remove(&mut self, id: i64) -> Result<bool> {
        let existed = self.view().lease(id)?.is_some();
        self.log.tag(op::LEASE_REMOVE).u64(id as u64);
        self.stage.leases.insert(id, None);
        Ok(existed)
    }
    pub(super) fn lease_key_put(&mut self, id: i64, key: &str) {
        self.log
            .tag(op::LEASE_KEY_PUT)
            .u64(id as u64)
            .bytes(key.as_bytes());
        self.stage.lease_keys.insert((id, Arc::from(key)), true);
    }
    pub(super) fn lease_key_remove(&mut self, id: i64, key: &str) {
        self.log
            .tag(op::LEASE_KEY_REMOVE)
            .u64(id as u64)
            .bytes(key.as_bytes());
        self.stage.lease_keys.insert((id, Arc::from(key)), false);
    }
}

/// The tables of a redb write transaction: what a fold (or recovery) replays the log into,
/// and compaction removes from.
pub(super) struct DbTables<'t> {
    pub(super) meta: Table<'t, &'static str, u64>,
    pub(super) hist: Table<'t, (&'static str, u64), &'static [u8]>,
    pub(super) revlog: Table<'t, (u64, u32), &'static str>,
    pub(super) latest: Table<'t, &'static str, u64>,
    pub(super) leases: Table<'t, i64, (u64, u64)>,
    pub(super) lease_keys: Table<'t, (i64, &'static str), ()>,
}

impl<'t> DbTables<'t> {
    pub(super) fn open(w: &'t WriteTransaction, loc: &str) -> Result<Self> {
        Ok(DbTables {
            meta: w.open_table(META).ctx(loc, "open table")?,
            hist: w.open_table(HIST).ctx(loc, "open table")?,
            revlog: w.open_table(REVLOG).ctx(loc, "open table")?,
            latest: w.open_table(LATEST).ctx(loc, "open table")?,
            leases: w.open_table(LEASES).ctx(loc, "open table")?,
            lease_keys: w.open_table(LEASE_KEYS).ctx(loc, "open table")?,
        })
    }

    /// Remove the versions of `key` below revision `upto`.
    pub(super) fn hist_remove_below(&mut self, key: &str, upto: u64, loc: &str) -> Result<()> {
        self.hist
            .retain_in((key, 0u64)..(key, upto), |_, _| false)
            .ctx(loc, "compact")?;
        Ok(())
    }

    /// Apply logged mutations (one or more batches' payloads, back to back).
    pub(super) fn replay(&mut self, payload: &[u8], loc: &str) -> Result<()> {
        let bad = || StoreError::Corrupt {
            location: loc.to_string(),
            detail: "a write-ahead log record is malformed",
        };
        let mut r = OpReader::new(payload);
        while !r.done() {
            let t = r.tag().ok_or_else(bad)?;
            match t {
                op::META_PUT => {
                    let (k, v) = (r.str().ok_or_else(bad)?, r.u64().ok_or_else(bad)?);
                    self.meta.insert(k, v).ctx(loc, "write")?;
                }
                op::HIST_PUT => {
                    let k = r.str().ok_or_else(bad)?;
                    let rev = r.u64().ok_or_else(bad)?;
                    let v = r.bytes().ok_or_else(bad)?;
                    self.hist.insert((k, rev), v).ctx(loc, "write")?;
                }
                op::HIST_REMOVE_BELOW => {
                    let k = r.str().ok_or_else(bad)?;
                    self.hist_remove_below(k, r.u64().ok_or_else(bad)?, loc)?
                }
                op::REVLOG_PUT => {
                    let rev = r.u64().ok_or_else(bad)?;
                    let n = r.u32().ok_or_else(bad)?;
                    let k = r.str().ok_or_else(bad)?;
                    self.revlog.insert((rev, n), k).ctx(loc, "write")?;
                }
                op::REVLOG_REMOVE => {
                    let rev = r.u64().ok_or_else(bad)?;
                    let n = r.u32().ok_or_else(bad)?;
                    self.revlog.remove((rev, n)).ctx(loc, "write")?;
                }
                op::LATEST_PUT => {
                    let k = r.str().ok_or_else(bad)?;
                    let rev = r.u64().ok_or_else(bad)?;
                    self.latest.insert(k, rev).ctx(loc, "write")?;
                }
                op::LATEST_REMOVE => {
                    let k = r.str().ok_or_else(bad)?;
                    self.latest.remove(k).ctx(loc, "write")?;
                }
                op::LEASE_PUT => {
                    let id = r.u64().ok_or_else(bad)? as i64;
                    let ttl = r.u64().ok_or_else(bad)?;
                    let deadline = r.u64().ok_or_else(bad)?;
                    self.leases.insert(id, (ttl, deadline)).ctx(loc, "write")?;
                }
                op::LEASE_REMOVE => {
                    let id = r.u64().ok_or_else(bad)? as i64;
                    self.leases.remove(id).ctx(loc, "write")?;
                }
                op::LEASE_KEY_PUT => {
                    let id = r.u64().ok_or_else(bad)? as i64;
                    let k = r.str().ok_or_else(bad)?;
                    self.lease_keys.insert((id, k), ()).ctx(loc, "write")?;
                }
                op::LEASE_KEY_REMOVE => {
                    let id = r.u64().ok_or_else(bad)? as i64;
                    let k = r.str().ok_or_else(bad)?;
                    self.lease_keys.remove((id, k)).ctx(loc, "write")?;
                }
                _ => return Err(bad()),
            }
        }
        Ok(())
    }
}

/// Apply the write-ahead log's records to the store and make them durable (on open), then
/// start the log's next lap.
pub(super) fn recover(db: &Database, wal: &mut Wal, records: &[Vec<u8>], loc: &str) -> Result<()> {
    let lap = if records.is_empty() {
        // Nothing to fold; the stale records behind are told apart by their sequence
        // numbers, which all lie below the next one.
        wal.lap()
    } else {
        let lap = wal.next_lap();
        let w = db.begin_write().ctx(loc, "begin write")?;
        {
            let mut t = DbTables::open(&w, loc)?;
            for r in records {
                t.replay(r, loc)?;
            }
            t.meta.insert(WAL_BASE_KEY, lap.base).ctx(loc, "write")?;
            t.meta.insert(WAL_SALT_KEY, lap.salt).ctx(loc, "write")?;
        }
        w.commit().ctx(loc, "commit")?;
        lap
    };
    wal.restart(lap).map_err(|e| StoreError::Io {
        path: wal.path().to_path_buf(),
        operation: "start the write-ahead log over",
        source: e,
    })
}
