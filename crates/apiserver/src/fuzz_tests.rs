//! Property tests of request decoding: arbitrary and mutated bodies (JSON, YAML,
//! Kubernetes protobuf) for several kinds go through the real router, in process, on an
//! in-memory store. Whatever comes in, the server answers with a success or a typed
//! Kubernetes Status error — never a panic, never a 500.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{handlers, proto, watch_cache, AppState, Peer};

/// Valid objects of several kinds: the seeds that mutations start from.
fn seeds() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"a": "b"}}, "data": {"k": "v", "n": "123"}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}]}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        ),
        (
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": 8080}], "type": "NodePort"}}),
        ),
        (
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"}, "type": "Opaque", "data": {"k": "dg=="}}),
        ),
    ]
}

struct Harness {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    _pki_dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Credentials for the kubelet client (generated once per harness, in a temp dir).
        let pki_dir = tempfile::tempdir().expect("temp dir");
        let pki = crate::pki::ensure(pki_dir.path(), "https://127.0.0.1:6443", &[]).expect("pki");
        let app = rt.block_on(async {
            let store: Arc<dyn skiff_store::Store> =
                Arc::new(skiff_store::EmbeddedStore::in_memory().expect("in-memory store"));
            let alloc = crate::alloc::Allocator::new(Default::default());
            handlers::bootstrap(&*store, &alloc, 6443)
                .await
                .expect("bootstrap");
            let cache = watch_cache::WatchCache::start(store.clone())
                .await
                .expect("watch cache");
            let definitions = skiff_api::openapi::v2()
                .get("definitions")
                .cloned()
                .unwrap_or_default();
            handlers::router(Arc::new(AppState {
                objects: crate::Objects {
                    store: store.clone(),
                    definitions,
                    alloc,
                    clock: Arc::new(crate::meta::SystemClock),
                    event_ttl: None,
                    event_leases: Default::default(),
                    crds: Default::default(),
                    authz: Default::default(),
                    webhooks: Default::default(),
                    policies: Default::default(),
                },
                cache,
                token: "t".into(),
                signer: crate::sa_token::load_signer(&pki.ca_key).expect("signing key"),
                authz: Default::default(),
                ca_pem: String::new(),
                server_address: "127.0.0.1:6443".into(),
                proto: proto::Schema::new(),
                audit: None,
                kubelet: crate::kubelet_client::KubeletClient::new(&pki, None)
                    .expect("kubelet client"),
                health: crate::metrics::Health::new(store.clone(), Default::default()),
                shutdown: Default::default(),
                metrics: crate::metrics::Metrics::new(),
                resource_metrics: Default::default(),
            }))
        });
        Harness {
            rt,
            app,
            _pki_dir: pki_dir,
        }
    }

    /// Sends one request; returns the status code and the decoded body.
    fn send(&self, method: Method, path: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(Body::from(body))
            .expect("request");
        req.extensions_mut().insert(Peer::ClientCert);
        req.extensions_mut().insert(crate::audit::UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        });
        self.rt.block_on(async {
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let code = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("HTTP {code}: body is not JSON ({e}): {bytes:?}");
            });
            (code, v)
        })
    }
}

/// A success is an object of the kind; a failure a Status with a reason and message.
fn check_answer(code: u16, v: &Value) -> Result<(), TestCaseError> {
    prop_assert!(code < 500, "HTTP {code}: {v}");
    if code >= 400 {
        prop_assert_eq!(&v["kind"], "Status", "HTTP {}: {}", code, v);
        prop_assert_eq!(&v["code"], code, "{}", v);
        prop_assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
        prop_assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    } else {
        prop_assert!(v["metadata"].is_object(), "HTTP {code}: {v}");
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                // Bytes that change the structure more often than random ones do.
                prop::sample::select(vec![
                    b"{".to_vec(),
                    b"}".to_vec(),
                    b"[".to_vec(),
                    b"\"".to_vec(),
                    b":".to_vec(),
                    b",".to_vec(),
                    b"\\".to_vec(),
                    b"\n- ".to_vec(),
                    b"\n  ".to_vec(),
                    b"&a ".to_vec(),
                    b"*a".to_vec(),
                    b"!!binary ".to_vec(),
                    b"null".to_vec(),
                    b"1e999".to_vec(),
                    b"-0".to_vec(),
                    b"\xff\xfe".to_vec(),
                ]),
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match m {
            Mutation::Flip { at, byte } if n > 0 => b[at % n] = *byte,
            Mutation::Insert { at, bytes } => {
                let at = at % (n + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete { at, len } if n > 0 => {
                let at = at % n;
                b.drain(at..(at + len).min(n));
            }
            Mutation::Truncate { at } => b.truncate(at % (n + 1)),
            _ => {}
        }
    }
    b
}

/// Any JSON value, kept small.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["", "a", "-", "A_b", "0", "true"]).prop_map(|s| json!(s)),
        "[a-z]{250,300}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON pointers into the seeds where a foreign value does the most damage.
const SPOTS: &[&str] = &[
    "/apiVersion",
    "/kind",
    "/metadata",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/labels",
    "/metadata/annotations",
    "/metadata/ownerReferences",
    "/metadata/finalizers",
    "/metadata/resourceVersion",
    "/metadata/generateName",
    "/spec",
    "/spec/containers",
    "/spec/containers/0",
    "/spec/containers/0/ports",
    "/spec/containers/0/env",
    "/spec/replicas",
    "/spec/selector",
    "/spec/template",
    "/spec/ports",
    "/spec/ports/0/port",
    "/spec/type",
    "/spec/clusterIP",
    "/data",
    "/status",
];

fn put_at(v: &mut Value, ptr: &str, x: Value) {
    let (parent, last) = ptr.rsplit_once('/').unwrap_or(("", ptr));
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last.to_string(), x);
        }
        Some(Value::Array(a)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *slot = x;
            }
        }
        _ => {}
    }
}

fn media(yaml: bool) -> &'static str {
    if yaml {
        "application/yaml"
    } else {
        "application/json"
    }
}

fn encode(v: &Value, yaml: bool) -> Vec<u8> {
    if yaml {
        serde_saphyr::to_string(v).expect("YAML").into_bytes()
    } else {
        v.to_string().into_bytes()
    }
}

/// A protobuf field: (number, wire type, payload).
#[derive(Debug, Clone)]
enum PField {
    Varint(u64, u64),
    Bytes(u64, Vec<u8>),
    Message(u64, Vec<PField>),
    Fixed32(u64, u32),
    Fixed64(u64, u64),
}

fn arb_pfields() -> impl Strategy<Value = Vec<PField>> {
    let leaf = prop_oneof![
        (1u64..20, any::<u64>()).prop_map(|(n, v)| PField::Varint(n, v)),
        (1u64..20, prop::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(n, b)| PField::Bytes(n, b)),
        (1u64..20, any::<u32>()).prop_map(|(n, v)| PField::Fixed32(n, v)),
        (1u64..20, any::<u64>()).prop_map(|(n, v)| PField::Fixed64(n, v)),
    ];
    let field = leaf.prop_recursive(4, 32, 6, |inner| {
        (1u64..20, prop::collection::vec(inner, 0..6)).prop_map(|(n, f)| PField::Message(n, f))
    });
    prop::collection::vec(field, 0..8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn pencode(fields: &[PField]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            PField::Varint(n, v) => {
                varint(&mut out, n << 3);
                varint(&mut out, *v);
            }
            PField::Bytes(n, b) => {
                varint(&mut out, n << 3 | 2);
                varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
            PField::Message(n, inner) => {
                let b = pencode(inner);
                varint(&mut out, n << 3 | 2);
                varint(&mut out, b.len() as u64);
                out.extend_from_slice(&b);
            }
            PField::Fixed32(n, v) => {
                varint(&mut out, n << 3 | 5);
                out.extend_from_slice(&v.to_le_bytes());
            }
            PField::Fixed64(n, v) => {
                varint(&mut out, n << 3 | 1);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
fn proto_envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = pencode(&[
        PField::Bytes(1, api_version.as_bytes().to_vec()),
        PField::Bytes(2, kind.as_bytes().to_vec()),
    ]);
    let mut out = b"k8s\x00".to_vec();
    out.extend(pencode(&[
        PField::Bytes(1, type_meta),
        PField::Bytes(2, raw.to_vec()),
    ]));
    out
}

/// 128 cases per property; `PROPTEST_CASES=N` for a longer hunt by hand.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Seeds with byte-level mutations, as JSON or YAML, created or written over the seed.
    #[test]
    fn mutated_bodies_get_statuses(seed in 0usize..7, yaml in any::<bool>(), put in any::<bool>(),
                                   muts in prop::collection::vec(mutation(), 1..5)) {
        let h = Harness::new();
        let (path, obj) = &seeds()[seed];
        let body = mutate(encode(obj, yaml), &muts);
        let (code, v) = h.send(Method::POST, path, media(yaml), encode(obj, yaml));
        prop_assert_eq!(code, 201, "{}", v);
        let (code, v) = if put {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            h.send(Method::PUT, &format!("{path}/{name}"), media(yaml), body)
        } else {
            h.send(Method::POST, path, media(yaml), body)
        };
        check_answer(code, &v)?;
        // Still serving.
        let (code, v) = h.send(Method::GET, path, "", Vec::new());
        prop_assert_eq!(code, 200, "{}", v);
    }

    /// Seeds with foreign values in the places that matter, as JSON or YAML.
    #[test]
    fn foreign_values_get_statuses(seed in 0usize..7, yaml in any::<bool>(),
                                   edits in prop::collection::vec((prop::sample::select(SPOTS), arb_json()), 1..4)) {
        let h = Harness::new();
        let (path, obj) = &seeds()[seed];
        let mut obj = obj.clone();
        for (spot, x) in edits {
            put_at(&mut obj, spot, x);
        }
        let (code, v) = h.send(Method::POST, path, media(yaml), encode(&obj, yaml));
        check_answer(code, &v)?;
    }

    /// Merge, strategic and JSON patches of arbitrary shape (JSON or YAML) over each seed.
    #[test]
    fn arbitrary_patches_get_statuses(seed in 0usize..7, yaml in any::<bool>(), patch in arb_json(),
                                      ptype in prop::sample::select(vec![
                                          "application/merge-patch+json",
                                          "application/strategic-merge-patch+json",
                                          "application/json-patch+json",
                                      ]),
                                      muts in prop::collection::vec(mutation(), 0..3)) {
        let h = Harness::new();
        let (path, obj) = &seeds()[seed];
        let (code, v) = h.send(Method::POST, path, "application/json", obj.to_string().into_bytes());
        prop_assert_eq!(code, 201, "{}", v);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let body = mutate(encode(&patch, yaml), &muts);
        let (code, v) = h.send(Method::PATCH, &format!("{path}/{name}"), ptype, body);
        check_answer(code, &v)?;
    }

    /// Protobuf bodies: random messages in a well-formed envelope for each kind, and the
    /// captured kubectl ConfigMap body with byte mutations.
    #[test]
    fn protobuf_bodies_get_statuses(seed in 0usize..7, fields in arb_pfields(),
                                    muts in prop::collection::vec(mutation(), 0..4)) {
        let h = Harness::new();
        let (path, obj) = &seeds()[seed];
        let ct = "application/vnd.kubernetes.protobuf";
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let body = mutate(proto_envelope(api_version, kind, &pencode(&fields)), &muts);
        let (code, v) = h.send(Method::POST, path, ct, body);
        check_answer(code, &v)?;
        let kubectl: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1b\x0a\x11\x0a\x01x\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\x22\x00";
        let (code, v) = h.send(Method::POST, "/api/v1/namespaces/default/configmaps", ct, mutate(kubectl.to_vec(), &muts));
        check_answer(code, &v)?;
    }

    /// Random bytes under every media type.
    #[test]
    fn random_bytes_get_statuses(seed in 0usize..7, body in prop::collection::vec(any::<u8>(), 0..256),
                                 ct in prop::sample::select(vec![
                                     "application/json", "application/yaml",
                                     "application/vnd.kubernetes.protobuf", "text/plain", "",
                                 ])) {
        let h = Harness::new();
        let (path, _) = &seeds()[seed];
        let (code, v) = h.send(Method::POST, path, ct, body);
        check_answer(code, &v)?;
    }
}

#[test]
fn yaml_bodies_decode_like_json() {
    let h = Harness::new();
    for (path, obj) in seeds() {
        let (code, v) = h.send(Method::POST, path, "application/yaml", encode(&obj, true));
        assert_eq!(code, 201, "{v}");
        assert_eq!(v["metadata"]["name"], obj["metadata"]["name"]);
        if let Some(data) = obj.get("data") {
            assert_eq!(
                &v["data"], data,
                "strings that look like numbers stay strings"
            );
        }
    }
    // Malformed YAML: a 400 Status that says where.
    let (code, v) = h.send(
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n".to_vec(),
    );
    assert_eq!(code, 400, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("not valid YAML") && msg.contains("line "),
        "{msg}"
    );
}

proptest! {
    #![proptest_config(config())]

    /// Subresource writes (status, scale, binding, eviction, token, finalize) with
    /// arbitrary bodies or seeds with foreign values.
    #[test]
    fn subresource_bodies_get_statuses(seed in 0usize..7, body in arb_json(), use_seed in any::<bool>(),
                                       edits in prop::collection::vec((prop::sample::select(SPOTS), arb_json()), 0..3),
                                       sub in prop::sample::select(vec![
                                           ("PUT", "status", "application/json"),
                                           ("PATCH", "status", "application/merge-patch+json"),
                                           ("PUT", "scale", "application/json"),
                                           ("PATCH", "scale", "application/merge-patch+json"),
                                           ("POST", "binding", "application/json"),
                                           ("POST", "eviction", "application/json"),
                                           ("POST", "token", "application/json"),
                                           ("PUT", "finalize", "application/json"),
                                       ])) {
        let h = Harness::new();
        let (path, obj) = &seeds()[seed];
        let (code, v) = h.send(Method::POST, path, "application/json", obj.to_string().into_bytes());
        prop_assert_eq!(code, 201, "{}", v);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let mut body = if use_seed { obj.clone() } else { body };
        for (spot, x) in edits {
            put_at(&mut body, spot, x);
        }
        let (method, sub, ct) = sub;
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let (code, v) = h.send(method, &format!("{path}/{name}/{sub}"), ct, body.to_string().into_bytes());
        // Subresources a kind lacks are 404/405 Statuses, which check_answer accepts.
        check_answer(code, &v)?;
        let (code, v) = h.send(Method::GET, path, "", Vec::new());
        prop_assert_eq!(code, 200, "{}", v);
    }
}
