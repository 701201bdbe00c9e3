//! Resource statistics from cgroups (v1 or v2) and /proc: the kubelet's `/stats/summary`
//! and `/metrics/resource` (what metrics-server scrapes): CPU usage (cumulative, and
//! nanocores between two reads) and memory working set (usage minus inactive file pages)
//! per container, pod and node.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use super::containers::RunState;
use super::Shared;

/// CPU and memory of one cgroup (or the node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    pub working_set_bytes: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The usage of the cgroup `path` (absolute, as in a spec); `None` when it is gone.
pub fn cgroup_usage(path: &str) -> Option<Usage> {
    let rel = path.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    if v2() {
        let d = base.join(rel);
        let cpu_ns = stat_field(&d.join("cpu.stat"), "usage_usec")? * 1000;
        let mem = read_u64(&d.join("memory.current")).unwrap_or(0);
        let inactive = stat_field(&d.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Some(Usage {
            cpu_ns,
            memory_bytes: mem,
            working_set_bytes: mem.saturating_sub(inactive),
        });
    }
    let cpu_ns = read_u64(&base.join("cpuacct").join(rel).join("cpuacct.usage"))
        .or_else(|| read_u64(&base.join("cpu,cpuacct").join(rel).join("cpuacct.usage")))?;
    let m: PathBuf = base.join("memory").join(rel);
    let mem = read_u64(&m.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = stat_field(&m.join("memory.stat"), "total_inactive_file").unwrap_or(0);
    Some(Usage {
        cpu_ns,
        memory_bytes: mem,
        working_set_bytes: mem.saturating_sub(inactive),
    })
}

/// The whole machine: CPU time from /proc/stat, memory in use from /proc/meminfo.
pub fn node_usage() -> Usage {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .enumerate()
                // user nice system idle iowait irq softirq steal: all but idle and iowait.
                .filter(|(i, _)| *i != 3 && *i != 4)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    let cpu_ns = ticks * 10_000_000;
    let mi = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |k: &str| -> u64 {
        mi.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kb("MemTotal:");
    let available = kb("MemAvailable:");
    let used = total.saturating_sub(available);
    Usage {
        cpu_ns,
        memory_bytes: total.saturating_sub(kb("MemFree:")),
        working_set_bytes: used,
    }
}

/// Nanocores between two reads of the same cgroup.
#[derive(Default)]
pub struct Rates {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Rates {
    pub fn nano_cores(&self, key: &str, cpu_ns: u64) -> u64 {
        let now = Instant::now();
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let r = match m.get(key) {
            Some((t, prev)) if now > *t && cpu_ns >= *prev => {
                let dt = now.duration_since(*t).as_nanos().max(1);
                ((cpu_ns - prev) as u128 * 1_000_000_000 / dt) as u64
            }
            _ => 0,
        };
        m.insert(key.to_string(), (now, cpu_ns));
        r
    }
}

struct Sample {
    namespace: String,
    pod: String,
    uid: String,
    pod_usage: Usage,
    pod_cgroup: String,
    start: String,
    containers: Vec<(String, String, Usage, String)>,
}

fn samples(sh: &Shared) -> Vec<Sample> {
    let pods: Vec<_> = sh.pods_snapshot();
    let all = sh.rt.list();
    let mut out = Vec::new();
    for p in pods {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let cg = super::podspec::pod_cgroup(&sh.cfg.cgroup_parent, &p);
        let mut containers = Vec::new();
        for c in all
            .iter()
            .filter(|c| c.record.pod_uid == uid && c.state == RunState::Running)
        {
            if let Some(u) = cgroup_usage(&c.record.cgroup) {
                let start = c
                    .record
                    .started
                    .clone()
                    .unwrap_or_else(|| c.record.created.clone());
                containers.push((c.record.name.clone(), c.record.cgroup.clone(), u, start));
            }
        }
        if containers.is_empty() {
            continue;
        }
        let pod_usage = cgroup_usage(&cg).unwrap_or_else(|| {
            containers
                .iter()
                .fold(Usage::default(), |a, (_, _, u, _)| Usage {
                    cpu_ns: a.cpu_ns + u.cpu_ns,
                    memory_bytes: a.memory_bytes + u.memory_bytes,
                    working_set_bytes: a.working_set_bytes + u.working_set_bytes,
                })
        });
        out.push(Sample {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            pod: p.metadata.name.clone().unwrap_or_default(),
            uid,
            pod_usage,
            pod_cgroup: cg,
            start: p
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            containers,
        });
    }
    out
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn cpu_json(rates: &Rates, key: &str, u: &Usage, t: &str) -> Value {
    json!({"time": t, "usageNanoCores": rates.nano_cores(key, u.cpu_ns), "usageCoreNanoSeconds": u.cpu_ns})
}

fn mem_json(u: &Usage, t: &str) -> Value {
    json!({"time": t, "usageBytes": u.memory_bytes, "workingSetBytes": u.working_set_bytes})
}

/// The summary API document.
pub fn summary(sh: &Shared) -> Value {
    let t = now();
    let node = node_usage();
    let rates = &sh.rates;
    let mut node_mem = mem_json(&node, &t);
    node_mem["availableBytes"] = json!(
        sh.cfg.memory_bytes.max(0) as u64
            - node
                .working_set_bytes
                .min(sh.cfg.memory_bytes.max(0) as u64)
    );
    let pods: Vec<Value> = samples(sh)
        .iter()
        .map(|s| {
            let containers: Vec<Value> = s
                .containers
                .iter()
                .map(|(name, cg, u, start)| {
                    json!({"name": name, "startTime": start, "cpu": cpu_json(rates, cg, u, &t), "memory": mem_json(u, &t)})
                })
                .collect();
            json!({
                "podRef": {"name": s.pod, "namespace": s.namespace, "uid": s.uid},
                "startTime": s.start,
                "containers": containers,
                "cpu": cpu_json(rates, &s.pod_cgroup, &s.pod_usage, &t),
                "memory": mem_json(&s.pod_usage, &t),
            })
        })
        .collect();
    json!({
        "node": {
            "nodeName": sh.cfg.node_name,
            "cpu": cpu_json(rates, "/", &node, &t),
            "memory": node_mem,
        },
        "pods": pods,
    })
}

/// `/metrics/resource` in Prometheus' text format, as the kubelet writes it.
pub fn metrics(sh: &Shared) -> String {
    let ms = jiff::Timestamp::now().as_millisecond();
    let node = node_usage();
    let mut s = String::new();
    let _ = writeln!(s, "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds");
    let _ = writeln!(s, "# TYPE node_cpu_usage_seconds_total counter");
    let _ = writeln!(
        s,
        "node_cpu_usage_seconds_total {} {ms}",
        node.cpu_ns as f64 / 1e9
    );
    let _ = writeln!(
        s,
        "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes"
    );
    let _ = writeln!(s, "# TYPE node_memory_working_set_bytes gauge");
    let _ = writeln!(
        s,
        "node_memory_working_set_bytes {} {ms}",
        node.working_set_bytes
    );
    let samples = samples(sh);
    let _ = writeln!(s, "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds");
    let _ = writeln!(s, "# TYPE container_cpu_usage_seconds_total counter");
    for p in &samples {
        for (name, _, u, _) in &p.containers {
            let _ = writeln!(s, "container_cpu_usage_seconds_total{{container=\"{name}\",namespace=\"{}\",pod=\"{}\"}} {} {ms}", p.namespace, p.pod, u.cpu_ns as f64 / 1e9);
        }
    }
    let _ = writeln!(s, "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes");
    let _ = writeln!(s, "# TYPE container_memory_working_set_bytes gauge");
    for p in &samples {
        for (name, _, u, _) in &p.containers {
            let _ = writeln!(s, "container_memory_working_set_bytes{{container=\"{name}\",namespace=\"{}\",pod=\"{}\"}} {} {ms}", p.namespace, p.pod, u.working_set_bytes);
        }
    }
    let _ = writeln!(s, "# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds");
    let _ = writeln!(s, "# TYPE container_start_time_seconds gauge");
    for p in &samples {
        for (name, _, _, start) in &p.containers {
            let secs = start
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .unwrap_or(0);
            let _ = writeln!(s, "container_start_time_seconds{{container=\"{name}\",namespace=\"{}\",pod=\"{}\"}} {secs} {ms}", p.namespace, p.pod);
        }
    }
    let _ = writeln!(s, "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds");
    let _ = writeln!(s, "# TYPE pod_cpu_usage_seconds_total counter");
    for p in &samples {
        let _ = writeln!(
            s,
            "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {ms}",
            p.namespace,
            p.pod,
            p.pod_usage.cpu_ns as f64 / 1e9
        );
    }
    let _ = writeln!(
        s,
        "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes"
    );
    let _ = writeln!(s, "# TYPE pod_memory_working_set_bytes gauge");
    for p in &samples {
        let _ = writeln!(
            s,
            "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {} {ms}",
            p.namespace, p.pod, p.pod_usage.working_set_bytes
        );
    }
    let _ = writeln!(s, "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise");
    let _ = writeln!(s, "# TYPE scrape_error gauge");
    let _ = writeln!(s, "scrape_error 0");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_and_this_process_cgroup_have_usage() {
        let n = node_usage();
        assert!(n.cpu_ns > 0 && n.working_set_bytes > 0, "{n:?}");
        let r = Rates::default();
        assert_eq!(r.nano_cores("k", 1_000), 0);
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert!(r.nano_cores("k", 10_001_000) > 0);
    }
}
