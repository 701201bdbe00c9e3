//! The CertificateSigningRequest controllers of kubelet TLS bootstrap, as
//! kube-controller-manager's `csrapproving` and `csrsigning`.
//!
//! Contract, `csrapproving`: a pending request (no Approved, Denied or Failed condition)
//! is approved (condition Approved, reason AutoApproved) when it is
//! - a `kubernetes.io/kube-apiserver-client-kubelet` request for exactly
//!   `CN=system:node:<name>, O=system:nodes`, no subject alternative names, usages client
//!   auth and digital signature (key encipherment allowed), asked for by a bootstrap
//!   identity (the cluster token's user [`TOKEN_USER`] or a member of
//!   `system:bootstrappers`) or by `system:node:<name>` itself (renewal);
//! - a `kubernetes.io/kubelet-serving` request asked for by `system:node:<name>` (group
//!   `system:nodes`) for `CN=system:node:<name>, O=system:nodes` with DNS and IP
//!   alternative names only (at least one) and usages server auth and digital signature
//!   (key encipherment allowed).
//!
//! Anything else is left pending for a human (`kubectl certificate approve|deny`).
//!
//! Contract, `csrsigning` (only with a cluster signing CA, `Config::cluster_signing`):
//! an approved request without a certificate, for the signers kube-apiserver-client-
//! kubelet, kubelet-serving or kube-apiserver-client, gets a certificate signed by the CA
//! through the status subresource: the request's subject and alternative names, the key
//! usages of `spec.usages`, valid from five minutes ago (clock skew) for
//! `spec.expirationSeconds` (at least 600 s) capped by `Config::cluster_signing_duration`
//! and by the CA's own expiry. A request the signer's rules refuse gets a Failed
//! condition (reason SignerValidationFailure) saying why. Keys are CSR names.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::informer::{Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_conflict, is_not_found, ApiError};
use crate::Context;

/// Who the cluster token authenticates as (the API server's bootstrap identity).
pub const TOKEN_USER: &str = "skiff:token";
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
pub const SIGNER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const NODE_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";
const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// How far back an issued certificate's validity starts (clock skew between machines).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The shortest validity a request may ask for.
const MIN_DURATION: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub(crate) enum CsrError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// What a PEM request says about itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Subject {
    common_name: String,
    organizations: Vec<String>,
    /// Subject attributes other than CN and O.
    other_attributes: usize,
    dns_names: usize,
    ip_addresses: usize,
    /// Email, URI or other alternative names.
    other_names: usize,
}

fn parse_request(pem: &[u8]) -> Result<Subject, String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| format!("spec.request is not PEM: {e}"))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("malformed certificate request: {e}"))?;
    let info = &csr.certification_request_info;
    let mut s = Subject::default();
    for rdn in info.subject.iter() {
        for attr in rdn.iter() {
            let oid = attr.attr_type();
            let value = attr.as_str().unwrap_or_default().to_string();
            if *oid == x509_parser::oid_registry::OID_X509_COMMON_NAME {
                s.common_name = value;
            } else if *oid == x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME {
                s.organizations.push(value);
            } else {
                s.other_attributes += 1;
            }
        }
    }
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(_) => s.dns_names += 1,
                        GeneralName::IPAddress(_) => s.ip_addresses += 1,
                        _ => s.other_names += 1,
                    }
                }
            }
        }
    }
    Ok(s)
}

fn usages(csr: &CertificateSigningRequest) -> BTreeSet<&str> {
    csr.spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Whether `usages` has `required` and nothing outside `required` + `allowed`.
fn usages_fit(usages: &BTreeSet<&str>, required: &[&str], allowed: &[&str]) -> bool {
    required.iter().all(|u| usages.contains(u))
        && usages
            .iter()
            .all(|u| required.contains(u) || allowed.contains(u))
}

/// Why `subject` is not a node identity `system:node:<name>` in exactly `system:nodes`.
fn check_node_subject(s: &Subject) -> Result<(), String> {
    if !s.common_name.starts_with(NODE_PREFIX) || s.common_name.len() == NODE_PREFIX.len() {
        return Err(format!(
            "subject common name {:?} does not begin with {NODE_PREFIX:?} and a node name",
            s.common_name
        ));
    }
    if s.organizations != [NODES_GROUP] {
        return Err(format!(
            "subject organization {:?} is not exactly [{NODES_GROUP:?}]",
            s.organizations
        ));
    }
    if s.other_attributes > 0 {
        return Err("subject has attributes besides common name and organization".into());
    }
    Ok(())
}

/// The signer's rules for a request (also what approval requires of its shape).
fn check_for_signer(csr: &CertificateSigningRequest, s: &Subject) -> Result<(), String> {
    let u = usages(csr);
    match csr.spec.signer_name.as_str() {
        SIGNER_KUBELET_CLIENT => {
            check_node_subject(s)?;
            if s.dns_names + s.ip_addresses + s.other_names > 0 {
                return Err(
                    "a kubelet client certificate may not have subject alternative names".into(),
                );
            }
            if !usages_fit(
                &u,
                &["client auth", "digital signature"],
                &["key encipherment"],
            ) {
                return Err(format!(
                    "usages {u:?} are not client auth and digital signature (and optionally key encipherment)"
                ));
            }
        }
        SIGNER_KUBELET_SERVING => {
            check_node_subject(s)?;
            if s.other_names > 0 {
                return Err("a kubelet serving certificate may only have DNS and IP subject alternative names".into());
            }
            if s.dns_names + s.ip_addresses == 0 {
                return Err("a kubelet serving certificate needs at least one DNS or IP subject alternative name".into());
            }
            if !usages_fit(
                &u,
                &["server auth", "digital signature"],
                &["key encipherment"],
            ) {
                return Err(format!(
                    "usages {u:?} are not server auth and digital signature (and optionally key encipherment)"
                ));
            }
        }
        SIGNER_CLIENT => {
            if !usages_fit(
                &u,
                &["client auth"],
                &["digital signature", "key encipherment"],
            ) {
                return Err(format!(
                    "usages {u:?} must include client auth and may add only digital signature and key encipherment"
                ));
            }
        }
        other => {
            return Err(format!(
                "signer {other:?} is not one this controller signs for"
            ))
        }
    }
    Ok(())
}

fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t))
}

fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// Why the approver approves `csr`, or None to leave it to a human.
fn auto_approval(csr: &CertificateSigningRequest) -> Option<&'static str> {
    let s = parse_request(&csr.spec.request.0).ok()?;
    check_for_signer(csr, &s).ok()?;
    let requester = csr.spec.username.as_deref().unwrap_or_default();
    let groups = csr.spec.groups.as_deref().unwrap_or_default();
    match csr.spec.signer_name.as_str() {
        SIGNER_KUBELET_CLIENT if requester == s.common_name => {
            Some("Auto approving self kubelet client certificate after SubjectAccessReview.")
        }
        SIGNER_KUBELET_CLIENT
            if requester == TOKEN_USER || groups.iter().any(|g| g == BOOTSTRAPPERS_GROUP) =>
        {
            Some("Auto approving kubelet client certificate after SubjectAccessReview.")
        }
        SIGNER_KUBELET_SERVING
            if requester == s.common_name && groups.iter().any(|g| g == NODES_GROUP) =>
        {
            Some("Auto approving kubelet serving certificate after SubjectAccessReview.")
        }
        _ => None,
    }
}

fn condition(
    t: &str,
    reason: &str,
    message: &str,
    now: Time,
) -> CertificateSigningRequestCondition {
    CertificateSigningRequestCondition {
        type_: t.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn watch_csrs(ctx: &Context) -> (Informer<CertificateSigningRequest>, Queue) {
    let csrs = ctx.informers.informer::<CertificateSigningRequest>();
    let queue = Queue::new();
    let q = queue.clone();
    csrs.on_change(move |c| {
        if !matches!(c, Change::Deleted(_)) {
            q.add(c.object().name_any());
        }
    });
    (csrs, queue)
}

pub(crate) fn start_approving(ctx: &Context) -> Option<JoinHandle<()>> {
    let (csrs, queue) = watch_csrs(ctx);
    let ready = {
        let c = csrs.clone();
        async move { c.synced().await }
    };
    let r = Approver {
        client: ctx.client.clone(),
        csrs,
        clock: ctx.clock.clone(),
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

struct Approver {
    client: kube::Client,
    csrs: Informer<CertificateSigningRequest>,
    clock: Arc<dyn crate::Clock>,
}

#[async_trait::async_trait]
impl Reconciler for Approver {
    type Error = CsrError;

    fn name(&self) -> &'static str {
        "csrapproving"
    }

    async fn reconcile(&self, name: &str) -> Result<Action, CsrError> {
        let Some(csr) = self.csrs.get("", name) else {
            return Ok(Action::Done);
        };
        if ["Approved", "Denied", "Failed"]
            .iter()
            .any(|t| has_condition(&csr, t))
            || is_issued(&csr)
        {
            return Ok(Action::Done);
        }
        let Some(message) = auto_approval(&csr) else {
            return Ok(Action::Done);
        };
        let mut approved = (*csr).clone();
        let status = approved.status.get_or_insert_with(Default::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(condition(
                "Approved",
                "AutoApproved",
                message,
                Time(self.clock.now()),
            ));
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        match api
            .replace_subresource("approval", name, &PostParams::default(), &approved)
            .await
        {
            Ok(_) => Ok(Action::Done),
            // A newer version is on its way through the cache (or the CSR is gone).
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(Action::Done),
            Err(e) => Err(ApiError::new("approve certificatesigningrequest", name, e).into()),
        }
    }
}

/// The cluster signing CA, loaded once.
struct Signer {
    ca_cert_pem: String,
    ca_key_pem: String,
    /// The CA certificate's own expiry (Unix seconds); issued certificates end by then.
    ca_not_after: i64,
    max_duration: Duration,
}

impl Signer {
    fn new(ca_cert_pem: &str, ca_key_pem: &str, max_duration: Duration) -> Result<Signer, String> {
        let (_, block) = x509_parser::pem::parse_x509_pem(ca_cert_pem.as_bytes())
            .map_err(|e| format!("the cluster signing certificate is not PEM: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| format!("the cluster signing certificate does not parse: {e}"))?;
        rcgen::KeyPair::from_pem(ca_key_pem)
            .map_err(|e| format!("the cluster signing key does not parse: {e}"))?;
        Ok(Signer {
            ca_cert_pem: ca_cert_pem.to_string(),
            ca_key_pem: ca_key_pem.to_string(),
            ca_not_after: cert.validity().not_after.timestamp(),
            max_duration,
        })
    }

    /// Issues the certificate `csr` asks for at `now` (Unix seconds), or says why not.
    fn sign(&self, csr: &CertificateSigningRequest, now: i64) -> Result<String, String> {
        use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose as Ku};
        let pem = std::str::from_utf8(&csr.spec.request.0)
            .map_err(|_| "spec.request is not PEM text".to_string())?;
        let mut req = rcgen::CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| format!("the certificate request cannot be signed: {e}"))?;
        let wanted = csr
            .spec
            .expiration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)).max(MIN_DURATION))
            .unwrap_or(self.max_duration)
            .min(self.max_duration);
        let not_after = (now + wanted.as_secs() as i64).min(self.ca_not_after);
        let time = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|e| format!("certificate validity out of range: {e}"))
        };
        let p = &mut req.params;
        p.not_before = time(now - BACKDATE.as_secs() as i64)?;
        p.not_after = time(not_after)?;
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial()?);
        p.key_usages.clear();
        p.extended_key_usages.clear();
        for u in usages(csr) {
            match u {
                "digital signature" | "signing" => p.key_usages.push(Ku::DigitalSignature),
                "key encipherment" => p.key_usages.push(Ku::KeyEncipherment),
                "content commitment" => p.key_usages.push(Ku::ContentCommitment),
                "key agreement" => p.key_usages.push(Ku::KeyAgreement),
                "data encipherment" => p.key_usages.push(Ku::DataEncipherment),
                "server auth" => p.extended_key_usages.push(Eku::ServerAuth),
                "client auth" => p.extended_key_usages.push(Eku::ClientAuth),
                other => return Err(format!("usage {other:?} is not allowed for this signer")),
            }
        }
        let key = rcgen::KeyPair::from_pem(&self.ca_key_pem)
            .map_err(|e| format!("the cluster signing key does not parse: {e}"))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.ca_cert_pem, key)
            .map_err(|e| format!("the cluster signing certificate does not parse: {e}"))?;
        let cert = req
            .signed_by(&issuer)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(cert.pem())
    }
}

fn random_serial() -> Result<rcgen::SerialNumber, String> {
    let mut raw = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| "no system randomness for a serial number".to_string())?;
    // Positive and non-zero, as RFC 5280 wants.
    raw[0] = (raw[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&raw))
}

pub(crate) fn start_signing(ctx: &Context) -> Option<JoinHandle<()>> {
    let signing = ctx.config.cluster_signing.as_ref()?;
    let signer = match Signer::new(
        &signing.ca_cert_pem,
        &signing.ca_key_pem,
        ctx.config.cluster_signing_duration,
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("csrsigning is off: {e}; check --cluster-signing-cert-file and --cluster-signing-key-file");
            return None;
        }
    };
    let (csrs, queue) = watch_csrs(ctx);
    let ready = {
        let c = csrs.clone();
        async move { c.synced().await }
    };
    let r = SigningController {
        client: ctx.client.clone(),
        csrs,
        clock: ctx.clock.clone(),
        signer,
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

struct SigningController {
    client: kube::Client,
    csrs: Informer<CertificateSigningRequest>,
    clock: Arc<dyn crate::Clock>,
    signer: Signer,
}

#[async_trait::async_trait]
impl Reconciler for SigningController {
    type Error = CsrError;

    fn name(&self) -> &'static str {
        "csrsigning"
    }

    async fn reconcile(&self, name: &str) -> Result<Action, CsrError> {
        let Some(csr) = self.csrs.get("", name) else {
            return Ok(Action::Done);
        };
        let ours = [SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING, SIGNER_CLIENT]
            .contains(&csr.spec.signer_name.as_str());
        if !ours
            || !has_condition(&csr, "Approved")
            || has_condition(&csr, "Denied")
            || has_condition(&csr, "Failed")
            || is_issued(&csr)
        {
            return Ok(Action::Done);
        }
        let now = self.clock.now();
        let issued = parse_request(&csr.spec.request.0)
            .and_then(|s| check_for_signer(&csr, &s))
            .and_then(|()| self.signer.sign(&csr, now.as_second()));
        let mut updated = (*csr).clone();
        let status = updated.status.get_or_insert_with(Default::default);
        match issued {
            Ok(pem) => status.certificate = Some(ByteString(pem.into_bytes())),
            Err(why) => {
                tracing::info!(csr = name, "not signing: {why}");
                status
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(condition(
                        "Failed",
                        "SignerValidationFailure",
                        &why,
                        Time(now),
                    ));
            }
        }
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        match api
            .replace_subresource("status", name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(Action::Done),
            Err(e) => Err(ApiError::new("sign certificatesigningrequest", name, e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        p.serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
            .into_bytes()
    }

    fn csr(
        signer: &str,
        req: Vec<u8>,
        usages: &[&str],
        user: &str,
        groups: &[&str],
    ) -> CertificateSigningRequest {
        let mut c = CertificateSigningRequest::default();
        c.spec.signer_name = signer.into();
        c.spec.request = ByteString(req);
        c.spec.usages = Some(usages.iter().map(|u| u.to_string()).collect());
        c.spec.username = Some(user.into());
        c.spec.groups = Some(groups.iter().map(|g| g.to_string()).collect());
        c
    }

    const CLIENT: &[&str] = &["digital signature", "key encipherment", "client auth"];
    const SERVING: &[&str] = &["digital signature", "key encipherment", "server auth"];

    #[test]
    fn bootstrap_and_renewal_client_requests_are_approved() {
        let node = request("system:node:n1", &[NODES_GROUP], &[]);
        let by_token = csr(SIGNER_KUBELET_CLIENT, node.clone(), CLIENT, TOKEN_USER, &[]);
        assert!(auto_approval(&by_token).is_some());
        let by_bootstrapper = csr(
            SIGNER_KUBELET_CLIENT,
            node.clone(),
            CLIENT,
            "x",
            &[BOOTSTRAPPERS_GROUP],
        );
        assert!(auto_approval(&by_bootstrapper).is_some());
        let renewal = csr(
            SIGNER_KUBELET_CLIENT,
            node.clone(),
            CLIENT,
            "system:node:n1",
            &[NODES_GROUP],
        );
        assert!(auto_approval(&renewal).unwrap_or_default().contains("self"));
        // Another node may not ask for n1's identity, nor may anyone else.
        let other = csr(
            SIGNER_KUBELET_CLIENT,
            node.clone(),
            CLIENT,
            "system:node:n2",
            &[NODES_GROUP],
        );
        assert_eq!(auto_approval(&other), None);
        let someone = csr(SIGNER_KUBELET_CLIENT, node, CLIENT, "alice", &[]);
        assert_eq!(auto_approval(&someone), None);
        // Not a node identity, or with extra groups: left for a human.
        for req in [
            request("admin", &["system:masters"], &[]),
            request("system:node:n1", &[NODES_GROUP, "system:masters"], &[]),
            request("system:node:n1", &[NODES_GROUP], &["n1.example"]),
        ] {
            let c = csr(SIGNER_KUBELET_CLIENT, req, CLIENT, TOKEN_USER, &[]);
            assert_eq!(auto_approval(&c), None);
        }
        let server_usage = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n1", &[NODES_GROUP], &[]),
            SERVING,
            TOKEN_USER,
            &[],
        );
        assert_eq!(auto_approval(&server_usage), None);
    }

    #[test]
    fn serving_requests_are_approved_only_for_the_node_itself() {
        let req = request("system:node:n1", &[NODES_GROUP], &["n1", "10.0.0.1"]);
        let own = csr(
            SIGNER_KUBELET_SERVING,
            req.clone(),
            SERVING,
            "system:node:n1",
            &[NODES_GROUP],
        );
        assert!(auto_approval(&own).is_some());
        let token = csr(
            SIGNER_KUBELET_SERVING,
            req.clone(),
            SERVING,
            TOKEN_USER,
            &[],
        );
        assert_eq!(auto_approval(&token), None);
        let other = csr(
            SIGNER_KUBELET_SERVING,
            req,
            SERVING,
            "system:node:n2",
            &[NODES_GROUP],
        );
        assert_eq!(auto_approval(&other), None);
        let no_sans = request("system:node:n1", &[NODES_GROUP], &[]);
        let c = csr(
            SIGNER_KUBELET_SERVING,
            no_sans,
            SERVING,
            "system:node:n1",
            &[NODES_GROUP],
        );
        assert_eq!(auto_approval(&c), None);
    }

    #[test]
    fn the_signer_honours_usages_and_duration() {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let signer = Signer::new(
            &ca_cert.pem(),
            &ca_key.serialize_pem(),
            Duration::from_secs(365 * 24 * 3600),
        )
        .expect("signer");
        let mut c = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n1", &[NODES_GROUP], &[]),
            CLIENT,
            TOKEN_USER,
            &[],
        );
        c.spec.expiration_seconds = Some(60);
        let now = 1_800_000_000;
        let pem = signer.sign(&c, now).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).expect("cert");
        // At least 600 s, backdated five minutes.
        assert_eq!(cert.validity().not_after.timestamp(), now + 600);
        assert_eq!(cert.validity().not_before.timestamp(), now - 300);
        assert_eq!(
            cert.subject().to_string(),
            "CN=system:node:n1, O=system:nodes"
        );
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.client_auth && !eku.server_auth);
        c.spec.expiration_seconds = None;
        let pem = signer.sign(&c, now).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).expect("cert");
        // The CA's own expiry caps the default year.
        assert!(cert.validity().not_after.timestamp() <= now + 365 * 24 * 3600);
    }
}
