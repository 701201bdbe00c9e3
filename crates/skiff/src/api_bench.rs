//! `skiff bench api`: the API server on the embedded store vs on a single-member etcd, in
//! one run. Each backend gets a fresh `skiff server` child process; the clients here speak
//! HTTPS with the agents' bearer token. Phases: N concurrent clients create pods (no
//! nodes), one LIST of them all, then W watchers on the namespace receive every event of U
//! updates (delivery latency = event received − update acknowledged). Server RSS is the
//! child's peak (VmHWM).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

#[derive(Debug, clap::Args)]
pub struct ApiBenchArgs {
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Pods to create.
    #[arg(long, default_value_t = 20_000)]
    pods: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Updates the watchers must all receive.
    #[arg(long, default_value_t = 1000)]
    updates: usize,
    /// Only the embedded store (no etcd peer).
    #[arg(long)]
    embedded_only: bool,
    /// NodePort Services created concurrently through two API servers on one etcd (no
    /// ClusterIP or NodePort may be handed out twice); 0 skips this phase.
    #[arg(long, default_value_t = 2000)]
    services: usize,
    /// Extra `skiff server` arguments, for both backends (repeat; e.g.
    /// `--server-arg=--audit-log-path=` to measure without the audit log).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

struct Figures {
    creates_per_s: f64,
    create_p50: Duration,
    create_p99: Duration,
    list: Duration,
    listed: usize,
    watch_p50: Duration,
    watch_p99: Duration,
    delivered: usize,
    rss_mb: f64,
    /// From the last create until the server's writes settled (the scheduler's backlog).
    settle: Duration,
}

pub fn main(args: ApiBenchArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let mut rows = Vec::new();
    println!(
        "{} clients create {} pods, LIST them, {} watchers x {} updates",
        args.clients, args.pods, args.watchers, args.updates
    );
    rows.push(("embedded", rt.block_on(run_backend(&args, None))?));
    if !args.embedded_only {
        let etcd = crate::store_cmd::EtcdPeer::start(&std::env::temp_dir())?;
        let eps = etcd.endpoints().join(",");
        rows.push(("etcd", rt.block_on(run_backend(&args, Some(&eps)))?));
        if args.services > 0 {
            rt.block_on(run_services(&args, &eps))?;
        }
    }
    println!(
        "{:<9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "backend",
        "creates/s",
        "p50 ms",
        "p99 ms",
        "settle s",
        "LIST ms",
        "watch p50",
        "watch p99",
        "RSS MB"
    );
    for (name, f) in &rows {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<9} {:>10.0} {:>9.2} {:>9.2} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>9.0}",
            name,
            f.creates_per_s,
            ms(&f.create_p50),
            ms(&f.create_p99),
            f.settle.as_secs_f64(),
            ms(&f.list),
            ms(&f.watch_p50),
            ms(&f.watch_p99),
            f.rss_mb
        );
        if f.listed != args.pods || f.delivered != args.watchers * args.updates {
            bail!(
                "{name}: listed {} of {} pods, delivered {} of {} watch events",
                f.listed,
                args.pods,
                f.delivered,
                args.watchers * args.updates
            );
        }
    }
    if rows.len() == 2 {
        let (e, c) = (&rows[0].1, &rows[1].1);
        println!(
            "embedded/etcd: creates/s {:.2}x, create p99 {:.2}x, LIST {:.2}x, watch p99 {:.2}x",
            e.creates_per_s / c.creates_per_s,
            e.create_p99.as_secs_f64() / c.create_p99.as_secs_f64(),
            e.list.as_secs_f64() / c.list.as_secs_f64(),
            e.watch_p99.as_secs_f64() / c.watch_p99.as_secs_f64(),
        );
    }
    Ok(())
}

pub(crate) struct ServerChild {
    pub(crate) child: Child,
    pub(crate) dir: PathBuf,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_server(etcd: Option<&str>, extra: &[String]) -> Result<(ServerChild, String)> {
    start_server_named("api", etcd, extra)
}

/// A fresh `skiff server --disable-agent` child on a free loopback port with a temp data
/// dir named after the bench (killed and removed when the guard drops); its API address.
pub(crate) fn start_server_named(
    bench: &str,
    etcd: Option<&str>,
    extra: &[String],
) -> Result<(ServerChild, String)> {
    static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-bench-{bench}-{}-{}-{}",
        std::process::id(),
        if etcd.is_some() { "etcd" } else { "embedded" },
        SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut cmd = Command::new(std::env::current_exe().context("find the skiff binary")?);
    cmd.arg("server").arg("--data-dir").arg(&dir).args([
        "--listen",
        "127.0.0.1:0",
        "--disable-agent",
        "--disable-registry",
    ]);
    if let Some(e) = etcd {
        cmd.args(["--datastore-endpoint", e]);
    }
    cmd.args(extra);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start skiff server")?;
    let stderr = child.stderr.take().context("server stderr")?;
    let guard = ServerChild { child, dir };
    let mut lines = BufReader::new(stderr).lines();
    let mut said = std::collections::VecDeque::new();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(u) = l.split("API on https://").nth(1) {
                    break u.split(';').next().unwrap_or_default().to_string();
                }
                if said.len() == 20 {
                    said.pop_front();
                }
                said.push_back(l);
            }
            _ => bail!(
                "skiff server exited before serving; its last words:\n{}",
                Vec::from(said).join("\n")
            ),
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((guard, url))
}

#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) tls: tokio_rustls::TlsConnector,
    pub(crate) addr: String,
    pub(crate) token: String,
}

impl Conn {
    pub(crate) fn new(dir: &Path, addr: &str) -> Result<Conn> {
        Self::with_alpn(dir, addr, Vec::new())
    }

    /// Trusts the server's CA and authenticates with its token; `alpn` are the protocols
    /// offered in the TLS handshake (`h2` for HTTP/2 clients).
    pub(crate) fn with_alpn(dir: &Path, addr: &str, alpn: Vec<Vec<u8>>) -> Result<Conn> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("pki/ca.crt")).context("read the CA")? {
            roots
                .add(c.context("parse the CA")?)
                .context("trust the CA")?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = alpn;
        let token = std::fs::read_to_string(dir.join("token")).context("read the token")?;
        Ok(Conn {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            addr: addr.to_string(),
            token: token.trim().to_string(),
        })
    }

    /// Authenticates with a client certificate (PEM) instead of the token.
    pub(crate) fn with_client_cert(
        dir: &Path,
        addr: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Conn> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("pki/ca.crt")).context("read the CA")? {
            roots
                .add(c.context("parse the CA")?)
                .context("trust the CA")?;
        }
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parse the client certificate")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parse the client key")?;
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .context("client certificate")?;
        Ok(Conn {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            addr: addr.to_string(),
            token: String::new(),
        })
    }

    /// An HTTP/1 connection (one request at a time).
    pub(crate) async fn open(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .context("connect")?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from("localhost").context("server name")?;
        let tls = self.tls.connect(name, tcp).await.context("TLS handshake")?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(conn);
        Ok(send)
    }

    pub(crate) fn req(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        ct: &str,
    ) -> Result<hyper::Request<Full<Bytes>>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if !self.token.is_empty() {
            b = b.header("authorization", format!("Bearer {}", self.token));
        }
        b.header("content-type", ct)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .context("build request")
    }
}

fn pod(name: &str) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
    })
    .to_string()
    .into_bytes()
}

pub(crate) fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The resourceVersion of one watch event line, without parsing the whole object.
fn line_rv(line: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(line).ok()?;
    let i = s.find("\"resourceVersion\":\"")? + "\"resourceVersion\":\"".len();
    s[i..].split('"').next()?.parse().ok()
}

/// Waits until the store's revision advances by fewer than 20 in a second (Lease renewals
/// never stop), at most two minutes; how long that took.
async fn wait_quiet(conn: &Conn, base: &str) -> Result<Duration> {
    let started = Instant::now();
    let mut send = conn.open().await?;
    let mut last: Option<i64> = None;
    loop {
        let resp = send
            .ready_send(conn.req(
                "GET",
                &format!("{base}?limit=1"),
                Vec::new(),
                "application/json",
            )?)
            .await?;
        let body = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).context("parse a list")?;
        let rev: i64 = v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .context("a list without a resourceVersion")?;
        if last.is_some_and(|l| rev - l < 20) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the server did not settle within 2 minutes after the creates (revision still moving: {rev})");
        }
        last = Some(rev);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run_backend(args: &ApiBenchArgs, etcd: Option<&str>) -> Result<Figures> {
    let (server, addr) = start_server(etcd, &args.server_args)?;
    let conn = Conn::new(&server.dir, &addr)?;
    let base = "/api/v1/namespaces/default/pods";

    // Creates.
    let per = args.pods.div_ceil(args.clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let conn = conn.clone();
        let (from, to) = (c * per, ((c + 1) * per).min(args.pods));
        tasks.push(tokio::spawn(async move {
            let mut send = conn.open().await?;
            let mut lat = Vec::with_capacity(to.saturating_sub(from));
            for i in from..to {
                let t = Instant::now();
                let resp = send
                    .ready_send(conn.req(
                        "POST",
                        base,
                        pod(&format!("p{i:06}")),
                        "application/json",
                    )?)
                    .await
                    .context("create")?;
                let status = resp.status();
                resp.into_body()
                    .collect()
                    .await
                    .context("read create response")?;
                if status.as_u16() != 201 {
                    bail!("create p{i:06}: HTTP {status}");
                }
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.context("create task")??);
    }
    let create_time = started.elapsed();
    // The in-process scheduler answers every pod with a PodScheduled=False status write
    // and an Event (there are no nodes); let those settle so the LIST and the watchers
    // time the bench's own requests, not that backlog.
    let settle = wait_quiet(&conn, base).await?;

    // LIST.
    let mut send = conn.open().await?;
    let t = Instant::now();
    let resp = send
        .ready_send(conn.req("GET", base, Vec::new(), "application/json")?)
        .await?;
    let body = resp.into_body().collect().await?.to_bytes();
    let list = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&body).context("parse the list")?;
    let listed = v["items"].as_array().map(Vec::len).unwrap_or(0);
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    drop(body);

    // Watchers, from the list's resourceVersion.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.watchers);
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let conn = conn.clone();
        let rv = rv.clone();
        let ready = ready_tx.clone();
        // Other writers (the scheduler marking the pods unschedulable) add events of
        // their own: a watcher reads until the bench's last update arrives.
        let last = format!("\"bench\":\"{}\"", args.updates.saturating_sub(1));
        watchers.push(tokio::spawn(async move {
            let mut send = conn.open().await?;
            let path = format!("{base}?watch=1&resourceVersion={rv}&timeoutSeconds=600");
            let resp = send
                .ready_send(conn.req("GET", &path, Vec::new(), "application/json")?)
                .await?;
            let _ = ready.send(()).await;
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            let mut got: Vec<(i64, Instant)> = Vec::new();
            let mut done = false;
            while !done {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let frame = frame.context("watch stream")?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                let now = Instant::now();
                buf.extend_from_slice(data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if let Some(r) = line_rv(&line) {
                        got.push((r, now));
                    }
                    if std::str::from_utf8(&line).is_ok_and(|l| l.contains(&last)) {
                        done = true;
                    }
                }
            }
            Ok::<_, anyhow::Error>(got)
        }));
    }
    drop(ready_tx);
    for _ in 0..args.watchers {
        ready_rx.recv().await.context("a watcher failed to start")?;
    }
    // Updates, acknowledged times by resulting resourceVersion.
    let mut acked: HashMap<i64, Instant> = HashMap::with_capacity(args.updates);
    let mut send = conn.open().await?;
    for i in 0..args.updates {
        let name = format!("p{:06}", i % args.pods.max(1));
        let patch = format!(r#"{{"metadata":{{"annotations":{{"bench":"{i}"}}}}}}"#).into_bytes();
        let resp = send
            .ready_send(conn.req(
                "PATCH",
                &format!("{base}/{name}"),
                patch,
                "application/merge-patch+json",
            )?)
            .await?;
        let body = resp.into_body().collect().await?.to_bytes();
        let t = Instant::now();
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("parse the patch response")?;
        let r: i64 = v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        acked.insert(r, t);
    }
    let mut delivery = Vec::new();
    for w in watchers {
        for (r, at) in tokio::time::timeout(Duration::from_secs(600), w)
            .await
            .context("watchers timed out")???
        {
            if let Some(a) = acked.get(&r) {
                delivery.push(at.saturating_duration_since(*a));
            }
        }
    }
    let rss_mb = peak_rss_mb(server.child.id());
    drop(server);
    let mut lat2 = lat;
    Ok(Figures {
        creates_per_s: args.pods as f64 / create_time.as_secs_f64(),
        create_p50: pct(&mut lat2, 0.50),
        create_p99: pct(&mut lat2, 0.99),
        list,
        listed,
        watch_p50: pct(&mut delivery, 0.50),
        watch_p99: pct(&mut delivery, 0.99),
        delivered: delivery.len(),
        rss_mb,
        settle,
    })
}

/// Two API servers on one etcd; `args.clients` clients, half on each, create
/// `args.services` NodePort Services; then every Service's ClusterIP and NodePort must be
/// distinct.
async fn run_services(args: &ApiBenchArgs, etcd: &str) -> Result<()> {
    let (a, addr_a) = start_server(Some(etcd), &args.server_args)?;
    let (b, addr_b) = start_server(Some(etcd), &args.server_args)?;
    let conns = [Conn::new(&a.dir, &addr_a)?, Conn::new(&b.dir, &addr_b)?];
    let ns = "/api/v1/namespaces/default/services";
    let per = args.services.div_ceil(args.clients.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients.max(1) {
        let conn = conns[c % 2].clone();
        let (from, to) = (c * per, ((c + 1) * per).min(args.services));
        tasks.push(tokio::spawn(async move {
            let mut send = conn.open().await?;
            let mut lat = Vec::with_capacity(to.saturating_sub(from));
            for i in from..to {
                let svc = serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("bench-s{i:05}")},
                    "spec": {"type": "NodePort", "ports": [{"port": 80}]},
                });
                let t = Instant::now();
                let resp = send
                    .ready_send(conn.req(
                        "POST",
                        ns,
                        svc.to_string().into_bytes(),
                        "application/json",
                    )?)
                    .await
                    .context("create a Service")?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                if status.as_u16() != 201 {
                    bail!(
                        "create bench-s{i:05}: HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.context("create task")??);
    }
    let elapsed = started.elapsed();
    let mut send = conns[0].open().await?;
    let resp = send
        .ready_send(conns[0].req("GET", "/api/v1/services", Vec::new(), "application/json")?)
        .await?;
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).context("parse the Service list")?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let (mut ips, mut ports) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    let (mut dup_ips, mut dup_ports, mut created) = (0, 0, 0);
    for it in &items {
        if !it["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("bench-s")
        {
            continue;
        }
        created += 1;
        if !ips.insert(
            it["spec"]["clusterIP"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ) {
            dup_ips += 1;
        }
        if !ports.insert(it["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0)) {
            dup_ports += 1;
        }
    }
    drop((a, b));
    println!(
        "services: 2 servers on one etcd, {} clients: {} NodePort Services in {:.2} s ({:.0}/s, p99 {:.1} ms); duplicate ClusterIPs {dup_ips}, duplicate NodePorts {dup_ports}",
        args.clients,
        created,
        elapsed.as_secs_f64(),
        args.services as f64 / elapsed.as_secs_f64(),
        pct(&mut lat, 0.99).as_secs_f64() * 1e3,
    );
    if created != args.services || dup_ips > 0 || dup_ports > 0 {
        bail!("services: {created} of {} created, {dup_ips} duplicate ClusterIPs, {dup_ports} duplicate NodePorts", args.services);
    }
    Ok(())
}

pub(crate) fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A thousand watchers need more descriptors than the usual soft limit of 1024, in this
/// process and in the server (which inherits the limit).
pub(crate) fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// HTTP/1 connections take one request at a time: wait until the previous one is done.
pub(crate) trait ReadySend {
    async fn ready_send(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>>;
}

impl ReadySend for SendRequest<Full<Bytes>> {
    async fn ready_send(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.ready().await.context("connection closed")?;
        self.send_request(req).await.context("request failed")
    }
}
