//! The embedded store (redb on disk, and in memory): the conformance suite plus what only
//! a file-backed store has (durability across reopen, space reclaim, bad files).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::path::Path;

use skiff_store::*;

async fn on_disk() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path(), &OpenOptions::default()).unwrap();
    (s, dir)
}

mod redb_file {
    use super::*;
    conformance!(on_disk());
}

mod memory {
    use super::*;
    async fn make() -> (EmbeddedStore, ()) {
        (EmbeddedStore::in_memory().unwrap(), ())
    }
    conformance!(make());
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, &OpenOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_revisions_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (rev, lease) = {
        let s = open(dir.path());
        s.put("/a", b"1".to_vec(), 0).await.unwrap();
        let l = s
            .grant_lease(std::time::Duration::from_secs(600))
            .await
            .unwrap();
        s.put("/b", b"2".to_vec(), l.id).await.unwrap();
        (s.current_revision().await.unwrap(), l.id)
    };
    let s = open(dir.path());
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(s.get("/b", None).await.unwrap().kv.unwrap().lease, lease);
    assert_eq!(s.put("/c", vec![], 0).await.unwrap(), rev + 1);
    s.revoke_lease(lease).await.unwrap();
    assert!(s.get("/b", None).await.unwrap().kv.is_none());
}

/// The write-ahead log is written in place: a fold (here the one at close) starts it over
/// from its beginning, so the same writes again reuse the file instead of growing it, and
/// a clean close leaves nothing to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_file_is_reused_after_a_fold() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join(WAL_FILE);
    let mut sizes = Vec::new();
    for round in 0..3 {
        let s = open(dir.path());
        assert_eq!(
            s.replayed_at_open(),
            0,
            "round {round}: a clean close folds"
        );
        for i in 0..200 {
            s.put(&format!("/log/{round}/{i}"), vec![b'w'; 8 << 10], 0)
                .await
                .unwrap();
        }
        drop(s);
        sizes.push(std::fs::metadata(&wal).unwrap().len());
    }
    // 200 batches of 8 KiB at least (each write its own batch, or fewer larger ones).
    assert!(sizes[0] >= 200 * (8 << 10), "{sizes:?}");
    assert!(sizes.iter().all(|s| *s == sizes[0]), "{sizes:?}");
    let s = open(dir.path());
    for round in 0..3 {
        let kv = s.get(&format!("/log/{round}/199"), None).await.unwrap();
        assert_eq!(kv.kv.unwrap().value.len(), 8 << 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_file_bounded_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    async fn churn(s: &EmbeddedStore, dir: &Path) -> u64 {
        // 8 concurrent writers overwrite 100 keys 2000 times.
        let writers = (0..8).map(|w| async move {
            for i in 0..250 {
                s.put(
                    &format!("/churn/{}", (w * 250 + i) % 100),
                    vec![0x5a; 1024],
                    0,
                )
                .await
                .unwrap();
            }
        });
        conformance::join_all(writers.collect()).await;
        let rev = s.current_revision().await.unwrap();
        s.compact(rev).await.unwrap();
        EmbeddedStore::file_size(dir)
    }
    // Eight rounds write 64 MiB of history over 100 live keys (100 KiB). Measured here:
    // without the compactions the file reaches 35 MB; with them it stays at 7-9 MB. How far
    // it grows before freed pages are reused depends on when the log is folded into it
    // (pages a compaction frees become reusable only after the next durable commit), and
    // redb grows its file in doubling steps, so the bound sits between the two rather than
    // relative to the first round's size (which made this test flaky).
    const ROUNDS: u64 = 8;
    let mut sizes = Vec::new();
    for _ in 0..ROUNDS {
        sizes.push(churn(&s, dir.path()).await);
    }
    let history = ROUNDS * 8000 * 1024;
    let last = *sizes.last().unwrap();
    assert!(
        last <= history / 3,
        "file reached {last} bytes after {history} bytes of compacted history (sizes per round: {sizes:?})"
    );
    assert_eq!(
        s.compact_revision().unwrap(),
        s.current_revision().await.unwrap(),
        "the last compaction did not take effect"
    );
    assert_eq!(s.count("/churn/").await.unwrap(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_dirs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let ro = OpenOptions {
        create: false,
        ..Default::default()
    };
    let e = EmbeddedStore::open(&missing, &ro).unwrap_err();
    assert!(matches!(e, StoreError::DataDirMissing { .. }), "{e:?}");

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join(STORE_FILE), b"SQLite format 3\0 not ours").unwrap();
    let e = EmbeddedStore::open(&foreign, &OpenOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::Foreign { .. }), "{e:?}");
    assert!(e.to_string().contains("not a redb database"), "{e}");

    // A redb file of someone else's.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    {
        let db = redb::Database::create(other.join(STORE_FILE)).unwrap();
        let w = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("x");
            w.open_table(def).unwrap().insert("k", "v").unwrap();
        }
        w.commit().unwrap();
    }
    let e = EmbeddedStore::open(&other, &OpenOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::Foreign { .. }), "{e:?}");

    // A second opener is refused while the first holds the file.
    let live = dir.path().join("live");
    let s = open(&live);
    s.put("/k", b"v".to_vec(), 0).await.unwrap();
    let e = EmbeddedStore::open(&live, &OpenOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("in use"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_while_writing_then_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = open(&data);
    for i in 0..50 {
        s.put(&format!("/s/{i}"), vec![i as u8; 100], 0)
            .await
            .unwrap();
    }
    let rev = s.current_revision().await.unwrap();
    // Through the admin socket, as `skiff store snapshot` does while a server runs.
    let snap = dir.path().join("snap.db");
    let info = tokio::task::spawn_blocking({
        let (data, snap) = (data.clone(), snap.clone());
        move || EmbeddedStore::snapshot_live(&data, &snap)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!((info.revision, info.keys), (rev, 50));
    s.put("/s/after", vec![], 0).await.unwrap();

    let restored = dir.path().join("restored");
    let info = EmbeddedStore::restore(&snap, &restored).unwrap();
    assert_eq!(info.revision, rev);
    let direct = dir.path().join("direct.db");
    assert_eq!(s.snapshot(&direct).unwrap().revision, rev + 1);
    let e = EmbeddedStore::restore(&snap, &restored).unwrap_err();
    assert_eq!(e.category(), Category::Unavailable, "{e}");
    let r = open(&restored);
    assert_eq!(r.current_revision().await.unwrap(), rev);
    assert_eq!(r.count("/s/").await.unwrap(), 50);
    assert_eq!(r.put("/s/new", vec![], 0).await.unwrap(), rev + 1);
    drop(r);
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, b"garbage").unwrap();
    let e = EmbeddedStore::restore(&bad, &dir.path().join("r2")).unwrap_err();
    assert!(matches!(e, StoreError::Foreign { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defrag_shrinks_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let s = &s;
        let puts = (0..10).map(|w| async move {
            for i in 0..300 {
                s.put(&format!("/d/{w}/{i}"), vec![1; 1024], 0)
                    .await
                    .unwrap();
            }
        });
        conformance::join_all(puts.collect()).await;
        let deletes = (0..10).map(|w| async move {
            for i in 0..300 {
                s.delete(&format!("/d/{w}/{i}"), None).await.unwrap();
            }
        });
        conformance::join_all(deletes.collect()).await;
        let rev = s.current_revision().await.unwrap();
        s.compact(rev).await.unwrap();
    }
    let (before, after) = EmbeddedStore::defrag(dir.path()).await.unwrap();
    assert!(after < before, "defrag did not shrink: {before} -> {after}");
    let s = open(dir.path());
    assert_eq!(s.count("/d/").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_keeps_the_history_window() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(
        dir.path(),
        &OpenOptions {
            history: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
    )
    .unwrap();
    let first = s.put("/auto/a", b"1".to_vec(), 0).await.unwrap();
    // Keep writing until the window has moved past the first write.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = first;
    while s.compact_revision().unwrap() <= first {
        assert!(tokio::time::Instant::now() < deadline, "never compacted");
        last = s.put("/auto/a", b"2".to_vec(), 0).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let e = s.get("/auto/a", Some(first)).await.unwrap_err();
    assert_eq!(e.category(), Category::Compacted, "{e}");
    // Never past what was current one window ago: the newest revision is still readable.
    assert!(s.compact_revision().unwrap() <= last);
    assert!(s.get("/auto/a", Some(last)).await.unwrap().kv.is_some());
}

/// A clock the test moves by hand.
#[derive(Debug, Default)]
struct ManualClock(std::sync::atomic::AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_the_injected_clock() {
    let clock = std::sync::Arc::new(ManualClock::default());
    clock
        .0
        .store(1_000_000, std::sync::atomic::Ordering::SeqCst);
    let s = EmbeddedStore::in_memory_with_clock(clock.clone()).unwrap();
    let l = s
        .grant_lease(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    s.put("/lease/k", b"v".to_vec(), l.id).await.unwrap();
    let mut w = s
        .watch(KeyRange::Key("/lease/k".into()), WatchOptions::default())
        .await
        .unwrap();
    // Renewing moves the deadline: an hour from the renewal.
    clock
        .0
        .fetch_add(3_000_000, std::sync::atomic::Ordering::SeqCst);
    s.keep_alive(l.id).await.unwrap();
    clock
        .0
        .fetch_add(3_000_000, std::sync::atomic::Ordering::SeqCst);
    // Not yet expired: a write on another key goes through and the key is still there.
    s.put("/other", vec![], 0).await.unwrap();
    assert!(s.get("/lease/k", None).await.unwrap().kv.is_some());
    // Past the renewed deadline: the key is deleted with an event.
    clock
        .0
        .fetch_add(700_000, std::sync::atomic::Ordering::SeqCst);
    let e = conformance::next_event(&mut w).await.unwrap();
    assert_eq!(e.kind, EventKind::Delete);
    assert!(s.get("/lease/k", None).await.unwrap().kv.is_none());
    let e = s.keep_alive(l.id).await.unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");
}

/// The admin socket's client against a store this process has open: every operation, values
/// that are not UTF-8, errors that keep their kind, a watch that ends when the store
/// closes, and a defrag while a reader is mid-transaction on the old file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_store_client_through_the_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let live = LiveStore::new(dir.path());
    assert!(live.is_live());
    let binary = vec![0xff, 0x00, 0xfe];
    let r1 = s.put("/l/bin", binary.clone(), 0).await.unwrap();
    for i in 0..200 {
        s.put(&format!("/l/k{i:03}"), vec![b'v'; 512], 0)
            .await
            .unwrap();
    }
    s.delete("/l/k000", None).await.unwrap();
    let rev = s.current_revision().await.unwrap();
    let blocking = |f: Box<dyn FnOnce() + Send>| tokio::task::spawn_blocking(f);

    let (l2, s2) = (live.clone(), s.clone());
    blocking(Box::new(move || {
        let g = l2.get("/l/bin", None).unwrap();
        assert_eq!(g.kv.unwrap().value, binary);
        assert_eq!(g.revision, rev);
        assert_eq!(l2.get("/l/bin", Some(r1)).unwrap().kv.unwrap().mod_revision, r1);
        assert!(l2.get("/l/none", None).unwrap().kv.is_none());
        let e = l2.get("/l/bin", Some(rev + 10)).unwrap_err();
        assert_eq!(e.category(), Category::Invalid, "{e}");
        let page = l2
            .list(
                "/l/k",
                &ListOptions {
                    limit: Some(10),
                    continue_after: Some("/l/k005".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page.kvs.len(), 10);
        assert_eq!(page.kvs[0].key, "/l/k006");
        assert!(page.more);
        let st = l2.status().unwrap();
        assert_eq!((st.revision, st.keys), (rev, 200));
        assert!(st.file_bytes > 0);

        // A watch from the start sees the history in order, then a live write.
        let mut w = l2
            .watch(
                "/l/",
                &WatchOptions {
                    start_revision: Some(r1),
                    prev_kv: true,
                },
            )
            .unwrap();
        let first = w.next().unwrap().unwrap();
        assert_eq!((first.kv.key.as_str(), first.kv.mod_revision), ("/l/bin", r1));
        let mut last = r1;
        for _ in 0..201 {
            let e = w.next().unwrap().unwrap();
            assert_eq!(e.kv.mod_revision, last + 1);
            last = e.kv.mod_revision;
        }
        assert_eq!(last, rev);
        drop(w);
        // The last one was the delete, with the value it removed.
        let mut w = l2
            .watch(
                "/l/k000",
                &WatchOptions {
                    start_revision: Some(rev),
                    prev_kv: true,
                },
            )
            .unwrap();
        let e = w.next().unwrap().unwrap();
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.prev_kv.unwrap().value, vec![b'v'; 512]);
        drop(w);

        let (to, current) = l2.compact(None, Some(10)).unwrap();
        assert_eq!((to, current), (rev - 10, rev));
        let e = l2.get("/l/bin", Some(r1)).unwrap_err();
        assert!(matches!(e, StoreError::Compacted { .. }), "{e:?}");
        let e = l2
            .watch("/l/", &WatchOptions { start_revision: Some(r1), prev_kv: false })
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Compacted { compact_revision, .. } if compact_revision == rev - 10),
            "{e:?}"
        );
        drop(s2);
    }))
    .await
    .unwrap();

    // Defrag while a watcher follows: reads and writes go on, on the new file.
    let mut w = s
        .watch(KeyRange::Prefix("/l/".into()), WatchOptions::default())
        .await
        .unwrap();
    for i in 0..200 {
        s.delete(&format!("/l/k{i:03}"), None).await.ok();
    }
    let now = s.current_revision().await.unwrap();
    s.compact(now).await.unwrap();
    let l2 = live.clone();
    blocking(Box::new(move || {
        let (b, a) = l2.defrag().unwrap();
        assert!(a < b, "defrag did not shrink: {b} -> {a}");
    }))
    .await
    .unwrap();
    assert_eq!(s.count("/l/").await.unwrap(), 1);
    let r = s.put("/l/after", b"x".to_vec(), 0).await.unwrap();
    assert_eq!(r, now + 1);
    // The watcher follows across the defrag.
    let mut got = None;
    while let Some(e) = w.next().await {
        let e = e.unwrap();
        if e.kv.key == "/l/after" {
            got = Some(e.kv.mod_revision);
            break;
        }
    }
    assert_eq!(got, Some(r));
    drop(w);
    drop(s);
    // Closed: nothing answers on the socket any more. (A watcher task that was reading
    // when it was dropped may hold the store a moment longer.)
    for _ in 0..1000 {
        if !live.is_live() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!live.is_live());
    let e = live.status().unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
}
