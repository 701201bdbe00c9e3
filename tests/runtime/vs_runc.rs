//! Differential tests: the same bundle under runc (Debian's 1.1.5) and under skiff must
//! look the same from inside. Only what legitimately differs between two containers is
//! normalized (timestamps, the container id, pipe inode numbers).

use std::collections::BTreeMap;

use serde_json::json;

use crate::common::{unique_name, Bundle, Kind, Output, Rt};

/// Probes, each run with stderr folded into stdout and followed by its exit status.
const PROBES: &[(&str, &str)] = &[
    ("status", "grep -E '^(Uid|Gid|Groups|Cap|NoNewPrivs|Seccomp|SigBlk|SigIgn)' /proc/self/status"),
    ("id", "id"),
    ("hostname", "hostname"),
    ("dev", "ls -la /dev /dev/pts /dev/shm /dev/mqueue"),
    // mount point, per-mount options, fs type, source, super options; no mount ids.
    ("mounts", "awk '$5 !~ /^\\/sys\\/fs\\/cgroup/ {print $5, $6, $(NF-2), $(NF-1), $NF}' /proc/self/mountinfo"),
    ("rlimits", "ulimit -a"),
    ("oom_score_adj", "cat /proc/self/oom_score_adj"),
    ("umask", "umask"),
    ("cwd", "pwd"),
    ("env", "env | sort"),
    ("fds", "ls /proc/self/fd"),
    ("masked", "cat /proc/kcore /proc/keys /proc/timer_list; ls -a /sys/firmware /proc/acpi"),
    ("readonly_paths", "echo 1 > /proc/sys/kernel/ns_last_pid; echo 1 > /proc/sysrq-trigger"),
    ("rootfs_readonly", "touch /probe"),
    ("pid1", "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/1/comm"),
    // Pids themselves differ (runc's Go init uses some), the process tree must not.
    ("processes", "ps -o ppid,pgid,sid,tty,comm"),
];

const CGROUP_PROBES: &[(&str, &str)] = &[
    // Deliberate difference: on a hybrid host runc also moves the container into the
    // controller-less unified hierarchy (the "0::" line). A migration there always waits
    // for an RCU grace period (~10 ms); skiff skips it, since no limit lives there.
    ("proc_cgroup", "grep -v '^0::' /proc/self/cgroup"),
    ("sys_fs_cgroup", "ls /sys/fs/cgroup"),
    ("cgroup_mounts", "awk '$5 ~ /^\\/sys\\/fs\\/cgroup/ {print $5, $6, $(NF-2), $(NF-1), $NF}' /proc/self/mountinfo"),
];

fn script(probes: &[(&str, &str)]) -> String {
    let mut s = String::from("p() { echo \"== $1\"; eval \"$2\" 2>&1; echo \"rc=$?\"; }\n");
    for (name, cmd) in probes {
        s.push_str(&format!("p {name} {}\n", shell_quote(cmd)));
    }
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn push_line(body: &mut String, l: &str) {
    body.push_str(l);
    body.push('\n');
}

const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Split the output into probe sections and normalize what legitimately differs.
fn sections(out: &str, id: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut name = String::from("(before first probe)");
    let mut body = String::new();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("== ") {
            map.insert(
                std::mem::replace(&mut name, n.to_string()),
                std::mem::take(&mut body),
            );
            continue;
        }
        let mut toks: Vec<&str> = line.split_whitespace().collect();
        // `ls -l` timestamps: "Nov 27 18:56" (or a year instead of the time).
        if let Some(i) = toks.iter().position(|t| MONTHS.contains(t)) {
            if i + 2 < toks.len() {
                toks.splice(i..i + 3, ["<time>"]);
            }
        }
        // Signals 32 and 33 are glibc's internal ones: whether they are ignored depends on
        // how the test harness spawned the runtime (runc resets 33, keeps 32), not on the
        // runtime. Ordinary signals are compared (see basics::signals_ignored_by_the_caller_are_reset).
        if toks.first() == Some(&"SigIgn:") {
            if let Some(m) = toks.get(1).and_then(|m| u64::from_str_radix(m, 16).ok()) {
                let masked = format!("{:016x}", m & !((1u64 << 31) | (1 << 32)));
                push_line(&mut body, &format!("SigIgn: {masked} (32, 33 masked)"));
                continue;
            }
        }
        let mut l = toks.join(" ");
        l = l.replace(id, "<id>");
        // pipe:[12345] / socket:[…] inode numbers.
        while let Some(start) = l.find(":[") {
            let Some(end) = l[start..].find(']') else {
                break;
            };
            l.replace_range(start..start + end + 1, ":<ino>");
        }
        push_line(&mut body, &l);
    }
    map.insert(name, body);
    map
}

/// Run the probes under both runtimes (same config, own id and root) and compare.
#[track_caller]
fn compare(probes: &[(&str, &str)], edit: impl Fn(&mut Bundle)) {
    let mut results: Vec<(Kind, String, Output)> = vec![];
    for rt in [Rt::runc(), Rt::skiff()] {
        let mut b = Bundle::new(&["sh", "-c", &script(probes)]);
        edit(&mut b);
        let id = unique_name();
        let out = rt.run(&b, &id);
        results.push((rt.kind, id, out));
    }
    let (_, runc_id, runc) = &results[0];
    let (_, skiff_id, skiff) = &results[1];
    assert_eq!(runc.code, 0, "runc failed: {runc:#?}");
    assert_eq!(
        skiff.code, runc.code,
        "exit status differs: skiff {skiff:#?}"
    );
    assert_eq!(skiff.stderr, "", "skiff wrote to stderr: {skiff:#?}");
    let diffs = probe_diffs(runc, runc_id, skiff, skiff_id);
    assert!(
        diffs.is_empty(),
        "skiff differs from runc (- runc, + skiff):\n{diffs}"
    );
}

/// Every probe whose normalized output differs, as a readable diff ("" when none).
fn probe_diffs(runc: &Output, runc_id: &str, skiff: &Output, skiff_id: &str) -> String {
    let (a, b) = (
        sections(&runc.stdout, runc_id),
        sections(&skiff.stdout, skiff_id),
    );
    let mut diffs = String::new();
    for (name, want) in &a {
        let got = b.get(name).map(String::as_str).unwrap_or("(missing)\n");
        if got != want {
            diffs.push_str(&format!("--- probe {name}\n{}", line_diff(want, got)));
        }
    }
    diffs
}

/// Lines only in `a` (-) and only in `b` (+), in order; enough to read a probe's difference.
fn line_diff(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut s = String::new();
    for l in &al {
        if !bl.contains(l) {
            s.push_str(&format!("- {l}\n"));
        }
    }
    for l in &bl {
        if !al.contains(l) {
            s.push_str(&format!("+ {l}\n"));
        }
    }
    if s.is_empty() {
        s = format!("(same lines, different order)\n- {al:?}\n+ {bl:?}\n");
    }
    s
}

#[test]
fn default_config_looks_the_same_as_under_runc() {
    compare(PROBES, |_| {});
}

#[test]
fn user_namespace_config_looks_the_same_as_under_runc() {
    compare(PROBES, |b| {
        b.namespace("user", None);
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        b.set("/linux/uidMappings", map.clone())
            .set("/linux/gidMappings", map);
        b.chown_rootfs(100000, 100000);
    });
}

#[test]
fn non_root_user_with_extra_capability_looks_the_same_as_under_runc() {
    compare(PROBES, |b| {
        b.set("/process/user", json!({"uid": 1000, "gid": 1000, "additionalGids": [2000, 3000], "umask": 63}))
            .set("/process/cwd", json!("/tmp"))
            .set("/process/oomScoreAdj", json!(500))
            .set("/process/rlimits", json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}, {"type": "RLIMIT_NPROC", "hard": 4000, "soft": 3000}]))
            .readonly(false)
            .add_cap("CAP_NET_RAW");
        b.config["process"]["capabilities"]["ambient"]
            .as_array_mut()
            .expect("ambient")
            .push(json!("CAP_NET_RAW"));
        b.config["process"]["capabilities"]["inheritable"] = json!(["CAP_NET_RAW", "CAP_KILL"]);
    });
}

#[test]
fn cgroup_view_looks_the_same_as_under_runc() {
    compare(CGROUP_PROBES, |_| {});
}

#[test]
fn exec_looks_the_same_as_under_runc() {
    let mut results = vec![];
    for rt in [Rt::runc(), Rt::skiff()] {
        let b = Bundle::new(&["sleep", "60"]);
        let id = unique_name();
        rt.start_detached(&b, &id);
        let probes: Vec<(&str, &str)> = PROBES
            .iter()
            .copied()
            .filter(|(n, _)| !matches!(*n, "processes" | "pid1"))
            .collect();
        let out = rt.cmd(&["exec", &id, "sh", "-c", &script(&probes)]);
        rt.cmd(&["delete", "--force", &id]).ok();
        results.push((id, out));
    }
    let (runc_id, runc) = &results[0];
    let (skiff_id, skiff) = &results[1];
    assert_eq!(runc.code, 0, "runc exec failed: {runc:#?}");
    assert_eq!(skiff.code, 0, "skiff exec failed: {skiff:#?}");
    let diffs = probe_diffs(runc, runc_id, skiff, skiff_id);
    assert!(
        diffs.is_empty(),
        "skiff exec differs from runc exec (- runc, + skiff):\n{diffs}"
    );
}

/// Go `omitempty` fields of runc's `types/events.go`: present only when non-zero, so one
/// side may print them and the other not. Every other key must be on both sides.
const OMITEMPTY: &[&str] = &[
    "total",
    "percpu",
    "percpu_kernel",
    "percpu_user",
    "periods",
    "throttledPeriods",
    "throttledTime",
    "cpus",
    "mems",
    "cache",
    "raw",
    "usage",
    "max",
    "current",
    "limit",
    "ioServiceBytesRecursive",
    "ioServicedRecursive",
    "ioQueueRecursive",
    "ioServiceTimeRecursive",
    "ioWaitTimeRecursive",
    "ioMergedRecursive",
    "ioTimeRecursive",
    "sectorsRecursive",
    "major",
    "minor",
    "op",
    "value",
];

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Where the JSON shapes of `runc` and `skiff` differ: a key on one side only (unless it
/// is an omitempty leaf), a different JSON type, or array elements of different shapes.
fn shape_diffs(path: &str, runc: &serde_json::Value, skiff: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let mut out = vec![];
    if json_type(runc) != json_type(skiff) {
        out.push(format!(
            "{path}: runc has {} {runc}, skiff {} {skiff}",
            json_type(runc),
            json_type(skiff)
        ));
        return out;
    }
    // An omitempty object (memory.raw) may be missing, never one of the structs.
    let may_be_absent =
        |k: &str, v: &Value| OMITEMPTY.contains(&k) && (!v.is_object() || k == "raw");
    match (runc, skiff) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                match b.get(k) {
                    Some(bv) => out.extend(shape_diffs(&format!("{path}.{k}"), av, bv)),
                    None if may_be_absent(k, av) => {}
                    None => out.push(format!("{path}.{k}: only runc prints it ({av})")),
                }
            }
            for (k, bv) in b {
                if !a.contains_key(k) && !may_be_absent(k, bv) {
                    out.push(format!("{path}.{k}: only skiff prints it ({bv})"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, av) in a.iter().enumerate() {
                for (j, bv) in b.iter().enumerate() {
                    out.extend(shape_diffs(&format!("{path}[{i}~{j}]"), av, bv));
                }
            }
        }
        _ => {}
    }
    out
}

#[test]
fn events_stats_json_has_the_shape_runc_prints() {
    let mut events = vec![];
    for rt in [Rt::runc(), Rt::skiff()] {
        let b = Bundle::new(&["sh", "-c", "sleep 60 & wait"]);
        let id = unique_name();
        rt.start_detached(&b, &id);
        rt.wait_processes(&id, 2);
        let ev = rt.cmd(&["events", "--stats", &id]).ok().json();
        rt.cmd(&["delete", "--force", &id]).ok();
        assert_eq!(ev["type"], "stats", "{:?}: {ev}", rt.kind);
        assert_eq!(ev["id"], id.as_str(), "{:?}: {ev}", rt.kind);
        assert_eq!(ev["data"]["pids"]["current"], 2, "{:?}: {ev}", rt.kind);
        events.push(ev);
    }
    let (runc, skiff) = (&events[0], &events[1]);
    // What runc always prints, whatever the container does.
    for key in [
        "cpu",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "hugetlb",
        "intel_rdt",
    ] {
        assert!(runc["data"].get(key).is_some(), "runc: no {key}: {runc}");
    }
    assert!(runc["data"]["network_interfaces"].is_null(), "runc: {runc}");
    let diffs = shape_diffs("", runc, skiff);
    assert!(
        diffs.is_empty(),
        "skiff's events --stats differs in shape from runc's:\n{}\nrunc: {runc}\nskiff: {skiff}",
        diffs.join("\n")
    );
}

#[test]
fn shape_comparison_catches_what_it_should() {
    let runc = json!({"data": {"cpuset": {"cpu_exclusive": 0, "cpus": [0, 1]},
        "memory": {"usage": {"limit": 1, "usage": 5}, "raw": {"cache": 0}},
        "hugetlb": {}, "network_interfaces": null}});
    // Omitempty leaves (cpus, usage, raw) may be missing; nothing else may.
    let ok = json!({"data": {"cpuset": {"cpu_exclusive": 3},
        "memory": {"usage": {"limit": 9}}, "hugetlb": {}, "network_interfaces": null}});
    assert_eq!(shape_diffs("", &runc, &ok), Vec::<String>::new());
    let bad = json!({"data": {"cpuset": {"cpus": [0]},
        "memory": {"raw": {"cache": 0}}, "hugetlb": null, "network_interfaces": []}});
    let d = shape_diffs("", &runc, &bad);
    assert_eq!(d.len(), 4, "{d:#?}");
    for want in [
        ".data.cpuset.cpu_exclusive",
        ".data.memory.usage",
        ".data.hugetlb",
        ".data.network_interfaces",
    ] {
        assert!(
            d.iter().any(|l| l.starts_with(want)),
            "{want} not in {d:#?}"
        );
    }
}

/// The `spec` output of `runtime`, with `--rootless` if asked.
fn spec_of(kind: Kind, rootless: bool) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = match kind {
        Kind::Runc => std::process::Command::new("runc"),
        Kind::Skiff => {
            let mut c = std::process::Command::new(crate::common::skiff_bin());
            c.arg("runtime");
            c
        }
    };
    c.arg("spec").current_dir(dir.path());
    if rootless {
        c.arg("--rootless");
    }
    let out = c.output().expect("run spec");
    assert!(out.status.success(), "{kind:?} spec: {out:?}");
    let text = std::fs::read(dir.path().join("config.json")).expect("config.json");
    serde_json::from_slice(&text).expect("config.json is JSON")
}

/// What may differ between the two `spec` outputs: the implementation's own name and
/// the spec version it was built against (runc 1.1.5 says "1.0.2-dev").
const SPEC_OWN_NAME: &[&str] = &["/hostname", "/ociVersion"];

/// runc 1.2 added the cgroup namespace to its default spec and skiff writes 1.2's layout;
/// against an older runc (Debian 12 has 1.1.5) that one entry is not compared.
fn without_cgroup_namespace_unless_runc_has_it(
    runc: &serde_json::Value,
    skiff: &mut serde_json::Value,
) {
    let has = |v: &serde_json::Value| {
        v.pointer("/linux/namespaces")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| a.contains(&json!({"type": "cgroup"})))
    };
    if !has(runc) {
        if let Some(serde_json::Value::Array(a)) = skiff.pointer_mut("/linux/namespaces") {
            a.retain(|n| n != &json!({"type": "cgroup"}));
        }
    }
}

#[test]
fn spec_writes_what_runc_spec_writes() {
    for rootless in [false, true] {
        let mut runc = spec_of(Kind::Runc, rootless);
        let mut skiff = spec_of(Kind::Skiff, rootless);
        for ptr in SPEC_OWN_NAME {
            for v in [&mut runc, &mut skiff] {
                let field = v
                    .pointer_mut(ptr)
                    .expect("spec has hostname and ociVersion");
                assert!(field.is_string(), "{ptr}: {field}");
                *field = json!("<own>");
            }
        }
        without_cgroup_namespace_unless_runc_has_it(&runc, &mut skiff);
        let (a, b) = (
            serde_json::to_string_pretty(&runc).expect("json"),
            serde_json::to_string_pretty(&skiff).expect("json"),
        );
        assert!(
            runc == skiff,
            "spec{} differs from runc's (- runc, + skiff):\n{}",
            if rootless { " --rootless" } else { "" },
            line_diff(&a, &b)
        );
    }
}
