//! sublet lends an organisation's idle GPU nodes to outside tenants and takes them back, with notice,
//! when internal work needs them.
//!
//! ```text
//!   chaos    `sublet chaos`: the controller as a child process through many cycles while it is killed, its
//!            writes fail, nodes vanish, leases churn and modes flip; an independent watch checks it (`demo`)
//!   api      the custom resources (TenantPool, GpuLease) and the sublet.dev/ keys on nodes and pods
//!   crd      the CustomResourceDefinitions generated from `api`
//!   demo     `sublet demo`: the controller against the sandbox with a simulated cluster and workload
//!            (only with the `demo` feature, which brings in the sandbox API server, crates/sandbox)
//!   cli      the `sublet` command line
//!   policy   the pure lending planner: Snapshot -> plan() -> Plan
//!   signals  GPU utilization (Prometheus, DCGM) and internal demand (Kueue, PromQL) for each pass
//!   simulate replays demand traces through the planner, an oracle and baselines
//! ```
#![forbid(unsafe_code)]

pub mod api;
#[cfg(feature = "demo")]
pub mod chaos;
pub mod cli;
pub mod controller;
pub mod crd;
#[cfg(feature = "demo")]
pub mod demo;
pub mod policy;
pub mod signals;
pub mod simulate;
