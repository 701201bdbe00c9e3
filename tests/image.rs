//! End-to-end tests of `skiff image …` against the real tools: skopeo and umoci read what
//! skiff saves, skiff loads what they write, and skiff's overlay snapshot of an image is
//! the same tree umoci unpacks. Run as root (umoci unpack, mknod, overlay mounts); every
//! test uses its own temp data dir and mounts only inside a private mount namespace.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/image/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_same_tree, in_private_mount_ns, tree, LayerBuilder};
use skiff_image::mount::MountGuard;
use skiff_image::{Digest, ImageStore};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn skiff(data: &Path, args: &[&str]) -> Output {
    Command::new(SKIFF)
        .arg("image")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn skiff_ok(data: &Path, args: &[&str]) -> String {
    let out = skiff(data, args);
    assert!(
        out.status.success(),
        "skiff image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tool(name: &str, args: &[&str]) -> Output {
    run(Command::new(name).args(args))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An OCI layout made by umoci: `base` (busybox, links, devices, odd owners and modes)
/// and `child` on top of it (a deleted file, a replaced directory, an opaque directory,
/// changed metadata, a new file).
fn umoci_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let l = p(&layout);
    tool("umoci", &["init", "--layout", l]);
    tool("umoci", &["new", "--image", &format!("{l}:base")]);
    let b = dir.join("b");
    tool("umoci", &["unpack", "--image", &format!("{l}:base"), p(&b)]);
    let r = b.join("rootfs");
    for d in [
        "bin",
        "etc",
        "home/user",
        "var/cache/apt",
        "opt/old",
        "dev",
        "tmp",
    ] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", r.join("bin/abs-link")).unwrap();
    fs::hard_link(r.join("bin/busybox"), r.join("bin/ls")).unwrap();
    fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(r.join("etc/motd"), "hello\n").unwrap();
    fs::write(r.join("home/user/.profile"), "PS1=x\n").unwrap();
    fs::write(r.join("var/cache/apt/pkgcache"), "cache").unwrap();
    fs::write(r.join("opt/old/file"), "old").unwrap();
    xattr::set(r.join("etc/motd"), "user.skiff.test", b"kept").unwrap();
    fs::write(r.join("bin/suid"), "x").unwrap();
    fs::set_permissions(r.join("bin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(r.join("home/user"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(r.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(r.join("home/user/.profile"), Some(1000), Some(1000)).unwrap();
    nix::sys::stat::mknod(
        &r.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &r.join("dev/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    tool("umoci", &["repack", "--image", &format!("{l}:base"), p(&b)]);
    tool(
        "umoci",
        &[
            "config",
            "--image",
            &format!("{l}:base"),
            "--config.cmd",
            "/bin/sh",
        ],
    );

    let c = dir.join("c");
    tool("umoci", &["unpack", "--image", &format!("{l}:base"), p(&c)]);
    let r = c.join("rootfs");
    fs::remove_file(r.join("etc/group")).unwrap();
    fs::remove_dir_all(r.join("var/cache/apt")).unwrap();
    fs::write(r.join("etc/motd"), "changed\n").unwrap();
    fs::set_permissions(r.join("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(r.join("etc/motd"), Some(33), Some(33)).unwrap();
    fs::write(r.join("etc/new"), "new").unwrap();
    tool(
        "umoci",
        &["repack", "--image", &format!("{l}:child"), p(&c)],
    );
    // An opaque directory and an explicit whiteout, as umoci insert writes them.
    let opt = dir.join("newopt");
    fs::create_dir(&opt).unwrap();
    fs::write(opt.join("fresh"), "fresh").unwrap();
    tool(
        "umoci",
        &[
            "insert",
            "--image",
            &format!("{l}:child"),
            "--opaque",
            p(&opt),
            "/opt",
        ],
    );
    tool(
        "umoci",
        &[
            "insert",
            "--image",
            &format!("{l}:child"),
            "--whiteout",
            "/bin/abs-link",
        ],
    );
    layout
}

/// The rootfs umoci unpacks from `layout:tag`.
fn umoci_rootfs(layout: &Path, tag: &str, dir: &Path) -> PathBuf {
    let bundle = dir.join(format!("umoci-{tag}"));
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", p(layout)),
            p(&bundle),
        ],
    );
    bundle.join("rootfs")
}

/// skiff's view of `reference`: snapshot prepared, overlay mounted in a private mount
/// namespace, tree read, unmounted, snapshot removed.
fn skiff_tree(data: &Path, reference: &str, scratch: &Path) -> BTreeMap<PathBuf, common::Node> {
    let store = ImageStore::open(data).unwrap();
    let img = store.image(&store.resolve(reference).unwrap()).unwrap();
    let key = format!(
        "t{}-{}",
        std::process::id(),
        reference.replace([':', '/'], "-")
    );
    let mounts = store.prepare_rootfs(&img, &key).unwrap();
    let target = scratch.join(format!("merged-{key}"));
    fs::create_dir_all(&target).unwrap();
    let t = in_private_mount_ns(|| {
        let g = MountGuard::mount(&mounts, &target).unwrap();
        let t = tree(&target);
        g.unmount().unwrap();
        t
    });
    store.snapshotter();
    skiff_image::Snapshotter::remove(store.snapshotter(), &key).unwrap();
    t
}

#[test]
fn umoci_image_loads_and_snapshot_matches_umoci_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = umoci_layout(dir.path());
    let archive = dir.path().join("child.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:child", p(&layout)),
            &format!("oci-archive:{}:child:v1", p(&archive)),
        ],
    );
    let out = skiff_ok(&data, &["load", "-i", p(&archive)]);
    assert_eq!(out.trim(), "Loaded image: child:v1");

    let want = tree(&umoci_rootfs(&layout, "child", dir.path()));
    // Sanity: the test image really exercises whiteouts and opaque dirs.
    assert!(!want.contains_key(Path::new("etc/group")));
    assert!(!want.contains_key(Path::new("var/cache/apt")));
    assert!(!want.contains_key(Path::new("opt/old")));
    assert!(!want.contains_key(Path::new("bin/abs-link")));
    assert!(want.contains_key(Path::new("opt/fresh")));
    assert_eq!(want[Path::new("dev/null")].kind, "char");
    assert_eq!(
        want[Path::new("etc/motd")].xattrs,
        [("user.skiff.test".to_string(), b"kept".to_vec())]
    );
    assert_eq!(want[Path::new("etc/motd")].uid, 33);
    let got = skiff_tree(&data, "child:v1", dir.path());
    assert_same_tree(&want, &got, "umoci unpack vs skiff snapshot");
}

#[test]
fn skopeo_docker_archive_loads_and_matches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = umoci_layout(dir.path());
    // skopeo writes the legacy `docker save` layout: manifest.json, <id>.tar layers,
    // <id>.json config, repositories.
    let archive = dir.path().join("docker.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:child", p(&layout)),
            &format!("docker-archive:{}:example.com/app:2", p(&archive)),
        ],
    );
    let out = skiff_ok(&data, &["load", "-i", p(&archive)]);
    assert_eq!(out.trim(), "Loaded image: example.com/app:2");
    // docker-archive layers are uncompressed tars.
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff_ok(&data, &["inspect", "example.com/app:2"])).unwrap();
    for l in inspect[0]["Layers"].as_array().unwrap() {
        assert_eq!(l["MediaType"], "application/vnd.oci.image.layer.v1.tar");
    }
    let want = tree(&umoci_rootfs(&layout, "child", dir.path()));
    let got = skiff_tree(&data, "example.com/app:2", dir.path());
    assert_same_tree(
        &want,
        &got,
        "umoci unpack vs skiff snapshot of a docker-archive",
    );
}

#[test]
fn saved_archive_is_read_by_skopeo_and_umoci_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = umoci_layout(dir.path());
    let archive = dir.path().join("in.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:child", p(&layout)),
            &format!("oci-archive:{}:child", p(&archive)),
        ],
    );
    skiff_ok(&data, &["load", "-i", p(&archive)]);
    let saved = dir.path().join("saved.tar");
    skiff_ok(&data, &["save", "-o", p(&saved), "child"]);
    // Saving is reproducible: the same image gives the same bytes.
    let again = dir.path().join("again.tar");
    skiff_ok(&data, &["save", "-o", p(&again), "child"]);
    assert!(
        fs::read(&saved).unwrap() == fs::read(&again).unwrap(),
        "save is not reproducible"
    );
    let want = tree(&umoci_rootfs(&layout, "child", dir.path()));
    for (i, src) in [
        format!("docker-archive:{}", p(&saved)),
        format!("oci-archive:{}", p(&saved)),
    ]
    .iter()
    .enumerate()
    {
        let out_layout = dir.path().join(format!("out{i}"));
        let tag = format!("x{i}");
        tool(
            "skopeo",
            &["copy", src, &format!("oci:{}:{tag}", p(&out_layout))],
        );
        let got = tree(&umoci_rootfs(&out_layout, &tag, dir.path()));
        assert_same_tree(&want, &got, &format!("umoci unpack of skopeo copy {src}"));
    }
    let inspect = String::from_utf8(
        tool(
            "skopeo",
            &["inspect", &format!("docker-archive:{}", p(&saved))],
        )
        .stdout,
    )
    .unwrap();
    assert!(inspect.contains("\"Architecture\""), "{inspect}");
    // Saved and reloaded into an empty store, it is the same image.
    let data2 = dir.path().join("data2");
    assert_eq!(
        skiff_ok(&data2, &["load", "-i", p(&saved)]).trim(),
        "Loaded image: child:latest"
    );
    let id1: serde_json::Value =
        serde_json::from_str(&skiff_ok(&data, &["inspect", "child"])).unwrap();
    let id2: serde_json::Value =
        serde_json::from_str(&skiff_ok(&data2, &["inspect", "child"])).unwrap();
    assert_eq!(id1[0]["Id"], id2[0]["Id"]);
    assert_eq!(id1[0]["Manifest"]["Digest"], id2[0]["Manifest"]["Digest"]);
}

/// Every file under the store with its size, and refs.json: what "unchanged" means.
fn store_state(data: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if rel.ends_with("lock") {
                continue;
            }
            out.push((rel, if m.is_dir() { 0 } else { m.len() }));
            if m.is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    walk(data, data, &mut out);
    out.sort();
    out.push(("refs.json".into(), 0));
    if let Ok(r) = fs::read(data.join("images/refs.json")) {
        out.push((String::from_utf8(r).unwrap(), 1));
    }
    out
}

/// An OCI archive holding one image whose only layer is `layer`.
fn oci_archive_with_layer(layer: &[u8], path: &Path) {
    oci_archive_for(layer, path, &skiff_image::manifest::Platform::host().arch)
}

fn oci_archive_for(layer: &[u8], path: &Path, arch: &str) {
    oci_archive_layers(&[layer], path, arch)
}

/// An OCI archive named `evil:1` with `layers` (bottom first) for `arch`.
fn oci_archive_layers(layers: &[&[u8]], path: &Path, arch: &str) {
    let config = serde_json::json!({"architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| Digest::of(l).to_string()).collect::<Vec<_>>()}});
    let config = serde_json::to_vec(&config).unwrap();
    let descs: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::of(l).to_string(), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": descs}))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(&manifest).to_string(),
         "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "evil:1"}}]}))
    .unwrap();
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
        (
            format!("blobs/sha256/{}", Digest::of(&manifest).hex()),
            manifest.clone(),
        ),
        (
            format!("blobs/sha256/{}", Digest::of(&config).hex()),
            config.clone(),
        ),
    ];
    for l in layers {
        files.push((format!("blobs/sha256/{}", Digest::of(l).hex()), l.to_vec()));
    }
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn bad_archives_are_refused_and_the_store_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = dir.path();
    // A store with something in it already.
    let good = d.join("good.tar");
    oci_archive_with_layer(
        &LayerBuilder::new().file("ok", b"ok", 0o644, 0, 0).finish(),
        &good,
    );
    skiff_ok(&data, &["load", "-i", p(&good)]);
    let before = store_state(&data);

    let bytes = fs::read(&good).unwrap();
    let truncated = d.join("truncated.tar");
    fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();

    // Flip one byte inside the layer blob's data: its digest no longer matches.
    let corrupt = d.join("corrupt.tar");
    let mut c = bytes.clone();
    let at = c.windows(2).position(|w| w == b"ok").unwrap();
    let at = at + c[at + 2..].windows(2).position(|w| w == b"ok").unwrap() + 2;
    c[at] = b'X';
    fs::write(&corrupt, &c).unwrap();

    let escaping_layer = d.join("escaping-layer.tar");
    oci_archive_with_layer(
        &LayerBuilder::new()
            .raw(
                tar::EntryType::Regular,
                "../../../../tmp/skiff-pwned",
                "",
                b"x",
            )
            .finish(),
        &escaping_layer,
    );
    let escaping_hardlink = d.join("escaping-hardlink.tar");
    oci_archive_with_layer(
        &LayerBuilder::new()
            .raw(tar::EntryType::Link, "passwd", "../../etc/passwd", b"")
            .finish(),
        &escaping_hardlink,
    );
    let escaping_member = d.join("escaping-member.tar");
    fs::write(
        &escaping_member,
        LayerBuilder::new()
            .raw(tar::EntryType::Regular, "../index.json", "", b"{}")
            .finish(),
    )
    .unwrap();
    // A good layer under a bad one: the good one is unpacked at load and must be
    // rolled back.
    let second_bad = d.join("second-bad.tar");
    oci_archive_layers(
        &[
            &LayerBuilder::new()
                .file("fine", b"fine", 0o644, 0, 0)
                .finish(),
            &LayerBuilder::new()
                .raw(tar::EntryType::Regular, "../../escape", "", b"x")
                .finish(),
        ],
        &second_bad,
        &skiff_image::manifest::Platform::host().arch,
    );
    // The bad layer first, good ones after: layers unpack side by side, so the good
    // ones finish (the bad entry comes after 8 MiB) while the bad one fails, and must be
    // rolled back too.
    let first_bad = d.join("first-bad.tar");
    let big = vec![7u8; 8 << 20];
    oci_archive_layers(
        &[
            &LayerBuilder::new()
                .file("a", &big, 0o644, 0, 0)
                .raw(tar::EntryType::Link, "h", "../outside", b"")
                .finish(),
            &LayerBuilder::new().file("b", b"b", 0o644, 0, 0).finish(),
            &LayerBuilder::new().file("c", b"c", 0o644, 0, 0).finish(),
            &LayerBuilder::new().file("d", b"d", 0o644, 0, 0).finish(),
        ],
        &first_bad,
        &skiff_image::manifest::Platform::host().arch,
    );
    let not_archive = d.join("garbage.tar");
    fs::write(&not_archive, b"this is not a tarball at all").unwrap();
    let missing_blob = d.join("missing.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&missing_blob).unwrap());
        let mut ar = tar::Archive::new(&bytes[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().into_owned();
            let mut h = e.header().clone();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            // Drop the layer (the largest blob here is not the layer; drop by name).
            if path.to_str().unwrap().ends_with(
                Digest::of(&LayerBuilder::new().file("ok", b"ok", 0o644, 0, 0).finish()).hex(),
            ) {
                continue;
            }
            b.append_data(&mut h, &path, &data[..]).unwrap();
        }
        b.finish().unwrap();
    }

    for (what, file, expect) in [
        ("truncated", &truncated, "corrupt or truncated"),
        ("corrupt", &corrupt, "does not match"),
        ("escaping layer entry", &escaping_layer, "'..'"),
        ("escaping hard link", &escaping_hardlink, "'..'"),
        (
            "escaping archive member",
            &escaping_member,
            "escapes the archive root",
        ),
        ("bad layer over a good one", &second_bad, "'..'"),
        ("bad layer under good ones", &first_bad, "'..'"),
        ("not an archive", &not_archive, "archive"),
        ("missing blob", &missing_blob, "missing"),
    ] {
        let out = skiff(&data, &["load", "-i", p(file)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: load succeeded");
        assert!(
            err.contains(expect),
            "{what}: error {err:?} lacks {expect:?}"
        );
        assert_eq!(store_state(&data), before, "{what}: store changed");
    }
    assert!(!Path::new("/tmp/skiff-pwned").exists());

    // import refuses an escaping rootfs the same way.
    let rootfs = d.join("rootfs.tar");
    fs::write(
        &rootfs,
        LayerBuilder::new()
            .file("fine", b"x", 0o644, 0, 0)
            .raw(tar::EntryType::Regular, "a/../../escape", "", b"x")
            .finish(),
    )
    .unwrap();
    let out = skiff(&data, &["import", p(&rootfs), "bad:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'..'"));
    assert_eq!(store_state(&data), before, "import: store changed");
}

#[test]
fn images_on_one_base_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = umoci_layout(dir.path());
    for tag in ["base", "child"] {
        let a = dir.path().join(format!("{tag}.tar"));
        tool(
            "skopeo",
            &[
                "copy",
                &format!("oci:{}:{tag}", p(&layout)),
                &format!("oci-archive:{}:{tag}", p(&a)),
            ],
        );
        skiff_ok(&data, &["load", "-i", p(&a)]);
    }
    let store = ImageStore::open(&data).unwrap();
    let base = store.image(&store.resolve("base").unwrap()).unwrap();
    let child = store.image(&store.resolve("child").unwrap()).unwrap();
    assert_eq!(base.layers.len(), 1);
    assert_eq!(
        child.layers.len(),
        4,
        "base + repack + opaque insert + whiteout insert"
    );
    assert_eq!(
        child.layers[0].blob, base.layers[0].blob,
        "child stands on base"
    );
    // Blobs: 2 manifests + 2 configs + 4 distinct layers; the base layer once.
    let blobs = skiff_image::ContentStore::list(store.content()).unwrap();
    assert_eq!(blobs.len(), 2 + 2 + 4, "{blobs:?}");
    let state = store_state(&data);
    let base_files = state
        .iter()
        .filter(|(f, _)| f.ends_with(base.layers[0].blob.hex()))
        .count();
    assert_eq!(base_files, 1);
    // Both unpacked: the shared layer is unpacked once.
    let t1 = skiff_tree(&data, "base", dir.path());
    let _ = skiff_tree(&data, "child", dir.path());
    assert!(t1.contains_key(Path::new("bin/busybox")));
    let layers = skiff_image::Snapshotter::layers(store.snapshotter()).unwrap();
    assert_eq!(layers.len(), 4);
    // Loading again adds nothing.
    let before = store_state(&data);
    skiff_ok(&data, &["load", "-i", p(&dir.path().join("base.tar"))]);
    assert_eq!(store_state(&data), before);
}

#[test]
fn import_tag_ls_history_inspect_rm_prune() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rootfs = dir.path().join("rootfs.tar.gz");
    fs::write(
        &rootfs,
        common::gzip(
            &LayerBuilder::new()
                .dir("bin/", 0o755, 0, 0)
                .file(
                    "bin/busybox",
                    &fs::read("/bin/busybox").unwrap(),
                    0o755,
                    0,
                    0,
                )
                .symlink("bin/sh", "busybox")
                .finish(),
        ),
    )
    .unwrap();
    let id = skiff_ok(&data, &["import", p(&rootfs), "bb:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    skiff_ok(&data, &["tag", "bb:1", "localhost:5000/bb:2"]);
    let ls = skiff_ok(&data, &["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 3, "{ls}");
    assert!(lines[0].starts_with("REPOSITORY"), "{ls}");
    assert!(ls.contains(&id.trim()["sha256:".len()..][..12]), "{ls}");
    let hist = skiff_ok(&data, &["history", "bb:1"]);
    assert!(hist.contains("skiff image import"), "{hist}");
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff_ok(&data, &["inspect", "bb:1"])).unwrap();
    assert_eq!(inspect[0]["Id"].as_str(), Some(id.trim()));
    assert_eq!(
        inspect[0]["Layers"][0]["MediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(inspect[0]["RepoTags"].as_array().unwrap().len(), 2);
    // By short ID too.
    let short = &id.trim()["sha256:".len()..][..12];
    skiff_ok(&data, &["inspect", short]);

    let out = skiff(&data, &["inspect", "nope:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // Unpack it, so removal has a snapshot layer to reclaim too.
    {
        let store = ImageStore::open(&data).unwrap();
        let img = store.image(&store.resolve("bb:1").unwrap()).unwrap();
        store.unpack(&img).unwrap();
        assert_eq!(
            skiff_image::Snapshotter::layers(store.snapshotter())
                .unwrap()
                .len(),
            1
        );
    }
    // rm of one name keeps the content (still named); rm of the last deletes it.
    assert_eq!(skiff_ok(&data, &["rm", "bb:1"]).trim(), "Untagged: bb:1");
    skiff_ok(&data, &["inspect", "localhost:5000/bb:2"]);
    let out = skiff_ok(&data, &["rm", "localhost:5000/bb:2"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    let store = ImageStore::open(&data).unwrap();
    assert!(skiff_image::ContentStore::list(store.content())
        .unwrap()
        .is_empty());
    assert!(skiff_image::Snapshotter::layers(store.snapshotter())
        .unwrap()
        .is_empty());
    assert!(skiff_ok(&data, &["ls", "-q"]).is_empty());
    skiff_ok(&data, &["prune"]);
}

#[test]
fn wrong_platform_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rootfs = dir.path().join("rootfs.tar");
    fs::write(
        &rootfs,
        LayerBuilder::new().file("x", b"x", 0o644, 0, 0).finish(),
    )
    .unwrap();
    skiff_ok(&data, &["import", p(&rootfs), "x:1"]);
    let host = skiff_image::manifest::Platform::host();
    let other = if host.arch == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let store = ImageStore::open_for(
        &data,
        skiff_image::manifest::Platform {
            os: "linux".into(),
            arch: other.into(),
            variant: None,
        },
    )
    .unwrap();
    let img = store.image(&store.resolve("x:1").unwrap()).unwrap();
    let err = store.prepare_rootfs(&img, "wrong").unwrap_err().to_string();
    assert!(
        err.contains(&format!("linux/{}", host.arch)) && err.contains(&format!("linux/{other}")),
        "{err}"
    );
}

fn skiff_run(data: &Path, rt: &Path, args: &[&str]) -> Output {
    Command::new(SKIFF)
        .arg("run")
        .arg("--data-dir")
        .arg(data)
        .env("SKIFF_RUNTIME_ROOT", rt)
        .args(args)
        .output()
        .unwrap()
}

/// `skiff CMD --data-dir DATA ARGS…` with the runtime root `rt`.
fn skiff_run_cmd(data: &Path, rt: &Path, args: &[&str]) -> Output {
    Command::new(SKIFF)
        .arg(args[0])
        .arg("--data-dir")
        .arg(data)
        .env("SKIFF_RUNTIME_ROOT", rt)
        .args(&args[1..])
        .output()
        .unwrap()
}

/// A busybox image made with umoci whose config sets ENTRYPOINT, CMD, ENV, WORKDIR
/// and USER, loaded into `data` as `app:1`.
fn load_app_image(dir: &Path, data: &Path) {
    let layout = umoci_layout(dir);
    let l = format!("{}:base", p(&layout));
    tool(
        "umoci",
        &[
            "config",
            "--image",
            &l,
            "--tag",
            "app",
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.cmd",
            "echo cmd-from-image; id -u; id -g; pwd; echo $GREETING $HOME",
            "--config.env",
            "GREETING=hello-from-image",
            "--config.workingdir",
            "/srv/app",
            "--config.user",
            "user",
        ],
    );
    let a = dir.join("app.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:app", p(&layout)),
            &format!("oci-archive:{}:app:1", p(&a)),
        ],
    );
    skiff_ok(data, &["load", "-i", p(&a)]);
}

#[test]
fn run_applies_the_image_config_like_docker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = dir.path().join("rt");
    load_app_image(dir.path(), &data);

    // The image's defaults: ENTRYPOINT + CMD, USER resolved through its /etc/passwd,
    // WORKDIR created, ENV and HOME.
    let out = skiff_run(&data, &rt, &["--rm", "app:1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "cmd-from-image",
            "1000",
            "1000",
            "/srv/app",
            "hello-from-image /home/user"
        ]
    );
    // Flags override: arguments replace CMD (the ENTRYPOINT stays), -e, -w, -u.
    let out = skiff_run(
        &data,
        &rt,
        &[
            "--rm",
            "-e",
            "GREETING=flag",
            "-w",
            "/tmp",
            "-u",
            "0:0",
            "app:1",
            "echo $GREETING; id -u; pwd; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "exit code is the container's");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["flag", "0", "/tmp"]
    );
    // --rm left nothing behind.
    assert_eq!(fs::read_dir(data.join("containers")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(data.join("images/snapshots/active"))
            .unwrap()
            .count(),
        0
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(p(dir.path())), "a mount was left behind");
}

#[test]
fn run_containers_do_not_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = dir.path().join("rt");
    let rootfs = dir.path().join("rootfs.tar");
    fs::write(
        &rootfs,
        LayerBuilder::new()
            .dir("bin/", 0o755, 0, 0)
            .file(
                "bin/busybox",
                &fs::read("/bin/busybox").unwrap(),
                0o755,
                0,
                0,
            )
            .symlink("bin/sh", "busybox")
            .file("shared", b"from the image\n", 0o644, 0, 0)
            .finish(),
    )
    .unwrap();
    skiff_ok(&data, &["import", p(&rootfs), "bb:1"]);
    let name_a = format!("t{}-a", std::process::id());
    let name_b = format!("t{}-b", std::process::id());
    let out = skiff_run(
        &data,
        &rt,
        &[
            "--name",
            &name_a,
            "bb:1",
            "/bin/sh",
            "-c",
            "echo mine > /shared; echo new > /only-a; rm /bin/busybox.x 2>/dev/null; cat /shared",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mine\n");
    let out = skiff_run(
        &data,
        &rt,
        &[
            "--name",
            &name_b,
            "bb:1",
            "/bin/sh",
            "-c",
            "cat /shared; ls /only-a 2>&1 || true",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("from the image\n"), "{stdout}");
    assert!(stdout.contains("No such file"), "{stdout}");
    // Without --rm the writable layer stays, holding exactly that container's writes.
    let store = ImageStore::open(&data).unwrap();
    let id_of = |name: &str| {
        fs::read_link(data.join("container-names").join(name))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let upper_a = store.snapshotter().upper_dir(&id_of(&name_a)).unwrap();
    assert_eq!(fs::read(upper_a.join("shared")).unwrap(), b"mine\n");
    assert!(upper_a.join("only-a").exists());
    let upper_b = store.snapshotter().upper_dir(&id_of(&name_b)).unwrap();
    assert!(!upper_b.join("shared").exists());
    // The same name again is refused.
    let out = skiff_run(&data, &rt, &["--name", &name_a, "bb:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    // skiff rm removes both writable layers and the records.
    let out = skiff_run_cmd(&data, &rt, &["rm", &name_a, &name_b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_dir(data.join("containers")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(data.join("images/snapshots/active"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn run_refuses_missing_images_and_wrong_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = dir.path().join("rt");
    let out = skiff_run(&data, &rt, &["--rm", "nope:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("image \"nope:1\" not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let host = skiff_image::manifest::Platform::host();
    let other = if host.arch == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let a = dir.path().join("other.tar");
    oci_archive_for(
        &LayerBuilder::new().file("x", b"x", 0o644, 0, 0).finish(),
        &a,
        other,
    );
    skiff_ok(&data, &["load", "-i", p(&a)]);
    let out = skiff_run(&data, &rt, &["--rm", "evil:1", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        err.contains(&format!(
            "image is for linux/{other}, but this host is linux/{}",
            host.arch
        )),
        "{err}"
    );
    assert_eq!(fs::read_dir(data.join("containers")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(data.join("images/snapshots/active"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn zstd_layers_from_skopeo_load_and_match() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = umoci_layout(dir.path());
    let want = tree(&umoci_rootfs(&layout, "child", dir.path()));
    let a = dir.path().join("zstd.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-compress",
            "--dest-compress-format",
            "zstd",
            &format!("oci:{}:child", p(&layout)),
            &format!("oci-archive:{}:zstd:1", p(&a)),
        ],
    );
    skiff_ok(&data, &["load", "-i", p(&a)]);
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff_ok(&data, &["inspect", "zstd:1"])).unwrap();
    for l in inspect[0]["Layers"].as_array().unwrap() {
        assert_eq!(
            l["MediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    let got = skiff_tree(&data, "zstd:1", dir.path());
    assert_same_tree(&want, &got, "umoci unpack vs skiff snapshot of zstd layers");
}

/// Blobs and a descriptor of a one-layer Docker v2s2 image for `arch`.
fn docker_image(layer: &[u8], arch: &str) -> (Vec<(Digest, Vec<u8>)>, serde_json::Value) {
    let gz = common::gzip(layer);
    let config = serde_json::to_vec(&serde_json::json!({"architecture": arch, "os": "linux",
        "config": {"Cmd": ["/x"]}, "rootfs": {"type": "layers", "diff_ids": [Digest::of(layer).to_string()]}}))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": Digest::of(&gz).to_string(), "size": gz.len()}]}))
    .unwrap();
    let desc = serde_json::json!({"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": Digest::of(&manifest).to_string(), "size": manifest.len(),
        "platform": {"architecture": arch, "os": "linux"}});
    let blobs = vec![
        (Digest::of(&gz), gz),
        (Digest::of(&config), config),
        (Digest::of(&manifest), manifest),
    ];
    (blobs, desc)
}

#[test]
fn manifest_list_picks_the_host_platform() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = skiff_image::manifest::Platform::host();
    let other = if host.arch == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let (host_blobs, host_desc) = docker_image(
        &LayerBuilder::new().file("x", b"host", 0o755, 0, 0).finish(),
        &host.arch,
    );
    let (_, other_desc) = docker_image(
        &LayerBuilder::new()
            .file("x", b"other", 0o755, 0, 0)
            .finish(),
        other,
    );
    // A Docker manifest list naming both; only the host's blobs are in the archive, as
    // when one platform of a multi-platform image was pulled.
    let list = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [other_desc, host_desc]}))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
         "digest": Digest::of(&list).to_string(), "size": list.len(),
         "annotations": {"io.containerd.image.name": "docker.io/library/multi:1"}}]}))
    .unwrap();
    let a = dir.path().join("multi.tar");
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
        (
            format!("blobs/sha256/{}", Digest::of(&list).hex()),
            list.clone(),
        ),
    ];
    files.extend(
        host_blobs
            .into_iter()
            .map(|(d, v)| (format!("blobs/sha256/{}", d.hex()), v)),
    );
    let mut b = tar::Builder::new(fs::File::create(&a).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
    drop(b);

    assert_eq!(
        skiff_ok(&data, &["load", "-i", p(&a)]).trim(),
        "Loaded image: multi:1"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff_ok(&data, &["inspect", "multi:1"])).unwrap();
    assert_eq!(
        inspect[0]["Architecture"].as_str(),
        Some(host.arch.as_str())
    );
    assert_eq!(
        inspect[0]["Index"].as_str(),
        Some(Digest::of(&list).to_string().as_str())
    );
    let got = skiff_tree(&data, "multi:1", dir.path());
    assert_eq!(got[Path::new("x")].data, b"host");

    // Saved, it is the host's image alone, which skopeo reads.
    let saved = dir.path().join("saved.tar");
    skiff_ok(&data, &["save", "-o", p(&saved), "multi:1"]);
    tool(
        "skopeo",
        &["inspect", &format!("oci-archive:{}", p(&saved))],
    );

    // Loaded without a name, it is still usable by the digest load prints.
    let data2 = dir.path().join("data2");
    let unnamed = dir.path().join("unnamed.tar");
    let mut b = tar::Builder::new(fs::File::create(&unnamed).unwrap());
    let mut ar = tar::Archive::new(fs::File::open(&a).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if path == Path::new("index.json") {
            let mut v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            v["manifests"][0]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
            data = serde_json::to_vec(&v).unwrap();
        }
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        b.append_data(&mut h, &path, &data[..]).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let out = skiff_ok(&data2, &["load", "-i", p(&unnamed)]);
    let id = out
        .trim()
        .strip_prefix("Loaded image ID: ")
        .expect(&out)
        .to_string();
    assert_eq!(id, Digest::of(&list).to_string());
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff_ok(&data2, &["inspect", &id])).unwrap();
    assert_eq!(
        inspect[0]["Architecture"].as_str(),
        Some(host.arch.as_str())
    );

    // A host the list does not cover gets an error naming what there is.
    let store = ImageStore::open_for(
        &data,
        skiff_image::manifest::Platform::parse("linux/s390x").unwrap(),
    )
    .unwrap();
    let err = store
        .image(&store.resolve("multi:1").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/s390x")
            && err.contains(&format!("linux/{}", host.arch))
            && err.contains(&format!("linux/{other}")),
        "{err}"
    );
}

/// A docker-archive laid out as `docker save` wrote it before Docker 25: one directory
/// per layer (`<id>/layer.tar`, `json`, `VERSION`), configs as `<hex>.json`,
/// `manifest.json` and `repositories`, and a layer shared by two images stored once with
/// a symlink pointing at it.
#[test]
fn legacy_docker_save_archive_loads_with_symlinked_layers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = skiff_image::manifest::Platform::host();
    let base = LayerBuilder::new()
        .dir("bin/", 0o755, 0, 0)
        .file(
            "bin/busybox",
            &fs::read("/bin/busybox").unwrap(),
            0o755,
            0,
            0,
        )
        .symlink("bin/sh", "busybox")
        .finish();
    let top = LayerBuilder::new()
        .file("etc/app", b"app\n", 0o644, 0, 0)
        .finish();
    let config = |layers: &[&[u8]], cmd: &str| {
        serde_json::to_vec(&serde_json::json!({"architecture": host.arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh", "-c", cmd]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| Digest::of(l).to_string()).collect::<Vec<_>>()}}))
        .unwrap()
    };
    let c1 = config(&[&base], "echo one");
    let c2 = config(&[&base, &top], "cat /etc/app");
    let manifest = serde_json::json!([
        {"Config": format!("{}.json", Digest::of(&c1).hex()), "RepoTags": ["one:latest"],
         "Layers": ["aaaa/layer.tar"]},
        {"Config": format!("{}.json", Digest::of(&c2).hex()), "RepoTags": ["two:latest", "two:v2"],
         "Layers": ["bbbb/layer.tar", "cccc/layer.tar"]},
    ]);
    let a = dir.path().join("legacy.tar");
    let mut b = tar::Builder::new(fs::File::create(&a).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    for id in ["aaaa", "bbbb", "cccc"] {
        add(&format!("{id}/VERSION"), b"1.0");
        add(&format!("{id}/json"), br#"{"id":"x"}"#);
    }
    add("aaaa/layer.tar", &base);
    add("cccc/layer.tar", &top);
    add(&format!("{}.json", Digest::of(&c1).hex()), &c1);
    add(&format!("{}.json", Digest::of(&c2).hex()), &c2);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add("repositories", br#"{"one":{"latest":"aaaa"}}"#);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "bbbb/layer.tar", "../aaaa/layer.tar")
        .unwrap();
    b.finish().unwrap();
    drop(b);

    let out = skiff_ok(&data, &["load", "-i", p(&a)]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Loaded image: one:latest",
            "Loaded image: two:latest",
            "Loaded image: two:v2"
        ]
    );
    let store = ImageStore::open(&data).unwrap();
    let one = store.image(&store.resolve("one").unwrap()).unwrap();
    let two = store.image(&store.resolve("two:v2").unwrap()).unwrap();
    assert_eq!(one.config_digest, Digest::of(&c1));
    assert_eq!(two.layers[0].blob, one.layers[0].blob, "shared layer");
    assert_eq!(two.layers[1].diff_id, Digest::of(&top));
    // 2 configs, 2 generated manifests, 2 layers.
    assert_eq!(
        skiff_image::ContentStore::list(store.content())
            .unwrap()
            .len(),
        6
    );
    let rt = dir.path().join("rt");
    let out = skiff_run(&data, &rt, &["--rm", "two:v2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app\n");
}

/// A load killed mid-stream (SIGKILL while it reads the archive from a FIFO) leaves no
/// visible blob and no name; the next load of the whole archive succeeds.
#[test]
fn load_killed_midway_leaves_no_visible_blob() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = dir.path().join("good.tar");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    oci_archive_with_layer(
        &LayerBuilder::new().file("big", &big, 0o644, 0, 0).finish(),
        &good,
    );
    let bytes = fs::read(&good).unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut child = Command::new(SKIFF)
        .args(["image", "--data-dir", p(&data), "load", "-i", p(&fifo)])
        .spawn()
        .unwrap();
    let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // The layer is the last member: stop in the middle of it.
    w.write_all(&bytes[..bytes.len() * 3 / 4]).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(w);

    let store = ImageStore::open(&data).unwrap();
    assert!(skiff_image::ContentStore::list(store.content())
        .unwrap()
        .is_empty());
    assert!(!data.join("images/refs.json").exists());
    assert_eq!(
        skiff_ok(&data, &["load", "-i", p(&good)]).trim(),
        "Loaded image: evil:1"
    );
    assert_eq!(
        skiff_image::ContentStore::list(store.content())
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn run_hostname_volumes_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = dir.path().join("rt");
    let rootfs = dir.path().join("rootfs.tar");
    fs::write(
        &rootfs,
        LayerBuilder::new()
            .dir("bin/", 0o755, 0, 0)
            .file(
                "bin/busybox",
                &fs::read("/bin/busybox").unwrap(),
                0o755,
                0,
                0,
            )
            .symlink("bin/sh", "busybox")
            .finish(),
    )
    .unwrap();
    skiff_ok(&data, &["import", p(&rootfs), "bb:1"]);
    let rw = dir.path().join("rw");
    let ro = dir.path().join("ro");
    fs::create_dir(&rw).unwrap();
    fs::create_dir(&ro).unwrap();
    fs::write(ro.join("in"), "from host\n").unwrap();
    let script = "hostname; echo $HOSTNAME; echo out > /data/rw/out; cat /data/ro/in; \
        (echo no > /data/ro/x) 2>/dev/null && echo ro-writable || echo ro-refused; \
        cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; \
        cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null; true";
    let out = skiff_run(
        &data,
        &rt,
        &[
            "--rm",
            "--hostname",
            "web-1",
            "-v",
            &format!("{}:/data/rw", p(&rw)),
            "-v",
            &format!("{}:/data/ro:ro", p(&ro)),
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "bb:1",
            "/bin/busybox",
            "sh",
            "-c",
            script,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        &lines[..4],
        ["web-1", "web-1", "from host", "ro-refused"],
        "{stdout}"
    );
    assert!(
        lines.contains(&"67108864"),
        "memory limit not applied: {stdout}"
    );
    assert!(
        lines.iter().any(|l| *l == "50000" || *l == "50000 100000"),
        "cpu quota not applied: {stdout}"
    );
    assert_eq!(fs::read_to_string(rw.join("out")).unwrap(), "out\n");
    assert!(!ro.join("x").exists());

    let out = skiff_run(&data, &rt, &["--rm", "-v", "named:/data", "bb:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("named volumes are not supported"));
}

/// A prune that runs while a build is between storing a layer and tagging its image
/// waits for the build instead of deleting the build's (still unreferenced) blobs.
#[test]
fn prune_during_a_build_keeps_the_builds_blobs() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = dir.path().join("rt");
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    // The RUN step keeps the build busy after the COPY layer's blob is stored; the sleep
    // only widens the window the prune lands in, nothing is timed.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"2\"]\n",
    )
    .unwrap();
    let mut build = Command::new("timeout")
        .arg("120")
        .arg(SKIFF)
        .args([
            "image",
            "build",
            "--data-dir",
            p(&data),
            "-t",
            "slow:1",
            p(&ctx),
        ])
        .env("SKIFF_RUNTIME_ROOT", &rt)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(build.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        if l.starts_with("Step 3/3") {
            break;
        }
    }
    assert!(seen.contains("Step 3/3"), "{seen}");
    let pruned = skiff_ok(&data, &["prune"]);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(build.wait().unwrap().success(), "{seen}{rest:?}");
    // The prune found nothing to delete (it waited for the build) and the image is whole.
    assert!(!pruned.contains("sha256:"), "{pruned}");
    let out = dir.path().join("slow.tar");
    skiff_ok(&data, &["save", "-o", p(&out), "slow:1"]);
    let ran = skiff_run(&data, &rt, &["--rm", "slow:1", "/bin/busybox", "true"]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
}
