//! Leader election of the controller manager: two standalone `skiff controller-manager
//! --leader-elect` processes against a `--disable-controller-manager` server (only the
//! leader acts, the audit log telling them apart by user agent; the other takes over when
//! the leader is killed), and the server's own controller manager (its Lease and gauge).

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::common::{eventually, http_get, standalone, Standalone, SKIFF, VERSIONS};

const LEASE: &str = "kube-controller-manager";

fn holder(c: &Cluster) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    c.rt.block_on(api.get_opt(LEASE))
        .expect("read the lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn gauge(s: &Standalone) -> String {
    http_get(&format!("{}/metrics", s.metrics))
        .lines()
        .find(|l| l.starts_with("leader_election_master_status{name=\"kube-controller-manager\"}"))
        .unwrap_or_default()
        .to_string()
}

fn audit_lines(c: &Cluster) -> Vec<Value> {
    std::fs::read_to_string(c.server.dir.path().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Who created pods in namespace default (user agents of the audited creates, oldest
/// first), once `n` were.
fn pod_creators(c: &Cluster, n: usize) -> Vec<String> {
    eventually(&format!("{n} pods created"), || {
        let agents: Vec<String> = audit_lines(c)
            .into_iter()
            .filter(|e| {
                e["verb"] == "create"
                    && e["objectRef"]["resource"] == "pods"
                    && e["objectRef"]["subresource"].is_null()
                    && e["responseStatus"]["code"] == 201
                    && e["requestURI"]
                        .as_str()
                        .is_some_and(|u| u.contains("/namespaces/default/"))
            })
            .filter_map(|e| e["userAgent"].as_str().map(str::to_string))
            .collect();
        (agents.len() >= n).then_some(agents)
    })
}

fn replica_set(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    })
}

/// Two controller managers against one server: only the leader acts (the audit log names
/// the process through its user agent); when it is killed, the other takes over.
#[test]
fn of_two_standalone_controller_managers_only_the_leader_acts_and_the_other_takes_over() {
    let c = Cluster::start_with(VERSIONS[0], &["--disable-controller-manager"]);
    let mut s = [
        standalone("controller-manager", &c.server.kubeconfig()),
        standalone("controller-manager", &c.server.kubeconfig()),
    ];
    let ids: Vec<String> = s.iter().map(|s| s.identity.clone()).collect();
    let leader = eventually("a leader", || holder(&c));
    let li = ids
        .iter()
        .position(|i| *i == leader)
        .unwrap_or_else(|| panic!("lease held by {leader}, not one of {ids:?}"));
    eventually("the leader's gauge at 1", || {
        gauge(&s[li]).ends_with(" 1").then_some(())
    });
    assert!(gauge(&s[1 - li]).ends_with(" 0"), "{}", gauge(&s[1 - li]));

    c.create(&replica_set("first", 2));
    let agents = pod_creators(&c, 2);
    assert!(
        agents
            .iter()
            .all(|a| a.contains(&ids[li]) && a.starts_with("kube-controller-manager/")),
        "pods created by {agents:?}, not only the leader {}",
        ids[li]
    );
    let by_follower = audit_lines(&c).into_iter().find(|e| {
        e["userAgent"]
            .as_str()
            .is_some_and(|u| u.contains(&ids[1 - li]))
            && e["objectRef"]["resource"] != "leases"
    });
    assert_eq!(by_follower, None, "the follower did more than campaign");

    // SIGKILL: no release; the survivor waits out the lease (15 s from the last renewal
    // it saw), plus a request or two.
    s[li].child.kill().unwrap();
    s[li].child.wait().unwrap();
    let start = Instant::now();
    while holder(&c).as_deref() != Some(ids[1 - li].as_str()) {
        assert!(
            start.elapsed() < Duration::from_secs(16),
            "the survivor did not take over within 16 s; holder {:?}",
            holder(&c)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "the survivor took over {:?} after the leader was killed",
        start.elapsed()
    );
    c.create(&replica_set("second", 1));
    // The first two are the first ReplicaSet's (the survivor found them in place).
    let agents = pod_creators(&c, 3);
    assert!(
        agents[2..].iter().all(|a| a.contains(&ids[1 - li])),
        "{agents:?}"
    );
    let survivor = &s[1 - li];
    assert_eq!(http_get(&format!("{}/healthz", survivor.metrics)), "ok");
    eventually("the survivor's gauge at 1", || {
        gauge(survivor).ends_with(" 1").then_some(())
    });

    // SIGTERM: it stops, releases the Lease and exits 0.
    let term = Command::new("kill")
        .args(["-TERM", &s[1 - li].child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = s[1 - li].child.wait().unwrap();
    assert!(
        exit.success(),
        "skiff controller-manager exits 0 after SIGTERM: {exit:?}"
    );
    assert_eq!(holder(&c), None, "the Lease was not released");
}

/// The server's own controller manager holds its Lease and reports leading on /metrics.
#[test]
fn the_in_server_controller_manager_leads_its_lease() {
    let c = Cluster::start(VERSIONS[1]);
    eventually("the in-server controller manager to hold its Lease", || {
        holder(&c)
    });
    let metrics = c.server.curl("GET", "/metrics", &[]).ok().stdout;
    for lease in ["kube-scheduler", "kube-controller-manager"] {
        assert!(
            metrics.contains(&format!(
                "leader_election_master_status{{name=\"{lease}\"}} 1"
            )),
            "{metrics}"
        );
    }
    assert_eq!(
        metrics
            .matches("# TYPE leader_election_master_status")
            .count(),
        1,
        "{metrics}"
    );
    assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
}

/// Bad flags and an unreadable kubeconfig end the command with a clear message.
#[test]
fn the_standalone_controller_manager_refuses_bad_flags_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(SKIFF);
        c.arg("controller-manager").args(args);
        crate::common::run(c, None)
    };
    let missing = dir.path().join("nope.yaml");
    let out = run(&["--kubeconfig", missing.to_str().unwrap()]).fails();
    assert!(
        out.stderr.contains("read the kubeconfig") && out.stderr.contains("nope.yaml"),
        "{out:?}"
    );
    let out = run(&["--kubeconfig", "k", "--controllers", "*,-nope"]).fails();
    assert!(
        out.stderr.contains("unknown controller \"-nope\""),
        "{out:?}"
    );
    let out = run(&["--kubeconfig", "k", "--node-monitor-grace-period", "40 s"]).fails();
    assert!(out.stderr.contains("is not a duration"), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}
