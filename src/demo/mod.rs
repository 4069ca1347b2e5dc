//! `sublet demo`: the real controller against the sandbox API, with a simulated GPU cluster, internal work
//! replayed from a trace (or a synthetic day) and tenants that lease nodes, all in one process. With
//! `--cluster KUBECONFIG` the same parts run against an existing API server instead (a real control plane
//! such as `scripts/control-plane`'s), where its kube-scheduler places the pods.
//!
//! ```text
//!   workload.rs  demand curve (trace / synthetic day) ──▶ internal pods (ml namespace) ─┐
//!   tenants.rs   GpuLeases ─▶ wait Bound ─▶ pods with the lease's selector/toleration ─┼─▶ api.rs ─▶ sandbox
//!   cluster.rs   scheduler (sandbox only) + kubelet (Running, Succeeded, checkpoint) ──┘   (or HTTP)  │
//!   kubelet.rs   node heartbeats over HTTP: kube-node-lease Leases, Ready condition ──────────────────┤
//!   controller   sublet::controller::run over HTTP, as `sublet run` would ◀────────────────────────┤
//!   summary.rs   every change (feed.rs) ─▶ invariant checks (rules 1–3), counters, GPU-hours ◀─────┘
//!   view.rs      terminal live view, or a plain line log when stdout is not a terminal
//! ```
//! On an existing cluster the demo creates its nodes (labelled `demo.sublet.dev/group`), its namespaces and
//! its pool, refuses to start if any of them exist, and deletes them when it ends (sublet's CRDs stay).
//! Time: the controller runs on the real clock. The workload runs on a simulated clock that moves `speed`
//! times faster (pod durations, arrivals, trace minutes, checkpoint times); the demo pool gets short real-time
//! notice, idle window and cool-down so that a simulated day plays out in well under a minute.

pub mod api;
pub mod feed;
pub mod kubelet;
pub mod nodes;
pub mod prom;
pub mod summary;
pub mod tenants;
pub mod trace;
pub mod view;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use api::DemoApi;
pub use nodes::{NodeGroup, NodeSpec};
use sublet_sandbox::{DeleteOpts, PatchKind, Sandbox, SandboxConfig, SandboxHandle};
pub use summary::Summary;

/// The namespace internal work runs in.
pub const INTERNAL_NAMESPACE: &str = "ml";
/// The demo's pool.
pub const POOL: &str = "demo";
/// The node label that groups nodes for internal demand (the pool's `nodeGroupLabel`).
pub const GROUP_LABEL: &str = "demo.sublet.dev/group";
/// Pod annotation: how long the pod's work runs once started, in simulated seconds.
pub const RUN_ANNOTATION: &str = "demo.sublet.dev/run-seconds";
/// Pod annotation: how long the pod takes to checkpoint and exit after a reclaim notice, in simulated
/// seconds. A pod without it ignores notices and is evicted at the deadline.
pub const CHECKPOINT_ANNOTATION: &str = "demo.sublet.dev/checkpoint-seconds";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
pub const MODEL_LABEL: &str = "nvidia.com/gpu.product";

/// Why the demo cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Sandbox(#[from] sublet_sandbox::SandboxError),
    #[error("sandbox API: {0}")]
    Api(String),
    #[error("invalid demo setup: {0}")]
    Setup(String),
    #[error("cannot read {path}: {message}")]
    Input { path: String, message: String },
}

impl From<sublet_sandbox::ApiError> for DemoError {
    fn from(e: sublet_sandbox::ApiError) -> Self {
        DemoError::Api(format!("{e:?}"))
    }
}

impl From<api::CallError> for DemoError {
    fn from(e: api::CallError) -> Self {
        DemoError::Api(e.to_string())
    }
}

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub nodes: Vec<NodeGroup>,
    /// Internal demand; `None` for the built-in synthetic day.
    pub trace: Option<PathBuf>,
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    /// Wall-clock run time.
    pub duration: Duration,
    pub tenants: usize,
    pub seed: u64,
    /// Where the kubeconfig for kubectl is written (with a sandbox of the demo's own).
    pub kubeconfig: PathBuf,
    /// Runs against the API server of this kubeconfig instead of a sandbox of the demo's own.
    pub cluster: Option<PathBuf>,
    pub listen: std::net::SocketAddr,
    /// Pool timing, in real seconds.
    pub notice_seconds: i64,
    pub idle_seconds: i64,
    pub cooldown_seconds: i64,
    pub price_per_gpu_hour: f64,
    /// Live view on a terminal; plain log lines otherwise.
    pub live_view: bool,
    /// Use an installed Prometheus to scrape the exporter (else the exporter is read directly).
    pub prometheus: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            nodes: nodes::default_groups(64, 8),
            trace: None,
            speed: 2160.0,
            duration: Duration::from_secs(40),
            tenants: 3,
            seed: 1,
            kubeconfig: PathBuf::from("sublet-demo.kubeconfig"),
            cluster: None,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            notice_seconds: 3,
            idle_seconds: 2,
            cooldown_seconds: 3,
            price_per_gpu_hour: 2.5,
            live_view: false,
            prometheus: true,
        }
    }
}

/// The simulated clock: `speed` simulated seconds per wall second, from `start`.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    pub wall_start: Instant,
    pub sim_start: Timestamp,
    pub speed: f64,
}

impl SimClock {
    pub fn new(speed: f64, sim_start: Timestamp) -> Self {
        Self {
            wall_start: Instant::now(),
            sim_start,
            speed,
        }
    }
    /// Simulated seconds since the start.
    pub fn sim_elapsed(&self) -> f64 {
        self.wall_start.elapsed().as_secs_f64() * self.speed
    }
    /// The wall time a simulated span takes.
    pub fn wall(&self, sim_seconds: f64) -> Duration {
        Duration::from_secs_f64((sim_seconds / self.speed).max(0.0))
    }
    /// The simulated time of day, `HH:MM`, with the day number from 1.
    pub fn label(&self) -> String {
        let secs = self.sim_elapsed();
        let t = self
            .sim_start
            .checked_add(jiff::SignedDuration::from_secs(secs as i64))
            .unwrap_or(self.sim_start);
        let z = t.to_zoned(jiff::tz::TimeZone::UTC);
        format!("day {} {:02}:{:02}", 1 + (secs / 86_400.0) as u64, z.hour(), z.minute())
    }
}

/// A small deterministic generator (xorshift64*), so that a seed repeats a run's choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// The pool the demo runs: Enforce, short real-time notice, idle window and cool-down.
pub fn pool_spec(config: &DemoConfig, prometheus_url: &str) -> serde_json::Value {
    let mut prices = serde_json::Map::new();
    for g in &config.nodes {
        prices.insert(
            g.model.clone(),
            json!(config.price_per_gpu_hour * model_factor(&g.model)),
        );
    }
    json!({
        "mode": "Enforce",
        "nodeSelector": {"matchExpressions": [{"key": GROUP_LABEL, "operator": "Exists"}]},
        "nodeGroupLabel": GROUP_LABEL,
        "idle": {"forSeconds": config.idle_seconds},
        "reserve": {"percent": 10},
        "reclaim": {"noticeSeconds": config.notice_seconds, "cooldownSeconds": config.cooldown_seconds},
        "pricing": {"perGpuHour": prices, "defaultPerGpuHour": config.price_per_gpu_hour, "currency": "USD"},
        "utilization": {"prometheusUrl": prometheus_url, "staleSeconds": 10},
        // Every node a tenant leaves is scrubbed before its next holder: a second of simulated work on the node.
        "scrub": {
            "timeoutSeconds": 60,
            "template": {
                "metadata": {"annotations": {kubelet::RUN_SECONDS: "1"}},
                "spec": {
                    "containers": [{"name": "scrub", "image": "registry.example.com/gpu-node-scrub:1",
                                    "command": ["sh", "-c", "crictl rmi --prune && rm -rf /scratch/* && nvidia-smi --gpu-reset"]}],
                    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists"}],
                },
            },
        },
    })
}

/// Newer models rent for more.
fn model_factor(model: &str) -> f64 {
    if model.contains("H100") || model.contains("H200") {
        1.0
    } else {
        0.6
    }
}

/// Runs the whole demo until `duration` passes or `shutdown` resolves, and answers the summary.
pub async fn run(
    config: DemoConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Summary, DemoError> {
    let (demand, groups) = demand_and_groups(&config)?;
    let target = Target::start(&config).await?;
    let api = target.api.clone();
    let clock = SimClock::new(config.speed, demand.start);
    let (stop_tx, stop) = watch::channel(false);

    // The checker subscribes before anything is written, so it sees every change.
    let checker = summary::Checker::start(
        target.feed().await?,
        clock,
        config.price_per_gpu_hour,
        race_limit(&target),
    );
    let loads = prom::Loads::default();
    let signals = UtilizationPath::start(&target.inventory, &loads, config.prometheus, stop.clone()).await?;
    if let Err(e) = setup(&target, &config, &groups, &signals.url).await {
        target.teardown(&config).await;
        return Err(e);
    }

    let client = target.client.clone();
    let metrics_addr = metrics_port()?;
    let controller = start_controller(client.clone(), metrics_addr, stop.clone());
    intro(&target, &config, &groups, &demand, &signals, metrics_addr);
    let mut tasks = vec![signals.publish];
    tasks.extend(start_actors(&config, &api, client, demand, clock, &loads, &stop));
    let loads_at_end = loads.clone();
    tasks.push(tokio::spawn(view::run(
        checker.state(),
        loads,
        clock,
        config.live_view,
        stop.clone(),
    )));

    let started = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(config.duration) => {}
        _ = shutdown => {}
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    let view_state = checker.state();
    let wall = started.elapsed();
    let mut summary = checker.finish(&api, wall, &demand_name(&config)).await;
    last_frame(&view_state, &loads_at_end, &clock, wall, config.live_view);
    summary.signals = signals.description;
    if let Some(task) = signals.direct {
        task.abort();
    }
    drop(signals.prometheus);
    target.teardown(&config).await;
    Ok(summary)
}

/// How long a node lent just as an internal pod was bound to it may stay lent before the summary counts it
/// broken: longer against a real API server, whose watches and admission take longer.
fn race_limit(target: &Target) -> Duration {
    if target.api.is_remote() {
        summary::REAL_RACE_LIMIT
    } else {
        summary::RACE_LIMIT
    }
}

/// A free loopback port for the controller's /metrics, picked before the controller starts so that the intro
/// can name it.
fn metrics_port() -> Result<std::net::SocketAddr, DemoError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| DemoError::Setup(format!("no free port for the controller's metrics: {e}")))
}

/// Prints what the demo runs on, and where to look at it.
fn intro(
    target: &Target,
    config: &DemoConfig,
    groups: &[NodeGroup],
    demand: &workload::DemandCurve,
    signals: &UtilizationPath,
    metrics_addr: std::net::SocketAddr,
) {
    view::intro(&view::Intro {
        url: target.url.clone(),
        kubeconfig: target.kubeconfig.clone(),
        nodes: groups.iter().map(|g| g.count).sum(),
        gpus: groups.iter().map(|g| g.count * g.gpus_per_node).sum(),
        source: demand.name.clone(),
        speed: config.speed,
        duration: config.duration,
        signals: signals.description.clone(),
        metrics: format!("http://{metrics_addr}/metrics"),
    });
}

/// Prints the last frame, from the state the summary was made of.
fn last_frame(
    state: &std::sync::Mutex<summary::State>,
    loads: &prom::Loads,
    clock: &SimClock,
    wall: Duration,
    live: bool,
) {
    let mut s = state.lock().expect("demo state");
    let text = view::frame(&mut s, view::mean_load(loads), clock, wall.as_secs_f64(), live);
    print!("{text}");
}

/// The demand curve to replay and the node groups it runs on: a trace brings its own groups unless the
/// command line named nodes.
fn demand_and_groups(config: &DemoConfig) -> Result<(workload::DemandCurve, Vec<NodeGroup>), DemoError> {
    if !(config.speed.is_finite() && config.speed >= 1.0) {
        return Err(DemoError::Setup(format!(
            "--speed must be at least 1, got {}",
            config.speed
        )));
    }
    let demand = match &config.trace {
        Some(path) => workload::DemandCurve::from_trace(path, config.speed * config.duration.as_secs_f64())?,
        None => workload::DemandCurve::synthetic_day(&config.nodes),
    };
    let groups = if config.trace.is_some() {
        demand.groups.clone()
    } else {
        config.nodes.clone()
    };
    if groups.is_empty() || groups.iter().all(|g| g.count == 0) {
        return Err(DemoError::Setup("the demo cluster has no nodes".into()));
    }
    Ok((demand, groups))
}

/// Where the controller reads GPU utilization: the DCGM exporter publishes what the kubelet computes from the
/// pods' load; Prometheus scrapes it when installed, otherwise the exporter's values are answered directly.
pub(crate) struct UtilizationPath {
    /// The Prometheus URL the pool names.
    pub(crate) url: String,
    /// The path in words, for the intro and the summary.
    pub(crate) description: String,
    /// Copies the loads into the exporter until the demo stops.
    pub(crate) publish: tokio::task::JoinHandle<()>,
    pub(crate) prometheus: Option<prom::Prometheus>,
    /// The direct query path, when no Prometheus runs.
    pub(crate) direct: Option<tokio::task::JoinHandle<()>>,
}

impl UtilizationPath {
    pub(crate) async fn start(
        sandbox: &sublet_sandbox::SandboxHandle,
        loads: &prom::Loads,
        use_prometheus: bool,
        stop: watch::Receiver<bool>,
    ) -> Result<UtilizationPath, DemoError> {
        let exporter = Arc::new(
            sandbox
                .start_dcgm_exporter(sublet_sandbox::dcgm::DcgmConfig::default())
                .await?,
        );
        let publish = {
            let (exporter, loads, mut stop) = (exporter.clone(), loads.clone(), stop);
            tokio::spawn(async move {
                loop {
                    let values: Vec<(String, f64)> = loads.lock().expect("loads").clone().into_iter().collect();
                    for (node, util) in values {
                        exporter.set_node_utilization(&node, util);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            })
        };
        let prometheus = match (use_prometheus, prom::find_prometheus()) {
            (true, Some(binary)) => prom::start_prometheus(binary, exporter.address()).await,
            _ => None,
        };
        if let Some(p) = &prometheus {
            let description = format!(
                "GPU utilization from Prometheus ({}) scraping the demo's DCGM exporter ({}) every second",
                p.binary.display(),
                exporter.metrics_url()
            );
            let url = p.url.clone();
            return Ok(UtilizationPath {
                url,
                description,
                publish,
                prometheus,
                direct: None,
            });
        }
        let (addr, task) = prom::serve("127.0.0.1:0".parse().expect("valid address"), loads.clone())
            .await
            .map_err(|e| DemoError::Setup(format!("cannot serve the query path: {e}")))?;
        Ok(UtilizationPath {
            url: format!("http://{addr}"),
            description: format!(
                "GPU utilization from the demo's DCGM exporter ({}) read directly through a Prometheus-compatible \
                 query path (no Prometheus installed, or --no-prometheus)",
                exporter.metrics_url()
            ),
            publish,
            prometheus: None,
            direct: Some(task),
        })
    }
}

/// sublet's controller over HTTP, as `sublet run` would run it, with the demo's short tick and ledger interval.
fn start_controller(
    client: kube::Client,
    metrics_addr: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let controller_config = crate::controller::Config {
        metrics_addr,
        leader_election: false,
        identity: "sublet-demo".into(),
        tick: Duration::from_millis(200),
        ledger_interval: Duration::from_secs(1),
        ..crate::controller::Config::default()
    };
    let mut controller_stop = stop;
    tokio::spawn(crate::controller::run(client, controller_config, async move {
        let _ = controller_stop.wait_for(|s| *s).await;
    }))
}

/// The simulated actors: node heartbeats, the nodes' scheduler and kubelet, the internal workload and the
/// tenants.
fn start_actors(
    config: &DemoConfig,
    api: &DemoApi,
    client: kube::Client,
    demand: workload::DemandCurve,
    clock: SimClock,
    loads: &prom::Loads,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // The demo's nodes only: on an existing cluster other nodes have kubelets of their own.
    let heartbeats = kubelet::KubeletConfig {
        node_selector: GROUP_LABEL.into(),
        period: Duration::from_secs(1),
        start_pods: false,
        ..kubelet::KubeletConfig::default()
    };
    let mut tasks = vec![
        tokio::spawn(kubelet::run(client, heartbeats, stop.clone())),
        tokio::spawn(nodes::run(
            api.as_manager("demo-kubelet"),
            clock,
            loads.clone(),
            stop.clone(),
        )),
        tokio::spawn(workload::run(
            api.as_manager("demo-workload"),
            demand,
            clock,
            config.seed,
            stop.clone(),
        )),
    ];
    for i in 0..config.tenants {
        let tenant = tenants::Tenant::new(i, config.seed);
        tasks.push(tokio::spawn(tenants::run(
            api.as_manager("demo-tenant"),
            tenant,
            clock,
            stop.clone(),
        )));
    }
    tasks
}

fn demand_name(config: &DemoConfig) -> String {
    match &config.trace {
        Some(p) => p.display().to_string(),
        None => "synthetic day".into(),
    }
}

/// Where the demo runs: a sandbox of its own, or an existing cluster.
struct Target {
    api: DemoApi,
    client: kube::Client,
    url: String,
    /// The kubeconfig kubectl reaches the demo's API server with.
    kubeconfig: PathBuf,
    /// The demo's sandbox; with `--cluster`, a private one that only holds copies of the demo's nodes, the
    /// DCGM exporter's inventory.
    inventory: SandboxHandle,
}

impl Target {
    async fn start(config: &DemoConfig) -> Result<Target, DemoError> {
        let Some(path) = &config.cluster else {
            let sandbox = Sandbox::start(SandboxConfig {
                listen: config.listen,
                external_kubelet: true,
                ..SandboxConfig::default()
            })
            .await?;
            sandbox.write_kubeconfig(&config.kubeconfig)?;
            return Ok(Target {
                api: DemoApi::Local(sandbox.local().as_manager("sublet-demo")),
                client: sandbox.client().await?,
                url: sandbox.url(),
                kubeconfig: config.kubeconfig.clone(),
                inventory: sandbox,
            });
        };
        let input = |message: String| DemoError::Input {
            path: path.display().to_string(),
            message,
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| input(e.to_string()))?;
        let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| input(e.to_string()))?;
        let url = kube_config.cluster_url.to_string();
        let client = kube::Client::try_from(kube_config).map_err(|e| input(e.to_string()))?;
        let api = DemoApi::Remote {
            client: client.clone(),
            manager: "sublet-demo".into(),
        };
        api.get("v1", "namespaces", None, "default")
            .await
            .map_err(|e| DemoError::Setup(format!("cannot reach the cluster at {url}: {e}")))?;
        for ns in namespaces(config) {
            if api.get("v1", "namespaces", None, &ns).await.is_ok() {
                return Err(DemoError::Setup(format!(
                    "namespace {ns} already exists on {url}: the demo creates its own namespaces, nodes and pool \
                     there and deletes them at the end; remove it or use a fresh cluster"
                )));
            }
        }
        let demo_nodes = api.list("v1", "nodes", None, GROUP_LABEL, "").await?;
        if let Some(n) = demo_nodes.first() {
            return Err(DemoError::Setup(format!(
                "node {} with the demo's label {GROUP_LABEL} already exists on {url} (an earlier demo that did not \
                 end?); remove the demo's nodes first",
                n["metadata"]["name"].as_str().unwrap_or("?")
            )));
        }
        apply_crds(&api).await?;
        let inventory = Sandbox::start(SandboxConfig::default()).await?;
        Ok(Target {
            api,
            client,
            url,
            kubeconfig: path.clone(),
            inventory,
        })
    }

    /// The changes the checker reads: subscribed before the demo writes anything.
    async fn feed(&self) -> Result<feed::Feed, DemoError> {
        match &self.api {
            DemoApi::Local(local) => Ok(feed::local(local)),
            DemoApi::Remote { client, .. } => feed::remote(client.clone()).await,
        }
    }

    /// Stops the sandbox; on an existing cluster, deletes what the demo created there.
    async fn teardown(self, config: &DemoConfig) {
        if let DemoApi::Remote { .. } = &self.api
            && let Err(e) = remove_demo_objects(&self.api, config).await
        {
            eprintln!(
                "sublet demo: could not remove everything it created on {}: {e}",
                self.url
            );
        }
        self.inventory.shutdown().await;
    }
}

/// The internal namespace and the tenants'.
fn namespaces(config: &DemoConfig) -> Vec<String> {
    std::iter::once(INTERNAL_NAMESPACE.to_string())
        .chain((0..config.tenants).map(tenants::namespace))
        .collect()
}

/// Applies sublet's CRDs (server-side) and waits until the API server serves them.
async fn apply_crds(api: &DemoApi) -> Result<(), DemoError> {
    const CRDS: &str = "apiextensions.k8s.io/v1";
    for crd in crate::crd::all() {
        let value = serde_json::to_value(&crd).map_err(|e| DemoError::Api(e.to_string()))?;
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
        api.patch(
            CRDS,
            "customresourcedefinitions",
            None,
            &name,
            PatchKind::Apply { force: true },
            &value,
            None,
        )
        .await?;
        let mut established = false;
        for _ in 0..300 {
            let got = api.get(CRDS, "customresourcedefinitions", None, &name).await?;
            let conditions = got["status"]["conditions"].as_array().cloned().unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
            {
                established = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !established {
            return Err(DemoError::Setup(format!(
                "the CRD {name} was not established within 30 s"
            )));
        }
    }
    Ok(())
}

/// CRDs (on the sandbox), namespaces, nodes and the pool.
async fn setup(target: &Target, config: &DemoConfig, groups: &[NodeGroup], prom_url: &str) -> Result<(), DemoError> {
    let api = &target.api;
    if let DemoApi::Local(local) = api {
        for crd in crate::crd::all() {
            let value = serde_json::to_value(&crd).map_err(|e| DemoError::Api(e.to_string()))?;
            local.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, value)?;
        }
    } else {
        // The exporter's inventory: the same nodes.
        nodes::create_nodes(&target.inventory.local().into(), groups).await?;
    }
    api.create(
        "v1",
        "namespaces",
        None,
        json!({"metadata": {"name": INTERNAL_NAMESPACE}}),
    )
    .await?;
    for i in 0..config.tenants {
        let name = tenants::namespace(i);
        api.create(
            "v1",
            "namespaces",
            None,
            json!({"metadata": {"name": name, "labels": {crate::api::keys::TENANT_NAMESPACE_LABEL: "true"}}}),
        )
        .await?;
    }
    nodes::create_nodes(api, groups).await?;
    let pool = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool",
        "metadata": {"name": POOL}, "spec": pool_spec(config, prom_url)});
    // A freshly created CRD serves at once in the sandbox, but retry briefly in case it does not.
    let mut last = None;
    for _ in 0..50 {
        match api
            .create("sublet.dev/v1alpha1", "tenantpools", None, pool.clone())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last
        .map(DemoError::from)
        .unwrap_or_else(|| DemoError::Setup("pool".into())))
}

/// Deletes the demo's pool, leases, namespaces (their pods at once: nobody runs them any more) and nodes,
/// and waits until the namespaces are gone, so that the next demo can start.
async fn remove_demo_objects(api: &DemoApi, config: &DemoConfig) -> Result<(), DemoError> {
    const SUBLET: &str = "sublet.dev/v1alpha1";
    // The controller has stopped: nobody else removes sublet's finalizers.
    let unfinalize = json!({"metadata": {"finalizers": null}});
    let now = DeleteOpts {
        grace_period: Some(0),
        ..DeleteOpts::default()
    };
    let ignore_gone = |r: Result<Value, api::CallError>| match r {
        Err(e) if e.code != 404 => Err(DemoError::from(e)),
        _ => Ok(()),
    };
    ignore_gone(
        api.patch(SUBLET, "tenantpools", None, POOL, PatchKind::Merge, &unfinalize, None)
            .await,
    )?;
    ignore_gone(api.delete(SUBLET, "tenantpools", None, POOL, &now).await)?;
    let names = namespaces(config);
    for ns in &names {
        for lease in api
            .list(SUBLET, "gpuleases", Some(ns), "", "")
            .await
            .unwrap_or_default()
        {
            let name = lease["metadata"]["name"].as_str().unwrap_or_default();
            ignore_gone(
                api.patch(SUBLET, "gpuleases", Some(ns), name, PatchKind::Merge, &unfinalize, None)
                    .await,
            )?;
            ignore_gone(api.delete(SUBLET, "gpuleases", Some(ns), name, &now).await)?;
        }
        for pod in api.list("v1", "pods", Some(ns), "", "").await? {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            ignore_gone(api.delete("v1", "pods", Some(ns), name, &now).await)?;
        }
        ignore_gone(api.delete("v1", "namespaces", None, ns, &DeleteOpts::default()).await)?;
    }
    for node in api.list("v1", "nodes", None, GROUP_LABEL, "").await? {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        ignore_gone(api.delete("v1", "nodes", None, name, &DeleteOpts::default()).await)?;
    }
    for _ in 0..600 {
        let mut left = Vec::new();
        for ns in &names {
            if api.get("v1", "namespaces", None, ns).await.is_ok() {
                left.push(ns.as_str());
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(DemoError::Setup(
        "the demo's namespaces were still terminating after 60 s".into(),
    ))
}

/// Parses `40`, `40s`, `2m` or `1h` as a wall-clock span.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 40s, 2m or 1h"))?;
    let factor = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    let secs = value * factor;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An `Arc` shorthand for shared demo state.
pub type Shared<T> = Arc<std::sync::Mutex<T>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_duration("40").unwrap(), Duration::from_secs(40));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn rng_repeats_for_a_seed_and_stays_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.range(2.0, 5.0);
            assert_eq!(x, b.range(2.0, 5.0));
            assert!((2.0..5.0).contains(&x));
        }
    }
}
