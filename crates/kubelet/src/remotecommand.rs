//! exec and attach: one transport-independent driver ([`run`]) and the two transports
//! kubectl uses — WebSocket channels (`v5.channel.k8s.io`, `v4.channel.k8s.io`: each
//! binary message starts with its channel byte: 0 stdin, 1 stdout, 2 stderr, 3 status,
//! 4 resize, and in v5 255 "close channel N") and SPDY streams named by their
//! `streamtype` header.
//!
//! The status channel carries a `metav1.Status` once the process ended; a non-zero exit
//! is a Failure with reason `NonZeroExitCode` and an `ExitCode` cause, which kubectl
//! turns into its own exit code.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::runtime::{ContainerRef, ExecStdio, RuntimeError, StreamingRuntime, TermSize};
use crate::{spdy, ws};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// Channel subprotocols served, best first.
pub const WS_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// `X-Stream-Protocol-Version`s served over SPDY, best first. v5 only adds the close
/// channel, which SPDY has natively (FIN), so both behave alike.
pub const SPDY_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How long a SPDY client has to open the streams it asked for.
const STREAM_WAIT: Duration = Duration::from_secs(30);
const PIPE: usize = 64 * 1024;

/// What to run and which streams the client wants.
#[derive(Debug, Clone)]
pub struct Request {
    pub target: ContainerRef,
    /// Empty for attach.
    pub command: Vec<String>,
    pub attach: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A `metav1.Status` for the outcome of a session.
pub fn status(outcome: &Result<i32, RuntimeError>, req: &Request) -> Value {
    match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => {
            let what = if req.attach {
                "attached process".to_string()
            } else {
                format!("error executing command {:?}", req.command)
            };
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: {what}, exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
        Err(e) => {
            let (code, reason) = e.code_reason();
            json!({
                "metadata": {},
                "status": "Failure",
                "message": e.full_message(),
                "reason": reason,
                "code": code,
            })
        }
    }
}

/// Runs the session: `out` gets (channel, bytes) for stdout and stderr, in order. Returns
/// once the process ended and all its output was queued.
pub async fn run(
    rt: &Arc<dyn StreamingRuntime>,
    req: &Request,
    stdin: Option<DuplexStream>,
    resize: Option<mpsc::Receiver<TermSize>>,
    out: mpsc::Sender<(u8, Bytes)>,
) -> Result<i32, RuntimeError> {
    let mut pumps = Vec::new();
    let mut pipe = |want: bool, ch: u8| -> Option<crate::runtime::Writer> {
        if !want {
            return None;
        }
        let (w, r) = tokio::io::duplex(PIPE);
        pumps.push(tokio::spawn(pump(r, ch, out.clone())));
        Some(Box::pin(w))
    };
    let stdout = pipe(req.stdout, STDOUT);
    let stderr = pipe(req.stderr && !req.tty, STDERR);
    drop(out);
    let stdio = ExecStdio {
        stdin: stdin.map(|s| Box::pin(s) as crate::runtime::Reader),
        stdout,
        stderr,
        resize,
    };
    let outcome = if req.attach {
        rt.attach(&req.target, req.tty, stdio).await
    } else {
        rt.exec(&req.target, &req.command, req.tty, stdio).await
    };
    for p in pumps {
        let _ = p.await;
    }
    outcome
}

async fn pump(mut r: DuplexStream, ch: u8, out: mpsc::Sender<(u8, Bytes)>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out
                    .send((ch, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Serves exec/attach over an upgraded WebSocket connection with `protocol` (one of
/// [`WS_PROTOCOLS`]).
pub async fn serve_websocket<IO>(
    io: IO,
    protocol: &str,
    rt: Arc<dyn StreamingRuntime>,
    req: Request,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let v5 = protocol.starts_with("v5.");
    let (rd, wr) = tokio::io::split(io);
    let (frames_tx, writer) = ws::spawn_writer(wr);

    let (stdin_w, stdin_r) = if req.stdin {
        let (w, r) = tokio::io::duplex(PIPE);
        (Some(w), Some(r))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = if req.tty {
        let (t, r) = mpsc::channel(8);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let reader = tokio::spawn(read_client(
        ws::Reader::new(rd),
        stdin_w,
        resize_tx,
        frames_tx.clone(),
        v5,
    ));

    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(32);
    let ftx = frames_tx.clone();
    let forward = tokio::spawn(async move {
        while let Some((ch, b)) = out_rx.recv().await {
            let mut m = Vec::with_capacity(b.len() + 1);
            m.push(ch);
            m.extend_from_slice(&b);
            if ftx.send(ws::encode(ws::OP_BINARY, &m, None)).await.is_err() {
                return;
            }
        }
    });
    let outcome = run(&rt, &req, stdin_r, resize_rx, out_tx).await;
    let _ = forward.await;
    let mut m = vec![STATUS];
    m.extend(status(&outcome, &req).to_string().into_bytes());
    let _ = frames_tx.send(ws::encode(ws::OP_BINARY, &m, None)).await;
    let _ = frames_tx.send(ws::close_frame()).await;
    drop(frames_tx);
    reader.abort();
    let _ = writer.await;
}

/// Dispatches client messages: stdin data, resizes, v5 close, pings.
async fn read_client<R: AsyncRead + Unpin>(
    mut rd: ws::Reader<R>,
    mut stdin: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TermSize>>,
    frames: mpsc::Sender<Vec<u8>>,
    v5: bool,
) {
    loop {
        let m = match rd.next().await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return,
        };
        match m.opcode {
            ws::OP_PING => {
                let _ = frames.send(ws::encode(ws::OP_PONG, &m.payload, None)).await;
            }
            ws::OP_CLOSE => return,
            // Clients may send channel data as text frames too (the Python client does for
            // str input); the first byte is the channel either way.
            ws::OP_BINARY | ws::OP_TEXT if !m.payload.is_empty() => {
                let (ch, data) = (m.payload[0], &m.payload[1..]);
                match ch {
                    STDIN => {
                        if let Some(s) = stdin.as_mut() {
                            if !data.is_empty() && s.write_all(data).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    RESIZE => {
                        if let Some(r) = &resize {
                            if let Some(size) = parse_resize(data).last() {
                                let _ = r.send(*size).await;
                            }
                        }
                    }
                    CLOSE if v5 && data.first() == Some(&STDIN) => {
                        // Dropping the pipe's write end is the process's stdin EOF.
                        stdin = None;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// Resize messages are JSON objects `{"Width":…,"Height":…}`, possibly several in a row.
pub fn parse_resize(data: &[u8]) -> Vec<TermSize> {
    serde_json::Deserializer::from_slice(data)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .filter_map(|v| {
            Some(TermSize {
                width: u16::try_from(v.get("Width")?.as_u64()?).ok()?,
                height: u16::try_from(v.get("Height")?.as_u64()?).ok()?,
            })
        })
        .collect()
}

/// Serves exec/attach over an upgraded SPDY connection.
pub async fn serve_spdy<IO>(io: IO, rt: Arc<dyn StreamingRuntime>, req: Request)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = spdy::Session::start(io);
    let mut streams: [Option<spdy::Stream>; 5] = Default::default();
    let wanted = |ch: usize| match ch {
        0 => req.stdin,
        1 => req.stdout,
        2 => req.stderr && !req.tty,
        3 => true,
        4 => req.tty,
        _ => false,
    };
    let gathered = tokio::time::timeout(STREAM_WAIT, async {
        while (0..5).any(|c| wanted(c) && streams[c].is_none()) {
            let Some(s) = session.streams.recv().await else {
                return false;
            };
            let ch = match s.header("streamtype") {
                Some("stdin") => STDIN,
                Some("stdout") => STDOUT,
                Some("stderr") => STDERR,
                Some("error") => STATUS,
                Some("resize") => RESIZE,
                _ => continue,
            };
            streams[ch as usize] = Some(s);
        }
        true
    })
    .await;
    if !matches!(gathered, Ok(true)) {
        tracing::debug!("SPDY client did not open the streams it asked for");
        session.close().await;
        return;
    }
    let [stdin_s, stdout_s, stderr_s, status_s, resize_s] = streams;

    let stdin = stdin_s.map(|mut s| {
        let (mut w, r) = tokio::io::duplex(PIPE);
        tokio::spawn(async move {
            while let Some(b) = s.data.recv().await {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
        r
    });
    let resize = resize_s.map(|mut s| {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(b) = s.data.recv().await {
                for size in parse_resize(&b) {
                    let _ = tx.send(size).await;
                }
            }
        });
        rx
    });
    let out_w = stdout_s.as_ref().map(|s| s.writer.clone());
    let err_w = stderr_s.as_ref().map(|s| s.writer.clone());
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(32);
    let forward = tokio::spawn(async move {
        while let Some((ch, b)) = out_rx.recv().await {
            let w = if ch == STDOUT { &out_w } else { &err_w };
            if let Some(w) = w {
                if !w.write(b).await {
                    return;
                }
            }
        }
    });
    let outcome = run(&rt, &req, stdin, resize, out_tx).await;
    let _ = forward.await;
    for s in [&stdout_s, &stderr_s].into_iter().flatten() {
        s.writer.finish().await;
    }
    if let Some(s) = &status_s {
        if !matches!(outcome, Ok(0)) {
            s.writer
                .write(Bytes::from(status(&outcome, &req).to_string()))
                .await;
        }
        s.writer.finish().await;
    }
    session.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Duplex, LogOptions, LogStream};

    /// Copies stdin to stdout, writes "e" to stderr, exits 7.
    struct Echo;

    #[async_trait::async_trait]
    impl StreamingRuntime for Echo {
        async fn exec(
            &self,
            _: &ContainerRef,
            _: &[String],
            _: bool,
            stdio: ExecStdio,
        ) -> Result<i32, RuntimeError> {
            if let (Some(mut i), Some(o)) = (stdio.stdin, stdio.stdout) {
                let mut o = o;
                tokio::io::copy(&mut i, &mut o).await.unwrap();
            }
            if let Some(mut e) = stdio.stderr {
                e.write_all(b"e").await.unwrap();
            }
            Ok(7)
        }
        async fn attach(
            &self,
            _: &ContainerRef,
            _: bool,
            _: ExecStdio,
        ) -> Result<i32, RuntimeError> {
            Ok(0)
        }
        async fn port_forward(
            &self,
            _: &str,
            _: &str,
            _: u16,
        ) -> Result<Box<dyn Duplex>, RuntimeError> {
            Err(RuntimeError::Unavailable {
                message: "no".into(),
            })
        }
        async fn logs(&self, _: &ContainerRef, _: &LogOptions) -> Result<LogStream, RuntimeError> {
            Err(RuntimeError::NotFound { what: "log".into() })
        }
    }

    /// Plays a WebSocket client: sends `frames`, then returns every message the server
    /// sent until its close frame, as (opcode, payload).
    async fn session(protocol: &str, r: Request, frames: Vec<Vec<u8>>) -> Vec<(u8, Vec<u8>)> {
        let (client, server) = tokio::io::duplex(1 << 16);
        let rt: Arc<dyn StreamingRuntime> = Arc::new(Echo);
        let proto = protocol.to_string();
        let served = tokio::spawn(async move { serve_websocket(server, &proto, rt, r).await });
        let (cr, mut cw) = tokio::io::split(client);
        for f in frames {
            cw.write_all(&f).await.unwrap();
        }
        let mut rd = ws::Reader::new(cr);
        let mut got = Vec::new();
        while let Some(m) = rd.next().await.unwrap() {
            let close = m.opcode == ws::OP_CLOSE;
            got.push((m.opcode, m.payload.to_vec()));
            if close {
                break;
            }
        }
        served.await.unwrap();
        got
    }

    fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
        ws::encode(op, payload, Some([0x12, 0x34, 0x56, 0x78]))
    }

    #[tokio::test]
    async fn websocket_v5_stdin_close_output_order_and_exit_code() {
        let r = Request {
            stdin: true,
            ..req()
        };
        let got = session(
            "v5.channel.k8s.io",
            r,
            vec![
                masked(ws::OP_BINARY, b"\x00hel"),
                masked(ws::OP_PING, b"p"),
                masked(ws::OP_BINARY, b"\x00lo"),
                masked(ws::OP_BINARY, &[CLOSE, STDIN]),
            ],
        )
        .await;
        assert!(got.contains(&(ws::OP_PONG, b"p".to_vec())));
        let data: Vec<&(u8, Vec<u8>)> = got.iter().filter(|(op, _)| *op == ws::OP_BINARY).collect();
        let on = |ch: u8| -> Vec<u8> {
            data.iter()
                .filter(|(_, p)| p[0] == ch)
                .flat_map(|(_, p)| p[1..].to_vec())
                .collect()
        };
        assert_eq!(on(STDOUT), b"hello");
        assert_eq!(on(STDERR), b"e");
        // The status comes after all output, and the close frame last.
        let last = data.last().unwrap();
        assert_eq!(last.1[0], STATUS);
        let st: Value = serde_json::from_slice(&last.1[1..]).unwrap();
        assert_eq!(st["details"]["causes"][0]["message"], "7");
        assert_eq!(got.last().unwrap().0, ws::OP_CLOSE);
    }

    #[tokio::test]
    async fn websocket_v4_without_stdin() {
        let got = session("v4.channel.k8s.io", req(), vec![]).await;
        let chans: Vec<u8> = got
            .iter()
            .filter(|(op, _)| *op == ws::OP_BINARY)
            .map(|(_, p)| p[0])
            .collect();
        assert_eq!(chans, vec![STDERR, STATUS]);
    }

    fn req() -> Request {
        Request {
            target: ContainerRef {
                namespace: "default".into(),
                pod: "p".into(),
                container: "c".into(),
            },
            command: vec!["sh".into()],
            attach: false,
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        }
    }

    #[test]
    fn exit_code_status_has_the_cause_kubectl_reads() {
        let s = status(&Ok(3), &req());
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(status(&Ok(0), &req())["status"], "Success");
        let e = status(
            &Err(RuntimeError::NotFound {
                what: "container \"x\"".into(),
            }),
            &req(),
        );
        assert_eq!(
            (e["code"].as_u64(), e["reason"].as_str()),
            (Some(404), Some("NotFound"))
        );
    }

    #[test]
    fn resize_messages() {
        assert_eq!(
            parse_resize(br#"{"Width":80,"Height":24}{"Width":100,"Height":30}"#),
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert!(parse_resize(b"junk").is_empty());
    }
}
