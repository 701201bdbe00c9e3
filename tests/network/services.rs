use crate::cluster::Cluster;

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: kubia}
spec:
  selector: {app: kubia}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: kubia-np}
spec:
  type: NodePort
  selector: {app: kubia}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: kubia-headless}
spec:
  clusterIP: None
  selector: {app: kubia}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
"#;

/// The seed's story on three nodes: one Service IP balances over every pod wherever it
/// runs, keeps answering while its pods are replaced, follows scaling and readiness, and
/// is found by name from another namespace; pods reach pods on other nodes by IP, and a
/// NodePort answers on every node.
#[test]
fn a_service_balances_heals_scales_and_resolves_on_three_nodes() {
    let c = Cluster::start(3);
    c.kubia("kubia", 3);
    c.apply(SERVICES);
    c.client("client", "other", None);
    c.wait("3 ready kubia replicas", 90, || {
        (c.ready_replicas("kubia") == Some(3)).then_some(())
    });
    let pods = c.k(&["get", "pods", "-l", "app=kubia", "-o", "json"]).ok();
    let pods: serde_json::Value = serde_json::from_str(&pods.stdout).unwrap();
    let items = pods["items"].as_array().unwrap().clone();
    let nodes: std::collections::BTreeSet<&str> = items
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert!(nodes.len() >= 2, "3 replicas on one node: {nodes:?}");

    // One stable IP balances over all three pods, by short name and FQDN, from another
    // namespace.
    let hit = c.wait("the Service to reach all 3 pods", 30, || {
        let h = c.hits("other", "client", "http://kubia.default", 60);
        (h.len() == 3).then_some(h)
    });
    assert_eq!(hit.len(), 3);
    let fqdn = c.hits(
        "other",
        "client",
        "http://kubia.default.svc.cluster.local",
        3,
    );
    assert!(!fqdn.is_empty(), "the FQDN does not answer");
    let ns = c.sh_ns(
        "other",
        "client",
        "nslookup kubia.default.svc.cluster.local",
    );
    assert_eq!(ns.code, 0, "{ns:?}");
    let ip = c
        .k(&["get", "svc", "kubia", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .stdout;
    assert!(ns.stdout.contains(ip.trim()), "{ns:?} vs {ip}");
    // SRV for the named port, and the headless Service's pod addresses.
    let srv = c.sh_ns(
        "other",
        "client",
        "nslookup -type=SRV _http._tcp.kubia.default.svc.cluster.local",
    );
    assert!(srv.stdout.contains("80"), "{srv:?}");
    let headless = c.sh_ns(
        "other",
        "client",
        "nslookup kubia-headless.default.svc.cluster.local",
    );
    for p in &items {
        let pip = p["status"]["podIP"].as_str().unwrap();
        assert!(headless.stdout.contains(pip), "{pip} not in {headless:?}");
    }

    // A pod on one node reaches a pod on another by its IP.
    let cnode = c
        .k(&[
            "get",
            "pod",
            "-n",
            "other",
            "client",
            "-o",
            "jsonpath={.spec.nodeName}",
        ])
        .ok()
        .stdout;
    let other = items
        .iter()
        .find(|p| p["spec"]["nodeName"].as_str() != Some(cnode.trim()))
        .expect("a kubia pod on another node");
    let oip = other["status"]["podIP"].as_str().unwrap();
    let o = c.sh_ns(
        "other",
        "client",
        &format!("wget -qO- -T 3 http://{oip}:8080"),
    );
    assert!(o.stdout.contains("You've hit"), "{o:?}");

    // The NodePort answers on every node's address.
    let np = c
        .k(&[
            "get",
            "svc",
            "kubia-np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .ok()
        .stdout;
    for ip in c.node_ips() {
        let o = c.sh_ns(
            "other",
            "client",
            &format!("wget -qO- -T 3 http://{ip}:{}", np.trim()),
        );
        assert!(o.stdout.contains("You've hit"), "NodePort on {ip}: {o:?}");
    }

    // A pod that stops being ready stops receiving traffic.
    let victim = items[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.k(&["exec", &victim, "--", "rm", "/www/cgi-bin/ready"])
        .ok();
    c.wait("the unready pod out of the Service", 30, || {
        let h = c.hits("other", "client", "http://kubia.default", 30);
        (!h.contains(&victim) && h.len() == 2).then_some(())
    });

    // The Service keeps answering while all its pods are deleted and replaced.
    let loop_script = format!("ok=0; bad=0; for i in $(seq 100); do e=$(wget -qO- -T 2 http://{} 2>&1 >/dev/null); if [ $? = 0 ]; then ok=$((ok+1)); else bad=$((bad+1)); echo \"request $i: $e\" >&2; fi; sleep 0.1; done; echo $ok $bad", ip.trim());
    let kc = c.kubeconfig();
    let looper = std::thread::spawn(move || {
        let mut cmd = std::process::Command::new(crate::common::kubectl_path("1.33"));
        cmd.arg("--kubeconfig").arg(kc).args([
            "exec",
            "-n",
            "other",
            "client",
            "--",
            "sh",
            "-c",
            &loop_script,
        ]);
        crate::common::run(cmd, None)
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    c.k(&["delete", "pod", "-l", "app=kubia", "--wait=false"])
        .ok();
    let out = looper.join().unwrap().ok();
    let counts: Vec<u32> = out
        .stdout
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "{out:?}");
    assert!(
        counts[1] <= 3,
        "{} of 100 requests failed while pods were replaced: {}",
        counts[1],
        out.stderr
    );

    // Scaling to 5 spreads requests over 5.
    c.k(&["scale", "deploy", "kubia", "--replicas=5"]).ok();
    c.wait("5 ready replicas", 90, || {
        (c.ready_replicas("kubia") == Some(5)).then_some(())
    });
    c.wait("the Service to reach all 5 pods", 30, || {
        let h = c.hits("other", "client", "http://kubia.default", 100);
        (h.len() == 5).then_some(())
    });

    // sessionAffinity ClientIP keeps one client on one pod.
    c.k(&[
        "patch",
        "svc",
        "kubia",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ])
    .ok();
    c.wait("one client to stick to one pod", 30, || {
        let h = c.hits("other", "client", "http://kubia.default", 20);
        (h.len() == 1).then_some(())
    });
    // The agents' service proxies, DNS servers and kubelets did all that as their nodes.
    assert_eq!(c.node_refusals(), Vec::<String>::new());
}

impl Cluster {
    /// Runs a shell script in pod `ns/pod`.
    pub fn sh_ns(&self, ns: &str, pod: &str, script: &str) -> crate::common::Out {
        self.k(&["exec", "-n", ns, pod, "--", "sh", "-c", script])
    }
}
