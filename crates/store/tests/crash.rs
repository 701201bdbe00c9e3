//! Crash safety of the embedded store: a child process writes with many concurrent
//! writers and is killed with SIGKILL at a random moment, over and over. After each kill
//! the store must reopen with every acknowledged write, revisions strictly increasing
//! without holes, and a watcher resuming from its last revision must see every event
//! once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_store::*;

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD";
const WRITERS: usize = 32;
const ROUNDS: usize = 8;

fn value_for(key: &str) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    v.resize(1024, b'.');
    v
}

/// The child: the test below re-executes itself with CHILD_ENV set to run this.
fn crash_child(dir: String) {
    let round: usize = std::env::var("SKIFF_STORE_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = EmbeddedStore::open(Path::new(&dir), &OpenOptions::default()).unwrap();
        println!("READY {}", s.current_revision().await.unwrap());
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0.. {
                    let key = format!("/crash/{round}/{w}/{seq}");
                    let rev = s.create(&key, value_for(&key), 0).await.unwrap();
                    // Acknowledged: the parent holds us to it from here on.
                    println!("ACK {key} {rev}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// A small deterministic-per-run PRNG (xorshift), seeded from the clock and pid.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return crash_child(dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    let mut rng = Rng(seed | 1);
    eprintln!("crash test seed {seed}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Everything the watcher has seen so far, across restarts.
    let mut watched: i64 = 1;
    let mut total_acked = 0;
    let mut rounds_with_log = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "acknowledged_writes_survive_sigkill",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("SKIFF_STORE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it get going (a few acknowledged writes), then kill it at a random moment.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        while lines
            .iter()
            .filter(|l: &&String| l.starts_with("ACK"))
            .count()
            < 20
        {
            let l = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("child made no progress");
            lines.push(l);
        }
        // Even rounds die before the first fold (a second in), so what they acknowledged
        // is only in the write-ahead log; odd rounds die after one or more folds, each of
        // which started the log over from its beginning, over the records of the last lap.
        let ms = if round % 2 == 0 {
            rng.next() % 300
        } else {
            1000 + rng.next() % 1500
        };
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());

        let acked: HashMap<String, i64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ACK "))
            .map(|l| {
                let (k, r) = l.rsplit_once(' ').unwrap();
                (k.to_string(), r.parse().unwrap())
            })
            .collect();
        total_acked += acked.len();

        watched = rt.block_on(async {
            let s = EmbeddedStore::open(dir.path(), &OpenOptions::default()).unwrap();
            // Acknowledged writes left only in the log: reopening must replay it.
            if s.replayed_at_open() > 0 {
                rounds_with_log += 1;
            }
            for (key, rev) in &acked {
                let kv = s
                    .get(key, None)
                    .await
                    .unwrap()
                    .unwrap_or_else_panic(key, *rev);
                assert_eq!(kv.mod_revision, *rev, "{key}");
                assert_eq!(kv.value, value_for(key), "{key}");
            }
            let current = s.current_revision().await.unwrap();
            // Resume the watch where the last round's watcher stopped.
            let mut w = s
                .watch(
                    KeyRange::Prefix("/crash/".into()),
                    WatchOptions {
                        start_revision: Some(watched + 1),
                        prev_kv: false,
                    },
                )
                .await
                .unwrap();
            let mut last = watched;
            let mut seen_acked = 0;
            while last < current {
                let e = tokio::time::timeout(Duration::from_secs(30), w.next())
                    .await
                    .expect("watch stalled")
                    .expect("watch ended")
                    .unwrap();
                assert_eq!(
                    e.kv.mod_revision,
                    last + 1,
                    "round {round}: gap or duplicate after revision {last}"
                );
                last = e.kv.mod_revision;
                if acked.get(&e.kv.key) == Some(&last) {
                    seen_acked += 1;
                }
            }
            assert_eq!(seen_acked, acked.len(), "every acked write is an event");
            last
        });
        eprintln!(
            "round {round}: {} acked, store at revision {watched}",
            acked.len()
        );
    }
    assert!(total_acked >= ROUNDS * 20);
    assert!(rounds_with_log > 0, "no round exercised log replay");
}

trait OrPanic {
    fn unwrap_or_else_panic(self, key: &str, rev: i64) -> KeyValue;
}
impl OrPanic for GetResult {
    fn unwrap_or_else_panic(self, key: &str, rev: i64) -> KeyValue {
        match self.kv {
            Some(kv) => kv,
            None => panic!("acknowledged write {key} at revision {rev} was lost"),
        }
    }
}
