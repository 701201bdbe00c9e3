//! The DNS Service's address on the node.
//!
//! `kube-system/kube-dns` has no selector: the service proxy leaves it alone, and every
//! node answers on its ClusterIP itself, as node-local DNS caches do. For the DNS to bind
//! that address and for pods (whose traffic to it is routed to the node) to reach it,
//! the node holds it as a host address (/32 or /128) on a dummy interface of skiff's own
//! (an empty bridge on kernels built without the dummy driver).
//!
//! Contract: [`ensure_dns_address`] is idempotent (creates the link if missing, brings it
//! up, adds the address if missing); [`remove_dns_address`] deletes the link and with it
//! the address (`skiff server --clean`). Both act on the network namespace of the calling
//! thread and change nothing else in it.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec};

use super::DnsError;

const EEXIST: i32 = libc::EEXIST;
const ENODEV: i32 = libc::ENODEV;
const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;

fn netlink_code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn err(what: String) -> impl FnOnce(rtnetlink::Error) -> DnsError {
    move |source| DnsError::Netlink { what, source }
}

async fn connect() -> Result<Handle, DnsError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| DnsError::Io {
        what: "opening a netlink socket".into(),
        source,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn link_index(handle: &Handle, link: &str) -> Result<Option<u32>, DnsError> {
    let mut links = handle.link().get().match_name(link.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if netlink_code(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(err(format!("looking up link {link}"))(e)),
    }
}

/// Puts `ip` (host prefix) on the dummy link `link`, creating and raising it as needed.
pub async fn ensure_dns_address(link: &str, ip: IpAddr) -> Result<(), DnsError> {
    let handle = connect().await?;
    let index = match link_index(&handle, link).await? {
        Some(i) => i,
        None => {
            let mut added = handle
                .link()
                .add(LinkDummy::new(link).up().build())
                .execute()
                .await;
            if matches!(&added, Err(e) if netlink_code(e) == Some(EOPNOTSUPP)) {
                // A kernel without the dummy driver: a bridge with no ports holds an
                // address just as well (local delivery needs no carrier).
                added = handle
                    .link()
                    .add(LinkBridge::new(link).up().build())
                    .execute()
                    .await;
            }
            match added {
                Ok(()) => {}
                // Another agent start raced us to it: fine.
                Err(e) if netlink_code(&e) == Some(EEXIST) => {}
                Err(e) => return Err(err(format!("creating link {link}"))(e)),
            }
            link_index(&handle, link)
                .await?
                .ok_or_else(|| DnsError::LinkVanished { link: link.into() })?
        }
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(err(format!("bringing link {link} up")))?;
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    match handle.address().add(index, ip, prefix).execute().await {
        Ok(()) => Ok(()),
        Err(e) if netlink_code(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(err(format!("adding {ip}/{prefix} to {link}"))(e)),
    }
}

/// Deletes the dummy link `link` (and so its address); a missing link is not an error.
pub async fn remove_dns_address(link: &str) -> Result<(), DnsError> {
    let handle = connect().await?;
    let Some(index) = link_index(&handle, link).await? else {
        return Ok(());
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if netlink_code(&e) == Some(ENODEV) => Ok(()),
        Err(e) => Err(err(format!("deleting link {link}"))(e)),
    }
}
