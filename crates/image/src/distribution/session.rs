//! One registry's HTTP session: scheme choice, TLS roots, and authentication.
//!
//! Why our own HTTP layer on hyper rather than oci-client: pulls must resume an
//! interrupted layer with `Range` from a partial file the store keeps, pushes must choose
//! the repository to cross-mount from, blobs must stream to and from the content store
//! with our digest checks and progress, and errors must carry the registry, status and
//! OCI error code. oci-client covers only parts of that and would pull in reqwest; hyper,
//! hyper-util and hyper-rustls are already in the workspace.
//!
//! Authentication follows docker: a request goes out with what is known to work for the
//! registry (nothing, Basic, or a Bearer token for the request's scopes). On `401` the
//! `WWW-Authenticate` challenge says which: `Basic` resends with the stored credentials;
//! `Bearer realm=…,service=…,scope=…` fetches a token from the realm (with Basic
//! credentials if there are any, anonymously otherwise) and resends once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderName};
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use skiff_serve::error_chain;

use super::config::Credentials;
use super::{reference, DistributionError};

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// How a client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host[:port]`) spoken to over plain HTTP; loopback hosts always are.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM) trusted for every registry, beside the system roots.
    pub ca_certs: Vec<PathBuf>,
    /// Docker's per-registry CA directory: `<dir>/<host[:port]>/*.crt` are trusted for
    /// that registry.
    pub certs_dir: PathBuf,
    /// Layers transferred at once.
    pub parallel: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            ca_certs: Vec::new(),
            certs_dir: PathBuf::from("/etc/docker/certs.d"),
            parallel: 4,
        }
    }
}

impl ClientOptions {
    /// Whether a registry is spoken to over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        if self.insecure_registries.iter().any(|h| h == host) {
            return true;
        }
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
        };
        name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// A request body that can be made again (for the resend after an auth challenge).
#[derive(Clone)]
pub(crate) enum ReqBody {
    Empty,
    Bytes(Bytes),
    /// A whole file, streamed; `sent` is told how many bytes went out.
    File {
        path: PathBuf,
        len: u64,
        sent: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    },
}

impl ReqBody {
    async fn make(&self) -> Result<(Body, Option<u64>), DistributionError> {
        Ok(match self {
            Self::Empty => (Empty::new().map_err(|e| match e {}).boxed(), None),
            Self::Bytes(b) => (
                Full::new(b.clone()).map_err(|e| match e {}).boxed(),
                Some(b.len() as u64),
            ),
            Self::File { path, len, sent } => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(DistributionError::io("open", path))?;
                (
                    FileBody {
                        file,
                        remaining: *len,
                        sent: sent.clone(),
                    }
                    .boxed(),
                    Some(*len),
                )
            }
        })
    }
}

/// Streams a file as a request body without holding it in memory.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    sent: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = self.remaining.min(1 << 20) as usize;
        let mut buf = BytesMut::with_capacity(want);
        let this = &mut *self;
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.file), cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(0)) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank while it was being sent",
            )))),
            Poll::Ready(Ok(n)) => {
                let n = n.min(this.remaining as usize);
                buf.truncate(n);
                this.remaining -= n as u64;
                if let Some(s) = &this.sent {
                    s(n as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
            }
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[derive(Debug, Clone)]
enum Challenge {
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct AuthState {
    challenge: Challenge,
    /// Bearer tokens by the scope list they were issued for.
    tokens: HashMap<String, String>,
}

/// A connection pool and auth state for one registry.
pub struct Session {
    /// The registry as the user wrote it (`docker.io` for Docker Hub).
    pub(crate) registry: String,
    host: String,
    /// `https://host` or `http://host`; for an insecure registry decided by the first
    /// request (HTTPS if it answers TLS, as docker does, else plain HTTP).
    base: tokio::sync::OnceCell<String>,
    insecure: bool,
    /// Why HTTPS was not used for an insecure registry (told when HTTP fails too).
    https_error: std::sync::OnceLock<String>,
    client: HyperClient<HttpsConnector<HttpConnector>, Body>,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
}

pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `Scheme k="v",k2="v2"` (quoted or bare values).
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            match q.find('"') {
                Some(i) => (&q[..i], &q[i + 1..]),
                None => (q, ""),
            }
        } else {
            match v.find(',') {
                Some(i) => (&v[..i], &v[i..]),
                None => (v, ""),
            }
        };
        params.insert(k, val.to_string());
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_ascii_lowercase(), params)
}

fn tls_config(host: &str, opts: &ClientOptions) -> Result<rustls::ClientConfig, DistributionError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    let mut extra: Vec<PathBuf> = opts.ca_certs.clone();
    let per_host = opts.certs_dir.join(host);
    if let Ok(rd) = std::fs::read_dir(&per_host) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "crt") {
                extra.push(e.path());
            }
        }
    }
    for path in &extra {
        add_pem(&mut roots, host, path)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DistributionError::Tls {
            registry: host.to_string(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn add_pem(
    roots: &mut rustls::RootCertStore,
    host: &str,
    path: &Path,
) -> Result<(), DistributionError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let bad = |detail: String| DistributionError::CaCert {
        registry: host.to_string(),
        path: path.to_path_buf(),
        detail,
    };
    let mut n = 0;
    for c in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let c = c.map_err(|e| bad(e.to_string()))?;
        roots.add(c).map_err(|e| bad(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad("no PEM certificate in it".to_string()));
    }
    Ok(())
}

impl Session {
    pub(crate) fn new(
        registry: &str,
        opts: &ClientOptions,
        creds: Option<Credentials>,
    ) -> Result<Self, DistributionError> {
        let host = reference::api_host(registry).to_string();
        let insecure = opts.is_insecure(&host) || opts.is_insecure(registry);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(30)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&host, opts)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(16)
            .build(https);
        Ok(Self {
            registry: registry.to_string(),
            base: tokio::sync::OnceCell::new(),
            insecure,
            https_error: std::sync::OnceLock::new(),
            host,
            client,
            creds,
            auth: Mutex::new(AuthState {
                challenge: Challenge::Unknown,
                tokens: HashMap::new(),
            }),
        })
    }

    async fn base(&self) -> &str {
        self.base
            .get_or_init(|| async {
                let https = format!("https://{}", self.host);
                if !self.insecure {
                    return https;
                }
                let probe = Request::get(format!("{https}/v2/"))
                    .body(Empty::new().map_err(|e| match e {}).boxed());
                let answered = match probe {
                    Ok(req) => match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        self.client.request(req),
                    )
                    .await
                    {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            let _ = self.https_error.set(error_chain(&e));
                            false
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if answered {
                    https
                } else {
                    format!("http://{}", self.host)
                }
            })
            .await
    }

    /// Absolute URL of an API path (`/v2/…`) or of a `Location` the registry returned.
    pub(crate) fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            let base = self
                .base
                .get()
                .cloned()
                .unwrap_or_else(|| format!("https://{}", self.host));
            format!("{base}{path_or_url}")
        }
    }

    fn auth_header(&self, scopes: &[String]) -> Option<String> {
        let st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        match &st.challenge {
            Challenge::Basic => self.creds.as_ref().map(basic),
            Challenge::Bearer { .. } => st
                .tokens
                .get(&scopes.join(" "))
                .map(|t| format!("Bearer {t}")),
            _ => None,
        }
    }

    fn connect_err(&self, url: &str, e: &(dyn std::error::Error + 'static)) -> DistributionError {
        let mut detail = error_chain(e);
        if let Some(h) = self.https_error.get() {
            detail.push_str(&format!(" (over HTTPS: {h})"));
        }
        DistributionError::Connect {
            registry: self.registry.clone(),
            url: url.to_string(),
            detail,
        }
    }

    /// Sends a request, answering one auth challenge. `scopes` are the token scopes the
    /// request needs (`repository:name:pull`, …).
    pub(crate) async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        headers: &[(HeaderName, String)],
        body: &ReqBody,
        scopes: &[String],
    ) -> Result<Response<Incoming>, DistributionError> {
        self.base().await;
        let url = self.url(path_or_url);
        let mut answered = false;
        // Once the registry is known to use tokens, fetch the one for a new scope set
        // up front instead of learning it from another 401.
        let known = {
            let st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
            match &st.challenge {
                Challenge::Bearer { realm, service }
                    if !st.tokens.contains_key(&scopes.join(" ")) =>
                {
                    Some((realm.clone(), service.clone()))
                }
                _ => None,
            }
        };
        if let Some((realm, service)) = known {
            let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
            self.auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .tokens
                .insert(scopes.join(" "), token);
        }
        loop {
            let (b, len) = body.make().await?;
            let mut req = Request::builder().method(method.clone()).uri(&url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(l) = len {
                req = req.header(header::CONTENT_LENGTH, l);
            }
            let sent_auth = self.auth_header(scopes);
            if let Some(a) = &sent_auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let req = req.body(b).map_err(|e| DistributionError::Reference {
                value: url.clone(),
                reason: if e.is::<hyper::http::uri::InvalidUri>() {
                    "not a valid URL"
                } else {
                    "cannot form a request for it"
                },
            })?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| self.connect_err(&url, &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let detail = error_detail(resp).await;
            if answered {
                return Err(self.refused(&detail));
            }
            answered = true;
            let (scheme, params) = parse_challenge(&challenge);
            match scheme.as_str() {
                "bearer" => {
                    let realm = params.get("realm").cloned().unwrap_or_default();
                    if realm.is_empty() {
                        return Err(self.refused("Bearer challenge without a realm"));
                    }
                    let service = params.get("service").cloned();
                    let mut want: Vec<String> = scopes.to_vec();
                    if let Some(s) = params.get("scope") {
                        for s in s.split(' ') {
                            if !want.iter().any(|w| w == s) {
                                want.push(s.to_string());
                            }
                        }
                    }
                    let token = self.fetch_token(&realm, service.as_deref(), &want).await?;
                    let mut st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
                    st.challenge = Challenge::Bearer { realm, service };
                    st.tokens.insert(scopes.join(" "), token);
                }
                "basic" => {
                    if self.creds.is_none() {
                        return Err(DistributionError::NeedsLogin {
                            registry: self.registry.clone(),
                            detail: detail.clone(),
                        });
                    }
                    if sent_auth.is_some() {
                        return Err(self.refused(&detail));
                    }
                    self.auth
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .challenge = Challenge::Basic;
                }
                _ => return Err(self.refused(&format!("unsupported challenge {challenge:?}"))),
            }
        }
    }

    fn refused(&self, detail: &str) -> DistributionError {
        match &self.creds {
            Some(c) => DistributionError::Unauthorized {
                registry: self.registry.clone(),
                user: format!(" of user {:?}", c.username),
                detail: detail.to_string(),
            },
            None => DistributionError::NeedsLogin {
                registry: self.registry.clone(),
                detail: detail.to_string(),
            },
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, DistributionError> {
        let mut q = Vec::new();
        if let Some(s) = service {
            q.push(format!("service={}", percent_encode(s)));
        }
        for s in scopes {
            q.push(format!("scope={}", percent_encode(s)));
        }
        let url = if q.is_empty() {
            realm.to_string()
        } else if realm.contains('?') {
            format!("{realm}&{}", q.join("&"))
        } else {
            format!("{realm}?{}", q.join("&"))
        };
        let mut req = Request::builder().method(Method::GET).uri(&url);
        if let Some(c) = &self.creds {
            req = req.header(header::AUTHORIZATION, basic(c));
        }
        let req = req
            .body(Empty::new().map_err(|e| match e {}).boxed())
            .map_err(|_| DistributionError::Reference {
                value: url.clone(),
                reason: "the token realm is not a valid URL",
            })?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| self.connect_err(&url, &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let d = error_detail(resp).await;
            return Err(self.refused(&format!("token endpoint {realm}: {d}")));
        }
        let body =
            read_small(resp, 1 << 20)
                .await
                .map_err(|detail| DistributionError::Transfer {
                    registry: self.registry.clone(),
                    what: "the token request".to_string(),
                    detail,
                })?;
        if !status.is_success() {
            return Err(DistributionError::Status {
                registry: self.registry.clone(),
                method: "GET".to_string(),
                url,
                status: status.as_u16(),
                code: String::new(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| DistributionError::Status {
                registry: self.registry.clone(),
                method: "GET".to_string(),
                url: url.clone(),
                status: status.as_u16(),
                code: String::new(),
                message: format!("token response is not JSON: {e}"),
            })?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| DistributionError::Status {
                registry: self.registry.clone(),
                method: "GET".to_string(),
                url,
                status: status.as_u16(),
                code: String::new(),
                message: "token response has no token".to_string(),
            })
    }

    /// An error for an unexpected status, with the OCI error code and message if the
    /// body has them.
    pub(crate) async fn status_error(
        &self,
        method: &str,
        url: &str,
        resp: Response<Incoming>,
    ) -> DistributionError {
        let status = resp.status().as_u16();
        let body = read_small(resp, 64 << 10).await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = v["errors"][0]["code"].as_str().unwrap_or("").to_string();
        let message = v["errors"][0]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        DistributionError::Status {
            registry: self.registry.clone(),
            method: method.to_string(),
            url: self.url(url),
            status,
            code: if code.is_empty() {
                code
            } else {
                format!(" {code}")
            },
            message,
        }
    }

    /// Checks the registry answers and the credentials (if any) are accepted.
    pub(crate) async fn ping(&self) -> Result<(), DistributionError> {
        let resp = self
            .send(Method::GET, "/v2/", &[], &ReqBody::Empty, &[])
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self.status_error("GET", "/v2/", resp).await)
    }
}

fn basic(c: &Credentials) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

async fn error_detail(resp: Response<Incoming>) -> String {
    let status = resp.status();
    let body = read_small(resp, 64 << 10).await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match v["errors"][0]["message"].as_str() {
        Some(m) => format!("{status}: {m}"),
        None => status.to_string(),
    }
}

/// Reads a body of at most `max` bytes.
pub(crate) async fn read_small(resp: Response<Incoming>, max: usize) -> Result<Vec<u8>, String> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| error_chain(&e))?;
        if let Ok(d) = f.into_data() {
            if out.len() + d.len() > max {
                return Err(format!("response larger than {max} bytes"));
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out)
}

pub(crate) fn err_chain(e: &(dyn std::error::Error + 'static)) -> String {
    error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:5000/token",service="skiff-registry",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "http://127.0.0.1:5000/token");
        assert_eq!(p["service"], "skiff-registry");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn loopback_is_insecure() {
        let o = ClientOptions::default();
        assert!(o.is_insecure("127.0.0.1:5000"));
        assert!(o.is_insecure("localhost:1"));
        assert!(o.is_insecure("[::1]:5000"));
        assert!(!o.is_insecure("registry.example:5000"));
    }
}
