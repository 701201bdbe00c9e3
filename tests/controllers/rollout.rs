//! Deployments driven with kubectl as a user does: create, scale, a force-deleted pod
//! replaced, a rolling update watched step by step against maxSurge/maxUnavailable,
//! `kubectl rollout status|history|undo|pause|resume|restart`, ScalingReplicaSet events,
//! and a rollout stuck on an unschedulable request exceeding its progress deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::cluster::{running_ready, Cluster};
use crate::common::eventually;

/// The live (not terminating) pods matching `selector`.
fn live(c: &Cluster, selector: &str) -> Vec<Pod> {
    c.pods(selector)
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

/// Waits for exactly `n` live pods of app=web, all Running+Ready on image `img`.
#[track_caller]
fn ready_pods(c: &Cluster, n: usize, img: &str) -> Vec<Pod> {
    eventually(&format!("{n} ready pods of {img}"), || {
        let pods = live(c, "app=web");
        (pods.len() == n && pods.iter().all(|p| running_ready(p) && image(p) == img))
            .then_some(pods)
    })
}

fn get(c: &Cluster, what: &str, jsonpath: &str) -> String {
    c.kubectl(&["get", what, "-o", &format!("jsonpath={jsonpath}")])
        .ok()
        .stdout
}

fn replica_sets(c: &Cluster) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::default_namespaced(c.client.clone());
    c.rt.block_on(api.list(&ListParams::default().labels("app=web")))
        .expect("list replicasets")
        .items
}

fn deployment(c: &Cluster) -> Deployment {
    let api: Api<Deployment> = Api::default_namespaced(c.client.clone());
    c.rt.block_on(api.get("web")).expect("get deployment web")
}

#[track_caller]
fn rollout_ok(c: &Cluster) {
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .ok()
        .stdout;
    assert!(out.contains("successfully rolled out"), "{out}");
}

/// Lists the pods of app=web over and over (each list one consistent snapshot) until
/// stopped, checking the rolling-update bounds at every observed step.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    violations: Arc<Mutex<Vec<String>>>,
    steps: Arc<Mutex<usize>>,
}

impl Watch {
    fn start(c: &Cluster, replicas: usize, max_surge: usize, max_unavailable: usize) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(Mutex::new(0));
        let api: Api<Pod> = Api::default_namespaced(c.client.clone());
        let handle = c.rt.handle().clone();
        let thread = std::thread::spawn({
            let (stop, violations, steps) = (stop.clone(), violations.clone(), steps.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(list) =
                        handle.block_on(api.list(&ListParams::default().labels("app=web")))
                    else {
                        continue;
                    };
                    let live: Vec<&Pod> = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .collect();
                    let ready = live.iter().filter(|p| running_ready(p)).count();
                    *steps.lock().unwrap() += 1;
                    if ready + max_unavailable < replicas || live.len() > replicas + max_surge {
                        let images: Vec<String> = live
                            .iter()
                            .map(|p| format!("{}({})", image(p), running_ready(p)))
                            .collect();
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("ready {ready}, total {}: {images:?}", live.len()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Watch {
            stop,
            thread: Some(thread),
            violations,
            steps,
        }
    }

    /// Stops watching; panics on any step outside the bounds.
    #[track_caller]
    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "rolling update out of bounds: {v:#?}");
        assert!(*self.steps.lock().unwrap() > 0, "no step observed");
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

per_version!(a_user_creates_scales_and_rolls_a_deployment);

fn a_user_creates_scales_and_rolls_a_deployment(kubectl: &'static str) {
    let c = Cluster::start(kubectl);
    let _h = c.hollow(3, "rn-");
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=example/web:1",
        "--replicas=3",
    ])
    .ok();
    rollout_ok(&c);
    ready_pods(&c, 3, "example/web:1");
    assert_eq!(
        get(
            &c,
            "deployment/web",
            "{.status.readyReplicas}/{.status.replicas}"
        ),
        "3/3"
    );
    let wide = c.kubectl(&["get", "deployment", "web"]).ok().stdout;
    assert!(wide.contains("3/3"), "{wide}");

    // Scale up and down.
    c.kubectl(&["scale", "deployment", "web", "--replicas=5"])
        .ok();
    rollout_ok(&c);
    ready_pods(&c, 5, "example/web:1");
    c.kubectl(&["scale", "deployment", "web", "--replicas=4"])
        .ok();
    ready_pods(&c, 4, "example/web:1");
    eventually("readyReplicas 4", || {
        (get(
            &c,
            "deployment/web",
            "{.status.readyReplicas}/{.status.replicas}",
        ) == "4/4")
            .then_some(())
    });

    // A force-deleted pod is replaced.
    let victim = ready_pods(&c, 4, "example/web:1")[0]
        .metadata
        .name
        .clone()
        .unwrap();
    c.kubectl(&["delete", "pod", &victim, "--grace-period=0", "--force"])
        .ok();
    let pods = eventually("a replacement pod", || {
        let pods = live(&c, "app=web");
        (pods.len() == 4
            && pods.iter().all(running_ready)
            && pods
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(&victim)))
        .then_some(pods)
    });
    assert_eq!(pods.len(), 4);

    // ScalingReplicaSet events, in `kubectl get events` and `kubectl describe`.
    let events = eventually("ScalingReplicaSet events", || {
        let out = c
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "reason=ScalingReplicaSet",
            ])
            .ok()
            .stdout;
        (out.contains("Scaled up replica set web-") && out.contains("Scaled down replica set web-"))
            .then_some(out)
    });
    assert!(events.contains("deployment/web"), "{events}");
    let describe = c.kubectl(&["describe", "deployment", "web"]).ok().stdout;
    assert!(
        describe.contains("ScalingReplicaSet") && describe.contains("Scaled up replica set web-"),
        "{describe}"
    );

    // A rolling update: 4 replicas, the default 25% surge (1) and unavailable (1).
    let watch = Watch::start(&c, 4, 1, 1);
    c.kubectl(&["set", "image", "deployment/web", "web=example/web:2"])
        .ok();
    rollout_ok(&c);
    ready_pods(&c, 4, "example/web:2");
    watch.finish();
    assert_eq!(
        get(
            &c,
            "deployment/web",
            "{.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}"
        ),
        "4/4/4"
    );
    let history = c
        .kubectl(&["rollout", "history", "deployment/web"])
        .ok()
        .stdout;
    let revisions: Vec<&str> = history
        .lines()
        .filter(|l| l.trim_start().starts_with(|ch: char| ch.is_ascii_digit()))
        .collect();
    assert_eq!(revisions.len(), 2, "{history}");
    let r1 = c
        .kubectl(&["rollout", "history", "deployment/web", "--revision", "1"])
        .ok()
        .stdout;
    assert!(r1.contains("example/web:1"), "{r1}");

    // Undo returns to :1 (revision 3).
    c.kubectl(&["rollout", "undo", "deployment/web"]).ok();
    rollout_ok(&c);
    ready_pods(&c, 4, "example/web:1");
    assert_eq!(
        deployment(&c).metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );

    // Paused: a new image changes nothing until resumed.
    c.kubectl(&["rollout", "pause", "deployment/web"]).ok();
    c.kubectl(&["set", "image", "deployment/web", "web=example/web:3"])
        .ok();
    eventually("the paused deployment observed", || {
        let d = deployment(&c);
        let s = d.status?;
        (s.observed_generation == d.metadata.generation
            && s.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            }))
        .then_some(())
    });
    assert!(
        replica_sets(&c).iter().all(|rs| {
            rs.spec
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                != Some("example/web:3")
        }),
        "a paused deployment made a ReplicaSet of :3"
    );
    ready_pods(&c, 4, "example/web:1");
    c.kubectl(&["rollout", "resume", "deployment/web"]).ok();
    rollout_ok(&c);
    ready_pods(&c, 4, "example/web:3");

    // Restart: a new revision whose template carries restartedAt.
    let before =
        deployment(&c).metadata.annotations.unwrap()["deployment.kubernetes.io/revision"].clone();
    c.kubectl(&["rollout", "restart", "deployment/web"]).ok();
    rollout_ok(&c);
    let d = deployment(&c);
    let after = d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"].clone();
    assert_eq!(
        after.parse::<u32>().unwrap(),
        before.parse::<u32>().unwrap() + 1
    );
    let pods = ready_pods(&c, 4, "example/web:3");
    assert!(
        pods.iter().all(|p| p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt"))),
        "restarted pods lack restartedAt"
    );
}

/// kubectl's rollout status is the same code in both versions; one version suffices.
#[test]
fn a_stuck_rollout_exceeds_its_progress_deadline_and_undo_recovers() {
    let c = Cluster::start(crate::common::VERSIONS[1]);
    let _h = c.hollow(2, "pd-");
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=example/web:1",
        "--replicas=3",
    ])
    .ok();
    rollout_ok(&c);
    c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":10}}"#,
    ])
    .ok();
    // 500 CPUs: no hollow node (4 CPUs) fits the new pods.
    c.kubectl(&[
        "set",
        "resources",
        "deployment",
        "web",
        "--requests=cpu=500",
    ])
    .ok();
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=50s"])
        .fails();
    assert!(
        out.stderr.contains("exceeded its progress deadline"),
        "{out:?}"
    );
    let reason = get(
        &c,
        "deployment/web",
        r#"{.status.conditions[?(@.type=="Progressing")].reason}"#,
    );
    assert_eq!(reason, "ProgressDeadlineExceeded");
    // The old pods still serve: 3 ready on the old template (no requests).
    let old_ready = live(&c, "app=web")
        .into_iter()
        .filter(|p| {
            running_ready(p)
                && p.spec.as_ref().unwrap().containers[0]
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .is_none()
        })
        .count();
    assert_eq!(old_ready, 3);
    assert_eq!(get(&c, "deployment/web", "{.status.readyReplicas}"), "3");

    c.kubectl(&["rollout", "undo", "deployment/web"]).ok();
    rollout_ok(&c);
    ready_pods(&c, 3, "example/web:1");
    let reason = get(
        &c,
        "deployment/web",
        r#"{.status.conditions[?(@.type=="Progressing")].reason}"#,
    );
    assert_eq!(reason, "NewReplicaSetAvailable");
}
