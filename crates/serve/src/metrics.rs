//! `/metrics` exposition and the pieces every component's metrics share.
//!
//! Each server owns one [`Registry`] (no process-wide default registry), registers its
//! metrics into it at start-up and serves it with [`response`]. Names and labels follow
//! Kubernetes where it has the metric (`apiserver_request_total{verb,resource,code}`…).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Response, StatusCode};
pub use prometheus_client::registry::Registry;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The exposition format prometheus-client writes (Prometheus scrapes it natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets (seconds) of kube-apiserver's `apiserver_request_duration_seconds`.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Latency buckets (seconds) of kube-apiserver's `etcd_request_duration_seconds`.
pub const STORAGE_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The registry in text exposition format.
pub fn response(registry: &Registry) -> Response<Full<Bytes>> {
    let mut text = String::new();
    let (code, body) = match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (StatusCode::OK, text),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {e}\n"),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// A response body that ends (cleanly: the last chunk is sent) when `signal` is
/// cancelled, and drops `guard` with itself — for long-running responses (watches, log
/// follows) that must end at shutdown and that a gauge counts while they are open.
pub struct LongRunning<B, G = ()> {
    inner: B,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
    _guard: G,
}

impl<B, G> LongRunning<B, G> {
    pub fn new(inner: B, signal: &CancellationToken, guard: G) -> LongRunning<B, G> {
        LongRunning {
            inner,
            cancelled: Box::pin(signal.clone().cancelled_owned()),
            ended: false,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for LongRunning<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // It may end early: never promise a length.
        SizeHint::default()
    }
}
