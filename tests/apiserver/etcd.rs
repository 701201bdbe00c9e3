//! `skiff server --datastore-endpoint` with a real etcd (Debian etcd-server) on free
//! loopback ports: a kubectl round trip, and the objects are etcd's keys.

use skiff_store::testing::EtcdCluster;

use crate::common::Server;

#[test]
fn kubectl_round_trip_on_etcd() {
    let etcd = EtcdCluster::start(1).expect("start etcd");
    let endpoints = etcd.endpoints().join(",");
    let mut s = Server::start_with(&["--datastore-endpoint", &endpoints]);
    for v in crate::common::VERSIONS {
        let name = format!("cm-{}", v.replace('.', "-"));
        s.kubectl(v, &["create", "configmap", &name, "--from-literal=k=v"])
            .ok();
        let got = s
            .kubectl(v, &["get", "cm", &name, "-o", "jsonpath={.data.k}"])
            .ok();
        assert_eq!(got.stdout, "v");
    }
    // The state lives in etcd: a restarted server (new data dir contents aside) sees it,
    // and resourceVersions are etcd revisions.
    s.restart();
    let names = s.kubectl("1.33", &["get", "cm", "-o", "name"]).ok().stdout;
    assert_eq!(names, "configmap/cm-1-27\nconfigmap/cm-1-33\n");
    let rv: i64 = s
        .kubectl(
            "1.33",
            &[
                "get",
                "cm",
                "cm-1-33",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
        )
        .ok()
        .stdout
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kv = rt.block_on(async {
        let store = skiff_store::EtcdStore::connect(&skiff_store::EtcdOptions {
            endpoints: etcd.endpoints(),
            ..Default::default()
        })
        .await
        .unwrap();
        use skiff_store::Store;
        store
            .get("/registry/core/configmaps/default/cm-1-33", None)
            .await
            .unwrap()
            .kv
    });
    assert_eq!(kv.expect("key in etcd").mod_revision, rv);
    s.kubectl("1.33", &["delete", "cm", "cm-1-27"]).ok();
    let e = s.kubectl("1.27", &["get", "cm", "cm-1-27"]).fails();
    assert!(e.stderr.contains("not found"), "{e:?}");
}

#[test]
fn unreachable_etcd_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let mut c = std::process::Command::new(crate::common::SKIFF);
    c.arg("server").arg("--data-dir").arg(dir.path()).args([
        "--listen",
        "127.0.0.1:0",
        "--disable-registry",
        "--datastore-endpoint",
        &format!("http://127.0.0.1:{port}"),
    ]);
    let out = crate::common::run(c, None);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("connect to etcd at http://127.0.0.1:")
            && out
                .stderr
                .contains("is it running and reachable from here?"),
        "{out:?}"
    );
    // Nothing is left of a first start that failed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let mut c = std::process::Command::new(crate::common::SKIFF);
    c.arg("server").arg("--data-dir").arg(dir.path()).args([
        "--listen",
        "127.0.0.1:0",
        "--disable-registry",
        "--datastore-endpoint",
        "127.0.0.1:2379",
    ]);
    let out = crate::common::run(c, None);
    assert!(out.stderr.contains("use http://host:port"), "{out:?}");
}

/// A LIST bigger than one etcd response may be (4 MiB for the client) is read in pages:
/// here 40 ConfigMaps of 200 KB, written straight into etcd.
#[test]
fn large_list_on_etcd() {
    let etcd = EtcdCluster::start(1).expect("start etcd");
    let endpoints = etcd.endpoints().join(",");
    let s = Server::start_with(&["--datastore-endpoint", &endpoints]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = "x".repeat(200 * 1024);
    let revs: Vec<i64> = rt.block_on(async {
        use skiff_store::Store;
        let store = skiff_store::EtcdStore::connect(&skiff_store::EtcdOptions {
            endpoints: etcd.endpoints(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut revs = Vec::new();
        for i in 0..40 {
            let name = format!("big-{i:02}");
            let obj = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default", "uid": format!("u-{i}"), "creationTimestamp": "2026-01-01T00:00:00Z"},
                "data": {"blob": big},
            });
            let key = format!("/registry/core/configmaps/default/{name}");
            revs.push(store.put(&key, obj.to_string().into_bytes(), 0).await.unwrap());
        }
        revs
    });
    let (code, v) = s
        .curl("GET", "/api/v1/namespaces/default/configmaps", &[])
        .http();
    assert_eq!(
        code,
        200,
        "{}",
        &v.to_string()[..v.to_string().len().min(300)]
    );
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 40);
    for (i, (item, rev)) in items.iter().zip(&revs).enumerate() {
        assert_eq!(item["metadata"]["name"], format!("big-{i:02}"));
        assert_eq!(item["metadata"]["resourceVersion"], rev.to_string());
        assert_eq!(item["data"]["blob"].as_str().unwrap().len(), big.len());
    }
    let list_rv: i64 = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(list_rv >= *revs.last().unwrap());
}

/// Servers on one etcd serve one cluster: a second server with an empty data dir takes
/// the first's CA and join token from the store (each still has its own serving
/// certificate), so one kubeconfig works against both; a server whose data dir holds
/// another cluster's CA is refused with what is wrong and how to fix it.
#[test]
fn servers_on_one_etcd_share_the_cluster_ca_and_refuse_a_foreign_one() {
    let etcd = EtcdCluster::start(1).expect("start etcd");
    let endpoints = etcd.endpoints().join(",");
    let a = Server::start_with(&["--datastore-endpoint", &endpoints]);
    let b = Server::start_with(&["--datastore-endpoint", &endpoints]);
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(a.pki("ca.crt")), read(b.pki("ca.crt")));
    assert_eq!(read(a.pki("ca.key")), read(b.pki("ca.key")));
    assert_eq!(a.token(), b.token());
    assert_ne!(read(a.pki("server.crt")), read(b.pki("server.crt")));
    let c = a.kubectl_command("1.33", &["--server", &b.url, "get", "ns", "-o", "name"]);
    let out = crate::common::run(c, None).ok();
    assert!(out.stdout.contains("namespace/kube-system"), "{out:?}");

    // A data dir of another cluster (its own CA, made on its embedded store).
    let mut foreign = Server::start();
    foreign.stop();
    let mut c = std::process::Command::new(crate::common::SKIFF);
    c.arg("server")
        .arg("--data-dir")
        .arg(foreign.dir.path())
        .args(["--listen", "127.0.0.1:0", "--disable-agent"])
        .args(["--datastore-endpoint", &endpoints]);
    let out = crate::common::run(c, None);
    assert_ne!(out.code, 0, "{out:?}");
    for says in [
        "pki/ca.crt is not the CA of the cluster in the datastore",
        "/skiff/bootstrap",
        "Start this server with an empty data dir",
    ] {
        assert!(out.stderr.contains(says), "stderr lacks {says:?}: {out:?}");
    }
    // Nothing of the foreign dir was changed, and the cluster keeps its CA.
    assert_ne!(read(foreign.pki("ca.crt")), read(a.pki("ca.crt")));
    b.kubectl("1.33", &["get", "ns", "default"]).ok();
}
