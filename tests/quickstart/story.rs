//! The seed's story on one `skiff server`, as README's quickstart walks it, with real
//! kubectl: the kubia image built and pushed to the built-in registry; deployed and
//! exposed (`kubectl create deployment`/`expose` with 1.27, `kubectl apply -f
//! examples/kubia/` with 1.33); the Service balancing over every pod; self-healing of a
//! deleted pod and of a container killed on the host; scaling; a rolling update without
//! a failed request; a broken version stopped at its progress deadline and undone;
//! autoscaling out under load and back in; a namespace deleted with everything in it,
//! on the API and on the host.
//!
//! The server runs the pod network in the host's network namespace, on a bridge, nft
//! tables and address ranges of this test's own; pods talk only to each other and to
//! cluster names.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{kubectl_path, run, Out, SKIFF, VERSIONS};
use crate::node::wait;
use crate::one_command::{free_port, pids_in, Running};

const HTTPD: &str = "httpd -f -v -p 8080";

struct Story {
    server: Running,
    work: tempfile::TempDir,
    registry: String,
    cgroup: String,
    bridge: String,
    nft_prefix: String,
}

impl Story {
    fn k(&self, v: &str, args: &[&str]) -> Out {
        let mut c = Command::new(kubectl_path(v));
        c.arg("--kubeconfig")
            .arg(self.server.dir.join("kubeconfig.yaml"))
            .args(args);
        run(c, None)
    }

    fn k33(&self, args: &[&str]) -> Out {
        self.k(VERSIONS[1], args)
    }

    fn jp(&self, ns: &str, what: &str, path: &str) -> String {
        self.k33(&["-n", ns, "get", what, "-o", &format!("jsonpath={path}")])
            .stdout
    }

    fn ready(&self, ns: &str, deploy: &str) -> String {
        self.jp(ns, &format!("deploy/{deploy}"), "{.status.readyReplicas}")
    }

    fn wait_ready(&self, ns: &str, deploy: &str, n: u32, secs: u64) {
        let want = n.to_string();
        wait(&format!("{ns}/{deploy} {n} ready"), secs, || {
            (self.ready(ns, deploy) == want).then_some(())
        });
    }

    /// The distinct pods that answered `n` requests to `url` from the client pod.
    fn hits(&self, ns: &str, url: &str, n: u32) -> std::collections::BTreeSet<String> {
        let script = format!("for i in $(seq {n}); do wget -qO- -T 2 {url}; done");
        let o = self.k33(&["-n", ns, "exec", "client", "--", "sh", "-c", &script]);
        o.stdout
            .lines()
            .filter_map(|l| l.split("hit ").nth(1))
            .map(|s| s.trim().to_string())
            .collect()
    }

    /// One answer of the Service kubia to the client pod of `default`.
    fn answer(&self) -> String {
        let args = [
            "exec",
            "client",
            "--",
            "wget",
            "-qO-",
            "-T",
            "2",
            "http://kubia",
        ];
        self.k33(&args).stdout
    }

    fn build(&self, tag: &str, from: &str, edit: Option<(&str, &str)>) -> String {
        let ctx = self.work.path().join(format!("ctx-{tag}"));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/{from}"));
        assert!(Command::new("cp")
            .arg("-r")
            .arg(&src)
            .arg(&ctx)
            .status()
            .unwrap()
            .success());
        std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
        if let Some((from, to)) = edit {
            let f = ctx.join("www/cgi-bin/index.cgi");
            let s = std::fs::read_to_string(&f).unwrap().replace(from, to);
            std::fs::write(&f, s).unwrap();
        }
        let image = format!("{}/kubia:{tag}", self.registry);
        let store = self.work.path().join("images");
        let mut c = Command::new(SKIFF);
        c.env("SKIFF_DATA_DIR", &store)
            .args(["image", "build", "-t", &image])
            .arg(&ctx);
        run(c, None).ok();
        let mut c = Command::new(SKIFF);
        c.env("SKIFF_DATA_DIR", &store)
            .args(["image", "push", &image]);
        run(c, None).ok();
        image
    }
}

impl Drop for Story {
    fn drop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let mut c = Command::new(SKIFF);
        c.args([
            "uninstall",
            "--purge",
            "--cgroup-parent",
            &self.cgroup,
            "--bridge-name",
            &self.bridge,
            "--nft-table-prefix",
            &self.nft_prefix,
            "--cluster-cidr",
            "10.211.0.0/16",
            "--service-cluster-ip-range",
            "10.212.0.0/16",
            "--data-dir",
        ])
        .arg(&self.server.dir);
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Requests from the client pod every 100 ms until stopped; how many failed.
fn request_loop(s: &Story, ns: &str, n: u32) -> Child {
    let script = format!(
        "bad=0; for i in $(seq {n}); do wget -qO- -T 2 http://kubia >/dev/null 2>&1 || bad=$((bad+1)); sleep 0.1; done; echo bad=$bad"
    );
    Command::new(kubectl_path(VERSIONS[1]))
        .arg("--kubeconfig")
        .arg(s.server.dir.join("kubeconfig.yaml"))
        .args(["-n", ns, "exec", "client", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn failed_requests(c: Child) -> u32 {
    let o = c.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find_map(|l| l.strip_prefix("bad="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count from the request loop: {out} {o:?}"))
}

#[test]
fn the_seed_story_with_kubectl_127_and_133() {
    let id = std::process::id() % 100_000;
    let work = tempfile::tempdir().unwrap();
    let registry = format!("127.0.0.1:{}", free_port());
    let cgroup = format!("/skiff-test-story-{id}");
    let bridge = format!("skq{id}");
    let nft_prefix = format!("skiff-q{id}");
    let dir = work.path().join("data");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--registry-listen",
        &registry,
        "--kubelet-port",
        "0",
        "--cgroup-parent",
        &cgroup,
        "--bridge-name",
        &bridge,
        "--nft-table-prefix",
        &nft_prefix,
        "--cluster-cidr",
        "10.211.0.0/16",
        "--service-cluster-ip-range",
        "10.212.0.0/16",
        "--cluster-dns",
        "10.212.0.10",
        "--kube-proxy-metrics-bind-address",
        "",
        "--eviction-hard",
        "",
        "--image-gc-high-threshold",
        "100",
        "--metric-resolution",
        "2s",
        "--horizontal-pod-autoscaler-sync-period",
        "2s",
        "--horizontal-pod-autoscaler-downscale-stabilization",
        "10s",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Running::start(&dir, &args);
    server.until_line("Use it with", 60);
    let s = Story {
        server,
        work,
        registry,
        cgroup,
        bridge,
        nft_prefix,
    };

    // 1. Build three versions and push them to the built-in registry.
    let v1 = s.build("v1", "kubia", None);
    let v2 = s.build("v2", "kubia", Some(("You've hit", "v2: You've hit")));
    let v3 = s.build("v3", "kubia-unready", None);

    // 2. kubectl 1.27: create deployment and expose, in a namespace of its own.
    let k27 = VERSIONS[0];
    s.k(k27, &["create", "ns", "k127"]).ok();
    s.k(
        k27,
        &[
            "-n",
            "k127",
            "create",
            "deployment",
            "kubia",
            &format!("--image={v1}"),
            "--replicas=3",
        ],
    )
    .ok();
    s.k(
        k27,
        &[
            "-n",
            "k127",
            "expose",
            "deployment",
            "kubia",
            "--port=80",
            "--target-port=8080",
        ],
    )
    .ok();
    // kubectl 1.33: the manifests in examples/kubia (readiness probe, named port), with
    // this test's registry.
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubia/kubia.yaml"),
    )
    .unwrap()
    .replace("127.0.0.1:5000/kubia:v1", &v1);
    let mdir = s.work.path().join("manifests");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(mdir.join("kubia.yaml"), manifest).unwrap();
    s.k33(&["apply", "-f", mdir.to_str().unwrap()]).ok();
    // A faster deadline for step 7 (600 s by default), and a shorter grace period: busybox
    // httpd as PID 1 ignores SIGTERM, so each stopped pod takes its whole grace.
    s.k33(&[
        "patch",
        "deploy",
        "kubia",
        "--type=merge",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":10,"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}},"template":{"spec":{"terminationGracePeriodSeconds":3}}}}"#,
    ])
    .ok();
    s.k(
        k27,
        &[
            "-n",
            "k127",
            "patch",
            "deploy",
            "kubia",
            "-p",
            r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":3}}}}"#,
        ],
    )
    .ok();
    s.wait_ready("default", "kubia", 3, 90);
    s.wait_ready("k127", "kubia", 3, 90);
    for ns in ["default", "k127"] {
        s.k33(&[
            "-n",
            ns,
            "run",
            "client",
            &format!("--image={v1}"),
            "--command",
            "--",
            "sleep",
            "3600",
        ])
        .ok();
        s.k33(&[
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "--timeout=60s",
        ])
        .ok();
    }

    // 3. One name, one IP, every pod answering.
    let ip = s.jp("default", "svc/kubia", "{.spec.clusterIP}");
    assert!(ip.starts_with("10.212."), "{ip}");
    // The kubia pods not being deleted.
    let pods = |ns: &str| -> std::collections::BTreeSet<String> {
        s.jp(
            ns,
            "pods",
            "{range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        )
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubia-") && !l.contains(' '))
        .map(String::from)
        .collect()
    };
    for ns in ["default", "k127"] {
        let got = wait(&format!("all 3 pods of {ns} to answer"), 30, || {
            let h = s.hits(ns, "http://kubia", 30);
            (h == pods(ns)).then_some(h)
        });
        assert_eq!(got.len(), 3, "{got:?}");
    }

    // 4. Self-healing: a deleted pod is replaced; a container killed on the host restarts.
    let victim = pods("default").into_iter().next().unwrap();
    s.k33(&["delete", "pod", &victim, "--wait=false"]).ok();
    wait("the deleted pod replaced", 60, || {
        let now = pods("default");
        (now.len() == 3 && !now.contains(&victim) && s.ready("default", "kubia") == "3")
            .then_some(())
    });
    // Only once the deleted pod is gone (its httpd may outlive its grace period as it
    // ignores SIGTERM) is every httpd on the host a live pod's: 3 in each namespace.
    let before = wait("the deleted pod gone and 6 httpds left", 60, || {
        let gone = s
            .k33(&["get", "pod", &victim, "--ignore-not-found", "-o", "name"])
            .stdout
            .trim()
            .is_empty();
        let pids = pids_in(&s.cgroup, HTTPD);
        (gone && pids.len() == 6).then_some(pids)
    });
    let killed = before[0];
    Command::new("kill")
        .args(["-9", &killed.to_string()])
        .status()
        .unwrap();
    wait("the killed container restarted", 60, || {
        // The killed process may be any kubia pod's, of either namespace.
        let counts = s
            .k33(&[
                "get",
                "pods",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.status.containerStatuses[0].restartCount}{\" \"}{end}",
            ])
            .stdout;
        let total: u32 = counts
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .sum();
        (total >= 1 && s.ready("default", "kubia") == "3" && s.ready("k127", "kubia") == "3")
            .then_some(())
    });

    // 5. Scale to five: five answer.
    s.k33(&["scale", "deployment", "kubia", "--replicas=5"])
        .ok();
    s.wait_ready("default", "kubia", 5, 60);
    wait("all 5 pods to answer", 30, || {
        (s.hits("default", "http://kubia", 60).len() == 5).then_some(())
    });

    // 6. A rolling update to v2 with no failed request.
    let load = request_loop(&s, "default", 150);
    s.k33(&["set", "image", "deployment/kubia", &format!("kubia={v2}")])
        .ok();
    let mut c = Command::new(kubectl_path(VERSIONS[1]));
    c.arg("--kubeconfig")
        .arg(s.server.dir.join("kubeconfig.yaml"))
        .args(["rollout", "status", "deployment/kubia", "--timeout=120s"]);
    let o = run(c, None);
    assert_eq!(o.code, 0, "rollout to v2: {o:?}");
    assert_eq!(
        failed_requests(load),
        0,
        "requests failed during the rolling update"
    );
    let answer = s.answer();
    assert!(answer.starts_with("v2: "), "{answer:?}");

    // 7. A broken v3 stops at its progress deadline; v2 keeps serving; undo.
    s.k33(&["set", "image", "deployment/kubia", &format!("kubia={v3}")])
        .ok();
    let o = s.k(
        k27,
        &["rollout", "status", "deployment/kubia", "--timeout=90s"],
    );
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("exceeded its progress deadline"), "{o:?}");
    assert_eq!(s.ready("default", "kubia"), "5");
    let answer = s.answer();
    assert!(answer.starts_with("v2: "), "{answer:?}");
    s.k33(&["rollout", "undo", "deployment/kubia"]).ok();
    let o = s.k33(&["rollout", "status", "deployment/kubia", "--timeout=60s"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        s.jp(
            "default",
            "deploy/kubia",
            "{.spec.template.spec.containers[0].image}"
        ),
        v2
    );

    // 8. Autoscaling: out under load, back in after it.
    s.k33(&["create", "ns", "load"]).ok();
    let burn = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"burn","namespace":"load"}},
 "spec":{{"replicas":1,"selector":{{"matchLabels":{{"app":"burn"}}}},
 "template":{{"metadata":{{"labels":{{"app":"burn"}}}},"spec":{{"terminationGracePeriodSeconds":0,
 "containers":[{{"name":"b","image":"{v1}","resources":{{"requests":{{"cpu":"100m"}},"limits":{{"cpu":"200m"}}}},
 "command":["sh","-c","while [ ! -f /tmp/stop ]; do :; done; sleep 3600"]}}]}}}}}}}}"#
    );
    let mut c = Command::new(kubectl_path(VERSIONS[1]));
    c.arg("--kubeconfig")
        .arg(s.server.dir.join("kubeconfig.yaml"))
        .args(["apply", "-f", "-"]);
    run(c, Some(&burn)).ok();
    s.wait_ready("load", "burn", 1, 60);
    s.k(
        k27,
        &[
            "-n",
            "load",
            "autoscale",
            "deployment",
            "burn",
            "--cpu-percent=50",
            "--min=1",
            "--max=3",
        ],
    )
    .ok();
    wait("the HPA to scale out", 90, || {
        let r = s.jp("load", "deploy/burn", "{.spec.replicas}");
        (r.parse::<u32>().unwrap_or(0) > 1).then_some(())
    });
    let stop_all = || {
        for p in s
            .jp("load", "pods", "{.items[*].metadata.name}")
            .split_whitespace()
        {
            s.k33(&["-n", "load", "exec", p, "--", "touch", "/tmp/stop"]);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        stop_all();
        if s.jp("load", "deploy/burn", "{.spec.replicas}") == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the HPA did not scale back in");
        std::thread::sleep(Duration::from_secs(1));
    }

    // 11. A namespace deleted: everything in it goes, on the API and on the host.
    let before = pids_in(&s.cgroup, HTTPD).len();
    s.k33(&["delete", "ns", "k127", "--wait=false"]).ok();
    wait("namespace k127 gone", 90, || {
        (s.k33(&["get", "ns", "k127"]).code != 0).then_some(())
    });
    wait("the namespace's containers gone from the host", 30, || {
        // 3 kubia pods and the client (sleep) of k127.
        (pids_in(&s.cgroup, HTTPD).len() + 3 <= before).then_some(())
    });
    let left = s.k33(&["get", "all", "-n", "k127", "--no-headers"]);
    assert!(left.stdout.trim().is_empty(), "{left:?}");
}
