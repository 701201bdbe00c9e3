//! exec, attach, logs and port-forward through `skiff server` to a kubelet streaming
//! server (crates/kubelet) started in the test, whose runtime runs real host processes
//! (`sh` with pipes), reads a real log file and forwards to a real TCP echo listener on
//! loopback. Driven by real kubectl: 1.33 speaks WebSocket (exec/attach: v5.channel.k8s.io;
//! port-forward: SPDY tunneled in WebSocket), 1.27 speaks SPDY/3.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use skiff_kubelet::{
    ContainerRef, Duplex, ExecStdio, LogOptions, LogStream, RuntimeError, StreamingRuntime,
    StreamingServer, TlsFiles,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{kubectl_path, write, Server};

/// The port in pod `web` that the test's echo listener stands for.
const POD_PORT: u16 = 8080;

/// Runs commands on the host (no container until the kubelet lands); pod `web` has the
/// containers `main` and `side`.
struct HostRuntime {
    log: PathBuf,
    echo: SocketAddr,
}

impl HostRuntime {
    fn check(&self, t: &ContainerRef) -> Result<(), RuntimeError> {
        if !["web", "duo"].contains(&t.pod.as_str())
            || !["main", "side"].contains(&t.container.as_str())
        {
            return Err(RuntimeError::NotFound {
                what: format!(
                    "container {:?} of pod {}/{}",
                    t.container, t.namespace, t.pod
                ),
            });
        }
        Ok(())
    }

    async fn run(&self, argv: &[String], stdio: ExecStdio) -> Result<i32, RuntimeError> {
        let internal = |what: String, e: std::io::Error| RuntimeError::Internal {
            message: what,
            source: Some(Box::new(e)),
        };
        let pipe = |want: bool| if want { Stdio::piped() } else { Stdio::null() };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(pipe(stdio.stdin.is_some()))
            .stdout(pipe(stdio.stdout.is_some()))
            .stderr(pipe(stdio.stderr.is_some()))
            .spawn()
            .map_err(|e| internal(format!("starting {:?}", argv[0]), e))?;
        let stdin_task = match (stdio.stdin, child.stdin.take()) {
            (Some(mut src), Some(p)) => {
                let mut dst = tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(p))
                    .map_err(|e| internal("stdin pipe".into(), e))?;
                Some(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut src, &mut dst).await;
                }))
            }
            _ => None,
        };
        let mut copies = Vec::new();
        for (dst, src) in [
            (stdio.stdout, child.stdout.take().map(OwnedFd::from)),
            (stdio.stderr, child.stderr.take().map(OwnedFd::from)),
        ] {
            if let (Some(mut dst), Some(src)) = (dst, src) {
                let mut src = tokio::net::unix::pipe::Receiver::from_owned_fd(src)
                    .map_err(|e| internal("output pipe".into(), e))?;
                copies.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut src, &mut dst).await;
                    let _ = dst.shutdown().await;
                }));
            }
        }
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| internal("waiting".into(), std::io::Error::other(e)))?
            .map_err(|e| internal("waiting".into(), e))?;
        for c in copies {
            let _ = c.await;
        }
        if let Some(t) = stdin_task {
            t.abort();
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

#[async_trait::async_trait]
impl StreamingRuntime for HostRuntime {
    async fn exec(
        &self,
        target: &ContainerRef,
        command: &[String],
        tty: bool,
        stdio: ExecStdio,
    ) -> Result<i32, RuntimeError> {
        self.check(target)?;
        // Reports the terminal size the client sent on the resize channel.
        if command.first().map(String::as_str) == Some("resize-probe") {
            let mut out = stdio.stdout.ok_or(RuntimeError::Invalid {
                message: "resize-probe needs stdout".into(),
            })?;
            let size = match stdio.resize {
                Some(mut r) => r.recv().await,
                None => None,
            };
            let line = match size {
                Some(s) => format!("tty={tty} {}x{}\n", s.width, s.height),
                None => format!("tty={tty} no-resize\n"),
            };
            let _ = out.write_all(line.as_bytes()).await;
            return Ok(0);
        }
        self.run(command, stdio).await
    }

    async fn attach(
        &self,
        target: &ContainerRef,
        _tty: bool,
        stdio: ExecStdio,
    ) -> Result<i32, RuntimeError> {
        self.check(target)?;
        // The "main process": echoes its stdin, upper-cased.
        let argv = ["tr", "a-z", "A-Z"].map(String::from);
        self.run(&argv, stdio).await
    }

    async fn port_forward(
        &self,
        _namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, RuntimeError> {
        if port != POD_PORT {
            return Err(RuntimeError::Unavailable {
                message: format!("nothing listens on port {port} in pod {pod}"),
            });
        }
        let c = tokio::net::TcpStream::connect(self.echo)
            .await
            .map_err(|e| RuntimeError::Internal {
                message: "connecting to the echo listener".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Box::new(c))
    }

    async fn logs(
        &self,
        target: &ContainerRef,
        opts: &LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        self.check(target)?;
        if opts.previous {
            return Err(RuntimeError::NotFound {
                what: format!(
                    "previous terminated container {:?} in pod {:?}",
                    target.container, target.pod
                ),
            });
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // A fixed stamp stands for the log store's per-line times.
        let text = if opts.timestamps {
            text.split_inclusive('\n')
                .map(|l| format!("2026-01-02T03:04:05.000000000Z {l}"))
                .collect()
        } else {
            text
        };
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        if let Some(n) = opts.tail_lines {
            lines = lines.split_off(lines.len().saturating_sub(n as usize));
        }
        let head = lines.concat().into_bytes();
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let log = self.log.clone();
        let follow = opts.follow;
        let mut offset = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        tokio::spawn(async move {
            if w.write_all(&head).await.is_err() || !follow {
                return;
            }
            // Follow: poll the file for growth until the client goes away.
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let Ok(mut f) = tokio::fs::File::open(&log).await else {
                    return;
                };
                let mut all = Vec::new();
                if f.read_to_end(&mut all).await.is_err() {
                    return;
                }
                if all.len() > offset {
                    if w.write_all(&all[offset..]).await.is_err() {
                        return;
                    }
                    offset = all.len();
                } else if w.write_all(b"").await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(r))
    }
}

/// A kubelet streaming server on loopback, with a TCP echo listener behind pod port 8080.
/// Its tasks (and the listeners they hold) end when the runtime is dropped.
pub(crate) struct Kubelet {
    _rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubelet {
    /// Starts it with a serving certificate issued by the server's cluster CA; only
    /// clients with certificates from that CA (the API server) are accepted.
    fn start(s: &Server) -> Kubelet {
        Self::start_issued_by(s, &s.dir.path().join("pki"))
    }

    /// Its serving certificate from the CA in `ca_dir` (a `pki/` directory).
    fn start_issued_by(s: &Server, ca_dir: &std::path::Path) -> Kubelet {
        let dir = tempfile::Builder::new()
            .prefix("skiff-kubelet-")
            .tempdir()
            .unwrap();
        let issued = skiff_apiserver::pki::issue(
            ca_dir,
            skiff_apiserver::pki::Role::Server,
            "node-1",
            None,
            &["127.0.0.1".to_string()],
        )
        .unwrap();
        let cert = write(dir.path(), "kubelet.crt", &issued.cert_pem);
        let key = write(dir.path(), "kubelet.key", &issued.key_pem);
        let log = write(dir.path(), "main.log", "line1\nline2\nline3\n");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let echo_addr = echo.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut c, _)) = echo.accept().await {
                    tokio::spawn(async move {
                        let (mut r, mut w) = c.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
            let runtime = HostRuntime {
                log: log.clone(),
                echo: echo_addr,
            };
            let server = StreamingServer::bind(
                "127.0.0.1:0".parse().unwrap(),
                &TlsFiles {
                    cert,
                    key,
                    client_ca: Some(s.pki("ca.crt")),
                },
                Arc::new(runtime),
            )
            .await
            .unwrap();
            let addr = server.local_addr().unwrap();
            tokio::spawn(server.run(std::future::pending()));
            addr
        });
        Kubelet {
            _rt: rt,
            addr,
            log,
            _dir: dir,
        }
    }
}

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: node-1
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: duo}
spec:
  nodeName: node-1
  containers: [{name: main, image: busybox}, {name: side, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: floating}
spec:
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: lost}
spec:
  nodeName: ghost
  containers: [{name: main, image: busybox}]
"#;

/// A server, a kubelet for node-1, node `ghost` whose kubelet port is closed, and the
/// pods above marked Running (kubectl port-forward and attach want a running pod).
pub(crate) fn cluster() -> (Server, Kubelet) {
    let s = Server::start();
    let k = Kubelet::start(&s);
    setup(&s, &k);
    (s, k)
}

fn setup(s: &Server, k: &Kubelet) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nodes = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: ghost}\n";
    let f = write(s.dir.path(), "nodes.yaml", nodes);
    s.kubectl("1.33", &["create", "-f", f.to_str().unwrap()])
        .ok();
    for (node, port) in [("node-1", k.addr.port()), ("ghost", closed)] {
        let patch = format!(
            r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
        );
        s.kubectl(
            "1.33",
            &[
                "patch",
                "node",
                node,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
        )
        .ok();
    }
    let f = write(s.dir.path(), "pods.yaml", PODS);
    s.kubectl("1.33", &["create", "-f", f.to_str().unwrap()])
        .ok();
    for pod in ["web", "duo", "floating", "lost"] {
        s.kubectl(
            "1.33",
            &[
                "patch",
                "pod",
                pod,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running"}}"#,
            ],
        )
        .ok();
    }
}

fn exec(v: &str) {
    let (s, _k) = cluster();
    let out = s.kubectl(
        v,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.code, 3, "exit code propagated: {out:#?}");
    assert_eq!(out.stdout, "out\n", "{out:#?}");
    assert!(out.stderr.starts_with("err\n"), "stderr separate: {out:#?}");
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "{out:#?}"
    );

    let ok = s
        .kubectl(
            v,
            &[
                "exec",
                "-v=8",
                "web",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo fine",
            ],
        )
        .ok();
    assert_eq!(ok.stdout, "fine\n");
    // The protocol each kubectl negotiated end to end (through the API server, with the
    // kubelet): WebSocket v5 channels for 1.33, SPDY with v4 channels for 1.27.
    let negotiated = if v == "1.27" {
        "X-Stream-Protocol-Version: v4.channel.k8s.io"
    } else {
        "The subprotocol is v5.channel.k8s.io"
    };
    assert!(ok.stderr.contains(negotiated), "{}", ok.stderr);

    // stdin reaches the process and its EOF ends it.
    let up = s
        .kubectl_with(
            v,
            &["exec", "-i", "web", "--", "tr", "a-z", "A-Z"],
            Some("hello\nworld\n"),
            &[],
        )
        .ok();
    assert_eq!(up.stdout, "HELLO\nWORLD\n");

    // Output larger than any one frame or pipe buffer arrives whole and in order.
    let big = s
        .kubectl(v, &["exec", "web", "--", "sh", "-c", "seq 1 100000"])
        .ok();
    let expect: String = (1..=100000).map(|i| format!("{i}\n")).collect();
    assert!(
        big.stdout == expect,
        "seq output differs: {} bytes",
        big.stdout.len()
    );

    // A client that goes away mid-stream ends the session (the process gets EPIPE), and
    // the server keeps serving.
    let mut child = s
        .kubectl_command(v, &["exec", "web", "--", "yes", "streaming"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let guard = KillOnDrop(&mut child);
        let lines = lines_of(guard.0.stdout.take().unwrap());
        let mut seen = String::new();
        for _ in 0..100 {
            wait_line(&lines, &mut seen, "streaming", |l| l == "streaming");
        }
    }
    let again = s.kubectl(v, &["exec", "web", "--", "echo", "again"]).ok();
    assert_eq!(again.stdout, "again\n");

    // A command that cannot start is the runtime's error, reported by kubectl.
    let missing = s
        .kubectl(v, &["exec", "web", "--", "/nonexistent/cmd"])
        .fails();
    assert!(missing.stderr.contains("/nonexistent/cmd"), "{missing:#?}");
}

/// `kubectl cp` both ways: tar over exec stdin and stdout, binary and larger than any
/// buffer on the path.
fn cp(v: &str) {
    let (s, _k) = cluster();
    let work = tempfile::Builder::new()
        .prefix("skiff-cp-")
        .tempdir()
        .unwrap();
    let data: Vec<u8> = (0u32..(3 << 18))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let src = work.path().join("blob.bin");
    std::fs::write(&src, &data).unwrap();
    std::fs::create_dir(work.path().join("pod")).unwrap();
    // The "container" is the host, so the pod path is a host path.
    let in_pod = format!("web:{}", work.path().join("pod/blob.bin").display());
    s.kubectl(v, &["cp", src.to_str().unwrap(), &in_pod]).ok();
    assert!(std::fs::read(work.path().join("pod/blob.bin")).unwrap() == data);
    let back = work.path().join("back.bin");
    s.kubectl(v, &["cp", &in_pod, back.to_str().unwrap()]).ok();
    assert!(std::fs::read(&back).unwrap() == data);
}

fn attach(v: &str) {
    let (s, _k) = cluster();
    let out = s
        .kubectl_with(
            v,
            &["attach", "-i", "web", "-c", "main"],
            Some("shout\n"),
            &[],
        )
        .ok();
    assert!(out.stdout.contains("SHOUT\n"), "{out:#?}");
}

/// `exec -it` through a pty (`script`): tty is asked for and the terminal size arrives
/// on the resize channel (WebSocket channel 4, or the SPDY resize stream).
fn tty(v: &str) {
    let (s, _k) = cluster();
    let cmd = format!(
        "stty cols 123 rows 45; {} exec -it web -- resize-probe",
        kubectl_path(v).display()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env("KUBECONFIG", s.kubeconfig())
        .env("HOME", s.dir.path());
    let out = crate::common::run(c, None);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("tty=true 123x45"), "{out:#?}");
}

fn logs(v: &str) {
    let (s, k) = cluster();
    assert_eq!(
        s.kubectl(v, &["logs", "web"]).ok().stdout,
        "line1\nline2\nline3\n"
    );
    assert_eq!(
        s.kubectl(v, &["logs", "web", "--tail=1"]).ok().stdout,
        "line3\n"
    );
    assert_eq!(
        s.kubectl(v, &["logs", "web", "--limit-bytes=8"])
            .ok()
            .stdout,
        "line1\nli"
    );
    assert_eq!(
        s.kubectl(v, &["logs", "duo", "-c", "side"]).ok().stdout,
        "line1\nline2\nline3\n"
    );

    // Options reach the runtime.
    let stamped = s
        .kubectl(v, &["logs", "web", "--timestamps", "--tail=2"])
        .ok()
        .stdout;
    assert_eq!(
        stamped,
        "2026-01-02T03:04:05.000000000Z line2\n2026-01-02T03:04:05.000000000Z line3\n"
    );
    let prev = s.kubectl(v, &["logs", "web", "--previous"]).fails();
    assert!(
        prev.stderr
            .contains("previous terminated container \"main\" in pod \"web\" not found"),
        "{prev:#?}"
    );

    // Server-side container checks, as kube-apiserver words them.
    let bad = s.kubectl(v, &["logs", "web", "-c", "nope"]).fails();
    assert!(
        bad.stderr
            .contains("container nope is not valid for pod web"),
        "{bad:#?}"
    );
    let (code, body) = s
        .curl("GET", "/api/v1/namespaces/default/pods/duo/log", &[])
        .http();
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "a container name must be specified for pod duo, choose one of: [main side]"
    );

    // -f: the stream stays open and delivers what is appended.
    let mut child = s
        .kubectl_command(v, &["logs", "-f", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    let lines = lines_of(guard.0.stdout.take().unwrap());
    let mut seen = String::new();
    for want in ["line1", "line2", "line3"] {
        assert_eq!(wait_line(&lines, &mut seen, want, |_| true), want);
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&k.log)
        .unwrap();
    f.write_all(b"line4\n").unwrap();
    assert_eq!(wait_line(&lines, &mut seen, "line4", |_| true), "line4");
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's pipe, read on a thread so the pipe never fills.
fn lines_of(r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line matching `pred`; fails (instead of hanging) if none comes in 30 s. Lines
/// passed over are appended to `seen`.
#[track_caller]
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut String,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if pred(&line) {
                    return line;
                }
            }
            Err(_) => panic!("no {what} from kubectl; it printed:\n{seen}"),
        }
    }
}

fn port_forward(v: &str) {
    let (s, _k) = cluster();
    port_forward_on(&s, v);
}

/// kubectl's minor version.
fn minor(v: &str) -> u32 {
    v.trim_start_matches("1.").parse().unwrap()
}

fn port_forward_on(s: &Server, v: &str) {
    let mut child = s
        .kubectl_command(v, &["port-forward", "-v=8", "pod/web", ":8080", ":9999"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    let out = lines_of(guard.0.stdout.take().unwrap());
    let err = lines_of(guard.0.stderr.take().unwrap());
    // "Forwarding from 127.0.0.1:PORT -> 8080" (and [::1]) for each port.
    let mut local = std::collections::HashMap::new();
    let mut printed = String::new();
    while local.len() < 2 {
        let line = wait_line(&out, &mut printed, "Forwarding line", |l| {
            l.starts_with("Forwarding from 127.0.0.1:")
        });
        let rest = line.trim().trim_start_matches("Forwarding from 127.0.0.1:");
        let (l, r) = rest.split_once(" -> ").unwrap();
        local.insert(r.to_string(), l.parse::<u16>().unwrap());
    }
    for round in 0..3 {
        let mut c = TcpStream::connect(("127.0.0.1", local["8080"])).unwrap();
        let msg = format!("ping {round}\n").repeat(1000);
        c.write_all(msg.as_bytes()).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert!(
            back == msg,
            "round {round}: echoed {} of {} bytes",
            back.len(),
            msg.len()
        );
    }
    // A port nothing listens on: the connection is closed and kubectl says why.
    let mut c = TcpStream::connect(("127.0.0.1", local["9999"])).unwrap();
    let mut back = Vec::new();
    let _ = c.read_to_end(&mut back);
    assert!(back.is_empty());
    let mut seen = String::new();
    wait_line(&err, &mut seen, "error for port 9999", |l| {
        l.contains("nothing listens on port 9999 in pod web")
    });
    // SPDY tunneled in WebSocket from 1.31 on (no fallback to a SPDY upgrade), SPDY before.
    if minor(v) < 31 {
        assert!(
            seen.contains("X-Stream-Protocol-Version: portforward.k8s.io"),
            "{seen}"
        );
    } else {
        assert!(
            seen.contains("Sec-Websocket-Protocol: SPDY/3.1+portforward.k8s.io"),
            "{seen}"
        );
        assert!(!seen.contains("Upgrade: SPDY/3.1"), "{seen}");
    }
}

/// Errors come back as Status errors, never a hang.
fn errors(v: &str) {
    let (s, _k) = cluster();
    let floating = s.kubectl(v, &["exec", "floating", "--", "true"]).fails();
    assert!(
        floating
            .stderr
            .contains("pod floating does not have a host assigned"),
        "{floating:#?}"
    );
    let logs = s.kubectl(v, &["logs", "floating"]).fails();
    assert!(
        logs.stderr
            .contains("pod floating does not have a host assigned"),
        "{logs:#?}"
    );

    let lost = s.kubectl(v, &["exec", "lost", "--", "true"]).fails();
    assert!(lost.stderr.contains("error dialing backend"), "{lost:#?}");
    let lost_logs = s.kubectl(v, &["logs", "lost"]).fails();
    assert!(
        lost_logs.stderr.contains("error dialing backend") && lost_logs.stderr.contains("ghost"),
        "{lost_logs:#?}"
    );

    let missing = s.kubectl(v, &["exec", "nosuchpod", "--", "true"]).fails();
    assert!(
        missing.stderr.contains("pods \"nosuchpod\" not found"),
        "{missing:#?}"
    );
}

#[test]
fn kubelet_rejects_clients_without_a_cluster_certificate() {
    let s = Server::start();
    let k = Kubelet::start(&s);
    let url = format!(
        "https://127.0.0.1:{}/containerLogs/default/web/main",
        k.addr.port()
    );
    // No certificate and no token: 401, before any handler runs.
    let anon = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(s.pki("ca.crt"))
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&anon.stdout),
        "401",
        "a client without a certificate was served"
    );
    let admin = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(s.pki("ca.crt"))
        .arg("--cert")
        .arg(s.pki("admin.crt"))
        .arg("--key")
        .arg(s.pki("admin.key"))
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&admin.stdout),
        "line1\nline2\nline3\n"
    );
}

per_version!(exec, cp, attach, tty, logs, port_forward, errors);

const PYTHON: &str = "/opt/skiff-venv/bin/python";

/// The official Python client: exec over WebSocket channels (it offers v5 and v4) and
/// port-forward over the WebSocket channel protocol (one connection per port).
const PY_STREAM: &str = r#"
import sys, socket
from kubernetes import client, config
from kubernetes.stream import stream, portforward

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

r = stream(v1.connect_get_namespaced_pod_exec, "web", "default",
           command=["sh", "-c", "echo out; echo err >&2; exit 4"],
           stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
r.run_forever(timeout=30)
assert not r.is_open(), "exec session did not end"
out, err = r.read_stdout(), r.read_stderr()
assert (out, err) == ("out\n", "err\n"), (out, err)
assert r.returncode == 4, r.returncode

r = stream(v1.connect_get_namespaced_pod_exec, "web", "default", command=["tr", "a-z", "A-Z"],
           stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
r.write_stdin("abc\n")
r.close_channel(0)
r.run_forever(timeout=30)
assert r.read_stdout() == "ABC\n"
assert r.returncode == 0, r.returncode

pf = portforward(v1.connect_get_namespaced_pod_portforward, "web", "default", ports="8080,9999")
s = pf.socket(8080)
s.setblocking(True)
s.sendall(b"hello python")
got = b""
while len(got) < 12:
    chunk = s.recv(1024)
    assert chunk, got
    got += chunk
assert got == b"hello python", got
s.close()
bad = pf.socket(9999)
bad.setblocking(True)
assert bad.recv(1024) == b""
assert "nothing listens on port 9999 in pod web" in pf.error(9999), pf.error(9999)
print("ok")
"#;

#[test]
fn python_client_exec_and_port_forward() {
    let (s, _k) = cluster();
    let script = write(s.dir.path(), "stream.py", PY_STREAM);
    let mut c = Command::new(PYTHON);
    c.arg(script).arg(s.kubeconfig());
    let out = crate::common::run(c, None);
    assert_eq!((out.code, out.stdout.trim()), (0, "ok"), "{out:#?}");
}

/// The kubelet's serving certificate must chain to the cluster CA, or to the CA given with
/// `--kubelet-certificate-authority`.
#[test]
fn kubelet_certificate_is_verified() {
    let other = tempfile::Builder::new()
        .prefix("skiff-other-ca-")
        .tempdir()
        .unwrap();
    let other_pki = skiff_apiserver::pki::ensure(other.path(), "https://127.0.0.1:1", &[]).unwrap();

    let s = Server::start();
    let k = Kubelet::start_issued_by(&s, &other_pki.dir);
    setup(&s, &k);
    let refused = s.kubectl("1.33", &["logs", "web"]).fails();
    assert!(
        refused.stderr.contains("invalid peer certificate"),
        "{refused:#?}"
    );

    let ca = other_pki.ca_cert.to_str().unwrap();
    let s = Server::start_with(&["--kubelet-certificate-authority", ca]);
    let k = Kubelet::start_issued_by(&s, &other_pki.dir);
    setup(&s, &k);
    assert_eq!(
        s.kubectl("1.33", &["logs", "web"]).ok().stdout,
        "line1\nline2\nline3\n"
    );
}

/// The versions between the oldest and newest: exec switched to WebSocket in 1.30,
/// port-forward to SPDY-in-WebSocket in 1.31.
#[test]
fn kubectl_1_28_to_1_32() {
    let (s, _k) = cluster();
    for v in ["1.28", "1.29", "1.30", "1.31", "1.32"] {
        let out = s.kubectl(
            v,
            &[
                "exec",
                "-v=8",
                "web",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        );
        assert_eq!(out.code, 3, "{v}: {out:#?}");
        assert!(out.stdout.ends_with("out\n"), "{v}: {out:#?}");
        let negotiated = if minor(v) < 30 {
            "X-Stream-Protocol-Version: v4.channel.k8s.io"
        } else {
            "The subprotocol is v5.channel.k8s.io"
        };
        assert!(out.stderr.contains(negotiated), "{v}: {}", out.stderr);
        port_forward_on(&s, v);
    }
}

/// The test's runtime passes the suite every StreamingRuntime implementation runs.
#[test]
fn host_runtime_passes_the_conformance_suite() {
    let dir = tempfile::Builder::new()
        .prefix("skiff-conf-")
        .tempdir()
        .unwrap();
    let log = write(dir.path(), "main.log", "a\nb\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let host = HostRuntime {
            log,
            echo: echo_addr,
        };
        let fixture = skiff_kubelet::conformance::Fixture {
            target: ContainerRef {
                namespace: "default".into(),
                pod: "web".into(),
                container: "main".into(),
            },
            echo_port: Some(POD_PORT),
            log: Some("a\nb\n".into()),
        };
        skiff_kubelet::conformance::run(&host, &fixture)
            .await
            .unwrap();
    });
}
