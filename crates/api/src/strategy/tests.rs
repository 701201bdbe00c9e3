use serde_json::json;

use super::*;

#[test]
fn pods_are_deleted_gracefully_only_when_a_kubelet_runs_them() {
    let pod = |node: &str, phase: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "terminationGracePeriodSeconds": 120}, "status": {"phase": phase}});
    let s = for_kind("Pod");
    assert_eq!(s.graceful_delete(&pod("n1", "Running"), None), Some(120));
    assert_eq!(s.graceful_delete(&pod("n1", "Running"), Some(5)), Some(5));
    assert_eq!(s.graceful_delete(&pod("n1", "Running"), Some(0)), Some(0));
    assert_eq!(
        s.graceful_delete(&pod("", "Pending"), None),
        Some(0),
        "unbound"
    );
    assert_eq!(
        s.graceful_delete(&pod("n1", "Succeeded"), None),
        Some(0),
        "finished"
    );
    assert_eq!(
        for_kind("ConfigMap").graceful_delete(&pod("n1", "Running"), None),
        None
    );
}

#[test]
fn defaults_fill_what_kube_apiserver_fills() {
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let s = for_kind("Pod");
    s.default(&mut pod);
    s.admit(&mut pod, &ClusterConfig::default());
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    // A limit without a request is requested at the limit (pods only): Guaranteed.
    let mut limited = json!({"metadata": {"name": "l"}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}}]}});
    s.default(&mut limited);
    s.admit(&mut limited, &ClusterConfig::default());
    assert_eq!(
        limited["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "250m", "memory": "64Mi"})
    );
    assert_eq!(limited["status"]["qosClass"], "Burstable");
    let mut only_limits = json!({"metadata": {"name": "g"}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}});
    s.default(&mut only_limits);
    s.admit(&mut only_limits, &ClusterConfig::default());
    assert_eq!(only_limits["status"]["qosClass"], "Guaranteed");
    let mut d =
        json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": []}}}});
    for_kind("Deployment").default(&mut d);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    let mut svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
    for_kind("Service").default(&mut svc);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
}

#[test]
fn validation_names_the_field_and_the_rule() {
    let causes = validate(
        "Service",
        &json!({"metadata": {"name": "1bad"}, "spec": {"ports": []}}),
    );
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["metadata.name", "spec.ports"]);
    assert!(
        causes[0].message.contains("DNS-1035"),
        "{}",
        causes[0].message
    );
    let causes = validate(
        "Job",
        &json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}}),
    );
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldValueNotSupported");
    assert!(validate("Namespace", &json!({"metadata": {"name": "a.b"}}))
        .iter()
        .any(|c| c.field == "metadata.name"));
}

#[test]
fn updates_may_not_change_immutable_fields() {
    let old = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let new = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "2"}}}});
    let mut causes = Vec::new();
    for_kind("ReplicaSet").validate_update(&old, &new, &mut causes);
    assert_eq!(causes[0].field, "spec.selector");
    let old = json!({"immutable": true, "data": {"a": "1"}});
    let new = json!({"immutable": true, "data": {"a": "2"}});
    let mut causes = Vec::new();
    for_kind("ConfigMap").validate_update(&old, &new, &mut causes);
    assert_eq!(causes[0].reason, "FieldValueForbidden");
    let old = json!({"kind": "Secret", "type": "Opaque"});
    let new = json!({"kind": "Secret", "type": "kubernetes.io/tls"});
    let mut causes = Vec::new();
    for_kind("Secret").validate_update(&old, &new, &mut causes);
    assert_eq!(
        (causes[0].field.as_str(), causes[0].message.as_str()),
        (
            "type",
            "Invalid value: \"kubernetes.io/tls\": field is immutable"
        )
    );
}

#[test]
fn secret_string_data_is_stored_encoded_in_data() {
    let mut secret = json!({"kind": "Secret", "data": {"a": "eA==", "b": "eQ=="},
        "stringData": {"b": "two", "c": "three"}});
    for_kind("Secret").default(&mut secret);
    assert_eq!(
        secret,
        json!({"kind": "Secret", "type": "Opaque",
            "data": {"a": "eA==", "b": "dHdv", "c": "dGhyZWU="}})
    );
}

#[test]
fn service_account_token_secrets_name_their_account() {
    let secret = |annotations: serde_json::Value| {
        json!({"kind": "Secret", "metadata": {"name": "t", "annotations": annotations},
            "type": "kubernetes.io/service-account-token"})
    };
    let causes = validate("Secret", &secret(json!({})));
    assert_eq!(causes.len(), 1);
    assert_eq!(
        causes[0].field,
        "metadata.annotations[kubernetes.io/service-account.name]"
    );
    assert_eq!(causes[0].reason, "FieldValueRequired");
    assert!(validate(
        "Secret",
        &secret(json!({"kubernetes.io/service-account.name": "bot"}))
    )
    .is_empty());
}

#[test]
fn status_updates_change_only_status() {
    let old = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"phase": "Pending"}});
    let mut new = json!({"metadata": {"name": "p", "labels": {"a": "2"}}, "spec": {"x": 2}, "status": {"phase": "Running"}});
    for_kind("Pod").prepare_for_status_update(&mut new, &old);
    assert_eq!(new["spec"]["x"], 1);
    assert_eq!(new["metadata"]["labels"]["a"], "1");
    assert_eq!(new["status"]["phase"], "Running");
}

#[test]
fn jobs_select_their_pods_by_uid() {
    let mut job =
        json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {"spec": {}}}});
    for_kind("Job").prepare_for_create(&mut job);
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        "u1"
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "j"
    );
}

#[test]
fn pods_get_default_toleration_seconds_unless_they_tolerate_the_taint() {
    let cluster = ClusterConfig {
        default_not_ready_toleration_seconds: 7,
        default_unreachable_toleration_seconds: 9,
        ..Default::default()
    };
    let admit = |tolerations: serde_json::Value| {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}], "tolerations": tolerations}});
        for_kind("Pod").admit(&mut pod, &cluster);
        pod["spec"]["tolerations"].clone()
    };
    let not_ready = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 7});
    let unreachable = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 9});
    assert_eq!(admit(json!(null)), json!([not_ready, unreachable]));
    assert_eq!(admit(json!([])), json!([not_ready, unreachable]));
    // Other tolerations are kept and the defaults added after them.
    let gpu = json!({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"});
    assert_eq!(admit(json!([gpu])), json!([gpu, not_ready, unreachable]));
    // A pod's own toleration of one taint (NoExecute or any effect) wins for that taint.
    let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2});
    assert_eq!(admit(json!([own])), json!([own, not_ready]));
    let any_effect = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"});
    assert_eq!(admit(json!([any_effect])), json!([any_effect, unreachable]));
    // A NoSchedule toleration of the taint does not count.
    let no_schedule = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"});
    assert_eq!(
        admit(json!([no_schedule])),
        json!([no_schedule, not_ready, unreachable])
    );
    // Tolerating every taint tolerates both.
    let all = json!({"operator": "Exists"});
    assert_eq!(admit(json!([all])), json!([all]));
    // Admission runs again on updates without adding anything twice.
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    for_kind("Pod").admit(&mut pod, &cluster);
    let once = pod.clone();
    for_kind("Pod").admit(&mut pod, &cluster);
    assert_eq!(pod, once);
}
