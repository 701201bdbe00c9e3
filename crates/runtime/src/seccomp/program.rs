//! From a [`Plan`] to one classic-BPF program for the host architecture.
//!
//! seccompiler builds a filter with a single match action and a single mismatch action, so
//! each action of the plan becomes one seccompiler filter ("segment"):
//!
//! * per non-ALLOW rule action A: calls matching a rule with action A → A, others → ALLOW;
//! * for the default action D (unless it is ALLOW): calls matching *any* rule → ALLOW,
//!   others → D.
//!
//! The segments are then linked into one program, strongest action first and the default
//! segment last, by turning every `RET ALLOW` of a segment but the last into a jump to the
//! next segment. The first segment that does not allow the call decides.
//!
//! Why this equals libseccomp's single filter: let S be the set of actions of the rules a call
//! matches. If S is empty, every rule segment allows it and the default segment returns D. If
//! S = {ALLOW}, every segment allows it. Otherwise the first rule segment whose action is in S
//! decides, and segments are ordered by kernel precedence (KILL_PROCESS > KILL_THREAD > TRAP >
//! ERRNO > TRACE > LOG > ALLOW), so the result is the strongest action in S. This
//! is exactly what installing the segments as separate filters would give (the kernel runs all
//! filters and keeps the strongest result), but in one program because:
//! * with separate filters, installing the second one needs seccomp(2) to pass the first, and
//!   an allow-list profile that does not list `seccomp` would make that fail;
//! * every installed filter runs on every syscall; a chain stops at the deciding segment.
//!
//! Where it differs from libseccomp: a call matching rules with different actions gets the
//! strongest one here, while libseccomp settles overlapping rules of one syscall with its own
//! tree-merging rules, which are not reproduced. Between two actions of equal precedence with
//! different data (ERRNO(EPERM) vs ERRNO(ENOSYS), or two TRACE values) the action appearing
//! first in the profile wins here; with separate filters the kernel would pick the most
//! recently installed one.

use libc::sock_filter;
use oci_spec::runtime::Arch;
use seccompiler::{BpfProgram, SeccompFilter, TargetArch};

use super::profile::{add_rule, Action, Plan, RuleSet};
use super::SeccompError;

/// The kernel refuses longer programs (`BPF_MAXINSNS`).
pub(super) const BPF_MAXINSNS: usize = 4096;

// Classic BPF opcodes (linux/bpf_common.h), as the u16 that `sock_filter.code` holds.
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// x32 syscalls run under AUDIT_ARCH_X86_64 with this bit set in the syscall number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The host architecture as each layer names it.
#[derive(Clone, Copy, Debug)]
pub(super) struct HostArch {
    pub target: TargetArch,
    pub oci: Arch,
    /// `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch` (linux/audit.h).
    pub audit: u32,
    /// Whether the x32 ABI shares `audit` and must be told apart by [`X32_SYSCALL_BIT`].
    pub x32: bool,
}

#[cfg(target_arch = "x86_64")]
pub(super) const HOST: Option<HostArch> = Some(HostArch {
    target: TargetArch::x86_64,
    oci: Arch::ScmpArchX86_64,
    // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    audit: 62 | 0x8000_0000 | 0x4000_0000,
    x32: true,
});

#[cfg(target_arch = "aarch64")]
pub(super) const HOST: Option<HostArch> = Some(HostArch {
    target: TargetArch::aarch64,
    oci: Arch::ScmpArchAarch64,
    // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    audit: 183 | 0x8000_0000 | 0x4000_0000,
    x32: false,
});

#[cfg(target_arch = "riscv64")]
pub(super) const HOST: Option<HostArch> = Some(HostArch {
    target: TargetArch::riscv64,
    oci: Arch::ScmpArchRiscv64,
    // EM_RISCV | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    audit: 243 | 0x8000_0000 | 0x4000_0000,
    x32: false,
});

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
pub(super) const HOST: Option<HostArch> = None;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn is_ret_allow(insn: &seccompiler::sock_filter) -> bool {
    insn.code == BPF_RET | BPF_K && insn.k == libc::SECCOMP_RET_ALLOW
}

fn too_large(len: usize) -> SeccompError {
    SeccompError::Invalid {
        path: "linux.seccomp".to_owned(),
        reason: format!(
            "the profile compiles to {len} BPF instructions, over the kernel's limit of \
             {BPF_MAXINSNS}"
        ),
    }
}

/// One seccompiler filter: `match_action` for calls in `rules`, `mismatch_action` otherwise.
fn segment(
    rules: &RuleSet,
    match_action: Action,
    mismatch_action: Action,
    host: &HostArch,
) -> Result<BpfProgram, SeccompError> {
    let rules = rules
        .iter()
        .map(|(nr, matcher)| (*nr, matcher.to_seccompiler()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        mismatch_action.to_seccompiler(),
        match_action.to_seccompiler(),
        host.target,
    )
    .map_err(|err| SeccompError::Invalid {
        path: "linux.seccomp".to_owned(),
        reason: format!("building the {match_action:?} filter: {err}"),
    })?;
    BpfProgram::try_from(filter).map_err(|err| match err {
        seccompiler::BackendError::FilterTooLarge(len) => too_large(len),
        err => SeccompError::Invalid {
            path: "linux.seccomp".to_owned(),
            reason: format!("compiling the {match_action:?} filter: {err}"),
        },
    })
}

/// Checks run before the segments, for the host ABI only (calls of other ABIs fall through to
/// the segments, whose architecture check kills the process):
/// * x32 calls are killed: the segments match x86_64 numbers only, so an x32 call would
///   otherwise get the default action and slip past a deny-list (libseccomp likewise sends
///   x32 calls to its bad-architecture action unless x32 is in the filter);
/// * runc's ENOSYS stub, when the plan asks for it.
fn prologue(host: &HostArch, enosys_above: Option<u32>) -> Vec<sock_filter> {
    let mut checks = vec![stmt(BPF_LD | BPF_W | BPF_ABS, SECCOMP_DATA_NR)];
    if host.x32 {
        checks.push(jump(BPF_JMP | BPF_JSET | BPF_K, X32_SYSCALL_BIT, 0, 1));
        checks.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS));
    }
    if let Some(largest) = enosys_above {
        checks.push(jump(BPF_JMP | BPF_JGT | BPF_K, largest, 0, 1));
        checks.push(stmt(
            BPF_RET | BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs(),
        ));
    }
    if checks.len() == 1 {
        return Vec::new();
    }
    // At most five instructions, so the skip always fits a conditional jump.
    let skip = u8::try_from(checks.len()).unwrap_or(u8::MAX);
    let mut program = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, host.audit, 0, skip),
    ];
    program.extend(checks);
    program
}

/// The segments to chain, in evaluation order (see the module documentation).
pub(super) fn segments(plan: &Plan, host: &HostArch) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut rule_groups: Vec<&(Action, RuleSet)> = plan
        .groups
        .iter()
        .filter(|(action, _)| *action != Action::Allow)
        .collect();
    // Stable: equal precedence keeps the order of first appearance.
    rule_groups.sort_by_key(|(action, _)| action.precedence());

    let mut segments = Vec::with_capacity(rule_groups.len() + 1);
    for (action, rules) in rule_groups {
        segments.push(segment(rules, *action, Action::Allow, host)?);
    }
    if plan.default != Action::Allow {
        let mut any_rule = RuleSet::new();
        for (_, rules) in &plan.groups {
            for (nr, matcher) in rules {
                add_rule(&mut any_rule, *nr, matcher.clone());
            }
        }
        segments.push(segment(&any_rule, Action::Allow, plan.default, host)?);
    }
    Ok(segments)
}

/// The whole program, or `None` when the plan allows every call (nothing to install).
pub(super) fn build(
    plan: &Plan,
    host: &HostArch,
) -> Result<Option<Vec<sock_filter>>, SeccompError> {
    let segments = segments(plan, host)?;
    if segments.is_empty() {
        return Ok(None);
    }
    let mut program = prologue(host, plan.enosys_above);
    let count = segments.len();
    for (i, segment) in segments.into_iter().enumerate() {
        let last = i + 1 == count;
        let len = segment.len();
        for (pos, insn) in segment.into_iter().enumerate() {
            if !last && is_ret_allow(&insn) {
                // Replacing one instruction by one keeps every jump inside the segment valid;
                // the target is the first instruction of the next segment.
                let to_next = u32::try_from(len - pos - 1).map_err(|_| too_large(len))?;
                program.push(stmt(BPF_JMP | BPF_JA, to_next));
            } else {
                program.push(jump(insn.code, insn.k, insn.jt, insn.jf));
            }
        }
    }
    if program.len() > BPF_MAXINSNS {
        return Err(too_large(program.len()));
    }
    Ok(Some(program))
}
