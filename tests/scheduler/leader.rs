//! Leader election: `skiff_leader` electors against a real server (exactly one leads; a
//! stopped leader hands over at once, a dead one once its lease expires), two standalone
//! `skiff scheduler --leader-elect` processes (only the leader binds; the survivor takes
//! over when the leader is killed), and the server's own scheduler (audited as
//! system:kube-scheduler, its metrics on the server's /metrics).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::{json, Value};
use skiff_leader::{CancellationToken, LeaderElector, Timing};

use crate::cluster::{pod, scheduled_condition, Cluster, Node};
use crate::common::{eventually, http_get, standalone, SKIFF, VERSIONS};

fn lease(c: &Cluster, name: &str) -> Option<Lease> {
    let api: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    c.rt.block_on(api.get_opt(name)).expect("read the lease")
}

fn holder(c: &Cluster, name: &str) -> Option<String> {
    lease(c, name)
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Polls every 50 ms until the lease's holder is `want`; returns how long that took.
#[track_caller]
fn until_holder(c: &Cluster, name: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if holder(c, name).as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{want} did not take lease {name} within {within:?}; holder {:?}",
            holder(c, name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Candidates whose work records who is leading, flagging any moment two lead at once.
struct Candidates {
    leading: Arc<Mutex<BTreeSet<String>>>,
    overlap: Arc<AtomicBool>,
}

impl Candidates {
    fn start(
        &self,
        c: &Cluster,
        id: &str,
        timing: Timing,
    ) -> (tokio::task::JoinHandle<()>, CancellationToken) {
        let stop = CancellationToken::new();
        let elector = LeaderElector::new(c.client.clone(), "kube-system", "test-lease", id)
            .with_timing(timing)
            .expect("valid timing");
        let (leading, overlap, id) = (self.leading.clone(), self.overlap.clone(), id.to_string());
        let stopped = stop.clone().cancelled_owned();
        let task = c.rt.spawn(async move {
            let work = move |lost: CancellationToken| {
                let (leading, overlap, id) = (leading.clone(), overlap.clone(), id.clone());
                async move {
                    {
                        let mut l = leading.lock().unwrap();
                        if !l.is_empty() {
                            overlap.store(true, Ordering::SeqCst);
                        }
                        l.insert(id.clone());
                    }
                    lost.cancelled().await;
                    leading.lock().unwrap().remove(&id);
                    Ok::<(), std::convert::Infallible>(())
                }
            };
            let _ = elector.run(work, stopped).await;
        });
        (task, stop)
    }
}

#[test]
fn electors_agree_on_one_leader_and_hand_over_when_it_stops_or_dies() {
    let c = Cluster::start_with(VERSIONS[1], &["--disable-scheduler"]);
    let timing = Timing {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    };
    let cands = Candidates {
        leading: Default::default(),
        overlap: Default::default(),
    };
    let mut running: std::collections::BTreeMap<String, _> = ["a", "b"]
        .into_iter()
        .map(|id| (id.to_string(), cands.start(&c, id, timing)))
        .collect();
    let first = eventually("a leader", || holder(&c, "test-lease"));
    eventually("the leader's work to run", || {
        (*cands.leading.lock().unwrap() == BTreeSet::from([first.clone()])).then_some(())
    });
    let spec = lease(&c, "test-lease").unwrap().spec.unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(2));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());

    // A clean stop releases the lease: the other candidate takes it on its next try,
    // without waiting for the lease to expire.
    let (task, stop) = running.remove(&first).unwrap();
    stop.cancel();
    c.rt.block_on(task).unwrap();
    let second = running.keys().next().unwrap().clone();
    let took = until_holder(&c, "test-lease", &second, Duration::from_secs(5));
    eprintln!("released lease taken over after {took:?}");
    assert_eq!(
        lease(&c, "test-lease")
            .unwrap()
            .spec
            .unwrap()
            .lease_transitions,
        Some(2)
    );

    // A dead leader (gone without releasing) is replaced once its lease expires.
    let (task, _stop) = running.remove(&second).unwrap();
    task.abort();
    let _ = c.rt.block_on(task);
    // Dead: it acts no more, though its work never saw the loss.
    cands.leading.lock().unwrap().remove(&second);
    let (third, _stop_third) = cands.start(&c, "c", timing);
    let took = until_holder(&c, "test-lease", "c", Duration::from_secs(10));
    eprintln!("expired lease taken over after {took:?}");
    assert!(
        !cands.overlap.load(Ordering::SeqCst),
        "two candidates led at once"
    );
    third.abort();
}

fn audit_lines(c: &Cluster) -> Vec<Value> {
    std::fs::read_to_string(c.server.dir.path().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The audit record of the binding of `pod` (waiting for the writer to flush it).
fn binding_record(c: &Cluster, pod: &str) -> Value {
    eventually(&format!("the audit record of {pod}'s binding"), || {
        audit_lines(c).into_iter().find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["subresource"] == "binding"
                && e["objectRef"]["name"] == pod
                && e["responseStatus"]["code"] == 201
        })
    })
}

/// Two schedulers against one server: only the leader binds (the audit log names the
/// process through its user agent); when it is killed, the other takes over.
#[test]
fn of_two_standalone_schedulers_only_the_leader_binds_and_the_other_takes_over() {
    let c = Cluster::start_with(VERSIONS[0], &["--disable-scheduler"]);
    let mut s = [
        standalone("scheduler", &c.server.kubeconfig()),
        standalone("scheduler", &c.server.kubeconfig()),
    ];
    let ids: Vec<String> = s.iter().map(|s| s.identity.clone()).collect();
    let leader = eventually("a leader", || holder(&c, "kube-scheduler"));
    let li = ids
        .iter()
        .position(|i| *i == leader)
        .unwrap_or_else(|| panic!("lease held by {leader}, not one of {ids:?}"));
    c.node(&Node::new("node-1", "4"));
    c.create(&pod("first", json!({"app": "a"}), Some("100m"), json!({})));
    assert_eq!(c.bound("first"), "node-1");
    let ua = binding_record(&c, "first")["userAgent"].clone();
    assert!(
        ua.as_str().unwrap().contains(&ids[li]),
        "bound by {ua}, not the leader {}",
        ids[li]
    );
    let by_follower = audit_lines(&c).into_iter().find(|e| {
        e["userAgent"]
            .as_str()
            .is_some_and(|u| u.contains(&ids[1 - li]))
            && e["objectRef"]["resource"] == "pods"
            && e["verb"] != "list"
            && e["verb"] != "watch"
    });
    assert_eq!(by_follower, None, "the follower wrote pods");

    // SIGKILL: no release; the survivor waits out the lease: 15 s from the last renewal
    // it saw (dated by the renewal's own time), so at most 15 s after the kill, plus a
    // request or two.
    s[li].child.kill().unwrap();
    s[li].child.wait().unwrap();
    let took = until_holder(&c, "kube-scheduler", &ids[1 - li], Duration::from_secs(16));
    eprintln!("the survivor took over {took:?} after the leader was killed");
    c.create(&pod("second", json!({"app": "a"}), Some("100m"), json!({})));
    assert_eq!(c.bound("second"), "node-1");
    let ua = binding_record(&c, "second")["userAgent"].clone();
    assert!(ua.as_str().unwrap().contains(&ids[1 - li]), "bound by {ua}");

    // The survivor's own endpoints: health, and metrics counting what it scheduled.
    let survivor = &s[1 - li];
    assert_eq!(http_get(&format!("{}/healthz", survivor.metrics)), "ok");
    let metrics = http_get(&format!("{}/metrics", survivor.metrics));
    assert!(
        metrics.contains("scheduler_schedule_attempts_total"),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
    assert!(
        metrics.contains("leader_election_master_status{name=\"kube-scheduler\"} 1"),
        "{metrics}"
    );

    // SIGTERM: it stops, releases the Lease and exits 0.
    let term = Command::new("kill")
        .args(["-TERM", &s[1 - li].child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = s[1 - li].child.wait().unwrap();
    assert!(
        exit.success(),
        "skiff scheduler exits 0 after SIGTERM: {exit:?}"
    );
    assert_eq!(
        holder(&c, "kube-scheduler"),
        None,
        "the Lease was not released"
    );
}

/// Bad flags and an unreadable kubeconfig end the command with a clear message.
#[test]
fn the_standalone_scheduler_refuses_bad_flags_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(SKIFF);
        c.arg("scheduler").args(args);
        crate::common::run(c, None)
    };
    let missing = dir.path().join("nope.yaml");
    let out = run(&["--kubeconfig", missing.to_str().unwrap()]).fails();
    assert!(
        out.stderr.contains("read the kubeconfig") && out.stderr.contains("nope.yaml"),
        "{out:?}"
    );
    let out = run(&[
        "--kubeconfig",
        missing.to_str().unwrap(),
        "--leader-elect",
        "--leader-elect-lease-duration",
        "5s",
    ])
    .fails();
    assert!(
        out.stderr
            .contains("lease duration (5s) must be longer than the renew deadline (10s)"),
        "{out:?}"
    );
    let out = run(&["--kubeconfig", "k", "--leader-elect-retry-period", "2 s"]).fails();
    assert!(out.stderr.contains("is not a duration"), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

/// The server's own scheduler: bindings audited as system:kube-scheduler, the pod's
/// PodScheduled condition True, the Lease held, and its metrics on the server's /metrics.
#[test]
fn the_in_server_scheduler_binds_as_system_kube_scheduler() {
    let c = Cluster::start(VERSIONS[1]);
    c.node(&Node::new("node-1", "4"));
    c.create(&pod("web", json!({"app": "web"}), Some("100m"), json!({})));
    assert_eq!(c.bound("web"), "node-1");
    let e = binding_record(&c, "web");
    assert_eq!(e["user"]["username"], "system:kube-scheduler", "{e}");
    assert!(
        e["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kube-scheduler/"),
        "{e}"
    );
    let p = c.wait_pod("web", "PodScheduled is True", |p| {
        scheduled_condition(p).is_some_and(|c| c.status == "True")
    });
    assert!(scheduled_condition(&p).is_some());
    assert!(
        holder(&c, "kube-scheduler").is_some(),
        "the in-server scheduler holds no lease"
    );

    let metrics = c.server.curl("GET", "/metrics", &[]).ok().stdout;
    assert!(metrics.contains("apiserver_request_total"), "{metrics}");
    assert!(
        metrics.contains("scheduler_schedule_attempts_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leader_election_master_status{name=\"kube-scheduler\"} 1"),
        "{metrics}"
    );
    assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
}

/// The lines of `server`'s audit log that record a successful binding of `pod`.
fn bindings_in(server: &crate::common::Server, pod: &str) -> Vec<Value> {
    std::fs::read_to_string(server.dir.path().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["verb"] == "create"
                && e["objectRef"]["subresource"] == "binding"
                && e["objectRef"]["name"] == pod
                && e["responseStatus"]["code"] == 201
        })
        .collect()
}

/// The node `pod` is bound to, through `server`, once it is (polled: the two servers'
/// schedulers are watched only through their audit logs).
#[track_caller]
fn bound_through(server: &crate::common::Server, pod: &str) -> String {
    eventually(&format!("{pod} to be bound"), || {
        let out = server.kubectl(
            VERSIONS[1],
            &["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"],
        );
        (out.code == 0 && !out.stdout.is_empty()).then_some(out.stdout)
    })
}

/// Several servers on one etcd: one scheduler acts (its server's audit log holds every
/// binding, as system:kube-scheduler); when that server shuts down it releases the
/// Lease and the other server's scheduler takes over at once.
#[test]
fn servers_on_one_etcd_run_one_scheduler_and_hand_over_at_shutdown() {
    use crate::common::Server;
    let etcd = skiff_store::testing::EtcdCluster::start(1).expect("start etcd");
    let endpoints = etcd.endpoints().join(",");
    let servers = [
        Server::start_with_scheduler(&["--datastore-endpoint", &endpoints]),
        Server::start_with_scheduler(&["--datastore-endpoint", &endpoints]),
    ];
    crate::cluster::register_node(&servers[0], VERSIONS[1], &Node::new("node-1", "4"));
    let create = |s: &Server, name: &str| {
        let p = pod(name, json!({"app": "a"}), Some("100m"), json!({}));
        s.kubectl_with(
            VERSIONS[1],
            &["create", "-f", "-"],
            Some(&p.to_string()),
            &[],
        )
        .ok();
    };
    create(&servers[0], "first");
    assert_eq!(bound_through(&servers[0], "first"), "node-1");
    let first = eventually("the binding in one audit log", || {
        let found: Vec<usize> = (0..2)
            .filter(|&i| !bindings_in(&servers[i], "first").is_empty())
            .collect();
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(first.len(), 1, "both servers' schedulers bound the pod");
    let leader = first[0];
    let e = &bindings_in(&servers[leader], "first")[0];
    assert_eq!(e["user"]["username"], "system:kube-scheduler", "{e}");

    // SIGTERM: the leader's server drains, its scheduler stops and releases the Lease.
    let [a, b] = servers;
    let (mut stopping, survivor) = if leader == 0 { (a, b) } else { (b, a) };
    let term = Command::new("kill")
        .args(["-TERM", &stopping.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = stopping.child.wait().unwrap();
    assert!(exit.success(), "the server exits 0 after SIGTERM: {exit:?}");
    create(&survivor, "second");
    assert_eq!(bound_through(&survivor, "second"), "node-1");
    assert_eq!(bindings_in(&survivor, "second").len(), 1);
    assert!(bindings_in(&stopping, "second").is_empty());
}
