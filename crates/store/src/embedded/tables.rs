//! On-disk layout of the embedded store and the reads shared by readers and the writer.
//!
//! - `history`: (key, revision) -> record: every version of every key still in the
//!   retention window, deletes included (tombstones).
//! - `revlog`: (revision, n) -> key: the order of events, read by watchers and compaction.
//! - `latest`: key -> revision of its live version, for reads at the latest revision.
//! - `meta`: format, current and compact revision, lease id counter, the write-ahead
//!   log's lap.
//! - `leases`: id -> (ttl ms, deadline ms since the epoch); `lease_keys`: (lease, key).

use redb::{ReadableTable, TableDefinition};

use crate::{Event, EventKind, KeyRange, KeyValue, Result, StoreError};

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const HIST: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
pub(super) const REVLOG: TableDefinition<(u64, u32), &str> = TableDefinition::new("revlog");
pub(super) const LATEST: TableDefinition<&str, u64> = TableDefinition::new("latest");
pub(super) const LEASES: TableDefinition<i64, (u64, u64)> = TableDefinition::new("leases");
pub(super) const LEASE_KEYS: TableDefinition<(i64, &str), ()> = TableDefinition::new("lease_keys");

/// Marks a redb file as a skiff store of this layout.
pub(super) const FORMAT_KEY: &str = "skiff-store-format";
pub(super) const FORMAT: u64 = 1;
pub(super) const REV_KEY: &str = "revision";
pub(super) const COMPACT_KEY: &str = "compact-revision";
pub(super) const LEASE_ID_KEY: &str = "next-lease";
/// The write-ahead log's lap: the sequence number of its first record not folded into
/// this file yet, and the salt of its checksums. Written only by durable commits.
pub(super) const WAL_BASE_KEY: &str = "wal-base";
pub(super) const WAL_SALT_KEY: &str = "wal-salt";

const PUT: u8 = 1;
const DEL: u8 = 2;
const HEADER: usize = 1 + 8 + 8 + 8;

/// One version of a key as stored in `history`.
pub(super) struct Rec {
    pub put: bool,
    pub create: u64,
    pub version: u64,
    pub lease: i64,
    pub value: Vec<u8>,
}

impl Rec {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + self.value.len());
        b.push(if self.put { PUT } else { DEL });
        b.extend_from_slice(&self.create.to_le_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.lease.to_le_bytes());
        b.extend_from_slice(&self.value);
        b
    }

    pub fn decode(b: &[u8], loc: &str) -> Result<Rec> {
        let corrupt = || StoreError::Corrupt {
            location: loc.to_string(),
            detail: "a history record is malformed",
        };
        if b.len() < HEADER || !(b[0] == PUT || b[0] == DEL) {
            return Err(corrupt());
        }
        let word = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            a
        };
        Ok(Rec {
            put: b[0] == PUT,
            create: u64::from_le_bytes(word(1)),
            version: u64::from_le_bytes(word(9)),
            lease: i64::from_le_bytes(word(17)),
            value: b[HEADER..].to_vec(),
        })
    }

    /// Whether an encoded record is a put (not a tombstone).
    pub fn is_put(b: &[u8]) -> bool {
        b.first() == Some(&PUT)
    }

    pub fn into_kv(self, key: &str, rev: u64) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value,
            create_revision: self.create as i64,
            mod_revision: rev as i64,
            version: self.version as i64,
            lease: self.lease,
        }
    }
}

/// Attach the store's location and the operation to a redb error.
pub(super) trait Ctx<T> {
    fn ctx(self, loc: &str, operation: &'static str) -> Result<T>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, loc: &str, operation: &'static str) -> Result<T> {
        self.map_err(|e| StoreError::Storage {
            location: loc.to_string(),
            operation,
            source: Box::new(e.into()),
        })
    }
}

pub(super) fn meta_get(
    meta: &impl ReadableTable<&'static str, u64>,
    key: &str,
    loc: &str,
) -> Result<Option<u64>> {
    Ok(meta.get(key).ctx(loc, "read meta")?.map(|v| v.value()))
}

/// The newest version of `key` at or before `rev`, if that is a put.
pub(super) fn kv_at(
    hist: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    rev: u64,
    loc: &str,
) -> Result<Option<KeyValue>> {
    let mut it = hist.range((key, 0u64)..=(key, rev)).ctx(loc, "read")?;
    match it.next_back() {
        Some(e) => {
            let (k, v) = e.ctx(loc, "read")?;
            let r = k.value().1;
            let rec = Rec::decode(v.value(), loc)?;
            Ok(rec.put.then(|| rec.into_kv(key, r)))
        }
        None => Ok(None),
    }
}

pub(super) fn kv_latest(
    latest: &impl ReadableTable<&'static str, u64>,
    hist: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    loc: &str,
) -> Result<Option<KeyValue>> {
    let Some(rev) = latest.get(key).ctx(loc, "read")?.map(|v| v.value()) else {
        return Ok(None);
    };
    match hist.get((key, rev)).ctx(loc, "read")? {
        Some(v) => Ok(Some(Rec::decode(v.value(), loc)?.into_kv(key, rev))),
        None => Err(StoreError::Corrupt {
            location: loc.to_string(),
            detail: "the latest version of a key is missing from its history",
        }),
    }
}

/// Where a list of `prefix` continuing after `after` starts.
pub(super) fn start_key(prefix: &str, after: Option<&str>) -> String {
    match after {
        Some(a) if a >= prefix => format!("{a}\0"),
        _ => prefix.to_string(),
    }
}

/// Events in `range` at positions >= `from` ((revision, n)) and below `until`, at most
/// `max` of them, and the position after the last one scanned.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_events(
    revlog: &impl ReadableTable<(u64, u32), &'static str>,
    hist: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    range: &KeyRange,
    from: (u64, u32),
    prev_kv: bool,
    max: usize,
    until: Option<(u64, u32)>,
    loc: &str,
) -> Result<(Vec<Event>, (u64, u32))> {
    let mut out = Vec::new();
    let mut next = from;
    for e in revlog.range(from..).ctx(loc, "watch")? {
        let (k, v) = e.ctx(loc, "watch")?;
        let (rev, n) = k.value();
        if until.is_some_and(|u| (rev, n) >= u) {
            break;
        }
        next = (rev, n + 1);
        let key = v.value();
        if !range.contains(key) {
            continue;
        }
        let rec = match hist.get((key, rev)).ctx(loc, "watch")? {
            Some(r) => Rec::decode(r.value(), loc)?,
            None => {
                return Err(StoreError::Corrupt {
                    location: loc.to_string(),
                    detail: "an event is missing from the history",
                })
            }
        };
        let prev = if prev_kv && rev > 0 {
            kv_at(hist, key, rev - 1, loc)?
        } else {
            None
        };
        out.push(event(key, rev, rec, prev));
        if out.len() >= max {
            break;
        }
    }
    Ok((out, next))
}

/// The watch event of version `rec` of `key`, written at `rev`.
pub(super) fn event(key: &str, rev: u64, rec: Rec, prev: Option<KeyValue>) -> Event {
    if rec.put {
        Event {
            kind: EventKind::Put,
            kv: rec.into_kv(key, rev),
            prev_kv: prev,
        }
    } else {
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_string(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: rev as i64,
                version: 0,
                lease: 0,
            },
            prev_kv: prev,
        }
    }
}
