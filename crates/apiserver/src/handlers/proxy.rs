//! pods/{name}/exec, attach, portforward and log: the pod and its Node are looked up, the
//! request is checked as kube-apiserver checks it (container defaulting, a host assigned)
//! and sent to the node's kubelet on its kubelet paths. A kubelet's 101 answer is passed
//! to the client and the two connections are then spliced byte for byte, so any streaming
//! protocol the kubelet speaks (WebSocket channels, SPDY, SPDY tunneled in WebSocket)
//! works through the API server; any other answer (log streams, errors) is relayed as is.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use skiff_api::kinds;

use super::objects;
use super::Target;
use crate::meta;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// The kubelet's port when a Node does not say (`status.daemonEndpoints`).
pub(crate) const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Query parameters passed to the kubelet's containerLogs path as they are.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// The pairs of a query string, in order (exec repeats `command`).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn flag(pairs: &[(String, String)], k: &str) -> bool {
    pairs
        .iter()
        .rev()
        .find(|(key, _)| key == k)
        .is_some_and(|(_, v)| matches!(v.as_str(), "true" | "1" | "True" | "TRUE" | ""))
}

fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request names, or the pod's only one; errors as kube-apiserver words them.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let spec = pod.get("spec");
    let containers = names(spec.and_then(|s| s.get("containers")));
    let inits = names(spec.and_then(|s| s.get("initContainers")));
    let ephemeral = names(spec.and_then(|s| s.get("ephemeralContainers")));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers
                .iter()
                .chain(&inits)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            many => {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                );
                if !inits.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        inits.join(" ")
                    ));
                }
                Err(ApiError::bad_request(msg))
            }
        },
    }
}

/// The address a Node's kubelet is reached at: its InternalIP, else ExternalIP, else
/// Hostname.
pub(crate) fn kubelet_host(node: &Value) -> Option<&str> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
                .and_then(|a| a.get("address").and_then(Value::as_str))
                .filter(|a| !a.is_empty())
        })
}

/// The kubelet's address from a Node: the InternalIP (else ExternalIP, else Hostname)
/// and `status.daemonEndpoints.kubeletEndpoint.Port`.
fn kubelet_endpoint(node: &Value, node_name: &str) -> ApiResult<(String, u16)> {
    let host = kubelet_host(node).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("node {node_name:?} has no InternalIP, ExternalIP or Hostname in status.addresses, so its kubelet cannot be reached"),
        )
    })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0 && *p <= u64::from(u16::MAX))
        .map_or(DEFAULT_KUBELET_PORT, |p| p as u16);
    Ok((host.to_string(), port))
}

/// Headers that describe one hop, not the request: never relayed. `connection` and
/// `upgrade` are relayed for upgrades, where they are the point.
fn hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "proxy-authorization"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "content-length"
    ) || (!upgrade && matches!(name.as_str(), "connection" | "upgrade"))
}

pub async fn serve(st: &Arc<AppState>, t: &Target, sub: &str, req: Request) -> ApiResult<Response> {
    let method = req.method().clone();
    let allowed = match sub {
        "log" => method == Method::GET,
        _ => method == Method::GET || method == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on pods/{sub}"
        )));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let pairs = query_pairs(req.uri().query());
    let pod = objects::get(&st.objects, t.kind, Some(&ns), &name).await?;

    let mut query: Vec<(String, String)> = Vec::new();
    let path = match sub {
        "exec" | "attach" => {
            let c = container(&pod, &name, get(&pairs, "container"))?;
            let tty = flag(&pairs, "tty");
            let streams = [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
            ];
            if sub == "exec" {
                for (k, v) in &pairs {
                    if k == "command" {
                        query.push(("command".into(), v.clone()));
                    }
                }
                if query.is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container",
                    ));
                }
            }
            let mut any = false;
            for (theirs, kubelets) in streams {
                if flag(&pairs, theirs) && !(tty && theirs == "stderr") {
                    query.push((kubelets.into(), "1".into()));
                    any = true;
                }
            }
            if !any {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            if tty {
                query.push(("tty".into(), "1".into()));
            }
            format!("/{sub}/{}/{}/{}", enc(&ns), enc(&name), enc(&c))
        }
        "portforward" => {
            for (k, v) in &pairs {
                if k == "ports" {
                    query.push(("port".into(), v.clone()));
                }
            }
            format!("/portForward/{}/{}", enc(&ns), enc(&name))
        }
        _ => {
            let c = container(&pod, &name, get(&pairs, "container"))?;
            for p in LOG_PARAMS {
                if let Some(v) = get(&pairs, p) {
                    query.push((p.to_string(), v.to_string()));
                }
            }
            format!("/containerLogs/{}/{}/{}", enc(&ns), enc(&name), enc(&c))
        }
    };
    let node_name = meta::str_at(&pod, "/spec/nodeName")
        .unwrap_or_default()
        .to_string();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let qs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    let uri = if qs.is_empty() {
        path
    } else {
        format!("{path}?{}", qs.join("&"))
    };
    relay(st, &node_name, uri, req, sub == "log").await
}

/// `nodes/{name}/proxy/{path}`: any request to the node's kubelet (its stats, metrics,
/// logs, pods …), relayed as it is, body and upgrades included.
pub async fn serve_node(st: &Arc<AppState>, t: &Target, req: Request) -> ApiResult<Response> {
    let name = t.name.clone().unwrap_or_default();
    let path = req.uri().path();
    let marker = format!("/nodes/{name}/proxy");
    let rest = path
        .find(&marker)
        .map(|i| &path[i + marker.len()..])
        .unwrap_or_default();
    let rest = if rest.is_empty() { "/" } else { rest };
    let uri = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    relay(st, &name, uri, req, false).await
}

/// Sends the request to `uri` on the kubelet of `node_name` and relays the answer; a
/// 101 answer splices the two connections.
async fn relay(
    st: &Arc<AppState>,
    node_name: &str,
    uri: String,
    mut req: Request,
    log: bool,
) -> ApiResult<Response> {
    let method = req.method().clone();
    let node_kind = kinds::by_resource("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes kind is not registered"))?;
    let node = objects::get(&st.objects, node_kind, None, node_name).await?;
    let (host, port) = kubelet_endpoint(&node, node_name)?;
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let mut out = hyper::Request::builder().method(method).uri(&uri);
    for (k, v) in req.headers() {
        if !hop_by_hop(k, upgrade) {
            out = out.header(k, v);
        }
    }
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    out = out.header(header::HOST, host_header);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let out = out
        .body(std::mem::take(req.body_mut()))
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;

    let resp = st.kubelet.send(&host, port, out).await.map_err(|e| {
        ApiError::internal(format!(
            "error dialing backend: kubelet of node {node_name:?}: {}",
            skiff_serve::error_chain(&e)
        ))
    })?;

    let status = resp.status();
    let mut builder = Response::builder().status(status);
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in resp.headers() {
        if !hop_by_hop(k, switching) {
            builder = builder.header(k, v);
        }
    }
    if switching {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::internal(
                "the kubelet switched protocols on a request that did not ask to",
            ));
        };
        let mut resp = resp;
        let kubelet_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, kubelet) = match tokio::join!(client_upgrade, kubelet_upgrade) {
                (Ok(c), Ok(k)) => (c, k),
                (c, k) => {
                    tracing::debug!(
                        client_ok = c.is_ok(),
                        kubelet_ok = k.is_ok(),
                        "upgrade to the kubelet failed"
                    );
                    return;
                }
            };
            let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                tracing::debug!(error = %e, "streaming session with the kubelet ended");
            }
        });
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(format!("relaying the kubelet's answer: {e}")));
    }
    if status.is_success() && log && !resp.headers().contains_key(header::CONTENT_TYPE) {
        builder = builder.header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    builder
        .body(Body::new(resp.into_body()))
        .map_err(|e| ApiError::internal(format!("relaying the kubelet's answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_defaulting_and_validation() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&one, "p", None).unwrap(), "a");
        assert_eq!(container(&one, "p", Some("")).unwrap(), "a");
        let e = container(&one, "p", Some("zz")).unwrap_err();
        assert_eq!(e.message, "container zz is not valid for pod p");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            container(&two, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container(&two, "p", Some("i")).unwrap(), "i");
    }

    #[test]
    fn kubelet_endpoint_prefers_internal_ip() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(
            kubelet_endpoint(&n, "n").unwrap(),
            ("10.0.0.2".to_string(), 12345)
        );
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}]}});
        assert_eq!(
            kubelet_endpoint(&bare, "n").unwrap(),
            ("h".to_string(), 10250)
        );
        assert_eq!(
            kubelet_endpoint(&json!({}), "n").unwrap_err().code,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(enc("sh -c 'echo a;b'"), "sh%20-c%20%27echo%20a%3Bb%27");
        let q = query_pairs(Some("command=a&command=b%20c&stdin=true"));
        assert_eq!(q.len(), 3);
        assert!(flag(&q, "stdin"));
    }
}
