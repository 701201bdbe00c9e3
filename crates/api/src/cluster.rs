//! The cluster's address plan: the Service ClusterIP range, the NodePort range and the pod
//! range, as `skiff server` takes them (`--service-cluster-ip-range`,
//! `--service-node-port-range`, `--cluster-cidr`). One value is shared by the API server's
//! allocators and, later, the network part, so every component agrees on the ranges.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::Ipv4Net;

/// A range flag that does not parse or does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{flag} {value:?} is not an IPv4 CIDR; write it as e.g. 10.43.0.0/16")]
    NotCidr { flag: &'static str, value: String },
    #[error("{flag} {value:?} is too small: it must hold at least 8 addresses (a prefix of /29 or shorter)")]
    TooSmall { flag: &'static str, value: String },
    #[error("--service-node-port-range {value:?} is not a port range; write it as FIRST-LAST, e.g. 30000-32767")]
    NotPortRange { value: String },
}

/// The ranges one cluster allocates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Service ClusterIPs (`--service-cluster-ip-range`, default 10.43.0.0/16).
    pub service_cidr: Ipv4Net,
    /// Service NodePorts (`--service-node-port-range`, default 30000-32767).
    pub node_ports: RangeInclusive<u16>,
    /// Pod IPs (`--cluster-cidr`, default 10.42.0.0/16); nodes get slices of it.
    pub cluster_cidr: Ipv4Net,
    /// Seconds pods tolerate `node.kubernetes.io/not-ready:NoExecute` unless they say
    /// otherwise (`--default-not-ready-toleration-seconds`, default 300).
    pub default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate `node.kubernetes.io/unreachable:NoExecute` unless they say
    /// otherwise (`--default-unreachable-toleration-seconds`, default 300).
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 43, 0, 0), 16).expect("valid prefix"),
            node_ports: 30000..=32767,
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16).expect("valid prefix"),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
        }
    }
}

impl ClusterConfig {
    /// Parses `--service-cluster-ip-range`.
    pub fn parse_service_cidr(value: &str) -> Result<Ipv4Net, RangeError> {
        parse_cidr("--service-cluster-ip-range", value)
    }

    /// Parses `--cluster-cidr`.
    pub fn parse_cluster_cidr(value: &str) -> Result<Ipv4Net, RangeError> {
        parse_cidr("--cluster-cidr", value)
    }

    /// Parses `--service-node-port-range` (`FIRST-LAST`, as kube-apiserver; `FIRST+N`
    /// also, meaning FIRST to FIRST+N).
    pub fn parse_node_ports(value: &str) -> Result<RangeInclusive<u16>, RangeError> {
        let bad = || RangeError::NotPortRange {
            value: value.to_string(),
        };
        let (first, last) = if let Some((a, b)) = value.split_once('-') {
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let b: u16 = b.trim().parse().map_err(|_| bad())?;
            (a, b)
        } else if let Some((a, n)) = value.split_once('+') {
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let n: u16 = n.trim().parse().map_err(|_| bad())?;
            (a, a.checked_add(n).ok_or_else(bad)?)
        } else {
            return Err(bad());
        };
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(first..=last)
    }

    /// The `default/kubernetes` Service's address: the first host of the range.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        nth_host(&self.service_cidr, 0).unwrap_or(self.service_cidr.network())
    }

    /// How many ClusterIPs the range holds (network and broadcast excluded).
    pub fn service_ip_count(&self) -> u32 {
        host_count(&self.service_cidr)
    }

    /// The `n`-th allocatable ClusterIP (0-based), if the range has that many.
    pub fn service_ip(&self, n: u32) -> Option<Ipv4Addr> {
        nth_host(&self.service_cidr, n)
    }

    /// The message kube-apiserver gives for an IP outside the range.
    pub fn ip_out_of_range(&self, ip: &str) -> String {
        format!(
            "provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
            self.service_cidr
        )
    }

    /// The message kube-apiserver gives for a node port outside the range.
    pub fn port_out_of_range(&self) -> String {
        format!(
            "provided port is not in the valid range. The range of valid ports is {}-{}",
            self.node_ports.start(),
            self.node_ports.end()
        )
    }

    /// Whether `ip` is an allocatable address of the service range.
    pub fn service_range_contains(&self, ip: Ipv4Addr) -> bool {
        let net = self.service_cidr;
        net.contains(&ip)
            && (host_count(&net) == 0 || (ip != net.network() && ip != net.broadcast()))
    }
}

fn parse_cidr(flag: &'static str, value: &str) -> Result<Ipv4Net, RangeError> {
    let net = Ipv4Net::from_str(value.trim()).map_err(|_| RangeError::NotCidr {
        flag,
        value: value.to_string(),
    })?;
    if net.prefix_len() > 29 {
        return Err(RangeError::TooSmall {
            flag,
            value: value.to_string(),
        });
    }
    Ok(net.trunc())
}

fn host_count(net: &Ipv4Net) -> u32 {
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    size.saturating_sub(2) as u32
}

fn nth_host(net: &Ipv4Net, n: u32) -> Option<Ipv4Addr> {
    (n < host_count(net)).then(|| Ipv4Addr::from(u32::from(net.network()) + 1 + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_k3s_ranges() {
        let c = ClusterConfig::default();
        assert_eq!(c.service_cidr.to_string(), "10.43.0.0/16");
        assert_eq!(c.cluster_cidr.to_string(), "10.42.0.0/16");
        assert_eq!(c.node_ports, 30000..=32767);
        assert_eq!(c.kubernetes_service_ip(), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(c.service_ip_count(), 65534);
        assert_eq!(c.service_ip(65533), Some(Ipv4Addr::new(10, 43, 255, 254)));
        assert_eq!(c.service_ip(65534), None);
    }

    #[test]
    fn range_flags_parse_or_say_how_to_fix() {
        assert_eq!(
            ClusterConfig::parse_service_cidr("10.96.0.7/12")
                .map(|n| n.to_string())
                .as_deref(),
            Ok("10.96.0.0/12")
        );
        let e = ClusterConfig::parse_service_cidr("10.96.0.0").unwrap_err();
        assert!(e.to_string().contains("e.g. 10.43.0.0/16"), "{e}");
        let e = ClusterConfig::parse_service_cidr("10.96.0.0/30").unwrap_err();
        assert!(matches!(e, RangeError::TooSmall { .. }), "{e}");
        assert_eq!(
            ClusterConfig::parse_node_ports("30000-32767"),
            Ok(30000..=32767)
        );
        assert_eq!(
            ClusterConfig::parse_node_ports("31000+9"),
            Ok(31000..=31009)
        );
        for bad in ["", "30000", "32767-30000", "0-10", "a-b", "65535+1"] {
            assert!(ClusterConfig::parse_node_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn range_membership_excludes_network_and_broadcast() {
        let c = ClusterConfig::default();
        assert!(c.service_range_contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert!(!c.service_range_contains(Ipv4Addr::new(10, 43, 0, 0)));
        assert!(!c.service_range_contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!c.service_range_contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert_eq!(
            c.ip_out_of_range("10.0.0.5"),
            "provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
        );
    }
}
