//! The rule model against Kubernetes' Service semantics.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use super::*;

pub(crate) fn cfg() -> ProxyConfig {
    let mut c = ProxyConfig::new("node-a", vec!["192.168.1.10".parse().unwrap()]);
    c.table = "skiff-test".into();
    c
}

pub(crate) fn service(name: &str, cluster_ip: &str, spec: Value) -> Service {
    let mut s = json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80, "protocol": "TCP"}]},
    });
    if let (Some(base), Some(extra)) = (s["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(s).unwrap()
}

/// An endpoint: (ip, ready, serving, terminating, node).
pub(crate) type Ep<'a> = (&'a str, bool, bool, bool, &'a str);

pub(crate) fn slice(svc: &str, slice_name: &str, ports: Value, eps: &[Ep<'_>]) -> EndpointSlice {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, ready, serving, terminating, node)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": node,
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": slice_name,
                     "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

pub(crate) fn ready(ip: &str) -> Ep<'_> {
    (ip, true, true, false, "node-b")
}

fn key(ip: &str, proto: Protocol, port: u16) -> MapKey {
    MapKey {
        ip: ip.parse().unwrap(),
        proto,
        port,
    }
}

fn tcp_port(port: u16) -> Value {
    json!([{"port": port, "protocol": "TCP"}])
}

fn dnats(r: &ServiceRules) -> Vec<(Ipv4Addr, u16)> {
    let mut v: Vec<(Ipv4Addr, u16)> = r
        .chains
        .values()
        .flatten()
        .filter_map(|rule| match rule {
            Rule::Dnat { ip, port, .. } => Some((*ip, *port)),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// How many endpoints a balancing chain spreads over (endpoint chains or DNAT addresses).
fn fanout(r: &ServiceRules, chain: &str) -> usize {
    r.chains[chain]
        .iter()
        .filter(|rule| matches!(rule, Rule::Dnat { .. }))
        .count()
}

#[test]
fn cluster_ip_balances_over_ready_endpoints() {
    let svc = service("web", "10.43.0.10", json!({}));
    let s = slice(
        "web",
        "web-1",
        tcp_port(8080),
        &[ready("10.42.1.5"), ready("10.42.2.7")],
    );
    let r = service_rules(&svc, &[&s], &cfg());
    let k = key("10.43.0.10", Protocol::Tcp, 80);
    let chain = &r.service_ips[&k];
    assert!(chain.starts_with("svc-"), "{chain}");
    assert_eq!(fanout(&r, chain), 2);
    assert_eq!(
        dnats(&r),
        vec![
            ("10.42.1.5".parse().unwrap(), 8080),
            ("10.42.2.7".parse().unwrap(), 8080)
        ]
    );
    // Traffic from outside the pod network to the ClusterIP is masqueraded.
    assert!(matches!(
        r.chains[chain][0],
        Rule::MasqueradeOffCluster { cluster_ip, .. } if cluster_ip == Ipv4Addr::new(10, 43, 0, 10)
    ));
    // The chain DNATs itself (no endpoint chains): the first endpoint is picked one time
    // in two, the second takes the rest. Both addresses get hairpin elements.
    assert_eq!(r.chains.len(), 1);
    let rules = &r.chains[chain];
    assert!(matches!(rules[1], Rule::Dnat { one_in: 2, .. }));
    assert!(matches!(rules[2], Rule::Dnat { one_in: 1, .. }));
    assert_eq!(r.endpoint_ips.len(), 2);
    assert!(r.no_endpoints.is_empty());
}

#[test]
fn headless_and_external_name_get_nothing() {
    let s = slice("h", "h-1", tcp_port(80), &[ready("10.42.1.5")]);
    let headless = service("h", "None", json!({}));
    assert_eq!(
        service_rules(&headless, &[&s], &cfg()),
        ServiceRules::default()
    );
    let ext = service(
        "h",
        "",
        json!({"type": "ExternalName", "externalName": "example.invalid"}),
    );
    assert_eq!(service_rules(&ext, &[&s], &cfg()), ServiceRules::default());
}

#[test]
fn no_endpoints_rejects() {
    let svc = service("web", "10.43.0.10", json!({}));
    let r = service_rules(&svc, &[], &cfg());
    assert!(r.chains.is_empty() && r.service_ips.is_empty());
    assert_eq!(
        r.no_endpoints[&key("10.43.0.10", Protocol::Tcp, 80)],
        NoEndpoints::Reject
    );
}

#[test]
fn not_ready_endpoints_are_skipped_and_terminating_serving_ones_are_the_fallback() {
    let svc = service("web", "10.43.0.10", json!({}));
    let s = slice(
        "web",
        "web-1",
        tcp_port(8080),
        &[
            ("10.42.1.1", true, true, false, "n"),
            ("10.42.1.2", false, false, false, "n"),
            ("10.42.1.3", false, true, true, "n"),
        ],
    );
    let r = service_rules(&svc, &[&s], &cfg());
    assert_eq!(dnats(&r), vec![("10.42.1.1".parse().unwrap(), 8080)]);

    // No ready endpoint: the serving, terminating one takes the traffic.
    let s = slice(
        "web",
        "web-1",
        tcp_port(8080),
        &[
            ("10.42.1.2", false, false, false, "n"),
            ("10.42.1.3", false, true, true, "n"),
            ("10.42.1.4", false, false, true, "n"),
        ],
    );
    let r = service_rules(&svc, &[&s], &cfg());
    assert_eq!(dnats(&r), vec![("10.42.1.3".parse().unwrap(), 8080)]);
}

#[test]
fn multi_port_with_named_target_ports_across_slices() {
    let svc = service(
        "web",
        "10.43.0.10",
        json!({"ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
        ]}),
    );
    // Two pods resolve the named port differently; each slice carries its own number.
    let a = slice(
        "web",
        "web-a",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"},
               {"name": "dns", "port": 5353, "protocol": "UDP"}]),
        &[ready("10.42.1.5")],
    );
    let b = slice(
        "web",
        "web-b",
        json!([{"name": "http", "port": 9090, "protocol": "TCP"}]),
        &[ready("10.42.2.7")],
    );
    let r = service_rules(&svc, &[&a, &b], &cfg());
    let http = &r.service_ips[&key("10.43.0.10", Protocol::Tcp, 80)];
    let dns = &r.service_ips[&key("10.43.0.10", Protocol::Udp, 53)];
    assert_ne!(http, dns);
    assert_eq!(fanout(&r, http), 2);
    assert_eq!(fanout(&r, dns), 1);
    let mut targets: Vec<(Protocol, Ipv4Addr, u16)> = r
        .chains
        .values()
        .flatten()
        .filter_map(|rule| match rule {
            Rule::Dnat {
                proto, ip, port, ..
            } => Some((*proto, *ip, *port)),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            (Protocol::Tcp, "10.42.1.5".parse().unwrap(), 8080),
            (Protocol::Tcp, "10.42.2.7".parse().unwrap(), 9090),
            (Protocol::Udp, "10.42.1.5".parse().unwrap(), 5353),
        ]
    );
    // UDP destinations remember their endpoints for conntrack cleanup.
    assert_eq!(
        r.udp_endpoints[&key("10.43.0.10", Protocol::Udp, 53)],
        ["10.42.1.5".parse().unwrap()].into_iter().collect()
    );
}

#[test]
fn node_port_and_load_balancer_answer_externally_with_masquerade() {
    let mut svc = service(
        "web",
        "10.43.0.10",
        json!({"type": "LoadBalancer",
               "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
    );
    svc.status = serde_json::from_value(
        json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.200", "ipMode": "VIP"}]}}),
    )
    .unwrap();
    let s = slice("web", "web-1", tcp_port(8080), &[ready("10.42.1.5")]);
    let mut c = cfg();
    c.node_ips.push("192.168.2.10".parse().unwrap());
    c.node_ips.push("fd00::1".parse().unwrap());
    let r = service_rules(&svc, &[&s], &c);
    let ext = &r.service_ips[&key("192.168.1.10", Protocol::Tcp, 30080)];
    assert!(ext.starts_with("ext-"));
    assert_eq!(
        &r.service_ips[&key("192.168.2.10", Protocol::Tcp, 30080)],
        ext
    );
    assert_eq!(
        &r.service_ips[&key("192.168.1.200", Protocol::Tcp, 80)],
        ext
    );
    assert_eq!(r.service_ips.len(), 4, "{:?}", r.service_ips.keys());
    assert!(matches!(r.chains[ext][0], Rule::MasqueradeExternal { .. }));
    assert!(matches!(&r.chains[ext][1], Rule::Goto { chain } if chain.starts_with("svc-")));
}

#[test]
fn external_traffic_policy_local_uses_local_endpoints_and_drops_without_them() {
    let svc = service(
        "web",
        "10.43.0.10",
        json!({"type": "NodePort", "externalTrafficPolicy": "Local",
               "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
    );
    let remote_only = slice("web", "web-1", tcp_port(8080), &[ready("10.42.2.7")]);
    let r = service_rules(&svc, &[&remote_only], &cfg());
    // ClusterIP still reaches the remote endpoint; the NodePort drops (no local one).
    assert!(r
        .service_ips
        .contains_key(&key("10.43.0.10", Protocol::Tcp, 80)));
    assert_eq!(
        r.no_endpoints[&key("192.168.1.10", Protocol::Tcp, 30080)],
        NoEndpoints::Drop
    );

    let both = slice(
        "web",
        "web-1",
        tcp_port(8080),
        &[
            ready("10.42.2.7"),
            ("10.42.1.5", true, true, false, "node-a"),
        ],
    );
    let r = service_rules(&svc, &[&both], &cfg());
    let ext = &r.service_ips[&key("192.168.1.10", Protocol::Tcp, 30080)];
    // No masquerade (the client address is kept); pods short-circuit to all endpoints.
    assert!(matches!(r.chains[ext][0], Rule::PodsGoto { .. }));
    let Rule::Goto { chain: lcl } = &r.chains[ext][1] else {
        panic!("{:?}", r.chains[ext]);
    };
    assert!(lcl.starts_with("lcl-"));
    assert_eq!(fanout(&r, lcl), 1);
}

#[test]
fn internal_traffic_policy_local() {
    let svc = service(
        "web",
        "10.43.0.10",
        json!({"internalTrafficPolicy": "Local"}),
    );
    let remote = slice("web", "web-1", tcp_port(8080), &[ready("10.42.2.7")]);
    let r = service_rules(&svc, &[&remote], &cfg());
    assert_eq!(
        r.no_endpoints[&key("10.43.0.10", Protocol::Tcp, 80)],
        NoEndpoints::Drop
    );
    let local = slice(
        "web",
        "web-1",
        tcp_port(8080),
        &[
            ready("10.42.2.7"),
            ("10.42.1.5", true, true, false, "node-a"),
        ],
    );
    let r = service_rules(&svc, &[&local], &cfg());
    let chain = &r.service_ips[&key("10.43.0.10", Protocol::Tcp, 80)];
    assert!(chain.starts_with("lcl-"));
    assert_eq!(dnats(&r), vec![("10.42.1.5".parse().unwrap(), 8080)]);
}

#[test]
fn session_affinity_keeps_a_set_per_endpoint() {
    let svc = service(
        "web",
        "10.43.0.10",
        json!({"sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
    );
    let s = slice(
        "web",
        "web-1",
        tcp_port(8080),
        &[ready("10.42.1.5"), ready("10.42.2.7")],
    );
    let r = service_rules(&svc, &[&s], &cfg());
    assert_eq!(r.affinity_sets.len(), 2);
    // Picking an endpoint remembers the client in that endpoint's set.
    assert!(r
        .chains
        .values()
        .flatten()
        .all(|x| !matches!(x, Rule::Dnat { remember: None, .. })));
    assert!(r.affinity_sets.values().all(|t| *t == 60));
    let chain = &r.service_ips[&key("10.43.0.10", Protocol::Tcp, 80)];
    let gotos = r.chains[chain]
        .iter()
        .filter(|x| matches!(x, Rule::AffinityDnat { .. }))
        .count();
    assert_eq!(gotos, 2);
    // A changed timeout is a different set.
    let svc2 = service(
        "web",
        "10.43.0.10",
        json!({"sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 61}}}),
    );
    let r2 = service_rules(&svc2, &[&s], &cfg());
    assert!(r2
        .affinity_sets
        .keys()
        .all(|k| !r.affinity_sets.contains_key(k)));
}

#[test]
fn skipped_cluster_ips_are_left_alone() {
    let svc = service("dns", "10.43.0.10", json!({}));
    let s = slice("dns", "dns-1", tcp_port(53), &[ready("10.42.1.5")]);
    let mut c = cfg();
    c.skip_cluster_ips = vec![IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10))];
    let r = service_rules(&svc, &[&s], &c);
    assert!(r.service_ips.is_empty() && r.no_endpoints.is_empty());
}

#[test]
fn names_are_short_deterministic_and_distinct() {
    let long = "x".repeat(63);
    let svc = service(&long, "10.43.0.10", json!({}));
    let s = slice(&long, "s", tcp_port(8080), &[ready("10.42.1.5")]);
    let a = service_rules(&svc, &[&s], &cfg());
    let b = service_rules(&svc, &[&s], &cfg());
    assert_eq!(a, b);
    for name in a.chains.keys() {
        assert!(name.len() < 64, "{name}");
    }
    let other = service("other", "10.43.0.11", json!({}));
    let s2 = slice("other", "s", tcp_port(8080), &[ready("10.42.1.5")]);
    let c = service_rules(&other, &[&s2], &cfg());
    assert!(c.chains.keys().all(|k| !a.chains.contains_key(k)));
}
