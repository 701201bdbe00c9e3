//! Deleting stale UDP conntrack entries over ctnetlink (a raw `NETLINK_NETFILTER`
//! socket; the `conntrack` tool is not needed).
//!
//! Why: UDP has no connection end, so a client that keeps sending to a Service keeps its
//! conntrack entry alive and its packets keep going to the endpoint that entry recorded,
//! even after that endpoint is gone. When an endpoint leaves a UDP destination the proxy
//! deletes the entries whose original destination is that destination (ClusterIP, node
//! address or ingress IP and port) and whose reply comes from that endpoint, as
//! kube-proxy does; the next packet then goes through the rules again.
//!
//! How: one dump of the conntrack table (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`), matched
//! in memory, then one `IPCTNL_MSG_CT_DELETE` per match by its original tuple. An entry
//! that vanished meanwhile (ENOENT) is not an error. The socket is opened inside
//! `ProxyConfig.netns` when set (a socket stays in the namespace it was created in).

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use super::model::MapKey;
use super::ProxyError;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;

/// One direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// Deletes the UDP entries of `flows` (destination, endpoint that went away); returns how
/// many were deleted.
pub fn delete_udp_flows(
    netns: Option<&Path>,
    flows: &[(MapKey, Ipv4Addr)],
) -> Result<usize, ProxyError> {
    if flows.is_empty() {
        return Ok(0);
    }
    let sock = open(netns)?;
    let entries = dump(&sock)?;
    let mut deleted = 0;
    for (orig, reply) in entries {
        let stale = orig.proto == IPPROTO_UDP
            && flows
                .iter()
                .any(|(key, ep)| orig.dst == key.ip && orig.dport == key.port && reply.src == *ep);
        if stale && delete(&sock, &orig)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn io_err(what: &str, e: nix::Error) -> ProxyError {
    ProxyError::Conntrack {
        what: what.to_string(),
        source: std::io::Error::from(e),
    }
}

/// A ctnetlink socket in `netns` (or the process's namespace).
fn open(netns: Option<&Path>) -> Result<OwnedFd, ProxyError> {
    let make = || -> Result<OwnedFd, ProxyError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| io_err("open a netlink socket", e))?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &NetlinkAddr::new(0, 0),
        )
        .map_err(|e| io_err("bind the netlink socket", e))?;
        Ok(fd)
    };
    let Some(path) = netns else {
        return make();
    };
    let path = path.to_path_buf();
    // The namespace is per thread: enter it on a thread of our own (never a pooled one,
    // which would stay in it), create the socket there and bring it back.
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).map_err(|source| ProxyError::Netns {
                path: path.clone(),
                source,
            })?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                ProxyError::Netns {
                    path: path.clone(),
                    source: e.into(),
                }
            })?;
            make()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(ProxyError::Conntrack {
                what: "the netns thread panicked".into(),
                source: std::io::Error::other("panic"),
            })
        })
    })
}

/// nlmsghdr + nfgenmsg (AF_INET, version 0) + `attrs`.
fn message(kind: u16, flags: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(libc::AF_INET as u8);
    m.push(0);
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn tuple_attr(t: &Tuple) -> Vec<u8> {
    let mut ip = Vec::new();
    attr(&mut ip, CTA_IP_V4_SRC, &t.src.octets());
    attr(&mut ip, CTA_IP_V4_DST, &t.dst.octets());
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[t.proto]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    let mut tuple = Vec::new();
    attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    let mut out = Vec::new();
    attr(&mut out, CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
    out
}

/// Iterates the attributes in `data` as (type without flags, payload).
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        let next = (len + 3) & !3;
        data = data.get(next..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn parse_tuple(data: &[u8]) -> Tuple {
    let mut t = Tuple {
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        proto: 0,
        sport: 0,
        dport: 0,
    };
    for (kind, payload) in attrs(data) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, p) in attrs(payload) {
                    if let Ok(b) = <[u8; 4]>::try_from(p) {
                        match k {
                            CTA_IP_V4_SRC => t.src = Ipv4Addr::from(b),
                            CTA_IP_V4_DST => t.dst = Ipv4Addr::from(b),
                            _ => {}
                        }
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, p) in attrs(payload) {
                    match (k, p) {
                        (CTA_PROTO_NUM, [n]) => t.proto = *n,
                        (CTA_PROTO_SRC_PORT, [a, b]) => t.sport = u16::from_be_bytes([*a, *b]),
                        (CTA_PROTO_DST_PORT, [a, b]) => t.dport = u16::from_be_bytes([*a, *b]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// Every IPv4 entry as (original, reply) tuples.
fn dump(sock: &OwnedFd) -> Result<Vec<(Tuple, Tuple)>, ProxyError> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let req = message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, &[]);
    send(fd, &req, MsgFlags::empty()).map_err(|e| io_err("request the conntrack dump", e))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(fd, &mut buf, MsgFlags::empty())
            .map_err(|e| io_err("read the conntrack dump", e))?;
        let mut data = &buf[..n];
        while data.len() >= 16 {
            let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            if len < 16 || len > data.len() {
                break;
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = data
                        .get(16..20)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    if code != 0 {
                        return Err(ProxyError::Conntrack {
                            what: "dump the conntrack table".into(),
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                }
                _ => {
                    let body = data.get(20..len).unwrap_or(&[]);
                    let (mut orig, mut reply) = (None, None);
                    for (k, p) in attrs(body) {
                        match k {
                            CTA_TUPLE_ORIG => orig = Some(parse_tuple(p)),
                            CTA_TUPLE_REPLY => reply = Some(parse_tuple(p)),
                            _ => {}
                        }
                    }
                    if let (Some(o), Some(r)) = (orig, reply) {
                        out.push((o, r));
                    }
                }
            }
            let next = (len + 3) & !3;
            data = data.get(next..).unwrap_or(&[]);
        }
    }
}

/// Deletes one entry by its original tuple; false when it was already gone.
fn delete(sock: &OwnedFd, orig: &Tuple) -> Result<bool, ProxyError> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let req = message(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        2,
        &tuple_attr(orig),
    );
    send(fd, &req, MsgFlags::empty()).map_err(|e| io_err("delete a conntrack entry", e))?;
    let mut buf = [0u8; 1024];
    let n = recv(fd, &mut buf, MsgFlags::empty())
        .map_err(|e| io_err("read the conntrack delete's answer", e))?;
    let data = &buf[..n];
    if data.len() >= 20 && u16::from_ne_bytes([data[4], data[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([data[16], data[17], data[18], data[19]]);
        return match -code {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            errno => Err(ProxyError::Conntrack {
                what: format!("delete the conntrack entry {orig:?}"),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        };
    }
    Ok(true)
}

/// Lists the IPv4 entries (tests and diagnostics).
pub fn list(netns: Option<&Path>) -> Result<Vec<(Tuple, Tuple)>, ProxyError> {
    let sock = open(netns)?;
    dump(&sock)
}
