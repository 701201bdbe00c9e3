//! Step 9 of the seed's story on `skiff dev cluster --nodes 3`: pods that must run
//! together land on one node, pods that must be apart spread over the three; one node
//! stopped, its pods are recreated on the others while the Service keeps answering from
//! the survivors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;

fn deployment(name: &str, replicas: u32, affinity: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
{affinity}      containers:
      - name: c
        image: kubia:1
        imagePullPolicy: Never
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /cgi-bin/ready, port: 8080}}
          periodSeconds: 1
"#
    )
}

/// Pod name → node name, of the Running pods of `app` that are not being deleted (a
/// pod evicted from a dead node stays Running, and Terminating, until its node returns).
fn placement(c: &Cluster, app: &str) -> BTreeMap<String, String> {
    c.k(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])
    .stdout
    .lines()
    .filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 2).then(|| (f[0].to_string(), f[1].to_string()))
    })
    .collect()
}

#[test]
fn three_nodes_colocate_spread_and_survive_a_node_failure() {
    let c = Cluster::start_with(
        3,
        &[
            "--server-arg=--node-monitor-grace-period=8s",
            "--server-arg=--default-unreachable-toleration-seconds=2",
            "--server-arg=--default-not-ready-toleration-seconds=2",
        ],
    );
    let hostname = "topologyKey: kubernetes.io/hostname";
    // Apart: required anti-affinity to each other.
    c.apply(&deployment(
        "apart",
        3,
        &format!(
            "      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {{matchLabels: {{app: apart}}}}\n            {hostname}\n"
        ),
    ));
    // Together: a db, and two caches that must sit on its node.
    c.apply(&deployment("db", 1, ""));
    c.wait("db ready", 90, || {
        (c.ready_replicas("db") == Some(1)).then_some(())
    });
    c.apply(&deployment(
        "cache",
        2,
        &format!(
            "      affinity:\n        podAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {{matchLabels: {{app: db}}}}\n            {hostname}\n"
        ),
    ));
    c.wait("apart and cache ready", 90, || {
        (c.ready_replicas("apart") == Some(3) && c.ready_replicas("cache") == Some(2)).then_some(())
    });
    let apart: BTreeSet<String> = placement(&c, "apart").into_values().collect();
    assert_eq!(apart.len(), 3, "the apart pods share nodes: {apart:?}");
    let db_node = placement(&c, "db").into_values().next().unwrap();
    let cache = placement(&c, "cache");
    assert!(
        cache.values().all(|n| *n == db_node),
        "caches not on the db's node {db_node}: {cache:?}"
    );
    c.k(&["delete", "deploy", "apart", "cache", "db"]).ok();

    // A node fails: kubia's pods there come back on the others; the Service answers
    // throughout from the survivors.
    c.apply(&deployment("kubia", 4, ""));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: kubia}\nspec:\n  selector: {app: kubia}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    c.wait("kubia ready", 90, || {
        (c.ready_replicas("kubia") == Some(4)).then_some(())
    });
    let before = placement(&c, "kubia");
    // The client stays on skiff-node-1; the node with most kubia pods of the other two
    // fails.
    c.client("client", "default", Some("skiff-node-1"));
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in before.values() {
        *per_node.entry(n.as_str()).or_default() += 1;
    }
    let victim = ["skiff-node-2", "skiff-node-3"]
        .into_iter()
        .max_by_key(|n| per_node.get(n).copied().unwrap_or(0))
        .unwrap();
    let lost: Vec<&String> = before
        .iter()
        .filter(|(_, n)| n.as_str() == victim)
        .map(|(p, _)| p)
        .collect();
    assert!(!lost.is_empty(), "no kubia pod on {victim}: {before:?}");
    c.dev(&["stop-node", victim]).ok();
    let t0 = Instant::now();
    let mut rounds = 0;
    loop {
        // Every round of requests is answered by somebody.
        let h = c.hits("default", "client", "http://kubia", 4);
        assert!(
            !h.is_empty(),
            "the Service answered nothing {:?} after {victim} stopped",
            t0.elapsed()
        );
        rounds += 1;
        let now = placement(&c, "kubia");
        let recreated = now.len() == 4
            && now.values().all(|n| n != victim)
            && c.ready_replicas("kubia") == Some(4);
        if recreated {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{victim}'s pods not recreated on the others in 90 s: {now:?}"
        );
    }
    assert!(rounds > 1);
    // The survivors answer, all four of them.
    let want: BTreeSet<String> = placement(&c, "kubia").into_keys().collect();
    c.wait("all 4 kubia pods answering", 30, || {
        (c.hits("default", "client", "http://kubia", 40) == want).then_some(())
    });
    let nodes = c.k(&["get", "node", victim, "--no-headers"]).ok().stdout;
    assert!(nodes.contains("NotReady"), "{nodes}");
}
