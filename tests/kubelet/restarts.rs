//! Restarts: CrashLoopBackOff with back-off, OOMKilled, a container killed on the host,
//! cgroup limits from resources, and an agent killed and started again.

use std::path::PathBuf;

use crate::node::{assert_clean, wait, Node};

/// The container's cgroup directory in the memory hierarchy (or the v2 one).
fn container_cgroup(n: &Node, qos: &str, pod: &str) -> PathBuf {
    let uid = n.jp(pod, "{.metadata.uid}");
    let cid = n.jp(pod, "{.status.containerStatuses[0].containerID}");
    let cid = cid.trim_start_matches("skiff://");
    let parent = n.server.agent_cgroup().unwrap().trim_start_matches('/');
    crate::node::memory_cgroup(&format!("{parent}/{qos}/pod{uid}/{cid}"))
}

#[test]
fn crash_loop_oom_limits_host_kill_and_agent_restart() {
    let (dir, cgroups);
    {
        let mut n = Node::start();
        dir = n.data().to_path_buf();
        cgroups = n.cgroup_dirs(n.server.agent_cgroup().unwrap());
        n.k(&[
            "run",
            "crash",
            "--image",
            &n.image,
            "--command",
            "--",
            "sh",
            "-c",
            "echo bye; exit 3",
        ])
        .ok();
        n.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"hog"}},"spec":{{"restartPolicy":"Never","containers":[{{"name":"h","image":"{}",
            "command":["sh","-c","tail /dev/zero"],"resources":{{"limits":{{"memory":"32Mi"}}}}}}]}}}}"#,
            n.image
        ));
        n.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"limited"}},"spec":{{"containers":[{{"name":"l","image":"{}",
            "resources":{{"requests":{{"cpu":"250m","memory":"32Mi"}},"limits":{{"cpu":"500m","memory":"64Mi"}}}}}}]}}}}"#,
            n.image
        ));
        n.k(&["run", "kubia", "--image", &n.image]).ok();
        // CrashLoopBackOff after two restarts (immediately, then 10 s later).
        wait("CrashLoopBackOff with 2 restarts", 90, || {
            let reason = n.jp(
                "crash",
                "{.status.containerStatuses[0].state.waiting.reason}",
            );
            let count: u32 = n
                .jp("crash", "{.status.containerStatuses[0].restartCount}")
                .parse()
                .unwrap_or(0);
            (reason == "CrashLoopBackOff" && count >= 2).then_some(())
        });
        assert_eq!(
            n.jp(
                "crash",
                "{.status.containerStatuses[0].lastState.terminated.exitCode}"
            ),
            "3"
        );
        assert_eq!(
            n.jp(
                "crash",
                "{.status.containerStatuses[0].lastState.terminated.reason}"
            ),
            "Error"
        );
        // The row flips to Error or Running for a moment when a back-off ends.
        wait("kubectl's row to show CrashLoopBackOff", 60, || {
            let row = n.k(&["get", "pod", "crash", "--no-headers"]).ok().stdout;
            (row.contains("CrashLoopBackOff") && row.contains("0/1")).then_some(())
        });
        let events = n
            .k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=crash",
            ])
            .ok()
            .stdout;
        assert!(
            events.contains("BackOff") && events.contains("Back-off restarting failed container"),
            "{events}"
        );
        assert_eq!(n.k(&["logs", "crash", "--previous"]).ok().stdout, "bye\n");
        // The memory hog is OOM-killed.
        wait("OOMKilled", 60, || {
            (n.jp(
                "hog",
                "{.status.containerStatuses[0].state.terminated.reason}",
            ) == "OOMKilled")
                .then_some(())
        });
        assert_eq!(n.jp("hog", "{.status.phase}"), "Failed");
        // Limits in cgroupfs.
        n.k(&[
            "wait",
            "--for=condition=Ready",
            "pod/limited",
            "pod/kubia",
            "--timeout=60s",
        ])
        .ok();
        assert_eq!(n.jp("limited", "{.status.qosClass}"), "Burstable");
        let cg = container_cgroup(&n, "burstable", "limited");
        let mem = ["memory.limit_in_bytes", "memory.max"]
            .iter()
            .find_map(|f| std::fs::read_to_string(cg.join(f)).ok())
            .unwrap_or_else(|| panic!("no memory limit file in {}", cg.display()));
        assert_eq!(mem.trim(), (64u64 << 20).to_string());
        let cpu_dir = PathBuf::from(cg.to_string_lossy().replace("/memory/", "/cpu/"));
        if let Ok(q) = std::fs::read_to_string(cpu_dir.join("cpu.cfs_quota_us")) {
            assert_eq!(q.trim(), "50000");
            assert_eq!(
                std::fs::read_to_string(cpu_dir.join("cpu.shares"))
                    .unwrap()
                    .trim(),
                "256"
            );
        } else {
            let max = std::fs::read_to_string(cg.join("cpu.max")).unwrap();
            assert_eq!(max.trim(), "50000 100000");
        }

        // The kubelet API's resource statistics (what metrics-server reads), over HTTPS
        // with a client certificate of the cluster CA.
        let port = n
            .k(&[
                "get",
                "node",
                "-o",
                "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
            ])
            .ok()
            .stdout;
        let get = |path: &str| {
            let mut c = std::process::Command::new("curl");
            c.args(["-sf", "--cacert"])
                .arg(n.server.pki("ca.crt"))
                .arg("--cert")
                .arg(n.server.pki("admin.crt"))
                .arg("--key")
                .arg(n.server.pki("admin.key"))
                .arg(format!("https://127.0.0.1:{port}{path}"));
            crate::common::run(c, None).ok().stdout
        };
        let summary: serde_json::Value = serde_json::from_str(&get("/stats/summary")).unwrap();
        assert!(
            summary["node"]["memory"]["workingSetBytes"]
                .as_u64()
                .unwrap()
                > 0,
            "{summary}"
        );
        let limited = summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["podRef"]["name"] == "limited")
            .unwrap_or_else(|| panic!("no stats for pod limited: {summary}"));
        assert!(
            limited["containers"][0]["memory"]["workingSetBytes"]
                .as_u64()
                .unwrap()
                > 0,
            "{limited}"
        );
        // Only the API server's identity (group system:masters) may use the kubelet API:
        // a node's own certificate of the same CA is refused as Kubernetes refuses it.
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "--cacert"])
            .arg(n.server.pki("ca.crt"))
            .arg("--cert")
            .arg(n.data().join("agent/pki/kubelet-client.crt"))
            .arg("--key")
            .arg(n.data().join("agent/pki/kubelet-client.key"))
            .args(["-w", " %{http_code}"])
            .arg(format!("https://127.0.0.1:{port}/stats/summary"));
        let refused = crate::common::run(c, None).ok().stdout;
        assert!(
            refused.starts_with("Forbidden (user=system:node:")
                && refused.contains("verb=get, resource=nodes, subresource(s)=[stats])")
                && refused.ends_with(" 403"),
            "{refused}"
        );
        // A bearer token instead of a certificate: the kubelet asks the API server (a
        // TokenReview); the cluster token is the API server's own (system:masters).
        let with_token = |token: &str| {
            let mut c = std::process::Command::new("curl");
            c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(n.server.pki("ca.crt"))
                .arg("-H")
                .arg(format!("Authorization: Bearer {token}"))
                .arg(format!("https://127.0.0.1:{port}/stats/summary"));
            crate::common::run(c, None).ok().stdout
        };
        assert_eq!(with_token(&n.server.token()), "200");
        assert_eq!(with_token("not-a-token"), "401");
        // The same through the API server: nodes/{name}/proxy/{path}.
        let node = n
            .k(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
            .ok()
            .stdout;
        let proxied = n
            .k(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
            ])
            .ok()
            .stdout;
        let proxied: serde_json::Value = serde_json::from_str(&proxied).unwrap();
        assert_eq!(proxied["node"]["nodeName"], node.as_str(), "{proxied}");
        assert_eq!(
            n.k(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{node}/proxy/healthz")
            ])
            .ok()
            .stdout,
            "ok"
        );
        // The agent's own metrics.
        let own = get("/metrics");
        for want in [
            "kubelet_started_containers_total{container_type=\"container\"}",
            "kubelet_pod_start_duration_seconds_count",
            "kubelet_running_containers{container_state=\"running\"}",
        ] {
            assert!(own.contains(want), "{want} in {own}");
        }
        let metrics = get("/metrics/resource");
        assert!(metrics.contains("container_memory_working_set_bytes{container=\"l\",namespace=\"default\",pod=\"limited\"}"), "{metrics}");
        assert!(
            metrics.contains("node_cpu_usage_seconds_total "),
            "{metrics}"
        );

        // A container killed on the host is restarted.
        let procs = container_cgroup(&n, "besteffort", "kubia").join("cgroup.procs");
        let pid = std::fs::read_to_string(&procs).unwrap();
        let pid = pid.lines().next().expect("a process in the container");
        let before = n.jp("kubia", "{.status.containerStatuses[0].containerID}");
        assert!(std::process::Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap()
            .success());
        wait("kubia restarted after a host kill", 60, || {
            let c = n.jp("kubia", "{.status.containerStatuses[0].restartCount}");
            let running = !n
                .jp("kubia", "{.status.containerStatuses[0].state.running}")
                .is_empty();
            (c == "1" && running).then_some(())
        });
        assert_eq!(
            n.jp(
                "kubia",
                "{.status.containerStatuses[0].lastState.terminated.exitCode}"
            ),
            "137"
        );
        assert_ne!(
            n.jp("kubia", "{.status.containerStatuses[0].containerID}"),
            before
        );

        // The agent (in the server) SIGKILLed and started again: the pods are adopted.
        let cid = n.jp("kubia", "{.status.containerStatuses[0].containerID}");
        let limited = n.jp("limited", "{.status.containerStatuses[0].containerID}");
        n.server.stop();
        n.server.start_again();
        wait("the node Ready again", 60, || {
            let o = n.k(&["get", "nodes", "--no-headers"]);
            o.stdout.contains(" Ready").then_some(())
        });
        // Give the new agent a few resyncs to (wrongly) restart anything.
        std::thread::sleep(std::time::Duration::from_secs(3));
        assert_eq!(
            n.jp("kubia", "{.status.containerStatuses[0].containerID}"),
            cid
        );
        assert_eq!(
            n.jp("kubia", "{.status.containerStatuses[0].restartCount}"),
            "1"
        );
        assert_eq!(
            n.jp("limited", "{.status.containerStatuses[0].containerID}"),
            limited
        );
        assert_eq!(
            n.jp("limited", "{.status.containerStatuses[0].restartCount}"),
            "0"
        );
        assert_eq!(
            n.k(&["exec", "kubia", "--", "hostname"]).ok().stdout,
            "kubia\n"
        );
        let procs = std::fs::read_dir(n.data().join("agent/containers"))
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().path().join("exit.json").exists())
            .count();
        // kubia, limited and crash's current attempt (if it is running right now) only.
        assert!(procs <= 3, "{procs} containers without an exit");
    }
    assert_clean(&dir, &cgroups);
}
