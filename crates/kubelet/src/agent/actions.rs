//! What a pod's sync should do with its containers, computed from the spec and what the
//! runtime reports, with no effects (the kubelet's `computePodActions`): the worker then
//! carries the actions out (starts, restarts through the back-off, probes).
//!
//! - Init containers run one at a time, in order; each must exit 0 before the next
//!   starts. A failed one is restarted unless the pod's restartPolicy is Never (then the
//!   pod fails). Sidecars (init containers with `restartPolicy: Always`) are started in
//!   their turn, do not block the next one once running, and are restarted whenever they
//!   end.
//! - App containers start once every init container is done; one that ended is restarted
//!   as the restartPolicy says (Always; OnFailure when its exit code is not 0; never with
//!   Never); a running one is probed. A container whose processes are gone without an
//!   exit status (a reboot) is started again unless the policy is Never.
//! - A pod that has finished (Succeeded or Failed) gets no actions.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::containers::{Container as RtContainer, RunState};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The container's first run.
    Start { container: Container, init: bool },
    /// Its last run ended (or was lost) and should run again, after its back-off.
    Restart {
        container: Container,
        init: bool,
        last: Box<RtContainer>,
    },
    /// It runs: probe it.
    Probe {
        container: Container,
        running: Box<RtContainer>,
    },
}

/// The latest run of each container name (highest attempt).
fn latest<'a>(cs: &'a [RtContainer], name: &str, init: bool) -> Option<&'a RtContainer> {
    cs.iter()
        .filter(|c| c.record.name == name && c.record.init == init)
        .max_by_key(|c| c.record.attempt)
}

/// The actions of one sync, in order.
pub fn compute(spec: &PodSpec, cs: &[RtContainer], finished: bool) -> Vec<Action> {
    let mut out = Vec::new();
    if finished {
        return out;
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    for ic in spec.init_containers.iter().flatten() {
        let sidecar = ic.restart_policy.as_deref() == Some("Always");
        match latest(cs, &ic.name, true) {
            None => {
                out.push(Action::Start {
                    container: ic.clone(),
                    init: true,
                });
                if !sidecar {
                    return out;
                }
            }
            Some(c) => match &c.state {
                RunState::Running if sidecar => {}
                RunState::Running => return out,
                RunState::Exited(e) if e.exit_code == 0 && !sidecar => {}
                _ => {
                    if sidecar || policy != "Never" {
                        out.push(Action::Restart {
                            container: ic.clone(),
                            init: true,
                            last: Box::new(c.clone()),
                        });
                    }
                    if !sidecar {
                        return out;
                    }
                }
            },
        }
    }
    for c in &spec.containers {
        match latest(cs, &c.name, false) {
            None => out.push(Action::Start {
                container: c.clone(),
                init: false,
            }),
            Some(rc) => {
                let again = match &rc.state {
                    RunState::Running => {
                        out.push(Action::Probe {
                            container: c.clone(),
                            running: Box::new(rc.clone()),
                        });
                        continue;
                    }
                    RunState::Exited(e) => match policy {
                        "Always" => true,
                        "OnFailure" => e.exit_code != 0,
                        _ => false,
                    },
                    RunState::Lost => policy != "Never",
                };
                if again {
                    out.push(Action::Restart {
                        container: c.clone(),
                        init: false,
                        last: Box::new(rc.clone()),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::containers::{ContainerRecord, ExitRecord};
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn run(name: &str, init: bool, attempt: u32, state: RunState) -> RtContainer {
        RtContainer {
            record: ContainerRecord {
                id: format!("{name}-{attempt}"),
                name: name.into(),
                init,
                attempt,
                ..Default::default()
            },
            state,
        }
    }

    fn exited(code: i32) -> RunState {
        RunState::Exited(ExitRecord {
            exit_code: code,
            finished: String::new(),
            oom_killed: false,
        })
    }

    /// (verb, container name) of each action.
    fn names(a: &[Action]) -> Vec<(&'static str, String)> {
        a.iter()
            .map(|a| match a {
                Action::Start { container, .. } => ("start", container.name.clone()),
                Action::Restart { container, .. } => ("restart", container.name.clone()),
                Action::Probe { container, .. } => ("probe", container.name.clone()),
            })
            .collect()
    }

    fn s(v: &str, n: &str) -> (&'static str, String) {
        let v: &'static str = match v {
            "start" => "start",
            "restart" => "restart",
            _ => "probe",
        };
        (v, n.to_string())
    }

    #[test]
    fn init_containers_run_in_order_before_the_app() {
        let p = spec(
            json!({"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]}),
        );
        assert_eq!(names(&compute(&p, &[], false)), [s("start", "a")]);
        let a_runs = [run("a", true, 0, RunState::Running)];
        assert!(compute(&p, &a_runs, false).is_empty());
        let a_done = [run("a", true, 0, exited(0))];
        assert_eq!(names(&compute(&p, &a_done, false)), [s("start", "b")]);
        let both = [run("a", true, 0, exited(0)), run("b", true, 0, exited(0))];
        assert_eq!(names(&compute(&p, &both, false)), [s("start", "app")]);
        // A failed init container is run again (its back-off is the worker's), and
        // nothing after it starts; with restartPolicy Never it is left failed.
        let a_failed = [run("a", true, 0, exited(1))];
        assert_eq!(names(&compute(&p, &a_failed, false)), [s("restart", "a")]);
        let mut never = p.clone();
        never.restart_policy = Some("Never".into());
        assert!(compute(&never, &a_failed, false).is_empty());
    }

    #[test]
    fn sidecars_start_in_turn_and_keep_running() {
        let p = spec(json!({"restartPolicy": "Never",
            "initContainers": [{"name": "side", "restartPolicy": "Always"}, {"name": "setup"}],
            "containers": [{"name": "app"}]}));
        assert_eq!(
            names(&compute(&p, &[], false)),
            [s("start", "side"), s("start", "setup")]
        );
        let cs = [
            run("side", true, 0, RunState::Running),
            run("setup", true, 0, exited(0)),
        ];
        assert_eq!(names(&compute(&p, &cs, false)), [s("start", "app")]);
        // A sidecar that ends is restarted even under restartPolicy Never.
        let cs = [
            run("side", true, 0, exited(0)),
            run("setup", true, 0, exited(0)),
            run("app", false, 0, RunState::Running),
        ];
        assert_eq!(
            names(&compute(&p, &cs, false)),
            [s("restart", "side"), s("probe", "app")]
        );
    }

    #[test]
    fn app_containers_follow_the_restart_policy() {
        let base = json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]});
        let cs = [
            run("a", false, 0, exited(0)),
            run("b", false, 2, exited(3)),
            run("b", false, 1, exited(0)),
            run("c", false, 0, RunState::Lost),
        ];
        let mut p = spec(base.clone());
        assert_eq!(
            names(&compute(&p, &cs, false)),
            [s("restart", "a"), s("restart", "b"), s("restart", "c")]
        );
        // The latest attempt decides.
        let Action::Restart { last, .. } = &compute(&p, &cs, false)[1] else {
            panic!()
        };
        assert_eq!(last.record.attempt, 2);
        p.restart_policy = Some("OnFailure".into());
        assert_eq!(
            names(&compute(&p, &cs, false)),
            [s("restart", "b"), s("restart", "c")]
        );
        p.restart_policy = Some("Never".into());
        assert!(compute(&p, &cs, false).is_empty());
        // Running containers are probed; a finished pod gets nothing.
        let running = [run("a", false, 0, RunState::Running)];
        assert_eq!(
            names(&compute(
                &spec(json!({"containers": [{"name": "a"}]})),
                &running,
                false
            )),
            [s("probe", "a")]
        );
        assert!(compute(&spec(base), &[], true).is_empty());
    }
}
