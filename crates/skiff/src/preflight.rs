//! Checks `skiff server` and `skiff agent` make before they start anything: that they
//! run as root, that the kernel has what pods need (overlayfs, cgroup v2 with the cpu,
//! memory and pids controllers, nftables), that their ports are free, and that no other
//! server holds the data dir. Each failure says what is wrong and what to do; nothing
//! has been created on the host when one is reported.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Pods need root: namespaces, cgroups, mounts and nftables.
pub fn require_root(what: &str, without: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} must run as root (it creates namespaces, cgroups, mounts and nftables rules for pods): run it with sudo{without}"
        );
    }
    Ok(())
}

/// The kernel features a node needs, read from the running system.
pub fn kernel_features() -> Result<()> {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let loaded = Path::new("/sys/module/overlay").exists();
    check_overlay(&filesystems, loaded)?;
    let cgroup_root = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(cgroup_root.join("cgroup.controllers")).ok();
    let v1: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| cgroup_root.join(c).join("cgroup.procs").exists())
        .collect();
    check_cgroups(controllers.as_deref(), &v1)?;
    check_nft()
}

/// overlayfs, for image layers (listed in /proc/filesystems once the module is loaded).
pub fn check_overlay(proc_filesystems: &str, module_loaded: bool) -> Result<()> {
    let listed = proc_filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"));
    if listed || module_loaded {
        return Ok(());
    }
    // The module may be there but not loaded yet: the first overlay mount would load
    // it, so try as that mount would.
    if std::process::Command::new("modprobe")
        .arg("overlay")
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    bail!(
        "this kernel has no overlay filesystem (not in /proc/filesystems, `modprobe overlay` failed): \
         image layers are mounted with it; load the module (`modprobe overlay`) or use a kernel built with CONFIG_OVERLAY_FS"
    )
}

/// The cgroup controllers pods are limited with, at /sys/fs/cgroup: cgroup v2's
/// `cgroup.controllers` listing cpu, memory and pids, or (cgroup v1) those three
/// hierarchies mounted.
pub fn check_cgroups(v2_controllers: Option<&str>, v1_mounted: &[&str]) -> Result<()> {
    let (have, version): (Vec<&str>, &str) = match v2_controllers {
        Some(list) => (list.split_whitespace().collect(), "v2"),
        None => (v1_mounted.to_vec(), "v1"),
    };
    if have.is_empty() {
        bail!(
            "no cgroup hierarchy at /sys/fs/cgroup (neither cgroup v2's cgroup.controllers nor v1's cpu, memory and pids): \
             pods are limited with cgroups; mount them (cgroup v2: mount -t cgroup2 none /sys/fs/cgroup)"
        );
    }
    let missing: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| !have.contains(c))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the cgroup {version} hierarchy at /sys/fs/cgroup lacks the {} controller{} (it has: {}): pods' requests and limits need them; \
             enable them in the kernel (e.g. cgroup_enable=memory on its command line){}",
            missing.join(", "),
            if missing.len() == 1 { "" } else { "s" },
            have.join(" "),
            if version == "v1" { " and mount them under /sys/fs/cgroup" } else { "" }
        );
    }
    Ok(())
}

/// The nft command, which programs the pod network's and Services' rules.
fn check_nft() -> Result<()> {
    match std::process::Command::new("nft")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => bail!(
            "no working `nft` command: Services and the pod network are programmed with nftables; \
             install it (apt-get install nftables, or run scripts/setup.sh)"
        ),
    }
}

/// Fails with who holds `addr` when it cannot be bound. `flag` is the option that moves it.
pub fn port_free(addr: SocketAddr, what: &str, flag: &str) -> Result<()> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let by = holder_of_port(addr.port())
                .map(|(pid, name)| format!(" by {name} (pid {pid})"))
                .unwrap_or_default();
            bail!(
                "{what}: port {} is already in use{by}: stop what listens there or give {flag} with another address",
                addr.port()
            )
        }
        Err(e) => Err(e).with_context(|| format!("{what}: cannot listen on {addr} (give {flag})")),
    }
}

/// The kubelet API's port of an agent (its `--node-ip`, else every address), unless 0.
pub fn kubelet_port_free(flags: &crate::agent_cmd::AgentFlags) -> Result<()> {
    if flags.kubelet_port == 0 {
        return Ok(());
    }
    let ip = flags
        .node_ip
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    port_free(
        SocketAddr::new(ip, flags.kubelet_port),
        "the kubelet API",
        "--kubelet-port",
    )
}

/// The process listening on a TCP port, found through /proc (best effort).
fn holder_of_port(port: u16) -> Option<(u32, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN; the inode is field 9.
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if p == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "a process".into());
                return Some((pid, name));
            }
        }
    }
    None
}

/// An exclusive hold on a data dir for as long as it lives (`DATA/server.lock` or
/// `DATA/agent.lock`, with the holder's pid in it). A second server on the same dir is refused with that pid.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path, who: &str) -> Result<DataDirLock> {
        Self::acquire_within(data_dir, who, std::time::Duration::ZERO)
    }

    /// As [`DataDirLock::acquire`], waiting up to `patience` for a holder that is going
    /// away (a server just killed releases its hold as the kernel closes its files).
    pub fn acquire_within(
        data_dir: &Path,
        who: &str,
        patience: std::time::Duration,
    ) -> Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create the data dir {}", data_dir.display()))?;
        let path = data_dir.join(format!("{who}.lock"));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let deadline = std::time::Instant::now() + patience;
        let locked = loop {
            // SAFETY: flock on a descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 || std::time::Instant::now() >= deadline {
                break rc == 0;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if !locked {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            bail!(
                "the data dir {} is in use by another skiff {}{}: stop it first, or give this one another --data-dir",
                data_dir.display(),
                who,
                if holder.is_empty() { String::new() } else { format!(" (pid {holder})") }
            );
        }
        use std::io::{Seek, Write};
        let _ = file.set_len(0);
        let _ = file.seek(std::io::SeekFrom::Start(0));
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_found_in_proc_filesystems() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n";
        assert!(check_overlay(text, false).is_ok());
        assert!(check_overlay("nodev\tsysfs\n", true).is_ok());
    }

    #[test]
    fn missing_cgroup_controllers_are_named() {
        assert!(check_cgroups(Some("cpuset cpu io memory hugetlb pids rdma misc\n"), &[]).is_ok());
        let e = check_cgroups(Some("cpuset io pids\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("v2 hierarchy at /sys/fs/cgroup lacks the cpu, memory controllers"),
            "{e}"
        );
        assert!(e.contains("it has: cpuset io pids"), "{e}");
        assert!(check_cgroups(None, &["cpu", "memory", "pids"]).is_ok());
        let e = check_cgroups(None, &["cpu", "pids"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("v1 hierarchy at /sys/fs/cgroup lacks the memory controller"),
            "{e}"
        );
        let e = check_cgroups(None, &[]).unwrap_err().to_string();
        assert!(e.contains("no cgroup hierarchy"), "{e}");
    }

    #[test]
    fn a_taken_port_names_its_holder() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let e = port_free(addr, "the API server", "--listen")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("port {} is already in use by", addr.port())),
            "{e}"
        );
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("--listen"), "{e}");
        drop(l);
        assert!(port_free(addr, "the API server", "--listen").is_ok());
    }

    #[test]
    fn a_data_dir_is_held_by_one_server() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), "server").unwrap();
        let e = DataDirLock::acquire(dir.path(), "server")
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use by another skiff server"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        DataDirLock::acquire(dir.path(), "server").unwrap();
    }
}
