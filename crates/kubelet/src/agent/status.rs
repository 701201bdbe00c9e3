//! A pod's status from what runs: phase, conditions and container statuses as the
//! kubelet reports them (and as `kubectl get pods` reads them). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

use super::containers::{Container as RtContainer, RunState};

/// Why a container is waiting, when the worker knows better than "ContainerCreating".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// What the worker knows besides the runtime's containers.
#[derive(Debug, Default)]
pub struct Facts {
    pub sandbox_ready: bool,
    pub waiting: BTreeMap<String, Waiting>,
    /// Containers that passed their readiness probe (by container ID); containers
    /// without one are ready while running.
    pub ready: BTreeMap<String, bool>,
    pub host_ip: Option<String>,
    pub pod_ip: Option<String>,
    pub start_time: Option<String>,
    /// The message read from each exited container's termination log, by ID.
    pub messages: BTreeMap<String, String>,
    /// The pod is being deleted: exited containers are not restarting.
    pub terminating: bool,
    /// The node refused the pod (e.g. SysctlForbidden): it failed without running.
    pub rejected: Option<Waiting>,
    /// The agent evicted the pod: (reason, message); its phase is Failed.
    pub evicted: Option<(String, String)>,
    /// The pod passed (or skipped, being under way) the agent's admission.
    pub admitted: bool,
}

/// The containers of one name, latest attempt first.
pub fn by_name(cs: &[RtContainer]) -> BTreeMap<String, Vec<&RtContainer>> {
    let mut m: BTreeMap<String, Vec<&RtContainer>> = BTreeMap::new();
    for c in cs {
        m.entry(c.record.name.clone()).or_default().push(c);
    }
    for v in m.values_mut() {
        v.sort_by_key(|c| std::cmp::Reverse(c.record.attempt));
    }
    m
}

fn terminated(c: &RtContainer, facts: &Facts) -> Value {
    let id = format!("skiff://{}", c.record.id);
    match &c.state {
        RunState::Exited(e) => {
            let reason = if e.oom_killed {
                "OOMKilled"
            } else if e.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            let mut t = json!({
                "exitCode": e.exit_code,
                "reason": reason,
                "startedAt": c.record.started.clone().unwrap_or_else(|| c.record.created.clone()),
                "finishedAt": e.finished,
                "containerID": id,
            });
            if let Some(m) = facts.messages.get(&c.record.id).filter(|m| !m.is_empty()) {
                t["message"] = json!(m);
            }
            t
        }
        _ => json!({
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
            "containerID": id,
        }),
    }
}

/// One entry of `containerStatuses` / `initContainerStatuses`.
fn container_status(
    spec: &Container,
    runs: Option<&Vec<&RtContainer>>,
    facts: &Facts,
    default_waiting: &str,
) -> (Value, Kind) {
    let latest = runs.and_then(|v| v.first()).copied();
    let previous = runs.and_then(|v| v.get(1)).copied();
    let mut s = json!({
        "name": spec.name,
        "image": spec.image.clone().unwrap_or_default(),
        "imageID": latest.map(|c| if c.record.image_ref.is_empty() { c.record.image_id.clone() } else { c.record.image_ref.clone() }).unwrap_or_default(),
        "restartCount": latest.map(|c| c.record.attempt).unwrap_or(0),
        "ready": false,
        "started": false,
        "lastState": {},
    });
    let waiting = facts.waiting.get(&spec.name);
    let kind;
    match latest {
        None => {
            let w = waiting.cloned().unwrap_or(Waiting {
                reason: default_waiting.to_string(),
                message: String::new(),
            });
            let mut st = json!({"reason": w.reason});
            if !w.message.is_empty() {
                st["message"] = json!(w.message);
            }
            s["state"] = json!({"waiting": st});
            kind = Kind::NeverRan;
        }
        Some(c) => {
            s["containerID"] = json!(format!("skiff://{}", c.record.id));
            match &c.state {
                RunState::Running => {
                    s["state"] = json!({"running": {"startedAt": c.record.started.clone().unwrap_or_else(|| c.record.created.clone())}});
                    s["started"] = json!(true);
                    // Without a verdict yet, only a container without probes is ready.
                    let unprobed = spec.readiness_probe.is_none() && spec.startup_probe.is_none();
                    let ready = facts.ready.get(&c.record.id).copied().unwrap_or(unprobed);
                    // A terminating pod stays ready while it passes its probes: its endpoints are
                    // then "serving", which the proxies fall back to while no other pod is ready.
                    s["ready"] = json!(ready);
                    if let Some(p) = previous {
                        s["lastState"] = json!({"terminated": terminated(p, facts)});
                    }
                    kind = Kind::Running;
                }
                _ => {
                    let code = match &c.state {
                        RunState::Exited(e) => e.exit_code,
                        _ => 137,
                    };
                    match waiting.filter(|_| !facts.terminating) {
                        Some(w) => {
                            s["state"] =
                                json!({"waiting": {"reason": w.reason, "message": w.message}});
                            s["lastState"] = json!({"terminated": terminated(c, facts)});
                            kind = Kind::Restarting;
                        }
                        None => {
                            s["state"] = json!({"terminated": terminated(c, facts)});
                            if let Some(p) = previous {
                                s["lastState"] = json!({"terminated": terminated(p, facts)});
                            }
                            kind = Kind::Stopped { code };
                        }
                    }
                }
            }
        }
    }
    (s, kind)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NeverRan,
    Running,
    Restarting,
    Stopped { code: i32 },
}

fn condition(old: Option<&Value>, typ: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .and_then(|o| o.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|c| c["type"] == typ));
    let since = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c =
        json!({"type": typ, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// Whether an init container counts as done (for a sidecar: started).
fn init_done(c: &Container, runs: Option<&Vec<&RtContainer>>) -> bool {
    let sidecar = c.restart_policy.as_deref() == Some("Always");
    match runs.and_then(|v| v.first()) {
        None => false,
        Some(l) => match &l.state {
            RunState::Running => sidecar,
            RunState::Exited(e) => e.exit_code == 0 && !sidecar,
            RunState::Lost => false,
        },
    }
}

/// The pod's whole status; `old` is the status the API has (for transition times and
/// the scheduler's condition).
pub fn pod_status(pod: &Pod, cs: &[RtContainer], facts: &Facts, now: &str) -> Value {
    let old = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    if let Some(r) = &facts.rejected {
        // As the kubelet's rejectPod: only phase, reason, message and QoS class.
        let mut status = json!({
            "phase": "Failed",
            "reason": r.reason,
            "message": format!("Pod was rejected: {}", r.message),
            "qosClass": super::podspec::qos_class(pod),
        });
        if let Some(ip) = &facts.host_ip {
            status["hostIP"] = json!(ip);
            status["hostIPs"] = json!([{"ip": ip}]);
        }
        return status;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let runs = by_name(cs);
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");

    let inits = spec.init_containers.clone().unwrap_or_default();
    let mut init_statuses = Vec::new();
    let mut initialized = true;
    let mut init_failed = false;
    for ic in &inits {
        let r = runs.get(&ic.name);
        let (st, kind) = container_status(ic, r, facts, "PodInitializing");
        let sidecar = ic.restart_policy.as_deref() == Some("Always");
        if !init_done(ic, r) {
            initialized = false;
            if !sidecar && policy == "Never" {
                if let Kind::Stopped { code } = kind {
                    if code != 0 {
                        init_failed = true;
                    }
                }
            }
        }
        init_statuses.push(st);
    }
    // Containers wait for the init containers with PodInitializing.
    let mut statuses = Vec::new();
    let (mut never_ran, mut running, mut restarting) = (0, 0, 0);
    let mut stopped_codes = Vec::new();
    let mut all_ready = true;
    for c in &spec.containers {
        let default = if initialized {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let (st, kind) = container_status(c, runs.get(&c.name), facts, default);
        if st["ready"] != json!(true) {
            all_ready = false;
        }
        match kind {
            Kind::NeverRan => never_ran += 1,
            Kind::Running => running += 1,
            Kind::Restarting => restarting += 1,
            Kind::Stopped { code } => stopped_codes.push(code),
        }
        statuses.push(st);
    }
    let phase = if init_failed {
        "Failed"
    } else if !initialized || never_ran > 0 {
        "Pending"
    } else if running > 0 || restarting > 0 {
        "Running"
    } else {
        let all_ok = stopped_codes.iter().all(|c| *c == 0);
        match policy {
            "Always" if !facts.terminating => "Running",
            "OnFailure" if !all_ok && !facts.terminating => "Running",
            _ if all_ok => "Succeeded",
            _ => "Failed",
        }
    };
    let phase = if facts.evicted.is_some() {
        "Failed"
    } else {
        phase
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let completed = terminal.then_some("PodCompleted");
    let mut conditions = vec![
        condition(
            old.as_ref(),
            "PodReadyToStartContainers",
            facts.sandbox_ready,
            None,
            now,
        ),
        condition(
            old.as_ref(),
            "Initialized",
            initialized || (terminal && inits.is_empty()),
            if initialized {
                completed
            } else {
                Some("ContainersNotInitialized")
            },
            now,
        ),
        condition(
            old.as_ref(),
            "Ready",
            all_ready && !terminal,
            if terminal {
                completed
            } else if all_ready {
                None
            } else {
                Some("ContainersNotReady")
            },
            now,
        ),
        condition(
            old.as_ref(),
            "ContainersReady",
            all_ready && !terminal,
            if terminal {
                completed
            } else if all_ready {
                None
            } else {
                Some("ContainersNotReady")
            },
            now,
        ),
    ];
    if let Some(sched) = old
        .as_ref()
        .and_then(|o| o.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|c| c["type"] == "PodScheduled"))
    {
        conditions.push(sched.clone());
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "containerStatuses": statuses,
        "qosClass": super::podspec::qos_class(pod),
    });
    if let Some((reason, message)) = &facts.evicted {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
        // As the kubelet with PodDisruptionConditions: why the pod is going away (a pod
        // rejected at admission never ran: no such condition).
        if !message.starts_with("Pod was rejected") {
            let mut c = condition(
                old.as_ref(),
                "DisruptionTarget",
                true,
                Some("TerminationByKubelet"),
                now,
            );
            c["message"] = json!(message);
            if let Some(cs) = status["conditions"].as_array_mut() {
                cs.push(c);
            }
        }
    }
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ip) = &facts.host_ip {
        status["hostIP"] = json!(ip);
        status["hostIPs"] = json!([{"ip": ip}]);
    }
    if let Some(ip) = &facts.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(t) = &facts.start_time {
        status["startTime"] = json!(t);
    }
    status
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::agent::containers::{ContainerRecord, ExitRecord};

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": "img"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}
        }))
        .unwrap()
    }

    fn run(attempt: u32, state: RunState) -> RtContainer {
        RtContainer {
            record: ContainerRecord {
                id: format!("id{attempt}"),
                pod_uid: "u".into(),
                namespace: "default".into(),
                pod: "p".into(),
                name: "c".into(),
                attempt,
                init: false,
                image: "img".into(),
                image_id: "sha256:1".into(),
                image_ref: "reg/img@sha256:1".into(),
                created: "2026-01-01T00:00:00Z".into(),
                started: Some("2026-01-01T00:00:01Z".into()),
                cgroup: String::new(),
                log_path: Default::default(),
                termination_log: None,
                stop_signal: "SIGTERM".into(),
                ..Default::default()
            },
            state,
        }
    }

    fn exited(code: i32, oom: bool) -> RunState {
        RunState::Exited(ExitRecord {
            exit_code: code,
            finished: "2026-01-01T00:00:02Z".into(),
            oom_killed: oom,
        })
    }

    #[test]
    fn a_pending_pod_waits_in_container_creating() {
        let f = Facts::default();
        let s = pod_status(&pod("Always"), &[], &f, "now");
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        assert_eq!(s["qosClass"], "BestEffort");
    }

    #[test]
    fn crash_loop_shows_back_off_last_state_and_restarts() {
        let mut f = Facts {
            sandbox_ready: true,
            ..Default::default()
        };
        f.waiting.insert(
            "c".into(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 10s restarting failed container=c pod=p_default(u)".into(),
            },
        );
        let cs = [run(1, exited(3, false)), run(0, exited(3, false))];
        let s = pod_status(&pod("Always"), &cs, &f, "now");
        assert_eq!(s["phase"], "Running");
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 3);
        assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(c["restartCount"], 1);
        assert_eq!(s["conditions"][2]["status"], "False");
    }

    #[test]
    fn a_probed_container_is_not_ready_before_its_first_verdict() {
        let mut p = pod("Always");
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].readiness_probe = Some(Default::default());
        }
        let mut f = Facts::default();
        let s = pod_status(&p, &[run(0, RunState::Running)], &f, "now");
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        f.ready.insert("id0".into(), true);
        let s = pod_status(&p, &[run(0, RunState::Running)], &f, "now");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
    }

    #[test]
    fn terminal_phases_and_oom() {
        let f = Facts::default();
        let s = pod_status(&pod("Never"), &[run(0, exited(137, true))], &f, "now");
        assert_eq!(s["phase"], "Failed");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["reason"],
            "OOMKilled"
        );
        let s = pod_status(&pod("OnFailure"), &[run(0, exited(0, false))], &f, "now");
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        let s = pod_status(&pod("Always"), &[run(0, RunState::Running)], &f, "now");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(s["conditions"][2]["type"], "Ready");
        assert_eq!(s["conditions"][2]["status"], "True");
        // The scheduler's condition is kept.
        assert_eq!(s["conditions"][4]["type"], "PodScheduled");
    }
}
