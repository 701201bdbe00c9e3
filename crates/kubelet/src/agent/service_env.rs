//! Service links: the Docker-links-style variables (`WEB_SERVICE_HOST`, `WEB_PORT`, …)
//! every container gets for the Services that exist when it starts.
//!
//! Contract (the kubelet's behaviour):
//! - Which Services: those with a ClusterIP (not headless, not ExternalName) in the pod's
//!   namespace when `spec.enableServiceLinks` is not false, plus `default/kubernetes`
//!   always (a Service of the same name in the pod's namespace wins over it).
//! - Per Service `NAME` (upper-cased, `-` → `_`): `NAME_SERVICE_HOST`,
//!   `NAME_SERVICE_PORT` (first port), `NAME_SERVICE_PORT_<PORTNAME>` per named port,
//!   `NAME_PORT` (first port's URL), and per port `NAME_PORT_<port>_<PROTO>` with its
//!   `_PROTO`, `_PORT` and `_ADDR`.
//! - They are the weakest source: the container's own env and envFrom override them, and
//!   `$(VAR)` in env values may refer to them (see [`super::volumes::environment`]).
//!
//! [`ServiceCache`] keeps a reflector of all Services, so starting a container costs no
//! API call; until it has listed once, containers wait (as the kubelet does, rather
//! than start with links missing).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use skiff_serve::CancellationToken;

use super::volumes::ConfigError;

/// The namespace and name of the API server's own Service, linked into every pod.
const MASTER_NAMESPACE: &str = "default";
const MASTER_SERVICE: &str = "kubernetes";

/// How long a container start waits for the first list of Services.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// `my-svc` → `MY_SVC`.
fn env_name(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

/// The Services linked into a pod in `namespace`: by name, the pod's own namespace's
/// overriding `default/kubernetes`.
fn linked<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> BTreeMap<&'a str, &'a Service> {
    let mut master = None;
    let mut own = BTreeMap::new();
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
        else {
            continue;
        };
        if ns == MASTER_NAMESPACE && name == MASTER_SERVICE {
            master = Some(s);
        }
        if ns == namespace && enable_service_links {
            own.insert(name, s);
        }
    }
    if let Some(m) = master {
        own.entry(MASTER_SERVICE).or_insert(m);
    }
    own
}

/// The service-link variables for a pod in `namespace`, ordered by Service name.
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, svc) in linked(services, namespace, enable_service_links) {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let name = env_name(name);
        let ports = spec.ports.clone().unwrap_or_default();
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in &ports {
            if let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(pname)),
                    p.port.to_string(),
                ));
            }
        }
        // The Docker-links form: an IPv6 address is bracketed in the URL.
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            let url = format!("{proto}://{host}:{}", p.port);
            if i == 0 {
                out.push((format!("{name}_PORT"), url.clone()));
            }
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            out.push((prefix.clone(), url));
            out.push((format!("{prefix}_PROTO"), proto));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

/// A reflector cache of every Service, for containers' service links.
#[derive(Clone)]
pub struct ServiceCache {
    store: Store<Service>,
}

impl ServiceCache {
    /// Starts watching Services with `client` until `stop`.
    pub fn start(client: kube::Client, stop: CancellationToken) -> ServiceCache {
        let (store, writer) = reflector::store::<Service>();
        let stream = watcher(Api::<Service>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        tokio::spawn(async move {
            futures_util::pin_mut!(stream);
            loop {
                tokio::select! {
                    ev = stream.next() => match ev {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => tracing::warn!(error = %e, "watching services for env failed; retrying"),
                        None => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        });
        ServiceCache { store }
    }

    /// A cache holding exactly `services`, already listed (tests).
    #[cfg(test)]
    pub fn fixed(services: Vec<Service>) -> ServiceCache {
        let (store, mut writer) = reflector::store::<Service>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for s in services {
            writer.apply_watcher_event(&watcher::Event::InitApply(s));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        ServiceCache { store }
    }

    /// The service-link variables for `pod`'s containers, once the cache has listed.
    pub async fn env_for(&self, pod: &Pod) -> Result<Vec<(String, String)>, ConfigError> {
        if tokio::time::timeout(FIRST_LIST_WAIT, self.store.wait_until_ready())
            .await
            .is_err()
        {
            // Kubernetes' message: the container waits rather than start without links.
            return Err(ConfigError(
                "services have not yet been read at least once, cannot construct envvars".into(),
            ));
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let enable = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let state = self.store.state();
        Ok(service_env(state.iter().map(|s| s.as_ref()), ns, enable))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .unwrap()
    }

    fn services() -> Vec<Service> {
        vec![
            svc(
                "default",
                "kubernetes",
                json!({"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}),
            ),
            svc(
                "shop",
                "my-web",
                json!({"clusterIP": "10.43.0.20", "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}),
            ),
            svc(
                "shop",
                "headless",
                json!({"clusterIP": "None", "ports": [{"port": 1}]}),
            ),
            svc(
                "shop",
                "ext",
                json!({"type": "ExternalName", "externalName": "example.org"}),
            ),
            svc("shop", "pending", json!({"ports": [{"port": 1}]})),
            svc(
                "other",
                "elsewhere",
                json!({"clusterIP": "10.43.0.30", "ports": [{"port": 9}]}),
            ),
            svc(
                "shop",
                "v6",
                json!({"clusterIP": "fd00::5", "ports": [{"port": 8080}]}),
            ),
        ]
    }

    fn map(v: Vec<(String, String)>) -> BTreeMap<String, String> {
        v.into_iter().collect()
    }

    #[test]
    fn variables_of_one_service() {
        let env = map(service_env(&services(), "shop", true));
        let want = [
            ("MY_WEB_SERVICE_HOST", "10.43.0.20"),
            ("MY_WEB_SERVICE_PORT", "80"),
            ("MY_WEB_SERVICE_PORT_HTTP", "80"),
            ("MY_WEB_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_WEB_PORT", "tcp://10.43.0.20:80"),
            ("MY_WEB_PORT_80_TCP", "tcp://10.43.0.20:80"),
            ("MY_WEB_PORT_80_TCP_PROTO", "tcp"),
            ("MY_WEB_PORT_80_TCP_PORT", "80"),
            ("MY_WEB_PORT_80_TCP_ADDR", "10.43.0.20"),
            ("MY_WEB_PORT_53_UDP", "udp://10.43.0.20:53"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
            ("MY_WEB_PORT_53_UDP_PORT", "53"),
            ("MY_WEB_PORT_53_UDP_ADDR", "10.43.0.20"),
            ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
            ("V6_PORT", "tcp://[fd00::5]:8080"),
            ("V6_SERVICE_HOST", "fd00::5"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        // Headless, ExternalName, unallocated and other namespaces' Services: nothing.
        for absent in ["HEADLESS_", "EXT_", "PENDING_", "ELSEWHERE_"] {
            assert!(!env.keys().any(|k| k.starts_with(absent)), "{absent}");
        }
    }

    #[test]
    fn links_disabled_keep_only_the_master_service() {
        let env = map(service_env(&services(), "shop", false));
        assert!(env.keys().all(|k| k.starts_with("KUBERNETES_")), "{env:?}");
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST").unwrap(), "10.43.0.1");
    }

    #[test]
    fn own_namespace_kubernetes_service_wins() {
        let mut all = services();
        all.push(svc(
            "shop",
            "kubernetes",
            json!({"clusterIP": "10.43.0.99", "ports": [{"port": 1}]}),
        ));
        let env = map(service_env(&all, "shop", true));
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST").unwrap(), "10.43.0.99");
        // Pods in default see it once.
        let env = service_env(&services(), "default", true);
        assert_eq!(
            env.iter()
                .filter(|(k, _)| k == "KUBERNETES_SERVICE_HOST")
                .count(),
            1
        );
    }

    /// The container's own env wins over a link, and `$(VAR)` sees the links.
    #[tokio::test]
    async fn container_env_wins_and_expands_links() {
        let cache = ServiceCache::fixed(services());
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [
                {"name": "MY_WEB_SERVICE_HOST", "value": "override"},
                {"name": "URL", "value": "http://$(MY_WEB_SERVICE_HOST):$(MY_WEB_SERVICE_PORT)"},
            ]}]},
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        // Plain values never reach the API; the client only has to exist.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let env = crate::agent::volumes::environment(
            &client,
            &cache,
            &pod,
            &c,
            "10.0.0.1",
            (1000, 1 << 30),
        )
        .await
        .unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MY_WEB_SERVICE_HOST"), Some("override"));
        assert_eq!(
            env.iter()
                .filter(|(n, _)| n == "MY_WEB_SERVICE_HOST")
                .count(),
            1
        );
        assert_eq!(get("URL"), Some("http://override:80"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        // The container's own variables come first, the links after.
        assert_eq!(env[0].0, "MY_WEB_SERVICE_HOST");
        assert_eq!(env[1].0, "URL");
    }

    #[test]
    fn deterministic_order() {
        let a = service_env(&services(), "shop", true);
        let mut rev = services();
        rev.reverse();
        assert_eq!(a, service_env(&rev, "shop", true));
    }
}
