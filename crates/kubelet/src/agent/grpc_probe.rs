//! The gRPC probe: the standard health service's `Check`
//! (`grpc.health.v1.Health/Check`) over plaintext HTTP/2, as the kubelet calls it. The
//! container is healthy when it answers `SERVING`.
//!
//! The protobuf messages are tiny and fixed, so they are encoded by hand:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }`, each in gRPC's length-prefixed
//! framing (a compression flag byte, then a big-endian u32 length).

use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

const PATH: &str = "/grpc.health.v1.Health/Check";

/// The request message for `service`, framed.
pub fn request_frame(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

/// The serving status in a framed response (0 when the field is absent: UNKNOWN).
pub fn response_status(mut body: &[u8]) -> Result<u64, String> {
    if body.len() < 5 {
        return Err("the health check's answer has no gRPC message".into());
    }
    if body[0] != 0 {
        return Err("the health check's answer is compressed".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body = &body[5..];
    if body.len() < len {
        return Err("the health check's answer is cut short".into());
    }
    let mut msg = &body[..len];
    let mut status = 0;
    while !msg.is_empty() {
        let (key, rest) = varint(msg)?;
        msg = rest;
        match key & 7 {
            0 => {
                let (v, rest) = varint(msg)?;
                msg = rest;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (l, rest) = varint(msg)?;
                let l = usize::try_from(l).map_err(|_| "a field too long")?;
                msg = rest.get(l..).ok_or("a field past the message's end")?;
            }
            1 => msg = msg.get(8..).ok_or("a field past the message's end")?,
            5 => msg = msg.get(4..).ok_or("a field past the message's end")?,
            _ => return Err("the health check's answer is not a HealthCheckResponse".into()),
        }
    }
    Ok(status)
}

fn varint(b: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, &b[i + 1..]));
        }
    }
    Err("a malformed varint in the health check's answer".into())
}

fn status_name(s: u64) -> &'static str {
    match s {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// Calls `Check` for `service` over `stream` (connected to the container's port); `Ok`
/// when the answer is SERVING, else why not, in the kubelet's words.
pub async fn check(
    stream: tokio::net::TcpStream,
    port: u16,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let timed_out = || format!("timeout: health rpc did not complete within {timeout:?}");
    tokio::time::timeout(timeout, call(stream, port, service))
        .await
        .map_err(|_| timed_out())?
}

async fn call(stream: tokio::net::TcpStream, port: u16, service: &str) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("failed to connect service \":{port}\": {e}");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| failed(&e))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(format!("http://127.0.0.1:{port}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(Full::new(Bytes::from(request_frame(service))))
        .map_err(|e| failed(&e))?;
    let result = async {
        let resp = send.send_request(req).await.map_err(|e| failed(&e))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(format!(
                "rpc error: the health service answered HTTP {}",
                resp.status()
            ));
        }
        let head_status = grpc_status(resp.headers());
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("rpc error: {e}"))?;
        let trailers = collected.trailers().cloned();
        let code = trailers
            .as_ref()
            .and_then(grpc_status)
            .or(head_status)
            .unwrap_or_default();
        if code.0 != 0 {
            return Err(format!(
                "rpc error: code = {} desc = {}",
                code_name(code.0),
                code.1
            ));
        }
        let body = collected.to_bytes();
        let status = response_status(body.chunk())?;
        if status == 1 {
            Ok(())
        } else {
            Err(format!(
                "service unhealthy (responded with \"{}\")",
                status_name(status)
            ))
        }
    }
    .await;
    driver.abort();
    result
}

fn grpc_status(h: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let msg = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some((code, msg))
}

fn code_name(c: u32) -> &'static str {
    match c {
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        7 => "PermissionDenied",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn messages_encode_and_decode() {
        assert_eq!(request_frame(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            request_frame("db"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
        let long = "x".repeat(200);
        let f = request_frame(&long);
        assert_eq!(&f[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Ok(0));
        assert!(response_status(&[0, 0, 0]).is_err());
        assert!(response_status(&[0, 0, 0, 0, 9, 0x08]).is_err());
    }

    /// A gRPC health server on hyper's HTTP/2: "" and "db" serve, "down" does not,
    /// anything else is NotFound (a trailers-only answer, as grpc-go gives).
    async fn health_server() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            assert_eq!(req.uri().path(), PATH);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let service =
                                String::from_utf8_lossy(body[5..].get(2..).unwrap_or_default())
                                    .into_owned();
                            let mut trailers = hyper::HeaderMap::new();
                            let frames: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> =
                                match service.as_str() {
                                    "" | "db" | "down" => {
                                        let st = if service == "down" { 2 } else { 1 };
                                        trailers.insert("grpc-status", "0".parse().unwrap());
                                        vec![
                                            Ok(hyper::body::Frame::data(Bytes::from(vec![
                                                0, 0, 0, 0, 2, 0x08, st,
                                            ]))),
                                            Ok(hyper::body::Frame::trailers(trailers)),
                                        ]
                                    }
                                    _ => {
                                        trailers.insert("grpc-status", "5".parse().unwrap());
                                        trailers.insert(
                                            "grpc-message",
                                            "unknown%20service".parse().unwrap(),
                                        );
                                        vec![Ok(hyper::body::Frame::trailers(trailers))]
                                    }
                                };
                            let body =
                                http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(body)
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn checks_a_real_http2_health_service() {
        let port = health_server().await;
        let t = Duration::from_secs(5);
        let conn = || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap()
        };
        assert_eq!(check(conn().await, port, "", t).await, Ok(()));
        assert_eq!(check(conn().await, port, "db", t).await, Ok(()));
        assert_eq!(
            check(conn().await, port, "down", t).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            check(conn().await, port, "nope", t).await,
            Err("rpc error: code = NotFound desc = unknown service".into())
        );
        // Something that is not an HTTP/2 server.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p2 = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let s = tokio::net::TcpStream::connect(("127.0.0.1", p2))
            .await
            .unwrap();
        let e = check(s, p2, "", t).await.unwrap_err();
        assert!(e.starts_with("failed to connect service \":"), "{e}");
    }
}
