//! skiff's own container runtime, as the agent drives it (`RuntimeManager` behind the
//! `ContainerRuntime` trait), passes the runtime conformance suite that the in-memory
//! fake passes too: real sandboxes, shims, overlay rootfs and cgroups, with a busybox
//! image built by `skiff image build`. Afterwards nothing is left mounted and no cgroup
//! remains.

use std::process::Command;
use std::sync::Arc;

use skiff_kubelet::agent::containers::{ContainerConfig, ContainerRecord, RuntimeManager};
use skiff_kubelet::agent::cri::ContainerRuntime;
use skiff_kubelet::agent::cri_conformance::{run_all, Fixture};

use crate::common::{run, SKIFF};
use crate::node::{assert_clean, cgroup_dirs};

#[test]
fn skiffs_runtime_passes_the_conformance_suite() {
    let work = tempfile::Builder::new()
        .prefix("skiff-cri-")
        .tempdir()
        .unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox"))
        .expect("copy /bin/busybox (busybox-static, installed by scripts/setup.sh)");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    let data = work.path().join("data");
    let mut c = Command::new(SKIFF);
    c.env("SKIFF_DATA_DIR", &data)
        .args(["image", "build", "-t", "conformance:1"])
        .arg(&ctx);
    run(c, None).ok();

    let store = Arc::new(skiff_image::ImageStore::open(&data).unwrap());
    let image = store.resolve("conformance:1").unwrap().to_string();
    let cgroup_parent = format!("/skiff-cri-{}", std::process::id());
    let manager = {
        let (data, parent) = (data.clone(), cgroup_parent.clone());
        move || RuntimeManager {
            data: data.clone(),
            runtime_root: data.join("runtime"),
            shim_command: vec![SKIFF.into(), "container-shim".into(), "pod".into()],
            cgroup_parent: parent.clone(),
            store: store.clone(),
            network: None,
        }
    };
    let fixture = Fixture {
        open: Box::new(move || Arc::new(manager()) as Arc<dyn ContainerRuntime>),
        template: ContainerConfig {
            record: ContainerRecord {
                image: "conformance:1".into(),
                image_id: image,
                cgroup: cgroup_parent.clone(),
                stop_signal: "SIGTERM".into(),
                ..Default::default()
            },
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: "0".into(),
            ..Default::default()
        },
        log_dir: data.join("pods"),
    };
    let result = run_all(&fixture);
    skiff_kubelet::agent::clean(&data, &cgroup_parent);
    result.unwrap();
    assert_clean(work.path(), &cgroup_dirs(&cgroup_parent));
}
