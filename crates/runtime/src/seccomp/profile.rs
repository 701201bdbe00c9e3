//! From the OCI `linux.seccomp` section to a [`Plan`]: validated actions, syscall numbers for
//! the host and argument rules, grouped by the action they lead to.
//!
//! Everything here is pure (no syscalls), so the runc/libseccomp interpretation of a profile
//! can be unit-tested without installing anything.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::SeccompError;

/// Data carried by `SECCOMP_RET_ERRNO` / `SECCOMP_RET_TRACE` is the low 16 bits of the return
/// value; larger `errnoRet` values would silently alias (65537 would become EPERM).
const RET_DATA_MAX: u32 = 0xffff;

/// Syscalls take at most six arguments.
const ARG_INDEX_MAX: usize = 5;

/// What the kernel does with a call, with the errno / tracer data already resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u32),
    Trace(u32),
    Log,
    Allow,
}

impl Action {
    /// The kernel's precedence when several filters (or, in our single program, several rule
    /// groups) disagree: lower is stronger. Same order as `SECCOMP_RET_ACTION_FULL` compared
    /// as a signed value in `seccomp_run_filters`.
    pub(super) fn precedence(self) -> u8 {
        match self {
            Action::KillProcess => 0,
            Action::KillThread => 1,
            Action::Trap => 2,
            Action::Errno(_) => 3,
            Action::Trace(_) => 4,
            Action::Log => 5,
            Action::Allow => 6,
        }
    }

    pub(super) fn to_seccompiler(self) -> seccompiler::SeccompAction {
        use seccompiler::SeccompAction as S;
        match self {
            Action::KillProcess => S::KillProcess,
            Action::KillThread => S::KillThread,
            Action::Trap => S::Trap,
            Action::Errno(errno) => S::Errno(errno),
            Action::Trace(data) => S::Trace(data),
            Action::Log => S::Log,
            Action::Allow => S::Allow,
        }
    }

    /// runc skips its ENOSYS stub for actions that let the call through (or hand it to a
    /// tracer, which is expected to cope with unknown syscalls itself).
    fn is_permissive(self) -> bool {
        matches!(self, Action::Allow | Action::Log | Action::Trace(_))
    }
}

/// Which calls to one syscall number a rule group matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Matcher {
    /// Every call, whatever its arguments.
    Always,
    /// Calls matching at least one rule (each rule is an AND of conditions). Never empty.
    AnyOf(Vec<SeccompRule>),
}

impl Matcher {
    /// OR `other` into `self`.
    fn merge(&mut self, other: Matcher) {
        match (&mut *self, other) {
            (Matcher::Always, _) => {}
            (this, Matcher::Always) => *this = Matcher::Always,
            (Matcher::AnyOf(rules), Matcher::AnyOf(more)) => rules.extend(more),
        }
    }

    /// In seccompiler an empty rule list means "match on the syscall number alone".
    pub(super) fn to_seccompiler(&self) -> Vec<SeccompRule> {
        match self {
            Matcher::Always => Vec::new(),
            Matcher::AnyOf(rules) => rules.clone(),
        }
    }
}

/// Syscall number → calls matched, for one action.
pub(super) type RuleSet = BTreeMap<i64, Matcher>;

pub(super) fn add_rule(rules: &mut RuleSet, nr: i64, matcher: Matcher) {
    match rules.get_mut(&nr) {
        Some(existing) => existing.merge(matcher),
        None => {
            rules.insert(nr, matcher);
        }
    }
}

/// The profile, interpreted for the host architecture.
#[derive(Debug)]
pub(super) struct Plan {
    /// Action for calls no rule matches.
    pub default: Action,
    /// Every action other than `default` that some rule leads to (ALLOW included), in order of
    /// first appearance in the profile, with the calls leading to it.
    pub groups: Vec<(Action, RuleSet)>,
    /// When set, calls with a syscall number above this get ENOSYS (runc's "-ENOSYS stub"; see
    /// [`enosys_threshold`]).
    pub enosys_above: Option<u32>,
}

/// Interpret `seccomp` for the host, whose OCI architecture name is `host_arch`.
pub(super) fn plan(seccomp: &LinuxSeccomp, host_arch: Arch) -> Result<Plan, SeccompError> {
    let default = action(
        seccomp.default_action(),
        seccomp.default_errno_ret(),
        "linux.seccomp.defaultAction",
        "linux.seccomp.defaultErrnoRet",
    )?;

    if let Some(path) = seccomp.listener_path() {
        tracing::debug!(
            listener_path = %path.display(),
            "seccomp: listenerPath ignored, SCMP_ACT_NOTIFY is unsupported"
        );
    }
    for arch in seccomp.architectures().iter().flatten() {
        if *arch != host_arch && *arch != Arch::ScmpArchNative {
            tracing::debug!(%arch, "seccomp: architecture other than the host's ignored");
        }
    }

    let mut groups: Vec<(Action, RuleSet)> = Vec::new();
    let mut largest_nr: Option<i64> = None;
    for (i, entry) in seccomp.syscalls().iter().flatten().enumerate() {
        let path = format!("linux.seccomp.syscalls[{i}]");
        let entry_action = action(
            entry.action(),
            entry.errno_ret(),
            &format!("{path}.action"),
            &format!("{path}.errnoRet"),
        )?;
        let numbers = entry_numbers(entry, &path)?;
        let matcher = entry_matcher(entry, &path)?;
        largest_nr = numbers.iter().copied().chain(largest_nr).max();

        // libseccomp refuses a rule whose action is the filter's default, so runc drops it;
        // its calls get the default action anyway unless another rule matches them.
        if entry_action == default {
            tracing::debug!(%path, "seccomp: entry has the default action, skipped");
            continue;
        }
        if numbers.is_empty() {
            continue;
        }
        let Some(matcher) = matcher else {
            tracing::debug!(%path, "seccomp: entry's argument conditions can never hold, skipped");
            continue;
        };
        let group = match groups.iter().position(|(a, _)| *a == entry_action) {
            Some(group) => group,
            None => {
                groups.push((entry_action, RuleSet::new()));
                groups.len() - 1
            }
        };
        for nr in numbers {
            add_rule(&mut groups[group].1, nr, matcher.clone());
        }
    }

    Ok(Plan {
        default,
        groups,
        enosys_above: enosys_threshold(seccomp, default, host_arch, largest_nr),
    })
}

/// runc prepends a stub to the filter that returns ENOSYS for syscall numbers above the largest
/// one the profile names, so that a profile older than the container's libc makes new syscalls
/// look unimplemented (libc then falls back, e.g. clone3 → clone) instead of failing with the
/// default errno. Same conditions as runc's `generatePatch`: the default action is not
/// permissive, it is not already ENOSYS, and the host architecture is listed in
/// `architectures` (runc only computes the threshold for listed architectures; like runc, a
/// largest number of 0 means "no stub").
fn enosys_threshold(
    seccomp: &LinuxSeccomp,
    default: Action,
    host_arch: Arch,
    largest_nr: Option<i64>,
) -> Option<u32> {
    if default.is_permissive() || default == Action::Errno(libc::ENOSYS.unsigned_abs()) {
        return None;
    }
    let host_listed = seccomp
        .architectures()
        .iter()
        .flatten()
        .any(|arch| *arch == host_arch || *arch == Arch::ScmpArchNative);
    if !host_listed {
        return None;
    }
    largest_nr
        .and_then(|nr| u32::try_from(nr).ok())
        .filter(|nr| *nr != 0)
}

/// Resolve an OCI action (with its optional errno) the way runc's `getAction` does.
fn action(
    kind: LinuxSeccompAction,
    errno_ret: Option<u32>,
    action_path: &str,
    errno_path: &str,
) -> Result<Action, SeccompError> {
    let data = |default: i32| -> Result<u32, SeccompError> {
        let value = errno_ret.unwrap_or(default.unsigned_abs());
        if value > RET_DATA_MAX {
            return Err(SeccompError::Invalid {
                path: errno_path.to_owned(),
                reason: format!(
                    "{value} does not fit the 16-bit seccomp return data (max {RET_DATA_MAX})"
                ),
            });
        }
        Ok(value)
    };
    let resolved = match kind {
        // SCMP_ACT_KILL predates KILL_PROCESS and has always meant the thread.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(data(libc::EPERM)?),
        // runc's tracer data defaults to EPERM too.
        LinuxSeccompAction::ScmpActTrace => Action::Trace(data(libc::EPERM)?),
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Invalid {
                path: action_path.to_owned(),
                reason: format!("{kind} is unsupported (skiff has no seccomp notify listener)"),
            })
        }
    };
    if let Some(value) =
        errno_ret.filter(|_| !matches!(resolved, Action::Errno(_) | Action::Trace(_)))
    {
        return Err(SeccompError::Invalid {
            path: errno_path.to_owned(),
            reason: format!(
                "{value} given with {kind}; an errno is only meaningful with \
                 SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
            ),
        });
    }
    Ok(resolved)
}

/// Syscall numbers of the entry's names on the host; names the host does not have are skipped,
/// as runc does (a profile usually lists syscalls of several architectures and kernels).
fn entry_numbers(entry: &LinuxSyscall, path: &str) -> Result<Vec<i64>, SeccompError> {
    if entry.names().is_empty() {
        return Err(SeccompError::Invalid {
            path: format!("{path}.names"),
            reason: "empty".to_owned(),
        });
    }
    let mut numbers = Vec::with_capacity(entry.names().len());
    for (j, name) in entry.names().iter().enumerate() {
        if name.is_empty() {
            return Err(SeccompError::Invalid {
                path: format!("{path}.names[{j}]"),
                reason: "empty string is not a syscall name".to_owned(),
            });
        }
        match syscalls::Sysno::from_str(name) {
            Ok(sysno) => numbers.push(i64::from(sysno.id())),
            Err(()) => {
                tracing::debug!(path = %format!("{path}.names[{j}]"), %name,
                    "seccomp: syscall unknown on this architecture, ignored");
            }
        }
    }
    Ok(numbers)
}

/// The calls of one entry's syscalls that its `args` select, or `None` when no call can match.
///
/// Like runc: all conditions are ANDed into one rule, except when two conditions name the same
/// argument; then (libseccomp cannot AND two comparisons of one argument) every condition
/// becomes a rule of its own and they are ORed.
fn entry_matcher(entry: &LinuxSyscall, path: &str) -> Result<Option<Matcher>, SeccompError> {
    let args = entry.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Ok(Some(Matcher::Always));
    }
    let mut per_index = [0usize; ARG_INDEX_MAX + 1];
    let mut conditions = Vec::with_capacity(args.len());
    for (j, arg) in args.iter().enumerate() {
        let arg_path = format!("{path}.args[{j}]");
        let condition = condition(arg, &arg_path)?;
        // `condition` has checked the index.
        if let Some(count) = per_index.get_mut(arg.index()) {
            *count += 1;
        }
        conditions.push(condition);
    }

    let rule = |conditions: Vec<SeccompCondition>| {
        SeccompRule::new(conditions).map_err(|err| SeccompError::Invalid {
            path: format!("{path}.args"),
            reason: err.to_string(),
        })
    };
    if per_index.iter().any(|count| *count > 1) {
        let rules = conditions
            .into_iter()
            .flatten()
            .map(|c| rule(vec![c]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((!rules.is_empty()).then_some(Matcher::AnyOf(rules)))
    } else {
        // One impossible condition makes the whole AND impossible.
        let Some(conditions) = conditions.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        Ok(Some(Matcher::AnyOf(vec![rule(conditions)?])))
    }
}

/// One argument comparison, on the full 64 bits like libseccomp on 64-bit architectures.
/// `None` for a comparison that can never hold.
fn condition(arg: &LinuxSeccompArg, path: &str) -> Result<Option<SeccompCondition>, SeccompError> {
    let index = arg.index();
    let index = u8::try_from(index)
        .ok()
        .filter(|i| usize::from(*i) <= ARG_INDEX_MAX)
        .ok_or_else(|| SeccompError::Invalid {
            path: format!("{path}.index"),
            reason: format!("{index} is not a syscall argument index (0..={ARG_INDEX_MAX})"),
        })?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            // libseccomp: (arg & value) == valueTwo. It does not mask valueTwo, so a datum
            // with bits outside the mask never matches; seccompiler would mask it and match.
            let (mask, datum) = (arg.value(), arg.value_two().unwrap_or(0));
            if datum & !mask != 0 {
                return Ok(None);
            }
            (SeccompCmpOp::MaskedEq(mask), datum)
        }
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map(Some)
        .map_err(|err| SeccompError::Invalid {
            path: path.to_owned(),
            reason: err.to_string(),
        })
}
