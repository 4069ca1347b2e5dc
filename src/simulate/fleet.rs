//! The fleet every policy shares: the simulated cluster's nodes per group, internal work placed on them, and
//! the meter that turns each step's node states into the report's numbers.
//!
//! Internal work is placed as a bin-packing scheduler would: new GPUs go to the fullest internal node that
//! has room, then to the empty internal node that was busy most recently (long-idle nodes stay idle, as
//! lending wants); finished GPUs leave the emptiest nodes first. Work never lands on a node that is out of
//! internal use or not in the cluster; what does not fit waits (pending).
//!
//! When a group's capacity changes, its last nodes leave first and join last ([`Fleet::set_capacity`]):
//! the work on a leaving node goes back to waiting and is placed again as the scheduler would, a joining
//! node is internal and idle.

use std::ops::Range;

use super::trace::Trace;

/// The nodes of all groups, in group order.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub groups: Vec<Range<usize>>,
    pub group_of: Vec<usize>,
    pub gpus: Vec<u32>,
    /// Internal GPUs in use per node.
    pub used: Vec<u32>,
    /// Since when (seconds from the trace start) no internal GPU ran on the node; None while one runs.
    pub idle_since: Vec<Option<i64>>,
    /// Whether the node is in the cluster now.
    pub present: Vec<bool>,
    order: Vec<usize>,
}

impl Fleet {
    pub fn new(trace: &Trace) -> Self {
        let mut groups = Vec::new();
        let mut group_of = Vec::new();
        let mut gpus = Vec::new();
        for (g, spec) in trace.groups.iter().enumerate() {
            let first = gpus.len();
            for size in spec.node_sizes() {
                gpus.push(size);
                group_of.push(g);
            }
            groups.push(first..gpus.len());
        }
        let n = gpus.len();
        Self {
            groups,
            group_of,
            gpus,
            used: vec![0; n],
            idle_since: vec![Some(0); n],
            present: vec![true; n],
            order: Vec::with_capacity(n),
        }
    }

    /// Makes group `g` hold its first nodes that fit in `gpus`, at `at` seconds. Returns the nodes that left
    /// (their internal work dropped: the next [`Fleet::place`] puts it back where it fits) and those that
    /// joined (internal and idle from `at`).
    pub fn set_capacity(&mut self, g: usize, gpus: u32, at: i64) -> (Vec<usize>, Vec<usize>) {
        let (mut left, mut joined) = (Vec::new(), Vec::new());
        let mut sum = 0;
        for n in self.groups[g].clone() {
            let stays = sum + self.gpus[n] <= gpus;
            if stays {
                sum += self.gpus[n];
            }
            match (self.present[n], stays) {
                (true, false) => {
                    self.present[n] = false;
                    self.used[n] = 0;
                    self.idle_since[n] = None;
                    left.push(n);
                }
                (false, true) => {
                    self.present[n] = true;
                    self.idle_since[n] = Some(at);
                    joined.push(n);
                }
                _ => {}
            }
        }
        (left, joined)
    }

    pub fn len(&self) -> usize {
        self.gpus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }

    /// Places `target` internal GPUs of group `g` on its nodes for which `internal(n)` holds, moving as few
    /// as possible from the current placement. Returns the GPUs placed (the rest is pending).
    pub fn place(&mut self, g: usize, target: u32, at: i64, internal: impl Fn(usize) -> bool) -> u32 {
        let range = self.groups[g].clone();
        let mut current: u32 = range.clone().map(|n| self.used[n]).sum();
        self.order.clear();
        if target < current {
            self.order.extend(range.filter(|&n| self.used[n] > 0));
            self.order.sort_by_key(|&n| (self.used[n], n));
            let mut drop = current - target;
            for i in 0..self.order.len() {
                let n = self.order[i];
                let take = drop.min(self.used[n]);
                self.used[n] -= take;
                drop -= take;
                if self.used[n] == 0 {
                    self.idle_since[n] = Some(at);
                }
                if drop == 0 {
                    break;
                }
            }
            current = target;
        } else if target > current {
            self.order
                .extend(range.filter(|&n| self.present[n] && internal(n) && self.used[n] < self.gpus[n]));
            let (used, idle) = (&self.used, &self.idle_since);
            // Fullest first; among empty ones the most recently busy first.
            self.order.sort_by_key(|&n| {
                (
                    std::cmp::Reverse(used[n]),
                    std::cmp::Reverse(idle[n].unwrap_or(i64::MAX)),
                    n,
                )
            });
            let mut add = target - current;
            for i in 0..self.order.len() {
                let n = self.order[i];
                let put = add.min(self.gpus[n] - self.used[n]);
                self.used[n] += put;
                add -= put;
                current += put;
                self.idle_since[n] = None;
                if add == 0 {
                    break;
                }
            }
        }
        current
    }
}

/// Where a node stands, as the meter counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    Internal,
    /// Out of internal use, no tenant on it.
    Lent,
    /// A tenant holds it (bound, or under notice).
    Leased,
}

/// Sums per policy, in GPU-seconds, over the known steps.
#[derive(Clone, Debug, Default)]
pub struct Meter {
    pub capacity: f64,
    pub idle: f64,
    pub oracle: f64,
    pub harvested: f64,
    pub leased: f64,
    pub demand: f64,
    pub delayed: f64,
    /// Finished waiting episodes, in seconds.
    pub episodes: Vec<i64>,
    pub(super) open: Vec<i64>,
    pub notices: u64,
    /// Lent or leased nodes that left the cluster (their leases ended without notice).
    pub lost: u64,
    /// Notices given ahead of a rise (sublet's reclaim ahead).
    pub ahead_notices: u64,
    pub evictions: u64,
    /// Σ GPUs the policy kept from lending as its reserve · dt, over the steps with a reading.
    pub reserve: f64,
    /// Seconds of those steps.
    pub reserve_seconds: f64,
    pub(super) out: Vec<u32>,
    pub(super) held: Vec<u32>,
}

impl Meter {
    pub fn new(groups: usize) -> Self {
        Self {
            open: vec![0; groups],
            out: vec![0; groups],
            held: vec![0; groups],
            ..Self::default()
        }
    }

    /// Counts one step: `use_of(n)` says where node `n` stands after the policy acted; `oracle[g]` is what
    /// the oracle lends in group `g` at this step.
    pub fn record(&mut self, trace: &Trace, fleet: &Fleet, step: usize, oracle: &[u32], use_of: impl Fn(usize) -> Use) {
        let k = trace.groups.len();
        let dt = trace.step_seconds as f64;
        self.out.iter_mut().for_each(|v| *v = 0);
        self.held.iter_mut().for_each(|v| *v = 0);
        for n in 0..fleet.len() {
            let g = fleet.group_of[n];
            match use_of(n) {
                Use::Internal => {}
                Use::Lent => self.out[g] += fleet.gpus[n],
                Use::Leased => {
                    self.out[g] += fleet.gpus[n];
                    self.held[g] += fleet.gpus[n];
                }
            }
        }
        for (g, &lendable) in oracle.iter().enumerate().take(k) {
            if !trace.known[step * k + g] {
                self.close(g);
                continue;
            }
            let cap = trace.capacity_at(step, g);
            let want = trace.demand[step * k + g].min(cap);
            let idle = cap - want;
            let delayed = want.saturating_sub(cap - self.out[g].min(cap));
            self.capacity += f64::from(cap) * dt;
            self.idle += f64::from(idle) * dt;
            self.oracle += f64::from(lendable) * dt;
            self.harvested += f64::from(self.held[g].min(lendable)) * dt;
            self.leased += f64::from(self.held[g]) * dt;
            self.demand += f64::from(want) * dt;
            self.delayed += f64::from(delayed) * dt;
            if delayed > 0 {
                self.open[g] += trace.step_seconds;
            } else {
                self.close(g);
            }
        }
    }

    fn close(&mut self, g: usize) {
        if self.open[g] > 0 {
            self.episodes.push(self.open[g]);
            self.open[g] = 0;
        }
    }

    /// Closes the episodes still open at the end of the trace.
    pub fn finish(&mut self) {
        for g in 0..self.open.len() {
            self.close(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::trace::GroupSpec;

    fn trace(demand: &[u32]) -> Trace {
        Trace {
            name: "t".into(),
            start: jiff::Timestamp::UNIX_EPOCH,
            step_seconds: 60,
            groups: vec![GroupSpec {
                name: "g".into(),
                capacity_gpus: 24,
                gpus_per_node: 8,
            }],
            demand: demand.to_vec(),
            known: vec![true; demand.len()],
            capacity: vec![],
        }
    }

    #[test]
    fn packs_work_and_keeps_long_idle_nodes_idle() {
        let mut c = Fleet::new(&trace(&[]));
        // Node 2 was busy most recently, so it takes the work and nodes 0 and 1 stay idle.
        c.idle_since = vec![Some(0), Some(10), Some(50)];
        assert_eq!(c.place(0, 5, 100, |_| true), 5);
        assert_eq!(c.used, vec![0, 0, 5]);
        // More work fills node 2 before it starts another node.
        assert_eq!(c.place(0, 10, 160, |_| true), 10);
        assert_eq!(c.used, vec![0, 2, 8]);
        assert_eq!(c.idle_since, vec![Some(0), None, None]);
        // Finished work leaves the emptiest node first.
        assert_eq!(c.place(0, 7, 220, |_| true), 7);
        assert_eq!(c.used, vec![0, 0, 7]);
        assert_eq!(c.idle_since[1], Some(220));
    }

    #[test]
    fn nodes_leave_last_first_and_their_work_is_placed_again() {
        let mut c = Fleet::new(&trace(&[]));
        assert_eq!(c.place(0, 20, 0, |_| true), 20);
        // Down to 8 GPUs: nodes 1 and 2 leave, their work waits; only node 0's 8 GPUs are placed.
        let (left, joined) = c.set_capacity(0, 8, 60);
        assert_eq!((left, joined), (vec![1, 2], vec![]));
        assert_eq!(c.used.iter().sum::<u32>(), c.used[0]);
        assert_eq!(c.place(0, 20, 60, |_| true), 8);
        assert_eq!(c.used, vec![8, 0, 0]);
        // Back to 24: they join idle and take the waiting work.
        let (left, joined) = c.set_capacity(0, 24, 120);
        assert_eq!((left, joined), (vec![], vec![1, 2]));
        assert_eq!(c.idle_since[1], Some(120));
        assert_eq!(c.place(0, 20, 120, |_| true), 20);
    }

    #[test]
    fn work_stays_off_nodes_out_of_internal_use() {
        let mut c = Fleet::new(&trace(&[]));
        assert_eq!(c.place(0, 20, 0, |n| n != 1), 16);
        assert_eq!(c.used[1], 0);
    }

    #[test]
    fn meter_counts_delay_episodes_and_caps_harvest() {
        // Demand 24 (all), 8, 30 (above capacity: counts as 24), 8, 8.
        let t = trace(&[24, 8, 30, 8, 8]);
        let c = Fleet::new(&t);
        let mut m = Meter::new(1);
        let oracle = [0u32, 16, 0, 16, 16];
        // Node 0 is leased throughout; node 1 lent (no tenant) at step 3 only.
        for step in 0..5 {
            m.record(&t, &c, step, &oracle[step..=step], |n| match (n, step) {
                (0, _) => Use::Leased,
                (1, 3) => Use::Lent,
                _ => Use::Internal,
            });
        }
        m.finish();
        assert_eq!(m.capacity, 24.0 * 60.0 * 5.0);
        assert_eq!(m.demand, (24.0 + 8.0 + 24.0 + 8.0 + 8.0) * 60.0);
        // Steps 0 and 2 want all 24 GPUs, with 8 held by the tenant: 8 delayed each, two episodes of 60 s.
        assert_eq!(m.delayed, 16.0 * 60.0);
        assert_eq!(m.episodes, vec![60, 60]);
        // Harvest: the tenant's 8 GPUs where the oracle lends (steps 1, 3, 4).
        assert_eq!(m.harvested, 24.0 * 60.0);
        assert_eq!(m.leased, 40.0 * 60.0);
    }
}
