//! Cluster DNS end to end: the real API server in-process on an in-memory store, Services
//! and EndpointSlices created with kube-rs, the DNS on a loopback port answering from its
//! reflector caches, and a fake upstream on loopback for forwarded names. Nothing here
//! asks the host's resolver or any outside server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::{Api, Client};
use skiff_net::dns::{self, DnsConfig, DnsError, DnsServer, Zone, ZoneHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

struct Cluster {
    _server: skiff_apiserver::Server,
    admin: Client,
    node: Client,
    _dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(skiff_store::EmbeddedStore::in_memory().unwrap());
    let server = skiff_apiserver::Server::bind(
        skiff_apiserver::Config {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            extra_sans: vec![],
            audit: None,
            event_ttl: None,
            kubelet_ca: None,
            cluster: Default::default(),
            advertise_address: None,
        },
        store,
    )
    .await
    .expect("bind the API server");
    let admin = server.client("system:admin", &["system:masters", "system:authenticated"]);
    // The DNS runs in the agent, as its node.
    let node = server.client("system:node:n1", &["system:nodes", "system:authenticated"]);
    Cluster {
        _server: server,
        admin,
        node,
        _dir: dir,
    }
}

/// A fake upstream resolver on loopback: answers every A question with 192.0.2.1 and
/// remembers what it was asked.
struct FakeUpstream {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

async fn fake_upstream(stop: CancellationToken) -> FakeUpstream {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = tokio::select! {
                r = sock.recv_from(&mut buf) => r.unwrap(),
                _ = stop.cancelled() => return,
            };
            let q = Message::from_vec(&buf[..n]).unwrap();
            let question = q.queries[0].clone();
            seen.lock().unwrap().push(question.name().to_ascii());
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_available = true;
            r.add_query(question.clone());
            if question.query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A("192.0.2.1".parse().unwrap())),
                ));
            }
            sock.send_to(&r.to_vec().unwrap(), from).await.unwrap();
        }
    });
    FakeUpstream { addr, asked }
}

async fn ask_udp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("DNS answered")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

async fn ask_tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let bytes = q.to_vec().unwrap();
    s.write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let n = s.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn rdata(m: &Message) -> Vec<RData> {
    m.answers.iter().map(|r| r.data.clone()).collect()
}

fn a(s: &str) -> RData {
    RData::A(A(s.parse().unwrap()))
}

/// Polls `f` until it returns Some, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_service(c: &Client, ns: &str, v: serde_json::Value) -> Service {
    let api: Api<Service> = Api::namespaced(c.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .expect("create service")
}

fn test_config(upstreams: Vec<SocketAddr>) -> DnsConfig {
    DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams,
        forward_timeout: Duration::from_secs(2),
        ..DnsConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_cluster_names_and_forwards_the_rest() {
    let c = cluster().await;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();

    let web = create_service(
        &c.admin,
        "default",
        serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }),
    )
    .await;
    let web_ip = web.spec.unwrap().cluster_ip.unwrap();
    create_service(
        &c.admin,
        "default",
        serde_json::json!({
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
        }),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(c.admin.clone(), "default");
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db-x", "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.6"], "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.7"], "conditions": {"ready": false}},
                ],
            }))
            .unwrap(),
        )
        .await
        .expect("create endpointslice");

    let upstream = fake_upstream(stop.clone()).await;
    let server = DnsServer::bind(test_config(vec![upstream.addr]))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let metrics = server.metrics();
    let serving = tokio::spawn(server.serve(c.node.clone(), stop.clone()));

    // ClusterIP Service: A, and NODATA for AAAA (authoritative, SOA in authority).
    let m = eventually("web's A record", || async {
        let m = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
        (m.metadata.response_code == ResponseCode::NoError).then_some(m)
    })
    .await;
    assert_eq!(rdata(&m), vec![a(&web_ip)]);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 5);
    let m = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    // SRV of a named port, with the target's address as an extra.
    let m = ask_udp(
        addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    match &m.answers[..] {
        [r] => match &r.data {
            RData::SRV(s) => {
                assert_eq!(s.port, 80);
                assert_eq!(s.target.to_ascii(), "web.default.svc.cluster.local.");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.additionals
            .iter()
            .map(|r| r.data.clone())
            .collect::<Vec<_>>(),
        vec![a(&web_ip)]
    );

    // PTR of the ClusterIP.
    let ip: IpAddr = web_ip.parse().unwrap();
    let rev = dns::reverse_name(ip).unwrap().to_ascii();
    let m = ask_udp(addr, &rev, RecordType::PTR).await;
    assert_eq!(
        rdata(&m),
        vec![RData::PTR(PTR(Name::from_ascii(
            "web.default.svc.cluster.local."
        )
        .unwrap()))]
    );

    // Headless: ready endpoints, the hostname record, per-endpoint SRV, endpoint PTR.
    let m = ask_udp(addr, "db.default.svc.cluster.local.", RecordType::A).await;
    let mut got = rdata(&m);
    got.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(got, vec![a("10.42.0.5"), a("10.42.0.6")]);
    let m = ask_udp(addr, "db-0.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), vec![a("10.42.0.5")]);
    let m = ask_udp(
        addr,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(m.answers.len(), 2);
    let m = ask_udp(addr, "5.0.42.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        rdata(&m),
        vec![RData::PTR(PTR(Name::from_ascii(
            "db-0.db.default.svc.cluster.local."
        )
        .unwrap()))]
    );

    // Pod names.
    let m = ask_udp(addr, "10-42-3-4.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), vec![a("10.42.3.4")]);

    // TCP answers the same.
    let m = ask_tcp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), vec![a(&web_ip)]);

    // A Service created now appears (the caches watch).
    let late = create_service(
        &c.admin,
        "default",
        serde_json::json!({"metadata": {"name": "late"}, "spec": {"ports": [{"port": 8080}]}}),
    )
    .await;
    let late_ip = late.spec.unwrap().cluster_ip.unwrap();
    eventually("the late Service", || async {
        let m = ask_udp(addr, "late.default.svc.cluster.local.", RecordType::A).await;
        (rdata(&m) == vec![a(&late_ip)]).then_some(())
    })
    .await;

    // Missing cluster names and unknown reverse names in the cluster's ranges: NXDOMAIN,
    // authoritative, and never forwarded.
    for name in [
        "nope.default.svc.cluster.local.",
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "9.9.43.10.in-addr.arpa.",
        "9.9.42.10.in-addr.arpa.",
    ] {
        let m = ask_udp(addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative, "{name}");
    }
    // The reverse zone's apex exists (its SOA), and nothing of it is forwarded either.
    let m = ask_udp(addr, "43.10.in-addr.arpa.", RecordType::SOA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = ask_udp(addr, "0.43.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(
        upstream.asked.lock().unwrap().is_empty(),
        "cluster names reached the upstream: {:?}",
        upstream.asked.lock().unwrap()
    );

    // Anything else goes to the (fake) upstream.
    let m = ask_udp(addr, "outside.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdata(&m), vec![a("192.0.2.1")]);
    assert!(!m.metadata.authoritative);
    assert_eq!(
        *upstream.asked.lock().unwrap(),
        vec!["outside.test.".to_string()]
    );

    assert!(metrics.responses(ResponseCode::NXDomain) >= 4);

    stop.cancel();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn forwarding_failures_answer_servfail_or_refused() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    // An upstream that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while silent.recv_from(&mut buf).await.is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut cfg = test_config(vec![silent_addr]);
    cfg.forward_timeout = Duration::from_millis(300);
    let server = DnsServer::bind(cfg).await.unwrap();
    let addr = server.local_addrs()[0];
    let zone: ZoneHandle = server.zone();
    zone.set(Zone::build("cluster.local", 5, &[], &[]).unwrap());
    tokio::spawn(server.serve_zone(stop.clone()));
    let m = ask_udp(addr, "outside.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(received.load(Ordering::SeqCst), 1);

    // No upstreams at all: REFUSED, and cluster names still answer.
    let server = DnsServer::bind(test_config(vec![])).await.unwrap();
    let addr = server.local_addrs()[0];
    server
        .zone()
        .set(Zone::build("cluster.local", 5, &[], &[]).unwrap());
    tokio::spawn(server.serve_zone(stop.clone()));
    let m = ask_udp(addr, "outside.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = ask_udp(addr, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn cluster_names_get_servfail_until_the_caches_list() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let upstream = fake_upstream(stop.clone()).await;
    let server = DnsServer::bind(test_config(vec![upstream.addr]))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    tokio::spawn(server.serve_zone(stop.clone()));
    let m = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(upstream.asked.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_dns_service_is_idempotent() {
    let c = cluster().await;
    let ip: IpAddr = "10.43.0.10".parse().unwrap();
    dns::ensure_dns_service(&c.admin, ip).await.unwrap();
    dns::ensure_dns_service(&c.admin, ip).await.unwrap();
    let api: Api<Service> = Api::namespaced(c.admin.clone(), "kube-system");
    let svc = api.get("kube-dns").await.unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
    assert!(spec.selector.is_none());
    let ports: Vec<(String, i32, String)> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
        .collect();
    assert!(ports.contains(&("dns".into(), 53, "UDP".into())));
    assert!(ports.contains(&("dns-tcp".into(), 53, "TCP".into())));
    let labels = svc.metadata.labels.unwrap();
    assert_eq!(labels.get("k8s-app").map(String::as_str), Some("kube-dns"));
    match dns::ensure_dns_service(&c.admin, "10.43.0.11".parse().unwrap()).await {
        Err(DnsError::ServiceIpMismatch { existing, .. }) => assert_eq!(existing, "10.43.0.10"),
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

/// In a network namespace of its own (nothing touches the host's): the DNS address on
/// its dummy link, idempotently, and the DNS bound to it on port 53 answering there.
#[test]
fn dns_binds_the_service_ip_on_its_own_link() {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ip: IpAddr = "10.43.0.10".parse().unwrap();
            // Local delivery goes through lo, which a new namespace has down.
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            use futures_util::TryStreamExt;
            let lo = handle
                .link()
                .get()
                .match_name("lo")
                .execute()
                .try_next()
                .await
                .unwrap()
                .unwrap();
            handle
                .link()
                .set(
                    rtnetlink::LinkUnspec::new_with_index(lo.header.index)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .unwrap();
            dns::ensure_dns_address("skiff-dns", ip).await.unwrap();
            dns::ensure_dns_address("skiff-dns", ip).await.unwrap();

            let stop = CancellationToken::new();
            let cfg = DnsConfig {
                listen: vec![SocketAddr::new(ip, 53)],
                ..DnsConfig::default()
            };
            let server = DnsServer::bind(cfg).await.expect("bind 10.43.0.10:53");
            assert_eq!(server.local_addrs(), &[SocketAddr::new(ip, 53)]);
            server
                .zone()
                .set(Zone::build("cluster.local", 5, &[], &[]).unwrap());
            let serving = tokio::spawn(server.serve_zone(stop.clone()));
            let m = ask_udp(
                SocketAddr::new(ip, 53),
                "1-2-3-4.x.pod.cluster.local.",
                RecordType::A,
            )
            .await;
            assert_eq!(rdata(&m), vec![a("1.2.3.4")]);
            stop.cancel();
            serving.await.unwrap().unwrap();

            dns::remove_dns_address("skiff-dns").await.unwrap();
            dns::remove_dns_address("skiff-dns").await.unwrap();
        });
    })
    .join()
    .expect("netns test thread");
}

/// A headless Service too big for a plain UDP answer: UDP says truncated, TCP has all.
#[tokio::test]
async fn large_answers_truncate_over_udp_and_fit_over_tcp() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "big", "namespace": "default"},
        "spec": {"clusterIP": "None"},
    }))
    .unwrap();
    let endpoints: Vec<serde_json::Value> = (1..=100)
        .map(|i| serde_json::json!({"addresses": [format!("10.42.1.{i}")]}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "big-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
    .unwrap();
    let server = DnsServer::bind(test_config(vec![])).await.unwrap();
    let addr = server.local_addrs()[0];
    server
        .zone()
        .set(Zone::build("cluster.local", 5, [&svc], [&slice]).unwrap());
    tokio::spawn(server.serve_zone(stop.clone()));
    let m = ask_udp(addr, "big.default.svc.cluster.local.", RecordType::A).await;
    assert!(m.metadata.truncation);
    assert!(m.answers.len() < 100);
    let m = ask_tcp(addr, "big.default.svc.cluster.local.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}
