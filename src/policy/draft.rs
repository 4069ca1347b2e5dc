//! The plan in the making: the snapshot joined and indexed once, and the node states as the plan changes
//! them, so each step sees what the steps before it decided.

use jiff::{SignedDuration, Timestamp};

use super::config::PoolPolicy;
use super::output::{Action, Cause, LeaseReport, NodeReport, Step, Totals};
use super::snapshot::{PodPhase, PoolLedger, Snapshot};
use super::state::{LeasePhase, NodeState};

/// Where a node's lease key is read from: its marks as observed, or the lease this plan bound it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyOf {
    Marks,
    Lease(usize),
}

/// Per node, what the plan needs and what it decided.
pub(super) struct NodeDraft {
    pub member: bool,
    /// The pool's node selector and GPU models select the node now (a member no longer selected leaves the
    /// pool once it is back).
    pub selected: bool,
    pub class: usize,
    pub gpus: u32,
    pub state: NodeState,
    pub lease: Option<usize>,
    /// Where its lease key is ([`Draft::lease_key`] reads it); None when it has none.
    pub key: Option<KeyOf>,
    pub used_gpus: u32,
    pub internal_gpu_pods: u32,
    /// First entry in `Draft::tenant_pods` and how many.
    tenant_first: u32,
    tenant_count: u32,
    /// The plan already acted on this node.
    pub acted: bool,
    /// The reclaim deadline: the node's own, or the one this plan gave.
    pub deadline: Option<Timestamp>,
    pub reason: String,
}

/// GPUs that pending internal pods ask for: per class (indexed as `Draft::class_names`), and for any class.
pub(super) struct PendingPods {
    pub by_class: Vec<i64>,
    pub any: i64,
}

pub(super) struct Draft<'a> {
    pub snap: &'a Snapshot,
    pub policy: &'a PoolPolicy,
    pub now: Timestamp,
    pub nodes: Vec<NodeDraft>,
    /// Each node's GPU model label, read once.
    models: Vec<Option<&'a str>>,
    tenant_pods: Vec<usize>,
    pub class_names: Vec<String>,
    /// Summed when the pool counts pending pods as demand; zero otherwise.
    pub pending_pods: PendingPods,
    /// Each lease's key, as nodes name it (`NAMESPACE.NAME`).
    pub lease_keys: Vec<String>,
    pub steps: Vec<Step>,
    pub lease_reasons: Vec<String>,
    /// Leases that ask for more than the pool has in all.
    pub unschedulable: Vec<bool>,
    bound: Vec<Vec<usize>>,
    /// One node each lease holds, if any, for its model.
    lease_node: Vec<Option<usize>>,
    /// When each lease was bound: its status's time, or for a lease holding nodes while its status tells
    /// none (the status write after the bind failed), the earliest time sublet marked one of them, so that
    /// its ledger runs from there rather than never.
    pub bound_at: Vec<Option<Timestamp>>,
    /// GPUs lent by this plan.
    pub lent_now: u32,
    pub scrubs: Vec<super::scrub::ScrubReport>,
}

/// The snapshot's nodes as drafts, with the names of the node classes their `class` indexes and each node's
/// model.
struct Joined<'a> {
    nodes: Vec<NodeDraft>,
    class_names: Vec<String>,
    models: Vec<Option<&'a str>>,
}

/// A draft of each node of the snapshot; `lease_keys` are the leases' keys, by lease index.
fn node_drafts<'a>(snap: &'a Snapshot, lease_keys: &[String]) -> Joined<'a> {
    let policy = &*snap.policy;
    let mut class_index: foldhash::HashMap<&str, usize> = Default::default();
    let mut class_names = Vec::new();
    let leases: foldhash::HashMap<&str, usize> = lease_keys.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    let mut models = Vec::with_capacity(snap.nodes.len());
    let mut nodes = Vec::with_capacity(snap.nodes.len());
    for n in &snap.nodes {
        let model = n.labels.get(&policy.model_label).map(String::as_str);
        models.push(model);
        let selected = n.gpus > 0
            && policy.node_selector.matches(&n.labels)
            && (policy.gpu_models.is_empty() || model.is_some_and(|m| policy.gpu_models.iter().any(|g| g == m)));
        // A node sublet marked for this pool stays a member until it is back, selected or not.
        // An unmarked node selected by an older pool too is that pool's.
        let member = match n.marks.pool.as_deref() {
            Some(pool) => pool == policy.name,
            None => selected && n.claimed_by.is_none(),
        };
        // Its class: the group label's value when the pool names one, else its model (as `node_class` reads).
        let class_name = match &policy.group_label {
            Some(_) => policy.node_class(&n.labels),
            None => model.unwrap_or(""),
        };
        let next = class_names.len();
        let class = *class_index.entry(class_name).or_insert(next);
        if class == next {
            class_names.push(class_name.to_string());
        }
        // A node marked for another pool, or not ours, keeps whatever state it has; we only read ours.
        let state = if member { n.marks.state } else { NodeState::Internal };
        nodes.push(NodeDraft {
            member,
            selected,
            class,
            gpus: n.gpus,
            state,
            // A node names its lease by key and UID: a lease created again under the same name is
            // another lease and never takes over what the earlier one held.
            lease: n
                .marks
                .lease
                .as_deref()
                .and_then(|k| leases.get(k).copied())
                .filter(|&l| match (&n.marks.lease_uid, &snap.leases[l].uid) {
                    (Some(on_node), Some(uid)) => on_node == uid,
                    _ => true,
                }),
            key: n.marks.lease.as_ref().map(|_| KeyOf::Marks),
            used_gpus: n.internal.gpus,
            internal_gpu_pods: n.internal.pods,
            tenant_first: 0,
            tenant_count: 0,
            acted: false,
            deadline: if member { n.marks.deadline } else { None },
            reason: String::new(),
        });
    }
    Joined {
        nodes,
        class_names,
        models,
    }
}

/// One pass over the pods: counts the pods on each node into its draft, sums what pending internal pods ask
/// for by class (when the pool counts them), and returns the tenant pods grouped by node in one array, so no
/// per-node allocation; each node's `tenant_first` and `tenant_count` index it.
fn scan_pods(snap: &Snapshot, nodes: &mut [NodeDraft], class_names: &[String]) -> (Vec<usize>, PendingPods) {
    let index: foldhash::HashMap<&str, usize> = class_names.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let count_pending = snap.policy.pending_pods_demand;
    let mut pending = PendingPods {
        by_class: vec![0; class_names.len()],
        any: 0,
    };
    // (node, pod) of each tenant pod, in pod order.
    let mut tenant: Vec<(usize, usize)> = Vec::new();
    for (p, pod) in snap.pods.iter().enumerate() {
        match pod.node {
            Some(n) => {
                let node = &mut nodes[n];
                node.used_gpus += pod.gpus;
                if pod.tenant {
                    node.tenant_count += 1;
                    tenant.push((n, p));
                } else if pod.gpus > 0 {
                    node.internal_gpu_pods += 1;
                }
            }
            None if count_pending && !pod.tenant && pod.phase == PodPhase::Pending && !pod.terminating => {
                match pod.class.as_deref() {
                    None => pending.any += i64::from(pod.gpus),
                    // Demand for a class the pool does not hold is not the pool's to meet.
                    Some(class) => {
                        if let Some(&i) = index.get(class) {
                            pending.by_class[i] += i64::from(pod.gpus);
                        }
                    }
                }
            }
            None => {}
        }
    }
    (group_by_node(nodes, &tenant), pending)
}

/// The pods of `tenant` ((node, pod) pairs in pod order) grouped by node (counting sort), in pod order within
/// a node.
fn group_by_node(nodes: &mut [NodeDraft], tenant: &[(usize, usize)]) -> Vec<usize> {
    let mut next = 0u32;
    for node in nodes.iter_mut() {
        node.tenant_first = next;
        next += node.tenant_count;
        node.tenant_count = 0;
    }
    let mut tenant_pods = vec![0usize; tenant.len()];
    for &(n, p) in tenant {
        let node = &mut nodes[n];
        tenant_pods[(node.tenant_first + node.tenant_count) as usize] = p;
        node.tenant_count += 1;
    }
    tenant_pods
}

/// Words that depend on a count only, written once per count and copied after: most busy nodes of a pool run
/// as many pods as one another, most leases hold as many nodes.
#[derive(Default)]
pub(super) struct CountSaid(Vec<(usize, String)>);

impl CountSaid {
    pub fn say(&mut self, count: usize, words: impl FnOnce(usize) -> String) -> String {
        if let Some((_, said)) = self.0.iter().find(|(k, _)| *k == count) {
            return said.clone();
        }
        let said = words(count);
        self.0.push((count, said.clone()));
        said
    }
}

/// When each lease was bound: its status's time, or, for a lease holding nodes while its status tells none,
/// the earliest time sublet marked one of them.
fn bound_at(snap: &Snapshot, nodes: &[NodeDraft]) -> Vec<Option<Timestamp>> {
    let mut bound_at: Vec<Option<Timestamp>> = snap.leases.iter().map(|l| l.bound_at).collect();
    let mut held_since: Vec<Option<Timestamp>> = vec![None; snap.leases.len()];
    for (n, node) in nodes.iter().enumerate() {
        let marks = &snap.nodes[n].marks;
        if let (true, Some(l), NodeState::Leased | NodeState::Reclaiming, Some(since)) =
            (node.member, node.lease, node.state, marks.since)
        {
            let first = held_since[l].get_or_insert(since);
            *first = (*first).min(since);
        }
    }
    for (b, held) in bound_at.iter_mut().zip(held_since) {
        *b = b.or(held);
    }
    bound_at
}

impl<'a> Draft<'a> {
    pub fn new(snap: &'a Snapshot) -> Self {
        let policy = &*snap.policy;
        let lease_keys: Vec<String> = snap.leases.iter().map(|l| l.key()).collect();
        let Joined {
            mut nodes,
            class_names,
            models,
        } = node_drafts(snap, &lease_keys);
        let (tenant_pods, pending_pods) = scan_pods(snap, &mut nodes, &class_names);
        let mut lease_node = vec![None; snap.leases.len()];
        for (n, node) in nodes.iter().enumerate() {
            if let (true, Some(l)) = (node.member, node.lease) {
                lease_node[l].get_or_insert(n);
            }
        }
        let bound_at = bound_at(snap, &nodes);
        Self {
            snap,
            policy,
            now: snap.now,
            nodes,
            models,
            tenant_pods,
            class_names,
            pending_pods,
            lease_keys,
            steps: Vec::new(),
            lease_reasons: vec![String::new(); snap.leases.len()],
            unschedulable: vec![false; snap.leases.len()],
            bound: vec![Vec::new(); snap.leases.len()],
            lease_node,
            bound_at,
            lent_now: 0,
            scrubs: Vec::new(),
        }
    }

    pub fn has_tenant_pods(&self, n: usize) -> bool {
        self.nodes[n].tenant_count > 0
    }

    /// The tenant pods on node `n`, by index into the snapshot's pods.
    pub fn tenant_pods(&self, n: usize) -> &[usize] {
        let node = &self.nodes[n];
        &self.tenant_pods[node.tenant_first as usize..(node.tenant_first + node.tenant_count) as usize]
    }

    pub fn tenant_pods_on(&self, n: usize) -> Vec<usize> {
        self.tenant_pods(n).to_vec()
    }

    /// Node `n`'s GPU model label.
    pub fn model(&self, n: usize) -> Option<&'a str> {
        self.models[n]
    }

    /// The key of the lease node `n` is marked for, or that this plan bound it to.
    pub fn lease_key(&self, n: usize) -> Option<&str> {
        match self.nodes[n].key? {
            KeyOf::Marks => self.snap.nodes[n].marks.lease.as_deref(),
            KeyOf::Lease(l) => Some(&self.lease_keys[l]),
        }
    }

    pub fn push(&mut self, action: Action, cause: Cause, reason: &str) {
        self.steps.push(Step {
            action,
            cause,
            reason: reason.to_string(),
        });
    }

    pub fn count_state(&self, state: NodeState) -> usize {
        self.nodes.iter().filter(|n| n.member && n.state == state).count()
    }

    pub fn total_gpus(&self) -> u32 {
        self.nodes.iter().filter(|n| n.member).map(|n| n.gpus).sum()
    }

    /// GPUs out of internal use in the plan's current state.
    pub fn out_gpus(&self) -> u32 {
        self.nodes
            .iter()
            .filter(|n| n.member && n.state.is_out())
            .map(|n| n.gpus)
            .sum()
    }

    /// What lease `l` pays per GPU-hour: the price of its model, or of the model of its nodes.
    pub fn lease_price(&self, l: usize) -> f64 {
        let model = self.snap.leases[l]
            .model
            .as_deref()
            .or_else(|| self.lease_node[l].and_then(|n| self.model(n)));
        self.policy.prices.for_model(model)
    }

    /// The lowest price a lease of this model could pay.
    pub fn lowest_price(&self, model: Option<&str>) -> f64 {
        match model {
            Some(m) => self.policy.prices.for_model(Some(m)),
            None => self
                .policy
                .prices
                .per_model
                .keys()
                .map(|m| self.policy.prices.for_model(Some(m)))
                .fold(self.policy.prices.for_model(None), f64::min),
        }
    }

    pub fn lend(&mut self, n: usize) {
        let name = self.snap.nodes[n].name.clone();
        self.nodes[n].state = NodeState::Lent;
        self.nodes[n].acted = true;
        self.nodes[n].reason = "lent: idle beyond internal demand and reserve".into();
        self.lent_now += self.nodes[n].gpus;
        self.push(
            Action::Lend { node: name },
            Cause::Idle,
            "idle beyond internal demand and reserve",
        );
    }

    pub fn unlend(&mut self, n: usize, cause: Cause, why: &str) {
        let name = self.snap.nodes[n].name.clone();
        self.nodes[n].state = NodeState::Internal;
        self.nodes[n].acted = true;
        self.nodes[n].reason = format!("returned: {why}");
        self.push(Action::Unlend { node: name }, cause, why);
    }

    /// Gives notice on a node. One with no tenant pod on it goes straight back, as there is nothing to wait
    /// for (returns true then); with a deadline already due (a notice of zero seconds), its pods are evicted.
    pub fn notice(&mut self, n: usize, deadline: Timestamp, cause: Cause, why: &str) -> bool {
        let name = self.snap.nodes[n].name.clone();
        let lease = self.lease_key(n).map(str::to_string);
        self.nodes[n].acted = true;
        if !self.has_tenant_pods(n) {
            super::scrub::release(self, n, cause, &format!("{why}; no tenant pod to give notice to"));
            return true;
        }
        self.nodes[n].state = NodeState::Reclaiming;
        self.nodes[n].deadline = Some(deadline);
        self.nodes[n].reason = format!("notice: {why}");
        self.push(
            Action::Notice {
                node: name.clone(),
                lease,
                deadline,
            },
            cause,
            why,
        );
        // The tenant's pods learn the deadline with the notice, so a workload can checkpoint.
        for p in self.tenant_pods_on(n) {
            let pod = &self.snap.pods[p];
            if !pod.terminating && pod.deadline_annotation != Some(deadline) {
                let action = Action::AnnotatePod {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    deadline,
                };
                self.push(action, cause, "the node it runs on is under reclaim notice");
            }
        }
        if self.now >= deadline {
            for p in self.tenant_pods_on(n) {
                let pod = &self.snap.pods[p];
                if !pod.terminating {
                    let action = Action::Evict {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        node: name.clone(),
                        deadline,
                    };
                    self.push(action, cause, "the pool gives no notice period");
                }
            }
        }
        false
    }

    pub fn bind(&mut self, l: usize, nodes: Vec<usize>) {
        let lease = &self.snap.leases[l];
        let key = &self.lease_keys[l];
        for &n in &nodes {
            self.nodes[n].state = NodeState::Leased;
            self.nodes[n].lease = Some(l);
            self.nodes[n].key = Some(KeyOf::Lease(l));
            self.nodes[n].acted = true;
            self.nodes[n].reason = format!("bound to {key}");
        }
        let names = nodes
            .iter()
            .map(|&n| self.snap.nodes[n].name.clone())
            .collect::<Vec<_>>();
        let action = Action::Bind {
            namespace: lease.namespace.clone(),
            name: lease.name.clone(),
            nodes: names,
        };
        let why = format!("lease asks for {} GPUs and these lent nodes cover it", lease.gpus);
        self.push(action, Cause::LeaseRequest, &why);
        self.lease_node[l] = nodes.first().copied();
        self.bound[l] = nodes;
    }

    /// Whether an internal node is idle and free to lend on its own merits (reserve and caps aside).
    pub fn idle_verdict(&self, n: usize, said: &mut CountSaid) -> Result<(), String> {
        let node = &self.snap.nodes[n];
        let w = &self.nodes[n];
        if !node.ready {
            return Err("node is not Ready".into());
        }
        if node.unschedulable {
            return Err("node is cordoned".into());
        }
        if w.internal_gpu_pods > 0 {
            return Err(said.say(w.internal_gpu_pods as usize, |pods| match pods {
                1 => "runs an internal GPU pod".to_string(),
                n => format!("runs {n} internal GPU pods"),
            }));
        }
        if w.used_gpus > 0 || w.tenant_count > 0 {
            return Err("its GPUs are in use".into());
        }
        if let Some(returned) = node.marks.returned_at {
            let cool = SignedDuration::from_secs(self.policy.cooldown_seconds.max(1));
            if self.now < returned.saturating_add(cool).unwrap_or(returned) {
                return Err(format!("cooling down after its return at {returned}"));
            }
        }
        if self.policy.utilization_configured {
            match node.utilization {
                None => return Err("no fresh utilization reading".into()),
                Some(u) if u.mean_percent > self.policy.idle_max_percent => {
                    return Err(format!(
                        "utilization {:.0}% is above {}%",
                        u.mean_percent, self.policy.idle_max_percent
                    ));
                }
                Some(_) => {}
            }
        } else {
            let Some(since) = node.idle_since else {
                return Err("idle time unknown".into());
            };
            let idle = self.now.duration_since(since).as_secs();
            if idle < self.policy.idle_for_seconds {
                return Err(format!(
                    "idle for {idle}s of the {}s the pool asks",
                    self.policy.idle_for_seconds
                ));
            }
        }
        Ok(())
    }

    pub fn totals_observed(&self) -> Totals {
        let mut t = Totals::default();
        for w in self.nodes.iter().filter(|w| w.member) {
            t.nodes += 1;
            t.gpus += w.gpus;
            match w.state {
                NodeState::Internal => {
                    t.internal_used_gpus += w.used_gpus.min(w.gpus);
                    t.internal_free_gpus += w.gpus.saturating_sub(w.used_gpus);
                }
                NodeState::Lent => t.lent_gpus += w.gpus,
                NodeState::Leased => t.leased_gpus += w.gpus,
                NodeState::Reclaiming => t.reclaiming_gpus += w.gpus,
                NodeState::Scrubbing => t.scrubbing_gpus += w.gpus,
            }
        }
        t
    }

    /// The pool ledger carried forward to now at the observed rates.
    pub fn accrue(&self, t: &Totals) -> PoolLedger {
        let prev = self.snap.ledger;
        let hours = match prev.accounted_until {
            Some(since) if since < self.now => self.now.duration_since(since).as_secs_f64() / 3600.0,
            _ => 0.0,
        };
        PoolLedger {
            harvestable_gpu_hours: prev.harvestable_gpu_hours + f64::from(t.harvestable_gpus) * hours,
            lent_gpu_hours: prev.lent_gpu_hours + f64::from(t.leased_gpus + t.reclaiming_gpus) * hours,
            accounted_until: Some(prev.accounted_until.map_or(self.now, |a| a.max(self.now))),
        }
    }

    /// One report per member node; the reasons the plan gave move into them.
    pub fn node_reports(&mut self) -> Vec<NodeReport> {
        let mut reasons: Vec<String> = self.nodes.iter_mut().map(|w| std::mem::take(&mut w.reason)).collect();
        let mut reports = Vec::with_capacity(self.nodes.iter().filter(|w| w.member).count());
        let each = self.nodes.iter().enumerate().filter(|(_, w)| w.member).map(|(n, w)| {
            let node = &self.snap.nodes[n];
            let reason = if !reasons[n].is_empty() {
                std::mem::take(&mut reasons[n])
            } else {
                match node.marks.state {
                    NodeState::Internal => "serving internal work".to_string(),
                    NodeState::Lent => "lent, waiting for a lease".to_string(),
                    NodeState::Leased => ["leased to ", self.lease_key(n).unwrap_or("?")].concat(),
                    NodeState::Reclaiming => "under reclaim notice".to_string(),
                    NodeState::Scrubbing => "scrubbing".to_string(),
                }
            };
            NodeReport {
                name: node.name.clone(),
                state: node.marks.state,
                lease: node.marks.lease.clone(),
                gpus: w.gpus,
                model: self.model(n).map(str::to_string),
                since: node.marks.since,
                reason,
            }
        });
        reports.extend(each);
        reports
    }

    /// The member nodes out under each lease, in node order: all in one array, lease `l`'s from `first[l]` to
    /// `first[l + 1]`.
    fn nodes_by_lease(&self) -> (Vec<usize>, Vec<usize>) {
        let holder = |w: &NodeDraft| w.lease.filter(|_| w.member && w.state != NodeState::Internal);
        let mut first = vec![0usize; self.snap.leases.len() + 1];
        for l in self.nodes.iter().filter_map(holder) {
            first[l + 1] += 1;
        }
        for l in 0..self.snap.leases.len() {
            first[l + 1] += first[l];
        }
        let mut at = first.clone();
        let mut nodes = vec![0usize; first[self.snap.leases.len()]];
        for (n, w) in self.nodes.iter().enumerate() {
            if let Some(l) = holder(w) {
                nodes[at[l]] = n;
                at[l] += 1;
            }
        }
        (nodes, first)
    }

    pub fn lease_reports(&self) -> Vec<LeaseReport> {
        let (nodes_of, first) = self.nodes_by_lease();
        let mut bound_said = CountSaid::default();
        self.snap
            .leases
            .iter()
            .enumerate()
            .map(|(l, lease)| {
                let nodes = &nodes_of[first[l]..first[l + 1]];
                let gpus = nodes.iter().map(|&n| self.nodes[n].gpus).sum();
                let reclaiming: Vec<usize> = nodes
                    .iter()
                    .copied()
                    .filter(|&n| self.nodes[n].state == NodeState::Reclaiming)
                    .collect();
                let deadline = reclaiming.iter().filter_map(|&n| self.nodes[n].deadline).min();
                let bound_at = self.bound_at[l].or_else(|| (!self.bound[l].is_empty()).then_some(self.now));
                let expired = lease
                    .duration_seconds
                    .zip(bound_at)
                    .and_then(|(d, b)| b.checked_add(SignedDuration::from_secs(d)).ok())
                    .is_some_and(|end| self.now >= end);
                let (phase, reason) = if lease.phase.is_final() {
                    (lease.phase, "finished".to_string())
                } else if !reclaiming.is_empty() {
                    (
                        LeasePhase::Reclaiming,
                        format!("{} of {} nodes under notice", reclaiming.len(), nodes.len()),
                    )
                } else if !nodes.is_empty() {
                    (
                        LeasePhase::Bound,
                        bound_said.say(nodes.len(), |k| format!("{k} nodes bound")),
                    )
                } else if bound_at.is_some() && expired {
                    (
                        LeasePhase::Expired,
                        "the lease's duration ran out and its nodes went back".to_string(),
                    )
                } else if bound_at.is_some() || lease.deleting {
                    (LeasePhase::Released, "all nodes went back".to_string())
                } else {
                    let why = &self.lease_reasons[l];
                    (
                        LeasePhase::Pending,
                        if why.is_empty() {
                            "waiting for lent nodes".to_string()
                        } else {
                            why.clone()
                        },
                    )
                };
                LeaseReport {
                    namespace: lease.namespace.clone(),
                    name: lease.name.clone(),
                    phase,
                    reason,
                    nodes: nodes.iter().map(|&n| self.snap.nodes[n].name.clone()).collect(),
                    gpus,
                    deadline,
                    price_per_gpu_hour: self.lease_price(l),
                    bound_at,
                    unschedulable: phase == LeasePhase::Pending && self.unschedulable[l],
                }
            })
            .collect()
    }
}
