//! Observe: from the caches to one pool's [`Snapshot`].
//!
//! Pure over the stores' contents, so the same function serves every replica and the tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::ResourceExt;

use super::cache::{node_gpus, node_ready};
use super::pods::{HotPod, PodTable};
use crate::api::keys::{
    DEADLINE_ANNOTATION, LEASE_LABEL, LEASE_UID_ANNOTATION, POOL_LABEL, RETURNED_ANNOTATION, SINCE_ANNOTATION,
    STATE_LABEL, TENANT_NAMESPACE_LABEL,
};
use crate::api::{GpuLease, TenantPool, selector};
use crate::policy::{
    InternalLoad, LeaseView, Marks, NodeState, NodeView, PodPhase, PodView, PolicyError, Selector, Signals, Snapshot,
    SnapshotBuilder,
};

/// Since when each node has run no internal GPU pod, as this process has seen it. Not kept across restarts:
/// a restarted controller starts the idle clocks again, which can only delay lending, never hasten it.
#[derive(Default)]
pub struct IdleClocks {
    since: Mutex<foldhash::HashMap<String, Timestamp>>,
}

impl IdleClocks {
    fn lock(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<String, Timestamp>> {
        self.since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Since when `node` has been idle, starting its clock now if it just became so.
fn idle_since(
    clocks: &mut foldhash::HashMap<String, Timestamp>,
    node: &str,
    busy: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    if busy {
        clocks.remove(node);
        return None;
    }
    if let Some(since) = clocks.get(node) {
        return Some(*since);
    }
    clocks.insert(node.to_string(), now);
    Some(now)
}

/// A node as the planner sees it, but for its idle clock and internal load.
fn node_view(node: &Node, gpus: u32, label_keys: &[String]) -> NodeView {
    let empty = BTreeMap::new();
    let all = node.metadata.labels.as_ref().unwrap_or(&empty);
    let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let labels: BTreeMap<String, String> = label_keys
        .iter()
        .filter_map(|k| all.get_key_value(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let marks = if all.contains_key(POOL_LABEL) {
        Marks {
            pool: all.get(POOL_LABEL).cloned(),
            state: all
                .get(STATE_LABEL)
                .and_then(|s| NodeState::from_label(s))
                .unwrap_or(NodeState::Lent),
            lease: all.get(LEASE_LABEL).cloned(),
            lease_uid: ann.get(LEASE_UID_ANNOTATION).cloned(),
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
    NodeView {
        name: node.name_any(),
        labels,
        ready: node_ready(node),
        unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        gpus,
        created: node.metadata.creation_timestamp.as_ref().map(|t| t.0),
        held_gpus: None,
        marks,
        utilization: None,
        idle_since: None,
        internal: InternalLoad::default(),
        claimed_by: None,
        scrub: None,
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

/// The cached objects a pass reads, taken from the stores once per pass (pods are read in place).
pub struct World {
    pub nodes: Vec<Arc<Node>>,
    pub leases: Vec<Arc<GpuLease>>,
    pub namespaces: Vec<Arc<Namespace>>,
}

/// Builds the snapshot of `pool` from the cached objects.
pub fn observe(
    pool: &TenantPool,
    world: &World,
    pods: &PodTable,
    clocks: &IdleClocks,
    signals: Signals,
    now: Timestamp,
) -> Result<Observed, PolicyError> {
    let World {
        nodes,
        leases,
        namespaces,
    } = world;
    let name = pool.name_any();
    let policy = pool.spec.to_policy(&name, pool.metadata.deletion_timestamp.is_some())?;
    let label_keys: Vec<String> = policy.label_keys().map(str::to_string).collect();
    let resource = pool.spec.gpu_resource_name.as_str();
    let tenant_sel = tenant_selector(pool);
    let empty = BTreeMap::new();
    let tenant_namespaces: HashSet<String> = namespaces
        .iter()
        .filter(|ns| tenant_sel.matches(ns.metadata.labels.as_ref().unwrap_or(&empty)))
        .map(|ns| ns.name_any())
        .collect();
    let mut b = SnapshotBuilder::new(Arc::new(policy), now);

    let (node_list, at) = pool_nodes(nodes, pods, resource, &name);
    let (load, chosen) = pool_pods(pods, &at, node_list.len(), resource, &tenant_namespaces);
    let records = recorded_deadlines(leases, &name);
    let held = held_gpus(leases, &name);
    // The latest deadline a notice given now could carry, rounded up as the planner gives deadlines: capped at
    // the exact sum, a deadline given a moment ago and not yet recorded would move earlier by a fraction of
    // a second, and its record (whole seconds) earlier still.
    let latest = crate::policy::full_notice_deadline(now, pool.spec.reclaim.notice_seconds);
    let mut idle = clocks.lock();
    for (i, &(node, gpus)) in node_list.iter().enumerate() {
        let mut view = node_view(node, gpus, &label_keys);
        let recorded = view
            .marks
            .lease
            .as_ref()
            .and_then(|k| records.get(&(k.clone(), view.name.as_str())))
            .copied();
        view.marks.deadline = recorded.or(view.marks.deadline.map(|annotated| annotated.min(latest)));
        view.held_gpus = view
            .marks
            .lease
            .as_ref()
            .and_then(|k| held.get(&(k.clone(), view.name.as_str())))
            .copied();
        view.idle_since = idle_since(&mut idle, &view.name, load[i].pods > 0, now);
        view.internal = load[i];
        b.node(view);
    }
    drop(idle);
    let class_keys = [
        pool.spec.node_group_label.as_deref(),
        Some(pool.spec.gpu_model_label.as_str()),
    ];
    for chosen in chosen {
        b.placed_pod(pod_view(pods, chosen, &class_keys));
    }
    for lease in leases.iter().filter(|l| l.spec.pool == name) {
        b.lease(lease_view(lease, &tenant_namespaces, now));
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

/// A pod-cache node id that is not in the snapshot.
const NOWHERE: u32 = u32::MAX;

/// The pool's nodes: those with GPUs of the pool's resource, and any that carry this pool's marks; with,
/// per pod-cache node id, its place in that list (or [`NOWHERE`]).
fn pool_nodes<'a>(
    nodes: &'a [Arc<Node>],
    pods: &PodTable,
    resource: &str,
    pool: &str,
) -> (Vec<(&'a Node, u32)>, Vec<u32>) {
    let empty = BTreeMap::new();
    let mut at = vec![NOWHERE; pods.nodes.len()];
    let mut node_list: Vec<(&Node, u32)> = Vec::new();
    for node in nodes {
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let gpus = node_gpus(node, resource);
        if gpus == 0 && labels.get(POOL_LABEL).map(String::as_str) != Some(pool) {
            continue;
        }
        if let Some(id) = node.metadata.name.as_deref().and_then(|n| pods.nodes.id(n)) {
            at[id as usize] = node_list.len() as u32;
        }
        node_list.push((node, gpus));
    }
    (node_list, at)
}

/// A pod the snapshot lists: its place in the pod table, GPUs, snapshot node (None when unscheduled), and
/// whether it is a tenant's.
#[derive(Clone, Copy)]
struct Chosen {
    pod: usize,
    gpus: u32,
    node: Option<usize>,
    tenant: bool,
}

/// Internal GPU pods on the snapshot's nodes are counted per node; tenant pods on them and unscheduled
/// internal GPU pods (the demand) are listed.
fn pool_pods(
    pods: &PodTable,
    at: &[u32],
    node_count: usize,
    resource: &str,
    tenant_namespaces: &HashSet<String>,
) -> (Vec<InternalLoad>, Vec<Chosen>) {
    let gpu = pods.resources.id(resource);
    let tenant_ns: Vec<bool> = (0..pods.namespaces.len() as u32)
        .map(|id| tenant_namespaces.contains(pods.namespaces.name(id)))
        .collect();
    let mut load = vec![InternalLoad::default(); node_count];
    let mut chosen: Vec<Chosen> = Vec::new();
    for (i, pod) in pods.hot().iter().enumerate() {
        let tenant = tenant_ns[pod.namespace as usize];
        if pod.node == HotPod::UNSCHEDULED {
            let gpus = pods.count(i, gpu);
            if !tenant && gpus > 0 {
                chosen.push(Chosen {
                    pod: i,
                    gpus,
                    node: None,
                    tenant: false,
                });
            }
            continue;
        }
        let n = at[pod.node as usize];
        if n == NOWHERE {
            continue;
        }
        let gpus = pods.count(i, gpu);
        if tenant {
            chosen.push(Chosen {
                pod: i,
                gpus,
                node: Some(n as usize),
                tenant: true,
            });
        } else if gpus > 0 {
            load[n as usize].pods += 1;
            load[n as usize].gpus += gpus;
        }
    }
    (load, chosen)
}

/// sublet's record of the deadlines it gave, in the statuses of this pool's leases (a kubelet cannot write
/// there), by (lease key, node): it wins over a node's annotation. A node whose notice is not recorded yet
/// (the status write of its pass did not happen) keeps its annotation, but never a deadline later than a full
/// notice from now.
fn recorded_deadlines<'a>(leases: &'a [Arc<GpuLease>], pool: &str) -> HashMap<(String, &'a str), Timestamp> {
    leases
        .iter()
        .filter(|l| l.spec.pool == pool)
        .filter_map(|l| {
            Some((
                crate::api::keys::lease_key(l.metadata.namespace.as_deref()?, &l.name_any()),
                l.status.as_ref()?,
            ))
        })
        .flat_map(|(key, status)| {
            status
                .notices
                .iter()
                .map(move |n| ((key.clone(), n.node.as_str()), n.deadline.0))
        })
        .collect()
}

/// The GPUs each open hold of this pool's leases recorded at binding, by (lease key, node).
fn held_gpus<'a>(leases: &'a [Arc<GpuLease>], pool: &str) -> HashMap<(String, &'a str), u32> {
    let mut out = HashMap::new();
    for l in leases.iter().filter(|l| l.spec.pool == pool) {
        let (Some(ns), Some(status)) = (l.metadata.namespace.as_deref(), l.status.as_ref()) else {
            continue;
        };
        let key = crate::api::keys::lease_key(ns, &l.name_any());
        for h in status.holds.iter().filter(|h| h.returned_at.is_none()) {
            out.insert((key.clone(), h.node.as_str()), h.gpus.max(0) as u32);
        }
    }
    out
}

/// A listed pod as the planner sees it; its class is the value of the first of `class_keys` its node
/// selector sets.
fn pod_view(pods: &PodTable, c: Chosen, class_keys: &[Option<&str>]) -> PodView {
    let (hot, cold) = (&pods.hot()[c.pod], pods.cold(c.pod));
    PodView {
        namespace: pods.namespaces.name(hot.namespace).to_string(),
        name: cold.name.to_string(),
        node: c.node,
        gpus: c.gpus,
        tenant: c.tenant,
        phase: if hot.running {
            PodPhase::Running
        } else {
            PodPhase::Pending
        },
        terminating: hot.terminating,
        deadline_annotation: cold.deadline,
        class: class_keys
            .iter()
            .flatten()
            .find_map(|k| cold.selects(k).map(str::to_string)),
    }
}

/// A lease of the pool as the planner sees it.
fn lease_view(lease: &GpuLease, tenant_namespaces: &HashSet<String>, now: Timestamp) -> LeaseView {
    let status = lease.status.as_ref();
    let namespace = lease.namespace().unwrap_or_default();
    LeaseView {
        tenant_namespace: tenant_namespaces.contains(&namespace),
        namespace,
        name: lease.name_any(),
        uid: lease.uid(),
        gpus: lease.spec.gpus.max(0) as u32,
        model: lease.spec.gpu_model.clone(),
        duration_seconds: lease.spec.duration_seconds,
        max_price: lease.spec.max_price_per_gpu_hour,
        phase: status.map(|s| s.phase).unwrap_or_default(),
        bound_at: status.and_then(|s| s.bound_at.as_ref()).map(|t| t.0),
        created: lease.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now),
        deleting: lease.metadata.deletion_timestamp.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cached_pod::CachedPod;
    use crate::controller::pods::{PodCache, PodWriter};
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn node(name: &str, gpus: u32, labels: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
                "status": {"allocatable": {"nvidia.com/gpu": gpus.to_string()},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap(),
        )
    }

    fn pod(ns: &str, name: &str, node: Option<&str>, gpus: u32, selector: serde_json::Value) -> CachedPod {
        let resources = if gpus > 0 {
            json!({"requests": {"nvidia.com/gpu": gpus.to_string()}})
        } else {
            json!({"requests": {"cpu": "1"}})
        };
        let mut p: CachedPod = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"nodeName": node, "nodeSelector": selector, "containers": [{"resources": resources}]},
            "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}
        }))
        .unwrap();
        p.trim();
        p
    }

    #[test]
    fn internal_pods_are_totalled_per_node_and_only_tenant_and_unscheduled_pods_listed() {
        let pool: TenantPool = serde_json::from_value(json!({
            "apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "p"},
            "spec": {"mode": "Enforce"}
        }))
        .unwrap();
        let model = json!({"nvidia.com/gpu.product": "A100", "zone": "a"});
        let world = World {
            nodes: vec![
                node("gpu-1", 8, model.clone()),
                node("gpu-2", 8, model.clone()),
                node("cpu-1", 0, json!({})),
            ],
            leases: vec![],
            namespaces: vec![
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "ml"}})).unwrap()),
                Arc::new(
                    serde_json::from_value(
                        json!({"metadata": {"name": "acme", "labels": {"sublet.dev/tenant": "true"}}}),
                    )
                    .unwrap(),
                ),
            ],
        };
        let cache = PodCache::default();
        let mut w = PodWriter::new(cache.clone());
        for p in [
            pod("ml", "a", Some("gpu-1"), 2, json!({})),
            pod("ml", "b", Some("gpu-1"), 3, json!({})),
            pod("ml", "svc", Some("gpu-1"), 0, json!({})),
            pod("acme", "job", Some("gpu-2"), 8, json!({})),
            pod("acme", "sidecar", Some("gpu-2"), 0, json!({})),
            pod("ml", "queued", None, 4, json!({"nvidia.com/gpu.product": "A100"})),
            // Scheduled to a node outside the pool: neither load nor demand.
            pod("ml", "elsewhere", Some("cpu-1"), 1, json!({})),
            // A tenant's unscheduled pod is not internal demand.
            pod("acme", "waiting", None, 8, json!({})),
        ] {
            w.event(Event::Apply(p));
        }
        let observed = observe(
            &pool,
            &world,
            &cache.read(),
            &IdleClocks::default(),
            Signals::default(),
            Timestamp::now(),
        )
        .unwrap();
        let s = &observed.snapshot;
        let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["gpu-1", "gpu-2"]);
        assert_eq!(s.nodes[0].internal, InternalLoad { pods: 2, gpus: 5 });
        assert_eq!(
            s.nodes[0].idle_since, None,
            "a node running internal GPU pods is not idle"
        );
        assert_eq!(s.nodes[1].internal, InternalLoad::default());
        assert!(s.nodes[1].idle_since.is_some());
        assert_eq!(
            s.nodes[0].labels.keys().collect::<Vec<_>>(),
            ["nvidia.com/gpu.product"],
            "only the labels the policy reads"
        );
        let mut listed: Vec<(&str, Option<usize>, bool, Option<&str>)> = s
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.node, p.tenant, p.class.as_deref()))
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("job", Some(1), true, None),
                ("queued", None, false, Some("A100")),
                ("sidecar", Some(1), true, None),
            ]
        );
        assert_eq!(observed.tenant_namespaces, HashSet::from(["acme".to_string()]));
    }

    #[test]
    fn a_deadline_comes_from_the_leases_record_never_from_the_node_alone() {
        let pool: TenantPool = serde_json::from_value(json!({
            "apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "p"},
            "spec": {"mode": "Enforce", "reclaim": {"noticeSeconds": 120}}
        }))
        .unwrap();
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let given = "2026-11-25T12:01:00Z";
        let reclaiming = |name: &str, lease: &str, annotation: Option<&str>| {
            let mut n = (*node(
                name,
                8,
                json!({"sublet.dev/pool": "p", "sublet.dev/state": "reclaiming",
                "sublet.dev/lease": lease}),
            ))
            .clone();
            if let Some(a) = annotation {
                n.metadata.annotations = Some([("sublet.dev/reclaim-deadline".to_string(), a.to_string())].into());
            }
            Arc::new(n)
        };
        let lease: Arc<GpuLease> = Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease",
                "metadata": {"name": "job", "namespace": "acme"},
                "spec": {"pool": "p", "gpus": 16},
                "status": {"phase": "Reclaiming", "notices": [
                    {"node": "forged", "deadline": given}, {"node": "wiped", "deadline": given}]}
            }))
            .unwrap(),
        );
        let world = World {
            nodes: vec![
                // The kubelet moved the deadline to 2099: the record stands.
                reclaiming("forged", "acme.job", Some("2099-01-01T00:00:00Z")),
                // The kubelet removed it: the record stands (no second notice, no new deadline).
                reclaiming("wiped", "acme.job", None),
                // No record yet (the status write of its pass did not happen): never later than a full notice.
                reclaiming("unrecorded", "acme.other", Some("2099-01-01T00:00:00Z")),
                reclaiming("legit", "acme.other", Some(given)),
            ],
            leases: vec![lease],
            namespaces: vec![],
        };
        let observed = observe(
            &pool,
            &world,
            &PodCache::default().read(),
            &IdleClocks::default(),
            Signals::default(),
            now,
        )
        .unwrap();
        let deadline = |name: &str| {
            observed
                .snapshot
                .nodes
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.marks.deadline)
                .map(|d| d.to_string())
        };
        assert_eq!(deadline("forged").as_deref(), Some(given));
        assert_eq!(deadline("wiped").as_deref(), Some(given));
        assert_eq!(deadline("unrecorded").as_deref(), Some("2026-11-25T12:02:00Z"));
        assert_eq!(deadline("legit").as_deref(), Some(given));
    }

    /// A deadline given a moment ago (now plus the notice, rounded up to the second) and not yet recorded stays
    /// as given on the next pass, a fraction of a second later; a forged one is still capped, at whole seconds.
    #[test]
    fn an_unrecorded_deadline_given_a_moment_ago_does_not_move() {
        let given: Timestamp = "2026-11-25T12:02:01Z".parse().unwrap();
        let a_moment_later: Timestamp = "2026-11-25T12:00:00.400Z".parse().unwrap();
        assert_eq!(crate::policy::full_notice_deadline(a_moment_later, 120), given);
        assert_eq!(
            given.min(crate::policy::full_notice_deadline(a_moment_later, 120)),
            given
        );
        let forged: Timestamp = "2099-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            forged.min(crate::policy::full_notice_deadline(a_moment_later, 120)),
            given
        );
        let exact: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        assert_eq!(
            crate::policy::full_notice_deadline(exact, 120).to_string(),
            "2026-11-25T12:02:00Z"
        );
    }
}
