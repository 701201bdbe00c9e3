use crate::cluster::Cluster;

/// Without the counters, which move with traffic.
fn rules(c: &Cluster) -> String {
    let o = c
        .in_node(1, &["nft", "-a", "list", "table", "ip", "skiff-proxy"])
        .ok();
    o.stdout
        .lines()
        .map(|l| match l.find("counter packets") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn lines_got(c: &Cluster) -> usize {
    c.sh("sink", "wc -l < /tmp/got")
        .stdout
        .trim()
        .parse()
        .unwrap_or(0)
}

/// An agent killed and started again (`skiff dev cluster restart-node`) keeps the
/// service proxy's table exactly as it was (the same rules under the same handles, none
/// rebuilt) and breaks no established connection through a ClusterIP.
#[test]
fn an_agent_restart_keeps_the_rules_and_established_connections() {
    let c = Cluster::start(1);
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: sink, labels: {app: sink}}
spec:
  containers:
  - {name: c, image: 'kubia:1', imagePullPolicy: Never, command: [sh, -c, "tail -f /dev/null | nc -l -p 9000 > /tmp/got"]}
---
apiVersion: v1
kind: Service
metadata: {name: sink}
spec:
  selector: {app: sink}
  ports: [{port: 9000}]
"#,
    );
    c.wait("sink Running", 90, || {
        let o = c.k(&["get", "pod", "sink", "-o", "jsonpath={.status.phase}"]);
        (o.stdout == "Running").then_some(())
    });
    let ip = c
        .k(&["get", "svc", "sink", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .stdout;
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: ticker}}
spec:
  containers:
  - {{name: c, image: 'kubia:1', imagePullPolicy: Never, command: [sh, -c, "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done | nc {ip} 9000"]}}
"#
    ));
    c.wait("ticks through the ClusterIP", 60, || {
        (lines_got(&c) >= 3).then_some(())
    });
    let before = rules(&c);
    assert!(before.contains(ip.trim()), "{before}");

    let o = c.dev(&["restart-node", "skiff-node-1"]);
    assert_eq!(o.code, 0, "{o:?}");
    // The restarted proxy's first sync: done, and it wrote nothing.
    let metric = |m: &str| -> Option<f64> {
        let o = c.in_node(1, &["curl", "-s", "http://127.0.0.1:10249/metrics"]);
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix(m)?.strip_prefix(' ')?.trim().parse().ok())
    };
    c.wait("the restarted proxy's first sync", 60, || {
        metric("kubeproxy_sync_proxy_rules_last_timestamp_seconds").filter(|t| *t > 0.0)
    });
    assert_eq!(
        metric("kubeproxy_sync_proxy_rules_last_transaction_commands"),
        Some(0.0),
        "the restarted proxy rewrote its table"
    );
    assert_eq!(rules(&c), before, "the restarted agent rewrote rules");
    let at = lines_got(&c);
    c.wait("more ticks on the same connection", 30, || {
        (lines_got(&c) >= at + 5).then_some(())
    });
    for pod in ["sink", "ticker"] {
        let r = c
            .k(&[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ])
            .ok()
            .stdout;
        assert_eq!(r, "0", "{pod} restarted: its connection broke");
    }
}
