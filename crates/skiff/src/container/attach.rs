//! A foreground `skiff run -p`: the container runs under its shim (which serves the
//! ports); this process prints the container's log as it grows, forwards SIGINT, SIGTERM
//! and SIGHUP to it, and exits with its exit code, which the shim writes on the pipe.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::ChildStdout;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::Paths;

pub fn follow(
    paths: &Paths,
    runtime: &skiff_runtime::Runtime,
    id: &str,
    mut report: BufReader<ChildStdout>,
) -> Result<i32> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("blocking signals")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("signalfd")?;
    // The shim's last line, read without blocking the relay loop.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = report.read_line(&mut line);
        let _ = tx.send(line);
    });
    let log_path = paths.log(id);
    let mut log = std::fs::File::open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 64 * 1024];
    let mut relay = |log: &mut std::fs::File| -> Result<()> {
        loop {
            let n = log.read(&mut buf)?;
            if n == 0 {
                return Ok(out.flush()?);
            }
            out.write_all(&buf[..n])?;
        }
    };
    loop {
        relay(&mut log)?;
        while let Ok(Some(si)) = sfd.read_signal() {
            if let Ok(sig) = Signal::try_from(si.ssi_signo as i32) {
                // The container may be gone already: then the exit line follows.
                let _ = runtime.kill(id, sig, false);
            }
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                relay(&mut log)?;
                return Ok(line
                    .trim()
                    .strip_prefix("exit ")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(125));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(125),
        }
    }
}
