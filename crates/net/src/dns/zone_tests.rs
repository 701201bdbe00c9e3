#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::{Lookup, Zone};

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn zone() -> Zone {
    let services = vec![
        svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                               {"port": 81}]},
        })),
        svc(json!({
            "metadata": {"name": "dual", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.21", "clusterIPs": ["10.43.0.21", "fd00:43::21"]},
        })),
        svc(json!({
            "metadata": {"name": "db", "namespace": "data"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
        })),
        svc(json!({
            "metadata": {"name": "empty", "namespace": "data"},
            "spec": {"clusterIP": "None"},
        })),
        svc(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.org"},
        })),
    ];
    let slices = vec![slice(json!({
        "metadata": {"name": "db-abc", "namespace": "data",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"]},
            {"addresses": ["10.42.0.7"], "conditions": {"ready": false}},
        ],
    }))];
    Zone::build("cluster.local", 5, &services, &slices).unwrap()
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn data(l: Lookup) -> Vec<RData> {
    match l {
        Lookup::Answer { answers, .. } => answers.into_iter().map(|r| r.data).collect(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn a(s: &str) -> RData {
    RData::A(A(s.parse().unwrap()))
}

#[test]
fn cluster_ip_service() {
    let z = zone();
    let got = z.lookup(&n("web.default.svc.cluster.local."), RecordType::A);
    assert_eq!(data(got), vec![a("10.43.0.20")]);
    // Case does not matter, and answers carry the asked name with the TTL.
    match z.lookup(&n("WEB.Default.svc.cluster.local."), RecordType::A) {
        Lookup::Answer { answers, .. } => {
            assert_eq!(answers[0].name, n("WEB.Default.svc.cluster.local."));
            assert_eq!(answers[0].ttl, 5);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        z.lookup(&n("web.default.svc.cluster.local."), RecordType::AAAA),
        Lookup::NoData
    );
    assert_eq!(
        z.lookup(&n("web.default.svc.cluster.local."), RecordType::MX),
        Lookup::NoData
    );
}

#[test]
fn dual_stack_service() {
    let z = zone();
    let name = n("dual.default.svc.cluster.local.");
    assert_eq!(data(z.lookup(&name, RecordType::A)), vec![a("10.43.0.21")]);
    assert_eq!(
        data(z.lookup(&name, RecordType::AAAA)),
        vec![RData::AAAA(AAAA("fd00:43::21".parse().unwrap()))]
    );
}

#[test]
fn srv_for_named_ports_only() {
    let z = zone();
    let got = z.lookup(
        &n("_http._tcp.web.default.svc.cluster.local."),
        RecordType::SRV,
    );
    let Lookup::Answer {
        answers,
        additionals,
    } = got
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        answers[0].data,
        RData::SRV(SRV::new(0, 100, 80, n("web.default.svc.cluster.local.")))
    );
    assert_eq!(additionals[0].data, a("10.43.0.20"));
    // `_tcp.web…` is an empty non-terminal, not a missing name.
    assert_eq!(
        z.lookup(&n("_tcp.web.default.svc.cluster.local."), RecordType::SRV),
        Lookup::NoData
    );
    assert_eq!(
        z.lookup(
            &n("_http._udp.web.default.svc.cluster.local."),
            RecordType::SRV
        ),
        Lookup::NxDomain
    );
}

#[test]
fn headless_service_and_endpoints() {
    let z = zone();
    let got = data(z.lookup(&n("db.data.svc.cluster.local."), RecordType::A));
    // Ready (or unknown) endpoints only.
    assert_eq!(got, vec![a("10.42.0.5"), a("10.42.0.6")]);
    assert_eq!(
        data(z.lookup(&n("db-0.db.data.svc.cluster.local."), RecordType::A)),
        vec![a("10.42.0.5")]
    );
    assert_eq!(
        data(z.lookup(&n("10-42-0-6.db.data.svc.cluster.local."), RecordType::A)),
        vec![a("10.42.0.6")]
    );
    assert_eq!(
        z.lookup(&n("10-42-0-7.db.data.svc.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    let srv = data(z.lookup(&n("_pg._tcp.db.data.svc.cluster.local."), RecordType::SRV));
    assert_eq!(
        srv,
        vec![
            RData::SRV(SRV::new(
                0,
                50,
                5433,
                n("10-42-0-6.db.data.svc.cluster.local.")
            )),
            RData::SRV(SRV::new(0, 50, 5433, n("db-0.db.data.svc.cluster.local."))),
        ]
    );
    // A headless Service with no endpoints exists, with no addresses.
    assert_eq!(
        z.lookup(&n("empty.data.svc.cluster.local."), RecordType::A),
        Lookup::NoData
    );
}

#[test]
fn external_name_is_a_cname() {
    let z = zone();
    for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        assert_eq!(
            data(z.lookup(&n("ext.default.svc.cluster.local."), t)),
            vec![RData::CNAME(CNAME(n("example.org.")))]
        );
    }
}

#[test]
fn ptr_records() {
    let z = zone();
    let q = n("20.0.43.10.in-addr.arpa.");
    let got = z.lookup_ptr("10.43.0.20".parse().unwrap(), &q).unwrap();
    assert_eq!(
        got[0].data,
        RData::PTR(PTR(n("web.default.svc.cluster.local.")))
    );
    let got = z.lookup_ptr("10.42.0.5".parse().unwrap(), &q).unwrap();
    assert_eq!(
        got[0].data,
        RData::PTR(PTR(n("db-0.db.data.svc.cluster.local.")))
    );
    let ip: IpAddr = "10.43.9.9".parse().unwrap();
    assert!(z.lookup_ptr(ip, &q).is_none());
}

#[test]
fn pod_names() {
    let z = zone();
    assert_eq!(
        data(z.lookup(&n("10-42-1-9.default.pod.cluster.local."), RecordType::A)),
        vec![a("10.42.1.9")]
    );
    assert_eq!(
        z.lookup(&n("10-42-1-9.default.pod.cluster.local."), RecordType::AAAA),
        Lookup::NoData
    );
    assert_eq!(
        z.lookup(&n("nope.default.pod.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
}

#[test]
fn missing_and_structural_names() {
    let z = zone();
    for missing in [
        "nope.default.svc.cluster.local.",
        "web.nope.svc.cluster.local.",
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "x.cluster.local.",
    ] {
        assert_eq!(
            z.lookup(&n(missing), RecordType::A),
            Lookup::NxDomain,
            "{missing}"
        );
    }
    for structural in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
    ] {
        assert_eq!(
            z.lookup(&n(structural), RecordType::A),
            Lookup::NoData,
            "{structural}"
        );
    }
    assert!(matches!(
        z.lookup(&n("cluster.local."), RecordType::SOA),
        Lookup::Answer { .. }
    ));
}

#[test]
fn invalid_domain_is_refused() {
    assert!(Zone::build("bad..domain", 5, &[], &[]).is_none());
}
