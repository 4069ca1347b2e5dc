//! Execute: carrying a plan's steps out as API writes.
//!
//! Node labels, annotations and taints go in one JSON merge patch that carries the node's
//! `resourceVersion`: the taint list is atomic, so it is read, changed and written whole, and a 409 means
//! someone else wrote the node first — read it again and redo the change. Every write has a timeout and is
//! counted by kind and outcome; no write is made unless this replica leads.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{DeleteParams, EvictParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Context, Error, timed};
use crate::api::keys::{
    DEADLINE_ANNOTATION, LEASE_LABEL, LEASE_TAINT, LENT_TAINT, POOL_LABEL, RECLAIMING_TAINT, RETURNED_ANNOTATION,
    SINCE_ANNOTATION, STATE_LABEL,
};
use crate::policy::{Action, NodeState, Step};

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
    /// An eviction the PDB refused (429): tried again on the next pass.
    Blocked,
    /// An eviction past the deadline and the pod's grace period, done by deleting the pod.
    Deleted,
}

const CONFLICT_RETRIES: usize = 5;

fn is_status(err: &Error, code: u16) -> bool {
    matches!(err, Error::Kube(kube::Error::Api(s)) if s.code == code)
}

/// Carries out `steps` for `pool` in order; a failed step does not stop the others (the next pass sees
/// what went through and plans again).
pub async fn execute(ctx: &Context, pool: &str, steps: &[Step], now: Timestamp) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        if !ctx.is_leader() {
            out.push(Outcome {
                step: step.clone(),
                result: Err(Error::NotLeader),
            });
            continue;
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
                let mut result = Ok(Done::AlreadySo);
                for node in nodes {
                    result = update_node(ctx, node, |n| mark(n, pool, Mark::Bind(&key), now)).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
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
            } => evict(ctx, pool, namespace, name, *deadline, now).await,
        };
        match &result {
            Ok(done) => tracing::debug!(pool, action = ?step.action, reason = %step.reason, ?done, "step done"),
            Err(err) => tracing::warn!(pool, action = ?step.action, %err, "step failed"),
        }
        out.push(Outcome {
            step: step.clone(),
            result,
        });
    }
    out
}

enum Mark<'a> {
    Lend,
    Bind(&'a str),
    Notice(&'a str, Timestamp),
    Return,
}

fn taint(key: &str, value: &str) -> Taint {
    Taint {
        key: key.into(),
        value: Some(value.into()),
        effect: "NoSchedule".into(),
        time_added: None,
    }
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
    let mut taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut set: BTreeMap<String, Option<String>> = BTreeMap::new();
    let stamp = now.to_string();
    let ours = |t: &Taint| t.key == LENT_TAINT || t.key == LEASE_TAINT || t.key == RECLAIMING_TAINT;
    match m {
        Mark::Lend => {
            if owner.is_some() {
                return Change::Already;
            }
            set.insert(POOL_LABEL.into(), Some(pool.into()));
            set.insert(STATE_LABEL.into(), Some("lent".into()));
            set.insert(SINCE_ANNOTATION.into(), Some(stamp));
            taints.retain(|t| !ours(t));
            taints.push(taint(LENT_TAINT, pool));
        }
        Mark::Bind(key) => {
            match labels.get(LEASE_LABEL) {
                Some(k) if k == key => return Change::Already,
                Some(_) => return Change::Refused("the node is bound to another lease"),
                None if state != NodeState::Lent => return Change::Refused("the node is no longer lent"),
                None => {}
            }
            set.insert(STATE_LABEL.into(), Some("leased".into()));
            set.insert(LEASE_LABEL.into(), Some(key.into()));
            set.insert(SINCE_ANNOTATION.into(), Some(stamp));
            taints.retain(|t| !ours(t));
            taints.push(taint(LEASE_TAINT, key));
        }
        Mark::Notice(key, deadline) => {
            if owner.is_none() {
                return Change::Refused("the node is no longer lent");
            }
            // Once given, a deadline never moves.
            if state == NodeState::Reclaiming && node.annotations().contains_key(DEADLINE_ANNOTATION) {
                return Change::Already;
            }
            set.insert(STATE_LABEL.into(), Some("reclaiming".into()));
            set.insert(SINCE_ANNOTATION.into(), Some(stamp));
            set.insert(DEADLINE_ANNOTATION.into(), Some(deadline.to_string()));
            if !taints.iter().any(|t| t.key == RECLAIMING_TAINT) {
                taints.push(taint(RECLAIMING_TAINT, key));
            }
        }
        Mark::Return => {
            if owner.is_none() {
                return Change::Already;
            }
            for k in [
                POOL_LABEL,
                STATE_LABEL,
                LEASE_LABEL,
                SINCE_ANNOTATION,
                DEADLINE_ANNOTATION,
            ] {
                set.insert(k.into(), None);
            }
            set.insert(RETURNED_ANNOTATION.into(), Some(stamp));
            taints.retain(|t| !ours(t));
        }
    }
    Change::Write(set, taints)
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

/// Evicts a tenant pod through the Eviction API. A PDB's 429 is tried again on the next pass; once the
/// deadline plus the pod's grace period has passed, the pod is deleted.
async fn evict(
    ctx: &Context,
    pool: &str,
    namespace: &str,
    name: &str,
    deadline: Timestamp,
    now: Timestamp,
) -> Result<Done, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let count = |outcome: &str| ctx.metrics.evictions.with_label_values(&[pool, outcome]).inc();
    match timed(api.evict(name, &EvictParams::default())).await {
        Ok(_) => {
            ctx.metrics.write("eviction", true);
            count("evicted");
            Ok(Done::Written)
        }
        Err(err) if is_status(&err, 404) => Ok(Done::AlreadySo),
        Err(err) if is_status(&err, 429) => {
            ctx.metrics.write("eviction", false);
            let grace = match timed(api.get(name)).await {
                Ok(pod) => pod.spec.and_then(|s| s.termination_grace_period_seconds).unwrap_or(30),
                Err(_) => 30,
            };
            let hard = deadline
                .checked_add(jiff::SignedDuration::from_secs(grace))
                .unwrap_or(deadline);
            if now < hard {
                count("blocked");
                return Ok(Done::Blocked);
            }
            match timed(api.delete(name, &DeleteParams::default())).await {
                Ok(_) => {
                    ctx.metrics.write("pod_delete", true);
                    count("deleted");
                    Ok(Done::Deleted)
                }
                Err(err) if is_status(&err, 404) => Ok(Done::AlreadySo),
                Err(err) => {
                    ctx.metrics.write("pod_delete", false);
                    count("failed");
                    Err(err)
                }
            }
        }
        Err(err) => {
            ctx.metrics.write("eviction", false);
            count("failed");
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
    }

    #[test]
    fn another_pools_node_is_left_alone() {
        let n = node(json!({POOL_LABEL: "other", STATE_LABEL: "lent"}), json!({}), json!([]));
        for m in [Mark::Lend, Mark::Bind("a.b"), Mark::Notice("a.b", t()), Mark::Return] {
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
        let Change::Write(set, taints) = mark(&n, "p", Mark::Bind("acme.job"), t()) else {
            panic!()
        };
        assert_eq!(set[LEASE_LABEL].as_deref(), Some("acme.job"));
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
            mark(&bound, "p", Mark::Bind("acme.job"), t()),
            Change::Refused(_)
        ));
        assert_eq!(mark(&bound, "p", Mark::Bind("x.y"), t()), Change::Already);
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
}
