//! The API server's HTTPS client towards kubelets: it presents the `kubelet-client`
//! certificate from the data dir's PKI and accepts only kubelet serving certificates
//! signed by the cluster CA (or by an extra CA given with `--kubelet-certificate-authority`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::pki::Pki;

/// Time to connect and finish the TLS handshake with a kubelet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a kubelet to answer a request (the answer itself may stream for long).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    #[error("reading {path}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: no answer within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout { addr: String },
    #[error("TLS handshake with {addr} (is its serving certificate signed by the cluster CA?)")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} is not a valid kubelet host")]
    BadHost { addr: String },
    #[error("HTTP exchange with {addr}")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr} sent no response within {RESPONSE_TIMEOUT:?}")]
    ResponseTimeout { addr: String },
}

pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(pki: &Pki, extra_ca: Option<&Path>) -> Result<KubeletClient, KubeletClientError> {
        let cred = |path: &Path| {
            let path = path.to_path_buf();
            move |e: Box<dyn std::error::Error + Send + Sync>| KubeletClientError::Credentials {
                path,
                source: e,
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca_path in std::iter::once(pki.ca_cert.as_path()).chain(extra_ca) {
            for ca in
                CertificateDer::pem_file_iter(ca_path).map_err(|e| cred(ca_path)(Box::new(e)))?
            {
                let ca = ca.map_err(|e| cred(ca_path)(Box::new(e)))?;
                roots.add(ca).map_err(|e| cred(ca_path)(Box::new(e)))?;
            }
        }
        let certs = CertificateDer::pem_file_iter(&pki.kubelet_client_cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| cred(&pki.kubelet_client_cert)(Box::new(e)))?;
        let key = PrivateKeyDer::from_pem_file(&pki.kubelet_client_key)
            .map_err(|e| cred(&pki.kubelet_client_key)(Box::new(e)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cred(&pki.ca_cert)(Box::new(e)))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| cred(&pki.kubelet_client_cert)(Box::new(e)))?;
        // Upgrades (exec, attach, port-forward) are HTTP/1.1 only.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// Sends `req` to the kubelet at `host:port` on a new connection, which is kept open
    /// for a streaming body or an upgrade.
    pub async fn send(
        &self,
        host: &str,
        port: u16,
        req: hyper::Request<axum::body::Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, KubeletClientError> {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| KubeletClientError::BadHost { addr: addr.clone() })?;
        let connect = async {
            let tcp =
                TcpStream::connect(&addr)
                    .await
                    .map_err(|source| KubeletClientError::Connect {
                        addr: addr.clone(),
                        source,
                    })?;
            let _ = tcp.set_nodelay(true);
            self.tls
                .connect(name, tcp)
                .await
                .map_err(|source| KubeletClientError::Tls {
                    addr: addr.clone(),
                    source,
                })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| KubeletClientError::ConnectTimeout { addr: addr.clone() })??;
        let http = |source| KubeletClientError::Http {
            addr: addr.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "kubelet connection ended with an error");
            }
        });
        tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| KubeletClientError::ResponseTimeout { addr: addr.clone() })?
            .map_err(http)
    }
}
