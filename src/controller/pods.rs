//! The pod cache: every unfinished pod in the cluster, each in a few dozen bytes, indexed so that a pass
//! reads 100,000 of them without hashing or copying a string.
//!
//! Namespace, node and resource names are interned: a pod holds small ids, and a pass turns its pool's
//! tenant namespaces, nodes and GPU resource into ids once, then joins by array index. Each pod keeps
//! what the planner reads: its node, the extended resources it asks for (as the scheduler counts them),
//! phase, deletion, sublet's deadline annotation and, while unscheduled, its node selector.
//!
//! A re-list (after a watch expired) is gathered aside and swapped in whole when it completes, as the
//! reflector does, so a pass never sees half a list; the interned names start afresh with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use jiff::Timestamp;

use super::cached_pod::CachedPod;
use crate::api::keys::DEADLINE_ANNOTATION;

/// Small ids for names that many pods share.
#[derive(Default)]
pub struct Names {
    ids: foldhash::HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The id of `name`, if any pod used it.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The part of a pod every pass reads, kept densely so that a walk over 100,000 pods stays in cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotPod {
    pub namespace: u32,
    /// The node id, or [`HotPod::UNSCHEDULED`].
    pub node: u32,
    /// The first extended resource asked for, and how many (0 when none); others are in [`ColdPod::more`].
    resource: u32,
    count: u32,
    pub running: bool,
    pub terminating: bool,
}

impl HotPod {
    pub const UNSCHEDULED: u32 = u32::MAX;
}

/// A key and its value.
type Pair = (Box<str>, Box<str>);

/// The rest of a pod, read only for the few a pass lists.
#[derive(Clone, Debug, PartialEq)]
pub struct ColdPod {
    pub name: Box<str>,
    /// Extended resources after the first.
    more: Box<[(u32, u32)]>,
    /// sublet's `reclaim-deadline` annotation.
    pub deadline: Option<Timestamp>,
    /// The node selector of a pod not yet scheduled (dropped once it is).
    node_selector: Option<Box<[Pair]>>,
}

impl ColdPod {
    /// The value the node selector gives `key`.
    pub fn selects(&self, key: &str) -> Option<&str> {
        self.node_selector
            .as_ref()?
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }
}

/// Every cached pod: parallel dense arrays, and an index by namespace id and name.
#[derive(Default)]
pub struct PodTable {
    pub namespaces: Names,
    pub nodes: Names,
    pub resources: Names,
    index: HashMap<(u32, Box<str>), usize, foldhash::fast::RandomState>,
    hot: Vec<HotPod>,
    cold: Vec<ColdPod>,
    /// The namespaces each pool counts as tenants' (by name), for telling which pod changes matter.
    watched: BTreeMap<String, Vec<String>>,
}

impl PodTable {
    pub fn len(&self) -> usize {
        self.hot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hot.is_empty()
    }

    /// Every pod's hot part; a position is good for [`PodTable::count`] and [`PodTable::cold`].
    pub fn hot(&self) -> &[HotPod] {
        &self.hot
    }

    pub fn cold(&self, i: usize) -> &ColdPod {
        &self.cold[i]
    }

    /// How many of resource `id` pod `i` asks for: the larger of its containers' sum and its largest init
    /// container, requests or else limits, as the scheduler counts them.
    pub fn count(&self, i: usize, resource: Option<u32>) -> u32 {
        let Some(resource) = resource else { return 0 };
        let hot = &self.hot[i];
        if hot.resource == resource {
            return hot.count;
        }
        if hot.count == 0 {
            return 0;
        }
        self.cold[i]
            .more
            .iter()
            .find(|(r, _)| *r == resource)
            .map_or(0, |(_, n)| *n)
    }

    fn parts(&mut self, pod: &CachedPod) -> Option<(HotPod, ColdPod)> {
        let meta = &pod.metadata;
        let namespace = self.namespaces.intern(meta.namespace.as_deref()?);
        let name: Box<str> = meta.name.as_deref()?.into();
        let node = pod.spec.node_name.as_deref().map(|n| self.nodes.intern(n));
        let mut requests = pod.extended().into_iter().map(|(r, n)| (self.resources.intern(&r), n));
        let (resource, count) = requests.next().unwrap_or((0, 0));
        let more: Box<[(u32, u32)]> = requests.collect();
        let node_selector = match (&pod.spec.node_selector, node) {
            (Some(sel), None) if !sel.is_empty() => Some(
                sel.iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                    .collect(),
            ),
            _ => None,
        };
        let hot = HotPod {
            namespace,
            node: node.unwrap_or(HotPod::UNSCHEDULED),
            resource,
            count,
            running: pod.status.phase.as_deref() == Some("Running"),
            terminating: meta.deletion_timestamp.is_some(),
        };
        let cold = ColdPod {
            name,
            more,
            deadline: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEADLINE_ANNOTATION))
                .and_then(|d| d.parse().ok()),
            node_selector,
        };
        Some((hot, cold))
    }

    /// Stores `pod`; returns whether the change can matter to a plan.
    fn apply(&mut self, pod: &CachedPod) -> bool {
        let Some((hot, cold)) = self.parts(pod) else {
            return false;
        };
        let mut relevant = self.matters(&hot, &cold);
        match self.index.get(&(hot.namespace, cold.name.clone())) {
            Some(&i) => {
                relevant |= self.matters(&self.hot[i], &self.cold[i]);
                self.hot[i] = hot;
                self.cold[i] = cold;
            }
            None => {
                self.index.insert((hot.namespace, cold.name.clone()), self.hot.len());
                self.hot.push(hot);
                self.cold.push(cold);
            }
        }
        relevant
    }

    /// Forgets `pod`; returns whether it mattered.
    fn delete(&mut self, pod: &CachedPod) -> bool {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
            return false;
        };
        let Some(ns) = self.namespaces.id(ns) else { return false };
        let Some(i) = self.index.remove(&(ns, name.into())) else {
            return false;
        };
        let hot = self.hot.swap_remove(i);
        let cold = self.cold.swap_remove(i);
        if i < self.hot.len() {
            let moved = (self.hot[i].namespace, self.cold[i].name.clone());
            self.index.insert(moved, i);
        }
        self.matters(&hot, &cold)
    }

    /// Whether a pod can change a plan: it asks for an extended resource (a GPU of some pool), carries
    /// sublet's annotation, or lives in a namespace some pool counts as a tenant's.
    fn matters(&self, hot: &HotPod, cold: &ColdPod) -> bool {
        if hot.count > 0 || cold.deadline.is_some() {
            return true;
        }
        let ns = self.namespaces.name(hot.namespace);
        self.watched.values().any(|list| list.iter().any(|n| n == ns))
    }
}

/// The pod cache, shared by the watch task and the passes.
#[derive(Clone, Default)]
pub struct PodCache {
    table: Arc<RwLock<PodTable>>,
}

impl PodCache {
    /// A read view for one pass. Held without awaiting: watch events wait behind it.
    pub fn read(&self) -> RwLockReadGuard<'_, PodTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the tenant namespaces of `pool`, so that changes to their pods trigger a pass.
    pub fn watch_namespaces(&self, pool: &str, mut namespaces: Vec<String>) {
        namespaces.sort();
        if self.read().watched.get(pool) == Some(&namespaces) {
            return;
        }
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        t.watched.insert(pool.to_string(), namespaces);
    }

    /// Forgets the tenant namespaces of a pool that is gone.
    pub fn unwatch(&self, pool: &str) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .watched
            .remove(pool);
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies a watch stream's events to a [`PodCache`], buffering a re-list until it completes.
pub struct PodWriter {
    cache: PodCache,
    relist: Option<PodTable>,
}

impl PodWriter {
    pub fn new(cache: PodCache) -> Self {
        Self { cache, relist: None }
    }

    /// Applies one event; returns whether a pass should look at it.
    pub fn event(&mut self, event: kube::runtime::watcher::Event<CachedPod>) -> bool {
        use kube::runtime::watcher::Event;
        match event {
            Event::Apply(pod) => self.write().apply(&pod),
            Event::Delete(pod) => self.write().delete(&pod),
            Event::Init => {
                self.relist = Some(PodTable::default());
                false
            }
            Event::InitApply(pod) => {
                if let Some(t) = &mut self.relist {
                    t.apply(&pod);
                }
                false
            }
            Event::InitDone => {
                if let Some(mut fresh) = self.relist.take() {
                    let mut t = self.write();
                    fresh.watched = std::mem::take(&mut t.watched);
                    *t = fresh;
                }
                true
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PodTable> {
        self.cache.table.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: Option<&str>, gpus: u32) -> CachedPod {
        let mut spec = json!({"containers": [{"resources": {"requests": {"nvidia.com/gpu": gpus.to_string()}}}],
                              "nodeSelector": {"nvidia.com/gpu.product": "A100"}});
        if gpus == 0 {
            spec["containers"] = json!([{"resources": {"requests": {"cpu": "1"}}}]);
        }
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let mut p: CachedPod =
            serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})).unwrap();
        p.trim();
        p
    }

    fn find<'a>(t: &'a PodTable, name: &str) -> (usize, &'a HotPod) {
        let i = (0..t.len()).find(|&i| &*t.cold(i).name == name).expect("cached");
        (i, &t.hot()[i])
    }

    #[test]
    fn keeps_ids_requests_and_the_selector_of_unscheduled_pods() {
        let cache = PodCache::default();
        let mut w = PodWriter::new(cache.clone());
        assert!(w.event(Event::Apply(pod("ml", "a", None, 2))));
        assert!(w.event(Event::Apply(pod("ml", "b", Some("n1"), 1))));
        let t = cache.read();
        let gpu = t.resources.id("nvidia.com/gpu");
        let (a, hot) = find(&t, "a");
        assert_eq!((t.count(a, gpu), hot.node), (2, HotPod::UNSCHEDULED));
        assert_eq!(t.cold(a).selects("nvidia.com/gpu.product"), Some("A100"));
        let (b, hot) = find(&t, "b");
        assert_eq!(t.count(b, gpu), 1);
        assert_eq!(t.nodes.name(hot.node), "n1");
        assert_eq!(
            t.cold(b).selects("nvidia.com/gpu.product"),
            None,
            "a scheduled pod's selector is not kept"
        );
        assert_eq!(t.count(b, t.resources.id("amd.com/gpu")), 0);
    }

    #[test]
    fn a_pod_asking_for_two_resources_counts_each() {
        let cache = PodCache::default();
        let mut w = PodWriter::new(cache.clone());
        let mut p: CachedPod = serde_json::from_value(json!({"metadata": {"namespace": "ml", "name": "x"},
            "spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": "2", "rdma/hca": "1"}}}]}}))
        .unwrap();
        p.trim();
        w.event(Event::Apply(p));
        let t = cache.read();
        assert_eq!(t.count(0, t.resources.id("nvidia.com/gpu")), 2);
        assert_eq!(t.count(0, t.resources.id("rdma/hca")), 1);
    }

    #[test]
    fn deleting_keeps_the_index_of_the_pod_moved_into_the_gap() {
        let cache = PodCache::default();
        let mut w = PodWriter::new(cache.clone());
        for name in ["a", "b", "c"] {
            w.event(Event::Apply(pod("ml", name, Some("n1"), 1)));
        }
        w.event(Event::Delete(pod("ml", "a", Some("n1"), 1)));
        // "c" moved into the first place; updating and deleting it must find it there.
        w.event(Event::Apply(pod("ml", "c", Some("n2"), 1)));
        let t = cache.read();
        assert_eq!(t.len(), 2);
        assert_eq!(t.nodes.name(find(&t, "c").1.node), "n2");
        drop(t);
        w.event(Event::Delete(pod("ml", "c", Some("n2"), 1)));
        let t = cache.read();
        assert_eq!((t.len(), &*t.cold(0).name), (1, "b"));
    }

    #[test]
    fn cpu_pods_outside_tenant_namespaces_trigger_nothing() {
        let cache = PodCache::default();
        let mut w = PodWriter::new(cache.clone());
        assert!(!w.event(Event::Apply(pod("ml", "svc", Some("n1"), 0))));
        assert!(!w.event(Event::Delete(pod("ml", "svc", Some("n1"), 0))));
        cache.watch_namespaces("p", vec!["acme".into()]);
        assert!(w.event(Event::Apply(pod("acme", "job", Some("n1"), 0))));
        assert!(w.event(Event::Delete(pod("acme", "job", Some("n1"), 0))));
        assert!(cache.is_empty());
        // A pod that stops asking for a GPU still mattered (it held one before).
        w.event(Event::Apply(pod("ml", "x", Some("n1"), 1)));
        assert!(w.event(Event::Apply(pod("ml", "x", Some("n1"), 0))));
    }

    #[test]
    fn a_relist_replaces_the_table_when_complete() {
        let cache = PodCache::default();
        let mut w = PodWriter::new(cache.clone());
        w.event(Event::Apply(pod("ml", "gone", Some("n1"), 1)));
        cache.watch_namespaces("p", vec!["acme".into()]);
        w.event(Event::Init);
        w.event(Event::InitApply(pod("ml", "kept", Some("n2"), 1)));
        assert_eq!(cache.len(), 1);
        assert_eq!(
            &*cache.read().cold(0).name,
            "gone",
            "the old list stays until the new one is whole"
        );
        assert!(w.event(Event::InitDone));
        let t = cache.read();
        assert_eq!((t.len(), &*t.cold(0).name), (1, "kept"));
        assert_eq!(t.nodes.id("n1"), None, "names start afresh");
        assert!(t.watched.contains_key("p"), "the watched namespaces survive");
    }
}
