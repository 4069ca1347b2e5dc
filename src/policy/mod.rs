//! The lending planner: pure decisions, no Kubernetes, no async, no I/O.
//!
//! ```text
//!   Snapshot (nodes, GPU pods, leases, demand, signals, history, now)
//!        │
//!        ▼  plan()
//!   Plan { steps: [Lend | Unlend | Bind | Notice | AnnotatePod | Evict | Return] + causes and reasons,
//!          totals, ledger, per-node and per-lease reports }
//! ```
//!
//! The controller observes the cluster into a [`Snapshot`] and carries out the [`Plan`]; the simulator
//! replays traces through the very same [`plan`].

mod classes;
mod config;
mod draft;
mod health;
mod history;
pub mod ideal;
mod lease_key;
mod output;
mod overlap;
mod plan;
mod reclaim;
pub mod scrub;
mod selector;
mod snapshot;
mod state;

pub use config::{LearnedPolicy, PolicyError, PoolPolicy, Prices, ReservePolicy, WindowRange, Windows, weekday_index};
pub use history::{BURST_MINUTES_NEEDED, DemandHistory};
pub use lease_key::{KeyedLease, MAX_NAMESPACE_LEN, lease_key, refusals};
pub use output::{Action, Cause, ClassReport, LeaseReport, NodeReport, Plan, Step, Totals};
pub use plan::{full_notice_deadline, plan};
pub use scrub::{JobOutcome, ScrubJob, ScrubPolicy, ScrubReport, ScrubStage, ScrubView};
pub use selector::{Requirement, Selector};
pub use snapshot::{
    Demand, InternalLoad, LeaseView, Marks, NodeView, PodPhase, PodView, PoolLedger, Signals, Snapshot,
    SnapshotBuilder, Utilization,
};
pub use state::{LeasePhase, NodeState};

#[cfg(test)]
mod tests;
