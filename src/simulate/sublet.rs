//! The `sublet` policy: the trace replayed through the controller's own [`plan`], step by step.
//!
//! One [`Snapshot`] lives for the whole replay and is updated in place:
//!
//! ```text
//!  each step t:  capacity(t): nodes leave (a lent or leased one ends its lease without notice: "lost")
//!                and join (internal, idle)
//!              ─► demand(t) ─► place internal work on internal nodes (Fleet) ─► snapshot: one internal pod
//!                per node carrying its used GPUs, the rest as pending demand of the group's class
//!             ─► settle(t): plan() → ideal::apply() → evicted pods gone after the grace → plan again
//!             ─► place again (nodes that came back take waiting work) ─► meter ─► history (past only)
//!             ─► deadlines and ends of grace that fall between t and t+1: settle at each
//! ```
//!
//! By default tenants have unbounded demand: there is always a pending one-node lease for every node that
//! could be lent, so a lent node is bound in the same plan, and a bound node always runs a tenant pod (which
//! is evicted at the deadline when the node is reclaimed). With a tenant spec, leases arrive as drawn
//! ([`super::tenants`]); a tenant's pods leave on their own when its lease runs out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;

use super::fleet::{Fleet, Meter, Use};
use super::oracle::Oracle;
use super::tenants::Arrival;
use super::trace::Trace;
use crate::policy::{
    Action, Cause, DemandHistory, LeasePhase, LeaseView, Marks, NodeState, NodeView, PodPhase, PodView, PoolPolicy,
    Selector, Signals, Snapshot, SnapshotBuilder, ideal, plan,
};

/// The node label the simulator puts the group name under when the pool names none.
pub const GROUP_LABEL: &str = "sublet.dev/node-group";

/// Per step, over all groups: capacity, internal demand (capped), GPUs out of internal use, GPUs leased.
pub type Series = Vec<[u32; 4]>;
/// The same per node group: `[group][step]`.
pub type GroupSeries = Vec<Series>;

struct Replay<'a> {
    trace: &'a Trace,
    snap: Snapshot,
    fleet: Fleet,
    meter: Meter,
    index: HashMap<String, usize>,
    /// Groups in the order of `snap.demand.by_class` (sorted by name).
    class_order: Vec<usize>,
    pending: Vec<u32>,
    want: Vec<u32>,
    leases_made: u64,
    /// Lease requests to come, when tenants are not unbounded.
    arrivals: Option<&'a [Arrival]>,
    next_arrival: usize,
    /// Seconds a request waits for nodes before it is withdrawn.
    patience: i64,
    /// Seconds an evicted pod takes to go, and when each tenant slot's evicted pod is gone.
    grace: i64,
    gone_at: Vec<Option<Timestamp>>,
    /// The reserve of the last plan, over all classes.
    reserve_gpus: u32,
}

/// Adapts a pool's policy to a trace: nodes are told apart by group only, and idleness comes from internal
/// pods (a trace has no utilization readings).
pub fn adapt(mut policy: PoolPolicy) -> PoolPolicy {
    policy.group_label.get_or_insert_with(|| GROUP_LABEL.to_string());
    policy.node_selector = Selector::default();
    policy.gpu_models.clear();
    policy.utilization_configured = false;
    policy.deleting = false;
    policy
}

/// Replays `trace` under `policy` (see [`adapt`]). `tenants`: lease requests and their patience in seconds
/// (None: unbounded tenants); `progress` is called with the steps done so far.
pub fn run(
    trace: &Trace,
    oracle: &Oracle,
    policy: PoolPolicy,
    tenants: Option<(&[Arrival], i64)>,
    eviction_grace_seconds: i64,
    progress: &mut dyn FnMut(usize),
) -> (Meter, Series, GroupSeries) {
    let policy = adapt(policy);
    let mut r = Replay::new(trace, policy);
    if let Some((arrivals, patience)) = tenants {
        r.arrivals = Some(arrivals);
        r.patience = patience;
    }
    r.grace = eviction_grace_seconds.max(0);
    let k = trace.groups.len();
    let mut series = Vec::with_capacity(trace.steps());
    let mut by_group: GroupSeries = vec![Vec::with_capacity(trace.steps()); k];
    for step in 0..trace.steps() {
        let now = trace.time(step);
        if trace.capacity_changes() {
            r.capacity(step, now);
        }
        r.observe(step, now);
        r.settle(now);
        r.place_waiting(now);
        r.meter.record(trace, &r.fleet, step, oracle.at(step, k), |n| {
            match r.snap.nodes[n].marks.state {
                NodeState::Internal => Use::Internal,
                NodeState::Lent | NodeState::Scrubbing => Use::Lent,
                NodeState::Leased | NodeState::Reclaiming => Use::Leased,
            }
        });
        if r.trace.known[step * k..(step + 1) * k].iter().all(|&x| x) {
            r.meter.reserve += f64::from(r.reserve_gpus) * trace.step_seconds as f64;
            r.meter.reserve_seconds += trace.step_seconds as f64;
        }
        let groups = r.group_totals(step);
        series.push(groups.iter().fold([0; 4], |t, g| std::array::from_fn(|i| t[i] + g[i])));
        for (g, totals) in groups.into_iter().enumerate() {
            by_group[g].push(totals);
        }
        // Deadlines between this step and the next are acted on when they come, as the controller does.
        let next = trace.time(step + 1);
        let mut after = now;
        while let Some(deadline) = r.next_deadline(after, next) {
            r.settle(deadline);
            r.place_waiting(deadline);
            after = deadline;
        }
        r.remember(step, now);
        if step % 1024 == 0 {
            progress(step);
        }
    }
    progress(trace.steps());
    r.meter.finish();
    (r.meter, series, by_group)
}

impl<'a> Replay<'a> {
    fn new(trace: &'a Trace, policy: PoolPolicy) -> Self {
        let mut fleet = Fleet::new(trace);
        for g in 0..trace.groups.len() {
            fleet.set_capacity(g, trace.capacity_at(0, g), 0);
        }
        let label = policy.group_label.clone().unwrap_or_default();
        let history = policy
            .reserve
            .learned
            .map(|l| Arc::new(DemandHistory::new(l.history_days)));
        let mut b = SnapshotBuilder::new(Arc::new(policy), trace.start);
        let mut index = HashMap::new();
        for n in 0..fleet.len() {
            let group = &trace.groups[fleet.group_of[n]].name;
            let name = format!("{group}-{:03}", n - fleet.groups[fleet.group_of[n]].start);
            index.insert(name.clone(), n);
            b.node(NodeView {
                name,
                labels: BTreeMap::from([(label.clone(), group.clone())]),
                ready: fleet.present[n],
                gpus: if fleet.present[n] { fleet.gpus[n] } else { 0 },
                idle_since: Some(trace.start),
                ..NodeView::default()
            });
        }
        for g in &trace.groups {
            b.demand(Some(g.name.clone()), 0);
        }
        if let Some(h) = history {
            b.history(h);
        }
        let mut snap = b.build();
        // Slot n: the internal work on node n; slot N + n: the tenant pod of node n while it is leased.
        let total = fleet.len();
        snap.pods = (0..total)
            .map(|n| PodView {
                namespace: "internal".into(),
                name: format!("work-{n}"),
                node: Some(n),
                phase: PodPhase::Running,
                ..PodView::default()
            })
            .chain((0..total).map(|n| PodView {
                namespace: "tenant".into(),
                name: format!("pod-{n}"),
                gpus: fleet.gpus[n],
                tenant: true,
                phase: PodPhase::Running,
                ..PodView::default()
            }))
            .collect();
        let mut class_order: Vec<usize> = (0..trace.groups.len()).collect();
        class_order.sort_by(|&a, &b| trace.groups[a].name.cmp(&trace.groups[b].name));
        let k = trace.groups.len();
        Self {
            trace,
            snap,
            meter: Meter::new(k),
            fleet,
            index,
            class_order,
            pending: vec![0; k],
            want: vec![0; k],
            leases_made: 0,
            arrivals: None,
            next_arrival: 0,
            patience: i64::MAX,
            grace: 0,
            gone_at: vec![None; total],
            reserve_gpus: 0,
        }
    }

    fn secs(&self, t: Timestamp) -> i64 {
        t.as_second() - self.trace.start.as_second()
    }

    /// Takes the groups' capacity at `step`: a node that leaves drops out of the pool with whatever it
    /// held (a tenant's lease on it ends without notice, its internal work waits to be placed again); a node
    /// that joins is internal and idle.
    fn capacity(&mut self, step: usize, now: Timestamp) {
        let at = self.secs(now);
        let total = self.fleet.len();
        for g in 0..self.trace.groups.len() {
            let (left, joined) = self.fleet.set_capacity(g, self.trace.capacity_at(step, g), at);
            for n in left {
                let node = &mut self.snap.nodes[n];
                if node.marks.state != NodeState::Internal {
                    self.meter.lost += 1;
                }
                node.marks = Marks::default();
                node.gpus = 0;
                node.ready = false;
                node.idle_since = None;
                let tenant = &mut self.snap.pods[total + n];
                tenant.node = None;
                tenant.terminating = false;
                tenant.deadline_annotation = None;
                self.gone_at[n] = None;
            }
            for n in joined {
                let node = &mut self.snap.nodes[n];
                node.gpus = self.fleet.gpus[n];
                node.ready = true;
                node.idle_since = Some(now);
            }
        }
    }

    /// Reads the trace at `step` into the fleet and the snapshot.
    fn observe(&mut self, step: usize, now: Timestamp) {
        let k = self.trace.groups.len();
        let known = self.trace.known[step * k..(step + 1) * k].iter().all(|&x| x);
        if known != self.snap.signals.fresh {
            self.snap.signals = if known {
                Signals::default()
            } else {
                Signals {
                    fresh: false,
                    reason: Some("the trace has no demand reading for this step".into()),
                }
            };
        }
        for g in 0..k {
            self.want[g] = self.trace.demand[step * k + g].min(self.trace.capacity_at(step, g));
        }
        self.snap.now = now;
        self.place_all(now);
    }

    fn place_all(&mut self, now: Timestamp) {
        let at = self.secs(now);
        for g in 0..self.trace.groups.len() {
            let nodes = &self.snap.nodes;
            let placed = self
                .fleet
                .place(g, self.want[g], at, |n| nodes[n].marks.state == NodeState::Internal);
            self.pending[g] = self.want[g] - placed;
        }
        self.sync();
    }

    /// Work that waited gets the nodes that came back.
    fn place_waiting(&mut self, now: Timestamp) {
        if self.pending.iter().any(|&p| p > 0) {
            self.place_all(now);
        }
    }

    /// Copies the fleet's placement into the snapshot.
    fn sync(&mut self) {
        let start = self.trace.start.as_second();
        for n in 0..self.fleet.len() {
            self.snap.pods[n].gpus = self.fleet.used[n];
            self.snap.nodes[n].idle_since =
                self.fleet.idle_since[n].and_then(|s| Timestamp::from_second(start + s).ok());
        }
        for (v, &g) in self.snap.demand.by_class.values_mut().zip(&self.class_order) {
            *v = self.pending[g];
        }
    }

    /// Plans and carries the plan out at `now` until nothing more changes at this instant: evicted pods are
    /// gone `grace` seconds after their eviction, and the plan after that returns the node.
    fn settle(&mut self, now: Timestamp) {
        self.snap.now = now;
        for _ in 0..4 {
            self.offer_leases(now);
            self.tenants_leave(now);
            self.evicted_pods_leave(now);
            let plan = plan(&self.snap);
            ideal::apply(&mut self.snap, &plan);
            self.reserve_gpus = plan.totals.reserve_gpus;
            let total = self.fleet.len();
            for step in &plan.steps {
                match &step.action {
                    Action::Notice { .. } => {
                        self.meter.notices += 1;
                        if step.cause == Cause::ReclaimAhead {
                            self.meter.ahead_notices += 1;
                        }
                    }
                    Action::Evict { .. } => self.meter.evictions += 1,
                    Action::Bind { nodes, .. } => {
                        for name in nodes {
                            if let Some(&n) = self.index.get(name) {
                                self.snap.pods[total + n].node = Some(n);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let gone = Timestamp::from_second(now.as_second() + self.grace).unwrap_or(now);
            for (pod, at) in self.snap.pods[total..].iter_mut().zip(&mut self.gone_at) {
                if pod.terminating && at.is_none() {
                    *at = Some(gone);
                }
            }
            self.snap.leases.retain(|l| !l.phase.is_final());
            if !self.gone_at.iter().any(|g| g.is_some_and(|g| g <= now)) {
                break;
            }
        }
    }

    /// Evicted tenant pods whose grace has run out are gone.
    fn evicted_pods_leave(&mut self, now: Timestamp) {
        let total = self.fleet.len();
        for (pod, at) in self.snap.pods[total..].iter_mut().zip(&mut self.gone_at) {
            if at.is_some_and(|g| g <= now) {
                *at = None;
                pod.terminating = false;
                pod.node = None;
                pod.deadline_annotation = None;
            }
        }
    }

    /// Adds the leases that have arrived by `now`; with unbounded tenants, keeps a pending one-node lease for
    /// every node the next plan could bind.
    fn offer_leases(&mut self, now: Timestamp) {
        if let Some(arrivals) = self.arrivals {
            let at = self.secs(now);
            let patience = self.patience;
            self.snap.leases.retain(|l| {
                l.phase != LeasePhase::Pending
                    || l.bound_at.is_some()
                    || now.as_second() - l.created.as_second() <= patience
            });
            while let Some(a) = arrivals.get(self.next_arrival).filter(|a| a.at <= at) {
                self.next_arrival += 1;
                self.leases_made += 1;
                let created = Timestamp::from_second(self.trace.start.as_second() + a.at).unwrap_or(now);
                self.snap.leases.push(LeaseView {
                    namespace: "tenant".into(),
                    name: format!("lease-{}", self.leases_made),
                    uid: None,
                    gpus: a.gpus,
                    model: None,
                    duration_seconds: a.duration_seconds,
                    max_price: a.max_price,
                    phase: LeasePhase::Pending,
                    bound_at: None,
                    created,
                    tenant_namespace: true,
                    deleting: false,
                });
            }
            return;
        }
        let window = self.snap.policy.idle_for_seconds;
        let cool = self.snap.policy.cooldown_seconds.max(1);
        let at = self.secs(now);
        let could: usize = (0..self.fleet.len())
            .filter(|&n| match self.snap.nodes[n].marks.state {
                NodeState::Lent => self.snap.nodes[n].marks.lease.is_none(),
                NodeState::Internal => {
                    let cooled = self.snap.nodes[n]
                        .marks
                        .returned_at
                        .is_none_or(|r| now.as_second() - r.as_second() >= cool);
                    cooled && self.fleet.idle_since[n].is_some_and(|s| at - s >= window)
                }
                _ => false,
            })
            .count();
        let pending = self
            .snap
            .leases
            .iter()
            .filter(|l| l.phase == LeasePhase::Pending)
            .count();
        for _ in pending..could {
            self.leases_made += 1;
            self.snap.leases.push(LeaseView {
                namespace: "tenant".into(),
                name: format!("lease-{}", self.leases_made),
                uid: None,
                gpus: 1,
                model: None,
                duration_seconds: None,
                max_price: None,
                phase: LeasePhase::Pending,
                bound_at: None,
                created: now,
                tenant_namespace: true,
                deleting: false,
            });
        }
    }

    /// Tenants whose lease has run out take their pods away.
    fn tenants_leave(&mut self, now: Timestamp) {
        if self.arrivals.is_none() {
            return;
        }
        let total = self.fleet.len();
        for n in 0..total {
            if self.snap.pods[total + n].node.is_none() {
                continue;
            }
            let Some(key) = self.snap.nodes[n].marks.lease.as_deref() else {
                continue;
            };
            let over = self.snap.leases.iter().find(|l| l.key() == key).is_none_or(|l| {
                l.bound_at
                    .zip(l.duration_seconds)
                    .is_some_and(|(b, d)| b.as_second() + d <= now.as_second())
            });
            if over {
                self.snap.pods[total + n].node = None;
            }
        }
    }

    fn next_deadline(&self, now: Timestamp, before: Timestamp) -> Option<Timestamp> {
        self.snap
            .nodes
            .iter()
            .filter(|n| n.marks.state == NodeState::Reclaiming)
            .filter_map(|n| n.marks.deadline)
            .chain(self.gone_at.iter().flatten().copied())
            .filter(|&d| d > now && d < before)
            .min()
    }

    fn remember(&mut self, step: usize, now: Timestamp) {
        let k = self.trace.groups.len();
        let Some(h) = self.snap.history.as_mut() else { return };
        let h = Arc::make_mut(h);
        for g in 0..k {
            if self.trace.known[step * k + g] {
                h.record(&self.trace.groups[g].name, now, self.want[g]);
            }
        }
    }

    /// Per group: capacity, internal demand (capped), GPUs out of internal use, GPUs leased.
    fn group_totals(&self, step: usize) -> Vec<[u32; 4]> {
        let mut t: Vec<[u32; 4]> = (0..self.trace.groups.len())
            .map(|g| [self.trace.capacity_at(step, g), self.want[g], 0, 0])
            .collect();
        for (n, node) in self.snap.nodes.iter().enumerate() {
            let g = &mut t[self.fleet.group_of[n]];
            match node.marks.state {
                NodeState::Internal => {}
                NodeState::Lent | NodeState::Scrubbing => g[2] += self.fleet.gpus[n],
                NodeState::Leased | NodeState::Reclaiming => {
                    g[2] += self.fleet.gpus[n];
                    g[3] += self.fleet.gpus[n];
                }
            }
        }
        t
    }
}
