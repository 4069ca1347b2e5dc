//! The ideal executor: carries a plan out on a snapshot as a controller whose every write lands at once
//! would. The property tests and the simulator use it to check that plans do what they say and that
//! planning again changes nothing.

use super::output::{Action, Plan};
use super::snapshot::{Marks, Snapshot};
use super::state::{LeasePhase, NodeState};

/// Applies every step of `plan` to `s`, as the controller would write it into the cluster at `s.now`.
/// Evicted pods start terminating (the caller decides when they are gone); lease phases follow the plan's
/// lease reports.
pub fn apply(s: &mut Snapshot, plan: &Plan) {
    for step in &plan.steps {
        apply_step(s, &step.action);
    }
    follow_lease_reports(s, plan);
    s.ledger = plan.ledger;
}

/// Applies one step at `s.now`; a step naming a node or pod the snapshot lacks changes nothing.
fn apply_step(s: &mut Snapshot, action: &Action) {
    let index = |s: &Snapshot, name: &str| s.nodes.iter().position(|n| n.name == name);
    match action {
        Action::Lend { node } => {
            if let Some(n) = index(s, node) {
                lend(s, n);
            }
        }
        Action::Unlend { node } | Action::Return { node, .. } => {
            if let Some(n) = index(s, node) {
                give_back(s, n);
            }
        }
        Action::Scrub { node, job, .. } => {
            if let Some(n) = index(s, node) {
                scrub(s, n, job);
            }
        }
        Action::Bind { namespace, name, nodes } => {
            let key = super::lease_key(namespace, name);
            for node in nodes {
                if let Some(n) = index(s, node) {
                    let m = &mut s.nodes[n].marks;
                    m.state = NodeState::Leased;
                    m.lease = Some(key.clone());
                    m.since = Some(s.now);
                }
            }
        }
        Action::Notice { node, deadline, .. } => {
            if let Some(n) = index(s, node) {
                notice(s, n, *deadline);
            }
        }
        Action::AnnotatePod {
            namespace,
            name,
            deadline,
        } => {
            if let Some(pod) = s.pods.iter_mut().find(|p| &p.namespace == namespace && &p.name == name) {
                pod.deadline_annotation = Some(*deadline);
            }
        }
        Action::Evict { namespace, name, .. } => {
            if let Some(pod) = s.pods.iter_mut().find(|p| &p.namespace == namespace && &p.name == name) {
                pod.terminating = true;
            }
        }
    }
}

/// Node `n` lent to the pool.
fn lend(s: &mut Snapshot, n: usize) {
    s.nodes[n].marks = Marks {
        pool: Some(s.policy.name.clone()),
        state: NodeState::Lent,
        since: Some(s.now),
        returned_at: s.nodes[n].marks.returned_at,
        ..Marks::default()
    };
}

/// Node `n` back in internal use, its return stamped.
fn give_back(s: &mut Snapshot, n: usize) {
    s.nodes[n].marks = Marks {
        returned_at: Some(s.now),
        ..Marks::default()
    };
    s.nodes[n].scrub = None;
}

/// Node `n` taken from its lease into Scrubbing, waiting for `job`.
fn scrub(s: &mut Snapshot, n: usize, job: &str) {
    let now = s.now;
    let m = &mut s.nodes[n].marks;
    m.state = NodeState::Scrubbing;
    m.lease = None;
    m.lease_uid = None;
    m.deadline = None;
    m.since = Some(now);
    m.returned_at = Some(now);
    s.nodes[n].scrub = Some(super::ScrubView {
        job: Some(job.to_string()),
        state: None,
    });
}

/// Node `n` under notice: the deadline it already has, or `deadline`, also on its tenant pods.
fn notice(s: &mut Snapshot, n: usize, deadline: jiff::Timestamp) {
    let now = s.now;
    let m = &mut s.nodes[n].marks;
    m.state = NodeState::Reclaiming;
    m.deadline.get_or_insert(deadline);
    m.since = Some(now);
    let deadline = m.deadline;
    for pod in s.pods.iter_mut().filter(|p| p.node == Some(n) && p.tenant) {
        pod.deadline_annotation = deadline;
    }
}

/// Each lease's phase as the plan reports it, and its bind time once it leaves Pending.
fn follow_lease_reports(s: &mut Snapshot, plan: &Plan) {
    for report in &plan.leases {
        if let Some(lease) = s
            .leases
            .iter_mut()
            .find(|l| l.namespace == report.namespace && l.name == report.name)
        {
            lease.phase = report.phase;
            if lease.bound_at.is_none() && report.phase != LeasePhase::Pending {
                lease.bound_at = report.bound_at;
            }
        }
    }
}
