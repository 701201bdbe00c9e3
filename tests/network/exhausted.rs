use crate::cluster::Cluster;

/// A node whose pod CIDR is full (a /29: five pod addresses): the pods past it wait with
/// the reason in their status and a FailedCreatePodSandBox Event, the others run; when
/// one goes, a waiting pod gets its address.
#[test]
fn an_exhausted_pod_cidr_is_in_the_pods_status_and_the_others_run() {
    let c = Cluster::start_with(1, &["--server-arg=--node-cidr-mask-size=29"]);
    let cidr = c
        .k(&[
            "get",
            "node",
            "skiff-node-1",
            "-o",
            "jsonpath={.spec.podCIDR}",
        ])
        .ok()
        .stdout;
    assert!(cidr.ends_with("/29"), "{cidr}");
    c.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: many}
spec:
  replicas: 7
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: c, image: 'kubia:1', imagePullPolicy: Never, command: [sleep, '3600']}
"#,
    );
    let phases = || {
        c.k(&[
            "get",
            "pods",
            "-l",
            "app=many",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.containerStatuses[0].state.waiting.message}{\"\\n\"}{end}",
        ])
        .ok()
        .stdout
    };
    let out = c.wait("5 Running and 2 waiting for an address", 90, || {
        let out = phases();
        let running = out.lines().filter(|l| l.contains(" Running")).count();
        let waiting = out
            .lines()
            .filter(|l| l.contains(" Pending ") && l.contains("no free IP address in pod CIDR"))
            .count();
        (running == 5 && waiting == 2).then_some(out)
    });
    assert!(
        out.contains("--node-cidr-mask-size"),
        "the message says what to do: {out}"
    );
    let events = c
        .k(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedCreatePodSandBox",
            "-o",
            "name",
        ])
        .ok()
        .stdout;
    assert!(!events.trim().is_empty(), "no FailedCreatePodSandBox Event");
    // A running pod goes: its address goes to a pod that had none (one that waited, or
    // the ReplicaSet's replacement, whichever asks first, as host-local IPAM hands them
    // out), and the node is full again.
    let running_before: Vec<String> = out
        .lines()
        .filter(|l| l.contains(" Running"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let gone = running_before[0].clone();
    c.k(&["delete", "pod", &gone, "--grace-period=0", "--force"])
        .ok();
    c.wait("a pod without an address to get the freed one", 90, || {
        let out = phases();
        let running: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(" Running"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        (running.len() == 5
            && !running.contains(&gone.as_str())
            && running
                .iter()
                .any(|p| !running_before.iter().any(|b| b == p)))
        .then_some(())
    });
}
