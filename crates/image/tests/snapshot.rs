//! The overlay snapshotter: layers unpacked once, mounts returned (never performed),
//! whiteouts applied in the merged view, copy-on-write isolation between containers.
//! Mounts happen only inside a private mount namespace that dies with its thread.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{gzip, in_private_mount_ns, tree, LayerBuilder};
use skiff_image::mount::MountGuard;
use skiff_image::{Category, Digest, OverlaySnapshotter, SnapshotError, Snapshotter};

fn base() -> Vec<u8> {
    LayerBuilder::new()
        .dir("etc/", 0o755, 0, 0)
        .file("etc/passwd", b"root:x:0:0\n", 0o644, 0, 0)
        .file("etc/keep", b"keep", 0o644, 0, 0)
        .dir("var/cache/", 0o755, 0, 0)
        .file("var/cache/old", b"old", 0o644, 0, 0)
        .file("data", b"base", 0o644, 0, 0)
        .finish()
}

fn top() -> Vec<u8> {
    LayerBuilder::new()
        .file("etc/.wh.passwd", b"", 0o644, 0, 0)
        .file("var/cache/.wh..wh..opq", b"", 0o644, 0, 0)
        .file("var/cache/new", b"new", 0o644, 0, 0)
        .finish()
}

fn unpacked(s: &OverlaySnapshotter) -> (Digest, Digest) {
    let (b, t) = (base(), top());
    let (bd, td) = (Digest::of(&b), Digest::of(&t));
    s.unpack(&bd, &mut &gzip(&b)[..]).unwrap();
    s.unpack(&td, &mut &t[..]).unwrap();
    (bd, td)
}

#[test]
fn overlay_passes_conformance() {
    let dirs = std::cell::RefCell::new(Vec::new());
    skiff_image::snapshot::conformance::run_all(&|| {
        let d = tempfile::tempdir().unwrap();
        let s = OverlaySnapshotter::open(d.path()).unwrap();
        dirs.borrow_mut().push(d);
        s
    });
}

#[test]
fn prepare_returns_overlay_mounts_and_remove_cleans_up() {
    let d = tempfile::tempdir().unwrap();
    let s = OverlaySnapshotter::open(d.path()).unwrap();
    let (bd, td) = unpacked(&s);
    let mounts = s.prepare("c1", &[bd.clone(), td.clone()]).unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].kind, "overlay");
    let lower = format!(
        "lowerdir={}:{}",
        s.layer_dir(&td).display(),
        s.layer_dir(&bd).display()
    );
    assert_eq!(mounts[0].options[0], lower, "top layer first");
    assert_eq!(s.mounts("c1").unwrap(), mounts);
    assert_eq!(
        s.active().unwrap(),
        vec![("c1".to_string(), vec![bd.clone(), td.clone()])]
    );

    let err = s.prepare("c1", std::slice::from_ref(&bd)).unwrap_err();
    assert_eq!(err.category(), Category::AlreadyExists);
    let err = s.prepare("c2", &[Digest::of(b"nope")]).unwrap_err();
    assert_eq!(err.category(), Category::NotFound);
    assert!(!d.path().join("active/c2").exists());
    for bad in ["", "../x", ".hidden", "a/b"] {
        assert!(
            matches!(s.prepare(bad, &[]), Err(SnapshotError::InvalidKey { .. })),
            "{bad:?}"
        );
    }

    assert!(s.remove("c1").unwrap());
    assert!(!s.remove("c1").unwrap());
    assert_eq!(s.mounts("c1").unwrap_err().category(), Category::NotFound);
    assert_eq!(s.layers().unwrap().len(), 2, "layers outlive containers");
}

#[test]
fn unpack_is_once_and_verified() {
    let d = tempfile::tempdir().unwrap();
    let s = OverlaySnapshotter::open(d.path()).unwrap();
    let (bd, _) = unpacked(&s);
    // A second unpack of the same layer does not touch the existing directory.
    let marker = s.layer_dir(&bd).join("etc/keep");
    let ino = fs::metadata(&marker).unwrap();
    s.unpack(&bd, &mut &base()[..]).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&marker).unwrap()),
        std::os::unix::fs::MetadataExt::ino(&ino)
    );
    // Content that does not hash to the claimed diff ID is not kept.
    let lie = Digest::of(b"something else");
    let err = s.unpack(&lie, &mut &base()[..]).unwrap_err();
    assert!(matches!(err, SnapshotError::DiffIdMismatch { .. }), "{err}");
    assert!(!s.has_layer(&lie).unwrap());
    assert_eq!(
        fs::read_dir(d.path().join("tmp")).unwrap().count(),
        0,
        "no leftovers"
    );
    assert!(s.remove_layer(&bd).unwrap());
    assert!(!s.has_layer(&bd).unwrap());
}

#[test]
fn merged_view_applies_whiteouts_and_containers_are_isolated() {
    let d = tempfile::tempdir().unwrap();
    let s = OverlaySnapshotter::open(d.path()).unwrap();
    let (bd, td) = unpacked(&s);
    let layers = [bd.clone(), td.clone()];
    let m1 = s.prepare("one", &layers).unwrap();
    let m2 = s.prepare("two", &layers).unwrap();
    let r1 = d.path().join("root1");
    let r2 = d.path().join("root2");
    fs::create_dir(&r1).unwrap();
    fs::create_dir(&r2).unwrap();

    in_private_mount_ns(|| {
        let g1 = MountGuard::mount(&m1, &r1).unwrap();
        let g2 = MountGuard::mount(&m2, &r2).unwrap();

        // Whiteouts: the deleted file and the opaque dir's old content are gone.
        assert!(!r1.join("etc/passwd").exists());
        assert_eq!(fs::read(r1.join("etc/keep")).unwrap(), b"keep");
        let cache: Vec<_> = fs::read_dir(r1.join("var/cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(cache, vec!["new"]);

        // Copy-on-write: writes in one container are invisible to the other and to the
        // shared layers.
        fs::write(r1.join("data"), b"changed by one").unwrap();
        fs::write(r1.join("only-one"), b"1").unwrap();
        fs::remove_file(r1.join("etc/keep")).unwrap();
        assert_eq!(fs::read(r2.join("data")).unwrap(), b"base");
        assert!(!r2.join("only-one").exists());
        assert!(r2.join("etc/keep").exists());
        assert_eq!(fs::read(s.layer_dir(&bd).join("data")).unwrap(), b"base");
        assert_eq!(
            fs::read(s.upper_dir("one").unwrap().join("data")).unwrap(),
            b"changed by one"
        );
        assert_eq!(
            fs::read_dir(s.upper_dir("two").unwrap()).unwrap().count(),
            0
        );

        let t2 = tree(&r2);
        assert!(t2.contains_key(std::path::Path::new("var/cache/new")));
        g1.unmount().unwrap();
        g2.unmount().unwrap();
    });
    // Nothing is left mounted in this (the host's) namespace.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(d.path().to_str().unwrap()));
    assert!(s.remove("one").unwrap());
    assert!(s.remove("two").unwrap());
}
