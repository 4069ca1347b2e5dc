//! The Job controller, for what kube-controller-manager's does with a Job of one pod at a time
//! (`parallelism` and `completions` 1, the defaults):
//!
//! ```text
//!   Job added, no active pod, not finished ─▶ startTime; one Pod from spec.template (the template's labels
//!                                              plus job-name/controller-uid, the Job as controlling owner)
//!   its Pod Succeeded ─▶ succeeded 1, SuccessCriteriaMet + Complete (CompletionsReached), completionTime
//!   its Pod Failed    ─▶ failed += 1; beyond backoffLimit: FailureTarget + Failed (BackoffLimitExceeded),
//!                        else another Pod
//!   activeDeadlineSeconds past startTime (checked every second) ─▶ FailureTarget + Failed
//!                        (DeadlineExceeded), its running Pods deleted
//! ```
//!
//! Left out: the retry back-off delay (a failed pod is replaced at once), the `batch.kubernetes.io/job-tracking`
//! pod finalizer, parallel and indexed Jobs, suspend, pod failure and success policies.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::meta;
use crate::verbs::{Cluster, DeleteOpts, WriteCtx};

const JOBS: &str = "batch/jobs";

fn ctx() -> WriteCtx {
    WriteCtx::new("job-controller")
}

fn now() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}

/// The Job a pod belongs to: its controlling owner of kind Job.
fn owning_job(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "Job" && r["apiVersion"] == "batch/v1" && r["controller"] == true)
        .and_then(|r| r["name"].as_str())
        .map(str::to_string)
}

/// Brings the Job `ns/name` forward: see the module doc.
pub(crate) fn sync(cluster: &Cluster, ns: &str, name: &str) {
    let Some(stored) = cluster.store.get(JOBS, ns, name) else {
        return;
    };
    let job = stored.value();
    if meta::is_deleting(&job) || finished(&job) {
        return;
    }
    let uid = stored.uid.to_string();
    let pods: Vec<Value> = cluster
        .store
        .list("pods", Some(ns), None, None, |s| s.owners.iter().any(|o| **o == *uid))
        .items
        .iter()
        .map(|s| s.value())
        .collect();
    let phase = |p: &Value| p["status"]["phase"].as_str().unwrap_or("").to_string();
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let active: Vec<&Value> = pods
        .iter()
        .filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed") && !meta::is_deleting(p))
        .collect();
    let end = ending(&job, succeeded, failed);
    if end.is_some_and(|(t, ..)| t == "Failed") {
        for p in &active {
            delete_pod(cluster, ns, p);
        }
    }
    let at = now();
    let create = end.is_none() && active.is_empty();
    let active_count = if create { 1 } else { active.len() as i64 };
    cluster.system_update(JOBS, ns, name, |old| {
        let mut new = old.clone();
        let status = &mut new["status"];
        if !status.is_object() {
            *status = json!({});
        }
        if status["startTime"].is_null() {
            status["startTime"] = json!(at);
        }
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed);
        status["active"] = json!(if end.is_some() { 0 } else { active_count });
        if let Some((type_, reason, message)) = end {
            let first = if type_ == "Complete" {
                "SuccessCriteriaMet"
            } else {
                "FailureTarget"
            };
            let cond = |t: &str| {
                json!({"type": t, "status": "True", "reason": reason, "message": message,
                       "lastProbeTime": at, "lastTransitionTime": at})
            };
            status["conditions"] = json!([cond(first), cond(type_)]);
            if type_ == "Complete" {
                status["completionTime"] = json!(at);
            }
        }
        (new != *old).then_some(new)
    });
    if create {
        create_pod(cluster, ns, name, &uid, &job);
    }
}

/// How the Job ends now, if it does: the type, reason and message of its final condition. One success
/// completes it; more failures than its backoff limit, or running past its deadline, fail it.
fn ending(job: &Value, succeeded: i64, failed: i64) -> Option<(&'static str, &'static str, &'static str)> {
    let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    if succeeded > 0 {
        Some((
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ))
    } else if failed > backoff_limit {
        Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if past_deadline(job) {
        Some((
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    }
}

fn finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

fn past_deadline(job: &Value) -> bool {
    let (Some(secs), Some(start)) = (
        job["spec"]["activeDeadlineSeconds"].as_i64(),
        job["status"]["startTime"]
            .as_str()
            .and_then(|s| s.parse::<Timestamp>().ok()),
    ) else {
        return false;
    };
    Timestamp::now().as_second() >= start.as_second() + secs
}

fn create_pod(cluster: &Cluster, ns: &str, name: &str, uid: &str, job: &Value) {
    let Some(rt) = cluster.registry.by_key("pods") else {
        return;
    };
    let mut pod = json!({
        "metadata": job["spec"]["template"]["metadata"].clone(),
        "spec": job["spec"]["template"]["spec"].clone(),
    });
    if !pod["metadata"].is_object() {
        pod["metadata"] = json!({});
    }
    let m = &mut pod["metadata"];
    if !m["labels"].is_object() {
        m["labels"] = json!({});
    }
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid),
        ("job-name", name),
    ] {
        m["labels"][k] = json!(v);
    }
    m["generateName"] = json!(format!("{name}-"));
    if let Some(o) = m.as_object_mut() {
        o.remove("name");
    }
    m["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true,
    }]);
    if let Err(e) = cluster.create(&rt, Some(ns), pod, &ctx()) {
        tracing::warn!(job = name, namespace = ns, error = %e, "job pod not created");
    }
}

fn delete_pod(cluster: &Cluster, ns: &str, pod: &Value) {
    let (Some(rt), Some(name)) = (cluster.registry.by_key("pods"), pod["metadata"]["name"].as_str()) else {
        return;
    };
    let _ = cluster.delete(&rt, ns, name, &DeleteOpts::default(), &ctx());
}

/// After a write to a Job or to a pod a Job owns.
pub(crate) fn on_change(cluster: &Cluster, res: &str, ns: &str, name: &str, obj: &Value) {
    match res {
        JOBS => sync(cluster, ns, name),
        "pods" => {
            if let Some(job) = owning_job(obj) {
                sync(cluster, ns, &job);
            }
        }
        _ => {}
    }
}

/// Every second: Jobs whose active deadline passed.
pub(crate) fn tick(cluster: &Cluster) {
    let running = |s: &crate::store::Stored| {
        let j = s.value();
        j["spec"]["activeDeadlineSeconds"].is_i64() && !finished(&j)
    };
    for s in cluster.store.list(JOBS, None, None, None, running).items {
        if past_deadline(&s.value()) {
            sync(cluster, &s.namespace, &s.name);
        }
    }
}
