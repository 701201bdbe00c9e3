//! The serving loop: accept, TLS handshake (bounded), protocol detection and request head
//! (bounded), HTTP/1.1 with upgrades or HTTP/2, and graceful drain.
//!
//! Lifecycle: [`Serve::run`] accepts until its shutdown future completes. Then it closes
//! the listener, cancels [`Serve::shutdown_signal`] (long-running handlers — watches,
//! log follows, exec sessions — select on it and end their responses), tells every open
//! connection to finish the requests in flight and close (HTTP/1.1: after the current
//! response; HTTP/2: GOAWAY), and waits up to [`Limits::drain_timeout`] before dropping
//! what is left. Connections still in the TLS handshake or before their first request
//! are closed at once.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Bounds on what a client may hold open.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A TLS client must finish its handshake within this (a client that connects and
    /// says nothing is dropped).
    pub handshake_timeout: Duration,
    /// A client must send a complete request head within this, on a new connection and
    /// between requests on a kept-alive HTTP/1.1 connection.
    pub header_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// After shutdown starts, how long open connections get to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// What the per-connection hook learns about a connection.
#[derive(Debug)]
pub struct ConnectionInfo<'a> {
    pub remote: SocketAddr,
    /// The client's certificate chain, leaf first, when it presented one over TLS (the
    /// acceptor's verifier has checked it).
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
    pub tls: bool,
}

type Hook = Arc<dyn Fn(&ConnectionInfo<'_>) -> hyper::http::Extensions + Send + Sync>;

/// A listener and how to serve it; see the module docs.
pub struct Serve {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    hook: Hook,
    signal: CancellationToken,
    name: &'static str,
}

impl Serve {
    pub fn new(listener: TcpListener) -> Serve {
        Serve {
            listener,
            tls: None,
            limits: Limits::default(),
            hook: Arc::new(|_| hyper::http::Extensions::new()),
            signal: CancellationToken::new(),
            name: "server",
        }
    }

    /// Serve HTTPS through this acceptor (plain HTTP without one).
    pub fn tls(mut self, acceptor: Option<tokio_rustls::TlsAcceptor>) -> Serve {
        self.tls = acceptor;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Serve {
        self.limits = limits;
        self
    }

    /// Names the server in log lines.
    pub fn name(mut self, name: &'static str) -> Serve {
        self.name = name;
        self
    }

    /// Runs once per connection (after the TLS handshake); what it returns is added to
    /// every request's extensions (the API server puts the certificate's user there).
    pub fn on_connection(
        mut self,
        hook: impl Fn(&ConnectionInfo<'_>) -> hyper::http::Extensions + Send + Sync + 'static,
    ) -> Serve {
        self.hook = Arc::new(hook);
        self
    }

    /// Cancelled when shutdown starts. Pass a token the handlers already hold (the API
    /// server keeps it in its state) so their long-running responses end then.
    pub fn shutdown_signal(mut self, token: CancellationToken) -> Serve {
        self.signal = token;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `service` until `shutdown` completes, then drains (module docs).
    pub async fn run<S, B>(self, service: S, shutdown: impl Future<Output = ()>)
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let Serve {
            listener,
            tls,
            limits,
            hook,
            signal,
            name,
        } = self;
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // Pings find peers that went away without closing; hyper has no header timeout
        // for HTTP/2, so the first request's is bounded in `http` below.
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let conn = Arc::new(Conn {
            tls,
            limits: limits.clone(),
            hook,
            signal: signal.clone(),
            http1,
            http2,
            name,
        });
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                // Shutdown may also start from the token (a handler, or a test).
                _ = signal.cancelled() => break,
                a = listener.accept() => a,
            };
            while tasks.try_join_next().is_some() {}
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    server = name,
                    %remote,
                    limit = limits.max_connections,
                    "connection limit reached; closing the new connection"
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let conn = conn.clone();
            let service = service.clone();
            tasks.spawn(conn.serve(tcp, remote, service, permit));
        }
        drop(listener);
        signal.cancel();
        let open = tasks.len();
        if open == 0 {
            return;
        }
        tracing::info!(
            server = name,
            connections = open,
            "shutting down: draining connections"
        );
        let drained = tokio::time::timeout(limits.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                server = name,
                connections = tasks.len(),
                timeout = ?limits.drain_timeout,
                "connections still open after the drain timeout; closing them"
            );
            tasks.shutdown().await;
        }
    }
}

/// What every connection task shares.
struct Conn {
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    hook: Hook,
    signal: CancellationToken,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    name: &'static str,
}

/// A service the loop can serve: hyper's bounds on a cloneable, shareable service,
/// written once.
pub trait HttpService<B>:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<Box<dyn StdError + Send + Sync>>,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<B>,
            Future: Send + 'static,
            Error: Into<Box<dyn StdError + Send + Sync>>,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body the loop can stream.
pub trait ResponseBody:
    Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

impl Conn {
    async fn serve<S, B>(
        self: Arc<Self>,
        tcp: TcpStream,
        remote: SocketAddr,
        service: S,
        _permit: OwnedSemaphorePermit,
    ) where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let name = self.name;
        match &self.tls {
            None => {
                let info = ConnectionInfo {
                    remote,
                    peer_certificates: None,
                    tls: false,
                };
                let ext = (self.hook)(&info);
                self.http(tcp, remote, ext, service).await
            }
            Some(acceptor) => {
                let handshake = tokio::select! {
                    _ = self.signal.cancelled() => return,
                    r = tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(tcp)) => r,
                };
                let stream = match handshake {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(server = name, %remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(server = name, %remote, "TLS handshake timed out");
                        return;
                    }
                };
                let ext = {
                    let info = ConnectionInfo {
                        remote,
                        peer_certificates: stream.get_ref().1.peer_certificates(),
                        tls: true,
                    };
                    (self.hook)(&info)
                };
                self.http(stream, remote, ext, service).await
            }
        }
    }

    async fn http<I, S, B>(
        &self,
        mut io: I,
        remote: SocketAddr,
        ext: hyper::http::Extensions,
        service: S,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: HttpService<B>,
        B: ResponseBody,
    {
        let name = self.name;
        // hyper's own header timeout starts only once it owns the connection, after the
        // HTTP/2 preface check; bound that first read here.
        let detected = tokio::select! {
            _ = self.signal.cancelled() => return,
            r = tokio::time::timeout(self.limits.header_timeout, detect(&mut io)) => r,
        };
        let (h2, prefix) = match detected {
            Ok(Ok(Some(d))) => d,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(server = name, %remote, error = %e, "reading the request failed");
                return;
            }
            Err(_) => {
                tracing::debug!(server = name, %remote, "no request within the header timeout");
                return;
            }
        };
        let io = TokioIo::new(Prefixed { prefix, inner: io });
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = asked.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
            req.extensions_mut().extend(ext.clone());
            service.call(req)
        });
        let result = if h2 {
            let conn = self.http2.serve_connection(io, svc);
            tokio::pin!(conn);
            // A client that sends the preface but no request head within the header
            // timeout is sent away, as an HTTP/1 client that stalls is.
            let header_timeout = self.limits.header_timeout;
            let no_request = async {
                tokio::time::sleep(header_timeout).await;
                if asked.load(std::sync::atomic::Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                r = conn.as_mut() => r,
                _ = self.signal.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                () = no_request => {
                    tracing::debug!(server = name, %remote, "no HTTP/2 request within the header timeout");
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(header_timeout, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            }
        } else {
            let conn = self.http1.serve_connection(io, svc).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = self.signal.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(server = name, %remote, error = %crate::Chain(&e), "connection ended with an error");
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes can or cannot be the HTTP/2 preface: `(is_h2, bytes read)`, or
/// None when the client closed first.
async fn detect<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Option<(bool, Bytes)>> {
    let mut buf = vec![0u8; H2_PREFACE.len()];
    let mut n = 0;
    while n < H2_PREFACE.len() {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            return Ok(None);
        }
        n += got;
        if buf[..n] != H2_PREFACE[..n] {
            buf.truncate(n);
            return Ok(Some((false, Bytes::from(buf))));
        }
    }
    Ok(Some((true, Bytes::from(buf))))
}

/// A stream whose first bytes were already read (for protocol detection).
struct Prefixed<I> {
    prefix: Bytes,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
