//! One pod worker per pod UID, in the shape of the kubelet's pod workers: it always acts
//! on the latest desired state (a watch channel; intermediate updates are skipped),
//! syncs (sandbox, volumes, init containers in order, then the containers, restarting
//! them per restartPolicy with Kubernetes' back-off), and when the pod is deleted
//! terminates it (stop signal, grace period, SIGKILL), deletes it with grace 0 and
//! removes what it left on the node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::actions::Action;
use super::containers::{
    now_rfc3339, Container as RtContainer, ContainerRecord, RunState, StartError,
};
use super::images::PullPolicy;
use super::status::{Facts, Waiting};
use super::{probes, Shared};

/// How a pod's containers' waiting message starts while its sandbox cannot be made.
const SANDBOX_FAILED: &str = "Failed to create pod sandbox";

mod config;
mod start;

/// Kubernetes' container restart back-off: 10 s doubling to 5 minutes.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// A worker syncs at least this often; the PLEG wakes it at once when one of its
/// containers changes state, and probes, back-offs and hooks set their own times.
const RESYNC: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Backoff {
    delay: Duration,
    /// The restart may not happen before this.
    until: Instant,
}

pub struct Worker {
    pub(super) sh: Arc<Shared>,
    pub(super) uid: String,
    pub(super) rx: watch::Receiver<Option<Arc<Pod>>>,
    facts: Facts,
    restart_backoff: HashMap<String, Backoff>,
    image_backoff: HashMap<String, Backoff>,
    last_status: Option<Value>,
    probes: probes::State,
    /// Volumes are refreshed at most this often (configMap/secret updates).
    volumes_at: Option<Instant>,
    volume_paths: BTreeMap<String, std::path::PathBuf>,
    /// When this worker first saw the pod; `None` once its start was counted.
    first_seen: Option<Instant>,
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn since(ts: &str) -> Option<Duration> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    let d = jiff::Timestamp::now().duration_since(t);
    d.try_into().ok()
}

impl Worker {
    pub fn new(sh: Arc<Shared>, uid: String, rx: watch::Receiver<Option<Arc<Pod>>>) -> Worker {
        Worker {
            sh,
            uid,
            rx,
            facts: Facts::default(),
            restart_backoff: HashMap::new(),
            image_backoff: HashMap::new(),
            last_status: None,
            probes: probes::State::default(),
            volumes_at: None,
            volume_paths: BTreeMap::new(),
            first_seen: Some(Instant::now()),
        }
    }

    pub async fn run(mut self) {
        loop {
            let pod = self.rx.borrow_and_update().clone();
            let wake = match &pod {
                None => {
                    self.terminate(None, Duration::from_secs(2)).await;
                    self.cleanup(None).await;
                    return;
                }
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    let grace = p
                        .metadata
                        .deletion_grace_period_seconds
                        .unwrap_or(30)
                        .max(0) as u64;
                    let deadline = Instant::now() + Duration::from_secs(grace);
                    self.drain_endpoints(p, Duration::from_secs(grace)).await;
                    let grace = deadline.saturating_duration_since(Instant::now());
                    self.terminate(Some(p), grace).await;
                    self.facts.terminating = true;
                    let cs = self.containers().await;
                    self.report(p, &cs).await;
                    let api: Api<Pod> = Api::namespaced(
                        self.sh.client.clone(),
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                    );
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: p.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    if let Err(e) = api
                        .delete(p.metadata.name.as_deref().unwrap_or_default(), &dp)
                        .await
                    {
                        if !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                            tracing::warn!(pod = %pod_key(p), error = %e, "deleting the terminated pod");
                        }
                    }
                    self.cleanup(Some(p)).await;
                    return;
                }
                Some(p) => {
                    self.evict_if_asked(p).await;
                    self.sync(p).await
                }
            };
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // The manager is gone (agent shutdown): leave the pod running.
                        return;
                    }
                }
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Before a deleted pod that serves a Service is stopped, waits (a bounded while)
    /// for its endpoint to be taken out of load-balancing: until no EndpointSlice counts
    /// it ready, then until this node's proxy has applied a sync since (and a moment
    /// for the other nodes' proxies, which apply the same change at the same time), or
    /// without a local proxy a fixed moment. Stopping it first would refuse the requests
    /// proxies still send it (Kubernetes leaves that race to preStop sleeps; skiff closes
    /// it, so a rolling update loses no request).
    async fn drain_endpoints(&self, pod: &Pod, grace: Duration) {
        /// What the other nodes' proxies get beyond this node's.
        const MARGIN: Duration = Duration::from_millis(50);
        /// How long to wait for proxies with no local one to watch.
        const SETTLE: Duration = Duration::from_millis(300);
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let (Some(ip), false) = (ip, host_network) else {
            return;
        };
        if grace.is_zero() {
            return;
        }
        let budget = (grace / 2).min(Duration::from_secs(5));
        let deadline = Instant::now() + budget;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(self.sh.client.clone(), &ns);
        let mut listed = false;
        let removed_by = loop {
            let asked = Instant::now();
            let Ok(slices) = api.list(&Default::default()).await else {
                return;
            };
            let mut ready = false;
            for e in slices.items.iter().flat_map(|s| s.endpoints.iter()) {
                if e.addresses.contains(&ip) {
                    listed = true;
                    ready |= e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                }
            }
            if !ready {
                break asked;
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if !listed {
            return;
        }
        let settle = async {
            match self.sh.proxy_synced.clone() {
                Some(mut synced) => {
                    // A sync applied after the slice showed the change includes it (the
                    // proxy watches the same slices); if the proxy was quicker than this
                    // look, the wait ends at SETTLE.
                    let applied = synced.wait_for(|r| r.applied_at >= removed_by);
                    let _ = tokio::time::timeout(SETTLE, applied).await;
                    tokio::time::sleep(MARGIN).await;
                }
                None => tokio::time::sleep(SETTLE).await,
            }
        };
        let _ =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), settle).await;
    }

    async fn containers(&self) -> Vec<RtContainer> {
        let rt = self.sh.rt.clone();
        let uid = self.uid.clone();
        tokio::task::spawn_blocking(move || rt.pod_containers(&uid))
            .await
            .unwrap_or_default()
    }

    /// Brings the pod's containers to what its spec asks; returns when to look again.
    async fn sync(&mut self, pod: &Pod) -> Duration {
        let mut wake = RESYNC;
        let spec = pod.spec.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if self.facts.start_time.is_none() {
            self.facts.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .map(|t| t.0.to_string())
                .or_else(|| Some(now_rfc3339()));
        }
        self.facts.host_ip = Some(self.sh.cfg.node_ip.to_string());
        // Sandbox.
        let hostname = super::security::pod_hostname(&spec, &name);
        // Admission: a pod whose sysctls the node does not allow fails before it runs.
        let sysctls =
            match super::security::check_sysctls(&spec, &self.sh.cfg.allowed_unsafe_sysctls) {
                Ok(s) => s,
                Err(message) => {
                    if self.facts.rejected.is_none() {
                        self.sh
                            .events
                            .warning(pod, "SysctlForbidden", message.clone());
                        self.facts.rejected = Some(Waiting {
                            reason: "SysctlForbidden".into(),
                            message,
                        });
                    }
                    self.report(pod, &[]).await;
                    return RESYNC.max(Duration::from_secs(10));
                }
            };
        if spec.host_network == Some(true) {
            self.facts.pod_ip = Some(self.sh.cfg.node_ip.to_string());
        }
        let (rt, uid) = (self.sh.rt.clone(), self.uid.clone());
        let host = hostname.clone();
        let sandbox_cfg = super::cri::SandboxConfig {
            hostname: host,
            sysctls,
            share_pid: spec.share_process_namespace == Some(true) && spec.host_pid != Some(true),
            cgroup: Some(super::podspec::pod_cgroup(&self.sh.cfg.cgroup_parent, pod)),
            network: (spec.host_network != Some(true)).then(|| super::network::host_ports(&spec)),
        };
        let sandbox = tokio::task::spawn_blocking(move || rt.run_sandbox(&uid, &sandbox_cfg)).await;
        match sandbox {
            Ok(Ok(ip)) => {
                self.facts.sandbox_ready = true;
                if let Some(ip) = ip {
                    self.facts.pod_ip = Some(ip.to_string());
                }
                self.facts
                    .waiting
                    .retain(|_, w| !w.message.starts_with(SANDBOX_FAILED));
            }
            Ok(Err(e)) => {
                self.facts.sandbox_ready = false;
                let message = format!("{SANDBOX_FAILED}: {e}");
                // The pod's status says why its containers wait (an exhausted pod
                // CIDR, a network or runtime failure), besides the Event.
                let names = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(&spec.containers);
                for c in names {
                    self.facts.waiting.insert(
                        c.name.clone(),
                        Waiting {
                            reason: "ContainerCreating".into(),
                            message: message.clone(),
                        },
                    );
                }
                self.sh
                    .events
                    .warning(pod, "FailedCreatePodSandBox", message);
                let cs = self.containers().await;
                self.report(pod, &cs).await;
                return Duration::from_secs(5);
            }
            Err(_) => return Duration::from_secs(5),
        }
        if let Err(e) = self.write_etc_files(pod, &hostname) {
            tracing::warn!(pod = %pod_key(pod), error = %e, "writing /etc/hosts and resolv.conf");
        }
        // Volumes (refreshed every 10 s for configMap and secret updates).
        if self
            .volumes_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            let pod_dir = self.sh.pod_dir(&self.uid);
            match super::volumes::setup(
                &self.sh.client,
                pod,
                &pod_dir,
                &self.sh.cfg.node_ip.to_string(),
            )
            .await
            {
                Ok(paths) => {
                    self.volume_paths = paths;
                    self.volumes_at = Some(Instant::now());
                }
                Err(e) => {
                    self.sh.events.warning(pod, "FailedMount", e.0.clone());
                    let cs = self.containers().await;
                    self.report(pod, &cs).await;
                    return Duration::from_secs(5);
                }
            }
        }

        let mut cs = self.containers().await;
        let terminal = self.facts.evicted.is_some()
            || self
                .last_status
                .as_ref()
                .is_some_and(|s| s["phase"] == "Succeeded" || s["phase"] == "Failed");
        if !terminal {
            let actions = super::actions::compute(&spec, &cs, terminal);
            // An app container the policy leaves ended shows its last state, not a wait.
            for c in &spec.containers {
                let acted = actions.iter().any(|a| match a {
                    Action::Start { container, init }
                    | Action::Restart {
                        container, init, ..
                    } => !init && container.name == c.name,
                    Action::Probe { container, .. } => container.name == c.name,
                });
                if !acted {
                    self.facts.waiting.remove(&c.name);
                }
            }
            for action in actions {
                match action {
                    Action::Start { container, init } => {
                        self.start(pod, &container, init, 0, &mut wake).await;
                    }
                    Action::Restart {
                        container,
                        init,
                        last,
                    } => {
                        self.restart(pod, &container, init, &last, &mut wake).await;
                    }
                    Action::Probe { container, running } => {
                        self.facts.waiting.remove(&container.name);
                        let verdict = probes::run(
                            &self.sh,
                            &mut self.probes,
                            pod,
                            &container,
                            &running.record,
                        )
                        .await;
                        self.facts
                            .ready
                            .insert(running.record.id.clone(), verdict.ready);
                        wake = wake.min(verdict.next);
                        if verdict.restart {
                            self.sh.events.container(
                                pod,
                                &container.name,
                                false,
                                true,
                                "Killing",
                                format!(
                                    "Container {} failed liveness probe, will be restarted",
                                    container.name
                                ),
                            );
                            self.kill_one(&running.record, Duration::from_secs(spec_grace(pod)))
                                .await;
                            wake = Duration::from_millis(10);
                        }
                    }
                }
            }
            cs = self.containers().await;
            // The pod started: every app container runs (kubelet_pod_start_duration).
            if let Some(seen) = self.first_seen {
                let all = spec.containers.iter().all(|c| {
                    cs.iter().any(|rc| {
                        rc.record.name == c.name && !rc.record.init && rc.state == RunState::Running
                    })
                });
                if all && !spec.containers.is_empty() {
                    self.sh.metrics.pod_started(seen.elapsed());
                    self.first_seen = None;
                }
            }
        }
        self.read_messages(pod, &cs);
        self.report(pod, &cs).await;
        wake
    }

    /// The termination messages of exited containers.
    /// The termination messages of exited containers (with FallbackToLogsOnError, the
    /// end of the log of a failed container that wrote none).
    fn read_messages(&mut self, pod: &Pod, cs: &[RtContainer]) {
        for c in cs {
            let RunState::Exited(e) = &c.state else {
                continue;
            };
            if self.facts.messages.contains_key(&c.record.id) {
                continue;
            }
            let mut text = c
                .record
                .termination_log
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                .unwrap_or_default();
            let fallback = pod
                .spec
                .as_ref()
                .into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|x| x.name == c.record.name)
                .and_then(|x| x.termination_message_policy.as_deref())
                == Some("FallbackToLogsOnError");
            if text.is_empty() && fallback && e.exit_code != 0 {
                text = log_tail(&c.record.log_path, 80, 2048);
            }
            self.facts.messages.insert(c.record.id.clone(), text);
        }
    }

    fn write_etc_files(&self, pod: &Pod, hostname: &str) -> std::io::Result<()> {
        let dir = self.sh.pod_dir(&self.uid);
        let hosts = dir.join("etc-hosts");
        if hosts.exists() {
            return Ok(());
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let domain = &self.sh.cfg.cluster_domain;
        let mut h = String::from("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n");
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        if let Some(ip) = ip {
            match &spec.subdomain {
                Some(sub) => h.push_str(&format!(
                    "{ip}\t{hostname}.{sub}.{ns}.svc.{domain}\t{hostname}\n"
                )),
                None => h.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
        for a in spec.host_aliases.clone().unwrap_or_default() {
            h.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                a.ip,
                a.hostnames.unwrap_or_default().join("\t")
            ));
        }
        if spec.host_network == Some(true) {
            h = super::security::host_network_hosts(&spec);
        }
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let r =
            super::podspec::resolv_conf(&spec, &ns, domain, self.sh.cfg.cluster_dns, &host_resolv);
        std::fs::write(dir.join("resolv.conf"), r)?;
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
        std::fs::write(hosts, h)
    }

    /// Carries out an eviction the eviction manager asked for: the containers are
    /// stopped within its grace and the pod ends Failed with its reason and message.
    async fn evict_if_asked(&mut self, pod: &Pod) {
        if self.facts.evicted.is_some() {
            return;
        }
        if !self.facts.admitted {
            // A new pod (nothing of it runs yet) is admitted under node pressure only
            // as the eviction manager allows.
            self.facts.admitted = true;
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, None | Some("Pending")) && self.containers().await.is_empty() {
                if let Some(m) = super::eviction::admit(&self.sh, pod) {
                    let msg = format!("Pod was rejected: {m}");
                    self.sh.events.warning(pod, "Evicted", msg.clone());
                    self.facts.evicted = Some(("Evicted".into(), msg));
                    return;
                }
            }
        }
        let Some(e) = super::eviction::pending(&self.sh, &self.uid, pod) else {
            return;
        };
        self.facts.evicted = Some((e.reason, e.message));
        self.terminate(Some(pod), e.grace).await;
    }

    /// Stops one container: its stop signal, then SIGKILL after `grace`.
    async fn kill_one(&self, r: &ContainerRecord, grace: Duration) {
        let sig = parse_signal(&r.stop_signal);
        self.sh.rt.kill(r, sig, false);
        let deadline = Instant::now() + grace;
        loop {
            if self.sh.rt.state(r) != RunState::Running {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.sh.rt.kill(r, Signal::SIGKILL, true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sh.rt.state(r) == RunState::Running && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every running container of the pod within `grace`.
    async fn terminate(&mut self, pod: Option<&Pod>, grace: Duration) {
        let cs = self.containers().await;
        for c in cs.iter().filter(|c| c.state == RunState::Lost) {
            let cg = c.record.cgroup.clone();
            let _ = tokio::task::spawn_blocking(move || super::containers::kill_cgroup(&cg)).await;
        }
        let running: Vec<_> = cs
            .into_iter()
            .filter(|c| c.state == RunState::Running)
            .collect();
        if running.is_empty() {
            return;
        }
        let deadline = Instant::now() + grace;
        if let Some(p) = pod {
            for c in &running {
                if let Some(spec) = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|x| x.name == c.record.name))
                {
                    self.sh.events.container(
                        p,
                        &spec.name,
                        false,
                        false,
                        "Killing",
                        format!("Stopping container {}", spec.name),
                    );
                    probes::pre_stop(&self.sh, p, spec, &c.record, deadline).await;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let kills = running.iter().map(|c| self.kill_one(&c.record, left));
        futures_util::future::join_all(kills).await;
    }

    /// Removes every container and the sandbox.
    async fn cleanup(&mut self, pod: Option<&Pod>) {
        let rt = self.sh.rt.clone();
        let uid = self.uid.clone();
        let pod_dir = self.sh.pod_dir(&uid);
        let cgroup = pod.map(|p| super::podspec::pod_cgroup(&self.sh.cfg.cgroup_parent, p));
        let _ = tokio::task::spawn_blocking(move || {
            let cs = rt.pod_containers(&uid);
            let mut cgroups: Vec<String> = Vec::new();
            for c in &cs {
                if let Some((parent, _)) = c.record.cgroup.rsplit_once('/') {
                    cgroups.push(parent.to_string());
                }
                rt.remove(&c.record);
            }
            if let Some(cg) = cgroup {
                cgroups.push(cg);
            }
            cgroups.sort();
            cgroups.dedup();
            rt.remove_sandbox(&uid);
            super::containers::unmount_below(&pod_dir);
            let _ = std::fs::remove_dir_all(&pod_dir);
            for cg in cgroups {
                super::containers::remove_cgroup(&cg);
            }
        })
        .await;
        self.sh.forget(&self.uid);
    }

    /// Patches the pod's status when it changed.
    async fn report(&mut self, pod: &Pod, cs: &[RtContainer]) {
        let now = now_rfc3339();
        let status = super::status::pod_status(pod, cs, &self.facts, &now);
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.sh.client.clone(), &ns);
        // The conditions and container lists are replaced whole by a merge patch.
        let patch = json!({"status": status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(kube::Error::Api(s)) if s.code == 404 => self.last_status = Some(status),
            Err(e) => tracing::warn!(pod = %pod_key(pod), error = %e, "updating pod status"),
        }
    }
}

/// The last `lines` lines (at most `bytes`) a container wrote to its log.
fn log_tail(path: &std::path::Path, lines: usize, bytes: usize) -> String {
    let Ok(mut r) = skiff_container::log::Reader::open(path) else {
        return String::new();
    };
    let records = r.read_new().unwrap_or_default();
    let mut out: Vec<u8> = Vec::new();
    for rec in records.iter().rev().take(lines).rev() {
        out.extend_from_slice(&rec.content);
        if !rec.partial {
            out.push(b'\n');
        }
    }
    let start = out.len().saturating_sub(bytes);
    String::from_utf8_lossy(&out[start..]).into_owned()
}

fn spec_grace(pod: &Pod) -> u64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64
}

/// `SIGTERM`, `TERM`, `15` → the signal (SIGTERM if unknown).
pub fn parse_signal(s: &str) -> Signal {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse().unwrap_or(Signal::SIGTERM)
}

/// Go's duration format, as Kubernetes messages print it: `10s`, `1m20s`, `1.5s`.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        let (m, s) = (secs / 60, secs % 60);
        if m >= 60 {
            return format!("{}h{}m{}s", m / 60, m % 60, s);
        }
        return format!("{m}m{s}s");
    }
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_signals_print_as_kubernetes() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(parse_signal("SIGQUIT"), Signal::SIGQUIT);
        assert_eq!(parse_signal("INT"), Signal::SIGINT);
        assert_eq!(parse_signal("9"), Signal::SIGKILL);
        assert_eq!(parse_signal("bogus"), Signal::SIGTERM);
    }
}
