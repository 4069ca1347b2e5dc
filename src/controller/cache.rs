//! The controller's caches: one reflector per kind, trimmed to what sublet reads; pods decode straight into
//! the compact [`CachedPod`] and are kept in the indexed [`PodCache`].
//!
//! Every replica keeps them warm (leadership gates writes, not reads). Nodes keep their labels, sublet's
//! annotations, taints, readiness and allocatable resources; pods keep their place, extended-resource
//! requests, phase and sublet's annotation. Images, managed fields and the rest are dropped as objects
//! arrive, so 100,000 pods fit in a small heap.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, NodeStatus};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;

use super::cached_pod::CachedPod;
use super::pods::{PodCache, PodWriter};
use super::written::Written;
use crate::api::{GpuLease, TenantPool};

/// The stores the controller reads.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Store<Node>,
    pub pods: PodCache,
    pub pools: Store<TenantPool>,
    pub leases: Store<GpuLease>,
    pub namespaces: Store<Namespace>,
    /// Node and lease writes of sublet's that the caches do not show yet.
    written_nodes: Written<Node>,
    written_leases: Written<GpuLease>,
    /// Signalled on every change to any of them.
    pub changed: Arc<Notify>,
    /// How many reflectors have listed once.
    synced: Arc<AtomicUsize>,
}

const KINDS: usize = 5;

impl Caches {
    /// Starts the reflectors on `client`; they run until the process ends.
    pub fn start(client: &Client) -> Self {
        let changed = Arc::new(Notify::new());
        let synced = Arc::new(AtomicUsize::new(0));
        let written_nodes = Written::default();
        let written_leases = Written::default();
        let (nodes, w) = reflector::store();
        spawn(
            watch(
                Api::<Node>::all(client.clone()),
                watcher::Config::default(),
                trim_node,
                w,
            ),
            &changed,
            &synced,
            node_fingerprint,
            Some(written_nodes.clone()),
        );
        let pods = PodCache::default();
        // Finished pods hold no GPU and no place on a node.
        let pod_cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let pod_events = watcher(Api::<CachedPod>::all(client.clone()), pod_cfg)
            .default_backoff()
            .modify(CachedPod::trim);
        spawn_pods(pod_events, PodWriter::new(pods.clone()), &changed, &synced);
        let (pools, w) = reflector::store();
        spawn(
            watch(
                Api::<TenantPool>::all(client.clone()),
                watcher::Config::default(),
                trim_meta,
                w,
            ),
            &changed,
            &synced,
            pool_fingerprint,
            None,
        );
        let (leases, w) = reflector::store();
        spawn(
            watch(
                Api::<GpuLease>::all(client.clone()),
                watcher::Config::default(),
                trim_meta,
                w,
            ),
            &changed,
            &synced,
            lease_fingerprint,
            Some(written_leases.clone()),
        );
        let (namespaces, w) = reflector::store();
        let ns = Api::<Namespace>::all(client.clone());
        spawn(
            watch(ns, watcher::Config::default(), trim_namespace, w),
            &changed,
            &synced,
            |ns: &Namespace| fingerprint(&ns.metadata.labels),
            None,
        );
        Self {
            nodes,
            pods,
            pools,
            leases,
            namespaces,
            written_nodes,
            written_leases,
            changed,
            synced,
        }
    }

    /// The cached nodes, with sublet's own writes the node watch has not delivered yet.
    pub fn nodes_now(&self) -> Vec<Arc<Node>> {
        self.written_nodes.overlay(self.nodes.state())
    }

    /// One cached node, or sublet's own later write of it.
    pub fn node_now(&self, name: &str) -> Option<Arc<Node>> {
        let cached = self.nodes.get(&reflector::ObjectRef::new(name))?;
        Some(self.written_nodes.latest(cached))
    }

    /// The cached leases, with sublet's own status writes the lease watch has not delivered yet.
    pub fn leases_now(&self) -> Vec<Arc<GpuLease>> {
        self.written_leases.overlay(self.leases.state())
    }

    /// A node as the API returned it to a write (or a read after a conflict) of sublet's.
    pub fn wrote_node(&self, mut node: Node) {
        trim_node(&mut node);
        self.written_nodes.record(node);
    }

    /// A lease as a status write of sublet's returned it.
    pub fn wrote_lease(&self, mut lease: GpuLease) {
        trim_meta(&mut lease);
        self.written_leases.record(lease);
    }

    /// Whether every reflector has listed once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= KINDS
    }

    /// Waits until every reflector has listed once.
    pub async fn wait_synced(&self) {
        while !self.synced() {
            let notified = self.changed.notified();
            if self.synced() {
                break;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), notified).await;
        }
    }

    /// Objects held, for the memory figure.
    pub fn len(&self) -> usize {
        self.nodes.state().len()
            + self.pods.len()
            + self.pools.state().len()
            + self.leases.state().len()
            + self.namespaces.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    trim: fn(&mut K),
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    watcher(api, cfg).default_backoff().modify(trim).reflect(writer)
}

/// Runs a reflector's stream, waking the passes only when an object changed in what a plan reads: its
/// `fingerprint` (a hash of those fields) differs from the one last seen, or it came or went. The echo
/// of sublet's own status writes, and node heartbeats, wake nothing. `written` learns which versions the
/// cache holds.
fn spawn<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    changed: &Arc<Notify>,
    synced: &Arc<AtomicUsize>,
    fingerprint: fn(&K) -> u64,
    written: Option<Written<K>>,
) where
    K: Resource + Send + Sync + 'static,
{
    let changed = changed.clone();
    let synced = synced.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut listed = false;
        let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
        let mut relist: HashMap<(Option<String>, String), u64> = HashMap::new();
        let key = |obj: &K| {
            (
                obj.meta().namespace.clone(),
                obj.meta().name.clone().unwrap_or_default(),
            )
        };
        while let Some(event) = stream.next().await {
            let wake = match event {
                Ok(watcher::Event::Apply(obj)) => {
                    if let Some(w) = &written {
                        w.applied(&obj);
                    }
                    let print = fingerprint(&obj);
                    seen.insert(key(&obj), print) != Some(print)
                }
                Ok(watcher::Event::Delete(obj)) => {
                    if let Some(w) = &written {
                        w.deleted(&obj);
                    }
                    seen.remove(&key(&obj)).is_some()
                }
                Ok(watcher::Event::Init) => {
                    relist.clear();
                    false
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(w) = &written {
                        w.applied(&obj);
                    }
                    relist.insert(key(&obj), fingerprint(&obj));
                    false
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(w) = &written {
                        w.relisted();
                    }
                    seen = std::mem::take(&mut relist);
                    if !listed {
                        listed = true;
                        synced.fetch_add(1, Ordering::AcqRel);
                    }
                    true
                }
                Err(err) => {
                    tracing::warn!(%err, "watch failed; retrying with backoff");
                    false
                }
            };
            if wake {
                changed.notify_one();
            }
        }
    });
}

/// A hash of `parts`.
fn fingerprint(parts: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// What a plan reads of a node: labels, sublet's annotations, taints, cordon, readiness (not its
/// heartbeat times) and allocatable resources.
fn node_fingerprint(node: &Node) -> u64 {
    let spec = node.spec.as_ref();
    let taints: Vec<(&str, Option<&str>, &str)> = spec
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .map(|t| (t.key.as_str(), t.value.as_deref(), t.effect.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let allocatable: Vec<(&String, &String)> = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(|a| a.iter().map(|(k, q)| (k, &q.0)).collect())
        .unwrap_or_default();
    fingerprint(&(
        &node.metadata.labels,
        &node.metadata.annotations,
        taints,
        spec.and_then(|s| s.unschedulable),
        node_ready(node),
        allocatable,
    ))
}

/// What a plan reads of a pool: its spec (by generation), deletion, finalizers and labels; never its status,
/// which sublet writes.
fn pool_fingerprint(pool: &TenantPool) -> u64 {
    let m = &pool.metadata;
    fingerprint(&(
        m.generation,
        m.deletion_timestamp.as_ref().map(|t| t.0.as_second()),
        &m.finalizers,
        &m.labels,
    ))
}

/// What a plan reads of a lease: its spec (by generation), deletion, and the phase and binding time in its
/// status; the ledger fields sublet writes every so often are left out.
fn lease_fingerprint(lease: &GpuLease) -> u64 {
    let m = &lease.metadata;
    let status = lease.status.as_ref();
    fingerprint(&(
        m.generation,
        m.deletion_timestamp.as_ref().map(|t| t.0.as_second()),
        status.map(|s| s.phase),
        status.and_then(|s| s.bound_at.as_ref()).map(|t| t.0.as_second()),
    ))
}

/// Feeds the pod cache; only changes that can matter to a plan wake the passes.
fn spawn_pods(
    stream: impl Stream<Item = Result<watcher::Event<CachedPod>, watcher::Error>> + Send + 'static,
    mut writer: PodWriter,
    changed: &Arc<Notify>,
    synced: &Arc<AtomicUsize>,
) {
    let changed = changed.clone();
    let synced = synced.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut listed = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    if writer.event(event) {
                        changed.notify_one();
                    }
                    if done && !listed {
                        listed = true;
                        synced.fetch_add(1, Ordering::AcqRel);
                        changed.notify_one();
                    }
                }
                Err(err) => tracing::warn!(%err, "pod watch failed; retrying with backoff"),
            }
        }
    });
}

/// Keeps only `sublet.dev/` annotations.
fn keep_sublet_annotations(annotations: &mut Option<BTreeMap<String, String>>) {
    if let Some(a) = annotations {
        a.retain(|k, _| k.starts_with("sublet.dev/"));
        if a.is_empty() {
            *annotations = None;
        }
    }
}

fn trim_meta<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

fn trim_namespace(ns: &mut Namespace) {
    let meta = &mut ns.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    ns.spec = None;
    ns.status = None;
}

fn trim_node(node: &mut Node) {
    let meta = &mut node.metadata;
    meta.managed_fields = None;
    keep_sublet_annotations(&mut meta.annotations);
    meta.owner_references = None;
    if let Some(spec) = &mut node.spec {
        spec.pod_cidr = None;
        spec.pod_cidrs = None;
        spec.provider_id = None;
        spec.config_source = None;
    }
    let status = node.status.take().unwrap_or_default();
    let ready: Option<Vec<NodeCondition>> = status
        .conditions
        .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect());
    node.status = Some(NodeStatus {
        allocatable: status.allocatable,
        conditions: ready,
        ..NodeStatus::default()
    });
}

/// Allocatable GPUs on a node.
pub fn node_gpus(node: &Node, resource: &str) -> u32 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get(resource))
        .and_then(|q| q.0.parse::<u32>().ok())
        .unwrap_or(0)
}

/// Whether a node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trimmed_node_keeps_readiness_taints_and_gpus() {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"nvidia.com/gpu.product": "A100"},
                         "annotations": {"sublet.dev/since": "x", "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "unschedulable": true, "podCIDR": "10.0.0.0/24"},
            "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "96"},
                       "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}],
                       "images": [{"names": ["a"], "sizeBytes": 1}]}
        }))
        .unwrap();
        trim_node(&mut node);
        assert_eq!(node_gpus(&node, "nvidia.com/gpu"), 8);
        assert!(node_ready(&node));
        assert_eq!(node.spec.as_ref().unwrap().taints.as_ref().unwrap().len(), 1);
        assert_eq!(node.spec.as_ref().unwrap().unschedulable, Some(true));
        assert!(node.status.as_ref().unwrap().images.is_none());
        assert_eq!(node.status.as_ref().unwrap().conditions.as_ref().unwrap().len(), 1);
        assert_eq!(node.metadata.annotations.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn node_heartbeats_wake_nothing_and_marks_do() {
        let node = |heartbeat: &str, state: &str, taint: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": "n1", "labels": {"sublet.dev/state": state}},
                "spec": {"taints": [{"key": taint, "effect": "NoSchedule"}]},
                "status": {"allocatable": {"nvidia.com/gpu": "8"},
                           "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}]}
            }))
            .unwrap()
        };
        let base = node_fingerprint(&node("2026-01-01T00:00:00Z", "lent", "sublet.dev/lent"));
        assert_eq!(
            base,
            node_fingerprint(&node("2026-01-01T00:00:10Z", "lent", "sublet.dev/lent"))
        );
        assert_ne!(
            base,
            node_fingerprint(&node("2026-01-01T00:00:00Z", "leased", "sublet.dev/lent"))
        );
        assert_ne!(
            base,
            node_fingerprint(&node("2026-01-01T00:00:00Z", "lent", "sublet.dev/lease"))
        );
    }

    #[test]
    fn sublets_own_status_writes_wake_nothing() {
        let pool = |generation: i64, lent: f64, deleting: bool| -> TenantPool {
            let mut v = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool",
                "metadata": {"name": "p", "generation": generation}, "spec": {},
                "status": {"lentGpuHours": lent}});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(v).unwrap()
        };
        let base = pool_fingerprint(&pool(1, 0.0, false));
        assert_eq!(base, pool_fingerprint(&pool(1, 5.0, false)));
        assert_ne!(base, pool_fingerprint(&pool(2, 0.0, false)));
        assert_ne!(base, pool_fingerprint(&pool(1, 0.0, true)));
        let lease = |phase: &str, cost: f64| -> GpuLease {
            serde_json::from_value(json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease",
                "metadata": {"name": "l", "namespace": "acme", "generation": 1}, "spec": {"pool": "p", "gpus": 8},
                "status": {"phase": phase, "cost": cost}}))
            .unwrap()
        };
        let base = lease_fingerprint(&lease("Bound", 1.0));
        assert_eq!(base, lease_fingerprint(&lease("Bound", 2.0)), "a ledger write");
        assert_ne!(base, lease_fingerprint(&lease("Reclaiming", 1.0)));
    }
}
