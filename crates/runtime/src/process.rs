//! Turning the current (forked) process into the container's process: rlimits, identity,
//! capabilities, no_new_privs, environment, and finally execve.
//!
//! Contract: called in the container's init (and in `exec`'d processes) after their
//! namespaces and rootfs are in place; the order of operations follows what the kernel
//! allows — bounding set and rlimits while still privileged, then the uid/gid switch
//! with capabilities kept, then the exact capability sets, then ambient ones.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exec: {name:?}: executable file not found in $PATH")]
    NotFound { name: String },
    #[error("exec: {path:?}: {reason}")]
    NotExecutable { path: PathBuf, reason: String },
    #[error("{0} contains a NUL byte")]
    Nul(String),
}

fn sys(what: impl Into<String>, source: nix::Error) -> ProcessError {
    ProcessError::Sys {
        what: what.into(),
        source,
    }
}

pub fn set_rlimits(process: &Process) -> Result<(), ProcessError> {
    for rl in process.rlimits().iter().flatten() {
        let res = rlimit_resource(rl.typ());
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit only reads the struct we pass by reference.
        let r = unsafe { libc::setrlimit(res, &lim) };
        if r != 0 {
            return Err(sys(
                format!(
                    "setrlimit {:?} soft={} hard={}",
                    rl.typ(),
                    rl.soft(),
                    rl.hard()
                ),
                nix::Error::last(),
            ));
        }
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

pub fn set_oom_score_adj(process: &Process) -> Result<(), ProcessError> {
    if let Some(adj) = process.oom_score_adj() {
        let p = Path::new("/proc/self/oom_score_adj");
        std::fs::write(p, adj.to_string()).map_err(|source| ProcessError::Io {
            what: "write",
            path: p.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Capability numbers of an OCI set, leaving out those this kernel does not know.
fn cap_numbers(set: Option<&Capabilities>, last: u32) -> HashSet<u32> {
    let mut out = HashSet::new();
    for c in set.into_iter().flatten() {
        let name = format!("CAP_{c}");
        match name.parse::<caps::Capability>() {
            Ok(cap) if u32::from(cap.index()) <= last => {
                out.insert(u32::from(cap.index()));
            }
            _ => tracing::warn!("capability {name} is not supported by this kernel; ignoring it"),
        }
    }
    out
}

fn mask(set: &HashSet<u32>) -> [u32; 2] {
    let mut m = [0u32; 2];
    for &c in set {
        m[(c / 32) as usize] |= 1 << (c % 32);
    }
    m
}

/// Switch to the process's uid/gid and capability sets. `setgroups_allowed` is false in a
/// user namespace whose setgroups is denied.
pub fn set_identity(process: &Process, setgroups_allowed: bool) -> Result<(), ProcessError> {
    let last = last_cap();
    let caps = process.capabilities().as_ref();
    let bounding = cap_numbers(caps.and_then(|c| c.bounding().as_ref()), last);
    let effective = cap_numbers(caps.and_then(|c| c.effective().as_ref()), last);
    let permitted = cap_numbers(caps.and_then(|c| c.permitted().as_ref()), last);
    let inheritable = cap_numbers(caps.and_then(|c| c.inheritable().as_ref()), last);
    let ambient = cap_numbers(caps.and_then(|c| c.ambient().as_ref()), last);

    prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(|e| sys("prctl(PR_SET_KEEPCAPS)", e))?;
    for cap in 0..=last {
        if !bounding.contains(&cap) {
            match prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
                Ok(()) | Err(nix::Error::EINVAL) => {}
                Err(e) => {
                    return Err(sys(
                        format!("drop capability {cap} from the bounding set"),
                        e,
                    ))
                }
            }
        }
    }
    let user = process.user();
    if setgroups_allowed {
        let gids: Vec<nix::unistd::Gid> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&gids).map_err(|e| sys("setgroups", e))?;
    }
    let gid = nix::unistd::Gid::from_raw(user.gid());
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| sys(format!("setresgid {gid}"), e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| sys(format!("setresuid {uid}"), e))?;
    prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(|e| sys("prctl(PR_SET_KEEPCAPS)", e))?;

    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let (e, p, i) = (mask(&effective), mask(&permitted), mask(&inheritable));
    let data = [
        CapData {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        CapData {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: header and data are valid, correctly sized v3 capability structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if r != 0 {
        return Err(sys(
            "capset (is every effective capability also permitted?)",
            nix::Error::last(),
        ));
    }
    let mut amb: Vec<u32> = ambient.into_iter().collect();
    amb.sort_unstable();
    for cap in amb {
        if let Err(e) = prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            cap as libc::c_ulong,
        ) {
            // Like runc: an ambient capability that is not also permitted and inheritable
            // cannot be raised; that is a config choice, not a failure.
            tracing::debug!("cannot raise ambient capability {cap}: {e}");
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, arg2: libc::c_ulong) -> Result<(), nix::Error> {
    // SAFETY: the prctl options used here take integer arguments only.
    let r = unsafe { libc::prctl(option, arg, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        Err(nix::Error::last())
    } else {
        Ok(())
    }
}

pub fn set_no_new_privs() -> Result<(), ProcessError> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(|e| sys("prctl(PR_SET_NO_NEW_PRIVS)", e))
}

/// The environment for execve: the process's env plus HOME when it is missing.
pub fn environment(process: &Process) -> Vec<String> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

/// The home directory of `uid` in the container's /etc/passwd.
fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
    })
}

/// Find the program to run the way execvp would, using PATH from `env`.
pub fn resolve_program(name: &str, env: &[String]) -> Result<PathBuf, ProcessError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        check_executable(&p)?;
        return Ok(p);
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        if check_executable(&cand).is_ok() {
            return Ok(cand);
        }
    }
    Err(ProcessError::NotFound {
        name: name.to_string(),
    })
}

fn check_executable(p: &Path) -> Result<(), ProcessError> {
    let m = std::fs::metadata(p).map_err(|e| ProcessError::NotExecutable {
        path: p.to_path_buf(),
        reason: e.to_string(),
    })?;
    if m.is_dir() {
        return Err(ProcessError::NotExecutable {
            path: p.to_path_buf(),
            reason: "is a directory".into(),
        });
    }
    if m.permissions().mode() & 0o111 == 0 {
        return Err(ProcessError::NotExecutable {
            path: p.to_path_buf(),
            reason: "permission denied (not executable)".into(),
        });
    }
    Ok(())
}

fn cstrings(v: &[String], what: &str) -> Result<Vec<CString>, ProcessError> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul(format!("{what} {s:?}"))))
        .collect()
}

/// Prepared execve arguments, built before the last privilege drop so exec itself does
/// no lookups.
#[derive(Debug)]
pub struct ExecArgs {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

pub fn prepare_exec(process: &Process) -> Result<ExecArgs, ProcessError> {
    let args = process.args().clone().unwrap_or_default();
    let env = environment(process);
    let prog = resolve_program(args.first().map(String::as_str).unwrap_or(""), &env)?;
    Ok(ExecArgs {
        path: CString::new(prog.as_os_str().as_bytes())
            .map_err(|_| ProcessError::Nul(format!("program {}", prog.display())))?,
        argv: cstrings(&args, "argument")?,
        envp: cstrings(&env, "environment entry")?,
    })
}

/// Replace this process; returns only on failure.
pub fn exec(args: &ExecArgs) -> ProcessError {
    match nix::unistd::execve(&args.path, &args.argv, &args.envp) {
        Err(e) => sys(format!("exec {:?}", args.path), e),
        Ok(never) => match never {},
    }
}

/// Reset signal dispositions and unblock everything (the parent may have blocked signals
/// for its signalfd).
pub fn reset_signals() {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // Ignored dispositions survive execve: whatever our caller ignored (nohup, a shell's
    // trap '' TERM) must not stay ignored in the container.
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring default dispositions in a single-threaded process; invalid
        // numbers (reserved by libc) just fail with EINVAL.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Mark every descriptor above stderr close-on-exec, so nothing the runtime's caller left
/// open (a directory fd would let the container escape its rootfs) reaches the container.
/// Descriptors the runtime still needs stay usable until the exec.
pub fn cloexec_inherited_fds() -> Result<(), ProcessError> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let dir = Path::new("/proc/self/fd");
    let entries = std::fs::read_dir(dir).map_err(|source| ProcessError::Io {
        what: "list",
        path: dir.to_path_buf(),
        source,
    })?;
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on a descriptor number; a stale one fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let p = resolve_program("sh", &env).unwrap();
        assert!(p.ends_with("sh"));
        assert!(matches!(
            resolve_program("definitely-not-a-program", &env),
            Err(ProcessError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program("/etc/passwd", &env),
            Err(ProcessError::NotExecutable { .. })
        ));
    }

    #[test]
    fn cap_masks() {
        let set: HashSet<u32> = [0, 21, 33, 40].into_iter().collect();
        assert_eq!(mask(&set), [1 | (1 << 21), (1 << 1) | (1 << 8)]);
    }
}
