//! The states a node and a lease go through. They appear in custom-resource status (hence the schema derive)
//! and on node labels.

use serde::{Deserialize, Serialize};

/// The state of a node as sublet sees it.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum NodeState {
    /// Serving internal work (sublet has no label or taint on it).
    #[default]
    Internal,
    /// Out of internal use, waiting for a lease.
    Lent,
    /// Bound to a lease.
    Leased,
    /// Under reclaim notice.
    Reclaiming,
    /// Left by its holder, held out of use until the pool's scrub completes (no holder, not internal).
    Scrubbing,
}

impl NodeState {
    /// The value of the `sublet.dev/state` label (none for `Internal`).
    pub fn label(self) -> Option<&'static str> {
        match self {
            Self::Internal => None,
            Self::Lent => Some("lent"),
            Self::Leased => Some("leased"),
            Self::Reclaiming => Some("reclaiming"),
            Self::Scrubbing => Some("scrubbing"),
        }
    }

    /// Reads a `sublet.dev/state` label value.
    pub fn from_label(value: &str) -> Option<Self> {
        match value {
            "lent" => Some(Self::Lent),
            "leased" => Some(Self::Leased),
            "reclaiming" => Some(Self::Reclaiming),
            "scrubbing" => Some(Self::Scrubbing),
            _ => None,
        }
    }

    /// Whether the node is out of internal use.
    pub fn is_out(self) -> bool {
        self != Self::Internal
    }
}

/// Where a lease is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum LeasePhase {
    /// Waiting for nodes.
    #[default]
    Pending,
    /// Nodes are bound; the tenant's pods may run on them.
    Bound,
    /// Notice given on at least one node; see `noticeDeadline`.
    Reclaiming,
    /// All nodes went back; the lease is finished.
    Released,
    /// The lease's duration ran out and its nodes went back.
    Expired,
}

impl LeasePhase {
    /// Whether the lease has finished for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Released | Self::Expired)
    }
}
