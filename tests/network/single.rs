use crate::cluster::Cluster;

const MANIFESTS: &str = r#"apiVersion: v1
kind: Service
metadata: {name: solo}
spec:
  selector: {app: solo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec:
  selector: {app: nobody-has-this-label}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: no-such-port}
spec:
  selector: {app: solo}
  ports: [{port: 80, targetPort: no-such-port}]
---
apiVersion: v1
kind: Pod
metadata: {name: hostport}
spec:
  containers:
  - name: c
    image: kubia:1
    imagePullPolicy: Never
    ports: [{containerPort: 8080, hostPort: 18081}]
"#;

/// One node: hairpin, LoadBalancer through the built-in load balancer, hostPort,
/// Service environment variables, Services that cannot answer (refused at once, not
/// black-holed), addresses released with their pods, and Kubernetes' errors for taken or
/// out-of-range ClusterIPs and NodePorts.
#[test]
fn one_node_hairpin_loadbalancer_hostport_env_and_bad_input() {
    let c = Cluster::start(1);
    c.kubia("solo", 1);
    c.apply(MANIFESTS);
    c.wait("solo ready", 90, || {
        (c.ready_replicas("solo") == Some(1)).then_some(())
    });
    c.client("client", "default", None);

    // A pod reaches itself through its own Service (hairpin).
    let solo = c
        .k(&[
            "get",
            "pods",
            "-l",
            "app=solo",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .ok()
        .stdout;
    let me = c.wait("the pod to reach itself through its Service", 30, || {
        let o = c.k(&[
            "exec",
            solo.trim(),
            "--",
            "wget",
            "-qO-",
            "-T",
            "2",
            "http://solo",
        ]);
        o.stdout.contains("You've hit").then_some(o.stdout)
    });
    assert!(me.contains(solo.trim()), "{me}");

    // Service links: variables of the Services that existed when the client started.
    let env = c.k(&["exec", "client", "--", "env"]).ok().stdout;
    assert!(env.contains("SOLO_SERVICE_HOST=10.43."), "{env}");
    assert!(env.contains("SOLO_SERVICE_PORT=80"), "{env}");
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.43.0.1"), "{env}");

    // A Service that selects nothing, and one whose named targetPort no pod defines:
    // connections are refused at once rather than left to time out.
    for svc in ["nothing", "no-such-port"] {
        let o = c.sh(
            "client",
            &format!("wget -qO- -T 5 http://{svc} 2>&1; echo rc=$?"),
        );
        assert!(
            o.stdout.contains("refused") && o.stdout.contains("rc=1"),
            "{svc}: {o:?}"
        );
    }

    // `kubectl expose --type=LoadBalancer` gets the node's address as EXTERNAL-IP and
    // answers there.
    c.k(&[
        "expose",
        "deployment",
        "solo",
        "--type=LoadBalancer",
        "--name",
        "solo-http",
        "--port",
        "8080",
        "--target-port",
        "8080",
    ])
    .ok();
    let lb = c.wait("an EXTERNAL-IP", 30, || {
        let ip = c
            .k(&[
                "get",
                "svc",
                "solo-http",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ])
            .stdout;
        (!ip.trim().is_empty()).then(|| ip.trim().to_string())
    });
    assert_eq!(vec![lb.clone()], c.node_ips());
    let o = c.wait("the LoadBalancer to answer", 30, || {
        let o = c.sh("client", &format!("wget -qO- -T 2 http://{lb}:8080"));
        o.stdout.contains("You've hit").then_some(o)
    });
    assert!(o.stdout.contains("You've hit"));

    // hostPort on the node's address.
    c.wait("the hostport pod Running", 60, || {
        let o = c.k(&["get", "pod", "hostport", "-o", "jsonpath={.status.phase}"]);
        (o.stdout.trim() == "Running").then_some(())
    });
    let o = c.wait("the hostPort to answer", 30, || {
        let o = c.sh("client", &format!("wget -qO- -T 2 http://{lb}:18081"));
        o.stdout.contains("You've hit").then_some(o)
    });
    assert!(o.stdout.contains("hostport"), "{o:?}");

    // A deleted pod's address goes back to the pool.
    let ip = c
        .k(&["get", "pod", "hostport", "-o", "jsonpath={.status.podIP}"])
        .ok()
        .stdout;
    let ipam = c.dir.join("nodes/skiff-node-1/net/ipam").join(ip.trim());
    assert!(ipam.exists(), "{} not allocated", ipam.display());
    c.k(&["delete", "pod", "hostport", "--grace-period=0", "--force"])
        .ok();
    c.wait("the address released", 30, || {
        (!ipam.exists()).then_some(())
    });

    // Taken and out-of-range ClusterIPs and NodePorts get Kubernetes' errors.
    let bad = |spec: &str| {
        let mut cmd = std::process::Command::new(crate::common::kubectl_path("1.33"));
        cmd.arg("--kubeconfig")
            .arg(c.kubeconfig())
            .args(["create", "-f", "-"]);
        crate::common::run(
            cmd,
            Some(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{generateName: bad-}}\nspec: {spec}\n"
            )),
        )
    };
    let o = bad(r#"{clusterIP: 10.43.0.10, ports: [{port: 80}]}"#).fails();
    assert!(
        o.stderr.contains("provided IP is already allocated"),
        "{o:?}"
    );
    let o = bad(r#"{clusterIP: 10.99.0.5, ports: [{port: 80}]}"#).fails();
    assert!(o.stderr.contains("not in the valid range"), "{o:?}");
    let np = c
        .k(&[
            "get",
            "svc",
            "solo-http",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .ok()
        .stdout;
    let o = bad(&format!(
        "{{type: NodePort, ports: [{{port: 80, nodePort: {}}}]}}",
        np.trim()
    ))
    .fails();
    assert!(
        o.stderr.contains("provided port is already allocated"),
        "{o:?}"
    );
    let o = bad(r#"{type: NodePort, ports: [{port: 80, nodePort: 80}]}"#).fails();
    assert!(o.stderr.contains("not in the valid range"), "{o:?}");
    assert_eq!(c.node_refusals(), Vec::<String>::new());
}
