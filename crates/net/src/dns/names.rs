//! Name helpers shared by the zone and the server: the dashed forms of addresses used by
//! pod and endpoint names, and which reverse (`*.arpa`) names belong to the cluster.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;
use ipnet::IpNet;

/// `10.42.0.5` → `10-42-0-5`; `fd00::1` → `fd00--1` (the form Kubernetes DNS uses for
/// pod and endpoint names, where dots or colons are not allowed in one label).
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The inverse of [`dashed`]: `None` for a label that is not an address in dashed form.
pub fn undashed(label: &str) -> Option<IpAddr> {
    if label.contains('.') || label.contains(':') {
        return None;
    }
    // Four dash-separated decimal parts are IPv4; anything else is tried as IPv6.
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address a full reverse name (`5.0.42.10.in-addr.arpa.`, 32 nibbles of
/// `ip6.arpa.`) stands for; `None` for a partial or a non-reverse name.
pub fn reverse_ip(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    let full = match net {
        IpNet::V4(n) => n.prefix_len() == 32,
        IpNet::V6(n) => n.prefix_len() == 128,
    };
    full.then(|| net.addr())
}

/// Whether `name` lies in the reverse zone of one of `cidrs`: it names a network at least
/// as specific as the zone's apex (the CIDR rounded down to whole labels) that overlaps
/// the CIDR. Such names are the cluster's to answer and must never be forwarded, or the
/// host's resolvers would learn (and cache misses for) cluster addresses.
pub fn in_reverse_zones(name: &Name, cidrs: &[IpNet]) -> bool {
    let Ok(net) = name.parse_arpa_name() else {
        return false;
    };
    cidrs.iter().any(|cidr| {
        let apex_len = match cidr {
            IpNet::V4(c) => c.prefix_len() / 8 * 8,
            IpNet::V6(c) => c.prefix_len() / 4 * 4,
        };
        let same_family = matches!(
            (cidr, &net),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        );
        same_family
            && net.prefix_len() >= apex_len
            && (cidr.contains(&net.network()) || net.contains(&cidr.network()))
    })
}

/// The `in-addr.arpa.`/`ip6.arpa.` name of `ip`.
pub fn reverse_name(ip: IpAddr) -> Option<Name> {
    let text = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    };
    Name::from_ascii(text).ok()
}

/// Label `i` of `name` (0 is the leftmost), lower-cased, as text.
pub fn label(name: &Name, i: usize) -> Option<String> {
    name.iter()
        .nth(i)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dashed_round_trips() {
        for ip in ["10.42.0.5", "fd00::1", "2001:db8::a:1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undashed(&dashed(ip)), Some(ip));
        }
        assert_eq!(undashed("web"), None);
        assert_eq!(undashed("10-42-0"), None);
    }

    #[test]
    fn reverse_names() {
        let ip: IpAddr = "10.43.0.10".parse().unwrap();
        let n = reverse_name(ip).unwrap();
        assert_eq!(n.to_ascii(), "10.0.43.10.in-addr.arpa.");
        assert_eq!(reverse_ip(&n), Some(ip));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(reverse_ip(&reverse_name(v6).unwrap()), Some(v6));
        let partial = Name::from_ascii("43.10.in-addr.arpa.").unwrap();
        assert_eq!(reverse_ip(&partial), None);
    }

    #[test]
    fn reverse_zone_membership() {
        let cidrs: Vec<IpNet> = vec![
            "10.42.0.0/16".parse().unwrap(),
            "10.32.0.0/12".parse().unwrap(),
        ];
        let ours = |s: &str| in_reverse_zones(&Name::from_ascii(s).unwrap(), &cidrs);
        assert!(ours("5.0.42.10.in-addr.arpa."));
        assert!(ours("42.10.in-addr.arpa."));
        assert!(ours("1.2.40.10.in-addr.arpa."));
        // The /12's apex is 10.in-addr.arpa; its other /16s are not ours.
        assert!(ours("10.in-addr.arpa."));
        assert!(!ours("1.2.5.10.in-addr.arpa."));
        assert!(!ours("4.3.2.1.in-addr.arpa."));
        assert!(!ours("in-addr.arpa."));
        assert!(!ours("example.org."));
    }
}
