//! Process tests: install a compiled profile in a forked child and look at what the kernel
//! does to a syscall.
//!
//! The test binary is multi-threaded, so the child only does async-signal-safe things: the
//! profile is compiled before fork, and the child makes raw syscalls and `_exit`s with a code
//! that encodes the result (0 for success, otherwise the errno).

use super::tests::{docker_shaped_profile, host, nr, seccomp};
use super::{compile, CompiledSeccomp};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exited(i32),
    Signaled(i32),
}

const OK: Outcome = Outcome::Exited(0);
const INSTALL_FAILED: i32 = 250;

fn failed(errno: i32) -> Outcome {
    Outcome::Exited(errno)
}

fn compiled(json: &str) -> CompiledSeccomp {
    compile(&seccomp(json)).expect("profile compiles")
}

/// Fork, install `profile` in the child, run `probe` there and report how the child ended.
fn run(profile: &CompiledSeccomp, probe: fn() -> i32) -> Outcome {
    // SAFETY: the child only makes raw syscalls (prctl, setrlimit, seccomp, the probe's) and
    // `_exit`s; it touches no lock another thread of the test binary might hold.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on this (child) process; no_new_privs lets the test install
        // a filter without CAP_SYS_ADMIN, and no core dump is wanted from SIGSYS deaths.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        }
        let code = match profile.install() {
            Ok(()) => probe(),
            Err(_) => INSTALL_FAILED,
        };
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::EINTR), "waitpid: {err}");
    }
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        assert_ne!(
            code, INSTALL_FAILED,
            "installing the filter failed in the child"
        );
        Outcome::Exited(code)
    } else if libc::WIFSIGNALED(status) {
        Outcome::Signaled(libc::WTERMSIG(status))
    } else {
        panic!("unexpected wait status {status:#x}")
    }
}

/// Exit code for a raw syscall result: 0 on success, else errno.
fn code(rc: libc::c_long) -> i32 {
    if rc >= 0 {
        0
    } else {
        // SAFETY: reads this thread's errno.
        unsafe { *libc::__errno_location() }
    }
}

fn getcwd() -> i32 {
    let mut buf = [0u8; 256];
    // SAFETY: getcwd writes at most `buf.len()` bytes into `buf`.
    code(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })
}

fn getpid() -> i32 {
    // SAFETY: no arguments, no memory.
    code(unsafe { libc::syscall(libc::SYS_getpid) })
}

fn socket(family: libc::c_int, ty: libc::c_int) -> i32 {
    // Arguments widened explicitly: the filter compares all 64 bits of each register.
    let (family, ty) = (libc::c_long::from(family), libc::c_long::from(ty));
    // SAFETY: no memory; the fd (if any) dies with the child.
    code(unsafe { libc::syscall(libc::SYS_socket, family, ty, 0 as libc::c_long) })
}

const SIGSYS: Outcome = Outcome::Signaled(libc::SIGSYS);

#[test]
fn errno_rule_returns_eperm() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(run(&profile, getcwd), failed(libc::EPERM));
    assert_eq!(run(&profile, getpid), OK);
}

#[test]
fn custom_errno_ret_is_returned() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}"#,
    );
    assert_eq!(run(&profile, getcwd), failed(42));
}

#[test]
fn allow_list_denies_unlisted_syscalls() {
    // Neither seccomp nor prctl is listed: installing must not need them.
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
            "syscalls": [
              {"names": ["exit_group", "exit", "getpid"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}
            ]}"#,
    );
    assert_eq!(run(&profile, getpid), OK);
    assert_eq!(run(&profile, getcwd), failed(13));
    assert_eq!(
        run(&profile, || socket(libc::AF_UNIX, libc::SOCK_STREAM)),
        failed(42)
    );
}

#[test]
fn argument_condition_denies_only_af_inet() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    assert_eq!(
        run(&profile, || socket(libc::AF_INET, libc::SOCK_STREAM)),
        failed(libc::EPERM)
    );
    assert_eq!(
        run(&profile, || socket(libc::AF_UNIX, libc::SOCK_STREAM)),
        OK
    );
}

#[test]
fn conditions_on_one_argument_are_ored() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                       {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    assert_eq!(
        run(&profile, || socket(libc::AF_INET, libc::SOCK_DGRAM)),
        failed(libc::EPERM)
    );
    assert_eq!(
        run(&profile, || socket(libc::AF_INET6, libc::SOCK_DGRAM)),
        failed(libc::EPERM)
    );
    assert_eq!(
        run(&profile, || socket(libc::AF_UNIX, libc::SOCK_DGRAM)),
        OK
    );
}

#[test]
fn masked_eq_condition() {
    // Deny sockets created with SOCK_CLOEXEC: (type & SOCK_CLOEXEC) == SOCK_CLOEXEC.
    let profile = compiled(&format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
              "args": [{{"index": 1, "value": {c}, "valueTwo": {c},
                         "op": "SCMP_CMP_MASKED_EQ"}}]}}]}}"#,
        c = libc::SOCK_CLOEXEC
    ));
    assert_eq!(
        run(&profile, || socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC
        )),
        failed(libc::EPERM)
    );
    assert_eq!(
        run(&profile, || socket(libc::AF_UNIX, libc::SOCK_STREAM)),
        OK
    );
}

#[test]
fn kill_actions_end_the_child_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL",
    ] {
        let profile = compiled(&format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{{"names": ["getcwd"], "action": "{action}"}}]}}"#
        ));
        assert_eq!(run(&profile, getcwd), SIGSYS, "{action}");
        assert_eq!(run(&profile, getpid), OK, "{action}");
    }
}

#[test]
fn trap_raises_sigsys() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_TRAP"}]}"#,
    );
    assert_eq!(run(&profile, getcwd), SIGSYS);
}

#[test]
fn trace_without_tracer_fails_with_enosys() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_TRACE", "errnoRet": 5}]}"#,
    );
    assert_eq!(run(&profile, getcwd), failed(libc::ENOSYS));
}

#[test]
fn log_action_allows_the_call() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["exit_group", "exit"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["getcwd"], "action": "SCMP_ACT_LOG"}
            ]}"#,
    );
    assert_eq!(run(&profile, getcwd), OK);
}

#[test]
fn unknown_syscall_name_is_ignored() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["no_such_syscall", "getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["another_one"], "action": "SCMP_ACT_KILL_PROCESS"}
            ]}"#,
    );
    assert_eq!(run(&profile, getcwd), failed(libc::EPERM));
    assert_eq!(run(&profile, getpid), OK);
}

#[test]
fn syscalls_newer_than_the_profile_get_enosys() {
    let profile = |arches: &str| {
        compiled(&format!(
            r#"{{"defaultAction": "SCMP_ACT_ERRNO", "architectures": {arches},
                "syscalls": [{{"names": ["exit_group", "exit", "getcwd"],
                               "action": "SCMP_ACT_ALLOW"}}]}}"#
        ))
    };
    // exit_group is the largest of the three on every supported architecture; dup is
    // smaller. Neither probe is allowed, so neither syscall actually runs.
    assert!(nr("exit_group") > nr("getcwd") && nr("exit_group") > nr("dup"));
    fn newer() -> i32 {
        let above = libc::c_long::from(syscalls::Sysno::exit_group.id()) + 1;
        // SAFETY: the filter refuses this call before the kernel runs it.
        code(unsafe { libc::syscall(above, 0, 0, 0) })
    }
    fn older() -> i32 {
        // SAFETY: refused by the filter; had it run, dup(-1) only fails with EBADF.
        code(unsafe { libc::syscall(libc::SYS_dup, -1 as libc::c_long) })
    }
    let listed = profile(&format!(r#"["{}"]"#, host().oci));
    assert_eq!(run(&listed, newer), failed(libc::ENOSYS));
    assert_eq!(run(&listed, older), failed(libc::EPERM));
    assert_eq!(run(&listed, getcwd), OK);

    let unlisted = profile("[]");
    assert_eq!(run(&unlisted, newer), failed(libc::EPERM));
}

#[test]
#[cfg(target_arch = "x86_64")]
fn x32_calls_are_killed() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    fn x32_getcwd() -> i32 {
        let mut buf = [0u8; 256];
        // SAFETY: the filter kills the process before the kernel looks at the call.
        code(unsafe { libc::syscall(0x4000_0000 | libc::SYS_getcwd, buf.as_mut_ptr(), 256) })
    }
    assert_eq!(run(&profile, x32_getcwd), SIGSYS);
}

#[test]
fn flags_are_accepted_by_the_kernel() {
    let profile = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(run(&profile, getcwd), failed(libc::EPERM));
}

#[test]
#[cfg(target_arch = "x86_64")]
fn docker_shaped_profile_runs() {
    let profile = compiled(&docker_shaped_profile());
    assert_eq!(run(&profile, getpid), OK);
    assert_eq!(
        run(&profile, || socket(libc::AF_UNIX, libc::SOCK_STREAM)),
        OK
    );
    assert_eq!(
        run(&profile, || socket(libc::AF_VSOCK, libc::SOCK_STREAM)),
        failed(libc::EPERM)
    );
    fn clone3() -> i32 {
        // SAFETY: refused by the filter; had it run, a NULL/0 clone_args fails with EINVAL.
        code(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) })
    }
    fn unshare_nothing() -> i32 {
        // SAFETY: refused by the filter; had it run, unshare(0) changes nothing.
        code(unsafe { libc::syscall(libc::SYS_unshare, 0) })
    }
    fn set_personality() -> i32 {
        // SAFETY: refused by the filter; had it run, it only affects this child.
        code(unsafe { libc::syscall(libc::SYS_personality, 0x0040000 as libc::c_long) })
    }
    fn query_personality() -> i32 {
        // SAFETY: 0xffffffff only queries the persona.
        code(unsafe { libc::syscall(libc::SYS_personality, libc::c_long::from(u32::MAX)) })
    }
    assert_eq!(run(&profile, clone3), failed(libc::ENOSYS));
    assert_eq!(run(&profile, unshare_nothing), failed(libc::EPERM));
    assert_eq!(run(&profile, set_personality), failed(libc::EPERM));
    assert_eq!(run(&profile, query_personality), OK);
}
