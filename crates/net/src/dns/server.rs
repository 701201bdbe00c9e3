//! The DNS server: UDP and TCP listeners (hickory-server) and the request handler that
//! routes each question to the cluster zone, the reverse zones or the forwarder.
//!
//! Routing, in order, for the single question of a query:
//! 1. under the cluster domain: the [`Zone`] answers authoritatively (records, NODATA or
//!    NXDOMAIN with the zone's SOA);
//! 2. a reverse name: PTR from the zone when the address is a ClusterIP or a headless
//!    endpoint; otherwise, inside the cluster's or the service CIDR's reverse zones,
//!    NXDOMAIN (authoritative);
//! 3. anything else goes to the [`Forwarder`]: SERVFAIL when every upstream fails,
//!    REFUSED when there are none.
//!
//! Names of steps 1 and 2 never leave the node. Until the caches have listed once, steps
//! 1 and 2 answer SERVFAIL (a client retries; a false NXDOMAIN would be cached).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::cache::{self, ZoneHandle};
use super::forward::Forwarder;
use super::names::{in_reverse_zones, reverse_ip};
use super::zone::{soa_record, Lookup};
use super::{DnsConfig, DnsError};

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabels {
    rcode: String,
}

/// The server's counters: responses by rcode.
#[derive(Debug, Clone, Default)]
pub struct DnsMetrics {
    responses: Family<RcodeLabels, Counter>,
}

impl DnsMetrics {
    /// Adds the counters to `registry` (as `skiff_dns_responses_total{rcode}`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "skiff_dns_responses",
            "DNS responses sent, by response code",
            self.responses.clone(),
        );
    }

    /// Responses sent so far with `rcode` (e.g. `NXDomain`).
    pub fn responses(&self, rcode: ResponseCode) -> u64 {
        self.responses
            .get_or_create(&RcodeLabels {
                rcode: format!("{rcode:?}"),
            })
            .get()
    }

    fn count(&self, rcode: ResponseCode) {
        self.responses
            .get_or_create(&RcodeLabels {
                rcode: format!("{rcode:?}"),
            })
            .inc();
    }
}

/// Sockets bound and a handler ready; [`DnsServer::serve`] answers on them.
pub struct DnsServer {
    cfg: DnsConfig,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    zone: ZoneHandle,
    metrics: DnsMetrics,
}

impl DnsServer {
    /// Binds UDP and TCP on every `cfg.listen` address. A port of 0 picks one free port
    /// for both protocols, so [`DnsServer::local_addrs`] names one address per entry.
    pub async fn bind(cfg: DnsConfig) -> Result<DnsServer, DnsError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut addrs = Vec::new();
        for &want in &cfg.listen {
            let (u, t) = bind_pair(want).await?;
            let addr = u
                .local_addr()
                .map_err(|source| DnsError::Bind { addr: want, source })?;
            addrs.push(addr);
            udp.push(u);
            tcp.push(t);
        }
        Ok(DnsServer {
            cfg,
            udp,
            tcp,
            addrs,
            zone: ZoneHandle::default(),
            metrics: DnsMetrics::default(),
        })
    }

    /// The addresses actually bound (UDP and TCP share each).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The server's counters (register them on a `/metrics` registry).
    pub fn metrics(&self) -> DnsMetrics {
        self.metrics.clone()
    }

    /// The zone the server answers from; set it directly when not serving from a cluster
    /// ([`DnsServer::serve_zone`]).
    pub fn zone(&self) -> ZoneHandle {
        self.zone.clone()
    }

    /// Answers until `stop`, with the zone kept current from the API server by `client`.
    pub async fn serve(
        self,
        client: kube::Client,
        stop: CancellationToken,
    ) -> Result<(), DnsError> {
        let zone = self.zone.clone();
        let source = tokio::spawn(cache::run(
            client,
            self.cfg.domain.clone(),
            self.cfg.ttl,
            zone,
            stop.clone(),
        ));
        let out = self.serve_zone(stop).await;
        let _ = source.await;
        out
    }

    /// Answers until `stop` from whatever [`DnsServer::zone`] holds (no API server).
    pub async fn serve_zone(self, stop: CancellationToken) -> Result<(), DnsError> {
        let mut cidrs = vec![self.cfg.cluster_cidr, self.cfg.service_cidr];
        cidrs.dedup();
        // Never forward to ourselves: a node whose resolv.conf names the DNS Service IP
        // would loop each miss until the timeout.
        let upstreams: Vec<SocketAddr> = self
            .cfg
            .upstreams
            .iter()
            .copied()
            .filter(|u| !self.addrs.contains(u) && !self.cfg.listen.contains(u))
            .collect();
        let handler = Handler {
            zone: self.zone.clone(),
            domain: Name::from_ascii(&self.cfg.domain)
                .map_err(|_| DnsError::BadDomain {
                    domain: self.cfg.domain.clone(),
                })?
                .to_lowercase(),
            cidrs,
            ttl: self.cfg.ttl,
            forwarder: Forwarder::new(upstreams, self.cfg.forward_timeout),
            metrics: self.metrics.clone(),
        };
        let mut server = hickory_server::Server::new(handler);
        for u in self.udp {
            server.register_socket(u);
        }
        for t in self.tcp {
            server.register_listener(t, TCP_IDLE, 64);
        }
        stop.cancelled().await;
        server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Serve {
                message: e.to_string(),
            })
    }
}

/// UDP and TCP on one address; for port 0, the TCP port follows the UDP one (retried a
/// few times in case another process holds that port for TCP).
async fn bind_pair(want: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut last = None;
    for _ in 0..8 {
        let u = UdpSocket::bind(want)
            .await
            .map_err(|source| DnsError::Bind { addr: want, source })?;
        let addr = u
            .local_addr()
            .map_err(|source| DnsError::Bind { addr: want, source })?;
        match TcpListener::bind(addr).await {
            Ok(t) => return Ok((u, t)),
            Err(source) if want.port() == 0 => last = Some(source),
            Err(source) => return Err(DnsError::Bind { addr, source }),
        }
    }
    Err(DnsError::Bind {
        addr: want,
        source: last.unwrap_or_else(|| std::io::Error::other("no free port pair")),
    })
}

struct Handler {
    zone: ZoneHandle,
    domain: Name,
    cidrs: Vec<IpNet>,
    ttl: u32,
    forwarder: Forwarder,
    metrics: DnsMetrics,
}

/// What the handler decided for one question.
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    recursion_available: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn error(rcode: ResponseCode) -> Reply {
        Reply {
            rcode,
            authoritative: false,
            recursion_available: true,
            answers: vec![],
            authorities: vec![],
            additionals: vec![],
        }
    }
}

impl Handler {
    async fn answer(&self, query: &Query) -> Reply {
        let name = query.name();
        let mut fq = name.clone();
        fq.set_fqdn(true);
        if self.domain.zone_of(&fq.to_lowercase()) {
            let Some(zone) = self.zone.current() else {
                return Reply::error(ResponseCode::ServFail);
            };
            return self.authoritative(zone.lookup(&fq, query.query_type()), zone.soa());
        }
        let ours = in_reverse_zones(&fq, &self.cidrs);
        let zone = self.zone.current();
        if let (Some(ip), Some(zone)) = (reverse_ip(&fq), zone.as_ref()) {
            // A ClusterIP or endpoint outside the configured ranges is still the cluster's.
            if let Some(ptrs) = zone.lookup_ptr(ip, name) {
                let found = if matches!(query.query_type(), RecordType::PTR | RecordType::ANY) {
                    Lookup::Answer {
                        answers: ptrs,
                        additionals: vec![],
                    }
                } else {
                    Lookup::NoData
                };
                return self.authoritative(found, self.reverse_soa(&fq));
            }
        }
        if ours {
            if zone.is_none() {
                return Reply::error(ResponseCode::ServFail);
            }
            let soa = self.reverse_soa(&fq);
            // An unknown address does not exist; the networks above addresses (down to
            // the zone's apex) do, with no records but the apex's SOA.
            let found = if reverse_ip(&fq).is_some() {
                Lookup::NxDomain
            } else if query.query_type() == RecordType::SOA && soa.name == fq.to_lowercase() {
                Lookup::Answer {
                    answers: vec![soa.clone()],
                    additionals: vec![],
                }
            } else {
                Lookup::NoData
            };
            return self.authoritative(found, soa);
        }
        self.forward(query).await
    }

    fn authoritative(&self, found: Lookup, soa: Record) -> Reply {
        let (rcode, answers, authorities, additionals) = match found {
            Lookup::Answer {
                answers,
                additionals,
            } => (ResponseCode::NoError, answers, vec![], additionals),
            Lookup::NoData => (ResponseCode::NoError, vec![], vec![soa], vec![]),
            Lookup::NxDomain => (ResponseCode::NXDomain, vec![], vec![soa], vec![]),
        };
        Reply {
            rcode,
            authoritative: true,
            recursion_available: true,
            answers,
            authorities,
            additionals,
        }
    }

    /// The SOA of the reverse zone holding `name` (the CIDR's apex, whole labels).
    fn reverse_soa(&self, name: &Name) -> Record {
        let apex = self
            .cidrs
            .iter()
            .find_map(|c| {
                let mut n = name.clone();
                while n.num_labels() > 2 {
                    if in_reverse_zones(&n, std::slice::from_ref(c))
                        && !in_reverse_zones(&n.base_name(), std::slice::from_ref(c))
                    {
                        return Some(n);
                    }
                    n = n.base_name();
                }
                None
            })
            .unwrap_or_else(|| name.base_name());
        soa_record(&apex, self.ttl)
    }

    async fn forward(&self, query: &Query) -> Reply {
        if self.forwarder.is_empty() {
            return Reply::error(ResponseCode::Refused);
        }
        match self.forwarder.forward(query).await {
            Ok(m) => Reply {
                rcode: m.metadata.response_code,
                authoritative: false,
                recursion_available: true,
                answers: m.answers,
                authorities: m.authorities,
                additionals: m.additionals,
            },
            Err(e) => {
                tracing::debug!(name = %query.name(), error = %e, "forward failed");
                Reply::error(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e
        });
        let queries = request.queries.queries();
        let reply = if request.metadata.op_code != OpCode::Query {
            Reply::error(ResponseCode::NotImp)
        } else if queries.len() != 1 {
            Reply::error(ResponseCode::FormErr)
        } else {
            self.answer(queries[0].original()).await
        };
        self.metrics.count(reply.rcode);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = reply.recursion_available;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response failed");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                let h = hickory_proto::op::Header {
                    metadata,
                    counts: hickory_proto::op::HeaderCounts::default(),
                };
                ResponseInfo::from(h)
            }
        }
    }
}
