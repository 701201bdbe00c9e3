//! Admission webhooks: a real HTTPS webhook (Python's `http.server` behind TLS with a
//! certificate from a CA made here) registered through Mutating- and
//! ValidatingWebhookConfigurations, and kubectl 1.33 seeing what kube-apiserver answers:
//! denials, patches, warnings, timeouts under both failure policies, garbage answers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;

use crate::common::{eventually, write, Server};

const KUBECTL: &str = "1.33";

/// The webhook: `/validate…` denies objects labelled `deny=yes` and deletes of objects
/// labelled `protect=yes` (with a warning naming the path on every answer), `/mutate` adds the label
/// `mutated=yes`, `/slow` answers after 3 s, `/garbage` answers something not JSON.
const WEBHOOK: &str = r#"
import base64, json, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path = self.path.split("?")[0]
        if path == "/garbage":
            return self.send(b"this is not an AdmissionReview")
        if path == "/slow":
            time.sleep(3)
        req = json.loads(body)["request"]
        resp = {"uid": req["uid"], "allowed": True}
        obj = req.get("object") or {}
        old = req.get("oldObject") or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        old_labels = (old.get("metadata") or {}).get("labels") or {}
        if path.startswith("/validate"):
            resp["warnings"] = ["checked by the test webhook at " + path]
            if labels.get("deny") == "yes":
                resp["allowed"] = False
                resp["status"] = {"code": 403, "message": "label deny=yes is not allowed"}
            if req["operation"] == "DELETE" and old_labels.get("protect") == "yes":
                resp["allowed"] = False
                resp["status"] = {"code": 403, "message": "this one is protected"}
        if path == "/mutate":
            if labels:
                ops = [{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]
            else:
                ops = [{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}]
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        self.send(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}).encode())

    def send(self, b):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// The webhook process, killed on drop.
struct Webhook {
    child: Child,
    port: u16,
    /// The CA (PEM, base64) for `caBundle`.
    ca_bundle: String,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_webhook(dir: &std::path::Path) -> Webhook {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "webhook test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    // Called by URL and through the Service `default/webhook`.
    let leaf = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "webhook.default.svc".to_string(),
    ])
    .unwrap()
    .signed_by(&key, &ca)
    .unwrap();
    let cert = write(dir, "webhook.crt", &leaf.pem());
    let key = write(dir, "webhook.key", &key.serialize_pem());
    let script = write(dir, "webhook.py", WEBHOOK);
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("webhook port, got {line:?}"));
    Webhook {
        child,
        port,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca.pem()),
    }
}

/// One webhook entry for configmaps (`ops`), at `path`, selecting objects labelled
/// `select` (a `key: value`) when given.
fn hook(w: &Webhook, name: &str, path: &str, extra: &str, select: Option<&str>) -> String {
    let selector = select
        .map(|s| format!("\n  objectSelector:\n    matchLabels:\n      {s}"))
        .unwrap_or_default();
    format!(
        r#"- name: {name}
  clientConfig:
    url: https://127.0.0.1:{port}{path}
    caBundle: {ca}
  rules:
  - operations: ["CREATE", "DELETE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["configmaps"]
  sideEffects: None
  admissionReviewVersions: ["v1"]{extra}{selector}
"#,
        port = w.port,
        ca = w.ca_bundle,
    )
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("\n    {k}: \"{v}\""))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n  labels:{}\ndata:\n  a: b\n",
        if labels.is_empty() { " {}".to_string() } else { labels }
    )
}

fn create(s: &Server, name: &str, labels: &[(&str, &str)]) -> crate::common::Out {
    s.kubectl_with(
        KUBECTL,
        &["create", "-f", "-"],
        Some(&configmap(name, labels)),
        &[],
    )
}

#[test]
fn webhooks_deny_mutate_time_out_and_fail_as_kube() {
    let s = Server::start();
    let w = start_webhook(s.dir.path());
    let validating = [
        hook(&w, "deny.skiff.test", "/validate", "", None),
        hook(
            &w,
            "slow-fail.skiff.test",
            "/slow",
            "\n  timeoutSeconds: 1\n  failurePolicy: Fail",
            Some("slow: fail"),
        ),
        hook(
            &w,
            "slow-ignore.skiff.test",
            "/slow",
            "\n  timeoutSeconds: 1\n  failurePolicy: Ignore",
            Some("slow: ignore"),
        ),
        hook(
            &w,
            "garbage.skiff.test",
            "/garbage",
            "",
            Some("garbage: \"yes\""),
        ),
    ]
    .concat();
    let mutating = hook(&w, "label.skiff.test", "/mutate", "", None);
    let configs = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata:\n  name: label\nwebhooks:\n{mutating}---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: checks\nwebhooks:\n{validating}"
    );
    s.kubectl_with(KUBECTL, &["apply", "-f", "-"], Some(&configs), &[])
        .ok();

    // The configurations reach the server's index through its watch: probe with dry runs
    // until the last one is in force.
    let garbage = eventually("the webhook configurations in force", || {
        let out = s.kubectl_with(
            KUBECTL,
            &["create", "-f", "-", "--dry-run=server"],
            Some(&configmap("probe", &[("garbage", "yes")])),
            &[],
        );
        (out.code != 0).then_some(out)
    });
    assert!(
        garbage.stderr.contains(
            "Internal error occurred: failed calling webhook \"garbage.skiff.test\": failed to call webhook"
        ),
        "{garbage:#?}"
    );

    // A denial is the webhook's own message and code.
    let denied = create(&s, "denied", &[("deny", "yes")]).fails();
    assert!(
        denied.stderr.contains(
            "error when creating \"STDIN\": admission webhook \"deny.skiff.test\" denied the request: label deny=yes is not allowed"
        ),
        "{denied:#?}"
    );
    s.kubectl(KUBECTL, &["get", "configmap", "denied"]).fails();

    // An allowed one is created, patched by the mutating webhook, with the warning shown.
    let ok = create(&s, "allowed", &[("app", "a")]).ok();
    assert!(
        ok.stderr.contains("Warning: checked by the test webhook"),
        "{ok:#?}"
    );
    let labels = s
        .kubectl(
            KUBECTL,
            &[
                "get",
                "configmap",
                "allowed",
                "-o",
                "jsonpath={.metadata.labels}",
            ],
        )
        .ok()
        .stdout;
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels, serde_json::json!({"app": "a", "mutated": "yes"}));
    create(&s, "bare", &[]).ok();
    let bare = s
        .kubectl(
            KUBECTL,
            &[
                "get",
                "configmap",
                "bare",
                "-o",
                "jsonpath={.metadata.labels.mutated}",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(bare, "yes");

    // A webhook past its timeout fails the request under Fail and is skipped under Ignore.
    let slow = create(&s, "slow-fail", &[("slow", "fail")]).fails();
    let want = format!(
        "Internal error occurred: failed calling webhook \"slow-fail.skiff.test\": failed to call webhook: Post \"https://127.0.0.1:{}/slow?timeout=1s\": context deadline exceeded",
        w.port
    );
    assert!(slow.stderr.contains(&want), "{slow:#?}");
    create(&s, "slow-ignore", &[("slow", "ignore")]).ok();

    // Deletes are admitted with the old object.
    create(&s, "protected", &[("protect", "yes")]).ok();
    let del = s
        .kubectl(KUBECTL, &["delete", "configmap", "protected"])
        .fails();
    assert!(
        del.stderr.contains(
            "admission webhook \"deny.skiff.test\" denied the request: this one is protected"
        ),
        "{del:#?}"
    );
    s.kubectl(KUBECTL, &["delete", "configmap", "allowed"]).ok();

    // A webhook named by a Service is called at the Service's ready endpoint, its
    // certificate checked for `<service>.<namespace>.svc`.
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: webhook\n  namespace: default\nspec:\n  ports:\n  - name: https\n    port: 443\n    targetPort: {port}\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: webhook\n  namespace: default\nsubsets:\n- addresses:\n  - ip: 127.0.0.1\n  ports:\n  - name: https\n    port: {port}\n",
        port = w.port
    );
    s.kubectl_with(KUBECTL, &["apply", "-f", "-"], Some(&service), &[])
        .ok();
    let by_service = hook(&w, "service.skiff.test", "/validate-service", "", Some("route: service"))
        .replace(
            &format!("url: https://127.0.0.1:{}/validate-service", w.port),
            "service:\n      namespace: default\n      name: webhook\n      port: 443\n      path: /validate-service",
        );
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: via-service\nwebhooks:\n{by_service}"
    );
    s.kubectl_with(KUBECTL, &["apply", "-f", "-"], Some(&config), &[])
        .ok();
    eventually("the webhook called through its Service", || {
        let out = s
            .kubectl_with(
                KUBECTL,
                &["create", "-f", "-", "--dry-run=server"],
                Some(&configmap("routed", &[("route", "service")])),
                &[],
            )
            .ok();
        out.stderr
            .contains("Warning: checked by the test webhook at /validate-service")
            .then_some(())
    });
    s.kubectl(
        KUBECTL,
        &["delete", "validatingwebhookconfiguration", "via-service"],
    )
    .ok();

    // The configurations themselves are never sent to webhooks: they can always go.
    s.kubectl(
        KUBECTL,
        &["delete", "validatingwebhookconfiguration", "checks"],
    )
    .ok();
    s.kubectl(
        KUBECTL,
        &["delete", "mutatingwebhookconfiguration", "label"],
    )
    .ok();
    eventually("the webhooks out of force", || {
        create(&s, &format!("free-{}", rand_suffix()), &[("deny", "yes")])
            .code
            .eq(&0)
            .then_some(())
    });
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
