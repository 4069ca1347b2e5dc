//! The object store: every object of every kind, one global resourceVersion counter (as etcd's revision), and
//! the event history that watches replay and follow.
//!
//! ```text
//!   write(res, ns, name, Write) ──lock──▶ rv += 1 ─▶ Stored{json bytes, labels, fields} ─▶ map
//!                                                 └▶ Event ─▶ history (bounded) ─▶ broadcast ─▶ watchers
//! ```
//!
//! Objects are kept serialized (`Bytes`) with only what selectors and garbage collection need decoded beside
//! them; a list or a watch event shares those bytes, so fan-out to many watchers copies no object. The store
//! knows nothing of kinds' semantics: preconditions are resourceVersions, the rest is the caller's.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use super::selector::selectable_fields;

/// One stored object: its wire form and what selectors and the garbage collector read without decoding it.
#[derive(Debug)]
pub struct Stored {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub uid: Box<str>,
    pub rv: u64,
    pub labels: Box<[(Box<str>, Box<str>)]>,
    pub fields: Box<[(&'static str, Box<str>)]>,
    /// uids of ownerReferences.
    pub owners: Box<[Box<str>]>,
    pub json: Bytes,
}

impl Stored {
    /// The object decoded; always valid JSON because the store serialized it.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    pub fn field(&self, field: &str) -> Option<&str> {
        match field {
            "metadata.name" => Some(&self.name),
            "metadata.namespace" => Some(&self.namespace),
            _ => self.fields.iter().find(|(f, _)| *f == field).map(|(_, v)| &**v),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change. `obj.rv` is the change's resourceVersion (for a deletion too, as the real server reports it).
#[derive(Debug)]
pub struct Event {
    pub res: Arc<str>,
    pub kind: EventType,
    pub obj: Arc<Stored>,
    pub prev: Option<Arc<Stored>>,
}

/// A write to one object.
pub(crate) enum Write {
    Create(Value),
    /// Replace; fails with `Conflict` unless the live resourceVersion is `expect_rv` (when given).
    Update {
        value: Value,
        expect_rv: Option<u64>,
    },
    Delete {
        expect_rv: Option<u64>,
        expect_uid: Option<String>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StoreError {
    NotFound,
    Exists,
    Conflict,
}

/// The place of an object: store key of its resource, namespace ("" if cluster-scoped), name.
pub(crate) type ObjRef = (Arc<str>, String, String);

/// Events after a resourceVersion and a receiver for the ones to come.
pub(crate) type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

type Objects = BTreeMap<(Box<str>, Box<str>), Arc<Stored>>;

struct Inner {
    rv: u64,
    /// Events up to this resourceVersion have left the history: watches from before it get 410 Gone.
    compacted: u64,
    resources: HashMap<Arc<str>, Objects>,
    res_names: HashMap<Arc<str>, ()>,
    dependents: HashMap<Box<str>, HashSet<ObjRef>>,
    uids: HashSet<Box<str>>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
}

/// A page of a list.
pub(crate) struct Page {
    pub items: Vec<Arc<Stored>>,
    pub rv: u64,
    /// The last item's (namespace, name) when more items follow.
    pub more_after: Option<(String, String)>,
}

pub(crate) struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Store {
    /// A store keeping the last `history_cap` events for watches that resume from a resourceVersion.
    pub(crate) fn new(history_cap: usize) -> Store {
        let (tx, _) = broadcast::channel(1 << 16);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                compacted: 1,
                resources: HashMap::new(),
                res_names: HashMap::new(),
                dependents: HashMap::new(),
                uids: HashSet::new(),
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest resourceVersion a watch may still start from.
    pub(crate) fn compacted_rv(&self) -> u64 {
        self.lock().compacted
    }

    pub(crate) fn get(&self, res: &str, ns: &str, name: &str) -> Option<Arc<Stored>> {
        let inner = self.lock();
        inner
            .resources
            .get(res)?
            .get(&(Box::from(ns), Box::from(name)))
            .cloned()
    }

    pub(crate) fn uid_exists(&self, uid: &str) -> bool {
        self.lock().uids.contains(uid)
    }

    /// Objects whose ownerReferences name `uid`.
    pub(crate) fn dependents(&self, uid: &str) -> Vec<ObjRef> {
        self.lock()
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object in a namespace, of every namespaced resource.
    pub(crate) fn in_namespace(&self, ns: &str) -> Vec<ObjRef> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (res, objects) in &inner.resources {
            let start = (Box::from(ns), Box::from(""));
            for ((ons, name), _) in objects.range(start..) {
                if &**ons != ns {
                    break;
                }
                out.push((res.clone(), ns.to_string(), name.to_string()));
            }
        }
        out
    }

    /// Objects of a resource (in one namespace if given) after `after`, those `keep` accepts, up to `limit`.
    pub(crate) fn list(
        &self,
        res: &str,
        ns: Option<&str>,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
        keep: impl Fn(&Stored) -> bool,
    ) -> Page {
        let inner = self.lock();
        let rv = inner.rv;
        let Some(objects) = inner.resources.get(res) else {
            return Page {
                items: vec![],
                rv,
                more_after: None,
            };
        };
        let lower = match (after, ns) {
            (Some((ans, aname)), _) => Bound::Excluded((Box::from(ans), Box::from(aname))),
            (None, Some(ns)) => Bound::Included((Box::from(ns), Box::from(""))),
            (None, None) => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut more_after = None;
        for ((ons, _), obj) in objects.range((lower, Bound::Unbounded)) {
            if ns.is_some_and(|ns| ns != &**ons) {
                break;
            }
            if !keep(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let last: &Arc<Stored> = items.last().expect("limit is at least 1");
                more_after = Some((last.namespace.to_string(), last.name.to_string()));
                break;
            }
            items.push(obj.clone());
        }
        Page { items, rv, more_after }
    }

    /// Applies one write atomically, assigning the next resourceVersion.
    pub(crate) fn write(&self, res: &str, ns: &str, name: &str, write: Write) -> Result<Arc<Stored>, StoreError> {
        let mut inner = self.lock();
        let res = inner.intern(res);
        let key = (Box::from(ns), Box::from(name));
        let prev = inner.resources.get(&res).and_then(|m| m.get(&key)).cloned();
        let rv = inner.rv + 1;
        let (kind, stored) = written(write, prev.as_deref(), &res, ns, name, rv)?;
        inner.rv = rv;
        let at: ObjRef = (res.clone(), ns.to_string(), name.to_string());
        if let Some(prev) = &prev {
            inner.unindex(&at, prev);
        }
        let objects = inner.resources.entry(res.clone()).or_default();
        if kind == EventType::Deleted {
            objects.remove(&key);
        } else {
            objects.insert(key, stored.clone());
            inner.index(at, &stored);
        }
        let event = Arc::new(Event {
            res,
            kind,
            obj: stored.clone(),
            prev,
        });
        inner.remember(event.clone());
        // No receivers is normal (no watch open); the event stays in the history.
        let _ = self.tx.send(event);
        Ok(stored)
    }

    /// Events after `from` (when given) and a receiver for the ones to come, taken under one lock so none is
    /// lost or doubled. Err(compacted rv) when `from` is older than the history.
    pub(crate) fn subscribe(&self, from: Option<u64>) -> Result<Subscription, u64> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let Some(from) = from else { return Ok((vec![], rx)) };
        if from < inner.compacted {
            return Err(inner.compacted);
        }
        let start = inner.history.partition_point(|e| e.obj.rv <= from);
        Ok((inner.history.range(start..).cloned().collect(), rx))
    }

    /// The objects of a resource now (those `keep` accepts), the resourceVersion they are at, and a receiver
    /// for every later event, taken under one lock.
    pub(crate) fn snapshot_and_subscribe(
        &self,
        res: &str,
        ns: Option<&str>,
        keep: impl Fn(&Stored) -> bool,
    ) -> (Vec<Arc<Stored>>, u64, broadcast::Receiver<Arc<Event>>) {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let items = inner
            .resources
            .get(res)
            .map(|objects| {
                objects
                    .values()
                    .filter(|s| ns.is_none_or(|ns| ns == &*s.namespace) && keep(s))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv, rx)
    }

    /// Drops history so that watches from before the current resourceVersion get 410 Gone (for tests).
    pub(crate) fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.compacted = inner.rv;
    }
}

impl Inner {
    /// The one shared copy of a resource's store key.
    fn intern(&mut self, res: &str) -> Arc<str> {
        match self.res_names.get_key_value(res) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(res);
                self.res_names.insert(k.clone(), ());
                k
            }
        }
    }

    /// Drops the owner and UID index entries of `prev`, the object that was at `at`.
    fn unindex(&mut self, at: &ObjRef, prev: &Stored) {
        for owner in prev.owners.iter() {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(at);
                if set.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        self.uids.remove(&prev.uid);
    }

    /// Adds the owner and UID index entries of `stored`, the object now at `at`.
    fn index(&mut self, at: ObjRef, stored: &Stored) {
        for owner in stored.owners.iter() {
            self.dependents.entry(owner.clone()).or_default().insert(at.clone());
        }
        self.uids.insert(stored.uid.clone());
    }

    /// Appends an event to the history, compacting the oldest past the cap.
    fn remember(&mut self, event: Arc<Event>) {
        self.history.push_back(event);
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.obj.rv;
            }
        }
    }
}

/// The event kind and the object a write leaves at (`res`, `ns`, `name`) with resourceVersion `rv`, given the
/// object there before (`prev`); the write's preconditions are checked against `prev`.
fn written(
    write: Write,
    prev: Option<&Stored>,
    res: &str,
    ns: &str,
    name: &str,
    rv: u64,
) -> Result<(EventType, Arc<Stored>), StoreError> {
    Ok(match write {
        Write::Create(value) => {
            if prev.is_some() {
                return Err(StoreError::Exists);
            }
            (EventType::Added, Arc::new(encode(res, ns, name, value, rv)))
        }
        Write::Update { value, expect_rv } => {
            let Some(prev) = prev else {
                return Err(StoreError::NotFound);
            };
            if expect_rv.is_some_and(|e| e != prev.rv) {
                return Err(StoreError::Conflict);
            }
            (EventType::Modified, Arc::new(encode(res, ns, name, value, rv)))
        }
        Write::Delete { expect_rv, expect_uid } => {
            let Some(prev) = prev else {
                return Err(StoreError::NotFound);
            };
            if expect_rv.is_some_and(|e| e != prev.rv) || expect_uid.is_some_and(|u| *u != *prev.uid) {
                return Err(StoreError::Conflict);
            }
            let mut value = prev.value();
            value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            (EventType::Deleted, Arc::new(encode(res, ns, name, value, rv)))
        }
    })
}

fn encode(res: &str, ns: &str, name: &str, mut value: Value, rv: u64) -> Stored {
    value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    let meta = &value["metadata"];
    let labels = meta["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str().unwrap_or(""))))
                .collect()
        })
        .unwrap_or_default();
    let owners = meta["ownerReferences"]
        .as_array()
        .map(|refs| refs.iter().filter_map(|r| r["uid"].as_str()).map(Box::from).collect())
        .unwrap_or_default();
    let uid = Box::from(meta["uid"].as_str().unwrap_or(""));
    let fields = selectable_fields(res)
        .iter()
        .filter_map(|&f| {
            let mut v = &value;
            for seg in f.split('.') {
                v = &v[seg];
            }
            // `source` on core events is an object; its component is what the selector means.
            if let Some(c) = v.get("component") {
                v = c;
            }
            match v {
                Value::String(s) => Some((f, Box::from(s.as_str()))),
                Value::Bool(b) => Some((f, Box::from(b.to_string().as_str()))),
                Value::Number(n) => Some((f, Box::from(n.to_string().as_str()))),
                _ => None,
            }
        })
        .collect();
    let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
    Stored {
        namespace: Box::from(ns),
        name: Box::from(name),
        uid,
        rv,
        labels,
        fields,
        owners,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "a", "uid": name, "labels": {"app": "x"}}, "spec": {"nodeName": node}})
    }

    #[test]
    fn versions_grow_and_preconditions_hold() {
        let store = Store::new(10);
        let a = store.write("pods", "a", "p", Write::Create(pod("p", "n1"))).unwrap();
        assert_eq!(
            store
                .write("pods", "a", "p", Write::Create(pod("p", "n1")))
                .unwrap_err(),
            StoreError::Exists
        );
        let stale = Write::Update {
            value: pod("p", "n2"),
            expect_rv: Some(a.rv - 1),
        };
        assert_eq!(store.write("pods", "a", "p", stale).unwrap_err(), StoreError::Conflict);
        let b = store
            .write(
                "pods",
                "a",
                "p",
                Write::Update {
                    value: pod("p", "n2"),
                    expect_rv: Some(a.rv),
                },
            )
            .unwrap();
        assert_eq!(b.rv, a.rv + 1);
        assert_eq!(b.field("spec.nodeName"), Some("n2"));
        assert_eq!(b.value()["metadata"]["resourceVersion"], json!(b.rv.to_string()));
    }

    #[test]
    fn pages_and_history_window() {
        let store = Store::new(3);
        for i in 0..5 {
            store
                .write("pods", "a", &format!("p{i}"), Write::Create(pod(&format!("p{i}"), "n")))
                .unwrap();
        }
        let page = store.list("pods", Some("a"), None, Some(2), |_| true);
        assert_eq!(page.items.len(), 2);
        let (ns, name) = page.more_after.unwrap();
        let rest = store.list("pods", Some("a"), Some((&ns, &name)), None, |_| true);
        assert_eq!(
            rest.items.iter().map(|s| &*s.name).collect::<Vec<_>>(),
            ["p2", "p3", "p4"]
        );
        let rv = store.current_rv();
        assert!(store.subscribe(Some(rv - 3)).is_ok());
        assert_eq!(store.subscribe(Some(rv - 4)).unwrap_err(), rv - 3);
        let (backlog, _) = store.subscribe(Some(rv - 2)).unwrap();
        assert_eq!(backlog.len(), 2);
    }
}
