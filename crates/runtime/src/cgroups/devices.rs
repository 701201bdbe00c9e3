//! Device access rules: validation of `linux.resources.devices`, the v1 `devices.allow` /
//! `devices.deny` lines, and the v2 eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`).
//!
//! Semantics (both versions): a non-empty list is applied on top of "deny everything";
//! rules are evaluated in order and the last one matching a request decides. A rule of
//! type `a` without major and minor resets the state to allow-all or deny-all, like
//! writing `a` to the v1 files. A rule matches a request when the type and numbers match
//! and the requested access is a subset of the rule's access.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;

/// `BPF_DEVCG_ACC_*`: the access bits of a device request.
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// `BPF_DEVCG_DEV_*`: the device type of a request.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    All,
    Block,
    Char,
}

/// A validated device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// `None` is the `*` wildcard.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACC_*` bits.
    pub access: u8,
}

impl DeviceRule {
    /// `a` without numbers: the kernel treats it as "reset to allow/deny all" whatever
    /// the access string says.
    fn is_reset(&self) -> bool {
        self.kind == DeviceKind::All && self.major.is_none() && self.minor.is_none()
    }
}

fn number(value: Option<i64>, field: &'static str) -> Result<Option<u32>, CgroupError> {
    match value {
        None => Ok(None),
        // runc's wildcard is -1; any negative number means "all".
        Some(v) if v < 0 => Ok(None),
        // The eBPF immediates are signed 32-bit; real majors/minors are 12/20 bits.
        Some(v) if v <= i64::from(i32::MAX) => Ok(Some(v as u32)),
        Some(v) => Err(CgroupError::Invalid {
            field,
            value: v.to_string(),
            reason: "device number out of range".to_string(),
        }),
    }
}

fn access_bits(access: Option<&str>) -> Result<u8, CgroupError> {
    let Some(access) = access.filter(|a| !a.is_empty()) else {
        return Ok(ACC_ALL);
    };
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(CgroupError::Invalid {
                    field: "devices.access",
                    value: access.to_string(),
                    reason: "only the letters r, w and m are allowed".to_string(),
                })
            }
        };
    }
    Ok(bits)
}

/// Validate the OCI rules. FIFO rules are dropped: the device cgroup never governs FIFOs.
pub fn normalize(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, CgroupError> {
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        let kind = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::P => continue,
        };
        out.push(DeviceRule {
            allow: r.allow(),
            kind,
            major: number(r.major(), "devices.major")?,
            minor: number(r.minor(), "devices.minor")?,
            access: access_bits(r.access().as_deref())?,
        });
    }
    Ok(out)
}

fn access_string(bits: u8) -> String {
    let mut s = String::new();
    if bits & ACC_READ != 0 {
        s.push('r');
    }
    if bits & ACC_WRITE != 0 {
        s.push('w');
    }
    if bits & ACC_MKNOD != 0 {
        s.push('m');
    }
    s
}

fn wildcard(n: Option<u32>) -> String {
    n.map_or_else(|| "*".to_string(), |n| n.to_string())
}

/// The `(file, line)` writes that put a v1 devices cgroup into the state `rules` describe.
/// Empty for an empty list (nothing is touched).
pub fn v1_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if rules.is_empty() {
        return out;
    }
    let starts_with_deny_all = rules[0].is_reset() && !rules[0].allow;
    if !starts_with_deny_all {
        out.push(("devices.deny", "a".to_string()));
    }
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        if r.is_reset() {
            out.push((file, "a".to_string()));
            continue;
        }
        let numbers = format!("{}:{}", wildcard(r.major), wildcard(r.minor));
        let access = access_string(r.access);
        match r.kind {
            // v1 reads any "a" line as a reset, so a typed-wildcard rule with numbers must
            // be spelled out for both types.
            DeviceKind::All => {
                out.push((file, format!("b {numbers} {access}")));
                out.push((file, format!("c {numbers} {access}")));
            }
            DeviceKind::Block => out.push((file, format!("b {numbers} {access}"))),
            DeviceKind::Char => out.push((file, format!("c {numbers} {access}"))),
        }
    }
    out
}

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The opcodes the device filter uses.
pub mod op {
    /// `BPF_LDX | BPF_MEM | BPF_W`: dst = *(u32 *)(src + off).
    pub const LDX_W: u8 = 0x61;
    /// `BPF_ALU | BPF_AND | BPF_K`: dst = (u32)(dst & imm).
    pub const AND32_K: u8 = 0x54;
    /// `BPF_ALU | BPF_RSH | BPF_K`: dst = (u32)dst >> imm.
    pub const RSH32_K: u8 = 0x74;
    /// `BPF_ALU | BPF_MOV | BPF_X`: dst = (u32)src.
    pub const MOV32_X: u8 = 0xbc;
    /// `BPF_ALU64 | BPF_MOV | BPF_K`: dst = imm.
    pub const MOV64_K: u8 = 0xb7;
    /// `BPF_JMP | BPF_JNE | BPF_K`: if dst != imm, pc += off.
    pub const JNE_K: u8 = 0x55;
    /// `BPF_JMP | BPF_EXIT`: return r0.
    pub const EXIT: u8 = 0x95;
}

impl BpfInsn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        BpfInsn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }
    pub fn dst(&self) -> usize {
        usize::from(self.regs & 0x0f)
    }
    pub fn src(&self) -> usize {
        usize::from(self.regs >> 4)
    }
}

// Registers after the prologue: r2 = device type, r3 = requested access, r4 = major,
// r5 = minor. r1 (the context) is free to clobber once they are loaded.
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

/// The program for `rules`: returns 1 (allow) or 0 (deny) for a
/// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`.
pub fn device_filter(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    // Only the rules after the last reset matter; the reset sets the fallback verdict.
    let (default_allow, effective) = match rules.iter().rposition(DeviceRule::is_reset) {
        Some(i) => (rules[i].allow, &rules[i + 1..]),
        None => (false, rules),
    };
    let mut prog = vec![
        BpfInsn::new(op::LDX_W, R_TYPE, 1, 0, 0),
        BpfInsn::new(op::AND32_K, R_TYPE, 0, 0, 0xffff),
        BpfInsn::new(op::LDX_W, R_ACCESS, 1, 0, 0),
        BpfInsn::new(op::RSH32_K, R_ACCESS, 0, 0, 16),
        BpfInsn::new(op::LDX_W, R_MAJOR, 1, 4, 0),
        BpfInsn::new(op::LDX_W, R_MINOR, 1, 8, 0),
    ];
    // Last match wins, so test the rules from the end and stop at the first hit.
    for rule in effective.iter().rev() {
        prog.extend(rule_block(rule));
    }
    prog.push(BpfInsn::new(op::MOV64_K, 0, 0, 0, i32::from(default_allow)));
    prog.push(BpfInsn::new(op::EXIT, 0, 0, 0, 0));
    prog
}

/// "if the request matches `rule`, return its verdict"; every test jumps past the block.
fn rule_block(rule: &DeviceRule) -> Vec<BpfInsn> {
    // (insn, is_skip_jump): offsets are patched once the block length is known.
    let mut block: Vec<(BpfInsn, bool)> = Vec::new();
    let jne = |reg: u8, imm: i32| (BpfInsn::new(op::JNE_K, reg, 0, 0, imm), true);
    match rule.kind {
        DeviceKind::All => {}
        DeviceKind::Block => block.push(jne(R_TYPE, DEV_BLOCK as i32)),
        DeviceKind::Char => block.push(jne(R_TYPE, DEV_CHAR as i32)),
    }
    if rule.access & ACC_ALL != ACC_ALL {
        block.push((BpfInsn::new(op::MOV32_X, 1, R_ACCESS, 0, 0), false));
        block.push((
            BpfInsn::new(op::AND32_K, 1, 0, 0, i32::from(!rule.access & ACC_ALL)),
            false,
        ));
        block.push(jne(1, 0));
    }
    if let Some(major) = rule.major {
        block.push(jne(R_MAJOR, major as i32));
    }
    if let Some(minor) = rule.minor {
        block.push(jne(R_MINOR, minor as i32));
    }
    block.push((
        BpfInsn::new(op::MOV64_K, 0, 0, 0, i32::from(rule.allow)),
        false,
    ));
    block.push((BpfInsn::new(op::EXIT, 0, 0, 0, 0), false));
    let len = block.len();
    block
        .into_iter()
        .enumerate()
        .map(|(i, (mut insn, skip))| {
            if skip {
                // Blocks are a handful of instructions, far below i16::MAX.
                insn.off = (len - i - 1) as i16;
            }
            insn
        })
        .collect()
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major((major >= 0).then_some(major));
    r.set_minor((minor >= 0).then_some(minor));
    r.set_access(Some(access.to_string()));
    r
}

/// The devices every container gets on top of its spec (runc's default list): mknod of
/// anything, /dev/null, zero, full, random, urandom, tty, ptmx and the pty slaves. Callers
/// append these after the spec's rules.
pub fn default_allowed_devices() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    vec![
        rule(true, C, -1, -1, "m"),
        rule(true, B, -1, -1, "m"),
        rule(true, C, 1, 3, "rwm"),    // /dev/null
        rule(true, C, 1, 5, "rwm"),    // /dev/zero
        rule(true, C, 1, 7, "rwm"),    // /dev/full
        rule(true, C, 1, 8, "rwm"),    // /dev/random
        rule(true, C, 1, 9, "rwm"),    // /dev/urandom
        rule(true, C, 5, 0, "rwm"),    // /dev/tty
        rule(true, C, 5, 2, "rwm"),    // /dev/ptmx
        rule(true, C, 136, -1, "rwm"), // /dev/pts/*
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#[path = "devices_tests.rs"]
mod tests;
