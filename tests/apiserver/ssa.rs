//! Server-side apply and managedFields with real kubectl (1.27 and 1.33): ownership
//! recorded by creates, apply conflicts naming the owner, forcing, idempotent applies that
//! prune what the file dropped, and the client-side → server-side apply migration.

use serde_json::Value;

use crate::common::{write, Server};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn get(s: &Server, v: &str, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    json(&s.kubectl(v, &args).ok().stdout)
}

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

/// `kubectl create configmap` records kubectl-create's fields; a server-side apply by
/// another manager that changes them conflicts until forced.
fn configmap_conflicts(v: &str) {
    let s = Server::start();
    s.kubectl(v, &["create", "configmap", "ssa", "--from-literal=a=1"])
        .ok();
    let cm = get(&s, v, &["configmap", "ssa"]);
    let created = entry(&cm, "kubectl-create").unwrap_or_else(|| panic!("{cm:#}"));
    assert_eq!(created["operation"], "Update");
    assert_eq!(created["apiVersion"], "v1");
    assert_eq!(created["fieldsType"], "FieldsV1");
    assert_eq!(
        created["fieldsV1"],
        json(r#"{"f:data":{".":{},"f:a":{}}}"#),
        "{cm:#}"
    );

    let f = write(
        s.dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"2\"\n",
    );
    let f = f.to_str().unwrap();
    let args = ["apply", "--server-side", "--field-manager=other", "-f", f];
    let e = s.kubectl(v, &args).fails();
    assert!(
        e.stderr
            .contains(r#"conflict with "kubectl-create" using v1: .data.a"#),
        "{e:?}"
    );
    assert_eq!(get(&s, v, &["configmap", "ssa"])["data"]["a"], "1");

    let mut forced = args.to_vec();
    forced.push("--force-conflicts");
    let out = s.kubectl(v, &forced).ok();
    assert_eq!(out.stdout.trim(), "configmap/ssa serverside-applied");
    let cm = get(&s, v, &["configmap", "ssa"]);
    assert_eq!(cm["data"]["a"], "2");
    let other = entry(&cm, "other").unwrap_or_else(|| panic!("{cm:#}"));
    assert_eq!(other["operation"], "Apply");
    assert_eq!(other["fieldsV1"], json(r#"{"f:data":{"f:a":{}}}"#));
    // kubectl-create keeps the map itself, not the key it lost.
    let created = entry(&cm, "kubectl-create").unwrap_or_else(|| panic!("{cm:#}"));
    assert_eq!(created["fieldsV1"], json(r#"{"f:data":{}}"#), "{cm:#}");
    // The same apply again changes nothing.
    s.kubectl(v, &args).ok();
    let again = get(&s, v, &["configmap", "ssa"]);
    assert_eq!(
        again["metadata"]["resourceVersion"],
        cm["metadata"]["resourceVersion"]
    );

    // managedFields a client sends are kept; one empty entry clears them (kube's rule;
    // an empty list keeps the stored ones).
    let patch = |value: &str| {
        let p = format!(r#"[{{"op":"replace","path":"/metadata/managedFields","value":{value}}}]"#);
        s.kubectl(v, &["patch", "configmap", "ssa", "--type=json", "-p", &p])
            .ok();
        get(&s, v, &["configmap", "ssa"])
    };
    let kept = patch("[]");
    assert!(entry(&kept, "other").is_some(), "{kept:#}");
    let cleared = patch("[{}]");
    assert!(
        cleared["metadata"].get("managedFields").is_none(),
        "{cleared:#}"
    );
    // With nobody owning data.a any more, another applier changes it without a conflict.
    let f3 = write(
        s.dir.path(),
        "cm3.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"3\"\n",
    );
    let third = [
        "apply",
        "--server-side",
        "--field-manager=third",
        "-f",
        f3.to_str().unwrap(),
    ];
    s.kubectl(v, &third).ok();
    assert_eq!(get(&s, v, &["configmap", "ssa"])["data"]["a"], "3");
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
"#;

/// Applying a Deployment twice is idempotent; dropping a label from the file removes it.
fn deployment_apply(v: &str) {
    let s = Server::start();
    let f = write(s.dir.path(), "dep.yaml", DEPLOYMENT);
    let f = f.to_str().unwrap();
    let out = s.kubectl(v, &["apply", "--server-side", "-f", f]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web serverside-applied");
    let d = get(&s, v, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);
    // Defaults are set, and owned by nobody.
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    let applied = entry(&d, "kubectl").unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(applied["operation"], "Apply");
    let fields = &applied["fieldsV1"];
    assert_eq!(
        fields["f:metadata"]["f:labels"],
        json(r#"{"f:app":{},"f:tier":{}}"#)
    );
    let c = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"web"}"#];
    assert_eq!(c["f:image"], json("{}"), "{fields:#}");
    assert!(fields["f:spec"].get("f:strategy").is_none(), "{fields:#}");

    s.kubectl(v, &["apply", "--server-side", "-f", f]).ok();
    let again = get(&s, v, &["deploy", "web"]);
    assert_eq!(
        again["metadata"]["resourceVersion"], d["metadata"]["resourceVersion"],
        "a second identical apply must not write"
    );
    assert_eq!(again["metadata"]["generation"], 1);

    let trimmed = DEPLOYMENT.replace(", tier: front", "");
    let f2 = write(s.dir.path(), "dep2.yaml", &trimmed);
    s.kubectl(v, &["apply", "--server-side", "-f", f2.to_str().unwrap()])
        .ok();
    let d = get(&s, v, &["deploy", "web"]);
    assert_eq!(d["metadata"]["labels"], json(r#"{"app":"web"}"#), "{d:#}");
    assert_eq!(d["metadata"]["generation"], 1, "labels are not spec");

    // A scale by another manager then an apply of a new replica count conflicts.
    s.kubectl(v, &["scale", "deploy", "web", "--replicas=3"])
        .ok();
    let bumped = trimmed.replace("replicas: 2", "replicas: 4");
    let f3 = write(s.dir.path(), "dep3.yaml", &bumped);
    let e = s
        .kubectl(v, &["apply", "--server-side", "-f", f3.to_str().unwrap()])
        .fails();
    assert!(e.stderr.contains(".spec.replicas"), "{e:?}");
}

/// Client-side apply, then server-side apply of the same file: kubectl migrates the
/// client-side ownership and the server-side apply succeeds without conflicts.
fn migration(v: &str) {
    let s = Server::start();
    let f = write(s.dir.path(), "dep.yaml", DEPLOYMENT);
    let f = f.to_str().unwrap();
    s.kubectl(v, &["apply", "-f", f]).ok();
    let d = get(&s, v, &["deploy", "web"]);
    let csa = entry(&d, "kubectl-client-side-apply").unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(csa["operation"], "Update");

    let changed = DEPLOYMENT.replace("nginx:1.25", "nginx:1.26");
    let f2 = write(s.dir.path(), "dep2.yaml", &changed);
    let out = s
        .kubectl(v, &["apply", "--server-side", "-f", f2.to_str().unwrap()])
        .ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web serverside-applied");
    let d = get(&s, v, &["deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    let ssa = entry(&d, "kubectl").unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(ssa["operation"], "Apply");
    // Dropping a label now removes it: the server-side apply owns what the client-side
    // apply had set.
    let trimmed = changed.replace(", tier: front", "");
    let f3 = write(s.dir.path(), "dep3.yaml", &trimmed);
    s.kubectl(v, &["apply", "--server-side", "-f", f3.to_str().unwrap()])
        .ok();
    let d = get(&s, v, &["deploy", "web"]);
    assert!(d["metadata"]["labels"].get("tier").is_none(), "{d:#}");
}

per_version!(configmap_conflicts, deployment_apply, migration);
