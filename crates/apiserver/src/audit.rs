//! The audit log: one JSON line per request in kube-apiserver's `audit.k8s.io/v1` `Event`
//! format at the `Metadata` level (who did what to which object, and the answer's code),
//! so tools that read Kubernetes audit logs read skiff's.
//!
//! Every request gets an audit ID, returned in the `Audit-Id` response header as
//! kube-apiserver does. Ordinary requests are logged once, at stage `ResponseComplete`;
//! long-running ones (watches and streaming subresources) at `ResponseStarted` when their
//! headers go out and again at `ResponseComplete` when the stream ends.
//!
//! Lines are written by one background thread, so a request never waits on the disk; the
//! file is appended to, flushed whenever the queue is empty, and rotated to `<path>.1` once
//! it exceeds its size limit (one backup, like `--audit-log-maxbackup=1`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response};
use bytes::Bytes;
use serde_json::{Map, Value};

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Append to this file, rotating it past `max_bytes`.
    File { path: PathBuf, max_bytes: u64 },
    /// Standard output (`--audit-log-path -`).
    Stdout,
}

/// Who made a request, as the audit log and (later) authorization see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
    /// The user's uid (service accounts: the ServiceAccount's uid), if known.
    pub uid: String,
    /// Extra attributes (a service account token's bound pod), as UserInfo.extra.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo {
            username: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }
}

/// The sending half; cheap to clone into every request.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {operation}")]
pub struct AuditError {
    pub path: PathBuf,
    pub operation: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl AuditLog {
    /// Opens the target (creating the file and its directory) and starts the writer thread.
    pub fn open(target: &AuditTarget) -> Result<AuditLog, AuditError> {
        let (tx, rx) = mpsc::channel::<String>();
        let sink: Box<dyn Write + Send> = match target {
            AuditTarget::Stdout => Box::new(std::io::stdout()),
            AuditTarget::File { path, max_bytes } => {
                let file = open_append(path)?;
                Box::new(Rotating {
                    len: file.metadata().map(|m| m.len()).unwrap_or(0),
                    out: BufWriter::with_capacity(64 * 1024, file),
                    path: path.clone(),
                    max_bytes: *max_bytes,
                })
            }
        };
        std::thread::Builder::new()
            .name("skiff-audit".into())
            .spawn(move || write_loop(rx, sink))
            .map_err(|source| AuditError {
                path: match target {
                    AuditTarget::File { path, .. } => path.clone(),
                    AuditTarget::Stdout => PathBuf::from("-"),
                },
                operation: "start the writer thread",
                source,
            })?;
        Ok(AuditLog { tx })
    }

    fn send(&self, line: String) {
        // The writer only stops when every sender is gone, so this cannot fail while we
        // hold one; if it ever did, losing an audit line must not fail the request.
        let _ = self.tx.send(line);
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| AuditError {
            path: path.to_path_buf(),
            operation: "create its directory",
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuditError {
            path: path.to_path_buf(),
            operation: "open for appending",
            source,
        })
}

fn write_loop(rx: mpsc::Receiver<String>, mut sink: Box<dyn Write + Send>) {
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        while let Some(mut line) = next.take() {
            // One write per line, so a rotation never splits a line between two files.
            line.push('\n');
            if let Err(e) = sink.write_all(line.as_bytes()) {
                tracing::warn!(error = %e, "writing the audit log failed");
            }
            next = rx.try_recv().ok();
        }
        // Queue drained: make what we have visible before blocking again.
        if let Err(e) = sink.flush() {
            tracing::warn!(error = %e, "flushing the audit log failed");
        }
    }
}

/// A file that moves itself to `<path>.1` and starts over once it exceeds `max_bytes`.
struct Rotating {
    out: BufWriter<File>,
    path: PathBuf,
    len: u64,
    max_bytes: u64,
}

impl Write for Rotating {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.max_bytes > 0 && self.len >= self.max_bytes {
            self.out.flush()?;
            let mut backup = self.path.clone().into_os_string();
            backup.push(".1");
            std::fs::rename(&self.path, &backup)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.out = BufWriter::with_capacity(64 * 1024, file);
            self.len = 0;
        }
        let n = self.out.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Set on a create's response: the name the object got, for the audit line's objectRef
/// (kube-apiserver fills it in the same way once the object is decoded).
#[derive(Debug, Clone)]
pub struct CreatedName(pub String);

/// What the log says of one request; filled before routing, finished with the response.
pub struct Record {
    log: AuditLog,
    id: String,
    received: SystemTime,
    /// The event's fixed fields, serialized once: `{"kind":"Event",…` without the closing
    /// brace. Building the line from it (rather than cloning and serializing a JSON map at
    /// each stage) keeps the log's cost per request small (measured: ~10% of the API
    /// server's create throughput went to the map-based version).
    head: String,
    verb: String,
    object_ref: Option<Map<String, Value>>,
    /// `annotations` (admission's: policy audit annotations and validation failures).
    annotations: Vec<(String, String)>,
}

tokio::task_local! {
    /// The audit annotations added while serving the request.
    static ANNOTATIONS: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;
}

/// Adds `key: value` to the audit event of the request being served, as kube's
/// `AddAnnotation`: a key keeps its first value. Outside a request it does nothing.
pub fn annotate(key: &str, value: &str) {
    let _ = ANNOTATIONS.try_with(|a| {
        let mut a = a.lock().unwrap_or_else(|e| e.into_inner());
        if !a.iter().any(|(k, _)| k == key) {
            a.push((key.to_string(), value.to_string()));
        }
    });
}

/// Runs `f`, collecting the audit annotations it adds.
pub async fn collecting<T>(f: impl std::future::Future<Output = T>) -> (T, Vec<(String, String)>) {
    let cell = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = ANNOTATIONS.scope(cell.clone(), f).await;
    let annotations = std::mem::take(&mut *cell.lock().unwrap_or_else(|e| e.into_inner()));
    (out, annotations)
}

/// `s` as a JSON string literal.
fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

impl Record {
    /// Starts the record of `req` from `user` at `source_ip`.
    pub fn begin<B>(
        log: &AuditLog,
        req: &Request<B>,
        user: &UserInfo,
        source_ip: Option<std::net::IpAddr>,
    ) -> Record {
        use std::fmt::Write as _;
        let id = crate::meta::uid();
        let uri = req.uri();
        let request_uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| uri.path());
        let (verb, object_ref) = classify(req.method(), uri.path(), uri.query());
        let mut head = String::with_capacity(384);
        let _ = write!(
            head,
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","requestURI":{},"verb":{},"user":{{"username":{},"groups":["#,
            quoted(request_uri),
            quoted(&verb),
            quoted(&user.username),
        );
        for (i, g) in user.groups.iter().enumerate() {
            if i > 0 {
                head.push(',');
            }
            head.push_str(&quoted(g));
        }
        head.push_str(r#"]},"sourceIPs":["#);
        if let Some(ip) = source_ip {
            let _ = write!(head, "\"{ip}\"");
        }
        head.push(']');
        if let Some(ua) = req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            let _ = write!(head, r#","userAgent":{}"#, quoted(ua));
        }
        Record {
            log: log.clone(),
            id,
            received: SystemTime::now(),
            head,
            verb,
            object_ref: object_ref.and_then(|o| match o {
                Value::Object(m) => Some(m),
                _ => None,
            }),
            annotations: Vec::new(),
        }
    }

    /// Sets the event's `annotations`.
    pub fn annotate(&mut self, annotations: Vec<(String, String)>) {
        self.annotations = annotations;
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn emit(&mut self, stage: &str, code: u16) {
        use std::fmt::Write as _;
        let mut line = String::with_capacity(self.head.len() + 320);
        line.push_str(&self.head);
        if let Some(o) = &self.object_ref {
            line.push_str(r#","objectRef":"#);
            line.push_str(&Value::Object(o.clone()).to_string());
        }
        let failure = if code >= 400 {
            r#","status":"Failure""#
        } else {
            ""
        };
        let _ = write!(
            line,
            r#","stage":"{stage}","requestReceivedTimestamp":"{}","stageTimestamp":"{}","responseStatus":{{"metadata":{{}},"code":{code}{failure}}}"#,
            micro_time(self.received),
            micro_time(SystemTime::now()),
        );
        if !self.annotations.is_empty() {
            let m: Map<String, Value> = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            line.push_str(r#","annotations":"#);
            line.push_str(&Value::Object(m).to_string());
        }
        line.push('}');
        self.log.send(line);
    }

    /// Logs the response and tags it with the audit ID. Long-running responses are logged
    /// as started now and as complete when their body is dropped (ended or cut off).
    pub fn finish(mut self, mut resp: Response<Body>) -> Response<Body> {
        if let Ok(v) = HeaderValue::from_str(&self.id) {
            resp.headers_mut().insert("Audit-Id", v);
        }
        let code = resp.status().as_u16();
        if let (Some(CreatedName(name)), Some(o)) = (
            resp.extensions().get::<CreatedName>(),
            self.object_ref.as_mut(),
        ) {
            o.entry("name").or_insert_with(|| name.clone().into());
        }
        let long_running = code == 101
            || self.verb == "watch"
            || self
                .object_ref
                .as_ref()
                .and_then(|o| o.get("subresource"))
                .and_then(Value::as_str)
                .is_some_and(|s| matches!(s, "exec" | "attach" | "portforward" | "log"));
        if !long_running {
            self.emit("ResponseComplete", code);
            return resp;
        }
        self.emit("ResponseStarted", code);
        let (parts, body) = resp.into_parts();
        let body = Body::new(Tail {
            inner: body,
            record: Some(self),
            code,
        });
        Response::from_parts(parts, body)
    }
}

/// A response body that logs `ResponseComplete` when it is dropped.
struct Tail {
    inner: Body,
    record: Option<Record>,
    code: u16,
}

impl Drop for Tail {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.emit("ResponseComplete", self.code);
        }
    }
}

impl http_body::Body for Tail {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `2024-05-01T10:00:00.123456Z`, as `metav1.MicroTime`.
fn micro_time(t: SystemTime) -> String {
    let secs = crate::meta::rfc3339(t);
    let micros = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    format!("{}.{micros:06}Z", secs.trim_end_matches('Z'))
}

/// The Kubernetes verb and, for resource requests, the object reference of a request —
/// worked out from the URL alone, as kube-apiserver's request-info resolver does.
fn classify(method: &Method, path: &str, query: Option<&str>) -> (String, Option<Value>) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return (method.as_str().to_ascii_lowercase(), None),
    };
    if rest.is_empty() {
        return (method.as_str().to_ascii_lowercase(), None);
    }
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    // `namespaces/<ns>/<resource>…` addresses a namespaced resource; `namespaces/<ns>` alone
    // (or with a subresource like `finalize`/`status`) is the namespace object itself.
    if rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "finalize" | "status") {
        namespace = Some(rest[1]);
        rest = &rest[2..];
    }
    let resource = rest.first().copied().unwrap_or_default();
    let name = rest.get(1).copied();
    let subresource = rest.get(2).copied();
    let watch_param = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
    });
    let verb = match *method {
        Method::GET | Method::HEAD if watch_path || (watch_param && subresource.is_none()) => {
            "watch"
        }
        Method::GET | Method::HEAD if name.is_none() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => return (method.as_str().to_ascii_lowercase(), None),
    };
    let mut o = Map::new();
    o.insert("resource".into(), resource.into());
    if let Some(ns) = namespace {
        o.insert("namespace".into(), ns.into());
    }
    if let Some(n) = name {
        o.insert("name".into(), n.into());
    }
    if !group.is_empty() {
        o.insert("apiGroup".into(), group.into());
    }
    o.insert("apiVersion".into(), version.into());
    if let Some(s) = subresource {
        o.insert("subresource".into(), s.into());
    }
    (verb.into(), Some(Value::Object(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(m: Method, p: &str, q: Option<&str>) -> (String, Value) {
        let (v, o) = classify(&m, p, q);
        (v, o.unwrap_or(Value::Null))
    }

    #[test]
    fn verbs_and_object_refs_follow_the_url() {
        let (v, o) = c(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(v, "list");
        assert_eq!(
            o,
            json!({"resource": "pods", "namespace": "default", "apiVersion": "v1"})
        );
        let (v, o) = c(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            Some("labelSelector=a%3Db&watch=true"),
        );
        assert_eq!((v.as_str(), &o["resource"]), ("watch", &json!("pods")));
        let (v, _) = c(Method::GET, "/api/v1/watch/namespaces/default/pods/x", None);
        assert_eq!(v, "watch");
        let (v, o) = c(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns/deployments/web/scale",
            None,
        );
        assert_eq!(v, "patch");
        assert_eq!(
            o,
            json!({"resource": "deployments", "namespace": "ns", "name": "web",
                   "apiGroup": "apps", "apiVersion": "v1", "subresource": "scale"})
        );
        let (v, o) = c(Method::DELETE, "/api/v1/namespaces/gone", None);
        assert_eq!(v, "delete");
        assert_eq!(
            o,
            json!({"resource": "namespaces", "name": "gone", "apiVersion": "v1"})
        );
        let (v, o) = c(Method::PUT, "/api/v1/namespaces/gone/finalize", None);
        assert_eq!(v, "update");
        assert_eq!(o["subresource"], "finalize");
        let (v, _) = c(Method::DELETE, "/api/v1/namespaces/a/configmaps", None);
        assert_eq!(v, "deletecollection");
        let (v, o) = c(
            Method::POST,
            "/api/v1/namespaces/a/pods/p/exec",
            Some("command=ls"),
        );
        assert_eq!((v.as_str(), &o["subresource"]), ("create", &json!("exec")));
        let (v, o) = c(Method::GET, "/version", None);
        assert_eq!((v.as_str(), o), ("get", Value::Null));
        let (v, o) = c(Method::GET, "/apis/apps/v1", None);
        assert_eq!((v.as_str(), o), ("get", Value::Null));
    }

    #[test]
    fn micro_time_has_six_digits() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_500_042);
        assert_eq!(micro_time(t), "1970-01-01T00:00:01.500042Z");
    }

    #[test]
    fn rotation_keeps_one_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&AuditTarget::File {
            path: path.clone(),
            max_bytes: 100,
        })
        .unwrap();
        for i in 0..30 {
            log.send(format!("{{\"line\":{i}}}"));
        }
        drop(log);
        // The writer thread ends once the sender is gone; wait for it by polling the files.
        let backup = dir.path().join("audit.log.1");
        let mut lines = Vec::new();
        for _ in 0..200 {
            let cur = std::fs::read_to_string(&path).unwrap_or_default();
            let old = std::fs::read_to_string(&backup).unwrap_or_default();
            lines = old.lines().chain(cur.lines()).map(String::from).collect();
            if lines.last().is_some_and(|l| l == "{\"line\":29}") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(backup.exists(), "no rotation happened");
        assert!(std::fs::metadata(&path).unwrap().len() <= 100 + 20);
        // Lines are never split across files, and the newest are kept.
        for l in &lines {
            serde_json::from_str::<Value>(l).unwrap();
        }
        assert_eq!(lines.last().map(String::as_str), Some("{\"line\":29}"));
    }
}
