//! sublet's own writes, read back before their watch events arrive.
//!
//! Each kind has its own watch, so the caches can disagree for a moment: a lease's status saying it was
//! bound can arrive before the node's label that bound it. A pass planning from that view would see a bound
//! lease with no node and call it released. Every node and lease sublet writes is therefore kept here, as
//! the API returned it, until the watch delivers that same version (or lists again, or the object goes);
//! passes read the caches through [`Written::overlay`].
//!
//! A watch event can also beat the write's own response. The last few versions each object's watch applied
//! are kept, so a write whose version the cache already holds is not kept at all.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::Resource;

type Key = (Option<String>, String);

/// How many applied versions are remembered per object.
const RECENT: usize = 4;

/// A kept write older than this is dropped: a watch that neither delivers it nor lists again within it is
/// broken, and its cache is then the better guess.
const KEEP_AT_MOST: Duration = Duration::from_secs(30);

pub struct Written<K> {
    inner: Arc<Mutex<Inner<K>>>,
}

impl<K> Clone for Written<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> Default for Written<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                pending: HashMap::new(),
                applied: HashMap::new(),
            })),
        }
    }
}

struct Inner<K> {
    /// Writes whose version the cache does not show yet, by name, then namespace (looked up by `&str`, so
    /// laying them over a cache of thousands allocates nothing).
    pending: HashMap<String, Vec<Kept<K>>>,
    /// The versions the watch applied last, per object.
    applied: HashMap<Key, VecDeque<String>>,
}

struct Kept<K> {
    namespace: Option<String>,
    obj: Arc<K>,
    at: Instant,
}

fn key<K: Resource>(obj: &K) -> Key {
    let m = obj.meta();
    (m.namespace.clone(), m.name.clone().unwrap_or_default())
}

fn name_of<K: Resource>(obj: &K) -> &str {
    obj.meta().name.as_deref().unwrap_or("")
}

impl<K: Resource> Inner<K> {
    fn kept(&self, obj: &K) -> Option<&Kept<K>> {
        let namespace = &obj.meta().namespace;
        self.pending
            .get(name_of(obj))?
            .iter()
            .find(|k| &k.namespace == namespace)
    }

    fn forget(&mut self, obj: &K) {
        let name = name_of(obj);
        if let Some(list) = self.pending.get_mut(name) {
            list.retain(|k| k.namespace != obj.meta().namespace);
            if list.is_empty() {
                self.pending.remove(name);
            }
        }
    }

    fn expire(&mut self) {
        self.pending.retain(|_, list| {
            list.retain(|k| k.at.elapsed() < KEEP_AT_MOST);
            !list.is_empty()
        });
    }
}

impl<K: Resource> Written<K> {
    fn lock(&self) -> MutexGuard<'_, Inner<K>> {
        // A holder that panicked mid-change at worst kept a write too long or dropped it early; the watch and
        // the expiry put either right.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `obj`, as an API call returned it, until the cache holds its version.
    pub fn record(&self, obj: K) {
        let Some(version) = obj.meta().resource_version.clone() else {
            return;
        };
        let mut inner = self.lock();
        if inner
            .applied
            .get(&key(&obj))
            .is_some_and(|seen| seen.contains(&version))
        {
            return;
        }
        inner.forget(&obj);
        let kept = Kept {
            namespace: obj.meta().namespace.clone(),
            obj: Arc::new(obj),
            at: Instant::now(),
        };
        let name = name_of(&*kept.obj).to_string();
        inner.pending.entry(name).or_default().push(kept);
    }

    /// The watch applied `obj` to the cache.
    pub fn applied(&self, obj: &K) {
        let Some(version) = obj.meta().resource_version.clone() else {
            return;
        };
        let mut inner = self.lock();
        if inner
            .kept(obj)
            .is_some_and(|k| k.obj.meta().resource_version.as_deref() == Some(version.as_str()))
        {
            inner.forget(obj);
        }
        let seen = inner.applied.entry(key(obj)).or_default();
        if seen.len() == RECENT {
            seen.pop_front();
        }
        seen.push_back(version);
    }

    /// The watch saw `obj` deleted.
    pub fn deleted(&self, obj: &K) {
        let mut inner = self.lock();
        inner.forget(obj);
        inner.applied.remove(&key(obj));
    }

    /// The watch listed again: the cache now holds what the list returned, which includes every write made
    /// before it.
    pub fn relisted(&self) {
        self.lock().pending.clear();
    }

    /// How many writes the cache does not show yet.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().pending.values().map(Vec::len).sum()
    }

    /// `cached`, the cache's copy of an object, or sublet's own later write of it.
    pub fn latest(&self, cached: Arc<K>) -> Arc<K> {
        let mut inner = self.lock();
        if inner.pending.is_empty() {
            return cached;
        }
        inner.expire();
        match inner.kept(&cached) {
            Some(k) => k.obj.clone(),
            None => cached,
        }
    }

    /// The cache's objects, each replaced by sublet's own later write where there is one.
    pub fn overlay(&self, mut cached: Vec<Arc<K>>) -> Vec<Arc<K>> {
        let mut inner = self.lock();
        if inner.pending.is_empty() {
            return cached;
        }
        inner.expire();
        for obj in &mut cached {
            if let Some(k) = inner.kept(obj) {
                *obj = k.obj.clone();
            }
        }
        cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(name: &str, version: &str, state: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "resourceVersion": version, "labels": {"sublet.dev/state": state}}
        }))
        .unwrap()
    }

    fn states(nodes: &[Arc<Node>]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| n.metadata.labels.as_ref().unwrap()["sublet.dev/state"].clone())
            .collect()
    }

    #[test]
    fn a_write_shows_until_the_watch_delivers_it() {
        let w = Written::default();
        let cache = vec![Arc::new(node("a", "1", "lent")), Arc::new(node("b", "2", "lent"))];
        w.record(node("a", "3", "leased"));
        assert_eq!(states(&w.overlay(cache.clone())), ["leased", "lent"]);
        // Another object's event changes nothing.
        w.applied(&node("b", "4", "lent"));
        assert_eq!(w.pending(), 1);
        // The write's own event: the cache has it now, and what follows it is the cache's word.
        w.applied(&node("a", "3", "leased"));
        assert_eq!(w.pending(), 0);
        let later = vec![Arc::new(node("a", "5", "reclaiming")), cache[1].clone()];
        assert_eq!(states(&w.overlay(later)), ["reclaiming", "lent"]);
    }

    #[test]
    fn a_write_the_watch_delivered_first_is_not_kept() {
        let w = Written::default();
        w.applied(&node("a", "3", "leased"));
        w.applied(&node("a", "4", "reclaiming"));
        w.record(node("a", "3", "leased"));
        assert_eq!(w.pending(), 0);
        let cache = vec![Arc::new(node("a", "4", "reclaiming"))];
        assert_eq!(states(&w.overlay(cache)), ["reclaiming"]);
    }

    #[test]
    fn a_new_list_or_a_deletion_ends_what_was_kept() {
        let w = Written::default();
        w.record(node("a", "3", "leased"));
        w.record(node("b", "4", "leased"));
        w.deleted(&node("a", "3", "leased"));
        assert_eq!(w.pending(), 1);
        let cached = Arc::new(node("b", "2", "lent"));
        assert_eq!(states(&[w.latest(cached.clone())]), ["leased"]);
        w.relisted();
        assert_eq!(w.pending(), 0);
        assert_eq!(states(&[w.latest(cached)]), ["lent"]);
    }
}
