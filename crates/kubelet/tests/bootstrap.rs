//! Kubelet TLS bootstrap against the real API server (HTTPS on a free loopback port, an
//! in-memory store) and the real controller manager running csrapproving and
//! csrsigning with the server's CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::ByteString;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use skiff_kubelet::bootstrap::{self, BootstrapError, BootstrapOptions, CaSource};
use tokio_util::sync::CancellationToken;

struct Cluster {
    url: String,
    token: String,
    ca_pem: String,
    ca_key_pem: String,
    admin: Client,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(&["csrapproving", "csrsigning"]).await
    }

    async fn start_with(controllers: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(skiff_store::EmbeddedStore::in_memory().unwrap());
        let server = skiff_apiserver::Server::bind(
            skiff_apiserver::Config {
                data_dir: dir.path().to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                extra_sans: vec![],
                audit: None,
                event_ttl: None,
                kubelet_ca: None,
                cluster: Default::default(),
                advertise_address: None,
            },
            store,
        )
        .await
        .expect("bind the API server");
        let pki = server.pki.clone();
        let url = format!("https://{}", server.local_addr().unwrap());
        let admin = server.client("system:admin", &["system:masters", "system:authenticated"]);
        let cm = server.client(
            "system:kube-controller-manager",
            &["system:masters", "system:authenticated"],
        );
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone().cancelled_owned()));
        let config = skiff_controllers::Config {
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            cluster_signing: Some(skiff_controllers::ClusterSigning {
                ca_cert_pem: std::fs::read_to_string(&pki.ca_cert).unwrap(),
                ca_key_pem: std::fs::read_to_string(&pki.ca_key).unwrap(),
            }),
            ..Default::default()
        };
        tokio::spawn(skiff_controllers::run(cm, config, stop.clone()));
        Cluster {
            url,
            token: pki.token.clone(),
            ca_pem: std::fs::read_to_string(&pki.ca_cert).unwrap(),
            ca_key_pem: std::fs::read_to_string(&pki.ca_key).unwrap(),
            admin,
            stop,
            _dir: dir,
        }
    }

    fn options(&self, node: &str, dir: &std::path::Path) -> BootstrapOptions {
        let mut o = BootstrapOptions::new(&self.url, &self.token, node, dir);
        o.serving_ips = vec!["127.0.0.1".parse().unwrap()];
        o.approval_timeout = std::time::Duration::from_secs(60);
        o
    }

    async fn csrs(&self) -> Vec<CertificateSigningRequest> {
        let api: Api<CertificateSigningRequest> = Api::all(self.admin.clone());
        api.list(&ListParams::default()).await.unwrap().items
    }

    fn token_client(&self) -> Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.root_cert = Some(vec![der(&self.ca_pem)]);
        config.auth_info.token = Some(self.token.clone().into());
        Client::try_from(config).unwrap()
    }
}

fn der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

fn sha256(data: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn request_pem(cn: &str, org: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    p.serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

fn csr(signer: &str, request: Vec<u8>, usages: &[&str]) -> CertificateSigningRequest {
    serde_json::from_value(json!({
        "metadata": {"generateName": "test-"},
        "spec": {
            "request": ByteString(request),
            "signerName": signer,
            "usages": usages,
            // Ignored: the server records the authenticated requester.
            "username": "system:node:forged",
            "groups": ["system:masters"],
        },
    }))
    .unwrap()
}

const CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

async fn wait_for(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    cond: impl Fn(&CertificateSigningRequest) -> bool,
) -> CertificateSigningRequest {
    let done = kube::runtime::wait::await_condition(
        api.clone(),
        name,
        move |c: Option<&CertificateSigningRequest>| c.is_some_and(&cond),
    );
    tokio::time::timeout(std::time::Duration::from_secs(60), done)
        .await
        .expect("condition within a minute")
        .unwrap()
        .unwrap()
}

fn conditions(c: &CertificateSigningRequest) -> Vec<String> {
    c.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| c.type_.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_the_token_reuses_its_certificates_and_renews_them() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = c.options("node-a", dir.path());
    opts.ca = CaSource::FetchWithHash(Some(format!("sha256:{}", sha256(&c.ca_pem))));
    let creds = bootstrap::ensure(&opts).await.expect("bootstrap");
    assert_eq!(std::fs::read_to_string(&creds.ca_cert).unwrap(), c.ca_pem);
    for key in [&creds.client_key, &creds.serving_key, &creds.kubeconfig] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    // One client request with the token, one serving request as the node.
    let csrs = c.csrs().await;
    assert_eq!(csrs.len(), 2);
    let by_signer = |signer: &str| {
        csrs.iter()
            .find(|c| c.spec.signer_name == signer)
            .expect("a request for the signer")
    };
    let client_csr = by_signer(bootstrap::SIGNER_KUBELET_CLIENT);
    let serving_csr = by_signer(bootstrap::SIGNER_KUBELET_SERVING);
    assert_eq!(
        client_csr.spec.signer_name,
        bootstrap::SIGNER_KUBELET_CLIENT
    );
    assert_eq!(client_csr.spec.username.as_deref(), Some("skiff:token"));
    assert_eq!(
        serving_csr.spec.signer_name,
        bootstrap::SIGNER_KUBELET_SERVING
    );
    assert_eq!(
        serving_csr.spec.username.as_deref(),
        Some("system:node:node-a")
    );
    assert_eq!(
        serving_csr.spec.groups.as_deref(),
        Some(
            &[
                "system:nodes".to_string(),
                "system:authenticated".to_string()
            ][..]
        )
    );
    for csr in &csrs {
        assert_eq!(conditions(csr), ["Approved"]);
        let approved = &csr.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
        assert_eq!(approved.reason.as_deref(), Some("AutoApproved"));
    }
    // The serving certificate names the node and its IP.
    let serving = std::fs::read_to_string(&creds.serving_cert).unwrap();
    let der_serving = der(&serving);
    let (_, cert) = x509_parser::parse_x509_certificate(&der_serving).unwrap();
    assert_eq!(
        cert.subject().to_string(),
        "CN=system:node:node-a, O=system:nodes"
    );
    let sans = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .len();
    assert_eq!(sans, 2);

    // The node's own client is system:node:node-a in system:nodes: what it creates
    // records that identity.
    let node = bootstrap::client(&creds).expect("node client");
    let api: Api<CertificateSigningRequest> = Api::all(node);
    let mine = api
        .create(
            &PostParams::default(),
            &csr(
                "example.com/none",
                request_pem("whoever", "o"),
                CLIENT_USAGES,
            ),
        )
        .await
        .expect("create as the node");
    assert_eq!(mine.spec.username.as_deref(), Some("system:node:node-a"));
    assert_eq!(
        mine.spec.groups.as_deref(),
        Some(
            &[
                "system:nodes".to_string(),
                "system:authenticated".to_string()
            ][..]
        )
    );
    let admin: Api<CertificateSigningRequest> = Api::all(c.admin.clone());
    admin
        .delete(&mine.metadata.name.clone().unwrap(), &Default::default())
        .await
        .unwrap();

    // A second start reuses everything: no new request, the same files.
    let before = std::fs::read(&creds.client_cert).unwrap();
    let again = bootstrap::ensure(&opts).await.expect("second bootstrap");
    assert_eq!(again, creds);
    assert_eq!(c.csrs().await.len(), 2);
    assert_eq!(std::fs::read(&creds.client_cert).unwrap(), before);

    // Renewal: new keys and certificates, the client one asked for by the node itself.
    let old_key = std::fs::read(&creds.client_key).unwrap();
    bootstrap::renew(&opts, &creds).await.expect("renew");
    assert_ne!(std::fs::read(&creds.client_cert).unwrap(), before);
    assert_ne!(std::fs::read(&creds.client_key).unwrap(), old_key);
    assert_ne!(
        std::fs::read_to_string(&creds.serving_cert).unwrap(),
        serving
    );
    let csrs = c.csrs().await;
    assert_eq!(csrs.len(), 4);
    let renewal = csrs
        .iter()
        .find(|c| {
            c.spec.signer_name == bootstrap::SIGNER_KUBELET_CLIENT
                && c.spec.username.as_deref() == Some("system:node:node-a")
        })
        .expect("the node's own client renewal");
    let msg = renewal
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(msg.contains("self kubelet client"), "{msg}");
    // The renewed credentials still work.
    let node = bootstrap::client(&creds).expect("node client");
    let api: Api<CertificateSigningRequest> = Api::all(node);
    api.list(&ListParams::default())
        .await
        .expect("list as the renewed node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_or_ca_hash_is_refused_clearly() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = c.options("node-b", dir.path());
    opts.token = "not-the-token".into();
    opts.ca = CaSource::Pem(c.ca_pem.clone());
    let err = bootstrap::ensure(&opts).await.unwrap_err();
    assert!(
        matches!(err, BootstrapError::TokenRefused { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("401"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let mut opts = c.options("node-b", dir.path());
    opts.ca = CaSource::FetchWithHash(Some(format!("sha256:{}", "0".repeat(64))));
    let err = bootstrap::ensure(&opts).await.unwrap_err();
    assert!(
        matches!(err, BootstrapError::CaHashMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&sha256(&c.ca_pem)), "{err}");
    assert!(!dir.path().join("pki/ca.crt").exists());
    assert!(c.csrs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_node_identities_are_approved_and_a_human_decides_the_rest() {
    let c = Cluster::start().await;
    let token: Api<CertificateSigningRequest> = Api::all(c.token_client());
    // The token asks for an admin identity with the kubelet signer: left pending.
    let admin_csr = token
        .create(
            &PostParams::default(),
            &csr(
                bootstrap::SIGNER_KUBELET_CLIENT,
                request_pem("admin", "system:masters"),
                CLIENT_USAGES,
            ),
        )
        .await
        .unwrap();
    assert_eq!(admin_csr.spec.username.as_deref(), Some("skiff:token"));
    let admin_name = admin_csr.metadata.name.clone().unwrap();
    // A proper node request created after it is approved and issued ...
    let node_csr = token
        .create(
            &PostParams::default(),
            &csr(
                bootstrap::SIGNER_KUBELET_CLIENT,
                request_pem("system:node:n9", "system:nodes"),
                CLIENT_USAGES,
            ),
        )
        .await
        .unwrap();
    wait_for(&token, &node_csr.metadata.name.unwrap(), |c| {
        c.status.as_ref().is_some_and(|s| s.certificate.is_some())
    })
    .await;
    // ... while the admin one is still pending.
    let admin_api: Api<CertificateSigningRequest> = Api::all(c.admin.clone());
    let pending = admin_api.get(&admin_name).await.unwrap();
    assert!(conditions(&pending).is_empty(), "{:?}", pending.status);

    // Approved and Denied at once is invalid.
    let mut both = pending.clone();
    let cond = |t: &str| CertificateSigningRequestCondition {
        type_: t.into(),
        status: "True".into(),
        reason: Some("Test".into()),
        ..Default::default()
    };
    both.status.get_or_insert_with(Default::default).conditions =
        Some(vec![cond("Approved"), cond("Denied")]);
    let err = admin_api
        .replace_subresource("approval", &admin_name, &PostParams::default(), &both)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mutually exclusive"), "{err}");

    // A human denies it: the signer leaves it alone.
    let mut denied = pending.clone();
    denied
        .status
        .get_or_insert_with(Default::default)
        .conditions = Some(vec![cond("Denied")]);
    admin_api
        .replace_subresource("approval", &admin_name, &PostParams::default(), &denied)
        .await
        .unwrap();
    let now = admin_api.get(&admin_name).await.unwrap();
    assert_eq!(conditions(&now), ["Denied"]);
    assert!(now.status.unwrap().certificate.is_none());

    // A kube-apiserver-client request approved by hand is signed.
    let client_csr = token
        .create(
            &PostParams::default(),
            &csr(
                "kubernetes.io/kube-apiserver-client",
                request_pem("alice", "team"),
                &["client auth"],
            ),
        )
        .await
        .unwrap();
    let name = client_csr.metadata.name.clone().unwrap();
    let mut approve = client_csr.clone();
    approve
        .status
        .get_or_insert_with(Default::default)
        .conditions = Some(vec![cond("Approved")]);
    admin_api
        .replace_subresource("approval", &name, &PostParams::default(), &approve)
        .await
        .unwrap();
    let issued = wait_for(&admin_api, &name, |c| {
        c.status.as_ref().is_some_and(|s| s.certificate.is_some())
    })
    .await;
    let pem = String::from_utf8(issued.status.unwrap().certificate.unwrap().0).unwrap();
    let der_issued = der(&pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der_issued).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=alice, O=team");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renew_loop_replaces_a_certificate_past_eighty_percent_of_its_life() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = c.options("node-r", dir.path());
    opts.ca = CaSource::File(dir.path().join("given-ca.crt"));
    std::fs::write(dir.path().join("given-ca.crt"), &c.ca_pem).unwrap();
    let creds = bootstrap::ensure(&opts).await.expect("bootstrap");
    // Swap in a client certificate near its end: issued in 2020, ending next year.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:node-r");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let year = 1970
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 31_556_952;
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(year as i32 + 1, 6, 1);
    let ca_key = rcgen::KeyPair::from_pem(&c.ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&c.ca_pem, ca_key).unwrap();
    let old = p.signed_by(&key, &issuer).unwrap().pem();
    std::fs::write(&creds.client_key, key.serialize_pem()).unwrap();
    std::fs::write(&creds.client_cert, &old).unwrap();
    let before: Vec<String> = c
        .csrs()
        .await
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();

    let stop = CancellationToken::new();
    let (renewed_tx, mut renewed_rx) = tokio::sync::watch::channel(0u64);
    let renewing = tokio::spawn(bootstrap::renew_loop(
        opts.clone(),
        creds.clone(),
        stop.clone(),
        renewed_tx,
    ));
    let renewed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let now = std::fs::read_to_string(&creds.client_cert).unwrap_or_default();
            if now != old && !now.is_empty() {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("renewed within a minute");
    // Whoever holds the old pair hears of the new one.
    tokio::time::timeout(std::time::Duration::from_secs(10), renewed_rx.changed())
        .await
        .expect("the renewal is announced")
        .unwrap();
    assert_eq!(*renewed_rx.borrow(), 1);
    stop.cancel();
    renewing.await.unwrap();
    let der_new = der(&renewed);
    let (_, cert) = x509_parser::parse_x509_certificate(&der_new).unwrap();
    assert_eq!(
        cert.subject().to_string(),
        "CN=system:node:node-r, O=system:nodes"
    );
    let csrs = c.csrs().await;
    let new: Vec<_> = csrs
        .iter()
        .filter(|c| !before.contains(c.metadata.name.as_ref().unwrap()))
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].spec.username.as_deref(), Some("system:node:node-r"));
    // The renewed pair is usable, and the next start reuses it.
    let node: Api<CertificateSigningRequest> = Api::all(bootstrap::client(&creds).unwrap());
    node.list(&ListParams::default())
        .await
        .expect("the renewed certificate authenticates");
    bootstrap::ensure(&opts).await.expect("ensure");
    assert_eq!(c.csrs().await.len(), before.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_approves_or_one_that_is_denied_is_reported_by_name() {
    // No approver: requests stay pending.
    let c = Cluster::start_with(&["csrsigning"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = c.options("node-p", dir.path());
    opts.approval_timeout = std::time::Duration::from_secs(1);
    let err = bootstrap::ensure(&opts).await.unwrap_err();
    let BootstrapError::Timeout { csr, .. } = &err else {
        panic!("{err:?}");
    };
    let text = err.to_string();
    assert!(
        text.contains(csr.as_str()) && text.contains("waiting for approval"),
        "{text}"
    );
    assert!(!dir.path().join("pki/kubelet-client.crt").exists());

    // An administrator denies the next one.
    let admin: Api<CertificateSigningRequest> = Api::all(c.admin.clone());
    let known: Vec<String> = c
        .csrs()
        .await
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let denier = {
        let admin = admin.clone();
        tokio::spawn(async move {
            loop {
                let list = admin.list(&ListParams::default()).await.unwrap();
                if let Some(new) = list
                    .items
                    .into_iter()
                    .find(|c| !known.contains(c.metadata.name.as_ref().unwrap()))
                {
                    let name = new.metadata.name.clone().unwrap();
                    let mut denied = new;
                    denied
                        .status
                        .get_or_insert_with(Default::default)
                        .conditions = Some(vec![CertificateSigningRequestCondition {
                        type_: "Denied".into(),
                        status: "True".into(),
                        reason: Some("NotOnMyWatch".into()),
                        message: Some("unknown machine".into()),
                        ..Default::default()
                    }]);
                    admin
                        .replace_subresource("approval", &name, &PostParams::default(), &denied)
                        .await
                        .unwrap();
                    return name;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    opts.approval_timeout = std::time::Duration::from_secs(60);
    let err = bootstrap::ensure(&opts).await.unwrap_err();
    let denied_name = denier.await.unwrap();
    let BootstrapError::Denied { csr, reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(csr, &denied_name);
    assert_eq!(reason, "NotOnMyWatch");
    assert!(err.to_string().contains("unknown machine"), "{err}");
}
