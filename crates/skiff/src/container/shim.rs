//! `skiff container-shim serve ID`: the owner of a detached (or `-p`) container.
//!
//! `skiff run` prepares the container (snapshot, overlay mount, bundle, record), binds
//! the shim's socket (`containers/<id>/shim.sock`) and starts this command in a new
//! session with the listening socket as its stdin and its stderr on `shim.log`. The
//! task protocol and the container's lifecycle are skiff-container's shim
//! ([`skiff_container::shim`]); this module is what `skiff run` adds around it
//! ([`RunOwner`]): before create it binds the published ports and makes the network
//! namespace (netns.rs); after create it serves the ports and records the container as
//! running with this process as its owner; after the exit it unmounts the rootfs and
//! records the exit code (or, with `--rm`, removes the container). The shim ends once
//! that is done.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use skiff_container::shim::{BoxError, Owner, ShimOptions};
use skiff_container::ContainerState;
use skiff_image::ImageStore;

use super::{ports, Meta, Paths};

#[derive(Debug, Subcommand)]
pub enum ShimCmd {
    /// Own a prepared container; the listening task socket is stdin (started by `skiff run`).
    Serve(ShimServe),
    /// Own a pod's container (started by the agent); the task socket is stdin.
    Pod(PodShim),
    /// The init of a pod's shared PID namespace (started by the agent): prints its PID
    /// and reaps orphans until killed.
    Pause(PauseArgs),
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Be the namespace's init (run by `pause` itself).
    #[arg(long, hide = true)]
    pub init: bool,
}

#[derive(Debug, Args)]
pub struct PodShim {
    /// The container's directory (record.json, bundle/).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub runtime_root: PathBuf,
    /// Rotate the container's log before it grows past this many bytes (with
    /// --log-max-files; the agent's --container-log-max-size).
    #[arg(long, requires = "log_max_files")]
    pub log_max_size: Option<u64>,
    /// Log files kept, the current one included.
    #[arg(long, requires = "log_max_size")]
    pub log_max_files: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ShimServe {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub runtime_root: PathBuf,
    pub id: String,
}

pub fn main(cmd: ShimCmd) -> i32 {
    // A shim writes to sockets whose readers may go away (an attach client that quit):
    // that must be EPIPE, not the death of the shim and the loss of its container.
    // SAFETY: changing a signal disposition before any thread exists; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    match cmd {
        ShimCmd::Serve(a) => serve(a),
        ShimCmd::Pause(a) => skiff_kubelet::agent::pidns::serve_pause(a.init),
        ShimCmd::Pod(a) => {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("skiff shim: finding the skiff binary: {e}");
                    return 1;
                }
            };
            skiff_kubelet::agent::containers::serve_shim(
                &a.dir,
                &a.runtime_root,
                vec![exe.into_os_string(), "runtime".into()],
                a.log_max_size
                    .zip(a.log_max_files)
                    .map(|(max_size, max_files)| skiff_container::log::Rotation {
                        max_size,
                        max_files,
                    }),
            )
        }
    }
}

fn serve(a: ShimServe) -> i32 {
    let listener = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixListener::from(fd),
        Err(e) => {
            eprintln!("skiff shim: taking the task socket from stdin: {e}");
            return 1;
        }
    };
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    // A session of its own: the terminal's signals and hangups are not the container's.
    let _ = nix::unistd::setsid();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skiff shim: finding the skiff binary: {e}");
            return 1;
        }
    };
    let paths = Paths::new(&a.data_dir);
    let opts = ShimOptions {
        id: a.id.clone(),
        bundle: paths.bundle(&a.id),
        runtime_root: a.runtime_root.clone(),
        log_path: paths.log(&a.id),
        runtime_command: vec![exe.into_os_string(), "runtime".into()],
        exit_when_stopped: true,
        stdin: false,
        stdin_once: false,
        log_rotation: None,
    };
    let owner = RunOwner {
        paths,
        id: a.id,
        meta: None,
        listeners: Vec::new(),
        netns: None,
    };
    skiff_container::shim::serve(listener, opts, Box::new(owner))
}

/// What `skiff run` does around the shim's steps.
struct RunOwner {
    paths: Paths,
    id: String,
    meta: Option<Meta>,
    listeners: Vec<TcpListener>,
    netns: Option<File>,
}

impl Owner for RunOwner {
    fn before_create(&mut self) -> Result<(), BoxError> {
        let mut meta = self.paths.load(&self.id)?;
        self.listeners = ports::bind(&mut meta.ports)?;
        self.netns = Some(super::netns::prepare(&self.paths.bundle(&self.id))?);
        self.meta = Some(meta);
        Ok(())
    }

    fn created(&mut self, _pid: i32) -> Result<(), BoxError> {
        super::netns::forget(&self.paths.bundle(&self.id))?;
        let Some(meta) = self.meta.as_mut() else {
            return Err("the shim created the container before loading its record".into());
        };
        // The port threads dial from inside the namespace; without ports it can go.
        let netns = self.netns.take();
        if let (false, Some(ns)) = (self.listeners.is_empty(), netns) {
            ports::serve(std::mem::take(&mut self.listeners), &meta.ports, ns)?;
        }
        meta.state = ContainerState::Running;
        meta.owner_pid = std::process::id() as i32;
        meta.owner_start = skiff_runtime::state::process_start_time(meta.owner_pid).unwrap_or(0);
        self.paths.save(meta)?;
        Ok(())
    }

    fn started(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    fn exited(&mut self, exit_code: i32) {
        let paths = &self.paths;
        let id = &self.id;
        let _ = skiff_image::mount::unmount(&paths.rootfs(id));
        let Ok(mut meta) = paths.load(id) else { return };
        if meta.rm {
            if let Ok(store) = ImageStore::open(&paths.data) {
                let _ = super::cmds::remove_files(paths, &store, &meta);
            }
            return;
        }
        meta.state = ContainerState::Exited;
        meta.exit_code = Some(exit_code);
        meta.finished = Some(super::now_secs());
        let _ = paths.save(&meta);
    }
}
