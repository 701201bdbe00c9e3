//! `skiff registry`: run the OCI distribution registry, or collect its garbage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCmd {
    /// Serve the OCI Distribution API (what `docker push` and `skopeo copy` talk to).
    Serve(ServeArgs),
    /// Remove blobs no manifest references. Run it while the registry is stopped or
    /// read-only: blobs of a push in progress are not referenced yet.
    Gc {
        #[arg(long, default_value = "/var/lib/skiff/registry")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Where blobs, manifests and uploads live.
    #[arg(long, default_value = "/var/lib/skiff/registry")]
    data_dir: PathBuf,
    /// Require credentials from this htpasswd file (bcrypt entries, `htpasswd -B`).
    #[arg(long)]
    htpasswd: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse pushes and deletes.
    #[arg(long)]
    read_only: bool,
    /// Seconds after which an upload without activity is removed.
    #[arg(long, default_value_t = 3600)]
    upload_expiry: u64,
}

pub fn main(cmd: RegistryCmd) -> Result<()> {
    match cmd {
        RegistryCmd::Gc { data_dir } => {
            let r = skiff_registry::gc(&data_dir)
                .with_context(|| format!("garbage-collecting {}", data_dir.display()))?;
            println!(
                "removed {} blobs ({} bytes) and {} dangling links; kept {} blobs",
                r.blobs_removed, r.bytes_freed, r.links_removed, r.blobs_kept
            );
            Ok(())
        }
        RegistryCmd::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    // main() restores SIGPIPE's default (die) for C-like printing; a server must instead
    // see EPIPE when a client disconnects mid-download, or one dropped pull kills it.
    // SAFETY: changing a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // rustls needs a process-wide provider for anything that does not name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = skiff_registry::Config::new(a.listen, a.data_dir);
    config.htpasswd = a.htpasswd;
    config.tls = a.tls_cert.zip(a.tls_key);
    config.read_only = a.read_only;
    config.upload_expiry = Duration::from_secs(a.upload_expiry);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let tls = config.tls.is_some();
        let server = skiff_registry::Server::bind(config).await?;
        let addr = server.local_addr()?;
        // Tests and scripts read this line to learn the port when they asked for :0.
        println!(
            "skiff registry listening on {}://{addr}",
            if tls { "https" } else { "http" }
        );
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
