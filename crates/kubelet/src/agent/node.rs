//! The Node: registration, the Lease heartbeat every 10 s, and the node status posted
//! when it changes or every 5 minutes (as the kubelet with node leases).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use skiff_serve::CancellationToken;

use super::{AgentError, Shared};

const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_DURATION: i32 = 40;
const STATUS_REPORT: Duration = Duration::from_secs(300);

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::TimestampRound::new().smallest(jiff::Unit::Second))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// Bytes of the filesystem holding `dir`.
fn disk_bytes(dir: &std::path::Path) -> i64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| (s.blocks() as i64) * (s.fragment_size() as i64))
        .unwrap_or(0)
}

/// The node's conditions; `under` says which pressure conditions are True (the
/// eviction manager's).
fn conditions(old: Option<&Value>, hb: &str, under: &dyn Fn(&str) -> bool) -> Value {
    let pressure = |t: &'static str, yes: [&'static str; 2], no: [&'static str; 2]| {
        if under(t) {
            (t, "True", yes[0], yes[1])
        } else {
            (t, "False", no[0], no[1])
        }
    };
    let set = [
        pressure(
            "MemoryPressure",
            [
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ],
            [
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ],
        ),
        pressure(
            "DiskPressure",
            ["KubeletHasDiskPressure", "kubelet has disk pressure"],
            ["KubeletHasNoDiskPressure", "kubelet has no disk pressure"],
        ),
        pressure(
            "PIDPressure",
            [
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ],
            [
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ],
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    let out: Vec<Value> = set
        .iter()
        .map(|(t, s, r, m)| {
            let since = old
                .and_then(|o| o.as_array())
                .and_then(|a| a.iter().find(|c| c["type"] == *t && c["status"] == *s))
                .map(|c| c["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(hb));
            json!({"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": hb, "lastTransitionTime": since})
        })
        .collect();
    json!(out)
}

/// The node's status (without heartbeat times when `for_compare`).
fn status(sh: &Shared, old: Option<&Value>) -> Value {
    let c = &sh.cfg;
    let cpu = c.cpu_milli;
    let mem_ki = c.memory_bytes / 1024;
    let disk = disk_bytes(&c.data_dir);
    let alloc_cpu = (cpu - c.system_reserved_cpu_milli).max(0);
    let alloc_mem_ki = (c.memory_bytes - c.system_reserved_memory).max(0) / 1024;
    let cpu_q = |m: i64| {
        if m % 1000 == 0 {
            format!("{}", m / 1000)
        } else {
            format!("{m}m")
        }
    };
    let mut images: Vec<Value> = Vec::new();
    if let Ok(list) = sh.images.store.refs().all() {
        for (name, digest) in list.into_iter().take(50) {
            let size = sh
                .images
                .store
                .image(&digest)
                .map(|i| i.size())
                .unwrap_or(0);
            images.push(json!({"names": [name], "sizeBytes": size}));
        }
    }
    let conds = {
        let p = super::lock(&sh.pressure);
        conditions(old.and_then(|o| o.get("conditions")), &now(), &|t| {
            p.under(t)
        })
    };
    json!({
        "capacity": {"cpu": cpu_q(cpu), "memory": format!("{mem_ki}Ki"), "pods": c.max_pods.to_string(), "ephemeral-storage": format!("{}Ki", disk / 1024)},
        "allocatable": {"cpu": cpu_q(alloc_cpu), "memory": format!("{alloc_mem_ki}Ki"), "pods": c.max_pods.to_string(), "ephemeral-storage": format!("{}Ki", disk * 9 / 10 / 1024)},
        "addresses": [{"type": "InternalIP", "address": c.node_ip.to_string()}, {"type": "Hostname", "address": c.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": c.kubelet_port}},
        "nodeInfo": {
            "machineID": read("/etc/machine-id"),
            "systemUUID": read("/sys/class/dmi/id/product_uuid"),
            "bootID": read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("skiff://{}", c.version),
            "kubeletVersion": "v1.33.0+skiff",
            "kubeProxyVersion": "v1.33.0+skiff",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        },
        "images": images,
        "conditions": conds,
    })
}

/// Creates the Node (or takes over the one of this name) and posts its status.
pub async fn register(sh: &Arc<Shared>) -> Result<(), AgentError> {
    let c = &sh.cfg;
    let api: Api<Node> = Api::all(sh.client.clone());
    let err = |source| AgentError::Register {
        node: c.node_name.clone(),
        source,
    };
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(c.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert(
        "kubernetes.io/arch".into(),
        json!(std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64")),
    );
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert(
        "beta.kubernetes.io/arch".into(),
        json!(std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64")),
    );
    for (k, v) in &c.node_labels {
        labels.insert(k.clone(), json!(v));
    }
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": c.node_name, "labels": labels},
        "spec": {"taints": c.taints},
    }))
    .map_err(|e| err(kube::Error::SerdeError(e)))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // A node of this name exists (this agent before a restart): keep it, update labels.
            let patch = json!({"metadata": {"labels": labels}});
            api.patch(&c.node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    // The Node itself, not nodes/<name>/status: the Node authorizer lets a node read its
    // own Node but not that subresource (as kube's kubelet reads it).
    let old = api
        .get(&c.node_name)
        .await
        .ok()
        .and_then(|n| serde_json::to_value(n.status).ok());
    let st = status(sh, old.as_ref());
    api.patch_status(
        &c.node_name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": st})),
    )
    .await
    .map_err(err)?;
    renew_lease(sh).await;
    Ok(())
}

async fn renew_lease(sh: &Shared) {
    let c = &sh.cfg;
    let api: Api<Lease> = Api::namespaced(sh.client.clone(), "kube-node-lease");
    let renew = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let patch = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": c.node_name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": c.node_name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": renew},
    });
    match api
        .patch(&c.node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            if let Ok(l) = serde_json::from_value::<Lease>(patch) {
                if let Err(e) = api.create(&PostParams::default(), &l).await {
                    tracing::warn!(error = %e, "creating the node Lease");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "renewing the node Lease"),
    }
}

fn without_heartbeats(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(cs) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in cs {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastHeartbeatTime");
            }
        }
    }
    v
}

/// Renews the Lease every 10 s; posts the node status when it changed or every 5 min.
pub async fn heartbeat(sh: Arc<Shared>, stop: CancellationToken) {
    let api: Api<Node> = Api::all(sh.client.clone());
    let mut last: Option<(Value, Instant)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LEASE_RENEW) => {}
        }
        renew_lease(&sh).await;
        let old = api
            .get(&sh.cfg.node_name)
            .await
            .ok()
            .and_then(|n| serde_json::to_value(n.status).ok());
        if old.is_none() {
            // Deleted while we run: register again, as the kubelet does.
            if let Err(e) = register(&sh).await {
                tracing::warn!(error = %e, "registering the node again");
            }
            continue;
        }
        let st = status(&sh, old.as_ref());
        let cmp = without_heartbeats(&st);
        let due = match &last {
            Some((prev, at)) => *prev != cmp || at.elapsed() >= STATUS_REPORT,
            None => true,
        };
        let unready = old
            .as_ref()
            .and_then(|o| o["conditions"].as_array().cloned())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] != "True")
            });
        if due || unready {
            match api
                .patch_status(
                    &sh.cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": st})),
                )
                .await
            {
                Ok(_) => last = Some((cmp, Instant::now())),
                Err(e) => tracing::warn!(error = %e, "updating the node status"),
            }
        }
    }
}
