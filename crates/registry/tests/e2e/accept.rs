//! Manifest content negotiation by `Accept`, compared with distribution: a Docker
//! schema2-only client gets MANIFEST_UNKNOWN for OCI content and the linux/<arch> entry
//! of a Docker manifest list fetched by tag.

use std::net::SocketAddr;

use crate::common::*;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// POST then PUT (docker-registry 2.8 has no single-POST upload).
fn put_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = http(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202, "{r:?}");
    let loc = r.header("location").unwrap();
    let path = &loc[loc.find("/v2/").unwrap()..];
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = http(
        addr,
        "PUT",
        &format!("{path}{sep}digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(r.status, 201, "{r:?}");
    d
}

fn put_image(addr: SocketAddr, repo: &str, tag: &str, seed: u8) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
    let layer = vec![seed; 1000 + seed as usize];
    put_blob(addr, repo, config.as_bytes());
    put_blob(addr, repo, &layer);
    let m = image_manifest(config.as_bytes(), &[&layer]);
    let r = http(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &m,
    );
    assert_eq!(r.status, 201, "{r:?}");
}

/// (step, status, error code, Content-Type, Docker-Content-Digest)
type Answer = (
    &'static str,
    u16,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Pushes an OCI image, a Docker image and a Docker list over it; returns what each
/// negotiated GET answered: (step, status, error code, Content-Type, Docker-Content-Digest).
fn probe(addr: SocketAddr) -> Vec<Answer> {
    put_image(addr, "neg/app", "oci", 1);
    // A Docker schema2 image over the same kind of blobs.
    let config = br#"{"architecture":"amd64","os":"linux","seed":2}"#.to_vec();
    let layer = vec![2u8; 1002];
    put_blob(addr, "neg/app", &config);
    put_blob(addr, "neg/app", &layer);
    let dm = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let r = http(
        addr,
        "PUT",
        "/v2/neg/app/manifests/docker",
        &[("Content-Type", DOCKER_MANIFEST)],
        &dm,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": sha256(&dm), "size": dm.len(),
             "platform": {"os": "linux", "architecture": arch}},
        ],
    }))
    .unwrap();
    let r = http(
        addr,
        "PUT",
        "/v2/neg/app/manifests/list",
        &[("Content-Type", DOCKER_LIST)],
        &list,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let mut out = Vec::new();
    let steps: [(&'static str, &str, &str); 6] = [
        ("oci manifest, docker-only client", "oci", DOCKER_MANIFEST),
        ("oci manifest, oci client", "oci", OCI_MANIFEST),
        ("docker manifest, docker client", "docker", DOCKER_MANIFEST),
        ("list by tag, schema2-only client", "list", DOCKER_MANIFEST),
        ("list by tag, list-aware client", "list", "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"),
        ("list by digest, schema2-only client", &*Box::leak(sha256(&list).into_boxed_str()), DOCKER_MANIFEST),
    ];
    for (step, reference, accept) in steps {
        let r = http(
            addr,
            "GET",
            &format!("/v2/neg/app/manifests/{reference}"),
            &[("Accept", accept)],
            b"",
        );
        out.push((
            step,
            r.status,
            r.code(),
            // Error bodies differ only in a charset parameter.
            r.header("content-type")
                .map(|t| t.split(';').next().unwrap_or(t).to_string()),
            r.header("docker-content-digest").map(str::to_string),
        ));
    }
    out
}

#[test]
fn accept_negotiation_matches_distribution() {
    let ours = Registry::start();
    let peer = Peer::start(false);
    let a = probe(ours.addr);
    let b = probe(peer.addr);
    assert_eq!(a, b);
    // And it is the negotiation we mean, not two registries agreeing on nothing.
    assert_eq!(a[0].1, 404);
    assert_eq!(a[0].2.as_deref(), Some("MANIFEST_UNKNOWN"));
    assert_eq!(a[3].3.as_deref(), Some(DOCKER_MANIFEST));
    assert_eq!(a[4].3.as_deref(), Some(DOCKER_LIST));
}
