//! Deployments on hollow nodes: `kubectl create deployment` reaches its replicas Running
//! and Ready, `kubectl scale` follows, and `kubectl set image` rolls every pod to the new
//! image with `kubectl rollout status` reporting success.

use k8s_openapi::api::core::v1::Pod;

use crate::cluster::{running_ready, Cluster};
use crate::common::eventually;

/// The live (not terminating) pods of the deployment `web`.
fn live(c: &Cluster) -> Vec<Pod> {
    c.pods("app=web")
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[track_caller]
fn ready_pods(c: &Cluster, n: usize, image_tag: &str, hollow: &[String]) {
    let pods = eventually(&format!("{n} ready pods of {image_tag}"), || {
        let pods = live(c);
        (pods.len() == n
            && pods
                .iter()
                .all(|p| running_ready(p) && image(p).ends_with(image_tag)))
        .then_some(pods)
    });
    for p in &pods {
        let node = p
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .clone()
            .unwrap_or_default();
        assert!(
            hollow.contains(&node),
            "{} on {node}",
            p.metadata.name.as_deref().unwrap_or("")
        );
    }
}

per_version!(a_deployment_reaches_its_replicas_and_rolls_on_hollow_nodes);

fn a_deployment_reaches_its_replicas_and_rolls_on_hollow_nodes(kubectl: &'static str) {
    let c = Cluster::start(kubectl);
    let h = c.hollow(3, "dn-");
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=registry.example/app:1",
        "--replicas=6",
    ])
    .ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .ok();
    ready_pods(&c, 6, "app:1", &h.names);
    let ready = c
        .kubectl(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .ok()
        .stdout;
    assert_eq!(ready, "6");

    c.kubectl(&["scale", "deployment", "web", "--replicas=9"])
        .ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .ok();
    ready_pods(&c, 9, "app:1", &h.names);

    c.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "app=registry.example/app:2",
    ])
    .ok();
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .ok()
        .stdout;
    assert!(out.contains("successfully rolled out"), "{out}");
    ready_pods(&c, 9, "app:2", &h.names);
    let status = c
        .kubectl(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}",
        ])
        .ok()
        .stdout;
    assert_eq!(status, "9/9/9");
}
