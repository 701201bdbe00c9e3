//! Raw-HTTP conformance: status codes, headers and error codes of the distribution spec,
//! including the bad-input cases, against an in-process skiff registry.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn base_endpoint_and_api_version_header() {
    let reg = Registry::start();
    let r = http(reg.addr, "GET", "/v2/", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let r = http(reg.addr, "GET", "/v2/nothing/manifests/latest", &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.code().as_deref(), Some("MANIFEST_UNKNOWN"));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn monolithic_push_head_get_and_range() {
    let reg = Registry::start();
    let data = noise(100_000, 7);
    let d = push_blob(reg.addr, "a/b", &data);
    let path = format!("/v2/a/b/blobs/{d}");
    let r = http(reg.addr, "HEAD", &path, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert!(r.body.is_empty());
    let r = http(reg.addr, "GET", &path, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    let r = http(reg.addr, "GET", &path, &[("Range", "bytes=10-19")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100000"));
    assert_eq!(r.body, &data[10..20]);
    let r = http(reg.addr, "GET", &path, &[("Range", "bytes=99990-")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[99_990..]);
    let r = http(reg.addr, "GET", &path, &[("Range", "bytes=200000-")], b"");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100000"));
    // The blob belongs to a/b only.
    let r = http(reg.addr, "HEAD", &format!("/v2/other/blobs/{d}"), &[], b"");
    assert_eq!(r.status, 404);
    let r = http(reg.addr, "GET", &format!("/v2/other/blobs/{d}"), &[], b"");
    assert_eq!(r.code().as_deref(), Some("BLOB_UNKNOWN"));
    let r = http(reg.addr, "GET", "/v2/a/b/blobs/sha256:abc", &[], b"");
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("DIGEST_INVALID"))
    );
}

#[test]
fn wrong_digest_stores_nothing() {
    let reg = Registry::start();
    let wrong = sha256(b"something else");
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/x/blobs/uploads/?digest={wrong}"),
        &[],
        b"hello",
    );
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("DIGEST_INVALID"))
    );
    // Chunked upload finished with the wrong digest: refused and discarded.
    let r = http(reg.addr, "POST", "/v2/x/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap().to_string();
    let r = http(
        reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", "0-4")],
        b"hello",
    );
    assert_eq!(r.status, 202);
    let r = http(reg.addr, "PUT", &format!("{loc}?digest={wrong}"), &[], b"");
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("DIGEST_INVALID"))
    );
    let r = http(
        reg.addr,
        "PUT",
        &format!("{loc}?digest={}", sha256(b"hello")),
        &[],
        b"",
    );
    assert_eq!(r.code().as_deref(), Some("BLOB_UPLOAD_UNKNOWN"));
    for d in [&wrong, &sha256(b"hello")] {
        let r = http(reg.addr, "HEAD", &format!("/v2/x/blobs/{d}"), &[], b"");
        assert_eq!(r.status, 404);
    }
    assert_eq!(reg.blob_files(), 0);
    assert_eq!(count_files(&reg.data().join("uploads")), 0);
    // A PUT without a digest is refused too.
    let r = http(reg.addr, "POST", "/v2/x/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    let r = http(reg.addr, "PUT", &loc, &[], b"abc");
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("DIGEST_INVALID"))
    );
}

#[test]
fn chunked_upload_status_out_of_order_resume_and_cancel() {
    let reg = Registry::start();
    let data = noise(30_000, 9);
    let r = http(reg.addr, "POST", "/v2/c/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-0"));
    assert!(r.header("docker-upload-uuid").is_some());
    let loc = r.header("location").unwrap().to_string();
    let r = http(
        reg.addr,
        "PATCH",
        &loc,
        &[
            ("Content-Range", "0-9999"),
            ("Content-Type", "application/octet-stream"),
        ],
        &data[..10_000],
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-9999"));
    let loc = r.header("location").unwrap().to_string();
    // Out of order: skips bytes 10000..19999.
    let r = http(
        reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", "20000-29999")],
        &data[20_000..],
    );
    assert_eq!(
        (r.status, r.code().as_deref()),
        (416, Some("RANGE_INVALID"))
    );
    // Repeats the first chunk: also out of order.
    let r = http(
        reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", "0-9999")],
        &data[..10_000],
    );
    assert_eq!(r.status, 416);
    // Resume: ask where we are, continue from there.
    let r = http(reg.addr, "GET", &loc, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-9999"));
    // A chunk whose body is shorter than its Content-Range is refused and rolled back.
    let r = http(
        reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", "10000-19999")],
        &data[10_000..15_000],
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = http(reg.addr, "GET", &loc, &[], b"");
    assert_eq!(r.header("range"), Some("0-9999"));
    let r = http(
        reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", "10000-19999")],
        &data[10_000..20_000],
    );
    assert_eq!(r.status, 202);
    // Streamed chunk without Content-Range, then the last bytes with the PUT.
    let r = http(reg.addr, "PATCH", &loc, &[], &data[20_000..25_000]);
    assert_eq!(r.header("range"), Some("0-24999"));
    let d = sha256(&data);
    let r = http(
        reg.addr,
        "PUT",
        &format!("{loc}?digest={d}"),
        &[("Content-Range", "25000-29999")],
        &data[25_000..],
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/c/blobs/{d}").as_str())
    );
    let r = http(reg.addr, "GET", &format!("/v2/c/blobs/{d}"), &[], b"");
    assert_eq!(r.body, data);

    // Cancel: status and further chunks then answer BLOB_UPLOAD_UNKNOWN.
    let r = http(reg.addr, "POST", "/v2/c/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    http(reg.addr, "PATCH", &loc, &[], b"partial");
    let r = http(reg.addr, "DELETE", &loc, &[], b"");
    assert_eq!(r.status, 204);
    let r = http(reg.addr, "GET", &loc, &[], b"");
    assert_eq!(
        (r.status, r.code().as_deref()),
        (404, Some("BLOB_UPLOAD_UNKNOWN"))
    );
    let r = http(reg.addr, "DELETE", &loc, &[], b"");
    assert_eq!(r.code().as_deref(), Some("BLOB_UPLOAD_UNKNOWN"));
    // An upload of one repository is unknown to another.
    let r = http(reg.addr, "POST", "/v2/c/blobs/uploads/", &[], b"");
    let id = r.header("docker-upload-uuid").unwrap().to_string();
    let r = http(
        reg.addr,
        "GET",
        &format!("/v2/d/blobs/uploads/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.code().as_deref(), Some("BLOB_UPLOAD_UNKNOWN"));
}

#[test]
fn sha512_blobs_are_accepted() {
    let reg = Registry::start();
    use sha2::Digest as _;
    let data = b"sha512 content";
    let d = format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)));
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/s/blobs/uploads/?digest={d}"),
        &[],
        data,
    );
    assert_eq!(r.status, 201);
    let r = http(reg.addr, "GET", &format!("/v2/s/blobs/{d}"), &[], b"");
    assert_eq!(r.body, data);
}

#[test]
fn cross_repository_mount() {
    let reg = Registry::start();
    let d = push_blob(reg.addr, "src/repo", b"shared layer");
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/dst/blobs/{d}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = http(reg.addr, "GET", &format!("/v2/dst/blobs/{d}"), &[], b"");
    assert_eq!(r.body, b"shared layer");
    assert_eq!(reg.blob_files(), 1);
    // Not in the source: falls back to an upload session.
    let missing = sha256(b"missing");
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/dst/blobs/uploads/?mount={missing}&from=src/repo"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("/v2/dst/blobs/uploads/"));
}

#[test]
fn manifests_by_tag_and_digest_with_content_types() {
    let reg = Registry::start();
    let digest = push_image(reg.addr, "m", "v1", 1);
    for reference in ["v1", digest.as_str()] {
        let path = format!("/v2/m/manifests/{reference}");
        let r = http(reg.addr, "HEAD", &path, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        let r = http(reg.addr, "GET", &path, &[], b"");
        assert_eq!(sha256(&r.body), digest);
        assert_eq!(
            r.header("content-length").unwrap(),
            r.body.len().to_string()
        );
    }
    // Docker schema 2 manifest and manifest list keep their media types.
    let config = b"{\"os\":\"linux\"}";
    let layer = noise(500, 3);
    push_blob(reg.addr, "m", config);
    push_blob(reg.addr, "m", &layer);
    let docker = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha256(&layer), "size": layer.len()}],
    })).unwrap();
    let dt = "application/vnd.docker.distribution.manifest.v2+json";
    let r = http(
        reg.addr,
        "PUT",
        "/v2/m/manifests/docker",
        &[("Content-Type", dt)],
        &docker,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(sha256(&docker).as_str())
    );
    let r = http(reg.addr, "GET", "/v2/m/manifests/docker", &[], b"");
    assert_eq!(r.header("content-type"), Some(dt));
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": dt, "digest": sha256(&docker), "size": docker.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    })).unwrap();
    let lt = "application/vnd.docker.distribution.manifest.list.v2+json";
    let r = http(
        reg.addr,
        "PUT",
        "/v2/m/manifests/list",
        &[("Content-Type", lt)],
        &list,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = http(reg.addr, "GET", "/v2/m/manifests/list", &[], b"");
    assert_eq!(r.header("content-type"), Some(lt));
    assert_eq!(r.body, list);
    // PUT by digest must match the body.
    let r = http(
        reg.addr,
        "PUT",
        &format!("/v2/m/manifests/{}", sha256(b"x")),
        &[("Content-Type", lt)],
        &list,
    );
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("DIGEST_INVALID"))
    );
    let r = http(
        reg.addr,
        "PUT",
        &format!("/v2/m/manifests/{}", sha256(&list)),
        &[("Content-Type", lt)],
        &list,
    );
    assert_eq!(r.status, 201);
    // Delete by tag removes the tag only; by digest removes the manifest.
    let r = http(reg.addr, "DELETE", "/v2/m/manifests/v1", &[], b"");
    assert_eq!(r.status, 202);
    assert_eq!(
        http(reg.addr, "GET", "/v2/m/manifests/v1", &[], b"").status,
        404
    );
    assert_eq!(
        http(
            reg.addr,
            "GET",
            &format!("/v2/m/manifests/{digest}"),
            &[],
            b""
        )
        .status,
        200
    );
    let r = http(
        reg.addr,
        "DELETE",
        &format!("/v2/m/manifests/{digest}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    let r = http(
        reg.addr,
        "GET",
        &format!("/v2/m/manifests/{digest}"),
        &[],
        b"",
    );
    assert_eq!(
        (r.status, r.code().as_deref()),
        (404, Some("MANIFEST_UNKNOWN"))
    );
}

#[test]
fn bad_manifests_are_refused() {
    let reg = Registry::start();
    let config = b"{}";
    push_blob(reg.addr, "bad", config);
    let put = |body: &[u8], ct: &str| {
        http(
            reg.addr,
            "PUT",
            "/v2/bad/manifests/t",
            &[("Content-Type", ct)],
            body,
        )
    };
    // Missing layer.
    let m = image_manifest(config, &[b"never pushed"]);
    let r = put(&m, OCI_MANIFEST);
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("MANIFEST_BLOB_UNKNOWN"))
    );
    // Missing config.
    let m = image_manifest(b"no config", &[]);
    assert_eq!(
        put(&m, OCI_MANIFEST).code().as_deref(),
        Some("MANIFEST_BLOB_UNKNOWN")
    );
    // A blob of another repository does not count.
    push_blob(reg.addr, "elsewhere", b"layer elsewhere");
    let m = image_manifest(config, &[b"layer elsewhere"]);
    assert_eq!(
        put(&m, OCI_MANIFEST).code().as_deref(),
        Some("MANIFEST_BLOB_UNKNOWN")
    );
    // Index whose child is not there.
    let idx = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"child"), "size": 5}]}),
    )
    .unwrap();
    assert_eq!(
        put(&idx, OCI_INDEX).code().as_deref(),
        Some("MANIFEST_BLOB_UNKNOWN")
    );
    // Unknown media type, bad JSON, media type disagreeing with the body.
    let m = image_manifest(config, &[]);
    let r = put(&m, "application/vnd.example.unknown+json");
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("MANIFEST_INVALID"))
    );
    assert_eq!(
        put(b"{not json", OCI_MANIFEST).code().as_deref(),
        Some("MANIFEST_INVALID")
    );
    assert_eq!(
        put(&m, OCI_INDEX).code().as_deref(),
        Some("MANIFEST_INVALID")
    );
    // Over 4 MiB.
    let mut huge = b"{\"schemaVersion\":2,\"annotations\":{\"x\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024));
    huge.extend_from_slice(b"\"}}");
    let r = put(&huge, OCI_MANIFEST);
    assert_eq!(
        (r.status, r.code().as_deref()),
        (413, Some("MANIFEST_INVALID"))
    );
    // Bad tag.
    let r = http(
        reg.addr,
        "PUT",
        "/v2/bad/manifests/-tag",
        &[("Content-Type", OCI_MANIFEST)],
        &m,
    );
    assert_eq!((r.status, r.code().as_deref()), (400, Some("TAG_INVALID")));
    // Nothing of the above became visible.
    let r = http(reg.addr, "GET", "/v2/bad/manifests/t", &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(reg.blob_files(), 2);
    // And the server still serves.
    assert_eq!(put(&m, OCI_MANIFEST).status, 201);
}

#[test]
fn invalid_repository_names() {
    let reg = Registry::start();
    for name in ["Upper/case", "a/../b", "a/./b", "-a", "a__-b", "a//b"] {
        for path in [
            format!("/v2/{name}/tags/list"),
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/blobs/uploads/"),
        ] {
            let method = if path.ends_with("uploads/") {
                "POST"
            } else {
                "GET"
            };
            let r = http(reg.addr, method, &path, &[], b"");
            assert_eq!(
                (r.status, r.code().as_deref()),
                (400, Some("NAME_INVALID")),
                "{path}"
            );
        }
    }
    let r = http(reg.addr, "GET", "/v2/never/pushed/tags/list", &[], b"");
    assert_eq!((r.status, r.code().as_deref()), (404, Some("NAME_UNKNOWN")));
}

#[test]
fn tags_and_catalog_pagination() {
    let reg = Registry::start();
    for (i, tag) in ["e", "a", "d", "b", "c"].iter().enumerate() {
        push_image(reg.addr, "p/tags", tag, i as u8);
    }
    let r = http(reg.addr, "GET", "/v2/p/tags/tags/list", &[], b"");
    assert_eq!(
        r.json()["tags"],
        serde_json::json!(["a", "b", "c", "d", "e"])
    );
    let mut path = "/v2/p/tags/tags/list?n=2".to_string();
    let mut pages = Vec::new();
    loop {
        let r = http(reg.addr, "GET", &path, &[], b"");
        assert_eq!(r.status, 200);
        pages.push(r.json()["tags"].clone());
        let Some(link) = r.header("link") else { break };
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        path = link[1..link.find('>').unwrap()].to_string();
    }
    assert_eq!(
        pages,
        vec![
            serde_json::json!(["a", "b"]),
            serde_json::json!(["c", "d"]),
            serde_json::json!(["e"])
        ]
    );
    let r = http(reg.addr, "GET", "/v2/p/tags/tags/list?n=2&last=b", &[], b"");
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "d"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/p/tags/tags/list?last=d&n=2>; rel=\"next\"")
    );
    let r = http(reg.addr, "GET", "/v2/p/tags/tags/list?n=0", &[], b"");
    assert_eq!(r.json()["tags"], serde_json::json!([]));

    push_image(reg.addr, "z", "1", 1);
    push_image(reg.addr, "a/b/c", "1", 1);
    let r = http(reg.addr, "GET", "/v2/_catalog", &[], b"");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["a/b/c", "p/tags", "z"])
    );
    let r = http(reg.addr, "GET", "/v2/_catalog?n=1", &[], b"");
    assert_eq!(r.json()["repositories"], serde_json::json!(["a/b/c"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?last=a/b/c&n=1>; rel=\"next\"")
    );
    let r = http(reg.addr, "GET", "/v2/_catalog?n=5&last=a/b/c", &[], b"");
    assert_eq!(r.json()["repositories"], serde_json::json!(["p/tags", "z"]));
    assert!(r.header("link").is_none());
}

#[test]
fn referrers_api() {
    let reg = Registry::start();
    let subject = push_image(reg.addr, "r", "v1", 1);
    let sub_size = http(reg.addr, "GET", "/v2/r/manifests/v1", &[], b"")
        .body
        .len();
    let empty = b"{}";
    push_blob(reg.addr, "r", empty);
    let mut digests = Vec::new();
    for (i, at) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let sig = noise(10 + i, i as u64);
        push_blob(reg.addr, "r", &sig);
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sha256(&sig), "size": sig.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": sub_size},
            "annotations": {"n": i.to_string()},
        })).unwrap();
        let d = sha256(&m);
        let r = http(
            reg.addr,
            "PUT",
            &format!("/v2/r/manifests/{d}"),
            &[("Content-Type", OCI_MANIFEST)],
            &m,
        );
        assert_eq!(r.status, 201);
        assert_eq!(r.header("oci-subject"), Some(subject.as_str()));
        digests.push((d, m.len()));
    }
    let r = http(
        reg.addr,
        "GET",
        &format!("/v2/r/referrers/{subject}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let idx = r.json();
    assert_eq!(idx["mediaType"], OCI_INDEX);
    let mut got: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = digests.iter().map(|d| d.0.clone()).collect();
    want.sort();
    assert_eq!(got, want);
    let r = http(
        reg.addr,
        "GET",
        &format!("/v2/r/referrers/{subject}?artifactType=application%2Fvnd.example.sig"),
        &[],
        b"",
    );
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let m = &r.json()["manifests"];
    assert_eq!(m.as_array().unwrap().len(), 1);
    assert_eq!(m[0]["digest"], digests[1].0.as_str());
    assert_eq!(m[0]["size"], digests[1].1);
    assert_eq!(m[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(m[0]["annotations"]["n"], "1");
    // Pages of one, in digest order, linked with rel="next".
    let mut want_sorted: Vec<String> = digests.iter().map(|d| d.0.clone()).collect();
    want_sorted.sort();
    let r = http(
        reg.addr,
        "GET",
        &format!("/v2/r/referrers/{subject}?n=1"),
        &[],
        b"",
    );
    assert_eq!(r.json()["manifests"][0]["digest"], want_sorted[0].as_str());
    let link = r
        .header("link")
        .expect("a Link to the next page")
        .to_string();
    assert!(link.ends_with("rel=\"next\""), "{link}");
    let next = &link[1..link.find('>').unwrap()];
    let r = http(reg.addr, "GET", next, &[], b"");
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["manifests"][0]["digest"], want_sorted[1].as_str());
    assert_eq!(r.header("link"), None);
    // Unknown subject: empty index, not 404.
    let r = http(
        reg.addr,
        "GET",
        &format!("/v2/r/referrers/{}", sha256(b"none")),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    // Deleting a referrer removes it from the list.
    http(
        reg.addr,
        "DELETE",
        &format!("/v2/r/manifests/{}", digests[0].0),
        &[],
        b"",
    );
    let r = http(
        reg.addr,
        "GET",
        &format!("/v2/r/referrers/{subject}"),
        &[],
        b"",
    );
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn read_only_mode_denies_writes() {
    let reg = Registry::start_with(|c| c.read_only = true);
    for (method, path) in [
        ("POST", "/v2/x/blobs/uploads/"),
        ("PUT", "/v2/x/manifests/t"),
        ("DELETE", "/v2/x/manifests/t"),
        ("PATCH", "/v2/x/blobs/uploads/abc"),
    ] {
        let r = http(reg.addr, method, path, &[], b"{}");
        assert_eq!(
            (r.status, r.code().as_deref()),
            (405, Some("DENIED")),
            "{method} {path}"
        );
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(http(reg.addr, "GET", "/v2/", &[], b"").status, 200);
    assert_eq!(
        http(reg.addr, "GET", "/v2/x/tags/list", &[], b"").status,
        404
    );
}

#[test]
fn idle_uploads_expire() {
    let reg = Registry::start_with(|c| c.upload_expiry = Duration::from_millis(300));
    let r = http(reg.addr, "POST", "/v2/e/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    http(reg.addr, "PATCH", &loc, &[], b"abandoned");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http(reg.addr, "GET", &loc, &[], b"");
        if r.status == 404 {
            assert_eq!(r.code().as_deref(), Some("BLOB_UPLOAD_UNKNOWN"));
            break;
        }
        assert!(Instant::now() < deadline, "upload never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_files(&reg.data().join("uploads")), 0);
    assert_eq!(reg.blob_files(), 0);
}

#[test]
fn gc_removes_unreferenced_blobs() {
    let reg = Registry::start();
    let keep = push_image(reg.addr, "g", "keep", 1);
    let drop_ = push_image(reg.addr, "g", "drop", 2);
    push_blob(reg.addr, "g", b"orphan");
    assert_eq!(reg.blob_files(), 7);
    http(
        reg.addr,
        "DELETE",
        &format!("/v2/g/manifests/{drop_}"),
        &[],
        b"",
    );
    let report = skiff_registry::gc(&reg.data()).unwrap();
    assert_eq!(report.blobs_removed, 4, "{report:?}");
    assert_eq!(report.blobs_kept, 3);
    assert_eq!(reg.blob_files(), 3);
    let r = http(reg.addr, "GET", "/v2/g/manifests/keep", &[], b"");
    assert_eq!(sha256(&r.body), keep);
    let m: serde_json::Value = r.json();
    for d in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
        let r = http(
            reg.addr,
            "HEAD",
            &format!("/v2/g/blobs/{}", d.as_str().unwrap()),
            &[],
            b"",
        );
        assert_eq!(r.status, 200);
    }
    let r = http(
        reg.addr,
        "HEAD",
        &format!("/v2/g/blobs/{}", sha256(b"orphan")),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
}

/// Sends a request head promising `declared` body bytes, then only `sent` of them, and
/// hangs up: what a client killed mid-push does.
fn interrupted(addr: std::net::SocketAddr, method: &str, path: &str, declared: usize, sent: &[u8]) {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    s.write_all(sent).unwrap();
    s.flush().unwrap();
    drop(s);
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn interrupted_uploads_are_never_visible() {
    let reg = Registry::start();
    let data = noise(100_000, 11);
    let d = sha256(&data);
    // Monolithic upload cut off: no blob, no leftover upload.
    interrupted(
        reg.addr,
        "POST",
        &format!("/v2/i/blobs/uploads/?digest={d}"),
        data.len(),
        &data[..40_000],
    );
    wait_until("the cut-off upload is discarded", || {
        count_files(&reg.data().join("uploads")) == 0
    });
    assert_eq!(
        http(reg.addr, "HEAD", &format!("/v2/i/blobs/{d}"), &[], b"").status,
        404
    );
    // Chunk cut off: rolled back to the last complete chunk, then resumable.
    let r = http(reg.addr, "POST", "/v2/i/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    let r = http(reg.addr, "PATCH", &loc, &[], &data[..10_000]);
    assert_eq!(r.header("range"), Some("0-9999"));
    interrupted(reg.addr, "PATCH", &loc, 90_000, &data[10_000..50_000]);
    // The server notices the hang-up asynchronously; the rollback happens under the
    // upload's lock, so a status request waits for it.
    wait_until("the cut-off chunk is rolled back", || {
        let r = http(reg.addr, "GET", &loc, &[], b"");
        r.header("range") == Some("0-9999")
            && std::fs::metadata(
                reg.data()
                    .join("uploads")
                    .join(loc.rsplit('/').next().unwrap())
                    .join("data"),
            )
            .unwrap()
            .len()
                == 10_000
    });
    assert_eq!(
        http(reg.addr, "HEAD", &format!("/v2/i/blobs/{d}"), &[], b"").status,
        404
    );
    let r = http(
        reg.addr,
        "PUT",
        &format!("{loc}?digest={d}"),
        &[],
        &data[10_000..],
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        http(reg.addr, "GET", &format!("/v2/i/blobs/{d}"), &[], b"").body,
        data
    );
}

#[test]
fn uploads_resume_across_a_restart() {
    let reg = Registry::start();
    let data = noise(50_000, 12);
    let r = http(reg.addr, "POST", "/v2/resume/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    http(
        reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", "0-19999")],
        &data[..20_000],
    );
    let dir = reg.stop();
    let reg = Registry::start_in(dir, |_| {});
    let r = http(reg.addr, "GET", &loc, &[], b"");
    assert_eq!((r.status, r.header("range")), (204, Some("0-19999")));
    let r = http(
        reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", "20000-49999")],
        &data[20_000..],
    );
    assert_eq!(r.status, 202);
    // The digest is recomputed from disk, as the running hash did not survive.
    let r = http(
        reg.addr,
        "PUT",
        &format!("{loc}?digest={}", sha256(b"wrong")),
        &[],
        b"",
    );
    assert_eq!(r.code().as_deref(), Some("DIGEST_INVALID"));
    let r = http(reg.addr, "POST", "/v2/resume/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    http(reg.addr, "PATCH", &loc, &[], &data[..30_000]);
    let dir = reg.stop();
    let reg = Registry::start_in(dir, |_| {});
    let d = sha256(&data);
    let r = http(
        reg.addr,
        "PUT",
        &format!("{loc}?digest={d}"),
        &[("Content-Range", "30000-49999")],
        &data[30_000..],
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        http(reg.addr, "GET", &format!("/v2/resume/blobs/{d}"), &[], b"").body,
        data
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn large_blobs_stream_with_flat_memory() {
    use std::io::{Read as _, Write as _};
    let reg = Registry::start();
    const MIB: usize = 1 << 20;
    const SIZE_MIB: usize = 256;
    let mut block = noise(MIB, 21);
    let fill = |i: usize, b: &mut Vec<u8>| b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let mut h = sha2::Sha256::new();
    use sha2::Digest as _;
    for i in 0..SIZE_MIB {
        fill(i, &mut block);
        h.update(&block);
    }
    let d = format!("sha256:{}", hex::encode(h.finalize()));
    let before = peak_rss_kib();
    // The server runs in this process, so its peak RSS is ours: after pushing and pulling
    // 256 MiB it must have grown by far less than the blob.
    let mut s = std::net::TcpStream::connect(reg.addr).unwrap();
    write!(
        s,
        "POST /v2/big/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        SIZE_MIB * MIB
    )
    .unwrap();
    for i in 0..SIZE_MIB {
        fill(i, &mut block);
        s.write_all(&block).unwrap();
    }
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let mut s = std::net::TcpStream::connect(reg.addr).unwrap();
    write!(
        s,
        "GET /v2/big/blobs/{d} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut in_body = false;
    let mut body_len = 0usize;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if !in_body {
            head.extend_from_slice(chunk);
            let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let rest = head[p + 4..].to_vec();
            h.update(&rest);
            body_len += rest.len();
            in_body = true;
            chunk = &[];
        }
        h.update(chunk);
        body_len += chunk.len();
    }
    assert_eq!(body_len, SIZE_MIB * MIB);
    assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), d);
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB while streaming a {SIZE_MIB} MiB blob"
    );
}

#[test]
fn concurrent_pushes_of_one_blob_store_it_once() {
    let reg = Registry::start();
    let data = noise(2_000_000, 31);
    let d = sha256(&data);
    let addr = reg.addr;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let data = data.clone();
            let d = d.clone();
            std::thread::spawn(move || {
                let repo = format!("race/r{}", i % 3);
                if i % 2 == 0 {
                    http(
                        addr,
                        "POST",
                        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                        &[],
                        &data,
                    )
                    .status
                } else {
                    let r = http(
                        addr,
                        "POST",
                        &format!("/v2/{repo}/blobs/uploads/"),
                        &[],
                        b"",
                    );
                    let loc = r.header("location").unwrap().to_string();
                    http(addr, "PATCH", &loc, &[], &data[..1_000_000]);
                    http(
                        addr,
                        "PUT",
                        &format!("{loc}?digest={d}"),
                        &[],
                        &data[1_000_000..],
                    )
                    .status
                }
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 201);
    }
    assert_eq!(reg.blob_files(), 1);
    assert_eq!(count_files(&reg.data().join("uploads")), 0);
    for i in 0..3 {
        let r = http(addr, "GET", &format!("/v2/race/r{i}/blobs/{d}"), &[], b"");
        assert_eq!(r.body, data);
    }
}
