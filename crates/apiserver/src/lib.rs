//! skiff's Kubernetes API server: HTTPS with client-certificate and bearer-token
//! authentication, discovery and OpenAPI, generic CRUD/list/watch/patch for every kind in
//! `skiff_api::kinds::KINDS`, stored through the `skiff_store::Store` trait.
//!
//! Lifecycle: [`Server::bind`] loads (or on first start generates) the cluster
//! credentials — shared through the store by every server on it (see [`pki`]) — creates the built-in namespaces and starts the watch cache;
//! [`Server::run`] serves until its shutdown future completes.

#![forbid(unsafe_code)]

mod admission;
mod alloc;
pub mod audit;
mod authn;
mod authz;
mod crds;
mod discovery;
mod event_ttl;
#[cfg(test)]
mod fuzz_tests;
mod handlers;
mod kubelet_client;
mod local_client;
mod master_endpoints;
pub mod meta;
mod metrics;
mod node_authz;
pub mod pki;
mod proto;
mod query;
mod raw;
mod resource_metrics;
mod sa_token;
mod status;
mod validate;
mod watch_cache;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_store::Store;
use tokio::net::TcpListener;

pub use local_client::LocalTransport;
pub use resource_metrics::store_bytes_per_pod as metrics_store_bytes_per_pod;
pub use status::{ApiError, Cause};

/// Largest request body accepted, as kube-apiserver (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `pki/`, `kubeconfig.yaml` and `token`.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra subject alternative names for the serving cert (first start only).
    pub extra_sans: Vec<String>,
    /// Where the audit log goes; None turns it off.
    pub audit: Option<audit::AuditTarget>,
    /// How long Events are kept (kube-apiserver's `--event-ttl`); None keeps them forever.
    pub event_ttl: Option<Duration>,
    /// A CA bundle trusted for kubelet serving certificates besides the cluster CA.
    pub kubelet_ca: Option<PathBuf>,
    /// The ranges Service addresses are allocated from.
    pub cluster: skiff_api::cluster::ClusterConfig,
    /// The address other components (and pods, through the `kubernetes` Service) reach
    /// this server at; default: the listen address, or this host's first non-loopback
    /// IPv4 address when listening on all.
    pub advertise_address: Option<std::net::IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("credentials in {dir}")]
    Pki {
        dir: PathBuf,
        #[source]
        source: pki::PkiError,
    },
    #[error("TLS setup with {path}")]
    Tls {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("kubelet client credentials")]
    KubeletClient(#[source] kubelet_client::KubeletClientError),
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error("creating the built-in namespaces and the kubernetes Service: {0}")]
    Bootstrap(String),
    #[error("store: {operation}")]
    Store {
        operation: &'static str,
        #[source]
        source: skiff_store::StoreError,
    },
}

/// Who a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Presented a client certificate signed by the cluster CA.
    ClientCert,
    Anonymous,
}

/// What the object handlers (create, get, update, patch, delete) work with: the store and
/// what every write consults. Handlers take this part, not the whole [`AppState`].
pub(crate) struct Objects {
    pub store: Arc<dyn Store>,
    /// OpenAPI v2 definitions, for unknown-field detection.
    pub definitions: serde_json::Value,
    /// Service ClusterIPs and NodePorts, allocated in the store.
    pub alloc: alloc::Allocator,
    /// The time source of graceful deletion and Event expiry.
    pub clock: Arc<dyn meta::Clock>,
    pub event_ttl: Option<Duration>,
    pub event_leases: event_ttl::EventLeases,
    /// The custom kinds' schemas, printer columns and subresources.
    pub crds: Arc<crds::Crds>,
    /// The RBAC policy (RBAC kinds' writes are checked against it).
    pub authz: Arc<authz::Authorizer>,
    /// The admission webhook configurations every write is sent through.
    pub webhooks: Arc<admission::Webhooks>,
    /// The ValidatingAdmissionPolicies and their bindings, compiled.
    pub policies: Arc<admission::Policies>,
}

/// The server's parts, each handed on to what needs it: `objects` to the object handlers,
/// `cache` to lists and watches, `audit`, `kubelet`, `metrics` and `health` to their own
/// layers.
pub(crate) struct AppState {
    pub objects: Objects,
    pub cache: Arc<watch_cache::WatchCache>,
    pub token: String,
    /// Signs and verifies service-account tokens.
    pub signer: sa_token::Signer,
    /// The RBAC policy every request is checked against.
    pub authz: Arc<authz::Authorizer>,
    /// The cluster CA certificate (PEM), served unauthenticated at `/cacerts`.
    pub ca_pem: String,
    pub server_address: String,
    /// Protobuf message layouts for kubectl's protobuf request bodies.
    pub proto: proto::Schema,
    pub audit: Option<audit::AuditLog>,
    /// HTTPS client for the kubelets' streaming API (exec, attach, port-forward, logs).
    pub kubelet: kubelet_client::KubeletClient,
    /// Cancelled when shutdown starts: long-running responses (watches, streams) end.
    pub shutdown: skiff_serve::CancellationToken,
    pub metrics: Arc<metrics::Metrics>,
    pub health: metrics::Health,
    /// The resource metrics API's latest points (`metrics.k8s.io`).
    pub resource_metrics: resource_metrics::ResourceMetrics,
}

/// A bound, not yet serving, API server.
pub struct Server {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<AppState>,
    pub pki: pki::Pki,
    /// How often the kubelets' resource metrics are scraped; None: never.
    metric_resolution: Option<Duration>,
}

impl Server {
    pub async fn bind(config: Config, store: Arc<dyn Store>) -> Result<Server, ServeError> {
        let metrics = metrics::Metrics::new();
        let store: Arc<dyn Store> = Arc::new(metrics::MeteredStore::new(store, metrics.clone()));
        let shutdown = skiff_serve::CancellationToken::new();
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        // Clients reach a wildcard listener through loopback on this machine.
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            local.ip().to_string()
        };
        let server_address = format!("{host}:{}", local.port());
        // Servers on one store serve one cluster: one CA and one join token.
        pki::share(&*store, &config.data_dir)
            .await
            .map_err(|source| ServeError::Pki {
                dir: config.data_dir.clone(),
                source,
            })?;
        let pki = pki::ensure(
            &config.data_dir,
            &format!("https://{server_address}"),
            &config.extra_sans,
        )
        .map_err(|source| ServeError::Pki {
            dir: config.data_dir.clone(),
            source,
        })?;
        let tls = tls_acceptor(&pki)?;
        let ca_pem = std::fs::read_to_string(&pki.ca_cert).map_err(|e| ServeError::Tls {
            path: pki.ca_cert.clone(),
            source: Box::new(e),
        })?;
        let kubelet = kubelet_client::KubeletClient::new(&pki, config.kubelet_ca.as_deref())
            .map_err(ServeError::KubeletClient)?;
        let allocator = alloc::Allocator::new(config.cluster.clone());
        handlers::bootstrap(&*store, &allocator, local.port())
            .await
            .map_err(|e| ServeError::Bootstrap(e.message))?;
        let advertise = config.advertise_address.unwrap_or_else(|| {
            if local.ip().is_unspecified() {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            } else {
                local.ip()
            }
        });
        master_endpoints::start(store.clone(), SocketAddr::new(advertise, local.port()))
            .await
            .map_err(|source| ServeError::Store {
                operation: "announcing this server in the kubernetes Service's endpoints",
                source,
            })?;
        let cache = watch_cache::WatchCache::start(store.clone())
            .await
            .map_err(|source| ServeError::Store {
                operation: "starting the watch cache",
                source,
            })?;
        let audit = config
            .audit
            .as_ref()
            .map(audit::AuditLog::open)
            .transpose()?;
        let definitions = skiff_api::openapi::v2()
            .get("definitions")
            .cloned()
            .unwrap_or_default();
        let health = metrics::Health::new(store.clone(), shutdown.clone());
        let signer = sa_token::load_signer(&pki.ca_key).map_err(|e| ServeError::Tls {
            path: pki.ca_key.clone(),
            source: Box::new(e),
        })?;
        let authorizer = Arc::new(authz::Authorizer::default());
        let objects = Objects {
            store,
            definitions,
            alloc: allocator,
            clock: Arc::new(meta::SystemClock),
            event_ttl: config.event_ttl,
            event_leases: Default::default(),
            crds: Default::default(),
            authz: authorizer.clone(),
            webhooks: Default::default(),
            policies: Default::default(),
        };
        // Custom kinds are served and the policy is in force from the first request.
        crds::load(&objects, &objects.crds)
            .await
            .map_err(|e| ServeError::Bootstrap(e.message))?;
        authz::bootstrap(&objects)
            .await
            .map_err(|e| ServeError::Bootstrap(format!("the default RBAC roles: {}", e.message)))?;
        authz::load(&objects, &authorizer).await.map_err(|e| {
            ServeError::Bootstrap(format!("loading the RBAC policy: {}", e.message))
        })?;
        node_authz::load(&objects, &authorizer.nodes)
            .await
            .map_err(|e| {
                ServeError::Bootstrap(format!(
                    "loading the node authorizer's graph: {}",
                    e.message
                ))
            })?;
        admission::load(&objects).await.map_err(|e| {
            ServeError::Bootstrap(format!(
                "loading the admission webhook configurations and policies: {}",
                e.message
            ))
        })?;
        Ok(Server {
            listener,
            tls,
            state: Arc::new(AppState {
                objects,
                cache,
                token: pki.token.clone(),
                signer,
                authz: authorizer,
                ca_pem,
                server_address,
                proto: proto::Schema::new(),
                audit,
                kubelet,
                health,
                shutdown,
                metrics,
                resource_metrics: Default::default(),
            }),
            pki,
            metric_resolution: None,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A kube-rs client that calls this server in process, authenticated as `username`
    /// in `groups` (plus `system:authenticated`), through the same authn, admission,
    /// audit and metrics path as an HTTPS client with that certificate (see
    /// [`LocalTransport`]). Call inside a tokio runtime; the client stays valid while and
    /// after [`Server::run`] serves.
    pub fn client(&self, username: &str, groups: &[&str]) -> kube::Client {
        local_client::client(self.state.clone(), username, groups)
    }

    /// Appends what `source` returns (Prometheus text exposition, as
    /// `prometheus_client::encoding::text::encode` writes it) to this server's `/metrics`,
    /// so components running inside the server (the scheduler) are scraped with it.
    pub fn add_metrics_source(&self, source: impl Fn() -> String + Send + Sync + 'static) {
        self.state.metrics.add_source(Box::new(source));
    }

    /// Scrapes every node's kubelet `/metrics/resource` each `every` for the resource
    /// metrics API (metrics-server's `--metric-resolution`); off unless called, so a
    /// server whose Node objects are made up never connects to their addresses.
    pub fn scrape_resource_metrics(&mut self, every: Duration) {
        self.metric_resolution = Some(every);
    }

    /// Serves until `shutdown` completes, then drains: watches and streams end, requests
    /// in flight finish (see `skiff_serve::Serve`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let app = handlers::router(self.state.clone());
        let follower = tokio::spawn(
            self.state
                .metrics
                .clone()
                .follow_cache(self.state.cache.clone(), self.state.shutdown.clone()),
        );
        let rbac = tokio::spawn(authz::follow(
            self.state.clone(),
            self.state.cache.clone(),
            self.state.shutdown.clone(),
        ));
        let node_graph = tokio::spawn(node_authz::follow(
            self.state.clone(),
            self.state.cache.clone(),
            self.state.shutdown.clone(),
        ));
        let custom = tokio::spawn(crds::follow(
            self.state.clone(),
            self.state.cache.clone(),
            self.state.shutdown.clone(),
        ));
        let webhooks = tokio::spawn(admission::follow(
            self.state.clone(),
            self.state.cache.clone(),
            self.state.shutdown.clone(),
        ));
        let scraper = self
            .metric_resolution
            .map(|every| tokio::spawn(resource_metrics::run_scraper(self.state.clone(), every)));
        skiff_serve::Serve::new(self.listener)
            .tls(Some(self.tls))
            .name("apiserver")
            .shutdown_signal(self.state.shutdown.clone())
            .on_connection(|c| {
                let mut ext = hyper::http::Extensions::new();
                ext.insert(RemoteAddr(c.remote));
                // The verifier only accepts certificates signed by the cluster CA, so any
                // presented certificate authenticates the connection.
                match c.peer_certificates {
                    Some([leaf, ..]) => {
                        ext.insert(Peer::ClientCert);
                        ext.insert(cert_user(leaf));
                    }
                    Some([]) | None => {
                        ext.insert(Peer::Anonymous);
                    }
                }
                ext
            })
            .run(hyper_util::service::TowerToHyperService::new(app), shutdown)
            .await;
        follower.abort();
        rbac.abort();
        node_graph.abort();
        custom.abort();
        webhooks.abort();
        if let Some(s) = scraper {
            s.abort();
        }
    }
}

/// The TCP peer of a request (the audit log's source IP).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteAddr(pub SocketAddr);

/// The user a client certificate names, as Kubernetes reads it: the subject's common name
/// is the user name, its organizations are the groups.
fn cert_user(der: &rustls::pki_types::CertificateDer<'_>) -> audit::UserInfo {
    let mut user = audit::UserInfo::default();
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) {
        let subject = cert.subject();
        if let Some(cn) = subject.iter_common_name().next() {
            user.username = cn.as_str().unwrap_or_default().to_string();
        }
        user.groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(String::from)
            .collect();
    }
    user.groups.push("system:authenticated".into());
    user
}

fn tls_acceptor(pki: &pki::Pki) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |path: &PathBuf| {
        let path = path.clone();
        move |e: Box<dyn std::error::Error + Send + Sync>| ServeError::Tls { path, source: e }
    };
    let certs = CertificateDer::pem_file_iter(&pki.server_cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(&pki.server_cert)(Box::new(e)))?;
    let key = PrivateKeyDer::from_pem_file(&pki.server_key)
        .map_err(|e| err(&pki.server_key)(Box::new(e)))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in
        CertificateDer::pem_file_iter(&pki.ca_cert).map_err(|e| err(&pki.ca_cert)(Box::new(e)))?
    {
        let ca = ca.map_err(|e| err(&pki.ca_cert)(Box::new(e)))?;
        roots.add(ca).map_err(|e| err(&pki.ca_cert)(Box::new(e)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| err(&pki.ca_cert)(Box::new(e)))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
        })
        .map_err(|e| err(&pki.server_cert)(Box::new(e)))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
