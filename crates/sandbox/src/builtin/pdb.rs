//! PodDisruptionBudgets: status computed from the pods they select, and the eviction subresource that honours
//! them.
//!
//! The status is recomputed by the controllers on every pod or PDB change; eviction recomputes it on the spot
//! so that two evictions in a row cannot both spend the last allowed disruption.

use serde_json::{Value, json};

use crate::error::{ApiError, status_body};
use crate::meta;
use crate::selector::LabelSelector;
use crate::verbs::{Cluster, DeleteOpts, WriteCtx};

/// A PDB's selector; None when it selects nothing (a null selector).
fn selector_of(sel: &Value) -> Option<LabelSelector> {
    if sel.is_null() {
        return None;
    }
    LabelSelector::from_object(sel)
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Resolves an int-or-percent against `total`, rounding up as the disruption controller does.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let pct: i64 = v.as_str()?.strip_suffix('%')?.parse().ok()?;
    Some((pct * total + 99) / 100)
}

/// The status of a PDB from the pods in its namespace now.
pub(crate) fn compute_status(cluster: &Cluster, pdb: &Value) -> Value {
    let ns = meta::str_at(pdb, &["metadata", "namespace"]).unwrap_or("");
    let selector = selector_of(&pdb["spec"]["selector"]);
    let (mut expected, mut healthy) = (0i64, 0i64);
    if let Some(selector) = &selector {
        let page = cluster
            .store
            .list("pods", Some(ns), None, None, |s| selector.matches(|k| s.label(k)));
        for pod in page.items {
            let pod = pod.value();
            if meta::is_deleting(&pod) || matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
                continue;
            }
            expected += 1;
            if is_ready(&pod) {
                healthy += 1;
            }
        }
    }
    let spec = &pdb["spec"];
    let desired = if let Some(min) = spec.get("minAvailable").filter(|v| !v.is_null()) {
        scaled(min, expected).unwrap_or(0)
    } else if let Some(max) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        0
    };
    let allowed = (healthy - desired).max(0);
    let old_condition = pdb["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"));
    let status = if allowed > 0 { "True" } else { "False" };
    let since = old_condition
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
        .unwrap_or_else(meta::now);
    json!({
        "observedGeneration": pdb["metadata"]["generation"].as_i64().unwrap_or(1),
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": status,
            "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
            "message": "",
            "observedGeneration": pdb["metadata"]["generation"].as_i64().unwrap_or(1),
            "lastTransitionTime": since,
        }],
    })
}

/// `POST pods/NAME/eviction`: deletes the pod unless a disruption budget forbids it (429).
pub(crate) fn evict(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    eviction: &Value,
    ctx: &WriteCtx,
) -> Result<Value, ApiError> {
    let pods = cluster.registry.by_key("pods").ok_or(ApiError::NoRoute)?;
    let _serial = cluster.evictions.lock().unwrap_or_else(|e| e.into_inner());
    let pod = cluster.get(&pods, ns, name)?;
    let mut opts = DeleteOpts::default();
    let delete_options = &eviction["deleteOptions"];
    opts.grace_period = delete_options["gracePeriodSeconds"].as_i64();
    opts.uid = delete_options["preconditions"]["uid"].as_str().map(String::from);
    opts.resource_version = delete_options["preconditions"]["resourceVersion"]
        .as_str()
        .map(String::from);
    opts.dry_run = ctx.dry_run || delete_options["dryRun"].as_array().is_some_and(|a| !a.is_empty());
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    if meta::is_deleting(&pod) {
        return Ok(success);
    }
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Pending")
    );
    if !terminal {
        let labels = pod["metadata"]["labels"].clone();
        let pdbs = cluster
            .store
            .list("policy/poddisruptionbudgets", Some(ns), None, None, |_| true);
        let matching: Vec<Value> = pdbs
            .items
            .iter()
            .map(|s| s.value())
            .filter(|pdb| selector_of(&pdb["spec"]["selector"]).is_some_and(|sel| sel.matches(|k| labels[k].as_str())))
            .collect();
        if matching.len() > 1 {
            return Err(ApiError::Internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                    .into(),
            ));
        }
        if let Some(pdb) = matching.first() {
            let status = compute_status(cluster, pdb);
            let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
            // An unready pod does not count as healthy: evicting it costs the budget nothing when it is met.
            let costs = is_ready(&pod);
            let fits = if costs {
                allowed > 0
            } else {
                status["currentHealthy"].as_i64() >= status["desiredHealthy"].as_i64()
            };
            if !fits {
                let pdb_name = meta::str_at(pdb, &["metadata", "name"]).unwrap_or("");
                let cause = format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    status["desiredHealthy"], status["currentHealthy"]
                );
                return Err(ApiError::Status(status_body(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]})),
                )));
            }
        }
    }
    if !opts.dry_run {
        mark_disruption_target(cluster, ns, name);
    }
    cluster.delete(&pods, ns, name, &opts, ctx)?;
    Ok(success)
}

/// Adds the DisruptionTarget condition the real server sets before an eviction's delete.
fn mark_disruption_target(cluster: &Cluster, ns: &str, name: &str) {
    let _ = cluster.system_update("pods", ns, name, |pod| {
        let mut pod = pod.clone();
        let mut conditions: Vec<Value> = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.retain(|c| c["type"] != "DisruptionTarget");
        conditions.push(json!({
            "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting", "lastTransitionTime": meta::now(),
        }));
        pod["status"]["conditions"] = json!(conditions);
        Some(pod)
    });
}
