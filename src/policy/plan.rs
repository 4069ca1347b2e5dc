//! `plan()`: from a snapshot to the actions that keep a pool right, with a reason for each.
//!
//! The order inside one plan, each step seeing the effects of the ones before:
//!
//! ```text
//!  1. reclaiming nodes  → return when the tenant's pods are gone; annotate; evict at the deadline
//!  2. forced notices    → pool deleted, lease deleted or gone, lease running out
//!  3. internal demand   → per class: unlend idle lent nodes, then notice the fewest leases that cover it;
//!                         then reclaim ahead where demand rises faster than free and incoming cover
//!  4. lending           → idle internal nodes beyond demand and reserve, inside windows and caps
//!  5. binding           → pending leases onto lent nodes of their model, fewest nodes
//!  6. report            → totals, ledger, one line per node and lease
//! ```

use jiff::{SignedDuration, Timestamp};

use super::classes::Classes;
use super::draft::{CountSaid, Draft};
use super::health;
use super::history::window_minutes;
use super::output::{Action, Cause, Plan, Totals};
use super::overlap;
use super::reclaim::{self, LeaseCandidate};
use super::snapshot::Snapshot;
use super::state::{LeasePhase, NodeState};

/// Plans one pool. Pure: the same snapshot gives the same plan.
pub fn plan(s: &Snapshot) -> Plan {
    let mut w = Draft::new(s);
    let observed = w.totals_observed();
    health::breaches(&mut w);
    super::scrub::scrubbing_nodes(&mut w);
    reclaiming_nodes(&mut w);
    forced_notices(&mut w);
    let mut classes = w.classes();
    internal_demand(&mut w, &mut classes);
    let blocked = lending(&mut w, &mut classes);
    binding(&mut w);
    w.steps = health::breaches_alone(std::mem::take(&mut w.steps));
    report(w, classes, observed, blocked)
}

/// `now` plus the notice, rounded up to a whole second: deadlines are written as RFC 3339 seconds, and a
/// rounded deadline must never give less notice than promised.
pub(super) fn deadline_after_notice(w: &Draft) -> Timestamp {
    full_notice_deadline(w.now, w.policy.notice_seconds)
}

/// The deadline of a notice given at `now`: the notice later, up to the next whole second (the records that
/// keep deadlines hold whole seconds, and a deadline never comes sooner than promised).
pub fn full_notice_deadline(now: Timestamp, notice_seconds: i64) -> Timestamp {
    let exact = now
        .saturating_add(SignedDuration::from_secs(notice_seconds.max(0)))
        .expect("notice fits a timestamp");
    let whole = exact.as_second() + i64::from(exact.subsec_nanosecond() > 0);
    Timestamp::from_second(whole).unwrap_or(exact)
}

/// Step 1.
fn reclaiming_nodes(w: &mut Draft) {
    for n in 0..w.nodes.len() {
        if !w.nodes[n].member || w.nodes[n].state != NodeState::Reclaiming {
            continue;
        }
        let name = w.snap.nodes[n].name.clone();
        let lease = w.lease_key(n).map(str::to_string);
        let tenant_pods = w.tenant_pods_on(n);
        if tenant_pods.is_empty() {
            super::scrub::release(
                w,
                n,
                Cause::NoticeServed,
                "notice served and no tenant pod is left on the node",
            );
            continue;
        }
        let deadline = match w.snap.nodes[n].marks.deadline {
            Some(d) => d,
            None => {
                // The node says reclaiming but carries no deadline: give the notice again, in full.
                let d = deadline_after_notice(w);
                w.push(
                    Action::Notice {
                        node: name.clone(),
                        lease,
                        deadline: d,
                    },
                    Cause::NoticeServed,
                    "reclaiming without a deadline",
                );
                d
            }
        };
        for p in tenant_pods {
            let pod = &w.snap.pods[p];
            if pod.terminating {
                continue;
            }
            if w.now >= deadline {
                let action = Action::Evict {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    node: name.clone(),
                    deadline,
                };
                w.push(
                    action,
                    Cause::NoticeServed,
                    &format!("reclaim deadline {deadline} has passed"),
                );
            } else if pod.deadline_annotation != Some(deadline) {
                let action = Action::AnnotatePod {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    deadline,
                };
                w.push(
                    action,
                    Cause::NoticeServed,
                    "tenant pod on a reclaiming node lacks the deadline",
                );
            }
        }
    }
}

/// Step 2: notices that do not depend on internal demand, and so on no concurrency budget.
fn forced_notices(w: &mut Draft) {
    let deleting = w.policy.deleting;
    for n in 0..w.nodes.len() {
        let node = &w.nodes[n];
        if !node.member || !matches!(node.state, NodeState::Lent | NodeState::Leased) {
            continue;
        }
        let has_tenant_pods = w.has_tenant_pods(n);
        let why = if deleting {
            Some((Cause::PoolDeleted, "the pool is being deleted".to_string()))
        } else if node.state == NodeState::Lent && has_tenant_pods {
            Some((
                Cause::Misuse,
                "tenant pods run on a node that no lease holds".to_string(),
            ))
        } else if node.state == NodeState::Lent && !node.selected {
            Some((
                Cause::PoolRules,
                "no longer selected by the pool's nodeSelector or gpuModels".to_string(),
            ))
        } else if node.state == NodeState::Leased {
            lease_end_reason(w, n).map(|why| (Cause::LeaseOver, why))
        } else if node.internal_gpu_pods > 0 {
            Some((Cause::Misuse, "an internal GPU pod runs on the lent node".to_string()))
        } else {
            None
        };
        let Some((cause, why)) = why else {
            if node.state == NodeState::Leased && !node.selected {
                // A lease is a promise: a node leased before it left the pool's selection stays with its lease
                // to the lease's end (or until internal demand takes it through notice), then leaves the pool.
                w.nodes[n].reason = format!(
                    "leased to {}; no longer selected by the pool: it leaves the pool once its lease gives it back",
                    w.lease_key(n).unwrap_or("?")
                );
            }
            continue;
        };
        if node.state == NodeState::Lent && !has_tenant_pods {
            w.unlend(n, cause, &why);
        } else {
            let deadline = notice_deadline(w, n);
            w.notice(n, deadline, cause, &why);
        }
    }
}

/// Why a leased node's lease is over, if it is: deleted, gone, finished, or running out within the notice.
fn lease_end_reason(w: &Draft, n: usize) -> Option<String> {
    let key = w.lease_key(n).unwrap_or("");
    let Some(l) = w.nodes[n].lease else {
        return Some(format!("lease {key} no longer exists"));
    };
    let lease = &w.snap.leases[l];
    if lease.deleting {
        return Some(format!("lease {key} is being deleted"));
    }
    if lease.phase.is_final() {
        return Some(format!("lease {key} has ended"));
    }
    let end = lease_end(w, l)?;
    (deadline_after_notice(w) >= end).then(|| format!("lease {key} ends at {end}"))
}

fn lease_end(w: &Draft, l: usize) -> Option<Timestamp> {
    let secs = w.snap.leases[l].duration_seconds?;
    w.bound_at[l]?.checked_add(SignedDuration::from_secs(secs)).ok()
}

/// A lease that runs out gets its end as the deadline (never less notice than the pool gives).
fn notice_deadline(w: &Draft, n: usize) -> Timestamp {
    let full = deadline_after_notice(w);
    match w.nodes[n].lease.and_then(|l| lease_end(w, l)) {
        Some(end) if end > full => end,
        _ => full,
    }
}

/// Step 3.
fn internal_demand(w: &mut Draft, classes: &mut Classes) {
    health::unusable_under_demand(w);
    let deficits: Vec<(usize, i64)> = (0..classes.len()).map(|c| (c, classes.deficit(c))).collect();
    for (c, need) in deficits {
        if need > 0 {
            reclaim_for(w, classes, Some(c), need);
        }
    }
    let any = classes.any_deficit();
    if any > 0 {
        reclaim_for(w, classes, None, any);
    }
    reclaim_ahead(w, classes);
}

/// Per class whose demand climbed over the last notice window: when what is free and coming back would not
/// cover pending demand plus the rise the history saw follow such climbs, give notice for the difference now.
fn reclaim_ahead(w: &mut Draft, classes: &mut Classes) {
    let Some(learned) = w.policy.reserve.learned.filter(|l| l.reclaim_ahead) else {
        return;
    };
    if !matches!(classes.learned, Some(Ok(()))) {
        return;
    }
    let Some(history) = w.snap.history.clone() else { return };
    let notice = w.policy.notice_seconds;
    let back = w.now.as_second() - window_minutes(notice) * 60;
    let Ok(back) = jiff::Timestamp::from_second(back) else {
        return;
    };
    for c in 0..classes.len() {
        let before = history.at(classes.name(c), back);
        let now = classes.demand(c);
        if before.is_none_or(|b| now <= i64::from(b)) {
            continue;
        }
        let Some(rise) = history.rise_quantile(classes.name(c), w.now, notice, learned.burst_quantile, true) else {
            continue;
        };
        // While demand climbs, the rise expected is kept from lending too, so what comes back stays back.
        let expected = i64::from(rise).min(classes.capacity[c] - classes.used[c]).max(0);
        if expected > classes.held[c] {
            classes.held[c] = expected;
            classes.why[c] = format!(
                "{}; climbing: {expected} kept for the rise expected within the notice",
                classes.why[c]
            );
        }
        let need = classes.waiting(c) + i64::from(rise) - classes.free[c] - classes.incoming[c];
        if need > 0 {
            let why = format!(
                "reclaim ahead in {}: demand rose from {} to {now} GPUs within {notice}s and may rise {rise} more; {} free, {} coming back",
                classes.label(c),
                before.unwrap_or(0),
                classes.free[c],
                classes.incoming[c]
            );
            reclaim(w, classes, Some(c), need, Cause::ReclaimAhead, &why);
        }
    }
}

/// Brings `need` GPUs back for the internal demand of class `c` (any class when None).
fn reclaim_for(w: &mut Draft, classes: &mut Classes, c: Option<usize>, need: i64) {
    // Says why the node is taken back: what internal work needs against what is free.
    let why = match c {
        Some(c) if classes.pending[c] == 0 => format!(
            "taken back for internal work: the reserve of {} is short by {need} GPUs (nothing pending; reserve {}, \
             {} free, {} coming back)",
            classes.label(c),
            classes.reserve[c],
            classes.free[c],
            classes.incoming[c]
        ),
        Some(c) => format!(
            "taken back for internal work: {} needs {need} more GPUs ({} pending, reserve {}; {} free, {} coming back)",
            classes.label(c),
            classes.pending[c],
            classes.reserve[c],
            classes.free[c],
            classes.incoming[c]
        ),
        None => format!(
            "taken back for internal work: {} GPUs pending that can run on any GPU model, {need} more needed",
            classes.pending_any
        ),
    };
    reclaim(w, classes, c, need, Cause::InternalDemand, &why);
}

/// Brings `need` GPUs back for class `c` (any class when None): idle lent nodes at once, then notices.
fn reclaim(w: &mut Draft, classes: &mut Classes, c: Option<usize>, need: i64, cause: Cause, why: &str) {
    let mut need = need;
    let in_class = |w: &Draft, n: usize| c.is_none_or(|c| w.nodes[n].class == c);
    let mut lent: Vec<usize> = (0..w.nodes.len())
        .filter(|&n| w.nodes[n].member && w.nodes[n].state == NodeState::Lent && in_class(w, n))
        // A node that is not Ready or cordoned would not serve the demand once back.
        .filter(|&n| !w.has_tenant_pods(n) && w.snap.nodes[n].ready && !w.snap.nodes[n].unschedulable)
        .collect();
    lent.sort_by_key(|&n| std::cmp::Reverse(w.nodes[n].gpus));
    for n in lent {
        if need <= 0 {
            break;
        }
        need -= i64::from(w.nodes[n].gpus);
        classes.free[w.nodes[n].class] += w.nodes[n].gpus as i64;
        w.unlend(n, cause, why);
    }
    if need <= 0 {
        return;
    }
    // Degraded leased nodes go first, each counting what it can serve once back, outside the budget.
    for n in health::degraded_leased(w, c) {
        if need <= 0 {
            break;
        }
        let gpus = i64::from(health::usable(w, n));
        let why = format!("{why}; {}", health::degraded_why(w, n));
        need -= gpus;
        let deadline = deadline_after_notice(w);
        if w.notice(n, deadline, cause, &why) {
            classes.free[w.nodes[n].class] += gpus;
        } else {
            classes.incoming[w.nodes[n].class] += gpus;
        }
    }
    if need <= 0 {
        return;
    }
    let budget = w
        .policy
        .max_concurrent_reclaims
        .map(|max| (max as usize).saturating_sub(health::reclaiming_in_budget(w)))
        .unwrap_or(usize::MAX);
    let candidates = lease_candidates(w, c);
    let chosen = reclaim::choose(&candidates, need, budget, w.now, w.policy.min_lease_seconds);
    let deadline = deadline_after_notice(w);
    for n in chosen {
        let gpus = i64::from(w.nodes[n].gpus);
        if w.notice(n, deadline, cause, why) {
            classes.free[w.nodes[n].class] += gpus;
        } else {
            classes.incoming[w.nodes[n].class] += gpus;
        }
    }
}

/// Leased nodes of class `c`, grouped by lease, in lease order.
fn lease_candidates(w: &Draft, c: Option<usize>) -> Vec<LeaseCandidate> {
    let mut by_lease: Vec<Option<LeaseCandidate>> = (0..w.snap.leases.len()).map(|_| None).collect();
    for (n, node) in w.nodes.iter().enumerate() {
        if !node.member || node.state != NodeState::Leased || c.is_some_and(|c| node.class != c) {
            continue;
        }
        // A node that is not Ready or cordoned would not serve the demand once back; degraded ones went first.
        if !w.snap.nodes[n].ready || w.snap.nodes[n].unschedulable || health::degraded(w, n) {
            continue;
        }
        let Some(l) = node.lease else { continue };
        let cand = by_lease[l].get_or_insert_with(|| LeaseCandidate {
            key: w.lease_keys[l].clone(),
            bound_at: w.bound_at[l],
            price: w.lease_price(l),
            nodes: vec![],
            idle: vec![],
        });
        cand.nodes.push((n, node.gpus));
        if !w.has_tenant_pods(n) {
            cand.idle.push(n);
        }
    }
    by_lease.into_iter().flatten().collect()
}

/// Step 4. Returns why the pool lends nothing new, when that holds pool-wide.
fn lending(w: &mut Draft, classes: &mut Classes) -> Option<String> {
    let blocked = if w.policy.deleting {
        Some("the pool is being deleted".to_string())
    } else if let Some(why) = &w.policy.invalid {
        Some(format!("{why}; nothing new is lent until it is fixed"))
    } else if !w.snap.signals.fresh {
        Some(format!(
            "signals are not fresh: {}",
            w.snap.signals.reason.as_deref().unwrap_or("unknown")
        ))
    } else if !w.policy.windows.is_open(w.now) {
        Some("outside the lending windows".to_string())
    } else {
        None
    };
    let cap = u64::from(w.total_gpus()) * u64::from(w.policy.max_lent_percent) / 100;
    let mut out = u64::from(w.out_gpus());
    // Lent nodes without a lease that the rules no longer allow go straight back.
    let idle_lent: Vec<usize> = (0..w.nodes.len())
        .filter(|&n| w.nodes[n].member && w.nodes[n].state == NodeState::Lent && !w.has_tenant_pods(n))
        .collect();
    for n in idle_lent {
        if blocked.as_deref() == Some("outside the lending windows") {
            w.unlend(n, Cause::PoolRules, "outside the lending windows");
            out -= u64::from(w.nodes[n].gpus);
        } else if out > cap {
            w.unlend(n, Cause::PoolRules, "more than maxLentPercent of the pool is lent");
            out -= u64::from(w.nodes[n].gpus);
        }
    }
    let (mut surplus, mut spare) = classes.surplus();
    for n in idle_candidates(w) {
        if let Some(why) = &blocked {
            w.nodes[n].reason = format!("idle, but {why}");
            continue;
        }
        let gpus = w.nodes[n].gpus;
        let c = w.nodes[n].class;
        if surplus[c] < i64::from(gpus) || spare < i64::from(gpus) {
            w.nodes[n].reason = format!(
                "idle, but kept for internal work ({} GPUs pending, {} reserved)",
                classes.pending[c], classes.held[c]
            );
            continue;
        }
        if out + u64::from(gpus) > cap {
            w.nodes[n].reason = format!("idle, but maxLentPercent ({}%) is reached", w.policy.max_lent_percent);
            continue;
        }
        surplus[c] -= i64::from(gpus);
        spare -= i64::from(gpus);
        out += u64::from(gpus);
        classes.free[c] -= i64::from(gpus);
        if w.policy.observe {
            // Counted as what would be lent, and left where it is.
            w.lent_now += gpus;
            w.nodes[n].reason = "idle beyond internal demand and reserve: would be lent in Enforce mode".into();
        } else {
            w.lend(n);
        }
    }
    blocked
}

/// The internal nodes this plan has not acted on that are idle and free to lend, longest idle first (then by
/// name); every other one gets why not as its reason.
fn idle_candidates(w: &mut Draft) -> Vec<usize> {
    let mut candidates: Vec<usize> = Vec::new();
    let mut said = CountSaid::default();
    for n in 0..w.nodes.len() {
        if !w.nodes[n].member || w.nodes[n].state != NodeState::Internal || w.nodes[n].acted {
            continue;
        }
        match w.idle_verdict(n, &mut said) {
            Ok(()) => candidates.push(n),
            Err(reason) => w.nodes[n].reason = reason,
        }
    }
    candidates.sort_by(|&a, &b| {
        let (na, nb) = (&w.snap.nodes[a], &w.snap.nodes[b]);
        na.idle_since.cmp(&nb.idle_since).then_with(|| na.name.cmp(&nb.name))
    });
    candidates
}

/// Step 5.
fn binding(w: &mut Draft) {
    if w.policy.deleting {
        return;
    }
    let pending = pending_leases(w);
    let mut free = free_to_bind(w);
    let earlier = earlier_holders(w);
    let size = PoolSize::of(w);
    let elsewhere_nodes = overlap::selected_elsewhere(w);
    for l in pending {
        if beyond_pool(w, l, &size, &elsewhere_nodes) {
            continue;
        }
        if let Some(reason) = held_back(w, l, &earlier) {
            w.lease_reasons[l] = reason;
            continue;
        }
        let fits = match fitting(w, l, &free) {
            Ok(fits) => fits,
            Err(reason) => {
                w.lease_reasons[l] = reason;
                continue;
            }
        };
        let lease = &w.snap.leases[l];
        match pick_nodes(w, &fits, lease.gpus) {
            Some(nodes) => {
                free.retain(|n| !nodes.contains(n));
                w.bind(l, nodes);
            }
            None => {
                let have: u32 = fits.iter().map(|&n| w.nodes[n].gpus).sum();
                w.lease_reasons[l] = format!(
                    "waiting for {} GPUs{}; {have} lent and free now{}",
                    lease.gpus,
                    of_model(lease.model.as_deref()),
                    overlap::because(&overlap::held_elsewhere(w, &elsewhere_nodes, lease.model.as_deref()))
                );
            }
        }
    }
}

/// The leases waiting to be bound, oldest first.
fn pending_leases(w: &Draft) -> Vec<usize> {
    let mut pending: Vec<usize> = (0..w.snap.leases.len())
        .filter(|&l| {
            let lease = &w.snap.leases[l];
            lease.phase == LeasePhase::Pending && w.bound_at[l].is_none() && !lease.deleting
        })
        .collect();
    pending.sort_by(|&a, &b| {
        let (la, lb) = (&w.snap.leases[a], &w.snap.leases[b]);
        la.created.cmp(&lb.created).then_with(|| la.name.cmp(&lb.name))
    });
    pending
}

/// Lent nodes free to bind, shrinking as leases take them.
fn free_to_bind(w: &Draft) -> Vec<usize> {
    (0..w.nodes.len())
        .filter(|&n| {
            let node = &w.nodes[n];
            node.member
                && node.selected
                && node.state == NodeState::Lent
                && node.lease.is_none()
                && !w.has_tenant_pods(n)
                // The tenant could not use a node that is not Ready (and it would bill nothing).
                && w.snap.nodes[n].ready
        })
        .collect()
}

/// Nodes still out under a lease key that names no lease here (an earlier lease of the same name), by key: a
/// new lease of that name waits until they are back, so its pods cannot select them.
fn earlier_holders<'a>(w: &Draft<'a>) -> std::collections::BTreeMap<String, &'a str> {
    let snap = w.snap;
    let mut earlier: std::collections::BTreeMap<String, &'a str> = Default::default();
    for (n, node) in w.nodes.iter().enumerate() {
        if let (true, None, Some(key)) = (node.member && node.state.is_out(), node.lease, w.lease_key(n)) {
            earlier.entry(key.to_string()).or_insert(snap.nodes[n].name.as_str());
        }
    }
    earlier
}

/// What the pool has in all, per model asked for, whatever state its nodes are in: a lease asking more can
/// never be bound as the pool stands.
struct PoolSize<'a> {
    by_model: std::collections::BTreeMap<&'a str, u32>,
    total: u32,
}

impl<'a> PoolSize<'a> {
    fn of(w: &Draft<'a>) -> Self {
        let mut size = PoolSize {
            by_model: Default::default(),
            total: 0,
        };
        for n in (0..w.nodes.len()).filter(|&n| w.nodes[n].member) {
            size.total += w.nodes[n].gpus;
            if let Some(m) = w.model(n) {
                *size.by_model.entry(m).or_default() += w.nodes[n].gpus;
            }
        }
        size
    }
}

/// " of model M" for a lease that names its model, else nothing.
fn of_model(model: Option<&str>) -> String {
    model.map(|m| format!(" of model {m}")).unwrap_or_default()
}

/// Whether lease `l` asks for more than the pool has in all, with its reason set: waiting, when other pools
/// hold the rest for now, or unschedulable.
fn beyond_pool(w: &mut Draft, l: usize, size: &PoolSize, elsewhere_nodes: &[usize]) -> bool {
    let lease = &w.snap.leases[l];
    let has = match lease.model.as_deref() {
        Some(m) => size.by_model.get(m).copied().unwrap_or(0),
        None => size.total,
    };
    if lease.gpus <= has {
        return false;
    }
    let elsewhere = overlap::held_elsewhere(w, elsewhere_nodes, lease.model.as_deref());
    let model = of_model(lease.model.as_deref());
    let other: u32 = elsewhere.values().sum();
    if lease.gpus <= has + other {
        // Not unschedulable: the nodes are there, another pool holds them for now.
        w.lease_reasons[l] = format!(
            "waiting for {} GPUs{model}: the pool has {has} in all{}",
            lease.gpus,
            overlap::because(&elsewhere)
        );
        return true;
    }
    w.lease_reasons[l] = format!(
        "asks for {} GPUs{model} and the pool has {has} in all: it cannot be bound until the pool grows",
        lease.gpus
    );
    w.unschedulable[l] = true;
    true
}

/// Why lease `l` may not be bound now whatever nodes are free: the pool's spec or mode, an earlier lease of
/// its name, its namespace, or a duration no longer than the notice.
fn held_back(w: &Draft, l: usize, earlier: &std::collections::BTreeMap<String, &str>) -> Option<String> {
    let lease = &w.snap.leases[l];
    if let Some(why) = &w.policy.invalid {
        return Some(format!("{why}; nothing new is bound until it is fixed"));
    }
    if w.policy.observe {
        return Some("the pool is in Observe mode and binds no lease".to_string());
    }
    if let Some(node) = earlier.get(w.lease_keys[l].as_str()) {
        return Some(format!(
            "an earlier lease named {} still holds node {node}; waiting until it is back",
            w.lease_keys[l]
        ));
    }
    if !lease.tenant_namespace {
        return Some(format!(
            "namespace {} is not a tenant namespace of this pool",
            lease.namespace
        ));
    }
    if let Some(d) = lease.duration_seconds
        && d <= w.policy.notice_seconds
    {
        // Bound now, it would be under notice at once: its whole life would be the notice.
        return Some(format!(
            "durationSeconds ({d}) must be longer than the pool's notice ({}s)",
            w.policy.notice_seconds
        ));
    }
    None
}

/// The free nodes of the model lease `l` asks for and within its price cap; Err with the reason when the
/// pool's price is above the cap.
fn fitting(w: &Draft, l: usize, free: &[usize]) -> Result<Vec<usize>, String> {
    let lease = &w.snap.leases[l];
    let model_ok = |n: usize| lease.model.as_deref().is_none_or(|m| w.model(n) == Some(m));
    let mut fits: Vec<usize> = free.iter().copied().filter(|&n| model_ok(n)).collect();
    if let Some(cap) = lease.max_price {
        let before = fits.len();
        fits.retain(|&n| w.policy.prices.for_model(w.model(n)) <= cap);
        if (before > 0 && fits.is_empty()) || (before == 0 && w.lowest_price(lease.model.as_deref()) > cap) {
            return Err(format!(
                "the pool's price is above the lease's cap of {cap} per GPU-hour"
            ));
        }
    }
    Ok(fits)
}

/// The fewest whole nodes that cover `gpus`, wasting as little as possible; None when they do not suffice.
fn pick_nodes(w: &Draft, free: &[usize], gpus: u32) -> Option<Vec<usize>> {
    let mut by_size: Vec<usize> = free.to_vec();
    by_size.sort_by(|&a, &b| w.nodes[b].gpus.cmp(&w.nodes[a].gpus).then(a.cmp(&b)));
    let mut chosen = Vec::new();
    let mut got = 0u32;
    for &n in &by_size {
        if got >= gpus {
            break;
        }
        chosen.push(n);
        got += w.nodes[n].gpus;
    }
    if got < gpus {
        return None;
    }
    // The last node taken may be larger than needed: swap in the smallest unused node that still covers.
    let last = *chosen.last()?;
    let rest = gpus - (got - w.nodes[last].gpus);
    if let Some(&better) = by_size
        .iter()
        .rev()
        .find(|&&n| !chosen.contains(&n) && w.nodes[n].gpus >= rest)
        && w.nodes[better].gpus < w.nodes[last].gpus
    {
        *chosen.last_mut()? = better;
    }
    Some(chosen)
}

/// Step 6.
fn report(mut w: Draft, classes: Classes, observed: Totals, blocked: Option<String>) -> Plan {
    let mut totals = observed;
    totals.lendable_gpus = w.lent_now;
    totals.pending_gpus = classes.pending.iter().map(|&p| p.max(0) as u32).sum::<u32>() + classes.pending_any as u32;
    let class_reports = classes.reports();
    totals.reserve_gpus = class_reports.iter().map(|c| c.reserve_gpus).sum();
    totals.harvestable_gpus = totals.lendable_gpus + totals.lent_gpus + totals.leased_gpus + totals.reclaiming_gpus;
    let ledger = w.accrue(&totals);
    let nodes = w.node_reports();
    let leases = w.lease_reports();
    let scrubs = std::mem::take(&mut w.scrubs);
    Plan {
        steps: w.steps,
        totals,
        ledger,
        nodes,
        leases,
        lending_blocked: blocked,
        classes: class_reports,
        reserve_learned: classes.learned.clone(),
        scrubs,
    }
}
