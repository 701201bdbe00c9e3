//! `-p [IP:]HOSTPORT:CTRPORT[/tcp]`: publishing a container port on the host.
//!
//! No veth, no NAT: the container's owner listens on the host port and, for each
//! connection, dials 127.0.0.1:CTRPORT from a socket made inside the container's network
//! namespace (by a thread that has joined it), then copies bytes both ways. A socket
//! keeps the namespace it was created in, so the other threads stay in the host's.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub host_ip: IpAddr,
    /// 0 until bound when the spec left it to the system.
    pub host_port: u16,
    pub container_port: u16,
}

impl std::fmt::Display for PortMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.host_ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        write!(f, "{ip}:{}->{}/tcp", self.host_port, self.container_port)
    }
}

fn port(s: &str, what: &str, spec: &str, allow_zero: bool) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(0) if !allow_zero => bail!("-p {spec:?}: {what} 0 is not a port; use 1-65535"),
        Ok(n) => Ok(n),
        Err(_) => bail!("-p {spec:?}: {what} {s:?} is not a port number (1-65535)"),
    }
}

/// Parses `CTRPORT`, `HOSTPORT:CTRPORT` or `IP:HOSTPORT:CTRPORT` (IPv6 in brackets), each
/// optionally with `/tcp`. Ranges and UDP are refused with what to use instead.
pub fn parse(spec: &str) -> Result<PortMap> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, p),
        None => (spec, "tcp"),
    };
    match proto {
        "tcp" => {}
        "udp" | "sctp" => bail!("-p {spec:?}: only tcp ports can be published"),
        other => bail!("-p {spec:?}: unknown protocol {other:?}; use /tcp"),
    }
    if body.contains('-') {
        bail!("-p {spec:?}: port ranges are not supported; publish each port with its own -p");
    }
    let (ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .with_context(|| format!("-p {spec:?}: expected [IPv6]:HOSTPORT:CTRPORT"))?;
        let ip: IpAddr = ip
            .parse()
            .with_context(|| format!("-p {spec:?}: {ip:?} is not an IP address"))?;
        (Some(ip), rest.to_string())
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.as_slice() {
            [_] | [_, _] => (None, body.to_string()),
            [ip, h, c] => {
                let ip: IpAddr = if ip.is_empty() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    ip.parse()
                        .with_context(|| format!("-p {spec:?}: {ip:?} is not an IP address"))?
                };
                (Some(ip), format!("{h}:{c}"))
            }
            _ => bail!("-p {spec:?}: expected [IP:]HOSTPORT:CTRPORT[/tcp]"),
        }
    };
    let (host, ctr) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None if ip.is_none() => ("", rest.as_str()),
        None => bail!("-p {spec:?}: expected IP:HOSTPORT:CTRPORT"),
    };
    let container_port = port(ctr, "container port", spec, false)?;
    let host_port = if host.is_empty() {
        0
    } else {
        port(host, "host port", spec, false)?
    };
    Ok(PortMap {
        host_ip: ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        host_port,
        container_port,
    })
}

/// Binds every host port (before the container exists, so a taken port fails early and
/// leaves nothing behind); fills in system-chosen ports.
pub fn bind(maps: &mut [PortMap]) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for m in maps.iter_mut() {
        let addr = SocketAddr::new(m.host_ip, m.host_port);
        let l = TcpListener::bind(addr).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "cannot publish port {}: {addr} is already in use on the host; pick another host port",
                    m.container_port
                )
            } else {
                anyhow::Error::new(e).context(format!("binding {addr} for -p"))
            }
        })?;
        m.host_port = l.local_addr()?.port();
        out.push(l);
    }
    Ok(out)
}

type DialRequest = (u16, mpsc::Sender<io::Result<TcpStream>>);

/// Starts the forwarding threads. `ns` is the container's network namespace.
pub fn serve(listeners: Vec<TcpListener>, maps: &[PortMap], ns: std::fs::File) -> Result<()> {
    let (tx, rx) = mpsc::channel::<DialRequest>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("netns-dialer".into())
        .spawn(move || {
            // setns(CLONE_NEWNET) changes only this thread's namespace.
            if let Err(e) = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                let _ = ready_tx.send(Err(format!(
                    "joining the container's network namespace: {e}"
                )));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            for (port, reply) in rx {
                let _ = reply.send(TcpStream::connect((Ipv4Addr::LOCALHOST, port)));
            }
        })?;
    ready_rx
        .recv()
        .context("the dialer thread died")?
        .map_err(anyhow::Error::msg)?;
    for (l, m) in listeners.into_iter().zip(maps) {
        let tx = tx.clone();
        let ctr = m.container_port;
        std::thread::Builder::new()
            .name(format!("publish-{}", m.host_port))
            .spawn(move || accept_loop(l, ctr, tx))?;
    }
    Ok(())
}

fn accept_loop(l: TcpListener, ctr: u16, dialer: mpsc::Sender<DialRequest>) {
    for conn in l.incoming() {
        let Ok(client) = conn else { continue };
        let (rtx, rrx) = mpsc::channel();
        if dialer.send((ctr, rtx)).is_err() {
            return;
        }
        let upstream = match rrx.recv() {
            Ok(Ok(s)) => s,
            // Nothing listens in the container (yet): the client sees a closed
            // connection, as with docker's proxy.
            _ => continue,
        };
        let _ = std::thread::Builder::new()
            .name("publish-conn".into())
            .spawn(move || splice_both(client, upstream));
    }
}

/// Copies both ways until both directions reach EOF, passing each half-close on.
fn splice_both(a: TcpStream, b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || copy_half(a2, b2));
    copy_half(b, a);
    let _ = t.join();
}

fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_docker() {
        let p = parse("18080:8080").unwrap();
        assert_eq!(
            (p.host_ip.to_string(), p.host_port, p.container_port),
            ("0.0.0.0".into(), 18080, 8080)
        );
        let p = parse("127.0.0.1:1:2/tcp").unwrap();
        assert_eq!(
            (p.host_ip.to_string(), p.host_port, p.container_port),
            ("127.0.0.1".into(), 1, 2)
        );
        let p = parse("[::1]:80:8080").unwrap();
        assert_eq!((p.host_ip.to_string(), p.host_port), ("::1".into(), 80));
        assert_eq!(parse("8080").unwrap().host_port, 0);
        assert_eq!(parse("127.0.0.1::80").unwrap().host_port, 0);
        for (bad, says) in [
            ("80:70000", "not a port number"),
            ("0:80", "0 is not a port"),
            ("x:80", "not a port number"),
            ("1.2.3:80:80", "not an IP address"),
            ("80:80/udp", "only tcp"),
            ("80:80/foo", "unknown protocol"),
            ("8000-8001:80", "ranges"),
            ("a:b:c:d", "expected"),
            ("", "not a port number"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
