use crate::cluster::Cluster;

/// With `--flannel-backend vxlan` the nodes' pods reach each other through the VXLAN
/// devices (routes on-link over `skiff.vxlan`, MTU 50 bytes under the node's), by pod IP
/// and through a Service.
#[test]
fn vxlan_backend_carries_pod_traffic_between_two_nodes() {
    let c = Cluster::start_with(2, &["--flannel-backend", "vxlan"]);
    c.kubia("kubia", 2);
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: kubia}\nspec:\n  selector: {app: kubia}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    c.client("client", "default", Some("skiff-node-1"));
    c.wait("2 ready kubia replicas", 90, || {
        (c.ready_replicas("kubia") == Some(2)).then_some(())
    });
    for i in 1..=2 {
        let link = c.in_node(i, &["ip", "-d", "link", "show", "skiff.vxlan"]);
        assert!(
            link.stdout.contains("vxlan id 1") && link.stdout.contains("dstport 8472"),
            "node {i}: {link:?}"
        );
        let routes = c.in_node(i, &["ip", "route", "show", "proto", "95"]);
        let peer = if i == 1 { 2 } else { 1 };
        assert!(
            routes
                .stdout
                .lines()
                .any(|l| l.contains("dev skiff.vxlan") && l.contains("onlink")),
            "node {i} has no overlay route to node {peer}: {routes:?}"
        );
    }
    // A kubia pod pinned to node 2 answers the client on node 1 by its IP.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: far}\nspec:\n  nodeName: skiff-node-2\n  containers:\n  - {name: kubia, image: 'kubia:1', imagePullPolicy: Never}\n",
    );
    let far = c.wait("pod far with an IP", 90, || {
        let o = c.k(&[
            "get",
            "pod",
            "far",
            "-o",
            "jsonpath={.status.phase} {.status.podIP}",
        ]);
        o.stdout
            .strip_prefix("Running ")
            .map(|ip| ip.trim().to_string())
            .filter(|ip| !ip.is_empty())
    });
    let o = c.wait("node 1 -> node 2 over the overlay", 30, || {
        let o = c.sh("client", &format!("wget -qO- -T 3 http://{far}:8080"));
        o.stdout.contains("You've hit").then_some(o)
    });
    assert!(o.stdout.contains("far"), "{o:?}");
    let hit = c.wait("the Service to reach both pods", 30, || {
        let h = c.hits("default", "client", "http://kubia", 30);
        (h.len() == 2).then_some(h)
    });
    assert_eq!(hit.len(), 2);
}
