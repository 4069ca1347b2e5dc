//! The controller: `sublet run`.
//!
//! One pass per pool, always in this order:
//!
//! ```text
//!   observe  cache.rs + pods.rs      reflector stores (nodes, pools, leases, namespaces), the pod cache,
//!            + written.rs            sublet's own node and lease writes the watches have not delivered yet
//!            + observe.rs            → Snapshot
//!            crate::signals          + utilization and Kueue/PromQL demand, fetched once per pass (bounded)
//!   plan     crate::policy::plan     Snapshot → Plan (pure)
//!   execute  execute.rs + evict.rs   Plan steps → node, pod and eviction writes, node by node side by side
//!            + podsecurity.rs        (Enforce mode only); tenant namespaces labelled for Pod Security;
//!                                    sublet's marks put right where a node's disagree with its record
//!   report   report.rs + status.rs   lease and pool status (the pool's by its own writer task), the ledger,
//!            + events.rs             events on leases, pools and nodes, metrics (and process_metrics.rs);
//!            + finalize.rs           the lease finalizer (a deleted lease billed until its nodes are back, its
//!                                    final account kept in the pool status)
//!            + ledger.rs             the lease ledger, from the record of when each node was bound and returned
//!   beside   orphans.rs              leases naming a pool that does not exist are told so (PoolNotFound)
//!            overlap.rs              pools selecting the same nodes: which pool a node belongs to, and the
//!                                    Overlapping condition on each
//!            modes.rs                what Observe and Enforce each carry out
//! ```
//!
//! Passes run on any change in the caches that can matter to a plan (the first after a quiet spell at once,
//! later ones gathered so that passes start at most every `pass_interval`), on a periodic tick for the
//! time-based rules (idle windows, deadlines, cool-downs, lease ends), and when this replica gains the leader
//! lease. Every replica keeps its caches warm; only the leader plans and writes, and it stops writing the
//! moment it loses the lease. The process exits if the leader-election task dies.

mod cache;
mod cached_pod;
mod events;
mod evict;
mod execute;
mod finalize;
mod health;
mod http;
mod ledger;
mod metrics;
mod modes;
mod netpol;
mod observe;
mod orphans;
mod overlap;
mod pods;
mod podsecurity;
mod process_metrics;
mod report;
mod reserve;
mod scrub;
mod status;
mod written;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

pub use cache::{Caches, node_gpus};
pub use cached_pod::CachedPod;
pub use execute::{Done, Outcome};
pub use ledger::{Ledger, accrue};
pub use metrics::Metrics;
pub use observe::{IdleClocks, Observed, World, observe};
pub use pods::{PodCache, PodTable, PodWriter};

use crate::api::keys::POOL_FINALIZER;
use crate::api::{GpuLease, Mode, NodeState, TenantPool};
use crate::policy::plan;
pub use netpol::{METADATA, NAME as NETWORK_POLICY, TenantNetwork};

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("the API did not answer in time")]
    Timeout,
    #[error("node {0} kept changing under us; will retry")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error("invalid pool spec: {0}")]
    InvalidSpec(#[from] crate::policy::PolicyError),
    #[error("this replica does not hold the leader lease")]
    NotLeader,
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Every value of [`Error::metric_label`].
    pub const METRIC_LABELS: [&'static str; 7] = [
        "kube",
        "timeout",
        "conflict",
        "refused",
        "invalid_spec",
        "not_leader",
        "json",
    ];

    /// A fixed label for metrics (never the message).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Timeout => "timeout",
            Self::Conflict(_) => "conflict",
            Self::Refused(_) => "refused",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::NotLeader => "not_leader",
            Self::Json(_) => "json",
        }
    }
}

/// How `sublet run` behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where `/metrics`, `/livez` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// Leader election on a coordination.k8s.io Lease; off runs as the only writer.
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// Seconds the leader lease is valid without renewal.
    pub lease_duration: u64,
    /// The periodic pass.
    pub tick: Duration,
    /// The least time between two passes started by changes: the first change after a quiet spell starts a
    /// pass at once, and changes arriving sooner than this after it are gathered into one more pass.
    pub pass_interval: Duration,
    /// How often a status is written when only its ledger moved.
    pub ledger_interval: Duration,
    /// Keep a NetworkPolicy in every tenant namespace (see `netpol`); None keeps none.
    pub tenant_network: Option<TenantNetwork>,
    /// `/metrics` only for callers the API server authenticates and authorizes (see `http`).
    pub metrics_auth: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            metrics_addr: "0.0.0.0:8080".parse().expect("valid address"),
            leader_election: true,
            lease_namespace: "default".into(),
            lease_name: "sublet-leader".into(),
            identity: format!("sublet-{}", std::process::id()),
            lease_duration: 15,
            tick: Duration::from_secs(5),
            pass_interval: Duration::from_millis(20),
            ledger_interval: Duration::from_secs(30),
            tenant_network: None,
            metrics_auth: false,
        }
    }
}

/// What every pass needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub config: Config,
    pub caches: Caches,
    pub clocks: IdleClocks,
    /// Prometheus and Kueue, read once per pass per pool.
    pub signals: crate::signals::Sources,
    leader: watch::Receiver<bool>,
    /// Pool statuses, written off the pass.
    pub pool_statuses: status::PoolStatuses,
    /// Per pool, when unmet internal demand was first seen (for the reclaim latency histogram).
    demand_seen: std::sync::Mutex<std::collections::HashMap<String, Timestamp>>,
    /// Per pool, the invalid-spec message last raised as an event: failing passes repeat before the status
    /// that records it is seen, and the event is said once.
    invalid_said: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// When held nodes were first seen lost or degraded, until their leases' holds record it.
    pub seen: health::Seen,
}

impl Context {
    pub fn new(
        client: Client,
        caches: Caches,
        metrics: Metrics,
        config: Config,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let reporter = Reporter {
            controller: "sublet".into(),
            instance: Some(config.identity.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            signals: crate::signals::Sources::new(client.clone()),
            pool_statuses: status::PoolStatuses::new(client.clone(), metrics.clone(), leader.clone()),
            client,
            metrics,
            config,
            caches,
            clocks: IdleClocks::default(),
            leader,
            demand_seen: Default::default(),
            invalid_said: Default::default(),
            seen: Default::default(),
        }
    }

    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

/// How long one API call may take before it counts as failed (`Error::Timeout`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Wraps an API call in the write timeout; every API call of a pass goes through it.
pub(crate) async fn timed<T>(fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, Error> {
    match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Error::Kube),
        Err(_) => Err(Error::Timeout),
    }
}

/// The leases of every pool that sublet binds no node to, with why (a namespace too long for a lease key,
/// a key an older lease already has): keys are cluster-wide, so all leases count, but not the ended ones.
fn refused_leases(leases: &[Arc<GpuLease>]) -> HashMap<(String, String), String> {
    let live: Vec<crate::policy::KeyedLease> = leases
        .iter()
        .filter(|l| !l.status.as_ref().is_some_and(|s| s.phase.is_final()))
        .filter_map(|l| {
            Some(crate::policy::KeyedLease {
                namespace: l.metadata.namespace.as_deref()?,
                name: l.metadata.name.as_deref()?,
                holding: l.status.as_ref().is_some_and(|s| !s.nodes.is_empty()),
                created: l
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(i64::MAX, |t| t.0.as_second()),
            })
        })
        .collect();
    crate::policy::refusals(&live)
}

/// One pass over one pool: observe → plan → execute → report.
pub async fn reconcile(pool: Arc<TenantPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = pool.name_any();
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let pool = ctx.pool_statuses.overlay(pool, &name);
    let (pool, invalid) = usable(pool);
    let started = std::time::Instant::now();
    count_pass(&ctx, &pool, &name);
    let deleting = pool.metadata.deletion_timestamp.is_some();
    if !deleting && !pool.finalizers().iter().any(|f| f == POOL_FINALIZER) {
        add_finalizer(&ctx, &name).await?;
    }
    let now = Timestamp::now();
    let world = world_now(&ctx);
    let readings = read_signals(&ctx, &pool, &name, now).await;
    let t_signals = started.elapsed();
    let Seen {
        mut snapshot,
        tenant_namespaces,
        weak,
        refused,
        overlap,
    } = snapshot_of(&ctx, &pool, &world, readings, invalid.as_deref(), now)?;
    let jobs = scrub::read(&ctx, &pool, &mut snapshot).await?;
    let t_observe = started.elapsed();
    let the_plan = plan_with_refusals(&snapshot, &weak, &refused);
    ctx.metrics.internal_pending(&name, &pending_by_class(&snapshot));
    let t_plan = started.elapsed();
    let act = modes::acts(&pool, &snapshot, &the_plan);
    let outcomes = if act {
        let outcomes = execute_plan(&ctx, &pool, &world, &tenant_namespaces, &snapshot, &the_plan, now).await;
        if ctx.is_leader() {
            scrub::act(&ctx, &pool, &the_plan, &outcomes, &jobs).await;
        }
        outcomes
    } else {
        Vec::new()
    };
    let t_execute = started.elapsed();
    reclaim_latency(&ctx, &name, &the_plan, &outcomes, now);
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let reported = report::report(
        &ctx,
        &pool,
        &snapshot,
        &the_plan,
        &outcomes,
        &world.leases,
        !act,
        &overlap,
    )
    .await?;
    finalize::leases(&ctx, &pool, &snapshot, &the_plan, &world.leases, act).await;
    if deleting && the_plan.nodes.iter().all(|n| n.state == NodeState::Internal) && the_plan.steps.is_empty() {
        forget_pool(&ctx, &name, &world.leases).await?;
        return Ok(Action::await_change());
    }
    let laps = Laps {
        signals: t_signals,
        observe: t_observe,
        plan: t_plan,
        execute: t_execute,
        total: started.elapsed(),
    };
    log_pass(&ctx, &name, the_plan.steps.len(), &laps);
    Ok(next_action(&ctx, &name, &outcomes, &reported))
}

/// Counts a pass of the pool and records the notice its spec gives.
fn count_pass(ctx: &Context, pool: &TenantPool, name: &str) {
    ctx.metrics.pool_seen(name, &Error::METRIC_LABELS);
    ctx.metrics
        .pool_notice
        .with_label_values(&[name])
        .set(pool.spec.reclaim.notice_seconds);
    ctx.metrics.reconciles.with_label_values(&[name]).inc();
}

/// The nodes, leases and namespaces the caches hold now.
fn world_now(ctx: &Context) -> World {
    let caches = &ctx.caches;
    World {
        nodes: caches.nodes_now(),
        leases: caches.leases_now(),
        namespaces: caches.namespaces.state(),
    }
}

/// Reads the pool's demand signals and exports when each source was last sampled.
async fn read_signals(ctx: &Context, pool: &TenantPool, name: &str, now: Timestamp) -> crate::signals::Readings {
    let readings = ctx.signals.fetch(pool, now).await;
    for (source, at) in &readings.newest {
        ctx.metrics
            .signal_sample_timestamp
            .with_label_values(&[name, source])
            .set(at.as_millisecond() as f64 / 1000.0);
    }
    readings
}

/// Time since a pass started, taken at the end of each of its stages.
struct Laps {
    signals: Duration,
    observe: Duration,
    plan: Duration,
    execute: Duration,
    total: Duration,
}

/// Records how long the pass took, and logs the time each stage took.
fn log_pass(ctx: &Context, name: &str, steps: usize, laps: &Laps) {
    ctx.metrics
        .reconcile_duration
        .with_label_values(&[name])
        .observe(laps.total.as_secs_f64());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    tracing::debug!(
        pool = %name,
        steps,
        signals_ms = ms(laps.signals),
        observe_ms = ms(laps.observe - laps.signals),
        plan_ms = ms(laps.plan - laps.observe),
        execute_ms = ms(laps.execute - laps.plan),
        report_ms = ms(laps.total - laps.execute),
        "pass done"
    );
}

/// When to pass over the pool again: soon after a failed step or with ledgers left to write, else next tick.
fn next_action(ctx: &Context, name: &str, outcomes: &[Outcome], reported: &report::Reported) -> Action {
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        tracing::info!(pool = %name, failed, "some steps failed; the next pass plans again");
        return Action::requeue(Duration::from_secs(1));
    }
    if reported.ledgers_left > 0 {
        // Ledgers fell due together: write the next slice soon, between other passes.
        return Action::requeue(Duration::from_millis(100));
    }
    Action::requeue(ctx.config.tick)
}

/// The pool as sublet can act on it, and why its spec as written cannot be used, when it cannot. An invalid
/// spec (one the schema cannot check: an unknown `timeZone`) stops new lending only: the pass runs under the
/// last valid spec sublet recorded (`status.lastValidSpec`), or, for a pool never valid, under the spec with
/// its time zone read as UTC (the zone only decides when new nodes may be lent, and nothing new is lent).
fn usable(pool: Arc<TenantPool>) -> (Arc<TenantPool>, Option<String>) {
    let name = pool.name_any();
    let deleting = pool.metadata.deletion_timestamp.is_some();
    let err = match pool.spec.to_policy(&name, deleting) {
        Ok(_) => return (pool, None),
        Err(err) => err,
    };
    let last = pool
        .status
        .as_ref()
        .and_then(|s| s.last_valid_spec.as_deref())
        .filter(|s| s.to_policy(&name, deleting).is_ok())
        .cloned();
    let spec = last.unwrap_or_else(|| crate::api::TenantPoolSpec {
        time_zone: "UTC".into(),
        ..pool.spec.clone()
    });
    let mut usable = (*pool).clone();
    usable.spec = spec;
    (Arc::new(usable), Some(format!("invalid pool spec: {err}")))
}

/// The pool's snapshot from the caches and the signals' readings, with its tenant namespaces and those of
/// them whose Pod Security is weaker than restricted (their leases are not bound: not a tenant namespace to
/// the planner). The pod cache follows the tenant namespaces from here on. `invalid` says why the spec as
/// written cannot be used (see `usable`): the planner then lends nothing new, and the pass counts an
/// `invalid_spec` failure; a valid spec makes the next invalid one news again.
fn snapshot_of(
    ctx: &Context,
    pool: &TenantPool,
    world: &World,
    readings: crate::signals::Readings,
    invalid: Option<&str>,
    now: Timestamp,
) -> Result<Seen, Error> {
    let mut observed = {
        let pods = ctx.caches.pods.read();
        observe(pool, world, &pods, &ctx.clocks, readings.signals.clone(), now)?
    };
    let overlap = overlap::of(pool, &ctx.caches.pools.state(), &world.nodes);
    for node in observed.snapshot.nodes.iter_mut() {
        node.claimed_by = overlap.claimed.get(&node.name).cloned();
    }
    if pool.spec.mode == Mode::Observe {
        let mut policy = (*observed.snapshot.policy).clone();
        policy.observe = true;
        observed.snapshot.policy = Arc::new(policy);
    }
    if let Some(why) = invalid {
        let mut policy = (*observed.snapshot.policy).clone();
        policy.invalid = Some(why.to_string());
        observed.snapshot.policy = Arc::new(policy);
        ctx.metrics
            .reconcile_failures
            .with_label_values(&[pool.name_any().as_str(), "invalid_spec"])
            .inc();
    } else {
        // The spec is valid again: a later invalid one is news.
        ctx.invalid_said
            .lock()
            .expect("invalid spec lock")
            .remove(&pool.name_any());
    }
    ctx.caches
        .pods
        .watch_namespaces(&pool.name_any(), observed.tenant_namespaces.iter().cloned().collect());
    let weak = podsecurity::weaker(&world.namespaces, &observed.tenant_namespaces);
    let refused = refused_leases(&world.leases);
    let mut snapshot = observed.snapshot;
    for lease in snapshot
        .leases
        .iter_mut()
        .filter(|l| weak.contains_key(&l.namespace) || refused.contains_key(&(l.namespace.clone(), l.name.clone())))
    {
        lease.tenant_namespace = false;
    }
    readings.apply(&mut snapshot);
    Ok(Seen {
        snapshot,
        tenant_namespaces: observed.tenant_namespaces,
        weak,
        refused,
        overlap,
    })
}

/// What a pass sees of its pool.
struct Seen {
    snapshot: crate::policy::Snapshot,
    tenant_namespaces: HashSet<String>,
    /// Tenant namespaces whose Pod Security is weaker than restricted, with their level.
    weak: HashMap<String, String>,
    /// Leases sublet will not bind (their key is another's, or their namespace name is too long), with why.
    refused: HashMap<(String, String), String>,
    /// The nodes this pool shares with other pools.
    overlap: overlap::Overlap,
}

/// The plan, with the reason why a pending lease that sublet refuses, or one in a namespace of weaker Pod
/// Security, is not bound.
fn plan_with_refusals(
    snapshot: &crate::policy::Snapshot,
    weak: &HashMap<String, String>,
    refused: &HashMap<(String, String), String>,
) -> crate::policy::Plan {
    let mut the_plan = plan(snapshot);
    for lease in the_plan.leases.iter_mut() {
        if let (Some(why), crate::api::LeasePhase::Pending) =
            (refused.get(&(lease.namespace.clone(), lease.name.clone())), lease.phase)
        {
            lease.reason = why.clone();
            continue;
        }
        if let (Some(level), crate::api::LeasePhase::Pending) = (weak.get(&lease.namespace), lease.phase) {
            lease.reason = format!(
                "namespace {} enforces Pod Security '{level}', weaker than 'restricted': sublet binds no lease there",
                lease.namespace
            );
        }
    }
    the_plan
}

/// Carries out the plan's steps (and the overdue evictions of terminating pods), then puts right any node
/// marks that disagree with sublet's record.
async fn execute_plan(
    ctx: &Context,
    pool: &TenantPool,
    world: &World,
    tenant_namespaces: &HashSet<String>,
    snapshot: &crate::policy::Snapshot,
    the_plan: &crate::policy::Plan,
    now: Timestamp,
) -> Vec<execute::Outcome> {
    let name = pool.name_any();
    podsecurity::label(ctx, &world.namespaces, tenant_namespaces).await;
    if let Some(network) = &ctx.config.tenant_network {
        netpol::keep(ctx, network, tenant_namespaces).await;
    }
    let mut steps = the_plan.steps.clone();
    steps.extend(evict::overdue_terminating(snapshot));
    let reclaim = execute::Reclaim {
        max_grace_seconds: pool.spec.reclaim.max_grace_seconds,
    };
    let outcomes = execute::execute(ctx, &name, &steps, snapshot, reclaim, now).await;
    for (node, what) in execute::reassert(ctx, &name, snapshot, &steps, now).await {
        ctx.metrics
            .marks_repaired
            .with_label_values(&[name.as_str(), what])
            .inc();
        let note = format!(
            "the node's sublet.dev/ {what} disagreed with sublet's record and were put right; sublet believes its record, never the node"
        );
        report::publish(
            ctx,
            node.as_ref(),
            kube::runtime::events::EventType::Warning,
            "MarksRepaired",
            "Repair",
            &note,
        )
        .await;
    }
    outcomes
}

/// A deleted pool whose nodes are all home: its leases released, its finalizer removed, and everything this
/// process kept for it dropped.
async fn forget_pool(ctx: &Context, name: &str, leases: &[Arc<crate::api::GpuLease>]) -> Result<(), Error> {
    finalize::release_all(ctx, name, leases).await?;
    remove_finalizer(ctx, name).await?;
    ctx.caches.pods.unwatch(name);
    ctx.pool_statuses.forget(name);
    ctx.metrics.pool_deleted(name);
    Ok(())
}

/// Internal GPUs waiting, by class (`any` when any node will do): pending internal pods and the demand the
/// signals read.
fn pending_by_class(snapshot: &crate::policy::Snapshot) -> std::collections::BTreeMap<String, u32> {
    let mut by_class = std::collections::BTreeMap::new();
    let class_name = |c: &Option<String>| c.clone().unwrap_or_else(|| "any".to_string());
    for pod in &snapshot.pods {
        if !pod.tenant && !pod.terminating && pod.node.is_none() && pod.phase == crate::policy::PodPhase::Pending {
            *by_class.entry(class_name(&pod.class)).or_default() += pod.gpus;
        }
    }
    for (class, gpus) in &snapshot.demand.by_class {
        *by_class.entry(class_name(class)).or_default() += gpus;
    }
    by_class
}

/// Observes, for each node brought back for internal demand, the time since that demand was first seen.
fn reclaim_latency(ctx: &Context, pool: &str, plan: &crate::policy::Plan, outcomes: &[Outcome], now: Timestamp) {
    let mut seen = ctx.demand_seen.lock().expect("demand clock lock");
    let unmet = plan
        .steps
        .iter()
        .any(|s| s.cause == crate::policy::Cause::InternalDemand)
        || plan.totals.reclaiming_gpus > 0
        // A node taken back waits out its scrub too: the latency runs until it is back in internal use.
        || plan.totals.scrubbing_gpus > 0;
    let back = outcomes.iter().filter(|o| {
        matches!(o.result, Ok(Done::Written))
            && matches!(
                o.step.action,
                crate::policy::Action::Unlend { .. } | crate::policy::Action::Return { .. }
            )
    });
    let mut any = false;
    for _ in back {
        any = true;
        if let Some(since) = seen.get(pool) {
            let secs = now.duration_since(*since).as_secs_f64();
            ctx.metrics.reclaim_latency.with_label_values(&[pool]).observe(secs);
        }
    }
    if unmet {
        seen.entry(pool.to_string()).or_insert(now);
    } else if any || plan.totals.pending_gpus == 0 {
        seen.remove(pool);
    }
}

/// An invalid spec waits for a change; anything else is retried soon.
pub fn error_policy(pool: Arc<TenantPool>, err: &Error, ctx: Arc<Context>) -> Action {
    let name = pool.name_any();
    ctx.metrics
        .reconcile_failures
        .with_label_values(&[name.as_str(), err.metric_label()])
        .inc();
    tracing::warn!(pool = %name, %err, "pass failed");
    match err {
        Error::InvalidSpec(_) => {
            let ctx = ctx.clone();
            let message = err.to_string();
            tokio::spawn(async move { mark_invalid(&ctx, &pool, &message).await });
            Action::await_change()
        }
        _ => Action::requeue(Duration::from_secs(2)),
    }
}

async fn mark_invalid(ctx: &Context, pool: &TenantPool, message: &str) {
    let old = pool.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let mut conditions = old.clone();
    crate::api::set_condition(
        &mut conditions,
        "Ready",
        crate::api::ConditionStatus::False,
        "InvalidSpec",
        message,
        pool.metadata.generation,
        Timestamp::now(),
    );
    let mut status = crate::api::TenantPoolStatus {
        conditions,
        ..Default::default()
    };
    status.summarize();
    let api: Api<TenantPool> = Api::all(ctx.client.clone());
    // A merge patch of these fields alone: every other figure of the status (nodes, totals, revenue) stays.
    let body = json!({"status": {
        "conditions": status.conditions, "ready": status.ready, "lending": status.lending,
    }});
    let ok = timed(api.patch_status(&pool.name_any(), &PatchParams::default(), &Patch::Merge(&body)))
        .await
        .is_ok();
    ctx.metrics.write("pool_status", ok);
    let first = {
        let mut said = ctx.invalid_said.lock().expect("invalid spec lock");
        said.insert(pool.name_any(), message.to_string()).as_deref() != Some(message)
    };
    for (reason, note) in events::pool_warnings(&old, &status.conditions) {
        if first {
            report::publish(ctx, pool, EventType::Warning, reason, "Validate", &note).await;
        }
    }
}

async fn add_finalizer(ctx: &Context, name: &str) -> Result<(), Error> {
    let api: Api<TenantPool> = Api::all(ctx.client.clone());
    let pool = timed(api.get(name)).await?;
    let mut finalizers = pool.finalizers().to_vec();
    if finalizers.iter().any(|f| f == POOL_FINALIZER) {
        return Ok(());
    }
    finalizers.push(POOL_FINALIZER.into());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": pool.resource_version()}});
    let r = timed(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))).await;
    ctx.metrics.write("pool_finalizer", r.is_ok());
    r.map(|_| ())
}

async fn remove_finalizer(ctx: &Context, name: &str) -> Result<(), Error> {
    let api: Api<TenantPool> = Api::all(ctx.client.clone());
    let pool = timed(api.get(name)).await?;
    let finalizers: Vec<String> = pool
        .finalizers()
        .iter()
        .filter(|f| *f != POOL_FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": pool.resource_version()}});
    let r = timed(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))).await;
    ctx.metrics.write("pool_finalizer", r.is_ok());
    r.map(|_| ())
}

/// Where to find the API server.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    /// A kubeconfig file; otherwise $KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
}

/// A client for `connect`.
pub async fn client(connect: &Connect) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let config = match &connect.kubeconfig {
        Some(path) => {
            // Read here rather than by kube, whose error names the path quoted twice and repeats its cause.
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            let kc = kube::config::Kubeconfig::from_yaml(&text)
                .with_context(|| format!("kubeconfig {} is not a valid kubeconfig", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {} has no usable context", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found and not running in a cluster")?,
    };
    // No retries inside the client: a PodDisruptionBudget answers an eviction with 429 for as long as it
    // likes, and retrying there would hold a pass for as long. sublet tries again on its own schedule.
    let mut config = config;
    config.default_retry = false;
    Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Runs the controller until `shutdown` resolves or the leader-election task dies.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let caches = Caches::start(&client);
    let guard = config.metrics_auth.then(|| http::Guard::new(client.clone()));
    let addr = http::serve(config.metrics_addr, metrics.clone(), caches.clone(), guard).await?;
    tracing::info!(%addr, "serving /metrics, /livez and /readyz");
    let (leader_rx, mut lease_task) = leader(&client, &config).await?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        caches.clone(),
        metrics.clone(),
        config.clone(),
        leader_rx.clone(),
    ));
    caches.wait_synced().await;
    tracing::info!(objects = caches.len(), "caches synced");
    // Leases naming no pool are served by no pass; a sweep of its own tells them why.
    let orphans = tokio::spawn(orphans::run(ctx.clone()));
    let _stop_orphans = AbortOnDrop(orphans);
    // Any change in the caches, and any change of leadership, triggers a pass over every pool. Changes are
    // throttled rather than debounced: a trailing debounce would put passes off for as long as pods keep
    // changing, which in a large cluster is always.
    let gap = config.pass_interval;
    let changes = futures::stream::unfold((caches.changed.clone(), None), move |(n, last)| async move {
        n.notified().await;
        if let Some(last) = last {
            tokio::time::sleep_until(last + gap).await;
        }
        Some(((), (n, Some(tokio::time::Instant::now()))))
    });
    let metrics_leader = metrics.clone();
    let ctx_leader = ctx.clone();
    let leadership = futures::stream::unfold(leader_rx.clone(), move |mut rx| {
        let m = metrics_leader.clone();
        let ctx = ctx_leader.clone();
        async move {
            rx.changed().await.ok()?;
            let leading = *rx.borrow();
            // A new term starts from what the cluster shows.
            ctx.pool_statuses.forget_all();
            m.leader.set(i64::from(leading));
            tracing::info!(leading, "leadership changed");
            Some(((), rx))
        }
    });
    metrics.leader.set(i64::from(*leader_rx.borrow()));
    // Passes are started by the filtered caches (a pool's own status writes start none), by leadership and
    // by each pass's requeue; the pool store is the cache's.
    let no_trigger = futures::stream::pending::<Result<TenantPool, watcher::Error>>();
    let controller = Controller::for_stream(no_trigger, caches.pools.clone())
        .reconcile_all_on(futures::stream::select(
            // A first pass over every pool once the caches are synced.
            futures::stream::once(std::future::ready(())).chain(changes),
            leadership,
        ))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    tokio::select! {
        _ = controller => Ok(()),
        res = &mut lease_task => Err(anyhow::anyhow!("leader election stopped: {res:?}")),
    }
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type LeaseTask = std::pin::Pin<Box<dyn Future<Output = String> + Send>>;

async fn leader(client: &Client, config: &Config) -> anyhow::Result<(watch::Receiver<bool>, LeaseTask)> {
    if !config.leader_election {
        let (tx, rx) = watch::channel(true);
        return Ok((
            rx,
            Box::pin(async move {
                let _keep = tx;
                std::future::pending::<String>().await
            }),
        ));
    }
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&config.identity)
        .with_duration(config.lease_duration)
        .with_grace((config.lease_duration / 3).max(1))
        .build()
        .await?;
    let (rx, handle) = manager.watch().await;
    Ok((
        rx,
        Box::pin(async move {
            match handle.await {
                Ok(Ok(_)) => "the lease manager finished".to_string(),
                Ok(Err(err)) => err.to_string(),
                Err(err) => err.to_string(),
            }
        }),
    ))
}
