//! The tables of one write transaction, with every mutation recorded for the
//! write-ahead log, and the replay of logged mutations on open.

use redb::{Database, Table, WriteTransaction};

use super::tables::*;
use super::wal::{op, OpLog, OpReader, Wal};
use crate::{Result, StoreError};

pub(super) struct Tables<'t> {
    pub(super) meta: Table<'t, &'static str, u64>,
    pub(super) hist: Table<'t, (&'static str, u64), &'static [u8]>,
    pub(super) revlog: Table<'t, (u64, u32), &'static str>,
    pub(super) latest: Table<'t, &'static str, u64>,
    pub(super) leases: Table<'t, i64, (u64, u64)>,
    pub(super) lease_keys: Table<'t, (i64, &'static str), ()>,
    /// Every mutation, for the write-ahead log.
    pub(super) log: OpLog,
}

impl<'t> Tables<'t> {
    pub(super) fn open(w: &'t WriteTransaction, loc: &str) -> Result<Self> {
        Ok(Tables {
            meta: w.open_table(META).ctx(loc, "open table")?,
            hist: w.open_table(HIST).ctx(loc, "open table")?,
            revlog: w.open_table(REVLOG).ctx(loc, "open table")?,
            latest: w.open_table(LATEST).ctx(loc, "open table")?,
            leases: w.open_table(LEASES).ctx(loc, "open table")?,
            lease_keys: w.open_table(LEASE_KEYS).ctx(loc, "open table")?,
            log: OpLog::default(),
        })
    }

    // Mutations go through these so that each is also recorded in `log`.

    pub(super) fn meta_put(&mut self, k: &str, v: u64, loc: &str) -> Result<()> {
        self.log.tag(op::META_PUT).bytes(k.as_bytes()).u64(v);
        self.meta.insert(k, v).ctx(loc, "write")?;
        Ok(())
    }
    pub(super) fn hist_put(&mut self, key: &str, rev: u64, val: &[u8], loc: &str) -> Result<()> {
        self.log
            .tag(op::HIST_PUT)
            .bytes(key.as_bytes())
            .u64(rev)
            .bytes(val);
        self.hist.insert((key, rev), val).ctx(loc, "write")?;
        Ok(())
    }
    /// Remove the versions of `key` below revision `upto`.
    pub(super) fn hist_remove_below(&mut self, key: &str, upto: u64, loc: &str) -> Result<()> {
        self.log
            .tag(op::HIST_REMOVE_BELOW)
            .bytes(key.as_bytes())
            .u64(upto);
        self.hist
            .retain_in((key, 0u64)..(key, upto), |_, _| false)
            .ctx(loc, "compact")?;
        Ok(())
    }
    pub(super) fn revlog_put(&mut self, rev: u64, n: u32, key: &str, loc: &str) -> Result<()> {
        self.log
            .tag(op::REVLOG_PUT)
            .u64(rev)
            .u32(n)
            .bytes(key.as_bytes());
        self.revlog.insert((rev, n), key).ctx(loc, "write")?;
        Ok(())
    }
    pub(super) fn revlog_remove(&mut self, rev: u64, n: u32, loc: &str) -> Result<()> {
        self.log.tag(op::REVLOG_REMOVE).u64(rev).u32(n);
        self.revlog.remove((rev, n)).ctx(loc, "write")?;
        Ok(())
    }
    pub(super) fn latest_put(&mut self, key: &str, rev: u64, loc: &str) -> Result<()> {
        self.log.tag(op::LATEST_PUT).bytes(key.as_bytes()).u64(rev);
        self.latest.insert(key, rev).ctx(loc, "write")?;
        Ok(())
    }
    pub(super) fn latest_remove(&mut self, key: &str, loc: &str) -> Result<()> {
        self.log.tag(op::LATEST_REMOVE).bytes(key.as_bytes());
        self.latest.remove(key).ctx(loc, "write")?;
        Ok(())
    }
    pub(super) fn lease_put(&mut self, id: i64, ttl: u64, deadline: u64, loc: &str) -> Result<()> {
        self.log
            .tag(op::LEASE_PUT)
            .u64(id as u64)
            .u64(ttl)
            .u64(deadline);
        self.leases.insert(id, (ttl, deadline)).ctx(loc, "write")?;
        Ok(())
    }
    /// Whether the lease existed.
    pub(super) fn lease_remove(&mut self, id: i64, loc: &str) -> Result<bool> {
        self.log.tag(op::LEASE_REMOVE).u64(id as u64);
        Ok(self.leases.remove(id).ctx(loc, "write")?.is_some())
    }
    pub(super) fn lease_key_put(&mut self, id: i64, key: &str, loc: &str) -> Result<()> {
        self.log
            .tag(op::LEASE_KEY_PUT)
            .u64(id as u64)
            .bytes(key.as_bytes());
        self.lease_keys.insert((id, key), ()).ctx(loc, "write")?;
        Ok(())
    }
    pub(super) fn lease_key_remove(&mut self, id: i64, key: &str, loc: &str) -> Result<()> {
        self.log
            .tag(op::LEASE_KEY_REMOVE)
            .u64(id as u64)
            .bytes(key.as_bytes());
        self.lease_keys.remove((id, key)).ctx(loc, "write")?;
        Ok(())
    }

    /// Apply a logged batch again (recovery).
    fn replay(&mut self, payload: &[u8], loc: &str) -> Result<()> {
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
                    self.meta_put(k, v, loc)?
                }
                op::HIST_PUT => {
                    let k = r.str().ok_or_else(bad)?;
                    let rev = r.u64().ok_or_else(bad)?;
                    let v = r.bytes().ok_or_else(bad)?;
                    self.hist_put(k, rev, v, loc)?
                }
                op::HIST_REMOVE_BELOW => {
                    let k = r.str().ok_or_else(bad)?;
                    self.hist_remove_below(k, r.u64().ok_or_else(bad)?, loc)?
                }
                op::REVLOG_PUT => {
                    let rev = r.u64().ok_or_else(bad)?;
                    let n = r.u32().ok_or_else(bad)?;
                    self.revlog_put(rev, n, r.str().ok_or_else(bad)?, loc)?
                }
                op::REVLOG_REMOVE => {
                    let rev = r.u64().ok_or_else(bad)?;
                    self.revlog_remove(rev, r.u32().ok_or_else(bad)?, loc)?
                }
                op::LATEST_PUT => {
                    let k = r.str().ok_or_else(bad)?;
                    self.latest_put(k, r.u64().ok_or_else(bad)?, loc)?
                }
                op::LATEST_REMOVE => self.latest_remove(r.str().ok_or_else(bad)?, loc)?,
                op::LEASE_PUT => {
                    let id = r.u64().ok_or_else(bad)? as i64;
                    let ttl = r.u64().ok_or_else(bad)?;
                    self.lease_put(id, ttl, r.u64().ok_or_else(bad)?, loc)?
                }
                op::LEASE_REMOVE => {
                    self.lease_remove(r.u64().ok_or_else(bad)? as i64, loc)?;
                }
                op::LEASE_KEY_PUT => {
                    let id = r.u64().ok_or_else(bad)? as i64;
                    self.lease_key_put(id, r.str().ok_or_else(bad)?, loc)?
                }
                op::LEASE_KEY_REMOVE => {
                    let id = r.u64().ok_or_else(bad)? as i64;
                    self.lease_key_remove(id, r.str().ok_or_else(bad)?, loc)?
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
            let mut t = Tables::open(&w, loc)?;
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
