//! Cascading deletion and namespace deletion through kubectl, with the in-process
//! controller manager (garbage collector, namespace controller, deployment and replica
//! set controllers) and pods on hollow nodes, which finish their graceful deletions.

use crate::cluster::{running_ready, Cluster};
use crate::common::eventually;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

/// Names (`kind/name`) that `kubectl get KINDS -l SELECTOR -o name` lists in `ns`.
fn names(c: &Cluster, kinds: &str, selector: &str, ns: &str) -> Vec<String> {
    c.kubectl(&["get", kinds, "-l", selector, "-n", ns, "-o", "name"])
        .ok()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

fn running(c: &Cluster, n: usize) {
    eventually(&format!("{n} running pods"), || {
        let pods = c.pods("app=web");
        (pods.len() == n && pods.iter().all(running_ready)).then_some(())
    });
}

per_version!(
    cascading_deletion_in_all_three_modes,
    namespace_deletion_empties_it
);

fn cascading_deletion_in_all_three_modes(kubectl: &'static str) {
    let c = Cluster::start(kubectl);
    let _h = c.hollow(2, "gc-");
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=registry.example/app:1",
        "--replicas=3",
    ])
    .ok();
    running(&c, 3);

    // Orphan: the deployment goes; its ReplicaSet and pods stay, no longer owned.
    c.kubectl(&["delete", "deployment", "web", "--cascade=orphan"])
        .ok();
    c.kubectl(&["get", "deployment", "web"]).fails();
    let rs = json(
        &c.kubectl(&["get", "rs", "-l", "app=web", "-o", "json"])
            .ok()
            .stdout,
    );
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{rs}");
    assert!(
        items[0]["metadata"].get("ownerReferences").is_none(),
        "orphaned ReplicaSet keeps no owner reference: {}",
        items[0]
    );
    let rs_name = items[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(c.pods("app=web").len(), 3);

    // Foreground: kubectl returns once the ReplicaSet is gone, which is after its pods
    // (they block it) have been finished by their hollow nodes.
    c.kubectl(&["delete", "rs", &rs_name, "--cascade=foreground"])
        .ok();
    c.kubectl(&["get", "rs", &rs_name]).fails();
    assert!(c.pods("app=web").is_empty(), "{:?}", c.pods("app=web"));

    // Background (the default): the owner goes at once, the collector removes the rest.
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=registry.example/app:1",
        "--replicas=2",
    ])
    .ok();
    running(&c, 2);
    c.kubectl(&["delete", "deployment", "web"]).ok();
    eventually("the ReplicaSet and pods to be collected", || {
        names(&c, "rs,pods", "app=web", "default")
            .is_empty()
            .then_some(())
    });
}

fn namespace_deletion_empties_it(kubectl: &'static str) {
    let c = Cluster::start(kubectl);
    let _h = c.hollow(2, "ns-");
    c.kubectl(&["create", "namespace", "doomed"]).ok();
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "-n",
        "doomed",
        "--image=registry.example/app:1",
        "--replicas=2",
    ])
    .ok();
    c.kubectl(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .ok();
    c.kubectl(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .ok();
    c.kubectl(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "doomed",
        "--tcp=80:8080",
    ])
    .ok();
    c.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "doomed",
        "--timeout=60s",
    ])
    .ok();

    // kubectl waits until the namespace is gone: emptied by the namespace controller
    // (pods finished by their hollow nodes), then finalized.
    c.kubectl(&["delete", "namespace", "doomed"]).ok();
    let e = c.kubectl(&["get", "namespace", "doomed"]).fails();
    assert!(e.stderr.contains("not found"), "{e:?}");
    let left = c
        .kubectl(&[
            "get",
            "deploy,rs,pods,cm,secrets,svc",
            "-n",
            "doomed",
            "-o",
            "name",
        ])
        .ok();
    assert_eq!(left.stdout, "");
}
