//! The lease ledger: GPU-seconds and cost from the durable record of what each lease held.
//!
//! ```text
//!   status.holds (node, GPUs, boundAt, returnedAt)   ◀── holds(): opened when a bind is written, closed
//!        │                                                 when the node went back (at the pass that returned
//!        │                                                 it, or, when that pass's status write failed or the
//!        │                                                 controller died, at the node's returned-at stamp)
//!        ▼
//!   accrue(): accountedUntil → now, each span counted where it overlaps, in whole seconds
//! ```
//!
//! The ledger never asks what a lease holds at the moment of a write: a status written late, after a failed
//! write or a restart, bills the past from the spans, exactly as it was. A lease whose every hold is closed
//! is accounted up to its last return and no further, and its ledger is final.

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::NodeHold;

/// A lease's account.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ledger {
    pub gpu_seconds: i64,
    pub cost: f64,
    pub accounted_until: Option<Timestamp>,
}

/// `t` without its fraction of a second (statuses are written in whole seconds).
/// When a lease was first bound: its `boundAt`, or, when the status write that would have set it failed and its
/// node went back before the next pass, its first hold's bind. None for a lease that never held a node.
pub fn first_bound(status: &crate::api::GpuLeaseStatus) -> Option<Time> {
    let first_hold = status.holds.iter().map(|h| h.bound_at.clone()).min_by_key(|t| t.0);
    status.bound_at.clone().or(first_hold)
}

pub fn whole(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Carries a ledger forward from `accountedUntil` (from the first binding when never accounted) to `now`,
/// in whole seconds, counting each hold where it overlaps, at `price` per GPU-hour. Once every hold is
/// closed, the ledger stops at the last return.
pub fn accrue(prev: Ledger, holds: &[NodeHold], price: f64, now: Timestamp) -> Ledger {
    if holds.is_empty() {
        return prev;
    }
    let first = holds.iter().map(|h| h.bound_at.0).min();
    let Some(from) = prev.accounted_until.or(first) else {
        return prev;
    };
    let last_return = holds
        .iter()
        .map(|h| h.returned_at.as_ref().map(|t| t.0))
        .try_fold(None::<Timestamp>, |last, r| {
            r.map(|r| Some(last.map_or(r, |l| l.max(r))))
        })
        .flatten();
    let end = last_return.map_or(now, |r| r.min(now));
    let secs = end.duration_since(from).as_secs();
    if secs <= 0 {
        return Ledger {
            accounted_until: Some(from),
            ..prev
        };
    }
    let to = from.checked_add(SignedDuration::from_secs(secs)).unwrap_or(end);
    let mut gpu_seconds = 0i64;
    for h in holds {
        let stop = h.returned_at.as_ref().map_or(to, |r| r.0.min(to));
        for (at, until, gpus) in spans(h) {
            let start = at.max(from);
            let end = until.map_or(stop, |u| u.min(stop));
            if end > start {
                gpu_seconds += i64::from(gpus.max(0)) * end.duration_since(start).as_secs();
            }
        }
    }
    Ledger {
        gpu_seconds: prev.gpu_seconds + gpu_seconds,
        cost: prev.cost + gpu_seconds as f64 / 3600.0 * price,
        accounted_until: Some(to),
    }
}

/// A hold's spans at one rate: (from, until the next change or open, GPUs billed), from the binding on,
/// each change of the usable GPUs starting a span (never billing more than the GPUs recorded at binding).
fn spans(h: &NodeHold) -> Vec<(Timestamp, Option<Timestamp>, i32)> {
    let mut out = vec![(h.bound_at.0, None, h.gpus)];
    for c in &h.usable {
        let at = c.at.0.max(h.bound_at.0);
        if let Some(last) = out.last_mut() {
            last.1 = Some(at);
        }
        out.push((at, None, c.gpus.clamp(0, h.gpus.max(0))));
    }
    out
}

/// The GPUs a hold bills now: its last usable change, else all it was bound with.
pub fn usable_now(h: &NodeHold) -> i32 {
    h.usable.last().map_or(h.gpus, |c| c.gpus)
}

/// A node a lease holds once this pass's writes are done.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub node: String,
    pub gpus: u32,
    /// When sublet bound it: now for a bind this pass wrote, else the node's `since` stamp (the status write
    /// of the pass that bound it did not happen).
    pub bound_at: Timestamp,
    /// The GPUs the tenant can use on it now (0 while not Ready), why, and since when sublet has seen it so.
    pub usable: Usable,
}

/// What a tenant can use of a held node, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Usable {
    pub gpus: u32,
    /// `NotReady`, `Shrunk` or `Healthy`.
    pub reason: &'static str,
    /// When sublet first saw the node so (the first pass that did, even when its status write failed).
    pub since: Timestamp,
}

impl Usable {
    /// A node that is Ready with `now_gpus` allocatable, bound with `bound_gpus`, seen so since `since`.
    pub fn of(ready: bool, now_gpus: u32, bound_gpus: u32, since: Timestamp) -> Self {
        let (gpus, reason) = if !ready {
            (0, "NotReady")
        } else if now_gpus < bound_gpus {
            (now_gpus, "Shrunk")
        } else {
            (bound_gpus, "Healthy")
        };
        Self { gpus, reason, since }
    }
}

/// The lease's holds after this pass: every open hold whose node the lease no longer holds is closed (at
/// the loss when the node left the cluster, at `now` when this pass returned it, else at the node's own
/// returned-at stamp when that is no earlier than the binding, else where the ledger was last accounted);
/// a held node whose usable GPUs changed gets the change recorded (from when sublet first saw it); and
/// every node held without a hold gets one.
pub fn holds(
    prev: &[NodeHold],
    held: &[Held],
    returned_now: &HashSet<&str>,
    returned_at: impl Fn(&str) -> Option<Timestamp>,
    lost_at: impl Fn(&NodeHold) -> Option<Timestamp>,
    accounted_until: Option<Timestamp>,
    now: Timestamp,
) -> Vec<NodeHold> {
    let now = whole(now);
    let mut out: Vec<NodeHold> = prev.to_vec();
    for h in out.iter_mut().filter(|h| h.returned_at.is_none()) {
        let bound = h.bound_at.0;
        if let Some(n) = held.iter().find(|n| n.node == h.node) {
            let floor = accounted_until.map(whole).unwrap_or(bound).max(bound);
            let last = h.usable.last().map_or(floor, |c| c.at.0.max(floor));
            if usable_now(h) != n.usable.gpus as i32 {
                h.usable.push(crate::api::UsableChange {
                    at: Time(whole(n.usable.since).clamp(last, now)),
                    gpus: n.usable.gpus as i32,
                    reason: n.usable.reason.to_string(),
                });
            }
            continue;
        }
        let back = if let Some(lost) = lost_at(h) {
            h.lost = true;
            // Billed up to `accountedUntil` already: a loss seen earlier than that cannot be told now.
            whole(lost).max(accounted_until.map(whole).unwrap_or(bound))
        } else if returned_now.contains(h.node.as_str()) {
            now
        } else {
            match returned_at(&h.node).map(whole).filter(|r| *r >= bound) {
                Some(r) => r,
                None => accounted_until.map(whole).unwrap_or(bound).max(bound),
            }
        };
        h.returned_at = Some(Time(back.min(now).max(bound)));
    }
    for n in held {
        if out.iter().any(|h| h.node == n.node) {
            continue;
        }
        let bound_at = whole(n.bound_at).min(now);
        let usable = (n.usable.gpus < n.gpus).then(|| crate::api::UsableChange {
            at: Time(whole(n.usable.since).clamp(bound_at, now)),
            gpus: n.usable.gpus as i32,
            reason: n.usable.reason.to_string(),
        });
        out.push(NodeHold {
            node: n.node.clone(),
            gpus: n.gpus as i32,
            bound_at: Time(bound_at),
            returned_at: None,
            lost: false,
            usable: usable.into_iter().collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn hold(node: &str, gpus: i32, bound: i64, returned: Option<i64>) -> NodeHold {
        NodeHold {
            node: node.into(),
            gpus,
            bound_at: Time(t(bound)),
            returned_at: returned.map(|r| Time(t(r))),
            lost: false,
            usable: vec![],
        }
    }

    fn held(node: &str, gpus: u32, bound: i64, usable: Usable) -> Held {
        Held {
            node: node.into(),
            gpus,
            bound_at: t(bound),
            usable,
        }
    }

    fn healthy(gpus: u32) -> Usable {
        Usable::of(true, gpus, gpus, t(0))
    }

    #[test]
    fn the_ledger_starts_at_binding_and_counts_whole_seconds() {
        let l = accrue(Ledger::default(), &[hold("a", 8, 0, None)], 3.6, t(10));
        assert_eq!(l.gpu_seconds, 80);
        assert!((l.cost - 0.08).abs() < 1e-9);
        assert_eq!(l.accounted_until, Some(t(10)));
        let now = t(2).checked_add(SignedDuration::from_millis(500)).unwrap();
        let l = accrue(Ledger::default(), &[hold("a", 1, 0, None)], 3600.0, now);
        assert_eq!(
            (l.gpu_seconds, l.accounted_until),
            (2, Some(t(2))),
            "the remainder waits"
        );
    }

    #[test]
    fn a_late_write_bills_the_past_as_it_was() {
        // Accounted to t(100); the node went back at t(130) and that pass's status write failed. The pass at
        // t(200) bills 30 s of the node, not 0 (it holds nothing now) and not 100 (no longer held).
        let first = accrue(Ledger::default(), &[hold("a", 8, 0, None)], 1.0, t(100));
        let later = accrue(first, &[hold("a", 8, 0, Some(130))], 1.0, t(200));
        assert_eq!(later.gpu_seconds, 8 * 130);
        assert_eq!(
            later.accounted_until,
            Some(t(130)),
            "a closed ledger stops at the last return"
        );
        assert_eq!(
            accrue(later, &[hold("a", 8, 0, Some(130))], 1.0, t(900)),
            later,
            "and stays final"
        );
    }

    #[test]
    fn accrual_in_slices_equals_accrual_at_once() {
        let hs = [hold("a", 8, 0, Some(70)), hold("b", 4, 20, None)];
        let straight = accrue(Ledger::default(), &hs, 2.0, t(150));
        let mut sliced = Ledger::default();
        for s in [13, 40, 69, 70, 71, 149, 150, 150] {
            sliced = accrue(sliced, &hs, 2.0, t(s));
        }
        assert_eq!(sliced.gpu_seconds, straight.gpu_seconds);
        assert_eq!(straight.gpu_seconds, 8 * 70 + 4 * 130);
        assert!((sliced.cost - straight.cost).abs() < 1e-9);
    }

    #[test]
    fn nothing_held_nothing_billed() {
        assert_eq!(accrue(Ledger::default(), &[], 1.0, t(100)), Ledger::default());
    }

    #[test]
    fn holds_open_on_binding_and_close_on_return() {
        let none = HashSet::new();
        let bound = holds(
            &[],
            &[held("a", 8, 5, healthy(8))],
            &none,
            |_| None,
            |_| None,
            None,
            t(5),
        );
        assert_eq!(bound, vec![hold("a", 8, 5, None)]);
        // Still held: unchanged.
        let same = holds(
            &bound,
            &[held("a", 8, 9, healthy(8))],
            &none,
            |_| None,
            |_| None,
            None,
            t(50),
        );
        assert_eq!(same, bound);
        // Returned by this pass: closed now.
        let now = HashSet::from(["a"]);
        assert_eq!(
            holds(&bound, &[], &now, |_| None, |_| None, None, t(60)),
            vec![hold("a", 8, 5, Some(60))]
        );
        // Returned by a pass whose status write failed: closed at the node's stamp.
        assert_eq!(
            holds(&bound, &[], &none, |_| Some(t(42)), |_| None, Some(t(30)), t(90)),
            vec![hold("a", 8, 5, Some(42))]
        );
        // A stamp from before the binding is an earlier return: closed where the ledger stood.
        assert_eq!(
            holds(&bound, &[], &none, |_| Some(t(1)), |_| None, Some(t(30)), t(90)),
            vec![hold("a", 8, 5, Some(30))]
        );
        // Closed holds stay as they are.
        let closed = vec![hold("a", 8, 5, Some(42))];
        assert_eq!(
            holds(&closed, &[], &now, |_| Some(t(80)), |_| None, None, t(90)),
            closed
        );
    }

    #[test]
    fn a_lost_node_closes_at_the_loss_and_says_so() {
        let none = HashSet::new();
        let bound = vec![hold("a", 8, 0, None), hold("b", 8, 0, None)];
        // Node a left the cluster; sublet first saw it gone at t(40) (a pass whose write failed), and this
        // pass at t(70) records it: a closes at t(40), b is still held.
        let after = holds(
            &bound,
            &[held("b", 8, 0, healthy(8))],
            &none,
            |_| None,
            |h| (h.node == "a").then(|| t(40)),
            Some(t(30)),
            t(70),
        );
        let mut lost = hold("a", 8, 0, Some(40));
        lost.lost = true;
        assert_eq!(after, vec![lost, hold("b", 8, 0, None)]);
        let l = accrue(Ledger::default(), &after, 1.0, t(100));
        assert_eq!(l.gpu_seconds, 8 * 40 + 8 * 100, "a to the loss, b to now");
    }

    #[test]
    fn a_degraded_node_bills_what_the_tenant_can_use() {
        let none = HashSet::new();
        let mut hs = vec![hold("a", 8, 0, None)];
        // Capacity 8 → 4 seen at t(10) (recorded at t(12)), → 0 not Ready at t(20), back to 8 Ready at t(30).
        for (seen, now, usable) in [
            (10, 12, Usable::of(true, 4, 8, t(10))),
            (20, 20, Usable::of(false, 4, 8, t(20))),
            (20, 25, Usable::of(false, 4, 8, t(20))),
            (30, 30, Usable::of(true, 8, 8, t(30))),
        ] {
            assert_eq!(usable.since, t(seen));
            hs = holds(&hs, &[held("a", 8, 0, usable)], &none, |_| None, |_| None, None, t(now));
        }
        let reasons: Vec<(i64, i32, &str)> = hs[0]
            .usable
            .iter()
            .map(|c| (c.at.0.as_second() - 1_800_000_000, c.gpus, c.reason.as_str()))
            .collect();
        assert_eq!(reasons, [(10, 4, "Shrunk"), (20, 0, "NotReady"), (30, 8, "Healthy")]);
        let l = accrue(Ledger::default(), &hs, 3600.0, t(40));
        assert_eq!(l.gpu_seconds, 8 * 10 + 4 * 10 + 8 * 10);
        let mut sliced = Ledger::default();
        for s in [5, 11, 19, 21, 29, 31, 40] {
            sliced = accrue(sliced, &hs, 3600.0, t(s));
        }
        assert_eq!(sliced, l, "in slices as at once");
        // A node bound while not Ready bills nothing from its binding.
        let fresh = holds(
            &[],
            &[held("b", 8, 50, Usable::of(false, 8, 8, t(50)))],
            &none,
            |_| None,
            |_| None,
            None,
            t(50),
        );
        assert_eq!(accrue(Ledger::default(), &fresh, 1.0, t(90)).gpu_seconds, 0);
    }
}
