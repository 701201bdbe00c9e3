//! Graceful pod deletion, Service address allocation shared through the store, and the
//! `kubernetes` Service's endpoints, driven with real kubectl (1.27 and 1.33) and curl.

use std::collections::HashSet;

use skiff_store::testing::EtcdCluster;

use crate::common::{eventually, Server};

const BOUND_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"g1"},
 "spec":{"nodeName":"n1","terminationGracePeriodSeconds":120,"containers":[{"name":"c","image":"busybox"}]}}"#;

fn pod_field(s: &Server, v: &str, name: &str, path: &str) -> String {
    s.kubectl(
        v,
        &["get", "pod", name, "-o", &format!("jsonpath={{{path}}}")],
    )
    .ok()
    .stdout
}

/// A bound pod lingers with a deletionTimestamp until its kubelet deletes it with grace
/// 0; `kubectl delete` waits for that; an unbound pod and `--force` go at once.
fn graceful_delete(v: &str) {
    let s = Server::start();
    s.kubectl_with(v, &["create", "-f", "-"], Some(BOUND_POD), &[])
        .ok();
    s.kubectl(v, &["delete", "pod", "g1", "--wait=false"]).ok();
    assert!(!pod_field(&s, v, "g1", ".metadata.deletionTimestamp").is_empty());
    assert_eq!(
        pod_field(&s, v, "g1", ".metadata.deletionGracePeriodSeconds"),
        "120"
    );
    // A second delete may shorten the grace period, never lengthen it.
    s.kubectl(
        v,
        &["delete", "pod", "g1", "--wait=false", "--grace-period=300"],
    )
    .ok();
    assert_eq!(
        pod_field(&s, v, "g1", ".metadata.deletionGracePeriodSeconds"),
        "120"
    );
    s.kubectl(
        v,
        &["delete", "pod", "g1", "--wait=false", "--grace-period=60"],
    )
    .ok();
    assert_eq!(
        pod_field(&s, v, "g1", ".metadata.deletionGracePeriodSeconds"),
        "60"
    );
    // Status updates (what a kubelet writes while stopping containers) keep it.
    let o = s.curl(
        "PATCH",
        "/api/v1/namespaces/default/pods/g1/status",
        &[
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            r#"{"status":{"phase":"Running"}}"#,
        ],
    );
    assert_eq!(o.http().0, 200, "{o:?}");
    // `kubectl delete` (waiting) returns once the kubelet's grace-0 delete lands.
    // Its delete request is in the audit log once the server has answered it.
    let deletes = || {
        std::fs::read_to_string(s.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains(r#""verb":"delete""#) && l.contains(r#""stage":"ResponseComplete""#)
            })
            .count()
    };
    let before = deletes();
    let mut waiting = s.kubectl_command(v, &["delete", "pod", "g1", "--timeout=60s"]);
    let waiting = waiting
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kubectl delete");
    eventually("kubectl's delete request", || {
        (deletes() > before).then_some(())
    });
    let o = s.curl(
        "DELETE",
        "/api/v1/namespaces/default/pods/g1?gracePeriodSeconds=0",
        &[],
    );
    assert_eq!(o.http().0, 200, "{o:?}");
    let out = waiting.wait_with_output().expect("kubectl delete");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pod \"g1\" deleted"),
        "{out:?}"
    );
    s.kubectl(v, &["get", "pod", "g1"]).fails();
    // Forced: gone at once.
    s.kubectl_with(v, &["create", "-f", "-"], Some(BOUND_POD), &[])
        .ok();
    s.kubectl(v, &["delete", "pod", "g1", "--grace-period=0", "--force"])
        .ok();
    s.kubectl(v, &["get", "pod", "g1"]).fails();
    // Never bound: nothing to stop, gone at once.
    s.kubectl(v, &["run", "u1", "--image=busybox"]).ok();
    s.kubectl(v, &["delete", "pod", "u1", "--wait=false"]).ok();
    s.kubectl(v, &["get", "pod", "u1"]).fails();
}

/// Addresses come from the configured ranges; a taken or out-of-range request gets
/// Kubernetes' message; a deleted Service's addresses are free again.
fn service_addresses(v: &str) {
    let s = Server::start_with(&[
        "--service-cluster-ip-range",
        "10.96.0.0/28",
        "--service-node-port-range",
        "31000-31001",
    ]);
    let ip = s
        .kubectl(
            v,
            &[
                "get",
                "svc",
                "kubernetes",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(ip, "10.96.0.1", "the first address of the range");
    let e = s
        .kubectl(
            v,
            &[
                "create",
                "service",
                "clusterip",
                "dup",
                "--tcp=80",
                "--clusterip=10.96.0.1",
            ],
        )
        .fails();
    assert!(e.stderr.contains("spec.clusterIPs: Invalid value: []string{\"10.96.0.1\"}: failed to allocate IP 10.96.0.1: provided IP is already allocated"), "{e:?}");
    let e = s
        .kubectl(
            v,
            &[
                "create",
                "service",
                "clusterip",
                "out",
                "--tcp=80",
                "--clusterip=10.43.0.9",
            ],
        )
        .fails();
    assert!(e.stderr.contains("provided IP (10.43.0.9) is not in the valid range. The range of valid IPs is 10.96.0.0/28"), "{e:?}");
    let e = s
        .kubectl(
            v,
            &[
                "create",
                "service",
                "nodeport",
                "np",
                "--tcp=80",
                "--node-port=30000",
            ],
        )
        .fails();
    assert!(e.stderr.contains("spec.ports[0].nodePort: Invalid value: 30000: provided port is not in the valid range. The range of valid ports is 31000-31001"), "{e:?}");
    s.kubectl(v, &["create", "service", "nodeport", "a", "--tcp=80"])
        .ok();
    s.kubectl(v, &["create", "service", "nodeport", "b", "--tcp=80"])
        .ok();
    let e = s
        .kubectl(v, &["create", "service", "nodeport", "c", "--tcp=80"])
        .fails();
    assert!(e.stderr.contains("range is full"), "{e:?}");
    let port_a = s
        .kubectl(
            v,
            &[
                "get",
                "svc",
                "a",
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
        )
        .ok()
        .stdout;
    s.kubectl(v, &["delete", "svc", "a"]).ok();
    s.kubectl(v, &["create", "service", "nodeport", "c", "--tcp=80"])
        .ok();
    let port_c = s
        .kubectl(
            v,
            &[
                "get",
                "svc",
                "c",
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(port_c, port_a, "the deleted Service's port was released");
    // Turning a NodePort Service into a ClusterIP one releases its port.
    s.kubectl(v, &["patch", "svc", "c", "-p", r#"{"spec":{"type":"ClusterIP","ports":[{"port":80,"targetPort":80,"protocol":"TCP","name":"80","nodePort":null}]}}"#])
        .ok();
    s.kubectl(v, &["create", "service", "nodeport", "d", "--tcp=80"])
        .ok();
}

per_version!(graceful_delete, service_addresses);

/// Two servers on one etcd create Services concurrently: no ClusterIP or NodePort is
/// handed out twice, and both servers are the `kubernetes` Service's endpoints.
#[test]
fn two_servers_on_one_etcd_never_share_an_address() {
    let etcd = EtcdCluster::start(1).expect("start etcd");
    let endpoints = etcd.endpoints().join(",");
    let servers = [
        Server::start_with(&["--datastore-endpoint", &endpoints]),
        Server::start_with(&["--datastore-endpoint", &endpoints]),
    ];
    std::thread::scope(|scope| {
        for (i, s) in servers.iter().enumerate() {
            for w in 0..3 {
                scope.spawn(move || {
                    for n in 0..15 {
                        let name = format!("s{i}-{w}-{n}");
                        s.kubectl(
                            "1.33",
                            &["create", "service", "nodeport", &name, "--tcp=80"],
                        )
                        .ok();
                    }
                });
            }
        }
    });
    let list = servers[0]
        .kubectl(
            "1.33",
            &["get", "svc", "-o", r#"jsonpath={range .items[*]}{.spec.clusterIP} {.spec.ports[0].nodePort}{"\n"}{end}"#],
        )
        .ok()
        .stdout;
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for line in list.lines() {
        let (ip, port) = line.split_once(' ').expect("ip and port");
        assert!(
            ips.insert(ip.to_string()),
            "ClusterIP {ip} given twice:\n{list}"
        );
        if !port.is_empty() {
            assert!(
                ports.insert(port.to_string()),
                "NodePort {port} given twice:\n{list}"
            );
        }
    }
    assert_eq!(ips.len(), 91, "90 Services and kubernetes:\n{list}");
    let want: HashSet<String> = servers
        .iter()
        .map(|s| s.url.trim_start_matches("https://").to_string())
        .collect();
    eventually("both servers in the kubernetes endpoints", || {
        let eps = servers[1]
            .kubectl(
                "1.33",
                &[
                    "get",
                    "endpoints",
                    "kubernetes",
                    "-o",
                    r#"jsonpath={range .subsets[*]}{.addresses[0].ip}:{.ports[0].port}{"\n"}{end}"#,
                ],
            )
            .ok()
            .stdout;
        let got: HashSet<String> = eps.lines().map(str::to_string).collect();
        (got == want).then_some(())
    });
}
