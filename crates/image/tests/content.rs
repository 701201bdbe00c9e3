//! The content store conformance suite on the filesystem backend, plus crash behaviour.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use skiff_image::content::conformance;
use skiff_image::{ContentStore, Digest, FsContentStore};

#[test]
fn fs_store_passes_conformance() {
    let dirs = std::cell::RefCell::new(Vec::new());
    conformance::run_all(&|| {
        let d = tempfile::tempdir().unwrap();
        let s = FsContentStore::open(d.path()).unwrap();
        dirs.borrow_mut().push(d);
        s
    });
}

#[test]
fn blobs_are_laid_out_and_staging_is_invisible() {
    let d = tempfile::tempdir().unwrap();
    let s = FsContentStore::open(d.path()).unwrap();
    let info = s.put(b"layer").unwrap();
    assert!(d
        .path()
        .join("blobs/sha256")
        .join(info.digest.hex())
        .is_file());
    // A writer that never commits (a crash mid-write) leaves only an ingest file, which
    // is not a blob and which prune-time cleaning removes.
    let mut w = s.writer().unwrap();
    w.write_all(b"partial").unwrap();
    std::mem::forget(w);
    assert_eq!(s.list().unwrap(), vec![info.digest]);
    assert_eq!(s.stat(&Digest::of(b"partial")).unwrap(), None);
    assert_eq!(
        std::fs::read_dir(d.path().join("ingest")).unwrap().count(),
        1
    );
    assert_eq!(s.clean_ingest(std::time::Duration::ZERO).unwrap(), 1);
}

#[test]
fn corrupted_blob_is_detected_on_read() {
    let d = tempfile::tempdir().unwrap();
    let s = FsContentStore::open(d.path()).unwrap();
    let info = s.put(b"{\"a\":1}").unwrap();
    std::fs::write(s.blob_path(&info.digest), b"{\"a\":2}").unwrap();
    let err = s.read_all(&info.digest).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}
