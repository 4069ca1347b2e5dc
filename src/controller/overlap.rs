//! Pools that select the same nodes.
//!
//! ```text
//!   every pool (the cache's) + every node ──► per node: the pools that select it, and its owner
//!        owner = the pool whose marks the node carries (it stays with the pool holding it), else
//!                the oldest pool selecting it (creationTimestamp, then name) that is not being deleted
//!   ──► for the pool of this pass: the unmarked nodes another pool owns (not members here), and per
//!       other pool the nodes both select and how many this pool keeps (the Overlapping condition)
//! ```
//!
//! Only what the cluster shows decides (marks, timestamps, names), so every replica, every restart and any
//! order of passes gives the same membership.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::cache::node_gpus;
use crate::api::keys::POOL_LABEL;
use crate::api::{ConditionStatus, TenantPool, TenantPoolStatus, set_condition};
use crate::policy::PoolPolicy;

/// The condition type on a pool that shares nodes with another.
pub const CONDITION: &str = "Overlapping";
/// Its reason while nodes are shared.
pub const CONTESTED: &str = "NodesContested";

/// What one pool shares with others.
#[derive(Debug, Default, PartialEq)]
pub struct Overlap {
    /// Unmarked nodes this pool selects that an older pool owns, with that pool: not members here.
    pub claimed: HashMap<String, String>,
    /// Per other pool: the nodes both select.
    pub with: BTreeMap<String, Shared>,
}

/// Nodes two pools both select.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shared {
    pub nodes: u32,
    /// Of them, those this pool keeps.
    pub kept: u32,
}

/// A pool as overlap sees it: how it selects, and its rank (older first).
struct Candidate {
    name: String,
    created: i64,
    deleting: bool,
    resource: String,
    policy: PoolPolicy,
}

impl Candidate {
    fn of(pool: &TenantPool) -> Option<Self> {
        let name = pool.name_any();
        let deleting = pool.metadata.deletion_timestamp.is_some();
        let (policy, resource) = match pool.spec.to_policy(&name, deleting) {
            Ok(policy) => (policy, pool.spec.gpu_resource_name.clone()),
            Err(_) => {
                // A spec sublet cannot use selects as the last one it could (see `usable`).
                let (usable, _) = super::usable(Arc::new(pool.clone()));
                let policy = usable.spec.to_policy(&name, deleting).ok()?;
                (policy, usable.spec.gpu_resource_name.clone())
            }
        };
        Some(Self {
            created: pool
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(i64::MAX, |t| t.0.as_second()),
            name,
            deleting,
            resource,
            policy,
        })
    }

    fn selects(&self, node: &Node, labels: &BTreeMap<String, String>) -> bool {
        let p = &self.policy;
        node_gpus(node, &self.resource) > 0
            && p.node_selector.matches(labels)
            && (p.gpu_models.is_empty() || labels.get(&p.model_label).is_some_and(|m| p.gpu_models.contains(m)))
    }
}

/// What `pool` shares with the other `pools` over `nodes`. `pool` is the pass's own (it may be newer than
/// the cache's copy); a pool of the same name in `pools` is skipped.
pub fn of(pool: &TenantPool, pools: &[Arc<TenantPool>], nodes: &[Arc<Node>]) -> Overlap {
    let mut out = Overlap::default();
    let name = pool.name_any();
    let mut others: Vec<Candidate> = pools
        .iter()
        .filter(|p| p.name_any() != name)
        .filter_map(|p| Candidate::of(p))
        .collect();
    if others.is_empty() {
        return out;
    }
    let Some(me) = Candidate::of(pool) else {
        return out;
    };
    others.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let empty = BTreeMap::new();
    for node in nodes {
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let marked = labels.get(POOL_LABEL);
        if !me.selects(node, labels) && marked != Some(&me.name) {
            continue;
        }
        let sharing: Vec<&Candidate> = others.iter().filter(|o| o.selects(node, labels)).collect();
        if sharing.is_empty() {
            continue;
        }
        let owner: Option<&str> = match marked {
            Some(pool) => Some(pool.as_str()),
            None => std::iter::once(&me)
                .chain(sharing.iter().copied())
                .filter(|c| !c.deleting && c.selects(node, labels))
                .min_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)))
                .map(|c| c.name.as_str()),
        };
        let kept = owner == Some(me.name.as_str());
        if let (None, Some(owner), false) = (marked, owner, kept) {
            out.claimed.insert(node.name_any(), owner.to_string());
        }
        for other in sharing {
            let shared = out.with.entry(other.name.clone()).or_default();
            shared.nodes += 1;
            shared.kept += u32::from(kept);
        }
    }
    out
}

/// Sets the pool's `Overlapping` condition: True while another pool selects any of its nodes, naming each
/// such pool with the nodes both select and how many each keeps.
pub fn set(status: &mut TenantPoolStatus, overlap: &Overlap, generation: Option<i64>, now: jiff::Timestamp) {
    let (state, reason, message) = if overlap.with.is_empty() {
        (
            ConditionStatus::False,
            "NoOverlap",
            "no other pool selects this pool's nodes".to_string(),
        )
    } else {
        let parts: Vec<String> = overlap
            .with
            .iter()
            .map(|(other, s)| {
                format!(
                    "pool {other} selects {} of the same nodes: this pool keeps {}, {other} keeps {}",
                    s.nodes,
                    s.kept,
                    s.nodes - s.kept
                )
            })
            .collect();
        (
            ConditionStatus::True,
            CONTESTED,
            format!(
                "{}; a node belongs to one pool: the one holding it while it is out, else the older pool \
                 (creationTimestamp, then name); narrow the nodeSelectors so that they select disjoint nodes",
                parts.join("; ")
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        CONDITION,
        state,
        reason,
        &message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(name: &str, created: &str, selector: serde_json::Value) -> Arc<TenantPool> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool",
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeSelector": {"matchLabels": selector}}
            }))
            .unwrap(),
        )
    }

    fn node(name: &str, labels: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"nvidia.com/gpu": "8"}}
            }))
            .unwrap(),
        )
    }

    fn deleting(p: &Arc<TenantPool>) -> Arc<TenantPool> {
        let mut p = (**p).clone();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-01T00:00:00Z".parse().unwrap(),
        ));
        Arc::new(p)
    }

    #[test]
    fn the_older_pool_keeps_a_contested_node_in_any_order() {
        let old = pool("zeta", "2026-11-01T00:00:00Z", json!({"gpu": "a100"}));
        let new = pool("alpha", "2026-11-02T00:00:00Z", json!({"gpu": "a100"}));
        let nodes = vec![
            node("n1", json!({"gpu": "a100"})),
            node("n2", json!({"gpu": "a100"})),
            node("n3", json!({"gpu": "h100"})),
        ];
        for pools in [vec![old.clone(), new.clone()], vec![new.clone(), old.clone()]] {
            let o = of(&old, &pools, &nodes);
            assert!(o.claimed.is_empty(), "the older pool keeps both: {o:?}");
            assert_eq!(o.with["alpha"], Shared { nodes: 2, kept: 2 });
            let n = of(&new, &pools, &nodes);
            assert_eq!(n.claimed.len(), 2);
            assert_eq!(n.claimed["n1"], "zeta");
            assert_eq!(n.with["zeta"], Shared { nodes: 2, kept: 0 });
        }
    }

    #[test]
    fn same_age_goes_by_name() {
        let a = pool("a", "2026-11-01T00:00:00Z", json!({}));
        let b = pool("b", "2026-11-01T00:00:00Z", json!({}));
        let nodes = vec![node("n1", json!({}))];
        let pools = vec![b.clone(), a.clone()];
        assert!(of(&a, &pools, &nodes).claimed.is_empty());
        assert_eq!(of(&b, &pools, &nodes).claimed["n1"], "a");
    }

    #[test]
    fn a_node_out_stays_with_the_pool_holding_it() {
        // The newer pool lent n1 before the older one's selector came to match it.
        let old = pool("old", "2026-11-01T00:00:00Z", json!({}));
        let new = pool("new", "2026-11-02T00:00:00Z", json!({}));
        let nodes = vec![
            node("n1", json!({POOL_LABEL: "new", "sublet.dev/state": "lent"})),
            node("n2", json!({})),
        ];
        let pools = vec![old.clone(), new.clone()];
        let n = of(&new, &pools, &nodes);
        // n1 stays with the pool holding it; the unmarked n2 is the older pool's.
        assert_eq!(
            n.claimed,
            HashMap::from([("n2".to_string(), "old".to_string())]),
            "{n:?}"
        );
        assert_eq!(n.with["old"], Shared { nodes: 2, kept: 1 });
        let o = of(&old, &pools, &nodes);
        assert!(o.claimed.is_empty(), "n1 is not unmarked, n2 is its own");
        assert_eq!(o.with["new"], Shared { nodes: 2, kept: 1 });
    }

    #[test]
    fn a_pool_being_deleted_claims_nothing_and_a_lone_pool_shares_nothing() {
        let old = pool("old", "2026-11-01T00:00:00Z", json!({}));
        let new = pool("new", "2026-11-02T00:00:00Z", json!({}));
        let nodes = vec![node("n1", json!({}))];
        let pools = vec![deleting(&old), new.clone()];
        assert!(of(&new, &pools, &nodes).claimed.is_empty());
        assert_eq!(of(&new, std::slice::from_ref(&new), &nodes), Overlap::default());
        // Disjoint selectors share nothing.
        let h100 = pool("h100", "2026-11-01T00:00:00Z", json!({"gpu": "h100"}));
        assert!(
            of(&new, &[h100, new.clone()], &[node("n1", json!({"gpu": "a100"}))])
                .with
                .is_empty()
        );
    }

    #[test]
    fn the_condition_names_the_other_pool_and_the_counts() {
        let mut status = TenantPoolStatus::default();
        let now = jiff::Timestamp::UNIX_EPOCH;
        let shared = Overlap {
            claimed: HashMap::new(),
            with: [("b".to_string(), Shared { nodes: 2, kept: 2 })].into(),
        };
        set(&mut status, &shared, None, now);
        let c = &status.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            (CONDITION, "True", CONTESTED)
        );
        assert!(
            c.message
                .starts_with("pool b selects 2 of the same nodes: this pool keeps 2, b keeps 0"),
            "{}",
            c.message
        );
        set(&mut status, &Overlap::default(), None, now);
        assert_eq!(status.conditions[0].status, "False");
    }

    #[test]
    fn a_warning_once_when_pools_start_to_share_nodes() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mut apart = TenantPoolStatus::default();
        set(&mut apart, &Overlap::default(), None, now);
        let mut sharing = TenantPoolStatus::default();
        let shared = Overlap {
            claimed: HashMap::new(),
            with: [("b".to_string(), Shared { nodes: 1, kept: 0 })].into(),
        };
        set(&mut sharing, &shared, None, now);
        let warned = super::super::events::pool_warnings(&apart.conditions, &sharing.conditions);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].0, CONDITION);
        assert!(
            warned[0].1.contains("pool b selects 1 of the same nodes"),
            "{}",
            warned[0].1
        );
        assert!(
            super::super::events::pool_warnings(&sharing.conditions, &sharing.conditions).is_empty(),
            "not again while it holds"
        );
    }
}
