//! Scrubbing nodes between holders: the Jobs behind [`crate::policy::scrub`].
//!
//! ```text
//!   read()  before the plan   Jobs labelled with the pool, in sublet's namespace (from the API, so a restart
//!                             sees them) ──▶ each scrubbing node's ScrubView in the snapshot
//!   act()   after execute     per ScrubReport: Create → the Job (its name from node + lease UID: a second
//!                             create is a 409, never a second Job); Failed → the node's scrub-failed
//!                             annotation, a Warning event and the failed/timeout count, once; Done and
//!                             returned → the succeeded count, the duration, the Job deleted; a Job of a
//!                             node no longer scrubbing → deleted
//! ```
//!
//! The release path for a failed scrub: delete the Job (`kubectl -n NAMESPACE delete job NAME`, both named
//! in the node's reason and annotation). The node still scrubs, so the next pass creates the Job again and
//! the node goes back once that one completes.

use std::collections::{BTreeMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use super::execute::{Done, Outcome};
use super::{Context, Error, timed};
use crate::api::TenantPool;
use crate::api::keys::{
    FIELD_MANAGER, LEASE_TAINT, LENT_TAINT, POOL_LABEL, RECLAIMING_TAINT, SCRUB_FAILED_ANNOTATION,
    SCRUB_JOB_ANNOTATION, SCRUB_NODE_LABEL,
};
use crate::policy::{Action, Cause, JobOutcome, NodeState, Plan, ScrubJob, ScrubStage, ScrubView, Snapshot};

/// The pool's scrub Jobs, as read this pass (name → Job).
pub type Jobs = BTreeMap<String, Job>;

/// Reads the pool's scrub Jobs and tells each scrubbing node's view in `snapshot`. Nothing is read for a
/// pool with neither a scrub nor a scrubbing node.
pub async fn read(ctx: &Context, pool: &TenantPool, snapshot: &mut Snapshot) -> Result<Jobs, Error> {
    let name = pool.name_any();
    let scrubbing = snapshot
        .nodes
        .iter()
        .any(|n| n.marks.state == NodeState::Scrubbing && n.marks.pool.as_deref() == Some(name.as_str()));
    if !scrubbing && pool.spec.scrub.is_none() {
        return Ok(Jobs::new());
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.config.lease_namespace);
    let params = ListParams::default().labels(&format!("{POOL_LABEL}={name},{SCRUB_NODE_LABEL}"));
    let jobs: Jobs = timed(api.list(&params))
        .await?
        .items
        .into_iter()
        .map(|j| (j.name_any(), j))
        .collect();
    for n in snapshot.nodes.iter_mut() {
        if n.marks.state != NodeState::Scrubbing || n.marks.pool.as_deref() != Some(name.as_str()) {
            continue;
        }
        let node = ctx.caches.node_now(&n.name);
        let job = node
            .as_ref()
            .and_then(|n| n.annotations().get(SCRUB_JOB_ANNOTATION).cloned());
        // Only a Job sublet made for this very node counts, whatever a node's annotation names.
        let state = job
            .as_ref()
            .and_then(|j| jobs.get(j))
            .filter(|j| j.labels().get(SCRUB_NODE_LABEL) == Some(&n.name))
            .map(view);
        n.scrub = Some(ScrubView { job, state });
    }
    Ok(jobs)
}

/// What a Job shows, for the planner.
pub fn view(job: &Job) -> ScrubJob {
    let created = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let on = |t: &str| conditions.and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"));
    let outcome = if let Some(c) = on("Complete") {
        JobOutcome::Complete(c.last_transition_time.as_ref().map_or(created, |t| t.0))
    } else if let Some(c) = on("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        JobOutcome::Failed(match &c.message {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason,
        })
    } else {
        JobOutcome::Running
    };
    ScrubJob { created, outcome }
}

/// The Job that scrubs `node` for `pool`: the pool's template pinned to the node, tolerating sublet's taints,
/// labelled and owned so that it is found after a restart and goes with the pool.
pub fn job(
    pool: &TenantPool,
    spec: &crate::api::ScrubSpec,
    namespace: &str,
    name: &str,
    node: &str,
) -> Result<Job, Error> {
    let pool_name = pool.name_any();
    let labels = json!({ POOL_LABEL: pool_name, SCRUB_NODE_LABEL: node });
    let mut template = match &spec.template {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let pod_labels = object(object(&mut template, "metadata"), "labels");
    pod_labels.insert(POOL_LABEL.into(), json!(pool_name));
    pod_labels.insert(SCRUB_NODE_LABEL.into(), json!(node));
    let pod = object(&mut template, "spec");
    pod.insert("nodeName".into(), json!(node));
    pod.entry("restartPolicy").or_insert(json!("Never"));
    let tolerations = pod.entry("tolerations").or_insert(json!([]));
    if let Value::Array(list) = tolerations {
        for key in [LENT_TAINT, LEASE_TAINT, RECLAIMING_TAINT] {
            list.push(json!({"key": key, "operator": "Exists"}));
        }
    }
    let owner = pool
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Refused(format!("pool {pool_name} has no UID yet")))?;
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.timeout_seconds,
            "template": template,
        },
    });
    Ok(serde_json::from_value(job)?)
}

/// `map[key]` as an object, made one when absent or not an object.
fn object<'a>(map: &'a mut serde_json::Map<String, Value>, key: &str) -> &'a mut serde_json::Map<String, Value> {
    let slot = map.entry(key).or_insert(json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// Scrubbing and scrub-failed nodes once this pass's steps are done, for the pool status.
pub fn counts(plan: &Plan) -> (i32, i32) {
    let entering = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Scrub { .. }))
        .count();
    let returned = |node: &str| {
        plan.steps
            .iter()
            .any(|st| matches!(&st.action, Action::Return { node: n, .. } if n == node))
    };
    let staying: Vec<&ScrubStage> = plan
        .scrubs
        .iter()
        .filter(|s| !matches!(s.stage, ScrubStage::Done { .. }) && !returned(&s.node))
        .map(|s| &s.stage)
        .collect();
    let failed = staying.iter().filter(|s| matches!(s, ScrubStage::Failed(_))).count();
    ((entering + staying.len()) as i32, failed as i32)
}

/// Carries out the scrubs' side of the pass (Enforce mode, as leader): see the module doc.
pub async fn act(ctx: &Context, pool: &TenantPool, plan: &Plan, outcomes: &[Outcome], jobs: &Jobs) {
    let pool_name = pool.name_any();
    let namespace = ctx.config.lease_namespace.as_str();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let written = |node: &str, want: fn(&Action) -> bool| {
        outcomes.iter().any(|o| {
            want(&o.step.action)
                && step_node(&o.step.action) == Some(node)
                && matches!(o.result, Ok(Done::Written | Done::AlreadySo))
        })
    };
    // Nodes that entered Scrubbing in this pass: their Jobs are made now rather than a pass later.
    let mut create: Vec<(String, String)> = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .filter_map(|o| match &o.step.action {
            Action::Scrub { node, job, .. } => Some((node.clone(), job.clone())),
            _ => None,
        })
        .collect();
    let mut keep: HashSet<String> = HashSet::new();
    for s in &plan.scrubs {
        keep.insert(s.job.clone());
        match &s.stage {
            ScrubStage::Create => create.push((s.node.clone(), s.job.clone())),
            ScrubStage::Running(_) => {}
            ScrubStage::Failed(why) => failed(ctx, pool, &s.node, &s.job, why).await,
            ScrubStage::Done { created, completed } => {
                if written(&s.node, |a| matches!(a, Action::Return { .. })) {
                    keep.remove(&s.job);
                    count_succeeded(ctx, &pool_name, outcomes, &s.node, completed.duration_since(*created));
                }
            }
        }
    }
    if let Some(spec) = &pool.spec.scrub {
        for (node, name) in &create {
            keep.insert(name.clone());
            if jobs.contains_key(name) {
                continue;
            }
            let result = match job(pool, spec, namespace, name, node) {
                Ok(j) => timed(api.create(&PostParams::default(), &j)).await,
                Err(e) => Err(e),
            };
            ctx.metrics
                .write("job", result.is_ok() || super::execute::is_status_of(&result, 409));
            match result {
                Ok(_) => {
                    tracing::info!(pool = %pool_name, node, job = name, "scrub job created");
                    // A Job made again after one was deleted is a retry: the failure it answered is past.
                    clear_failed(ctx, node).await;
                }
                Err(e) if super::execute::is_status(&e, 409) => {}
                Err(e) => tracing::warn!(pool = %pool_name, node, job = name, error = %e, "scrub job not created"),
            }
        }
    }
    // Jobs of nodes that no longer scrub (returned, or the pool stopped scrubbing): theirs is done.
    for name in jobs.keys().filter(|j| !keep.contains(*j)) {
        let params = DeleteParams::background();
        let result = timed(api.delete(name, &params)).await;
        let ok = result.is_ok() || matches!(&result, Err(e) if super::execute::is_status(e, 404));
        ctx.metrics.write("job", ok);
        if !ok {
            tracing::warn!(pool = %pool_name, job = name, "finished scrub job not deleted");
        }
    }
}

/// Counts a scrub that succeeded, with how long it took, once: in the pass whose write returned its node.
fn count_succeeded(ctx: &Context, pool: &str, outcomes: &[Outcome], node: &str, took: SignedDuration) {
    let returned_now = outcomes.iter().any(|o| {
        o.step.cause == Cause::Scrubbed
            && matches!(&o.step.action, Action::Return { node: n, .. } if n == node)
            && matches!(o.result, Ok(Done::Written))
    });
    if returned_now {
        ctx.metrics.scrubs.ended.with_label_values(&[pool, "succeeded"]).inc();
        let secs = took.as_secs_f64().max(0.0);
        ctx.metrics.scrubs.duration.with_label_values(&[pool]).observe(secs);
    }
}

fn step_node(a: &Action) -> Option<&str> {
    match a {
        Action::Return { node, .. } | Action::Scrub { node, .. } => Some(node),
        _ => None,
    }
}

/// Records a failed scrub on the node, once: the annotation says why (and survives a restart), the Warning
/// event and the count go with the annotation's first write.
async fn failed(ctx: &Context, pool: &TenantPool, node: &str, job: &str, why: &str) {
    let Some(live) = ctx.caches.node_now(node) else { return };
    if live.annotations().contains_key(SCRUB_FAILED_ANNOTATION) {
        return;
    }
    let namespace = &ctx.config.lease_namespace;
    let note = format!(
        "scrub job {namespace}/{job} on node {node} failed: {why}; the node stays out of use until the job is \
         deleted (kubectl -n {namespace} delete job {job}), which scrubs it again"
    );
    if !annotate(ctx, node, Some(&note)).await {
        return;
    }
    let result = if why.starts_with("not complete within") || why.starts_with("DeadlineExceeded") {
        "timeout"
    } else {
        "failed"
    };
    ctx.metrics
        .scrubs
        .ended
        .with_label_values(&[&pool.name_any(), result])
        .inc();
    let regarding = super::events::reference("Node", None, node);
    super::events::publish_to(ctx, &regarding, None, EventType::Warning, "ScrubFailed", "Scrub", &note).await;
    let pool_ref = pool.object_ref(&());
    super::events::publish_to(
        ctx,
        &pool_ref,
        Some(regarding),
        EventType::Warning,
        "ScrubFailed",
        "Scrub",
        &note,
    )
    .await;
}

async fn clear_failed(ctx: &Context, node: &str) {
    if ctx
        .caches
        .node_now(node)
        .is_some_and(|n| n.annotations().contains_key(SCRUB_FAILED_ANNOTATION))
    {
        annotate(ctx, node, None).await;
    }
}

/// Sets (or removes) the node's scrub-failed annotation: a merge patch of one annotation, which no other
/// writer's change can conflict with.
async fn annotate(ctx: &Context, node: &str, value: Option<&str>) -> bool {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({"metadata": {"annotations": {SCRUB_FAILED_ANNOTATION: value}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let result = timed(api.patch(node, &params, &Patch::Merge(&patch))).await;
    ctx.metrics.write("node", result.is_ok());
    match result {
        Ok(n) => {
            ctx.caches.wrote_node(n);
            true
        }
        Err(e) => {
            tracing::warn!(node, error = %e, "scrub-failed annotation not written");
            false
        }
    }
}
