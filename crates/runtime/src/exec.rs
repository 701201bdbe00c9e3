//! `exec`: run another process in a running container's namespaces and cgroup.
//!
//! ```text
//! skiff runtime exec ──fork──▶ E1: setns(user, ipc, uts, net, pid, cgroup, mnt) ──fork──▶ E2
//! ```
//! E2 is inside the container's pid namespace (setns of a pid namespace only applies to
//! children). E1 reports E2's pid and exits; we are a child subreaper, so E2 becomes our
//! child and a foreground exec can wait for its exit status.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::container::{write_pid_file, Runtime};
use crate::error::chain;
use crate::error::RuntimeError;
use crate::foreground;
use crate::init::ns_flag;
use crate::process;
use crate::seccomp::CompiledSeccomp;
use crate::spec;
use crate::state::Status;
use crate::sync::{self, Channel, Msg};
use crate::tty;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

/// Namespace file names under /proc/PID/ns, in the order we join them: the user
/// namespace first (it grants the rights for the rest), the mount namespace last (it
/// changes how paths resolve).
const JOIN_ORDER: &[(LinuxNamespaceType, &str)] = &[
    (LinuxNamespaceType::User, "user"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Mount, "mnt"),
];

impl Runtime {
    /// Run `process` in container `id`. Returns the exit status for a foreground exec,
    /// 0 for a detached one.
    pub fn exec(&self, id: &str, process: &Process, o: &ExecOptions) -> Result<i32, RuntimeError> {
        spec::validate_process(process, "process")?;
        let rec = self.load(id)?;
        let st = self.state(id)?;
        if st.status == Status::Stopped {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status: st.status,
                action: "cannot exec in a stopped container".into(),
            });
        }
        let bundle = spec::load_bundle(&rec.bundle)?;
        let terminal = process.terminal() == Some(true);
        if terminal && o.detach && o.console_socket.is_none() {
            return Err(RuntimeError::Usage(
                "cannot allocate a tty for a detached exec without --console-socket".into(),
            ));
        }
        let namespaces = bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let mut join: Vec<(CloneFlags, OwnedFd)> = Vec::new();
        for (t, name) in JOIN_ORDER {
            if namespaces.iter().any(|n| n.typ() == *t) {
                let p = format!("/proc/{}/ns/{name}", rec.pid);
                let f = std::fs::File::open(&p)
                    .map_err(|e| RuntimeError::io(format!("open {p}"), e))?;
                join.push((ns_flag(*t), f.into()));
            }
        }
        let cg = crate::cgroups::open_from(
            &rec.cgroup_root,
            &rec.cgroups_path,
            rec.cgroup_origin.as_deref(),
        )?;
        let blocked = if o.detach {
            None
        } else {
            Some(foreground::block_signals()?)
        };
        if !o.detach {
            // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        }
        let result = self.exec_inner(
            id,
            process,
            o,
            &join,
            cg.as_ref(),
            bundle.seccomp.as_ref(),
            terminal,
            blocked.as_ref(),
        );
        if let Some(b) = &blocked {
            foreground::restore_signals(b);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_inner(
        &self,
        id: &str,
        process: &Process,
        o: &ExecOptions,
        join: &[(CloneFlags, OwnedFd)],
        cg: &dyn crate::cgroups::CgroupManager,
        seccomp: Option<&CompiledSeccomp>,
        terminal: bool,
        blocked: Option<&foreground::Blocked>,
    ) -> Result<i32, RuntimeError> {
        let (parent_ch, child_ch) = sync::pair().map_err(|source| RuntimeError::Setup {
            id: id.into(),
            source,
        })?;
        let setup_err = |source| RuntimeError::Setup {
            id: id.into(),
            source,
        };
        // E1 is created straight in the container's cgroup where the kernel can (cgroup2),
        // else it moves itself in (see CgroupManager::join_self).
        let target = cg.clone_target();
        let e1 = match crate::monitor::clone_into(CloneFlags::empty(), target.as_deref())? {
            crate::monitor::Cloned::Child { in_cgroup } => {
                drop(parent_ch);
                exec_child(
                    process,
                    join,
                    (!in_cgroup).then_some(cg),
                    seccomp,
                    terminal,
                    &child_ch,
                )
            }
            crate::monitor::Cloned::Parent(pid) => pid,
        };
        drop(child_ch);
        let pid = match parent_ch.expect(Msg::Pid) {
            Ok((payload, _)) => {
                let _ = waitpid(e1, None);
                std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.parse::<i32>().ok())
                    .unwrap_or(0)
            }
            Err(e) => {
                let _ = waitpid(e1, None);
                return Err(setup_err(e));
            }
        };
        let pid = Pid::from_raw(pid);
        let fail = |e: RuntimeError| {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            if blocked.is_some() {
                let _ = waitpid(pid, None);
            }
            e
        };
        parent_ch.send(Msg::Go).map_err(|e| fail(setup_err(e)))?;
        let master = if terminal {
            parent_ch.expect(Msg::Fd).map_err(|e| fail(setup_err(e)))?.1
        } else {
            None
        };
        parent_ch
            .expect(Msg::Ready)
            .map_err(|e| fail(setup_err(e)))?;
        if let Some(pf) = &o.pid_file {
            write_pid_file(pf, pid.as_raw()).map_err(fail)?;
        }
        if let (Some(sock), Some(m)) = (&o.console_socket, &master) {
            tty::send_to_console_socket(sock, m).map_err(|e| fail(e.into()))?;
        }
        parent_ch.send(Msg::Start).map_err(|e| fail(setup_err(e)))?;
        match parent_ch.recv() {
            Ok(None) => {}
            Ok(Some((Msg::Error, msg, _))) => {
                return Err(fail(setup_err(sync::SyncError::Child(
                    String::from_utf8_lossy(&msg).into_owned(),
                ))))
            }
            Ok(Some(_)) | Err(_) => {
                return Err(fail(RuntimeError::Usage(format!(
                    "container {id}: exec handshake failed"
                ))))
            }
        }
        match blocked {
            None => Ok(0),
            Some(b) => {
                let master = if o.console_socket.is_some() {
                    None
                } else {
                    master
                };
                Ok(foreground::wait(pid, b, master.as_ref())?.0)
            }
        }
    }
}

/// E1: join the namespaces, fork E2, report its pid. Never returns.
fn exec_child(
    process: &Process,
    join: &[(CloneFlags, OwnedFd)],
    join_cgroup: Option<&dyn crate::cgroups::CgroupManager>,
    seccomp: Option<&CompiledSeccomp>,
    terminal: bool,
    ch: &Channel,
) -> ! {
    let r = (|| -> Result<Pid, String> {
        // Join the cgroup ourselves while the host's cgroupfs is still in view and our
        // credentials are the host's (before setns); E2 inherits it.
        if let Some(cg) = join_cgroup {
            cg.join_self().map_err(|e| chain(&e))?;
        }
        for (flag, fd) in join {
            nix::sched::setns(fd, *flag).map_err(|e| format!("join {flag:?} namespace: {e}"))?;
            if *flag == CloneFlags::CLONE_NEWUSER {
                nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                    .map_err(|e| format!("setresgid: {e}"))?;
                nix::unistd::setresuid(0.into(), 0.into(), 0.into())
                    .map_err(|e| format!("setresuid: {e}"))?;
            }
        }
        // SAFETY: still single-threaded.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                let code = match exec_process(process, seccomp, terminal, ch) {
                    Ok(never) => match never {},
                    Err(msg) => {
                        ch.send_error(&msg);
                        1
                    }
                };
                // SAFETY: leave without the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Ok(child),
        }
    })();
    match r {
        Ok(pid) => {
            let _ = ch.send_payload(Msg::Pid, pid.as_raw().to_string().as_bytes());
        }
        Err(msg) => ch.send_error(&msg),
    }
    // SAFETY: leave without the parent's destructors.
    unsafe { libc::_exit(0) }
}

/// E2: become the requested process.
fn exec_process(
    process: &Process,
    seccomp: Option<&CompiledSeccomp>,
    terminal: bool,
    ch: &Channel,
) -> Result<std::convert::Infallible, String> {
    process::reset_signals();
    process::cloexec_inherited_fds().map_err(|e| chain(&e))?;
    ch.expect(Msg::Go).map_err(|e| chain(&e))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if terminal {
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        let pty = tty::open_pty(size).map_err(|e| chain(&e))?;
        ch.send_fd(pty.master.as_raw_fd()).map_err(|e| chain(&e))?;
        drop(pty.master);
        tty::attach_slave(&pty.slave_path).map_err(|e| chain(&e))?;
    }
    let cwd_ok = nix::unistd::chdir(process.cwd()).is_ok();
    process::set_rlimits(process).map_err(|e| chain(&e))?;
    process::set_oom_score_adj(process).map_err(|e| chain(&e))?;
    if let Some(mask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let nnp = process.no_new_privileges() == Some(true);
    if let (Some(sc), false) = (seccomp, nnp) {
        sc.install().map_err(|e| chain(&e))?;
    }
    process::set_identity(process, true).map_err(|e| chain(&e))?;
    if !cwd_ok {
        nix::unistd::chdir(process.cwd())
            .map_err(|e| format!("chdir to cwd {:?}: {e}", process.cwd()))?;
    }
    if nnp {
        process::set_no_new_privs().map_err(|e| chain(&e))?;
    }
    let exec = process::prepare_exec(process).map_err(|e| chain(&e))?;
    ch.send(Msg::Ready).map_err(|e| chain(&e))?;
    ch.expect(Msg::Start).map_err(|e| chain(&e))?;
    if let (Some(sc), true) = (seccomp, nnp) {
        sc.install().map_err(|e| chain(&e))?;
    }
    Err(chain(&process::exec(&exec)))
}
