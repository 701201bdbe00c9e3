//! The endpoint controller: for every Service with a selector, an Endpoints object of the
//! same name listing the selected pods' addresses, as kube-controller-manager's
//! `endpoint` controller keeps them.
//!
//! Contract: a Service without a selector (or of type ExternalName) is left alone, so its
//! Endpoints stay user-managed; deleting a Service deletes its Endpoints. Addresses are
//! grouped into subsets by the ports they resolve (a named targetPort is resolved per pod
//! from its container ports; a pod lacking the name is left out of that port); ready pods
//! go to `addresses`, the others to `notReadyAddresses` (all to `addresses` with
//! `publishNotReadyAddresses`); terminating pods and pods without an IP are left out.
//! Over 1000 addresses the list is truncated and annotated `over-capacity: truncated`.
//! A write happens only when the subsets, labels or capacity annotation differ.
//!
//! Performance: a pod change enqueues only the Services of its namespace whose selector
//! matches its old or new labels, and only when something the Endpoints show changed;
//! pod-driven syncs are delayed by [`BATCH`] so a burst of pod updates costs one write.
//!
//! The pod and service helpers here ([`should_pod_be_in_endpoints`], [`find_port`],
//! [`services_for_pod_change`] …) are shared with the EndpointSlice controller.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::informer::{key_of, split_key, Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{is_conflict, is_not_found, is_ready, labels_of, ApiError};
use crate::Context;

/// How long pod-driven syncs of one Service are coalesced.
pub(crate) const BATCH: Duration = Duration::from_millis(100);
/// kube's `maxCapacity`: addresses an Endpoints object holds before truncation.
const MAX_CAPACITY: usize = 1000;
/// Label of the Endpoints (and EndpointSlices) of a headless Service.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Annotation: when the latest change the write reflects happened.
pub(crate) const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointsError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let endpoints = ctx.informers.informer::<Endpoints>();
    let queue = Queue::new();
    {
        let q = queue.clone();
        services.on_change(move |c| q.add(key_of(&**c.object())));
    }
    {
        let (q, svcs) = (queue.clone(), services.clone());
        pods.on_change(move |c| services_for_pod_change(&svcs, c, |k| q.add_after(k, BATCH)));
    }
    {
        // A deleted Endpoints is restored, an edited one reverted, when a selecting
        // Service owns the name; Endpoints of no Service are not ours to touch.
        let (q, svcs) = (queue.clone(), services.clone());
        endpoints.on_change(move |c| {
            let key = key_of(&**c.object());
            let managed = || {
                svcs.get_key(&key)
                    .is_some_and(|s| service_selector(&s).is_some())
            };
            if matches!(c, Change::Deleted(_) | Change::Updated { .. }) && managed() {
                q.add(key);
            }
        });
    }
    let ready = {
        let (s, p, e) = (services.clone(), pods.clone(), endpoints.clone());
        async move {
            s.synced().await;
            p.synced().await;
            e.synced().await;
        }
    };
    let r = EndpointController {
        api_client: ctx.client.clone(),
        recorder: ctx.events.recorder("endpoint-controller"),
        services,
        pods,
        endpoints,
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

struct EndpointController {
    api_client: kube::Client,
    recorder: crate::events::Recorder,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
}

#[async_trait::async_trait]
impl Reconciler for EndpointController {
    type Error = EndpointsError;

    fn name(&self) -> &'static str {
        "endpoint"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, EndpointsError> {
        let (ns, name) = split_key(key);
        let api: Api<Endpoints> = Api::namespaced(self.api_client.clone(), ns);
        let Some(svc) = self.services.get(ns, name) else {
            // The Service is gone: so are its Endpoints.
            if self.endpoints.get(ns, name).is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(ApiError::new("delete endpoints", key, e).into()),
                }
            }
            return Ok(Action::Done);
        };
        let Some(selector) = service_selector(&svc) else {
            // No selector: the Endpoints are the user's.
            return Ok(Action::Done);
        };
        let mut selected = Vec::new();
        self.pods.for_each(Some(ns), |p| {
            if selector_matches(selector, labels_of(&p.metadata)) {
                selected.push(p.clone());
            }
        });
        let desired = desired_endpoints(&svc, &selected);
        let current = self.endpoints.get(ns, name);
        if let Some(cur) = &current {
            if cur.subsets.clone().unwrap_or_default() == desired.subsets
                && cur.metadata.labels.clone().unwrap_or_default() == desired.labels
                && cur
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(OVER_CAPACITY))
                    == desired.over_capacity_annotation().as_ref()
            {
                return Ok(Action::Done);
            }
        }
        let mut annotations = current
            .as_ref()
            .and_then(|c| c.metadata.annotations.clone())
            .unwrap_or_default();
        match desired.trigger_time {
            Some(t) => annotations.insert(TRIGGER_TIME.into(), rfc3339_nano(t)),
            None => annotations.remove(TRIGGER_TIME),
        };
        match desired.over_capacity_annotation() {
            Some(v) => annotations.insert(OVER_CAPACITY.into(), v),
            None => annotations.remove(OVER_CAPACITY),
        };
        let subsets = (!desired.subsets.is_empty()).then_some(desired.subsets);
        match current {
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(ns.into()),
                        labels: Some(desired.labels),
                        annotations: Some(annotations),
                        ..Default::default()
                    },
                    subsets,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => Ok(Action::Done),
                    // Our cache has not seen it yet; its event brings us back.
                    Err(e) if is_conflict(&e) => Ok(Action::RequeueAfter(BATCH)),
                    // The namespace is terminating or gone.
                    Err(e) if crate::util::status_code(&e) == Some(403) || is_not_found(&e) => {
                        Ok(Action::Done)
                    }
                    Err(e) => {
                        self.recorder.warning(
                            &ep,
                            "FailedToCreateEndpoint",
                            format!("Failed to create endpoint for service {ns}/{name}: {e}"),
                        );
                        Err(ApiError::new("create endpoints", key, e).into())
                    }
                }
            }
            Some(cur) => {
                let mut ep = (*cur).clone();
                ep.metadata.labels = Some(desired.labels);
                ep.metadata.annotations = Some(annotations);
                ep.subsets = subsets;
                match api.replace(name, &PostParams::default(), &ep).await {
                    Ok(_) => Ok(Action::Done),
                    Err(e) if is_not_found(&e) => Ok(Action::RequeueAfter(BATCH)),
                    Err(e) if !is_conflict(&e) => {
                        self.recorder.warning(
                            &ep,
                            "FailedToUpdateEndpoint",
                            format!("Failed to update endpoint {ns}/{name}: {e}"),
                        );
                        Err(ApiError::new("update endpoints", key, e).into())
                    }
                    Err(e) => Err(ApiError::new("update endpoints", key, e).into()),
                }
            }
        }
    }
}

/// What a Service's Endpoints should hold.
#[derive(Debug, Default)]
struct Desired {
    subsets: Vec<EndpointSubset>,
    labels: BTreeMap<String, String>,
    truncated: bool,
    trigger_time: Option<Timestamp>,
}

impl Desired {
    fn over_capacity_annotation(&self) -> Option<String> {
        self.truncated.then(|| "truncated".to_string())
    }
}

fn desired_endpoints(svc: &Service, pods: &[Arc<Pod>]) -> Desired {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.clone().unwrap_or_default();
    let headless = is_headless(svc);
    // (address, ready) per resolved port; the sentinel None stands for "no ports".
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddrKey, (EndpointAddress, bool)>> =
        BTreeMap::new();
    let mut trigger: Option<Timestamp> = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(ip) = pod_ip_for_service(svc, pod) else {
            continue;
        };
        let ready = publish_not_ready || is_ready(pod);
        let addr = EndpointAddress {
            ip: ip.clone(),
            hostname: should_set_hostname(pod, svc).then(|| hostname_of(pod)),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(pod)),
        };
        let key = AddrKey {
            ip,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        let mut any = false;
        if ports.is_empty() {
            if headless {
                by_port
                    .entry(PortKey::none())
                    .or_default()
                    .insert(key.clone(), (addr.clone(), ready));
                any = true;
            }
        } else {
            for sp in &ports {
                let Some(n) = find_port(pod, sp) else {
                    continue;
                };
                let ep = EndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port: n,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                };
                by_port
                    .entry(PortKey(Some(ep)))
                    .or_default()
                    .insert(key.clone(), (addr.clone(), ready));
                any = true;
            }
        }
        if any {
            if let Some(t) = pod_change_time(pod) {
                trigger = Some(trigger.map_or(t, |x| x.max(t)));
            }
        }
    }
    let (subsets, truncated) = repack(by_port);
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    Desired {
        subsets,
        labels,
        truncated,
        trigger_time: trigger,
    }
}

/// A resolved port, ordered for grouping (None: the headless "no ports" sentinel).
#[derive(Debug, Clone, PartialEq)]
struct PortKey(Option<EndpointPort>);

impl PortKey {
    fn none() -> Self {
        PortKey(None)
    }
    fn tuple(&self) -> (Option<&str>, i32, Option<&str>, Option<&str>) {
        match &self.0 {
            None => (None, -1, None, None),
            Some(p) => (
                p.name.as_deref(),
                p.port,
                p.protocol.as_deref(),
                p.app_protocol.as_deref(),
            ),
        }
    }
}

impl Eq for PortKey {}
impl PartialOrd for PortKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PortKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AddrKey {
    ip: String,
    uid: String,
}

/// kube's `RepackSubsets`: addresses that offer the same set of ports share a subset;
/// subsets, addresses and ports in a canonical order. Truncates to [`MAX_CAPACITY`]
/// addresses (ready ones first), reporting whether it did.
fn repack(
    by_port: BTreeMap<PortKey, BTreeMap<AddrKey, (EndpointAddress, bool)>>,
) -> (Vec<EndpointSubset>, bool) {
    // Address → (its ports, the address, ready).
    let mut per_addr: BTreeMap<AddrKey, (Vec<PortKey>, EndpointAddress, bool)> = BTreeMap::new();
    for (port, addrs) in by_port {
        for (k, (addr, ready)) in addrs {
            per_addr
                .entry(k)
                .or_insert_with(|| (Vec::new(), addr, ready))
                .0
                .push(port.clone());
        }
    }
    // Port set → addresses.
    let mut groups: BTreeMap<Vec<PortKey>, Vec<(EndpointAddress, bool)>> = BTreeMap::new();
    for (_, (ports, addr, ready)) in per_addr {
        groups.entry(ports).or_default().push((addr, ready));
    }
    let total: usize = groups.values().map(Vec::len).sum();
    let total_ready: usize = groups
        .values()
        .map(|g| g.iter().filter(|(_, r)| *r).count())
        .sum();
    let truncated = total > MAX_CAPACITY;
    let can_ready = total_ready.min(MAX_CAPACITY);
    let can_not_ready = MAX_CAPACITY - can_ready;
    let (mut left_ready, mut left_not_ready) = (can_ready, can_not_ready);
    let total_not_ready = total - total_ready;
    let mut subsets = Vec::new();
    for (ports, addrs) in groups {
        let mut ready: Vec<EndpointAddress> = Vec::new();
        let mut not_ready: Vec<EndpointAddress> = Vec::new();
        for (a, r) in addrs {
            if r {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        if truncated {
            // Each subset keeps its proportional share of the capacity.
            let keep_ready = share(ready.len(), total_ready, can_ready).min(left_ready);
            let keep_not_ready =
                share(not_ready.len(), total_not_ready, can_not_ready).min(left_not_ready);
            ready.truncate(keep_ready);
            not_ready.truncate(keep_not_ready);
            left_ready -= ready.len();
            left_not_ready -= not_ready.len();
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let ports: Vec<EndpointPort> = ports.into_iter().filter_map(|p| p.0).collect();
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    (subsets, truncated)
}

fn share(n: usize, total: usize, capacity: usize) -> usize {
    if total == 0 {
        return 0;
    }
    (n * capacity).div_ceil(total)
}

/// The Service's selector, when it has a non-empty one and is not ExternalName (the
/// Services this controller and the EndpointSlice controller manage).
pub(crate) fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether every `key=value` of a Service selector is among `labels`.
pub(crate) fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether the Service has no cluster IP (headless).
pub(crate) fn is_headless(svc: &Service) -> bool {
    match svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) {
        None | Some("") | Some("None") => true,
        Some(_) => false,
    }
}

/// Enqueues (through `enqueue`) the keys of the Services a pod change concerns: those
/// in its namespace whose selectors match its old or new labels, and only when what
/// endpoints show of it changed.
pub(crate) fn services_for_pod_change(
    services: &Informer<Service>,
    change: &Change<'_, Pod>,
    mut enqueue: impl FnMut(String),
) {
    let (old, new) = match change {
        Change::Added(p) | Change::Deleted(p) => (None, &***p),
        Change::Updated { old, new } => (Some(&***old), &***new),
    };
    let labels_changed = old.is_some_and(|o| o.metadata.labels != new.metadata.labels);
    if let Some(old) = old {
        if !labels_changed && !pod_endpoints_changed(old, new) {
            return;
        }
    }
    let ns = new.metadata.namespace.as_deref().unwrap_or_default();
    let new_labels = labels_of(&new.metadata);
    let old_labels = old.map(|o| labels_of(&o.metadata));
    services.for_each(Some(ns), |svc| {
        let Some(sel) = service_selector(svc) else {
            return;
        };
        if selector_matches(sel, new_labels)
            || (labels_changed && old_labels.is_some_and(|l| selector_matches(sel, l)))
        {
            enqueue(key_of(&**svc));
        }
    });
}

/// Whether anything endpoints show of a pod differs between two versions.
fn pod_endpoints_changed(old: &Pod, new: &Pod) -> bool {
    let view = |p: &Pod| {
        let spec = p.spec.as_ref();
        let status = p.status.as_ref();
        (
            p.metadata.deletion_timestamp.is_some(),
            is_ready(p),
            status.and_then(|s| s.pod_ip.clone()),
            status.and_then(|s| s.pod_ips.clone()),
            status.and_then(|s| s.phase.clone()),
            spec.and_then(|s| s.node_name.clone()),
            spec.and_then(|s| s.hostname.clone()),
            spec.and_then(|s| s.subdomain.clone()),
        )
    };
    view(old) != view(new)
}

/// kube's `ShouldPodBeInEndpoints`: the pod has an IP, is not terminating (unless
/// `include_terminating`) and has not ended for good under its restart policy.
pub(crate) fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ips(pod).is_empty() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = crate::util::phase(pod);
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => phase != "Failed" && phase != "Succeeded",
        Some("OnFailure") => phase != "Succeeded",
        _ => true,
    }
}

/// The pod's IPs: `status.podIPs`, or `status.podIP` when only that is reported.
pub(crate) fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    status
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

pub(crate) fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// The pod IP of the Service's (first) IP family (kube's
/// `podToEndpointAddressForService`); None when the pod has none of that family.
fn pod_ip_for_service(svc: &Service, pod: &Pod) -> Option<String> {
    let ips = pod_ips(pod);
    let spec = svc.spec.as_ref();
    let want_v6 = match spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
    {
        Some(f) => f == "IPv6",
        None => match spec.and_then(|s| s.cluster_ip.as_deref()) {
            Some(ip) if !ip.is_empty() && ip != "None" => is_ipv6(ip),
            // Headless without families: the pod's primary family.
            _ => is_ipv6(ips.first()?),
        },
    };
    ips.into_iter().find(|ip| is_ipv6(ip) == want_v6)
}

/// kube's `ShouldSetHostname`: the pod names a hostname and the Service as its subdomain.
pub(crate) fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace
}

pub(crate) fn hostname_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_default()
}

/// A reference to the pod (kind, namespace, name, uid).
pub(crate) fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: Some(pod.name_any()),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// kube's `FindPort`: the pod's port for a Service port. A numeric targetPort (the port
/// itself when unset) is taken as is; a named one is looked up in the pod's container
/// ports (and restartable init containers') of the same protocol, None when absent.
pub(crate) fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

/// When the pod last changed in a way endpoints show: its Ready transition or creation.
fn pod_change_time(pod: &Pod) -> Option<Timestamp> {
    let ready = crate::util::pod_condition(pod, "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    ready.max(created)
}

/// Go's RFC 3339 with nanoseconds (trailing zeros of the fraction dropped), as kube
/// writes the trigger-time annotation.
pub(crate) fn rfc3339_nano(t: Timestamp) -> String {
    t.to_string()
}

/// The port names of a subset.
#[cfg(test)]
fn names(subset: &EndpointSubset) -> std::collections::BTreeSet<String> {
    subset
        .ports
        .iter()
        .flatten()
        .map(|p| p.name.clone().unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, labels: &[(&str, &str)]) -> Arc<Pod> {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": if name.ends_with('b') { 9090 } else { 8080 }}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap();
        Arc::new(p)
    }

    fn svc(ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {"clusterIP": "10.43.0.5", "selector": {"app": "x"}, "ports": ports},
        }))
        .unwrap()
    }

    #[test]
    fn addresses_are_grouped_by_resolved_ports_and_readiness() {
        let s = svc(serde_json::json!([
            {"name": "web", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 81, "targetPort": 7000}
        ]));
        let pods = vec![
            pod("a", "10.42.0.2", true, &[]),
            pod("b", "10.42.0.3", true, &[]),
            pod("c", "10.42.0.4", false, &[]),
        ];
        let d = desired_endpoints(&s, &pods);
        // a and c share 8080; b resolves http to 9090.
        assert_eq!(d.subsets.len(), 2, "{:#?}", d.subsets);
        let s8080 = d
            .subsets
            .iter()
            .find(|s| s.ports.iter().flatten().any(|p| p.port == 8080))
            .unwrap();
        assert_eq!(
            names(s8080),
            std::collections::BTreeSet::from(["web".into(), "metrics".into()])
        );
        assert_eq!(s8080.addresses.as_ref().unwrap()[0].ip, "10.42.0.2");
        assert_eq!(
            s8080.not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.42.0.4"
        );
        assert!(!d.truncated);
        assert_eq!(d.labels.get("app").map(String::as_str), Some("x"));
        assert!(!d.labels.contains_key(HEADLESS_LABEL));
    }

    #[test]
    fn trigger_times_are_written_as_go_writes_rfc3339_nano() {
        let t = Timestamp::new(1_700_000_000, 120_000_000).unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12Z");
        let t = Timestamp::new(1_700_000_000, 0).unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn the_service_family_picks_the_pod_ip() {
        let mut p = (*pod("a", "10.42.0.2", true, &[])).clone();
        p.status.as_mut().unwrap().pod_ips = Some(vec![
            k8s_openapi::api::core::v1::PodIP {
                ip: "10.42.0.2".into(),
            },
            k8s_openapi::api::core::v1::PodIP {
                ip: "fd00::2".into(),
            },
        ]);
        let mut s = svc(serde_json::json!([{"port": 80}]));
        assert_eq!(pod_ip_for_service(&s, &p).as_deref(), Some("10.42.0.2"));
        s.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
        assert_eq!(pod_ip_for_service(&s, &p).as_deref(), Some("fd00::2"));
        s.spec.as_mut().unwrap().ip_families = None;
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert!(is_headless(&s));
        assert_eq!(pod_ip_for_service(&s, &p).as_deref(), Some("10.42.0.2"));
    }

    #[test]
    fn over_capacity_is_truncated_to_a_thousand() {
        let s = svc(serde_json::json!([{"port": 80}]));
        let pods: Vec<_> = (0..1200)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.42.{}.{}", i / 250, i % 250),
                    i % 2 == 0,
                    &[],
                )
            })
            .collect();
        let d = desired_endpoints(&s, &pods);
        assert!(d.truncated);
        let n: usize = d
            .subsets
            .iter()
            .map(|s| {
                s.addresses.as_ref().map_or(0, Vec::len)
                    + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
            })
            .sum();
        assert_eq!(n, 1000);
        // All 600 ready ones are kept first.
        assert_eq!(d.subsets[0].addresses.as_ref().unwrap().len(), 600);
    }

    #[test]
    fn terminating_and_ip_less_pods_are_left_out() {
        let mut p = (*pod("a", "10.42.0.2", true, &[])).clone();
        assert!(should_pod_be_in_endpoints(&p, false));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::UNIX_EPOCH,
        ));
        assert!(!should_pod_be_in_endpoints(&p, false));
        assert!(should_pod_be_in_endpoints(&p, true));
        let mut done = (*pod("d", "10.42.0.5", false, &[])).clone();
        done.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        done.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(!should_pod_be_in_endpoints(&done, true));
        done.spec.as_mut().unwrap().restart_policy = Some("Always".into());
        assert!(should_pod_be_in_endpoints(&done, true));
        let mut q = (*pod("b", "", true, &[])).clone();
        assert!(!should_pod_be_in_endpoints(&q, true));
        q.status.as_mut().unwrap().pod_ip = Some("fd00::1".into());
        assert!(is_ipv6(&pod_ips(&q)[0]));
    }
}
