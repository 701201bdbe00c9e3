//! Starting a pod's container: its image (pull policies, back-off, pull secrets), its
//! configuration, the runtime's start and the postStart hook; and restarting one that
//! ended, with Kubernetes' back-off (CrashLoopBackOff).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Worker {
    /// Restarts an exited container unless it is in back-off.
    pub(super) async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        last: &RtContainer,
        wake: &mut Duration,
    ) {
        let key = c.name.clone();
        let ran = match (&last.record.started, &last.state) {
            (Some(s), RunState::Exited(e)) => {
                let a: Option<jiff::Timestamp> = s.parse().ok();
                let b: Option<jiff::Timestamp> = e.finished.parse().ok();
                match (a, b) {
                    (Some(a), Some(b)) => b.duration_since(a).try_into().unwrap_or(Duration::ZERO),
                    _ => Duration::ZERO,
                }
            }
            _ => Duration::ZERO,
        };
        if ran >= BACKOFF_RESET {
            self.restart_backoff.remove(&key);
        }
        let finished_ago = match &last.state {
            RunState::Exited(e) => since(&e.finished).unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        };
        if let Some(b) = self.restart_backoff.get(&key) {
            let now = Instant::now();
            if now < b.until {
                let left = b.until - now;
                let msg = format!(
                    "back-off {} restarting failed container={} pod={}",
                    go_duration(b.delay),
                    c.name,
                    pod_key(pod)
                );
                let newly = self.facts.waiting.get(&key).map(|w| w.reason.as_str())
                    != Some("CrashLoopBackOff");
                if newly {
                    self.sh.events.container(
                        pod,
                        &c.name,
                        init,
                        true,
                        "BackOff",
                        "Back-off restarting failed container".to_string()
                            + &format!(" {} in pod {}", c.name, pod_key(pod)),
                    );
                }
                self.facts.waiting.insert(
                    key,
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: msg,
                    },
                );
                *wake = (*wake).min(left);
                return;
            }
        }
        // Next back-off counts from this restart.
        let delay = match self.restart_backoff.get(&key) {
            Some(b) => (b.delay * 2).min(BACKOFF_MAX),
            None => BACKOFF_START,
        };
        let _ = finished_ago;
        self.restart_backoff.insert(
            key,
            Backoff {
                delay,
                until: Instant::now() + delay,
            },
        );
        // Keep only the last exited instance (for lastState and `logs --previous`).
        let rt = self.sh.rt.clone();
        let uid = self.uid.clone();
        let name = c.name.clone();
        let keep = last.record.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for old in rt.pod_containers(&uid) {
                if old.record.name == name
                    && old.record.id != keep
                    && old.state != RunState::Running
                {
                    rt.remove(&old.record);
                }
            }
        })
        .await;
        self.start(pod, c, init, last.record.attempt + 1, wake)
            .await;
    }

    pub(super) async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        attempt: u32,
        wake: &mut Duration,
    ) {
        let key = c.name.clone();
        let image = c.image.clone().unwrap_or_default();
        if image.is_empty() {
            self.facts.waiting.insert(
                key,
                Waiting {
                    reason: "InvalidImageName".into(),
                    message: "the container has no image".into(),
                },
            );
            return;
        }
        // A container that could not be created waits out its back-off.
        if let (Some(b), Some(w)) = (self.restart_backoff.get(&key), self.facts.waiting.get(&key)) {
            if Instant::now() < b.until && w.reason != "CrashLoopBackOff" {
                *wake = (*wake).min(b.until - Instant::now());
                return;
            }
        }
        // Image.
        if let Some(b) = self.image_backoff.get(&key) {
            if Instant::now() < b.until {
                let event = format!("Back-off pulling image {image:?}");
                // The status keeps the last pull's error, as the kubelet (1.30+) does.
                let message = match self.facts.waiting.get(&key) {
                    Some(w) if w.reason == "ImagePullBackOff" => w.message.clone(),
                    Some(w) if w.reason == "ErrImagePull" => {
                        format!("{event}: ErrImagePull: {}", w.message)
                    }
                    _ => event.clone(),
                };
                if self.facts.waiting.get(&key).map(|w| w.reason.as_str())
                    != Some("ImagePullBackOff")
                {
                    self.sh
                        .events
                        .container(pod, &c.name, init, false, "BackOff", event);
                }
                self.facts.waiting.insert(
                    key,
                    Waiting {
                        reason: "ImagePullBackOff".into(),
                        message,
                    },
                );
                *wake = (*wake).min(b.until - Instant::now());
                return;
            }
        }
        let policy = PullPolicy::of(c.image_pull_policy.as_deref(), &image);
        let pulling = policy == PullPolicy::Always || self.sh.images.present(&image).is_none();
        if pulling && policy != PullPolicy::Never {
            self.sh.events.container(
                pod,
                &c.name,
                init,
                false,
                "Pulling",
                format!("Pulling image {image:?}"),
            );
        }
        let auths = crate::agent::pull_secrets(&self.sh.client, pod).await;
        let t0 = Instant::now();
        let resolved = match self.sh.images.ensure(&image, policy, auths.as_ref()).await {
            Ok((r, pulled)) => {
                self.image_backoff.remove(&key);
                match pulled {
                    Some(d) => self.sh.events.container(
                        pod,
                        &c.name,
                        init,
                        false,
                        "Pulled",
                        format!(
                            "Successfully pulled image {image:?} in {} ({} including waiting)",
                            go_duration(d),
                            go_duration(t0.elapsed())
                        ),
                    ),
                    None => self.sh.events.container(
                        pod,
                        &c.name,
                        init,
                        false,
                        "Pulled",
                        format!("Container image {image:?} already present on machine"),
                    ),
                }
                r
            }
            Err(f) => {
                let delay = match self.image_backoff.get(&key) {
                    Some(b) => (b.delay * 2).min(BACKOFF_MAX),
                    None => BACKOFF_START,
                };
                self.image_backoff.insert(
                    key.clone(),
                    Backoff {
                        delay,
                        until: Instant::now() + delay,
                    },
                );
                self.sh.events.container(
                    pod,
                    &c.name,
                    init,
                    true,
                    "Failed",
                    format!("Failed to pull image {image:?}: {}", f.message),
                );
                self.sh.events.container(
                    pod,
                    &c.name,
                    init,
                    true,
                    "Failed",
                    format!("Error: {}", f.reason),
                );
                self.facts.waiting.insert(
                    key,
                    Waiting {
                        reason: f.reason.to_string(),
                        message: f.message,
                    },
                );
                *wake = (*wake).min(delay);
                return;
            }
        };
        // Environment.
        let host_ip = self.sh.cfg.node_ip.to_string();
        let env = match crate::agent::volumes::environment(
            &self.sh.client,
            &self.sh.services,
            pod,
            c,
            &host_ip,
            (self.sh.cfg.cpu_milli, self.sh.cfg.memory_bytes),
        )
        .await
        {
            Ok(e) => e,
            Err(e) => {
                self.config_error(pod, c, init, key, e.0);
                *wake = (*wake).min(Duration::from_secs(2));
                return;
            }
        };
        let cfg = match self.container_config(pod, c, init, attempt, &resolved, env) {
            Ok(cfg) => cfg,
            Err(msg) => {
                self.config_error(pod, c, init, key, msg);
                *wake = (*wake).min(Duration::from_secs(2));
                return;
            }
        };
        let rt = self.sh.rt.clone();
        let started = tokio::task::spawn_blocking(move || rt.start(cfg)).await;
        match started {
            Ok(Ok(rec)) => {
                self.sh.metrics.container_started(init);
                self.facts.waiting.remove(&key);
                self.sh.events.container(
                    pod,
                    &c.name,
                    init,
                    false,
                    "Created",
                    format!("Created container: {}", c.name),
                );
                self.sh.events.container(
                    pod,
                    &c.name,
                    init,
                    false,
                    "Started",
                    format!("Started container {}", c.name),
                );
                *wake = (*wake).min(Duration::from_millis(200));
                if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
                    if let Err(msg) = probes::post_start(&self.sh, c, &rec, &hook).await {
                        self.sh.events.container(
                            pod,
                            &c.name,
                            init,
                            true,
                            "FailedPostStartHook",
                            format!("PostStartHook failed: {msg}"),
                        );
                        let grace = Duration::from_secs(spec_grace(pod));
                        self.kill_one(&rec, grace).await;
                    }
                }
            }
            Ok(Err(e)) => {
                let reason = match &e {
                    StartError::Config(_) => "CreateContainerConfigError",
                    StartError::Create(_) => "CreateContainerError",
                    StartError::Run(_) => "RunContainerError",
                };
                self.sh.metrics.container_start_failed(init, reason);
                self.sh
                    .events
                    .container(pod, &c.name, init, true, "Failed", format!("Error: {e}"));
                self.facts.waiting.insert(
                    key.clone(),
                    Waiting {
                        reason: reason.into(),
                        message: e.to_string(),
                    },
                );
                // A container that cannot start is retried with the restart back-off.
                let delay = match self.restart_backoff.get(&key) {
                    Some(b) => (b.delay * 2).min(BACKOFF_MAX),
                    None => BACKOFF_START,
                };
                self.restart_backoff.insert(
                    key,
                    Backoff {
                        delay,
                        until: Instant::now() + delay,
                    },
                );
                *wake = (*wake).min(delay);
            }
            Err(_) => {}
        }
    }

    /// A container whose configuration cannot be made (a missing key, a bad volume …):
    /// a `Failed` event and CreateContainerConfigError until the next try.
    fn config_error(&mut self, pod: &Pod, c: &Container, init: bool, key: String, msg: String) {
        self.sh
            .events
            .container(pod, &c.name, init, true, "Failed", format!("Error: {msg}"));
        self.facts.waiting.insert(
            key,
            Waiting {
                reason: "CreateContainerConfigError".into(),
                message: msg,
            },
        );
    }
}
