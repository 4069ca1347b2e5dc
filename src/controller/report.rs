//! Report: statuses, the lease ledger, events and metrics after a plan was carried out.
//!
//! Statuses are server-side applied by sublet, which wholly owns them. A lease's ledger is accounted up
//! to `accountedUntil`, in whole seconds, at the GPUs it held over that interval (sublet changes them only
//! through its own steps, and writes the ledger in the same pass), so a restarted controller carries on
//! from exactly where the last write stopped: no second lost, none counted twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;

use jiff::{SignedDuration, Timestamp};

use super::health::{Seen, Sight};
use super::ledger::{Held, Ledger, Usable, accrue, whole};
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::execute::{Done, Outcome};
use super::{Context, Error};
use crate::api::keys::{FIELD_MANAGER, LEASE_LABEL, LEASE_TAINT, lease_key};
use crate::api::{
    ConditionStatus, GpuLease, GpuLeaseStatus, LeasePhase, MemberNode, NodeNotice, NodeState, PoolTotals, TenantPool,
    TenantPoolStatus, set_condition,
};
use crate::policy::{Action, Plan, Snapshot};

/// At most this many lease statuses are written in one pass only because their ledger is due; the rest
/// follow in the next passes (most overdue first), so a thousand leases that fell due together do not hold
/// up a notice. A status whose phase, nodes or conditions changed is always written in its pass.
pub const LEDGER_WRITES_PER_PASS: usize = 4 * WRITES_IN_FLIGHT;

/// Status writes in flight at once.
const WRITES_IN_FLIGHT: usize = 8;

/// One lease status to write.
struct LeaseWrite<'a> {
    lease: &'a GpuLease,
    namespace: &'a str,
    name: &'a str,
    status: GpuLeaseStatus,
    /// The event to publish once written (Released or Expired), with the status's reason.
    event: Option<(&'static str, String)>,
    /// The Warning to publish once written: the lease just turned unschedulable, and why.
    unschedulable: Option<&'a str>,
    /// When the ledger was last written (for the most-overdue-first order).
    accounted_until: Option<Timestamp>,
}

/// What `report` left for later.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Lease ledgers due but not written in this pass (over [`LEDGER_WRITES_PER_PASS`]).
    pub ledgers_left: usize,
}

/// Writes lease statuses, events for what was done, and the pool status.
#[allow(clippy::too_many_arguments)]
pub async fn report(
    ctx: &Context,
    pool: &TenantPool,
    snapshot: &Snapshot,
    plan: &Plan,
    outcomes: &[Outcome],
    leases: &[std::sync::Arc<GpuLease>],
    observe_only: bool,
    overlap: &super::overlap::Overlap,
) -> Result<Reported, Error> {
    let started = std::time::Instant::now();
    let pool_name = pool.name_any();
    let by_name = leases_by_name(leases, &pool_name);
    let (writes, ledgers_left) = lease_writes(
        pool,
        snapshot,
        plan,
        outcomes,
        &by_name,
        observe_only,
        interval(ctx),
        &ctx.seen,
    );
    let written = writes.len();
    let written_ledgers = send_lease_writes(ctx, pool, writes, observe_only).await;
    let accounted = accounted(pool, &by_name, &written_ledgers);
    lease_metrics(ctx, &pool_name, plan, &by_name, observe_only);
    let t_leases = started.elapsed();
    super::events::lease_events(ctx, snapshot, outcomes, &by_name).await;
    super::events::node_events(ctx, &pool_name, outcomes).await;
    let t_events = started.elapsed();
    for (reason, note) in pool_status(ctx, pool, snapshot, plan, accounted, observe_only, overlap) {
        publish(ctx, pool, EventType::Warning, reason, "Report", &note).await;
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    tracing::debug!(
        pool = %pool_name,
        lease_statuses = written,
        leases_ms = ms(t_leases),
        events_ms = ms(t_events - t_leases),
        pool_status_ms = ms(started.elapsed() - t_events),
        "reported"
    );
    Ok(Reported { ledgers_left })
}

/// The pool's leases by (namespace, name).
fn leases_by_name<'a>(leases: &'a [std::sync::Arc<GpuLease>], pool: &str) -> HashMap<(&'a str, &'a str), &'a GpuLease> {
    leases
        .iter()
        .filter(|l| l.spec.pool == pool)
        .filter_map(|l| {
            Some((
                (l.metadata.namespace.as_deref()?, l.metadata.name.as_deref()?),
                l.as_ref(),
            ))
        })
        .collect()
}

/// A node a lease holds as observed (before this pass's steps), with the lease UID the node names.
type HeldNode<'a> = (&'a crate::policy::NodeView, Option<&'a str>);

/// The nodes each lease holds as observed (before this pass's steps), by lease key.
fn held_nodes<'a>(snapshot: &'a Snapshot, pool: &str) -> HashMap<&'a str, Vec<HeldNode<'a>>> {
    let mut held: HashMap<&str, Vec<HeldNode>> = HashMap::new();
    for n in &snapshot.nodes {
        if matches!(n.marks.state, NodeState::Leased | NodeState::Reclaiming)
            && n.marks.pool.as_deref() == Some(pool)
            && let Some(k) = n.marks.lease.as_deref()
        {
            held.entry(k).or_default().push((n, n.marks.lease_uid.as_deref()));
        }
    }
    held
}

/// What this pass did to nodes, as the holds need it.
#[derive(Default)]
struct Moves<'a> {
    /// Nodes this pass gave back (written now).
    returned_now: HashSet<&'a str>,
    /// Nodes this pass gave back or found back already.
    returned_ok: HashSet<&'a str>,
    /// Nodes this pass bound, per lease.
    bound_now: HashMap<(&'a str, &'a str), Vec<&'a str>>,
    /// When each node of the pool says it went back.
    node_returned: HashMap<&'a str, Option<Timestamp>>,
}

fn moves<'a>(snapshot: &'a Snapshot, outcomes: &'a [Outcome]) -> Moves<'a> {
    let mut m = Moves {
        node_returned: snapshot
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.marks.returned_at))
            .collect(),
        ..Moves::default()
    };
    for o in outcomes {
        match (&o.step.action, &o.result) {
            (Action::Return { node, .. } | Action::Unlend { node } | Action::Scrub { node, .. }, Ok(done)) => {
                m.returned_ok.insert(node.as_str());
                if *done == Done::Written {
                    m.returned_now.insert(node.as_str());
                }
            }
            (Action::Bind { namespace, name, nodes }, Ok(_)) => {
                m.bound_now
                    .entry((namespace.as_str(), name.as_str()))
                    .or_default()
                    .extend(nodes.iter().map(String::as_str));
            }
            _ => {}
        }
    }
    m
}

/// The lease's holds after this pass: the nodes that name it (or name no UID) and were not given back, and
/// those this pass bound to it, over its recorded holds.
fn lease_holds(
    snapshot: &Snapshot,
    lease: &GpuLease,
    old: &GpuLeaseStatus,
    held: &[HeldNode],
    moves: &Moves,
    seen: &Seen,
) -> Vec<crate::api::NodeHold> {
    let now = snapshot.now;
    let id = (
        lease.metadata.namespace.as_deref().unwrap_or_default(),
        lease.metadata.name.as_deref().unwrap_or_default(),
    );
    let uid = lease.metadata.uid.as_deref();
    let created = lease.metadata.creation_timestamp.as_ref().map(|t| whole(t.0));
    let since_binding = |since: Option<Timestamp>| {
        let at = old.bound_at.as_ref().map(|t| t.0).or(since).unwrap_or(now);
        created.map_or(at, |c| at.max(c))
    };
    let who = uid.map_or_else(|| format!("{}.{}", id.0, id.1), str::to_string);
    seen.recorded(&who, &old.holds);
    // What the tenant can use of a held node: all it was bound with, fewer when it shrank, none when not Ready.
    let usable = |n: &crate::policy::NodeView| {
        let bound = old
            .holds
            .iter()
            .find(|h| h.node == n.name && h.returned_at.is_none())
            .map_or(n.gpus, |h| h.gpus.max(0) as u32);
        let u = Usable::of(n.ready, n.gpus, bound, now);
        let since = seen.since(&who, &n.name, Sight::Usable(u.gpus), now);
        Usable { since, ..u }
    };
    let mut held_after: Vec<Held> = held
        .iter()
        .filter(|(_, on_node)| on_node.is_none() || uid.is_none() || *on_node == uid)
        .filter(|(n, _)| !moves.returned_ok.contains(n.name.as_str()))
        .map(|(n, _)| Held {
            node: n.name.clone(),
            gpus: n.gpus,
            bound_at: since_binding(n.marks.since),
            usable: usable(n),
        })
        .collect();
    for node in moves.bound_now.get(&id).into_iter().flatten() {
        if !held_after.iter().any(|h| h.node == *node)
            && let Some(n) = snapshot.nodes.iter().find(|n| n.name == *node)
        {
            held_after.push(Held {
                node: node.to_string(),
                gpus: n.gpus,
                bound_at: now,
                usable: usable(n),
            });
        }
    }
    super::ledger::holds(
        &old.holds,
        &held_after,
        &moves.returned_now,
        |n| moves.node_returned.get(n).copied().flatten(),
        |h| super::health::is_lost(snapshot, h).then(|| seen.since(&who, &h.node, Sight::Lost, now)),
        old.accounted_until.as_ref().map(|t| t.0),
        now,
    )
}

/// The deadline of each node under notice: as observed (from sublet's record), or as given in this pass.
fn notice_deadlines<'a>(snapshot: &'a Snapshot, outcomes: &'a [Outcome]) -> HashMap<&'a str, Timestamp> {
    let mut deadlines: HashMap<&str, Timestamp> = outcomes
        .iter()
        .filter(|o| matches!(o.result, Ok(Done::Written)))
        .filter_map(|o| match &o.step.action {
            Action::Notice { node, deadline, .. } => Some((node.as_str(), *deadline)),
            _ => None,
        })
        .collect();
    for n in &snapshot.nodes {
        if n.marks.state == NodeState::Reclaiming
            && let Some(d) = n.marks.deadline
        {
            deadlines.insert(n.name.as_str(), d);
        }
    }
    deadlines
}

/// The lease status writes of this pass (see [`this_pass`]) and how many due ledgers are left for later: pure,
/// from the plan's lease reports, the observed statuses and what this pass did.
#[allow(clippy::too_many_arguments)]
fn lease_writes<'a>(
    pool: &TenantPool,
    snapshot: &'a Snapshot,
    plan: &'a Plan,
    outcomes: &'a [Outcome],
    by_name: &HashMap<(&'a str, &'a str), &'a GpuLease>,
    observe_only: bool,
    ledger_interval: SignedDuration,
    seen: &Seen,
) -> (Vec<LeaseWrite<'a>>, usize) {
    let now = snapshot.now;
    let held = held_nodes(snapshot, &pool.name_any());
    let moves = moves(snapshot, outcomes);
    let failed_binds: HashSet<(&str, &str)> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .filter_map(|o| match &o.step.action {
            Action::Bind { namespace, name, .. } => Some((namespace.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    let deadlines = notice_deadlines(snapshot, outcomes);
    let no_status = GpuLeaseStatus::default();
    let mut changed: Vec<LeaseWrite> = Vec::new();
    let mut ledger_only: Vec<LeaseWrite> = Vec::new();
    for report in &plan.leases {
        let id = (report.namespace.as_str(), report.name.as_str());
        if failed_binds.contains(&id) {
            continue;
        }
        let Some(&lease) = by_name.get(&id) else {
            continue;
        };
        let old = lease.status.as_ref().unwrap_or(&no_status);
        if observe_only {
            changed.extend(observe_write(lease, id, old));
            continue;
        }
        let held = held
            .get(lease_key(&report.namespace, &report.name).as_str())
            .map_or(&[][..], Vec::as_slice);
        let holds = lease_holds(snapshot, lease, old, held, &moves, seen);
        match lease_write(pool, lease, report, old, holds, &deadlines, now, ledger_interval) {
            Some((write, true)) => ledger_only.push(write),
            Some((write, false)) => changed.push(write),
            None => {}
        }
    }
    this_pass(changed, ledger_only, |w| w.accounted_until)
}

/// A lease's status write after its report: its new status, its `holds` after this pass and its ledger
/// carried forward over them, and whether only the ledger changed. None when nothing changed, or only a ledger not due yet (one is due
/// `ledger_interval` after it was last written).
#[allow(clippy::too_many_arguments)]
fn lease_write<'a>(
    pool: &TenantPool,
    lease: &'a GpuLease,
    report: &'a crate::policy::LeaseReport,
    old: &GpuLeaseStatus,
    holds: Vec<crate::api::NodeHold>,
    deadlines: &HashMap<&str, Timestamp>,
    now: Timestamp,
    ledger_interval: SignedDuration,
) -> Option<(LeaseWrite<'a>, bool)> {
    let key = lease_key(&report.namespace, &report.name);
    let prev = Ledger {
        gpu_seconds: old.gpu_seconds,
        cost: old.cost,
        accounted_until: old.accounted_until.as_ref().map(|t| t.0),
    };
    let ledger = accrue(prev, &holds, report.price_per_gpu_hour, now);
    let mut status = lease_status(old, report, &key, lease.metadata.generation, now);
    status.holds = holds;
    // A bind whose status write failed, undone before the next pass, is known by its hold alone.
    status.bound_at = super::ledger::first_bound(&status);
    super::health::conditions(&mut status, lease.metadata.generation, now);
    status.notices = report
        .nodes
        .iter()
        .filter_map(|n| {
            Some(NodeNotice {
                node: n.clone(),
                deadline: Time(*deadlines.get(n.as_str())?),
            })
        })
        .collect();
    let unchanged = status == *old;
    let ledger_due = prev
        .accounted_until
        .is_none_or(|a| now.duration_since(a) >= ledger_interval);
    if unchanged && !(ledger_due && ledger != prev) {
        return None;
    }
    status.gpu_seconds = ledger.gpu_seconds;
    status.cost = ledger.cost;
    status.cost_text = Some(crate::api::cost_text(ledger.cost, &pool.spec.pricing.currency));
    status.accounted_until = ledger.accounted_until.map(Time);
    // The status's reason: it may say more than the plan's (a lease ended by the loss of its last node).
    let reason = status.reason.clone().unwrap_or_else(|| report.reason.clone());
    let event = (old.phase != report.phase)
        .then_some(match report.phase {
            LeasePhase::Expired => Some(("Expired", reason)),
            LeasePhase::Released => Some(("Released", reason)),
            _ => None,
        })
        .flatten();
    let write = LeaseWrite {
        lease,
        namespace: &report.namespace,
        name: &report.name,
        unschedulable: (is_true(&status.conditions, UNSCHEDULABLE) && !is_true(&old.conditions, UNSCHEDULABLE))
            .then_some(report.reason.as_str()),
        status,
        event,
        accounted_until: prev.accounted_until,
    };
    Some((write, unchanged))
}

/// In Observe mode nothing is bound: a lease's status only says so, once.
fn observe_write<'a>(lease: &'a GpuLease, id: (&'a str, &'a str), old: &GpuLeaseStatus) -> Option<LeaseWrite<'a>> {
    let reason = Some("the pool is in Observe mode and binds no lease".to_string());
    if old.bound_at.is_some() || old.reason == reason {
        return None;
    }
    let accounted_until = old.accounted_until.as_ref().map(|t| t.0);
    let mut status = old.clone();
    status.observed_generation = lease.metadata.generation;
    status.reason = reason;
    Some(LeaseWrite {
        lease,
        namespace: id.0,
        name: id.1,
        status,
        event: None,
        unschedulable: None,
        accounted_until,
    })
}

/// Sends the lease status writes, a few at a time; accounts and publishes what was written. Answers the
/// ledgers written (GPU-seconds and cost), by lease.
async fn send_lease_writes<'a>(
    ctx: &Context,
    pool: &TenantPool,
    writes: Vec<LeaseWrite<'a>>,
    observe_only: bool,
) -> HashMap<(&'a str, &'a str), (i64, f64)> {
    let pool_name = pool.name_any();
    let writes: Vec<_> = writes.into_iter().map(|w| write_lease_status(ctx, w)).collect();
    let results: Vec<(LeaseWrite, bool)> = futures::stream::iter(writes)
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    let mut written = HashMap::new();
    for (w, ok) in results {
        if !ok {
            continue;
        }
        written.insert((w.namespace, w.name), (w.status.gpu_seconds, w.status.cost));
        if !observe_only {
            let (gpu_seconds, cost) = (w.status.gpu_seconds as f64, w.status.cost);
            let currency = &pool.spec.pricing.currency;
            ctx.metrics
                .lease_accounted(&pool_name, w.namespace, w.name, currency, gpu_seconds, cost);
        }
        if let Some((reason, note)) = &w.event {
            publish(ctx, w.lease, EventType::Normal, reason, "Release", note).await;
        }
        if let Some(note) = w.unschedulable {
            publish(ctx, w.lease, EventType::Warning, UNSCHEDULABLE, "Bind", note).await;
        }
    }
    written
}

/// The pool's totals derived from its leases' ledgers.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Accounted {
    revenue: f64,
    lent_gpu_hours: f64,
}

/// The pool's revenue and lent GPU-hours: the sums of its leases' ledgers as written (`written` this pass,
/// else as observed; the ended leases' from their final totals), never a running count of this process, so
/// a status write that failed, or a restart, changes nothing in them.
fn accounted(
    pool: &TenantPool,
    by_name: &HashMap<(&str, &str), &GpuLease>,
    written: &HashMap<(&str, &str), (i64, f64)>,
) -> Accounted {
    let ended = pool.status.as_ref().map(|s| &s.ended_leases[..]).unwrap_or_default();
    let ended_totals = pool
        .status
        .as_ref()
        .and_then(|s| s.ended_totals.clone())
        .unwrap_or_default();
    let (mut gpu_seconds, mut revenue) = (ended_totals.gpu_seconds, ended_totals.cost);
    for (id, lease) in by_name {
        if lease
            .metadata
            .uid
            .as_deref()
            .is_some_and(|u| ended.iter().any(|e| e.uid == u))
        {
            continue;
        }
        let (g, c) = written.get(id).copied().unwrap_or_else(|| {
            let s = lease.status.as_ref();
            (s.map_or(0, |s| s.gpu_seconds), s.map_or(0.0, |s| s.cost))
        });
        gpu_seconds += g;
        revenue += c;
    }
    Accounted {
        revenue,
        lent_gpu_hours: gpu_seconds as f64 / 3600.0,
    }
}

/// Leases by phase (as written, or as they stand in Observe mode), and the series of ended leases dropped.
fn lease_metrics(
    ctx: &Context,
    pool: &str,
    plan: &Plan,
    by_name: &HashMap<(&str, &str), &GpuLease>,
    observe_only: bool,
) {
    let mut phases = Vec::new();
    let mut active = std::collections::BTreeSet::new();
    for report in &plan.leases {
        let id = (report.namespace.as_str(), report.name.as_str());
        let Some(lease) = by_name.get(&id) else { continue };
        let phase = if observe_only {
            lease.status.as_ref().map(|s| s.phase).unwrap_or_default()
        } else {
            report.phase
        };
        phases.push(phase);
        if !phase.is_final() {
            active.insert(id);
        }
    }
    ctx.metrics.lease_phases(pool, &phases);
    ctx.metrics.leases_ended(pool, &active);
}

/// The status writes of this pass: every changed status, then at most [`LEDGER_WRITES_PER_PASS`] of those
/// only due for their ledger, the most overdue (or never accounted) first; and how many of those are left.
fn this_pass<T>(
    mut changed: Vec<T>,
    mut ledger_only: Vec<T>,
    due: impl Fn(&T) -> Option<Timestamp>,
) -> (Vec<T>, usize) {
    ledger_only.sort_by_key(|w| due(w));
    let left = ledger_only.len().saturating_sub(LEDGER_WRITES_PER_PASS);
    changed.extend(ledger_only.into_iter().take(LEDGER_WRITES_PER_PASS));
    (changed, left)
}

async fn write_lease_status<'a>(ctx: &Context, w: LeaseWrite<'a>) -> (LeaseWrite<'a>, bool) {
    let api: Api<GpuLease> = Api::namespaced(ctx.client.clone(), w.namespace);
    let body = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "status": &w.status});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let r = super::timed(api.patch_status(w.name, &params, &Patch::Apply(&body))).await;
    ctx.metrics.write("lease_status", r.is_ok());
    match r {
        Ok(lease) => {
            ctx.caches.wrote_lease(lease);
            (w, true)
        }
        Err(err) => {
            tracing::warn!(lease = %format!("{}/{}", w.namespace, w.name), %err, "lease status write failed");
            (w, false)
        }
    }
}

/// Lease condition: the lease asks for more GPUs than its pool has in all.
pub const UNSCHEDULABLE: &str = "Unschedulable";
/// Lease condition: the pool the lease names does not exist.
pub const POOL_NOT_FOUND: &str = "PoolNotFound";

/// Whether condition `type_` is `True` in `conditions`.
fn is_true(conditions: &[crate::api::Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == ConditionStatus::True.as_str())
}

/// A lease's Unschedulable condition (once it was ever set), and PoolNotFound turned False: this is the
/// pool's own pass, so the pool exists.
fn fit_conditions(
    status: &mut GpuLeaseStatus,
    report: &crate::policy::LeaseReport,
    generation: Option<i64>,
    now: Timestamp,
) {
    if report.unschedulable || status.conditions.iter().any(|c| c.type_ == UNSCHEDULABLE) {
        let (flag, reason, message) = if report.unschedulable {
            (ConditionStatus::True, "MoreThanThePool", report.reason.as_str())
        } else {
            (ConditionStatus::False, "FitsThePool", "")
        };
        set_condition(
            &mut status.conditions,
            UNSCHEDULABLE,
            flag,
            reason,
            message,
            generation,
            now,
        );
    }
    if status.conditions.iter().any(|c| c.type_ == POOL_NOT_FOUND) {
        set_condition(
            &mut status.conditions,
            POOL_NOT_FOUND,
            ConditionStatus::False,
            "PoolFound",
            "",
            generation,
            now,
        );
    }
}

/// A lease's status after `report`, its ledger as it was (the caller accounts it).
fn lease_status(
    old: &GpuLeaseStatus,
    report: &crate::policy::LeaseReport,
    key: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> GpuLeaseStatus {
    let mut status = old.clone();
    status.observed_generation = generation;
    status.phase = report.phase;
    status.reason = Some(report.reason.clone());
    status.nodes = report.nodes.clone();
    status.node_count = report.nodes.len() as i32;
    status.gpus = report.gpus as i32;
    if !report.nodes.is_empty() || report.phase == LeasePhase::Bound {
        status.node_selector = BTreeMap::from([(LEASE_LABEL.to_string(), key.to_string())]);
        status.tolerations = vec![Toleration {
            key: Some(LEASE_TAINT.into()),
            operator: Some("Equal".into()),
            value: Some(key.to_string()),
            effect: Some("NoExecute".into()),
            toleration_seconds: None,
        }];
    }
    status.bound_at = status.bound_at.or(report.bound_at.map(|b| Time(whole(b))));
    status.notice_deadline = match (&old.notice_deadline, report.deadline) {
        (Some(d), _) if report.phase == LeasePhase::Reclaiming => Some(d.clone()),
        (_, Some(d)) => Some(Time(d)),
        _ => None,
    };
    status.price_per_gpu_hour = Some(report.price_per_gpu_hour);
    let bound = !report.nodes.is_empty();
    set_condition(
        &mut status.conditions,
        "Bound",
        if bound {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if bound {
            "NodesBound"
        } else {
            match report.phase {
                LeasePhase::Pending => "Waiting",
                _ => "NodesReturned",
            }
        },
        &report.reason,
        generation,
        now,
    );
    fit_conditions(&mut status, report, generation, now);
    let reclaiming = report.phase == LeasePhase::Reclaiming;
    let deadline_text = status
        .notice_deadline
        .as_ref()
        .map(|d| d.0.to_string())
        .unwrap_or_default();
    set_condition(
        &mut status.conditions,
        "Reclaiming",
        if reclaiming {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if reclaiming { "NoticeGiven" } else { "NoNotice" },
        &if reclaiming {
            format!("nodes go back at {deadline_text}; tenant pods are evicted then")
        } else {
            String::new()
        },
        generation,
        now,
    );
    status
}

fn interval(ctx: &Context) -> SignedDuration {
    SignedDuration::try_from(ctx.config.ledger_interval).unwrap_or(SignedDuration::from_secs(30))
}

/// Publishes an event on `obj`; a failure is counted and logged, never fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    super::events::publish_to(ctx, &obj.object_ref(&()), None, type_, reason, action, note).await;
}

/// How many member nodes a pool status lists; the totals count them all.
pub const LISTED_MEMBERS: usize = 500;

/// The member nodes a pool status lists: those out of internal use first, then the rest, each by name, at
/// most [`LISTED_MEMBERS`] so that the status of a pool of thousands of nodes stays small.
fn listed_members(plan: &Plan) -> Vec<MemberNode> {
    let mut nodes: Vec<&crate::policy::NodeReport> = plan.nodes.iter().collect();
    nodes.sort_by(|a, b| (a.state == NodeState::Internal, &a.name).cmp(&(b.state == NodeState::Internal, &b.name)));
    nodes
        .into_iter()
        .take(LISTED_MEMBERS)
        .map(|n| MemberNode {
            name: n.name.clone(),
            state: n.state,
            lease: n.lease.clone(),
            gpus: n.gpus as i32,
            model: n.model.clone(),
            since: n.since.map(Time),
            reason: Some(n.reason.clone()),
        })
        .collect()
}

/// Hands the pool's new status to its writer, when anything in it changed or its ledger is due; answers the
/// Warning events its conditions call for.
fn pool_status(
    ctx: &Context,
    pool: &TenantPool,
    snapshot: &Snapshot,
    plan: &Plan,
    accounted: Accounted,
    observe_only: bool,
    overlap: &super::overlap::Overlap,
) -> Vec<(&'static str, String)> {
    let now = snapshot.now;
    let name = pool.name_any();
    let old = pool.status.clone().unwrap_or_default();
    let t = plan.totals;
    let mut status = TenantPoolStatus {
        observed_generation: pool.metadata.generation,
        nodes: listed_members(plan),
        totals: PoolTotals {
            nodes: t.nodes as i32,
            gpus: t.gpus as i32,
            lendable_gpus: t.lendable_gpus as i32,
            lent_gpus: t.lent_gpus as i32,
            leased_gpus: t.leased_gpus as i32,
            reclaiming_gpus: t.reclaiming_gpus as i32,
            scrubbing_nodes: super::scrub::counts(plan).0,
            scrub_failed_nodes: super::scrub::counts(plan).1,
        },
        harvestable_gpu_hours: old.harvestable_gpu_hours,
        lent_gpu_hours: accounted.lent_gpu_hours,
        revenue: accounted.revenue,
        accounted_until: old.accounted_until.clone(),
        reserve: old.reserve.clone(),
        conditions: old.conditions.clone(),
        ended_leases: old.ended_leases.clone(),
        ended_totals: old.ended_totals.clone(),
        ..TenantPoolStatus::default()
    };
    let generation = pool.metadata.generation;
    status.last_valid_spec = match snapshot.policy.invalid {
        None => Some(Box::new(pool.spec.clone())),
        Some(_) => old.last_valid_spec.clone(),
    };
    set_pool_conditions(&mut status, snapshot, plan, observe_only, generation);
    super::overlap::set(&mut status, overlap, generation, now);
    super::reserve::report(ctx, &name, plan, &mut status, generation, now);
    status.summarize();
    let warnings = super::events::pool_warnings(&old.conditions, &status.conditions);
    let unchanged = TenantPoolStatus {
        harvestable_gpu_hours: old.harvestable_gpu_hours,
        accounted_until: old.accounted_until.clone(),
        ..status.clone()
    } == old;
    let ledger_due = old
        .accounted_until
        .as_ref()
        .is_none_or(|a| now.duration_since(a.0) >= interval(ctx));
    gpu_gauges(ctx, &name, &t);
    if unchanged && !ledger_due {
        return warnings;
    }
    status.harvestable_gpu_hours = plan.ledger.harvestable_gpu_hours;
    status.accounted_until = plan.ledger.accounted_until.map(Time);
    ctx.metrics.pool_accounted(
        &name,
        &pool.spec.pricing.currency,
        status.harvestable_gpu_hours,
        status.lent_gpu_hours,
        status.revenue,
    );
    ctx.pool_statuses.submit(&name, status);
    warnings
}

/// The pool's Ready, SignalsFresh and Lending conditions after this pass.
fn set_pool_conditions(
    status: &mut TenantPoolStatus,
    snapshot: &Snapshot,
    plan: &Plan,
    observe_only: bool,
    generation: Option<i64>,
) {
    let (now, t) = (snapshot.now, plan.totals);
    let invalid = snapshot.policy.invalid.as_deref();
    match invalid {
        None => set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::True,
            "Reconciled",
            "the pool was observed, planned and acted on",
            generation,
            now,
        ),
        Some(why) => set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::False,
            "InvalidSpec",
            &format!(
                "{why}; nothing new is lent or bound until it is fixed, and what is out is reclaimed under the last valid spec"
            ),
            generation,
            now,
        ),
    };
    let fresh = snapshot.signals.fresh;
    set_condition(
        &mut status.conditions,
        "SignalsFresh",
        if fresh {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if fresh { "Fresh" } else { "Stale" },
        snapshot.signals.reason.as_deref().unwrap_or(""),
        generation,
        now,
    );
    let observing = observe_only || snapshot.policy.observe;
    let (lending, reason, message) = match (&plan.lending_blocked, observing) {
        (Some(why), _) if invalid.is_some() => (ConditionStatus::False, "InvalidSpec", why.clone()),
        (Some(why), _) => (ConditionStatus::False, "Blocked", why.clone()),
        (None, true) => (
            ConditionStatus::False,
            "ObserveMode",
            super::modes::lending_message(t.lendable_gpus, t.lent_gpus + t.leased_gpus + t.reclaiming_gpus),
        ),
        (None, false) if t.lendable_gpus == 0 => (
            ConditionStatus::True,
            "Lending",
            "lending is allowed; no idle GPU beyond internal demand and the reserve to lend now".to_string(),
        ),
        (None, false) => (
            ConditionStatus::True,
            "Lending",
            format!("lending {} idle GPUs now", t.lendable_gpus),
        ),
    };
    set_condition(
        &mut status.conditions,
        "Lending",
        lending,
        reason,
        &message,
        generation,
        now,
    );
}

/// The pool's GPUs by state, as gauges.
fn gpu_gauges(ctx: &Context, pool: &str, t: &crate::policy::Totals) {
    for (state, gpus) in [
        ("internal", t.internal_free_gpus + t.internal_used_gpus),
        ("lendable", t.lendable_gpus),
        ("lent", t.lent_gpus),
        ("leased", t.leased_gpus),
        ("reclaiming", t.reclaiming_gpus),
        ("scrubbing", t.scrubbing_gpus),
    ] {
        ctx.metrics.gpus.with_label_values(&[pool, state]).set(i64::from(gpus));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_with_nothing_to_lend_says_so_in_its_lending_condition() {
        let policy = std::sync::Arc::new(crate::policy::PoolPolicy::with_defaults("p"));
        let snapshot = crate::policy::SnapshotBuilder::new(policy, Timestamp::UNIX_EPOCH).build();
        let plan = crate::policy::plan(&snapshot);
        assert_eq!(plan.totals.lendable_gpus, 0);
        let lending = |observe_only: bool| {
            let mut status = TenantPoolStatus::default();
            set_pool_conditions(&mut status, &snapshot, &plan, observe_only, Some(1));
            let c = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Lending")
                .cloned()
                .unwrap();
            (c.status, c.reason, c.message)
        };
        let (status, reason, message) = lending(false);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "Lending"));
        assert_eq!(
            message,
            "lending is allowed; no idle GPU beyond internal demand and the reserve to lend now"
        );
        let (status, reason, message) = lending(true);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "ObserveMode"));
        assert_eq!(message, "would lend 0 GPUs now; mode is Observe");
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn a_pass_writes_every_changed_status_and_a_slice_of_due_ledgers_most_overdue_first() {
        let changed = vec![(100, Some(t(50)))];
        let n = LEDGER_WRITES_PER_PASS as i64 + 20;
        let due: Vec<(i64, Option<Timestamp>)> = (0..n).map(|i| (i, Some(t(n - i)))).chain([(999, None)]).collect();
        let (writes, left) = this_pass(changed, due, |w| w.1);
        assert_eq!(writes.len(), 1 + LEDGER_WRITES_PER_PASS);
        assert_eq!(left, 21);
        assert_eq!(writes[0].0, 100, "a changed status is always written");
        assert_eq!(writes[1].0, 999, "a ledger never accounted comes first");
        assert_eq!(writes[2].0, n - 1, "then the one accounted longest ago");
        let (writes, left) = this_pass(vec![1, 2, 3], vec![], |_| None);
        assert_eq!((writes, left), (vec![1, 2, 3], 0));
    }
}
