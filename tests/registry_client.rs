//! End-to-end tests of skiff's registry client: `skiff image push/pull`, `skiff login/
//! logout` and `FROM registry/…` in builds, against skiff's own registry (`skiff registry
//! serve`) and Debian's docker-registry, with skopeo reading what skiff pushed.
//!
//! Every test has its own data dirs, docker config dir and registries on free loopback
//! ports; registries and proxies are stopped by drop guards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mounts.rs"]
mod mounts;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const BUSYBOX: &str = "/bin/busybox";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    fn fails(self, needles: &[&str]) -> Self {
        assert_ne!(self.code, 0, "unexpectedly succeeded:\n{}", self.stdout);
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// One "machine": a data dir, runtime root, build context and docker config dir.
struct Env {
    dir: TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        mounts::unmount_all_under(self.dir.path());
    }
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["ctx", "data", "rt", "docker"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        fs::copy(BUSYBOX, dir.path().join("ctx/busybox")).unwrap();
        Env { dir }
    }
    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker/config.json")
    }
    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    fn cmd_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut c = Command::new("timeout");
        c.arg("180")
            .arg(SKIFF)
            .args(args)
            .env("SKIFF_DATA_DIR", self.data())
            .env("SKIFF_RUNTIME_ROOT", self.dir.path().join("rt"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("SKIFF_INSECURE_REGISTRIES")
            .env_remove("SKIFF_CA_CERT")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    fn cmd(&self, args: &[&str]) -> Out {
        self.cmd_stdin(args, None)
    }
    /// Builds a 3-layer image (busybox, a message, `extra` bytes) named `tag`.
    fn build_demo(&self, tag: &str, msg: &str, extra: usize) {
        self.write("msg.txt", msg.as_bytes());
        self.write("extra.bin", &pseudo_random(extra));
        self.write(
            "Dockerfile",
            b"FROM scratch\nCOPY busybox /bin/busybox\nCOPY msg.txt /msg.txt\nCOPY extra.bin /extra.bin\nCMD [\"/bin/busybox\", \"cat\", \"/msg.txt\"]\n",
        );
        let ctx = self.ctx();
        self.cmd(&["image", "build", "-t", tag, ctx.to_str().unwrap()])
            .ok();
    }
    fn inspect(&self, image: &str) -> Value {
        let out = self.cmd(&["image", "inspect", image]).ok();
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0].clone()
    }
    fn run(&self, image: &str) -> String {
        self.cmd(&["run", "--rm", image]).ok().stdout
    }
    /// Every visible blob of the local content store.
    fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.data().join("images/content/blobs/sha256"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn layers(&self) -> usize {
        fs::read_dir(self.data().join("images/snapshots/layers"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }
}

/// Deterministic incompressible bytes (so a layer is as large as its content).
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A registry process (skiff's or docker-registry) on a free loopback port.
struct Registry {
    addr: SocketAddr,
    child: Child,
    dir: TempDir,
    _extra: Option<TempDir>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn skiff(extra: &[&str]) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(SKIFF)
            .args([
                "registry",
                "serve",
                "--listen",
                &addr.to_string(),
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(addr);
        Registry {
            addr,
            child,
            dir,
            _extra: None,
        }
    }

    fn skiff_with_htpasswd(user: &str, pass: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, pass])
            .output()
            .unwrap();
        assert!(out.status.success());
        let file = dir.path().join("htpasswd");
        fs::write(&file, out.stdout).unwrap();
        let mut r = Registry::skiff(&["--htpasswd", file.to_str().unwrap()]);
        // Keep the htpasswd file's directory alive as long as the registry.
        r._extra = Some(dir);
        r
    }

    /// Debian's docker-registry (distribution 2.8).
    fn docker() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr);
        Registry {
            addr,
            child,
            dir,
            _extra: None,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// One raw HTTP/1.1 request (`Connection: close`); returns status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[end + 4..].to_vec())
}

fn manifest_digest(pushed_stdout: &str) -> String {
    pushed_stdout
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no digest in {pushed_stdout}"))
        .to_string()
}

/// Push from one data dir, pull into a fresh one, compare IDs and run the result.
fn roundtrip(reg: &Registry) {
    let a = Env::new();
    a.build_demo("demo:1", "hello via the registry\n", 300_000);
    let remote = format!("{}/team/demo:v1", reg.host());
    a.cmd(&["image", "tag", "demo:1", &remote]).ok();
    let pushed = a.cmd(&["image", "push", &remote]).ok();
    assert!(pushed.stderr.contains("Pushed"), "{}", pushed.stderr);
    let digest = manifest_digest(&pushed.stdout);
    // Again: every blob is already there.
    let again = a.cmd(&["image", "push", &remote]).ok();
    assert!(!again.stderr.contains(": Pushed"), "{}", again.stderr);
    assert!(
        again.stderr.contains("Layer already exists"),
        "{}",
        again.stderr
    );
    // Another repository of the same registry: blobs are mounted, not uploaded.
    let other = format!("{}/other/demo:v1", reg.host());
    let mounted = a.cmd(&["image", "push", "--from", "demo:1", &other]).ok();
    assert!(
        mounted.stderr.contains("Mounted from team/demo"),
        "{}",
        mounted.stderr
    );
    assert!(!mounted.stderr.contains(": Pushed"), "{}", mounted.stderr);

    let b = Env::new();
    let pulled = b.cmd(&["image", "pull", &remote]).ok();
    assert!(
        pulled.stdout.contains(&format!("Digest: {digest}")),
        "{}",
        pulled.stdout
    );
    assert!(
        pulled.stdout.contains("Status: Downloaded newer image"),
        "{}",
        pulled.stdout
    );
    assert_eq!(b.inspect(&remote)["Id"], a.inspect("demo:1")["Id"]);
    // Unpacked by the pull: all three layers are there before anything runs.
    assert_eq!(b.layers(), 3);
    assert_eq!(b.run(&remote), "hello via the registry\n");
    let again = b.cmd(&["image", "pull", &remote]).ok();
    assert!(
        again.stdout.contains("Image is up to date"),
        "{}",
        again.stdout
    );
    // From the other repository too, by digest.
    let by_digest = format!("{}/other/demo@{digest}", reg.host());
    b.cmd(&["image", "pull", &by_digest]).ok();
}

#[test]
fn push_then_pull_through_skiff_registry_and_run() {
    let reg = Registry::skiff(&[]);
    roundtrip(&reg);
}

#[test]
fn push_then_pull_through_docker_registry_and_skopeo_reads_it() {
    let reg = Registry::docker();
    roundtrip(&reg);
    // skopeo reads what skiff pushed: same manifest digest, and a full copy out.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}/team/demo:v1", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = out.stdout;
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/demo:v1", reg.host()))
        .arg(format!("oci:{}:x", dir.path().join("oci").display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn pull_of_an_index_picks_the_host_platform() {
    let reg = Registry::skiff(&[]);
    let a = Env::new();
    a.build_demo("demo:1", "multi\n", 1000);
    let remote = format!("{}/multi/app:single", reg.host());
    a.cmd(&["image", "tag", "demo:1", &remote]).ok();
    let pushed = a.cmd(&["image", "push", &remote]).ok();
    let digest = manifest_digest(&pushed.stdout);
    let (_, body) = http(
        reg.addr,
        "GET",
        &format!("/v2/multi/app/manifests/{digest}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": body.len(),
             "platform": {"os": "linux", "architecture": other}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": body.len(),
             "platform": {"os": "linux", "architecture": arch}},
        ]
    });
    let (st, _) = http(
        reg.addr,
        "PUT",
        "/v2/multi/app/manifests/multi",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        index.to_string().as_bytes(),
    );
    assert_eq!(st, 201);
    let b = Env::new();
    let out = b
        .cmd(&["image", "pull", &format!("{}/multi/app:multi", reg.host())])
        .ok();
    assert!(
        out.stderr
            .contains(&format!("Picked linux/{arch} from index")),
        "{}",
        out.stderr
    );
    assert_eq!(b.run(&format!("{}/multi/app:multi", reg.host())), "multi\n");
}

#[test]
fn login_logout_with_the_token_flow_and_wrong_credentials() {
    let reg = Registry::skiff_with_htpasswd("alice", "s3cret");
    let a = Env::new();
    a.build_demo("demo:1", "private\n", 1000);
    let remote = format!("{}/private/app:v1", reg.host());
    a.cmd(&["image", "tag", "demo:1", &remote]).ok();
    a.cmd(&["image", "push", &remote])
        .fails(&["requires authentication", "skiff login"]);

    // Wrong password: refused, nothing saved.
    a.cmd_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.host()],
        Some("nope\n"),
    )
    .fails(&["refused the credentials", "alice"]);
    assert!(!a.docker_config().exists());

    let ok = a
        .cmd_stdin(
            &["login", "-u", "alice", "--password-stdin", &reg.host()],
            Some("s3cret\n"),
        )
        .ok();
    assert!(ok.stdout.contains("Login Succeeded"));
    let cfg: Value = serde_json::from_slice(&fs::read(a.docker_config()).unwrap()).unwrap();
    use base64::Engine as _;
    assert_eq!(
        cfg["auths"][reg.host()]["auth"],
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    a.cmd(&["image", "push", &remote]).ok();

    // A second machine with docker's config file copied over works as well (existing logins).
    let b = Env::new();
    b.cmd(&["image", "pull", &remote])
        .fails(&["requires authentication"]);
    fs::copy(a.docker_config(), b.docker_config()).unwrap();
    b.cmd(&["image", "pull", &remote]).ok();
    assert_eq!(b.run(&remote), "private\n");

    // Stored but wrong credentials: a clear error naming the user.
    fs::write(
        b.docker_config(),
        serde_json::json!({"auths": {reg.host(): {"auth": base64::engine::general_purpose::STANDARD.encode("alice:wrong")}}}).to_string(),
    )
    .unwrap();
    b.cmd(&["image", "pull", &remote])
        .fails(&["refused the credentials", "\"alice\""]);

    let out = a.cmd(&["logout", &reg.host()]).ok();
    assert!(
        out.stdout.contains("Removing login credentials"),
        "{}",
        out.stdout
    );
    let cfg: Value = serde_json::from_slice(&fs::read(a.docker_config()).unwrap()).unwrap();
    assert!(cfg["auths"].get(reg.host()).is_none(), "{cfg}");
    a.cmd(&["image", "push", &remote])
        .fails(&["requires authentication"]);
}

#[test]
fn build_from_an_image_in_a_registry() {
    let reg = Registry::skiff(&[]);
    let a = Env::new();
    a.build_demo("base:1", "base layer\n", 1000);
    let remote = format!("{}/lib/base:1", reg.host());
    a.cmd(&["image", "tag", "base:1", &remote]).ok();
    a.cmd(&["image", "push", &remote]).ok();

    let b = Env::new();
    b.write("more.txt", b"on top\n");
    b.write(
        "Dockerfile",
        format!(
            "FROM {remote}\nCOPY more.txt /more.txt\nCMD [\"/bin/busybox\", \"cat\", \"/msg.txt\", \"/more.txt\"]\n"
        )
        .as_bytes(),
    );
    let ctx = b.ctx();
    let out = b
        .cmd(&["image", "build", "-t", "child:1", ctx.to_str().unwrap()])
        .ok();
    assert!(
        out.stderr.contains("Pull complete") || out.stdout.contains("Pull complete"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(b.run("child:1"), "base layer\non top\n");
    // The base is now a local image under its registry name.
    b.inspect(&remote);

    // A base that is nowhere: the build names it.
    b.write(
        "Dockerfile",
        format!("FROM {}/lib/missing:1\n", reg.host()).as_bytes(),
    );
    b.cmd(&["image", "build", "-t", "x:1", ctx.to_str().unwrap()])
        .fails(&["not found", "lib/missing"]);
}

/// Forwards connections to `to`; the first response to a GET of `cut_path` is cut after
/// `cut_after` bytes. Records every request head.
struct CuttingProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

impl CuttingProxy {
    /// `every`: cut every response to `cut_path`, not only the first.
    fn start(to: SocketAddr, cut_path: String, cut_after: usize, every: bool) -> CuttingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let cut_done = Arc::new(AtomicBool::new(false));
        let (h, s) = (heads.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = c else { continue };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let armed = Arc::new(AtomicBool::new(false));
                // client -> server: forward, note request heads, arm the cut.
                {
                    let (mut c, mut sv) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (h, armed, cut_done, cut_path) =
                        (h.clone(), armed.clone(), cut_done.clone(), cut_path.clone());
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = match c.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            if text.starts_with("GET ") || text.starts_with("HEAD ") {
                                let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
                                if head.starts_with(&format!("GET {cut_path} "))
                                    && (every || !cut_done.swap(true, Ordering::SeqCst))
                                {
                                    armed.store(true, Ordering::SeqCst);
                                }
                                h.lock().unwrap().push(head);
                            }
                            if sv.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = sv.shutdown(std::net::Shutdown::Write);
                    });
                }
                // server -> client: forward, cutting once when armed.
                let (mut c, mut sv) = (client, server);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut relayed = 0usize;
                    loop {
                        let n = match sv.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if armed.load(Ordering::SeqCst) {
                            let room = cut_after.saturating_sub(relayed);
                            let _ = c.write_all(&buf[..n.min(room)]);
                            relayed += n.min(room);
                            if relayed >= cut_after {
                                let _ = c.shutdown(std::net::Shutdown::Both);
                                let _ = sv.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            continue;
                        }
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { addr, heads, stop }
    }
}

#[test]
fn an_interrupted_layer_download_resumes_with_range() {
    let reg = Registry::skiff(&[]);
    let a = Env::new();
    a.build_demo("big:1", "resumed\n", 3 << 20);
    let remote = format!("{}/big/app:v1", reg.host());
    a.cmd(&["image", "tag", "big:1", &remote]).ok();
    a.cmd(&["image", "push", &remote]).ok();
    // The largest layer is the one to cut.
    let img = a.inspect("big:1");
    let id = img["Id"].as_str().unwrap().to_string();
    let manifest: Value = {
        let (_, body) = http(reg.addr, "GET", "/v2/big/app/manifests/v1", &[("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")], b"");
        serde_json::from_slice(&body).unwrap()
    };
    let big = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let proxy = CuttingProxy::start(reg.addr, format!("/v2/big/app/blobs/{big}"), 1 << 20, false);
    let via = format!("{}/big/app:v1", proxy.addr);
    let b = Env::new();
    let out = b.cmd(&["image", "pull", &via]).ok();
    assert!(out.stderr.contains("resuming at byte"), "{}", out.stderr);
    let heads = proxy.heads.lock().unwrap().clone();
    let ranged: Vec<&String> = heads
        .iter()
        .filter(|h| h.contains(&big) && h.to_ascii_lowercase().contains("range: bytes="))
        .collect();
    assert_eq!(ranged.len(), 1, "{heads:#?}");
    assert!(
        !ranged[0].to_ascii_lowercase().contains("range: bytes=0-"),
        "{}",
        ranged[0]
    );
    assert_eq!(b.inspect(&via)["Id"], id);
    assert_eq!(b.run(&via), "resumed\n");
    // Nothing left in the staging area.
    let ingest: Vec<_> = fs::read_dir(b.data().join("images/content/ingest"))
        .unwrap()
        .collect();
    assert!(ingest.is_empty(), "{ingest:?}");
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_the_store_unchanged() {
    let reg = Registry::skiff(&[]);
    let a = Env::new();
    a.build_demo("demo:1", "x\n", 200_000);
    let remote = format!("{}/bad/app:v1", reg.host());
    a.cmd(&["image", "tag", "demo:1", &remote]).ok();
    a.cmd(&["image", "push", &remote]).ok();

    let b = Env::new();
    // Nothing listening.
    let closed = format!("127.0.0.1:{}", free_port());
    b.cmd(&["image", "pull", &format!("{closed}/x/y:1")])
        .fails(&["cannot reach registry", &closed]);
    // Unknown tag and repository.
    b.cmd(&["image", "pull", &format!("{}/bad/app:nope", reg.host())])
        .fails(&["not found", "bad/app:nope"]);
    b.cmd(&["image", "pull", &format!("{}/no/such:v1", reg.host())])
        .fails(&["not found"]);
    // Invalid reference.
    b.cmd(&["image", "pull", "127.0.0.1:1/UPPER:v1"])
        .fails(&["invalid remote image reference"]);
    // Push of an image that is not here.
    b.cmd(&["image", "push", &format!("{}/x/y:1", reg.host())])
        .fails(&["not found"]);

    // A corrupted blob in the registry's data dir (same size, different bytes).
    let manifest: Value = {
        let (_, body) = http(reg.addr, "GET", "/v2/bad/app/manifests/v1", &[("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")], b"");
        serde_json::from_slice(&body).unwrap()
    };
    let big = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = big.strip_prefix("sha256:").unwrap();
    let file = reg
        .dir
        .path()
        .join("data/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&file, &bytes).unwrap();
    let before = b.blobs();
    b.cmd(&["image", "pull", &remote]).fails(&[
        "does not match its digest",
        &big,
        "nothing was stored",
    ]);
    assert_eq!(b.blobs(), before, "the failed pull left blobs behind");
    assert_eq!(b.layers(), 0);
    let ls = b.cmd(&["image", "ls", "-q"]).ok();
    assert_eq!(ls.stdout.trim(), "");
    let ingest: Vec<_> = fs::read_dir(b.data().join("images/content/ingest"))
        .unwrap()
        .collect();
    assert!(
        ingest.is_empty(),
        "a corrupt partial download was kept: {ingest:?}"
    );
}

#[test]
fn https_registry_with_a_custom_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = (d.join("key.pem"), d.join("cert.pem"));
    let ossl = |args: &[&str]| {
        let st = Command::new("openssl")
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    // A CA and a server certificate it signs (webpki refuses a CA as the server's own).
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "srv.csr",
    ]);
    fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let ca = d.join("ca.pem");
    let reg = Registry::skiff(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let a = Env::new();
    a.build_demo("demo:1", "over tls\n", 1000);
    let remote = format!("{}/tls/app:v1", reg.host());
    a.cmd(&["image", "tag", "demo:1", &remote]).ok();
    // Without the CA the server's certificate is not trusted.
    a.cmd(&["image", "push", &remote]).fails(&[
        "cannot reach registry",
        "over HTTPS",
        "certificate",
    ]);
    a.cmd(&["image", "push", "--ca-cert", ca.to_str().unwrap(), &remote])
        .ok();
    let b = Env::new();
    b.cmd(&["image", "pull", "--ca-cert", ca.to_str().unwrap(), &remote])
        .ok();
    assert_eq!(b.run(&remote), "over tls\n");
}

#[test]
fn a_partial_layer_left_by_an_earlier_pull_is_continued() {
    let reg = Registry::skiff(&[]);
    let a = Env::new();
    a.build_demo("big:1", "continued\n", 2 << 20);
    let remote = format!("{}/big/app:v1", reg.host());
    a.cmd(&["image", "tag", "big:1", &remote]).ok();
    a.cmd(&["image", "push", &remote]).ok();
    let manifest: Value = {
        let (_, body) = http(reg.addr, "GET", "/v2/big/app/manifests/v1", &[("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")], b"");
        serde_json::from_slice(&body).unwrap()
    };
    let big = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // What a pull killed mid-layer leaves: the first part of the blob in the staging area.
    let (st, blob) = http(
        reg.addr,
        "GET",
        &format!("/v2/big/app/blobs/{big}"),
        &[],
        b"",
    );
    assert_eq!(st, 200);
    let kept = blob.len() / 3;
    let b = Env::new();
    let ingest = b.data().join("images/content/ingest");
    fs::create_dir_all(&ingest).unwrap();
    let partial = ingest.join(format!("pull-{}.partial", &big[7..]));
    fs::write(&partial, &blob[..kept]).unwrap();
    let proxy = CuttingProxy::start(reg.addr, "/never".to_string(), 0, false);
    let via = format!("{}/big/app:v1", proxy.addr);
    let out = b.cmd(&["image", "pull", &via]).ok();
    assert!(
        out.stderr.contains(&format!("resuming at {kept}")),
        "{}",
        out.stderr
    );
    let heads = proxy.heads.lock().unwrap().clone();
    assert!(
        heads.iter().any(|h| h.contains(&big)
            && h.to_ascii_lowercase()
                .contains(&format!("range: bytes={kept}-"))),
        "{heads:#?}"
    );
    assert_eq!(b.inspect(&via)["Id"], a.inspect("big:1")["Id"]);
    assert_eq!(b.run(&via), "continued\n");
    assert!(!partial.exists());

    // A partial file that is wrong (not a prefix of the blob): one clean restart.
    let c = Env::new();
    let ingest = c.data().join("images/content/ingest");
    fs::create_dir_all(&ingest).unwrap();
    let bad: Vec<u8> = blob[..kept].iter().map(|b| b ^ 0x5a).collect();
    fs::write(ingest.join(format!("pull-{}.partial", &big[7..])), bad).unwrap();
    let out = c.cmd(&["image", "pull", &remote]).ok();
    assert!(out.stderr.contains("starting over"), "{}", out.stderr);
    assert_eq!(c.inspect(&remote)["Id"], a.inspect("big:1")["Id"]);
}
