//! The registry's metrics, served at `/metrics` (unauthenticated, as distribution's debug
//! server; labels carry no repository names):
//! - `registry_http_requests_total{method,handler,code}` and
//!   `registry_http_request_duration_seconds{method,handler}` (to the response head);
//! - `registry_http_received_bytes_total{handler}` / `registry_http_sent_bytes_total{handler}`:
//!   request and response body bytes;
//! - `registry_blob_upload_duration_seconds`: from an upload's start (POST) to its
//!   verified completion (PUT), or the one request of a monolithic upload.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use skiff_serve::metrics::Registry as MetricsRegistry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handler {
    method: String,
    handler: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerCode {
    method: String,
    handler: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerOnly {
    handler: &'static str,
}

/// Uploads whose start is remembered for the duration metric; beyond this the oldest
/// (abandoned) ones are forgotten.
const TRACKED_UPLOADS: usize = 10_000;

pub struct Metrics {
    pub registry: MetricsRegistry,
    requests: Family<HandlerCode, Counter>,
    durations: Family<Handler, Histogram, fn() -> Histogram>,
    received: Family<HandlerOnly, Counter>,
    sent: Family<HandlerOnly, Counter>,
    upload_duration: Histogram,
    uploads: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(skiff_serve::metrics::REQUEST_BUCKETS.iter().copied())
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = MetricsRegistry::default();
        let requests = Family::<HandlerCode, Counter>::default();
        registry.register(
            "registry_http_requests",
            "Requests by HTTP method, handler and response code",
            requests.clone(),
        );
        let durations: Family<Handler, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "registry_http_request_duration_seconds",
            "Time to the response head in seconds, by HTTP method and handler",
            durations.clone(),
        );
        let received = Family::<HandlerOnly, Counter>::default();
        registry.register(
            "registry_http_received_bytes",
            "Request body bytes received, by handler",
            received.clone(),
        );
        let sent = Family::<HandlerOnly, Counter>::default();
        registry.register(
            "registry_http_sent_bytes",
            "Response body bytes sent, by handler",
            sent.clone(),
        );
        // Uploads run from milliseconds (a small layer on loopback) to many minutes.
        let upload_duration = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
        ]);
        registry.register(
            "registry_blob_upload_duration_seconds",
            "Blob uploads from start to verified completion, in seconds",
            upload_duration.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            received,
            sent,
            upload_duration,
            uploads: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Counts a request and its body bytes: call before handling it; `finish` the
    /// returned tracker with the response.
    pub fn begin(self: &Arc<Self>, method: &str, handler: &'static str) -> Tracker {
        Tracker {
            metrics: self.clone(),
            method: method.to_string(),
            handler,
            started: Instant::now(),
        }
    }

    pub fn upload_started(&self, id: &str) {
        let mut m = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= TRACKED_UPLOADS {
            if let Some(oldest) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(id.to_string(), Instant::now());
    }

    /// An upload was completed (`verified`) or cancelled.
    pub fn upload_ended(&self, id: &str, verified: bool) {
        let started = self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let (Some(t), true) = (started, verified) {
            self.upload_duration.observe(t.elapsed().as_secs_f64());
        }
    }

    /// A monolithic upload (one request) that took `took`.
    pub fn upload_took(&self, took: Duration) {
        self.upload_duration.observe(took.as_secs_f64());
    }
}

/// One request being counted.
pub struct Tracker {
    metrics: Arc<Metrics>,
    method: String,
    handler: &'static str,
    started: Instant,
}

impl Tracker {
    pub fn request_body(&self, body: Body) -> Body {
        let c = self.metrics.received.get_or_create_owned(&HandlerOnly {
            handler: self.handler,
        });
        Body::new(Counting {
            inner: body,
            bytes: c,
        })
    }

    pub fn finish(self, resp: axum::response::Response) -> axum::response::Response {
        let h = Handler {
            method: self.method,
            handler: self.handler,
        };
        self.metrics
            .durations
            .get_or_create(&h)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .requests
            .get_or_create(&HandlerCode {
                method: h.method,
                handler: h.handler,
                code: resp.status().as_u16().to_string(),
            })
            .inc();
        let sent = self.metrics.sent.get_or_create_owned(&HandlerOnly {
            handler: self.handler,
        });
        resp.map(|b| {
            Body::new(Counting {
                inner: b,
                bytes: sent,
            })
        })
    }
}

/// A body that adds the bytes passing through it to a counter.
struct Counting {
    inner: Body,
    bytes: Counter,
}

impl http_body::Body for Counting {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.bytes.inc_by(d.len() as u64);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
