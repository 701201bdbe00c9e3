//! A foreground `skiff run -p`: the container runs under its shim (which serves the
//! ports). Before the start this process attaches its stdout and stderr to the
//! container's (the shim writes there as well as to the log); then it forwards SIGINT,
//! SIGTERM and SIGHUP to the container through the shim and exits with the exit code the
//! shim's `wait` answers.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use skiff_container::shim::Client;

/// The signals a foreground run forwards. They must be blocked before the container
/// starts (see [`block_forwarded_signals`]): one that came between the start and
/// [`follow`] would otherwise end this process and leave the container running.
fn forwarded_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask
}

/// Blocks the forwarded signals in this (single-threaded) process; they stay pending
/// until [`follow`] reads them.
pub fn block_forwarded_signals() -> Result<()> {
    forwarded_signals()
        .thread_block()
        .context("blocking signals")
}

pub fn follow(client: &Client) -> Result<i32> {
    let mask = forwarded_signals();
    mask.thread_block().context("blocking signals")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("signalfd")?;
    let (tx, rx) = mpsc::channel();
    let waiter = client.clone();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.wait());
    });
    loop {
        while let Ok(Some(si)) = sfd.read_signal() {
            if let Ok(sig) = Signal::try_from(si.ssi_signo as i32) {
                // The container may be gone already: then the exit answer follows.
                let _ = client.kill(sig, false);
            }
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(code) => return code.context("waiting for the container"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(125),
        }
    }
}
