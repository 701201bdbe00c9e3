//! A live store's admin socket, `DATA_DIR/admin.sock`: how `skiff store snapshot` copies
//! the store while the server that has it open keeps running.
//!
//! Protocol: one request line per connection, `snapshot <absolute path>`; one reply line,
//! `ok <revision> <keys> <bytes>` or `err <message>`. The listener thread holds the store
//! weakly and ends when the store is dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Weak;

use super::{EmbeddedStore, Inner, SnapshotInfo};
use crate::{Result, StoreError};

pub const ADMIN_SOCKET: &str = "admin.sock";

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
                let Some(inner) = inner.upgrade() else { break };
                let store = EmbeddedStore { inner };
                if let Ok(conn) = conn {
                    handle(&store, conn);
                }
            }
        })
}

fn handle(store: &EmbeddedStore, conn: UnixStream) {
    let mut line = String::new();
    let mut r = BufReader::new(&conn);
    if r.read_line(&mut line).is_err() {
        return;
    }
    let reply = match line.trim_end().split_once(' ') {
        Some(("snapshot", dest)) if Path::new(dest).is_absolute() => {
            match store.snapshot(Path::new(dest)) {
                Ok(i) => format!("ok {} {} {}\n", i.revision, i.keys, i.bytes),
                Err(e) => format!("err {}\n", e.to_string().replace('\n', " ")),
            }
        }
        _ => "err unknown request\n".to_string(),
    };
    let mut w = &conn;
    let _ = w.write_all(reply.as_bytes());
}

/// Ask the process that has the store in `data_dir` open for a snapshot at `dest`.
pub fn snapshot_live(data_dir: &Path, dest: &Path) -> Result<SnapshotInfo> {
    let sock = data_dir.join(ADMIN_SOCKET);
    let io = |operation, e| StoreError::Io {
        path: sock.clone(),
        operation,
        source: e,
    };
    let dest: PathBuf =
        std::path::absolute(dest).map_err(|e| io("resolve the snapshot path", e))?;
    let mut conn = UnixStream::connect(&sock).map_err(|e| io("connect to the running store", e))?;
    conn.write_all(format!("snapshot {}\n", dest.display()).as_bytes())
        .map_err(|e| io("send the snapshot request", e))?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .map_err(|e| io("read the snapshot reply", e))?;
    let bad = || StoreError::SnapshotFailed {
        path: dest.clone(),
        cause: line.trim_end().trim_start_matches("err ").to_string(),
    };
    let mut f = line.split_whitespace();
    if f.next() != Some("ok") {
        return Err(bad());
    }
    let mut num = || f.next().and_then(|x| x.parse::<u64>().ok()).ok_or_else(bad);
    let (revision, keys, bytes) = (num()? as i64, num()?, num()?);
    Ok(SnapshotInfo {
        revision,
        compact_revision: 0,
        keys,
        bytes,
    })
}
