//! The etcd backend: the [`Store`] contract over a real etcd v3 cluster. etcd's revisions
//! are the store's revisions, so a cluster can be shared with other etcd clients.
//!
//! Watches survive the loss of the member they stream from: the watcher reconnects and
//! resumes after the last revision it delivered, so it sees no gap and no duplicate.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompactionOptions, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, Identity, PutOptions, TlsOptions, TxnOp, TxnOpResponse,
};

use crate::{
    Compare, Event, EventKind, GetResult, KeyRange, KeyValue, Lease, LeaseId, ListOptions,
    ListResult, Op, OpResult, Result, Revision, Store, StoreError, Txn, TxnResult, WatchOptions,
    Watcher,
};

/// How long a request is retried while the cluster is unreachable or without a leader.
const RETRY_FOR: Duration = Duration::from_secs(15);
/// How long a watcher keeps trying to reconnect before it reports the cluster unavailable.
const WATCH_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Client URLs, `http://host:2379` or `https://…`.
    pub endpoints: Vec<String>,
    /// CA bundle to verify the servers (https endpoints).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// How long to wait for a connection (default 5 s).
    pub connect_timeout: Option<Duration>,
}

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| StoreError::Io {
        path: path.clone(),
        operation: "read TLS file",
        source: e,
    })
}

impl EtcdStore {
    /// Connect to the cluster and check that it answers.
    pub async fn connect(opts: &EtcdOptions) -> Result<Self> {
        let endpoints = opts.endpoints.join(",");
        let mut co = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout.unwrap_or(Duration::from_secs(5)))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if opts.ca_file.is_some() || opts.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &opts.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?));
            }
            if let (Some(cert), Some(key)) = (&opts.cert_file, &opts.key_file) {
                tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            co = co.with_tls(tls);
        }
        let err = |operation| {
            let endpoints = endpoints.clone();
            move |e| StoreError::Etcd {
                endpoints,
                operation,
                source: Box::new(e),
            }
        };
        let mut client = Client::connect(&opts.endpoints, Some(co))
            .await
            .map_err(err("connect"))?;
        client.status().await.map_err(err("status"))?;
        Ok(EtcdStore { client, endpoints })
    }

    /// Run `f` with a client, retrying while the cluster is unreachable: always when the
    /// request cannot have reached a server (connection refused, e.g. a dead member that
    /// the client still balances to), otherwise only if `idempotent`.
    async fn call<T, F, Fut>(&self, idempotent: bool, mut f: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            match f(self.client.clone()).await {
                Err(e) if tokio::time::Instant::now() < deadline && retryable(&e, idempotent) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                r => return r,
            }
        }
    }

    fn err(&self, operation: &'static str, e: etcd_client::Error) -> StoreError {
        if let etcd_client::Error::LeaseKeepAliveError(m) = &e {
            if m.contains("lease not found") {
                return StoreError::LeaseNotFound { lease: 0 };
            }
        }
        if let etcd_client::Error::GRpcStatus(s) = &e {
            let m = s.message();
            if m.contains("requested lease not found") {
                // The caller knows which lease; see `lease_err`.
                return StoreError::LeaseNotFound { lease: 0 };
            }
            if m.contains("duplicate key given in txn request") {
                return StoreError::DuplicateKeyInTxn { key: String::new() };
            }
        }
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            operation,
            source: Box::new(e),
        }
    }

    /// Map a revision error of a read at `requested` to Compacted / FutureRevision.
    async fn read_err(
        &self,
        operation: &'static str,
        requested: Revision,
        e: etcd_client::Error,
    ) -> StoreError {
        if let etcd_client::Error::GRpcStatus(s) = &e {
            let m = s.message();
            if m.contains("required revision has been compacted") {
                return StoreError::Compacted {
                    requested,
                    compact_revision: self.compact_revision_of(requested).await.unwrap_or(0),
                };
            }
            if m.contains("required revision is a future revision") {
                let current = self.current_revision().await.unwrap_or(0);
                return StoreError::FutureRevision { requested, current };
            }
        }
        self.err(operation, e)
    }

    /// etcd tells the compact revision only to a watch that starts below it.
    async fn compact_revision_of(&self, requested: Revision) -> Option<Revision> {
        let mut c = self.client.clone();
        let mut ws = c
            .watch(
                "\0",
                Some(etcd_client::WatchOptions::new().with_start_revision(requested)),
            )
            .await
            .ok()?;
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_secs(5), ws.message())
                .await
                .ok()?
                .ok()??;
            if r.compact_revision() > 0 {
                return Some(r.compact_revision());
            }
        }
        None
    }

    fn lease_err(&self, operation: &'static str, id: LeaseId, e: etcd_client::Error) -> StoreError {
        match self.err(operation, e) {
            StoreError::LeaseNotFound { .. } => StoreError::LeaseNotFound { lease: id },
            other => other,
        }
    }
}

fn retryable(e: &etcd_client::Error, idempotent: bool) -> bool {
    /// gRPC's UNAVAILABLE.
    const UNAVAILABLE: i32 = 14;
    let etcd_client::Error::GRpcStatus(s) = e else {
        return false;
    };
    let m = s.message();
    let unavailable = s.code() as i32 == UNAVAILABLE;
    // Never sent: the connection to the member could not be made.
    let not_sent = unavailable && (m.contains("connect error") || m.contains("refused"));
    // etcd refuses, without applying, what it gets while it has no leader.
    let no_leader = m.contains("no leader");
    not_sent || no_leader || (idempotent && (unavailable || m.contains("leader changed")))
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision())
}

fn kv(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        version: k.version(),
        lease: k.lease(),
    }
}

/// The first key after every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd's "from key" range end.
    vec![0]
}

fn to_op(op: &Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let mut o = PutOptions::new().with_prev_key();
            if *lease != 0 {
                o = o.with_lease(*lease);
            }
            TxnOp::put(key.as_str(), value.clone(), Some(o))
        }
        Op::Delete { key } => {
            TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()))
        }
        Op::Get { key } => TxnOp::get(key.as_str(), None),
    }
}

fn check_txn(txn: &Txn) -> Result<()> {
    for ops in [&txn.success, &txn.failure] {
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
                Op::Get { .. } => continue,
            };
            if key.is_empty() {
                return Err(StoreError::EmptyKey);
            }
            if !seen.insert(key) {
                return Err(StoreError::DuplicateKeyInTxn { key: key.clone() });
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResult> {
        let mut o = GetOptions::new();
        if let Some(r) = revision {
            o = o.with_revision(r);
        }
        let r = match self
            .call(true, |mut c| {
                let o = o.clone();
                async move { c.get(key, Some(o)).await }
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.read_err("get", revision.unwrap_or(0), e).await),
        };
        Ok(GetResult {
            kv: r.kvs().first().map(kv),
            revision: revision.unwrap_or(header_rev(r.header())),
        })
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let start = match &opts.continue_after {
            Some(a) if a.as_str() >= prefix => format!("{a}\0"),
            _ => prefix.to_string(),
        };
        let mut o = GetOptions::new().with_range(prefix_end(prefix.as_bytes()));
        if let Some(l) = opts.limit.filter(|l| *l > 0) {
            o = o.with_limit(l as i64);
        }
        if let Some(r) = opts.revision {
            o = o.with_revision(r);
        }
        let r = match self
            .call(true, |mut c| {
                let (o, start) = (o.clone(), start.clone());
                async move { c.get(start, Some(o)).await }
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.read_err("list", opts.revision.unwrap_or(0), e).await),
        };
        Ok(ListResult {
            kvs: r.kvs().iter().map(kv).collect(),
            revision: opts.revision.unwrap_or(header_rev(r.header())),
            more: r.more(),
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let o = GetOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_count_only();
        let r = self
            .call(true, |mut c| {
                let o = o.clone();
                async move { c.get(prefix, Some(o)).await }
            })
            .await
            .map_err(|e| self.err("count", e))?;
        Ok(r.count())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        check_txn(&txn)?;
        let compares: Vec<_> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => {
                    etcd_client::Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
                }
                Compare::Value { key, value } => {
                    etcd_client::Compare::value(key.as_str(), CompareOp::Equal, value.clone())
                }
            })
            .collect();
        let t = etcd_client::Txn::new()
            .when(compares)
            .and_then(txn.success.iter().map(to_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(to_op).collect::<Vec<_>>());
        let r = self
            .call(false, |mut c| {
                let t = t.clone();
                async move { c.txn(t).await }
            })
            .await
            .map_err(|e| match self.err("txn", e) {
                StoreError::LeaseNotFound { .. } => {
                    let lease = txn
                        .success
                        .iter()
                        .chain(&txn.failure)
                        .find_map(|o| match o {
                            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                            _ => None,
                        })
                        .unwrap_or(0);
                    StoreError::LeaseNotFound { lease }
                }
                other => other,
            })?;
        let results = r
            .op_responses()
            .into_iter()
            .map(|o| match o {
                TxnOpResponse::Put(p) => OpResult::Put {
                    prev: p.prev_key().map(kv),
                },
                TxnOpResponse::Delete(d) => OpResult::Delete {
                    prev: d.prev_kvs().first().map(kv),
                },
                TxnOpResponse::Get(g) => OpResult::Get {
                    kv: g.kvs().first().map(kv),
                },
                TxnOpResponse::Txn(_) => OpResult::Get { kv: None },
            })
            .collect();
        Ok(TxnResult {
            succeeded: r.succeeded(),
            revision: header_rev(r.header()),
            results,
        })
    }

    async fn watch(&self, range: KeyRange, opts: WatchOptions) -> Result<Watcher> {
        let current = self.current_revision().await?;
        let start = match opts.start_revision {
            Some(s) if s > 0 => s,
            _ => current + 1,
        };
        // etcd reports a compacted start only inside the stream; check first so the
        // caller gets the error from `watch` itself.
        if start <= current {
            let mut c = self.client.clone();
            if let Err(e) = c
                .get(
                    "\0",
                    Some(GetOptions::new().with_revision(start).with_count_only()),
                )
                .await
            {
                return Err(self.read_err("watch", start, e).await);
            }
        }
        let (key, prefix) = match range {
            KeyRange::Key(k) => (k, false),
            KeyRange::Prefix(p) => (p, true),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(512);
        let store = self.clone();
        let task = tokio::spawn(async move {
            // Events with revision >= next are still owed to the caller.
            let mut next = start;
            let mut failing_since: Option<tokio::time::Instant> = None;
            loop {
                let mut o = etcd_client::WatchOptions::new().with_start_revision(next);
                if prefix {
                    o = o.with_range(prefix_end(key.as_bytes()));
                }
                if opts.prev_kv {
                    o = o.with_prev_key();
                }
                let mut c = store.client.clone();
                let failure = match c.watch(key.as_str(), Some(o)).await {
                    Ok(mut ws) => loop {
                        match ws.message().await {
                            Ok(Some(resp)) => {
                                if resp.canceled() {
                                    if resp.compact_revision() > 0 {
                                        let _ = tx
                                            .send(Err(StoreError::Compacted {
                                                requested: next,
                                                compact_revision: resp.compact_revision(),
                                            }))
                                            .await;
                                        return;
                                    }
                                    break None;
                                }
                                failing_since = None;
                                for ev in resp.events() {
                                    let Some(k) = ev.kv() else { continue };
                                    let mut e = Event {
                                        kind: match ev.event_type() {
                                            EventType::Put => EventKind::Put,
                                            EventType::Delete => EventKind::Delete,
                                        },
                                        kv: kv(k),
                                        prev_kv: ev.prev_kv().map(kv),
                                    };
                                    if e.kind == EventKind::Delete {
                                        e.kv.value.clear();
                                    }
                                    if e.kv.mod_revision < next {
                                        continue;
                                    }
                                    // All events of one revision share it; the next owed
                                    // revision is the one after only once it is complete,
                                    // which etcd guarantees per response.
                                    next = e.kv.mod_revision;
                                    if tx.send(Ok(e)).await.is_err() {
                                        return;
                                    }
                                }
                                if let Some(last) = resp.events().last().and_then(|e| e.kv()) {
                                    next = last.mod_revision() + 1;
                                }
                            }
                            Ok(None) => break None,
                            Err(e) => break Some(e),
                        }
                    },
                    Err(e) => Some(e),
                };
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > WATCH_RETRY {
                    let e = failure.unwrap_or(etcd_client::Error::WatchError(
                        "the watch stream ended".into(),
                    ));
                    let _ = tx.send(Err(store.err("watch", e))).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Watcher::new(rx, task))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self
            .call(false, |mut c| async move {
                c.compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.read_err("compact", revision, e).await),
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        let r = self
            .call(true, |mut c| async move {
                c.get("\0", Some(GetOptions::new().with_count_only())).await
            })
            .await
            .map_err(|e| self.err("get revision", e))?;
        Ok(header_rev(r.header()))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        if ttl < Duration::from_secs(1) {
            return Err(StoreError::InvalidTtl {
                ttl_secs: ttl.as_secs() as i64,
            });
        }
        let r = self
            .call(false, |mut c| async move {
                c.lease_grant(ttl.as_secs() as i64, None).await
            })
            .await
            .map_err(|e| self.err("grant lease", e))?;
        Ok(Lease {
            id: r.id(),
            ttl: Duration::from_secs(r.ttl().max(0) as u64),
        })
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<()> {
        self.call(false, |mut c| async move { c.lease_revoke(id).await })
            .await
            .map_err(|e| self.lease_err("revoke lease", id, e))?;
        Ok(())
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<()> {
        let (mut keeper, mut stream) = self
            .call(true, |mut c| async move { c.lease_keep_alive(id).await })
            .await
            .map_err(|e| self.lease_err("keep lease alive", id, e))?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| self.lease_err("keep lease alive", id, e))?;
        match stream.message().await {
            // etcd answers an unknown lease with TTL 0.
            Ok(Some(r)) if r.ttl() > 0 => Ok(()),
            Ok(_) => Err(StoreError::LeaseNotFound { lease: id }),
            Err(e) => Err(self.lease_err("keep lease alive", id, e)),
        }
    }
}
