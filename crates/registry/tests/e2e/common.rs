//! Test harness: an in-process skiff registry, Debian's docker-registry as a peer, a
//! raw HTTP/1.1 client, OCI layouts built from scratch, and skopeo.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use skiff_registry::{Config, Server};

/// A skiff registry serving on a free loopback port from a temp data dir.
pub struct Registry {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(|_| {})
    }

    pub fn start_with(configure: impl FnOnce(&mut Config)) -> Registry {
        Registry::start_in(tempfile::tempdir().unwrap(), configure)
    }

    /// Stops the server, keeping its data directory for another start.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown_now();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn start_in(dir: tempfile::TempDir, configure: impl FnOnce(&mut Config)) -> Registry {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut cfg = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        configure(&mut cfg);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (atx, arx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(cfg).await.unwrap();
                atx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
            rt.shutdown_background();
        });
        let addr = arx.recv_timeout(Duration::from_secs(30)).unwrap();
        Registry {
            addr,
            dir,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Number of blob files stored (all repositories share them).
    pub fn blob_files(&self) -> usize {
        count_files(&self.data().join("blobs"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

pub fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Debian's docker-registry (distribution 2.8) on a free loopback port; killed on drop.
pub struct Peer {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Peer {
    pub fn start(read_only: bool) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    readonly:\n      enabled: {read_only}\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let peer = Peer {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- raw HTTP ----------------------------------------------------------------------

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first OCI error code of the body, if it is an error document.
    pub fn code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_string)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One request on a fresh connection (`Connection: close`), read to EOF.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_len = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_len && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked && !head {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..nl])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Pushes a blob monolithically; asserts 201.
pub fn push_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = http(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(r.status, 201, "push blob: {r:?}");
    d
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image manifest over a config and layers already pushed to `repo`.
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let desc = |mt: &str, d: &[u8]| serde_json::json!({"mediaType": mt, "digest": sha256(d), "size": d.len()});
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Pushes config, layers and manifest under `tag`; returns the manifest digest.
pub fn push_image(addr: SocketAddr, repo: &str, tag: &str, seed: u8) -> String {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
    let layer = vec![seed; 1000 + seed as usize];
    push_blob(addr, repo, config.as_bytes());
    push_blob(addr, repo, &layer);
    let m = image_manifest(config.as_bytes(), &[&layer]);
    let r = http(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &m,
    );
    assert_eq!(r.status, 201, "push manifest: {r:?}");
    sha256(&m)
}

// ---- OCI layouts and skopeo --------------------------------------------------------

/// Deterministic pseudo-random bytes, so layers differ and do not compress away.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A gzipped tar layer holding one file of `size` noisy bytes (plus busybox if asked).
pub fn make_layer(work: &Path, name: &str, size: usize, seed: u64, busybox: bool) -> Vec<u8> {
    let root = work.join(format!("rootfs-{name}"));
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data").join(name), noise(size, seed)).unwrap();
    if busybox {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C \"$1\" -cf - . | gzip -n -1")
        .arg("sh")
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar|gzip failed: {out:?}");
    out.stdout
}

fn write_blob(layout: &Path, data: &[u8]) -> serde_json::Value {
    let d = sha256(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&d[7..]), data).unwrap();
    serde_json::json!({"digest": d, "size": data.len()})
}

/// Writes an OCI image (config + layers) into `layout`, returning the manifest
/// descriptor (without annotations).
pub fn add_image(layout: &Path, layers: &[Vec<u8>], arch: &str) -> serde_json::Value {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| {
            let mut gz = flate_decode(l);
            sha256(&std::mem::take(&mut gz))
        })
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let mut cdesc = write_blob(layout, &config);
    cdesc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let ldescs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let mut d = write_blob(layout, l);
            d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
            d
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc, "layers": ldescs,
    }))
    .unwrap();
    let mut m = write_blob(layout, &manifest);
    m["mediaType"] = OCI_MANIFEST.into();
    m["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
    m
}

fn flate_decode(gz: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = gz.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    out.stdout
}

/// Finishes a layout whose index lists `manifests` under `tag`.
pub fn write_index(layout: &Path, tag: &str, manifests: Vec<serde_json::Value>) {
    let manifests: Vec<serde_json::Value> = manifests
        .into_iter()
        .map(|mut m| {
            m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
            m
        })
        .collect();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )
    .unwrap();
}

pub fn skopeo(args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("skopeo (Debian package skopeo) must be installed");
    out
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Map of blob digest file name → bytes in an OCI layout.
pub fn layout_blobs(layout: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}
