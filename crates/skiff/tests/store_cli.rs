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

    // While another process has the store open, commands say why they cannot run…
    let live = EmbeddedStore::open(&data, &OpenOptions::default()).unwrap();
    let e = err(&skiff(&data, &["compact", "--keep", "1"]));
    assert!(e.contains("in use"), "{e}");
    let e = err(&skiff(&data, &["list"]));
    assert!(e.contains("in use"), "{e}");
    // …except snapshot, which the live store serves through its admin socket.

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
