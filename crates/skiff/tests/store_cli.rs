//! `skiff store …` against real store files: the admin commands, and clear errors for a
//! missing data dir, a foreign file and a store in use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use skiff_store::{EmbeddedStore, OpenOptions, Store};

fn skiff(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("store")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn err(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected a failure");
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn populate(dir: &Path) -> EmbeddedStore {
    let s = EmbeddedStore::open(dir, &OpenOptions::default()).unwrap();
    rt().block_on(async {
        for i in 0..5 {
            s.put(
                &format!("/registry/pods/p{i}"),
                format!("pod{i}").into_bytes(),
                0,
            )
            .await
            .unwrap();
        }
        s.put("/registry/pods/p0", b"pod0-v2".to_vec(), 0)
            .await
            .unwrap();
    });
    s
}

#[test]
fn bad_data_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let e = err(&skiff(&tmp.path().join("missing"), &["list"]));
    assert!(e.contains("does not exist"), "{e}");
    std::fs::write(tmp.path().join("state.redb"), b"PK\x03\x04 a zip file").unwrap();
    let e = err(&skiff(tmp.path(), &["get", "/x"]));
    assert!(e.contains("not a skiff store"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = err(&skiff(empty.path(), &["status"]));
    assert!(e.contains("no store file"), "{e}");
}

#[test]
fn read_commands_then_snapshot_while_the_store_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    drop(populate(&data));
    let out = ok(&skiff(&data, &["get", "/registry/pods/p0"]));
    assert_eq!(out, "pod0-v2");
    let out = ok(&skiff(
        &data,
        &["get", "/registry/pods/p0", "--rev", "2", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["value"], "pod0");
    assert_eq!(v["mod_revision"], 2);
    let e = err(&skiff(&data, &["get", "/registry/pods/nope"]));
    assert!(e.contains("not found"), "{e}");
    let out = ok(&skiff(
        &data,
        &["list", "/registry/pods/", "--keys-only", "--limit", "2"],
    ));
    assert_eq!(out, "/registry/pods/p0\n/registry/pods/p1\n");
    let out = ok(&skiff(&data, &["status"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["revision"].as_i64(), v["keys"].as_i64()),
        (Some(7), Some(5))
    );

    // While another process has the store open, the commands go through it.
    let live = EmbeddedStore::open(&data, &OpenOptions::default()).unwrap();
    let out = ok(&skiff(&data, &["list", "/registry/pods/", "--keys-only"]));
    assert_eq!(out.lines().count(), 5, "{out}");
    let out = ok(&skiff(&data, &["get", "/registry/pods/p0"]));
    assert_eq!(out, "pod0-v2");

    let snap = tmp.path().join("snap.db");
    let out = ok(&skiff(&data, &["snapshot", snap.to_str().unwrap()]));
    assert!(out.contains("at revision 7"), "{out}");
    drop(live);

    let restored = tmp.path().join("restored");
    ok(&skiff(&restored, &["restore", snap.to_str().unwrap()]));
    assert_eq!(ok(&skiff(&restored, &["get", "/registry/pods/p3"])), "pod3");
    let e = err(&skiff(&restored, &["restore", snap.to_str().unwrap()]));
    assert!(e.contains("already has a store"), "{e}");
}

#[test]
fn compact_defrag_and_watch() {
    let tmp = tempfile::tempdir().unwrap();
    drop(populate(tmp.path()));
    let out = ok(&skiff(tmp.path(), &["compact", "--keep", "1"]));
    assert!(out.contains("compacted to revision 6"), "{out}");
    let e = err(&skiff(
        tmp.path(),
        &["get", "/registry/pods/p0", "--rev", "2"],
    ));
    assert!(e.contains("compacted"), "{e}");
    ok(&skiff(tmp.path(), &["defrag"]));
    assert_eq!(
        ok(&skiff(tmp.path(), &["get", "/registry/pods/p4"])),
        "pod4"
    );

    let mut w = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["store", "--data-dir"])
        .arg(tmp.path())
        .args(["watch", "/registry/", "--rev", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    w.kill().unwrap();
    w.wait().unwrap();
    assert_eq!(first, "PUT 6 /registry/pods/p4 pod4");
    assert_eq!(second, "PUT 7 /registry/pods/p0 pod0-v2");
}

const LIVE_CHILD_ENV: &str = "SKIFF_STORE_LIVE_CHILD";
const LIVE_WRITERS: usize = 4;

/// The live store's owner (a stand-in for a server), run in a child process: the test
/// below re-executes itself with LIVE_CHILD_ENV set. It opens the store, keeps writing
/// `/live/<writer>/<seq>` and prints `ACK key revision` for each acknowledged write, until
/// its stdin closes (or a minute passes, so it cannot outlive a failed parent for long).
fn live_child(dir: String) {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        let _ = stop_tx.send(());
    });
    let rt = rt();
    rt.block_on(async move {
        let s = EmbeddedStore::open(Path::new(&dir), &OpenOptions::default()).unwrap();
        println!("READY {}", s.current_revision().await.unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..LIVE_WRITERS {
            let (s, stop) = (s.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("/live/{w}/{seq}");
                    let rev = s.create(&key, format!("v-{w}-{seq}").into_bytes(), 0).await;
                    println!("ACK {key} {}", rev.unwrap());
                    seq += 1;
                    // Pace the writes so the store's history stays small.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }));
        }
        let _ = tokio::task::spawn_blocking(move || {
            stop_rx.recv_timeout(std::time::Duration::from_secs(60))
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        println!("DONE {}", s.current_revision().await.unwrap());
    });
}

type Acks = std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>;

/// The acknowledged writes so far, once there are at least `n`.
fn acks_at_least(acks: &Acks, n: usize) -> Vec<(String, i64)> {
    loop {
        {
            let a = acks.lock().unwrap();
            if a.len() >= n {
                return a.clone();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn admin_commands_on_a_live_store_see_its_writes() {
    if let Ok(dir) = std::env::var(LIVE_CHILD_ENV) {
        return live_child(dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "admin_commands_on_a_live_store_see_its_writes",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(LIVE_CHILD_ENV, &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kills the child if an assertion fails half way.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let stdin = child.stdin.take().unwrap();
    let mut child = Reap(child);
    let ready = lines
        .by_ref()
        .map(|l| l.unwrap())
        // libtest may print its own text before ours on the same line.
        .find_map(|l| l.find("READY ").map(|i| l[i..].to_string()))
        .expect("the child never opened the store");
    assert_eq!(ready, "READY 1");
    let acks: Acks = Default::default();
    let done = std::sync::Arc::new(std::sync::Mutex::new(None));
    let reader = {
        let (acks, done) = (acks.clone(), done.clone());
        std::thread::spawn(move || {
            for l in lines.map_while(|l| l.ok()) {
                let Some(l) = ["ACK ", "DONE "]
                    .iter()
                    .find_map(|p| l.find(p).map(|i| l[i..].to_string()))
                else {
                    continue;
                };
                let f: Vec<&str> = l.split(' ').collect();
                match f[..] {
                    ["ACK", key, rev] => acks
                        .lock()
                        .unwrap()
                        .push((key.to_string(), rev.parse().unwrap())),
                    ["DONE", rev] => *done.lock().unwrap() = Some(rev.parse::<i64>().unwrap()),
                    _ => {}
                }
            }
        })
    };

    // get: the value and metadata of an acknowledged write.
    let before = acks_at_least(&acks, 20);
    let (k0, r0) = before[0].clone();
    let w0: Vec<&str> = k0.split('/').collect();
    assert_eq!(
        ok(&skiff(&data, &["get", &k0])),
        format!("v-{}-{}", w0[2], w0[3])
    );
    let v: serde_json::Value =
        serde_json::from_str(ok(&skiff(&data, &["get", &k0, "--json"])).trim()).unwrap();
    assert_eq!(v["mod_revision"].as_i64(), Some(r0));
    assert_eq!(v["version"].as_i64(), Some(1));
    let e = err(&skiff(&data, &["get", "/live/none"]));
    assert!(e.contains("not found"), "{e}");

    // list and status: every write acknowledged before the command is there.
    let before = acks.lock().unwrap().clone();
    let listed = ok(&skiff(&data, &["list", "/live/", "--keys-only"]));
    let listed: std::collections::HashSet<&str> = listed.lines().collect();
    for (k, _) in &before {
        assert!(listed.contains(k.as_str()), "list lacks acknowledged {k}");
    }
    let max_before = before.iter().map(|(_, r)| *r).max().unwrap();
    let st: serde_json::Value =
        serde_json::from_str(ok(&skiff(&data, &["status"])).trim()).unwrap();
    assert!(st["revision"].as_i64().unwrap() >= max_before, "{st}");

    // watch from revision 2: the history, then live writes, in revision order without a
    // gap (every write is one create, so revisions are consecutive).
    let at_start = acks.lock().unwrap().len();
    let mut w = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["store", "--data-dir"])
        .arg(&data)
        .args(["watch", "/live/", "--rev", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut wlines = BufReader::new(w.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Up to a write acknowledged after the watch started, so it was delivered live.
    let target = acks_at_least(&acks, at_start + 30)[at_start + 29].1;
    while seen.last().is_none_or(|(r, _): &(i64, String)| *r < target) {
        let l = wlines.next().expect("watch ended early").unwrap();
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f[0], "PUT", "{l}");
        seen.push((f[1].parse().unwrap(), f[2].to_string()));
    }
    w.kill().unwrap();
    w.wait().unwrap();
    for (i, (rev, _)) in seen.iter().enumerate() {
        assert_eq!(
            *rev,
            i as i64 + 2,
            "watch events out of order or with a gap"
        );
    }
    let by_rev: std::collections::HashMap<i64, String> = acks
        .lock()
        .unwrap()
        .iter()
        .map(|(k, r)| (*r, k.clone()))
        .collect();
    for (rev, key) in &seen {
        assert_eq!(
            by_rev.get(rev),
            Some(key),
            "event at {rev} is not that write"
        );
    }

    // compact: older revisions are gone, the latest values stay.
    let out = ok(&skiff(&data, &["compact", "--keep", "5"]));
    assert!(out.starts_with("compacted to revision "), "{out}");
    let e = err(&skiff(&data, &["get", &k0, "--rev", &r0.to_string()]));
    assert!(e.contains("compacted"), "{e}");
    let e = err(&skiff(&data, &["compact", &r0.to_string()]));
    assert!(e.contains("compacted"), "{e}");

    // defrag: the store is rewritten under the running writers, which go on.
    let out = ok(&skiff(&data, &["defrag"]));
    assert!(out.starts_with("defragmented "), "{out}");
    let n = acks.lock().unwrap().len();
    let after = acks_at_least(&acks, n + 20);
    let (kn, rn) = after[n + 19].clone();
    let v: serde_json::Value =
        serde_json::from_str(ok(&skiff(&data, &["get", &kn, "--json"])).trim()).unwrap();
    assert_eq!(v["mod_revision"].as_i64(), Some(rn));
    assert_eq!(
        ok(&skiff(&data, &["get", &k0])),
        format!("v-{}-{}", w0[2], w0[3])
    );

    // restore refuses a live store.
    let snap = tmp.path().join("live.db");
    let out = ok(&skiff(&data, &["snapshot", snap.to_str().unwrap()]));
    assert!(out.contains(" at revision "), "{out}");
    let e = err(&skiff(&data, &["restore", snap.to_str().unwrap()]));
    assert!(e.contains("in use by a running process"), "{e}");

    // Stop the owner; the store, closed, is opened directly and has every write.
    drop(stdin);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    reader.join().unwrap();
    let last = done.lock().unwrap().expect("the child did not finish");
    let all = acks.lock().unwrap().clone();
    assert_eq!(all.iter().map(|(_, r)| *r).max(), Some(last));
    let st: serde_json::Value =
        serde_json::from_str(ok(&skiff(&data, &["status"])).trim()).unwrap();
    assert_eq!(st["revision"].as_i64(), Some(last));
    assert_eq!(st["keys"].as_i64(), Some(all.len() as i64));
}

/// A `skiff server` (control plane only) on a free loopback port with `dir` as its data dir;
/// killed on drop.
struct SkiffServer(std::process::Child);

impl SkiffServer {
    fn start(dir: &Path) -> SkiffServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--disable-agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let server = SkiffServer(child);
        let mut log = Vec::new();
        let mut lines = BufReader::new(stderr).lines();
        // The server prints "… API on https://…" once it serves, or exits with an error.
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("API on ") => break,
                Some(Ok(l)) => log.push(l),
                _ => panic!("skiff server did not start:\n{}", log.join("\n")),
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        server
    }

    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for SkiffServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(dir: &Path) -> serde_json::Value {
    serde_json::from_str(ok(&skiff(dir, &["status"])).trim()).unwrap()
}

/// `--data-dir` takes the server's data dir, the one a user knows, and uses its `store/`:
/// through `store/admin.sock` while the server runs, and directly once it has stopped.
#[test]
fn server_data_dir_while_running_and_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let server = SkiffServer::start(&data);
    assert!(
        data.join("store").join(skiff_store::ADMIN_SOCKET).exists(),
        "the running server has no admin socket in its store/"
    );

    // Running: the store is locked by the server, so this answer came over its socket.
    let live = status(&data);
    assert!(live["revision"].as_i64().unwrap() > 1, "{live}");
    assert!(live["keys"].as_i64().unwrap() > 0, "{live}");
    let ns = ok(&skiff(
        &data,
        &["list", "/registry/core/namespaces/", "--keys-only"],
    ));
    assert!(
        ns.lines().any(|k| k.ends_with("/default")),
        "no default namespace in:\n{ns}"
    );
    let snap = tmp.path().join("server.db");
    let out = ok(&skiff(&data, &["snapshot", snap.to_str().unwrap()]));
    assert!(out.contains(" at revision "), "{out}");
    let e = err(&skiff(&data, &["restore", snap.to_str().unwrap()]));
    assert!(e.contains("in use by a running process"), "{e}");

    // Stopped: opened directly, with everything the server had written.
    server.stop();
    let stopped = status(&data);
    assert!(
        stopped["revision"].as_i64() >= live["revision"].as_i64(),
        "{stopped} after {live}"
    );
    // (Opening a stopped store folds its log, so only the file size may differ.)
    let direct = status(&data.join("store"));
    for f in ["revision", "keys", "compact_revision"] {
        assert_eq!(stopped[f], direct[f], "{f}: the same store either way");
    }

    // restore into a server data dir with an empty store/ fills that store/.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(fresh.join("store")).unwrap();
    let out = ok(&skiff(&fresh, &["restore", snap.to_str().unwrap()]));
    assert!(out.contains("fresh/store"), "{out}");
    assert!(fresh.join("store").join(skiff_store::STORE_FILE).exists());
    assert!(status(&fresh)["keys"].as_i64().unwrap() > 0);
}
