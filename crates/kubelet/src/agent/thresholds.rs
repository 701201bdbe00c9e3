//! Eviction thresholds and the signals they watch: parsing `--eviction-hard` and
//! `--eviction-soft` (`memory.available<100Mi,nodefs.available<10%`), observing the
//! node's signals (`memory.available` = capacity − working set, `nodefs.*` and
//! `imagefs.*` from the filesystems of the data dir and the image store,
//! `pid.available`), and which thresholds the observations meet.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Shared;

/// What a threshold watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

pub const SIGNALS: &[Signal] = &[
    Signal::MemoryAvailable,
    Signal::NodefsAvailable,
    Signal::NodefsInodesFree,
    Signal::ImagefsAvailable,
    Signal::ImagefsInodesFree,
    Signal::PidAvailable,
];

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        SIGNALS.iter().copied().find(|x| x.name() == s)
    }

    /// The resource the eviction message names.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// The node condition a met threshold turns True.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }

    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::NodefsAvailable | Signal::ImagefsAvailable
        )
    }
}

/// A threshold's value: an absolute quantity or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Quantity(i64),
    /// 0.0–1.0.
    Percent(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub amount: Amount,
    /// Soft thresholds: how long the signal must stay below before pods are evicted.
    pub grace: Option<Duration>,
}

impl Threshold {
    /// The threshold as a quantity of a signal whose capacity is `capacity`.
    pub fn quantity(&self, capacity: i64) -> i64 {
        match self.amount {
            Amount::Quantity(q) => q,
            Amount::Percent(p) => (capacity as f64 * p) as i64,
        }
    }
}

/// Why an eviction threshold flag does not parse; each says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("{entry:?}: write signal<quantity or signal<percentage%, e.g. memory.available<100Mi or nodefs.available<10%")]
    Syntax { entry: String },
    #[error("{entry:?}: unknown signal {signal:?}; the signals are memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree and pid.available")]
    Signal { entry: String, signal: String },
    #[error("{entry:?}: {signal} is given twice")]
    Duplicate { entry: String, signal: String },
    #[error("{entry:?}: {value:?} is not a quantity (e.g. 100Mi, 1Gi, 5%)")]
    Quantity { entry: String, value: String },
    #[error("{entry:?}: a percentage must be between 0% and 100%")]
    Percent { entry: String },
    #[error("{entry:?}: the threshold must not be negative")]
    Negative { entry: String },
    #[error("{signal}: a soft threshold needs a grace period (--eviction-soft-grace-period {signal}=1m30s)")]
    NoGrace { signal: String },
}

/// Parses `signal<value,…` (an empty text: no thresholds). Zero thresholds are dropped,
/// as the kubelet drops them (they can never be met).
pub fn parse_thresholds(text: &str) -> Result<Vec<Threshold>, ThresholdError> {
    let mut out: Vec<Threshold> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let syntax = || ThresholdError::Syntax {
            entry: entry.to_string(),
        };
        let (name, value) = entry.split_once('<').ok_or_else(syntax)?;
        let (name, value) = (name.trim(), value.trim());
        if value.is_empty() || name.is_empty() {
            return Err(syntax());
        }
        let signal = Signal::parse(name).ok_or_else(|| ThresholdError::Signal {
            entry: entry.to_string(),
            signal: name.to_string(),
        })?;
        if out.iter().any(|t| t.signal == signal) {
            return Err(ThresholdError::Duplicate {
                entry: entry.to_string(),
                signal: name.to_string(),
            });
        }
        let amount = if let Some(p) = value.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| ThresholdError::Quantity {
                entry: entry.to_string(),
                value: value.to_string(),
            })?;
            if !(0.0..=100.0).contains(&p) {
                return Err(ThresholdError::Percent {
                    entry: entry.to_string(),
                });
            }
            Amount::Percent(p / 100.0)
        } else {
            let q = skiff_api::quantity::Quantity::parse(value).map_err(|_| {
                ThresholdError::Quantity {
                    entry: entry.to_string(),
                    value: value.to_string(),
                }
            })?;
            if q.is_negative() {
                return Err(ThresholdError::Negative {
                    entry: entry.to_string(),
                });
            }
            Amount::Quantity(q.value())
        };
        let zero = match amount {
            Amount::Quantity(q) => q == 0,
            Amount::Percent(p) => p == 0.0,
        };
        if !zero {
            out.push(Threshold {
                signal,
                amount,
                grace: None,
            });
        }
    }
    Ok(out)
}

/// Gives each soft threshold its grace period (`signal=duration` pairs, parsed by the
/// caller); every soft threshold needs one.
pub fn with_grace(
    soft: Vec<Threshold>,
    graces: &BTreeMap<String, Duration>,
) -> Result<Vec<Threshold>, ThresholdError> {
    soft.into_iter()
        .map(|mut t| {
            let g = graces
                .get(t.signal.name())
                .ok_or_else(|| ThresholdError::NoGrace {
                    signal: t.signal.name().to_string(),
                })?;
            t.grace = Some(*g);
            Ok(t)
        })
        .collect()
}

pub const DEFAULT_HARD: &str = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%";

/// One signal as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

pub type Observations = BTreeMap<Signal, Observation>;

fn statvfs(dir: &Path) -> Option<nix::sys::statvfs::Statvfs> {
    nix::sys::statvfs::statvfs(dir).ok()
}

/// Observes every signal now.
pub fn observe(sh: &Shared) -> Observations {
    let mut obs = Observations::new();
    let cap = sh.cfg.memory_bytes.max(0);
    let ws = super::stats::node_usage().working_set_bytes as i64;
    obs.insert(
        Signal::MemoryAvailable,
        Observation {
            available: (cap - ws).max(0),
            capacity: cap,
        },
    );
    let fs = [
        (
            sh.cfg.data_dir.clone(),
            Signal::NodefsAvailable,
            Signal::NodefsInodesFree,
        ),
        (
            sh.cfg.data_dir.join("images"),
            Signal::ImagefsAvailable,
            Signal::ImagefsInodesFree,
        ),
    ];
    for (dir, bytes, inodes) in fs {
        if let Some(s) = statvfs(&dir) {
            let f = s.fragment_size() as i64;
            obs.insert(
                bytes,
                Observation {
                    available: s.blocks_available() as i64 * f,
                    capacity: s.blocks() as i64 * f,
                },
            );
            if s.files() > 0 {
                obs.insert(
                    inodes,
                    Observation {
                        available: s.files_free() as i64,
                        capacity: s.files() as i64,
                    },
                );
            }
        }
    }
    let pid_max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // /proc/loadavg: "0.00 0.01 0.05 1/234 5678": 234 tasks exist.
    let tasks: Option<i64> = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok());
    if let (true, Some(t)) = (pid_max > 0, tasks) {
        obs.insert(
            Signal::PidAvailable,
            Observation {
                available: (pid_max - t).max(0),
                capacity: pid_max,
            },
        );
    }
    obs
}

/// A met threshold with what was observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Met {
    pub threshold: Threshold,
    pub observed: Observation,
}

/// The thresholds `obs` meets (a signal that was not observed meets none).
pub fn thresholds_met(thresholds: &[Threshold], obs: &Observations) -> Vec<Met> {
    thresholds
        .iter()
        .filter_map(|t| {
            let o = obs.get(&t.signal)?;
            (o.available < t.quantity(o.capacity)).then_some(Met {
                threshold: *t,
                observed: *o,
            })
        })
        .collect()
}

/// A quantity of bytes (or a count) as `resource.Quantity` prints it (binary SI when it
/// divides evenly: `100Mi`, `50436Ki`, else the plain number).
pub fn format_quantity(n: i64, bytes: bool) -> String {
    if bytes && n != 0 {
        for (shift, suffix) in [
            (60, "Ei"),
            (50, "Pi"),
            (40, "Ti"),
            (30, "Gi"),
            (20, "Mi"),
            (10, "Ki"),
        ] {
            let unit = 1i64 << shift;
            if n % unit == 0 {
                return format!("{}{suffix}", n / unit);
            }
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thresholds_parse_as_the_kubelet_writes_them() {
        let t = parse_thresholds(DEFAULT_HARD).unwrap();
        assert_eq!(
            t,
            vec![
                Threshold {
                    signal: Signal::MemoryAvailable,
                    amount: Amount::Quantity(100 << 20),
                    grace: None
                },
                Threshold {
                    signal: Signal::NodefsAvailable,
                    amount: Amount::Percent(0.10),
                    grace: None
                },
                Threshold {
                    signal: Signal::ImagefsAvailable,
                    amount: Amount::Percent(0.15),
                    grace: None
                },
            ]
        );
        assert!(parse_thresholds("").unwrap().is_empty());
        // Zero thresholds are dropped.
        assert!(parse_thresholds("memory.available<0,nodefs.available<0%")
            .unwrap()
            .is_empty());
        let p = parse_thresholds(" pid.available<10% , nodefs.inodesFree<5%").unwrap();
        assert_eq!(p[0].signal, Signal::PidAvailable);
        assert_eq!(p[1].quantity(1000), 50);
        assert_eq!(
            parse_thresholds("memory.available<1Gi").unwrap()[0].quantity(7),
            1 << 30
        );
        assert_eq!(
            parse_thresholds("memory.available<100%").unwrap()[0].quantity(8 << 30),
            8 << 30
        );
        for (bad, says) in [
            ("memory.available>1Gi", "write signal<quantity"),
            ("memory.availble<1Gi", "unknown signal \"memory.availble\""),
            ("memory.available<lots", "is not a quantity"),
            ("memory.available<", "write signal<quantity"),
            ("nodefs.available<101%", "between 0% and 100%"),
            ("memory.available<-1Mi", "must not be negative"),
            ("memory.available<1Mi,memory.available<2Mi", "given twice"),
        ] {
            let e = parse_thresholds(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut g = BTreeMap::new();
        g.insert("memory.available".to_string(), Duration::from_secs(90));
        let soft = parse_thresholds("memory.available<1Gi").unwrap();
        assert_eq!(
            with_grace(soft, &g).unwrap()[0].grace,
            Some(Duration::from_secs(90))
        );
        let soft = parse_thresholds("nodefs.available<1Gi").unwrap();
        assert!(with_grace(soft, &g)
            .unwrap_err()
            .to_string()
            .contains("--eviction-soft-grace-period nodefs.available="));
    }
}
