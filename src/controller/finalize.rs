//! sublet's finalizer on GpuLeases: deleting a lease does not end its bill.
//!
//! ```text
//!   lease of the pool, no finalizer      → add sublet.dev/bill-until-returned
//!   lease deleted, a node still held     → nothing: the planner gives notice, the ledger keeps counting
//!   lease deleted, every node back,
//!   its final status written             → record (pool status endedLeases/endedTotals) → event → finalizer off
//!   pool deleted, every node back        → finalizer off every lease of the pool
//! ```
//!
//! The record is written before the finalizer goes, so a lease is never gone without its account; writing
//! it again after a restart finds the UID already there and adds nothing.

use std::sync::Arc;

use futures::StreamExt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, Error, timed};
use crate::api::keys::{LEASE_FINALIZER, lease_key};
use crate::api::{EndedLease, EndedTotals, GpuLease, LeasePhase, NodeState, TenantPool};
use crate::policy::{Plan, Snapshot};

/// How many ended leases a pool status lists; the totals count them all.
pub const ENDED_LISTED: usize = 100;

/// Adds the finalizer to the pool's leases that lack it (when `add`: a pool that acts), and lets deleted
/// leases go once their nodes are back and their account is recorded (in every mode, so a pool switched to
/// Observe never holds a lease it no longer serves). A failure is logged and tried again on the next pass.
pub async fn leases(
    ctx: &Context,
    pool: &TenantPool,
    snapshot: &Snapshot,
    plan: &Plan,
    leases: &[Arc<GpuLease>],
    add: bool,
) {
    let pool_name = pool.name_any();
    let pool_deleting = pool.metadata.deletion_timestamp.is_some();
    let mut adds = Vec::new();
    for lease in leases.iter().filter(|l| l.spec.pool == pool_name) {
        let has = lease.finalizers().iter().any(|f| f == LEASE_FINALIZER);
        let deleting = lease.metadata.deletion_timestamp.is_some();
        let result = if add && !deleting && !has && !pool_deleting {
            adds.push(lease);
            Ok(())
        } else if deleting && has && !holds_nodes(lease, snapshot, plan) {
            // One at a time: each adds to the same pool status.
            end(ctx, &pool_name, lease, snapshot.now).await
        } else {
            Ok(())
        };
        warn_failed(lease, result);
    }
    // Each from its newest version: this pass's status write has just changed its resourceVersion, and a
    // patch made from the version the pass started with would be refused as a conflict.
    let adds = newest(ctx, adds);
    // A thousand leases that predate the finalizer get it a few at a time, not one write after another.
    let adds: Vec<_> = adds
        .iter()
        .map(|lease| async move { (lease, set_finalizer(ctx, lease, true).await) })
        .collect();
    let results: Vec<_> = futures::stream::iter(adds).buffer_unordered(8).collect().await;
    for (lease, result) in results {
        warn_failed(lease, result);
    }
}

/// The newest version sublet knows of each lease: its own latest write when the watch has not delivered it.
fn newest(ctx: &Context, leases: Vec<&Arc<GpuLease>>) -> Vec<Arc<GpuLease>> {
    if leases.is_empty() {
        return Vec::new();
    }
    let now: std::collections::HashMap<String, Arc<GpuLease>> = ctx
        .caches
        .leases_now()
        .into_iter()
        .filter_map(|l| Some((l.uid()?, l)))
        .collect();
    leases
        .into_iter()
        .map(|l| l.uid().and_then(|u| now.get(&u)).unwrap_or(l).clone())
        .collect()
}

fn warn_failed(lease: &GpuLease, result: Result<(), Error>) {
    if let Err(err) = result {
        tracing::warn!(lease = %format!("{}/{}", lease.namespace().unwrap_or_default(), lease.name_any()), %err,
            "lease finalizer step failed; the next pass tries again");
    }
}

/// Takes the finalizer off every lease of a pool that is going away with every node back.
pub async fn release_all(ctx: &Context, pool: &str, leases: &[Arc<GpuLease>]) -> Result<(), Error> {
    for lease in leases.iter().filter(|l| l.spec.pool == pool) {
        if lease.finalizers().iter().any(|f| f == LEASE_FINALIZER) {
            set_finalizer(ctx, lease, false).await?;
        }
    }
    Ok(())
}

/// Whether a node of the pool is still bound to the lease, as observed or as this pass planned it.
fn holds_nodes(lease: &GpuLease, snapshot: &Snapshot, plan: &Plan) -> bool {
    let (namespace, name) = (lease.namespace().unwrap_or_default(), lease.name_any());
    let key = lease_key(&namespace, &name);
    let uid = lease.metadata.uid.as_deref();
    let observed = snapshot.nodes.iter().any(|n| {
        n.marks.state != NodeState::Internal
            && n.marks.lease.as_deref() == Some(key.as_str())
            && (n.marks.lease_uid.is_none() || uid.is_none() || n.marks.lease_uid.as_deref() == uid)
    });
    let planned = plan
        .leases
        .iter()
        .any(|r| r.namespace == namespace && r.name == name && !r.nodes.is_empty());
    observed || planned
}

/// Records a deleted lease's final account and lets it go, once its final status is written.
async fn end(ctx: &Context, pool: &str, lease: &GpuLease, now: Timestamp) -> Result<(), Error> {
    let status = lease.status.clone().unwrap_or_default();
    if matches!(status.phase, LeasePhase::Bound | LeasePhase::Reclaiming) || !ledger_final(&status) {
        // The pass that returned the last node writes the final ledger; wait for it.
        return Ok(());
    }
    if let Some(record) = ended_record(lease, &status, now)
        && record_ended(ctx, pool, &record).await?
    {
        let note = format!(
            "lease ended: its nodes are back; billed {} GPU-seconds, cost {:.4}, from {} to {}",
            record.gpu_seconds,
            record.cost,
            record.bound_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            now
        );
        super::report::publish(ctx, lease, EventType::Normal, "Ended", "End", &note).await;
    }
    set_finalizer(ctx, lease, false).await
}

/// The final account of a lease that held a node (see [`super::ledger::first_bound`]); None for a lease that
/// never held one.
fn ended_record(lease: &GpuLease, status: &crate::api::GpuLeaseStatus, now: Timestamp) -> Option<EndedLease> {
    let bound_at = super::ledger::first_bound(status)?;
    Some(EndedLease {
        namespace: lease.namespace().unwrap_or_default(),
        name: lease.name_any(),
        uid: lease.uid().unwrap_or_default(),
        gpu_seconds: status.gpu_seconds,
        cost: status.cost,
        bound_at: Some(bound_at),
        ended_at: Time(now),
    })
}

/// Whether the lease's ledger is final: every hold closed and accounted up to its return.
fn ledger_final(status: &crate::api::GpuLeaseStatus) -> bool {
    let until = status.accounted_until.as_ref().map(|t| t.0);
    status.holds.iter().all(|h| {
        h.returned_at
            .as_ref()
            .is_some_and(|r| until.is_some_and(|u| u >= r.0) || r.0 <= h.bound_at.0)
    })
}

/// Adds `record` to the pool's ended leases (once per UID); answers whether it was added now.
async fn record_ended(ctx: &Context, pool: &str, record: &EndedLease) -> Result<bool, Error> {
    let api: Api<TenantPool> = Api::all(ctx.client.clone());
    for _ in 0..5 {
        let current = timed(api.get(pool)).await?;
        let status = current.status.clone().unwrap_or_default();
        if status.ended_leases.iter().any(|e| e.uid == record.uid) {
            return Ok(false);
        }
        let mut listed = status.ended_leases;
        listed.push(record.clone());
        let drop = listed.len().saturating_sub(ENDED_LISTED);
        listed.drain(..drop);
        let before = status.ended_totals.unwrap_or_default();
        let totals = EndedTotals {
            leases: before.leases + 1,
            gpu_seconds: before.gpu_seconds + record.gpu_seconds,
            cost: before.cost + record.cost,
        };
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": {"endedLeases": listed, "endedTotals": totals},
        });
        let params = PatchParams {
            field_manager: Some("sublet-ledger".into()),
            ..PatchParams::default()
        };
        match timed(api.patch_status(pool, &params, &Patch::Merge(&patch))).await {
            Ok(written) => {
                if let Some(status) = &written.status {
                    ctx.pool_statuses.recorded(pool, status);
                }
                ctx.metrics.write("pool_record", true);
                return Ok(true);
            }
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 409 => {
                ctx.metrics.write("pool_record", false);
                continue;
            }
            Err(err) => {
                ctx.metrics.write("pool_record", false);
                return Err(err);
            }
        }
    }
    Err(Error::Conflict(format!("tenantpool {pool}")))
}

/// Adds the finalizer to a lease about to be bound that lacks it (the pass adds it to new leases only after
/// its steps); refuses a lease that is gone or being deleted.
pub async fn before_binding(ctx: &Context, namespace: &str, name: &str) -> Result<super::Done, Error> {
    let lease = ctx
        .caches
        .leases_now()
        .into_iter()
        .find(|l| l.metadata.namespace.as_deref() == Some(namespace) && l.metadata.name.as_deref() == Some(name));
    match lease {
        None => Err(Error::Refused(format!("lease {namespace}/{name} is gone"))),
        Some(l) if l.metadata.deletion_timestamp.is_some() => {
            Err(Error::Refused(format!("lease {namespace}/{name} is being deleted")))
        }
        Some(l) if l.finalizers().iter().any(|f| f == LEASE_FINALIZER) => Ok(super::Done::AlreadySo),
        Some(l) => set_finalizer(ctx, &l, true).await.map(|()| super::Done::Written),
    }
}

async fn set_finalizer(ctx: &Context, lease: &GpuLease, on: bool) -> Result<(), Error> {
    let namespace = lease.namespace().unwrap_or_default();
    let api: Api<GpuLease> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut finalizers: Vec<String> = lease
        .finalizers()
        .iter()
        .filter(|f| *f != LEASE_FINALIZER)
        .cloned()
        .collect();
    if on {
        finalizers.push(LEASE_FINALIZER.into());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": lease.resource_version()}});
    let r = timed(api.patch(&lease.name_any(), &PatchParams::default(), &Patch::Merge(&patch))).await;
    ctx.metrics.write("lease_finalizer", r.is_ok());
    match r {
        Ok(written) => {
            // A lease let go may be gone at once; only an added finalizer is worth remembering.
            if on {
                ctx.caches.wrote_lease(written);
            }
            Ok(())
        }
        // Gone already (its last finalizer was ours), or changed since the cache saw it: the next pass sees it.
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(status: serde_json::Value) -> GpuLease {
        serde_json::from_value(json!({
            "apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease",
            "metadata": {"name": "job", "namespace": "acme", "uid": "u1"},
            "spec": {"pool": "a100", "gpus": 8},
            "status": status,
        }))
        .unwrap()
    }

    /// A lease whose bind was never written to its status (the write failed, the node went back before the
    /// next pass) still has its hold, and ends with a record; one that never held a node has none.
    #[test]
    fn a_lease_known_by_its_hold_alone_gets_its_record() {
        let now: Timestamp = "2026-12-05T08:00:00Z".parse().unwrap();
        let held = lease(json!({"phase": "Released", "gpuSeconds": 0, "cost": 0.0,
            "holds": [{"node": "gpu-1", "gpus": 8, "boundAt": "2026-12-05T07:59:50Z",
                       "returnedAt": "2026-12-05T07:59:50Z"}]}));
        let status = held.status.clone().unwrap();
        let record = ended_record(&held, &status, now).expect("a record");
        assert_eq!(record.uid, "u1");
        assert_eq!(record.bound_at.unwrap().0.to_string(), "2026-12-05T07:59:50Z");
        let bound = lease(json!({"phase": "Released", "boundAt": "2026-12-05T07:59:40Z", "gpuSeconds": 80}));
        let record = ended_record(&bound, bound.status.as_ref().unwrap(), now).expect("a record");
        assert_eq!(
            (record.gpu_seconds, record.bound_at.unwrap().0.to_string().as_str()),
            (80, "2026-12-05T07:59:40Z")
        );
        let never = lease(json!({"phase": "Pending"}));
        assert!(ended_record(&never, never.status.as_ref().unwrap(), now).is_none());
    }
}
