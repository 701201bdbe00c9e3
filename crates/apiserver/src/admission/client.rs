//! The HTTPS side of admission: where a webhook is (`clientConfig.url`, or a Service
//! resolved to a ready endpoint), TLS trusting only its `caBundle`, and one bounded
//! request per call.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use skiff_api::kinds;
use tokio::net::TcpStream;

use super::webhook::{verify, Answer};
use crate::handlers::objects;
use crate::Objects;

/// Largest webhook answer read.
const MAX_RESPONSE: usize = 3 * 1024 * 1024;

/// Where a webhook is called: the address to connect to, the name its certificate must
/// carry, and the URL shown in errors.
#[derive(Debug, PartialEq)]
pub(super) struct Target {
    pub(super) connect: String,
    pub(super) server_name: String,
    pub(super) host_header: String,
    pub(super) path: String,
    pub(super) url: String,
}

/// Splits `https://host[:port][/path]`.
pub(super) fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("webhook URL {url:?} must use the https scheme"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("webhook URL {url:?} has a bad host"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port: u16 = if port.is_empty() {
        443
    } else {
        port.parse()
            .map_err(|_| format!("webhook URL {url:?} has a bad port"))?
    };
    if host.is_empty() {
        return Err(format!("webhook URL {url:?} has no host"));
    }
    let connect = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(Target {
        host_header: authority.to_string(),
        connect,
        server_name: host,
        path,
        url: url.to_string(),
    })
}

/// A Service reference resolved to a ready endpoint (the Service's ClusterIP when it
/// has none: this host may not route to it). The certificate must name
/// `<service>.<namespace>.svc`, as kube checks.
async fn resolve_service(st: &Objects, svc: &Value) -> Result<Target, String> {
    let ns = svc
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = svc.get("name").and_then(Value::as_str).unwrap_or_default();
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443);
    let path = svc.get("path").and_then(Value::as_str).unwrap_or("/");
    let server_name = format!("{name}.{ns}.svc");
    let url = format!("https://{server_name}:{port}{path}");
    let svc_kind = kinds::by_resource("", "v1", "services").ok_or("services are not served")?;
    let service = objects::get(st, svc_kind, Some(ns), name)
        .await
        .map_err(|e| format!("service \"{ns}/{name}\": {}", e.message))?;
    let svc_port = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("port").and_then(Value::as_u64) == Some(port))
        })
        .cloned()
        .ok_or_else(|| format!("service \"{ns}/{name}\" has no port {port}"))?;
    let port_name = svc_port.get("name").and_then(Value::as_str).unwrap_or("");
    let mut addr = None;
    if let Some(ep_kind) = kinds::by_resource("", "v1", "endpoints") {
        if let Ok(ep) = objects::get(st, ep_kind, Some(ns), name).await {
            for subset in ep
                .get("subsets")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let ip = subset.pointer("/addresses/0/ip").and_then(Value::as_str);
                let p = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter().find(|p| {
                            p.get("name").and_then(Value::as_str).unwrap_or("") == port_name
                        })
                    })
                    .and_then(|p| p.get("port").and_then(Value::as_u64));
                if let (Some(ip), Some(p)) = (ip, p) {
                    addr = Some((ip.to_string(), p));
                    break;
                }
            }
        }
    }
    let (ip, p) = match addr {
        Some(a) => a,
        None => (
            service
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty() && *ip != "None")
                .ok_or_else(|| format!("service \"{ns}/{name}\" has no ready endpoints"))?
                .to_string(),
            port,
        ),
    };
    let connect = if ip.contains(':') {
        format!("[{ip}]:{p}")
    } else {
        format!("{ip}:{p}")
    };
    Ok(Target {
        connect,
        host_header: format!("{server_name}:{port}"),
        server_name,
        path: path.to_string(),
        url,
    })
}

fn tls_config(ca_bundle: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = match ca_bundle {
        Some(b) if !b.is_empty() => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("caBundle is not base64: {e}"))?,
        _ => return Err("no caBundle to verify the webhook's certificate with".into()),
    };
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Sends the review to the webhook and checks its answer, all within its timeout.
pub(super) async fn call_webhook(
    st: &Objects,
    hook: &Value,
    review: &Value,
    mutating: bool,
) -> Result<Answer, String> {
    let timeout = hook
        .get("timeoutSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 30);
    let cc = hook.get("clientConfig").cloned().unwrap_or_default();
    let target = match (cc.get("url").and_then(Value::as_str), cc.get("service")) {
        (Some(url), _) => parse_url(url),
        (None, Some(svc)) => resolve_service(st, svc).await,
        (None, None) => Err("clientConfig has neither url nor service".into()),
    }
    .map_err(|e| format!("failed to call webhook: {e}"))?;
    let shown = {
        let sep = if target.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}timeout={timeout}s", target.url)
    };
    let uid = review
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let exchange = async {
        let cfg = tls_config(cc.get("caBundle").and_then(Value::as_str))?;
        let name = ServerName::try_from(target.server_name.clone())
            .map_err(|e| format!("{:?} is not a valid server name: {e}", target.server_name))?;
        let tcp = TcpStream::connect(&target.connect)
            .await
            .map_err(|e| format!("dial tcp {}: {e}", target.connect))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let _conn = AbortOnDrop(tokio::spawn(conn));
        let sep = if target.path.contains('?') { '&' } else { '?' };
        let req = hyper::Request::post(format!("{}{sep}timeout={timeout}s", target.path))
            .header("host", &target.host_header)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                review.to_string(),
            )))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "the server responded with the status code {} but did not return more information",
                status.as_u16()
            ));
        }
        Ok::<_, String>(body)
    };
    let body = match tokio::time::timeout(Duration::from_secs(timeout), exchange).await {
        Err(_) => {
            return Err(format!(
                "failed to call webhook: Post {shown:?}: context deadline exceeded"
            ))
        }
        Ok(Err(e)) => return Err(format!("failed to call webhook: Post {shown:?}: {e}")),
        Ok(Ok(b)) => b,
    };
    verify(&uid, &body, mutating)
}

/// Ends the connection task when the call ends, also on a timeout.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
