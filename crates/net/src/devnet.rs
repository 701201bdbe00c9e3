//! The machinery of `skiff dev cluster`: nodes that are network namespaces on one host,
//! each with a veth to a bridge in the host namespace, as separate machines on one L2
//! segment would be.
//!
//! Namespaces are named as `ip netns` names them (a file under `/run/netns` with the
//! namespace bind-mounted on it), so `ip netns exec` works on them for debugging.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use ipnet::Ipv4Net;

use crate::netlink::{named_netns, Nl, NlError, NETNS_RUN_DIR};

#[derive(Debug, thiserror::Error)]
pub enum DevNetError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NlError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DevNetError + 'a {
    move |source| DevNetError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the named network namespace `name` (its loopback up) unless it exists.
pub async fn create_netns(name: &str) -> Result<PathBuf, DevNetError> {
    let path = named_netns(name);
    if is_mounted_ns(&path) {
        return Ok(path);
    }
    std::fs::create_dir_all(NETNS_RUN_DIR).map_err(io("creating", Path::new(NETNS_RUN_DIR)))?;
    File::create(&path).map_err(io("creating", &path))?;
    let p = path.clone();
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &p,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .map_err(|_| io("creating namespace", &path)(std::io::Error::other("thread panicked")))?
    .map_err(io("creating the network namespace", &path))?;
    let nl = Nl::open(Some(&path))?;
    if let Some(lo) = nl.index("lo").await? {
        nl.set_up(lo).await?;
    }
    Ok(path)
}

fn is_mounted_ns(path: &Path) -> bool {
    // A pinned namespace file reads as nsfs (its device differs from /run's).
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Removes the named namespace (its interfaces go with it once no process holds it).
pub fn delete_netns(name: &str) {
    let path = named_netns(name);
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&path);
}

/// The host bridge of a dev cluster, with `gateway` as its address.
pub async fn ensure_host_bridge(
    name: &str,
    gateway: Ipv4Addr,
    subnet: Ipv4Net,
) -> Result<(), DevNetError> {
    let nl = Nl::open(None)?;
    let idx = nl.ensure_bridge(name, 1500).await?;
    nl.ensure_addr(idx, IpAddr::V4(gateway), subnet.prefix_len())
        .await?;
    nl.set_up(idx).await?;
    Ok(())
}

/// Deletes a host interface (the bridge, a node's veth); absent is fine.
pub async fn delete_link(name: &str) -> Result<(), DevNetError> {
    Nl::open(None)?.del_link(name).await?;
    Ok(())
}

/// Sets a host interface up or down (a node's link: `stop-node` cuts it).
pub async fn set_link(name: &str, up: bool) -> Result<(), DevNetError> {
    let nl = Nl::open(None)?;
    if let Some(i) = nl.index(name).await? {
        if up {
            nl.set_up(i).await?;
        } else {
            nl.set_down(i).await?;
        }
    }
    Ok(())
}

/// Wires node namespace `ns` to the host bridge: a veth `host_side` on the bridge and
/// `eth0` with `ip/prefix` in the namespace. No default route: a node reaches only its
/// peers and the host's bridge address, never anything beyond the machine.
pub async fn plumb_node(
    bridge: &str,
    host_side: &str,
    ns: &Path,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), DevNetError> {
    let nl = Nl::open(None)?;
    let node = Nl::open(Some(ns))?;
    if node.index("eth0").await?.is_some() && nl.index(host_side).await?.is_some() {
        return Ok(());
    }
    let peer = format!("{host_side}p");
    nl.del_link(host_side).await?;
    nl.del_link(&peer).await?;
    nl.add_veth(host_side, &peer, 1500).await?;
    let file = File::open(ns).map_err(io("opening", ns))?;
    nl.move_to_ns(&peer, &file).await?;
    let bridge_idx = nl.index(bridge).await?.ok_or_else(|| NlError::NoLink {
        op: "wiring a node".into(),
        name: bridge.into(),
    })?;
    nl.attach(host_side, bridge_idx).await?;
    let idx = node.rename_up(&peer, "eth0").await?;
    node.ensure_addr(idx, IpAddr::V4(ip), prefix).await?;
    Ok(())
}

/// Whether any interface of this namespace has an address inside `net`.
pub async fn subnet_in_use(net: Ipv4Net) -> Result<bool, DevNetError> {
    use futures_util::TryStreamExt;
    use netlink_packet_route::address::AddressAttribute;
    let nl = Nl::open(None)?;
    let mut s = nl.handle.address().get().execute();
    while let Some(a) = s.try_next().await.map_err(|source| NlError::Request {
        op: "listing addresses".into(),
        source,
    })? {
        for at in &a.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = at {
                if net.contains(ip) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Starts `cmd` inside network namespace `ns`, in its own session (it outlives the
/// command that started it: `skiff dev cluster start-node` returns).
pub fn spawn_in_netns(cmd: &mut Command, ns: &Path) -> Result<Child, DevNetError> {
    let file: OwnedFd = File::open(ns).map_err(io("opening", ns))?.into();
    let fd = file.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setns, setsid) on a descriptor the parent keeps open
    // until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io("starting a node agent in", ns))?;
    drop(file);
    Ok(child)
}
