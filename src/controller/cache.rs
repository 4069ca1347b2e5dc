//! The controller's caches: one reflector per kind, trimmed to what sublet reads (pods decode straight into
//! the compact [`CachedPod`]).
//!
//! Every replica keeps them warm (leadership gates writes, not reads). Nodes keep their labels, sublet's
//! annotations, taints, readiness and allocatable resources; pods keep their place, extended-resource
//! requests, phase and sublet's annotation. Images, managed fields and the rest are dropped as objects
//! arrive, so 100,000 pods fit in a small heap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, NodeStatus};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;

use super::slim::CachedPod;
use crate::api::{GpuLease, TenantPool};

/// The stores the controller reads.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Store<Node>,
    pub pods: Store<CachedPod>,
    pub pools: Store<TenantPool>,
    pub leases: Store<GpuLease>,
    pub namespaces: Store<Namespace>,
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
        );
        let (pods, w) = reflector::store();
        // Finished pods hold no GPU and no place on a node.
        let pod_cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        spawn(
            watch(Api::<CachedPod>::all(client.clone()), pod_cfg, CachedPod::trim, w),
            &changed,
            &synced,
        );
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
        );
        let (namespaces, w) = reflector::store();
        let ns = Api::<Namespace>::all(client.clone());
        spawn(
            watch(ns, watcher::Config::default(), trim_namespace, w),
            &changed,
            &synced,
        );
        Self {
            nodes,
            pods,
            pools,
            leases,
            namespaces,
            changed,
            synced,
        }
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
            + self.pods.state().len()
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

fn spawn<K: Send + 'static>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
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
                Ok(watcher::Event::InitDone) if !listed => {
                    listed = true;
                    synced.fetch_add(1, Ordering::AcqRel);
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "watch failed; retrying with backoff"),
            }
            changed.notify_one();
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
}
