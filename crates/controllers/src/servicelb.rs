//! `servicelb`: load balancers without a cloud, as k3s's ServiceLB gives them. Every
//! `type: LoadBalancer` Service this controller owns gets, in `status.loadBalancer.ingress`,
//! the InternalIP of every Ready node (`{ip, ipMode: VIP}`); each node's service proxy
//! then answers on those addresses at the Service's ports.
//!
//! Contract: a Service is owned when it has no `spec.loadBalancerClass` or the class
//! [`CLASS`]; Services of other classes are left to their own controller. The ingress
//! list follows the nodes (a node turning Ready or NotReady, joining or leaving, changing
//! its InternalIP) and is cleared when the Service stops being a LoadBalancer. Addresses
//! are sorted and written only when they differ, so a node's heartbeats cost no writes.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::task::JoinHandle;

use crate::informer::{key_of, split_key, Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_not_found, ApiError};
use crate::Context;

/// The `spec.loadBalancerClass` this controller answers for (besides none).
pub const CLASS: &str = "skiff.io/servicelb";

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let services = ctx.informers.informer::<Service>();
    let nodes = ctx.informers.informer::<Node>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        services.on_change(move |c| {
            if !matches!(c, Change::Deleted(_)) {
                q.add(key_of(&**c.object()));
            }
        });
    }
    {
        // Only a change of what the ingress lists (readiness, InternalIP, existence)
        // requeues the LoadBalancers; heartbeats do not.
        let (q, svcs) = (queue.clone(), services.clone());
        nodes.on_change(move |c| {
            let changed = match c {
                Change::Updated { old, new } => node_ip(old) != node_ip(new),
                Change::Added(_) | Change::Deleted(_) => true,
            };
            if changed {
                svcs.for_each(None, |s| {
                    if is_load_balancer(s) {
                        q.add(key_of(&**s));
                    }
                });
            }
        });
    }
    let ready = {
        let (s, n) = (services.clone(), nodes.clone());
        async move {
            s.synced().await;
            n.synced().await;
        }
    };
    let r = ServiceLb {
        client: ctx.client.clone(),
        services,
        nodes,
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

fn is_load_balancer(s: &Service) -> bool {
    s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// Whether this controller manages the Service's load balancer (by class).
fn owned(s: &Service) -> bool {
    match s
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref())
    {
        None => true,
        Some(c) => c == CLASS,
    }
}

/// The node's InternalIP when it is Ready (what the ingress lists for it).
fn node_ip(n: &Node) -> Option<String> {
    if n.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = n.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
}

fn current_ingress(s: &Service) -> Vec<(Option<String>, Option<String>)> {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|i| (i.ip.clone(), i.ip_mode.clone()))
        .collect()
}

struct ServiceLb {
    client: kube::Client,
    services: Informer<Service>,
    nodes: Informer<Node>,
}

#[async_trait::async_trait]
impl Reconciler for ServiceLb {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        "servicelb"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ApiError> {
        let Some(svc) = self.services.get_key(key) else {
            return Ok(Action::Done);
        };
        if !owned(&svc) {
            return Ok(Action::Done);
        }
        let desired: Vec<(Option<String>, Option<String>)> = if is_load_balancer(&svc) {
            let mut ips = BTreeSet::new();
            self.nodes.for_each(None, |n| {
                if let Some(ip) = node_ip(n) {
                    ips.insert(ip);
                }
            });
            ips.into_iter()
                .map(|ip| (Some(ip), Some("VIP".to_string())))
                .collect()
        } else {
            Vec::new()
        };
        if current_ingress(&svc) == desired {
            return Ok(Action::Done);
        }
        let ingress: Option<Vec<serde_json::Value>> = if desired.is_empty() {
            None
        } else {
            Some(
                desired
                    .iter()
                    .map(|(ip, mode)| serde_json::json!({"ip": ip, "ipMode": mode}))
                    .collect(),
            )
        };
        // A merge patch replaces the list as a whole; null removes it.
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let (ns, name) = split_key(key);
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if is_not_found(&e) => Ok(Action::Done),
            Err(e) => Err(ApiError::new(
                "set the load-balancer ingress of service",
                key,
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: bool, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": ip}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn only_ready_nodes_count_with_their_internal_ip() {
        assert_eq!(
            node_ip(&node(true, "10.0.0.1")).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(node_ip(&node(false, "10.0.0.1")), None);
    }

    #[test]
    fn classes_other_than_ours_are_left_alone() {
        let svc = |class: Option<&str>| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s", "namespace": "d"},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": class},
            }))
            .unwrap()
        };
        assert!(owned(&svc(None)));
        assert!(owned(&svc(Some(CLASS))));
        assert!(!owned(&svc(Some("example.com/other"))));
    }
}
