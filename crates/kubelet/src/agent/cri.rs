//! The runtime seam of the node agent, in the shape of the CRI's RuntimeService: pod
//! sandboxes, container lifecycle and state, exec with a timeout, streaming exec and
//! attach, and logs (each container's CRI-format log at `record.log_path`).
//!
//! The pod workers, probers, stats and the streaming server see the runtime only through
//! [`ContainerRuntime`]. [`super::containers::RuntimeManager`] implements it on skiff's
//! container library; [`super::fake::FakeRuntime`] implements it in memory for tests of
//! the agent's logic. Both pass [`super::cri_conformance`].
//!
//! Every method blocks (files, sockets, processes): async callers use `spawn_blocking`.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::containers::{Container, ContainerConfig, ContainerRecord, RunState, StartError};
use super::AgentError;
use crate::runtime::TermSize;

/// What a pod's sandbox is made with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The UTS name.
    pub hostname: String,
    /// Namespaced sysctls (`net.*`, `kernel.shm*` …), written when its namespaces are made.
    pub sysctls: Vec<(String, String)>,
    /// `shareProcessNamespace`: one PID namespace for all of the pod's containers.
    pub share_pid: bool,
    /// The pod's cgroup (absolute), for what the sandbox itself runs.
    pub cgroup: Option<String>,
    /// The pod network: an interface and an address for the pod, with these hostPorts
    /// forwarded to it. None: no pod network (hostNetwork pods, or a node without one).
    pub network: Option<Vec<skiff_net::pod::HostPort>>,
}

pub trait ContainerRuntime: Send + Sync + 'static {
    /// Makes the pod's sandbox (its network, IPC and UTS namespaces) unless it is there
    /// and usable; after a reboot-like loss it is made anew. Returns the pod's IP when the
    /// sandbox is on the pod network.
    fn run_sandbox(
        &self,
        uid: &str,
        cfg: &SandboxConfig,
    ) -> Result<Option<std::net::IpAddr>, AgentError>;

    /// Whether the pod's sandbox is there and usable.
    fn sandbox_ready(&self, uid: &str) -> bool;

    /// The pods that have a sandbox (usable or not) in this runtime.
    fn sandboxes(&self) -> Vec<String>;

    /// The pod's network namespace (a path to `setns` into), if its sandbox has one.
    fn network_namespace(&self, uid: &str) -> Option<PathBuf>;

    /// Removes the pod's sandbox. Its containers must have been removed first.
    fn remove_sandbox(&self, uid: &str);

    /// Creates and starts a container in the pod's sandbox; its record, with the id the
    /// runtime gave it, the cgroup it runs in and `started` set.
    fn start(&self, cfg: ContainerConfig) -> Result<ContainerRecord, StartError>;

    /// The records of every container this runtime has (running or not), including
    /// those a previous agent started.
    fn records(&self) -> Vec<ContainerRecord>;

    /// The container's state now.
    fn state(&self, r: &ContainerRecord) -> RunState;

    /// Every container with its state.
    fn list(&self) -> Vec<Container> {
        self.records()
            .into_iter()
            .map(|record| {
                let state = self.state(&record);
                Container { record, state }
            })
            .collect()
    }

    /// The containers of one pod (only theirs are asked for their state).
    fn pod_containers(&self, uid: &str) -> Vec<Container> {
        self.records()
            .into_iter()
            .filter(|r| r.pod_uid == uid)
            .map(|record| {
                let state = self.state(&record);
                Container { record, state }
            })
            .collect()
    }

    /// Sends `signal` to the container's init process (with `all`, to every process in
    /// it). A container that is not running is left alone.
    fn kill(&self, r: &ContainerRecord, signal: Signal, all: bool);

    /// Removes a container: ends what still runs in it and frees its rootfs, files and
    /// cgroup. Removing a removed container does nothing.
    fn remove(&self, r: &ContainerRecord);

    /// Runs `argv` in the running container with no stdin; its exit code and combined
    /// output (at most 1 MiB), or an error after `timeout` (the command is left to end on
    /// its own, as the CRI's ExecSync does).
    fn exec_sync(
        &self,
        r: &ContainerRecord,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), String>;

    /// Runs `argv` in the running container with the given stdio; its exit code. With
    /// `tty` (its first size) the process gets a terminal: its input and output go
    /// through a pty (resized with [`ContainerRuntime::resize_exec`] by `exec_id`), and
    /// `stderr` gets only the runtime's own errors.
    #[allow(clippy::too_many_arguments)]
    fn exec(
        &self,
        r: &ContainerRecord,
        argv: Vec<String>,
        tty: Option<TermSize>,
        exec_id: &str,
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<i32, String>;

    /// Copies the container's output from now on to `stdout` and `stderr` until it exits,
    /// and `stdin`'s bytes to the container's input when it keeps one open (`stdin: true`).
    /// Returns once the copy is set up.
    fn attach(
        &self,
        r: &ContainerRecord,
        stdin: Option<BorrowedFd<'_>>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<(), String>;

    /// Resizes the container's terminal (an error when it has none).
    fn resize(&self, r: &ContainerRecord, size: TermSize) -> Result<(), String>;

    /// Resizes the terminal of a running exec with a terminal.
    fn resize_exec(&self, r: &ContainerRecord, exec_id: &str, size: TermSize)
        -> Result<(), String>;
}
