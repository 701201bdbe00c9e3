//! `skiff store …`: admin of the embedded store (like etcdctl), and `skiff bench store`,
//! the embedded store against a single-member etcd with the same durability. Admin commands
//! take the server's data dir (they use its `store/`) or the store's own dir, open the store
//! themselves when no other process has it open, and otherwise ask that process (a running
//! server) through its admin socket, `STORE_DIR/admin.sock`. `restore` refuses a live store.
//!
//! Both build their own tokio runtime: the rest of the binary is synchronous.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_store::{
    EmbeddedStore, EtcdOptions, EtcdStore, Event, EventKind, KeyRange, KeyValue, ListOptions,
    LiveStore, OpenOptions, Store, StoreError, StoreStatus, WatchOptions, ADMIN_SOCKET, STORE_FILE,
    WAL_FILE,
};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The server's data dir (its store/ is used), or the store's own dir (holds state.redb).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/skiff",
        env = "SKIFF_STORE_DATA_DIR"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: StoreCmd,
}

#[derive(Debug, clap::Subcommand)]
enum StoreCmd {
    /// Print a key's value.
    Get {
        key: String,
        /// Read at this revision.
        #[arg(long)]
        rev: Option<i64>,
        /// Print the key's metadata as JSON instead of the raw value.
        #[arg(long)]
        json: bool,
    },
    /// List keys under a prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        rev: Option<i64>,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
    },
    /// Stream changes under a prefix.
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Start with the events from this revision on.
        #[arg(long)]
        rev: Option<i64>,
    },
    /// Revision, compact revision, key count and file size.
    Status,
    /// Discard history before a revision.
    Compact {
        /// Compact up to this revision…
        revision: Option<i64>,
        /// …or keep only the last N revisions.
        #[arg(long, conflicts_with = "revision")]
        keep: Option<i64>,
    },
    /// Write a consistent copy of the store to FILE.
    Snapshot { file: PathBuf },
    /// Create the store of --data-dir from a snapshot (the data dir must have no store).
    Restore { file: PathBuf },
    /// Give space freed by compaction back to the file system (writes wait meanwhile).
    Defrag,
}

/// The store's own dir for `--data-dir`: the dir itself when it holds a store's files, else
/// its `store/` when there is one (a server's data dir, the directory a user knows), else the
/// dir as given (so a missing or empty one gets the store's own error, and `restore` creates
/// the store there).
fn store_dir(data_dir: &Path) -> PathBuf {
    let holds_store = |d: &Path| {
        [STORE_FILE, WAL_FILE, ADMIN_SOCKET]
            .iter()
            .any(|f| d.join(f).symlink_metadata().is_ok())
    };
    let inner = data_dir.join("store");
    if !holds_store(data_dir) && inner.is_dir() {
        inner
    } else {
        data_dir.to_path_buf()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// Open an existing store (replaying its log); the store must not be in use.
fn open_existing(dir: &Path) -> Result<EmbeddedStore, StoreError> {
    // Admin commands never compact on their own.
    EmbeddedStore::open(
        dir,
        &OpenOptions {
            create: false,
            history: None,
            ..OpenOptions::default()
        },
    )
}

fn kv_json(kv: &KeyValue) -> serde_json::Value {
    serde_json::json!({
        "key": kv.key,
        "value": String::from_utf8_lossy(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    })
}

/// Where an admin command finds the store: opened here (no other process has it) or
/// through the admin socket of the process that has it open.
enum Target {
    Open(EmbeddedStore),
    Live(LiveStore),
}

fn target(dir: &Path) -> Result<Target, StoreError> {
    match open_existing(dir) {
        Ok(s) => Ok(Target::Open(s)),
        Err(e @ StoreError::Locked { .. }) => {
            let live = LiveStore::new(dir);
            if live.is_live() {
                Ok(Target::Live(live))
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

fn print_event(e: &Event) {
    match e.kind {
        EventKind::Put => println!(
            "PUT {} {} {}",
            e.kv.mod_revision,
            e.kv.key,
            String::from_utf8_lossy(&e.kv.value)
        ),
        EventKind::Delete => println!("DELETE {} {}", e.kv.mod_revision, e.kv.key),
    }
}

pub fn main(args: StoreArgs) -> Result<()> {
    let dir = store_dir(&args.data_dir);
    let dir = dir.as_path();
    let rt = runtime()?;
    rt.block_on(async move {
        match args.cmd {
            StoreCmd::Get { key, rev, json } => {
                let got = match target(dir)? {
                    Target::Open(s) => s.get(&key, rev).await?,
                    Target::Live(l) => l.get(&key, rev)?,
                };
                let Some(kv) = got.kv else {
                    bail!("key {key:?} not found in {}", dir.display());
                };
                if json {
                    println!("{}", kv_json(&kv));
                } else {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&kv.value)?;
                    out.flush()?;
                }
            }
            StoreCmd::List {
                prefix,
                limit,
                rev,
                keys_only,
            } => {
                let opts = ListOptions {
                    revision: rev,
                    limit,
                    continue_after: None,
                };
                let l = match target(dir)? {
                    Target::Open(s) => s.list(&prefix, &opts).await?,
                    Target::Live(l) => l.list(&prefix, &opts)?,
                };
                for kv in &l.kvs {
                    if keys_only {
                        println!("{}", kv.key);
                    } else {
                        println!("{}", kv_json(kv));
                    }
                }
                if l.more {
                    eprintln!("(more keys; read at revision {})", l.revision);
                }
            }
            StoreCmd::Watch { prefix, rev } => {
                let opts = WatchOptions {
                    start_revision: rev,
                    prev_kv: false,
                };
                match target(dir)? {
                    Target::Open(s) => {
                        let mut w = s.watch(KeyRange::Prefix(prefix), opts).await?;
                        while let Some(e) = w.next().await {
                            print_event(&e?);
                        }
                    }
                    // Streams until interrupted or until the process that has the store
                    // open closes it.
                    Target::Live(l) => {
                        for e in l.watch(&prefix, &opts)? {
                            print_event(&e?);
                        }
                        eprintln!("the store was closed by the process that had it open");
                    }
                }
            }
            StoreCmd::Status => {
                let st = match target(dir)? {
                    Target::Open(s) => StoreStatus {
                        revision: s.current_revision().await?,
                        compact_revision: s.compact_revision()?,
                        keys: s.count("").await?,
                        file_bytes: EmbeddedStore::file_size(dir),
                    },
                    Target::Live(l) => l.status()?,
                };
                println!(
                    "{}",
                    serde_json::json!({
                        "revision": st.revision,
                        "compact_revision": st.compact_revision,
                        "keys": st.keys,
                        "file_bytes": st.file_bytes,
                    })
                );
            }
            StoreCmd::Compact { revision, keep } => {
                if revision.is_none() && keep.is_none_or(|k| k < 0) {
                    bail!("give the revision to compact to, or --keep N (N >= 0)");
                }
                let (target_rev, current) = match target(dir)? {
                    Target::Open(s) => {
                        let current = s.current_revision().await?;
                        let t = match (revision, keep) {
                            (Some(r), _) => r,
                            (None, Some(k)) => (current - k).max(1),
                            (None, None) => unreachable!("checked above"),
                        };
                        s.compact(t).await?;
                        (t, current)
                    }
                    Target::Live(l) => l.compact(revision, keep)?,
                };
                println!("compacted to revision {target_rev} (current {current})");
            }
            StoreCmd::Snapshot { file } => {
                let info = match target(dir)? {
                    Target::Open(s) => s.snapshot(&file)?,
                    Target::Live(l) => l.snapshot(&file)?,
                };
                println!(
                    "snapshot {} at revision {}: {} keys, {} bytes",
                    file.display(),
                    info.revision,
                    info.keys,
                    info.bytes
                );
            }
            StoreCmd::Restore { file } => {
                let info = EmbeddedStore::restore(&file, dir)?;
                println!(
                    "restored {} into {} at revision {}: {} keys",
                    file.display(),
                    dir.display(),
                    info.revision,
                    info.keys
                );
            }
            StoreCmd::Defrag => {
                let (before, after) = match target(dir)? {
                    Target::Open(s) => s.defragment().await?,
                    Target::Live(l) => l.defrag()?,
                };
                println!("defragmented {}: {before} -> {after} bytes", dir.display());
            }
        }
        Ok(())
    })
}

#[derive(Debug, clap::Args)]
pub struct BenchStore {
    /// Concurrent writer counts to measure, one run each per backend.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 64])]
    writers: Vec<usize>,
    /// Each run lasts this many seconds…
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// …or until this many writes in total, whichever comes first.
    #[arg(long, default_value_t = 100_000)]
    max_writes: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Where the embedded store's temp data dir goes (the same disk as etcd's).
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Measure only the embedded store (no etcd, no ratio): for tuning it.
    #[arg(long)]
    embedded_only: bool,
    /// Runs per backend and writer count, alternating embedded and etcd; the medians are
    /// compared.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    rounds: u32,
}

#[derive(Clone, Copy)]
struct RunResult {
    writes: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    watch_p50: Duration,
    watch_p99: Duration,
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn run(store: Arc<dyn Store>, writers: usize, b: &BenchStore) -> Result<RunResult> {
    let prefix = "/bench/";
    let start_rev = store.current_revision().await?;
    let mut watcher = store
        .watch(
            KeyRange::Prefix(prefix.into()),
            WatchOptions {
                start_revision: Some(start_rev + 1),
                prev_kv: false,
            },
        )
        .await?;
    // Stamp each event as it arrives; matched with the writers' acknowledgements below.
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    let watch_task = tokio::spawn(async move {
        while let Some(Ok(e)) = watcher.next().await {
            if etx.send((e.kv.mod_revision, Instant::now())).is_err() {
                break;
            }
        }
    });
    let value = vec![b'x'; b.value_size];
    let deadline = Instant::now() + Duration::from_secs(b.seconds);
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(b.max_writes));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, value, budget) = (store.clone(), value.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline
                && budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
            {
                let t = Instant::now();
                let rev = store
                    .create(&format!("/bench/{w}/{i}"), value.clone(), 0)
                    .await?;
                let done = Instant::now();
                lat.push(done - t);
                acks.push((rev, done));
                i += 1;
            }
            Ok::<_, StoreError>((lat, acks))
        }));
    }
    let mut lat = Vec::new();
    let mut acks = std::collections::HashMap::new();
    for t in tasks {
        let (l, a) = t.await.context("writer task")??;
        lat.extend(l);
        acks.extend(a);
    }
    let secs = started.elapsed().as_secs_f64();
    let last = acks.keys().copied().max().unwrap_or(start_rev);
    let mut seen = Vec::new();
    let wait_until = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.last().is_none_or(|(r, _)| *r < last) {
        match tokio::time::timeout_at(wait_until, erx.recv()).await {
            Ok(Some(x)) => seen.push(x),
            _ => break,
        }
    }
    watch_task.abort();
    if seen.len() < acks.len() {
        bail!(
            "the watch delivered {} of {} writes",
            seen.len(),
            acks.len()
        );
    }
    let mut watch_lat: Vec<Duration> = seen
        .iter()
        .filter_map(|(rev, at)| acks.get(rev).map(|ack| at.saturating_duration_since(*ack)))
        .collect();
    Ok(RunResult {
        writes: lat.len(),
        secs,
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        watch_p50: pct(&mut watch_lat, 0.5),
        watch_p99: pct(&mut watch_lat, 0.99),
    })
}

pub fn bench(b: BenchStore) -> Result<()> {
    let tmp = b.tmp.clone().unwrap_or_else(std::env::temp_dir);
    let rt = runtime()?;
    rt.block_on(async move {
        println!(
            "store writes: {} B values, create (compare-and-set) of distinct keys, {} s or {} writes per run; \
             both fsync every commit; {} rounds, alternating with the order swapped every round, then the medians",
            b.value_size, b.seconds, b.max_writes, b.rounds
        );
        println!(
            "embedded: the store opened in this process, called directly; etcd: a single-member \
             etcd reached over gRPC on loopback (both behind the API server: `skiff bench api`)"
        );
        println!(
            "{:<11} {:>7} {:>9} {:>10} {:>9} {:>9} {:>12} {:>12}",
            "backend", "writers", "writes", "writes/s", "p50 ms", "p99 ms", "watch p50 ms", "watch p99 ms"
        );
        for &writers in &b.writers {
            let mut embedded = Vec::new();
            let mut etcd = Vec::new();
            for round in 1..=b.rounds {
                // Swap who goes first every round, so neither always meets the disk after
                // the other's writeback.
                let order: &[bool] = match (b.embedded_only, round % 2 == 1) {
                    (true, _) => &[true],
                    (false, true) => &[true, false],
                    (false, false) => &[false, true],
                };
                for &is_embedded in order {
                    if is_embedded {
                        let dir = tempfile_dir(&tmp, writers)?;
                        let r = {
                            let s = EmbeddedStore::open(&dir, &OpenOptions::default())?;
                            let r = run(Arc::new(s), writers, &b).await;
                            let _ = std::fs::remove_dir_all(&dir);
                            r?
                        };
                        print_row(&format!("embedded#{round}"), writers, &r);
                        embedded.push(r);
                    } else {
                        let peer = EtcdPeer::start(&tmp)?;
                        let r = {
                            let s = connect_etcd(peer.endpoints()).await?;
                            run(Arc::new(s), writers, &b).await?
                        };
                        drop(peer);
                        print_row(&format!("etcd#{round}"), writers, &r);
                        etcd.push(r);
                    }
                }
            }
            let embedded = median(&embedded);
            print_row("embedded", writers, &embedded);
            if b.embedded_only {
                continue;
            }
            let etcd = median(&etcd);
            print_row("etcd", writers, &etcd);
            println!(
                "{writers} writers, medians of {} runs: embedded/etcd throughput {:.2}x (target >= 3), p99 ratio {:.2} (target <= 0.33)",
                b.rounds,
                embedded.rate() / etcd.rate(),
                embedded.p99.as_secs_f64() / etcd.p99.as_secs_f64()
            );
        }
        Ok(())
    })
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.secs
    }
}

/// Each figure's median over the runs.
fn median(runs: &[RunResult]) -> RunResult {
    fn mid<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    let rate = mid(runs.iter().map(RunResult::rate).collect());
    let writes = mid(runs.iter().map(|r| r.writes).collect());
    RunResult {
        writes,
        secs: writes as f64 / rate,
        p50: mid(runs.iter().map(|r| r.p50).collect()),
        p99: mid(runs.iter().map(|r| r.p99).collect()),
        watch_p50: mid(runs.iter().map(|r| r.watch_p50).collect()),
        watch_p99: mid(runs.iter().map(|r| r.watch_p99).collect()),
    }
}

fn tempfile_dir(tmp: &Path, writers: usize) -> Result<PathBuf> {
    let d = tmp.join(format!(
        "skiff-bench-store-{}-{writers}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    Ok(d)
}

async fn connect_etcd(endpoints: Vec<String>) -> Result<EtcdStore> {
    let opts = EtcdOptions {
        endpoints,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match EtcdStore::connect(&opts).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e).context("etcd never answered"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn print_row(name: &str, writers: usize, r: &RunResult) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{:<11} {:>7} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>12.2} {:>12.2}",
        name,
        writers,
        r.writes,
        r.rate(),
        ms(r.p50),
        ms(r.p99),
        ms(r.watch_p50),
        ms(r.watch_p99)
    );
}

/// The benchmark's peer: one etcd member (Debian's etcd-server) on free loopback ports with
/// its default durability (fsync'd WAL) and a data dir under `tmp`, killed and removed on
/// drop. (Tests use `skiff_store::testing`, which is not in this binary.)
pub(crate) struct EtcdPeer {
    child: std::process::Child,
    dir: PathBuf,
    client_url: String,
}

impl EtcdPeer {
    pub(crate) fn start(tmp: &Path) -> Result<EtcdPeer> {
        let free_port = || -> Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("find a free loopback port")?
                .port())
        };
        let (cp, pp) = (free_port()?, free_port()?);
        let dir = tmp.join(format!("skiff-bench-etcd-{}-{cp}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let client_url = format!("http://127.0.0.1:{cp}");
        let peer_url = format!("http://127.0.0.1:{pp}");
        let child = std::process::Command::new("etcd")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--name", "bench"])
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--log-level", "error"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start etcd (install Debian's etcd-server)")?;
        let peer = EtcdPeer {
            child,
            dir,
            client_url,
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], cp));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not listen on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(peer)
    }

    pub(crate) fn endpoints(&self) -> Vec<String> {
        vec![self.client_url.clone()]
    }
}

impl Drop for EtcdPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
