//! The agent's resource housekeeping: container log rotation (and `kubectl logs -f`
//! across rotations), image garbage collection by disk thresholds, and node-pressure
//! eviction (BestEffort before Guaranteed, with the kubelet's reason and message).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{run, SKIFF};
use crate::node::{assert_clean, wait, wait_or, Node};

/// The line numbers in `text` ("line N …" lines).
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line ")?.split(' ').next()?.parse().ok())
        .collect()
}

fn consecutive(ns: &[u64]) -> bool {
    ns.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn log_rotation_and_image_gc() {
    let (dir, cgroups);
    {
        let n = Node::start_with(&[
            "--container-log-max-size",
            "4Ki",
            "--container-log-max-files",
            "3",
            "--image-gc-high-threshold",
            "1",
            "--image-gc-low-threshold",
            "0",
            "--minimum-image-ttl-duration",
            "0s",
            "--image-gc-period",
            "1s",
        ]);
        dir = n.data().to_path_buf();
        cgroups = n.cgroup_dirs(n.server.agent_cgroup().unwrap());
        // About 100 bytes a line, 40 lines a second: a 4Ki log rotates every second.
        n.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"chatty"}},"spec":{{"containers":[{{"name":"c","image":"{}",
            "command":["sh","-c","i=0; while true; do echo \"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); usleep 25000; done"]}}]}}}}"#,
            n.image
        ));
        wait_or(
            "chatty Running",
            90,
            || (n.jp("chatty", "{.status.phase}") == "Running").then_some(()),
            || n.k(&["describe", "pod", "chatty"]).stdout,
        );
        let uid = n.jp("chatty", "{.metadata.uid}");
        let logs = dir.join("agent/pods").join(&uid).join("logs/c");

        // Follow for a while: every line, in order, across several rotations.
        let mut follow = n
            .server
            .kubectl_command(crate::common::VERSIONS[1], &["logs", "-f", "chatty"]);
        follow
            .env("KUBECONFIG", n.server.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = follow.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(n) = numbers(&line).first() {
                    seen.push(*n);
                }
                if seen.len() >= 300 {
                    break;
                }
            }
            seen
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        let seen = reader.join().unwrap();
        assert!(
            seen.len() >= 300,
            "logs -f stopped after {} lines",
            seen.len()
        );
        assert!(
            consecutive(&seen),
            "logs -f lost or repeated lines: {seen:?}"
        );

        // The current log and at most two rotated ones, each within the size.
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&logs)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let files = names();
        assert!(files.contains(&"0.log".to_string()), "{files:?}");
        let rotated: Vec<&String> = files.iter().filter(|f| f.starts_with("0.log.")).collect();
        assert_eq!(rotated.len(), 2, "{files:?}");
        for f in &files {
            let len = std::fs::metadata(logs.join(f)).unwrap().len();
            assert!(len <= 4096, "{f} has {len} bytes");
        }
        // The rotated files and the current one continue each other.
        let mut all = Vec::new();
        for f in rotated.iter().map(|s| s.as_str()).chain(["0.log"]) {
            let text = std::fs::read_to_string(logs.join(f)).unwrap();
            assert!(text.ends_with('\n'), "{f} ends in a whole record");
            all.extend(numbers(&text));
        }
        assert!(consecutive(&all), "rotated files: {all:?}");

        // kubectl logs reads the current file.
        let o = n.k(&["logs", "chatty"]).ok().stdout;
        let ns = numbers(&o);
        assert!(!ns.is_empty() && consecutive(&ns), "{o}");
        assert!(ns.len() < 60, "only the current file: {} lines", ns.len());

        // The image is in use: kept. Once its pod is gone it is collected; the node
        // still cannot get below the 0 % low threshold: FreeDiskSpaceFailed.
        let refs = dir.join("agent/images/refs.json");
        let kubia = n.image.clone();
        let named = || {
            std::fs::read_to_string(&refs)
                .unwrap_or_default()
                .contains(&kubia)
        };
        assert!(named(), "the image of a running pod is kept");
        n.k(&["delete", "pod", "chatty", "--wait=true"]).ok();
        wait_or(
            "the unused image collected",
            60,
            || (!named()).then_some(()),
            || std::fs::read_to_string(&refs).unwrap_or_default(),
        );
        let events = wait("a FreeDiskSpaceFailed event", 30, || {
            let o = n
                .k(&[
                    "get",
                    "events",
                    "-A",
                    "--field-selector",
                    "reason=FreeDiskSpaceFailed",
                    "-o",
                    "jsonpath={.items[*].message}|{.items[*].involvedObject.kind}",
                ])
                .stdout;
            o.contains("Failed to garbage collect required amount of images")
                .then_some(o)
        });
        assert!(events.contains("|Node"), "{events}");
        // A new pod pulls the image again.
        n.k(&["run", "again", "--image", &n.image]).ok();
        wait("the image pulled again", 90, || {
            (n.jp("again", "{.status.phase}") == "Running").then_some(())
        });
    }
    assert_clean(&dir, &cgroups);
}

#[test]
fn node_pressure_evicts_besteffort_before_guaranteed() {
    // Bad thresholds are refused at startup, saying what and how to fix it.
    let bad = |flag: &str, value: &str, says: &str| {
        let mut c = std::process::Command::new(SKIFF);
        c.args([
            "agent",
            "--server",
            "https://127.0.0.1:1",
            "--token",
            "x",
            flag,
            value,
        ]);
        let o = run(c, None);
        assert!(
            o.code != 0 && o.stderr.contains(flag) && o.stderr.contains(says),
            "{flag} {value}: {o:?}"
        );
    };
    bad(
        "--eviction-hard",
        "memory.available>1Gi",
        "write signal<quantity",
    );
    bad("--eviction-hard", "memory.availble<1Gi", "unknown signal");
    bad("--container-log-max-size", "lots", "write e.g. 10Mi");
    bad("--image-gc-low-threshold", "90", "must be less than");
    // `skiff server` checks its local agent's flags before it starts anything.
    let empty = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(SKIFF);
    c.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--disable-registry",
        "--data-dir",
    ])
    .arg(empty.path())
    .args(["--eviction-hard", "memory.available<lots"]);
    let o = run(c, None);
    assert!(
        o.code != 0
            && o.stderr.contains("--eviction-hard")
            && o.stderr.contains("is not a quantity"),
        "{o:?}"
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);

    let (dir, cgroups);
    {
        let mut n = Node::start();
        dir = n.data().to_path_buf();
        cgroups = n.cgroup_dirs(n.server.agent_cgroup().unwrap());
        let img = n.image.clone();
        n.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"guaranteed"}},"spec":{{"containers":[{{"name":"g","image":"{img}",
            "resources":{{"limits":{{"cpu":"100m","memory":"64Mi"}}}}}}]}}}}"#
        ));
        n.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"besteffort"}},"spec":{{"containers":[{{"name":"b","image":"{img}"}}]}}}}"#
        ));
        for p in ["guaranteed", "besteffort"] {
            wait_or(
                &format!("{p} Running"),
                90,
                || (n.jp(p, "{.status.phase}") == "Running").then_some(()),
                || n.k(&["describe", "pod", p]).stdout,
            );
        }
        assert_eq!(n.jp("guaranteed", "{.status.qosClass}"), "Guaranteed");
        assert_eq!(n.jp("besteffort", "{.status.qosClass}"), "BestEffort");
        // Restarted with a threshold every node meets: memory.available < 100 % of the
        // capacity. The pods keep running across the restart; the manager then evicts
        // one pod per 10 s pass, the BestEffort one first.
        n.server
            .restart_with(&[("--eviction-hard", "memory.available<100%")]);
        wait_or(
            "besteffort evicted",
            90,
            || (n.jp("besteffort", "{.status.phase}") == "Failed").then_some(()),
            || n.k(&["get", "pods", "-o", "wide"]).stdout,
        );
        assert_eq!(
            n.jp("guaranteed", "{.status.phase}"),
            "Running",
            "the Guaranteed pod goes after the BestEffort one"
        );
        assert_eq!(n.jp("besteffort", "{.status.reason}"), "Evicted");
        let msg = n.jp("besteffort", "{.status.message}");
        assert!(
            msg.starts_with("The node was low on resource: memory. Threshold quantity: ")
                && msg.contains(", available: ")
                && msg.contains("Container b was using ")
                && msg.contains("request is 0, has larger consumption of memory."),
            "{msg}"
        );
        assert_eq!(
            n.jp(
                "besteffort",
                "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"
            ),
            "TerminationByKubelet"
        );
        wait("besteffort's container stopped", 30, || {
            let t = n.jp(
                "besteffort",
                "{.status.containerStatuses[0].state.terminated.reason}",
            );
            (!t.is_empty()).then_some(())
        });
        let ev = n
            .k(&[
                "get",
                "events",
                "--field-selector",
                "reason=Evicted,involvedObject.name=besteffort",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .stdout;
        assert!(ev.contains("The node was low on resource: memory."), "{ev}");
        // The node reports MemoryPressure, and is tainted for it.
        wait_or(
            "MemoryPressure and its taint",
            60,
            || {
                let cond = n
                    .k(&[
                        "get",
                        "nodes",
                        "-o",
                        "jsonpath={.items[0].status.conditions[?(@.type==\"MemoryPressure\")].status}",
                    ])
                    .stdout;
                let taints = n
                    .k(&["get", "nodes", "-o", "jsonpath={.items[0].spec.taints}"])
                    .stdout;
                (cond == "True" && taints.contains("node.kubernetes.io/memory-pressure"))
                    .then_some(())
            },
            || n.k(&["get", "nodes", "-o", "yaml"]).stdout,
        );
        // A new BestEffort pod is rejected under MemoryPressure (bound past the
        // scheduler, which the taint keeps away).
        let node = n
            .k(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
            .stdout;
        n.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"late"}},"spec":{{"nodeName":"{node}","containers":[{{"name":"l","image":"{img}"}}]}}}}"#
        ));
        wait_or(
            "late rejected",
            60,
            || (n.jp("late", "{.status.phase}") == "Failed").then_some(()),
            || n.k(&["get", "pod", "late", "-o", "yaml"]).stdout,
        );
        assert_eq!(n.jp("late", "{.status.reason}"), "Evicted");
        assert_eq!(
            n.jp("late", "{.status.message}"),
            "Pod was rejected: The node had condition: [MemoryPressure]. "
        );
        // While the pressure holds, the Guaranteed pod is evicted too, later.
        wait("guaranteed evicted after besteffort", 60, || {
            (n.jp("guaranteed", "{.status.reason}") == "Evicted").then_some(())
        });
        let be_time = n.jp(
            "besteffort",
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].lastTransitionTime}",
        );
        let g_time = n.jp(
            "guaranteed",
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].lastTransitionTime}",
        );
        assert!(be_time < g_time, "{be_time} before {g_time}");
        assert_eq!(n.node_refusals(), Vec::<String>::new());
    }
    assert_clean(&dir, &cgroups);
}
