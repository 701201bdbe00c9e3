//! `skiff hollow-nodes` against a real server: its nodes register Ready, the scheduler
//! binds pods to them and they report the pods Running; a graceful delete finishes; one
//! node fails and recovers on command; bad flags end it with a clear message.

use std::process::Command;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::cluster::{running_ready, Cluster};
use crate::common::{eventually, SKIFF};

fn renew_time(c: &Cluster, node: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let api: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let l = c.rt.block_on(api.get_opt(node)).expect("read the lease")?;
    l.spec?.renew_time.map(|t| t.0)
}

per_version!(hollow_nodes_run_pods_and_fail_on_command);

fn hollow_nodes_run_pods_and_fail_on_command(kubectl: &'static str) {
    let c = Cluster::start(kubectl);
    let mut h = c.hollow(2, "hn-");
    let nodes = c.kubectl(&["get", "nodes", "--no-headers"]).ok().stdout;
    assert_eq!(nodes.lines().count(), 2, "{nodes}");
    assert!(nodes.lines().all(|l| l.contains(" Ready ")), "{nodes}");

    c.kubectl(&["run", "web", "--image=registry.example/app:1"])
        .ok();
    let p = eventually("web Running and Ready", || {
        c.pods("run=web").into_iter().find(running_ready)
    });
    let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
    assert!(h.names.contains(&node), "bound to {node}");
    let ip: std::net::Ipv4Addr = p.status.unwrap().pod_ip.unwrap().parse().unwrap();
    assert_eq!(ip.octets()[0], 10);
    let wide = c.kubectl(&["get", "pod", "web", "-o", "wide"]).ok().stdout;
    assert!(wide.contains("1/1") && wide.contains("Running"), "{wide}");
    // kubectl waits until the pod is gone: the hollow kubelet finishes the deletion.
    c.kubectl(&["delete", "pod", "web", "--timeout=20s"]).ok();

    assert_eq!(h.command("fail hn-0"), "failed hn-0");
    assert_eq!(h.command("fail nope"), "unknown node nope");
    let silent = eventually("hn-0's Lease", || renew_time(&c, "hn-0"));
    // Two renewals of the live node span at least one renew interval of the failed one.
    for _ in 0..2 {
        let t = renew_time(&c, "hn-1").unwrap();
        eventually("hn-1's Lease to be renewed", || {
            (renew_time(&c, "hn-1")? > t).then_some(())
        });
    }
    assert_eq!(
        renew_time(&c, "hn-0"),
        Some(silent),
        "a failed node renewed"
    );
    assert_eq!(h.command("recover hn-0"), "recovered hn-0");
    eventually("hn-0's Lease to be renewed again", || {
        (renew_time(&c, "hn-0")? > silent).then_some(())
    });
}

#[test]
fn hollow_nodes_refuse_bad_flags_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(SKIFF);
        c.arg("hollow-nodes").args(args);
        crate::common::run(c, None)
    };
    let missing = dir.path().join("nope.yaml");
    let out = run(&["--kubeconfig", missing.to_str().unwrap(), "--count", "3"]).fails();
    assert!(
        out.stderr.contains("read the kubeconfig") && out.stderr.contains("nope.yaml"),
        "{out:?}"
    );
    let out = run(&["--kubeconfig", "k", "--count", "0"]).fails();
    assert!(out.stderr.contains("--count must be at least 1"), "{out:?}");
    let out = run(&["--kubeconfig", "k", "--count", "1", "--memory", "lots"]).fails();
    assert!(
        out.stderr.contains("--memory \"lots\" is not a quantity"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}
