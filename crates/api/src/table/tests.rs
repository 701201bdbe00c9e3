use std::time::{Duration, UNIX_EPOCH};

use super::time::{format_time, parse_time};
use super::*;

/// 2024-05-01T12:00:00Z
const NOW: u64 = 1_714_564_800;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// An RFC 3339 timestamp `secs` seconds before NOW.
fn ago(secs: i64) -> String {
    format_time(NOW as i64 - secs)
}

fn header(kind: &str) -> Vec<(String, u64)> {
    columns(kind)
        .iter()
        .map(|c| (c.name.to_uppercase(), c.priority as u64))
        .collect()
}

fn names(kind: &str, priority: u8) -> String {
    columns(kind)
        .iter()
        .filter(|c| c.priority == priority)
        .map(|c| c.name.to_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cells(kind: &str, obj: Value) -> Vec<Value> {
    let t = to_table(kind, &[obj], IncludeObject::None, now());
    let row = &t["rows"][0];
    let cells = row["cells"].as_array().expect("cells").clone();
    assert_eq!(
        cells.len(),
        t["columnDefinitions"].as_array().map(Vec::len).unwrap_or(0),
        "{kind}: one cell per column"
    );
    cells
}

#[test]
fn human_durations_match_kube() {
    let cases: &[(u64, &str)] = &[
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 30 * 60, "5h30m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (51 * 3600, "2d3h"),
        (3 * 86400, "3d"),
        (10 * 86400, "10d"),
        (729 * 86400, "729d"),
        (2 * 365 * 86400 + 20 * 86400, "2y20d"),
        (9 * 365 * 86400, "9y"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(Duration::from_secs(*secs)), *want, "{secs}s");
    }
}

#[test]
fn timestamps_parse() {
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_time("2024-05-01T12:00:00Z"), Some(NOW as i64));
    assert_eq!(parse_time("2024-05-01T12:00:00.123456Z"), Some(NOW as i64));
    assert_eq!(parse_time("2024-05-01T14:00:00+02:00"), Some(NOW as i64));
    assert_eq!(format_time(NOW as i64), "2024-05-01T12:00:00Z");
    for bad in [
        "",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00.Z",
        "2024-05-01T12x00y00Z",
        "2024-05-01T12:00:00+é:0",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}

#[test]
fn column_sets_match_kubectl_headers() {
    let cases: &[(&str, &str, &str)] = &[
        ("Pod", "NAME READY STATUS RESTARTS AGE", "IP NODE NOMINATED NODE READINESS GATES"),
        ("Deployment", "NAME READY UP-TO-DATE AVAILABLE AGE", "CONTAINERS IMAGES SELECTOR"),
        ("ReplicaSet", "NAME DESIRED CURRENT READY AGE", "CONTAINERS IMAGES SELECTOR"),
        ("ReplicationController", "NAME DESIRED CURRENT READY AGE", "CONTAINERS IMAGES SELECTOR"),
        ("StatefulSet", "NAME READY AGE", "CONTAINERS IMAGES"),
        ("DaemonSet", "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE", "CONTAINERS IMAGES SELECTOR"),
        ("Job", "NAME STATUS COMPLETIONS DURATION AGE", "CONTAINERS IMAGES SELECTOR"),
        ("CronJob", "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE", "CONTAINERS IMAGES SELECTOR"),
        ("Service", "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE", "SELECTOR"),
        ("Namespace", "NAME STATUS AGE", ""),
        ("Node", "NAME STATUS ROLES AGE VERSION", "INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME"),
        ("ConfigMap", "NAME DATA AGE", ""),
        ("Secret", "NAME TYPE DATA AGE", ""),
        ("Event", "LAST SEEN TYPE REASON OBJECT MESSAGE", "SUBOBJECT SOURCE FIRST SEEN COUNT NAME"),
        ("Endpoints", "NAME ENDPOINTS AGE", ""),
        ("EndpointSlice", "NAME ADDRESSTYPE PORTS ENDPOINTS AGE", ""),
        ("Lease", "NAME HOLDER AGE", ""),
        ("ValidatingAdmissionPolicy", "NAME VALIDATIONS PARAMKIND AGE", ""),
        ("ValidatingAdmissionPolicyBinding", "NAME POLICYNAME PARAMREF AGE", ""),
        ("HorizontalPodAutoscaler", "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE", ""),
        ("PodDisruptionBudget", "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE", ""),
        ("PersistentVolume", "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE", "VOLUMEMODE"),
        ("PersistentVolumeClaim", "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE", "VOLUMEMODE"),
        ("ServiceAccount", "NAME SECRETS AGE", ""),
        ("PriorityClass", "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY", ""),
        ("StorageClass", "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE", ""),
        ("ControllerRevision", "NAME CONTROLLER REVISION AGE", ""),
        ("ResourceQuota", "NAME AGE REQUEST LIMIT", ""),
        ("LimitRange", "NAME CREATED AT", ""),
        ("Role", "NAME CREATED AT", ""),
        ("RoleBinding", "NAME ROLE AGE", "USERS GROUPS SERVICEACCOUNTS"),
        ("Ingress", "NAME CLASS HOSTS ADDRESS PORTS AGE", ""),
        ("IngressClass", "NAME CONTROLLER PARAMETERS AGE", ""),
        ("NetworkPolicy", "NAME POD-SELECTOR AGE", ""),
        ("RuntimeClass", "NAME HANDLER AGE", ""),
    ];
    for (kind, normal, wide) in cases {
        assert_eq!(names(kind, 0), *normal, "{kind}");
        assert_eq!(names(kind, 1), *wide, "{kind} -o wide");
    }
    // Every served kind has a column set whose first name column is marked as such.
    for k in crate::kinds::KINDS {
        let cols = columns(k.kind);
        assert!(cols.iter().any(|c| c.format == "name"), "{}", k.kind);
        assert!(!header(k.kind).is_empty());
    }
    // Descriptions come from the API schemas where kube takes them from.
    let svc = columns("Service");
    assert!(svc[2].description.contains("clusterIP") || svc[2].description.contains("IP address"));
    assert!(!columns("Pod")[0].description.is_empty());
}

fn pod(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(200)},
        "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}],
                 "nodeName": "node-1"},
        "status": status,
    })
}

fn running(name: &str, restarts: i64) -> Value {
    json!({"name": name, "ready": true, "restartCount": restarts, "state": {"running": {"startedAt": ago(100)}}})
}

#[test]
fn pod_rows() {
    let c = cells(
        "Pod",
        pod(json!({"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [running("a", 0), running("b", 0)]})),
    );
    assert_eq!(
        c,
        vec![
            json!("web"),
            json!("2/2"),
            json!("Running"),
            json!("0"),
            json!("3m20s"),
            json!("10.42.0.5"),
            json!("node-1"),
            json!("<none>"),
            json!("<none>")
        ]
    );

    let crash = pod(json!({"phase": "Running", "containerStatuses": [
        running("a", 0),
        {"name": "b", "ready": false, "restartCount": 4,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}}]}));
    let c = cells("Pod", crash);
    assert_eq!(c[1], "1/2");
    assert_eq!(c[2], "CrashLoopBackOff");
    assert_eq!(c[3], "4 (30s ago)");

    let pending = pod(json!({"phase": "Pending"}));
    let c = cells("Pod", pending);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[5].clone()),
        (json!("0/2"), json!("Pending"), json!("<none>"))
    );

    let creating = pod(json!({"phase": "Pending", "containerStatuses": [
        {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
    assert_eq!(cells("Pod", creating)[2], "ContainerCreating");

    let mut init = pod(json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "i1", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "i2", "ready": false, "restartCount": 0, "state": {"running": {}}}]}));
    init["spec"]["initContainers"] = json!([{"name": "i1"}, {"name": "i2"}]);
    assert_eq!(cells("Pod", init.clone())[2], "Init:1/2");
    init["status"]["initContainerStatuses"][1]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    assert_eq!(cells("Pod", init.clone())[2], "Init:CrashLoopBackOff");
    init["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 2}});
    assert_eq!(cells("Pod", init)[2], "Init:ExitCode:2");

    let done = pod(json!({"phase": "Succeeded", "containerStatuses": [
        {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
    let t = to_table("Pod", &[done], IncludeObject::None, now());
    assert_eq!(t["rows"][0]["cells"][2], "Completed");
    assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");

    let mut term =
        pod(json!({"phase": "Running", "containerStatuses": [running("a", 0), running("b", 0)]}));
    term["metadata"]["deletionTimestamp"] = json!(ago(1));
    assert_eq!(cells("Pod", term)[2], "Terminating");

    let mut gated = pod(
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}, {"type": "example.com/gate", "status": "False"}]}),
    );
    gated["spec"]["readinessGates"] = json!([{"conditionType": "example.com/gate"}]);
    assert_eq!(cells("Pod", gated)[8], "0/1");

    // A sidecar (restartable init container) counts as a container once started.
    let mut sidecar = pod(
        json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}],
        "containerStatuses": [running("a", 0), running("b", 0)]}),
    );
    sidecar["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
    let c = cells("Pod", sidecar);
    assert_eq!((c[1].clone(), c[3].clone()), (json!("3/3"), json!("1")));
}

#[test]
fn workload_rows() {
    let template = json!({"spec": {"containers": [{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "redis"}]}});
    let d = json!({"metadata": {"name": "web", "creationTimestamp": ago(51 * 3600)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                 "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                 "template": template},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    assert_eq!(
        cells("Deployment", d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("2d3h"),
            json!("a,b"),
            json!("nginx:1,redis"),
            json!("app=web,tier in (a,b)")
        ]
    );
    let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 2, "template": template}, "status": {"replicas": 2}});
    let c = cells("ReplicaSet", rs);
    assert_eq!(
        (c[1].clone(), c[3].clone(), c[4].clone(), c[7].clone()),
        (json!(2), json!(0), json!("<unknown>"), json!("<none>"))
    );
    let rc = json!({"metadata": {"name": "nginx"},
        "spec": {"replicas": 3, "selector": {"tier": "web", "app": "nginx"}, "template": template},
        "status": {"replicas": 3, "readyReplicas": 2}});
    assert_eq!(
        cells("ReplicationController", rc),
        vec![
            json!("nginx"),
            json!(3),
            json!(3),
            json!(2),
            json!("<unknown>"),
            json!("a,b"),
            json!("nginx:1,redis"),
            json!("app=nginx,tier=web")
        ]
    );
    let rc = json!({"metadata": {"name": "empty"}, "spec": {"template": template}});
    assert_eq!(cells("ReplicationController", rc)[7], "<none>");
    let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": template}, "status": {"readyReplicas": 1}});
    assert_eq!(cells("StatefulSet", sts)[1], "1/3");
    let ds = json!({"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"nodeSelector": {"os": "linux"}, "containers": []}}},
                    "status": {"desiredNumberScheduled": 2, "numberReady": 1}});
    let c = cells("DaemonSet", ds);
    assert_eq!(
        (c[1].clone(), c[3].clone(), c[6].clone()),
        (json!(2), json!(1), json!("os=linux"))
    );

    let job = json!({"metadata": {"name": "pi"}, "spec": {"completions": 1, "template": template},
        "status": {"succeeded": 1, "startTime": ago(100), "completionTime": ago(40),
                   "conditions": [{"type": "Complete", "status": "True"}]}});
    let c = cells("Job", job);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[3].clone()),
        (json!("Complete"), json!("1/1"), json!("60s"))
    );
    let running_job = json!({"metadata": {"name": "w"}, "spec": {"parallelism": 3, "template": template},
        "status": {"startTime": ago(10)}});
    let c = cells("Job", running_job);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[3].clone()),
        (json!("Running"), json!("0/1 of 3"), json!("10s"))
    );

    let cj = json!({"metadata": {"name": "hello"}, "spec": {"schedule": "*/1 * * * *", "suspend": false,
        "jobTemplate": {"spec": {"template": template}}}, "status": {"active": [{"name": "x"}], "lastScheduleTime": ago(30)}});
    let c = cells("CronJob", cj);
    assert_eq!(
        &c[1..6],
        &[
            json!("*/1 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("30s")
        ]
    );
}

#[test]
fn service_node_and_event_rows() {
    let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
    assert_eq!(
        &cells("Service", svc)[1..5],
        &[
            json!("NodePort"),
            json!("10.43.0.10"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP")
        ]
    );
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.43.0.11"], "ports": []},
        "status": {"loadBalancer": {}}});
    let c = cells("Service", lb);
    assert_eq!(
        (c[3].clone(), c[4].clone(), c[6].clone()),
        (json!("<pending>"), json!("<none>"), json!("<none>"))
    );

    let node = json!({"metadata": {"name": "n1", "creationTimestamp": ago(5),
        "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                                "containerRuntimeVersion": "skiff://0.1.0"}}});
    assert_eq!(
        cells("Node", node),
        vec![
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,master"),
            json!("5s"),
            json!("v1.33.0"),
            json!("10.0.0.1"),
            json!("<none>"),
            json!("Debian GNU/Linux 12"),
            json!("6.1.0"),
            json!("skiff://0.1.0")
        ]
    );

    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.17a"},
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
        "reason": "Pulled", "message": " pulled \n", "type": "Normal",
        "source": {"component": "kubelet", "host": "n1"}, "firstTimestamp": ago(300), "lastTimestamp": ago(60), "count": 3});
    assert_eq!(
        cells("Event", ev),
        vec![
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{a}"),
            json!("kubelet, n1"),
            json!("pulled"),
            json!("5m"),
            json!(3),
            json!("web.17a")
        ]
    );
    let ev2 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
        "regarding": {"kind": "Node", "name": "n1"}, "reason": "Starting", "note": "kubelet started", "type": "Normal",
        "eventTime": format!("{}.000000Z", &ago(10)[..19]), "reportingController": "kubelet", "reportingInstance": "n1"});
    let c = cells("Event", ev2);
    assert_eq!(
        &c[..8],
        &[
            json!("10s"),
            json!("Normal"),
            json!("Starting"),
            json!("node/n1"),
            json!(""),
            json!("kubelet, n1"),
            json!("kubelet started"),
            json!("10s")
        ]
    );
    assert_eq!(c[8], 1);
}

#[test]
fn other_kinds() {
    let rb = json!({"metadata": {"name": "reader"}, "roleRef": {"kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "default"}, {"kind": "User", "name": "jane"}]});
    let row = cells("RoleBinding", rb);
    assert_eq!(row[1], "Role/reader");
    assert_eq!(row[3..6], [json!("jane"), json!(""), json!("default/app")]);
    let ing = json!({"metadata": {"name": "web"}, "spec": {"rules": [{"host": "a.example"}, {}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
    assert_eq!(
        cells("Ingress", ing)[1..5],
        [
            json!("<none>"),
            json!("a.example,*"),
            json!("10.0.0.1"),
            json!("80")
        ]
    );
    assert_eq!(
        cells(
            "NetworkPolicy",
            json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}})
        )[1],
        "<none>"
    );
    assert_eq!(
        cells(
            "Namespace",
            json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}})
        )[1],
        "Active"
    );
    assert_eq!(
        cells(
            "Secret",
            json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "eA==", "b": "eQ=="}})
        )[1..3],
        [json!("Opaque"), json!(2)]
    );
    assert_eq!(
        cells(
            "ConfigMap",
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}})
        )[1],
        2
    );
    assert_eq!(
        cells("ServiceAccount", json!({"metadata": {"name": "default"}}))[1],
        0
    );
    let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.42.0.1"}, {"ip": "10.42.0.2"}],
        "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        cells("Endpoints", ep)[1],
        "10.42.0.1:80,10.42.0.2:80,10.42.0.1:443 + 1 more..."
    );
    assert_eq!(
        cells("Endpoints", json!({"metadata": {"name": "x"}}))[1],
        "<none>"
    );
    let es = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80, "name": "http"}],
        "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]}]});
    assert_eq!(
        cells("EndpointSlice", es)[1..4],
        [json!("IPv4"), json!("80"), json!("10.42.0.1,10.42.0.2")]
    );
    assert_eq!(
        cells(
            "EndpointSlice",
            json!({"metadata": {"name": "e"}, "addressType": "IPv4"})
        )[2],
        "<unset>"
    );
    assert_eq!(
        cells(
            "Lease",
            json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "n1"}})
        )[1],
        "n1"
    );
    let hpa = json!({"apiVersion": "autoscaling/v2", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 20}}}]}});
    assert_eq!(
        cells("HorizontalPodAutoscaler", hpa)[1..6],
        [
            json!("Deployment/web"),
            json!("cpu: 20%/50%"),
            json!("1"),
            json!(5),
            json!(2)
        ]
    );
    let hpa1 = json!({"apiVersion": "autoscaling/v1", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3, "targetCPUUtilizationPercentage": 80}});
    assert_eq!(
        cells("HorizontalPodAutoscaler", hpa1)[2..4],
        [json!("cpu: <unknown>/80%"), json!("<unset>")]
    );
    let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1}, "status": {"disruptionsAllowed": 0}});
    assert_eq!(
        cells("PodDisruptionBudget", pdb)[1..4],
        [json!("1"), json!("N/A"), json!(0)]
    );
    let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local"},
        "status": {"phase": "Bound"}});
    assert_eq!(
        cells("PersistentVolume", pv)[1..9],
        [
            json!("1Gi"),
            json!("RWO,RWX"),
            json!("Retain"),
            json!("Bound"),
            json!("default/data"),
            json!("local"),
            json!("<unset>"),
            json!("")
        ]
    );
    let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1", "storageClassName": "local"},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
    assert_eq!(
        cells("PersistentVolumeClaim", pvc)[1..6],
        [
            json!("Bound"),
            json!("pv1"),
            json!("1Gi"),
            json!("RWO"),
            json!("local")
        ]
    );
    let pc = json!({"metadata": {"name": "high"}, "value": 1000, "globalDefault": true, "preemptionPolicy": "Never"});
    assert_eq!(
        cells("PriorityClass", pc)[1..5],
        [json!(1000), json!(true), json!("<unknown>"), json!("Never")]
    );
    let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        cells("StorageClass", sc)[0..5],
        [
            json!("local-path (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false)
        ]
    );
    let cr = json!({"metadata": {"name": "agent-5d", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]}, "revision": 2});
    assert_eq!(
        cells("ControllerRevision", cr)[1..3],
        [json!("daemonset.apps/agent"), json!(2)]
    );
    let rq = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
        "used": {"pods": "3", "requests.cpu": "500m"}}});
    assert_eq!(
        cells("ResourceQuota", rq)[2..4],
        [
            json!("pods: 3/10, requests.cpu: 500m/1"),
            json!("limits.cpu: 0/2")
        ]
    );
    let lr = json!({"metadata": {"name": "limits", "creationTimestamp": "2024-01-02T03:04:05Z"}});
    assert_eq!(
        cells("LimitRange", lr),
        vec![json!("limits"), json!("2024-01-02T03:04:05Z")]
    );
}

#[test]
fn include_object_modes() {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "5"}});
    let t = to_table(
        "ConfigMap",
        std::slice::from_ref(&obj),
        IncludeObject::Metadata,
        now(),
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["resourceVersion"], "5");
    let t = to_table(
        "ConfigMap",
        std::slice::from_ref(&obj),
        IncludeObject::Object,
        now(),
    );
    assert_eq!(t["rows"][0]["object"], obj);
    let t = to_table("ConfigMap", &[obj], IncludeObject::None, now());
    assert!(t["rows"][0]["object"].is_null());
    assert_eq!(
        IncludeObject::from_query("Object"),
        Some(IncludeObject::Object)
    );
    assert_eq!(IncludeObject::from_query("bogus"), None);
    let t = to_table("Pod", &[], IncludeObject::None, now());
    assert_eq!(t["rows"], json!([]));
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    assert_eq!(t["columnDefinitions"][5]["priority"], 1);
}

#[test]
fn garbage_objects_do_not_panic() {
    for k in crate::kinds::KINDS {
        for o in [
            json!(null),
            json!(1),
            json!({"metadata": "x", "spec": [], "status": {"conditions": 3}}),
        ] {
            let t = to_table(k.kind, &[o], IncludeObject::Object, now());
            assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));
        }
    }
}

proptest::proptest! {
    #[test]
    fn timestamp_parsing_never_panics(s in ".{0,40}", d in "[0-9:TZ+.-]{18,32}") {
        let _ = parse_time(&s);
        let _ = parse_time(&d);
    }
}

#[test]
fn certificate_signing_requests_print_kubes_condition_summary() {
    assert_eq!(
        names("CertificateSigningRequest", 0),
        "NAME AGE SIGNERNAME REQUESTOR REQUESTEDDURATION CONDITION"
    );
    let csr = |status: Value, secs: Option<i64>| {
        let mut o = json!({
            "metadata": {"name": "node-csr-x", "creationTimestamp": ago(90)},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "username": "skiff:token", "request": ""},
            "status": status,
        });
        if let Some(s) = secs {
            o["spec"]["expirationSeconds"] = json!(s);
        }
        cells("CertificateSigningRequest", o)
    };
    assert_eq!(
        csr(json!({}), None),
        [
            json!("node-csr-x"),
            json!("90s"),
            json!("kubernetes.io/kube-apiserver-client-kubelet"),
            json!("skiff:token"),
            json!("<none>"),
            json!("Pending"),
        ]
    );
    let issued = csr(
        json!({"certificate": "Y2VydA==", "conditions": [{"type": "Approved", "status": "True"}]}),
        Some(86400),
    );
    assert_eq!(issued[4], json!("24h"));
    assert_eq!(issued[5], json!("Approved,Issued"));
    let failed = csr(
        json!({"conditions": [{"type": "Approved"}, {"type": "Failed"}]}),
        None,
    );
    assert_eq!(failed[5], json!("Approved,Failed"));
    let denied = csr(json!({"conditions": [{"type": "Denied"}]}), None);
    assert_eq!(denied[5], json!("Denied"));
}

#[test]
fn admission_policies_print_their_counts_and_params() {
    let created = ago(60);
    let p = json!({"metadata": {"name": "p", "creationTimestamp": created},
        "spec": {"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}, "validations": [{}, {}]}});
    assert_eq!(
        cells("ValidatingAdmissionPolicy", p),
        [json!("p"), json!(2), json!("v1/ConfigMap"), json!("60s")]
    );
    let bare = json!({"metadata": {"name": "q", "creationTimestamp": created}, "spec": {}});
    assert_eq!(cells("ValidatingAdmissionPolicy", bare)[2], "<unset>");
    let b = |param: Value| {
        cells(
            "ValidatingAdmissionPolicyBinding",
            json!({"metadata": {"name": "b", "creationTimestamp": created},
                   "spec": {"policyName": "p", "paramRef": param}}),
        )
    };
    assert_eq!(
        b(json!({"name": "limits", "namespace": "ns"}))[2],
        "ns/limits"
    );
    assert_eq!(b(json!({"name": "limits"}))[2], "*/limits");
    assert_eq!(b(Value::Null)[2], "<unset>");
    assert_eq!(b(Value::Null)[1], "p");
}
