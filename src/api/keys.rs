//! Label, taint, annotation and finalizer names under `sublet.dev/`.
//!
//! Nodes carry sublet's state in these keys so that `kubectl get nodes -L sublet.dev/state` shows it
//! and a restarted controller rebuilds everything from the cluster.

/// Node label: the pool a node is lent through.
pub const POOL_LABEL: &str = "sublet.dev/pool";
/// Node label: `lent`, `leased`, `reclaiming` or `scrubbing` (absent while the node serves internal work).
pub const STATE_LABEL: &str = "sublet.dev/state";
/// Node label: the lease (`NAMESPACE.NAME`) a node is bound to.
pub const LEASE_LABEL: &str = "sublet.dev/lease";
/// Node annotation: the UID of the lease a node is bound to. A lease deleted and created again under the
/// same name is another lease: it never takes over the nodes of the one before.
pub const LEASE_UID_ANNOTATION: &str = "sublet.dev/lease-uid";
/// Node annotation: when the node entered its current sublet state (RFC 3339).
pub const SINCE_ANNOTATION: &str = "sublet.dev/since";
/// Node annotation: when the node was last returned to internal use (RFC 3339); starts the cool-down.
pub const RETURNED_ANNOTATION: &str = "sublet.dev/returned-at";
/// Node and pod annotation: the reclaim deadline (RFC 3339) given with the notice; it never moves.
pub const DEADLINE_ANNOTATION: &str = "sublet.dev/reclaim-deadline";
/// Taint key on a lent node without a lease: keeps internal pods off, value is the pool.
pub const LENT_TAINT: &str = "sublet.dev/lent";
/// Taint key on a leased node: value is the lease (`NAMESPACE.NAME`); only that lease's pods tolerate it.
pub const LEASE_TAINT: &str = "sublet.dev/lease";
/// Namespace label that marks a tenant namespace when a pool names no selector of its own.
pub const TENANT_NAMESPACE_LABEL: &str = "sublet.dev/tenant";
/// Finalizer on a TenantPool: its nodes are returned through the notice path before it goes.
pub const POOL_FINALIZER: &str = "sublet.dev/return-nodes";
/// Finalizer on a GpuLease: a deleted lease stays, and is billed, until its last node is back and its final
/// account is recorded in the pool's status.
pub const LEASE_FINALIZER: &str = "sublet.dev/bill-until-returned";
/// Field manager name for every write sublet makes.
pub const FIELD_MANAGER: &str = "sublet";

/// Node annotation: the scrub Job (in sublet's namespace) a scrubbing node waits for.
pub const SCRUB_JOB_ANNOTATION: &str = "sublet.dev/scrub-job";
/// Node annotation: why the node's scrub failed; it stays out of use until the Job is deleted.
pub const SCRUB_FAILED_ANNOTATION: &str = "sublet.dev/scrub-failed";
/// Job and pod label: the node a scrub Job runs on.
pub const SCRUB_NODE_LABEL: &str = "sublet.dev/scrub-node";

/// Taint key on a node under reclaim notice: no new tenant pod lands there; value is the lease.
pub const RECLAIMING_TAINT: &str = "sublet.dev/reclaiming";

/// The lease key on node labels and taints: the planner's own vocabulary, named here with the other keys.
pub use crate::policy::lease_key;
