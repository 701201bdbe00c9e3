//! The API at the HTTP level (curl with the admin certificate): authentication, discovery
//! formats, Status errors for bad input, optimistic concurrency, subresources, list
//! paging and tables, watch resume and 410 Gone.

use serde_json::{json, Value};

use crate::common::{write, Server};

fn post(s: &Server, path: &str, body: &str) -> (u16, Value) {
    s.send("POST", path, "application/json", body)
}

fn put(s: &Server, path: &str, body: &str) -> (u16, Value) {
    s.send("PUT", path, "application/json", body)
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    s.curl("GET", path, &[]).http()
}

#[test]
fn authentication() {
    let s = Server::start();
    let anon = |path: &str, extra: &[&str]| -> (u16, String) {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "-w", "\n%{http_code}", "--cacert"])
            .arg(s.pki("ca.crt"))
            .args(extra)
            .arg(format!("{}{path}", s.url));
        let o = crate::common::run(c, None);
        let (body, code) = o.stdout.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_string())
    };
    for open in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(anon(open, &[]), (200, "ok".to_string()));
    }
    let (code, body) = anon("/version", &[]);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["gitVersion"],
        "v1.33.0+skiff"
    );
    let (code, body) = anon("/api/v1/namespaces", &[]);
    assert_eq!(code, 401);
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Unauthorized");
    let bad = anon("/api/v1/namespaces", &["-H", "Authorization: Bearer wrong"]);
    assert_eq!(bad.0, 401);
    let auth = format!("Authorization: Bearer {}", s.token());
    let (code, body) = anon("/api/v1/namespaces", &["-H", &auth]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["kind"],
        "NamespaceList"
    );
}

#[test]
fn discovery_documents() {
    let s = Server::start();
    let (_, api) = get(&s, "/api");
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, v1) = get(&s, "/api/v1");
    let res = v1["resources"].as_array().unwrap();
    let pods = res.iter().find(|r| r["name"] == "pods").unwrap();
    assert_eq!(pods["singularName"], "pod");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
    assert!(res.iter().any(|r| r["name"] == "pods/status"));
    let ev = res.iter().find(|r| r["name"] == "pods/eviction").unwrap();
    assert_eq!(
        (ev["group"].clone(), ev["kind"].clone()),
        (json!("policy"), json!("Eviction"))
    );
    let (_, apis) = get(&s, "/apis");
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(groups.contains(&"apps") && groups.contains(&"batch"));
    let autoscaling = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .unwrap();
    assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
    let (_, apps) = get(&s, "/apis/apps/v1");
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .unwrap();
    assert_eq!(
        (scale["group"].clone(), scale["kind"].clone()),
        (json!("autoscaling"), json!("Scale"))
    );
    // Aggregated discovery, both versions kubectl asks for.
    for v in ["v2", "v2beta1"] {
        let accept = format!("Accept: application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList,application/json");
        let o = s.curl("GET", "/apis", &["-H", &accept, "-i"]);
        assert!(o.stdout.to_lowercase().contains(&format!("content-type: application/json;g=apidiscovery.k8s.io;v={v};as=apigroupdiscoverylist")), "{}", o.stdout);
        let body = o.stdout.split("\r\n\r\n").nth(1).unwrap();
        let body = body.rsplit_once('\n').unwrap().0;
        let doc: Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["kind"], "APIGroupDiscoveryList");
        assert_eq!(doc["apiVersion"], format!("apidiscovery.k8s.io/{v}"));
        let apps = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["responseKind"]["kind"], "Deployment");
    }
    let (code, _) = get(&s, "/apis/nope/v1");
    assert_eq!(code, 404);
    let (code, idx) = get(&s, "/openapi/v3");
    assert_eq!(code, 200);
    assert!(idx["paths"].get("apis/apps/v1").is_some(), "{idx}");
}

#[test]
fn bad_input_gets_status_errors() {
    let s = Server::start();
    let cm = "/api/v1/namespaces/default/configmaps";
    // Malformed JSON.
    let (code, st) = post(&s, cm, "{\"apiVersion\": \"v1\", \"kind\": ");
    assert_eq!(
        (code, st["reason"].clone()),
        (400, json!("BadRequest")),
        "{st}"
    );
    assert!(
        st["message"].as_str().unwrap().contains("not valid JSON"),
        "{st}"
    );
    // Not an object.
    assert_eq!(post(&s, cm, "[1,2]").0, 400);
    // Wrong kind and wrong apiVersion.
    let (code, st) = post(
        &s,
        cm,
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
    );
    assert_eq!(code, 400, "{st}");
    let (code, st) = post(
        &s,
        cm,
        r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    );
    assert_eq!(code, 400, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("does not match the expected API version"),
        "{st}"
    );
    // Invalid and too long names: 422 with causes and field paths.
    let (code, st) = post(
        &s,
        cm,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
    );
    assert_eq!(
        (code, st["reason"].clone()),
        (422, json!("Invalid")),
        "{st}"
    );
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(st["details"]["causes"][0]["reason"], "FieldValueInvalid");
    let long = "a".repeat(254);
    let (code, _) = post(
        &s,
        cm,
        &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{long}"}}}}"#),
    );
    assert_eq!(code, 422);
    let (code, st) = post(
        &s,
        "/api/v1/namespaces",
        &format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{}"}}}}"#,
            "n".repeat(64)
        ),
    );
    assert_eq!(code, 422, "{st}");
    // Missing required fields in a pod.
    let (code, st) = post(
        &s,
        "/api/v1/namespaces/default/pods",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#,
    );
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        st["details"]["causes"][0]["field"],
        "spec.containers[0].image"
    );
    assert_eq!(st["details"]["causes"][0]["reason"], "FieldValueRequired");
    // A body over 3 MiB.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let (code, st) = post(&s, cm, &big);
    assert_eq!(
        (code, st["reason"].clone()),
        (413, json!("RequestEntityTooLarge")),
        "{st}"
    );
    // Unknown fields: Strict refuses, Warn warns, Ignore accepts silently.
    let unknown = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u1"},"bogus":1}"#;
    let (code, st) = post(&s, &format!("{cm}?fieldValidation=Strict"), unknown);
    assert_eq!(code, 400, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"bogus\""),
        "{st}"
    );
    let f = write(s.dir.path(), "u.json", unknown);
    let o = s.curl(
        "POST",
        &format!("{cm}?fieldValidation=Warn"),
        &[
            "-i",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", f.display()),
        ],
    );
    assert!(
        o.stdout.contains("201")
            && o.stdout
                .to_lowercase()
                .contains("warning: 299 - \"unknown field \\\"bogus\\\"\""),
        "{}",
        o.stdout
    );
    let u2 = unknown.replace("u1", "u2");
    assert_eq!(
        post(&s, &format!("{cm}?fieldValidation=Ignore"), &u2).0,
        201
    );
    // Unsupported patch type and a patch that does not parse.
    let o = s.curl(
        "PATCH",
        &format!("{cm}/u1"),
        &["-H", "Content-Type: text/plain", "--data", "x"],
    );
    assert_eq!(o.http().0, 415);
    let o = s.curl(
        "PATCH",
        &format!("{cm}/u1"),
        &[
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            "{not json",
        ],
    );
    assert_eq!(o.http().0, 400);
    // Unknown resources and namespaces.
    assert_eq!(get(&s, "/api/v1/namespaces/default/widgets").0, 404);
    let (code, st) = post(
        &s,
        "/api/v1/namespaces/nope/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    );
    assert_eq!(code, 404);
    assert_eq!(st["message"], "namespaces \"nope\" not found");
    // The server still serves.
    assert_eq!(get(&s, "/api/v1/namespaces/default").0, 200);
}

#[test]
fn create_update_conflict_and_status() {
    let s = Server::start();
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let dep = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"generateName": "web-"},
        "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"replicas": 99},
    });
    let (code, created) = post(&s, base, &dep.to_string());
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    assert!(
        created
            .get("status")
            .is_none_or(|s| s.get("replicas").is_none()),
        "status is not set on create: {created}"
    );
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{base}/{name}");

    // Update with the current resourceVersion: generation bumps on a spec change.
    let mut upd = created.clone();
    upd["spec"]["replicas"] = json!(3);
    let (code, updated) = put(&s, &path, &upd.to_string());
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_ne!(updated["metadata"]["resourceVersion"].as_str().unwrap(), rv);
    // The stale resourceVersion conflicts with a Status.
    let (code, st) = put(&s, &path, &upd.to_string());
    assert_eq!(
        (code, st["reason"].clone()),
        (409, json!("Conflict")),
        "{st}"
    );
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));
    // Metadata-only changes keep the generation.
    let mut lab = updated.clone();
    lab["metadata"]["labels"] = json!({"x": "y"});
    let (_, labeled) = put(&s, &path, &lab.to_string());
    assert_eq!(labeled["metadata"]["generation"], 2);
    // Status goes through the status subresource only.
    let mut st_upd = labeled.clone();
    st_upd["status"] = json!({"replicas": 3, "readyReplicas": 1});
    st_upd["spec"]["replicas"] = json!(7);
    let (code, after) = put(&s, &format!("{path}/status"), &st_upd.to_string());
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["readyReplicas"], 1);
    assert_eq!(after["spec"]["replicas"], 3, "status writes ignore spec");
    let mut main = after.clone();
    main["status"] = json!({"replicas": 0});
    let (_, after2) = put(&s, &path, &main.to_string());
    assert_eq!(
        after2["status"]["readyReplicas"], 1,
        "main writes ignore status"
    );
    // Scale subresource.
    let (code, scale) = get(&s, &format!("{path}/scale"));
    assert_eq!(code, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=w");
    // Immutable selector.
    let mut sel = after2.clone();
    sel["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    sel["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let (code, st) = put(&s, &path, &sel.to_string());
    assert_eq!(code, 422, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable"),
        "{st}"
    );
}

#[test]
fn pods_binding_eviction_token_and_finalizers() {
    let s = Server::start();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["example.com/hold"]}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    let (code, p) = post(&s, pods, &pod.to_string());
    assert_eq!(code, 201, "{p}");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    let (code, b) = post(
        &s,
        &format!("{pods}/p/binding"),
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-1"}}"#,
    );
    assert_eq!(code, 201, "{b}");
    assert_eq!(
        get(&s, &format!("{pods}/p")).1["spec"]["nodeName"],
        "node-1"
    );
    let (code, _) = post(
        &s,
        &format!("{pods}/p/binding"),
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-2"}}"#,
    );
    assert_eq!(code, 409);
    // A finalizer turns delete into a deletionTimestamp; removing it completes the delete.
    let o = s.curl("DELETE", &format!("{pods}/p"), &[]);
    let (code, d) = o.http();
    assert_eq!(code, 200);
    assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d}");
    assert_eq!(get(&s, &format!("{pods}/p")).0, 200);
    let o = s.curl(
        "PATCH",
        &format!("{pods}/p"),
        &[
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    assert_eq!(o.http().0, 200, "{o:?}");
    // A bound pod is deleted gracefully: it stays for its kubelet, which removes it with
    // grace 0 once its containers are gone.
    let (code, p) = get(&s, &format!("{pods}/p"));
    assert_eq!(code, 200);
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30, "{p}");
    let o = s.curl("DELETE", &format!("{pods}/p?gracePeriodSeconds=0"), &[]);
    assert_eq!(o.http().0, 200, "{o:?}");
    assert_eq!(get(&s, &format!("{pods}/p")).0, 404);
    // Eviction deletes.
    let pod2 = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    post(&s, pods, &pod2.to_string());
    let (code, _) = post(
        &s,
        &format!("{pods}/q/eviction"),
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"q"}}"#,
    );
    assert_eq!(code, 201);
    assert_eq!(get(&s, &format!("{pods}/q")).0, 404);
    // Service account tokens.
    post(
        &s,
        "/api/v1/namespaces/default/serviceaccounts",
        r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"sa"}}"#,
    );
    let (code, tr) = post(
        &s,
        "/api/v1/namespaces/default/serviceaccounts/sa/token",
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#,
    );
    assert_eq!(code, 201, "{tr}");
    assert!(!tr["status"]["token"].as_str().unwrap().is_empty());
    // Access reviews answer allowed.
    let (code, r) = post(
        &s,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"get","resource":"pods"}}}"#,
    );
    assert_eq!((code, r["status"]["allowed"].clone()), (201, json!(true)));
}

#[test]
fn list_paging_tables_and_metadata() {
    let s = Server::start();
    let cm = "/api/v1/namespaces/default/configmaps";
    for i in 0..7 {
        let (code, _) = post(
            &s,
            cm,
            &format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{i}","labels":{{"n":"{}"}}}}}}"#,
                i % 2
            ),
        );
        assert_eq!(code, 201);
    }
    // limit/continue walks a consistent snapshot.
    let mut names = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let (_, page) = get(&s, &format!("{cm}?limit=3&continue={cont}"));
        pages += 1;
        for i in page["items"].as_array().unwrap() {
            names.push(i["metadata"]["name"].as_str().unwrap().to_string());
        }
        if pages == 1 {
            // Created after the first page: not part of this list's snapshot.
            post(
                &s,
                cm,
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c9"}}"#,
            );
        }
        match page["metadata"]["continue"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    // Label selector with set-based terms.
    let (_, l) = get(&s, &format!("{cm}?labelSelector=n%3D1"));
    assert_eq!(l["items"].as_array().unwrap().len(), 3);
    let (_, l) = get(&s, &format!("{cm}?labelSelector=n%20notin%20(1)"));
    let n: Vec<&str> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        n.contains(&"c0") && n.contains(&"c9") && !n.contains(&"c1"),
        "{n:?}"
    );
    // Table and PartialObjectMetadataList.
    let o = s.curl(
        "GET",
        cm,
        &[
            "-H",
            "Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ],
    );
    let (_, t) = o.http();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["columnDefinitions"][0]["name"], "Name");
    assert_eq!(t["rows"].as_array().unwrap().len(), 8);
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let o = s.curl(
        "GET",
        cm,
        &[
            "-H",
            "Accept: application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
        ],
    );
    let (_, m) = o.http();
    assert_eq!(m["kind"], "PartialObjectMetadataList");
    assert!(m["items"][0].get("data").is_none());
    // An exact resourceVersion lists the past.
    let rv = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    s.curl("DELETE", &format!("{cm}/c0"), &[]);
    let (_, past) = get(
        &s,
        &format!("{cm}?resourceVersion={rv}&resourceVersionMatch=Exact"),
    );
    assert_eq!(past["items"].as_array().unwrap().len(), 8);
    let (_, now) = get(&s, cm);
    assert_eq!(now["items"].as_array().unwrap().len(), 7);
}

#[test]
fn watch_stream_resume_and_gone() {
    let mut s = Server::start();
    let cm = "/api/v1/namespaces/default/configmaps";
    let (_, a) = post(
        &s,
        cm,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"w":"y"}}}"#,
    );
    let rv_a = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &s,
        cm,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b","labels":{"w":"y"}}}"#,
    );
    s.curl(
        "PATCH",
        &format!("{cm}/a"),
        &[
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            r#"{"data":{"k":"v"}}"#,
        ],
    );
    // Label moves out of the selector: the watcher sees it as DELETED.
    s.curl(
        "PATCH",
        &format!("{cm}/b"),
        &[
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            r#"{"metadata":{"labels":{"w":"n"}}}"#,
        ],
    );
    s.curl("DELETE", &format!("{cm}/a"), &[]);
    // Resume from a's creation: every later event, in order, then the stream ends at timeoutSeconds.
    let o = s.curl("GET", &format!("{cm}?watch=1&resourceVersion={rv_a}&labelSelector=w%3Dy&timeoutSeconds=2&allowWatchBookmarks=true"), &[]);
    let events: Vec<Value> = o
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect();
    let seen: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("DELETED", "a"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want, "{}", o.stdout);
    // Bookmarks (one comes before the timeout) repeat the revision of the last event.
    let revs: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    // sendInitialEvents: current objects, then the initial-events-end bookmark.
    let o = s.curl("GET", &format!("{cm}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"), &[]);
    let events: Vec<Value> = o
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect();
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // After a restart the history starts anew: resuming from before it is 410 Gone, sent
    // as kube-apiserver does, as the one ERROR event of the watch.
    s.restart();
    let (code, ev) = get(&s, &format!("{cm}?watch=1&resourceVersion={rv_a}"));
    assert_eq!(
        (
            code,
            &ev["type"],
            &ev["object"]["code"],
            &ev["object"]["reason"]
        ),
        (200, &json!("ERROR"), &json!(410), &json!("Expired")),
        "{ev}"
    );
}

/// curl with a body from a file and a Content-Type; returns the Out for raw inspection.
fn send(
    s: &Server,
    method: &str,
    path: &str,
    ct: &str,
    body: &[u8],
    extra: &[&str],
) -> crate::common::Out {
    let f = s.dir.path().join("body.bin");
    std::fs::write(&f, body).unwrap();
    let mut args = vec![
        "-H".to_string(),
        format!("Content-Type: {ct}"),
        "--data-binary".to_string(),
        format!("@{}", f.display()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.curl(method, path, &args)
}

#[test]
fn yaml_bodies_and_responses() {
    let s = Server::start();
    let cm = "/api/v1/namespaces/default/configmaps";
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y1\n  labels:\n    app: web\ndata:\n  port: \"8080\"\n  enabled: \"true\"\n  motd: |\n    hello\n    world\n";
    let (code, v) = send(&s, "POST", cm, "application/yaml", yaml.as_bytes(), &[]).http();
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["data"]["port"], "8080");
    assert_eq!(v["data"]["enabled"], "true");
    assert_eq!(v["data"]["motd"], "hello\nworld\n");
    assert_eq!(v["metadata"]["labels"]["app"], "web");
    // Update with YAML, guarded by the resourceVersion.
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let update = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y1\n  resourceVersion: \"{rv}\"\ndata:\n  port: \"9090\"\n"
    );
    let (code, v) = send(
        &s,
        "PUT",
        &format!("{cm}/y1"),
        "application/yaml",
        update.as_bytes(),
        &[],
    )
    .http();
    assert_eq!(
        (code, v["data"]["port"].clone()),
        (200, json!("9090")),
        "{v}"
    );
    // A merge patch written in YAML.
    let (code, v) = send(
        &s,
        "PATCH",
        &format!("{cm}/y1"),
        "application/merge-patch+json",
        b"data:\n  extra: yes-please\n",
        &[],
    )
    .http();
    assert_eq!(
        (code, v["data"]["extra"].clone()),
        (200, json!("yes-please")),
        "{v}"
    );
    // Server-side apply in YAML: it needs a field manager (kube's PatchOptions check) …
    let apply = |query: &str| {
        send(
            &s,
            "PATCH",
            &format!("{cm}/y1{query}"),
            "application/apply-patch+yaml",
            yaml.as_bytes(),
            &[],
        )
        .http()
    };
    let (code, st) = apply("");
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        st["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, st) = apply(&format!("?fieldManager={}", "m".repeat(129)));
    assert_eq!(code, 422, "{st}");
    // … conflicts with curl's update of data.port (curl's User-Agent names it) …
    let (code, st) = apply("?fieldManager=yaml-test");
    assert_eq!(code, 409, "{st}");
    assert_eq!(st["reason"], "Conflict");
    assert_eq!(
        st["message"],
        r#"Apply failed with 1 conflict: conflict with "curl" using v1: .data.port"#
    );
    assert_eq!(
        st["details"]["causes"][0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"curl\" using v1", "field": ".data.port"})
    );
    // … and takes it over when forced.
    let (code, v) = apply("?fieldManager=yaml-test&force=true");
    assert_eq!(
        (code, v["data"]["port"].clone()),
        (200, json!("8080")),
        "{v}"
    );
    let owner = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "yaml-test")
        .cloned()
        .unwrap_or_default();
    assert_eq!(owner["operation"], "Apply", "{v}");
    // An apply of a missing object creates it (201), owned by the applier alone.
    let (code, v) = send(
        &s,
        "PATCH",
        &format!("{cm}/y2?fieldManager=yaml-test"),
        "application/apply-patch+yaml",
        yaml.replace("name: y1", "name: y2").as_bytes(),
        &[],
    )
    .http();
    assert_eq!(code, 201, "{v}");
    let managed = v["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(managed.len(), 1, "{v}");
    assert_eq!(
        (&managed[0]["manager"], &managed[0]["operation"]),
        (&json!("yaml-test"), &json!("Apply"))
    );
    // Malformed YAML: 400 with the line and column.
    let (code, st) = send(
        &s,
        "POST",
        cm,
        "application/yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [broken\n",
        &[],
    )
    .http();
    assert_eq!(
        (code, st["reason"].clone()),
        (400, json!("BadRequest")),
        "{st}"
    );
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.contains("not valid YAML") && msg.contains("line "),
        "{msg}"
    );
    // A YAML list is no object; a number where a string belongs is refused as kube does.
    assert_eq!(
        send(&s, "POST", cm, "application/yaml", b"- a\n- b\n", &[])
            .http()
            .0,
        400
    );
    let (code, st) = send(
        &s,
        "POST",
        cm,
        "application/yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y2\ndata:\n  port: 8080\n",
        &[],
    )
    .http();
    assert_eq!(code, 400, "{st}");
    assert!(
        st["message"].as_str().unwrap().contains("data.port"),
        "{st}"
    );
    // Accept: application/yaml answers in YAML, which posts back as it is.
    let o = s.curl(
        "GET",
        &format!("{cm}/y1"),
        &["-i", "-H", "Accept: application/yaml"],
    );
    assert!(
        o.stdout
            .to_lowercase()
            .contains("content-type: application/yaml"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("\nkind: ConfigMap\n"), "{}", o.stdout);
    let o = s.curl(
        "GET",
        &format!("{cm}/y1"),
        &["-H", "Accept: application/yaml"],
    );
    let (body, code) = o.stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "200");
    let copy: String = body
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("resourceVersion:") && !l.trim_start().starts_with("uid:")
        })
        .map(|l| format!("{}\n", l.replace("name: y1", "name: y3")))
        .collect();
    let (code, v) = send(&s, "POST", cm, "application/yaml", copy.as_bytes(), &[]).http();
    assert_eq!(code, 201, "{v}\n{copy}");
    assert_eq!(v["data"]["port"], "8080", "the forced apply's");
    assert_eq!(v["data"]["extra"], "yes-please");
    // Errors come in YAML too.
    let o = s.curl(
        "GET",
        &format!("{cm}/nope"),
        &["-H", "Accept: application/yaml"],
    );
    assert!(
        o.stdout.contains("kind: Status") && o.stdout.contains("reason: NotFound"),
        "{}",
        o.stdout
    );
}

#[test]
fn server_keeps_serving_after_garbage() {
    let s = Server::start();
    let targets = [
        ("/api/v1/namespaces/default/configmaps", "v1", "ConfigMap"),
        ("/api/v1/namespaces/default/pods", "v1", "Pod"),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            "apps/v1",
            "Deployment",
        ),
        ("/api/v1/namespaces/default/services", "v1", "Service"),
    ];
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    for (path, api_version, kind) in targets {
        let body_field = if kind == "ConfigMap" { "data" } else { "spec" };
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("application/json", br#"{"apiVersion": "v1", "kind": "#.to_vec(), 400),
            ("application/json", b"\xff\xfe\x00garbage".to_vec(), 400),
            ("application/json", b"[]".to_vec(), 400),
            ("application/json", format!(r#"{{"apiVersion":"{api_version}","kind":"Secret","metadata":{{"name":"g"}}}}"#).into_bytes(), 400),
            ("application/json", format!(r#"{{"apiVersion":"nope/v9","kind":"{kind}","metadata":{{"name":"g"}}}}"#).into_bytes(), 400),
            ("application/json", format!(r#"{{"apiVersion":"{api_version}","kind":"{kind}","metadata":{{"name":"g"}},"{body_field}":[false]}}"#).into_bytes(), 400),
            ("application/json", format!(r#"{{"apiVersion":"{api_version}","kind":"{kind}","metadata":"g"}}"#).into_bytes(), 400),
            ("application/json", big.clone().into_bytes(), 413),
            ("application/yaml", b"a: [1, 2\nb: }".to_vec(), 400),
            ("application/yaml", b"&a [*a]".to_vec(), 400),
            ("application/vnd.kubernetes.protobuf", b"k8s\x00\x0a\xff\xff\xff\xff".to_vec(), 400),
            ("application/vnd.kubernetes.protobuf", b"not protobuf at all".to_vec(), 400),
            ("text/plain", b"hello".to_vec(), 415),
        ];
        for (ct, body, want) in cases {
            let (code, st) = send(&s, "POST", path, ct, &body, &[]).http();
            assert_eq!(
                code,
                want,
                "{kind} {ct} {:?}: {st}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
            assert_eq!(st["kind"], "Status", "{st}");
            assert_eq!(st["code"], want, "{st}");
        }
    }
    // Still serving: health, a create, a get and a list.
    let o = s.curl("GET", "/healthz", &[]);
    assert!(o.stdout.starts_with("ok"), "{}", o.stdout);
    let (code, v) = post(
        &s,
        "/api/v1/namespaces/default/pods",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"after"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#,
    );
    assert_eq!(code, 201, "{v}");
    let (code, v) = get(&s, "/api/v1/namespaces/default/pods/after");
    assert_eq!((code, v["metadata"]["name"].clone()), (200, json!("after")));
    let (code, v) = get(&s, "/api/v1/namespaces/default/pods");
    assert_eq!(code, 200);
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["after"], "garbage created nothing");
}
