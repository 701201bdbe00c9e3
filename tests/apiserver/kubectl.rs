//! Real kubectl (1.27 and 1.33) against `skiff server`: each scenario runs once per version.

use serde_json::Value;

use crate::common::{eventually, write, Server};

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
        env:
        - {name: MODE, value: prod}
"#;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// create -f, get in every output format, label/annotate selectors, describe, delete.
fn create_get_describe(v: &str) {
    let s = Server::start();
    let f = write(s.dir.path(), "dep.yaml", DEPLOYMENT);
    let f = f.to_str().unwrap();
    let out = s.kubectl(v, &["create", "-f", f]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web created");
    let again = s.kubectl(v, &["create", "-f", f]).fails();
    assert!(
        again.stderr.contains("AlreadyExists") && again.stderr.contains("\"web\" already exists"),
        "{again:?}"
    );

    // Defaults as Kubernetes sets them, server-set metadata.
    let d = json(
        &s.kubectl(v, &["get", "deploy", "web", "-o", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    let ps = &d["spec"]["template"]["spec"];
    assert_eq!(ps["restartPolicy"], "Always");
    assert_eq!(ps["dnsPolicy"], "ClusterFirst");
    assert_eq!(ps["schedulerName"], "default-scheduler");
    assert_eq!(ps["terminationGracePeriodSeconds"], 30);
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(d["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let rv: i64 = d["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > 1);

    let y = s
        .kubectl(v, &["get", "deploy", "web", "-o", "yaml"])
        .ok()
        .stdout;
    assert!(
        y.contains("kind: Deployment") && y.contains("  name: web\n"),
        "{y}"
    );
    assert_eq!(
        s.kubectl(v, &["get", "deploy", "-o", "name"]).ok().stdout,
        "deployment.apps/web\n"
    );
    assert_eq!(
        s.kubectl(
            v,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.replicas}/{.spec.template.spec.containers[0].env[0].value}"
            ]
        )
        .ok()
        .stdout,
        "2/prod"
    );
    let cc = s
        .kubectl(v, &["get", "deploy", "-o", "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas,IMAGE:.spec.template.spec.containers[0].image"])
        .ok()
        .stdout;
    let lines: Vec<Vec<&str>> = cc.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        vec![
            vec!["NAME", "REPLICAS", "IMAGE"],
            vec!["web", "2", "nginx:1.25"]
        ]
    );
    // Server-side table, default and wide.
    for extra in [&[][..], &["-o", "wide"][..]] {
        let mut args = vec!["get", "deployments"];
        args.extend_from_slice(extra);
        let t = s.kubectl(v, &args).ok().stdout;
        let mut rows = t.lines();
        assert!(rows.next().unwrap().starts_with("NAME"), "{t}");
        assert!(rows.next().unwrap().starts_with("web "), "{t}");
    }
    let all = s
        .kubectl(v, &["get", "namespaces", "-o", "name"])
        .ok()
        .stdout;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(all.contains(&format!("namespace/{ns}\n")), "{all}");
    }

    // Labels, annotations and selectors.
    s.kubectl(v, &["label", "deploy", "web", "env=prod"]).ok();
    s.kubectl(v, &["annotate", "deploy", "web", "owner=team-a"])
        .ok();
    s.kubectl(v, &["create", "configmap", "other", "--from-literal=k=v"])
        .ok();
    s.kubectl(v, &["label", "configmap", "other", "env=dev"])
        .ok();
    let sel = |sel: &str| -> String {
        s.kubectl(v, &["get", "deploy,cm", "-l", sel, "-o", "name"])
            .ok()
            .stdout
    };
    assert_eq!(sel("env=prod"), "deployment.apps/web\n");
    assert_eq!(sel("env in (dev)"), "configmap/other\n");
    assert_eq!(sel("env,env!=prod"), "configmap/other\n");
    assert_eq!(sel("app=web,tier=front"), "deployment.apps/web\n");
    assert_eq!(
        s.kubectl(
            v,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.metadata.annotations.owner}"
            ]
        )
        .ok()
        .stdout,
        "team-a"
    );
    let fs = s
        .kubectl(
            v,
            &[
                "get",
                "cm",
                "-A",
                "--field-selector",
                "metadata.name=other",
                "-o",
                "name",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(fs, "configmap/other\n");
    let a = s.kubectl(v, &["get", "svc", "-A"]).ok().stdout;
    assert!(a.lines().next().unwrap().starts_with("NAMESPACE"), "{a}");
    assert!(a.contains("kubernetes"), "{a}");

    let desc = s.kubectl(v, &["describe", "deploy", "web"]).ok().stdout;
    for want in [
        "Name:",
        "web",
        "Namespace:",
        "default",
        "Replicas:",
        "2 desired",
        "StrategyType:",
        "RollingUpdate",
        "nginx:1.25",
        "env=prod",
    ] {
        assert!(desc.contains(want), "describe lacks {want:?}:\n{desc}");
    }

    let out = s.kubectl(v, &["delete", "deploy", "web", "--wait"]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps \"web\" deleted");
    let gone = s.kubectl(v, &["get", "deploy", "web"]).fails();
    assert!(
        gone.stderr.contains("NotFound") && gone.stderr.contains("\"web\" not found"),
        "{gone:?}"
    );
}

/// The imperative `kubectl create …` commands (protobuf bodies from kubectl 1.32 on).
/// The namespace controller (and the garbage collector) run: they empty a deleted
/// namespace; nothing else acts on the objects created here.
fn create_subcommands(v: &str) {
    let s = Server::start_with_controllers(&[
        "--disable-scheduler",
        "--controllers=garbagecollector,namespace",
    ]);
    assert_eq!(
        s.kubectl(v, &["create", "namespace", "team"]).ok().stdout,
        "namespace/team created\n"
    );
    s.kubectl(
        v,
        &[
            "create",
            "configmap",
            "cfg",
            "-n",
            "team",
            "--from-literal=a=1",
            "--from-literal=b=two",
        ],
    )
    .ok();
    let cm = json(
        &s.kubectl(v, &["get", "cm", "cfg", "-n", "team", "-o", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "two"}));
    s.kubectl(
        v,
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "-n",
            "team",
            "--from-literal=password=hunter2",
        ],
    )
    .ok();
    let sec = json(
        &s.kubectl(v, &["get", "secret", "sec", "-n", "team", "-o", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(sec["data"]["password"], "aHVudGVyMg==");
    assert_eq!(sec["type"], "Opaque");
    s.kubectl(
        v,
        &[
            "create",
            "deployment",
            "app",
            "-n",
            "team",
            "--image=busybox:1.36",
            "--replicas=3",
        ],
    )
    .ok();
    let d = json(
        &s.kubectl(v, &["get", "deploy", "app", "-n", "team", "-o", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "app");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    s.kubectl(
        v,
        &[
            "create",
            "service",
            "clusterip",
            "app",
            "-n",
            "team",
            "--tcp=80:8080",
        ],
    )
    .ok();
    let svc = json(
        &s.kubectl(v, &["get", "svc", "app", "-n", "team", "-o", "json"])
            .ok()
            .stdout,
    );
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.43."), "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(
        s.kubectl(v, &["auth", "can-i", "create", "pods"])
            .ok()
            .stdout
            .trim(),
        "yes"
    );
    // Objects in a namespace that does not exist: 404 as Kubernetes.
    let e = s
        .kubectl(
            v,
            &[
                "create",
                "configmap",
                "x",
                "-n",
                "nope",
                "--from-literal=a=b",
            ],
        )
        .fails();
    assert!(e.stderr.contains("namespaces \"nope\" not found"), "{e:?}");
    // Namespace deletion: Terminating, contents removed, then gone; --wait returns after.
    s.kubectl(v, &["delete", "namespace", "team", "--wait"])
        .ok();
    let e = s.kubectl(v, &["get", "ns", "team"]).fails();
    assert!(e.stderr.contains("not found"), "{e:?}");
    let left = s
        .kubectl(
            v,
            &["get", "cm,secret,deploy,svc", "-n", "team", "-o", "name"],
        )
        .ok();
    assert_eq!(left.stdout, "");
    let e = s.kubectl(v, &["delete", "namespace", "default"]).fails();
    assert!(e.stderr.contains("may not be deleted"), "{e:?}");
}

/// apply (twice, then with a field removed), patch of all three types, replace, edit,
/// scale.
fn apply_patch_replace_edit_scale(v: &str) {
    let s = Server::start();
    let f = write(s.dir.path(), "dep.yaml", DEPLOYMENT);
    let f = f.to_str().unwrap();
    assert_eq!(
        s.kubectl(v, &["apply", "-f", f]).ok().stdout,
        "deployment.apps/web created\n"
    );
    assert_eq!(
        s.kubectl(v, &["apply", "-f", f]).ok().stdout,
        "deployment.apps/web unchanged\n"
    );
    let gen = |s: &Server| -> i64 {
        s.kubectl(
            v,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.metadata.generation}",
            ],
        )
        .ok()
        .stdout
        .parse()
        .unwrap()
    };
    assert_eq!(gen(&s), 1);
    // Remove the env var and the tier label from the file: apply removes them.
    let trimmed = DEPLOYMENT
        .replace("        env:\n        - {name: MODE, value: prod}\n", "")
        .replace(", tier: front", "");
    let f2 = write(s.dir.path(), "dep2.yaml", &trimmed);
    assert_eq!(
        s.kubectl(v, &["apply", "-f", f2.to_str().unwrap()])
            .ok()
            .stdout,
        "deployment.apps/web configured\n"
    );
    let d = json(
        &s.kubectl(v, &["get", "deploy", "web", "-o", "json"])
            .ok()
            .stdout,
    );
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]
            .get("env")
            .is_none(),
        "{d}"
    );
    assert!(d["metadata"]["labels"].get("tier").is_none(), "{d}");
    assert_eq!(d["metadata"]["generation"], 2);

    // Patches: strategic (default), merge, json.
    s.kubectl(v, &["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.26"}]}}}}"#]).ok();
    s.kubectl(
        v,
        &[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
        ],
    )
    .ok();
    s.kubectl(
        v,
        &[
            "patch",
            "deploy",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
        ],
    )
    .ok();
    let d = json(
        &s.kubectl(v, &["get", "deploy", "web", "-o", "json"])
            .ok()
            .stdout,
    );
    let c = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(c[0]["image"], "nginx:1.26");
    assert_eq!(c[0]["ports"][0]["containerPort"], 80);
    assert_eq!(d["metadata"]["labels"]["patched"], "merge");
    assert_eq!(d["spec"]["replicas"], 4);

    // Scale through the scale subresource.
    assert_eq!(
        s.kubectl(v, &["scale", "deploy", "web", "--replicas=6"])
            .ok()
            .stdout,
        "deployment.apps/web scaled\n"
    );
    let r = s
        .kubectl(
            v,
            &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
        )
        .ok()
        .stdout;
    assert_eq!(r, "6");

    // replace: a stale resourceVersion conflicts, the current one wins.
    let mut d = json(
        &s.kubectl(v, &["get", "deploy", "web", "-o", "json"])
            .ok()
            .stdout,
    );
    d["metadata"]["labels"]["replaced"] = "yes".into();
    let rf = write(s.dir.path(), "replace.json", &d.to_string());
    s.kubectl(v, &["replace", "-f", rf.to_str().unwrap()]).ok();
    let stale = s
        .kubectl(v, &["replace", "-f", rf.to_str().unwrap()])
        .fails();
    assert!(
        stale.stderr.contains("the object has been modified"),
        "{stale:?}"
    );
    assert_eq!(
        s.kubectl(
            v,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.metadata.labels.replaced}"
            ]
        )
        .ok()
        .stdout,
        "yes"
    );

    // edit through KUBE_EDITOR: a script that rewrites the image.
    let editor = write(
        s.dir.path(),
        "editor.sh",
        "#!/bin/sh\nsed -i 's/nginx:1.26/nginx:1.27/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = s
        .kubectl_with(
            v,
            &["edit", "deploy", "web"],
            None,
            &[("KUBE_EDITOR", editor.to_str().unwrap())],
        )
        .ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web edited");
    assert_eq!(
        s.kubectl(
            v,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}"
            ]
        )
        .ok()
        .stdout,
        "nginx:1.27"
    );
}

/// Discovery-driven commands.
fn discovery(v: &str) {
    let s = Server::start();
    let r = s.kubectl(v, &["api-resources"]).ok().stdout;
    let header: Vec<&str> = r.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    let row = |name: &str| -> Vec<String> {
        r.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in api-resources:\n{r}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("pods"), ["pods", "po", "v1", "true", "Pod"]);
    assert_eq!(
        row("deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(
        row("namespaces"),
        ["namespaces", "ns", "v1", "false", "Namespace"]
    );
    let versions = s.kubectl(v, &["api-versions"]).ok().stdout;
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "coordination.k8s.io/v1",
        "policy/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "{gv} missing:\n{versions}"
        );
    }
    let ver = s.kubectl(v, &["version", "-o", "json"]).ok().stdout;
    let ver = json(&ver);
    assert_eq!(ver["serverVersion"]["minor"], "33");
    // explain reads the OpenAPI documents.
    let e = s
        .kubectl(v, &["explain", "pod.spec.containers.image"])
        .ok()
        .stdout;
    assert!(
        e.contains("KIND:") && e.contains("Pod") && e.contains("FIELD: image <string>"),
        "{e}"
    );
    let e = s
        .kubectl(v, &["explain", "deployment.spec.replicas"])
        .ok()
        .stdout;
    assert!(
        e.contains("GROUP:      apps") && e.contains("FIELD: replicas <integer>"),
        "{e}"
    );
    // Server-side strict field validation, as kubectl asks for it.
    let bad =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\ndata: {a: b}\nbogusField: 1\n";
    let e = s
        .kubectl_with(v, &["create", "-f", "-"], Some(bad), &[])
        .fails();
    assert!(
        e.stderr
            .contains("strict decoding error: unknown field \"bogusField\""),
        "{e:?}"
    );
    // Short names and categories resolve through discovery.
    s.kubectl(v, &["create", "configmap", "c", "--from-literal=a=b"])
        .ok();
    assert_eq!(
        s.kubectl(v, &["get", "cm", "-o", "name"]).ok().stdout,
        "configmap/c\n"
    );
    s.kubectl(v, &["run", "p", "--image=busybox", "--restart=Never"])
        .ok();
    let all = s.kubectl(v, &["get", "all", "-o", "name"]).ok().stdout;
    assert!(
        all.contains("pod/p\n") && all.contains("service/kubernetes\n"),
        "{all}"
    );
}

/// Watch with kubectl get -w: sees the initial object, then a modification.
fn watch(v: &str) {
    let s = Server::start();
    s.kubectl(v, &["create", "configmap", "w", "--from-literal=a=1"])
        .ok();
    let kubectl = crate::common::kubectl_path(v);
    let kc = s.kubeconfig();
    let mut child = std::process::Command::new(kubectl)
        .args([
            "get",
            "cm",
            "w",
            "-w",
            "-o",
            "jsonpath={.data.a}{\"\\n\"}",
            "--request-timeout=10s",
        ])
        .env("KUBECONFIG", &kc)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    // The first line is printed after the initial list; the watch resumes from the list's
    // resourceVersion, so changes made from now on are all seen.
    assert_eq!(lines.next().unwrap().unwrap(), "1");
    s.kubectl(
        v,
        &[
            "patch",
            "cm",
            "w",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ],
    )
    .ok();
    s.kubectl(
        v,
        &[
            "patch",
            "cm",
            "w",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"3"}}"#,
        ],
    )
    .ok();
    assert_eq!(lines.next().unwrap().unwrap(), "2");
    assert_eq!(lines.next().unwrap().unwrap(), "3");
    let _ = child.kill();
    let _ = child.wait();
}

/// delete --cascade: orphan keeps dependents (without their owner reference), foreground
/// and background remove them: the API server adds the finalizers, the controller
/// manager's garbage collector does the rest.
fn cascade(v: &str) {
    let s = Server::start_with_controllers(&[]);
    let owner = |name: &str| {
        s.kubectl(v, &["create", "configmap", name, "--from-literal=a=b"])
            .ok();
        json(&s.kubectl(v, &["get", "cm", name, "-o", "json"]).ok().stdout)["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let dependent = |name: &str, owner: &str, uid: &str| {
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid}]},
            "stringData": {"k": "v"},
        });
        s.kubectl_with(v, &["create", "-f", "-"], Some(&obj.to_string()), &[])
            .ok();
    };
    for (policy, kept) in [
        ("orphan", true),
        ("foreground", false),
        ("background", false),
    ] {
        let o = format!("owner-{policy}");
        let d = format!("dep-{policy}");
        let uid = owner(&o);
        dependent(&d, &o, &uid);
        s.kubectl(
            v,
            &["delete", "cm", &o, &format!("--cascade={policy}"), "--wait"],
        )
        .ok();
        s.kubectl(v, &["get", "cm", &o]).fails();
        if kept {
            let sec = json(
                &s.kubectl(v, &["get", "secret", &d, "-o", "json"])
                    .ok()
                    .stdout,
            );
            let refs = sec["metadata"]["ownerReferences"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0);
            assert_eq!(
                refs, 0,
                "orphaned dependent keeps no owner reference: {sec}"
            );
        } else {
            eventually(&format!("{d} to be deleted"), || {
                (s.kubectl(v, &["get", "secret", &d]).code != 0).then_some(())
            });
        }
    }
}

const REPLICATION_CONTROLLER: &str = r#"apiVersion: v1
kind: ReplicationController
metadata:
  name: nginx
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: nginx}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
"#;

/// core/v1 ReplicationControllers: create -f (selector and labels defaulted from the
/// template), validation, get (table, wide, `all`, field selector), scale; the server's
/// replicationcontroller controller creates the pods (no scheduler: they stay Pending).
fn replication_controllers(v: &str) {
    let s = Server::start_with_controllers(&[
        "--disable-scheduler",
        "--controllers=replicationcontroller",
    ]);
    let f = write(s.dir.path(), "rc.yaml", REPLICATION_CONTROLLER);
    assert_eq!(
        s.kubectl(v, &["create", "-f", f.to_str().unwrap()])
            .ok()
            .stdout,
        "replicationcontroller/nginx created\n"
    );
    let rc = json(
        &s.kubectl(v, &["get", "rc", "nginx", "-o", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(rc["spec"]["selector"], serde_json::json!({"app": "nginx"}));
    assert_eq!(
        rc["metadata"]["labels"],
        serde_json::json!({"app": "nginx"})
    );
    assert_eq!(rc["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(rc["metadata"]["generation"], 1);

    let bad = REPLICATION_CONTROLLER
        .replace(
            "name: nginx\nspec:",
            "name: bad\nspec:\n  selector: {app: other}",
        )
        .replace("replicas: 2", "replicas: 1");
    let bf = write(s.dir.path(), "bad.yaml", &bad);
    let refused = s
        .kubectl(v, &["create", "-f", bf.to_str().unwrap()])
        .fails();
    assert!(
        refused
            .stderr
            .contains("`selector` does not match template `labels`"),
        "{refused:?}"
    );

    let replicas = |s: &Server, path: &str| -> String {
        s.kubectl(
            v,
            &["get", "rc", "nginx", "-o", &format!("jsonpath={{{path}}}")],
        )
        .ok()
        .stdout
    };
    eventually("status.replicas 2", || {
        (replicas(&s, ".status.replicas") == "2").then_some(())
    });
    let rows = |s: &Server, extra: &[&str]| -> Vec<Vec<String>> {
        let mut args = vec!["get", "rc"];
        args.extend_from_slice(extra);
        s.kubectl(v, &args)
            .ok()
            .stdout
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let t = rows(&s, &[]);
    assert_eq!(
        t[0],
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{t:?}"
    );
    assert_eq!(t[1][..4], ["nginx", "2", "2", "0"], "{t:?}");
    assert_eq!(t.len(), 2, "{t:?}");
    let w = rows(&s, &["-o", "wide"]);
    assert_eq!(
        w[0],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{w:?}"
    );
    assert_eq!(w[1][5..], ["nginx", "nginx:1.25", "app=nginx"], "{w:?}");
    let all = s.kubectl(v, &["get", "all", "-o", "name"]).ok().stdout;
    assert!(all.contains("replicationcontroller/nginx\n"), "{all}");

    assert_eq!(
        s.kubectl(v, &["scale", "rc", "nginx", "--replicas=3"])
            .ok()
            .stdout,
        "replicationcontroller/nginx scaled\n"
    );
    assert_eq!(replicas(&s, ".spec.replicas"), "3");
    eventually("status.replicas 3", || {
        (replicas(&s, ".status.replicas") == "3").then_some(())
    });
    let owned = |s: &Server| -> usize {
        json(&s.kubectl(v, &["get", "pods", "-o", "json"]).ok().stdout)["items"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| {
                        p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(owned(&s), 3);
    let by_field = rows(&s, &["--field-selector", "status.replicas=3", "-o", "name"]);
    assert_eq!(by_field, [["replicationcontroller/nginx"]], "{by_field:?}");
}

per_version!(
    create_get_describe,
    create_subcommands,
    apply_patch_replace_edit_scale,
    discovery,
    watch,
    cascade,
    replication_controllers
);
