//! `/metrics` after a push with skopeo: requests by handler and code, body bytes, upload
//! durations.

use crate::common::*;

/// The value of the sample line `name{labels}` (labels as the registry writes them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_count_a_skopeo_push() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let layer = make_layer(work.path(), "app", 300_000, 7, false);
    let m = add_image(&layout, std::slice::from_ref(&layer), "amd64");
    write_index(&layout, "v1", vec![m]);
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/metrics/app:v1", reg.host()),
    ]);
    assert_ok(&out, "skopeo copy to skiff");

    let r = http(reg.addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{r:?}"
    );
    let text = String::from_utf8(r.body).unwrap();
    // The manifest was stored once, answered 201.
    let puts = sample(
        &text,
        r#"registry_http_requests_total{method="PUT",handler="manifest",code="201"}"#,
    );
    assert_eq!(puts, Some(1.0), "{text}");
    // Every blob (config and layer) went through an upload that finished verified.
    let uploads = sample(&text, "registry_blob_upload_duration_seconds_count").unwrap_or(0.0);
    assert!(uploads >= 2.0, "{text}");
    // At least the layer's bytes arrived as upload bodies.
    let received = sample(
        &text,
        r#"registry_http_received_bytes_total{handler="blob_upload"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        received >= layer.len() as f64,
        "{received} < {}: {text}",
        layer.len()
    );
    let timed = sample(
        &text,
        r#"registry_http_request_duration_seconds_count{method="PUT",handler="manifest"}"#,
    );
    assert_eq!(timed, Some(1.0), "{text}");
    // No repository name is a label value.
    assert!(!text.contains("metrics/app"), "{text}");
}
