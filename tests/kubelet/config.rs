//! Config and probes: configMap volumes updated in place, env from a secret, init
//! containers, readiness gating a ReplicaSet, liveness restarts, and bad input with
//! Kubernetes' reasons.

use crate::node::{assert_clean, wait, wait_or, Node};

#[test]
fn config_volumes_env_init_and_probes() {
    let (dir, cgroups);
    {
        let n = Node::start();
        dir = n.data().to_path_buf();
        cgroups = n.cgroup_dirs(n.server.agent_cgroup().unwrap());
        n.k(&[
            "create",
            "configmap",
            "conf",
            "--from-literal=greeting=hello",
        ])
        .ok();
        n.k(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=s3cret",
        ])
        .ok();
        let img = &n.image;
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: app, labels: {{app: x}}}}
spec:
  initContainers:
  - name: init
    image: {img}
    command: ["sh", "-c", "echo initialized > /work/marker"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: app
    image: {img}
    command: ["sh", "-c", "sleep 3600"]
    env:
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: GREETING
      value: "$(POD_NAME) says hi"
    volumeMounts:
    - {{name: conf, mountPath: /etc/conf}}
    - {{name: work, mountPath: /work}}
    - {{name: projected, mountPath: /etc/projected}}
  volumes:
  - {{name: conf, configMap: {{name: conf}}}}
  - {{name: work, emptyDir: {{}}}}
  - name: projected
    projected:
      sources:
      - secret: {{name: creds}}
      - configMap: {{name: conf}}
      - serviceAccountToken: {{path: token, audience: test, expirationSeconds: 3600}}
"#
        ));
        n.k(&["wait", "--for=condition=Ready", "pod/app", "--timeout=60s"])
            .ok();
        assert_eq!(
            n.jp(
                "app",
                "{.status.initContainerStatuses[0].state.terminated.reason}"
            ),
            "Completed"
        );
        assert_eq!(
            n.k(&["exec", "app", "--", "cat", "/work/marker"])
                .ok()
                .stdout,
            "initialized\n"
        );
        let env = n.k(&["exec", "app", "--", "env"]).ok().stdout;
        assert!(
            env.contains("PASSWORD=s3cret") && env.contains("GREETING=app says hi"),
            "{env}"
        );
        assert_eq!(
            n.k(&["exec", "app", "--", "cat", "/etc/conf/greeting"])
                .ok()
                .stdout,
            "hello"
        );
        // A projected volume: the secret, the configMap and a token the agent asked for
        // the pod's service account, bound to the pod.
        let projected = n
            .k(&[
                "exec",
                "app",
                "--",
                "sh",
                "-c",
                "cat /etc/projected/password /etc/projected/greeting; head -c 3 /etc/projected/token",
            ])
            .ok()
            .stdout;
        assert_eq!(projected, "s3crethelloeyJ");
        // An update of the configMap reaches the running pod.
        n.k(&[
            "patch",
            "configmap",
            "conf",
            "-p",
            r#"{"data":{"greeting":"updated"}}"#,
        ])
        .ok();
        wait("the configMap update in the pod", 60, || {
            let o = n.k(&["exec", "app", "--", "cat", "/etc/conf/greeting"]);
            (o.stdout == "updated").then_some(())
        });

        // Readiness gates the ReplicaSet's readyReplicas; a failing liveness probe restarts.
        n.apply(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {img}
        readinessProbe:
          exec: {{command: ["test", "-f", "/www/ready"]}}
          periodSeconds: 1
"#
        ));
        wait("two web pods running", 60, || {
            let o = n.k(&["get", "pods", "-l", "app=web", "--no-headers"]);
            (o.stdout.matches("Running").count() == 2).then_some(())
        });
        let ready = n
            .k(&[
                "get",
                "rs",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[0].status.readyReplicas}",
            ])
            .ok()
            .stdout;
        assert!(
            ready.is_empty() || ready == "0",
            "no pod is ready yet: {ready}"
        );
        let pods = n
            .k(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ])
            .ok()
            .stdout;
        for p in pods.split_whitespace() {
            n.k(&["exec", p, "--", "touch", "/www/ready"]).ok();
        }
        wait("readyReplicas 2", 60, || {
            let o = n.k(&[
                "get",
                "rs",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[0].status.readyReplicas}",
            ]);
            (o.stdout == "2").then_some(())
        });
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  # A container that fails its liveness probe is stopped like any other: SIGTERM (which
  # an init process ignores), then SIGKILL after the grace period, one after the other.
  terminationGracePeriodSeconds: 1
  containers:
  - name: live
    image: {img}
    livenessProbe:
      httpGet: {{path: /, port: 8081}}
      periodSeconds: 1
      failureThreshold: 2
  - name: grpc
    image: {img}
    command: ["sleep", "3600"]
    livenessProbe:
      grpc: {{port: 9090}}
      periodSeconds: 1
      failureThreshold: 2
"#
        ));
        for c in ["live", "grpc"] {
            wait_or(
                &format!("a liveness restart of {c}"),
                60,
                || {
                    let count: u32 = n
                        .jp(
                            "live",
                            &format!(
                                "{{.status.containerStatuses[?(@.name==\"{c}\")].restartCount}}"
                            ),
                        )
                        .parse()
                        .unwrap_or(0);
                    (count >= 1).then_some(())
                },
                || {
                    let pod = n.k(&["get", "pod", "live", "-o", "yaml"]).stdout;
                    let ev = n.k(&["get", "events"]).stdout;
                    format!("{pod}\n{ev}")
                },
            );
        }
        let events = n
            .k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=live",
            ])
            .ok()
            .stdout;
        assert!(
            events.contains("Unhealthy") && events.contains("failed liveness probe"),
            "{events}"
        );

        // Bad input: the reasons Kubernetes gives, the node stays Ready.
        n.k(&[
            "run",
            "nopull",
            "--image",
            &format!("{}/nothere:1", n.registry_addr),
        ])
        .ok();
        let foreign = push_foreign_image(&n.registry_addr);
        n.k(&["run", "foreign", "--image", &foreign]).ok();
        wait_or(
            "ErrImagePull for an image of another architecture",
            60,
            || {
                let w = n.jp("foreign", "{.status.containerStatuses[0].state.waiting}");
                ((w.contains("ErrImagePull") || w.contains("ImagePullBackOff"))
                    && w.contains("s390x"))
                .then_some(())
            },
            || n.k(&["describe", "pod", "foreign"]).stdout,
        );
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: nokey}}
spec:
  containers:
  - name: c
    image: {img}
    env:
    - name: X
      valueFrom: {{configMapKeyRef: {{name: conf, key: missing}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: c
    image: {img}
"#
        ));
        wait("ErrImagePull or ImagePullBackOff", 60, || {
            let r = n.jp(
                "nopull",
                "{.status.containerStatuses[0].state.waiting.reason}",
            );
            (r == "ErrImagePull" || r == "ImagePullBackOff").then_some(())
        });
        wait("CreateContainerConfigError for a missing key", 60, || {
            let w = n.jp("nokey", "{.status.containerStatuses[0].state.waiting}");
            (w.contains("CreateContainerConfigError")
                && w.contains("couldn't find key missing in ConfigMap default/conf"))
            .then_some(())
        });
        wait("CreateContainerConfigError for runAsNonRoot", 60, || {
            let w = n.jp("nonroot", "{.status.containerStatuses[0].state.waiting}");
            (w.contains("CreateContainerConfigError") && w.contains("runAsNonRoot")).then_some(())
        });
        // A command that does not exist: RunContainerError saying why; retried with back-off.
        n.k(&[
            "run",
            "badcmd",
            "--image",
            img,
            "--command",
            "--",
            "/no/such/binary",
        ])
        .ok();
        wait("RunContainerError for a missing executable", 60, || {
            let w = n.jp("badcmd", "{.status.containerStatuses[0].state.waiting}");
            (w.contains("RunContainerError") && w.contains("/no/such/binary")).then_some(())
        });
        // preStop runs before the stop signal; the delete ends within the grace period.
        let marker = n.data().join("prestop-marker");
        std::fs::create_dir_all(&marker).unwrap();
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: prestop}}
spec:
  terminationGracePeriodSeconds: 4
  containers:
  - name: c
    image: {img}
    lifecycle: {{preStop: {{exec: {{command: ["sh", "-c", "echo stopping > /marker/ran"]}}}}}}
    volumeMounts: [{{name: m, mountPath: /marker}}]
  volumes:
  - {{name: m, hostPath: {{path: {}}}}}
"#,
            marker.display()
        ));
        n.k(&[
            "wait",
            "--for=condition=Ready",
            "pod/prestop",
            "--timeout=60s",
        ])
        .ok();
        let t0 = std::time::Instant::now();
        n.k(&["delete", "pod", "prestop"]).ok();
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(12),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(
            std::fs::read_to_string(marker.join("ran")).unwrap(),
            "stopping\n"
        );
        let events = n
            .k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=prestop",
            ])
            .ok()
            .stdout;
        assert!(
            events.contains("Killing") && events.contains("Stopping container c"),
            "{events}"
        );

        // terminationMessagePath, capabilities, allowPrivilegeEscalation, postStart.
        n.apply(&format!(r#"
apiVersion: v1
kind: Pod
metadata: {{name: msg}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {img}
    command: ["sh", "-c", "echo 'it failed here' > /dev/termination-log; exit 2"]
---
apiVersion: v1
kind: Pod
metadata: {{name: caps}}
spec:
  containers:
  - name: c
    image: {img}
    securityContext: {{capabilities: {{drop: [ALL], add: [NET_ADMIN]}}, allowPrivilegeEscalation: false}}
    lifecycle: {{postStart: {{exec: {{command: ["sh", "-c", "echo started > /www/poststart"]}}}}}}
"#));
        wait("the termination message", 60, || {
            let m = n.jp(
                "msg",
                "{.status.containerStatuses[0].state.terminated.message}",
            );
            (m == "it failed here\n").then_some(())
        });
        assert_eq!(
            n.jp(
                "msg",
                "{.status.containerStatuses[0].state.terminated.exitCode}"
            ),
            "2"
        );
        n.k(&["wait", "--for=condition=Ready", "pod/caps", "--timeout=60s"])
            .ok();
        let status = n
            .k(&["exec", "caps", "--", "cat", "/proc/1/status"])
            .ok()
            .stdout;
        assert!(status.contains("CapEff:\t0000000000001000"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert_eq!(
            n.k(&["exec", "caps", "--", "cat", "/www/poststart"])
                .ok()
                .stdout,
            "started\n"
        );

        // A port-forward to a closed port: the connection is refused, kubectl says so.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pf = n.server.kubectl_command(
            crate::common::VERSIONS[1],
            &["port-forward", "pod/app", &format!("{port}:9999")],
        );
        pf.env("KUBECONFIG", n.server.kubeconfig())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = pf.spawn().unwrap();
        let mut closed = false;
        for _ in 0..50 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Read;
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let mut b = Vec::new();
                let _ = s.read_to_end(&mut b);
                closed = b.is_empty();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            closed,
            "the forwarded connection to a closed port ends at once"
        );
        assert!(err.contains("9999") && err.contains("refused"), "{err}");
        let nodes = n.k(&["get", "nodes", "--no-headers"]).ok().stdout;
        assert!(nodes.contains(" Ready"), "{nodes}");
        assert_eq!(
            n.jp("app", "{.status.containerStatuses[0].restartCount}"),
            "0"
        );
        // Secrets, configMaps, tokens, its Node, Lease and pods: all within the node's
        // rights.
        assert_eq!(n.node_refusals(), Vec::<String>::new());
    }
    assert_clean(&dir, &cgroups);
}

/// Pushes `REGISTRY/foreign:1`, an image for linux/s390x (one empty layer), through the
/// registry API; its reference.
fn push_foreign_image(registry: &str) -> String {
    use sha2::Digest;
    let digest = |b: &[u8]| format!("sha256:{:x}", sha2::Sha256::digest(b));
    let layer = vec![0u8; 1024]; // an empty tar archive
    let config = serde_json::json!({
        "architecture": "s390x", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    })
    .to_string();
    let curl = |args: &[&str], body: Option<&[u8]>| -> String {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "-D", "-", "-o", "/dev/null"]).args(args);
        if let Some(b) = body {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), b).unwrap();
            c.arg("--data-binary")
                .arg(format!("@{}", f.path().display()));
            let o = c.output().unwrap();
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    for blob in [layer.as_slice(), config.as_bytes()] {
        let head = curl(
            &[
                "-X",
                "POST",
                &format!("http://{registry}/v2/foreign/blobs/uploads/"),
            ],
            None,
        );
        let location = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no upload location: {head}"));
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{registry}{location}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let put = curl(
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                &format!("{url}{sep}digest={}", digest(blob)),
            ],
            Some(blob),
        );
        assert!(put.starts_with("HTTP/1.1 201"), "{put}");
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest(&layer), "size": layer.len()}],
    })
    .to_string();
    let put = curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{registry}/v2/foreign/manifests/1"),
        ],
        Some(manifest.as_bytes()),
    );
    assert!(put.starts_with("HTTP/1.1 201"), "{put}");
    format!("{registry}/foreign:1")
}
