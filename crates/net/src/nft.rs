//! skiff's own small nft table for the pod network: egress masquerading and hostPorts.
//!
//! The table is always written whole, in one `nft -f` transaction that creates it,
//! deletes it and writes it again: the kernel applies all of it or none, so an error
//! leaves the rules before it in force. It matches only the cluster CIDR and skiff's
//! bridge; the host's own tables are never touched.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::pod::HostPort;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft (install Debian's nftables package)")]
    Spawn(#[source] std::io::Error),
    #[error("nft rejected the transaction, the rules before it stay in force: {stderr}")]
    Rejected { stderr: String },
}

/// Runs `script` as one transaction (`nft -f -`).
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether table `ip <name>` exists.
pub fn table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes table `ip <name>`; absent is fine.
pub fn delete_table(name: &str) -> Result<(), NftError> {
    apply(&format!("table ip {name} {{}}\ndelete table ip {name}\n"))
}

/// The whole table: masquerading of pod traffic that leaves the cluster CIDR (other than
/// to the pods' own bridge), and a DNAT rule per hostPort of a pod with address `ip`.
pub fn base_table(
    name: &str,
    bridge: &str,
    cluster: Ipv4Net,
    host_ports: &[(Ipv4Addr, HostPort)],
) -> String {
    let mut hp = String::new();
    for (ip, p) in host_ports {
        let proto = match p.protocol.as_str() {
            "UDP" => "udp",
            "SCTP" => "sctp",
            _ => "tcp",
        };
        let dst = p
            .host_ip
            .filter(|h| !h.is_unspecified())
            .map(|h| format!("ip daddr {h} "))
            .unwrap_or_default();
        hp.push_str(&format!(
            "    {dst}{proto} dport {} dnat to {ip}:{}\n",
            p.host_port, p.container_port
        ));
    }
    format!(
        "table ip {name} {{}}
delete table ip {name}
table ip {name} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {cluster} ip daddr != {cluster} oifname != \"{bridge}\" masquerade
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump hostports
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump hostports
  }}
  chain hostports {{
{hp}  }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_only_the_cluster_cidr_and_our_bridge() {
        let t = base_table(
            "skiff-net",
            "skiff0",
            "10.42.0.0/16".parse().expect("cidr"),
            &[(
                Ipv4Addr::new(10, 42, 0, 5),
                HostPort {
                    protocol: "TCP".into(),
                    host_ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
                    host_port: 8080,
                    container_port: 80,
                },
            )],
        );
        assert!(t.contains(
            "ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 oifname != \"skiff0\" masquerade"
        ));
        assert!(t.contains("ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.42.0.5:80"));
    }
}
