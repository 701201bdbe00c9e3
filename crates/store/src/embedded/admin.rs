//! A live store's admin socket, `DATA_DIR/admin.sock`: how `skiff store …` reads, watches,
//! compacts, snapshots and defragments a store while the process that has it open (a
//! server) keeps running. Only one process can open the store's files, so every other one
//! goes through the owner.
//!
//! Protocol: JSON lines, one request per connection. The client sends one object with an
//! `op` (`status`, `get`, `list`, `watch`, `compact`, `snapshot`, `defrag`) and its
//! arguments; the server answers one object, or `{"error": message, "category": name}`
//! (plus `requested`/`compact_revision` for a compacted revision). A `watch` is answered
//! with one `{"event": …}` line per event, in revision order, until the client hangs up, the
//! store closes (end of stream) or the watch fails (an error line). Values travel as UTF-8
//! text in `value` when they are valid UTF-8, else hex in `value_hex`.
//!
//! Each connection gets its own thread; it holds the store only while it serves a request
//! (a watch holds it weakly, like every watcher), so the store still closes when its owner
//! drops it. The listener thread ends when the store is dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use serde_json::{json, Value};

use super::{EmbeddedStore, Inner, SnapshotInfo};
use crate::{
    Category, Event, EventKind, GetResult, KeyRange, KeyValue, ListOptions, ListResult, Result,
    Revision, Store, StoreError, WatchOptions,
};

pub const ADMIN_SOCKET: &str = "admin.sock";
/// A client that connects and says nothing is dropped after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn serve(
    path: &Path,
    inner: Weak<Inner>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // We hold the store's file lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("skiff-store-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if inner.strong_count() == 0 {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let inner = inner.clone();
                let spawned = std::thread::Builder::new()
                    .name("skiff-store-admin-conn".into())
                    .spawn(move || handle(inner, conn));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "admin socket: cannot start a connection thread");
                }
            }
        })
}

fn handle(inner: Weak<Inner>, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(REQUEST_TIMEOUT));
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            reply(
                &conn,
                &err_json(&format!("cannot serve the request: {e}"), None),
            );
            return;
        }
    };
    let req: Value = match serde_json::from_str(line.trim_end()) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let msg = "the request is not a JSON object (this skiff is newer or older than the server's?)";
            reply(&conn, &err_json(msg, Some(Category::Invalid)));
            return;
        }
    };
    let closed = || err_json("the store is closing", Some(Category::Unavailable));
    if req["op"] == "watch" {
        rt.block_on(watch(inner, req, conn));
        return;
    }
    let Some(inner) = inner.upgrade() else {
        reply(&conn, &closed());
        return;
    };
    let store = EmbeddedStore { inner };
    let answer = rt
        .block_on(serve_one(&store, &req))
        .unwrap_or_else(|e| error_json(&e));
    drop(store);
    reply(&conn, &answer);
}

fn reply(mut conn: &UnixStream, v: &Value) {
    let _ = conn.write_all(format!("{v}\n").as_bytes());
}

fn err_json(message: &str, category: Option<Category>) -> Value {
    json!({
        "error": message,
        "category": format!("{:?}", category.unwrap_or(Category::Invalid)),
    })
}

fn error_json(e: &StoreError) -> Value {
    let mut v = err_json(&e.to_string(), Some(e.category()));
    if let StoreError::Compacted {
        requested,
        compact_revision,
    } = e
    {
        v["requested"] = json!(requested);
        v["compact_revision"] = json!(compact_revision);
    }
    v
}

fn bad(what: &str) -> StoreError {
    StoreError::Remote {
        socket: PathBuf::from(ADMIN_SOCKET),
        category: Category::Invalid,
        message: format!("bad request: {what}"),
    }
}

fn opt_i64(req: &Value, field: &str) -> Result<Option<i64>> {
    match &req[field] {
        Value::Null => Ok(None),
        v => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(&format!("{field} must be an integer"))),
    }
}

fn str_field<'a>(req: &'a Value, field: &str) -> Result<&'a str> {
    match &req[field] {
        Value::Null => Ok(""),
        v => v
            .as_str()
            .ok_or_else(|| bad(&format!("{field} must be a string"))),
    }
}

async fn serve_one(store: &EmbeddedStore, req: &Value) -> Result<Value> {
    match req["op"].as_str().unwrap_or("") {
        "status" => {
            let (rev, compact) = store.revs()?;
            Ok(json!({
                "revision": rev,
                "compact_revision": compact,
                "keys": store.count("").await?,
                "file_bytes": store.inner.dir.as_deref().map_or(0, EmbeddedStore::file_size),
            }))
        }
        "get" => {
            let g = store
                .get(str_field(req, "key")?, opt_i64(req, "rev")?)
                .await?;
            Ok(json!({"kv": g.kv.as_ref().map(kv_to_json), "revision": g.revision}))
        }
        "list" => {
            let limit = opt_i64(req, "limit")?
                .map(|l| usize::try_from(l).map_err(|_| bad("limit must not be negative")))
                .transpose()?;
            let after = str_field(req, "continue_after")?;
            let l = store
                .list(
                    str_field(req, "prefix")?,
                    &ListOptions {
                        revision: opt_i64(req, "rev")?,
                        limit,
                        continue_after: (!after.is_empty()).then(|| after.to_string()),
                    },
                )
                .await?;
            Ok(json!({
                "kvs": l.kvs.iter().map(kv_to_json).collect::<Vec<_>>(),
                "revision": l.revision,
                "more": l.more,
            }))
        }
        "compact" => {
            let current = store.current_revision().await?;
            let target = match (opt_i64(req, "revision")?, opt_i64(req, "keep")?) {
                (Some(r), _) => r,
                (None, Some(k)) if k >= 0 => (current - k).max(1),
                _ => return Err(bad("give revision, or keep >= 0")),
            };
            store.compact(target).await?;
            Ok(json!({"compacted_to": target, "current": current}))
        }
        "snapshot" => {
            let dest = Path::new(str_field(req, "path")?);
            if !dest.is_absolute() {
                return Err(bad("path must be absolute"));
            }
            let i = store.snapshot(dest)?;
            Ok(json!({
                "revision": i.revision,
                "compact_revision": i.compact_revision,
                "keys": i.keys,
                "bytes": i.bytes,
            }))
        }
        "defrag" => {
            let (before, after) = store.defragment().await?;
            Ok(json!({"before": before, "after": after}))
        }
        op => Err(bad(&format!("unknown op {op:?}"))),
    }
}

async fn watch(inner: Weak<Inner>, req: Value, conn: UnixStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = async {
        let Some(inner) = inner.upgrade() else {
            return Err(err_json(
                "the store is closing",
                Some(Category::Unavailable),
            ));
        };
        let store = EmbeddedStore { inner };
        let opts = (|| {
            Ok::<_, StoreError>(WatchOptions {
                start_revision: opt_i64(&req, "rev")?,
                prev_kv: req["prev_kv"].as_bool().unwrap_or(false),
            })
        })()
        .map_err(|e| error_json(&e))?;
        let prefix = str_field(&req, "prefix").map_err(|e| error_json(&e))?;
        store
            .watch(KeyRange::Prefix(prefix.to_string()), opts)
            .await
            .map_err(|e| error_json(&e))
        // The store is dropped here: the watcher holds it weakly.
    };
    let mut watcher = match started.await {
        Ok(w) => w,
        Err(v) => return reply(&conn, &v),
    };
    let conn = match conn
        .set_nonblocking(true)
        .and_then(|_| tokio::net::UnixStream::from_std(conn))
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let (mut rd, mut wr) = conn.into_split();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            e = watcher.next() => {
                let line = match e {
                    Some(Ok(e)) => json!({"event": event_to_json(&e)}),
                    Some(Err(e)) => error_json(&e),
                    None => return, // the store closed: end of stream
                };
                let end = line.get("error").is_some();
                if wr.write_all(format!("{line}\n").as_bytes()).await.is_err() || end {
                    return;
                }
            }
            // The client says nothing more; a read returning means it hung up.
            r = rd.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { return },
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn kv_to_json(kv: &KeyValue) -> Value {
    let mut v = json!({
        "key": kv.key,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    });
    match std::str::from_utf8(&kv.value) {
        Ok(s) => v["value"] = json!(s),
        Err(_) => v["value_hex"] = json!(hex(&kv.value)),
    }
    v
}

fn event_to_json(e: &Event) -> Value {
    let mut v = json!({
        "kind": match e.kind { EventKind::Put => "PUT", EventKind::Delete => "DELETE" },
        "kv": kv_to_json(&e.kv),
    });
    if let Some(p) = &e.prev_kv {
        v["prev_kv"] = kv_to_json(p);
    }
    v
}

/// A client of a live store's admin socket.
#[derive(Debug, Clone)]
pub struct LiveStore {
    socket: PathBuf,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub revision: Revision,
    pub compact_revision: Revision,
    pub keys: i64,
    pub file_bytes: u64,
}

/// A watch through the admin socket: a blocking iterator of events. Dropping it hangs up.
#[derive(Debug)]
pub struct LiveWatch {
    socket: PathBuf,
    lines: BufReader<UnixStream>,
}

impl Iterator for LiveWatch {
    type Item = Result<Event>;
    fn next(&mut self) -> Option<Result<Event>> {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                Some(LiveStore::parse(&self.socket, &line).and_then(|v| {
                    event_from_json(&v["event"]).ok_or_else(|| malformed(&self.socket))
                }))
            }
            Err(e) => Some(Err(StoreError::Io {
                path: self.socket.clone(),
                operation: "read the watch stream",
                source: e,
            })),
        }
    }
}

fn malformed(socket: &Path) -> StoreError {
    StoreError::Remote {
        socket: socket.to_path_buf(),
        category: Category::Unavailable,
        message: "malformed answer (is the server a different skiff version?)".into(),
    }
}

fn kv_from_json(v: &Value) -> Option<KeyValue> {
    let value = match (&v["value"], &v["value_hex"]) {
        (Value::String(s), _) => s.clone().into_bytes(),
        (_, Value::String(h)) => unhex(h)?,
        _ => return None,
    };
    Some(KeyValue {
        key: v["key"].as_str()?.to_string(),
        value,
        create_revision: v["create_revision"].as_i64()?,
        mod_revision: v["mod_revision"].as_i64()?,
        version: v["version"].as_i64()?,
        lease: v["lease"].as_i64()?,
    })
}

fn event_from_json(v: &Value) -> Option<Event> {
    Some(Event {
        kind: match v["kind"].as_str()? {
            "PUT" => EventKind::Put,
            "DELETE" => EventKind::Delete,
            _ => return None,
        },
        kv: kv_from_json(&v["kv"])?,
        prev_kv: match &v["prev_kv"] {
            Value::Null => None,
            p => Some(kv_from_json(p)?),
        },
    })
}

impl LiveStore {
    /// The admin socket of the process that has the store in `data_dir` open. Calls fail
    /// with [`StoreError::Io`] (connection refused / not found) when no process serves it.
    pub fn new(data_dir: &Path) -> Self {
        LiveStore {
            socket: data_dir.join(ADMIN_SOCKET),
        }
    }

    /// Whether a process answers on the socket (the store is live).
    pub fn is_live(&self) -> bool {
        UnixStream::connect(&self.socket).is_ok()
    }

    fn connect(&self, req: &Value) -> Result<UnixStream> {
        let io = |operation, e| StoreError::Io {
            path: self.socket.clone(),
            operation,
            source: e,
        };
        let mut conn = UnixStream::connect(&self.socket)
            .map_err(|e| io("connect to the process that has the store open", e))?;
        conn.write_all(format!("{req}\n").as_bytes())
            .map_err(|e| io("send the request", e))?;
        Ok(conn)
    }

    fn parse(socket: &Path, line: &str) -> Result<Value> {
        let v: Value = serde_json::from_str(line.trim_end()).map_err(|_| malformed(socket))?;
        let Some(msg) = v.get("error") else {
            return Ok(v);
        };
        let message = msg.as_str().unwrap_or("unknown error").to_string();
        if let (Some(requested), Some(compact_revision)) =
            (v["requested"].as_i64(), v["compact_revision"].as_i64())
        {
            return Err(StoreError::Compacted {
                requested,
                compact_revision,
            });
        }
        let category = match v["category"].as_str().unwrap_or("") {
            "NotFound" => Category::NotFound,
            "AlreadyExists" => Category::AlreadyExists,
            "Conflict" => Category::Conflict,
            "Compacted" => Category::Compacted,
            "Invalid" => Category::Invalid,
            _ => Category::Unavailable,
        };
        Err(StoreError::Remote {
            socket: socket.to_path_buf(),
            category,
            message,
        })
    }

    fn call(&self, req: Value) -> Result<Value> {
        let conn = self.connect(&req)?;
        let mut line = String::new();
        BufReader::new(&conn)
            .read_line(&mut line)
            .map_err(|e| StoreError::Io {
                path: self.socket.clone(),
                operation: "read the answer",
                source: e,
            })?;
        if line.is_empty() {
            return Err(StoreError::Remote {
                socket: self.socket.clone(),
                category: Category::Unavailable,
                message: "the process closed the connection without an answer".into(),
            });
        }
        Self::parse(&self.socket, &line)
    }

    pub fn status(&self) -> Result<StoreStatus> {
        let v = self.call(json!({"op": "status"}))?;
        let f = |k: &str| v[k].as_i64().ok_or_else(|| malformed(&self.socket));
        Ok(StoreStatus {
            revision: f("revision")?,
            compact_revision: f("compact_revision")?,
            keys: f("keys")?,
            file_bytes: f("file_bytes")? as u64,
        })
    }

    pub fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResult> {
        let v = self.call(json!({"op": "get", "key": key, "rev": revision}))?;
        Ok(GetResult {
            kv: match &v["kv"] {
                Value::Null => None,
                kv => Some(kv_from_json(kv).ok_or_else(|| malformed(&self.socket))?),
            },
            revision: v["revision"]
                .as_i64()
                .ok_or_else(|| malformed(&self.socket))?,
        })
    }

    pub fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let v = self.call(json!({
            "op": "list",
            "prefix": prefix,
            "rev": opts.revision,
            "limit": opts.limit,
            "continue_after": opts.continue_after,
        }))?;
        let kvs = v["kvs"]
            .as_array()
            .ok_or_else(|| malformed(&self.socket))?
            .iter()
            .map(|kv| kv_from_json(kv).ok_or_else(|| malformed(&self.socket)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListResult {
            kvs,
            revision: v["revision"]
                .as_i64()
                .ok_or_else(|| malformed(&self.socket))?,
            more: v["more"].as_bool().unwrap_or(false),
        })
    }

    /// Compact to `revision`, or keep the last `keep` revisions. Returns the revision
    /// compacted to and the current one.
    pub fn compact(
        &self,
        revision: Option<Revision>,
        keep: Option<i64>,
    ) -> Result<(Revision, Revision)> {
        let v = self.call(json!({"op": "compact", "revision": revision, "keep": keep}))?;
        let f = |k: &str| v[k].as_i64().ok_or_else(|| malformed(&self.socket));
        Ok((f("compacted_to")?, f("current")?))
    }

    /// Watch the keys under `prefix`; the stream ends when the store closes.
    pub fn watch(&self, prefix: &str, opts: &WatchOptions) -> Result<LiveWatch> {
        let conn = self.connect(&json!({
            "op": "watch",
            "prefix": prefix,
            "rev": opts.start_revision,
            "prev_kv": opts.prev_kv,
        }))?;
        Ok(LiveWatch {
            socket: self.socket.clone(),
            lines: BufReader::new(conn),
        })
    }

    /// Write a consistent copy of the store to `dest` (made absolute here: the server may
    /// run in another directory).
    pub fn snapshot(&self, dest: &Path) -> Result<SnapshotInfo> {
        let dest = std::path::absolute(dest).map_err(|e| StoreError::Io {
            path: dest.to_path_buf(),
            operation: "resolve the snapshot path",
            source: e,
        })?;
        let v = self
            .call(json!({"op": "snapshot", "path": dest}))
            .map_err(|e| match e {
                StoreError::Remote { message, .. } => StoreError::SnapshotFailed {
                    path: dest.clone(),
                    cause: message,
                },
                e => e,
            })?;
        let f = |k: &str| v[k].as_i64().ok_or_else(|| malformed(&self.socket));
        Ok(SnapshotInfo {
            revision: f("revision")?,
            compact_revision: f("compact_revision")?,
            keys: f("keys")? as u64,
            bytes: f("bytes")? as u64,
        })
    }

    /// Defragment the live store; returns the file size before and after.
    pub fn defrag(&self) -> Result<(u64, u64)> {
        let v = self.call(json!({"op": "defrag"}))?;
        let f = |k: &str| v[k].as_u64().ok_or_else(|| malformed(&self.socket));
        Ok((f("before")?, f("after")?))
    }
}
