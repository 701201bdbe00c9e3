//! skopeo pushes to and pulls from skiff's registry: images come back byte-identical.

use std::process::Command;

use crate::common::*;

fn image_layout(work: &std::path::Path, tag: &str) -> std::path::PathBuf {
    let layout = work.join("img");
    let layers = vec![
        make_layer(work, "base", 200_000, 1, true),
        make_layer(work, "app", 300_000, 2, false),
    ];
    let m = add_image(&layout, &layers, "amd64");
    write_index(&layout, tag, vec![m]);
    layout
}

#[test]
fn skopeo_roundtrip_is_byte_identical_and_blobs_stored_once() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = image_layout(work.path(), "v1");
    let src = format!("oci:{}:v1", layout.display());
    let host = reg.host();
    for repo in ["library/busybox", "other/copy"] {
        let out = skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &src,
            &format!("docker://{host}/{repo}:v1"),
        ]);
        assert_ok(&out, "skopeo copy to skiff");
    }
    let back = work.path().join("back");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/other/copy:v1"),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_ok(&out, "skopeo copy from skiff");
    // Every blob (manifest, config, layers) identical, none added or lost.
    assert_eq!(layout_blobs(&layout), layout_blobs(&back));
    // Two repositories, one copy of each blob: config, 2 layers, manifest.
    assert_eq!(reg.blob_files(), 4);
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/library/busybox:v1"),
    ]);
    assert_ok(&out, "skopeo inspect --raw");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        sha256(&out.stdout),
        idx["manifests"][0]["digest"].as_str().unwrap()
    );
    let out = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/library/busybox"),
    ]);
    assert_ok(&out, "skopeo list-tags");
    let tags: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));
    // skopeo delete removes the manifest by digest.
    let out = skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{host}/other/copy:v1"),
    ]);
    assert_ok(&out, "skopeo delete");
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/other/copy:v1"),
    ]);
    assert!(!out.status.success());
}

#[test]
fn skopeo_copies_a_multi_platform_index() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("multi");
    let a = add_image(
        &layout,
        &[make_layer(work.path(), "amd", 50_000, 3, false)],
        "amd64",
    );
    let b = add_image(
        &layout,
        &[make_layer(work.path(), "arm", 60_000, 4, false)],
        "arm64",
    );
    // The layout's top-level index points at a nested index (what `--all` pushes).
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [a, b],
    }))
    .unwrap();
    let d = sha256(&nested);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), &nested).unwrap();
    write_index(
        &layout,
        "multi",
        vec![serde_json::json!({"mediaType": OCI_INDEX, "digest": d, "size": nested.len()})],
    );
    let host = reg.host();
    let out = skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{host}/multi:latest"),
    ]);
    assert_ok(&out, "skopeo copy --all");
    let r = http(reg.addr, "GET", "/v2/multi/manifests/latest", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.body, nested);
    let back = work.path().join("back");
    let out = skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{host}/multi:latest"),
        &format!("oci:{}:multi", back.display()),
    ]);
    assert_ok(&out, "skopeo copy --all back");
    assert_eq!(layout_blobs(&layout), layout_blobs(&back));
}

fn htpasswd(dir: &std::path::Path, user: &str, pass: &str) -> std::path::PathBuf {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("htpasswd (Debian package apache2-utils) must be installed");
    assert!(out.status.success());
    let p = dir.join("htpasswd");
    std::fs::write(&p, &out.stdout).unwrap();
    p
}

#[test]
fn skopeo_auth_with_creds_and_wrong_password() {
    let work = tempfile::tempdir().unwrap();
    let pw = htpasswd(work.path(), "alice", "s3cret");
    let reg = Registry::start_with(|c| c.htpasswd = Some(pw.clone()));
    let layout = image_layout(work.path(), "v1");
    let host = reg.host();
    let dest = format!("docker://{host}/private/app:v1");
    let src = format!("oci:{}:v1", layout.display());

    let out = skopeo(&["copy", "--dest-tls-verify=false", &src, &dest]);
    assert!(!out.status.success(), "anonymous push must fail");
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:wrong",
        &src,
        &dest,
    ]);
    assert!(!out.status.success(), "wrong password must fail");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "expected an auth error, got: {err}"
    );
    assert_eq!(reg.blob_files(), 0, "nothing stored by refused pushes");

    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &src,
        &dest,
    ]);
    assert_ok(&out, "authenticated push");
    let back = work.path().join("back");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        "alice:s3cret",
        &dest,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_ok(&out, "authenticated pull");
    assert_eq!(layout_blobs(&layout), layout_blobs(&back));
    let out = skopeo(&["inspect", "--tls-verify=false", "--raw", &dest]);
    assert!(!out.status.success(), "anonymous pull must fail");
}

#[test]
fn skopeo_over_tls() {
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed");
    assert!(out.status.success(), "{out:?}");
    let reg = Registry::start_with(|c| c.tls = Some((cert.clone(), key.clone())));
    // skopeo trusts the certificate through a cert dir holding it as a CA.
    let certs = work.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let layout = image_layout(work.path(), "v1");
    let out = skopeo(&[
        "copy",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/tls/app:v1", reg.host()),
    ]);
    assert_ok(&out, "skopeo copy over verified TLS");
    let out = skopeo(&[
        "inspect",
        "--cert-dir",
        certs.to_str().unwrap(),
        &format!("docker://{}/tls/app:v1", reg.host()),
    ]);
    assert_ok(&out, "skopeo inspect over TLS");
}
