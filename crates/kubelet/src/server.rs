//! The kubelet's streaming HTTPS server: routes the kubelet paths to the protocol
//! handlers, negotiates WebSocket or SPDY upgrades, and streams container logs.
//!
//! Lifecycle: [`StreamingServer::bind`] loads the serving certificate (and, when given,
//! the CA that client certificates must chain to — the API server's kubelet-client CA);
//! [`StreamingServer::run`] serves until its shutdown future completes, then drains
//! (`skiff_serve::Serve`): exec/attach/port-forward sessions and log follows end at once,
//! other requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use skiff_serve::metrics::LongRunning;
use skiff_serve::CancellationToken;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::query::Query;
use crate::runtime::{ContainerRef, LogOptions, StreamingRuntime};
use crate::{portforward, remotecommand, ws};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// PEM files of the server's TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS setup with {path}")]
    Tls {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct StreamingServer {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    runtime: Arc<dyn StreamingRuntime>,
    /// Clients are authenticated (a certificate of the client CA, or a bearer token the
    /// reviewer accepts) and authorized.
    authorize: bool,
    tokens: Option<Arc<dyn TokenReviewer>>,
}

/// Authenticates bearer tokens (the agent asks the API server with a TokenReview).
#[async_trait::async_trait]
pub trait TokenReviewer: Send + Sync {
    /// Who `token` is, or `None` when it does not authenticate.
    async fn review(&self, token: &str) -> Option<Peer>;
}

/// Token verdicts kept for two minutes (the kubelet's webhook cache keeps them as long).
struct TokenCache {
    reviewer: Arc<dyn TokenReviewer>,
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Option<Peer>)>>,
}

impl TokenCache {
    async fn peer(&self, token: &str) -> Option<Peer> {
        const TTL: std::time::Duration = std::time::Duration::from_secs(120);
        let key = {
            use sha2::Digest;
            sha2::Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        if let Some((at, p)) = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            if at.elapsed() < TTL {
                return p.clone();
            }
        }
        let p = self.reviewer.review(token).await;
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, (at, _)| at.elapsed() < TTL);
        seen.insert(key, (std::time::Instant::now(), p.clone()));
        p
    }
}

/// Who a request comes from: its client certificate's subject (CN the user, O the
/// groups), as the API server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub user: String,
    pub groups: Vec<String>,
}

/// The group whose members may use every kubelet path: the API server's kubelet-client
/// certificate (and the admin's) are in it. Kubernetes' kubelet asks the API server
/// (SubjectAccessReview on `nodes/proxy`); with RBAC's defaults that allows the same
/// identities, and refuses nodes, service accounts and ordinary users.
pub const ADMIN_GROUP: &str = "system:masters";

fn peer_of(cert: &[u8]) -> Option<Peer> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let subject = c.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(Peer { user, groups })
}

/// The kubelet's authorization attributes of a path: (verb, subresource of `nodes`).
fn attributes(method: &Method, segs: &[&str]) -> (&'static str, &'static str) {
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "*",
    };
    let sub = match segs.first().copied() {
        Some("stats") => "stats",
        Some("metrics") => "metrics",
        Some("logs") => "log",
        Some("spec") => "spec",
        _ => "proxy",
    };
    (verb, sub)
}

/// `None` when `peer` may do what `req` asks; else the response that refuses it.
fn authorize(peer: Option<&Peer>, method: &Method, segs: &[&str]) -> Option<Response<Body>> {
    let plain = |code: u16, text: String| {
        let mut r = Response::new(full(text));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let Some(peer) = peer else {
        return Some(plain(401, "Unauthorized\n".into()));
    };
    // Any authenticated client may ask whether the kubelet is alive.
    if segs == ["healthz"] || peer.groups.iter().any(|g| g == ADMIN_GROUP) {
        return None;
    }
    let (verb, sub) = attributes(method, segs);
    Some(plain(
        403,
        format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{sub}])\n",
            peer.user
        ),
    ))
}

impl StreamingServer {
    pub async fn bind(
        addr: SocketAddr,
        files: &TlsFiles,
        runtime: Arc<dyn StreamingRuntime>,
    ) -> Result<StreamingServer, ServerError> {
        let tls = tls_acceptor(files)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(StreamingServer {
            listener,
            tls,
            runtime,
            authorize: files.client_ca.is_some(),
            tokens: None,
        })
    }

    /// Also accepts bearer tokens that `reviewer` authenticates (clients without a
    /// certificate).
    pub fn with_token_reviewer(mut self, reviewer: Arc<dyn TokenReviewer>) -> Self {
        self.tokens = Some(reviewer);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains (module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let signal = CancellationToken::new();
        let rt = self.runtime;
        let stop = signal.clone();
        let check = self.authorize;
        let tokens = self.tokens.map(|reviewer| {
            Arc::new(TokenCache {
                reviewer,
                seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            })
        });
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (rt, stop, tokens) = (rt.clone(), stop.clone(), tokens.clone());
            async move {
                if check {
                    let mut peer = req.extensions().get::<Peer>().cloned();
                    if peer.is_none() {
                        let bearer = req
                            .headers()
                            .get(hyper::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .map(str::trim)
                            .filter(|t| !t.is_empty());
                        if let (Some(t), Some(cache)) = (bearer, &tokens) {
                            peer = cache.peer(t).await;
                        }
                    }
                    let segs: Vec<&str> = req
                        .uri()
                        .path()
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .collect();
                    if let Some(refused) = authorize(peer.as_ref(), req.method(), &segs) {
                        return Ok::<_, Infallible>(refused);
                    }
                }
                Ok::<_, Infallible>(handle(rt, req, stop).await)
            }
        });
        skiff_serve::Serve::new(self.listener)
            .tls(Some(self.tls))
            .on_connection(|c| {
                let mut ext = hyper::http::Extensions::new();
                if let Some(p) = c
                    .peer_certificates
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| peer_of(leaf))
                {
                    ext.insert(p);
                }
                ext
            })
            .name("kubelet")
            .shutdown_signal(signal)
            .run(svc, shutdown)
            .await;
    }
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: Box<dyn std::error::Error + Send + Sync>| ServerError::Tls { path, source: e }
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(&files.cert)(Box::new(e)))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(&files.key)(Box::new(e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&files.cert)(Box::new(e)))?;
    let builder = match &files.client_ca {
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in
                CertificateDer::pem_file_iter(ca_path).map_err(|e| err(ca_path)(Box::new(e)))?
            {
                let ca = ca.map_err(|e| err(ca_path)(Box::new(e)))?;
                roots.add(ca).map_err(|e| err(ca_path)(Box::new(e)))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            // A client without a certificate may still bring a bearer token; requests
            // that have neither are refused (401) before they reach a handler.
            .allow_unauthenticated()
            .build()
            .map_err(|e| err(ca_path)(Box::new(e)))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| err(&files.cert)(Box::new(e)))?;
    // Upgrades need HTTP/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A Kubernetes Status error response.
fn status(code: u16, reason: &str, message: impl Into<String>) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    });
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    rt: Arc<dyn StreamingRuntime>,
    req: Request<Incoming>,
    stop: CancellationToken,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = Query::parse(req.uri().query());
    let target = |ns: &str, pod: &str, c: &str| ContainerRef {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        container: c.to_string(),
    };
    let stream_method = matches!(*req.method(), Method::GET | Method::POST);
    match segs.as_slice() {
        [verb @ ("exec" | "attach"), ns, pod, container]
        | [verb @ ("exec" | "attach"), ns, pod, _, container]
            if stream_method =>
        {
            let attach = *verb == "attach";
            let tty = q.flag("tty");
            let r = remotecommand::Request {
                target: target(ns, pod, container),
                command: q.all("command"),
                attach,
                stdin: q.flag("input") || q.flag("stdin"),
                stdout: q.flag("output") || q.flag("stdout"),
                stderr: (q.flag("error") || q.flag("stderr")) && !tty,
                tty,
            };
            if !attach && r.command.is_empty() {
                return status(
                    400,
                    "BadRequest",
                    "you must specify at least one command for the container (command=…)",
                );
            }
            if !(r.stdin || r.stdout || r.stderr) {
                return status(
                    400,
                    "BadRequest",
                    "you must specify at least 1 of stdin, stdout, stderr",
                );
            }
            upgrade(req, Stream::RemoteCommand(r), rt, stop)
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] if stream_method => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            let mut ports = Vec::new();
            for p in q.all("port").iter().flat_map(|v| v.split(',')) {
                match p.trim().parse::<u16>() {
                    Ok(n) if n > 0 => ports.push(n),
                    _ => {
                        return status(
                            400,
                            "BadRequest",
                            format!("invalid port {p:?}: ports must be 1-65535"),
                        )
                    }
                }
            }
            upgrade(req, Stream::PortForward { ns, pod, ports }, rt, stop)
        }
        ["containerLogs", ns, pod, container] if *req.method() == Method::GET => {
            let resp = logs(rt, target(ns, pod, container), &q).await;
            // A follow never ends by itself: it ends when shutdown starts.
            resp.map(|b| LongRunning::new(b, &stop, ()).boxed_unsync())
        }
        ["healthz"] => Response::new(full("ok")),
        ["stats", "summary"] if *req.method() == Method::GET => match rt.stats_summary().await {
            Ok(v) => {
                let mut r = Response::new(full(v.to_string()));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(e) => {
                let (code, reason) = e.code_reason();
                status(code, reason, e.full_message())
            }
        },
        ["metrics"] if *req.method() == Method::GET => match rt.metrics().await {
            Ok(text) => {
                let mut r = Response::new(full(text));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static(skiff_serve::metrics::CONTENT_TYPE),
                );
                r
            }
            Err(e) => {
                let (code, reason) = e.code_reason();
                status(code, reason, e.full_message())
            }
        },
        ["metrics", "resource"] if *req.method() == Method::GET => match rt.metrics_resource().await {
            Ok(text) => {
                let mut r = Response::new(full(text));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            Err(e) => {
                let (code, reason) = e.code_reason();
                status(code, reason, e.full_message())
            }
        },
        _ => status(
            404,
            "NotFound",
            format!(
                "{} {path} is not a kubelet path (exec, attach, portForward, containerLogs, stats/summary, metrics, metrics/resource)",
                req.method()
            ),
        ),
    }
}

enum Stream {
    RemoteCommand(remotecommand::Request),
    PortForward {
        ns: String,
        pod: String,
        /// From the `port` query parameter (WebSocket channel protocol only).
        ports: Vec<u16>,
    },
}

fn upgrade(
    mut req: Request<Incoming>,
    stream: Stream,
    rt: Arc<dyn StreamingRuntime>,
    stop: CancellationToken,
) -> Response<Body> {
    let headers = req.headers().clone();
    let is_spdy = ws::header_values(&headers, "upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    let (kind, supported, offered): (&str, Vec<&str>, Vec<String>) = if ws::is_upgrade(&headers) {
        let supported = match stream {
            Stream::RemoteCommand(_) => remotecommand::WS_PROTOCOLS.to_vec(),
            Stream::PortForward { .. } => vec![
                portforward::WS_TUNNEL_PROTOCOL,
                portforward::WS_CHANNEL_PROTOCOL,
            ],
        };
        ("WebSocket", supported, ws::offered_protocols(&headers))
    } else if is_spdy {
        let supported = match stream {
            Stream::RemoteCommand(_) => remotecommand::SPDY_PROTOCOLS.to_vec(),
            Stream::PortForward { .. } => vec![portforward::PROTOCOL],
        };
        (
            "SPDY",
            supported,
            ws::header_values(&headers, "x-stream-protocol-version"),
        )
    } else {
        return status(
            400,
            "BadRequest",
            "Upgrade request required: use a WebSocket (Upgrade: websocket) or SPDY/3.1 client such as kubectl",
        );
    };
    let Some(chosen) = supported
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .map(|s| s.to_string())
    else {
        return status(
            400,
            "BadRequest",
            format!(
                "unable to upgrade: unable to negotiate a {kind} protocol: client supports {offered:?}, server supports {supported:?}"
            ),
        );
    };
    if let Stream::PortForward { ports, .. } = &stream {
        if chosen == portforward::WS_CHANNEL_PROTOCOL && ports.is_empty() {
            return status(
                400,
                "BadRequest",
                "port forwarding over the WebSocket channel protocol needs the ports: add port=N to the query",
            );
        }
    }
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    if kind == "WebSocket" {
        match ws::handshake_headers(&headers, &chosen) {
            Ok(list) => {
                for (k, v) in list {
                    h.insert(k, v);
                }
            }
            Err(e) => return status(400, "BadRequest", e.to_string()),
        }
    } else {
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        if let Ok(v) = HeaderValue::from_str(&chosen) {
            h.insert("x-stream-protocol-version", v);
        }
    }
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                tracing::debug!(error = %e, "kubelet upgrade failed");
                return;
            }
        };
        let session = async move {
            match (stream, kind) {
                (Stream::RemoteCommand(r), "WebSocket") => {
                    remotecommand::serve_websocket(io, &chosen, rt, r).await
                }
                (Stream::RemoteCommand(r), _) => remotecommand::serve_spdy(io, rt, r).await,
                (Stream::PortForward { ns, pod, .. }, "WebSocket")
                    if chosen == portforward::WS_TUNNEL_PROTOCOL =>
                {
                    portforward::serve_spdy(portforward::websocket_tunnel(io), rt, ns, pod).await
                }
                (Stream::PortForward { ns, pod, ports }, "WebSocket") => {
                    portforward::serve_websocket_channels(io, rt, ns, pod, ports).await
                }
                (Stream::PortForward { ns, pod, .. }, _) => {
                    portforward::serve_spdy(io, rt, ns, pod).await
                }
            }
        };
        // An upgraded session is no longer the HTTP connection's: end it when shutdown
        // starts, or it would outlive the drain.
        tokio::select! {
            _ = session => {}
            _ = stop.cancelled() => {}
        }
    });
    resp
}

async fn logs(rt: Arc<dyn StreamingRuntime>, target: ContainerRef, q: &Query) -> Response<Body> {
    let opts = match log_options(q) {
        Ok(o) => o,
        Err(msg) => return status(400, "BadRequest", msg),
    };
    let reader = match rt.logs(&target, &opts).await {
        Ok(r) => r,
        Err(e) => {
            let (code, reason) = e.code_reason();
            return status(code, reason, e.full_message());
        }
    };
    let reader: crate::runtime::Reader = match opts.limit_bytes {
        Some(n) => Box::pin(reader.take(n)),
        None => reader,
    };
    let body =
        StreamBody::new(tokio_util::io::ReaderStream::new(reader).map(|r| r.map(Frame::data)));
    let mut resp = Response::new(BodyExt::boxed_unsync(body));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp
}

fn log_options(q: &Query) -> Result<LogOptions, String> {
    let opts = LogOptions {
        follow: q.flag("follow"),
        previous: q.flag("previous"),
        timestamps: q.flag("timestamps"),
        tail_lines: q.u64("tailLines")?,
        since_seconds: q.u64("sinceSeconds")?,
        since_time: q
            .get("sinceTime")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        limit_bytes: q.u64("limitBytes")?,
    };
    if opts.since_seconds.is_some() && opts.since_time.is_some() {
        return Err("at most one of sinceTime or sinceSeconds may be specified".to_string());
    }
    if opts.limit_bytes == Some(0) {
        return Err("limitBytes must be greater than zero".to_string());
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user: &str, groups: &[&str]) -> Peer {
        Peer {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_api_servers_group_may_use_the_kubelet_api() {
        let admin = peer("skiff-apiserver-kubelet-client", &[ADMIN_GROUP]);
        let node = peer("system:node:other", &["system:nodes"]);
        for segs in [
            &["exec", "default", "p", "c"][..],
            &["stats", "summary"],
            &["containerLogs", "default", "p", "c"],
        ] {
            assert!(authorize(Some(&admin), &Method::POST, segs).is_none());
            let refused = authorize(Some(&node), &Method::POST, segs).unwrap();
            assert_eq!(refused.status(), 403);
        }
        assert!(authorize(Some(&node), &Method::GET, &["healthz"]).is_none());
        assert_eq!(
            authorize(None, &Method::GET, &["healthz"])
                .unwrap()
                .status(),
            401
        );
        assert_eq!(
            attributes(&Method::POST, &["exec", "ns", "p", "c"]),
            ("create", "proxy")
        );
        assert_eq!(
            attributes(&Method::GET, &["stats", "summary"]),
            ("get", "stats")
        );
        assert_eq!(
            attributes(&Method::GET, &["metrics", "resource"]),
            ("get", "metrics")
        );
    }

    #[test]
    fn a_certificates_subject_names_the_peer() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            peer_of(cert.der()),
            Some(peer("system:node:n1", &["system:nodes"]))
        );
    }
}
