//! Pod IP allocation from the node's pod CIDR, persisted as one file per address.
//!
//! `DIR/<ip>` holds the UID of the pod that has the address. A file is made with
//! `O_EXCL`, so two allocations never get one address, and it outlives the agent: a
//! restarted agent never hands out an address a running pod still has. Releasing removes
//! the file. The network address, the gateway (the first host address, the bridge's)
//! and the broadcast address are never handed out. Allocation goes round-robin from the
//! address after the last one given (`DIR/last`), so a freed address is not reused at
//! once, as host-local IPAM does.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free IP address in pod CIDR {cidr}: all {size} are taken by pods on this node; delete pods or give the node a larger pod CIDR (--node-cidr-mask-size)")]
    Exhausted { cidr: Ipv4Net, size: u32 },
    #[error("pod CIDR {cidr} is too small for pods (a /30 or larger is needed)")]
    TooSmall { cidr: Ipv4Net },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IpamError + 'a {
    move |source| IpamError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The allocator of one pod CIDR, its state in `dir`.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
}

impl Ipam {
    pub fn open(dir: &Path, cidr: Ipv4Net) -> Result<Ipam, IpamError> {
        if cidr.prefix_len() > 30 {
            return Err(IpamError::TooSmall { cidr });
        }
        fs::create_dir_all(dir).map_err(io("creating the IPAM directory", dir))?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
            cidr: cidr.trunc(),
        })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The bridge's address: the CIDR's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// The pods' addresses: after the gateway, before the broadcast address.
    fn range(&self) -> (u32, u32) {
        let first = u32::from(self.cidr.network()) + 2;
        let last = u32::from(self.cidr.broadcast()) - 1;
        (first, last)
    }

    /// The address `uid` already has, if any.
    pub fn lookup(&self, uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find_map(|(ip, owner)| (owner == uid).then_some(ip)))
    }

    /// Every allocation: (address, pod UID).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io("reading", &self.dir))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            if !self.cidr.contains(&ip) {
                continue;
            }
            // A file being written (the uid not in it yet) reads empty: still taken.
            let owner = fs::read_to_string(e.path()).unwrap_or_default();
            out.push((ip, owner.trim().to_string()));
        }
        Ok(out)
    }

    /// The address of pod `uid`: the one it has, or a newly allocated one.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.lookup(uid)? {
            return Ok(ip);
        }
        let (first, last) = self.range();
        let size = last - first + 1;
        let last_file = self.dir.join("last");
        let start = fs::read_to_string(&last_file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|l| (first..=last).contains(l))
            .map_or(first, |l| if l == last { first } else { l + 1 });
        for i in 0..size {
            let n = first + (start - first + i) % size;
            let ip = Ipv4Addr::from(n);
            let path = self.dir.join(ip.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(uid.as_bytes())
                        .and_then(|()| f.sync_data())
                        .map_err(io("writing the allocation", &path))?;
                    let _ = fs::write(&last_file, ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("creating the allocation", &path)(e)),
            }
        }
        Err(IpamError::Exhausted {
            cidr: self.cidr,
            size,
        })
    }

    /// Frees the address of pod `uid` (none is fine).
    pub fn release(&self, uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.lookup(uid)? else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(ip)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("removing the allocation", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().expect("cidr")
    }

    #[test]
    fn allocations_are_unique_persisted_and_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(dir.path(), cidr("10.42.3.0/24")).expect("open");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let a = ipam.allocate("pod-a").expect("a");
        let b = ipam.allocate("pod-b").expect("b");
        assert_eq!(a, Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 42, 3, 3));
        // Asking again gives the same address.
        assert_eq!(ipam.allocate("pod-a").expect("a again"), a);
        // A new allocator on the same directory (an agent restart) sees both.
        let again = Ipam::open(dir.path(), cidr("10.42.3.0/24")).expect("reopen");
        assert_eq!(again.lookup("pod-b").expect("lookup"), Some(b));
        let c = again.allocate("pod-c").expect("c");
        assert!(c != a && c != b);
        assert_eq!(again.release("pod-a").expect("release"), Some(a));
        assert_eq!(again.release("pod-a").expect("release twice"), None);
        // Round robin: the freed address is not reused at once.
        let d = again.allocate("pod-d").expect("d");
        assert_ne!(d, a);
    }

    #[test]
    fn an_exhausted_cidr_says_so_and_never_gives_gateway_or_broadcast() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(dir.path(), cidr("10.42.9.0/29")).expect("open");
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(ipam.allocate(&format!("p{i}")).expect("fits"));
        }
        assert!(!got.contains(&Ipv4Addr::new(10, 42, 9, 0)));
        assert!(!got.contains(&Ipv4Addr::new(10, 42, 9, 1)));
        assert!(!got.contains(&Ipv4Addr::new(10, 42, 9, 7)));
        let err = ipam.allocate("one-too-many").expect_err("full");
        let msg = err.to_string();
        assert!(
            msg.contains("no free IP address in pod CIDR 10.42.9.0/29"),
            "{msg}"
        );
        ipam.release("p2").expect("release");
        assert!(ipam.allocate("one-too-many").is_ok());
        assert!(matches!(
            Ipam::open(dir.path(), cidr("10.42.9.0/31")),
            Err(IpamError::TooSmall { .. })
        ));
    }
}
