//! `sublet simulate`: replay a trace of internal demand through the planner, next to an oracle and baselines.
//!
//! ```text
//!  trace (Helios folder | generic CSV) ──load──► Trace: groups, demand per step (gaps held, marked unknown)
//!        │
//!        ├─► oracle::compute ──► what a clairvoyant pool lends per step and group (the harvest bound)
//!        ├─► sublet::run     ──► the controller's plan() on one Snapshot, step by step ─┐
//!        └─► baseline::run   ──► no-lending, static-N, naive (2nd thread)              ├─► Meter per policy
//!                                                                                      ▼
//!                                   report: PolicyReport rows ──► table | JSON;  plot: SVG of the sublet run
//! ```
//!
//! What is measured, per policy, over each group's steps with a reading (`dt` = the trace step):
//!
//! - `capacity_gpu_hours`: Σ capacity·dt; `idle_gpu_hours`: Σ (capacity − min(demand, capacity))·dt.
//!   Demand above a group's capacity is the group's own queueing and is counted nowhere.
//! - `oracle_gpu_hours`: what the [`oracle`] lends; `harvested_gpu_hours`: Σ per group and step of
//!   min(GPUs on nodes a tenant holds, GPUs the oracle lends), so harvest never exceeds the oracle and
//!   `efficiency` = harvested / oracle is at most 1. Tenant-held GPUs beyond that were either wanted by
//!   internal work at that step (that is the delay below) or lent over a stretch too short to lend safely.
//! - internal delay: per group and step, delayed = max(0, min(demand, capacity) − (capacity − GPUs out of
//!   internal use)): the GPUs of the group's own demand that would have run without lending but cannot now,
//!   because nodes are lent, leased or under notice. `internal_delay_gpu_minutes` = Σ delayed·dt;
//!   a waiting episode is a maximal run of steps of one group with delayed > 0, lasting steps·dt seconds
//!   (`_p50`, `_p99` nearest rank, `_max`); `internal_delayed_fraction` = Σ delayed / Σ min(demand, capacity).
//! - `notices`: notices given; `evictions_per_1000_lent_gpu_hours`: tenant pods evicted at a deadline per
//!   1,000 GPU-hours that tenants held nodes (notice time included); `revenue`: those GPU-hours at the pool's
//!   price (nodes of a trace carry no GPU model, so the default price, never under the floor).

pub mod baseline;
pub mod fleet;
pub mod oracle;
pub mod plot;
pub mod report;
pub mod sublet;
pub mod sweep;
pub mod tenants;
pub mod trace;

use crate::api::TenantPool;
use crate::policy::PoolPolicy;

pub use baseline::Baseline;
pub use report::{PolicyReport, Report, TraceSummary};
pub use tenants::TenantSpec;
pub use trace::{GroupSpec, Trace, TraceError, load, load_csv, load_helios};

/// The default pool of `sublet simulate`: the defaults of an empty `TenantPool` spec with the learned
/// reserve on (its defaults: the burst reserve and reclaim ahead), priced at 2.00 per GPU-hour so that
/// revenue shows.
pub const DEFAULT_POOL_YAML: &str = "\
apiVersion: sublet.dev/v1alpha1
kind: TenantPool
metadata:
  name: simulate
spec:
  reserve:
    learned: {}
  pricing:
    defaultPerGpuHour: 2.0
";

/// A pool file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PoolFileError {
    #[error("not YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// What the API server would answer to the file, one `field: message` per refused value.
    #[error("not a TenantPool the API server would take: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("not a TenantPool: {0}")]
    Parse(#[from] serde_json::Error),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

/// Reads a TenantPool YAML into the planner's policy, after checking it with the CRD's schema and CEL rules
/// (what a cluster would refuse, this refuses too, with the rule's message).
pub fn pool_policy(yaml: &str) -> Result<PoolPolicy, PoolFileError> {
    let raw: serde_json::Value = serde_yaml_ng::from_str(yaml)?;
    let errors = crate::api::tenant_pool_errors(&raw);
    if !errors.is_empty() {
        return Err(PoolFileError::Invalid(errors));
    }
    let pool: TenantPool = serde_json::from_value(raw)?;
    let name = pool.metadata.name.clone().unwrap_or_else(|| "simulate".into());
    Ok(pool.spec.to_policy(&name, false)?)
}

/// What to replay besides the trace.
#[derive(Clone, Debug)]
pub struct Options {
    /// The pool of the `sublet` policy; its notice and minimum lease also rule the oracle and baselines.
    pub policy: PoolPolicy,
    /// One `static-N` baseline per entry.
    pub static_percents: Vec<u32>,
    /// Lease requests; None: tenants want every lent node at once.
    pub tenants: Option<TenantSpec>,
    /// Seconds a tenant pod evicted at the deadline takes to be gone (its termination grace period).
    pub eviction_grace_seconds: i64,
}

/// The report, and the sublet run's totals per step (over all groups, and per group) for the plot.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub report: Report,
    pub series: sublet::Series,
    /// The same per node group, for the plot's panels.
    pub by_group: sublet::GroupSeries,
}

/// Replays every policy. `progress(done, total)` follows the sublet replay, the longest one.
pub fn run(trace: &Trace, opts: &Options, progress: &mut dyn FnMut(usize, usize)) -> Outcome {
    let policy = &opts.policy;
    let notice = policy.notice_seconds;
    let oracle = oracle::compute(trace, notice, policy.min_lease_seconds);
    let price = policy.prices.for_model(None);
    let mut baselines = vec![Baseline::NoLending];
    baselines.extend(opts.static_percents.iter().map(|&p| Baseline::Static(p)));
    baselines.push(Baseline::Naive);
    let total = trace.steps();
    let arrivals = opts
        .tenants
        .as_ref()
        .map(|t| t.arrivals(total as i64 * trace.step_seconds));
    let arrivals = arrivals
        .as_deref()
        .zip(opts.tenants.as_ref().map(|t| t.patience_seconds));
    let ((meter, series, by_group), others) = std::thread::scope(|scope| {
        let others = scope.spawn(|| {
            baselines
                .iter()
                .map(|&b| {
                    (
                        b.name(),
                        baseline::run(trace, &oracle, b, notice, arrivals, price, opts.eviction_grace_seconds),
                    )
                })
                .collect::<Vec<_>>()
        });
        let grace = opts.eviction_grace_seconds;
        let own = sublet::run(trace, &oracle, policy.clone(), arrivals, grace, &mut |done| {
            progress(done, total)
        });
        (own, others.join().expect("the baseline thread does not panic"))
    });
    let mut policies = vec![oracle_row(&others[0].1, &oracle, trace, price)];
    policies.push(PolicyReport::from_meter("sublet", &meter, price));
    policies.extend(others.iter().map(|(name, m)| PolicyReport::from_meter(name, m, price)));
    let report = Report {
        trace: TraceSummary {
            name: trace.name.clone(),
            groups: trace.groups.len(),
            gpus: trace.capacity_gpus(),
            steps: total,
            step_seconds: trace.step_seconds,
            start: trace.start.to_string(),
            unknown_steps: trace.unknown_steps(),
            notice_seconds: notice,
            price_per_gpu_hour: price,
        },
        policies,
    };
    Outcome {
        report,
        series,
        by_group,
    }
}

/// The oracle as a row: it holds exactly what it lends, delays nothing, and each stretch that ends before
/// the trace does ends in a notice and an eviction (tenants always run pods).
fn oracle_row(no_lending: &fleet::Meter, oracle: &oracle::Oracle, trace: &Trace, price: f64) -> PolicyReport {
    let lent: f64 = oracle.lent.iter().map(|&g| f64::from(g)).sum::<f64>() * trace.step_seconds as f64;
    let m = fleet::Meter {
        oracle: lent,
        harvested: lent,
        leased: lent,
        delayed: 0.0,
        episodes: vec![],
        notices: oracle.notices,
        evictions: oracle.notices,
        ..no_lending.clone()
    };
    PolicyReport::from_meter("oracle", &m, price)
}
