//! What plugins see: pods and nodes pre-digested once (requests summed, selectors compiled,
//! affinity terms parsed) so that filtering thousands of nodes per pod does no parsing.
//!
//! [`PodInfo`] is built once per pod update; [`NodeInfo`] is kept by the cache with the
//! sums of the pods assigned (or assumed) there; a [`Snapshot`] is the cycle's read-only
//! view of every node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use skiff_api::quantity::Quantity;
use skiff_api::selector::LabelSelector;

/// Default requests used for scoring pods that request nothing (kube-scheduler's
/// `DefaultMilliCPURequest` and `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of compute resources: CPU in millicores, the rest in base units; extended
/// resources (`example.com/gpu`, `hugepages-2Mi`) by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Reads a `ResourceList` (`requests`, `allocatable`); malformed quantities count 0
    /// (the API server refuses them, so only foreign data can hold them).
    pub fn from_list(list: &BTreeMap<String, K8sQuantity>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list {
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            r.set(name, &q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = q.milli_value(),
            "memory" => self.memory = q.value(),
            "ephemeral-storage" => self.ephemeral_storage = q.value(),
            "pods" => self.allowed_pod_number = q.value(),
            other => {
                self.scalar.insert(other.to_string(), q.value());
            }
        }
    }

    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pod_number += o.allowed_pod_number;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pod_number -= o.allowed_pod_number;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each field the larger of the two (init containers run one at a time).
    pub fn max_with(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

/// A host port a container asks for: (hostIP, protocol, port); hostIP `0.0.0.0` is any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

/// A pod (anti-)affinity term with its selectors compiled.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub selector: LabelSelector,
    pub topology_key: String,
    /// The namespaces the term selects pods in (the pod's own when both this and
    /// `namespace_selector` are empty).
    pub namespaces: HashSet<String>,
    /// Selects namespaces by their labels; `None` when the term sets none. An empty
    /// selector (`{}`) selects every namespace.
    pub namespace_selector: Option<LabelSelector>,
}

impl AffinityTerm {
    /// Whether `other` (in namespace `ns` with `ns_labels`) is a pod this term selects.
    pub fn matches(&self, other: &PodInfo, ns_labels: Option<&BTreeMap<String, String>>) -> bool {
        let ns_ok = self.namespaces.contains(&other.namespace)
            || match (&self.namespace_selector, ns_labels) {
                (Some(sel), Some(labels)) => sel.matches(labels),
                (Some(sel), None) => sel.is_everything(),
                (None, _) => false,
            };
        ns_ok && self.selector.matches(&other.labels)
    }
}

#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i32,
}

/// A pod as the plugins read it.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Effective requests: max(sum of containers, each init container) + overhead.
    pub requests: Resource,
    /// As `requests`, with kube-scheduler's defaults for CPU and memory left unset (for
    /// scoring, so pods that request nothing still spread).
    pub non_zero_requests: Resource,
    pub host_ports: Vec<HostPort>,
    pub priority: i32,
    pub node_name: Option<String>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    /// Images of the pod's containers (for ImageLocality).
    pub images: Vec<String>,
}

/// Why a pod's spec cannot be turned into a [`PodInfo`] (the API server refuses these, so
/// only a foreign writer can produce one); the scheduler reports it as unschedulable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pod spec: {0}")]
pub struct PodInfoError(pub String);

fn compile_term(term: &PodAffinityTerm, own_ns: &str) -> Result<AffinityTerm, PodInfoError> {
    let selector = match &term.label_selector {
        Some(s) => compile_selector(s)?,
        // A term without a selector selects no pods.
        None => LabelSelector::nothing(),
    };
    let namespace_selector = term
        .namespace_selector
        .as_ref()
        .map(compile_selector)
        .transpose()?;
    let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
    if namespaces.is_empty() && namespace_selector.is_none() {
        namespaces.insert(own_ns.to_string());
    }
    Ok(AffinityTerm {
        selector,
        topology_key: term.topology_key.clone(),
        namespaces,
        namespace_selector,
    })
}

/// A typed `LabelSelector` compiled for matching.
pub fn compile_selector(
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<LabelSelector, PodInfoError> {
    let v = serde_json::to_value(s).map_err(|e| PodInfoError(e.to_string()))?;
    LabelSelector::from_object(&v).map_err(|e| PodInfoError(e.to_string()))
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Result<PodInfo, PodInfoError> {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let spec = pod.spec.as_ref();
        let mut requests = Resource::default();
        let mut non_zero = Resource::default();
        let mut host_ports = Vec::new();
        let mut images = Vec::new();
        if let Some(spec) = spec {
            for c in &spec.containers {
                let r = container_requests(c);
                let mut nz = r.clone();
                if !has_request(c, "cpu") {
                    nz.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
                }
                if !has_request(c, "memory") {
                    nz.memory = DEFAULT_MEMORY_REQUEST;
                }
                requests.add(&r);
                non_zero.add(&nz);
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port: hp,
                        });
                    }
                }
                if let Some(i) = &c.image {
                    images.push(i.clone());
                }
            }
            for c in spec.init_containers.iter().flatten() {
                let r = container_requests(c);
                // Restartable (sidecar) init containers run alongside the app containers.
                if c.restart_policy.as_deref() == Some("Always") {
                    requests.add(&r);
                    non_zero.add(&r);
                } else {
                    requests.max_with(&r);
                    non_zero.max_with(&r);
                }
            }
            if let Some(o) = &spec.overhead {
                let o = Resource::from_list(o);
                requests.add(&o);
                non_zero.add(&o);
            }
        }
        let aff = spec.and_then(|s| s.affinity.as_ref());
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| {
            terms
                .into_iter()
                .flatten()
                .map(|t| compile_term(t, &namespace))
                .collect::<Result<Vec<_>, _>>()
        };
        let preferred =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        Ok(WeightedAffinityTerm {
                            term: compile_term(&w.pod_affinity_term, &namespace)?,
                            weight: w.weight,
                        })
                    })
                    .collect::<Result<Vec<_>, PodInfoError>>()
            };
        Ok(PodInfo {
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            required_anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            preferred_anti_affinity: preferred(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            node_name: spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            namespace,
            requests,
            non_zero_requests: non_zero,
            host_ports,
            images,
            pod,
        })
    }

    /// `namespace/name`, the queue's and cache's key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn tolerations(&self) -> &[Toleration] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[])
    }

    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }
}

fn has_request(c: &k8s_openapi::api::core::v1::Container, name: &str) -> bool {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .is_some_and(|r| r.contains_key(name))
}

fn container_requests(c: &k8s_openapi::api::core::v1::Container) -> Resource {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resource::from_list)
        .unwrap_or_default()
}

/// An image present on a node, with how many nodes have it (ImageLocality spreads its
/// score by that).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageState {
    pub size: i64,
    pub num_nodes: usize,
}

/// A node with what is placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resource,
    /// Sum of the effective requests of the pods here.
    pub requested: Resource,
    /// As `requested`, with the scoring defaults for pods that request nothing.
    pub non_zero_requested: Resource,
    pub pods: Vec<Arc<PodInfo>>,
    /// Pods here with any (anti-)affinity term; InterPodAffinity only walks these.
    pub pods_with_affinity: Vec<Arc<PodInfo>>,
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Images on the node by every name it is known by.
    pub images: HashMap<String, ImageState>,
    /// Bumped on every change; the cache copies only changed nodes into a snapshot.
    pub generation: u64,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let mut images = HashMap::new();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for name in img.names.iter().flatten() {
                images.insert(
                    name.clone(),
                    ImageState {
                        size: img.size_bytes.unwrap_or(0),
                        num_nodes: 1,
                    },
                );
            }
        }
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: status
                .and_then(|s| s.allocatable.as_ref())
                .map(Resource::from_list)
                .unwrap_or_default(),
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            pods: Vec::new(),
            pods_with_affinity: Vec::new(),
            pods_with_required_anti_affinity: Vec::new(),
            used_ports: Vec::new(),
            images,
            generation: 0,
            node,
        }
    }

    /// Takes a new version of the Node object, keeping the pods placed here.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let fresh = NodeInfo::new(node);
        self.name = fresh.name;
        self.labels = fresh.labels;
        self.taints = fresh.taints;
        self.unschedulable = fresh.unschedulable;
        self.allocatable = fresh.allocatable;
        self.images = fresh.images;
        self.node = fresh.node;
        self.generation += 1;
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.requested.allowed_pod_number += 1;
        self.non_zero_requested.add(&pod.non_zero_requests);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_affinity() {
            self.pods_with_affinity.push(pod.clone());
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity.push(pod.clone());
        }
        self.pods.push(pod);
        self.generation += 1;
    }

    /// Removes the pod with `uid`; false when it is not here.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else {
            return false;
        };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.requested.allowed_pod_number -= 1;
        self.non_zero_requested.sub(&pod.non_zero_requests);
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|p| p == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        self.pods_with_affinity.retain(|p| p.uid != uid);
        self.pods_with_required_anti_affinity
            .retain(|p| p.uid != uid);
        self.generation += 1;
        true
    }
}

/// Whether a node's labels and name satisfy a NodeSelectorTerm (all its expressions and
/// fields); an empty term matches nothing, as in Kubernetes.
pub fn node_matches_term(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else {
                return false;
            };
            let Ok(bound) = bound.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// The cycle's read-only view of the cluster: every node with its pods, and namespace
/// labels for affinity terms with a namespace selector.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: Vec<Arc<NodeInfo>>,
    pub index: HashMap<String, usize>,
    /// Indices of nodes with at least one pod that has (anti-)affinity terms.
    pub have_pods_with_affinity: Vec<usize>,
    pub have_pods_with_required_anti_affinity: Vec<usize>,
    pub namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// PodDisruptionBudgets, for preemption (victims whose eviction would break a budget
    /// are kept when possible). Filled from every PDB: `metadata.namespace`,
    /// `spec.selector` compiled (a missing selector as [`LabelSelector::nothing`]),
    /// `status.disruptionsAllowed` and the names in `status.disruptedPods`.
    pub pdbs: Vec<PdbInfo>,
    /// `spec.selector` of each Service with a non-empty selector, by namespace (as a
    /// selector of `key=value` requirements). PodTopologySpread's cluster default
    /// constraints spread a pod among the pods of the Services selecting it.
    pub service_selectors: HashMap<String, Vec<LabelSelector>>,
    /// `spec.selector` of each ReplicationController, ReplicaSet and StatefulSet, keyed
    /// by [`controller_key`] (`namespace/Kind/name`); the controller owning a pod
    /// (`ownerReferences[controller=true]`) adds its selector to the default spread
    /// selector.
    pub controller_selectors: HashMap<String, LabelSelector>,
    /// PersistentVolumeClaims by `namespace/name`: the volume each is bound to
    /// (`spec.volumeName`), None while unbound.
    pub claims: HashMap<String, Option<String>>,
    /// PersistentVolumes by name: their required node affinity, if any.
    pub volumes: HashMap<String, Option<k8s_openapi::api::core::v1::NodeSelector>>,
}

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone)]
pub struct PdbInfo {
    pub namespace: String,
    /// A budget with an empty or null selector protects no pods (as kube's preemption).
    pub selector: LabelSelector,
    pub disruptions_allowed: i32,
    /// Pods the API server already counted as disrupted (`status.disruptedPods`): evicting
    /// them again does not use up the budget.
    pub disrupted_pods: HashSet<String>,
}

/// The key of [`Snapshot::controller_selectors`]: `Kind` is `ReplicationController`,
/// `ReplicaSet` or `StatefulSet`.
pub fn controller_key(namespace: &str, kind: &str, name: &str) -> String {
    format!("{namespace}/{kind}/{name}")
}

impl Snapshot {
    /// Builds a snapshot from nodes (used by tests and the in-process benchmark; the
    /// cache updates its snapshot incrementally).
    pub fn from_nodes(nodes: Vec<NodeInfo>) -> Snapshot {
        let mut s = Snapshot::default();
        let mut image_nodes: HashMap<String, usize> = HashMap::new();
        for n in &nodes {
            for name in n.images.keys() {
                *image_nodes.entry(name.clone()).or_default() += 1;
            }
        }
        for mut n in nodes {
            for (name, state) in n.images.iter_mut() {
                state.num_nodes = image_nodes.get(name).copied().unwrap_or(1);
            }
            s.index.insert(n.name.clone(), s.nodes.len());
            s.nodes.push(Arc::new(n));
        }
        s.refresh_lists();
        s
    }

    /// Recomputes the affinity index lists after nodes changed.
    pub fn refresh_lists(&mut self) {
        self.have_pods_with_affinity.clear();
        self.have_pods_with_required_anti_affinity.clear();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.pods_with_affinity.is_empty() {
                self.have_pods_with_affinity.push(i);
            }
            if !n.pods_with_required_anti_affinity.is_empty() {
                self.have_pods_with_required_anti_affinity.push(i);
            }
        }
    }

    /// Places `pod` on the node at `idx` (copying that node only if it is shared), keeping
    /// the affinity index lists current.
    pub fn assume(&mut self, idx: usize, pod: Arc<PodInfo>) {
        let has_affinity = pod.has_affinity();
        let has_anti = !pod.required_anti_affinity.is_empty();
        let node = Arc::make_mut(&mut self.nodes[idx]);
        let first_affinity = has_affinity && node.pods_with_affinity.is_empty();
        let first_anti = has_anti && node.pods_with_required_anti_affinity.is_empty();
        node.add_pod(pod);
        if first_affinity {
            self.have_pods_with_affinity.push(idx);
        }
        if first_anti {
            self.have_pods_with_required_anti_affinity.push(idx);
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }
}
