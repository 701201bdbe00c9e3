//! The other workload controllers as a user meets them through kubectl, on hollow nodes:
//! a DaemonSet follows the nodes, a Job runs to completion, a StatefulSet starts its pods
//! in order with their claims, a CronJob makes a Job, a Service gets an EndpointSlice,
//! and a node that dies is tainted unreachable with its pods made again elsewhere.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::cluster::{running_ready, Cluster};
use crate::common::eventually;

fn live(c: &Cluster, selector: &str) -> Vec<Pod> {
    c.pods(selector)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn template(labels: serde_json::Value, image: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "c", "image": image}]}
    })
}

per_version!(workload_controllers_run_on_hollow_nodes);

fn workload_controllers_run_on_hollow_nodes(kubectl: &'static str) {
    let c = Cluster::start(kubectl);
    let _h = c.hollow(2, "wa-");
    // The CronJob first: its first Job comes on the next whole minute, while the rest runs.
    c.kubectl(&[
        "create",
        "cronjob",
        "tick",
        "--image=example/tick:1",
        "--schedule=*/1 * * * *",
    ])
    .ok();

    // DaemonSet: one pod per node, and one more for a node that registers later.
    c.create(&json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": template(json!({"app": "agent"}), "example/agent:1"),
        }
    }));
    let per_node = |n: usize| {
        eventually(&format!("{n} agent pods, one per node"), || {
            let pods = live(&c, "app=agent");
            let mut nodes: Vec<String> = pods.iter().map(node_of).collect();
            nodes.sort();
            nodes.dedup();
            (pods.len() == n && nodes.len() == n && pods.iter().all(running_ready)).then_some(nodes)
        })
    };
    assert_eq!(per_node(2), ["wa-0", "wa-1"]);
    let _late = c.hollow(1, "wb-");
    assert_eq!(per_node(3), ["wa-0", "wa-1", "wb-0"]);
    eventually("DaemonSet status 3/3", || {
        let s = c
            .kubectl(&[
                "get",
                "daemonset",
                "agent",
                "-o",
                "jsonpath={.status.desiredNumberScheduled}/{.status.numberReady}",
            ])
            .ok()
            .stdout;
        (s == "3/3").then_some(())
    });

    // Job: 2 completions, 2 at a time. Hollow kubelets report pods Running and never
    // finish them; the test plays the kubelet for the end (phase Succeeded), which a
    // hollow kubelet leaves alone.
    c.create(&json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "calc"},
        "spec": {
            "completions": 2, "parallelism": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "example/calc:1"}]
                }
            }
        }
    }));
    let pods = eventually("2 running job pods", || {
        let pods = live(&c, "job-name=calc");
        (pods.len() == 2 && pods.iter().all(running_ready)).then_some(pods)
    });
    eventually("job status active 2", || {
        let s = c
            .kubectl(&["get", "job", "calc", "-o", "jsonpath={.status.active}"])
            .ok()
            .stdout;
        (s == "2").then_some(())
    });
    let api: Api<Pod> = Api::default_namespaced(c.client.clone());
    for p in &pods {
        let status = json!({"status": {
            "phase": "Succeeded",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [{
                "name": "c", "image": "example/calc:1", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }]
        }});
        c.rt.block_on(api.patch_status(&name(p), &PatchParams::default(), &Patch::Merge(&status)))
            .expect("pod succeeded");
    }
    c.kubectl(&[
        "wait",
        "--for=condition=Complete",
        "job/calc",
        "--timeout=30s",
    ])
    .ok();
    let s = c
        .kubectl(&["get", "job", "calc", "-o", "jsonpath={.status.succeeded}"])
        .ok()
        .stdout;
    assert_eq!(s, "2");

    // StatefulSet: web-0 Running and Ready before web-1 exists, each with its claim.
    c.create(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }));
    c.create(&json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "serviceName": "web", "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(json!({"app": "web"}), "example/web:1"),
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}
                }
            }]
        }
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = live(&c, "app=web");
        let ready0 = pods.iter().any(|p| name(p) == "web-0" && running_ready(p));
        if pods.iter().any(|p| name(p) == "web-1") {
            assert!(ready0, "web-1 exists while web-0 is not ready");
        }
        if pods.len() == 2 && pods.iter().all(running_ready) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for web-0, web-1"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(c.client.clone());
    for (pod, claim) in [("web-0", "data-web-0"), ("web-1", "data-web-1")] {
        let pvc = c.rt.block_on(pvcs.get(claim)).expect("the pod's claim");
        assert_eq!(pvc.metadata.name.as_deref(), Some(claim));
        let p = c.rt.block_on(api.get(pod)).unwrap();
        let vols = p.spec.unwrap().volumes.unwrap_or_default();
        assert!(
            vols.iter().any(|v| v.name == "data"
                && v.persistent_volume_claim
                    .as_ref()
                    .map(|s| s.claim_name.as_str())
                    == Some(claim)),
            "{pod} does not mount {claim}: {vols:?}"
        );
    }

    // A Service of a Deployment: an EndpointSlice with its 3 ready pods.
    c.kubectl(&[
        "create",
        "deployment",
        "front",
        "--image=example/front:1",
        "--replicas=3",
    ])
    .ok();
    c.kubectl(&[
        "expose",
        "deployment",
        "front",
        "--port",
        "80",
        "--target-port",
        "8080",
    ])
    .ok();
    let slices: Api<EndpointSlice> = Api::default_namespaced(c.client.clone());
    let slice = eventually("an EndpointSlice with 3 ready endpoints", || {
        let list =
            c.rt.block_on(
                slices.list(&ListParams::default().labels("kubernetes.io/service-name=front")),
            )
            .ok()?;
        list.items.into_iter().find(|s| {
            s.endpoints.len() == 3
                && s.endpoints
                    .iter()
                    .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        })
    });
    let ports = slice.ports.unwrap_or_default();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].port, Some(8080));
    let ips: Vec<String> = live(&c, "app=front")
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    for e in &slice.endpoints {
        assert!(
            ips.contains(&e.addresses[0]),
            "{:?} not a pod of front",
            e.addresses
        );
    }

    // The CronJob's Job, on the next whole minute (at most 60 s after creation; most of
    // that has passed above).
    let jobs: Api<Job> = Api::default_namespaced(c.client.clone());
    let deadline = Instant::now() + Duration::from_secs(70);
    let job = loop {
        let list = c.rt.block_on(jobs.list(&ListParams::default())).unwrap();
        if let Some(j) = list.items.into_iter().find(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "CronJob" && o.name == "tick")
        }) {
            break j;
        }
        assert!(Instant::now() < deadline, "the CronJob made no Job");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        job.metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("tick-"),
        "{:?}",
        job.metadata.name
    );
    eventually("the CronJob's lastScheduleTime", || {
        let s = c
            .kubectl(&[
                "get",
                "cronjob",
                "tick",
                "-o",
                "jsonpath={.status.lastScheduleTime}",
            ])
            .ok()
            .stdout;
        (!s.is_empty()).then_some(())
    });
}

/// A node whose hollow-nodes process dies: tainted unreachable after the grace period,
/// its pods evicted and made again on the other node.
#[test]
fn a_dead_node_is_tainted_and_its_pods_are_recreated_elsewhere() {
    let c = Cluster::start_with(
        crate::common::VERSIONS[1],
        &[
            "--node-monitor-grace-period",
            "10s",
            "--node-monitor-period",
            "1s",
            "--default-not-ready-toleration-seconds",
            "5",
            "--default-unreachable-toleration-seconds",
            "5",
        ],
    );
    let _a = c.hollow(1, "na-");
    let mut b = c.hollow(1, "nb-");
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=example/web:1",
        "--replicas=4",
    ])
    .ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .ok();
    let on_b = eventually("pods on both nodes", || {
        let pods = live(&c, "app=web");
        let on_b: Vec<String> = pods
            .iter()
            .filter(|p| node_of(p) == "nb-0")
            .map(name)
            .collect();
        (pods.len() == 4 && pods.iter().all(running_ready) && !on_b.is_empty()).then_some(on_b)
    });

    // Kill the process behind nb-0 by its PID.
    let pid = b.child.id();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = b.child.wait();

    let nodes: Api<Node> = Api::all(c.client.clone());
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let n = c.rt.block_on(nodes.get("nb-0")).unwrap();
        let tainted = n
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
        if tainted {
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status);
            assert_eq!(ready.as_deref(), Some("Unknown"));
            break;
        }
        assert!(Instant::now() < deadline, "nb-0 never tainted unreachable");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let pods = live(&c, "app=web");
        if pods.len() == 4
            && pods
                .iter()
                .all(|p| running_ready(p) && node_of(p) == "na-0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods not recreated on na-0: {:?}",
            pods.iter()
                .map(|p| (name(p), node_of(p)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The evicted pods were deleted (they stay Terminating: no kubelet finishes them).
    for p in &on_b {
        let api: Api<Pod> = Api::default_namespaced(c.client.clone());
        if let Some(p) = c.rt.block_on(api.get_opt(p)).unwrap() {
            assert!(
                p.metadata.deletion_timestamp.is_some(),
                "{} not evicted",
                name(&p)
            );
        }
    }
}
