//! Kubelet TLS bootstrap: how an agent that holds only the cluster token gets its own
//! identity, through the CertificateSigningRequest API as the kubelet does.
//!
//! Contract of [`ensure`]: on return, `dir/pki/` holds
//! - `ca.crt`: the cluster CA (read from a file, given as PEM, or fetched from the
//!   server's unauthenticated `/cacerts` and, when a `sha256:<hex>` hash is given,
//!   refused unless its SHA-256 matches);
//! - `kubelet-client.crt`/`.key`: a client certificate `CN=system:node:<name>,
//!   O=system:nodes` signed by that CA (signer
//!   `kubernetes.io/kube-apiserver-client-kubelet`, requested with the token);
//! - `kubelet-serving.crt`/`.key`: a serving certificate for the node's names and IPs
//!   (signer `kubernetes.io/kubelet-serving`, requested as the node);
//!
//! and `dir/kubeconfig` names the node identity (files by path). Certificates already
//! there are reused while they are signed by the CA, name this node (and, for serving,
//! exactly these names and IPs), match their key and are not in the last 20% of their
//! lifetime; otherwise a new ECDSA P-256 key and request replace them. Keys are written
//! 0600, every file by write-to-temporary-then-rename, so a crash leaves the old or the
//! new file, never half of one.
//!
//! [`renew_loop`] then renews each certificate at 80% of its lifetime (the client
//! certificate as the node itself, falling back to the token once it has expired), until
//! cancelled. Approval is the controller manager's (`csrapproving`), signing its
//! `csrsigning`; a request that stays pending is reported after
//! [`BootstrapOptions::approval_timeout`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

mod ca;
pub use ca::ca_cert_hash;

pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
const NODES_GROUP: &str = "system:nodes";
/// A certificate is renewed once this share of its lifetime has passed.
const RENEW_AT: f64 = 0.8;

/// Where the agent gets the cluster CA from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A PEM file.
    File(PathBuf),
    /// PEM text.
    Pem(String),
    /// The server's `/cacerts`, as k3s agents fetch it; with `Some("sha256:<hex>")` the
    /// CA is refused unless the SHA-256 of the PEM served matches. Without a hash the
    /// first CA fetched is trusted (and kept in `dir/pki/ca.crt` for later starts).
    FetchWithHash(Option<String>),
}

/// How to join.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The API server, `https://host:port`.
    pub server: String,
    /// The cluster's bootstrap token.
    pub token: String,
    pub ca: CaSource,
    pub node_name: String,
    /// DNS names of the serving certificate.
    pub serving_names: Vec<String>,
    /// IP addresses of the serving certificate.
    pub serving_ips: Vec<IpAddr>,
    /// The agent's data dir; credentials go to `dir/pki`, the kubeconfig to
    /// `dir/kubeconfig`.
    pub dir: PathBuf,
    /// How long to wait for a request to be approved and signed.
    pub approval_timeout: Duration,
}

impl BootstrapOptions {
    /// Options with the defaults: the CA fetched without a hash, the node name as the
    /// only serving name, a 5-minute approval timeout.
    pub fn new(server: &str, token: &str, node_name: &str, dir: &Path) -> BootstrapOptions {
        BootstrapOptions {
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            ca: CaSource::FetchWithHash(None),
            node_name: node_name.to_string(),
            serving_names: vec![node_name.to_string()],
            serving_ips: Vec::new(),
            dir: dir.to_path_buf(),
            approval_timeout: Duration::from_secs(300),
        }
    }

    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    fn user(&self) -> String {
        format!("system:node:{}", self.node_name)
    }
}

/// The node's credential files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    pub kubeconfig: PathBuf,
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
}

impl NodeCredentials {
    fn in_dir(dir: &Path) -> NodeCredentials {
        let pki = dir.join("pki");
        NodeCredentials {
            kubeconfig: dir.join("kubeconfig"),
            ca_cert: pki.join("ca.crt"),
            client_cert: pki.join("kubelet-client.crt"),
            client_key: pki.join("kubelet-client.key"),
            serving_cert: pki.join("kubelet-serving.crt"),
            serving_key: pki.join("kubelet-serving.key"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{path}: {operation} failed")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("--server {server:?} is not a usable URL: {reason}; write it as https://HOST:PORT")]
    BadServer { server: String, reason: String },
    #[error("fetching the cluster CA from {server}/cacerts failed; check that --server is the API server and reachable")]
    CaFetch {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("the CA served by {server} has hash sha256:{actual}, not the expected {expected}; the server is not the one the hash belongs to (or the hash is mistyped)")]
    CaHashMismatch {
        server: String,
        expected: String,
        actual: String,
    },
    #[error("CA hash {hash:?} is not of the form sha256:<64 hex digits>")]
    BadCaHash { hash: String },
    #[error("the cluster CA from {source_name} is not a PEM certificate: {reason}")]
    BadCa { source_name: String, reason: String },
    #[error("the API server at {server} refused the bootstrap token (401 Unauthorized); use the token in the server's data dir (DATA/token)")]
    TokenRefused { server: String },
    #[error("the API server at {server} refused the node's client certificate (401 Unauthorized); delete {dir}/pki/kubelet-client.* to bootstrap again with the token")]
    CertificateRefused { server: String, dir: PathBuf },
    #[error("{action} at {server} failed")]
    Api {
        action: &'static str,
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("building a client for {server} failed")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("generating the {what} key or request failed")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("CertificateSigningRequest {csr} was denied ({reason}: {message}); an administrator must approve a new one (`kubectl certificate approve`)")]
    Denied {
        csr: String,
        reason: String,
        message: String,
    },
    #[error("CertificateSigningRequest {csr} failed ({reason}: {message}); check the controller manager's --cluster-signing-cert-file/--cluster-signing-key-file")]
    Failed {
        csr: String,
        reason: String,
        message: String,
    },
    #[error("CertificateSigningRequest {csr} is still waiting for approval or signing after {waited:?}; approve it with `kubectl certificate approve {csr}`, or check that the controller manager runs csrapproving and csrsigning")]
    Timeout { csr: String, waited: Duration },
    #[error(
        "CertificateSigningRequest {csr} was signed but its certificate does not fit: {reason}"
    )]
    BadIssued { csr: String, reason: String },
}

fn io(path: &Path, operation: &'static str) -> impl FnOnce(std::io::Error) -> BootstrapError {
    let path = path.to_path_buf();
    move |source| BootstrapError::Io {
        path,
        operation,
        source,
    }
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, fsync,
/// rename) with `mode`.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp, "create"))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp, "write"))?;
    std::fs::rename(&tmp, path).map_err(io(path, "rename into place"))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The DER of the first PEM block of `pem` if it is a certificate.
fn cert_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    if block.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", block.label));
    }
    x509_parser::parse_x509_certificate(&block.contents).map_err(|e| e.to_string())?;
    Ok(block.contents)
}

/// What [`ensure`] checks of a stored certificate.
struct Wanted<'a> {
    common_name: &'a str,
    /// For serving certificates: exactly these DNS names and IPs.
    sans: Option<(&'a [String], &'a [IpAddr])>,
}

/// The validity (not_before, not_after) of the certificate at `cert` if it and `key` are
/// a usable pair: signed by `ca_der`, for `wanted`, not in its last 20%.
fn usable(cert: &Path, key: &Path, ca_der: &[u8], wanted: &Wanted<'_>) -> Option<(i64, i64)> {
    use x509_parser::extensions::GeneralName;
    let pem = std::fs::read(cert).ok()?;
    let key_pem = std::fs::read_to_string(key).ok()?;
    let der = cert_der(&pem).ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).ok()?;
    c.verify_signature(Some(ca.public_key())).ok()?;
    let key = rcgen::KeyPair::from_pem(&key_pem).ok()?;
    if key.public_key_raw() != c.public_key().subject_public_key.data.as_ref() {
        return None;
    }
    let cn = c.subject().iter_common_name().next()?.as_str().ok()?;
    if cn != wanted.common_name {
        return None;
    }
    if let Some((names, ips)) = wanted.sans {
        let mut have_names = Vec::new();
        let mut have_ips = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => have_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => have_ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                        16 => have_ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                        _ => return None,
                    },
                    _ => return None,
                }
            }
        }
        let mut want_names = names.to_vec();
        let mut want_ips = ips.to_vec();
        for v in [&mut have_names, &mut want_names] {
            v.sort();
            v.dedup();
        }
        for v in [&mut have_ips, &mut want_ips] {
            v.sort();
            v.dedup();
        }
        if have_names != want_names || have_ips != want_ips {
            return None;
        }
    }
    let (nb, na) = (
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    );
    (now_secs() < renew_time(nb, na)).then_some((nb, na))
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed.
pub fn renew_time(not_before: i64, not_after: i64) -> i64 {
    not_before + ((not_after - not_before).max(0) as f64 * RENEW_AT) as i64
}

fn server_uri(opts: &BootstrapOptions) -> Result<hyper::http::Uri, BootstrapError> {
    let bad = |reason: String| BootstrapError::BadServer {
        server: opts.server.clone(),
        reason,
    };
    let uri: hyper::http::Uri = opts.server.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https".into()));
    }
    Ok(uri)
}

fn base_config(opts: &BootstrapOptions, ca_pem: &str) -> Result<kube::Config, BootstrapError> {
    let mut config = kube::Config::new(server_uri(opts)?);
    let der = cert_der(ca_pem.as_bytes()).map_err(|reason| BootstrapError::BadCa {
        source_name: "the cluster CA".into(),
        reason,
    })?;
    config.root_cert = Some(vec![der]);
    Ok(config)
}

fn token_client(opts: &BootstrapOptions, ca_pem: &str) -> Result<kube::Client, BootstrapError> {
    let mut config = base_config(opts, ca_pem)?;
    config.auth_info.token = Some(opts.token.clone().into());
    kube::Client::try_from(config).map_err(|source| BootstrapError::Client {
        server: opts.server.clone(),
        source,
    })
}

fn cert_client(
    opts: &BootstrapOptions,
    ca_pem: &str,
    cert: &Path,
    key: &Path,
) -> Result<kube::Client, BootstrapError> {
    let mut config = base_config(opts, ca_pem)?;
    config.auth_info.client_certificate = Some(cert.display().to_string());
    config.auth_info.client_key = Some(key.display().to_string());
    kube::Client::try_from(config).map_err(|source| BootstrapError::Client {
        server: opts.server.clone(),
        source,
    })
}

/// A kube client authenticated by the node's client certificate.
pub fn client(creds: &NodeCredentials) -> Result<kube::Client, BootstrapError> {
    let kc =
        kube::config::Kubeconfig::read_from(&creds.kubeconfig).map_err(|e| BootstrapError::Io {
            path: creds.kubeconfig.clone(),
            operation: "read the node kubeconfig",
            source: std::io::Error::other(e.to_string()),
        })?;
    let server = kc
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref().and_then(|c| c.server.clone()))
        .unwrap_or_default();
    let ca_pem = std::fs::read_to_string(&creds.ca_cert).map_err(io(&creds.ca_cert, "read"))?;
    let opts = BootstrapOptions::new(&server, "", "", Path::new(""));
    cert_client(&opts, &ca_pem, &creds.client_cert, &creds.client_key)
}

/// What one certificate request asks for.
struct Request<'a> {
    what: &'static str,
    signer: &'static str,
    usages: &'static [&'static str],
    sans: Vec<rcgen::SanType>,
    cert: &'a Path,
    key: &'a Path,
}

/// Creates a CertificateSigningRequest for a new key, waits for its certificate, and
/// writes key and certificate. `as_token` says which identity `client` is (for errors).
async fn request(
    opts: &BootstrapOptions,
    client: kube::Client,
    as_token: bool,
    r: Request<'_>,
) -> Result<(), BootstrapError> {
    let gen = |source| BootstrapError::Generate {
        what: r.what,
        source,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, opts.user());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, NODES_GROUP);
    params.subject_alt_names = r.sans;
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(gen)?;
    let obj = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: r.signer.into(),
            usages: Some(r.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let created = match api.create(&PostParams::default(), &obj).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.code == 401 => {
            return Err(if as_token {
                BootstrapError::TokenRefused {
                    server: opts.server.clone(),
                }
            } else {
                BootstrapError::CertificateRefused {
                    server: opts.server.clone(),
                    dir: opts.dir.clone(),
                }
            })
        }
        Err(source) => {
            return Err(BootstrapError::Api {
                action: "creating a CertificateSigningRequest",
                server: opts.server.clone(),
                source,
            })
        }
    };
    let name = created.name_any();
    tracing::info!(csr = %name, signer = r.signer, "requested the node's {} certificate; waiting for approval and signing", r.what);
    let done = |c: Option<&CertificateSigningRequest>| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
                || s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
        })
    };
    let waited = tokio::time::timeout(
        opts.approval_timeout,
        kube::runtime::wait::await_condition(api.clone(), &name, done),
    )
    .await;
    let csr = match waited {
        Err(_) => {
            return Err(BootstrapError::Timeout {
                csr: name,
                waited: opts.approval_timeout,
            })
        }
        Ok(Err(e)) => {
            return Err(BootstrapError::Api {
                action: "watching the CertificateSigningRequest",
                server: opts.server.clone(),
                source: match e {
                    kube::runtime::wait::Error::ProbeFailed(
                        kube::runtime::watcher::Error::InitialListFailed(e)
                        | kube::runtime::watcher::Error::WatchStartFailed(e)
                        | kube::runtime::watcher::Error::WatchFailed(e),
                    ) => e,
                    other => kube::Error::Service(Box::new(other)),
                },
            })
        }
        Ok(Ok(None)) => {
            return Err(BootstrapError::Denied {
                csr: name,
                reason: "Deleted".into(),
                message: "the request was deleted before it was signed".into(),
            })
        }
        Ok(Ok(Some(c))) => c,
    };
    let status = csr.status.unwrap_or_default();
    for c in status.conditions.iter().flatten() {
        let (reason, message) = (
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        );
        match c.type_.as_str() {
            "Denied" => {
                return Err(BootstrapError::Denied {
                    csr: name,
                    reason,
                    message,
                })
            }
            "Failed" => {
                return Err(BootstrapError::Failed {
                    csr: name,
                    reason,
                    message,
                })
            }
            _ => {}
        }
    }
    let cert = status.certificate.map(|c| c.0).unwrap_or_default();
    let der = cert_der(&cert).map_err(|reason| BootstrapError::BadIssued {
        csr: name.clone(),
        reason,
    })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| BootstrapError::BadIssued {
            csr: name.clone(),
            reason: e.to_string(),
        })?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(BootstrapError::BadIssued {
            csr: name,
            reason: "its public key is not the one requested".into(),
        });
    }
    // The key first: a certificate on disk always has its key beside it.
    write_atomic(r.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(r.cert, &cert, 0o644)?;
    tracing::info!(csr = %name, "wrote the node's {} certificate {}", r.what, r.cert.display());
    Ok(())
}

fn serving_sans(opts: &BootstrapOptions) -> Result<Vec<rcgen::SanType>, BootstrapError> {
    let mut sans = Vec::new();
    for n in &opts.serving_names {
        sans.push(rcgen::SanType::DnsName(n.clone().try_into().map_err(
            |source| BootstrapError::Generate {
                what: "serving",
                source,
            },
        )?));
    }
    sans.extend(
        opts.serving_ips
            .iter()
            .map(|ip| rcgen::SanType::IpAddress(*ip)),
    );
    Ok(sans)
}

fn client_request(creds: &NodeCredentials) -> Request<'_> {
    Request {
        what: "client",
        signer: SIGNER_KUBELET_CLIENT,
        usages: &["digital signature", "key encipherment", "client auth"],
        sans: Vec::new(),
        cert: &creds.client_cert,
        key: &creds.client_key,
    }
}

async fn renew_client(
    opts: &BootstrapOptions,
    creds: &NodeCredentials,
    ca_pem: &str,
    as_node: bool,
) -> Result<(), BootstrapError> {
    let (client, as_token) = if as_node {
        (
            cert_client(opts, ca_pem, &creds.client_cert, &creds.client_key)?,
            false,
        )
    } else {
        (token_client(opts, ca_pem)?, true)
    };
    request(opts, client, as_token, client_request(creds)).await
}

async fn renew_serving(
    opts: &BootstrapOptions,
    creds: &NodeCredentials,
    ca_pem: &str,
) -> Result<(), BootstrapError> {
    let client = cert_client(opts, ca_pem, &creds.client_cert, &creds.client_key)?;
    let r = Request {
        what: "serving",
        signer: SIGNER_KUBELET_SERVING,
        usages: &["digital signature", "key encipherment", "server auth"],
        sans: serving_sans(opts)?,
        cert: &creds.serving_cert,
        key: &creds.serving_key,
    };
    request(opts, client, false, r).await
}

fn write_kubeconfig(
    opts: &BootstrapOptions,
    creds: &NodeCredentials,
) -> Result<(), BootstrapError> {
    let user = opts.user();
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\ncontexts:\n- name: {user}\n  context:\n    cluster: skiff\n    user: {user}\ncurrent-context: {user}\nusers:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\npreferences: {{}}\n",
        server = opts.server,
        ca = creds.ca_cert.display(),
        cert = creds.client_cert.display(),
        key = creds.client_key.display(),
    );
    write_atomic(&creds.kubeconfig, kc.as_bytes(), 0o600)
}

/// Makes sure the node has a CA, a client and a serving certificate in `opts.dir`,
/// requesting what is missing or due (see the module docs).
pub async fn ensure(opts: &BootstrapOptions) -> Result<NodeCredentials, BootstrapError> {
    let creds = NodeCredentials::in_dir(&opts.dir);
    let pki = opts.pki();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&pki)
            .map_err(io(&pki, "create directory"))?;
    }
    let ca_pem = ca::load(opts, &creds.ca_cert).await?;
    if std::fs::read_to_string(&creds.ca_cert).ok().as_deref() != Some(ca_pem.as_str()) {
        write_atomic(&creds.ca_cert, ca_pem.as_bytes(), 0o644)?;
    }
    let ca_der = cert_der(ca_pem.as_bytes()).map_err(|reason| BootstrapError::BadCa {
        source_name: creds.ca_cert.display().to_string(),
        reason,
    })?;
    let user = opts.user();
    let client_ok = usable(
        &creds.client_cert,
        &creds.client_key,
        &ca_der,
        &Wanted {
            common_name: &user,
            sans: None,
        },
    )
    .is_some();
    if !client_ok {
        renew_client(opts, &creds, &ca_pem, false).await?;
    }
    let serving_ok = usable(
        &creds.serving_cert,
        &creds.serving_key,
        &ca_der,
        &Wanted {
            common_name: &user,
            sans: Some((&opts.serving_names, &opts.serving_ips)),
        },
    )
    .is_some();
    if !serving_ok {
        renew_serving(opts, &creds, &ca_pem).await?;
    }
    write_kubeconfig(opts, &creds)?;
    Ok(creds)
}

/// Renews both certificates now, whatever their age: the client certificate as the
/// node (or with the token when the node's own certificate has expired or is refused),
/// then the serving certificate.
pub async fn renew(opts: &BootstrapOptions, creds: &NodeCredentials) -> Result<(), BootstrapError> {
    let ca_pem = std::fs::read_to_string(&creds.ca_cert).map_err(io(&creds.ca_cert, "read"))?;
    renew_one(opts, creds, &ca_pem, Which::Client).await?;
    renew_one(opts, creds, &ca_pem, Which::Serving).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Client,
    Serving,
}

async fn renew_one(
    opts: &BootstrapOptions,
    creds: &NodeCredentials,
    ca_pem: &str,
    which: Which,
) -> Result<(), BootstrapError> {
    match which {
        Which::Client => {
            let expired = validity(&creds.client_cert).is_none_or(|(_, na)| na <= now_secs());
            match renew_client(opts, creds, ca_pem, !expired).await {
                Err(BootstrapError::CertificateRefused { .. }) => {
                    renew_client(opts, creds, ca_pem, false).await
                }
                r => r,
            }
        }
        Which::Serving => renew_serving(opts, creds, ca_pem).await,
    }
}

/// The validity (Unix seconds) of the certificate in `path`.
fn validity(path: &Path) -> Option<(i64, i64)> {
    let pem = std::fs::read(path).ok()?;
    let der = cert_der(&pem).ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

/// Renews each certificate at 80% of its lifetime, until `stop` is cancelled. A failed
/// renewal is logged and tried again with backoff (30 s doubling to 5 min). After each
/// renewal `renewed` counts one more, so whoever holds the old pair (the agent's API
/// client and its serving TLS) can load the new one.
pub async fn renew_loop(
    opts: BootstrapOptions,
    creds: NodeCredentials,
    stop: CancellationToken,
    renewed: tokio::sync::watch::Sender<u64>,
) {
    let mut backoff = Duration::from_secs(30);
    loop {
        let due = |p: &Path| validity(p).map(|(nb, na)| renew_time(nb, na)).unwrap_or(0);
        let (client_due, serving_due) = (due(&creds.client_cert), due(&creds.serving_cert));
        let (which, at) = if client_due <= serving_due {
            (Which::Client, client_due)
        } else {
            (Which::Serving, serving_due)
        };
        let wait = Duration::from_secs(u64::try_from(at - now_secs()).unwrap_or(0));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let ca_pem = match std::fs::read_to_string(&creds.ca_cert) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(path = %creds.ca_cert.display(), "cannot read the cluster CA to renew certificates: {e}");
                String::new()
            }
        };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = renew_one(&opts, &creds, &ca_pem, which) => r,
        };
        match result {
            Ok(()) => {
                backoff = Duration::from_secs(30);
                tracing::info!("renewed the node's {which:?} certificate");
                renewed.send_modify(|n| *n += 1);
            }
            Err(e) => {
                tracing::error!(
                    "renewing the node's {which:?} certificate failed: {}; trying again in {backoff:?}",
                    skiff_serve::error_chain(&e)
                );
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_eighty_percent() {
        assert_eq!(renew_time(1000, 2000), 1800);
        assert_eq!(renew_time(0, 365 * 86400), 292 * 86400);
        assert_eq!(renew_time(10, 5), 10);
    }

    #[test]
    fn files_are_replaced_whole_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("skiff-boot-t{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("a.key");
        assert!(write_atomic(&p, b"one", 0o600).is_ok());
        assert!(write_atomic(&p, b"two", 0o600).is_ok());
        assert_eq!(std::fs::read(&p).ok().as_deref(), Some(&b"two"[..]));
        let mode = std::fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));
        assert!(!dir.join("a.key.tmp").exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
