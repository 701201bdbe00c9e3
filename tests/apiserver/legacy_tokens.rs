//! Legacy service-account tokens, only when asked for (Kubernetes 1.24+): a Secret of type
//! `kubernetes.io/service-account-token` naming a ServiceAccount is filled by the
//! controller manager's serviceaccount-token controller (in `skiff server`, or a
//! standalone `skiff controller-manager --service-account-private-key-file`); the API
//! server accepts its token while the Secret holds it and the account exists; deleting the
//! account deletes its token Secrets.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{json, Value};

use crate::api_complete::with_token;
use crate::common::{eventually, run, Server, SKIFF};

fn create(s: &Server, obj: &Value) {
    let mut c = s.kubectl_command("1.33", &["create", "-f", "-"]);
    c.env("KUBECONFIG", s.kubeconfig());
    run(c, Some(&obj.to_string())).ok();
}

fn token_secret(name: &str, account: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": account}}})
}

/// The Secret's `data` once the controller has filled in its token.
fn filled(s: &Server, name: &str) -> Value {
    eventually(&format!("secret {name} filled"), || {
        let out = s.kubectl("1.33", &["get", "secret", name, "-o", "json"]);
        let secret: Value = serde_json::from_str(&out.stdout).ok()?;
        secret["data"]["token"].as_str()?;
        Some(secret)
    })
}

fn decoded(v: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a data value"))
            .expect("base64"),
    )
    .expect("utf-8")
}

fn jwt_claims(token: &str) -> Value {
    let c = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

fn gone(s: &Server, what: &str, name: &str) {
    eventually(&format!("{what} {name} deleted"), || {
        let out = s.kubectl("1.33", &["get", what, name]);
        (out.code != 0 && out.stderr.contains("NotFound")).then_some(())
    });
}

#[test]
fn legacy_token_secrets_are_filled_accepted_and_revoked_with_their_account() {
    let s = Server::start_with_controllers(&[]);
    s.kubectl("1.33", &["create", "serviceaccount", "robot"])
        .ok();
    s.kubectl(
        "1.33",
        &[
            "create",
            "rolebinding",
            "robot-view",
            "--clusterrole=view",
            "--serviceaccount=default:robot",
        ],
    )
    .ok();
    // A token Secret must name its account, as kube-apiserver validates it.
    let mut unnamed = token_secret("unnamed", "x");
    unnamed["metadata"]["annotations"] = json!({});
    let mut c = s.kubectl_command("1.33", &["create", "-f", "-"]);
    c.env("KUBECONFIG", s.kubeconfig());
    let out = run(c, Some(&unnamed.to_string())).fails();
    assert!(
        out.stderr
            .contains("metadata.annotations[kubernetes.io/service-account.name]: Required value"),
        "{out:?}"
    );

    create(&s, &token_secret("robot-token", "robot"));
    let secret = filled(&s, "robot-token");
    let token = decoded(&secret["data"]["token"]);
    let sa_uid = s
        .kubectl(
            "1.33",
            &["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"],
        )
        .ok()
        .stdout;
    assert_eq!(decoded(&secret["data"]["namespace"]), "default");
    assert_eq!(
        decoded(&secret["data"]["ca.crt"]),
        std::fs::read_to_string(s.pki("ca.crt")).unwrap()
    );
    assert_eq!(
        secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"],
        sa_uid.as_str()
    );
    // A legacy token: kube's issuer and claims, no expiry.
    let claims = jwt_claims(&token);
    assert_eq!(claims["iss"], "kubernetes/serviceaccount");
    assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
    assert_eq!(
        claims["kubernetes.io/serviceaccount/secret.name"],
        "robot-token"
    );
    assert_eq!(
        claims["kubernetes.io/serviceaccount/service-account.uid"],
        sa_uid.as_str()
    );
    assert!(claims.get("exp").is_none(), "{claims}");

    // The token works for what RBAC allows the account, with kubectl 1.27 and 1.33.
    for v in ["1.27", "1.33"] {
        with_token(&s, v, &token, &["get", "pods"]).ok();
        let out = with_token(&s, v, &token, &["get", "secrets"]).fails();
        assert!(
            out.stderr.contains(
                "User \"system:serviceaccount:default:robot\" cannot list resource \"secrets\""
            ),
            "{v}: {out:?}"
        );
    }
    let me: Value = serde_json::from_str(
        &with_token(&s, "1.33", &token, &["auth", "whoami", "-o", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    let info = &me["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:default:robot");
    assert_eq!(info["uid"], sa_uid.as_str());
    assert_eq!(
        info["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    // Its use is recorded on the Secret, as a date.
    let used = eventually("the last-used label", || {
        let l = s
            .kubectl(
                "1.33",
                &[
                    "get",
                    "secret",
                    "robot-token",
                    "-o",
                    "jsonpath={.metadata.labels.kubernetes\\.io/legacy-token-last-used}",
                ],
            )
            .stdout;
        (!l.is_empty()).then_some(l)
    });
    assert!(
        used.len() == 10 && used.as_bytes()[4] == b'-' && used.as_bytes()[7] == b'-',
        "{used}"
    );

    // A token the Secret did not get from the controller: a forged one is kept in the
    // Secret (only an empty token is filled) and refused.
    let mut forged_claims = claims.clone();
    forged_claims["kubernetes.io/serviceaccount/secret.name"] = json!("forged");
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let forged = parts.join(".");
    let mut forged_secret = token_secret("forged", "robot");
    forged_secret["stringData"] = json!({"token": forged});
    create(&s, &forged_secret);
    let kept = eventually("the forged Secret processed", || {
        let f = filled(&s, "forged");
        f["data"].get("namespace").is_some().then_some(f)
    });
    assert_eq!(decoded(&kept["data"]["token"]), forged);
    for v in ["1.27", "1.33"] {
        let out = with_token(&s, v, &forged, &["get", "pods"]).fails();
        assert!(out.stderr.contains("Unauthorized"), "{v}: {out:?}");
    }

    // Deleting the Secret revokes its token at once.
    s.kubectl("1.33", &["delete", "secret", "robot-token"]).ok();
    let out = with_token(&s, "1.33", &token, &["get", "pods"]).fails();
    assert!(out.stderr.contains("Unauthorized"), "{out:?}");

    // Deleting the account deletes its token Secrets, and their tokens stop working.
    create(&s, &token_secret("robot-token-2", "robot"));
    let second = decoded(&filled(&s, "robot-token-2")["data"]["token"]);
    with_token(&s, "1.33", &second, &["get", "pods"]).ok();
    s.kubectl("1.33", &["delete", "serviceaccount", "robot"])
        .ok();
    gone(&s, "secret", "robot-token-2");
    gone(&s, "secret", "forged");
    with_token(&s, "1.33", &second, &["get", "pods"]).fails();

    // A Secret naming an account that does not exist is deleted.
    create(&s, &token_secret("ghost-token", "ghost"));
    gone(&s, "secret", "ghost-token");
}

/// A standalone `skiff controller-manager` signs legacy tokens with
/// `--service-account-private-key-file`; a key it cannot use is refused clearly.
#[test]
fn a_standalone_controller_manager_fills_token_secrets_with_its_key() {
    let s = Server::start();
    let ca_key = s.pki("ca.key");
    let mut child = Command::new(SKIFF)
        .arg("controller-manager")
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .arg("--service-account-private-key-file")
        .arg(&ca_key)
        .args([
            "--controllers",
            "serviceaccount-token",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff controller-manager");
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("skiff controller-manager: {line}");
        }
    });
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _cm = Kill(child);
    s.kubectl("1.33", &["create", "serviceaccount", "bot"]).ok();
    create(&s, &token_secret("bot-token", "bot"));
    let token = decoded(&filled(&s, "bot-token")["data"]["token"]);
    let me: Value = serde_json::from_str(
        &with_token(&s, "1.33", &token, &["auth", "whoami", "-o", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:default:bot"
    );

    // The certificate is no private key: the command says so and stops.
    let mut c = Command::new(SKIFF);
    c.arg("controller-manager")
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .arg("--service-account-private-key-file")
        .arg(s.pki("ca.crt"))
        .args(["--metrics-bind-address", "127.0.0.1:0"]);
    let out = run(c, None).fails();
    assert!(
        out.stderr.contains("--service-account-private-key-file")
            && out.stderr.contains("not an ECDSA P-256 PKCS#8 key"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}
