//! Per class (GPU model or node group): GPUs free, pending, reserved and coming back, and the reserve's
//! parts with the reason for each, as the plan starts.
//!
//! ```text
//!  reserve(c) = largest of  reserve.gpus,  reserve.percent of c,
//!                           learned peak   (quantile of past hourly peaks ahead, less what runs and waits)
//!                           burst          (quantile of past rises of demand within one notice)
//!  until the history covers what the learned rules need: every free GPU of c is held from lending
//!  (never reclaimed for: a missing history lends less, it takes nothing back)
//! ```

use super::draft::Draft;
use super::history::{BURST_MINUTES_NEEDED, DemandHistory};
use super::output::ClassReport;
use super::state::NodeState;

/// Per class: GPUs free, pending, reserved, held from lending and coming back.
pub(super) struct Classes {
    names: Vec<String>,
    pub free: Vec<i64>,
    pub pending: Vec<i64>,
    /// The reserve the plan takes GPUs back for.
    pub reserve: Vec<i64>,
    /// The GPUs kept from lending: the reserve, or all that is free while the history is not ready.
    pub held: Vec<i64>,
    pub incoming: Vec<i64>,
    pub pending_any: i64,
    pub capacity: Vec<i64>,
    pub used: Vec<i64>,
    /// The reserve in words, per class.
    pub why: Vec<String>,
    /// Whether the learned rules have the history they need, and why not.
    pub learned: Option<Result<(), String>>,
}

impl Classes {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn name(&self, c: usize) -> &str {
        &self.names[c]
    }

    pub fn label(&self, c: usize) -> String {
        if self.names[c].is_empty() {
            "nodes without a class label".to_string()
        } else {
            self.names[c].clone()
        }
    }

    /// GPUs class `c` is short of: pending plus reserve, less free and coming back.
    pub fn deficit(&self, c: usize) -> i64 {
        self.pending[c] + self.reserve[c] - self.free[c] - self.incoming[c]
    }

    /// GPUs that demand for any class is short of, after every class has served its own.
    pub fn any_deficit(&self) -> i64 {
        let spare: i64 = (0..self.len()).map(|c| (-self.deficit(c)).max(0)).sum();
        self.pending_any - spare
    }

    /// GPUs each class could lend now (free beyond its pending demand and what it holds), and how many the
    /// pool as a whole can lend once demand for any class is served from what the classes spare. A node of
    /// class `c` may be lent when both numbers cover it; lending takes its GPUs from both, so planning again
    /// on the result gives the same answer.
    pub fn surplus(&self) -> (Vec<i64>, i64) {
        let s: Vec<i64> = (0..self.len())
            .map(|c| self.free[c] - self.pending[c] - self.held[c])
            .collect();
        let spare = s.iter().map(|&v| v.max(0)).sum::<i64>() - self.pending_any;
        (s, spare)
    }

    /// GPUs waiting for class `c`. In a pool of one class, work that waits for any GPU waits for that class
    /// (up to what the class could serve); with several classes it is no single class's and is left out.
    pub fn waiting(&self, c: usize) -> i64 {
        let any = if self.len() == 1 { self.pending_any.max(0) } else { 0 };
        (self.pending[c] + any).min((self.capacity[c] - self.used[c]).max(0))
    }

    /// Internal demand of class `c` now: GPUs its internal work uses and waits for.
    pub fn demand(&self, c: usize) -> i64 {
        self.used[c] + self.waiting(c)
    }

    /// One line per class; while every free GPU is held, the reserve shown is what is free.
    pub fn reports(&self) -> Vec<ClassReport> {
        let holding_all = matches!(self.learned, Some(Err(_)));
        (0..self.len())
            .map(|c| ClassReport {
                class: self.names[c].clone(),
                capacity_gpus: self.capacity[c].max(0) as u32,
                demand_gpus: self.demand(c).max(0) as u32,
                reserve_gpus: if holding_all {
                    self.held[c].min(self.free[c]).max(0) as u32
                } else {
                    self.held[c].max(0) as u32
                },
                reason: self.why[c].clone(),
            })
            .collect()
    }
}

impl Draft<'_> {
    /// Per-class numbers in the plan's current state.
    pub fn classes(&self) -> Classes {
        let k = self.class_names.len();
        let mut c = Classes {
            names: self.class_names.clone(),
            free: vec![0; k],
            pending: vec![0; k],
            reserve: vec![0; k],
            held: vec![0; k],
            incoming: vec![0; k],
            pending_any: 0,
            capacity: vec![0; k],
            used: vec![0; k],
            why: vec![String::new(); k],
            learned: None,
        };
        for (n, w) in self.nodes.iter().enumerate() {
            if !w.member {
                continue;
            }
            c.capacity[w.class] += i64::from(w.gpus);
            match w.state {
                NodeState::Internal => {
                    c.used[w.class] += i64::from(w.used_gpus.min(w.gpus));
                    let node = &self.snap.nodes[n];
                    if node.ready && !node.unschedulable {
                        c.free[w.class] += i64::from(w.gpus.saturating_sub(w.used_gpus));
                    }
                }
                // A node under notice, or scrubbing, comes back once its tenant is gone or its scrub completes;
                // one that is not Ready will not serve the demand once back.
                NodeState::Reclaiming | NodeState::Scrubbing if self.snap.nodes[n].ready => {
                    c.incoming[w.class] += i64::from(w.gpus)
                }
                NodeState::Reclaiming | NodeState::Scrubbing => {}
                NodeState::Lent | NodeState::Leased => {}
            }
        }
        self.add_pending(&mut c);
        self.size_reserves(&mut c);
        c
    }

    fn add_pending(&self, c: &mut Classes) {
        // Pending pods were summed by class as the draft read them (when the pool counts them).
        for (pending, &gpus) in c.pending.iter_mut().zip(&self.pending_pods.by_class) {
            *pending += gpus;
        }
        c.pending_any += self.pending_pods.any;
        for (class, &gpus) in &self.snap.demand.by_class {
            let gpus = i64::from(gpus);
            match class.as_deref() {
                None => c.pending_any += gpus,
                // Demand for a class the pool does not hold is not the pool's to meet.
                Some(name) => {
                    if let Some(i) = self.class_names.iter().position(|n| n == name) {
                        c.pending[i] += gpus;
                    }
                }
            }
        }
        // Demand above what a class could ever serve is that class's own queueing, not lending's to answer.
        for i in 0..c.len() {
            c.pending[i] = c.pending[i].min(c.capacity[i] - c.used[i]).max(0);
        }
    }

    /// The reserve of every class, and what is held from lending while the history is not ready.
    fn size_reserves(&self, c: &mut Classes) {
        let r = &self.policy.reserve;
        let learned = r.learned.as_ref().map(|_| self.history_ready(c));
        let notice = self.policy.notice_seconds;
        for i in 0..c.len() {
            let room = (c.capacity[i] - c.used[i]).max(0);
            let fixed = i64::from(r.gpus);
            let share = (c.capacity[i] * i64::from(r.percent) + 99) / 100;
            let mut parts = vec![format!("fixed {fixed}"), format!("share {share}")];
            let mut best = fixed.max(share);
            if let (Some(l), Some(Ok(h))) = (&r.learned, &learned) {
                let name = &self.class_names[i];
                if let Some(q) = l.quantile {
                    let peak = h
                        .quantile_ahead(name, self.now, notice, q)
                        .map(|p| (i64::from(p) - c.used[i] - c.pending[i]).max(0))
                        .unwrap_or(0);
                    parts.push(format!("peak {peak} (q{q} of past hourly peaks ahead)"));
                    best = best.max(peak);
                }
                let burst = i64::from(
                    h.rise_quantile(name, self.now, notice, l.burst_quantile, false)
                        .unwrap_or(0),
                );
                parts.push(format!(
                    "burst {burst} (q{} of past rises within {notice}s)",
                    l.burst_quantile
                ));
                best = best.max(burst);
            }
            c.reserve[i] = best.min(room);
            c.held[i] = c.reserve[i];
            c.why[i] = format!("largest of {}", parts.join(", "));
            if let Some(Err(why)) = &learned {
                c.held[i] = room;
                c.why[i] = format!("every free GPU held: {why}");
            }
        }
        c.learned = learned.map(|l| l.map(|_| ()));
    }

    /// The history when it covers what the learned rules need for every class, else why not.
    fn history_ready(&self, c: &Classes) -> Result<&DemandHistory, String> {
        let Some(h) = self.snap.history.as_deref() else {
            return Err(self
                .snap
                .history_error
                .clone()
                .unwrap_or_else(|| "no demand history yet".to_string()));
        };
        if let Some(why) = &self.snap.history_error {
            return Err(why.clone());
        }
        for i in 0..c.len() {
            if c.capacity[i] == 0 {
                continue;
            }
            let have = h.recent_minutes(&self.class_names[i], self.now, BURST_MINUTES_NEEDED);
            if have < BURST_MINUTES_NEEDED {
                return Err(format!(
                    "the demand history of {} holds {have} of the {BURST_MINUTES_NEEDED} recent minutes the learned reserve needs",
                    c.label(i)
                ));
            }
        }
        Ok(h)
    }
}
