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
//!
//! Several servers on one store serve one cluster, so the cluster-wide secrets — the CA
//! (certificate and key) and the join token — live in the store too, under
//! [`BOOTSTRAP_KEY`] (outside `/registry/`, so no API reaches it): [`share`] runs before
//! [`ensure`] and makes the data dir's copy agree with the store's. The first server
//! writes its own (or freshly generated) secrets with create-if-absent, so servers
//! starting together agree on one winner; later servers take the stored ones; a data dir
//! whose CA differs from the stored one is refused (it belongs to another cluster). Each
//! server still issues its own serving, admin and kubelet-client certificates from the
//! shared CA.

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
    #[error("the datastore: {operation} {key}")]
    Store {
        operation: &'static str,
        key: &'static str,
        #[source]
        source: skiff_store::StoreError,
    },
    #[error("the cluster credentials stored under {key} are not readable (written by another program?); remove the key to let the next server store its own")]
    BadStored {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not the CA of the cluster in the datastore (stored under {key}): this data dir belongs to another cluster. Start this server with an empty data dir (or remove {dir}/pki and {dir}/token) to join the datastore's cluster with its CA, or give it the --datastore-endpoint of its own cluster")]
    CaMismatch {
        path: PathBuf,
        dir: PathBuf,
        key: &'static str,
    },
    #[error("{path} is not the join token of the cluster in the datastore (stored under {key}): agents holding this token would be refused by the other servers. Remove {path} to take the cluster's token (DATA/token of the server that created the cluster)")]
    TokenMismatch { path: PathBuf, key: &'static str },
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
    if !pki.ca_cert.exists() || !pki.ca_key.exists() {
        let ca = generate_ca()?;
        // The certificate goes last: its presence marks a complete CA.
        write_private(&pki.ca_key, &ca.key_pem)?;
        write_private(&pki.ca_cert, &ca.cert_pem)?;
    }
    if !pki.server_cert.exists() || !pki.server_key.exists() {
        let issued = issue(
            &pki.dir,
            Role::Server,
            "skiff-apiserver",
            None,
            &serving_sans(extra_sans),
        )?;
        write_private(&pki.server_key, &issued.key_pem)?;
        write_private(&pki.server_cert, &issued.cert_pem)?;
    }
    if !pki.admin_cert.exists() || !pki.admin_key.exists() {
        let issued = issue(&pki.dir, Role::Client, "admin", Some("system:masters"), &[])?;
        write_private(&pki.admin_key, &issued.key_pem)?;
        write_private(&pki.admin_cert, &issued.cert_pem)?;
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
        write_private(
            &pki.token_file,
            &format!("{}\n", new_token(&pki.token_file)?),
        )?;
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

/// A new random join token (hex of 24 random bytes); `path` names it in errors.
fn new_token(path: &Path) -> Result<String, PkiError> {
    let mut raw = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).map_err(|_| {
        PkiError::Io {
            path: path.to_path_buf(),
            operation: "draw random bytes for",
            source: std::io::Error::other("no system randomness"),
        }
    })?;
    Ok(hex::encode(raw))
}

/// A new self-signed cluster CA.
fn generate_ca() -> Result<Issued, PkiError> {
    let gen = |source| PkiError::Generate { what: "CA", source };
    let key = KeyPair::generate().map_err(gen)?;
    let cert = ca_params().map_err(gen)?.self_signed(&key).map_err(gen)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The serving certificate's names: localhost, `kubernetes`, the host name, the extra
/// SANs, loopback and the first address of the service range (as kube-apiserver's
/// `kubernetes` Service).
fn serving_sans(extra_sans: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "kubernetes".to_string()];
    if let Ok(h) = hostname() {
        names.push(h);
    }
    names.extend(extra_sans.iter().cloned());
    names.extend(["127.0.0.1", "::1", "10.43.0.1"].map(String::from));
    names
}

/// Where the cluster-wide secrets live in the store: outside `/registry/`, so no API
/// (and no watch cache) ever sees them.
pub const BOOTSTRAP_KEY: &str = "/skiff/bootstrap";

/// The cluster-wide secrets every server of one store shares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bootstrap {
    ca_cert: String,
    ca_key: String,
    token: String,
}

/// What [`share`] did with the data dir's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// This server stored its secrets: it is the cluster's first.
    Stored,
    /// The data dir took the stored secrets (a server joining the cluster).
    Taken,
    /// The data dir already held the stored secrets.
    Agreed,
}

fn read_if_exists(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, "read")(e)),
    }
}

/// Makes the CA and token of `data_dir` those of the cluster in `store` (see the module
/// docs); call before [`ensure`].
pub async fn share(store: &dyn skiff_store::Store, data_dir: &Path) -> Result<Shared, PkiError> {
    let dir = data_dir.join("pki");
    let (ca_cert, ca_key, token_file) = (
        dir.join("ca.crt"),
        dir.join("ca.key"),
        data_dir.join("token"),
    );
    let store_err = |operation| {
        move |source| PkiError::Store {
            operation,
            key: BOOTSTRAP_KEY,
            source,
        }
    };
    let local_ca = match (read_if_exists(&ca_cert)?, read_if_exists(&ca_key)?) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => None,
    };
    let local_token = read_if_exists(&token_file)?
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    loop {
        let stored = store
            .get(BOOTSTRAP_KEY, None)
            .await
            .map_err(store_err("reading"))?
            .kv;
        if let Some(kv) = stored {
            let stored: Bootstrap =
                serde_json::from_slice(&kv.value).map_err(|source| PkiError::BadStored {
                    key: BOOTSTRAP_KEY,
                    source,
                })?;
            if let Some((cert, _)) = &local_ca {
                if cert.trim() != stored.ca_cert.trim() {
                    return Err(PkiError::CaMismatch {
                        path: ca_cert,
                        dir: data_dir.to_path_buf(),
                        key: BOOTSTRAP_KEY,
                    });
                }
            }
            if local_token.as_ref().is_some_and(|t| *t != stored.token) {
                return Err(PkiError::TokenMismatch {
                    path: token_file,
                    key: BOOTSTRAP_KEY,
                });
            }
            if local_ca.is_some() && local_token.is_some() {
                return Ok(Shared::Agreed);
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
            if local_ca.is_none() {
                // Whatever this dir issued from an older CA is of no use: issue anew.
                for f in ["server", "admin", "kubelet-client"] {
                    for ext in ["crt", "key"] {
                        let p = dir.join(format!("{f}.{ext}"));
                        if p.exists() {
                            std::fs::remove_file(&p).map_err(io(&p, "remove"))?;
                        }
                    }
                }
                write_private(&ca_key, &stored.ca_key)?;
                write_private(&ca_cert, &stored.ca_cert)?;
            }
            write_private(&token_file, &format!("{}\n", stored.token))?;
            return Ok(Shared::Taken);
        }
        // No cluster in the store yet: offer this dir's secrets (or new ones); the
        // create fails if another server got there first, and the loop takes its.
        let (cert, key) = match &local_ca {
            Some(ca) => ca.clone(),
            None => {
                let ca = generate_ca()?;
                (ca.cert_pem, ca.key_pem)
            }
        };
        let token = match &local_token {
            Some(t) => t.clone(),
            None => new_token(&token_file)?,
        };
        let offer = Bootstrap {
            ca_cert: cert,
            ca_key: key,
            token,
        };
        let value = serde_json::to_vec(&offer).map_err(|source| PkiError::BadStored {
            key: BOOTSTRAP_KEY,
            source,
        })?;
        match store.create(BOOTSTRAP_KEY, value, 0).await {
            Ok(_) => {}
            Err(skiff_store::StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(store_err("creating")(e)),
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
        if local_ca.is_none() {
            write_private(&ca_key, &offer.ca_key)?;
            write_private(&ca_cert, &offer.ca_cert)?;
        }
        if local_token.is_none() {
            write_private(&token_file, &format!("{}\n", offer.token))?;
        }
        return Ok(Shared::Stored);
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use skiff_store::{EmbeddedStore, Store};

    fn read(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[tokio::test]
    async fn servers_starting_together_agree_on_one_ca_and_token() {
        let store = EmbeddedStore::in_memory().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ra, rb) = tokio::join!(share(&store, a.path()), share(&store, b.path()));
        let mut outcomes = [ra.unwrap(), rb.unwrap()];
        outcomes.sort_by_key(|o| *o as u8);
        assert_eq!(outcomes, [Shared::Stored, Shared::Taken]);
        for f in ["pki/ca.crt", "pki/ca.key", "token"] {
            assert_eq!(read(a.path(), f), read(b.path(), f), "{f}");
        }
        // Each issues its own serving certificate from the shared CA.
        let pa = ensure(a.path(), "https://127.0.0.1:1", &[]).unwrap();
        let pb = ensure(b.path(), "https://127.0.0.1:2", &["10.0.0.2".into()]).unwrap();
        assert_ne!(read(&pa.dir, "server.crt"), read(&pb.dir, "server.crt"));
        assert_eq!(pa.token, pb.token);
        // A later start agrees with the store.
        assert_eq!(share(&store, a.path()).await.unwrap(), Shared::Agreed);
    }

    #[tokio::test]
    async fn a_single_servers_existing_credentials_become_the_clusters() {
        let store = EmbeddedStore::in_memory().unwrap();
        let a = tempfile::tempdir().unwrap();
        let before = ensure(a.path(), "https://127.0.0.1:1", &[]).unwrap();
        let ca = read(a.path(), "pki/ca.crt");
        let server = read(a.path(), "pki/server.crt");
        assert_eq!(share(&store, a.path()).await.unwrap(), Shared::Stored);
        let after = ensure(a.path(), "https://127.0.0.1:1", &[]).unwrap();
        assert_eq!(read(a.path(), "pki/ca.crt"), ca);
        assert_eq!(read(a.path(), "pki/server.crt"), server);
        assert_eq!(after.token, before.token);
        let stored = store.get(BOOTSTRAP_KEY, None).await.unwrap().kv.unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(stored["caCert"], ca.as_str());
        assert_eq!(stored["token"], before.token.as_str());
    }

    #[tokio::test]
    async fn another_clusters_ca_or_token_is_refused_and_left_alone() {
        let store = EmbeddedStore::in_memory().unwrap();
        let a = tempfile::tempdir().unwrap();
        share(&store, a.path()).await.unwrap();
        let foreign = tempfile::tempdir().unwrap();
        ensure(foreign.path(), "https://127.0.0.1:1", &[]).unwrap();
        let ca = read(foreign.path(), "pki/ca.crt");
        let e = share(&store, foreign.path()).await.unwrap_err();
        assert!(matches!(e, PkiError::CaMismatch { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("ca.crt is not the CA of the cluster in the datastore")
                && msg.contains(BOOTSTRAP_KEY)
                && msg.contains("empty data dir"),
            "{msg}"
        );
        assert_eq!(read(foreign.path(), "pki/ca.crt"), ca);

        // The cluster's CA but another token.
        let c = tempfile::tempdir().unwrap();
        share(&store, c.path()).await.unwrap();
        std::fs::write(c.path().join("token"), "not-the-token\n").unwrap();
        let e = share(&store, c.path()).await.unwrap_err();
        assert!(matches!(e, PkiError::TokenMismatch { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_dir_without_a_ca_drops_certificates_of_an_older_one() {
        let store = EmbeddedStore::in_memory().unwrap();
        let a = tempfile::tempdir().unwrap();
        share(&store, a.path()).await.unwrap();
        let b = tempfile::tempdir().unwrap();
        ensure(b.path(), "https://127.0.0.1:1", &[]).unwrap();
        let old_server = read(b.path(), "pki/server.crt");
        for f in ["pki/ca.crt", "pki/ca.key", "token"] {
            std::fs::remove_file(b.path().join(f)).unwrap();
        }
        assert_eq!(share(&store, b.path()).await.unwrap(), Shared::Taken);
        ensure(b.path(), "https://127.0.0.1:1", &[]).unwrap();
        assert_ne!(read(b.path(), "pki/server.crt"), old_server);
        assert_eq!(read(b.path(), "pki/ca.crt"), read(a.path(), "pki/ca.crt"));
    }
}
