//! The API server's share of scheduling, driven with real kubectl (1.27 and 1.33) and
//! curl: PriorityClasses (built-in system classes, kube's rules) and priority admission
//! of pods, pod validation of placement fields with kube-apiserver's messages as kubectl
//! prints them, and `pods/binding`.

use crate::common::{Server, VERSIONS};

/// A pod manifest named `name` with `spec` lines (YAML, indented two spaces under spec)
/// besides its one container.
fn pod(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{spec}"
    )
}

fn create_fails(s: &Server, v: &str, manifest: &str) -> String {
    s.kubectl_with(v, &["create", "-f", "-"], Some(manifest), &[])
        .fails()
        .stderr
}

#[test]
fn priority_classes_and_pod_priority() {
    let mut s = Server::start();
    for v in VERSIONS {
        let out = s
            .kubectl(
                v,
                &[
                    "get",
                    "priorityclass",
                    "-o",
                    "custom-columns=N:.metadata.name,V:.value",
                ],
            )
            .ok()
            .stdout;
        assert!(
            out.contains("system-cluster-critical   2000000000"),
            "{out}"
        );
        assert!(
            out.contains("system-node-critical      2000001000"),
            "{out}"
        );
        let err = s
            .kubectl(v, &["delete", "priorityclass", "system-node-critical"])
            .fails()
            .stderr;
        assert!(
            err.contains(r#"Error from server (Forbidden): priorityclasses.scheduling.k8s.io "system-node-critical" is forbidden: this is a system priority class and cannot be deleted"#),
            "{err}"
        );
        let err = create_fails(
            &s,
            v,
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: too-high\nvalue: 1000000001\n",
        );
        assert!(
            err.contains(r#"The PriorityClass "too-high" is invalid: value: Forbidden: maximum allowed value of a user defined priority is 1000000000"#),
            "{err}"
        );
        let err = create_fails(
            &s,
            v,
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: system-mine\nvalue: 10\n",
        );
        assert!(
            err.contains("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"),
            "{err}"
        );
        let err = create_fails(&s, v, &pod("p-unknown", "  priorityClassName: foo\n"));
        assert!(
            err.contains(r#"Error from server (Forbidden): error when creating "STDIN": pods "p-unknown" is forbidden: no PriorityClass with name foo was found"#),
            "{err}"
        );
    }
    let v = VERSIONS[1];
    // A user class that is the global default: pods naming no class get it.
    s.kubectl_with(
        v,
        &["create", "-f", "-"],
        Some("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: normal\nvalue: 1000\nglobalDefault: true\npreemptionPolicy: Never\n"),
        &[],
    )
    .ok();
    let err = create_fails(
        &s,
        v,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: other\nvalue: 5\nglobalDefault: true\n",
    );
    assert!(
        err.contains(r#"priorityclasses.scheduling.k8s.io "other" is forbidden: PriorityClass normal is already marked as default. Only one default can exist"#),
        "{err}"
    );
    let err = s
        .kubectl(
            v,
            &["patch", "priorityclass", "normal", "-p", r#"{"value": 7}"#],
        )
        .fails()
        .stderr;
    assert!(
        err.contains("value: Forbidden: may not be changed in an update."),
        "{err}"
    );
    s.kubectl_with(v, &["create", "-f", "-"], Some(&pod("p-default", "")), &[])
        .ok();
    s.kubectl_with(
        v,
        &["create", "-f", "-"],
        Some(&pod(
            "p-critical",
            "  priorityClassName: system-cluster-critical\n",
        )),
        &[],
    )
    .ok();
    let field = |name: &str, path: &str| {
        s.kubectl(
            v,
            &["get", "pod", name, "-o", &format!("jsonpath={{{path}}}")],
        )
        .ok()
        .stdout
    };
    assert_eq!(field("p-default", ".spec.priority"), "1000");
    assert_eq!(field("p-default", ".spec.priorityClassName"), "normal");
    assert_eq!(field("p-default", ".spec.preemptionPolicy"), "Never");
    assert_eq!(field("p-critical", ".spec.priority"), "2000000000");
    assert_eq!(
        field("p-critical", ".spec.preemptionPolicy"),
        "PreemptLowerPriority"
    );
    let err = create_fails(
        &s,
        v,
        &pod("p-mismatch", "  priorityClassName: normal\n  priority: 5\n"),
    );
    assert!(
        err.contains(r#"pods "p-mismatch" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"#),
        "{err}"
    );
    // The system classes are created once: a restart on the same data dir finds them.
    s.restart();
    let out = s
        .kubectl(v, &["get", "priorityclass", "-o", "name"])
        .ok()
        .stdout;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "priorityclass.scheduling.k8s.io/normal",
            "priorityclass.scheduling.k8s.io/system-cluster-critical",
            "priorityclass.scheduling.k8s.io/system-node-critical"
        ]
    );
}

/// Bad placement fields are refused with kube-apiserver's messages, as kubectl shows them.
#[test]
fn placement_fields_are_validated_with_kubes_messages() {
    let s = Server::start();
    let cases: &[(&str, &str)] = &[
        (
            "    resources:\n      requests:\n        cpu: \"-1\"\n",
            r#"The Pod "bad" is invalid: spec.containers[0].resources.requests[cpu]: Invalid value: "-1": must be greater than or equal to 0"#,
        ),
        (
            "    resources:\n      requests:\n        cpu: \"2\"\n      limits:\n        cpu: \"1\"\n",
            r#"The Pod "bad" is invalid: spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1"#,
        ),
        (
            "    resources:\n      requests:\n        memory: lots\n",
            r#"Error from server (BadRequest): error when creating "STDIN": Pod in version "v1" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"#,
        ),
        (
            "  tolerations:\n  - key: k\n    operator: Equal\n    value: v\n    effect: Sometimes\n",
            r#"The Pod "bad" is invalid: spec.tolerations[0].effect: Unsupported value: "Sometimes": supported values: "NoExecute", "NoSchedule", "PreferNoSchedule""#,
        ),
        (
            "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels:\n            app: web\n        topologyKey: \"\"\n",
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty",
        ),
        (
            "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchExpressions:\n          - key: app\n            operator: Near\n            values: [web]\n        topologyKey: zone\n",
            r#"The Pod "bad" is invalid: spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator: Invalid value: "Near": not a valid selector operator"#,
        ),
        (
            "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - key: cores\n            operator: Gt\n            values: [\"1\", \"2\"]\n",
            "nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'",
        ),
        (
            "  topologySpreadConstraints:\n  - maxSkew: 0\n    topologyKey: zone\n    whenUnsatisfiable: DoNotSchedule\n",
            r#"The Pod "bad" is invalid: spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero"#,
        ),
        (
            "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: zone\n    whenUnsatisfiable: ScheduleAnyway\n    minDomains: 2\n",
            "spec.topologySpreadConstraints[0].minDomains: Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway",
        ),
        (
            "  nodeName: n1\n  schedulingGates:\n  - name: wait\n",
            r#"The Pod "bad" is invalid: spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared"#,
        ),
    ];
    for v in VERSIONS {
        for (spec, want) in cases {
            let err = create_fails(&s, v, &pod("bad", spec));
            assert!(err.contains(want), "kubectl {v}, spec {spec}:\n{err}");
        }
        // Pod templates get the same checks.
        let err = create_fails(
            &s,
            v,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n      tolerations:\n      - key: k\n        operator: Exists\n        value: v\n",
        );
        assert!(
            err.contains(r#"The Deployment "d" is invalid: spec.template.spec.tolerations[0].operator: Invalid value: core.Toleration{Key:"k", Operator:"Exists", Value:"v", Effect:"", TolerationSeconds:(*int64)(nil)}: value must be empty when `operator` is 'Exists'"#),
            "{err}"
        );
    }
    // Gates may be removed after creation, never added.
    let v = VERSIONS[1];
    s.kubectl_with(
        v,
        &["create", "-f", "-"],
        Some(&pod(
            "gated",
            "  schedulingGates:\n  - name: a\n  - name: b\n",
        )),
        &[],
    )
    .ok();
    let err = s
        .kubectl(
            v,
            &[
                "patch",
                "pod",
                "gated",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/spec/schedulingGates/-","value":{"name":"c"}}]"#,
            ],
        )
        .fails()
        .stderr;
    assert!(
        err.contains("spec.schedulingGates[2].name: Forbidden: only deletion is allowed, but found new scheduling gate 'c'"),
        "{err}"
    );
    s.kubectl(
        v,
        &[
            "patch",
            "pod",
            "gated",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/schedulingGates/0"}]"#,
        ],
    )
    .ok();
    let gates = s
        .kubectl(
            v,
            &[
                "get",
                "pod",
                "gated",
                "-o",
                "jsonpath={.spec.schedulingGates[*].name}",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(gates, "b");
}

/// `pods/binding` sets the node and `PodScheduled=True` in one write, and refuses what
/// kube refuses.
#[test]
fn binding_sets_pod_scheduled() {
    // The test servers run no scheduler (common.rs): the test binds, and counts writes.
    let s = Server::start();
    let v = VERSIONS[1];
    let bind = |name: &str, node: &str| {
        s.send(
            "POST",
            &format!("/api/v1/namespaces/default/pods/{name}/binding"),
            "application/json",
            &format!(
                r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{name}"}},"target":{{"apiVersion":"v1","kind":"Node","name":"{node}"}}}}"#
            ),
        )
    };
    s.kubectl_with(v, &["create", "-f", "-"], Some(&pod("web", "")), &[])
        .ok();
    let rv_before = s
        .kubectl(
            v,
            &[
                "get",
                "pod",
                "web",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
        )
        .ok()
        .stdout;
    let (code, body) = bind("web", "n1");
    assert_eq!(code, 201, "{body}");
    let got: serde_json::Value = serde_json::from_str(
        &s.kubectl(v, &["get", "pod", "web", "-o", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(got["spec"]["nodeName"], "n1");
    let cond = got["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(cond["status"], "True", "{got}");
    assert!(cond["lastTransitionTime"].is_string(), "{cond}");
    // One write: the resourceVersion moved by exactly one revision.
    let rv_after: i64 = got["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rv_after, rv_before.parse::<i64>().unwrap() + 1);

    // Refusals are 409s, as kube's binding answers them.
    let refused = |name: &str, why: &str| {
        let (code, body) = bind(name, "n2");
        assert_eq!(code, 409, "{body}");
        assert_eq!(
            body["message"],
            format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}")
        );
    };
    refused("web", r#"pod web is already assigned to node "n1""#);
    s.kubectl_with(
        v,
        &["create", "-f", "-"],
        Some(&pod("gated", "  schedulingGates:\n  - name: wait\n")),
        &[],
    )
    .ok();
    refused("gated", "pod gated has non-empty .spec.schedulingGates");

    // A finalizer keeps the deleted pod around, terminating.
    s.kubectl_with(
        v,
        &["create", "-f", "-"],
        Some(&pod("going", "").replace(
            "metadata:\n  name: going\n",
            "metadata:\n  name: going\n  finalizers: [example.com/hold]\n",
        )),
        &[],
    )
    .ok();
    s.kubectl(v, &["delete", "pod", "going", "--wait=false"])
        .ok();
    refused(
        "going",
        "pod going is being deleted, cannot be assigned to a host",
    );
    s.kubectl(
        v,
        &[
            "patch",
            "pod",
            "going",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    )
    .ok();
}
