//! Where the spec leaves room, distribution (Debian's docker-registry) is the reference:
//! the same request sequence goes to both, and status codes, error codes and the headers
//! clients rely on must agree.

use std::net::SocketAddr;

use crate::common::*;

/// (step, status, error code, selected header)
type Answer = (&'static str, u16, Option<String>, Option<String>);

fn probe(addr: SocketAddr) -> Vec<Answer> {
    let mut out: Vec<Answer> = Vec::new();
    let mut note = |step, r: &Resp, header: &str| {
        out.push((
            step,
            r.status,
            r.code(),
            r.header(header).map(str::to_string),
        ));
    };
    let blob = noise(1000, 5);
    let d = sha256(&blob);
    note(
        "base",
        &http(addr, "GET", "/v2/", &[], b""),
        "docker-distribution-api-version",
    );
    note(
        "tags of unknown repo",
        &http(addr, "GET", "/v2/nope/tags/list", &[], b""),
        "",
    );
    note(
        "unknown manifest",
        &http(addr, "GET", "/v2/nope/manifests/latest", &[], b""),
        "",
    );
    note(
        "HEAD unknown blob",
        &http(addr, "HEAD", &format!("/v2/nope/blobs/{d}"), &[], b""),
        "",
    );
    note(
        "GET unknown blob",
        &http(addr, "GET", &format!("/v2/nope/blobs/{d}"), &[], b""),
        "",
    );
    let r = http(addr, "POST", "/v2/diff/blobs/uploads/", &[], b"");
    note("start upload", &r, "range");
    // Clients must use the Location of the latest response (distribution keeps upload
    // state in it), so follow it as they do.
    let mut loc = location(&r);
    let r = http(
        addr,
        "PATCH",
        &loc,
        &[
            ("Content-Range", "0-499"),
            ("Content-Type", "application/octet-stream"),
        ],
        &blob[..500],
    );
    note("first chunk", &r, "range");
    loc = location(&r);
    let r = http(addr, "GET", &loc, &[], b"");
    note("upload status", &r, "range");
    loc = location(&r);
    let r = http(
        addr,
        "PUT",
        &with_query(&loc, &format!("digest={}", sha256(b"wrong"))),
        &[("Content-Type", "application/octet-stream")],
        &blob[500..],
    );
    note("complete with wrong digest", &r, "");
    note(
        "status after failed completion",
        &http(addr, "GET", &loc, &[], b""),
        "",
    );
    note(
        "HEAD after failed completion",
        &http(addr, "HEAD", &format!("/v2/diff/blobs/{d}"), &[], b""),
        "",
    );
    note(
        "monolithic upload",
        &upload(addr, "diff", &blob),
        "docker-content-digest",
    );
    let r = http(addr, "HEAD", &format!("/v2/diff/blobs/{d}"), &[], b"");
    note("HEAD blob", &r, "content-length");
    let r = http(
        addr,
        "GET",
        &format!("/v2/diff/blobs/{d}"),
        &[("Range", "bytes=100-199")],
        b"",
    );
    note("range GET", &r, "content-range");
    let r = http(
        addr,
        "GET",
        &format!("/v2/diff/blobs/{d}"),
        &[("Range", "bytes=5000-")],
        b"",
    );
    note("unsatisfiable range", &r, "content-range");
    let r = http(
        addr,
        "POST",
        &format!("/v2/mounted/blobs/uploads/?mount={d}&from=diff"),
        &[],
        b"",
    );
    note("mount", &r, "docker-content-digest");
    let r = http(
        addr,
        "POST",
        &format!(
            "/v2/mounted/blobs/uploads/?mount={}&from=diff",
            sha256(b"x")
        ),
        &[],
        b"",
    );
    note("mount of missing blob", &r, "");
    let r = http(addr, "POST", "/v2/diff/blobs/uploads/", &[], b"");
    let loc2 = location(&r);
    note("cancel upload", &http(addr, "DELETE", &loc2, &[], b""), "");
    note(
        "status of cancelled upload",
        &http(addr, "GET", &loc2, &[], b""),
        "",
    );
    note("cancel again", &http(addr, "DELETE", &loc2, &[], b""), "");

    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    assert_eq!(upload(addr, "diff", config).status, 201);
    let ct = [("Content-Type", OCI_MANIFEST)];
    let missing = image_manifest(config, &[b"not pushed"]);
    note(
        "manifest with missing layer",
        &http(addr, "PUT", "/v2/diff/manifests/v1", &ct, &missing),
        "",
    );
    note(
        "manifest that is not JSON",
        &http(addr, "PUT", "/v2/diff/manifests/v1", &ct, b"{nope"),
        "",
    );
    let m = image_manifest(config, &[&blob]);
    let r = http(addr, "PUT", "/v2/diff/manifests/v1", &ct, &m);
    note("manifest", &r, "docker-content-digest");
    note(
        "GET manifest by tag",
        &http(
            addr,
            "GET",
            "/v2/diff/manifests/v1",
            &[("Accept", OCI_MANIFEST)],
            b"",
        ),
        "content-type",
    );
    note(
        "HEAD manifest by digest",
        &http(
            addr,
            "HEAD",
            &format!("/v2/diff/manifests/{}", sha256(&m)),
            &[("Accept", OCI_MANIFEST)],
            b"",
        ),
        "docker-content-digest",
    );
    note(
        "PUT by mismatched digest",
        &http(
            addr,
            "PUT",
            &format!("/v2/diff/manifests/{}", sha256(b"other")),
            &ct,
            &m,
        ),
        "",
    );
    note(
        "tags list",
        &http(addr, "GET", "/v2/diff/tags/list", &[], b""),
        "",
    );
    note(
        "delete manifest",
        &http(
            addr,
            "DELETE",
            &format!("/v2/diff/manifests/{}", sha256(&m)),
            &[],
            b"",
        ),
        "",
    );
    note(
        "GET deleted manifest",
        &http(
            addr,
            "GET",
            &format!("/v2/diff/manifests/{}", sha256(&m)),
            &[("Accept", OCI_MANIFEST)],
            b"",
        ),
        "",
    );
    // Last, as it breaks distribution 2.8's upload (see INTENDED).
    let r = http(addr, "POST", "/v2/diff/blobs/uploads/", &[], b"");
    let r = http(
        addr,
        "PATCH",
        &location(&r),
        &[
            ("Content-Range", "0-4"),
            ("Content-Type", "application/octet-stream"),
        ],
        b"hello",
    );
    let r = http(
        addr,
        "PATCH",
        &location(&r),
        &[
            ("Content-Range", "10-14"),
            ("Content-Type", "application/octet-stream"),
        ],
        b"hello",
    );
    note("out-of-order chunk", &r, "");
    out
}

/// The path and query of a response's Location (distribution answers with absolute
/// URLs, skiff with absolute paths; both are valid).
fn location(r: &Resp) -> String {
    let l = r
        .header("location")
        .unwrap_or_else(|| panic!("no Location in {r:?}"));
    l[l.find("/v2/").unwrap()..].to_string()
}

/// Single-POST upload, which is optional in the spec (distribution 2.8 lacks it): a client
/// then finishes with a PUT, and the outcome is what must agree.
fn upload(addr: SocketAddr, repo: &str, data: &[u8]) -> Resp {
    let d = sha256(data);
    let ct = [("Content-Type", "application/octet-stream")];
    let r = http(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &ct,
        data,
    );
    if r.status != 202 {
        return r;
    }
    http(
        addr,
        "PUT",
        &with_query(&location(&r), &format!("digest={d}")),
        &ct,
        data,
    )
}

fn with_query(loc: &str, q: &str) -> String {
    format!("{loc}{}{q}", if loc.contains('?') { '&' } else { '?' })
}

/// Differences we keep on purpose, each for a reason given here:
/// - "out-of-order chunk": distribution 2.8.2 answers 202 and appends the chunk at the
///   wrong offset (its own status request then fails); the spec and distribution 3 answer
///   416, as we do.
/// - "status after failed completion": distribution answers BLOB_UPLOAD_INVALID (its
///   upload state token no longer verifies); the upload is gone, and we say
///   BLOB_UPLOAD_UNKNOWN as both do after a cancel.
/// - "unsatisfiable range": same 416 and Content-Range; we add the JSON error body that
///   every other error has, distribution sends none.
const INTENDED: &[&str] = &[
    "out-of-order chunk",
    "status after failed completion",
    "unsatisfiable range",
];

#[test]
fn matches_docker_registry() {
    let ours = Registry::start();
    let peer = Peer::start(false);
    let a = probe(ours.addr);
    let b = probe(peer.addr);
    let mut diffs = Vec::new();
    for (x, y) in a.iter().zip(b.iter()) {
        if x != y && !INTENDED.contains(&x.0) {
            diffs.push(format!(
                "{}:\n  skiff:           {:?}\n  docker-registry: {:?}",
                x.0,
                (x.1, &x.2, &x.3),
                (y.1, &y.2, &y.3)
            ));
        }
    }
    assert!(diffs.is_empty(), "answers differ:\n{}", diffs.join("\n"));
}

#[test]
fn read_only_matches_docker_registry() {
    let ours = Registry::start_with(|c| c.read_only = true);
    let peer = Peer::start(true);
    for (method, path) in [
        ("POST", "/v2/ro/blobs/uploads/"),
        ("PUT", "/v2/ro/manifests/t"),
        ("DELETE", "/v2/ro/manifests/t"),
    ] {
        let a = http(ours.addr, method, path, &[], b"{}");
        let b = http(peer.addr, method, path, &[], b"{}");
        assert_eq!(a.status, b.status, "{method} {path}");
        assert_eq!(a.header("allow"), b.header("allow"), "{method} {path}");
    }
}
