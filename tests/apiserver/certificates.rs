//! CertificateSigningRequests with real kubectl (1.27 and 1.33): `get csr` columns and
//! `kubectl certificate approve|deny` (the approval subresource, protobuf from 1.32 on).
//! The server runs without its controller manager, so nothing approves or signs but
//! kubectl.

use base64::Engine;
use serde_json::Value;

use crate::common::{write, Server};

fn request_pem(cn: &str, org: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn csr_yaml(name: &str, cn: &str) -> String {
    let request = base64::engine::general_purpose::STANDARD.encode(request_pem(cn, "system:nodes"));
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  expirationSeconds: 3600\n  usages: [digital signature, key encipherment, client auth]\n  username: someone-else\n"
    )
}

fn row(out: &str, name: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{out}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn get_approve_deny(v: &str) {
    let s = Server::start();
    for name in ["csr-a", "csr-b"] {
        let f = write(
            s.dir.path(),
            &format!("{name}.yaml"),
            &csr_yaml(name, "system:node:n1"),
        );
        let out = s.kubectl(v, &["create", "-f", f.to_str().unwrap()]).ok();
        assert_eq!(
            out.stdout.trim(),
            format!("certificatesigningrequest.certificates.k8s.io/{name} created")
        );
    }
    let out = s.kubectl(v, &["get", "csr"]).ok().stdout;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    let a = row(&out, "csr-a");
    // The requestor is who created it (the admin certificate), not what the file said.
    assert_eq!(
        a[2..],
        [
            "kubernetes.io/kube-apiserver-client-kubelet",
            "admin",
            "60m",
            "Pending"
        ]
    );

    let out = s.kubectl(v, &["certificate", "approve", "csr-a"]).ok();
    assert_eq!(
        out.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/csr-a approved"
    );
    let out = s.kubectl(v, &["certificate", "deny", "csr-b"]).ok();
    assert_eq!(
        out.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/csr-b denied"
    );
    let out = s.kubectl(v, &["get", "csr"]).ok().stdout;
    assert_eq!(row(&out, "csr-a")[5], "Approved");
    assert_eq!(row(&out, "csr-b")[5], "Denied");
    let a: Value = serde_json::from_str(
        &s.kubectl(v, &["get", "csr", "csr-a", "-o", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    let c = &a["status"]["conditions"][0];
    assert_eq!(c["type"], "Approved");
    assert_eq!(c["reason"], "KubectlApprove");
    assert_eq!(a["spec"]["username"], "admin");
    assert_eq!(a["spec"]["groups"][0], "system:masters");

    // A bad request is refused with kube's message.
    let bad = csr_yaml("csr-c", "x").replace("expirationSeconds: 3600", "expirationSeconds: 60");
    let f = write(s.dir.path(), "bad.yaml", &bad);
    let out = s.kubectl(v, &["create", "-f", f.to_str().unwrap()]).fails();
    assert!(
        out.stderr.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)"),
        "{out:?}"
    );
}

per_version!(get_approve_deny);
