//! The Store conformance suite: every backend runs every case through `conformance!`.
//! Each case gets a fresh, empty store and must leave nothing behind but the store.

use std::time::Duration;

use skiff_store::*;

/// Bound on any single wait, so a broken backend fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn next_event(w: &mut Watcher) -> Result<Event, StoreError> {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(r)) => r,
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

pub async fn revisions_and_get(s: &dyn Store) {
    let r0 = s.current_revision().await.unwrap();
    let r1 = s.put("/a", v("1"), 0).await.unwrap();
    assert_eq!(r1, r0 + 1);
    let r2 = s.put("/a", v("2"), 0).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let r3 = s.put("/b", v("x"), 0).await.unwrap();
    assert_eq!(r3, r2 + 1);
    assert_eq!(s.current_revision().await.unwrap(), r3);

    let g = s.get("/a", None).await.unwrap();
    assert_eq!(g.revision, r3);
    let kv = g.kv.unwrap();
    assert_eq!(kv.value, v("2"));
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r2);
    assert_eq!(kv.version, 2);
    assert_eq!(kv.lease, 0);

    let old = s.get("/a", Some(r1)).await.unwrap().kv.unwrap();
    assert_eq!((old.value, old.mod_revision, old.version), (v("1"), r1, 1));
    assert!(s.get("/b", Some(r2)).await.unwrap().kv.is_none());
    assert!(s.get("/missing", None).await.unwrap().kv.is_none());

    let e = s.get("/a", Some(r3 + 10)).await.unwrap_err();
    assert_eq!(e.category(), Category::Invalid, "{e}");
}

pub async fn create_update_delete(s: &dyn Store) {
    let r1 = s.create("/k", v("a"), 0).await.unwrap();
    let e = s.create("/k", v("b"), 0).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::AlreadyExists { key, mod_revision } if key == "/k" && *mod_revision == r1),
        "{e:?}"
    );
    assert_eq!(e.category(), Category::AlreadyExists);

    let e = s.update("/k", v("b"), Some(r1 + 100), 0).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict { expected, actual, .. } if *expected == r1 + 100 && *actual == r1),
        "{e:?}"
    );
    let kv = s.update("/k", v("b"), Some(r1), 0).await.unwrap();
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.version, 2);
    assert_eq!(
        s.get("/k", None).await.unwrap().kv.unwrap().mod_revision,
        kv.mod_revision
    );
    let kv = s.update("/k", v("c"), None, 0).await.unwrap();
    assert_eq!(kv.version, 3);

    let e = s.update("/nope", v("x"), None, 0).await.unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");
    let e = s.update("/nope", v("x"), Some(5), 0).await.unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");

    let e = s.delete("/k", Some(r1)).await.unwrap_err();
    assert_eq!(e.category(), Category::Conflict, "{e}");
    let before = s.current_revision().await.unwrap();
    let prev = s.delete("/k", Some(kv.mod_revision)).await.unwrap();
    assert_eq!(prev.value, v("c"));
    assert_eq!(s.current_revision().await.unwrap(), before + 1);
    assert!(s.get("/k", None).await.unwrap().kv.is_none());
    let e = s.delete("/k", None).await.unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");

    // A re-created key starts a new incarnation.
    let r = s.create("/k", v("d"), 0).await.unwrap();
    let kv = s.get("/k", None).await.unwrap().kv.unwrap();
    assert_eq!((kv.create_revision, kv.version), (r, 1));
}

pub async fn list_prefix_limit_continue(s: &dyn Store) {
    for i in 0..10 {
        s.put(&format!("/reg/pods/p{i:02}"), v(&i.to_string()), 0)
            .await
            .unwrap();
    }
    s.put("/reg/podsx", v("other"), 0).await.unwrap();
    s.put("/reg/nodes/n1", v("n"), 0).await.unwrap();
    s.put("/reg/pods", v("exact"), 0).await.unwrap();

    let all = s.list("/reg/pods/", &ListOptions::default()).await.unwrap();
    assert_eq!(all.kvs.len(), 10);
    assert!(!all.more);
    let keys: Vec<_> = all.kvs.iter().map(|k| k.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(s.count("/reg/pods/").await.unwrap(), 10);
    assert_eq!(s.count("/reg/").await.unwrap(), 13);
    assert_eq!(s.count("/none/").await.unwrap(), 0);

    // Pages at one revision stay consistent while writes happen in between.
    let mut opts = ListOptions {
        limit: Some(3),
        ..Default::default()
    };
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.list("/reg/pods/", &opts).await.unwrap();
        pages += 1;
        assert!(page.kvs.len() <= 3);
        got.extend(page.kvs.iter().map(|k| k.key.clone()));
        if pages == 1 {
            s.put("/reg/pods/p00a", v("late"), 0).await.unwrap();
            s.delete("/reg/pods/p09", None).await.unwrap();
        }
        if !page.more {
            break;
        }
        opts.revision = Some(page.revision);
        opts.continue_after = page.kvs.last().map(|k| k.key.clone());
    }
    assert_eq!(pages, 4);
    assert_eq!(got, keys);

    let now = s.list("/reg/pods/", &ListOptions::default()).await.unwrap();
    assert_eq!(now.kvs.len(), 10);
    assert_eq!(now.kvs[1].key, "/reg/pods/p00a");
    let exact = s
        .list(
            "/reg/pods/",
            &ListOptions {
                limit: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!exact.more, "a full last page has no more");
}

pub async fn list_at_revision(s: &dyn Store) {
    let r1 = s.put("/h/a", v("a1"), 0).await.unwrap();
    s.put("/h/b", v("b1"), 0).await.unwrap();
    s.put("/h/a", v("a2"), 0).await.unwrap();
    s.delete("/h/b", None).await.unwrap();
    let r5 = s.put("/h/c", v("c1"), 0).await.unwrap();
    let at = |rev| ListOptions {
        revision: Some(rev),
        ..Default::default()
    };
    let l = s.list("/h/", &at(r1 + 1)).await.unwrap();
    let got: Vec<_> = l
        .kvs
        .iter()
        .map(|k| (k.key.as_str(), k.value.clone()))
        .collect();
    assert_eq!(got, vec![("/h/a", v("a1")), ("/h/b", v("b1"))]);
    assert_eq!(l.revision, r1 + 1);
    let l = s.list("/h/", &at(r5 - 1)).await.unwrap();
    let got: Vec<_> = l
        .kvs
        .iter()
        .map(|k| (k.key.as_str(), k.value.clone()))
        .collect();
    assert_eq!(got, vec![("/h/a", v("a2"))]);
    let l = s.list("/h/", &at(r5)).await.unwrap();
    assert_eq!(l.kvs.len(), 2);
    let mut p = at(r1 + 1);
    p.limit = Some(1);
    let l = s.list("/h/", &p).await.unwrap();
    assert_eq!((l.kvs.len(), l.more), (1, true));
    assert_eq!(l.kvs[0].key, "/h/a");
}

pub async fn txn_compare_and_set(s: &dyn Store) {
    let r1 = s.put("/t/a", v("1"), 0).await.unwrap();
    let put = |k: &str, val: &str| Op::Put {
        key: k.into(),
        value: v(val),
        lease: 0,
    };
    // All compares hold: both writes at one revision.
    let r = s
        .txn(Txn {
            compares: vec![
                Compare::ModRevision {
                    key: "/t/a".into(),
                    revision: r1,
                },
                Compare::ModRevision {
                    key: "/t/b".into(),
                    revision: 0,
                },
                Compare::Value {
                    key: "/t/a".into(),
                    value: v("1"),
                },
            ],
            success: vec![put("/t/a", "2"), put("/t/b", "1")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, r1 + 1);
    assert!(matches!(&r.results[0], OpResult::Put { prev: Some(p) } if p.value == v("1")));
    assert!(matches!(&r.results[1], OpResult::Put { prev: None }));
    let a = s.get("/t/a", None).await.unwrap().kv.unwrap();
    let b = s.get("/t/b", None).await.unwrap().kv.unwrap();
    assert_eq!(a.mod_revision, b.mod_revision);

    // A failing compare runs the failure branch only.
    let r = s
        .txn(Txn {
            compares: vec![Compare::Value {
                key: "/t/a".into(),
                value: v("1"),
            }],
            success: vec![put("/t/a", "never")],
            failure: vec![
                Op::Get { key: "/t/a".into() },
                Op::Delete { key: "/t/b".into() },
            ],
        })
        .await
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, r1 + 2);
    assert!(matches!(&r.results[0], OpResult::Get { kv: Some(kv) } if kv.value == v("2")));
    assert!(matches!(&r.results[1], OpResult::Delete { prev: Some(p) } if p.key == "/t/b"));
    assert_eq!(s.get("/t/a", None).await.unwrap().kv.unwrap().value, v("2"));

    // Reads and deletes of missing keys do not create a revision.
    let r = s
        .txn(Txn {
            compares: vec![],
            success: vec![
                Op::Get { key: "/t/a".into() },
                Op::Delete {
                    key: "/t/missing".into(),
                },
            ],
            failure: vec![],
        })
        .await
        .unwrap();
    assert_eq!(r.revision, r1 + 2);
    assert_eq!(s.current_revision().await.unwrap(), r1 + 2);

    // Writing one key twice in a transaction is refused and writes nothing.
    let e = s
        .txn(Txn {
            compares: vec![],
            success: vec![put("/t/c", "1"), put("/t/c", "2")],
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.category(), Category::Invalid, "{e}");
    assert!(s.get("/t/c", None).await.unwrap().kv.is_none());
    assert_eq!(s.current_revision().await.unwrap(), r1 + 2);
}

pub async fn watch_from_revision(s: &dyn Store) {
    let r1 = s.put("/w/a", v("1"), 0).await.unwrap();
    s.put("/x/other", v("1"), 0).await.unwrap();
    s.put("/w/a", v("2"), 0).await.unwrap();
    s.delete("/w/a", None).await.unwrap();

    let mut w = s
        .watch(
            KeyRange::Prefix("/w/".into()),
            WatchOptions {
                start_revision: Some(r1),
                prev_kv: true,
            },
        )
        .await
        .unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(
        (e.kind, e.kv.mod_revision, e.kv.value.clone()),
        (EventKind::Put, r1, v("1"))
    );
    assert!(e.prev_kv.is_none());
    let e = next_event(&mut w).await.unwrap();
    assert_eq!((e.kind, e.kv.mod_revision), (EventKind::Put, r1 + 2));
    assert_eq!(e.prev_kv.unwrap().value, v("1"));
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.kv.mod_revision),
        (EventKind::Delete, "/w/a", r1 + 3)
    );
    assert_eq!(e.prev_kv.unwrap().value, v("2"));

    // Then live events, in order, only for the range.
    let mut want = Vec::new();
    for i in 0..20 {
        s.put("/x/ignored", v("x"), 0).await.unwrap();
        want.push(s.put(&format!("/w/k{i}"), v("v"), 0).await.unwrap());
    }
    for rev in want {
        let e = next_event(&mut w).await.unwrap();
        assert_eq!(e.kv.mod_revision, rev);
        assert!(e.prev_kv.is_none());
    }

    // A watch without a start revision sees only later events; a key watch only its key.
    let mut live = s
        .watch(KeyRange::Key("/w/k3".into()), WatchOptions::default())
        .await
        .unwrap();
    s.put("/w/k2", v("no"), 0).await.unwrap();
    let r = s.put("/w/k3", v("yes"), 0).await.unwrap();
    let e = next_event(&mut live).await.unwrap();
    assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/w/k3", r));
    assert!(e.prev_kv.is_none(), "prev_kv only when asked");
}

pub async fn compaction(s: &dyn Store) {
    let r1 = s.put("/c/a", v("1"), 0).await.unwrap();
    s.put("/c/a", v("2"), 0).await.unwrap();
    s.put("/c/b", v("1"), 0).await.unwrap();
    s.delete("/c/b", None).await.unwrap();
    let r5 = s.put("/c/a", v("3"), 0).await.unwrap();
    s.put("/c/c", v("1"), 0).await.unwrap();

    s.compact(r5).await.unwrap();
    let e = s.get("/c/a", Some(r1)).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Compacted { requested, compact_revision } if requested == r1 && compact_revision == r5),
        "{e:?}"
    );
    assert_eq!(e.category(), Category::Compacted);
    let e = s
        .list(
            "/c/",
            &ListOptions {
                revision: Some(r5 - 1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.category(), Category::Compacted, "{e}");
    let e = s
        .watch(
            KeyRange::Prefix("/c/".into()),
            WatchOptions {
                start_revision: Some(r1),
                prev_kv: false,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Compacted { compact_revision, .. } if compact_revision == r5),
        "{e:?}"
    );
    // The compact revision itself and everything after it are still there.
    assert_eq!(
        s.get("/c/a", Some(r5)).await.unwrap().kv.unwrap().value,
        v("3")
    );
    assert!(s.get("/c/b", Some(r5)).await.unwrap().kv.is_none());
    let l = s
        .list(
            "/c/",
            &ListOptions {
                revision: Some(r5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(l.kvs.len(), 1);
    let mut w = s
        .watch(
            KeyRange::Prefix("/c/".into()),
            WatchOptions {
                start_revision: Some(r5 + 1),
                prev_kv: true,
            },
        )
        .await
        .unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/c/c", r5 + 1));
    let e = s.compact(r1).await.unwrap_err();
    assert_eq!(e.category(), Category::Compacted, "{e}");
    // Current values survive compaction.
    assert_eq!(s.get("/c/a", None).await.unwrap().kv.unwrap().version, 3);
}

pub async fn leases(s: &dyn Store) {
    let e = s.put("/l/x", v("1"), 987654321).await.unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");
    let e = s.keep_alive(987654321).await.unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e:?}");

    // Revoking deletes the lease's keys.
    let l = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.put("/l/a", v("1"), l.id).await.unwrap();
    s.put("/l/b", v("1"), l.id).await.unwrap();
    s.put("/l/keep", v("1"), 0).await.unwrap();
    assert_eq!(s.get("/l/a", None).await.unwrap().kv.unwrap().lease, l.id);
    s.keep_alive(l.id).await.unwrap();
    s.revoke_lease(l.id).await.unwrap();
    assert_eq!(s.count("/l/").await.unwrap(), 1);
    let e = s.revoke_lease(l.id).await.unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");

    // Expiry deletes them too, with delete events.
    let l = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    let mut w = s
        .watch(KeyRange::Prefix("/l/ttl".into()), WatchOptions::default())
        .await
        .unwrap();
    let r = s.put("/l/ttl", v("1"), l.id).await.unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!((e.kind, e.kv.mod_revision), (EventKind::Put, r));
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(e.kind, EventKind::Delete);
    assert!(e.kv.mod_revision > r);
    assert!(s.get("/l/ttl", None).await.unwrap().kv.is_none());
    assert_eq!(
        s.get("/l/keep", None).await.unwrap().kv.unwrap().value,
        v("1")
    );
}

pub async fn concurrent_writers(s: &dyn Store) {
    let start = s.current_revision().await.unwrap();
    let mut w = s
        .watch(KeyRange::Prefix("/cc/".into()), WatchOptions::default())
        .await
        .unwrap();
    const WRITERS: usize = 16;
    const EACH: usize = 25;
    let mut revs: Vec<Revision> = Vec::new();
    let mut futs = Vec::new();
    for wi in 0..WRITERS {
        futs.push(async move {
            let mut out = Vec::new();
            for i in 0..EACH {
                out.push(
                    s.create(&format!("/cc/{wi}/{i}"), vec![7; 1024], 0)
                        .await
                        .unwrap(),
                );
            }
            out
        });
    }
    // Run the writers concurrently on this task: the backend sees them all at once.
    let results = join_all(futs).await;
    for r in results {
        revs.extend(r);
    }
    revs.sort();
    let n = WRITERS * EACH;
    assert_eq!(revs.len(), n);
    let want: Vec<Revision> = (start + 1..=start + n as i64).collect();
    assert_eq!(revs, want, "every write got its own, consecutive revision");
    assert_eq!(s.count("/cc/").await.unwrap(), n as i64);
    for rev in want {
        let e = next_event(&mut w).await.unwrap();
        assert_eq!(e.kv.mod_revision, rev, "watch in revision order, no gaps");
    }
}

/// Minimal join_all so the tests need no extra crate.
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

/// `conformance!(make)` expands to one test per case; `make` is an async expression
/// returning `(impl Store, guard)`, the guard keeping the backend alive (temp dir, etcd).
#[macro_export]
macro_rules! conformance {
    ($make:expr) => {
        $crate::conformance!(@cases $make;
            revisions_and_get, create_update_delete, list_prefix_limit_continue,
            list_at_revision, txn_compare_and_set, watch_from_revision, compaction, leases,
            concurrent_writers);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make.await;
                tokio::time::timeout(
                    std::time::Duration::from_secs(120),
                    conformance::$case(&store),
                )
                .await
                .expect("conformance case timed out");
            }
        )*
    };
}
