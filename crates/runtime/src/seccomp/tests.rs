//! Unit tests: profile interpretation, errors, and the compiled program's verdicts, checked by
//! running it in a small classic-BPF interpreter (no filter is installed here; see
//! `process_tests` for that).

use std::str::FromStr;

use libc::sock_filter;
use oci_spec::runtime::LinuxSeccomp;
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::profile::{self, Action, Matcher, Plan};
use super::program::{self, HostArch, BPF_MAXINSNS};
use super::{compile, SeccompError};

pub(super) fn host() -> HostArch {
    program::HOST.expect("tests run on a supported architecture")
}

pub(super) fn seccomp(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("test profile parses")
}

pub(super) fn nr(name: &str) -> u32 {
    let sysno = syscalls::Sysno::from_str(name).expect("syscall exists on the host");
    u32::try_from(sysno.id()).expect("syscall numbers are positive")
}

fn plan(json: &str) -> Plan {
    profile::plan(&seccomp(json), host().oci).expect("profile is valid")
}

fn invalid(json: &str) -> (String, String) {
    match compile(&seccomp(json)) {
        Err(SeccompError::Invalid { path, reason }) => (path, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn program_of(json: &str) -> Vec<sock_filter> {
    compile(&seccomp(json))
        .expect("profile compiles")
        .program
        .expect("profile installs a filter")
}

fn eq(index: u8, value: u64) -> SeccompCondition {
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
        .expect("valid condition")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("non-empty rule")
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const TRAP: u32 = libc::SECCOMP_RET_TRAP;
const LOG: u32 = libc::SECCOMP_RET_LOG;

fn errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | errno.unsigned_abs()
}

/// Run `program` on a call like the kernel would and return its verdict.
fn verdict_for(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let load = |offset: u32| -> u32 {
        match offset {
            0 => nr,
            4 => arch,
            16..=63 => {
                // Little-endian: the low word of each 8-byte argument comes first.
                let arg = args[((offset - 16) / 8) as usize];
                match (offset - 16) % 8 {
                    0 => arg as u32,
                    _ => (arg >> 32) as u32,
                }
            }
            _ => panic!("unexpected load at offset {offset}"),
        }
    };
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let insn = program[pc];
        let cond = |taken: bool| 1 + usize::from(if taken { insn.jt } else { insn.jf });
        pc += match insn.code {
            0x20 => {
                acc = load(insn.k);
                1
            }
            0x54 => {
                acc &= insn.k;
                1
            }
            0x05 => 1 + insn.k as usize,
            0x15 => cond(acc == insn.k),
            0x25 => cond(acc > insn.k),
            0x35 => cond(acc >= insn.k),
            0x45 => cond(acc & insn.k != 0),
            0x06 => return insn.k,
            code => panic!("unexpected BPF opcode {code:#x} at {pc}"),
        };
    }
}

fn verdict(program: &[sock_filter], name: &str, args: [u64; 6]) -> u32 {
    verdict_for(program, host().audit, nr(name), args)
}

const NO_ARGS: [u64; 6] = [0; 6];

// ---- interpretation of the profile -------------------------------------------------------

#[test]
fn groups_follow_first_appearance_and_skip_default_action() {
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
              {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"},
              {"names": ["dup"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}
            ]}"#,
    );
    assert_eq!(plan.default, Action::Errno(1));
    let actions: Vec<Action> = plan.groups.iter().map(|(a, _)| *a).collect();
    // ERRNO(1) equals the default (EPERM) and is dropped, like runc does.
    assert_eq!(
        actions,
        [Action::Allow, Action::KillProcess, Action::Errno(42)]
    );
    let allowed: Vec<i64> = plan.groups[0].1.keys().copied().collect();
    let mut expected = vec![i64::from(nr("getcwd")), i64::from(nr("dup"))];
    expected.sort();
    assert_eq!(allowed, expected);
    assert_eq!(plan.enosys_above, None, "no architectures listed");
}

#[test]
fn kill_means_kill_thread_and_errno_defaults_to_eperm() {
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_KILL",
            "syscalls": [
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["getpid"], "action": "SCMP_ACT_TRACE"},
              {"names": ["dup"], "action": "SCMP_ACT_KILL_THREAD"}
            ]}"#,
    );
    assert_eq!(plan.default, Action::KillThread);
    let actions: Vec<Action> = plan.groups.iter().map(|(a, _)| *a).collect();
    // KILL_THREAD equals the default and is dropped.
    assert_eq!(actions, [Action::Errno(1), Action::Trace(1)]);
}

#[test]
fn unconditional_entry_absorbs_conditional_ones() {
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
              {"names": ["personality"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
    );
    let rules = &plan.groups[0].1;
    assert_eq!(rules[&i64::from(nr("personality"))], Matcher::Always);
}

#[test]
fn conditional_entries_of_one_syscall_are_ored() {
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
              {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
    );
    let expected = Matcher::AnyOf(vec![rule(vec![eq(0, 0)]), rule(vec![eq(0, 8)])]);
    assert_eq!(plan.groups[0].1[&i64::from(nr("personality"))], expected);
}

#[test]
fn conditions_on_distinct_arguments_are_anded() {
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                       {"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    let expected = Matcher::AnyOf(vec![rule(vec![eq(0, 2), eq(1, 1)])]);
    assert_eq!(plan.groups[0].1[&i64::from(nr("socket"))], expected);
}

#[test]
fn conditions_sharing_an_argument_are_split_like_runc() {
    // runc: as soon as one argument index repeats, *every* condition becomes its own rule.
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                       {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"},
                       {"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    let expected = Matcher::AnyOf(vec![
        rule(vec![eq(0, 2)]),
        rule(vec![eq(0, 10)]),
        rule(vec![eq(1, 1)]),
    ]);
    assert_eq!(plan.groups[0].1[&i64::from(nr("socket"))], expected);
}

#[test]
fn masked_eq_with_datum_outside_mask_never_matches() {
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
               "args": [{"index": 1, "value": 1, "valueTwo": 3, "op": "SCMP_CMP_MASKED_EQ"}]},
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
               "args": [{"index": 1, "value": 15, "valueTwo": 3, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]}"#,
    );
    let rules = &plan.groups[0].1;
    assert!(!rules.contains_key(&i64::from(nr("socket"))));
    let masked = SeccompCondition::new(1, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(15), 3)
        .expect("profile compiles");
    assert_eq!(
        rules[&i64::from(nr("getcwd"))],
        Matcher::AnyOf(vec![rule(vec![masked])])
    );
}

#[test]
fn unknown_syscall_names_are_ignored() {
    let plan = plan(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["no_such_syscall", "getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["also_not_a_syscall"], "action": "SCMP_ACT_KILL"}
            ]}"#,
    );
    assert_eq!(
        plan.groups.len(),
        1,
        "no group for an entry without known syscalls"
    );
    let errno_rules: Vec<i64> = plan.groups[0].1.keys().copied().collect();
    assert_eq!(errno_rules, [i64::from(nr("getcwd"))]);
    let compiled = compile(&seccomp(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["also_not_a_syscall"], "action": "SCMP_ACT_KILL"}]}"#,
    ))
    .expect("profile compiles");
    assert!(compiled.program.is_none(), "nothing left to filter");
}

#[test]
fn enosys_stub_needs_host_arch_listed_and_strict_default() {
    let host_arch = host().oci.to_string();
    let with = |default: &str, arches: &str| {
        plan(&format!(
            r#"{{"defaultAction": "{default}", "architectures": {arches},
                "syscalls": [{{"names": ["getcwd", "exit_group", "not_a_syscall"],
                               "action": "SCMP_ACT_ALLOW"}}]}}"#
        ))
        .enosys_above
    };
    let largest = nr("getcwd").max(nr("exit_group"));
    let listed = format!(r#"["{host_arch}"]"#);
    assert_eq!(with("SCMP_ACT_ERRNO", &listed), Some(largest));
    assert_eq!(with("SCMP_ACT_KILL", &listed), Some(largest));
    assert_eq!(
        with("SCMP_ACT_ERRNO", r#"["SCMP_ARCH_NATIVE"]"#),
        Some(largest)
    );
    assert_eq!(with("SCMP_ACT_ERRNO", "[]"), None);
    assert_eq!(with("SCMP_ACT_ALLOW", &listed), None);
    assert_eq!(with("SCMP_ACT_LOG", &listed), None);
    assert_eq!(with("SCMP_ACT_TRACE", &listed), None);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        with("SCMP_ACT_ERRNO", r#"["SCMP_ARCH_X86", "SCMP_ARCH_X32"]"#),
        None
    );
}

// ---- errors -------------------------------------------------------------------------------

#[test]
fn arg_index_out_of_range_is_refused_with_its_path() {
    let (path, reason) = invalid(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
               "args": [{"index": 6, "value": 2, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
    );
    assert_eq!(path, "linux.seccomp.syscalls[2].args[0].index");
    assert!(reason.contains('6'), "{reason}");
}

#[test]
fn notify_is_refused_with_its_path() {
    let (path, reason) = invalid(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}
            ]}"#,
    );
    assert_eq!(path, "linux.seccomp.syscalls[3].action");
    assert!(
        reason.contains("SCMP_ACT_NOTIFY") && reason.contains("unsupported"),
        "{reason}"
    );

    let (path, _) = invalid(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#);
    assert_eq!(path, "linux.seccomp.defaultAction");
}

#[test]
fn empty_names_are_refused_with_its_path() {
    let err = compile(&seccomp(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
              {"names": [], "action": "SCMP_ACT_ERRNO"}
            ]}"#,
    ))
    .expect_err("empty names are refused");
    assert_eq!(err.to_string(), "linux.seccomp.syscalls[1].names: empty");

    let (path, _) = invalid(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd", ""], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(path, "linux.seccomp.syscalls[0].names[1]");
}

#[test]
fn errno_ret_needs_errno_or_trace() {
    let (path, reason) = invalid(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5}]}"#,
    );
    assert_eq!(path, "linux.seccomp.syscalls[0].errnoRet");
    assert!(
        reason.contains('5') && reason.contains("SCMP_ACT_ALLOW"),
        "{reason}"
    );

    let (path, _) = invalid(r#"{"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 1}"#);
    assert_eq!(path, "linux.seccomp.defaultErrnoRet");

    let (path, reason) = invalid(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 65537}]}"#,
    );
    assert_eq!(path, "linux.seccomp.syscalls[0].errnoRet");
    assert!(reason.contains("65537"), "{reason}");

    // Both actions that carry data accept it.
    compile(&seccomp(
        r#"{"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 7,
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}"#,
    ))
    .expect("profile compiles");
}

#[test]
fn unknown_strings_are_refused_by_serde() {
    assert!(serde_json::from_str::<LinuxSeccomp>(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#
    )
    .is_err());
    assert!(
        serde_json::from_str::<LinuxSeccomp>(r#"{"defaultAction": "SCMP_ACT_SOMETIMES"}"#).is_err()
    );
}

// ---- the compiled program -----------------------------------------------------------------

#[test]
fn allow_everything_installs_nothing() {
    let compiled = compile(&seccomp(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}]}"#,
    ))
    .expect("profile compiles");
    assert!(compiled.program.is_none());
    compiled.install().expect("nothing to install");
}

#[test]
fn default_allow_with_errno_rule() {
    let program = program_of(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(verdict(&program, "getcwd", NO_ARGS), errno(libc::EPERM));
    assert_eq!(verdict(&program, "mkdirat", NO_ARGS), errno(libc::EPERM));
    assert_eq!(verdict(&program, "getpid", NO_ARGS), ALLOW);
}

#[test]
fn allow_list_gives_default_errno_to_the_rest() {
    let program = program_of(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
            "syscalls": [
              {"names": ["getcwd", "exit_group"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
    );
    assert_eq!(verdict(&program, "getcwd", NO_ARGS), ALLOW);
    assert_eq!(verdict(&program, "getpid", NO_ARGS), errno(13));
    let query = [0xffff_ffff, 0, 0, 0, 0, 0];
    assert_eq!(verdict(&program, "personality", query), ALLOW);
    assert_eq!(verdict(&program, "personality", NO_ARGS), errno(13));
    // 64-bit comparison: upper bits matter.
    let wide = [0x1_ffff_ffff, 0, 0, 0, 0, 0];
    assert_eq!(verdict(&program, "personality", wide), errno(13));
}

#[test]
fn every_action_is_encoded() {
    let program = program_of(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["getcwd"], "action": "SCMP_ACT_KILL"},
              {"names": ["getpid"], "action": "SCMP_ACT_KILL_THREAD"},
              {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
              {"names": ["getuid"], "action": "SCMP_ACT_TRAP"},
              {"names": ["getgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42},
              {"names": ["geteuid"], "action": "SCMP_ACT_TRACE", "errnoRet": 9},
              {"names": ["getegid"], "action": "SCMP_ACT_TRACE"},
              {"names": ["gettid"], "action": "SCMP_ACT_LOG"}
            ]}"#,
    );
    assert_eq!(verdict(&program, "getcwd", NO_ARGS), KILL_THREAD);
    assert_eq!(verdict(&program, "getpid", NO_ARGS), KILL_THREAD);
    assert_eq!(verdict(&program, "getppid", NO_ARGS), KILL_PROCESS);
    assert_eq!(verdict(&program, "getuid", NO_ARGS), TRAP);
    assert_eq!(verdict(&program, "getgid", NO_ARGS), errno(42));
    assert_eq!(
        verdict(&program, "geteuid", NO_ARGS),
        libc::SECCOMP_RET_TRACE | 9
    );
    assert_eq!(
        verdict(&program, "getegid", NO_ARGS),
        libc::SECCOMP_RET_TRACE | 1
    );
    assert_eq!(verdict(&program, "gettid", NO_ARGS), LOG);
    assert_eq!(verdict(&program, "getsid", NO_ARGS), ALLOW);
}

#[test]
fn strongest_action_wins_when_rules_overlap() {
    let program = program_of(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["socket"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["socket"], "action": "SCMP_ACT_LOG",
               "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
              {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
               "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_GE"}]},
              {"names": ["socket"], "action": "SCMP_ACT_KILL_PROCESS",
               "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
    );
    let socket = |family: u64| verdict(&program, "socket", [family, 1, 0, 0, 0, 0]);
    assert_eq!(socket(0), ALLOW);
    assert_eq!(socket(1), LOG);
    assert_eq!(socket(2), errno(97));
    assert_eq!(socket(10), errno(97));
    assert_eq!(socket(40), KILL_PROCESS);
    assert_eq!(verdict(&program, "getpid", NO_ARGS), errno(libc::EPERM));
}

#[test]
fn equal_precedence_tie_goes_to_the_action_listed_first() {
    let program = program_of(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 20},
              {"names": ["getcwd", "getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30}
            ]}"#,
    );
    assert_eq!(verdict(&program, "getcwd", NO_ARGS), errno(20));
    assert_eq!(verdict(&program, "getpid", NO_ARGS), errno(30));
}

#[test]
fn argument_comparisons_are_64_bit() {
    let rule = |op: &str, value: u64| {
        program_of(&format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                  "args": [{{"index": 3, "value": {value}, "op": "{op}"}}]}}]}}"#
        ))
    };
    let big = 0x1_0000_0005u64;
    let denied = |program: &[sock_filter], arg: u64| {
        verdict(program, "getcwd", [0, 0, 0, arg, 0, 0]) == errno(libc::EPERM)
    };
    for (op, matches) in [
        ("SCMP_CMP_EQ", [false, true, false]),
        ("SCMP_CMP_NE", [true, false, true]),
        ("SCMP_CMP_LT", [true, false, false]),
        ("SCMP_CMP_LE", [true, true, false]),
        ("SCMP_CMP_GT", [false, false, true]),
        ("SCMP_CMP_GE", [false, true, true]),
    ] {
        let program = rule(op, big);
        // Same low word as `big`, one below it, one above it in the high word.
        let got = [5, big, 0x2_0000_0000].map(|arg| denied(&program, arg));
        let expected = [matches[0], matches[1], matches[2]];
        assert_eq!(got, expected, "{op}");
    }
}

#[test]
fn masked_eq_uses_value_as_mask_and_value_two_as_datum() {
    let program = program_of(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 1, "value": 524288, "valueTwo": 524288,
                        "op": "SCMP_CMP_MASKED_EQ"}]}]}"#,
    );
    let socket = |ty: u64| verdict(&program, "socket", [1, ty, 0, 0, 0, 0]);
    assert_eq!(socket(1 | 0x80000), errno(libc::EPERM));
    assert_eq!(socket(1), ALLOW);
}

#[test]
fn calls_of_other_abis_are_killed() {
    let program = program_of(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    // AUDIT_ARCH_I386 / AUDIT_ARCH_ARM: another ABI of the same machine.
    for foreign in [0x4000_0003, 0x4000_0028] {
        assert_eq!(
            verdict_for(&program, foreign, nr("getpid"), NO_ARGS),
            KILL_PROCESS
        );
    }
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        verdict_for(&program, host().audit, 0x4000_0000 | nr("getcwd"), NO_ARGS),
        KILL_PROCESS,
        "x32 call"
    );
}

#[test]
fn enosys_stub_answers_for_syscalls_newer_than_the_profile() {
    let program = program_of(&format!(
        r#"{{"defaultAction": "SCMP_ACT_KILL_PROCESS", "architectures": ["{}"],
            "syscalls": [{{"names": ["getcwd", "exit_group"], "action": "SCMP_ACT_ALLOW"}}]}}"#,
        host().oci
    ));
    let largest = nr("getcwd").max(nr("exit_group"));
    let call = |nr: u32| verdict_for(&program, host().audit, nr, NO_ARGS);
    assert_eq!(call(largest + 1), errno(libc::ENOSYS));
    assert_eq!(call(10_000), errno(libc::ENOSYS));
    assert_eq!(call(largest), ALLOW);
    assert_eq!(call(nr("dup")), KILL_PROCESS);
}

#[test]
fn docker_shaped_profile_compiles() {
    let program = program_of(&docker_shaped_profile());
    assert!(program.len() < BPF_MAXINSNS);
    assert_eq!(verdict(&program, "getpid", NO_ARGS), ALLOW);
    assert_eq!(verdict(&program, "clone3", NO_ARGS), errno(libc::ENOSYS));
    assert_eq!(verdict(&program, "unshare", NO_ARGS), errno(libc::EPERM));
    let clone_thread = 0x0005_0f00; // CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM
    assert_eq!(
        verdict(&program, "clone", [clone_thread, 0, 0, 0, 0, 0]),
        ALLOW
    );
    let clone_newns = 0x0002_0000;
    assert_eq!(
        verdict(&program, "clone", [clone_newns, 0, 0, 0, 0, 0]),
        errno(libc::EPERM)
    );
    assert_eq!(
        verdict(&program, "socket", [40, 1, 0, 0, 0, 0]),
        errno(libc::EPERM)
    );
    assert_eq!(verdict(&program, "socket", [2, 1, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn allow_list_of_the_whole_syscall_table_fits() {
    let names: Vec<String> = syscalls::Sysno::iter()
        .map(|s| format!("\"{}\"", s.name()))
        .collect();
    let program = program_of(&format!(
        r#"{{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["{}"],
            "syscalls": [{{"names": [{}], "action": "SCMP_ACT_ALLOW"}}]}}"#,
        host().oci,
        names.join(",")
    ));
    assert!(program.len() <= BPF_MAXINSNS);
    assert_eq!(verdict(&program, "getpid", NO_ARGS), ALLOW);
}

#[test]
fn oversized_profile_is_refused() {
    let args: Vec<String> = (0..600)
        .map(|v| format!(r#"{{"index": 0, "value": {v}, "op": "SCMP_CMP_EQ"}}"#))
        .collect();
    let (path, reason) = invalid(&format!(
        r#"{{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                           "args": [{}]}}]}}"#,
        args.join(",")
    ));
    assert_eq!(path, "linux.seccomp");
    assert!(reason.contains("4096"), "{reason}");
}

#[test]
fn explicit_flags_are_checked_against_the_kernel() {
    let compiled = compile(&seccomp(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC",
                      "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}"#,
    ))
    .expect("profile compiles");
    // LOG since 4.14 and TSYNC since 3.17: any kernel we run on has them.
    assert_eq!(
        compiled.flags,
        libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_TSYNC
    );
    let empty = compile(&seccomp(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": [],
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}"#,
    ))
    .expect("profile compiles");
    assert_eq!(
        empty.flags, 0,
        "an explicit empty list disables runc's default"
    );
}

/// The shape of Docker's / containerd's default profile as it reaches the runtime: default
/// ERRNO, a long allow-list, argument-filtered entries, clone3 → ENOSYS, three x86 ABIs.
pub(super) fn docker_shaped_profile() -> String {
    let allowed = [
        "accept",
        "accept4",
        "access",
        "alarm",
        "bind",
        "brk",
        "capget",
        "capset",
        "chdir",
        "chmod",
        "chown",
        "clock_getres",
        "clock_gettime",
        "clock_nanosleep",
        "close",
        "close_range",
        "connect",
        "copy_file_range",
        "dup",
        "dup2",
        "dup3",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_pwait",
        "epoll_wait",
        "eventfd2",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fallocate",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchown",
        "fchownat",
        "fcntl",
        "fdatasync",
        "flock",
        "fork",
        "fstat",
        "fstatfs",
        "fsync",
        "ftruncate",
        "futex",
        "getcwd",
        "getdents64",
        "getegid",
        "geteuid",
        "getgid",
        "getgroups",
        "getpeername",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getrandom",
        "getresgid",
        "getresuid",
        "getrlimit",
        "getrusage",
        "getsid",
        "getsockname",
        "getsockopt",
        "gettid",
        "gettimeofday",
        "getuid",
        "getxattr",
        "inotify_add_watch",
        "inotify_init1",
        "ioctl",
        "kill",
        "lseek",
        "lstat",
        "madvise",
        "memfd_create",
        "mkdir",
        "mkdirat",
        "mmap",
        "mprotect",
        "mremap",
        "munmap",
        "nanosleep",
        "newfstatat",
        "open",
        "openat",
        "openat2",
        "pipe",
        "pipe2",
        "poll",
        "ppoll",
        "prctl",
        "pread64",
        "prlimit64",
        "pselect6",
        "pwrite64",
        "read",
        "readlink",
        "readlinkat",
        "readv",
        "recvfrom",
        "recvmsg",
        "rename",
        "renameat2",
        "rmdir",
        "rseq",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "sched_getaffinity",
        "sched_yield",
        "seccomp",
        "select",
        "sendmsg",
        "sendto",
        "set_robust_list",
        "set_tid_address",
        "setgid",
        "setgroups",
        "setsockopt",
        "setuid",
        "shutdown",
        "sigaltstack",
        "socketpair",
        "stat",
        "statfs",
        "statx",
        "symlinkat",
        "sysinfo",
        "tgkill",
        "umask",
        "uname",
        "unlink",
        "unlinkat",
        "utimensat",
        "vfork",
        "wait4",
        "waitid",
        "write",
        "writev",
        "arch_prctl",
        "modify_ldt",
    ];
    let names: Vec<String> = allowed.iter().map(|n| format!("\"{n}\"")).collect();
    let personality: Vec<String> = [0u64, 8, 131072, 131080, 4294967295]
        .iter()
        .map(|v| {
            format!(
                r#"{{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                    "args": [{{"index": 0, "value": {v}, "op": "SCMP_CMP_EQ"}}]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
              {{"names": [{names}], "action": "SCMP_ACT_ALLOW"}},
              {personality},
              {{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                "args": [{{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}}]}},
              {{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [{{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}}]}},
              {{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}}
            ]}}"#,
        names = names.join(","),
        personality = personality.join(",")
    )
}
