use super::*;

/// Runs a device-filter program the way the kernel would, for the instruction subset
/// `device_filter` emits; panics on anything else so new opcodes cannot slip in untested.
fn run(prog: &[BpfInsn], dev_type: u32, access: u8, major: u32, minor: u32) -> u64 {
    let ctx = [(u32::from(access) << 16) | dev_type, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 10_000, "program does not terminate");
        let insn = prog[pc];
        let (dst, src) = (insn.dst(), insn.src());
        match insn.code {
            op::LDX_W => {
                assert_eq!(src, 1, "only loads from the context are expected");
                let off = usize::try_from(insn.off).unwrap();
                assert_eq!(off % 4, 0);
                r[dst] = u64::from(ctx[off / 4]);
            }
            op::AND32_K => r[dst] = u64::from((r[dst] as u32) & (insn.imm as u32)),
            op::RSH32_K => r[dst] = u64::from((r[dst] as u32) >> insn.imm),
            op::MOV32_X => r[dst] = u64::from(r[src] as u32),
            op::MOV64_K => r[dst] = insn.imm as i64 as u64,
            op::JNE_K => {
                if r[dst] != insn.imm as i64 as u64 {
                    pc = pc.checked_add_signed(isize::from(insn.off)).unwrap();
                }
            }
            op::EXIT => return r[0],
            other => panic!("unexpected opcode {other:#x}"),
        }
        pc += 1;
        assert!(pc < prog.len(), "fell off the end of the program");
    }
}

fn allowed(rules: &[DeviceRule], t: u32, access: u8, major: u32, minor: u32) -> bool {
    match run(&device_filter(rules), t, access, major, minor) {
        0 => false,
        1 => true,
        other => panic!("program returned {other}"),
    }
}

fn oci(json: &str) -> Vec<DeviceRule> {
    let rules: Vec<LinuxDeviceCgroup> = serde_json::from_str(json).unwrap();
    normalize(&rules).unwrap()
}

const R: u8 = ACC_READ;
const W: u8 = ACC_WRITE;
const M: u8 = ACC_MKNOD;

#[test]
fn ebpf_deny_all_then_allow_null() {
    let rules = oci(r#"[{"allow":false,"access":"rwm"},
            {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#);
    assert!(allowed(&rules, DEV_CHAR, R, 1, 3), "/dev/null read");
    assert!(allowed(&rules, DEV_CHAR, R | W, 1, 3), "/dev/null rw");
    assert!(allowed(&rules, DEV_CHAR, M, 1, 3), "/dev/null mknod");
    assert!(!allowed(&rules, DEV_BLOCK, R, 8, 0), "/dev/sda");
    assert!(
        !allowed(&rules, DEV_BLOCK, R, 1, 3),
        "block 1:3 is another device"
    );
    assert!(!allowed(&rules, DEV_CHAR, R, 1, 5), "/dev/zero");
}

#[test]
fn ebpf_access_subset_and_wildcards() {
    let rules = oci(r#"[{"allow":false,"type":"a"},
            {"allow":true,"type":"c","major":1,"minor":5,"access":"r"},
            {"allow":true,"type":"c","major":136,"access":"rw"},
            {"allow":true,"type":"b","access":"m"}]"#);
    assert!(allowed(&rules, DEV_CHAR, R, 1, 5));
    assert!(!allowed(&rules, DEV_CHAR, W, 1, 5), "write not granted");
    assert!(
        !allowed(&rules, DEV_CHAR, R | W, 1, 5),
        "rw is not a subset of r"
    );
    assert!(allowed(&rules, DEV_CHAR, R | W, 136, 7), "any pty");
    assert!(!allowed(&rules, DEV_CHAR, M, 136, 7));
    assert!(
        allowed(&rules, DEV_BLOCK, M, 8, 1),
        "mknod any block device"
    );
    assert!(!allowed(&rules, DEV_BLOCK, R, 8, 1));
}

#[test]
fn ebpf_last_match_wins() {
    let rules = oci(r#"[{"allow":true,"type":"a"},
            {"allow":false,"type":"c","major":1,"access":"rwm"},
            {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#);
    assert!(allowed(&rules, DEV_BLOCK, R, 8, 0), "allow-all base");
    assert!(allowed(&rules, DEV_CHAR, R, 4, 1), "allow-all base");
    assert!(!allowed(&rules, DEV_CHAR, R, 1, 5), "major 1 denied");
    assert!(allowed(&rules, DEV_CHAR, W, 1, 3), "re-allowed later");

    // A later deny of the same device overrides the earlier allow.
    let rules = oci(r#"[{"allow":true,"type":"c","major":1,"minor":3},
            {"allow":false,"type":"c","major":1,"minor":3,"access":"w"}]"#);
    assert!(allowed(&rules, DEV_CHAR, R, 1, 3));
    assert!(!allowed(&rules, DEV_CHAR, W, 1, 3));
    assert!(
        !allowed(&rules, DEV_CHAR, R, 1, 4),
        "implicit deny-all base"
    );
}

#[test]
fn ebpf_reset_discards_earlier_rules() {
    let rules = oci(r#"[{"allow":true,"type":"c","major":1,"minor":3},
            {"allow":false,"type":"a","major":-1,"minor":-1},
            {"allow":true,"type":"c","major":1,"minor":5}]"#);
    let prog = device_filter(&rules);
    assert!(
        !allowed(&rules, DEV_CHAR, R, 1, 3),
        "allow before the reset is gone"
    );
    assert!(allowed(&rules, DEV_CHAR, R, 1, 5));
    // Prologue (6) + one rule block (type, major, minor, mov, exit) + default (2).
    assert_eq!(prog.len(), 6 + 5 + 2);

    let allow_all = oci(r#"[{"allow":true,"type":"a","access":"rwm"}]"#);
    assert!(allowed(&allow_all, DEV_BLOCK, R | W | M, 8, 0));
}

#[test]
fn ebpf_default_devices_on_deny_all() {
    let mut list: Vec<LinuxDeviceCgroup> =
        serde_json::from_str(r#"[{"allow":false,"access":"rwm"}]"#).unwrap();
    list.extend(default_allowed_devices());
    let rules = normalize(&list).unwrap();
    for (maj, min) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 2),
        (136, 0),
    ] {
        assert!(allowed(&rules, DEV_CHAR, R | W, maj, min), "{maj}:{min}");
    }
    assert!(allowed(&rules, DEV_BLOCK, M, 8, 0), "mknod is fine");
    assert!(!allowed(&rules, DEV_BLOCK, R, 8, 0), "/dev/sda read");
    assert!(!allowed(&rules, DEV_CHAR, R, 10, 200), "/dev/net/tun");
}

#[test]
fn normalize_validates() {
    let bad_access: Vec<LinuxDeviceCgroup> =
        serde_json::from_str(r#"[{"allow":true,"type":"c","access":"rx"}]"#).unwrap();
    assert!(matches!(
        normalize(&bad_access),
        Err(CgroupError::Invalid {
            field: "devices.access",
            ..
        })
    ));
    let huge: Vec<LinuxDeviceCgroup> =
        serde_json::from_str(r#"[{"allow":true,"type":"c","major":4294967296}]"#).unwrap();
    assert!(normalize(&huge).is_err());
    let fifo_and_u = oci(r#"[{"allow":true,"type":"p"},{"allow":true,"type":"u","major":4}]"#);
    assert_eq!(fifo_and_u.len(), 1, "fifo rules are dropped");
    assert_eq!(fifo_and_u[0].kind, DeviceKind::Char);
    assert_eq!(fifo_and_u[0].access, ACC_READ | ACC_WRITE | ACC_MKNOD);
}

#[test]
fn v1_lines() {
    let rules = oci(r#"[{"allow":false,"access":"rwm"},
            {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
            {"allow":true,"type":"b","major":8,"access":"mr"},
            {"allow":false,"type":"a","major":5,"minor":1,"access":"w"}]"#);
    let writes = v1_writes(&rules);
    let expected = [
        ("devices.deny", "a"),
        ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "b 8:* rm"),
        ("devices.deny", "b 5:1 w"),
        ("devices.deny", "c 5:1 w"),
    ];
    assert_eq!(writes.len(), expected.len());
    for ((f, l), (ef, el)) in writes.iter().zip(expected) {
        assert_eq!((*f, l.as_str()), (ef, el));
    }

    // Without a leading deny-all the implicit base is written first.
    let writes = v1_writes(&oci(r#"[{"allow":true,"type":"c","major":1,"minor":3}]"#));
    assert_eq!(writes[0], ("devices.deny", "a".to_string()));
    assert_eq!(writes[1], ("devices.allow", "c 1:3 rwm".to_string()));
    assert!(v1_writes(&[]).is_empty());
}
