//! Shared informers: one watch per kind for the whole controller manager, a cache of the
//! objects it has seen (by namespace, then name) and the event handlers of every
//! controller that cares about the kind.
//!
//! Contract: handlers run on the watch task, in the order the changes arrive, and must
//! only enqueue keys (never await, never call the API). A handler sees `Added` for an
//! object new to the cache, `Updated` with the previous and the new version, `Deleted`
//! with the last version seen. After a re-list (the watch expired or failed) the cache is
//! replaced and handlers see `Deleted` for what vanished meanwhile and `Updated` for what
//! changed, so no change is ever missed, only coalesced. [`Informer::synced`] completes
//! once the first full list is in the cache; controllers start their workers after it.
//!
//! Lifecycle: [`Informers::informer`] creates the kind's informer on first use (later
//! calls share it); [`Informers::start`] spawns one watch task per created kind. Handlers
//! must be registered before `start`.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A change to one cached object, as handlers see it.
pub enum Change<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

impl<'a, K> Change<'a, K> {
    /// The newest version the change carries (the last one seen, for a delete).
    pub fn object(&self) -> &'a Arc<K> {
        match self {
            Change::Added(o) | Change::Deleted(o) => o,
            Change::Updated { new, .. } => new,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;
type Objects<K> = BTreeMap<String, HashMap<String, Arc<K>>>;

/// The cache and handlers of one kind.
pub struct Informer<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K> {
    objects: RwLock<Objects<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
}

/// The object's namespace ("" for cluster-scoped kinds) and name.
pub fn key_parts<K: Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// `namespace/name`, or `name` for cluster-scoped objects: the queue key of an object.
pub fn key_of<K: Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", o.name_any()),
        _ => o.name_any(),
    }
}

/// Splits a queue key into namespace ("" when cluster-scoped) and name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

impl<K: Resource + Clone + Send + Sync + 'static> Informer<K> {
    fn new() -> Self {
        Informer {
            inner: Arc::new(Inner {
                objects: RwLock::new(BTreeMap::new()),
                handlers: RwLock::new(Vec::new()),
                synced: watch::channel(false).0,
            }),
        }
    }

    /// Registers a handler (see the module docs: it only enqueues).
    pub fn on_change(&self, f: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        write(&self.inner.handlers).push(Box::new(f));
    }

    /// The cached object `ns/name` ("" namespace for cluster-scoped kinds).
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        read(&self.inner.objects)
            .get(ns)
            .and_then(|m| m.get(name))
            .cloned()
    }

    /// The cached object of a queue key.
    pub fn get_key(&self, key: &str) -> Option<Arc<K>> {
        let (ns, name) = split_key(key);
        self.get(ns, name)
    }

    /// Every cached object of namespace `ns`, or of all namespaces with None.
    pub fn list(&self, ns: Option<&str>) -> Vec<Arc<K>> {
        let objects = read(&self.inner.objects);
        match ns {
            Some(ns) => objects
                .get(ns)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
            None => objects.values().flat_map(|m| m.values().cloned()).collect(),
        }
    }

    /// Calls `f` on every cached object of `ns` (all namespaces with None) without
    /// copying the list.
    pub fn for_each(&self, ns: Option<&str>, mut f: impl FnMut(&Arc<K>)) {
        let objects = read(&self.inner.objects);
        match ns {
            Some(ns) => objects.get(ns).into_iter().flat_map(|m| m.values()).for_each(&mut f),
            None => objects.values().flat_map(|m| m.values()).for_each(&mut f),
        }
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        read(&self.inner.objects).values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first full list has been applied.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Completes once the first full list has been applied.
    pub async fn synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        // The sender lives as long as the informer, which we hold.
        let _ = rx.wait_for(|s| *s).await;
    }

    fn notify(&self, change: &Change<'_, K>) {
        for h in read(&self.inner.handlers).iter() {
            h(change);
        }
    }

    /// Applies one object to the cache and tells the handlers.
    pub(crate) fn apply(&self, obj: K) {
        let (ns, name) = key_parts(&obj);
        let new = Arc::new(obj);
        let old = write(&self.inner.objects)
            .entry(ns)
            .or_default()
            .insert(name, new.clone());
        match old {
            None => self.notify(&Change::Added(&new)),
            Some(old) => self.notify(&Change::Updated { old: &old, new: &new }),
        }
    }

    /// Removes one object from the cache and tells the handlers.
    pub(crate) fn delete(&self, obj: K) {
        let (ns, name) = key_parts(&obj);
        let old = {
            let mut objects = write(&self.inner.objects);
            let old = objects.get_mut(&ns).and_then(|m| m.remove(&name));
            if objects.get(&ns).is_some_and(HashMap::is_empty) {
                objects.remove(&ns);
            }
            old
        };
        let gone = old.unwrap_or_else(|| Arc::new(obj));
        self.notify(&Change::Deleted(&gone));
    }

    /// Replaces the cache with a full list: what vanished is deleted, the rest applied.
    fn replace(&self, listed: Vec<K>) {
        let mut seen: BTreeMap<String, std::collections::HashSet<String>> = BTreeMap::new();
        for o in &listed {
            let (ns, name) = key_parts(o);
            seen.entry(ns).or_default().insert(name);
        }
        let vanished: Vec<Arc<K>> = {
            let objects = read(&self.inner.objects);
            objects
                .iter()
                .flat_map(|(ns, m)| {
                    let seen = seen.get(ns);
                    m.iter()
                        .filter(move |(name, _)| !seen.is_some_and(|s| s.contains(*name)))
                        .map(|(_, o)| o.clone())
                })
                .collect()
        };
        for o in vanished {
            self.delete((*o).clone());
        }
        for o in listed {
            self.apply(o);
        }
        self.inner.synced.send_replace(true);
    }
}

/// The informers of one controller manager: at most one per kind.
#[derive(Clone)]
pub struct Informers {
    client: Client,
    kinds: Arc<Mutex<Kinds>>,
}

#[derive(Default)]
struct Kinds {
    by_type: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    starters: Vec<Starter>,
}

type Starter = Box<dyn FnOnce(Client, CancellationToken) + Send>;

impl Informers {
    pub fn new(client: Client) -> Informers {
        Informers {
            client,
            kinds: Arc::new(Mutex::new(Kinds::default())),
        }
    }

    /// The informer of kind `K` (created on first use; watched from [`Informers::start`]).
    pub fn informer<K>(&self) -> Informer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let mut kinds = lock(&self.kinds);
        if let Some(i) = kinds
            .by_type
            .get(&TypeId::of::<K>())
            .and_then(|a| a.downcast_ref::<Informer<K>>())
        {
            return i.clone();
        }
        let informer = Informer::<K>::new();
        kinds
            .by_type
            .insert(TypeId::of::<K>(), Box::new(informer.clone()));
        let watched = informer.clone();
        kinds.starters.push(Box::new(move |client, stop| {
            tokio::spawn(run_watch(Api::<K>::all(client), watched, stop));
        }));
        informer
    }

    /// Spawns the watch of every informer created so far (each once).
    pub fn start(&self, stop: &CancellationToken) {
        let starters = std::mem::take(&mut lock(&self.kinds).starters);
        for s in starters {
            s(self.client.clone(), stop.clone());
        }
    }
}

async fn run_watch<K>(api: Api<K>, informer: Informer<K>, stop: CancellationToken)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut listing: Option<Vec<K>> = None;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = stream.next() => match ev { Some(ev) => ev, None => return },
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(kind = %K::kind(&()), %e, "informer watch failed; retrying");
                continue;
            }
        };
        match ev {
            Event::Init => listing = Some(Vec::new()),
            Event::InitApply(o) => match listing.as_mut() {
                Some(l) => l.push(slim(o)),
                None => informer.apply(slim(o)),
            },
            Event::InitDone => {
                if let Some(l) = listing.take() {
                    informer.replace(l);
                }
            }
            Event::Apply(o) => informer.apply(slim(o)),
            Event::Delete(o) => informer.delete(slim(o)),
        }
    }
}

/// Server-side apply bookkeeping is large and never read by controllers.
fn slim<K: Resource>(mut o: K) -> K {
    o.meta_mut().managed_fields = None;
    o
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pod(ns: &str, name: &str, rv: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.resource_version = Some(rv.into());
        p
    }

    #[test]
    fn a_relist_reports_what_vanished_and_what_changed() {
        let i = Informer::<Pod>::new();
        let (added, updated, deleted) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (a, u, d) = (added.clone(), updated.clone(), deleted.clone());
        i.on_change(move |c| {
            match c {
                Change::Added(_) => &a,
                Change::Updated { .. } => &u,
                Change::Deleted(_) => &d,
            }
            .fetch_add(1, Ordering::SeqCst);
        });
        i.apply(pod("a", "p1", "1"));
        i.apply(pod("a", "p2", "1"));
        i.apply(pod("b", "p3", "1"));
        assert!(!i.is_synced());
        i.replace(vec![pod("a", "p1", "2"), pod("c", "p4", "1")]);
        assert!(i.is_synced());
        assert_eq!(added.load(Ordering::SeqCst), 4);
        assert_eq!(updated.load(Ordering::SeqCst), 1);
        assert_eq!(deleted.load(Ordering::SeqCst), 2);
        assert_eq!(i.len(), 2);
        assert!(i.get("b", "p3").is_none());
        assert_eq!(i.list(Some("a")).len(), 1);
        assert_eq!(i.get_key("c/p4").map(|p| p.name_any()), Some("p4".into()));
    }

    #[test]
    fn keys_split_into_namespace_and_name() {
        assert_eq!(split_key("ns/n"), ("ns", "n"));
        assert_eq!(split_key("node-1"), ("", "node-1"));
        assert_eq!(key_of(&pod("ns", "n", "1")), "ns/n");
    }
}
