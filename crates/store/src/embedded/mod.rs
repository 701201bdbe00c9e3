//! The embedded store: etcd's data model on one redb file, `DATA_DIR/state.redb`, with a
//! write-ahead log beside it (`state.wal`, see [`wal`]).
//!
//! Lifecycle: [`EmbeddedStore::open`] locks and opens the file, checks that it is a skiff
//! store, replays the log, and starts the writer thread ([`writer`]); reads run on the
//! caller's thread against a redb snapshot; watchers follow the revision log. One process
//! has the store open at a time (redb's file lock); [`EmbeddedStore::snapshot`] copies a
//! live store. Dropping the store (and its watchers) checkpoints, stops the writer and
//! releases the file.

mod admin;

pub use admin::{LiveStore, LiveWatch, StoreStatus, ADMIN_SOCKET};
mod logged;
mod overlay;
mod tables;
mod wal;
mod writer;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTableMetadata};
use tokio::sync::oneshot;

use overlay::{DbRead, Layers, Overlay};
use tables::*;
use wal::Wal;
use writer::{Request, Writer};

use crate::{
    Clock, GetResult, KeyRange, Lease, LeaseId, ListOptions, ListResult, Result, Revision, Store,
    StoreError, SystemClock, Txn, TxnResult, WatchOptions, Watcher,
};

/// The store's file inside the data dir.
pub const STORE_FILE: &str = "state.redb";
/// Its write-ahead log, beside it.
pub const WAL_FILE: &str = "state.wal";
const WATCH_BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the data dir and the store if missing (a server); otherwise refuse (admin).
    pub create: bool,
    /// Compact automatically, keeping at least this much history (default 5 minutes, as
    /// the Kubernetes API server's compaction interval); `None`: only explicit compaction.
    pub history: Option<Duration>,
    /// The clock lease deadlines are kept on (tests inject their own).
    pub clock: Arc<dyn Clock>,
    /// How often the writes kept in memory (durable in the write-ahead log) are folded
    /// into the store file (default 1 s; it also folds after 64 MiB of log). Tests use
    /// shorter intervals to exercise reads across the file and the unfolded writes.
    pub fold_every: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: true,
            history: Some(Duration::from_secs(300)),
            clock: Arc::new(SystemClock),
            fold_every: writer::FOLD_EVERY,
        }
    }
}

/// The open database, shared by readers and the writer. The writer replaces it when it
/// defragments (rewrites the file); a reader that began on the old one finishes on it.
type DbSlot = Arc<std::sync::RwLock<Arc<Database>>>;

struct Inner {
    db: DbSlot,
    /// Writes not folded into the file yet (see [`overlay`]).
    mem: Arc<std::sync::RwLock<Overlay>>,
    loc: String,
    /// The data dir (None in memory).
    dir: Option<PathBuf>,
    requests: Option<std::sync::Mutex<mpsc::Sender<Request>>>,
    revision: tokio::sync::watch::Receiver<u64>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The admin socket (file-backed stores) and its listener thread.
    admin: Option<(PathBuf, std::thread::JoinHandle<()>)>,
    /// Write-ahead log records replayed when the store was opened.
    replayed: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((sock, listener)) = self.admin.take() {
            // Wake the listener so it notices the store is gone.
            let _ = std::os::unix::net::UnixStream::connect(&sock);
            // The listener may itself hold the last reference (mid-snapshot).
            if listener.thread().id() != std::thread::current().id() {
                let _ = listener.join();
            }
            let _ = std::fs::remove_file(&sock);
        }
        self.requests.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The embedded store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("location", &self.inner.loc)
            .finish_non_exhaustive()
    }
}

/// What a snapshot captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub revision: Revision,
    pub compact_revision: Revision,
    pub keys: u64,
    pub bytes: u64,
}

impl EmbeddedStore {
    /// Open (or create) the store in `data_dir`, replaying its write-ahead log.
    pub fn open(data_dir: &Path, opts: &OpenOptions) -> Result<Self> {
        if !data_dir.is_dir() {
            if !opts.create {
                return Err(StoreError::DataDirMissing {
                    path: data_dir.to_path_buf(),
                });
            }
            std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io {
                path: data_dir.to_path_buf(),
                operation: "create data dir",
                source: e,
            })?;
        }
        let path = data_dir.join(STORE_FILE);
        let exists = check_file(&path)?;
        if !exists && !opts.create {
            return Err(StoreError::Foreign {
                path,
                reason: "the data dir has no store file",
            });
        }
        let loc = path.display().to_string();
        let db = open_db(&path, exists)?;
        // A defrag that a crash interrupted left its unfinished copy; the store is intact.
        let _ = std::fs::remove_file(data_dir.join(writer::DEFRAG_FILE));
        // The file lock is ours now, so is the log.
        let wal_path = data_dir.join(WAL_FILE);
        let wal_err = |operation| {
            let path = wal_path.clone();
            move |source| StoreError::Io {
                path,
                operation,
                source,
            }
        };
        if !exists {
            // A log without its store belongs to nothing; never apply it to a new one.
            wal::discard(&wal_path).map_err(wal_err("empty a stale write-ahead log"))?;
        }
        init_or_check(&db, &loc, !exists)?;
        let lap = {
            let r = db.begin_read().ctx(&loc, "begin read")?;
            check_format(&r, &loc)?;
            read_lap(&r, &loc)?
        };
        let (mut wal, records) =
            Wal::open(&wal_path, lap).map_err(wal_err("open the write-ahead log"))?;
        logged::recover(&db, &mut wal, &records, &loc)?;
        let mut store = Self::start(
            Arc::new(db),
            Some(data_dir.to_path_buf()),
            loc,
            Some(wal),
            opts,
        )?;
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.replayed = records.len();
        }
        let sock = data_dir.join(admin::ADMIN_SOCKET);
        match admin::serve(&sock, Arc::downgrade(&store.inner)) {
            Ok(h) => {
                if let Some(inner) = Arc::get_mut(&mut store.inner) {
                    inner.admin = Some((sock, h));
                }
            }
            // Only live snapshots need it; the store works without.
            Err(e) => tracing::warn!(error = %e, path = %sock.display(), "no admin socket"),
        }
        Ok(store)
    }

    /// Snapshot the store of `data_dir` through the admin socket of the process that has
    /// it open (a running server).
    pub fn snapshot_live(data_dir: &Path, dest: &Path) -> Result<SnapshotInfo> {
        LiveStore::new(data_dir).snapshot(dest)
    }

    /// A store that lives in memory only: the same engine on redb's in-memory backend.
    pub fn in_memory() -> Result<Self> {
        Self::in_memory_with_clock(Arc::new(SystemClock))
    }

    /// [`EmbeddedStore::in_memory`] with lease deadlines on `clock`.
    pub fn in_memory_with_clock(clock: Arc<dyn Clock>) -> Result<Self> {
        let loc = "memory".to_string();
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .ctx(&loc, "create")?;
        init_or_check(&db, &loc, true)?;
        let opts = OpenOptions {
            history: None,
            clock,
            ..OpenOptions::default()
        };
        Self::start(Arc::new(db), None, loc, None, &opts)
    }

    fn start(
        db: Arc<Database>,
        dir: Option<PathBuf>,
        loc: String,
        wal: Option<Wal>,
        opts: &OpenOptions,
    ) -> Result<Self> {
        let (rev, compact_rev, snap) = {
            let r = db.begin_read().ctx(&loc, "begin read")?;
            check_format(&r, &loc)?;
            let (rev, compact) = read_revs(&r, &loc)?;
            (rev, compact, DbRead::open(&r, &loc)?)
        };
        let mem = Arc::new(std::sync::RwLock::new(Overlay::default()));
        let (notify, revision) = tokio::sync::watch::channel(rev);
        let (tx, rx) = mpsc::channel();
        let slot: DbSlot = Arc::new(std::sync::RwLock::new(db.clone()));
        let w_dir = dir.clone();
        let w = Writer {
            db,
            mem: mem.clone(),
            snap: Arc::new(snap),
            compact_done_to: compact_rev,
            slot: slot.clone(),
            dir,
            loc: loc.clone(),
            rx,
            notify,
            rev,
            compact_rev,
            wal,
            history: opts.history,
            clock: opts.clock.clone(),
            fold_every: opts.fold_every,
            spare: Vec::new(),
            first_failure: None,
        };
        let h = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || w.run())
            .map_err(|e| StoreError::Io {
                path: PathBuf::from(&loc),
                operation: "start the writer thread",
                source: e,
            })?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db: slot,
                mem,
                dir: w_dir,
                loc,
                requests: Some(std::sync::Mutex::new(tx)),
                revision,
                writer: Some(h),
                admin: None,
                replayed: 0,
            }),
        })
    }

    fn loc(&self) -> &str {
        &self.inner.loc
    }

    fn read(&self) -> Result<ReadTransaction> {
        let db = self
            .inner
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        db.begin_read().ctx(self.loc(), "begin read")
    }

    /// A consistent view of the store: the overlay, locked while `f` runs, over a redb
    /// snapshot begun under the same lock. `f` takes (copies) what it needs from the
    /// overlay; the snapshot is returned for the rest of the read, done without the lock.
    fn view<T>(&self, f: impl FnOnce(&Layers, &Overlay) -> Result<T>) -> Result<(DbRead, T)> {
        let (_, db, t) = self.view_txn(f)?;
        Ok((db, t))
    }

    /// [`EmbeddedStore::view`], also returning the redb transaction (to copy the file).
    fn view_txn<T>(
        &self,
        f: impl FnOnce(&Layers, &Overlay) -> Result<T>,
    ) -> Result<(ReadTransaction, DbRead, T)> {
        let mem = self.inner.mem.read().unwrap_or_else(|e| e.into_inner());
        let r = self.read()?;
        let db = DbRead::open(&r, self.loc())?;
        let layers = Layers {
            over: [Some(&*mem), None],
            db: &db,
            loc: self.loc(),
        };
        let t = f(&layers, &mem)?;
        drop(mem);
        Ok((r, db, t))
    }

    /// The current and the compact revision.
    fn revs(&self) -> Result<(u64, u64)> {
        Ok(self.view(|l, _| l.revs())?.1)
    }

    async fn request<T>(
        &self,
        operation: &'static str,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let Some(requests) = &self.inner.requests else {
            return Err(StoreError::ReadOnly {
                location: self.loc().to_string(),
                operation,
            });
        };
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError::Closed {
            location: self.loc().to_string(),
        };
        requests
            .lock()
            .map_err(|_| closed())?
            .send(make(tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Copy the store, consistent at one revision, into a new file at `dest`. Works on a
    /// read-only handle, so while a server runs.
    pub fn snapshot(&self, dest: &Path) -> Result<SnapshotInfo> {
        // The file as of the snapshot, plus the writes not folded into it yet.
        let (r, _, ((rev, compact_rev), unfolded)) =
            self.view_txn(|l, mem| Ok((l.revs()?, mem.log.clone())))?;
        let tmp = dest.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let dloc = dest.display().to_string();
        let keys = {
            let out = Database::builder().create(&tmp).ctx(&dloc, "create")?;
            // The snapshot is not in use yet: write it in one durable commit.
            copy_all(&r, &unfolded, &out, self.loc(), &dloc)?
        };
        let bytes = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        std::fs::rename(&tmp, dest).map_err(|e| StoreError::Io {
            path: dest.to_path_buf(),
            operation: "rename the finished snapshot into place",
            source: e,
        })?;
        Ok(SnapshotInfo {
            revision: rev as i64,
            compact_revision: compact_rev as i64,
            keys,
            bytes,
        })
    }

    /// Check a snapshot file and install it as the store of `data_dir`, which must not
    /// hold a store yet.
    pub fn restore(snapshot: &Path, data_dir: &Path) -> Result<SnapshotInfo> {
        let target = data_dir.join(STORE_FILE);
        // A running process would go on serving (and overwrite) the store it has open.
        let live = LiveStore::new(data_dir);
        if live.is_live() {
            return Err(StoreError::InUse {
                path: data_dir.to_path_buf(),
                socket: data_dir.join(ADMIN_SOCKET),
                operation: "restore",
            });
        }
        if target.exists() {
            return Err(StoreError::Io {
                path: target,
                operation:
                    "restore (the data dir already has a store; restore into a new data dir)",
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        if !check_file(snapshot)? {
            return Err(StoreError::Foreign {
                path: snapshot.to_path_buf(),
                reason: "the snapshot file does not exist or is empty",
            });
        }
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io {
            path: data_dir.to_path_buf(),
            operation: "create data dir",
            source: e,
        })?;
        let tmp = data_dir.join("state.redb.restoring");
        std::fs::copy(snapshot, &tmp).map_err(|e| StoreError::Io {
            path: snapshot.to_path_buf(),
            operation: "copy the snapshot",
            source: e,
        })?;
        let info = (|| {
            let loc = snapshot.display().to_string();
            let db = Database::builder().open(&tmp).ctx(&loc, "open")?;
            let r = db.begin_read().ctx(&loc, "begin read")?;
            check_format(&r, &loc)?;
            let (rev, compact_rev) = read_revs(&r, &loc)?;
            let keys = r
                .open_table(LATEST)
                .ctx(&loc, "open table")?
                .len()
                .ctx(&loc, "read")?;
            Ok(SnapshotInfo {
                revision: rev as i64,
                compact_revision: compact_rev as i64,
                keys,
                bytes: std::fs::metadata(snapshot).map(|m| m.len()).unwrap_or(0),
            })
        })();
        if info.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return info;
        }
        // A log left without its store must not be replayed onto the restored one.
        let _ = std::fs::remove_file(data_dir.join(WAL_FILE));
        std::fs::rename(&tmp, &target).map_err(|e| StoreError::Io {
            path: target.clone(),
            operation: "install the restored store",
            source: e,
        })?;
        info
    }

    /// Rewrite the file of a store that no process has open, to give space freed by
    /// compaction back to the file system; returns the file size before and after. A live
    /// store defragments through [`EmbeddedStore::defragment`] (its admin socket).
    pub async fn defrag(data_dir: &Path) -> Result<(u64, u64)> {
        let s = Self::open(
            data_dir,
            &OpenOptions {
                create: false,
                history: None,
                ..OpenOptions::default()
            },
        )?;
        s.defragment().await
    }

    /// Rewrite this store's file compactly and switch to it, while it serves: writes wait
    /// for the rewrite (as etcd's defrag), reads go on. Returns the file size before and
    /// after.
    pub async fn defragment(&self) -> Result<(u64, u64)> {
        self.request("defrag", Request::Defrag).await
    }

    /// How many write-ahead log records opening the store replayed: batches that were
    /// acknowledged but not yet folded into the store file when it was last closed (or
    /// killed).
    pub fn replayed_at_open(&self) -> usize {
        self.inner.replayed
    }

    /// Size of the store file in bytes (0 in memory).
    pub fn file_size(data_dir: &Path) -> u64 {
        std::fs::metadata(data_dir.join(STORE_FILE))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The oldest revision still readable.
    pub fn compact_revision(&self) -> Result<Revision> {
        Ok(self.revs()?.1 as i64)
    }
}

/// redb's page cache. Its default (1 GiB) let it keep every page a fold wrote — 115 MB
/// of the API bench's 20,000 pods — while recent writes are in the overlay anyway and
/// older pages are one `pread` from the kernel's page cache.
const REDB_CACHE: usize = 32 << 20;

fn open_db(path: &Path, exists: bool) -> Result<Database> {
    let loc = path.display().to_string();
    let mut b = Database::builder();
    b.set_cache_size(REDB_CACHE);
    if exists { b.open(path) } else { b.create(path) }.map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
        },
        e => StoreError::Storage {
            location: loc,
            operation: "open",
            source: Box::new(e.into()),
        },
    })
}

/// Whether `path` exists with content; refuses files that are not redb databases.
fn check_file(path: &Path) -> Result<bool> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                operation: "open",
                source: e,
            })
        }
    };
    let mut head = [0u8; 9];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    operation: "read",
                    source: e,
                })
            }
        }
    }
    if n == 0 {
        return Ok(false);
    }
    if n < head.len() || head[..4] != *b"redb" {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
            reason: "it is not a redb database",
        });
    }
    Ok(true)
}

fn init_or_check(db: &Database, loc: &str, fresh: bool) -> Result<()> {
    let w = db.begin_write().ctx(loc, "begin write")?;
    {
        let mut meta = w.open_table(META).ctx(loc, "open table")?;
        let format = meta_get(&meta, FORMAT_KEY, loc)?;
        match format {
            None if fresh => {
                meta.insert(FORMAT_KEY, FORMAT).ctx(loc, "write")?;
                meta.insert(REV_KEY, 1).ctx(loc, "write")?;
                meta.insert(COMPACT_KEY, 0).ctx(loc, "write")?;
                meta.insert(WAL_SALT_KEY, wal::new_salt())
                    .ctx(loc, "write")?;
            }
            _ => {}
        }
        w.open_table(HIST).ctx(loc, "open table")?;
        w.open_table(REVLOG).ctx(loc, "open table")?;
        w.open_table(LATEST).ctx(loc, "open table")?;
        w.open_table(LEASES).ctx(loc, "open table")?;
        w.open_table(LEASE_KEYS).ctx(loc, "open table")?;
    }
    if fresh {
        w.commit().ctx(loc, "commit")?;
    } else {
        w.abort().ctx(loc, "abort")?;
    }
    Ok(())
}

fn check_format(r: &ReadTransaction, loc: &str) -> Result<()> {
    let foreign = || StoreError::Foreign {
        path: PathBuf::from(loc),
        reason: "it is a redb database without skiff's tables",
    };
    let meta = match r.open_table(META) {
        Ok(m) => m,
        Err(redb::TableError::TableDoesNotExist(_))
        | Err(redb::TableError::TableTypeMismatch { .. }) => return Err(foreign()),
        Err(e) => return Err(e).ctx(loc, "open table"),
    };
    match meta_get(&meta, FORMAT_KEY, loc)? {
        Some(FORMAT) => Ok(()),
        Some(_) => Err(StoreError::Foreign {
            path: PathBuf::from(loc),
            reason: "it was written by an incompatible skiff version",
        }),
        None => Err(foreign()),
    }
}

fn read_revs(r: &ReadTransaction, loc: &str) -> Result<(u64, u64)> {
    let meta = r.open_table(META).ctx(loc, "open table")?;
    let rev = meta_get(&meta, REV_KEY, loc)?.unwrap_or(1);
    let compact = meta_get(&meta, COMPACT_KEY, loc)?.unwrap_or(0);
    Ok((rev, compact))
}

/// Which records of the write-ahead log are not folded yet (see [`wal`]).
fn read_lap(r: &ReadTransaction, loc: &str) -> Result<wal::Lap> {
    let meta = r.open_table(META).ctx(loc, "open table")?;
    Ok(wal::Lap {
        base: meta_get(&meta, WAL_BASE_KEY, loc)?.unwrap_or(0),
        salt: meta_get(&meta, WAL_SALT_KEY, loc)?.unwrap_or(0),
    })
}

/// Copy every table of the store into `out`, with the writes not folded into it yet
/// (`unfolded`, the overlay's log) on top, in one durable commit; returns the key count.
pub(super) fn copy_all(
    r: &ReadTransaction,
    unfolded: &[u8],
    out: &Database,
    loc: &str,
    dloc: &str,
) -> Result<u64> {
    let w = out.begin_write().ctx(dloc, "begin write")?;
    copy_table(r, &w, META, loc, dloc)?;
    copy_table(r, &w, HIST, loc, dloc)?;
    copy_table(r, &w, REVLOG, loc, dloc)?;
    copy_table(r, &w, LATEST, loc, dloc)?;
    copy_table(r, &w, LEASES, loc, dloc)?;
    copy_table(r, &w, LEASE_KEYS, loc, dloc)?;
    let keys = {
        let mut t = logged::DbTables::open(&w, dloc)?;
        t.replay(unfolded, dloc)?;
        redb::ReadableTableMetadata::len(&t.latest).ctx(dloc, "read")?
    };
    w.commit().ctx(dloc, "commit")?;
    Ok(keys)
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &ReadTransaction,
    w: &redb::WriteTransaction,
    def: redb::TableDefinition<K, V>,
    loc: &str,
    dloc: &str,
) -> Result<u64> {
    let src = r.open_table(def).ctx(loc, "open table")?;
    let mut dst = w.open_table(def).ctx(dloc, "open table")?;
    let mut n = 0;
    for e in redb::ReadableTable::iter(&src).ctx(loc, "read")? {
        let (k, v) = e.ctx(loc, "read")?;
        dst.insert(k.value(), v.value()).ctx(dloc, "write")?;
        n += 1;
    }
    Ok(n)
}

impl EmbeddedStore {
    fn check_rev(&self, requested: Revision, rev: u64, compact: u64) -> Result<()> {
        if requested > rev as i64 {
            return Err(StoreError::FutureRevision {
                requested,
                current: rev as i64,
            });
        }
        if requested < compact as i64 {
            return Err(StoreError::Compacted {
                requested,
                compact_revision: compact as i64,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResult> {
        let (_, (rev, kv)) = self.view(|l, _| {
            let (rev, compact) = l.revs()?;
            let kv = match revision {
                None => l.latest(key)?,
                Some(at) => {
                    self.check_rev(at, rev, compact)?;
                    l.at(key, at as u64)?
                }
            };
            Ok((rev, kv))
        })?;
        Ok(GetResult {
            kv,
            revision: revision.unwrap_or(rev as i64),
        })
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let loc = self.loc();
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let after = opts.continue_after.as_deref();
        let (db, (rev, at, picked)) = self.view(|l, mem| {
            let (rev, compact) = l.revs()?;
            let at = match opts.revision {
                Some(at) if at != rev as i64 => {
                    self.check_rev(at, rev, compact)?;
                    Some(at as u64)
                }
                _ => None,
            };
            let picked = overlay::pick(mem, prefix, after, at.unwrap_or(u64::MAX));
            Ok((rev, at, picked))
        })?;
        let (kvs, more) = match at {
            Some(at) => overlay::list_at_over(&picked, &db, prefix, after, limit, at, loc)?,
            None => overlay::list_latest_over(&picked, &db, prefix, after, limit, loc)?,
        };
        Ok(ListResult {
            kvs,
            revision: opts.revision.unwrap_or(rev as i64),
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let (db, picked) = self.view(|_, mem| Ok(overlay::pick(mem, prefix, None, u64::MAX)))?;
        overlay::count_over(&picked, &db, prefix, self.loc())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.request("txn", |tx| Request::Txn(txn, tx)).await
    }

    async fn watch(&self, range: KeyRange, opts: WatchOptions) -> Result<Watcher> {
        let (rev, compact) = self.revs()?;
        let start = match opts.start_revision {
            Some(s) if s > 0 => s as u64,
            _ => rev + 1,
        };
        if start < compact {
            return Err(StoreError::Compacted {
                requested: start as i64,
                compact_revision: compact as i64,
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BATCH);
        // The watcher must not keep the store (and its file) open: it holds a weak
        // reference and ends when the store is dropped.
        let weak = Arc::downgrade(&self.inner);
        let mut notify = self.inner.revision.clone();
        let task = tokio::spawn(async move {
            let mut pos = (start, 0u32);
            loop {
                notify.borrow_and_update();
                let Some(inner) = weak.upgrade() else { return };
                let store = EmbeddedStore { inner };
                let batch = (|| {
                    let (db, picked) = store.view(|l, mem| {
                        let (_, compact) = l.revs()?;
                        if pos.0 < compact {
                            return Err(StoreError::Compacted {
                                requested: pos.0 as i64,
                                compact_revision: compact as i64,
                            });
                        }
                        Ok(overlay::pick_events(
                            mem,
                            &range,
                            pos,
                            opts.prev_kv,
                            WATCH_BATCH,
                        ))
                    })?;
                    overlay::read_events_over(
                        picked,
                        &db,
                        &range,
                        pos,
                        opts.prev_kv,
                        WATCH_BATCH,
                        store.loc(),
                    )
                })();
                drop(store);
                match batch {
                    Ok((events, next)) => {
                        let caught_up = events.len() < WATCH_BATCH;
                        pos = next;
                        for e in events {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        if caught_up && notify.changed().await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(Watcher::new(rx, task))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.request("compact", |tx| Request::Compact(revision, tx))
            .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.revs()?.0 as i64)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.request("grant lease", |tx| Request::Grant(ttl, tx))
            .await
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<()> {
        self.request("revoke lease", |tx| Request::Revoke(id, tx))
            .await
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<()> {
        self.request("keep lease alive", |tx| Request::KeepAlive(id, tx))
            .await
    }
}
