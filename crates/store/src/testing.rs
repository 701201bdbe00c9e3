//! Real etcd servers for tests and benchmarks: `etcd` (Debian `etcd-server`) started as
//! child processes on free loopback ports with temp data dirs. Dropping the cluster kills
//! every member by pid and removes the data dirs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting etcd; only tests and benchmarks use this.
#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    #[error("{operation}: {source}")]
    Io {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd member {name} did not listen on {addr} within {secs} s (is Debian's etcd-server installed?)")]
    NotReady {
        name: String,
        addr: SocketAddr,
        secs: u64,
    },
}

/// Why one start attempt failed: a member exited (retried on new ports) or anything else.
enum Start {
    Exited(EtcdServerError),
    Failed(EtcdServerError),
}

impl From<EtcdServerError> for Start {
    fn from(e: EtcdServerError) -> Start {
        Start::Failed(e)
    }
}

struct Member {
    name: String,
    client_url: String,
    client_addr: SocketAddr,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    dir: PathBuf,
}

/// PEM files for a TLS member: its certificate and key, and the CA that signs clients.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

/// `n` distinct free loopback ports: every listener is held until all are picked, so one
/// cluster never gets the same port twice (another process may still take one before
/// etcd binds it; [`EtcdCluster::start_with`] starts again on new ports then).
fn free_ports(n: usize) -> Result<Vec<u16>, EtcdServerError> {
    let io = |e| EtcdServerError::Io {
        operation: "find a free loopback port",
        source: e,
    };
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(io))
        .collect()
}

/// How many times a cluster is started on fresh ports when a member exits at start-up
/// (its port was taken by another process between picking and binding).
const START_ATTEMPTS: usize = 3;

impl EtcdCluster {
    /// Start `n` members (1 or 3 usually) with etcd's default durability (fsync'd WAL).
    pub fn start(n: usize) -> Result<Self, EtcdServerError> {
        Self::start_with(n, None)
    }

    /// Like [`EtcdCluster::start`], serving clients over TLS and requiring a client
    /// certificate signed by `tls.client_ca_file`.
    pub fn start_tls(n: usize, tls: &EtcdTls) -> Result<Self, EtcdServerError> {
        Self::start_with(n, Some(tls))
    }

    fn start_with(n: usize, tls: Option<&EtcdTls>) -> Result<Self, EtcdServerError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(n, tls) {
                Err(Start::Exited(_)) if attempt < START_ATTEMPTS => attempt += 1,
                Err(Start::Exited(e) | Start::Failed(e)) => return Err(e),
                Ok(c) => return Ok(c),
            }
        }
    }

    fn start_once(n: usize, tls: Option<&EtcdTls>) -> Result<Self, Start> {
        let dir = std::env::temp_dir().join(format!(
            "skiff-etcd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| EtcdServerError::Io {
            operation: "create etcd data dir",
            source: e,
        })?;
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir,
        };
        let ports = free_ports(2 * n)?;
        let peers: Vec<_> = (0..n)
            .map(|i| (format!("m{i}"), ports[2 * i], ports[2 * i + 1]))
            .collect();
        let initial: Vec<String> = peers
            .iter()
            .map(|(name, _, pp)| format!("{name}=http://127.0.0.1:{pp}"))
            .collect();
        let initial = initial.join(",");
        let token = cluster
            .dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (name, cp, pp) in peers {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let client_url = format!("{scheme}://127.0.0.1:{cp}");
            let peer_url = format!("http://127.0.0.1:{pp}");
            let mut cmd = Command::new("etcd");
            if let Some(t) = tls {
                cmd.arg("--cert-file")
                    .arg(&t.cert_file)
                    .arg("--key-file")
                    .arg(&t.key_file)
                    .arg("--trusted-ca-file")
                    .arg(&t.client_ca_file)
                    .arg("--client-cert-auth");
            }
            let child = cmd
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(cluster.dir.join(&name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", &token])
                .args(["--initial-cluster-state", "new"])
                .args(["--log-level", "error"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| EtcdServerError::Io {
                    operation: "start etcd (install Debian's etcd-server)",
                    source: e,
                })?;
            cluster.members.push(Member {
                name,
                client_url,
                client_addr: SocketAddr::from(([127, 0, 0, 1], cp)),
                child: Some(child),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in &mut cluster.members {
            while TcpStream::connect_timeout(&m.client_addr, Duration::from_millis(200)).is_err() {
                let not_ready = EtcdServerError::NotReady {
                    name: m.name.clone(),
                    addr: m.client_addr,
                    secs: 30,
                };
                // A member that exited lost its port to another process: start again.
                if let Some(c) = m.child.as_mut() {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        return Err(Start::Exited(not_ready));
                    }
                }
                if Instant::now() > deadline {
                    return Err(Start::Failed(not_ready));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// Client URLs of the members still running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect()
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Where the members keep their data (for size comparisons).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
