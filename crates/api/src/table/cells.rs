//! Cell values for each kind's row, as kube-apiserver's printers compute them.

use serde_json::{json, Value};

use super::time::{format_time, human_secs, parse_time};
use crate::selector::Requirement;

pub(super) fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn int(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn opt_int(o: &Value, ptr: &str) -> Option<i64> {
    o.pointer(ptr).and_then(Value::as_i64)
}

pub(super) fn arr<'a>(o: &'a Value, ptr: &str) -> &'a [Value] {
    o.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(super) fn map_len(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| m.len() as i64)
        .unwrap_or(0)
}

pub(super) fn or<'a>(v: &'a str, default: &'a str) -> &'a str {
    if v.is_empty() {
        default
    } else {
        v
    }
}

/// Time since an RFC 3339 timestamp, `<unknown>` when there is none.
pub(super) fn since(ts: &str, now: i64) -> String {
    match parse_time(ts) {
        Some(t) => human_secs(now - t),
        None => "<unknown>".into(),
    }
}

pub(super) fn age(o: &Value, now: i64) -> Value {
    json!(since(s(o, "/metadata/creationTimestamp"), now))
}

pub(super) fn name(o: &Value) -> Value {
    json!(s(o, "/metadata/name"))
}

pub(super) fn deleting(o: &Value) -> bool {
    !s(o, "/metadata/deletionTimestamp").is_empty()
}

/// `labels.FormatLabels`: `a=1,b=2` sorted by key, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let parts: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let mut parts = parts;
    parts.sort();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// A `metav1.LabelSelector` as kube prints it (`app=web,tier in (a,b),!canary`); `Err`
/// for an invalid one. Null and `{}` both print as the empty string.
fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel.filter(|v| !v.is_null()) else {
        return Ok(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            let v = v.as_str().ok_or(())?;
            Requirement::new(k, crate::selector::Operator::In, [v]).map_err(|_| ())?;
            reqs.push((k.clone(), format!("{k}={v}")));
        }
    }
    for e in arr(sel, "/matchExpressions") {
        let key = e.get("key").and_then(Value::as_str).ok_or(())?;
        let mut vals: Vec<String> = arr(e, "/values")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        vals.sort();
        vals.dedup();
        let (op, text) = match s(e, "/operator") {
            "In" => (
                crate::selector::Operator::In,
                format!("{key} in ({})", vals.join(",")),
            ),
            "NotIn" => (
                crate::selector::Operator::NotIn,
                format!("{key} notin ({})", vals.join(",")),
            ),
            "Exists" => (crate::selector::Operator::Exists, key.to_string()),
            "DoesNotExist" => (crate::selector::Operator::DoesNotExist, format!("!{key}")),
            _ => return Err(()),
        };
        Requirement::new(key, op, vals).map_err(|_| ())?;
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` for an empty selector, `<error>` for a bad one.
fn format_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) => s,
        Err(()) => "<error>".into(),
    }
}

fn containers(template_spec: Option<&Value>) -> (String, String) {
    let cs = template_spec
        .and_then(|t| t.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn int_or_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Cells (and row conditions, for finished pods) for one object of `kind`.
pub(super) fn row(kind: &str, o: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let cells = match kind {
        "Pod" => return super::pod::row(o, now),
        "Deployment" => {
            let (names, images) = containers(o.pointer("/spec/template/spec"));
            let selector = selector_string(o.pointer("/spec/selector"))
                .unwrap_or_else(|()| "<invalid>".into());
            vec![
                name(o),
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                )),
                json!(int(o, "/status/updatedReplicas")),
                json!(int(o, "/status/availableReplicas")),
                age(o, now),
                json!(names),
                json!(images),
                json!(selector),
            ]
        }
        "ReplicaSet" => {
            let (names, images) = containers(o.pointer("/spec/template/spec"));
            vec![
                name(o),
                json!(int(o, "/spec/replicas")),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                age(o, now),
                json!(names),
                json!(images),
                json!(format_selector(o.pointer("/spec/selector"))),
            ]
        }
        "ReplicationController" => {
            // An RC's selector is a plain map, printed as labels are.
            let (names, images) = containers(o.pointer("/spec/template/spec"));
            vec![
                name(o),
                json!(int(o, "/spec/replicas")),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                age(o, now),
                json!(names),
                json!(images),
                json!(format_labels(o.pointer("/spec/selector"))),
            ]
        }
        "StatefulSet" => {
            let (names, images) = containers(o.pointer("/spec/template/spec"));
            vec![
                name(o),
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                )),
                age(o, now),
                json!(names),
                json!(images),
            ]
        }
        "DaemonSet" => {
            let (names, images) = containers(o.pointer("/spec/template/spec"));
            vec![
                name(o),
                json!(int(o, "/status/desiredNumberScheduled")),
                json!(int(o, "/status/currentNumberScheduled")),
                json!(int(o, "/status/numberReady")),
                json!(int(o, "/status/updatedNumberScheduled")),
                json!(int(o, "/status/numberAvailable")),
                json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
                age(o, now),
                json!(names),
                json!(images),
                json!(format_selector(o.pointer("/spec/selector"))),
            ]
        }
        "Job" => job(o, now),
        "CronJob" => {
            let last = match o
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
            {
                Some(t) => since(t, now),
                None => "<none>".into(),
            };
            let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            };
            let (names, images) = containers(o.pointer("/spec/jobTemplate/spec/template/spec"));
            vec![
                name(o),
                json!(s(o, "/spec/schedule")),
                json!(or(s(o, "/spec/timeZone"), "<none>")),
                json!(suspend),
                json!(arr(o, "/status/active").len() as i64),
                json!(last),
                age(o, now),
                json!(names),
                json!(images),
                json!(format_selector(
                    o.pointer("/spec/jobTemplate/spec/selector")
                )),
            ]
        }
        "Service" => service(o, now),
        "Endpoints" => vec![name(o), json!(endpoints(o)), age(o, now)],
        "EndpointSlice" => endpoint_slice(o, now),
        "Node" => node(o, now),
        "Event" => event(o, now),
        "Namespace" => vec![name(o), json!(s(o, "/status/phase")), age(o, now)],
        "Secret" => vec![
            name(o),
            json!(s(o, "/type")),
            json!(map_len(o, "/data")),
            age(o, now),
        ],
        "ConfigMap" => vec![
            name(o),
            json!(map_len(o, "/data") + map_len(o, "/binaryData")),
            age(o, now),
        ],
        "ServiceAccount" => vec![name(o), json!(arr(o, "/secrets").len() as i64), age(o, now)],
        "PersistentVolume" => persistent_volume(o, now),
        "PersistentVolumeClaim" => persistent_volume_claim(o, now),
        "HorizontalPodAutoscaler" => hpa(o, now),
        "PodDisruptionBudget" => vec![
            name(o),
            json!(int_or_string(o.pointer("/spec/minAvailable")).unwrap_or_else(|| "N/A".into())),
            json!(int_or_string(o.pointer("/spec/maxUnavailable")).unwrap_or_else(|| "N/A".into())),
            json!(int(o, "/status/disruptionsAllowed")),
            age(o, now),
        ],
        "CertificateSigningRequest" => csr(o, now),
        "ValidatingAdmissionPolicy" => {
            let kind = match o.pointer("/spec/paramKind") {
                Some(k) if k.is_object() => {
                    format!(
                        "{}/{}",
                        s(o, "/spec/paramKind/apiVersion"),
                        s(o, "/spec/paramKind/kind")
                    )
                }
                _ => "<unset>".into(),
            };
            vec![
                name(o),
                json!(arr(o, "/spec/validations").len() as i64),
                json!(kind),
                age(o, now),
            ]
        }
        "ValidatingAdmissionPolicyBinding" => {
            // A param without a namespace may be cluster-scoped or in the request's: `*/`.
            let param = match o.pointer("/spec/paramRef") {
                Some(p) if !s(p, "/name").is_empty() => match s(p, "/namespace") {
                    "" => format!("*/{}", s(p, "/name")),
                    ns => format!("{ns}/{}", s(p, "/name")),
                },
                Some(p) if p.get("selector").is_some_and(|s| !s.is_null()) => {
                    format_selector(p.get("selector"))
                }
                _ => "<unset>".into(),
            };
            vec![
                name(o),
                json!(s(o, "/spec/policyName")),
                json!(param),
                age(o, now),
            ]
        }
        "Lease" => vec![name(o), json!(s(o, "/spec/holderIdentity")), age(o, now)],
        "PriorityClass" => vec![
            name(o),
            json!(int(o, "/value")),
            json!(o
                .pointer("/globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            age(o, now),
            json!(s(o, "/preemptionPolicy")),
        ],
        "StorageClass" => {
            // kubectl's printer marks the default class in the name cell.
            let mut n = crate::object::name(o).to_string();
            if crate::strategy::is_default_class(o) {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(s(o, "/provisioner")),
                json!(s(o, "/reclaimPolicy")),
                json!(s(o, "/volumeBindingMode")),
                json!(o
                    .pointer("/allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                age(o, now),
            ]
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = arr(o, "/subjects");
            let of = |k: &str| {
                subjects
                    .iter()
                    .filter(|x| s(x, "/kind") == k)
                    .map(|x| match (k, s(x, "/namespace")) {
                        ("ServiceAccount", ns) => format!("{ns}/{}", s(x, "/name")),
                        _ => s(x, "/name").to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name(o),
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                age(o, now),
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        "Ingress" => ingress(o, now),
        "IngressClass" => {
            let p = o.pointer("/spec/parameters");
            let params = match p {
                Some(p) if p.is_object() => {
                    let group = s(p, "/apiGroup");
                    let kind = if group.is_empty() {
                        s(p, "/kind").to_string()
                    } else {
                        format!("{}.{group}", s(p, "/kind"))
                    };
                    format!("{kind}/{}", s(p, "/name"))
                }
                _ => "<none>".into(),
            };
            vec![
                name(o),
                json!(s(o, "/spec/controller")),
                json!(params),
                age(o, now),
            ]
        }
        "NetworkPolicy" => vec![
            name(o),
            json!(format_selector(o.pointer("/spec/podSelector"))),
            age(o, now),
        ],
        "RuntimeClass" => vec![name(o), json!(s(o, "/handler")), age(o, now)],
        "ControllerRevision" => {
            let controller = arr(o, "/metadata/ownerReferences")
                .iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .map(|r| {
                    let group = s(r, "/apiVersion")
                        .split_once('/')
                        .map(|(g, _)| g)
                        .unwrap_or("");
                    let gk = if group.is_empty() {
                        s(r, "/kind").to_string()
                    } else {
                        format!("{}.{group}", s(r, "/kind"))
                    };
                    format!("{}/{}", gk.to_lowercase(), s(r, "/name"))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name(o),
                json!(controller),
                json!(int(o, "/revision")),
                age(o, now),
            ]
        }
        "ResourceQuota" => resource_quota(o, now),
        _ => {
            let created = parse_time(s(o, "/metadata/creationTimestamp"))
                .map(format_time)
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
            vec![name(o), json!(created)]
        }
    };
    (cells, None)
}

fn job(o: &Value, now: i64) -> Vec<Value> {
    let succeeded = int(o, "/status/succeeded");
    let completions = match opt_int(o, "/spec/completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let p = int(o, "/spec/parallelism");
            if p > 1 {
                format!("{succeeded}/1 of {p}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        parse_time(s(o, "/status/startTime")),
        parse_time(s(o, "/status/completionTime")),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_secs(now - start),
        (Some(start), Some(end)) => human_secs(end - start),
    };
    let conds = arr(o, "/status/conditions");
    let has = |t: &str| {
        conds
            .iter()
            .find(|c| s(c, "/type") == t)
            .is_some_and(|c| s(c, "/status") == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if deleting(o) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(o.pointer("/spec/template/spec"));
    vec![
        name(o),
        json!(status),
        json!(completions),
        json!(duration),
        age(o, now),
        json!(names),
        json!(images),
        json!(format_selector(o.pointer("/spec/selector"))),
    ]
}

/// kubectl's Ingress row: class, hosts, load-balancer addresses and the ports served.
fn ingress(o: &Value, now: i64) -> Vec<Value> {
    let class = match s(o, "/spec/ingressClassName") {
        "" => "<none>",
        c => c,
    };
    let hosts: Vec<String> = arr(o, "/spec/rules")
        .iter()
        .map(|r| match s(r, "/host") {
            "" => "*".to_string(),
            h => h.to_string(),
        })
        .collect();
    let hosts = with_more(&hosts[..hosts.len().min(4)], hosts.len(), 4, "*");
    let addrs: Vec<String> = arr(o, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| match s(i, "/ip") {
            "" => s(i, "/hostname").to_string(),
            ip => ip.to_string(),
        })
        .filter(|a| !a.is_empty())
        .collect();
    let ports = if arr(o, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(o),
        json!(class),
        json!(hosts),
        json!(addrs.join(",")),
        json!(ports),
        age(o, now),
    ]
}

fn service(o: &Value, now: i64) -> Vec<Value> {
    let ty = s(o, "/spec/type");
    let cluster_ip = arr(o, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| s(o, "/spec/clusterIP"));
    let external_ips: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<&str> = Vec::new();
            for ing in arr(o, "/status/loadBalancer/ingress") {
                let v = or(s(ing, "/ip"), s(ing, "/hostname"));
                if !v.is_empty() && !lb.contains(&v) {
                    lb.push(v);
                }
            }
            let mut all = lb.clone();
            all.extend(external_ips.iter().copied());
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = or(s(p, "/protocol"), "TCP");
            match opt_int(p, "/nodePort").filter(|n| *n > 0) {
                Some(np) => format!("{}:{np}/{proto}", int(p, "/port")),
                None => format!("{}/{proto}", int(p, "/port")),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name(o),
        json!(ty),
        json!(or(cluster_ip, "<none>")),
        json!(external),
        json!(ports),
        age(o, now),
        json!(format_labels(o.pointer("/spec/selector"))),
    ]
}

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn with_more(list: &[String], count: usize, max: usize, empty: &str) -> String {
    let text = list.join(",");
    if count > max {
        format!("{text} + {} more...", count - max)
    } else if text.is_empty() {
        empty.to_string()
    } else {
        text
    }
}

fn endpoints(o: &Value) -> String {
    let subsets = arr(o, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addrs.len();
            list.extend(
                addrs
                    .iter()
                    .take(MAX - list.len().min(MAX))
                    .map(|a| s(a, "/ip").to_string()),
            );
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    break;
                }
                list.push(join_host_port(s(a, "/ip"), int(p, "/port")));
            }
        }
    }
    with_more(&list, count, MAX, "")
}

fn endpoint_slice(o: &Value, now: i64) -> Vec<Value> {
    const MAX: usize = 3;
    let ports_all = arr(o, "/ports");
    let ports: Vec<String> = ports_all
        .iter()
        .take(MAX)
        .map(|p| match opt_int(p, "/port") {
            Some(n) => n.to_string(),
            None => or(s(p, "/name"), "*").to_string(),
        })
        .collect();
    let addrs: Vec<&str> = arr(o, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str))
        .collect();
    let shown: Vec<String> = addrs.iter().take(MAX).map(|a| a.to_string()).collect();
    vec![
        name(o),
        json!(s(o, "/addressType")),
        json!(with_more(&ports, ports_all.len(), MAX, "<unset>")),
        json!(with_more(&shown, addrs.len(), MAX, "<unset>")),
        age(o, now),
    ]
}

fn node(o: &Value, now: i64) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = arr(o, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready")
    {
        status.push(if s(c, "/status") == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = o.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let role = if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                r
            } else if k == "kubernetes.io/role" {
                v.as_str().unwrap_or_default()
            } else {
                ""
            };
            if !role.is_empty() && !roles.iter().any(|x| x == role) {
                roles.push(role.to_string());
            }
        }
    }
    roles.sort();
    let address = |ty: &str| {
        arr(o, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == ty)
            .map(|a| s(a, "/address"))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |f: &str| or(s(o, &format!("/status/nodeInfo/{f}")), "<unknown>").to_string();
    vec![
        name(o),
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        age(o, now),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn event(o: &Value, now: i64) -> Vec<Value> {
    // events.k8s.io/v1 renames most fields of the core/v1 Event the printer was written for.
    let new_api = s(o, "/apiVersion").starts_with("events.k8s.io/");
    let f = |core: &'static str, events: &'static str| if new_api { events } else { core };
    let first_ts = s(o, f("/firstTimestamp", "/deprecatedFirstTimestamp"));
    let first = if parse_time(first_ts).is_some() {
        since(first_ts, now)
    } else {
        since(s(o, "/eventTime"), now)
    };
    let last_ts = s(o, f("/lastTimestamp", "/deprecatedLastTimestamp"));
    let mut last = if parse_time(last_ts).is_some() {
        since(last_ts, now)
    } else {
        first.clone()
    };
    let mut count = int(o, f("/count", "/deprecatedCount"));
    if o.get("series").is_some_and(Value::is_object) {
        last = since(s(o, "/series/lastObservedTime"), now);
        count = int(o, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let regarding = f("/involvedObject", "/regarding");
    let kind = s(o, &format!("{regarding}/kind")).to_lowercase();
    let obj_name = s(o, &format!("{regarding}/name"));
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    let source_component = or(
        s(o, f("/source/component", "/deprecatedSource/component")),
        s(o, f("/reportingComponent", "/reportingController")),
    );
    let source_host = or(
        s(o, f("/source/host", "/deprecatedSource/host")),
        s(o, "/reportingInstance"),
    );
    let source = if source_host.is_empty() {
        source_component.to_string()
    } else {
        format!("{source_component}, {source_host}")
    };
    vec![
        json!(last),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(target),
        json!(s(o, &format!("{regarding}/fieldPath"))),
        json!(source),
        json!(s(o, f("/message", "/note")).trim()),
        json!(first),
        json!(count),
        name(o),
    ]
}

fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out = Vec::new();
    for (m, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(m) {
            out.push(short);
        }
    }
    out.join(",")
}

fn storage_class(o: &Value) -> String {
    let ann = o
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str);
    ann.unwrap_or_else(|| s(o, "/spec/storageClassName"))
        .to_string()
}

fn persistent_volume(o: &Value, now: i64) -> Vec<Value> {
    let claim = match o.pointer("/spec/claimRef").filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
        None => String::new(),
    };
    let phase = if deleting(o) {
        "Terminating"
    } else {
        s(o, "/status/phase")
    };
    vec![
        name(o),
        json!(or(s(o, "/spec/capacity/storage"), "0")),
        json!(access_modes(arr(o, "/spec/accessModes"))),
        json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(o)),
        json!(or(s(o, "/spec/volumeAttributesClassName"), "<unset>")),
        json!(s(o, "/status/reason")),
        age(o, now),
        json!(or(s(o, "/spec/volumeMode"), "<unset>")),
    ]
}

fn persistent_volume_claim(o: &Value, now: i64) -> Vec<Value> {
    let phase = if deleting(o) {
        "Terminating"
    } else {
        s(o, "/status/phase")
    };
    let bound = !s(o, "/spec/volumeName").is_empty();
    let (capacity, modes) = if bound {
        (
            or(s(o, "/status/capacity/storage"), "0").to_string(),
            access_modes(arr(o, "/status/accessModes")),
        )
    } else {
        (String::new(), String::new())
    };
    vec![
        name(o),
        json!(phase),
        json!(s(o, "/spec/volumeName")),
        json!(capacity),
        json!(modes),
        json!(storage_class(o)),
        json!(or(s(o, "/spec/volumeAttributesClassName"), "<unset>")),
        age(o, now),
        json!(or(s(o, "/spec/volumeMode"), "<unset>")),
    ]
}

fn hpa_metrics(o: &Value) -> String {
    if s(o, "/apiVersion") == "autoscaling/v1" {
        return match opt_int(o, "/spec/targetCPUUtilizationPercentage") {
            Some(t) => {
                let cur = opt_int(o, "/status/currentCPUUtilizationPercentage")
                    .map(|c| format!("{c}%"))
                    .unwrap_or_else(|| "<unknown>".into());
                format!("cpu: {cur}/{t}%")
            }
            None => "<none>".into(),
        };
    }
    let specs = arr(o, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = arr(o, "/status/currentMetrics");
    let status = |i: usize, key: &str| statuses.get(i).and_then(|st| st.get(key));
    let q = |v: Option<&Value>, ptr: &str| {
        v.and_then(|v| v.pointer(ptr)).map(|x| match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let unknown = || "<unknown>".to_string();
    let mut list = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let text = match s(spec, "/type") {
            "External" | "Object" => {
                let key = if s(spec, "/type") == "External" {
                    "external"
                } else {
                    "object"
                };
                let src = spec.get(key);
                if let Some(avg) = q(src, "/target/averageValue") {
                    let cur = q(status(i, key), "/current/averageValue").unwrap_or_else(unknown);
                    format!("{cur}/{avg} (avg)")
                } else {
                    let cur = q(status(i, key), "/current/value").unwrap_or_else(unknown);
                    let target = q(src, "/target/value").unwrap_or_default();
                    format!("{cur}/{target}")
                }
            }
            "Pods" => {
                let cur = q(status(i, "pods"), "/current/averageValue").unwrap_or_else(unknown);
                let target = q(spec.get("pods"), "/target/averageValue").unwrap_or_default();
                format!("{cur}/{target}")
            }
            t @ ("Resource" | "ContainerResource") => {
                let key = if t == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let src = spec.get(key);
                let rname = q(src, "/name").unwrap_or_default();
                if let Some(avg) = q(src, "/target/averageValue") {
                    let cur = q(status(i, key), "/current/averageValue").unwrap_or_else(unknown);
                    format!("{rname}: {cur}/{avg}")
                } else {
                    let cur = q(status(i, key), "/current/averageUtilization")
                        .map(|c| format!("{c}%"))
                        .unwrap_or_else(unknown);
                    let target = q(src, "/target/averageUtilization")
                        .map(|c| format!("{c}%"))
                        .unwrap_or_else(|| "<auto>".into());
                    format!("{rname}: {cur}/{target}")
                }
            }
            _ => "<unknown type>".into(),
        };
        list.push(text);
    }
    const MAX: usize = 2;
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        format!("{} + {} more...", list.join(", "), count - MAX)
    } else {
        list.join(", ")
    }
}

fn hpa(o: &Value, now: i64) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        s(o, "/spec/scaleTargetRef/kind"),
        s(o, "/spec/scaleTargetRef/name")
    );
    let min = opt_int(o, "/spec/minReplicas")
        .map(|m| m.to_string())
        .unwrap_or_else(|| "<unset>".into());
    vec![
        name(o),
        json!(reference),
        json!(hpa_metrics(o)),
        json!(min),
        json!(int(o, "/spec/maxReplicas")),
        json!(int(o, "/status/currentReplicas")),
        age(o, now),
    ]
}

fn resource_quota(o: &Value, now: i64) -> Vec<Value> {
    let hard = o.pointer("/status/hard").and_then(Value::as_object);
    let mut names: Vec<&String> = hard.map(|h| h.keys().collect()).unwrap_or_default();
    names.sort();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for r in names {
        let used = o
            .pointer("/status/used")
            .and_then(|u| u.get(r))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let h = hard
            .and_then(|h| h.get(r))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let text = format!("{r}: {used}/{h}");
        let is_limit = r.split('.').count() > 1 && r.split('.').next() == Some("limits");
        if is_limit {
            limits.push(text);
        } else {
            requests.push(text);
        }
    }
    vec![
        name(o),
        age(o, now),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
    ]
}

/// A CertificateSigningRequest's row: the requested duration and the condition summary
/// (`Pending`, `Approved`, `Denied`, then `,Failed` and `,Issued`).
fn csr(o: &Value, now: i64) -> Vec<Value> {
    let has = |t: &str| {
        arr(o, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == t)
    };
    let mut condition = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if has("Failed") {
        condition.push_str(",Failed");
    }
    if !s(o, "/status/certificate").is_empty() {
        condition.push_str(",Issued");
    }
    let duration = match opt_int(o, "/spec/expirationSeconds") {
        Some(secs) => human_secs(secs),
        None => "<none>".into(),
    };
    vec![
        name(o),
        age(o, now),
        json!(s(o, "/spec/signerName")),
        json!(s(o, "/spec/username")),
        json!(duration),
        json!(condition),
    ]
}
