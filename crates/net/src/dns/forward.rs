//! Forwarding of names outside the cluster to the node's own resolvers.
//!
//! Contract: [`Forwarder::forward`] asks each upstream in turn (UDP, then TCP when the UDP
//! answer was truncated) with a fresh query id and the question alone, and returns the
//! first answer, whatever its rcode (an upstream's NXDOMAIN is an answer). Each attempt
//! is bounded by the timeout; when every upstream fails the caller answers SERVFAIL.
//! The caller decides what may be forwarded: cluster names never reach this module.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::DnsError;

/// The largest UDP answer we accept from an upstream (and advertise with EDNS).
const UDP_PAYLOAD: u16 = 1232;

/// Why one upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("asking upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout {
        upstream: SocketAddr,
        timeout: Duration,
    },
    #[error("upstream {upstream} sent a message that does not parse or answer our query")]
    BadAnswer { upstream: SocketAddr },
    #[error("encoding the query for {upstream}: {source}")]
    Encode {
        upstream: SocketAddr,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("no upstream resolvers are configured")]
    NoUpstreams,
}

/// Sends questions to the node's resolvers.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    /// A forwarder to `upstreams` (tried in order), each attempt bounded by `timeout`.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    /// Whether there is anyone to forward to.
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The first upstream's answer to `query` (recursion desired), or the last error.
    pub async fn forward(&self, query: &Query) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstreams;
        for &upstream in &self.upstreams {
            match self.ask(upstream, query).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "upstream failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn ask(&self, upstream: SocketAddr, query: &Query) -> Result<Message, ForwardError> {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        msg.edns = Some(edns);
        let bytes = msg
            .to_vec()
            .map_err(|source| ForwardError::Encode { upstream, source })?;
        let id = msg.metadata.id;
        let timeout = self.timeout;
        let udp = tokio::time::timeout(timeout, udp_exchange(upstream, &bytes, id, query))
            .await
            .map_err(|_| ForwardError::Timeout { upstream, timeout })??;
        if !udp.metadata.truncation {
            return Ok(udp);
        }
        tokio::time::timeout(timeout, tcp_exchange(upstream, &bytes, id, query))
            .await
            .map_err(|_| ForwardError::Timeout { upstream, timeout })?
    }
}

fn answers(m: &Message, id: u16, query: &Query) -> bool {
    m.metadata.id == id
        && m.queries.len() == 1
        && m.queries[0].name().to_lowercase() == query.name().to_lowercase()
        && m.queries[0].query_type() == query.query_type()
}

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(local).await.map_err(io)?;
    // connect() makes the kernel drop datagrams from anyone but the upstream.
    sock.connect(upstream).await.map_err(io)?;
    sock.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(UDP_PAYLOAD).max(4096)];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        // A stray or spoofed datagram with another id is skipped, not trusted.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if answers(&m, id, query) {
                return Ok(m);
            }
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let mut s = TcpStream::connect(upstream).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| ForwardError::BadAnswer { upstream })?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.map_err(io)?;
    let n = s.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.map_err(io)?;
    let m = Message::from_vec(&buf).map_err(|_| ForwardError::BadAnswer { upstream })?;
    if answers(&m, id, query) {
        Ok(m)
    } else {
        Err(ForwardError::BadAnswer { upstream })
    }
}

/// The `nameserver` addresses of a resolv.conf (port 53), in file order. Stub resolvers
/// such as systemd-resolved's 127.0.0.53 are kept: on the node's own network namespace
/// they work, and they are what the node itself uses.
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DnsError::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_resolv_conf(&text))
}

/// The nameservers of resolv.conf text; lines that do not parse are skipped (glibc does
/// the same), including an IPv6 zone suffix we cannot bind to (`fe80::1%eth0`).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.org\nnameserver 127.0.0.53\n\
                    nameserver   192.0.2.1 # office\n;nameserver 192.0.2.9\n\
                    nameserver fe80::1%eth0\nnameserver 2001:db8::53\noptions edns0\n";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn missing_resolv_conf_names_the_file() {
        let e = upstreams_from_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/resolv.conf"), "{e}");
    }
}
