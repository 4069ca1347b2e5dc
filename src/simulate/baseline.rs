//! The baselines, replayed on the same cluster and meter as the planner:
//!
//! - `no-lending`: nothing is ever lent;
//! - `static-N`: N% of each group's nodes (rounded down to whole nodes) are leased from the start and never
//!   come back, whatever internal work wants;
//! - `naive`: every node without internal work is leased the step it empties (no idle window, no reserve,
//!   no cool-down); when a group's demand does not fit its internal nodes, the fewest leased nodes that
//!   cover it get notice and come back at the deadline, their tenant pods evicted.
//!
//! A node that leaves the cluster while out of internal use is lost to the tenant without notice (counted
//! apart); static-N never lends it again once it is back.
//!
//! With unbounded tenants a lent node is leased at once. With a tenant spec, lent nodes wait for lease
//! requests, served first come first served with the largest free lent nodes (a request whose price cap is
//! under the pool's price is dropped); a tenant leaves its nodes, lent again, when its lease runs out, and
//! naive takes lent nodes without a tenant back before it gives notice.

use super::fleet::{Fleet, Meter, Use};
use super::oracle::Oracle;
use super::tenants::Arrival;
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
    /// Out of internal use, no tenant.
    Lent,
    Leased,
    /// Under notice until this second from the trace start.
    Reclaiming(i64),
}

/// Tenants: unbounded, or lease requests with their ends.
struct Market<'a> {
    arrivals: Option<&'a [Arrival]>,
    patience: i64,
    next: usize,
    queue: std::collections::VecDeque<usize>,
    /// Per node under a lease request: when its tenant leaves (None: never).
    ends: Vec<Option<i64>>,
    price: f64,
}

impl Market<'_> {
    /// What a node just lent becomes.
    fn lend(&self) -> State {
        if self.arrivals.is_some() {
            State::Lent
        } else {
            State::Leased
        }
    }

    /// Tenants whose lease ran out leave; requests that arrived bind to free lent nodes.
    fn step(&mut self, now: i64, state: &mut [State], fleet: &Fleet) {
        let Some(arrivals) = self.arrivals else { return };
        for (s, end) in state.iter_mut().zip(&mut self.ends) {
            if end.is_some_and(|end| end <= now) {
                *end = None;
                match *s {
                    State::Leased => *s = State::Lent,
                    // Gone before the deadline: the node is back at once, nobody to evict.
                    State::Reclaiming(_) => *s = State::Internal,
                    _ => {}
                }
            }
        }
        let patience = self.patience;
        self.queue.retain(|&l| now - arrivals[l].at <= patience);
        while let Some(a) = arrivals.get(self.next).filter(|a| a.at <= now) {
            if a.max_price.is_none_or(|cap| cap >= self.price) {
                self.queue.push_back(self.next);
            }
            self.next += 1;
        }
        let mut free: Vec<usize> = (0..state.len()).filter(|&n| state[n] == State::Lent).collect();
        free.sort_by_key(|&n| (std::cmp::Reverse(fleet.gpus[n]), n));
        while let Some(&l) = self.queue.front() {
            let a = &arrivals[l];
            let mut got = 0;
            let take = free.iter().take_while(|&&n| {
                let more = got < a.gpus;
                got += fleet.gpus[n];
                more
            });
            let take: Vec<usize> = take.copied().collect();
            if take.iter().map(|&n| fleet.gpus[n]).sum::<u32>() < a.gpus {
                break;
            }
            self.queue.pop_front();
            free.retain(|n| !take.contains(n));
            for n in take {
                state[n] = State::Leased;
                self.ends[n] = Some(a.duration_seconds.map_or(i64::MAX, |d| now + d));
            }
        }
    }
}

/// Replays `trace` under a baseline; `tenants` are the lease requests and their patience (None: unbounded).
pub fn run(
    trace: &Trace,
    oracle: &Oracle,
    baseline: Baseline,
    notice_seconds: i64,
    tenants: Option<(&[Arrival], i64)>,
    price: f64,
    eviction_grace_seconds: i64,
) -> Meter {
    let k = trace.groups.len();
    let fleet = Fleet::new(trace);
    let mut r = Replay {
        trace,
        state: vec![State::Internal; fleet.len()],
        meter: Meter::new(k),
        market: Market {
            arrivals: tenants.map(|t| t.0),
            patience: tenants.map_or(i64::MAX, |t| t.1),
            next: 0,
            queue: Default::default(),
            ends: vec![None; fleet.len()],
            price,
        },
        fleet,
        notice_seconds,
        grace: eviction_grace_seconds.max(0),
    };
    for g in 0..k {
        r.fleet.set_capacity(g, trace.capacity_at(0, g), 0);
    }
    if let Baseline::Static(percent) = baseline {
        r.lend_share(percent);
    }
    for step in 0..trace.steps() {
        let now = step as i64 * trace.step_seconds;
        r.return_at_deadlines(now);
        r.follow_capacity(step, now);
        r.market.step(now, &mut r.state, &r.fleet);
        for g in 0..k {
            let want = trace.demand[step * k + g].min(trace.capacity_at(step, g));
            let placed = r.fleet.place(g, want, now, |n| r.state[n] == State::Internal);
            if baseline == Baseline::Naive {
                r.naive_group(g, want, placed, now);
            }
        }
        // Nodes naive lent this step meet the requests still waiting.
        r.market.step(now, &mut r.state, &r.fleet);
        r.meter
            .record(trace, &r.fleet, step, oracle.at(step, k), |n| match r.state[n] {
                State::Internal => Use::Internal,
                State::Lent => Use::Lent,
                State::Leased | State::Reclaiming(_) => Use::Leased,
            });
    }
    r.meter.finish();
    r.meter
}

/// One baseline's replay: the cluster, each node's state, the tenants and the meter.
struct Replay<'a> {
    trace: &'a Trace,
    fleet: Fleet,
    state: Vec<State>,
    meter: Meter,
    market: Market<'a>,
    notice_seconds: i64,
    grace: i64,
}

impl Replay<'_> {
    /// static-N: lends `percent`% of each group's present nodes (the last ones), for good.
    fn lend_share(&mut self, percent: u32) {
        for range in &self.fleet.groups {
            let present: Vec<usize> = range.clone().filter(|&n| self.fleet.present[n]).collect();
            let lend = present.len() * percent.min(100) as usize / 100;
            for &n in &present[present.len() - lend..] {
                self.state[n] = self.market.lend();
            }
        }
    }

    /// Deadlines that have come: the tenant's pods are evicted and, after the grace, the node is back.
    fn return_at_deadlines(&mut self, now: i64) {
        for (n, s) in self.state.iter_mut().enumerate() {
            if let State::Reclaiming(deadline) = *s
                && deadline + self.grace <= now
            {
                *s = State::Internal;
                self.market.ends[n] = None;
                self.meter.evictions += 1;
            }
        }
    }

    /// The trace's capacity for this step; a node that leaves while out of internal use is lost to its tenant.
    fn follow_capacity(&mut self, step: usize, now: i64) {
        for g in 0..self.trace.groups.len() {
            let (left, _) = self.fleet.set_capacity(g, self.trace.capacity_at(step, g), now);
            for n in left {
                if self.state[n] != State::Internal {
                    self.meter.lost += 1;
                }
                self.state[n] = State::Internal;
                self.market.ends[n] = None;
            }
        }
    }

    /// naive, for group `g` after `placed` of `want` GPUs of internal work found room: takes back the fewest
    /// nodes that cover the shortfall, then lends every empty internal node if all the work is placed.
    fn naive_group(&mut self, g: usize, want: u32, placed: u32, now: i64) {
        let range = self.fleet.groups[g].clone();
        let incoming: u32 = range
            .clone()
            .filter(|&n| matches!(self.state[n], State::Reclaiming(_)))
            .map(|n| self.fleet.gpus[n])
            .sum();
        self.take_back(g, i64::from(want - placed) - i64::from(incoming), now);
        if want > placed {
            // Nodes that came back at once (no notice) take the waiting work now.
            self.fleet.place(g, want, now, |n| self.state[n] == State::Internal);
        }
        for n in range {
            if self.fleet.present[n] && self.state[n] == State::Internal && self.fleet.used[n] == 0 && want <= placed {
                self.state[n] = self.market.lend();
            }
        }
    }

    /// Takes back enough of group `g`'s nodes to cover `short` GPUs: lent nodes without a tenant at once,
    /// then leased ones (largest first) after the notice, or at once when there is neither notice nor grace.
    fn take_back(&mut self, g: usize, mut short: i64, now: i64) {
        let state = &mut self.state;
        let mut out: Vec<usize> = self.fleet.groups[g]
            .clone()
            .filter(|&n| matches!(state[n], State::Lent | State::Leased))
            .collect();
        out.sort_by_key(|&n| (state[n] == State::Leased, std::cmp::Reverse(self.fleet.gpus[n]), n));
        for n in out {
            if short <= 0 {
                break;
            }
            short -= i64::from(self.fleet.gpus[n]);
            if state[n] == State::Lent {
                state[n] = State::Internal;
                continue;
            }
            self.meter.notices += 1;
            if self.notice_seconds <= 0 && self.grace == 0 {
                state[n] = State::Internal;
                self.market.ends[n] = None;
                self.meter.evictions += 1;
            } else {
                state[n] = State::Reclaiming(now + self.notice_seconds);
            }
        }
    }
}
