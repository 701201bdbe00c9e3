//! The EndpointSlice controller: for every Service with a selector, EndpointSlices
//! (discovery.k8s.io/v1) listing the selected pods, as kube-controller-manager's
//! `endpointslice` controller writes them.
//!
//! Contract: slices carry the labels `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, the
//! Service's own labels and `service.kubernetes.io/headless` for a headless Service; they
//! are named `<service>-<random>` and controlled by the Service. One slice holds at most
//! [`MAX_ENDPOINTS_PER_SLICE`] endpoints of one address type and one set of resolved
//! ports. Endpoints carry the conditions ready, serving and terminating (terminating pods
//! stay, serving from their readiness, never ready unless `publishNotReadyAddresses`),
//! the node name, the node's zone, the hostname and a reference to the pod. A Service
//! with no endpoints gets one empty placeholder slice. Slices of a Service that is gone,
//! lost its selector or became ExternalName are deleted; slices of an older Service of the
//! same name are replaced.
//!
//! Packing follows kube's reconciler, to keep churn low: endpoints stay in the slice that
//! holds them (updated in place when they change), new endpoints first fill slices that
//! are being written anyway (fullest first), then the one unchanged slice they fit best,
//! then new slices; a slice left empty is recycled for a slice about to be created.
//!
//! Staleness: after writing, the controller remembers what it wrote (slice uid and
//! resourceVersion, or deletion) and skips a Service whose slices in the cache are older
//! than that, so a lagging cache never leads to duplicate slices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::endpoints::{
    find_port, hostname_of, is_headless, is_ipv6, pod_ips, pod_ref, rfc3339_nano, selector_matches,
    service_selector, services_for_pod_change, should_pod_be_in_endpoints, should_set_hostname,
    BATCH, HEADLESS_LABEL, TRIGGER_TIME,
};
use crate::informer::{key_of, split_key, Change, Informer};
use crate::queue::Queue;
use crate::runner::{self, Action, Reconciler};
use crate::util::{controller_ref, is_not_found, is_ready, labels_of, ApiError};
use crate::Context;

/// kube's `--max-endpoints-per-slice` default.
pub(crate) const MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub(crate) const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub(crate) const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub(crate) const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointSliceError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub(crate) fn start(ctx: &Context) -> Option<JoinHandle<()>> {
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let nodes = ctx.informers.informer::<Node>();
    let slices = ctx.informers.informer::<EndpointSlice>();
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
        // Pods on a node not yet known are left out; a node's arrival or a zone change
        // concerns every selecting Service.
        let (q, svcs) = (queue.clone(), services.clone());
        nodes.on_change(move |c| {
            let relevant = match c {
                Change::Added(_) => true,
                Change::Updated { old, new } => zone_of(old) != zone_of(new),
                Change::Deleted(_) => false,
            };
            if relevant {
                svcs.for_each(None, |s| {
                    if service_selector(s).is_some() {
                        q.add_after(key_of(&**s), BATCH);
                    }
                });
            }
        });
    }
    {
        let q = queue.clone();
        slices.on_change(move |c| {
            if let Some(svc) = managed_service_name(c.object()) {
                let ns = c.object().namespace().unwrap_or_default();
                q.add_after(format!("{ns}/{svc}"), BATCH);
            }
        });
    }
    let ready = {
        let (s, p, n, e) = (
            services.clone(),
            pods.clone(),
            nodes.clone(),
            slices.clone(),
        );
        async move {
            s.synced().await;
            p.synced().await;
            n.synced().await;
            e.synced().await;
        }
    };
    let r = SliceController {
        client: ctx.client.clone(),
        recorder: ctx.events.recorder("endpoint-slice-controller"),
        services,
        pods,
        nodes,
        slices,
        tracker: Mutex::new(HashMap::new()),
        max_per_slice: MAX_ENDPOINTS_PER_SLICE,
    };
    Some(runner::spawn(
        Arc::new(r),
        queue,
        ctx.config.workers,
        ready,
        ctx.stop.clone(),
    ))
}

fn zone_of(n: &Node) -> Option<&String> {
    n.metadata.labels.as_ref()?.get(ZONE_LABEL)
}

/// The Service a slice belongs to, when this controller manages it.
fn managed_service_name(s: &EndpointSlice) -> Option<&str> {
    let l = s.metadata.labels.as_ref()?;
    if l.get(LABEL_MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    l.get(LABEL_SERVICE_NAME).map(String::as_str)
}

/// Per Service key: slice uid → what we wrote and when, until the cache shows it.
type Tracked = HashMap<String, HashMap<String, (Written, Instant)>>;

/// How long a write the cache does not show holds its Service back.
const TRACKER_EXPIRY: Duration = Duration::from_secs(10);

/// Whether the cached slices of Service `key` lag behind what was written of them;
/// forgets the writes they show.
fn stale(tracker: &mut Tracked, key: &str, existing: &[Arc<EndpointSlice>], now: Instant) -> bool {
    let Some(written) = tracker.get_mut(key) else {
        return false;
    };
    let by_uid: HashMap<&str, &EndpointSlice> = existing
        .iter()
        .filter_map(|s| Some((s.metadata.uid.as_deref()?, &**s)))
        .collect();
    // A write the cache never shows (the slice was deleted by someone else before we
    // looked) is forgotten after a while rather than holding the Service back.
    written.retain(|uid, (w, at)| match (w, by_uid.get(uid.as_str())) {
        _ if now.duration_since(*at) > TRACKER_EXPIRY => false,
        (Written::Deleted, None) => false,
        (Written::Deleted, Some(_)) => true,
        (Written::At(_), None) => true,
        (Written::At(v), Some(s)) => rv(&s.metadata) < *v,
    });
    let stale = !written.is_empty();
    if !stale {
        tracker.remove(key);
    }
    stale
}

/// What the controller last wrote of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Created or updated at this resourceVersion.
    At(u64),
    Deleted,
}

struct SliceController {
    client: kube::Client,
    recorder: crate::events::Recorder,
    services: Informer<Service>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    slices: Informer<EndpointSlice>,
    /// Per Service key: slice uid → what we wrote, until the cache shows it.
    tracker: Mutex<Tracked>,
    max_per_slice: usize,
}

fn rv(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl SliceController {
    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the cache lags behind our writes for this Service; forgets what it shows.
    fn stale(&self, key: &str, existing: &[Arc<EndpointSlice>]) -> bool {
        stale(&mut self.tracker(), key, existing, Instant::now())
    }

    fn record(&self, key: &str, uid: Option<String>, w: Written) {
        if let Some(uid) = uid {
            self.tracker()
                .entry(key.to_string())
                .or_default()
                .insert(uid, (w, Instant::now()));
        }
    }

    async fn delete_slice(&self, key: &str, s: &EndpointSlice) -> Result<(), ApiError> {
        let api: Api<EndpointSlice> =
            Api::namespaced(self.client.clone(), &s.namespace().unwrap_or_default());
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(ApiError::new("delete endpointslice", s.name_any(), e)),
        }
        self.record(key, s.metadata.uid.clone(), Written::Deleted);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Reconciler for SliceController {
    type Error = EndpointSliceError;

    fn name(&self) -> &'static str {
        "endpointslice"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, EndpointSliceError> {
        let (ns, name) = split_key(key);
        let mut existing = Vec::new();
        self.slices.for_each(Some(ns), |s| {
            if managed_service_name(s) == Some(name) {
                existing.push(s.clone());
            }
        });
        existing.sort_by_key(|s| s.name_any());
        if self.stale(key, &existing) {
            return Ok(Action::RequeueAfter(BATCH));
        }
        let svc = self.services.get(ns, name);
        let Some((svc, selector)) = svc.as_ref().and_then(|s| Some((s, service_selector(s)?)))
        else {
            // Gone, or no longer selecting: the slices this controller made for it go
            // (those controlled by a Service; the API server's own `kubernetes` slices
            // carry the managed-by label too but no owner, and stay).
            for s in existing.iter().filter(|s| controlled_by_a_service(s)) {
                self.delete_slice(key, s).await?;
            }
            return Ok(Action::Done);
        };
        let mut pods = Vec::new();
        self.pods.for_each(Some(ns), |p| {
            if selector_matches(selector, labels_of(&p.metadata)) {
                pods.push(p.clone());
            }
        });
        pods.sort_by_key(|p| p.name_any());
        let types = address_types(svc);
        let mut missing_node = false;
        let mut plan = Plan::default();
        let mut by_type: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for s in existing {
            if types.contains(&s.address_type) {
                by_type.entry(s.address_type.clone()).or_default().push(s);
            } else {
                plan.delete.push(s);
            }
        }
        let mut trigger = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
        for t in &types {
            let desired =
                desired_endpoints(svc, &pods, t, &self.nodes, &mut missing_node, &mut trigger);
            let p = plan_address_type(
                svc,
                t,
                desired,
                by_type.remove(t).unwrap_or_default(),
                self.max_per_slice,
            );
            plan.create.extend(p.create);
            plan.update.extend(p.update);
            plan.delete.extend(p.delete);
        }
        if let Err(e) = self.apply(key, svc, plan, trigger).await {
            if e.code() != Some(409) {
                self.recorder.warning(
                    &**svc,
                    "FailedToUpdateEndpointSlices",
                    format!(
                        "Error updating Endpoint Slices for Service {ns}/{name}: {}",
                        crate::runner::Chain(&e)
                    ),
                );
            }
            return Err(e.into());
        }
        Ok(if missing_node {
            Action::RequeueAfter(Duration::from_secs(5))
        } else {
            Action::Done
        })
    }
}

impl SliceController {
    async fn apply(
        &self,
        key: &str,
        svc: &Service,
        plan: Plan,
        trigger: Option<Timestamp>,
    ) -> Result<(), ApiError> {
        let ns = svc.namespace().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &ns);
        let stamp = |s: &mut EndpointSlice| {
            let a = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
            match trigger {
                Some(t) => a.insert(TRIGGER_TIME.into(), rfc3339_nano(t)),
                None => a.remove(TRIGGER_TIME),
            };
        };
        // Creates, then updates, then deletes (as kube orders them, so an endpoint moving
        // between slices is never missing from all of them); each phase concurrently.
        let mut errors = Vec::new();
        // Not while the Service is being deleted: the garbage collector would race us.
        if svc.metadata.deletion_timestamp.is_none() {
            let creates = plan.create.into_iter().map(|mut s| {
                stamp(&mut s);
                let api = api.clone();
                async move {
                    match api.create(&PostParams::default(), &s).await {
                        Ok(c) => {
                            self.record(key, c.metadata.uid.clone(), Written::At(rv(&c.metadata)));
                            Ok(())
                        }
                        // The namespace is terminating.
                        Err(e) if crate::util::status_code(&e) == Some(403) => Ok(()),
                        Err(e) => Err(ApiError::new("create endpointslice", key, e)),
                    }
                }
            });
            errors.extend(run_concurrently(creates).await);
        }
        let updates = plan.update.into_iter().map(|mut s| {
            stamp(&mut s);
            let api = api.clone();
            async move {
                match api.replace(&s.name_any(), &PostParams::default(), &s).await {
                    Ok(u) => {
                        self.record(key, u.metadata.uid.clone(), Written::At(rv(&u.metadata)));
                        Ok(())
                    }
                    Err(e) => Err(ApiError::new("update endpointslice", s.name_any(), e)),
                }
            }
        });
        errors.extend(run_concurrently(updates).await);
        let deletes = plan
            .delete
            .into_iter()
            .map(|s| async move { self.delete_slice(key, &s).await });
        errors.extend(run_concurrently(deletes).await);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Writes in flight at once for one Service.
const WRITE_CONCURRENCY: usize = 16;

/// Runs the writes, [`WRITE_CONCURRENCY`] at a time, and returns their errors.
async fn run_concurrently<F>(writes: impl Iterator<Item = F>) -> Vec<ApiError>
where
    F: std::future::Future<Output = Result<(), ApiError>>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(writes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

/// The address types a Service's slices have (kube's `getAddressTypesForService`).
fn address_types(svc: &Service) -> BTreeSet<String> {
    let spec = svc.spec.as_ref();
    let mut types: BTreeSet<String> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter(|f| *f == "IPv4" || *f == "IPv6")
        .cloned()
        .collect();
    if !types.is_empty() {
        return types;
    }
    match spec.and_then(|s| s.cluster_ip.as_deref()) {
        Some(ip) if !ip.is_empty() && ip != "None" => {
            types.insert(if is_ipv6(ip) { "IPv6" } else { "IPv4" }.into());
        }
        // Headless without families: either.
        _ => {
            types.insert("IPv4".into());
            types.insert("IPv6".into());
        }
    }
    types
}

/// The canonical key of a set of ports.
type PortMapKey = Vec<(String, i32, String, String)>;

fn port_map_key(ports: &[EndpointPort]) -> PortMapKey {
    let mut k: PortMapKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_default(),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    k.sort();
    k
}

/// An endpoint's identity (kube's endpoint hash): addresses, hostname, pod.
type EndpointKey = (Vec<String>, String, String, String);

fn endpoint_key(e: &Endpoint) -> EndpointKey {
    let mut addrs = e.addresses.clone();
    addrs.sort();
    let r = e.target_ref.as_ref();
    (
        addrs,
        e.hostname.clone().unwrap_or_default(),
        r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

/// Desired endpoints of one address type, grouped by their ports.
type Desired = BTreeMap<PortMapKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)>;

fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    address_type: &str,
    nodes: &Informer<Node>,
    missing_node: &mut bool,
    trigger: &mut Option<Timestamp>,
) -> Desired {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_ports = spec.ports.unwrap_or_default();
    let want_v6 = address_type == "IPv6";
    let mut desired = Desired::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(find_port(pod, sp)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let Some(node) = nodes.get("", &node_name) else {
            *missing_node = true;
            continue;
        };
        let addresses: Vec<String> = pod_ips(pod)
            .into_iter()
            .filter(|ip| is_ipv6(ip) == want_v6)
            .collect();
        let group = desired
            .entry(port_map_key(&ports))
            .or_insert_with(|| (ports, BTreeMap::new()));
        if addresses.is_empty() {
            continue;
        }
        let serving = is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ep = Endpoint {
            addresses,
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: should_set_hostname(pod, svc).then(|| hostname_of(pod)),
            node_name: Some(node_name),
            target_ref: Some(pod_ref(pod)),
            zone: zone_of(&node).cloned(),
            ..Default::default()
        };
        let change = crate::util::pod_condition(pod, "Ready")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
            .max(pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if let Some(t) = change {
            *trigger = Some(trigger.map_or(t, |x| x.max(t)));
        }
        group.1.insert(endpoint_key(&ep), ep);
    }
    desired
}

/// The writes that bring one address type's slices to the desired state.
#[derive(Debug, Default)]
struct Plan {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<Arc<EndpointSlice>>,
}

fn controlled_by_a_service(s: &EndpointSlice) -> bool {
    crate::util::controller_of(&s.metadata).is_some_and(|r| r.kind == "Service")
}

fn owned_by(s: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    s.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid)
}

/// The slice labels for `svc` from a slice's current ones, and whether they changed
/// (kube's `setEndpointSliceLabels`).
fn slice_labels(
    current: Option<&BTreeMap<String, String>>,
    svc: &Service,
) -> (BTreeMap<String, String>, bool) {
    let reserved = [LABEL_SERVICE_NAME, LABEL_MANAGED_BY, HEADLESS_LABEL];
    let mut labels: BTreeMap<String, String> = current
        .into_iter()
        .flatten()
        .filter(|(k, _)| reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in svc.metadata.labels.iter().flatten() {
        if !reserved.contains(&k.as_str()) {
            labels.insert(k.clone(), v.clone());
        }
    }
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    let changed = current.cloned().unwrap_or_default() != labels;
    (labels, changed)
}

fn new_slice(svc: &Service, address_type: &str, ports: Vec<EndpointPort>) -> EndpointSlice {
    let (labels, _) = slice_labels(None, svc);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(crate::util::generate_name_prefix(&svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(svc)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

/// kube's `reconcileByAddressType` (with its port-mapping step and the recycling of
/// `finalize`): what to create, update and delete so that `existing` (this address
/// type's slices) hold `desired`.
fn plan_address_type(
    svc: &Service,
    address_type: &str,
    desired: Desired,
    existing: Vec<Arc<EndpointSlice>>,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let n_existing = existing.len();
    let mut by_ports: BTreeMap<PortMapKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for s in existing {
        if owned_by(&s, svc) {
            by_ports
                .entry(port_map_key(s.ports.as_deref().unwrap_or_default()))
                .or_default()
                .push(s);
        } else {
            plan.delete.push(s);
        }
    }
    for (key, (ports, endpoints)) in desired {
        let slices = by_ports.remove(&key).unwrap_or_default();
        let p = plan_port_mapping(svc, address_type, ports, endpoints, slices, max);
        plan.create.extend(p.create);
        plan.update.extend(p.update);
        plan.delete.extend(p.delete);
    }
    // Port sets no longer desired.
    plan.delete.extend(by_ports.into_values().flatten());
    // A Service with no endpoints keeps one empty placeholder slice.
    if plan.delete.len() == n_existing && plan.create.is_empty() {
        let is_placeholder = |s: &EndpointSlice| {
            owned_by(s, svc)
                && s.endpoints.is_empty()
                && s.ports.as_deref().unwrap_or_default().is_empty()
        };
        if plan.delete.len() == 1 && is_placeholder(&plan.delete[0]) {
            plan.delete.clear();
        } else {
            plan.create.push(new_slice(svc, address_type, Vec::new()));
        }
    }
    // Recycle slices about to be deleted for slices about to be created.
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let d = &plan.delete[i];
        if owned_by(d, svc) {
            if let Some(mut c) = plan.create.pop() {
                c.metadata.name = d.metadata.name.clone();
                c.metadata.generate_name = None;
                c.metadata.resource_version = d.metadata.resource_version.clone();
                c.metadata.uid = d.metadata.uid.clone();
                c.metadata.annotations = d.metadata.annotations.clone();
                plan.update.push(c);
            }
            plan.delete.remove(i);
        } else {
            i += 1;
        }
    }
    plan
}

/// kube's `reconcileByPortMapping` for the slices of one set of ports.
fn plan_port_mapping(
    svc: &Service,
    address_type: &str,
    ports: Vec<EndpointPort>,
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    existing: Vec<Arc<EndpointSlice>>,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut to_update: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<Arc<EndpointSlice>> = Vec::new();
    // 1. Keep what is still desired where it is; drop the rest.
    for s in existing {
        let mut kept = Vec::new();
        let mut changed = false;
        for e in &s.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(e)) {
                if &want != e {
                    changed = true;
                }
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(s.metadata.labels.as_ref(), svc);
        if changed || kept.len() != s.endpoints.len() {
            if kept.is_empty() {
                plan.delete.push(s);
            } else {
                let mut u = (*s).clone();
                u.endpoints = kept;
                u.metadata.labels = Some(labels);
                to_update.push(u);
            }
        } else if labels_changed {
            let mut u = (*s).clone();
            u.metadata.labels = Some(labels);
            to_update.push(u);
        } else {
            unchanged.push(s);
        }
    }
    let pop = |desired: &mut BTreeMap<EndpointKey, Endpoint>| desired.pop_first().map(|(_, e)| e);
    // 2. Fill the slices being written anyway, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        to_update.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
        for s in &mut to_update {
            while s.endpoints.len() < max {
                let Some(e) = pop(&mut desired) else { break };
                s.endpoints.push(e);
            }
        }
    }
    // 3. The rest into the unchanged slice that fits them best, else new slices.
    while !desired.is_empty() {
        let mut fill: Option<EndpointSlice> = None;
        if desired.len() < max && !unchanged.is_empty() {
            if let Some(i) = slice_to_fill(&unchanged, desired.len(), max) {
                fill = Some((*unchanged.remove(i)).clone());
            }
        }
        let mut s = fill.unwrap_or_else(|| new_slice(svc, address_type, ports.clone()));
        while s.endpoints.len() < max {
            let Some(e) = pop(&mut desired) else { break };
            s.endpoints.push(e);
        }
        if s.metadata.name.is_some() {
            to_update.push(s);
        } else {
            plan.create.push(s);
        }
    }
    plan.update = to_update;
    plan
}

/// The slice with the least room left that still fits `n` more (kube's
/// `getSliceToFill`).
fn slice_to_fill(slices: &[Arc<EndpointSlice>], n: usize, max: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in slices.iter().enumerate() {
        let used = n + s.endpoints.len();
        if used > max {
            continue;
        }
        let diff = max - used;
        if best.is_none_or(|(_, d)| diff < d) {
            best = Some((i, diff));
            if diff == 0 {
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"clusterIP": "10.43.0.9", "ipFamilies": ["IPv4"], "selector": {"app": "web"}, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    fn ep(i: usize) -> Endpoint {
        Endpoint {
            addresses: vec![format!("10.42.{}.{}", i / 200, i % 200)],
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                name: Some(format!("p{i}")),
                namespace: Some("ns".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ports() -> Vec<EndpointPort> {
        vec![EndpointPort {
            name: Some(String::new()),
            port: Some(80),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]
    }

    fn desired(range: std::ops::Range<usize>) -> Desired {
        let eps = range.map(ep).map(|e| (endpoint_key(&e), e)).collect();
        BTreeMap::from([(port_map_key(&ports()), (ports(), eps))])
    }

    /// Turns a plan's creates into existing slices (as the server would name them).
    fn materialise(plan: Plan, mut n: usize) -> Vec<Arc<EndpointSlice>> {
        plan.create
            .into_iter()
            .chain(plan.update)
            .map(|mut s| {
                if s.metadata.name.is_none() {
                    n += 1;
                    s.metadata.name = Some(format!("web-{n}"));
                    s.metadata.uid = Some(format!("uid-{n}"));
                }
                Arc::new(s)
            })
            .collect()
    }

    #[test]
    fn endpoints_are_packed_into_slices_of_at_most_max() {
        let s = svc();
        let plan = plan_address_type(&s, "IPv4", desired(0..250), vec![], 100);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let labels = plan.create[0].metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_MANAGED_BY], CONTROLLER_NAME);
        assert_eq!(labels["team"], "a");
        assert!(!labels.contains_key(HEADLESS_LABEL));
        assert_eq!(
            plan.create[0].metadata.generate_name.as_deref(),
            Some("web-")
        );
    }

    #[test]
    fn a_small_change_touches_one_slice_and_new_endpoints_fill_the_best_fit() {
        let s = svc();
        let existing = materialise(
            plan_address_type(&s, "IPv4", desired(0..250), vec![], 100),
            0,
        );
        // Nothing changed: nothing to write.
        let same = plan_address_type(&s, "IPv4", desired(0..250), existing.clone(), 100);
        assert!(same.create.is_empty() && same.update.is_empty() && same.delete.is_empty());
        // Ten more: they go into the half-empty slice, nothing new.
        let more = plan_address_type(&s, "IPv4", desired(0..260), existing.clone(), 100);
        assert!(more.create.is_empty() && more.delete.is_empty());
        assert_eq!(more.update.len(), 1);
        assert_eq!(more.update[0].endpoints.len(), 60);
        // One removed from the first slice: only that slice is updated.
        let mut d = desired(0..250);
        d.values_mut()
            .next()
            .unwrap()
            .1
            .remove(&endpoint_key(&ep(0)));
        let fewer = plan_address_type(&s, "IPv4", d, existing, 100);
        assert_eq!(fewer.update.len(), 1);
        assert_eq!(fewer.update[0].endpoints.len(), 99);
        assert!(fewer.create.is_empty() && fewer.delete.is_empty());
    }

    #[test]
    fn no_endpoints_leave_one_placeholder_and_emptied_slices_are_recycled() {
        let s = svc();
        let placeholder = plan_address_type(&s, "IPv4", Desired::new(), vec![], 100);
        assert_eq!(placeholder.create.len(), 1);
        assert!(placeholder.create[0].endpoints.is_empty());
        let existing = materialise(placeholder, 0);
        let again = plan_address_type(&s, "IPv4", Desired::new(), existing.clone(), 100);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // Endpoints arrive: the placeholder (other ports) is reused, not deleted and created.
        let filled = plan_address_type(&s, "IPv4", desired(0..5), existing, 100);
        assert!(filled.create.is_empty() && filled.delete.is_empty());
        assert_eq!(filled.update.len(), 1);
        assert_eq!(filled.update[0].metadata.name.as_deref(), Some("web-1"));
        assert_eq!(filled.update[0].endpoints.len(), 5);
    }

    #[test]
    fn a_cache_behind_our_writes_is_stale_until_it_shows_them() {
        let at = |uid: &str, rv: &str| {
            let mut s = new_slice(&svc(), "IPv4", ports());
            s.metadata.uid = Some(uid.into());
            s.metadata.resource_version = Some(rv.into());
            Arc::new(s)
        };
        let t0 = Instant::now();
        let mut t = Tracked::new();
        t.entry("ns/web".into()).or_default().extend([
            ("a".to_string(), (Written::At(10), t0)),
            ("b".to_string(), (Written::Deleted, t0)),
        ]);
        assert!(!stale(&mut t, "ns/other", &[], t0));
        assert!(stale(&mut t, "ns/web", &[at("a", "9"), at("b", "5")], t0));
        assert!(stale(&mut t, "ns/web", &[at("a", "10"), at("b", "5")], t0));
        assert!(!stale(&mut t, "ns/web", &[at("a", "11")], t0));
        assert!(t.is_empty());
        // A write never seen is forgotten after the expiry.
        t.entry("ns/web".into())
            .or_default()
            .insert("c".into(), (Written::At(3), t0));
        assert!(stale(&mut t, "ns/web", &[], t0));
        assert!(!stale(
            &mut t,
            "ns/web",
            &[],
            t0 + TRACKER_EXPIRY + Duration::from_secs(1)
        ));
    }

    #[test]
    fn slices_of_another_service_incarnation_are_replaced() {
        let s = svc();
        let mut old = new_slice(&s, "IPv4", ports());
        old.metadata.name = Some("web-old".into());
        old.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        let plan = plan_address_type(&s, "IPv4", desired(0..3), vec![Arc::new(old)], 100);
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.update.is_empty());
    }
}
