//! The baselines, replayed on the same cluster and meter as the planner:
//!
//! - `no-lending`: nothing is ever lent;
//! - `static-N`: N% of each group's nodes (rounded down to whole nodes) are leased from the start and never
//!   come back, whatever internal work wants;
//! - `naive`: every node without internal work is leased the step it empties (no idle window, no reserve,
//!   no cool-down); when a group's demand does not fit its internal nodes, the fewest leased nodes that
//!   cover it get notice and come back at the deadline, their tenant pods evicted.

use super::cluster::{Cluster, Meter, Use};
use super::oracle::Oracle;
use super::trace::Trace;

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Baseline {
    NoLending,
    Static(u32),
    Naive,
}

impl Baseline {
    pub fn name(self) -> String {
        match self {
            Self::NoLending => "no-lending".into(),
            Self::Static(p) => format!("static-{p}"),
            Self::Naive => "naive".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Internal,
    Leased,
    /// Under notice until this second from the trace start.
    Reclaiming(i64),
}

/// Replays `trace` under a baseline.
pub fn run(trace: &Trace, oracle: &Oracle, baseline: Baseline, notice_seconds: i64) -> Meter {
    let k = trace.groups.len();
    let mut cluster = Cluster::new(trace);
    let mut state = vec![State::Internal; cluster.len()];
    let mut meter = Meter::new(k);
    if let Baseline::Static(percent) = baseline {
        for range in &cluster.groups {
            let lend = range.len() * percent.min(100) as usize / 100;
            state[range.end - lend..range.end].fill(State::Leased);
        }
    }
    for step in 0..trace.steps() {
        let now = step as i64 * trace.step_seconds;
        // Deadlines that have come: the tenant's pods are evicted and the node is back.
        for s in &mut state {
            if let State::Reclaiming(deadline) = *s
                && deadline <= now
            {
                *s = State::Internal;
                meter.evictions += 1;
            }
        }
        for g in 0..k {
            let want = trace.demand[step * k + g].min(trace.groups[g].capacity_gpus);
            let placed = cluster.place(g, want, now, |n| state[n] == State::Internal);
            if baseline != Baseline::Naive {
                continue;
            }
            let range = cluster.groups[g].clone();
            let incoming: u32 = range
                .clone()
                .filter(|&n| matches!(state[n], State::Reclaiming(_)))
                .map(|n| cluster.gpus[n])
                .sum();
            let mut short = i64::from(want - placed) - i64::from(incoming);
            let mut leased: Vec<usize> = range.clone().filter(|&n| state[n] == State::Leased).collect();
            leased.sort_by_key(|&n| (std::cmp::Reverse(cluster.gpus[n]), n));
            for n in leased {
                if short <= 0 {
                    break;
                }
                short -= i64::from(cluster.gpus[n]);
                meter.notices += 1;
                if notice_seconds <= 0 {
                    state[n] = State::Internal;
                    meter.evictions += 1;
                } else {
                    state[n] = State::Reclaiming(now + notice_seconds);
                }
            }
            if want > placed {
                // Nodes that came back at once (no notice) take the waiting work now.
                cluster.place(g, want, now, |n| state[n] == State::Internal);
            }
            for n in range {
                if state[n] == State::Internal && cluster.used[n] == 0 && want <= placed {
                    state[n] = State::Leased;
                }
            }
        }
        meter.record(trace, &cluster, step, oracle.at(step, k), |n| match state[n] {
            State::Internal => Use::Internal,
            State::Leased | State::Reclaiming(_) => Use::Leased,
        });
    }
    meter.finish();
    meter
}
