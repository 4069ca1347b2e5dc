//! The cycles: lend → bind → notice → evict → return, several at once. Each slot runs cycles one after the
//! other until the run has started as many as it asked for.
//!
//! ```text
//!   create GpuLease (8 GPUs) ─▶ wait Bound ─▶ tenant pod (checkpoints on notice, or waits to be evicted)
//!     ─▶ hold a moment ─▶ either internal demand (an 8-GPU internal pod; sublet takes a node back through
//!        notice) then the lease deleted, or the lease deleted at once (its end) ─▶ wait until it is gone
//!   lease churn: a slot reuses its lease name (the next lease is created as soon as the name is free), and now
//!   and then deletes a lease the moment it is bound
//! ```
//! A cycle that does not get through a step in time is stalled: reported with what it waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use sublet_sandbox::DeleteOpts;
use tokio::sync::{Mutex, mpsc, watch};

use super::{KillPoint, POOL};
use crate::demo::{CHECKPOINT_ANNOTATION, DemoApi, INTERNAL_NAMESPACE, Rng};

const API: &str = "sublet.dev/v1alpha1";

/// How the cycles run.
#[derive(Clone, Debug)]
pub struct CycleConfig {
    pub cycles: u64,
    pub slots: u32,
    pub tenants: Vec<String>,
    pub group: String,
    pub gpus: u32,
    pub notice_seconds: i64,
    pub churn: bool,
    pub seed: u64,
}

/// What the cycles did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CycleCounts {
    pub started: u64,
    pub completed: u64,
    /// Cycles ended by internal demand, and by the lease's end.
    pub by_demand: u64,
    pub by_lease_end: u64,
    /// Leases deleted the moment they were bound (lease churn).
    pub churned: u64,
    /// Leases that ended before the tenant saw them `Bound`: internal demand took the node back at once.
    pub ended_before_seen_bound: u64,
    /// Tenant pods that checkpoint on notice, and that wait to be evicted.
    pub checkpointing_pods: u64,
    pub evicted_pods: u64,
    pub stalled: Vec<Stall>,
}

/// A cycle that did not get through a step in time.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stall {
    pub cycle: u64,
    pub lease: String,
    pub waited_for: String,
    pub seconds: f64,
    pub lease_status: Value,
}

/// Runs the slots until every cycle has run or `stop`.
pub async fn run(
    api: DemoApi,
    config: CycleConfig,
    points: mpsc::UnboundedSender<KillPoint>,
    stop: watch::Receiver<bool>,
) -> CycleCounts {
    let next = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(Mutex::new(CycleCounts::default()));
    let mut tasks = Vec::new();
    for slot in 0..config.slots {
        let slot = Slot {
            api: api.clone(),
            config: config.clone(),
            index: slot,
            rng: Rng::new(config.seed ^ (0x5107 + u64::from(slot) * 7919)),
            points: points.clone(),
            counts: counts.clone(),
        };
        tasks.push(tokio::spawn(slot.run(next.clone(), stop.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
    counts.lock().await.clone()
}

struct Slot {
    api: DemoApi,
    config: CycleConfig,
    index: u32,
    rng: Rng,
    points: mpsc::UnboundedSender<KillPoint>,
    counts: Arc<Mutex<CycleCounts>>,
}

enum Outcome {
    Done,
    Stalled(Stall),
}

impl Slot {
    async fn run(mut self, next: Arc<AtomicU64>, stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let n = next.fetch_add(1, Ordering::SeqCst);
            if n >= self.config.cycles {
                return;
            }
            self.counts.lock().await.started += 1;
            let outcome = self.cycle(n).await;
            let mut c = self.counts.lock().await;
            match outcome {
                Outcome::Done => c.completed += 1,
                Outcome::Stalled(s) => {
                    tracing::warn!(cycle = s.cycle, lease = %s.lease, waited_for = %s.waited_for, "chaos cycle stalled");
                    c.stalled.push(s)
                }
            }
        }
    }

    fn namespace(&self) -> String {
        self.config.tenants[self.index as usize % self.config.tenants.len()].clone()
    }

    async fn lease_status(&self, name: &str) -> Option<Value> {
        self.api
            .get(API, "gpuleases", Some(&self.namespace()), name)
            .await
            .ok()
            .map(|l| l["status"].clone())
    }

    /// Polls `done` every 100 ms for at most `limit`; a stall names what it waited for.
    async fn wait<F, Fut>(&self, n: u64, lease: &str, what: &str, limit: Duration, done: F) -> Result<(), Stall>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if done().await {
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(Stall {
                    cycle: n,
                    lease: format!("{}/{lease}", self.namespace()),
                    waited_for: what.to_string(),
                    seconds: start.elapsed().as_secs_f64(),
                    lease_status: self.lease_status(lease).await.unwrap_or(Value::Null),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cycle(&mut self, n: u64) -> Outcome {
        match self.try_cycle(n).await {
            Ok(()) => Outcome::Done,
            Err(stall) => {
                // Leave nothing behind for the next cycle of this slot.
                let ns = self.namespace();
                let _ = self
                    .api
                    .delete(API, "gpuleases", Some(&ns), &stall.lease_name(), &DeleteOpts::default())
                    .await;
                Outcome::Stalled(stall)
            }
        }
    }

    /// Starts the tenant's pod on lease `name`, bound as `status` tells: half of them checkpoint a moment after
    /// the notice, the others run until evicted.
    async fn run_tenant_pod(&mut self, n: u64, name: &str, status: &Value) {
        let checkpoints = self.rng.range(0.0, 1.0) < 0.5;
        let mut pod = crate::demo::tenants::tenant_pod(
            &format!("{name}-{n}"),
            name,
            status,
            u64::from(self.config.gpus),
            86_400.0,
            checkpoints,
        );
        if checkpoints {
            // Saves its work and exits this long after the notice (simulated seconds run at wall speed here).
            pod["metadata"]["annotations"][CHECKPOINT_ANNOTATION] = json!(format!("{:.1}", self.rng.range(0.2, 1.5)));
        }
        {
            let mut c = self.counts.lock().await;
            if checkpoints {
                c.checkpointing_pods += 1;
            } else {
                c.evicted_pods += 1;
            }
        }
        let _ = self.api.create("v1", "pods", Some(&self.namespace()), pod).await;
    }

    /// Internal demand: one node's worth, running a few seconds once placed; waits until it is placed.
    async fn demand_node_back(&mut self, n: u64, name: &str, end_limit: Duration) -> Result<(), Stall> {
        let api = self.api.clone();
        let internal = format!("demand-{n}");
        let run = self.rng.range(2.0, 4.0);
        let pod = crate::demo::workload::internal_pod(&internal, &self.config.group, self.config.gpus, run);
        if api.create("v1", "pods", Some(INTERNAL_NAMESPACE), pod).await.is_ok() {
            let _ = self.points.send(KillPoint::Demand);
            let placed = || {
                let (api, internal) = (api.clone(), internal.clone());
                async move {
                    match api.get("v1", "pods", Some(INTERNAL_NAMESPACE), &internal).await {
                        Ok(p) => p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()),
                        // Finished and removed by the kubelet: it was placed.
                        Err(e) => e.code == 404,
                    }
                }
            };
            self.wait(n, name, "the internal demand to be placed", end_limit, placed)
                .await?;
        }
        Ok(())
    }

    /// One cycle of lease `n`: create it, see it bound, run a tenant pod on it, in most cycles send internal
    /// demand for a node, then delete the lease (or, with churn, delete it early), and wait until it is gone.
    async fn try_cycle(&mut self, n: u64) -> Result<(), Stall> {
        let ns = self.namespace();
        let name = if self.config.churn {
            format!("slot-{}", self.index)
        } else {
            format!("cycle-{n}")
        };
        let notice = Duration::from_secs(self.config.notice_seconds.max(0) as u64);
        let bind_limit = Duration::from_secs(60);
        let end_limit = notice + Duration::from_secs(60);
        // With lease churn the name may still be held by the slot's last lease, kept by its finalizer.
        let lease = json!({"apiVersion": API, "kind": "GpuLease", "metadata": {"name": name},
            "spec": {"pool": POOL, "gpus": self.config.gpus}});
        let api = self.api.clone();
        self.wait(n, &name, "the lease's name to be free", end_limit, || {
            let (api, lease, ns) = (api.clone(), lease.clone(), ns.clone());
            async move { api.create(API, "gpuleases", Some(&ns), lease).await.is_ok() }
        })
        .await?;
        // Bound, or already ended: internal demand can take a lease's node back the moment it is bound.
        let bound_or_ended = || {
            let (api, ns, name) = (api.clone(), ns.clone(), name.clone());
            async move {
                api.get(API, "gpuleases", Some(&ns), &name).await.is_ok_and(|l| {
                    let s = &l["status"];
                    (s["phase"] == "Bound" && s["nodeCount"].as_u64().unwrap_or(0) > 0)
                        || matches!(s["phase"].as_str(), Some("Released" | "Expired"))
                })
            }
        };
        self.wait(n, &name, "Bound", bind_limit, bound_or_ended).await?;
        let gone = || {
            let (api, ns, name) = (api.clone(), ns.clone(), name.clone());
            async move {
                api.get(API, "gpuleases", Some(&ns), &name)
                    .await
                    .is_err_and(|e| e.code == 404)
            }
        };
        if self.lease_status(&name).await.is_some_and(|s| s["phase"] != "Bound") {
            self.counts.lock().await.ended_before_seen_bound += 1;
            let _ = api
                .delete(API, "gpuleases", Some(&ns), &name, &DeleteOpts::default())
                .await;
            return self.wait(n, &name, "the ended lease to be gone", end_limit, gone).await;
        }
        if self.config.churn && self.rng.range(0.0, 1.0) < 0.15 {
            let _ = api
                .delete(API, "gpuleases", Some(&ns), &name, &DeleteOpts::default())
                .await;
            let _ = self.points.send(KillPoint::LeaseDeleted);
            self.counts.lock().await.churned += 1;
            return self
                .wait(n, &name, "the churned lease to be gone", end_limit, gone)
                .await;
        }
        let Some(status) = self.lease_status(&name).await else {
            return self.wait(n, &name, "the lease to be gone", end_limit, gone).await;
        };
        self.run_tenant_pod(n, &name, &status).await;
        tokio::time::sleep(Duration::from_secs_f64(self.rng.range(0.5, 2.5))).await;
        if self.rng.range(0.0, 1.0) < 0.6 {
            self.demand_node_back(n, &name, end_limit).await?;
            self.counts.lock().await.by_demand += 1;
        } else {
            self.counts.lock().await.by_lease_end += 1;
        }
        let _ = api
            .delete(API, "gpuleases", Some(&ns), &name, &DeleteOpts::default())
            .await;
        let _ = self.points.send(KillPoint::LeaseDeleted);
        self.wait(n, &name, "the lease to be gone", end_limit, gone).await
    }
}

impl Stall {
    fn lease_name(&self) -> String {
        self.lease.rsplit('/').next().unwrap_or_default().to_string()
    }
}
