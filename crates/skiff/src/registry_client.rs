//! What every registry-client command shares: the flags that say how to reach a
//! registry, the client built from them, and progress output (indicatif bars on a
//! terminal, plain lines otherwise).

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff_image::distribution::{Client, ClientOptions, DockerConfig, Event, Progress};

#[derive(Debug, Args, Clone, Default)]
pub struct RegistryOpts {
    /// Talk plain HTTP to this registry (host:port); loopback registries always are.
    /// Repeatable; also SKIFF_INSECURE_REGISTRIES (comma-separated).
    #[arg(long = "insecure-registry", global = true)]
    pub insecure_registry: Vec<String>,
    /// Trust this CA certificate (PEM) for registries, beside the system roots and
    /// /etc/docker/certs.d/HOST/*.crt.
    #[arg(long = "ca-cert", env = "SKIFF_CA_CERT", global = true)]
    pub ca_cert: Vec<PathBuf>,
    /// Docker's per-registry certificate directory.
    #[arg(
        long,
        default_value = "/etc/docker/certs.d",
        global = true,
        hide = true
    )]
    pub certs_dir: PathBuf,
}

impl RegistryOpts {
    pub fn client(&self) -> Client {
        let mut insecure = self.insecure_registry.clone();
        if let Ok(v) = std::env::var("SKIFF_INSECURE_REGISTRIES") {
            insecure.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
        Client::new(
            ClientOptions {
                insecure_registries: insecure,
                ca_certs: self.ca_cert.clone(),
                certs_dir: self.certs_dir.clone(),
                ..ClientOptions::default()
            },
            DockerConfig::default_location(),
        )
    }
}

/// A runtime for one command (the CLI is synchronous everywhere else).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    // main() restores SIGPIPE's default (die) for C-like printing; a registry that drops
    // a connection mid-write (e.g. on the HTTPS probe of a plain-HTTP registry) must be
    // an I/O error here, not the death of the process.
    // SAFETY: changing a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Progress on stderr: bars when it is a terminal, one line per finished blob otherwise.
pub fn progress() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        })
    } else {
        Arc::new(Lines)
    }
}

struct Lines;

impl Progress for Lines {
    fn event(&self, e: Event) {
        match e {
            Event::Message(m) => eprintln!("{m}"),
            Event::Start {
                id,
                what,
                total,
                done,
            } => {
                if done > 0 {
                    eprintln!("{id}: {what} of {total} bytes, resuming at {done}");
                }
            }
            Event::Advance { .. } => {}
            Event::Done { id, status } => eprintln!("{id}: {status}"),
        }
    }
}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for Bars {
    fn event(&self, e: Event) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::Message(m) => {
                let _ = self.multi.println(m);
            }
            Event::Start {
                id,
                what: _,
                total,
                done,
            } => {
                let pb = self.multi.add(ProgressBar::new(total));
                pb.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                pb.set_prefix(id.clone());
                pb.set_position(done);
                bars.insert(id, pb);
            }
            Event::Advance { id, bytes } => {
                if let Some(pb) = bars.get(&id) {
                    pb.inc(bytes);
                }
            }
            Event::Done { id, status } => match bars.remove(&id) {
                Some(pb) => pb.finish_with_message(status),
                None => {
                    let _ = self.multi.println(format!("{id}: {status}"));
                }
            },
        }
    }
}
