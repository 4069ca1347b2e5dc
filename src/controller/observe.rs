//! Observe: from the caches to one pool's [`Snapshot`].
//!
//! Pure over the stores' contents, so the same function serves every replica and the tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::ResourceExt;

use super::cache::{node_gpus, node_ready};
use super::slim::CachedPod;
use crate::api::keys::{
    DEADLINE_ANNOTATION, LEASE_LABEL, POOL_LABEL, RETURNED_ANNOTATION, SINCE_ANNOTATION, STATE_LABEL,
    TENANT_NAMESPACE_LABEL,
};
use crate::api::{GpuLease, TenantPool, selector};
use crate::policy::{
    LeaseView, Marks, NodeState, NodeView, PodPhase, PodView, PolicyError, Selector, Signals, Snapshot, SnapshotBuilder,
};

/// Since when each node has run no internal GPU pod, as this process has seen it. Not kept across restarts:
/// a restarted controller starts the idle clocks again, which can only delay lending, never hasten it.
#[derive(Default)]
pub struct IdleClocks {
    since: Mutex<HashMap<String, Timestamp>>,
}

impl IdleClocks {
    fn observe(&self, node: &str, busy: bool, now: Timestamp) -> Option<Timestamp> {
        let mut map = self.since.lock().expect("idle clock lock");
        if busy {
            map.remove(node);
            None
        } else {
            Some(*map.entry(node.to_string()).or_insert(now))
        }
    }
}

/// What observing a pool yields besides the snapshot.
pub struct Observed {
    pub snapshot: Snapshot,
    /// Tenant namespaces of this pool.
    pub tenant_namespaces: HashSet<String>,
}

fn time(s: Option<&String>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// The tenant namespace selector of a pool, with the default when it names none.
pub fn tenant_selector(pool: &TenantPool) -> Selector {
    match &pool.spec.tenant_namespace_selector {
        Some(sel) => selector(Some(sel)),
        None => Selector::from_labels([(TENANT_NAMESPACE_LABEL, "true")]),
    }
}

/// The cached objects a pass reads, taken from the stores once per pass.
pub struct World {
    pub nodes: Vec<Arc<Node>>,
    pub pods: Vec<Arc<CachedPod>>,
    pub leases: Vec<Arc<GpuLease>>,
    pub namespaces: Vec<Arc<Namespace>>,
}

/// Builds the snapshot of `pool` from the cached objects.
pub fn observe(
    pool: &TenantPool,
    world: &World,
    clocks: &IdleClocks,
    signals: Signals,
    now: Timestamp,
) -> Result<Observed, PolicyError> {
    let World {
        nodes,
        pods,
        leases,
        namespaces,
    } = world;
    let name = pool.name_any();
    let policy = pool.spec.to_policy(&name, pool.metadata.deletion_timestamp.is_some())?;
    let resource = pool.spec.gpu_resource_name.as_str();
    let tenant_sel = tenant_selector(pool);
    let empty = BTreeMap::new();
    let tenant_namespaces: HashSet<String> = namespaces
        .iter()
        .filter(|ns| tenant_sel.matches(ns.metadata.labels.as_ref().unwrap_or(&empty)))
        .map(|ns| ns.name_any())
        .collect();
    let mut b = SnapshotBuilder::new(Arc::new(policy), now);

    // Nodes: those with GPUs of the pool's resource, and any that carry this pool's marks.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut node_list: Vec<&Node> = Vec::new();
    for node in nodes {
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let ours = labels.get(POOL_LABEL).is_some_and(|p| *p == name);
        if node_gpus(node, resource) == 0 && !ours {
            continue;
        }
        by_name.insert(node.metadata.name.as_deref().unwrap_or(""), node_list.len());
        node_list.push(node);
    }
    // Pods: GPU pods, and tenant pods on nodes of the snapshot.
    let mut busy = vec![false; node_list.len()];
    let mut chosen: Vec<(&CachedPod, u32, Option<usize>, bool)> = Vec::new();
    for pod in pods {
        let node = pod.spec.node_name.as_deref().and_then(|n| by_name.get(n).copied());
        let gpus = pod.gpus(resource);
        let tenant = pod
            .metadata
            .namespace
            .as_ref()
            .is_some_and(|ns| tenant_namespaces.contains(ns));
        if gpus == 0 && !(tenant && node.is_some()) {
            continue;
        }
        if let (Some(n), false, true) = (node, tenant, gpus > 0) {
            busy[n] = true;
        }
        chosen.push((pod, gpus, node, tenant));
    }
    for (i, node) in node_list.iter().enumerate() {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
        let node_name = node.name_any();
        let marks = if labels.contains_key(POOL_LABEL) {
            Marks {
                pool: labels.get(POOL_LABEL).cloned(),
                state: labels
                    .get(STATE_LABEL)
                    .and_then(|s| NodeState::from_label(s))
                    .unwrap_or(NodeState::Lent),
                lease: labels.get(LEASE_LABEL).cloned(),
                since: time(ann.get(SINCE_ANNOTATION)),
                returned_at: time(ann.get(RETURNED_ANNOTATION)),
                deadline: time(ann.get(DEADLINE_ANNOTATION)),
            }
        } else {
            Marks {
                returned_at: time(ann.get(RETURNED_ANNOTATION)),
                ..Marks::default()
            }
        };
        let spec = node.spec.as_ref();
        b.node(NodeView {
            idle_since: clocks.observe(&node_name, busy[i], now),
            name: node_name,
            labels,
            ready: node_ready(node),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            gpus: node_gpus(node, resource),
            marks,
            utilization: None,
        });
    }
    let class_keys = [
        pool.spec.node_group_label.as_deref(),
        Some(pool.spec.gpu_model_label.as_str()),
    ];
    for (pod, gpus, node, tenant) in chosen {
        let phase = match pod.status.phase.as_deref() {
            Some("Running") => PodPhase::Running,
            _ => PodPhase::Pending,
        };
        let class = pod
            .spec
            .node_selector
            .as_ref()
            .and_then(|sel| class_keys.iter().flatten().find_map(|k| sel.get(*k).cloned()));
        let view = PodView {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            node: None,
            gpus,
            tenant,
            phase,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            deadline_annotation: time(pod.annotations().get(DEADLINE_ANNOTATION)),
            class,
        };
        let node_name = node.map(|n| node_list[n].metadata.name.as_deref().unwrap_or(""));
        b.pod(view, node_name);
    }
    for lease in leases.iter().filter(|l| l.spec.pool == name) {
        let status = lease.status.clone().unwrap_or_default();
        let namespace = lease.namespace().unwrap_or_default();
        b.lease(LeaseView {
            tenant_namespace: tenant_namespaces.contains(&namespace),
            namespace,
            name: lease.name_any(),
            gpus: lease.spec.gpus.max(0) as u32,
            model: lease.spec.gpu_model.clone(),
            duration_seconds: lease.spec.duration_seconds,
            max_price: lease.spec.max_price_per_gpu_hour,
            phase: status.phase,
            bound_at: status.bound_at.map(|t| t.0),
            created: lease.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now),
            deleting: lease.metadata.deletion_timestamp.is_some(),
        });
    }
    b.signals(signals);
    if let Some(status) = &pool.status {
        b.ledger(crate::policy::PoolLedger {
            harvestable_gpu_hours: status.harvestable_gpu_hours,
            lent_gpu_hours: status.lent_gpu_hours,
            accounted_until: status.accounted_until.as_ref().map(|t| t.0),
        });
    }
    Ok(Observed {
        snapshot: b.build(),
        tenant_namespaces,
    })
}
