//! skiff's OCI distribution registry server.
//!
//! Implements the OCI Distribution Spec 1.1 (pull, push, content discovery, content
//! management, referrers) over a content-addressed directory (see [`storage`]), with
//! optional htpasswd + token authentication ([`auth`]), TLS and a read-only mode.
//!
//! Lifecycle: [`Server::bind`] opens the storage, loads credentials and binds the
//! listener (so callers learn the port before serving); [`Server::run`] serves until
//! the shutdown future completes, purging uploads idle longer than
//! [`Config::upload_expiry`] in the background. [`storage::gc`] is an offline
//! operation on the same data directory.

#![forbid(unsafe_code)]

pub mod auth;
pub mod digest;
pub mod error;
pub mod gc;
mod http;
pub mod manifest;
pub mod names;
pub mod storage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;

pub use error::Error;
pub use gc::{gc, GcReport};
pub use http::Registry;
pub use storage::Storage;

/// How `skiff registry serve` is configured.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub htpasswd: Option<PathBuf>,
    /// Certificate chain and private key (PEM) for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub read_only: bool,
    /// Uploads without activity for this long are removed.
    pub upload_expiry: Duration,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            listen,
            data_dir,
            htpasswd: None,
            tls: None,
            read_only: false,
            upload_expiry: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening registry storage")]
    Storage(#[source] Error),
    #[error("loading credentials")]
    Auth(#[from] auth::AuthSetupError),
    #[error("TLS {what} {path}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS certificate {cert} and key {key} do not form a usable server configuration")]
    TlsConfig {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS certificate file {path} holds no PEM certificate")]
    TlsNoCertificate { path: PathBuf },
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, registry.
pub struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    upload_expiry: Duration,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        let storage = Storage::open(&config.data_dir).map_err(ServeError::Storage)?;
        let auth = match &config.htpasswd {
            Some(p) => Some(auth::Auth::load(
                p,
                &config.data_dir,
                Arc::new(SystemTime::now),
            )?),
            None => None,
        };
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(Server {
            listener,
            registry: Arc::new(Registry {
                storage,
                auth,
                read_only: config.read_only,
                tls: tls.is_some(),
                metrics: Arc::new(http::Metrics::default()),
            }),
            tls,
            upload_expiry: config.upload_expiry,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains: requests in flight (a blob
    /// download, an upload chunk) get `skiff_serve::Limits::drain_timeout` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let app = http::router(self.registry.clone());
        let purger = tokio::spawn(purge_loop(self.registry.clone(), self.upload_expiry));
        skiff_serve::Serve::new(self.listener)
            .tls(self.tls)
            .name("registry")
            .run(hyper_util::service::TowerToHyperService::new(app), shutdown)
            .await;
        purger.abort();
    }
}

async fn purge_loop(reg: Arc<Registry>, expiry: Duration) {
    let every = (expiry / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        match reg.storage.purge_stale_uploads(expiry).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged expired uploads"),
            Err(e) => {
                tracing::warn!(error = %skiff_serve::Chain(&e), "purging expired uploads failed")
            }
        }
        tokio::time::sleep(every).await;
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ServeError::TlsFile {
            what: "certificate",
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServeError::TlsNoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| ServeError::TlsFile {
        what: "private key",
        path: key.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|source| ServeError::TlsConfig {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
