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

use crate::api::{Mode, TenantPool};
use crate::policy::{Plan, Snapshot};

/// Whether this pass writes to nodes, pods and lease statuses: in Enforce, for a pool being deleted, and in
/// Observe while any of the pool's nodes is still out of internal use (or the plan has a step to carry out).
pub fn acts(pool: &TenantPool, snapshot: &Snapshot, plan: &Plan) -> bool {
    pool.spec.mode == Mode::Enforce
        || pool.metadata.deletion_timestamp.is_some()
        || !plan.steps.is_empty()
        || out(snapshot)
}

/// Whether any node carries this pool's marks (lent, leased or under notice).
pub fn out(snapshot: &Snapshot) -> bool {
    let name = snapshot.policy.name.as_str();
    snapshot.nodes.iter().any(|n| n.marks.pool.as_deref() == Some(name))
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
