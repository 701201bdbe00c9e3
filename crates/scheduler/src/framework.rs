//! The scheduling framework, in the shape of kube-scheduler's `framework/interface.go`:
//! one small trait per extension point, and outcomes as [`Status`] codes, never errors.
//!
//! A scheduling cycle for one pod runs, in order: every [`PreFilter`] (which may compute
//! per-cycle state into the [`CycleState`], narrow the candidate nodes, or reject the pod
//! outright), [`Filter`] on candidate nodes until enough feasible ones are found, the
//! [`PostFilter`]s (preemption) when none is feasible, every [`PreScore`] over the
//! feasible nodes, [`Score`] per node with its normalization and weight, then
//! [`Reserve`], and binding in the background ([`PreBind`], then the `pods/binding` call).
//! Plugins are pure over the cycle's [`Snapshot`]: they never call the API.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;

use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

/// The highest score a [`Score`] plugin may give after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

/// What a plugin decided, as kube-scheduler's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    /// Something went wrong inside the scheduler (not the pod's fault): retried with backoff.
    Error,
    /// Does not fit now; preemption may help.
    Unschedulable,
    /// Does not fit, and preemption on this node cannot change that.
    UnschedulableAndUnresolvable,
    /// Permit: hold the pod.
    Wait,
    /// PreFilter/PreScore: this plugin has nothing to do for the pod; its Filter/Score
    /// is skipped this cycle.
    Skip,
}

/// A plugin's outcome: a code, the reasons shown to users
/// (`Insufficient cpu`, `node(s) didn't match Pod's node affinity/selector`), and the
/// plugin that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// Mostly fixed texts, borrowed: Filter rejects thousands of nodes per cycle.
    pub reasons: Vec<Cow<'static, str>>,
    pub plugin: &'static str,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }

    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    pub fn error(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::Error, reason)
    }

    pub const fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Unschedulable or unresolvable: the pod does not fit.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }
}

/// Per-cycle data a plugin's PreFilter/PreScore computes and its Filter/Score reads.
/// Cloneable, because preemption simulates removing pods on a copy.
pub trait StateData: Any + Send + Sync {
    fn clone_data(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The state of one scheduling cycle, keyed by plugin-chosen names.
#[derive(Default)]
pub struct CycleState {
    /// Read by every Filter and Score on every node, with a dozen keys at most: a scan
    /// that first compares the keys' addresses (the plugins pass the same constants)
    /// beats hashing the key.
    data: Vec<(&'static str, Box<dyn StateData>)>,
    /// PreFilter/PreScore plugins that returned Skip: their Filter/Score do not run.
    pub skip_filter: Vec<&'static str>,
    pub skip_score: Vec<&'static str>,
    /// How many nodes the cycle's snapshot holds (ImageLocality spreads by it).
    pub num_all_nodes: usize,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_data()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            num_all_nodes: self.num_all_nodes,
        }
    }
}

impl CycleState {
    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        let value: Box<dyn StateData> = Box::new(value);
        match self.position(key) {
            Some(i) => self.data[i].1 = value,
            None => self.data.push((key, value)),
        }
    }

    pub fn read<T: 'static>(&self, key: &'static str) -> Option<&T> {
        (*self.data[self.position(key)?].1).as_any().downcast_ref()
    }

    pub fn read_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        let i = self.position(key)?;
        (*self.data[i].1).as_any_mut().downcast_mut()
    }

    fn position(&self, key: &str) -> Option<usize> {
        let same_address = |(k, _): &(&'static str, _)| std::ptr::eq(*k, key);
        self.data
            .iter()
            .position(same_address)
            .or_else(|| self.data.iter().position(|(k, _)| *k == key))
    }
}

/// Kinds of objects whose changes can make an unschedulable pod fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventResource {
    Pod,
    /// A pod that is assigned to a node (added, deleted, relabelled).
    AssignedPod,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    StorageClass,
}

/// What happened to the object, as bit flags (kube-scheduler's `ActionType`).
pub mod action {
    pub const ADD: u32 = 1;
    pub const DELETE: u32 = 1 << 1;
    pub const UPDATE_NODE_ALLOCATABLE: u32 = 1 << 2;
    pub const UPDATE_NODE_LABEL: u32 = 1 << 3;
    pub const UPDATE_NODE_TAINT: u32 = 1 << 4;
    pub const UPDATE_NODE_CONDITION: u32 = 1 << 5;
    pub const UPDATE_POD_LABEL: u32 = 1 << 6;
    pub const UPDATE_POD_SCALE_DOWN: u32 = 1 << 7;
    /// Any other update (node spec.unschedulable, PV/PVC binding …).
    pub const UPDATE_OTHER: u32 = 1 << 8;
    pub const UPDATE: u32 = UPDATE_NODE_ALLOCATABLE
        | UPDATE_NODE_LABEL
        | UPDATE_NODE_TAINT
        | UPDATE_NODE_CONDITION
        | UPDATE_POD_LABEL
        | UPDATE_POD_SCALE_DOWN
        | UPDATE_OTHER;
    pub const ALL: u32 = ADD | DELETE | UPDATE;
}

/// A cluster change a plugin says may make pods it rejected fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    pub resource: EventResource,
    /// Bits of [`action`].
    pub actions: u32,
}

impl ClusterEvent {
    pub const fn new(resource: EventResource, actions: u32) -> ClusterEvent {
        ClusterEvent { resource, actions }
    }

    /// Whether `happened` (one concrete change) is covered by this registration.
    pub fn covers(&self, happened: &ClusterEvent) -> bool {
        let same = self.resource == happened.resource
            || (self.resource == EventResource::Pod
                && happened.resource == EventResource::AssignedPod);
        same && self.actions & happened.actions != 0
    }
}

/// Every plugin has a name (used in statuses, metrics and configuration) and says which
/// cluster events may make the pods it rejected schedulable again.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// The events after which a pod this plugin rejected is retried; the default is
    /// every change to nodes.
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(EventResource::Node, action::ALL)]
    }
}

/// Runs once per cycle before filtering.
pub trait PreFilter: Plugin {
    /// May write state for [`Filter`], return [`Code::Skip`] to skip this plugin's Filter,
    /// or reject the pod for every node. A `Some` node set narrows the candidates.
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, Option<Vec<String>>);

    /// Preemption's simulation added `added` to `node`: update the state written by
    /// [`PreFilter::pre_filter`]. Plugins with no node-dependent state keep the default.
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _added: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }

    /// Preemption's simulation removed `removed` from `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _removed: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }
}

/// Whether the pod can run on one node.
pub trait Filter: Plugin {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// The nodes filtering rejected, with why (for preemption and the Unschedulable message).
pub type NodeStatuses = HashMap<String, Status>;

/// What a PostFilter plugin (preemption) achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostFilterResult {
    pub status: Status,
    /// The node the pod was nominated to after victims were evicted.
    pub nominated_node: Option<String>,
    /// Pods to delete (namespace, name, uid) to make room.
    pub victims: Vec<(String, String, String)>,
}

/// Runs when no node is feasible.
pub trait PostFilter: Plugin {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        framework: &crate::Framework,
        statuses: &NodeStatuses,
    ) -> PostFilterResult;
}

/// Runs once per cycle before scoring, over the feasible nodes.
pub trait PreScore: Plugin {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[&NodeInfo]) -> Status;
}

/// One node's score from one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeScore {
    /// Index into the feasible nodes of this cycle.
    pub node: usize,
    pub score: i64,
}

/// Ranks feasible nodes.
pub trait Score: Plugin {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;

    /// Brings the raw scores into `0..=MAX_NODE_SCORE`; the default leaves them.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [NodeScore]) -> Status {
        Status::success()
    }
}

/// Claims resources for the pod on its node once chosen (volume binding's hook); undone
/// with `unreserve` when a later step fails.
pub trait Reserve: Plugin {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Runs in the binding task before `pods/binding` (volume binding's API calls go here).
pub trait PreBind: Plugin {
    fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Helpers for normalizing scores the way kube-scheduler's plugins share.
pub fn default_normalize(scores: &mut [NodeScore], reverse: bool) {
    let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if max == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = MAX_NODE_SCORE;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = MAX_NODE_SCORE * s.score / max;
        if reverse {
            v = MAX_NODE_SCORE - v;
        }
        s.score = v;
    }
}
