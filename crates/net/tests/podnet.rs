//! The pod network for real, inside network namespaces this test makes: a "node"
//! namespace runs the bridge and skiff's nft table; two "pod" namespaces get veths and
//! addresses and talk to each other through the bridge. Nothing touches the host's own
//! namespace; every namespace is pinned under a temporary directory and unmounted on drop.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_net::pod::{HostPort, PodNetConfig, PodNetwork};

/// A network namespace pinned at a file (unmounted on drop).
struct Netns {
    path: PathBuf,
}

impl Netns {
    fn new(dir: &Path, name: &str) -> Netns {
        let path = dir.join(name);
        File::create(&path).expect("pin file");
        let p = path.clone();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("pin");
        })
        .join()
        .expect("thread");
        let ns = Netns { path };
        ns.run(|| {
            let rt = rt();
            rt.block_on(async {
                let nl = skiff_net::netlink::Nl::open(None).expect("nl");
                let lo = nl.index("lo").await.expect("lo").expect("lo exists");
                nl.set_up(lo).await.expect("lo up");
            });
        });
        ns
    }

    /// Runs `f` on a thread inside this namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(&self.path).expect("open ns");
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("ns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(state: &Path) -> PodNetConfig {
    PodNetConfig {
        bridge: "skiff0".into(),
        table: "skiff-net".into(),
        cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
        service_cidr: "10.43.0.0/16".parse().expect("cidr"),
        dns_ip: Some(Ipv4Addr::new(10, 43, 0, 10)),
        state_dir: state.to_path_buf(),
        node_ip: "127.0.0.1".parse().expect("ip"),
        mtu: Some(1400),
        vxlan: None,
    }
}

fn serve_once(ns: &Netns, port: u16, reply: &'static str) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let file = File::open(&ns.path).expect("open ns");
    let h = std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).expect("ready");
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(reply.as_bytes());
        }
    });
    rx.recv().expect("server ready");
    h
}

fn fetch(ns: &Netns, to: SocketAddr) -> std::io::Result<String> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

#[test]
fn pods_get_addresses_on_the_bridge_and_reach_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Netns::new(dir.path(), "node");
    let pod_a = Netns::new(dir.path(), "pod-a");
    let pod_b = Netns::new(dir.path(), "pod-b");
    let state = dir.path().join("state");
    let net = PodNetwork::new(config(&state));

    // Before the node has a pod CIDR, a pod waits with a clear reason.
    let (n, a) = (net.clone(), pod_a.path.clone());
    let err = node
        .run(move || n.setup_blocking("uid-a", &a, &[]))
        .expect_err("not ready");
    assert!(err.to_string().contains("no pod CIDR yet"), "{err}");

    let n = net.clone();
    node.run(move || rt().block_on(n.init("10.42.7.0/24".parse().expect("cidr"))))
        .expect("init");
    let (n, a, b) = (net.clone(), pod_a.path.clone(), pod_b.path.clone());
    let (ip_a, ip_b) = node.run(move || {
        let a = n.setup_blocking("uid-a", &a, &[]).expect("setup a");
        let b = n
            .setup_blocking(
                "uid-b",
                &b,
                &[HostPort {
                    protocol: "TCP".into(),
                    host_ip: None,
                    host_port: 18080,
                    container_port: 8080,
                }],
            )
            .expect("setup b");
        (a, b)
    });
    assert_eq!(ip_a.gateway, Ipv4Addr::new(10, 42, 7, 1));
    assert_eq!(ip_a.prefix, 24);
    assert_ne!(ip_a.ip, ip_b.ip);
    // Set up again (an agent restart adopting the pod): the same address.
    let (n, a) = (net.clone(), pod_a.path.clone());
    let again = node.run(move || n.setup_blocking("uid-a", &a, &[]).expect("again"));
    assert_eq!(again, ip_a);

    // Pod A reaches pod B by IP through the bridge, and the node reaches pod B.
    let h = serve_once(&pod_b, 8080, "hello from b");
    let got = fetch(&pod_a, SocketAddr::from((ip_b.ip, 8080))).expect("a -> b");
    assert_eq!(got, "hello from b");
    h.join().expect("server");
    // B's hostPort on the node's addresses (output hook DNAT from the node itself).
    let h = serve_once(&pod_b, 8080, "hostport");
    let got = fetch(
        &node,
        SocketAddr::from((Ipv4Addr::new(10, 42, 7, 1), 18080)),
    )
    .expect("node -> hostPort");
    assert_eq!(got, "hostport");
    h.join().expect("server");

    // The cluster and service CIDRs are unreachable from the node except through
    // skiff's own routes; a peer node's pod CIDR gets a host-gw route.
    let n = net.clone();
    let routes = node.run(move || {
        rt().block_on(async {
            n.sync_routes(&[(
                "10.42.8.0/24".parse().expect("cidr"),
                Ipv4Addr::new(10, 42, 7, 200),
            )])
            .await
            .expect("routes");
            skiff_net::netlink::Nl::open(None)
                .expect("nl")
                .skiff_routes()
                .await
                .expect("list")
        })
    });
    let shown: Vec<String> = routes
        .iter()
        .map(|r| format!("{}/{} {:?}", r.dst, r.prefix, r.gateway))
        .collect();
    assert!(
        shown.contains(&"10.42.0.0/16 None".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"10.43.0.0/16 None".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"10.42.8.0/24 Some(10.42.7.200)".to_string()),
        "{shown:?}"
    );
    // The peer goes: its route goes.
    let n = net.clone();
    let routes = node.run(move || {
        rt().block_on(async {
            n.sync_routes(&[]).await.expect("routes");
            skiff_net::netlink::Nl::open(None)
                .expect("nl")
                .skiff_routes()
                .await
                .expect("list")
        })
    });
    assert!(routes.iter().all(|r| r.gateway.is_none()), "{routes:?}");

    // Teardown removes the veth and frees the address.
    let n = net.clone();
    node.run(move || {
        n.teardown_blocking("uid-a").expect("teardown");
        n.teardown_blocking("uid-a").expect("teardown twice");
    });
    assert!(!net.allocated_pods().contains(&"uid-a".to_string()));
    let veth = skiff_net::pod::host_veth("uid-a");
    let gone = node.run(move || {
        rt().block_on(async {
            skiff_net::netlink::Nl::open(None)
                .expect("nl")
                .index(&veth)
                .await
                .expect("lookup")
                .is_none()
        })
    });
    assert!(gone);

    // clean removes the bridge, the routes and the table.
    let cfg = config(&state);
    let problems = node.run(move || rt().block_on(skiff_net::pod::clean(&cfg)));
    assert!(problems.is_empty(), "{problems:?}");
    let left = node.run(|| {
        let out = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).to_string()
    });
    assert!(!left.contains("skiff-net"), "{left}");
}

/// Two nodes joined only by an underlay link between their own addresses (no route
/// between their pod CIDRs but the overlay's): a pod on one reaches a pod on the other
/// through the VXLAN devices, and `clean` removes the device.
#[test]
fn vxlan_carries_pods_across_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = [
        Netns::new(dir.path(), "node-1"),
        Netns::new(dir.path(), "node-2"),
    ];
    let pods = [
        Netns::new(dir.path(), "pod-1"),
        Netns::new(dir.path(), "pod-2"),
    ];
    let underlay = [
        Ipv4Addr::new(192, 168, 77, 1),
        Ipv4Addr::new(192, 168, 77, 2),
    ];
    // The underlay: a veth pair between the two node namespaces.
    let peer_ns = nodes[1].path.clone();
    nodes[0].run(move || {
        rt().block_on(async {
            let nl = skiff_net::netlink::Nl::open(None).expect("nl");
            nl.add_veth("ul0", "ul1", 1500).await.expect("veth");
            let f = File::open(&peer_ns).expect("ns");
            nl.move_to_ns("ul1", &f).await.expect("move");
            let i = nl.index("ul0").await.expect("idx").expect("ul0");
            nl.ensure_addr(i, underlay[0].into(), 24)
                .await
                .expect("addr");
            nl.set_up(i).await.expect("up");
        })
    });
    nodes[1].run(move || {
        rt().block_on(async {
            let nl = skiff_net::netlink::Nl::open(None).expect("nl");
            let i = nl.index("ul1").await.expect("idx").expect("ul1");
            nl.ensure_addr(i, underlay[1].into(), 24)
                .await
                .expect("addr");
            nl.set_up(i).await.expect("up");
        })
    });
    let cidrs: [ipnet::Ipv4Net; 2] = [
        "10.42.1.0/24".parse().unwrap(),
        "10.42.2.0/24".parse().unwrap(),
    ];
    let mut nets = Vec::new();
    let mut ips = Vec::new();
    for i in 0..2 {
        let mut cfg = config(&dir.path().join(format!("state-{i}")));
        cfg.node_ip = underlay[i].into();
        cfg.mtu = None;
        cfg.vxlan = Some(skiff_net::pod::Vxlan {
            device: "skiff.vxlan".into(),
            vni: skiff_net::pod::DEFAULT_VXLAN_VNI,
            port: skiff_net::pod::DEFAULT_VXLAN_PORT,
        });
        let net = PodNetwork::new(cfg);
        let (n, pod, cidr) = (net.clone(), pods[i].path.clone(), cidrs[i]);
        let peer = (cidrs[1 - i], underlay[1 - i]);
        let ip = nodes[i].run(move || {
            rt().block_on(async {
                n.init(cidr).await.expect("init");
                n.sync_routes(&[peer, (cidr, underlay[i])])
                    .await
                    .expect("routes");
            });
            n.setup_blocking(&format!("uid-{i}"), &pod, &[])
                .expect("setup")
        });
        assert!(cidr.contains(&ip.ip));
        nets.push(net);
        ips.push(ip);
    }
    // The peer's pod CIDR leaves by the VXLAN device, on-link to its network address.
    let routes = nodes[0].run(|| {
        rt().block_on(async {
            let nl = skiff_net::netlink::Nl::open(None).expect("nl");
            let vx = nl
                .index("skiff.vxlan")
                .await
                .expect("idx")
                .expect("vxlan device");
            let mtu = nl.mtu("skiff.vxlan").await.expect("mtu");
            let routes = nl.skiff_routes().await.expect("routes");
            (vx, mtu, routes)
        })
    });
    let (vx, mtu, routes) = routes;
    assert_eq!(mtu, Some(1450), "the underlay's 1500 less VXLAN's 50");
    assert!(
        routes.iter().any(|r| r.dst == Ipv4Addr::new(10, 42, 2, 0)
            && r.gateway == Some(Ipv4Addr::new(10, 42, 2, 0))
            && r.oif == Some(vx)),
        "{routes:?}"
    );
    // Pod 1 on node 1 reaches pod 2 on node 2, and back.
    let h = serve_once(&pods[1], 8080, "over the overlay");
    let got = fetch(&pods[0], SocketAddr::from((ips[1].ip, 8080))).expect("1 -> 2");
    assert_eq!(got, "over the overlay");
    h.join().expect("server");
    let h = serve_once(&pods[0], 8080, "and back");
    let got = fetch(&pods[1], SocketAddr::from((ips[0].ip, 8080))).expect("2 -> 1");
    assert_eq!(got, "and back");
    h.join().expect("server");
    // clean removes the VXLAN device (named in the state dir, whatever the flags).
    let mut cfg = config(&dir.path().join("state-0"));
    cfg.vxlan = None;
    let problems = nodes[0].run(move || rt().block_on(skiff_net::pod::clean(&cfg)));
    assert!(problems.is_empty(), "{problems:?}");
    let gone = nodes[0].run(|| {
        rt().block_on(async {
            skiff_net::netlink::Nl::open(None)
                .expect("nl")
                .index("skiff.vxlan")
                .await
                .expect("idx")
                .is_none()
        })
    });
    assert!(gone);
}
