//! CertificateSigningRequests (certificates.k8s.io/v1), as kube-apiserver's CSR strategies
//! for the main resource, `/status` and `/approval`.
//!
//! Contract: a new request records who asked for it — the API server calls
//! [`Strategy::set_requester`] with the authenticated user, overwriting `spec.username`,
//! `spec.uid`, `spec.groups` (and dropping `spec.extra`) whatever the client sent — and
//! starts without status. `spec` never changes after the create; an update of the main
//! resource changes only metadata. `/status` (the signer's) changes `status.certificate`
//! and the conditions other than Approved and Denied; `/approval` (the approver's)
//! changes only the Approved and Denied conditions. Validation: `spec.request` is one PEM
//! `CERTIFICATE REQUEST` block that parses, `spec.signerName` is `domain/path`,
//! `spec.usages` are known and unique, `expirationSeconds` ≥ 600, conditions are unique
//! per type with Approved and Denied mutually exclusive, and an issued certificate is
//! PEM `CERTIFICATE` blocks that never change once set.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{Cause, Requester, Strategy};
use crate::object::is_dns1123_subdomain;

/// The key usages a request may ask for (`certificates/v1` KeyUsage values).
pub const KNOWN_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Conditions that, when present, must be `True` and appear at most once.
const TRUE_ONLY: &[&str] = &["Approved", "Denied", "Failed"];
/// The conditions only `/approval` may change.
const APPROVAL: &[&str] = &["Approved", "Denied"];

pub(super) struct CertificateSigningRequest;

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn cond_type(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn set_conditions(obj: &mut Value, conds: Vec<Value>) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if conds.is_empty() {
        if let Some(m) = obj["status"].as_object_mut() {
            m.remove("conditions");
        }
    } else {
        obj["status"]["conditions"] = Value::Array(conds);
    }
}

/// `old`'s conditions whose type `keep_old` accepts, then `new`'s that it does not.
fn merge_conditions(old: &Value, new: &Value, keep_old: impl Fn(&str) -> bool) -> Vec<Value> {
    let mut out: Vec<Value> = conditions(old)
        .into_iter()
        .filter(|c| keep_old(cond_type(c)))
        .collect();
    out.extend(
        conditions(new)
            .into_iter()
            .filter(|c| !keep_old(cond_type(c))),
    );
    out
}

/// Go's `%#v` of a byte slice, as kube prints an invalid `[]byte` field.
fn go_bytes(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(|x| format!("{x:#x}")).collect();
    format!("[]byte{{{}}}", items.join(", "))
}

/// Decodes a `[]byte` field (base64 in JSON).
fn bytes_field(v: Option<&Value>) -> Result<Vec<u8>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("must be base64-encoded bytes: {e}")),
        Some(_) => Err("must be base64-encoded bytes".into()),
    }
}

/// Why `pem` is not one parsable PEM `CERTIFICATE REQUEST`, if it is not.
pub fn check_request_pem(pem: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map(|_| ())
        .map_err(|e| format!("x509: malformed certificate request: {e}"))
}

/// Why `pem` is not a chain of PEM `CERTIFICATE` blocks, if it is not.
fn check_certificate_pem(mut pem: &[u8]) -> Result<(), String> {
    let mut blocks = 0;
    while pem.iter().any(|b| !b.is_ascii_whitespace()) {
        let Ok((rest, block)) = x509_parser::pem::parse_x509_pem(pem) else {
            break;
        };
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                block.label
            ));
        }
        x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
        blocks += 1;
        pem = rest;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// `ValidateCertificateSigningRequestSignerName`, in short: `<domain>/<path>`.
fn check_signer_name(name: &str) -> Result<(), &'static str> {
    let why = "must be a fully qualified domain and path of the form 'example.com/signer-name'";
    let Some((domain, path)) = name.split_once('/') else {
        return Err(why);
    };
    if path.is_empty() || !domain.contains('.') || !is_dns1123_subdomain(domain) {
        return Err(why);
    }
    if name.len() > 571 {
        return Err("must be no more than 571 characters");
    }
    Ok(())
}

fn validate_spec(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or_default();
    match bytes_field(spec.get("request")) {
        Err(e) => causes.push(Cause::invalid("spec.request", "", &e)),
        Ok(req) => {
            if let Err(e) = check_request_pem(&req) {
                causes.push(Cause::invalid_raw("spec.request", &go_bytes(&req), &e));
            }
        }
    }
    match spec.get("usages").and_then(Value::as_array) {
        Some(u) if !u.is_empty() => {
            let mut seen = Vec::new();
            for (i, usage) in u.iter().enumerate() {
                let s = usage.as_str().unwrap_or_default();
                let field = format!("spec.usages[{i}]");
                if !KNOWN_USAGES.contains(&s) {
                    let mut sorted = KNOWN_USAGES.to_vec();
                    sorted.sort_unstable();
                    causes.push(Cause::not_supported(field, s, &sorted));
                } else if seen.contains(&s) {
                    causes.push(Cause::duplicate(field, s));
                }
                seen.push(s);
            }
        }
        _ => causes.push(Cause::required_because(
            "spec.usages",
            "usages must be provided",
        )),
    }
    match spec.get("signerName").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.signerName")),
        Some(s) => {
            if let Err(why) = check_signer_name(s) {
                causes.push(Cause::invalid("spec.signerName", s, why));
            }
        }
    }
    if let Some(secs) = spec.get("expirationSeconds").and_then(Value::as_i64) {
        if secs < 600 {
            causes.push(Cause::invalid_raw(
                "spec.expirationSeconds",
                &secs.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
}

fn validate_status(old: Option<&Value>, obj: &Value, causes: &mut Vec<Cause>) {
    let conds = conditions(obj);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let t = cond_type(c);
        if t.is_empty() {
            causes.push(Cause::required(format!("status.conditions[{i}].type")));
            continue;
        }
        if TRUE_ONLY.contains(&t) {
            if seen.contains(&t) {
                causes.push(Cause::duplicate(format!("status.conditions[{i}].type"), t));
            }
            let status = c.get("status").and_then(Value::as_str).unwrap_or_default();
            if status != "True" {
                causes.push(Cause::not_supported(
                    format!("status.conditions[{i}].status"),
                    status,
                    &["True"],
                ));
            }
        }
        seen.push(t);
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        causes.push(Cause::invalid(
            "status.conditions",
            "Denied",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    let cert = match bytes_field(obj.pointer("/status/certificate")) {
        Ok(c) => c,
        Err(e) => {
            causes.push(Cause::invalid(
                "status.certificate",
                "<certificate data>",
                &e,
            ));
            return;
        }
    };
    if cert.is_empty() {
        if let Some(old) = old {
            if old
                .pointer("/status/certificate")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty())
            {
                causes.push(Cause::forbidden(
                    "status.certificate",
                    "updates may not remove existing certificate content",
                ));
            }
        }
        return;
    }
    if let Err(e) = check_certificate_pem(&cert) {
        causes.push(Cause::invalid(
            "status.certificate",
            "<certificate data>",
            &e,
        ));
    }
    if !seen.contains(&"Approved") || seen.contains(&"Denied") || seen.contains(&"Failed") {
        causes.push(Cause::forbidden(
            "status.certificate",
            "certificate may only be set if the Approved condition is true and the Denied and Failed conditions are absent",
        ));
    }
    if let Some(old_cert) = old
        .and_then(|o| o.pointer("/status/certificate"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    {
        if Some(old_cert) != obj.pointer("/status/certificate").and_then(Value::as_str) {
            causes.push(Cause::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
}

impl Strategy for CertificateSigningRequest {
    fn has_generation(&self) -> bool {
        false
    }

    fn set_requester(&self, obj: &mut Value, who: &Requester<'_>) {
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        let Some(spec) = obj["spec"].as_object_mut() else {
            return;
        };
        spec.insert("username".into(), json!(who.username));
        if who.uid.is_empty() {
            spec.remove("uid");
        } else {
            spec.insert("uid".into(), json!(who.uid));
        }
        spec.insert("groups".into(), json!(who.groups));
        spec.remove("extra");
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // Only metadata changes through the main resource.
        let m: &mut Map<String, Value> = match new.as_object_mut() {
            Some(m) => m,
            None => return,
        };
        for k in ["spec", "status"] {
            match old.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
    }

    fn prepare_for_status_update(&self, new: &mut Value, old: &Value) {
        let mut out = old.clone();
        let conds = merge_conditions(old, new, |t| APPROVAL.contains(&t));
        match new.pointer("/status/certificate") {
            Some(c) if !c.is_null() => {
                if !out.get("status").is_some_and(Value::is_object) {
                    out["status"] = json!({});
                }
                out["status"]["certificate"] = c.clone();
            }
            _ => {
                if let Some(s) = out.get_mut("status").and_then(Value::as_object_mut) {
                    s.remove("certificate");
                }
            }
        }
        set_conditions(&mut out, conds);
        *new = out;
    }

    fn prepare_for_approval_update(&self, new: &mut Value, old: &Value) {
        let mut out = old.clone();
        let conds = merge_conditions(old, new, |t| !APPROVAL.contains(&t));
        set_conditions(&mut out, conds);
        *new = out;
    }

    fn default(&self, obj: &mut Value) {
        if let Some(conds) = obj
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            for c in conds {
                if c.get("status")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    c["status"] = json!("True");
                }
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_spec(obj, causes);
        validate_status(None, obj, causes);
    }

    fn validate_status_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        validate_status(Some(old), new, causes);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{for_kind, validate, validate_status_update};
    use super::*;

    /// A real PEM request for `CN=system:node:a, O=system:nodes`.
    fn request() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:a");
        p.serialize_request(&key).expect("csr").pem().expect("pem")
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn csr(request: &str) -> Value {
        json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "node-csr-a"},
            "spec": {
                "request": b64(request),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "key encipherment", "client auth"],
            },
        })
    }

    fn messages(causes: Vec<Cause>) -> Vec<String> {
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_well_formed_request_is_valid() {
        assert_eq!(
            messages(validate("CertificateSigningRequest", &csr(&request()))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_requests_are_refused_with_kubes_messages() {
        let mut bad = csr("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        bad["spec"]["signerName"] = json!("");
        bad["spec"]["usages"] = json!(["client auth", "flying", "client auth"]);
        bad["spec"]["expirationSeconds"] = json!(599);
        let m = messages(validate("CertificateSigningRequest", &bad));
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(m[0].starts_with("spec.request: Invalid value: []byte{0x2d, 0x2d"));
        assert!(m[0].ends_with(": PEM block type must be CERTIFICATE REQUEST"));
        assert!(m[1].starts_with("spec.usages[1]: Unsupported value: \"flying\""));
        assert_eq!(m[2], "spec.usages[2]: Duplicate value: \"client auth\"");
        assert_eq!(m[3], "spec.signerName: Required value");
        assert_eq!(
            m[4],
            "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"
        );
        let mut signer = csr(&request());
        signer["spec"]["signerName"] = json!("just-a-name");
        assert_eq!(
            messages(validate("CertificateSigningRequest", &signer)),
            ["spec.signerName: Invalid value: \"just-a-name\": must be a fully qualified domain and path of the form 'example.com/signer-name'"]
        );
    }

    #[test]
    fn the_requester_comes_from_authentication() {
        let mut o = csr(&request());
        o["spec"]["username"] = json!("system:node:someone-else");
        o["spec"]["extra"] = json!({"a": ["b"]});
        let groups = vec!["system:bootstrappers".to_string()];
        for_kind("CertificateSigningRequest").set_requester(
            &mut o,
            &Requester {
                username: "skiff:token",
                uid: "",
                groups: &groups,
            },
        );
        assert_eq!(o["spec"]["username"], "skiff:token");
        assert_eq!(o["spec"]["groups"], json!(["system:bootstrappers"]));
        assert!(o["spec"].get("extra").is_none() && o["spec"].get("uid").is_none());
    }

    #[test]
    fn each_write_path_changes_only_its_part() {
        let s = for_kind("CertificateSigningRequest");
        let mut old = csr(&request());
        old["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        // The main resource: spec and status stay.
        let mut new = old.clone();
        new["spec"]["signerName"] = json!("example.com/other");
        new["status"] = json!({});
        new["metadata"]["labels"] = json!({"a": "b"});
        s.prepare_for_update(&mut new, &old);
        assert_eq!(new["spec"], old["spec"]);
        assert_eq!(new["status"], old["status"]);
        assert_eq!(new["metadata"]["labels"], json!({"a": "b"}));
        // /status: the certificate and Failed go through, Approved stays as it was.
        let mut new = old.clone();
        new["status"] = json!({"certificate": "Y2VydA==", "conditions": [{"type": "Failed", "status": "True"}]});
        s.prepare_for_status_update(&mut new, &old);
        assert_eq!(new["status"]["certificate"], "Y2VydA==");
        assert_eq!(
            new["status"]["conditions"],
            json!([{"type": "Approved", "status": "True"}, {"type": "Failed", "status": "True"}])
        );
        // /approval: only Approved/Denied change.
        let mut new = old.clone();
        new["status"] = json!({"certificate": "Y2VydA==", "conditions": [{"type": "Denied", "status": "True"}]});
        s.prepare_for_approval_update(&mut new, &old);
        assert!(new["status"].get("certificate").is_none());
        assert_eq!(
            new["status"]["conditions"],
            json!([{"type": "Denied", "status": "True"}])
        );
    }

    #[test]
    fn approved_and_denied_together_are_invalid() {
        let old = csr(&request());
        let mut new = old.clone();
        new["status"] = json!({"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        assert_eq!(
            messages(validate_status_update("CertificateSigningRequest", &old, &new)),
            ["status.conditions: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"]
        );
        new["status"] = json!({"conditions": [{"type": "Approved", "status": "False"}]});
        assert_eq!(
            messages(validate_status_update("CertificateSigningRequest", &old, &new)),
            ["status.conditions[0].status: Unsupported value: \"False\": supported values: \"True\""]
        );
    }

    #[test]
    fn a_certificate_needs_approval_and_never_changes() {
        let old = csr(&request());
        let mut new = old.clone();
        new["status"] = json!({"certificate": b64("not pem")});
        let m = messages(validate_status_update(
            "CertificateSigningRequest",
            &old,
            &new,
        ));
        assert_eq!(
            m,
            [
                "status.certificate: Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block",
                "status.certificate: Forbidden: certificate may only be set if the Approved condition is true and the Denied and Failed conditions are absent",
            ]
        );
    }
}
