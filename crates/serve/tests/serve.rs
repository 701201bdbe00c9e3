//! The serving loop against raw TCP clients: timeouts drop silent clients, the connection
//! limit closes the extra connection, and shutdown drains in-flight requests and ends
//! long-running responses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use skiff_serve::metrics::LongRunning;
use skiff_serve::{CancellationToken, Limits, Serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

/// Far longer than any step takes; only a broken server reaches it.
const DEADLINE: Duration = Duration::from_secs(30);

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts shutdown and waits for `run` to return.
    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(DEADLINE, self.done)
            .await
            .expect("the server did not finish draining")
            .unwrap();
    }
}

async fn start<F, Fut>(
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    signal: CancellationToken,
    handler: F,
) -> Running
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = hyper::service::service_fn(move |req| {
        let h = handler.clone();
        async move { Ok::<_, Infallible>(h(req).await) }
    });
    let server = Serve::new(listener)
        .tls(tls)
        .limits(limits)
        .shutdown_signal(signal)
        .name("test");
    let done = tokio::spawn(server.run(svc, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
    }
}

fn text(s: &'static str) -> Response<BoxBody> {
    Response::new(Full::new(Bytes::from_static(s.as_bytes())).boxed())
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(DEADLINE, c.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the server kept the connection open");
    out
}

/// Sends one keep-alive request and reads its (Content-Length) response.
async fn request(c: &mut TcpStream, path: &str) -> String {
    c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, c.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed before a full response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let s = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = s.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return s;
            }
        }
    }
}

#[tokio::test]
async fn tls_client_that_never_sends_a_client_hello_is_dropped() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let srv = start(
        Some(tls_acceptor()),
        limits,
        CancellationToken::new(),
        |_| async { text("ok") },
    )
    .await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    // Nothing sent: the server must give up on the handshake and close.
    assert_eq!(read_to_close(&mut c).await, b"");
    srv.shutdown().await;
}

#[tokio::test]
async fn clients_that_do_not_finish_a_request_head_are_dropped() {
    let limits = Limits {
        header_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let srv = start(None, limits, CancellationToken::new(), |_| async {
        text("ok")
    })
    .await;
    // Connects and says nothing.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    // Starts a request head and stalls.
    let mut partial = TcpStream::connect(srv.addr).await.unwrap();
    partial
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Starts what could be an HTTP/2 preface and stalls.
    let mut preface = TcpStream::connect(srv.addr).await.unwrap();
    preface.write_all(b"PRI * HT").await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, b"");
    let got = read_to_close(&mut partial).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("200"),
        "a partial head was answered: {got:?}"
    );
    assert_eq!(read_to_close(&mut preface).await, b"");
    // Sends the whole HTTP/2 preface and its SETTINGS, then no request: sent away too
    // (a GOAWAY at most, never an answer).
    let mut idle_h2 = TcpStream::connect(srv.addr).await.unwrap();
    idle_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let got = read_to_close(&mut idle_h2).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("ok"),
        "an idle HTTP/2 connection got an answer: {got:?}"
    );
    // A complete request is still served.
    let mut good = TcpStream::connect(srv.addr).await.unwrap();
    assert!(request(&mut good, "/").await.starts_with("HTTP/1.1 200"));
    srv.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let srv = start(None, limits, CancellationToken::new(), |_| async {
        text("ok")
    })
    .await;
    let mut first = TcpStream::connect(srv.addr).await.unwrap();
    // Served, and kept alive: it holds the only slot.
    assert!(request(&mut first, "/").await.starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(srv.addr).await.unwrap();
    let _ = second.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut got = Vec::new();
    let r = tokio::time::timeout(DEADLINE, second.read_to_end(&mut got))
        .await
        .expect("the connection over the limit was kept open");
    // Closed without an answer (EOF, or a reset if our request was still unread).
    assert!(
        r.is_err() || got.is_empty(),
        "answered over the limit: {got:?}"
    );
    // Once the first goes away its slot is free again.
    drop(first);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut c = TcpStream::connect(srv.addr).await.unwrap();
        let _ = c
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, c.read_to_end(&mut got)).await;
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn drain_lets_an_in_flight_request_finish() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let srv = start(
        None,
        Limits {
            drain_timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        CancellationToken::new(),
        move |_| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.notify_one();
                r.notified().await;
                text("finished")
            }
        },
    )
    .await;
    let addr = srv.addr;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    started.notified().await;
    let (stop, done) = (srv.stop, srv.done);
    let _ = stop.map(|s| s.send(()));
    // Shutdown has started: the listener closes, so new connections are refused.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!done.is_finished(), "returned with a request in flight");
    release.notify_one();
    let got = String::from_utf8_lossy(&read_to_close(&mut c).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("finished"), "{got}");
    tokio::time::timeout(DEADLINE, done)
        .await
        .expect("the server did not finish after its last request")
        .unwrap();
}

/// A body that sends one line and then never ends by itself.
struct Forever(bool);

impl Body for Forever {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.0 {
            self.0 = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"event\n")))));
        }
        Poll::Pending
    }
}

#[tokio::test]
async fn shutdown_ends_long_running_responses_cleanly() {
    let signal = CancellationToken::new();
    let (open_tx, mut open_rx) = mpsc::unbounded_channel::<()>();
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<()>();
    struct Guard(mpsc::UnboundedSender<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let sig = signal.clone();
    let srv = start(
        None,
        Limits {
            drain_timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        signal.clone(),
        move |_| {
            let (sig, open_tx, closed_tx) = (sig.clone(), open_tx.clone(), closed_tx.clone());
            async move {
                let _ = open_tx.send(());
                Response::new(LongRunning::new(Forever(false), &sig, Guard(closed_tx)).boxed())
            }
        },
    )
    .await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(b"GET /watch HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    open_rx.recv().await.unwrap();
    srv.shutdown().await;
    assert!(signal.is_cancelled());
    closed_rx.recv().await.unwrap();
    let got = String::from_utf8_lossy(&read_to_close(&mut c).await).into_owned();
    // Chunked: the line, then the terminating zero-length chunk.
    assert!(got.contains("transfer-encoding: chunked"), "{got}");
    assert!(got.contains("event\n"), "{got}");
    assert!(
        got.ends_with("0\r\n\r\n"),
        "the stream was cut, not ended: {got:?}"
    );
}

#[tokio::test]
async fn requests_still_running_at_the_drain_timeout_are_dropped() {
    let started = Arc::new(Notify::new());
    let s = started.clone();
    let srv = start(
        None,
        Limits {
            drain_timeout: Duration::from_millis(100),
            ..Limits::default()
        },
        CancellationToken::new(),
        move |_| {
            let s = s.clone();
            async move {
                s.notify_one();
                std::future::pending::<()>().await;
                text("never")
            }
        },
    )
    .await;
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    started.notified().await;
    srv.shutdown().await;
    assert_eq!(read_to_close(&mut c).await, b"");
}
