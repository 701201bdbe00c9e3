//! The resource metrics API (`metrics.k8s.io/v1beta1`), built in: what metrics-server adds
//! to Kubernetes. A scraper reads every node's kubelet `/metrics/resource` each
//! resolution period (metrics-server's `--metric-resolution`, 15 s), turns two successive
//! cumulative CPU counters into a usage rate, and keeps only the latest point per node,
//! pod and container in memory. `kubectl top` and the HPA controller read NodeMetrics and
//! PodMetrics from it.
//!
//! A kubelet that does not answer drops out (its metrics are removed, with one log line)
//! and never fails a request for the others. Nodes that publish no address, or kubelet
//! port 0 (hollow nodes, which serve no kubelet API), are not scraped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};

use crate::handlers::list::Filter;
use crate::handlers::{json_response, Target};
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// A cumulative CPU counter read at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counter {
    cpu_seconds: f64,
    at_ms: i64,
}

/// A usage point: the CPU rate over `window_ms` ending at `at_ms`, and the memory
/// working set at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    nano_cores: u64,
    memory: u64,
    at_ms: i64,
    window_ms: i64,
}

#[derive(Debug)]
struct ContainerState {
    name: Box<str>,
    /// The container's start time: a new one (a restart) resets the counter.
    started: i64,
    last: Counter,
    usage: Option<Usage>,
}

#[derive(Debug, Default)]
struct NodeState {
    last: Option<Counter>,
    usage: Option<Usage>,
    /// Pods by `namespace/name`.
    pods: HashMap<Box<str>, Vec<ContainerState>>,
}

/// One kubelet answer, parsed.
#[derive(Debug, Default, PartialEq)]
struct Scrape {
    node: Option<(Counter, u64)>,
    /// (namespace/pod, container) → (counter, working set, start time).
    containers: BTreeMap<(String, String), (Counter, u64, i64)>,
}

/// A pod's containers' usage, the newest point's time and the longest window (ms).
type PodUsage = (Vec<(String, Usage)>, i64, i64);

/// The latest metrics of every scraped node, in memory.
#[derive(Default)]
pub(crate) struct ResourceMetrics {
    nodes: RwLock<HashMap<String, NodeState>>,
    /// Pod key → node name, to find a pod's metrics without scanning the nodes.
    pod_node: RwLock<HashMap<Box<str>, Box<str>>>,
}

impl ResourceMetrics {
    /// Takes in one scrape of `node`'s kubelet.
    fn apply(&self, node: &str, s: Scrape) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let st = nodes.entry(node.to_string()).or_default();
        if let Some((c, mem)) = s.node {
            st.usage = st.last.and_then(|prev| Usage::between(prev, c, mem));
            st.last = Some(c);
        }
        let mut old = std::mem::take(&mut st.pods);
        let mut pods: HashMap<Box<str>, Vec<ContainerState>> = HashMap::new();
        for ((pod, name), (c, mem, started)) in s.containers {
            let prev = old.get_mut(pod.as_str()).and_then(|cs| {
                cs.iter()
                    .position(|x| *x.name == *name)
                    .map(|i| cs.swap_remove(i))
            });
            let usage = prev
                .filter(|p| p.started == started)
                .and_then(|p| Usage::between(p.last, c, mem));
            pods.entry(pod.into_boxed_str())
                .or_default()
                .push(ContainerState {
                    name: name.into_boxed_str(),
                    started,
                    last: c,
                    usage,
                });
        }
        old.retain(|k, _| !pods.contains_key(k));
        st.pods = pods;
        let mut index = self.pod_node.write().unwrap_or_else(|e| e.into_inner());
        unindex(&mut index, node, old.keys());
        for k in st.pods.keys() {
            if index.get(k).map(|n| &**n) != Some(node) {
                index.insert(k.clone(), node.into());
            }
        }
    }

    /// Forgets `node` (deleted, or its kubelet did not answer).
    fn drop_node(&self, node: &str) -> bool {
        let Some(st) = self
            .nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node)
        else {
            return false;
        };
        let mut index = self.pod_node.write().unwrap_or_else(|e| e.into_inner());
        unindex(&mut index, node, st.pods.keys());
        true
    }

    fn node_names(&self) -> Vec<String> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.keys().cloned().collect()
    }

    fn node_usage(&self, node: &str) -> Option<Usage> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.get(node)?.usage
    }

    /// The usage of each container of pod `ns/name`, once every container has a point;
    /// with the newest point's time and the longest window.
    fn pod_usage(&self, key: &str) -> Option<PodUsage> {
        let node = self
            .pod_node
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)?
            .clone();
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let cs = nodes.get(&*node)?.pods.get(key)?;
        let mut out = Vec::with_capacity(cs.len());
        let (mut at, mut window) = (0, 0);
        for c in cs {
            let u = c.usage?;
            at = at.max(u.at_ms);
            window = window.max(u.window_ms);
            out.push((c.name.to_string(), u));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (!out.is_empty()).then_some((out, at, window))
    }

    /// The heap this store holds, estimated from its strings' and maps' capacities (what
    /// `skiff bench autoscale` reports per pod).
    fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut n = nodes.capacity() * (size_of::<String>() + size_of::<NodeState>() + 8);
        for (k, st) in nodes.iter() {
            n += k.capacity();
            n +=
                st.pods.capacity() * (size_of::<Box<str>>() + size_of::<Vec<ContainerState>>() + 8);
            for (pk, cs) in &st.pods {
                n += pk.len() + cs.capacity() * size_of::<ContainerState>();
                n += cs.iter().map(|c| c.name.len()).sum::<usize>();
            }
        }
        let index = self.pod_node.read().unwrap_or_else(|e| e.into_inner());
        n += index.capacity() * (2 * size_of::<Box<str>>() + 8);
        n += index.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        n
    }
}

/// The estimated heap of the metrics store holding `pods` pods (one container each,
/// names as a Deployment's pods have) of one node, after two scrapes: bytes per pod.
pub fn store_bytes_per_pod(pods: usize) -> f64 {
    let m = ResourceMetrics::default();
    let scrape = |t: i64| {
        let mut s = Scrape::default();
        for i in 0..pods {
            s.containers.insert(
                (format!("default/web-5d8f7c9b4-{i:05}"), "app".to_string()),
                (
                    Counter {
                        cpu_seconds: t as f64 / 1000.0,
                        at_ms: t,
                    },
                    1 << 20,
                    1,
                ),
            );
        }
        s
    };
    m.apply("node-1", scrape(1_000));
    m.apply("node-1", scrape(16_000));
    m.approx_bytes() as f64 / pods.max(1) as f64
}

impl Usage {
    /// The CPU rate between two counters over the window between them, with `memory`;
    /// None when time did not advance or the counter went back (a reset).
    fn between(prev: Counter, now: Counter, memory: u64) -> Option<Usage> {
        let window_ms = now.at_ms - prev.at_ms;
        let used = now.cpu_seconds - prev.cpu_seconds;
        if window_ms <= 0 || used < 0.0 {
            return None;
        }
        Some(Usage {
            nano_cores: (used * 1e12 / window_ms as f64).round() as u64,
            memory,
            at_ms: now.at_ms,
            window_ms,
        })
    }
}

/// Drops the index entries of `pods` that still point at `node`.
fn unindex<'a>(
    index: &mut HashMap<Box<str>, Box<str>>,
    node: &str,
    pods: impl Iterator<Item = &'a Box<str>>,
) {
    for k in pods {
        if index.get(k).is_some_and(|n| **n == *node) {
            index.remove(k);
        }
    }
}

/// Parses the kubelet's `/metrics/resource` (Prometheus text format).
fn parse(text: &str) -> Scrape {
    let mut s = Scrape::default();
    let mut node_cpu = None;
    let mut node_mem = None;
    let mut mem: HashMap<(String, String), u64> = HashMap::new();
    let mut start: HashMap<(String, String), i64> = HashMap::new();
    let mut cpu: Vec<((String, String), Counter)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, rest)) = split_sample(line) else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let at_ms = parts
            .next()
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or_else(now_ms);
        let key = || {
            let l = parse_labels(labels);
            let get = |k: &str| {
                l.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let (ns, pod, c) = (get("namespace"), get("pod"), get("container"));
            (!ns.is_empty() && !pod.is_empty() && !c.is_empty()).then(|| (format!("{ns}/{pod}"), c))
        };
        match name {
            "node_cpu_usage_seconds_total" => {
                node_cpu = Some(Counter {
                    cpu_seconds: value,
                    at_ms,
                })
            }
            "node_memory_working_set_bytes" => node_mem = Some(value.max(0.0) as u64),
            "container_cpu_usage_seconds_total" => {
                if let Some(k) = key() {
                    cpu.push((
                        k,
                        Counter {
                            cpu_seconds: value,
                            at_ms,
                        },
                    ));
                }
            }
            "container_memory_working_set_bytes" => {
                if let Some(k) = key() {
                    mem.insert(k, value.max(0.0) as u64);
                }
            }
            "container_start_time_seconds" => {
                if let Some(k) = key() {
                    start.insert(k, value as i64);
                }
            }
            _ => {}
        }
    }
    if let (Some(c), Some(m)) = (node_cpu, node_mem) {
        s.node = Some((c, m));
    }
    for (k, c) in cpu {
        let m = mem.get(&k).copied().unwrap_or(0);
        let st = start.get(&k).copied().unwrap_or(0);
        s.containers.insert(k, (c, m, st));
    }
    s
}

/// `name{labels} rest` → (name, labels, rest); labels may be absent.
fn split_sample(line: &str) -> Option<(&str, &str, &str)> {
    match line.find(['{', ' ']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let end = line.rfind('}')?;
            Some((&line[..i], &line[i + 1..end], &line[end + 1..]))
        }
        Some(i) => Some((&line[..i], "", &line[i..])),
        None => None,
    }
}

/// `a="x",b="y\"z"` → [(a, x), (b, y"z)].
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(body) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name, value));
        rest = &body[end.min(body.len())..];
    }
    out
}

/// Scrapes every node each `every` until shutdown.
pub(crate) async fn run_scraper(st: Arc<AppState>, every: Duration) {
    let stop = st.shutdown.clone();
    loop {
        scrape_all(&st, every).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One round: every node with a kubelet address, concurrently, each within the period.
async fn scrape_all(st: &Arc<AppState>, every: Duration) {
    let nodes = match list_prefix(st, "nodes", None).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e.message, "metrics: listing nodes failed; this round is skipped");
            return;
        }
    };
    let mut seen = std::collections::HashSet::new();
    let timeout = every.min(Duration::from_secs(10));
    let mut tasks = tokio::task::JoinSet::new();
    for node in &nodes {
        let name = meta::name(node).to_string();
        seen.insert(name.clone());
        let Some((host, port)) = scrape_target(node) else {
            continue;
        };
        let st = st.clone();
        tasks.spawn(async move {
            let r = tokio::time::timeout(timeout, fetch(&st, &host, port)).await;
            (
                name,
                r.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}"))),
            )
        });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((name, r)) = done else { continue };
        match r {
            Ok(text) => st.resource_metrics.apply(&name, parse(&text)),
            Err(e) => {
                if st.resource_metrics.drop_node(&name) {
                    tracing::warn!(node = %name, error = %e, "metrics: the kubelet did not answer; its metrics drop out until it does");
                } else {
                    tracing::debug!(node = %name, error = %e, "metrics: scrape failed");
                }
            }
        }
    }
    for gone in st
        .resource_metrics
        .node_names()
        .into_iter()
        .filter(|n| !seen.contains(n))
    {
        st.resource_metrics.drop_node(&gone);
    }
}

/// Where a node's kubelet answers: None for nodes with no address or kubelet port 0.
fn scrape_target(node: &Value) -> Option<(String, u16)> {
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(crate::handlers::proxy::DEFAULT_KUBELET_PORT));
    if port == 0 || port > u64::from(u16::MAX) {
        return None;
    }
    let host = crate::handlers::proxy::kubelet_host(node)?;
    Some((host.to_string(), port as u16))
}

async fn fetch(st: &AppState, host: &str, port: u16) -> Result<String, String> {
    use http_body_util::BodyExt;
    let req = hyper::Request::builder()
        .uri("/metrics/resource")
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = st
        .kubelet
        .send(host, port, req)
        .await
        .map_err(|e| skiff_serve::error_chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("the kubelet answered {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8 text".to_string())
}

/// The objects stored under a core kind's prefix (in namespace `ns`).
async fn list_prefix(st: &AppState, plural: &str, ns: Option<&str>) -> ApiResult<Vec<Value>> {
    let kind = core(plural)?;
    let prefix = match ns {
        Some(ns) => format!("{}{ns}/", meta::kind_prefix(kind)),
        None => meta::kind_prefix(kind),
    };
    crate::handlers::objects::list_values(&*st.objects.store, &prefix).await
}

fn core(plural: &str) -> ApiResult<&'static Kind> {
    kinds::by_resource("", "v1", plural).ok_or_else(ApiError::path_not_found)
}

/// `metrics.k8s.io/v1beta1` requests: get and list of NodeMetrics and PodMetrics.
pub(crate) async fn serve(st: &Arc<AppState>, t: Target, req: Request) -> ApiResult<Response> {
    if t.sub.is_some() {
        return Err(ApiError::path_not_found());
    }
    if req.method() != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "{} of {} is not supported: the metrics API is read-only (get, list)",
            req.method(),
            t.kind.plural
        )));
    }
    let q = Query::parse(req.uri().query());
    if t.watch_path || q.flag("watch") {
        return Err(ApiError::method_not_allowed(format!(
            "watch of {}.metrics.k8s.io is not supported; list it again instead",
            t.kind.plural
        )));
    }
    let now = meta::now();
    let pods = t.kind.kind == "PodMetrics";
    let source = core(if pods { "pods" } else { "nodes" })?;
    let filter = Filter::parse(source, &q)?;
    let objects = match &t.name {
        Some(name) => {
            let key = meta::key(source, t.namespace.as_deref(), name);
            let obj = st
                .objects
                .store
                .get(&key, None)
                .await?
                .kv
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
            let found = obj.and_then(|o| render(st, &o, pods, &now));
            let one =
                found.ok_or_else(|| ApiError::not_found("metrics.k8s.io", t.kind.plural, name))?;
            return Ok(json_response(StatusCode::OK, &one));
        }
        None => list_prefix(st, source.plural, t.namespace.as_deref()).await?,
    };
    let items: Vec<Value> = objects
        .iter()
        .filter(|o| filter.matches(o))
        .filter_map(|o| render(st, o, pods, &now))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.kind.kind),
            "apiVersion": API_VERSION,
            "metadata": {},
            "items": items,
        }),
    ))
}

/// The NodeMetrics or PodMetrics of a Node or Pod object, if it has metrics.
fn render(st: &AppState, obj: &Value, pod: bool, now: &str) -> Option<Value> {
    let name = meta::name(obj);
    let mut md = json!({"name": name, "creationTimestamp": now});
    if let Some(l) = obj.pointer("/metadata/labels") {
        md["labels"] = l.clone();
    }
    if !pod {
        let u = st.resource_metrics.node_usage(name)?;
        return Some(json!({
            "kind": "NodeMetrics", "apiVersion": API_VERSION, "metadata": md,
            "timestamp": timestamp(u.at_ms), "window": window(u.window_ms),
            "usage": {"cpu": cpu_quantity(u.nano_cores), "memory": memory_quantity(u.memory)},
        }));
    }
    let ns = meta::namespace(obj).unwrap_or_default();
    md["namespace"] = json!(ns);
    let (containers, at, win) = st.resource_metrics.pod_usage(&format!("{ns}/{name}"))?;
    let containers: Vec<Value> = containers
        .into_iter()
        .map(|(n, u)| {
            json!({"name": n, "usage": {"cpu": cpu_quantity(u.nano_cores), "memory": memory_quantity(u.memory)}})
        })
        .collect();
    Some(json!({
        "kind": "PodMetrics", "apiVersion": API_VERSION, "metadata": md,
        "timestamp": timestamp(at), "window": window(win), "containers": containers,
    }))
}

fn timestamp(ms: i64) -> String {
    skiff_api::table::format_time(ms.div_euclid(1000))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A window as Go prints a duration (`15s`, `14.998s`).
fn window(ms: i64) -> String {
    if ms.rem_euclid(1000) == 0 {
        return format!("{}s", ms / 1000);
    }
    let s = format!("{}.{:03}", ms / 1000, ms % 1000);
    format!("{}s", s.trim_end_matches('0'))
}

/// Nanocores in Kubernetes' canonical form (`250m`, `2`, `1234567n`).
fn cpu_quantity(n: u64) -> String {
    if n == 0 {
        "0".into()
    } else if n.is_multiple_of(1_000_000_000) {
        format!("{}", n / 1_000_000_000)
    } else if n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}u", n / 1_000)
    } else {
        format!("{n}n")
    }
}

/// Bytes in Kubernetes' canonical binary form (`1Mi`, `1234Ki`, `1000`).
fn memory_quantity(b: u64) -> String {
    if b == 0 {
        return "0".into();
    }
    let mut v = b;
    for unit in ["", "Ki", "Mi", "Gi", "Ti", "Pi"] {
        if !v.is_multiple_of(1024) {
            return format!("{v}{unit}");
        }
        v /= 1024;
    }
    format!("{v}Ei")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t_ms: i64, cpu: f64, start: i64) -> String {
        format!(
            "# HELP node_cpu_usage_seconds_total x\n\
             node_cpu_usage_seconds_total {} {t_ms}\n\
             node_memory_working_set_bytes 2097152 {t_ms}\n\
             container_cpu_usage_seconds_total{{container=\"b\",namespace=\"default\",pod=\"burn-1\"}} {cpu} {t_ms}\n\
             container_memory_working_set_bytes{{container=\"b\",namespace=\"default\",pod=\"burn-1\"}} 1048576 {t_ms}\n\
             container_start_time_seconds{{container=\"b\",namespace=\"default\",pod=\"burn-1\"}} {start} {t_ms}\n\
             scrape_error 0\n",
            100.0 + cpu * 2.0
        )
    }

    #[test]
    fn two_scrapes_make_a_rate_and_a_restart_resets_it() {
        let m = ResourceMetrics::default();
        m.apply("n1", parse(&text(1_000_000, 10.0, 5)));
        assert!(m.node_usage("n1").is_none(), "one counter is no rate yet");
        assert!(m.pod_usage("default/burn-1").is_none());
        // 1.5 CPU-seconds over 15 s: 100m.
        m.apply("n1", parse(&text(1_015_000, 11.5, 5)));
        let (cs, at, win) = m.pod_usage("default/burn-1").unwrap();
        assert_eq!((cs[0].0.as_str(), cs[0].1.nano_cores), ("b", 100_000_000));
        assert_eq!(cs[0].1.memory, 1_048_576);
        assert_eq!((at, win), (1_015_000, 15_000));
        assert_eq!(m.node_usage("n1").unwrap().nano_cores, 200_000_000);
        assert_eq!(cpu_quantity(cs[0].1.nano_cores), "100m");
        assert_eq!(memory_quantity(2_097_152), "2Mi");
        assert_eq!(window(win), "15s");
        assert_eq!(window(14_998), "14.998s");
        // A restarted container (new start time) has no rate until its next scrape.
        m.apply("n1", parse(&text(1_030_000, 0.5, 99)));
        assert!(m.pod_usage("default/burn-1").is_none());
        // A pod gone from the node's answer is gone from the API.
        m.apply(
            "n1",
            parse("node_cpu_usage_seconds_total 1 1\nnode_memory_working_set_bytes 1 1\n"),
        );
        assert!(m.pod_node.read().unwrap().is_empty());
        assert!(m.drop_node("n1"));
        assert!(m.node_usage("n1").is_none());
    }

    #[test]
    fn labels_with_escapes_and_samples_without_timestamps_parse() {
        assert_eq!(
            parse_labels(r#"a="x",b="y\"z,w""#),
            [("a".into(), "x".into()), ("b".into(), "y\"z,w".into())]
        );
        let s =
            parse("node_cpu_usage_seconds_total 3.5\nnode_memory_working_set_bytes 7\ngarbage\n");
        assert_eq!(s.node.unwrap().0.cpu_seconds, 3.5);
        assert_eq!(cpu_quantity(1_234_567), "1234567n");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(memory_quantity(1000), "1000");
    }

    #[test]
    fn a_thousand_pods_take_well_under_a_kilobyte_each() {
        let per_pod = store_bytes_per_pod(1000);
        assert!(
            per_pod > 50.0 && per_pod < 1024.0,
            "{per_pod} bytes per pod"
        );
    }
}
