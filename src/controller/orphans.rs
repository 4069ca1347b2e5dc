//! Leases that name a pool which does not exist: no pool's pass serves them, so this sweep tells them why
//! they wait.
//!
//! ```text
//!   every tick, on the leader: leases whose spec.pool is not a pool in the cache (for 2 s or more)
//!     → status: Pending, the reason, condition PoolNotFound=True → a Warning event PoolNotFound (once)
//!   the pool appears → its pass serves the lease and turns PoolNotFound False (report.rs)
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Context;
use super::report::{POOL_NOT_FOUND, publish};
use crate::api::keys::FIELD_MANAGER;
use crate::api::{ConditionStatus, GpuLease, LeasePhase, set_condition};

/// A lease newer than this is left alone: its pool may be on its way through the pool watch.
const GRACE: SignedDuration = SignedDuration::from_secs(2);

/// Sweeps every `tick` until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if ctx.is_leader() {
            sweep(&ctx, Timestamp::now()).await;
        }
    }
}

/// Why `lease` waits, when its pool is missing and it has not said so yet.
fn needs_word(lease: &GpuLease, pools: &HashSet<String>, now: Timestamp) -> Option<String> {
    if pools.contains(&lease.spec.pool) || lease.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let created = lease.metadata.creation_timestamp.as_ref().map(|t| t.0)?;
    if now.duration_since(created) < GRACE {
        return None;
    }
    let status = lease.status.clone().unwrap_or_default();
    if status.phase.is_final() {
        return None;
    }
    let why = format!(
        "TenantPool {} does not exist; the lease waits until it does",
        lease.spec.pool
    );
    let said = status
        .conditions
        .iter()
        .any(|c| c.type_ == POOL_NOT_FOUND && c.status == ConditionStatus::True.as_str() && c.message == why);
    (!said).then_some(why)
}

async fn sweep(ctx: &Context, now: Timestamp) {
    let pools: HashSet<String> = ctx.caches.pools.state().iter().map(|p| p.name_any()).collect();
    for lease in ctx.caches.leases_now() {
        let Some(why) = needs_word(&lease, &pools, now) else {
            continue;
        };
        let mut status = lease.status.clone().unwrap_or_default();
        status.observed_generation = lease.metadata.generation;
        if status.phase != LeasePhase::Pending && status.nodes.is_empty() {
            status.phase = LeasePhase::Pending;
        }
        status.reason = Some(why.clone());
        set_condition(
            &mut status.conditions,
            POOL_NOT_FOUND,
            ConditionStatus::True,
            "NoSuchPool",
            &why,
            lease.metadata.generation,
            now,
        );
        let namespace = lease.namespace().unwrap_or_default();
        let api: Api<GpuLease> = Api::namespaced(ctx.client.clone(), &namespace);
        let body = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "status": status});
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let r = super::timed(api.patch_status(&lease.name_any(), &params, &Patch::Apply(&body))).await;
        ctx.metrics.write("lease_status", r.is_ok());
        match r {
            Ok(written) => {
                ctx.caches.wrote_lease(written);
                publish(ctx, lease.as_ref(), EventType::Warning, POOL_NOT_FOUND, "Bind", &why).await;
            }
            Err(err) => tracing::warn!(lease = %format!("{namespace}/{}", lease.name_any()), %err,
                "could not say the lease's pool is missing; the next sweep tries again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(pool: &str, created: &str, status: serde_json::Value) -> GpuLease {
        serde_json::from_value(json!({
            "apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease",
            "metadata": {"name": "job", "namespace": "acme", "creationTimestamp": created},
            "spec": {"pool": pool, "gpus": 8},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_lease_of_a_missing_pool_is_told_once() {
        let now: Timestamp = "2026-11-25T12:00:10Z".parse().unwrap();
        let pools = HashSet::from(["a100".to_string()]);
        let old = "2026-11-25T12:00:00Z";
        assert_eq!(
            needs_word(&lease("a100", old, json!({})), &pools, now),
            None,
            "its pool exists"
        );
        let why = needs_word(&lease("h100", old, json!({})), &pools, now).unwrap();
        assert!(why.contains("TenantPool h100 does not exist"), "{why}");
        assert_eq!(
            needs_word(&lease("h100", "2026-11-25T12:00:09Z", json!({})), &pools, now),
            None,
            "a lease just created may be ahead of its pool"
        );
        let told = json!({"conditions": [{"type": "PoolNotFound", "status": "True", "reason": "NoSuchPool",
            "message": why, "lastTransitionTime": old}]});
        assert_eq!(needs_word(&lease("h100", old, told), &pools, now), None, "said once");
        let ended = json!({"phase": "Released"});
        assert_eq!(
            needs_word(&lease("h100", old, ended), &pools, now),
            None,
            "an ended lease waits for nothing"
        );
    }
}
