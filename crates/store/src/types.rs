//! Values exchanged with a [`crate::Store`]; they mirror etcd's v3 API.

use std::time::Duration;

/// A global, strictly increasing version of the whole store. Every write transaction gets
/// the next one; an empty store is at revision 1 (as etcd).
pub type Revision = i64;
/// A lease id; 0 means "no lease".
pub type LeaseId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the put that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last put.
    pub mod_revision: Revision,
    /// Number of puts since creation (1 after create).
    pub version: i64,
    pub lease: LeaseId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv` holds the key and, in `mod_revision`, the delete's
/// revision; the other fields are empty/zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's value before this event, when the watch asked for it and there was one.
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub kv: Option<KeyValue>,
    /// The store revision the read was served at.
    pub revision: Revision,
}

/// Options of [`crate::Store::list`]. A paginated list passes the previous page's
/// `revision` and its last key as `continue_after` to read a consistent snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision instead of the latest.
    pub revision: Option<Revision>,
    /// At most this many keys; `None` for all.
    pub limit: Option<usize>,
    /// Start strictly after this key.
    pub continue_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// More keys match after the last one returned.
    pub more: bool,
}

/// A transaction guard. `ModRevision { revision: 0 }` means "the key does not exist".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    ModRevision { key: String, revision: Revision },
    Value { key: String, value: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Put { prev: Option<KeyValue> },
    Delete { prev: Option<KeyValue> },
    Get { kv: Option<KeyValue> },
}

/// If every compare holds, run `success`, else `failure`; atomically, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The revision of the transaction's writes, or the current revision if it wrote nothing.
    pub revision: Revision,
    pub results: Vec<OpResult>,
}

/// What a watch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    Key(String),
    Prefix(String),
}

impl KeyRange {
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeyRange::Key(k) => k == key,
            KeyRange::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Deliver every event with a revision >= this one, then live events. `None`: only
    /// events after the current revision.
    pub start_revision: Option<Revision>,
    /// Include each event's previous value.
    pub prev_kv: bool,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}
