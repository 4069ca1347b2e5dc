//! Node health in the plan: tenant pods where they have no lease (breaches), and leased nodes that cannot
//! serve their tenant (not Ready, or fewer GPUs than bound).
//!
//! ```text
//!   breaches (first):   a running tenant pod on a member node that no lease of its namespace holds (Internal,
//!                       Lent, or another namespace's lease) → Evict now, cause Breach: no notice, the node is
//!                       not theirs
//!   unusable (step 3):  a leased node that serves its tenant nothing (not Ready, or no GPU left) goes back
//!                       while internal work of its class (or of any class) waits, whether or not it can serve
//!                       that work: a lease at 0 usable GPUs is not left Bound under internal demand
//!   degraded (step 3):  a deficit of a class takes its degraded leased nodes first, not Ready ones before
//!                       shrunk ones; each counts what it can serve once back (0 while not Ready), and none
//!                       uses the concurrency budget (they serve the tenant no more than they serve internal
//!                       work); then the healthy leases as before
//! ```

use super::draft::Draft;
use super::output::{Action, Cause, Step};
use super::snapshot::PodPhase;
use super::state::NodeState;

/// Whether a leased node serves its tenant less than it was bound for.
pub(super) fn degraded(w: &Draft, n: usize) -> bool {
    let node = &w.snap.nodes[n];
    !node.ready || node.held_gpus.is_some_and(|h| node.gpus < h)
}

/// The GPUs node `n` can serve now: none while not Ready.
pub(super) fn usable(w: &Draft, n: usize) -> u32 {
    if w.snap.nodes[n].ready { w.nodes[n].gpus } else { 0 }
}

/// Evicts, at once, every tenant pod on a member node that no lease of the pod's namespace holds.
pub(super) fn breaches(w: &mut Draft) {
    let now = w.now;
    let snap = w.snap;
    let mut found = Vec::new();
    for n in 0..w.nodes.len() {
        if w.nodes[n].member && w.has_tenant_pods(n) {
            breaching_pods(w, n, &mut found);
        }
    }
    for (n, p, leased) in found {
        let pod = &snap.pods[p];
        let node = &snap.nodes[n].name;
        let why = if leased {
            format!(
                "tenant pod {}/{} runs on node {node}, leased to another tenant: a breach, evicted without notice",
                pod.namespace, pod.name
            )
        } else {
            format!(
                "tenant pod {}/{} runs on node {node}, which no lease holds: a breach, evicted without notice",
                pod.namespace, pod.name
            )
        };
        let action = Action::Evict {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node: node.clone(),
            deadline: now,
        };
        w.push(action, Cause::Breach, &why);
    }
}

/// The running tenant pods on member node `n` that no lease of their namespace holds, as (node, pod, whether
/// a lease holds the node), added to `found`.
fn breaching_pods(w: &Draft, n: usize, found: &mut Vec<(usize, usize, bool)>) {
    let holder = match w.nodes[n].state {
        NodeState::Leased | NodeState::Reclaiming => match w.nodes[n].lease {
            Some(l) => Some(w.snap.leases[l].namespace.as_str()),
            // The lease is gone; its key still names the namespace it was in.
            None => w.lease_key(n).map(|k| k.split('.').next().unwrap_or("")),
        },
        NodeState::Internal | NodeState::Lent | NodeState::Scrubbing => None,
    };
    for &p in w.tenant_pods(n) {
        let pod = &w.snap.pods[p];
        // A pod not running yet may be one the scheduler bound a moment before the node's marks changed,
        // which the kubelet's admission refuses; once it runs where it should not, it is a breach.
        if pod.terminating || pod.phase != PodPhase::Running || holder == Some(pod.namespace.as_str()) {
            continue;
        }
        found.push((n, p, holder.is_some()));
    }
}

/// The plan's steps with no other step for a pod a breach evicts (no deadline annotation, no second
/// eviction at a deadline).
pub(super) fn breaches_alone(steps: Vec<Step>) -> Vec<Step> {
    let breached: Vec<(String, String)> = steps
        .iter()
        .filter(|s| s.cause == Cause::Breach)
        .filter_map(|s| match &s.action {
            Action::Evict { namespace, name, .. } => Some((namespace.clone(), name.clone())),
            _ => None,
        })
        .collect();
    if breached.is_empty() {
        return steps;
    }
    steps
        .into_iter()
        .filter(|s| {
            s.cause == Cause::Breach
                || match &s.action {
                    Action::Evict { namespace, name, .. } | Action::AnnotatePod { namespace, name, .. } => {
                        !breached.iter().any(|(ns, n)| ns == namespace && n == name)
                    }
                    _ => true,
                }
        })
        .collect()
}

/// Degraded leased nodes of class `c` (any class when None) the plan has not acted on, not Ready ones first,
/// then the fewest usable GPUs first.
pub(super) fn degraded_leased(w: &Draft, c: Option<usize>) -> Vec<usize> {
    let mut out: Vec<usize> = (0..w.nodes.len())
        .filter(|&n| {
            let node = &w.nodes[n];
            node.member
                && node.state == NodeState::Leased
                && !node.acted
                && c.is_none_or(|c| node.class == c)
                && degraded(w, n)
        })
        .collect();
    out.sort_by_key(|&n| (w.snap.nodes[n].ready, usable(w, n), w.snap.nodes[n].name.clone()));
    out
}

/// Why a degraded node goes back, in words.
pub(super) fn degraded_why(w: &Draft, n: usize) -> String {
    let node = &w.snap.nodes[n];
    if !node.ready {
        "the node is not Ready, so it serves its tenant nothing".to_string()
    } else if node.gpus == 0 {
        format!(
            "the node has none of the {} GPUs it was bound with",
            node.held_gpus.unwrap_or(0)
        )
    } else {
        format!(
            "the node has {} of the {} GPUs it was bound with",
            node.gpus,
            node.held_gpus.unwrap_or(node.gpus)
        )
    }
}

/// Whether internal work waits for class `class` (or for any class): pending internal GPU pods, or demand
/// from the other sources, however much of it the pool could serve.
fn internal_work_waits(w: &Draft, c: usize) -> bool {
    let class = w.class_names[c].as_str();
    // The draft summed the GPUs pending pods ask for: some pod asks for a GPU when the sum is above zero.
    let pods = w.pending_pods.any > 0 || w.pending_pods.by_class[c] > 0;
    pods || w
        .snap
        .demand
        .by_class
        .iter()
        .any(|(c, &g)| g > 0 && c.as_deref().is_none_or(|c| c == class))
}

/// Leased nodes that serve their tenant nothing go back while internal work of their class waits.
pub(super) fn unusable_under_demand(w: &mut Draft) {
    let unusable: Vec<usize> = degraded_leased(w, None)
        .into_iter()
        .filter(|&n| usable(w, n) == 0)
        .collect();
    for n in unusable {
        if !internal_work_waits(w, w.nodes[n].class) {
            continue;
        }
        let why = format!("taken back while internal work waits: {}", degraded_why(w, n));
        let deadline = super::plan::deadline_after_notice(w);
        w.notice(n, deadline, Cause::InternalDemand, &why);
    }
}

/// Nodes under notice that count against `maxConcurrentReclaims`: degraded ones do not.
pub(super) fn reclaiming_in_budget(w: &Draft) -> usize {
    let degraded = (0..w.nodes.len())
        .filter(|&n| w.nodes[n].member && w.nodes[n].state == NodeState::Reclaiming && degraded(w, n))
        .count();
    w.count_state(NodeState::Reclaiming) - degraded
}
