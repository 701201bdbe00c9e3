//! The writes not folded into the redb file yet, in memory.
//!
//! A batch is applied to a fresh [`Overlay`] (its stage), made durable by its log record,
//! and then merged into the store's shared overlay, which readers see on top of a redb
//! snapshot. Once a second the writer folds the overlay's log into redb with one durable
//! commit and empties it. So the write path costs a few in-memory inserts and one log
//! sync per batch; redb's per-commit work (copy-on-write pages, checksums, page
//! bookkeeping) is paid once per fold instead of once per batch.
//!
//! Consistency: a reader takes the overlay's read lock, begins its redb read transaction
//! and copies what it needs from the overlay before letting go. The fold commits redb
//! (which then holds everything in the overlay) before it empties the overlay under the
//! write lock, so a reader sees either the old file with the overlay on top or the new
//! file with the same overlay on top: the same state.
//!
//! Every version in the overlay is newer than every version in the snapshot under it
//! (or, between a fold's commit and the emptying, identical to one), so a lookup takes
//! the overlay's answer when it has one and falls through to redb otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use super::tables::*;
use crate::{Event, KeyRange, KeyValue, Result, StoreError};

/// A stored version, encoded as in the `history` table (see [`Rec`]).
pub(super) type RecBytes = Arc<[u8]>;

#[derive(Default)]
pub(super) struct Overlay {
    /// key -> its versions written since the last fold, oldest first.
    pub hist: BTreeMap<Arc<str>, Vec<(u64, RecBytes)>>,
    /// The events, in order.
    pub revlog: Vec<((u64, u32), Arc<str>)>,
    /// Leases granted or changed (Some) or revoked (None).
    pub leases: BTreeMap<i64, Option<(u64, u64)>>,
    /// Lease attachments added (true) or removed (false).
    pub lease_keys: BTreeMap<(i64, Arc<str>), bool>,
    pub meta: BTreeMap<String, u64>,
    /// Every mutation above, as write-ahead log payloads: what the next fold replays into
    /// redb (and what a snapshot adds to the file's contents).
    pub log: Vec<u8>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// The newest version of `key` here.
    pub fn newest(&self, key: &str) -> Option<(u64, &RecBytes)> {
        self.hist
            .get(key)
            .and_then(|v| v.last())
            .map(|(r, b)| (*r, b))
    }

    /// The newest version of `key` here at or before `rev`.
    pub fn at(&self, key: &str, rev: u64) -> Option<(u64, &RecBytes)> {
        let v = self.hist.get(key)?;
        let i = v.partition_point(|(r, _)| *r <= rev);
        (i > 0).then(|| (v[i - 1].0, &v[i - 1].1))
    }

    pub fn hist_put(&mut self, key: &str, rev: u64, rec: &[u8]) {
        let rec: RecBytes = Arc::from(rec);
        match self.hist.get_mut(key) {
            Some(v) => v.push((rev, rec)),
            None => {
                self.hist.insert(Arc::from(key), vec![(rev, rec)]);
            }
        }
    }

    pub fn revlog_put(&mut self, rev: u64, n: u32, key: &str) {
        // The key of the version just put (shared, not copied).
        let k = self
            .hist
            .get_key_value(key)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(key));
        self.revlog.push(((rev, n), k));
    }

    /// Take in a later batch's stage.
    pub fn merge(&mut self, stage: Overlay) {
        for (k, vs) in stage.hist {
            match self.hist.get_mut(&k) {
                Some(v) => v.extend(vs),
                None => {
                    self.hist.insert(k, vs);
                }
            }
        }
        self.revlog.extend(stage.revlog);
        self.leases.extend(stage.leases);
        self.lease_keys.extend(stage.lease_keys);
        self.meta.extend(stage.meta);
        self.log.extend_from_slice(&stage.log);
    }

    /// Forget everything (it is folded), keeping the log buffer's room.
    pub fn clear(&mut self) {
        let mut log = std::mem::take(&mut self.log);
        log.clear();
        *self = Overlay {
            log,
            ..Overlay::default()
        };
    }
}

/// The tables of a redb read transaction.
pub(super) struct DbRead {
    pub meta: ReadOnlyTable<&'static str, u64>,
    pub hist: ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    pub revlog: ReadOnlyTable<(u64, u32), &'static str>,
    pub latest: ReadOnlyTable<&'static str, u64>,
    pub leases: ReadOnlyTable<i64, (u64, u64)>,
    pub lease_keys: ReadOnlyTable<(i64, &'static str), ()>,
}

impl DbRead {
    pub fn open(r: &ReadTransaction, loc: &str) -> Result<Self> {
        Ok(DbRead {
            meta: r.open_table(META).ctx(loc, "open table")?,
            hist: r.open_table(HIST).ctx(loc, "open table")?,
            revlog: r.open_table(REVLOG).ctx(loc, "open table")?,
            latest: r.open_table(LATEST).ctx(loc, "open table")?,
            leases: r.open_table(LEASES).ctx(loc, "open table")?,
            lease_keys: r.open_table(LEASE_KEYS).ctx(loc, "open table")?,
        })
    }
}

/// Overlays (newest first) over a redb snapshot: the writer's view (its batch's stage
/// over the shared overlay) and the lookups readers make under the overlay's lock.
pub(super) struct Layers<'a> {
    pub over: [Option<&'a Overlay>; 2],
    pub db: &'a DbRead,
    pub loc: &'a str,
}

fn decode(key: &str, rev: u64, rec: &[u8], loc: &str) -> Result<Option<KeyValue>> {
    let rec = Rec::decode(rec, loc)?;
    Ok(rec.put.then(|| rec.into_kv(key, rev)))
}

impl Layers<'_> {
    pub fn meta(&self, key: &str) -> Result<Option<u64>> {
        for o in self.over.iter().flatten() {
            if let Some(v) = o.meta.get(key) {
                return Ok(Some(*v));
            }
        }
        meta_get(&self.db.meta, key, self.loc)
    }

    /// The current and the compact revision.
    pub fn revs(&self) -> Result<(u64, u64)> {
        Ok((
            self.meta(REV_KEY)?.unwrap_or(1),
            self.meta(COMPACT_KEY)?.unwrap_or(0),
        ))
    }

    pub fn latest(&self, key: &str) -> Result<Option<KeyValue>> {
        for o in self.over.iter().flatten() {
            if let Some((rev, rec)) = o.newest(key) {
                return decode(key, rev, rec, self.loc);
            }
        }
        kv_latest(&self.db.latest, &self.db.hist, key, self.loc)
    }

    /// The mod revision of the live version of `key` (0: none).
    pub fn latest_rev(&self, key: &str) -> Result<u64> {
        for o in self.over.iter().flatten() {
            if let Some((rev, rec)) = o.newest(key) {
                return Ok(if Rec::is_put(rec) { rev } else { 0 });
            }
        }
        Ok(self
            .db
            .latest
            .get(key)
            .ctx(self.loc, "read")?
            .map_or(0, |v| v.value()))
    }

    pub fn at(&self, key: &str, rev: u64) -> Result<Option<KeyValue>> {
        for o in self.over.iter().flatten() {
            if let Some((r, rec)) = o.at(key, rev) {
                return decode(key, r, rec, self.loc);
            }
        }
        kv_at(&self.db.hist, key, rev, self.loc)
    }

    pub fn lease(&self, id: i64) -> Result<Option<(u64, u64)>> {
        for o in self.over.iter().flatten() {
            if let Some(v) = o.leases.get(&id) {
                return Ok(*v);
            }
        }
        Ok(self
            .db
            .leases
            .get(id)
            .ctx(self.loc, "read")?
            .map(|v| v.value()))
    }

    /// Every lease: id -> (ttl ms, deadline ms).
    pub fn leases(&self) -> Result<BTreeMap<i64, (u64, u64)>> {
        let mut all = BTreeMap::new();
        for e in self.db.leases.iter().ctx(self.loc, "read")? {
            let (k, v) = e.ctx(self.loc, "read")?;
            all.insert(k.value(), v.value());
        }
        for o in self.over.iter().rev().flatten() {
            for (id, v) in &o.leases {
                match v {
                    Some(v) => all.insert(*id, *v),
                    None => all.remove(id),
                };
            }
        }
        Ok(all)
    }

    /// The keys attached to lease `id`.
    pub fn lease_keys(&self, id: i64) -> Result<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        for e in self
            .db
            .lease_keys
            .range((id, "")..(id + 1, ""))
            .ctx(self.loc, "read")?
        {
            let (k, _) = e.ctx(self.loc, "read")?;
            keys.insert(k.value().1.to_string());
        }
        let empty: Arc<str> = Arc::from("");
        for o in self.over.iter().rev().flatten() {
            for ((_, k), present) in o
                .lease_keys
                .range((id, empty.clone())..(id + 1, empty.clone()))
            {
                if *present {
                    keys.insert(k.to_string());
                } else {
                    keys.remove(&**k);
                }
            }
        }
        Ok(keys)
    }
}

/// What a list needs from the overlay: per key in range, its newest version there at or
/// before the revision read (None: the key has versions there, all newer).
pub(super) type Picked = Vec<(Arc<str>, Option<(u64, RecBytes)>)>;

/// The overlay's keys under `prefix` after `after`, each with its newest version at or
/// before `rev` (u64::MAX: the newest).
pub(super) fn pick(o: &Overlay, prefix: &str, after: Option<&str>, rev: u64) -> Picked {
    let start = start_key(prefix, after);
    o.hist
        .range::<str, _>((
            std::ops::Bound::Included(start.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, vs)| {
            let i = vs.partition_point(|(r, _)| *r <= rev);
            (k.clone(), (i > 0).then(|| vs[i - 1].clone()))
        })
        .collect()
}

/// Merge a list from redb with the overlay's picks: where the overlay has a version of a
/// key, it decides (a tombstone hides the key); keys only in redb come from `db_next`.
/// `db_next` yields redb's answer for each key in order (None: the key is not live at the
/// revision read).
fn merge_list(
    picked: &Picked,
    mut db_next: impl FnMut() -> Result<Option<(String, Option<KeyValue>)>>,
    limit: usize,
    loc: &str,
) -> Result<(Vec<KeyValue>, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut db = db_next()?;
    loop {
        // Take the smaller key next; on a tie the overlay's version wins.
        let take_overlay = match (&db, picked.get(i)) {
            (None, None) => break,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some((dk, _)), Some((ok, _))) => **ok <= **dk,
        };
        let item = if take_overlay {
            let (k, v) = &picked[i];
            i += 1;
            let item = match v {
                Some((rev, rec)) => decode(k, *rev, rec, loc)?,
                // Only newer versions here: the file's answer stands.
                None => match &db {
                    Some((dk, dv)) if **dk == **k => dv.clone(),
                    _ => None,
                },
            };
            if db.as_ref().is_some_and(|(dk, _)| **dk == **k) {
                db = db_next()?;
            }
            item
        } else {
            let (_, v) = db.take().unwrap_or_default();
            db = db_next()?;
            v
        };
        if let Some(kv) = item {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(kv);
        }
    }
    Ok((out, false))
}

/// Up to `limit` live keys under `prefix` after `after` (and whether there are more), at
/// the latest revision: the file's `latest` table with the overlay's picks (taken with
/// `rev` = u64::MAX) on top.
pub(super) fn list_latest_over(
    picked: &Picked,
    db: &DbRead,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    loc: &str,
) -> Result<(Vec<KeyValue>, bool)> {
    let start = start_key(prefix, after);
    let mut it = db.latest.range(start.as_str()..).ctx(loc, "list")?;
    let next = || -> Result<Option<(String, Option<KeyValue>)>> {
        let Some(e) = it.next() else { return Ok(None) };
        let (k, v) = e.ctx(loc, "list")?;
        let key = k.value();
        if !key.starts_with(prefix) {
            return Ok(None);
        }
        let rev = v.value();
        // Read even when the overlay overrides the key: that is rare (the overlay holds
        // about a second of writes), and the file's latest versions are what a list
        // mostly returns.
        match db.hist.get((key, rev)).ctx(loc, "list")? {
            Some(r) => Ok(Some((
                key.to_string(),
                Some(Rec::decode(r.value(), loc)?.into_kv(key, rev)),
            ))),
            None => Err(StoreError::Corrupt {
                location: loc.to_string(),
                detail: "the latest version of a key is missing from its history",
            }),
        }
    };
    merge_list(picked, next, limit, loc)
}

/// Like [`list_latest_over`] but as of revision `rev`: the file's history with the
/// overlay's picks (taken at `rev`) on top.
pub(super) fn list_at_over(
    picked: &Picked,
    db: &DbRead,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    rev: u64,
    loc: &str,
) -> Result<(Vec<KeyValue>, bool)> {
    let start = start_key(prefix, after);
    let mut it = db
        .hist
        .range((start.as_str(), 0u64)..)
        .ctx(loc, "list")?
        .peekable();
    // Entries are ordered by (key, revision): gather one key's versions, keep the newest
    // at or before `rev`.
    let next = || -> Result<Option<(String, Option<KeyValue>)>> {
        let mut cur: Option<(String, Option<KeyValue>)> = None;
        loop {
            let Some(e) = it.peek() else { return Ok(cur) };
            let (k, v) = match e {
                Ok((k, v)) => (k, v),
                Err(_) => {
                    let Some(Err(e)) = it.next() else {
                        unreachable!("peeked an error")
                    };
                    return Err(e).ctx(loc, "list");
                }
            };
            let (key, r) = k.value();
            if !key.starts_with(prefix) {
                return Ok(cur);
            }
            match &cur {
                Some((c, _)) if c != key => return Ok(cur),
                Some(_) => {}
                None => cur = Some((key.to_string(), None)),
            }
            if r <= rev {
                let kv = decode(key, r, v.value(), loc)?;
                if let Some((_, slot)) = cur.as_mut() {
                    *slot = kv;
                }
            }
            it.next();
        }
    };
    merge_list(picked, next, limit, loc)
}

/// How many keys under `prefix` are live: the file's count, corrected by the overlay's
/// newest versions (`picked` taken with u64::MAX).
pub(super) fn count_over(picked: &Picked, db: &DbRead, prefix: &str, loc: &str) -> Result<i64> {
    let mut n = 0i64;
    for e in db.latest.range(prefix..).ctx(loc, "count")? {
        let (k, _) = e.ctx(loc, "count")?;
        if !k.value().starts_with(prefix) {
            break;
        }
        n += 1;
    }
    for (k, v) in picked {
        let live_here = v.as_ref().is_some_and(|(_, rec)| Rec::is_put(rec));
        let live_there = db.latest.get(&**k).ctx(loc, "count")?.is_some();
        n += live_here as i64 - live_there as i64;
    }
    Ok(n)
}

/// An event found in the overlay: its key, record, and (if asked) the version before it
/// when that is in the overlay too (otherwise looked up in the file).
pub(super) struct OverEvent {
    pos: (u64, u32),
    key: Arc<str>,
    rec: RecBytes,
    prev: Option<Option<(u64, RecBytes)>>,
}

/// What a watcher takes from the overlay.
pub(super) struct OverEvents {
    /// Events at positions >= the watcher's, in its range, at most a batch.
    events: Vec<OverEvent>,
    /// The first position the overlay holds (None: it holds no events).
    first: Option<(u64, u32)>,
    /// The position after the last one scanned.
    next: (u64, u32),
}

/// The overlay's events at positions >= `from` in `range`, at most `max`.
pub(super) fn pick_events(
    o: &Overlay,
    range: &KeyRange,
    from: (u64, u32),
    prev_kv: bool,
    max: usize,
) -> OverEvents {
    let first = o.revlog.first().map(|(p, _)| *p);
    let start = o.revlog.partition_point(|(p, _)| *p < from);
    let mut out = Vec::new();
    let mut next = from;
    for (pos, key) in &o.revlog[start..] {
        if out.len() >= max {
            break;
        }
        next = (pos.0, pos.1 + 1);
        if !range.contains(key) {
            continue;
        }
        let Some(vs) = o.hist.get(key) else { continue };
        let i = vs.partition_point(|(r, _)| *r < pos.0);
        let Some((_, rec)) = vs.get(i).filter(|(r, _)| *r == pos.0) else {
            continue;
        };
        let prev = prev_kv.then(|| (i > 0).then(|| vs[i - 1].clone()));
        out.push(OverEvent {
            pos: *pos,
            key: key.clone(),
            rec: rec.clone(),
            prev,
        });
    }
    OverEvents {
        events: out,
        first,
        next,
    }
}

/// Watch events from `from`: the file's first (up to where the overlay's begin), then the
/// overlay's (`over`, from [`pick_events`] with the same `from`).
pub(super) fn read_events_over(
    over: OverEvents,
    db: &DbRead,
    range: &KeyRange,
    from: (u64, u32),
    prev_kv: bool,
    max: usize,
    loc: &str,
) -> Result<(Vec<Event>, (u64, u32))> {
    let OverEvents {
        events: picked,
        first,
        next: over_next,
    } = over;
    // The file's part: everything before the overlay's first event.
    let (mut out, mut next) = match first {
        Some(f) if f <= from => (Vec::new(), from),
        _ => {
            let (evs, next) =
                read_events(&db.revlog, &db.hist, range, from, prev_kv, max, first, loc)?;
            (evs, next)
        }
    };
    if out.len() >= max || first.is_none() {
        return Ok((out, next));
    }
    for e in picked {
        if out.len() >= max {
            return Ok((out, next));
        }
        next = (e.pos.0, e.pos.1 + 1);
        let rec = Rec::decode(&e.rec, loc)?;
        let prev = match e.prev {
            None => None,
            Some(Some((r, b))) => decode(&e.key, r, &b, loc)?,
            Some(None) if e.pos.0 > 0 => kv_at(&db.hist, &e.key, e.pos.0 - 1, loc)?,
            Some(None) => None,
        };
        out.push(event(&e.key, e.pos.0, rec, prev));
    }
    if over_next > next {
        next = over_next;
    }
    Ok((out, next))
}
