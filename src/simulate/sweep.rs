//! `sublet simulate --sweep`: the frontier of the `sublet` policy over the learned reserve's burst quantile,
//! the idle window and the notice, each point a full replay of the trace (the oracle recomputed per notice).
//!
//! ```text
//!  for notice in notices:   oracle(notice) ─┐
//!    for quantile × idle:   pool with them ─┴─► sublet::run ─► η, delay p99, delayed fraction ─► one row
//! ```
//! Points are replayed on as many threads as the machine has cores (at most two: the figures are the same
//! whatever the order).

use serde::Serialize;

use super::report::PolicyReport;
use super::trace::Trace;
use super::{oracle, sublet};
use crate::policy::PoolPolicy;

/// What is swept.
#[derive(Clone, Debug)]
pub struct Grid {
    pub quantiles: Vec<f64>,
    pub idle_seconds: Vec<i64>,
    pub notice_seconds: Vec<i64>,
}

impl Default for Grid {
    fn default() -> Self {
        Self {
            quantiles: vec![0.9, 0.95, 0.99, 0.999],
            idle_seconds: vec![300, 900, 1800],
            notice_seconds: vec![30, 60, 120],
        }
    }
}

/// One replayed point. `meets_target`: η ≥ 0.95, internal delay p99 ≤ 120 s and delayed fraction ≤ 0.001;
/// `within_notice`: p99 ≤ the notice itself (out of reach under a minute on a trace of minutes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub burst_quantile: f64,
    pub idle_seconds: i64,
    pub notice_seconds: i64,
    pub efficiency: f64,
    pub internal_delay_p99_seconds: i64,
    pub internal_delayed_fraction: f64,
    pub mean_reserve_gpus: f64,
    pub meets_target: bool,
    pub within_notice: bool,
}

/// The target's bound on the p99 internal delay, in seconds.
pub const TARGET_P99_SECONDS: i64 = 120;

/// Replays every point of `grid` with `base` (which must carry a learned reserve for the quantile to act).
pub fn run(
    trace: &Trace,
    base: &PoolPolicy,
    grid: &Grid,
    grace: i64,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Point> {
    let mut jobs = Vec::new();
    for &notice in &grid.notice_seconds {
        for &idle in &grid.idle_seconds {
            for &q in &grid.quantiles {
                jobs.push((q, idle, notice));
            }
        }
    }
    let total = jobs.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 2);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; total]);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(q, idle, notice)) = jobs.get(i) else { break };
                    let point = one(trace, base, q, idle, notice, grace);
                    results.lock().expect("sweep results")[i] = Some(point);
                    progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("sweep results")
        .into_iter()
        .flatten()
        .collect()
}

fn one(trace: &Trace, base: &PoolPolicy, q: f64, idle: i64, notice: i64, grace: i64) -> Point {
    let mut policy = base.clone();
    policy.idle_for_seconds = idle;
    policy.notice_seconds = notice;
    if let Some(l) = policy.reserve.learned.as_mut() {
        l.burst_quantile = q;
    }
    let oracle = oracle::compute(trace, notice, policy.min_lease_seconds);
    let (meter, _, _) = sublet::run(trace, &oracle, policy, None, grace, &mut |_| {});
    let r = PolicyReport::from_meter("sublet", &meter, 0.0);
    Point {
        burst_quantile: q,
        idle_seconds: idle,
        notice_seconds: notice,
        efficiency: r.efficiency,
        internal_delay_p99_seconds: r.internal_delay_p99_seconds,
        internal_delayed_fraction: r.internal_delayed_fraction,
        mean_reserve_gpus: r.mean_reserve_gpus,
        meets_target: r.efficiency >= 0.95
            && r.internal_delay_p99_seconds <= TARGET_P99_SECONDS
            && r.internal_delayed_fraction <= 0.001,
        within_notice: r.internal_delay_p99_seconds <= notice,
    }
}

/// The frontier as a Markdown table, one row per point.
pub fn table(trace: &str, points: &[Point]) -> String {
    let mut out = format!(
        "trace {trace}: target η ≥ 0.95, p99 delay ≤ {TARGET_P99_SECONDS} s, delayed fraction ≤ 0.001\n\n\
         | notice s | idle s | burst q | η | p99 delay s | delayed frac | reserve GPUs | target | p99 ≤ notice |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | :---: |\n"
    );
    for p in points {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {} | {:.5} | {:.1} | {} | {} |\n",
            p.notice_seconds,
            p.idle_seconds,
            p.burst_quantile,
            p.efficiency,
            p.internal_delay_p99_seconds,
            p.internal_delayed_fraction,
            p.mean_reserve_gpus,
            if p.meets_target { "met" } else { "–" },
            if p.within_notice { "yes" } else { "–" }
        ));
    }
    out
}
