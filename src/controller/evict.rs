//! Eviction at the reclaim deadline: no PodDisruptionBudget, grace period or deletion the tenant chose keeps
//! a node past its deadline by more than the pool's `reclaim.maxGraceSeconds`.
//!
//! ```text
//!   now < deadline + cap   evict with min(pod's grace, cap)   429 or no answer in 3 s → next pass
//!   now ≥ deadline + cap   delete with min(pod's grace, cap)  (budgets notwithstanding)
//!   terminating too long   delete with a shorter grace, down to 0
//! ```

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, Preconditions};

use super::execute::{Done, Reclaim, is_status};
use super::timed;
use super::{Context, Error};
use crate::policy::{Action, NodeState, Snapshot, Step};

/// An eviction gets this long: a budget's 429 comes back at once, so one that takes longer is a stuck API, and
/// the pod is tried again on the next pass rather than holding this one.
const EVICT_TIMEOUT: Duration = Duration::from_secs(3);

/// Evictions the plan leaves out: a tenant pod that is already terminating is not evicted again by the
/// planner, but one that started terminating with a grace period reaching past the deadline and the cap
/// (the tenant deleted it with a long grace itself) must still be gone in time.
pub fn overdue_terminating(snapshot: &Snapshot) -> Vec<Step> {
    let now = snapshot.now;
    snapshot
        .pods
        .iter()
        .filter(|p| p.tenant && p.terminating)
        .filter_map(|p| {
            let node = snapshot.nodes.get(p.node?)?;
            let deadline = node.marks.deadline?;
            (node.marks.state == NodeState::Reclaiming && now >= deadline).then(|| Step {
                action: Action::Evict {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    node: node.name.clone(),
                    deadline,
                },
                cause: crate::policy::Cause::NoticeServed,
                reason: format!("reclaim deadline {deadline} has passed and the pod is still terminating"),
            })
        })
        .collect()
}

/// What to do with a tenant pod at or past its deadline, given what the API shows of it now.
#[derive(Debug, PartialEq, Eq)]
enum Leave {
    /// Nothing: it is gone, or leaving in time.
    Nothing,
    /// Evict through the Eviction API with this grace (a PDB may still refuse until the deadline plus the cap).
    Evict(u32),
    /// Delete with this grace: the deadline plus the cap has passed, or its own deletion reaches too far.
    Delete(u32),
}

/// The pod's way out. `hard` is the deadline plus the cap: until then a PDB may hold the pod; after it the
/// pod is deleted. No grace the tenant chose (the pod's own, or that of a delete it made itself) reaches
/// further than the cap allows.
fn leave(
    own_grace: Option<i64>,
    deleting_at: Option<Timestamp>,
    deadline: Timestamp,
    cap: i64,
    now: Timestamp,
) -> Leave {
    let cap = cap.max(0);
    let grace = own_grace.unwrap_or(30).clamp(0, cap);
    let hard = deadline
        .saturating_add(SignedDuration::from_secs(cap))
        .unwrap_or(deadline);
    let latest = hard.saturating_add(SignedDuration::from_secs(cap)).unwrap_or(hard);
    if let Some(at) = deleting_at {
        if at <= latest && now <= at.saturating_add(SignedDuration::from_secs(cap)).unwrap_or(at) {
            return Leave::Nothing;
        }
        // Terminating for longer than the cap allows, or past its own time: shorten the grace, down to 0.
        let left = if now >= hard {
            0
        } else {
            hard.duration_since(now).as_secs()
        };
        let shorter = if at > latest { grace.min(left) } else { 0 };
        return Leave::Delete(shorter as u32);
    }
    if now >= hard {
        Leave::Delete(grace as u32)
    } else {
        Leave::Evict(grace as u32)
    }
}

/// Takes a tenant pod off a node whose deadline has passed: through the Eviction API with the pod's grace
/// capped by the pool; a PDB's 429 and an answer that does not come in time alike leave the pod for the next
/// pass (kube's client is built without its own retries, so a 429 comes back at once); once the deadline plus
/// the cap has passed, the pod is deleted with the capped grace. The pod's UID is a precondition, so a new pod
/// of the same name is never touched.
pub(super) async fn evict(
    ctx: &Context,
    pool: &str,
    namespace: &str,
    name: &str,
    deadline: Timestamp,
    reclaim: Reclaim,
    now: Timestamp,
) -> Result<Done, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let count = |outcome: &str| ctx.metrics.evictions.with_label_values(&[pool, outcome]).inc();
    let Some(pod) = timed(api.get_opt(name)).await? else {
        return Ok(Done::AlreadySo);
    };
    let own = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds);
    let deleting = pod.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    let delete_params = |grace: u32| DeleteParams {
        grace_period_seconds: Some(grace),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match leave(own, deleting, deadline, reclaim.max_grace_seconds, now) {
        Leave::Nothing => Ok(Done::AlreadySo),
        Leave::Evict(grace) => {
            let params = EvictParams {
                delete_options: Some(delete_params(grace)),
                ..EvictParams::default()
            };
            let answer = match tokio::time::timeout(EVICT_TIMEOUT, api.evict(name, &params)).await {
                Ok(r) => r.map_err(Error::Kube),
                Err(_) => Err(Error::Timeout),
            };
            match answer {
                Ok(_) => {
                    ctx.metrics.write("eviction", true);
                    count("evicted");
                    Ok(Done::Written)
                }
                Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(Done::AlreadySo),
                Err(err) if is_status(&err, 429) || matches!(err, Error::Timeout) => {
                    ctx.metrics.write("eviction", false);
                    count("blocked");
                    Ok(Done::Blocked)
                }
                Err(err) => {
                    ctx.metrics.write("eviction", false);
                    count("failed");
                    Err(err)
                }
            }
        }
        Leave::Delete(grace) => match timed(api.delete(name, &delete_params(grace))).await {
            Ok(_) => {
                ctx.metrics.write("pod_delete", true);
                count("deleted");
                Ok(Done::Deleted)
            }
            Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(Done::AlreadySo),
            Err(err) => {
                ctx.metrics.write("pod_delete", false);
                count("failed");
                Err(err)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        t().checked_add(SignedDuration::from_secs(secs)).unwrap()
    }

    #[test]
    fn no_grace_the_tenant_chose_outlasts_the_deadline_and_the_cap() {
        let deadline = t();
        // Before deadline + cap: evicted with its own grace, capped.
        assert_eq!(leave(Some(315_360_000), None, deadline, 30, at(1)), Leave::Evict(30));
        assert_eq!(leave(Some(5), None, deadline, 30, at(1)), Leave::Evict(5));
        assert_eq!(leave(None, None, deadline, 30, at(1)), Leave::Evict(30));
        assert_eq!(leave(None, None, deadline, 10, at(1)), Leave::Evict(10));
        // A PDB held it until deadline + cap: deleted, with the capped grace.
        assert_eq!(leave(Some(315_360_000), None, deadline, 30, at(30)), Leave::Delete(30));
        assert_eq!(leave(Some(0), None, deadline, 30, at(45)), Leave::Delete(0));
        // Leaving in time: left alone.
        assert_eq!(leave(Some(30), Some(at(30)), deadline, 30, at(10)), Leave::Nothing);
        // The tenant deleted it with a grace of years: shortened to end by deadline + cap.
        assert_eq!(
            leave(Some(315_360_000), Some(at(315_360_000)), deadline, 30, at(10)),
            Leave::Delete(20)
        );
        assert_eq!(
            leave(Some(315_360_000), Some(at(315_360_000)), deadline, 30, at(40)),
            Leave::Delete(0)
        );
        // Still there a cap after its own deletion time (a finalizer, a kubelet gone): deleted at once.
        assert_eq!(leave(Some(30), Some(at(30)), deadline, 30, at(61)), Leave::Delete(0));
    }
}
