//! The custom resources sublet serves (`sublet.dev/v1alpha1`) and the names it writes on nodes and pods.
//!
//! ```text
//!   TenantPool (cluster) ──selects──▶ Nodes ──carry──▶ sublet.dev/* labels, taints, annotations
//!        ▲                                                   ▲
//!   GpuLease (tenant ns) ──binds to── nodes of its pool ─────┘
//! ```
//!
//! Everything the controller needs after a restart is read back from these objects and from the
//! node and pod metadata named in [`keys`].

mod condition;
pub mod keys;
mod lease;
pub mod pod_gpus;
mod policy;
mod pool;
mod scrub;
mod validate;

pub use condition::{Condition, ConditionStatus, set_condition};
pub use lease::{GpuLease, GpuLeaseSpec, GpuLeaseStatus, LeasePhase, NodeHold, NodeNotice, UsableChange, cost_text};
pub use policy::selector;
pub use pool::{
    ClassReserve, DemandSources, EndedLease, EndedTotals, IdleRule, KueueDemand, LearnedReserve, LendingWindow,
    MemberNode, Mode, NodeState, PendingPodsDemand, PoolTotals, Pricing, PromqlDemand, ReclaimPolicy, Reserve,
    TenantPool, TenantPoolSpec, TenantPoolStatus, UtilizationSource, Weekday,
};
pub use scrub::ScrubSpec;
pub use validate::tenant_pool_errors;

/// The API group of every sublet custom resource.
pub const GROUP: &str = "sublet.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
