//! What the planner sees: the cluster as observed at one instant, for one pool.
//!
//! Pods refer to nodes by index into `nodes`, so the planner joins 100,000 pods to 5,000 nodes without
//! hashing a string. [`SnapshotBuilder`] resolves node names to indices for callers that have names.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::config::PoolPolicy;
use super::history::DemandHistory;
use super::state::{LeasePhase, NodeState};

/// The observed state of one pool's world.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub now: Timestamp,
    pub policy: Arc<PoolPolicy>,
    pub nodes: Vec<NodeView>,
    /// Pods that request GPUs, and tenant pods on sublet's nodes; finished pods are left out.
    pub pods: Vec<PodView>,
    /// The leases of this pool.
    pub leases: Vec<LeaseView>,
    /// Internal demand from sources other than pending pods (Kueue, PromQL), by class.
    pub demand: Demand,
    pub signals: Signals,
    pub history: Option<Arc<DemandHistory>>,
    /// Why the history cannot be trusted now (its source cannot answer), when it cannot.
    pub history_error: Option<String>,
    pub ledger: PoolLedger,
}

/// A node, with what sublet wrote on it.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub name: String,
    /// The node's labels; those the policy reads ([`super::PoolPolicy::label_keys`]) are enough.
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// Cordoned by someone (sublet never cordons): not lendable.
    pub unschedulable: bool,
    /// Allocatable GPUs.
    pub gpus: u32,
    pub marks: Marks,
    /// Mean GPU utilization over the idle window, with the time it was measured.
    pub utilization: Option<Utilization>,
    /// Since when no internal GPU pod has run on the node (None while one does, or when unknown).
    pub idle_since: Option<Timestamp>,
    /// When the Node object was created: a node registered again after a lease bound one of its name is a
    /// new node, not the lease's.
    pub created: Option<Timestamp>,
    /// For a node a lease holds: the GPUs its hold recorded at binding (it is degraded when it has fewer now).
    pub held_gpus: Option<u32>,
    /// Internal GPU pods placed on the node, given as totals rather than one by one in `Snapshot::pods`
    /// (the controller's form: it never acts on an internal pod, only counts them). Pods listed in
    /// `Snapshot::pods` on the node add to these.
    pub internal: InternalLoad,
    /// Another pool this node belongs to although this pool selects it too: an older pool selecting it
    /// (creationTimestamp, then name), when the node carries no pool's marks. A marked node belongs to the
    /// pool of its marks whatever this says.
    pub claimed_by: Option<String>,
    /// For a scrubbing node: its scrub Job, as read.
    pub scrub: Option<super::scrub::ScrubView>,
}

/// Internal GPU pods on a node, and the GPUs they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InternalLoad {
    pub pods: u32,
    pub gpus: u32,
}

/// sublet's labels and annotations on a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Marks {
    pub pool: Option<String>,
    pub state: NodeState,
    /// The lease key (`NAMESPACE.NAME`).
    pub lease: Option<String>,
    /// The UID of the lease the node was bound to (nodes bound before sublet wrote it have none).
    pub lease_uid: Option<String>,
    pub since: Option<Timestamp>,
    pub returned_at: Option<Timestamp>,
    pub deadline: Option<Timestamp>,
}

/// A utilization reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Utilization {
    pub mean_percent: f64,
    pub measured_at: Timestamp,
}

/// The phase of a pod, as far as the planner cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
}

/// A pod that requests GPUs, or a tenant pod on one of sublet's nodes.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// Index into `Snapshot::nodes`; None while unscheduled (or on a node outside the snapshot).
    pub node: Option<usize>,
    pub gpus: u32,
    /// In a tenant namespace.
    pub tenant: bool,
    pub phase: PodPhase,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// The `sublet.dev/reclaim-deadline` annotation, when present.
    pub deadline_annotation: Option<Timestamp>,
    /// For a pending pod: the class (model or node group) it asks for; None when any will do.
    pub class: Option<String>,
}

/// A lease of this pool.
#[derive(Clone, Debug)]
pub struct LeaseView {
    pub namespace: String,
    pub name: String,
    /// The lease object's UID: a lease of the same name created later is another lease.
    pub uid: Option<String>,
    pub gpus: u32,
    pub model: Option<String>,
    pub duration_seconds: Option<i64>,
    pub max_price: Option<f64>,
    pub phase: LeasePhase,
    pub bound_at: Option<Timestamp>,
    pub created: Timestamp,
    /// In a namespace the pool counts as a tenant's.
    pub tenant_namespace: bool,
    pub deleting: bool,
}

impl LeaseView {
    /// `NAMESPACE.NAME`, as on node labels and taints.
    pub fn key(&self) -> String {
        super::lease_key(&self.namespace, &self.name)
    }
}

/// Internal demand in GPUs by class; the class `None` can be served by any node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Demand {
    pub by_class: BTreeMap<Option<String>, u32>,
}

impl Demand {
    pub fn add(&mut self, class: Option<String>, gpus: u32) {
        *self.by_class.entry(class).or_default() += gpus;
    }
}

/// Whether the signals that lending relies on are fresh.
#[derive(Clone, Debug, PartialEq)]
pub struct Signals {
    pub fresh: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            fresh: true,
            reason: None,
        }
    }
}

/// The pool's running totals, accounted up to `accounted_until`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolLedger {
    pub harvestable_gpu_hours: f64,
    pub lent_gpu_hours: f64,
    pub accounted_until: Option<Timestamp>,
}

/// Builds a snapshot from named nodes and pods.
pub struct SnapshotBuilder {
    snapshot: Snapshot,
    /// Node names to indices, built when a pod is first placed by name, over the first `indexed` nodes.
    index: foldhash::HashMap<String, usize>,
    indexed: usize,
}

impl SnapshotBuilder {
    pub fn new(policy: Arc<PoolPolicy>, now: Timestamp) -> Self {
        Self {
            snapshot: Snapshot {
                now,
                policy,
                nodes: vec![],
                pods: vec![],
                leases: vec![],
                demand: Demand::default(),
                signals: Signals::default(),
                history: None,
                history_error: None,
                ledger: PoolLedger::default(),
            },
            index: Default::default(),
            indexed: 0,
        }
    }

    pub fn node(&mut self, node: NodeView) -> usize {
        self.snapshot.nodes.push(node);
        self.snapshot.nodes.len() - 1
    }

    /// Adds a pod, placing it on `node_name` when that node is in the snapshot.
    pub fn pod(&mut self, mut pod: PodView, node_name: Option<&str>) {
        for (i, n) in self.snapshot.nodes.iter().enumerate().skip(self.indexed) {
            self.index.insert(n.name.clone(), i);
        }
        self.indexed = self.snapshot.nodes.len();
        pod.node = node_name.and_then(|n| self.index.get(n).copied());
        self.snapshot.pods.push(pod);
    }

    /// Adds a pod already placed by node index (`pod.node`, as returned by [`SnapshotBuilder::node`]).
    pub fn placed_pod(&mut self, pod: PodView) {
        debug_assert!(pod.node.is_none_or(|n| n < self.snapshot.nodes.len()));
        self.snapshot.pods.push(pod);
    }

    pub fn lease(&mut self, lease: LeaseView) {
        self.snapshot.leases.push(lease);
    }

    pub fn demand(&mut self, class: Option<String>, gpus: u32) {
        self.snapshot.demand.add(class, gpus);
    }

    pub fn signals(&mut self, signals: Signals) {
        self.snapshot.signals = signals;
    }

    pub fn history(&mut self, history: Arc<DemandHistory>) {
        self.snapshot.history = Some(history);
    }

    pub fn history_error(&mut self, why: String) {
        self.snapshot.history_error = Some(why);
    }

    pub fn ledger(&mut self, ledger: PoolLedger) {
        self.snapshot.ledger = ledger;
    }

    pub fn build(self) -> Snapshot {
        self.snapshot
    }
}
