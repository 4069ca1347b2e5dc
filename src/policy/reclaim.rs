//! Which leased nodes get notice when internal demand needs GPUs back.
//!
//! The rule: cover the unmet demand with the fewest leases, taking leases past their minimum tenure before
//! younger ones; among equally few, the lowest price first, then the most recently bound; never more GPUs
//! than the demand needs, rounded up to whole nodes; never more nodes than the concurrency budget. Nodes
//! with no tenant pod need no notice and sit outside the budget: when the budget stops a notice, the idle
//! nodes of any lease make up what is left, so that the next plan has nothing more to take.

use jiff::{SignedDuration, Timestamp};

/// A lease with leased nodes that could be reclaimed.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseCandidate {
    pub key: String,
    pub bound_at: Option<Timestamp>,
    pub price: f64,
    /// (node index, GPUs)
    pub nodes: Vec<(usize, u32)>,
    /// Nodes with no tenant pod: they go back at once and do not count against the concurrency budget.
    pub idle: Vec<usize>,
}

impl LeaseCandidate {
    fn gpus(&self) -> i64 {
        self.nodes.iter().map(|&(_, g)| i64::from(g)).sum()
    }
}

/// The nodes to give notice, in order. `budget` caps the nodes that need a notice period (those running
/// tenant pods); idle ones go back at once.
pub fn choose(candidates: &[LeaseCandidate], need: i64, budget: usize, now: Timestamp, min_lease: i64) -> Vec<usize> {
    let seasoned = |c: &LeaseCandidate| {
        c.bound_at.is_none_or(|b| {
            b.checked_add(SignedDuration::from_secs(min_lease))
                .is_ok_and(|t| t <= now)
        })
    };
    // Seasoned leases first, each tier in preference order (whether one is seasoned found once per lease).
    let mut tiered: Vec<(bool, &LeaseCandidate)> = candidates.iter().map(|c| (seasoned(c), c)).collect();
    tiered.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| preference(a.1, b.1)));
    let mut out = Vec::new();
    let mut noticed = 0;
    let mut need = need;
    for tier in [true, false] {
        if need <= 0 {
            break;
        }
        let tier: Vec<&LeaseCandidate> = tiered.iter().filter(|c| c.0 == tier).map(|c| c.1).collect();
        for lease in fewest_covering(&tier, need) {
            if need <= 0 {
                break;
            }
            for (n, gpus) in nodes_to_take(lease, need) {
                let idle = lease.idle.contains(&n);
                if !idle && noticed >= budget {
                    continue;
                }
                noticed += usize::from(!idle);
                out.push(n);
                need -= i64::from(gpus);
            }
        }
    }
    if need > 0 {
        // Demand left over (the budget stopped a notice): idle nodes of any lease still go back now, in
        // preference order. Left for the next plan, they would be taken then, so a plan carried out would
        // not be the last word.
        for (_, lease) in tiered {
            for &(n, gpus) in &lease.nodes {
                if need <= 0 {
                    return out;
                }
                if lease.idle.contains(&n) && !out.contains(&n) {
                    out.push(n);
                    need -= i64::from(gpus);
                }
            }
        }
    }
    out
}

/// Preference order within a tier: lowest price, then most recently bound, then name for a stable answer.
fn preference(a: &LeaseCandidate, b: &LeaseCandidate) -> std::cmp::Ordering {
    a.price
        .total_cmp(&b.price)
        .then_with(|| b.bound_at.cmp(&a.bound_at))
        .then_with(|| a.key.cmp(&b.key))
}

/// The fewest leases (from `tier`, in preference order) that together cover `need`; all of them when even
/// all do not. Slot by slot, the most preferred lease that still lets the remaining slots cover the rest.
fn fewest_covering<'a>(tier: &[&'a LeaseCandidate], need: i64) -> Vec<&'a LeaseCandidate> {
    let mut sizes: Vec<i64> = tier.iter().map(|c| c.gpus()).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let total: i64 = sizes.iter().sum();
    if total <= need {
        return tier.to_vec();
    }
    let mut k = 0;
    let mut acc = 0;
    while acc < need {
        acc += sizes[k];
        k += 1;
    }
    let mut chosen: Vec<&LeaseCandidate> = Vec::with_capacity(k);
    let mut left: Vec<&LeaseCandidate> = tier.to_vec();
    let mut rest = need;
    for slot in 0..k {
        let slots_after = k - slot - 1;
        let pick = (0..left.len())
            .find(|&i| {
                let mut others: Vec<i64> = left
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, c)| c.gpus())
                    .collect();
                others.sort_unstable_by(|a, b| b.cmp(a));
                left[i].gpus() + others.iter().take(slots_after).sum::<i64>() >= rest
            })
            .unwrap_or(0);
        let lease = left.remove(pick);
        rest -= lease.gpus();
        chosen.push(lease);
    }
    chosen
}

/// The nodes of one lease that cover `need` with the least excess: largest first, the last one the smallest
/// that still covers what is left.
fn nodes_to_take(lease: &LeaseCandidate, need: i64) -> Vec<(usize, u32)> {
    let mut nodes = lease.nodes.clone();
    nodes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = Vec::new();
    let mut rest = need;
    while rest > 0 && !nodes.is_empty() {
        let pick = nodes.iter().rposition(|&(_, g)| i64::from(g) >= rest).unwrap_or(0);
        let node = nodes.remove(pick);
        rest -= i64::from(node.1);
        out.push(node);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn lease(key: &str, bound: i64, price: f64, nodes: &[(usize, u32)]) -> LeaseCandidate {
        LeaseCandidate {
            key: key.into(),
            bound_at: Some(t(bound)),
            price,
            nodes: nodes.to_vec(),
            idle: vec![],
        }
    }

    #[test]
    fn fewest_leases_win_over_price() {
        // 16 GPUs needed: one two-node lease covers it; two cheaper one-node leases would too.
        let c = [
            lease("a", 0, 1.0, &[(0, 8)]),
            lease("b", 0, 1.0, &[(1, 8)]),
            lease("c", 0, 3.0, &[(2, 8), (3, 8)]),
        ];
        assert_eq!(choose(&c, 16, usize::MAX, t(100), 0), vec![2, 3]);
    }

    #[test]
    fn lowest_price_then_most_recent_among_equals() {
        let c = [
            lease("a", 0, 2.0, &[(0, 8)]),
            lease("b", 10, 1.0, &[(1, 8)]),
            lease("c", 20, 1.0, &[(2, 8)]),
        ];
        assert_eq!(choose(&c, 8, usize::MAX, t(100), 0), vec![2]);
    }

    #[test]
    fn never_more_than_needed_rounded_to_nodes() {
        let c = [lease("a", 0, 1.0, &[(0, 8), (1, 8), (2, 8)])];
        assert_eq!(choose(&c, 9, usize::MAX, t(100), 0).len(), 2);
        assert_eq!(choose(&c, 8, usize::MAX, t(100), 0).len(), 1);
        // A smaller node that covers the remainder is taken over a larger one.
        let c = [lease("a", 0, 1.0, &[(0, 8), (1, 4)])];
        assert_eq!(choose(&c, 3, usize::MAX, t(100), 0), vec![1]);
    }

    #[test]
    fn young_leases_only_when_seasoned_ones_do_not_cover() {
        let c = [lease("young", 90, 0.5, &[(0, 8)]), lease("old", 0, 5.0, &[(1, 8)])];
        assert_eq!(choose(&c, 8, usize::MAX, t(100), 50), vec![1]);
        assert_eq!(choose(&c, 16, usize::MAX, t(100), 50), vec![1, 0]);
    }

    #[test]
    fn budget_caps_the_nodes() {
        let c = [lease("a", 0, 1.0, &[(0, 8), (1, 8), (2, 8)])];
        assert_eq!(choose(&c, 24, 2, t(100), 0).len(), 2);
        assert!(choose(&c, 24, 0, t(100), 0).is_empty());
        // Idle nodes go back without a notice and outside the budget.
        let c = [LeaseCandidate {
            idle: vec![1, 2],
            ..c[0].clone()
        }];
        assert_eq!(choose(&c, 24, 1, t(100), 0).len(), 3);
    }

    #[test]
    fn idle_nodes_of_other_leases_fill_what_the_budget_left() {
        // 7 GPUs needed, one notice allowed: lease a covers the need but only one of its busy nodes may get
        // notice; lease b's idle node makes up the rest at once.
        let a = lease("a", 0, 1.0, &[(0, 4), (1, 4)]);
        let b = LeaseCandidate {
            idle: vec![5],
            ..lease("b", 0, 1.0, &[(5, 4)])
        };
        assert_eq!(choose(&[a.clone(), b.clone()], 7, 1, t(100), 0), vec![0, 5]);
        // With no notice allowed at all, the idle node still goes back.
        assert_eq!(choose(&[a, b], 7, 0, t(100), 0), vec![5]);
    }

    #[test]
    fn not_enough_takes_everything() {
        let c = [lease("a", 0, 1.0, &[(0, 8)]), lease("b", 0, 2.0, &[(1, 8)])];
        let mut got = choose(&c, 100, usize::MAX, t(100), 0);
        got.sort();
        assert_eq!(got, vec![0, 1]);
    }
}
