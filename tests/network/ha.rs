//! A highly available control plane: `skiff dev cluster --servers 3 --etcd` (three
//! servers on a real 3-member etcd, agents given every server). Every server answers with
//! one kubeconfig (one CA); killing (-9) the server that leads the controller manager and
//! the scheduler moves both Leases to a live server within 15 s, and the cluster goes on:
//! the agents (whose load balancer used the dead server) keep their nodes Ready, scaling
//! works, no pod is lost, Service ClusterIPs stay unique.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::cluster::Cluster;
use crate::common::{kubectl_path, run, Out};

/// The servers of the cluster: (name, host:port), from cluster.json.
fn servers(c: &Cluster) -> Vec<(String, String)> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("cluster.json")).unwrap()).unwrap();
    state["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// kubectl with the cluster's one admin kubeconfig, against server `addr`.
fn k_at(c: &Cluster, addr: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(kubectl_path("1.33"));
    cmd.arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args([
            "--request-timeout",
            "5s",
            "--server",
            &format!("https://{addr}"),
        ])
        .args(args);
    run(cmd, None)
}

/// The leases (`kube-controller-manager`, `kube-scheduler`) server `addr`'s own
/// components lead, from its `leader_election_master_status` gauge.
fn leading(c: &Cluster, addr: &str) -> BTreeSet<String> {
    k_at(c, addr, &["get", "--raw", "/metrics"])
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("leader_election_master_status{name=\""))
        .filter_map(|l| l.strip_suffix("\"} 1"))
        .map(str::to_string)
        .collect()
}

fn holder(c: &Cluster, addr: &str, lease: &str) -> String {
    k_at(
        c,
        addr,
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    )
    .stdout
    .trim()
    .to_string()
}

/// `name uid phase node` of the kubia pods, through server `addr`.
fn pods(c: &Cluster, addr: &str) -> BTreeSet<String> {
    k_at(
        c,
        addr,
        &[
            "get",
            "pods",
            "-l",
            "app=ha",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.phase} {.spec.nodeName}{\"\\n\"}{end}",
        ],
    )
    .ok()
    .stdout
    .lines()
    .map(str::to_string)
    .collect()
}

fn cluster_ips(c: &Cluster, addr: &str) -> Vec<String> {
    k_at(
        c,
        addr,
        &[
            "get",
            "svc",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}",
        ],
    )
    .ok()
    .stdout
    .lines()
    .filter(|l| !l.is_empty() && *l != "None")
    .map(str::to_string)
    .collect()
}

fn service(c: &Cluster, addr: &str, name: &str) {
    k_at(
        c,
        addr,
        &["create", "service", "clusterip", name, "--tcp=80:8080"],
    )
    .ok();
}

#[test]
fn killing_the_leading_server_moves_the_leases_and_loses_nothing() {
    let c = Cluster::start_with(2, &["--servers", "3", "--etcd"]);
    let servers = servers(&c);
    let etcd_pids: Vec<u64> = {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(c.dir.join("cluster.json")).unwrap()).unwrap();
        state["etcd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["pid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(etcd_pids.len(), 3, "a 3-member etcd");
    let dir = c.dir.clone();
    assert_eq!(servers.len(), 3);
    // One CA: the first server's kubeconfig works against every server, and each
    // server's own kubeconfig carries the same CA.
    let ca_of = |name: &str| {
        let kc = std::fs::read_to_string(c.dir.join(format!("kubeconfig-{name}.yaml"))).unwrap();
        kc.lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .unwrap()
            .to_string()
    };
    for (name, addr) in &servers {
        assert_eq!(ca_of(name), ca_of(&servers[0].0), "{name}'s CA");
        let nodes = k_at(&c, addr, &["get", "nodes", "-o", "name"]).ok();
        assert_eq!(nodes.stdout.lines().count(), 2, "{name}: {nodes:?}");
    }

    c.kubia("ha", 2);
    c.wait("2 ready replicas", 90, || {
        (c.ready_replicas("ha") == Some(2)).then_some(())
    });
    service(&c, &servers[1].1, "ha-before");

    // The server whose components lead (both leases, most likely on the first server
    // started; the agents' load balancers also use it first).
    let cm = "kube-controller-manager";
    let leader = c.wait("a server leading the controller manager", 30, || {
        servers
            .iter()
            .position(|(_, addr)| leading(&c, addr).contains(cm))
    });
    let live: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let survivor = &servers[live[0]].1;
    let before = pods(&c, survivor);
    assert_eq!(before.len(), 2, "{before:?}");
    let held: Vec<String> = [cm, "kube-scheduler"]
        .iter()
        .map(|l| holder(&c, survivor, l))
        .collect();
    eprintln!(
        "{} leads {:?}",
        servers[leader].0,
        leading(&c, &servers[leader].1)
    );

    c.dev(&["stop-server", &servers[leader].0]).ok();
    let killed = Instant::now();
    // The controller manager's Lease moves to a live server (and whichever lease the
    // dead server held).
    let moved = loop {
        let now: Vec<String> = [cm, "kube-scheduler"]
            .iter()
            .map(|l| holder(&c, survivor, l))
            .collect();
        let led_by_live: BTreeSet<String> = live
            .iter()
            .flat_map(|&i| leading(&c, &servers[i].1))
            .collect();
        if now[0] != held[0] && led_by_live.contains(cm) && led_by_live.contains("kube-scheduler") {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the leases did not move within 15 s: holders {now:?} (before {held:?}); live servers lead {led_by_live:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("the leases moved {moved:?} after the leader was killed");

    // If the agents' first server is still up, kill it too: the agents then certainly
    // fail over through their load balancers.
    let mut down = vec![leader];
    if leader != 0 {
        c.dev(&["stop-server", &servers[0].0]).ok();
        down.push(0);
    }
    let live: Vec<&str> = (0..3)
        .filter(|i| !down.contains(i))
        .map(|i| servers[i].1.as_str())
        .collect();
    let at = live[0];
    let ha_at = |args: &[&str]| k_at(&c, at, args).ok();

    // The controllers and the scheduler act: one more replica is made, bound and runs.
    ha_at(&["scale", "deploy", "ha", "--replicas", "3"]);
    c.wait("3 ready replicas after the failover", 90, || {
        let ready = k_at(
            &c,
            at,
            &[
                "get",
                "deploy",
                "ha",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
        );
        (ready.stdout.trim() == "3").then_some(())
    });
    // No pod was lost or replaced.
    let after = pods(&c, at);
    assert!(
        before.is_subset(&after),
        "before {before:?}, after {after:?}"
    );
    assert_eq!(after.len(), 3, "{after:?}");

    // Allocations continue from the stored state: no ClusterIP given twice.
    service(&c, at, "ha-after");
    let ips = cluster_ips(&c, at);
    let unique: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "a ClusterIP given twice: {ips:?}");

    // The agents heartbeat through their load balancers: each node's Lease is renewed
    // after the kill, and the nodes stay Ready.
    c.wait(
        "both nodes' leases renewed through a live server",
        60,
        || {
            let renewed = k_at(
                &c,
                at,
                &[
                    "get",
                    "lease",
                    "-n",
                    "kube-node-lease",
                    "-o",
                    "jsonpath={range .items[*]}{.spec.renewTime}{\"\\n\"}{end}",
                ],
            );
            let times: Vec<Timestamp> = renewed
                .stdout
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            let since = Timestamp::now() - killed.elapsed();
            (times.len() == 2 && times.iter().all(|t| *t > since)).then_some(())
        },
    );
    let nodes = ha_at(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        nodes
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count(),
        2,
        "{nodes:?}"
    );
    for i in 1..=2 {
        let log =
            std::fs::read_to_string(c.dir.join(format!("nodes/skiff-node-{i}/agent.log"))).unwrap();
        assert!(
            log.contains("is unreachable; using"),
            "node {i}'s agent never switched servers:\n{log}"
        );
    }

    // `down` (the cluster's drop) stops etcd by pid and removes its data with the rest.
    drop(c);
    for pid in etcd_pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()),
            "etcd {pid} still runs"
        );
    }
    assert!(!dir.exists(), "{} is left", dir.display());
}

/// Bad HA input is refused before anything starts, naming what is wrong.
#[test]
fn bad_server_lists_and_servers_without_etcd_are_refused() {
    let mut a = Command::new(crate::common::SKIFF);
    a.args([
        "agent",
        "--server",
        "https://127.0.0.1:1,https//oops",
        "--token",
        "x",
    ]);
    let o = run(a, None);
    assert!(
        o.code != 0
            && o.stderr.contains("\"https//oops\"")
            && o.stderr.contains("https://HOST:PORT"),
        "{o:?}"
    );
    let work = tempfile::tempdir().unwrap();
    let mut d = Command::new(crate::common::SKIFF);
    d.args(["dev", "cluster", "--servers", "3", "--data-dir"])
        .arg(work.path().join("c"));
    let o = run(d, None);
    assert!(
        o.code != 0 && o.stderr.contains("--servers 3") && o.stderr.contains("add --etcd"),
        "{o:?}"
    );
    assert!(!work.path().join("c").exists(), "nothing is made");
}
