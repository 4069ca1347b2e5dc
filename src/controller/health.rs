//! Leased nodes that are lost, not Ready or shrinking: what a lease's holds record of them, and what its
//! conditions tell the tenant.
//!
//! ```text
//!   per pass, per lease, per open hold (report.rs → ledger::holds):
//!     node gone from the cluster, or registered again since the binding (created after it)
//!         → lost: the hold closes at the time sublet first saw it gone, `lost: true`
//!     node still held: usable GPUs = 0 while not Ready, its allocatable when fewer than bound, else all
//!         → a change is recorded in the hold (`usable`) from when sublet first saw it
//!   conditions: NodeLost (which nodes, since when), NodesDegraded (held nodes not Ready or shrunk, billed what)
//! ```
//!
//! "First saw" is kept in memory ([`Seen`]) until a status write records it in the hold, so a failed write
//! does not move it; once recorded, a restart reads it back from the hold and bills the same.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

use super::ledger::usable_now;
use crate::api::{ConditionStatus, GpuLeaseStatus, LeasePhase, NodeHold, set_condition};
use crate::policy::{NodeView, Snapshot};

/// Lease condition: a node of the lease left the cluster while held.
pub const NODE_LOST: &str = "NodeLost";
/// Lease condition: held nodes are not Ready or have fewer GPUs than bound.
pub const NODES_DEGRADED: &str = "NodesDegraded";

/// What sublet saw of a held node, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sight {
    Lost,
    Usable(u32),
}

/// When this process first saw each (lease, node) as it is now.
#[derive(Default)]
pub struct Seen {
    first: Mutex<HashMap<(String, String), (Sight, Timestamp)>>,
}

impl Seen {
    /// Since when `node` of `lease` has been seen as `sight` (now, if it just changed).
    pub fn since(&self, lease: &str, node: &str, sight: Sight, now: Timestamp) -> Timestamp {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        let entry = first
            .entry((lease.to_string(), node.to_string()))
            .or_insert((sight, now));
        if entry.0 != sight {
            *entry = (sight, now);
        }
        entry.1
    }

    /// Forgets what the holds now record (closed holds, and open ones billing what was seen).
    pub fn recorded(&self, lease: &str, holds: &[NodeHold]) {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        for h in holds {
            let key = (lease.to_string(), h.node.clone());
            let done = match first.get(&key) {
                Some((Sight::Usable(g), _)) => h.returned_at.is_some() || usable_now(h) == *g as i32,
                Some((Sight::Lost, _)) => h.returned_at.is_some(),
                None => false,
            };
            if done {
                first.remove(&key);
            }
        }
    }
}

/// Whether the node of an open hold is lost: no node of that name, or one created after the binding (a node
/// registered again is a new node, never the lease's).
pub fn is_lost(snapshot: &Snapshot, hold: &NodeHold) -> bool {
    match snapshot.nodes.iter().find(|n| n.name == hold.node) {
        None => true,
        Some(n) => registered_since(n, hold.bound_at.0),
    }
}

fn registered_since(n: &NodeView, bound: Timestamp) -> bool {
    n.created.is_some_and(|c| c > bound)
}

/// The lease's `NodeLost` and `NodesDegraded` conditions from its holds, and its reason when a loss ended it.
pub fn conditions(status: &mut GpuLeaseStatus, generation: Option<i64>, now: Timestamp) {
    node_lost(status, generation, now);
    nodes_degraded(status, generation, now);
    ended_by_loss(status);
}

/// `NodeLost`, set once a held node left the cluster (and never cleared: the loss stays in the lease's story).
fn node_lost(status: &mut GpuLeaseStatus, generation: Option<i64>, now: Timestamp) {
    let lost: Vec<String> = status
        .holds
        .iter()
        .filter(|h| h.lost)
        .map(|h| {
            let at = h.returned_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            format!(
                "node {} left the cluster at {at}; its share of the lease ended and was billed to then",
                h.node
            )
        })
        .collect();
    if !lost.is_empty() {
        set_condition(
            &mut status.conditions,
            NODE_LOST,
            ConditionStatus::True,
            "NodeLeftCluster",
            &lost.join("; "),
            generation,
            now,
        );
    }
}

/// `NodesDegraded`: true while a node still held bills fewer GPUs than it was bound with, false once all are
/// whole again.
fn nodes_degraded(status: &mut GpuLeaseStatus, generation: Option<i64>, now: Timestamp) {
    let degraded: Vec<String> = status
        .holds
        .iter()
        .filter(|h| h.returned_at.is_none() && usable_now(h) < h.gpus)
        .filter_map(|h| {
            let c = h.usable.last()?;
            Some(match c.reason.as_str() {
                "NotReady" => format!(
                    "node {} is not Ready since {}: billed 0 of its {} GPUs",
                    h.node, c.at.0, h.gpus
                ),
                _ => format!(
                    "node {} has {} of its {} GPUs since {}: billed {}",
                    h.node, c.gpus, h.gpus, c.at.0, c.gpus
                ),
            })
        })
        .collect();
    if !degraded.is_empty() {
        set_condition(
            &mut status.conditions,
            NODES_DEGRADED,
            ConditionStatus::True,
            "NodesUnhealthy",
            &degraded.join("; "),
            generation,
            now,
        );
    } else if status.conditions.iter().any(|c| c.type_ == NODES_DEGRADED) {
        set_condition(
            &mut status.conditions,
            NODES_DEGRADED,
            ConditionStatus::False,
            "NodesHealthy",
            "every held node is Ready with the GPUs it was bound with",
            generation,
            now,
        );
    }
}

/// A lease whose last node was lost ended by the loss: say so rather than "all nodes went back".
fn ended_by_loss(status: &mut GpuLeaseStatus) {
    let last = status
        .holds
        .iter()
        .filter_map(|h| h.returned_at.as_ref().map(|t| t.0))
        .max();
    let lost_last: Vec<&str> = status
        .holds
        .iter()
        .filter(|h| h.lost && h.returned_at.as_ref().map(|t| t.0) == last)
        .map(|h| h.node.as_str())
        .collect();
    if status.phase == LeasePhase::Released
        && status.holds.iter().all(|h| h.returned_at.is_some())
        && !lost_last.is_empty()
    {
        let which = match lost_last.as_slice() {
            [one] => format!("node {one}"),
            many => format!("nodes {}", many.join(", ")),
        };
        status.reason = Some(format!(
            "ended: {which} left the cluster and the lease has no node left"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::UsableChange;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn hold(node: &str, returned: Option<i64>, lost: bool, usable: &[(i64, i32, &str)]) -> NodeHold {
        NodeHold {
            node: node.into(),
            gpus: 8,
            bound_at: Time(t(0)),
            returned_at: returned.map(|r| Time(t(r))),
            lost,
            usable: usable
                .iter()
                .map(|&(at, gpus, reason)| UsableChange {
                    at: Time(t(at)),
                    gpus,
                    reason: reason.into(),
                })
                .collect(),
        }
    }

    fn cond<'a>(s: &'a GpuLeaseStatus, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    }

    #[test]
    fn the_lease_says_which_nodes_were_lost_or_serve_less() {
        let mut s = GpuLeaseStatus {
            phase: LeasePhase::Bound,
            holds: vec![
                hold("a", Some(40), true, &[]),
                hold("b", None, false, &[(10, 0, "NotReady")]),
                hold("c", None, false, &[(20, 4, "Shrunk")]),
                hold("d", None, false, &[(5, 0, "NotReady"), (30, 8, "Healthy")]),
            ],
            ..GpuLeaseStatus::default()
        };
        conditions(&mut s, Some(1), t(50));
        let (status, reason, message) = cond(&s, NODE_LOST).unwrap();
        assert_eq!((status, reason), ("True", "NodeLeftCluster"));
        assert!(
            message.contains("node a left the cluster at 2027-01-15T08:00:40Z"),
            "{message}"
        );
        let (status, _, message) = cond(&s, NODES_DEGRADED).unwrap();
        assert_eq!(status, "True");
        assert!(
            message.contains("node b is not Ready since") && message.contains("billed 0 of its 8"),
            "{message}"
        );
        assert!(message.contains("node c has 4 of its 8 GPUs since"), "{message}");
        assert!(!message.contains("node d"), "d is well again: {message}");
        // All well again: NodesDegraded turns False; NodeLost stays as the record of the loss.
        s.holds.truncate(1);
        conditions(&mut s, Some(1), t(60));
        assert_eq!(cond(&s, NODES_DEGRADED).unwrap().0, "False");
        assert_eq!(cond(&s, NODE_LOST).unwrap().0, "True");
    }

    #[test]
    fn a_lease_whose_last_node_was_lost_says_it_ended_so() {
        let mut s = GpuLeaseStatus {
            phase: LeasePhase::Released,
            reason: Some("all nodes went back".into()),
            holds: vec![hold("a", Some(30), false, &[]), hold("b", Some(40), true, &[])],
            ..GpuLeaseStatus::default()
        };
        conditions(&mut s, None, t(50));
        assert_eq!(
            s.reason.as_deref(),
            Some("ended: node b left the cluster and the lease has no node left")
        );
        // Lost in the same second: both named.
        s.holds[0] = hold("a", Some(40), true, &[]);
        conditions(&mut s, None, t(50));
        assert_eq!(
            s.reason.as_deref(),
            Some("ended: nodes a, b left the cluster and the lease has no node left")
        );
        // The last node went back in the ordinary way: the reason stands.
        let mut s = GpuLeaseStatus {
            phase: LeasePhase::Released,
            reason: Some("all nodes went back".into()),
            holds: vec![hold("a", Some(30), true, &[]), hold("b", Some(40), false, &[])],
            ..GpuLeaseStatus::default()
        };
        conditions(&mut s, None, t(50));
        assert_eq!(s.reason.as_deref(), Some("all nodes went back"));
    }

    #[test]
    fn a_first_sighting_stands_until_it_changes_or_is_recorded() {
        let seen = Seen::default();
        assert_eq!(seen.since("l", "a", Sight::Lost, t(10)), t(10));
        assert_eq!(
            seen.since("l", "a", Sight::Lost, t(20)),
            t(10),
            "a failed write moves nothing"
        );
        assert_eq!(seen.since("l", "b", Sight::Usable(0), t(20)), t(20));
        assert_eq!(
            seen.since("l", "b", Sight::Usable(8), t(25)),
            t(25),
            "changed: seen anew"
        );
        // Recorded in the holds: forgotten.
        seen.recorded(
            "l",
            &[
                hold("a", Some(10), true, &[]),
                hold("b", None, false, &[(25, 8, "Healthy")]),
            ],
        );
        assert_eq!(seen.since("l", "a", Sight::Lost, t(30)), t(30));
        assert_eq!(seen.since("l", "b", Sight::Usable(8), t(30)), t(30));
    }
}
