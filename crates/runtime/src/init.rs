//! The container's init: the code that runs in the cloned child, from its first
//! instruction in the new namespaces to the execve of the user's program.
//!
//! Contract: `init_main` never returns. Every failure is reported to the parent over the
//! sync channel as an `Error` message (and the child exits 1), so the parent can roll back
//! and print one clear error. The handshake order is documented in `sync::Msg`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::CgroupManager;
use crate::error::chain;
use crate::hooks;
use crate::process;
use crate::rootfs::{self, RootfsConfig};
use crate::seccomp::CompiledSeccomp;
use crate::sync::{Channel, Msg};
use crate::tty;

/// Everything the init needs, prepared by the parent before cloning.
#[derive(Debug)]
pub struct InitContext {
    pub id: String,
    pub bundle: PathBuf,
    pub spec: Spec,
    pub rootfs: RootfsConfig,
    pub seccomp: Option<CompiledSeccomp>,
    /// Namespaces to join by path, in join order (the user namespace first).
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    pub new_userns: bool,
    /// Namespaces the init unshares itself (all new ones but user and pid): first thing,
    /// or with a new user namespace once it is root there.
    pub unshare_flags: CloneFlags,
    pub new_utsns: bool,
    pub new_cgroupns: bool,
    /// Unshare the cgroup namespace before preparing the rootfs (a cgroup2 mount in it
    /// must see the new namespace); otherwise it is unshared after HooksDone.
    pub cgroupns_early: bool,
    /// The config has prestart or createRuntime hooks, which the parent runs between
    /// Hooks and HooksDone; without any, neither message is sent.
    pub runtime_hooks: bool,
    /// `exec.fifo` in the state dir; None for a foreground run (Start comes by channel).
    pub fifo: Option<PathBuf>,
}

pub fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// Run the init; never returns.
pub fn init_main(ctx: &InitContext, cg: &dyn CgroupManager, in_cgroup: bool, ch: &Channel) -> ! {
    let code = match setup(ctx, cg, in_cgroup, ch) {
        Ok(never) => match never {},
        Err(msg) => {
            ch.send_error(&msg);
            if ctx.fifo.is_some() {
                // After `create` returned nobody reads the channel; the container's stderr
                // is the only place left to say what happened.
                eprintln!("skiff: container {}: {msg}", ctx.id);
            }
            1
        }
    };
    // SAFETY: _exit skips atexit handlers and destructors that belong to the parent's
    // copy of this address space.
    unsafe { libc::_exit(code) }
}

fn setup(
    ctx: &InitContext,
    cg: &dyn CgroupManager,
    in_cgroup: bool,
    ch: &Channel,
) -> Result<std::convert::Infallible, String> {
    process::reset_signals();
    process::cloexec_inherited_fds().map_err(|e| chain(&e))?;
    // Opened before anything changes our credentials: in a new user namespace we are
    // still the host's root here, which the 0600 fifo in the state dir requires.
    let fifo: Option<OwnedFd> = match &ctx.fifo {
        Some(p) => Some(open_fifo(p)?),
        None => None,
    };
    // While the parent makes our cgroup (it says Go when it is ready).
    if !ctx.new_userns && !ctx.unshare_flags.is_empty() {
        nix::sched::unshare(ctx.unshare_flags)
            .map_err(|e| format!("unshare {:?}: {e}", ctx.unshare_flags))?;
    }
    let (payload, _) = ch.expect(Msg::Go).map_err(|e| chain(&e))?;
    // Moving ourselves is far cheaper than being moved (see CgroupManager::join_self),
    // and it works even in a new user namespace because our credentials are still the
    // host's here. Children and every later step are accounted to the container.
    if !in_cgroup {
        cg.join_self().map_err(|e| chain(&e))?;
    }
    let host_pid: i32 = std::str::from_utf8(&payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if ctx.new_userns {
        // The parent has written our id maps: become root of the new user namespace, then
        // make the other namespaces as that root (runc's order; it decides e.g. who owns
        // the new ipc namespace's mqueue filesystem).
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresuid 0 in user namespace: {e}"))?;
        if !ctx.unshare_flags.is_empty() {
            nix::sched::unshare(ctx.unshare_flags)
                .map_err(|e| format!("unshare {:?}: {e}", ctx.unshare_flags))?;
        }
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresgid 0 in user namespace: {e}"))?;
    }
    for (t, path) in &ctx.join {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("open namespace {}: {e}", path.display()))?;
        nix::sched::setns(&f, ns_flag(*t))
            .map_err(|e| format!("join {t} namespace {}: {e}", path.display()))?;
        if *t == LinuxNamespaceType::User {
            nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                .map_err(|e| format!("setresgid 0: {e}"))?;
            nix::unistd::setresuid(0.into(), 0.into(), 0.into())
                .map_err(|e| format!("setresuid 0: {e}"))?;
        }
    }
    if ctx.new_cgroupns && ctx.cgroupns_early {
        unshare_cgroupns()?;
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if ctx.new_utsns {
        if let Some(h) = ctx.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
        }
        if let Some(d) = ctx.spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            set_domainname(d)?;
        }
    }
    rootfs::prepare(&ctx.spec, &ctx.rootfs).map_err(|e| format!("rootfs: {e}"))?;
    if ctx.runtime_hooks {
        ch.send(Msg::Hooks).map_err(|e| chain(&e))?;
        ch.expect(Msg::HooksDone).map_err(|e| chain(&e))?;
    }
    if ctx.new_cgroupns && !ctx.cgroupns_early {
        unshare_cgroupns()?;
    }
    let state = state_json(ctx, host_pid);
    let hooks = ctx.spec.hooks().as_ref();
    hooks::run(
        "createContainer",
        hooks.and_then(|h| h.create_container().as_ref()),
        &state,
    )
    .map_err(|e| chain(&e))?;
    rootfs::pivot(&ctx.rootfs.rootfs).map_err(|e| format!("rootfs: {e}"))?;
    rootfs::finalize(&ctx.spec).map_err(|e| format!("rootfs: {e}"))?;

    let proc_ = ctx
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| "config.json has no process".to_string())?;
    if ctx.rootfs.terminal {
        let size = proc_
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        let pty = tty::open_pty(size).map_err(|e| chain(&e))?;
        rootfs::bind_console(&pty.slave_path).map_err(|e| chain(&e))?;
        ch.send_fd(pty.master.as_raw_fd()).map_err(|e| chain(&e))?;
        drop(pty.master);
        tty::attach_slave(&pty.slave_path).map_err(|e| chain(&e))?;
    }
    let cwd_ok = nix::unistd::chdir(proc_.cwd()).is_ok();
    process::set_rlimits(proc_).map_err(|e| chain(&e))?;
    process::set_oom_score_adj(proc_).map_err(|e| chain(&e))?;
    if let Some(mask) = proc_.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let nnp = proc_.no_new_privileges() == Some(true);
    if let (Some(sc), false) = (&ctx.seccomp, nnp) {
        // Without no_new_privs installing a filter needs CAP_SYS_ADMIN: do it while we
        // still have it.
        sc.install().map_err(|e| chain(&e))?;
    }
    process::set_identity(proc_, true).map_err(|e| chain(&e))?;
    if !cwd_ok {
        nix::unistd::chdir(proc_.cwd())
            .map_err(|e| format!("chdir to cwd {:?}: {e}", proc_.cwd()))?;
    }
    if nnp {
        process::set_no_new_privs().map_err(|e| chain(&e))?;
    }
    let exec = process::prepare_exec(proc_).map_err(|e| chain(&e))?;
    ch.send(Msg::Ready).map_err(|e| chain(&e))?;
    match &fifo {
        Some(f) => wait_fifo(f)?,
        None => {
            ch.expect(Msg::Start).map_err(|e| chain(&e))?;
        }
    }
    drop(fifo);
    let state = state_json(ctx, host_pid);
    hooks::run(
        "startContainer",
        hooks.and_then(|h| h.start_container().as_ref()),
        &state,
    )
    .map_err(|e| chain(&e))?;
    if let (Some(sc), true) = (&ctx.seccomp, nnp) {
        sc.install().map_err(|e| chain(&e))?;
    }
    Err(chain(&process::exec(&exec)))
}

/// Called only once the parent has put us in our cgroup, so that cgroup becomes the root
/// of the container's view.
fn unshare_cgroupns() -> Result<(), String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("unshare cgroup namespace: {e}"))
}

fn set_domainname(d: &str) -> Result<(), String> {
    // SAFETY: setdomainname reads `len` bytes from the pointer we pass.
    let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
    if r != 0 {
        return Err(format!("setdomainname {d:?}: {}", nix::Error::last()));
    }
    Ok(())
}

fn open_fifo(p: &std::path::Path) -> Result<OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Read-write so the open does not block and a read waits for `start`'s byte.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| format!("open {}: {e}", p.display()))?;
    Ok(f.into())
}

fn wait_fifo(f: &OwnedFd) -> Result<(), String> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(f, &mut b) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err("exec fifo closed before start".into()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("wait for start: {e}")),
        }
    }
}

/// The OCI state JSON handed to the hooks the init runs.
fn state_json(ctx: &InitContext, pid: i32) -> Vec<u8> {
    let annotations = ctx.spec.annotations().clone().unwrap_or_default();
    crate::state::hook_state(
        &ctx.id,
        crate::state::Status::Created,
        pid,
        &ctx.bundle,
        &annotations,
    )
}
