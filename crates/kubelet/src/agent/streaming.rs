//! The kubelet API's runtime: exec, attach, port-forward and logs of this agent's pods,
//! resolved from pod and container names to the running container (and its sandbox).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::containers::{Container, RunState};
use super::Shared;
use crate::runtime::{
    ContainerRef, Duplex, ExecStdio, LogOptions, LogStream, RuntimeError, StreamingRuntime,
    TermSize,
};

pub struct AgentStreaming {
    pub shared: Arc<OnceLock<Arc<Shared>>>,
}

fn unavailable(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Unavailable {
        message: message.into(),
    }
}

impl AgentStreaming {
    fn sh(&self) -> Result<&Arc<Shared>, RuntimeError> {
        self.shared
            .get()
            .ok_or_else(|| unavailable("the agent is starting"))
    }

    /// The pod's containers named `name`, latest attempt first.
    async fn runs(&self, t: &ContainerRef) -> Result<(String, Vec<Container>), RuntimeError> {
        let sh = self.sh()?;
        let pod = sh
            .pod(&t.namespace, &t.pod)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("pod {:?} in namespace {:?}", t.pod, t.namespace),
            })?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let rt = sh.rt.clone();
        let u = uid.clone();
        let mut cs: Vec<Container> = tokio::task::spawn_blocking(move || rt.pod_containers(&u))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.record.name == t.container)
            .collect();
        cs.sort_by_key(|c| std::cmp::Reverse(c.record.attempt));
        Ok((uid, cs))
    }

    async fn running(&self, t: &ContainerRef) -> Result<Container, RuntimeError> {
        let (_, cs) = self.runs(t).await?;
        match cs.into_iter().next() {
            Some(c) if c.state == RunState::Running => Ok(c),
            Some(_) => Err(RuntimeError::Invalid {
                message: format!("container {:?} is not running", t.container),
            }),
            None => Err(RuntimeError::NotFound {
                what: format!("container {:?} in pod {:?}", t.container, t.pod),
            }),
        }
    }
}

/// A socket pair: our end as async, theirs as a plain fd for the shim.
fn pair() -> Result<(tokio::net::UnixStream, OwnedFd), RuntimeError> {
    let (a, b) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| unavailable(format!("making a socket pair: {e}")))?;
    a.set_nonblocking(true)
        .map_err(|e| unavailable(format!("socket pair: {e}")))?;
    let a = tokio::net::UnixStream::from_std(a)
        .map_err(|e| unavailable(format!("socket pair: {e}")))?;
    Ok((a, OwnedFd::from(b)))
}

#[async_trait::async_trait]
impl StreamingRuntime for AgentStreaming {
    async fn exec(
        &self,
        target: &ContainerRef,
        command: &[String],
        tty: bool,
        stdio: ExecStdio,
    ) -> Result<i32, RuntimeError> {
        let c = self.running(target).await?;
        let sh = self.sh()?;
        let ExecStdio {
            stdin,
            stdout,
            stderr,
            resize,
        } = stdio;
        // kubectl sends the terminal's size as soon as the stream is up: the pty is made
        // with it; later sizes resize it.
        let exec_id = super::containers::random_id();
        let default = TermSize {
            width: 80,
            height: 24,
        };
        let (size, resizer) = match (tty, resize) {
            (false, _) => (None, None),
            (true, None) => (Some(default), None),
            (true, Some(mut rx)) => {
                let first = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
                let (rt, rec, id) = (sh.rt.clone(), c.record.clone(), exec_id.clone());
                let resizer = tokio::spawn(async move {
                    while let Some(size) = rx.recv().await {
                        let (rt, rec, id) = (rt.clone(), rec.clone(), id.clone());
                        let _ =
                            tokio::task::spawn_blocking(move || rt.resize_exec(&rec, &id, size))
                                .await;
                    }
                });
                (Some(first.ok().flatten().unwrap_or(default)), Some(resizer))
            }
        };
        let (in_ours, in_theirs) = pair()?;
        let (out_ours, out_theirs) = pair()?;
        let (err_ours, err_theirs) = pair()?;
        // stdin: the client's bytes, then EOF.
        let feed = tokio::spawn(async move {
            let (_, mut w) = in_ours.into_split();
            if let Some(mut r) = stdin {
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
            let _ = w.shutdown().await;
        });
        let copy = |ours: tokio::net::UnixStream, sink: Option<crate::runtime::Writer>| {
            tokio::spawn(async move {
                let (mut r, _w) = ours.into_split();
                match sink {
                    Some(mut s) => {
                        let _ = tokio::io::copy(&mut r, &mut s).await;
                        let _ = s.flush().await;
                    }
                    None => {
                        let mut buf = [0u8; 8192];
                        while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                }
            })
        };
        let out_task = copy(out_ours, stdout);
        let err_task = copy(err_ours, stderr);
        let (rt, rec, argv) = (sh.rt.clone(), c.record.clone(), command.to_vec());
        let code = tokio::task::spawn_blocking(move || {
            let r = rt.exec(
                &rec,
                argv,
                size,
                &exec_id,
                in_theirs.as_fd(),
                out_theirs.as_fd(),
                err_theirs.as_fd(),
            );
            drop((in_theirs, out_theirs, err_theirs));
            r
        })
        .await
        .map_err(|e| unavailable(format!("exec: {e}")))?;
        let _ = out_task.await;
        let _ = err_task.await;
        feed.abort();
        if let Some(r) = resizer {
            r.abort();
        }
        code.map_err(|message| RuntimeError::Internal {
            message,
            source: None,
        })
    }

    async fn attach(
        &self,
        target: &ContainerRef,
        _tty: bool,
        stdio: ExecStdio,
    ) -> Result<i32, RuntimeError> {
        let c = self.running(target).await?;
        let sh = self.sh()?;
        let ExecStdio {
            stdin,
            stdout,
            stderr,
            resize,
        } = stdio;
        let (out_ours, out_theirs) = pair()?;
        let (err_ours, err_theirs) = pair()?;
        // The client's input, when it sends some, goes to the container's (its shim keeps
        // it open when the container has `stdin: true`).
        let (feed, in_theirs) = match stdin {
            Some(mut r) => {
                let (in_ours, in_theirs) = pair()?;
                let feed = tokio::spawn(async move {
                    let (_, mut w) = in_ours.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
                (Some(feed), Some(in_theirs))
            }
            None => (None, None),
        };
        let (rt, rec) = (sh.rt.clone(), c.record.clone());
        tokio::task::spawn_blocking(move || {
            rt.attach(
                &rec,
                in_theirs.as_ref().map(|f| f.as_fd()),
                out_theirs.as_fd(),
                err_theirs.as_fd(),
            )
        })
        .await
        .map_err(|e| unavailable(format!("attach: {e}")))?
        .map_err(unavailable)?;
        // Terminal resizes reach the container's terminal.
        let resizer = resize.map(|mut rx| {
            let (rt, rec) = (sh.rt.clone(), c.record.clone());
            tokio::spawn(async move {
                while let Some(size) = rx.recv().await {
                    let (rt, rec) = (rt.clone(), rec.clone());
                    let _ = tokio::task::spawn_blocking(move || rt.resize(&rec, size)).await;
                }
            })
        });
        let copy = |ours: tokio::net::UnixStream, sink: Option<crate::runtime::Writer>| {
            tokio::spawn(async move {
                let (mut r, _w) = ours.into_split();
                if let Some(mut s) = sink {
                    let _ = tokio::io::copy(&mut r, &mut s).await;
                    let _ = s.flush().await;
                }
            })
        };
        let a = copy(out_ours, stdout);
        let b = copy(err_ours, stderr);
        let _ = a.await;
        let _ = b.await;
        if let Some(f) = feed {
            f.abort();
        }
        if let Some(r) = resizer {
            r.abort();
        }
        let rt = sh.rt.clone();
        let rec = c.record.clone();
        let code = tokio::task::spawn_blocking(move || match rt.state(&rec) {
            RunState::Exited(e) => e.exit_code,
            _ => 0,
        })
        .await
        .unwrap_or(0);
        Ok(code)
    }

    async fn port_forward(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, RuntimeError> {
        let sh = self.sh()?;
        let p = sh
            .pod(namespace, pod)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("pod {pod:?} in namespace {namespace:?}"),
            })?;
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let ns = sh.rt.network_namespace(&uid).ok_or_else(|| {
            unavailable(format!(
                "pod {pod:?} in namespace {namespace:?} has no network namespace"
            ))
        })?;
        let s = tokio::task::spawn_blocking(move || {
            skiff_container::netns::in_network(&ns, move || {
                std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
            })
        })
        .await
        .map_err(|e| unavailable(format!("port-forward: {e}")))?
        .map_err(|e| unavailable(format!("entering the pod's network namespace: {}", skiff_serve::error_chain(&e))))?
        .map_err(|e| unavailable(format!(
            "failed to connect to localhost:{port} inside namespace of pod {pod:?}, IPv4: dial tcp4 127.0.0.1:{port}: connect: {e}"
        )))?;
        s.set_nonblocking(true)
            .map_err(|e| unavailable(e.to_string()))?;
        let s = tokio::net::TcpStream::from_std(s).map_err(|e| unavailable(e.to_string()))?;
        Ok(Box::new(s))
    }

    async fn stats_summary(&self) -> Result<serde_json::Value, RuntimeError> {
        let sh = self.sh()?.clone();
        tokio::task::spawn_blocking(move || super::stats::summary(&sh))
            .await
            .map_err(|e| unavailable(format!("stats: {e}")))
    }

    async fn metrics_resource(&self) -> Result<String, RuntimeError> {
        let sh = self.sh()?.clone();
        tokio::task::spawn_blocking(move || super::stats::metrics(&sh))
            .await
            .map_err(|e| unavailable(format!("metrics: {e}")))
    }

    async fn metrics(&self) -> Result<String, RuntimeError> {
        let sh = self.sh()?.clone();
        tokio::task::spawn_blocking(move || sh.metrics.render(&sh))
            .await
            .map_err(|e| unavailable(format!("metrics: {e}")))
    }

    async fn logs(
        &self,
        target: &ContainerRef,
        opts: &LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        let (_, cs) = self.runs(target).await?;
        let c = if opts.previous {
            cs.get(1).cloned().ok_or_else(|| RuntimeError::Invalid {
                message: format!(
                    "previous terminated container {:?} in pod {:?} not found",
                    target.container, target.pod
                ),
            })?
        } else {
            cs.first().cloned().ok_or_else(|| RuntimeError::Invalid {
                message: format!(
                    "container {:?} in pod {:?} is waiting to start: ContainerCreating",
                    target.container, target.pod
                ),
            })?
        };
        let sh = self.sh()?.clone();
        let opts = opts.clone();
        let (tx, rx) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let _ = stream_log(sh, c, opts, tx).await;
        });
        Ok(Box::pin(rx))
    }
}

/// Renders the container's CRI log into `out`; with `follow`, until the container ends.
async fn stream_log(
    sh: Arc<Shared>,
    c: Container,
    opts: LogOptions,
    mut out: tokio::io::DuplexStream,
) -> std::io::Result<()> {
    use skiff_container::log::{Reader, Render};
    let path = c.record.log_path.clone();
    let mut reader = loop {
        match Reader::open(&path) {
            Ok(r) => break r,
            Err(_) if opts.follow => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => return Ok(()),
        }
    };
    let since = opts
        .since_time
        .as_deref()
        .and_then(skiff_container::log::parse_time)
        .or_else(|| {
            opts.since_seconds
                .map(|s| std::time::SystemTime::now() - Duration::from_secs(s))
        });
    let render = |records: &[skiff_container::log::Record]| -> Vec<u8> {
        let buf = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        {
            let mut r = Render::new(Sink(buf.clone()), Sink(buf.clone()), opts.timestamps);
            for rec in records {
                if since.is_some_and(|s| rec.time < s) {
                    continue;
                }
                let _ = r.write(rec);
            }
        }
        let out = buf.borrow().clone();
        out
    };
    // The first batch: everything so far, cut to the tail.
    let mut first = reader.read_new().map_err(std::io::Error::other)?;
    if let Some(n) = opts.tail_lines {
        let full: Vec<usize> = first
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.partial)
            .map(|(i, _)| i)
            .collect();
        if (n as usize) < full.len() {
            let cut = full[full.len() - n as usize - 1] + 1;
            first.drain(..cut);
        }
    }
    out.write_all(&render(&first)).await?;
    if !opts.follow {
        return Ok(());
    }
    loop {
        let recs = reader.read_new().map_err(std::io::Error::other)?;
        if !recs.is_empty() {
            out.write_all(&render(&recs)).await?;
            continue;
        }
        // The shim rotated the log: the rest of the old file, then the new one.
        if let Some(rest) = reader.follow_rotation().map_err(std::io::Error::other)? {
            out.write_all(&render(&rest)).await?;
            continue;
        }
        let rt = sh.rt.clone();
        let rec = c.record.clone();
        let alive = tokio::task::spawn_blocking(move || rt.state(&rec) == RunState::Running)
            .await
            .unwrap_or(false);
        if !alive {
            let recs = reader.read_new().map_err(std::io::Error::other)?;
            out.write_all(&render(&recs)).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both streams of a log go to one buffer (the kubelet's log stream interleaves them).
struct Sink(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
