//! The Node authorizer's state in the API server: the graph of what each node needs
//! (`skiff_api::node_authz::NodeGraph`), loaded from the store before serving ([`load`]) and
//! kept current from the watch cache ([`follow`]): pods, PersistentVolumes and
//! VolumeAttachments. Requests never read the store.
//!
//! Freshness: the graph trails the watch cache by the time its follower takes to apply
//! an event. A node that has just seen its new pod (through its own watch on the same
//! cache) may ask for the pod's Secret before the follower has applied the pod; so a
//! refusal for want of a relationship first waits until the graph has applied every event
//! the cache had when the request was checked (bounded by [`CATCH_UP`]) and decides
//! again. Allowed requests and other refusals never wait.
//!
//! NodeRestriction's wiring is here too ([`admit`]): it fetches what the pure plugin
//! needs (the pod of an eviction or token, the node's own Node for a mirror pod) and turns
//! its refusals into kube's 403 and 404 answers.

use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};
use skiff_api::node_authz::{self, restriction, NodeDecision, NodeGraph};
use skiff_api::rbac::{self, Attributes, Rule};
use skiff_store::Revision;

use crate::handlers::objects;
use crate::meta;
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::{CacheEvent, Ended, EventType, WatchCache};
use crate::{AppState, Objects};

/// The longest a refusal waits for the graph to catch up with the watch cache.
pub const CATCH_UP: Duration = Duration::from_secs(3);

/// The graph and the static node rules.
pub struct NodeAuthorizer {
    graph: RwLock<NodeGraph>,
    rules: Vec<Rule>,
    /// The revision up to which the graph has applied the watch cache's events.
    applied: tokio::sync::watch::Sender<Revision>,
}

impl Default for NodeAuthorizer {
    fn default() -> Self {
        NodeAuthorizer {
            graph: RwLock::new(NodeGraph::new()),
            rules: rbac::bootstrap::node_rules(),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl NodeAuthorizer {
    fn read<T>(&self, f: impl FnOnce(&NodeGraph) -> T) -> T {
        f(&self.graph.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self, f: impl FnOnce(&mut NodeGraph)) {
        f(&mut self.graph.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// The decision on `a` by node `node` from the graph as it is.
    pub fn decide(&self, node: &str, a: &Attributes) -> NodeDecision {
        self.read(|g| node_authz::authorize(g, &self.rules, node, a))
    }

    /// The decision on `a`, after the graph caught up with `cache` when the answer
    /// depends on a relationship the graph does not (yet) have.
    pub async fn decide_current(
        &self,
        cache: &WatchCache,
        node: &str,
        a: &Attributes,
    ) -> NodeDecision {
        let d = self.decide(node, a);
        if !matches!(d, NodeDecision::NoRelationship { .. }) {
            return d;
        }
        let target = cache.latest();
        let mut rx = self.applied.subscribe();
        if *rx.borrow() >= target {
            return d;
        }
        let caught_up = tokio::time::timeout(CATCH_UP, async {
            rx.wait_for(|r| *r >= target).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if !caught_up {
            tracing::warn!(node, target, "the node authorizer's graph did not catch up with the watch cache in time; deciding on what it has");
        }
        self.decide(node, a)
    }

    fn set_applied(&self, rev: Revision) {
        self.applied.send_if_modified(|r| {
            let moved = rev > *r;
            if moved {
                *r = rev;
            }
            moved
        });
    }
}

fn served(group: &str, plural: &str) -> &'static Kind {
    kinds::by_resource(group, "v1", plural).expect("the node authorizer's kinds are served")
}

/// The kinds the graph follows, by their key prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Followed {
    Pod,
    PersistentVolume,
    VolumeAttachment,
}

fn followed() -> [(String, Followed); 3] {
    [
        (meta::kind_prefix(served("", "pods")), Followed::Pod),
        (
            meta::kind_prefix(served("", "persistentvolumes")),
            Followed::PersistentVolume,
        ),
        (
            meta::kind_prefix(served("storage.k8s.io", "volumeattachments")),
            Followed::VolumeAttachment,
        ),
    ]
}

/// Builds the graph anew from the store.
pub async fn load(objects: &Objects, nodes: &NodeAuthorizer) -> ApiResult<()> {
    let mut g = NodeGraph::new();
    for (prefix, what) in followed() {
        for obj in objects::list_values(&*objects.store, &prefix).await? {
            match what {
                Followed::Pod => g.upsert_pod(&obj),
                Followed::PersistentVolume => g.upsert_pv(&obj),
                Followed::VolumeAttachment => g.upsert_attachment(
                    meta::name(&obj),
                    meta::str_at(&obj, "/spec/nodeName").unwrap_or_default(),
                ),
            }
        }
    }
    nodes.write(|graph| *graph = g);
    Ok(())
}

/// Applies one watch-cache event to the graph.
fn apply(nodes: &NodeAuthorizer, prefixes: &[(String, Followed)], ev: &CacheEvent) {
    let Some((rest, what)) = prefixes
        .iter()
        .find_map(|(p, w)| ev.key.strip_prefix(p.as_str()).map(|r| (r, *w)))
    else {
        return;
    };
    match what {
        Followed::Pod => {
            let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
            if ev.kind == EventType::Deleted {
                nodes.write(|g| g.delete_pod(ns, name));
                return;
            }
            let node = ev.object.field("spec.nodeName").unwrap_or_default();
            if node.is_empty() {
                return;
            }
            // A bound pod's references never change: most pod events (status updates)
            // need no decoding.
            if ev.kind == EventType::Modified
                && nodes.read(|g| g.pod_node(ns, name) == Some(node.as_str()))
            {
                return;
            }
            if let Some(pod) = ev.decode() {
                nodes.write(|g| g.upsert_pod(&pod));
            }
        }
        Followed::PersistentVolume => match ev.kind {
            EventType::Deleted => nodes.write(|g| g.delete_pv(rest)),
            _ => {
                if let Some(pv) = ev.decode() {
                    nodes.write(|g| g.upsert_pv(&pv));
                }
            }
        },
        Followed::VolumeAttachment => match ev.kind {
            EventType::Deleted => nodes.write(|g| g.delete_attachment(rest)),
            _ => {
                if let Some(va) = ev.decode() {
                    let node = meta::str_at(&va, "/spec/nodeName").unwrap_or_default();
                    nodes.write(|g| g.upsert_attachment(rest, node));
                }
            }
        },
    }
}

/// Keeps the graph current from the watch cache until `stop`; after a lost position
/// (410) it loads the graph again.
pub async fn follow(
    st: Arc<AppState>,
    cache: Arc<WatchCache>,
    stop: skiff_serve::CancellationToken,
) {
    let nodes = &st.authz.nodes;
    let prefixes = followed();
    loop {
        let Ok(mut sub) = cache.subscribe(Revision::MAX) else {
            return;
        };
        // Everything up to here is in the store for the load to read; everything after
        // comes through the subscription (applied twice at worst, which is harmless).
        let start = cache.latest();
        if let Err(e) = load(&st.objects, nodes).await {
            tracing::warn!(error = %e.message, "loading the node authorizer's graph");
        }
        nodes.set_applied(start);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        apply(nodes, &prefixes, &ev);
                        nodes.set_applied(ev.revision);
                    }
                    Err(Ended::Closed) => return,
                    Err(_) => break,
                }
            }
        }
    }
}

/// The request user's node name, when the request is a node's.
fn requesting_node() -> Option<(String, String)> {
    let user = crate::authz::REQUEST_USER.try_with(Clone::clone).ok()?;
    let node = node_authz::node_identity(&user.username, &user.groups)?.to_string();
    Some((node, user.username))
}

/// NodeRestriction for one write: nothing unless the request is a node's; otherwise the
/// plugin's decision, with what it needs fetched from the store.
#[allow(clippy::too_many_arguments)]
pub async fn admit(
    st: &Objects,
    kind: &Kind,
    subresource: &str,
    operation: &str,
    namespace: Option<&str>,
    name: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<()> {
    let Some((node, user)) = requesting_node() else {
        return Ok(());
    };
    let req = restriction::Request {
        node: &node,
        user: &user,
        operation,
        group: kind.group,
        resource: kind.plural,
        subresource,
        namespace: namespace.unwrap_or_default(),
        name,
        object,
        old,
    };
    let lookup = restriction::lookup_needed(&req);
    let fetched = match &lookup {
        Some(restriction::Lookup::Pod { namespace, name }) => {
            optional(objects::get(st, served("", "pods"), Some(namespace), name).await)?
        }
        Some(restriction::Lookup::Node { name }) => {
            optional(objects::get(st, served("", "nodes"), None, name).await)?
        }
        None => None,
    };
    let found = match lookup {
        Some(restriction::Lookup::Pod { .. }) => restriction::Found {
            pod: fetched.as_ref(),
            node: None,
        },
        Some(restriction::Lookup::Node { .. }) => restriction::Found {
            pod: None,
            node: fetched.as_ref(),
        },
        None => restriction::Found::default(),
    };
    restriction::admit(&req, &found).map_err(refusal)
}

fn optional(r: ApiResult<Value>) -> ApiResult<Option<Value>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code == StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

fn refusal(r: restriction::Refusal) -> ApiError {
    match r {
        restriction::Refusal::Forbidden {
            group,
            resource,
            name,
            message,
        } => {
            let mut e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message);
            let mut details = json!({"kind": resource});
            if !name.is_empty() {
                details["name"] = json!(name);
            }
            if !group.is_empty() {
                details["group"] = json!(group);
            }
            e.details = Some(details);
            e
        }
        restriction::Refusal::NotFound {
            ref resource,
            ref name,
        } => {
            let mut e = ApiError::new(StatusCode::NOT_FOUND, "NotFound", r.message());
            e.details = Some(json!({"kind": resource, "name": name}));
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_read() -> Attributes {
        Attributes::resource(
            "system:node:n1",
            &["system:nodes"],
            "get",
            "default",
            "",
            "secrets",
            "",
            "s1",
        )
    }

    fn pod() -> Value {
        json!({"metadata": {"namespace": "default", "name": "p"},
               "spec": {"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": "s1"}}]}})
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_relationship_waits_for_the_graph_to_catch_up() {
        let nodes = Arc::new(NodeAuthorizer::default());
        // The cache has seen revision 7 (the pod's); the graph has applied nothing yet.
        let cache = Arc::new(WatchCache::at(7));
        let decision = tokio::spawn({
            let (nodes, cache) = (nodes.clone(), cache.clone());
            async move { nodes.decide_current(&cache, "n1", &secret_read()).await }
        });
        tokio::task::yield_now().await;
        assert!(!decision.is_finished(), "the refusal waits for the graph");
        nodes.write(|g| g.upsert_pod(&pod()));
        nodes.set_applied(7);
        assert_eq!(decision.await.unwrap(), NodeDecision::Allow);

        // Caught up: a refusal is answered at once.
        nodes.write(|g| g.delete_pod("default", "p"));
        assert_eq!(
            nodes.decide_current(&cache, "n1", &secret_read()).await,
            NodeDecision::NoRelationship { node: "n1".into() }
        );
    }
}
