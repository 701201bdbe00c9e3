//! The audit log: kubectl's requests appear in DATA/audit.log as `audit.k8s.io/v1` Events
//! with the right verb, object reference, user and response code, and every response
//! carries the `Audit-Id` of its line.

use serde_json::Value;

use crate::common::{eventually, Server, VERSIONS};

fn audit_lines(s: &Server, file: &str) -> Vec<Value> {
    std::fs::read_to_string(s.dir.path().join(file))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// The first line for which `f` holds, once the writer has flushed it.
fn find(s: &Server, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || {
        audit_lines(s, "audit.log").into_iter().find(|e| f(e))
    })
}

#[test]
fn kubectl_requests_are_audited() {
    let s = Server::start();
    for v in VERSIONS {
        let name = format!("audited-{}", v.replace('.', "-"));
        s.kubectl(v, &["create", "configmap", &name, "--from-literal=k=v"])
            .ok();
        s.kubectl(v, &["get", "configmap", &name, "-o", "name"])
            .ok();
        s.kubectl(v, &["delete", "configmap", &name]).ok();
        for (verb, code) in [("create", 201), ("get", 200), ("delete", 200)] {
            let e = find(&s, &format!("{verb} of {name}"), |e| {
                e["verb"] == verb && e["objectRef"]["name"] == name.as_str()
            });
            assert_eq!(e["kind"], "Event");
            assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
            assert_eq!(e["level"], "Metadata");
            assert_eq!(e["stage"], "ResponseComplete");
            assert_eq!(e["objectRef"]["resource"], "configmaps");
            assert_eq!(e["objectRef"]["namespace"], "default");
            assert_eq!(e["objectRef"]["apiVersion"], "v1");
            assert_eq!(e["responseStatus"]["code"], code);
            // The admin kubeconfig's certificate: CN admin, O system:masters.
            assert_eq!(e["user"]["username"], "admin");
            let groups = e["user"]["groups"].as_array().unwrap();
            assert!(groups.iter().any(|g| g == "system:masters"), "{e}");
            assert_eq!(e["sourceIPs"][0], "127.0.0.1");
            assert!(
                e["userAgent"].as_str().unwrap().starts_with("kubectl"),
                "{e}"
            );
            for t in ["requestReceivedTimestamp", "stageTimestamp"] {
                let t = e[t].as_str().unwrap();
                assert!(t.ends_with('Z') && t.len() == 27, "MicroTime {t}");
            }
        }
    }

    // A failed request is logged with its code and the status Failure.
    let (code, _) = s
        .curl("GET", "/api/v1/namespaces/default/pods/none", &[])
        .http();
    assert_eq!(code, 404);
    let e = find(&s, "the 404", |e| e["objectRef"]["name"] == "none");
    assert_eq!(e["verb"], "get");
    assert_eq!(e["responseStatus"]["code"], 404);
    assert_eq!(e["responseStatus"]["status"], "Failure");

    // Anonymous requests are audited as system:anonymous.
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(s.pki("ca.crt"))
        .arg(format!(
            "{}/api/v1/namespaces/default/secrets?limit=7",
            s.url
        ));
    assert_eq!(crate::common::run(c, None).stdout, "401");
    let e = find(&s, "the anonymous request", |e| {
        e["requestURI"] == "/api/v1/namespaces/default/secrets?limit=7"
    });
    assert_eq!(e["user"]["username"], "system:anonymous");
    assert_eq!(e["verb"], "list");
    assert_eq!(e["responseStatus"]["code"], 401);

    // The bearer token is its own user.
    let auth = format!("Authorization: Bearer {}", s.token());
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "-o", "/dev/null", "--cacert"])
        .arg(s.pki("ca.crt"))
        .args(["-H", &auth])
        .arg(format!("{}/api/v1/nodes?limit=3", s.url));
    crate::common::run(c, None);
    let e = find(&s, "the token request", |e| {
        e["requestURI"] == "/api/v1/nodes?limit=3"
    });
    assert_eq!(e["user"]["username"], "skiff:token");

    // Every response names its audit line.
    let out = s
        .curl("GET", "/api/v1/namespaces/kube-system", &["-D", "-"])
        .ok();
    let id = out
        .stdout
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("audit-id")
                .then(|| v.trim().to_string())
        })
        .expect("Audit-Id header");
    let e = find(&s, "the line of the Audit-Id", |e| {
        e["auditID"] == id.as_str()
    });
    assert_eq!(e["objectRef"]["name"], "kube-system");
    assert_eq!(e["objectRef"]["resource"], "namespaces");
}

#[test]
fn watches_are_audited_when_they_start_and_end() {
    let s = Server::start();
    // A watch that the server ends after one second.
    let out = s
        .curl(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
            &[],
        )
        .ok();
    assert!(out.stdout.ends_with("200"), "{out:?}");
    let started = find(&s, "the watch start", |e| {
        e["verb"] == "watch" && e["stage"] == "ResponseStarted"
    });
    let done = find(&s, "the watch end", |e| {
        e["verb"] == "watch" && e["stage"] == "ResponseComplete"
    });
    assert_eq!(started["auditID"], done["auditID"]);
    assert!(started["stageTimestamp"].as_str() <= done["stageTimestamp"].as_str());
}

#[test]
fn audit_log_can_go_elsewhere_or_nowhere() {
    let other = tempfile::tempdir().unwrap();
    let path = other.path().join("sub/api-audit.jsonl");
    let s = Server::start_with(&["--audit-log-path", path.to_str().unwrap()]);
    s.kubectl("1.33", &["get", "ns"]).ok();
    eventually("the moved audit log", || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|t| t.contains("\"resource\":\"namespaces\""))
    });
    assert!(!s.dir.path().join("audit.log").exists());

    let s = Server::start_with(&["--audit-log-path", ""]);
    s.kubectl("1.33", &["get", "ns"]).ok();
    assert!(!s.dir.path().join("audit.log").exists());
}
