//! `sublet chaos`: the real controller, as a child process, through many lend → bind → notice → evict →
//! return cycles while it is killed, its API writes fail, nodes vanish and return, leases churn and the
//! pool's mode flips; an independent watcher checks that it keeps its promises.
//!
//! ```text
//!   sandbox (this process, HTTP, fault injection) ◀──── sublet run (child: killed and started again, child.rs)
//!     ▲   ▲                                        ◀──── node heartbeats, scheduler and kubelet (crate::demo)
//!     │   └── cycles.rs: leases, tenant pods, internal demand, several at once ─┐
//!     │       perturb.rs: faults, node delete/register, mode flips              ├─▶ kill points ─▶ child.rs
//!     └── watcher.rs + demo::summary: their own watches over HTTP ──────────────┘
//!   end: perturbations stop, every lease ends, nodes must carry no lease marks; the pool is deleted and
//!        nodes must carry no sublet marks at all; then billing, pool totals, reclaim latency ─▶ Report
//! ```

pub mod child;
pub mod cycles;
pub mod perturb;
pub mod report;
pub mod watcher;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sublet_sandbox::{DeleteOpts, Sandbox, SandboxConfig, SandboxHandle};
use tokio::sync::{mpsc, watch};

use crate::api::keys::{LEASE_LABEL, LEASE_TAINT, RECLAIMING_TAINT, STATE_LABEL};
use crate::demo::nodes::{NodeGroup, node_specs};
use crate::demo::{DemoApi, GROUP_LABEL, INTERNAL_NAMESPACE, SimClock, feed, summary};
pub use report::Report;

/// The chaos run's pool.
pub const POOL: &str = "demo";

/// Why a chaos run could not run (a run that finds violations is not an error: see [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("chaos setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
}

/// What may be done to the controller and its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Perturbation {
    /// SIGKILL the controller at random and shortly after chosen writes, and start it again.
    Kills,
    /// Fail a share of API writes with 500, 409 and 429.
    Faults,
    /// Delete nodes (leased ones first) and register them again.
    NodeDelete,
    /// Stop a node's kubelet (leased ones first): the node goes NotReady, and Ready again when it is back.
    NodeNotReady,
    /// Reuse lease names as soon as they are free, and delete leases the moment they are bound.
    LeaseChurn,
    /// Switch the pool to Observe for a moment and back.
    ModeFlips,
}

/// How a chaos run goes.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub cycles: u64,
    pub seed: u64,
    pub perturbations: Vec<Perturbation>,
    pub notice_seconds: i64,
    pub idle_seconds: i64,
    /// Cycles at once.
    pub parallel: u32,
    pub gpus_per_node: u32,
    /// Where the controller's log goes (appended); none: dropped.
    pub controller_log: Option<PathBuf>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            cycles: 50,
            seed: 1,
            perturbations: vec![Perturbation::Kills, Perturbation::Faults, Perturbation::LeaseChurn],
            notice_seconds: 3,
            idle_seconds: 2,
            parallel: 6,
            gpus_per_node: 8,
            controller_log: None,
        }
    }
}

/// A point after which the controller may be killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillPoint {
    /// A node went under notice.
    Notice,
    /// A tenant pod's deletion began.
    Eviction,
    /// A node left a lease.
    Return,
    /// A cycle deleted its lease.
    LeaseDeleted,
    /// A cycle created internal demand.
    Demand,
}

impl KillPoint {
    pub fn name(self) -> &'static str {
        match self {
            KillPoint::Notice => "after-notice",
            KillPoint::Eviction => "after-eviction-began",
            KillPoint::Return => "after-return-began",
            KillPoint::LeaseDeleted => "after-lease-deleted",
            KillPoint::Demand => "after-internal-demand",
        }
    }
}

/// Runs the chaos run and answers its report.
pub async fn run(config: ChaosConfig) -> Result<Report, ChaosError> {
    if config.cycles == 0 || config.parallel == 0 {
        return Err(ChaosError::Setup("--cycles and --parallel must be at least 1".into()));
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("sublet-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| ChaosError::Setup(format!("cannot create {}: {e}", dir.display())))?;
    let kubeconfig = dir.join("kubeconfig");
    let sandbox = start_sandbox(&kubeconfig).await?;
    let api = DemoApi::Local(sandbox.local().as_manager("sublet-chaos"));
    let (stop_tx, stop) = watch::channel(false);

    let groups = node_groups(&config);
    let specs = node_specs(&groups);
    let loads = crate::demo::prom::Loads::default();
    let signals = crate::demo::UtilizationPath::start(&sandbox, &loads, false, stop.clone()).await?;
    let tenants = vec!["acme".to_string(), "globex".to_string(), "initech".to_string()];
    setup(&api, &groups, &tenants, &config, &signals.url).await?;

    // The watchers subscribe (their own client, their own watches) before the controller starts.
    let watch_client = sandbox.client().await.map_err(crate::demo::DemoError::from)?;
    let (points_tx, points_rx) = mpsc::unbounded_channel();
    let watcher = watcher::Watcher::start(feed::remote(watch_client.clone()).await?, points_tx.clone());
    let clock = SimClock::new(1.0, jiff::Timestamp::now());
    let checker = summary::Checker::start(feed::remote(watch_client).await?, clock, 2.5, summary::RACE_LIMIT);

    let controller = child::Controller::new(&kubeconfig, config.controller_log.clone())?;
    controller.start().await?;
    let actors = start_actors(&sandbox, &api, clock, &loads, &stop).await?;
    let perturbers = Perturbers::start(&config, &sandbox, &api, &controller, &specs, points_rx);
    let cycle_config = cycle_config(&config, &tenants, &groups[0].name);
    let counts = cycles::run(api.as_manager("chaos-tenant"), cycle_config, points_tx, stop.clone()).await;

    // Calm: no more perturbations; the nodes all registered, the pool in Enforce, a controller running.
    let tally = perturbers.stop(&sandbox, &api).await;
    calm(&api, &specs, &controller).await?;

    let settle = Duration::from_secs(config.notice_seconds.max(0) as u64 + 60);
    let (end, pool_before_delete) = wind_down(&api, &tenants, settle).await;

    let _ = stop_tx.send(true);
    let _ = controller.kill().await;
    for t in actors {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let record = watcher.stop().await;
    let summary = checker.finish(&api, started.elapsed(), "chaos cycles").await;
    let report = {
        let mut record = record.lock().expect("chaos record");
        watcher::finish(&mut record, &pool_before_delete);
        report::build(report::Parts {
            config: &config,
            record: &record,
            summary: &summary,
            counts,
            kills: tally.kills,
            faults_fired: tally.faults_fired,
            nodes_deleted: tally.nodes_deleted,
            nodes_not_ready: tally.nodes_not_ready,
            mode_flips: tally.mode_flips,
            controller_starts: controller.starts.load(std::sync::atomic::Ordering::Relaxed),
            end,
            wall: started.elapsed(),
        })
    };
    signals.publish.abort();
    if let Some(task) = signals.direct {
        task.abort();
    }
    sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// Nodes: one per cycle at once and no spare, so that internal demand mostly has to take a node back from a
/// lease, through notice.
fn node_groups(config: &ChaosConfig) -> Vec<NodeGroup> {
    vec![NodeGroup {
        name: "gpu".into(),
        count: config.parallel,
        gpus_per_node: config.gpus_per_node,
        model: crate::demo::nodes::DEFAULT_MODELS[0].into(),
    }]
}

/// The tenants' lease cycles the run asks for, on the nodes of `group`.
fn cycle_config(config: &ChaosConfig, tenants: &[String], group: &str) -> cycles::CycleConfig {
    cycles::CycleConfig {
        cycles: config.cycles,
        slots: config.parallel,
        tenants: tenants.to_vec(),
        group: group.to_string(),
        gpus: config.gpus_per_node,
        notice_seconds: config.notice_seconds,
        churn: config.perturbations.contains(&Perturbation::LeaseChurn),
        seed: config.seed,
    }
}

/// After the perturbations: every node registered again, the pool in Enforce, and a controller running.
async fn calm(
    api: &DemoApi,
    specs: &[crate::demo::nodes::NodeSpec],
    controller: &child::Controller,
) -> Result<(), ChaosError> {
    for spec in specs {
        perturb::register(api, spec).await;
    }
    perturb::set_mode(api, "Enforce").await;
    if controller.exited().await.is_some() {
        let _ = controller.kill().await;
        controller.start().await?;
    }
    Ok(())
}

/// A sandbox whose nodes' kubelets are the run's own, and its kubeconfig written for the controller.
async fn start_sandbox(kubeconfig: &std::path::Path) -> Result<SandboxHandle, ChaosError> {
    let sandbox = Sandbox::start(SandboxConfig {
        external_kubelet: true,
        ..SandboxConfig::default()
    })
    .await
    .map_err(crate::demo::DemoError::from)?;
    sandbox
        .write_kubeconfig(kubeconfig)
        .map_err(crate::demo::DemoError::from)?;
    Ok(sandbox)
}

/// The perturbations running during the cycles, each a task until told to stop (API faults run in the
/// sandbox itself).
struct Perturbers {
    stop: watch::Sender<bool>,
    killer: tokio::task::JoinHandle<child::Kills>,
    node_churn: Option<tokio::task::JoinHandle<u64>>,
    not_ready: Option<tokio::task::JoinHandle<u64>>,
    flips: Option<tokio::task::JoinHandle<u64>>,
}

/// What the perturbations did.
struct Tally {
    kills: child::Kills,
    faults_fired: u64,
    nodes_deleted: u64,
    nodes_not_ready: u64,
    mode_flips: u64,
}

impl Perturbers {
    /// Starts the perturbations the run asks for; the killer always runs, and kills only if asked to.
    fn start(
        config: &ChaosConfig,
        sandbox: &SandboxHandle,
        api: &DemoApi,
        controller: &std::sync::Arc<child::Controller>,
        specs: &[crate::demo::nodes::NodeSpec],
        points: mpsc::UnboundedReceiver<KillPoint>,
    ) -> Self {
        let on = |p| config.perturbations.contains(&p);
        let (stop, perturb_stop) = watch::channel(false);
        let killer = tokio::spawn(child::killer(
            controller.clone(),
            points,
            on(Perturbation::Kills),
            config.seed,
            perturb_stop.clone(),
        ));
        if on(Perturbation::Faults) {
            sandbox.set_faults(perturb::fault_rules(config.seed));
        }
        let node_churn = on(Perturbation::NodeDelete).then(|| {
            tokio::spawn(perturb::node_churn(
                api.as_manager("chaos-kubelet"),
                specs.to_vec(),
                config.seed,
                perturb_stop.clone(),
            ))
        });
        let not_ready = on(Perturbation::NodeNotReady).then(|| {
            tokio::spawn(perturb::not_ready(
                api.as_manager("chaos-kubelet"),
                config.seed,
                perturb_stop.clone(),
            ))
        });
        let flips = on(Perturbation::ModeFlips).then(|| {
            tokio::spawn(perturb::mode_flips(
                api.as_manager("chaos-admin"),
                config.notice_seconds,
                config.seed,
                perturb_stop.clone(),
            ))
        });
        Perturbers {
            stop,
            killer,
            node_churn,
            not_ready,
            flips,
        }
    }

    /// Stops every perturbation, brings the kubelets back up, and counts what was done.
    async fn stop(self, sandbox: &SandboxHandle, api: &DemoApi) -> Tally {
        let _ = self.stop.send(true);
        let kills = self.killer.await.unwrap_or_default();
        let faults_fired: u64 = sandbox.faults_fired().iter().sum();
        sandbox.set_faults(Default::default());
        let nodes_deleted = match self.node_churn {
            Some(t) => t.await.unwrap_or(0),
            None => 0,
        };
        let nodes_not_ready = match self.not_ready {
            Some(t) => t.await.unwrap_or(0),
            None => 0,
        };
        perturb::all_kubelets_up(api).await;
        let mode_flips = match self.flips {
            Some(t) => t.await.unwrap_or(0),
            None => 0,
        };
        Tally {
            kills,
            faults_fired,
            nodes_deleted,
            nodes_not_ready,
            mode_flips,
        }
    }
}

/// The end of the run: the leases drained, then the pool deleted. Answers what was found wrong (nodes left
/// marked, tenant pods left, a pool that would not go) and the pool's status before its deletion.
async fn wind_down(api: &DemoApi, tenants: &[String], settle: Duration) -> (Vec<watcher::Violation>, Value) {
    let mut end = Vec::new();
    drain_leases(api, tenants, settle).await;
    end.extend(marked_nodes(api, false).await);
    end.extend(tenant_pods_left(api, tenants).await);
    let pool_before_delete = api
        .get("sublet.dev/v1alpha1", "tenantpools", None, POOL)
        .await
        .map(|p| p["status"].clone())
        .unwrap_or(Value::Null);
    let _ = api
        .delete("sublet.dev/v1alpha1", "tenantpools", None, POOL, &DeleteOpts::default())
        .await;
    let deadline = Instant::now() + settle;
    while Instant::now() < deadline && api.get("sublet.dev/v1alpha1", "tenantpools", None, POOL).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if api.get("sublet.dev/v1alpha1", "tenantpools", None, POOL).await.is_ok() {
        end.push(watcher::Violation {
            check: "pool deletion completes".into(),
            detail: format!("the pool was still there {} s after its deletion", settle.as_secs()),
            objects: Value::Null,
        });
    }
    end.extend(marked_nodes(api, true).await);
    (end, pool_before_delete)
}

/// CRDs, namespaces, nodes and the pool (Enforce, no reserve, the run's idle window and notice).
async fn setup(
    api: &DemoApi,
    groups: &[NodeGroup],
    tenants: &[String],
    config: &ChaosConfig,
    prometheus_url: &str,
) -> Result<(), ChaosError> {
    let DemoApi::Local(local) = api else {
        return Err(ChaosError::Setup("the chaos run needs its own sandbox".into()));
    };
    let fail = |e: sublet_sandbox::ApiError| ChaosError::Setup(format!("{e:?}"));
    for crd in crate::crd::all() {
        let value = serde_json::to_value(&crd).map_err(|e| ChaosError::Setup(e.to_string()))?;
        local
            .create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, value)
            .map_err(fail)?;
    }
    local
        .create(
            "v1",
            "namespaces",
            None,
            json!({"metadata": {"name": INTERNAL_NAMESPACE}}),
        )
        .map_err(fail)?;
    for t in tenants {
        local
            .create(
                "v1",
                "namespaces",
                None,
                json!({"metadata": {"name": t, "labels": {crate::api::keys::TENANT_NAMESPACE_LABEL: "true"}}}),
            )
            .map_err(fail)?;
    }
    crate::demo::nodes::create_nodes(api, groups).await?;
    let spec = json!({
        "mode": "Enforce",
        "nodeSelector": {"matchExpressions": [{"key": GROUP_LABEL, "operator": "Exists"}]},
        "nodeGroupLabel": GROUP_LABEL,
        "idle": {"forSeconds": config.idle_seconds},
        "reserve": {"percent": 0},
        "reclaim": {"noticeSeconds": config.notice_seconds, "cooldownSeconds": 1},
        "pricing": {"defaultPerGpuHour": 2.5, "currency": "USD"},
        "utilization": {"prometheusUrl": prometheus_url, "staleSeconds": 10},
    });
    let pool = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool",
        "metadata": {"name": POOL}, "spec": spec});
    local
        .create("sublet.dev/v1alpha1", "tenantpools", None, pool)
        .map_err(fail)?;
    Ok(())
}

/// Node heartbeats, and the demo's scheduler and kubelet (pods run, checkpoint on notice, finish).
async fn start_actors(
    sandbox: &sublet_sandbox::SandboxHandle,
    api: &DemoApi,
    clock: SimClock,
    loads: &crate::demo::prom::Loads,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ChaosError> {
    let heartbeats = crate::demo::kubelet::KubeletConfig {
        // A node whose kubelet the run has stopped (perturb::not_ready) gets no heartbeat.
        node_selector: format!("{GROUP_LABEL},!{}", perturb::KUBELET_DOWN_LABEL),
        period: Duration::from_secs(1),
        start_pods: false,
        ..crate::demo::kubelet::KubeletConfig::default()
    };
    let client = sandbox.client().await.map_err(crate::demo::DemoError::from)?;
    Ok(vec![
        tokio::spawn(crate::demo::kubelet::run(client, heartbeats, stop.clone())),
        tokio::spawn(crate::demo::nodes::run(
            api.as_manager("chaos-kubelet"),
            clock,
            loads.clone(),
            stop.clone(),
        )),
    ])
}

/// Deletes every lease left and waits for them to be gone.
async fn drain_leases(api: &DemoApi, tenants: &[String], limit: Duration) {
    const API: &str = "sublet.dev/v1alpha1";
    let deadline = Instant::now() + limit;
    for ns in tenants {
        for lease in api.list(API, "gpuleases", Some(ns), "", "").await.unwrap_or_default() {
            if let Some(name) = lease["metadata"]["name"].as_str() {
                let _ = api
                    .delete(API, "gpuleases", Some(ns), name, &DeleteOpts::default())
                    .await;
            }
        }
    }
    while Instant::now() < deadline {
        let mut left = 0;
        for ns in tenants {
            left += api
                .list(API, "gpuleases", Some(ns), "", "")
                .await
                .map_or(1, |l| l.len());
        }
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Unfinished tenant pods still on a node once every lease has ended: each should have been evicted at its
/// deadline (or checkpointed and finished before), or at once from a node its lease no longer held. A pod
/// never scheduled (its lease lost its node before the pod was placed) holds nothing and waits in the queue.
async fn tenant_pods_left(api: &DemoApi, tenants: &[String]) -> Vec<watcher::Violation> {
    let mut out = Vec::new();
    for ns in tenants {
        for pod in api.list("v1", "pods", Some(ns), "", "").await.unwrap_or_default() {
            let placed = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
            if !placed || crate::demo::nodes::finished(&pod) || pod["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            out.push(watcher::Violation {
                check: "no tenant pod outlives its leases".into(),
                detail: format!("tenant pod {ns}/{name} still runs after every lease ended"),
                objects: json!({"pod": format!("{ns}/{name}"), "node": pod["spec"]["nodeName"],
                    "annotations": pod["metadata"]["annotations"]}),
            });
        }
    }
    out
}

/// Nodes that still carry lease marks (or, once the pool is gone, any sublet mark).
async fn marked_nodes(api: &DemoApi, any: bool) -> Vec<watcher::Violation> {
    let mut out = Vec::new();
    for node in api.list("v1", "nodes", None, GROUP_LABEL, "").await.unwrap_or_default() {
        let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let labels = node["metadata"]["labels"].as_object().cloned().unwrap_or_default();
        let taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
        let marked = if any {
            labels.keys().any(|k| k.starts_with("sublet.dev/"))
                || taints
                    .iter()
                    .any(|t| t["key"].as_str().is_some_and(|k| k.starts_with("sublet.dev/")))
        } else {
            labels.contains_key(LEASE_LABEL)
                || labels.get(STATE_LABEL).is_some_and(|s| s != "lent")
                || taints
                    .iter()
                    .any(|t| t["key"] == LEASE_TAINT || t["key"] == RECLAIMING_TAINT)
        };
        if marked {
            let (check, when) = if any {
                ("no node left marked after the pool's deletion", "the pool was deleted")
            } else {
                ("no node left leased after every lease ended", "every lease ended")
            };
            out.push(watcher::Violation {
                check: check.into(),
                detail: format!("node {name} still carries sublet's marks after {when}"),
                objects: json!({"node": name, "labels": labels, "taints": taints}),
            });
        }
    }
    out
}
