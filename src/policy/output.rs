//! What a plan says: the actions, each with its cause and reason, the totals, the ledger and the reports.
//!
//! [`super::plan`] writes these and nothing else; the controller, the simulator and [`super::ideal`] read them.

use jiff::Timestamp;

use super::snapshot::PoolLedger;
use super::state::{LeasePhase, NodeState};

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Take an idle node out of internal use: pool and state labels, the lent taint.
    Lend { node: String },
    /// Give a lent node without a lease straight back.
    Unlend { node: String },
    /// Bind nodes to a pending lease: its label and taint on each node.
    Bind {
        namespace: String,
        name: String,
        nodes: Vec<String>,
    },
    /// Give notice on a node: state `reclaiming`, the deadline on the node, its lease and its tenant pods.
    Notice {
        node: String,
        lease: Option<String>,
        deadline: Timestamp,
    },
    /// Put the deadline annotation on a tenant pod of a reclaiming node that lacks it.
    AnnotatePod {
        namespace: String,
        name: String,
        deadline: Timestamp,
    },
    /// Evict a tenant pod whose notice has run out.
    Evict {
        namespace: String,
        name: String,
        node: String,
        deadline: Timestamp,
    },
    /// Hand a node back to internal use: sublet's labels and taints removed.
    Return { node: String, lease: Option<String> },
    /// Take a node from its lease into Scrubbing: no holder, held out of use until `job` completes.
    Scrub {
        node: String,
        lease: Option<String>,
        job: String,
    },
}

/// Why the plan takes a step, as a kind the controller and the simulator can act on; the step's reason
/// says it in words, with the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Internal work of the node's class (or of any class) is pending or its reserve is short.
    InternalDemand,
    /// The class's demand is rising and what is free and coming back would not cover the rise the history
    /// expects within the notice: notice now rather than once pods wait.
    ReclaimAhead,
    /// The lease the node is bound to is over: deleted, gone, ended or running out within the notice.
    LeaseOver,
    /// The pool is being deleted.
    PoolDeleted,
    /// The node is used against the rules: tenant pods without a lease, or an internal pod on a lent node.
    Misuse,
    /// A tenant pod runs on a node no lease of its namespace holds: evicted at once, without notice.
    Breach,
    /// The pool's rules no longer let the node out: outside the windows, or above `maxLentPercent`.
    PoolRules,
    /// Carrying out a notice already given: annotating, evicting, returning the node once it is empty.
    NoticeServed,
    /// The node is idle beyond internal demand and the reserve.
    Idle,
    /// A pending lease is bound to lent nodes.
    LeaseRequest,
    /// The node's scrub completed (or the pool no longer scrubs): it goes back.
    Scrubbed,
}

/// An action, its cause, and why in words.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub action: Action,
    pub cause: Cause,
    pub reason: String,
}

/// GPU counts over the pool, as observed before the plan is carried out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub nodes: u32,
    pub gpus: u32,
    /// GPUs this plan lends now (what would be lent, in Observe mode).
    pub lendable_gpus: u32,
    pub lent_gpus: u32,
    pub leased_gpus: u32,
    pub reclaiming_gpus: u32,
    /// Held out of use between holders until the scrub completes (or after it failed).
    pub scrubbing_gpus: u32,
    pub internal_free_gpus: u32,
    pub internal_used_gpus: u32,
    pub pending_gpus: u32,
    pub reserve_gpus: u32,
    /// Idle beyond demand and reserve, or already out: lendable + lent + leased + reclaiming.
    pub harvestable_gpus: u32,
}

/// One member node in the report.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReport {
    pub name: String,
    pub state: NodeState,
    pub lease: Option<String>,
    pub gpus: u32,
    pub model: Option<String>,
    pub since: Option<Timestamp>,
    pub reason: String,
}

/// One lease in the report: the status it should show once the plan is carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseReport {
    pub namespace: String,
    pub name: String,
    pub phase: LeasePhase,
    pub reason: String,
    pub nodes: Vec<String>,
    pub gpus: u32,
    pub deadline: Option<Timestamp>,
    pub price_per_gpu_hour: f64,
    /// When the lease's nodes were first bound (set by a Bind in this plan when it had none).
    pub bound_at: Option<Timestamp>,
    /// It asks for more GPUs than the pool has in all (its reason says how many).
    pub unschedulable: bool,
}

/// The whole plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub totals: Totals,
    pub ledger: PoolLedger,
    pub nodes: Vec<NodeReport>,
    pub leases: Vec<LeaseReport>,
    /// Why nothing new is lent, when that holds for the whole pool.
    pub lending_blocked: Option<String>,
    /// Per class: capacity, demand and the reserve with its reason.
    pub classes: Vec<ClassReport>,
    /// For a pool with a learned reserve: whether the history covers what it needs, and why not.
    pub reserve_learned: Option<Result<(), String>>,
    /// Each scrubbing node's scrub: to create, running, failed, or done in this plan.
    pub scrubs: Vec<super::scrub::ScrubReport>,
}

/// One class (GPU model or node group) in the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassReport {
    pub class: String,
    pub capacity_gpus: u32,
    /// Internal demand: GPUs internal work uses and waits for.
    pub demand_gpus: u32,
    /// GPUs kept from lending.
    pub reserve_gpus: u32,
    pub reason: String,
}
