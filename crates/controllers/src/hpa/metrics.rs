//! Where the HPA controller reads metrics: the [`MetricsSource`] seam.
//!
//! The resource metrics API (`metrics.k8s.io/v1beta1`, served by the API server in
//! metrics-server's format) gives pods' cpu and memory usage; [`ApiMetricsSource`] reads
//! it through the controller manager's `kube::Client` with
//! `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={selector}`.
//! The custom and external metrics APIs (`custom.metrics.k8s.io`,
//! `external.metrics.k8s.io`) are not served by skiff: their methods answer
//! [`MetricsError::NotRegistered`] by default, which the controller reports as Kubernetes
//! does when no adapter is registered. Tests give the controller their own source
//! through [`crate::Config::hpa_metrics`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde::Deserialize;
use skiff_api::quantity::Quantity;

/// One pod's usage as the resource metrics API reports it (`PodMetrics`).
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetrics {
    pub name: String,
    pub namespace: String,
    /// When the sample was taken (the end of its window).
    pub timestamp: Timestamp,
    /// The span the usage was averaged over.
    pub window: Duration,
    pub containers: Vec<ContainerMetrics>,
}

/// One container's usage, by resource name (`cpu`, `memory`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerMetrics {
    pub name: String,
    pub usage: BTreeMap<String, Quantity>,
}

/// One pod's value of a custom metric (custom.metrics.k8s.io), in milli-units.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetricValue {
    pub pod: String,
    pub milli_value: i64,
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// Why metrics could not be read. The messages are client-go's, since they end up in
/// HPA conditions and Events.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The metrics API answered with an error status (404 when nothing serves the API,
    /// 503 when its backend is down).
    #[error("{message}")]
    Status { code: u16, message: String },
    /// The request never got an answer.
    #[error("{source}")]
    Transport {
        #[source]
        source: kube::Error,
    },
    /// The answer was not the list the API promises.
    #[error("invalid response from {api}: {reason}")]
    Decode { api: &'static str, reason: String },
    /// No API of this group is served (client-go's discovery answer).
    #[error("no {what} API ({group}) registered")]
    NotRegistered {
        what: &'static str,
        group: &'static str,
    },
}

/// The metrics the HPA controller reads; see the module docs.
#[async_trait::async_trait]
pub trait MetricsSource: Send + Sync {
    /// Usage of the pods of `namespace` that match `selector` (a label-selector string).
    async fn pod_metrics(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<PodMetrics>, MetricsError>;

    /// A custom metric of the pods matching `selector` (a `Pods` metric).
    async fn pods_metric(
        &self,
        _namespace: &str,
        _selector: &str,
        _metric: &str,
        _metric_selector: &str,
    ) -> Result<Vec<PodMetricValue>, MetricsError> {
        Err(custom_not_registered())
    }

    /// A custom metric describing one object (an `Object` metric), in milli-units.
    async fn object_metric(
        &self,
        _namespace: &str,
        _object: &CrossVersionObjectReference,
        _metric: &str,
        _metric_selector: &str,
    ) -> Result<i64, MetricsError> {
        Err(custom_not_registered())
    }

    /// The values of an external metric (an `External` metric), in milli-units.
    async fn external_metric(
        &self,
        _namespace: &str,
        _metric: &str,
        _metric_selector: &str,
    ) -> Result<Vec<i64>, MetricsError> {
        Err(MetricsError::NotRegistered {
            what: "external metrics",
            group: "external.metrics.k8s.io",
        })
    }
}

fn custom_not_registered() -> MetricsError {
    MetricsError::NotRegistered {
        what: "custom metrics",
        group: "custom.metrics.k8s.io",
    }
}

/// A [`MetricsSource`] shared by the controller manager's settings (Debug for
/// [`crate::Config`]).
#[derive(Clone)]
pub struct SharedMetricsSource(pub std::sync::Arc<dyn MetricsSource>);

impl std::fmt::Debug for SharedMetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource")
    }
}

/// The resource metrics API read through the API server.
pub struct ApiMetricsSource {
    client: Client,
}

impl ApiMetricsSource {
    pub fn new(client: Client) -> ApiMetricsSource {
        ApiMetricsSource { client }
    }
}

const RESOURCE_API: &str = "metrics.k8s.io/v1beta1";

#[async_trait::async_trait]
impl MetricsSource for ApiMetricsSource {
    async fn pod_metrics(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<PodMetrics>, MetricsError> {
        let mut url = format!(
            "/apis/{RESOURCE_API}/namespaces/{}/pods",
            percent_segment(namespace)
        );
        if !selector.is_empty() {
            url.push('?');
            url.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .append_pair("labelSelector", selector)
                    .finish(),
            );
        }
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| MetricsError::Decode {
                api: "the resource metrics API",
                reason: e.to_string(),
            })?;
        let text = self
            .client
            .request_text(req)
            .await
            .map_err(|e| from_kube(e, "pods.metrics.k8s.io"))?;
        parse_pod_metrics_list(&text)
    }
}

/// A namespace is a DNS label, but a path segment must never be able to escape.
fn percent_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// client-go's error for a failed request: the Status message, or the generic message of
/// the status code when the body was not a Status.
fn from_kube(e: kube::Error, resource: &str) -> MetricsError {
    match e {
        kube::Error::Api(s) => {
            let parsed = !s.message.is_empty() && s.reason != "Failed to parse error data";
            let message = if parsed {
                s.message.clone()
            } else {
                let generic = match s.code {
                    404 => "the server could not find the requested resource",
                    503 => "the server is currently unable to handle the request",
                    401 => "Unauthorized",
                    403 => "forbidden",
                    500 => "an error on the server has prevented the request from succeeding",
                    _ => "an error on the server has prevented the request from succeeding",
                };
                format!("{generic} (get {resource})")
            };
            MetricsError::Status {
                code: s.code,
                message,
            }
        }
        other => MetricsError::Transport { source: other },
    }
}

#[derive(Deserialize)]
struct WireList {
    #[serde(default)]
    items: Vec<WirePod>,
}

#[derive(Deserialize)]
struct WirePod {
    #[serde(default)]
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    timestamp: Option<String>,
    window: Option<String>,
    #[serde(default)]
    containers: Vec<WireContainer>,
}

#[derive(Deserialize)]
struct WireContainer {
    name: String,
    #[serde(default)]
    usage: BTreeMap<String, String>,
}

/// Parses a `PodMetricsList` (metrics-server's JSON).
pub fn parse_pod_metrics_list(text: &str) -> Result<Vec<PodMetrics>, MetricsError> {
    let bad = |reason: String| MetricsError::Decode {
        api: "the resource metrics API",
        reason,
    };
    let list: WireList = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(list.items.len());
    for p in list.items {
        let name = p.metadata.name.unwrap_or_default();
        let timestamp = match p.timestamp.as_deref() {
            Some(t) => t
                .parse::<Timestamp>()
                .map_err(|e| bad(format!("pod {name}: timestamp {t:?}: {e}")))?,
            None => Timestamp::UNIX_EPOCH,
        };
        let window = match p.window.as_deref() {
            Some(w) => parse_go_duration(w)
                .ok_or_else(|| bad(format!("pod {name}: window {w:?} is not a duration")))?,
            None => Duration::ZERO,
        };
        let mut containers = Vec::with_capacity(p.containers.len());
        for c in p.containers {
            let mut usage = BTreeMap::new();
            for (r, q) in c.usage {
                let v = Quantity::parse(&q)
                    .map_err(|e| bad(format!("pod {name} container {}: {r} {q:?}: {e}", c.name)))?;
                usage.insert(r, v);
            }
            containers.push(ContainerMetrics {
                name: c.name,
                usage,
            });
        }
        out.push(PodMetrics {
            name,
            namespace: p.metadata.namespace.unwrap_or_default(),
            timestamp,
            window,
            containers,
        });
    }
    Ok(out)
}

/// A Go `time.Duration` string (`15s`, `1m0s`, `1.5s`, `250ms`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_metrics_list_parses_as_metrics_server_writes_it() {
        let text = r#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},
          "items":[{"metadata":{"name":"web-1","namespace":"default","labels":{"app":"web"}},
            "timestamp":"2024-01-01T10:00:00Z","window":"15s",
            "containers":[{"name":"c","usage":{"cpu":"12345678n","memory":"1234Ki"}}]}]}"#;
        let l = parse_pod_metrics_list(text).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "web-1");
        assert_eq!(l[0].window, Duration::from_secs(15));
        assert_eq!(l[0].containers[0].usage["cpu"].milli_value(), 13);
        assert_eq!(l[0].containers[0].usage["memory"].value(), 1234 * 1024);
        let e = parse_pod_metrics_list(
            r#"{"items":[{"containers":[{"name":"c","usage":{"cpu":"x"}}]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("container c: cpu \"x\""), "{e}");
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn api_errors_read_as_client_go_reports_them() {
        let s = kube::core::Status::failure("boom", "Failed to parse error data").with_code(404);
        let e = from_kube(kube::Error::Api(s.boxed()), "pods.metrics.k8s.io");
        assert_eq!(
            e.to_string(),
            "the server could not find the requested resource (get pods.metrics.k8s.io)"
        );
        let s =
            kube::core::Status::failure("service unavailable", "ServiceUnavailable").with_code(503);
        let e = from_kube(kube::Error::Api(s.boxed()), "pods.metrics.k8s.io");
        assert_eq!(e.to_string(), "service unavailable");
    }
}
