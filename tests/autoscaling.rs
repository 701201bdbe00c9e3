//! End-to-end tests of automatic scaling: a real `skiff server` with its local agent,
//! real CPU-burning pods (busybox loops in the kubia image), the built-in resource
//! metrics API read by real `kubectl top` (1.27 and 1.33), and HorizontalPodAutoscalers
//! made by `kubectl autoscale` (v1 from kubectl 1.27, v2 from 1.33) and by manifests.
//!
//! One server serves every case (they are independent objects in one namespace each),
//! with short periods so the test is fast: metrics every 2 s, HPA sync every 2 s, and a
//! 10 s downscale stabilization window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
#[macro_use]
#[allow(dead_code, unused_macros)]
mod common;

#[path = "kubelet/node.rs"]
#[allow(dead_code)]
mod node;

use node::{wait_or, Node};

/// A Deployment of `replicas` pods of one container `b` that burns a CPU (capped at
/// 200m by its limit) until /tmp/stop exists; `resources` is its resources JSON.
fn burner(name: &str, ns: &str, image: &str, replicas: u32, resources: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}","namespace":"{ns}"}},
 "spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},
 "template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{"terminationGracePeriodSeconds":0,
 "containers":[{{"name":"b","image":"{image}",
 "command":["sh","-c","while [ ! -f /tmp/stop ]; do :; done; sleep 3600"],"resources":{resources}}}]}}}}}}}}"#
    )
}

const BURN_RESOURCES: &str = r#"{"requests":{"cpu":"100m"},"limits":{"cpu":"200m"}}"#;

fn replicas(n: &Node, ns: &str, deploy: &str) -> String {
    n.k(&[
        "-n",
        ns,
        "get",
        "deploy",
        deploy,
        "-o",
        "jsonpath={.spec.replicas}",
    ])
    .stdout
}

/// Stops the load in every pod of `app` (new pods burn too until told).
fn stop_load(n: &Node, ns: &str, app: &str) {
    let pods = n.k(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "name",
    ]);
    for p in pods.stdout.lines() {
        n.k(&["-n", ns, "exec", p, "--", "touch", "/tmp/stop"]);
    }
}

fn condition(n: &Node, ns: &str, hpa: &str, ty: &str) -> String {
    n.k(&[
        "-n",
        ns,
        "get",
        "hpa",
        hpa,
        "-o",
        &format!(
            "jsonpath={{range .status.conditions[?(@.type==\"{ty}\")]}}{{.status}} {{.reason}}: {{.message}}{{end}}"
        ),
    ])
    .stdout
}

fn events(n: &Node, ns: &str, reason: &str) -> String {
    n.k(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ])
    .stdout
}

/// CPU of a pod's cgroup over `secs`, in millicores, from its own counter (cgroup v2's
/// `cpu.stat`, v1's `cpuacct.usage`).
fn cgroup_millicores(n: &Node, uid: &str, secs: f64) -> f64 {
    let parent = n.server.agent_cgroup().unwrap().to_string();
    let rel = format!("{}/burstable/pod{uid}", parent.trim_start_matches('/'));
    let base = std::path::Path::new("/sys/fs/cgroup");
    let read = || -> u64 {
        if base.join("cgroup.controllers").exists() {
            let s = std::fs::read_to_string(base.join(&rel).join("cpu.stat")).unwrap();
            let usec: u64 = s
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            return usec * 1000;
        }
        let file = ["cpuacct", "cpu,cpuacct"]
            .iter()
            .map(|h| base.join(h).join(&rel).join("cpuacct.usage"))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no cpuacct.usage for {rel}"));
        std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (a, t) = (read(), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let b = read();
    (b - a) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// A CPU quantity in millicores (any of Kubernetes' forms: `2`, `250m`, `1500u`, `12n`).
fn millicores(q: &str) -> f64 {
    let q: skiff_api::quantity::Quantity = q.parse().unwrap();
    q.milli_value() as f64
}

/// `kubectl top` shows what the cgroups count; an HPA made by `kubectl autoscale`
/// scales a burning Deployment out to its maximum with kube's Event and TARGETS column,
/// and back in once the load stops and the window has passed; a behavior policy limits
/// the steps of another; bad HPAs get kube's conditions and Events while the good ones
/// keep working.
#[test]
fn top_and_horizontal_pod_autoscaling() {
    let n = Node::start_with(&[
        "--metric-resolution",
        "2s",
        "--horizontal-pod-autoscaler-sync-period",
        "2s",
        "--horizontal-pod-autoscaler-downscale-stabilization",
        "10s",
    ]);
    for ns in ["hpa", "steps", "bad"] {
        n.k(&["create", "namespace", ns]).ok();
    }
    n.apply(&burner("burn", "hpa", &n.image, 1, BURN_RESOURCES));
    wait_or(
        "burn Ready",
        90,
        || {
            (n.k(&[
                "-n",
                "hpa",
                "get",
                "deploy",
                "burn",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])
            .stdout
                == "1")
                .then_some(())
        },
        || n.k(&["-n", "hpa", "describe", "pods"]).stdout,
    );

    // A node whose kubelet never answers (nothing listens on its port): it drops out of
    // the metrics, and the real node's figures are still served.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    n.apply(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"ghost"}}"#);
    n.k(&[
        "patch",
        "node",
        "ghost",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{dead_port}}}}}}}}}"#
        ),
    ])
    .ok();

    // kubectl top, both versions, against the cgroups' own counters.
    for v in common::VERSIONS {
        let top = wait_or(
            "kubectl top nodes",
            30,
            || {
                let o = n.kv(v, &["top", "nodes", "--no-headers"]);
                let real = o
                    .stdout
                    .lines()
                    .any(|l| !l.starts_with("ghost") && l.contains('%'));
                (o.code == 0 && real).then_some(o.stdout)
            },
            || n.kv(v, &["top", "nodes"]).stderr,
        );
        assert!(
            top.lines()
                .filter(|l| l.starts_with("ghost"))
                .all(|l| l.contains("unknown")),
            "a node without metrics has figures: {top}"
        );
        let top = wait_or(
            "kubectl top pods",
            30,
            || {
                let o = n.kv(v, &["top", "pods", "-A", "--containers", "--no-headers"]);
                o.stdout.contains("burn").then_some(o.stdout)
            },
            || n.kv(v, &["top", "pods", "-A"]).stderr,
        );
        assert!(
            top.lines()
                .any(|l| l.starts_with("hpa ") && l.contains(" b ")),
            "{top}"
        );
    }
    let pod = n
        .k(&[
            "-n",
            "hpa",
            "get",
            "pods",
            "-l",
            "app=burn",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .stdout;
    let uid = n
        .k(&[
            "-n",
            "hpa",
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .stdout;
    let from_cgroup = cgroup_millicores(&n, &uid, 4.0);
    let raw = n
        .k(&[
            "get",
            "--raw",
            &format!("/apis/metrics.k8s.io/v1beta1/namespaces/hpa/pods/{pod}"),
        ])
        .ok()
        .stdout;
    let pm: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let from_api = millicores(pm["containers"][0]["usage"]["cpu"].as_str().unwrap());
    assert!(
        (from_api - from_cgroup).abs() < 40.0 && from_cgroup > 120.0,
        "metrics API {from_api}m vs cgroup {from_cgroup}m: {raw}"
    );
    let by_cpu = n
        .k(&["top", "pods", "-A", "--sort-by", "cpu", "--no-headers"])
        .ok()
        .stdout;
    assert!(by_cpu.lines().next().unwrap().contains(&pod), "{by_cpu}");

    // Bad HPAs next to the good one.
    // Targets of the bad HPAs idle (no limit: a burner would take a whole CPU).
    let idle = |name: &str, resources: &str| {
        burner(name, "bad", &n.image, 1, resources).replace(
            "while [ ! -f /tmp/stop ]; do :; done; sleep 3600",
            "sleep 3600",
        )
    };
    n.apply(&idle("noreq", "{}"));
    n.apply(&idle("obj", BURN_RESOURCES));
    n.apply(
        r#"{"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"noreq","namespace":"bad"},
  "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"noreq"},"minReplicas":1,"maxReplicas":3,
  "metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":50}}}]}},
 {"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"missing","namespace":"bad"},
  "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"nope"},"maxReplicas":3}},
 {"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"noscale","namespace":"bad"},
  "spec":{"scaleTargetRef":{"apiVersion":"v1","kind":"ConfigMap","name":"kube-root-ca.crt"},"maxReplicas":3}},
 {"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"custom","namespace":"bad"},
  "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"obj"},"maxReplicas":3,
  "metrics":[{"type":"Object","object":{"describedObject":{"apiVersion":"v1","kind":"Service","name":"s"},
   "metric":{"name":"hits"},"target":{"type":"Value","value":"10"}}}]}}]}"#,
    );
    let mut c = n
        .server
        .kubectl_command(common::VERSIONS[1], &["-n", "bad", "create", "-f", "-"]);
    c.env("KUBECONFIG", n.server.kubeconfig());
    let o = common::run(
        c,
        Some(
            r#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"inverted"},
  "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"noreq"},"minReplicas":4,"maxReplicas":2}}"#,
        ),
    );
    assert!(
        o.stderr.contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        ),
        "{o:?}"
    );

    // The good one, made by kubectl 1.27 (autoscaling/v1, stored as v2).
    n.kv(
        "1.27",
        &[
            "-n",
            "hpa",
            "autoscale",
            "deployment",
            "burn",
            "--cpu-percent=50",
            "--min=1",
            "--max=3",
        ],
    )
    .ok();
    wait_or(
        "burn scaled out to 3",
        90,
        || (replicas(&n, "hpa", "burn") == "3").then_some(()),
        || n.k(&["-n", "hpa", "describe", "hpa", "burn"]).stdout,
    );
    let rescale = events(&n, "hpa", "SuccessfulRescale");
    assert!(
        rescale.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{rescale}"
    );
    let table = n.k(&["-n", "hpa", "get", "hpa", "burn"]).ok().stdout;
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("%/50%") && l.contains("Deployment/burn")),
        "{table}"
    );
    let v1 = n.kv(
        "1.27",
        &[
            "-n",
            "hpa",
            "get",
            "hpa.v1.autoscaling",
            "burn",
            "-o",
            "jsonpath={.spec.targetCPUUtilizationPercentage} {.status.desiredReplicas}",
        ],
    );
    assert!(v1.stdout.starts_with("50 "), "{v1:?}");

    // Behavior: one pod per minute at most, so 1 → 2 and no further for now.
    n.apply(&burner("steps", "steps", &n.image, 1, BURN_RESOURCES));
    n.apply(
        r#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"steps","namespace":"steps"},
  "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"steps"},"minReplicas":1,"maxReplicas":4,
  "metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":50}}}],
  "behavior":{"scaleUp":{"policies":[{"type":"Pods","value":1,"periodSeconds":60}]}}}}"#,
    );
    wait_or(
        "steps scaled to 2",
        90,
        || (replicas(&n, "steps", "steps") == "2").then_some(()),
        || n.k(&["-n", "steps", "describe", "hpa", "steps"]).stdout,
    );
    wait_or(
        "the ScaleUpLimit condition",
        30,
        || {
            condition(&n, "steps", "steps", "ScalingLimited")
                .starts_with("True ScaleUpLimit")
                .then_some(())
        },
        || n.k(&["-n", "steps", "describe", "hpa", "steps"]).stdout,
    );
    assert_eq!(replicas(&n, "steps", "steps"), "2");

    // The bad ones, each with kube's condition and Event.
    for (hpa, ty, want) in [
        ("noreq", "ScalingActive", "False FailedGetResourceMetric: the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu in container b of Pod noreq-"),
        ("missing", "AbleToScale", "False FailedGetScale: the HPA controller was unable to get the target's current scale: deployments.apps \"nope\" not found"),
        ("noscale", "AbleToScale", "False FailedGetScale"),
        ("custom", "ScalingActive", "False FailedGetObjectMetric"),
    ] {
        wait_or(
            &format!("{hpa}'s {ty} condition"),
            30,
            || condition(&n, "bad", hpa, ty).starts_with(want).then_some(()),
            || format!("{}\n{}", condition(&n, "bad", hpa, ty), n.k(&["-n", "bad", "describe", "hpa", hpa]).stdout),
        );
    }
    assert!(events(&n, "bad", "FailedGetScale").contains("\"nope\" not found"));
    assert!(events(&n, "bad", "FailedGetResourceMetric").contains("missing request for cpu"));

    // The load stops: back to 1 once the 10 s window has passed.
    let t = std::time::Instant::now();
    wait_or(
        "burn scaled back in to 1",
        120,
        || {
            stop_load(&n, "hpa", "burn");
            (replicas(&n, "hpa", "burn") == "1").then_some(())
        },
        || n.k(&["-n", "hpa", "describe", "hpa", "burn"]).stdout,
    );
    assert!(
        t.elapsed().as_secs() >= 8,
        "scaled in before the window passed"
    );
    assert!(events(&n, "hpa", "SuccessfulRescale")
        .contains("New size: 1; reason: All metrics below target"));
    stop_load(&n, "steps", "steps");
}
