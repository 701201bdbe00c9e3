//! `skiff server`: the control plane — the state store (embedded, or etcd with
//! `--datastore-endpoint`) and the Kubernetes API server. No scheduler, controllers or
//! local agent exist yet, so it always runs as with `--disable-agent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use skiff_store::{EmbeddedStore, EtcdOptions, EtcdStore, OpenOptions, Store};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Holds the store (store/), credentials (pki/, token) and kubeconfig.yaml.
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Run the control plane only, without a local agent (the only mode so far).
    #[arg(long)]
    disable_agent: bool,
    /// Keep the cluster state in etcd instead of the embedded store:
    /// `http(s)://host:2379[,…]`.
    #[arg(long, value_delimiter = ',')]
    datastore_endpoint: Vec<String>,
    /// CA bundle that signed the etcd servers' certificates.
    #[arg(long, requires = "datastore_endpoint")]
    datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd (mutual TLS).
    #[arg(long, requires_all = ["datastore_endpoint", "datastore_keyfile"])]
    datastore_certfile: Option<PathBuf>,
    /// Client key for etcd (mutual TLS).
    #[arg(long, requires_all = ["datastore_endpoint", "datastore_certfile"])]
    datastore_keyfile: Option<PathBuf>,
    /// Extra names or IPs for the serving certificate (used when it is first generated).
    #[arg(long = "tls-san", value_delimiter = ',')]
    tls_san: Vec<String>,
    /// CA bundle trusted for kubelet serving certificates, besides the cluster CA.
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
}

pub fn main(args: ServerArgs) -> Result<()> {
    // main() restores SIGPIPE's default (die) for C-like printing; a server must instead
    // see EPIPE when a peer goes away mid-write (a streaming exec or port-forward session
    // whose client or kubelet closed first), or one such session kills it.
    // SAFETY: changing a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: ServerArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create the data dir {}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = if args.datastore_endpoint.is_empty() {
        let dir = args.data_dir.join("store");
        Arc::new(
            EmbeddedStore::open(&dir, &OpenOptions::default())
                .with_context(|| format!("open the embedded store in {}", dir.display()))?,
        )
    } else {
        for e in &args.datastore_endpoint {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                bail!("--datastore-endpoint {e:?}: use http://host:port or https://host:port (comma-separated for several)");
            }
        }
        let opts = EtcdOptions {
            endpoints: args.datastore_endpoint.clone(),
            ca_file: args.datastore_cafile.clone(),
            cert_file: args.datastore_certfile.clone(),
            key_file: args.datastore_keyfile.clone(),
            connect_timeout: None,
        };
        Arc::new(
            EtcdStore::connect(&opts).await.with_context(|| {
                format!("connect to etcd at {}", args.datastore_endpoint.join(","))
            })?,
        )
    };
    let server = skiff_apiserver::Server::bind(
        skiff_apiserver::Config {
            data_dir: args.data_dir.clone(),
            listen: args.listen,
            extra_sans: args.tls_san.clone(),
            kubelet_ca: args.kubelet_certificate_authority.clone(),
        },
        store,
    )
    .await
    .context("start the API server")?;
    let addr = server.local_addr().context("read the listen address")?;
    if !args.disable_agent {
        eprintln!(
            "skiff server: no local agent yet; running the control plane only (as --disable-agent)"
        );
    }
    eprintln!(
        "skiff server: API on https://{addr}; kubeconfig {}",
        server.pki.kubeconfig.display()
    );
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    server.run(shutdown).await;
    Ok(())
}
