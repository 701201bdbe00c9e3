//! The `kube-system/kube-dns` Service: the stable address pods' resolv.conf names.
//!
//! It has no selector and no endpoints: every agent runs the DNS itself and binds the
//! Service's ClusterIP on the node, so the service proxy leaves it alone. Creating it is
//! idempotent; an existing Service with another ClusterIP is an error (ClusterIPs are
//! immutable, and pods already point at the configured address).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::Api;

use super::DnsError;

/// The Service's namespace and name (what kubeadm and k3s call it, so tools that look
/// for cluster DNS find it).
pub const DNS_SERVICE_NAMESPACE: &str = "kube-system";
pub const DNS_SERVICE_NAME: &str = "kube-dns";

/// How long to wait for `kube-system` to appear (the namespace controller or the API
/// server's bootstrap may still be creating it).
const NAMESPACE_WAIT: Duration = Duration::from_secs(30);

/// The kube-dns Service object for `ip`.
pub fn dns_service(ip: IpAddr) -> Result<Service, DnsError> {
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": DNS_SERVICE_NAME,
            "namespace": DNS_SERVICE_NAMESPACE,
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/name": "CoreDNS",
                "kubernetes.io/cluster-service": "true",
            },
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.to_string(),
            "clusterIPs": [ip.to_string()],
            "ipFamilies": [family],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    }))
    .map_err(|source| DnsError::ServiceObject { source })
}

/// Creates `kube-system/kube-dns` with ClusterIP `ip` unless it exists with that IP.
pub async fn ensure_dns_service(client: &kube::Client, ip: IpAddr) -> Result<(), DnsError> {
    let api: Api<Service> = Api::namespaced(client.clone(), DNS_SERVICE_NAMESPACE);
    let svc = dns_service(ip)?;
    let deadline = tokio::time::Instant::now() + NAMESPACE_WAIT;
    loop {
        match api.create(&PostParams::default(), &svc).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => return check_existing(&api, ip).await,
            // The namespace is not there yet: wait for it briefly.
            Err(kube::Error::Api(s)) if s.code == 404 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(source) => {
                return Err(DnsError::Api {
                    what: format!("creating {DNS_SERVICE_NAMESPACE}/{DNS_SERVICE_NAME}"),
                    source,
                })
            }
        }
    }
}

async fn check_existing(api: &Api<Service>, ip: IpAddr) -> Result<(), DnsError> {
    let existing = api
        .get(DNS_SERVICE_NAME)
        .await
        .map_err(|source| DnsError::Api {
            what: format!("reading {DNS_SERVICE_NAMESPACE}/{DNS_SERVICE_NAME}"),
            source,
        })?;
    let have = existing.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    if have.parse::<IpAddr>().ok() == Some(ip) {
        Ok(())
    } else {
        Err(DnsError::ServiceIpMismatch {
            existing: have,
            wanted: ip,
        })
    }
}
