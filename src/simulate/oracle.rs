//! The oracle: the most a pool could lend without ever delaying internal work, knowing the whole trace.
//!
//! Per group, the idle capacity `capacity − min(demand, capacity)` is cut into whole-node levels: level `j`
//! (nodes sorted largest first) is free at a step when the idle GPUs cover the first `j` nodes. Each maximal
//! run of steps in which a level is free is an idle stretch. The oracle lends that node exactly over every
//! stretch at least `notice + minimum lease` long: it is leased from the first step of the stretch, gets its
//! notice `notice` before the stretch ends, and is back in internal hands the step demand needs it. Shorter
//! stretches are not lent: a lease there would end in a notice that runs past the need. Steps with unknown
//! demand break stretches and are not lent. Capacity is the group's at each step, as every policy sees it.

use super::trace::Trace;

/// What the oracle lends.
#[derive(Clone, Debug, Default)]
pub struct Oracle {
    /// `lent[step * groups + g]`: GPUs the oracle has out in group `g` at that step.
    pub lent: Vec<u32>,
    /// Stretches that end in a notice (those that run to the end of the trace need none).
    pub notices: u64,
}

impl Oracle {
    pub fn at(&self, step: usize, groups: usize) -> &[u32] {
        &self.lent[step * groups..(step + 1) * groups]
    }
}

/// Computes the oracle for a trace and a pool's notice and minimum lease.
pub fn compute(trace: &Trace, notice_seconds: i64, min_lease_seconds: i64) -> Oracle {
    let k = trace.groups.len();
    let steps = trace.steps();
    let min_steps = ((notice_seconds + min_lease_seconds).max(0) as f64 / trace.step_seconds as f64).ceil() as usize;
    let min_steps = min_steps.max(1);
    let mut lent = vec![0u32; steps * k];
    let mut notices = 0;
    for (g, spec) in trace.groups.iter().enumerate() {
        let mut sizes = spec.node_sizes();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let mut need = 0u32;
        for size in sizes {
            // Level: the idle GPUs must cover this node and all larger ones before it.
            need += size;
            let free = |s: usize| {
                let i = s * k + g;
                let cap = trace.capacity_at(s, g);
                trace.known[i] && cap - trace.demand[i].min(cap) >= need
            };
            let mut s = 0;
            while s < steps {
                if !free(s) {
                    s += 1;
                    continue;
                }
                let a = s;
                while s < steps && free(s) {
                    s += 1;
                }
                if s - a >= min_steps {
                    for t in a..s {
                        lent[t * k + g] += size;
                    }
                    notices += u64::from(s < steps);
                }
            }
        }
    }
    Oracle { lent, notices }
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
                capacity_gpus: 16,
                gpus_per_node: 8,
            }],
            demand: demand.to_vec(),
            known: vec![true; demand.len()],
            capacity: vec![],
        }
    }

    #[test]
    fn lends_only_stretches_covering_the_notice() {
        // One node free for 1 step, then for 3 steps, then for 2 steps at the end (both nodes in the first).
        let t = trace(&[16, 8, 16, 8, 8, 8, 16, 0, 8]);
        let o = compute(&t, 120, 0);
        assert_eq!(o.lent, vec![0, 0, 0, 8, 8, 8, 0, 8, 8]);
        // The 3-step stretch ends in a notice; the level-1 stretch at the end runs out with the trace, and the
        // level-2 one is a single step, too short.
        assert_eq!(o.notices, 1);
    }

    #[test]
    fn minimum_lease_lengthens_the_stretches_needed() {
        let t = trace(&[8, 8, 8, 16]);
        assert_eq!(compute(&t, 120, 0).lent, vec![8, 8, 8, 0]);
        assert_eq!(compute(&t, 120, 120).lent, vec![0, 0, 0, 0]);
    }

    #[test]
    fn demand_above_capacity_is_not_idle() {
        let t = trace(&[40, 40, 40]);
        assert_eq!(compute(&t, 0, 0).lent, vec![0, 0, 0]);
    }
}
