//! What happened, from the API's watch events alone (never the controller's internals): counters, GPU-hours,
//! revenue, internal delay, the controller's last decisions, and the invariant checks of DESIGN.md rules 1–3.
//!
//! ```text
//!   feed.rs (the sandbox's events, or a real server's watches in order) ─▶ on_event: nodes, pods, leases,
//!                                                   pools, namespaces, events ─▶ State ─▶ view.rs
//!   every 100 ms ───────▶ sample: leased GPUs × dt (GPU-hours, revenue), pending internal pods (delay)
//!   finish() ───────────▶ Summary (JSON)
//! ```
//! Rules checked, each on the event that could break it:
//! 1. an internal pod that is running or bound is never deleted or evicted (the demo's own kubelet only
//!    removes finished pods and pods already being deleted), and a node is never lent while an internal,
//!    unfinished pod is bound to it;
//! 2. a node carries at most one lease taint, and a tenant pod runs only on a node whose lease is of the pod's
//!    namespace (checked when the pod starts running and whenever its node changes; a pod bound to a node
//!    that no longer matches its selector is refused by the kubelet, as a real kubelet's admission does);
//! 3. every eviction (deletion) of an unfinished tenant pod comes after the pod carried
//!    `sublet.dev/reclaim-deadline`, at or after that deadline.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use super::api::DemoApi;
use super::feed::{Change, Feed, Item};
use super::{GROUP_LABEL, MODEL_LABEL, SimClock, nodes};
use crate::api::keys::{DEADLINE_ANNOTATION, LEASE_LABEL, LEASE_TAINT, STATE_LABEL, TENANT_NAMESPACE_LABEL};
use sublet_sandbox::store::EventType;

#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub state: Option<String>,
    pub lease: Option<String>,
    pub group: String,
    pub gpus: u32,
    pub price: f64,
}

#[derive(Clone, Debug)]
pub struct PodInfo {
    pub tenant: bool,
    pub node: Option<String>,
    pub phase: String,
    pub deadline: Option<Timestamp>,
    pub deleting: bool,
    pub gpus: u32,
    pub group: Option<String>,
    /// Wall seconds pending, and of those, pending while a node of its group was out of internal use.
    pub pending: f64,
    pub delayed: f64,
    /// When the checker saw the pod bound.
    pub bound_at: Option<Instant>,
    /// A tenant pod whose node was deleted under it: the node that registers again under that name is not
    /// its lease's, and sublet must evict the pod from it at once, without notice (a breach).
    pub stranded: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// Nodes moved from internal use to lent.
    pub lends: u64,
    /// Nodes bound to a lease.
    pub binds: u64,
    /// Nodes put under reclaim notice.
    pub notices: u64,
    /// Nodes returned to internal use.
    pub returns: u64,
    /// Nodes a tenant left that went into Scrubbing (neither internal nor leased until the scrub completes).
    pub scrubs: u64,
    /// Scrubbing nodes that went on once their scrub completed.
    pub scrubbed: u64,
    /// GpuLeases that reached Bound.
    pub leases_bound: u64,
    /// Tenant pods that got the reclaim annotation.
    pub pods_noticed: u64,
    /// Tenant pods that saved their work and exited after a notice.
    pub checkpoints: u64,
    /// Unfinished tenant pods deleted by someone else than the tenant (sublet, at the deadline).
    pub evictions: u64,
    /// Of those, tenant pods evicted without notice from a node no lease of theirs held (breaches).
    pub breach_evictions: u64,
    /// Internal pods created and finished.
    pub internal_pods: u64,
    pub internal_finished: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub rule: u8,
    pub detail: String,
}

/// Everything the view shows and the summary reports.
#[derive(Default)]
pub struct State {
    pub nodes: BTreeMap<String, NodeInfo>,
    pub pods: HashMap<(String, String), PodInfo>,
    pub leases: BTreeMap<(String, String), String>,
    pub tenant_namespaces: HashSet<String>,
    pub pool_status: Value,
    /// The controller's events, newest last: `reason object: note`.
    pub decisions: VecDeque<String>,
    pub decisions_total: u64,
    /// Decisions the plain view has printed so far.
    pub decisions_printed: u64,
    pub counters: Counters,
    pub violations: Vec<Violation>,
    /// Simulated GPU-seconds on nodes bound to leases (leased or under notice), and their price.
    pub leased_gpu_seconds: f64,
    pub revenue: f64,
    /// Internal delay of pods that already left Pending.
    pub delay_done: Vec<f64>,
    pub missed_events: u64,
    /// Nodes lent while an internal pod was bound to them, not yet taken back: node → (when, pods).
    pub open_races: BTreeMap<String, (Instant, Vec<String>)>,
    /// Such lends the controller took back within the race limit, before any lease bound the node.
    pub lend_races: u64,
    /// Tenant pods already reported on a node of another lease (`ns/name@lease`), reported once.
    misplaced: HashSet<String>,
    /// Stranded tenant pods (see [`PodInfo::stranded`]) seen running on a node not leased to them, not yet
    /// evicted: pod → (when seen, node).
    pub open_breaches: BTreeMap<(String, String), (Instant, String)>,
    /// Seconds from each stranded pod's first sighting on a node not leased to it to its eviction.
    pub breach_seconds: Vec<f64>,
    /// How long a lend with an internal pod on the node may stay before it breaks rule 1.
    pub race_limit: Duration,
}

/// How long a node lent just as an internal pod was bound to it may stay lent before it counts as broken.
pub const RACE_LIMIT: Duration = Duration::from_secs(1);
/// The same on a real API server: the scheduler's binding, the controller's refused bind and its return each
/// go through the server's watches and admission, which on a busy two-core machine took over a second.
pub const REAL_RACE_LIMIT: Duration = Duration::from_secs(5);
/// How long a stranded tenant pod may run on a node not leased to it before it breaks rule 2: the pass the
/// node's registration starts, or a killed controller's restart and its caches' sync.
pub const BREACH_LIMIT: Duration = Duration::from_secs(10);

impl State {
    pub fn internal_pending(&self) -> (usize, u32) {
        let p = self
            .pods
            .values()
            .filter(|p| !p.tenant && p.node.is_none() && !p.deleting && p.phase == "Pending");
        p.fold((0, 0), |(n, g), p| (n + 1, g + p.gpus))
    }

    fn decide(&mut self, line: String) {
        self.decisions.push_back(line);
        self.decisions_total += 1;
        while self.decisions.len() > 50 {
            self.decisions.pop_front();
        }
    }

    fn violate(&mut self, rule: u8, detail: String) {
        tracing::error!(rule, %detail, "invariant broken");
        self.violations.push(Violation { rule, detail });
    }
}

/// A running checker.
pub struct Checker {
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    clock: SimClock,
}

fn time(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

impl Checker {
    /// Checks the changes `feed` delivers (see [`super::feed`]).
    /// A node lent while an internal pod was bound to it must be back within `race_limit`.
    pub fn start(mut feed: Feed, clock: SimClock, price: f64, race_limit: Duration) -> Checker {
        let state = Arc::new(Mutex::new(State {
            race_limit,
            ..State::default()
        }));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last = Instant::now();
            let mut closing = false;
            loop {
                tokio::select! {
                    item = feed.rx.recv() => match item {
                        Some(Item::Change(c)) => on_event(&mut shared.lock().expect("demo state"), &c, price),
                        Some(Item::Missed(n)) => shared.lock().expect("demo state").missed_events += n,
                        // Closed: everything up to the stop has been delivered.
                        None => return,
                    },
                    _ = tick.tick() => {
                        let dt = last.elapsed().as_secs_f64();
                        last = Instant::now();
                        sample(&mut shared.lock().expect("demo state"), dt, clock.speed);
                    }
                    _ = &mut stopped, if !closing => {
                        closing = true;
                        feed.close();
                    }
                }
            }
        });
        Checker {
            state,
            stop: Some(stop),
            task,
            clock,
        }
    }

    pub fn state(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }

    /// Stops checking and answers the summary.
    pub async fn finish(mut self, api: &DemoApi, wall: Duration, workload: &str) -> Summary {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
        let pool = api
            .get("sublet.dev/v1alpha1", "tenantpools", None, super::POOL)
            .await
            .map(|p| p["status"].clone())
            .unwrap_or(Value::Null);
        let mut s = self.state.lock().expect("demo state");
        let limit = s.race_limit;
        close_races(&mut s, limit);
        close_breaches(&mut s, BREACH_LIMIT);
        summarize(&s, &pool, wall, self.clock.speed, workload)
    }
}

fn sample(s: &mut State, dt: f64, speed: f64) {
    close_races(s, s.race_limit);
    close_breaches(s, BREACH_LIMIT);
    let (mut gpus, mut money) = (0.0, 0.0);
    let mut out_groups = HashSet::new();
    for n in s.nodes.values() {
        if matches!(n.state.as_deref(), Some("leased" | "reclaiming")) {
            gpus += f64::from(n.gpus);
            money += f64::from(n.gpus) * n.price;
        }
        if n.state.is_some() {
            out_groups.insert(n.group.clone());
        }
    }
    s.leased_gpu_seconds += gpus * dt * speed;
    s.revenue += money * dt * speed / 3600.0;
    for p in s.pods.values_mut() {
        if p.tenant || p.node.is_some() || p.deleting || p.phase != "Pending" {
            continue;
        }
        p.pending += dt;
        if p.group.as_ref().is_some_and(|g| out_groups.contains(g)) {
            p.delayed += dt;
        }
    }
}

/// Takes out of `open` the entries opened `limit` or longer ago.
fn overdue<K: Ord + Clone, V>(open: &mut BTreeMap<K, (Instant, V)>, limit: Duration) -> Vec<(K, V)> {
    let late: Vec<K> = open
        .iter()
        .filter(|(_, (at, _))| at.elapsed() >= limit)
        .map(|(k, _)| k.clone())
        .collect();
    late.into_iter()
        .filter_map(|k| open.remove(&k).map(|(_, v)| (k, v)))
        .collect()
}

/// Lends that stayed in place past `limit` with an internal pod on the node break rule 1.
fn close_races(s: &mut State, limit: Duration) {
    for (node, pods) in overdue(&mut s.open_races, limit) {
        s.violate(
            1,
            format!("node {node} was lent while internal pods ran on it, and stayed lent: {pods:?}"),
        );
    }
}

/// Stranded tenant pods left running on a node not leased to them past `limit` break rule 2.
fn close_breaches(s: &mut State, limit: Duration) {
    for ((namespace, name), node) in overdue(&mut s.open_breaches, limit) {
        s.violate(
            2,
            format!(
                "tenant pod {namespace}/{name} ran on node {node}, not leased to it, for over {} s without eviction",
                limit.as_secs()
            ),
        );
    }
}

fn label(obj: &Value, key: &str) -> Option<String> {
    obj["metadata"]["labels"][key].as_str().map(str::to_string)
}

fn on_event(s: &mut State, ev: &Change, price: f64) {
    let obj = &ev.obj;
    match ev.resource.as_str() {
        "namespaces" if label(obj, TENANT_NAMESPACE_LABEL).as_deref() == Some("true") => {
            s.tenant_namespaces.insert(ev.name.clone());
        }
        "nodes" => on_node(s, ev, obj, price),
        "pods" => on_pod(s, ev, obj),
        "gpuleases" => {
            let key = (ev.namespace.clone(), ev.name.clone());
            if matches!(ev.kind, EventType::Deleted) {
                s.leases.remove(&key);
                return;
            }
            let phase = obj["status"]["phase"].as_str().unwrap_or("Pending").to_string();
            let before = s.leases.insert(key, phase.clone());
            if phase == "Bound" && before.as_deref() != Some("Bound") && before.as_deref() != Some("Reclaiming") {
                s.counters.leases_bound += 1;
            }
        }
        "tenantpools" => s.pool_status = obj["status"].clone(),
        "events" => {
            if !matches!(ev.kind, EventType::Added) {
                return;
            }
            let reason = obj["reason"].as_str().unwrap_or("");
            let note = obj["note"].as_str().or(obj["message"].as_str()).unwrap_or("");
            let about = if obj["regarding"].is_object() {
                &obj["regarding"]
            } else {
                &obj["involvedObject"]
            };
            let what = match (about["namespace"].as_str(), about["name"].as_str()) {
                (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
                (_, Some(name)) => name.to_string(),
                _ => String::new(),
            };
            s.decide(format!("{reason} {what}: {note}"));
        }
        _ => {}
    }
}

fn on_node(s: &mut State, ev: &Change, obj: &Value, price: f64) {
    let name = ev.name.clone();
    if matches!(ev.kind, EventType::Deleted) {
        s.nodes.remove(&name);
        for p in s.pods.values_mut() {
            if p.tenant && p.node.as_deref() == Some(name.as_str()) && !p.deleting {
                p.stranded = true;
            }
        }
        return;
    }
    let model = label(obj, MODEL_LABEL).unwrap_or_default();
    let factor = if model.contains("H100") || model.contains("H200") {
        1.0
    } else {
        0.6
    };
    let new = NodeInfo {
        state: label(obj, STATE_LABEL),
        lease: label(obj, LEASE_LABEL),
        group: label(obj, GROUP_LABEL).unwrap_or_default(),
        gpus: obj["status"]["allocatable"][super::GPU_RESOURCE]
            .as_str()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0),
        price: price * factor,
    };
    let old = s.nodes.insert(name.clone(), new.clone()).unwrap_or_default();
    let lease_taints = obj["spec"]["taints"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["key"] == LEASE_TAINT).count())
        .unwrap_or(0);
    if lease_taints > 1 {
        s.violate(2, format!("node {name} carries {lease_taints} lease taints"));
    }
    if old.state != new.state {
        count_transition(s, &name, old.state.as_deref(), new.state.as_deref());
        let line = transition_line(&name, old.state.as_deref(), &new);
        if !line.is_empty() {
            s.decide(line);
        }
    }
    check_tenant_pods_on(s, &name);
}

/// Counts a node's move from state `old` to `new`, and opens or settles a lend race on it.
fn count_transition(s: &mut State, name: &str, old: Option<&str>, new: Option<&str>) {
    match new {
        Some("lent") if old.is_none() => {
            s.counters.lends += 1;
            let busy: Vec<String> = s
                .pods
                .iter()
                .filter(|(_, p)| !p.tenant && p.node.as_deref() == Some(name) && p.phase != "Succeeded")
                .map(|(k, p)| {
                    let ms = p.bound_at.map_or(0, |t| t.elapsed().as_millis());
                    format!("{} (bound {ms} ms before, {})", k.1, p.phase)
                })
                .collect();
            if !busy.is_empty() {
                // The scheduler may bind a pod a moment before the controller's write lands; that is a race
                // the controller must settle by taking the node back at once (see [`RACE_LIMIT`]).
                s.open_races.insert(name.to_string(), (Instant::now(), busy));
            }
        }
        Some("leased") => {
            s.counters.binds += 1;
            if let Some((_, pods)) = s.open_races.remove(name) {
                s.violate(
                    1,
                    format!("node {name} was bound to a lease while internal pods ran on it: {pods:?}"),
                );
            }
        }
        Some("reclaiming") => s.counters.notices += 1,
        Some("scrubbing") => s.counters.scrubs += 1,
        None => {
            s.counters.returns += 1;
            if old == Some("scrubbing") {
                s.counters.scrubbed += 1;
            }
            if s.open_races.remove(name).is_some() {
                s.lend_races += 1;
            }
        }
        _ => {}
    }
}

/// The decision line a node's move into `new` is shown as; empty for none.
fn transition_line(name: &str, old: Option<&str>, new: &NodeInfo) -> String {
    match new.state.as_deref() {
        Some("lent") => format!("Lent {name}"),
        Some("reclaiming") => format!("Notice {name}: reclaiming from {}", new.lease.as_deref().unwrap_or("?")),
        Some("scrubbing") => format!("Scrub {name}: its tenant left, held out until the scrub completes"),
        None if old == Some("scrubbing") => format!("Returned {name} to internal use, scrubbed"),
        None => format!("Returned {name} to internal use"),
        _ => String::new(),
    }
}

/// The namespace whose lease holds `node`, as last seen.
fn lease_namespace(s: &State, node: &str) -> Option<String> {
    let lease = s.nodes.get(node)?.lease.as_deref()?;
    lease.split_once('.').map(|(ns, _)| ns.to_string())
}

/// Rule 2: every running tenant pod on `node` belongs to the namespace of the node's lease; a stranded pod
/// (its node deleted under it) must be evicted within [`BREACH_LIMIT`].
fn check_tenant_pods_on(s: &mut State, node: &str) {
    let lease = s.nodes.get(node).and_then(|n| n.lease.clone());
    let owner = lease_namespace(s, node);
    let wrong: Vec<(String, String)> = s
        .pods
        .iter()
        .filter(|(k, p)| {
            p.tenant
                && p.node.as_deref() == Some(node)
                && !p.deleting
                && p.phase == "Running"
                && owner.as_deref() != Some(k.0.as_str())
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in wrong {
        if s.pods.get(&key).is_some_and(|p| p.stranded) {
            s.open_breaches
                .entry(key)
                .or_insert_with(|| (Instant::now(), node.to_string()));
            continue;
        }
        let pod = format!("{}/{}", key.0, key.1);
        if !s.misplaced.insert(format!("{pod}@{lease:?}")) {
            continue;
        }
        s.violate(
            2,
            format!("tenant pod {pod} runs on node {node}, whose lease is {lease:?}"),
        );
    }
}

fn on_pod(s: &mut State, ev: &Change, obj: &Value) {
    let ns = ev.namespace.clone();
    let key = (ns.clone(), ev.name.clone());
    let tenant = s.tenant_namespaces.contains(&ns);
    let deleting = obj["metadata"]["deletionTimestamp"].is_string();
    let gone = matches!(ev.kind, EventType::Deleted);
    let before = s.pods.get(&key).cloned();
    let node = obj["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let phase = nodes::phase(obj).to_string();
    let deadline = time(&obj["metadata"]["annotations"][DEADLINE_ANNOTATION]);
    let info = PodInfo {
        tenant,
        node: node.clone(),
        phase: phase.clone(),
        deadline: deadline.or(before.as_ref().and_then(|b| b.deadline)),
        deleting,
        gpus: nodes::pod_gpus(obj),
        group: label(obj, GROUP_LABEL),
        pending: before.as_ref().map_or(0.0, |b| b.pending),
        delayed: before.as_ref().map_or(0.0, |b| b.delayed),
        bound_at: before
            .as_ref()
            .and_then(|b| b.bound_at)
            .or_else(|| node.is_some().then(Instant::now)),
        stranded: before.as_ref().is_some_and(|b| b.stranded),
    };
    if before.is_none() && !tenant && !gone {
        s.counters.internal_pods += 1;
    }
    // A deletion starts: by the API (deletionTimestamp) or at once (Deleted without one before).
    let was_deleting = before.as_ref().is_some_and(|b| b.deleting);
    let started_deletion = (deleting || gone) && !was_deleting;
    let unfinished = !matches!(
        before.as_ref().map(|b| b.phase.as_str()).unwrap_or(phase.as_str()),
        "Succeeded" | "Failed"
    ) && !matches!(phase.as_str(), "Succeeded" | "Failed");
    if started_deletion && unfinished && before.is_some() {
        check_deletion(s, &key, &info, obj);
    }
    if started_deletion && let Some((seen, _)) = s.open_breaches.remove(&key) {
        s.breach_seconds.push(seen.elapsed().as_secs_f64());
    }
    count_progress(s, tenant, before.as_ref(), &info, obj);
    let newly_bound = node.is_some() && before.as_ref().is_some_and(|b| b.node.is_none());
    if !tenant && newly_bound {
        s.delay_done.push(info.delayed);
    }
    if gone {
        if !tenant && info.node.is_none() {
            s.delay_done.push(info.delayed);
        }
        s.pods.remove(&key);
    } else {
        s.pods.insert(key, info);
    }
    if tenant && let Some(n) = node {
        check_tenant_pods_on(s, &n);
    }
}

/// Rules 1 and 3 when a pod's deletion starts: an internal pod is never deleted while it runs, and a tenant
/// pod only once its notice deadline passed.
fn check_deletion(s: &mut State, key: &(String, String), info: &PodInfo, obj: &Value) {
    let who = format!("{}/{}", key.0, key.1);
    if !info.tenant && info.node.is_some() {
        s.violate(
            1,
            format!("internal pod {who} was deleted or evicted while {}", info.phase),
        );
    } else if info.tenant
        && let Some(node) = info.node.as_deref()
        && lease_namespace(s, node).as_deref() != Some(key.0.as_str())
    {
        // Not on a node of its lease: a breach, which sublet evicts at once, without notice. Rule 2 reports
        // the pod running there, unless its node was deleted under it.
        s.counters.evictions += 1;
        s.counters.breach_evictions += 1;
    } else if info.tenant && info.node.is_some() {
        s.counters.evictions += 1;
        // When the deletion was asked for: deletionTimestamp less the grace period, else now.
        let asked = time(&obj["metadata"]["deletionTimestamp"])
            .and_then(|t| {
                let g = obj["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
                t.checked_sub(jiff::SignedDuration::from_secs(g)).ok()
            })
            .unwrap_or_else(Timestamp::now);
        match info.deadline {
            None => s.violate(3, format!("tenant pod {who} was evicted without a notice")),
            Some(d) if asked < d => s.violate(
                3,
                format!("tenant pod {who} was evicted at {asked}, before its deadline {d}"),
            ),
            Some(_) => {}
        }
    }
}

/// Counts a pod's first notice, a tenant pod's checkpoint and an internal pod's finish.
fn count_progress(s: &mut State, tenant: bool, before: Option<&PodInfo>, info: &PodInfo, obj: &Value) {
    if tenant && info.deadline.is_some() && before.is_some_and(|b| b.deadline.is_none()) {
        s.counters.pods_noticed += 1;
    }
    if info.phase == "Succeeded" && before.is_some_and(|b| b.phase != "Succeeded") {
        if tenant && obj["status"]["reason"] == "Checkpointed" {
            s.counters.checkpoints += 1;
        }
        if !tenant {
            s.counters.internal_finished += 1;
        }
    }
}

/// The demo's result, written with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub workload: String,
    /// Where the controller's GPU utilization came from.
    pub signals: String,
    pub wall_seconds: f64,
    pub speed: f64,
    pub simulated_hours: f64,
    pub nodes: usize,
    pub gpus: u32,
    #[serde(flatten)]
    pub counters: Counters,
    /// GPU-hours on nodes bound to leases, in simulated time.
    pub harvested_gpu_hours: f64,
    /// Revenue at the pool's prices for those GPU-hours, in simulated time.
    pub revenue: f64,
    pub currency: String,
    /// What the controller itself accounted in the pool status, on the real clock.
    pub controller_lent_gpu_hours: f64,
    pub controller_revenue: f64,
    /// Which figures are simulated time and which the wall clock.
    pub clocks: Clocks,
    pub internal_delay: InternalDelay,
    pub last_decisions: Vec<String>,
    pub invariants: Invariants,
}

/// The demo's two clocks: the simulated day runs `speed` times faster than the wall clock, while the
/// controller keeps its ledger on the wall clock.
#[derive(Clone, Debug, Serialize)]
pub struct Clocks {
    pub note: &'static str,
    /// Fields in simulated time.
    pub simulated: &'static [&'static str],
    /// Fields on the wall clock.
    pub wall_clock: &'static [&'static str],
}

pub const CLOCKS: Clocks = Clocks {
    note: "the demo's workload and tenants run on a simulated clock, `speed` simulated seconds per wall-clock \
           second; the controller accounts on the wall clock, so its own figures are about `speed` times smaller",
    simulated: &[
        "simulated_hours",
        "harvested_gpu_hours",
        "revenue",
        "internal_delay.total_hours",
        "internal_delay.mean_minutes",
        "internal_delay.max_minutes",
    ],
    wall_clock: &["wall_seconds", "controller_lent_gpu_hours", "controller_revenue"],
};

/// Delay lending added to internal work.
#[derive(Clone, Debug, Serialize)]
pub struct InternalDelay {
    pub definition: &'static str,
    /// Internal pods that left Pending (or were still pending at the end).
    pub pods: usize,
    /// Pods with any delay added.
    pub delayed_pods: usize,
    /// Sum over pods, simulated hours.
    pub total_hours: f64,
    pub mean_minutes: f64,
    pub max_minutes: f64,
}

pub const DELAY_DEFINITION: &str = "for each internal pod, the simulated time it spent Pending while at least one node \
of its node group was out of internal use (lent, leased or under reclaim notice); pods still pending at the end count \
with the time so far";

#[derive(Clone, Debug, Serialize)]
pub struct Invariants {
    pub checked: Vec<&'static str>,
    /// Nodes lent a moment after the scheduler bound an internal pod to them (the controller's cache had not
    /// seen the pod yet) and taken back by the controller within the race limit (a second on the sandbox, five
    /// on a real API server), before any lease: not violations.
    pub lend_races_settled: u64,
    /// Such lends still open when the demo stopped, younger than the limit: neither settled nor broken.
    pub lend_races_open_at_end: usize,
    pub violations: Vec<Violation>,
    /// Watch events the checker missed (then the checks are incomplete).
    pub missed_events: u64,
    /// Wall seconds each stranded tenant pod ran on a node not leased to it before its eviction began.
    #[serde(skip)]
    pub breach_seconds: Vec<f64>,
    pub ok: bool,
}

pub const RULES: [&str; 3] = [
    "1: an internal pod is never evicted, and a node with an internal GPU pod is never lent",
    "2: a node belongs to at most one lease; a tenant's pods land only on nodes of its own leases",
    "3: the reclaim notice is always given and honoured before tenant pods are evicted",
];

fn summarize(s: &State, pool: &Value, wall: Duration, speed: f64, workload: &str) -> Summary {
    let mut delays: Vec<f64> = s.delay_done.clone();
    delays.extend(
        s.pods
            .values()
            .filter(|p| !p.tenant && p.node.is_none() && p.phase == "Pending")
            .map(|p| p.delayed),
    );
    let sim = |wall_secs: f64| wall_secs * speed;
    let total: f64 = delays.iter().map(|d| sim(*d)).sum();
    let max = delays.iter().map(|d| sim(*d)).fold(0.0, f64::max);
    let delayed = delays.iter().filter(|d| **d > 0.0).count();
    Summary {
        workload: workload.to_string(),
        signals: String::new(),
        wall_seconds: wall.as_secs_f64(),
        speed,
        simulated_hours: wall.as_secs_f64() * speed / 3600.0,
        nodes: s.nodes.len(),
        gpus: s.nodes.values().map(|n| n.gpus).sum(),
        counters: s.counters.clone(),
        harvested_gpu_hours: s.leased_gpu_seconds / 3600.0,
        revenue: s.revenue,
        currency: "USD".into(),
        controller_lent_gpu_hours: pool["lentGpuHours"].as_f64().unwrap_or(0.0),
        controller_revenue: pool["revenue"].as_f64().unwrap_or(0.0),
        clocks: CLOCKS,
        internal_delay: InternalDelay {
            definition: DELAY_DEFINITION,
            pods: delays.len(),
            delayed_pods: delayed,
            total_hours: total / 3600.0,
            mean_minutes: if delays.is_empty() {
                0.0
            } else {
                total / 60.0 / delays.len() as f64
            },
            max_minutes: max / 60.0,
        },
        last_decisions: s.decisions.iter().rev().take(10).rev().cloned().collect(),
        invariants: Invariants {
            checked: RULES.to_vec(),
            violations: s.violations.clone(),
            lend_races_settled: s.lend_races,
            lend_races_open_at_end: s.open_races.len(),
            missed_events: s.missed_events,
            breach_seconds: s.breach_seconds.clone(),
            ok: s.violations.is_empty() && s.missed_events == 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every figure of time, GPU-hours or money in the JSON is named under one clock, and each name is a field.
    #[test]
    fn the_json_says_which_clock_each_figure_is_on() {
        let summary = summarize(
            &State::default(),
            &serde_json::json!({}),
            Duration::from_secs(20),
            2160.0,
            "synthetic day",
        );
        let json = serde_json::to_value(&summary).unwrap();
        let named: Vec<&str> = CLOCKS.simulated.iter().chain(CLOCKS.wall_clock).copied().collect();
        for name in &named {
            let value = name.split('.').fold(&json, |v, k| &v[k]);
            assert!(value.is_f64(), "{name} is not a figure of the summary");
        }
        let mut figures = Vec::new();
        for (key, value) in json.as_object().unwrap() {
            let inner = value.as_object().filter(|_| key == "internal_delay");
            for (k, v) in inner.into_iter().flatten().map(|(k, v)| (format!("{key}.{k}"), v)) {
                figures.push((k, v.clone()));
            }
            figures.push((key.clone(), value.clone()));
        }
        for (key, value) in figures {
            let timed = ["hours", "seconds", "minutes", "revenue"]
                .iter()
                .any(|w| key.contains(w));
            if value.is_f64() && timed {
                assert!(named.contains(&key.as_str()), "{key} is on no clock");
            }
        }
        assert_eq!(json["clocks"]["wall_clock"][0], "wall_seconds");
    }

    fn change(kind: EventType, resource: &str, namespace: &str, name: &str, obj: Value) -> Change {
        Change {
            kind,
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            obj,
        }
    }

    fn node(lease: Option<&str>) -> Value {
        let mut labels = serde_json::Map::new();
        if let Some(l) = lease {
            labels.insert(STATE_LABEL.into(), "leased".into());
            labels.insert(LEASE_LABEL.into(), l.into());
        }
        serde_json::json!({"metadata": {"name": "gpu-1", "labels": labels}})
    }

    fn running_pod(deleting: bool) -> Value {
        let mut pod = serde_json::json!({"metadata": {"name": "job", "namespace": "acme"},
            "spec": {"nodeName": "gpu-1"}, "status": {"phase": "Running"}});
        if deleting {
            pod["metadata"]["deletionTimestamp"] = "2026-12-05T00:00:00Z".into();
        }
        pod
    }

    /// A tenant (`acme`) with a pod running on gpu-1, leased to it.
    fn placed() -> State {
        let mut s = State::default();
        let ns = serde_json::json!({"metadata": {"name": "acme", "labels": {TENANT_NAMESPACE_LABEL: "true"}}});
        on_event(&mut s, &change(EventType::Added, "namespaces", "", "acme", ns), 1.0);
        on_event(
            &mut s,
            &change(EventType::Added, "nodes", "", "gpu-1", node(Some("acme.l1"))),
            1.0,
        );
        on_event(
            &mut s,
            &change(EventType::Added, "pods", "acme", "job", running_pod(false)),
            1.0,
        );
        s
    }

    /// A tenant pod whose node is deleted under it and registered again unleased is a breach sublet must
    /// evict at once: evicted without notice, it breaks no rule; left running past the limit, rule 2.
    #[test]
    fn a_pod_stranded_by_a_node_deletion_must_be_evicted_without_notice() {
        let mut s = placed();
        on_event(
            &mut s,
            &change(EventType::Deleted, "nodes", "", "gpu-1", node(Some("acme.l1"))),
            1.0,
        );
        on_event(&mut s, &change(EventType::Added, "nodes", "", "gpu-1", node(None)), 1.0);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.open_breaches.len(), 1);
        on_event(
            &mut s,
            &change(EventType::Modified, "pods", "acme", "job", running_pod(true)),
            1.0,
        );
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!((s.counters.breach_evictions, s.breach_seconds.len()), (1, 1));
        assert!(s.open_breaches.is_empty());

        let mut s = placed();
        on_event(
            &mut s,
            &change(EventType::Deleted, "nodes", "", "gpu-1", node(Some("acme.l1"))),
            1.0,
        );
        on_event(&mut s, &change(EventType::Added, "nodes", "", "gpu-1", node(None)), 1.0);
        close_breaches(&mut s, Duration::ZERO);
        assert_eq!(s.violations.len(), 1);
        assert_eq!(s.violations[0].rule, 2);
    }

    /// Without a node deletion, a tenant pod running on a node its lease left breaks rule 2 at once; evicting
    /// it on its leased node without a deadline breaks rule 3.
    #[test]
    fn a_pod_left_on_a_node_its_lease_lost_or_evicted_without_notice_breaks_the_rules() {
        let mut s = placed();
        on_event(
            &mut s,
            &change(EventType::Modified, "nodes", "", "gpu-1", node(None)),
            1.0,
        );
        assert_eq!(s.violations.iter().map(|v| v.rule).collect::<Vec<_>>(), vec![2]);

        let mut s = placed();
        on_event(
            &mut s,
            &change(EventType::Modified, "pods", "acme", "job", running_pod(true)),
            1.0,
        );
        assert_eq!(s.violations.iter().map(|v| v.rule).collect::<Vec<_>>(), vec![3]);
        assert_eq!(s.counters.breach_evictions, 0);
    }
}
