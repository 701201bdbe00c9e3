//! Layer unpacking into overlay lower dirs: every entry kind, metadata, whiteouts, and
//! refusal of names that would escape the target. Runs as root (chown, mknod, trusted.*).

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::{gzip, zstd, LayerBuilder};
use skiff_image::unpack::{scan_layer, unpack_layer, UnpackError, OPAQUE_XATTR};
use skiff_image::{Category, Digest};

fn full_layer() -> Vec<u8> {
    LayerBuilder::new()
        .dir("etc/", 0o755, 0, 0)
        .file("etc/hostname", b"skiff\n", 0o644, 0, 0)
        .dir("home/user/", 0o700, 1000, 1000)
        .file("home/user/.profile", b"export A=1\n", 0o600, 1000, 1000)
        .file("bin/su", b"#!suid\n", 0o4755, 0, 0)
        .dir("tmp/", 0o1777, 0, 0)
        .symlink("bin/sh", "busybox")
        .symlink("etc/abs", "/etc/hostname")
        .file("bin/busybox", b"ELF...", 0o755, 0, 0)
        .hardlink("bin/ls", "bin/busybox")
        .device("dev/null", true, 1, 3)
        .device("dev/loop0", false, 7, 0)
        .fifo("run/fifo")
        .file_xattr(
            "etc/cap",
            b"x",
            &[
                ("user.skiff", b"yes"),
                ("trusted.overlay.redirect", b"/etc"),
            ],
        )
        .finish()
}

#[test]
fn unpack_keeps_every_kind_and_metadata() {
    let layer = full_layer();
    let want = Digest::of(&layer);
    for (name, blob) in [
        ("plain", layer.clone()),
        ("gzip", gzip(&layer)),
        ("zstd", zstd(&layer)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let info = unpack_layer(&blob[..], dir.path()).unwrap();
        assert_eq!(
            info.diff_id, want,
            "{name}: diff ID is the uncompressed digest"
        );
        let r = dir.path();
        let md = |p: &str| fs::symlink_metadata(r.join(p)).unwrap();

        assert_eq!(fs::read(r.join("etc/hostname")).unwrap(), b"skiff\n");
        assert_eq!(md("home/user").mode() & 0o7777, 0o700);
        assert_eq!((md("home/user").uid(), md("home/user").gid()), (1000, 1000));
        assert_eq!(md("home/user/.profile").uid(), 1000);
        assert_eq!(
            md("bin/su").mode() & 0o7777,
            0o4755,
            "setuid survives chown"
        );
        assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
        assert_eq!(
            fs::read_link(r.join("bin/sh")).unwrap().to_str(),
            Some("busybox")
        );
        assert_eq!(
            fs::read_link(r.join("etc/abs")).unwrap().to_str(),
            Some("/etc/hostname"),
            "absolute symlink targets are kept verbatim"
        );
        assert_eq!(md("bin/ls").ino(), md("bin/busybox").ino(), "hard link");
        assert!(md("dev/null").file_type().is_char_device());
        assert_eq!(md("dev/null").rdev(), nix::sys::stat::makedev(1, 3));
        assert!(md("dev/loop0").file_type().is_block_device());
        assert_eq!(md("dev/loop0").gid(), 6);
        assert!(md("run/fifo").file_type().is_fifo());
        assert_eq!(md("etc/hostname").mtime(), 1_600_000_000);
        assert_eq!(
            md("etc").mtime(),
            1_600_000_000,
            "dir mtime set after children"
        );
        assert_eq!(
            xattr::get(r.join("etc/cap"), "user.skiff")
                .unwrap()
                .as_deref(),
            Some(&b"yes"[..])
        );
        assert_eq!(
            xattr::get(r.join("etc/cap"), "trusted.overlay.redirect").unwrap(),
            None,
            "a layer cannot forge overlay metadata"
        );
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let layer = LayerBuilder::new()
        .file("etc/.wh.passwd", b"", 0o644, 0, 0)
        .dir("var/cache/", 0o755, 0, 0)
        .file("var/cache/.wh..wh..opq", b"", 0o644, 0, 0)
        .file("var/cache/new", b"n", 0o644, 0, 0)
        .file("x/.wh..wh.plnk", b"", 0o644, 0, 0)
        .finish();
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&layer[..], dir.path()).unwrap();
    let r = dir.path();
    let wh = fs::symlink_metadata(r.join("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0, "whiteout is 0:0");
    assert!(!r.join("etc/.wh.passwd").exists());
    assert_eq!(
        xattr::get(r.join("var/cache"), OPAQUE_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!r.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(fs::read(r.join("var/cache/new")).unwrap(), b"n");
    assert_eq!(
        fs::read_dir(r.join("x")).unwrap().count(),
        0,
        "AUFS metadata dropped"
    );
}

#[test]
fn escaping_entries_are_refused_and_nothing_leaks() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot name",
            LayerBuilder::new()
                .raw(tar::EntryType::Regular, "../victim", "", b"pwned")
                .finish(),
        ),
        (
            "dotdot inside name",
            LayerBuilder::new()
                .raw(tar::EntryType::Regular, "a/../../victim", "", b"pwned")
                .finish(),
        ),
        (
            "hardlink out",
            LayerBuilder::new()
                .raw(tar::EntryType::Link, "link", "../victim", b"")
                .finish(),
        ),
        (
            "write through symlink",
            LayerBuilder::new()
                .symlink("esc", outside.path().to_str().unwrap())
                .file("esc/victim", b"pwned", 0o644, 0, 0)
                .finish(),
        ),
        (
            "write through relative symlink",
            LayerBuilder::new()
                .symlink("up", "../../../../../../..")
                .file("up/tmp/victim", b"pwned", 0o644, 0, 0)
                .finish(),
        ),
        (
            "hardlink through symlink",
            LayerBuilder::new()
                .symlink("esc", outside.path().to_str().unwrap())
                .hardlink("h", "esc/victim")
                .finish(),
        ),
    ];
    fs::write(&victim, b"original").unwrap();
    for (what, layer) in cases {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("layer");
        fs::create_dir(&target).unwrap();
        let err = unpack_layer(&layer[..], &target).expect_err(what);
        assert_eq!(err.category(), Category::Invalid, "{what}: {err}");
        assert!(
            matches!(
                err,
                UnpackError::UnsafePath { .. } | UnpackError::DanglingHardlink { .. }
            ),
            "{what}: {err}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"original", "{what}");
        assert!(!parent.path().join("victim").exists(), "{what}");
        if what.starts_with("dotdot") || what == "hardlink out" {
            assert!(scan_layer(&layer[..]).is_err(), "scan refuses {what} too");
        }
    }
}

#[test]
fn truncated_layers_are_corrupt() {
    let layer = full_layer();
    let gz = gzip(&layer);
    let dir = tempfile::tempdir().unwrap();
    let err = unpack_layer(&gz[..gz.len() / 2], dir.path()).unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");

    // A plain tar cut inside a file's data is corrupt, scanned or unpacked.
    let one = LayerBuilder::new()
        .file("a", b"fresh\n", 0o644, 0, 0)
        .finish();
    let cut = &one[..512 + 3];
    assert!(matches!(scan_layer(cut), Err(UnpackError::Corrupt { .. })));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        unpack_layer(cut, dir.path()),
        Err(UnpackError::Corrupt { .. })
    ));
}

#[test]
fn layer_without_end_blocks_is_accepted_like_go_tar() {
    // umoci 0.4's `insert` ends the layer right after the last file's data.
    let one = LayerBuilder::new()
        .file("a", b"fresh\n", 0o644, 0, 0)
        .finish();
    let short = &one[..512 + 6];
    let dir = tempfile::tempdir().unwrap();
    let info = unpack_layer(short, dir.path()).unwrap();
    assert_eq!(
        info.diff_id,
        Digest::of(short),
        "diff ID covers the real bytes only"
    );
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"fresh\n");
}

#[test]
fn pax_records_override_header_ids_and_times() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("uid", &b"3000000"[..]),
        ("gid", &b"3000001"[..]),
        ("mtime", &b"1600000000.5"[..]),
        ("SCHILY.xattr.user.big", &b"1"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o640);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "big-ids", &b"x"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&layer[..], dir.path()).unwrap();
    let m = fs::symlink_metadata(dir.path().join("big-ids")).unwrap();
    assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 500_000_000));
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert!(xattr::get(dir.path().join("big-ids"), "user.big")
        .unwrap()
        .is_some());
}

#[test]
fn later_entries_replace_earlier_ones_of_the_same_name() {
    // As tar does: the last entry of a name wins, whatever was there before, and a file
    // replacing a (dangling) symlink is written in place, never through the link.
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    let layer = LayerBuilder::new()
        .file("f", b"first", 0o600, 0, 0)
        .file("f", b"second", 0o640, 7, 8)
        .symlink("s", outside.to_str().unwrap())
        .file("s", b"not through the link", 0o644, 0, 0)
        .dir("d", 0o755, 0, 0)
        .file("d/child", b"x", 0o644, 0, 0)
        .file("d", b"a file now", 0o644, 0, 0)
        .finish();
    unpack_layer(&layer[..], &target).unwrap();
    let f = target.join("f");
    assert_eq!(fs::read(&f).unwrap(), b"second");
    let m = fs::metadata(&f).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 7, 8));
    assert!(fs::symlink_metadata(target.join("s"))
        .unwrap()
        .file_type()
        .is_file());
    assert_eq!(fs::read(target.join("s")).unwrap(), b"not through the link");
    assert!(!outside.exists(), "a write went through the symlink");
    assert_eq!(fs::read(target.join("d")).unwrap(), b"a file now");
}
