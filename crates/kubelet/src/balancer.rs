//! The agent's client-side load balancer over the API servers, as k3s' agent runs one on
//! `127.0.0.1:6444`: the agent is given every server's URL, and its API client, TLS
//! bootstrap and CA fetch all connect to this balancer on loopback (the servers'
//! certificates name 127.0.0.1), which forwards each connection as plain TCP (TLS stays
//! end to end) to the current server.
//!
//! Contract:
//! - each incoming connection is forwarded to the current server; when connecting to it
//!   fails or takes longer than the connect timeout, the next server (in the order given)
//!   is tried and becomes current, until every server was tried once; with none
//!   reachable the incoming connection is closed, and the client retries;
//! - a server that failed a connect is considered gone: the connections still forwarded
//!   to it are closed, so clients (kube-rs watchers, the kubelet's heartbeat) reconnect
//!   through the balancer to a live server instead of waiting on a dead peer's TCP
//!   timeout; connections to a killed server on this machine end on their own (RST);
//! - the current server stays current while it answers (no fail-back).
//!
//! Lifecycle: [`LoadBalancer::start`] binds and serves until the value is dropped, which
//! closes the listener and every forwarded connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    #[error("--server {url:?} is not a usable URL: {reason}; write it as https://HOST:PORT (several comma-separated, or --server repeated)")]
    BadServer { url: String, reason: String },
    #[error("no API server given; give --server https://HOST:PORT")]
    NoServers,
    #[error("the load balancer could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `host:port` of an API server URL (`https://host[:port]`, port 443 by default).
pub fn server_addr(url: &str) -> Result<String, BalancerError> {
    let bad = |reason: String| BalancerError::BadServer {
        url: url.to_string(),
        reason,
    };
    let uri: hyper::http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https".into()));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("it names no host".into()))?;
    if !matches!(uri.path(), "" | "/") {
        return Err(bad("a server URL has no path".into()));
    }
    // The http crate takes any text after the colon; a port must be a number.
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let after_host = authority
        .rsplit_once(host)
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let port = match after_host.strip_prefix(':') {
        None if after_host.is_empty() => 443,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad(format!("the port {p:?} is not a number from 0 to 65535")))?,
        None => return Err(bad("user info is not allowed".into())),
    };
    Ok(format!("{host}:{port}"))
}

struct State {
    /// `host:port` of each server, in the order given.
    servers: Vec<String>,
    current: AtomicUsize,
    /// Per server: cancelled (and replaced) when a connect to it fails, closing the
    /// connections still forwarded to it.
    gone: Vec<Mutex<CancellationToken>>,
    connect_timeout: Duration,
    stop: CancellationToken,
}

/// A running balancer; dropping it stops it.
pub struct LoadBalancer {
    local: SocketAddr,
    state: Arc<State>,
}

impl LoadBalancer {
    /// Listens on `listen` (e.g. `127.0.0.1:0`) and forwards to `servers` (URLs as
    /// `--server` takes them), trying each for at most `connect_timeout`.
    pub async fn start(
        listen: SocketAddr,
        servers: &[String],
        connect_timeout: Duration,
    ) -> Result<LoadBalancer, BalancerError> {
        if servers.is_empty() {
            return Err(BalancerError::NoServers);
        }
        let servers = servers
            .iter()
            .map(|s| server_addr(s))
            .collect::<Result<Vec<_>, _>>()?;
        let bind = |source| BalancerError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let state = Arc::new(State {
            gone: servers
                .iter()
                .map(|_| Mutex::new(CancellationToken::new()))
                .collect(),
            servers,
            current: AtomicUsize::new(0),
            connect_timeout,
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, state.clone()));
        Ok(LoadBalancer { local, state })
    }

    /// Where clients connect: use `https://{local_addr}` as the server URL.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The URL clients use: `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.local)
    }

    /// The server new connections go to (`host:port`).
    pub fn current(&self) -> String {
        let i = self.state.current.load(Ordering::Relaxed);
        self.state.servers[i].clone()
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.state.stop.cancel();
    }
}

impl std::fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("local", &self.local)
            .field("servers", &self.state.servers)
            .finish_non_exhaustive()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let accepted = tokio::select! {
            () = state.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((inbound, _)) => {
                tokio::spawn(forward(inbound, state.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "load balancer: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connects to the current server or, failing that, to the next ones in turn.
async fn dial(state: &State) -> Option<(usize, TcpStream)> {
    let n = state.servers.len();
    let start = state.current.load(Ordering::Relaxed);
    for k in 0..n {
        let i = (start + k) % n;
        let addr = &state.servers[i];
        let failure = match tokio::time::timeout(state.connect_timeout, TcpStream::connect(addr))
            .await
        {
            Ok(Ok(out)) => {
                if state
                    .current
                    .compare_exchange(start, i, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                    && i != start
                {
                    tracing::warn!(server = %addr, failed = %state.servers[start], "load balancer: switched to another API server");
                    eprintln!(
                        "skiff agent: API server {} is unreachable; using {addr}",
                        state.servers[start]
                    );
                }
                return Some((i, out));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {:?}", state.connect_timeout),
        };
        tracing::debug!(server = %addr, %failure, "load balancer: connect failed");
        if let Ok(mut gone) = state.gone[i].lock() {
            gone.cancel();
            *gone = CancellationToken::new();
        }
    }
    None
}

async fn forward(mut inbound: TcpStream, state: Arc<State>) {
    let Some((i, mut outbound)) = dial(&state).await else {
        tracing::warn!(servers = ?state.servers, "load balancer: no API server reachable");
        return;
    };
    let gone = match state.gone[i].lock() {
        Ok(g) => g.clone(),
        Err(_) => return,
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = gone.cancelled() => {}
        () = state.stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that greets each connection with its name, then echoes; the accepted
    /// connections are kept so closing the listener leaves them open (as a server
    /// whose host vanished: no RST).
    struct Named {
        url: String,
        task: tokio::task::JoinHandle<()>,
    }

    async fn named(name: &'static str) -> Named {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                s.write_all(name.as_bytes()).await.unwrap();
                let (mut r, mut w) = s.into_split();
                held.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }));
            }
        });
        Named { url, task }
    }

    impl Named {
        /// Stops listening: new connects are refused; open connections stay.
        fn close_listener(&self) {
            self.task.abort();
        }
    }

    async fn greeting(lb: &LoadBalancer) -> (String, TcpStream) {
        let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(n, 1, "the connection was closed without a greeting");
        (String::from_utf8_lossy(&buf).into_owned(), c)
    }

    async fn lb(servers: &[&Named]) -> LoadBalancer {
        let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
        LoadBalancer::start(
            "127.0.0.1:0".parse().unwrap(),
            &urls,
            Duration::from_secs(1),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn forwards_to_the_first_server_both_ways() {
        let (a, b) = (named("a").await, named("b").await);
        let lb = lb(&[&a, &b]).await;
        for _ in 0..3 {
            let (who, mut c) = greeting(&lb).await;
            assert_eq!(who, "a");
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
        }
        assert_eq!(lb.current(), a.url.trim_start_matches("https://"));
    }

    #[tokio::test]
    async fn a_refused_server_is_skipped_and_its_open_connections_closed() {
        let (a, b) = (named("a").await, named("b").await);
        let lb = lb(&[&a, &b]).await;
        let (who, mut old) = greeting(&lb).await;
        assert_eq!(who, "a");
        a.close_listener();
        let (who, _new) = greeting(&lb).await;
        assert_eq!(who, "b", "a new connection goes to the live server");
        // The connection to a is closed by the balancer (a itself keeps it open).
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), old.read(&mut buf))
            .await
            .expect("the old connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // b stays current, even once a is back (no fail-back while b answers).
        let a2 = TcpListener::bind(a.url.trim_start_matches("https://")).await;
        let (who, _) = greeting(&lb).await;
        assert_eq!(who, "b");
        assert_eq!(lb.current(), b.url.trim_start_matches("https://"));
        drop(a2);
    }

    #[tokio::test]
    async fn wraps_around_to_earlier_servers() {
        let (a, b) = (named("a").await, named("b").await);
        let lb = lb(&[&a, &b]).await;
        a.close_listener();
        assert_eq!(greeting(&lb).await.0, "b");
        let c = named("c").await;
        // A new server at a's address: b dies, the balancer wraps around to a's slot.
        let a_addr = a.url.trim_start_matches("https://").to_string();
        let back = TcpListener::bind(&a_addr).await.unwrap();
        b.close_listener();
        let accept = tokio::spawn(async move {
            let (mut s, _) = back.accept().await.unwrap();
            s.write_all(b"A").await.unwrap();
            s
        });
        assert_eq!(greeting(&lb).await.0, "A");
        drop(accept);
        drop(c);
    }

    #[tokio::test]
    async fn with_every_server_down_the_connection_is_closed() {
        let (a, b) = (named("a").await, named("b").await);
        let lb = lb(&[&a, &b]).await;
        a.close_listener();
        b.close_listener();
        let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn an_unanswered_connect_times_out_and_moves_on() {
        // A listener that never accepts, its accept queue filled: the kernel drops
        // further SYNs, so a connect to it hangs as to a vanished host.
        let full = tokio::net::TcpSocket::new_v4().unwrap();
        full.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let full = full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(full_addr))
                    .await
            {
                fillers.push(s);
            }
        }
        let b = named("b").await;
        let lb = LoadBalancer::start(
            "127.0.0.1:0".parse().unwrap(),
            &[format!("https://{full_addr}"), b.url.clone()],
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(greeting(&lb).await.0, "b");
        drop(full);
    }

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            server_addr("https://10.0.0.1:6443").unwrap(),
            "10.0.0.1:6443"
        );
        assert_eq!(server_addr("https://a.example").unwrap(), "a.example:443");
        assert_eq!(server_addr("https://[::1]:6443/").unwrap(), "[::1]:6443");
        for bad in [
            "http://a:1",
            "a:1",
            "https://",
            "https://a:1/x",
            "https://a:notaport",
        ] {
            let e = server_addr(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[tokio::test]
    async fn a_bad_url_in_the_list_is_named() {
        let e = LoadBalancer::start(
            "127.0.0.1:0".parse().unwrap(),
            &["https://127.0.0.1:1".into(), "https//oops".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("\"https//oops\""), "{e}");
    }
}
