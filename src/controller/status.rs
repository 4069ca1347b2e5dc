//! Pool statuses are written off the pass.
//!
//! A pool's status lists up to 500 member nodes; writing it can take longer than the rest of a pass, and a
//! notice must not wait behind it. So a pass hands the status it wants to a writer task (one per pool) and
//! goes on. The task writes the newest status it holds; one it never got to is skipped, as every status is
//! whole. The newest handed-over status is also what the next pass starts from (its running totals, such
//! as revenue, build on it), until leadership changes: a new term starts again from the cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::api::keys::FIELD_MANAGER;
use crate::api::{EndedLease, EndedTotals, TenantPool, TenantPoolStatus};

/// How long a failed write waits before the newest status is tried again.
const RETRY: Duration = Duration::from_secs(1);

struct Slot {
    latest: Arc<TenantPoolStatus>,
    tx: watch::Sender<Arc<TenantPoolStatus>>,
}

/// The pool status writers of this replica.
pub struct PoolStatuses {
    client: Client,
    metrics: Metrics,
    leader: watch::Receiver<bool>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Per pool, the ended leases' records as this replica last wrote them (finalize.rs), until the cache
    /// shows as many: the pool's revenue counts an ended lease by its record once the lease is gone.
    ended: Mutex<HashMap<String, Ended>>,
}

type Ended = (Vec<EndedLease>, Option<EndedTotals>);

fn ended_count(e: &Option<EndedTotals>) -> i64 {
    e.as_ref().map_or(0, |t| t.leases)
}

impl PoolStatuses {
    pub fn new(client: Client, metrics: Metrics, leader: watch::Receiver<bool>) -> Self {
        Self {
            client,
            metrics,
            leader,
            slots: Mutex::default(),
            ended: Mutex::default(),
        }
    }

    /// Remembers the ended leases' records a write of this replica produced.
    pub fn recorded(&self, name: &str, status: &TenantPoolStatus) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let newer = ended
            .get(name)
            .is_none_or(|(_, t)| ended_count(&status.ended_totals) >= ended_count(t));
        if newer {
            ended.insert(
                name.to_string(),
                (status.ended_leases.clone(), status.ended_totals.clone()),
            );
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `pool` with the newest status this replica handed over for it, when that is newer than the cache's.
    /// The ended leases' records are the newest of the cache's, the handed-over status's and those this
    /// replica wrote (their count only grows).
    pub fn overlay(&self, pool: Arc<TenantPool>, name: &str) -> Arc<TenantPool> {
        let latest = self.slots().get(name).map(|slot| slot.latest.clone());
        let recorded = self.ended.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
        if latest.is_none() && recorded.is_none() {
            return pool;
        }
        let cached = pool.status.clone().unwrap_or_default();
        let mut status = match &latest {
            Some(latest) => (**latest).clone(),
            None => cached.clone(),
        };
        let mut best: Ended = (cached.ended_leases, cached.ended_totals);
        let handed = latest.map(|l| (l.ended_leases.clone(), l.ended_totals.clone()));
        for other in [handed, recorded].into_iter().flatten() {
            if ended_count(&other.1) > ended_count(&best.1) {
                best = other;
            }
        }
        (status.ended_leases, status.ended_totals) = best;
        if pool.status.as_ref() == Some(&status) {
            return pool;
        }
        let mut pool = (*pool).clone();
        pool.status = Some(status);
        Arc::new(pool)
    }

    /// Hands `status` to the pool's writer, starting one if needed.
    pub fn submit(&self, name: &str, status: TenantPoolStatus) {
        let status = Arc::new(status);
        let mut slots = self.slots();
        if let Some(slot) = slots.get_mut(name) {
            slot.latest = status.clone();
            slot.tx.send_replace(status);
            return;
        }
        let (tx, rx) = watch::channel(status.clone());
        let api: Api<TenantPool> = Api::all(self.client.clone());
        tokio::spawn(write_loop(
            name.to_string(),
            api,
            rx,
            self.leader.clone(),
            self.metrics.clone(),
        ));
        slots.insert(name.to_string(), Slot { latest: status, tx });
    }

    /// Forgets every pool's newest status (leadership changed: the cluster is the truth again). Writers
    /// stop once their last write is done.
    pub fn forget_all(&self) {
        self.slots().clear();
    }

    /// Forgets one pool (it is gone).
    pub fn forget(&self, name: &str) {
        self.slots().remove(name);
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }
}

async fn write_loop(
    name: String,
    api: Api<TenantPool>,
    mut rx: watch::Receiver<Arc<TenantPoolStatus>>,
    leader: watch::Receiver<bool>,
    metrics: Metrics,
) {
    rx.mark_changed();
    while rx.changed().await.is_ok() {
        loop {
            let status = rx.borrow_and_update().clone();
            if !*leader.borrow() {
                break;
            }
            // The ended leases' records are written by the lease finalizer alone (see report.rs), never here:
            // a status handed over before a record was added must not take it away again.
            let mut own = serde_json::to_value(&*status).unwrap_or_default();
            if let Some(fields) = own.as_object_mut() {
                fields.remove("endedLeases");
                fields.remove("endedTotals");
            }
            let body = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "status": own});
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let result = super::timed(api.patch_status(&name, &params, &Patch::Apply(&body))).await;
            metrics.write("pool_status", result.is_ok());
            match result {
                Ok(_) => break,
                Err(super::Error::Kube(kube::Error::Api(s))) if s.code == 404 => break,
                Err(err) => {
                    tracing::warn!(pool = %name, %err, "pool status write failed; trying the newest again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        changed = rx.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(revenue: Option<f64>) -> Arc<TenantPool> {
        let mut v =
            json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "p"}, "spec": {}});
        if let Some(r) = revenue {
            v["status"] = json!({"revenue": r});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[tokio::test]
    async fn a_pass_builds_on_the_newest_status_handed_over_until_leadership_changes() {
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        // Not leading: the writer holds the status and writes nothing.
        let (_tx, leader) = watch::channel(false);
        let statuses = PoolStatuses::new(client, Metrics::new(), leader);
        let cached = pool(Some(1.0));
        assert!(
            Arc::ptr_eq(&statuses.overlay(cached.clone(), "p"), &cached),
            "nothing handed over yet"
        );
        statuses.submit(
            "p",
            TenantPoolStatus {
                revenue: 3.0,
                ..Default::default()
            },
        );
        let seen = statuses.overlay(cached.clone(), "p");
        assert_eq!(
            seen.status.as_ref().unwrap().revenue,
            3.0,
            "the write not yet in the cache counts"
        );
        let caught_up = pool(Some(3.0));
        assert!(Arc::ptr_eq(&statuses.overlay(caught_up.clone(), "p"), &caught_up));
        statuses.forget_all();
        assert!(
            Arc::ptr_eq(&statuses.overlay(cached.clone(), "p"), &cached),
            "a new term reads the cluster"
        );
    }
}
