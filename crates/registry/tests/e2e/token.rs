//! The Bearer token flow and Basic auth as docker and skopeo drive them, in raw HTTP.

use base64::Engine as _;

use crate::common::*;

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn start() -> (Registry, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", "bob", "pw"])
        .output()
        .expect("htpasswd (apache2-utils) must be installed");
    let p = work.path().join("htpasswd");
    std::fs::write(&p, &out.stdout).unwrap();
    (Registry::start_with(|c| c.htpasswd = Some(p)), work)
}

fn token(reg: &Registry, auth: Option<&str>, scope: &str) -> Resp {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http(
        reg.addr,
        "GET",
        &format!("/token?service=skiff-registry&scope={scope}"),
        &headers,
        b"",
    )
}

#[test]
fn challenge_token_and_scopes() {
    let (reg, _work) = start();
    let host = reg.host();
    let r = http(reg.addr, "GET", "/v2/", &[], b"");
    assert_eq!((r.status, r.code().as_deref()), (401, Some("UNAUTHORIZED")));
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Bearer realm=\"http://{host}/token\",service=\"skiff-registry\"").as_str())
    );
    let r = http(reg.addr, "GET", "/v2/team/app/tags/list", &[], b"");
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Bearer realm=\"http://{host}/token\",service=\"skiff-registry\",scope=\"repository:team/app:pull\"").as_str())
    );
    let r = http(reg.addr, "POST", "/v2/team/app/blobs/uploads/", &[], b"");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .ends_with("scope=\"repository:team/app:pull,push\""));

    // The token endpoint wants valid Basic credentials.
    assert_eq!(
        token(&reg, None, "repository:team/app:pull,push").status,
        401
    );
    assert_eq!(
        token(
            &reg,
            Some(&basic("bob", "nope")),
            "repository:team/app:pull,push"
        )
        .status,
        401
    );
    assert_eq!(
        token(
            &reg,
            Some(&basic("eve", "pw")),
            "repository:team/app:pull,push"
        )
        .status,
        401
    );
    let r = token(
        &reg,
        Some(&basic("bob", "pw")),
        "repository:team/app:pull,push",
    );
    assert_eq!(r.status, 200);
    let j = r.json();
    let tok = j["token"].as_str().unwrap().to_string();
    assert_eq!(j["access_token"], tok.as_str());
    assert!(j["expires_in"].as_u64().unwrap() >= 60);
    assert!(j["issued_at"].as_str().unwrap().ends_with('Z'));
    let bearer = format!("Bearer {tok}");
    let auth = [("Authorization", bearer.as_str())];

    assert_eq!(http(reg.addr, "GET", "/v2/", &auth, b"").status, 200);
    let data = b"layer";
    let d = sha256(data);
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={d}"),
        &auth,
        data,
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        http(
            reg.addr,
            "HEAD",
            &format!("/v2/team/app/blobs/{d}"),
            &auth,
            b""
        )
        .status,
        200
    );
    // Another repository is outside the token's scope.
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/team/other/blobs/uploads/?digest={d}"),
        &auth,
        data,
    );
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));
    // So is the catalog, and deleting.
    assert_eq!(
        http(reg.addr, "GET", "/v2/_catalog", &auth, b"").status,
        401
    );
    assert_eq!(
        http(
            reg.addr,
            "DELETE",
            &format!("/v2/team/app/blobs/{d}"),
            &auth,
            b""
        )
        .status,
        401
    );
    // A pull-only token cannot push.
    let j = token(&reg, Some(&basic("bob", "pw")), "repository:team/app:pull").json();
    let ro = format!("Bearer {}", j["token"].as_str().unwrap());
    let r = http(
        reg.addr,
        "POST",
        "/v2/team/app/blobs/uploads/",
        &[("Authorization", ro.as_str())],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        http(
            reg.addr,
            "HEAD",
            &format!("/v2/team/app/blobs/{d}"),
            &[("Authorization", ro.as_str())],
            b""
        )
        .status,
        200
    );
    // A tampered token is worthless.
    let mut bad = tok.clone();
    let i = bad.len() - 3;
    bad.replace_range(i..i + 1, if &tok[i..i + 1] == "A" { "B" } else { "A" });
    let bad = format!("Bearer {bad}");
    assert_eq!(
        http(
            reg.addr,
            "GET",
            "/v2/",
            &[("Authorization", bad.as_str())],
            b""
        )
        .status,
        401
    );
    // Several scopes in one request, as docker asks for a mount source.
    let r = token(
        &reg,
        Some(&basic("bob", "pw")),
        "repository:team/other:pull,push&scope=repository:team/app:pull",
    );
    let both = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/team/other/blobs/uploads/?mount={d}&from=team/app"),
        &[("Authorization", both.as_str())],
        b"",
    );
    assert_eq!(r.status, 201);
}

#[test]
fn basic_auth_on_every_request_and_password_grant() {
    let (reg, _work) = start();
    let good = basic("bob", "pw");
    let auth = [("Authorization", good.as_str())];
    push_blob_with(&reg, &auth);
    assert_eq!(
        http(reg.addr, "GET", "/v2/_catalog", &auth, b"").status,
        200
    );
    let wrong = basic("bob", "wrong");
    let r = http(
        reg.addr,
        "GET",
        "/v2/",
        &[("Authorization", wrong.as_str())],
        b"",
    );
    assert_eq!((r.status, r.code().as_deref()), (401, Some("UNAUTHORIZED")));
    // OAuth2 password grant (docker's POST form).
    let form = "grant_type=password&username=bob&password=pw&service=skiff-registry&scope=repository%3Ax%3Apull&client_id=docker";
    let r = http(
        reg.addr,
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["scope"], "repository:x:pull");
    let form = "grant_type=password&username=bob&password=bad&service=skiff-registry";
    let r = http(
        reg.addr,
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.status, 401);
}

fn push_blob_with(reg: &Registry, auth: &[(&str, &str)]) {
    let d = sha256(b"basic");
    let r = http(
        reg.addr,
        "POST",
        &format!("/v2/b/blobs/uploads/?digest={d}"),
        auth,
        b"basic",
    );
    assert_eq!(r.status, 201);
}
