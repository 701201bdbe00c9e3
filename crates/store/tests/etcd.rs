//! The etcd backend against real etcd servers (Debian `etcd-server`) on loopback: the
//! conformance suite on a single member, and a three-member cluster that loses a member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::time::Duration;

use skiff_store::testing::EtcdCluster;
use skiff_store::*;

async fn connect(cluster: &EtcdCluster) -> EtcdStore {
    let opts = EtcdOptions {
        endpoints: cluster.endpoints(),
        ..Default::default()
    };
    // A fresh member may take a moment to elect itself leader.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match EtcdStore::connect(&opts).await {
            Ok(s) if s.current_revision().await.is_ok() => return s,
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(_) => panic!("etcd never answered"),
            Err(e) => panic!("connect to etcd: {e}"),
        }
    }
}

async fn single() -> (EtcdStore, EtcdCluster) {
    let cluster = EtcdCluster::start(1).unwrap();
    (connect(&cluster).await, cluster)
}

mod single_member {
    use super::*;
    conformance!(single());
}

async fn three() -> (EtcdStore, EtcdCluster) {
    let cluster = EtcdCluster::start(3).unwrap();
    (connect(&cluster).await, cluster)
}

mod three_members {
    use super::*;
    conformance!(three());
}

/// Which member is the raft leader (the hardest one to lose).
async fn leader_index(cluster: &EtcdCluster) -> usize {
    for (i, ep) in cluster.endpoints().iter().enumerate() {
        let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
        let st = c.status().await.unwrap();
        if st.header().map(|h| h.member_id()) == Some(st.leader()) {
            return i;
        }
    }
    panic!("no member is the leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_losing_the_leader() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let s = connect(&cluster).await;
    let mut w = s
        .watch(
            KeyRange::Prefix("/ha/".into()),
            WatchOptions {
                start_revision: None,
                prev_kv: true,
            },
        )
        .await
        .unwrap();
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(
            s.create(&format!("/ha/{i}"), b"v".to_vec(), 0)
                .await
                .unwrap(),
        );
    }
    let leader = leader_index(&cluster).await;
    cluster.kill(leader);
    // The remaining two still have a quorum: writes (after at most a leader election,
    // which the client may see as a few failed requests) and reads go on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut i = 20;
    while i < 40 {
        match s.create(&format!("/ha/{i}"), b"v".to_vec(), 0).await {
            Ok(r) => {
                revs.push(r);
                i += 1;
            }
            Err(StoreError::AlreadyExists { mod_revision, .. }) => {
                // An earlier attempt did commit before its answer was lost.
                revs.push(mod_revision);
                i += 1;
            }
            Err(e) if e.category() == Category::Unavailable => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cluster stayed unavailable: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(s.count("/ha/").await.unwrap(), 40);
    // The watcher saw every write exactly once, in order, across the member's loss.
    for rev in &revs {
        let e = conformance::next_event(&mut w).await.unwrap();
        assert_eq!(e.kv.mod_revision, *rev);
    }
    // A client that only knows the survivors works too.
    let s2 = connect(&cluster).await;
    assert_eq!(s2.count("/ha/").await.unwrap(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = EtcdStore::connect(&EtcdOptions {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        connect_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.category(), Category::Unavailable);
    assert!(e.to_string().contains(&port.to_string()), "{e}");
}

/// Write a CA, a server certificate for 127.0.0.1 and a client certificate with openssl.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=skiff-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            ext,
            "-out",
            &format!("{name}.crt"),
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    make_certs(d);
    let cluster = EtcdCluster::start_tls(
        1,
        &skiff_store::testing::EtcdTls {
            cert_file: d.join("server.crt"),
            key_file: d.join("server.key"),
            client_ca_file: d.join("ca.crt"),
        },
    )
    .unwrap();
    let opts = EtcdOptions {
        endpoints: cluster.endpoints(),
        ca_file: Some(d.join("ca.crt")),
        cert_file: Some(d.join("client.crt")),
        key_file: Some(d.join("client.key")),
        connect_timeout: Some(Duration::from_secs(5)),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        match EtcdStore::connect(&opts).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("TLS connect: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let rev = s.create("/tls/a", b"v".to_vec(), 0).await.unwrap();
    assert_eq!(
        s.get("/tls/a", None)
            .await
            .unwrap()
            .kv
            .unwrap()
            .mod_revision,
        rev
    );

    // Without a client certificate the server refuses: a clear, unavailable-type error.
    let e = EtcdStore::connect(&EtcdOptions {
        cert_file: None,
        key_file: None,
        ..opts.clone()
    })
    .await
    .unwrap_err();
    assert_eq!(e.category(), Category::Unavailable, "{e}");
    // A missing certificate file names the file.
    let e = EtcdStore::connect(&EtcdOptions {
        cert_file: Some(d.join("nope.crt")),
        ..opts
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("nope.crt"), "{e}");
}
