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
    let now = s.now;
    let index = |s: &Snapshot, name: &str| s.nodes.iter().position(|n| n.name == name);
    for step in &plan.steps {
        match &step.action {
            Action::Lend { node } => {
                if let Some(n) = index(s, node) {
                    s.nodes[n].marks = Marks {
                        pool: Some(s.policy.name.clone()),
                        state: NodeState::Lent,
                        since: Some(now),
                        returned_at: s.nodes[n].marks.returned_at,
                        ..Marks::default()
                    };
                }
            }
            Action::Unlend { node } | Action::Return { node, .. } => {
                if let Some(n) = index(s, node) {
                    s.nodes[n].marks = Marks {
                        returned_at: Some(now),
                        ..Marks::default()
                    };
                    s.nodes[n].scrub = None;
                }
            }
            Action::Scrub { node, job, .. } => {
                if let Some(n) = index(s, node) {
                    let m = &mut s.nodes[n].marks;
                    m.state = NodeState::Scrubbing;
                    m.lease = None;
                    m.lease_uid = None;
                    m.deadline = None;
                    m.since = Some(now);
                    m.returned_at = Some(now);
                    s.nodes[n].scrub = Some(super::ScrubView {
                        job: Some(job.clone()),
                        state: None,
                    });
                }
            }
            Action::Bind { namespace, name, nodes } => {
                let key = super::lease_key(namespace, name);
                for node in nodes {
                    if let Some(n) = index(s, node) {
                        let m = &mut s.nodes[n].marks;
                        m.state = NodeState::Leased;
                        m.lease = Some(key.clone());
                        m.since = Some(now);
                    }
                }
            }
            Action::Notice { node, deadline, .. } => {
                if let Some(n) = index(s, node) {
                    let m = &mut s.nodes[n].marks;
                    m.state = NodeState::Reclaiming;
                    m.deadline.get_or_insert(*deadline);
                    m.since = Some(now);
                    let deadline = m.deadline;
                    for pod in s.pods.iter_mut().filter(|p| p.node == Some(n) && p.tenant) {
                        pod.deadline_annotation = deadline;
                    }
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
    s.ledger = plan.ledger;
}
