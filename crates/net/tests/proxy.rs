//! The service proxy with real nftables, each test in network namespaces of its own
//! (`skiff-t<pid>-<n>`, deleted by a guard): a full then an incremental sync read back
//! with `nft -j list table`, and real TCP through the rules to a "pod" namespace behind a
//! veth pair. Needs root and `nft`; the host's namespace is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use netns::{ip, NetNs, PodServer};
use serde_json::{json, Value};
use skiff_net::proxy::{Nft, Proxier, ProxyConfig, ServiceRef};

fn cfg(ns: &NetNs) -> ProxyConfig {
    let mut c = ProxyConfig::new("node-a", vec!["192.168.77.1".parse().unwrap()]);
    c.table = format!("skiff-proxy-{}", ns.name);
    c.netns = Some(ns.path());
    c
}

fn service(name: &str, cluster_ip: &str, extra: Value) -> Service {
    let mut spec = json!({"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(svc: &str, ips: &[&str], port: u16) -> EndpointSlice {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{svc}-1"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap()
}

fn sync(p: &mut Proxier, nft: &Nft) -> usize {
    let plan = p.plan();
    let n = plan.transaction.len();
    nft.apply(&plan.transaction).expect("apply");
    p.commit(plan);
    n
}

/// Chain names and map elements of the table, as nft reports them.
fn table(nft: &Nft, table: &str) -> (Vec<String>, Vec<String>) {
    let v = nft.list_table(table).unwrap().expect("table exists");
    let mut chains = Vec::new();
    let mut elems = Vec::new();
    for o in v["nftables"].as_array().unwrap() {
        if let Some(c) = o.get("chain") {
            chains.push(c["name"].as_str().unwrap().to_string());
        }
        if let Some(m) = o.get("map") {
            for e in m["elem"].as_array().into_iter().flatten() {
                elems.push(format!("{}: {}", m["name"].as_str().unwrap(), e));
            }
        }
    }
    (chains, elems)
}

#[test]
fn full_then_incremental_sync_with_real_nft() {
    let ns = NetNs::new();
    let c = cfg(&ns);
    let nft = Nft {
        netns: c.netns.clone(),
    };
    let mut p = Proxier::new(c.clone());
    p.upsert_service(service("web", "10.43.0.10", json!({})));
    p.upsert_slice(slice("web", &["10.42.0.5", "10.42.0.6"], 8080));
    p.upsert_service(service("empty", "10.43.0.11", json!({})));
    sync(&mut p, &nft);

    let (chains, elems) = table(&nft, &c.table);
    for fixed in [
        "nat-prerouting",
        "nat-output",
        "nat-postrouting",
        "filter-output",
        "services",
        "reject-chain",
    ] {
        assert!(chains.iter().any(|c| c == fixed), "{fixed} in {chains:?}");
    }
    // Endpoints need no chain of their own.
    assert_eq!(chains.iter().filter(|c| c.starts_with("sep-")).count(), 0);
    assert_eq!(chains.iter().filter(|c| c.starts_with("svc-")).count(), 1);
    assert_eq!(elems.len(), 2, "{elems:?}");
    assert!(elems
        .iter()
        .any(|e| e.starts_with("service-ips") && e.contains("10.43.0.10")));
    assert!(elems
        .iter()
        .any(|e| e.starts_with("no-endpoint-services") && e.contains("10.43.0.11")));

    // Incremental: one endpoint replaced, the empty Service gets one, web2 is new.
    p.upsert_slice(slice("web", &["10.42.0.5", "10.42.0.7"], 8080));
    p.upsert_slice(slice("empty", &["10.42.0.9"], 9090));
    p.upsert_service(service(
        "web2",
        "10.43.0.12",
        json!({"sessionAffinity": "ClientIP"}),
    ));
    p.upsert_slice(slice("web2", &["10.42.0.5"], 8080));
    let n = sync(&mut p, &nft);
    assert!(n < 40, "{n} commands");
    let (chains, elems) = table(&nft, &c.table);
    assert_eq!(chains.iter().filter(|c| c.starts_with("sep-")).count(), 0);
    assert_eq!(chains.iter().filter(|c| c.starts_with("svc-")).count(), 3);
    assert_eq!(
        elems
            .iter()
            .filter(|e| e.starts_with("service-ips"))
            .count(),
        3,
        "{elems:?}"
    );
    assert!(!elems.iter().any(|e| e.starts_with("no-endpoint-services")));
    let text = nft.list_table(&c.table).unwrap().unwrap().to_string();
    assert!(text.contains("10.42.0.7") && !text.contains("10.42.0.6"));
    assert!(text.contains("\"timeout\""), "affinity set: {text}");

    // Deleting Services removes every object they had.
    p.delete_service(&ServiceRef::new("default", "web"));
    p.delete_service(&ServiceRef::new("default", "web2"));
    p.delete_service(&ServiceRef::new("default", "empty"));
    sync(&mut p, &nft);
    let (chains, elems) = table(&nft, &c.table);
    assert!(elems.is_empty(), "{elems:?}");
    assert!(
        chains.iter().all(|c| !["svc-", "sep-", "ext-", "lcl-"]
            .iter()
            .any(|p| c.starts_with(p))),
        "{chains:?}"
    );

    // A full resync over an existing table replaces it (no duplicates).
    p.upsert_service(service("web", "10.43.0.10", json!({})));
    p.upsert_slice(slice("web", &["10.42.0.5"], 8080));
    p.request_full_sync();
    sync(&mut p, &nft);
    sync(&mut p, &nft);
    p.request_full_sync();
    sync(&mut p, &nft);
    let (chains, elems) = table(&nft, &c.table);
    assert_eq!(elems.len(), 1);
    assert_eq!(chains.iter().filter(|c| *c == "nat-output").count(), 1);

    nft.delete_table(&c.table).unwrap();
    assert!(nft.list_table(&c.table).unwrap().is_none());
    // Deleting a missing table is fine (`skiff server --clean` twice).
    nft.delete_table(&c.table).unwrap();
}

#[test]
fn a_rejected_transaction_leaves_the_rules_in_force() {
    let ns = NetNs::new();
    let c = cfg(&ns);
    let nft = Nft {
        netns: c.netns.clone(),
    };
    let mut p = Proxier::new(c.clone());
    p.upsert_service(service("web", "10.43.0.10", json!({})));
    p.upsert_slice(slice("web", &["10.42.0.5"], 8080));
    sync(&mut p, &nft);
    let before = nft.list_table(&c.table).unwrap();

    p.upsert_slice(slice("web", &["10.42.0.6"], 8080));
    let mut plan = p.plan();
    // A command nft refuses, at the end of an otherwise good transaction.
    plan.transaction.commands.push(
        json!({"delete": {"chain": {"family": "ip", "table": c.table, "name": "no-such-chain"}}}),
    );
    let err = nft.apply(&plan.transaction).unwrap_err();
    assert!(err.to_string().contains("nft"), "{err}");
    p.abort(plan);
    assert_eq!(nft.list_table(&c.table).unwrap(), before, "nothing applied");

    // The retry is a full resync and it brings the table to the desired state.
    let plan = p.plan();
    assert!(plan.full);
    nft.apply(&plan.transaction).unwrap();
    p.commit(plan);
    let text = nft.list_table(&c.table).unwrap().unwrap().to_string();
    assert!(text.contains("10.42.0.6") && !text.contains("10.42.0.5"));
}

#[test]
fn traffic_reaches_the_pod_through_the_cluster_ip_and_node_port() {
    // "node": the proxy's namespace; "pod": behind a veth pair, serving TCP on 8080.
    let node = NetNs::new();
    let pod = NetNs::new();
    ip(&[
        "-n", &node.name, "link", "add", "vn", "type", "veth", "peer", "name", "vp", "netns",
        &pod.name,
    ]);
    ip(&["-n", &node.name, "addr", "add", "10.42.0.1/24", "dev", "vn"]);
    ip(&["-n", &node.name, "link", "set", "vn", "up"]);
    ip(&[
        "-n",
        &node.name,
        "addr",
        "add",
        "192.168.77.1/32",
        "dev",
        "lo",
    ]);
    // The Service network must be routable for the output hook to see the packet.
    ip(&[
        "-n",
        &node.name,
        "route",
        "add",
        "10.43.0.0/16",
        "dev",
        "vn",
    ]);
    ip(&["-n", &pod.name, "addr", "add", "10.42.0.5/24", "dev", "vp"]);
    ip(&["-n", &pod.name, "link", "set", "vp", "up"]);
    ip(&[
        "-n",
        &pod.name,
        "route",
        "add",
        "default",
        "via",
        "10.42.0.1",
    ]);
    ip(&["-n", &pod.name, "addr", "add", "10.42.0.6/24", "dev", "vp"]);
    let _server = PodServer::start(&pod, "10.42.0.5:8080".parse().unwrap());
    let _server2 = PodServer::start(&pod, "10.42.0.6:8080".parse().unwrap());

    let c = cfg(&node);
    let nft = Nft {
        netns: c.netns.clone(),
    };
    let mut p = Proxier::new(c.clone());
    p.upsert_service(service(
        "web",
        "10.43.0.10",
        json!({"type": "NodePort",
               "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
    ));
    p.upsert_slice(slice("web", &["10.42.0.5"], 8080));
    p.upsert_service(service("empty", "10.43.0.11", json!({})));
    p.upsert_service(service("two", "10.43.0.12", json!({})));
    p.upsert_slice(slice("two", &["10.42.0.5", "10.42.0.6"], 8080));
    p.upsert_service(service(
        "sticky",
        "10.43.0.13",
        json!({"sessionAffinity": "ClientIP"}),
    ));
    p.upsert_slice(slice("sticky", &["10.42.0.5", "10.42.0.6"], 8080));
    sync(&mut p, &nft);

    // Two endpoints: numgen spreads new connections over both.
    let seen = node.run(|| {
        (0..30)
            .map(|_| fetch("10.43.0.12:80".parse().unwrap()).unwrap())
            .collect::<std::collections::BTreeSet<String>>()
    });
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Session affinity: every connection of this client goes where the first went.
    let seen = node.run(|| {
        (0..30)
            .map(|_| fetch("10.43.0.13:80".parse().unwrap()).unwrap())
            .collect::<std::collections::BTreeSet<String>>()
    });
    assert_eq!(seen.len(), 1, "{seen:?}");

    let got = node.run(|| fetch("10.43.0.10:80".parse().unwrap()));
    assert_eq!(got.unwrap(), "hello from 10.42.0.5:8080");
    // Hairpin: the pod reaches itself through its Service. The node forwards the DNATed
    // packet back to the pod, masqueraded; unmasqueraded, the pod would answer itself
    // directly and the connection would never complete. (ip_forward of the test's own
    // namespace, not the host's.)
    let st = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.name,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let got = pod.run(|| fetch("10.43.0.10:80".parse().unwrap()));
    assert_eq!(got.unwrap(), "hello from 10.42.0.5:8080");
    let got = node.run(|| fetch("192.168.77.1:30080".parse().unwrap()));
    assert_eq!(got.unwrap(), "hello from 10.42.0.5:8080");

    // No endpoints: refused at once, not a timeout.
    let started = Instant::now();
    let err = node
        .run(|| fetch("10.43.0.11:80".parse().unwrap()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The endpoint goes away: the Service now refuses too.
    p.delete_slice(&slice("web", &[], 8080));
    sync(&mut p, &nft);
    let err = node
        .run(|| fetch("10.43.0.10:80".parse().unwrap()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

/// Connects (3 s timeout) and reads everything the server says.
fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn stale_udp_conntrack_entries_are_deleted_when_the_endpoint_goes() {
    let node = NetNs::new();
    // No dummy driver here: one end of a veth pair stands in for the pod link.
    ip(&[
        "-n", &node.name, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    ip(&["-n", &node.name, "link", "set", "d1", "up"]);
    ip(&["-n", &node.name, "addr", "add", "10.42.0.1/24", "dev", "d0"]);
    ip(&["-n", &node.name, "link", "set", "d0", "up"]);
    ip(&[
        "-n",
        &node.name,
        "route",
        "add",
        "10.43.0.0/16",
        "dev",
        "d0",
    ]);
    let c = cfg(&node);
    let nft = Nft {
        netns: c.netns.clone(),
    };
    let mut p = Proxier::new(c.clone());
    let udp = json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]});
    p.upsert_service(service("dns", "10.43.0.20", udp));
    let dns_slice = |ips: &[&str]| -> EndpointSlice {
        let mut s = slice("dns", ips, 5353);
        s.ports = Some(vec![serde_json::from_value(
            json!({"name": "dns", "port": 5353, "protocol": "UDP"}),
        )
        .unwrap()]);
        s
    };
    p.upsert_slice(dns_slice(&["10.42.0.5", "10.42.0.6"]));
    sync(&mut p, &nft);

    // Clients send until both endpoints have flows (numgen picks per new flow).
    node.run(|| {
        for port in 40000..40040u16 {
            let s = std::net::UdpSocket::bind(("10.42.0.1", port)).unwrap();
            s.send_to(b"q", "10.43.0.20:53").unwrap();
        }
    });
    let replies_from = |ip: &str| -> usize {
        skiff_net::proxy::conntrack::list(c.netns.as_deref())
            .unwrap()
            .iter()
            .filter(|(o, r)| o.dst.to_string() == "10.43.0.20" && r.src.to_string() == ip)
            .count()
    };
    assert!(replies_from("10.42.0.5") > 0);
    assert!(replies_from("10.42.0.6") > 0);

    // 10.42.0.5 goes away: its flows are stale, the others stay.
    p.upsert_slice(dns_slice(&["10.42.0.6"]));
    let plan = p.plan();
    assert_eq!(plan.stale_udp.len(), 1);
    nft.apply(&plan.transaction).unwrap();
    let deleted =
        skiff_net::proxy::conntrack::delete_udp_flows(c.netns.as_deref(), &plan.stale_udp).unwrap();
    p.commit(plan);
    assert!(deleted > 0);
    assert_eq!(replies_from("10.42.0.5"), 0);
    assert!(replies_from("10.42.0.6") > 0);
}
