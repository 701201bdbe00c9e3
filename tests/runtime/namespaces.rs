//! User namespaces and joining namespaces by path.

use std::os::unix::fs::MetadataExt;

use serde_json::json;

use crate::common::{host, status_field, unique_name, Bundle, NetNs, Rt};

fn inode(path: impl AsRef<std::path::Path>) -> u64 {
    let p = path.as_ref();
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .ino()
}

fn user_namespace(b: &mut Bundle) {
    b.namespace("user", None);
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.set("/linux/uidMappings", map.clone())
        .set("/linux/gidMappings", map);
    b.chown_rootfs(100000, 100000);
}

#[test]
fn user_namespace_maps_container_root_to_an_unprivileged_host_uid() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map",
    ]);
    user_namespace(&mut b);
    let out = rt.run(&b, &unique_name()).ok();
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["0"],
            vec!["0"],
            vec!["0", "100000", "65536"],
            vec!["0", "100000", "65536"]
        ],
        "{out:#?}"
    );

    // Seen from the host, the same process runs as 100000.
    b.args(&["sleep", "60"]);
    let id = unique_name();
    let pid = rt.start_detached(&b, &id);
    let ids = |f| {
        status_field(pid, f)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids("Uid"),
        ["100000"; 4],
        "host view of the container's uids"
    );
    assert_eq!(
        ids("Gid"),
        ["100000"; 4],
        "host view of the container's gids"
    );
    assert_ne!(
        inode(format!("/proc/{pid}/ns/user")),
        inode("/proc/self/ns/user")
    );
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn joined_network_namespace_is_shared_by_containers() {
    let ns = NetNs::new();
    let ns_path = ns.path().to_string_lossy().into_owned();
    let ns_ino = inode(ns.path());
    assert_ne!(ns_ino, inode("/proc/self/ns/net"));
    let rt = Rt::skiff();

    let mut a = Bundle::new(&["sleep", "60"]);
    a.namespace("network", Some(&ns_path));
    let id_a = unique_name();
    let pid_a = rt.start_detached(&a, &id_a);
    assert_eq!(
        inode(format!("/proc/{pid_a}/ns/net")),
        ns_ino,
        "container A is not in the named netns"
    );

    // B joins the same namespace while A runs, and brings its loopback up.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "readlink /proc/self/ns/net; stat -L -c %i /proc/self/ns/net; ip link set lo up",
    ]);
    b.namespace("network", Some(&ns_path))
        .add_cap("CAP_NET_ADMIN");
    let out = rt.run(&b, &unique_name()).ok();
    assert_eq!(
        out.stdout,
        format!("net:[{ns_ino}]\n{ns_ino}\n"),
        "{out:#?}"
    );

    // The change is in the named namespace, not in a copy.
    let lo = host("ip", &["-n", &ns.name, "-o", "link", "show", "lo"]).ok();
    assert!(
        lo.stdout.contains(",UP"),
        "lo is not up in {}: {lo:#?}",
        ns.name
    );
    rt.cmd(&["delete", "--force", &id_a]).ok();
}

#[test]
fn new_network_namespace_has_only_loopback() {
    let rt = Rt::skiff();
    let b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/net/dev; stat -L -c %i /proc/self/ns/net",
    ]);
    let out = rt.run(&b, &unique_name()).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 3, "{out:#?}");
    // Two header lines, then one line per interface, then our inode.
    let ifaces: Vec<&str> = lines[2..lines.len() - 1]
        .iter()
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{out:#?}");
    let ino: u64 = lines[lines.len() - 1].parse().expect("inode");
    assert_ne!(
        ino,
        inode("/proc/self/ns/net"),
        "the container shares the host's netns"
    );
}
