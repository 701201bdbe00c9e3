//! The cluster's credentials, generated once on first start and kept in the data dir:
//!
//! - `pki/ca.crt`, `pki/ca.key`: the cluster CA (signs the serving and client certs);
//! - `pki/server.crt`, `pki/server.key`: the API server's serving cert (SANs 127.0.0.1,
//!   ::1, localhost, the host name and any extra SANs asked for);
//! - `pki/admin.crt`, `pki/admin.key`: the admin client cert (CN admin, O system:masters);
//! - `pki/kubelet-client.crt`, `pki/kubelet-client.key`: the API server's client cert for
//!   kubelets' streaming API (exec, attach, port-forward, logs); generated on any start
//!   that finds it missing;
//! - `kubeconfig.yaml`: a kubeconfig kubectl uses as it is;
//! - `token`: the bearer token agents join with.
//!
//! Later starts only read the files, so kubeconfigs handed out stay valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Paths of the credentials in a data dir.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    /// The CA's private key: the controller manager's cluster signing key
    /// (`--cluster-signing-key-file`).
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// The API server's client identity towards kubelets.
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    pub kubeconfig: PathBuf,
    pub token_file: PathBuf,
    /// The agents' bearer token.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {operation} failed")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the {what} certificate failed")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path} is empty; delete the data dir's pki/ and token to regenerate credentials")]
    EmptyToken { path: PathBuf },
}

fn io(path: &Path, operation: &'static str) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io {
        path,
        operation,
        source,
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Write-then-rename so a crash never leaves a half-written credential behind.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp, "create"))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp, "write"))?;
    std::fs::rename(&tmp, path).map_err(io(path, "rename"))
}

/// Loads the credentials of `data_dir`, generating whatever is missing. `server_url` goes
/// into the kubeconfig; `extra_sans` are added to the serving cert when it is generated.
pub fn ensure(data_dir: &Path, server_url: &str, extra_sans: &[String]) -> Result<Pki, PkiError> {
    let dir = data_dir.join("pki");
    std::fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
    let p = |n: &str| dir.join(n);
    let mut pki = Pki {
        ca_cert: p("ca.crt"),
        ca_key: p("ca.key"),
        server_cert: p("server.crt"),
        server_key: p("server.key"),
        admin_cert: p("admin.crt"),
        admin_key: p("admin.key"),
        kubelet_client_cert: p("kubelet-client.crt"),
        kubelet_client_key: p("kubelet-client.key"),
        kubeconfig: data_dir.join("kubeconfig.yaml"),
        token_file: data_dir.join("token"),
        token: String::new(),
        dir: dir.clone(),
    };
    let ca_key_path = pki.ca_key.clone();
    if !pki.ca_cert.exists() || !ca_key_path.exists() {
        generate(&pki, &ca_key_path, extra_sans)?;
    }
    if !pki.kubelet_client_cert.exists() || !pki.kubelet_client_key.exists() {
        let issued = issue(
            &pki.dir,
            Role::Client,
            "skiff-apiserver-kubelet-client",
            Some("system:masters"),
            &[],
        )?;
        write_private(&pki.kubelet_client_key, &issued.key_pem)?;
        write_private(&pki.kubelet_client_cert, &issued.cert_pem)?;
    }
    if !pki.token_file.exists() {
        let mut raw = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).map_err(
            |_| PkiError::Io {
                path: pki.token_file.clone(),
                operation: "draw random bytes for",
                source: std::io::Error::other("no system randomness"),
            },
        )?;
        write_private(&pki.token_file, &format!("{}\n", hex::encode(raw)))?;
    }
    pki.token = std::fs::read_to_string(&pki.token_file)
        .map_err(io(&pki.token_file, "read"))?
        .trim()
        .to_string();
    if pki.token.is_empty() {
        return Err(PkiError::EmptyToken {
            path: pki.token_file,
        });
    }
    // The kubeconfig is rewritten on each start: the listen address may have changed.
    let b64 = |path: &Path| -> Result<String, PkiError> {
        let data = std::fs::read(path).map_err(io(path, "read"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(data))
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\npreferences: {{}}\n",
        ca = b64(&pki.ca_cert)?,
        cert = b64(&pki.admin_cert)?,
        key = b64(&pki.admin_key)?,
    );
    write_private(&pki.kubeconfig, &kubeconfig)?;
    Ok(pki)
}

fn generate(pki: &Pki, ca_key_path: &Path, extra_sans: &[String]) -> Result<(), PkiError> {
    let gen = |what| move |source| PkiError::Generate { what, source };
    let ca_key = KeyPair::generate().map_err(gen("CA"))?;
    let ca = ca_params().map_err(gen("CA"))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(gen("CA"))?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names = vec!["localhost".to_string(), "kubernetes".to_string()];
    if let Ok(h) = hostname() {
        names.push(h);
    }
    let mut sans: Vec<SanType> = Vec::new();
    for n in names.iter().chain(extra_sans) {
        match n.parse::<IpAddr>() {
            Ok(ip) => sans.push(SanType::IpAddress(ip)),
            Err(_) => sans.push(SanType::DnsName(n.clone().try_into().map_err(
                |source| PkiError::Generate {
                    what: "serving",
                    source,
                },
            )?)),
        }
    }
    sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    sans.push(SanType::IpAddress(IpAddr::from([
        0u16, 0, 0, 0, 0, 0, 0, 1,
    ])));
    // The first address of the service range, as kube-apiserver's `kubernetes` service.
    sans.push(SanType::IpAddress(IpAddr::from([10, 43, 0, 1])));
    let server_key = KeyPair::generate().map_err(gen("serving"))?;
    let mut sp = CertificateParams::new(Vec::<String>::new()).map_err(gen("serving"))?;
    sp.subject_alt_names = sans;
    sp.distinguished_name
        .push(DnType::CommonName, "skiff-apiserver".to_string());
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = sp.signed_by(&server_key, &issuer).map_err(gen("serving"))?;

    let admin_key = KeyPair::generate().map_err(gen("admin"))?;
    let mut ap = CertificateParams::new(Vec::<String>::new()).map_err(gen("admin"))?;
    ap.distinguished_name
        .push(DnType::CommonName, "admin".to_string());
    ap.distinguished_name
        .push(DnType::OrganizationName, "system:masters".to_string());
    ap.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = ap.signed_by(&admin_key, &issuer).map_err(gen("admin"))?;

    // The CA cert goes last: its presence marks a complete set.
    write_private(&pki.server_key, &server_key.serialize_pem())?;
    write_private(&pki.server_cert, &server_cert.pem())?;
    write_private(&pki.admin_key, &admin_key.serialize_pem())?;
    write_private(&pki.admin_cert, &admin_cert.pem())?;
    write_private(ca_key_path, &issuer.key().serialize_pem())?;
    write_private(&pki.ca_cert, &ca_cert.pem())?;
    Ok(())
}

/// The CA's parameters. Issuing later rebuilds them: a certificate's issuer is the CA's
/// subject name and key, both of which these (with `ca.key`) reproduce exactly.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "skiff-ca".to_string());
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// TLS server (e.g. a kubelet's HTTPS API): needs `sans`.
    Server,
    /// TLS client.
    Client,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Issues a certificate signed by the cluster CA in `pki_dir` (`ca.key` must be there):
/// a kubelet's serving certificate (`Role::Server`, SANs = its node names and IPs) or a
/// client certificate. The CA key never leaves this process.
pub fn issue(
    pki_dir: &Path,
    role: Role,
    common_name: &str,
    organization: Option<&str>,
    sans: &[String],
) -> Result<Issued, PkiError> {
    let what = match role {
        Role::Server => "serving",
        Role::Client => "client",
    };
    let gen = move |source| PkiError::Generate { what, source };
    let ca_key_path = pki_dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path, "read"))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(gen)?;
    let issuer = Issuer::new(ca_params().map_err(gen)?, ca_key);
    let key = KeyPair::generate().map_err(gen)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.to_string());
    if let Some(o) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, o.to_string());
    }
    for n in sans {
        params.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.clone().try_into().map_err(gen)?),
        });
    }
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}
