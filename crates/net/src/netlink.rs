//! The few rtnetlink operations the pod network needs, on a connection bound to one
//! network namespace.
//!
//! A netlink socket belongs to the namespace it was created in, whatever thread later
//! uses it: [`Nl::open`] creates the socket on a short-lived thread that joined the
//! target namespace, so the process itself never changes namespaces.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::NeighbourFlags;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

/// The routing protocol number skiff marks its routes with, so it finds (and removes)
/// only its own.
pub const SKIFF_ROUTE_PROTO: u8 = 0x5f;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("opening a netlink socket in {ns}")]
    Open {
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}: no such network interface {name:?}")]
    NoLink { op: String, name: String },
}

impl NlError {
    /// The errno of a netlink NACK (EEXIST, ENOENT …), if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Request {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(-m.raw_code()),
            _ => None,
        }
    }
}

fn req(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NlError {
    let op = op.into();
    move |source| NlError::Request { op, source }
}

/// An rtnetlink connection in one network namespace. Its connection task lives on the
/// current tokio runtime and ends when the `Nl` is dropped.
pub struct Nl {
    pub handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Nl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Nl {
    /// A connection in the namespace `ns` (a `/proc/<pid>/ns/net` or a pinned file), or
    /// in the caller's own when `None`. Must be called inside a tokio runtime.
    pub fn open(ns: Option<&Path>) -> Result<Nl, NlError> {
        let label = ns.map_or("this network namespace".to_string(), |p| {
            p.display().to_string()
        });
        let open_err = |source| NlError::Open {
            ns: label.clone(),
            source,
        };
        let (conn, handle, _) = match ns {
            None => rtnetlink::new_connection().map_err(open_err)?,
            Some(path) => {
                let file = File::open(path).map_err(open_err)?;
                // The socket registers with this runtime's reactor.
                let rt = tokio::runtime::Handle::current();
                std::thread::spawn(move || {
                    let _in_runtime = rt.enter();
                    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                    rtnetlink::new_connection()
                })
                .join()
                .map_err(|_| open_err(std::io::Error::other("the namespace thread panicked")))?
                .map_err(open_err)?
            }
        };
        Ok(Nl {
            handle,
            task: tokio::spawn(conn),
        })
    }

    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NlError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(l) => Ok(l),
            // ENODEV: no such link.
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(req(format!("looking up interface {name}"))(e)),
        }
    }

    pub async fn index(&self, name: &str) -> Result<Option<u32>, NlError> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    /// Interface `name`'s hardware address.
    pub async fn mac(&self, name: &str) -> Result<Option<[u8; 6]>, NlError> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Address(m) if m.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(m);
                    Some(mac)
                }
                _ => None,
            })
        }))
    }

    async fn must_index(&self, name: &str, op: &str) -> Result<u32, NlError> {
        self.index(name).await?.ok_or_else(|| NlError::NoLink {
            op: op.to_string(),
            name: name.to_string(),
        })
    }

    /// Creates the bridge `name` unless it exists; returns its index. Its MAC is set
    /// explicitly (to the one it has): a bridge whose address was never set takes the
    /// lowest of its ports' and changes it as pods come and go, and every pod's cached
    /// entry for its gateway then names a MAC the bridge no longer answers to (their
    /// traffic to the node itself, cluster DNS included, vanishes for the ~30 s the
    /// entry stays reachable).
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32, NlError> {
        let index = self
            .ensure_link(name, "bridge", || LinkBridge::new(name).mtu(mtu).build())
            .await?;
        if let Some(mac) = self.mac(name).await? {
            self.handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(req(format!("fixing the MAC address of bridge {name}")))?;
        }
        Ok(index)
    }

    /// Creates the interface `name` from `msg` unless it exists; returns its index.
    async fn ensure_link(
        &self,
        name: &str,
        what: &str,
        msg: impl FnOnce() -> LinkMessage,
    ) -> Result<u32, NlError> {
        if let Some(i) = self.index(name).await? {
            return Ok(i);
        }
        match self.handle.link().add(msg()).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(req(format!("creating {what} {name}"))(e)),
        }
        self.must_index(name, &format!("creating the {what}")).await
    }

    /// Creates the VXLAN device `name` (VNI `vni`, UDP `port`, sourced from `local`,
    /// MAC `mac`, no learning: peers are written in by [`Nl::replace_fdb`]) unless it
    /// exists; returns its index.
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mtu: u32,
        mac: [u8; 6],
    ) -> Result<u32, NlError> {
        self.ensure_link(name, "VXLAN device", || {
            LinkVxlan::new(name, vni)
                .local(local)
                .port(port)
                .learning(false)
                .mtu(mtu)
                .address(mac.to_vec())
                .build()
        })
        .await
    }

    /// A permanent neighbour entry: `ip` is at `mac` on interface `index`.
    pub async fn replace_neigh(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), NlError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding neighbour {ip} on interface #{index}")))
    }

    /// A neighbour entry as if just learned: `ip` is at `mac` on interface `index`,
    /// reachable (it ages and is verified again as any learned entry).
    pub async fn learn_neigh(&self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), NlError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .state(netlink_packet_route::neighbour::NeighbourState::Reachable)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding neighbour {ip} on interface #{index}")))
    }

    /// A VXLAN forwarding entry: frames for `mac` go to the VTEP at `dst`.
    pub async fn replace_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    ) -> Result<(), NlError> {
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .destination(IpAddr::V4(dst))
            .flags(NeighbourFlags::Own)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding the forwarding entry for VTEP {dst}")))
    }

    /// Adds or replaces a skiff route to `dst/prefix` via `gw` on interface `index`,
    /// on-link (a VXLAN peer's gateway is not on any local subnet).
    pub async fn replace_route_onlink(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        gw: Ipv4Addr,
        index: u32,
    ) -> Result<(), NlError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .protocol(RouteProtocol::Other(SKIFF_ROUTE_PROTO))
            .gateway(gw)
            .output_interface(index)
            .onlink()
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding route {dst}/{prefix} via {gw}")))
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NlError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(req(format!("setting interface #{index} up")))
    }

    pub async fn set_down(&self, index: u32) -> Result<(), NlError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(req(format!("setting interface #{index} down")))
    }

    /// Adds `ip/prefix` to the interface. Already there is fine and left untouched (a
    /// replace would briefly disturb sockets bound to it, such as the node-local DNS's).
    pub async fn ensure_addr(&self, index: u32, ip: IpAddr, prefix: u8) -> Result<(), NlError> {
        match self.handle.address().add(index, ip, prefix).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(req(format!(
                "adding address {ip}/{prefix} to interface #{index}"
            ))(e)),
        }
    }

    /// A veth pair `host` — `peer` in this namespace, both with `mtu`.
    pub async fn add_veth(&self, host: &str, peer: &str, mtu: u32) -> Result<(), NlError> {
        let msg = LinkVeth::new(host, peer).mtu(mtu).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(req(format!("creating veth pair {host}/{peer}")))
    }

    /// Moves interface `name` into the namespace held by `ns`.
    pub async fn move_to_ns(&self, name: &str, ns: &File) -> Result<(), NlError> {
        use std::os::fd::AsRawFd;
        let idx = self.must_index(name, "moving an interface").await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(req(format!(
                "moving {name} into the pod's network namespace"
            )))
    }

    /// Makes `port` a port of `bridge` (hairpin on, so a pod reaches itself through
    /// a Service) and sets it up.
    pub async fn attach(&self, port: &str, bridge: u32) -> Result<u32, NlError> {
        let idx = self.must_index(port, "attaching to the bridge").await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(req(format!("attaching {port} to the bridge")))?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(idx).hairpin(true).build())
            .execute()
            .await
            .map_err(req(format!("setting hairpin mode on {port}")))?;
        Ok(idx)
    }

    /// Renames the (down) interface `from` to `to`, then sets it up.
    pub async fn rename_up(&self, from: &str, to: &str) -> Result<u32, NlError> {
        let idx = self.must_index(from, "renaming an interface").await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).name(to.to_string()).build())
            .execute()
            .await
            .map_err(req(format!("renaming {from} to {to}")))?;
        self.set_up(idx).await?;
        Ok(idx)
    }

    /// Deletes interface `name`; gone already is fine.
    pub async fn del_link(&self, name: &str) -> Result<(), NlError> {
        let Some(idx) = self.index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(idx).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(()),
            Err(e) => Err(req(format!("deleting interface {name}"))(e)),
        }
    }

    /// The MTU of interface `name`.
    pub async fn mtu(&self, name: &str) -> Result<Option<u32>, NlError> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        }))
    }

    /// The MTU of the interface that holds `ip` (the node's address), if any.
    pub async fn mtu_of_addr(&self, ip: IpAddr) -> Result<Option<u32>, NlError> {
        let mut addrs = self.handle.address().get().execute();
        let mut index = None;
        while let Some(a) = addrs.try_next().await.map_err(req("listing addresses"))? {
            use netlink_packet_route::address::AddressAttribute;
            let holds = a.attributes.iter().any(|at| match at {
                AddressAttribute::Address(x) | AddressAttribute::Local(x) => *x == ip,
                _ => false,
            });
            if holds {
                index = Some(a.header.index);
                break;
            }
        }
        let Some(index) = index else { return Ok(None) };
        let mut s = self.handle.link().get().match_index(index).execute();
        let link = s
            .try_next()
            .await
            .map_err(req(format!("reading interface #{index}")))?;
        Ok(link.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        }))
    }

    /// Adds or replaces a skiff route to `dst/prefix`: via `gw` when given, else
    /// `unreachable`.
    pub async fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        gw: Option<Ipv4Addr>,
    ) -> Result<(), NlError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .protocol(RouteProtocol::Other(SKIFF_ROUTE_PROTO));
        b = match gw {
            Some(g) => b.gateway(g),
            None => b.kind(RouteType::Unreachable).scope(RouteScope::Universe),
        };
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding route {dst}/{prefix}")))
    }

    /// The destinations of skiff's routes in the main table: (dst, prefix, gateway).
    pub async fn skiff_routes(&self) -> Result<Vec<SkiffRoute>, NlError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut s = self.handle.route().get(filter).execute();
        let mut out = Vec::new();
        while let Some(r) = s.try_next().await.map_err(req("listing routes"))? {
            if r.header.protocol != RouteProtocol::Other(SKIFF_ROUTE_PROTO) {
                continue;
            }
            let mut dst = None;
            let mut gw = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            out.push(SkiffRoute {
                dst: dst.unwrap_or(Ipv4Addr::UNSPECIFIED),
                prefix: r.header.destination_prefix_length,
                gateway: gw,
                oif,
                message: r,
            });
        }
        Ok(out)
    }

    pub async fn del_route(&self, route: &SkiffRoute) -> Result<(), NlError> {
        match self
            .handle
            .route()
            .del(route.message.clone())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(req(format!(
                "deleting route {}/{}",
                route.dst, route.prefix
            ))(e)),
        }
    }

    /// Adds a default route via `gw` (in a pod's namespace).
    pub async fn default_route(&self, gw: Ipv4Addr) -> Result<(), NlError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding the default route via {gw}")))
    }
}

/// A route skiff made (found by its protocol number).
#[derive(Debug, Clone)]
pub struct SkiffRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The interface the route leaves by.
    pub oif: Option<u32>,
    message: RouteMessage,
}

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The path of the named network namespace `name` (as `ip netns` names them).
pub fn named_netns(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}
