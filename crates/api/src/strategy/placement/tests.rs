use serde_json::{json, Value};

use crate::strategy::{for_kind, validate, validate_update};

fn pod(spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    for (k, v) in spec_extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let mut p = json!({"metadata": {"name": "p"}, "spec": spec});
    for_kind("Pod").default(&mut p);
    p
}

fn messages(obj: &Value) -> Vec<String> {
    validate("Pod", obj)
        .into_iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

fn with_resources(res: Value) -> Value {
    let mut p = pod(json!({}));
    p["spec"]["containers"][0]["resources"] = res;
    p
}

#[test]
fn valid_placement_passes() {
    let p = pod(json!({
        "nodeSelector": {"kubernetes.io/hostname": "n1"},
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["2"]}],
                 "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}
        },
        "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
                        {"operator": "Exists"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}],
        "schedulingGates": [{"name": "example.com/wait"}],
    }));
    assert_eq!(messages(&p), Vec::<String>::new());
    let r =
        with_resources(json!({"requests": {"cpu": "500m", "memory": 1024}, "limits": {"cpu": 1}}));
    assert_eq!(messages(&r), Vec::<String>::new());
}

#[test]
fn resources() {
    assert_eq!(
        messages(&with_resources(json!({"requests": {"cpu": "-1"}}))),
        ["spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"]
    );
    assert_eq!(
        messages(&with_resources(
            json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})
        )),
        ["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]
    );
    assert_eq!(
        messages(&with_resources(json!({"limits": {"gpu": "1"}}))),
        ["spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"]
    );
    assert_eq!(
        messages(&with_resources(
            json!({"requests": {"example.com/gpu": "500m"}, "limits": {"example.com/gpu": "500m"}})
        )),
        [
            "spec.containers[0].resources.limits[example.com/gpu]: Invalid value: \"500m\": must be an integer",
            "spec.containers[0].resources.requests[example.com/gpu]: Invalid value: \"500m\": must be an integer"
        ]
    );
    assert_eq!(
        messages(&with_resources(json!({"requests": {"example.com/gpu": "1"}}))),
        ["spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources"]
    );
}

#[test]
fn affinity_terms() {
    let p = pod(
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}, "topologyKey": ""}]}}}),
    );
    let at = "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]";
    assert_eq!(
        messages(&p),
        [
            format!("{at}.labelSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
            format!("{at}.topologyKey: Required value: can not be empty"),
            format!("{at}.topologyKey: Invalid value: \"\": name part must be non-empty"),
            format!("{at}.topologyKey: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
        ]
    );
    let p = pod(
        json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 0, "podAffinityTerm": {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}, "topologyKey": "zone"}}]}}}),
    );
    let at = "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]";
    assert_eq!(
        messages(&p),
        [
            format!("{at}.weight: Invalid value: 0: must be in the range 1-100"),
            format!("{at}.podAffinityTerm.labelSelector.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator"),
        ]
    );
    let p = pod(
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["1", "2"]}, {"key": "a", "operator": "Like", "values": ["x"]}],
         "matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]}]}}}}),
    );
    let at = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]";
    assert_eq!(
        messages(&p),
        [
            format!("{at}.matchExpressions[0].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'"),
            format!("{at}.matchExpressions[1].operator: Invalid value: \"Like\": not a valid selector operator"),
            format!("{at}.matchFields[0].key: Invalid value: \"metadata.uid\": not a valid field selector key"),
        ]
    );
    let p = pod(
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}),
    );
    assert_eq!(
        messages(&p),
        ["spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: must have at least one node selector term"]
    );
}

#[test]
fn tolerations() {
    let p = pod(json!({"tolerations": [
        {"key": "k", "operator": "Equal", "value": "v", "effect": "Sometimes"},
        {"key": "k", "operator": "Exists", "value": "v", "effect": "NoSchedule"},
        {"key": "k", "operator": "Maybe"},
        {"operator": "Equal", "value": "v"},
        {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5},
    ]}));
    assert_eq!(
        messages(&p),
        [
            "spec.tolerations[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
            "spec.tolerations[1].operator: Invalid value: core.Toleration{Key:\"k\", Operator:\"Exists\", Value:\"v\", Effect:\"NoSchedule\", TolerationSeconds:(*int64)(nil)}: value must be empty when `operator` is 'Exists'",
            "spec.tolerations[2].operator: Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\"",
            "spec.tolerations[3].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[4].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        ]
    );
}

#[test]
fn topology_spread() {
    let p = pod(json!({"topologySpreadConstraints": [
        {"maxSkew": 0, "topologyKey": "", "whenUnsatisfiable": "Sometimes"},
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2},
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
    ]}));
    let at = "spec.topologySpreadConstraints";
    assert_eq!(
        messages(&p),
        [
            format!("{at}[0].maxSkew: Invalid value: 0: must be greater than zero"),
            format!("{at}[0].topologyKey: Required value: can not be empty"),
            format!("{at}[0].whenUnsatisfiable: Unsupported value: \"Sometimes\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\""),
            format!("{at}[1].{{topologyKey, whenUnsatisfiable}}: Duplicate value: \"{{zone, ScheduleAnyway}}\""),
            format!("{at}[1].minDomains: Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway"),
        ]
    );
}

#[test]
fn scheduling_gates() {
    let gated = pod(json!({"schedulingGates": [{"name": "a"}]}));
    let mut bound = gated.clone();
    bound["spec"]["nodeName"] = json!("n1");
    assert_eq!(
        messages(&bound),
        ["spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared"]
    );
    let open = pod(json!({}));
    assert!(validate_update("Pod", &gated, &open).is_empty(), "removal");
    let more = pod(json!({"schedulingGates": [{"name": "a"}, {"name": "b"}]}));
    let c: Vec<String> = validate_update("Pod", &gated, &more)
        .into_iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    assert_eq!(
        c,
        ["spec.schedulingGates[1].name: Forbidden: only deletion is allowed, but found new scheduling gate 'b'"]
    );
    let dup = pod(json!({"schedulingGates": [{"name": "a"}, {"name": "a"}]}));
    assert_eq!(
        messages(&dup),
        ["spec.schedulingGates[1]: Duplicate value: \"a\""]
    );
}

#[test]
fn templates_are_checked_too() {
    let mut d = json!({"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "a"}}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "tolerations": [{"key": "k", "effect": "Sometimes"}]}}}});
    for_kind("Deployment").default(&mut d);
    let c = validate("Deployment", &d);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].field, "spec.template.spec.tolerations[0].effect");
}

#[test]
fn quantities_print_in_canonical_form() {
    for (given, printed) in [
        ("2000m", "2"),
        ("1000", "1k"),
        ("0.5", "500m"),
        ("1.5", "1500m"),
        ("1024Mi", "1Gi"),
        ("128Mi", "128Mi"),
        ("1e3", "1e3"),
        ("-1", "-1"),
        ("100m", "100m"),
        ("0", "0"),
    ] {
        assert_eq!(super::canonical(given).as_deref(), Some(printed), "{given}");
    }
    assert_eq!(
        messages(&with_resources(
            json!({"requests": {"cpu": "2000m"}, "limits": {"cpu": "1000m"}})
        )),
        ["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]
    );
}
