//! Watches that never miss an event: a compaction the watch cache did not see in time
//! ends every live watch with 410 Gone, so a kube-rs reflector relists and kubectl stops
//! (and a new `get` shows the store as it is) instead of silently skipping the gap. Also
//! bookmarks, streaming lists (`sendInitialEvents`) and the validation of watch options as
//! kube-apiserver does them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::reflector;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use skiff_store::testing::EtcdCluster;
use skiff_store::{EtcdOptions, EtcdStore, Op, Store, Txn};

use crate::common::{Server, VERSIONS};
use crate::kube_rs::{client, cm, listed, reader_view, until, view, View};

/// Watch lines of a curl'ed watch.
fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

#[test]
fn watch_options_are_validated_as_kube_apiserver_does() {
    let s = Server::start();
    let cm = "/api/v1/namespaces/default/configmaps";
    let get = |q: &str| s.curl("GET", &format!("{cm}?{q}"), &[]).http();
    let invalid = |q: &str, causes: &[(&str, &str)]| {
        let (code, st) = get(q);
        assert_eq!((code, &st["reason"]), (422, &json!("Invalid")), "{q}: {st}");
        assert!(
            st["message"]
                .as_str()
                .unwrap()
                .starts_with("ListOptions.meta.k8s.io \"\" is invalid: "),
            "{st}"
        );
        let got: Vec<(String, String)> = st["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["field"].as_str().unwrap().to_string(),
                    c["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = causes
            .iter()
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, want, "{q}");
    };
    invalid(
        "watch=1&sendInitialEvents=true&allowWatchBookmarks=true",
        &[(
            "resourceVersionMatch",
            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        )],
    );
    invalid(
        "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        &[(
            "allowWatchBookmarks",
            "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
        )],
    );
    invalid(
        "watch=1&resourceVersionMatch=NotOlderThan",
        &[(
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        )],
    );
    invalid(
        "watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=Exact",
        &[
            (
                "resourceVersionMatch",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ),
            (
                "resourceVersionMatch",
                "Unsupported value: \"Exact\": supported values: \"NotOlderThan\"",
            ),
        ],
    );
    invalid(
        "sendInitialEvents=true",
        &[(
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for list",
        )],
    );
    invalid(
        "resourceVersionMatch=NotOlderThan",
        &[(
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        )],
    );
    invalid(
        "resourceVersion=0&resourceVersionMatch=Exact",
        &[(
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        )],
    );
    let (code, st) = get("watch=1&sendInitialEvents=maybe");
    assert_eq!((code, &st["reason"]), (400, &json!("BadRequest")), "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("sendInitialEvents"),
        "{st}"
    );
    // What clients send is accepted: kube-rs' streaming list and its list of any version.
    let (code, _) = get("resourceVersion=0&resourceVersionMatch=NotOlderThan");
    assert_eq!(code, 200);
    let o = s.curl(
        "GET",
        &format!("{cm}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=0&timeoutSeconds=1"),
        &[],
    );
    assert!(o.stdout.ends_with("\n200"), "{o:?}");
    // A resourceVersion newer than the store: kube-apiserver's 504 "Too large resource version".
    let (code, st) = get("watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=99999999");
    assert_eq!((code, &st["reason"]), (504, &json!("Timeout")), "{st}");
    assert_eq!(
        st["details"]["causes"][0]["reason"], "ResourceVersionTooLarge",
        "{st}"
    );
}

#[test]
fn bookmarks_carry_only_the_revision_and_mark_the_end_of_initial_events() {
    let s = Server::start();
    let cm = "/api/v1/namespaces/default/configmaps";
    for n in ["a", "b"] {
        let (code, _) = s.send(
            "POST",
            cm,
            "application/json",
            &json!({"metadata": {"name": n}, "data": {"k": "v"}}).to_string(),
        );
        assert_eq!(code, 201);
    }
    let (_, list) = s.curl("GET", cm, &[]).http();
    let list_rv: i64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // A streaming list: the objects as ADDED, then the initial-events-end bookmark at the
    // list's revision, then (before the 3 s timeout) a bookmark of the latest revision.
    let o = s.curl("GET", &format!("{cm}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=3"), &[]);
    let ev = lines(&o.stdout);
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["ADDED", "ADDED", "BOOKMARK", "BOOKMARK"],
        "{}",
        o.stdout
    );
    let end = &ev[2]["object"];
    assert_eq!(
        end,
        &json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {
                "resourceVersion": list_rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        }),
        "{}",
        o.stdout
    );
    let md = ev[3]["object"]["metadata"].as_object().unwrap();
    assert_eq!(ev[3]["object"]["kind"], "ConfigMap");
    assert_eq!(
        md.keys().collect::<Vec<_>>(),
        ["resourceVersion"],
        "{}",
        o.stdout
    );
    let rv: i64 = md["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv >= list_rv, "{}", o.stdout);

    // sendInitialEvents=false: no initial events, only what happens next.
    let o = s.curl("GET", &format!("{cm}?watch=1&sendInitialEvents=false&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=3"), &[]);
    let types: Vec<String> = lines(&o.stdout)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["BOOKMARK"], "{}", o.stdout);

    // Without allowWatchBookmarks there are none.
    let o = s.curl(
        "GET",
        &format!("{cm}?watch=1&resourceVersion={list_rv}&timeoutSeconds=3"),
        &[],
    );
    assert!(lines(&o.stdout).is_empty(), "{}", o.stdout);

    // PartialObjectMetadata watches get bookmarks of that kind.
    let o = s.curl(
        "GET",
        &format!(
            "{cm}?watch=1&resourceVersion={list_rv}&allowWatchBookmarks=true&timeoutSeconds=3"
        ),
        &[
            "-H",
            "Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        ],
    );
    let ev = lines(&o.stdout);
    assert_eq!(ev.len(), 1, "{}", o.stdout);
    assert_eq!(ev[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(ev[0]["object"]["apiVersion"], "meta.k8s.io/v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_streaming_list_watcher_sees_init_done() {
    let s = Server::start();
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    for n in ["a", "b", "c"] {
        cms.create(&PostParams::default(), &cm(n, &[]))
            .await
            .unwrap();
    }
    let mut stream = std::pin::pin!(watcher(
        cms.clone(),
        watcher::Config::default().streaming_lists()
    ));
    let mut seen = Vec::new();
    loop {
        match next_event(&mut stream).await {
            watcher::Event::Init => seen.push("Init".to_string()),
            watcher::Event::InitApply(o) => {
                seen.push(format!("InitApply {}", o.metadata.name.unwrap()))
            }
            watcher::Event::InitDone => {
                seen.push("InitDone".to_string());
                break;
            }
            other => panic!("unexpected before InitDone: {other:?} (after {seen:?})"),
        }
    }
    assert_eq!(
        seen,
        [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitDone"
        ]
    );
    cms.create(&PostParams::default(), &cm("d", &[]))
        .await
        .unwrap();
    match next_event(&mut stream).await {
        watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("d")),
        other => panic!("expected Apply d, got {other:?}"),
    }
}

/// The watcher's next event, which must come within 30 s and be no error.
async fn next_event<S>(stream: &mut S) -> watcher::Event<ConfigMap>
where
    S: futures_util::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a watcher event within 30 s")
        .expect("the watcher stream goes on")
        .expect("no watcher error")
}

/// A TCP proxy between the API server and etcd that can be cut (connections reset, new
/// ones refused) and restored: the API server loses its store while the test changes and
/// compacts it directly.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Proxy {
            addr: l.local_addr().unwrap(),
            open: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
        };
        let (open, stop, conns) = (p.open.clone(), p.stop.clone(), p.conns.clone());
        std::thread::spawn(move || {
            for down in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = down else { continue };
                if !open.load(Ordering::SeqCst) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut list = conns.lock().unwrap();
                for (from, to) in [(&down, &up), (&up, &down)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
                list.push(down);
                list.push(up);
            }
        });
        p
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// `kubectl get cm -w --output-watch-events -o json`, its events collected as they come.
struct KubectlWatch {
    version: &'static str,
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl KubectlWatch {
    fn start(s: &Server, version: &'static str) -> KubectlWatch {
        let mut child = s
            .kubectl_command(
                version,
                &[
                    "get",
                    "configmaps",
                    "-n",
                    "default",
                    "-w",
                    "--output-watch-events",
                    "-o",
                    "json",
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl get -w");
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let (out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let ev = events.clone();
        std::thread::spawn(move || {
            for v in serde_json::Deserializer::from_reader(out).into_iter::<Value>() {
                match v {
                    Ok(v) => ev.lock().unwrap().push(v),
                    Err(_) => break,
                }
            }
        });
        let se = stderr.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            se.lock().unwrap().push_str(&s);
        });
        KubectlWatch {
            version,
            child,
            events,
            stderr,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// The ConfigMaps as this watcher's events say they are.
    fn view(&self) -> View {
        let mut state: Vec<(String, ConfigMap)> = Vec::new();
        for e in self.events() {
            let Ok(obj) = serde_json::from_value::<ConfigMap>(e["object"].clone()) else {
                continue;
            };
            let name = obj.metadata.name.clone().unwrap_or_default();
            state.retain(|(n, _)| *n != name);
            if matches!(e["type"].as_str(), Some("ADDED" | "MODIFIED")) {
                state.push((name, obj));
            }
        }
        view(state.iter().map(|(_, o)| o))
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for KubectlWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ConfigMaps of namespace default as etcd holds them.
async fn in_etcd(etcd: &EtcdStore) -> View {
    let res = etcd
        .list("/registry/core/configmaps/default/", &Default::default())
        .await
        .unwrap();
    let objs: Vec<ConfigMap> = res
        .kvs
        .iter()
        .map(|kv| {
            let mut o: ConfigMap = serde_json::from_slice(&kv.value).unwrap();
            o.metadata.resource_version = Some(kv.mod_revision.to_string());
            o
        })
        .collect();
    view(&objs)
}

/// ConfigMap `name` as stored in etcd: a copy of `from` with `data`.
async fn stored(etcd: &EtcdStore, from: &str, name: &str, data: Value) -> Op {
    let kv = etcd.get(&key(from), None).await.unwrap().kv.unwrap();
    let mut o: Value = serde_json::from_slice(&kv.value).unwrap();
    if from != name {
        o["metadata"]["name"] = json!(name);
        o["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", name.len()));
    }
    o["data"] = data;
    if let Some(md) = o["metadata"].as_object_mut() {
        md.remove("resourceVersion");
    }
    Op::Put {
        key: key(name),
        value: serde_json::to_vec(&o).unwrap(),
        lease: 0,
    }
}

fn key(name: &str) -> String {
    format!("/registry/core/configmaps/default/{name}")
}

/// Writes `ops` to etcd directly, in one transaction (one revision).
async fn write_direct(etcd: &EtcdStore, ops: Vec<Op>) {
    etcd.txn(Txn {
        compares: vec![],
        success: ops,
        failure: vec![],
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_compaction_under_live_watchers_ends_them_and_clients_relist() {
    let etcd = EtcdCluster::start(1).expect("start etcd");
    let endpoint = etcd.endpoints()[0].clone();
    let upstream: SocketAddr = endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("etcd endpoint host:port");
    let proxy = Proxy::start(upstream);
    let s = Server::start_with(&["--datastore-endpoint", &proxy.url()]);
    let direct = EtcdStore::connect(&EtcdOptions {
        endpoints: etcd.endpoints(),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    for i in 0..4 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[("v", "0")]))
            .await
            .unwrap();
    }

    // Live watchers: a kube-rs reflector (counting the 410s it gets) and kubectl get -w
    // of the oldest and newest supported versions.
    let gone = Arc::new(AtomicUsize::new(0));
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default()).default_backoff(),
    );
    let counter = gone.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(watcher::Error::WatchError(st)) = &ev {
                if st.code == 410 {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    let mut kubectls: Vec<KubectlWatch> = VERSIONS
        .iter()
        .map(|v| KubectlWatch::start(&s, v))
        .collect();
    let want = in_etcd(&direct).await;
    assert_eq!(want.len(), 4);
    assert_eq!(want, listed(&cms).await);
    until("the watchers to see the 4 ConfigMaps", || async {
        (reader_view(&reader) == want && kubectls.iter().all(|k| k.view() == want)).then_some(())
    })
    .await;

    // 1. The store out of reach and back, nothing compacted: every watch resumes where it
    //    was and sees the changes made meanwhile — both keys of one transaction, which
    //    share a revision; none ends.
    proxy.cut();
    let ops = vec![
        stored(&direct, "c0", "c0", json!({"v": "1"})).await,
        stored(&direct, "c1", "c1", json!({"v": "1"})).await,
    ];
    write_direct(&direct, ops).await;
    proxy.restore();
    let want = in_etcd(&direct).await;
    assert_eq!(want["c0"].0, want["c1"].0, "one revision for both");
    until("the watchers to see c0's and c1's change", || async {
        (reader_view(&reader) == want && kubectls.iter().all(|k| k.view() == want)).then_some(())
    })
    .await;
    assert_eq!(gone.load(Ordering::SeqCst), 0);
    for k in &mut kubectls {
        assert!(k.running(), "kubectl {} ended: {:?}", k.version, k.stderr);
    }

    // 2. Changes, then a compaction, while the API server cannot see the store: its watch
    //    cache misses them for good. Every live watch must end rather than go on without.
    proxy.cut();
    let op = stored(&direct, "c1", "c1", json!({"v": "2"})).await;
    write_direct(&direct, vec![op]).await;
    direct.delete(&key("c2"), None).await.unwrap();
    let op = stored(&direct, "c3", "c9", json!({"v": "9"})).await;
    write_direct(&direct, vec![op]).await;
    let rev = direct.current_revision().await.unwrap();
    direct.compact(rev).await.unwrap();
    proxy.restore();
    let want = in_etcd(&direct).await;
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ["c0", "c1", "c3", "c9"],
        "{want:?}"
    );

    // kubectl: the ERROR event (410 Gone) and the end of the watch, never the gap's events.
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in &mut kubectls {
        while k.running() {
            assert!(
                Instant::now() < deadline,
                "kubectl {} still watching after the compaction: {:?}",
                k.version,
                k.events().last()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = k.events();
        let last = events.last().unwrap();
        assert_eq!(
            (
                &last["type"],
                &last["object"]["code"],
                &last["object"]["reason"]
            ),
            (&json!("ERROR"), &json!(410), &json!("Expired")),
            "kubectl {}: {last}",
            k.version
        );
        assert_ne!(
            k.view(),
            want,
            "kubectl {} cannot have seen the gap",
            k.version
        );
        // A user's next `kubectl get` shows the store exactly.
        let out = tokio::task::block_in_place(|| {
            s.kubectl(
                k.version,
                &["get", "configmaps", "-n", "default", "-o", "json"],
            )
        })
        .ok();
        let list: Value = serde_json::from_str(&out.stdout).unwrap();
        let items: Vec<ConfigMap> = serde_json::from_value(list["items"].clone()).unwrap();
        assert_eq!(view(&items), want, "kubectl {} relist", k.version);
    }

    // kube-rs: the reflector got 410, relisted, and holds exactly the store's state.
    until("the reflector to relist after the compaction", || async {
        (reader_view(&reader) == want).then_some(())
    })
    .await;
    assert!(gone.load(Ordering::SeqCst) >= 1);
    task.abort();
}
