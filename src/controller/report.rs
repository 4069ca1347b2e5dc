//! Report: statuses, the lease ledger, events and metrics after a plan was carried out.
//!
//! Statuses are server-side applied by sublet, which wholly owns them. A lease's ledger is accounted up
//! to `accountedUntil`, in whole seconds, at the GPUs it held over that interval (sublet changes them only
//! through its own steps, and writes the ledger in the same pass), so a restarted controller carries on
//! from exactly where the last write stopped: no second lost, none counted twice.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::execute::{Done, Outcome};
use super::{Context, Error};
use crate::api::keys::{FIELD_MANAGER, LEASE_LABEL, LEASE_TAINT, lease_key};
use crate::api::{
    ConditionStatus, GpuLease, GpuLeaseStatus, LeasePhase, MemberNode, NodeState, PoolTotals, TenantPool,
    TenantPoolStatus, set_condition,
};
use crate::policy::{Action, Plan, Snapshot};

/// A lease's account.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ledger {
    pub gpu_seconds: i64,
    pub cost: f64,
    pub accounted_until: Option<Timestamp>,
}

/// Carries a ledger forward to `now` (whole seconds) at `gpus` GPUs and `price` per GPU-hour, starting at
/// `start` (the binding) when it has never been accounted.
pub fn accrue(prev: Ledger, gpus: u32, price: f64, start: Option<Timestamp>, now: Timestamp) -> Ledger {
    let Some(from) = prev.accounted_until.or(start) else {
        return prev;
    };
    let secs = now.duration_since(from).as_secs();
    if secs <= 0 {
        return Ledger {
            accounted_until: Some(from),
            ..prev
        };
    }
    let gpu_seconds = i64::from(gpus) * secs;
    Ledger {
        gpu_seconds: prev.gpu_seconds + gpu_seconds,
        cost: prev.cost + gpu_seconds as f64 / 3600.0 * price,
        accounted_until: Some(from.checked_add(SignedDuration::from_secs(secs)).unwrap_or(now)),
    }
}

/// Writes lease statuses, events for what was done, and the pool status.
pub async fn report(
    ctx: &Context,
    pool: &TenantPool,
    snapshot: &Snapshot,
    plan: &Plan,
    outcomes: &[Outcome],
    leases: &[std::sync::Arc<GpuLease>],
    observe_only: bool,
) -> Result<(), Error> {
    let now = snapshot.now;
    let pool_name = pool.name_any();
    // GPUs each lease held as observed (before this pass's steps), for the ledger.
    let mut held: HashMap<&str, u32> = HashMap::new();
    for n in &snapshot.nodes {
        if matches!(n.marks.state, NodeState::Leased | NodeState::Reclaiming)
            && n.marks.pool.as_deref() == Some(&pool_name)
            && let Some(k) = n.marks.lease.as_deref()
        {
            *held.entry(k).or_default() += n.gpus;
        }
    }
    let failed_binds: Vec<(String, String)> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .filter_map(|o| match &o.step.action {
            Action::Bind { namespace, name, .. } => Some((namespace.clone(), name.clone())),
            _ => None,
        })
        .collect();
    let mut revenue_delta = 0.0;
    for report in &plan.leases {
        if failed_binds
            .iter()
            .any(|(ns, n)| *ns == report.namespace && *n == report.name)
        {
            continue;
        }
        let Some(lease) = leases
            .iter()
            .find(|l| l.namespace().as_deref() == Some(&report.namespace) && l.name_any() == report.name)
        else {
            continue;
        };
        let old = lease.status.clone().unwrap_or_default();
        let key = lease_key(&report.namespace, &report.name);
        let prev = Ledger {
            gpu_seconds: old.gpu_seconds,
            cost: old.cost,
            accounted_until: old.accounted_until.as_ref().map(|t| t.0),
        };
        let ledger = accrue(
            prev,
            held.get(key.as_str()).copied().unwrap_or(0),
            report.price_per_gpu_hour,
            old.bound_at.as_ref().map(|t| t.0),
            now,
        );
        let mut status = old.clone();
        status.observed_generation = lease.metadata.generation;
        if observe_only {
            // Nothing is bound in Observe mode: only say so.
            let reason = Some("the pool is in Observe mode and binds no lease".to_string());
            if old.bound_at.is_some() || old.reason == reason {
                continue;
            }
            status.reason = reason;
            let api: Api<GpuLease> = Api::namespaced(ctx.client.clone(), &report.namespace);
            let body = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "status": status});
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let r = super::timed(api.patch_status(&report.name, &params, &Patch::Apply(&body))).await;
            ctx.metrics.write("lease_status", r.is_ok());
            continue;
        }
        status.phase = report.phase;
        status.reason = Some(report.reason.clone());
        status.nodes = report.nodes.clone();
        status.node_count = report.nodes.len() as i32;
        status.gpus = report.gpus as i32;
        if !report.nodes.is_empty() || report.phase == LeasePhase::Bound {
            status.node_selector = BTreeMap::from([(LEASE_LABEL.to_string(), key.clone())]);
            status.tolerations = vec![Toleration {
                key: Some(LEASE_TAINT.into()),
                operator: Some("Equal".into()),
                value: Some(key.clone()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }];
        }
        status.bound_at = status.bound_at.or(report.bound_at.map(Time));
        status.notice_deadline = match (&old.notice_deadline, report.deadline) {
            (Some(d), _) if report.phase == LeasePhase::Reclaiming => Some(d.clone()),
            (_, Some(d)) => Some(Time(d)),
            _ => None,
        };
        status.price_per_gpu_hour = Some(report.price_per_gpu_hour);
        let generation = lease.metadata.generation;
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
        let unchanged = GpuLeaseStatus {
            gpu_seconds: old.gpu_seconds,
            cost: old.cost,
            accounted_until: old.accounted_until.clone(),
            ..status.clone()
        } == old;
        let ledger_due = prev
            .accounted_until
            .is_none_or(|a| now.duration_since(a) >= interval(ctx));
        if unchanged && !(ledger_due && ledger != prev) {
            continue;
        }
        status.gpu_seconds = ledger.gpu_seconds;
        status.cost = ledger.cost;
        status.accounted_until = ledger.accounted_until.map(Time);
        let api: Api<GpuLease> = Api::namespaced(ctx.client.clone(), &report.namespace);
        let body = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "status": status});
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match super::timed(api.patch_status(&report.name, &params, &Patch::Apply(&body))).await {
            Ok(_) => {
                ctx.metrics.write("lease_status", true);
                revenue_delta += ledger.cost - prev.cost;
                let labels = [pool_name.as_str(), report.namespace.as_str(), report.name.as_str()];
                ctx.metrics
                    .lease_gpu_seconds
                    .with_label_values(&labels)
                    .set(ledger.gpu_seconds as f64);
                ctx.metrics.lease_cost.with_label_values(&labels).set(ledger.cost);
            }
            Err(err) => {
                ctx.metrics.write("lease_status", false);
                tracing::warn!(lease = %key, %err, "lease status write failed");
            }
        }
        if old.phase != report.phase && matches!(report.phase, LeasePhase::Released | LeasePhase::Expired) {
            let reason = if report.phase == LeasePhase::Expired {
                "Expired"
            } else {
                "Released"
            };
            publish(
                ctx,
                lease.as_ref(),
                EventType::Normal,
                reason,
                "Release",
                &report.reason,
            )
            .await;
        }
    }
    lease_events(ctx, snapshot, outcomes, leases).await;
    pool_status(ctx, pool, snapshot, plan, revenue_delta, observe_only).await
}

fn interval(ctx: &Context) -> SignedDuration {
    SignedDuration::try_from(ctx.config.ledger_interval).unwrap_or(SignedDuration::from_secs(30))
}

/// One event per lease per kind of step that went through: bound, notice, evicted.
async fn lease_events(ctx: &Context, snapshot: &Snapshot, outcomes: &[Outcome], leases: &[std::sync::Arc<GpuLease>]) {
    let now = snapshot.now;
    let mut notices: BTreeMap<String, (Vec<String>, Timestamp)> = BTreeMap::new();
    let mut evicted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in outcomes
        .iter()
        .filter(|o| matches!(o.result, Ok(Done::Written) | Ok(Done::Deleted)))
    {
        match &o.step.action {
            Action::Bind { namespace, name, nodes } => {
                if let Some(lease) = find(leases, namespace, name) {
                    let note = format!("bound {} ({})", nodes.join(", "), o.step.reason);
                    publish(ctx, lease, EventType::Normal, "Bound", "Bind", &note).await;
                }
            }
            Action::Notice {
                node,
                lease: Some(key),
                deadline,
            } => {
                let e = notices.entry(key.clone()).or_insert_with(|| (vec![], *deadline));
                e.0.push(format!("{node} ({})", o.step.reason));
            }
            Action::Evict {
                namespace, name, node, ..
            } => {
                let key = snapshot
                    .nodes
                    .iter()
                    .find(|n| &n.name == node)
                    .and_then(|n| n.marks.lease.clone());
                if let Some(key) = key {
                    evicted
                        .entry(key)
                        .or_default()
                        .push(format!("{namespace}/{name} on {node}"));
                }
            }
            _ => {}
        }
    }
    for (key, (nodes, deadline)) in notices {
        if let Some(lease) = leases
            .iter()
            .find(|l| lease_key(&l.namespace().unwrap_or_default(), &l.name_any()) == key)
        {
            let secs = deadline.duration_since(now).as_secs();
            let note = format!(
                "reclaim notice: {} go back at {deadline} (in {secs}s); checkpoint and stop the pods there",
                nodes.join(", ")
            );
            publish(
                ctx,
                lease.as_ref(),
                EventType::Warning,
                "ReclaimNotice",
                "Notice",
                &note,
            )
            .await;
        }
    }
    for (key, pods) in evicted {
        if let Some(lease) = leases
            .iter()
            .find(|l| lease_key(&l.namespace().unwrap_or_default(), &l.name_any()) == key)
        {
            let note = format!("evicted at the reclaim deadline: {}", pods.join(", "));
            publish(ctx, lease.as_ref(), EventType::Warning, "Evicted", "Evict", &note).await;
        }
    }
}

fn find<'a>(leases: &'a [std::sync::Arc<GpuLease>], namespace: &str, name: &str) -> Option<&'a GpuLease> {
    leases
        .iter()
        .find(|l| l.namespace().as_deref() == Some(namespace) && l.name_any() == name)
        .map(|l| l.as_ref())
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
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    let ok = ctx.recorder.publish(&event, &obj.object_ref(&())).await.is_ok();
    ctx.metrics.write("event", ok);
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

async fn pool_status(
    ctx: &Context,
    pool: &TenantPool,
    snapshot: &Snapshot,
    plan: &Plan,
    revenue_delta: f64,
    observe_only: bool,
) -> Result<(), Error> {
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
        },
        harvestable_gpu_hours: old.harvestable_gpu_hours,
        lent_gpu_hours: old.lent_gpu_hours,
        revenue: old.revenue + revenue_delta,
        accounted_until: old.accounted_until.clone(),
        conditions: old.conditions.clone(),
    };
    let generation = pool.metadata.generation;
    set_condition(
        &mut status.conditions,
        "Ready",
        ConditionStatus::True,
        "Reconciled",
        "the pool was observed, planned and acted on",
        generation,
        now,
    );
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
    let (lending, reason, message) = match (&plan.lending_blocked, observe_only) {
        (Some(why), _) => (ConditionStatus::False, "Blocked", why.clone()),
        (None, true) => (
            ConditionStatus::False,
            "ObserveMode",
            format!("would lend {} GPUs now; mode is Observe", t.lendable_gpus),
        ),
        (None, false) => (
            ConditionStatus::True,
            "Lending",
            format!("{} GPUs lendable now", t.lendable_gpus),
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
    let unchanged = TenantPoolStatus {
        harvestable_gpu_hours: old.harvestable_gpu_hours,
        lent_gpu_hours: old.lent_gpu_hours,
        accounted_until: old.accounted_until.clone(),
        ..status.clone()
    } == old;
    let ledger_due = old
        .accounted_until
        .as_ref()
        .is_none_or(|a| now.duration_since(a.0) >= interval(ctx));
    for (state, gpus) in [
        ("internal", t.internal_free_gpus + t.internal_used_gpus),
        ("lendable", t.lendable_gpus),
        ("lent", t.lent_gpus),
        ("leased", t.leased_gpus),
        ("reclaiming", t.reclaiming_gpus),
    ] {
        ctx.metrics
            .gpus
            .with_label_values(&[name.as_str(), state])
            .set(i64::from(gpus));
    }
    if unchanged && !ledger_due && revenue_delta == 0.0 {
        return Ok(());
    }
    status.harvestable_gpu_hours = plan.ledger.harvestable_gpu_hours;
    status.lent_gpu_hours = plan.ledger.lent_gpu_hours;
    status.accounted_until = plan.ledger.accounted_until.map(Time);
    ctx.metrics
        .pool_gpu_hours
        .with_label_values(&[name.as_str(), "harvestable"])
        .set(status.harvestable_gpu_hours);
    ctx.metrics
        .pool_gpu_hours
        .with_label_values(&[name.as_str(), "lent"])
        .set(status.lent_gpu_hours);
    ctx.metrics
        .pool_revenue
        .with_label_values(&[name.as_str()])
        .set(status.revenue);
    let api: Api<TenantPool> = Api::all(ctx.client.clone());
    let body = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "status": status});
    let r =
        super::timed(api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))).await;
    ctx.metrics.write("pool_status", r.is_ok());
    r.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn ledger_starts_at_binding_and_counts_whole_seconds() {
        let l = accrue(Ledger::default(), 8, 3.6, Some(t(0)), t(10));
        assert_eq!(l.gpu_seconds, 80);
        assert!((l.cost - 0.08).abs() < 1e-9);
        assert_eq!(l.accounted_until, Some(t(10)));
    }

    #[test]
    fn ledger_continues_from_accounted_until_without_gap_or_overlap() {
        let first = accrue(Ledger::default(), 8, 1.0, Some(t(0)), t(100));
        // A restart between t(100) and t(160): the next pass picks up at t(100).
        let second = accrue(first, 8, 1.0, Some(t(0)), t(160));
        let straight = accrue(Ledger::default(), 8, 1.0, Some(t(0)), t(160));
        assert_eq!(second.gpu_seconds, straight.gpu_seconds);
        assert_eq!(second.accounted_until, Some(t(160)));
        // Accruing again at the same instant adds nothing.
        assert_eq!(accrue(second, 8, 1.0, Some(t(0)), t(160)), second);
    }

    #[test]
    fn unbound_lease_accrues_nothing() {
        assert_eq!(accrue(Ledger::default(), 8, 1.0, None, t(100)), Ledger::default());
    }

    #[test]
    fn sub_second_remainders_carry_to_the_next_pass() {
        let start = t(0);
        let now = start.checked_add(SignedDuration::from_millis(2500)).unwrap();
        let l = accrue(Ledger::default(), 1, 3600.0, Some(start), now);
        assert_eq!(l.gpu_seconds, 2);
        assert_eq!(l.accounted_until, Some(t(2)));
    }
}
