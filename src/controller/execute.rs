//! Execute: carrying a plan's steps out as API writes.
//!
//! ```text
//!   steps ──lanes (steps sharing a node, in plan order)──▶ up to 32 lanes at once ──▶ outcomes, in plan order
//!   + tenant pods terminating past their deadline (overdue_terminating)
//!   then: sublet's marks put right on nodes no step wrote (reassert)
//! ```
//!
//! Node labels, annotations and taints go in one JSON merge patch that carries the node's
//! `resourceVersion`: the taint list is atomic, so it is read, changed and written whole, and a 409 means
//! someone else wrote the node first — read it again and redo the change. Every write has a timeout and is
//! counted by kind and outcome; no write is made unless this replica leads.
//!
//! Evictions are evict.rs's: a tenant pod leaves at its deadline with a grace capped by the pool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Context, Error, timed};
use crate::api::keys::{
    DEADLINE_ANNOTATION, LEASE_LABEL, LEASE_TAINT, LEASE_UID_ANNOTATION, LENT_TAINT, POOL_LABEL, RECLAIMING_TAINT,
    RETURNED_ANNOTATION, SCRUB_FAILED_ANNOTATION, SCRUB_JOB_ANNOTATION, SINCE_ANNOTATION, STATE_LABEL,
};
use crate::policy::{Action, NodeState, Snapshot, Step};

/// What happened to one step.
#[derive(Debug)]
pub struct Outcome {
    pub step: Step,
    pub result: Result<Done, Error>,
}

/// A step that went through, and how.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Written,
    /// Nothing to write: the cluster already showed it.
    AlreadySo,
    /// An eviction a PDB refused (429) or the API did not answer in time: tried again on the next pass.
    Blocked,
    /// An eviction past the deadline and the grace cap, done by deleting the pod.
    Deleted,
}

const CONFLICT_RETRIES: usize = 5;
/// Lanes (steps on disjoint sets of nodes) carried out at once.
const LANES_IN_FLIGHT: usize = 32;

pub(super) fn is_status(err: &Error, code: u16) -> bool {
    matches!(err, Error::Kube(kube::Error::Api(s)) if s.code == code)
}

pub(super) fn is_status_of<T>(result: &Result<T, Error>, code: u16) -> bool {
    matches!(result, Err(e) if is_status(e, code))
}

/// Where a step acts: the nodes it writes or whose pods it annotates. Steps that share a node keep their plan
/// order; the rest run side by side, so one node whose writes hang never holds up another. An eviction
/// writes no node (it comes after the deadline the node already carries) and runs on its own: one pod whose
/// eviction hangs holds up no other.
fn step_nodes<'a>(step: &'a Step, pod_nodes: &'a HashMap<(&str, &str), &str>) -> Vec<&'a str> {
    match &step.action {
        Action::Evict { .. } => vec![],
        Action::Lend { node }
        | Action::Unlend { node }
        | Action::Return { node, .. }
        | Action::Notice { node, .. }
        | Action::Scrub { node, .. } => {
            vec![node.as_str()]
        }
        Action::Bind { nodes, .. } => nodes.iter().map(String::as_str).collect(),
        Action::AnnotatePod { namespace, name, .. } => pod_nodes
            .get(&(namespace.as_str(), name.as_str()))
            .copied()
            .into_iter()
            .collect(),
    }
}

/// Splits `steps` into lanes: the indices of steps connected through a shared node, each lane in plan
/// order; a step that touches no known node is a lane of its own.
fn lanes(steps: &[Step], pod_nodes: &HashMap<(&str, &str), &str>) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..steps.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for node in step_nodes(step, pod_nodes) {
            match first.get(node) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    first.insert(node, i);
                }
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..steps.len() {
        let r = root(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    by_root.into_values().collect()
}

/// How the pool takes nodes back, as the executor needs it.
#[derive(Clone, Copy, Debug)]
pub struct Reclaim {
    /// The most grace a tenant pod gets at eviction (`reclaim.maxGraceSeconds`).
    pub max_grace_seconds: i64,
}

/// Carries out `steps` for `pool`: steps on the same node in plan order, steps on different nodes side by
/// side; a failed step does not stop the others (the next pass sees what went through and plans again).
/// `snapshot` tells which node each pod runs on. Outcomes come back in plan order.
pub async fn execute(
    ctx: &Context,
    pool: &str,
    steps: &[Step],
    snapshot: &Snapshot,
    reclaim: Reclaim,
    now: Timestamp,
) -> Vec<Outcome> {
    let pod_nodes: HashMap<(&str, &str), &str> = snapshot
        .pods
        .iter()
        .filter_map(|p| {
            let node = snapshot.nodes.get(p.node?)?;
            Some(((p.namespace.as_str(), p.name.as_str()), node.name.as_str()))
        })
        .collect();
    let lanes = lanes(steps, &pod_nodes);
    // Collected first: a stream over a lazy iterator of closures is not Send across the awaits below.
    let runs: Vec<_> = lanes
        .into_iter()
        .map(|lane| async move {
            let mut out = Vec::with_capacity(lane.len());
            // A tenant is told a deadline only once its node's notice is written: a pod annotated after a
            // failed notice would be told again, another deadline, by the next pass's notice.
            let mut notice_failed = false;
            for i in lane {
                let step = &steps[i];
                let outcome = if notice_failed && matches!(step.action, Action::AnnotatePod { .. }) {
                    Outcome {
                        step: step.clone(),
                        result: Err(Error::Refused("the notice on its node was not written".into())),
                    }
                } else {
                    run_step(ctx, pool, step, reclaim, now).await
                };
                notice_failed |= matches!(step.action, Action::Notice { .. }) && outcome.result.is_err();
                out.push((i, outcome));
            }
            out
        })
        .collect();
    let mut done: Vec<(usize, Outcome)> = futures::stream::iter(runs)
        .buffer_unordered(LANES_IN_FLIGHT)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, o)| o).collect()
}

/// Puts sublet's marks right on the pool's nodes that no step of this pass wrote, where they disagree with
/// what sublet holds true (a taint removed or changed by someone else, a deadline annotation rewritten):
/// node marks are sublet's output, never its input. Answers the nodes put right and what differed.
pub async fn reassert(
    ctx: &Context,
    pool: &str,
    snapshot: &Snapshot,
    steps: &[Step],
    now: Timestamp,
) -> Vec<(Arc<Node>, &'static str)> {
    let no_pods = HashMap::new();
    let acted: HashSet<&str> = steps.iter().flat_map(|s| step_nodes(s, &no_pods)).collect();
    let repairs = snapshot
        .nodes
        .iter()
        .filter(|n| n.marks.pool.as_deref() == Some(pool) && n.marks.state != NodeState::Internal)
        .filter(|n| !acted.contains(n.name.as_str()))
        .filter_map(|n| {
            let node = ctx.caches.node_now(&n.name)?;
            let lease = n.marks.lease.as_deref();
            let what = disagreement(&node, pool, n.marks.state, lease, n.marks.deadline)?;
            Some(async move {
                if !ctx.is_leader() {
                    return None;
                }
                let m = |live: &Node| mark(live, pool, Mark::Reassert(n.marks.state, lease, n.marks.deadline), now);
                match update_node(ctx, &n.name, m).await {
                    Ok(Done::Written) => Some((node, what)),
                    Ok(_) => None,
                    Err(err) => {
                        tracing::warn!(pool, node = %n.name, %err, "could not put the node's marks right");
                        None
                    }
                }
            })
        })
        .collect::<Vec<_>>();
    futures::stream::iter(repairs)
        .buffer_unordered(LANES_IN_FLIGHT)
        .filter_map(std::future::ready)
        .collect()
        .await
}

async fn run_step(ctx: &Context, pool: &str, step: &Step, reclaim: Reclaim, now: Timestamp) -> Outcome {
    if !ctx.is_leader() {
        return Outcome {
            step: step.clone(),
            result: Err(Error::NotLeader),
        };
    }
    let result = match &step.action {
        Action::Lend { node } => match gpu_pod_bound_to(ctx, pool, node).await {
            Ok(None) => update_node(ctx, node, |n| mark(n, pool, Mark::Lend, now)).await,
            Ok(Some(pod)) => Err(Error::Refused(format!(
                "node {node}: GPU pod {pod} was bound to it after the last pass read the cache"
            ))),
            Err(e) => Err(e),
        },
        Action::Unlend { node } | Action::Return { node, .. } => {
            update_node(ctx, node, |n| mark(n, pool, Mark::Return, now)).await
        }
        Action::Bind { namespace, name, nodes } => {
            let key = crate::api::keys::lease_key(namespace, name);
            let uid = lease_uid(ctx, namespace, name);
            // The lease carries the finalizer before it holds a node: one bound without it and deleted at once
            // would be gone with its hold unbilled and no final record.
            let mut result = super::finalize::before_binding(ctx, namespace, name).await;
            for node in nodes {
                if result.is_err() {
                    break;
                }
                // As for a lend: the scheduler may have bound an internal pod to the node in the moment it was
                // lent, and the lease taint is NoExecute, so binding now would have that pod evicted.
                let bound_already = ctx.caches.node_now(node).is_some_and(|n| {
                    n.labels().get(crate::api::keys::LEASE_LABEL).map(String::as_str) == Some(key.as_str())
                });
                let check = if bound_already {
                    Ok(None)
                } else {
                    gpu_pod_bound_to(ctx, pool, node).await
                };
                result = match check {
                    Ok(None) => update_node(ctx, node, |n| mark(n, pool, Mark::Bind(&key, uid.as_deref()), now)).await,
                    Ok(Some(pod)) => Err(Error::Refused(format!(
                        "node {node}: GPU pod {pod} was bound to it after the last pass read the cache"
                    ))),
                    Err(e) => Err(e),
                };
            }
            result
        }
        Action::Scrub { node, job, .. } => update_node(ctx, node, |n| mark(n, pool, Mark::Scrub(job), now)).await,
        Action::Notice { node, lease, deadline } => {
            let key = lease.clone().unwrap_or_default();
            let r = update_node(ctx, node, |n| mark(n, pool, Mark::Notice(&key, *deadline), now)).await;
            if r.is_ok() {
                ctx.metrics.notices.with_label_values(&[pool]).inc();
            }
            r
        }
        Action::AnnotatePod {
            namespace,
            name,
            deadline,
        } => annotate_pod(ctx, namespace, name, *deadline).await,
        Action::Evict {
            namespace,
            name,
            deadline,
            ..
        } => super::evict::evict(ctx, pool, namespace, name, *deadline, reclaim, now).await,
    };
    match &result {
        Ok(done) => tracing::debug!(pool, action = ?step.action, reason = %step.reason, ?done, "step done"),
        Err(err) => tracing::warn!(pool, action = ?step.action, %err, "step failed"),
    }
    Outcome {
        step: step.clone(),
        result,
    }
}

/// The UID of a lease, as cached.
fn lease_uid(ctx: &Context, namespace: &str, name: &str) -> Option<String> {
    ctx.caches
        .leases_now()
        .iter()
        .find(|l| l.metadata.namespace.as_deref() == Some(namespace) && l.metadata.name.as_deref() == Some(name))
        .and_then(|l| l.metadata.uid.clone())
}

enum Mark<'a> {
    Lend,
    /// Bind to the lease of this key and UID.
    Bind(&'a str, Option<&'a str>),
    Notice(&'a str, Timestamp),
    Return,
    /// Take the node from its lease into Scrubbing, waiting for this Job.
    Scrub(&'a str),
    /// Put the marks of a node in `state` (bound to the lease, with the deadline of the record) back.
    Reassert(NodeState, Option<&'a str>, Option<Timestamp>),
}

/// One of sublet's taints. The lease taint is `NoExecute`: only the lease's pods stay on a leased node, even
/// ones placed there by name past the scheduler. The lent taint is `NoSchedule`: the scheduler may bind an
/// internal pod to a node in the moment sublet lends it (neither has seen the other's write yet), and with
/// `NoExecute` Kubernetes' taint manager would evict that pod at once; with `NoSchedule` it runs, and sublet
/// takes the node back as soon as it sees the pod. Under notice no new tenant pod lands (`NoSchedule`), and
/// those already there stay until the deadline.
fn taint(key: &str, value: &str) -> Taint {
    let effect = if key == LEASE_TAINT { "NoExecute" } else { "NoSchedule" };
    Taint {
        key: key.into(),
        value: Some(value.into()),
        effect: effect.into(),
        time_added: None,
    }
}

/// sublet's taints on a node in `state` of `pool`, bound to `lease` when it is.
fn our_taints(pool: &str, state: NodeState, lease: Option<&str>) -> Vec<Taint> {
    let held = match lease {
        Some(key) => taint(LEASE_TAINT, key),
        None => taint(LENT_TAINT, pool),
    };
    match state {
        NodeState::Internal => vec![],
        NodeState::Lent => vec![taint(LENT_TAINT, pool)],
        NodeState::Leased => vec![held],
        NodeState::Reclaiming => vec![held, taint(RECLAIMING_TAINT, lease.unwrap_or_default())],
        // No holder: kept off internal work and tenants alike, as a lent node is.
        NodeState::Scrubbing => vec![taint(LENT_TAINT, pool)],
    }
}

fn is_ours(t: &Taint) -> bool {
    t.key == LENT_TAINT || t.key == LEASE_TAINT || t.key == RECLAIMING_TAINT
}

/// What of sublet's marks on `node` disagrees with what sublet holds true of it (its state and lease, and
/// the deadline from the lease's record): "taints", "deadline", or nothing.
fn disagreement(
    node: &Node,
    pool: &str,
    state: NodeState,
    lease: Option<&str>,
    deadline: Option<Timestamp>,
) -> Option<&'static str> {
    let key = |t: &Taint| (t.key.clone(), t.value.clone().unwrap_or_default(), t.effect.clone());
    let mut want: Vec<_> = our_taints(pool, state, lease).iter().map(key).collect();
    let mut have: Vec<_> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| ts.iter().filter(|t| is_ours(t)).map(key).collect())
        .unwrap_or_default();
    want.sort();
    have.sort();
    if want != have {
        return Some("taints");
    }
    let annotated = node
        .annotations()
        .get(DEADLINE_ANNOTATION)
        .and_then(|d| d.parse::<Timestamp>().ok());
    (state == NodeState::Reclaiming && deadline.is_some() && annotated != deadline).then_some("deadline")
}

/// What to write on a node.
#[derive(Debug, PartialEq)]
enum Change {
    /// Labels and annotations to set (None removes), and the whole new taint list.
    Write(BTreeMap<String, Option<String>>, Vec<Taint>),
    /// The node already shows it.
    Already,
    /// The node moved on since the plan (another pool's, or bound elsewhere): the step must not happen.
    Refused(&'static str),
}

/// The labels, annotations and taints a node should carry after `m`.
fn mark(node: &Node, pool: &str, m: Mark, now: Timestamp) -> Change {
    let labels = node.labels();
    let owner = labels.get(POOL_LABEL);
    if owner.is_some_and(|o| o != pool) {
        return Change::Refused("the node belongs to another pool");
    }
    let state = labels
        .get(STATE_LABEL)
        .and_then(|s| NodeState::from_label(s))
        .unwrap_or(NodeState::Internal);
    let at = Marked {
        node,
        owned: owner.is_some(),
        state,
        taints: node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default(),
        stamp: now.to_string(),
    };
    match m {
        Mark::Lend => to_lent(at, pool),
        Mark::Bind(key, uid) => to_leased(at, key, uid),
        Mark::Notice(key, deadline) => to_reclaiming(at, key, deadline),
        Mark::Reassert(want, lease, deadline) => reasserted(at, pool, want, lease, deadline),
        Mark::Scrub(job) => to_scrubbing(at, pool, job),
        Mark::Return => to_internal(at),
    }
}

/// A node as `mark` read it: whether this pool holds it, its state, its taints, and the stamp to write.
struct Marked<'a> {
    node: &'a Node,
    owned: bool,
    state: NodeState,
    taints: Vec<Taint>,
    stamp: String,
}

/// Lends an internal node to the pool.
fn to_lent(mut at: Marked, pool: &str) -> Change {
    if at.owned {
        return Change::Already;
    }
    let mut set = BTreeMap::new();
    set.insert(POOL_LABEL.into(), Some(pool.into()));
    set.insert(STATE_LABEL.into(), Some("lent".into()));
    set.insert(SINCE_ANNOTATION.into(), Some(at.stamp));
    at.taints.retain(|t| !is_ours(t));
    at.taints.push(taint(LENT_TAINT, pool));
    Change::Write(set, at.taints)
}

/// Binds a lent node to the lease of this key (and UID, when known).
fn to_leased(mut at: Marked, key: &str, uid: Option<&str>) -> Change {
    let uid_on_node = at.node.annotations().get(LEASE_UID_ANNOTATION).map(String::as_str);
    match at.node.labels().get(LEASE_LABEL) {
        Some(k) if k == key && (uid_on_node.is_none() || uid.is_none() || uid_on_node == uid) => {
            return Change::Already;
        }
        Some(_) => return Change::Refused("the node is bound to another lease"),
        None if at.state != NodeState::Lent => return Change::Refused("the node is no longer lent"),
        None => {}
    }
    let mut set = BTreeMap::new();
    set.insert(STATE_LABEL.into(), Some("leased".into()));
    set.insert(LEASE_LABEL.into(), Some(key.into()));
    set.insert(LEASE_UID_ANNOTATION.into(), uid.map(str::to_string));
    set.insert(SINCE_ANNOTATION.into(), Some(at.stamp));
    at.taints.retain(|t| !is_ours(t));
    at.taints.push(taint(LEASE_TAINT, key));
    Change::Write(set, at.taints)
}

/// Gives the node's tenant notice, up to `deadline`.
fn to_reclaiming(mut at: Marked, key: &str, deadline: Timestamp) -> Change {
    if !at.owned {
        return Change::Refused("the node is no longer lent");
    }
    // Once given, a deadline never moves.
    if at.state == NodeState::Reclaiming && at.node.annotations().contains_key(DEADLINE_ANNOTATION) {
        return Change::Already;
    }
    let mut set = BTreeMap::new();
    set.insert(STATE_LABEL.into(), Some("reclaiming".into()));
    set.insert(SINCE_ANNOTATION.into(), Some(at.stamp));
    set.insert(DEADLINE_ANNOTATION.into(), Some(deadline.to_string()));
    if !at.taints.iter().any(|t| t.key == RECLAIMING_TAINT) {
        at.taints.push(taint(RECLAIMING_TAINT, key));
    }
    Change::Write(set, at.taints)
}

/// Puts back the taints (and deadline) of a node in `want`, when they disagree with sublet's record.
fn reasserted(mut at: Marked, pool: &str, want: NodeState, lease: Option<&str>, deadline: Option<Timestamp>) -> Change {
    if !at.owned || at.state != want || at.node.labels().get(LEASE_LABEL).map(String::as_str) != lease {
        return Change::Refused("the node's state changed since the pass read it");
    }
    if disagreement(at.node, pool, want, lease, deadline).is_none() {
        return Change::Already;
    }
    let mut set = BTreeMap::new();
    at.taints.retain(|t| !is_ours(t));
    at.taints.extend(our_taints(pool, want, lease));
    if let (NodeState::Reclaiming, Some(d)) = (want, deadline) {
        set.insert(DEADLINE_ANNOTATION.into(), Some(d.to_string()));
    }
    Change::Write(set, at.taints)
}

/// Takes the node from its lease into Scrubbing, waiting for `job`.
fn to_scrubbing(mut at: Marked, pool: &str, job: &str) -> Change {
    if !at.owned {
        return Change::Refused("the node is no longer lent");
    }
    if at.state == NodeState::Scrubbing {
        return Change::Already;
    }
    let mut set = BTreeMap::new();
    for k in [
        LEASE_LABEL,
        LEASE_UID_ANNOTATION,
        DEADLINE_ANNOTATION,
        SCRUB_FAILED_ANNOTATION,
    ] {
        set.insert(k.into(), None);
    }
    set.insert(STATE_LABEL.into(), Some("scrubbing".into()));
    set.insert(SCRUB_JOB_ANNOTATION.into(), Some(job.into()));
    set.insert(SINCE_ANNOTATION.into(), Some(at.stamp.clone()));
    // The tenant's hold ends here: the ledger closes it at this stamp if the status write is lost.
    set.insert(RETURNED_ANNOTATION.into(), Some(at.stamp));
    at.taints.retain(|t| !is_ours(t));
    at.taints.extend(our_taints(pool, NodeState::Scrubbing, None));
    Change::Write(set, at.taints)
}

/// Returns the node to internal use: every mark of sublet's off, the return stamped.
fn to_internal(mut at: Marked) -> Change {
    if !at.owned {
        return Change::Already;
    }
    let mut set = BTreeMap::new();
    for k in [
        POOL_LABEL,
        STATE_LABEL,
        LEASE_LABEL,
        LEASE_UID_ANNOTATION,
        SINCE_ANNOTATION,
        DEADLINE_ANNOTATION,
        SCRUB_JOB_ANNOTATION,
        SCRUB_FAILED_ANNOTATION,
    ] {
        set.insert(k.into(), None);
    }
    set.insert(RETURNED_ANNOTATION.into(), Some(at.stamp));
    at.taints.retain(|t| !is_ours(t));
    Change::Write(set, at.taints)
}

/// A GPU pod the API (read now, not the cache) shows bound to `node` and not finished. The pod cache can lag
/// the scheduler by tens of milliseconds; without this read, a node could be lent just after an internal pod
/// was bound to it (rule 1). A bind between this read and the node write is still possible, only far rarer.
async fn gpu_pod_bound_to(ctx: &Context, pool: &str, node: &str) -> Result<Option<String>, Error> {
    let resource = ctx
        .caches
        .pools
        .state()
        .iter()
        .find(|p| p.name_any() == pool)
        .map(|p| p.spec.gpu_resource_name.clone())
        .unwrap_or_else(|| "nvidia.com/gpu".into());
    let api: Api<super::CachedPod> = Api::all(ctx.client.clone());
    let params = kube::api::ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = timed(api.list(&params)).await?;
    Ok(pods
        .items
        .iter()
        .find(|p| {
            let phase = p.status.phase.as_deref();
            p.gpus(&resource) > 0 && !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())))
}

/// Applies `change` to the node and writes it with the resourceVersion it was read at: first as cached
/// (it keeps every label, sublet's annotations and the taints, all `change` reads), and on a 409, or when
/// the cache has no such node, as read from the API.
async fn update_node<F>(ctx: &Context, name: &str, change: F) -> Result<Done, Error>
where
    F: Fn(&Node) -> Change,
{
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut cached = ctx.caches.node_now(name);
    for _ in 0..CONFLICT_RETRIES {
        let (node, from_cache) = match cached.take() {
            Some(node) => (node, true),
            None => {
                let node = timed(api.get(name)).await?;
                ctx.caches.wrote_node(node.clone());
                (std::sync::Arc::new(node), false)
            }
        };
        let (set, taints) = match change(&node) {
            Change::Write(set, taints) => (set, taints),
            // The cache may lag: only the API's word stops a step.
            Change::Already | Change::Refused(_) if from_cache => continue,
            Change::Already => return Ok(Done::AlreadySo),
            Change::Refused(why) => return Err(Error::Refused(format!("node {name}: {why}"))),
        };
        let (mut labels, mut annotations) = (serde_json::Map::new(), serde_json::Map::new());
        for (k, v) in set {
            let target = if k == POOL_LABEL || k == STATE_LABEL || k == LEASE_LABEL {
                &mut labels
            } else {
                &mut annotations
            };
            target.insert(k, v.map(Value::String).unwrap_or(Value::Null));
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": node.resource_version(),
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {"taints": if taints.is_empty() { Value::Null } else { serde_json::to_value(&taints)? }},
        });
        match timed(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))).await {
            Ok(written) => {
                ctx.caches.wrote_node(written);
                ctx.metrics.write("node", true);
                return Ok(Done::Written);
            }
            Err(err) if is_status(&err, 409) => {
                ctx.metrics.write("node", false);
                continue;
            }
            Err(err) => {
                ctx.metrics.write("node", false);
                return Err(err);
            }
        }
    }
    Err(Error::Conflict(name.to_string()))
}

async fn annotate_pod(ctx: &Context, namespace: &str, name: &str, deadline: Timestamp) -> Result<Done, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({"metadata": {"annotations": {DEADLINE_ANNOTATION: deadline.to_string()}}});
    match timed(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))).await {
        Ok(_) => {
            ctx.metrics.write("pod", true);
            Ok(Done::Written)
        }
        Err(err) if is_status(&err, 404) => Ok(Done::AlreadySo),
        Err(err) => {
            ctx.metrics.write("pod", false);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: serde_json::Value, annotations: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels, "annotations": annotations},
            "spec": {"taints": taints}
        }))
        .unwrap()
    }

    fn t() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn lend_keeps_foreign_taints_and_adds_ours() {
        let n = node(
            json!({}),
            json!({}),
            json!([{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]),
        );
        let Change::Write(set, taints) = mark(&n, "p", Mark::Lend, t()) else {
            panic!()
        };
        assert_eq!(set[POOL_LABEL].as_deref(), Some("p"));
        assert_eq!(set[STATE_LABEL].as_deref(), Some("lent"));
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[0].key, "nvidia.com/gpu");
        assert_eq!(taints[1].key, LENT_TAINT);
        assert_eq!(taints[1].value.as_deref(), Some("p"));
        // Not NoExecute: an internal pod the scheduler binds in the same moment is not evicted for it.
        assert_eq!(taints[1].effect, "NoSchedule");
    }

    #[test]
    fn another_pools_node_is_left_alone() {
        let n = node(json!({POOL_LABEL: "other", STATE_LABEL: "lent"}), json!({}), json!([]));
        for m in [
            Mark::Lend,
            Mark::Bind("a.b", None),
            Mark::Notice("a.b", t()),
            Mark::Return,
        ] {
            assert!(matches!(mark(&n, "p", m, t()), Change::Refused(_)));
        }
    }

    #[test]
    fn bind_swaps_the_lent_taint_for_the_lease_taint() {
        let n = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "lent"}),
            json!({}),
            json!([{"key": LENT_TAINT, "value": "p", "effect": "NoSchedule"}]),
        );
        let Change::Write(set, taints) = mark(&n, "p", Mark::Bind("acme.job", Some("u-1")), t()) else {
            panic!()
        };
        assert_eq!(set[LEASE_LABEL].as_deref(), Some("acme.job"));
        assert_eq!(
            set[LEASE_UID_ANNOTATION].as_deref(),
            Some("u-1"),
            "the node names the lease's UID"
        );
        assert_eq!(taints.len(), 1);
        assert_eq!(
            (taints[0].key.as_str(), taints[0].value.as_deref()),
            (LEASE_TAINT, Some("acme.job"))
        );
        // Binding a node bound to another lease is refused (one lease per node); to the same, a no-op.
        let bound = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "leased", LEASE_LABEL: "x.y"}),
            json!({}),
            json!([]),
        );
        assert!(matches!(
            mark(&bound, "p", Mark::Bind("acme.job", Some("u-1")), t()),
            Change::Refused(_)
        ));
        assert_eq!(mark(&bound, "p", Mark::Bind("x.y", None), t()), Change::Already);
        // The same name with another UID is another lease: refused, never taken over.
        let earlier = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "leased", LEASE_LABEL: "x.y"}),
            json!({LEASE_UID_ANNOTATION: "u-old"}),
            json!([]),
        );
        assert!(matches!(
            mark(&earlier, "p", Mark::Bind("x.y", Some("u-new")), t()),
            Change::Refused(_)
        ));
        assert_eq!(
            mark(&earlier, "p", Mark::Bind("x.y", Some("u-old")), t()),
            Change::Already
        );
    }

    #[test]
    fn a_deadline_once_given_never_moves() {
        let d = t();
        let n = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "leased", LEASE_LABEL: "a.b"}),
            json!({}),
            json!([]),
        );
        let Change::Write(set, taints) = mark(&n, "p", Mark::Notice("a.b", d), t()) else {
            panic!()
        };
        assert_eq!(set[DEADLINE_ANNOTATION].as_deref(), Some("2026-11-25T12:00:00Z"));
        assert!(taints.iter().any(|t| t.key == RECLAIMING_TAINT));
        let noticed = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "reclaiming", LEASE_LABEL: "a.b"}),
            json!({DEADLINE_ANNOTATION: "2026-11-25T11:00:00Z"}),
            json!([]),
        );
        assert_eq!(mark(&noticed, "p", Mark::Notice("a.b", d), t()), Change::Already);
    }

    #[test]
    fn return_removes_every_sublet_mark_but_the_return_time() {
        let n = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "reclaiming", LEASE_LABEL: "a.b", "keep": "me"}),
            json!({DEADLINE_ANNOTATION: "x", SINCE_ANNOTATION: "y"}),
            json!([{"key": LEASE_TAINT, "value": "a.b", "effect": "NoSchedule"},
                   {"key": RECLAIMING_TAINT, "value": "a.b", "effect": "NoSchedule"},
                   {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        );
        let Change::Write(set, taints) = mark(&n, "p", Mark::Return, t()) else {
            panic!()
        };
        for k in [
            POOL_LABEL,
            STATE_LABEL,
            LEASE_LABEL,
            SINCE_ANNOTATION,
            DEADLINE_ANNOTATION,
        ] {
            assert_eq!(set[k], None, "{k} removed");
        }
        assert!(set[RETURNED_ANNOTATION].is_some());
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, "dedicated");
    }

    fn step(action: Action) -> Step {
        Step {
            action,
            cause: crate::policy::Cause::NoticeServed,
            reason: String::new(),
        }
    }

    #[test]
    fn steps_on_one_node_keep_their_order_and_other_nodes_and_evictions_run_apart() {
        let d = t();
        let steps = vec![
            step(Action::Lend { node: "a".into() }),
            step(Action::Notice {
                node: "b".into(),
                lease: Some("x.y".into()),
                deadline: d,
            }),
            step(Action::AnnotatePod {
                namespace: "x".into(),
                name: "p".into(),
                deadline: d,
            }),
            step(Action::Bind {
                namespace: "x".into(),
                name: "z".into(),
                nodes: vec!["a".into(), "c".into()],
            }),
            step(Action::Evict {
                namespace: "x".into(),
                name: "q".into(),
                node: "d".into(),
                deadline: d,
            }),
            step(Action::Return {
                node: "c".into(),
                lease: None,
            }),
            step(Action::Evict {
                namespace: "x".into(),
                name: "r".into(),
                node: "b".into(),
                deadline: d,
            }),
        ];
        let pods = HashMap::from([(("x", "p"), "b")]);
        let lanes = lanes(&steps, &pods);
        assert_eq!(
            lanes,
            vec![vec![0, 3, 5], vec![1, 2], vec![4], vec![6]],
            "each eviction on its own"
        );
    }

    #[test]
    fn marks_that_disagree_with_the_record_are_put_back_whole() {
        let d = t();
        // A leased node whose lease taint someone removed, and a NoSchedule one from before NoExecute.
        for taints in [
            json!([{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]),
            json!([{"key": "nvidia.com/gpu", "effect": "NoSchedule"},
                   {"key": LEASE_TAINT, "value": "a.b", "effect": "NoSchedule"}]),
        ] {
            let n = node(
                json!({POOL_LABEL: "p", STATE_LABEL: "leased", LEASE_LABEL: "a.b"}),
                json!({}),
                taints,
            );
            assert_eq!(
                disagreement(&n, "p", NodeState::Leased, Some("a.b"), None),
                Some("taints")
            );
            let Change::Write(_, taints) = mark(&n, "p", Mark::Reassert(NodeState::Leased, Some("a.b"), None), d)
            else {
                panic!()
            };
            let keys: Vec<(&str, &str)> = taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
            assert_eq!(keys, [("nvidia.com/gpu", "NoSchedule"), (LEASE_TAINT, "NoExecute")]);
        }
        // A reclaiming node whose deadline annotation was moved: the record's goes back.
        let n = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "reclaiming", LEASE_LABEL: "a.b"}),
            json!({DEADLINE_ANNOTATION: "2099-01-01T00:00:00Z"}),
            json!([{"key": LEASE_TAINT, "value": "a.b", "effect": "NoExecute"},
                   {"key": RECLAIMING_TAINT, "value": "a.b", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            disagreement(&n, "p", NodeState::Reclaiming, Some("a.b"), Some(d)),
            Some("deadline")
        );
        let Change::Write(set, _) = mark(&n, "p", Mark::Reassert(NodeState::Reclaiming, Some("a.b"), Some(d)), d)
        else {
            panic!()
        };
        assert_eq!(set[DEADLINE_ANNOTATION].as_deref(), Some("2026-11-25T12:00:00Z"));
        // In agreement: nothing to write. Changed state since the pass read it: refused.
        let n = node(
            json!({POOL_LABEL: "p", STATE_LABEL: "lent"}),
            json!({}),
            json!([{"key": LENT_TAINT, "value": "p", "effect": "NoSchedule"}]),
        );
        assert_eq!(disagreement(&n, "p", NodeState::Lent, None, None), None);
        assert_eq!(
            mark(&n, "p", Mark::Reassert(NodeState::Lent, None, None), d),
            Change::Already
        );
        assert!(matches!(
            mark(&n, "p", Mark::Reassert(NodeState::Leased, Some("a.b"), None), d),
            Change::Refused(_)
        ));
    }
}
