//! Events that tell people what sublet did, each on the object it concerns:
//!
//! ```text
//!   lease  ReclaimNotice (Warning)  one per node under notice, the node as related object
//!          Evicted (Warning)        one per evicted pod, the pod as related object
//!          Bound, Released, Expired (Normal)
//!   pod    Breach (Warning)         a tenant pod on a node no lease of its namespace holds, evicted at once
//!   pool   InvalidSpec, SignalsStale, LendingBlocked (Warning), when its condition turns so
//!   node   Lent, Returned, Scrubbing (Normal), with the reason; ScrubFailed (Warning, scrub.rs)
//! ```
//! kube's recorder folds events of one object, reason and related object into one series and keeps the
//! first message, so events that must stay apart (two nodes, two pods) name a different related object.
//! Tenant-facing messages say that a node is needed back, never how much internal demand there is.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::Context;
use super::execute::{Done, Outcome};
use crate::api::keys::lease_key;
use crate::api::{Condition, GpuLease};
use crate::policy::{Action, Snapshot};

/// A reference to a cluster object by kind and name, for events about objects sublet does not hold.
pub fn reference(kind: &str, namespace: Option<&str>, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some(kind.into()),
        namespace: namespace.map(Into::into),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Publishes an event on `regarding`, with an optional related object; a failure is counted, never fatal.
pub async fn publish_to(
    ctx: &Context,
    regarding: &ObjectReference,
    related: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: related,
    };
    let result = ctx.recorder.publish(&event, regarding).await;
    if let Err(e) = &result {
        tracing::warn!(error = %e, reason, "event not recorded");
    }
    ctx.metrics.write("event", result.is_ok());
}

/// What a tenant is told for a node under notice.
pub fn notice_note(node: &str, deadline: Timestamp, now: Timestamp) -> String {
    let secs = deadline.duration_since(now).as_secs().max(0);
    format!(
        "reclaim notice: node {node} is needed back for internal work; it goes back at {deadline} (in {secs}s): \
         checkpoint and stop the pods there"
    )
}

/// Events for the lease steps that went through: a bind, each node under notice, each evicted pod.
pub async fn lease_events(
    ctx: &Context,
    snapshot: &Snapshot,
    outcomes: &[Outcome],
    by_name: &HashMap<(&str, &str), &GpuLease>,
) {
    let now = snapshot.now;
    let by_key: HashMap<String, &GpuLease> = by_name
        .iter()
        .map(|((namespace, name), lease)| (lease_key(namespace, name), *lease))
        .collect();
    let lease_of_node = |node: &str| {
        snapshot
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.marks.lease.as_deref())
            .and_then(|key| by_key.get(key))
    };
    for o in outcomes
        .iter()
        .filter(|o| matches!(o.result, Ok(Done::Written) | Ok(Done::Deleted)))
    {
        match &o.step.action {
            Action::Bind { namespace, name, nodes } => {
                if let Some(lease) = by_name.get(&(namespace.as_str(), name.as_str())) {
                    let note = format!("bound {}", nodes.join(", "));
                    super::report::publish(ctx, *lease, EventType::Normal, "Bound", "Bind", &note).await;
                }
            }
            Action::Notice {
                node,
                lease: Some(key),
                deadline,
            } => {
                if let Some(lease) = by_key.get(key.as_str()) {
                    notice_event(ctx, lease, node, *deadline, now).await;
                }
            }
            Action::Evict {
                namespace, name, node, ..
            } if o.step.cause == crate::policy::Cause::Breach => {
                ctx.metrics.breaches.with_label_values(&[pool_of(snapshot)]).inc();
                let pod = reference("Pod", Some(namespace), name);
                publish_to(ctx, &pod, None, EventType::Warning, "Breach", "Evict", &o.step.reason).await;
            }
            Action::Evict {
                namespace, name, node, ..
            } => {
                if let Some(lease) = lease_of_node(node) {
                    eviction_event(ctx, lease, namespace, name, node).await;
                }
            }
            _ => {}
        }
    }
}

/// A warning on the lease that its node is under notice, naming the node.
async fn notice_event(ctx: &Context, lease: &GpuLease, node: &str, deadline: Timestamp, now: Timestamp) {
    let regarding = kube::Resource::object_ref(lease, &());
    let node_ref = reference("Node", None, node);
    let note = notice_note(node, deadline, now);
    publish_to(
        ctx,
        &regarding,
        Some(node_ref),
        EventType::Warning,
        "ReclaimNotice",
        "Notice",
        &note,
    )
    .await;
}

/// A warning on the lease that one of its pods was evicted at the reclaim deadline, naming the pod.
async fn eviction_event(ctx: &Context, lease: &GpuLease, namespace: &str, name: &str, node: &str) {
    let regarding = kube::Resource::object_ref(lease, &());
    let pod = reference("Pod", Some(namespace), name);
    let note = format!("evicted pod {namespace}/{name} from node {node} at the reclaim deadline");
    publish_to(
        ctx,
        &regarding,
        Some(pod),
        EventType::Warning,
        "Evicted",
        "Evict",
        &note,
    )
    .await;
}

fn pool_of(snapshot: &Snapshot) -> &str {
    &snapshot.policy.name
}

/// Normal events on nodes lent out of internal use, returned to it, or taken into Scrubbing, with the reason.
pub async fn node_events(ctx: &Context, pool: &str, outcomes: &[Outcome]) {
    for o in outcomes.iter().filter(|o| matches!(o.result, Ok(Done::Written))) {
        let (node, reason, action, note) = match &o.step.action {
            Action::Lend { node } => (node, "Lent", "Lend", format!("lent by pool {pool}: {}", o.step.reason)),
            Action::Unlend { node } | Action::Return { node, .. } => (
                node,
                "Returned",
                "Return",
                format!("back in internal use from pool {pool}: {}", o.step.reason),
            ),
            Action::Scrub { node, job, .. } => (
                node,
                "Scrubbing",
                "Scrub",
                format!(
                    "its tenant left ({}); held out of use until scrub job {job} completes",
                    o.step.reason
                ),
            ),
            _ => continue,
        };
        publish_to(
            ctx,
            &reference("Node", None, node),
            None,
            EventType::Normal,
            reason,
            action,
            &note,
        )
        .await;
    }
}

/// The Warning events a pool's new conditions call for: those that turned bad since `old`.
pub fn pool_warnings(old: &[Condition], new: &[Condition]) -> Vec<(&'static str, String)> {
    let find = |list: &[Condition], t: &str| list.iter().find(|c| c.type_ == t).cloned();
    let turned = |t: &str, status: &str, reason: Option<&str>| {
        let now = find(new, t).filter(|c| c.status == status && reason.is_none_or(|r| c.reason == r))?;
        let before = find(old, t);
        let was = before.is_some_and(|c| c.status == status && reason.is_none_or(|r| c.reason == r));
        (!was).then_some(now.message)
    };
    let mut out = Vec::new();
    if let Some(m) = turned("Ready", "False", Some("InvalidSpec")) {
        out.push(("InvalidSpec", m));
    }
    if let Some(m) = turned("SignalsFresh", "False", None) {
        out.push(("SignalsStale", m));
    }
    if let Some(m) = turned("Lending", "False", Some("Blocked")) {
        out.push(("LendingBlocked", m));
    }
    if let Some(m) = turned(super::overlap::CONDITION, "True", None) {
        out.push((super::overlap::CONDITION, m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConditionStatus, set_condition};

    fn conditions(list: &[(&str, ConditionStatus, &str, &str)]) -> Vec<Condition> {
        let mut out = Vec::new();
        for (t, s, r, m) in list {
            set_condition(&mut out, t, *s, r, m, None, Timestamp::UNIX_EPOCH);
        }
        out
    }

    #[test]
    fn a_warning_once_when_a_condition_turns_bad() {
        use ConditionStatus::*;
        let healthy = conditions(&[
            ("Ready", True, "Reconciled", ""),
            ("SignalsFresh", True, "Fresh", ""),
            ("Lending", True, "Lending", ""),
        ]);
        let stale = conditions(&[
            ("Ready", True, "Reconciled", ""),
            ("SignalsFresh", False, "Stale", "utilization: no sample"),
            ("Lending", False, "Blocked", "signals are stale"),
        ]);
        assert_eq!(
            pool_warnings(&healthy, &stale),
            vec![
                ("SignalsStale", "utilization: no sample".to_string()),
                ("LendingBlocked", "signals are stale".to_string())
            ]
        );
        assert!(pool_warnings(&stale, &stale).is_empty(), "said once, not every pass");
        let invalid = conditions(&[("Ready", False, "InvalidSpec", "unknown timeZone Mars/Olympus")]);
        assert_eq!(
            pool_warnings(&[], &invalid),
            vec![("InvalidSpec", "unknown timeZone Mars/Olympus".to_string())]
        );
        let observe = conditions(&[("Lending", False, "ObserveMode", "would lend 8 GPUs")]);
        assert!(
            pool_warnings(&healthy, &observe).is_empty(),
            "Observe mode is no warning"
        );
    }

    #[test]
    fn the_notice_names_the_node_and_no_internal_demand() {
        let now = Timestamp::from_second(1_000).unwrap();
        let note = notice_note("gpu-3", Timestamp::from_second(1_120).unwrap(), now);
        assert!(note.contains("node gpu-3 is needed back for internal work"), "{note}");
        assert!(note.contains("(in 120s)"), "{note}");
        assert!(!note.contains("pending") && !note.contains("reserve"), "{note}");
    }
}
