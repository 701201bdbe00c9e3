//! What a container runs, computed from the pod and the image as Kubernetes does it:
//! command and args over ENTRYPOINT and CMD, `$(VAR)` expansion, environment order,
//! QoS class and the cgroup values of requests and limits. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use skiff_api::quantity::Quantity;

/// Kubernetes' merge: `command` replaces ENTRYPOINT (and then CMD is dropped), `args`
/// replaces CMD; both expanded against `env`.
pub fn argv(
    c: &Container,
    entrypoint: &[String],
    cmd: &[String],
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let expand_all = |v: &Vec<String>| v.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    match (&c.command, &c.args) {
        (Some(command), Some(args)) => {
            let mut v = expand_all(command);
            v.extend(expand_all(args));
            v
        }
        (Some(command), None) => expand_all(command),
        (None, Some(args)) => {
            let mut v = entrypoint.to_vec();
            v.extend(expand_all(args));
            v
        }
        (None, None) => {
            let mut v = entrypoint.to_vec();
            v.extend(cmd.iter().cloned());
            v
        }
    }
}

/// `$(VAR)` → its value when defined (else left as written); `$$` → `$`.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        // Copy one UTF-8 character.
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn q(v: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<Quantity> {
    v.and_then(|q| Quantity::parse(&q.0).ok())
}

fn get(r: Option<&ResourceRequirements>, limits: bool, name: &str) -> Option<Quantity> {
    let r = r?;
    let m = if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?;
    q(m.get(name))
}

/// The pod's QoS class.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.as_ref();
        for res in ["cpu", "memory"] {
            let req = get(r, false, res);
            let lim = get(r, true, res);
            if req.as_ref().is_some_and(|q| !q.is_zero())
                || lim.as_ref().is_some_and(|q| !q.is_zero())
            {
                any = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a.milli_value() != b.milli_value() => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The pod's cgroup: `{parent}/{qos}/pod{uid}` (Guaranteed pods sit right under the
/// parent, as with the kubelet's cgroupfs driver).
pub fn pod_cgroup(parent: &str, pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let parent = parent.trim_end_matches('/');
    match qos_class(pod) {
        "Guaranteed" => format!("{parent}/pod{uid}"),
        "Burstable" => format!("{parent}/burstable/pod{uid}"),
        _ => format!("{parent}/besteffort/pod{uid}"),
    }
}

/// cgroup values of a container: (cpu shares, CFS quota per 100 ms, memory limit bytes).
pub fn cgroup_values(c: &Container) -> (u64, Option<i64>, Option<i64>) {
    let r = c.resources.as_ref();
    let cpu_req = get(r, false, "cpu").or_else(|| get(r, true, "cpu"));
    let shares = cpu_req
        .map(|q| ((q.milli_value().max(0) as u64) * 1024 / 1000).max(2))
        .unwrap_or(2);
    let quota = get(r, true, "cpu")
        .filter(|q| !q.is_zero())
        .map(|q| (q.milli_value() * 100).max(1000));
    let mem = get(r, true, "memory")
        .filter(|q| !q.is_zero())
        .map(|q| q.value());
    (shares, quota, mem)
}

/// The pod's `/etc/resolv.conf`, as the kubelet writes it for its `dnsPolicy` and
/// `dnsConfig`:
/// - `ClusterFirst` (the default): the cluster's search list and nameserver, `ndots:5` —
///   except for a hostNetwork pod, which gets the node's file (`Default`);
/// - `ClusterFirstWithHostNet`: the cluster's, with or without hostNetwork;
/// - `Default`: the node's nameservers, search domains and options (`host`);
/// - `None`: only what `dnsConfig` says.
///
/// `dnsConfig` then adds nameservers and search domains (duplicates dropped) and sets
/// options, replacing one of the same name.
pub fn resolv_conf(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    namespace: &str,
    domain: &str,
    cluster_dns: Option<std::net::IpAddr>,
    host: &str,
) -> String {
    let host_net = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let (mut servers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        (Vec::new(), Vec::new(), Vec::new());
    let from_host =
        |servers: &mut Vec<String>, searches: &mut Vec<String>, options: &mut Vec<String>| {
            for line in host.lines() {
                let mut w = line.split_whitespace();
                match w.next() {
                    Some("nameserver") => servers.extend(w.next().map(str::to_string)),
                    Some("search") | Some("domain") => searches.extend(w.map(str::to_string)),
                    Some("options") => options.extend(w.map(str::to_string)),
                    _ => {}
                }
            }
        };
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_net,
        _ => false,
    };
    if cluster {
        servers.extend(cluster_dns.map(|d| d.to_string()));
        searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        options.push("ndots:5".into());
    } else if policy != "None" {
        from_host(&mut servers, &mut searches, &mut options);
    }
    if let Some(c) = &spec.dns_config {
        for n in c.nameservers.iter().flatten() {
            if !servers.contains(n) {
                servers.push(n.clone());
            }
        }
        for d in c.searches.iter().flatten() {
            if !searches.contains(d) {
                searches.push(d.clone());
            }
        }
        for o in c.options.iter().flatten() {
            let v = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = o.name.clone().unwrap_or_default();
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(v);
        }
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for n in servers.iter().take(3) {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn command_and_args_merge_with_the_image_as_kubernetes_does() {
        let env = BTreeMap::from([("NAME".to_string(), "kubia".to_string())]);
        let ep = vec!["/ep".to_string()];
        let cmd = vec!["serve".to_string()];
        let c = container(json!({"name": "c"}));
        assert_eq!(argv(&c, &ep, &cmd, &env), ["/ep", "serve"]);
        let c = container(json!({"name": "c", "args": ["hi", "$(NAME)"]}));
        assert_eq!(argv(&c, &ep, &cmd, &env), ["/ep", "hi", "kubia"]);
        let c = container(json!({"name": "c", "command": ["sh", "-c"]}));
        assert_eq!(argv(&c, &ep, &cmd, &env), ["sh", "-c"]);
        let c = container(
            json!({"name": "c", "command": ["echo"], "args": ["$(NAME)", "$$(NAME)", "$(MISSING)"]}),
        );
        assert_eq!(
            argv(&c, &ep, &cmd, &env),
            ["echo", "kubia", "$(NAME)", "$(MISSING)"]
        );
    }

    #[test]
    fn qos_and_cgroup_values_follow_requests_and_limits() {
        let pod = |res: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"uid": "u1"}, "spec": {"containers": [{"name": "c", "resources": res}]}})).unwrap()
        };
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "64Mi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            pod_cgroup("/kubepods", &pod(json!({}))),
            "/kubepods/besteffort/podu1"
        );
        let c = container(
            json!({"name": "c", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "32Mi"}}}),
        );
        assert_eq!(cgroup_values(&c), (256, Some(50_000), Some(32 << 20)));
        let c = container(json!({"name": "c"}));
        assert_eq!(cgroup_values(&c), (2, None, None));
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy_and_config() {
        let dns: std::net::IpAddr = "10.43.0.10".parse().unwrap();
        let host = "# host\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
        let spec = |v: serde_json::Value| -> k8s_openapi::api::core::v1::PodSpec {
            serde_json::from_value(v).unwrap()
        };
        let cluster = "search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n";
        let r = |v| resolv_conf(&spec(v), "ns", "cluster.local", Some(dns), host);
        assert_eq!(r(json!({"containers": []})), cluster);
        let default = "search corp.example\nnameserver 192.0.2.53\noptions edns0\n";
        assert_eq!(r(json!({"containers": [], "hostNetwork": true})), default);
        assert_eq!(
            r(
                json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})
            ),
            cluster
        );
        assert_eq!(
            r(json!({"containers": [], "dnsPolicy": "Default"})),
            default
        );
        assert_eq!(
            r(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["192.0.2.1"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})),
            "search a.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
        // dnsConfig on top of ClusterFirst: an option of the same name is replaced.
        assert_eq!(
            r(json!({"containers": [], "dnsConfig": {"searches": ["x.example"],
                "options": [{"name": "ndots", "value": "1"}]}})),
            "search ns.svc.cluster.local svc.cluster.local cluster.local x.example\nnameserver 10.43.0.10\noptions ndots:1\n"
        );
    }
}
