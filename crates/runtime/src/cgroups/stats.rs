//! Container statistics in the shape `runc events --stats` prints under `"data"`.
//!
//! Field names and omission rules follow runc's `types/events.go` (Go `omitempty`: zero
//! numbers, empty lists and maps are left out; nested structs are always present), so
//! tools that parse runc's output (containerd's runc shim, cAdvisor-style collectors)
//! read ours unchanged. Units: nanoseconds for CPU time, bytes for memory and I/O.
//!
//! The parsers here are pure functions over file contents so the managers' tests can feed
//! them fake files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fs::{self, parse_error};
use super::CgroupError;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub cpu: Cpu,
    /// v1's cpuset files; all zero on v2, as with runc.
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    /// Keyed by page size ("2MB"). runc always prints the map, `{}` when empty.
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Intel RDT (resctrl) counters: skiff manages no resctrl groups, so always `{}`,
    /// what runc prints for a container without one.
    pub intel_rdt: IntelRdt,
    /// Filled by runc's callers (shims), never by `runc events`: always `null`.
    pub network_interfaces: Option<Vec<NetworkInterface>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelRdt {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    /// Memory+swap, as v1's memsw counters report it (v2 values are converted).
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat verbatim.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 when unlimited.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// A cpuset list ("0-3,8,10-11") as the CPU or node numbers it names.
pub fn parse_cpuset_list(path: &Path, content: &str) -> Result<Vec<u16>, CgroupError> {
    let mut out = Vec::new();
    let n = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|e| parse_error(path, content, format!("bad cpuset number {s:?}: {e}")))
    };
    for part in content.trim().split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (n(a)?, n(b)?);
                if a > b {
                    return Err(parse_error(
                        path,
                        content,
                        format!("range {part} is reversed"),
                    ));
                }
                out.extend(a..=b);
            }
            None => out.push(n(part)?),
        }
    }
    Ok(out)
}

/// v1 cpuset counters of the container directory `dir`, as runc reads them.
pub(crate) fn read_cpuset_v1(dir: &Path) -> Result<CpuSet, CgroupError> {
    let list = |name: &str| -> Result<Vec<u16>, CgroupError> {
        let f = dir.join(name);
        match fs::read_opt(&f)? {
            Some(c) => parse_cpuset_list(&f, &c),
            None => Ok(Vec::new()),
        }
    };
    let num = |name: &str| fs::read_u64_or_zero(&dir.join(name), u64::MAX);
    let level = dir.join("cpuset.sched_relax_domain_level");
    let sched_relax_domain_level = match fs::read_opt(&level)? {
        Some(c) => c
            .trim()
            .parse::<i64>()
            .map_err(|e| parse_error(&level, &c, e.to_string()))?,
        None => 0,
    };
    Ok(CpuSet {
        cpus: list("cpuset.cpus")?,
        cpu_exclusive: num("cpuset.cpu_exclusive")?,
        mems: list("cpuset.mems")?,
        mem_hardwall: num("cpuset.mem_hardwall")?,
        mem_exclusive: num("cpuset.mem_exclusive")?,
        memory_migrate: num("cpuset.memory_migrate")?,
        memory_spread_page: num("cpuset.memory_spread_page")?,
        memory_spread_slab: num("cpuset.memory_spread_slab")?,
        memory_pressure: num("cpuset.memory_pressure")?,
        sched_load_balance: num("cpuset.sched_load_balance")?,
        sched_relax_domain_level,
    })
}

fn parse_dev(path: &Path, line: &str, dev: &str) -> Result<(u64, u64), CgroupError> {
    let (maj, min) = dev
        .split_once(':')
        .ok_or_else(|| parse_error(path, line, "expected major:minor"))?;
    let n = |s: &str| {
        s.parse::<u64>()
            .map_err(|e| parse_error(path, line, format!("bad device number: {e}")))
    };
    Ok((n(maj)?, n(min)?))
}

/// v1 blkio recursive files: "8:0 Read 4096" lines (op-less "8:0 12" for sectors and
/// time), plus a trailing "Total N" that runc drops too.
pub fn parse_blkio_v1(path: &Path, content: &str) -> Result<Vec<BlkioEntry>, CgroupError> {
    let mut out = Vec::new();
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match fields.as_slice() {
            [dev, value] if dev.contains(':') => (*dev, "", *value),
            [_total, _value] => continue,
            [dev, op, value] => (*dev, *op, *value),
            _ => {
                return Err(parse_error(
                    path,
                    line,
                    "expected \"major:minor [op] value\"",
                ))
            }
        };
        let (major, minor) = parse_dev(path, line, dev)?;
        let value = value
            .parse::<u64>()
            .map_err(|e| parse_error(path, line, format!("bad value: {e}")))?;
        out.push(BlkioEntry {
            major,
            minor,
            op: op.to_string(),
            value,
        });
    }
    Ok(out)
}

/// v2 io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0") into runc's v1-shaped
/// service-bytes and serviced lists.
pub fn parse_io_stat(path: &Path, content: &str, blkio: &mut Blkio) -> Result<(), CgroupError> {
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let Some(dev) = fields.next() else { continue };
        let (major, minor) = parse_dev(path, line, dev)?;
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(parse_error(path, line, "expected key=value"));
            };
            let (list, op) = match k {
                "rbytes" => (&mut blkio.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut blkio.io_service_bytes_recursive, "Write"),
                "rios" => (&mut blkio.io_serviced_recursive, "Read"),
                "wios" => (&mut blkio.io_serviced_recursive, "Write"),
                _ => continue,
            };
            let value = v
                .parse::<u64>()
                .map_err(|e| parse_error(path, line, format!("bad {k}: {e}")))?;
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    Ok(())
}

/// Space-separated per-CPU counters (cpuacct.usage_percpu).
pub fn parse_percpu(path: &Path, content: &str) -> Result<Vec<u64>, CgroupError> {
    content
        .split_whitespace()
        .map(|v| {
            v.parse::<u64>()
                .map_err(|e| parse_error(path, content, format!("bad per-cpu value: {e}")))
        })
        .collect()
}

/// One v1 memory counter family (`memory`, `memory.memsw`, `memory.kmem`…); counters
/// the host lacks (no swap accounting) read as 0.
pub(crate) fn read_memory_entry_v1(dir: &Path, prefix: &str) -> Result<MemoryEntry, CgroupError> {
    let f = |name: &str| {
        let file = dir.join(format!("{prefix}.{name}"));
        fs::read_u64_or_zero(&file, u64::MAX)
    };
    Ok(MemoryEntry {
        limit: f("limit_in_bytes")?,
        usage: f("usage_in_bytes")?,
        max: f("max_usage_in_bytes")?,
        failcnt: f("failcnt")?,
    })
}

/// v1 blkio counters of the container directory `dir`.
pub(crate) fn read_blkio_v1(dir: &Path, b: &mut Blkio) -> Result<(), CgroupError> {
    // Like runc: CFQ's counters when they have data, else BFQ's, else the throttling
    // layer's, which counts I/O whatever the scheduler.
    let has_data = |prefix: &str| {
        let f = dir.join(format!("{prefix}io_serviced_recursive"));
        let content = fs::read_opt(&f).ok().flatten().unwrap_or_default();
        let content = content.trim();
        !content.is_empty() && content != "Total 0"
    };
    let prefix = ["blkio.", "blkio.bfq."]
        .into_iter()
        .find(|p| has_data(p))
        .unwrap_or("blkio.throttle.");
    let lists: [(&str, &mut Vec<BlkioEntry>); 8] = [
        (
            "io_service_bytes_recursive",
            &mut b.io_service_bytes_recursive,
        ),
        ("io_serviced_recursive", &mut b.io_serviced_recursive),
        ("io_queued_recursive", &mut b.io_queued_recursive),
        (
            "io_service_time_recursive",
            &mut b.io_service_time_recursive,
        ),
        ("io_wait_time_recursive", &mut b.io_wait_time_recursive),
        ("io_merged_recursive", &mut b.io_merged_recursive),
        ("time_recursive", &mut b.io_time_recursive),
        ("sectors_recursive", &mut b.sectors_recursive),
    ];
    for (name, out) in lists {
        let f = dir.join(format!("{prefix}{name}"));
        if let Some(c) = fs::read_opt(&f)? {
            *out = parse_blkio_v1(&f, &c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// runc's Go omission rules on a made-up value (the shape of real `runc events
    /// --stats` output is compared in the end-to-end test `vs_runc::events_stats_…`).
    #[test]
    fn json_follows_runcs_omission_rules() {
        let mut s = Stats::default();
        s.cpu.usage.total = 10;
        s.cpu.usage.percpu = vec![4, 6];
        s.cpu.throttling.throttled_periods = 2;
        s.memory.usage = MemoryEntry {
            limit: 100,
            usage: 50,
            max: 60,
            failcnt: 0,
        };
        s.memory.raw.insert("cache".into(), 7);
        s.pids.current = 3;
        s.blkio.io_service_bytes_recursive.push(BlkioEntry {
            major: 8,
            minor: 0,
            op: "Read".into(),
            value: 4096,
        });
        let v = serde_json::to_value(&s).unwrap();
        let expected = serde_json::json!({
            "cpu": {
                "usage": {"total": 10, "percpu": [4, 6], "kernel": 0, "user": 0},
                "throttling": {"throttledPeriods": 2}
            },
            "memory": {
                "usage": {"limit": 100, "usage": 50, "max": 60, "failcnt": 0},
                "swap": {"limit": 0, "failcnt": 0},
                "kernel": {"limit": 0, "failcnt": 0},
                "kernelTCP": {"limit": 0, "failcnt": 0},
                "raw": {"cache": 7}
            },
            "cpuset": {
                "cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0,
                "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                "memory_pressure": 0, "sched_load_balance": 0, "sched_relax_domain_level": 0
            },
            "pids": {"current": 3},
            "blkio": {"ioServiceBytesRecursive": [
                {"major": 8, "op": "Read", "value": 4096}
            ]},
            "hugetlb": {},
            "intel_rdt": {},
            "network_interfaces": null
        });
        assert_eq!(v, expected);
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn cpuset_lists() {
        let p = Path::new("cpuset.cpus");
        assert_eq!(
            parse_cpuset_list(p, "0-2,5,7-8\n").unwrap(),
            vec![0, 1, 2, 5, 7, 8]
        );
        assert_eq!(parse_cpuset_list(p, "\n").unwrap(), Vec::<u16>::new());
        assert!(parse_cpuset_list(p, "3-1").is_err());
        assert!(parse_cpuset_list(p, "a").is_err());
    }

    #[test]
    fn blkio_v1_parsing() {
        let p = Path::new("blkio.throttle.io_service_bytes_recursive");
        let e = parse_blkio_v1(
            p,
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
        )
        .unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[1].major, e[1].minor, e[1].op.as_str(), e[1].value),
            (8, 0, "Write", 8192)
        );
        let e = parse_blkio_v1(Path::new("blkio.sectors_recursive"), "254:16 77\n").unwrap();
        assert_eq!(
            (e[0].major, e[0].minor, e[0].op.as_str(), e[0].value),
            (254, 16, "", 77)
        );
        assert!(parse_blkio_v1(p, "8-0 Read 1\n").is_err());
    }

    #[test]
    fn io_stat_parsing() {
        let mut b = Blkio::default();
        parse_io_stat(
            Path::new("io.stat"),
            "8:16 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n",
            &mut b,
        )
        .unwrap();
        let ops: Vec<(&str, u64)> = b
            .io_service_bytes_recursive
            .iter()
            .map(|e| (e.op.as_str(), e.value))
            .collect();
        assert_eq!(ops, vec![("Read", 1024), ("Write", 2048)]);
        assert_eq!(b.io_serviced_recursive[1].value, 4);
        assert_eq!(b.io_serviced_recursive[1].minor, 16);
    }
}
