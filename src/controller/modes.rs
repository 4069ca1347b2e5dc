//! What each mode carries out.
//!
//! | mode    | lend | bind | notice | evict at deadline | return | writes                                  |
//! |---------|------|------|--------|-------------------|--------|-----------------------------------------|
//! | Enforce | yes  | yes  | yes    | yes               | yes    | nodes, pods, lease and pool status      |
//! | Observe, nothing out | no (reported) | no | no | no  | no     | pool status, a Pending lease's reason   |
//! | Observe, nodes out   | no (reported) | no | yes | yes | yes    | as Enforce, for what is out             |
//!
//! Observe is a planner flag (`PoolPolicy::observe`): the plan then holds no `Lend` and no `Bind`, and
//! everything else (notices already given and new ones for internal demand, lease ends or deletion,
//! evictions at the deadline, returns) is carried out until the last node is back. Only then does the pool
//! write nothing to nodes or pods. Switching modes moves no deadline: a deadline is read back from sublet's
//! record (lease status and node), never planned again.

use crate::api::{LeasePhase, Mode, TenantPool};
use crate::policy::{Plan, Snapshot};

/// Whether this pass writes to nodes, pods and lease statuses: in Enforce, for a pool being deleted, and in
/// Observe while any of the pool's nodes is still out of internal use (or the plan has a step to carry out).
pub fn acts(pool: &TenantPool, snapshot: &Snapshot, plan: &Plan) -> bool {
    pool.spec.mode == Mode::Enforce
        || pool.metadata.deletion_timestamp.is_some()
        || !plan.steps.is_empty()
        || out(snapshot)
}

/// Whether anything of this pool is out: a node carrying its marks (lent, leased or under notice), or a lease
/// whose status still says it holds nodes (its marks lost, or its last status write after the return failed:
/// the pass that puts that right writes).
pub fn out(snapshot: &Snapshot) -> bool {
    let name = snapshot.policy.name.as_str();
    snapshot.nodes.iter().any(|n| n.marks.pool.as_deref() == Some(name))
        || snapshot
            .leases
            .iter()
            .any(|l| matches!(l.phase, LeasePhase::Bound | LeasePhase::Reclaiming))
}

/// The Lending condition's message in Observe: what would be lent, and what is still out and comes back.
pub fn lending_message(lendable: u32, out: u32) -> String {
    match out {
        0 => format!("would lend {lendable} GPUs now; mode is Observe"),
        out => format!(
            "would lend {lendable} GPUs now; mode is Observe: nothing new is lent or bound, and the {out} GPUs \
             still out come back as internal demand, lease ends and notices already given call for"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{LeaseView, Marks, NodeState, NodeView, PoolPolicy, SnapshotBuilder};
    use std::sync::Arc;

    fn snapshot(mark: Option<&str>, lease: LeasePhase) -> Snapshot {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mut b = SnapshotBuilder::new(Arc::new(PoolPolicy::with_defaults("a100")), now);
        b.node(NodeView {
            name: "n1".into(),
            gpus: 8,
            marks: Marks {
                pool: mark.map(str::to_string),
                state: NodeState::Lent,
                ..Marks::default()
            },
            ..NodeView::default()
        });
        b.lease(LeaseView {
            namespace: "acme".into(),
            name: "job".into(),
            uid: None,
            gpus: 8,
            model: None,
            duration_seconds: None,
            max_price: None,
            phase: lease,
            bound_at: None,
            created: now,
            tenant_namespace: true,
            deleting: false,
        });
        b.build()
    }

    #[test]
    fn out_while_a_node_is_marked_or_a_lease_holds_nodes() {
        assert!(!out(&snapshot(None, LeasePhase::Pending)));
        assert!(
            !out(&snapshot(Some("h100"), LeasePhase::Released)),
            "another pool's node"
        );
        assert!(out(&snapshot(Some("a100"), LeasePhase::Pending)));
        assert!(out(&snapshot(None, LeasePhase::Bound)));
        assert!(out(&snapshot(None, LeasePhase::Reclaiming)));
    }

    #[test]
    fn the_lending_message_says_what_is_still_out() {
        assert_eq!(lending_message(16, 0), "would lend 16 GPUs now; mode is Observe");
        assert!(lending_message(0, 8).contains("the 8 GPUs still out come back"));
    }
}
