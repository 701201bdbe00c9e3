//! The seam between the streaming server and whatever runs containers: the server speaks
//! the wire protocols, a [`StreamingRuntime`] runs commands, opens ports and reads logs.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// The container a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// A terminal size from the client's resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// The standard streams of an exec or attach session; `None` when the client did not ask
/// for that stream.
///
/// Contract: the runtime drops `stdout` and `stderr` (and every clone of what it wrote
/// them to) before `exec`/`attach` returns, so the server knows all output has been sent
/// before it reports the exit code. `stdin` reaches EOF when the client closes it.
pub struct ExecStdio {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    /// Terminal resizes, when `tty` was asked for.
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// A bidirectional byte stream to a pod's port.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// `kubectl logs` options, as the `containerLogs` query carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub since_seconds: Option<u64>,
    /// RFC 3339 time, as the client sent it.
    pub since_time: Option<String>,
    /// The server stops the stream after this many bytes; runtimes may ignore it.
    pub limit_bytes: Option<u64>,
}

/// A container's log as a byte stream; with `follow` it ends when the container does (or
/// when the client goes away and the stream is dropped).
pub type LogStream = Reader;

/// Why a runtime could not serve a request. The category picks the HTTP code and the
/// Status reason the client sees.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{message}")]
    Invalid { message: String },
    #[error("{message}")]
    Unavailable { message: String },
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl RuntimeError {
    /// HTTP status code and Kubernetes Status reason.
    pub fn code_reason(&self) -> (u16, &'static str) {
        match self {
            RuntimeError::NotFound { .. } => (404, "NotFound"),
            RuntimeError::Invalid { .. } => (400, "BadRequest"),
            RuntimeError::Unavailable { .. } => (503, "ServiceUnavailable"),
            RuntimeError::Internal { .. } => (500, "InternalError"),
        }
    }

    /// The message with its chain of causes.
    pub fn full_message(&self) -> String {
        skiff_serve::error_chain(self)
    }
}

/// What the kubelet's pod workers implement so the streaming server can reach containers.
#[async_trait::async_trait]
pub trait StreamingRuntime: Send + Sync + 'static {
    /// Runs `command` in the container and returns its exit code.
    async fn exec(
        &self,
        target: &ContainerRef,
        command: &[String],
        tty: bool,
        stdio: ExecStdio,
    ) -> Result<i32, RuntimeError>;

    /// Connects to the container's main process; returns its exit code when it ends (or
    /// 0 when the runtime detaches the client without the process ending).
    async fn attach(
        &self,
        target: &ContainerRef,
        tty: bool,
        stdio: ExecStdio,
    ) -> Result<i32, RuntimeError>;

    /// Opens a connection to `port` in the pod's network namespace.
    async fn port_forward(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, RuntimeError>;

    /// The container's log.
    async fn logs(
        &self,
        target: &ContainerRef,
        opts: &LogOptions,
    ) -> Result<LogStream, RuntimeError>;

    /// `/stats/summary`: the node's, pods' and containers' CPU and memory (the kubelet's
    /// summary API, `stats/v1alpha1`).
    async fn stats_summary(&self) -> Result<serde_json::Value, RuntimeError> {
        Err(RuntimeError::NotFound {
            what: "resource statistics on this runtime".into(),
        })
    }

    /// `/metrics/resource`: the same as Prometheus text (what metrics-server scrapes).
    async fn metrics_resource(&self) -> Result<String, RuntimeError> {
        Err(RuntimeError::NotFound {
            what: "resource metrics on this runtime".into(),
        })
    }

    /// `/metrics`: the agent's own metrics (OpenMetrics text).
    async fn metrics(&self) -> Result<String, RuntimeError> {
        Err(RuntimeError::NotFound {
            what: "agent metrics on this runtime".into(),
        })
    }
}
